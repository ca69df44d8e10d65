/*
 * The gateway (gateway.h): its picture of the fleet kept from etcd, and the
 * routing of every request. Creates and lists are answered by
 * gateway_create.c and gateway_list.c; calls on one sandbox are relayed
 * whole to its worker (gateway_relay.h).
 *
 * The worker table is read whole at start, kept by a watch, and read whole
 * again every sync_ms: a watch that broke may have missed a DELETE, and the
 * periodic read doubles as the check that etcd answers (creates are refused
 * while it does not).
 */
#include "gateway.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../api_call.h"
#include "../auth.h"
#include "etcd.h"
#include "gateway_part.h"
#include "gateway_relay.h"
#include "../http_conn.h"
#include "log.h"
#include "placement.h"
#include "worker_pool.h"

#define JSON_BODY_MAX (1024 * 1024)
#define LOST_RETURNCODE 125

static double wall_time(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1000.0;
}

uint32_t gateway_rand(void *ctx)
{
	struct gateway *g = ctx;

	/* splitmix64: placement needs spread, not secrecy. */
	uint64_t z = (g->rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* ---- sandbox -> worker routes ---- */

static unsigned bucket(const char *sandbox)
{
	unsigned h = 2166136261u;

	for (const char *c = sandbox; *c; c++)
		h = (h ^ (unsigned char)*c) * 16777619u;
	return h % GATEWAY_ROUTE_BUCKETS;
}

const char *gateway_route_get(const struct gateway *g, const char *sandbox)
{
	for (const struct gateway_route *r = g->routes[bucket(sandbox)]; r; r = r->next)
		if (!strcmp(r->sandbox, sandbox))
			return r->worker;
	return NULL;
}

void gateway_route_set(struct gateway *g, const char *sandbox, const char *worker)
{
	struct gateway_route *r;
	unsigned b = bucket(sandbox);

	for (r = g->routes[b]; r; r = r->next)
		if (!strcmp(r->sandbox, sandbox)) {
			snprintf(r->worker, sizeof(r->worker), "%s", worker);
			return;
		}
	if (g->nroutes >= GATEWAY_ROUTES_MAX)
		return; /* a cache: past its bound, lookups go to etcd */
	r = calloc(1, sizeof(*r));
	if (!r)
		return;
	snprintf(r->sandbox, sizeof(r->sandbox), "%s", sandbox);
	snprintf(r->worker, sizeof(r->worker), "%s", worker);
	r->next = g->routes[b];
	g->routes[b] = r;
	g->nroutes++;
}

void gateway_route_forget(struct gateway *g, const char *sandbox)
{
	for (struct gateway_route **p = &g->routes[bucket(sandbox)]; *p; p = &(*p)->next)
		if (!strcmp((*p)->sandbox, sandbox)) {
			struct gateway_route *r = *p;

			*p = r->next;
			free(r);
			g->nroutes--;
			return;
		}
}

cJSON *gateway_lost_json(const char *sandbox, const char *worker, double created)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "id", sandbox);
	cJSON_AddStringToObject(o, "state", "finished");
	if (created > 0)
		cJSON_AddNumberToObject(o, "created_at", created);
	else
		cJSON_AddNullToObject(o, "created_at");
	cJSON_AddNumberToObject(o, "returncode", LOST_RETURNCODE);
	cJSON_AddStringToObject(o, "reason", "lost");
	cJSON_AddStringToObject(o, "message", "the worker holding this sandbox lost its lease in etcd");
	cJSON_AddStringToObject(o, "worker", worker);
	return o;
}

/* ---- the worker table, from etcd ---- */

static void sync_start(struct gateway *g);
static void on_sync_timer(uv_timer_t *t);

static void etcd_down(struct gateway *g, int err, const char *what)
{
	if (g->etcd_ok)
		sv_warn("etcd is unreachable (%s: %s): sandboxes keep routing from the table, creates are refused",
			what, strerror(-err));
	g->etcd_ok = false;
	snprintf(g->etcd_error, sizeof(g->etcd_error), "%s: %s", what, strerror(-err));
}

