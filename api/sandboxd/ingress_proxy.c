/*
 * The ingress proxy (ingress_proxy.h): one exchange per client connection,
 * holding the guest connection its requests go through.
 *
 * A request is checked when its head is in: a known label under the domain
 * in both SNI and Host, a token the owner accepts. Its head is rebuilt
 * (ingress_forward_head) and sent through the exchange's guest relay (a
 * relay kept alive from the previous request when the guest allowed it, else
 * a new one); the body follows as it arrives, re-chunked when it came
 * chunked, with back-pressure both ways. The guest's response is parsed
 * (http_parser, bounded field list): its head rebuilt from allowed fields,
 * its body framed again for the client. A 101 to a WebSocket handshake
 * hands both connections to a byte relay.
 *
 * Calls that may end the client's request (and so start its next, pipelined
 * one) are made outside http_parser's callbacks: the response parser pauses
 * at the end of each message and the exchange acts once it returned.
 */
#include "ingress_proxy.h"

#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest_relay.h"
#include "http_head.h"
#include "log.h"

/* The request head as forwarded: the client's fields and target, plus what the proxy adds. */
#define FORWARD_HEAD_MAX (HTTP_MAX_HEADER_BYTES + HTTP_MAX_URL + 2048)
/* The guest's response head as the client gets it. */
#define RESPONSE_FIELDS_MAX (HTTP_MAX_HEADER_BYTES + 512)
#define DEFAULT_MAX_QUEUED (256 * 1024)
#define LABEL_MAX 64

/*
 * What a request needs only while it is under way, taken for it from the
 * proxy's spares (or allocated): a kept client connection between requests
 * holds none of it.
 */
struct request_bufs {
	char head[FORWARD_HEAD_MAX]; /* the forwarded head, kept for a retry until the response starts */
	size_t head_len;
	struct http_headers rh;          /* the guest's response fields */
	char fields[RESPONSE_FIELDS_MAX]; /* the response head fields as the client gets them */
	size_t fields_len;
};

enum exchange_state {
	X_IDLE,      /* no request under way */
	X_REQUEST,   /* a request forwarded (or being forwarded), its response not over */
	X_UPGRADED,  /* a byte relay between the client and the guest */
};

struct exchange {
	struct ingress_proxy *p;
	struct http_conn *conn; /* NULL once the client connection closed */
	struct ingress_link link;
	enum exchange_state state;
	struct http_request *req; /* the request being served (X_REQUEST) */

	/* The guest side. */
	struct guest_relay *relay;
	bool relay_open;      /* opened(0) came */
	bool relay_reusable;  /* the last response ended cleanly and the guest keeps the connection */
	bool relay_reused;    /* this request went on a kept-alive relay: a silent close may be retried */
	char relay_vsock[320];
	uint16_t relay_port;
	char *pending; /* bytes for the guest before the relay opened */
	size_t pending_len, pending_cap;
	struct request_bufs *bufs; /* while a request is under way */

	/* The request under way. */
	bool client_paused; /* its body stopped for the guest's sake */
	bool body_chunked;  /* re-chunked towards the guest */
	bool body_sent;     /* the whole request went to the guest */
	bool upgrade;       /* a WebSocket handshake */
	bool head_method;
	char set_cookie[INGRESS_TOKEN_MAX + 96]; /* for a token that came in the query */
	int refusal; /* a refusal's status, answered once the (bodiless) request is in */
	char refusal_why[256];
	uint64_t body_bytes;

	/* The response. */
	http_parser rp;
	bool resp_begun;  /* its head went to the client */
	bool resp_ended;  /* message complete */
	bool resp_interim; /* the message being parsed is a 1xx other than 101 */
	bool guest_paused;
	bool resp_bytes;  /* any byte of a response came */
	int resp_status;
	enum http_reply_framing framing;

	/*
	 * The guest's silence while a request is under way: each sign of life
	 * moves the deadline (silent_since); the timer, when it fires early,
	 * is started again for what is left, so it is not re-armed per read.
	 */
	uv_timer_t timer;
	uint64_t silent_since; /* loop time (ms) */
	bool watching;         /* a request waits on the guest */
	bool freeing;
};

static const struct guest_relay_ops relay_ops;
static const struct http_relay_ops client_relay_ops;
static const http_parser_settings response_settings;

/* ---- names ---- */

