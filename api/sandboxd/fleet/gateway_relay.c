/*
 * The gateway's byte relay (gateway_relay.h): an http_conn in relay mode on
 * one side, a tls_client on the other, each side's reading paused while the
 * other has too much queued.
 */
#include "gateway_relay.h"

#include <errno.h>
#include <http_parser.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../http_conn.h"
#include "log.h"
#include "tls_client.h"

struct gateway_relay {
	struct http_conn *conn;  /* NULL once the client side is done */
	struct tls_client *tls;  /* NULL once the worker side is done */
	bool held;               /* by its owner, until connect, answer or release */
	char *pending;           /* the rebuilt head, then client bytes, until the worker side opens */
	size_t pending_len;
	bool worker_spoke;       /* a byte of a reply came: an error now can only cut the connection */
	bool client_paused;
	char host[280];
};

static const char *const dropped[] = {"connection", "keep-alive", "proxy-connection", "proxy-authorization",
				      "te", "trailer", "upgrade", "host", NULL};

static bool is_dropped(const char *name)
{
	for (int i = 0; dropped[i]; i++)
		if (!strcasecmp(name, dropped[i]))
			return true;
	return false;
}

int gateway_relay_head(const struct http_request *req, const char *worker_host, uint16_t port, char *out,
		       size_t cap)
{
	const char *name, *value;
	size_t len = 0;
	int n;
	bool v6 = strchr(worker_host, ':') != NULL;

	n = snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nConnection: close\r\n",
		     http_method_str(req->method), req->url, v6 ? "[" : "", worker_host, v6 ? "]" : "", port);
	if (n < 0 || (size_t)n >= cap)
		return -E2BIG;
	len = (size_t)n;
	for (unsigned i = 0; req->headers && http_headers_at(req->headers, i, &name, &value); i++) {
		if (is_dropped(name))
			continue;
		n = snprintf(out + len, cap - len, "%s: %s\r\n", name, value);
		if (n < 0 || (size_t)n >= cap - len)
			return -E2BIG;
		len += (size_t)n;
	}
	if (len + 3 > cap)
		return -E2BIG;
	memcpy(out + len, "\r\n", 3);
	return (int)(len + 2);
}

static void maybe_free(struct gateway_relay *r)
{
	if (r->conn || r->tls || r->held)
		return;
	free(r->pending);
	free(r);
}

/* The client gets an error reply of ours (nothing of the worker's went out yet), then the connection ends. */
static void client_error(struct gateway_relay *r, int status, const char *msg)
{
	char buf[640], body[512];
	int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", msg);
	int m = snprintf(buf, sizeof(buf),
			 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
			 "Connection: close\r\n\r\n%s",
			 status, http_status_text(status), n, body);

	if (!r->conn)
		return;
	http_relay_write(r->conn, buf, (size_t)m);
	http_relay_close(r->conn);
	r->conn = NULL;
}

/* ---- the worker side ---- */

static void on_worker_connected(void *ctx, int err)
{
	struct gateway_relay *r = ctx;
	char msg[400];

	if (!err)
		return;
	r->tls = NULL;
	snprintf(msg, sizeof(msg), "the worker holding this sandbox (%s) cannot be reached: %s", r->host,
		 err == -EPERM ? "its certificate does not verify against --tls-ca" : uv_strerror(err));
	sv_warn("%s", msg);
	client_error(r, err == -ETIMEDOUT ? 504 : 502, msg);
	maybe_free(r);
}

static void on_worker_data(void *ctx, const char *data, size_t len)
{
	struct gateway_relay *r = ctx;

	r->worker_spoke = true;
	if (!r->conn)
		return;
	if (http_relay_write(r->conn, data, len) > GATEWAY_RELAY_MAX_QUEUED && r->tls)
		tls_client_pause(r->tls);
}

static void on_worker_closed(void *ctx, int err)
{
	struct gateway_relay *r = ctx;

	r->tls = NULL;
	if (r->conn) {
		if (err && !r->worker_spoke) {
			client_error(r, 502, "the worker holding this sandbox closed the connection without a reply");
		} else if (err) {
			http_conn_abort(r->conn); /* a cut reply must not look whole */
			r->conn = NULL;
		} else {
			http_relay_close(r->conn); /* the worker's reply is all there: it goes out, then the end */
			r->conn = NULL;
		}
	}
	maybe_free(r);
}

static void on_worker_drained(void *ctx)
{
	struct gateway_relay *r = ctx;

	if (r->client_paused && r->conn) {
		r->client_paused = false;
		http_relay_resume(r->conn);
	}
}

