/*
 * The whole calls on one sandbox through the gateway (gateway_part.h): GET
 * /v1/sandboxes/ID and its /wait go to the worker that holds it as whole
 * calls (not the byte relay), so the object gets "worker" like the list's
 * and the create's; a DELETE goes the same way and, once the worker has
 * forgotten the sandbox, the reservation in etcd goes too. A lost worker's
 * sandbox is answered here: its object, or for a DELETE the reservation
 * deleted (what was on that host is out of reach; docs/fleet.md).
 *
 * POST /v1/sandboxes/ID/mounts is a whole call too: an image mounts only
 * where it is stored, so the gateway first finds the image's worker
 * (gateway_images.c) and refuses, with 409 naming both workers, a mount of
 * an image that another worker holds; otherwise the worker answers.
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

/* A wait's own timeout (docs/api.md: default 60, at most 3600) plus this much for the call. */
#define WAIT_DEFAULT_S 60u
#define WAIT_MAX_S 3600u
#define WAIT_MARGIN_MS 15000u

struct get {
	struct gateway *g;
	struct api_call *call;
	enum gateway_sandbox_op op;
	char sandbox[20];
	char worker[FLEET_ID_MAX + 1];
	char key[64];
	char target[HTTP_MAX_URL + 64];
	unsigned timeout_ms;
	bool image_checked; /* a mount: its image is not on another worker */
	/* A DELETE the worker answered: its reply, given once the reservation is gone. */
	int status;
	char *body;
	size_t len;
};

static void done(struct get *q)
{
	api_call_release(q->call);
	free(q->body);
	free(q);
}

/* The worker's answer as it came (a 404 of a sandbox deleted there, a 401, a DELETE's 204). */
static void pass_on(struct get *q, int status, const char *body, size_t len)
{
	if (!api_call_gone(q->call))
		http_respond(api_call_request(q->call), status, "application/json", body, len);
}

static void on_unreserved(void *arg, int err)
{
	struct get *q = arg;
	cJSON *o;

	q->g->busy--;
	gateway_route_forget(q->g, q->sandbox);
	if (q->status) {
		/* The worker forgot it: its answer stands, whatever etcd said. */
		if (err)
			sv_warn("%s was deleted on worker %s, but its reservation stays in etcd: %s", q->sandbox,
				q->worker, strerror(-err));
		pass_on(q, q->status, q->body ? q->body : "", q->len);
		return done(q);
	}
	if (err) {
		api_call_fail(q->call, -EAGAIN, NULL,
			      "etcd is unreachable (%s): the reservation of %s, whose worker %s is lost, stays",
			      strerror(-err), q->sandbox, q->worker);
		return done(q);
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "id", q->sandbox);
	cJSON_AddStringToObject(o, "worker", q->worker);
	cJSON_AddStringToObject(o, "deleted", "reservation");
	cJSON_AddStringToObject(o, "message",
				"its worker is lost: the gateway deleted the sandbox's reservation in etcd; whatever is "
				"left of it on that worker's host was not reached (if the worker comes back, delete it "
				"there directly)");
	api_call_ok(q->call, o);
	done(q);
}

static void unreserve(struct get *q)
{
	snprintf(q->key, sizeof(q->key), "%s%s", FLEET_SANDBOXES_PREFIX, q->sandbox);
	if (etcd_delete(q->g->etcd, q->key, on_unreserved, q) < 0) {
		q->g->busy++;
		on_unreserved(q, -EAGAIN);
		return;
	}
	q->g->busy++;
}

