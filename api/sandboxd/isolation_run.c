/*
 * The isolation monitor's runs (isolation_monitor.h). A run is a chain of
 * asynchronous steps on the loop: create the canary (an internal API call,
 * so it starts exactly as a client's sandbox does), read its VMM's firewall
 * counters (a worker thread), exec the probe program through the agent,
 * read the counters again, judge (isolation_verdict.c), and end. A
 * deadline timer bounds the whole; whatever ends the run (a verdict, a
 * failed step, the deadline) goes through isolation_run_finish() once,
 * which deletes the canary and has the verdict recorded and every caller
 * waiting answered. The run struct is counted: the create call, a worker
 * job and the deadline timer each hold it, so a late answer never lands in
 * freed memory.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent_client.h"
#include "agent_conn.h"
#include "api_call.h"
#include "isolation_monitor_part.h"
#include "log.h"
#include "metrics.h"
#include "sandbox.h"
#include "sandboxd.h"
#include "spec.h"

#define CANARY_MEMORY_MIB 128
#define CANARY_TIMEOUT_S 60
#define EXEC_CONNECT_MS 10000
#define EXEC_DEADLINE_MS 30000
#define COUNTERS_TIMEOUT_MS 5000
#define ENV_MAX 64

static void run_unref(struct isolation_run *r)
{
	if (--r->refs)
		return;
	free(r->out);
	free(r);
}

/* ---- the end ---- */

static void on_deadline_closed(uv_handle_t *h)
{
	run_unref(h->data);
}

void isolation_run_finish(struct isolation_run *r)
{
	struct isolation_monitor *m = r->m;

	if (r->done)
		return;
	r->done = true;
	r->ended = sandboxd_wall_time();
	if (r->result != ISOLATION_RESULT_OK && r->result != ISOLATION_RESULT_BREACHED)
		r->result = ISOLATION_RESULT_UNKNOWN;
	if (r->ac) {
		agent_conn_cancel(r->ac);
		r->ac = NULL;
	}
	if (r->sb) {
		/* Always: the canary never outlives its run. */
		sandbox_delete(r->sb);
		sandbox_unref(r->sb);
		r->sb = NULL;
	}
	if (r->deadline_open) {
		r->deadline_open = false;
		uv_timer_stop(&r->deadline);
		uv_close((uv_handle_t *)&r->deadline, on_deadline_closed);
	}
	if (!m)
		return;
	m->run = NULL;
	isolation_run_report(m, r);
}

void isolation_run_fail(struct isolation_run *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
	r->result = ISOLATION_RESULT_UNKNOWN;
	isolation_run_finish(r);
}

static void on_deadline(uv_timer_t *t)
{
	struct isolation_run *r = t->data;

	isolation_run_fail(r, "the run did not end within %u s (%s)", ISOLATION_RUN_DEADLINE_MS / 1000,
			   r->create ? "the canary did not start"
			   : r->ac   ? "the probe program did not end"
				     : "reading counters");
}

/* ---- the VMM's firewall counters, read on a worker ---- */

static void read_counters(struct isolation_run *r, bool after);

static void counters_work(uv_work_t *w)
{
	struct isolation_run *r = w->data;

	r->call_r = metrics_fw_read(r->control, COUNTERS_TIMEOUT_MS, r->reply, sizeof(r->reply), &r->fw_read);
}

static void exec_probes(struct isolation_run *r);

static void counters_done(uv_work_t *w, int status)
{
	struct isolation_run *r = w->data;
	struct metrics_fw fw = {0};
	bool ok = status == 0 && r->call_r == 0;

	if (ok)
		fw = r->fw_read;
	r->work_busy = false;
	if (!r->done) {
		if (!r->after) {
			r->before = fw;
			r->before_ok = ok;
			exec_probes(r);
		} else {
			r->fw_after = fw;
			isolation_run_judge(r, r->before_ok && ok);
		}
	}
	run_unref(r);
}

