/*
 * Ethernet frame parsing: real frames built byte by byte, every field read
 * back, every truncation point, and hostile lengths and header chains. Frames
 * are parsed from heap copies of exactly their length, so a read past the end
 * is an ASan report.
 */
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "net/frame.h"

static const uint8_t GUEST_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x01 };
static const uint8_t GW_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe };
static const uint8_t BCAST[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t GUEST4[4] = { 10, 0, 0, 2 };
static const uint8_t GW4[4] = { 10, 0, 0, 1 };
static const uint8_t REMOTE4[4] = { 198, 51, 100, 7 };
static const uint8_t GUEST6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2 };
static const uint8_t REMOTE6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7 };
static const uint8_t GW6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
/* ff02::1:ff00:1, the solicited-node group of GW6. */
static const uint8_t GW6_SNM[16] = { 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1 };
static const uint8_t GW6_SNM_MAC[6] = { 0x33, 0x33, 0xff, 0x00, 0x00, 0x01 };

/* Room for a 64 KiB GSO frame. */
static uint8_t fb[NET_ETH_HLEN + NET_IPV6_HLEN + 65536];

/* ---- frame builders: each writes one header and returns its length ---- */

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
	return NET_ETH_HLEN;
}

static size_t arp(uint8_t *b, uint16_t op, const uint8_t *sha, const uint8_t *spa,
		  const uint8_t *tha, const uint8_t *tpa)
{
	put16(b, 1);
	put16(b + 2, NET_ETHERTYPE_IPV4);
	b[4] = 6;
	b[5] = 4;
	put16(b + 6, op);
	memcpy(b + 8, sha, 6);
	memcpy(b + 14, spa, 4);
	memcpy(b + 18, tha, 6);
	memcpy(b + 24, tpa, 4);
	return 28;
}

/* An IPv4 header, options (a multiple of 4 bytes) included, for plen bytes of payload. */
static size_t ipv4(uint8_t *b, const uint8_t *src, const uint8_t *dst, uint8_t proto, uint16_t frag,
		   const uint8_t *opt, size_t optlen, size_t plen)
{
	size_t hlen = NET_IPV4_HLEN + optlen;

	memset(b, 0, hlen);
	b[0] = (uint8_t)(0x40 | hlen / 4);
	put16(b + 2, (uint16_t)(hlen + plen));
	put16(b + 4, 0x1234);
	put16(b + 6, frag);
	b[8] = 64;
	b[9] = proto;
	memcpy(b + 12, src, 4);
	memcpy(b + 16, dst, 4);
	if (optlen)
		memcpy(b + 20, opt, optlen);
	return hlen;
}

static size_t ipv6(uint8_t *b, const uint8_t *src, const uint8_t *dst, uint8_t next, size_t plen)
{
	memset(b, 0, NET_IPV6_HLEN);
	b[0] = 0x60;
	put16(b + 4, (uint16_t)plen);
	b[6] = next;
	b[7] = 255;
	memcpy(b + 8, src, 16);
	memcpy(b + 24, dst, 16);
	return NET_IPV6_HLEN;
}

/* A hop-by-hop, routing or destination options header of 8 * (1 + ext_len) bytes. */
static size_t ext(uint8_t *b, uint8_t next, uint8_t ext_len, uint8_t routing_segments_left)
{
	size_t n = ((size_t)ext_len + 1) * 8;

	memset(b, 0, n);
	b[0] = next;
	b[1] = ext_len;
	b[2] = 1; /* PadN / routing type, whichever it is */
	b[3] = routing_segments_left;
	return n;
}

static size_t frag6(uint8_t *b, uint8_t next, uint16_t offset, int more, uint32_t id)
{
	memset(b, 0, 8);
	b[0] = next;
	put16(b + 2, (uint16_t)(offset | (more ? 1 : 0)));
	b[4] = (uint8_t)(id >> 24);
	b[5] = (uint8_t)(id >> 16);
	b[6] = (uint8_t)(id >> 8);
	b[7] = (uint8_t)id;
	return 8;
}

static size_t tcp(uint8_t *b, uint16_t sport, uint16_t dport, uint8_t flags)
{
	memset(b, 0, 20);
	put16(b, sport);
	put16(b + 2, dport);
	b[7] = 1;       /* seq */
	b[12] = 5 << 4; /* data offset */
	b[13] = flags;
	put16(b + 14, 64240);
	return 20;
}

static size_t udp(uint8_t *b, uint16_t sport, uint16_t dport, size_t data)
{
	memset(b, 0, 8 + data);
	put16(b, sport);
	put16(b + 2, dport);
	put16(b + 4, (uint16_t)(8 + data));
	return 8 + data;
}

static size_t icmp(uint8_t *b, uint8_t type, uint8_t code)
{
	memset(b, 0, 8);
	b[0] = type;
	b[1] = code;
	b[7] = 1; /* echo sequence */
	return 8;
}

/* RS (8 bytes) or NS/NA (24) with an optional source (1) / target (2) link-layer option. */
static size_t nd(uint8_t *b, uint8_t type, const uint8_t *target, uint8_t opt,
		 const uint8_t *lladdr)
{
	size_t n = type == NET_ICMPV6_ROUTER_SOLICIT ? 8 : 24;

	memset(b, 0, n + 8);
	b[0] = type;
	if (type == NET_ICMPV6_NEIGH_ADVERT)
		b[4] = 0x60; /* solicited, override */
	if (n == 24)
		memcpy(b + 8, target, 16);
	if (lladdr) {
		b[n] = opt;
		b[n + 1] = 1;
		memcpy(b + n + 2, lladdr, 6);
		n += 8;
	}
	return n;
}

/* ---- complete frames in fb ---- */

static size_t tcp4_syn(void)
{
	size_t n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);

	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_TCP, 0x4000 /* DF */, NULL, 0, 20);
	return n + tcp(fb + n, 40000, 443, 0x02);
}

static size_t tcp4_options(const uint8_t *opt, size_t optlen)
{
	size_t n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);

	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_TCP, 0, opt, optlen, 20);
	return n + tcp(fb + n, 1, 2, 0x02);
}

static size_t arp_request(void)
{
	static const uint8_t zero[6];
	size_t n = eth(fb, BCAST, GUEST_MAC, NET_ETHERTYPE_ARP);

	return n + arp(fb + n, NET_ARP_REQUEST, GUEST_MAC, GUEST4, zero, GW4);
}

/* IPv6 with hop-by-hop, destination options and a spent routing header before TCP. */
static size_t tcp6_ext(void)
{
	size_t n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);

	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_HOPOPTS, 8 + 16 + 24 + 20);
	n += ext(fb + n, NET_PROTO_IPV6_DSTOPTS, 0, 0);
	n += ext(fb + n, NET_PROTO_IPV6_ROUTING, 1, 0);
	n += ext(fb + n, NET_PROTO_TCP, 2, 0);
	return n + tcp(fb + n, 50000, 22, 0x12);
}

