/*
 * A TLS client connection over a libuv TCP stream (tls_client.h): OpenSSL
 * on memory BIOs, so the socket stays libuv's and nothing blocks.
 */
#include "tls_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define READ_CHUNK (64 * 1024)
#define HOST_MAX 254

struct tls_client {
	uv_loop_t *loop;
	const struct tls_client_ops *ops;
	void *arg;
	uv_getaddrinfo_t gai;
	uv_connect_t connect_req;
	uv_tcp_t tcp;
	uv_timer_t timer;
	SSL *ssl;
	BIO *rbio, *wbio;
	char host[HOST_MAX + 1];
	uint16_t port;
	bool gai_pending, tcp_open, ready, paused, reading, closing, failed;
	unsigned handles;     /* libuv handles and requests still to finish */
	size_t write_queued;  /* ciphertext given to uv_write, not yet written */
	char *pending;        /* plaintext written before the handshake ended */
	size_t pending_len;
	char buf[READ_CHUNK]; /* plaintext out of SSL_read */
};

struct wr {
	uv_write_t req;
	struct tls_client *c;
	size_t len;
	char data[];
};

static void maybe_free(struct tls_client *c)
{
	if (c->handles || !c->closing)
		return;
	if (c->ssl)
		SSL_free(c->ssl); /* frees both BIOs */
	free(c->pending);
	free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct tls_client *c = h->data;

	c->handles--;
	maybe_free(c);
}

static void shut(struct tls_client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->gai_pending)
		uv_cancel((uv_req_t *)&c->gai);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	if (c->tcp_open)
		uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	c->tcp_open = false;
}

/* The connection failed: its owner hears once (connected or closed), then it is gone. */
static void fail(struct tls_client *c, int err)
{
	const struct tls_client_ops *ops = c->ops;
	void *arg = c->arg;
	bool was_ready = c->ready;

	if (c->closing || c->failed)
		return;
	c->failed = true;
	shut(c);
	if (was_ready)
		ops->closed(arg, err);
	else
		ops->connected(arg, err);
}

static void on_written(uv_write_t *req, int status)
{
	struct wr *w = (struct wr *)req;
	struct tls_client *c = w->c;

	c->write_queued -= w->len;
	c->handles--;
	free(w);
	if (c->closing) {
		maybe_free(c);
		return;
	}
	if (status < 0) {
		fail(c, status);
		return;
	}
	if (!c->write_queued && c->ready && c->ops->drained)
		c->ops->drained(c->arg);
}

/* Sends what SSL wrote into wbio. */
static int flush(struct tls_client *c)
{
	size_t n = BIO_ctrl_pending(c->wbio);
	struct wr *w;
	uv_buf_t b;

	if (!n || c->closing)
		return 0;
	w = malloc(sizeof(*w) + n);
	if (!w)
		return -ENOMEM;
	w->c = c;
	w->len = n;
	if (BIO_read(c->wbio, w->data, (int)n) != (int)n) {
		free(w);
		return -EIO;
	}
	b = uv_buf_init(w->data, (unsigned)n);
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
		free(w);
		return -EPIPE;
	}
	c->handles++;
	c->write_queued += n;
	return 0;
}

static int write_plain(struct tls_client *c, const void *data, size_t len)
{
	while (len) {
		int chunk = len > (1u << 20) ? 1 << 20 : (int)len;
		int r = SSL_write(c->ssl, data, chunk);

		if (r <= 0) {
			ERR_clear_error();
			return -EIO;
		}
		data = (const char *)data + r;
		len -= (size_t)r;
	}
	return flush(c);
}

static void update_reading(struct tls_client *c);

/* Hands over what SSL can decrypt now, until paused. */
static void deliver(struct tls_client *c)
{
	while (!c->closing && !c->paused) {
		int r = SSL_read(c->ssl, c->buf, sizeof(c->buf)), e;

		if (r > 0) {
			c->ops->data(c->arg, c->buf, (size_t)r);
			continue;
		}
		e = SSL_get_error(c->ssl, r);
		ERR_clear_error();
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			const struct tls_client_ops *ops = c->ops;
			void *arg = c->arg;

			c->failed = true; /* ends here: no other callback */
			shut(c);
			ops->closed(arg, 0);
			return;
		}
		fail(c, -EPROTO);
		return;
	}
	if (!c->closing && flush(c) < 0)
		fail(c, -EPIPE);
}

static void handshake(struct tls_client *c)
{
	int r = SSL_do_handshake(c->ssl), e;

	if (flush(c) < 0) {
		fail(c, -EPIPE);
		return;
	}
	if (r != 1) {
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return;
		/* A certificate the CA did not sign, or not for this host: refused, not retried blindly. */
		e = SSL_get_verify_result(c->ssl) != X509_V_OK ? -EPERM : -EPROTO;
		ERR_clear_error();
		fail(c, e);
		return;
	}
	c->ready = true;
	uv_timer_stop(&c->timer);
	if (c->pending_len) {
		int w = write_plain(c, c->pending, c->pending_len);

		free(c->pending);
		c->pending = NULL;
		c->pending_len = 0;
		if (w < 0) {
			fail(c, w);
			return;
		}
	}
	c->ops->connected(c->arg, 0);
	if (!c->closing)
		deliver(c); /* data that came with the handshake's last flight */
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)hint;
	(void)h;
	buf->base = malloc(READ_CHUNK);
	buf->len = buf->base ? READ_CHUNK : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct tls_client *c = s->data;

	if (n > 0 && !c->closing && BIO_write(c->rbio, buf->base, (int)n) != (int)n)
		n = UV_ENOMEM;
	free(buf->base);
	if (c->closing)
		return;
	if (n == UV_EOF) {
		if (!c->ready) {
			fail(c, -ECONNRESET);
			return;
		}
		/* What is still in rbio first; then the end (a peer that closed without close_notify). */
		deliver(c);
		if (!c->closing) {
			const struct tls_client_ops *ops = c->ops;
			void *arg = c->arg;

			c->failed = true;
			shut(c);
			ops->closed(arg, 0);
		}
		return;
	}
	if (n < 0) {
		fail(c, (int)n);
		return;
	}
	if (!c->ready)
		handshake(c);
	else
		deliver(c);
	if (!c->closing)
		update_reading(c);
}