static bool ci_equal(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
			return false;
	return true;
}

int ingress_label_of(const char *name, const char *domain, bool port_allowed, char *out, size_t cap)
{
	size_t n = strlen(name), dlen = strlen(domain), llen;
	const char *colon = memchr(name, ':', n);

	if (colon) {
		if (!port_allowed || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
		    strlen(colon + 1) > 5)
			return -EINVAL;
		n = (size_t)(colon - name);
	}
	if (n && name[n - 1] == '.') /* a fully qualified name: example.test. */
		n--;
	if (n < dlen + 2 || name[n - dlen - 1] != '.' || !ci_equal(name + n - dlen, domain, dlen))
		return -ENOENT;
	llen = n - dlen - 1;
	if (!llen || llen >= cap || memchr(name, '.', llen))
		return -ENOENT;
	for (size_t i = 0; i < llen; i++) {
		unsigned char ch = (unsigned char)name[i];

		if (!isalnum(ch) && ch != '-')
			return -EINVAL;
		out[i] = (char)tolower(ch);
	}
	out[llen] = '\0';
	return 0;
}

/* ---- the exchange's life ---- */

/* The request's buffers leave the exchange (given back by the caller once http_conn is done with them). */
static struct request_bufs *bufs_take(struct exchange *x)
{
	struct request_bufs *b = x->bufs;

	x->bufs = NULL;
	return b;
}

static struct request_bufs *bufs_get(struct ingress_proxy *p)
{
	return p->spares ? p->spare_bufs[--p->spares] : malloc(sizeof(struct request_bufs));
}

static void bufs_put(struct ingress_proxy *p, struct request_bufs *b)
{
	if (b && p->spares < INGRESS_SPARE_BUFS)
		p->spare_bufs[p->spares++] = b;
	else
		free(b);
}

/* ---- the guest's silence ---- */

static void on_silence(uv_timer_t *t);

/*
 * The request waits on the guest from now: the deadline moves; the timer is
 * started only when none runs (or one runs past the deadline: a shorter limit).
 */
static void silence_watch(struct exchange *x)
{
	struct ingress_proxy *p = x->p;

	if (x->freeing || !p->response_timeout_ms)
		return;
	x->silent_since = uv_now(p->server.loop);
	x->watching = true;
	if (!uv_is_active((uv_handle_t *)&x->timer) || uv_timer_get_due_in(&x->timer) > p->response_timeout_ms)
		uv_timer_start(&x->timer, on_silence, p->response_timeout_ms, 0);
}

/* Nothing waits on the guest: a running timer is left to find that out. */
static void silence_unwatch(struct exchange *x)
{
	x->watching = false;
}

static void relay_drop(struct exchange *x)
{
	if (x->relay)
		guest_relay_close(x->relay);
	x->relay = NULL;
	x->relay_open = x->relay_reusable = false;
	x->pending_len = 0;
	x->guest_paused = false;
}

static void on_timer_closed(uv_handle_t *h)
{
	struct exchange *x = h->data;

	free(x->pending);
	free(x);
}

/* The client connection closed: everything of the exchange goes. */
static void on_conn_closed(struct http_conn *c, void *ctx)
{
	struct exchange *x = ctx;

	(void)c;
	x->conn = NULL;
	x->req = NULL;
	bufs_put(x->p, bufs_take(x));
	relay_drop(x);
	if (x->link.owner && x->p->ops->release)
		x->p->ops->release(x->p->ctx, &x->link);
	x->link.owner = NULL;
	x->freeing = true;
	uv_timer_stop(&x->timer);
	uv_close((uv_handle_t *)&x->timer, on_timer_closed);
}

static struct exchange *exchange_of(struct ingress_proxy *p, struct http_conn *c)
{
	struct exchange *x = http_conn_ctx(c);

	if (x)
		return x;
	x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->p = p;
	x->conn = c;
	uv_timer_init(p->server.loop, &x->timer);
	x->timer.data = x;
	http_conn_set_ctx(c, x);
	return x;
}

void ingress_proxy_drop(struct ingress_link *link)
{
	struct exchange *x = (struct exchange *)((char *)link - offsetof(struct exchange, link));

	if (x->conn)
		http_conn_abort(x->conn);
}

/* ---- answers of the proxy's own ---- */

