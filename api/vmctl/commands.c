/*
 * The commands that are one request and a printed reply: create, ls,
 * inspect, wait, logs, rm, terminate, pause, resume, health.
 */
#include "commands.h"
#include "http.h"
#include "output.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "parse.h"

/* The longest single wait the API allows is an hour; a minute keeps the connection fresh. */
#define WAIT_CHUNK_S 60

static const char create_usage[] =
	"usage: vmctl create [OPTIONS] [-- CMD [ARG...]]\n"
	"Starts a sandbox and prints its id alone on stdout. With -- CMD, CMD is its\n"
	"entrypoint: the sandbox ends when CMD does (see vmctl wait and vmctl logs).\n"
	"\n" VMCTL_CREATE_USAGE VMCTL_COMMON_USAGE;
static const char ls_usage[] =
	"usage: vmctl ls [--tag K=V]... [--state starting|running|finished] [--json]\n"
	"Lists the sandboxes (those that finished stay listed for an hour); with --tag,\n"
	"only those that carry every tag given.\n" VMCTL_COMMON_USAGE;
static const char inspect_usage[] =
	"usage: vmctl inspect ID [--json]\n"
	"Prints a sandbox's record, one key: value line per field. ID may be its name.\n"
	VMCTL_COMMON_USAGE;
static const char wait_usage[] =
	"usage: vmctl wait ID [--timeout S]\n"
	"Waits until the sandbox finished and exits with its returncode (124 after a\n"
	"timeout, 137 when terminated, 125 when it failed). With --timeout, gives up\n"
	"after S seconds and exits with 124 (saying so on stderr).\n" VMCTL_COMMON_USAGE;
static const char logs_usage[] =
	"usage: vmctl logs ID\n"
	"Writes the sandbox log (the entrypoint's stdout and stderr, last 1 MiB) to stdout.\n"
	VMCTL_COMMON_USAGE;
static const char rm_usage[] =
	"usage: vmctl rm ID...\n"
	"Stops the sandboxes if needed and forgets them. Prints nothing on success.\n"
	VMCTL_COMMON_USAGE;
static const char terminate_usage[] =
	"usage: vmctl terminate ID...\n"
	"Stops the sandboxes (returncode 137) and keeps their records.\n" VMCTL_COMMON_USAGE;
static const char pause_usage[] =
	"usage: vmctl pause ID...\n"
	"Pauses running sandboxes: their memory and state go to disk, their VMMs stop,\n"
	"their timeout clocks stop until they are resumed.\n" VMCTL_COMMON_USAGE;
static const char resume_usage[] =
	"usage: vmctl resume ID...\n"
	"Resumes paused sandboxes where they stopped, with their processes and files.\n" VMCTL_COMMON_USAGE;
static const char health_usage[] =
	"usage: vmctl health [--json]\n"
	"Asks sandboxd how it is (no API key needed). Exits 0 when it answers ok and its\n"
	"isolation monitor has not found a breach, 1 otherwise.\n"
	VMCTL_COMMON_USAGE;

enum { OPT_JSON = VMCTL_OPT_FIRST_OTHER, OPT_STATE, OPT_WAIT_TIMEOUT };

int vmctl_cmd_parse(struct vmctl_args *a, const char *cmd, const char *usage, int argc, char **argv,
		     const struct option *extra, int (*handle)(void *ctx, int opt, const char *arg),
		     void *ctx, int *first)
{
	/* The common four, every create option, a few more, and the end. */
	struct option opts[32] = { VMCTL_COMMON_OPTIONS };
	int n = 4, c, r;

	for (; extra && extra->name; extra++) {
		if (n >= (int)(sizeof(opts) / sizeof(opts[0])) - 1) {
			fprintf(stderr, "vmctl: %s: internal error: too many options\n", cmd);
			return VMCTL_EXIT_FAILED;
		}
		opts[n++] = *extra;
	}
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == VMCTL_OPT_HELP || c == 'h') {
			fputs(usage, stdout);
			return 0;
		}
		if (vmctl_args_common(a, c, optarg))
			continue;
		if (c == '?' || c == ':' || !handle)
			return vmctl_getopt_error(cmd, c, argv);
		r = handle(ctx, c, optarg);
		if (r)
			return VMCTL_EXIT_USAGE;
	}
	*first = optind;
	return -1;
}