static size_t ns6(const uint8_t *src, const uint8_t *lladdr)
{
	size_t n = eth(fb, GW6_SNM_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);

	n += ipv6(fb + n, src, GW6_SNM, NET_PROTO_ICMPV6, lladdr ? 32 : 24);
	return n + nd(fb + n, NET_ICMPV6_NEIGH_SOLICIT, GW6, 1, lladdr);
}

/* A first IPv6 fragment of a UDP datagram. */
static size_t udp6_first_fragment(void)
{
	size_t n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);

	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_FRAGMENT, 8 + 8 + 32);
	n += frag6(fb + n, NET_PROTO_UDP, 0, 1, 0xdeadbeef);
	return n + udp(fb + n, 5353, 53, 32);
}

/* Parses from a heap copy of exactly n bytes. */
static enum net_frame_status parse(const uint8_t *b, size_t n, struct net_frame *f)
{
	uint8_t *copy = malloc(n ? n : 1);
	enum net_frame_status st;

	assert_non_null(copy);
	memcpy(copy, b, n);
	st = net_frame_parse(copy, n, f);
	assert_int_equal(st, f->status);
	if (f->flags & (NET_FRAME_PORTS | NET_FRAME_ICMP))
		assert_true(f->ip.l4_off + f->ip.l4_len <= n);
	free(copy);
	return st;
}

/* Every proper prefix of a valid frame is truncated or malformed, never OK. */
static void assert_every_cut_fails(const uint8_t *b, size_t full)
{
	struct net_frame f;

	for (size_t n = 0; n < full; n++) {
		enum net_frame_status st = parse(b, n, &f);

		if (st != NET_FRAME_TRUNCATED && st != NET_FRAME_MALFORMED)
			fail_msg("cut at %zu of %zu: %s", n, full, net_frame_status_name(st));
	}
	assert_int_equal(parse(b, full, &f), NET_FRAME_OK);
}

static void ipv4_tcp_fields(void **state)
{
	struct net_frame f;
	size_t n = tcp4_syn();

	(void)state;
	assert_int_equal(n, 54);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_memory_equal(f.dst_mac, GW_MAC, 6);
	assert_memory_equal(f.src_mac, GUEST_MAC, 6);
	assert_int_equal(f.ethertype, NET_ETHERTYPE_IPV4);
	assert_int_equal(f.flags, NET_FRAME_IPV4 | NET_FRAME_PORTS | NET_FRAME_TCP_FLAGS);
	assert_memory_equal(f.ip.src, GUEST4, 4);
	assert_memory_equal(f.ip.dst, REMOTE4, 4);
	assert_int_equal(f.ip.proto, NET_PROTO_TCP);
	assert_int_equal(f.ip.ttl, 64);
	assert_int_equal(f.ip.frag_id, 0x1234);
	assert_int_equal(f.ip.frag_offset, 0);
	assert_false(f.ip.more_fragments);
	assert_int_equal(f.ip.l4_off, 34);
	assert_int_equal(f.ip.l4_len, 20);
	assert_int_equal(f.src_port, 40000);
	assert_int_equal(f.dst_port, 443);
	assert_int_equal(f.tcp_flags, 0x02);
	assert_string_equal(net_frame_status_name(f.status), "ok");
}

static void ipv4_udp_icmp_padding_options(void **state)
{
	static const uint8_t opts[8] = { 1, 1, 0x94, 4, 0, 0, 0, 0 }; /* NOP NOP router-alert EOL */
	struct net_frame f;
	size_t n;

	(void)state;
	/* UDP with Ethernet padding to 60 bytes after the IP packet. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);
	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_UDP, 0, NULL, 0, 10);
	n += udp(fb + n, 1000, 53, 2);
	assert_int_equal(n, 44);
	memset(fb + n, 0xee, 60 - n);
	assert_int_equal(parse(fb, 60, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV4 | NET_FRAME_PORTS);
	assert_int_equal(f.src_port, 1000);
	assert_int_equal(f.dst_port, 53);
	assert_int_equal(f.ip.l4_len, 10); /* the padding is not payload */

	/* ICMP echo with options in the header. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);
	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_ICMP, 0, opts, sizeof(opts), 8);
	n += icmp(fb + n, 8, 0);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV4 | NET_FRAME_ICMP);
	assert_int_equal(f.icmp_type, 8);
	assert_int_equal(f.icmp_code, 0);
	assert_int_equal(f.ip.l4_off, 14 + 28);
	assert_every_cut_fails(fb, n);

	/* A protocol without ports: no upper-layer fields, still OK. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);
	n += ipv4(fb + n, GUEST4, REMOTE4, 47 /* GRE */, 0, NULL, 0, 4);
	memset(fb + n, 0, 4);
	assert_int_equal(parse(fb, n + 4, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV4);
	assert_int_equal(f.ip.proto, 47);
}

static void ipv4_hostile_headers(void **state)
{
	struct net_frame f;
	size_t n = tcp4_syn();
	uint8_t *ip = fb + 14;

	(void)state;
	/* Version 6 in an IPv4 ethertype; IHL 4; IHL 15 with a 20-byte header. */
	ip[0] = 0x65;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	ip[0] = 0x44;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	ip[0] = 0x40;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	ip[0] = 0x4f; /* 60-byte header, 40 bytes of IP in the frame */
	assert_int_equal(parse(fb, n, &f), NET_FRAME_TRUNCATED);
	ip[0] = 0x45;

	/* Total length under the header, over the frame, zero. */
	put16(ip + 2, 19);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	put16(ip + 2, 41);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_TRUNCATED);
	put16(ip + 2, 0xffff);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_TRUNCATED);
	put16(ip + 2, 0);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	/* Total length saying the TCP header is cut in an unfragmented packet. */
	put16(ip + 2, 39);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	put16(ip + 2, 20);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	put16(ip + 2, 40);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_every_cut_fails(fb, n);
}

