/*
 * POST /v1/sandboxes through the gateway (docs/fleet.md, "Creates"): place,
 * reserve the id in etcd (create-if-absent), forward with that id. A worker
 * that answers 429, or that could not be connected to at all (so nothing
 * was sent), is passed over for the next one; any other answer is the
 * client's as it is, never retried: a create that may have happened is not
 * made twice.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../api_call.h"
#include "etcd.h"
#include "gateway_part.h"
#include "../http_conn.h"
#include "log.h"
#include "placement.h"
#include "worker_call.h"

#define CREATE_TRIES_MAX 8 /* workers tried for one create */
#define ID_TRIES_MAX 3     /* ids drawn when one is taken already */
#define DEFAULT_MEMORY_MIB 512

struct create {
	struct gateway *g;
	struct api_call *call;
	cJSON *body; /* the client's object, "id" added */
	uint32_t memory_mib;
	char id[20];
	char key[64];
	char tried[CREATE_TRIES_MAX][FLEET_ID_MAX + 1];
	size_t ntried;
	struct fleet_entry *w; /* the worker tried now (held: a create in flight on it) */
	bool reserved;          /* the key in etcd is ours */
	unsigned id_tries;
};

static void make_id(struct gateway *g, char *out, size_t cap)
{
	uint32_t a = gateway_rand(g), b = gateway_rand(g);

	snprintf(out, cap, "sb-%08x%08x", a, b);
}

static void done(struct create *c)
{
	api_call_release(c->call);
	cJSON_Delete(c->body);
	free(c);
}

static void fail(struct create *c, int err, const char *fmt, const char *a, const char *b)
{
	api_call_fail(c->call, err, NULL, fmt, a, b);
	done(c);
}

static void on_unreserved(void *arg, int err)
{
	struct gateway *g = arg;

	g->busy--;
	if (err)
		sv_warn("a reservation of a create that failed stays in etcd: %s", strerror(-err));
}

/* The create did not happen: its reservation goes. */
static void unreserve(struct create *c)
{
	if (c->reserved && etcd_delete(c->g->etcd, c->key, on_unreserved, c->g) == 0)
		c->g->busy++;
	c->reserved = false;
	gateway_route_forget(c->g, c->id);
}

static void try_next(struct create *c);

static void on_reply(void *ctx, int err, int status, const char *body, size_t len)
{
	struct create *c = ctx;
	struct http_request *req = api_call_request(c->call);
	const char *worker = c->w->rec.id;
	cJSON *o;

	c->g->busy--;
	fleet_entry_inflight_done(c->w, c->memory_mib);
	snprintf(c->tried[c->ntried++], sizeof(c->tried[0]), "%s", worker);
	if ((err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -EPERM) || (!err && status == 429)) {
		/* Nothing was made there (no connection, or no room): the next worker. */
		if (err)
			sv_warn("create %s: worker %s cannot be reached (%s); trying another", c->id, worker,
				strerror(-err));
		c->w = NULL;
		try_next(c);
		return;
	}
	if (err) {
		/* It may or may not have been made: never made twice. The reservation stays, so the id routes. */
		char why[300];

		snprintf(why, sizeof(why), "worker %s did not answer the create of %s (%s); GET /v1/sandboxes/%s "
			 "tells whether it was made", worker, c->id, strerror(-err), c->id);
		api_call_fail(c->call, err == -ETIMEDOUT ? -ETIMEDOUT : -EPROTO, NULL, "%s", why);
		done(c);
		return;
	}
	if (status < 200 || status > 299) {
		unreserve(c);
		if (!api_call_gone(c->call))
			http_respond(req, status, "application/json", body, len);
		done(c);
		return;
	}
	gateway_route_set(c->g, c->id, worker);
	o = cJSON_ParseWithLength(body, len);
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		api_call_fail(c->call, -EPROTO, NULL, "worker %s answered the create of %s with a body that is not JSON",
			      worker, c->id);
		done(c);
		return;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(o, "worker");
	cJSON_AddStringToObject(o, "worker", worker);
	if (!api_call_gone(c->call))
		http_respond_json(req, status, o);
	else
		cJSON_Delete(o);
	done(c);
}

static void forward(struct create *c)
{
	struct http_request *req = api_call_request(c->call);
	struct worker_call_request rq = {0};
	struct worker_call *wc;
	char *text;
	int e;

	cJSON_DeleteItemFromObjectCaseSensitive(c->body, "id");
	cJSON_AddStringToObject(c->body, "id", c->id);
	text = cJSON_PrintUnformatted(c->body);
	if (!text)
		return fail(c, -ENOMEM, "out of memory%s%s", "", "");
	rq.host = c->w->rec.host;
	rq.port = c->w->rec.port;
	rq.method = "POST";
	rq.target = "/v1/sandboxes";
	rq.authorization = req->auth_len ? req->auth : NULL;
	rq.body = text;
	rq.body_len = strlen(text);
	rq.timeout_ms = GATEWAY_CALL_TIMEOUT_MS;
	e = worker_call_start(c->g->loop, c->g->pool, &rq, on_reply, c, &wc);
	free(text);
	if (e < 0) {
		unreserve(c);
		return fail(c, e, "cannot call worker %s: %s", c->w->rec.id, strerror(-e));
	}
	fleet_entry_inflight_add(c->w, c->memory_mib);
	c->g->busy++;
}

