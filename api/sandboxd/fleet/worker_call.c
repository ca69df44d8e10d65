/* A whole call to a worker (worker_call.h): one request out, its reply parsed by http_parser. */
#include "worker_call.h"

#include <errno.h>
#include <http_parser.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../http_conn.h"
#include "tls_client.h"
#include "worker_pool.h"

struct worker_call {
	uv_loop_t *loop;
	struct worker_pool *pool;
	struct tls_client *tls;
	char host[256];
	uint16_t port;
	bool keep; /* the reply ended whole with keep-alive and nothing after it: the connection goes back */
	uv_timer_t timer;
	http_parser parser;
	worker_call_cb cb;
	void *ctx;
	char *body;
	size_t body_len;
	bool done, timer_open;
	bool starting, deferred; /* an end met inside worker_call_start is told from the loop */
	int err, derr, dstatus;
};

static void on_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

/* Ends the call: the callback once (unless cancelled), then the call goes. */
static void finish(struct worker_call *w, int err, int status)
{
	if (w->done)
		return;
	if (w->starting) {
		if (!w->deferred) {
			w->deferred = true;
			w->derr = err;
			w->dstatus = status;
		}
		return;
	}
	w->done = true;
	if (w->tls && w->keep && !err)
		worker_pool_put(w->pool, w->host, w->port, w->tls);
	else if (w->tls)
		tls_client_close(w->tls);
	w->tls = NULL;
	if (w->cb)
		w->cb(w->ctx, err, status, w->body ? w->body : "", w->body_len);
	free(w->body);
	w->body = NULL;
	uv_close((uv_handle_t *)&w->timer, on_timer_closed);
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct worker_call *w = p->data;
	char *b;

	if (w->body_len + len > WORKER_CALL_REPLY_MAX) {
		w->err = -EMSGSIZE;
		return -1;
	}
	b = realloc(w->body, w->body_len + len + 1);
	if (!b) {
		w->err = -ENOMEM;
		return -1;
	}
	memcpy(b + w->body_len, at, len);
	w->body = b;
	w->body_len += len;
	w->body[w->body_len] = '\0';
	return 0;
}

static int on_complete(http_parser *p)
{
	struct worker_call *w = p->data;

	http_parser_pause(p, 1);
	w->err = 1; /* complete */
	w->keep = http_should_keep_alive(p) != 0;
	return 0;
}

static const http_parser_settings settings = {.on_body = on_body, .on_message_complete = on_complete};

static void on_connected(void *ctx, int err)
{
	struct worker_call *w = ctx;

	if (err) {
		w->tls = NULL; /* gone */
		finish(w, err, 0);
	}
}

static void on_data(void *ctx, const char *data, size_t len)
{
	struct worker_call *w = ctx;
	size_t n = http_parser_execute(&w->parser, &settings, data, len);

	if (w->err == 1) {
		if (n < len)
			w->keep = false; /* bytes past the reply: not a connection to keep */
		finish(w, 0, (int)w->parser.status_code);
	}
	else if (w->err < 0 || HTTP_PARSER_ERRNO(&w->parser) != HPE_OK)
		finish(w, w->err < 0 ? w->err : -EPROTO, 0);
}

static void on_closed(void *ctx, int err)
{
	struct worker_call *w = ctx;

	w->tls = NULL; /* gone */
	w->keep = false;
	if (!err) {
		/* A reply framed by the close ends here. */
		http_parser_execute(&w->parser, &settings, NULL, 0);
		if (w->err == 1) {
			finish(w, 0, (int)w->parser.status_code);
			return;
		}
	}
	finish(w, err ? err : -EPROTO, 0);
}

static const struct tls_client_ops tls_ops = {.connected = on_connected, .data = on_data, .closed = on_closed};

static void on_timeout(uv_timer_t *t)
{
	finish(t->data, -ETIMEDOUT, 0);
}

static void on_deferred(uv_timer_t *t)
{
	struct worker_call *w = t->data;

	finish(w, w->derr, w->dstatus);
}

int worker_call_start(uv_loop_t *loop, struct worker_pool *pool, const struct worker_call_request *rq,
		      worker_call_cb cb, void *ctx, struct worker_call **out)
{
	char head[HTTP_MAX_URL + HTTP_MAX_AUTH + 512];
	struct worker_call *w;
	bool reused;
	int n, r;

	if (!rq || !pool || !rq->host || strlen(rq->host) >= sizeof(w->host) || !rq->method || !rq->target || strlen(rq->target) >= HTTP_MAX_URL || !cb ||
	    strpbrk(rq->target, "\r\n ") || (rq->authorization && strpbrk(rq->authorization, "\r\n")))
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->pool = pool;
	snprintf(w->host, sizeof(w->host), "%s", rq->host);
	w->port = rq->port;
	w->cb = cb;
	w->ctx = ctx;
	http_parser_init(&w->parser, HTTP_RESPONSE);
	w->parser.data = w;
	n = snprintf(head, sizeof(head),
		     "%s %s HTTP/1.1\r\nHost: %s%s%s:%u\r\n%s%s%sContent-Type: application/json\r\n"
		     "Content-Length: %zu\r\n\r\n",
		     rq->method, rq->target, strchr(rq->host, ':') ? "[" : "", rq->host, strchr(rq->host, ':') ? "]" : "",
		     rq->port,
		     rq->authorization ? "Authorization: " : "",
		     rq->authorization ? rq->authorization : "", rq->authorization ? "\r\n" : "", rq->body_len);
	if (n < 0 || (size_t)n >= sizeof(head)) {
		free(w);
		return -EINVAL;
	}
	r = worker_pool_get(pool, rq->host, rq->port, rq->timeout_ms, &tls_ops, w, &w->tls, &reused);
	if (r < 0) {
		free(w);
		return r;
	}
	uv_timer_init(loop, &w->timer);
	w->timer.data = w;
	uv_timer_start(&w->timer, on_timeout, rq->timeout_ms ? rq->timeout_ms : 10000, 0);
	/* A kept connection is written at once, and a write that fails there ends the call: not before we return. */
	w->starting = true;
	tls_client_write(w->tls, head, (size_t)n);
	if (rq->body_len && w->tls)
		tls_client_write(w->tls, rq->body, rq->body_len);
	w->starting = false;
	if (w->deferred)
		uv_timer_start(&w->timer, on_deferred, 0, 0);
	*out = w;
	return 0;
}

void worker_call_cancel(struct worker_call *w)
{
	w->cb = NULL;
	finish(w, -ECANCELED, 0);
}
