/*
 * The ingress proxy (api/sandboxd/ingress_proxy.c) end to end without KVM:
 * TLS clients of this test talk to the proxy on the test's loop; the proxy
 * reaches a scripted HTTP server of this test on 127.0.0.1 through
 * tests/unit/fake-vmm (the VMM's vsock socket) and the real guest agent's
 * relay (--unix). The owner is a fake: one label, one token.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "ingress_proxy.h"
#include "tls.h"
#include "fake_vmm_env.h"
#include "unit.h"

#define DOMAIN "sbx.test"
#define LABEL "0123456789abcdef"
#define TOKEN "ct_good-token"
#define VERIFIED "{\"user\":\"ada\"}"

struct fixture {
	struct fake_vmm_env vm; /* the VMM's vsock socket in front of the real agent */
	uv_loop_t loop;
	struct ingress_proxy proxy;
	uv_tcp_t listener;
	unsigned port;     /* the proxy's */
	unsigned backend;  /* the scripted server's */
	int backend_fd;
	pthread_t backend_thread;
	unsigned attached, released, accepts;
	struct ingress_link *last_link;
	bool refuse_running; /* the owner says 409 */
};

static struct fixture *current;

/* ---- the owner ---- */

static int authorize(void *ctx, const char *label, const struct ingress_token_candidate *cand, size_t n,
		     struct ingress_link *link, struct ingress_grant *grant, char *why, size_t cap)
{
	struct fixture *f = ctx;
	size_t i;

	if (strcmp(label, LABEL)) {
		snprintf(why, cap, "unknown");
		return 404;
	}
	for (i = 0; i < n; i++)
		if (!strcmp(cand[i].token, TOKEN))
			break;
	if (i == n)
		return 401;
	if (f->refuse_running)
		return 409;
	if (!link->owner) {
		link->owner = f;
		f->attached++;
	}
	f->last_link = link;
	snprintf(grant->vsock_path, sizeof(grant->vsock_path), "%s", f->vm.vsock);
	grant->port = (uint16_t)f->backend;
	snprintf(grant->verified, sizeof(grant->verified), "%s", VERIFIED);
	snprintf(grant->token_id, sizeof(grant->token_id), "tok-1");
	grant->token_index = i;
	return 0;
}

static void release(void *ctx, struct ingress_link *link)
{
	struct fixture *f = ctx;

	link->owner = NULL;
	f->released++;
	if (f->last_link == link)
		f->last_link = NULL;
}

static const struct ingress_proxy_ops owner_ops = {.authorize = authorize, .release = release};

/* ---- the server in the "guest" ---- */

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void write_str(int fd, const char *s)
{
	write_all(fd, s, strlen(s));
}

/* Reads one request (head, and a body by Content-Length or chunked, kept raw); its length, 0 at the end. */
static size_t read_request(int fd, char *buf, size_t cap, size_t *head_len)
{
	size_t got = 0;
	char *end = NULL;

	while (!(end = strstr(buf, "\r\n\r\n"))) {
		ssize_t n = read(fd, buf + got, cap - 1 - got);

		if (n <= 0)
			return 0;
		got += (size_t)n;
		buf[got] = '\0';
	}
	*head_len = (size_t)(end + 4 - buf);
	{
		const char *cl = strcasestr(buf, "\r\ncontent-length:");
		bool chunked = strcasestr(buf, "\r\ntransfer-encoding: chunked") != NULL;
		size_t want = *head_len + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);

		while (chunked ? !strstr(buf + *head_len, "\r\n0\r\n\r\n") && strncmp(buf + *head_len, "0\r\n\r\n", 5)
			       : got < want) {
			ssize_t n = read(fd, buf + got, cap - 1 - got);

			if (n <= 0)
				return 0;
			got += (size_t)n;
			buf[got] = '\0';
		}
	}
	return got;
}

