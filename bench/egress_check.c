/*
 * The whole egress check the VMM runs on every guest frame (net_egress_check:
 * frame parse, anti-spoof, always-denied ranges, the policy's mode), in ns per
 * frame, open against an allowlist of N IPv4 prefixes, on this machine's CPU.
 * The frames are 1514-byte TCP segments from the sandbox to 4096 different
 * allowed addresses (a 10,000-CIDR allowlist's lookups cannot all sit in one
 * cache line). Prints the median of several runs and what share of the time
 * budget of one 1514-byte frame at 10 Gbit/s (1.21 us) the check takes; then
 * the same frames with the virtio-net header of a TSO frame
 * (net_egress_check_tx: the header judged too), whose one check covers up to
 * 64 KiB, 45 segments of 1448 bytes on the wire.
 *
 *   build/bench/egress_check [CIDRS] [SECONDS_PER_RUN]
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/egress.h"
#include "bench_util.h"

#define FRAMES 4096u
#define FRAME_LEN 1514u
#define RUNS 5

static const uint8_t guest_mac[6] = { 0x02, 0x53, 0x56, 0x00, 0x01, 0x02 };
static const uint8_t gateway_mac[6] = { 0x02, 0x53, 0x56, 0x00, 0x00, 0x01 };
static uint16_t ip_checksum(const uint8_t *h, size_t len)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i += 2)
		sum += (uint32_t)h[i] << 8 | h[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* A TCP segment from 10.78.0.2 to dst, as the guest's stack would send it. */
static void make_frame(uint8_t *f, uint32_t dst)
{
	uint8_t *ip = f + 14, *tcp = ip + 20;
	uint32_t src = htonl(0x0a4e0002), d = htonl(dst);
	uint16_t csum;

	memset(f, 0, FRAME_LEN);
	memcpy(f, gateway_mac, 6);
	memcpy(f + 6, guest_mac, 6);
	f[12] = 0x08;
	ip[0] = 0x45;
	ip[2] = (FRAME_LEN - 14) >> 8;
	ip[3] = (FRAME_LEN - 14) & 0xff;
	ip[6] = 0x40; /* DF */
	ip[8] = 64;
	ip[9] = 6;
	memcpy(ip + 12, &src, 4);
	memcpy(ip + 16, &d, 4);
	csum = ip_checksum(ip, 20);
	ip[10] = (uint8_t)(csum >> 8);
	ip[11] = (uint8_t)csum;
	tcp[0] = 0xc3;
	tcp[1] = 0x50;
	tcp[2] = 0x14;
	tcp[3] = 0x51; /* 5201 */
	tcp[12] = 0x50;
	tcp[13] = 0x10; /* ACK */
}

/*
 * The policy JSON: mode open, or an allowlist of 198.18.0.0/24 (the peers)
 * plus n-1 random /16../28 prefixes outside 10/8; *allowed gets a sample of
 * addresses inside the allowed prefixes.
 */