static void on_watch(void *arg, int err, bool deleted, const struct etcd_kv *kv)
{
	struct gateway *g = arg;
	char why[256];

	if (err || !kv) {
		/*
		 * Events may have been missed: this watch ends here, the whole table
		 * is read again now and a new watch starts from that read's revision.
		 * Its member may be the only one gone (the read goes to another), so
		 * etcd counts as down only if that read fails too.
		 */
		sv_info("the watch of " FLEET_WORKERS_PREFIX " ended (%s): reading the workers again",
			strerror(-(err ? err : -EPROTO)));
		if (g->watch) {
			etcd_watch_cancel(g->watch);
			g->watch = NULL;
		}
		sync_start(g);
		return;
	}
	if (deleted) {
		if (fleet_table_delete(&g->table, kv->key, kv->key_len) == 0)
			sv_warn("worker %.*s is gone from etcd (its lease expired?): its sandboxes are lost",
				(int)(kv->key_len > 16 ? kv->key_len - 16 : 0), kv->key + 16);
		return;
	}
	if (fleet_table_put(&g->table, kv->key, kv->key_len, kv->value, kv->value_len, kv->mod_revision, why,
			    sizeof(why)) < 0)
		sv_warn("%s", why);
}

static void on_range(void *arg, int err, const struct etcd_kv *kvs, size_t n, int64_t revision)
{
	struct gateway *g = arg;
	char why[256] = "";
	size_t refused;

	g->busy--;
	g->syncing = false;
	if (g->freeing)
		return;
	if (err) {
		/*
		 * A cluster choosing a new leader (the old one died) answers
		 * "unavailable" on every member for a few seconds: not a reason to
		 * refuse creates. Within GATEWAY_ETCD_GRACE_MS of the last read that
		 * answered, the read is tried again soon instead; past it, etcd is down.
		 */
		if (g->etcd_ok && uv_now(g->loop) - g->etcd_ok_at < GATEWAY_ETCD_GRACE_MS) {
			if (!g->retry_soon)
				sv_info("etcd did not answer a read of " FLEET_WORKERS_PREFIX " (%s): trying again",
					strerror(-err));
			g->retry_soon = true;
			uv_timer_start(&g->sync_timer, on_sync_timer, GATEWAY_ETCD_RETRY_MS, g->sync_ms);
			return;
		}
		etcd_down(g, err, "reading " FLEET_WORKERS_PREFIX);
		return;
	}
	g->etcd_ok_at = uv_now(g->loop);
	if (g->retry_soon) {
		g->retry_soon = false;
		uv_timer_start(&g->sync_timer, on_sync_timer, g->sync_ms, g->sync_ms);
	}
	if (!g->etcd_ok)
		sv_info("etcd answers again: %zu worker records", n);
	g->etcd_ok = true;
	g->etcd_last_ok = wall_time();
	g->etcd_error[0] = '\0';
	refused = fleet_table_reload(&g->table, kvs, n, why, sizeof(why));
	if (refused)
		sv_warn("%zu worker records refused, the last: %s", refused, why);
	if (!g->watch && etcd_watch_prefix(g->etcd, FLEET_WORKERS_PREFIX, revision + 1, on_watch, g, &g->watch) < 0)
		g->watch = NULL;
}

static void sync_start(struct gateway *g)
{
	if (g->syncing || g->freeing)
		return;
	if (etcd_range_prefix(g->etcd, FLEET_WORKERS_PREFIX, on_range, g) == 0) {
		g->syncing = true;
		g->busy++;
	}
}

static void on_sync_timer(uv_timer_t *t)
{
	sync_start(t->data);
}

/* ---- requests ---- */

