/*
 * The egress firewall: every rule and verdict with a concrete frame built
 * byte by byte, policy build errors, and cut or corrupted frames never
 * passing. Frames are checked from heap copies of exactly their length.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "cidr.h"
#include "net/firewall.h"
#include "net/frame.h"

static const uint8_t GUEST_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x01 };
static const uint8_t GW_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe };
static const uint8_t OTHER_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x77 };
static const uint8_t BCAST[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t ZERO_MAC[6];

#define GUEST4 "10.0.0.2"
#define GW4 "10.0.0.1"
#define GUEST6 "2001:db8::2"
#define GW6 "2001:db8::1"
#define GUEST_LL "fe80::ff:fe00:1" /* EUI-64 of GUEST_MAC */
#define GW_LL "fe80::ff:fe00:fe"   /* EUI-64 of GW_MAC */

enum { TCP = 6, UDP = 17, ICMP = 1, ICMP6 = 58 };

static uint8_t fb[2048];

/* ---- addresses from text, in a small ring so several fit in one call ---- */

static const uint8_t *ip(const char *s)
{
	static uint8_t ring[8][16];
	static unsigned next;
	uint8_t *a = ring[next++ % 8];

	memset(a, 0, 16);
	if (inet_pton(strchr(s, ':') ? AF_INET6 : AF_INET, s, a) != 1)
		fail_msg("bad address %s", s);
	return a;
}

/* ---- frame builders ---- */

static size_t put16(uint8_t *b, uint16_t v)
{
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
	return 2;
}

static size_t eth(uint8_t *b, const uint8_t *dst, const uint8_t *src, uint16_t type)
{
	memcpy(b, dst, 6);
	memcpy(b + 6, src, 6);
	put16(b + 12, type);
	return 14;
}

/* An upper-layer header of the given protocol: TCP SYN, UDP with 4 data bytes, ICMP(v6) echo. */
static size_t l4(uint8_t *b, uint8_t proto)
{
	switch (proto) {
	case TCP:
		memset(b, 0, 20);
		put16(b, 40000);
		put16(b + 2, 443);
		b[12] = 0x50;
		b[13] = 0x02;
		return 20;
	case UDP:
		memset(b, 0, 12);
		put16(b, 40001);
		put16(b + 2, 53);
		put16(b + 4, 12);
		return 12;
	case ICMP:
	case ICMP6:
		memset(b, 0, 8);
		b[0] = proto == ICMP ? 8 : 128;
		return 8;
	}
	fail_msg("no builder for protocol %u", proto);
	return 0;
}

static size_t ipv4_hdr(uint8_t *b, const uint8_t *src, const uint8_t *dst, uint8_t proto,
		       uint16_t frag, const uint8_t *opt, size_t optlen, size_t plen)
{
	size_t hlen = 20 + optlen;

	memset(b, 0, hlen);
	b[0] = (uint8_t)(0x40 | hlen / 4);
	put16(b + 2, (uint16_t)(hlen + plen));
	put16(b + 6, frag);
	b[8] = 64;
	b[9] = proto;
	memcpy(b + 12, src, 4);
	memcpy(b + 16, dst, 4);
	if (optlen)
		memcpy(b + 20, opt, optlen);
	return hlen;
}

static size_t ipv6_hdr(uint8_t *b, const uint8_t *src, const uint8_t *dst, uint8_t next, size_t plen)
{
	memset(b, 0, 40);
	b[0] = 0x60;
	put16(b + 4, (uint16_t)plen);
	b[6] = next;
	b[7] = 255;
	memcpy(b + 8, src, 16);
	memcpy(b + 24, dst, 16);
	return 40;
}

static size_t v4(const uint8_t *dmac, const uint8_t *smac, const char *src, const char *dst,
		 uint8_t proto)
{
	uint8_t s[4], d[4];
	size_t n, hl;

	memcpy(s, ip(src), 4);
	memcpy(d, ip(dst), 4);
	n = eth(fb, dmac, smac, 0x0800);
	hl = l4(fb + n + 20, proto);
	n += ipv4_hdr(fb + n, s, d, proto, 0, NULL, 0, hl);
	return n + hl;
}

/* An IPv4 fragment: offset in bytes, with its 8 payload bytes (a header only at offset 0). */
static size_t v4_frag(const char *src, const char *dst, uint16_t offset, int more)
{
	uint8_t s[4], d[4];
	size_t n = eth(fb, GW_MAC, GUEST_MAC, 0x0800);

	memcpy(s, ip(src), 4);
	memcpy(d, ip(dst), 4);
	n += ipv4_hdr(fb + n, s, d, UDP, (uint16_t)(offset / 8 | (more ? 0x2000 : 0)), NULL, 0, 8);
	memset(fb + n, 0x42, 8);
	return n + 8;
}

static size_t v6(const uint8_t *dmac, const uint8_t *smac, const char *src, const char *dst,
		 uint8_t proto)
{
	uint8_t s[16], d[16];
	size_t n, hl;

	memcpy(s, ip(src), 16);
	memcpy(d, ip(dst), 16);
	n = eth(fb, dmac, smac, 0x86dd);
	hl = l4(fb + n + 40, proto);
	n += ipv6_hdr(fb + n, s, d, proto, hl);
	return n + hl;
}

/* An IPv6 fragment header at `offset` and 16 bytes of UDP (a header only at offset 0). */
static size_t v6_frag(const char *src, const char *dst, uint16_t offset, int more)
{
	uint8_t s[16], d[16];
	size_t n = eth(fb, GW_MAC, GUEST_MAC, 0x86dd);

	memcpy(s, ip(src), 16);
	memcpy(d, ip(dst), 16);
	n += ipv6_hdr(fb + n, s, d, 44, 8 + 16);
	memset(fb + n, 0, 8);
	fb[n] = UDP;
	put16(fb + n + 2, (uint16_t)(offset | (more ? 1 : 0)));
	fb[n + 7] = 9;
	n += 8;
	memset(fb + n, 0, 16);
	put16(fb + n + 4, 16);
	return n + 16;
}

static size_t arpf(const uint8_t *dmac, const uint8_t *smac, uint16_t op, const uint8_t *sha,
		   const char *spa, const uint8_t *tha, const char *tpa)
{
	size_t n = eth(fb, dmac, smac, 0x0806);

	put16(fb + n, 1);
	put16(fb + n + 2, 0x0800);
	fb[n + 4] = 6;
	fb[n + 5] = 4;
	put16(fb + n + 6, op);
	memcpy(fb + n + 8, sha, 6);
	memcpy(fb + n + 14, ip(spa), 4);
	memcpy(fb + n + 18, tha, 6);
	memcpy(fb + n + 24, ip(tpa), 4);
	return n + 28;
}

/*
 * ICMPv6 neighbor discovery: RS, RA, NS, NA or redirect, with a target for
 * NS/NA/redirect and, when lladdr is given, a source (RS/NS) or target (NA)
 * link-layer option.
 */
static size_t ndf(const uint8_t *dmac, const char *src, const char *dst, uint8_t type,
		  const char *target, const uint8_t *lladdr)
{
	uint8_t s[16], d[16];
	size_t n = eth(fb, dmac, GUEST_MAC, 0x86dd), body;
	uint8_t *m = fb + n + 40;

	memcpy(s, ip(src), 16);
	memcpy(d, ip(dst), 16);
	body = type == 133 ? 8 : type == 134 ? 16 : type == 137 ? 40 : 24;
	memset(m, 0, body + 8);
	m[0] = type;
	if (target)
		memcpy(m + 8, ip(target), 16);
	if (lladdr) {
		m[body] = type == 136 ? 2 : 1;
		m[body + 1] = 1;
		memcpy(m + body + 2, lladdr, 6);
		body += 8;
	}
	n += ipv6_hdr(fb + n, s, d, ICMP6, body);
	return n + body;
}

/* The multicast MAC of an IPv6 group: 33:33 and its last 32 bits. */
static const uint8_t *mcast_mac(const char *group)
{
	static uint8_t mac[6];

	mac[0] = 0x33;
	mac[1] = 0x33;
	memcpy(mac + 2, ip(group) + 12, 4);
	return mac;
}

/* ---- policies: sets are borrowed by the policy, so they live here ---- */

static struct cidr_set *allow_set, *deny_set, *private_set;
static struct fw_policy *pol;

static const struct {
	const char *cidr;
	uint8_t value;
} deny_list[] = {
	{ "192.0.2.1", FW_DENY_HOST },                /* the host's API listener */
	{ "2001:db8:0:ffff::1", FW_DENY_HOST },
	{ "172.16.0.0/12", FW_DENY_HOST },
	{ "10.1.0.0/16", FW_DENY_OTHER_SANDBOX },
	{ "2001:db8:ff::/48", FW_DENY_OTHER_SANDBOX },
	{ "203.0.113.0/24", 9 },                      /* an unknown value still denies */
};

static struct cidr_set *build_set(const char *const *cidrs, const uint8_t *values, size_t n)
{
	struct cidr items[16];
	uint8_t vals[16];
	struct cidr_set *s;

	assert_true(n <= 16);
	for (size_t i = 0; i < n; i++) {
		if (cidr_parse(cidrs[i], &items[i]) != 0)
			fail_msg("bad CIDR %s", cidrs[i]);
		vals[i] = values ? values[i] : FW_ALLOW;
	}
	assert_int_equal(cidr_set_build(items, vals, n, &s), 0);
	return s;
}

static void release(void)
{
	fw_policy_free(pol);
	cidr_set_free(allow_set);
	cidr_set_free(deny_set);
	cidr_set_free(private_set);
	pol = NULL;
	allow_set = deny_set = private_set = NULL;
}

static struct fw_policy_config base_config(enum fw_mode mode)
{
	struct fw_policy_config c = { .mode = mode, .has_ipv6 = true, .has_gateway_ipv6 = true };

