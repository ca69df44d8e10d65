/*
 * Tunnel connections (tunnel_serve.h): the ALPN choice and the handshake hook
 * on the ingress server, the per-tunnel cap, and the list of live relays by
 * owner so a sandbox's end drops them.
 */
#include "tunnel_serve.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "http_conn.h"
#include "ingress_proxy.h"
#include "tunnel_relay.h"

struct tunnel_conn {
	struct tunnel_conn *prev, *next;
	struct tunnel_serve *ts;
	struct tunnel_relay *relay;
	void *owner;
	uint16_t port; /* with owner, the tunnel: the per-tunnel cap counts both its endpoints */
};

static const unsigned char proto_h2[] = "\x02h2";
static const unsigned char proto_http11[] = "\x08http/1.1";

/* True when the wire-format list in holds the protocol p (length-prefixed). */
static bool offers(const unsigned char *in, unsigned inlen, const unsigned char *p, const unsigned char **at)
{
	for (unsigned i = 0; i < inlen;) {
		unsigned n = in[i];

		if (n == 0 || i + 1 + n > inlen)
			return false; /* a malformed list offers nothing */
		if (n == p[0] && !memcmp(in + i + 1, p + 1, n)) {
			*at = in + i + 1;
			return true;
		}
		i += 1 + n;
	}
	return false;
}

int tunnel_alpn_choose(int kind, const unsigned char *in, unsigned inlen, const unsigned char **out,
		       unsigned char *outlen)
{
	const unsigned char *at;

	if (kind == TUNNEL_H2) {
		if (!offers(in, inlen, proto_h2, &at))
			return -EPROTO;
		*out = at;
		*outlen = proto_h2[0];
		return 0;
	}
	if (offers(in, inlen, proto_http11, &at)) {
		*out = at;
		*outlen = proto_http11[0];
		return 0;
	}
	return kind < 0 ? -EPROTO : 1;
}

int tunnel_serve_init(struct tunnel_serve *ts, uv_loop_t *loop, const char *domain, const struct tunnel_serve_ops *ops,
		      void *ctx)
{
	size_t n = strlen(domain);

	if (!n || n >= sizeof(ts->domain) || !ops || !ops->kind_of || !ops->admit || !ops->release)
		return -EINVAL;
	memset(ts, 0, sizeof(*ts));
	ts->loop = loop;
	for (size_t i = 0; i <= n; i++)
		ts->domain[i] = (char)(domain[i] >= 'A' && domain[i] <= 'Z' ? domain[i] + 32 : domain[i]);
	ts->max_connections = TUNNEL_DEFAULT_MAX_CONNECTIONS;
	ts->idle_timeout_ms = TUNNEL_DEFAULT_IDLE_TIMEOUT_S * 1000u;
	ts->connect_timeout_ms = TUNNEL_RELAY_DEFAULT_CONNECT_TIMEOUT_MS;
	ts->max_queued = TUNNEL_RELAY_DEFAULT_MAX_QUEUED;
	ts->ops = ops;
	ts->ctx = ctx;
	return 0;
}

/* The tunnel label of an SNI name, or false (no name, not under the domain, not a tunnel). */
static bool tunnel_label(struct tunnel_serve *ts, const char *sni, char *label, size_t cap, enum tunnel_kind *kind)
{
	return sni && ingress_label_of(sni, ts->domain, false, label, cap) == 0 &&
	       ts->ops->kind_of(ts->ctx, label, kind) == 0;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
		   unsigned int inlen, void *arg)
{
	struct tunnel_serve *ts = arg;
	char label[INGRESS_LABEL_LEN + 1];
	enum tunnel_kind kind;
	int k = -1, r;

	if (tunnel_label(ts, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), label, sizeof(label), &kind))
		k = (int)kind;
	r = tunnel_alpn_choose(k, in, inlen, out, outlen);
	return r == 0 ? SSL_TLSEXT_ERR_OK : r > 0 ? SSL_TLSEXT_ERR_NOACK : SSL_TLSEXT_ERR_ALERT_FATAL;
}

static void conn_unlink(struct tunnel_conn *tc)
{
	struct tunnel_serve *ts = tc->ts;

	if (tc->prev)
		tc->prev->next = tc->next;
	else
		ts->conns = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	ts->ops->release(ts->ctx, tc->owner);
	free(tc);
}

static void on_relay_closed(void *ctx, struct tunnel_relay *r, int err)
{
	(void)r;
	(void)err;
	conn_unlink(ctx);
}

static const struct tunnel_relay_ops relay_ops = {.closed = on_relay_closed};