static void ipv4_options(void **state)
{
	static const uint8_t lsrr[8] = { 0x83, 7, 4, 192, 0, 2, 1, 0 };
	static const uint8_t ssrr[8] = { 0x89, 7, 4, 192, 0, 2, 1, 0 };
	static const uint8_t zero_len[4] = { 0x07, 0, 0, 0 };
	static const uint8_t one_len[4] = { 0x07, 1, 0, 0 };
	static const uint8_t overrun[4] = { 0x07, 5, 0, 0 };
	static const uint8_t last_byte[4] = { 1, 1, 1, 0x44 }; /* a type with no room for its length */
	struct net_frame f;
	size_t n;

	(void)state;
	n = tcp4_options(lsrr, sizeof(lsrr));
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_true(f.flags & NET_FRAME_SOURCE_ROUTE);
	assert_true(f.flags & NET_FRAME_PORTS);
	n = tcp4_options(ssrr, sizeof(ssrr));
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_true(f.flags & NET_FRAME_SOURCE_ROUTE);
	n = tcp4_options(zero_len, sizeof(zero_len));
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = tcp4_options(one_len, sizeof(one_len));
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = tcp4_options(overrun, sizeof(overrun));
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = tcp4_options(last_byte, sizeof(last_byte));
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
}

static void ipv4_fragments(void **state)
{
	struct net_frame f;
	size_t n;

	(void)state;
	/* First fragment with the whole TCP header: ports are there. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);
	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_TCP, 0x2000, NULL, 0, 20);
	n += tcp(fb + n, 1234, 80, 0x18);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_true(f.flags & NET_FRAME_FRAGMENT);
	assert_true(f.flags & NET_FRAME_PORTS);
	assert_true(f.ip.more_fragments);
	assert_int_equal(f.ip.frag_offset, 0);
	assert_int_equal(f.dst_port, 80);

	/* A first fragment of 8 bytes: the TCP header is cut, no ports, not an error. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);
	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_TCP, 0x2000, NULL, 0, 8);
	n += 8;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV4 | NET_FRAME_FRAGMENT);

	/* A later fragment (offset 1480, the last one): its bytes are not a header. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);
	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_UDP, 185, NULL, 0, 20);
	n += udp(fb + n, 7, 7, 12);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV4 | NET_FRAME_FRAGMENT);
	assert_int_equal(f.ip.frag_offset, 1480);
	assert_false(f.ip.more_fragments);
	assert_int_equal(f.ip.proto, NET_PROTO_UDP);
	assert_memory_equal(f.ip.dst, REMOTE4, 4);

	/* The largest offset and MF together. */
	put16(fb + 14 + 6, 0x3fff);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.ip.frag_offset, 0x1fff * 8);
	assert_true(f.ip.more_fragments);
}

static void arp_fields_and_hostile(void **state)
{
	struct net_frame f;
	size_t n = arp_request();

	(void)state;
	assert_int_equal(n, 42);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_ARP);
	assert_int_equal(f.arp.op, NET_ARP_REQUEST);
	assert_memory_equal(f.arp.sha, GUEST_MAC, 6);
	assert_memory_equal(f.arp.spa, GUEST4, 4);
	assert_memory_equal(f.arp.tpa, GW4, 4);
	assert_memory_equal(f.dst_mac, BCAST, 6);
	assert_every_cut_fails(fb, n);
	/* Padded to 60 as a NIC would. */
	memset(fb + n, 0, 60 - n);
	assert_int_equal(parse(fb, 60, &f), NET_FRAME_OK);

	/* A reply: target fields read back. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_ARP);
	n += arp(fb + n, NET_ARP_REPLY, GUEST_MAC, GUEST4, GW_MAC, GW4);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.arp.op, NET_ARP_REPLY);
	assert_memory_equal(f.arp.tha, GW_MAC, 6);

	/* Not Ethernet/IPv4: hardware type, protocol type, lengths. */
	n = arp_request();
	fb[15] = 6;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = arp_request();
	fb[17] = 0xdd;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = arp_request();
	fb[18] = 16;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = arp_request();
	fb[19] = 16;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
}

static void vlan_and_ethertypes(void **state)
{
	struct net_frame f;
	size_t n;

	(void)state;
	/* QinQ: service tag 100, customer tag 200, then IPv4 that is not parsed. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_QINQ);
	n += put16(fb + n, 100);
	n += put16(fb + n, NET_ETHERTYPE_VLAN);
	n += put16(fb + n, 0x2000 | 200);
	n += put16(fb + n, NET_ETHERTYPE_IPV4);
	assert_every_cut_fails(fb, n);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_VLAN);
	assert_int_equal(f.ethertype, NET_ETHERTYPE_QINQ);
	assert_int_equal(f.vlan_tags, 2);
	assert_int_equal(f.vlan_tci[0], 100);
	assert_int_equal(f.vlan_tci[1], 0x2000 | 200);
	assert_int_equal(f.inner_ethertype, NET_ETHERTYPE_IPV4);

	/* One 802.1Q tag, and three stacked tags (the third is left alone). */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_VLAN);
	n += put16(fb + n, 5);
	n += put16(fb + n, NET_ETHERTYPE_ARP);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.vlan_tags, 1);
	assert_int_equal(f.inner_ethertype, NET_ETHERTYPE_ARP);
	for (int i = 0; i < 3; i++) {
		put16(fb + 12 + 4 * i, NET_ETHERTYPE_QINQ_OLD);
		put16(fb + 14 + 4 * i, 1);
	}
	assert_int_equal(parse(fb, 26, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_VLAN);
	assert_int_equal(f.vlan_tags, 2);
	assert_int_equal(f.inner_ethertype, NET_ETHERTYPE_QINQ_OLD);

	/* LLDP, an 802.3 length field, and an empty frame of a known type. */
	n = eth(fb, GW_MAC, GUEST_MAC, 0x88cc);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_UNKNOWN_ETHERTYPE);
	assert_memory_equal(f.src_mac, GUEST_MAC, 6);
	assert_string_equal(net_frame_status_name(f.status), "unknown_ethertype");
	n = eth(fb, GW_MAC, GUEST_MAC, 46);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_UNKNOWN_ETHERTYPE);
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_TRUNCATED);
	assert_string_equal(net_frame_status_name(f.status), "truncated");
	assert_string_equal(net_frame_status_name(NET_FRAME_MALFORMED), "malformed");
	assert_string_equal(net_frame_status_name((enum net_frame_status)99), "invalid");
	/* Nothing at all: no buffer to read. */
	assert_int_equal(net_frame_parse(NULL, 0, &f), NET_FRAME_TRUNCATED);
}