static void respond_text(struct http_request *req, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void respond_text(struct http_request *req, int status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(msg) - 2)
		n = sizeof(msg) - 2;
	msg[n++] = '\n';
	http_respond(req, status, "text/plain; charset=utf-8", msg, (size_t)n);
}

static void on_refused_complete(struct http_request *req)
{
	struct exchange *x = req->ctx;

	respond_text(req, x->refusal, "%s", x->refusal_why);
}

static const struct http_handler refused_handler = {.complete = on_refused_complete};

/*
 * The proxy's own refusal of a request. One without a body is answered once
 * it is in, so the connection lives on for the next request; one with a body
 * is answered now, and the connection closes after it (its body unread).
 */
static void refuse(struct exchange *x, struct http_request *req, int status, const char *why)
{
	x->p->refused++;
	if (req->chunked || req->content_length || req->upgrade) {
		respond_text(req, status, "%s", why);
		return;
	}
	x->refusal = status;
	snprintf(x->refusal_why, sizeof(x->refusal_why), "%s", why);
	req->body_mode = HTTP_BODY_DISCARD;
	req->handler = &refused_handler;
	req->ctx = x;
}

/*
 * The request under way ends without a response from the guest (or with
 * one cut short): an error reply when its head was not sent yet, else the
 * client connection closes, since the reply can no longer be completed.
 */
static void request_fail(struct exchange *x, int status, const char *why)
{
	struct http_request *req = x->req;

	x->state = X_IDLE;
	x->req = NULL;
	bufs_put(x->p, bufs_take(x));
	silence_unwatch(x);
	relay_drop(x);
	if (!req || !x->conn)
		return;
	if (x->resp_begun) {
		http_conn_abort(x->conn);
		return;
	}
	respond_text(req, status, "%s", why);
}

/* ---- towards the guest ---- */

static size_t guest_write(struct exchange *x, const void *data, size_t len)
{
	if (!len)
		return x->relay && x->relay_open ? 0 : x->pending_len;
	if (!x->relay_open) {
		if (x->pending_len + len > x->pending_cap) {
			size_t cap = x->pending_cap ? x->pending_cap : 4096;
			char *n;

			while (cap < x->pending_len + len)
				cap *= 2;
			n = realloc(x->pending, cap);
			if (!n)
				return SIZE_MAX;
			x->pending = n;
			x->pending_cap = cap;
		}
		memcpy(x->pending + x->pending_len, data, len);
		x->pending_len += len;
		return x->pending_len;
	}
	return guest_relay_write(x->relay, data, len);
}

static int relay_start(struct exchange *x, const char *vsock, uint16_t port)
{
	int r;

	x->pending_len = 0;
	r = guest_relay_open(x->p->server.loop, vsock, port, x->p->connect_timeout_ms, &relay_ops, x, &x->relay);
	if (r < 0) {
		x->relay = NULL;
		return r;
	}
	snprintf(x->relay_vsock, sizeof(x->relay_vsock), "%s", vsock);
	x->relay_port = port;
	x->relay_open = false;
	x->relay_reusable = false;
	return 0;
}

static void response_reset(struct exchange *x)
{
	http_parser_init(&x->rp, HTTP_RESPONSE);
	x->rp.data = x;
	x->resp_begun = x->resp_ended = x->resp_interim = x->resp_bytes = false;
	x->resp_status = 0;
	x->bufs->fields_len = 0;
}


/* Sends the forwarded head on the exchange's relay. 0 or -errno. */
static int send_head(struct exchange *x)
{
	if (guest_write(x, x->bufs->head, x->bufs->head_len) == SIZE_MAX)
		return -ENOMEM;
	return 0;
}

/* ---- the client's request ---- */

static int on_client_body(struct http_request *req, const char *data, size_t len)
{
	struct exchange *x = req->ctx;
	size_t queued;
	char size[24];

	if (x->state != X_REQUEST || x->req != req)
		return 0; /* answered already (an early error or reply): what is left goes nowhere */
	x->body_bytes += len;
	if (x->body_chunked) {
		guest_write(x, size, (size_t)snprintf(size, sizeof(size), "%zx\r\n", len));
		guest_write(x, data, len);
		queued = guest_write(x, "\r\n", 2);
	} else {
		queued = guest_write(x, data, len);
	}
	if (queued == SIZE_MAX)
		return -1;
	silence_watch(x);
	if (!x->relay_open || queued > x->p->max_queued) {
		x->client_paused = true;
		return 1;
	}
	return 0;
}