/*
 * Admits a connection to the tunnel of label (TLS) or plain_port: a linked
 * tunnel_conn, or NULL (refused: no such tunnel, not running, a cap).
 */
static struct tunnel_conn *admit(struct tunnel_serve *ts, const char *label, uint16_t plain_port,
				 struct tunnel_target *t)
{
	struct tunnel_conn *tc;
	unsigned n = 0;

	if (ts->ops->admit(ts->ctx, label, plain_port, t) < 0)
		return NULL;
	/* The per-tunnel cap, both endpoints together: the list is bounded by the caps of every sandbox. */
	for (tc = ts->conns; tc; tc = tc->next)
		if (tc->owner == t->owner && tc->port == t->port)
			n++;
	tc = n < ts->max_connections ? calloc(1, sizeof(*tc)) : NULL;
	if (!tc) {
		ts->ops->release(ts->ctx, t->owner);
		return NULL;
	}
	tc->ts = ts;
	tc->owner = t->owner;
	tc->port = t->port;
	tc->next = ts->conns;
	if (tc->next)
		tc->next->prev = tc;
	ts->conns = tc;
	return tc;
}

static void relay_config(struct tunnel_serve *ts, struct tunnel_conn *tc, const struct tunnel_target *t,
			 struct tunnel_relay_config *cfg)
{
	*cfg = (struct tunnel_relay_config){.loop = ts->loop,
					    .vsock_path = t->vsock_path,
					    .port = t->port,
					    .connect_timeout_ms = ts->connect_timeout_ms,
					    .idle_timeout_ms = ts->idle_timeout_ms,
					    .max_queued = ts->max_queued,
					    .ops = &relay_ops,
					    .ctx = tc};
}

static void on_tls_done(struct http_conn *c, void *ctx)
{
	struct tunnel_serve *ts = ctx;
	char label[INGRESS_LABEL_LEN + 1];
	enum tunnel_kind kind;
	struct tunnel_target t;
	struct tunnel_relay_config cfg;
	struct tunnel_conn *tc;

	if (!tunnel_label(ts, http_conn_sni(c), label, sizeof(label), &kind))
		return; /* a connect-token name: HTTP as before */
	tc = admit(ts, label, 0, &t);
	if (!tc) {
		ts->refused++;
		http_conn_abort(c);
		return;
	}
	relay_config(ts, tc, &t, &cfg);
	if (tunnel_relay_start_conn(&cfg, c, &tc->relay) < 0) {
		ts->refused++;
		conn_unlink(tc); /* c was aborted */
		return;
	}
	ts->served++;
}

void tunnel_serve_attach(struct tunnel_serve *ts, struct http_server *srv, struct ssl_ctx_st *tls)
{
	srv->tls_done = on_tls_done;
	srv->tls_done_ctx = ts;
	SSL_CTX_set_alpn_select_cb(tls, alpn_cb, ts);
}

static void free_handle(uv_handle_t *h)
{
	free(h);
}

int tunnel_serve_accept(struct tunnel_serve *ts, uv_stream_t *listener, uint16_t plain_port)
{
	struct tunnel_target t;
	struct tunnel_relay_config cfg;
	struct tunnel_conn *tc = admit(ts, NULL, plain_port, &t);
	int r;

	if (!tc) {
		/* Taken and closed at once, so the backlog does not fill. */
		uv_tcp_t *c = malloc(sizeof(*c));

		ts->refused++;
		if (!c)
			return -ENOMEM;
		uv_tcp_init(ts->loop, c);
		if (uv_accept(listener, (uv_stream_t *)c) == 0)
			uv_tcp_close_reset(c, free_handle);
		else
			uv_close((uv_handle_t *)c, free_handle);
		return -EMFILE;
	}
	relay_config(ts, tc, &t, &cfg);
	r = tunnel_relay_accept(&cfg, listener, &tc->relay);
	if (r < 0) {
		ts->refused++;
		conn_unlink(tc);
		return r;
	}
	ts->served++;
	return 0;
}

void tunnel_serve_drop_owner(struct tunnel_serve *ts, void *owner)
{
	for (struct tunnel_conn *tc = ts->conns; tc; tc = tc->next)
		if (tc->owner == owner && tc->relay)
			tunnel_relay_drop(tc->relay); /* unlinked from the loop, when its handles closed */
}

void tunnel_serve_destroy(struct tunnel_serve *ts)
{
	for (struct tunnel_conn *tc = ts->conns; tc; tc = tc->next)
		if (tc->relay)
			tunnel_relay_drop(tc->relay);
}
