#include "net/frame.h"

#include <string.h>

/*
 * Every read goes through a length checked just before it; offsets are
 * relative to the frame and never exceed len, so sums of them cannot wrap.
 */

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool is_vlan_tpid(uint16_t type)
{
	return type == NET_ETHERTYPE_VLAN || type == NET_ETHERTYPE_QINQ ||
	       type == NET_ETHERTYPE_QINQ_OLD;
}

static enum net_frame_status parse_arp(const uint8_t *p, size_t n, struct net_frame *f)
{
	struct net_frame_arp *a = &f->arp;

	f->flags |= NET_FRAME_ARP;
	if (n < 8)
		return NET_FRAME_TRUNCATED;
	/* Ethernet carries other ARP variants, but none the guest has a use for. */
	if (rd16(p) != 1 || rd16(p + 2) != NET_ETHERTYPE_IPV4 || p[4] != 6 || p[5] != 4)
		return NET_FRAME_MALFORMED;
	if (n < 28)
		return NET_FRAME_TRUNCATED;
	a->op = rd16(p + 6);
	memcpy(a->sha, p + 8, 6);
	memcpy(a->spa, p + 14, 4);
	memcpy(a->tha, p + 18, 6);
	memcpy(a->tpa, p + 24, 4);
	return NET_FRAME_OK;
}

/*
 * The fixed part of the upper-layer header at buf[off..off+n). A packet that
 * is complete (not a fragment that more bytes follow) and too short for its
 * protocol is malformed; a first fragment may stop anywhere, and then the
 * fields are just absent.
 */
static enum net_frame_status parse_l4(const uint8_t *buf, size_t off, size_t n, bool complete,
				      bool v6, struct net_frame *f)
{
	const uint8_t *p = buf + off;
	uint8_t proto = f->ip.proto;
	size_t need;

	f->ip.l4_off = off;
	f->ip.l4_len = n;
	if (proto == NET_PROTO_TCP)
		need = 20;
	else if (proto == NET_PROTO_UDP)
		need = 8;
	else if (proto == (v6 ? NET_PROTO_ICMPV6 : NET_PROTO_ICMP))
		need = 8;
	else
		return NET_FRAME_OK;
	if (n < need)
		return complete ? NET_FRAME_MALFORMED : NET_FRAME_OK;
	if (proto == NET_PROTO_TCP || proto == NET_PROTO_UDP) {
		f->src_port = rd16(p);
		f->dst_port = rd16(p + 2);
		f->flags |= NET_FRAME_PORTS;
		if (proto == NET_PROTO_TCP) {
			f->tcp_flags = p[13];
			f->flags |= NET_FRAME_TCP_FLAGS;
		}
		return NET_FRAME_OK;
	}
	f->icmp_type = p[0];
	f->icmp_code = p[1];
	f->flags |= NET_FRAME_ICMP;
	return NET_FRAME_OK;
}

/*
 * Neighbor discovery (RFC 4861): the target and the link-layer address
 * options, which the firewall holds to the guest's own MAC. Called only for
 * complete messages, so options run to the end of the payload.
 */
static enum net_frame_status parse_nd(const uint8_t *p, size_t n, struct net_frame *f)
{
	size_t fixed, off;