static void health(struct gateway *g, struct http_request *req)
{
	cJSON *o = cJSON_CreateObject(), *ws = cJSON_AddArrayToObject(o, "workers"), *pool;
	unsigned sandboxes = 0, memory = 0, max_sandboxes = 0, max_memory = 0;

	for (size_t i = 0; i < g->table.n; i++) {
		const struct fleet_entry *w = g->table.w[i];
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "id", w->rec.id);
		cJSON_AddStringToObject(j, "address", w->rec.address);
		cJSON_AddBoolToObject(j, "live", w->live);
		cJSON_AddBoolToObject(j, "accepting", w->rec.accepting);
		cJSON_AddNumberToObject(j, "sandboxes", w->rec.sandboxes);
		cJSON_AddNumberToObject(j, "memory_mib", w->rec.memory_mib);
		cJSON_AddNumberToObject(j, "max_sandboxes", w->rec.max_sandboxes);
		cJSON_AddNumberToObject(j, "max_memory_mib", w->rec.max_memory_mib);
		cJSON_AddNumberToObject(j, "creates_in_flight", w->inflight);
		cJSON_AddItemToArray(ws, j);
		if (w->live) {
			sandboxes += w->rec.sandboxes;
			memory += w->rec.memory_mib;
			max_sandboxes += w->rec.max_sandboxes;
			max_memory += w->rec.max_memory_mib;
		}
	}
	cJSON_AddBoolToObject(o, "ok", g->etcd_ok && fleet_table_live(&g->table) > 0);
	cJSON_AddStringToObject(o, "mode", "gateway");
	cJSON_AddStringToObject(o, "version", SANDVM_VERSION);
	cJSON_AddStringToObject(o, "etcd", g->etcd_ok ? "ok" : "unreachable");
	if (!g->etcd_ok && g->etcd_error[0])
		cJSON_AddStringToObject(o, "etcd_error", g->etcd_error);
	cJSON_AddNumberToObject(o, "workers_live", (double)fleet_table_live(&g->table));
	cJSON_AddNumberToObject(o, "sandboxes", sandboxes);
	cJSON_AddNumberToObject(o, "memory_mib", memory);
	cJSON_AddNumberToObject(o, "max_sandboxes", max_sandboxes);
	cJSON_AddNumberToObject(o, "max_memory_mib", max_memory);
	pool = cJSON_AddObjectToObject(o, "worker_connections");
	cJSON_AddNumberToObject(pool, "idle", worker_pool_idle(g->pool));
	cJSON_AddNumberToObject(pool, "reused", (double)worker_pool_reused(g->pool));
	http_respond_json(req, 200, o);
}

/* A call relayed to a lost worker: it cannot reach it (its object, wait and DELETE are gateway_get.c's). */
static void answer_lost(struct http_request *req, const char *sandbox, const char *worker)
{
	http_respond_error(req, 409, NULL, "sandbox %s has finished: its worker %s is lost", sandbox, worker);
}

/* What the lookup of one sandbox's reservation carries across the etcd call. */
struct lookup {
	struct gateway *g;
	struct gateway_relay *relay;
	char sandbox[20];
};

/* The relay's way to worker w. */
static void relay_to(struct gateway *g, struct gateway_relay *r, const struct fleet_entry *w)
{
	struct gateway_relay_target t = {
		.worker = w->rec.id, .host = w->rec.host, .port = w->rec.port, .idle_ms = g->relay_idle_ms};

	gateway_relay_connect(r, g->loop, g->pool, &t);
}

static void relay_or_answer(struct gateway *g, struct gateway_relay *r, const char *sandbox, const char *worker)
{
	const struct fleet_entry *w = fleet_table_find(&g->table, worker);
	cJSON *o;
	char msg[200], *text;

	if (w && w->live)
		return relay_to(g, r, w);
	o = cJSON_CreateObject();
	snprintf(msg, sizeof(msg), "sandbox %s has finished: its worker %s is lost", sandbox, worker);
	cJSON_AddStringToObject(o, "error", msg);
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	gateway_relay_answer(r, 409, text ? text : "{}");
	free(text);
}

