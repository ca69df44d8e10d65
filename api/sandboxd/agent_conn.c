#include "agent_conn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_proto.h"
#include "log.h"

#define EXEC_STREAM 1u
/* Connection attempts while the guest starts: quick at first (a restored guest answers within
 * milliseconds), then no more often than every RETRY_MAX_MS (a cold boot takes seconds). */
#define RETRY_MIN_MS 4
#define RETRY_MAX_MS 100
/* An answer to CONNECT that does not come this soon is asked for again (the request may be lost while the guest boots). */
#define ATTEMPT_MS 1000
#define READ_CHUNK (64 * 1024)
#define STDIN_CHUNK (64u * 1024u)
/* Frames the host writes and the agent has not read yet (PONGs, credit, stdin): beyond this it is stuck. */
#define WRITE_QUEUE_MAX (2u * 1024 * 1024)
#define MAX_PENDING_SIGNALS 8
/* FILE_WRITE chunks, one written at a time: the agent's reading paces the upload. */
#define FILE_CHUNK (64u * 1024u)
/* Asked for per FILE_READ (the agent answers at most 4 MiB). */
#define FILE_READ_REQUEST (4u << 20)
/* RESTORED without a deadline of the caller's still gets one: the guest must not hold a create for ever. */
#define RESTORED_DEADLINE_MS 10000u
/* The largest RESTORED frame: fixed fields and six strings at their longest. */
#define RESTORED_FRAME_MAX (AGENT_PROTO_HEADER_SIZE + 8 * AGENT_PROTO_TLV_HEADER_SIZE + \
			    AGENT_PROTO_RESTORED_ENTROPY + 8 + 6 * (AGENT_PROTO_NET_SPEC_MAX + 1))

enum ac_state { S_CONNECTING, S_CONNECT_REPLY, S_HELLO, S_RUNNING };
enum ac_kind { K_HELLO, K_EXEC, K_FILE, K_RESTORED };

/* A file call's state. */
struct ac_file {
	struct agent_file_request rq; /* path points at path below */
	const struct agent_file_ops *ops;
	char *path;
	uint8_t *chunk;       /* write: the chunk read from rq.fd */
	bool stat_done;       /* read: the size was checked, data is asked for */
	bool write_started;   /* write: the first chunk (CREATE, TRUNCATE) went out */
	bool final_sent;      /* write: the FINAL chunk went out, OK or ERROR comes next */
	uint64_t reply_bytes; /* read: bytes of the FILE_READ reply under way */
	struct agent_file_result res;
};

struct agent_conn {
	uv_loop_t *loop;
	uv_pipe_t pipe;
	uv_connect_t connect_req;
	uv_timer_t deadline, retry;
	unsigned open_handles;
	bool pipe_open, retrying, done, cancelled;
	enum ac_kind kind; /* K_HELLO: done once the agent answered */
	enum ac_state state;
	char path[108];
	uint32_t port, connect_ms, deadline_ms, idle_ms;
	uint32_t retry_ms; /* the wait before the next connection attempt */
	uint64_t connect_deadline; /* loop time */
	uint64_t call_end;         /* loop time: deadline_ms after HELLO, 0: none */
	uint32_t stream;           /* of the request under way */

	const struct agent_conn_ops *ops;
	void *ctx;

	char line[64]; /* the VMM's answer to CONNECT */
	size_t line_len;
	struct agent_proto_reader reader;
	uint8_t *payload;
	uint8_t *start_frame; /* EXEC_START or RESTORED, encoded at once: the request's strings need not outlive the call */
	size_t start_len;

	bool started, exited;
	uint32_t out_window[2]; /* output the agent may still send: stdout, stderr */
	uint32_t stdin_window;
	bool stdin_close_wanted, stdin_closed;
	int pending_signals[MAX_PENDING_SIGNALS];
	unsigned npending;
	struct agent_exec_status st;

	struct ac_file file;
};

struct ac_write {
	uv_write_t w;
	struct agent_conn *notify; /* a FILE_WRITE chunk: the next one follows once it is written */
	uint8_t data[];
};

static void start_connect(struct agent_conn *ac);

static void on_retry(uv_timer_t *t)
{
	start_connect(t->data);
}

/* ---- ending ---- */

static void ac_free(struct agent_conn *ac)
{
	free(ac->payload);
	/* A first frame may carry what no one should find later: RESTORED's entropy, an exec's environment. */
	if (ac->start_frame)
		explicit_bzero(ac->start_frame, ac->start_len);
	free(ac->start_frame);
	free(ac->file.path);
	free(ac->file.chunk);
	free(ac);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct agent_conn *ac = h->data;

	if (h == (uv_handle_t *)&ac->pipe && ac->retrying && !ac->done) {
		/* Nothing listened yet: try again shortly, while the connect time lasts. */
		ac->retrying = false;
		ac->open_handles--;
		uv_timer_start(&ac->retry, on_retry, ac->retry_ms, 0);
		ac->retry_ms = ac->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : ac->retry_ms * 2;
		return;
	}
	if (--ac->open_handles == 0 && ac->done)
		ac_free(ac);
}

static void close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, on_handle_closed);
}

