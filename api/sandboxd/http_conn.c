#include "http_conn.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Unparsed input kept while a request is being answered; more stops reading. */
#define CONN_INPUT_MAX (256 * 1024)
#define CONN_READ_CHUNK (64 * 1024)
#define FD_REPLY_CHUNK (256 * 1024)
/*
 * After the last reply of a connection the server shuts down its sending side
 * and reads on (discarding) until the client closes, this long or this much at
 * most: a client still sending a body the server answered early (a 401 before
 * the body was read) then reads the reply instead of failing with EPIPE or a
 * reset.
 */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (4u << 20)

/* What a connection in relay mode reads into. */
#define RELAY_READ_CHUNK (64 * 1024)
/* Ciphertext read per turn, and the most kept undecrypted while the plaintext waits. */
#define TLS_RAW_CHUNK (64 * 1024)
#define TLS_RAW_MAX (64 * 1024)
/* The most a corked connection gathers before it writes: one TLS record's plaintext. */
#define CORK_MAX (16 * 1024)

struct http_conn {
	union {
		uv_pipe_t pipe;
		uv_tcp_t tcp;
		uv_handle_t handle;
		uv_stream_t stream;
	} h;
	struct http_server *srv;
	struct http_conn *prev, *next; /* in srv->conns */
	uint64_t accepted_ns;
	http_parser parser;
	struct http_head_scan scan;
	struct http_request req;
	unsigned refs;
	bool closing, in_pump, dispatched, sink_paused, keep_alive, reading, expect_continue;
	bool close_after_write, handler_done, finished;
	bool in_head;       /* the bytes being read are a request head */
	bool request_begun; /* some bytes of a request arrived (not idle) */
	bool peer_eof;      /* the client ended its side while its request was being answered */
	bool peer_known;    /* peer holds the client's address (or peer_err why not) */
	int peer_err;
	char peer[48];
	bool lingering, timer_open;
	uv_timer_t timer; /* the head or idle limit, then the lingering close */
	uv_timer_cb timer_cb; /* what it calls when it runs */
	uv_shutdown_t shutdown_req;
	size_t linger_bytes;
	char *in; /* allocated while a request is arriving */
	size_t in_len, in_off;
	size_t write_queued;
	int reply_fd;
	uint64_t reply_left;
	struct request_head *head; /* the request's target and fields, from srv's pool */
	/* TLS (srv->tls): ciphertext in rbio and out of wbio, memory BIOs the SSL owns. */
	SSL *ssl;
	BIO *rbio, *wbio;
	bool tls_ready; /* handshake done */
	bool tls_buffered; /* used since its record buffers were last given back (counted in srv->tls_buffers) */
	void *ctx; /* the route owner's (http_conn_set_ctx) */
	bool raw_body; /* the streamed reply's body goes out as it is (HTTP_REPLY_LENGTH) */
	/* Relay mode (http_conn_detach). */
	const struct http_relay_ops *relay;
	void *relay_ctx;
	bool relay_paused, relay_eof, relay_closing;
	/* A hand-over asked for at headers time (http_conn_hand_over), done once the parser returned. */
	const struct http_relay_ops *hand_ops;
	void *hand_ctx;
};

struct conn_write {
	uv_write_t w;
	struct http_conn *conn;
	size_t len;
	char data[];
};

static void pump(struct http_conn *c);
static void conn_close(struct http_conn *c);
static int tls_flush(struct http_conn *c);
static int cork_flush(struct http_conn *c);

static uint64_t mono_ns(void)
{
	return uv_hrtime();
}

/*
 * OpenSSL keeps a connection's record buffers (about 34 KiB for reading and
 * writing) from its first use on: giving them back after every record
 * (SSL_MODE_RELEASE_BUFFERS) made a busy connection allocate and free them
 * per request. They go back once the connection is quiet instead: after the
 * handshake when no request came with it, tls_quiet_ms after a reply when
 * no next request came, and tls_quiet_ms into a reply that takes its time
 * (or a stream that wrote nothing for that long).
 */
static void tls_used(struct http_conn *c)
{
	if (!c->tls_buffered) {
		c->tls_buffered = true;
		c->srv->tls_buffers++;
	}
}

/* Gives the record buffers back unless a record is half read (then they stay until the next quiet time). */
static void tls_release(struct http_conn *c)
{
	if (c->tls_buffered && SSL_free_buffers(c->ssl)) {
		c->tls_buffered = false;
		c->srv->tls_buffers--;
	}
}

/*
 * Input buffers (all CONN_INPUT_MAX bytes) and header lists go back to a small
 * pool of the server's when a request is done, so a busy keep-alive connection
 * does not allocate and free them per request; the pool holds at most
 * HTTP_POOL_MAX of each.
 */
static void *pool_get(void **pool, unsigned *n, size_t size)
{
	return *n ? pool[--*n] : malloc(size);
}

static void pool_put(void **pool, unsigned *n, void *p)
{
	if (!p)
		return;
	if (*n < HTTP_POOL_MAX)
		pool[(*n)++] = p;
	else
		free(p);
}

/* What a request's head needs while it lives: its target and its header fields. */
struct request_head {
	struct http_headers headers;
	char url[HTTP_MAX_URL];
};

static struct request_head *head_get(struct http_server *srv)
{
	return pool_get(srv->head_pool, &srv->heads_pooled, sizeof(struct request_head));
}

static void head_put(struct http_server *srv, struct request_head *h)
{
	pool_put(srv->head_pool, &srv->heads_pooled, h);
}

/* The input buffer, counted in srv->input_buffers. */
static bool input_alloc(struct http_conn *c, size_t size)
{
	(void)size;
	if (!c->in) {
		c->in = pool_get(c->srv->input_pool, &c->srv->inputs_pooled, CONN_INPUT_MAX);
		if (!c->in)
			return false;
		c->srv->input_buffers++;
		c->in_len = c->in_off = 0;
	}
	return true;
}

static void input_free(struct http_conn *c)
{
	if (c->in) {
		pool_put(c->srv->input_pool, &c->srv->inputs_pooled, c->in);
		c->in = NULL;
		c->srv->input_buffers--;
	}
	c->in_len = c->in_off = 0;
}

/* Moves what is left of the input to the front of the buffer. */
static void input_compact(struct http_conn *c)
{
	if (c->in && c->in_off) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 421: return "Misdirected Request";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Unknown";
	}
}

void http_conn_ref(struct http_conn *c)
{
	c->refs++;
}

void http_conn_unref(struct http_conn *c)
{
	if (--c->refs)
		return;
	if (c->tls_buffered)
		c->srv->tls_buffers--;
	SSL_free(c->ssl);
	input_free(c);
	head_put(c->srv, c->head);
	free(c->req.body);
	if (c->req.body_fd >= 0)
		close(c->req.body_fd);
	if (c->reply_fd >= 0)
		close(c->reply_fd);
	free(c);
}

bool http_conn_closed(const struct http_conn *c)
{
	return c->closing;
}

static void on_closed(uv_handle_t *h)
{
	http_conn_unref(h->data);
}

static void on_timer_closed(uv_handle_t *h)
{
	http_conn_unref(h->data);
}

