#ifndef SANDVM_API_SANDBOXD_INGRESS_H
#define SANDVM_API_SANDBOXD_INGRESS_H

/*
 * A sandbox's ingress (ingress.c, docs/ingress.md): its connect tokens and
 * one opaque label per port it serves, which names the origin
 * https://LABEL.DOMAIN[:PORT] of the ingress listener. The part plugs into
 * the lifecycle (sandbox_part.h): tokens and labels are kept in the
 * sandbox's record (hashes only) and end with the sandbox.
 */

#include <stdint.h>

#include "connect_token.h"
#include "ingress_proxy.h"

struct sandbox;
struct sandboxd;
struct api_call;

#define INGRESS_PORTS_MAX 16
#define INGRESS_LABEL_LEN 16

struct sandbox_ingress {
	struct connect_tokens tokens;
	struct {
		uint16_t port;
		char label[INGRESS_LABEL_LEN + 1];
	} ports[INGRESS_PORTS_MAX];
	unsigned nports;
	struct ingress_link *links; /* open ingress connections to the sandbox */
	unsigned nlinks;
};

/* POST .../connect-tokens {"user_metadata", "port", "ttl"}: 201 {"id", "url", "token", ...}. */
void ingress_token_create(struct sandbox *sb, struct api_call *call);
/* GET .../connect-tokens: no secrets. */
void ingress_token_list(struct sandbox *sb, struct api_call *call);
/* DELETE .../connect-tokens/TID. */
void ingress_token_delete(struct sandbox *sb, const char *id, struct api_call *call);
/* A fresh random label (lower-case hex), unique across the daemon's ports and tunnels; 0 or -EIO. */
int ingress_label_new(struct sandboxd *d, char out[INGRESS_LABEL_LEN + 1]);
/* The sandbox and port a label names, or NULL. */
struct sandbox *ingress_find_label(struct sandboxd *d, const char *label, uint16_t *port);

/* The daemon's side of the ingress proxy (ctx: the struct sandboxd): labels, tokens, caps, activity. */
extern const struct ingress_proxy_ops sandboxd_ingress_ops;
#define INGRESS_DEFAULT_MAX_CONNECTIONS 512

#endif
