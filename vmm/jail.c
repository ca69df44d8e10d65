/*
 * The VMM's jail (jail.h; docs/security.md, "The jail"). The steps, in this
 * order, each one's failure an error naming it:
 *   1. join the cgroup leaf sandboxd made (its limits are already written);
 *   2. close every descriptor the command line does not name, clear the
 *      environment;
 *   3. new mount, PID, IPC, UTS and network namespaces;
 *   4. fork: the keeper stays outside the PID namespace, drops to the same
 *      uid/gid with no capabilities and forwards stop signals; the child,
 *      PID 1, dies with the keeper (PDEATHSIG, checked through a pipe);
 *   5. child: mounts private, the jail directory bound, pivot_root into it,
 *      the old root detached, the new one read-only, nosuid, nodev, noexec;
 *   6. host name, rlimits, not dumpable;
 *   7. no capabilities (bounding set, securebits locked), the jail's uid and
 *      gid with no supplementary groups, no ambient set, NO_NEW_PRIVS.
 */
#include "jail.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include "parse.h"

#define JAIL_NAMESPACES (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET)
/* Securebits set and locked: uid 0 grants nothing, uid changes never touch capabilities by themselves. */
#define JAIL_SECUREBITS                                                                                      \
	(SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |     \
	 SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED)
/* While a forwarded signal cannot reach the child yet (it is still root), the keeper retries this often. */
#define KEEPER_RETRY_MS 10

/* ---- configuration ---- */

void vmm_jail_config_destroy(struct vmm_jail_config *j)
{
	free(j->root);
	free(j->cgroup);
	memset(j, 0, sizeof(*j));
}

static int set_path(char **field, const char *name, const char *value, char *err, size_t errlen)
{
	char *copy;

	if (!*value)
		return sv_errf(-EINVAL, err, errlen, "%s: empty path", name);
	copy = strdup(value);
	if (!copy)
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

static int set_id(uint32_t *field, const char *name, const char *value, char *err, size_t errlen)
{
	uint64_t v;
	int r = sv_parse_u64(value, 1, 4294967294u, &v);

	if (r < 0)
		return sv_errf(-EINVAL, err, errlen, "%s: '%s' is not an id in 1..4294967294 (never 0: root)", name,
			       value);
	*field = (uint32_t)v;
	return 0;
}

/* "jail-root" or "jail_root" -> "root"; NULL for any other name. */
static const char *jail_field(const char *name)
{
	if (strncmp(name, "jail", 4) != 0 || (name[4] != '-' && name[4] != '_'))
		return NULL;
	return name + 5;
}

int vmm_jail_config_set(struct vmm_jail_config *j, const char *name, const char *value, char *err, size_t errlen)
{
	const char *f = jail_field(name);
	uint64_t v;
	int r;

	if (!f)
		return -ENOENT;
	if (strcmp(f, "root") == 0)
		return set_path(&j->root, "jail-root", value, err, errlen);
	if (strcmp(f, "cgroup") == 0)
		return set_path(&j->cgroup, "jail-cgroup", value, err, errlen);
	if (strcmp(f, "uid") == 0)
		return set_id(&j->uid, "jail-uid", value, err, errlen);
	if (strcmp(f, "gid") == 0)
		return set_id(&j->gid, "jail-gid", value, err, errlen);
	if (strcmp(f, "fsize") == 0) {
		r = sv_parse_u64(value, VMM_JAIL_FSIZE_MIN, VMM_JAIL_FSIZE_MAX, &v);
		if (r < 0)
			return sv_errf(-EINVAL, err, errlen, "jail-fsize: '%s' is not a number of bytes in %llu..%llu",
				       value, VMM_JAIL_FSIZE_MIN, VMM_JAIL_FSIZE_MAX);
		j->fsize = v;
		return 0;
	}
	if (strcmp(f, "nofile") == 0) {
		r = sv_parse_u64(value, VMM_JAIL_NOFILE_MIN, VMM_JAIL_NOFILE_MAX, &v);
		if (r < 0)
			return sv_errf(-EINVAL, err, errlen, "jail-nofile: '%s' is not a number in %u..%u", value,
				       VMM_JAIL_NOFILE_MIN, VMM_JAIL_NOFILE_MAX);
		j->nofile = (uint32_t)v;
		return 0;
	}
	return -ENOENT;
}

bool vmm_jail_is_json_field(const char *name, bool *numeric)
{
	static const char *const paths[] = {"jail_root", "jail_cgroup"};
	static const char *const numbers[] = {"jail_uid", "jail_gid", "jail_fsize", "jail_nofile"};

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (strcmp(name, paths[i]) == 0) {
			*numeric = false;
			return true;
		}
	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++)
		if (strcmp(name, numbers[i]) == 0) {
			*numeric = true;
			return true;
		}
	return false;
}

