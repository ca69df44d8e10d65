/*
 * The daemon's counters (metrics.h) and the one parser of what a VMM says
 * about them: its firewall counters, read by name against a fixed list, so
 * that a VMM (which runs the guest's devices) can neither add a label nor
 * overflow a sum.
 */
#include "metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "http_conn.h"
#include "vmm_control.h"

const double metrics_ready_bounds[METRICS_READY_BUCKETS] = {0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120};

const char *const metrics_fw_reason_names[METRICS_FW_REASONS] = {
	"pass_open",	   "pass_allowlist",	 "pass_arp",	    "pass_nd",		 "drop_blocked",
	"drop_not_allowed", "drop_spoof_mac",	 "drop_spoof_ip",   "drop_host",	 "drop_link_local",
	"drop_metadata",   "drop_other_sandbox", "drop_multicast",  "drop_broadcast",	 "drop_vlan",
	"drop_ethertype",  "drop_malformed",	 "drop_arp",	    "drop_nd",		 "drop_dst_mac",
	"drop_source_route", "drop_reserved",	 "drop_private",    "drop_offload",
};

/* A counter a VMM reports: whole, and small enough that sums over sandboxes stay exact. */
#define FW_COUNT_MAX 9007199254740992.0 /* 2^53 */

void metrics_init(struct metrics *m, double now)
{
	memset(m, 0, sizeof(*m));
	m->start_time = now;
}

void metrics_create(struct metrics *m, enum metrics_create_outcome outcome)
{
	if ((unsigned)outcome < METRICS_CREATE_OUTCOMES)
		m->creates[outcome]++;
}

void metrics_ready(struct metrics *m, double seconds)
{
	unsigned i = 0;

	if (!(seconds >= 0))
		seconds = 0;
	while (i < METRICS_READY_BUCKETS && seconds > metrics_ready_bounds[i])
		i++;
	m->ready_bucket[i]++;
	m->ready_count++;
	m->ready_sum += seconds;
}

void metrics_end(struct metrics *m, const char *reason)
{
	static const char *const names[METRICS_END_OTHER] = {"exited", "failed", "timeout", "idle_timeout",
							      "terminated"};
	unsigned i = 0;

	while (i < METRICS_END_OTHER && (!reason || strcmp(reason, names[i])))
		i++;
	m->ends[i]++;
}

void metrics_exec_end(struct metrics *m, const char *reason)
{
	static const char *const names[METRICS_EXEC_ENDS] = {"exited", "signaled", "timeout", "error"};
	unsigned i = 0;

	while (i < METRICS_EXEC_ERROR && (!reason || strcmp(reason, names[i])))
		i++;
	m->execs_ended[i]++;
}

void metrics_fw_retire(struct metrics *m, struct metrics_fw *seen)
{
	for (unsigned i = 0; i < METRICS_FW_REASONS; i++)
		m->fw_gone.count[i] += seen->count[i];
	memset(seen, 0, sizeof(*seen));
}

void metrics_listener_read(const struct http_server *srv, struct metrics_listener_view *out)
{
	memset(out, 0, sizeof(*out));
	if (!srv)
		return;
	out->on = true;
	out->open = srv->connections;
	out->accepted = srv->accepted;
	memcpy(out->replies, srv->replies, sizeof(out->replies));
}

int metrics_fw_parse(const char *reply, size_t len, struct metrics_fw *out)
{
	cJSON *j;
	const cJSON *ok, *net, *counters, *v;
	int r = -EBADMSG;

	memset(out, 0, sizeof(*out));
	if (!reply)
		return -EBADMSG;
	j = cJSON_ParseWithLength(reply, len);
	ok = cJSON_GetObjectItemCaseSensitive(j, "ok");
	net = cJSON_GetObjectItemCaseSensitive(j, "net");
	counters = cJSON_GetObjectItemCaseSensitive(net, "counters");
	if (!cJSON_IsObject(j) || !cJSON_IsTrue(ok) || !cJSON_IsObject(net) || !cJSON_IsObject(counters))
		goto out;
	for (unsigned i = 0; i < METRICS_FW_REASONS; i++) {
		v = cJSON_GetObjectItemCaseSensitive(counters, metrics_fw_reason_names[i]);
		if (!v)
			continue;
		if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
		    v->valuedouble > FW_COUNT_MAX || v->valuedouble != (double)(uint64_t)v->valuedouble)
			goto out;
		out->count[i] = (uint64_t)v->valuedouble;
	}
	r = 0;
out:
	if (r < 0)
		memset(out, 0, sizeof(*out));
	cJSON_Delete(j);
	return r;
}

int metrics_fw_read(const char *control, unsigned timeout_ms, char *reply, size_t cap, struct metrics_fw *out)
{
	int r = vmm_control_call_timeout(control, "{\"op\":\"net\"}\n", reply, cap, timeout_ms);

	if (r < 0) {
		memset(out, 0, sizeof(*out));
		return r;
	}
	return metrics_fw_parse(reply, strlen(reply), out);
}
