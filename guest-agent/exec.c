/*
 * Exec streams: a process (its own session and process group) with its
 * stdin, stdout and stderr on pipes, or all three on a pseudo-terminal,
 * bridged to one stream of a host connection with per-direction windows
 * (docs/agent-protocol.md 5.2).
 *
 * An exec ends with EXIT once the process has been reaped and its output
 * has reached end of file. A background process that keeps the output open
 * does not hold the exec forever: once the main process is gone and the
 * output has been idle for AGENT_DRAIN_IDLE_MS, EXIT is sent anyway. A
 * timeout kills the whole process group.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"

#define EXEC_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
#define EXEC_WINDOW_MAX (1u << 31)

struct agent_exec {
	struct agent *agent;
	struct agent_conn *conn;
	struct agent_exec *next; /* agent->execs */
	uint32_t stream;
	pid_t pid;
	bool pty;
	struct agent_watch in_w, out_w, err_w; /* fd -1 once closed */
	uint32_t out_window, err_window;
	uint8_t *in_buf; /* host data not yet written to the process */
	size_t in_len, in_off;
	bool in_close_pending;
	bool exited, timed_out;
	bool dead; /* freed at the end of the event batch */
	int status;
	uint64_t deadline_ms; /* 0: none */
	uint64_t idle_since_ms;
};

/* Why a child could not exec, sent over a close-on-exec pipe. */
struct exec_failure {
	int stage; /* enum below */
	int err;
};

enum { STAGE_USER = 1, STAGE_WORKDIR = 2, STAGE_EXEC = 3, STAGE_TTY = 4 };

static void exec_update(struct agent_exec *e);

static struct agent_exec *exec_of(struct agent_watch *w, size_t off)
{
	return (struct agent_exec *)((char *)w - off);
}

static void close_watch(struct agent *a, struct agent_watch *w)
{
	if (w->fd < 0)
		return;
	agent_watch_remove(a, w);
	close(w->fd);
	w->fd = -1;
}

static void send_window(struct agent_exec *e, uint32_t dir, uint32_t credit)
{
	struct agent_proto_window m = { .direction = dir, .credit = credit };
	size_t len, cap = 64;
	uint8_t *p;

	if (!e->conn || e->conn->closed || !credit)
		return;
	p = agent_conn_reserve(e->conn, cap);
	if (p && agent_proto_encode_window(p, cap, e->stream, &m, &len) == 0)
		agent_conn_commit(e->conn, len);
}