static void on_client_complete(struct http_request *req)
{
	struct exchange *x = req->ctx;

	if (x->state != X_REQUEST || x->req != req)
		return;
	if (x->body_chunked)
		guest_write(x, "0\r\n\r\n", 5);
	x->body_sent = true;
}

static void on_client_drained(struct http_request *req)
{
	struct exchange *x = req->ctx;

	if (x->guest_paused && x->relay) {
		x->guest_paused = false;
		guest_relay_resume(x->relay);
	}
}

static void on_client_aborted(struct http_request *req)
{
	struct exchange *x = req->ctx;

	if (x->req != req)
		return;
	/* The client left mid-request: the guest connection cannot be reused. */
	x->state = X_IDLE;
	x->req = NULL;
	bufs_put(x->p, bufs_take(x));
	silence_unwatch(x);
	relay_drop(x);
}

static const struct http_handler client_handler = {
	.sink = on_client_body,
	.complete = on_client_complete,
	.drained = on_client_drained,
	.aborted = on_client_aborted,
};

static bool is_websocket(const struct http_request *req)
{
	const char *up = http_request_header(req, "upgrade");

	return up && !strcasecmp(up, "websocket");
}

/* The Host of the request, and the authority of an absolute-form target, against SNI: 0 or a status. */
static int check_names(struct ingress_proxy *p, struct http_request *req, char *label, size_t cap,
		       const char **why)
{
	const char *sni = http_conn_sni(req->conn), *host = http_request_header(req, "host");
	char sni_label[LABEL_MAX], auth[300];
	int r;

	if (!host || !host[0]) {
		*why = "a request names its host";
		return 400;
	}
	r = ingress_label_of(host, p->domain, true, label, cap);
	if (r == -EINVAL) {
		*why = "malformed Host";
		return 400;
	}
	if (r < 0) {
		*why = "this host is not served here";
		return 421;
	}
	if (!sni || ingress_label_of(sni, p->domain, false, sni_label, sizeof(sni_label)) < 0 ||
	    strcmp(sni_label, label)) {
		*why = "the TLS server name and the Host header name different hosts";
		return 421;
	}
	if (req->url[0] != '/' && strcmp(req->url, "*")) {
		/* absolute-form: its authority must be the same host. */
		const char *s = strstr(req->url, "://");
		size_t n;

		if (!s) {
			*why = "malformed request target";
			return 400;
		}
		s += 3;
		n = strcspn(s, "/?#");
		if (n >= sizeof(auth) || memchr(s, '@', n)) {
			*why = "malformed request target";
			return 400;
		}
		memcpy(auth, s, n);
		auth[n] = '\0';
		if (ingress_label_of(auth, p->domain, true, sni_label, sizeof(sni_label)) < 0 ||
		    strcmp(sni_label, label)) {
			*why = "the request target names another host";
			return 421;
		}
	}
	return 0;
}