static void read_counters(struct isolation_run *r, bool after)
{
	r->after = after;
	snprintf(r->control, sizeof(r->control), "%s", r->sb->vm.control);
	r->work.data = r;
	r->refs++;
	r->work_busy = true;
	if (uv_queue_work(r->m->d->loop, &r->work, counters_work, counters_done) < 0) {
		r->work_busy = false;
		r->call_r = -EIO;
		r->refs--;
		if (!after) {
			r->before_ok = false;
			exec_probes(r);
		} else {
			isolation_run_judge(r, false);
		}
	}
}

/* ---- the probe program ---- */

static void on_exec_started(void *ctx, uint32_t pid)
{
	(void)ctx;
	(void)pid;
}

static void on_exec_output(void *ctx, bool is_stdout, const uint8_t *data, size_t len)
{
	struct isolation_run *r = ctx;

	if (is_stdout) {
		size_t room = ISOLATION_REPORT_MAX - r->out_len;

		if (len > room)
			r->out_over = true;
		memcpy(r->out + r->out_len, data, len < room ? len : room);
		r->out_len += len < room ? len : room;
	} else {
		/* The last bytes of stderr, for the reason of a failed run. */
		size_t keep = len < ISOLATION_STDERR_TAIL - 1 ? len : ISOLATION_STDERR_TAIL - 1;

		if (r->err_len + keep > ISOLATION_STDERR_TAIL - 1) {
			size_t drop = r->err_len + keep - (ISOLATION_STDERR_TAIL - 1);

			memmove(r->err_tail, r->err_tail + drop, r->err_len - drop);
			r->err_len -= drop;
		}
		memcpy(r->err_tail + r->err_len, data + len - keep, keep);
		r->err_len += keep;
	}
	agent_conn_consumed(r->ac, is_stdout, len);
}

/* The stderr tail as printable text. */
static void err_text(const struct isolation_run *r, char *out, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < r->err_len && n + 1 < cap; i++) {
		char c = r->err_tail[i];

		out[n++] = c >= 0x20 && c < 0x7f ? c : ' ';
	}
	out[n] = '\0';
}

static void on_exec_ended(void *ctx, int rc, const struct agent_exec_status *st, const char *error)
{
	struct isolation_run *r = ctx;
	char tail[ISOLATION_STDERR_TAIL];
	int code;

	r->ac = NULL;
	if (r->done)
		return;
	if (rc < 0) {
		isolation_run_fail(r, "the probe program could not run: %s", error && error[0] ? error : strerror(-rc));
		return;
	}
	code = agent_exec_status_code(st);
	if (code != 0) {
		err_text(r, tail, sizeof(tail));
		isolation_run_fail(r, "the probe program exited with status %d%s%s", code, tail[0] ? ": " : "", tail);
		return;
	}
	read_counters(r, true);
}

static const struct agent_conn_ops exec_ops = {
	.started = on_exec_started,
	.output = on_exec_output,
	.ended = on_exec_ended,
};

static void exec_probes(struct isolation_run *r)
{
	const char *argv[ISOLATION_PROBES_MAX + 4], *env[ENV_MAX];
	struct agent_conn_config cfg = {
		.vsock_path = r->sb->vm.vsock,
		.port = AGENT_CLIENT_PORT,
		.connect_ms = EXEC_CONNECT_MS,
		.deadline_ms = EXEC_DEADLINE_MS + 2000,
	};
	struct agent_exec_request rq = {0};
	char timeout[16];
	unsigned n = 0, e = 0;
	int rc;

	snprintf(timeout, sizeof(timeout), "%d", ISOLATION_PROBE_TIMEOUT_MS);
	argv[n++] = ISOLATION_PROBE_PROGRAM;
	argv[n++] = "--timeout-ms";
	argv[n++] = timeout;
	for (unsigned i = 0; i < r->plan.count; i++)
		argv[n++] = r->plan.probes[i].spec;
	argv[n] = NULL;
	for (; agent_client_default_env[e] && e < ENV_MAX - 2; e++)
		env[e] = agent_client_default_env[e];
	if (r->m->test_env[0])
		env[e++] = r->m->test_env;
	env[e] = NULL;
	rq.argv = argv;
	rq.env = env;
	rq.workdir = "/";
	rq.timeout_ms = EXEC_DEADLINE_MS;
	rq.output_limit = 2 * (uint64_t)ISOLATION_REPORT_MAX;
	r->out = malloc(ISOLATION_REPORT_MAX);
	if (!r->out) {
		isolation_run_fail(r, "out of memory");
		return;
	}
	rc = agent_conn_exec(r->m->d->loop, &cfg, &rq, &exec_ops, r, &r->ac);
	if (rc < 0)
		isolation_run_fail(r, "the probe program could not be started: %s", strerror(-rc));
}

