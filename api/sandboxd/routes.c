/*
 * The REST routes of docs/api.md: one table of method, path and the status
 * of a success. A request is matched once its headers are in
 * (authentication first); routes whose body streams (stdin, file uploads and
 * downloads) start then, the others once the whole body is in. Domain code
 * answers through api_call.h and fails with -errno: every status is chosen
 * here or in api_error.c.
 */
#include "routes.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_call.h"
#include "auth.h"
#include "exec.h"
#include "files.h"
#include "fleet/fleet_worker.h"
#include "http_conn.h"
#include "images.h"
#include "ingress.h"
#include "isolation_monitor.h"
#include "log.h"
#include "metrics_scrape.h"
#include "net.h"
#include "sandbox.h"
#include "sandboxd.h"
#include "snapshots.h"
#include "tunnels.h"

#define JSON_BODY_MAX (1024 * 1024)
#define MAX_SEGMENTS 8
#define MAX_TAG_FILTERS 32
#define LOG_TAIL_MAX (1024 * 1024)
#define WAIT_DEFAULT_S 60
#define WAIT_MAX_S 3600
#define ANY_METHOD (-1)

/* A matched request: what its path named. */
struct call {
	struct http_request *req;
	struct api_call *api;
	struct sandboxd *d;
	struct sandbox *sb;      /* routes under /v1/sandboxes/ID */
	struct exec_session *ex; /* routes under .../execs/EID */
	const char *id;          /* /v1/snapshots/ID, .../connect-tokens/TID */
	const char *op;          /* .../files/OP, "" for .../files */
};

enum route_start {
	AFTER_BODY,   /* the body is buffered (JSON_BODY_MAX), then the handler runs */
	AT_HEADERS,   /* the handler sets up its own body handling */
};

struct route {
	int method;       /* enum http_method, or ANY_METHOD (the handler tells them apart) */
	const char *path; /* "*" matches one segment: a sandbox, exec, image id or a files op */
	int status;       /* of a success */
	enum route_start start;
	void (*handle)(struct call *c);
};

struct path {
	char buf[HTTP_MAX_URL];
	const char *seg[MAX_SEGMENTS];
	int n;
};

/* "/v1/sandboxes/ID/execs" -> {"v1", "sandboxes", "ID", "execs"} */
static int split_path(const char *url, struct path *p)
{
	size_t len = strcspn(url, "?");
	char *s;

	if (len >= sizeof(p->buf))
		return -1;
	memcpy(p->buf, url, len);
	p->buf[len] = '\0';
	p->n = 0;
	s = p->buf;
	while (*s == '/')
		s++;
	while (*s) {
		if (p->n == MAX_SEGMENTS)
			return -1;
		p->seg[p->n++] = s;
		s = strchr(s, '/');
		if (!s)
			break;
		*s++ = '\0';
	}
	return 0;
}

/* ---- handlers ---- */

static void reply_spec_error(struct call *c, const struct spec_error *err)
{
	api_call_fail(c->api, -EINVAL, err->field[0] ? err->field : NULL, "%s", err->message);
}

static void health(struct call *c)
{
	cJSON *o = cJSON_CreateObject();
	unsigned count, memory;

	sandbox_usage(c->d, &count, &memory);
	cJSON_AddTrueToObject(o, "ok");
	cJSON_AddStringToObject(o, "version", SANDVM_VERSION);
	cJSON_AddNumberToObject(o, "sandboxes", count);
	cJSON_AddNumberToObject(o, "memory_mib", memory);
	cJSON_AddNumberToObject(o, "max_sandboxes", c->d->max_sandboxes);
	cJSON_AddNumberToObject(o, "max_memory_mib", c->d->max_memory_mib);
	/* The isolation monitor's last verdict (docs/security.md): unknown until a run proves otherwise. */
	cJSON_AddStringToObject(o, "isolation", c->d->metrics.isolation == METRICS_ISOLATION_OK ? "ok"
						: c->d->metrics.isolation == METRICS_ISOLATION_BREACHED ? "breached"
													 : "unknown");
	if (c->d->metrics.isolation_last_run > 0)
		cJSON_AddNumberToObject(o, "isolation_last_run", c->d->metrics.isolation_last_run);
	else
		cJSON_AddNullToObject(o, "isolation_last_run");
	if (c->d->fleet)
		fleet_worker_health(c->d->fleet, o);
	api_call_ok(c->api, o);
}

