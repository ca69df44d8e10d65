/*
 * vmm_spares: the pool of spare VMM processes (vmm_spares.h). Each spare is
 * a child started with posix_spawn like a VMM (vmm_launcher.c: its own
 * session, the clean environment), the other end of a SOCK_SEQPACKET pair
 * on its descriptor 3, and a pidfd watched on the loop so that one that dies
 * unused is reaped at once.
 */
#include "vmm_spares.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "spare_args.h"
#include "vmm_launcher.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* After a take, the next spare waits this long: the create in flight has the CPU first. */
#define REFILL_DELAY_MS 300
/* After a spare died unused, or could not be started. */
#define RETRY_DELAY_MS 1000
/* Spares that die unused (or fail to start) in a row before the pool stops. */
#define FAILURES_TO_STOP 3u

struct spare {
	struct vmm_spares *pool;
	struct spare *next;
	uv_poll_t poll;
	struct stat program; /* the program file as it was when the spare started */
	bool retired;        /* ended on purpose: its exit is not a failure */
	int pid, pidfd, sock;
};

struct vmm_spares {
	uv_loop_t *loop;
	char vmm[4096];
	unsigned count, ready, failures;
	bool stopped, freeing;
	uv_timer_t refill;
	struct spare *list;
	unsigned open_handles; /* the refill timer's and each spare's poll: freed after the last */
};

static void pool_handle_closed(struct vmm_spares *s)
{
	if (--s->open_handles == 0)
		free(s);
}

static void spare_closed(uv_handle_t *h)
{
	struct spare *sp = h->data;
	struct vmm_spares *s = sp->pool;

	close(sp->pidfd);
	if (sp->sock >= 0)
		close(sp->sock);
	free(sp);
	pool_handle_closed(s);
}

static void unlink_spare(struct vmm_spares *s, struct spare *sp)
{
	for (struct spare **p = &s->list; *p; p = &(*p)->next)
		if (*p == sp) {
			*p = sp->next;
			s->ready--;
			return;
		}
}

static void on_refill(uv_timer_t *t);

static void schedule(struct vmm_spares *s, unsigned ms)
{
	if (!s->stopped && !s->freeing && s->ready < s->count && !uv_is_active((uv_handle_t *)&s->refill))
		uv_timer_start(&s->refill, on_refill, ms, 0);
}

static void count_failure(struct vmm_spares *s, const char *what)
{
	if (++s->failures >= FAILURES_TO_STOP && !s->stopped) {
		s->stopped = true;
		sv_warn("event=vmm_spares_stopped why=\"%s\" detail=\"%u failures in a row; VMMs start as fresh "
			"processes\"", what, s->failures);
		return;
	}
	sv_warn("event=vmm_spare_failed why=\"%s\"", what);
	schedule(s, RETRY_DELAY_MS);
}

/* The spare's pidfd is readable: it has ended without being taken. */
static void on_spare_exit(uv_poll_t *h, int status, int events)
{
	struct spare *sp = h->data;
	struct vmm_spares *s = sp->pool;
	siginfo_t si;
	char why[96];

	(void)status;
	(void)events;
	memset(&si, 0, sizeof(si));
	waitid((idtype_t)P_PIDFD, (id_t)sp->pidfd, &si, WEXITED | WNOHANG);
	unlink_spare(s, sp);
	uv_close((uv_handle_t *)&sp->poll, spare_closed);
	if (s->freeing)
		return;
	if (sp->retired) {
		schedule(s, REFILL_DELAY_MS);
		return;
	}
	if (si.si_code == CLD_EXITED)
		snprintf(why, sizeof(why), "a spare VMM (pid %d) exited unused, status %d", sp->pid, si.si_status);
	else
		snprintf(why, sizeof(why), "a spare VMM (pid %d) ended unused, signal %d", sp->pid, si.si_status);
	count_failure(s, why);
}

