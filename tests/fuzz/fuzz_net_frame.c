/*
 * libFuzzer target: arbitrary bytes as a frame from the guest, through
 * net_frame_parse() and fw_check() against fixed policies in all three
 * modes, cross-checked against each other and against the CIDR lists with
 * cidr_contains() rather than the sets the policy uses.
 *
 * The same input is also read as a virtio-net header (its first 12 bytes;
 * bits 0..3 of byte 10, num_buffers, which no check reads, are the offloads
 * negotiated) in front of a frame (the rest), through fw_check_tx(): a header
 * that passes changes no verdict; one that fails drops the frame; what passes
 * keeps the host's checksum write past the headers the firewall judged, and
 * every segment the host would cut a passing GSO frame into gets the GSO
 * frame's verdict.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "net/firewall.h"
#include "net/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The addresses tests/fuzz/make-seeds writes its frames with. */
static const uint8_t OWN_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x01 };
static const uint8_t GW_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe };
static const uint8_t OWN4[4] = { 10, 0, 0, 2 };
static const uint8_t GW4[4] = { 10, 0, 0, 1 };
static const uint8_t OWN6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };
static const uint8_t GW6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };

static const char *const ALLOW[] = { "198.51.100.0/24", "10.0.0.0/8", "127.0.0.0/16",
				     "169.254.0.0/16", "2001:db8:1::/48", "64:ff9b::/96",
				     "ff02::/16" };
static const char *const DENY[] = { "10.1.0.0/16", "198.51.100.128/25", "2001:db8:1:ff::/64" };
/*
 * What must never be reached, checked here independently of the policy's own
 * table; the private ranges too, as these policies open none of them.
 */
static const char *const NEVER[] = { "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
				     "240.0.0.0/4", "::/128", "::1/128", "fe80::/10", "ff00::/8",
				     "fd00:ec2::254/128", "10.0.0.0/8", "172.16.0.0/12",
				     "192.168.0.0/16", "100.64.0.0/10", "fc00::/7" };

#define N(a) (sizeof(a) / sizeof((a)[0]))

static struct cidr allow_c[N(ALLOW)], deny_c[N(DENY)], never_c[N(NEVER)];
static struct fw_policy *open_p, *block_p, *allow_p;

static void parse_all(const char *const *s, struct cidr *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (cidr_parse(s[i], &out[i]) != 0)
			abort();
}

static struct fw_policy *policy(enum fw_mode mode, const struct cidr_set *allow,
				const struct cidr_set *deny)
{
	struct fw_policy_config c = { .mode = mode, .has_ipv6 = true, .has_gateway_ipv6 = true,
				      .allow = allow, .deny = deny };
	struct fw_policy *p;

	memcpy(c.mac, OWN_MAC, 6);
	memcpy(c.gateway_mac, GW_MAC, 6);
	memcpy(c.ipv4, OWN4, 4);
	memcpy(c.gateway_ipv4, GW4, 4);
	memcpy(c.ipv6, OWN6, 16);
	memcpy(c.gateway_ipv6, GW6, 16);
	if (fw_policy_build(&c, &p, NULL, 0) != 0)
		abort();
	return p;
}

/* Built once and kept for the process: the sets must outlive the policies. */
static void setup(void)
{
	static struct cidr_set *allow, *deny;
	uint8_t av[N(ALLOW)], dv[N(DENY)];

	parse_all(ALLOW, allow_c, N(ALLOW));
	parse_all(DENY, deny_c, N(DENY));
	parse_all(NEVER, never_c, N(NEVER));
	memset(av, FW_ALLOW, sizeof(av));
	memset(dv, FW_DENY_OTHER_SANDBOX, sizeof(dv));
	if (cidr_set_build(allow_c, av, N(ALLOW), &allow) != 0 ||
	    cidr_set_build(deny_c, dv, N(DENY), &deny) != 0)
		abort();
	open_p = policy(FW_OPEN, NULL, deny);
	block_p = policy(FW_BLOCK, NULL, deny);
	allow_p = policy(FW_ALLOWLIST, allow, deny);
}