static void *serve_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	size_t cap = 1 << 20, head_len, n;
	char *buf = calloc(1, cap), *reply = malloc(cap + 512);

	while ((n = read_request(fd, buf, cap, &head_len)) > 0) {
		int len;

		if (strstr(buf, " /silent ")) {
			sleep(2);
			break;
		}
		if (strstr(buf, " /nolength ")) {
			write_str(fd, "HTTP/1.1 200 OK\r\n\r\nhello, until the end");
			break;
		}
		if (strstr(buf, " /huge ")) {
			len = snprintf(reply, cap, "HTTP/1.1 200 OK\r\nX-Big: ");
			memset(reply + len, 'a', 40000);
			len += 40000;
			len += snprintf(reply + len, 64, "\r\nContent-Length: 0\r\n\r\n");
			write_all(fd, reply, (size_t)len);
			continue;
		}
		if (strstr(buf, " /unasked ")) {
			write_str(fd, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
			continue;
		}
		if (strstr(buf, " /ws ")) {
			char b[4096];
			ssize_t r;

			write_str(fd, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				      "Sec-WebSocket-Accept: x\r\n\r\n");
			/* Bytes after the head came with it: echo them, then the rest. */
			write_all(fd, buf + head_len, n - head_len);
			while ((r = read(fd, b, sizeof(b))) > 0)
				write_all(fd, b, (size_t)r);
			break;
		}
		if (strstr(buf, " /chunked ")) {
			write_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
			continue;
		}
		/* Echo: the head and body as received. */
		len = snprintf(reply, 512,
			       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: _modal_connect_token=evil\r\n"
			       "Set-Cookie: a=b\r\nKeep-Alive: timeout=5\r\nContent-Length: %zu\r\n\r\n",
			       n);
		memcpy(reply + len, buf, n);
		write_all(fd, reply, (size_t)len + n);
		memset(buf, 0, n + 1);
	}
	close(fd);
	free(buf);
	free(reply);
	return NULL;
}

static void *backend_main(void *arg)
{
	struct fixture *f = arg;

	for (;;) {
		int fd = accept(f->backend_fd, NULL, NULL);
		pthread_t t;

		if (fd < 0)
			return NULL;
		__atomic_add_fetch(&f->accepts, 1, __ATOMIC_SEQ_CST);
		pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd);
		pthread_detach(t);
	}
}

/* ---- set-up ---- */

static void on_connection(uv_stream_t *l, int status)
{
	assert_int_equal(status, 0);
	assert_int_equal(http_conn_accept(l->data, l), 0);
}

static int tcp_listener(unsigned *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 16) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		return -1;
	*port = ntohs(a.sin_port);
	return fd;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char tls[128], cert[192], key[192], err[256];
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int len = sizeof(a);
	bool made;

	if (!f)
		return -1;
	if (fake_vmm_env_start(&f->vm, "sandvm-ingress") < 0)
		return -1;
	f->backend_fd = tcp_listener(&f->backend);
	if (f->backend_fd < 0)
		return -1;
	pthread_create(&f->backend_thread, NULL, backend_main, f);

	uv_loop_init(&f->loop);
	if (ingress_proxy_init(&f->proxy, &f->loop, "SBX.test", &owner_ops, f) < 0)
		return -1;
	f->proxy.response_timeout_ms = 500;
	snprintf(tls, sizeof(tls), "%s/tls", f->vm.dir);
	if (tls_ensure_domain_certificate(tls, DOMAIN, cert, key, sizeof(cert), &made, err, sizeof(err)) < 0 || !made)
		return -1;
	f->proxy.server.tls = tls_server_ctx_new(cert, key, err, sizeof(err));
	if (!f->proxy.server.tls)
		return -1;
	uv_tcp_init(&f->loop, &f->listener);
	f->listener.data = &f->proxy.server;
	if (uv_tcp_bind(&f->listener, (struct sockaddr *)&a, 0) ||
	    uv_listen((uv_stream_t *)&f->listener, 16, on_connection))
		return -1;
	uv_tcp_getsockname(&f->listener, (struct sockaddr *)&a, &len);
	f->port = ntohs(a.sin_port);
	current = f;
	*state = f;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void spin(struct fixture *f, unsigned ms)
{
	double end = now_s() + ms / 1000.0;

	while (now_s() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(500);
	}
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int r;

	spin(f, 100);
	assert_int_equal(f->proxy.server.connections, 0);
	uv_close((uv_handle_t *)&f->listener, NULL);
	spin(f, 50);
	tls_server_ctx_free(f->proxy.server.tls);
	ingress_proxy_destroy(&f->proxy);
	for (int i = 0; i < 200 && uv_loop_alive(&f->loop); i++)
		spin(f, 5);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	r = fake_vmm_env_stop(&f->vm);
	shutdown(f->backend_fd, SHUT_RDWR);
	close(f->backend_fd);
	pthread_join(f->backend_thread, NULL);
	free(f);
	return r;
}

