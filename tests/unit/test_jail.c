/*
 * The VMM's jail (vmm/jail.c): its flags and JSON fields, the descriptors a
 * command line names, and the jail itself, entered for real in a child
 * (root with CAP_SYS_ADMIN needed; skipped otherwise): what a jailed
 * process sees from inside (ids, capabilities, NO_NEW_PRIVS, PID 1, an
 * empty read-only root, the host name, no stray descriptors, no
 * environment), what /proc says of it and of its keeper from outside, and
 * that the keeper mirrors the child's end: exit statuses, forwarded
 * SIGTERM, death by signal, and that the child dies with the keeper.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "config.h"
#include "jail.h"

#define JAIL_ID 4000123u

/* ---- flags, JSON, validation ---- */

static void named_fds(void **state)
{
	static const struct {
		const char *text;
		int fds[3];
		size_t n;
	} cases[] = {
		{"fd:3", {3}, 1},
		{"fd:5,ro,serial=rootfs", {5}, 1},
		{"fd:7,cid=3", {7}, 1},
		{"tapfd=9,mac=02:00:00:00:00:01", {9}, 1},
		{"mac=02:00:00:00:00:01,tapfd=12", {12}, 1},
		{"kernel=fd:10", {10}, 1},
		{"tap=fd:3", {3}, 1},
		{"/var/lib/sandvm/kernel", {0}, 0},
		{"fd:", {0}, 0},
		{"fd:2", {0}, 0},
		{"fd:0", {0}, 0},
		{"fd:-4", {0}, 0},
		{"fd:4x", {0}, 0},
		{"fd:4 ", {0}, 0},
		{"fd:99999999999", {0}, 0},
		{"fd:2147483648", {0}, 0},
		{"xfd:4", {0}, 0},
		{"/tmp/fd:4", {0}, 0},
		{"notapfd=5", {0}, 0},
		{"tapfd=", {0}, 0},
		{"fd:8,fd:4,fd:8", {4, 8}, 2},
		{"", {0}, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int fds[4] = {0};
		size_t n = 0;

		assert_int_equal(vmm_jail_named_fds(cases[i].text, fds, &n, 4), 0);
		if (n != cases[i].n)
			fail_msg("'%s': %zu descriptors, want %zu", cases[i].text, n, cases[i].n);
		for (size_t k = 0; k < n; k++)
			assert_int_equal(fds[k], cases[i].fds[k]);
	}
}

static void named_fds_sorted_and_bounded(void **state)
{
	int fds[3];
	size_t n = 0;

	(void)state;
	assert_int_equal(vmm_jail_named_fds("fd:9", fds, &n, 3), 0);
	assert_int_equal(vmm_jail_named_fds("tapfd=4", fds, &n, 3), 0);
	assert_int_equal(vmm_jail_named_fds("fd:6,ro", fds, &n, 3), 0);
	assert_int_equal(vmm_jail_named_fds("fd:6", fds, &n, 3), 0); /* a repeat takes no room */
	assert_int_equal(n, 3);
	assert_int_equal(fds[0], 4);
	assert_int_equal(fds[1], 6);
	assert_int_equal(fds[2], 9);
	assert_int_equal(vmm_jail_named_fds("fd:5", fds, &n, 3), -E2BIG);
}

static int parse(struct vmm_config *cfg, char **argv, int argc, char *err, size_t errlen)
{
	enum vmm_config_action a;

	vmm_config_init(cfg);
	return vmm_config_parse_args(cfg, argc, argv, &a, err, errlen);
}

static void flags(void **state)
{
	char *argv[] = {"vmm", "--jail-root", "/srv/j", "--jail-uid", "200001", "--jail-gid=200002", "--jail-cgroup",
			"/sys/fs/cgroup/sandvm/sb-1", "--jail-fsize", "1048576", "--jail-nofile", "128"};
	struct vmm_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(parse(&cfg, argv, 12, err, sizeof(err)), 0);
	assert_string_equal(cfg.jail.root, "/srv/j");
	assert_int_equal(cfg.jail.uid, 200001);
	assert_int_equal(cfg.jail.gid, 200002);
	assert_string_equal(cfg.jail.cgroup, "/sys/fs/cgroup/sandvm/sb-1");
	assert_int_equal(cfg.jail.fsize, 1048576);
	assert_int_equal(cfg.jail.nofile, 128);
	assert_int_equal(vmm_jail_config_validate(&cfg.jail, err, sizeof(err)), 0);
	vmm_config_destroy(&cfg);
}

static void bad_flags(void **state)
{
	static const char *const bad[][2] = {
		{"--jail-uid", "0"},         {"--jail-uid", "-1"},        {"--jail-uid", "4294967295"},
		{"--jail-gid", "0"},         {"--jail-gid", "x"},         {"--jail-fsize", "1024"},
		{"--jail-fsize", "1e9"},     {"--jail-nofile", "10"},     {"--jail-nofile", "2000000"},
		{"--jail-root", ""},         {"--jail-cgroup", ""},       {"--jail_root", "/srv/j"},
		{"--jail-rooot", "/srv/j"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *argv[] = {"vmm", (char *)bad[i][0], (char *)bad[i][1]};
		struct vmm_config cfg;
		char err[256] = "";

		if (parse(&cfg, argv, 3, err, sizeof(err)) != -EINVAL)
			fail_msg("%s %s was accepted", bad[i][0], bad[i][1]);
		assert_true(err[0]);
		vmm_config_destroy(&cfg);
	}
}

static void validation(void **state)
{
	static const struct {
		struct vmm_jail_config j;
		const char *says;
	} cases[] = {
		{{.root = "/j", .uid = 5}, "--jail-gid"},
		{{.root = "/j", .gid = 5}, "--jail-uid"},
		{{.uid = 5, .gid = 5}, "--jail-root"},
		{{.cgroup = "/c"}, "need"},
		{{.fsize = 1 << 20}, "need"},
		{{.nofile = 100}, "need"},
		{{.root = "j", .uid = 5, .gid = 5}, "absolute"},
		{{.root = "/", .uid = 5, .gid = 5}, "whole file system"},
		{{.root = "///", .uid = 5, .gid = 5}, "whole file system"},
		{{.root = "/j", .uid = 5, .gid = 5, .cgroup = "c"}, "absolute"},
	};
	struct vmm_jail_config none = {0}, ok = {.root = "/j", .uid = 5, .gid = 6};
	char err[256];

	(void)state;
	assert_int_equal(vmm_jail_config_validate(&none, err, sizeof(err)), 0);
	assert_int_equal(vmm_jail_config_validate(&ok, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_int_equal(vmm_jail_config_validate(&cases[i].j, err, sizeof(err)), -EINVAL);
		if (!strstr(err, cases[i].says))
			fail_msg("case %zu: '%s' does not say '%s'", i, err, cases[i].says);
	}
}

static void json(void **state)
{
	static const char good[] = "{\"jail_root\": \"/srv/j\", \"jail_uid\": 7, \"jail_gid\": 8, "
				   "\"jail_cgroup\": \"/cg\", \"jail_fsize\": 2097152, \"jail_nofile\": 256}";
	static const char *const bad[] = {
		"{\"jail_uid\": \"7\"}", "{\"jail_uid\": 0}",     "{\"jail_uid\": 1.5}", "{\"jail_root\": 3}",
		"{\"jail_gid\": -1}",    "{\"jail-root\": \"/j\"}", "{\"jail_nofile\": 1}",
	};
	struct vmm_config cfg;
	char err[256];

	(void)state;
	vmm_config_init(&cfg);
	assert_int_equal(vmm_config_parse_json(&cfg, good, strlen(good), err, sizeof(err)), 0);
	assert_string_equal(cfg.jail.root, "/srv/j");
	assert_int_equal(cfg.jail.uid, 7);
	assert_int_equal(cfg.jail.gid, 8);
	assert_string_equal(cfg.jail.cgroup, "/cg");
	assert_int_equal(cfg.jail.fsize, 2097152);
	assert_int_equal(cfg.jail.nofile, 256);
	vmm_config_destroy(&cfg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vmm_config_init(&cfg);
		if (vmm_config_parse_json(&cfg, bad[i], strlen(bad[i]), err, sizeof(err)) != -EINVAL)
			fail_msg("%s was accepted", bad[i]);
		vmm_config_destroy(&cfg);
	}
}

/* ---- the jail, for real ---- */

/* What the jailed child reports from inside. */
struct inside {
	int entered;
	char error[256];
	uid_t uid[3];
	gid_t gid[3];
	int ngroups;
	uint32_t cap_eff[2], cap_prm[2], cap_inh[2];
	int bounding_left, nnp, dumpable, securebits;
	pid_t pid;
	char host[64];
	int root_entries, passwd_errno, mkdir_errno, stray_fds, env_count, sigterm_blocked;
	struct rlimit nofile, fsize, core;
};

enum mode {
	MODE_EXIT,      /* the child exits 42 */
	MODE_TERM,      /* the child waits for SIGTERM (forwarded by the keeper) and exits 100 + its number */
	MODE_WAIT,      /* the child waits to be killed */
	MODE_SEGV,      /* the child dies by SIGSEGV */
};

struct jail_run {
	char root[64];
	char cgroup[128]; /* "" when this host has no cgroup v2 to try */
	pid_t keeper;
	struct inside in;
};

static void report(int fd, struct inside *in)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2] = {{0}};
	extern char **environ;
	struct dirent *e;
	sigset_t mask;
	DIR *dir;

	in->entered = 1;
	getresuid(&in->uid[0], &in->uid[1], &in->uid[2]);
	getresgid(&in->gid[0], &in->gid[1], &in->gid[2]);
	in->ngroups = getgroups(0, NULL);
	syscall(SYS_capget, &hdr, data);
	for (int i = 0; i < 2; i++) {
		in->cap_eff[i] = data[i].effective;
		in->cap_prm[i] = data[i].permitted;
		in->cap_inh[i] = data[i].inheritable;
	}
	for (int cap = 0; cap < 64; cap++)
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1)
			in->bounding_left++;
	in->nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
	in->dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	in->securebits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	in->pid = getpid();
	gethostname(in->host, sizeof(in->host) - 1);
	dir = opendir("/");
	while (dir && (e = readdir(dir)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			in->root_entries++;
	if (dir)
		closedir(dir);
	else
		in->root_entries = -1;
	in->passwd_errno = open("/etc/passwd", O_RDONLY) < 0 ? errno : 0;
	in->mkdir_errno = mkdir("/x", 0700) < 0 ? errno : 0;
	for (int f = 3; f < 1024; f++)
		if (f != fd && fcntl(f, F_GETFD) >= 0)
			in->stray_fds++;
	while (environ && environ[in->env_count])
		in->env_count++;
	sigprocmask(SIG_BLOCK, NULL, &mask);
	in->sigterm_blocked = sigismember(&mask, SIGTERM);
	getrlimit(RLIMIT_NOFILE, &in->nofile);
	getrlimit(RLIMIT_FSIZE, &in->fsize);
	getrlimit(RLIMIT_CORE, &in->core);
	if (write(fd, in, sizeof(*in)) != (ssize_t)sizeof(*in))
		_exit(99);
}

/* The process that becomes the keeper; its child reports on fd and then behaves as mode says. */
static void __attribute__((noreturn)) jailed(const struct jail_run *run, enum mode mode, int fd)
{
	struct vmm_jail_config j = {.root = (char *)run->root, .uid = JAIL_ID, .gid = JAIL_ID + 1, .nofile = 256,
				    .fsize = 1 << 30};
	struct inside in = {0};
	int keep[1] = {fd}, code = 0, r;
	sigset_t term;

	if (run->cgroup[0])
		j.cgroup = (char *)run->cgroup;
	setenv("SANDVM_JAIL_TEST_SECRET", "visible outside only", 1);
	/* An inherited descriptor nobody named: the jail closes it. */
	if (open("/dev/null", O_RDONLY) < 0)
		_exit(98);
	r = vmm_jail_enter(&j, keep, 1, &code, in.error, sizeof(in.error));
	if (r == VMM_JAIL_KEEPER)
		_exit(code);
	if (r < 0) {
		if (write(fd, &in, sizeof(in)) < 0)
			_exit(97);
		_exit(1);
	}
	report(fd, &in);
	close(fd);
	switch (mode) {
	case MODE_EXIT:
		_exit(42);
	case MODE_TERM:
		sigemptyset(&term);
		sigaddset(&term, SIGTERM);
		_exit(100 + sigwaitinfo(&term, NULL));
	case MODE_WAIT:
		for (;;)
			pause();
	case MODE_SEGV:
		signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would turn it into an exit */
		{
			volatile uintptr_t nowhere = 8;

			*(volatile int *)nowhere = 1;
		}
		_exit(43);
	}
	_exit(44);
}

static void start(struct jail_run *run, enum mode mode)
{
	int p[2];
	ssize_t n;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	run->keeper = fork();
	assert_true(run->keeper >= 0);
	if (run->keeper == 0) {
		close(p[0]);
		jailed(run, mode, p[1]);
	}
	close(p[1]);
	n = read(p[0], &run->in, sizeof(run->in));
	close(p[0]);
	if (n != (ssize_t)sizeof(run->in))
		fail_msg("no report from the jail (read %zd)", n);
	if (!run->in.entered)
		fail_msg("the jail was not entered: %s", run->in.error);
}

static int wait_keeper(const struct jail_run *run)
{
	int st;

	assert_int_equal(waitpid(run->keeper, &st, 0), run->keeper);
	return st;
}

/* "Name:\tvalue" of /proc/PID/status, or "". */
static void status_field(pid_t pid, const char *name, char *out, size_t cap)
{
	char path[64], buf[8192], *p, *end;
	ssize_t n;
	int fd;

	out[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	for (p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, name, strlen(name)) && p[strlen(name)] == ':') {
			p += strlen(name) + 1;
			p += strspn(p, " \t");
			end = strchr(p, '\n');
			snprintf(out, cap, "%.*s", end ? (int)(end - p) : (int)strlen(p), p);
			return;
		}
}

/* The keeper's child, by its pid here. */
static pid_t inner_pid(pid_t keeper)
{
	char path[96], buf[64] = "";
	ssize_t n = 0;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", keeper, keeper);
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
	}
	buf[n > 0 ? n : 0] = '\0';
	return (pid_t)atoi(buf);
}

static bool same_ns(pid_t pid, const char *ns)
{
	char a[96], b[96], la[64] = "", lb[64] = "";

	snprintf(a, sizeof(a), "/proc/%d/ns/%s", pid, ns);
	snprintf(b, sizeof(b), "/proc/self/ns/%s", ns);
	if (readlink(a, la, sizeof(la) - 1) < 0 || readlink(b, lb, sizeof(lb) - 1) < 0)
		fail_msg("cannot read the %s namespace links", ns);
	return strcmp(la, lb) == 0;
}

/* A cgroup v2 directory to try the cgroup step with, made here; "" if this host has none we can use. */
static void make_cgroup(char *out, size_t cap)
{
	static const char *const roots[] = {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"};
	char probe[160];

	out[0] = '\0';
	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		snprintf(probe, sizeof(probe), "%s/cgroup.procs", roots[i]);
		if (access(probe, W_OK) < 0)
			continue;
		snprintf(out, cap, "%s/sandvm-test-jail-%d", roots[i], getpid());
		if (mkdir(out, 0755) == 0)
			return;
		out[0] = '\0';
	}
}

static int setup_run(void **state)
{
	struct jail_run *run = calloc(1, sizeof(*run));

	snprintf(run->root, sizeof(run->root), "/tmp/sandvm-jail.XXXXXX");
	if (!mkdtemp(run->root) || chmod(run->root, 0555) < 0)
		return -1;
	*state = run;
	return 0;
}

static int teardown_run(void **state)
{
	struct jail_run *run = *state;

	if (run->cgroup[0])
		rmdir(run->cgroup);
	rmdir(run->root);
	free(run);
	return 0;
}

/* Whether this process may make the jail's namespaces at all (root with CAP_SYS_ADMIN). */
static bool can_jail(void)
{
	pid_t pid;
	int st;

	if (geteuid() != 0)
		return false;
	pid = fork();
	if (pid == 0)
		_exit(unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET) == 0 ? 0 : 1);
	return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void inside_view(void **state)
{
	struct jail_run *run = *state;
	const struct inside *in = &run->in;
	char field[128], want[64];
	pid_t inner;
	int st;

	if (!can_jail())
		skip();
	make_cgroup(run->cgroup, sizeof(run->cgroup));
	start(run, MODE_WAIT);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(in->uid[i], JAIL_ID);
		assert_int_equal(in->gid[i], JAIL_ID + 1);
	}
	assert_int_equal(in->ngroups, 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(in->cap_eff[i], 0);
		assert_int_equal(in->cap_prm[i], 0);
		assert_int_equal(in->cap_inh[i], 0);
	}
	assert_int_equal(in->bounding_left, 0);
	assert_int_equal(in->nnp, 1);
	assert_int_equal(in->dumpable, 0);
	assert_int_not_equal(in->securebits, 0);
	assert_int_equal(in->pid, 1);
	assert_string_equal(in->host, "sandvm");
	assert_int_equal(in->root_entries, 0);
	assert_int_equal(in->passwd_errno, ENOENT);
	assert_true(in->mkdir_errno == EROFS || in->mkdir_errno == EACCES);
	assert_int_equal(in->stray_fds, 0);
	assert_int_equal(in->env_count, 0);
	assert_int_equal(in->sigterm_blocked, 1);
	assert_int_equal(in->nofile.rlim_cur, 256);
	assert_int_equal(in->fsize.rlim_cur, 1 << 30);
	assert_int_equal(in->core.rlim_max, 0);

	/* From outside: the child and the keeper as /proc shows them. */
	inner = inner_pid(run->keeper);
	assert_true(inner > 0);
	snprintf(want, sizeof(want), "%u\t%u\t%u\t%u", JAIL_ID, JAIL_ID, JAIL_ID, JAIL_ID);
	for (int k = 0; k < 2; k++) {
		pid_t pid = k ? run->keeper : inner;

		status_field(pid, "Uid", field, sizeof(field));
		assert_string_equal(field, want);
		status_field(pid, "CapEff", field, sizeof(field));
		assert_string_equal(field, "0000000000000000");
		status_field(pid, "CapPrm", field, sizeof(field));
		assert_string_equal(field, "0000000000000000");
		status_field(pid, "CapBnd", field, sizeof(field));
		assert_string_equal(field, "0000000000000000");
		status_field(pid, "NoNewPrivs", field, sizeof(field));
		assert_string_equal(field, "1");
		status_field(pid, "Groups", field, sizeof(field));
		assert_string_equal(field, "");
	}
	status_field(inner, "NSpid", field, sizeof(field));
	snprintf(want, sizeof(want), "%d\t1", inner);
	assert_string_equal(field, want);
	for (size_t i = 0; i < 5; i++) {
		static const char *const ns[] = {"mnt", "pid", "net", "uts", "ipc"};

		assert_false(same_ns(inner, ns[i]));
	}
	assert_true(same_ns(run->keeper, "pid")); /* the keeper stays outside the PID namespace */
	if (run->cgroup[0]) {
		char path[64], buf[256] = "";
		ssize_t n;
		int fd;

		snprintf(path, sizeof(path), "/proc/%d/cgroup", inner);
		fd = open(path, O_RDONLY);
		assert_true(fd >= 0);
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		assert_non_null(strstr(buf, strrchr(run->cgroup, '/')));
	} else {
		print_message("# no writable cgroup v2 here: the cgroup step was not tried\n");
	}
	/* Killed from outside (as the kernel's OOM killer or sandboxd would): the keeper dies the same way. */
	assert_int_equal(kill(inner, SIGKILL), 0);
	st = wait_keeper(run);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGKILL);
}

