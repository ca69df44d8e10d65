#ifndef SANDVM_VMM_NET_FIREWALL_H
#define SANDVM_VMM_NET_FIREWALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/frame.h"

/*
 * The egress firewall: one verdict per frame the guest sends, from a policy
 * built once per sandbox. fw_check() is pure (no I/O, no allocation, no
 * locks) and may run on several threads against one policy.
 *
 * Rules, first match wins:
 *  1. unparsable (truncated or malformed, net/frame.h)        DROP_MALFORMED
 *     (fw_check_tx) a virtio-net header that asks for an offload not
 *     negotiated or that the frame cannot have (net_vnet_check)
 *                                                            DROP_OFFLOAD
 *  2. 802.1Q/802.1ad tagged: the guest has no VLANs           DROP_VLAN
 *  3. Ethernet source other than the sandbox's MAC           DROP_SPOOF_MAC
 *  4. neither ARP, IPv4 nor IPv6                             DROP_ETHERTYPE
 *  5. ARP: a request or reply whose sender is the sandbox's MAC and IPv4,
 *     asking for the gateway's IPv4 (request: to the broadcast or gateway
 *     MAC) or answering the gateway (reply: to the gateway's MAC and IPv4)
 *                                                            PASS_ARP
 *     any other ARP                                          DROP_ARP
 *  6. IP source other than the sandbox's address             DROP_SPOOF_IP
 *     except: the link-local address made from the MAC (EUI-64) for ND
 *     only, and :: for a DAD neighbor solicitation only.
 *  7. ICMPv6 neighbor discovery (types 133-137):
 *     router solicitation to ff02::2 or the gateway; neighbor solicitation
 *     for a gateway address, to it or its solicited-node group; neighbor
 *     advertisement of the sandbox's own address to the gateway; DAD for
 *     the sandbox's own addresses. Each with the destination MAC matching
 *     the destination IP, any link-layer option naming the sandbox's MAC,
 *     code 0 and unfragmented.                               PASS_ND
 *     any other ND                                           DROP_ND
 *     "Gateway addresses" are the configured gateway IPv6 and the
 *     link-local address made from the gateway's MAC, the one a router's
 *     advertisements come from.
 *  8. FW_BLOCK mode                                          DROP_BLOCKED
 *  9. IPv4 source route options or an IPv6 routing header with segments
 *     left: the packet would go on past the destination judged here
 *                                                            DROP_SOURCE_ROUTE
 * 10. destination in the built-in ranges, then the deny list, then the
 *     private ranges: HOST, OTHER_SANDBOX, LINK_LOCAL, METADATA, MULTICAST,
 *     BROADCAST, RESERVED, PRIVATE by which prefix matched (longest first:
 *     169.254.169.254 is METADATA, the rest of 169.254.0.0/16 LINK_LOCAL).
 *     The built-in ranges and the deny list apply in every mode and whatever
 *     the allowlist or private_open say, however long their prefixes.
 *     Built in: HOST 0.0.0.0/8 127.0.0.0/8 ::/128 ::1/128; LINK_LOCAL
 *     169.254.0.0/16 fe80::/10; METADATA 169.254.169.254 100.100.100.200
 *     (Alibaba) fd00:ec2::254; MULTICAST 224.0.0.0/4 ff00::/8; RESERVED
 *     240.0.0.0/4, and 64:ff9b:1::/48 outside 64:ff9b:1::/96 (below);
 *     BROADCAST 255.255.255.255.
 *     PRIVATE: 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10
 *     fc00::/7 (cidr_private_ranges), the worker's own networks, in every
 *     mode, except where private_open holds the destination (the operator's
 *     opt-in and the allowlist's entries that lie inside a private range,
 *     egress.h).
 * 11. destination MAC: broadcast -> DROP_BROADCAST, multicast ->
 *     DROP_MULTICAST, a unicast MAC other than the gateway's -> DROP_DST_MAC
 *     (on a tap or bridge that frame would reach whoever owns that MAC).
 * 12. FW_OPEN                                                PASS_OPEN
 *     FW_ALLOWLIST: destination in the allowlist             PASS_ALLOWLIST
 *                   otherwise                                DROP_NOT_ALLOWED
 *
 * IPv6 destinations that embed an IPv4 address are judged as that IPv4
 * address too: IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96, the NAT64
 * prefixes 64:ff9b::/96 and 64:ff9b:1::/96 (the last 32 bits), 6to4
 * 2002::/16 (bytes 2..5) and Teredo 2001::/32 (the server in bytes 4..7 and
 * the client in the last 32 bits, inverted: both). A built-in, deny or
 * private match on any form drops; the allowlist passes the IPv6 address
 * itself, or its IPv4 form when every address it carries is allowed. The
 * rest of the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) is RESERVED:
 * where its IPv4 sits depends on the prefix length of a translator this
 * firewall cannot see.
 *
 * IP fragments are judged by their destination like any other packet, the
 * first and the later ones alike. This is deliberate: no rule looks at
 * ports, so nothing a fragment hides can change a verdict, and the
 * firewall keeps no reassembly state that a guest could exhaust.
 */

struct cidr;
struct cidr_set;
struct fw_policy;

enum fw_mode {
	FW_OPEN,      /* anywhere but the deny list, built-in and unopened private ranges */
	FW_BLOCK,     /* nothing but ARP/ND with the gateway */
	FW_ALLOWLIST, /* only the allowlist, minus the deny list */
};

