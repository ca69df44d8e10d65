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

static uint8_t fb[4096];

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
	};

	return cmocka_run_group_tests_name("net_frame", tests, NULL, NULL);
}
