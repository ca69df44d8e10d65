#ifndef SANDVM_API_SANDBOXD_NET_H
#define SANDVM_API_SANDBOXD_NET_H

/*
 * A sandbox's network (net.c): a tap and a /30 out of 10.200.0.0/16, NAT, and
 * the VMM's egress policy (GET and PUT .../network). Its part of the
 * lifecycle is sandbox_net_part (sandbox_part.h).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "net_policy.h"

struct cJSON;
struct sandbox;
struct sandboxd;
struct api_call;

/* Sandbox networks: one /30 each out of 10.200.0.0/16. */
#define SANDBOXD_NET_POOL_SIZE 16384

/* A sandbox's network (net.c); index 0: none. */
struct sandbox_net {
	unsigned index;
	char tap[16];
	uint8_t gateway_mac[6];
	bool has_v6;
	enum net_mode mode;  /* the one the VMM confirmed */
	struct cJSON *allow; /* the allowlist's CIDR strings, with NET_ALLOWLIST */
	bool changing;       /* a policy change waits for the VMM's answer */
};

int net_init(struct sandboxd *d);

/*
 * A template VM's network device (templates.c): a persistent tap of its own
 * with no address, nothing routed or NATed to it, and in dir/policy.json an
 * egress policy that blocks everything (documentation addresses, never a
 * sandbox's). The clones restored from the template get their own tap,
 * policy and addresses. 0 with the tap's name, or -errno with err.
 */
int net_template_make(const char *key, const char *dir, char tap[16], char *err, size_t errlen);
void net_template_release(const char *tap);
const char *net_mode_name(const struct sandbox *sb);
/*
 * The address of host (1: the gateway, the tap's end; 2: the guest) in sb's
 * network, IPv4 or IPv6 ("" when it has none).
 */
void net_sandbox_address(const struct sandbox *sb, unsigned host, bool v6, char *out, size_t len);
/* Whether addr (a struct in_addr for AF_INET, else a struct in6_addr) lies in the sandboxes' pools. */
bool net_in_sandbox_pool(int family, const void *addr);
void net_get(struct sandbox *sb, struct api_call *call);
void net_put(struct sandbox *sb, struct api_call *call);

#endif