/* POST /v1/selftest/isolation: an empty body or {}; answered when the run ends. */
static void selftest_isolation_run_call(struct call *c)
{
	size_t len;
	const char *body = api_call_body(c->api, &len);
	cJSON *o = NULL;

	if (len && strspn(body, " \t\r\n") != len) {
		o = cJSON_ParseWithLength(body, len);
		if (!cJSON_IsObject(o) || o->child) {
			cJSON_Delete(o);
			api_call_fail(c->api, -EINVAL, NULL, "the body is empty or {}");
			return;
		}
		cJSON_Delete(o);
	}
	isolation_monitor_run(c->d->isolation, c->api);
}

static void selftest_isolation_get_call(struct call *c)
{
	isolation_monitor_last(c->d->isolation, c->api);
}

static void metrics_call(struct call *c)
{
	metrics_scrape(c->d, c->req);
}

static void images_get(struct call *c)
{
	api_call_ok(c->api, images_to_json(c->d));
}

static void snapshots_list_call(struct call *c)
{
	api_call_ok(c->api, snapshots_list(c->d));
}

static void snapshots_get_call(struct call *c)
{
	char err[256];
	void *o;
	int r = snapshots_get(c->d, c->id, &o, err, sizeof(err));

	if (r < 0)
		return api_call_fail(c->api, r, NULL, "%s", err);
	api_call_ok(c->api, o);
}

static void snapshots_delete_call(struct call *c)
{
	char err[256];
	int r = snapshots_delete(c->d, c->id, err, sizeof(err));

	if (r < 0)
		return api_call_fail(c->api, r, NULL, "%s", err);
	api_call_ok(c->api, NULL);
}