static void unlink_conn(struct http_conn *c)
{
	struct http_server *srv = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else if (srv->conns == c)
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void conn_close(struct http_conn *c)
{
	struct http_request *req = &c->req;

	if (c->closing)
		return;
	c->closing = true;
	c->srv->connections--;
	unlink_conn(c);
	if (c->srv->cork_conn == c) {
		/* What was gathered goes nowhere now. */
		c->srv->cork_conn = NULL;
		c->srv->cork_len = 0;
	}
	if (c->relay) {
		/* The relay's owner hears of it once, unless it closed the relay itself. */
		if (!c->relay_closing && c->relay->closed)
			c->relay->closed(c->relay_ctx, -ECONNRESET);
	} else if (c->hand_ops) {
		/* Handed over but never begun: its owner still hears once. */
		const struct http_relay_ops *ops = c->hand_ops;

		c->hand_ops = NULL;
		if (ops->closed)
			ops->closed(c->hand_ctx, -ECONNRESET);
	} else if (req->url_len && (!req->responded || req->streaming || !c->handler_done) && req->handler &&
		   req->handler->aborted) {
		/* A reply still owed (or streaming) will never reach anyone. */
		req->handler->aborted(req);
	}
	if (c->ctx && c->srv->conn_closed) {
		void *ctx = c->ctx;

		c->ctx = NULL;
		c->srv->conn_closed(c, ctx);
	}
	if (c->timer_open) {
		c->timer_open = false;
		http_conn_ref(c);
		uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	}
	uv_close(&c->h.handle, on_closed);
}

void http_conn_abort(struct http_conn *c)
{
	conn_close(c);
}

void http_conn_set_ctx(struct http_conn *c, void *ctx)
{
	c->ctx = ctx;
}

void *http_conn_ctx(const struct http_conn *c)
{
	return c->ctx;
}

const char *http_conn_sni(const struct http_conn *c)
{
	return c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

/* The peer's address as text, asked of the socket once per connection. */
static int peer_name(struct http_conn *c)
{
	struct sockaddr_storage a;
	int len = sizeof(a), r;

	r = uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&a, &len);
	if (r < 0)
		return r;
	if (a.ss_family == AF_INET6)
		r = uv_ip6_name((struct sockaddr_in6 *)&a, c->peer, sizeof(c->peer));
	else
		r = uv_ip4_name((struct sockaddr_in *)&a, c->peer, sizeof(c->peer));
	/* An IPv4 client of a dual-stack socket: its plain address. */
	if (r == 0 && !strncmp(c->peer, "::ffff:", 7) && strchr(c->peer + 7, '.'))
		memmove(c->peer, c->peer + 7, strlen(c->peer + 7) + 1);
	return r;
}

int http_conn_peer(struct http_conn *c, char *out, size_t cap)
{
	if (!cap)
		return -EINVAL;
	out[0] = '\0';
	if (c->h.handle.type != UV_TCP)
		return 0;
	if (!c->peer_known) {
		c->peer[0] = '\0';
		c->peer_err = peer_name(c);
		c->peer_known = true;
	}
	if (c->peer_err < 0)
		return c->peer_err;
	if (strlen(c->peer) >= cap)
		return -ENOSPC;
	memcpy(out, c->peer, strlen(c->peer) + 1);
	return 0;
}

/* ---- time limits ---- */

static void timer_stop(struct http_conn *c)
{
	if (c->timer_open)
		uv_timer_stop(&c->timer);
}

static void on_limit_timeout(uv_timer_t *t);

/* Started again only when its deadline or callback changes (not for the same one within a millisecond). */
static void timer_arm(struct http_conn *c, uv_timer_cb cb, unsigned ms)
{
	if (!c->timer_open || !ms)
		return;
	if (c->timer_cb == cb && uv_is_active((uv_handle_t *)&c->timer) && uv_timer_get_due_in(&c->timer) == ms)
		return;
	c->timer_cb = cb;
	uv_timer_start(&c->timer, cb, ms, 0);
}

/*
 * While a request's body arrives, the client must send some of it every
 * body_timeout_ms. Streamed bodies (sinks: an exec's stdin, typed by a person
 * perhaps) have no such limit, nor a body the server paused itself.
 */
static void body_timer(struct http_conn *c)
{
	struct http_request *req = &c->req;

	bool bodiless = !req->chunked && !req->content_length; /* complete as soon as its head is */

	if (bodiless || req->complete || req->responded || c->sink_paused || req->body_mode == HTTP_BODY_SINK)
		timer_stop(c);
	else
		timer_arm(c, on_limit_timeout, c->srv->body_timeout_ms);
}

static void on_quiet(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	unsigned quiet = c->srv->tls_quiet_ms, idle = c->srv->idle_timeout_ms;

	if (c->closing || c->lingering || c->relay)
		return;
	tls_release(c);
	/* The rest of the idle limit. */
	if (idle)
		timer_arm(c, on_limit_timeout, idle > quiet ? idle - quiet : 1);
}

/* Between requests: the idle limit, first the quiet time of a TLS connection that holds record buffers. */
static void idle_timer(struct http_conn *c)
{
	unsigned quiet = c->srv->tls_quiet_ms, idle = c->srv->idle_timeout_ms;

	if (c->tls_buffered && quiet && (!idle || quiet < idle))
		timer_arm(c, on_quiet, quiet);
	else
		timer_arm(c, on_limit_timeout, idle);
}

static void on_reply_quiet(uv_timer_t *t)
{
	struct http_conn *c = t->data;

	if (!c->closing && !c->lingering && !c->relay)
		tls_release(c);
}

/*
 * While a reply takes its time (a long poll, a stream with nothing to send)
 * no limit runs on the connection's timer: after tls_quiet_ms without a
 * write its record buffers go back too.
 */
static void reply_quiet_timer(struct http_conn *c)
{
	if (c->tls_buffered && c->srv->tls_quiet_ms && !c->closing)
		timer_arm(c, on_reply_quiet, c->srv->tls_quiet_ms);
}

/* A request starts arriving: its head has the head's time limit from now. */
static void request_begins(struct http_conn *c)
{
	if (c->request_begun)
		return;
	c->request_begun = true;
	c->req.start_ns = mono_ns();
	timer_arm(c, on_limit_timeout, c->srv->header_timeout_ms);
}

/* ---- lingering close ---- */

static void on_linger_timeout(uv_timer_t *t)
{
	conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *sr, int status)
{
	struct http_conn *c = sr->data;

	/* A client that ended its side already has nothing more to send: done. */
	if ((status < 0 && status != UV_ECANCELED) || (status == 0 && c->peer_eof))
		conn_close(c);
	http_conn_unref(c);
}

static void on_linger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct http_conn *c = h->data;

	(void)suggested;
	if (!c->in && !input_alloc(c, CONN_INPUT_MAX)) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf = uv_buf_init(c->in, CONN_READ_CHUNK);
}

static void on_linger_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct http_conn *c = s->data;

	(void)buf;
	if (n < 0) {
		conn_close(c); /* the client closed: done */
		return;
	}
	c->linger_bytes += (size_t)n;
	if (c->linger_bytes > LINGER_MAX_BYTES)
		conn_close(c);
}

