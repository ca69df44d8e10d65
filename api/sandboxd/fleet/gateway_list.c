/*
 * GET /v1/sandboxes through the gateway (docs/fleet.md, "Lists"): every live
 * worker is asked at once (the client's filters passed on), each within
 * GATEWAY_LIST_TIMEOUT_MS; their sandboxes are merged with "worker" added.
 * The reservations in etcd whose worker is gone add the lost sandboxes. A
 * worker that did not answer is named in "unreachable" rather than failing
 * the whole list. GET /v1/snapshots (gateway_images.c) merges its lists with
 * the same gateway_list_merge.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../api_call.h"
#include "etcd.h"
#include "gateway_part.h"
#include "../http_conn.h"
#include "log.h"
#include "worker_call.h"

struct list {
	struct gateway *g;
	struct api_call *call;
	cJSON *reply, *sandboxes, *unreachable;
	unsigned waiting;
	bool lost_wanted; /* the filters let finished sandboxes without tags through */
};

struct ask {
	struct list *l;
	char worker[FLEET_ID_MAX + 1];
};

void gateway_list_unreachable(cJSON *unreachable, const char *worker, const char *why)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "worker", worker);
	cJSON_AddStringToObject(o, "error", why);
	cJSON_AddItemToArray(unreachable, o);
}

void gateway_list_merge(cJSON *into, cJSON *unreachable, const char *key, const char *worker, int err, int status,
			const char *body, size_t len)
{
	cJSON *o, *arr, *item;
	char why[160];

	if (err) {
		snprintf(why, sizeof(why), "%s", strerror(-err));
		gateway_list_unreachable(unreachable, worker, why);
	} else if (status != 200) {
		snprintf(why, sizeof(why), "it answered %d", status);
		gateway_list_unreachable(unreachable, worker, why);
	} else {
		o = cJSON_ParseWithLength(body, len);
		arr = cJSON_GetObjectItemCaseSensitive(o, key);
		if (!cJSON_IsArray(arr)) {
			gateway_list_unreachable(unreachable, worker, "its list does not parse");
		} else {
			while ((item = cJSON_DetachItemFromArray(arr, 0))) {
				if (!cJSON_IsObject(item)) {
					cJSON_Delete(item);
					continue;
				}
				cJSON_DeleteItemFromObjectCaseSensitive(item, "worker");
				cJSON_AddStringToObject(item, "worker", worker);
				cJSON_AddItemToArray(into, item);
			}
		}
		cJSON_Delete(o);
	}
}

void gateway_list_answer(struct api_call *call, cJSON *reply, cJSON *unreachable)
{
	if (!cJSON_GetArraySize(unreachable))
		cJSON_DeleteItemFromObjectCaseSensitive(reply, "unreachable");
	api_call_ok(call, reply);
	api_call_release(call);
}

static void maybe_answer(struct list *l)
{
	if (l->waiting)
		return;
	gateway_list_answer(l->call, l->reply, l->unreachable);
	free(l);
}

static void on_worker_list(void *ctx, int err, int status, const char *body, size_t len)
{
	struct ask *a = ctx;
	struct list *l = a->l;

	l->g->busy--;
	l->waiting--;
	gateway_list_merge(l->sandboxes, l->unreachable, "sandboxes", a->worker, err, status, body, len);
	free(a);
	maybe_answer(l);
}

static void on_reservations(void *arg, int err, const struct etcd_kv *kvs, size_t n, int64_t revision)
{
	struct list *l = arg;
	struct gateway *g = l->g;
	char sid[FLEET_ID_MAX + 1], why[160];

	(void)revision;
	g->busy--;
	l->waiting--;
	if (err) {
		cJSON_AddStringToObject(l->reply, "lost_unknown", "etcd is unreachable: lost sandboxes cannot be listed");
	} else {
		for (size_t i = 0; i < n; i++) {
			struct fleet_sandbox_record rec;
			const struct fleet_entry *w;

			if (fleet_key_id(kvs[i].key, kvs[i].key_len, FLEET_SANDBOXES_PREFIX, sid, sizeof(sid)) < 0 ||
			    !fleet_sandbox_id_valid(sid, strlen(sid)) ||
			    fleet_sandbox_record_parse(kvs[i].value, kvs[i].value_len, &rec, why, sizeof(why)) < 0)
				continue;
			gateway_route_set(g, sid, rec.worker);
			w = fleet_table_find(&g->table, rec.worker);
			if (w && w->live)
				continue; /* its worker lists it */
			if (l->lost_wanted)
				cJSON_AddItemToArray(l->sandboxes, gateway_lost_json(sid, rec.worker, rec.created));
		}
	}
	maybe_answer(l);
}

void gateway_list(struct gateway *g, struct api_call *call)
{
	struct http_request *req = api_call_request(call);
	char target[HTTP_MAX_URL], state[32], tags[1][HTTP_PARAM_MAX];
	struct list *l = calloc(1, sizeof(*l));

	if (!l)
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	l->g = g;
	l->call = call;
	l->reply = cJSON_CreateObject();
	l->sandboxes = cJSON_AddArrayToObject(l->reply, "sandboxes");
	l->unreachable = cJSON_AddArrayToObject(l->reply, "unreachable");
	l->lost_wanted = http_query_params(req->query, "tag", tags, 1) == 0 &&
			 (!http_query_param(req->query, "state", state, sizeof(state)) || !strcmp(state, "finished"));
	snprintf(target, sizeof(target), "/v1/sandboxes%s%s", req->query[0] ? "?" : "", req->query);
	api_call_hold(call);
	l->waiting = 1; /* until every ask went out */
	for (size_t i = 0; i < g->table.n; i++) {
		const struct fleet_entry *w = g->table.w[i];
		struct worker_call_request rq = {.host = w->rec.host, .port = w->rec.port, .method = "GET",
						 .target = target, .authorization = req->auth_len ? req->auth : NULL,
						 .timeout_ms = GATEWAY_LIST_TIMEOUT_MS};
		struct worker_call *wc;
		struct ask *a;
		int e;

		if (!w->live)
			continue;
		a = calloc(1, sizeof(*a));
		if (!a) {
			gateway_list_unreachable(l->unreachable, w->rec.id, "out of memory");
			continue;
		}
		a->l = l;
		snprintf(a->worker, sizeof(a->worker), "%s", w->rec.id);
		e = worker_call_start(g->loop, g->pool, &rq, on_worker_list, a, &wc);
		if (e < 0) {
			gateway_list_unreachable(l->unreachable, w->rec.id, strerror(-e));
			free(a);
			continue;
		}
		l->waiting++;
		g->busy++;
	}
	if (etcd_range_prefix(g->etcd, FLEET_SANDBOXES_PREFIX, on_reservations, l) == 0) {
		l->waiting++;
		g->busy++;
	} else {
		cJSON_AddStringToObject(l->reply, "lost_unknown", "etcd is unreachable: lost sandboxes cannot be listed");
	}
	l->waiting--;
	maybe_answer(l);
}