static void keeper_mirrors_exit(void **state)
{
	struct jail_run *run = *state;
	int st;

	if (!can_jail())
		skip();
	start(run, MODE_EXIT);
	st = wait_keeper(run);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 42);
}

static void keeper_forwards_sigterm(void **state)
{
	struct jail_run *run = *state;
	int st;

	if (!can_jail())
		skip();
	start(run, MODE_TERM);
	assert_int_equal(kill(run->keeper, SIGTERM), 0);
	st = wait_keeper(run);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 100 + SIGTERM);
}

static void keeper_mirrors_signal(void **state)
{
	struct jail_run *run = *state;
	int st;

	if (!can_jail())
		skip();
	start(run, MODE_SEGV);
	st = wait_keeper(run);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSEGV);
	assert_false(WCOREDUMP(st));
}

static void child_dies_with_keeper(void **state)
{
	struct jail_run *run = *state;
	pid_t inner;
	int st;

	if (!can_jail())
		skip();
	/* The orphaned child comes to us, so that its end can be seen. */
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
	start(run, MODE_WAIT);
	inner = inner_pid(run->keeper);
	assert_true(inner > 0);
	assert_int_equal(kill(run->keeper, SIGKILL), 0);
	st = wait_keeper(run);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(waitpid(inner, &st, 0), inner);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGKILL);
	prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