static void on_request_headers(struct http_request *req, void *ctx)
{
	struct ingress_proxy *p = ctx;
	struct exchange *x = exchange_of(p, req->conn);
	struct ingress_token_candidate cand[3 * INGRESS_TOKEN_CANDIDATES];
	struct ingress_grant grant;
	struct ingress_forward f = {0};
	char label[LABEL_MAX], why[256], client[64];
	const char *msg = "";
	size_t n;
	int status, r;

	p->requests++;
	if (!x) {
		respond_text(req, 503, "out of memory");
		return;
	}
	if (x->state != X_IDLE) {
		/* One request at a time per connection: http_conn holds the next one back. */
		respond_text(req, 500, "proxy state error");
		return;
	}
	req->key_name = "ingress";
	if (req->method == HTTP_CONNECT) {
		respond_text(req, 405, "CONNECT is not served here");
		return;
	}
	status = check_names(p, req, label, sizeof(label), &msg);
	if (status)
		return refuse(x, req, status, msg);
	if (req->upgrade && !is_websocket(req))
		return refuse(x, req, 501, "only WebSocket upgrades are relayed");
	n = ingress_token_find(req->url, req->headers, cand, sizeof(cand) / sizeof(cand[0]));
	why[0] = '\0';
	status = p->ops->authorize(p->ctx, label, cand, n, &x->link, &grant, why, sizeof(why));
	if (status)
		return refuse(x, req, status, why[0] ? why : http_status_text(status));
	/* The head for the guest. */
	bufs_put(p, bufs_take(x));
	if (!(x->bufs = bufs_get(p))) {
		respond_text(req, 503, "out of memory");
		return;
	}
	http_conn_peer(req->conn, client, sizeof(client));
	f.method = http_method_str(req->method);
	f.target = req->url;
	f.headers = req->headers;
	f.token = cand[grant.token_index].token;
	f.verified = grant.verified;
	f.client_addr = client;
	f.host = http_request_header(req, "host");
	f.upgrade = req->upgrade;
	f.body = req->chunked ? INGRESS_BODY_CHUNKED : req->has_length ? INGRESS_BODY_LENGTH : INGRESS_BODY_NONE;
	f.content_length = req->content_length;
	r = ingress_forward_head(&f, x->bufs->head, sizeof(x->bufs->head));
	if (r < 0) {
		bufs_put(p, bufs_take(x));
		respond_text(req, r == -E2BIG ? 431 : 400, "%s",
			     r == -E2BIG ? "request head too large to forward" : "request target cannot be forwarded");
		return;
	}
	x->bufs->head_len = (size_t)r;
	x->set_cookie[0] = '\0';
	if (cand[grant.token_index].place == INGRESS_TOKEN_QUERY)
		snprintf(x->set_cookie, sizeof(x->set_cookie),
			 "Set-Cookie: " INGRESS_TOKEN_PARAM "=%s; Path=/; Secure; HttpOnly; SameSite=Lax\r\n",
			 cand[grant.token_index].token);
	snprintf(x->link.token_id, sizeof(x->link.token_id), "%s", grant.token_id);

	/* The guest connection: the kept-alive one when it leads to the same place. */
	x->relay_reused = false;
	if (x->relay && x->relay_reusable && x->relay_port == grant.port && !strcmp(x->relay_vsock, grant.vsock_path)) {
		x->relay_reused = true;
		x->relay_reusable = false;
	} else {
		relay_drop(x);
		r = relay_start(x, grant.vsock_path, grant.port);
		if (r < 0) {
			bufs_put(p, bufs_take(x));
			respond_text(req, 502, "cannot reach the sandbox: %s", strerror(-r));
			return;
		}
	}
	x->state = X_REQUEST;
	x->req = req;
	x->client_paused = false;
	x->body_chunked = f.body == INGRESS_BODY_CHUNKED;
	x->body_sent = f.body == INGRESS_BODY_NONE;
	x->body_bytes = 0;
	x->upgrade = req->upgrade;
	x->head_method = req->method == HTTP_HEAD;
	response_reset(x);
	if (send_head(x) < 0) {
		request_fail(x, 503, "out of memory");
		return;
	}
	silence_watch(x);
	if (req->upgrade)
		req->accepts_upgrade = true;
	req->body_mode = f.body == INGRESS_BODY_NONE ? HTTP_BODY_DISCARD : HTTP_BODY_SINK;
	req->body_limit = SIZE_MAX;
	req->handler = &client_handler;
	req->ctx = x;
}

/* ---- the guest's response ---- */

static struct exchange *exchange_of_parser(http_parser *rp)
{
	return rp->data;
}

static int on_resp_begin(http_parser *rp)
{
	struct exchange *x = exchange_of_parser(rp);

	http_headers_init(&x->bufs->rh);
	return 0;
}

static int on_resp_field(http_parser *rp, const char *at, size_t len)
{
	return http_headers_add_name(&exchange_of_parser(rp)->bufs->rh, at, len) < 0 ? -1 : 0;
}

static int on_resp_value(http_parser *rp, const char *at, size_t len)
{
	return http_headers_add_value(&exchange_of_parser(rp)->bufs->rh, at, len) < 0 ? -1 : 0;
}

