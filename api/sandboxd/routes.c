/*
 * The REST routes of docs/api.md. A request is routed once its headers are
 * in (authentication, body handling); calls that need the whole body are
 * answered from their complete callback.
 */
#include "routes.h"

#include <cjson/cJSON.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "http_conn.h"
#include "log.h"
#include "sandboxd.h"

#define JSON_BODY_MAX (1024 * 1024)
#define MAX_SEGMENTS 8
#define MAX_TAG_FILTERS 32
#define LOG_TAIL_MAX (1024 * 1024)

struct route {
	struct sandboxd *d;
	char buf[HTTP_MAX_URL];
	const char *seg[MAX_SEGMENTS];
	int n;
};

/* "/v1/sandboxes/ID/execs" -> {"v1", "sandboxes", "ID", "execs"} */
static int split_path(const struct http_request *req, struct route *r)
{
	size_t len = strcspn(req->url, "?");
	char *p;

	if (len >= sizeof(r->buf))
		return -1;
	memcpy(r->buf, req->url, len);
	r->buf[len] = '\0';
	r->n = 0;
	p = r->buf;
	while (*p == '/')
		p++;
	while (*p) {
		if (r->n == MAX_SEGMENTS)
			return -1;
		r->seg[r->n++] = p;
		p = strchr(p, '/');
		if (!p)
			break;
		*p++ = '\0';
	}
	return 0;
}

static bool is(const struct route *r, int i, const char *s)
{
	return i < r->n && !strcmp(r->seg[i], s);
}

static struct sandbox *lookup(struct http_request *req, const struct route *r)
{
	struct sandbox *sb = r->n > 2 ? sandbox_find(r->d, r->seg[2]) : NULL;

	if (!sb)
		http_respond_error(req, 404, NULL, "no sandbox %.64s", r->n > 2 ? r->seg[2] : "");
	return sb;
}

static void reply_spec_error(struct http_request *req, const struct spec_error *err)
{
	http_respond_error(req, 400, err->field[0] ? err->field : NULL, "%s", err->message);
}

/* ---- whole-request handlers ---- */

static void health(struct http_request *req, struct sandboxd *d)
{
	cJSON *o = cJSON_CreateObject();
	unsigned count, memory;

	sandbox_usage(d, &count, &memory);
	cJSON_AddTrueToObject(o, "ok");
	cJSON_AddStringToObject(o, "version", SANDVM_VERSION);
	cJSON_AddNumberToObject(o, "sandboxes", count);
	cJSON_AddNumberToObject(o, "memory_mib", memory);
	cJSON_AddNumberToObject(o, "max_sandboxes", d->max_sandboxes);
	cJSON_AddNumberToObject(o, "max_memory_mib", d->max_memory_mib);
	http_respond_json(req, 200, o);
}

static void create(struct http_request *req, struct sandboxd *d)
{
	struct sandbox_spec spec;
	struct spec_error err;

	if (spec_parse_sandbox(req->body, req->body_len, &spec, &err) < 0) {
		reply_spec_error(req, &err);
		return;
	}
	sandbox_create(d, &spec, req);
}

static bool tags_match(const struct sandbox *sb, char filters[][HTTP_PARAM_MAX], size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char *eq = strchr(filters[i], '=');
		const cJSON *v;

		if (!eq)
			return false;
		*eq = '\0';
		v = cJSON_GetObjectItemCaseSensitive(sb->spec.tags, filters[i]);
		*eq = '=';
		if (!cJSON_IsString(v) || strcmp(v->valuestring, eq + 1))
			return false;
	}
	return true;
}

static void list(struct http_request *req, struct sandboxd *d)
{
	char filters[MAX_TAG_FILTERS][HTTP_PARAM_MAX];
	char state[32];
	size_t n = http_query_params(req->query, "tag", filters, MAX_TAG_FILTERS);
	bool by_state = http_query_param(req->query, "state", state, sizeof(state));
	cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "sandboxes");

	for (size_t i = 0; i < n; i++)
		if (!strchr(filters[i], '=')) {
			cJSON_Delete(o);
			http_respond_error(req, 400, "tag", "tag filters are K=V");
			return;
		}
	for (const struct sandbox *sb = d->sandboxes; sb; sb = sb->next) {
		cJSON *j;

		if (sb->deleted || !tags_match(sb, filters, n))
			continue;
		j = sandbox_to_json(sb);
		if (by_state && strcmp(cJSON_GetObjectItemCaseSensitive(j, "state")->valuestring, state)) {
			cJSON_Delete(j);
			continue;
		}
		cJSON_AddItemToArray(arr, j);
	}
	http_respond_json(req, 200, o);
}

