/*
 * A tunnel connection's byte pump (tunnel_relay.h): the client side is a TCP
 * stream of its own or an http_conn in relay mode, the guest side a
 * guest_relay. Every queue is bounded by max_queued (the other side's reading
 * pauses past it) and one timer, rearmed lazily from the last activity, ends
 * an idle connection.
 */
#include "tunnel_relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "guest_relay.h"
#include "http_conn.h"

#define READ_CHUNK 65536

struct tunnel_relay {
	uv_loop_t *loop;
	const struct tunnel_relay_ops *ops;
	void *ctx;
	size_t max_queued;
	unsigned idle_timeout_ms;
	uv_timer_t timer;
	uint64_t last_active;
	/* The client: tcp when conn is NULL (and tcp_open). */
	uv_tcp_t tcp;
	bool tcp_open;
	struct http_conn *conn;
	size_t tcp_queued; /* bytes written to tcp not yet gone */
	/* The guest. */
	struct guest_relay *g;
	bool g_open;
	size_t g_queued;
	char *pending; /* client bytes before the guest side opened */
	size_t pending_len;
	bool client_eof, guest_eof, client_paused, guest_paused;
	bool shut_client;  /* a shutdown of tcp is under way */
	bool finishing;
	int err;
	unsigned handles; /* open libuv handles left to close */
};

struct tcp_write {
	uv_write_t req;
	struct tunnel_relay *r;
	size_t len;
	char data[];
};

static void finish(struct tunnel_relay *r, int err);

static void touch(struct tunnel_relay *r)
{
	r->last_active = uv_now(r->loop);
}

static void maybe_free(struct tunnel_relay *r)
{
	if (r->handles)
		return;
	free(r->pending);
	r->ops->closed(r->ctx, r, r->err);
	free(r);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct tunnel_relay *r = h->data;

	r->handles--;
	maybe_free(r);
}

static void on_idle(uv_timer_t *t)
{
	struct tunnel_relay *r = t->data;
	uint64_t quiet = uv_now(r->loop) - r->last_active;

	if (r->finishing)
		return;
	if (quiet < r->idle_timeout_ms) {
		uv_timer_start(&r->timer, on_idle, r->idle_timeout_ms - quiet, 0);
		return;
	}
	finish(r, -ETIMEDOUT);
}

/* ---- the client side ---- */

static void client_pause(struct tunnel_relay *r)
{
	if (r->client_paused || r->client_eof)
		return;
	r->client_paused = true;
	if (r->conn)
		http_relay_pause(r->conn);
	else if (r->tcp_open)
		uv_read_stop((uv_stream_t *)&r->tcp);
}

static void on_tcp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void client_resume(struct tunnel_relay *r)
{
	if (!r->client_paused || r->finishing)
		return;
	r->client_paused = false;
	if (r->conn)
		http_relay_resume(r->conn);
	else if (r->tcp_open && !r->client_eof && uv_read_start((uv_stream_t *)&r->tcp, on_tcp_alloc, on_tcp_read) < 0)
		finish(r, -EIO);
}

static void guest_resume(struct tunnel_relay *r)
{
	if (r->guest_paused && r->g) {
		r->guest_paused = false;
		guest_relay_resume(r->g);
	}
}

static void on_tcp_written(uv_write_t *req, int status)
{
	struct tcp_write *w = (struct tcp_write *)req;
	struct tunnel_relay *r = w->r;

	r->tcp_queued -= w->len;
	free(w);
	if (status < 0) {
		finish(r, status);
		return;
	}
	if (!r->finishing && r->tcp_queued <= r->max_queued)
		guest_resume(r);
}

/* Queues bytes to the client; returns what waits. */
static size_t client_write(struct tunnel_relay *r, const char *data, size_t len)
{
	struct tcp_write *w;
	uv_buf_t b;

	if (r->conn)
		return http_relay_write(r->conn, data, len);
	w = malloc(sizeof(*w) + len);
	if (!w) {
		finish(r, -ENOMEM);
		return 0;
	}
	w->r = r;
	w->len = len;
	memcpy(w->data, data, len);
	b = uv_buf_init(w->data, (unsigned)len);
	if (uv_write(&w->req, (uv_stream_t *)&r->tcp, &b, 1, on_tcp_written) < 0) {
		free(w);
		finish(r, -EPIPE);
		return 0;
	}
	r->tcp_queued += len;
	return r->tcp_queued;
}

static void on_tcp_shut(uv_shutdown_t *req, int status)
{
	struct tunnel_relay *r = req->data;

	free(req);
	r->shut_client = false;
	if (status < 0 && status != UV_ECANCELED)
		finish(r, status);
	else if (r->client_eof && !r->g && !r->finishing)
		finish(r, 0);
}

