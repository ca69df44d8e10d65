/*
 * The Prometheus text exposition (format 0.0.4) of a scrape's view: one
 * HELP and TYPE line per family, then its samples. Names carry their unit
 * (_seconds, _bytes) and counters end in _total; every label value is a
 * fixed word of this file or metrics.c.
 */
#include "metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

struct out {
	char *buf;
	size_t cap, len;
	bool full;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->cap - o->len) {
		o->full = true;
		return;
	}
	o->len += (size_t)n;
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct out *o, const char *name, const char *label, const char *value, uint64_t n)
{
	if (label)
		put(o, "%s{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)n);
	else
		put(o, "%s %llu\n", name, (unsigned long long)n);
}

/* One family whose samples are a fixed list of label values. */
static void labelled(struct out *o, const char *name, const char *type, const char *help, const char *label,
		     const char *const *values, const uint64_t *n, unsigned count)
{
	family(o, name, type, help);
	for (unsigned i = 0; i < count; i++)
		sample(o, name, label, values[i], n[i]);
}

static void sandboxes(struct out *o, const struct metrics_view *v)
{
	static const char *const states[METRICS_SANDBOX_STATES] = {"starting", "running", "pausing", "paused",
								   "resuming", "stopping", "finished"};
	static const char *const outcomes[METRICS_CREATE_OUTCOMES] = {"ready", "failed", "rejected"};
	static const char *const reasons[METRICS_END_REASONS] = {"exited",	 "failed",     "timeout",
								  "idle_timeout", "terminated", "other"};
	static const char *const hows[2] = {"process", "spare"};
	const struct metrics *m = v->m;
	uint64_t n[METRICS_SANDBOX_STATES], cum = 0;

	for (unsigned i = 0; i < METRICS_SANDBOX_STATES; i++)
		n[i] = v->sandboxes[i];
	labelled(o, "sandvm_sandboxes", "gauge", "Sandboxes this worker knows, by lifecycle state.", "state",
		 states, n, METRICS_SANDBOX_STATES);
	labelled(o, "sandvm_sandbox_creates_total", "counter",
		 "Create calls, by outcome: ready, failed to start, or rejected before starting.", "outcome",
		 outcomes, m->creates, METRICS_CREATE_OUTCOMES);
	labelled(o, "sandvm_sandbox_terminations_total", "counter", "Sandboxes whose end was decided, by reason.",
		 "reason", reasons, m->ends, METRICS_END_REASONS);
	family(o, "sandvm_sandbox_create_ready_seconds", "histogram",
	       "Seconds from a create call to its sandbox being ready.");
	for (unsigned i = 0; i <= METRICS_READY_BUCKETS; i++) {
		cum += m->ready_bucket[i];
		if (i < METRICS_READY_BUCKETS)
			put(o, "sandvm_sandbox_create_ready_seconds_bucket{le=\"%g\"} %llu\n", metrics_ready_bounds[i],
			    (unsigned long long)cum);
		else
			put(o, "sandvm_sandbox_create_ready_seconds_bucket{le=\"+Inf\"} %llu\n",
			    (unsigned long long)cum);
	}
	put(o, "sandvm_sandbox_create_ready_seconds_sum %.6f\n", m->ready_sum);
	sample(o, "sandvm_sandbox_create_ready_seconds_count", NULL, NULL, m->ready_count);
	labelled(o, "sandvm_vmm_starts_total", "counter",
		 "VMMs started for sandboxes and templates: as a new process, or a spare waiting for it.", "how",
		 hows, m->vmm_starts, 2);
	family(o, "sandvm_vmm_spares_ready", "gauge", "Spare VMM processes started and waiting for a sandbox.");
	sample(o, "sandvm_vmm_spares_ready", NULL, NULL, v->vmm_spares_ready);
}

static void execs(struct out *o, const struct metrics_view *v)
{
	static const char *const ends[METRICS_EXEC_ENDS] = {"exited", "signaled", "timeout", "error"};
	static const char *const streams[2] = {"stdout", "stderr"};
	const struct metrics *m = v->m;

	family(o, "sandvm_execs_running", "gauge", "Execs whose process has not ended.");
	sample(o, "sandvm_execs_running", NULL, NULL, v->execs_running);
	family(o, "sandvm_execs_started_total", "counter", "Execs started, entrypoints included.");
	sample(o, "sandvm_execs_started_total", NULL, NULL, m->execs_started);
	labelled(o, "sandvm_execs_completed_total", "counter", "Execs ended, by how.", "reason", ends,
		 m->execs_ended, METRICS_EXEC_ENDS);
	labelled(o, "sandvm_exec_output_bytes_total", "counter", "Bytes execs wrote to stdout and stderr.",
		 "stream", streams, m->exec_output_bytes, 2);
}

static void firewall(struct out *o, const struct metrics_view *v)
{
	labelled(o, "sandvm_firewall_verdicts_total", "counter",
		 "Egress firewall verdicts on guest frames, by reason, summed over sandboxes "
		 "(as last read from each VMM).",
		 "reason", metrics_fw_reason_names, v->fw.count, METRICS_FW_REASONS);
}

static void listeners(struct out *o, const struct metrics_view *v)
{
	static const char *const names[METRICS_LISTENERS] = {"unix", "tcp", "metrics", "ingress"};
	static const char *const classes[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
	const struct metrics_listener_view *in = &v->listeners[METRICS_LISTENER_INGRESS];

	family(o, "sandvm_connections_open", "gauge", "Open client connections, by listener.");
	for (unsigned i = 0; i < METRICS_LISTENERS; i++)
		if (v->listeners[i].on)
			sample(o, "sandvm_connections_open", "listener", names[i], v->listeners[i].open);
	family(o, "sandvm_api_requests_total", "counter", "API requests answered, by status class.");
	for (unsigned c = 0; c < 6; c++) {
		uint64_t n = 0;

		for (unsigned i = 0; i < METRICS_LISTENERS; i++)
			if (i != METRICS_LISTENER_INGRESS)
				n += v->listeners[i].replies[c];
		sample(o, "sandvm_api_requests_total", "code", classes[c], n);
	}
	if (!in->on)
		return;
	family(o, "sandvm_ingress_connections_total", "counter", "Connections the ingress listener took.");
	sample(o, "sandvm_ingress_connections_total", NULL, NULL, in->accepted);
	labelled(o, "sandvm_ingress_requests_total", "counter",
		 "Ingress requests answered (by the sandbox or the proxy), by status class.", "code", classes,
		 in->replies, 6);
}

static void images(struct out *o, const struct metrics_view *v)
{
	static const char *const keys[2] = {"managed", "customer"};

	if (!v->images_known)
		return;
	labelled(o, "sandvm_snapshot_images", "gauge", "Snapshot images in the store, by key kind.", "key", keys,
		 v->images, 2);
	labelled(o, "sandvm_snapshot_image_bytes", "gauge", "Bytes of snapshot image files, by key kind.", "key",
		 keys, v->image_bytes, 2);
}

static void isolation(struct out *o, const struct metrics_view *v)
{
	static const char *const states[METRICS_ISOLATION_STATES] = {"unknown", "ok", "breached"};
	const struct metrics *m = v->m;
	uint64_t now[METRICS_ISOLATION_STATES] = {0};

	now[m->isolation < METRICS_ISOLATION_STATES ? m->isolation : METRICS_ISOLATION_UNKNOWN] = 1;
	labelled(o, "sandvm_isolation_state", "gauge",
		 "The isolation monitor's last verdict: 1 for the state it is in.", "state", states, now,
		 METRICS_ISOLATION_STATES);
	labelled(o, "sandvm_isolation_runs_total", "counter", "Isolation monitor runs, by verdict.", "result",
		 states, m->isolation_runs, METRICS_ISOLATION_STATES);
	family(o, "sandvm_isolation_probe_failures_total", "counter",
	       "Isolation probes that reached what they must not (walls that did not hold), all runs.");
	sample(o, "sandvm_isolation_probe_failures_total", NULL, NULL, m->isolation_probe_failures);
	family(o, "sandvm_isolation_last_run_probes", "gauge", "Probes in the last isolation run.");
	sample(o, "sandvm_isolation_last_run_probes", NULL, NULL, m->isolation_probes);
	family(o, "sandvm_isolation_last_run_breached_probes", "gauge", "Failed probes in the last isolation run.");
	sample(o, "sandvm_isolation_last_run_breached_probes", NULL, NULL, m->isolation_breached);
	family(o, "sandvm_isolation_last_run_timestamp_seconds", "gauge",
	       "When the last isolation run ended (Unix time; 0: never).");
	put(o, "sandvm_isolation_last_run_timestamp_seconds %.3f\n", m->isolation_last_run);
}

static void process(struct out *o, const struct metrics_view *v)
{
	family(o, "process_start_time_seconds", "gauge", "When sandboxd started (Unix time).");
	put(o, "process_start_time_seconds %.3f\n", v->m->start_time);
	if (v->rss_bytes) {
		family(o, "process_resident_memory_bytes", "gauge", "sandboxd's resident memory.");
		sample(o, "process_resident_memory_bytes", NULL, NULL, v->rss_bytes);
	}
	if (v->open_fds) {
		family(o, "process_open_fds", "gauge", "sandboxd's open file descriptors.");
		sample(o, "process_open_fds", NULL, NULL, v->open_fds);
	}
}

int metrics_text_write(const struct metrics_view *v, char *buf, size_t cap, size_t *len)
{
	struct out o = {.buf = buf, .cap = cap};

	if (!cap)
		return -ENOSPC;
	buf[0] = '\0';
	sandboxes(&o, v);
	execs(&o, v);
	firewall(&o, v);
	listeners(&o, v);
	images(&o, v);
	isolation(&o, v);
	process(&o, v);
	if (o.full)
		return -ENOSPC;
	*len = o.len;
	return 0;
}