/* A tunnel port into the array field; sandboxd checks duplicates and the total. */
static int add_port(const char *cmd, const char *opt, const char *field, cJSON *body, const char *arg)
{
	cJSON *list = cJSON_GetObjectItemCaseSensitive(body, field), *v;
	uint64_t n;

	if (sv_parse_u64(arg, 1, 65535, &n) < 0) {
		vmctl_usage_error(cmd, "%s wants a port 1..65535, not '%s'", opt, arg);
		return -EINVAL;
	}
	if (!list)
		list = cJSON_AddArrayToObject(body, field);
	v = list ? cJSON_CreateNumber((double)n) : NULL;
	if (!v || !cJSON_AddItemToArray(list, v)) {
		cJSON_Delete(v);
		fprintf(stderr, "vmctl: out of memory\n");
		return -EINVAL;
	}
	return 0;
}

int vmctl_create_option(const char *cmd, cJSON *body, int opt, const char *arg)
{
	static const struct {
		int opt;
		const char *field;
		const char *flag;
	} numbers[] = {
		{ VMCTL_OPT_CPU, "cpu", "--cpu" },
		{ VMCTL_OPT_MEMORY, "memory_mib", "--memory" },
		{ VMCTL_OPT_TIMEOUT, "timeout", "--timeout" },
		{ VMCTL_OPT_IDLE_TIMEOUT, "idle_timeout", "--idle-timeout" },
	}, strings[] = {
		{ VMCTL_OPT_IMAGE, "image", "--image" },
		{ VMCTL_OPT_WORKDIR, "workdir", "--workdir" },
		{ VMCTL_OPT_NAME, "name", "--name" },
		{ VMCTL_OPT_APP, "app", "--app" },
	};
	const char *obj_field = NULL, *flag = NULL;
	cJSON *obj, *v = NULL;
	uint64_t n;

	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
		if (numbers[i].opt != opt)
			continue;
		if (vmctl_parse_number(cmd, numbers[i].flag, arg, &n))
			return -EINVAL;
		cJSON_DeleteItemFromObjectCaseSensitive(body, numbers[i].field);
		v = cJSON_AddNumberToObject(body, numbers[i].field, (double)n);
		goto added;
	}
	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
		if (strings[i].opt != opt)
			continue;
		cJSON_DeleteItemFromObjectCaseSensitive(body, strings[i].field);
		v = cJSON_AddStringToObject(body, strings[i].field, arg);
		goto added;
	}
	switch (opt) {
	case VMCTL_OPT_ENV: obj_field = "env"; flag = "--env"; break;
	case VMCTL_OPT_TAG: obj_field = "tags"; flag = "--tag"; break;
	case VMCTL_OPT_CIDR_ALLOW: return vmctl_add_cidr(cmd, "--cidr-allow", body, arg);
	case VMCTL_OPT_ENCRYPTED_PORT: return add_port(cmd, "--encrypted-port", "encrypted_ports", body, arg);
	case VMCTL_OPT_UNENCRYPTED_PORT: return add_port(cmd, "--unencrypted-port", "unencrypted_ports", body, arg);
	case VMCTL_OPT_H2_PORT: return add_port(cmd, "--h2-port", "h2_ports", body, arg);
	case VMCTL_OPT_COLD_BOOT:
		cJSON_DeleteItemFromObjectCaseSensitive(body, "cold_boot");
		v = cJSON_AddTrueToObject(body, "cold_boot");
		goto added;
	case VMCTL_OPT_BLOCK_NETWORK:
	case VMCTL_OPT_RESTRICTED:
		v = opt == VMCTL_OPT_RESTRICTED ? cJSON_AddTrueToObject(body, "restricted")
						: cJSON_AddTrueToObject(body, "block_network");
		goto added;
	default:
		return 1;
	}
	obj = cJSON_GetObjectItemCaseSensitive(body, obj_field);
	if (!obj)
		obj = cJSON_AddObjectToObject(body, obj_field);
	if (!obj)
		goto nomem;
	return vmctl_parse_kv(cmd, flag, arg, obj) ? -EINVAL : 0;