/* The guest ended its side: so does the client's. */
static void client_end(struct tunnel_relay *r)
{
	uv_shutdown_t *req;

	if (r->conn) {
		/* TLS here has no half-close: what is queued goes out, then the connection closes. */
		http_relay_close(r->conn);
		r->conn = NULL;
		finish(r, 0);
		return;
	}
	req = malloc(sizeof(*req));
	if (!req) {
		finish(r, -ENOMEM);
		return;
	}
	req->data = r;
	if (uv_shutdown(req, (uv_stream_t *)&r->tcp, on_tcp_shut) < 0) {
		free(req);
		finish(r, -EPIPE);
		return;
	}
	r->shut_client = true;
}

/* Client bytes: to the guest, or kept until it opens. 1 when the client should pause. */
static int client_bytes(struct tunnel_relay *r, const char *data, size_t len)
{
	touch(r);
	if (r->g_open) {
		r->g_queued = guest_relay_write(r->g, data, len);
		return r->g_queued > r->max_queued;
	}
	if (r->pending_len + len > r->max_queued + READ_CHUNK) {
		finish(r, -ENOBUFS);
		return 1;
	}
	{
		char *p = realloc(r->pending, r->pending_len + len);

		if (!p) {
			finish(r, -ENOMEM);
			return 1;
		}
		r->pending = p;
	}
	memcpy(r->pending + r->pending_len, data, len);
	r->pending_len += len;
	return r->pending_len >= r->max_queued;
}

static void client_ended(struct tunnel_relay *r)
{
	r->client_eof = true;
	touch(r);
	if (r->g_open)
		guest_relay_shutdown(r->g);
	if (r->guest_eof && !r->g && !r->shut_client)
		finish(r, 0);
}

static void on_tcp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)h;
	(void)hint;
	buf->base = malloc(READ_CHUNK);
	buf->len = buf->base ? READ_CHUNK : 0;
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct tunnel_relay *r = s->data;

	if (n > 0 && !r->finishing) {
		if (client_bytes(r, buf->base, (size_t)n) && !r->finishing)
			client_pause(r);
	} else if (n == UV_EOF && !r->finishing) {
		uv_read_stop(s);
		client_ended(r);
	} else if (n < 0) {
		finish(r, (int)n);
	}
	free(buf->base);
}

static int on_conn_data(void *ctx, const char *data, size_t len)
{
	struct tunnel_relay *r = ctx;

	if (r->finishing)
		return 1;
	if (client_bytes(r, data, len)) {
		r->client_paused = true;
		return 1;
	}
	return 0;
}

static void on_conn_closed(void *ctx, int err)
{
	struct tunnel_relay *r = ctx;

	if (err) {
		r->conn = NULL; /* closed already */
		finish(r, err);
		return;
	}
	client_ended(r);
}

static void on_conn_drained(void *ctx)
{
	struct tunnel_relay *r = ctx;

	if (!r->finishing)
		guest_resume(r);
}

static const struct http_relay_ops conn_ops = {
	.data = on_conn_data, .closed = on_conn_closed, .drained = on_conn_drained};

/* ---- the guest side ---- */

static void on_guest_opened(void *ctx, int err, const char *why)
{
	struct tunnel_relay *r = ctx;

	(void)why;
	if (err) {
		r->g = NULL; /* it frees itself */
		finish(r, err);
		return;
	}
	r->g_open = true;
	touch(r);
	if (r->pending_len) {
		r->g_queued = guest_relay_write(r->g, r->pending, r->pending_len);
		free(r->pending);
		r->pending = NULL;
		r->pending_len = 0;
	}
	if (r->client_eof)
		guest_relay_shutdown(r->g);
	else if (r->g_queued <= r->max_queued)
		client_resume(r);
}

static void on_guest_data(void *ctx, const char *data, size_t len)
{
	struct tunnel_relay *r = ctx;

	if (r->finishing)
		return;
	touch(r);
	if (!len) {
		r->guest_eof = true;
		client_end(r);
		return;
	}
	if (client_write(r, data, len) > r->max_queued && !r->guest_paused && r->g && !r->finishing) {
		r->guest_paused = true;
		guest_relay_pause(r->g);
	}
}

static void on_guest_closed(void *ctx, int err)
{
	struct tunnel_relay *r = ctx;

	r->g = NULL; /* it frees itself */
	r->g_open = false;
	if (r->finishing)
		return;
	if (err) {
		finish(r, err);
		return;
	}
	r->guest_eof = true;
	if (!r->shut_client)
		finish(r, 0);
}

static void on_guest_drained(void *ctx)
{
	struct tunnel_relay *r = ctx;

	r->g_queued = 0;
	if (!r->finishing)
		client_resume(r);
}