	switch (f->icmp_type) {
	case NET_ICMPV6_ROUTER_SOLICIT:
		fixed = 8;
		break;
	case NET_ICMPV6_ROUTER_ADVERT:
		fixed = 16;
		break;
	case NET_ICMPV6_NEIGH_SOLICIT:
	case NET_ICMPV6_NEIGH_ADVERT:
		fixed = 24;
		break;
	case NET_ICMPV6_REDIRECT:
		fixed = 40;
		break;
	default:
		return NET_FRAME_OK;
	}
	if (n < fixed)
		return NET_FRAME_MALFORMED;
	if (f->icmp_type == NET_ICMPV6_NEIGH_SOLICIT || f->icmp_type == NET_ICMPV6_NEIGH_ADVERT) {
		memcpy(f->nd_target, p + 8, 16);
		f->flags |= NET_FRAME_ND_TARGET;
	}
	for (off = fixed; off < n;) {
		size_t olen;

		if (n - off < 2)
			return NET_FRAME_MALFORMED;
		olen = (size_t)p[off + 1] * 8;
		if (olen == 0 || olen > n - off)
			return NET_FRAME_MALFORMED;
		if (p[off] == 1 || p[off] == 2) {
			/*
			 * On Ethernet a link-layer option is exactly 8 bytes; two that
			 * disagree leave it to the receiver which to believe, so
			 * neither is accepted.
			 */
			if (olen != 8)
				return NET_FRAME_MALFORMED;
			if ((f->flags & NET_FRAME_ND_LLADDR) &&
			    memcmp(f->nd_lladdr, p + off + 2, NET_ETH_ALEN) != 0)
				return NET_FRAME_MALFORMED;
			memcpy(f->nd_lladdr, p + off + 2, NET_ETH_ALEN);
			f->flags |= NET_FRAME_ND_LLADDR;
		}
		off += olen;
	}
	return NET_FRAME_OK;
}

static enum net_frame_status parse_ipv4(const uint8_t *buf, size_t off, size_t len,
					struct net_frame *f)
{
	const uint8_t *p = buf + off;
	size_t n = len - off, hlen, total, i;
	uint16_t frag;

	f->flags |= NET_FRAME_IPV4;
	if (n < NET_IPV4_HLEN)
		return NET_FRAME_TRUNCATED;
	if (p[0] >> 4 != 4 || (p[0] & 15) < 5)
		return NET_FRAME_MALFORMED;
	hlen = (size_t)(p[0] & 15) * 4;
	if (hlen > n)
		return NET_FRAME_TRUNCATED;
	total = rd16(p + 2);
	if (total < hlen)
		return NET_FRAME_MALFORMED;
	if (total > n)
		return NET_FRAME_TRUNCATED;

	f->ip.ttl = p[8];
	f->ip.proto = p[9];
	memcpy(f->ip.src, p + 12, 4);
	memcpy(f->ip.dst, p + 16, 4);
	f->ip.frag_id = rd16(p + 4);
	frag = rd16(p + 6);
	f->ip.more_fragments = frag & 0x2000;
	f->ip.frag_offset = (uint16_t)((frag & 0x1fff) * 8);
	if (f->ip.more_fragments || f->ip.frag_offset)
		f->flags |= NET_FRAME_FRAGMENT;

	for (i = NET_IPV4_HLEN; i < hlen;) {
		uint8_t type = p[i];
		size_t olen;

		if (type == 0) /* end of options */
			break;
		if (type == 1) { /* no-op */
			i++;
			continue;
		}
		if (hlen - i < 2)
			return NET_FRAME_MALFORMED;
		olen = p[i + 1];
		if (olen < 2 || olen > hlen - i)
			return NET_FRAME_MALFORMED;
		if (type == 0x83 || type == 0x89) /* loose or strict source route */
			f->flags |= NET_FRAME_SOURCE_ROUTE;
		i += olen;
	}

	if (f->ip.frag_offset)
		return NET_FRAME_OK;
	return parse_l4(buf, off + hlen, total - hlen, !f->ip.more_fragments, false, f);
}

static enum net_frame_status parse_ipv6(const uint8_t *buf, size_t off, size_t len,
					struct net_frame *f)
{
	const uint8_t *p = buf + off;
	size_t n = len - off, end, at;
	bool fragment = false;
	enum net_frame_status st;
	uint8_t next;

	f->flags |= NET_FRAME_IPV6;
	if (n < NET_IPV6_HLEN)
		return NET_FRAME_TRUNCATED;
	if (p[0] >> 4 != 6)
		return NET_FRAME_MALFORMED;
	end = NET_IPV6_HLEN + (size_t)rd16(p + 4);
	if (end > n)
		return NET_FRAME_TRUNCATED;
	next = p[6];
	f->ip.ttl = p[7];
	memcpy(f->ip.src, p + 8, 16);
	memcpy(f->ip.dst, p + 24, 16);

