#ifndef SANDVM_API_SANDBOXD_FLEET_WORKER_CALL_H
#define SANDVM_API_SANDBOXD_FLEET_WORKER_CALL_H

/*
 * One whole API call from the gateway to a worker: a request with a small
 * body, a reply read in full (bounded) within a deadline, over a connection
 * of the worker pool (worker_pool.h: a kept one, or a new one), given back
 * when the reply ended where its framing says with keep-alive, closed
 * otherwise (an error, a timeout, a cancel). For the calls the gateway looks
 * into: creates (a 429 tries the next worker), lists (merged), a sandbox's
 * object, snapshot images. Calls whose bodies stream go through
 * gateway_relay.h instead.
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct worker_call;
struct worker_pool;

#define WORKER_CALL_REPLY_MAX (8u << 20)

/*
 * err 0: the worker answered status with body (len bytes, valid during the
 * call); err < 0: no answer (-ETIMEDOUT, -ECONNREFUSED, -EPERM for a
 * certificate that does not verify, -EPROTO for a reply that does not parse,
 * -EMSGSIZE over WORKER_CALL_REPLY_MAX). Once; the call is gone after it.
 */
typedef void (*worker_call_cb)(void *ctx, int err, int status, const char *body, size_t len);

struct worker_call_request {
	const char *host; /* the worker's, from its record */
	uint16_t port;
	const char *method, *target; /* "POST", "/v1/sandboxes" */
	const char *authorization;   /* the client's header value as it came, or NULL */
	const char *body;            /* JSON, or NULL */
	size_t body_len;
	unsigned timeout_ms; /* the whole call */
};

/* 0 with *out, or -errno (no callback). */
int worker_call_start(uv_loop_t *loop, struct worker_pool *pool, const struct worker_call_request *rq,
		      worker_call_cb cb, void *ctx, struct worker_call **out);
/* No callback after this. */
void worker_call_cancel(struct worker_call *w);

#endif