added:
	if (v)
		return 0;
nomem:
	fprintf(stderr, "vmctl: out of memory\n");
	return -EINVAL;
}

int vmctl_add_cidr(const char *cmd, const char *opt, cJSON *body, const char *cidr)
{
	cJSON *list = cJSON_GetObjectItemCaseSensitive(body, "cidr_allowlist"), *v;

	if (!cidr[0]) {
		vmctl_usage_error(cmd, "%s: empty CIDR", opt);
		return -EINVAL;
	}
	if (!list)
		list = cJSON_AddArrayToObject(body, "cidr_allowlist");
	v = list ? cJSON_CreateString(cidr) : NULL;
	if (!v || !cJSON_AddItemToArray(list, v)) {
		cJSON_Delete(v);
		fprintf(stderr, "vmctl: out of memory\n");
		return -EINVAL;
	}
	return 0;
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/*
 * While a create waits, sandboxd may be building the image it asked for (the
 * first use of a built-in image takes minutes): its progress lines are shown.
 */
struct build_watch {
	const struct vmctl_client *c;
	const char *image;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	char last[512];
};

static void watch_once(struct build_watch *w)
{
	struct vmctl_req q;
	const cJSON *it;
	cJSON *reply;

	if (vmctl_request(&q, w->c, "GET", "/v1/images", NULL) || !vmctl_req_ok(&q)) {
		vmctl_req_destroy(&q);
		return;
	}
	reply = cJSON_ParseWithLength(q.body.data ? q.body.data : "", q.body.len);
	vmctl_req_destroy(&q);
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(reply, "images")) {
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
		const cJSON *prog = cJSON_GetObjectItemCaseSensitive(it, "progress");

		if (!cJSON_IsString(name) || strcmp(name->valuestring, w->image) ||
		    !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "building")))
			continue;
		if (!w->last[0])
			fprintf(stderr, "vmctl: image %s is not built yet; sandboxd is building it "
					"(minutes, the first time)\n", w->image);
		if (cJSON_IsString(prog) && strcmp(prog->valuestring, w->last)) {
			snprintf(w->last, sizeof(w->last), "%s", prog->valuestring);
			fprintf(stderr, "vmctl: building image %s: %s\n", w->image, w->last);
		}
	}
	cJSON_Delete(reply);
}