static void update_reading(struct tls_client *c)
{
	bool want = c->tcp_open && !c->closing && (!c->ready || !c->paused);

	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
			fail(c, -EIO);
			return;
		}
		c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

static void on_connect(uv_connect_t *req, int status)
{
	struct tls_client *c = req->data;

	c->handles--;
	if (c->closing) {
		maybe_free(c);
		return;
	}
	if (status < 0) {
		fail(c, status);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	update_reading(c);
	if (!c->closing)
		handshake(c);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct tls_client *c = req->data;
	int r;

	c->gai_pending = false;
	c->handles--;
	if (c->closing) {
		uv_freeaddrinfo(res);
		maybe_free(c);
		return;
	}
	if (status < 0 || !res) {
		uv_freeaddrinfo(res);
		fail(c, -EHOSTUNREACH);
		return;
	}
	uv_tcp_init(c->loop, &c->tcp);
	c->tcp.data = c;
	c->tcp_open = true;
	c->handles++;
	c->connect_req.data = c;
	r = uv_tcp_connect(&c->connect_req, &c->tcp, res->ai_addr, on_connect);
	uv_freeaddrinfo(res);
	if (r < 0) {
		fail(c, r);
		return;
	}
	c->handles++;
}

static void on_timeout(uv_timer_t *t)
{
	fail(t->data, -ETIMEDOUT);
}

/* The peer's name: an IP address must be in the certificate's IP SANs, a name in its DNS names. */
static int set_peer_name(SSL *ssl, const char *host)
{
	unsigned char addr[16];

	if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 ? 0 : -EINVAL;
	if (SSL_set1_host(ssl, host) != 1 || SSL_set_tlsext_host_name(ssl, host) != 1)
		return -EINVAL;
	return 0;
}

int tls_client_open(uv_loop_t *loop, struct ssl_ctx_st *ctx, const char *host, uint16_t port,
		    unsigned timeout_ms, const struct tls_client_ops *ops, void *arg, struct tls_client **out)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	char service[8];
	struct tls_client *c;
	int r;

	if (!loop || !ctx || !host || !*host || strlen(host) > HOST_MAX || !port || !ops || !ops->connected ||
	    !ops->data || !ops->closed)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->loop = loop;
	c->ops = ops;
	c->arg = arg;
	c->port = port;
	snprintf(c->host, sizeof(c->host), "%s", host);
	c->ssl = SSL_new(ctx);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->rbio || !c->wbio) {
		BIO_free(c->rbio);
		BIO_free(c->wbio);
		r = -ENOMEM;
		goto fail;
	}
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_connect_state(c->ssl);
	r = set_peer_name(c->ssl, host);
	if (r < 0)
		goto fail;
	snprintf(service, sizeof(service), "%u", port);
	c->gai.data = c;
	r = uv_getaddrinfo(loop, &c->gai, on_resolved, host, service, &hints);
	if (r < 0)
		goto fail;
	c->gai_pending = true;
	c->handles++;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	c->handles++;
	uv_timer_start(&c->timer, on_timeout, timeout_ms ? timeout_ms : 10000, 0);
	*out = c;
	return 0;
fail:
	if (c->ssl)
		SSL_free(c->ssl);
	ERR_clear_error();
	free(c);
	return r;
}

size_t tls_client_write(struct tls_client *c, const void *data, size_t len)
{
	if (c->closing || !len)
		return c->write_queued + c->pending_len;
	if (!c->ready) {
		char *p = realloc(c->pending, c->pending_len + len);

		if (!p) {
			fail(c, -ENOMEM);
			return 0;
		}
		memcpy(p + c->pending_len, data, len);
		c->pending = p;
		c->pending_len += len;
		return c->write_queued + c->pending_len;
	}
	if (write_plain(c, data, len) < 0)
		fail(c, -EPIPE);
	return c->write_queued;
}

void tls_client_pause(struct tls_client *c)
{
	c->paused = true;
	update_reading(c);
}

void tls_client_resume(struct tls_client *c)
{
	if (!c->paused || c->closing)
		return;
	c->paused = false;
	if (c->ready)
		deliver(c);
	if (!c->closing)
		update_reading(c);
}

void tls_client_set_ops(struct tls_client *c, const struct tls_client_ops *ops, void *arg)
{
	c->ops = ops;
	c->arg = arg;
}

bool tls_client_idle_ok(struct tls_client *c)
{
	uv_os_fd_t fd;
	char b;
	ssize_t n;

	if (!c->ready || c->closing || c->failed || !c->tcp_open || c->write_queued || c->pending_len ||
	    BIO_ctrl_pending(c->rbio) || SSL_pending(c->ssl) || uv_fileno((uv_handle_t *)&c->tcp, &fd) < 0)
		return false;
	n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void tls_client_close(struct tls_client *c)
{
	if (!c)
		return;
	shut(c);
	maybe_free(c);
}
