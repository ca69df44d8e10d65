/*
 * Host side of the agent protocol. The socket is non-blocking with an
 * output buffer, and every wait polls for both directions, so the client
 * never sits in a write while the agent waits for it to read.
 */
#include "agent_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CLIENT_IN_SIZE (64u * 1024u)
#define CLIENT_CHUNK (64u * 1024u)
#define CLIENT_READ_REQUEST (4u << 20)
/* Stdin is read only while less than this is waiting to go out. */
#define CLIENT_OUT_HIGH (256u * 1024u)
#define CLIENT_RETRY_MS 10

const char *const agent_client_default_env[] = {
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
	"TERM=xterm",
	NULL,
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - now_ms();
	return left < 0 ? 0 : (int)left;
}

__attribute__((format(printf, 3, 4))) static int fail(struct agent_client *c, int err,
						       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
	return err;
}

const char *agent_client_error(const struct agent_client *c)
{
	return c->error;
}

/* ---- output buffer ---- */

/* Writes what the socket takes now. */
static int try_flush(struct agent_client *c)
{
	int r = byte_queue_send(&c->out, c->fd);

	return r ? fail(c, r, "connection to the agent: %s", strerror(-r)) : 0;
}

/* Encoders of the frames the client sends write into the output buffer through this. */
#define QUEUE(c, cap, call)                                                                  \
	({                                                                                   \
		size_t len_;                                                                 \
		uint8_t *p_ = byte_queue_reserve(&(c)->out, (cap));                                           \
		int r_ = p_ ? (call) : -ENOMEM;                                              \
		if (!r_)                                                                     \
			byte_queue_commit(&(c)->out, len_);                                  \
		r_ ? fail((c), r_, "cannot encode a request: %s", strerror(-r_)) : 0;        \
	})

/* ---- input ---- */

static int read_some(struct agent_client *c)
{
	ssize_t n;

	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	if (c->in_len == CLIENT_IN_SIZE)
		return 0;
	do {
		n = recv(c->fd, c->in + c->in_len, CLIENT_IN_SIZE - c->in_len, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n < 0)
		return fail(c, -errno, "connection to the agent: %s", strerror(errno));
	if (n == 0)
		return fail(c, -ECONNRESET, "the agent closed the connection (did the VM stop?)");
	c->in_len += (size_t)n;
	return 0;
}

/* 1 and *f if a whole frame is buffered, 0 if more bytes are needed. */
static int buffered_frame(struct agent_client *c, struct agent_proto_frame *f)
{
	while (c->in_off < c->in_len) {
		size_t used;
		int r = agent_proto_reader_feed(&c->reader, c->in + c->in_off, c->in_len - c->in_off,
						&used, f);

		c->in_off += used;
		if (r < 0)
			return fail(c, -EPROTO, "bad frame from the agent: %s", strerror(-r));
		if (r == 1)
			return 1;
	}
	return 0;
}

/* Waits for the next frame, flushing output meanwhile. -ETIMEDOUT at the deadline. */
static int next_frame(struct agent_client *c, struct agent_proto_frame *f, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		int r = buffered_frame(c, f);

		if (r)
			return r;
		if (byte_queue_len(&c->out))
			p.events |= POLLOUT;
		r = poll(&p, 1, remaining(deadline));
		if (r < 0 && errno != EINTR)
			return fail(c, -errno, "poll: %s", strerror(errno));
		if (r == 0)
			return fail(c, -ETIMEDOUT, "the agent did not answer in time");
		if (r < 0)
			continue;
		if ((p.revents & POLLOUT) && (r = try_flush(c)))
			return r;
		if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && (r = read_some(c)))
			return r;
	}
}