static void sandbox_create_call(struct call *c)
{
	struct sandbox_spec spec;
	struct spec_error err;
	size_t len;
	const char *body = api_call_body(c->api, &len);

	/* In a fleet, a worker without its record in etcd is invisible to gateways: it takes no creates. */
	if (c->d->fleet && !fleet_worker_accepting(c->d->fleet)) {
		metrics_create(&c->d->metrics, METRICS_CREATE_REJECTED);
		return api_call_fail(c->api, -EAGAIN, NULL,
				     "this worker is not registered in etcd (its lease was lost or etcd does not "
				     "answer); it takes no creates until it is registered again");
	}
	if (spec_parse_sandbox(body, len, &spec, &err) < 0) {
		metrics_create(&c->d->metrics, METRICS_CREATE_REJECTED);
		return reply_spec_error(c, &err);
	}
	sandbox_create(c->d, &spec, c->api);
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

static void sandbox_list_call(struct call *c)
{
	char filters[MAX_TAG_FILTERS][HTTP_PARAM_MAX];
	char state[32];
	size_t n = http_query_params(c->req->query, "tag", filters, MAX_TAG_FILTERS);
	bool by_state = http_query_param(c->req->query, "state", state, sizeof(state));
	cJSON *o, *arr;

	for (size_t i = 0; i < n; i++)
		if (!strchr(filters[i], '='))
			return api_call_fail(c->api, -EINVAL, "tag", "tag filters are K=V");
	o = cJSON_CreateObject();
	arr = cJSON_AddArrayToObject(o, "sandboxes");
	for (const struct sandbox *sb = c->d->sandboxes; sb; sb = sb->next) {
		if (sb->deleted || !tags_match(sb, filters, n))
			continue;
		if (by_state && strcmp(sandbox_state_name(sb->state), state))
			continue;
		cJSON_AddItemToArray(arr, sandbox_to_json(sb));
	}
	api_call_ok(c->api, o);
}

static void sandbox_get_call(struct call *c)
{
	api_call_ok(c->api, sandbox_to_json(c->sb));
}

static void sandbox_delete_call(struct call *c)
{
	sandbox_delete(c->sb);
	api_call_ok(c->api, NULL);
}

static void sandbox_terminate_call(struct call *c)
{
	sandbox_terminate(c->sb, "terminated", RC_TERMINATED, "terminated through the API");
	api_call_ok(c->api, sandbox_to_json(c->sb));
}

static void sandbox_pause_call(struct call *c)
{
	sandbox_pause(c->sb, c->api);
}

static void sandbox_resume_call(struct call *c)
{
	sandbox_resume(c->sb, c->api);
}

/* The newest LOG_TAIL_MAX bytes of the console, across the VMM's rotation. */
static void sandbox_logs_call(struct call *c)
{
	char path[400], old[420];
	size_t cap = LOG_TAIL_MAX, len = 0;
	char *buf = malloc(cap);
	const char *files[2] = {old, path};

	if (!buf)
		return api_call_fail(c->api, -ENOMEM, NULL, "out of memory");
	snprintf(path, sizeof(path), "%s/output.log", c->sb->vm.dir);
	snprintf(old, sizeof(old), "%s/output.log.1", c->sb->vm.dir);
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
	http_respond(c->req, c->req->route_status, "text/plain; charset=utf-8", buf, len);
	free(buf);
}

/* ---- GET .../wait: answered when the sandbox finishes or the timeout passes ---- */

struct waiter {
	struct sandbox_watch watch; /* first: the watch is the waiter */
	struct sandbox *sb;
	struct http_request *req;
	uv_timer_t timer;
};

static void waiter_closed(uv_handle_t *h)
{
	struct waiter *w = h->data;

	sandbox_unref(w->sb);
	free(w);
}

static void waiter_end(struct waiter *w, bool reply)
{
	sandbox_unwatch(w->sb, &w->watch);
	if (reply)
		api_call_ok(api_call_of(w->req), sandbox_to_json(w->sb));
	http_conn_unref(w->req->conn);
	uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void waiter_finished(struct sandbox_watch *watch)
{
	waiter_end((struct waiter *)watch, true);
}

static void waiter_timeout(uv_timer_t *t)
{
	waiter_end(t->data, true);
}

static void waiter_aborted(struct http_request *req)
{
	waiter_end(req->ctx, false);
}

static const struct http_handler waiter_handler = {.aborted = waiter_aborted};

static void sandbox_wait_call(struct call *c)
{
	char value[32];
	unsigned long t = WAIT_DEFAULT_S;
	struct waiter *w;

	if (http_query_param(c->req->query, "timeout", value, sizeof(value))) {
		char *end;

		t = strtoul(value, &end, 10);
		if (!*value || *end || t > WAIT_MAX_S)
			return api_call_fail(c->api, -EINVAL, "timeout", "timeout must be 0..%d seconds", WAIT_MAX_S);
		if (t == 0)
			t = WAIT_DEFAULT_S;
	}
	if (c->sb->state == SANDBOX_FINISHED)
		return api_call_ok(c->api, sandbox_to_json(c->sb));
	w = calloc(1, sizeof(*w));
	if (!w)
		return api_call_fail(c->api, -ENOMEM, NULL, "out of memory");
	w->sb = c->sb;
	w->req = c->req;
	w->watch.finished = waiter_finished;
	sandbox_ref(c->sb);
	http_conn_ref(c->req->conn);
	c->req->handler = &waiter_handler;
	c->req->ctx = w;
	uv_timer_init(c->d->loop, &w->timer);
	w->timer.data = w;
	uv_timer_start(&w->timer, waiter_timeout, (uint64_t)t * 1000, 0);
	sandbox_watch(c->sb, &w->watch);
}

static void network_get_call(struct call *c)
{
	net_get(c->sb, c->api);
}

static void network_put_call(struct call *c)
{
	net_put(c->sb, c->api);
}

static void snapshot_create_call(struct call *c)
{
	snapshot_create(c->sb, c->api);
}

static void mount_call(struct call *c)
{
	snapshot_mount(c->sb, c->api);
}

static void unmount_call(struct call *c)
{
	snapshot_unmount(c->sb, c->api);
}

static void exec_create_call(struct call *c)
{
	struct exec_spec spec;
	struct spec_error err;
	struct exec_session *ex;
	char msg[600];
	size_t len;
	const char *body = api_call_body(c->api, &len);
	cJSON *o;
	int r;

	if (spec_parse_exec(body, len, &spec, &err) < 0)
		return reply_spec_error(c, &err);
	if (c->sb->spec.restricted && c->sb->execs_started) {
		spec_exec_free(&spec);
		return api_call_fail(c->api, -EBUSY, NULL, "a restricted sandbox runs one exec only");
	}
	r = exec_start(c->sb, &spec, false, &ex, msg, sizeof(msg));
	spec_exec_free(&spec);
	if (r < 0)
		return api_call_fail(c->api, r == -ESRCH ? r : -EIO, NULL, "%s", msg);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "id", exec_id(ex));
	api_call_ok(c->api, o);
}

static void exec_get_call(struct call *c)
{
	api_call_ok(c->api, exec_to_json(c->ex));
}

static void exec_output_call(struct call *c)
{
	if (exec_attach_output(c->ex, c->req) < 0)
		api_call_fail(c->api, -EBUSY, NULL, "exec %s's output is already being read", exec_id(c->ex));
}

static void exec_signal_call(struct call *c)
{
	size_t len;
	const char *body = api_call_body(c->api, &len);
	cJSON *j = cJSON_ParseWithLength(body, len);
	const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "signal");
	int sig = cJSON_IsNumber(s) ? (int)s->valuedouble : 0;
	bool valid = cJSON_IsObject(j) && cJSON_IsNumber(s) && s->valuedouble == sig && sig >= 1 && sig <= 64 &&
		     cJSON_GetArraySize(j) == 1;

	cJSON_Delete(j);
	if (!valid)
		return api_call_fail(c->api, -EINVAL, "signal", "body must be {\"signal\": N} with N in 1..64");
	if (exec_signal(c->ex, sig) < 0)
		return api_call_fail(c->api, -ESRCH, NULL, "exec %s has ended", exec_id(c->ex));
	api_call_ok(c->api, NULL);
}

