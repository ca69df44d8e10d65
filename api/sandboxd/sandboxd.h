#ifndef SANDVM_API_SANDBOXD_SANDBOXD_H
#define SANDVM_API_SANDBOXD_SANDBOXD_H

/*
 * The daemon's state: its settings, the sandbox registry and, per sandbox,
 * the VMM process, timers and running execs. Everything here is touched
 * from the event loop thread only; worker threads get copies of what they
 * need and report back through uv_async or uv_queue_work completions.
 */

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct cJSON;

#include "image_path.h"
#include "net_policy.h"
#include "sandbox_vm.h"
#include "spec.h"
#include "vmm_control.h"

struct http_request;
struct api_call;
struct exec_session;
struct auth_keys;
struct image_build;
struct agent_conn;
struct vmm_process;
struct vmm_launcher_ops;

/* Sandbox networks: one /30 each out of 10.200.0.0/16 (net.c). */
#define SANDBOXD_NET_POOL_SIZE 16384

/*
 * The lifecycle, changed only by sandbox.c's set_state: STARTING until the
 * guest agent answers, RUNNING, STOPPING once its end is decided (reason and
 * returncode final, the VMM asked to stop), FINISHED once the VMM is gone.
 */
enum sandbox_state { SANDBOX_STARTING, SANDBOX_RUNNING, SANDBOX_STOPPING, SANDBOX_FINISHED, SANDBOX_STATES };

/* Why a sandbox finished, with its returncode (docs/api.md). */
#define RC_TIMEOUT 124
#define RC_FAILED 125
#define RC_TERMINATED 137

/* A sandbox's network (net.c); index 0: none. */
struct sandbox_net {
	unsigned index;
	char tap[16];
	uint8_t gateway_mac[6];
	bool has_v6;
	enum net_mode mode;  /* the one the VMM confirmed */
	struct cJSON *allow; /* the allowlist's CIDR strings, with NET_ALLOWLIST */
	bool changing;       /* a policy change waits for the VMM's answer */
};

/* A snapshot image mounted in a sandbox (snapshots.c); path "" when the slot is free. */
#define SANDBOX_MOUNT_SLOTS 3
struct sandbox_mount {
	char path[256];
	char image[40];
	bool busy; /* a mount or unmount is under way */
};

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
	struct sandbox_net net;
	struct sandbox_mount mounts[SANDBOX_MOUNT_SLOTS];
	bool snapshot_busy; /* the scratch drive is in use */
	struct sandbox_watch *watchers; /* told when the sandbox finishes (GET .../wait) */
};

struct sandboxd {
	uv_loop_t *loop;
	char state_dir[256];
	char images_dir[4096];
	struct image_dirs image_dirs; /* where a client's image path may point: images_dir, --image-dir */
	char vmm_path[4096];
	const struct vmm_launcher_ops *launcher; /* how VMMs start and stop (vmm_launcher.h) */
	char image_builder[4096]; /* "" when images cannot be built here */
	unsigned max_sandboxes;
	unsigned max_memory_mib;
	struct auth_keys *keys;
	bool net_enabled;
	struct cJSON *allow_private; /* --allow-private-egress: CIDR strings, for every sandbox */
	struct sandbox *sandboxes;
	uv_timer_t sweep_timer;
	bool stopping;
	uint8_t net_pool[SANDBOXD_NET_POOL_SIZE / 8]; /* network indexes in use (net.c) */
	struct image_build *builds; /* built-in images built on first use (images.c) */
	size_t nbuilds;
	char snapshot_dir[320];     /* snapshot images, their records and wrapped keys */
	unsigned image_sweep_s;     /* how often expired images are deleted */
	uv_timer_t image_sweep_timer;
};

