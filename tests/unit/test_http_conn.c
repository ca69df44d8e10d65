/*
 * sandboxd's HTTP core (api/sandboxd/http_conn.c, http_head.c) on a real
 * libuv loop and unix sockets: the strict request head, the header list,
 * pipelining, time limits, the connection cap, lazy input buffers and the
 * hand-over to a byte relay. The client side is plain blocking sockets
 * driven between turns of the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/stat.h>

#include "http_conn.h"
#include "http_head.h"
#include "tls.h"
#include "unit.h"

struct fixture {
	uv_loop_t loop;
	uv_pipe_t listener;
	struct http_server srv;
	char dir[48], path[64];
	/* the relay under test */
	struct http_conn *relay_conn;
	int relay_closed; /* -1: not yet, else the err it got + 1000 */
	char relayed[256];
	size_t relayed_len;
	/* requests to /never, answered when the test says so */
	struct http_request *pending[8];
	unsigned npending;
	struct http_request *stream; /* a /stream request, its reply under way */
};

/* Answers every /never request (they hold their connections until then). */
static void answer_pending(struct fixture *f)
{
	for (unsigned i = 0; i < f->npending; i++)
		http_respond(f->pending[i], 204, NULL, NULL, 0);
	f->npending = 0;
}

static void on_connection(uv_stream_t *listener, int status)
{
	struct fixture *f = listener->data;

	assert_int_equal(status, 0);
	http_conn_accept(&f->srv, listener);
}

/* ---- the routes under test ---- */

static int relay_data(void *ctx, const char *data, size_t len)
{
	struct fixture *f = ctx;

	if (f->relayed_len + len < sizeof(f->relayed)) {
		memcpy(f->relayed + f->relayed_len, data, len);
		f->relayed_len += len;
	}
	http_relay_write(f->relay_conn, data, len); /* an echo */
	return 0;
}

static void relay_closed(void *ctx, int err)
{
	struct fixture *f = ctx;

	f->relay_closed = 1000 + err;
	if (err == 0)
		http_relay_close(f->relay_conn);
}

static const struct http_relay_ops echo_relay = {
	.data = relay_data,
	.closed = relay_closed,
};

static void complete(struct http_request *req)
{
	struct fixture *f = req->ctx;
	char body[4096];
	size_t n = 0;
	const char *name, *value;

	if (!strcmp(req->url, "/relay")) {
		f->relay_conn = req->conn;
		assert_int_equal(http_conn_detach(req, 101, "Upgrade: echo\r\nConnection: Upgrade\r\n", &echo_relay, f),
				 0);
		return;
	}
	if (!strncmp(req->url, "/file/", 6)) {
		/* A reply from a file of N bytes (a pattern), as the file routes send them. */
		size_t len = strtoul(req->url + 6, NULL, 10);
		char path[] = "/tmp/sandvm-http-file-XXXXXX";
		int fd = mkstemp(path);
		char chunk[4096];

		assert_true(fd >= 0);
		unlink(path);
		for (size_t off = 0; off < len;) {
			size_t k = len - off < sizeof(chunk) ? len - off : sizeof(chunk);

			for (size_t i = 0; i < k; i++)
				chunk[i] = (char)('a' + (off + i) % 26);
			assert_int_equal(write(fd, chunk, k), (ssize_t)k);
			off += k;
		}
		http_respond_fd(req, 200, "application/octet-stream", fd, len);
		return;
	}
	if (!strcmp(req->url, "/stream")) {
		/* A chunked reply the test goes on with. */
		f->stream = req;
		http_stream_begin(req, 200, "text/plain");
		http_stream_write(req, "first\n", 6);
		return;
	}
	if (!strcmp(req->url, "/corked")) {
		/* A proxied reply made in one turn: its head, body and end leave in one write. */
		struct http_conn *c = req->conn;

		http_conn_cork(c);
		http_stream_begin_fields(req, 200, "X-A: 1\r\n", 8, HTTP_REPLY_LENGTH, 5);
		http_stream_write(req, "hello", 5);
		http_stream_end(req);
		http_conn_uncork(c);
		return;
	}
	if (!strcmp(req->url, "/never")) {
		/* A route that takes its time. */
		assert_true(f->npending < 8);
		f->pending[f->npending++] = req;
		return;
	}
	/* Every header as NAME=VALUE lines, then the Authorization the core picked out. */
	for (unsigned i = 0; http_headers_at(req->headers, i, &name, &value); i++)
		n += (size_t)snprintf(body + n, sizeof(body) - n, "%s=%s\n", name, value);
	n += (size_t)snprintf(body + n, sizeof(body) - n, "auth=%s\n", req->auth);
	http_respond(req, 200, "text/plain", body, n);
}

static const struct http_handler test_handler = { .complete = complete };

static void route(struct http_request *req, void *ctx)
{
	struct fixture *fx = ctx;

	if (!strcmp(req->url, "/hand-over")) {
		/* At headers time, nothing answered: the body and what follows are the relay's bytes. */
		fx->relay_conn = req->conn;
		assert_int_equal(http_conn_hand_over(req, &echo_relay, fx), 0);
		assert_int_equal(http_conn_hand_over(req, &echo_relay, fx), -EINVAL); /* once */
		return;
	}
	req->ctx = ctx;
	req->handler = &test_handler;
	req->body_mode = HTTP_BODY_BUFFER;
	req->body_limit = 4096;
	req->accepts_upgrade = !strcmp(req->url, "/relay");
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sandvm-http-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/api.sock", f->dir);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	http_server_init(&f->srv, &f->loop, route, f);
	assert_int_equal(uv_pipe_init(&f->loop, &f->listener, 0), 0);
	f->listener.data = f;
	assert_int_equal(uv_pipe_bind(&f->listener, f->path), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 4096, on_connection), 0);
	f->relay_closed = -1;
	*state = f;
	return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	/* The tests closed their clients: the server's side goes through the core, memory and all. */
	answer_pending(f);
	for (int i = 0; i < 3000 && f->srv.conns; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_null(f->srv.conns);
	uv_walk(&f->loop, close_walk, NULL);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	tls_server_ctx_free(f->srv.tls);
	http_server_destroy(&f->srv);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
		assert_int_equal(system(cmd), 0);
	}
	free(f);
	return 0;
}

