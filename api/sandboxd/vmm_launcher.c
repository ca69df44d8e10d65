/*
 * vmm_launcher_process: the VMM as a detached child process, or one adopted
 * after a restart. Either way a pidfd watched on the loop says when it ended
 * (a child of ours is reaped through it, with its exit status); a stop is
 * SIGTERM, then SIGKILL after the grace period.
 *
 * The child is made with posix_spawn, which glibc implements as
 * clone(CLONE_VM | CLONE_VFORK): nothing of the daemon's address space is
 * copied. uv_spawn forks, and a fork copies the daemon's page tables and then
 * makes it take copy-on-write faults: 140 ms a spawn in the nested runner,
 * more than a warm start's whole restore.
 */
#include "vmm_launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "sandbox_vm.h"
#include "spare_args.h"
#include "vmm_spares.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

struct vmm_process {
	uv_poll_t pidfd_poll;
	uv_timer_t kill_timer;
	bool adopted; /* not our child: its end is seen, its exit status is not */
	bool exited, released, polling;
	bool from_spare;
	int pidfd;
	int pid;
	unsigned long long start_time;
	unsigned open_handles; /* freed once the last one closed */
	vmm_exited_fn on_exit;
	void *ctx;
};

/*
 * The VMM's whole environment: it reads none, and must not inherit the
 * daemon's (an exported API key, proxy settings, anything an operator set).
 */
char *const vmm_launcher_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};

unsigned long long vmm_launcher_start_time(int pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* Fields after the command name, which may hold spaces and parentheses. */
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	/* state is field 3; starttime is field 22. */
	for (int field = 2; field < 22 && p; field++)
		p = strchr(p + 1, ' ');
	if (p)
		start = strtoull(p + 1, NULL, 10);
	return start;
}

static void handle_closed(uv_handle_t *h)
{
	struct vmm_process *p = h->data;

	if (--p->open_handles == 0)
		free(p);
}

static void close_if_open(uv_handle_t *h)
{
	if (h->loop && !uv_is_closing(h))
		uv_close(h, handle_closed);
}

/* Every handle closes; p is freed after the last. */
static void close_all(struct vmm_process *p)
{
	close_if_open((uv_handle_t *)&p->kill_timer);
	if (p->polling)
		close_if_open((uv_handle_t *)&p->pidfd_poll);
	if (p->pidfd >= 0) {
		close(p->pidfd);
		p->pidfd = -1;
	}
}

static void report_exit(struct vmm_process *p, const char *how)
{
	p->exited = true;
	uv_timer_stop(&p->kill_timer);
	if (!p->released) {
		p->released = true;
		p->on_exit(p->ctx, how);
	}
	close_all(p);
}

