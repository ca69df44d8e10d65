#ifndef SANDVM_VMM_NET_FRAME_H
#define SANDVM_VMM_NET_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One Ethernet II frame as the guest put it on its virtio-net TX queue (no
 * FCS, no virtio-net header), taken apart for the egress firewall. Pure: the
 * parser reads only buf[0..len) and keeps no pointer into it.
 */

#define NET_ETH_ALEN 6u
#define NET_ETH_HLEN 14u
#define NET_IPV4_HLEN 20u
#define NET_IPV6_HLEN 40u
/* More extension headers than any real stack sends; a longer chain is an attack on parsers. */
#define NET_IPV6_MAX_EXT_HEADERS 8u

enum {
	NET_ETHERTYPE_IPV4 = 0x0800,
	NET_ETHERTYPE_ARP = 0x0806,
	NET_ETHERTYPE_VLAN = 0x8100,  /* 802.1Q */
	NET_ETHERTYPE_QINQ = 0x88a8,  /* 802.1ad service tag */
	NET_ETHERTYPE_QINQ_OLD = 0x9100, /* pre-standard QinQ, still seen */
	NET_ETHERTYPE_IPV6 = 0x86dd,

	NET_ARP_REQUEST = 1,
	NET_ARP_REPLY = 2,

	NET_PROTO_ICMP = 1,
	NET_PROTO_TCP = 6,
	NET_PROTO_UDP = 17,
	NET_PROTO_IPV6_HOPOPTS = 0,
	NET_PROTO_IPV6_ROUTING = 43,
	NET_PROTO_IPV6_FRAGMENT = 44,
	NET_PROTO_ICMPV6 = 58,
	NET_PROTO_IPV6_NONXT = 59,
	NET_PROTO_IPV6_DSTOPTS = 60,

	NET_ICMPV6_ROUTER_SOLICIT = 133,
	NET_ICMPV6_ROUTER_ADVERT = 134,
	NET_ICMPV6_NEIGH_SOLICIT = 135,
	NET_ICMPV6_NEIGH_ADVERT = 136,
	NET_ICMPV6_REDIRECT = 137,
};

enum net_frame_status {
	NET_FRAME_OK = 0,
	/* The buffer ends before bytes that a header or a length field says are there. */
	NET_FRAME_TRUNCATED,
	/*
	 * Fields that contradict each other or a protocol: bad version or IHL,
	 * IPv4 total length under its header, an IPv6 extension chain that
	 * overruns its payload or has more than NET_IPV6_MAX_EXT_HEADERS headers,
	 * bad option lengths, an unfragmented packet too short for its
	 * TCP/UDP/ICMP header, ARP that is not Ethernet/IPv4.
	 */
	NET_FRAME_MALFORMED,
	/* Neither ARP, IPv4, IPv6 nor a VLAN tag (802.3 length fields included). */
	NET_FRAME_UNKNOWN_ETHERTYPE,
};

/* What net_frame.flags says is present and filled in. */
enum {
	NET_FRAME_VLAN = 1u << 0,      /* tags; nothing behind them is parsed */
	NET_FRAME_ARP = 1u << 1,       /* arp */
	NET_FRAME_IPV4 = 1u << 2,      /* ip, IPv4 addresses in ip.src[0..4) */
	NET_FRAME_IPV6 = 1u << 3,      /* ip */
	NET_FRAME_FRAGMENT = 1u << 4,  /* IPv4 MF or offset; any IPv6 fragment header */
	NET_FRAME_PORTS = 1u << 5,     /* TCP or UDP header complete: src_port, dst_port */
	NET_FRAME_ICMP = 1u << 6,      /* ICMP or ICMPv6 header complete: icmp_type, icmp_code */
	NET_FRAME_ND_TARGET = 1u << 7, /* neighbor solicitation/advertisement: nd_target */
	NET_FRAME_ND_LLADDR = 1u << 8, /* an ND source/target link-layer option: nd_lladdr */
	/*
	 * IPv4 LSRR/SSRR option, or an IPv6 routing header with segments left:
	 * the destination field is not where the packet ends up.
	 */
	NET_FRAME_SOURCE_ROUTE = 1u << 9,
	NET_FRAME_TCP_FLAGS = 1u << 10, /* tcp_flags */
};

struct net_frame_arp {
	uint16_t op;
	uint8_t sha[NET_ETH_ALEN];
	uint8_t spa[4];
	uint8_t tha[NET_ETH_ALEN];
	uint8_t tpa[4];
};

struct net_frame_ip {
	uint8_t src[16];    /* network order; IPv4 uses the first 4 bytes */
	uint8_t dst[16];
	uint8_t proto;      /* upper-layer protocol: IPv6's after the extension headers */
	uint8_t ttl;        /* IPv6 hop limit */
	uint8_t ext_headers; /* IPv6 extension headers walked */
	bool more_fragments;
	uint16_t frag_offset; /* in bytes */
	uint32_t frag_id;
	size_t l4_off;      /* upper-layer header and its length, in the frame */
	size_t l4_len;
};

