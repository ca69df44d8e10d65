/*
 * sandvm-agent entry point: PID 1 set-up, then the event loop that serves
 * the host over vsock until the VM is powered off.
 *
 * Run as an ordinary process (not PID 1) it skips the system set-up and
 * becomes a child subreaper instead, so that it still reaps the grandchildren
 * of the commands it runs; that is how it is exercised outside a VM.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "agent.h"
#include "log.h"

uint64_t agent_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int agent_watch_set(struct agent *a, struct agent_watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	int op;

	if (w->events == events && events)
		return 0;
	if (!events) {
		agent_watch_remove(a, w);
		return 0;
	}
	op = w->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(a->epfd, op, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	return 0;
}

void agent_watch_remove(struct agent *a, struct agent_watch *w)
{
	if (w->events && w->fd >= 0)
		epoll_ctl(a->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->events = 0;
}

void agent_defer_free(struct agent *a, void *p)
{
	if (a->ndeferred == a->deferred_cap) {
		size_t cap = a->deferred_cap ? a->deferred_cap * 2 : 16;
		void **n = realloc(a->deferred, cap * sizeof(*n));

		if (!n) {
			/* Leaking is safe; freeing now might not be. */
			sv_err("out of memory deferring a free");
			return;
		}
		a->deferred = n;
		a->deferred_cap = cap;
	}
	a->deferred[a->ndeferred++] = p;
}

static void run_deferred(struct agent *a)
{
	for (size_t i = 0; i < a->ndeferred; i++)
		free(a->deferred[i]);
	a->ndeferred = 0;
}

static void on_listen(struct agent_watch *w, uint32_t events)
{
	struct agent *a = (struct agent *)((char *)w - offsetof(struct agent, listen));

	(void)events;
	agent_conn_accept(a);
}

static void on_relay_listen(struct agent_watch *w, uint32_t events)
{
	struct agent *a = (struct agent *)((char *)w - offsetof(struct agent, relay_listen));

	(void)events;
	agent_relay_accept(a);
}

static void on_sigchld(struct agent_watch *w, uint32_t events)
{
	struct agent *a = (struct agent *)((char *)w - offsetof(struct agent, sigchld));
	struct signalfd_siginfo si;

	(void)events;
	while (read(w->fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		;
	agent_exec_reap(a);
}

static void on_timer(struct agent_watch *w, uint32_t events)
{
	uint64_t ticks;

	(void)events;
	if (read(w->fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		sv_warn("timerfd: %s", strerror(errno));
}

static void arm_timer(struct agent *a, int64_t ms)
{
	struct itimerspec its = { 0 };

	if (ms >= 0) {
		if (ms == 0)
			ms = 1; /* 0 would disarm */
		its.it_value.tv_sec = ms / 1000;
		its.it_value.tv_nsec = (ms % 1000) * 1000000;
	}
	timerfd_settime(a->timer.fd, 0, &its, NULL);
}

/* The sooner of two "ms until the next deadline, or -1". */
static int64_t next_deadline(int64_t a, int64_t b)
{
	return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

static int listen_vsock(unsigned port)
{
	struct sockaddr_vm addr = {
		.svm_family = AF_VSOCK,
		.svm_port = port,
		.svm_cid = VMADDR_CID_ANY,
	};
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* Host-side tests run the agent as an ordinary process on a unix socket. */
static int listen_unix(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int setup_loop(struct agent *a, const char *unix_path)
{
	sigset_t mask;
	int fd;

	a->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (a->epfd < 0)
		return -errno;

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	a->sigchld = (struct agent_watch){ .fd = fd, .fn = on_sigchld };

	fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	a->timer = (struct agent_watch){ .fd = fd, .fn = on_timer };

	fd = unix_path ? listen_unix(unix_path) : listen_vsock(AGENT_VSOCK_PORT);
	if (fd < 0)
		return fd;
	a->listen = (struct agent_watch){ .fd = fd, .fn = on_listen };
	if (unix_path) {
		char relay_path[256];

		snprintf(relay_path, sizeof(relay_path), "%s.relay", unix_path);
		fd = listen_unix(relay_path);
	} else {
		fd = listen_vsock(AGENT_RELAY_PORT);
	}
	if (fd < 0)
		return fd;
	a->relay_listen = (struct agent_watch){ .fd = fd, .fn = on_relay_listen };

	if (agent_watch_set(a, &a->sigchld, EPOLLIN) || agent_watch_set(a, &a->timer, EPOLLIN) ||
	    agent_watch_set(a, &a->listen, EPOLLIN) || agent_watch_set(a, &a->relay_listen, EPOLLIN))
		return -errno;
	return 0;
}

int main(int argc, char **argv)
{
	struct agent agent = { .epfd = -1 };
	const char *unix_path = NULL;
	struct epoll_event events[64];
	int err;

	sv_log_init("sandvm-agent", SV_LOG_INFO);
	/* Pipes created later must not land on 0-2, which children's stdio would clobber. */
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
			break;
	agent.pid1 = getpid() == 1;
	if (!agent.pid1 && argc == 3 && strcmp(argv[1], "--unix") == 0) {
		unix_path = argv[2];
	} else if (!agent.pid1 && argc != 1) {
		fprintf(stderr, "usage: sandvm-agent [--unix SOCKET]  (PID 1 of a sandbox VM; --unix for tests)\n");
		return 2;
	}
	/* Writes to a pipe whose reader left must fail with EPIPE, not kill PID 1. */
	signal(SIGPIPE, SIG_IGN);
	if (agent.pid1)
		agent_system_setup();
	else
		prctl(PR_SET_CHILD_SUBREAPER, 1);

	err = setup_loop(&agent, unix_path);
	if (err) {
		sv_err("cannot start: %s (is virtio-vsock present?)", strerror(-err));
		if (agent.pid1)
			agent_system_poweroff(AGENT_PROTO_POWEROFF);
		return 1;
	}
	if (unix_path)
		sv_info("ready on %s (relay: %s.relay)", unix_path, unix_path);
	else
		sv_info("ready on vsock port %u (relay: %u)", AGENT_VSOCK_PORT, AGENT_RELAY_PORT);

	for (;;) {
		int n = epoll_wait(agent.epfd, events, 64, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			sv_err("epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			struct agent_watch *w = events[i].data.ptr;

			/* A watch closed earlier in this batch has fd -1. */
			if (w->fd >= 0)
				w->fn(w, events[i].events);
		}
		arm_timer(&agent, next_deadline(agent_exec_tick(&agent), agent_relay_tick(&agent)));
		run_deferred(&agent);
	}
	if (agent.pid1)
		agent_system_poweroff(AGENT_PROTO_POWEROFF);
	return 1;
}