/* Answers what the agent may send on stream 0 at any time; 1 if f was consumed. */
static int connection_frame(struct agent_client *c, const struct agent_proto_frame *f)
{
	if (f->hdr.stream != 0)
		return 0;
	if (f->hdr.type == AGENT_PROTO_PING) {
		struct agent_proto_ping ping;

		if (agent_proto_decode_ping(f, &ping))
			return fail(c, -EPROTO, "bad PING from the agent");
		return QUEUE(c, 64, agent_proto_encode_ping(p_, 64, AGENT_PROTO_PONG, &ping, &len_)) ?: 1;
	}
	if (f->hdr.type == AGENT_PROTO_ERROR) {
		struct agent_proto_error e = { 0 };

		agent_proto_decode_error(f, &e);
		return fail(c, -EPROTO, "the agent reports a protocol error: %s",
			    e.message ? e.message : "(no message)");
	}
	return 1; /* PONG, OK on stream 0: nothing to do */
}

/* An ERROR reply on a request's stream, as a negative errno with its message kept. */
static int remote_error(struct agent_client *c, const struct agent_proto_frame *f)
{
	struct agent_proto_error e;

	if (agent_proto_decode_error(f, &e))
		return fail(c, -EPROTO, "malformed ERROR from the agent");
	fail(c, 0, "%s", e.message ? e.message : strerror((int)e.code));
	return -(int)(e.code <= 4095 ? e.code : AGENT_PROTO_EIO);
}

/* The next frame of `stream`, answering connection-level frames on the way. */
static int stream_frame(struct agent_client *c, uint32_t stream, struct agent_proto_frame *f,
			int64_t deadline)
{
	for (;;) {
		/* Without a deadline of its own, each frame waits the client's frame timeout at most. */
		int r = next_frame(c, f, deadline >= 0 || !c->frame_timeout_ms ? deadline
										: now_ms() + c->frame_timeout_ms);

		if (r < 0)
			return r;
		r = connection_frame(c, f);
		if (r < 0)
			return r;
		if (r == 0 && f->hdr.stream == stream)
			return 0;
	}
}

static int flush_all(struct agent_client *c, int64_t deadline)
{
	while (byte_queue_len(&c->out)) {
		struct pollfd p = { .fd = c->fd, .events = POLLOUT };
		int r = poll(&p, 1, remaining(deadline));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(c, -errno, "poll: %s", strerror(errno));
		if (r == 0)
			return fail(c, -ETIMEDOUT, "the agent did not take the request in time");
		if ((r = try_flush(c)))
			return r;
	}
	return 0;
}

static uint32_t new_stream(struct agent_client *c)
{
	if (++c->next_stream == 0)
		c->next_stream = 1;
	return c->next_stream;
}

/* ---- connecting ---- */

/* Reads the VMM's one-line answer to CONNECT; 1 OK, 0 refused (retry), <0 fatal. */
static int read_connect_reply(struct agent_client *c, int fd, int64_t deadline)
{
	char line[64];
	size_t len = 0;

	while (len < sizeof(line) - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;
		int r = poll(&p, 1, remaining(deadline));

		if (r == 0)
			return fail(c, -ETIMEDOUT, "no answer from the VMM's vsock socket");
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return fail(c, -errno, "poll: %s", strerror(errno));
		}
		n = read(fd, line + len, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0; /* reset: nothing listens on the port yet */
		if (line[len] == '\n') {
			line[len] = '\0';
			if (strncmp(line, "OK ", 3) == 0)
				return 1;
			return fail(c, -ECONNREFUSED, "the VMM refused the connection: %s", line);
		}
		len++;
	}
	return fail(c, -EPROTO, "overlong answer from the VMM's vsock socket");
}

static int connect_once(struct agent_client *c, const char *path, uint32_t port, int64_t deadline)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char line[32];
	int fd, n, r;

	if (strlen(path) >= sizeof(addr.sun_path))
		return fail(c, -ENAMETOOLONG, "socket path too long: %s", path);
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(c, -errno, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		r = errno;
		close(fd);
		if (r == ENOENT || r == ECONNREFUSED)
			return 0;
		return fail(c, -r, "%s: %s", path, strerror(r));
	}
	n = snprintf(line, sizeof(line), "CONNECT %u\n", port);
	if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		return 0;
	}
	r = read_connect_reply(c, fd, deadline);
	if (r <= 0) {
		close(fd);
		return r;
	}
	c->fd = fd;
	return 1;
}