	memcpy(c.mac, GUEST_MAC, 6);
	memcpy(c.gateway_mac, GW_MAC, 6);
	memcpy(c.ipv4, ip(GUEST4), 4);
	memcpy(c.gateway_ipv4, ip(GW4), 4);
	memcpy(c.ipv6, ip(GUEST6), 16);
	memcpy(c.gateway_ipv6, ip(GW6), 16);
	return c;
}

/* Parses a NULL-terminated list of CIDRs into items (room for 16); returns how many. */
static size_t parse_list(const char *const *list, struct cidr *items)
{
	size_t n = 0;

	for (; list && list[n]; n++) {
		assert_true(n < 16);
		if (cidr_parse(list[n], &items[n]) != 0)
			fail_msg("bad CIDR %s", list[n]);
	}
	return n;
}

/*
 * Builds the policy under test: the fixed deny list, the given allowlist and
 * the operator's private opt-in (NULL-terminated), private_open as egress.c
 * builds it.
 */
static void use_optin(struct fw_policy_config c, const char *const *allow, const char *const *optin)
{
	struct cidr allow_items[16], optin_items[16];
	size_t nallow = parse_list(allow, allow_items), noptin = parse_list(optin, optin_items);
	const char *cidrs[16];
	uint8_t values[16];
	char err[160];

	release();
	for (size_t i = 0; i < sizeof(deny_list) / sizeof(deny_list[0]); i++) {
		cidrs[i] = deny_list[i].cidr;
		values[i] = deny_list[i].value;
	}
	deny_set = build_set(cidrs, values, sizeof(deny_list) / sizeof(deny_list[0]));
	if (allow)
		allow_set = build_set(allow, NULL, nallow);
	if (fw_private_open_build(optin_items, noptin, allow_items, nallow, &private_set, err, sizeof(err)) != 0)
		fail_msg("private ranges: %s", err);
	c.allow = allow_set;
	c.deny = deny_set;
	c.private_open = private_set;
	if (fw_policy_build(&c, &pol, err, sizeof(err)) != 0)
		fail_msg("policy: %s", err);
}

static void use_config(struct fw_policy_config c, const char *const *allow)
{
	use_optin(c, allow, NULL);
}

static void use(enum fw_mode mode, const char *const *allow)
{
	use_config(base_config(mode), allow);
}

static int teardown(void **state)
{
	(void)state;
	release();
	return 0;
}

static enum fw_verdict_reason check(size_t n)
{
	uint8_t *copy = malloc(n ? n : 1);
	enum fw_verdict_reason r;

	assert_non_null(copy);
	memcpy(copy, fb, n);
	r = fw_check(pol, copy, n);
	free(copy);
	return r;
}

static void expect_at(size_t n, enum fw_verdict_reason want, int line)
{
	enum fw_verdict_reason got = check(n);

	if (got != want)
		fail_msg("line %d: %s, expected %s", line, fw_reason_name(got), fw_reason_name(want));
}
#define EXPECT(n, want) expect_at((n), (want), __LINE__)

/* ---- tests ---- */

static void policy_build_errors(void **state)
{
	struct fw_policy_config c = base_config(FW_BLOCK);
	static char sentinel;
	/* *out must stay as it was when the build fails. */
	struct fw_policy *const untouched = (struct fw_policy *)&sentinel;
	struct fw_policy *p = untouched;
	const char *one[] = { "198.51.100.0/24", NULL };
	char err[160] = "";

	(void)state;
	allow_set = build_set(one, NULL, 1);
	c.allow = allow_set;
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	assert_ptr_equal(p, untouched);
	assert_non_null(strstr(err, "allowlist"));
	assert_non_null(strstr(err, "blocked"));
	c.mode = FW_OPEN;
	err[0] = 0;
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "allowlist"));
	/* No message buffer is fine too. */
	assert_int_equal(fw_policy_build(&c, &p, NULL, 0), -EINVAL);
	c.mode = FW_ALLOWLIST;
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), 0);
	fw_policy_free(p);

	p = untouched;
	c = base_config((enum fw_mode)7);
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "mode"));
	c = base_config(FW_OPEN);
	memset(c.mac, 0, 6);
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	c = base_config(FW_OPEN);
	c.gateway_mac[0] = 0x03; /* group bit */
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	c = base_config(FW_OPEN);
	memcpy(c.gateway_mac, GUEST_MAC, 6);
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	c = base_config(FW_OPEN);
	memset(c.ipv4, 0, 4);
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	c = base_config(FW_OPEN);
	memcpy(c.gateway_ipv4, c.ipv4, 4);
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	c = base_config(FW_OPEN);
	memcpy(c.ipv6, ip("ff02::1"), 16);
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	c = base_config(FW_OPEN);
	memcpy(c.gateway_ipv6, c.ipv6, 16);
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), -EINVAL);
	assert_ptr_equal(p, untouched);
	assert_int_equal(fw_policy_build(NULL, &p, err, sizeof(err)), -EINVAL);
	assert_int_equal(fw_policy_build(&c, NULL, err, sizeof(err)), -EINVAL);
	assert_ptr_equal(p, untouched);
	/* An empty allowlist object with block mode is no contradiction. */
	cidr_set_free(allow_set);
	allow_set = build_set(NULL, NULL, 0);
	c = base_config(FW_BLOCK);
	c.allow = allow_set;
	assert_int_equal(fw_policy_build(&c, &p, err, sizeof(err)), 0);
	fw_policy_free(p);
	fw_policy_free(NULL);

	/* Allowlist mode with no allowlist at all: nothing is allowed. */
	use(FW_ALLOWLIST, NULL);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP), FW_DROP_NOT_ALLOWED);
}

static void malformed_vlan_mac_ethertype(void **state)
{
	size_t n;

	(void)state;
	use(FW_OPEN, NULL);
	EXPECT(0, FW_DROP_MALFORMED);
	eth(fb, GW_MAC, GUEST_MAC, 0x0800);
	EXPECT(10, FW_DROP_MALFORMED);
	EXPECT(14, FW_DROP_MALFORMED);
	n = v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP);
	fb[14] = 0x44; /* IHL 4 */
	EXPECT(n, FW_DROP_MALFORMED);
	n = v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP);
	put16(fb + 16, 200); /* total length past the frame */
	EXPECT(n, FW_DROP_MALFORMED);
	/* Malformed beats everything, a spoofed MAC included. */
	n = v4(GW_MAC, OTHER_MAC, GUEST4, "198.51.100.7", TCP);
	EXPECT(n - 1, FW_DROP_MALFORMED);

	/* 802.1Q: the guest has no VLANs, whatever the tag carries or who sends it. */
	n = eth(fb, GW_MAC, GUEST_MAC, 0x8100);
	n += put16(fb + n, 10);
	n += put16(fb + n, 0x0800);
	EXPECT(n, FW_DROP_VLAN);
	memcpy(fb + 6, OTHER_MAC, 6);
	EXPECT(n, FW_DROP_VLAN);
	put16(fb + 12, 0x88a8);
	EXPECT(n, FW_DROP_VLAN);

	/* Spoofed source MAC, of another host, broadcast, zero. */
	EXPECT(v4(GW_MAC, OTHER_MAC, GUEST4, "198.51.100.7", TCP), FW_DROP_SPOOF_MAC);
	EXPECT(v4(GW_MAC, BCAST, GUEST4, "198.51.100.7", TCP), FW_DROP_SPOOF_MAC);
	EXPECT(v4(GW_MAC, ZERO_MAC, GUEST4, "198.51.100.7", TCP), FW_DROP_SPOOF_MAC);
	EXPECT(arpf(BCAST, OTHER_MAC, 1, OTHER_MAC, GUEST4, ZERO_MAC, GW4), FW_DROP_SPOOF_MAC);

	/* LLDP, an 802.3 length, PPPoE: unknown ethertypes; spoofed still says so first. */
	n = eth(fb, GW_MAC, GUEST_MAC, 0x88cc);
	memset(fb + n, 0, 46);
	EXPECT(n + 46, FW_DROP_ETHERTYPE);
	put16(fb + 12, 46);
	EXPECT(n + 46, FW_DROP_ETHERTYPE);
	put16(fb + 12, 0x8864);
	EXPECT(n + 46, FW_DROP_ETHERTYPE);
	memcpy(fb + 6, OTHER_MAC, 6);
	EXPECT(n + 46, FW_DROP_SPOOF_MAC);
}

