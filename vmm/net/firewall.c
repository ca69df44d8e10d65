#include "net/firewall.h"

#include "cidr.h"
#include "net/frame.h"
#include "parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* No verdict yet: the next rule decides. */
#define FW_NONE FW_REASON_COUNT

struct fw_policy {
	enum fw_mode mode;
	uint8_t mac[6];
	uint8_t gw_mac[6];
	uint8_t ipv4[4];
	uint8_t gw_ipv4[4];
	bool has_ipv6;
	bool has_gw_ipv6;
	uint8_t ipv6[16];
	uint8_t ll6[16];    /* fe80:: from mac, what the guest's kernel configures */
	uint8_t gw_ipv6[16];
	uint8_t gw_ll6[16]; /* fe80:: from gw_mac, where a router's advertisements come from */
	const struct cidr_set *allow;
	const struct cidr_set *deny;
	const struct cidr_set *private_open;
	struct cidr_set *builtin; /* values are fw_verdict_reason */
};

/*
 * Never reachable from a sandbox, whatever the caller configures. Lookups
 * take the longest prefix, so the /32s inside wider ranges win.
 */
static const struct {
	const char *cidr;
	enum fw_verdict_reason reason;
} fw_builtin[] = {
	{ "0.0.0.0/8", FW_DROP_HOST },       /* "this host": Linux delivers 0.0.0.0 locally */
	{ "127.0.0.0/8", FW_DROP_HOST },
	{ "169.254.0.0/16", FW_DROP_LINK_LOCAL },
	{ "169.254.169.254/32", FW_DROP_METADATA }, /* AWS, GCP, Azure, OpenStack, ... */
	{ "100.100.100.200/32", FW_DROP_METADATA }, /* Alibaba Cloud */
	{ "224.0.0.0/4", FW_DROP_MULTICAST },
	{ "240.0.0.0/4", FW_DROP_RESERVED },
	{ "255.255.255.255/32", FW_DROP_BROADCAST },
	{ "::/128", FW_DROP_HOST },
	{ "::1/128", FW_DROP_HOST },
	{ "fe80::/10", FW_DROP_LINK_LOCAL },
	{ "ff00::/8", FW_DROP_MULTICAST },
	{ "fd00:ec2::254/128", FW_DROP_METADATA }, /* AWS over IPv6 */
	/* The private ranges (cidr_private_ranges) follow, as FW_DROP_PRIVATE. */
};

static const char *const fw_names[FW_REASON_COUNT] = {
	[FW_PASS_OPEN] = "pass_open",
	[FW_PASS_ALLOWLIST] = "pass_allowlist",
	[FW_PASS_ARP] = "pass_arp",
	[FW_PASS_ND] = "pass_nd",
	[FW_DROP_BLOCKED] = "drop_blocked",
	[FW_DROP_NOT_ALLOWED] = "drop_not_allowed",
	[FW_DROP_SPOOF_MAC] = "drop_spoof_mac",
	[FW_DROP_SPOOF_IP] = "drop_spoof_ip",
	[FW_DROP_HOST] = "drop_host",
	[FW_DROP_LINK_LOCAL] = "drop_link_local",
	[FW_DROP_METADATA] = "drop_metadata",
	[FW_DROP_OTHER_SANDBOX] = "drop_other_sandbox",
	[FW_DROP_MULTICAST] = "drop_multicast",
	[FW_DROP_BROADCAST] = "drop_broadcast",
	[FW_DROP_VLAN] = "drop_vlan",
	[FW_DROP_ETHERTYPE] = "drop_ethertype",
	[FW_DROP_MALFORMED] = "drop_malformed",
	[FW_DROP_ARP] = "drop_arp",
	[FW_DROP_ND] = "drop_nd",
	[FW_DROP_DST_MAC] = "drop_dst_mac",
	[FW_DROP_SOURCE_ROUTE] = "drop_source_route",
	[FW_DROP_RESERVED] = "drop_reserved",
	[FW_DROP_PRIVATE] = "drop_private",
	[FW_DROP_OFFLOAD] = "drop_offload",
};

static bool is_zero(const uint8_t *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i])
			return false;
	return true;
}

static bool mac_eq(const uint8_t *a, const uint8_t *b)
{
	return memcmp(a, b, 6) == 0;
}

static bool ip6_eq(const uint8_t *a, const uint8_t *b)
{
	return memcmp(a, b, 16) == 0;
}