static int hello(struct agent_client *c, int64_t deadline)
{
	struct agent_proto_hello mine = {
		.min_version = AGENT_PROTO_VERSION_MIN,
		.max_version = AGENT_PROTO_VERSION_MAX,
		.name = "sandvm-host",
	};
	struct agent_proto_frame f;
	struct agent_proto_hello theirs;
	int r = QUEUE(c, 256, agent_proto_encode_hello(p_, 256, &mine, &len_));

	if (r || (r = flush_all(c, deadline)))
		return r;
	r = next_frame(c, &f, deadline);
	if (r < 0)
		return r;
	if (f.hdr.type == AGENT_PROTO_ERROR)
		return remote_error(c, &f);
	if (f.hdr.type != AGENT_PROTO_HELLO || agent_proto_decode_hello(&f, &theirs))
		return fail(c, -EPROTO, "the agent did not answer HELLO");
	if (theirs.max_version < AGENT_PROTO_VERSION_MIN || theirs.min_version > AGENT_PROTO_VERSION_MAX)
		return fail(c, -EPROTONOSUPPORT, "agent speaks protocol %u..%u, this host %u..%u",
			    theirs.min_version, theirs.max_version, AGENT_PROTO_VERSION_MIN,
			    AGENT_PROTO_VERSION_MAX);
	snprintf(c->agent_name, sizeof(c->agent_name), "%s", theirs.name);
	c->agent_features = theirs.features;
	return 0;
}

static int client_init(struct agent_client *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->rbuf = malloc(AGENT_PROTO_MAX_PAYLOAD);
	c->in = malloc(CLIENT_IN_SIZE);
	c->scratch = malloc(CLIENT_CHUNK);
	if (!c->rbuf || !c->in || !c->scratch) {
		agent_client_close(c);
		return fail(c, -ENOMEM, "out of memory");
	}
	agent_proto_reader_init(&c->reader, c->rbuf, AGENT_PROTO_MAX_PAYLOAD);
	return 0;
}

/* On failure the client is closed, but its message stays readable. */
static int close_on_error(struct agent_client *c, int r)
{
	char keep[sizeof(c->error)];

	if (!r)
		return 0;
	memcpy(keep, c->error, sizeof(keep));
	agent_client_close(c);
	memcpy(c->error, keep, sizeof(keep));
	return r;
}

int agent_client_connect(struct agent_client *c, const char *vsock_path, uint32_t port, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	int r = client_init(c, -1);

	while (!r) {
		r = connect_once(c, vsock_path, port, deadline);
		if (r < 0)
			break;
		if (r == 1) {
			fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
			r = hello(c, deadline);
			break;
		}
		if (deadline >= 0 && now_ms() >= deadline) {
			r = fail(c, -ETIMEDOUT, "the agent did not come up within %d ms", timeout_ms);
			break;
		}
		poll(NULL, 0, CLIENT_RETRY_MS);
	}
	return close_on_error(c, r);
}

int agent_client_attach_fd(struct agent_client *c, int fd, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	int r = client_init(c, fd); /* closes fd on failure */

	if (r)
		return r;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return close_on_error(c, hello(c, deadline));
}

void agent_client_close(struct agent_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->rbuf);
	free(c->in);
	byte_queue_free(&c->out);
	free(c->scratch);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

int agent_client_ping(struct agent_client *c, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	struct agent_proto_ping ping = { .token = (uint64_t)now_ms() };
	int r = QUEUE(c, 64, agent_proto_encode_ping(p_, 64, AGENT_PROTO_PING, &ping, &len_));

	while (!r) {
		struct agent_proto_frame f;
		struct agent_proto_ping pong;

		r = next_frame(c, &f, deadline);
		if (r < 0)
			return r;
		r = 0;
		if (f.hdr.type == AGENT_PROTO_PONG && agent_proto_decode_ping(&f, &pong) == 0 &&
		    pong.token == ping.token)
			return 0;
		if (f.hdr.stream == 0 && f.hdr.type != AGENT_PROTO_PONG)
			r = connection_frame(c, &f) < 0 ? -EPROTO : 0;
	}
	return r;
}