static void exec_free(struct agent_exec *e)
{
	struct agent_exec **pp;

	if (e->dead)
		return;
	e->dead = true;
	close_watch(e->agent, &e->in_w);
	close_watch(e->agent, &e->out_w);
	close_watch(e->agent, &e->err_w);
	for (pp = &e->agent->execs; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	if (e->conn) {
		struct agent_stream *s = agent_conn_stream_find(e->conn, e->stream);

		if (s && s->exec == e)
			agent_conn_stream_close(e->conn, s);
	}
	agent_defer_free(e->agent, e->in_buf);
	agent_defer_free(e->agent, e);
}

/* Once the process has been reaped its pid may be reused: only the group is safe then. */
static void kill_group(struct agent_exec *e)
{
	kill(-e->pid, SIGKILL);
	if (!e->exited)
		kill(e->pid, SIGKILL);
}

static void exec_finish(struct agent_exec *e)
{
	struct agent_proto_exit m;
	size_t len, cap = 64;
	uint8_t *p;

	if (e->timed_out) {
		m.kind = AGENT_PROTO_EXIT_TIMED_OUT;
		m.code = SIGKILL;
	} else if (WIFSIGNALED(e->status)) {
		m.kind = AGENT_PROTO_EXIT_SIGNALED;
		m.code = (uint32_t)WTERMSIG(e->status);
	} else {
		m.kind = AGENT_PROTO_EXIT_EXITED;
		m.code = (uint32_t)WEXITSTATUS(e->status);
	}
	p = agent_conn_reserve(e->conn, cap);
	if (p && agent_proto_encode_exit(p, cap, e->stream, &m, &len) == 0)
		agent_conn_commit(e->conn, len);
	exec_free(e);
}

static void maybe_finish(struct agent_exec *e)
{
	if (!e->dead && e->exited && e->out_w.fd < 0 && e->err_w.fd < 0)
		exec_finish(e);
}

/* Reads one chunk of output into a STDOUT/STDERR frame. */
static void pump_output(struct agent_exec *e, struct agent_watch *w, uint8_t type, uint32_t *window)
{
	static uint8_t chunk[AGENT_CHUNK];
	struct agent_proto_data m;
	size_t want = *window < AGENT_CHUNK ? *window : AGENT_CHUNK;
	size_t len, cap = AGENT_CHUNK + 64;
	ssize_t n;
	uint8_t *p;

	if (!want || agent_conn_backlogged(e->conn))
		return;
	do {
		n = read(w->fd, chunk, want);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) {
		/* End of file; on a pty, EIO once no process holds the terminal. */
		close_watch(e->agent, w);
		return;
	}
	e->idle_since_ms = agent_now_ms();
	m.data = chunk;
	m.len = (uint32_t)n;
	p = agent_conn_reserve(e->conn, cap);
	if (!p || agent_proto_encode_data(p, cap, type, e->stream, &m, &len)) {
		sv_warn("exec %u: output lost: out of memory", e->stream);
		return;
	}
	*window -= (uint32_t)n;
	agent_conn_commit(e->conn, len);
}

static void on_out(struct agent_watch *w, uint32_t events)
{
	struct agent_exec *e = exec_of(w, offsetof(struct agent_exec, out_w));

	(void)events;
	pump_output(e, w, AGENT_PROTO_STDOUT, &e->out_window);
	if (!e->conn->closed)
		exec_update(e);
}

static void on_err(struct agent_watch *w, uint32_t events)
{
	struct agent_exec *e = exec_of(w, offsetof(struct agent_exec, err_w));

	(void)events;
	pump_output(e, w, AGENT_PROTO_STDERR, &e->err_window);
	if (!e->conn->closed)
		exec_update(e);
}

/* Writes queued stdin; credit goes back to the host for every byte taken. */
static void pump_input(struct agent_exec *e)
{
	size_t written = 0;

	while (e->in_w.fd >= 0 && e->in_off < e->in_len) {
		ssize_t n = write(e->in_w.fd, e->in_buf + e->in_off, e->in_len - e->in_off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) {
			/* The process closed its stdin: what is left is dropped, and credited. */
			written += e->in_len - e->in_off;
			e->in_off = e->in_len;
			close_watch(e->agent, &e->in_w);
			break;
		}
		e->in_off += (size_t)n;
		written += (size_t)n;
	}
	if (e->in_off == e->in_len) {
		e->in_off = e->in_len = 0;
		if (e->in_close_pending && !e->pty)
			close_watch(e->agent, &e->in_w);
	}
	send_window(e, AGENT_PROTO_DIR_STDIN, (uint32_t)written);
}

static void on_in(struct agent_watch *w, uint32_t events)
{
	struct agent_exec *e = exec_of(w, offsetof(struct agent_exec, in_w));

	(void)events;
	pump_input(e);
	if (!e->conn->closed)
		exec_update(e);
}

static void exec_update(struct agent_exec *e)
{
	bool backlogged;

	if (e->dead || e->conn->closed)
		return;
	backlogged = agent_conn_backlogged(e->conn);

	if (e->out_w.fd >= 0)
		agent_watch_set(e->agent, &e->out_w, e->out_window && !backlogged ? EPOLLIN : 0);
	if (e->err_w.fd >= 0)
		agent_watch_set(e->agent, &e->err_w, e->err_window && !backlogged ? EPOLLIN : 0);
	if (e->in_w.fd >= 0)
		agent_watch_set(e->agent, &e->in_w, e->in_off < e->in_len ? EPOLLOUT : 0);
	maybe_finish(e);
}

void agent_exec_resume(struct agent_exec *e)
{
	exec_update(e);
}

static void queue_input(struct agent_exec *e, const uint8_t *data, size_t len)
{
	if (e->in_w.fd < 0) {
		send_window(e, AGENT_PROTO_DIR_STDIN, (uint32_t)len);
		return;
	}
	if (e->in_off) {
		memmove(e->in_buf, e->in_buf + e->in_off, e->in_len - e->in_off);
		e->in_len -= e->in_off;
		e->in_off = 0;
	}
	/* The host may have at most the initial window outstanding (+1 for a pty's ^D). */
	if (e->in_len + len > AGENT_PROTO_INITIAL_WINDOW + 1) {
		agent_conn_send_error(e->conn, e->stream, EPROTO, "stdin window exceeded");
		kill_group(e);
		e->in_len = 0;
		close_watch(e->agent, &e->in_w);
		return;
	}
	memcpy(e->in_buf + e->in_len, data, len);
	e->in_len += len;
	pump_input(e);
}

void agent_exec_frame(struct agent_exec *e, const struct agent_proto_frame *f)
{
	switch (f->hdr.type) {
	case AGENT_PROTO_STDIN: {
		struct agent_proto_data d;

		if (agent_proto_decode_data(f, &d) == 0 && !e->in_close_pending)
			queue_input(e, d.data, d.len);
		break;
	}
	case AGENT_PROTO_STDIN_CLOSE:
		if (e->in_close_pending)
			break;
		if (e->pty) {
			static const uint8_t eof = 0x04; /* ^D: end of input on a terminal */

			queue_input(e, &eof, 1);
		}
		e->in_close_pending = true;
		if (e->in_off == e->in_len && !e->pty)
			close_watch(e->agent, &e->in_w);
		break;
	case AGENT_PROTO_SIGNAL: {
		struct agent_proto_signal s;

		if (agent_proto_decode_signal(f, &s) == 0 && !e->exited)
			kill(e->pty ? -e->pid : e->pid, (int)s.signo);
		break;
	}
	case AGENT_PROTO_WINDOW: {
		struct agent_proto_window w;
		uint32_t *win;

		if (agent_proto_decode_window(f, &w))
			break;
		if (w.direction == AGENT_PROTO_DIR_STDOUT)
			win = &e->out_window;
		else if (w.direction == AGENT_PROTO_DIR_STDERR)
			win = &e->err_window;
		else
			break;
		*win = w.credit > EXEC_WINDOW_MAX - *win ? EXEC_WINDOW_MAX : *win + w.credit;
		break;
	}
	}
	if (!e->conn->closed)
		exec_update(e);
}

void agent_exec_abandon(struct agent_exec *e)
{
	kill_group(e);
	exec_free(e);
}

void agent_exec_reap(struct agent *a)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (struct agent_exec *e = a->execs; e; e = e->next) {
			if (e->pid == pid && !e->exited) {
				e->exited = true;
				e->status = status;
				e->idle_since_ms = agent_now_ms();
				exec_update(e);
				break;
			}
		}
	}
}