static void *watch_build(void *arg)
{
	struct build_watch *w = arg;
	struct timespec until;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 2;
		while (!w->stop && pthread_cond_timedwait(&w->cond, &w->lock, &until) == 0)
			;
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->lock);
		watch_once(w);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int vmctl_create_sandbox(const struct vmctl_client *c, const cJSON *body, bool progress,
			 const atomic_bool *cancel, char **id)
{
	struct build_watch watch = {.c = c, .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	bool watching = false;
	pthread_t watcher;
	const cJSON *image = cJSON_GetObjectItemCaseSensitive(body, "image");
	struct vmctl_req q;
	struct timespec t0;
	const cJSON *jid;
	cJSON *reply;
	int r;

	if (progress)
		fprintf(stderr, "vmctl: creating sandbox (image %s)...\n",
			cJSON_IsString(image) ? image->valuestring : "debian");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = vmctl_req_init(&q, c, "POST", "/v1/sandboxes", body);
	if (r)
		return vmctl_req_report(&q, r);
	q.cancel = cancel;
	watch.image = cJSON_IsString(image) ? image->valuestring : "debian";
	if (!strcmp(watch.image, "debian") || !strcmp(watch.image, "minimal"))
		watching = pthread_create(&watcher, NULL, watch_build, &watch) == 0;
	r = vmctl_req_perform(&q);
	if (watching) {
		pthread_mutex_lock(&watch.lock);
		watch.stop = true;
		pthread_cond_signal(&watch.cond);
		pthread_mutex_unlock(&watch.lock);
		pthread_join(watcher, NULL);
	}
	if (r || !vmctl_req_ok(&q)) {
		vmctl_req_report(&q, r);
		vmctl_req_destroy(&q);
		return r == -ECANCELED ? 130 : VMCTL_EXIT_FAILED;
	}
	reply = vmctl_req_json(&q);
	jid = cJSON_GetObjectItemCaseSensitive(reply, "id");
	if (!cJSON_IsString(jid) || !jid->valuestring[0]) {
		if (reply)
			fprintf(stderr, "vmctl: sandboxd's reply to create has no id (HTTP %ld)\n", q.status);
		cJSON_Delete(reply);
		vmctl_req_destroy(&q);
		return VMCTL_EXIT_FAILED;
	}
	*id = strdup(jid->valuestring);
	if (progress && *id)
		fprintf(stderr, "vmctl: sandbox %s ready in %.1f s\n", *id, seconds_since(&t0));
	cJSON_Delete(reply);
	vmctl_req_destroy(&q);
	if (!*id) {
		fprintf(stderr, "vmctl: out of memory\n");
		return VMCTL_EXIT_FAILED;
	}
	return 0;
}

static int create_handle(void *ctx, int opt, const char *arg)
{
	return vmctl_create_option("create", ctx, opt, arg) ? -EINVAL : 0;
}

int vmctl_cmd_create(struct vmctl_args *a, int argc, char **argv)
{
	static const struct option opts[] = { VMCTL_CREATE_OPTIONS, { 0 } };
	int dd = vmctl_find_dashdash(argc, argv), first, r;
	cJSON *body = cJSON_CreateObject(), *cmd;
	struct vmctl_client c;
	char *id = NULL;

	if (!body)
		return VMCTL_EXIT_FAILED;
	r = vmctl_cmd_parse(a, "create", create_usage, dd, argv, opts, create_handle, body, &first);
	if (r >= 0)
		goto out;
	r = VMCTL_EXIT_USAGE;
	if (first < dd) {
		vmctl_usage_error("create", "unexpected argument '%s' (a command goes after --)", argv[first]);
		goto out;
	}
	if (dd < argc) {
		if (dd + 1 == argc) {
			vmctl_usage_error("create", "nothing after --");
			goto out;
		}
		cmd = cJSON_CreateStringArray((const char *const *)argv + dd + 1, argc - dd - 1);
		if (!cmd || !cJSON_AddItemToObject(body, "command", cmd)) {
			cJSON_Delete(cmd);
			r = VMCTL_EXIT_FAILED;
			goto out;
		}
	}
	r = vmctl_client_open(&c, a, true);
	if (r)
		goto out;
	r = vmctl_create_sandbox(&c, body, a->verbose, NULL, &id);
	if (!r)
		printf("%s\n", id);
	free(id);
	vmctl_client_close(&c);
out:
	cJSON_Delete(body);
	return r;
}

/*
 * Prints the JSON reply of a GET pretty, or hands it to show, which returns
 * the exit status or -errno.
 */
static int get_and_show(const struct vmctl_args *a, const char *path, bool need_key, bool json,
			int (*show)(const cJSON *reply, bool json))
{
	cJSON *reply;
	int r = vmctl_call(a, need_key, "GET", path, NULL, &reply);

	if (r)
		return r;
	r = vmctl_print_status(show(reply, json));
	cJSON_Delete(reply);
	return r;
}

struct ls_opts {
	char *query;
	size_t len;
	bool json;
	int err;
};

/* "?tag=K=V": K and V escaped apart so that the first '=' of the value still splits them. */
static int ls_add_query(struct ls_opts *o, const char *name, const char *k, const char *v)
{
	char *ek = curl_easy_escape(NULL, k, 0), *ev = v ? curl_easy_escape(NULL, v, 0) : NULL;
	char *q = NULL;
	int r = -ENOMEM;

	if (ek && (!v || ev) &&
	    asprintf(&q, "%s%c%s=%s%s%s", o->query ? o->query : "", o->query ? '&' : '?', name, ek,
		     v ? "=" : "", v ? ev : "") >= 0) {
		free(o->query);
		o->query = q;
		r = 0;
	}
	curl_free(ek);
	curl_free(ev);
	return r;
}

static int ls_handle(void *ctx, int opt, const char *arg)
{
	struct ls_opts *o = ctx;
	const char *eq;
	char *k;
	int r;

	switch (opt) {
	case OPT_JSON: o->json = true; return 0;
	case OPT_STATE: return ls_add_query(o, "state", arg, NULL);
	case VMCTL_OPT_TAG:
		eq = strchr(arg, '=');
		if (!eq || eq == arg)
			return vmctl_usage_error("ls", "--tag: expected KEY=VALUE, got '%s'", arg);
		k = strndup(arg, (size_t)(eq - arg));
		r = k ? ls_add_query(o, "tag", k, eq + 1) : -ENOMEM;
		free(k);
		return r;
	}
	return -EINVAL;
}

static int ls_show(const cJSON *reply, bool json)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(reply, "sandboxes");

	if (json)
		return vmctl_print_json(reply);
	if (!cJSON_IsArray(list)) {
		fprintf(stderr, "vmctl: sandboxd's list has no \"sandboxes\" array\n");
		return -EPROTO;
	}
	return vmctl_print_table(list);
}