int agent_client_shutdown(struct agent_client *c, uint32_t action)
{
	struct agent_proto_shutdown m = { .action = action };
	struct agent_proto_frame f;
	int64_t deadline = now_ms() + 10000;
	int r = QUEUE(c, 64, agent_proto_encode_shutdown(p_, 64, &m, &len_));

	while (!r) {
		r = next_frame(c, &f, deadline);
		if (r < 0)
			return r;
		r = 0;
		if (f.hdr.stream != 0)
			continue;
		if (f.hdr.type == AGENT_PROTO_OK) {
			/* Closing tells the agent its answer arrived; it ends the VM then. */
			close(c->fd);
			c->fd = -1;
			return 0;
		}
		if (f.hdr.type == AGENT_PROTO_ERROR)
			return remote_error(c, &f);
	}
	return r;
}

/* ---- after a restore ---- */

int agent_client_restored_prepare(struct agent_proto_restored *m,
				  uint8_t entropy[AGENT_PROTO_RESTORED_ENTROPY])
{
	struct timespec ts;
	size_t got = 0;

	memset(m, 0, sizeof(*m));
	while (got < AGENT_PROTO_RESTORED_ENTROPY) {
		ssize_t n = getrandom(entropy + got, AGENT_PROTO_RESTORED_ENTROPY - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += (size_t)n;
	}
	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		return -errno;
	m->entropy = entropy;
	m->entropy_len = AGENT_PROTO_RESTORED_ENTROPY;
	m->realtime_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	return 0;
}

/* Room for the fixed fields and six strings at their longest (AGENT_PROTO_NET_SPEC_MAX bounds them). */
#define RESTORED_FRAME_MAX (AGENT_PROTO_HEADER_SIZE + 8 * AGENT_PROTO_TLV_HEADER_SIZE + \
			    AGENT_PROTO_RESTORED_ENTROPY + 8 + 6 * (AGENT_PROTO_NET_SPEC_MAX + 1))

int agent_client_restored(struct agent_client *c, const struct agent_proto_restored *m, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	uint32_t stream;
	struct agent_proto_frame f;
	int r;

	if (!(c->agent_features & AGENT_PROTO_FEATURE_RESTORED))
		return fail(c, -EOPNOTSUPP, "the agent (%s) does not support RESTORED", c->agent_name);
	stream = new_stream(c);
	r = QUEUE(c, RESTORED_FRAME_MAX,
		  agent_proto_encode_restored(p_, RESTORED_FRAME_MAX, stream, m, &len_));
	if (r || (r = stream_frame(c, stream, &f, deadline)))
		return r;
	if (f.hdr.type == AGENT_PROTO_ERROR)
		return remote_error(c, &f);
	if (f.hdr.type != AGENT_PROTO_OK || agent_proto_decode_empty(&f))
		return fail(c, -EPROTO, "unexpected %s after RESTORED", agent_proto_type_name(f.hdr.type));
	return 0;
}

/* ---- exec ---- */

int agent_exec_status_code(const struct agent_exec_status *st)
{
	switch (st->kind) {
	case AGENT_PROTO_EXIT_EXITED:
		return (int)(st->code & 0xff);
	case AGENT_PROTO_EXIT_SIGNALED:
		return 128 + (int)(st->code & 0x7f);
	default:
		return 124;
	}
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };

			poll(&pf, 1, -1);
			continue;
		}
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

struct exec_state {
	uint32_t stream;
	bool started, done;
	int out_fd, err_fd;
	uint32_t stdin_window;
	uint64_t output_limit;
	struct agent_exec_status *st;
};