static bool ip6_unicast(const uint8_t *a)
{
	return !is_zero(a, 16) && a[0] != 0xff;
}

static bool mac_is_broadcast(const uint8_t *m)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

	return mac_eq(m, bcast);
}

static bool mac_is_group(const uint8_t *m)
{
	return m[0] & 1;
}

/* The modified EUI-64 link-local address (RFC 4291 appendix A). */
static void link_local_from_mac(const uint8_t mac[6], uint8_t out[16])
{
	memset(out, 0, 16);
	out[0] = 0xfe;
	out[1] = 0x80;
	out[8] = mac[0] ^ 0x02;
	out[9] = mac[1];
	out[10] = mac[2];
	out[11] = 0xff;
	out[12] = 0xfe;
	out[13] = mac[3];
	out[14] = mac[4];
	out[15] = mac[5];
}

/* ff02::1:ffXX:XXXX, the group a neighbor solicitation for target goes to. */
static bool is_solicited_node_of(const uint8_t *dst, const uint8_t *target)
{
	static const uint8_t prefix[13] = { 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff };

	return memcmp(dst, prefix, 13) == 0 && memcmp(dst + 13, target + 13, 3) == 0;
}

/* What an IPv6 destination carries: nothing, one or two IPv4 addresses, or an unknown one. */
enum fw_embedded { FW_EMBED_NONE, FW_EMBED_ONE, FW_EMBED_TWO, FW_EMBED_UNKNOWN };

/*
 * The IPv4 addresses an IPv6 destination stands for, where a stack or a
 * translator on the path would turn it into IPv4:
 *  - IPv4-mapped ::ffff:0:0/96, which a dual-stack host stack treats as IPv4;
 *  - IPv4-compatible ::/96 (deprecated, RFC 4291 2.5.5.1), the last 32 bits;
 *    :: and ::1 are caught before as HOST;
 *  - the NAT64 well-known prefix 64:ff9b::/96 (RFC 6052), the last 32 bits;
 *  - the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215): a translator may
 *    use it as a /48, /56, /64 or /96 (RFC 6052 2.2), each putting the IPv4
 *    in another place, and which one is a setting of that translator that
 *    this firewall cannot know. Its /96 form 64:ff9b:1::/96 is judged by the
 *    last 32 bits like the well-known prefix; any other address in the /48
 *    is UNKNOWN and refused, since the same bits read under another layout
 *    could name any IPv4 address (sandboxes have IPv4 of their own and need
 *    no local translator);
 *  - 6to4 2002::/16 (RFC 3056): the relay's IPv4 in bytes 2..5;
 *  - Teredo 2001::/32 (RFC 4380): the server's IPv4 in bytes 4..7 and the
 *    client's, where the packet is delivered, in the last 32 bits
 *    inverted. Both are judged.
 * v4 gets the addresses; the return says how many.
 */
static enum fw_embedded embedded_ipv4(const uint8_t *a, uint8_t v4[2][4])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t compat[12] = { 0 };
	static const uint8_t nat64[12] = { 0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };
	static const uint8_t nat64_local[12] = { 0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0 };

	if (!memcmp(a, mapped, 12) || !memcmp(a, compat, 12) || !memcmp(a, nat64, 12) ||
	    !memcmp(a, nat64_local, 12)) {
		memcpy(v4[0], a + 12, 4);
		return FW_EMBED_ONE;
	}
	if (!memcmp(a, nat64_local, 6))
		return FW_EMBED_UNKNOWN;
	if (a[0] == 0x20 && a[1] == 0x02) {
		memcpy(v4[0], a + 2, 4);
		return FW_EMBED_ONE;
	}
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) {
		memcpy(v4[0], a + 4, 4);
		for (int i = 0; i < 4; i++)
			v4[1][i] = (uint8_t)~a[12 + i];
		return FW_EMBED_TWO;
	}
	return FW_EMBED_NONE;
}

static bool own_ipv6(const struct fw_policy *p, const uint8_t *a)
{
	return (p->has_ipv6 && ip6_eq(a, p->ipv6)) || ip6_eq(a, p->ll6);
}

static bool gateway_ipv6(const struct fw_policy *p, const uint8_t *a)
{
	return (p->has_gw_ipv6 && ip6_eq(a, p->gw_ipv6)) || ip6_eq(a, p->gw_ll6);
}