int vmm_jail_config_validate(const struct vmm_jail_config *j, char *err, size_t errlen)
{
	bool any = j->root || j->uid || j->gid;

	if (!any) {
		if (j->cgroup || j->fsize || j->nofile)
			return sv_errf(-EINVAL, err, errlen,
				       "jail: --jail-cgroup, --jail-fsize and --jail-nofile need --jail-root, --jail-uid "
				       "and --jail-gid");
		return 0;
	}
	if (!j->root || !j->uid || !j->gid)
		return sv_errf(-EINVAL, err, errlen, "jail: --jail-root, --jail-uid and --jail-gid go together (missing %s)",
			       !j->root ? "--jail-root" : !j->uid ? "--jail-uid" : "--jail-gid");
	if (j->root[0] != '/')
		return sv_errf(-EINVAL, err, errlen, "jail-root: '%s' is not an absolute path", j->root);
	if (j->root[strspn(j->root, "/")] == '\0')
		return sv_errf(-EINVAL, err, errlen, "jail-root: '/' would jail the VMM in the whole file system");
	if (j->cgroup && j->cgroup[0] != '/')
		return sv_errf(-EINVAL, err, errlen, "jail-cgroup: '%s' is not an absolute path", j->cgroup);
	return 0;
}

/* ---- the descriptors a command line names ---- */

static int add_fd(int fd, int *fds, size_t *n, size_t cap)
{
	size_t i = 0;

	while (i < *n && fds[i] < fd)
		i++;
	if (i < *n && fds[i] == fd)
		return 0;
	if (*n == cap)
		return -E2BIG;
	memmove(fds + i + 1, fds + i, (*n - i) * sizeof(*fds));
	fds[i] = fd;
	(*n)++;
	return 0;
}

/* Decimal digits up to ',' or the end; -1 if anything else, or out of 3..INT_MAX. */
static int fd_number(const char *p)
{
	long long v = 0;
	const char *q = p;

	while (*q >= '0' && *q <= '9') {
		v = v * 10 + (*q - '0');
		if (v > INT_MAX)
			return -1;
		q++;
	}
	if (q == p || (*q && *q != ','))
		return -1;
	return v < 3 ? -1 : (int)v;
}

int vmm_jail_named_fds(const char *text, int *fds, size_t *n, size_t cap)
{
	for (const char *p = text; *p; p++) {
		int fd = -1, r;

		if (p != text && p[-1] != ',' && p[-1] != '=')
			continue;
		if (strncmp(p, "fd:", 3) == 0)
			fd = fd_number(p + 3);
		else if (strncmp(p, "tapfd=", 6) == 0)
			fd = fd_number(p + 6);
		if (fd < 0)
			continue;
		r = add_fd(fd, fds, n, cap);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- the steps ---- */

static int step_failed(int e, char *err, size_t errlen, const char *step)
{
	return sv_errf(-e, err, errlen, "jail: %s: %s", step, strerror(e));
}

static int join_cgroup(const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX], step[PATH_MAX + 32];
	int fd, e = 0;

	snprintf(step, sizeof(step), "joining the cgroup %s", dir);
	if ((size_t)snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= sizeof(path))
		return step_failed(ENAMETOOLONG, err, errlen, step);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return step_failed(errno, err, errlen, step);
	/* "0": the writer itself. */
	if (write(fd, "0\n", 2) != 2)
		e = errno ? errno : EIO;
	close(fd);
	return e ? step_failed(e, err, errlen, step) : 0;
}

/* Closes every descriptor from 3 up but keep[0..n) (sorted, each >= 3). */
static int close_others(const int *keep, size_t n)
{
	unsigned lo = 3;

	for (size_t i = 0; i <= n; i++) {
		unsigned hi = i < n ? (unsigned)keep[i] : ~0u;

		if (hi > lo && syscall(SYS_close_range, lo, hi - 1, 0) < 0)
			return -errno;
		if (i < n)
			lo = (unsigned)keep[i] + 1;
	}
	return 0;
}

static int set_limit(int resource, rlim_t value)
{
	struct rlimit rl;

	if (getrlimit(resource, &rl) < 0)
		return -errno;
	/* Never above the hard limit there is: raising it would need CAP_SYS_RESOURCE for nothing. */
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < value)
		value = rl.rlim_max;
	rl.rlim_cur = rl.rlim_max = value;
	return setrlimit(resource, &rl) < 0 ? -errno : 0;
}

static int caps_get(struct __user_cap_data_struct data[2])
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};

	return syscall(SYS_capget, &hdr, data) < 0 ? -errno : 0;
}