/* Handles one frame of the exec's stream; output goes out before its credit is returned. */
static int exec_frame(struct agent_client *c, struct exec_state *x, const struct agent_proto_frame *f)
{
	switch (f->hdr.type) {
	case AGENT_PROTO_EXEC_STARTED: {
		struct agent_proto_exec_started m;

		if (agent_proto_decode_exec_started(f, &m))
			return fail(c, -EPROTO, "malformed EXEC_STARTED");
		x->started = true;
		x->st->pid = m.pid;
		return 0;
	}
	case AGENT_PROTO_STDOUT:
	case AGENT_PROTO_STDERR: {
		bool out = f->hdr.type == AGENT_PROTO_STDOUT;
		struct agent_proto_window w = { .direction = out ? AGENT_PROTO_DIR_STDOUT
								  : AGENT_PROTO_DIR_STDERR };
		int *fd = out ? &x->out_fd : &x->err_fd;
		struct agent_proto_data d;

		if (agent_proto_decode_data(f, &d))
			return fail(c, -EPROTO, "malformed output frame");
		/* A reader that went away (e.g. `| head`) only stops the copying. */
		if (*fd >= 0 && write_all(*fd, d.data, d.len) < 0)
			*fd = -1;
		if (out)
			x->st->out_bytes += d.len;
		else
			x->st->err_bytes += d.len;
		if (x->output_limit && x->st->out_bytes + x->st->err_bytes > x->output_limit)
			return fail(c, -EFBIG, "the command wrote more than %llu bytes of output",
				    (unsigned long long)x->output_limit);
		w.credit = d.len;
		if (!d.len)
			return 0;
		return QUEUE(c, 64, agent_proto_encode_window(p_, 64, x->stream, &w, &len_));
	}
	case AGENT_PROTO_WINDOW: {
		struct agent_proto_window w;

		if (agent_proto_decode_window(f, &w))
			return fail(c, -EPROTO, "malformed WINDOW");
		if (w.direction == AGENT_PROTO_DIR_STDIN)
			x->stdin_window += w.credit;
		return 0;
	}
	case AGENT_PROTO_EXIT: {
		struct agent_proto_exit m;

		if (agent_proto_decode_exit(f, &m))
			return fail(c, -EPROTO, "malformed EXIT");
		x->st->kind = m.kind;
		x->st->code = m.code;
		x->done = true;
		return 0;
	}
	case AGENT_PROTO_ERROR:
		return remote_error(c, f);
	default:
		return fail(c, -EPROTO, "unexpected %s on an exec stream",
			    agent_proto_type_name(f->hdr.type));
	}
}

static int exec_read_stdin(struct agent_client *c, struct exec_state *x, int *in_fd)
{
	uint8_t *buf = c->scratch;
	size_t want = x->stdin_window < CLIENT_CHUNK ? x->stdin_window : CLIENT_CHUNK;
	struct agent_proto_data d = { .data = buf };
	ssize_t n;

	do {
		n = read(*in_fd, buf, want);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n <= 0) {
		*in_fd = -1;
		return QUEUE(c, 64, agent_proto_encode_empty(p_, 64, AGENT_PROTO_STDIN_CLOSE, x->stream,
							      &len_));
	}
	d.len = (uint32_t)n;
	x->stdin_window -= (uint32_t)n;
	return QUEUE(c, CLIENT_CHUNK + 64,
		     agent_proto_encode_data(p_, CLIENT_CHUNK + 64, AGENT_PROTO_STDIN, x->stream, &d,
					     &len_));
}

static int exec_signals(struct agent_client *c, struct exec_state *x, int *sig_fd)
{
	uint8_t sigs[16];
	ssize_t n = read(*sig_fd, sigs, sizeof(sigs));
	int r = 0;

	if (n == 0)
		*sig_fd = -1;
	for (ssize_t i = 0; i < n && !r; i++) {
		struct agent_proto_signal s = { .signo = sigs[i] };

		if (s.signo >= 1 && s.signo <= 64 && x->started)
			r = QUEUE(c, 64, agent_proto_encode_signal(p_, 64, x->stream, &s, &len_));
	}
	return r;
}