static void close_all(struct agent_conn *ac)
{
	uv_timer_stop(&ac->deadline);
	uv_timer_stop(&ac->retry);
	if (ac->pipe_open) {
		ac->pipe_open = false;
		close_handle((uv_handle_t *)&ac->pipe);
	}
	close_handle((uv_handle_t *)&ac->deadline);
	close_handle((uv_handle_t *)&ac->retry);
}

__attribute__((format(printf, 3, 4))) static void finish(struct agent_conn *ac, int r, const char *fmt, ...)
{
	char msg[512] = "";
	va_list ap;

	if (ac->done)
		return;
	ac->done = true;
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	close_all(ac);
	if (ac->cancelled)
		return;
	if (ac->kind == K_FILE)
		ac->file.ops->ended(ac->ctx, r, &ac->file.res, msg);
	else if (ac->ops->ended)
		ac->ops->ended(ac->ctx, r, &ac->st, msg);
}

void agent_conn_cancel(struct agent_conn *ac)
{
	ac->cancelled = true;
	finish(ac, -ECANCELED, NULL);
}

/* ---- writing ---- */

static void upload_written(struct agent_conn *ac);

static void on_written(uv_write_t *w, int status)
{
	struct ac_write *aw = (struct ac_write *)w;
	struct agent_conn *ac = aw->notify;

	free(aw);
	/* A broken connection shows on the read side. */
	if (ac && status == 0 && !ac->done)
		upload_written(ac);
}

/* Encodes one frame with encode(buf, cap, &len) and queues it. */
#define SEND(ac, cap, call)                                                                      \
	({                                                                                       \
		struct ac_write *aw_ = malloc(sizeof(*aw_) + (cap));                             \
		size_t len_ = 0;                                                                 \
		uint8_t *p_ = aw_ ? aw_->data : NULL;                                            \
		if (aw_)                                                                         \
			aw_->notify = NULL;                                                      \
		int r_ = p_ ? (call) : -ENOMEM;                                                  \
		if (!r_)                                                                         \
			r_ = send_frame((ac), aw_, len_);                                        \
		else                                                                             \
			free(aw_);                                                               \
		r_;                                                                              \
	})

static int send_frame(struct agent_conn *ac, struct ac_write *aw, size_t len)
{
	uv_buf_t b = uv_buf_init((char *)aw->data, (unsigned)len);
	int r;

	if (!ac->pipe_open || ac->done) {
		free(aw);
		return -EPIPE;
	}
	if (uv_stream_get_write_queue_size((uv_stream_t *)&ac->pipe) > WRITE_QUEUE_MAX) {
		free(aw);
		finish(ac, -EPROTO, "the guest agent does not read what the host sends");
		return -EPROTO;
	}
	r = uv_write(&aw->w, (uv_stream_t *)&ac->pipe, &b, 1, on_written);
	if (r < 0) {
		free(aw);
		finish(ac, -EIO, "writing to the guest agent: %s", uv_strerror(r));
	}
	return r;
}

static int send_bytes(struct agent_conn *ac, const void *data, size_t len)
{
	struct ac_write *aw = malloc(sizeof(*aw) + len);

	if (!aw)
		return -ENOMEM;
	aw->notify = NULL;
	memcpy(aw->data, data, len);
	return send_frame(ac, aw, len);
}

/* ---- the exec's frames ---- */

static void flush_pending(struct agent_conn *ac)
{
	for (unsigned i = 0; i < ac->npending && !ac->done; i++) {
		struct agent_proto_signal s = { .signo = (uint32_t)ac->pending_signals[i] };

		SEND(ac, 64, agent_proto_encode_signal(p_, 64, EXEC_STREAM, &s, &len_));
	}
	ac->npending = 0;
	if (ac->stdin_close_wanted && !ac->stdin_closed && !ac->done) {
		ac->stdin_closed = true;
		SEND(ac, 64, agent_proto_encode_empty(p_, 64, AGENT_PROTO_STDIN_CLOSE, EXEC_STREAM, &len_));
	}
}

static void remote_error(struct agent_conn *ac, const struct agent_proto_frame *f, const char *what)
{
	struct agent_proto_error e = { 0 };

	if (agent_proto_decode_error(f, &e)) {
		finish(ac, -EPROTO, "malformed ERROR from the guest agent");
		return;
	}
	finish(ac, -(int)(e.code && e.code <= 4095 ? e.code : EIO), "%s%s", what,
	       e.message ? e.message : strerror((int)(e.code <= 4095 ? e.code : EIO)));
}