static bool in_any(const struct cidr *list, size_t n, int family, const uint8_t *a)
{
	for (size_t i = 0; i < n; i++)
		if (cidr_contains(&list[i], family, a))
			return true;
	return false;
}

/*
 * The IPv4 addresses inside an IPv6 one (firewall.h): IPv4-mapped,
 * IPv4-compatible, NAT64 64:ff9b::/96 and 64:ff9b:1::/96 (the last 32 bits),
 * 6to4 (bytes 2..5), Teredo (bytes 4..7 and the last 32 bits inverted); -1
 * for the rest of 64:ff9b:1::/48, which carries one in an unknown place.
 */
static int embedded(const uint8_t *a, uint8_t v4[2][4])
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	static const uint8_t compat[12];
	static const uint8_t nat64[12] = { 0, 0x64, 0xff, 0x9b };
	static const uint8_t local[12] = { 0, 0x64, 0xff, 0x9b, 0, 1 };

	if (!memcmp(a, mapped, 12) || !memcmp(a, compat, 12) || !memcmp(a, nat64, 12) ||
	    !memcmp(a, local, 12)) {
		memcpy(v4[0], a + 12, 4);
		return 1;
	}
	if (!memcmp(a, local, 6))
		return -1;
	if (a[0] == 0x20 && a[1] == 0x02) {
		memcpy(v4[0], a + 2, 4);
		return 1;
	}
	if (a[0] == 0x20 && a[1] == 0x01 && !a[2] && !a[3]) {
		memcpy(v4[0], a + 4, 4);
		for (int i = 0; i < 4; i++)
			v4[1][i] = a[12 + i] ^ 0xff;
		return 2;
	}
	return 0;
}

/* The destination or any IPv4 address it carries is in list: what a deny list catches. */
static bool dst_in(const struct cidr *list, size_t n, const struct net_frame *f)
{
	uint8_t v4[2][4];
	int k;

	if (f->flags & NET_FRAME_IPV4)
		return in_any(list, n, 4, f->ip.dst);
	if (in_any(list, n, 6, f->ip.dst))
		return true;
	k = embedded(f->ip.dst, v4);
	for (int i = 0; i < k; i++)
		if (in_any(list, n, 4, v4[i]))
			return true;
	return false;
}

/* The destination is in list, or every IPv4 address it carries is: what an allowlist passes. */
static bool dst_allowed(const struct cidr *list, size_t n, const struct net_frame *f)
{
	uint8_t v4[2][4];
	int k;

	if (f->flags & NET_FRAME_IPV4)
		return in_any(list, n, 4, f->ip.dst);
	if (in_any(list, n, 6, f->ip.dst))
		return true;
	k = embedded(f->ip.dst, v4);
	for (int i = 0; i < k; i++)
		if (!in_any(list, n, 4, v4[i]))
			return false;
	return k > 0;
}

static void check_parse(const uint8_t *data, size_t size, const struct net_frame *f)
{
	struct net_frame again;

	if ((unsigned)f->status > NET_FRAME_UNKNOWN_ETHERTYPE)
		abort();
	if (f->ip.ext_headers > NET_IPV6_MAX_EXT_HEADERS || f->vlan_tags > 2)
		abort();
	if ((f->flags & (NET_FRAME_PORTS | NET_FRAME_ICMP)) &&
	    (f->ip.l4_off > size || f->ip.l4_len > size - f->ip.l4_off))
		abort();
	/* Pure: the same bytes give the same answer. */
	net_frame_parse(data, size, &again);
	if (memcmp(&again, f, sizeof(again)) != 0)
		abort();
}