int vmctl_cmd_ls(struct vmctl_args *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tag", required_argument, NULL, VMCTL_OPT_TAG },
		{ "state", required_argument, NULL, OPT_STATE },
		{ "json", no_argument, NULL, OPT_JSON },
		{ 0 },
	};
	struct ls_opts o = { 0 };
	char *path = NULL;
	int first, r;

	r = vmctl_cmd_parse(a, "ls", ls_usage, argc, argv, opts, ls_handle, &o, &first);
	if (r >= 0)
		goto out;
	if (first < argc) {
		r = vmctl_usage_error("ls", "unexpected argument '%s'", argv[first]);
		goto out;
	}
	if (asprintf(&path, "/v1/sandboxes%s", o.query ? o.query : "") < 0) {
		path = NULL;
		r = VMCTL_EXIT_FAILED;
		goto out;
	}
	r = get_and_show(a, path, true, o.json, ls_show);
out:
	free(path);
	free(o.query);
	return r;
}

static int json_handle(void *ctx, int opt, const char *arg)
{
	(void)arg;
	if (opt != OPT_JSON)
		return -EINVAL;
	*(bool *)ctx = true;
	return 0;
}

/* Exactly one ID. Returns -1 to go on, or the exit status. */
static int one_id(const char *cmd, int first, int argc, char **argv)
{
	if (first >= argc)
		return vmctl_usage_error(cmd, "missing sandbox ID");
	if (first + 1 < argc)
		return vmctl_usage_error(cmd, "unexpected argument '%s'", argv[first + 1]);
	if (!argv[first][0])
		return vmctl_usage_error(cmd, "empty sandbox ID");
	return -1;
}

static int inspect_show(const cJSON *reply, bool json)
{
	return json ? vmctl_print_json(reply) : vmctl_print_fields(reply);
}

int vmctl_cmd_inspect(struct vmctl_args *a, int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, NULL, OPT_JSON }, { 0 } };
	bool json = false;
	char *path;
	int first, r;

	r = vmctl_cmd_parse(a, "inspect", inspect_usage, argc, argv, opts, json_handle, &json, &first);
	if (r < 0)
		r = one_id("inspect", first, argc, argv);
	if (r >= 0)
		return r;
	path = vmctl_sandbox_path(argv[first], "");
	if (!path)
		return VMCTL_EXIT_FAILED;
	r = get_and_show(a, path, true, json, inspect_show);
	free(path);
	return r;
}

static int wait_handle(void *ctx, int opt, const char *arg)
{
	uint64_t *timeout = ctx;

	if (opt != OPT_WAIT_TIMEOUT)
		return -EINVAL;
	return vmctl_parse_number("wait", "--timeout", arg, timeout);
}