static void on_reservation(void *arg, int err, const struct etcd_kv *kvs, size_t n, int64_t revision)
{
	struct lookup *l = arg;
	struct gateway *g = l->g;
	struct fleet_sandbox_record rec;
	char why[200], msg[320];

	(void)revision;
	g->busy--;
	if (g->freeing || gateway_relay_gone(l->relay)) {
		gateway_relay_release(l->relay);
		free(l);
		return;
	}
	if (err) {
		snprintf(msg, sizeof(msg),
			 "{\"error\":\"etcd is unreachable and this gateway has no route for %s yet: %s\"}",
			 l->sandbox, strerror(-err));
		gateway_relay_answer(l->relay, 503, msg);
	} else if (n == 0) {
		snprintf(msg, sizeof(msg), "{\"error\":\"no sandbox %s\"}", l->sandbox);
		gateway_relay_answer(l->relay, 404, msg);
	} else if (fleet_sandbox_record_parse(kvs[0].value, kvs[0].value_len, &rec, why, sizeof(why)) < 0) {
		sv_warn("the reservation of %s: %s", l->sandbox, why);
		gateway_relay_answer(l->relay, 502, "{\"error\":\"the sandbox's reservation in etcd does not parse\"}");
	} else {
		gateway_route_set(g, l->sandbox, rec.worker);
		relay_or_answer(g, l->relay, l->sandbox, rec.worker);
	}
	free(l);
}

/* /v1/sandboxes/ID and below: to the worker, as bytes. */
static void route_sandbox(struct gateway *g, struct http_request *req, const char *sandbox)
{
	const char *worker = gateway_route_get(g, sandbox);
	const struct fleet_entry *w = worker ? fleet_table_find(&g->table, worker) : NULL;
	struct gateway_relay *r;
	struct lookup *l;
	char key[64];
	int e;

	if (worker && !(w && w->live))
		return answer_lost(req, sandbox, worker);
	e = gateway_relay_begin(req, &r);
	if (e < 0)
		return http_respond_error(req, e == -E2BIG ? 431 : 500, NULL, "cannot relay this request: %s",
					  strerror(-e));
	if (worker)
		return relay_to(g, r, w);
	l = calloc(1, sizeof(*l));
	snprintf(key, sizeof(key), "%s%s", FLEET_SANDBOXES_PREFIX, sandbox);
	if (!l || etcd_get(g->etcd, key, on_reservation, l) < 0) {
		free(l);
		gateway_relay_answer(r, 503, "{\"error\":\"etcd cannot be asked where this sandbox is\"}");
		return;
	}
	l->g = g;
	l->relay = r;
	snprintf(l->sandbox, sizeof(l->sandbox), "%s", sandbox);
	g->busy++;
}

static void on_complete(struct http_request *req)
{
	struct gateway *g = req->ctx;
	struct api_call *call = api_call_of(req);

	if (req->body_too_large)
		return http_respond_error(req, 413, NULL, "request body over %d bytes", JSON_BODY_MAX);
	if (req->method == HTTP_GET && !strncmp(req->url, "/v1/health", 10))
		return health(g, req);
	req->route_status = 200;
	if (!strncmp(req->url, "/v1/snapshots", 13)) {
		const char *p = req->url + 13;
		char id[GATEWAY_IMAGE_ID_LEN + 8];

		if (*p != '/') {
			req->route_status = 200;
			return gateway_images_list(g, call);
		}
		snprintf(id, sizeof(id), "%.*s", (int)strcspn(p + 1, "/?"), p + 1);
		req->route_status = req->method == HTTP_DELETE ? 204 : 200;
		return gateway_image_call(g, call, id, req->method == HTTP_DELETE);
	}
	if (!strncmp(req->url, "/v1/sandboxes/", 14)) {
		const char *p = req->url + 14;
		size_t idlen = strcspn(p, "/?");
		char id[20];

		snprintf(id, sizeof(id), "%.*s", (int)idlen, p);
		if (req->method == HTTP_DELETE)
			return gateway_sandbox_call(g, call, id, GATEWAY_SANDBOX_DELETE);
		if (req->method == HTTP_POST)
			return gateway_sandbox_call(g, call, id, GATEWAY_SANDBOX_MOUNT);
		return gateway_sandbox_call(g, call, id, p[idlen] == '/' ? GATEWAY_SANDBOX_WAIT : GATEWAY_SANDBOX_GET);
	}
	if (req->method == HTTP_POST) {
		req->route_status = 201;
		gateway_create(g, call);
	} else {
		req->route_status = 200;
		gateway_list(g, call);
	}
}

