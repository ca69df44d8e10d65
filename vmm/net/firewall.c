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

/*
 * The IPv4 address an IPv6 destination stands for: IPv4-mapped, which a
 * dual-stack host stack treats as IPv4, and the NAT64 well-known prefix,
 * which a translator on the path turns into IPv4.
 */
static bool embedded_ipv4(const uint8_t *a, uint8_t v4[4])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t nat64[12] = { 0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };

	if (memcmp(a, mapped, 12) != 0 && memcmp(a, nat64, 12) != 0)
		return false;
	memcpy(v4, a + 12, 4);
	return true;
}

static bool own_ipv6(const struct fw_policy *p, const uint8_t *a)
{
	return (p->has_ipv6 && ip6_eq(a, p->ipv6)) || ip6_eq(a, p->ll6);
}

static bool gateway_ipv6(const struct fw_policy *p, const uint8_t *a)
{
	return (p->has_gw_ipv6 && ip6_eq(a, p->gw_ipv6)) || ip6_eq(a, p->gw_ll6);
}

static enum fw_verdict_reason denied(const struct fw_policy *p, int family, const uint8_t *addr)
{
	uint8_t v;
	int rc;

	if (cidr_set_lookup(p->builtin, family, addr, &v) == 1)
		return (enum fw_verdict_reason)v;
	if (!p->deny)
		return FW_NONE;
	rc = cidr_set_lookup(p->deny, family, addr, &v);
	if (rc == 0)
		return FW_NONE;
	/* A lookup error fails closed. */
	return rc == 1 && v == FW_DENY_OTHER_SANDBOX ? FW_DROP_OTHER_SANDBOX : FW_DROP_HOST;
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

static enum fw_verdict_reason check_frame(const struct fw_policy *p, const struct net_frame *f)
{
	bool v6 = f->flags & NET_FRAME_IPV6;
	int family = v6 ? 6 : 4;
	enum fw_verdict_reason r;
	bool has_v4 = false;
	uint8_t v4[4];

	if (f->status == NET_FRAME_TRUNCATED || f->status == NET_FRAME_MALFORMED)
		return FW_DROP_MALFORMED;
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
	if (v6 && embedded_ipv4(f->ip.dst, v4)) {
		has_v4 = true;
		r = denied(p, 4, v4);
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
	if (allowed(p, family, f->ip.dst) || (has_v4 && allowed(p, 4, v4)))
		return FW_PASS_ALLOWLIST;
	return FW_DROP_NOT_ALLOWED;
}

enum fw_verdict_reason fw_check(const struct fw_policy *p, const uint8_t *frame, size_t len)
{
	struct net_frame f;

	net_frame_parse(frame, len, &f);
	return check_frame(p, &f);
}

static int build_builtin(struct cidr_set **out)
{
	enum { N = sizeof(fw_builtin) / sizeof(fw_builtin[0]) };
	struct cidr items[N];
	uint8_t values[N];

	for (size_t i = 0; i < N; i++) {
		if (cidr_parse(fw_builtin[i].cidr, &items[i]) < 0)
			return -EINVAL; /* a typo in the table above */
		values[i] = (uint8_t)fw_builtin[i].reason;
	}
	return cidr_set_build(items, values, N, out);
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
	*out = p;
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