static void arp_rules(void **state)
{
	(void)state;
	use(FW_OPEN, NULL);
	/* Who has the gateway: broadcast, or unicast to refresh the entry. */
	EXPECT(arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, GUEST4, ZERO_MAC, GW4), FW_PASS_ARP);
	EXPECT(arpf(GW_MAC, GUEST_MAC, 1, GUEST_MAC, GUEST4, GW_MAC, GW4), FW_PASS_ARP);
	/* Answering the gateway's request. */
	EXPECT(arpf(GW_MAC, GUEST_MAC, 2, GUEST_MAC, GUEST4, GW_MAC, GW4), FW_PASS_ARP);

	/* Asking for anyone else: a neighbour, another sandbox, the host. */
	EXPECT(arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, GUEST4, ZERO_MAC, "10.0.0.3"), FW_DROP_ARP);
	EXPECT(arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, GUEST4, ZERO_MAC, "10.1.0.2"), FW_DROP_ARP);
	EXPECT(arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, GUEST4, ZERO_MAC, "192.0.2.1"), FW_DROP_ARP);
	/* Claiming another IPv4 or MAC inside ARP (cache poisoning). */
	EXPECT(arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, "10.0.0.3", ZERO_MAC, GW4), FW_DROP_ARP);
	EXPECT(arpf(BCAST, GUEST_MAC, 1, OTHER_MAC, GUEST4, ZERO_MAC, GW4), FW_DROP_ARP);
	EXPECT(arpf(GW_MAC, GUEST_MAC, 2, GUEST_MAC, GW4, GW_MAC, GW4), FW_DROP_ARP);
	/* Gratuitous ARP and a DAD probe. */
	EXPECT(arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, GUEST4, ZERO_MAC, GUEST4), FW_DROP_ARP);
	EXPECT(arpf(BCAST, GUEST_MAC, 2, GUEST_MAC, GUEST4, BCAST, GUEST4), FW_DROP_ARP);
	EXPECT(arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, "0.0.0.0", ZERO_MAC, GUEST4), FW_DROP_ARP);
	/* A reply broadcast, or to someone else; a request to another MAC. */
	EXPECT(arpf(BCAST, GUEST_MAC, 2, GUEST_MAC, GUEST4, GW_MAC, GW4), FW_DROP_ARP);
	EXPECT(arpf(GW_MAC, GUEST_MAC, 2, GUEST_MAC, GUEST4, OTHER_MAC, GW4), FW_DROP_ARP);
	EXPECT(arpf(OTHER_MAC, GUEST_MAC, 1, GUEST_MAC, GUEST4, ZERO_MAC, GW4), FW_DROP_ARP);
	/* Other opcodes (RARP, InARP). */
	EXPECT(arpf(BCAST, GUEST_MAC, 3, GUEST_MAC, GUEST4, ZERO_MAC, GW4), FW_DROP_ARP);
	EXPECT(arpf(BCAST, GUEST_MAC, 8, GUEST_MAC, GUEST4, ZERO_MAC, GW4), FW_DROP_ARP);
	/* ARP for the gateway works in block mode too, and a cut one is malformed. */
	use(FW_BLOCK, NULL);
	EXPECT(arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, GUEST4, ZERO_MAC, GW4), FW_PASS_ARP);
	EXPECT(arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, GUEST4, ZERO_MAC, GW4) - 1, FW_DROP_MALFORMED);
}

static void spoofed_ip(void **state)
{
	struct fw_policy_config c;

	(void)state;
	use(FW_OPEN, NULL);
	EXPECT(v4(GW_MAC, GUEST_MAC, "10.0.0.3", "198.51.100.7", TCP), FW_DROP_SPOOF_IP);
	EXPECT(v4(GW_MAC, GUEST_MAC, "10.1.0.2", "198.51.100.7", UDP), FW_DROP_SPOOF_IP);
	EXPECT(v4(GW_MAC, GUEST_MAC, GW4, "198.51.100.7", ICMP), FW_DROP_SPOOF_IP);
	/* A DHCP discover: the sandbox is configured statically. */
	EXPECT(v4(BCAST, GUEST_MAC, "0.0.0.0", "255.255.255.255", UDP), FW_DROP_SPOOF_IP);
	EXPECT(v6(GW_MAC, GUEST_MAC, "2001:db8::3", "2001:db8:1::7", TCP), FW_DROP_SPOOF_IP);
	/* The link-local source is for ND only, :: for DAD only. */
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST_LL, "2001:db8:1::7", TCP), FW_DROP_SPOOF_IP);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST_LL, GW_LL, ICMP6), FW_DROP_SPOOF_IP);
	EXPECT(v6(GW_MAC, GUEST_MAC, "::", "2001:db8:1::7", ICMP6), FW_DROP_SPOOF_IP);
	EXPECT(ndf(mcast_mac("ff02::2"), "::", "ff02::2", 133, NULL, NULL), FW_DROP_SPOOF_IP);
	/* ND from an address that is not the sandbox's. */
	EXPECT(ndf(mcast_mac("ff02::1:ff00:1"), "fe80::99", "ff02::1:ff00:1", 135, GW6, GUEST_MAC),
	       FW_DROP_SPOOF_IP);
	EXPECT(ndf(GW_MAC, "2001:db8::9", GW6, 136, "2001:db8::9", GUEST_MAC), FW_DROP_SPOOF_IP);
	/* Checked before the mode. */
	use(FW_BLOCK, NULL);
	EXPECT(v4(GW_MAC, GUEST_MAC, "10.0.0.3", "198.51.100.7", TCP), FW_DROP_SPOOF_IP);

	/* A sandbox without IPv6 has no IPv6 source but its link-local one, for ND. */
	c = base_config(FW_OPEN);
	c.has_ipv6 = false;
	use_config(c, NULL);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:1::7", TCP), FW_DROP_SPOOF_IP);
	EXPECT(v6(GW_MAC, GUEST_MAC, "::", "2001:db8:1::7", TCP), FW_DROP_SPOOF_IP);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP), FW_PASS_OPEN);
}

static void neighbor_discovery(void **state)
{
	struct fw_policy_config c;
	size_t n;

	(void)state;
	use(FW_OPEN, NULL);
	/* Solicitations for the gateway: to its group, unicast (NUD), for its link-local. */
	EXPECT(ndf(mcast_mac("ff02::1:ff00:1"), GUEST_LL, "ff02::1:ff00:1", 135, GW6, GUEST_MAC),
	       FW_PASS_ND);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:1"), GUEST6, "ff02::1:ff00:1", 135, GW6, GUEST_MAC),
	       FW_PASS_ND);
	EXPECT(ndf(GW_MAC, GUEST6, GW6, 135, GW6, NULL), FW_PASS_ND);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:fe"), GUEST_LL, "ff02::1:ff00:fe", 135, GW_LL, GUEST_MAC),
	       FW_PASS_ND);
	EXPECT(ndf(GW_MAC, GUEST_LL, GW_LL, 135, GW_LL, GUEST_MAC), FW_PASS_ND);
	/* For anyone else, or with the wrong group, MAC or link-layer option. */
	EXPECT(ndf(mcast_mac("ff02::1:ff00:5"), GUEST6, "ff02::1:ff00:5", 135, "2001:db8::5", NULL),
	       FW_DROP_ND);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:1"), GUEST6, "ff02::1:ff00:1", 135, "2001:db8:ff::1", NULL),
	       FW_DROP_ND); /* same low 24 bits as the gateway, another host */
	EXPECT(ndf(mcast_mac("ff02::1:ff00:2"), GUEST6, "ff02::1:ff00:2", 135, GW6, NULL), FW_DROP_ND);
	EXPECT(ndf(GW_MAC, GUEST6, "ff02::1:ff00:1", 135, GW6, NULL), FW_DROP_ND);
	EXPECT(ndf(OTHER_MAC, GUEST6, GW6, 135, GW6, NULL), FW_DROP_ND);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:1"), GUEST6, "ff02::1:ff00:1", 135, GW6, OTHER_MAC),
	       FW_DROP_ND);
	EXPECT(ndf(GW_MAC, GUEST6, "2001:db8::5", 135, "2001:db8::5", NULL), FW_DROP_ND);
	/* ICMPv6 code must be 0. */
	n = ndf(GW_MAC, GUEST6, GW6, 135, GW6, NULL);
	fb[14 + 40 + 1] = 1;
	EXPECT(n, FW_DROP_ND);

	/* DAD for the sandbox's own addresses, from :: and without an option. */
	EXPECT(ndf(mcast_mac("ff02::1:ff00:2"), "::", "ff02::1:ff00:2", 135, GUEST6, NULL), FW_PASS_ND);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:1"), "::", "ff02::1:ff00:1", 135, GUEST_LL, NULL),
	       FW_PASS_ND);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:1"), "::", "ff02::1:ff00:1", 135, GW6, NULL), FW_DROP_ND);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:2"), "::", "ff02::1:ff00:2", 135, GUEST6, GUEST_MAC),
	       FW_DROP_ND);
	EXPECT(ndf(GW_MAC, "::", GW6, 135, GUEST6, NULL), FW_DROP_ND);

	/* Router solicitation to all-routers or the gateway. */
	EXPECT(ndf(mcast_mac("ff02::2"), GUEST_LL, "ff02::2", 133, NULL, GUEST_MAC), FW_PASS_ND);
	EXPECT(ndf(GW_MAC, GUEST_LL, GW_LL, 133, NULL, NULL), FW_PASS_ND);
	EXPECT(ndf(mcast_mac("ff02::1"), GUEST_LL, "ff02::1", 133, NULL, GUEST_MAC), FW_DROP_ND);
	EXPECT(ndf(mcast_mac("ff02::2"), GUEST_LL, "ff02::2", 133, NULL, OTHER_MAC), FW_DROP_ND);

	/* Advertisements of the sandbox's own address to the gateway, and nothing else. */
	EXPECT(ndf(GW_MAC, GUEST6, GW6, 136, GUEST6, GUEST_MAC), FW_PASS_ND);
	EXPECT(ndf(GW_MAC, GUEST_LL, GW_LL, 136, GUEST_LL, NULL), FW_PASS_ND);
	EXPECT(ndf(GW_MAC, GUEST6, GW6, 136, GW6, GUEST_MAC), FW_DROP_ND);
	EXPECT(ndf(GW_MAC, GUEST6, GW6, 136, "2001:db8:ff::2", GUEST_MAC), FW_DROP_ND);
	EXPECT(ndf(GW_MAC, GUEST6, GW6, 136, GUEST6, OTHER_MAC), FW_DROP_ND);
	EXPECT(ndf(mcast_mac("ff02::1"), GUEST6, "ff02::1", 136, GUEST6, GUEST_MAC), FW_DROP_ND);
	EXPECT(ndf(GW_MAC, GUEST6, "2001:db8::5", 136, GUEST6, GUEST_MAC), FW_DROP_ND);

	/* Router advertisements and redirects are the gateway's. */
	EXPECT(ndf(mcast_mac("ff02::1"), GUEST_LL, "ff02::1", 134, NULL, GUEST_MAC), FW_DROP_ND);
	EXPECT(ndf(GW_MAC, GUEST_LL, GW_LL, 137, GW6, NULL), FW_DROP_ND);

	/* ND in a fragment (RFC 6980). */
	n = eth(fb, mcast_mac("ff02::1:ff00:1"), GUEST_MAC, 0x86dd);
	n += ipv6_hdr(fb + n, ip(GUEST6), ip("ff02::1:ff00:1"), 44, 8 + 24);
	memset(fb + n, 0, 8 + 24);
	fb[n] = ICMP6;
	fb[n + 3] = 1; /* M */
	fb[n + 8] = 135;
	memcpy(fb + n + 16, ip(GW6), 16);
	EXPECT(n + 32, FW_DROP_ND);

	/* ND with the gateway works in block mode. */
	use(FW_BLOCK, NULL);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:1"), GUEST_LL, "ff02::1:ff00:1", 135, GW6, GUEST_MAC),
	       FW_PASS_ND);
	EXPECT(ndf(mcast_mac("ff02::2"), GUEST_LL, "ff02::2", 133, NULL, GUEST_MAC), FW_PASS_ND);

	/* Without IPv6 addresses: the link-locals still find each other, nothing more. */
	c = base_config(FW_OPEN);
	c.has_ipv6 = false;
	c.has_gateway_ipv6 = false;
	use_config(c, NULL);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:fe"), GUEST_LL, "ff02::1:ff00:fe", 135, GW_LL, GUEST_MAC),
	       FW_PASS_ND);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:1"), GUEST_LL, "ff02::1:ff00:1", 135, GW6, GUEST_MAC),
	       FW_DROP_ND);
	EXPECT(ndf(mcast_mac("ff02::1:ff00:2"), "::", "ff02::1:ff00:2", 135, GUEST6, NULL), FW_DROP_ND);
	EXPECT(ndf(GW_MAC, GUEST6, GW6, 135, GW6, NULL), FW_DROP_SPOOF_IP);
}

