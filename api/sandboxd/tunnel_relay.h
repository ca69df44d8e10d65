#ifndef SANDVM_API_SANDBOXD_TUNNEL_RELAY_H
#define SANDVM_API_SANDBOXD_TUNNEL_RELAY_H

/*
 * A tunnel connection's byte pump (docs/ingress.md, "How a tunnel connection
 * goes"): a client's TCP connection (a plain host port) or an http_conn handed
 * over after its TLS handshake, joined to a guest_relay stream to 127.0.0.1:PORT
 * in the guest. No parsing: bytes go both ways as they come.
 *
 * Bounds: client bytes that arrive before the guest side is open are kept up
 * to max_queued; at most max_queued bytes wait towards either side before the
 * other side's reading pauses; a connection without a byte either way for
 * idle_timeout_ms closes. Half-closes pass both ways over plain TCP (over TLS
 * the guest's end closes the connection once its bytes went out). A guest
 * port with nothing listening closes the client at once, without a byte.
 *
 * The relay knows nothing of sandboxes: its owner is told through
 * tunnel_relay_ops.closed when it ends, and ends it with tunnel_relay_drop.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define TUNNEL_RELAY_DEFAULT_MAX_QUEUED (256u * 1024)
#define TUNNEL_RELAY_DEFAULT_IDLE_TIMEOUT_MS 600000u
#define TUNNEL_RELAY_DEFAULT_CONNECT_TIMEOUT_MS 10000u

struct http_conn;
struct tunnel_relay;

struct tunnel_relay_ops {
	/*
	 * The relay ended: err 0 both sides ended, -ECONNREFUSED nothing listens
	 * on the guest port, -ETIMEDOUT idle (or no answer from the guest in
	 * time), -ECANCELED dropped, another -errno a failed side. Called once,
	 * after drop too; the relay is freed when it returns.
	 */
	void (*closed)(void *ctx, struct tunnel_relay *r, int err);
};

struct tunnel_relay_config {
	uv_loop_t *loop;
	const char *vsock_path; /* the VMM's vsock socket (CONNECT 1025) */
	uint16_t port;          /* 127.0.0.1:port in the guest */
	unsigned connect_timeout_ms;
	unsigned idle_timeout_ms;
	size_t max_queued;
	const struct tunnel_relay_ops *ops;
	void *ctx;
};

/* Accepts one connection from a listening TCP stream and relays it. 0 with *out, or -errno (the connection, if any, closed; no callback). */
int tunnel_relay_accept(const struct tunnel_relay_config *cfg, uv_stream_t *listener, struct tunnel_relay **out);
/* Relays a TLS connection whose handshake is done (http_conn_take). 0 with *out, or -errno (c aborted; no callback). */
int tunnel_relay_start_conn(const struct tunnel_relay_config *cfg, struct http_conn *c, struct tunnel_relay **out);
/* Closes both sides now; closed(-ECANCELED) follows from the loop. */
void tunnel_relay_drop(struct tunnel_relay *r);
/* Bytes queued towards the client and towards the guest (pending included), for tests and stats. */
void tunnel_relay_queued(const struct tunnel_relay *r, size_t *to_client, size_t *to_guest);

#endif