static void ipv6_fields_and_ext_headers(void **state)
{
	struct net_frame f;
	size_t n = tcp6_ext();

	(void)state;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV6 | NET_FRAME_PORTS | NET_FRAME_TCP_FLAGS);
	assert_memory_equal(f.ip.src, GUEST6, 16);
	assert_memory_equal(f.ip.dst, REMOTE6, 16);
	assert_int_equal(f.ip.ttl, 255);
	assert_int_equal(f.ip.proto, NET_PROTO_TCP);
	assert_int_equal(f.ip.ext_headers, 3);
	assert_int_equal(f.ip.l4_off, 14 + 40 + 48);
	assert_int_equal(f.src_port, 50000);
	assert_int_equal(f.dst_port, 22);
	assert_int_equal(f.tcp_flags, 0x12);
	assert_every_cut_fails(fb, n);

	/* A routing header with segments left sends the packet on past dst. */
	fb[14 + 40 + 8 + 16 + 3] = 2;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_true(f.flags & NET_FRAME_SOURCE_ROUTE);

	/* Hop-by-hop anywhere but first. */
	n = tcp6_ext();
	fb[14 + 40] = NET_PROTO_IPV6_HOPOPTS;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);

	/* An extension header longer than the payload, and a payload past the frame. */
	n = tcp6_ext();
	fb[14 + 40 + 8 + 16 + 1] = 8;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = tcp6_ext();
	fb[14 + 40 + 8 + 16 + 1] = 255;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = tcp6_ext();
	put16(fb + 14 + 4, 8 + 16 + 24 + 20 + 1);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_TRUNCATED);
	/* Payload ending inside the TCP header / between headers. */
	put16(fb + 14 + 4, 8 + 16 + 24 + 19);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	put16(fb + 14 + 4, 8 + 16 + 4);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	put16(fb + 14 + 4, 0);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	/* Bad version; trailing bytes after the payload are padding. */
	n = tcp6_ext();
	fb[14] = 0x40;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = tcp6_ext();
	memset(fb + n, 0xaa, 16);
	assert_int_equal(parse(fb, n + 16, &f), NET_FRAME_OK);

	/* No next header: nothing after, still a packet. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_NONXT, 0);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV6);
	assert_int_equal(f.ip.proto, NET_PROTO_IPV6_NONXT);
}

static void ipv6_long_chains(void **state)
{
	struct net_frame f;
	size_t n, k;

	(void)state;
	/* 8 destination options headers: the cap, still fine. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_DSTOPTS, 8 * 8 + 8);
	for (k = 0; k < 8; k++)
		n += ext(fb + n, k < 7 ? NET_PROTO_IPV6_DSTOPTS : NET_PROTO_UDP, 0, 0);
	n += udp(fb + n, 1, 2, 0);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.ip.ext_headers, 8);
	assert_true(f.flags & NET_FRAME_PORTS);

	/* A ninth, and a chain that names itself all the way through the frame. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_DSTOPTS, 9 * 8 + 8);
	for (k = 0; k < 9; k++)
		n += ext(fb + n, k < 8 ? NET_PROTO_IPV6_DSTOPTS : NET_PROTO_UDP, 0, 0);
	n += udp(fb + n, 1, 2, 0);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);

	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_ROUTING, 200 * 8);
	for (k = 0; k < 200; k++)
		n += ext(fb + n, NET_PROTO_IPV6_ROUTING, 0, 0);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	assert_int_equal(f.ip.ext_headers, NET_IPV6_MAX_EXT_HEADERS);

	/* Alternating fragment headers: the second one is refused. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_FRAGMENT, 24);
	n += frag6(fb + n, NET_PROTO_IPV6_FRAGMENT, 0, 0, 1);
	n += frag6(fb + n, NET_PROTO_UDP, 0, 0, 1);
	n += udp(fb + n, 1, 2, 0);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
}

static void ipv6_fragments(void **state)
{
	struct net_frame f;
	size_t n = udp6_first_fragment();

	(void)state;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV6 | NET_FRAME_FRAGMENT | NET_FRAME_PORTS);
	assert_true(f.ip.more_fragments);
	assert_int_equal(f.ip.frag_offset, 0);
	assert_int_equal(f.ip.frag_id, 0xdeadbeef);
	assert_int_equal(f.ip.proto, NET_PROTO_UDP);
	assert_int_equal(f.dst_port, 53);
	assert_every_cut_fails(fb, n);

	/* A later fragment: proto from the fragment header, no ports. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_FRAGMENT, 8 + 16);
	n += frag6(fb + n, NET_PROTO_UDP, 1448, 0, 7);
	memset(fb + n, 0x11, 16);
	n += 16;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV6 | NET_FRAME_FRAGMENT);
	assert_int_equal(f.ip.frag_offset, 1448);
	assert_false(f.ip.more_fragments);
	assert_int_equal(f.ip.proto, NET_PROTO_UDP);
	assert_int_equal(f.ip.ext_headers, 1);

	/* A first fragment that stops inside the UDP header: no ports, not an error. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_FRAGMENT, 8 + 4);
	n += frag6(fb + n, NET_PROTO_UDP, 0, 1, 7);
	n += put16(fb + n, 1);
	n += put16(fb + n, 2);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV6 | NET_FRAME_FRAGMENT);

	/* A first fragment whose extension chain runs past it (RFC 7112). */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_FRAGMENT, 8 + 8);
	n += frag6(fb + n, NET_PROTO_IPV6_DSTOPTS, 0, 1, 7);
	n += ext(fb + n, NET_PROTO_TCP, 0, 0);
	fb[n - 7] = 4; /* claims 40 bytes */
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);

	/* An atomic fragment (offset 0, no M) is a whole packet. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_FRAGMENT, 8 + 4);
	n += frag6(fb + n, NET_PROTO_UDP, 0, 0, 7);
	n += put16(fb + n, 1);
	n += put16(fb + n, 2);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
}

static void icmpv6_nd(void **state)
{
	static const uint8_t OTHER_MAC[6] = { 0x02, 0, 0, 0, 0, 0x99 };
	uint8_t ll[16] = { 0xfe, 0x80 };
	struct net_frame f;
	size_t n;

	(void)state;
	n = ns6(GUEST6, GUEST_MAC);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV6 | NET_FRAME_ICMP | NET_FRAME_ND_TARGET |
					  NET_FRAME_ND_LLADDR);
	assert_int_equal(f.ip.proto, NET_PROTO_ICMPV6);
	assert_int_equal(f.icmp_type, NET_ICMPV6_NEIGH_SOLICIT);
	assert_int_equal(f.icmp_code, 0);
	assert_memory_equal(f.nd_target, GW6, 16);
	assert_memory_equal(f.nd_lladdr, GUEST_MAC, 6);
	assert_memory_equal(f.ip.dst, GW6_SNM, 16);
	assert_memory_equal(f.dst_mac, GW6_SNM_MAC, 6);
	assert_every_cut_fails(fb, n);

	/* DAD: from ::, no option. */
	n = ns6((const uint8_t[16]){ 0 }, NULL);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV6 | NET_FRAME_ICMP | NET_FRAME_ND_TARGET);

	/* A neighbor advertisement with a target link-layer option. */
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, GW6, NET_PROTO_ICMPV6, 32);
	n += nd(fb + n, NET_ICMPV6_NEIGH_ADVERT, GUEST6, 2, GUEST_MAC);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.icmp_type, NET_ICMPV6_NEIGH_ADVERT);
	assert_memory_equal(f.nd_target, GUEST6, 16);
	assert_memory_equal(f.nd_lladdr, GUEST_MAC, 6);

	/* A router solicitation from the link-local address: no target. */
	memcpy(ll + 8, (const uint8_t[]){ 0, 0, 0, 0xff, 0xfe, 0, 0, 1 }, 8);
	n = eth(fb, (const uint8_t[]){ 0x33, 0x33, 0, 0, 0, 2 }, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, ll, (const uint8_t[16]){ 0xff, 2, [15] = 2 }, NET_PROTO_ICMPV6, 16);
	n += nd(fb + n, NET_ICMPV6_ROUTER_SOLICIT, NULL, 1, GUEST_MAC);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV6 | NET_FRAME_ICMP | NET_FRAME_ND_LLADDR);
	assert_int_equal(f.icmp_type, NET_ICMPV6_ROUTER_SOLICIT);
	assert_every_cut_fails(fb, n);

	/* Hostile options: length 0 (would loop), past the end, a stray byte, a 16-byte lladdr. */
	n = ns6(GUEST6, GUEST_MAC);
	fb[n - 7] = 0;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = ns6(GUEST6, GUEST_MAC);
	fb[n - 7] = 2;
	assert_int_equal(parse(fb, n, &f), NET_FRAME_MALFORMED);
	n = ns6(GUEST6, GUEST_MAC);
	put16(fb + 14 + 4, 33);
	fb[n] = 0;
	assert_int_equal(parse(fb, n + 1, &f), NET_FRAME_MALFORMED);
	n = eth(fb, GW6_SNM_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, GW6_SNM, NET_PROTO_ICMPV6, 40);
	n += nd(fb + n, NET_ICMPV6_NEIGH_SOLICIT, GW6, 1, GUEST_MAC);
	fb[n - 7] = 2;
	memset(fb + n, 0, 8);
	assert_int_equal(parse(fb, n + 8, &f), NET_FRAME_MALFORMED);
	/* Unknown options are skipped; a second lladdr must agree with the first. */
	n = eth(fb, GW6_SNM_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, GW6_SNM, NET_PROTO_ICMPV6, 48);
	n += nd(fb + n, NET_ICMPV6_NEIGH_SOLICIT, GW6, 1, GUEST_MAC);
	memset(fb + n, 0, 16);
	fb[n] = 14; /* nonce */
	fb[n + 1] = 1;
	fb[n + 8] = 1;
	fb[n + 9] = 1;
	memcpy(fb + n + 10, GUEST_MAC, 6);
	assert_int_equal(parse(fb, n + 16, &f), NET_FRAME_OK);
	memcpy(fb + n + 10, OTHER_MAC, 6);
	assert_int_equal(parse(fb, n + 16, &f), NET_FRAME_MALFORMED);

	/* Too short for a neighbor solicitation, and for any ICMPv6 message. */
	n = ns6(GUEST6, NULL);
	put16(fb + 14 + 4, 20);
	assert_int_equal(parse(fb, n - 4, &f), NET_FRAME_MALFORMED);
	put16(fb + 14 + 4, 6);
	assert_int_equal(parse(fb, n - 18, &f), NET_FRAME_MALFORMED);

	/* ND in a first fragment: type seen, options and target not parsed. */
	n = eth(fb, GW6_SNM_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, GW6_SNM, NET_PROTO_IPV6_FRAGMENT, 8 + 32);
	n += frag6(fb + n, NET_PROTO_ICMPV6, 0, 1, 9);
	n += nd(fb + n, NET_ICMPV6_NEIGH_SOLICIT, GW6, 1, GUEST_MAC);
	assert_int_equal(parse(fb, n, &f), NET_FRAME_OK);
	assert_int_equal(f.flags, NET_FRAME_IPV6 | NET_FRAME_FRAGMENT | NET_FRAME_ICMP);
	assert_int_equal(f.icmp_type, NET_ICMPV6_NEIGH_SOLICIT);
}