/* The connection's last reply is out: stop sending, drain what the client still sends, then close. */
static void conn_linger(struct http_conn *c)
{
	if (c->closing || c->lingering)
		return;
	if (cork_flush(c) < 0)
		return;
	c->lingering = true;
	if (c->reading) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
	}
	c->in_off = c->in_len = 0;
	if (c->ssl && c->tls_ready) {
		tls_used(c);
		SSL_shutdown(c->ssl); /* close_notify, queued before the stream's shutdown */
		tls_flush(c);
	}
	c->shutdown_req.data = c;
	if (uv_shutdown(&c->shutdown_req, &c->h.stream, on_shutdown) < 0) {
		conn_close(c);
		return;
	}
	http_conn_ref(c);
	if (!c->timer_open || (!c->peer_eof && uv_read_start(&c->h.stream, on_linger_alloc, on_linger_read) < 0)) {
		conn_close(c);
		return;
	}
	timer_arm(c, on_linger_timeout, LINGER_MS);
}

/* ---- writing ---- */

static void maybe_drained(struct http_conn *c);

static void on_written(uv_write_t *w, int status)
{
	struct conn_write *cw = (struct conn_write *)w;
	struct http_conn *c = cw->conn;

	c->write_queued -= cw->len;
	free(cw);
	if (status < 0 && !c->closing) {
		conn_close(c);
	} else if (!c->closing) {
		maybe_drained(c);
	}
	http_conn_unref(c);
}

/* Queues bytes as they go on the wire; cw holds them. */
static int queue_write(struct http_conn *c, struct conn_write *cw)
{
	uv_buf_t b = uv_buf_init(cw->data, (unsigned)cw->len);
	int r;

	cw->conn = c;
	r = uv_write(&cw->w, &c->h.stream, &b, 1, on_written);
	if (r < 0) {
		free(cw);
		conn_close(c);
		return r;
	}
	c->write_queued += cw->len;
	http_conn_ref(c);
	return 0;
}

/*
 * A write the socket takes at once has no callback, so only writes that no
 * one waits on go out that way: nothing queued before them, and no file,
 * chunked stream or relay whose next step starts when the queue is empty
 * (nor a detached connection's head, which has its relay by then).
 */
static bool may_write_now(const struct http_conn *c)
{
	return !c->write_queued && c->reply_fd < 0 && !c->req.streaming && !c->relay && !c->finished;
}

/* Sends what the socket takes now when may_write_now, and queues a copy of the rest. */
static int send_bytes(struct http_conn *c, const uv_buf_t *bufs, unsigned n)
{
	struct conn_write *cw;
	size_t total = 0, skip = 0, off = 0;
	int r;

	for (unsigned i = 0; i < n; i++)
		total += bufs[i].len;
	if (!total)
		return 0;
	if (may_write_now(c)) {
		r = uv_try_write(&c->h.stream, bufs, n);
		if (r < 0 && r != UV_EAGAIN) {
			conn_close(c);
			return r;
		}
		skip = r > 0 ? (size_t)r : 0;
		if (skip == total)
			return 0;
	}
	cw = malloc(sizeof(*cw) + total - skip);
	if (!cw) {
		conn_close(c);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		size_t len = bufs[i].len;
		const char *base = bufs[i].base;

		if (skip >= len) {
			skip -= len;
			continue;
		}
		memcpy(cw->data + off, base + skip, len - skip);
		off += len - skip;
		skip = 0;
	}
	cw->len = off;
	return queue_write(c, cw);
}

/* The server's scratch buffer for ciphertext (one read or flush at a time on the loop). */
static char *tls_scratch(struct http_server *srv)
{
	if (!srv->tls_raw)
		srv->tls_raw = malloc(TLS_RAW_CHUNK);
	return srv->tls_raw;
}