static void exec_frame(struct agent_conn *ac, const struct agent_proto_frame *f)
{
	switch (f->hdr.type) {
	case AGENT_PROTO_EXEC_STARTED: {
		struct agent_proto_exec_started m;

		if (ac->started || agent_proto_decode_exec_started(f, &m)) {
			finish(ac, -EPROTO, "malformed EXEC_STARTED from the guest agent");
			return;
		}
		ac->started = true;
		ac->st.pid = m.pid;
		flush_pending(ac);
		if (!ac->done && ac->ops->started)
			ac->ops->started(ac->ctx, m.pid);
		if (!ac->done && ac->ops->stdin_ready)
			ac->ops->stdin_ready(ac->ctx);
		return;
	}
	case AGENT_PROTO_STDOUT:
	case AGENT_PROTO_STDERR: {
		bool out = f->hdr.type == AGENT_PROTO_STDOUT;
		struct agent_proto_data d;

		if (agent_proto_decode_data(f, &d)) {
			finish(ac, -EPROTO, "malformed output frame from the guest agent");
			return;
		}
		/* Output beyond the credit granted is a guest ignoring flow control: memory would follow. */
		if (d.len > ac->out_window[out ? 0 : 1]) {
			finish(ac, -EPROTO, "the guest agent sent more output than its window allows");
			return;
		}
		ac->out_window[out ? 0 : 1] -= d.len;
		if (out)
			ac->st.out_bytes += d.len;
		else
			ac->st.err_bytes += d.len;
		if (d.len)
			ac->ops->output(ac->ctx, out, d.data, d.len);
		return;
	}
	case AGENT_PROTO_WINDOW: {
		struct agent_proto_window w;

		if (agent_proto_decode_window(f, &w)) {
			finish(ac, -EPROTO, "malformed WINDOW from the guest agent");
			return;
		}
		if (w.direction == AGENT_PROTO_DIR_STDIN) {
			ac->stdin_window = w.credit > UINT32_MAX - ac->stdin_window ? UINT32_MAX
										  : ac->stdin_window + w.credit;
			if (ac->ops->stdin_ready)
				ac->ops->stdin_ready(ac->ctx);
		}
		return;
	}
	case AGENT_PROTO_EXIT: {
		struct agent_proto_exit m;

		if (agent_proto_decode_exit(f, &m)) {
			finish(ac, -EPROTO, "malformed EXIT from the guest agent");
			return;
		}
		ac->st.kind = m.kind;
		ac->st.code = m.code;
		ac->exited = true;
		finish(ac, 0, NULL);
		return;
	}
	case AGENT_PROTO_ERROR:
		remote_error(ac, f, "");
		return;
	default:
		finish(ac, -EPROTO, "unexpected %s from the guest agent on an exec", agent_proto_type_name(f->hdr.type));
	}
}

/* ---- a file call's frames ---- */

static void on_deadline(uv_timer_t *t);

/* (Re)arms the deadline: idle_ms from now, never past the call's end. */
static void arm_deadline(struct agent_conn *ac)
{
	uint64_t now = uv_now(ac->loop), wait = UINT64_MAX;

	if (ac->idle_ms)
		wait = ac->idle_ms;
	if (ac->call_end) {
		uint64_t left = ac->call_end > now ? ac->call_end - now : 0;

		if (left < wait)
			wait = left;
	}
	if (wait == UINT64_MAX)
		uv_timer_stop(&ac->deadline);
	else
		uv_timer_start(&ac->deadline, on_deadline, wait, 0);
}

/* A request that could not go out ends the call (send_frame has ended it already when the connection failed). */
static void sent(struct agent_conn *ac, int r)
{
	if (r < 0)
		finish(ac, r, "cannot send the request to the guest agent: %s", strerror(-r));
}

static void request_path(struct agent_conn *ac, uint8_t type)
{
	struct agent_proto_path m = { .path = ac->file.path };
	size_t cap = strlen(ac->file.path) + 64;

	ac->stream++;
	sent(ac, SEND(ac, cap, agent_proto_encode_path(p_, cap, type, ac->stream, &m, &len_)));
}

/* The next part of a read, from where the last one ended. */
static void request_read(struct agent_conn *ac)
{
	struct agent_proto_file_read m = {
		.path = ac->file.path,
		.offset = ac->file.res.bytes,
		.max_len = FILE_READ_REQUEST,
	};
	size_t cap = strlen(ac->file.path) + 64;

	ac->stream++;
	ac->file.reply_bytes = 0;
	sent(ac, SEND(ac, cap, agent_proto_encode_file_read(p_, cap, ac->stream, &m, &len_)));
}

/* The next chunk of a write, read from the caller's file; the one after it follows once this one is written. */
static void upload_next(struct agent_conn *ac)
{
	struct ac_file *fl = &ac->file;
	struct agent_proto_file_write m = { .path = fl->path, .mode = fl->rq.mode, .data = fl->chunk };
	size_t cap = FILE_CHUNK + strlen(fl->path) + 128, len = 0;
	struct ac_write *aw;
	ssize_t n;
	int r;

	do
		n = read(fl->rq.fd, fl->chunk, FILE_CHUNK);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		r = errno;
		finish(ac, -r, "reading the data to write: %s", strerror(r));
		return;
	}
	if (!fl->write_started) {
		fl->write_started = true;
		ac->stream++;
		m.flags = AGENT_PROTO_WRITE_CREATE | AGENT_PROTO_WRITE_TRUNCATE;
	}
	if (n == 0) {
		m.flags |= AGENT_PROTO_WRITE_FINAL;
		fl->final_sent = true;
	}
	m.len = (uint32_t)n;
	aw = malloc(sizeof(*aw) + cap);
	if (!aw) {
		finish(ac, -ENOMEM, "out of memory");
		return;
	}
	r = agent_proto_encode_file_write(aw->data, cap, ac->stream, &m, &len);
	if (r < 0) {
		free(aw);
		finish(ac, r, "cannot encode FILE_WRITE: %s", strerror(-r));
		return;
	}
	aw->notify = fl->final_sent ? NULL : ac;
	fl->res.bytes += (uint64_t)n;
	send_frame(ac, aw, len);
}

