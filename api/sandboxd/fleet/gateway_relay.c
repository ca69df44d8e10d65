/*
 * The gateway's byte relay (gateway_relay.h): an http_conn in relay mode on
 * one side, a tls_client from the worker pool on the other, each side's
 * reading paused while the other has too much queued. Both directions are
 * also run through http_parser, not to change a byte but to see where the
 * request and the reply end: bytes past the request never reach the worker,
 * and a connection whose exchange ended whole goes back to the pool. Each
 * status line of the worker's is held until its end, so the Sandvm-Worker
 * field (and on the final reply Connection: close) goes right after it; an
 * idle timer cuts a relay that carried no byte either way for its idle time.
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
#include "worker_pool.h"

struct gateway_relay {
	struct http_conn *conn;  /* NULL once the client side is done */
	struct tls_client *tls;  /* NULL once the worker side is done */
	struct worker_pool *pool;
	bool held;               /* by its owner, until connect, answer or release */
	unsigned depth;          /* inside a function that calls out: not freed under it */
	http_parser req, resp;   /* where the request and the reply end */
	bool head_request;       /* the reply has no body */
	bool req_done, resp_done, resp_raw, interim, keep_alive, extra;
	char whost[256];         /* the worker's host and port, for the pool */
	uint16_t wport;
	char *pending;           /* the rebuilt head, then client bytes, until the worker side opens */
	size_t pending_len;
	bool worker_spoke;       /* a byte of a reply came: an error now can only cut the connection */
	bool client_paused;
	size_t line_len;         /* the request line's length in pending: Host goes after it */
	char host[280];          /* HOST:PORT of the worker, for messages */
	char worker[64];
	char status[512];        /* the worker's status line until its end */
	size_t status_len;
	bool status_done;        /* passed on, with the Sandvm-Worker field */
	uv_timer_t idle;
	bool timer_on, closing;
	unsigned idle_ms;
	uint64_t last_active;
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
	bool v6 = worker_host && strchr(worker_host, ':') != NULL;

	if (worker_host)
		n = snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: %s%s%s:%u\r\n",
			     http_method_str(req->method), req->url, v6 ? "[" : "", worker_host, v6 ? "]" : "", port);
	else
		n = snprintf(out, cap, "%s %s HTTP/1.1\r\n", http_method_str(req->method), req->url);
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

static void on_idle_closed(uv_handle_t *h)
{
	struct gateway_relay *r = h->data;

	free(r->pending);
	free(r);
}

static void maybe_free(struct gateway_relay *r)
{
	if (r->conn || r->tls || r->held || r->closing || r->depth)
		return;
	if (r->timer_on) {
		r->closing = true;
		uv_timer_stop(&r->idle);
		uv_close((uv_handle_t *)&r->idle, on_idle_closed);
		return;
	}
	free(r->pending);
	free(r);
}

