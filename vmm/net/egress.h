#ifndef SANDVM_VMM_NET_EGRESS_H
#define SANDVM_VMM_NET_EGRESS_H

/*
 * The VMM's egress filter for one virtio-net device: the policy as JSON
 * (from --net-policy FILE, or a control-socket net-policy request naming a
 * file), built into a firewall policy (firewall.h), the check run on every
 * frame the guest sends, counters per verdict, and a rate-limited log of what
 * was dropped. A new policy replaces the old one between two frames: flows
 * to addresses it no longer allows stop at their next frame.
 *
 * Policy JSON:
 *   {"ip": "10.200.0.2", "gateway": "10.200.0.1", "gateway_mac": "aa:bb:cc:dd:ee:ff",
 *    "ip6": "fd00::2", "gateway6": "fd00::1",              (optional, together)
 *    "mode": "open" | "block" | "allowlist",
 *    "allow": ["198.51.100.0/24", "2001:db8::/32", ...],    (allowlist mode only)
 *    "deny_host": ["192.0.2.1/32", ...],                    (the host's addresses: always denied)
 *    "deny_sandboxes": ["10.200.0.0/16", ...],              (other sandboxes: always denied)
 *    "allow_private": ["10.77.0.0/24", "fd77::/64", ...]}   (the operator's opt-in, any mode)
 * The MAC is the device's own (--net mac=). The private ranges (lib/cidr.h)
 * are denied in every mode but where "allow_private" names them, each of its
 * entries inside one (anything else refuses the policy), or an "allow"
 * entry lies inside one: the user named that network explicitly.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/firewall.h"

struct cJSON;
struct cidr_set;

#define NET_POLICY_MAX_BYTES (16u * 1024 * 1024)
#define NET_POLICY_MAX_CIDRS 200000u

struct net_egress {
	const uint8_t *mac; /* the device's */
	struct fw_policy *policy;
	struct cidr_set *allow, *deny;
	struct cidr_set *private_open; /* the firewall's private_open */
	enum fw_mode mode;
	size_t nallow, ndeny, nprivate; /* nprivate: "allow_private" entries */
	struct fw_counters counters;
	uint64_t log_second;
	unsigned logged_this_second;
};

/* Parses and builds a policy (pure apart from allocation); replaces e's on success only. */
int net_egress_load(struct net_egress *e, const char *json, size_t len, char *err, size_t errlen);
int net_egress_load_file(struct net_egress *e, const char *path, char *err, size_t errlen);
/* The same from a descriptor (read from offset 0; it stays the caller's); label names it in messages. */
int net_egress_load_fd(struct net_egress *e, int fd, const char *label, char *err, size_t errlen);
/* Judges one frame without a virtio-net header: counts the verdict, logs some drops, says pass or not. */
bool net_egress_check(void *ctx, const uint8_t *frame, size_t len);
/*
 * net_egress_fn for virtio/net.h: the same for a frame and the virtio-net
 * header in front of it (fw_check_tx), one count per frame however many
 * segments a GSO frame becomes; *out is the header to write to the tap.
 */
bool net_egress_check_tx(void *ctx, const uint8_t *frame, size_t len, const struct net_vnet_hdr *in,
			 unsigned offloads, struct net_vnet_hdr *out);
/* {"mode", "allow": N, "deny": N, "allow_private": N, "counters": {"pass_open": N, ...}} */
void net_egress_status(const struct net_egress *e, struct cJSON *out);
void net_egress_destroy(struct net_egress *e);

#endif