/* The same server with TLS, its certificate from a CA made in the fixture's folder. */
static int setup_tls(void **state)
{
	struct fixture *f;
	char dir[80], cert[128], key[128], err[256];
	bool made;

	setup(state);
	f = *state;
	snprintf(dir, sizeof(dir), "%s/tls", f->dir);
	assert_int_equal(tls_ensure_certificates(dir, "127.0.0.1", &made, err, sizeof(err)), 0);
	assert_true(made);
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	f->srv.tls = tls_server_ctx_new(cert, key, err, sizeof(err));
	if (!f->srv.tls)
		fail_msg("%s", err);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the loop for about ms milliseconds. */
static void spin(struct fixture *f, unsigned ms)
{
	double end = now_s() + ms / 1000.0;

	while (now_s() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
}

static int client(struct fixture *f)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", f->path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	uv_run(&f->loop, UV_RUN_NOWAIT); /* accepted */
	return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
	while (len) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

		assert_true(n > 0);
		data += n;
		len -= (size_t)n;
	}
}

static void send_str(int fd, const char *s)
{
	send_all(fd, s, strlen(s));
}

/*
 * Reads what the server sends until want_bytes arrived, the stream ended
 * (*eof) or timeout_ms passed, running the loop meanwhile.
 */
static size_t receive(struct fixture *f, int fd, char *buf, size_t cap, size_t want_bytes, unsigned timeout_ms,
		      bool *eof)
{
	double end = now_s() + timeout_ms / 1000.0;
	size_t got = 0;

	*eof = false;
	while (got < want_bytes && got < cap - 1 && now_s() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		uv_run(&f->loop, UV_RUN_NOWAIT);
		if (poll(&p, 1, 1) == 1) {
			ssize_t n = recv(fd, buf + got, cap - 1 - got, MSG_DONTWAIT);

			if (n == 0 || (n < 0 && errno != EAGAIN)) {
				*eof = true;
				break;
			}
			if (n > 0)
				got += (size_t)n;
		}
	}
	buf[got] = '\0';
	return got;
}

/* One whole reply (head and Content-Length body); its text in buf. */
static void reply(struct fixture *f, int fd, char *buf, size_t cap)
{
	bool eof;
	size_t got = 0, n;

	for (;;) {
		char *end, *cl;
		size_t need;

		n = receive(f, fd, buf + got, cap - got, got + 1, 2000, &eof);
		got += n;
		end = strstr(buf, "\r\n\r\n");
		if (end) {
			cl = strcasestr(buf, "Content-Length: ");
			need = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0);
			if (got >= need)
				return;
		}
		if (eof || n == 0)
			fail_msg("no whole reply; got %zu bytes: %.200s", got, buf);
	}
}

/* The server closes (EOF) within timeout_ms. */
static bool closed_by_server(struct fixture *f, int fd, unsigned timeout_ms)
{
	char buf[4096];
	bool eof;

	receive(f, fd, buf, sizeof(buf), sizeof(buf), timeout_ms, &eof);
	return eof;
}

/* ---- the tests ---- */

static void header_list(void **state)
{
	struct fixture *f = *state;
	int fd = client(f);
	char buf[8192];

	send_str(fd, "GET /h HTTP/1.1\r\nHost: x\r\nX-One: 1\r\nX-Two:  two words \t\r\nAuthorization: Bearer k\r\n"
		     "X-Empty:\r\n\r\n");
	reply(f, fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(buf, "\r\n\r\nHost=x\nX-One=1\nX-Two=two words\nAuthorization=Bearer k\nX-Empty=\n"
				    "auth=Bearer k\n"));
	close(fd);
}

