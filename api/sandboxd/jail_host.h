#ifndef SANDVM_API_SANDBOXD_JAIL_HOST_H
#define SANDVM_API_SANDBOXD_JAIL_HOST_H

/*
 * The host side of the VMM's jail (docs/security.md, "The jail"): the
 * daemon's settings (--no-jail, --jail-ids, --cgroup-root) and, per
 * sandbox, as the sandbox part sandbox_jail_part (sandbox_part.h): a uid
 * and gid of its own (the lowest free in the range), the empty jail root
 * RUN_DIR/root, and a cgroup v2 leaf CGROUP_ROOT/sandvm/ID with the
 * sandbox's limits, which the VMM joins; all kept in the sandbox's record,
 * so a restarted daemon keeps them reserved for the VMMs it adopts, and
 * removed when the VMM is gone. The parsers and the arithmetic are pure and
 * unit-tested.
 */

#include <stdbool.h>
#include <stddef.h>

#include "sandbox_vm.h"

#define JAIL_HOST_IDS_FIRST_DEFAULT 200000u
#define JAIL_HOST_IDS_COUNT_DEFAULT 10000u
#define JAIL_HOST_IDS_COUNT_MAX (1u << 24)
/* What a VMM may use besides guest RAM (its own code, queues, buffers) before its cgroup's OOM killer ends it. */
#define JAIL_HOST_VMM_ALLOWANCE_MIB 256u
/* Tasks a VMM may have besides one thread per vCPU. */
#define JAIL_HOST_PIDS_EXTRA 64u

struct sandboxd;
struct sandbox;

/* The daemon's settings (in struct sandboxd). */
struct jail_host {
	bool enabled;            /* off with --no-jail: VMMs run as today, unjailed */
	unsigned first, count;   /* --jail-ids FIRST:COUNT */
	char cgroup_root[4096];  /* --cgroup-root, or the cgroup2 mount; "" for none */
	bool memory, pids, cpu;  /* controllers enabled for CGROUP_ROOT/sandvm's leaves */
};

/* One sandbox's jail (in struct sandbox). */
struct sandbox_jail {
	bool held;                  /* the uid, root and leaf are this sandbox's until teardown */
	struct sandbox_vm_jail vm;  /* what its VMM is launched with; points into root and cgroup */
	char root[512];
	char cgroup[4200];          /* "" for none */
	unsigned memory_max_mib;    /* its leaf's memory.max (0: no memory controller) */
	bool oom_killed;            /* memory.events said oom_kill > 0 when the VMM was gone */
};

/* Defaults: on, 200000:10000, no cgroup root chosen yet. */
void jail_host_defaults(struct jail_host *h);
/*
 * At start, after the options: the cgroup root (cgroup_root_opt, or the
 * cgroup2 mount in /proc/self/mountinfo) with memory, pids, cpu and io
 * enabled down to CGROUP_ROOT/sandvm; without cgroup v2, a warning and no
 * cgroups. 0, or -errno after logging why (an unusable --cgroup-root, not
 * root).
 */
int jail_host_init(struct jail_host *h, const char *cgroup_root_opt);

/*
 * A jail for a VMM (a sandbox's, or a template VM's, which is no sandbox):
 * the lowest free id, the root RUN_DIR/root, a leaf CGROUP_ROOT/sandvm/ID
 * with the limits of memory_mib and cpus. 0 with j held, or -errno with err.
 */
int jail_host_take(struct sandboxd *d, const char *id, const char *run_dir, unsigned memory_mib, unsigned cpus,
		   struct sandbox_jail *j, char *err, size_t errlen);
/* Removes the leaf (ending what is left in it) and the root; the id is free again. */
void jail_host_release(struct sandbox_jail *j);

/* The sandbox's end when its VMM passed its cgroup's memory.max: the message into out, true. */
bool jail_host_oom_message(const struct sandbox *sb, char *out, size_t cap);

/* ---- pure parts ---- */

/* "FIRST:COUNT", decimal: FIRST >= 1, 1 <= COUNT <= JAIL_HOST_IDS_COUNT_MAX, the last id below 2^32 - 1. */
int jail_host_parse_ids(const char *s, unsigned *first, unsigned *count);
/* The lowest id of [first, first + count) not in used[0..n); -ENOSPC when all are. */
int jail_host_pick_id(const unsigned *used, size_t n, unsigned first, unsigned count, unsigned *out);

/* A leaf's limits for a sandbox of memory_mib and cpus. */
struct jail_limits {
	unsigned long long memory_max; /* bytes: guest RAM + JAIL_HOST_VMM_ALLOWANCE_MIB */
	unsigned pids_max;             /* cpus + JAIL_HOST_PIDS_EXTRA */
	char cpu_max[32];              /* "cpus*100000 100000": as many CPUs' time as it has vCPUs */
};
void jail_host_limits(unsigned memory_mib, unsigned cpus, struct jail_limits *out);

/*
 * The mount point of the first cgroup2 file system in a mountinfo text
 * (proc(5)), its octal escapes undone, into out; -ENOENT if none, a line
 * that does not parse being skipped.
 */
int jail_host_cgroup2_mount(const char *mountinfo, char *out, size_t cap);
/* The oom_kill count of a memory.events text, or -1 if it has none. */
long long jail_host_oom_kills(const char *memory_events);

#endif