static const struct http_handler complete_handler = {.complete = on_complete};

/*
 * The path without its query, split: true for base (*id "") or "base/ID[/...]",
 * with ID bounded by cap and *below saying whether more follows it.
 */
static bool collection_path(const char *url, const char *base, char *id, size_t cap, bool *below)
{
	const char *p = url + strlen(base);
	size_t len;

	if (strncmp(url, base, strlen(base)))
		return false;
	*below = false;
	id[0] = '\0';
	if (*p == '\0' || *p == '?')
		return true;
	if (*p != '/')
		return false;
	p++;
	len = strcspn(p, "/?");
	if (len == 0 || len >= cap)
		return false;
	memcpy(id, p, len);
	id[len] = '\0';
	*below = p[len] == '/';
	return true;
}

/* true for "/v1/sandboxes" (*id "") or "/v1/sandboxes/ID[/...]". */
static bool sandboxes_path(const char *url, char *id, size_t cap, bool *below)
{
	return collection_path(url, "/v1/sandboxes", id, cap, below);
}

/* true for "/v1/snapshots" (id "") or "/v1/snapshots/ID" (a query allowed), with ID bounded by cap. */
static bool snapshots_path(const char *url, char *id, size_t cap)
{
	bool below;

	return collection_path(url, "/v1/snapshots", id, cap, &below) && !below;
}

/* The path's first segment after /v1/ ("images" of "/v1/images/x?y"), for a message. */
static void first_segment(const char *url, char *out, size_t cap)
{
	const char *p = url + 4;

	snprintf(out, cap, "%.*s", (int)strcspn(p, "/?"), p);
}

/* A whole call (its body buffered), answered by on_complete. */
static void complete_call(struct gateway *g, struct http_request *req)
{
	req->handler = &complete_handler;
	req->ctx = g;
	req->body_mode = HTTP_BODY_BUFFER;
	req->body_limit = JSON_BODY_MAX;
}

void gateway_on_headers(struct http_request *req, void *ctx)
{
	struct gateway *g = ctx;
	char id[64], what[64];
	bool below, health_call;
	size_t idlen;

	health_call = !strncmp(req->url, "/v1/health", 10) && (req->url[10] == '\0' || req->url[10] == '?');
	if (!health_call) {
		/* The gateway checks the key too: a request without one never reaches a worker. */
		req->key_name = auth_check(g->keys, req->auth, req->auth_len);
		if (!req->key_name)
			return http_respond_error(req, 401, NULL,
						  "missing or invalid API key (Authorization: Bearer KEY)");
	}
	if (health_call) {
		if (req->method != HTTP_GET)
			return http_respond_error(req, 405, NULL, "/v1/health takes GET");
		return complete_call(g, req);
	}
	if (snapshots_path(req->url, id, sizeof(id))) {
		if (!id[0] && req->method != HTTP_GET)
			return http_respond_error(req, 405, NULL, "/v1/snapshots takes GET");
		if (id[0] && req->method != HTTP_GET && req->method != HTTP_DELETE)
			return http_respond_error(req, 405, NULL, "/v1/snapshots/ID takes GET and DELETE");
		return complete_call(g, req);
	}
	if (!sandboxes_path(req->url, id, sizeof(id), &below)) {
		if (strncmp(req->url, "/v1/", 4))
			return http_respond_error(req, 404, NULL, "no such route");
		/* Base images, metrics, self-tests: one worker's own, not the fleet's. */
		first_segment(req->url, what, sizeof(what));
		return http_respond_error(req, 501, NULL,
					  "the gateway does not serve /v1/%.40s: it serves /v1/health and "
					  "/v1/sandboxes...; ask a worker directly (GET /v1/health lists their addresses)",
					  what);
	}
	if (!id[0]) {
		if (req->method != HTTP_POST && req->method != HTTP_GET)
			return http_respond_error(req, 405, NULL, "/v1/sandboxes takes GET and POST");
		return complete_call(g, req);
	}
	idlen = strlen(id);
	if (!fleet_sandbox_id_valid(id, idlen))
		return http_respond_error(req, 404, NULL,
					  "no sandbox %.64s (through the gateway, sandboxes are named by id)", id);
	/*
	 * The sandbox's own object, its wait and its DELETE: whole calls, so the
	 * object gets "worker" and a DELETE also takes the reservation away
	 * (gateway_get.c). The rest goes to the worker as bytes.
	 */
	if ((req->method == HTTP_GET || req->method == HTTP_DELETE) && !below)
		return complete_call(g, req);
	if (req->method == HTTP_GET && !strncmp(req->url + 14 + idlen, "/wait", 5) &&
	    (req->url[19 + idlen] == '\0' || req->url[19 + idlen] == '?'))
		return complete_call(g, req);
	/* A mount: its image must be on the sandbox's worker (gateway_get.c). */
	if (req->method == HTTP_POST && !strncmp(req->url + 14 + idlen, "/mounts", 7) &&
	    (req->url[21 + idlen] == '\0' || req->url[21 + idlen] == '?'))
		return complete_call(g, req);
	route_sandbox(g, req, id);
}

