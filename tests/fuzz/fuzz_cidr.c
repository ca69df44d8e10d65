/* libFuzzer target: CIDR text (--cidr-allow, firewall rules) and the longest-prefix-match set. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Bounds the naive O(items x probes) reference, not the set. */
#define MAX_ITEMS 512
#define PROBES 512

static uint64_t next(uint64_t *st)
{
	*st = *st * 6364136223846793005ull + 1442695040888963407ull;
	return *st >> 17;
}

/* Every line that parses must format and parse back to the same prefix. */
static bool parse_line(const char *line, struct cidr *c)
{
	char buf[CIDR_STR_MAX];
	struct cidr again;
	size_t len;
	int r = cidr_parse(line, c);
	struct cidr masked;
	int m = cidr_parse_masked(line, &masked);

	if (r == -EINVAL) {
		/* Junk is junk with or without the host bits. */
		if (m != -EINVAL)
			abort();
		return false;
	}
	if (r == -EDOM) {
		/* Only the host bits were wrong: clearing them gives a prefix that parses strictly. */
		if (m != 0 || cidr_format(&masked, buf, sizeof(buf)) != 0 || cidr_parse(buf, &again) != 0 ||
		    memcmp(&masked, &again, sizeof(again)) != 0)
			abort();
		return false;
	}
	if (r != 0 || m != 0 || memcmp(c, &masked, sizeof(masked)) != 0)
		abort();
	if (cidr_format(c, buf, sizeof(buf)) != 0 || cidr_parse(buf, &again) != 0 ||
	    memcmp(c, &again, sizeof(*c)) != 0)
		abort();
	len = strlen(buf);
	if (cidr_format(c, buf, len) != -ENOSPC || buf[0] != '\0' || cidr_format(c, buf, len + 1) != 0)
		abort();
	if (!cidr_contains(c, c->family, c->addr) || cidr_contains(c, c->family == 4 ? 6 : 4, c->addr))
		abort();
	if (c->family == 4)
		for (int i = 4; i < 16; i++)
			if (c->addr[i])
				abort();
	return true;
}

/* The first or last address of c, moved by delta (-1, 0, 1) with wrap-around. */
static void edge(const struct cidr *c, bool last, int delta, uint8_t *a)
{
	unsigned bytes = c->family == 4 ? 4 : 16;

	memset(a, 0, 16);
	for (unsigned i = 0; i < bytes; i++) {
		uint8_t host = i < c->len / 8u ? 0 : i == c->len / 8u ? (uint8_t)(0xff >> (c->len % 8)) : 0xff;

		a[i] = last ? (uint8_t)(c->addr[i] | host) : (uint8_t)(c->addr[i] & ~host);
	}
	if (delta > 0)
		for (unsigned i = bytes; i-- > 0;)
			if (++a[i])
				break;
	if (delta < 0)
		for (unsigned i = bytes; i-- > 0;)
			if (a[i]--)
				break;
}

/* Longest containing prefix by scanning them all; the later wins among equals. */
static int naive(const struct cidr *items, const uint8_t *values, size_t n, int family,
		 const uint8_t *a, uint8_t *value)
{
	int best = -1;

	for (size_t i = 0; i < n; i++)
		if (cidr_contains(&items[i], family, a) && (int)items[i].len >= best) {
			best = items[i].len;
			*value = values[i];
		}
	return best >= 0;
}

static size_t naive_count(const struct cidr *items, size_t n)
{
	size_t distinct = 0;

	for (size_t i = 0; i < n; i++) {
		size_t j = 0;

		/* Same family and length, and one holds the other: the same prefix. */
		while (j < i && !(items[j].family == items[i].family && items[j].len == items[i].len &&
				  cidr_contains(&items[j], items[i].family, items[i].addr)))
			j++;
		distinct += j == i;
	}
	return distinct;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cidr items[MAX_ITEMS];
	static uint8_t values[MAX_ITEMS];
	struct cidr_set *set;
	uint64_t st = 0xcbf29ce484222325ull;
	size_t n = 0, start = 0;
	char *text;

	for (size_t i = 0; i < size; i++)
		st = (st ^ data[i]) * 0x100000001b3ull;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	while (start <= size && n < MAX_ITEMS) {
		char *nl = memchr(text + start, '\n', size - start);
		size_t end = nl ? (size_t)(nl - text) : size;

		text[end] = '\0';
		if (parse_line(text + start, &items[n])) {
			values[n] = (uint8_t)(next(&st) % 4);
			/* Host bits in a hand-made item must be ignored like cidr_contains() does. */
			if (next(&st) % 8 == 0 && items[n].len < (items[n].family == 4 ? 32 : 128)) {
				unsigned bit = items[n].len + (unsigned)(next(&st) %
					((items[n].family == 4 ? 32u : 128u) - items[n].len));

				items[n].addr[bit / 8] ^= (uint8_t)(0x80 >> (bit % 8));
			}
			n++;
		}
		start = end + 1;
	}
	free(text);

	if (cidr_set_build(items, values, n, &set) != 0)
		abort();
	if (cidr_set_count(set) != naive_count(items, n))
		abort();
	for (int p = 0; p < PROBES; p++) {
		uint8_t a[16], want = 0, got = 0;
		int family = next(&st) % 2 ? 4 : 6;
		int want_hit, got_hit;

		if (n && next(&st) % 4 != 0) {
			const struct cidr *c = &items[next(&st) % n];

			family = c->family;
			edge(c, next(&st) % 2, (int)(next(&st) % 3) - 1, a);
		} else if (size && next(&st) % 2) {
			/* Straight from the input, so the fuzzer can steer them. */
			size_t off = next(&st) % size;

			for (int i = 0; i < 16; i++)
				a[i] = data[(off + (size_t)i) % size];
		} else {
			for (int i = 0; i < 16; i++)
				a[i] = (uint8_t)next(&st);
		}
		want_hit = naive(items, values, n, family, a, &want);
		got_hit = cidr_set_lookup(set, family, a, &got);
		if (got_hit != want_hit || (got_hit && got != want))
			abort();
	}
	cidr_set_free(set);
	return 0;
}