static void exec_stdin_call(struct call *c)
{
	int r = exec_attach_stdin(c->ex, c->req);

	if (r == -EBUSY)
		api_call_fail(c->api, r, NULL, "exec %s's stdin is already being written", exec_id(c->ex));
	else if (r < 0)
		api_call_fail(c->api, -EBUSY, NULL, "exec %s's stdin is closed (start it with \"stdin\": true)",
			      exec_id(c->ex));
}

static void connect_token_create_call(struct call *c)
{
	ingress_token_create(c->sb, c->api);
}

static void connect_token_list_call(struct call *c)
{
	ingress_token_list(c->sb, c->api);
}

static void connect_token_delete_call(struct call *c)
{
	ingress_token_delete(c->sb, c->id, c->api);
}

static void tunnels_call(struct call *c)
{
	tunnels_list(c->sb, c->api);
}

static void files_call(struct call *c)
{
	files_route(c->sb, c->op, c->req);
}

/* ---- the table ---- */

static const struct route routes[] = {
	{HTTP_GET, "/v1/health", 200, AFTER_BODY, health},
	{HTTP_GET, "/metrics", 200, AFTER_BODY, metrics_call},
	{HTTP_POST, "/v1/selftest/isolation", 200, AFTER_BODY, selftest_isolation_run_call},
	{HTTP_GET, "/v1/selftest/isolation", 200, AFTER_BODY, selftest_isolation_get_call},
	{HTTP_GET, "/v1/images", 200, AFTER_BODY, images_get},
	{HTTP_GET, "/v1/snapshots", 200, AFTER_BODY, snapshots_list_call},
	{HTTP_GET, "/v1/snapshots/*", 200, AFTER_BODY, snapshots_get_call},
	{HTTP_DELETE, "/v1/snapshots/*", 204, AFTER_BODY, snapshots_delete_call},
	{HTTP_POST, "/v1/sandboxes", 201, AFTER_BODY, sandbox_create_call},
	{HTTP_GET, "/v1/sandboxes", 200, AFTER_BODY, sandbox_list_call},
	{HTTP_GET, "/v1/sandboxes/*", 200, AFTER_BODY, sandbox_get_call},
	{HTTP_DELETE, "/v1/sandboxes/*", 204, AFTER_BODY, sandbox_delete_call},
	{HTTP_GET, "/v1/sandboxes/*/wait", 200, AFTER_BODY, sandbox_wait_call},
	{HTTP_POST, "/v1/sandboxes/*/terminate", 200, AFTER_BODY, sandbox_terminate_call},
	{HTTP_POST, "/v1/sandboxes/*/pause", 200, AFTER_BODY, sandbox_pause_call},
	{HTTP_POST, "/v1/sandboxes/*/resume", 200, AFTER_BODY, sandbox_resume_call},
	{HTTP_GET, "/v1/sandboxes/*/logs", 200, AFTER_BODY, sandbox_logs_call},
	{HTTP_GET, "/v1/sandboxes/*/network", 200, AFTER_BODY, network_get_call},
	{HTTP_PUT, "/v1/sandboxes/*/network", 200, AFTER_BODY, network_put_call},
	{HTTP_POST, "/v1/sandboxes/*/snapshots", 201, AFTER_BODY, snapshot_create_call},
	{HTTP_POST, "/v1/sandboxes/*/mounts", 200, AFTER_BODY, mount_call},
	{HTTP_POST, "/v1/sandboxes/*/unmount", 204, AFTER_BODY, unmount_call},
	{HTTP_POST, "/v1/sandboxes/*/execs", 201, AFTER_BODY, exec_create_call},
	{HTTP_GET, "/v1/sandboxes/*/execs/*", 200, AFTER_BODY, exec_get_call},
	{HTTP_GET, "/v1/sandboxes/*/execs/*/output", 200, AFTER_BODY, exec_output_call},
	{HTTP_POST, "/v1/sandboxes/*/execs/*/signal", 204, AFTER_BODY, exec_signal_call},
	{HTTP_POST, "/v1/sandboxes/*/execs/*/stdin", 204, AT_HEADERS, exec_stdin_call},
	{HTTP_POST, "/v1/sandboxes/*/connect-tokens", 201, AFTER_BODY, connect_token_create_call},
	{HTTP_GET, "/v1/sandboxes/*/connect-tokens", 200, AFTER_BODY, connect_token_list_call},
	{HTTP_DELETE, "/v1/sandboxes/*/connect-tokens/*", 204, AFTER_BODY, connect_token_delete_call},
	{HTTP_GET, "/v1/sandboxes/*/tunnels", 200, AFTER_BODY, tunnels_call},
	{HTTP_GET, "/v1/sandboxes/*/files", 200, AT_HEADERS, files_call},
	{HTTP_PUT, "/v1/sandboxes/*/files", 204, AT_HEADERS, files_call},
	{HTTP_DELETE, "/v1/sandboxes/*/files", 204, AT_HEADERS, files_call},
	{HTTP_GET, "/v1/sandboxes/*/files/stat", 200, AT_HEADERS, files_call},
	{HTTP_GET, "/v1/sandboxes/*/files/list", 200, AT_HEADERS, files_call},
	{HTTP_POST, "/v1/sandboxes/*/files/mkdir", 204, AT_HEADERS, files_call},
	/* Any other method or call on files: files.c answers 405. */
	{ANY_METHOD, "/v1/sandboxes/*/files", 0, AT_HEADERS, files_call},
	{ANY_METHOD, "/v1/sandboxes/*/files/*", 0, AT_HEADERS, files_call},
};

