/*
 * The isolation monitor's runs (isolation_monitor.h). A run is a chain of
 * asynchronous steps on the loop: create the canary (an internal API call,
 * so it starts exactly as a client's sandbox does), read its VMM's firewall
 * counters (a worker thread), exec the probe program through the agent,
 * read the counters again, judge, and end. A deadline timer bounds the
 * whole; whatever ends the run (a verdict, a failed step, the deadline)
 * goes through finish() once, which deletes the canary and answers every
 * caller waiting. The run struct is counted: the create call, a worker job
 * and the deadline timer each hold it, so a late answer never lands in
 * freed memory.
 */
#include "isolation_monitor.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent_client.h"
#include "agent_conn.h"
#include "api_call.h"
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
#define STDERR_TAIL 200
#define ENV_MAX 64

struct waiter {
	struct waiter *next;
	struct api_call *call;
};

struct run {
	struct isolation_monitor *m; /* NULL once the monitor is gone */
	unsigned refs;
	bool done;
	unsigned seq;
	double started, ended;
	struct api_call *create; /* the canary's create, until it answered */
	struct sandbox *sb;      /* the canary once ready (a reference) */
	char canary[32];
	struct agent_conn *ac;
	struct isolation_plan plan;
	struct isolation_report rep;
	char *out;      /* the probe program's stdout, ISOLATION_REPORT_MAX at most */
	size_t out_len;
	bool out_over;
	char err_tail[STDERR_TAIL];
	size_t err_len;
	uv_work_t work;
	bool work_busy;
	bool after; /* the job reads the counters after the exec */
	char control[320];
	char reply[65536];
	int call_r;
	struct metrics_fw fw_read, before, fw_after; /* fw_read: the worker job's reading */
	bool before_ok;
	uv_timer_t deadline;
	bool deadline_open;
	enum isolation_result result;
	char reason[600];
	struct waiter *waiters;
};

struct isolation_monitor {
	struct sandboxd *d;
	struct isolation_monitor_config cfg;
	uv_timer_t timer;
	bool timer_on;
	struct run *run; /* in flight */
	unsigned seq;
	struct cJSON *last; /* the last finished run's object */
	struct isolation_endpoint listeners[ISOLATION_LISTENERS_MAX];
	unsigned nlisteners;
	struct isolation_secret secrets[ISOLATION_SECRETS_MAX];
	unsigned nsecrets;
	char test_env[512];           /* SANDVM_TEST_ISOLATION_CANARY_ENV: NAME=VALUE, "" when unset */
	char test_allow_private[64];  /* SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE: a CIDR, "" when unset */
};

static void run_unref(struct run *r)
{
	if (--r->refs)
		return;
	free(r->out);
	free(r);
}

/* ---- the end ---- */

static cJSON *time_json(double t)
{
	char text[32];

	snprintf(text, sizeof(text), "%.6f", t);
	return cJSON_CreateRaw(text);
}

static cJSON *run_json(const struct run *r)
{
	cJSON *o = cJSON_CreateObject(), *probes;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "result", isolation_result_word(r->result));
	if (r->reason[0])
		cJSON_AddStringToObject(o, "reason", r->reason);
	else
		cJSON_AddNullToObject(o, "reason");
	cJSON_AddItemToObject(o, "started", time_json(r->started));
	cJSON_AddItemToObject(o, "ended", time_json(r->ended));
	if (r->canary[0])
		cJSON_AddStringToObject(o, "canary", r->canary);
	else
		cJSON_AddNullToObject(o, "canary");
	probes = cJSON_AddArrayToObject(o, "probes");
	for (unsigned i = 0; probes && i < r->rep.count; i++) {
		const struct isolation_probe *p = &r->rep.probes[i];
		cJSON *po = cJSON_CreateObject();

		if (!po)
			break;
		cJSON_AddStringToObject(po, "name", p->name);
		cJSON_AddStringToObject(po, "expected", isolation_outcome_word(p->expected));
		cJSON_AddStringToObject(po, "observed", isolation_outcome_word(p->observed));
		cJSON_AddStringToObject(po, "verdict", isolation_verdict_word(p->verdict));
		cJSON_AddStringToObject(po, "detail", p->detail);
		cJSON_AddItemToArray(probes, po);
	}
	return o;
}

static void record_metrics(struct isolation_monitor *m, const struct run *r)
{
	struct metrics *mt = &m->d->metrics;
	enum metrics_isolation s = r->result == ISOLATION_RESULT_OK	    ? METRICS_ISOLATION_OK
				   : r->result == ISOLATION_RESULT_BREACHED ? METRICS_ISOLATION_BREACHED
									    : METRICS_ISOLATION_UNKNOWN;

	mt->isolation_runs[s]++;
	mt->isolation_probe_failures += r->rep.breached;
	mt->isolation = s;
	mt->isolation_last_run = r->ended;
	mt->isolation_probes = r->rep.count;
	mt->isolation_breached = r->rep.breached;
}