/* posix_spawn's child: stdin, stdout and stderr /dev/null, sock on 3. */
static int spare_files(posix_spawn_file_actions_t *fa, int sock)
{
	int r = posix_spawn_file_actions_addopen(fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);

	if (!r)
		r = posix_spawn_file_actions_addopen(fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	if (!r)
		r = posix_spawn_file_actions_adddup2(fa, STDOUT_FILENO, STDERR_FILENO);
	if (!r)
		r = posix_spawn_file_actions_adddup2(fa, sock, 3);
	return -r;
}

static int start_spare(struct vmm_spares *s)
{
	char title[SPARE_ARGS_TITLE_BYTES];
	char *argv[] = {s->vmm, "--args-from", "3", title, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	struct spare *sp;
	int pair[2], high, fd, r;
	pid_t pid;

	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	if (stat(s->vmm, &sp->program) < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
		r = -errno;
		free(sp);
		return r;
	}
	memset(title, ' ', sizeof(title) - 1);
	title[sizeof(title) - 1] = '\0';
	/* Above 3, so that the dup2 onto 3 always changes the descriptor (and clears close-on-exec). */
	high = fcntl(pair[1], F_DUPFD_CLOEXEC, 10);
	r = high < 0 ? -errno : -posix_spawn_file_actions_init(&fa);
	if (r == 0) {
		r = -posix_spawnattr_init(&at);
		if (r == 0) {
			r = spare_files(&fa, high);
			if (r == 0)
				r = vmm_launcher_child_attrs(&at);
			if (r == 0)
				r = -posix_spawn(&pid, s->vmm, &fa, &at, argv, vmm_launcher_env);
			posix_spawnattr_destroy(&at);
		}
		posix_spawn_file_actions_destroy(&fa);
	}
	if (high >= 0)
		close(high);
	close(pair[1]);
	if (r < 0) {
		close(pair[0]);
		free(sp);
		return r;
	}
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0 || uv_poll_init(s->loop, &sp->poll, fd) < 0) {
		r = fd < 0 ? -errno : -EIO;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		if (fd >= 0)
			close(fd);
		close(pair[0]);
		free(sp);
		return r;
	}
	sp->pool = s;
	sp->pid = pid;
	sp->pidfd = fd;
	sp->sock = pair[0];
	sp->poll.data = sp;
	s->open_handles++;
	uv_poll_start(&sp->poll, UV_READABLE, on_spare_exit);
	sp->next = s->list;
	s->list = sp;
	s->ready++;
	return 0;
}

static void on_refill(uv_timer_t *t)
{
	struct vmm_spares *s = t->data;
	char why[160];
	int r;

	if (s->stopped || s->freeing || s->ready >= s->count)
		return;
	r = start_spare(s);
	if (r < 0) {
		snprintf(why, sizeof(why), "cannot start a spare VMM: %s", strerror(-r));
		count_failure(s, why);
		return;
	}
	schedule(s, REFILL_DELAY_MS);
}

int vmm_spares_new(uv_loop_t *loop, const char *vmm, unsigned count, struct vmm_spares **out)
{
	struct vmm_spares *s;

	if (count == 0 || count > VMM_SPARES_MAX || strlen(vmm) >= sizeof(s->vmm))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->count = count;
	snprintf(s->vmm, sizeof(s->vmm), "%s", vmm);
	uv_timer_init(loop, &s->refill);
	s->refill.data = s;
	s->open_handles = 1;
	uv_timer_start(&s->refill, on_refill, 0, 0);
	*out = s;
	return 0;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Asks it to end (its socket closed: it exits); its exit is reaped, not counted. */
static void retire(struct spare *sp)
{
	sp->retired = true;
	if (sp->sock >= 0) {
		close(sp->sock);
		sp->sock = -1;
	}
}

int vmm_spares_take(struct vmm_spares *s, const char *program, struct vmm_spare *out)
{
	struct stat now;
	siginfo_t si;

	if (!s || s->stopped || s->freeing || strcmp(program, s->vmm) != 0 || stat(program, &now) < 0)
		return -ENOENT;
	for (struct spare *sp = s->list; sp; sp = sp->next) {
		int fd;

		if (sp->retired)
			continue;
		if (!same_file(&sp->program, &now)) {
			sv_info("event=vmm_spare_retired pid=%d why=\"the VMM program changed on disk\"", sp->pid);
			retire(sp);
			continue;
		}
		/* Ended but not yet seen by the loop: on_spare_exit will have it. */
		memset(&si, 0, sizeof(si));
		if (waitid((idtype_t)P_PIDFD, (id_t)sp->pidfd, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid)
			continue;
		fd = fcntl(sp->pidfd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			return -ENOENT;
		out->pid = sp->pid;
		out->pidfd = fd;
		out->sock = sp->sock;
		sp->sock = -1;
		unlink_spare(s, sp);
		uv_close((uv_handle_t *)&sp->poll, spare_closed);
		s->failures = 0;
		schedule(s, REFILL_DELAY_MS);
		return 0;
	}
	/* Retired ones are replaced after their exits. */
	schedule(s, REFILL_DELAY_MS);
	return -ENOENT;
}

unsigned vmm_spares_ready(const struct vmm_spares *s)
{
	unsigned n = 0;

	for (const struct spare *sp = s ? s->list : NULL; sp; sp = sp->next)
		n += !sp->retired;
	return n;
}

static void refill_closed(uv_handle_t *h)
{
	pool_handle_closed(h->data);
}

void vmm_spares_free(struct vmm_spares *s)
{
	if (!s)
		return;
	s->freeing = true;
	uv_close((uv_handle_t *)&s->refill, refill_closed);
	while (s->list) {
		struct spare *sp = s->list;

		retire(sp);
		/* Reaped here, not left a zombie: a spare holds nothing, and SIGKILL ends it at once. */
		syscall(SYS_pidfd_send_signal, sp->pidfd, SIGKILL, NULL, 0);
		waitid((idtype_t)P_PIDFD, (id_t)sp->pidfd, &(siginfo_t){0}, WEXITED);
		unlink_spare(s, sp);
		uv_close((uv_handle_t *)&sp->poll, spare_closed);
	}
}
