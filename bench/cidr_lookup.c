/*
 * Longest-prefix-match lookups per second in lib/cidr.c sets, single thread:
 * the egress firewall does one per guest frame. Sets of random prefixes,
 * probed with random addresses; prints the median of several runs. The
 * "inside" runs put every prefix and address under one /8 or /32, as an
 * allowlist of one network's subnets would.
 *
 *   build/bench/cidr_lookup [SECONDS_PER_RUN]
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "bench_util.h"

#define ADDRS (1u << 20)
#define RUNS 5

static void random_bytes(uint8_t *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		a[i] = (uint8_t)rand32();
}

/* 10.0.0.0/8 and 2001:db8::/32, for the bunched-up runs. */
static const uint8_t inside4[] = { 10 };
static const uint8_t inside6[] = { 0x20, 0x01, 0x0d, 0xb8 };

static void put_inside(int family, uint8_t *a)
{
	if (family == 4)
		memcpy(a, inside4, sizeof(inside4));
	else
		memcpy(a, inside6, sizeof(inside6));
}

/* Random prefixes: IPv4 /8../32, IPv6 /16../64 (what allowlists hold), values 1 or 2. */
static struct cidr_set *random_set(int family, size_t n, bool inside)
{
	struct cidr *items = calloc(n ? n : 1, sizeof(*items));
	uint8_t *values = malloc(n ? n : 1);
	struct cidr_set *s = NULL;

	if (!items || !values) {
		fprintf(stderr, "cidr_lookup: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++) {
		unsigned len = family == 4 ? 8 + rand32() % 25 : 16 + rand32() % 49;

		if (inside)
			len = family == 4 ? 16 + rand32() % 17 : 40 + rand32() % 25;
		items[i].family = (uint8_t)family;
		items[i].len = (uint8_t)len;
		random_bytes(items[i].addr, family == 4 ? 4 : 16);
		if (inside)
			put_inside(family, items[i].addr);
		for (unsigned b = len; b < (family == 4 ? 32u : 128u); b++)
			items[i].addr[b / 8] &= (uint8_t)~(0x80 >> (b % 8));
		values[i] = (uint8_t)(1 + rand32() % 2);
	}
	if (cidr_set_build(items, values, n, &s) != 0) {
		fprintf(stderr, "cidr_lookup: cidr_set_build failed\n");
		exit(1);
	}
	free(items);
	free(values);
	return s;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void bench(int family, size_t n, bool inside, uint8_t *addrs, double seconds)
{
	struct cidr_set *s = random_set(family, n, inside);
	size_t stride = family == 4 ? 4 : 16;
	double rates[RUNS];
	uint64_t hits = 0, lookups = 0, sum = 0;

	random_bytes(addrs, ADDRS * stride);
	if (inside)
		for (size_t i = 0; i < ADDRS; i++)
			put_inside(family, addrs + i * stride);

	for (int r = 0; r < RUNS; r++) {
		uint64_t done = 0;
		double t0 = now(), t;

		do {
			for (size_t i = 0; i < ADDRS; i++) {
				uint8_t v = 0;

				/* The sum keeps the compiler from dropping the lookups. */
				hits += (uint64_t)cidr_set_lookup(s, family, addrs + i * stride, &v);
				sum += v;
			}
			done += ADDRS;
			t = now() - t0;
		} while (t < seconds);
		rates[r] = (double)done / t / 1e6;
		lookups += done;
	}
	qsort(rates, RUNS, sizeof(rates[0]), cmp_double);
	printf("ipv%d %6zu prefixes%-21s: %6.1f M lookups/s (median of %d, range %.1f-%.1f), "
	       "%.1f%% hits [%llu]\n",
	       family, n, !inside ? "" : family == 4 ? " inside 10.0.0.0/8" : " inside 2001:db8::/32",
	       rates[RUNS / 2], RUNS, rates[0], rates[RUNS - 1],
	       100.0 * (double)hits / (double)lookups, (unsigned long long)(sum & 0xff));
	cidr_set_free(s);
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 0.3;
	uint8_t *v4 = malloc(ADDRS * 4), *v6 = malloc(ADDRS * 16);

	if (!v4 || !v6 || seconds <= 0) {
		fprintf(stderr, "usage: cidr_lookup [SECONDS_PER_RUN]\n");
		return 1;
	}
	bench(4, 10, false, v4, seconds);
	bench(4, 1000, false, v4, seconds);
	bench(4, 10000, false, v4, seconds);
	bench(6, 10000, false, v6, seconds);
	bench(4, 10000, true, v4, seconds);
	bench(6, 10000, true, v6, seconds);
	free(v4);
	free(v6);
	return 0;
}