/*
 * The built-in ranges, then the deny list, then the private ranges unless the
 * policy opens that part of them: neither an opt-in nor an allowlist entry
 * inside a private range reaches a host or another sandbox there.
 */
static enum fw_verdict_reason denied(const struct fw_policy *p, int family, const uint8_t *addr)
{
	uint8_t builtin = FW_NONE, v;
	int rc;

	if (cidr_set_lookup(p->builtin, family, addr, &builtin) == 1 && builtin != FW_DROP_PRIVATE)
		return (enum fw_verdict_reason)builtin;
	rc = p->deny ? cidr_set_lookup(p->deny, family, addr, &v) : 0;
	/* A lookup error fails closed. */
	if (rc != 0)
		return rc == 1 && v == FW_DENY_OTHER_SANDBOX ? FW_DROP_OTHER_SANDBOX : FW_DROP_HOST;
	if (builtin == FW_DROP_PRIVATE &&
	    !(p->private_open && cidr_set_lookup(p->private_open, family, addr, &v) == 1 && v == FW_ALLOW))
		return FW_DROP_PRIVATE;
	return FW_NONE;
}

static bool allowed(const struct fw_policy *p, int family, const uint8_t *addr)
{
	uint8_t v;

	return p->allow && cidr_set_lookup(p->allow, family, addr, &v) == 1 && v == FW_ALLOW;
}

static enum fw_verdict_reason check_arp(const struct fw_policy *p, const struct net_frame *f)
{
	const struct net_frame_arp *a = &f->arp;

	/* The guest may only learn the gateway's MAC and tell the gateway its own. */
	if (!mac_eq(a->sha, p->mac) || memcmp(a->spa, p->ipv4, 4) != 0 ||
	    memcmp(a->tpa, p->gw_ipv4, 4) != 0)
		return FW_DROP_ARP;
	if (a->op == NET_ARP_REQUEST &&
	    (mac_is_broadcast(f->dst_mac) || mac_eq(f->dst_mac, p->gw_mac)))
		return FW_PASS_ARP;
	if (a->op == NET_ARP_REPLY && mac_eq(f->dst_mac, p->gw_mac) && mac_eq(a->tha, p->gw_mac))
		return FW_PASS_ARP;
	return FW_DROP_ARP;
}

static bool is_nd(const struct net_frame *f)
{
	return f->ip.proto == NET_PROTO_ICMPV6 && (f->flags & NET_FRAME_ICMP) &&
	       f->icmp_type >= NET_ICMPV6_ROUTER_SOLICIT && f->icmp_type <= NET_ICMPV6_REDIRECT;
}

/* Neighbor discovery with the gateway only, so the guest can poison no one's cache. */
static enum fw_verdict_reason check_nd(const struct fw_policy *p, const struct net_frame *f)
{
	static const uint8_t all_routers[16] = { 0xff, 0x02, 0, 0, 0, 0, 0, 0,
						 0, 0, 0, 0, 0, 0, 0, 2 };
	const uint8_t *dst = f->ip.dst, *target = f->nd_target;
	uint8_t want_mac[6];

	/* RFC 6980: ND is never fragmented. */
	if ((f->flags & NET_FRAME_FRAGMENT) || f->icmp_code != 0)
		return FW_DROP_ND;
	if ((f->flags & NET_FRAME_ND_LLADDR) && !mac_eq(f->nd_lladdr, p->mac))
		return FW_DROP_ND;
	if (dst[0] == 0xff) {
		want_mac[0] = 0x33;
		want_mac[1] = 0x33;
		memcpy(want_mac + 2, dst + 12, 4);
	} else {
		memcpy(want_mac, p->gw_mac, 6);
	}
	if (!mac_eq(f->dst_mac, want_mac))
		return FW_DROP_ND;