static void upload_written(struct agent_conn *ac)
{
	if (ac->state != S_RUNNING || ac->file.final_sent)
		return;
	/* The agent took a chunk: that is progress as much as a frame from it. */
	arm_deadline(ac);
	upload_next(ac);
}

static void file_begin(struct agent_conn *ac)
{
	const struct agent_file_request *rq = &ac->file.rq;
	size_t cap = strlen(ac->file.path) + 64;

	switch (rq->op) {
	case AGENT_FILE_READ:
	case AGENT_FILE_STAT:
		request_path(ac, AGENT_PROTO_FILE_STAT);
		return;
	case AGENT_FILE_LIST:
		request_path(ac, AGENT_PROTO_FILE_LIST);
		return;
	case AGENT_FILE_WRITE:
		upload_next(ac);
		return;
	case AGENT_FILE_MKDIR: {
		struct agent_proto_mkdir m = { .path = ac->file.path, .mode = rq->mode,
					       .flags = rq->flag ? AGENT_PROTO_MKDIR_PARENTS : 0 };

		ac->stream++;
		sent(ac, SEND(ac, cap, agent_proto_encode_mkdir(p_, cap, ac->stream, &m, &len_)));
		return;
	}
	case AGENT_FILE_REMOVE: {
		struct agent_proto_remove m = { .path = ac->file.path,
						.flags = rq->flag ? AGENT_PROTO_REMOVE_RECURSIVE : 0 };

		ac->stream++;
		sent(ac, SEND(ac, cap, agent_proto_encode_remove(p_, cap, ac->stream, &m, &len_)));
		return;
	}
	}
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void stat_reply(struct agent_conn *ac, const struct agent_proto_frame *f)
{
	struct ac_file *fl = &ac->file;
	const struct agent_proto_stat_result *st = &fl->res.stat;

	if (f->hdr.type != AGENT_PROTO_STAT_RESULT || agent_proto_decode_stat_result(f, &fl->res.stat)) {
		finish(ac, -EPROTO, "malformed FILE_STAT reply from the guest agent");
		return;
	}
	if (fl->rq.op == AGENT_FILE_STAT) {
		finish(ac, 0, NULL);
		return;
	}
	if (st->type == AGENT_PROTO_FT_DIRECTORY) {
		finish(ac, -EISDIR, "%s: Is a directory", fl->path);
		return;
	}
	if (fl->rq.limit && st->size > fl->rq.limit) {
		finish(ac, -EFBIG, "%s: %" PRIu64 " bytes, over the limit of %" PRIu64, fl->path, st->size,
		       fl->rq.limit);
		return;
	}
	fl->stat_done = true;
	request_read(ac);
}

/* One FILE_DATA, written to the caller's file at once: nothing of it stays in memory. */
static void data_reply(struct agent_conn *ac, const struct agent_proto_frame *f)
{
	struct ac_file *fl = &ac->file;
	struct agent_proto_file_data d;
	bool last, eof;
	int r;

	if (f->hdr.type != AGENT_PROTO_FILE_DATA || agent_proto_decode_file_data(f, &d)) {
		finish(ac, -EPROTO, "malformed FILE_READ reply from the guest agent");
		return;
	}
	last = d.flags & AGENT_PROTO_DATA_LAST;
	eof = d.flags & AGENT_PROTO_DATA_EOF;
	/* Every frame moves the read on (only an end may be empty), so a guest cannot keep a read going for nothing. */
	if ((!d.len && !last) || (last && !eof && !d.len && !fl->reply_bytes)) {
		finish(ac, -EPROTO, "the guest agent sent an empty FILE_DATA");
		return;
	}
	if (d.len > FILE_READ_REQUEST - fl->reply_bytes) {
		finish(ac, -EPROTO, "the guest agent sent more file data than was asked for");
		return;
	}
	fl->reply_bytes += d.len;
	if (fl->rq.limit && d.len > fl->rq.limit - fl->res.bytes) {
		finish(ac, -EFBIG, "%s grew over the limit of %" PRIu64 " bytes", fl->path, fl->rq.limit);
		return;
	}
	r = write_all(fl->rq.fd, d.data, d.len);
	if (r < 0) {
		finish(ac, r, "writing %s locally: %s", fl->path, strerror(-r));
		return;
	}
	fl->res.bytes += d.len;
	if (!last)
		return;
	if (eof)
		finish(ac, 0, NULL);
	else
		request_read(ac);
}

static void list_reply(struct agent_conn *ac, const struct agent_proto_frame *f)
{
	struct agent_proto_list_entry e;
	int r;

	if (f->hdr.type == AGENT_PROTO_LIST_END) {
		finish(ac, 0, NULL);
		return;
	}
	if (f->hdr.type != AGENT_PROTO_LIST_ENTRY || agent_proto_decode_list_entry(f, &e)) {
		finish(ac, -EPROTO, "malformed FILE_LIST reply from the guest agent");
		return;
	}
	if (!e.name[0] || strnlen(e.name, AGENT_CONN_NAME_MAX + 1) > AGENT_CONN_NAME_MAX) {
		finish(ac, -EPROTO, "the guest agent listed a name of 0 or more than %d bytes", AGENT_CONN_NAME_MAX);
		return;
	}
	r = ac->file.ops->entry(ac->ctx, &e);
	if (r)
		finish(ac, r < 0 ? r : -EIO, "the listing was stopped: %s", strerror(r < 0 ? -r : EIO));
}

static void file_frame(struct agent_conn *ac, const struct agent_proto_frame *f)
{
	const struct ac_file *fl = &ac->file;

	arm_deadline(ac);
	if (f->hdr.type == AGENT_PROTO_ERROR) {
		remote_error(ac, f, "");
		return;
	}
	switch (fl->rq.op) {
	case AGENT_FILE_STAT:
		stat_reply(ac, f);
		return;
	case AGENT_FILE_READ:
		if (fl->stat_done)
			data_reply(ac, f);
		else
			stat_reply(ac, f);
		return;
	case AGENT_FILE_LIST:
		list_reply(ac, f);
		return;
	case AGENT_FILE_WRITE:
	case AGENT_FILE_MKDIR:
	case AGENT_FILE_REMOVE:
		if (f->hdr.type != AGENT_PROTO_OK)
			finish(ac, -EPROTO, "unexpected %s from the guest agent", agent_proto_type_name(f->hdr.type));
		else if (fl->rq.op == AGENT_FILE_WRITE && !fl->final_sent)
			finish(ac, -EPROTO, "the guest agent answered a write before its last chunk");
		else
			finish(ac, 0, NULL);
		return;
	}
}

/* The agent's answer to RESTORED: OK, or ERROR whose message names the step that failed. */
static void restored_frame(struct agent_conn *ac, const struct agent_proto_frame *f)
{
	if (f->hdr.type == AGENT_PROTO_ERROR)
		remote_error(ac, f, "the guest could not take its new identity: ");
	else if (f->hdr.type != AGENT_PROTO_OK || agent_proto_decode_empty(f))
		finish(ac, -EPROTO, "unexpected %s after RESTORED", agent_proto_type_name(f->hdr.type));
	else
		finish(ac, 0, NULL);
}

static void hello_frame(struct agent_conn *ac, const struct agent_proto_frame *f)
{
	struct agent_proto_hello theirs;

	if (f->hdr.type == AGENT_PROTO_ERROR) {
		remote_error(ac, f, "the guest agent refused HELLO: ");
		return;
	}
	if (f->hdr.type != AGENT_PROTO_HELLO || agent_proto_decode_hello(f, &theirs)) {
		finish(ac, -EPROTO, "the guest agent did not answer HELLO");
		return;
	}
	if (theirs.max_version < AGENT_PROTO_VERSION_MIN || theirs.min_version > AGENT_PROTO_VERSION_MAX) {
		finish(ac, -EPROTONOSUPPORT, "the guest agent speaks protocol %u..%u, this host %u..%u",
		       theirs.min_version, theirs.max_version, AGENT_PROTO_VERSION_MIN, AGENT_PROTO_VERSION_MAX);
		return;
	}
	if (ac->kind == K_HELLO) {
		finish(ac, 0, NULL);
		return;
	}
	if (ac->kind == K_RESTORED && !(theirs.features & AGENT_PROTO_FEATURE_RESTORED)) {
		finish(ac, -EOPNOTSUPP, "the guest agent (%.100s) does not support RESTORED", theirs.name);
		return;
	}
	ac->state = S_RUNNING;
	/* Connected: from here only the call's own deadlines bound it (a silent guest costs this timer). */
	if (ac->deadline_ms)
		ac->call_end = uv_now(ac->loop) + ac->deadline_ms;
	arm_deadline(ac);
	if (ac->kind == K_FILE) {
		file_begin(ac);
		return;
	}
	send_bytes(ac, ac->start_frame, ac->start_len);
	free(ac->start_frame);
	ac->start_frame = NULL;
}

static void frame(struct agent_conn *ac, const struct agent_proto_frame *f)
{
	if (f->hdr.stream == 0) {
		if (f->hdr.type == AGENT_PROTO_PING) {
			struct agent_proto_ping ping;

			if (agent_proto_decode_ping(f, &ping)) {
				finish(ac, -EPROTO, "bad PING from the guest agent");
				return;
			}
			SEND(ac, 64, agent_proto_encode_ping(p_, 64, AGENT_PROTO_PONG, &ping, &len_));
			return;
		}
		if (ac->state == S_HELLO) {
			hello_frame(ac, f);
			return;
		}
		if (f->hdr.type == AGENT_PROTO_ERROR) {
			remote_error(ac, f, "the guest agent reports a protocol error: ");
			return;
		}
		return; /* PONG, OK on stream 0 */
	}
	if (ac->state != S_RUNNING || f->hdr.stream != ac->stream) {
		finish(ac, -EPROTO, "the guest agent sent a frame on stream %u", f->hdr.stream);
		return;
	}
	if (ac->kind == K_FILE)
		file_frame(ac, f);
	else if (ac->kind == K_RESTORED)
		restored_frame(ac, f);
	else
		exec_frame(ac, f);
}

/* ---- reading ---- */

static void feed(struct agent_conn *ac, const uint8_t *data, size_t len)
{
	while (len && !ac->done) {
		struct agent_proto_frame f;
		size_t used = 0;
		int r = agent_proto_reader_feed(&ac->reader, data, len, &used, &f);

		data += used;
		len -= used;
		if (r < 0) {
			finish(ac, -EPROTO, "bad frame from the guest agent: %s", strerror(-r));
			return;
		}
		if (r == 1)
			frame(ac, &f);
	}
}

static void retry_later(struct agent_conn *ac, const char *why)
{
	if (uv_now(ac->loop) + ac->retry_ms >= ac->connect_deadline) {
		finish(ac, -ETIMEDOUT, "the guest agent did not answer within %u ms (%s)", ac->connect_ms, why);
		return;
	}
	sv_debug("agent connection %s: %s; next attempt in %u ms", ac->path, why, ac->retry_ms);
	uv_timer_stop(&ac->retry);
	ac->pipe_open = false;
	ac->retrying = true;
	uv_close((uv_handle_t *)&ac->pipe, on_handle_closed);
}

static void on_attempt_timeout(uv_timer_t *t)
{
	struct agent_conn *ac = t->data;

	if (!ac->done && ac->state == S_CONNECT_REPLY && ac->pipe_open)
		retry_later(ac, "no answer to CONNECT");
}

/* The VMM's answer to CONNECT, a line; what follows it is the agent's. */
static void connect_reply(struct agent_conn *ac, const uint8_t *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (data[i] != '\n') {
			if (ac->line_len == sizeof(ac->line) - 1) {
				finish(ac, -EPROTO, "overlong answer from the VMM's vsock socket");
				return;
			}
			ac->line[ac->line_len++] = (char)data[i];
			continue;
		}
		ac->line[ac->line_len] = '\0';
		uv_timer_stop(&ac->retry);
		if (strncmp(ac->line, "OK ", 3)) {
			finish(ac, -ECONNREFUSED, "the VMM refused the connection: %.60s", ac->line);
			return;
		}
		sv_debug("agent connection %s: connected to port %u", ac->path, ac->port);
		{
			struct agent_proto_hello mine = {
				.min_version = AGENT_PROTO_VERSION_MIN,
				.max_version = AGENT_PROTO_VERSION_MAX,
				.name = "sandboxd",
			};

			ac->state = S_HELLO;
			if (SEND(ac, 256, agent_proto_encode_hello(p_, 256, &mine, &len_)) < 0)
				return;
		}
		feed(ac, data + i + 1, len - i - 1);
		return;
	}
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	buf->base = malloc(READ_CHUNK);
	buf->len = buf->base ? READ_CHUNK : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct agent_conn *ac = s->data;

	if (n > 0 && !ac->done) {
		if (ac->state == S_CONNECT_REPLY)
			connect_reply(ac, (const uint8_t *)buf->base, (size_t)n);
		else
			feed(ac, (const uint8_t *)buf->base, (size_t)n);
	}
	free(buf->base);
	if (n >= 0 || ac->done)
		return;
	if (ac->state == S_CONNECT_REPLY && n == UV_EOF) {
		/* The VMM took the connection but nothing listens on the port yet. */
		retry_later(ac, "the agent is not listening yet");
		return;
	}
	finish(ac, -ECONNRESET, "the guest agent closed the connection (did the VM stop?)");
}