enum fw_verdict_reason {
	FW_PASS_OPEN,
	FW_PASS_ALLOWLIST,
	FW_PASS_ARP,
	FW_PASS_ND,
	FW_DROP_BLOCKED,
	FW_DROP_NOT_ALLOWED,
	FW_DROP_SPOOF_MAC,
	FW_DROP_SPOOF_IP,
	FW_DROP_HOST,
	FW_DROP_LINK_LOCAL,
	FW_DROP_METADATA,
	FW_DROP_OTHER_SANDBOX,
	FW_DROP_MULTICAST,
	FW_DROP_BROADCAST,
	FW_DROP_VLAN,
	FW_DROP_ETHERTYPE,
	FW_DROP_MALFORMED,
	FW_DROP_ARP,
	FW_DROP_ND,
	FW_DROP_DST_MAC,       /* unicast to a MAC other than the gateway's */
	FW_DROP_SOURCE_ROUTE,  /* IPv4 LSRR/SSRR, IPv6 routing header with segments left */
	FW_DROP_RESERVED,      /* 240.0.0.0/4 (not 255.255.255.255); 64:ff9b:1::/48 outside its /96 */
	FW_DROP_PRIVATE,       /* 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 not opened */
	FW_DROP_OFFLOAD,       /* a virtio-net header the frame cannot have (net_vnet_check) */
	FW_REASON_COUNT
};

/* Values in the caller's sets: what cidr_set_build() is given. */
#define FW_ALLOW 1u
#define FW_DENY_HOST 2u          /* the host's addresses, API listeners: DROP_HOST */
#define FW_DENY_OTHER_SANDBOX 3u /* other sandboxes' subnet: DROP_OTHER_SANDBOX */

struct fw_policy_config {
	enum fw_mode mode;
	uint8_t mac[6];          /* the sandbox's, unicast */
	uint8_t ipv4[4];         /* network order */
	bool has_ipv6;
	uint8_t ipv6[16];
	uint8_t gateway_mac[6];  /* unicast */
	uint8_t gateway_ipv4[4];
	bool has_gateway_ipv6;
	uint8_t gateway_ipv6[16];
	/*
	 * Borrowed, not copied: both sets must outlive the policy. NULL is
	 * empty. Only allowlist entries with the value FW_ALLOW allow; every
	 * deny entry denies, as OTHER_SANDBOX for FW_DENY_OTHER_SANDBOX and as
	 * HOST for FW_DENY_HOST or any other value.
	 */
	const struct cidr_set *allow;
	const struct cidr_set *deny;
	/*
	 * Borrowed likewise, NULL is empty: the parts of the private ranges the
	 * sandbox may reach (entries with FW_ALLOW), in every mode but block. It
	 * only lifts FW_DROP_PRIVATE: the built-in ranges and the deny list stay,
	 * and in FW_ALLOWLIST mode the allowlist must still name the destination.
	 */
	const struct cidr_set *private_open;
};

/*
 * Checks cfg and builds the policy. -EINVAL with a message in err for a bad
 * mode, a zero or multicast MAC, a zero IPv4 address, a sandbox address equal
 * to the gateway's, a non-empty allowlist in FW_BLOCK or FW_OPEN mode (a
 * caller that says "block" and "allow these" at once has a bug, and guessing
 * which it meant would open or close the sandbox by accident); -ENOMEM.
 * *out is written only on success.
 */
int fw_policy_build(const struct fw_policy_config *cfg, struct fw_policy **out, char *err,
		    size_t errlen);
void fw_policy_free(struct fw_policy *p);

/*
 * Builds a config's private_open: the operator's opt-in (noptin prefixes,
 * each inside a private range, else -EINVAL naming it) and every allowlist
 * entry that lies inside a private range (cidr_is_private: 10.1.0.0/16 or
 * 10.0.0.0/8, not 0.0.0.0/0 or 8.0.0.0/5), an explicit choice of that
 * network. Either list may be empty. 0, -EINVAL or -ENOMEM; *out is written
 * only on success and is the caller's to free (cidr_set_free).
 */
int fw_private_open_build(const struct cidr *optin, size_t noptin, const struct cidr *allow, size_t nallow,
			  struct cidr_set **out, char *err, size_t errlen);

/* The verdict on one frame the guest sent (no FCS, no virtio-net header). */
enum fw_verdict_reason fw_check(const struct fw_policy *p, const uint8_t *frame, size_t len);

/*
 * The same for a frame with the virtio-net header the guest put in front of
 * it (in) and the offloads it may use (NET_TX_*): one parse, the header
 * judged against the frame (net_vnet_check; its status in *vnet unless
 * NULL), then the rules above. A GSO frame is judged once, by its headers:
 * net_vnet_check passes only TCP GSO frames whose segments all carry the
 * same Ethernet and IP headers and TCP ports, and no rule reads what
 * differs between segments (IP id and length, sequence numbers, TCP flags,
 * checksums), so every segment would get this verdict. *out is the header
 * to hand the host, all zero unless the header passed.
 */
enum fw_verdict_reason fw_check_tx(const struct fw_policy *p, const uint8_t *frame, size_t len,
				   const struct net_vnet_hdr *in, unsigned offloads, struct net_vnet_hdr *out,
				   enum net_vnet_status *vnet);

bool fw_reason_is_pass(enum fw_verdict_reason r);

/*
 * Stable snake_case names for counters and logs: "pass_open",
 * "drop_spoof_ip", ...; "invalid" for a value out of range.
 */
const char *fw_reason_name(enum fw_verdict_reason r);

/* Verdicts per reason; one per device, which updates it from one thread. */
struct fw_counters {
	uint64_t count[FW_REASON_COUNT];
};

/* Counts r; a value out of range is counted as DROP_MALFORMED rather than lost. */
void fw_counters_add(struct fw_counters *c, enum fw_verdict_reason r);

#endif