struct net_frame {
	enum net_frame_status status;
	uint32_t flags;
	uint8_t dst_mac[NET_ETH_ALEN];
	uint8_t src_mac[NET_ETH_ALEN];
	uint16_t ethertype;       /* the first one, a TPID if tagged */
	uint8_t vlan_tags;        /* 802.1Q/802.1ad tags read (at most 2) */
	uint16_t vlan_tci[2];     /* outer first */
	uint16_t inner_ethertype; /* after the tags */
	struct net_frame_arp arp;
	struct net_frame_ip ip;
	uint16_t src_port;
	uint16_t dst_port;
	uint8_t tcp_flags;
	uint8_t icmp_type;
	uint8_t icmp_code;
	uint8_t nd_target[16];
	uint8_t nd_lladdr[NET_ETH_ALEN];
};

/*
 * Parses buf[0..len) into *out and returns out->status; nothing can fail
 * beyond that, every input has an answer. Ethernet padding after an IP
 * packet is allowed. On anything but NET_FRAME_OK the fields read before the
 * problem stay filled in (the MACs, for counters) and nothing later is.
 *
 * Fragments: a non-first fragment reports its offset and, as ip.proto, the
 * protocol of the fragmented part, with no upper-layer fields; a first
 * fragment reports what of its upper-layer header it holds completely. An
 * IPv6 first fragment must hold the whole extension chain (RFC 7112).
 */
enum net_frame_status net_frame_parse(const uint8_t *buf, size_t len, struct net_frame *out);

/* "ok", "truncated", ... for logs. */
const char *net_frame_status_name(enum net_frame_status s);

/*
 * The virtio-net header (struct virtio_net_hdr_v1, little-endian) in front
 * of every frame on the virtqueues and, with IFF_VNET_HDR, on the tap.
 */
#define NET_VNET_HDR_LEN 12u

enum {
	NET_VNET_F_NEEDS_CSUM = 1,  /* the checksum at csum_start + csum_offset is left to the host */
	NET_VNET_F_DATA_VALID = 2,  /* device to driver only: the checksum was checked */
	NET_VNET_GSO_NONE = 0,
	NET_VNET_GSO_TCPV4 = 1,
	NET_VNET_GSO_UDP = 3,       /* UFO: never accepted */
	NET_VNET_GSO_TCPV6 = 4,
	NET_VNET_GSO_UDP_L4 = 5,    /* USO: never accepted */
	NET_VNET_GSO_ECN = 0x80,
};

/* The offloads a TX frame may ask for: the ones the driver acknowledged. */
enum {
	NET_TX_CSUM = 1u << 0, /* VIRTIO_NET_F_CSUM */
	NET_TX_TSO4 = 1u << 1, /* VIRTIO_NET_F_HOST_TSO4 */
	NET_TX_TSO6 = 1u << 2, /* VIRTIO_NET_F_HOST_TSO6 */
	NET_TX_ECN = 1u << 3,  /* VIRTIO_NET_F_HOST_ECN */
};

/*
 * The smallest gso_size accepted: Linux's floor for a TCP MSS
 * (TCP_MIN_SND_MSS). Smaller would let one 64 KiB frame become thousands of
 * packets on the host.
 */
#define NET_GSO_MIN_SIZE 48u

struct net_vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
};

enum net_vnet_status {
	NET_VNET_OK = 0,
	NET_VNET_BAD_FLAGS,       /* a flag other than NEEDS_CSUM */
	NET_VNET_BAD_GSO_TYPE,    /* UFO, USO, an unknown type, ECN without TCP */
	NET_VNET_NOT_NEGOTIATED,  /* an offload the driver did not acknowledge */
	/*
	 * A GSO frame that is not what its gso_type says, or whose segments
	 * could differ in more than sequence numbers and lengths: TCPV4 on
	 * anything but unfragmented IPv4/TCP (TCPV6 likewise), a TCP header
	 * cut short, an IP length other than the frame's, no NEEDS_CSUM.
	 */
	NET_VNET_GSO_MISMATCH,
	NET_VNET_BAD_GSO_SIZE,    /* under NET_GSO_MIN_SIZE */
	NET_VNET_BAD_HDR_LEN,     /* past the frame */
	/*
	 * csum_start/csum_offset: past the frame, on a frame that is not
	 * unfragmented TCP or UDP, or a checksum field anywhere but the TCP or
	 * UDP header's own (or, for UDP, inside its payload: a tunnel's inner
	 * checksum), so the host's write lands on no byte the firewall judged.
	 */
	NET_VNET_BAD_CSUM,
};

void net_vnet_hdr_get(const uint8_t p[NET_VNET_HDR_LEN], struct net_vnet_hdr *h);
void net_vnet_hdr_put(const struct net_vnet_hdr *h, uint8_t p[NET_VNET_HDR_LEN]);

/*
 * Judges the header the guest put in front of frame[0..len) (parsed into
 * *f by net_frame_parse, status NET_FRAME_OK) against the offloads it may
 * use (NET_TX_*), and on NET_VNET_OK fills *out with the header to hand the
 * host: built from the checked fields alone (fields the frame's kind does
 * not use are zero, hdr_len is the exact length of a GSO frame's headers,
 * num_buffers 0). Pure. A frame asking for nothing (flags 0, GSO_NONE) is
 * always OK, whatever its unused fields say.
 */
enum net_vnet_status net_vnet_check(const struct net_vnet_hdr *in, unsigned offloads, const uint8_t *frame,
				    size_t len, const struct net_frame *f, struct net_vnet_hdr *out);

/* "ok", "bad_flags", ... for logs. */
const char *net_vnet_status_name(enum net_vnet_status s);

#endif
