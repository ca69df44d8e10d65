/*
 * The etcd client (etcd.h): one libcurl multi handle driven by the libuv
 * loop. curl tells us which sockets to watch (uv_poll_t each) and when to
 * wake it (one uv_timer_t); we hand readiness back with
 * curl_multi_socket_action and collect finished transfers afterwards.
 *
 * curl must not be re-entered from its own callbacks, and a caller may free
 * the client or cancel a watch from any of ours. So every entry from the
 * loop counts itself in c->busy; cancels and frees made while busy only
 * mark, and the last one out reaps what was marked.
 */
#include "etcd.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_reply.h"

/* A member that does not accept a connection in this long is passed over for the next. */
#define ETCD_CONNECT_TIMEOUT_MS 1000
/* A watch stream with nothing to say is kept open; TCP keepalives find a dead peer. */
#define ETCD_WATCH_KEEPALIVE_S 5

enum etcd_op { OP_LEASE_GRANT, OP_KEEPALIVE, OP_REVOKE, OP_PUT, OP_DELETE, OP_TXN, OP_RANGE, OP_WATCH };

struct etcd_sock {
	uv_poll_t poll;
	struct etcd_client *c;
	curl_socket_t fd;
	struct etcd_sock *next;
};

struct etcd_req {
	struct etcd_client *c;
	struct etcd_req *next;
	CURL *easy;
	enum etcd_op op;
	const char *path;
	char *body;
	struct curl_slist *headers;
	char *reply;
	size_t reply_len, reply_cap;
	size_t endpoint, tries; /* which endpoint this try uses; how many have been tried */
	bool done;              /* finished or canceled: no callback any more, reaped when idle */
	bool pending_add;       /* started from inside curl: added once curl returns */
	union {
		etcd_lease_cb lease;
		etcd_done_cb done;
		etcd_txn_cb txn;
		etcd_range_cb range;
	} cb;
	void *arg;
	struct etcd_watch *watch; /* OP_WATCH */
};

struct etcd_watch {
	struct etcd_req *req;
	etcd_watch_cb cb; /* NULL once it failed or was canceled */
	void *arg;
	bool created;     /* etcd said the watch is on: a later end is a break */
};

struct etcd_client {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	char *endpoints[ETCD_ENDPOINTS_MAX];
	size_t nendpoints;
	size_t preferred; /* the endpoint that answered last: the next request starts there */
	struct etcd_req *reqs;
	struct etcd_sock *socks;
	unsigned busy;    /* nested entries from the loop (see the top) */
	bool in_curl;     /* inside curl_multi_socket_action, which must not be re-entered */
	bool pending;     /* some request waits for pending_add */
	bool reap;        /* some request was marked done while busy */
	bool freed;       /* etcd_client_free was called */
	unsigned open_handles; /* timer and polls not yet closed */
};

static void client_release(struct etcd_client *c);

/* ---- the loop side of curl ---- */

static void handle_closed(uv_handle_t *h)
{
	struct etcd_client *c = h->data;

	if (h->type == UV_POLL)
		free((struct etcd_sock *)h); /* poll is its first member */
	if (--c->open_handles == 0 && c->freed)
		free(c);
}

static void sock_close(struct etcd_client *c, struct etcd_sock *s)
{
	for (struct etcd_sock **pp = &c->socks; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	uv_poll_stop(&s->poll);
	uv_close((uv_handle_t *)&s->poll, handle_closed);
}

static void finish(struct etcd_client *c, struct etcd_req *r, CURLcode code);
static void reap(struct etcd_client *c);

/* Every transfer curl has finished, each finished once (a failover may start it again). */
static void collect(struct etcd_client *c)
{
	CURLMsg *m;
	int left;

	while (!c->freed && (m = curl_multi_info_read(c->multi, &left))) {
		struct etcd_req *r;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		finish(c, r, m->data.result);
	}
}

static void enter(struct etcd_client *c)
{
	c->busy++;
}

/* The last one out reaps what was canceled meanwhile, and frees a freed client. */
static void leave(struct etcd_client *c)
{
	if (--c->busy)
		return;
	if (c->freed) {
		client_release(c);
		return;
	}
	if (c->reap)
		reap(c);
}

static void deliver(struct etcd_req *r, int err, const struct etcd_reply *rep);

/* Requests started by callbacks that ran inside curl (a watch event's). */
static void add_pending(struct etcd_client *c)
{
	c->pending = false;
	for (struct etcd_req *r = c->reqs; r && !c->freed; r = r->next) {
		if (!r->pending_add || r->done)
			continue;
		r->pending_add = false;
		if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) {
			deliver(r, -ENOMEM, NULL);
			if (r->op != OP_WATCH)
				r->done = true;
			c->reap = true;
		}
	}
}