static char *policy_json(size_t n, uint32_t *allowed)
{
	size_t cap = 256 + n * 24, len;
	char *j = malloc(cap);

	if (!j)
		return NULL;
	len = (size_t)snprintf(j, cap,
			       "{\"ip\": \"10.78.0.2\", \"gateway\": \"10.78.0.1\", "
			       "\"gateway_mac\": \"02:53:56:00:00:01\", \"deny_host\": [\"10.78.0.1/32\"], "
			       "\"mode\": \"%s\"",
			       n ? "allowlist" : "open");
	if (n) {
		len += (size_t)snprintf(j + len, cap - len, ", \"allow\": [\"198.18.0.0/24\"");
		for (size_t i = 1; i < n; i++) {
			unsigned plen = 16 + rand32() % 13;
			uint32_t a = rand32() & ~(0xffffffffu >> plen);

			/* Clear of the sandbox's own /8 and the ranges the firewall always denies. */
			if ((a >> 24) == 10 || (a >> 24) == 0 || (a >> 24) >= 224 || (a >> 24) == 127 ||
			    (a >> 16) == 0xa9fe || (a >> 24) == 100) {
				i--;
				continue;
			}
			len += (size_t)snprintf(j + len, cap - len, ", \"%u.%u.%u.%u/%u\"", a >> 24,
						(a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff, plen);
			if (i < FRAMES)
				allowed[i] = a | (rand32() & (0xffffffffu >> plen));
		}
		len += (size_t)snprintf(j + len, cap - len, "]");
	}
	snprintf(j + len, cap - len, "}");
	allowed[0] = 0xc6120007; /* 198.18.0.7 */
	for (size_t i = n; i < FRAMES; i++)
		allowed[i] = allowed[i % (n ? n : 1)];
	return j;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median ns per frame of net_egress_check (or, with tso, net_egress_check_tx) for the policy with n prefixes. */
static double measure(size_t n, double seconds, uint8_t (*frames)[FRAME_LEN], bool tso)
{
	const struct net_vnet_hdr hdr = { .flags = NET_VNET_F_NEEDS_CSUM, .gso_type = NET_VNET_GSO_TCPV4,
					  .hdr_len = 54, .gso_size = 536, .csum_start = 34, .csum_offset = 16 };
	struct net_vnet_hdr out;
	static uint32_t allowed[FRAMES];
	struct net_egress e = { .mac = guest_mac };
	double runs[RUNS];
	char err[256];
	char *json = policy_json(n, allowed);

	if (!json || net_egress_load(&e, json, strlen(json), err, sizeof(err)) != 0) {
		fprintf(stderr, "egress_check: policy: %s\n", json ? err : "out of memory");
		exit(1);
	}
	free(json);
	for (size_t i = 0; i < FRAMES; i++)
		make_frame(frames[i], n ? allowed[i] : 0xc6120007);
	for (int r = 0; r < RUNS; r++) {
		uint64_t done = 0, passed = 0;
		double t0 = now(), t;

		do {
			for (size_t i = 0; i < FRAMES; i++)
				passed += tso ? net_egress_check_tx(&e, frames[i], FRAME_LEN, &hdr, NET_TX_CSUM | NET_TX_TSO4,
								    &out)
					      : net_egress_check(&e, frames[i], FRAME_LEN);
			done += FRAMES;
			t = now();
		} while (t - t0 < seconds);
		if (passed != done) {
			fprintf(stderr, "egress_check: %llu of %llu frames dropped; the set-up is wrong\n",
				(unsigned long long)(done - passed), (unsigned long long)done);
			exit(1);
		}
		runs[r] = (t - t0) * 1e9 / (double)done;
	}
	net_egress_destroy(&e);
	qsort(runs, RUNS, sizeof(runs[0]), cmp_double);
	return runs[RUNS / 2];
}

int main(int argc, char **argv)
{
	size_t cidrs = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000;
	double seconds = argc > 2 ? atof(argv[2]) : 1.0;
	uint8_t(*frames)[FRAME_LEN] = malloc(sizeof(*frames) * FRAMES);
	double open, allow, open_tso, allow_tso;

	if (!frames || cidrs < 1 || seconds <= 0) {
		fprintf(stderr, "usage: egress_check [CIDRS >= 1] [SECONDS_PER_RUN > 0]\n");
		return 2;
	}
	open = measure(0, seconds, frames, false);
	allow = measure(cidrs, seconds, frames, false);
	open_tso = measure(0, seconds, frames, true);
	allow_tso = measure(cidrs, seconds, frames, true);
	printf("| policy | ns per frame | share of a 1514-byte frame at 10 Gbit/s (1211 ns) |\n");
	printf("| --- | --- | --- |\n");
	printf("| open | %.1f | %.2f %% |\n", open, open / 1211.2 * 100);
	printf("| allowlist, %zu CIDRs | %.1f | %.2f %% |\n", cidrs, allow, allow / 1211.2 * 100);
	printf("\nallowlist - open: %.1f ns per frame\n", allow - open);
	printf("\n| policy, TSO frames (header judged too) | ns per frame | ns per wire segment of a 64 KiB frame (45) |\n");
	printf("| --- | --- | --- |\n");
	printf("| open | %.1f | %.2f |\n", open_tso, open_tso / 45);
	printf("| allowlist, %zu CIDRs | %.1f | %.2f |\n", cidrs, allow_tso, allow_tso / 45);
	free(frames);
	return 0;
}