static int on_resp_headers(http_parser *rp)
{
	struct exchange *x = exchange_of_parser(rp);
	struct request_bufs *b = x->bufs;
	int status = rp->status_code, n;
	bool upgrade = status == 101;

	http_headers_finish(&b->rh);
	if (status < 200 && status != 101) {
		/* 100 Continue and other interim answers: the proxy sent its own 100 already. */
		x->resp_interim = true;
		return 0;
	}
	x->resp_interim = false;
	if (upgrade && (!x->upgrade || !rp->upgrade))
		return -1; /* a 101 nobody asked for, or one that switches to nothing */
	n = ingress_response_fields(&b->rh, upgrade, x->head_method || status == 304, b->fields,
				    sizeof(b->fields) - sizeof(x->set_cookie));
	if (n < 0)
		return -1;
	b->fields_len = (size_t)n;
	if (x->set_cookie[0]) {
		memcpy(b->fields + b->fields_len, x->set_cookie, strlen(x->set_cookie) + 1);
		b->fields_len += strlen(x->set_cookie);
	}
	x->resp_status = status;
	silence_unwatch(x);
	if (upgrade)
		return 0; /* detached once the parser returned */
	if (x->head_method || status == 204 || status == 304) {
		x->framing = HTTP_REPLY_NONE;
		return 1; /* no body; the head goes out at the message's end */
	}
	if (rp->flags & F_CHUNKED)
		x->framing = HTTP_REPLY_CHUNKED;
	else if (rp->flags & F_CONTENTLENGTH)
		x->framing = HTTP_REPLY_LENGTH;
	else
		x->framing = HTTP_REPLY_CHUNKED; /* delimited by the guest's close */
	x->resp_begun = true;
	http_stream_begin_fields(x->req, status, b->fields, b->fields_len, x->framing,
				 x->framing == HTTP_REPLY_LENGTH ? rp->content_length : 0);
	return 0;
}

static int on_resp_body(http_parser *rp, const char *at, size_t len)
{
	struct exchange *x = exchange_of_parser(rp);

	if (!x->req || !x->resp_begun)
		return -1;
	if (http_stream_write(x->req, at, len) > x->p->max_queued && !x->guest_paused && x->relay) {
		x->guest_paused = true;
		guest_relay_pause(x->relay);
	}
	return 0;
}

static int on_resp_complete(http_parser *rp)
{
	struct exchange *x = exchange_of_parser(rp);

	if (x->resp_interim) {
		x->resp_interim = false;
		return 0;
	}
	x->resp_ended = true;
	http_parser_pause(rp, 1);
	return 0;
}

static const http_parser_settings response_settings = {
	.on_message_begin = on_resp_begin,
	.on_header_field = on_resp_field,
	.on_header_value = on_resp_value,
	.on_headers_complete = on_resp_headers,
	.on_body = on_resp_body,
	.on_message_complete = on_resp_complete,
};

/* The response is over: the client's request ends, the relay is kept for the next one or closed. */
static void response_done(struct exchange *x, bool extra_bytes)
{
	struct http_request *req = x->req;
	struct request_bufs *b = bufs_take(x);
	bool keep = x->body_sent && !extra_bytes && http_should_keep_alive(&x->rp) && x->relay;

	x->state = X_IDLE;
	x->req = NULL;
	silence_unwatch(x);
	if (keep) {
		x->relay_reusable = true;
		if (x->guest_paused) {
			x->guest_paused = false;
			guest_relay_resume(x->relay);
		}
	} else {
		relay_drop(x);
	}
	/* Either call may start the connection's next request: the exchange is ready for it. */
	if (!req) {
		bufs_put(x->p, b);
		return;
	}
	if (x->framing == HTTP_REPLY_NONE && !x->resp_begun) {
		x->resp_begun = true;
		http_stream_begin_fields(req, x->resp_status, b->fields, b->fields_len, HTTP_REPLY_NONE, 0);
	} else {
		http_stream_end(req);
	}
	bufs_put(x->p, b);
}

/* The guest's 101: both connections become one byte relay. */
static void upgraded(struct exchange *x, const char *rest, size_t len)
{
	struct http_request *req = x->req;
	struct request_bufs *b = bufs_take(x);
	int r;

	x->state = X_UPGRADED;
	x->req = NULL;
	x->resp_begun = true;
	x->p->upgrades++;
	/* The fields end in CRLF; http_conn_detach adds the blank line. */
	r = http_conn_detach(req, 101, b->fields, &client_relay_ops, x);
	bufs_put(x->p, b);
	if (r < 0 || !x->conn) {
		x->state = X_IDLE;
		relay_drop(x);
		return;
	}
	if (len && x->relay)
		http_relay_write(x->conn, rest, len);
}

