#ifndef SANDVM_LIB_CIDR_H
#define SANDVM_LIB_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * IPv4/IPv6 prefixes (CIDRs) and an immutable longest-prefix-match set, for
 * the VMM's egress firewall and the --cidr-allow options of sandboxd/vmctl.
 * Families are the IP versions 4 and 6 (not AF_INET/AF_INET6).
 */
struct cidr {
	uint8_t family;   /* 4 or 6 */
	uint8_t len;      /* prefix length: 0..32 or 0..128 */
	uint8_t addr[16]; /* network byte order; IPv4 in addr[0..3], rest zero */
};

/* Room for the longest cidr_format() text and its NUL. */
#define CIDR_STR_MAX 50

/*
 * "10.0.0.0/8", "2001:db8::/32", "192.0.2.7" (= /32), "::1" (= /128).
 * Strict: host bits set ("10.0.0.1/8") give -EDOM; a length out of range or
 * with a sign, spaces or leading zeros ("/08"), leading zeros in IPv4 octets
 * ("010.0.0.1"), zone ids and any other junk give -EINVAL; *out is written
 * only on success.
 */
int cidr_parse(const char *s, struct cidr *out);
/* The same, but host bits are cleared rather than refused: "10.0.0.1/8" is 10.0.0.0/8. */
int cidr_parse_masked(const char *s, struct cidr *out);
/*
 * Why cidr_parse refused s, as the end of a sentence naming it: "has host bits
 * set (the prefix would be 10.0.0.0/8)" (written into buf) or "is not an IPv4
 * or IPv6 prefix such as ...". For error messages.
 */
const char *cidr_parse_why(const char *s, char *buf, size_t len);

/*
 * Canonical text: inet_ntop's form of the address, then "/len" (always).
 * -ENOSPC if it does not fit in len bytes (buf is then "" when len > 0),
 * -EINVAL for a bad family or length.
 */
int cidr_format(const struct cidr *c, char *buf, size_t len);

/*
 * Whether addr (4 or 16 bytes, network order, of the given family 4 or 6)
 * lies in c. Host bits set in c->addr are ignored; a different family, or a
 * bad c, contains nothing.
 */
bool cidr_contains(const struct cidr *c, int family, const uint8_t *addr);

/*
 * The private ranges: RFC 1918 (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16),
 * the shared address space of carrier-grade NAT (RFC 6598, 100.64.0.0/10)
 * and unique local IPv6 (RFC 4193, fc00::/7). Addresses there belong to some
 * local network (a worker's VPC, its neighbours, a provider's NAT), never to
 * the internet. cidr_private_ranges has CIDR_PRIVATE_COUNT entries.
 */
#define CIDR_PRIVATE_COUNT 5
#define CIDR_PRIVATE_TEXT "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7"
extern const struct cidr cidr_private_ranges[CIDR_PRIVATE_COUNT];

/*
 * Whether c lies wholly inside one private range: 10.1.0.0/16 and 10.0.0.0/8
 * do, 0.0.0.0/0 and 8.0.0.0/5 (which hold 10.0.0.0/8 and more) do not. A bad
 * c is not private.
 */
bool cidr_is_private(const struct cidr *c);

/* An immutable longest-prefix-match map from prefixes to a small value. */
struct cidr_set;

/*
 * Builds a set from n prefixes (mixed families) with their values. A prefix
 * given twice keeps the last value; host bits set in an item are ignored, as
 * cidr_contains() does, so "10.0.0.1/8" is the same prefix as "10.0.0.0/8".
 * n may be 0 (items and values may then be NULL). Returns 0, -EINVAL (a bad
 * family or length, NULL arguments) or -ENOMEM; *out is written only on success.
 */
int cidr_set_build(const struct cidr *items, const uint8_t *values, size_t n,
		   struct cidr_set **out);

/*
 * Returns 1 and sets *value to the value of the longest prefix containing
 * addr (4 or 16 bytes by family), or 0 when none does (and for a family other
 * than 4 or 6). No allocation and no locks: safe from several threads at once.
 */
int cidr_set_lookup(const struct cidr_set *s, int family, const uint8_t *addr, uint8_t *value);

/* The number of distinct prefixes the set was built from. */
size_t cidr_set_count(const struct cidr_set *s);

void cidr_set_free(struct cidr_set *s);

#endif