/* Random corruption of valid frames: never a read past the end, never a broken result. */
static void hostile_mutations(void **state)
{
	size_t (*const makers[])(void) = { tcp4_syn, arp_request, tcp6_ext, udp6_first_fragment };
	uint64_t rng = 0x5eed;
	struct net_frame f;

	(void)state;
	for (int round = 0; round < 40000; round++) {
		size_t n = makers[round % 4](), cut;
		int flips = 1 + (int)(unit_rand(&rng) % 4);

		for (int i = 0; i < flips; i++)
			fb[unit_rand(&rng) % n] = (uint8_t)unit_rand(&rng);
		cut = n - unit_rand(&rng) % (n / 4 + 1);
		parse(fb, cut, &f);
		if (f.status == NET_FRAME_OK && (f.flags & (NET_FRAME_IPV4 | NET_FRAME_IPV6)) &&
		    (f.flags & (NET_FRAME_PORTS | NET_FRAME_ICMP)))
			assert_true(f.ip.l4_off >= NET_ETH_HLEN + NET_IPV4_HLEN);
		assert_true(f.ip.ext_headers <= NET_IPV6_MAX_EXT_HEADERS);
		assert_true(f.vlan_tags <= 2);
	}
	/* Every byte value of every position of the IPv6 fixed header and first extension. */
	for (size_t pos = 14; pos < 14 + 48; pos++)
		for (int v = 0; v < 256; v++) {
			size_t n = tcp6_ext();

			fb[pos] = (uint8_t)v;
			parse(fb, n, &f);
		}
}

/* ---- the virtio-net header ---- */

#define ALL_TX (NET_TX_CSUM | NET_TX_TSO4 | NET_TX_TSO6 | NET_TX_ECN)

/* A TCP header with 12 option bytes (data offset 8). */
static size_t tcp_opts(uint8_t *b)
{
	tcp(b, 40000, 443, 0x18);
	b[12] = 8 << 4;
	memset(b + 20, 1, 12); /* no-ops */
	return 32;
}

/* A TSO frame as Linux sends it: IPv4 (DF), TCP with options, payload bytes. */
static size_t tso4(size_t payload)
{
	size_t n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);

	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_TCP, 0x4000, NULL, 0, 32 + payload);
	n += tcp_opts(fb + n);
	memset(fb + n, 0xab, payload);
	return n + payload;
}

/* The same over IPv6, with a destination options header before TCP. */
static size_t tso6(size_t payload)
{
	size_t n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);

	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_DSTOPTS, 8 + 32 + payload);
	n += ext(fb + n, NET_PROTO_TCP, 0, 0);
	n += tcp_opts(fb + n);
	memset(fb + n, 0xcd, payload);
	return n + payload;
}