static void drive(struct etcd_client *c, curl_socket_t fd, int events)
{
	int running;

	enter(c);
	c->in_curl = true;
	curl_multi_socket_action(c->multi, fd, events, &running);
	c->in_curl = false;
	if (c->pending)
		add_pending(c);
	collect(c);
	leave(c);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct etcd_sock *s = (struct etcd_sock *)h;
	int flags = 0;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	else
		flags = (events & UV_READABLE ? CURL_CSELECT_IN : 0) | (events & UV_WRITABLE ? CURL_CSELECT_OUT : 0);
	drive(s->c, s->fd, flags);
}

static void on_timer(uv_timer_t *t)
{
	drive(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct etcd_client *c = userp;
	struct etcd_sock *s = socketp;
	int events = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			curl_multi_assign(c->multi, fd, NULL);
			sock_close(c, s);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		if (uv_poll_init_socket(c->loop, &s->poll, fd) < 0) {
			free(s);
			return -1;
		}
		s->poll.data = c;
		s->c = c;
		s->fd = fd;
		s->next = c->socks;
		c->socks = s;
		c->open_handles++;
		curl_multi_assign(c->multi, fd, s);
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&s->poll, events, on_poll);
	return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct etcd_client *c = userp;

	(void)multi;
	if (timeout_ms < 0)
		uv_timer_stop(&c->timer);
	else /* 0 too: curl must not be called back from inside itself */
		uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- the client ---- */

int etcd_client_new(uv_loop_t *loop, const char *endpoints, struct etcd_client **out, char *err, size_t errlen)
{
	struct etcd_client *c;
	const char *p = endpoints;

	*out = NULL;
	if (!endpoints || !*endpoints) {
		snprintf(err, errlen, "no etcd endpoint");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	while (*p) {
		size_t len = strcspn(p, ",");

		if (c->nendpoints == ETCD_ENDPOINTS_MAX) {
			snprintf(err, errlen, "at most %d etcd endpoints", ETCD_ENDPOINTS_MAX);
			goto fail;
		}
		/* http://HOST:PORT with no path: "/v3/..." is appended. */
		if (len <= 7 || len > 255 || strncmp(p, "http://", 7) || memchr(p + 7, '/', len - 7) ||
		    !memchr(p + 7, ':', len - 7)) {
			snprintf(err, errlen, "an etcd endpoint is http://HOST:PORT, not %.*s", (int)(len > 255 ? 255 : len),
				 p);
			goto fail;
		}
		for (size_t i = 0; i < len; i++)
			if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f) {
				snprintf(err, errlen, "an etcd endpoint with a space or control byte");
				goto fail;
			}
		c->endpoints[c->nendpoints] = strndup(p, len);
		if (!c->endpoints[c->nendpoints++]) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		p += len;
		if (*p == ',' && *++p == '\0') {
			snprintf(err, errlen, "an empty etcd endpoint");
			goto fail;
		}
	}
	c->multi = curl_multi_init();
	if (!c->multi) {
		snprintf(err, errlen, "curl_multi_init failed");
		goto fail;
	}
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	c->loop = loop;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	c->open_handles = 1;
	*out = c;
	return 0;
fail:
	for (size_t i = 0; i < c->nendpoints; i++)
		free(c->endpoints[i]);
	free(c);
	return -EINVAL;
}

static void req_free(struct etcd_req *r)
{
	if (r->easy) {
		curl_multi_remove_handle(r->c->multi, r->easy);
		curl_easy_cleanup(r->easy);
	}
	curl_slist_free_all(r->headers);
	free(r->body);
	free(r->reply);
	free(r->watch);
	free(r);
}

static void unlink_req(struct etcd_client *c, struct etcd_req *r)
{
	for (struct etcd_req **pp = &c->reqs; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			return;
		}
}

/* Requests marked done while curl or a callback was running. */
static void reap(struct etcd_client *c)
{
	struct etcd_req **pp = &c->reqs;

	c->reap = false;
	while (*pp) {
		struct etcd_req *r = *pp;

		if (r->done) {
			*pp = r->next;
			req_free(r);
		} else {
			pp = &r->next;
		}
	}
}

static void client_release(struct etcd_client *c)
{
	while (c->reqs) {
		struct etcd_req *r = c->reqs;

		c->reqs = r->next;
		req_free(r);
	}
	/* Sockets curl still caches are closed by the cleanup; polls it never removed go too. */
	curl_multi_cleanup(c->multi);
	c->multi = NULL;
	while (c->socks)
		sock_close(c, c->socks);
	for (size_t i = 0; i < c->nendpoints; i++)
		free(c->endpoints[i]);
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, handle_closed);
}