static void on_connected(uv_connect_t *req, int status)
{
	struct agent_conn *ac = req->data;
	char line[32];
	int n;

	if (ac->done)
		return;
	if (status == UV_ENOENT || status == UV_ECONNREFUSED || status == UV_EAGAIN) {
		retry_later(ac, "no vsock socket yet");
		return;
	}
	if (status < 0) {
		finish(ac, status, "%s: %s", ac->path, uv_strerror(status));
		return;
	}
	ac->state = S_CONNECT_REPLY;
	ac->line_len = 0;
	n = snprintf(line, sizeof(line), "CONNECT %u\n", ac->port);
	if (send_bytes(ac, line, (size_t)n) < 0)
		return;
	if (uv_read_start((uv_stream_t *)&ac->pipe, on_alloc, on_read) < 0) {
		finish(ac, -EIO, "reading from the VMM's vsock socket");
		return;
	}
	uv_timer_start(&ac->retry, on_attempt_timeout, ATTEMPT_MS, 0);
}

static void start_connect(struct agent_conn *ac)
{
	if (ac->done)
		return;
	if (uv_pipe_init(ac->loop, &ac->pipe, 0) < 0) {
		finish(ac, -ENOMEM, "cannot make a pipe handle");
		return;
	}
	ac->pipe.data = ac;
	ac->pipe_open = true;
	ac->open_handles++;
	ac->state = S_CONNECTING;
	ac->connect_req.data = ac;
	uv_pipe_connect(&ac->connect_req, &ac->pipe, ac->path, on_connected);
}

