/* CIDR parsing and formatting with hostile text; longest-prefix-match sets against a naive scan. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "cidr.h"

static struct cidr pfx(const char *s)
{
	struct cidr c;

	if (cidr_parse(s, &c) != 0)
		fail_msg("cidr_parse(\"%s\") failed", s);
	return c;
}

/* The value found for a textual address, or -1 when no prefix holds it. */
static int find(const struct cidr_set *s, const char *addr)
{
	uint8_t a[16] = { 0 }, v = 0xee;
	int family = strchr(addr, ':') ? 6 : 4;
	int r;

	assert_int_equal(inet_pton(family == 4 ? AF_INET : AF_INET6, addr, a), 1);
	r = cidr_set_lookup(s, family, a, &v);
	assert_true(r == 0 || r == 1);
	if (r == 0) {
		assert_int_equal(v, 0xee);
		return -1;
	}
	return v;
}

static struct cidr_set *build(const char **text, const uint8_t *values, size_t n)
{
	struct cidr items[16];
	struct cidr_set *s = NULL;

	assert_true(n <= 16);
	for (size_t i = 0; i < n; i++)
		items[i] = pfx(text[i]);
	assert_int_equal(cidr_set_build(items, values, n, &s), 0);
	assert_non_null(s);
	return s;
}

static void parse_and_format(void **state)
{
	static const struct {
		const char *in, *out;
		int family, len;
	} ok[] = {
		{ "10.0.0.0/8", "10.0.0.0/8", 4, 8 },
		{ "192.0.2.7", "192.0.2.7/32", 4, 32 },
		{ "192.0.2.7/32", "192.0.2.7/32", 4, 32 },
		{ "0.0.0.0/0", "0.0.0.0/0", 4, 0 },
		{ "0.0.0.0", "0.0.0.0/32", 4, 32 },
		{ "255.255.255.255", "255.255.255.255/32", 4, 32 },
		{ "128.0.0.0/1", "128.0.0.0/1", 4, 1 },
		{ "10.0.0.0/15", "10.0.0.0/15", 4, 15 },
		{ "100.64.0.0/10", "100.64.0.0/10", 4, 10 },
		{ "::1", "::1/128", 6, 128 },
		{ "::", "::/128", 6, 128 },
		{ "::/0", "::/0", 6, 0 },
		{ "2001:db8::/32", "2001:db8::/32", 6, 32 },
		{ "2001:DB8::/32", "2001:db8::/32", 6, 32 },
		{ "2001:0db8:0000:0000::/64", "2001:db8::/64", 6, 64 },
		{ "fe80::/10", "fe80::/10", 6, 10 },
		{ "8000::/1", "8000::/1", 6, 1 },
		{ "2001:db8:0:0:8000::/65", "2001:db8:0:0:8000::/65", 6, 65 },
		{ "::ffff:10.0.0.1", "::ffff:10.0.0.1/128", 6, 128 },
		{ "::ffff:0.0.0.0/96", "::ffff:0.0.0.0/96", 6, 96 },
		{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", 6,
		  128 },
		{ "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
		  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", 6, 128 },
	};
	char buf[CIDR_STR_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct cidr c, again;

		memset(&c, 0xa5, sizeof(c));
		assert_int_equal(cidr_parse(ok[i].in, &c), 0);
		assert_int_equal(c.family, ok[i].family);
		assert_int_equal(c.len, ok[i].len);
		if (c.family == 4)
			for (int b = 4; b < 16; b++)
				assert_int_equal(c.addr[b], 0);
		assert_int_equal(cidr_format(&c, buf, sizeof(buf)), 0);
		assert_string_equal(buf, ok[i].out);
		assert_int_equal(cidr_parse(buf, &again), 0);
		assert_memory_equal(&c, &again, sizeof(c));
	}
	assert_int_equal(pfx("10.1.2.0/24").addr[2], 2);
	assert_int_equal(pfx("2001:db8::/32").addr[1], 0x01);
	assert_int_equal(pfx("2001:db8::/32").addr[3], 0xb8);
}

static void parse_rejects(void **state)
{
	static const char *bad[] = {
		"",
		"/",
		"/8",
		"10.0.0.0/",
		"10.0.0.0/33",
		"10.0.0.0/64",
		"10.0.0.0/-1",
		"10.0.0.0/+8",
		"10.0.0.0/08",      /* one spelling per length */
		"::/00",
		"10.0.0.0/8x",
		"10.0.0.0/0x8",
		"10.0.0.0/99999999999999999999999",
		"10.0.0.0/4294967304", /* 2^32 + 8 */
		"10.0.0.0/8/8",
		"10.0.0.0//8",
		"2001:db8::/129",
		"2001:db8::/256",
		" 10.0.0.0/8",
		"10.0.0.0/8 ",
		"10.0.0.0 /8",
		"10.0.0.0/ 8",
		"10.0 .0.0/8",
		"10.0.0.0\t/8",
		"10.0.0.0/8\n",
		"2001:db8:: /32",
		"010.0.0.1",        /* octal to inet_aton */
		"10.0.0.01",
		"10.00.0.0/16",
		"00.0.0.0/0",
		"::ffff:010.0.0.1",
		"::ffff:10.0.0.01",
		"0x0a.0.0.1",
		"10.0.0",
		"127.1",
		"0/0",
		"10",
		"10.0.0.0.0",
		"256.0.0.0",
		"1.2.3.-4",
		"1..2.3",
		".1.2.3.4",
		"1.2.3.4.",
		"fe80::1%eth0",
		"fe80::%1/64",
		":::",
		"1::2::3",
		"2001:db8:::/32",
		"12345::",
		"g::1",
		"::ffff:1.2.3",
		"[::1]",
		"abc",
		"localhost",
		"\xef\xbc\x91\x30.0.0.0/8", /* fullwidth digit one */
		"10.0.0.0/8\xff",
		"1111111111111111111111111111111111111111111111111111111111111111111111111111",
		"1111:1111:1111:1111:1111:1111:1111:1111:1111:1111:1111:1111:1111:1111/128",
	};
	struct cidr c, untouched;

	(void)state;
	memset(&c, 0x5a, sizeof(c));
	untouched = c;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cidr_parse(bad[i], &c) != -EINVAL)
			fail_msg("cidr_parse(\"%s\") accepted", bad[i]);
		assert_memory_equal(&c, &untouched, sizeof(c));
	}
	assert_int_equal(cidr_parse(NULL, &c), -EINVAL);
	assert_int_equal(cidr_parse("10.0.0.0/8", NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char why[96];

		assert_int_equal(cidr_parse_masked(bad[i], &c), -EINVAL);
		assert_non_null(strstr(cidr_parse_why(bad[i], why, sizeof(why)), "is not an IPv4 or IPv6"));
	}
}