/* ---- a TLS client on the test's thread ---- */

struct client {
	int fd;
	SSL *ssl;
};

static void client_open(struct fixture *f, struct client *c, const char *sni)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons((uint16_t)f->port)};
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char ca[128];
	double end = now_s() + 3;

	snprintf(ca, sizeof(ca), "%s/tls/ca.pem", f->vm.dir);
	assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);
	SSL_set_tlsext_host_name(c->ssl, sni);
	SSL_set1_host(c->ssl, sni);
	SSL_set_fd(c->ssl, c->fd);
	for (;;) {
		int r = SSL_connect(c->ssl), e;

		if (r == 1)
			break;
		e = SSL_get_error(c->ssl, r);
		if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || now_s() > end)
			fail_msg("TLS handshake with %s failed", sni);
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(200);
	}
}

static void client_close(struct fixture *f, struct client *c)
{
	SSL_free(c->ssl);
	close(c->fd);
	spin(f, 30);
}

static void client_send(struct fixture *f, struct client *c, const char *data, size_t len)
{
	size_t off = 0;

	while (off < len) {
		int r = SSL_write(c->ssl, data + off, (int)(len - off));

		if (r > 0) {
			off += (size_t)r;
			continue;
		}
		if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_WRITE && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
			fail_msg("TLS write failed");
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(200);
	}
}

/* Whether buf holds n whole responses (Content-Length or chunked bodies). */
static bool responses_complete(const char *buf, size_t len, int n)
{
	const char *p = buf, *end = buf + len;

	while (n-- > 0) {
		const char *head_end = strstr(p, "\r\n\r\n"), *cl, *te;

		if (!head_end)
			return false;
		head_end += 4;
		cl = strcasestr(p, "\r\ncontent-length: ");
		te = strcasestr(p, "\r\ntransfer-encoding: chunked");
		if (te && te < head_end) {
			const char *z = strstr(head_end, "\r\n0\r\n\r\n");

			if (!strncmp(head_end, "0\r\n\r\n", 5))
				z = head_end - 2;
			if (!z)
				return false;
			p = z + 7;
		} else if (!strncmp(p, "HTTP/1.1 101 ", 13)) {
			p = head_end;
		} else {
			size_t body = cl && cl < head_end ? strtoul(cl + 18, NULL, 10) : 0;

			if ((size_t)(end - head_end) < body)
				return false;
			p = head_end + body;
		}
	}
	return true;
}

/* Reads until n responses are in, the peer closed, or 3 s passed; *closed says whether it closed. */
static size_t client_read(struct fixture *f, struct client *c, char *buf, size_t cap, int n, bool *closed)
{
	double end = now_s() + 3;
	size_t got = 0;

	*closed = false;
	buf[0] = '\0';
	while (now_s() < end && got < cap - 1) {
		int r = SSL_read(c->ssl, buf + got, (int)(cap - 1 - got));

		if (r > 0) {
			got += (size_t)r;
			buf[got] = '\0';
			if (n && responses_complete(buf, got, n))
				break;
			continue;
		}
		if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
			*closed = true;
			break;
		}
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(200);
	}
	ERR_clear_error();
	return got;
}

static char *request(struct fixture *f, const char *sni, const char *text, int n)
{
	struct client c;
	size_t cap = 1 << 20;
	char *buf = malloc(cap);
	bool closed;

	client_open(f, &c, sni);
	client_send(f, &c, text, strlen(text));
	client_read(f, &c, buf, cap, n, &closed);
	client_close(f, &c);
	return buf;
}

static unsigned count(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *p = hay; (p = strcasestr(p, needle)); p++)
		n++;
	return n;
}