static void block_mode(void **state)
{
	(void)state;
	use(FW_BLOCK, NULL);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP), FW_DROP_BLOCKED);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "8.8.8.8", UDP), FW_DROP_BLOCKED);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", ICMP), FW_DROP_BLOCKED);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, GW4, UDP), FW_DROP_BLOCKED);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:1::7", TCP), FW_DROP_BLOCKED);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:1::7", UDP), FW_DROP_BLOCKED);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, GW6, ICMP6), FW_DROP_BLOCKED);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "127.0.0.1", TCP), FW_DROP_BLOCKED);
	EXPECT(v4_frag(GUEST4, "198.51.100.7", 1480, 0), FW_DROP_BLOCKED);
}

static void open_mode(void **state)
{
	(void)state;
	use(FW_OPEN, NULL);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP), FW_PASS_OPEN);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "8.8.8.8", UDP), FW_PASS_OPEN);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "1.1.1.1", ICMP), FW_PASS_OPEN);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:1::7", TCP), FW_PASS_OPEN);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2606:4700::1111", ICMP6), FW_PASS_OPEN);
	/* The deny list and built-in ranges apply in open mode. */
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "192.0.2.1", TCP), FW_DROP_HOST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "172.31.255.255", TCP), FW_DROP_HOST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "203.0.113.9", TCP), FW_DROP_HOST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.1.200.3", TCP), FW_DROP_OTHER_SANDBOX);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:0:ffff::1", TCP), FW_DROP_HOST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:ff::9", TCP), FW_DROP_OTHER_SANDBOX);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "169.254.169.254", TCP), FW_DROP_METADATA);
	/* Layer 2: broadcast, multicast, or straight to a MAC that is not the gateway's. */
	EXPECT(v4(BCAST, GUEST_MAC, GUEST4, "198.51.100.7", UDP), FW_DROP_BROADCAST);
	EXPECT(v4((const uint8_t[6]){ 0x01, 0, 0x5e, 0, 0, 1 }, GUEST_MAC, GUEST4, "198.51.100.7", UDP),
	       FW_DROP_MULTICAST);
	EXPECT(v4(OTHER_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP), FW_DROP_DST_MAC);
	EXPECT(v6(OTHER_MAC, GUEST_MAC, GUEST6, "2001:db8:1::7", TCP), FW_DROP_DST_MAC);
	EXPECT(v6(mcast_mac("ff02::1"), GUEST_MAC, GUEST6, "2001:db8:1::7", TCP), FW_DROP_MULTICAST);
}

static void allowlist_mode(void **state)
{
	const char *allow[] = { "198.51.100.0/24", "2001:db8:1::/48", NULL };

	(void)state;
	use(FW_ALLOWLIST, allow);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.255", UDP), FW_PASS_ALLOWLIST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.101.1", TCP), FW_DROP_NOT_ALLOWED);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.99.255", ICMP), FW_DROP_NOT_ALLOWED);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:1:abcd::7", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:2::7", TCP), FW_DROP_NOT_ALLOWED);
	/* An IPv6 form of an allowed IPv4 address is that address. */
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "::ffff:198.51.100.7", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "64:ff9b::198.51.100.7", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "::ffff:198.51.101.1", TCP), FW_DROP_NOT_ALLOWED);
	/* Allowed, but not to another MAC. */
	EXPECT(v4(OTHER_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP), FW_DROP_DST_MAC);
}

static void deny_list_wins(void **state)
{
	const char *allow[] = { "10.0.0.0/8", "172.16.5.0/24", "192.0.2.0/24", "2001:db8::/32", NULL };

	(void)state;
	use(FW_ALLOWLIST, allow);
	/* The deny list's /16 inside the allowed /8; its /12 around the allowed /24. */
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.1.2.3", TCP), FW_DROP_OTHER_SANDBOX);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.2.0.1", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "172.16.5.1", TCP), FW_DROP_HOST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "192.0.2.1", TCP), FW_DROP_HOST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "192.0.2.2", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:ff::1", TCP), FW_DROP_OTHER_SANDBOX);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:0:ffff::1", TCP), FW_DROP_HOST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:0:ffff::2", TCP), FW_PASS_ALLOWLIST);
	/* Through an IPv4-mapped destination too. */
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "::ffff:10.1.0.5", TCP), FW_DROP_OTHER_SANDBOX);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "::ffff:192.0.2.1", TCP), FW_DROP_HOST);
}

static void built_in_ranges(void **state)
{
	const char *all[] = { "0.0.0.0/0", "::/0", NULL };
	static const struct {
		const char *dst;
		enum fw_verdict_reason want;
	} cases[] = {
		{ "8.8.8.8", FW_PASS_ALLOWLIST },
		{ "2606:4700::1111", FW_PASS_ALLOWLIST },
		{ "127.0.0.1", FW_DROP_HOST },
		{ "127.255.0.9", FW_DROP_HOST },
		{ "0.0.0.0", FW_DROP_HOST },
		{ "0.1.2.3", FW_DROP_HOST },
		{ "192.0.2.1", FW_DROP_HOST }, /* the host, from the deny list */
		{ "169.254.169.254", FW_DROP_METADATA },
		{ "100.100.100.200", FW_DROP_METADATA },
		{ "169.254.0.1", FW_DROP_LINK_LOCAL },
		{ "169.254.169.253", FW_DROP_LINK_LOCAL },
		{ "224.0.0.251", FW_DROP_MULTICAST },
		{ "239.255.255.250", FW_DROP_MULTICAST },
		{ "240.0.0.1", FW_DROP_RESERVED },
		{ "255.255.255.254", FW_DROP_RESERVED },
		{ "255.255.255.255", FW_DROP_BROADCAST },
		{ "::", FW_DROP_HOST },
		{ "::1", FW_DROP_HOST },
		{ "fe80::1", FW_DROP_LINK_LOCAL },
		{ "febf::1", FW_DROP_LINK_LOCAL },
		{ "ff02::1", FW_DROP_MULTICAST },
		{ "ff0e::1", FW_DROP_MULTICAST },
		{ "fd00:ec2::254", FW_DROP_METADATA },
		{ "fd00:ec2::253", FW_DROP_PRIVATE }, /* the rest of fc00::/7: a ULA */
		{ "::ffff:127.0.0.1", FW_DROP_HOST },
		{ "::ffff:0.0.0.0", FW_DROP_HOST },
		{ "::ffff:169.254.169.254", FW_DROP_METADATA },
		{ "::ffff:224.0.0.1", FW_DROP_MULTICAST },
		{ "::ffff:255.255.255.255", FW_DROP_BROADCAST },
		{ "::ffff:8.8.8.8", FW_PASS_ALLOWLIST },
		{ "64:ff9b::127.0.0.1", FW_DROP_HOST },
		{ "64:ff9b::169.254.169.254", FW_DROP_METADATA },
	};

	(void)state;
	use(FW_ALLOWLIST, all);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool six = strchr(cases[i].dst, ':');
		size_t n = six ? v6(GW_MAC, GUEST_MAC, GUEST6, cases[i].dst, TCP)
			       : v4(GW_MAC, GUEST_MAC, GUEST4, cases[i].dst, TCP);
		enum fw_verdict_reason got = check(n);

		if (got != cases[i].want)
			fail_msg("%s: %s, expected %s", cases[i].dst, fw_reason_name(got),
				 fw_reason_name(cases[i].want));
	}
	/* With the Ethernet addresses they would really go to. */
	EXPECT(v4(BCAST, GUEST_MAC, GUEST4, "255.255.255.255", UDP), FW_DROP_BROADCAST);
	EXPECT(v4((const uint8_t[6]){ 0x01, 0, 0x5e, 0, 0, 0xfb }, GUEST_MAC, GUEST4, "224.0.0.251", UDP),
	       FW_DROP_MULTICAST);
	EXPECT(v6(mcast_mac("ff02::fb"), GUEST_MAC, GUEST6, "ff02::fb", UDP), FW_DROP_MULTICAST);
	/* Open mode has the same floor. */
	use(FW_OPEN, NULL);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "127.0.0.1", TCP), FW_DROP_HOST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "::ffff:127.0.0.1", TCP), FW_DROP_HOST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "fd00:ec2::254", TCP), FW_DROP_METADATA);
}