/*
 * Step 7, for the child and the keeper alike: no capability can come back
 * (bounding set empty, securebits locked), the jail's ids, nothing left in
 * any capability set, NO_NEW_PRIVS.
 */
static int drop_privileges(const struct vmm_jail_config *j, char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	char step[64];
	gid_t g = j->gid;
	uid_t u = j->uid;

	for (int cap = 0; cap < 64; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL) /* past the last capability this kernel knows */
				break;
			snprintf(step, sizeof(step), "dropping capability %d from the bounding set", cap);
			return step_failed(errno, err, errlen, step);
		}
	if (prctl(PR_SET_SECUREBITS, JAIL_SECUREBITS, 0, 0, 0) < 0)
		return step_failed(errno, err, errlen, "setting and locking the securebits");
	if (setgroups(0, NULL) < 0)
		return step_failed(errno, err, errlen, "setgroups(0)");
	if (setresgid(g, g, g) < 0)
		return step_failed(errno, err, errlen, "setresgid");
	if (setresuid(u, u, u) < 0)
		return step_failed(errno, err, errlen, "setresuid");
	/* With SECBIT_NO_SETUID_FIXUP the uid change kept the sets: empty them, then make sure. */
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		return step_failed(errno, err, errlen, "clearing the capability sets");
	if (caps_get(data) < 0)
		return step_failed(errno, err, errlen, "capget");
	for (int i = 0; i < 2; i++)
		if (data[i].effective || data[i].permitted || data[i].inheritable)
			return step_failed(EPERM, err, errlen, "capabilities are left after dropping them");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
		return step_failed(errno, err, errlen, "clearing the ambient capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return step_failed(errno, err, errlen, "PR_SET_NO_NEW_PRIVS");
	return 0;
}

/* Step 5: the jail directory becomes /, alone, read-only. */
static int enter_root(const char *root, char *err, size_t errlen)
{
	char step[PATH_MAX + 32];

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return step_failed(errno, err, errlen, "making every mount private");
	snprintf(step, sizeof(step), "bind-mounting %s", root);
	if (mount(root, root, NULL, MS_BIND, NULL) < 0)
		return step_failed(errno, err, errlen, step);
	snprintf(step, sizeof(step), "chdir %s", root);
	if (chdir(root) < 0)
		return step_failed(errno, err, errlen, step);
	/* The old root stacks under the new one at ".", and is detached from there. */
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return step_failed(errno, err, errlen, "pivot_root");
	if (umount2(".", MNT_DETACH) < 0)
		return step_failed(errno, err, errlen, "detaching the old root");
	if (chdir("/") < 0)
		return step_failed(errno, err, errlen, "chdir /");
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return step_failed(errno, err, errlen, "remounting / read-only, nosuid, nodev, noexec");
	return 0;
}

/* Step 6. */
static int set_limits(const struct vmm_jail_config *j, char *err, size_t errlen)
{
	int r;

	if (sethostname(VMM_JAIL_HOSTNAME, strlen(VMM_JAIL_HOSTNAME)) < 0)
		return step_failed(errno, err, errlen, "sethostname");
	r = set_limit(RLIMIT_NOFILE, j->nofile ? j->nofile : VMM_JAIL_NOFILE_DEFAULT);
	if (r < 0)
		return step_failed(-r, err, errlen, "RLIMIT_NOFILE");
	r = set_limit(RLIMIT_FSIZE, j->fsize ? j->fsize : VMM_JAIL_FSIZE_DEFAULT);
	if (r < 0)
		return step_failed(-r, err, errlen, "RLIMIT_FSIZE");
	/* A write past RLIMIT_FSIZE is then an error (EFBIG) the VMM reports, not its death. */
	if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR)
		return step_failed(errno, err, errlen, "ignoring SIGXFSZ");
	r = set_limit(RLIMIT_CORE, 0);
	if (r < 0)
		return step_failed(-r, err, errlen, "RLIMIT_CORE");
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return step_failed(errno, err, errlen, "PR_SET_DUMPABLE");
	return 0;
}

/* The child dies with the keeper: PDEATHSIG, then the pipe says whether the keeper already went. */
static int bind_to_keeper(int alive_r, char *err, size_t errlen)
{
	struct pollfd pfd = {.fd = alive_r, .events = POLLIN};

	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		return step_failed(errno, err, errlen, "PR_SET_PDEATHSIG");
	if (poll(&pfd, 1, 0) != 0)
		return step_failed(ESRCH, err, errlen, "the keeper is gone");
	return 0;
}

