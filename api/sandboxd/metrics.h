#ifndef SANDVM_API_SANDBOXD_METRICS_H
#define SANDVM_API_SANDBOXD_METRICS_H

/*
 * What a worker did, for GET /metrics (docs/api.md, "Metrics"). The
 * daemon's counters (struct metrics, one in struct sandboxd, touched from
 * the loop thread only, moved by the metrics_* calls of the code that sees
 * the events); what a scrape reads beside them (struct metrics_view, filled
 * by metrics_scrape.c); and the pure parts: the VMM's firewall counters out
 * of its control reply (metrics_fw_parse) and the Prometheus text
 * exposition (metrics_text_write). No label value ever comes from a client
 * or a guest: every label is one of the fixed words below.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_server;

/* How a create call ended: the sandbox became ready, failed to start, or was refused before it started. */
enum metrics_create_outcome { METRICS_CREATE_READY, METRICS_CREATE_FAILED, METRICS_CREATE_REJECTED,
			      METRICS_CREATE_OUTCOMES };

/* Why a sandbox finished (its API "reason"); anything else is "other". */
enum metrics_end { METRICS_END_EXITED, METRICS_END_FAILED, METRICS_END_TIMEOUT, METRICS_END_IDLE_TIMEOUT,
		   METRICS_END_TERMINATED, METRICS_END_OTHER, METRICS_END_REASONS };

/* How an exec ended (its exit frame's reason; "error": it could not run or the sandbox went away). */
enum metrics_exec_end { METRICS_EXEC_EXITED, METRICS_EXEC_SIGNALED, METRICS_EXEC_TIMEOUT, METRICS_EXEC_ERROR,
			METRICS_EXEC_ENDS };

/* The listeners whose connections are counted. */
enum metrics_listener { METRICS_LISTENER_UNIX, METRICS_LISTENER_TCP, METRICS_LISTENER_METRICS,
			METRICS_LISTENER_INGRESS, METRICS_LISTENERS };

/* The isolation monitor's verdict (docs/security.md, "Isolation monitor"). */
enum metrics_isolation { METRICS_ISOLATION_UNKNOWN, METRICS_ISOLATION_OK, METRICS_ISOLATION_BREACHED,
			 METRICS_ISOLATION_STATES };

/* The sandbox lifecycle's states, in enum sandbox_state's order (sandbox.h). */
#define METRICS_SANDBOX_STATES 7
/* The VMM egress firewall's verdict reasons, in its order (vmm/net/firewall.h). */
#define METRICS_FW_REASONS 24
/* Upper bounds of the create-to-ready histogram, seconds. */
#define METRICS_READY_BUCKETS 11

extern const double metrics_ready_bounds[METRICS_READY_BUCKETS];
extern const char *const metrics_fw_reason_names[METRICS_FW_REASONS];

struct metrics_fw {
	uint64_t count[METRICS_FW_REASONS];
};

struct metrics {
	uint64_t creates[METRICS_CREATE_OUTCOMES];
	uint64_t ends[METRICS_END_REASONS];
	uint64_t ready_bucket[METRICS_READY_BUCKETS + 1]; /* each bucket's own (not cumulative); the last: +Inf */
	uint64_t ready_count;
	double ready_sum;
	uint64_t vmm_starts[2]; /* VMMs of sandboxes and templates: a new process, a spare (vmm_spares.h) */
	uint64_t execs_started;
	uint64_t execs_ended[METRICS_EXEC_ENDS];
	uint64_t exec_output_bytes[2]; /* stdout, stderr */
	struct metrics_fw fw_gone;     /* the last counters seen of sandboxes whose VMM is gone */
	uint64_t isolation_runs[METRICS_ISOLATION_STATES];
	uint64_t isolation_probe_failures; /* probes that reached what they must not, all runs */
	enum metrics_isolation isolation;  /* the last run's verdict */
	double isolation_last_run;         /* wall clock, 0: never */
	unsigned isolation_probes, isolation_breached; /* the last run's probes, and those that failed */
	double start_time;                 /* the daemon's, wall clock */
	const struct http_server *servers[METRICS_LISTENERS]; /* NULL: that listener is off */
};

/* One listener's figures at a scrape. */
struct metrics_listener_view {
	bool on;
	unsigned open;
	uint64_t accepted;
	uint64_t replies[6]; /* by status class: [1] 1xx .. [5] 5xx, [0] anything else */
};

/* Everything a scrape reports: the counters, and what was measured for it. */
struct metrics_view {
	const struct metrics *m;
	unsigned sandboxes[METRICS_SANDBOX_STATES];
	unsigned execs_running;
	unsigned vmm_spares_ready;    /* spare VMMs waiting now */
	struct metrics_fw fw; /* gone and live sandboxes together */
	struct metrics_listener_view listeners[METRICS_LISTENERS];
	bool images_known;            /* the snapshot store was read */
	uint64_t images[2], image_bytes[2]; /* by key: managed, customer */
	uint64_t rss_bytes;           /* 0: unknown */
	unsigned open_fds;            /* 0: unknown */
};

void metrics_init(struct metrics *m, double now);
void metrics_create(struct metrics *m, enum metrics_create_outcome outcome);
/* A create became ready after seconds. */
void metrics_ready(struct metrics *m, double seconds);
/* A sandbox's end was decided, with its API reason. */
void metrics_end(struct metrics *m, const char *reason);
/* An exec ended with its exit frame's reason ("exited", "signaled", "timeout", "error"). */
void metrics_exec_end(struct metrics *m, const char *reason);
/* A sandbox's VMM is gone for good: its last counters seen count on (and seen is zeroed). */
void metrics_fw_retire(struct metrics *m, struct metrics_fw *seen);
/* A listener's view from its server (NULL: off). */
void metrics_listener_read(const struct http_server *srv, struct metrics_listener_view *out);

/*
 * The firewall counters in a VMM's reply to {"op":"net"} (its JSON line,
 * len bytes, not necessarily NUL-terminated): {"ok": true, "net":
 * {"counters": {"drop_host": N, ...}}}. Only the known reason names are
 * read; each must be a whole number 0..2^53; a name missing is 0. 0, or
 * -EBADMSG (out is zeroed then).
 */
int metrics_fw_parse(const char *reply, size_t len, struct metrics_fw *out);
/*
 * Asks the VMM on the control socket for its counters ({"op":"net"}, bounded
 * by timeout_ms; its reply into reply, cap bytes) and parses them. Blocking:
 * for a worker thread. 0, the control call's error, or -EBADMSG (out zeroed).
 */
int metrics_fw_read(const char *control, unsigned timeout_ms, char *reply, size_t cap, struct metrics_fw *out);

/*
 * The Prometheus text exposition (format 0.0.4) of v into buf: 0 with *len,
 * or -ENOSPC when cap is too small. Pure: it reads v only.
 */
int metrics_text_write(const struct metrics_view *v, char *buf, size_t cap, size_t *len);

#endif