/* What any passing frame must be, whatever the mode. */
static void check_pass(const struct net_frame *f, enum fw_verdict_reason r)
{
	if (!fw_reason_is_pass(r))
		return;
	if (f->status != NET_FRAME_OK || (f->flags & NET_FRAME_VLAN) ||
	    memcmp(f->src_mac, OWN_MAC, 6) != 0)
		abort();
	if (r == FW_PASS_ARP) {
		if (!(f->flags & NET_FRAME_ARP) || memcmp(f->arp.spa, OWN4, 4) != 0 ||
		    memcmp(f->arp.tpa, GW4, 4) != 0 || memcmp(f->arp.sha, OWN_MAC, 6) != 0)
			abort();
		return;
	}
	if (r == FW_PASS_ND) {
		if (!(f->flags & NET_FRAME_IPV6) || f->ip.proto != NET_PROTO_ICMPV6 ||
		    (f->flags & NET_FRAME_FRAGMENT) ||
		    (f->icmp_type != NET_ICMPV6_ROUTER_SOLICIT &&
		     f->icmp_type != NET_ICMPV6_NEIGH_SOLICIT && f->icmp_type != NET_ICMPV6_NEIGH_ADVERT))
			abort();
		return;
	}
	/* PASS_OPEN / PASS_ALLOWLIST: own source, to the gateway's MAC, nowhere forbidden. */
	if (f->flags & NET_FRAME_IPV4) {
		if (memcmp(f->ip.src, OWN4, 4) != 0)
			abort();
	} else if (!(f->flags & NET_FRAME_IPV6) || memcmp(f->ip.src, OWN6, 16) != 0) {
		abort();
	}
	if (memcmp(f->dst_mac, GW_MAC, 6) != 0 || (f->flags & NET_FRAME_SOURCE_ROUTE))
		abort();
	if (dst_in(deny_c, N(DENY), f) || dst_in(never_c, N(NEVER), f))
		abort();
	if ((f->flags & NET_FRAME_IPV4) && memcmp(f->ip.dst, "\xff\xff\xff\xff", 4) == 0)
		abort();
	if ((f->flags & NET_FRAME_IPV6) && embedded(f->ip.dst, (uint8_t[2][4]){ { 0 } }) < 0)
		abort();
}

/* Segment k of a TCP GSO frame as the host cuts it (Linux's tcp_gso_segment, inet/ipv6_gso_segment). */
static size_t segment(const uint8_t *frame, size_t len, const struct net_frame *f, size_t hdr, uint16_t gso_size,
		      size_t k, uint8_t *seg)
{
	size_t off = k * gso_size, part = len - hdr - off < gso_size ? len - hdr - off : gso_size;
	size_t l3 = NET_ETH_HLEN, l4 = f->ip.l4_off;
	uint32_t seq;

	memcpy(seg, frame, hdr);
	memcpy(seg + hdr, frame + hdr + off, part);
	if (f->flags & NET_FRAME_IPV4) {
		seg[l3 + 2] = (uint8_t)((hdr - l3 + part) >> 8);
		seg[l3 + 3] = (uint8_t)(hdr - l3 + part);
		seg[l3 + 5] = (uint8_t)(seg[l3 + 5] + k);
	} else {
		seg[l3 + 4] = (uint8_t)((hdr - l3 - NET_IPV6_HLEN + part) >> 8);
		seg[l3 + 5] = (uint8_t)(hdr - l3 - NET_IPV6_HLEN + part);
	}
	seq = (uint32_t)seg[l4 + 4] << 24 | (uint32_t)seg[l4 + 5] << 16 | (uint32_t)seg[l4 + 6] << 8 | seg[l4 + 7];
	seq += (uint32_t)off;
	seg[l4 + 4] = (uint8_t)(seq >> 24);
	seg[l4 + 5] = (uint8_t)(seq >> 16);
	seg[l4 + 6] = (uint8_t)(seq >> 8);
	seg[l4 + 7] = (uint8_t)seq;
	if (off + part < len - hdr)
		seg[l4 + 13] &= (uint8_t)~0x09; /* FIN and PSH on the last segment only */
	if (k)
		seg[l4 + 13] &= (uint8_t)~0x80; /* CWR on the first only */
	return hdr + part;
}