/* Host bits set: a refusal of its own, with the prefix that was probably meant. */
static void parse_host_bits(void **state)
{
	static const struct {
		const char *in, *meant;
	} cases[] = {
		{ "10.0.0.1/8", "10.0.0.0/8" },
		{ "10.0.0.128/24", "10.0.0.0/24" },
		{ "192.0.2.7/31", "192.0.2.6/31" },
		{ "2001:db8::1/32", "2001:db8::/32" },
		{ "::1/127", "::/127" },
		{ "255.255.255.255/1", "128.0.0.0/1" },
	};
	struct cidr c, untouched;
	char text[CIDR_STR_MAX], why[96];

	(void)state;
	memset(&c, 0x5a, sizeof(c));
	untouched = c;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(cidr_parse(cases[i].in, &c), -EDOM);
		assert_memory_equal(&c, &untouched, sizeof(c));
		assert_int_equal(cidr_parse_masked(cases[i].in, &c), 0);
		assert_int_equal(cidr_format(&c, text, sizeof(text)), 0);
		assert_string_equal(text, cases[i].meant);
		assert_non_null(strstr(cidr_parse_why(cases[i].in, why, sizeof(why)), cases[i].meant));
		c = untouched;
	}
	/* A valid prefix is its own masked form. */
	assert_int_equal(cidr_parse_masked("198.51.100.0/24", &c), 0);
	assert_int_equal(cidr_format(&c, text, sizeof(text)), 0);
	assert_string_equal(text, "198.51.100.0/24");
}

