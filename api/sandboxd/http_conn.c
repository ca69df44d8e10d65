#include "http_conn.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <http_parser.h>
#include <stdarg.h>
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

enum header_state { HDR_NONE, HDR_AUTH, HDR_EXPECT, HDR_OTHER };

struct http_conn {
	union {
		uv_pipe_t pipe;
		uv_tcp_t tcp;
		uv_handle_t handle;
		uv_stream_t stream;
	} h;
	struct http_server *srv;
	http_parser parser;
	struct http_request req;
	unsigned refs;
	bool closing, in_pump, dispatched, sink_paused, keep_alive, reading, expect_continue;
	bool close_after_write, handler_done, finished;
	bool lingering, linger_timer_open;
	uv_timer_t linger_timer;
	uv_shutdown_t shutdown_req;
	size_t linger_bytes;
	char field[32];
	size_t field_len;
	char *in;
	size_t in_len, in_off;
	size_t write_queued;
	int reply_fd;
	uint64_t reply_left;
};

struct conn_write {
	uv_write_t w;
	struct http_conn *conn;
	size_t len;
	char data[];
};

static void pump(struct http_conn *c);
static void conn_close(struct http_conn *c);

static uint64_t mono_ns(void)
{
	return uv_hrtime();
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
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
	free(c->in);
	free(c->req.body);
	if (c->req.body_fd >= 0)
		close(c->req.body_fd);
	if (c->reply_fd >= 0)
		close(c->reply_fd);
	c->srv->connections--;
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

static void on_linger_timer_closed(uv_handle_t *h)
{
	http_conn_unref(h->data);
}

static void conn_close(struct http_conn *c)
{
	struct http_request *req = &c->req;

	if (c->closing)
		return;
	c->closing = true;
	/* A reply still owed (or streaming) will never reach anyone. */
	if (req->url_len && (!req->responded || req->streaming || !c->handler_done) && req->handler &&
	    req->handler->aborted)
		req->handler->aborted(req);
	if (c->linger_timer_open) {
		c->linger_timer_open = false;
		http_conn_ref(c);
		uv_close((uv_handle_t *)&c->linger_timer, on_linger_timer_closed);
	}
	uv_close(&c->h.handle, on_closed);
}

/* ---- lingering close ---- */

static void on_linger_timeout(uv_timer_t *t)
{
	conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *sr, int status)
{
	struct http_conn *c = sr->data;

	if (status < 0 && status != UV_ECANCELED)
		conn_close(c);
	http_conn_unref(c);
}

static void on_linger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct http_conn *c = h->data;

	(void)suggested;
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
	c->lingering = true;
	if (c->reading) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
	}
	c->in_off = c->in_len = 0;
	c->shutdown_req.data = c;
	if (uv_shutdown(&c->shutdown_req, &c->h.stream, on_shutdown) < 0) {
		conn_close(c);
		return;
	}
	http_conn_ref(c);
	if (uv_read_start(&c->h.stream, on_linger_alloc, on_linger_read) < 0 ||
	    uv_timer_init(c->h.handle.loop, &c->linger_timer) < 0) {
		conn_close(c);
		return;
	}
	c->linger_timer.data = c;
	c->linger_timer_open = true;
	uv_timer_start(&c->linger_timer, on_linger_timeout, LINGER_MS, 0);
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

static int write_bufs(struct http_conn *c, const uv_buf_t *bufs, unsigned n)
{
	struct conn_write *cw;
	size_t total = 0, off = 0;
	uv_buf_t b;
	int r;

	if (c->closing)
		return -EPIPE;
	for (unsigned i = 0; i < n; i++)
		total += bufs[i].len;
	cw = malloc(sizeof(*cw) + total);
	if (!cw) {
		conn_close(c);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		memcpy(cw->data + off, bufs[i].base, bufs[i].len);
		off += bufs[i].len;
	}
	cw->conn = c;
	cw->len = total;
	b = uv_buf_init(cw->data, total);
	r = uv_write(&cw->w, &c->h.stream, &b, 1, on_written);
	if (r < 0) {
		free(cw);
		conn_close(c);
		return r;
	}
	c->write_queued += total;
	http_conn_ref(c);
	return 0;
}

static void log_request(struct http_conn *c)
{
	struct http_request *req = &c->req;
	const char *q = memchr(req->url, '?', req->url_len);
	int plen = q ? (int)(q - req->url) : (int)req->url_len;

	/* logfmt: one request per line, never a body, a query string or a key. */
	sv_info("request method=%s path=%.*s status=%d ms=%.1f key=%s", http_method_str(req->method), plen,
		req->url, req->status_code, (double)(mono_ns() - req->start_ns) / 1e6,
		req->key_name ? req->key_name : "-");
}

