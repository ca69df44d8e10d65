#ifndef SANDVM_API_SANDBOXD_FLEET_GATEWAY_H
#define SANDVM_API_SANDBOXD_FLEET_GATEWAY_H

/*
 * sandboxd --gateway (docs/fleet.md, "The gateway"): one address for a
 * fleet of workers. It keeps the workers' records from etcd in a table,
 * places creates (reserving the sandbox's id in etcd first), relays every
 * call on a sandbox to its worker, merges lists, and reports the sandboxes
 * of a worker whose lease expired as lost. No VMM, no sandboxes of its own.
 */

#include <stdint.h>
#include <uv.h>

struct auth_keys;
struct gateway;
struct http_request;
struct ssl_ctx_st;

struct gateway_config {
	uv_loop_t *loop;
	const char *etcd_endpoints;   /* --etcd */
	struct ssl_ctx_st *worker_tls; /* TLS 1.3 client context trusting --tls-ca */
	struct auth_keys *keys;       /* the same API keys as the workers' */
	unsigned sample;              /* workers compared per create (0: placement's default) */
	unsigned sync_ms;             /* how often the worker table is read again whole (0: 2000) */
	unsigned relay_idle_ms;       /* a relayed call with no byte either way this long is cut (0: default) */
};

/* 0 with *out, or -errno with a message in err. Starts reading etcd. */
int gateway_new(const struct gateway_config *cfg, struct gateway **out, char *err, size_t errlen);
void gateway_free(struct gateway *g);
/* The http_route_fn of the gateway's listener (ctx: the gateway). */
void gateway_on_headers(struct http_request *req, void *ctx);

#endif
