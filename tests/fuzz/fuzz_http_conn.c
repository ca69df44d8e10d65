/*
 * sandboxd's HTTP core (http_conn.c with http_head.c and the packaged
 * http_parser) against arbitrary client bytes, on a real libuv loop over a
 * socketpair: request heads, body framing (Content-Length, chunked, bodies
 * buffered, spooled or sunk with back-pressure), pipelined requests, early
 * replies, upgrades and the hand-over to a relay. Byte 0 says how the rest is
 * cut into writes. The server must answer or close, never hang or crash.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "http_conn.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct harness {
	uv_loop_t loop;
	struct http_server srv;
	struct http_conn *relay;
	uv_timer_t resume;
	struct http_conn *paused;
};

static void on_resume(uv_timer_t *t)
{
	struct harness *h = t->data;
	struct http_conn *c = h->paused;

	h->paused = NULL;
	if (c) {
		http_conn_resume(c);
		http_conn_unref(c);
	}
}

static int sink(struct http_request *req, const char *data, size_t len)
{
	struct harness *h = req->ctx;

	(void)data;
	/* Every few pieces the sink asks for a pause; a timer resumes it. */
	if ((req->body_len / 100) != ((req->body_len - len) / 100) && !h->paused) {
		h->paused = req->conn;
		http_conn_ref(req->conn);
		uv_timer_start(&h->resume, on_resume, 0, 0);
		return 1;
	}
	return 0;
}

static int relay_data(void *ctx, const char *d, size_t len)
{
	struct harness *h = ctx;

	http_relay_write(h->relay, d, len);
	return 0;
}

static void relay_closed(void *ctx, int err)
{
	struct harness *h = ctx;

	if (err == 0)
		http_relay_close(h->relay);
	h->relay = NULL;
}

static const struct http_relay_ops relay_ops = { .data = relay_data, .closed = relay_closed };

static void complete(struct http_request *req)
{
	struct harness *h = req->ctx;
	const char *name, *value;
	size_t total = 0;

	if (req->upgrade && !h->relay) {
		h->relay = req->conn;
		if (http_conn_detach(req, 101, "Upgrade: x\r\nConnection: Upgrade\r\n", &relay_ops, h) < 0)
			h->relay = NULL;
		return;
	}
	for (unsigned i = 0; req->headers && http_headers_at(req->headers, i, &name, &value); i++)
		total += strlen(name) + strlen(value);
	switch (req->url_len % 3) {
	case 0:
		http_respond(req, 200, "text/plain", req->url, req->url_len);
		break;
	case 1:
		http_stream_begin(req, 200, "text/plain");
		http_stream_write(req, "a", 1);
		http_stream_end(req);
		break;
	default:
		http_respond_error(req, 404, NULL, "%zu header bytes", total);
	}
}

static void aborted(struct http_request *req)
{
	(void)req;
}

static const struct http_handler handler = { .sink = sink, .complete = complete, .aborted = aborted };

static void route(struct http_request *req, void *ctx)
{
	req->ctx = ctx;
	req->handler = &handler;
	req->accepts_upgrade = req->url_len > 1 && req->url[1] == 'u';
	switch (req->url_len % 4) {
	case 0:
		req->body_mode = HTTP_BODY_BUFFER;
		req->body_limit = 1024;
		break;
	case 1:
		req->body_mode = HTTP_BODY_SINK;
		break;
	case 2:
		if (req->url_len > 5 && req->url[5] == '!') {
			http_respond_error(req, 401, NULL, "an early reply");
			return;
		}
		req->body_mode = HTTP_BODY_DISCARD;
		break;
	default:
		req->body_mode = HTTP_BODY_BUFFER;
		req->body_limit = 16;
	}
}

static void drain(int fd)
{
	char buf[65536];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct harness h;
	static bool ready;
	int sv[2];
	size_t piece, off = 1;

	if (!ready) {
		signal(SIGPIPE, SIG_IGN);
		sv_log_init("fuzz", SV_LOG_ERROR); /* one request log line per request would be most of the time */
		if (uv_loop_init(&h.loop) < 0)
			abort();
		http_server_init(&h.srv, &h.loop, route, &h);
		uv_timer_init(&h.loop, &h.resume);
		h.resume.data = &h;
		ready = true;
	}
	if (size < 1)
		return 0;
	piece = (size_t)(data[0] % 32) * 7 + 1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	if (http_conn_adopt(&h.srv, sv[0]) < 0)
		abort();
	/* The input in pieces, the server running between them. */
	while (off < size) {
		size_t n = size - off < piece ? size - off : piece;
		ssize_t w = send(sv[1], data + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno != EAGAIN)
			break; /* the server closed */
		uv_run(&h.loop, UV_RUN_NOWAIT);
		drain(sv[1]);
	}
	shutdown(sv[1], SHUT_WR);
	/* The server must finish with this client on its own: answer, then see the end. */
	for (unsigned turns = 0; h.srv.connections; turns++) {
		if (turns > 100000)
			abort(); /* hung */
		uv_run(&h.loop, UV_RUN_NOWAIT);
		drain(sv[1]);
		if (turns > 1000)
			usleep(100);
	}
	/* Closing handles need a turn for their callbacks. */
	uv_run(&h.loop, UV_RUN_NOWAIT);
	close(sv[1]);
	return 0;
}