static void reset_request(struct http_conn *c)
{
	struct http_request *req = &c->req;

	free(req->body);
	if (req->body_fd >= 0)
		close(req->body_fd);
	memset(req, 0, sizeof(*req));
	req->conn = c;
	req->body_fd = -1;
	req->query = "";
	c->dispatched = false;
	c->handler_done = false;
	c->finished = false;
	c->sink_paused = false;
	c->expect_continue = false;
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
	if (!c->req.complete) {
		/* Replied before the body was in (an early error): the connection ends there. */
		c->req.body_mode = HTTP_BODY_DISCARD;
		c->req.handler = NULL;
		c->keep_alive = false;
	}
	if (!c->keep_alive) {
		if (!c->write_queued)
			conn_linger(c);
		else
			c->close_after_write = true;
		return;
	}
	reset_request(c);
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

static void write_head(struct http_request *req, int status, const char *content_type,
		       const char *length_header)
{
	struct http_conn *c = req->conn;
	char head[512];
	int n;
	uv_buf_t b;

	req->status_code = status;
	if (!req->complete)
		c->keep_alive = false;
	n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n%s%s%s%s%s\r\n", status,
		     http_status_text(status), content_type ? "Content-Type: " : "",
		     content_type ? content_type : "", content_type ? "\r\n" : "", length_header,
		     c->keep_alive ? "" : "Connection: close\r\n");
	b = uv_buf_init(head, (unsigned)n);
	write_bufs(c, &b, 1);
}

void http_respond(struct http_request *req, int status, const char *content_type, const void *body,
		  size_t len)
{
	struct http_conn *c = req->conn;
	char length[64];
	uv_buf_t b;

	if (req->responded)
		return;
	req->responded = true;
	snprintf(length, sizeof(length), "Content-Length: %zu\r\n", len);
	write_head(req, status, len ? content_type : NULL, length);
	if (len) {
		b = uv_buf_init((char *)body, (unsigned)len);
		write_bufs(c, &b, 1);
	}
	request_done(c);
}

void http_respond_json(struct http_request *req, int status, void *json)
{
	char *text = cJSON_PrintUnformatted(json);

	cJSON_Delete(json);
	if (!text) {
		http_respond(req, 500, "text/plain", "out of memory\n", 14);
		return;
	}
	http_respond(req, status, "application/json", text, strlen(text));
	free(text);
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
	snprintf(length, sizeof(length), "Content-Length: %llu\r\n", (unsigned long long)len);
	write_head(req, status, content_type, length);
	if (lseek(fd, 0, SEEK_SET) < 0) {
		close(fd);
		conn_close(c);
		return;
	}
	c->reply_fd = fd;
	c->reply_left = len;
	/* The head is queued; the file follows each time the socket took the last piece. */
}

void http_stream_begin(struct http_request *req, int status, const char *content_type)
{
	if (req->responded)
		return;
	req->responded = true;
	req->streaming = true;
	write_head(req, status, content_type, "Transfer-Encoding: chunked\r\n");
}

size_t http_stream_write(struct http_request *req, const void *data, size_t len)
{
	struct http_conn *c = req->conn;
	char size[32];
	uv_buf_t b[3];

	if (!req->streaming || c->closing || !len)
		return c->write_queued;
	b[0] = uv_buf_init(size, (unsigned)snprintf(size, sizeof(size), "%zx\r\n", len));
	b[1] = uv_buf_init((char *)data, (unsigned)len);
	b[2] = uv_buf_init("\r\n", 2);
	write_bufs(c, b, 3);
	return c->write_queued;
}