/* Sends the records TLS made (handshake, data, alerts, close_notify). */
static int tls_flush(struct http_conn *c)
{
	size_t pending;
	int n, r;

	while (!c->closing && (pending = BIO_ctrl_pending(c->wbio))) {
		char *buf = tls_scratch(c->srv);
		uv_buf_t b;

		if (!buf) {
			conn_close(c);
			return -ENOMEM;
		}
		n = BIO_read(c->wbio, buf, (int)(pending < TLS_RAW_CHUNK ? pending : TLS_RAW_CHUNK));
		if (n <= 0) {
			conn_close(c);
			return -EIO;
		}
		b = uv_buf_init(buf, (unsigned)n);
		r = send_bytes(c, &b, 1);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Writes the pieces now: to the socket, or through TLS. */
static int write_out(struct http_conn *c, const uv_buf_t *bufs, unsigned n)
{
	size_t total = 0, off = 0;

	if (!c->ssl)
		return send_bytes(c, bufs, n);
	tls_used(c);
	{
		char small[4096];

		for (unsigned i = 0; i < n; i++)
			total += bufs[i].len;
		/* Small pieces (a head and its body) go in one record. */
		if (n > 1 && total <= sizeof(small)) {
			for (unsigned i = 0; i < n; i++) {
				memcpy(small + off, bufs[i].base, bufs[i].len);
				off += bufs[i].len;
			}
			if (SSL_write(c->ssl, small, (int)total) <= 0)
				goto tls_failed;
			return tls_flush(c);
		}
		for (unsigned i = 0; i < n; i++)
			if (bufs[i].len && SSL_write(c->ssl, bufs[i].base, (int)bufs[i].len) <= 0)
				goto tls_failed;
		return tls_flush(c);
	}
tls_failed:
	ERR_clear_error();
	conn_close(c);
	return -EIO;
}

static bool corked(const struct http_conn *c)
{
	return c->srv->cork_conn == c;
}

/* Writes what the cork gathered. */
static int cork_flush(struct http_conn *c)
{
	struct http_server *srv = c->srv;
	uv_buf_t b;

	if (!corked(c) || !srv->cork_len)
		return 0;
	b = uv_buf_init(srv->cork, (unsigned)srv->cork_len);
	srv->cork_len = 0;
	return c->closing ? -EPIPE : write_out(c, &b, 1);
}

/* Adds the pieces to the cork; false when they do not fit in it (what it held went out first). */
static bool cork_add(struct http_conn *c, const uv_buf_t *bufs, unsigned n)
{
	struct http_server *srv = c->srv;
	size_t total = 0;

	for (unsigned i = 0; i < n; i++)
		total += bufs[i].len;
	if (srv->cork_len + total > CORK_MAX && cork_flush(c) < 0)
		return true; /* the connection failed: nothing more goes out */
	if (total > CORK_MAX)
		return false;
	for (unsigned i = 0; i < n; i++) {
		memcpy(srv->cork + srv->cork_len, bufs[i].base, bufs[i].len);
		srv->cork_len += bufs[i].len;
	}
	return true;
}

static int write_bufs(struct http_conn *c, const uv_buf_t *bufs, unsigned n)
{
	if (c->closing)
		return -EPIPE;
	if (corked(c) && cork_add(c, bufs, n))
		return c->closing ? -EPIPE : 0;
	return write_out(c, bufs, n);
}

void http_conn_cork(struct http_conn *c)
{
	struct http_server *srv = c->srv;

	if (c->closing || srv->cork_conn)
		return;
	if (!srv->cork && !(srv->cork = malloc(CORK_MAX)))
		return;
	srv->cork_conn = c;
	srv->cork_len = 0;
}

void http_conn_uncork(struct http_conn *c)
{
	if (!corked(c))
		return;
	cork_flush(c);
	c->srv->cork_conn = NULL;
}

static void log_request(struct http_conn *c)
{
	struct http_request *req = &c->req;
	const char *q = memchr(req->url, '?', req->url_len);
	int plen = q ? (int)(q - req->url) : (int)req->url_len;

	/* logfmt: one request per line, never a body, a query string or a key. */
	sv_info("request method=%s path=%.*s status=%d ms=%.1f key=%s",
		req->method < 0 ? "-" : http_method_str(req->method), plen,
		req->url, req->status_code, (double)(mono_ns() - req->start_ns) / 1e6,
		req->key_name ? req->key_name : "-");
}

static void reset_request(struct http_conn *c)
{
	struct http_request *req = &c->req;

	free(req->body);
	head_put(c->srv, c->head);
	c->head = NULL;
	if (req->body_fd >= 0)
		close(req->body_fd);
	memset(req, 0, sizeof(*req));
	req->url = "";
	req->conn = c;
	req->body_fd = -1;
	req->query = "";
	c->dispatched = false;
	c->handler_done = false;
	c->finished = false;
	c->sink_paused = false;
	c->expect_continue = false;
	c->raw_body = false;
}

/* The reply is queued in full: log it and take the next request. */
static void request_done(struct http_conn *c)
{
	const struct http_handler *h = c->req.handler;

	if (c->finished)
		return;
	c->finished = true;
	/* A route that set up state for a body it never got to see lets go of it. */
	if (!c->handler_done && h && h->aborted) {
		c->handler_done = true;
		h->aborted(&c->req);
	}
	log_request(c);
	c->srv->replies[c->req.status_code >= 100 && c->req.status_code < 600 ? c->req.status_code / 100 : 0]++;
	if (!c->req.complete) {
		/* Replied before the body was in (an early error): the connection ends there. */
		c->req.body_mode = HTTP_BODY_DISCARD;
		c->req.handler = NULL;
		c->keep_alive = false;
	}
	if (!c->keep_alive || c->peer_eof) {
		if (!c->write_queued)
			conn_linger(c);
		else
			c->close_after_write = true;
		return;
	}
	reset_request(c);
	http_head_scan_init(&c->scan);
	c->in_head = true;
	c->request_begun = false;
	/* Bytes that came while the reply was under way are the next request's. */
	if (c->in_len > c->in_off)
		request_begins(c);
	else
		idle_timer(c);
	http_parser_pause(&c->parser, 0);
	pump(c);
}

static void reply_fd_more(struct http_conn *c)
{
	char *buf;
	ssize_t n;
	uv_buf_t b;

	if (!c->reply_left) {
		close(c->reply_fd);
		c->reply_fd = -1;
		request_done(c);
		return;
	}
	buf = malloc(FD_REPLY_CHUNK);
	if (!buf) {
		conn_close(c);
		return;
	}
	n = read(c->reply_fd, buf, c->reply_left < FD_REPLY_CHUNK ? c->reply_left : FD_REPLY_CHUNK);
	if (n <= 0) {
		/* The spooled file shrank under us: the length already sent cannot be kept. */
		sv_err("reply file read failed: %s", n < 0 ? strerror(errno) : "short file");
		free(buf);
		conn_close(c);
		return;
	}
	c->reply_left -= (uint64_t)n;
	b = uv_buf_init(buf, (unsigned)n);
	write_bufs(c, &b, 1);
	free(buf);
}

static void maybe_drained(struct http_conn *c)
{
	struct http_request *req = &c->req;

	if (c->write_queued)
		return;
	if (c->relay) {
		if (c->relay_closing)
			conn_linger(c);
		else if (c->relay->drained)
			c->relay->drained(c->relay_ctx);
		return;
	}
	if (c->reply_fd >= 0) {
		reply_fd_more(c);
		return;
	}
	if (req->streaming && req->handler && req->handler->drained) {
		req->handler->drained(req);
		return;
	}
	if (c->close_after_write)
		conn_linger(c);
}

/* A reply head, then body (len bytes, may be 0) in the same write: one segment, one TLS flush. */
static void write_head(struct http_request *req, int status, const char *content_type,
		       const char *length_header, const void *body, size_t len)
{
	struct http_conn *c = req->conn;
	char head[512];
	int n;
	uv_buf_t b[2];

	req->status_code = status;
	if (!req->complete)
		c->keep_alive = false;
	n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n%s%s%s%s%s\r\n", status,
		     http_status_text(status), content_type ? "Content-Type: " : "",
		     content_type ? content_type : "", content_type ? "\r\n" : "", length_header,
		     c->keep_alive ? "" : "Connection: close\r\n");
	b[0] = uv_buf_init(head, (unsigned)n);
	b[1] = uv_buf_init((char *)body, (unsigned)len);
	write_bufs(c, b, len ? 2 : 1);
}

void http_respond(struct http_request *req, int status, const char *content_type, const void *body,
		  size_t len)
{
	struct http_conn *c = req->conn;
	char length[64];

	if (req->responded)
		return;
	req->responded = true;
	snprintf(length, sizeof(length), "Content-Length: %zu\r\n", len);
	write_head(req, status, len ? content_type : NULL, length, body, len);
	request_done(c);
}

/* A JSON reply's text is kept for the next one up to this size; a larger one is let go. */
#define JSON_TEXT_KEEP (64 * 1024)

void http_respond_json(struct http_request *req, int status, void *json)
{
	struct http_server *srv = req->conn->srv;
	/* Taken from the server while in use: finishing this reply may answer the next pipelined request. */
	struct json_text text = srv->json;
	int r;

	memset(&srv->json, 0, sizeof(srv->json));
	r = json_text_write(&text, json);
	cJSON_Delete(json);
	if (r < 0)
		http_respond(req, 500, "text/plain", "out of memory\n", 14);
	else
		http_respond(req, status, "application/json", text.buf, text.len);
	if (!srv->json.buf && text.cap <= JSON_TEXT_KEEP)
		srv->json = text;
	else
		json_text_free(&text);
}

void http_respond_error(struct http_request *req, int status, const char *field, const char *fmt, ...)
{
	char msg[1024];
	cJSON *o = cJSON_CreateObject();
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cJSON_AddStringToObject(o, "error", msg);
	if (field)
		cJSON_AddStringToObject(o, "field", field);
	http_respond_json(req, status, o);
}

void http_respond_fd(struct http_request *req, int status, const char *content_type, int fd, uint64_t len)
{
	struct http_conn *c = req->conn;
	char length[64];

	if (req->responded || c->closing) {
		close(fd);
		return;
	}
	req->responded = true;
	if (lseek(fd, 0, SEEK_SET) < 0) {
		close(fd);
		conn_close(c);
		return;
	}
	/*
	 * Set before the head is written, so the head is queued, not written at
	 * once: the file follows each time the socket took the last piece.
	 */
	c->reply_fd = fd;
	c->reply_left = len;
	snprintf(length, sizeof(length), "Content-Length: %llu\r\n", (unsigned long long)len);
	write_head(req, status, content_type, length, NULL, 0);
}

void http_stream_begin(struct http_request *req, int status, const char *content_type)
{
	if (req->responded)
		return;
	req->responded = true;
	req->streaming = true;
	write_head(req, status, content_type, "Transfer-Encoding: chunked\r\n", NULL, 0);
	reply_quiet_timer(req->conn);
}

size_t http_stream_write(struct http_request *req, const void *data, size_t len)
{
	struct http_conn *c = req->conn;
	char size[32];
	uv_buf_t b[3];

	if (!req->streaming || c->closing || !len)
		return c->write_queued;
	if (c->raw_body) {
		b[0] = uv_buf_init((char *)data, (unsigned)len);
		write_bufs(c, b, 1);
		reply_quiet_timer(c);
		return c->write_queued;
	}
	b[0] = uv_buf_init(size, (unsigned)snprintf(size, sizeof(size), "%zx\r\n", len));
	b[1] = uv_buf_init((char *)data, (unsigned)len);
	b[2] = uv_buf_init("\r\n", 2);
	write_bufs(c, b, 3);
	reply_quiet_timer(c);
	return c->write_queued;
}

void http_stream_end(struct http_request *req)
{
	struct http_conn *c = req->conn;
	uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);

	if (!req->streaming)
		return;
	req->streaming = false;
	if (!c->raw_body)
		write_bufs(c, &b, 1);
	request_done(c);
}

