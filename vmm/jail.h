#ifndef SANDVM_VMM_JAIL_H
#define SANDVM_VMM_JAIL_H

/*
 * The VMM's jail (docs/security.md, "The jail"): entered by main() right
 * after the command line is parsed and validated, before the VM exists or
 * any guest input is read. One process goes in, two come out: a keeper
 * outside the new PID namespace, which only forwards stop signals and
 * mirrors its child's end, and the child, PID 1 of its namespaces, in an
 * empty read-only root, as an unprivileged uid/gid with no capabilities.
 * Every step either succeeds or the whole start fails: no half-jailed VMM.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMM_JAIL_FSIZE_DEFAULT (64ull << 30) /* RLIMIT_FSIZE: bytes a file the VMM writes may reach */
#define VMM_JAIL_FSIZE_MIN (1ull << 20)
#define VMM_JAIL_FSIZE_MAX (1ull << 62)
#define VMM_JAIL_NOFILE_DEFAULT 4096u
#define VMM_JAIL_NOFILE_MIN 64u
#define VMM_JAIL_NOFILE_MAX (1u << 20)
/* The most descriptors a command line can name ("fd:N", "tapfd=N") that the jail keeps open. */
#define VMM_JAIL_MAX_FDS 64u
/* The jailed VMM's host name (UTS namespace). */
#define VMM_JAIL_HOSTNAME "sandvm"

/* --jail-*: root, uid and gid all or none; root NULL: no jail. */
struct vmm_jail_config {
	char *root;     /* an existing empty directory, absolute: the VMM's / */
	uint32_t uid, gid; /* non-zero */
	char *cgroup;   /* a cgroup v2 leaf the VMM joins, absolute, or NULL */
	uint64_t fsize; /* 0: VMM_JAIL_FSIZE_DEFAULT */
	uint32_t nofile; /* 0: VMM_JAIL_NOFILE_DEFAULT */
};

void vmm_jail_config_destroy(struct vmm_jail_config *j);

/*
 * Sets one jail field from a flag name ("jail-root") or a JSON name
 * ("jail_root"). 0, -ENOENT when name is no jail field, -ENOMEM, or -EINVAL
 * with a message in err.
 */
int vmm_jail_config_set(struct vmm_jail_config *j, const char *name, const char *value, char *err, size_t errlen);
/* Whether name is a JSON field of the jail, and whether it is numeric there. */
bool vmm_jail_is_json_field(const char *name, bool *numeric);
/* All or none of root/uid/gid, absolute paths, root not "/". 0 or -EINVAL with a message. */
int vmm_jail_config_validate(const struct vmm_jail_config *j, char *err, size_t errlen);

/*
 * The descriptors a command line names: N of every "fd:N" (the whole value,
 * or an option after '=' or ',') and of every "tapfd=N" option, N >= 3.
 * Adds them to fds (sorted, no duplicates, *n of cap used); -E2BIG when
 * more than cap are named.
 */
int vmm_jail_named_fds(const char *text, int *fds, size_t *n, size_t cap);

enum vmm_jail_role {
	VMM_JAIL_INSIDE = 0, /* the jailed child: go on and run the VM */
	VMM_JAIL_KEEPER = 1, /* the keeper, its child gone: exit with *exit_code */
};

/*
 * Enters the jail; keep[0..nkeep) are the descriptors (>= 3) to keep open
 * besides stdin, stdout and stderr. Returns VMM_JAIL_INSIDE in the child,
 * VMM_JAIL_KEEPER in the keeper once the child ended with *exit_code (a
 * child killed by signal S kills the keeper with S first, if S can), or
 * -errno with a message naming the step in err (the process, keeper or
 * child, must then exit with an error).
 */
int vmm_jail_enter(const struct vmm_jail_config *j, const int *keep, size_t nkeep, int *exit_code, char *err,
		   size_t errlen);

#endif