/* Bytes from the guest for the request under way. */
static void feed_response(struct exchange *x, const char *data, size_t len)
{
	x->resp_bytes = true;
	while (x->state == X_REQUEST) {
		size_t n = http_parser_execute(&x->rp, &response_settings, data, len);
		enum http_errno e = HTTP_PARSER_ERRNO(&x->rp);

		if (e == HPE_PAUSED) {
			http_parser_pause(&x->rp, 0);
			data += n;
			len -= n;
			if (x->rp.upgrade && x->resp_status == 101) {
				upgraded(x, data, len);
				return;
			}
			if (x->resp_ended) {
				response_done(x, len > 0);
				return;
			}
			continue;
		}
		if (e != HPE_OK) {
			sv_debug("ingress: malformed response from the guest: %s", http_errno_description(e));
			request_fail(x, 502, "the server in the sandbox sent a malformed response");
			return;
		}
		if (x->rp.upgrade && x->resp_status == 101) {
			/* Without a pause: the parser stopped at the end of the 101's head. */
			upgraded(x, data + n, len - n);
			return;
		}
		return; /* all of it taken; more to come */
	}
}

/*
 * The same, the client's writes gathered meanwhile: a response whose head
 * and body came together leaves in one write (one TLS record).
 */
static void feed_response_corked(struct exchange *x, const char *data, size_t len)
{
	struct http_conn *c = x->conn;

	if (!c) {
		feed_response(x, data, len);
		return;
	}
	http_conn_ref(c);
	http_conn_cork(c);
	feed_response(x, data, len);
	http_conn_uncork(c);
	http_conn_unref(c);
}

/* The guest ended its side with the request under way. */
static void guest_eof(struct exchange *x)
{
	if (x->state != X_REQUEST)
		return;
	/* A close-delimited body ends here. */
	http_parser_execute(&x->rp, &response_settings, NULL, 0);
	if (HTTP_PARSER_ERRNO(&x->rp) == HPE_PAUSED)
		http_parser_pause(&x->rp, 0);
	if (x->resp_ended) {
		x->rp.flags |= F_CONNECTION_CLOSE;
		response_done(x, false);
		return;
	}
	if (!x->resp_bytes && x->relay_reused && !x->resp_begun && x->body_bytes == 0 && x->body_sent) {
		/* The kept-alive connection was closed by the guest as the request went: once more, on a new one. */
		char vsock[sizeof(x->relay_vsock)];
		uint16_t port = x->relay_port;

		snprintf(vsock, sizeof(vsock), "%s", x->relay_vsock);
		relay_drop(x);
		x->relay_reused = false;
		if (relay_start(x, vsock, port) == 0 && send_head(x) == 0) {
			response_reset(x);
			silence_watch(x);
			return;
		}
	}
	request_fail(x, 502,
		     x->resp_bytes ? "the server in the sandbox closed the connection mid-response"
				   : "the server in the sandbox closed the connection without answering");
}

static void on_silence(uv_timer_t *t)
{
	struct exchange *x = t->data;
	uint64_t quiet = uv_now(x->p->server.loop) - x->silent_since, limit = x->p->response_timeout_ms;

	if (x->state != X_REQUEST || !x->watching || x->freeing)
		return;
	if (quiet < limit) {
		uv_timer_start(&x->timer, on_silence, limit - quiet, 0);
		return;
	}
	request_fail(x, 504, "the server in the sandbox did not answer in time");
}

/* ---- guest relay callbacks ---- */

static void on_relay_opened(void *ctx, int err, const char *why)
{
	struct exchange *x = ctx;
	char msg[300];
	size_t queued;

	if (err) {
		x->relay = NULL; /* it frees itself */
		x->relay_open = false;
		if (x->state == X_REQUEST) {
			if (err == -ECONNREFUSED)
				snprintf(msg, sizeof(msg), "nothing listens on port %u in the sandbox", x->relay_port);
			else if (err == -ETIMEDOUT)
				snprintf(msg, sizeof(msg), "the sandbox did not take the connection in time");
			else
				snprintf(msg, sizeof(msg), "cannot reach port %u in the sandbox: %s", x->relay_port,
					 why && why[0] ? why : strerror(-err));
			request_fail(x, err == -ETIMEDOUT ? 504 : 502, msg);
		}
		return;
	}
	x->relay_open = true;
	queued = x->pending_len ? guest_relay_write(x->relay, x->pending, x->pending_len) : 0;
	x->pending_len = 0;
	if (x->client_paused && queued <= x->p->max_queued && x->conn) {
		x->client_paused = false;
		http_conn_resume(x->conn);
	}
}