static size_t udp4(size_t data)
{
	size_t n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);

	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_UDP, 0, NULL, 0, 8 + data);
	return n + udp(fb + n, 4789, 4789, data);
}

static struct net_vnet_hdr gso_hdr(uint8_t type, uint16_t l4)
{
	return (struct net_vnet_hdr){ .flags = NET_VNET_F_NEEDS_CSUM, .gso_type = type, .hdr_len = (uint16_t)(l4 + 32),
				      .gso_size = 1448, .csum_start = l4, .csum_offset = 16 };
}

static struct net_vnet_hdr csum_hdr(uint16_t start, uint16_t offset)
{
	return (struct net_vnet_hdr){ .flags = NET_VNET_F_NEEDS_CSUM, .csum_start = start, .csum_offset = offset };
}

/* net_vnet_check on a heap copy of exactly n bytes of fb, parsed first. */
static enum net_vnet_status vcheck(size_t n, const struct net_vnet_hdr *h, unsigned offloads,
				   struct net_vnet_hdr *out)
{
	uint8_t *copy = malloc(n ? n : 1);
	enum net_vnet_status st;
	struct net_frame f;

	assert_non_null(copy);
	memcpy(copy, fb, n);
	net_frame_parse(copy, n, &f);
	st = net_vnet_check(h, offloads, copy, n, &f, out);
	if (st != NET_VNET_OK) {
		static const struct net_vnet_hdr zero;

		assert_memory_equal(out, &zero, sizeof(zero));
	} else if (out->flags) {
		/* Whatever passes: the host's checksum write stays inside the frame, past the IP headers. */
		assert_int_equal(f.status, NET_FRAME_OK);
		assert_true((size_t)out->csum_start + out->csum_offset + 2 <= n);
		assert_true(out->csum_start >= f.ip.l4_off);
		assert_true(out->hdr_len <= n);
		assert_int_equal(out->num_buffers, 0);
	}
	free(copy);
	return st;
}

static void expect_vnet_at(size_t n, struct net_vnet_hdr h, unsigned offloads, enum net_vnet_status want, int line)
{
	struct net_vnet_hdr out;
	enum net_vnet_status got = vcheck(n, &h, offloads, &out);

	if (got != want)
		fail_msg("line %d: %s, expected %s", line, net_vnet_status_name(got), net_vnet_status_name(want));
}
#define EXPECT_VNET(n, h, offloads, want) expect_vnet_at((n), (h), (offloads), (want), __LINE__)

static void vnet_header_bytes(void **state)
{
	const uint8_t wire[NET_VNET_HDR_LEN] = { 1, 0x81, 0x42, 0, 0xa8, 0x05, 0x22, 0, 0x10, 0, 3, 1 };
	uint8_t back[NET_VNET_HDR_LEN];
	struct net_vnet_hdr h;

	(void)state;
	net_vnet_hdr_get(wire, &h);
	assert_int_equal(h.flags, 1);
	assert_int_equal(h.gso_type, 0x81);
	assert_int_equal(h.hdr_len, 0x42);
	assert_int_equal(h.gso_size, 1448);
	assert_int_equal(h.csum_start, 34);
	assert_int_equal(h.csum_offset, 16);
	assert_int_equal(h.num_buffers, 259);
	net_vnet_hdr_put(&h, back);
	assert_memory_equal(back, wire, sizeof(wire));
	assert_string_equal(net_vnet_status_name(NET_VNET_GSO_MISMATCH), "gso_mismatch");
	assert_string_equal(net_vnet_status_name((enum net_vnet_status)99), "invalid");
}

static void vnet_plain_and_checksums(void **state)
{
	struct net_vnet_hdr junk = { .hdr_len = 9999, .gso_size = 1, .csum_start = 60000, .csum_offset = 7,
				     .num_buffers = 5 }, out;
	size_t n;

	(void)state;
	/* Asking for nothing passes on any frame, with no offloads, its unused fields zeroed. */
	n = arp_request();
	assert_int_equal(vcheck(n, &junk, 0, &out), NET_VNET_OK);
	assert_int_equal(out.hdr_len | out.gso_size | out.csum_start | out.csum_offset | out.num_buffers, 0);
	assert_int_equal(vcheck(5, &junk, 0, &out), NET_VNET_OK);

	/* A partial TCP checksum over IPv4 and over IPv6 behind extension headers. */
	n = tcp4_syn();
	assert_int_equal(vcheck(n, &(struct net_vnet_hdr){ .flags = 1, .csum_start = 34, .csum_offset = 16,
							    .hdr_len = 54, .gso_size = 77 },
				NET_TX_CSUM, &out),
			 NET_VNET_OK);
	assert_int_equal(out.flags, NET_VNET_F_NEEDS_CSUM);
	assert_int_equal(out.csum_start, 34);
	assert_int_equal(out.csum_offset, 16);
	assert_int_equal(out.gso_type | out.gso_size | out.hdr_len, 0);
	n = tcp6_ext();
	EXPECT_VNET(n, csum_hdr(14 + 40 + 48, 16), NET_TX_CSUM, NET_VNET_OK);
	EXPECT_VNET(n, csum_hdr(14 + 40, 16), NET_TX_CSUM, NET_VNET_BAD_CSUM); /* the first extension header */

	/* UDP: its own checksum field, or one inside its payload (a tunnel's inner header). */
	n = udp4(64);
	EXPECT_VNET(n, csum_hdr(34, 6), NET_TX_CSUM, NET_VNET_OK);
	EXPECT_VNET(n, csum_hdr(34 + 8 + 20, 16), NET_TX_CSUM, NET_VNET_OK);
	EXPECT_VNET(n, csum_hdr(34 + 8, (uint16_t)(64 - 2)), NET_TX_CSUM, NET_VNET_OK);
	EXPECT_VNET(n, csum_hdr(34 + 8, (uint16_t)(64 - 1)), NET_TX_CSUM, NET_VNET_BAD_CSUM);
	EXPECT_VNET(n, csum_hdr(34, 16), NET_TX_CSUM, NET_VNET_BAD_CSUM);
	EXPECT_VNET(n, csum_hdr(34 + 4, 0), NET_TX_CSUM, NET_VNET_BAD_CSUM); /* the length field */
	EXPECT_VNET(n, csum_hdr(34, 0), NET_TX_CSUM, NET_VNET_BAD_CSUM);     /* the ports */
	/* Ethernet padding past the IP packet is not the datagram's. */
	memset(fb + n, 0, 16);
	EXPECT_VNET(n + 16, csum_hdr(34 + 8, (uint16_t)(64 + 4)), NET_TX_CSUM, NET_VNET_BAD_CSUM);
}