	/*
	 * Each step checks its header against the payload length, which is
	 * within the frame; `at` only grows, so no chain can loop, and the cap
	 * bounds the work.
	 */
	for (at = NET_IPV6_HLEN;;) {
		size_t hl;

		if (next != NET_PROTO_IPV6_HOPOPTS && next != NET_PROTO_IPV6_ROUTING &&
		    next != NET_PROTO_IPV6_DSTOPTS && next != NET_PROTO_IPV6_FRAGMENT)
			break;
		if (f->ip.ext_headers >= NET_IPV6_MAX_EXT_HEADERS)
			return NET_FRAME_MALFORMED;
		/* Hop-by-hop options only ever come first (RFC 8200 4.1). */
		if (next == NET_PROTO_IPV6_HOPOPTS && f->ip.ext_headers != 0)
			return NET_FRAME_MALFORMED;
		f->ip.ext_headers++;
		if (next == NET_PROTO_IPV6_FRAGMENT) {
			uint16_t fo;

			if (fragment || end - at < 8)
				return NET_FRAME_MALFORMED;
			fragment = true;
			fo = rd16(p + at + 2);
			f->ip.frag_offset = fo & 0xfff8;
			f->ip.more_fragments = fo & 1;
			f->ip.frag_id = rd32(p + at + 4);
			f->flags |= NET_FRAME_FRAGMENT;
			next = p[at];
			at += 8;
			if (f->ip.frag_offset) {
				/* What follows is the middle of something else. */
				f->ip.proto = next;
				return NET_FRAME_OK;
			}
			continue;
		}
		if (end - at < 8)
			return NET_FRAME_MALFORMED;
		hl = ((size_t)p[at + 1] + 1) * 8;
		if (hl > end - at)
			return NET_FRAME_MALFORMED;
		if (next == NET_PROTO_IPV6_ROUTING && p[at + 3] != 0) /* segments left */
			f->flags |= NET_FRAME_SOURCE_ROUTE;
		next = p[at];
		at += hl;
	}

	f->ip.proto = next;
	st = parse_l4(buf, off + at, end - at, !(fragment && f->ip.more_fragments), true, f);
	if (st != NET_FRAME_OK || next != NET_PROTO_ICMPV6 || !(f->flags & NET_FRAME_ICMP))
		return st;
	/* Options of a message cut by fragmentation cannot be judged: leave them out. */
	if (fragment && f->ip.more_fragments)
		return NET_FRAME_OK;
	return parse_nd(p + at, end - at, f);
}

enum net_frame_status net_frame_parse(const uint8_t *buf, size_t len, struct net_frame *out)
{
	enum net_frame_status st = NET_FRAME_OK;
	size_t off = NET_ETH_HLEN;
	uint16_t type;

	memset(out, 0, sizeof(*out));
	if (len < NET_ETH_HLEN) {
		out->status = NET_FRAME_TRUNCATED;
		return out->status;
	}
	memcpy(out->dst_mac, buf, NET_ETH_ALEN);
	memcpy(out->src_mac, buf + 6, NET_ETH_ALEN);
	type = rd16(buf + 12);
	out->ethertype = type;

	if (is_vlan_tpid(type)) {
		/*
		 * The guest has no VLANs and the firewall drops tagged frames
		 * whatever they carry, so the tags are read (two at most) and
		 * nothing behind them.
		 */
		out->flags |= NET_FRAME_VLAN;
		while (is_vlan_tpid(type) && out->vlan_tags < 2) {
			if (len - off < 4) {
				out->status = NET_FRAME_TRUNCATED;
				return out->status;
			}
			out->vlan_tci[out->vlan_tags++] = rd16(buf + off);
			type = rd16(buf + off + 2);
			off += 4;
		}
		out->inner_ethertype = type;
	} else if (type == NET_ETHERTYPE_ARP) {
		st = parse_arp(buf + off, len - off, out);
	} else if (type == NET_ETHERTYPE_IPV4) {
		st = parse_ipv4(buf, off, len, out);
	} else if (type == NET_ETHERTYPE_IPV6) {
		st = parse_ipv6(buf, off, len, out);
	} else {
		st = NET_FRAME_UNKNOWN_ETHERTYPE;
	}
	out->status = st;
	return st;
}