void http_stream_begin_fields(struct http_request *req, int status, const char *fields, size_t fields_len,
			      enum http_reply_framing framing, uint64_t length)
{
	struct http_conn *c = req->conn;
	char line[96], tail[96];
	uv_buf_t b[3];
	int n, t;

	if (req->responded)
		return;
	req->responded = true;
	req->status_code = status;
	if (!req->complete)
		c->keep_alive = false;
	n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
	t = snprintf(tail, sizeof(tail), "%s%s\r\n",
		     framing == HTTP_REPLY_CHUNKED ? "Transfer-Encoding: chunked\r\n" : "",
		     c->keep_alive ? "" : "Connection: close\r\n");
	if (framing == HTTP_REPLY_LENGTH)
		t = snprintf(tail, sizeof(tail), "Content-Length: %llu\r\n%s\r\n", (unsigned long long)length,
			     c->keep_alive ? "" : "Connection: close\r\n");
	b[0] = uv_buf_init(line, (unsigned)n);
	b[1] = uv_buf_init((char *)fields, (unsigned)fields_len);
	b[2] = uv_buf_init(tail, (unsigned)t);
	write_bufs(c, b, 3);
	if (framing == HTTP_REPLY_NONE) {
		request_done(c);
		return;
	}
	req->streaming = true;
	c->raw_body = framing == HTTP_REPLY_LENGTH;
	reply_quiet_timer(c);
}

/* ---- parsing ---- */

static struct http_conn *conn_of(http_parser *p)
{
	return p->data;
}

static int on_message_begin(http_parser *p)
{
	struct http_conn *c = conn_of(p);

	reset_request(c);
	c->req.start_ns = mono_ns();
	c->head = head_get(c->srv);
	if (!c->head)
		return -1;
	http_headers_init(&c->head->headers);
	c->head->url[0] = '\0';
	c->req.headers = &c->head->headers;
	c->req.url = c->head->url;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = conn_of(p);
	struct http_request *req = &c->req;

	if (req->url_len + len >= sizeof(c->head->url))
		return -1;
	memcpy(c->head->url + req->url_len, at, len);
	req->url_len += len;
	c->head->url[req->url_len] = '\0';
	return 0;
}

/* The head scanner bounds every field before the parser sees it; the list bounds them again. */
static int on_header_field(http_parser *p, const char *at, size_t len)
{
	return http_headers_add_name(conn_of(p)->req.headers, at, len) < 0 ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	return http_headers_add_value(conn_of(p)->req.headers, at, len) < 0 ? -1 : 0;
}

/* What the head says that the connection itself acts on; a reply when it is refused. */
static bool judge_head(struct http_conn *c, http_parser *p)
{
	struct http_request *req = &c->req;
	const struct http_headers *h = req->headers;
	const char *v;
	size_t len = 0;

	/* RFC 9112 section 3.2: exactly one Host in HTTP/1.1. */
	if (p->http_major == 1 && p->http_minor >= 1 && http_headers_count_of(h, "host") != 1) {
		http_respond_error(req, 400, NULL, "malformed HTTP request: %s",
				   http_headers_count_of(h, "host") ? "more than one Host header" : "no Host header");
		return false;
	}
	if (http_headers_count_of(h, "authorization") > 1) {
		http_respond_error(req, 400, NULL, "malformed HTTP request: more than one Authorization header");
		return false;
	}
	v = http_headers_get(h, "authorization", &len);
	if (v) {
		if (len >= sizeof(req->auth)) {
			http_respond_error(req, 400, NULL, "malformed HTTP request: Authorization header is too long");
			return false;
		}
		memcpy(req->auth, v, len + 1);
		req->auth_len = len;
	}
	v = http_headers_get(h, "expect", NULL);
	c->expect_continue = v && !strcasecmp(v, "100-continue");
	return true;
}