/* The exit status a finished sandbox stands for. */
static int wait_status(const cJSON *sb)
{
	const cJSON *rc = cJSON_GetObjectItemCaseSensitive(sb, "returncode");

	if (!cJSON_IsNumber(rc) || rc->valuedouble < 0 || rc->valuedouble > 255)
		return VMCTL_EXIT_FAILED;
	return (int)rc->valuedouble;
}

int vmctl_cmd_wait(struct vmctl_args *a, int argc, char **argv)
{
	static const struct option opts[] = { { "timeout", required_argument, NULL, OPT_WAIT_TIMEOUT }, { 0 } };
	uint64_t timeout = UINT64_MAX, step;
	const cJSON *state;
	struct vmctl_client c;
	struct timespec t0;
	char *path, *full;
	struct vmctl_req q;
	cJSON *sb;
	double left;
	int first, r;

	r = vmctl_cmd_parse(a, "wait", wait_usage, argc, argv, opts, wait_handle, &timeout, &first);
	if (r < 0)
		r = one_id("wait", first, argc, argv);
	if (r >= 0)
		return r;
	r = vmctl_client_open(&c, a, true);
	if (r)
		return r;
	path = vmctl_sandbox_path(argv[first], "/wait");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (r = -1; r < 0 && path;) {
		left = timeout == UINT64_MAX ? WAIT_CHUNK_S : (double)timeout - seconds_since(&t0);
		/* Whole seconds, rounded up; 0 asks once more without waiting. */
		step = left <= 0 ? 0 : left >= WAIT_CHUNK_S ? WAIT_CHUNK_S : (uint64_t)(left + 0.999);
		if (asprintf(&full, "%s?timeout=%llu", path, (unsigned long long)step) < 0)
			break;
		r = vmctl_request(&q, &c, "GET", full, NULL);
		free(full);
		if (r || !vmctl_req_ok(&q)) {
			r = vmctl_req_report(&q, r);
		} else if (!(sb = vmctl_req_json(&q))) {
			r = VMCTL_EXIT_FAILED;
		} else {
			state = cJSON_GetObjectItemCaseSensitive(sb, "state");
			if (cJSON_IsString(state) && !strcmp(state->valuestring, "finished")) {
				r = wait_status(sb);
				if (a->verbose)
					fprintf(stderr, "vmctl: sandbox %s finished (returncode %d)\n",
						argv[first], r);
			} else if (step == 0) {
				fprintf(stderr, "vmctl: sandbox %s still %s after %llu s\n", argv[first],
					cJSON_IsString(state) ? state->valuestring : "running",
					(unsigned long long)timeout);
				r = 124;
			} else {
				r = -1;
			}
			cJSON_Delete(sb);
		}
		vmctl_req_destroy(&q);
	}
	if (r < 0) {
		fprintf(stderr, "vmctl: out of memory\n");
		r = VMCTL_EXIT_FAILED;
	}
	free(path);
	vmctl_client_close(&c);
	return r;
}

static int write_all(int fd, const char *data, size_t n)
{
	ssize_t w;

	while (n) {
		w = write(fd, data, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		data += w;
		n -= (size_t)w;
	}
	return 0;
}

static int logs_sink(void *ctx, const char *data, size_t n)
{
	(void)ctx;
	return write_all(STDOUT_FILENO, data, n);
}

int vmctl_cmd_logs(struct vmctl_args *a, int argc, char **argv)
{
	struct vmctl_client c;
	struct vmctl_req q;
	char *path;
	int first, r;

	r = vmctl_cmd_parse(a, "logs", logs_usage, argc, argv, NULL, NULL, NULL, &first);
	if (r < 0)
		r = one_id("logs", first, argc, argv);
	if (r >= 0)
		return r;
	r = vmctl_client_open(&c, a, true);
	if (r)
		return r;
	path = vmctl_sandbox_path(argv[first], "/logs");
	r = path ? vmctl_req_init(&q, &c, "GET", path, NULL) : -ENOMEM;
	if (!r) {
		q.sink = logs_sink;
		r = vmctl_req_perform(&q);
		if (r == -EPIPE)
			r = 0; /* `vmctl logs ID | head` */
		else if (r || !vmctl_req_ok(&q))
			r = vmctl_req_report(&q, r);
		vmctl_req_destroy(&q);
	} else {
		fprintf(stderr, "vmctl: out of memory\n");
		r = VMCTL_EXIT_FAILED;
	}
	free(path);
	vmctl_client_close(&c);
	return r;
}

/*
 * A reply that says more than its status: a fleet gateway's DELETE of a
 * sandbox whose worker is lost answers 200 with a "message" (docs/fleet.md).
 */
static void say_message(const struct vmctl_req *q, const char *id)
{
	cJSON *o = q->body.len ? vmctl_req_json(q) : NULL;
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "message");

	if (cJSON_IsString(m) && cJSON_GetObjectItemCaseSensitive(o, "deleted"))
		fprintf(stderr, "vmctl: %s: %s\n", id, m->valuestring);
	cJSON_Delete(o);
}

