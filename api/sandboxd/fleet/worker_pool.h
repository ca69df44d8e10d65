#ifndef SANDVM_API_SANDBOXD_FLEET_WORKER_POOL_H
#define SANDVM_API_SANDBOXD_FLEET_WORKER_POOL_H

/*
 * The gateway's kept-alive TLS connections to its workers (docs/fleet.md,
 * "Connections to workers"): a call takes one (a kept one if a quiet one is
 * there, else a new one), has it to itself until its exchange ends, and
 * gives it back only when the request went out whole and the reply was read
 * to its end with keep-alive; anything else closes it. Two calls never
 * share a connection. Kept connections are bounded per worker and in all,
 * and closed after idle_ms unused; one the worker closes meanwhile (or that
 * says anything unasked) is dropped at once.
 *
 * A kept connection is checked before it is handed out (tls_client_idle_ok):
 * a dead one is closed and the next one (or a new connection) taken instead,
 * before any byte of the call was written to it. Once a call's bytes went
 * out, a failure is the call's, never retried.
 */

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct ssl_ctx_st;
struct tls_client;
struct tls_client_ops;
struct worker_pool;

#define WORKER_POOL_PER_WORKER 32u
#define WORKER_POOL_TOTAL 1024u
/* Well under a worker's 60 s keep-alive idle time, so the gateway is the side that closes. */
#define WORKER_POOL_IDLE_MS 20000u

struct worker_pool_limits {
	unsigned per_worker; /* kept connections to one HOST:PORT; 0: WORKER_POOL_PER_WORKER */
	unsigned total;      /* kept connections in all; 0: WORKER_POOL_TOTAL */
	unsigned idle_ms;    /* 0: WORKER_POOL_IDLE_MS */
};

/* limits may be NULL (the defaults). 0 with *out, or -errno. */
int worker_pool_new(uv_loop_t *loop, struct ssl_ctx_st *tls, const struct worker_pool_limits *limits,
		    struct worker_pool **out);
/* Closes the kept connections. Only once no call holds one of its connections (after the loop ran out). */
void worker_pool_free(struct worker_pool *p);

/*
 * A connection to host:port for one call, with ops and arg as its callbacks:
 * *reused true for a kept one, handshaken and ready now (no connected
 * callback comes), false for a new one (connected comes, as for
 * tls_client_open with timeout_ms). 0 with *out, or -errno (no callback).
 */
int worker_pool_get(struct worker_pool *p, const char *host, uint16_t port, unsigned timeout_ms,
		    const struct tls_client_ops *ops, void *arg, struct tls_client **out, bool *reused);
/*
 * The call on c ended cleanly (its request whole, its reply read to the end,
 * keep-alive on both sides): kept for the next call to host:port, or closed
 * past the bounds. The caller drops c either way.
 */
void worker_pool_put(struct worker_pool *p, const char *host, uint16_t port, struct tls_client *c);
/* Kept connections now (all workers), and how many calls were given a kept one since the start. */
unsigned worker_pool_idle(const struct worker_pool *p);
uint64_t worker_pool_reused(const struct worker_pool *p);

#endif