static int on_headers_complete(http_parser *p)
{
	struct http_conn *c = conn_of(p);
	struct http_request *req = &c->req;
	char *q;

	http_headers_finish(req->headers);
	req->headers_done = true;
	req->method = p->method;
	req->upgrade = p->upgrade;
	req->chunked = (p->flags & F_CHUNKED) != 0;
	req->has_length = (p->flags & F_CONTENTLENGTH) != 0;
	req->content_length = req->has_length ? p->content_length : 0;
	c->keep_alive = http_should_keep_alive(p) && !p->upgrade;
	q = strchr(c->head->url, '?');
	if (q) {
		req->query = q + 1;
	}
	/* The head is in: the route takes as long as it needs. */
	timer_stop(c);
	if (!judge_head(c, p))
		return 0;
	c->srv->route(req, c->srv->route_ctx);
	body_timer(c);
	if (!req->responded && req->body_mode != HTTP_BODY_DISCARD && (p->flags & F_CONTENTLENGTH) &&
	    p->content_length > req->body_limit) {
		http_respond_error(req, 413, NULL, "request body of %llu bytes is over the limit of %zu",
				   (unsigned long long)p->content_length, req->body_limit);
	}
	if (!req->responded && c->expect_continue) {
		uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);

		write_bufs(c, &b, 1);
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = conn_of(p);
	struct http_request *req = &c->req;
	int r;

	body_timer(c); /* bytes came: the body's time limit starts again */

	switch (req->body_mode) {
	case HTTP_BODY_DISCARD:
		return 0;
	case HTTP_BODY_BUFFER:
		if (req->body_too_large || req->body_len + len > req->body_limit) {
			req->body_too_large = true;
			return 0;
		}
		if (!req->body) {
			req->body = malloc(req->body_limit + 1);
			if (!req->body)
				return -1;
		}
		memcpy(req->body + req->body_len, at, len);
		req->body_len += len;
		req->body[req->body_len] = '\0';
		return 0;
	case HTTP_BODY_FILE:
		if (req->body_too_large || req->body_len + len > req->body_limit) {
			req->body_too_large = true;
			return 0;
		}
		while (len) {
			ssize_t n = write(req->body_fd, at, len);

			if (n < 0) {
				if (errno == EINTR)
					continue;
				sv_err("spooling a request body: %s", strerror(errno));
				return -1;
			}
			at += n;
			len -= (size_t)n;
			req->body_len += (size_t)n;
		}
		return 0;
	case HTTP_BODY_SINK:
		req->body_len += len;
		r = req->handler->sink(req, at, len);
		if (r < 0)
			return -1;
		if (r > 0) {
			c->sink_paused = true;
			http_parser_pause(p, 1);
		}
		return 0;
	}
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct http_conn *c = conn_of(p);

	c->req.complete = true;
	timer_stop(c);
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

static void dispatch_complete(struct http_conn *c)
{
	struct http_request *req = &c->req;

	if (req->responded)
		return; /* an early error reply, already done */
	if (req->body_too_large) {
		http_respond_error(req, 413, NULL, "request body is over the limit of %zu bytes", req->body_limit);
		return;
	}
	if (req->upgrade && !req->accepts_upgrade) {
		http_respond_error(req, 400, NULL, "malformed HTTP request: protocol upgrade is not supported");
		return;
	}
	c->handler_done = true;
	if (req->handler && req->handler->complete)
		req->handler->complete(req);
	else
		http_respond_error(req, 404, NULL, "no such route");
}

static void update_reading(struct http_conn *c);
static void pump_input(struct http_conn *c);
static void on_limit_timeout(uv_timer_t *t);

/* A request the connection cannot take: answered (once) and the connection ends. */
static void refuse_request(struct http_conn *c, int status, const char *why)
{
	struct http_request *req = &c->req;

	sv_debug("bad request: %s", why);
	if (req->responded || c->closing) {
		conn_close(c);
		return;
	}
	c->keep_alive = false;
	req->complete = true;
	c->dispatched = true;
	if (!req->url_len) {
		req->url = "-"; /* for the log */
		req->url_len = 1;
	}
	if (!req->headers_done)
		req->method = -1; /* for the log: none was read */
	http_respond_error(req, status, NULL, "malformed HTTP request: %s", why);
}

/* How many of the avail bytes the parser may see now: a head only once the scanner passed it. */
static bool scan_head(struct http_conn *c, size_t avail, size_t *feed)
{
	int status = 400, r;
	const char *why = "";

	if (!c->in_head) {
		*feed = avail;
		return true;
	}
	r = http_head_scan(&c->scan, c->in + c->in_off, avail, feed, &status, &why);
	if (r < 0) {
		refuse_request(c, status, why);
		return false;
	}
	if (r == 1)
		c->in_head = false;
	return true;
}

/* The whole request is in and its route has it: the reply is under way. */
static bool awaits_reply(const struct http_conn *c)
{
	return c->req.complete && c->dispatched;
}

/* The parser takes more input now (not waiting for a reply or a sink). */
static bool wants_input(const struct http_conn *c)
{
	return !c->closing && !c->lingering && !c->relay && !c->sink_paused && !awaits_reply(c);
}

/*
 * Runs the TLS handshake on, then decrypts what rbio holds into the input
 * buffer while it has room. True when plaintext was added.
 */
static bool tls_fill(struct http_conn *c)
{
	bool added = false, handshake = false;
	int r, e;

	if (!c->ssl || c->closing || c->lingering)
		return false;
	tls_used(c);
	if (!c->tls_ready) {
		handshake = true;
		r = SSL_do_handshake(c->ssl);
		tls_flush(c);
		if (r != 1) {
			e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return false;
			/* A TLS 1.2 client, a bad record: the alert is queued; send it, then close. */
			c->srv->tls_failed++;
			sv_debug("TLS handshake failed: %s", ERR_reason_error_string(ERR_peek_error()));
			ERR_clear_error();
			conn_linger(c);
			return false;
		}
		c->tls_ready = true;
		if (c->srv->tls_done) {
			/* Before any HTTP: the owner may take the connection (tunnels). */
			c->srv->tls_done(c, c->srv->tls_done_ctx);
			if (c->closing || c->relay)
				return false;
		}
	}
	for (;;) {
		if (!input_alloc(c, CONN_INPUT_MAX)) {
			conn_close(c);
			return false;
		}
		input_compact(c);
		if (c->in_len == CONN_INPUT_MAX)
			break;
		r = SSL_read(c->ssl, c->in + c->in_len, (int)(CONN_INPUT_MAX - c->in_len));
		if (r > 0) {
			c->in_len += (size_t)r;
			added = true;
			continue;
		}
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			break;
		/* close_notify (the client is done, as at EOF) or a broken record. */
		ERR_clear_error();
		conn_close(c);
		return false;
	}
	tls_flush(c);
	if (handshake && !added && !c->closing)
		tls_release(c); /* a client that connects ahead of its first request */
	if (added)
		request_begins(c);
	return added;
}

static void hand_over_now(struct http_conn *c);

static void pump(struct http_conn *c)
{
	if (c->in_pump || c->relay)
		return;
	c->in_pump = true;
	for (;;) {
		pump_input(c);
		if (!c->ssl || !wants_input(c) || !tls_fill(c))
			break;
	}
	c->in_pump = false;
	update_reading(c);
}

/* Parses and dispatches what the input buffer holds. */
static void pump_input(struct http_conn *c)
{
	while (!c->closing && !c->lingering && !c->relay) {
		struct http_request *req = &c->req;
		size_t n, avail, feed;
		enum http_errno err;

		if (req->complete && !c->dispatched) {
			c->dispatched = true;
			dispatch_complete(c);
			if (req->complete && c->dispatched && !req->responded)
				reply_quiet_timer(c); /* answered later */
			continue;
		}
		if ((req->complete && c->dispatched) || c->sink_paused)
			break; /* waiting for the reply, or for the sink */
		avail = c->in_len - c->in_off;
		if (!avail)
			break;
		if (!scan_head(c, avail, &feed))
			break;
		n = http_parser_execute(&c->parser, &parser_settings, c->in + c->in_off, feed);
		if (c->hand_ops && !c->closing) {
			/* The head ended the bytes fed (the scanner stops there): the rest is the relay's. */
			c->in_off += feed;
			hand_over_now(c);
			break;
		}
		c->in_off += n;
		err = HTTP_PARSER_ERRNO(&c->parser);
		if (err == HPE_PAUSED)
			continue;
		if (err != HPE_OK) {
			refuse_request(c, 400, http_errno_description(err));
			break;
		}
		if (c->parser.upgrade && req->complete)
			continue; /* the bytes after an upgrade request are not HTTP: dispatch it */
		if (n < feed) {
			refuse_request(c, 400, "request framing");
			break;
		}
	}
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
}

void http_conn_resume(struct http_conn *c)
{
	if (!c->sink_paused || c->closing)
		return;
	c->sink_paused = false;
	http_parser_pause(&c->parser, 0);
	pump(c);
}

/* Ciphertext goes into the server's one buffer (one read at a time on the loop) and on into rbio at once. */
static void tls_raw_buf(struct http_conn *c, uv_buf_t *buf)
{
	char *raw = tls_scratch(c->srv);

	*buf = uv_buf_init(raw, raw ? TLS_RAW_CHUNK : 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct http_conn *c = h->data;

	(void)suggested;
	if (c->ssl) {
		tls_raw_buf(c, buf);
		return;
	}
	if (!input_alloc(c, CONN_INPUT_MAX)) {
		*buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: the connection ends */
		return;
	}
	input_compact(c);
	*buf = uv_buf_init(c->in + c->in_len, (unsigned)(CONN_INPUT_MAX - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct http_conn *c = s->data;

	if (n == UV_EOF && awaits_reply(c)) {
		/* The client ended its side after its request: the reply still goes, then the connection ends. */
		c->peer_eof = true;
		c->reading = false; /* libuv stopped reading */
		return;
	}
	if (n < 0) {
		conn_close(c);
		return;
	}
	if (c->ssl) {
		if (n > 0 && BIO_write(c->rbio, buf->base, (int)n) != (int)n) {
			conn_close(c);
			return;
		}
		if (wants_input(c) && tls_fill(c))
			pump(c);
		else
			update_reading(c);
		return;
	}
	if (n > 0)
		request_begins(c);
	c->in_len += (size_t)n;
	pump(c);
}

/* Between requests, a connection keeps no input buffer. */
static void release_input(struct http_conn *c)
{
	if (c->in && !c->in_pump && c->in_len == c->in_off && !c->request_begun && !c->lingering)
		input_free(c);
}

/* Input read and not yet parsed: plaintext, or ciphertext not yet decrypted. */
static bool input_waiting(const struct http_conn *c)
{
	return c->in_len > c->in_off || (c->ssl && BIO_ctrl_pending(c->rbio));
}

/*
 * While a reply is under way the connection reads on (stopping and starting
 * the watcher cost two or three system calls a request) until the first
 * bytes of a next request, or the client's end, come: then it stops, and
 * those wait unparsed until the reply is done.
 */
static void update_reading(struct http_conn *c)
{
	bool want;

	if (c->closing || c->lingering || c->relay)
		return;
	release_input(c);
	want = !c->sink_paused && !c->peer_eof && c->in_len < CONN_INPUT_MAX &&
	       (!c->ssl || BIO_ctrl_pending(c->rbio) < TLS_RAW_MAX) && (!awaits_reply(c) || !input_waiting(c));
	if (want && !c->reading) {
		if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
	}
}

static void on_limit_timeout(uv_timer_t *t)
{
	struct http_conn *c = t->data;

	if (c->closing || c->lingering || c->relay)
		return;
	c->srv->timed_out++;
	if (c->request_begun && !c->req.responded && !c->req.complete) {
		/* A head (or, for a new client, anything at all) or a body that did not come in time. */
		refuse_request(c, 408, c->req.headers_done ? "the request body stalled"
							   : "the request head did not arrive in time");
		return;
	}
	conn_close(c);
}

/* ---- the server ---- */

void http_server_init(struct http_server *srv, uv_loop_t *loop, http_route_fn route, void *route_ctx)
{
	memset(srv, 0, sizeof(*srv));
	srv->loop = loop;
	srv->route = route;
	srv->route_ctx = route_ctx;
	srv->max_connections = HTTP_DEFAULT_MAX_CONNECTIONS;
	srv->header_timeout_ms = HTTP_DEFAULT_HEADER_TIMEOUT_MS;
	srv->idle_timeout_ms = HTTP_DEFAULT_IDLE_TIMEOUT_MS;
	srv->body_timeout_ms = HTTP_DEFAULT_BODY_TIMEOUT_MS;
	srv->tls_quiet_ms = HTTP_DEFAULT_TLS_QUIET_MS;
}

void http_server_destroy(struct http_server *srv)
{
	free(srv->tls_raw);
	srv->tls_raw = NULL;
	free(srv->cork);
	srv->cork = NULL;
	json_text_free(&srv->json);
	while (srv->heads_pooled)
		free(srv->head_pool[--srv->heads_pooled]);
	while (srv->inputs_pooled)
		free(srv->input_pool[--srv->inputs_pooled]);
}

/* The oldest connection with no request under way, or NULL. */
static struct http_conn *oldest_idle(struct http_server *srv)
{
	struct http_conn *best = NULL;

	for (struct http_conn *c = srv->conns; c; c = c->next)
		if (!c->request_begun && !c->relay && !c->closing && (!best || c->accepted_ns < best->accepted_ns))
			best = c;
	return best;
}

/* A new connection's handle, made room for and linked; NULL with *err. */
static struct http_conn *conn_new(struct http_server *srv, bool is_pipe, int *err)
{
	struct http_conn *c, *victim;
	int r;

	if (srv->max_connections && srv->connections >= srv->max_connections) {
		victim = oldest_idle(srv);
		if (victim) {
			srv->evicted++;
			conn_close(victim);
		}
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		*err = -ENOMEM;
		return NULL;
	}
	c->srv = srv;
	c->refs = 1;
	c->reply_fd = -1;
	c->req.body_fd = -1;
	c->keep_alive = true;
	c->accepted_ns = mono_ns();
	r = is_pipe ? uv_pipe_init(srv->loop, &c->h.pipe, 0) : uv_tcp_init(srv->loop, &c->h.tcp);
	if (r < 0) {
		free(c);
		*err = r;
		return NULL;
	}
	c->h.handle.data = c;
	srv->connections++;
	srv->accepted++;
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	reset_request(c);
	if (uv_timer_init(srv->loop, &c->timer) == 0) {
		c->timer.data = c;
		c->timer_open = true;
	}
	if (srv->tls) {
		c->ssl = SSL_new(srv->tls);
		c->rbio = BIO_new(BIO_s_mem());
		c->wbio = BIO_new(BIO_s_mem());
		if (!c->ssl || !c->rbio || !c->wbio) {
			BIO_free(c->rbio);
			BIO_free(c->wbio);
			c->rbio = c->wbio = NULL; /* conn_start closes the connection */
		} else {
			SSL_set_bio(c->ssl, c->rbio, c->wbio); /* the SSL owns both now */
			SSL_set_accept_state(c->ssl);
		}
	}
	return c;
}

/* The handle holds its socket: start serving it, or close it (r < 0: why the socket failed). */
static int conn_start(struct http_conn *c, int r)
{
	struct http_server *srv = c->srv;

	if (r < 0 || !c->timer_open || (srv->tls && !c->rbio)) {
		conn_close(c);
		return r < 0 ? r : -ENOMEM;
	}
	if (srv->max_connections && srv->connections > srv->max_connections) {
		/* Every other connection is busy: this one cannot be served. */
		srv->refused++;
		conn_close(c);
		return -EMFILE;
	}
	/* Replies are whole writes: waiting to coalesce them only adds a delayed-ACK round trip. */
	if (c->h.handle.type == UV_TCP)
		uv_tcp_nodelay(&c->h.tcp, 1);
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	http_head_scan_init(&c->scan);
	c->in_head = true;
	/* A client that connects and sends nothing has the head's time limit. */
	timer_arm(c, on_limit_timeout, srv->header_timeout_ms);
	update_reading(c);
	return 0;
}

int http_conn_accept(struct http_server *srv, uv_stream_t *listener)
{
	int r = 0;
	struct http_conn *c = conn_new(srv, listener->type == UV_NAMED_PIPE, &r);

	if (!c)
		return r;
	return conn_start(c, uv_accept(listener, &c->h.stream));
}

int http_conn_adopt(struct http_server *srv, int fd)
{
	uv_handle_type type = uv_guess_handle(fd);
	struct http_conn *c;
	int r = 0;

	if (type != UV_NAMED_PIPE && type != UV_TCP)
		return -ENOTSOCK;
	c = conn_new(srv, type == UV_NAMED_PIPE, &r);
	if (!c)
		return r;
	r = type == UV_NAMED_PIPE ? uv_pipe_open(&c->h.pipe, fd) : uv_tcp_open(&c->h.tcp, fd);
	if (r < 0)
		close(fd); /* the handle never took it */
	return conn_start(c, r);
}

const char *http_request_header(const struct http_request *req, const char *name)
{
	return req->headers ? http_headers_get(req->headers, name, NULL) : NULL;
}

/* ---- relays ---- */

static void on_relay_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct http_conn *c = h->data;

	(void)suggested;
	if (c->ssl) {
		tls_raw_buf(c, buf);
		return;
	}
	if (!c->in && !input_alloc(c, RELAY_READ_CHUNK)) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf = uv_buf_init(c->in, RELAY_READ_CHUNK);
}

/* Hands the relay what TLS can decrypt now, until it pauses. */
static void relay_tls_deliver(struct http_conn *c)
{
	tls_used(c);
	while (!c->closing && !c->relay_closing && !c->relay_paused && !c->relay_eof) {
		int r, e;

		if (!c->in && !input_alloc(c, RELAY_READ_CHUNK)) {
			conn_close(c);
			return;
		}
		r = SSL_read(c->ssl, c->in, RELAY_READ_CHUNK);
		if (r > 0) {
			if (c->relay->data(c->relay_ctx, c->in, (size_t)r) > 0)
				c->relay_paused = true;
			continue;
		}
		e = SSL_get_error(c->ssl, r);
		ERR_clear_error();
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			/* close_notify: the client ended its side. */
			c->relay_eof = true;
			if (c->relay->closed)
				c->relay->closed(c->relay_ctx, 0);
			return;
		}
		conn_close(c);
		return;
	}
	tls_flush(c);
}

static void relay_update_reading(struct http_conn *c);

static void on_relay_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct http_conn *c = s->data;

	if (n == UV_EOF) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
		c->relay_eof = true;
		if (c->relay->closed)
			c->relay->closed(c->relay_ctx, 0);
		return;
	}
	if (n < 0) {
		conn_close(c);
		return;
	}
	if (c->ssl) {
		if (n > 0 && BIO_write(c->rbio, buf->base, (int)n) != (int)n) {
			conn_close(c);
			return;
		}
		relay_tls_deliver(c);
		relay_update_reading(c);
		return;
	}
	if (n > 0 && c->relay->data(c->relay_ctx, c->in, (size_t)n) > 0)
		http_relay_pause(c);
}