int64_t agent_exec_tick(struct agent *a)
{
	uint64_t now = agent_now_ms();
	int64_t next = -1;
	struct agent_exec *e, *n;

	for (e = a->execs; e; e = n) {
		uint64_t at;

		n = e->next;
		if (e->dead)
			continue;
		if (!e->exited && e->deadline_ms) {
			if (now >= e->deadline_ms) {
				e->timed_out = true;
				e->deadline_ms = 0;
				kill_group(e);
			} else {
				at = e->deadline_ms - now;
				if (next < 0 || (int64_t)at < next)
					next = (int64_t)at;
			}
		}
		if (e->exited) {
			/* Output still open after the exit: finish once it has been idle. */
			bool blocked = (e->out_w.fd >= 0 && !e->out_window) ||
				       (e->err_w.fd >= 0 && !e->err_window) ||
				       agent_conn_backlogged(e->conn);

			if (blocked) {
				e->idle_since_ms = now;
				continue;
			}
			at = e->idle_since_ms + AGENT_DRAIN_IDLE_MS;
			if (now >= at) {
				close_watch(a, &e->out_w);
				close_watch(a, &e->err_w);
				maybe_finish(e);
				continue;
			}
			if (next < 0 || (int64_t)(at - now) < next)
				next = (int64_t)(at - now);
		}
	}
	return next;
}

/* ---- starting a process ---- */

static const char *env_path(const char *const *env)
{
	for (; *env; env++)
		if (strncmp(*env, "PATH=", 5) == 0)
			return *env + 5;
	return EXEC_DEFAULT_PATH;
}