const char *net_frame_status_name(enum net_frame_status s)
{
	switch (s) {
	case NET_FRAME_OK:
		return "ok";
	case NET_FRAME_TRUNCATED:
		return "truncated";
	case NET_FRAME_MALFORMED:
		return "malformed";
	case NET_FRAME_UNKNOWN_ETHERTYPE:
		return "unknown_ethertype";
	}
	return "invalid";
}

/* ---- the virtio-net header ---- */

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

void net_vnet_hdr_get(const uint8_t p[NET_VNET_HDR_LEN], struct net_vnet_hdr *h)
{
	h->flags = p[0];
	h->gso_type = p[1];
	h->hdr_len = le16(p + 2);
	h->gso_size = le16(p + 4);
	h->csum_start = le16(p + 6);
	h->csum_offset = le16(p + 8);
	h->num_buffers = le16(p + 10);
}

void net_vnet_hdr_put(const struct net_vnet_hdr *h, uint8_t p[NET_VNET_HDR_LEN])
{
	p[0] = h->flags;
	p[1] = h->gso_type;
	put_le16(p + 2, h->hdr_len);
	put_le16(p + 4, h->gso_size);
	put_le16(p + 6, h->csum_start);
	put_le16(p + 8, h->csum_offset);
	put_le16(p + 10, h->num_buffers);
}

/* Where the checksum field sits in the TCP and UDP headers. */
#define TCP_CSUM_OFFSET 16u
#define UDP_CSUM_OFFSET 6u
#define UDP_HLEN 8u

/*
 * A frame with NEEDS_CSUM and no GSO. The host writes a 16-bit value of the
 * guest's choosing at csum_start + csum_offset after the firewall has
 * judged the frame, so that place must be a checksum field no rule reads:
 * the TCP or UDP header's own, or one inside a UDP payload (the inner
 * header of a tunnel the guest runs). Never in the Ethernet or IP headers,
 * never in the ports, never in ICMP (neighbour discovery is judged by its
 * body), never in padding past the IP packet.
 */
static enum net_vnet_status check_csum_only(const struct net_vnet_hdr *in, const struct net_frame *f)
{
	size_t l4 = f->ip.l4_off, end = l4 + f->ip.l4_len;
	size_t start = in->csum_start, field_end = start + in->csum_offset + 2u;

	if (!(f->flags & NET_FRAME_PORTS))
		return NET_VNET_BAD_CSUM;
	if (f->ip.proto == NET_PROTO_TCP)
		return start == l4 && in->csum_offset == TCP_CSUM_OFFSET ? NET_VNET_OK : NET_VNET_BAD_CSUM;
	if (f->ip.proto != NET_PROTO_UDP)
		return NET_VNET_BAD_CSUM;
	if (start == l4 && in->csum_offset == UDP_CSUM_OFFSET)
		return NET_VNET_OK;
	return start >= l4 + UDP_HLEN && field_end <= end ? NET_VNET_OK : NET_VNET_BAD_CSUM;
}

/*
 * A TCP GSO frame: the host cuts it into segments that each carry a copy of
 * its Ethernet, IP and TCP headers, with only the IP length, id and
 * checksum, the sequence number, the FIN/PSH/CWR flags and the TCP
 * checksum changed, none of which the firewall reads. That holds only for
 * the frame the header describes: unfragmented IPv4 (TCPV4) or IPv6
 * (TCPV6) carrying TCP, with the whole TCP header present, the IP length
 * the frame's own (no trailing bytes that segmentation would turn into
 * payload), and the checksum to fill at the TCP header's checksum field.
 */