static const struct guest_relay_ops guest_ops = {
	.opened = on_guest_opened, .data = on_guest_data, .closed = on_guest_closed, .drained = on_guest_drained};

/* ---- life ---- */

static void finish(struct tunnel_relay *r, int err)
{
	if (r->finishing)
		return;
	r->finishing = true;
	r->err = err;
	if (r->g) {
		guest_relay_close(r->g);
		r->g = NULL;
	}
	free(r->pending);
	r->pending = NULL;
	r->pending_len = 0;
	uv_close((uv_handle_t *)&r->timer, on_handle_closed);
	if (r->conn) {
		if (err)
			http_conn_abort(r->conn);
		else
			http_relay_close(r->conn);
		r->conn = NULL;
	}
	if (r->tcp_open) {
		r->tcp_open = false;
		uv_close((uv_handle_t *)&r->tcp, on_handle_closed);
	}
}

static int relay_new(const struct tunnel_relay_config *cfg, struct tunnel_relay **out)
{
	struct tunnel_relay *r;

	if (!cfg || !cfg->loop || !cfg->vsock_path || !cfg->port || !cfg->ops || !cfg->ops->closed)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->loop = cfg->loop;
	r->ops = cfg->ops;
	r->ctx = cfg->ctx;
	r->max_queued = cfg->max_queued ? cfg->max_queued : TUNNEL_RELAY_DEFAULT_MAX_QUEUED;
	r->idle_timeout_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms : TUNNEL_RELAY_DEFAULT_IDLE_TIMEOUT_MS;
	uv_timer_init(r->loop, &r->timer);
	r->timer.data = r;
	r->handles = 1;
	*out = r;
	return 0;
}

/* Opens the guest side and starts the idle timer; the client side is set. 0 or -errno (r is being freed, no callback). */
static int relay_go(const struct tunnel_relay_config *cfg, struct tunnel_relay *r)
{
	int e = guest_relay_open(r->loop, cfg->vsock_path, cfg->port,
				 cfg->connect_timeout_ms ? cfg->connect_timeout_ms
							 : TUNNEL_RELAY_DEFAULT_CONNECT_TIMEOUT_MS,
				 &guest_ops, r, &r->g);

	if (e < 0) {
		r->g = NULL;
		return e;
	}
	touch(r);
	uv_timer_start(&r->timer, on_idle, r->idle_timeout_ms, 0);
	return 0;
}

static const struct tunnel_relay_ops silent_ops;

static void silent_closed(void *ctx, struct tunnel_relay *r, int err)
{
	(void)ctx;
	(void)r;
	(void)err;
}

static const struct tunnel_relay_ops silent_ops = {.closed = silent_closed};

/* Undoes a relay whose start failed: no callback reaches the owner. */
static void relay_undo(struct tunnel_relay *r, int err)
{
	r->ops = &silent_ops;
	finish(r, err);
}

int tunnel_relay_accept(const struct tunnel_relay_config *cfg, uv_stream_t *listener, struct tunnel_relay **out)
{
	struct tunnel_relay *r;
	int e = relay_new(cfg, &r);

	if (e < 0)
		return e;
	uv_tcp_init(r->loop, &r->tcp);
	r->tcp.data = r;
	r->tcp_open = true;
	r->handles++;
	e = uv_accept(listener, (uv_stream_t *)&r->tcp);
	if (e == 0)
		uv_tcp_nodelay(&r->tcp, 1);
	if (e == 0)
		e = relay_go(cfg, r);
	if (e == 0)
		e = uv_read_start((uv_stream_t *)&r->tcp, on_tcp_alloc, on_tcp_read);
	if (e < 0) {
		relay_undo(r, e);
		return e;
	}
	/* Reading waits for the guest side only through the pending bound. */
	*out = r;
	return 0;
}

int tunnel_relay_start_conn(const struct tunnel_relay_config *cfg, struct http_conn *c, struct tunnel_relay **out)
{
	struct tunnel_relay *r;
	int e = relay_new(cfg, &r);

	if (e < 0) {
		http_conn_abort(c);
		return e;
	}
	e = relay_go(cfg, r);
	if (e == 0) {
		r->conn = c;
		*out = r;
		e = http_conn_take(c, &conn_ops, r);
		if (e < 0)
			r->conn = NULL;
	}
	if (e < 0) {
		if (!r->conn)
			http_conn_abort(c);
		relay_undo(r, e);
		return e;
	}
	return 0;
}

void tunnel_relay_drop(struct tunnel_relay *r)
{
	finish(r, -ECANCELED);
}

void tunnel_relay_queued(const struct tunnel_relay *r, size_t *to_client, size_t *to_guest)
{
	*to_client = r->conn ? http_relay_write(r->conn, NULL, 0) : r->tcp_queued;
	*to_guest = r->g_open ? r->g_queued : r->pending_len;
}
