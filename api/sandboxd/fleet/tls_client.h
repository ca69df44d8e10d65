#ifndef SANDVM_API_SANDBOXD_FLEET_TLS_CLIENT_H
#define SANDVM_API_SANDBOXD_FLEET_TLS_CLIENT_H

/*
 * A TLS 1.3 client connection on the libuv loop (the gateway's connections
 * to workers): TCP to HOST:PORT, a handshake that verifies the worker's
 * certificate against the context's CA and the host (its IP address or DNS
 * name), then plaintext both ways over memory BIOs, as http_conn.c does on
 * the server side. Connect and handshake have one deadline together.
 *
 * Callbacks run on the loop; none after tls_client_close. After
 * connected(err < 0) or closed() the client frees itself: its owner drops
 * the pointer and never closes it. Bytes written before the handshake ends
 * wait and go right after it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct ssl_ctx_st;
struct tls_client;

struct tls_client_ops {
	/* The handshake is done (err 0), or the connection failed before (err < 0; nothing follows). */
	void (*connected)(void *ctx, int err);
	/* Plaintext from the server. */
	void (*data)(void *ctx, const char *data, size_t len);
	/* The server ended (err 0: EOF or close_notify) or the connection broke; once, after connected(0). */
	void (*closed)(void *ctx, int err);
	/* Everything written went out (for back-pressure). May be NULL. */
	void (*drained)(void *ctx);
};

/*
 * host: an IP address (IPv6 without brackets) or a DNS name. 0 with *out, or
 * -errno (no callback).
 */
int tls_client_open(uv_loop_t *loop, struct ssl_ctx_st *ctx, const char *host, uint16_t port,
		    unsigned timeout_ms, const struct tls_client_ops *ops, void *arg, struct tls_client **out);
/* Queues plaintext; returns the bytes queued and not yet written. */
size_t tls_client_write(struct tls_client *c, const void *data, size_t len);
/* Stops and starts handing data to ops (and reading from the socket). */
void tls_client_pause(struct tls_client *c);
void tls_client_resume(struct tls_client *c);
/* Another owner's callbacks from now on (a kept connection changing hands: worker_pool.h). */
void tls_client_set_ops(struct tls_client *c, const struct tls_client_ops *ops, void *arg);
/*
 * Whether a handshaken connection is quiet and still open as far as can be
 * seen without blocking: nothing queued either way, no byte waiting in the
 * socket (a peer's close or anything unasked-for makes it false).
 */
bool tls_client_idle_ok(struct tls_client *c);
/* Closes now, no callbacks after; freed once its handles closed. */
void tls_client_close(struct tls_client *c);

#endif