/* A byte went one way or the other. */
static void touch(struct gateway_relay *r)
{
	if (r->timer_on)
		r->last_active = uv_now(r->idle.loop);
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

/* Keeps r alive across a call out that may end it (a synchronous failure of a write). */
static void enter(struct gateway_relay *r)
{
	r->depth++;
}

static void leave(struct gateway_relay *r)
{
	r->depth--;
	maybe_free(r);
}

/* ---- where the request and the reply end ---- */

static int req_complete(http_parser *p)
{
	struct gateway_relay *r = p->data;

	r->req_done = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings req_settings = {.on_message_complete = req_complete};

static int resp_headers_complete(http_parser *p)
{
	struct gateway_relay *r = p->data;

	return r->head_request ? 1 : 0; /* 1: no body follows */
}

static int resp_complete(http_parser *p)
{
	struct gateway_relay *r = p->data;

	if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101) {
		r->interim = true; /* 100 Continue: the reply proper comes after it */
	} else {
		r->resp_done = true;
		r->keep_alive = http_should_keep_alive(p) != 0;
	}
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings resp_settings = {.on_headers_complete = resp_headers_complete,
						   .on_message_complete = resp_complete};

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

/* The status line held so far, then (once it ended) the Sandvm-Worker field, and on a final reply Connection: close. */
static void pass_status(struct gateway_relay *r, bool ended)
{
	char field[160];
	bool interim = r->status_len > 9 && r->status[9] == '1';
	int n;

	r->status_done = true;
	http_relay_write(r->conn, r->status, r->status_len);
	if (!ended)
		return;
	/* The client's connection ends with this reply (its worker connection may not). */
	n = snprintf(field, sizeof(field), GATEWAY_RELAY_WORKER_FIELD ": %s\r\n%s", r->worker,
		     interim ? "" : "Connection: close\r\n");
	if (n > 0 && (size_t)n < sizeof(field))
		http_relay_write(r->conn, field, (size_t)n);
}

/* Worker bytes to the client, each status line held until its end. */
static void emit(struct gateway_relay *r, const char *data, size_t len)
{
	if (!r->conn || !len)
		return;
	if (!r->status_done) {
		const char *nl = memchr(data, '\n', len);
		size_t upto = nl ? (size_t)(nl - data) + 1 : len;

		if (r->status_len + upto > sizeof(r->status)) {
			pass_status(r, false); /* no status line: passed on as it is */
		} else {
			memcpy(r->status + r->status_len, data, upto);
			r->status_len += upto;
			data += upto;
			len -= upto;
			if (!nl)
				return;
			pass_status(r, true);
		}
	}
	if (http_relay_write(r->conn, data, len) > GATEWAY_RELAY_MAX_QUEUED && r->tls)
		tls_client_pause(r->tls);
}

/* The reply is whole: the worker connection back to the pool if its exchange was whole too; the client's ends. */
static void reply_done(struct gateway_relay *r)
{
	struct tls_client *c = r->tls;

	r->tls = NULL;
	if (c && r->req_done && r->keep_alive && !r->extra && !r->resp_raw)
		worker_pool_put(r->pool, r->whost, r->wport, c);
	else if (c)
		tls_client_close(c);
	if (r->conn) {
		http_relay_close(r->conn); /* what is queued goes out, then the end */
		r->conn = NULL;
	}
}

static void on_worker_data(void *ctx, const char *data, size_t len)
{
	struct gateway_relay *r = ctx;

	r->worker_spoke = true;
	touch(r);
	enter(r);
	while (len && r->tls) {
		size_t n = len;

		if (r->resp_done) {
			r->extra = true; /* more than the reply: this connection is not kept */
			break;
		}
		if (!r->resp_raw) {
			enum http_errno e;

			n = http_parser_execute(&r->resp, &resp_settings, data, len);
			e = HTTP_PARSER_ERRNO(&r->resp);
			if (e == HPE_PAUSED) {
				http_parser_pause(&r->resp, 0);
			} else if (e != HPE_OK || r->resp.upgrade) {
				/* Not a reply we can frame: passed on as bytes until the worker closes. */
				r->resp_raw = true;
				n = len;
			}
		}
		emit(r, data, n);
		data += n;
		len -= n;
		if (r->interim) {
			r->interim = false;
			r->status_done = false;
			r->status_len = 0;
		}
	}
	if (r->resp_done)
		reply_done(r);
	leave(r);
}

static void on_worker_closed(void *ctx, int err)
{
	struct gateway_relay *r = ctx;

	r->tls = NULL;
	if (!err && !r->resp_raw && !r->resp_done && r->worker_spoke) {
		/* A reply framed by the close ends here; one cut short does not parse at its end. */
		http_parser_execute(&r->resp, &resp_settings, NULL, 0);
		if (!r->resp_done)
			err = -EPIPE;
	}
	if (r->conn && !r->status_done && r->status_len)
		pass_status(r, false);
	if (r->conn) {
		if (!r->worker_spoke) {
			client_error(r, 502, "the worker holding this sandbox closed the connection without a reply");
		} else if (err && !r->resp_raw) {
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

/*
 * Client bytes (the rebuilt head first) to the worker, up to the request's
 * end: the bytes queued towards the worker, or -EPROTO for a body whose
 * framing does not parse.
 */
static int to_worker(struct gateway_relay *r, const char *data, size_t len, size_t *queued)
{
	enum http_errno e;
	size_t n;

	*queued = 0;
	if (r->req_done || !r->tls)
		return 0; /* past the request: not the worker's (the client's connection ends with the reply) */
	n = http_parser_execute(&r->req, &req_settings, data, len);
	e = HTTP_PARSER_ERRNO(&r->req);
	if (e == HPE_PAUSED)
		http_parser_pause(&r->req, 0);
	else if (e != HPE_OK)
		return -EPROTO;
	if (n)
		*queued = tls_client_write(r->tls, data, n);
	return 0;
}

/* A request that does not parse: the worker connection goes (not kept), the client gets a 400 if it can. */
static void bad_request(struct gateway_relay *r)
{
	if (r->tls) {
		tls_client_close(r->tls);
		r->tls = NULL;
	}
	if (r->conn && !r->worker_spoke) {
		client_error(r, 400, "the request's body framing does not parse");
	} else if (r->conn) {
		http_conn_abort(r->conn);
		r->conn = NULL;
	}
}

/* ---- the client side ---- */

static int on_client_data(void *ctx, const char *data, size_t len)
{
	struct gateway_relay *r = ctx;
	size_t queued;
	int ret = 0;

	touch(r);
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
		return r->req_done ? 0 : 1;
	enter(r);
	if (to_worker(r, data, len, &queued) < 0) {
		bad_request(r);
		ret = 1;
	} else if (queued > GATEWAY_RELAY_MAX_QUEUED) {
		r->client_paused = true;
		ret = 1;
	}
	leave(r);
	return ret;
}

static void on_client_closed(void *ctx, int err)
{
	struct gateway_relay *r = ctx;

	if (!err)
		return; /* the client sent all it will: the worker's reply still comes back */
	r->conn = NULL; /* closed already */
	if (r->tls) {
		tls_client_close(r->tls); /* its exchange is cut: never kept */
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
	/* Host goes in once the worker is known (gateway_relay_connect), after the request line. */
	n = gateway_relay_head(req, NULL, 0, r->pending, cap);
	if (n < 0) {
		e = n;
		goto fail;
	}
	r->pending_len = (size_t)n;
	r->line_len = (size_t)(strstr(r->pending, "\r\n") - r->pending) + 2;
	r->held = true;
	r->head_request = req->method == HTTP_HEAD;
	http_parser_init(&r->req, HTTP_REQUEST);
	r->req.data = r;
	http_parser_init(&r->resp, HTTP_RESPONSE);
	r->resp.data = r;
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

static void on_idle(uv_timer_t *t)
{
	struct gateway_relay *r = t->data;
	char msg[400];

	if (uv_now(t->loop) - r->last_active < r->idle_ms)
		return;
	snprintf(msg, sizeof(msg), "the relay to the worker holding this sandbox (%s) carried nothing for %u s: cut",
		 r->host, r->idle_ms / 1000);
	sv_warn("%s", msg);
	if (r->tls) {
		tls_client_close(r->tls);
		r->tls = NULL;
	}
	if (r->conn && !r->worker_spoke) {
		client_error(r, 504, msg);
	} else if (r->conn) {
		http_conn_abort(r->conn); /* a cut reply must not look whole */
		r->conn = NULL;
	}
	maybe_free(r);
}

/* pending with "Host: HOST:PORT" after its request line; -ENOMEM. */
static int add_host(struct gateway_relay *r, const char *host, uint16_t port)
{
	char field[300];
	bool v6 = strchr(host, ':') != NULL;
	int n = snprintf(field, sizeof(field), "Host: %s%s%s:%u\r\n", v6 ? "[" : "", host, v6 ? "]" : "", port);
	char *p;

	if (n < 0 || (size_t)n >= sizeof(field))
		return -E2BIG;
	p = malloc(r->pending_len + (size_t)n);
	if (!p)
		return -ENOMEM;
	memcpy(p, r->pending, r->line_len);
	memcpy(p + r->line_len, field, (size_t)n);
	memcpy(p + r->line_len + (size_t)n, r->pending + r->line_len, r->pending_len - r->line_len);
	free(r->pending);
	r->pending = p;
	r->pending_len += (size_t)n;
	return 0;
}

void gateway_relay_connect(struct gateway_relay *r, uv_loop_t *loop, struct worker_pool *pool,
			   const struct gateway_relay_target *t)
{
	size_t queued;
	bool reused;
	int e;

	r->held = false;
	if (!r->conn) {
		maybe_free(r);
		return;
	}
	r->pool = pool;
	snprintf(r->host, sizeof(r->host), "%s:%u", t->host, t->port);
	snprintf(r->whost, sizeof(r->whost), "%s", t->host);
	r->wport = t->port;
	snprintf(r->worker, sizeof(r->worker), "%s", t->worker);
	if (add_host(r, t->host, t->port) < 0) {
		client_error(r, 500, "cannot rebuild the request for the worker");
		maybe_free(r);
		return;
	}
	e = worker_pool_get(pool, t->host, t->port, GATEWAY_RELAY_CONNECT_TIMEOUT_MS, &worker_ops, r, &r->tls,
			    &reused);
	if (e < 0) {
		r->tls = NULL;
		client_error(r, 502, "cannot open a connection to the worker holding this sandbox");
		maybe_free(r);
		return;
	}
	r->idle_ms = t->idle_ms ? t->idle_ms : GATEWAY_RELAY_IDLE_MS_DEFAULT;
	uv_timer_init(loop, &r->idle);
	r->idle.data = r;
	r->timer_on = true;
	r->last_active = uv_now(loop);
	uv_timer_start(&r->idle, on_idle, r->idle_ms / 4 ? r->idle_ms / 4 : 1, r->idle_ms / 4 ? r->idle_ms / 4 : 1);
	enter(r);
	e = to_worker(r, r->pending, r->pending_len, &queued);
	free(r->pending);
	r->pending = NULL;
	r->pending_len = 0;
	if (e < 0)
		bad_request(r);
	else if (r->client_paused && r->conn && queued <= GATEWAY_RELAY_MAX_QUEUED) {
		r->client_paused = false;
		http_relay_resume(r->conn);
	}
	leave(r);
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