static void hostile_heads(void **state)
{
	static const struct {
		const char *head;
		const char *status;
		const char *why;
	} cases[] = {
		{ "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", "400", "folding" },
		{ "GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", "400", "and its colon" },
		{ "GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", "400", "bare LF" },
		{ "GET / HTTP/1.1\nHost: x\r\n\r\n", "400", "bare LF" },
		{ "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r2\r\n\r\n", "400", "bare CR" },
		{ "GET / HTTP/1.1\r\nHost: x\r\nX-A: \x01\r\n\r\n", "400", "control character" },
		{ "GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n", "400", "field name" },
		{ "GET / HTTP/1.1\r\nHost: x\r\nX(A): 1\r\n\r\n", "400", "field name" },
		{ "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", "400", "no Host" },
		{ "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "400", "more than one Host" },
		{ "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", "400",
		  "more than one Authorization" },
		{ "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400", "" },
		{ "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "400", "" },
		{ "GET /never HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n", "400",
		  "upgrade is not supported" },
		{ "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "400", "empty lines" },
	};
	struct fixture *f = *state;
	char buf[8192];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int fd = client(f);
		char want[32];

		send_str(fd, cases[i].head);
		reply(f, fd, buf, sizeof(buf));
		snprintf(want, sizeof(want), "HTTP/1.1 %s ", cases[i].status);
		if (strncmp(buf, want, strlen(want)) || !strstr(buf, cases[i].why) || !strstr(buf, "Connection: close"))
			fail_msg("case %zu: %s", i, buf);
		assert_true(closed_by_server(f, fd, 3000));
		close(fd);
	}
}

static void oversized_heads(void **state)
{
	struct fixture *f = *state;
	char buf[8192], *big = malloc(64 * 1024);
	size_t n;
	int fd;

	assert_non_null(big);
	/* 65 fields */
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: x\r\n");
	for (int i = 0; i < 64; i++)
		n += (size_t)sprintf(big + n, "X-%d: v\r\n", i);
	strcpy(big + n, "\r\n");
	fd = client(f);
	send_str(fd, big);
	reply(f, fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 431 "));
	assert_non_null(strstr(buf, "too many header fields"));
	close(fd);

	/* one 20 KB value */
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
	memset(big + n, 'a', 20000);
	strcpy(big + n + 20000, "\r\n\r\n");
	fd = client(f);
	send_str(fd, big);
	reply(f, fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 431 "));
	close(fd);

	/* a 9 KB target */
	n = (size_t)sprintf(big, "GET /");
	memset(big + n, 'a', 9000);
	strcpy(big + n + 9000, " HTTP/1.1\r\nHost: x\r\n\r\n");
	fd = client(f);
	send_str(fd, big);
	reply(f, fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 414 "));
	close(fd);
	free(big);
}

static void pipelined(void **state)
{
	struct fixture *f = *state;
	int fd = client(f);
	char buf[8192];
	bool eof;
	size_t got;

	/* Two requests in one write, one with a body: two replies in order. */
	send_str(fd, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-N: 1\r\n\r\nhelloGET /b HTTP/1.1\r\n"
		     "Host: x\r\nX-N: 2\r\n\r\n");
	got = receive(f, fd, buf, sizeof(buf), 2 * 80, 2000, &eof);
	assert_false(eof);
	assert_true(got > 0);
	for (;;) {
		char *second = strstr(buf, "X-N=1");

		if (second && strstr(second, "X-N=2"))
			break;
		got += receive(f, fd, buf + got, sizeof(buf) - got, 1, 2000, &eof);
		assert_false(eof);
	}
	close(fd);
}

/*
 * While a reply takes its time the connection reads on: the next request's
 * bytes wait for it unparsed; a client that ended its side meanwhile still
 * gets its reply, then the end.
 */
static void late_replies(void **state)
{
	struct fixture *f = *state;
	int fd = client(f);
	char buf[8192];
	bool eof;
	size_t got;

	send_str(fd, "GET /never HTTP/1.1\r\nHost: x\r\n\r\n");
	spin(f, 20);
	assert_int_equal(f->npending, 1);
	send_str(fd, "GET /h HTTP/1.1\r\nHost: x\r\nX-N: 2\r\n\r\n");
	got = receive(f, fd, buf, sizeof(buf), 1, 50, &eof);
	assert_int_equal(got, 0);
	answer_pending(f);
	got = 0;
	while (!strstr(buf, "X-N=2")) {
		size_t n = receive(f, fd, buf + got, sizeof(buf) - got, got + 1, 2000, &eof);

		assert_false(eof);
		assert_true(n > 0);
		got += n;
	}
	assert_int_equal(strncmp(buf, "HTTP/1.1 204 ", 13), 0);
	assert_non_null(strstr(buf + 13, "HTTP/1.1 200 "));
	send_str(fd, "GET /never HTTP/1.1\r\nHost: x\r\n\r\n");
	spin(f, 20);
	assert_int_equal(f->npending, 1);
	/* The client ends its side with the second reply under way. */
	shutdown(fd, SHUT_WR);
	spin(f, 50);
	assert_int_equal(f->srv.connections, 1);
	answer_pending(f);
	got = receive(f, fd, buf, sizeof(buf), sizeof(buf), 2000, &eof);
	assert_true(got > 0);
	assert_int_equal(strncmp(buf, "HTTP/1.1 204 ", 13), 0);
	assert_true(eof || closed_by_server(f, fd, 2000));
	close(fd);
	spin(f, 50);
	assert_int_equal(f->srv.connections, 0);
}

static void relay_hand_over(void **state)
{
	struct fixture *f = *state;
	int fd = client(f);
	char buf[8192];
	bool eof;

	/* The bytes after the request in the same write go to the relay first. */
	send_str(fd, "GET /relay HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello ");
	receive(f, fd, buf, sizeof(buf), strlen("HTTP/1.1 101 Switching Protocols\r\n"
						"Upgrade: echo\r\nConnection: Upgrade\r\n\r\nhello "),
		2000, &eof);
	assert_string_equal(buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
				 "hello ");
	/* Bytes that look like HTTP are just bytes now. */
	send_str(fd, "GET / HTTP/1.1\r\n\r\n");
	receive(f, fd, buf, sizeof(buf), 18, 2000, &eof);
	assert_string_equal(buf, "GET / HTTP/1.1\r\n\r\n");
	assert_int_equal(f->relayed_len, 24);
	/* The client ends its side: the relay hears it, closes, and the client sees EOF. */
	shutdown(fd, SHUT_WR);
	assert_true(closed_by_server(f, fd, 3000));
	assert_int_equal(f->relay_closed, 1000);
	close(fd);
}

/* http_conn_hand_over: the body as the client framed it (chunked here) reaches the relay unparsed. */
static void hand_over_at_headers(void **state)
{
	struct fixture *f = *state;
	int fd = client(f);
	const char *body = "5\r\nhello\r\n0\r\n\r\n";
	char buf[8192];
	bool eof;

	send_str(fd, "POST /hand-over HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
	send_str(fd, body);
	/* No 100 Continue or reply of the core's: only the relay's echo of the raw body. */
	receive(f, fd, buf, sizeof(buf), strlen(body), 2000, &eof);
	assert_string_equal(buf, body);
	send_str(fd, "more");
	receive(f, fd, buf, sizeof(buf), 4, 2000, &eof);
	assert_string_equal(buf, "more");
	shutdown(fd, SHUT_WR);
	assert_true(closed_by_server(f, fd, 3000));
	assert_int_equal(f->relay_closed, 1000);
	close(fd);
}

static void head_time_limit(void **state)
{
	struct fixture *f = *state;
	char buf[4096];
	double t0;
	int silent, partial;

	f->srv.header_timeout_ms = 150;
	silent = client(f);
	partial = client(f);
	send_str(partial, "GET / HTTP/1.1\r\nHost: x\r\n");
	t0 = now_s();
	reply(f, partial, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 408 "));
	assert_true(now_s() - t0 < 2.0);
	assert_true(closed_by_server(f, silent, 2000));
	assert_true(f->srv.timed_out >= 2);
	close(silent);
	close(partial);
}

static void body_time_limit(void **state)
{
	struct fixture *f = *state;
	char buf[4096];
	int stalled, steady;

	f->srv.body_timeout_ms = 150;
	/* A body that stops: 408 once no byte came for the limit. */
	stalled = client(f);
	send_str(stalled, "POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab");
	reply(f, stalled, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 408 "));
	assert_non_null(strstr(buf, "body stalled"));
	close(stalled);
	/* A slow body that keeps coming is fine: each byte starts the limit again. */
	steady = client(f);
	send_str(steady, "POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n");
	for (int i = 0; i < 6; i++) {
		spin(f, 100);
		send_str(steady, "z");
	}
	reply(f, steady, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200 "));
	close(steady);
}

static void idle_time_limit(void **state)
{
	struct fixture *f = *state;
	char buf[4096];
	int fd;

	f->srv.idle_timeout_ms = 150;
	fd = client(f);
	send_str(fd, "GET /h HTTP/1.1\r\nHost: x\r\n\r\n");
	reply(f, fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200 "));
	/* Kept alive, then closed once idle for the limit; no input buffer kept meanwhile. */
	assert_int_equal(f->srv.connections, 1);
	assert_true(closed_by_server(f, fd, 2000));
	close(fd);
}

static void no_buffer_while_idle(void **state)
{
	struct fixture *f = *state;
	int fds[50];

	for (int i = 0; i < 50; i++)
		fds[i] = client(f);
	spin(f, 20);
	assert_int_equal(f->srv.connections, 50);
	assert_int_equal(f->srv.input_buffers, 0);
	send_str(fds[0], "GET /never HTTP/1.1\r\nHost: x\r\n\r\n");
	spin(f, 20);
	assert_int_equal(f->srv.input_buffers, 1);
	answer_pending(f);
	for (int i = 0; i < 50; i++)
		close(fds[i]);
	spin(f, 20);
	assert_int_equal(f->srv.connections, 0);
	assert_int_equal(f->srv.input_buffers, 0);
}

static void cap_evicts_idle(void **state)
{
	struct fixture *f = *state;
	char buf[4096];
	int idle[3], busy, fd;

	f->srv.max_connections = 4;
	busy = client(f);
	send_str(busy, "GET /never HTTP/1.1\r\nHost: x\r\n\r\n");
	spin(f, 10);
	for (int i = 0; i < 3; i++) {
		idle[i] = client(f);
		spin(f, 2);
	}
	/* At the cap: the oldest idle one makes room; the busy one is kept. */
	fd = client(f);
	send_str(fd, "GET /h HTTP/1.1\r\nHost: x\r\n\r\n");
	reply(f, fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200 "));
	assert_int_equal(f->srv.evicted, 1);
	assert_true(closed_by_server(f, idle[0], 1000));
	assert_false(closed_by_server(f, idle[1], 50));
	assert_false(closed_by_server(f, busy, 50));
	for (int i = 0; i < 3; i++)
		close(idle[i]);
	close(busy);
	close(fd);
}

/* 2,000 idle unauthenticated clients do not keep a request from being served within 1 s. */
static void idle_crowd(void **state)
{
	struct fixture *f = *state;
	enum { CROWD = 2000 };
	struct rlimit rl;
	int *fds = calloc(CROWD, sizeof(int));
	char buf[4096];
	double t0, took;
	int fd;

	assert_non_null(fds);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2 * CROWD + 64) {
		rl.rlim_cur = rl.rlim_max;
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	assert_true(rl.rlim_cur >= 2 * CROWD + 64);
	for (int i = 0; i < CROWD; i++) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };

		fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fds[i] >= 0);
		snprintf(a.sun_path, sizeof(a.sun_path), "%s", f->path);
		assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof(a)), 0);
		if (i % 64 == 0)
			uv_run(&f->loop, UV_RUN_NOWAIT);
		if (i % 2)
			send_str(fds[i], "GET / HT"); /* half a head: not idle, but not done either */
	}
	spin(f, 50);
	t0 = now_s();
	fd = client(f);
	send_str(fd, "GET /h HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n");
	reply(f, fd, buf, sizeof(buf));
	took = now_s() - t0;
	assert_non_null(strstr(buf, "HTTP/1.1 200 "));
	if (took >= 1.0)
		fail_msg("served after %.3f s", took);
	assert_true(f->srv.connections >= CROWD);
	/* Only the connections with bytes in flight hold an input buffer. */
	assert_true(f->srv.input_buffers <= CROWD / 2 + 1);
	for (int i = 0; i < CROWD; i++)
		close(fds[i]);
	close(fd);
	spin(f, 100);
	assert_int_equal(f->srv.connections, 0);
	free(fds);
}


/* ---- TLS ---- */

/* A TLS client on a non-blocking socket, the server's loop run while it waits. */
static SSL *tls_client(struct fixture *f, int fd, int max_version, bool *ok)
{
	char ca[128];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;
	double end = now_s() + 3;

	assert_non_null(ctx);
	snprintf(ca, sizeof(ca), "%s/tls/ca.pem", f->dir);
	assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (max_version)
		SSL_CTX_set_max_proto_version(ctx, max_version);
	ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	assert_non_null(ssl);
	SSL_set1_host(ssl, "127.0.0.1");
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	SSL_set_fd(ssl, fd);
	*ok = false;
	while (now_s() < end) {
		int r = SSL_connect(ssl), e;

		if (r == 1) {
			*ok = true;
			break;
		}
		e = SSL_get_error(ssl, r);
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
			break;
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(500);
	}
	ERR_clear_error();
	return ssl;
}

static void tls_send(struct fixture *f, SSL *ssl, const char *text)
{
	size_t len = strlen(text), off = 0;

	while (off < len) {
		int r = SSL_write(ssl, text + off, (int)(len - off));

		if (r > 0) {
			off += (size_t)r;
			continue;
		}
		assert_true(SSL_get_error(ssl, r) == SSL_ERROR_WANT_WRITE || SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ);
		uv_run(&f->loop, UV_RUN_NOWAIT);
	}
}

/* Reads until want bytes came (or 2 s passed); the text in buf. */
static size_t tls_receive(struct fixture *f, SSL *ssl, char *buf, size_t cap, size_t want)
{
	double end = now_s() + 2;
	size_t got = 0;

	while (got < want && got < cap - 1 && now_s() < end) {
		int r = SSL_read(ssl, buf + got, (int)(cap - 1 - got));

		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ)
			break;
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(500);
	}
	ERR_clear_error();
	buf[got] = '\0';
	return got;
}

static void tls_requests(void **state)
{
	struct fixture *f = *state;
	int fd = client(f);
	bool ok;
	SSL *ssl = tls_client(f, fd, 0, &ok);
	char buf[8192];

	assert_true(ok);
	assert_string_equal(SSL_get_version(ssl), "TLSv1.3");
	/* Two pipelined requests in one record: both answered, in order. */
	tls_send(f, ssl, "GET /h HTTP/1.1\r\nHost: x\r\nX-N: 1\r\n\r\nGET /h HTTP/1.1\r\nHost: x\r\nX-N: 2\r\n\r\n");
	for (size_t got = 0; !strstr(buf, "X-N=2") || got == 0;) {
		got += tls_receive(f, ssl, buf + got, sizeof(buf) - got, 1);
		assert_true(got > 0);
		if (strstr(buf, "X-N=1") && strstr(buf, "X-N=2"))
			break;
	}
	assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
	assert_true(strstr(buf, "X-N=1") < strstr(buf, "X-N=2"));
	/* The same strict head rules behind TLS. */
	tls_send(f, ssl, "GET /h HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n");
	tls_receive(f, ssl, buf, sizeof(buf), 12);
	assert_non_null(strstr(buf, "HTTP/1.1 400 "));
	SSL_free(ssl);
	close(fd);
}

/* A corked reply: head and body in one TLS record, so one read of the client has all of it. */
static void tls_corked_reply(void **state)
{
	struct fixture *f = *state;
	int fd = client(f);
	bool ok;
	SSL *ssl = tls_client(f, fd, 0, &ok);
	const char *want = "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello";
	char buf[8192];
	double end = now_s() + 2;
	int r = 0;

	assert_true(ok);
	for (int i = 0; i < 2; i++) {
		tls_send(f, ssl, "GET /corked HTTP/1.1\r\nHost: x\r\n\r\n");
		while ((r = SSL_read(ssl, buf, sizeof(buf) - 1)) <= 0 && now_s() < end) {
			assert_int_equal(SSL_get_error(ssl, r), SSL_ERROR_WANT_READ);
			uv_run(&f->loop, UV_RUN_NOWAIT);
			usleep(500);
		}
		assert_int_equal(r, (int)strlen(want));
		buf[r] = '\0';
		assert_string_equal(buf, want);
	}
	SSL_free(ssl);
	close(fd);
}

static void tls12_refused(void **state)
{
	struct fixture *f = *state;
	int fd = client(f);
	bool ok;
	SSL *ssl = tls_client(f, fd, TLS1_2_VERSION, &ok);

	assert_false(ok);
	assert_int_equal(f->srv.tls_failed, 1);
	SSL_free(ssl);
	assert_true(closed_by_server(f, fd, 3000));
	close(fd);
}

static void tls_relay(void **state)
{
	struct fixture *f = *state;
	int fd = client(f);
	bool ok;
	SSL *ssl = tls_client(f, fd, 0, &ok);
	char buf[8192];
	const char *head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";

	assert_true(ok);
	tls_send(f, ssl, "GET /relay HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nfirst ");
	tls_receive(f, ssl, buf, sizeof(buf), strlen(head) + 6);
	assert_int_equal(strncmp(buf, head, strlen(head)), 0);
	assert_string_equal(buf + strlen(head), "first ");
	tls_send(f, ssl, "second");
	tls_receive(f, ssl, buf, sizeof(buf), 6);
	assert_string_equal(buf, "second");
	/* close_notify ends the client's side: the relay hears it and closes. */
	SSL_shutdown(ssl);
	assert_true(closed_by_server(f, fd, 3000));
	assert_int_equal(f->relay_closed, 1000);
	SSL_free(ssl);
	close(fd);
}

/* The body of a /file/N reply, whole and in order. */
static void check_file_body(const char *reply_text, size_t got, size_t len)
{
	const char *body = strstr(reply_text, "\r\n\r\n");

	assert_non_null(body);
	body += 4;
	assert_int_equal(got - (size_t)(body - reply_text), len);
	for (size_t i = 0; i < len; i++)
		if (body[i] != (char)('a' + i % 26))
			fail_msg("byte %zu of %zu differs", i, len);
}

/* Replies from files, small and larger than the socket takes at once, then the next request on the connection. */
static void file_replies(void **state)
{
	static const size_t sizes[] = { 5, 700000, 0 };
	struct fixture *f = *state;
	size_t cap = 1 << 20;
	char *buf = malloc(cap);
	int fd = client(f);

	assert_non_null(buf);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char req[64];

		snprintf(req, sizeof(req), "GET /file/%zu HTTP/1.1\r\nHost: x\r\n\r\n", sizes[i]);
		send_str(fd, req);
		reply(f, fd, buf, cap);
		assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
		check_file_body(buf, strlen(buf), sizes[i]);
	}
	send_str(fd, "GET /h HTTP/1.1\r\nHost: x\r\n\r\n");
	reply(f, fd, buf, cap);
	assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
	free(buf);
	close(fd);
}

/* The same over TLS. */
static void tls_file_replies(void **state)
{
	static const size_t sizes[] = { 5, 700000 };
	struct fixture *f = *state;
	size_t cap = 1 << 20;
	char *buf = malloc(cap);
	int fd = client(f);
	bool ok;
	SSL *ssl = tls_client(f, fd, 0, &ok);

	assert_non_null(buf);
	assert_true(ok);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char req[64], *end;
		size_t got = 0, need = 0;

		snprintf(req, sizeof(req), "GET /file/%zu HTTP/1.1\r\nHost: x\r\n\r\n", sizes[i]);
		tls_send(f, ssl, req);
		do {
			size_t n = tls_receive(f, ssl, buf + got, cap - got, 1);

			assert_true(n > 0);
			got += n;
			end = strstr(buf, "\r\n\r\n");
			need = end ? (size_t)(end + 4 - buf) + sizes[i] : got + 1;
		} while (got < need);
		assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
		check_file_body(buf, got, sizes[i]);
	}
	SSL_free(ssl);
	free(buf);
	close(fd);
}

/* Bytes malloc has handed out and not taken back: glibc's count, 0 where a sanitizer's allocator serves malloc. */
static size_t heap_in_use(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return 0;
#else
	return mallinfo2().uordblks;
#endif
}

/*
 * TLS record buffers: given back right after a handshake with no request,
 * kept while requests come, given back after tls_quiet_ms without one; the
 * idle limit still counts from the reply, and a connection that gave its
 * buffers back is served again.
 */
static void tls_buffers_when_quiet(void **state)
{
	enum { N = 8 };
	struct fixture *f = *state;
	int fds[N];
	SSL *ssl[N];
	char buf[8192];
	size_t busy_heap, quiet_heap;
	bool ok;

	f->srv.tls_quiet_ms = 500;
	f->srv.idle_timeout_ms = 1500;
	for (int i = 0; i < N; i++) {
		fds[i] = client(f);
		ssl[i] = tls_client(f, fds[i], 0, &ok);
		assert_true(ok);
	}
	spin(f, 20);
	assert_int_equal(f->srv.tls_buffers, 0);
	for (int i = 0; i < N; i++) {
		tls_send(f, ssl[i], "GET /h HTTP/1.1\r\nHost: x\r\n\r\n");
		tls_receive(f, ssl[i], buf, sizeof(buf), 12);
		assert_non_null(strstr(buf, "HTTP/1.1 200 "));
	}
	/* Between requests of a busy connection the buffers stay. */
	assert_int_equal(f->srv.tls_buffers, N);
	busy_heap = heap_in_use();
	spin(f, 700);
	assert_int_equal(f->srv.tls_buffers, 0);
	assert_int_equal(f->srv.connections, N);
	quiet_heap = heap_in_use();
	if (busy_heap)
		assert_true(busy_heap > quiet_heap + N * 16 * 1024);
	/* Served again after giving them back. */
	tls_send(f, ssl[0], "GET /h HTTP/1.1\r\nHost: x\r\n\r\n");
	tls_receive(f, ssl[0], buf, sizeof(buf), 12);
	assert_non_null(strstr(buf, "HTTP/1.1 200 "));
	/* The others reach the idle limit 1.5 s after their reply, not later for the quiet time. */
	assert_true(closed_by_server(f, fds[1], 1200));
	for (int i = 0; i < N; i++) {
		SSL_free(ssl[i]);
		close(fds[i]);
	}
}

/* A reply that takes its time, and a stream with nothing to send, give their record buffers back as well. */
static void tls_buffers_while_waiting(void **state)
{
	struct fixture *f = *state;
	int fds[2];
	SSL *ssl[2];
	char buf[8192];
	size_t got = 0;
	bool ok;

	f->srv.tls_quiet_ms = 200;
	for (int i = 0; i < 2; i++) {
		fds[i] = client(f);
		ssl[i] = tls_client(f, fds[i], 0, &ok);
		assert_true(ok);
	}
	tls_send(f, ssl[0], "GET /never HTTP/1.1\r\nHost: x\r\n\r\n");
	tls_send(f, ssl[1], "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
	got = tls_receive(f, ssl[1], buf, sizeof(buf), 1);
	while (!strstr(buf, "first")) {
		size_t n = tls_receive(f, ssl[1], buf + got, sizeof(buf) - got, 1);

		assert_true(n > 0);
		got += n;
	}
	assert_int_equal(f->npending, 1);
	assert_non_null(f->stream);
	assert_int_equal(f->srv.tls_buffers, 2);
	spin(f, 400);
	assert_int_equal(f->srv.tls_buffers, 0);
	/* Both go on as before. */
	answer_pending(f);
	tls_receive(f, ssl[0], buf, sizeof(buf), 12);
	assert_non_null(strstr(buf, "HTTP/1.1 204 "));
	http_stream_write(f->stream, "second\n", 7);
	http_stream_end(f->stream);
	got = tls_receive(f, ssl[1], buf, sizeof(buf), 1);
	while (!strstr(buf, "0\r\n\r\n") && got < sizeof(buf) - 1) {
		size_t n = tls_receive(f, ssl[1], buf + got, sizeof(buf) - got, 1);

		assert_true(n > 0);
		got += n;
	}
	assert_non_null(strstr(buf, "7\r\nsecond\n\r\n0\r\n\r\n"));
	for (int i = 0; i < 2; i++) {
		SSL_free(ssl[i]);
		close(fds[i]);
	}
}

static void certificates_made_once(void **state)
{
	char dir[] = "/tmp/sandvm-tls-XXXXXX", sub[64], path[128], err[256], cmd[96];
	struct stat st;
	bool made;
	FILE *f;
	char ca_before[4096] = "", ca_after[4096] = "";

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(sub, sizeof(sub), "%s/tls", dir);
	assert_int_equal(tls_ensure_certificates(sub, "10.1.2.3", &made, err, sizeof(err)), 0);
	assert_true(made);
	snprintf(path, sizeof(path), "%s/ca.key", sub);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/key.pem", sub);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/cert.pem", sub);
	assert_true(tls_cert_covers(path, "10.1.2.3"));
	assert_true(tls_cert_covers(path, "localhost"));
	assert_true(tls_cert_covers(path, "::1"));
	assert_false(tls_cert_covers(path, "10.1.2.4"));
	assert_false(tls_cert_covers(path, "example.org"));
	/* A second start makes nothing; another host gets a new certificate from the same CA. */
	assert_int_equal(tls_ensure_certificates(sub, "10.1.2.3", &made, err, sizeof(err)), 0);
	assert_false(made);
	snprintf(path, sizeof(path), "%s/ca.pem", sub);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_true(fread(ca_before, 1, sizeof(ca_before) - 1, f) > 0);
	fclose(f);
	assert_int_equal(tls_ensure_certificates(sub, "sandbox.example", &made, err, sizeof(err)), 0);
	assert_true(made);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_true(fread(ca_after, 1, sizeof(ca_after) - 1, f) > 0);
	fclose(f);
	assert_string_equal(ca_before, ca_after);
	snprintf(path, sizeof(path), "%s/cert.pem", sub);
	assert_true(tls_cert_covers(path, "sandbox.example"));
	/* A key that does not match its certificate is refused. */
	{
		char cert[128], key[128], ca_key[128];
		void *ctx;

		snprintf(cert, sizeof(cert), "%s/cert.pem", sub);
		snprintf(key, sizeof(key), "%s/key.pem", sub);
		snprintf(ca_key, sizeof(ca_key), "%s/ca.key", sub);
		ctx = tls_server_ctx_new(cert, key, err, sizeof(err));
		assert_non_null(ctx);
		tls_server_ctx_free(ctx);
		assert_null(tls_server_ctx_new(cert, ca_key, err, sizeof(err)));
		assert_true(strstr(err, "does not match") || strstr(err, "mismatch"));
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* ---- the pure parts ---- */

static void scan_in_pieces(void **state)
{
	const char *head = "\r\nGET /x HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\nBODY";
	size_t len = strlen(head);

	(void)state;
	/* Any split gives the same verdict and end. */
	for (size_t cut = 0; cut <= len; cut++) {
		struct http_head_scan s;
		size_t used = 0, used2 = 0;
		int status, r;
		const char *why;

		http_head_scan_init(&s);
		r = http_head_scan(&s, head, cut, &used, &status, &why);
		if (r == 1) {
			assert_int_equal(used, len - 4);
			continue;
		}
		assert_int_equal(r, 0);
		assert_int_equal(used, cut);
		r = http_head_scan(&s, head + cut, len - cut, &used2, &status, &why);
		assert_int_equal(r, 1);
		assert_int_equal(cut + used2, len - 4);
	}
}

/* Scans head whole, then in pieces of 1 to 7 bytes; both give the same verdict, which is returned. */
static int scan_whole_and_in_pieces(const char *head, size_t len, int *status)
{
	struct http_head_scan s;
	size_t used, off = 0;
	int r, r2 = 0, status2 = 0;
	const char *why;

	http_head_scan_init(&s);
	r = http_head_scan(&s, head, len, &used, status, &why);
	http_head_scan_init(&s);
	for (size_t piece = 1; off < len; piece = piece % 7 + 1) {
		size_t n = len - off < piece ? len - off : piece;

		r2 = http_head_scan(&s, head + off, n, &used, &status2, &why);
		if (r2 != 0)
			break;
		off += n;
	}
	assert_int_equal(r, r2);
	if (r < 0)
		assert_int_equal(*status, status2);
	return r;
}

/* The limits hold to the byte, and each byte value is judged by the rules of RFC 9110 and 9112. */
static void scan_limits_and_bytes(void **state)
{
	static const char tchar_punct[] = "!#$%&'*+-.^_`|~";
	char *head = malloc(HTTP_MAX_HEADER_BYTES + HTTP_MAX_REQUEST_LINE + 64);
	size_t n;
	int status = 0;

	(void)state;
	assert_non_null(head);
	/* A request line of HTTP_MAX_REQUEST_LINE bytes, then one more. */
	for (size_t extra = 0; extra < 2; extra++) {
		size_t m = HTTP_MAX_REQUEST_LINE - 14 + extra;

		memcpy(head, "GET /", 5);
		memset(head + 5, 'a', m);
		n = 5 + m + (size_t)sprintf(head + 5 + m, " HTTP/1.1\r\nHost: x\r\n\r\n");
		assert_int_equal(scan_whole_and_in_pieces(head, n, &status), extra ? -1 : 1);
		if (extra)
			assert_int_equal(status, 414);
	}
	/* Header lines of HTTP_MAX_HEADER_BYTES bytes (with the final CRLF, 2 more), then one more. */
	for (size_t extra = 0; extra < 2; extra++) {
		size_t k = HTTP_MAX_HEADER_BYTES - 5 + extra;

		n = (size_t)sprintf(head, "GET / HTTP/1.1\r\nX: ");
		memset(head + n, 'v', k);
		n += k + (size_t)sprintf(head + n + k, "\r\n\r\n");
		assert_int_equal(scan_whole_and_in_pieces(head, n, &status), extra ? -1 : 1);
		if (extra)
			assert_int_equal(status, 431);
	}
	/* Cut short: a head that reached a limit goes on, the byte past it is refused. */
	memcpy(head, "GET /", 5);
	memset(head + 5, 'a', HTTP_MAX_REQUEST_LINE);
	assert_int_equal(scan_whole_and_in_pieces(head, HTTP_MAX_REQUEST_LINE, &status), 0);
	assert_int_equal(scan_whole_and_in_pieces(head, HTTP_MAX_REQUEST_LINE + 1, &status), -1);
	assert_int_equal(status, 414);
	n = (size_t)sprintf(head, "GET / HTTP/1.1\r\nX: ");
	memset(head + n, 'v', HTTP_MAX_HEADER_BYTES);
	/* 16 bytes of request line, then the header bytes: "X: " and the value. */
	assert_int_equal(scan_whole_and_in_pieces(head, 16 + HTTP_MAX_HEADER_BYTES + 2, &status), 0);
	assert_int_equal(scan_whole_and_in_pieces(head, 16 + HTTP_MAX_HEADER_BYTES + 3, &status), -1);
	assert_int_equal(status, 431);
	/* Every byte value in a field name, a field value and the request target. */
	for (int c = 0; c < 256; c++) {
		bool tchar = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c && strchr(tchar_punct, c));
		bool value_ok = c == '\t' || (c >= 0x20 && c != 0x7f);
		bool line_ok = c >= 0x20 && c != 0x7f;

		if (c == '\r' || c == '\n' || c == ':')
			continue; /* they end what they are in */
		n = (size_t)sprintf(head, "GET / HTTP/1.1\r\nX-%cY: v\r\n\r\n", c);
		assert_int_equal(scan_whole_and_in_pieces(head, n, &status), tchar ? 1 : -1);
		n = (size_t)sprintf(head, "GET / HTTP/1.1\r\nX: a%cb\r\n\r\n", c);
		assert_int_equal(scan_whole_and_in_pieces(head, n, &status), value_ok ? 1 : -1);
		n = (size_t)sprintf(head, "GET /a%cb HTTP/1.1\r\nHost: x\r\n\r\n", c);
		assert_int_equal(scan_whole_and_in_pieces(head, n, &status), line_ok ? 1 : -1);
	}
	free(head);
}

static void header_list_bounds(void **state)
{
	struct http_headers *h = malloc(sizeof(*h));
	const char *name, *value;
	char big[HTTP_MAX_HEADER_BYTES];

	(void)state;
	assert_non_null(h);
	http_headers_init(h);
	/* Pieces join; a name after a value starts a new field. */
	assert_int_equal(http_headers_add_name(h, "Ho", 2), 0);
	assert_int_equal(http_headers_add_name(h, "st", 2), 0);
	assert_int_equal(http_headers_add_value(h, "a", 1), 0);
	assert_int_equal(http_headers_add_value(h, "b ", 2), 0);
	assert_int_equal(http_headers_add_name(h, "X", 1), 0);
	assert_int_equal(http_headers_add_value(h, "", 0), 0);
	http_headers_finish(h);
	assert_true(http_headers_at(h, 0, &name, &value));
	assert_string_equal(name, "Host");
	assert_string_equal(value, "ab");
	assert_string_equal(http_headers_get(h, "HOST", NULL), "ab");
	assert_string_equal(http_headers_get(h, "x", NULL), "");
	assert_null(http_headers_get(h, "y", NULL));
	assert_false(http_headers_at(h, 2, &name, &value));
	/* Over the arena: refused, never written past it. */
	http_headers_init(h);
	memset(big, 'v', sizeof(big));
	assert_int_equal(http_headers_add_name(h, "A", 1), 0);
	assert_true(http_headers_add_value(h, big, sizeof(big)) < 0);
	assert_true(h->overflow);
	assert_false(http_headers_at(h, 0, &name, &value));
	/* Over the count. */
	http_headers_init(h);
	for (int i = 0; i < HTTP_MAX_HEADERS; i++) {
		assert_int_equal(http_headers_add_name(h, "N", 1), 0);
		assert_int_equal(http_headers_add_value(h, "v", 1), 0);
	}
	assert_true(http_headers_add_name(h, "N", 1) < 0);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(scan_in_pieces),
		cmocka_unit_test(scan_limits_and_bytes),
		cmocka_unit_test(header_list_bounds),
		cmocka_unit_test_setup_teardown(header_list, setup, teardown),
		cmocka_unit_test_setup_teardown(hostile_heads, setup, teardown),
		cmocka_unit_test_setup_teardown(oversized_heads, setup, teardown),
		cmocka_unit_test_setup_teardown(pipelined, setup, teardown),
		cmocka_unit_test_setup_teardown(late_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(relay_hand_over, setup, teardown),
		cmocka_unit_test_setup_teardown(hand_over_at_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(head_time_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(body_time_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(idle_time_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(no_buffer_while_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(cap_evicts_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(idle_crowd, setup, teardown),
		cmocka_unit_test_setup_teardown(tls_requests, setup_tls, teardown),
		cmocka_unit_test_setup_teardown(tls_corked_reply, setup_tls, teardown),
		cmocka_unit_test_setup_teardown(tls12_refused, setup_tls, teardown),
		cmocka_unit_test_setup_teardown(tls_relay, setup_tls, teardown),
		cmocka_unit_test_setup_teardown(file_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(tls_file_replies, setup_tls, teardown),
		cmocka_unit_test_setup_teardown(tls_buffers_when_quiet, setup_tls, teardown),
		cmocka_unit_test_setup_teardown(tls_buffers_while_waiting, setup_tls, teardown),
		cmocka_unit_test(certificates_made_once),
	};

	/* As in sandboxd: a write to a client that went away is an error, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