static void on_deadline_closed(uv_handle_t *h)
{
	run_unref(h->data);
}

/* The run ends with r->result and r->reason: once, whatever step ends it. */
static void finish(struct run *r)
{
	struct isolation_monitor *m = r->m;
	cJSON *o;

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
	record_metrics(m, r);
	for (unsigned i = 0; i < r->rep.count; i++)
		if (r->rep.probes[i].verdict == ISOLATION_BREACHED)
			sv_err("isolation: breached: probe %s expected %s, observed %s: %s", r->rep.probes[i].name,
			       isolation_outcome_word(r->rep.probes[i].expected),
			       isolation_outcome_word(r->rep.probes[i].observed),
			       r->rep.probes[i].detail[0] ? r->rep.probes[i].detail : "(no detail)");
	if (r->result == ISOLATION_RESULT_UNKNOWN)
		sv_warn("isolation: unknown (%u probes, %u failed) canary=%s: %s", r->rep.count, r->rep.failed,
			r->canary[0] ? r->canary : "none", r->reason[0] ? r->reason : "a probe proved nothing");
	else
		sv_info("isolation: %s (%u probes, %u breached) canary=%s ms=%.0f", isolation_result_word(r->result),
			r->rep.count, r->rep.breached, r->canary, (r->ended - r->started) * 1000);
	o = run_json(r);
	cJSON_Delete(m->last);
	m->last = o;
	while (r->waiters) {
		struct waiter *w = r->waiters;

		r->waiters = w->next;
		if (!api_call_gone(w->call)) {
			if (o)
				api_call_ok(w->call, cJSON_Duplicate(o, 1));
			else
				api_call_fail(w->call, -ENOMEM, NULL, "out of memory");
		}
		api_call_release(w->call);
		free(w);
	}
}

static void __attribute__((format(printf, 2, 3))) fail_run(struct run *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
	r->result = ISOLATION_RESULT_UNKNOWN;
	finish(r);
}

static void on_deadline(uv_timer_t *t)
{
	struct run *r = t->data;

	fail_run(r, "the run did not end within %u s (%s)", ISOLATION_RUN_DEADLINE_MS / 1000,
		 r->create ? "the canary did not start" : r->ac ? "the probe program did not end" : "reading counters");
}

/* ---- the VMM's firewall counters, read on a worker ---- */

static void read_counters(struct run *r, bool after);

static void counters_work(uv_work_t *w)
{
	struct run *r = w->data;

	r->call_r = metrics_fw_read(r->control, COUNTERS_TIMEOUT_MS, r->reply, sizeof(r->reply), &r->fw_read);
}

static void judge(struct run *r, bool known);
static void exec_probes(struct run *r);

static void counters_done(uv_work_t *w, int status)
{
	struct run *r = w->data;
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
			judge(r, r->before_ok && ok);
		}
	}
	run_unref(r);
}

static void read_counters(struct run *r, bool after)
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
			judge(r, false);
		}
	}
}

/* ---- the probe program ---- */

static void judge(struct run *r, bool known)
{
	char err[200];

	if (r->out_over) {
		fail_run(r, "the probe report is longer than %d bytes", ISOLATION_REPORT_MAX);
		return;
	}
	if (isolation_report_parse(r->out, r->out_len, &r->rep, err, sizeof(err)) < 0) {
		fail_run(r, "the probe report was refused: %s", err);
		return;
	}
	if (isolation_plan_check(&r->plan, &r->rep, err, sizeof(err)) < 0) {
		/* Nothing of it counts: not even its breaches, which a guest could make up. */
		memset(&r->rep, 0, sizeof(r->rep));
		fail_run(r, "the probe report was refused: %s", err);
		return;
	}
	isolation_judge_spoof(&r->rep, &r->before, &r->fw_after, known);
	r->result = r->rep.result;
	if (r->result == ISOLATION_RESULT_UNKNOWN)
		snprintf(r->reason, sizeof(r->reason), "%u of %u probes proved nothing (an error, or the peer "
			 "not reached)", r->rep.failed, r->rep.count);
	finish(r);
}

static void on_exec_started(void *ctx, uint32_t pid)
{
	(void)ctx;
	(void)pid;
}