static void on_deadline(uv_timer_t *t)
{
	struct agent_conn *ac = t->data;

	if (ac->state != S_RUNNING)
		finish(ac, -ETIMEDOUT, "the guest agent did not answer within %u ms", ac->connect_ms);
	else if (ac->kind == K_EXEC)
		finish(ac, -ETIMEDOUT, "the command did not finish within %u ms", ac->deadline_ms);
	else if (ac->call_end && uv_now(ac->loop) >= ac->call_end)
		finish(ac, -ETIMEDOUT, "the call did not finish within %u ms", ac->deadline_ms);
	else
		finish(ac, -ETIMEDOUT, "the guest agent sent nothing for %u ms", ac->idle_ms);
}

/* ---- the caller's side ---- */

static int conn_start(struct agent_conn *ac, uv_loop_t *loop, const struct agent_conn_config *cfg, void *ctx);

/* A call of this kind with its reader's buffer and, frame_cap > 0, room for its first frame; NULL: no memory. */
static struct agent_conn *conn_new(enum ac_kind kind, const struct agent_conn_ops *ops, size_t frame_cap)
{
	struct agent_conn *ac = calloc(1, sizeof(*ac));

	if (!ac)
		return NULL;
	ac->kind = kind;
	ac->ops = ops;
	ac->payload = malloc(AGENT_CONN_MAX_PAYLOAD);
	ac->start_frame = frame_cap ? malloc(frame_cap) : NULL;
	if (!ac->payload || (frame_cap && !ac->start_frame)) {
		ac_free(ac);
		return NULL;
	}
	return ac;
}

