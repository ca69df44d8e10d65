#ifndef SANDVM_API_SANDBOXD_NET_POLICY_H
#define SANDVM_API_SANDBOXD_NET_POLICY_H

/*
 * The pure parts of sandbox networks (net.c does the I/O): the operator's
 * opt-in to private networks (--allow-private-egress) and what a VMM's reply
 * to a policy change confirms. Unit-tested and linked into the tests.
 */

#include <stddef.h>

struct cJSON;

enum net_mode { NET_OPEN, NET_BLOCK, NET_ALLOWLIST };

/* Prefixes --allow-private-egress may name in all: a worker's networks, not a list to look things up in. */
#define NET_PRIVATE_MAX 64

/*
 * Adds the prefixes of one --allow-private-egress argument ("CIDR" or
 * "CIDR,CIDR,...") to list, a cJSON array of their canonical text. Each must
 * parse strictly (cidr_parse) and lie inside a private range
 * (cidr_is_private); a prefix already in list is not added twice. 0, or
 * -EINVAL with a message in err naming the prefix and why (nothing is added
 * then), -E2BIG past NET_PRIVATE_MAX, -ENOMEM.
 */
int net_private_add(struct cJSON *list, const char *arg, char *err, size_t errlen);

/* "open", "block", "allowlist"; net_mode_parse: 0, or -EINVAL for any other word (m untouched). */
const char *net_mode_word(enum net_mode m);
int net_mode_parse(const char *word, enum net_mode *m);

/*
 * What a policy change came to, from vmm_control_call's result and the VMM's
 * reply line: 0 with *mode the mode the VMM says is now in force (its
 * "net":{"mode"}); -ETIMEDOUT when the VMM did not answer in time; -EPROTO
 * when it could not be reached, refused the request, or answered without
 * saying which mode is in force. For a status call ({"op":"net"}) the same.
 * On failure err says what happened and *mode is untouched.
 */
int net_policy_outcome(int call_result, const char *reply, enum net_mode *mode, char *err, size_t errlen);

#endif