struct dst_case {
	const char *dst;
	enum fw_verdict_reason want;
};

/* Each destination with a TCP SYN from the sandbox to the gateway's MAC, against the policy in use. */
static void expect_cases(const struct dst_case *cases, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++) {
		bool six = strchr(cases[i].dst, ':');
		size_t len = six ? v6(GW_MAC, GUEST_MAC, GUEST6, cases[i].dst, TCP)
				 : v4(GW_MAC, GUEST_MAC, GUEST4, cases[i].dst, TCP);
		enum fw_verdict_reason got = check(len);

		if (got != cases[i].want)
			fail_msg("%s: %s: %s, expected %s", what, cases[i].dst, fw_reason_name(got),
				 fw_reason_name(cases[i].want));
	}
}
#define EXPECT_CASES(cases, what) expect_cases((cases), sizeof(cases) / sizeof((cases)[0]), (what))

/* The policy without the fixed deny list, whose 172.16.0.0/12 would hide that private range. */
static void use_bare(enum fw_mode mode, const char *const *allow)
{
	struct fw_policy_config c = base_config(mode);
	char err[160];

	use(mode, allow);
	fw_policy_free(pol);
	c.allow = allow_set;
	c.private_open = private_set;
	if (fw_policy_build(&c, &pol, err, sizeof(err)) != 0)
		fail_msg("policy: %s", err);
}

/* The worker's own networks: denied in every mode, whatever a wide allowlist says. */
static void private_ranges_denied(void **state)
{
	const char *all[] = { "0.0.0.0/0", "::/0", NULL };
	const char *wide[] = { "8.0.0.0/5", "96.0.0.0/4", "172.0.0.0/8", "192.0.0.0/8", "fc00::/6", NULL };
	static const struct dst_case open_cases[] = {
		{ "10.0.0.0", FW_DROP_PRIVATE },
		{ "10.2.3.4", FW_DROP_PRIVATE },
		{ "10.255.255.255", FW_DROP_PRIVATE },
		{ "172.16.0.1", FW_DROP_PRIVATE },
		{ "172.31.255.255", FW_DROP_PRIVATE },
		{ "192.168.0.1", FW_DROP_PRIVATE },
		{ "192.168.255.255", FW_DROP_PRIVATE },
		{ "100.64.0.0", FW_DROP_PRIVATE },
		{ "100.127.255.255", FW_DROP_PRIVATE },
		{ "fc00::1", FW_DROP_PRIVATE },
		{ "fd12:3456::1", FW_DROP_PRIVATE },
		{ "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", FW_DROP_PRIVATE },
		{ "::ffff:10.2.3.4", FW_DROP_PRIVATE },
		{ "64:ff9b::192.168.1.1", FW_DROP_PRIVATE },
		/* Longer built-in prefixes inside keep their own reason. */
		{ "100.100.100.200", FW_DROP_METADATA },
		{ "fd00:ec2::254", FW_DROP_METADATA },
		/* The neighbours of each range are the internet. */
		{ "9.255.255.255", FW_PASS_OPEN },
		{ "11.0.0.0", FW_PASS_OPEN },
		{ "172.15.255.255", FW_PASS_OPEN },
		{ "172.32.0.0", FW_PASS_OPEN },
		{ "192.167.255.255", FW_PASS_OPEN },
		{ "192.169.0.0", FW_PASS_OPEN },
		{ "100.63.255.255", FW_PASS_OPEN },
		{ "100.128.0.0", FW_PASS_OPEN },
		{ "fbff:ffff::1", FW_PASS_OPEN },
		{ "fe00::1", FW_PASS_OPEN },
	};
	struct dst_case cases[sizeof(open_cases) / sizeof(open_cases[0])];

	(void)state;
	use_bare(FW_OPEN, NULL);
	EXPECT_CASES(open_cases, "open");
	/* Allowlists that hold the private ranges without naming them: the same floor. */
	memcpy(cases, open_cases, sizeof(cases));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (cases[i].want == FW_PASS_OPEN)
			cases[i].want = FW_PASS_ALLOWLIST;
	use_bare(FW_ALLOWLIST, all);
	EXPECT_CASES(cases, "allow everything");
	use_bare(FW_ALLOWLIST, wide);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.2.3.4", TCP), FW_DROP_PRIVATE);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "100.64.0.1", UDP), FW_DROP_PRIVATE);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "172.16.0.1", ICMP), FW_DROP_PRIVATE);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "192.168.1.1", TCP), FW_DROP_PRIVATE);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "fd12::1", TCP), FW_DROP_PRIVATE);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "8.8.8.8", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "100.1.2.3", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "192.0.2.7", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "fe00::1", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v6(GW_MAC, GUEST_MAC, GUEST6, "2606:4700::1111", TCP), FW_DROP_NOT_ALLOWED);
	/* Fragments too; block mode blocks before. */
	EXPECT(v4_frag(GUEST4, "192.168.0.9", 1480, 0), FW_DROP_PRIVATE);
	use_bare(FW_BLOCK, NULL);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.2.3.4", TCP), FW_DROP_BLOCKED);
}

/* What opens a private range: the operator's opt-in, or an allowlist entry inside it. */
static void private_ranges_opened(void **state)
{
	const char *lab[] = { "10.77.0.0/24", "fd77::/64", NULL };
	const char *every[] = { "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "fc00::/7", NULL };
	const char *peers[] = { "198.51.100.0/24", NULL };
	const char *named[] = { "10.2.0.0/16", "192.168.7.0/24", "fd12::/16", "198.51.100.0/24", NULL };
	const char *slash8[] = { "10.0.0.0/8", NULL };
	static const struct dst_case lab_cases[] = {
		{ "10.77.0.5", FW_PASS_OPEN },
		{ "10.77.1.5", FW_DROP_PRIVATE },
		{ "192.168.1.1", FW_DROP_PRIVATE },
		{ "fd77::5", FW_PASS_OPEN },
		{ "fd78::5", FW_DROP_PRIVATE },
		{ "::ffff:10.77.0.5", FW_PASS_OPEN },
		{ "2002:a4d:5::1", FW_PASS_OPEN }, /* 6to4 of 10.77.0.5 */
	};
	static const struct dst_case every_cases[] = {
		{ "10.2.3.4", FW_PASS_OPEN },
		{ "100.64.0.1", FW_PASS_OPEN },
		{ "fd00::1", FW_PASS_OPEN },
		{ "192.168.1.1", FW_DROP_PRIVATE }, /* not opted in */
		/* The deny list and the longer built-in ranges stay. */
		{ "10.1.2.3", FW_DROP_OTHER_SANDBOX },
		{ "172.20.0.1", FW_DROP_HOST },
		{ "100.100.100.200", FW_DROP_METADATA },
		{ "fd00:ec2::254", FW_DROP_METADATA },
		{ "127.0.0.1", FW_DROP_HOST },
	};
	static const struct dst_case named_cases[] = {
		{ "10.2.3.4", FW_PASS_ALLOWLIST },
		{ "10.3.0.1", FW_DROP_PRIVATE },
		{ "192.168.7.9", FW_PASS_ALLOWLIST },
		{ "192.168.8.1", FW_DROP_PRIVATE },
		{ "fd12::9", FW_PASS_ALLOWLIST },
		{ "fd13::1", FW_DROP_PRIVATE },
		{ "::ffff:10.2.3.4", FW_PASS_ALLOWLIST },
		{ "198.51.100.7", FW_PASS_ALLOWLIST },
		{ "203.0.113.7", FW_DROP_HOST },
		{ "8.8.8.8", FW_DROP_NOT_ALLOWED },
	};
	struct fw_policy_config c;
	struct cidr items[2];
	uint8_t values[2] = { FW_DENY_HOST, 9 };
	struct cidr_set *odd;

	(void)state;
	use_optin(base_config(FW_OPEN), NULL, lab);
	EXPECT_CASES(lab_cases, "opt-in 10.77.0.0/24");
	use_optin(base_config(FW_OPEN), NULL, every);
	EXPECT_CASES(every_cases, "opt-in of every range but 192.168.0.0/16");
	/* In allowlist mode the opt-in lifts the private floor; the allowlist still decides. */
	use_optin(base_config(FW_ALLOWLIST), peers, lab);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.77.0.5", TCP), FW_DROP_NOT_ALLOWED);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP), FW_PASS_ALLOWLIST);
	use_optin(base_config(FW_BLOCK), NULL, lab);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.77.0.5", TCP), FW_DROP_BLOCKED);
	/* Entries inside a private range open that part of it, and only that. */
	use(FW_ALLOWLIST, named);
	EXPECT_CASES(named_cases, "allowlist naming private networks");
	use(FW_ALLOWLIST, slash8);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.2.3.4", TCP), FW_PASS_ALLOWLIST);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.1.2.3", TCP), FW_DROP_OTHER_SANDBOX);

	/* A private_open entry opens only with the value FW_ALLOW. */
	release();
	items[0] = (struct cidr){ .family = 4, .len = 16, .addr = { 10, 2 } };
	items[1] = (struct cidr){ .family = 4, .len = 16, .addr = { 10, 3 } };
	assert_int_equal(cidr_set_build(items, values, 2, &odd), 0);
	c = base_config(FW_OPEN);
	c.private_open = odd;
	assert_int_equal(fw_policy_build(&c, &pol, NULL, 0), 0);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.2.3.4", TCP), FW_DROP_PRIVATE);
	EXPECT(v4(GW_MAC, GUEST_MAC, GUEST4, "10.3.3.4", TCP), FW_DROP_PRIVATE);
	fw_policy_free(pol);
	pol = NULL;
	cidr_set_free(odd);
}

