/*
 * GET /v1/sandboxes/ID through the gateway: a whole call to the worker that
 * holds it (not the byte relay), so the object gets "worker" like the
 * list's and the create's; a lost worker's sandbox is answered here.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../api_call.h"
#include "../http_conn.h"
#include "etcd.h"
#include "gateway_part.h"
#include "log.h"
#include "worker_call.h"

struct get {
	struct gateway *g;
	struct api_call *call;
	char sandbox[20];
	char worker[FLEET_ID_MAX + 1];
};

static void done(struct get *q)
{
	api_call_release(q->call);
	free(q);
}

static void on_object(void *ctx, int err, int status, const char *body, size_t len)
{
	struct get *q = ctx;
	struct http_request *req = api_call_request(q->call);
	cJSON *o;

	q->g->busy--;
	if (err) {
		api_call_fail(q->call, err == -ETIMEDOUT ? -ETIMEDOUT : -EPROTO, NULL,
			      "worker %s holding %s did not answer: %s", q->worker, q->sandbox, strerror(-err));
		return done(q);
	}
	if (status != 200) {
		/* Its answer as it is (a 404 of a sandbox deleted there, a 401). */
		if (!api_call_gone(q->call))
			http_respond(req, status, "application/json", body, len);
		return done(q);
	}
	o = cJSON_ParseWithLength(body, len);
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		api_call_fail(q->call, -EPROTO, NULL, "worker %s answered with a body that is not JSON", q->worker);
		return done(q);
	}
	cJSON_DeleteItemFromObjectCaseSensitive(o, "worker");
	cJSON_AddStringToObject(o, "worker", q->worker);
	api_call_ok(q->call, o);
	done(q);
}

static void ask(struct get *q)
{
	const struct fleet_entry *w = fleet_table_find(&q->g->table, q->worker);
	struct http_request *req = api_call_request(q->call);
	char target[64];
	struct worker_call *wc;
	int e;

	if (!w || !w->live) {
		api_call_ok(q->call, gateway_lost_json(q->sandbox, q->worker, 0));
		return done(q);
	}
	snprintf(target, sizeof(target), "/v1/sandboxes/%s", q->sandbox);
	e = worker_call_start(q->g->loop, q->g->tls,
			      &(struct worker_call_request){.host = w->rec.host, .port = w->rec.port, .method = "GET",
							    .target = target,
							    .authorization = req->auth_len ? req->auth : NULL,
							    .timeout_ms = GATEWAY_LIST_TIMEOUT_MS},
			      on_object, q, &wc);
	if (e < 0) {
		api_call_fail(q->call, -EIO, NULL, "cannot call worker %s: %s", q->worker, strerror(-e));
		return done(q);
	}
	q->g->busy++;
}

static void on_reservation(void *arg, int err, const struct etcd_kv *kvs, size_t n, int64_t revision)
{
	struct get *q = arg;
	struct fleet_sandbox_record rec;
	char why[200];

	(void)revision;
	q->g->busy--;
	if (err) {
		api_call_fail(q->call, -EAGAIN, NULL, "etcd is unreachable and this gateway has no route for %s yet: %s",
			      q->sandbox, strerror(-err));
		return done(q);
	}
	if (n == 0) {
		api_call_fail(q->call, -ENOENT, NULL, "no sandbox %s", q->sandbox);
		return done(q);
	}
	if (fleet_sandbox_record_parse(kvs[0].value, kvs[0].value_len, &rec, why, sizeof(why)) < 0) {
		sv_warn("the reservation of %s: %s", q->sandbox, why);
		api_call_fail(q->call, -EPROTO, NULL, "the reservation of %s in etcd does not parse", q->sandbox);
		return done(q);
	}
	gateway_route_set(q->g, q->sandbox, rec.worker);
	snprintf(q->worker, sizeof(q->worker), "%s", rec.worker);
	ask(q);
}

void gateway_get(struct gateway *g, struct api_call *call, const char *sandbox)
{
	const char *worker = gateway_route_get(g, sandbox);
	struct get *q = calloc(1, sizeof(*q));
	char key[64];

	if (!q)
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	q->g = g;
	q->call = call;
	snprintf(q->sandbox, sizeof(q->sandbox), "%s", sandbox);
	api_call_hold(call);
	if (worker) {
		snprintf(q->worker, sizeof(q->worker), "%s", worker);
		return ask(q);
	}
	snprintf(key, sizeof(key), "%s%s", FLEET_SANDBOXES_PREFIX, sandbox);
	if (etcd_get(g->etcd, key, on_reservation, q) < 0) {
		api_call_fail(call, -EAGAIN, NULL, "etcd cannot be asked where %s is", sandbox);
		return done(q);
	}
	g->busy++;
}