static int child_run(const struct vmm_jail_config *j, int alive_r, char *err, size_t errlen)
{
	int r = bind_to_keeper(alive_r, err, errlen);

	if (r == 0)
		r = enter_root(j->root, err, errlen);
	if (r == 0)
		r = set_limits(j, err, errlen);
	if (r == 0)
		r = drop_privileges(j, err, errlen);
	/* The uid change cleared PDEATHSIG: set it again, and look again. */
	if (r == 0)
		r = bind_to_keeper(alive_r, err, errlen);
	close(alive_r);
	return r;
}

/* The child ended with status st: the keeper ends the same way. */
static int keeper_mirror(int st, int *exit_code)
{
	sigset_t one;
	int sig;

	if (WIFEXITED(st)) {
		*exit_code = WEXITSTATUS(st);
		return VMM_JAIL_KEEPER;
	}
	sig = WTERMSIG(st);
	signal(sig, SIG_DFL);
	sigemptyset(&one);
	sigaddset(&one, sig);
	sigprocmask(SIG_UNBLOCK, &one, NULL);
	raise(sig);
	/* Still here: a signal whose default is not to end a process. */
	*exit_code = 128 + sig;
	return VMM_JAIL_KEEPER;
}

static int keeper_run(const struct vmm_jail_config *j, pid_t child, int alive_w, const sigset_t *waited,
		      int *exit_code, char *err, size_t errlen)
{
	struct timespec retry = {.tv_sec = 0, .tv_nsec = KEEPER_RETRY_MS * 1000000L};
	int pending = 0, r, st;

	r = close_others(&alive_w, 1);
	if (r < 0)
		r = step_failed(-r, err, errlen, "keeper: closing descriptors");
	if (r == 0 && (set_limit(RLIMIT_CORE, 0) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0))
		r = step_failed(errno, err, errlen, "keeper: no core dumps");
	if (r == 0)
		r = drop_privileges(j, err, errlen);
	if (r < 0) {
		/* Without the keeper the child dies (PDEATHSIG, or its check of the pipe). */
		kill(child, SIGKILL);
		return r;
	}
	for (;;) {
		siginfo_t si;
		int sig = pending ? sigtimedwait(waited, &si, &retry) : sigwaitinfo(waited, &si);

		if (sig < 0) {
			/* Until the child took the jail's uid it is root and out of our reach: try again. */
			if (errno == EAGAIN && pending && kill(child, pending) == 0)
				pending = 0;
			continue;
		}
		if (sig != SIGCHLD) {
			if (kill(child, sig) < 0 && errno == EPERM)
				pending = sig;
			continue;
		}
		if (waitpid(child, &st, WNOHANG) == child)
			return keeper_mirror(st, exit_code);
	}
}

int vmm_jail_enter(const struct vmm_jail_config *j, const int *keep, size_t nkeep, int *exit_code, char *err,
		   size_t errlen)
{
	sigset_t waited, old;
	int alive[2], r;
	pid_t child;

	if (j->cgroup) {
		r = join_cgroup(j->cgroup, err, errlen);
		if (r < 0)
			return r;
	}
	r = close_others(keep, nkeep);
	if (r < 0)
		return step_failed(-r, err, errlen, "closing the descriptors not named on the command line");
	if (clearenv() != 0)
		return step_failed(ENOMEM, err, errlen, "clearenv");
	if (unshare(JAIL_NAMESPACES) < 0)
		return step_failed(errno, err, errlen, "unshare(mount, PID, IPC, UTS, network namespaces)");
	/* pivot_root moves every process of the mount namespace whose root and cwd are the old root: the keeper too. */
	if (chdir("/") < 0)
		return step_failed(errno, err, errlen, "chdir /");
	/*
	 * Blocked before fork: the keeper waits for them, and the child (PID 1,
	 * which drops signals it has no handler for) keeps them queued for the
	 * VMM's signalfd.
	 */
	sigemptyset(&waited);
	sigaddset(&waited, SIGTERM);
	sigaddset(&waited, SIGINT);
	sigaddset(&waited, SIGHUP);
	sigaddset(&waited, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &waited, &old) < 0)
		return step_failed(errno, err, errlen, "blocking signals");
	if (pipe2(alive, O_CLOEXEC) < 0)
		return step_failed(errno, err, errlen, "pipe");
	child = fork();
	if (child < 0) {
		r = step_failed(errno, err, errlen, "fork");
		close(alive[0]);
		close(alive[1]);
		return r;
	}
	if (child > 0) {
		close(alive[0]);
		return keeper_run(j, child, alive[1], &waited, exit_code, err, errlen);
	}
	close(alive[1]);
	sigdelset(&waited, SIGCHLD);
	sigorset(&old, &old, &waited);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return child_run(j, alive[0], err, errlen);
}
