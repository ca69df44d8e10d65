/*
 * One host connection: frames in through an agent_proto_reader, frames out
 * through a buffer written as the socket accepts it. The buffer is what
 * back-pressure hangs on: while it holds more than AGENT_OUT_HIGH bytes the
 * agent reads neither from the host nor from processes' output.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"

#define AGENT_NAME "sandvm-agent " SANDVM_VERSION

static void conn_close(struct agent_conn *c);
static void conn_update_events(struct agent_conn *c);

static struct agent_conn *conn_of(struct agent_watch *w)
{
	return (struct agent_conn *)((char *)w - offsetof(struct agent_conn, w));
}

bool agent_conn_backlogged(const struct agent_conn *c)
{
	return byte_queue_len(&c->out) > AGENT_OUT_HIGH;
}

uint8_t *agent_conn_reserve(struct agent_conn *c, size_t len)
{
	return byte_queue_reserve(&c->out, len);
}

/*
 * The OK is in the socket, not yet with the host: resetting now could lose
 * it. The host closes the connection once it has read it; wait for that
 * (a second at most), then end the VM.
 */
static void shutdown_now(struct agent_conn *c)
{
	uint64_t deadline = agent_now_ms() + 1000;
	char buf[256];

	shutdown(c->w.fd, SHUT_WR);
	for (;;) {
		struct pollfd p = { .fd = c->w.fd, .events = POLLIN };
		int64_t left = (int64_t)(deadline - agent_now_ms());

		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		n = recv(c->w.fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			break;
	}
	agent_system_poweroff(c->shutdown_action);
}

static void conn_flush(struct agent_conn *c)
{
	bool was_backlogged = agent_conn_backlogged(c);

	if (byte_queue_send(&c->out, c->w.fd) < 0) {
		conn_close(c);
		return;
	}
	if (!byte_queue_len(&c->out) && c->shutdown_after_flush)
		shutdown_now(c);
	conn_update_events(c);
	if (was_backlogged && !agent_conn_backlogged(c)) {
		for (unsigned i = 0; i < c->nstreams; i++)
			if (c->streams[i].exec)
				agent_exec_resume(c->streams[i].exec);
	}
}

void agent_conn_commit(struct agent_conn *c, size_t len)
{
	byte_queue_commit(&c->out, len);
	if (!c->closed)
		conn_flush(c);
}

static void conn_update_events(struct agent_conn *c)
{
	uint32_t ev = 0;

	if (c->closed)
		return;
	if (!agent_conn_backlogged(c))
		ev |= EPOLLIN;
	if (byte_queue_len(&c->out))
		ev |= EPOLLOUT;
	if (agent_watch_set(c->agent, &c->w, ev ? ev : EPOLLRDHUP) < 0)
		sv_warn("connection: epoll: %s", strerror(errno));
}

void agent_conn_send_empty(struct agent_conn *c, uint8_t type, uint32_t stream)
{
	uint8_t *p = agent_conn_reserve(c, AGENT_PROTO_HEADER_SIZE);
	size_t len;

	if (p && agent_proto_encode_empty(p, AGENT_PROTO_HEADER_SIZE, type, stream, &len) == 0)
		agent_conn_commit(c, len);
}

void agent_conn_send_error(struct agent_conn *c, uint32_t stream, int err, const char *fmt, ...)
{
	struct agent_proto_error m = { .code = agent_errno_code(err) };
	char msg[512];
	va_list ap;
	size_t len, cap = sizeof(msg) + 64;
	uint8_t *p;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	m.message = msg;
	p = agent_conn_reserve(c, cap);
	if (p && agent_proto_encode_error(p, cap, stream, &m, &len) == 0)
		agent_conn_commit(c, len);
}

struct agent_stream *agent_conn_stream_find(struct agent_conn *c, uint32_t id)
{
	for (unsigned i = 0; i < c->nstreams; i++)
		if (c->streams[i].id == id)
			return &c->streams[i];
	return NULL;
}

/* NULL (and an ERROR sent) if the id is in use or the table is full. */
struct agent_stream *agent_conn_stream_open(struct agent_conn *c, uint32_t id)
{
	struct agent_stream *s;

	if (agent_conn_stream_find(c, id)) {
		agent_conn_send_error(c, id, EBUSY, "stream %u is already open", id);
		return NULL;
	}
	if (c->nstreams == AGENT_MAX_STREAMS) {
		agent_conn_send_error(c, id, EBUSY, "too many open streams (%u)", AGENT_MAX_STREAMS);
		return NULL;
	}
	s = &c->streams[c->nstreams++];
	*s = (struct agent_stream){ .id = id, .write_fd = -1 };
	return s;
}

void agent_conn_stream_close(struct agent_conn *c, struct agent_stream *s)
{
	unsigned i = (unsigned)(s - c->streams);

	if (s->write_fd >= 0)
		close(s->write_fd);
	free(s->write_path);
	c->streams[i] = c->streams[--c->nstreams];
}

static void conn_fatal(struct agent_conn *c, const char *what, int err)
{
	sv_warn("connection: %s: %s; closing it", what, strerror(-err));
	agent_conn_send_error(c, 0, EPROTO, "%s: %s", what, strerror(-err));
	conn_close(c);
}

static void handle_hello(struct agent_conn *c, const struct agent_proto_frame *f)
{
	struct agent_proto_hello h, mine = {
		.min_version = AGENT_PROTO_VERSION_MIN,
		.max_version = AGENT_PROTO_VERSION_MAX,
		.name = AGENT_NAME,
		.features = AGENT_PROTO_FEATURE_RESTORED,
	};
	size_t len, cap = 256;
	uint8_t *p;
	int err = agent_proto_decode_hello(f, &h);

	if (err) {
		conn_fatal(c, "bad HELLO", err);
		return;
	}
	if (h.max_version < AGENT_PROTO_VERSION_MIN || h.min_version > AGENT_PROTO_VERSION_MAX) {
		conn_fatal(c, "no common protocol version", -EPROTONOSUPPORT);
		return;
	}
	p = agent_conn_reserve(c, cap);
	if (!p || agent_proto_encode_hello(p, cap, &mine, &len)) {
		conn_close(c);
		return;
	}
	c->hello_done = true;
	agent_conn_commit(c, len);
}

static void handle_ping(struct agent_conn *c, const struct agent_proto_frame *f)
{
	struct agent_proto_ping ping;
	size_t len, cap = 64;
	uint8_t *p;

	if (agent_proto_decode_ping(f, &ping)) {
		agent_conn_send_error(c, 0, EINVAL, "bad PING");
		return;
	}
	p = agent_conn_reserve(c, cap);
	if (p && agent_proto_encode_ping(p, cap, AGENT_PROTO_PONG, &ping, &len) == 0)
		agent_conn_commit(c, len);
}

static void handle_shutdown(struct agent_conn *c, const struct agent_proto_frame *f)
{
	struct agent_proto_shutdown m;

	if (agent_proto_decode_shutdown(f, &m)) {
		agent_conn_send_error(c, 0, EINVAL, "bad SHUTDOWN");
		return;
	}
	if (!c->agent->pid1) {
		agent_conn_send_error(c, 0, EPERM, "not PID 1: no VM to power off");
		return;
	}
	c->shutdown_after_flush = true;
	c->shutdown_action = m.action;
	agent_conn_send_empty(c, AGENT_PROTO_OK, 0);
}

static void handle_exec_frame(struct agent_conn *c, const struct agent_proto_frame *f)
{
	struct agent_stream *s = agent_conn_stream_find(c, f->hdr.stream);

	/* Frames for a stream that has ended are ignored (docs/agent-protocol.md 5.1). */
	if (s && s->exec)
		agent_exec_frame(s->exec, f);
}

static void handle_file_write(struct agent_conn *c, const struct agent_proto_frame *f)
{
	struct agent_stream *s = agent_conn_stream_find(c, f->hdr.stream);

	if (s && s->exec) {
		agent_conn_send_error(c, f->hdr.stream, EBUSY, "stream %u is an exec", f->hdr.stream);
		return;
	}
	if (!s) {
		s = agent_conn_stream_open(c, f->hdr.stream);
		if (!s)
			return;
	}
	agent_file_write_chunk(c, s, f);
}

static void dispatch(struct agent_conn *c, const struct agent_proto_frame *f)
{
	uint8_t type = f->hdr.type;

	if (!c->hello_done) {
		if (type == AGENT_PROTO_HELLO)
			handle_hello(c, f);
		else
			conn_fatal(c, "first frame is not HELLO", -EPROTO);
		return;
	}
	switch (type) {
	case AGENT_PROTO_PING:
		handle_ping(c, f);
		break;
	case AGENT_PROTO_PONG:
	case AGENT_PROTO_OK:
		break;
	case AGENT_PROTO_ERROR: {
		struct agent_proto_error e;

		if (agent_proto_decode_error(f, &e) == 0)
			sv_warn("host reports error %u on stream %u: %s", e.code, f->hdr.stream,
				e.message ? e.message : "");
		break;
	}
	case AGENT_PROTO_SHUTDOWN:
		handle_shutdown(c, f);
		break;
	case AGENT_PROTO_EXEC_START:
		if (agent_conn_stream_find(c, f->hdr.stream))
			agent_conn_send_error(c, f->hdr.stream, EBUSY, "stream %u is already open",
					      f->hdr.stream);
		else
			agent_exec_start(c, f);
		break;
	case AGENT_PROTO_STDIN:
	case AGENT_PROTO_STDIN_CLOSE:
	case AGENT_PROTO_SIGNAL:
	case AGENT_PROTO_WINDOW:
		handle_exec_frame(c, f);
		break;
	case AGENT_PROTO_FILE_READ:
	case AGENT_PROTO_FILE_STAT:
	case AGENT_PROTO_FILE_LIST:
	case AGENT_PROTO_MKDIR:
	case AGENT_PROTO_REMOVE:
		if (agent_conn_stream_find(c, f->hdr.stream))
			agent_conn_send_error(c, f->hdr.stream, EBUSY, "stream %u is already open",
					      f->hdr.stream);
		else
			agent_file_request(c, f);
		break;
	case AGENT_PROTO_FILE_WRITE:
		handle_file_write(c, f);
		break;
	case AGENT_PROTO_RESTORED:
		if (agent_conn_stream_find(c, f->hdr.stream))
			agent_conn_send_error(c, f->hdr.stream, EBUSY, "stream %u is already open",
					      f->hdr.stream);
		else
			agent_restored(c, f);
		break;
	default:
		agent_conn_send_error(c, f->hdr.stream, EINVAL, "%s is not a request",
				      agent_proto_type_name(type));
		break;
	}
}

static void conn_read(struct agent_conn *c)
{
	uint8_t buf[64 * 1024];
	ssize_t n;

	do {
		n = recv(c->w.fd, buf, sizeof(buf), MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) {
		conn_close(c);
		return;
	}
	for (size_t off = 0; off < (size_t)n && !c->closed;) {
		struct agent_proto_frame f;
		size_t used;
		int r = agent_proto_reader_feed(&c->reader, buf + off, (size_t)n - off, &used, &f);

		off += used;
		if (r < 0) {
			conn_fatal(c, "bad frame", r);
			return;
		}
		if (r == 1)
			dispatch(c, &f);
	}
}

static void on_conn(struct agent_watch *w, uint32_t events)
{
	struct agent_conn *c = conn_of(w);

	if (events & EPOLLOUT)
		conn_flush(c);
	if (!c->closed && (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
		conn_read(c);
}

static void conn_close(struct agent_conn *c)
{
	struct agent *a = c->agent;
	struct agent_conn **pp;

	if (c->closed)
		return;
	c->closed = true;
	while (c->nstreams) {
		struct agent_stream *s = &c->streams[c->nstreams - 1];

		if (s->exec)
			agent_exec_abandon(s->exec); /* closes its stream */
		else
			agent_conn_stream_close(c, s);
	}
	agent_watch_remove(a, &c->w);
	close(c->w.fd);
	c->w.fd = -1;
	for (pp = &a->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	a->nconns--;
	agent_defer_free(a, c->rbuf);
	agent_defer_free(a, c->out.buf);
	agent_defer_free(a, c);
}

void agent_conn_accept(struct agent *a)
{
	for (;;) {
		int fd = accept4(a->listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct agent_conn *c;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				sv_warn("accept: %s", strerror(errno));
			if (errno == EINTR)
				continue;
			return;
		}
		if (a->nconns >= AGENT_MAX_CONNS) {
			sv_warn("refusing a connection: %u open already", a->nconns);
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (c)
			c->rbuf = malloc(AGENT_PROTO_MAX_PAYLOAD);
		if (!c || !c->rbuf) {
			sv_warn("accept: out of memory");
			if (c)
				free(c);
			close(fd);
			continue;
		}
		c->agent = a;
		c->w = (struct agent_watch){ .fd = fd, .fn = on_conn };
		agent_proto_reader_init(&c->reader, c->rbuf, AGENT_PROTO_MAX_PAYLOAD);
		if (agent_watch_set(a, &c->w, EPOLLIN) < 0) {
			free(c->rbuf);
			free(c);
			close(fd);
			continue;
		}
		c->next = a->conns;
		a->conns = c;
		a->nconns++;
	}
}