static char *reservation(const struct create *c)
{
	char *text = malloc(FLEET_ID_MAX + 64);

	if (text)
		snprintf(text, FLEET_ID_MAX + 64, "{\"worker\":\"%s\",\"created\":%.3f}", c->w->rec.id,
			 (double)time(NULL));
	return text;
}

static void reserve(struct create *c);

static void on_reserved(void *arg, int err, bool succeeded, const struct etcd_kv *existing)
{
	struct create *c = arg;

	(void)existing;
	c->g->busy--;
	if (err)
		return fail(c, -EAGAIN, "etcd is unreachable (%s%s): creates are refused until it answers",
			    strerror(-err), "");
	if (!succeeded) {
		/* Another create drew the same id: draw again. */
		if (++c->id_tries >= ID_TRIES_MAX)
			return fail(c, -EIO, "could not reserve a sandbox id in etcd%s%s", "", "");
		make_id(c->g, c->id, sizeof(c->id));
		reserve(c);
		return;
	}
	c->reserved = true;
	forward(c);
}

static void on_moved(void *arg, int err)
{
	struct create *c = arg;

	c->g->busy--;
	if (err)
		return fail(c, -EAGAIN, "etcd is unreachable (%s%s): creates are refused until it answers",
			    strerror(-err), "");
	forward(c);
}

static void reserve(struct create *c)
{
	char *text = reservation(c);
	int e;

	if (!text)
		return fail(c, -ENOMEM, "out of memory%s%s", "", "");
	snprintf(c->key, sizeof(c->key), "%s%s", FLEET_SANDBOXES_PREFIX, c->id);
	/* A retry on another worker rewrites our own reservation; the first one must not exist yet. */
	if (c->reserved)
		e = etcd_put(c->g->etcd, c->key, text, strlen(text), 0, on_moved, c);
	else
		e = etcd_create_if_absent(c->g->etcd, c->key, text, strlen(text), 0, on_reserved, c);
	free(text);
	if (e < 0) {
		unreserve(c);
		return fail(c, -EAGAIN, "etcd cannot be asked (%s%s): creates are refused until it answers",
			    strerror(-e), "");
	}
	c->g->busy++;
}

static void try_next(struct create *c)
{
	const char *ex[CREATE_TRIES_MAX];
	struct placement_request rq = {.memory_mib = c->memory_mib, .exclude = ex, .nexclude = c->ntried,
				       .sample = c->g->sample, .rand = gateway_rand, .rand_ctx = c->g};
	char why[200];
	int e;

	for (size_t i = 0; i < c->ntried; i++)
		ex[i] = c->tried[i];
	if (!c->g->etcd_ok) {
		unreserve(c);
		return fail(c, -EAGAIN,
			    "etcd is unreachable (%s%s): creates are refused until it answers; existing sandboxes "
			    "keep working",
			    c->g->etcd_error, "");
	}
	e = c->ntried < CREATE_TRIES_MAX ? placement_choose(&c->g->table, &rq, &c->w) : -ENOSPC;
	if (e < 0) {
		unreserve(c);
		if (!fleet_table_live(&c->g->table))
			return fail(c, -EHOSTDOWN, "no worker is live in etcd%s%s", "", "");
		snprintf(why, sizeof(why), "no worker has room for a sandbox of %u MiB (%zu live, %zu tried)",
			 c->memory_mib, fleet_table_live(&c->g->table), c->ntried);
		return fail(c, -EDQUOT, "%s%s", why, "");
	}
	reserve(c);
}

void gateway_create(struct gateway *g, struct api_call *call)
{
	size_t len;
	const char *body = api_call_body(call, &len);
	struct create *c;
	const cJSON *mem;
	cJSON *o = cJSON_ParseWithLength(len ? body : "{}", len ? len : 2);

	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return api_call_fail(call, -EINVAL, NULL, "the body is not a JSON object");
	}
	if (cJSON_GetObjectItemCaseSensitive(o, "id")) {
		cJSON_Delete(o);
		return api_call_fail(call, -EINVAL, "id", "through the gateway, the gateway gives sandboxes their ids");
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		cJSON_Delete(o);
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	}
	c->g = g;
	c->call = call;
	c->body = o;
	/* What the worker will check exactly; here only for the room it needs (a bad value: the worker says 400). */
	mem = cJSON_GetObjectItemCaseSensitive(o, "memory_mib");
	c->memory_mib = cJSON_IsNumber(mem) && mem->valuedouble >= 1 && mem->valuedouble <= FLEET_MIB_MAX
				? (uint32_t)mem->valuedouble
				: DEFAULT_MEMORY_MIB;
	make_id(g, c->id, sizeof(c->id));
	api_call_hold(call);
	try_next(c);
}
