#ifndef SANDVM_API_SANDBOXD_TUNNELS_H
#define SANDVM_API_SANDBOXD_TUNNELS_H

/*
 * A sandbox's tunnels (docs/ingress.md, "Tunnels"): the guest ports named at
 * create in encrypted_ports, unencrypted_ports and h2_ports. Each tunnel has
 * an opaque label, its TLS endpoint https://LABEL.DOMAIN[:PORT] on the
 * ingress listener (chosen by SNI; bytes relayed raw, no token); an
 * unencrypted one also has a host TCP port from sandboxd --tunnel-ports LO-HI
 * for plain TCP. Allocated at create, kept in the registry, taken back after
 * a daemon restart, released when the sandbox finishes.
 *
 * The model and its lookups (tunnels.c: the create fields, the tunnels part
 * of the lifecycle, GET .../tunnels) are apart from the serving of the
 * connections (tunnel_serve.c, tunnel_relay.c), which only read it.
 *
 * In the lifecycle: sandbox_tunnels_part (sandbox_part.h), last in
 * sandbox_parts, fills sb->tunnels in sandbox_create before the VMM starts
 * and before the sandbox joins d->sandboxes (so the lookups find it from the
 * create's reply on, in state "starting"); its teardown, when the VMM is
 * gone, sets every plain_port to 0, releasing the host ports, while labels
 * stay. A restart restores sb->tunnels from the record before adoption.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ingress.h"

struct sandbox;
struct sandboxd;

enum tunnel_kind {
	TUNNEL_ENCRYPTED,   /* TLS terminated by the daemon, bytes relayed to the guest port */
	TUNNEL_UNENCRYPTED, /* plain TCP on a host port, and a TLS endpoint too */
	TUNNEL_H2,          /* TLS with ALPN h2, relayed to an h2c server in the guest */
};

#define TUNNELS_MAX 16

struct sandbox_tunnel {
	uint16_t port; /* the guest port: 127.0.0.1:port in the sandbox */
	enum tunnel_kind kind;
	char label[INGRESS_LABEL_LEN + 1]; /* LABEL of LABEL.DOMAIN, lower case */
	uint16_t plain_port;               /* TUNNEL_UNENCRYPTED: the host's TCP port; else 0 */
	void *listener;                    /* the plain port's listener while open (tunnel_sandbox.c) */
};

struct sandbox_tunnels {
	struct sandbox_tunnel t[TUNNELS_MAX];
	unsigned n;
};

/* The sandbox and tunnel whose label this is (any state), or NULL. */
struct sandbox *tunnel_find_label(struct sandboxd *d, const char *label, const struct sandbox_tunnel **t);
/* The sandbox and tunnel served on the host's TCP port plain_port (any state), or NULL. */
struct sandbox *tunnel_find_plain_port(struct sandboxd *d, uint16_t plain_port, const struct sandbox_tunnel **t);

struct sandbox_spec;
struct api_call;

/* The tunnel of sb on guest port port, or NULL. */
const struct sandbox_tunnel *tunnel_of_port(const struct sandbox *sb, uint16_t port);
/*
 * Before a create: false (400 naming the field, in field and msg) when the
 * spec asks for tunnels this daemon cannot give (no --ingress; an
 * unencrypted port without --tunnel-ports).
 */
bool tunnels_admit(const struct sandboxd *d, const struct sandbox_spec *spec, char *field, size_t fieldlen, char *msg,
		   size_t msglen);
/* The lowest free port of --tunnel-ports above after for sb, or 0. */
uint16_t tunnel_plain_port_after(struct sandboxd *d, const struct sandbox *sb, uint16_t after);
/* GET /v1/sandboxes/ID/tunnels: {"tunnels": {"PORT": {...}}}. */
void tunnels_list(struct sandbox *sb, struct api_call *call);

#endif
