#ifndef SANDVM_API_SANDBOXD_SANDBOX_H
#define SANDVM_API_SANDBOXD_SANDBOX_H

/*
 * A sandbox and its lifecycle (sandbox.c): create, readiness, timeouts,
 * terminate, the VMM's end, adoption after a restart, forgetting. Its parts
 * (network, mounts) plug in through sandbox_part.h; the VMM starts and stops
 * through vmm_launcher.h. Touched from the event loop thread only.
 */

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "ingress.h"
#include "jail_host.h"
#include "metrics.h"
#include "net.h"
#include "sandbox_vm.h"
#include "snapshots.h"
#include "spec.h"
#include "tunnels.h"

struct cJSON;
struct sandboxd;
struct api_call;
struct exec_session;
struct agent_conn;
struct vmm_process;
struct sandbox_start;

/*
 * The lifecycle, changed only by sandbox.c's set_state: STARTING until the
 * guest agent answers, RUNNING, STOPPING once its end is decided (reason and
 * returncode final, the VMM asked to stop), FINISHED once the VMM is gone.
 * A running sandbox may be paused: PAUSING while its VMM writes the snapshot
 * and stops, PAUSED with no VMM (its parts kept), RESUMING while a VMM
 * restores it and its agent takes the RESTORED call, then RUNNING again, or
 * PAUSED again when that failed.
 */
enum sandbox_state {
	SANDBOX_STARTING,
	SANDBOX_RUNNING,
	SANDBOX_PAUSING,
	SANDBOX_PAUSED,
	SANDBOX_RESUMING,
	SANDBOX_STOPPING,
	SANDBOX_FINISHED,
	SANDBOX_STATES
};

/* Why a sandbox finished, with its returncode (docs/api.md). */
#define RC_TIMEOUT 124
#define RC_FAILED 125
#define RC_TERMINATED 137

/* Someone who waits for a sandbox to finish (sandbox_watch). */
struct sandbox_watch {
	struct sandbox_watch *next;
	void (*finished)(struct sandbox_watch *w);
};

struct sandbox {
	struct sandboxd *d;
	struct sandbox *next;
	char id[32];
	struct sandbox_spec spec;
	enum sandbox_state state;
	int returncode;
	const char *reason; /* static string, NULL while not finished */
	char message[1024]; /* detail for failures */
	double created_at, started_at, finished_at; /* wall clock, seconds */

	struct sandbox_vm vm;      /* run directory and socket paths */
	struct vmm_process *vmm;   /* while the VMM runs (d->launcher) */
	int pid;
	unsigned long long pid_start; /* /proc/PID/stat start time: pids are reused */
	bool deleted;           /* rm: forget the record once the VMM is gone */

	uv_timer_t timeout_timer, idle_timer, expire_timer;
	struct agent_conn *ready_conn; /* the readiness check while the guest boots */
	int ready_result;
	char ready_error[512];
	struct api_call *create_call; /* the create call waiting for readiness */

	unsigned active;        /* execs and file calls in flight, for the idle timeout */
	uint64_t last_active_ms; /* loop time */
	unsigned execs_started;
	struct exec_session *execs;
	struct exec_session *entrypoint;
	unsigned refs; /* handles open, workers, requests holding it */
	struct sandbox_jail jail; /* its uid/gid, jail root and cgroup leaf (jail_host.c) */
	struct sandbox_net net;
	struct sandbox_mount mounts[SANDBOX_MOUNT_SLOTS];
	struct sandbox_ingress ingress; /* connect tokens and port labels (ingress.c) */
	struct sandbox_tunnels tunnels; /* tunnel ports, labels, host ports (tunnels.c) */
	bool snapshot_busy; /* the scratch drive is in use */
	struct sandbox_watch *watchers; /* told when the sandbox finishes (GET .../wait) */
	/*
	 * How its VM started (docs/api.md, "start"): "warm" (restored from its
	 * shape's template), "cold" (booted, as asked), "cold-fallback" (booted
	 * because no template could be used; start_reason says why). NULL
	 * until decided.
	 */
	const char *start_mode;
	char start_reason[600];
	struct sandbox_start *start; /* the launch, while the VM starts or resumes (sandbox.c) */
	/*
	 * The timeout clock: while it runs, the wall clock time the sandbox
	 * timeout passes; while it is paused, the seconds that were left.
	 */
	double deadline, timeout_left;
	double paused_at;             /* wall clock, while paused */
	struct api_call *pause_call;  /* the pause or resume call waiting for its end */
	bool pause_busy;              /* the snapshot job is in flight */
	char resume_error[600];       /* why the last resume failed ("" after one that worked) */
	struct metrics_fw fw_seen;    /* its VMM's firewall counters as last scraped (metrics_scrape.c) */
	unsigned vmm_gen;             /* VMMs gone so far: a scrape's reading of an earlier one is dropped */
};

/* Starts a sandbox from spec (taken); replies to req once it is ready or failed. */
void sandbox_create(struct sandboxd *d, struct sandbox_spec *spec, struct api_call *call);
struct sandbox *sandbox_find(struct sandboxd *d, const char *id_or_name);
void sandbox_terminate(struct sandbox *sb, const char *reason, int returncode, const char *message);
void sandbox_delete(struct sandbox *sb);
/* Pauses a running sandbox to disk; answers call when it is paused, or why not (docs/api.md). */
void sandbox_pause(struct sandbox *sb, struct api_call *call);
/* Resumes a paused sandbox; answers call when it runs again, or why not (it stays paused then). */
void sandbox_resume(struct sandbox *sb, struct api_call *call);
/* "sandbox ID is STATE" and what to do about it, for a call that needs it running. */
void sandbox_not_running(const struct sandbox *sb, char *out, size_t cap);
/* "starting", "running", "pausing", "paused", "resuming", "finished" (stopping too): the API's and the record's word. */
const char *sandbox_state_name(enum sandbox_state s);
/* Stopping or finished: its result is final. */
bool sandbox_has_ended(const struct sandbox *sb);
void sandbox_ref(struct sandbox *sb);
void sandbox_unref(struct sandbox *sb);
/* An exec or file call starts or ends (idle timeout bookkeeping). */
void sandbox_activity(struct sandbox *sb, int delta);
/* The sandbox object of the API; a cJSON *. */
void *sandbox_to_json(const struct sandbox *sb);
/* Reads the registry and adopts VMMs that outlived the previous daemon. */
int sandbox_restore_all(struct sandboxd *d);
/* Counts sandboxes not finished, and the memory of those with a VMM (a paused one's RAM is on disk). */
void sandbox_usage(const struct sandboxd *d, unsigned *count, unsigned *memory_mib);
/* w->finished is called once, when sb finishes, unless unwatched before; the watcher holds its own reference. */
void sandbox_watch(struct sandbox *sb, struct sandbox_watch *w);
void sandbox_unwatch(struct sandbox *sb, struct sandbox_watch *w);
void sandbox_sweep(struct sandboxd *d);
void sandbox_make_id(const char *prefix, char *out, size_t len);

#endif