static void vnet_bad_flags_and_types(void **state)
{
	static const uint8_t bad_flags[] = { 2, 3, 4, 8, 0x80, 0xff };
	static const uint8_t bad_types[] = { NET_VNET_GSO_UDP, NET_VNET_GSO_UDP_L4, 2, 6, 0x7f,
					     NET_VNET_GSO_ECN, NET_VNET_GSO_UDP | NET_VNET_GSO_ECN,
					     NET_VNET_GSO_UDP_L4 | NET_VNET_GSO_ECN };
	size_t n = tso4(4000);
	struct net_vnet_hdr h;

	(void)state;
	assert_int_equal(n, 14 + 20 + 32 + 4000);
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, 34), ALL_TX, NET_VNET_OK);
	for (size_t i = 0; i < sizeof(bad_flags); i++) {
		h = gso_hdr(NET_VNET_GSO_TCPV4, 34);
		h.flags = bad_flags[i];
		EXPECT_VNET(n, h, ALL_TX, NET_VNET_BAD_FLAGS);
	}
	/* UDP fragmentation offload and UDP segmentation: never, whatever was negotiated. */
	for (size_t i = 0; i < sizeof(bad_types); i++) {
		h = gso_hdr(bad_types[i], 34);
		EXPECT_VNET(n, h, ~0u, NET_VNET_BAD_GSO_TYPE);
	}
	n = udp4(4000);
	h = gso_hdr(NET_VNET_GSO_UDP, 34);
	h.csum_offset = 6;
	EXPECT_VNET(n, h, ~0u, NET_VNET_BAD_GSO_TYPE);
}

static void vnet_not_negotiated(void **state)
{
	size_t n4 = tso4(3000);
	struct net_vnet_hdr h;

	(void)state;
	EXPECT_VNET(n4, csum_hdr(34, 16), 0, NET_VNET_NOT_NEGOTIATED);
	EXPECT_VNET(n4, csum_hdr(34, 16), ALL_TX & ~NET_TX_CSUM, NET_VNET_NOT_NEGOTIATED);
	EXPECT_VNET(n4, gso_hdr(NET_VNET_GSO_TCPV4, 34), NET_TX_CSUM | NET_TX_TSO6, NET_VNET_NOT_NEGOTIATED);
	EXPECT_VNET(n4, gso_hdr(NET_VNET_GSO_TCPV4, 34), NET_TX_TSO4, NET_VNET_NOT_NEGOTIATED);
	EXPECT_VNET(n4, gso_hdr(NET_VNET_GSO_TCPV4 | NET_VNET_GSO_ECN, 34), NET_TX_CSUM | NET_TX_TSO4,
		    NET_VNET_NOT_NEGOTIATED);
	EXPECT_VNET(n4, gso_hdr(NET_VNET_GSO_TCPV4 | NET_VNET_GSO_ECN, 34), ALL_TX, NET_VNET_OK);
	h = gso_hdr(NET_VNET_GSO_TCPV4, 34);
	h.flags = 0; /* segmentation without the partial checksum it needs: asked of no one */
	EXPECT_VNET(n4, h, NET_TX_TSO4, NET_VNET_GSO_MISMATCH);
	EXPECT_VNET(tso6(3000), gso_hdr(NET_VNET_GSO_TCPV6, 14 + 40 + 8), NET_TX_CSUM | NET_TX_TSO4,
		    NET_VNET_NOT_NEGOTIATED);
}

static void vnet_gso_must_match_the_frame(void **state)
{
	const uint16_t l4_6 = 14 + 40 + 8;
	struct net_vnet_hdr out;
	size_t n;

	(void)state;
	n = tso6(60000);
	assert_int_equal(vcheck(n, &(struct net_vnet_hdr){ .flags = 1, .gso_type = NET_VNET_GSO_TCPV6,
							    .hdr_len = 1, .gso_size = 1440, .csum_start = l4_6,
							    .csum_offset = 16 },
				ALL_TX, &out),
			 NET_VNET_OK);
	assert_int_equal(out.gso_type, NET_VNET_GSO_TCPV6);
	assert_int_equal(out.gso_size, 1440);
	assert_int_equal(out.hdr_len, l4_6 + 32); /* the exact headers, not the guest's hint */
	/* The other family's type, both ways. */
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, l4_6), ALL_TX, NET_VNET_GSO_MISMATCH);
	n = tso4(3000);
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV6, 34), ALL_TX, NET_VNET_GSO_MISMATCH);
	/* Not TCP: UDP, ICMP, ARP, a VLAN tag. */
	n = udp4(3000);
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, 34), ALL_TX, NET_VNET_GSO_MISMATCH);
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV4);
	n += ipv4(fb + n, GUEST4, REMOTE4, NET_PROTO_ICMP, 0, NULL, 0, 3008);
	n += icmp(fb + n, 8, 0);
	memset(fb + n, 0, 3000);
	EXPECT_VNET(n + 3000, gso_hdr(NET_VNET_GSO_TCPV4, 34), ALL_TX, NET_VNET_GSO_MISMATCH);
	EXPECT_VNET(n + 3000, csum_hdr(34, 2), ALL_TX, NET_VNET_BAD_CSUM);
	n = arp_request();
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, 14), ALL_TX, NET_VNET_GSO_MISMATCH);
	EXPECT_VNET(n, csum_hdr(14, 16), ALL_TX, NET_VNET_BAD_CSUM);
	n = tso4(3000);
	memmove(fb + 18, fb + 14, n - 14);
	put16(fb + 12, NET_ETHERTYPE_VLAN);
	put16(fb + 14, 5);
	put16(fb + 16, NET_ETHERTYPE_IPV4);
	EXPECT_VNET(n + 4, gso_hdr(NET_VNET_GSO_TCPV4, 38), ALL_TX, NET_VNET_GSO_MISMATCH);
	EXPECT_VNET(n + 4, csum_hdr(38, 16), ALL_TX, NET_VNET_BAD_CSUM);
	/* A fragment: IPv4 with MF, with an offset; an IPv6 first fragment. */
	n = tso4(3000);
	put16(fb + 14 + 6, 0x2000);
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, 34), ALL_TX, NET_VNET_GSO_MISMATCH);
	EXPECT_VNET(n, csum_hdr(34, 16), ALL_TX, NET_VNET_BAD_CSUM);
	put16(fb + 14 + 6, 0x0001);
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, 34), ALL_TX, NET_VNET_GSO_MISMATCH);
	n = eth(fb, GW_MAC, GUEST_MAC, NET_ETHERTYPE_IPV6);
	n += ipv6(fb + n, GUEST6, REMOTE6, NET_PROTO_IPV6_FRAGMENT, 8 + 32 + 3000);
	n += frag6(fb + n, NET_PROTO_TCP, 0, 1, 7);
	n += tcp_opts(fb + n);
	memset(fb + n, 0, 3000);
	EXPECT_VNET(n + 3000, gso_hdr(NET_VNET_GSO_TCPV6, 62), ALL_TX, NET_VNET_GSO_MISMATCH);
	EXPECT_VNET(n + 3000, csum_hdr(62, 16), ALL_TX, NET_VNET_BAD_CSUM);
	/* Bytes after the IP packet would become payload of the last segment. */
	n = tso4(3000);
	put16(fb + 14 + 2, (uint16_t)(20 + 32 + 2000));
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, 34), ALL_TX, NET_VNET_GSO_MISMATCH);
	EXPECT_VNET(n, csum_hdr(34, 16), ALL_TX, NET_VNET_OK); /* padding is harmless without GSO */
	/* A TCP data offset under 5 words, or past the segment. */
	n = tso4(20);
	fb[34 + 12] = 4 << 4;
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, 34), ALL_TX, NET_VNET_GSO_MISMATCH);
	fb[34 + 12] = 14 << 4; /* 56 bytes, the segment has 52 */
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, 34), ALL_TX, NET_VNET_GSO_MISMATCH);
	fb[34 + 12] = 13 << 4; /* 52: headers alone, still one segment's worth */
	EXPECT_VNET(n, gso_hdr(NET_VNET_GSO_TCPV4, 34), ALL_TX, NET_VNET_OK);
}

