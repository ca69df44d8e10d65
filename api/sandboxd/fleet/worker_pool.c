/*
 * Kept-alive connections to workers (worker_pool.h): per HOST:PORT a list
 * of idle connections, newest first (the warmest is handed out; the oldest
 * age out), one sweep timer for the idle time. An idle connection keeps
 * reading, so a worker's close is seen at once and the connection dropped.
 */
#include "worker_pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls_client.h"

#define KEY_MAX 280

struct kept {
	struct kept *next, *prev; /* in its host's list, newest first */
	struct worker_pool *pool;
	struct host *host;
	struct tls_client *c;
	uint64_t since; /* uv_now when given back */
};

struct host {
	struct host *next;
	char key[KEY_MAX]; /* HOST:PORT */
	struct kept *head, *tail;
	unsigned n;
};

struct worker_pool {
	uv_loop_t *loop;
	struct ssl_ctx_st *tls;
	unsigned per_worker, total, idle_ms;
	struct host *hosts;
	unsigned n;
	uint64_t reused;
	uv_timer_t sweep;
};

static void host_key(const char *host, uint16_t port, char *out)
{
	snprintf(out, KEY_MAX, "%s:%u", host, port);
}

static struct host *host_find(struct worker_pool *p, const char *key)
{
	for (struct host *h = p->hosts; h; h = h->next)
		if (!strcmp(h->key, key))
			return h;
	return NULL;
}

/* Out of its list (and its host out of the pool when that was its last); the connection is the caller's. */
static void unlink_kept(struct worker_pool *p, struct kept *k)
{
	struct host *h = k->host;

	if (k->prev)
		k->prev->next = k->next;
	else
		h->head = k->next;
	if (k->next)
		k->next->prev = k->prev;
	else
		h->tail = k->prev;
	h->n--;
	p->n--;
	if (!h->n) {
		for (struct host **pp = &p->hosts; *pp; pp = &(*pp)->next)
			if (*pp == h) {
				*pp = h->next;
				break;
			}
		free(h);
	}
}

/* ---- an idle connection's callbacks: whatever it hears ends it ---- */

static void idle_connected(void *ctx, int err)
{
	(void)ctx;
	(void)err; /* kept connections are handshaken already */
}

static void idle_data(void *ctx, const char *data, size_t len)
{
	struct kept *k = ctx;

	(void)data;
	(void)len;
	/* A worker says nothing unasked: the connection cannot carry a call any more. */
	tls_client_close(k->c);
	unlink_kept(k->pool, k);
	free(k);
}

static void idle_closed(void *ctx, int err)
{
	struct kept *k = ctx;

	(void)err;
	/* The worker closed it (its idle time, its connection cap, a restart); it freed itself. */
	unlink_kept(k->pool, k);
	free(k);
}

static const struct tls_client_ops idle_ops = {
	.connected = idle_connected, .data = idle_data, .closed = idle_closed};

/* Closes the kept connections idle for max_age or more (the oldest are at each list's tail). */
static void prune(struct worker_pool *p, uint64_t max_age)
{
	uint64_t now = uv_now(p->loop);
	struct host *h = p->hosts;

	while (h) {
		struct host *hn = h->next;

		while (h) {
			struct kept *k = h->tail;
			bool last = h->n == 1;

			if (now - k->since < max_age)
				break;
			tls_client_close(k->c);
			unlink_kept(p, k);
			free(k);
			if (last)
				h = NULL; /* gone with its last */
		}
		h = hn;
	}
}

static void on_sweep(uv_timer_t *t)
{
	struct worker_pool *p = t->data;

	prune(p, p->idle_ms);
}

int worker_pool_new(uv_loop_t *loop, struct ssl_ctx_st *tls, const struct worker_pool_limits *limits,
		    struct worker_pool **out)
{
	struct worker_pool *p;
	unsigned every;

	if (!loop || !tls || !out)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->loop = loop;
	p->tls = tls;
	p->per_worker = limits && limits->per_worker ? limits->per_worker : WORKER_POOL_PER_WORKER;
	p->total = limits && limits->total ? limits->total : WORKER_POOL_TOTAL;
	p->idle_ms = limits && limits->idle_ms ? limits->idle_ms : WORKER_POOL_IDLE_MS;
	uv_timer_init(loop, &p->sweep);
	p->sweep.data = p;
	every = p->idle_ms / 4 ? p->idle_ms / 4 : 1;
	uv_timer_start(&p->sweep, on_sweep, every, every);
	uv_unref((uv_handle_t *)&p->sweep); /* idle connections alone do not keep the loop running */
	*out = p;
	return 0;
}

static void on_sweep_closed(uv_handle_t *h)
{
	free(h->data);
}

void worker_pool_free(struct worker_pool *p)
{
	if (!p)
		return;
	while (p->hosts) {
		struct kept *k = p->hosts->head;

		tls_client_close(k->c);
		unlink_kept(p, k);
		free(k);
	}
	uv_close((uv_handle_t *)&p->sweep, on_sweep_closed);
}

int worker_pool_get(struct worker_pool *p, const char *host, uint16_t port, unsigned timeout_ms,
		    const struct tls_client_ops *ops, void *arg, struct tls_client **out, bool *reused)
{
	char key[KEY_MAX];
	struct host *h;

	if (!p || !host || !ops || !out || !reused)
		return -EINVAL;
	host_key(host, port, key);
	while ((h = host_find(p, key))) {
		struct kept *k = h->head;
		struct tls_client *c = k->c;

		unlink_kept(p, k);
		free(k);
		if (!tls_client_idle_ok(c)) {
			/* Closed by the worker (or about to be): nothing of this call went on it. */
			tls_client_close(c);
			continue;
		}
		tls_client_set_ops(c, ops, arg);
		p->reused++;
		*reused = true;
		*out = c;
		return 0;
	}
	*reused = false;
	return tls_client_open(p->loop, p->tls, host, port, timeout_ms, ops, arg, out);
}

void worker_pool_put(struct worker_pool *p, const char *host, uint16_t port, struct tls_client *c)
{
	char key[KEY_MAX];
	struct host *h;
	struct kept *k;

	if (!c)
		return;
	host_key(host, port, key);
	h = host_find(p, key);
	if (p->n >= p->total || (h && h->n >= p->per_worker) || !tls_client_idle_ok(c))
		goto close;
	k = calloc(1, sizeof(*k));
	if (!k)
		goto close;
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (!h) {
			free(k);
			goto close;
		}
		snprintf(h->key, sizeof(h->key), "%s", key);
		h->next = p->hosts;
		p->hosts = h;
	}
	k->pool = p;
	k->host = h;
	k->c = c;
	k->since = uv_now(p->loop);
	k->next = h->head;
	if (h->head)
		h->head->prev = k;
	else
		h->tail = k;
	h->head = k;
	h->n++;
	p->n++;
	tls_client_set_ops(c, &idle_ops, k);
	tls_client_resume(c); /* a call may have left it paused: a close must be heard */
	return;
close:
	tls_client_close(c);
}

unsigned worker_pool_idle(const struct worker_pool *p)
{
	return p->n;
}

uint64_t worker_pool_reused(const struct worker_pool *p)
{
	return p->reused;
}