void etcd_client_free(struct etcd_client *c)
{
	if (!c || c->freed)
		return;
	c->freed = true;
	if (!c->busy)
		client_release(c);
}

/* ---- requests ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp);

/* Starts (or restarts, on the next endpoint) the transfer. 0 or -errno. */
static int attempt(struct etcd_req *r)
{
	struct etcd_client *c = r->c;
	char url[320];

	snprintf(url, sizeof(url), "%s%s", c->endpoints[r->endpoint], r->path);
	r->reply_len = 0;
	curl_easy_setopt(r->easy, CURLOPT_URL, url);
	if (c->in_curl) {
		r->pending_add = true;
		c->pending = true;
		return 0;
	}
	return curl_multi_add_handle(c->multi, r->easy) == CURLM_OK ? 0 : -ENOMEM;
}

static int submit(struct etcd_client *c, enum etcd_op op, const char *path, char *body, void *cb, void *arg,
		  struct etcd_req **out)
{
	struct etcd_req *r;

	if (!c || c->freed || !body) {
		free(body);
		return !body ? -ENOMEM : -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		free(body);
		return -ENOMEM;
	}
	r->c = c;
	r->op = op;
	r->path = path;
	r->body = body;
	r->arg = arg;
	/* Every callback type is a function pointer of its own kind, kept in the union by op. */
	memcpy(&r->cb, &cb, sizeof(cb));
	r->endpoint = c->preferred;
	r->easy = curl_easy_init();
	r->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (!r->easy || !r->headers) {
		req_free(r);
		return -ENOMEM;
	}
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)ETCD_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http");
	if (op == OP_WATCH) {
		curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
		curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPIDLE, (long)ETCD_WATCH_KEEPALIVE_S);
		curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPINTVL, (long)ETCD_WATCH_KEEPALIVE_S);
	} else {
		curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)ETCD_REQUEST_TIMEOUT_MS);
	}
	if (attempt(r) < 0) {
		req_free(r);
		return -ENOMEM;
	}
	r->next = c->reqs;
	c->reqs = r;
	if (out)
		*out = r;
	return 0;
}

static void watch_message(struct etcd_req *r, const char *msg, size_t len);

/* The reply so far; a watch's is split into its messages as they come. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
	struct etcd_req *r = userp;
	size_t n = size * nmemb;

	if (r->done || (r->op == OP_WATCH && !r->watch->cb))
		return 0; /* canceled, or a watch that has ended: curl ends the transfer */
	if (n > ETCD_REPLY_MAX - r->reply_len) {
		r->reply_len = SIZE_MAX; /* marks the overflow for finish() */
		return 0;
	}
	if (r->reply_len + n + 1 > r->reply_cap) {
		size_t cap = r->reply_cap ? r->reply_cap : 4096;
		char *p;

		while (cap < r->reply_len + n + 1)
			cap *= 2;
		p = realloc(r->reply, cap);
		if (!p)
			return 0;
		r->reply = p;
		r->reply_cap = cap;
	}
	memcpy(r->reply + r->reply_len, data, n);
	r->reply_len += n;
	r->reply[r->reply_len] = '\0';
	if (r->op != OP_WATCH)
		return n;
	for (;;) {
		long m = etcd_reply_split(r->reply, r->reply_len);

		if (m == 0)
			break;
		if (m < 0) {
			r->reply_len = m == -EMSGSIZE ? SIZE_MAX : SIZE_MAX - 1;
			return 0;
		}
		watch_message(r, r->reply, (size_t)m);
		if (r->done || r->c->freed || !r->watch->cb)
			return 0;
		memmove(r->reply, r->reply + m, r->reply_len - (size_t)m);
		r->reply_len -= (size_t)m;
	}
	return n;
}