static void relay_update_reading(struct http_conn *c)
{
	bool want = !c->closing && !c->relay_paused && !c->relay_eof && !c->relay_closing &&
		    (!c->ssl || BIO_ctrl_pending(c->rbio) < TLS_RAW_MAX);

	if (want && !c->reading) {
		if (uv_read_start(&c->h.stream, on_relay_alloc, on_relay_read) == 0)
			c->reading = true;
		else
			conn_close(c);
	} else if (!want && c->reading) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
	}
}

/* The connection becomes a byte pipe to ops: no more HTTP reads or timers. */
static void relay_attach(struct http_conn *c, const struct http_relay_ops *ops, void *ctx)
{
	if (c->reading) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
	}
	timer_stop(c);
	c->relay = ops;
	c->relay_ctx = ctx;
}

/* Once the relay holds what was read before: decrypted bytes, an end the client already sent, then reading. */
static void relay_flow(struct http_conn *c)
{
	if (c->ssl)
		relay_tls_deliver(c);
	if (c->peer_eof && !c->closing && !c->relay_closing && !c->relay_eof) {
		/* The client ended its side before the relay began. */
		c->relay_eof = true;
		if (c->relay->closed)
			c->relay->closed(c->relay_ctx, 0);
	}
	if (!c->closing)
		relay_update_reading(c);
}

