#ifndef SANDVM_API_SANDBOXD_ISOLATION_MONITOR_PART_H
#define SANDVM_API_SANDBOXD_ISOLATION_MONITOR_PART_H

/*
 * What the isolation monitor's files share; not an interface (that is
 * isolation_monitor.h). isolation_monitor.c: the monitor, its timer and its
 * API calls; isolation_run.c: a run's steps, the canary's life and the end;
 * isolation_verdict.c: the plan a run is judged against, the judging and
 * the verdict's record.
 */

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "isolation_monitor.h"
#include "metrics.h"

struct agent_conn;
struct cJSON;

#define ISOLATION_STDERR_TAIL 200

/* A caller of POST /v1/selftest/isolation waiting for the run's end. */
struct isolation_waiter {
	struct isolation_waiter *next;
	struct api_call *call;
};

struct isolation_run {
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
	char err_tail[ISOLATION_STDERR_TAIL];
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
	struct isolation_waiter *waiters;
};

struct isolation_monitor {
	struct sandboxd *d;
	struct isolation_monitor_config cfg;
	uv_timer_t timer;
	bool timer_on;
	struct isolation_run *run; /* in flight */
	unsigned seq;
	struct cJSON *last; /* the last finished run's object */
	struct isolation_endpoint listeners[ISOLATION_LISTENERS_MAX];
	unsigned nlisteners;
	struct isolation_secret secrets[ISOLATION_SECRETS_MAX];
	unsigned nsecrets;
	char test_env[512];           /* SANDVM_TEST_ISOLATION_CANARY_ENV: NAME=VALUE, "" when unset */
	char test_allow_private[64];  /* SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE: a CIDR, "" when unset */
};

/* A run begun: its canary asked for, its deadline running (m->run is it); NULL when out of memory. */
struct isolation_run *isolation_run_begin(struct isolation_monitor *m);
/* The run ends with r->result and r->reason: once, whatever step ends it. */
void isolation_run_finish(struct isolation_run *r);
/* The run ends unknown, the reason formatted. */
void isolation_run_fail(struct isolation_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The canary r->sb is ready: the worker described and r->plan built from it (a warning for what it leaves out). */
void isolation_run_plan(struct isolation_run *r);
/* The probe program ended well and the counters are read (known: both readings): the report judged, the run ended. */
void isolation_run_judge(struct isolation_run *r, bool known);
/* The run has ended with m: its verdict to the metrics, the log and m->last, and every waiter answered. */
void isolation_run_report(struct isolation_monitor *m, struct isolation_run *r);

#endif