static void on_pidfd(uv_poll_t *h, int status, int events)
{
	struct vmm_process *p = h->data;
	siginfo_t si;
	char how[64];

	(void)status;
	(void)events;
	uv_poll_stop(h);
	if (p->adopted) {
		report_exit(p, "adopted VMM exited");
		return;
	}
	memset(&si, 0, sizeof(si));
	/* Readable means it has ended: this reaps it (never blocks). */
	if (waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
		snprintf(how, sizeof(how), "ended, exit status unknown");
	else if (si.si_code == CLD_EXITED)
		snprintf(how, sizeof(how), "exit status %d", si.si_status);
	else
		snprintf(how, sizeof(how), "killed by signal %d", si.si_status);
	report_exit(p, how);
}

/* Its end on the loop through fd, a pidfd this takes. */
static int watch_pidfd(uv_loop_t *loop, struct vmm_process *p, int fd)
{
	int r = uv_poll_init(loop, &p->pidfd_poll, fd);

	if (r < 0)
		return r;
	p->pidfd = fd;
	p->polling = true;
	p->open_handles++;
	p->pidfd_poll.data = p;
	return uv_poll_start(&p->pidfd_poll, UV_READABLE, on_pidfd);
}

static struct vmm_process *process_new(uv_loop_t *loop, vmm_exited_fn exited, void *ctx)
{
	struct vmm_process *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->pidfd = -1;
	p->on_exit = exited;
	p->ctx = ctx;
	uv_timer_init(loop, &p->kill_timer);
	p->kill_timer.data = p;
	p->open_handles = 1;
	return p;
}

/*
 * What the child starts with: stdin /dev/null, stdout and stderr the log, and
 * the resources sandbox_vm_prepare opened as its 3, 4, ... (its argv says
 * fd:3, ...). Each source is first copied above every target so that no
 * dup2 overwrites a source still to be copied, and so that dup2 always
 * changes the descriptor (which is what clears its close-on-exec flag).
 */
static int child_files(posix_spawn_file_actions_t *fa, int logfd, const struct sandbox_vm_cmd *cmd, int *high,
		       unsigned n)
{
	const int floor = 3 + SANDBOX_VM_MAX_FDS;
	int r = posix_spawn_file_actions_addopen(fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);

	high[0] = fcntl(logfd, F_DUPFD_CLOEXEC, floor);
	if (high[0] < 0)
		return -errno;
	for (unsigned i = 0; i < n; i++) {
		high[1 + i] = fcntl(cmd->fds[i], F_DUPFD_CLOEXEC, floor);
		if (high[1 + i] < 0)
			return -errno;
	}
	if (!r)
		r = posix_spawn_file_actions_adddup2(fa, high[0], STDOUT_FILENO);
	if (!r)
		r = posix_spawn_file_actions_adddup2(fa, high[0], STDERR_FILENO);
	for (unsigned i = 0; i < n && !r; i++)
		r = posix_spawn_file_actions_adddup2(fa, high[1 + i], 3 + (int)i);
	return -r;
}

/* Its own session (the VM outlives a daemon restart and ignores its terminal), default signals, none blocked. */
int vmm_launcher_child_attrs(posix_spawnattr_t *at)
{
	sigset_t none, all;
	int r;

	sigemptyset(&none);
	sigfillset(&all);
	r = posix_spawnattr_setflags(at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	if (!r)
		r = posix_spawnattr_setsigmask(at, &none);
	if (!r)
		r = posix_spawnattr_setsigdefault(at, &all);
	return -r;
}

/*
 * A child of ours that could not be set up for watching: killed (ours and
 * not yet reaped, so pid is still that child), reaped, its pidfd (-1: none)
 * closed unless p's watcher took it, and p (NULL: none) closed with no
 * callback.
 */
static void abandon_child(int pid, int pidfd, struct vmm_process *p)
{
	kill(pid, SIGKILL);
	if (pidfd >= 0)
		waitid((idtype_t)P_PIDFD, (id_t)pidfd, &(siginfo_t){0}, WEXITED);
	else
		waitpid(pid, NULL, 0);
	if (pidfd >= 0 && (!p || !p->polling))
		close(pidfd); /* not the watcher's yet */
	if (p) {
		p->exited = p->released = true;
		close_all(p);
	}
}

/*
 * A spare (vmm_spares.h) runs cmd: it gets the command line, the log and
 * cmd's descriptors in one message and places them as a fresh start would.
 * 0 with *out; -errno, the spare gone, when it could not be given them.
 */
static int claim_spare(uv_loop_t *loop, struct vmm_spare *sp, const struct sandbox_vm_cmd *cmd,
		       const char *log_path, vmm_exited_fn exited, void *ctx, struct vmm_process **out)
{
	unsigned n = cmd->nfds < SANDBOX_VM_MAX_FDS ? cmd->nfds : SANDBOX_VM_MAX_FDS;
	struct vmm_process *p = NULL;
	int logfd, r;

	logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	r = logfd < 0 ? -errno : spare_args_send(sp->sock, cmd->argv, logfd, cmd->fds, n);
	if (logfd >= 0)
		close(logfd);
	close(sp->sock);
	if (r == 0) {
		p = process_new(loop, exited, ctx);
		r = p ? watch_pidfd(loop, p, sp->pidfd) : -ENOMEM;
	}
	if (r < 0) {
		abandon_child(sp->pid, sp->pidfd, p);
		return r;
	}
	p->pid = sp->pid;
	p->start_time = vmm_launcher_start_time(sp->pid);
	p->from_spare = true;
	*out = p;
	return 0;
}

static int process_spawn(uv_loop_t *loop, struct vmm_spares *spares, const struct sandbox_vm_cmd *cmd,
			 const char *log_path, vmm_exited_fn exited, void *ctx, struct vmm_process **out)
{
	unsigned n = cmd->nfds < SANDBOX_VM_MAX_FDS ? cmd->nfds : SANDBOX_VM_MAX_FDS;
	int high[1 + SANDBOX_VM_MAX_FDS];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	struct vmm_spare spare;
	struct vmm_process *p;
	int logfd, fd, r;
	pid_t pid = -1;

	if (vmm_spares_take(spares, cmd->argv[0], &spare) == 0) {
		r = claim_spare(loop, &spare, cmd, log_path, exited, ctx, out);
		if (r == 0)
			return 0;
		sv_warn("event=vmm_spare_failed pid=%d why=\"%s\" detail=\"a new process instead\"", spare.pid,
			strerror(-r));
	}
	for (unsigned i = 0; i <= n; i++)
		high[i] = -1;
	logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (logfd < 0)
		return -errno;
	r = -posix_spawn_file_actions_init(&fa);
	if (r < 0) {
		close(logfd);
		return r;
	}
	r = -posix_spawnattr_init(&at);
	if (r == 0) {
		r = child_files(&fa, logfd, cmd, high, n);
		if (r == 0)
			r = vmm_launcher_child_attrs(&at);
		if (r == 0)
			r = -posix_spawn(&pid, cmd->argv[0], &fa, &at, (char *const *)cmd->argv, vmm_launcher_env);
		posix_spawnattr_destroy(&at);
	}
	posix_spawn_file_actions_destroy(&fa);
	for (unsigned i = 0; i <= n; i++)
		if (high[i] >= 0)
			close(high[i]);
	close(logfd);
	if (r < 0)
		return r;
	/* Ours and not yet reaped, so the pid cannot have been reused. */
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	p = fd < 0 ? NULL : process_new(loop, exited, ctx);
	r = fd < 0 ? -errno : !p ? -ENOMEM : watch_pidfd(loop, p, fd);
	if (r < 0) {
		abandon_child(pid, fd, p);
		return r;
	}
	p->pid = pid;
	p->start_time = vmm_launcher_start_time(pid);
	*out = p;
	return 0;
}

static int process_adopt(uv_loop_t *loop, int pid, unsigned long long start_time, vmm_exited_fn exited, void *ctx,
			 struct vmm_process **out)
{
	struct vmm_process *p;
	int fd, r;

	if (pid <= 0 || !start_time || vmm_launcher_start_time(pid) != start_time)
		return -ESRCH;
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return -errno;
	p = process_new(loop, exited, ctx);
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	p->adopted = true;
	p->pid = pid;
	p->start_time = start_time;
	r = watch_pidfd(loop, p, fd);
	if (r < 0) {
		if (!p->polling)
			close(fd);
		p->exited = p->released = true;
		close_all(p);
		return r;
	}
	*out = p;
	return 0;
}

static void send_signal(struct vmm_process *p, int sig)
{
	if (p->exited)
		return;
	/* Through the pidfd: never a process that took over the pid. */
	syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0);
}

static void on_kill_timer(uv_timer_t *t)
{
	struct vmm_process *p = t->data;

	sv_warn("event=vmm_kill pid=%d why=\"no exit after SIGTERM\"", p->pid);
	send_signal(p, SIGKILL);
}

static void process_stop(struct vmm_process *p, unsigned grace_ms)
{
	if (p->exited || uv_is_active((uv_handle_t *)&p->kill_timer))
		return;
	send_signal(p, SIGTERM);
	uv_timer_start(&p->kill_timer, on_kill_timer, grace_ms, 0);
}

static void process_release(struct vmm_process *p)
{
	p->released = true;
	uv_timer_stop(&p->kill_timer);
	if (p->adopted || p->exited) {
		close_all(p);
	} else {
		/* A child of ours is watched until it exits, to reap it; p is freed then. */
		close_if_open((uv_handle_t *)&p->kill_timer);
	}
}

static int process_pid(const struct vmm_process *p, unsigned long long *start_time)
{
	*start_time = p->start_time;
	return p->pid;
}

static bool process_from_spare(const struct vmm_process *p)
{
	return p->from_spare;
}

const struct vmm_launcher_ops vmm_launcher_process = {
	.prepare = sandbox_vm_prepare,
	.spawn = process_spawn,
	.adopt = process_adopt,
	.stop = process_stop,
	.release = process_release,
	.pid = process_pid,
	.from_spare = process_from_spare,
};