static void on_answer(void *ctx, int err, int status, const char *body, size_t len)
{
	struct get *q = ctx;
	cJSON *o;

	q->g->busy--;
	if (err) {
		api_call_fail(q->call, err == -ETIMEDOUT ? -ETIMEDOUT : -EPROTO, NULL,
			      "worker %s holding %s did not answer: %s", q->worker, q->sandbox, strerror(-err));
		return done(q);
	}
	if (q->op == GATEWAY_SANDBOX_DELETE) {
		/* 204: deleted there; 404: it never was (a create that did not happen): the reservation goes. */
		if (status != 204 && status != 404) {
			pass_on(q, status, body, len);
			return done(q);
		}
		q->status = status;
		if (len && (q->body = malloc(len)))
			memcpy(q->body, body, len);
		q->len = q->body ? len : 0;
		return unreserve(q);
	}
	if (status != 200) {
		pass_on(q, status, body, len);
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

static void ask(struct get *q);

static void on_mount_image(void *ctx, const char *worker, cJSON *image, unsigned unreachable)
{
	struct get *q = ctx;
	char id[GATEWAY_IMAGE_ID_LEN + 1] = "";
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(image, "id");

	(void)unreachable; /* not found anywhere: the sandbox's worker answers its own 404 */
	if (cJSON_IsString(v))
		snprintf(id, sizeof(id), "%s", v->valuestring);
	cJSON_Delete(image);
	if (worker && strcmp(worker, q->worker)) {
		api_call_fail(q->call, -EBUSY, "image",
			      "image %s is stored on worker %s and sandbox %s runs on worker %s: an image mounts only "
			      "in a sandbox on the worker that made it (create the sandbox there, or make the image "
			      "again from a sandbox on %s)",
			      id, worker, q->sandbox, q->worker, q->worker);
		return done(q);
	}
	q->image_checked = true;
	ask(q);
}

/* A mount's image, when its body names one that could be stored somewhere: looked for first (0), or -errno. */
static int find_mount_image(struct get *q, const struct http_request *req)
{
	size_t len;
	const char *body = api_call_body(q->call, &len);
	cJSON *o = cJSON_ParseWithLength(body, len);
	const cJSON *image = cJSON_GetObjectItemCaseSensitive(o, "image");
	int e = -EINVAL;

	if (cJSON_IsString(image) && gateway_image_id_valid(image->valuestring))
		e = gateway_image_find(q->g, image->valuestring, req->auth_len ? req->auth : NULL, on_mount_image,
				       q);
	cJSON_Delete(o);
	return e;
}

static void ask(struct get *q)
{
	const struct fleet_entry *w = fleet_table_find(&q->g->table, q->worker);
	struct http_request *req = api_call_request(q->call);
	static const char *const methods[] = {[GATEWAY_SANDBOX_GET] = "GET", [GATEWAY_SANDBOX_WAIT] = "GET",
					      [GATEWAY_SANDBOX_DELETE] = "DELETE", [GATEWAY_SANDBOX_MOUNT] = "POST"};
	struct worker_call *wc;
	const char *body = NULL;
	size_t body_len = 0;
	int e;

	if (!w || !w->live) {
		if (q->op == GATEWAY_SANDBOX_DELETE)
			return unreserve(q);
		if (q->op == GATEWAY_SANDBOX_MOUNT) {
			api_call_fail(q->call, -EBUSY, NULL, "sandbox %s has finished: its worker %s is lost", q->sandbox,
				      q->worker);
			return done(q);
		}
		api_call_ok(q->call, gateway_lost_json(q->sandbox, q->worker, 0));
		return done(q);
	}
	if (q->op == GATEWAY_SANDBOX_MOUNT) {
		/* Not found (no image named, none live): the worker answers as it would anyway. */
		if (!q->image_checked && find_mount_image(q, req) == 0)
			return;
		body = api_call_body(q->call, &body_len);
	}
	e = worker_call_start(q->g->loop, q->g->pool,
			      &(struct worker_call_request){
				      .host = w->rec.host, .port = w->rec.port, .method = methods[q->op],
				      .target = q->target, .authorization = req->auth_len ? req->auth : NULL,
				      .body = body, .body_len = body_len, .timeout_ms = q->timeout_ms},
			      on_answer, q, &wc);
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

unsigned gateway_wait_timeout_ms(const char *query)
{
	const char *p = query;
	unsigned long s = WAIT_DEFAULT_S;

	/* The worker judges the value; this only bounds how long the gateway waits for its answer. */
	while (p && *p) {
		if (!strncmp(p, "timeout=", 8)) {
			s = strtoul(p + 8, NULL, 10);
			break;
		}
		p = strchr(p, '&');
		p = p ? p + 1 : NULL;
	}
	if (s > WAIT_MAX_S)
		s = WAIT_MAX_S;
	return (unsigned)s * 1000u + WAIT_MARGIN_MS;
}

void gateway_sandbox_call(struct gateway *g, struct api_call *call, const char *sandbox, enum gateway_sandbox_op op)
{
	struct http_request *req = api_call_request(call);
	const char *worker = gateway_route_get(g, sandbox);
	struct get *q = calloc(1, sizeof(*q));

	if (!q)
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	q->g = g;
	q->call = call;
	q->op = op;
	snprintf(q->sandbox, sizeof(q->sandbox), "%s", sandbox);
	/* The worker's path is the gateway's (the query passed on). */
	snprintf(q->target, sizeof(q->target), "/v1/sandboxes/%s%s%s%s", sandbox,
		 op == GATEWAY_SANDBOX_WAIT ? "/wait" : op == GATEWAY_SANDBOX_MOUNT ? "/mounts" : "",
		 req->query[0] ? "?" : "", req->query);
	q->timeout_ms = op == GATEWAY_SANDBOX_WAIT ? gateway_wait_timeout_ms(req->query) : GATEWAY_CALL_TIMEOUT_MS;
	api_call_hold(call);
	if (worker) {
		snprintf(q->worker, sizeof(q->worker), "%s", worker);
		return ask(q);
	}
	snprintf(q->key, sizeof(q->key), "%s%s", FLEET_SANDBOXES_PREFIX, sandbox);
	if (etcd_get(g->etcd, q->key, on_reservation, q) < 0) {
		api_call_fail(call, -EAGAIN, NULL, "etcd cannot be asked where %s is", sandbox);
		return done(q);
	}
	g->busy++;
}