int agent_conn_exec(uv_loop_t *loop, const struct agent_conn_config *cfg, const struct agent_exec_request *rq,
		    const struct agent_conn_ops *ops, void *ctx, struct agent_conn **out)
{
	const char *const *env = rq->env ? rq->env : agent_client_default_env;
	struct agent_proto_exec_start m = {
		.argv = rq->argv,
		.env = env,
		.workdir = rq->workdir,
		.uid = rq->uid,
		.gid = rq->gid,
		.flags = rq->pty ? AGENT_PROTO_EXEC_PTY : 0,
		.timeout_ms = rq->timeout_ms,
		.rows = rq->pty ? (rq->rows ? rq->rows : 24) : 0,
		.cols = rq->pty ? (rq->cols ? rq->cols : 80) : 0,
	};
	struct agent_conn *ac;
	int r;

	if (!cfg->vsock_path || strlen(cfg->vsock_path) >= sizeof(ac->path) || !rq->argv || !rq->argv[0] ||
	    !ops || !ops->output || !ops->ended)
		return -EINVAL;
	for (m.argc = 0; rq->argv[m.argc]; m.argc++)
		;
	for (m.envc = 0; env[m.envc]; m.envc++)
		;
	ac = conn_new(K_EXEC, ops, AGENT_PROTO_MAX_FRAME);
	if (!ac)
		return -ENOMEM;
	ac->stream = EXEC_STREAM;
	r = agent_proto_encode_exec_start(ac->start_frame, AGENT_PROTO_MAX_FRAME, EXEC_STREAM, &m, &ac->start_len);
	if (r < 0) {
		r = r == -EMSGSIZE ? -E2BIG : r;
		goto fail;
	}
	r = conn_start(ac, loop, cfg, ctx);
	if (r < 0)
		goto fail;
	*out = ac;
	return 0;
fail:
	ac_free(ac);
	return r;
}

int agent_conn_hello(uv_loop_t *loop, const struct agent_conn_config *cfg, const struct agent_conn_ops *ops,
		     void *ctx, struct agent_conn **out)
{
	struct agent_conn *ac;
	int r;

	if (!cfg->vsock_path || strlen(cfg->vsock_path) >= sizeof(ac->path) || !ops || !ops->ended)
		return -EINVAL;
	ac = conn_new(K_HELLO, ops, 0);
	if (!ac)
		return -ENOMEM;
	r = conn_start(ac, loop, cfg, ctx);
	if (r < 0) {
		ac_free(ac);
		return r;
	}
	*out = ac;
	return 0;
}

int agent_conn_restored(uv_loop_t *loop, const struct agent_conn_config *cfg, const struct agent_proto_restored *m,
			const struct agent_conn_ops *ops, void *ctx, struct agent_conn **out)
{
	struct agent_conn_config c = *cfg;
	struct agent_conn *ac;
	int r;

	if (!cfg->vsock_path || strlen(cfg->vsock_path) >= sizeof(ac->path) || !m || !ops || !ops->ended)
		return -EINVAL;
	ac = conn_new(K_RESTORED, ops, RESTORED_FRAME_MAX);
	if (!ac)
		return -ENOMEM;
	ac->stream = EXEC_STREAM;
	r = agent_proto_encode_restored(ac->start_frame, RESTORED_FRAME_MAX, EXEC_STREAM, m, &ac->start_len);
	if (r < 0)
		goto fail;
	if (!c.deadline_ms)
		c.deadline_ms = RESTORED_DEADLINE_MS;
	r = conn_start(ac, loop, &c, ctx);
	if (r < 0)
		goto fail;
	*out = ac;
	return 0;
fail:
	ac_free(ac);
	return r;
}