/* ---- sandbox.c: lifecycle ---- */
/* Starts a sandbox from spec (taken); replies to req once it is ready or failed. */
void sandbox_create(struct sandboxd *d, struct sandbox_spec *spec, struct api_call *call);
struct sandbox *sandbox_find(struct sandboxd *d, const char *id_or_name);
void sandbox_terminate(struct sandbox *sb, const char *reason, int returncode, const char *message);
void sandbox_delete(struct sandbox *sb);
/* "starting", "running", "finished" (stopping too): the API's and the record's word. */
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
/* Counts sandboxes holding resources (starting or running, or a VMM still alive). */
void sandbox_usage(const struct sandboxd *d, unsigned *count, unsigned *memory_mib);
/* w->finished is called once, when sb finishes, unless unwatched before; the watcher holds its own reference. */
void sandbox_watch(struct sandbox *sb, struct sandbox_watch *w);
void sandbox_unwatch(struct sandbox *sb, struct sandbox_watch *w);
void sandbox_sweep(struct sandboxd *d);
double sandboxd_wall_time(void);
void sandbox_make_id(const char *prefix, char *out, size_t len);

/* ---- store.c: the registry on disk ---- */
/* dir/name replaced by text all at once: write, fsync, rename, fsync dir. */
int store_write_atomic(const char *dir, const char *name, const char *text);
int store_save(const struct sandbox *sb);
/* Calls fn for each stored record (a cJSON * it takes). */
int store_load_all(const char *state_dir, void (*fn)(void *ctx, const char *id, void *record), void *ctx);
int store_remove(const struct sandbox *sb);

/* ---- exec.c ---- */
/* Starts argv in the sandbox; 0 with *out, or -errno with a message. */
int exec_start(struct sandbox *sb, const struct exec_spec *spec, bool entrypoint, struct exec_session **out,
	       char *err, size_t errlen);
struct exec_session *exec_find(struct sandbox *sb, const char *id);
const char *exec_id(const struct exec_session *ex);
void *exec_to_json(const struct exec_session *ex);
/* GET .../output: streams the output to req; -EBUSY when another reader has it. */
int exec_attach_output(struct exec_session *ex, struct http_request *req);
/* POST .../stdin: set up at headers time; replies when the body ended. */
int exec_attach_stdin(struct exec_session *ex, struct http_request *req);
int exec_signal(struct exec_session *ex, int sig);

/* ---- images.c: built-in images built on first use ---- */
int images_init(struct sandboxd *d);
void images_destroy(struct sandboxd *d);
bool images_can_build(const struct sandboxd *d, const char *name);
/* Builds spec's image (or joins the build under way), then creates; takes spec. */
int images_build_and_create(struct sandboxd *d, struct sandbox_spec *spec, struct api_call *call);
void *images_to_json(const struct sandboxd *d);

/* ---- net.c: taps, addresses, NAT, the VMM's egress policy ---- */
int net_init(struct sandboxd *d);
/* The network part of a sandbox's lifecycle (setup, teardown, adopt, ...) is sandbox_net_part (sandbox_part.h). */
const char *net_mode_name(const struct sandbox *sb);
void net_get(struct sandbox *sb, struct api_call *call);
void net_put(struct sandbox *sb, struct api_call *call);

/* ---- snapshots.c: encrypted snapshot images (docs/image-format.md) ---- */
/* Creates the store and the managed key; 0 or -errno with a message on stderr. */
int snapshots_init(struct sandboxd *d);
/* Replaces the managed key, re-wrapping every managed image's key; for --rotate-managed-key. */
int snapshots_rotate_managed_key(const char *state_dir);
void snapshots_sweep(struct sandboxd *d);
void snapshot_create(struct sandbox *sb, struct api_call *call);
void snapshot_mount(struct sandbox *sb, struct api_call *call);
void snapshot_unmount(struct sandbox *sb, struct api_call *call);
/* The image records (a cJSON *). */
void *snapshots_list(struct sandboxd *d);
/* 0 with *out (a cJSON *), or -ENOENT with a message. */
int snapshots_get(struct sandboxd *d, const char *id, void **out, char *err, size_t errlen);
/* 0, or -ENOENT, -EBUSY (mounted), -EIO with a message. */
int snapshots_delete(struct sandboxd *d, const char *id, char *err, size_t errlen);
/* The mounts' part of a sandbox's lifecycle is sandbox_mounts_part (sandbox_part.h). */

/* ---- files.c ---- */
/* Routes .../files[/op]; op is "", "stat", "list" or "mkdir". Set at headers time. */
void files_route(struct sandbox *sb, const char *op, struct http_request *req);

#endif