static void private_open_build_errors(void **state)
{
	static const char *const bad[] = { "8.0.0.0/8", "0.0.0.0/0", "10.0.0.0/7", "172.0.0.0/8",
					   "100.0.0.0/9", "::/0", "fc00::/6", "2001:db8::/32" };
	static char sentinel;
	struct cidr_set *const untouched = (struct cidr_set *)&sentinel;
	struct cidr_set *s = untouched;
	struct cidr c[2];
	char err[256], text[CIDR_STR_MAX];

	(void)state;
	c[0] = (struct cidr){ .family = 4, .len = 24, .addr = { 10, 77 } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cidr_parse(bad[i], &c[1]), 0);
		err[0] = '\0';
		assert_int_equal(fw_private_open_build(c, 2, NULL, 0, &s, err, sizeof(err)), -EINVAL);
		assert_ptr_equal(s, untouched);
		assert_int_equal(cidr_format(&c[1], text, sizeof(text)), 0);
		if (!strstr(err, text) || !strstr(err, "private range"))
			fail_msg("%s: message \"%s\"", bad[i], err);
	}
	/* The same prefixes in an allowlist are fine: they just open nothing. */
	assert_int_equal(fw_private_open_build(NULL, 0, c, 2, &s, err, sizeof(err)), 0);
	assert_int_equal(cidr_set_count(s), 1);
	cidr_set_free(s);
	s = untouched;
	assert_int_equal(fw_private_open_build(NULL, 1, NULL, 0, &s, err, sizeof(err)), -EINVAL);
	assert_int_equal(fw_private_open_build(NULL, 0, NULL, 1, &s, err, sizeof(err)), -EINVAL);
	assert_int_equal(fw_private_open_build(c, 1, NULL, 0, NULL, err, sizeof(err)), -EINVAL);
	assert_ptr_equal(s, untouched);
	assert_int_equal(fw_private_open_build(NULL, 0, NULL, 0, &s, NULL, 0), 0);
	assert_int_equal(cidr_set_count(s), 0);
	cidr_set_free(s);
}

/* IPv6 forms that carry an IPv4 address are judged by it. */
static void ipv4_in_ipv6(void **state)
{
	const char *peers[] = { "198.51.100.0/24", "2001:db8:1::/48", NULL };
	const char *all[] = { "0.0.0.0/0", "::/0", NULL };
	const char *ten2[] = { "10.2.0.0/16", NULL };
	static const struct dst_case open_cases[] = {
		/* IPv4-mapped and the NAT64 well-known prefix, as before. */
		{ "::ffff:10.2.3.4", FW_DROP_PRIVATE },
		{ "::ffff:100.64.0.1", FW_DROP_PRIVATE },
		{ "64:ff9b::10.2.3.4", FW_DROP_PRIVATE },
		{ "64:ff9b::8.8.8.8", FW_PASS_OPEN },
		/* 6to4: bytes 2..5. */
		{ "2002:a02:304::1", FW_DROP_PRIVATE },
		{ "2002:c0a8:101::", FW_DROP_PRIVATE },
		{ "2002:7f00:1::", FW_DROP_HOST },
		{ "2002::1", FW_DROP_HOST },
		{ "2002:a9fe:a9fe::1", FW_DROP_METADATA },
		{ "2002:c000:201::1", FW_DROP_HOST },         /* 192.0.2.1, the deny list */
		{ "2002:a01:5::1", FW_DROP_OTHER_SANDBOX },   /* 10.1.0.5 */
		{ "2002:808:808::1", FW_PASS_OPEN },
		/* Teredo: the server in bytes 4..7, the client inverted in the last 32 bits. */
		{ "2001:0:808:808::f7f7:f7f7", FW_PASS_OPEN },
		{ "2001:0:808:808::f5fd:fcfb", FW_DROP_PRIVATE },      /* client 10.2.3.4 */
		{ "2001:0:808:808:8000:f227:f5fd:fcfb", FW_DROP_PRIVATE },
		{ "2001:0:a02:304::f7f7:f7f7", FW_DROP_PRIVATE },      /* server 10.2.3.4 */
		{ "2001:0:808:808::80ff:fffe", FW_DROP_HOST },         /* client 127.0.0.1 */
		{ "2001:0:808:808::5601:5601", FW_DROP_METADATA },     /* client 169.254.169.254 */
		{ "2001:0:808:808::f5fe:fffa", FW_DROP_OTHER_SANDBOX }, /* client 10.1.0.5 */
		{ "2001:1::f5fd:fcfb", FW_PASS_OPEN },                 /* not Teredo */
		/* IPv4-compatible ::/96. */
		{ "::10.2.3.4", FW_DROP_PRIVATE },
		{ "::127.0.0.1", FW_DROP_HOST },
		{ "::169.254.169.254", FW_DROP_METADATA },
		{ "::2", FW_DROP_HOST },
		{ "::8.8.8.8", FW_PASS_OPEN },
		/* Local-use NAT64: its /96 by the last 32 bits, the rest of the /48 refused. */
		{ "64:ff9b:1::10.2.3.4", FW_DROP_PRIVATE },
		{ "64:ff9b:1::127.0.0.1", FW_DROP_HOST },
		{ "64:ff9b:1::8.8.8.8", FW_PASS_OPEN },
		{ "64:ff9b:1:a02:304::", FW_DROP_RESERVED },
		{ "64:ff9b:1:808:8:800::", FW_DROP_RESERVED },
		{ "64:ff9b:1:0:0:1:808:808", FW_DROP_RESERVED },
		{ "64:ff9b:1:ffff:ffff:ffff:ffff:ffff", FW_DROP_RESERVED },
		{ "64:ff9b:2::1", FW_PASS_OPEN },
		{ "64:ff9b:0:1::808:808", FW_PASS_OPEN },
	};
	static const struct dst_case allow_cases[] = {
		{ "2002:c633:6407::1", FW_PASS_ALLOWLIST },          /* 198.51.100.7 */
		{ "2002:cb00:7107::1", FW_DROP_HOST },               /* 203.0.113.7, the deny list */
		{ "2002:808:808::1", FW_DROP_NOT_ALLOWED },
		{ "2001:0:c633:6407::39cc:9bf7", FW_PASS_ALLOWLIST }, /* both allowed */
		{ "2001:0:c633:6407::f7f7:f7f7", FW_DROP_NOT_ALLOWED }, /* client 8.8.8.8 */
		{ "2001:0:808:808::39cc:9bf7", FW_DROP_NOT_ALLOWED },   /* server 8.8.8.8 */
		{ "::198.51.100.7", FW_PASS_ALLOWLIST },
		{ "64:ff9b:1::198.51.100.7", FW_PASS_ALLOWLIST },
		{ "64:ff9b:1::8.8.8.8", FW_DROP_NOT_ALLOWED },
		{ "2001:db8:1::7", FW_PASS_ALLOWLIST },
	};
	static const struct dst_case all_cases[] = {
		{ "64:ff9b:1:a02:304::", FW_DROP_RESERVED },
		{ "2002:a02:304::1", FW_DROP_PRIVATE },
		{ "2001:0:808:808::f5fd:fcfb", FW_DROP_PRIVATE },
		{ "2002:808:808::1", FW_PASS_ALLOWLIST },
	};
	static const struct dst_case opened_cases[] = {
		{ "2002:a02:304::1", FW_PASS_OPEN },
		{ "2001:0:808:808::f5fd:fcfb", FW_PASS_OPEN },
		{ "::10.2.3.4", FW_PASS_OPEN },
		{ "64:ff9b:1::10.2.3.4", FW_PASS_OPEN },
		{ "64:ff9b:1:a02:304::", FW_DROP_RESERVED },
		{ "2002:a03:304::1", FW_DROP_PRIVATE },
	};

	(void)state;
	use(FW_OPEN, NULL);
	EXPECT_CASES(open_cases, "open");
	use(FW_ALLOWLIST, peers);
	EXPECT_CASES(allow_cases, "allowlist");
	use(FW_ALLOWLIST, all);
	EXPECT_CASES(all_cases, "allow everything");
	use_optin(base_config(FW_OPEN), NULL, ten2);
	EXPECT_CASES(opened_cases, "opt-in 10.2.0.0/16");
}

static void fragments_by_destination(void **state)
{
	const char *allow[] = { "198.51.100.0/24", "2001:db8:1::/48", NULL };

	(void)state;
	use(FW_ALLOWLIST, allow);
	/* First and later fragments alike: the destination decides, never the ports. */
	EXPECT(v4_frag(GUEST4, "198.51.100.7", 0, 1), FW_PASS_ALLOWLIST);
	EXPECT(v4_frag(GUEST4, "198.51.100.7", 1480, 1), FW_PASS_ALLOWLIST);
	EXPECT(v4_frag(GUEST4, "198.51.100.7", 2960, 0), FW_PASS_ALLOWLIST);
	EXPECT(v4_frag(GUEST4, "198.51.101.1", 1480, 0), FW_DROP_NOT_ALLOWED);
	EXPECT(v4_frag(GUEST4, "198.51.101.1", 0, 1), FW_DROP_NOT_ALLOWED);
	EXPECT(v4_frag(GUEST4, "127.0.0.1", 1480, 0), FW_DROP_HOST);
	EXPECT(v4_frag(GUEST4, "10.1.0.9", 8, 1), FW_DROP_OTHER_SANDBOX);
	EXPECT(v4_frag(GUEST4, "169.254.169.254", 8, 0), FW_DROP_METADATA);
	EXPECT(v4_frag("10.0.0.9", "198.51.100.7", 1480, 0), FW_DROP_SPOOF_IP);
	EXPECT(v6_frag(GUEST6, "2001:db8:1::7", 0, 1), FW_PASS_ALLOWLIST);
	EXPECT(v6_frag(GUEST6, "2001:db8:1::7", 1448, 0), FW_PASS_ALLOWLIST);
	EXPECT(v6_frag(GUEST6, "2001:db8:2::7", 1448, 0), FW_DROP_NOT_ALLOWED);
	EXPECT(v6_frag(GUEST6, "::1", 1448, 1), FW_DROP_HOST);
	EXPECT(v6_frag(GUEST6, "::ffff:127.0.0.1", 1448, 1), FW_DROP_HOST);
	EXPECT(v6_frag(GUEST_LL, "2001:db8:1::7", 1448, 0), FW_DROP_SPOOF_IP);
}