static void vnet_sizes_and_checksum_places(void **state)
{
	size_t n = tso4(6000);
	struct net_vnet_hdr h, out;

	(void)state;
	for (unsigned size = 0; size < NET_GSO_MIN_SIZE; size += 7) {
		h = gso_hdr(NET_VNET_GSO_TCPV4, 34);
		h.gso_size = (uint16_t)size;
		EXPECT_VNET(n, h, ALL_TX, NET_VNET_BAD_GSO_SIZE);
	}
	h.gso_size = NET_GSO_MIN_SIZE;
	EXPECT_VNET(n, h, ALL_TX, NET_VNET_OK);
	h.gso_size = 65535;
	EXPECT_VNET(n, h, ALL_TX, NET_VNET_OK);
	h = gso_hdr(NET_VNET_GSO_TCPV4, 34);
	h.hdr_len = (uint16_t)n;
	EXPECT_VNET(n, h, ALL_TX, NET_VNET_OK);
	h.hdr_len = (uint16_t)(n + 1);
	EXPECT_VNET(n, h, ALL_TX, NET_VNET_BAD_HDR_LEN);
	h.hdr_len = 65535;
	EXPECT_VNET(n, h, ALL_TX, NET_VNET_BAD_HDR_LEN);
	h.hdr_len = 0;
	assert_int_equal(vcheck(n, &h, ALL_TX, &out), NET_VNET_OK);
	assert_int_equal(out.hdr_len, 34 + 32);
	/*
	 * Every checksum place but the TCP header's own: over the MACs, the IP
	 * source or destination, the ports, the payload, past the frame.
	 */
	for (unsigned start = 0; start < 80; start++) {
		for (unsigned off = 0; off < 40; off++) {
			if (start == 34 && off == 16)
				continue;
			h = gso_hdr(NET_VNET_GSO_TCPV4, 34);
			h.csum_start = (uint16_t)start;
			h.csum_offset = (uint16_t)off;
			EXPECT_VNET(n, h, ALL_TX, NET_VNET_BAD_CSUM);
			EXPECT_VNET(n, csum_hdr((uint16_t)start, (uint16_t)off), ALL_TX, NET_VNET_BAD_CSUM);
		}
	}
	EXPECT_VNET(n, csum_hdr(65535, 65535), ALL_TX, NET_VNET_BAD_CSUM);
	EXPECT_VNET(n, csum_hdr((uint16_t)(n - 1), 0), ALL_TX, NET_VNET_BAD_CSUM);
}

/* No proper prefix of a GSO frame is a GSO frame, and random headers never break the rules. */
static void vnet_cut_and_random_headers(void **state)
{
	size_t n = tso4(3000);
	uint8_t wire[NET_VNET_HDR_LEN];
	struct net_vnet_hdr h, out;
	uint64_t rng = 7;
	unsigned ok = 0;

	(void)state;
	for (size_t cut = 0; cut < n; cut++) {
		enum net_vnet_status st = vcheck(cut, &(struct net_vnet_hdr){ .flags = 1, .gso_type = 1,
									  .gso_size = 1448, .csum_start = 34,
									  .csum_offset = 16 },
						 ALL_TX, &out);

		if (st == NET_VNET_OK)
			fail_msg("GSO frame cut at %zu of %zu passes", cut, n);
	}
	for (int round = 0; round < 20000; round++) {
		for (size_t i = 0; i < sizeof(wire); i++)
			wire[i] = (uint8_t)unit_rand(&rng);
		/* Mostly near the real thing, so the deeper checks are reached. */
		if (round % 2) {
			wire[0] &= 1;
			wire[1] &= 0x85;
			wire[6] = 34;
			wire[7] = 0;
			wire[8] = (uint8_t)(unit_rand(&rng) % 2 ? 16 : unit_rand(&rng) % 24);
			wire[9] = 0;
		}
		net_vnet_hdr_get(wire, &h);
		ok += vcheck(n, &h, unit_rand(&rng) & 15, &out) == NET_VNET_OK;
	}
	assert_true(ok > 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ipv4_tcp_fields),
		cmocka_unit_test(ipv4_udp_icmp_padding_options),
		cmocka_unit_test(ipv4_hostile_headers),
		cmocka_unit_test(ipv4_options),
		cmocka_unit_test(ipv4_fragments),
		cmocka_unit_test(arp_fields_and_hostile),
		cmocka_unit_test(vlan_and_ethertypes),
		cmocka_unit_test(ipv6_fields_and_ext_headers),
		cmocka_unit_test(ipv6_long_chains),
		cmocka_unit_test(ipv6_fragments),
		cmocka_unit_test(icmpv6_nd),
		cmocka_unit_test(hostile_mutations),
		cmocka_unit_test(vnet_header_bytes),
		cmocka_unit_test(vnet_plain_and_checksums),
		cmocka_unit_test(vnet_bad_flags_and_types),
		cmocka_unit_test(vnet_not_negotiated),
		cmocka_unit_test(vnet_gso_must_match_the_frame),
		cmocka_unit_test(vnet_sizes_and_checksum_places),
		cmocka_unit_test(vnet_cut_and_random_headers),
	};

	return cmocka_run_group_tests_name("net_frame", tests, NULL, NULL);
}