/* From here on the connection is a byte pipe: what was read past the request goes to ops first. */
static int relay_begin(struct http_conn *c, const struct http_relay_ops *ops, void *ctx)
{
	size_t left;
	char *rest = NULL;

	relay_attach(c, ops, ctx);
	left = c->in ? c->in_len - c->in_off : 0;
	if (left) {
		rest = malloc(left);
		if (!rest) {
			conn_close(c);
			return -ENOMEM;
		}
		memcpy(rest, c->in + c->in_off, left);
	}
	input_free(c);
	if (left) {
		int r = ops->data(ctx, rest, left);

		free(rest);
		if (c->closing || c->relay_closing)
			return 0;
		if (r > 0)
			c->relay_paused = true;
	}
	relay_flow(c);
	return 0;
}

int http_conn_detach(struct http_request *req, int status, const char *headers, const struct http_relay_ops *ops,
		     void *ctx)
{
	struct http_conn *c = req->conn;

	if (!ops || !ops->data || req->responded || !req->complete || c->closing)
		return -EINVAL;
	if (c->reply_fd >= 0 || c->sink_paused)
		return -EBUSY;
	req->responded = true;
	req->status_code = status;
	c->handler_done = true;
	c->finished = true;
	{
		char line[96];
		int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
		uv_buf_t b[3];

		b[0] = uv_buf_init(line, (unsigned)n);
		b[1] = uv_buf_init((char *)(headers ? headers : ""), headers ? (unsigned)strlen(headers) : 0);
		b[2] = uv_buf_init("\r\n", 2);
		if (write_bufs(c, b, 3) < 0)
			return -EPIPE;
	}
	log_request(c);
	return relay_begin(c, ops, ctx);
}

int http_conn_hand_over(struct http_request *req, const struct http_relay_ops *ops, void *ctx)
{
	struct http_conn *c = req->conn;

	if (!ops || !ops->data || req->responded || !req->headers_done || req->complete || c->closing || c->relay ||
	    c->hand_ops)
		return -EINVAL;
	req->responded = true; /* the relay's peer answers */
	req->status_code = 0;  /* unknown here: the log says 0 */
	c->handler_done = true;
	c->finished = true;
	c->hand_ops = ops;
	c->hand_ctx = ctx;
	http_parser_pause(&c->parser, 1);
	return 0;
}

static void hand_over_now(struct http_conn *c)
{
	const struct http_relay_ops *ops = c->hand_ops;

	c->hand_ops = NULL;
	log_request(c);
	relay_begin(c, ops, c->hand_ctx);
}

int http_conn_take(struct http_conn *c, const struct http_relay_ops *ops, void *ctx)
{
	if (!ops || !ops->data || c->closing || c->relay || !c->ssl || !c->tls_ready)
		return -EINVAL;
	if (c->request_begun || (c->in && c->in_len > c->in_off))
		return -EBUSY;
	relay_attach(c, ops, ctx);
	input_free(c);
	relay_flow(c);
	return 0;
}

size_t http_relay_write(struct http_conn *c, const void *data, size_t len)
{
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

	if (c->relay && !c->closing && !c->relay_closing && len)
		write_bufs(c, &b, 1);
	return c->write_queued;
}

void http_relay_pause(struct http_conn *c)
{
	c->relay_paused = true;
	relay_update_reading(c);
}

void http_relay_resume(struct http_conn *c)
{
	c->relay_paused = false;
	if (c->ssl && c->relay)
		relay_tls_deliver(c); /* what was decrypted-to-be while paused */
	relay_update_reading(c);
}

void http_relay_close(struct http_conn *c)
{
	if (!c->relay || c->closing || c->relay_closing)
		return;
	c->relay_closing = true;
	if (c->reading) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
	}
	if (!c->write_queued)
		conn_linger(c);
	/* else maybe_drained lingers once the queue is out */
}
