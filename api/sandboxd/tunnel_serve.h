#ifndef SANDVM_API_SANDBOXD_TUNNEL_SERVE_H
#define SANDVM_API_SANDBOXD_TUNNEL_SERVE_H

/*
 * Tunnel connections on the ingress TLS listener (docs/ingress.md, "How a
 * tunnel connection goes"): a TLS server name LABEL.DOMAIN whose label is a
 * tunnel's picks the ALPN protocol by the tunnel's kind (h2 for h2 tunnels,
 * required; http/1.1 when offered for the others) and, once the handshake is
 * done, hands the connection to a tunnel_relay: no HTTP, no token. Any other
 * name keeps the connect-token path (http/1.1 when ALPN is offered).
 * Unencrypted tunnels' plain TCP connections come in through
 * tunnel_serve_accept.
 *
 * Knows nothing of sandboxes: an owner answers through tunnel_serve_ops which
 * label is a tunnel, admits each connection (its caps, its state) and hears
 * when it ends; tunnel_serve_drop_owner ends every connection of one owner.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "tunnels.h"

#define TUNNEL_DEFAULT_MAX_CONNECTIONS 256
#define TUNNEL_DEFAULT_IDLE_TIMEOUT_S 600

struct http_server;
struct ssl_ctx_st;
struct tunnel_conn;

/* Where an admitted connection goes. */
struct tunnel_target {
	char vsock_path[320]; /* the VMM's vsock socket */
	uint16_t port;        /* 127.0.0.1:port in the guest */
	void *owner;          /* counts the connection until release */
};

struct tunnel_serve_ops {
	/* During a handshake: 0 with the kind of label's tunnel, or -ENOENT (not a tunnel). */
	int (*kind_of)(void *ctx, const char *label, enum tunnel_kind *kind);
	/*
	 * A connection to the tunnel of label (TLS) or of host port plain_port
	 * (label NULL): 0 with target filled (counted by its owner until
	 * release), -ENOENT no such tunnel, -EAGAIN its sandbox is not running,
	 * -EMFILE the sandbox's connection cap.
	 */
	int (*admit)(void *ctx, const char *label, uint16_t plain_port, struct tunnel_target *target);
	void (*release)(void *ctx, void *owner);
};

struct tunnel_serve {
	uv_loop_t *loop;
	char domain[256]; /* lower case */
	unsigned max_connections; /* per tunnel (--tunnel-max-connections) */
	unsigned idle_timeout_ms; /* --tunnel-idle-timeout */
	unsigned connect_timeout_ms;
	size_t max_queued;
	const struct tunnel_serve_ops *ops;
	void *ctx;
	struct tunnel_conn *conns;
	unsigned long long served, refused;
};

/* 0, or -EINVAL for a domain that is not a host name. */
int tunnel_serve_init(struct tunnel_serve *ts, uv_loop_t *loop, const char *domain, const struct tunnel_serve_ops *ops,
		      void *ctx);
/* Serves tunnel names on srv (the ingress server) whose TLS context is tls: its ALPN choice and handshakes. */
void tunnel_serve_attach(struct tunnel_serve *ts, struct http_server *srv, struct ssl_ctx_st *tls);
/* A plain TCP connection on an unencrypted tunnel's host port. 0 or -errno (closed at once). */
int tunnel_serve_accept(struct tunnel_serve *ts, uv_stream_t *listener, uint16_t plain_port);
/* Ends every connection admitted for owner (its release follows each). */
void tunnel_serve_drop_owner(struct tunnel_serve *ts, void *owner);
/* Ends every connection. */
void tunnel_serve_destroy(struct tunnel_serve *ts);

/*
 * The ALPN protocol for a handshake to a tunnel of kind (kind < 0: a
 * connect-token name) from the client's list in (wire format): 0 with *out,
 * 1 when none is chosen (the handshake goes on without ALPN), -EPROTO when
 * the handshake must fail (h2 not offered for an h2 tunnel; http/1.1 not
 * offered, with ALPN, for a connect-token name).
 */
int tunnel_alpn_choose(int kind, const unsigned char *in, unsigned inlen, const unsigned char **out,
		       unsigned char *outlen);

#endif