	switch (f->icmp_type) {
	case NET_ICMPV6_ROUTER_SOLICIT:
		if (ip6_eq(dst, all_routers) || gateway_ipv6(p, dst))
			return FW_PASS_ND;
		return FW_DROP_ND;
	case NET_ICMPV6_NEIGH_SOLICIT:
		if (!(f->flags & NET_FRAME_ND_TARGET))
			return FW_DROP_ND;
		if (is_zero(f->ip.src, 16)) {
			/* DAD: RFC 4861 7.2.2 forbids a link-layer option from ::. */
			if (!(f->flags & NET_FRAME_ND_LLADDR) && own_ipv6(p, target) &&
			    is_solicited_node_of(dst, target))
				return FW_PASS_ND;
			return FW_DROP_ND;
		}
		if (gateway_ipv6(p, target) &&
		    (ip6_eq(dst, target) || is_solicited_node_of(dst, target)))
			return FW_PASS_ND;
		return FW_DROP_ND;
	case NET_ICMPV6_NEIGH_ADVERT:
		if ((f->flags & NET_FRAME_ND_TARGET) && own_ipv6(p, target) && gateway_ipv6(p, dst))
			return FW_PASS_ND;
		return FW_DROP_ND;
	default: /* router advertisements and redirects are the gateway's to send */
		return FW_DROP_ND;
	}
}

/* Rules 6 and 7 for IPv6; FW_NONE when the packet goes on to the destination rules. */
static enum fw_verdict_reason check_ipv6_source(const struct fw_policy *p,
						const struct net_frame *f)
{
	const uint8_t *src = f->ip.src;

	if (is_nd(f)) {
		if (own_ipv6(p, src) ||
		    (is_zero(src, 16) && f->icmp_type == NET_ICMPV6_NEIGH_SOLICIT))
			return check_nd(p, f);
		return FW_DROP_SPOOF_IP;
	}
	if (!p->has_ipv6 || !ip6_eq(src, p->ipv6))
		return FW_DROP_SPOOF_IP;
	return FW_NONE;
}

static enum fw_verdict_reason check_frame(const struct fw_policy *p, const struct net_frame *f,
					  enum net_vnet_status vnet)
{
	bool v6 = f->flags & NET_FRAME_IPV6;
	int family = v6 ? 6 : 4;
	enum fw_verdict_reason r;
	enum fw_embedded nv4 = FW_EMBED_NONE;
	uint8_t v4[2][4];
	bool v4_allowed;

	if (f->status == NET_FRAME_TRUNCATED || f->status == NET_FRAME_MALFORMED)
		return FW_DROP_MALFORMED;
	if (vnet != NET_VNET_OK)
		return FW_DROP_OFFLOAD;
	if (f->flags & NET_FRAME_VLAN)
		return FW_DROP_VLAN;
	if (!mac_eq(f->src_mac, p->mac))
		return FW_DROP_SPOOF_MAC;
	if (f->status != NET_FRAME_OK)
		return FW_DROP_ETHERTYPE;
	if (f->flags & NET_FRAME_ARP)
		return check_arp(p, f);
	if (!(f->flags & (NET_FRAME_IPV4 | NET_FRAME_IPV6)))
		return FW_DROP_ETHERTYPE; /* not reached: the parser knows no other type */

	if (v6) {
		r = check_ipv6_source(p, f);
		if (r != FW_NONE)
			return r;
	} else if (memcmp(f->ip.src, p->ipv4, 4) != 0) {
		return FW_DROP_SPOOF_IP;
	}

	if (p->mode == FW_BLOCK)
		return FW_DROP_BLOCKED;
	if (f->flags & NET_FRAME_SOURCE_ROUTE)
		return FW_DROP_SOURCE_ROUTE;

	/*
	 * Fragments, the first and the later ones, go through the same rules
	 * as whole packets: only the destination decides (see firewall.h).
	 */
	r = denied(p, family, f->ip.dst);
	if (r != FW_NONE)
		return r;
	if (v6)
		nv4 = embedded_ipv4(f->ip.dst, v4);
	if (nv4 == FW_EMBED_UNKNOWN)
		return FW_DROP_RESERVED;
	for (int i = 0; i < (int)nv4; i++) {
		r = denied(p, 4, v4[i]);
		if (r != FW_NONE)
			return r;
	}

	if (mac_is_broadcast(f->dst_mac))
		return FW_DROP_BROADCAST;
	if (mac_is_group(f->dst_mac))
		return FW_DROP_MULTICAST;
	if (!mac_eq(f->dst_mac, p->gw_mac))
		return FW_DROP_DST_MAC;

