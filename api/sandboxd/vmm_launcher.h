#ifndef SANDVM_API_SANDBOXD_VMM_LAUNCHER_H
#define SANDVM_API_SANDBOXD_VMM_LAUNCHER_H

/*
 * How sandboxd starts, takes back and stops a sandbox's VMM: one const ops
 * table, so the lifecycle (sandbox.c) knows nothing of processes, pidfds or
 * signals. vmm_launcher_process is the real one: the VMM as a detached
 * child process, in a session of its own so that it outlives a daemon
 * restart, with a clean environment; a later daemon adopts it by pid,
 * checked against the process's start time, since pids are reused.
 *
 * A launched VMM is a struct vmm_process the launcher owns. Its exit is
 * reported once, through the exited callback, after which the launcher
 * frees it; vmm_launcher_ops.release drops it earlier, with no callback,
 * leaving the process running (a daemon that shuts down).
 */

#include <spawn.h>
#include <stdbool.h>
#include <uv.h>

struct sandbox_vm;
struct sandbox_vm_cmd;
struct sandbox_vm_config;
struct vmm_process;
struct vmm_spares;

/* how: "exit status N", "killed by signal N", or "adopted VMM exited". */
typedef void (*vmm_exited_fn)(void *ctx, const char *how);

struct vmm_launcher_ops {
	/* The run directory, socket paths and command line of cfg's VMM; starts nothing. 0 or -errno. */
	int (*prepare)(const struct sandbox_vm_config *cfg, struct sandbox_vm *vm, struct sandbox_vm_cmd *cmd);
	/*
	 * Starts cmd with stdout and stderr to log_path and cmd's descriptors as
	 * the child's 3, 4, ...; the caller closes its copies after (whatever
	 * came of it). A spare from spares (NULL: none) runs it when there is
	 * one; a new process otherwise. 0 with *out, or -errno (no callback).
	 */
	int (*spawn)(uv_loop_t *loop, struct vmm_spares *spares, const struct sandbox_vm_cmd *cmd,
		     const char *log_path, vmm_exited_fn exited, void *ctx, struct vmm_process **out);
	/* Takes back pid if it is still the process that started at start_time. 0, -ESRCH or -errno. */
	int (*adopt)(uv_loop_t *loop, int pid, unsigned long long start_time, vmm_exited_fn exited, void *ctx,
		     struct vmm_process **out);
	/* Asks it to stop (SIGTERM), and kills it (SIGKILL) if it still runs grace_ms later. */
	void (*stop)(struct vmm_process *p, unsigned grace_ms);
	/* No more callbacks; frees p; the process runs on. */
	void (*release)(struct vmm_process *p);
	/* Its pid and start time (for the registry, and adopt after a restart). */
	int (*pid)(const struct vmm_process *p, unsigned long long *start_time);
	/* Whether a spare runs it (the metrics' sandvm_vmm_starts_total). */
	bool (*from_spare)(const struct vmm_process *p);
};

extern const struct vmm_launcher_ops vmm_launcher_process;

/* The VMM's whole environment (a spare's too): it reads none, and must not inherit the daemon's. */
extern char *const vmm_launcher_env[];

/* A VMM's spawn attributes: its own session, default signal actions, none blocked. 0 or -errno. */
int vmm_launcher_child_attrs(posix_spawnattr_t *at);

/* A process's start time (field 22 of /proc/PID/stat), 0 when there is none. */
unsigned long long vmm_launcher_start_time(int pid);

#endif