static void failed_step_is_an_error(void **state)
{
	struct jail_run *run = *state;
	struct inside in = {0};
	int p[2], st;
	pid_t pid;

	if (!can_jail())
		skip();
	/* A jail root that is not there: the bind mount fails in the child, which ends with status 1. */
	rmdir(run->root);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		jailed(run, MODE_EXIT, p[1]);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &in, sizeof(in)), (ssize_t)sizeof(in));
	close(p[0]);
	assert_false(in.entered);
	assert_non_null(strstr(in.error, "jail: bind-mounting"));
	assert_non_null(strstr(in.error, strerror(ENOENT)));
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(named_fds),
		cmocka_unit_test(named_fds_sorted_and_bounded),
		cmocka_unit_test(flags),
		cmocka_unit_test(bad_flags),
		cmocka_unit_test(validation),
		cmocka_unit_test(json),
		cmocka_unit_test_setup_teardown(inside_view, setup_run, teardown_run),
		cmocka_unit_test_setup_teardown(keeper_mirrors_exit, setup_run, teardown_run),
		cmocka_unit_test_setup_teardown(keeper_forwards_sigterm, setup_run, teardown_run),
		cmocka_unit_test_setup_teardown(keeper_mirrors_signal, setup_run, teardown_run),
		cmocka_unit_test_setup_teardown(child_dies_with_keeper, setup_run, teardown_run),
		cmocka_unit_test_setup_teardown(failed_step_is_an_error, setup_run, teardown_run),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