int agent_conn_file(uv_loop_t *loop, const struct agent_conn_config *cfg, const struct agent_file_request *rq,
		    const struct agent_file_ops *ops, void *ctx, struct agent_conn **out)
{
	bool with_fd = rq->op == AGENT_FILE_READ || rq->op == AGENT_FILE_WRITE;
	struct agent_conn *ac;
	int r;

	if (!cfg->vsock_path || strlen(cfg->vsock_path) >= sizeof(ac->path) || !rq->path ||
	    (unsigned)rq->op > AGENT_FILE_REMOVE || (with_fd && rq->fd < 0) || !ops || !ops->ended ||
	    (rq->op == AGENT_FILE_LIST && !ops->entry))
		return -EINVAL;
	if (strlen(rq->path) > AGENT_PROTO_MAX_STRING)
		return -ENAMETOOLONG;
	ac = calloc(1, sizeof(*ac));
	if (!ac)
		return -ENOMEM;
	ac->kind = K_FILE;
	ac->file.rq = *rq;
	ac->file.ops = ops;
	ac->file.path = strdup(rq->path);
	ac->file.rq.path = ac->file.path;
	ac->payload = malloc(AGENT_CONN_MAX_PAYLOAD);
	if (rq->op == AGENT_FILE_WRITE)
		ac->file.chunk = malloc(FILE_CHUNK);
	r = !ac->file.path || !ac->payload || (rq->op == AGENT_FILE_WRITE && !ac->file.chunk) ? -ENOMEM
												: conn_start(ac, loop, cfg, ctx);
	if (r < 0) {
		ac_free(ac);
		return r;
	}
	*out = ac;
	return 0;
}

/* Timers up, the first connection attempt under way. */
static int conn_start(struct agent_conn *ac, uv_loop_t *loop, const struct agent_conn_config *cfg, void *ctx)
{
	agent_proto_reader_init(&ac->reader, ac->payload, AGENT_CONN_MAX_PAYLOAD);
	ac->loop = loop;
	ac->ctx = ctx;
	snprintf(ac->path, sizeof(ac->path), "%s", cfg->vsock_path);
	ac->port = cfg->port;
	ac->connect_ms = cfg->connect_ms ? cfg->connect_ms : 10000;
	ac->deadline_ms = cfg->deadline_ms;
	/* An exec may be quiet for as long as its process likes; a file call's replies come at once. */
	ac->idle_ms = ac->kind == K_FILE ? cfg->idle_ms : 0;
	ac->out_window[0] = ac->out_window[1] = AGENT_PROTO_INITIAL_WINDOW;
	ac->stdin_window = AGENT_PROTO_INITIAL_WINDOW;
	uv_timer_init(loop, &ac->deadline);
	uv_timer_init(loop, &ac->retry);
	ac->deadline.data = ac->retry.data = ac;
	ac->open_handles = 2;
	ac->connect_deadline = uv_now(loop) + ac->connect_ms;
	ac->retry_ms = RETRY_MIN_MS;
	uv_timer_start(&ac->deadline, on_deadline, ac->connect_ms, 0);
	start_connect(ac);
	return 0;
}

void agent_conn_consumed(struct agent_conn *ac, bool is_stdout, size_t n)
{
	struct agent_proto_window w = { .direction = is_stdout ? AGENT_PROTO_DIR_STDOUT : AGENT_PROTO_DIR_STDERR };

	if (ac->done || !n)
		return;
	w.credit = (uint32_t)n;
	ac->out_window[is_stdout ? 0 : 1] += (uint32_t)n;
	SEND(ac, 64, agent_proto_encode_window(p_, 64, EXEC_STREAM, &w, &len_));
}

size_t agent_conn_stdin(struct agent_conn *ac, const void *data, size_t len)
{
	size_t taken = 0;

	while (!ac->done && ac->started && !ac->stdin_closed && !ac->stdin_close_wanted && ac->stdin_window &&
	       taken < len) {
		size_t n = len - taken;
		struct agent_proto_data d;

		if (n > ac->stdin_window)
			n = ac->stdin_window;
		if (n > STDIN_CHUNK)
			n = STDIN_CHUNK;
		d.data = (const uint8_t *)data + taken;
		d.len = (uint32_t)n;
		if (SEND(ac, STDIN_CHUNK + 64,
			 agent_proto_encode_data(p_, STDIN_CHUNK + 64, AGENT_PROTO_STDIN, EXEC_STREAM, &d, &len_)) < 0)
			break;
		ac->stdin_window -= (uint32_t)n;
		taken += n;
	}
	return taken;
}

void agent_conn_stdin_close(struct agent_conn *ac)
{
	if (ac->done || ac->stdin_closed)
		return;
	ac->stdin_close_wanted = true;
	if (ac->started)
		flush_pending(ac);
}

int agent_conn_signal(struct agent_conn *ac, int sig)
{
	struct agent_proto_signal s = { .signo = (uint32_t)sig };

	if (sig < 1 || sig > 64)
		return -EINVAL;
	if (ac->done)
		return -ESRCH;
	if (!ac->started) {
		if (ac->npending == MAX_PENDING_SIGNALS)
			return -EAGAIN;
		ac->pending_signals[ac->npending++] = sig;
		return 0;
	}
	return SEND(ac, 64, agent_proto_encode_signal(p_, 64, EXEC_STREAM, &s, &len_));
}