/* In the child: execve with a PATH search in the requested environment. */
static int exec_program(const char *const *argv, const char *const *env)
{
	const char *prog = argv[0], *path;
	char buf[4096];
	int err = ENOENT;

	if (strchr(prog, '/')) {
		execve(prog, (char *const *)argv, (char *const *)env);
		return errno;
	}
	if (!*prog)
		return ENOENT;
	for (path = env_path(env); path;) {
		const char *end = strchr(path, ':');
		size_t dlen = end ? (size_t)(end - path) : strlen(path);

		if (dlen + 1 + strlen(prog) + 1 <= sizeof(buf)) {
			snprintf(buf, sizeof(buf), "%.*s/%s", (int)dlen, dlen ? path : ".", prog);
			execve(buf, (char *const *)argv, (char *const *)env);
			/* Keep searching past a missing file; remember a real refusal. */
			if (errno != ENOENT && errno != ENOTDIR)
				err = errno;
		}
		path = end ? end + 1 : NULL;
	}
	return err;
}

static void child_fail(int fd, int stage, int err)
{
	struct exec_failure f = { .stage = stage, .err = err };

	if (write(fd, &f, sizeof(f)) < 0)
		_exit(126);
	_exit(127);
}

static void child(const struct agent_proto_exec_start *m, int fds[3], const char *tty, int report)
{
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	setsid();
	if (tty) {
		int fd = open(tty, O_RDWR);

		if (fd < 0 || ioctl(fd, TIOCSCTTY, 0) < 0)
			child_fail(report, STAGE_TTY, errno);
		fds[0] = fds[1] = fds[2] = fd;
	}
	for (int i = 0; i < 3; i++) {
		/* dup2 onto itself would keep close-on-exec set. */
		if (fds[i] == i ? fcntl(i, F_SETFD, 0) < 0 : dup2(fds[i], i) < 0)
			child_fail(report, STAGE_TTY, errno);
	}
	if (tty && fds[0] > 2)
		close(fds[0]);
	if (setgroups(0, NULL) < 0 && errno != EPERM)
		child_fail(report, STAGE_USER, errno);
	if (setgid(m->gid) < 0 || setuid(m->uid) < 0)
		child_fail(report, STAGE_USER, errno);
	if (chdir(m->workdir ? m->workdir : "/") < 0)
		child_fail(report, STAGE_WORKDIR, errno);
	child_fail(report, STAGE_EXEC, exec_program(m->argv, m->env));
}

static void report_failure(struct agent_conn *c, uint32_t stream, const struct agent_proto_exec_start *m,
			   const struct exec_failure *f)
{
	switch (f->stage) {
	case STAGE_USER:
		agent_conn_send_error(c, stream, f->err, "cannot switch to uid %u gid %u: %s", m->uid,
				      m->gid, strerror(f->err));
		break;
	case STAGE_WORKDIR:
		agent_conn_send_error(c, stream, f->err, "working directory %s: %s", m->workdir,
				      strerror(f->err));
		break;
	case STAGE_TTY:
		agent_conn_send_error(c, stream, f->err, "terminal set-up: %s", strerror(f->err));
		break;
	default:
		agent_conn_send_error(c, stream, f->err, "cannot execute %s: %s", m->argv[0],
				      strerror(f->err));
		break;
	}
}

/* Parent ends in mine[], child ends in theirs[]; a pty uses mine[0..1], theirs unused. */
static int make_stdio(const struct agent_proto_exec_start *m, int mine[3], int theirs[3], char *tty,
		      size_t ttylen)
{
	int p[3][2];

	for (int i = 0; i < 3; i++)
		mine[i] = theirs[i] = -1;
	if (m->flags & AGENT_PROTO_EXEC_PTY) {
		struct winsize ws = { .ws_row = (unsigned short)m->rows, .ws_col = (unsigned short)m->cols };
		int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);

		if (fd < 0)
			return -errno;
		if (grantpt(fd) < 0 || unlockpt(fd) < 0 || ptsname_r(fd, tty, ttylen) != 0 ||
		    ioctl(fd, TIOCSWINSZ, &ws) < 0) {
			int err = -errno;

			close(fd);
			return err;
		}
		mine[1] = fd;
		mine[0] = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		if (mine[0] < 0) {
			close(fd);
			return -errno;
		}
		return 0;
	}
	for (int i = 0; i < 3; i++) {
		if (pipe2(p[i], O_CLOEXEC) < 0) {
			int err = -errno;

			for (int j = 0; j < i; j++) {
				close(p[j][0]);
				close(p[j][1]);
			}
			return err;
		}
	}
	mine[0] = p[0][1];
	theirs[0] = p[0][0];
	mine[1] = p[1][0];
	theirs[1] = p[1][1];
	mine[2] = p[2][0];
	theirs[2] = p[2][1];
	return 0;
}