static const struct tls_client_ops worker_ops = {
	.connected = on_worker_connected, .data = on_worker_data, .closed = on_worker_closed,
	.drained = on_worker_drained};

/* ---- the client side ---- */

static int on_client_data(void *ctx, const char *data, size_t len)
{
	struct gateway_relay *r = ctx;

	if (r->held) {
		/* No worker yet: kept, within bounds. */
		char *p = len <= GATEWAY_RELAY_MAX_QUEUED ? realloc(r->pending, r->pending_len + len) : NULL;

		if (!p) {
			client_error(r, 500, "out of memory");
			return 1;
		}
		memcpy(p + r->pending_len, data, len);
		r->pending = p;
		r->pending_len += len;
		r->client_paused = r->pending_len > GATEWAY_RELAY_MAX_QUEUED;
		return r->client_paused;
	}
	if (!r->tls)
		return 1;
	if (tls_client_write(r->tls, data, len) > GATEWAY_RELAY_MAX_QUEUED) {
		r->client_paused = true;
		return 1;
	}
	return 0;
}

static void on_client_closed(void *ctx, int err)
{
	struct gateway_relay *r = ctx;

	if (!err)
		return; /* the client sent all it will: the worker's reply still comes back */
	r->conn = NULL; /* closed already */
	if (r->tls) {
		tls_client_close(r->tls);
		r->tls = NULL;
	}
	maybe_free(r);
}

static void on_client_drained(void *ctx)
{
	struct gateway_relay *r = ctx;

	if (r->tls)
		tls_client_resume(r->tls);
}

static const struct http_relay_ops client_ops = {
	.data = on_client_data, .closed = on_client_closed, .drained = on_client_drained};

int gateway_relay_begin(struct http_request *req, struct gateway_relay **out)
{
	struct gateway_relay *r = calloc(1, sizeof(*r));
	size_t cap = HTTP_MAX_URL + HTTP_MAX_HEADER_BYTES + 1024;
	int n, e;

	if (!r)
		return -ENOMEM;
	r->pending = malloc(cap);
	if (!r->pending) {
		free(r);
		return -ENOMEM;
	}
	/* The worker's name goes in later: Host is the gateway's placeholder, the worker ignores it. */
	n = gateway_relay_head(req, "sandvm-worker", 443, r->pending, cap);
	if (n < 0) {
		e = n;
		goto fail;
	}
	r->pending_len = (size_t)n;
	r->held = true;
	r->conn = req->conn;
	e = http_conn_hand_over(req, &client_ops, r);
	if (e < 0)
		goto fail;
	*out = r;
	return 0;
fail:
	free(r->pending);
	free(r);
	return e;
}

void gateway_relay_connect(struct gateway_relay *r, uv_loop_t *loop, struct ssl_ctx_st *tls, const char *host,
			   uint16_t port)
{
	int e;

	r->held = false;
	if (!r->conn) {
		maybe_free(r);
		return;
	}
	snprintf(r->host, sizeof(r->host), "%s:%u", host, port);
	e = tls_client_open(loop, tls, host, port, GATEWAY_RELAY_CONNECT_TIMEOUT_MS, &worker_ops, r, &r->tls);
	if (e < 0) {
		r->tls = NULL;
		client_error(r, 502, "cannot open a connection to the worker holding this sandbox");
		maybe_free(r);
		return;
	}
	tls_client_write(r->tls, r->pending, r->pending_len);
	free(r->pending);
	r->pending = NULL;
	r->pending_len = 0;
	if (r->client_paused) {
		r->client_paused = false;
		http_relay_resume(r->conn);
	}
}

void gateway_relay_answer(struct gateway_relay *r, int status, const char *json)
{
	char head[256];
	int n;

	r->held = false;
	if (r->conn) {
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
			     "Connection: close\r\n\r\n",
			     status, http_status_text(status), strlen(json));
		http_relay_write(r->conn, head, (size_t)n);
		http_relay_write(r->conn, json, strlen(json));
		http_relay_close(r->conn);
		r->conn = NULL;
	}
	maybe_free(r);
}

void gateway_relay_release(struct gateway_relay *r)
{
	r->held = false;
	if (r->conn) {
		http_conn_abort(r->conn);
		r->conn = NULL;
	}
	maybe_free(r);
}

bool gateway_relay_gone(const struct gateway_relay *r)
{
	return !r->conn;
}