/* Does path p match the route's pattern (segment by segment, "*" any one)? */
static bool path_matches(const char *pattern, const struct path *p)
{
	int i = 0;

	while (*pattern == '/')
		pattern++;
	for (; *pattern; i++) {
		size_t len = strcspn(pattern, "/");

		if (i == p->n)
			return false;
		if (!(len == 1 && *pattern == '*') && (strlen(p->seg[i]) != len || memcmp(p->seg[i], pattern, len)))
			return false;
		pattern += len;
		while (*pattern == '/')
			pattern++;
	}
	return i == p->n;
}

static const struct route *route_find(const struct path *p, int method)
{
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if ((routes[i].method == ANY_METHOD || routes[i].method == method) && path_matches(routes[i].path, p))
			return &routes[i];
	return NULL;
}

/* Resolves the ids a path names; false when one names nothing (answered 404). */
static bool resolve(struct call *c, const struct path *p)
{
	if (p->n >= 3 && !strcmp(p->seg[1], "snapshots"))
		c->id = p->seg[2];
	if (p->n < 3 || strcmp(p->seg[1], "sandboxes"))
		return true;
	c->sb = sandbox_find(c->d, p->seg[2]);
	if (!c->sb) {
		api_call_fail(c->api, -ENOENT, NULL, "no sandbox %.64s", p->seg[2]);
		return false;
	}
	if (p->n >= 5 && !strcmp(p->seg[3], "connect-tokens"))
		c->id = p->seg[4];
	if (p->n >= 5 && !strcmp(p->seg[3], "files"))
		c->op = p->seg[4];
	else if (p->n >= 4 && !strcmp(p->seg[3], "files"))
		c->op = "";
	if (p->n >= 5 && !strcmp(p->seg[3], "execs")) {
		c->ex = exec_find(c->sb, p->seg[4]);
		if (!c->ex) {
			api_call_fail(c->api, -ENOENT, NULL, "no exec %.64s in %s", p->seg[4], c->sb->id);
			return false;
		}
	}
	return true;
}