static enum net_vnet_status check_gso(const struct net_vnet_hdr *in, const uint8_t *frame, size_t len,
				      const struct net_frame *f, uint8_t gso, size_t *hdr_end)
{
	size_t l4 = f->ip.l4_off, thlen;
	uint32_t family = gso == NET_VNET_GSO_TCPV4 ? NET_FRAME_IPV4 : NET_FRAME_IPV6;

	if (!(in->flags & NET_VNET_F_NEEDS_CSUM) || !(f->flags & family) || f->ip.proto != NET_PROTO_TCP ||
	    !(f->flags & NET_FRAME_PORTS) || l4 + f->ip.l4_len != len || len - l4 < 20)
		return NET_VNET_GSO_MISMATCH;
	thlen = (size_t)(frame[l4 + 12] >> 4) * 4;
	if (thlen < 20 || thlen > f->ip.l4_len)
		return NET_VNET_GSO_MISMATCH;
	if (in->gso_size < NET_GSO_MIN_SIZE)
		return NET_VNET_BAD_GSO_SIZE;
	if (in->hdr_len > len)
		return NET_VNET_BAD_HDR_LEN;
	if (in->csum_start != l4 || in->csum_offset != TCP_CSUM_OFFSET)
		return NET_VNET_BAD_CSUM;
	*hdr_end = l4 + thlen;
	return NET_VNET_OK;
}

enum net_vnet_status net_vnet_check(const struct net_vnet_hdr *in, unsigned offloads, const uint8_t *frame,
				    size_t len, const struct net_frame *f, struct net_vnet_hdr *out)
{
	uint8_t gso = in->gso_type & (uint8_t)~NET_VNET_GSO_ECN;
	bool ecn = in->gso_type & NET_VNET_GSO_ECN, csum = in->flags & NET_VNET_F_NEEDS_CSUM;
	enum net_vnet_status st;
	size_t hdr_end = 0;

	memset(out, 0, sizeof(*out));
	if (in->flags & ~NET_VNET_F_NEEDS_CSUM)
		return NET_VNET_BAD_FLAGS;
	if ((gso != NET_VNET_GSO_NONE && gso != NET_VNET_GSO_TCPV4 && gso != NET_VNET_GSO_TCPV6) ||
	    (ecn && gso == NET_VNET_GSO_NONE))
		return NET_VNET_BAD_GSO_TYPE;
	if (!csum && gso == NET_VNET_GSO_NONE)
		return NET_VNET_OK;
	if ((csum && !(offloads & NET_TX_CSUM)) || (gso == NET_VNET_GSO_TCPV4 && !(offloads & NET_TX_TSO4)) ||
	    (gso == NET_VNET_GSO_TCPV6 && !(offloads & NET_TX_TSO6)) || (ecn && !(offloads & NET_TX_ECN)))
		return NET_VNET_NOT_NEGOTIATED;
	/* Everything below reads an unfragmented IP packet's upper-layer header. */
	if (f->status != NET_FRAME_OK || !(f->flags & (NET_FRAME_IPV4 | NET_FRAME_IPV6)) ||
	    (f->flags & (NET_FRAME_VLAN | NET_FRAME_FRAGMENT)) || f->ip.l4_off > len ||
	    f->ip.l4_len > len - f->ip.l4_off)
		return gso != NET_VNET_GSO_NONE ? NET_VNET_GSO_MISMATCH : NET_VNET_BAD_CSUM;
	st = gso != NET_VNET_GSO_NONE ? check_gso(in, frame, len, f, gso, &hdr_end) : check_csum_only(in, f);
	if (st != NET_VNET_OK)
		return st;
	out->flags = NET_VNET_F_NEEDS_CSUM;
	out->csum_start = in->csum_start;
	out->csum_offset = in->csum_offset;
	if (gso != NET_VNET_GSO_NONE) {
		out->gso_type = in->gso_type;
		out->gso_size = in->gso_size;
		out->hdr_len = (uint16_t)hdr_end;
	}
	return NET_VNET_OK;
}

const char *net_vnet_status_name(enum net_vnet_status s)
{
	switch (s) {
	case NET_VNET_OK:
		return "ok";
	case NET_VNET_BAD_FLAGS:
		return "bad_flags";
	case NET_VNET_BAD_GSO_TYPE:
		return "bad_gso_type";
	case NET_VNET_NOT_NEGOTIATED:
		return "not_negotiated";
	case NET_VNET_GSO_MISMATCH:
		return "gso_mismatch";
	case NET_VNET_BAD_GSO_SIZE:
		return "bad_gso_size";
	case NET_VNET_BAD_HDR_LEN:
		return "bad_hdr_len";
	case NET_VNET_BAD_CSUM:
		return "bad_csum";
	}
	return "invalid";
}