static void on_exec_output(void *ctx, bool is_stdout, const uint8_t *data, size_t len)
{
	struct run *r = ctx;

	if (is_stdout) {
		size_t room = ISOLATION_REPORT_MAX - r->out_len;

		if (len > room)
			r->out_over = true;
		memcpy(r->out + r->out_len, data, len < room ? len : room);
		r->out_len += len < room ? len : room;
	} else {
		/* The last bytes of stderr, for the reason of a failed run. */
		size_t keep = len < STDERR_TAIL - 1 ? len : STDERR_TAIL - 1;

		if (r->err_len + keep > STDERR_TAIL - 1) {
			size_t drop = r->err_len + keep - (STDERR_TAIL - 1);

			memmove(r->err_tail, r->err_tail + drop, r->err_len - drop);
			r->err_len -= drop;
		}
		memcpy(r->err_tail + r->err_len, data + len - keep, keep);
		r->err_len += keep;
	}
	agent_conn_consumed(r->ac, is_stdout, len);
}

/* The stderr tail as printable text. */
static void err_text(const struct run *r, char *out, size_t cap)
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
	struct run *r = ctx;
	char tail[STDERR_TAIL];
	int code;

	r->ac = NULL;
	if (r->done)
		return;
	if (rc < 0) {
		fail_run(r, "the probe program could not run: %s", error && error[0] ? error : strerror(-rc));
		return;
	}
	code = agent_exec_status_code(st);
	if (code != 0) {
		err_text(r, tail, sizeof(tail));
		fail_run(r, "the probe program exited with status %d%s%s", code, tail[0] ? ": " : "", tail);
		return;
	}
	read_counters(r, true);
}

static const struct agent_conn_ops exec_ops = {
	.started = on_exec_started,
	.output = on_exec_output,
	.ended = on_exec_ended,
};

static void exec_probes(struct run *r)
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
		fail_run(r, "out of memory");
		return;
	}
	rc = agent_conn_exec(r->m->d->loop, &cfg, &rq, &exec_ops, r, &r->ac);
	if (rc < 0)
		fail_run(r, "the probe program could not be started: %s", strerror(-rc));
}

/* ---- the worker's description, and the canary ---- */

static void add_local(struct isolation_worker *w, const char *a)
{
	for (unsigned i = 0; i < w->nlocal; i++)
		if (!strcmp(w->local[i], a))
			return;
	if (w->nlocal < ISOLATION_LOCAL_MAX)
		snprintf(w->local[w->nlocal++], ISOLATION_ADDR_MAX, "%s", a);
}

/*
 * The worker's addresses: the canary's gateways first (IPv4, IPv6), then
 * every other one but loopback, IPv6 link-local (the guest would need a
 * zone) and the other sandboxes' taps (probed as sandbox.gw.*).
 */
static void local_addresses(struct isolation_worker *w, const struct sandbox *canary)
{
	struct ifaddrs *ifs, *i;
	char a[INET6_ADDRSTRLEN];

	if (w->canary_gateway[0])
		add_local(w, w->canary_gateway);
	net_sandbox_address(canary, 1, true, a, sizeof(a));
	if (a[0])
		add_local(w, a);
	if (getifaddrs(&ifs) < 0)
		return;
	for (i = ifs; i; i = i->ifa_next) {
		const void *x;
		int f;

		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
			continue;
		f = i->ifa_addr->sa_family;
		x = f == AF_INET ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
				 : (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
		if (f == AF_INET ? (ntohl(((const struct in_addr *)x)->s_addr) >> 24) == 127
				 : IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)x) ||
					   IN6_IS_ADDR_LINKLOCAL((const struct in6_addr *)x))
			continue;
		if (net_in_sandbox_pool(f, x))
			continue;
		inet_ntop(f, x, a, sizeof(a));
		add_local(w, a);
	}
	freeifaddrs(ifs);
}