/* Matches req again (its path is only borrowed) and runs the route's handler. */
static void dispatch(struct http_request *req, struct sandboxd *d)
{
	struct call c = {.req = req, .api = api_call_of(req), .d = d};
	struct path p;
	const struct route *rt = split_path(req->url, &p) == 0 ? route_find(&p, req->method) : NULL;

	if (!rt) {
		http_respond_error(req, 404, NULL, "no such route");
		return;
	}
	req->route_status = rt->status;
	if (resolve(&c, &p))
		rt->handle(&c);
}

static void complete(struct http_request *req)
{
	dispatch(req, req->ctx);
}

static const struct http_handler complete_handler = {.complete = complete};

void routes_on_headers(struct http_request *req, void *ctx)
{
	struct sandboxd *d = ctx;
	struct path p;
	const struct route *rt;
	bool health_call;

	health_call = !strncmp(req->url, "/v1/health", 10) && (req->url[10] == '\0' || req->url[10] == '?');
	if (!health_call) {
		req->key_name = auth_check(d->keys, req->auth, req->auth_len);
		if (!req->key_name) {
			http_respond_error(req, 401, NULL, "missing or invalid API key (Authorization: Bearer KEY)");
			return;
		}
	}
	rt = split_path(req->url, &p) == 0 ? route_find(&p, req->method) : NULL;
	if (rt && rt->start == AT_HEADERS)
		return dispatch(req, d);
	req->handler = &complete_handler;
	req->ctx = d;
	req->body_mode = HTTP_BODY_BUFFER;
	req->body_limit = JSON_BODY_MAX;
}
