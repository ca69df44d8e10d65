/*
 * vmm_launcher_process: the VMM as a detached child process (uv_spawn), or
 * one adopted after a restart through a pidfd. Either way its end arrives on
 * the loop; a stop is SIGTERM, then SIGKILL after the grace period.
 */
#include "vmm_launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "sandbox_vm.h"

struct vmm_process {
	uv_process_t proc;     /* spawned here */
	uv_poll_t pidfd_poll;  /* adopted */
	uv_timer_t kill_timer;
	bool adopted, exited, released;
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
static char *const vmm_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};

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
	if (p->adopted)
		close_if_open((uv_handle_t *)&p->pidfd_poll);
	else if (p->exited)
		close_if_open((uv_handle_t *)&p->proc);
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

static void process_exited(uv_process_t *proc, int64_t status, int sig)
{
	struct vmm_process *p = proc->data;
	char how[64];

	if (sig)
		snprintf(how, sizeof(how), "killed by signal %d", sig);
	else
		snprintf(how, sizeof(how), "exit status %lld", (long long)status);
	report_exit(p, how);
}

static void on_pidfd(uv_poll_t *h, int status, int events)
{
	(void)status;
	(void)events;
	uv_poll_stop(h);
	report_exit(h->data, "adopted VMM exited");
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

static int process_spawn(uv_loop_t *loop, const struct sandbox_vm_cmd *cmd, const char *log_path,
			 vmm_exited_fn exited, void *ctx, struct vmm_process **out)
{
	uv_process_options_t opt = {0};
	uv_stdio_container_t stdio[3 + SANDBOX_VM_MAX_FDS];
	struct vmm_process *p;
	int logfd, r;

	logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (logfd < 0)
		return -errno;
	p = process_new(loop, exited, ctx);
	if (!p) {
		close(logfd);
		return -ENOMEM;
	}
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_INHERIT_FD;
	stdio[1].data.fd = logfd;
	stdio[2].flags = UV_INHERIT_FD;
	stdio[2].data.fd = logfd;
	/* The resources sandbox_vm_prepare opened become the child's 3, 4, ... (its argv says fd:3, ...). */
	for (unsigned i = 0; i < cmd->nfds && i < SANDBOX_VM_MAX_FDS; i++) {
		stdio[3 + i].flags = UV_INHERIT_FD;
		stdio[3 + i].data.fd = cmd->fds[i];
	}
	opt.file = cmd->argv[0];
	opt.args = (char **)cmd->argv;
	opt.exit_cb = process_exited;
	opt.env = (char **)vmm_env;
	/* Its own session: the VM outlives a daemon restart and ignores its terminal. */
	opt.flags = UV_PROCESS_DETACHED;
	opt.stdio = stdio;
	opt.stdio_count = 3 + (int)(cmd->nfds < SANDBOX_VM_MAX_FDS ? cmd->nfds : SANDBOX_VM_MAX_FDS);
	p->proc.data = p;
	r = uv_spawn(loop, &p->proc, &opt);
	close(logfd);
	if (r < 0) {
		/* A failed uv_spawn leaves an initialised handle that still has to be closed. */
		p->open_handles++;
		uv_close((uv_handle_t *)&p->proc, handle_closed);
		close_if_open((uv_handle_t *)&p->kill_timer);
		return r;
	}
	p->open_handles++;
	p->pid = p->proc.pid;
	p->start_time = vmm_launcher_start_time(p->pid);
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
	p->pidfd = fd;
	p->pid = pid;
	p->start_time = start_time;
	r = uv_poll_init(loop, &p->pidfd_poll, fd);
	if (r < 0) {
		close(fd);
		p->pidfd = -1;
		p->adopted = false;
		close_if_open((uv_handle_t *)&p->kill_timer);
		return r;
	}
	p->open_handles++;
	p->pidfd_poll.data = p;
	uv_poll_start(&p->pidfd_poll, UV_READABLE, on_pidfd);
	*out = p;
	return 0;
}

static void send_signal(struct vmm_process *p, int sig)
{
	if (p->exited)
		return;
	if (p->adopted)
		syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0);
	else
		uv_process_kill(&p->proc, sig);
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
	if (p->adopted) {
		close_all(p);
	} else {
		/* A spawned child's handle stays until it exits: libuv reaps it then, and frees p. */
		close_if_open((uv_handle_t *)&p->kill_timer);
	}
}

static int process_pid(const struct vmm_process *p, unsigned long long *start_time)
{
	*start_time = p->start_time;
	return p->pid;
}

const struct vmm_launcher_ops vmm_launcher_process = {
	.prepare = sandbox_vm_prepare,
	.spawn = process_spawn,
	.adopt = process_adopt,
	.stop = process_stop,
	.release = process_release,
	.pid = process_pid,
};