int agent_client_exec(struct agent_client *c, const struct agent_exec_request *req,
		      const struct agent_exec_io *io, struct agent_exec_status *st)
{
	const char *const *env = req->env ? req->env : agent_client_default_env;
	struct agent_proto_exec_start m = {
		.argv = req->argv,
		.env = env,
		.workdir = req->workdir,
		.uid = req->uid,
		.gid = req->gid,
		.flags = req->pty ? AGENT_PROTO_EXEC_PTY : 0,
		.timeout_ms = req->timeout_ms,
		.rows = req->pty ? (req->rows ? req->rows : 24) : 0,
		.cols = req->pty ? (req->cols ? req->cols : 80) : 0,
	};
	struct exec_state x = {
		.stream = new_stream(c),
		.out_fd = io->out_fd,
		.err_fd = io->err_fd,
		.stdin_window = AGENT_PROTO_INITIAL_WINDOW,
		.output_limit = req->output_limit,
		.st = st,
	};
	long long deadline = req->deadline_ms ? now_ms() + req->deadline_ms : 0;
	int in_fd = io->in_fd, sig_fd = io->signal_fd;
	bool stdin_closed = false;
	int r;

	memset(st, 0, sizeof(*st));
	for (m.argc = 0; req->argv[m.argc]; m.argc++)
		;
	for (m.envc = 0; env[m.envc]; m.envc++)
		;
	if (!m.argc)
		return fail(c, -EINVAL, "no command given");
	r = QUEUE(c, AGENT_PROTO_MAX_FRAME,
		  agent_proto_encode_exec_start(p_, AGENT_PROTO_MAX_FRAME, x.stream, &m, &len_));
	if (r == -E2BIG || r == -EMSGSIZE)
		return fail(c, -E2BIG, "argument list and environment too large (%u bytes at most)",
			    AGENT_PROTO_MAX_ARGS_BYTES);
	while (!r && !x.done) {
		struct pollfd p[3] = {
			{ .fd = c->fd, .events = POLLIN | (byte_queue_len(&c->out) ? POLLOUT : 0) },
			{ .fd = -1, .events = POLLIN },
			{ .fd = -1, .events = POLLIN },
		};
		struct agent_proto_frame f;

		if (x.started && in_fd < 0 && !stdin_closed) {
			stdin_closed = true;
			r = QUEUE(c, 64, agent_proto_encode_empty(p_, 64, AGENT_PROTO_STDIN_CLOSE, x.stream,
								  &len_));
			if (r)
				break;
			p[0].events |= POLLOUT;
		}
		if (x.started && in_fd >= 0 && x.stdin_window && byte_queue_len(&c->out) < CLIENT_OUT_HIGH)
			p[1].fd = in_fd;
		p[2].fd = sig_fd;
		{
			long long left = deadline ? deadline - now_ms() : -1;
			int n;

			if (deadline && left <= 0) {
				r = fail(c, -ETIMEDOUT, "the command did not finish within %u ms", req->deadline_ms);
				break;
			}
			n = poll(p, 3, deadline ? (int)(left > 60000 ? 60000 : left) : -1);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				r = fail(c, -errno, "poll: %s", strerror(errno));
				break;
			}
			if (n == 0)
				continue; /* the deadline is checked at the top */
		}
		if ((p[0].revents & POLLOUT) && (r = try_flush(c)))
			break;
		if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && (r = read_some(c)))
			break;
		while (!r && !x.done && (r = buffered_frame(c, &f)) == 1) {
			r = connection_frame(c, &f);
			if (r == 0 && f.hdr.stream == x.stream)
				r = exec_frame(c, &x, &f);
			else if (r == 1)
				r = 0;
		}
		if (r)
			break;
		if (p[1].fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			r = exec_read_stdin(c, &x, &in_fd);
			if (in_fd < 0)
				stdin_closed = true;
		}
		if (!r && p[2].fd >= 0 && (p[2].revents & (POLLIN | POLLHUP)))
			r = exec_signals(c, &x, &sig_fd);
		if (!r && byte_queue_len(&c->out))
			r = try_flush(c);
	}
	if (!r)
		r = flush_all(c, now_ms() + 10000);
	return r;
}

/* ---- files ---- */