static void on_relay_data(void *ctx, const char *data, size_t len)
{
	struct exchange *x = ctx;

	if (x->state == X_UPGRADED) {
		if (!x->conn)
			return;
		if (!len) {
			http_relay_close(x->conn);
			return;
		}
		if (http_relay_write(x->conn, data, len) > x->p->max_queued && !x->guest_paused) {
			x->guest_paused = true;
			guest_relay_pause(x->relay);
		}
		return;
	}
	if (x->state != X_REQUEST) {
		/* Bytes or an end from a kept-alive connection between requests: it is not reused. */
		relay_drop(x);
		return;
	}
	if (!len) {
		guest_eof(x);
		return;
	}
	silence_watch(x);
	feed_response_corked(x, data, len);
}

static void on_relay_closed(void *ctx, int err)
{
	struct exchange *x = ctx;

	x->relay = NULL; /* it frees itself */
	x->relay_open = x->relay_reusable = false;
	if (x->state == X_UPGRADED) {
		if (x->conn) {
			if (err)
				http_conn_abort(x->conn);
			else
				http_relay_close(x->conn);
		}
		return;
	}
	if (x->state == X_REQUEST) {
		if (err == 0)
			guest_eof(x);
		else
			request_fail(x, 502, "the connection to the sandbox failed");
	}
}

static void on_relay_drained(void *ctx)
{
	struct exchange *x = ctx;

	if (x->client_paused && x->conn) {
		x->client_paused = false;
		if (x->state == X_UPGRADED)
			http_relay_resume(x->conn);
		else
			http_conn_resume(x->conn);
	}
}

static const struct guest_relay_ops relay_ops = {
	.opened = on_relay_opened,
	.data = on_relay_data,
	.closed = on_relay_closed,
	.drained = on_relay_drained,
};

/* ---- the client side of an upgraded connection ---- */

static int on_upgraded_client_data(void *ctx, const char *data, size_t len)
{
	struct exchange *x = ctx;

	if (!x->relay)
		return 1;
	if (guest_relay_write(x->relay, data, len) > x->p->max_queued) {
		x->client_paused = true;
		return 1;
	}
	return 0;
}

static void on_upgraded_client_closed(void *ctx, int err)
{
	struct exchange *x = ctx;

	if (err < 0) {
		relay_drop(x); /* the connection is closed already */
		return;
	}
	if (x->relay)
		guest_relay_shutdown(x->relay);
	else if (x->conn)
		http_relay_close(x->conn);
}

static void on_upgraded_client_drained(void *ctx)
{
	struct exchange *x = ctx;

	if (x->guest_paused && x->relay) {
		x->guest_paused = false;
		guest_relay_resume(x->relay);
	}
}

static const struct http_relay_ops client_relay_ops = {
	.data = on_upgraded_client_data,
	.closed = on_upgraded_client_closed,
	.drained = on_upgraded_client_drained,
};

/* ---- the proxy ---- */

int ingress_proxy_init(struct ingress_proxy *p, uv_loop_t *loop, const char *domain,
		       const struct ingress_proxy_ops *ops, void *ctx)
{
	size_t n = strlen(domain);

	memset(p, 0, sizeof(*p));
	if (!n || n >= sizeof(p->domain) || domain[0] == '.' || domain[n - 1] == '.' || strstr(domain, ".."))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)domain[i];

		if (!isalnum(ch) && ch != '-' && ch != '.')
			return -EINVAL;
		p->domain[i] = (char)tolower(ch);
	}
	http_server_init(&p->server, loop, on_request_headers, p);
	p->server.conn_closed = on_conn_closed;
	p->response_timeout_ms = INGRESS_DEFAULT_RESPONSE_TIMEOUT_MS;
	p->connect_timeout_ms = INGRESS_DEFAULT_CONNECT_TIMEOUT_MS;
	p->max_queued = DEFAULT_MAX_QUEUED;
	p->ops = ops;
	p->ctx = ctx;
	return 0;
}

void ingress_proxy_destroy(struct ingress_proxy *p)
{
	http_server_destroy(&p->server);
	while (p->spares)
		free(p->spare_bufs[--p->spares]);
}
