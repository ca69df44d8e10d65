/*
 * Snapshot images through the gateway (docs/fleet.md, "Snapshot images"):
 * an image lives in the store of the worker whose sandbox made it, and only
 * there. The gateway keeps no record of where: it asks the live workers
 * (GET /v1/snapshots/ID at once on each, GATEWAY_LIST_TIMEOUT_MS each),
 * and the one that has it answers 200 (image ids are 128 random bits, so at
 * most one does). Nothing can go stale: an image deleted or expired on its
 * worker is gone from the fleet at once, and a lost worker's images are out
 * of reach like its sandboxes. GET /v1/snapshots merges every live
 * worker's list with "worker" added, as the sandbox list does.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../api_call.h"
#include "../http_conn.h"
#include "gateway_part.h"
#include "log.h"
#include "worker_call.h"

bool gateway_image_id_valid(const char *id)
{
	size_t n = strlen(id);

	if (n != GATEWAY_IMAGE_ID_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return false;
	return true;
}

/* ---- where an image is ---- */

struct find {
	struct gateway *g;
	gateway_image_found_fn cb; /* NULL once called */
	void *ctx;
	unsigned waiting, unreachable;
	char target[64];
};

struct find_ask {
	struct find *f;
	char worker[FLEET_ID_MAX + 1];
};

static void find_end(struct find *f)
{
	if (f->waiting)
		return;
	if (f->cb)
		f->cb(f->ctx, NULL, NULL, f->unreachable);
	free(f);
}

static void on_found(void *ctx, int err, int status, const char *body, size_t len)
{
	struct find_ask *a = ctx;
	struct find *f = a->f;

	f->g->busy--;
	f->waiting--;
	if (err || (status != 200 && status != 404)) {
		f->unreachable++;
	} else if (status == 200 && f->cb) {
		cJSON *o = cJSON_ParseWithLength(body, len);

		if (cJSON_IsObject(o)) {
			gateway_image_found_fn cb = f->cb;

			f->cb = NULL; /* the others' answers are dropped when they come */
			cb(f->ctx, a->worker, o, f->unreachable);
		} else {
			cJSON_Delete(o);
			f->unreachable++;
		}
	}
	free(a);
	find_end(f);
}

int gateway_image_find(struct gateway *g, const char *image, const char *authorization, gateway_image_found_fn cb,
		       void *ctx)
{
	struct find *f;

	if (!gateway_image_id_valid(image) || !cb)
		return -EINVAL;
	if (!fleet_table_live(&g->table))
		return -ENOENT;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->g = g;
	f->cb = cb;
	f->ctx = ctx;
	snprintf(f->target, sizeof(f->target), "/v1/snapshots/%s", image);
	f->waiting = 1; /* until every ask went out */
	for (size_t i = 0; i < g->table.n; i++) {
		const struct fleet_entry *w = g->table.w[i];
		struct worker_call_request rq = {.host = w->rec.host, .port = w->rec.port, .method = "GET",
						 .target = f->target, .authorization = authorization,
						 .timeout_ms = GATEWAY_LIST_TIMEOUT_MS};
		struct find_ask *a;
		struct worker_call *wc;

		if (!w->live)
			continue;
		a = calloc(1, sizeof(*a));
		if (!a || worker_call_start(g->loop, g->pool, &rq, on_found, a, &wc) < 0) {
			free(a);
			f->unreachable++;
			continue;
		}
		a->f = f;
		snprintf(a->worker, sizeof(a->worker), "%s", w->rec.id);
		f->waiting++;
		g->busy++;
	}
	f->waiting--;
	if (!f->waiting) {
		/* Nothing went out: the answer comes now, as if every worker had said no. */
		find_end(f);
	}
	return 0;
}

/* ---- GET /v1/snapshots/ID and DELETE /v1/snapshots/ID ---- */

struct image_call {
	struct gateway *g;
	struct api_call *call;
	bool del;
	char image[GATEWAY_IMAGE_ID_LEN + 1];
	char target[64];
	char worker[FLEET_ID_MAX + 1];
};

static void image_call_done(struct image_call *c)
{
	api_call_release(c->call);
	free(c);
}

static void not_found(struct api_call *call, const char *image, unsigned unreachable)
{
	if (unreachable)
		api_call_fail(call, -EAGAIN, NULL,
			      "image %s is on no worker that answered, and %u did not: it may be on one of them", image,
			      unreachable);
	else
		api_call_fail(call, -ENOENT, NULL, "no image %s on any live worker", image);
}

static void on_deleted(void *ctx, int err, int status, const char *body, size_t len)
{
	struct image_call *c = ctx;

	c->g->busy--;
	if (err)
		api_call_fail(c->call, err == -ETIMEDOUT ? -ETIMEDOUT : -EPROTO, NULL,
			      "worker %s holding image %s did not answer: %s", c->worker, c->image, strerror(-err));
	else if (!api_call_gone(c->call))
		http_respond(api_call_request(c->call), status, "application/json", body, len);
	image_call_done(c);
}