int agent_client_stat(struct agent_client *c, const char *path, struct agent_proto_stat_result *st)
{
	struct agent_proto_path m = { .path = path };
	size_t cap = strlen(path) + 64;
	uint32_t stream = new_stream(c);
	struct agent_proto_frame f;
	int r = QUEUE(c, cap, agent_proto_encode_path(p_, cap, AGENT_PROTO_FILE_STAT, stream, &m, &len_));

	if (r || (r = stream_frame(c, stream, &f, -1)))
		return r;
	if (f.hdr.type == AGENT_PROTO_ERROR)
		return remote_error(c, &f);
	if (f.hdr.type != AGENT_PROTO_STAT_RESULT || agent_proto_decode_stat_result(&f, st))
		return fail(c, -EPROTO, "malformed FILE_STAT reply");
	return 0;
}

int agent_client_read_file(struct agent_client *c, const char *path, int out_fd, uint64_t limit,
			   uint64_t *copied)
{
	struct agent_proto_stat_result st;
	uint64_t off = 0;
	bool eof = false;
	int r;

	*copied = 0;
	r = agent_client_stat(c, path, &st);
	if (r)
		return r;
	if (st.type == AGENT_PROTO_FT_DIRECTORY)
		return fail(c, -EISDIR, "%s: Is a directory", path);
	if (limit && st.size > limit)
		return fail(c, -EFBIG, "%s: %llu bytes, over the limit of %llu", path,
			    (unsigned long long)st.size, (unsigned long long)limit);
	while (!eof) {
		struct agent_proto_file_read m = { .path = path, .offset = off,
						   .max_len = CLIENT_READ_REQUEST };
		size_t cap = strlen(path) + 64;
		uint32_t stream = new_stream(c);
		bool last = false;

		r = QUEUE(c, cap, agent_proto_encode_file_read(p_, cap, stream, &m, &len_));
		while (!r && !last) {
			struct agent_proto_frame f;
			struct agent_proto_file_data d;

			if ((r = stream_frame(c, stream, &f, -1)))
				break;
			if (f.hdr.type == AGENT_PROTO_ERROR)
				return remote_error(c, &f);
			if (f.hdr.type != AGENT_PROTO_FILE_DATA || agent_proto_decode_file_data(&f, &d))
				return fail(c, -EPROTO, "malformed FILE_READ reply");
			off += d.len;
			if (limit && off > limit)
				return fail(c, -EFBIG, "%s grew over the limit of %llu bytes", path,
					    (unsigned long long)limit);
			if (write_all(out_fd, d.data, d.len) < 0)
				return fail(c, -errno, "writing %s locally: %s", path, strerror(errno));
			*copied = off;
			last = d.flags & AGENT_PROTO_DATA_LAST;
			eof = d.flags & AGENT_PROTO_DATA_EOF;
		}
		if (r)
			return r;
	}
	return 0;
}

/* Anything the agent sent meanwhile: an early ERROR ends the write. */
static int write_check(struct agent_client *c, uint32_t stream)
{
	struct agent_proto_frame f;
	int r;

	if ((r = try_flush(c)) || (r = read_some(c)))
		return r;
	while ((r = buffered_frame(c, &f)) == 1) {
		r = connection_frame(c, &f);
		if (r < 0)
			return r;
		if (r == 0 && f.hdr.stream == stream && f.hdr.type == AGENT_PROTO_ERROR)
			return remote_error(c, &f);
	}
	return r;
}