static void check_vnet(const uint8_t *data, size_t size)
{
	static uint8_t seg[NET_ETH_HLEN + 65535 + 64];
	const struct fw_policy *policies[3] = { open_p, block_p, allow_p };
	const uint8_t *frame = data + NET_VNET_HDR_LEN;
	size_t len = size - NET_VNET_HDR_LEN;
	struct net_vnet_hdr in, out;
	enum net_vnet_status st;
	struct net_frame f;
	unsigned offloads;

	net_vnet_hdr_get(data, &in);
	offloads = data[10] & 15;
	net_frame_parse(frame, len, &f);
	for (int i = 0; i < 3; i++) {
		enum fw_verdict_reason plain = fw_check(policies[i], frame, len);
		enum fw_verdict_reason r = fw_check_tx(policies[i], frame, len, &in, offloads, &out, &st);

		if (st == NET_VNET_OK ? r != plain
				      : r != (f.status == NET_FRAME_TRUNCATED || f.status == NET_FRAME_MALFORMED
						      ? FW_DROP_MALFORMED
						      : FW_DROP_OFFLOAD))
			abort();
		if (st != NET_VNET_OK || !fw_reason_is_pass(r) || !out.flags)
			continue;
		/* The checksum field: inside the IP packet, past the IP headers and the ports. */
		if (!(f.flags & (NET_FRAME_IPV4 | NET_FRAME_IPV6)) || (f.flags & NET_FRAME_FRAGMENT) ||
		    out.csum_start < f.ip.l4_off || (size_t)out.csum_start + out.csum_offset < f.ip.l4_off + 4 ||
		    (size_t)out.csum_start + out.csum_offset + 2 > f.ip.l4_off + f.ip.l4_len ||
		    (f.ip.proto != NET_PROTO_TCP && f.ip.proto != NET_PROTO_UDP) || !(offloads & NET_TX_CSUM))
			abort();
		if (out.gso_type == NET_VNET_GSO_NONE)
			continue;
		if (f.ip.proto != NET_PROTO_TCP || out.gso_size < NET_GSO_MIN_SIZE || out.hdr_len > len ||
		    f.ip.l4_off + f.ip.l4_len != len || out.hdr_len <= f.ip.l4_off ||
		    ((out.gso_type & 0x7f) == NET_VNET_GSO_TCPV4) != !!(f.flags & NET_FRAME_IPV4))
			abort();
		if (out.hdr_len < len) {
			size_t nseg = (len - out.hdr_len + out.gso_size - 1) / out.gso_size;
			size_t ks[3] = { 0, 1, nseg - 1 };

			for (int j = 0; j < 3; j++) {
				size_t n;

				if (ks[j] >= nseg)
					continue;
				n = segment(frame, len, &f, out.hdr_len, out.gso_size, ks[j], seg);
				if (fw_check(policies[i], seg, n) != r)
					abort();
			}
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum fw_verdict_reason ro, rb, ra;
	struct net_frame f;

	if (!open_p)
		setup();
	net_frame_parse(data, size, &f);
	check_parse(data, size, &f);

	ro = fw_check(open_p, data, size);
	rb = fw_check(block_p, data, size);
	ra = fw_check(allow_p, data, size);
	if ((unsigned)ro >= FW_REASON_COUNT || (unsigned)rb >= FW_REASON_COUNT ||
	    (unsigned)ra >= FW_REASON_COUNT)
		abort();
	check_pass(&f, ro);
	check_pass(&f, rb);
	check_pass(&f, ra);

	/* The modes differ only after the ARP/ND and source rules. */
	if (ro == FW_PASS_ALLOWLIST || rb == FW_PASS_ALLOWLIST || rb == FW_PASS_OPEN ||
	    ra == FW_PASS_OPEN || ro == FW_DROP_NOT_ALLOWED || ro == FW_DROP_BLOCKED ||
	    ra == FW_DROP_BLOCKED)
		abort();
	if (ro == FW_PASS_OPEN) {
		if (rb != FW_DROP_BLOCKED || (ra != FW_PASS_ALLOWLIST && ra != FW_DROP_NOT_ALLOWED))
			abort();
		if ((ra == FW_PASS_ALLOWLIST) != dst_allowed(allow_c, N(ALLOW), &f))
			abort();
	} else if (rb == FW_DROP_BLOCKED ? ra != ro : ro != rb || ra != rb) {
		abort();
	}
	if (size >= NET_VNET_HDR_LEN)
		check_vnet(data, size);
	return 0;
}