static void describe_worker(struct run *r, struct isolation_worker *w, const char **allow)
{
	struct isolation_monitor *m = r->m;
	struct sandboxd *d = m->d;
	const cJSON *it;
	unsigned n = 0;

	memset(w, 0, sizeof(*w));
	net_sandbox_address(r->sb, 1, false, w->canary_gateway, sizeof(w->canary_gateway));
	local_addresses(w, r->sb);
	memcpy(w->listeners, m->listeners, sizeof(w->listeners));
	w->nlisteners = m->nlisteners;
	for (struct sandbox *sb = d->sandboxes; sb && w->nsandboxes < ISOLATION_SANDBOXES_MAX; sb = sb->next) {
		if (sb == r->sb || sb->state != SANDBOX_RUNNING || !sb->net.index || sb->spec.isolation_canary)
			continue;
		net_sandbox_address(sb, 2, false, w->sandboxes[w->nsandboxes].guest, ISOLATION_ADDR_MAX);
		net_sandbox_address(sb, 1, false, w->sandboxes[w->nsandboxes].gateway, ISOLATION_ADDR_MAX);
		w->nsandboxes++;
	}
	cJSON_ArrayForEach(it, d->allow_private)
		if (cJSON_IsString(it) && n < ISOLATION_ALLOW_PRIVATE_MAX)
			allow[n++] = it->valuestring;
	w->allow_private = allow;
	w->nallow_private = n;
	memcpy(w->deny, m->cfg.deny, sizeof(w->deny));
	w->ndeny = m->cfg.ndeny;
	w->has_peer = m->cfg.has_peer;
	w->peer = m->cfg.peer;
	memcpy(w->secrets, m->secrets, sizeof(w->secrets));
	w->nsecrets = m->nsecrets;
	w->agent_vsock_port = AGENT_CLIENT_PORT;
}

static void canary_ready(struct run *r, struct sandbox *sb)
{
	struct isolation_worker w;
	const char *allow[ISOLATION_ALLOW_PRIVATE_MAX];

	r->sb = sb;
	sandbox_ref(sb);
	snprintf(r->canary, sizeof(r->canary), "%s", sb->id);
	describe_worker(r, &w, allow);
	isolation_plan_build(&w, &r->plan);
	if (r->plan.dropped)
		sv_warn("isolation: %u probes left out to stay within %d", r->plan.dropped, ISOLATION_PROBES_MAX);
	if (!sb->net.index)
		sv_warn("isolation: the canary has no network (--no-net): only the guest and vsock walls are probed");
	read_counters(r, false);
}

static void on_create_ok(void *ctx, cJSON *body)
{
	struct run *r = ctx;
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
		fail_run(r, "the canary started but cannot be found");
	}
	cJSON_Delete(body);
	run_unref(r);
}

static void on_create_fail(void *ctx, int err, const char *message)
{
	struct run *r = ctx;

	(void)err;
	api_call_internal_drop(r->create);
	r->create = NULL;
	if (!r->done)
		fail_run(r, "the canary did not start: %s", message);
	run_unref(r);
}

static const struct api_call_sink create_sink = {
	.ok = on_create_ok,
	.fail = on_create_fail,
};

static void start_canary(struct run *r)
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
		fail_run(r, "out of memory");
		return;
	}
	if (spec_sandbox_from_json(o, &spec, &err) < 0) {
		fail_run(r, "the canary's spec was refused: %s", err.message);
		return;
	}
	spec.isolation_canary = true;
	r->create = api_call_internal_new(&create_sink, r);
	if (!r->create) {
		spec_sandbox_free(&spec);
		fail_run(r, "out of memory");
		return;
	}
	r->refs++; /* the create's, until it answers */
	sandbox_create(r->m->d, &spec, r->create);
}

static struct run *run_begin(struct isolation_monitor *m)
{
	struct run *r = calloc(1, sizeof(*r));

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

/* ---- the API and the timer ---- */

void isolation_monitor_run(struct isolation_monitor *m, struct api_call *call)
{
	struct waiter *w = calloc(1, sizeof(*w));
	struct run *r = m->run;

	if (!w) {
		api_call_fail(call, -ENOMEM, NULL, "out of memory");
		return;
	}
	w->call = call;
	api_call_hold(call);
	if (!r && !(r = run_begin(m))) {
		api_call_fail(call, -ENOMEM, NULL, "out of memory");
		api_call_release(call);
		free(w);
		return;
	}
	if (r->done) {
		/* It ended at once (the canary was refused): the last object is its. */
		if (m->last)
			api_call_ok(call, cJSON_Duplicate(m->last, 1));
		else
			api_call_fail(call, -ENOMEM, NULL, "out of memory");
		api_call_release(call);
		free(w);
		return;
	}
	w->next = r->waiters;
	r->waiters = w;
}

void isolation_monitor_last(struct isolation_monitor *m, struct api_call *call)
{
	if (!m->last) {
		api_call_fail(call, -ENOENT, NULL, "no isolation run has ended yet (POST /v1/selftest/isolation runs one)");
		return;
	}
	api_call_ok(call, cJSON_Duplicate(m->last, 1));
}

static void on_timer(uv_timer_t *t)
{
	struct isolation_monitor *m = t->data;

	if (m->run || m->d->stopping) {
		sv_debug("isolation: a run is still going; this one is skipped");
		return;
	}
	if (!run_begin(m))
		sv_warn("isolation: out of memory for a run");
}

void isolation_monitor_start(struct isolation_monitor *m)
{
	if (!m->cfg.interval_s)
		return;
	uv_timer_start(&m->timer, on_timer, (uint64_t)m->cfg.interval_s * 1000, (uint64_t)m->cfg.interval_s * 1000);
	m->timer_on = true;
	sv_info("isolation: a canary every %u s%s%s", m->cfg.interval_s, m->cfg.has_peer ? ", peer " : "",
		m->cfg.has_peer ? m->cfg.peer.addr : "");
}

void isolation_monitor_add_listener(struct isolation_monitor *m, const struct sockaddr *addr)
{
	struct isolation_endpoint *e;

	if (m->nlisteners == ISOLATION_LISTENERS_MAX || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
		return;
	e = &m->listeners[m->nlisteners++];
	e->v6 = addr->sa_family == AF_INET6;
	if (e->v6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, e->addr, sizeof(e->addr));
		e->port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, e->addr, sizeof(e->addr));
		e->port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
	}
}