static void send_logs(struct http_request *req, struct sandbox *sb)
{
	char path[400], old[420];
	size_t cap = LOG_TAIL_MAX, len = 0;
	char *buf = malloc(cap);
	const char *files[2] = {old, path};

	if (!buf) {
		http_respond_error(req, 500, NULL, "out of memory");
		return;
	}
	snprintf(path, sizeof(path), "%s/output.log", sb->vm.dir);
	snprintf(old, sizeof(old), "%s/output.log.1", sb->vm.dir);
	/* The newest bytes win: fill from the current file backwards, then the older one. */
	for (int i = 1; i >= 0 && len < cap; i--) {
		FILE *f = fopen(files[i], "re");
		long size, want;

		if (!f)
			continue;
		fseek(f, 0, SEEK_END);
		size = ftell(f);
		want = size < (long)(cap - len) ? size : (long)(cap - len);
		fseek(f, size - want, SEEK_SET);
		memmove(buf + want, buf, len);
		if (fread(buf, 1, (size_t)want, f) != (size_t)want)
			want = 0;
		len += (size_t)want;
		fclose(f);
	}
	http_respond(req, 200, "text/plain; charset=utf-8", buf, len);
	free(buf);
}

static void exec_create(struct http_request *req, struct sandbox *sb)
{
	struct exec_spec spec;
	struct spec_error err;
	struct exec_session *ex;
	char msg[600];
	cJSON *o;
	int r;

	if (spec_parse_exec(req->body, req->body_len, &spec, &err) < 0) {
		reply_spec_error(req, &err);
		return;
	}
	if (sb->spec.restricted && sb->execs_started) {
		spec_exec_free(&spec);
		http_respond_error(req, 409, NULL, "a restricted sandbox runs one exec only");
		return;
	}
	r = exec_start(sb, &spec, false, &ex, msg, sizeof(msg));
	spec_exec_free(&spec);
	if (r < 0) {
		http_respond_error(req, r == -ESRCH ? 409 : 500, NULL, "%s", msg);
		return;
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "id", exec_id(ex));
	http_respond_json(req, 201, o);
}

static void exec_signal_call(struct http_request *req, struct exec_session *ex)
{
	cJSON *j = cJSON_ParseWithLength(req->body ? req->body : "", req->body_len);
	const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "signal");
	int sig = cJSON_IsNumber(s) ? (int)s->valuedouble : 0;

	if (!cJSON_IsObject(j) || !cJSON_IsNumber(s) || s->valuedouble != sig || sig < 1 || sig > 64 ||
	    cJSON_GetArraySize(j) != 1) {
		cJSON_Delete(j);
		http_respond_error(req, 400, "signal", "body must be {\"signal\": N} with N in 1..64");
		return;
	}
	cJSON_Delete(j);
	if (exec_signal(ex, sig) < 0) {
		http_respond_error(req, 409, NULL, "exec %s has ended", exec_id(ex));
		return;
	}
	http_respond(req, 204, NULL, NULL, 0);
}

static void wait_call(struct http_request *req, struct sandbox *sb)
{
	char value[32];
	unsigned long t = 60;

	if (http_query_param(req->query, "timeout", value, sizeof(value))) {
		char *end;

		t = strtoul(value, &end, 10);
		if (!*value || *end || t > 3600) {
			http_respond_error(req, 400, "timeout", "timeout must be 0..3600 seconds");
			return;
		}
	}
	sandbox_wait_add(sb, req, (unsigned)t);
}