/* ---- the canary ---- */

static void canary_ready(struct isolation_run *r, struct sandbox *sb)
{
	r->sb = sb;
	sandbox_ref(sb);
	snprintf(r->canary, sizeof(r->canary), "%s", sb->id);
	isolation_run_plan(r);
	read_counters(r, false);
}

static void on_create_ok(void *ctx, cJSON *body)
{
	struct isolation_run *r = ctx;
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(body, "id");
	struct sandbox *sb = NULL;

	if (r->m && cJSON_IsString(id))
		sb = sandbox_find(r->m->d, id->valuestring);
	api_call_internal_drop(r->create);
	r->create = NULL;
	if (sb && !r->done) {
		canary_ready(r, sb);
	} else if (sb) {
		sandbox_delete(sb); /* the run ended while its canary started */
	} else if (!r->done) {
		isolation_run_fail(r, "the canary started but cannot be found");
	}
	cJSON_Delete(body);
	run_unref(r);
}

static void on_create_fail(void *ctx, int err, const char *message)
{
	struct isolation_run *r = ctx;

	(void)err;
	api_call_internal_drop(r->create);
	r->create = NULL;
	if (!r->done)
		isolation_run_fail(r, "the canary did not start: %s", message);
	run_unref(r);
}

static const struct api_call_sink create_sink = {
	.ok = on_create_ok,
	.fail = on_create_fail,
};

static void start_canary(struct isolation_run *r)
{
	struct sandbox_spec spec;
	struct spec_error err;
	char name[64];
	cJSON *o = cJSON_CreateObject(), *tags;

	/* Unique beyond this daemon's life: a canary of an earlier one may still be listed. */
	snprintf(name, sizeof(name), "isolation-canary-%lld-%u", (long long)r->started, r->seq);
	if (!o || !cJSON_AddStringToObject(o, "image", "minimal") ||
	    !cJSON_AddNumberToObject(o, "memory_mib", CANARY_MEMORY_MIB) || !cJSON_AddNumberToObject(o, "cpu", 1) ||
	    !cJSON_AddNumberToObject(o, "timeout", CANARY_TIMEOUT_S) || !cJSON_AddStringToObject(o, "name", name) ||
	    !(tags = cJSON_AddObjectToObject(o, "tags")) || !cJSON_AddStringToObject(tags, "sandvm.role", "isolation-canary")) {
		cJSON_Delete(o);
		isolation_run_fail(r, "out of memory");
		return;
	}
	if (spec_sandbox_from_json(o, &spec, &err) < 0) {
		isolation_run_fail(r, "the canary's spec was refused: %s", err.message);
		return;
	}
	spec.isolation_canary = true;
	r->create = api_call_internal_new(&create_sink, r);
	if (!r->create) {
		spec_sandbox_free(&spec);
		isolation_run_fail(r, "out of memory");
		return;
	}
	r->refs++; /* the create's, until it answers */
	sandbox_create(r->m->d, &spec, r->create);
}

struct isolation_run *isolation_run_begin(struct isolation_monitor *m)
{
	struct isolation_run *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->m = m;
	r->refs = 1; /* the monitor's, while it is in flight; the deadline timer's close gives it back */
	r->seq = ++m->seq;
	r->started = sandboxd_wall_time();
	r->result = ISOLATION_RESULT_UNKNOWN;
	m->run = r;
	uv_timer_init(m->d->loop, &r->deadline);
	r->deadline.data = r;
	r->deadline_open = true;
	uv_timer_start(&r->deadline, on_deadline, ISOLATION_RUN_DEADLINE_MS, 0);
	sv_info("isolation: run %u starts a canary", r->seq);
	start_canary(r);
	return r;
}