/* The answer to the caller, exactly once; err 0 with a parsed reply. */
static void deliver(struct etcd_req *r, int err, const struct etcd_reply *rep)
{
	bool found = rep && rep->nkvs > 0;

	switch (r->op) {
	case OP_LEASE_GRANT:
	case OP_KEEPALIVE:
		/* A keepalive of a lease etcd no longer has answers without a TTL. */
		if (!err && r->op == OP_KEEPALIVE && rep->ttl <= 0)
			err = -ENOENT;
		r->cb.lease(r->arg, err, err ? 0 : rep->lease, err ? 0 : rep->ttl);
		break;
	case OP_REVOKE:
	case OP_PUT:
	case OP_DELETE: r->cb.done(r->arg, err); break;
	case OP_TXN:
		r->cb.txn(r->arg, err, !err && rep->succeeded, !err && !rep->succeeded && found ? &rep->kvs[0] : NULL);
		break;
	case OP_RANGE:
		r->cb.range(r->arg, err, err ? NULL : rep->kvs, err ? 0 : rep->nkvs, err ? 0 : rep->revision);
		break;
	case OP_WATCH:
		if (r->watch->cb) {
			etcd_watch_cb cb = r->watch->cb;

			r->watch->cb = NULL; /* a broken watch says so once */
			cb(r->watch->arg, err ? err : -ECONNRESET, false, NULL);
		}
		break;
	}
}

static enum etcd_reply_kind kind_of(enum etcd_op op)
{
	switch (op) {
	case OP_LEASE_GRANT: return ETCD_REPLY_LEASE;
	case OP_KEEPALIVE: return ETCD_REPLY_KEEPALIVE;
	case OP_TXN: return ETCD_REPLY_TXN;
	case OP_RANGE: return ETCD_REPLY_RANGE;
	case OP_WATCH: return ETCD_REPLY_WATCH;
	default: return ETCD_REPLY_HEADER;
	}
}

static void watch_message(struct etcd_req *r, const char *msg, size_t len)
{
	struct etcd_watch *w = r->watch;
	struct etcd_reply rep;
	char why[128];
	int err = 0;

	if (etcd_reply_parse(ETCD_REPLY_WATCH, msg, len, &rep, why, sizeof(why)) < 0)
		err = -EPROTO;
	else if (rep.error_code >= 0)
		err = etcd_reply_errno(rep.error_code);
	else if (rep.canceled) /* etcd ended it: a compacted start revision, or the member is going away */
		err = rep.compact_revision ? -ESTALE : -ECONNRESET;
	if (err) {
		r->c->preferred = r->endpoint;
		deliver(r, err, NULL); /* the watch ends; its request stays until etcd_watch_cancel */
	} else {
		if (rep.created)
			w->created = true;
		r->c->preferred = r->endpoint;
		for (size_t i = 0; i < rep.nkvs && w->cb && !r->c->freed; i++)
			w->cb(w->arg, 0, rep.deleted[i], &rep.kvs[i]);
	}
	etcd_reply_free(&rep);
}

/* A try that failed so that another member may do better: could not connect, timed out, or was unavailable. */
static bool retryable(struct etcd_req *r, CURLcode code, long status)
{
	if (r->op == OP_WATCH && r->watch->created)
		return false; /* a broken stream is reported, never silently resumed */
	switch (code) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING: return true;
	case CURLE_OK: return status == 503 || status == 502;
	default: return false;
	}
}

static int curl_errno(CURLcode code)
{
	switch (code) {
	case CURLE_OPERATION_TIMEDOUT: return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST: return -ECONNREFUSED;
	case CURLE_OUT_OF_MEMORY: return -ENOMEM;
	default: return -ECONNRESET;
	}
}