static void source_routes(void **state)
{
	static const uint8_t lsrr[8] = { 0x83, 7, 4, 10, 1, 0, 5, 0 };
	size_t n;

	(void)state;
	use(FW_OPEN, NULL);
	n = eth(fb, GW_MAC, GUEST_MAC, 0x0800);
	n += ipv4_hdr(fb + n, ip(GUEST4), ip("198.51.100.7"), TCP, 0, lsrr, sizeof(lsrr), 20);
	n += l4(fb + n, TCP);
	EXPECT(n, FW_DROP_SOURCE_ROUTE);
	fb[14 + 20] = 0x89; /* strict */
	EXPECT(n, FW_DROP_SOURCE_ROUTE);
	fb[14 + 20] = 0x07; /* record route only */
	EXPECT(n, FW_PASS_OPEN);

	/* A type 0 routing header, then one with no segments left. */
	n = eth(fb, GW_MAC, GUEST_MAC, 0x86dd);
	n += ipv6_hdr(fb + n, ip(GUEST6), ip("2001:db8:1::7"), 43, 24 + 20);
	memset(fb + n, 0, 24);
	fb[n] = TCP;
	fb[n + 1] = 2;
	fb[n + 3] = 1;
	memcpy(fb + n + 8, ip("2001:db8:ff::1"), 16);
	n += 24;
	n += l4(fb + n, TCP);
	EXPECT(n, FW_DROP_SOURCE_ROUTE);
	fb[14 + 40 + 3] = 0;
	EXPECT(n, FW_PASS_OPEN);
}

static void reason_names_and_counters(void **state)
{
	struct fw_counters c;

	(void)state;
	for (int r = 0; r < FW_REASON_COUNT; r++) {
		const char *name = fw_reason_name((enum fw_verdict_reason)r);

		assert_non_null(name);
		assert_string_not_equal(name, "invalid");
		assert_true(strspn(name, "abcdefghijklmnopqrstuvwxyz_") == strlen(name));
		assert_int_equal(strncmp(name, "pass_", 5) == 0,
				 fw_reason_is_pass((enum fw_verdict_reason)r));
		assert_true(strncmp(name, "pass_", 5) == 0 || strncmp(name, "drop_", 5) == 0);
		for (int s = 0; s < r; s++)
			assert_string_not_equal(name, fw_reason_name((enum fw_verdict_reason)s));
	}
	assert_string_equal(fw_reason_name(FW_PASS_OPEN), "pass_open");
	assert_string_equal(fw_reason_name(FW_PASS_ND), "pass_nd");
	assert_string_equal(fw_reason_name(FW_DROP_SPOOF_IP), "drop_spoof_ip");
	assert_string_equal(fw_reason_name(FW_DROP_OTHER_SANDBOX), "drop_other_sandbox");
	assert_string_equal(fw_reason_name(FW_DROP_NOT_ALLOWED), "drop_not_allowed");
	assert_string_equal(fw_reason_name(FW_DROP_PRIVATE), "drop_private");
	assert_string_equal(fw_reason_name(FW_REASON_COUNT), "invalid");
	assert_string_equal(fw_reason_name((enum fw_verdict_reason)-1), "invalid");

	memset(&c, 0, sizeof(c));
	fw_counters_add(&c, FW_PASS_OPEN);
	fw_counters_add(&c, FW_PASS_OPEN);
	fw_counters_add(&c, FW_DROP_HOST);
	fw_counters_add(&c, FW_REASON_COUNT);
	assert_int_equal(c.count[FW_PASS_OPEN], 2);
	assert_int_equal(c.count[FW_DROP_HOST], 1);
	assert_int_equal(c.count[FW_DROP_MALFORMED], 1);
}

/* The passing frames of cut_and_corrupted_frames_never_pass, by number. */
static size_t passing_frame(int k)
{
	switch (k) {
	case 0:
		return v4(GW_MAC, GUEST_MAC, GUEST4, "198.51.100.7", TCP);
	case 1:
		return arpf(BCAST, GUEST_MAC, 1, GUEST_MAC, GUEST4, ZERO_MAC, GW4);
	case 2:
		return ndf(mcast_mac("ff02::1:ff00:1"), GUEST_LL, "ff02::1:ff00:1", 135, GW6, GUEST_MAC);
	case 3:
		return v6(GW_MAC, GUEST_MAC, GUEST6, "2001:db8:1::7", UDP);
	default:
		return v6_frag(GUEST6, "2001:db8:1::7", 1448, 0);
	}
}

/* No proper prefix of a passing frame passes, nor one with another source MAC or IP. */
static void cut_and_corrupted_frames_never_pass(void **state)
{
	const char *allow[] = { "198.51.100.0/24", "2001:db8:1::/48", NULL };
	uint8_t saved[256];
	uint64_t rng = 42;

	(void)state;
	use(FW_ALLOWLIST, allow);
	for (int k = 0; k < 5; k++) {
		size_t n = passing_frame(k);

		assert_true(fw_reason_is_pass(check(n)));
		for (size_t cut = 0; cut < n; cut++)
			if (check(cut) != FW_DROP_MALFORMED)
				fail_msg("frame %d cut at %zu: %s", k, cut, fw_reason_name(check(cut)));
		memcpy(saved, fb, n);
		for (int round = 0; round < 3000; round++) {
			size_t pos = 6 + unit_rand(&rng) % 6;

			memcpy(fb, saved, n);
			if (k != 1 && round % 2) /* the IP source instead */
				pos = 14 + (k == 0 ? 12 + unit_rand(&rng) % 4 : 8 + unit_rand(&rng) % 16);
			fb[pos] ^= (uint8_t)(1 + unit_rand(&rng) % 255);
			if (fw_reason_is_pass(check(n)))
				fail_msg("frame %d with byte %zu changed passes", k, pos);
		}
	}
}

/* ---- GSO frames (fw_check_tx) ---- */

#define ALL_TX (NET_TX_CSUM | NET_TX_TSO4 | NET_TX_TSO6 | NET_TX_ECN)

static uint8_t gso_fb[14 + 40 + 8 + 32 + 60000];

/*
 * A TCP GSO frame as the guest sends it (IPv4 or IPv6 with a destination
 * options header, TCP with 12 option bytes, FIN|PSH|ACK and CWR), in gso_fb;
 * *l4 is where TCP starts.
 */
static size_t gso_frame(bool v6, const uint8_t *smac, const char *src, const char *dst, size_t payload,
			size_t *l4)
{
	uint8_t s[16], d[16];
	size_t n;

	memcpy(s, ip(src), 16);
	memcpy(d, ip(dst), 16);
	n = eth(gso_fb, GW_MAC, smac, v6 ? 0x86dd : 0x0800);
	if (v6) {
		n += ipv6_hdr(gso_fb + n, s, d, 60, 8 + 32 + payload);
		memset(gso_fb + n, 0, 8);
		gso_fb[n] = TCP;
		n += 8;
	} else {
		n += ipv4_hdr(gso_fb + n, s, d, TCP, 0x4000, NULL, 0, 32 + payload);
	}
	*l4 = n;
	memset(gso_fb + n, 0, 32);
	put16(gso_fb + n, 40000);
	put16(gso_fb + n + 2, 443);
	gso_fb[n + 12] = 8 << 4;
	gso_fb[n + 13] = 0x80 | 0x19; /* CWR, FIN, PSH, ACK */
	memset(gso_fb + n + 20, 1, 12);
	n += 32;
	for (size_t i = 0; i < payload; i++)
		gso_fb[n + i] = (uint8_t)i;
	return n + payload;
}

static struct net_vnet_hdr tso(bool v6, size_t l4)
{
	return (struct net_vnet_hdr){ .flags = NET_VNET_F_NEEDS_CSUM,
				      .gso_type = v6 ? NET_VNET_GSO_TCPV6 : NET_VNET_GSO_TCPV4, .hdr_len = 66,
				      .gso_size = 1000, .csum_start = (uint16_t)l4, .csum_offset = 16 };
}

static enum fw_verdict_reason check_tx(size_t n, const struct net_vnet_hdr *h, unsigned offloads,
				       struct net_vnet_hdr *out, enum net_vnet_status *vnet)
{
	uint8_t *copy = malloc(n ? n : 1);
	enum fw_verdict_reason r;

	assert_non_null(copy);
	memcpy(copy, gso_fb, n);
	r = fw_check_tx(pol, copy, n, h, offloads, out, vnet);
	free(copy);
	return r;
}

/*
 * What the host does with a GSO frame, as Linux's tcp_gso_segment and
 * inet/ipv6_gso_segment do it: each segment a copy of the headers with its
 * IP length, IP id and sequence number, FIN and PSH on the last only, CWR on
 * the first only. Each segment goes through fw_check and must get the GSO
 * frame's verdict.
 */
