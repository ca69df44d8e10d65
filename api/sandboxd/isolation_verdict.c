/*
 * What an isolation run (isolation_run.c) is judged against, and what it
 * comes to. The worker is described once the canary is ready (its
 * addresses, the listeners, the other sandboxes, the private ranges let
 * through, the secrets) and the probe plan built from that
 * (isolation_probes.c); the guest's report is checked against the plan and
 * judged, the spoof probes from the VMM's firewall counters read before and
 * after; the verdict goes to the metrics, the log and the run's object,
 * kept as the last and given to every caller waiting.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_client.h"
#include "api_call.h"
#include "isolation_monitor_part.h"
#include "log.h"
#include "metrics.h"
#include "sandbox.h"
#include "sandboxd.h"

/* ---- the worker's description, and the plan ---- */

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

static void describe_worker(struct isolation_run *r, struct isolation_worker *w, const char **allow)
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

void isolation_run_plan(struct isolation_run *r)
{
	struct isolation_worker w;
	const char *allow[ISOLATION_ALLOW_PRIVATE_MAX];

	describe_worker(r, &w, allow);
	isolation_plan_build(&w, &r->plan);
	if (r->plan.dropped)
		sv_warn("isolation: %u probes left out to stay within %d", r->plan.dropped, ISOLATION_PROBES_MAX);
	if (!r->sb->net.index)
		sv_warn("isolation: the canary has no network (--no-net): only the guest and vsock walls are probed");
}

/* ---- the report judged ---- */

void isolation_run_judge(struct isolation_run *r, bool known)
{
	char err[200];

	if (r->out_over) {
		isolation_run_fail(r, "the probe report is longer than %d bytes", ISOLATION_REPORT_MAX);
		return;
	}
	if (isolation_report_parse(r->out, r->out_len, &r->rep, err, sizeof(err)) < 0) {
		isolation_run_fail(r, "the probe report was refused: %s", err);
		return;
	}
	if (isolation_plan_check(&r->plan, &r->rep, err, sizeof(err)) < 0) {
		/* Nothing of it counts: not even its breaches, which a guest could make up. */
		memset(&r->rep, 0, sizeof(r->rep));
		isolation_run_fail(r, "the probe report was refused: %s", err);
		return;
	}
	isolation_judge_spoof(&r->rep, &r->before, &r->fw_after, known);
	r->result = r->rep.result;
	if (r->result == ISOLATION_RESULT_UNKNOWN)
		snprintf(r->reason, sizeof(r->reason), "%u of %u probes proved nothing (an error, or the peer "
			 "not reached)", r->rep.failed, r->rep.count);
	isolation_run_finish(r);
}

/* ---- the verdict ---- */

static cJSON *time_json(double t)
{
	char text[32];

	snprintf(text, sizeof(text), "%.6f", t);
	return cJSON_CreateRaw(text);
}

static cJSON *run_json(const struct isolation_run *r)
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

static void record_metrics(struct isolation_monitor *m, const struct isolation_run *r)
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

void isolation_run_report(struct isolation_monitor *m, struct isolation_run *r)
{
	cJSON *o;

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
		struct isolation_waiter *w = r->waiters;

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