static void finish(struct etcd_client *c, struct etcd_req *r, CURLcode code)
{
	struct etcd_reply rep;
	char why[128];
	long status = 0;
	int err = 0;

	curl_multi_remove_handle(c->multi, r->easy);
	if (r->done) {
		c->reap = true;
		return;
	}
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	if (r->reply_len == SIZE_MAX) {
		err = -EMSGSIZE;
	} else if (r->reply_len == SIZE_MAX - 1) {
		err = -EPROTO;
	} else if (retryable(r, code, status) && r->tries + 1 < c->nendpoints) {
		r->tries++;
		r->endpoint = (r->endpoint + 1) % c->nendpoints;
		if (attempt(r) == 0)
			return;
		err = -ENOMEM;
	} else if (code != CURLE_OK) {
		err = curl_errno(code);
	}
	if (r->op == OP_WATCH) {
		/*
		 * Whatever ended the stream, the watch is over: the caller reads
		 * again and watches anew. The request stays (inert) until
		 * etcd_watch_cancel, which frees it with the watch.
		 */
		deliver(r, err ? err : -ECONNRESET, NULL);
		return;
	} else if (err) {
		deliver(r, err, NULL);
	} else if (etcd_reply_parse(kind_of(r->op), r->reply ? r->reply : "", r->reply_len, &rep, why,
				    sizeof(why)) < 0) {
		deliver(r, -EPROTO, NULL);
	} else {
		c->preferred = r->endpoint;
		deliver(r, rep.error_code >= 0 ? etcd_reply_errno(rep.error_code) : 0, &rep);
		etcd_reply_free(&rep);
	}
	r->done = true;
	c->reap = true;
}

/* ---- request bodies ---- */