/* ---- life ---- */

int gateway_new(const struct gateway_config *cfg, struct gateway **out, char *err, size_t errlen)
{
	struct gateway *g;
	int e;

	if (!cfg || !cfg->loop || !cfg->etcd_endpoints || !cfg->worker_tls || !cfg->keys) {
		snprintf(err, errlen, "the gateway needs etcd, a CA for its workers and API keys");
		return -EINVAL;
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	g->loop = cfg->loop;
	g->tls = cfg->worker_tls;
	g->keys = cfg->keys;
	g->sample = cfg->sample;
	g->sync_ms = cfg->sync_ms ? cfg->sync_ms : 2000;
	g->relay_idle_ms = cfg->relay_idle_ms;
	fleet_table_init(&g->table);
	snprintf(g->etcd_error, sizeof(g->etcd_error), "not read yet");
	if (uv_random(NULL, NULL, &g->rng, sizeof(g->rng), 0, NULL) < 0)
		g->rng = (uint64_t)uv_hrtime();
	e = worker_pool_new(cfg->loop, cfg->worker_tls, NULL, &g->pool);
	if (e < 0) {
		snprintf(err, errlen, "out of memory");
		free(g);
		return e;
	}
	e = etcd_client_new(cfg->loop, cfg->etcd_endpoints, &g->etcd, err, errlen);
	if (e < 0) {
		worker_pool_free(g->pool);
		free(g);
		return e;
	}
	uv_timer_init(cfg->loop, &g->sync_timer);
	g->sync_timer.data = g;
	uv_timer_start(&g->sync_timer, on_sync_timer, 0, g->sync_ms);
	*out = g;
	return 0;
}

static void on_sync_timer_closed(uv_handle_t *h)
{
	struct gateway *g = h->data;

	fleet_table_destroy(&g->table);
	for (unsigned b = 0; b < GATEWAY_ROUTE_BUCKETS; b++)
		while (g->routes[b]) {
			struct gateway_route *r = g->routes[b];

			g->routes[b] = r->next;
			free(r);
		}
	free(g);
}

void gateway_free(struct gateway *g)
{
	if (!g)
		return;
	g->freeing = true;
	if (g->watch)
		etcd_watch_cancel(g->watch);
	/* Cancels every etcd call without callbacks. */
	etcd_client_free(g->etcd);
	worker_pool_free(g->pool);
	uv_close((uv_handle_t *)&g->sync_timer, on_sync_timer_closed);
}