#define HOST LABEL "." DOMAIN

/* ---- cases ---- */

static void token_in_header(void **state)
{
	struct fixture *f = *state;
	char *r = request(f, HOST,
			  "GET /echo?a=1 HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n"
			  "X-Verified-User-Data: forged1\r\nx-verified-USER-data: forged2\r\n"
			  "X_Verified_User_Data: forged3\r\nX-Forwarded-For: 6.6.6.6\r\n"
			  "Connection: keep-alive, X-Drop-Me\r\nX-Drop-Me: yes\r\nX-Keep: kept\r\n\r\n",
			  1);

	assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(r, "GET /echo?a=1 HTTP/1.1\r\n"));
	assert_int_equal(count(r, "X-Verified-User-Data: "), 1);
	assert_non_null(strstr(r, "\r\nX-Verified-User-Data: " VERIFIED "\r\n"));
	assert_null(strstr(r, "forged"));
	assert_null(strstr(r, TOKEN));
	assert_null(strstr(r, "6.6.6.6"));
	assert_null(strstr(r, "X-Drop-Me"));
	assert_non_null(strstr(r, "X-Keep: kept"));
	assert_non_null(strstr(r, "X-Forwarded-For: 127.0.0.1\r\n"));
	assert_non_null(strstr(r, "X-Forwarded-Proto: https\r\n"));
	/* The guest's cookie for the token's name stays behind; its others pass; no hop-by-hop field. */
	assert_null(strstr(r, "_modal_connect_token=evil"));
	assert_non_null(strstr(r, "Set-Cookie: a=b\r\n"));
	assert_null(strstr(r, "Keep-Alive: timeout"));
	free(r);
}

static void token_in_query_and_cookie(void **state)
{
	struct fixture *f = *state;
	char *r = request(f, HOST,
			  "GET /echo?x=1&_modal_connect_token=" TOKEN "&y=2 HTTP/1.1\r\nHost: " HOST "\r\n\r\n", 1);

	assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(r, "GET /echo?x=1&y=2 HTTP/1.1\r\n"));
	assert_non_null(strstr(r, "Set-Cookie: _modal_connect_token=" TOKEN "; Path=/; Secure; HttpOnly; SameSite=Lax"));
	assert_int_equal(count(r, TOKEN), 1); /* in the proxy's cookie only, never at the guest */
	free(r);
	r = request(f, HOST,
		    "GET /echo HTTP/1.1\r\nHost: " HOST "\r\nCookie: a=1; _modal_connect_token=" TOKEN "; b=2\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(r, "Cookie: a=1; b=2\r\n"));
	assert_null(strstr(r, TOKEN));
	free(r);
}