static void close_all(int fds[3])
{
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

void agent_exec_start(struct agent_conn *c, const struct agent_proto_frame *f)
{
	static const char *ptrs[AGENT_PROTO_EXEC_PTRS];
	uint32_t stream = f->hdr.stream;
	struct agent_proto_exec_start m;
	struct exec_failure failure;
	struct agent_exec *e;
	struct agent_stream *s;
	int mine[3], theirs[3], report[2], err;
	char tty[64] = "";
	ssize_t n;
	pid_t pid;

	err = agent_proto_decode_exec_start(f, &m, ptrs, AGENT_PROTO_EXEC_PTRS);
	if (err) {
		agent_conn_send_error(c, stream, -err == E2BIG ? E2BIG : EINVAL, "bad EXEC_START: %s",
				      strerror(-err));
		return;
	}
	e = calloc(1, sizeof(*e));
	if (e && !(e->in_buf = malloc(AGENT_PROTO_INITIAL_WINDOW + 1))) {
		free(e);
		e = NULL;
	}
	if (!e) {
		agent_conn_send_error(c, stream, ENOMEM, "out of memory");
		return;
	}
	err = make_stdio(&m, mine, theirs, tty, sizeof(tty));
	if (err) {
		free(e->in_buf);
		free(e);
		agent_conn_send_error(c, stream, -err, "cannot create stdio: %s", strerror(-err));
		return;
	}
	if (pipe2(report, O_CLOEXEC) < 0) {
		err = errno;
		goto fail_fds;
	}
	pid = fork();
	if (pid < 0) {
		err = errno;
		close(report[0]);
		close(report[1]);
		goto fail_fds;
	}
	if (pid == 0)
		child(&m, theirs, tty[0] ? tty : NULL, report[1]);
	close(report[1]);
	close_all(theirs);
	do {
		n = read(report[0], &failure, sizeof(failure));
	} while (n < 0 && errno == EINTR);
	close(report[0]);
	if (n == (ssize_t)sizeof(failure)) {
		waitpid(pid, NULL, 0);
		close_all(mine);
		free(e->in_buf);
		free(e);
		report_failure(c, stream, &m, &failure);
		return;
	}

	s = agent_conn_stream_open(c, stream);
	if (!s) {
		kill(-pid, SIGKILL);
		close_all(mine);
		free(e->in_buf);
		free(e);
		return;
	}
	e->agent = c->agent;
	e->conn = c;
	e->stream = stream;
	e->pid = pid;
	e->pty = tty[0] != '\0';
	e->out_window = e->err_window = AGENT_PROTO_INITIAL_WINDOW;
	if (m.timeout_ms)
		e->deadline_ms = agent_now_ms() + m.timeout_ms;
	e->in_w = (struct agent_watch){ .fd = mine[0], .fn = on_in };
	e->out_w = (struct agent_watch){ .fd = mine[1], .fn = on_out };
	e->err_w = (struct agent_watch){ .fd = mine[2], .fn = on_err };
	for (int i = 0; i < 3; i++)
		if (mine[i] >= 0)
			fcntl(mine[i], F_SETFL, fcntl(mine[i], F_GETFL) | O_NONBLOCK);
	s->exec = e;
	e->next = c->agent->execs;
	c->agent->execs = e;
	{
		struct agent_proto_exec_started st = { .pid = (uint32_t)pid };
		size_t len, cap = 64;
		uint8_t *p = agent_conn_reserve(c, cap);

		if (p && agent_proto_encode_exec_started(p, cap, stream, &st, &len) == 0)
			agent_conn_commit(c, len);
	}
	if (!c->closed)
		exec_update(e);
	return;

fail_fds:
	close_all(mine);
	close_all(theirs);
	free(e->in_buf);
	free(e);
	agent_conn_send_error(c, stream, err, "cannot start a process: %s", strerror(err));
}