/* One call per ID without a reply body; every ID is tried, the status says if one failed. */
static int for_each_id(struct vmctl_args *a, const char *cmd, const char *usage, int argc, char **argv,
		       const char *method, const char *suffix)
{
	struct vmctl_client c;
	struct vmctl_req q;
	int first, r, status = 0;
	char *path;

	r = vmctl_cmd_parse(a, cmd, usage, argc, argv, NULL, NULL, NULL, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return vmctl_usage_error(cmd, "missing sandbox ID");
	for (int i = first; i < argc; i++)
		if (!argv[i][0])
			return vmctl_usage_error(cmd, "empty sandbox ID");
	r = vmctl_client_open(&c, a, true);
	if (r)
		return r;
	for (int i = first; i < argc; i++) {
		path = vmctl_sandbox_path(argv[i], suffix);
		if (!path) {
			status = VMCTL_EXIT_FAILED;
			break;
		}
		r = vmctl_request(&q, &c, method, path, NULL);
		if (r || !vmctl_req_ok(&q))
			status = vmctl_req_report(&q, r);
		else
			say_message(&q, argv[i]);
		vmctl_req_destroy(&q);
		free(path);
		/* Without a daemon the other IDs would fail the same way. */
		if (r == -EIO)
			break;
	}
	vmctl_client_close(&c);
	return status;
}

int vmctl_cmd_rm(struct vmctl_args *a, int argc, char **argv)
{
	return for_each_id(a, "rm", rm_usage, argc, argv, "DELETE", "");
}

int vmctl_cmd_terminate(struct vmctl_args *a, int argc, char **argv)
{
	return for_each_id(a, "terminate", terminate_usage, argc, argv, "POST", "/terminate");
}

int vmctl_cmd_pause(struct vmctl_args *a, int argc, char **argv)
{
	return for_each_id(a, "pause", pause_usage, argc, argv, "POST", "/pause");
}

int vmctl_cmd_resume(struct vmctl_args *a, int argc, char **argv)
{
	return for_each_id(a, "resume", resume_usage, argc, argv, "POST", "/resume");
}

static int health_show(const cJSON *reply, bool json)
{
	const cJSON *iso;
	int r = json ? vmctl_print_json(reply) : vmctl_print_fields(reply);

	if (r)
		return r;
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok")))
		return 1;
	/* A wall that did not hold at the last isolation run is not a healthy worker. */
	iso = cJSON_GetObjectItemCaseSensitive(reply, "isolation");
	if (cJSON_IsString(iso) && !strcmp(iso->valuestring, "breached")) {
		fprintf(stderr, "vmctl: the isolation monitor found a breach (sandboxd's log names the probe)\n");
		return 1;
	}
	return 0;
}

int vmctl_cmd_health(struct vmctl_args *a, int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, NULL, OPT_JSON }, { 0 } };
	bool json = false;
	int first, r;

	r = vmctl_cmd_parse(a, "health", health_usage, argc, argv, opts, json_handle, &json, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return vmctl_usage_error("health", "unexpected argument '%s'", argv[first]);
	return get_and_show(a, "/v1/health", false, json, health_show);
}