int agent_client_write_file(struct agent_client *c, const char *path, int in_fd, uint32_t mode,
			    uint64_t *copied)
{
	uint8_t *buf = c->scratch;
	uint32_t stream = new_stream(c);
	uint32_t flags = AGENT_PROTO_WRITE_CREATE | AGENT_PROTO_WRITE_TRUNCATE;
	size_t cap = CLIENT_CHUNK + strlen(path) + 128;
	struct agent_proto_frame f;
	int r = 0;

	*copied = 0;
	while (!(flags & AGENT_PROTO_WRITE_FINAL)) {
		struct agent_proto_file_write m = { .path = path, .mode = mode, .data = buf };
		ssize_t n = read(in_fd, buf, CLIENT_CHUNK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = fail(c, -errno, "reading local data: %s", strerror(errno));
			n = 0; /* the stream still has to end */
		}
		if (n == 0)
			flags |= AGENT_PROTO_WRITE_FINAL;
		m.flags = flags;
		m.len = (uint32_t)n;
		if (QUEUE(c, cap, agent_proto_encode_file_write(p_, cap, stream, &m, &len_)))
			return -EPROTO;
		flags &= ~(AGENT_PROTO_WRITE_CREATE | AGENT_PROTO_WRITE_TRUNCATE);
		*copied += (uint64_t)n;
		int w = flush_all(c, -1);

		if (!w && !(flags & AGENT_PROTO_WRITE_FINAL))
			w = write_check(c, stream);
		if (w)
			return w;
	}
	if (r)
		return r;
	if ((r = stream_frame(c, stream, &f, -1)))
		return r;
	if (f.hdr.type == AGENT_PROTO_ERROR)
		return remote_error(c, &f);
	if (f.hdr.type != AGENT_PROTO_OK)
		return fail(c, -EPROTO, "unexpected %s after a write", agent_proto_type_name(f.hdr.type));
	return 0;
}

int agent_client_list(struct agent_client *c, const char *path,
		      int (*fn)(void *ctx, const struct agent_proto_list_entry *e), void *ctx)
{
	struct agent_proto_path m = { .path = path };
	size_t cap = strlen(path) + 64;
	uint32_t stream = new_stream(c);
	int stop = 0;
	int r = QUEUE(c, cap, agent_proto_encode_path(p_, cap, AGENT_PROTO_FILE_LIST, stream, &m, &len_));

	while (!r) {
		struct agent_proto_frame f;
		struct agent_proto_list_entry e;

		if ((r = stream_frame(c, stream, &f, -1)))
			break;
		if (f.hdr.type == AGENT_PROTO_LIST_END)
			return stop;
		if (f.hdr.type == AGENT_PROTO_ERROR)
			return remote_error(c, &f);
		if (f.hdr.type != AGENT_PROTO_LIST_ENTRY || agent_proto_decode_list_entry(&f, &e))
			return fail(c, -EPROTO, "malformed FILE_LIST reply");
		/*
		 * A guest may send entries for ever: once fn says stop, the call ends
		 * here, and what the agent still sends on this stream would be out of
		 * step, so the connection is closed.
		 */
		stop = fn(ctx, &e);
		if (stop) {
			fail(c, stop, "the listing was stopped");
			close(c->fd);
			c->fd = -1;
			return stop;
		}
	}
	return r;
}

static int simple_request(struct agent_client *c, uint32_t stream)
{
	struct agent_proto_frame f;
	int r = stream_frame(c, stream, &f, -1);

	if (r)
		return r;
	if (f.hdr.type == AGENT_PROTO_ERROR)
		return remote_error(c, &f);
	if (f.hdr.type != AGENT_PROTO_OK)
		return fail(c, -EPROTO, "unexpected %s", agent_proto_type_name(f.hdr.type));
	return 0;
}

int agent_client_mkdir(struct agent_client *c, const char *path, uint32_t mode, bool parents)
{
	struct agent_proto_mkdir m = { .path = path, .mode = mode,
				       .flags = parents ? AGENT_PROTO_MKDIR_PARENTS : 0 };
	size_t cap = strlen(path) + 64;
	uint32_t stream = new_stream(c);

	return QUEUE(c, cap, agent_proto_encode_mkdir(p_, cap, stream, &m, &len_))
		?: simple_request(c, stream);
}

int agent_client_remove(struct agent_client *c, const char *path, bool recursive)
{
	struct agent_proto_remove m = { .path = path,
					.flags = recursive ? AGENT_PROTO_REMOVE_RECURSIVE : 0 };
	size_t cap = strlen(path) + 64;
	uint32_t stream = new_stream(c);

	return QUEUE(c, cap, agent_proto_encode_remove(p_, cap, stream, &m, &len_))
		?: simple_request(c, stream);
}