/* Everything but stdin and files, which set up at headers time. */
static void complete(struct http_request *req)
{
	struct route r;
	struct sandbox *sb;
	struct exec_session *ex;
	int m = req->method;

	if (split_path(req, &r) < 0 || !is(&r, 0, "v1")) {
		http_respond_error(req, 404, NULL, "no such route");
		return;
	}
	r.d = req->ctx;
	if (r.n == 2 && is(&r, 1, "health") && m == HTTP_GET)
		return health(req, r.d);
	if (r.n == 2 && is(&r, 1, "images") && m == HTTP_GET)
		return http_respond_json(req, 200, images_to_json(r.d));
	if (r.n == 2 && is(&r, 1, "snapshots") && m == HTTP_GET)
		return snapshots_list(r.d, req);
	if (r.n == 3 && is(&r, 1, "snapshots") && m == HTTP_GET)
		return snapshots_get(r.d, r.seg[2], req);
	if (r.n == 3 && is(&r, 1, "snapshots") && m == HTTP_DELETE)
		return snapshots_delete(r.d, r.seg[2], req);
	if (!is(&r, 1, "sandboxes")) {
		http_respond_error(req, 404, NULL, "no such route");
		return;
	}
	if (r.n == 2 && m == HTTP_POST)
		return create(req, r.d);
	if (r.n == 2 && m == HTTP_GET)
		return list(req, r.d);
	if (!(sb = lookup(req, &r)))
		return;
	if (r.n == 3 && m == HTTP_GET)
		return http_respond_json(req, 200, sandbox_to_json(sb));
	if (r.n == 3 && m == HTTP_DELETE) {
		sandbox_delete(sb);
		return http_respond(req, 204, NULL, NULL, 0);
	}
	if (r.n == 4 && is(&r, 3, "wait") && m == HTTP_GET)
		return wait_call(req, sb);
	if (r.n == 4 && is(&r, 3, "terminate") && m == HTTP_POST) {
		sandbox_terminate(sb, "terminated", RC_TERMINATED, "terminated through the API");
		return http_respond_json(req, 200, sandbox_to_json(sb));
	}
	if (r.n == 4 && is(&r, 3, "logs") && m == HTTP_GET)
		return send_logs(req, sb);
	if (r.n == 4 && is(&r, 3, "network") && m == HTTP_GET)
		return net_get(sb, req);
	if (r.n == 4 && is(&r, 3, "network") && m == HTTP_PUT)
		return net_put(sb, req);
	if (r.n == 4 && is(&r, 3, "execs") && m == HTTP_POST)
		return exec_create(req, sb);
	if (r.n == 4 && is(&r, 3, "snapshots") && m == HTTP_POST)
		return snapshot_create(sb, req);
	if (r.n == 4 && is(&r, 3, "mounts") && m == HTTP_POST)
		return snapshot_mount(sb, req);
	if (r.n == 4 && is(&r, 3, "unmount") && m == HTTP_POST)
		return snapshot_unmount(sb, req);
	if (r.n >= 5 && is(&r, 3, "execs")) {
		ex = exec_find(sb, r.seg[4]);
		if (!ex)
			return http_respond_error(req, 404, NULL, "no exec %.64s in %s", r.seg[4], sb->id);
		if (r.n == 5 && m == HTTP_GET)
			return http_respond_json(req, 200, exec_to_json(ex));
		if (r.n == 6 && is(&r, 5, "output") && m == HTTP_GET)
			return exec_attach_output(ex, req);
		if (r.n == 6 && is(&r, 5, "signal") && m == HTTP_POST)
			return exec_signal_call(req, ex);
	}
	http_respond_error(req, 404, NULL, "no such route");
}

static const struct http_handler complete_handler = {.complete = complete};

/* Routes that take a streamed body need their target before the body arrives. */
static bool route_streams(struct http_request *req, const struct route *r)
{
	struct sandbox *sb;
	struct exec_session *ex;
	int e;

	if (r->n < 4 || !is(r, 0, "v1") || !is(r, 1, "sandboxes"))
		return false;
	if (is(r, 3, "files") && r->n <= 5) {
		if (!(sb = lookup(req, r)))
			return true;
		files_route(sb, r->n == 5 ? r->seg[4] : "", req);
		return true;
	}
	if (r->n == 6 && is(r, 3, "execs") && is(r, 5, "stdin") && req->method == HTTP_POST) {
		if (!(sb = lookup(req, r)))
			return true;
		ex = exec_find(sb, r->seg[4]);
		if (!ex) {
			http_respond_error(req, 404, NULL, "no exec %.64s in %s", r->seg[4], sb->id);
			return true;
		}
		e = exec_attach_stdin(ex, req);
		if (e == -EBUSY)
			http_respond_error(req, 409, NULL, "exec %s's stdin is already being written", exec_id(ex));
		else if (e < 0)
			http_respond_error(req, 409, NULL, "exec %s's stdin is closed (start it with \"stdin\": true)",
					   exec_id(ex));
		return true;
	}
	return false;
}

void routes_on_headers(struct http_request *req, void *ctx)
{
	struct sandboxd *d = ctx;
	struct route r;
	bool health_call;

	health_call = !strncmp(req->url, "/v1/health", 10) && (req->url[10] == '\0' || req->url[10] == '?');
	if (!health_call) {
		req->key_name = auth_check(d->keys, req->auth, req->auth_len);
		if (!req->key_name) {
			http_respond_error(req, 401, NULL, "missing or invalid API key (Authorization: Bearer KEY)");
			return;
		}
	}
	r.d = d;
	if (split_path(req, &r) == 0 && route_streams(req, &r))
		return;
	req->handler = &complete_handler;
	req->ctx = d;
	req->body_mode = HTTP_BODY_BUFFER;
	req->body_limit = JSON_BODY_MAX;
}