static void format_limits(void **state)
{
	struct cidr c = pfx("10.0.0.0/8"), odd;
	char buf[CIDR_STR_MAX];

	(void)state;
	/* "10.0.0.0/8" is 10 characters: 11 bytes fit, 10 do not. */
	assert_int_equal(cidr_format(&c, buf, 11), 0);
	assert_string_equal(buf, "10.0.0.0/8");
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(cidr_format(&c, buf, 10), -ENOSPC);
	assert_int_equal(buf[0], '\0');
	assert_int_equal(buf[10], 'x');
	assert_int_equal(cidr_format(&c, buf, 1), -ENOSPC);
	assert_int_equal(cidr_format(&c, NULL, 0), -ENOSPC);
	assert_int_equal(cidr_format(&c, NULL, 5), -EINVAL);
	assert_int_equal(cidr_format(NULL, buf, sizeof(buf)), -EINVAL);

	c = pfx("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	assert_int_equal(cidr_format(&c, buf, sizeof(buf)), 0);
	assert_true(strlen(buf) < CIDR_STR_MAX);

	odd = c;
	odd.family = 5;
	assert_int_equal(cidr_format(&odd, buf, sizeof(buf)), -EINVAL);
	odd.family = 0;
	assert_int_equal(cidr_format(&odd, buf, sizeof(buf)), -EINVAL);
	odd = pfx("10.0.0.0/8");
	odd.len = 33;
	assert_int_equal(cidr_format(&odd, buf, sizeof(buf)), -EINVAL);
	odd = pfx("::/0");
	odd.len = 129;
	assert_int_equal(cidr_format(&odd, buf, sizeof(buf)), -EINVAL);
}

static bool in(const char *prefix, const char *addr)
{
	struct cidr c = pfx(prefix);
	uint8_t a[16] = { 0 };
	int family = strchr(addr, ':') ? 6 : 4;

	assert_int_equal(inet_pton(family == 4 ? AF_INET : AF_INET6, addr, a), 1);
	return cidr_contains(&c, family, a);
}

static void contains_edges(void **state)
{
	static const uint8_t zero[16];
	struct cidr c;

	(void)state;
	assert_true(in("0.0.0.0/0", "0.0.0.0"));
	assert_true(in("0.0.0.0/0", "255.255.255.255"));
	assert_false(in("0.0.0.0/0", "::"));
	assert_true(in("192.0.2.7", "192.0.2.7"));
	assert_false(in("192.0.2.7", "192.0.2.6"));
	assert_false(in("192.0.2.7", "192.0.2.8"));
	assert_true(in("10.0.0.0/15", "10.1.255.255"));
	assert_false(in("10.0.0.0/15", "10.2.0.0"));
	assert_false(in("10.0.0.0/15", "9.255.255.255"));
	assert_true(in("128.0.0.0/1", "255.0.0.0"));
	assert_false(in("128.0.0.0/1", "127.255.255.255"));
	assert_true(in("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
	assert_false(in("::/0", "10.0.0.1"));
	assert_true(in("::1", "::1"));
	assert_false(in("::1", "::"));
	assert_false(in("::1", "::2"));
	assert_true(in("2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff"));
	assert_false(in("2001:db8::/64", "2001:db8:0:1::"));
	assert_true(in("2001:db8::8000:0:0:0/65", "2001:db8::ffff:ffff:ffff:ffff"));
	assert_false(in("2001:db8::8000:0:0:0/65", "2001:db8::7fff:ffff:ffff:ffff"));
	assert_true(in("2001:db8::/63", "2001:db8:0:1:ffff:ffff:ffff:ffff"));
	assert_false(in("2001:db8::/63", "2001:db8:0:2::"));
	/* IPv4-compatible and IPv4-mapped addresses are IPv6. */
	assert_false(in("10.0.0.0/8", "::a00:1"));
	assert_false(in("10.0.0.0/8", "::ffff:10.0.0.1"));
	assert_false(in("::a00:0/104", "10.0.0.1"));

	c = pfx("0.0.0.0/0");
	assert_false(cidr_contains(&c, 6, zero));
	assert_false(cidr_contains(&c, 0, zero));
	assert_false(cidr_contains(&c, AF_INET, zero));
	assert_false(cidr_contains(&c, 4, NULL));
	assert_false(cidr_contains(NULL, 4, zero));
	c.len = 33;
	assert_false(cidr_contains(&c, 4, zero));
	/* Host bits of a hand-made prefix do not matter. */
	c = pfx("10.0.0.0/8");
	c.addr[3] = 1;
	assert_true(in("10.0.0.0/8", "10.200.0.0"));
	assert_true(cidr_contains(&c, 4, (const uint8_t[]){ 10, 200, 0, 0 }));
}

static void private_ranges(void **state)
{
	static const char *const inside[] = {
		"10.0.0.0/8", "10.1.0.0/16", "10.255.255.255", "172.16.0.0/12", "172.31.0.0/16",
		"192.168.0.0/16", "192.168.1.7", "100.64.0.0/10", "100.127.255.0/24", "fc00::/7",
		"fd00::/8", "fd53:5356::/48", "fc00::1",
	};
	static const char *const outside[] = {
		"0.0.0.0/0", "8.0.0.0/5", "10.0.0.0/7", "11.0.0.0/8", "9.255.255.255", "172.0.0.0/8",
		"172.15.255.255", "172.32.0.0/16", "192.0.0.0/8", "192.169.0.0/16", "100.0.0.0/8",
		"100.128.0.0/10", "100.63.255.255", "::/0", "fc00::/6", "fe00::/8", "fbff::1",
		"::ffff:10.0.0.1", "::a00:1", "2002:a00:1::/48", "198.51.100.0/24",
	};
	struct cidr c;
	char text[CIDR_STR_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
		c = pfx(inside[i]);
		if (!cidr_is_private(&c))
			fail_msg("%s is not private", inside[i]);
	}
	for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++) {
		c = pfx(outside[i]);
		if (cidr_is_private(&c))
			fail_msg("%s is private", outside[i]);
	}
	/* The table and its text agree, and each range is private itself. */
	for (size_t i = 0; i < CIDR_PRIVATE_COUNT; i++) {
		assert_int_equal(cidr_format(&cidr_private_ranges[i], text, sizeof(text)), 0);
		assert_non_null(strstr(CIDR_PRIVATE_TEXT, text));
		assert_true(cidr_is_private(&cidr_private_ranges[i]));
	}
	assert_false(cidr_is_private(NULL));
	c = pfx("10.0.0.0/8");
	c.len = 33;
	assert_false(cidr_is_private(&c));
	c.family = 5;
	c.len = 8;
	assert_false(cidr_is_private(&c));
}

static void nested(void **state)
{
	static const char *text[] = { "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24" };
	static const uint8_t values[] = { 1, 2, 1 };
	static const struct {
		const char *addr;
		int want;
	} probes[] = {
		{ "0.0.0.0", -1 },      { "9.255.255.255", -1 }, { "10.0.0.0", 1 },
		{ "10.0.255.255", 1 },  { "10.1.0.0", 2 },       { "10.1.1.255", 2 },
		{ "10.1.2.0", 1 },      { "10.1.2.128", 1 },     { "10.1.2.255", 1 },
		{ "10.1.3.0", 2 },      { "10.1.255.255", 2 },   { "10.2.0.0", 1 },
		{ "10.255.255.255", 1 }, { "11.0.0.0", -1 },     { "255.255.255.255", -1 },
	};
	/* The order of the items must not matter. */
	static const size_t orders[][3] = { { 0, 1, 2 }, { 2, 1, 0 }, { 1, 2, 0 } };

	(void)state;
	for (size_t o = 0; o < 3; o++) {
		const char *t[3];
		uint8_t v[3];
		struct cidr_set *s;

		for (size_t i = 0; i < 3; i++) {
			t[i] = text[orders[o][i]];
			v[i] = values[orders[o][i]];
		}
		s = build(t, v, 3);
		assert_int_equal(cidr_set_count(s), 3);
		for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
			if (find(s, probes[i].addr) != probes[i].want)
				fail_msg("order %zu: %s gave %d, not %d", o, probes[i].addr,
					 find(s, probes[i].addr), probes[i].want);
		assert_int_equal(find(s, "::a00:1"), -1);
		cidr_set_free(s);
	}
}

static void adjacent_and_overlapping(void **state)
{
	static const char *adj[] = { "10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24", "10.0.2.0/23" };
	static const uint8_t adj_v[] = { 1, 2, 2, 0 };
	static const char *over[] = { "0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/9", "255.255.255.255/32",
				      "0.0.0.0/32", "255.0.0.0/8" };
	static const uint8_t over_v[] = { 3, 1, 1, 4, 5, 6 };
	static const char *six[] = { "::/0", "2001:db8::/32", "2001:db8::/64", "2001:db8:0:0:8000::/65",
				     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::" };
	static const uint8_t six_v[] = { 9, 1, 2, 3, 4, 5 };
	struct cidr_set *s;

	(void)state;
	s = build(adj, adj_v, 4);
	assert_int_equal(find(s, "9.255.255.255"), -1);
	assert_int_equal(find(s, "10.0.0.0"), 1);
	assert_int_equal(find(s, "10.0.0.127"), 1);
	assert_int_equal(find(s, "10.0.0.128"), 2);
	assert_int_equal(find(s, "10.0.0.255"), 2);
	assert_int_equal(find(s, "10.0.1.0"), 2);
	assert_int_equal(find(s, "10.0.1.255"), 2);
	assert_int_equal(find(s, "10.0.2.0"), 0); /* 0 is a value, not "none" */
	assert_int_equal(find(s, "10.0.3.255"), 0);
	assert_int_equal(find(s, "10.0.4.0"), -1);
	cidr_set_free(s);

	s = build(over, over_v, 6);
	assert_int_equal(cidr_set_count(s), 6);
	assert_int_equal(find(s, "0.0.0.0"), 5);
	assert_int_equal(find(s, "0.0.0.1"), 3);
	assert_int_equal(find(s, "9.255.255.255"), 3);
	assert_int_equal(find(s, "10.0.0.0"), 1);
	assert_int_equal(find(s, "10.127.255.255"), 1);
	assert_int_equal(find(s, "10.128.0.0"), 1);
	assert_int_equal(find(s, "10.255.255.255"), 1);
	assert_int_equal(find(s, "11.0.0.0"), 3);
	assert_int_equal(find(s, "254.255.255.255"), 3);
	assert_int_equal(find(s, "255.0.0.0"), 6);
	assert_int_equal(find(s, "255.255.255.254"), 6);
	assert_int_equal(find(s, "255.255.255.255"), 4);
	assert_int_equal(find(s, "::"), -1);
	cidr_set_free(s);

	s = build(six, six_v, 6);
	assert_int_equal(find(s, "::"), 5);
	assert_int_equal(find(s, "::1"), 9);
	assert_int_equal(find(s, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"), 9);
	assert_int_equal(find(s, "2001:db8::"), 2);
	assert_int_equal(find(s, "2001:db8::7fff:ffff:ffff:ffff"), 2);
	assert_int_equal(find(s, "2001:db8::8000:0:0:0"), 3);
	assert_int_equal(find(s, "2001:db8::ffff:ffff:ffff:ffff"), 3);
	assert_int_equal(find(s, "2001:db8:0:1::"), 1);
	assert_int_equal(find(s, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
	assert_int_equal(find(s, "2001:db9::"), 9);
	assert_int_equal(find(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), 9);
	assert_int_equal(find(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 4);
	assert_int_equal(find(s, "0.0.0.0"), -1);
	cidr_set_free(s);
}

/* Prefixes bunched at either end of the space, probed from the other end too. */
static void bunched_at_the_ends(void **state)
{
	static const char *low[] = { "0.0.0.0/8", "0.1.0.0/16", "0.1.2.3" };
	static const char *high[] = { "255.0.0.0/8", "255.1.0.0/16", "255.255.255.255" };
	static const char *low6[] = { "::/16", "0:1::/32", "::1" };
	static const char *high6[] = { "ffff::/16", "ffff:1::/32", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" };
	static const uint8_t values[] = { 1, 2, 3 };
	struct cidr_set *s;

	(void)state;
	s = build(low, values, 3);
	assert_int_equal(find(s, "0.0.0.0"), 1);
	assert_int_equal(find(s, "0.1.2.3"), 3);
	assert_int_equal(find(s, "0.1.255.255"), 2);
	assert_int_equal(find(s, "0.2.0.0"), 1);
	assert_int_equal(find(s, "0.255.255.255"), 1);
	assert_int_equal(find(s, "1.0.0.0"), -1);
	assert_int_equal(find(s, "128.0.0.0"), -1);
	assert_int_equal(find(s, "255.255.255.255"), -1);
	cidr_set_free(s);

	s = build(high, values, 3);
	assert_int_equal(find(s, "0.0.0.0"), -1);
	assert_int_equal(find(s, "127.255.255.255"), -1);
	assert_int_equal(find(s, "254.255.255.255"), -1);
	assert_int_equal(find(s, "255.0.0.0"), 1);
	assert_int_equal(find(s, "255.1.0.0"), 2);
	assert_int_equal(find(s, "255.2.0.0"), 1);
	assert_int_equal(find(s, "255.255.255.254"), 1);
	assert_int_equal(find(s, "255.255.255.255"), 3);
	cidr_set_free(s);

	s = build(low6, values, 3);
	assert_int_equal(find(s, "::"), 1);
	assert_int_equal(find(s, "::1"), 3);
	assert_int_equal(find(s, "0:1::"), 2);
	assert_int_equal(find(s, "0:2::"), 1);
	assert_int_equal(find(s, "1::"), -1);
	assert_int_equal(find(s, "8000::"), -1);
	assert_int_equal(find(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), -1);
	cidr_set_free(s);

	s = build(high6, values, 3);
	assert_int_equal(find(s, "::"), -1);
	assert_int_equal(find(s, "fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), -1);
	assert_int_equal(find(s, "ffff::"), 1);
	assert_int_equal(find(s, "ffff:1::"), 2);
	assert_int_equal(find(s, "ffff:2::"), 1);
	assert_int_equal(find(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), 1);
	assert_int_equal(find(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 3);
	cidr_set_free(s);
}

static void duplicates(void **state)
{
	static const char *text[] = { "10.0.0.0/8", "10.0.0.0/16", "10.0.0.0/8", "192.0.2.0/24",
				      "10.0.0.0/8", "2001:db8::/32", "2001:db8::/32" };
	static const uint8_t values[] = { 1, 7, 2, 4, 3, 5, 6 };
	struct cidr items[3];
	uint8_t v[3] = { 1, 2, 3 };
	struct cidr_set *s;

	(void)state;
	s = build(text, values, 7);
	assert_int_equal(cidr_set_count(s), 4);
	assert_int_equal(find(s, "10.200.0.0"), 3);
	assert_int_equal(find(s, "10.0.200.0"), 7);
	assert_int_equal(find(s, "192.0.2.1"), 4);
	assert_int_equal(find(s, "2001:db8::1"), 6);
	cidr_set_free(s);

	/* Host bits in a hand-made item are ignored, so these three are one prefix. */
	items[0] = pfx("10.0.0.0/8");
	items[1] = pfx("10.0.0.0/8");
	items[1].addr[3] = 1;
	items[2] = pfx("10.0.0.0/8");
	items[2].addr[1] = 0x80;
	assert_int_equal(cidr_set_build(items, v, 3, &s), 0);
	assert_int_equal(cidr_set_count(s), 1);
	assert_int_equal(find(s, "10.1.2.3"), 3);
	assert_int_equal(find(s, "11.0.0.0"), -1);
	cidr_set_free(s);
}

static void families_never_mix(void **state)
{
	static const char *v4[] = { "10.0.0.0/8", "0.0.0.0/32" };
	static const char *v6[] = { "::a00:0/104", "::ffff:0.0.0.0/96", "::/128" };
	static const char *both[] = { "::a00:0/104", "10.0.0.0/8" };
	static const uint8_t values[] = { 1, 2, 3 };
	static const uint8_t zero[16];
	struct cidr_set *s;
	uint8_t v = 0;

	(void)state;
	s = build(v4, values, 2);
	assert_int_equal(find(s, "10.0.0.1"), 1);
	assert_int_equal(find(s, "::a00:1"), -1);
	assert_int_equal(find(s, "::ffff:10.0.0.1"), -1);
	assert_int_equal(find(s, "::"), -1);
	assert_int_equal(cidr_set_lookup(s, 6, zero, &v), 0);
	assert_int_equal(cidr_set_lookup(s, 4, zero, &v), 1);
	assert_int_equal(v, 2);
	/* Only 4 and 6 are families; AF_INET and friends find nothing. */
	assert_int_equal(cidr_set_lookup(s, AF_INET, zero, &v), 0);
	assert_int_equal(cidr_set_lookup(s, AF_INET6, zero, &v), 0);
	assert_int_equal(cidr_set_lookup(s, 0, zero, &v), 0);
	assert_int_equal(cidr_set_lookup(s, -1, zero, &v), 0);
	assert_int_equal(cidr_set_lookup(s, 4, NULL, &v), 0);
	assert_int_equal(cidr_set_lookup(NULL, 4, zero, &v), 0);
	/* A caller may ask only whether something matches. */
	assert_int_equal(cidr_set_lookup(s, 4, zero, NULL), 1);
	cidr_set_free(s);

	s = build(v6, values, 3);
	assert_int_equal(find(s, "::a00:1"), 1);
	assert_int_equal(find(s, "::ffff:10.0.0.1"), 2);
	assert_int_equal(find(s, "10.0.0.1"), -1);
	assert_int_equal(find(s, "0.0.0.0"), -1);
	assert_int_equal(find(s, "::"), 3);
	cidr_set_free(s);

	s = build(both, values, 2);
	assert_int_equal(cidr_set_count(s), 2);
	assert_int_equal(find(s, "::a00:1"), 1);
	assert_int_equal(find(s, "10.0.0.1"), 2);
	assert_int_equal(find(s, "::b00:1"), -1);
	assert_int_equal(find(s, "11.0.0.1"), -1);
	cidr_set_free(s);
}

static void empty_and_bad_sets(void **state)
{
	static const char *probes[] = { "0.0.0.0", "10.0.0.1", "255.255.255.255", "::", "::1",
					"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" };
	struct cidr_set *s = NULL, *const sentinel = (struct cidr_set *)&s;
	struct cidr items[2] = { pfx("10.0.0.0/8"), pfx("::/0") };
	uint8_t values[2] = { 1, 2 };

	(void)state;
	assert_int_equal(cidr_set_build(NULL, NULL, 0, &s), 0);
	assert_non_null(s);
	assert_int_equal(cidr_set_count(s), 0);
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		assert_int_equal(find(s, probes[i]), -1);
	cidr_set_free(s);
	assert_int_equal(cidr_set_build(items, values, 0, &s), 0);
	assert_int_equal(cidr_set_count(s), 0);
	assert_int_equal(find(s, "10.0.0.1"), -1);
	cidr_set_free(s);
	cidr_set_free(NULL);
	assert_int_equal(cidr_set_count(NULL), 0);

	assert_int_equal(cidr_set_build(items, values, 2, NULL), -EINVAL);
	s = sentinel;
	assert_int_equal(cidr_set_build(NULL, values, 2, &s), -EINVAL);
	assert_int_equal(cidr_set_build(items, NULL, 2, &s), -EINVAL);
	items[1].family = 5;
	assert_int_equal(cidr_set_build(items, values, 2, &s), -EINVAL);
	items[1].family = AF_INET6;
	assert_int_equal(cidr_set_build(items, values, 2, &s), -EINVAL);
	items[1].family = 0;
	assert_int_equal(cidr_set_build(items, values, 2, &s), -EINVAL);
	items[1] = pfx("::/0");
	items[1].len = 129;
	assert_int_equal(cidr_set_build(items, values, 2, &s), -EINVAL);
	items[1].len = 255;
	assert_int_equal(cidr_set_build(items, values, 2, &s), -EINVAL);
	items[1] = pfx("::/0");
	items[0].len = 33;
	assert_int_equal(cidr_set_build(items, values, 2, &s), -EINVAL);
	assert_ptr_equal(s, sentinel);
	/* ... and a bad item last still fails the whole set. */
	items[0] = pfx("10.0.0.0/8");
	items[1].len = 200;
	assert_int_equal(cidr_set_build(items, values, 2, &s), -EINVAL);
	assert_ptr_equal(s, sentinel);
}

/* ---- randomized cross-check against a naive longest-prefix scan ---- */

#define RANDOM_PREFIXES 2000
#define RANDOM_ADDRS 100000

struct u128 {
	uint64_t hi, lo;
};

static uint64_t rand64(uint64_t *st)
{
	return (uint64_t)unit_rand(st) << 32 | unit_rand(st);
}

static void to_bytes(int family, struct u128 n, uint8_t *a)
{
	memset(a, 0, 16);
	if (family == 4) {
		for (int i = 3; i >= 0; i--, n.lo >>= 8)
			a[i] = (uint8_t)n.lo;
		return;
	}
	for (int i = 15; i >= 8; i--, n.lo >>= 8)
		a[i] = (uint8_t)n.lo;
	for (int i = 7; i >= 0; i--, n.hi >>= 8)
		a[i] = (uint8_t)n.hi;
}

/* The network part of a prefix, as a mask; written without lib/cidr.c's helpers on purpose. */
static struct u128 net_mask(int family, unsigned len)
{
	struct u128 m = { 0, 0 };

	if (family == 4) {
		m.lo = len ? (0xffffffffull << (32 - len)) & 0xffffffffull : 0;
		return m;
	}
	for (unsigned b = 0; b < len; b++) {
		if (b < 64)
			m.hi |= 1ull << (63 - b);
		else
			m.lo |= 1ull << (127 - b);
	}
	return m;
}

struct ref {
	struct u128 net, mask;
	unsigned len;
	uint8_t value;
};

/* Every prefix checked, the longest kept, the later kept among equals. */
static int naive(const struct ref *r, size_t n, struct u128 a, uint8_t *value)
{
	int best = -1;

	for (size_t i = 0; i < n; i++)
		if ((a.hi & r[i].mask.hi) == r[i].net.hi && (a.lo & r[i].mask.lo) == r[i].net.lo &&
		    (int)r[i].len >= best) {
			best = (int)r[i].len;
			*value = r[i].value;
		}
	return best >= 0;
}

/*
 * Random prefixes of one family: a third carved out of earlier ones, a few
 * repeated. Bunched ones all lie in one random /12 (IPv4) or /40 (IPv6), as
 * an allowlist of one network's subnets would, and as the set's directory
 * must cope with.
 */
static void random_prefixes(int family, uint64_t *st, struct cidr *items, uint8_t *values,
			    struct ref *r, size_t n, bool bunched)
{
	unsigned w = family == 4 ? 32 : 128, bunch_len = family == 4 ? 12 : 40;
	struct u128 bunch_mask = net_mask(family, bunch_len);
	struct u128 bunch = { rand64(st) & bunch_mask.hi, rand64(st) & bunch_mask.lo };
	unsigned where = unit_rand(st) % 4;

	/* At either end of the address space, the first or last interval is inside the bunch. */
	if (where == 0)
		bunch = (struct u128){ 0, 0 };
	if (where == 1)
		bunch = bunch_mask;

	for (size_t i = 0; i < n; i++) {
		unsigned pick = unit_rand(st) % 30, len;
		struct u128 a;

		if (i && pick < 2) {
			r[i] = r[unit_rand(st) % i];
			len = r[i].len;
			a = r[i].net;
		} else if (i && pick < 12) {
			const struct ref *parent = &r[unit_rand(st) % i];

			len = parent->len == w ? w : parent->len + 1 + unit_rand(st) % (w - parent->len);
			a = (struct u128){ rand64(st), rand64(st) };
			a.hi = parent->net.hi | (a.hi & ~parent->mask.hi);
			a.lo = parent->net.lo | (a.lo & ~parent->mask.lo);
		} else {
			/* A few short ones, not so short that every address matches. */
			if (unit_rand(st) % 100 == 0)
				len = family == 4 ? 4 + unit_rand(st) % 4 : 8 + unit_rand(st) % 8;
			else
				len = family == 4 ? 8 + unit_rand(st) % 25 : 16 + unit_rand(st) % 113;
			a = (struct u128){ rand64(st), rand64(st) };
			if (bunched) {
				len = bunch_len + unit_rand(st) % (w - bunch_len + 1);
				a.hi = bunch.hi | (a.hi & ~bunch_mask.hi);
				a.lo = bunch.lo | (a.lo & ~bunch_mask.lo);
			}
		}
		if (family == 4) {
			a.hi = 0;
			a.lo &= 0xffffffff;
		}
		r[i].len = len;
		r[i].mask = net_mask(family, len);
		r[i].net = (struct u128){ a.hi & r[i].mask.hi, a.lo & r[i].mask.lo };
		r[i].value = (uint8_t)(unit_rand(st) % 4);
		items[i] = (struct cidr){ .family = (uint8_t)family, .len = (uint8_t)len };
		to_bytes(family, r[i].net, items[i].addr);
		values[i] = r[i].value;
	}
}

/*
 * Half at or next to the first or last address of a prefix, half random: of
 * those, half share some leading bits with a prefix, so that they land among
 * the prefixes rather than far away from them.
 */
static struct u128 random_addr(int family, uint64_t *st, const struct ref *r, size_t n)
{
	struct u128 a = { rand64(st), rand64(st) };

	if (unit_rand(st) % 2 == 0) {
		const struct ref *p = &r[unit_rand(st) % n];

		if (unit_rand(st) % 2) {
			struct u128 m = net_mask(family, unit_rand(st) % (p->len + 1));

			a.hi = (p->net.hi & m.hi) | (a.hi & ~m.hi);
			a.lo = (p->net.lo & m.lo) | (a.lo & ~m.lo);
		}
	} else {
		const struct ref *p = &r[unit_rand(st) % n];
		bool last = unit_rand(st) % 2;
		int delta = (int)(unit_rand(st) % 3) - 1;

		a = last ? (struct u128){ p->net.hi | ~p->mask.hi, p->net.lo | ~p->mask.lo } : p->net;
		if (family == 4)
			a.hi = 0;
		if (delta > 0 && !++a.lo)
			a.hi++;
		if (delta < 0 && !a.lo--)
			a.hi--;
	}
	if (family == 4) {
		a.hi = 0;
		a.lo &= 0xffffffff;
	}
	return a;
}

static size_t naive_count(const struct ref *r, size_t n)
{
	size_t distinct = 0;

	for (size_t i = 0; i < n; i++) {
		size_t j = 0;

		while (j < i && !(r[j].len == r[i].len && r[j].net.hi == r[i].net.hi &&
				  r[j].net.lo == r[i].net.lo))
			j++;
		distinct += j == i;
	}
	return distinct;
}

/* Builds one set of n IPv4 and n IPv6 prefixes, interleaved, and probes it with addrs addresses a family. */
static void cross_check(uint64_t seed, size_t n, size_t addrs, bool bunched)
{
	static struct cidr items[2 * RANDOM_PREFIXES];
	static uint8_t values[2 * RANDOM_PREFIXES];
	static struct cidr tmp[RANDOM_PREFIXES];
	static uint8_t tmpv[RANDOM_PREFIXES];
	static struct ref r4[RANDOM_PREFIXES], r6[RANDOM_PREFIXES];
	uint64_t st = seed;
	struct cidr_set *s;
	size_t hits[2] = { 0, 0 };

	assert_true(n >= 1 && n <= RANDOM_PREFIXES);
	/* Interleaved, so the set sorts the families apart itself. */
	random_prefixes(4, &st, tmp, tmpv, r4, n, bunched);
	for (size_t i = 0; i < n; i++) {
		items[2 * i] = tmp[i];
		values[2 * i] = tmpv[i];
	}
	random_prefixes(6, &st, tmp, tmpv, r6, n, bunched);
	for (size_t i = 0; i < n; i++) {
		items[2 * i + 1] = tmp[i];
		values[2 * i + 1] = tmpv[i];
	}
	assert_int_equal(cidr_set_build(items, values, 2 * n, &s), 0);
	assert_int_equal(cidr_set_count(s), naive_count(r4, n) + naive_count(r6, n));

	for (int f = 0; f < 2; f++) {
		int family = f ? 6 : 4;
		const struct ref *r = f ? r6 : r4;

		for (size_t i = 0; i < addrs; i++) {
			struct u128 a = random_addr(family, &st, r, n);
			uint8_t bytes[16], want = 0, got = 0;
			int want_hit = naive(r, n, a, &want);
			int got_hit;

			to_bytes(family, a, bytes);
			got_hit = cidr_set_lookup(s, family, bytes, &got);
			if (got_hit != want_hit || (got_hit && got != want)) {
				char text[INET6_ADDRSTRLEN];

				inet_ntop(family == 4 ? AF_INET : AF_INET6, bytes, text, sizeof(text));
				fail_msg("seed %llx, %zu prefixes%s: %s: set says %d/%u, naive scan %d/%u",
					 (unsigned long long)seed, n, bunched ? " bunched" : "", text,
					 got_hit, got, want_hit, want);
			}
			hits[f] += (size_t)got_hit;
		}
	}
	/* The probes must reach both outcomes, or the check proves little. */
	if (n == RANDOM_PREFIXES)
		for (int f = 0; f < 2; f++)
			assert_true(hits[f] > addrs / 10 && hits[f] < addrs * 9 / 10);
	cidr_set_free(s);
}

static void random_cross_check(void **state)
{
	(void)state;
	cross_check(0x5eed0c1d2, RANDOM_PREFIXES, RANDOM_ADDRS, false);
	cross_check(0xb0c4ed, RANDOM_PREFIXES, RANDOM_ADDRS, true);
}

/* Sets of a few prefixes: directories of a handful of intervals, or of one. */
static void random_small_sets(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 300; seed++)
		cross_check(seed, 1 + seed % 9, 500, seed % 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_and_format),
		cmocka_unit_test(parse_rejects),
		cmocka_unit_test(parse_host_bits),
		cmocka_unit_test(format_limits),
		cmocka_unit_test(contains_edges),
		cmocka_unit_test(private_ranges),
		cmocka_unit_test(nested),
		cmocka_unit_test(adjacent_and_overlapping),
		cmocka_unit_test(bunched_at_the_ends),
		cmocka_unit_test(duplicates),
		cmocka_unit_test(families_never_mix),
		cmocka_unit_test(empty_and_bad_sets),
		cmocka_unit_test(random_cross_check),
		cmocka_unit_test(random_small_sets),
	};

	return cmocka_run_group_tests_name("cidr", tests, NULL, NULL);
}