static void on_image(void *ctx, const char *worker, cJSON *image, unsigned unreachable)
{
	struct image_call *c = ctx;
	struct http_request *req = api_call_request(c->call);
	struct worker_call *wc;
	const struct fleet_entry *w = worker ? fleet_table_find(&c->g->table, worker) : NULL;
	int e;

	if (!worker) {
		not_found(c->call, c->image, unreachable);
		return image_call_done(c);
	}
	if (!c->del) {
		cJSON_DeleteItemFromObjectCaseSensitive(image, "worker");
		cJSON_AddStringToObject(image, "worker", worker);
		api_call_ok(c->call, image);
		return image_call_done(c);
	}
	cJSON_Delete(image);
	snprintf(c->worker, sizeof(c->worker), "%s", worker);
	e = w ? worker_call_start(c->g->loop, c->g->pool,
				  &(struct worker_call_request){.host = w->rec.host, .port = w->rec.port,
								.method = "DELETE", .target = c->target,
								.authorization = req->auth_len ? req->auth : NULL,
								.timeout_ms = GATEWAY_CALL_TIMEOUT_MS},
				  on_deleted, c, &wc)
	      : -ENOENT;
	if (e < 0) {
		api_call_fail(c->call, -EIO, NULL, "cannot call worker %s: %s", worker, strerror(-e));
		return image_call_done(c);
	}
	c->g->busy++;
}

void gateway_image_call(struct gateway *g, struct api_call *call, const char *image, bool del)
{
	struct http_request *req = api_call_request(call);
	struct image_call *c;
	int e;

	if (!gateway_image_id_valid(image))
		return api_call_fail(call, -ENOENT, NULL, "no image %.64s", image);
	c = calloc(1, sizeof(*c));
	if (!c)
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	c->g = g;
	c->call = call;
	c->del = del;
	snprintf(c->image, sizeof(c->image), "%s", image);
	snprintf(c->target, sizeof(c->target), "/v1/snapshots/%s", image);
	api_call_hold(call);
	e = gateway_image_find(g, image, req->auth_len ? req->auth : NULL, on_image, c);
	if (e == -ENOENT) {
		api_call_fail(call, -EAGAIN, NULL, "no worker is live: image %s cannot be reached", image);
		return image_call_done(c);
	}
	if (e < 0) {
		api_call_fail(call, e, NULL, "cannot look for image %s: %s", image, strerror(-e));
		return image_call_done(c);
	}
}

/* ---- GET /v1/snapshots: every live worker's images ---- */

struct images {
	struct gateway *g;
	struct api_call *call;
	cJSON *reply, *images, *unreachable;
	unsigned waiting;
};

struct images_ask {
	struct images *l;
	char worker[FLEET_ID_MAX + 1];
};

static void images_answer(struct images *l)
{
	if (l->waiting)
		return;
	gateway_list_answer(l->call, l->reply, l->unreachable);
	free(l);
}

static void on_worker_images(void *ctx, int err, int status, const char *body, size_t len)
{
	struct images_ask *a = ctx;
	struct images *l = a->l;

	l->g->busy--;
	l->waiting--;
	gateway_list_merge(l->images, l->unreachable, "images", a->worker, err, status, body, len);
	free(a);
	images_answer(l);
}

void gateway_images_list(struct gateway *g, struct api_call *call)
{
	struct http_request *req = api_call_request(call);
	struct images *l = calloc(1, sizeof(*l));

	if (!l)
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	l->g = g;
	l->call = call;
	l->reply = cJSON_CreateObject();
	l->images = cJSON_AddArrayToObject(l->reply, "images");
	l->unreachable = cJSON_AddArrayToObject(l->reply, "unreachable");
	api_call_hold(call);
	l->waiting = 1; /* until every ask went out */
	for (size_t i = 0; i < g->table.n; i++) {
		const struct fleet_entry *w = g->table.w[i];
		struct worker_call_request rq = {.host = w->rec.host, .port = w->rec.port, .method = "GET",
						 .target = "/v1/snapshots",
						 .authorization = req->auth_len ? req->auth : NULL,
						 .timeout_ms = GATEWAY_LIST_TIMEOUT_MS};
		struct images_ask *a;
		struct worker_call *wc;

		if (!w->live)
			continue;
		a = calloc(1, sizeof(*a));
		if (!a || worker_call_start(g->loop, g->pool, &rq, on_worker_images, a, &wc) < 0) {
			free(a);
			gateway_list_unreachable(l->unreachable, w->rec.id, "cannot call it");
			continue;
		}
		a->l = l;
		snprintf(a->worker, sizeof(a->worker), "%s", w->rec.id);
		l->waiting++;
		g->busy++;
	}
	l->waiting--;
	images_answer(l);
}
