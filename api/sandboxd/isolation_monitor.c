/*
 * The isolation monitor (isolation_monitor.h): its object and what reaches
 * it from outside. The config of the flags and the test-only knobs of the
 * environment, the listeners and secrets main.c names, the periodic timer,
 * and the API's calls: POST /v1/selftest/isolation (a run begun, or the one
 * going joined) and GET /v1/selftest/isolation (the last run's object).
 * A run's steps are isolation_run.c's, its verdict isolation_verdict.c's.
 */
#include "isolation_monitor.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "api_call.h"
#include "isolation_monitor_part.h"
#include "log.h"
#include "sandbox.h"
#include "sandboxd.h"
#include "spec.h"

/* ---- the API and the timer ---- */

void isolation_monitor_run(struct isolation_monitor *m, struct api_call *call)
{
	struct isolation_waiter *w = calloc(1, sizeof(*w));
	struct isolation_run *r = m->run;

	if (!w) {
		api_call_fail(call, -ENOMEM, NULL, "out of memory");
		return;
	}
	w->call = call;
	api_call_hold(call);
	if (!r && !(r = isolation_run_begin(m))) {
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
	if (!isolation_run_begin(m))
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
	struct isolation_run *r;

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
		isolation_run_fail(r, "sandboxd is stopping");
		while (r->waiters) {
			struct isolation_waiter *w = r->waiters;

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