/* len bytes as base64, NUL-terminated, malloc'd; NULL when out of memory. */
static char *b64(const void *data, size_t len)
{
	char *out;

	if (len > (1u << 28))
		return NULL;
	out = malloc(4 * ((len + 2) / 3) + 1);
	if (out)
		EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* The first key after every key that starts with prefix (etcd's range_end); "\0" for all keys. */
static char *prefix_end(const char *prefix)
{
	size_t n = strlen(prefix);
	unsigned char end[1024];

	if (n > sizeof(end))
		return NULL;
	memcpy(end, prefix, n);
	while (n > 0) {
		if (end[n - 1] < 0xff) {
			end[n - 1]++;
			return b64(end, n);
		}
		n--;
	}
	return b64("", 1);
}

static char *printf_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *printf_alloc(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	return r < 0 ? NULL : s;
}

int etcd_lease_grant(struct etcd_client *c, int64_t ttl_s, etcd_lease_cb cb, void *arg)
{
	if (ttl_s <= 0 || !cb)
		return -EINVAL;
	return submit(c, OP_LEASE_GRANT, "/v3/lease/grant", printf_alloc("{\"TTL\":\"%" PRId64 "\"}", ttl_s),
		      (void *)cb, arg, NULL);
}

int etcd_lease_keepalive(struct etcd_client *c, int64_t lease, etcd_lease_cb cb, void *arg)
{
	if (lease <= 0 || !cb)
		return -EINVAL;
	return submit(c, OP_KEEPALIVE, "/v3/lease/keepalive", printf_alloc("{\"ID\":\"%" PRId64 "\"}", lease),
		      (void *)cb, arg, NULL);
}

int etcd_lease_revoke(struct etcd_client *c, int64_t lease, etcd_done_cb cb, void *arg)
{
	if (lease <= 0 || !cb)
		return -EINVAL;
	return submit(c, OP_REVOKE, "/v3/lease/revoke", printf_alloc("{\"ID\":\"%" PRId64 "\"}", lease),
		      (void *)cb, arg, NULL);
}

/* A key: non-empty, of a sane length. */
static bool key_ok(const char *key)
{
	return key && *key && strlen(key) < 1024;
}

/* A put's arguments: a sane key, a value within what a reply may carry back, no negative lease. */
static bool put_ok(const char *key, const void *value, size_t value_len, int64_t lease)
{
	return key_ok(key) && (value || !value_len) && value_len <= ETCD_REPLY_MAX / 2 && lease >= 0;
}

/*
 * A put request's fields, "key":"K","value":"V","lease":"N" with the key and
 * value in base64 (the body of /v3/kv/put, and a txn's request_put, within
 * braces); malloc'd, NULL when out of memory.
 */
static char *put_fields(const char *key, const void *value, size_t value_len, int64_t lease)
{
	char *k = b64(key, strlen(key)), *v = b64(value ? value : "", value_len);
	char *fields = k && v ? printf_alloc("\"key\":\"%s\",\"value\":\"%s\",\"lease\":\"%" PRId64 "\"", k, v, lease)
			      : NULL;

	free(k);
	free(v);
	return fields;
}

int etcd_put(struct etcd_client *c, const char *key, const void *value, size_t value_len, int64_t lease,
	     etcd_done_cb cb, void *arg)
{
	char *fields, *body;

	if (!put_ok(key, value, value_len, lease) || !cb)
		return -EINVAL;
	fields = put_fields(key, value, value_len, lease);
	body = fields ? printf_alloc("{%s}", fields) : NULL;
	free(fields);
	return submit(c, OP_PUT, "/v3/kv/put", body, (void *)cb, arg, NULL);
}

int etcd_delete(struct etcd_client *c, const char *key, etcd_done_cb cb, void *arg)
{
	char *k, *body;

	if (!key_ok(key) || !cb)
		return -EINVAL;
	k = b64(key, strlen(key));
	body = k ? printf_alloc("{\"key\":\"%s\"}", k) : NULL;
	free(k);
	return submit(c, OP_DELETE, "/v3/kv/deleterange", body, (void *)cb, arg, NULL);
}

int etcd_create_if_absent(struct etcd_client *c, const char *key, const void *value, size_t value_len,
			  int64_t lease, etcd_txn_cb cb, void *arg)
{
	char *k, *fields, *body;

	if (!put_ok(key, value, value_len, lease) || !cb)
		return -EINVAL;
	k = b64(key, strlen(key));
	fields = put_fields(key, value, value_len, lease);
	body = k && fields ? printf_alloc("{\"compare\":[{\"target\":\"CREATE\",\"key\":\"%s\","
					  "\"create_revision\":\"0\"}],\"success\":[{\"request_put\":{%s}}],"
					  "\"failure\":[{\"request_range\":{\"key\":\"%s\"}}]}",
					  k, fields, k)
			   : NULL;
	free(k);
	free(fields);
	return submit(c, OP_TXN, "/v3/kv/txn", body, (void *)cb, arg, NULL);
}

int etcd_range_prefix(struct etcd_client *c, const char *prefix, etcd_range_cb cb, void *arg)
{
	char *k, *e, *body;

	if (!prefix || strlen(prefix) >= 1024 || !cb)
		return -EINVAL;
	k = b64(*prefix ? prefix : "", *prefix ? strlen(prefix) : 1);
	e = prefix_end(prefix);
	body = k && e ? printf_alloc("{\"key\":\"%s\",\"range_end\":\"%s\"}", k, e) : NULL;
	free(k);
	free(e);
	return submit(c, OP_RANGE, "/v3/kv/range", body, (void *)cb, arg, NULL);
}

int etcd_get(struct etcd_client *c, const char *key, etcd_range_cb cb, void *arg)
{
	char *k, *body;

	if (!key_ok(key) || !cb)
		return -EINVAL;
	k = b64(key, strlen(key));
	body = k ? printf_alloc("{\"key\":\"%s\"}", k) : NULL;
	free(k);
	return submit(c, OP_RANGE, "/v3/kv/range", body, (void *)cb, arg, NULL);
}

int etcd_watch_prefix(struct etcd_client *c, const char *prefix, int64_t start_revision, etcd_watch_cb cb,
		      void *arg, struct etcd_watch **out)
{
	struct etcd_watch *w;
	struct etcd_req *r;
	char *k, *e, *body;
	int err;

	if (!prefix || strlen(prefix) >= 1024 || start_revision < 0 || !cb || !out)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	k = b64(*prefix ? prefix : "", *prefix ? strlen(prefix) : 1);
	e = prefix_end(prefix);
	body = k && e ? printf_alloc("{\"create_request\":{\"key\":\"%s\",\"range_end\":\"%s\",\"start_revision\":\"%" PRId64
				     "\"}}",
				     k, e, start_revision)
		      : NULL;
	free(k);
	free(e);
	err = submit(c, OP_WATCH, "/v3/watch", body, NULL, NULL, &r);
	if (err < 0) {
		free(w);
		return err;
	}
	w->cb = cb;
	w->arg = arg;
	w->req = r;
	r->watch = w;
	*out = w;
	return 0;
}

void etcd_watch_cancel(struct etcd_watch *w)
{
	struct etcd_req *r;
	struct etcd_client *c;

	if (!w)
		return;
	r = w->req;
	c = r->c;
	w->cb = NULL;
	if (c->freed)
		return; /* the client's release frees it */
	r->done = true;
	if (c->busy) {
		c->reap = true;
		return;
	}
	unlink_req(c, r);
	req_free(r);
}