	if (p->mode == FW_OPEN)
		return FW_PASS_OPEN;
	if (allowed(p, family, f->ip.dst))
		return FW_PASS_ALLOWLIST;
	/* Through the IPv4 form only when every address it carries is allowed. */
	v4_allowed = nv4 != FW_EMBED_NONE;
	for (int i = 0; i < (int)nv4; i++)
		v4_allowed = v4_allowed && allowed(p, 4, v4[i]);
	return v4_allowed ? FW_PASS_ALLOWLIST : FW_DROP_NOT_ALLOWED;
}

enum fw_verdict_reason fw_check(const struct fw_policy *p, const uint8_t *frame, size_t len)
{
	struct net_frame f;

	net_frame_parse(frame, len, &f);
	return check_frame(p, &f, NET_VNET_OK);
}

enum fw_verdict_reason fw_check_tx(const struct fw_policy *p, const uint8_t *frame, size_t len,
				   const struct net_vnet_hdr *in, unsigned offloads, struct net_vnet_hdr *out,
				   enum net_vnet_status *vnet)
{
	enum net_vnet_status st = NET_VNET_OK;
	struct net_frame f;

	net_frame_parse(frame, len, &f);
	if (f.status == NET_FRAME_OK)
		st = net_vnet_check(in, offloads, frame, len, &f, out);
	else
		memset(out, 0, sizeof(*out));
	if (vnet)
		*vnet = st;
	return check_frame(p, &f, st);
}

static int build_builtin(struct cidr_set **out)
{
	enum { N = sizeof(fw_builtin) / sizeof(fw_builtin[0]) };
	struct cidr items[N + CIDR_PRIVATE_COUNT];
	uint8_t values[N + CIDR_PRIVATE_COUNT];

	for (size_t i = 0; i < N; i++) {
		if (cidr_parse(fw_builtin[i].cidr, &items[i]) < 0)
			return -EINVAL; /* a typo in the table above */
		values[i] = (uint8_t)fw_builtin[i].reason;
	}
	for (size_t i = 0; i < CIDR_PRIVATE_COUNT; i++) {
		items[N + i] = cidr_private_ranges[i];
		values[N + i] = FW_DROP_PRIVATE;
	}
	return cidr_set_build(items, values, N + CIDR_PRIVATE_COUNT, out);
}

static int check_config(const struct fw_policy_config *cfg, char *err, size_t errlen)
{
	size_t nallow = cfg->allow ? cidr_set_count(cfg->allow) : 0;

	if (cfg->mode != FW_OPEN && cfg->mode != FW_BLOCK && cfg->mode != FW_ALLOWLIST) {
		sv_errf(0, err, errlen, "firewall: unknown mode %d", (int)cfg->mode);
		return -EINVAL;
	}
	if (nallow && cfg->mode == FW_BLOCK) {
		sv_errf(0, err, errlen,
			"firewall: the network is blocked but an allowlist of %zu prefixes "
			"is given; choose one", nallow);
		return -EINVAL;
	}
	if (nallow && cfg->mode == FW_OPEN) {
		sv_errf(0, err, errlen,
			"firewall: an allowlist of %zu prefixes is given in open mode, "
			"where it would be ignored", nallow);
		return -EINVAL;
	}
	if (is_zero(cfg->mac, 6) || mac_is_group(cfg->mac) || is_zero(cfg->gateway_mac, 6) ||
	    mac_is_group(cfg->gateway_mac)) {
		sv_errf(0, err, errlen, "firewall: the sandbox and gateway MACs must be unicast");
		return -EINVAL;
	}
	if (mac_eq(cfg->mac, cfg->gateway_mac)) {
		sv_errf(0, err, errlen, "firewall: the sandbox and the gateway have the same MAC");
		return -EINVAL;
	}
	if (is_zero(cfg->ipv4, 4) || is_zero(cfg->gateway_ipv4, 4) ||
	    memcmp(cfg->ipv4, cfg->gateway_ipv4, 4) == 0) {
		sv_errf(0, err, errlen,
			"firewall: the sandbox and gateway need distinct IPv4 addresses");
		return -EINVAL;
	}
	if ((cfg->has_ipv6 && !ip6_unicast(cfg->ipv6)) ||
	    (cfg->has_gateway_ipv6 && !ip6_unicast(cfg->gateway_ipv6)) ||
	    (cfg->has_ipv6 && cfg->has_gateway_ipv6 && ip6_eq(cfg->ipv6, cfg->gateway_ipv6))) {
		sv_errf(0, err, errlen,
			"firewall: the sandbox and gateway need distinct unicast IPv6 addresses");
		return -EINVAL;
	}
	return 0;
}