static void refusals(void **state)
{
	struct fixture *f = *state;
	char *r;

	r = request(f, HOST, "GET / HTTP/1.1\r\nHost: " HOST "\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 401 "));
	free(r);
	r = request(f, HOST, "GET / HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer ct_wrong\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 401 "));
	free(r);
	r = request(f, "ffffffffffffffff." DOMAIN,
		    "GET / HTTP/1.1\r\nHost: ffffffffffffffff." DOMAIN "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 404 "));
	free(r);
	/* SNI and Host disagree; Host outside the domain; an absolute-form target naming another host. */
	r = request(f, "ffffffffffffffff." DOMAIN, "GET / HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n",
		    1);
	assert_non_null(strstr(r, "HTTP/1.1 421 "));
	free(r);
	r = request(f, HOST, "GET / HTTP/1.1\r\nHost: example.com\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 421 "));
	free(r);
	r = request(f, HOST,
		    "GET https://other." DOMAIN "/x HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 421 "));
	free(r);
	/* Smuggling: both framings. */
	r = request(f, HOST,
		    "POST / HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN
		    "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		    1);
	assert_non_null(strstr(r, "HTTP/1.1 400 "));
	free(r);
	f->refuse_running = true;
	r = request(f, HOST, "GET / HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	f->refuse_running = false;
	assert_non_null(strstr(r, "HTTP/1.1 409 "));
	free(r);
	assert_int_equal(f->attached, 0);
}

/* Each request of a connection is checked; the guest connection is kept between them. */
static void keep_alive_and_pipelining(void **state)
{
	struct fixture *f = *state;
	struct client c;
	char *buf = malloc(1 << 20);
	unsigned accepts = f->accepts;
	bool closed;
	const char *ok = "GET /echo HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n";
	const char *bare = "GET /echo HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	char both[512];

	client_open(f, &c, HOST);
	client_send(f, &c, ok, strlen(ok));
	client_read(f, &c, buf, 1 << 20, 1, &closed);
	assert_non_null(strstr(buf, "HTTP/1.1 200 "));
	snprintf(both, sizeof(both), "%s%s", ok, bare);
	client_send(f, &c, both, strlen(both));
	client_read(f, &c, buf, 1 << 20, 2, &closed);
	assert_non_null(strstr(buf, "HTTP/1.1 200 "));
	assert_non_null(strstr(buf, "HTTP/1.1 401 "));
	assert_true(strstr(buf, "HTTP/1.1 200 ") < strstr(buf, "HTTP/1.1 401 "));
	client_send(f, &c, ok, strlen(ok));
	client_read(f, &c, buf, 1 << 20, 1, &closed);
	assert_non_null(strstr(buf, "HTTP/1.1 200 "));
	/* One guest connection for the three requests that went through. */
	assert_int_equal(f->accepts - accepts, 1);
	assert_int_equal(f->attached, 1);
	client_close(f, &c);
	spin(f, 50);
	assert_int_equal(f->released, 1);
	f->attached = f->released = 0;
	free(buf);
}

static void bodies(void **state)
{
	struct fixture *f = *state;
	size_t n = 300000;
	char *req = malloc(n + 512), *r;
	int len = snprintf(req, 512, "POST /echo HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN
				     "\r\nContent-Length: %zu\r\n\r\n",
			   n);

	memset(req + len, 'b', n);
	req[len + n] = '\0';
	r = request(f, HOST, req, 1);
	assert_non_null(strstr(r, "HTTP/1.1 200 "));
	assert_non_null(strstr(r, "\r\nContent-Length: 300000\r\n"));
	/* The echo's body: the forwarded head, then the body whole. */
	assert_non_null(strstr(r, "\r\n\r\nbbbbbbbbbb"));
	assert_int_equal(strspn(strstr(r, "\r\n\r\nbbbbbbbbbb") + 4, "b"), n);
	free(r);
	/* Chunked in, chunked on (re-chunked), its trailer dropped. */
	r = request(f, HOST,
		    "POST /echo HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN
		    "\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Verified-User-Data: trailer\r\n\r\n",
		    1);
	assert_non_null(strstr(r, "HTTP/1.1 200 "));
	assert_non_null(strstr(r, "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"));
	assert_null(strstr(r, "trailer"));
	free(r);
	r = request(f, HOST, "GET /chunked HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	assert_non_null(strstr(r, "Transfer-Encoding: chunked\r\n"));
	assert_non_null(strstr(r, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
	free(r);
	r = request(f, HOST, "HEAD /echo HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 200 "));
	assert_non_null(strstr(r, "Content-Length: "));
	assert_non_null(strstr(r, "\r\n\r\n"));
	assert_string_equal(strstr(r, "\r\n\r\n"), "\r\n\r\n");
	free(r);
	free(req);
}

static void websocket(void **state)
{
	struct fixture *f = *state;
	struct client c;
	char buf[4096];
	bool closed;
	const char *up = "GET /ws HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN
			 "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
			 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nearly";

	client_open(f, &c, HOST);
	client_send(f, &c, up, strlen(up));
	client_read(f, &c, buf, sizeof(buf), 1, &closed);
	assert_non_null(strstr(buf, "HTTP/1.1 101 Switching Protocols\r\n"));
	assert_non_null(strstr(buf, "Upgrade: websocket\r\n"));
	assert_non_null(strstr(buf, "Sec-WebSocket-Accept: x\r\n"));
	if (!strstr(buf, "early"))
		client_read(f, &c, buf, sizeof(buf), 0, &closed);
	for (int i = 0; i < 100; i++) {
		char msg[32], got[32];
		int n = snprintf(msg, sizeof(msg), "message %03d;", i);
		size_t have = 0;
		double end = now_s() + 2;

		client_send(f, &c, msg, (size_t)n);
		while (have < (size_t)n && now_s() < end) {
			int r = SSL_read(c.ssl, got + have, (int)((size_t)n - have));

			if (r > 0)
				have += (size_t)r;
			else
				uv_run(&f->loop, UV_RUN_NOWAIT);
		}
		ERR_clear_error();
		assert_int_equal(have, n);
		assert_memory_equal(got, msg, (size_t)n);
	}
	assert_int_equal(f->proxy.upgrades, 1);
	/* The owner drops it (a revoked token): the client sees the end. */
	assert_non_null(f->last_link);
	ingress_proxy_drop(f->last_link);
	client_read(f, &c, buf, sizeof(buf), 0, &closed);
	assert_true(closed);
	assert_int_equal(f->released, 1);
	client_close(f, &c);
	f->attached = f->released = 0;
}

static void hostile_guests(void **state)
{
	struct fixture *f = *state;
	char *r;
	unsigned port = f->backend;

	r = request(f, HOST, "GET /huge HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 502 "));
	free(r);
	r = request(f, HOST, "GET /unasked HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 502 "));
	free(r);
	r = request(f, HOST, "GET /silent HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 504 "));
	free(r);
	/* Delimited by the guest's close: passed on chunked. */
	r = request(f, HOST, "GET /nolength HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	assert_non_null(strstr(r, "HTTP/1.1 200 "));
	assert_non_null(strstr(r, "hello, until the end\r\n0\r\n\r\n"));
	free(r);
	/* Nothing listens. */
	f->backend = 1;
	r = request(f, HOST, "GET / HTTP/1.1\r\nHost: " HOST "\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", 1);
	f->backend = port;
	assert_non_null(strstr(r, "HTTP/1.1 502 "));
	assert_non_null(strstr(r, "nothing listens on port 1"));
	free(r);
	f->attached = f->released = 0;
}

static void labels(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(ingress_label_of("AbC." DOMAIN, DOMAIN, false, out, sizeof(out)), 0);
	assert_string_equal(out, "abc");
	assert_int_equal(ingress_label_of("abc." DOMAIN ":8443", DOMAIN, true, out, sizeof(out)), 0);
	assert_int_equal(ingress_label_of("abc." DOMAIN ":8443", DOMAIN, false, out, sizeof(out)), -EINVAL);
	assert_int_equal(ingress_label_of("abc." DOMAIN ".", DOMAIN, false, out, sizeof(out)), 0);
	assert_int_equal(ingress_label_of(DOMAIN, DOMAIN, false, out, sizeof(out)), -ENOENT);
	assert_int_equal(ingress_label_of("." DOMAIN, DOMAIN, false, out, sizeof(out)), -ENOENT);
	assert_int_equal(ingress_label_of("a.b." DOMAIN, DOMAIN, false, out, sizeof(out)), -ENOENT);
	assert_int_equal(ingress_label_of("abcsbx.test", DOMAIN, false, out, sizeof(out)), -ENOENT);
	assert_int_equal(ingress_label_of("a_b." DOMAIN, DOMAIN, false, out, sizeof(out)), -EINVAL);
	assert_int_equal(ingress_label_of("abc." DOMAIN ":", DOMAIN, true, out, sizeof(out)), -EINVAL);
	assert_int_equal(ingress_label_of("abc." DOMAIN ":80x", DOMAIN, true, out, sizeof(out)), -EINVAL);
	assert_int_equal(ingress_label_of("", DOMAIN, true, out, sizeof(out)), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(labels),
		cmocka_unit_test_setup_teardown(token_in_header, setup, teardown),
		cmocka_unit_test_setup_teardown(token_in_query_and_cookie, setup, teardown),
		cmocka_unit_test_setup_teardown(refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(keep_alive_and_pipelining, setup, teardown),
		cmocka_unit_test_setup_teardown(bodies, setup, teardown),
		cmocka_unit_test_setup_teardown(websocket, setup, teardown),
		cmocka_unit_test_setup_teardown(hostile_guests, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