void isolation_monitor_add_secret(struct isolation_monitor *m, const char *label, const char *path)
{
	if (m->nsecrets == ISOLATION_SECRETS_MAX || !path || !path[0] || strlen(path) >= sizeof(m->secrets[0].path))
		return;
	snprintf(m->secrets[m->nsecrets].label, sizeof(m->secrets[0].label), "%s", label);
	snprintf(m->secrets[m->nsecrets].path, sizeof(m->secrets[0].path), "%s", path);
	m->nsecrets++;
}

const char *isolation_monitor_test_allow_private(const struct isolation_monitor *m, const struct sandbox *sb)
{
	if (!m || !sb->spec.isolation_canary || !m->test_allow_private[0])
		return NULL;
	return m->test_allow_private;
}

int isolation_monitor_new(struct sandboxd *d, const struct isolation_monitor_config *cfg,
			  struct isolation_monitor **out)
{
	struct isolation_monitor *m = calloc(1, sizeof(*m));
	const char *env = getenv("SANDVM_TEST_ISOLATION_CANARY_ENV");
	const char *priv = getenv("SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE");
	cJSON *probe;
	char why[200];

	if (!m)
		return -ENOMEM;
	m->d = d;
	m->cfg = *cfg;
	if (env && env[0]) {
		const char *eq = strchr(env, '=');
		char name[128];

		snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - env) : 0, env);
		if (!eq || !spec_valid_env_name(name) || strlen(env) >= sizeof(m->test_env)) {
			sv_err("SANDVM_TEST_ISOLATION_CANARY_ENV wants NAME=VALUE (under %zu bytes)", sizeof(m->test_env));
			free(m);
			return -EINVAL;
		}
		snprintf(m->test_env, sizeof(m->test_env), "%s", env);
		sv_warn("TEST ONLY: SANDVM_TEST_ISOLATION_CANARY_ENV is set: the canary's probe program runs with %s "
			"in its environment", name);
	}
	if (priv && priv[0]) {
		probe = cJSON_CreateArray();
		if (!probe || strlen(priv) >= sizeof(m->test_allow_private) ||
		    net_private_add(probe, priv, why, sizeof(why)) < 0 || cJSON_GetArraySize(probe) != 1) {
			sv_err("SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE wants one CIDR inside a private range%s%s",
			       probe ? ": " : "", probe ? why : "");
			cJSON_Delete(probe);
			free(m);
			return -EINVAL;
		}
		cJSON_Delete(probe);
		snprintf(m->test_allow_private, sizeof(m->test_allow_private), "%s", priv);
		sv_warn("TEST ONLY: SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE is set: the canary's firewall lets "
			"it reach %s", priv);
	}
	uv_timer_init(d->loop, &m->timer);
	m->timer.data = m;
	*out = m;
	return 0;
}

void isolation_monitor_close(struct isolation_monitor *m)
{
	struct run *r;

	if (!m)
		return;
	if (m->timer_on)
		uv_timer_stop(&m->timer);
	/*
	 * The loop does not run again: no close callback would come, so the
	 * handles are closed and their memory goes at once.
	 */
	uv_close((uv_handle_t *)&m->timer, NULL);
	r = m->run;
	if (r) {
		/* Detached first: nothing is recorded or answered while the daemon stops. */
		r->m = NULL;
		fail_run(r, "sandboxd is stopping");
		while (r->waiters) {
			struct waiter *w = r->waiters;

			r->waiters = w->next;
			api_call_release(w->call);
			free(w);
		}
		/* A worker job still in flight or a create still waiting holds the run: left as the process ends. */
		if (!r->work_busy && !r->create) {
			free(r->out);
			free(r);
		}
	}
	cJSON_Delete(m->last);
	free(m);
}