int fw_policy_build(const struct fw_policy_config *cfg, struct fw_policy **out, char *err,
		    size_t errlen)
{
	struct fw_policy *p;
	int rc;

	if (!cfg || !out) {
		sv_errf(0, err, errlen, "firewall: no configuration");
		return -EINVAL;
	}
	rc = check_config(cfg, err, errlen);
	if (rc < 0)
		return rc;
	p = calloc(1, sizeof(*p));
	if (!p) {
		sv_errf(0, err, errlen, "firewall: out of memory");
		return -ENOMEM;
	}
	rc = build_builtin(&p->builtin);
	if (rc < 0) {
		sv_errf(0, err, errlen, "firewall: built-in ranges: %s", strerror(-rc));
		free(p);
		return rc;
	}
	p->mode = cfg->mode;
	memcpy(p->mac, cfg->mac, 6);
	memcpy(p->gw_mac, cfg->gateway_mac, 6);
	memcpy(p->ipv4, cfg->ipv4, 4);
	memcpy(p->gw_ipv4, cfg->gateway_ipv4, 4);
	p->has_ipv6 = cfg->has_ipv6;
	if (p->has_ipv6)
		memcpy(p->ipv6, cfg->ipv6, 16);
	p->has_gw_ipv6 = cfg->has_gateway_ipv6;
	if (p->has_gw_ipv6)
		memcpy(p->gw_ipv6, cfg->gateway_ipv6, 16);
	link_local_from_mac(p->mac, p->ll6);
	link_local_from_mac(p->gw_mac, p->gw_ll6);
	p->allow = cfg->allow;
	p->deny = cfg->deny;
	p->private_open = cfg->private_open;
	*out = p;
	return 0;
}

int fw_private_open_build(const struct cidr *optin, size_t noptin, const struct cidr *allow, size_t nallow,
			  struct cidr_set **out, char *err, size_t errlen)
{
	struct cidr *items;
	uint8_t *values;
	size_t n = 0;
	int r;

	/* The bound keeps (noptin + nallow + 1) * sizeof(*items) from overflowing. */
	if (!out || (noptin && !optin) || (nallow && !allow) || noptin > SIZE_MAX / 64 ||
	    nallow > SIZE_MAX / 64)
		return sv_errf(-EINVAL, err, errlen, "firewall: bad private ranges");
	for (size_t i = 0; i < noptin; i++) {
		char text[CIDR_STR_MAX] = "?";

		if (cidr_is_private(&optin[i]))
			continue;
		cidr_format(&optin[i], text, sizeof(text));
		return sv_errf(-EINVAL, err, errlen,
			       "%s is not inside a private range (%s), and only those need opening", text,
			       CIDR_PRIVATE_TEXT);
	}
	items = malloc((noptin + nallow + 1) * sizeof(*items));
	values = malloc(noptin + nallow + 1);
	if (!items || !values) {
		free(items);
		free(values);
		return sv_errf(-ENOMEM, err, errlen, "firewall: out of memory");
	}
	for (size_t i = 0; i < noptin; i++)
		items[n++] = optin[i];
	for (size_t i = 0; i < nallow; i++)
		if (cidr_is_private(&allow[i]))
			items[n++] = allow[i];
	memset(values, FW_ALLOW, n);
	r = cidr_set_build(items, values, n, out);
	free(items);
	free(values);
	if (r < 0)
		return sv_errf(r, err, errlen, "firewall: private ranges: %s", strerror(-r));
	return 0;
}

void fw_policy_free(struct fw_policy *p)
{
	if (!p)
		return;
	cidr_set_free(p->builtin);
	free(p);
}

bool fw_reason_is_pass(enum fw_verdict_reason r)
{
	return r == FW_PASS_OPEN || r == FW_PASS_ALLOWLIST || r == FW_PASS_ARP || r == FW_PASS_ND;
}

const char *fw_reason_name(enum fw_verdict_reason r)
{
	if ((unsigned)r >= FW_REASON_COUNT || !fw_names[r])
		return "invalid";
	return fw_names[r];
}

void fw_counters_add(struct fw_counters *c, enum fw_verdict_reason r)
{
	if ((unsigned)r >= FW_REASON_COUNT)
		r = FW_DROP_MALFORMED;
	c->count[r]++;
}