static void segments_agree(size_t n, size_t l4, bool v6, uint16_t gso_size, enum fw_verdict_reason want)
{
	size_t hdr = l4 + 32, done = 0;
	static uint8_t seg[14 + 40 + 8 + 32 + 65535];
	unsigned k = 0;

	while (done < n - hdr) {
		size_t part = n - hdr - done < gso_size ? n - hdr - done : gso_size;
		bool last = done + part == n - hdr;
		enum fw_verdict_reason got;

		memcpy(seg, gso_fb, hdr);
		memcpy(seg + hdr, gso_fb + hdr + done, part);
		if (v6) {
			put16(seg + 14 + 4, (uint16_t)(hdr - 14 - 40 + part));
		} else {
			put16(seg + 14 + 2, (uint16_t)(hdr - 14 + part));
			put16(seg + 14 + 4, (uint16_t)k);
		}
		seg[l4 + 7] = (uint8_t)(seg[l4 + 7] + done);
		if (!last)
			seg[l4 + 13] &= (uint8_t)~0x09;
		if (k)
			seg[l4 + 13] &= (uint8_t)~0x80;
		got = fw_check(pol, seg, hdr + part);
		if (got != want)
			fail_msg("segment %u: %s, the GSO frame %s", k, fw_reason_name(got), fw_reason_name(want));
		done += part;
		k++;
	}
	assert_true(k > 1);
}

static void gso_frames_judged_once(void **state)
{
	static const struct {
		bool v6;
		const char *dst;
		enum fw_mode mode;
		enum fw_verdict_reason want;
	} cases[] = {
		{ false, "198.51.100.7", FW_OPEN, FW_PASS_OPEN },
		{ false, "198.51.100.7", FW_ALLOWLIST, FW_PASS_ALLOWLIST },
		{ false, "8.8.8.8", FW_ALLOWLIST, FW_DROP_NOT_ALLOWED },
		{ false, "10.9.9.9", FW_OPEN, FW_DROP_PRIVATE },
		{ false, "169.254.169.254", FW_OPEN, FW_DROP_METADATA },
		{ false, "10.1.2.3", FW_OPEN, FW_DROP_OTHER_SANDBOX },
		{ false, "198.51.100.7", FW_BLOCK, FW_DROP_BLOCKED },
		{ true, "2001:db8:1::7", FW_OPEN, FW_PASS_OPEN },
		{ true, "2001:db8:1::7", FW_ALLOWLIST, FW_PASS_ALLOWLIST },
		{ true, "2001:db8:2::7", FW_ALLOWLIST, FW_DROP_NOT_ALLOWED },
		{ true, "::ffff:10.0.0.9", FW_OPEN, FW_DROP_PRIVATE },
		{ true, "fd00:ec2::254", FW_OPEN, FW_DROP_METADATA },
	};
	const char *allow[] = { "198.51.100.0/24", "2001:db8:1::/48", NULL };
	struct net_vnet_hdr h, out;
	enum net_vnet_status vnet;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t l4, n = gso_frame(cases[i].v6, GUEST_MAC, cases[i].v6 ? GUEST6 : GUEST4, cases[i].dst, 30000, &l4);
		enum fw_verdict_reason got;

		use(cases[i].mode, cases[i].mode == FW_ALLOWLIST ? allow : NULL);
		h = tso(cases[i].v6, l4);
		got = check_tx(n, &h, ALL_TX, &out, &vnet);
		if (got != cases[i].want)
			fail_msg("case %zu: %s, expected %s", i, fw_reason_name(got), fw_reason_name(cases[i].want));
		assert_int_equal(vnet, NET_VNET_OK);
		assert_int_equal(out.gso_type, h.gso_type);
		assert_int_equal(out.gso_size, 1000);
		assert_int_equal(out.hdr_len, l4 + 32);
		segments_agree(n, l4, cases[i].v6, h.gso_size, cases[i].want);
		/* The plain check of the whole frame agrees too: one parse, the same rules. */
		assert_int_equal(fw_check(pol, gso_fb, n), cases[i].want);
	}
}

static void gso_offload_rule(void **state)
{
	struct net_vnet_hdr h, out;
	enum net_vnet_status vnet;
	size_t l4, n;

	(void)state;
	use(FW_OPEN, NULL);
	n = gso_frame(false, GUEST_MAC, GUEST4, "198.51.100.7", 5000, &l4);
	/* A header the frame cannot have: drop_offload, with the reason, and no header out. */
	h = tso(true, l4);
	assert_int_equal(check_tx(n, &h, ALL_TX, &out, &vnet), FW_DROP_OFFLOAD);
	assert_int_equal(vnet, NET_VNET_GSO_MISMATCH);
	assert_int_equal(out.flags | out.gso_type | out.gso_size, 0);
	h = tso(false, l4);
	assert_int_equal(check_tx(n, &h, NET_TX_CSUM, &out, &vnet), FW_DROP_OFFLOAD);
	assert_int_equal(vnet, NET_VNET_NOT_NEGOTIATED);
	h.gso_type = NET_VNET_GSO_UDP;
	assert_int_equal(check_tx(n, &h, ~0u, &out, NULL), FW_DROP_OFFLOAD);
	h = tso(false, l4);
	h.csum_start = 14 + 12; /* the IP source address */
	h.csum_offset = 0;
	assert_int_equal(check_tx(n, &h, ALL_TX, &out, &vnet), FW_DROP_OFFLOAD);
	assert_int_equal(vnet, NET_VNET_BAD_CSUM);
	/* Unparsable first: a cut frame is malformed whatever its header says. */
	h = tso(false, l4);
	assert_int_equal(check_tx(n - 1, &h, ALL_TX, &out, &vnet), FW_DROP_MALFORMED);
	assert_int_equal(check_tx(n - 1, &(struct net_vnet_hdr){ 0 }, 0, &out, &vnet), FW_DROP_MALFORMED);
	/* A sound header does not save a spoofed frame: anti-spoofing as before. */
	n = gso_frame(false, OTHER_MAC, GUEST4, "198.51.100.7", 5000, &l4);
	assert_int_equal(check_tx(n, &h, ALL_TX, &out, &vnet), FW_DROP_SPOOF_MAC);
	n = gso_frame(false, GUEST_MAC, "10.0.0.3", "198.51.100.7", 5000, &l4);
	assert_int_equal(check_tx(n, &h, ALL_TX, &out, &vnet), FW_DROP_SPOOF_IP);
	n = gso_frame(true, GUEST_MAC, "2001:db8::3", "2001:db8:1::7", 5000, &l4);
	h = tso(true, l4);
	assert_int_equal(check_tx(n, &h, ALL_TX, &out, &vnet), FW_DROP_SPOOF_IP);
	/* Without a header the check is fw_check's. */
	n = gso_frame(false, GUEST_MAC, GUEST4, "198.51.100.7", 5000, &l4);
	assert_int_equal(check_tx(n, &(struct net_vnet_hdr){ 0 }, 0, &out, &vnet), FW_PASS_OPEN);
	assert_int_equal(vnet, NET_VNET_OK);
	assert_string_equal(fw_reason_name(FW_DROP_OFFLOAD), "drop_offload");
}

/* No byte of a passing GSO frame's headers can change and leave a passing frame whose segments differ in verdict. */
static void gso_header_mutations(void **state)
{
	const char *allow[] = { "198.51.100.0/24", NULL };
	static uint8_t saved[14 + 20 + 32 + 4000];
	uint64_t rng = 99;
	struct net_vnet_hdr h, out;
	size_t l4, n;

	(void)state;
	use(FW_ALLOWLIST, allow);
	n = gso_frame(false, GUEST_MAC, GUEST4, "198.51.100.7", 4000, &l4);
	memcpy(saved, gso_fb, n);
	for (int round = 0; round < 3000; round++) {
		size_t pos = unit_rand(&rng) % (l4 + 32);
		enum fw_verdict_reason r;

		memcpy(gso_fb, saved, n);
		gso_fb[pos] ^= (uint8_t)(1 + unit_rand(&rng) % 255);
		h = tso(false, l4);
		r = check_tx(n, &h, ALL_TX, &out, NULL);
		if (fw_reason_is_pass(r))
			segments_agree(n, l4, false, h.gso_size, r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(policy_build_errors, teardown),
		cmocka_unit_test_teardown(malformed_vlan_mac_ethertype, teardown),
		cmocka_unit_test_teardown(arp_rules, teardown),
		cmocka_unit_test_teardown(spoofed_ip, teardown),
		cmocka_unit_test_teardown(neighbor_discovery, teardown),
		cmocka_unit_test_teardown(block_mode, teardown),
		cmocka_unit_test_teardown(open_mode, teardown),
		cmocka_unit_test_teardown(allowlist_mode, teardown),
		cmocka_unit_test_teardown(deny_list_wins, teardown),
		cmocka_unit_test_teardown(built_in_ranges, teardown),
		cmocka_unit_test_teardown(private_ranges_denied, teardown),
		cmocka_unit_test_teardown(private_ranges_opened, teardown),
		cmocka_unit_test(private_open_build_errors),
		cmocka_unit_test_teardown(ipv4_in_ipv6, teardown),
		cmocka_unit_test_teardown(fragments_by_destination, teardown),
		cmocka_unit_test_teardown(source_routes, teardown),
		cmocka_unit_test(reason_names_and_counters),
		cmocka_unit_test_teardown(cut_and_corrupted_frames_never_pass, teardown),
		cmocka_unit_test_teardown(gso_frames_judged_once, teardown),
		cmocka_unit_test_teardown(gso_offload_rule, teardown),
		cmocka_unit_test_teardown(gso_header_mutations, teardown),
	};

	return cmocka_run_group_tests_name("firewall", tests, NULL, NULL);
}
