#ifndef SANDVM_API_SANDBOXD_ISOLATION_MONITOR_H
#define SANDVM_API_SANDBOXD_ISOLATION_MONITOR_H

/*
 * The isolation monitor (docs/security.md, "Isolation monitor"): a canary
 * sandbox started through the same path as an API create, whose guest runs
 * the fixed probe program over the list isolation_probes.c computes; its
 * report is judged (with the spoof probes judged here, from the canary
 * VMM's firewall counters), the verdict goes to the metrics, /v1/health and
 * the log, and the canary is terminated on every path. Every S seconds
 * with --isolation-probe S, and on demand (POST /v1/selftest/isolation).
 * One run at a time: a request during a run joins it. Everything runs on
 * the loop, nothing blocks it (the control socket calls run on workers).
 */

#include <stdbool.h>
#include <sys/socket.h>

#include "isolation_probes.h"

struct api_call;
struct sandbox;
struct sandboxd;
struct isolation_monitor;

/* The probe program in the minimal image, and how long a probe may take. */
#define ISOLATION_PROBE_PROGRAM "/sbin/sandvm-isolation-probe"
#define ISOLATION_PROBE_TIMEOUT_MS 1500
/* The whole run, canary start included; a run still going then is unknown. */
#define ISOLATION_RUN_DEADLINE_MS 110000

struct isolation_monitor_config {
	unsigned interval_s; /* --isolation-probe; 0: on demand only */
	bool has_peer;       /* --isolation-probe-peer */
	struct isolation_endpoint peer;
	struct isolation_endpoint deny[ISOLATION_DENY_MAX]; /* --isolation-probe-deny */
	unsigned ndeny;
};

/*
 * The monitor of d (d->isolation), with the test-only knobs of the
 * environment read once (each set one is logged as a warning). 0, or
 * -ENOMEM / -EINVAL (a knob's value is wrong; said in the log).
 */
int isolation_monitor_new(struct sandboxd *d, const struct isolation_monitor_config *cfg,
			  struct isolation_monitor **out);
/* A listener of the worker (API, metrics, ingress) whose address and port the canary must not reach. */
void isolation_monitor_add_listener(struct isolation_monitor *m, const struct sockaddr *addr);
/* A host path that must not be visible in a guest (a key file, the state folder), named by label. */
void isolation_monitor_add_secret(struct isolation_monitor *m, const char *label, const char *path);
/* Starts the periodic runs (with interval_s); the first one after one interval. */
void isolation_monitor_start(struct isolation_monitor *m);
/* POST /v1/selftest/isolation: call gets the run's object when the run (this one or the one going) ends. */
void isolation_monitor_run(struct isolation_monitor *m, struct api_call *call);
/* GET /v1/selftest/isolation: the last finished run's object, or -ENOENT. */
void isolation_monitor_last(struct isolation_monitor *m, struct api_call *call);
/* SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE for the canary sb's policy, or NULL (net.c). */
const char *isolation_monitor_test_allow_private(const struct isolation_monitor *m, const struct sandbox *sb);
/*
 * At exit, once the loop has stopped for good: drops a run in flight (its
 * canary is asked to stop, and ends by its own timeout if the daemon goes
 * first) and frees m.
 */
void isolation_monitor_close(struct isolation_monitor *m);

#endif