void http_stream_end(struct http_request *req)
{
	struct http_conn *c = req->conn;
	uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);

	if (!req->streaming)
		return;
	req->streaming = false;
	write_bufs(c, &b, 1);
	request_done(c);
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
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct http_request *req = &conn_of(p)->req;

	if (req->url_len + len >= sizeof(req->url))
		return -1;
	memcpy(req->url + req->url_len, at, len);
	req->url_len += len;
	req->url[req->url_len] = '\0';
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = conn_of(p);

	if (c->req.header_state != HDR_NONE) {
		/* A new field begins after a value. */
		c->field_len = 0;
		c->req.header_state = HDR_NONE;
	}
	if (c->field_len + len < sizeof(c->field)) {
		memcpy(c->field + c->field_len, at, len);
		c->field_len += len;
	} else {
		c->field_len = sizeof(c->field); /* too long to be one we want */
	}
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = conn_of(p);
	struct http_request *req = &c->req;

	if (req->header_state == HDR_NONE) {
		if (c->field_len == 13 && !strncasecmp(c->field, "authorization", 13)) {
			req->header_state = HDR_AUTH;
			if (req->auth_len)
				return -1; /* two Authorization headers: refuse */
		} else if (c->field_len == 6 && !strncasecmp(c->field, "expect", 6)) {
			req->header_state = HDR_EXPECT;
			c->expect_continue = true;
		} else {
			req->header_state = HDR_OTHER;
		}
	}
	if (req->header_state == HDR_AUTH) {
		if (req->auth_len + len >= sizeof(req->auth))
			return -1;
		memcpy(req->auth + req->auth_len, at, len);
		req->auth_len += len;
		req->auth[req->auth_len] = '\0';
	}
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_conn *c = conn_of(p);
	struct http_request *req = &c->req;
	char *q;

	c->field_len = 0;
	req->method = p->method;
	c->keep_alive = http_should_keep_alive(p);
	q = strchr(req->url, '?');
	if (q) {
		req->query = q + 1;
	}
	c->srv->route(req, c->srv->route_ctx);
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
	c->handler_done = true;
	if (req->handler && req->handler->complete)
		req->handler->complete(req);
	else
		http_respond_error(req, 404, NULL, "no such route");
}

static void update_reading(struct http_conn *c);

static void pump(struct http_conn *c)
{
	if (c->in_pump)
		return;
	c->in_pump = true;
	while (!c->closing && !c->lingering) {
		struct http_request *req = &c->req;
		size_t n, avail;
		enum http_errno err;

		if (req->complete && !c->dispatched) {
			c->dispatched = true;
			dispatch_complete(c);
			continue;
		}
		if ((req->complete && c->dispatched) || c->sink_paused)
			break; /* waiting for the reply, or for the sink */
		avail = c->in_len - c->in_off;
		if (!avail)
			break;
		n = http_parser_execute(&c->parser, &parser_settings, c->in + c->in_off, avail);
		c->in_off += n;
		err = HTTP_PARSER_ERRNO(&c->parser);
		if (err == HPE_PAUSED)
			continue;
		if (err != HPE_OK || c->parser.upgrade) {
			sv_debug("bad request: %s", http_errno_description(err));
			if (!req->responded && !c->closing) {
				c->keep_alive = false;
				req->complete = true;
				c->dispatched = true;
				if (!req->url_len)
					snprintf(req->url, sizeof(req->url), "-"), req->url_len = 1;
				http_respond_error(req, 400, NULL, "malformed HTTP request: %s",
						   c->parser.upgrade ? "protocol upgrade is not supported"
								     : http_errno_description(err));
			} else {
				conn_close(c);
			}
			break;
		}
	}
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	c->in_pump = false;
	update_reading(c);
}

void http_conn_resume(struct http_conn *c)
{
	if (!c->sink_paused || c->closing)
		return;
	c->sink_paused = false;
	http_parser_pause(&c->parser, 0);
	pump(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct http_conn *c = h->data;

	(void)suggested;
	if (c->in_off) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	*buf = uv_buf_init(c->in + c->in_len, (unsigned)(CONN_INPUT_MAX - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct http_conn *c = s->data;

	(void)buf;
	if (n < 0) {
		conn_close(c);
		return;
	}
	c->in_len += (size_t)n;
	pump(c);
}

static void update_reading(struct http_conn *c)
{
	bool want;

	if (c->closing || c->lingering)
		return;
	want = !c->sink_paused && !(c->req.complete && c->dispatched) && c->in_len < CONN_INPUT_MAX;
	if (want && !c->reading) {
		if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
	}
}

int http_conn_accept(struct http_server *srv, uv_stream_t *listener)
{
	struct http_conn *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	c->in = malloc(CONN_INPUT_MAX);
	if (!c->in) {
		free(c);
		return -ENOMEM;
	}
	c->srv = srv;
	c->refs = 1;
	c->reply_fd = -1;
	c->req.body_fd = -1;
	c->keep_alive = true;
	if (listener->type == UV_NAMED_PIPE)
		r = uv_pipe_init(srv->loop, &c->h.pipe, 0);
	else
		r = uv_tcp_init(srv->loop, &c->h.tcp);
	if (r < 0) {
		free(c->in);
		free(c);
		return r;
	}
	c->h.handle.data = c;
	srv->connections++;
	reset_request(c);
	r = uv_accept(listener, &c->h.stream);
	if (r < 0) {
		conn_close(c);
		return r;
	}
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	update_reading(c);
	return 0;
}
