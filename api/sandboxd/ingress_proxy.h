#ifndef SANDVM_API_SANDBOXD_INGRESS_PROXY_H
#define SANDVM_API_SANDBOXD_INGRESS_PROXY_H

/*
 * The ingress proxy (docs/ingress.md): HTTPS connections to
 * https://LABEL.DOMAIN[:PORT] are served by an http_server of their own; each
 * request is checked on its own (SNI and Host agree, the label is known, a
 * connect token of that label's port is presented) and forwarded over the
 * guest agent's relay port (guest_relay.h) to 127.0.0.1:PORT in the sandbox,
 * with a head rebuilt by ingress_head.h. The response comes back with its
 * fields filtered; a WebSocket handshake answered 101 turns the connection
 * into a byte relay.
 *
 * The proxy knows nothing of sandboxes: an owner (ingress.c in sandboxd, a
 * fake in tests and benchmarks) decides through ingress_proxy_ops which
 * label and token lead where, counts the connections it granted, and drops
 * them when a token is revoked or a sandbox ends. Everything runs on the
 * libuv loop; the guest's bytes are bounded (head size, time, queued bytes).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http_conn.h"
#include "ingress_head.h"

#define INGRESS_TOKEN_ID_MAX 24
#define INGRESS_DEFAULT_RESPONSE_TIMEOUT_MS 60000
#define INGRESS_DEFAULT_CONNECT_TIMEOUT_MS 10000
/* Spare per-request buffers (about 60 KiB each) the proxy keeps for the next requests. */
#define INGRESS_SPARE_BUFS 32

/* A client connection as an owner sees it: kept in the owner's list while granted. */
struct ingress_link {
	struct ingress_link *prev, *next;
	void *owner;                          /* what authorize attached it to, or NULL */
	char token_id[INGRESS_TOKEN_ID_MAX]; /* the token of its latest request */
};

/* Where a granted request goes, and what the server there is told. */
struct ingress_grant {
	char vsock_path[320]; /* the VMM's vsock socket (CONNECT 1025) */
	uint16_t port;        /* 127.0.0.1:port in the guest */
	char verified[INGRESS_METADATA_MAX + 1];
	char token_id[INGRESS_TOKEN_ID_MAX];
	size_t token_index; /* the candidate accepted, removed from what is forwarded */
};

struct ingress_proxy_ops {
	/*
	 * May a request for label, carrying these token candidates, go on?
	 * 0 with grant filled and link attached to its owner (the connection
	 * counts there until release), or an HTTP status with a message in why:
	 * 401 no candidate is a live token of the label's port, 404 unknown
	 * label, 409 its sandbox is not running, 429 its connection cap.
	 */
	int (*authorize)(void *ctx, const char *label, const struct ingress_token_candidate *cand, size_t n,
			 struct ingress_link *link, struct ingress_grant *grant, char *why, size_t cap);
	/* The connection ends: link leaves its owner (link->owner is still set). */
	void (*release)(void *ctx, struct ingress_link *link);
};

struct ingress_proxy {
	struct http_server server; /* its tls is the listener's TLS 1.3 context */
	char domain[256];          /* lower case */
	unsigned response_timeout_ms; /* for the guest's response head (504 after it) */
	unsigned connect_timeout_ms;  /* for the relay's answer */
	unsigned max_queued;          /* bytes queued one way before the other side is paused */
	const struct ingress_proxy_ops *ops;
	void *ctx;
	unsigned long long requests, upgrades, refused;
	void *spare_bufs[INGRESS_SPARE_BUFS]; /* a request's buffers, given back when it ended */
	unsigned spares;
};

/* 0, or -EINVAL for a domain that is not a host name. Then set server.tls and accept into server. */
int ingress_proxy_init(struct ingress_proxy *p, uv_loop_t *loop, const char *domain,
		       const struct ingress_proxy_ops *ops, void *ctx);
void ingress_proxy_destroy(struct ingress_proxy *p);

/* Closes the client connection of link (a revoked token, an ended sandbox); release follows. */
void ingress_proxy_drop(struct ingress_link *link);

/*
 * The label a Host or SNI name points at: "LABEL.DOMAIN" with an optional
 * ":PORT" (Host only), compared without case. 0 with the label in out,
 * -ENOENT when the name is not under domain or the label is empty or
 * dotted, -EINVAL when it is malformed.
 */
int ingress_label_of(const char *name, const char *domain, bool port_allowed, char *out, size_t cap);

#endif
