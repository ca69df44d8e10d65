/*
 * Exec sessions: one worker thread per running process drives the blocking
 * agent client; pipes carry the process's stdin, stdout, stderr and signals
 * between that thread and the event loop. Output is framed (docs/api.md)
 * and kept until a reader takes it: at most EXEC_BACKLOG bytes, after which
 * the pipes are no longer read, the thread blocks, the agent's window closes
 * and the guest process waits. Nothing is dropped.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_client.h"
#include "http_conn.h"
#include "log.h"
#include "sandboxd.h"

#define EXEC_BACKLOG (1024 * 1024)
#define EXEC_STDIN_QUEUE (256 * 1024)
#define EXEC_KEEP_MS (10 * 60 * 1000)
#define EXEC_CONNECT_MS 10000
#define LOG_ROTATE_BYTES (2 * 1024 * 1024)

enum frame_type { FRAME_STDOUT = 1, FRAME_STDERR = 2, FRAME_EXIT = 3, FRAME_ERROR = 4 };

struct exec_session {
	struct exec_session *next;
	struct sandbox *sb;
	char id[32];
	bool entrypoint;

	/* Thread side: read-only for the loop until done_async fires. */
	uv_thread_t thread;
	char vsock[320];
	char **argv, **env;
	char workdir[4096];
	uint32_t timeout_ms;
	int t_in, t_out, t_err, t_sig;
	int result;
	struct agent_exec_status status;
	char error[512];

	/* Loop side. */
	uv_async_t done_async;
	uv_pipe_t out_pipe, err_pipe, in_pipe;
	bool in_open, in_shutting;
	int sig_w;
	bool out_eof, err_eof, thread_done, ended, forgotten;
	int returncode;
	const char *reason;
	char *q;
	size_t q_len, q_cap;
	bool reading;
	struct http_request *reader;
	struct http_request *stdin_req;
	size_t stdin_queued;
	bool stdin_paused;
	int log_fd;
	uv_timer_t keep_timer;
	unsigned refs;
};

struct stdin_write {
	uv_write_t w;
	struct exec_session *ex;
	size_t len;
	char data[];
};

static void read_start(struct exec_session *ex);
static void maybe_end(struct exec_session *ex);

const char *exec_id(const struct exec_session *ex)
{
	return ex->id;
}

static void free_strv(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void ex_unref(struct exec_session *ex)
{
	if (--ex->refs)
		return;
	free_strv(ex->argv);
	free_strv(ex->env);
	free(ex->q);
	if (ex->log_fd >= 0)
		close(ex->log_fd);
	if (ex->sig_w >= 0)
		close(ex->sig_w);
	sandbox_unref(ex->sb);
	free(ex);
}

static void on_ex_closed(uv_handle_t *h)
{
	ex_unref(h->data);
}

static void ex_close(struct exec_session *ex, uv_handle_t *h)
{
	if (!h->loop || uv_is_closing(h))
		return;
	h->data = ex;
	ex->refs++;
	uv_close(h, on_ex_closed);
}

static void unlink_session(struct exec_session *ex)
{
	for (struct exec_session **p = &ex->sb->execs; *p; p = &(*p)->next)
		if (*p == ex) {
			*p = ex->next;
			break;
		}
}

/* Drops the session: once ended and its output read, or expired. */
static void forget(struct exec_session *ex)
{
	if (ex->forgotten)
		return;
	ex->forgotten = true;
	unlink_session(ex);
	if (ex->sb->entrypoint == ex)
		ex->sb->entrypoint = NULL;
	ex_close(ex, (uv_handle_t *)&ex->keep_timer);
	ex_unref(ex);
}

/* ---- the worker thread ---- */

static void exec_thread(void *arg)
{
	struct exec_session *ex = arg;
	struct agent_exec_request rq = {0};
	struct agent_exec_io io = {ex->t_in, ex->t_out, ex->t_err, ex->t_sig};
	struct agent_client c;
	int r;

	rq.argv = (const char *const *)ex->argv;
	rq.env = (const char *const *)ex->env;
	rq.workdir = ex->workdir;
	rq.timeout_ms = ex->timeout_ms;
	r = agent_client_connect(&c, ex->vsock, AGENT_CLIENT_PORT, EXEC_CONNECT_MS);
	if (r == 0) {
		r = agent_client_exec(&c, &rq, &io, &ex->status);
		if (r < 0)
			snprintf(ex->error, sizeof(ex->error), "%s", agent_client_error(&c));
		agent_client_close(&c);
	} else {
		snprintf(ex->error, sizeof(ex->error), "cannot reach the guest agent: %s", agent_client_error(&c));
	}
	ex->result = r;
	/* EOF on the output pipes tells the loop the output is complete. */
	if (ex->t_in >= 0)
		close(ex->t_in);
	close(ex->t_out);
	close(ex->t_err);
	close(ex->t_sig);
	uv_async_send(&ex->done_async);
}

/* ---- output ---- */

static void queue_frame(struct exec_session *ex, int type, const void *data, size_t len)
{
	uint8_t h[8] = {(uint8_t)type, 0, 0, 0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			(uint8_t)len};

	if (ex->q_len + 8 + len > ex->q_cap) {
		size_t cap = ex->q_cap ? ex->q_cap : 65536;
		char *q;

		while (cap < ex->q_len + 8 + len)
			cap *= 2;
		q = realloc(ex->q, cap);
		if (!q) {
			sv_err("exec %s: out of memory for output", ex->id);
			return;
		}
		ex->q = q;
		ex->q_cap = cap;
	}
	memcpy(ex->q + ex->q_len, h, 8);
	memcpy(ex->q + ex->q_len + 8, data, len);
	ex->q_len += 8 + len;
}

static size_t backlog(struct exec_session *ex)
{
	size_t n = ex->q_len;

	if (ex->reader)
		n += http_stream_write(ex->reader, NULL, 0);
	return n;
}

static void flush(struct exec_session *ex)
{
	if (ex->reader && ex->q_len) {
		http_stream_write(ex->reader, ex->q, ex->q_len);
		ex->q_len = 0;
	}
	if (ex->reader && ex->ended && !ex->q_len) {
		struct http_request *req = ex->reader;

		ex->reader = NULL;
		http_stream_end(req);
		http_conn_unref(req->conn);
		/* The exit frame reached the client: nothing left to keep. */
		forget(ex);
		ex_unref(ex); /* the reader's reference */
		return;
	}
	if (backlog(ex) < EXEC_BACKLOG)
		read_start(ex);
}

static void log_output(struct exec_session *ex, const char *data, size_t len)
{
	struct stat st;
	char path[400], old[420];

	if (ex->log_fd < 0)
		return;
	if (fstat(ex->log_fd, &st) == 0 && st.st_size > LOG_ROTATE_BYTES) {
		/* Keep the last stretch of a chatty entrypoint, not all of it. */
		snprintf(path, sizeof(path), "%s/output.log", ex->sb->vm.dir);
		snprintf(old, sizeof(old), "%s/output.log.1", ex->sb->vm.dir);
		rename(path, old);
		close(ex->log_fd);
		ex->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (ex->log_fd < 0)
			return;
	}
	if (write(ex->log_fd, data, len) < 0)
		sv_warn("sandbox %s: writing its log: %s", ex->sb->id, strerror(errno));
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	buf->base = malloc(65536);
	buf->len = buf->base ? 65536 : 0;
}

static void read_stop(struct exec_session *ex)
{
	if (!ex->reading)
		return;
	ex->reading = false;
	if (!ex->out_eof)
		uv_read_stop((uv_stream_t *)&ex->out_pipe);
	if (!ex->err_eof)
		uv_read_stop((uv_stream_t *)&ex->err_pipe);
}

static void on_output(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct exec_session *ex = s->data;
	bool is_out = s == (uv_stream_t *)&ex->out_pipe;

	if (n > 0) {
		if (ex->entrypoint)
			log_output(ex, buf->base, (size_t)n);
		else
			queue_frame(ex, is_out ? FRAME_STDOUT : FRAME_STDERR, buf->base, (size_t)n);
	}
	free(buf->base);
	if (n < 0) {
		uv_read_stop(s);
		if (is_out)
			ex->out_eof = true;
		else
			ex->err_eof = true;
		maybe_end(ex);
		return;
	}
	if (n > 0 && !ex->entrypoint) {
		if (ex->reader)
			flush(ex);
		if (backlog(ex) >= EXEC_BACKLOG)
			read_stop(ex);
	}
}

static void read_start(struct exec_session *ex)
{
	if (ex->reading || ex->ended)
		return;
	ex->reading = true;
	if (!ex->out_eof)
		uv_read_start((uv_stream_t *)&ex->out_pipe, on_alloc, on_output);
	if (!ex->err_eof)
		uv_read_start((uv_stream_t *)&ex->err_pipe, on_alloc, on_output);
}

static void on_keep_expired(uv_timer_t *t)
{
	struct exec_session *ex = t->data;

	if (ex->reader)
		return;
	sv_info("sandbox=%s exec=%s event=exec_forgotten why=\"output not read within %d s\"", ex->sb->id,
		ex->id, EXEC_KEEP_MS / 1000);
	forget(ex);
}

/* The process ended and all its output is queued: add the last frame. */
static void maybe_end(struct exec_session *ex)
{
	struct sandbox *sb = ex->sb;
	cJSON *o;
	char *text;

	if (!ex->thread_done || !ex->out_eof || !ex->err_eof || ex->ended)
		return;
	ex->ended = true;
	o = cJSON_CreateObject();
	if (ex->result == 0) {
		ex->returncode = agent_exec_status_code(&ex->status);
		ex->reason = ex->status.kind == AGENT_PROTO_EXIT_TIMED_OUT  ? "timeout"
			     : ex->status.kind == AGENT_PROTO_EXIT_SIGNALED ? "signaled"
									  : "exited";
		cJSON_AddNumberToObject(o, "returncode", ex->returncode);
		cJSON_AddStringToObject(o, "reason", ex->reason);
	} else {
		ex->returncode = ex->result == -ENOENT ? 127 : ex->result == -EACCES ? 126 : RC_FAILED;
		ex->reason = "error";
		cJSON_AddStringToObject(o, "error", ex->error[0] ? ex->error : strerror(-ex->result));
		cJSON_AddNumberToObject(o, "returncode", ex->returncode);
	}
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!ex->entrypoint && text)
		queue_frame(ex, ex->result == 0 ? FRAME_EXIT : FRAME_ERROR, text, strlen(text));
	free(text);
	ex_close(ex, (uv_handle_t *)&ex->out_pipe);
	ex_close(ex, (uv_handle_t *)&ex->err_pipe);
	ex_close(ex, (uv_handle_t *)&ex->done_async);
	if (ex->in_open && !ex->in_shutting) {
		ex->in_open = false;
		ex_close(ex, (uv_handle_t *)&ex->in_pipe);
	}
	sandbox_activity(sb, -1);
	sv_info("sandbox=%s exec=%s event=exec_ended reason=%s returncode=%d", sb->id, ex->id, ex->reason,
		ex->returncode);
	if (ex->entrypoint) {
		char msg[600];

		if (ex->result < 0)
			snprintf(msg, sizeof(msg), "the entrypoint command could not run: %s", ex->error);
		sandbox_terminate(sb, ex->result == 0 ? "exited" : "failed", ex->returncode,
				  ex->result < 0 ? msg : NULL);
		forget(ex);
		return;
	}
	if (sb->spec.restricted)
		sandbox_terminate(sb, "exited", ex->returncode, "a restricted sandbox runs one exec");
	if (ex->reader) {
		flush(ex);
	} else {
		ex->keep_timer.data = ex;
		uv_timer_start(&ex->keep_timer, on_keep_expired, EXEC_KEEP_MS, 0);
	}
}

static void on_thread_done(uv_async_t *a)
{
	struct exec_session *ex = a->data;

	if (ex->thread_done)
		return;
	ex->thread_done = true;
	uv_thread_join(&ex->thread);
	maybe_end(ex);
}

/* ---- start ---- */

static char **json_strv(const cJSON *arr)
{
	size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
	char **v = calloc(n + 1, sizeof(*v));
	const cJSON *it;

	if (!v)
		return NULL;
	cJSON_ArrayForEach(it, arr) {
		v[i] = strdup(it->valuestring);
		if (!v[i]) {
			free_strv(v);
			return NULL;
		}
		i++;
	}
	return v;
}

/* The agent's defaults, then the sandbox's env, then the exec's; later names win. */
static char **merge_env(const cJSON *sandbox_env, const cJSON *exec_env)
{
	size_t cap = 64 + (size_t)cJSON_GetArraySize(sandbox_env) + (size_t)cJSON_GetArraySize(exec_env), n = 0;
	char **v = calloc(cap + 1, sizeof(*v));
	const cJSON *layers[2] = {sandbox_env, exec_env};

	if (!v)
		return NULL;
	for (const char *const *d = agent_client_default_env; *d && n < 64; d++)
		v[n++] = strdup(*d);
	for (int l = 0; l < 2; l++) {
		const cJSON *it;

		cJSON_ArrayForEach(it, layers[l]) {
			size_t klen = strlen(it->string);
			char *kv = malloc(klen + strlen(it->valuestring) + 2);
			size_t j;

			if (!kv)
				continue;
			sprintf(kv, "%s=%s", it->string, it->valuestring);
			for (j = 0; j < n; j++)
				if (v[j] && !strncmp(v[j], kv, klen + 1))
					break;
			if (j < n) {
				free(v[j]);
				v[j] = kv;
			} else {
				v[n++] = kv;
			}
		}
	}
	for (size_t j = 0; j < n; j++)
		if (!v[j]) {
			free_strv(v);
			return NULL;
		}
	return v;
}

static int open_pipe(struct exec_session *ex, uv_pipe_t *p, int fd)
{
	int r = uv_pipe_init(ex->sb->d->loop, p, 0);

	if (r < 0)
		return r;
	p->data = ex;
	return uv_pipe_open(p, fd);
}

int exec_start(struct sandbox *sb, const struct exec_spec *spec, bool entrypoint, struct exec_session **out,
	       char *err, size_t errlen)
{
	int outp[2] = {-1, -1}, errp[2] = {-1, -1}, inp[2] = {-1, -1}, sigp[2] = {-1, -1};
	struct exec_session *ex;
	uv_loop_t *loop = sb->d->loop;
	int r = -ENOMEM;

	if (sb->state != SANDBOX_RUNNING) {
		snprintf(err, errlen, "sandbox %s is not running", sb->id);
		return -ESRCH;
	}
	ex = calloc(1, sizeof(*ex));
	if (!ex)
		goto fail_msg;
	ex->refs = 1;
	ex->sb = sb;
	ex->log_fd = -1;
	ex->sig_w = -1;
	ex->entrypoint = entrypoint;
	sandbox_ref(sb);
	sandbox_make_id("ex", ex->id, sizeof(ex->id));
	snprintf(ex->vsock, sizeof(ex->vsock), "%s", sb->vm.vsock);
	snprintf(ex->workdir, sizeof(ex->workdir), "%s", spec->workdir ? spec->workdir : sb->spec.workdir);
	ex->timeout_ms = spec->timeout * 1000u;
	ex->argv = json_strv(spec->argv);
	ex->env = merge_env(sb->spec.env, spec->env);
	if (!ex->argv || !ex->env)
		goto fail;
	if (entrypoint) {
		char path[400];

		snprintf(path, sizeof(path), "%s/output.log", sb->vm.dir);
		ex->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	}
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || pipe2(sigp, O_CLOEXEC) < 0 ||
	    (spec->stdin_open && pipe2(inp, O_CLOEXEC) < 0)) {
		r = -errno;
		goto fail;
	}
	fcntl(sigp[1], F_SETFL, O_NONBLOCK);
	if ((r = open_pipe(ex, &ex->out_pipe, outp[0])) < 0 || (r = open_pipe(ex, &ex->err_pipe, errp[0])) < 0)
		goto fail;
	outp[0] = errp[0] = -1;
	if (spec->stdin_open) {
		if ((r = open_pipe(ex, &ex->in_pipe, inp[1])) < 0)
			goto fail;
		inp[1] = -1;
		ex->in_open = true;
	}
	ex->t_in = inp[0];
	ex->t_out = outp[1];
	ex->t_err = errp[1];
	ex->t_sig = sigp[0];
	ex->sig_w = sigp[1];
	sigp[1] = -1;
	uv_timer_init(loop, &ex->keep_timer);
	uv_async_init(loop, &ex->done_async, on_thread_done);
	ex->done_async.data = ex;
	r = uv_thread_create(&ex->thread, exec_thread, ex);
	if (r < 0) {
		ex_close(ex, (uv_handle_t *)&ex->keep_timer);
		ex_close(ex, (uv_handle_t *)&ex->done_async);
		goto fail;
	}
	ex->next = sb->execs;
	sb->execs = ex;
	sb->execs_started++;
	sandbox_activity(sb, +1);
	read_start(ex);
	*out = ex;
	sv_info("sandbox=%s exec=%s event=exec_started", sb->id, ex->id);
	return 0;

fail:
	ex_close(ex, (uv_handle_t *)&ex->out_pipe);
	ex_close(ex, (uv_handle_t *)&ex->err_pipe);
	ex_close(ex, (uv_handle_t *)&ex->in_pipe);
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			close(outp[i]);
		if (errp[i] >= 0)
			close(errp[i]);
		if (inp[i] >= 0)
			close(inp[i]);
		if (sigp[i] >= 0)
			close(sigp[i]);
	}
	ex_unref(ex);
fail_msg:
	snprintf(err, errlen, "cannot start the exec: %s", strerror(-r));
	return r;
}

struct exec_session *exec_find(struct sandbox *sb, const char *id)
{
	for (struct exec_session *ex = sb->execs; ex; ex = ex->next)
		if (!strcmp(ex->id, id) && !ex->entrypoint)
			return ex;
	return NULL;
}

void *exec_to_json(const struct exec_session *ex)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "id", ex->id);
	cJSON_AddStringToObject(o, "state", ex->ended ? "exited" : "running");
	if (ex->ended) {
		cJSON_AddNumberToObject(o, "returncode", ex->returncode);
		cJSON_AddStringToObject(o, "reason", ex->reason);
	} else {
		cJSON_AddNullToObject(o, "returncode");
	}
	return o;
}

/* ---- the output reader ---- */

static struct exec_session *session_of(struct http_request *req)
{
	return req->ctx;
}

static void reader_drained(struct http_request *req)
{
	struct exec_session *ex = session_of(req);

	if (ex->reader == req)
		flush(ex);
}

static void reader_aborted(struct http_request *req)
{
	struct exec_session *ex = session_of(req);

	if (ex->reader != req)
		return;
	ex->reader = NULL;
	http_conn_unref(req->conn);
	if (ex->ended) {
		ex->keep_timer.data = ex;
		uv_timer_start(&ex->keep_timer, on_keep_expired, EXEC_KEEP_MS, 0);
	}
	if (backlog(ex) < EXEC_BACKLOG)
		read_start(ex);
	ex_unref(ex);
}

static const struct http_handler reader_handler = {.drained = reader_drained, .aborted = reader_aborted};

void exec_attach_output(struct exec_session *ex, struct http_request *req)
{
	if (ex->reader) {
		http_respond_error(req, 409, NULL, "exec %s's output is already being read", ex->id);
		return;
	}
	ex->reader = req;
	ex->refs++;
	req->ctx = ex;
	req->handler = &reader_handler;
	http_conn_ref(req->conn);
	uv_timer_stop(&ex->keep_timer);
	http_stream_begin(req, 200, "application/vnd.sandvm.exec-stream");
	flush(ex); /* may end the stream at once, and drop the reader's reference with it */
}

/* ---- stdin ---- */

static void stdin_closed_after_shutdown(uv_shutdown_t *s, int status)
{
	struct exec_session *ex = s->data;

	(void)status;
	free(s);
	ex_close(ex, (uv_handle_t *)&ex->in_pipe);
	ex_unref(ex);
}

static void stdin_finish(struct exec_session *ex)
{
	uv_shutdown_t *s;

	if (!ex->in_open || ex->in_shutting)
		return;
	ex->in_shutting = true;
	ex->in_open = false;
	s = malloc(sizeof(*s));
	if (!s || uv_shutdown(s, (uv_stream_t *)&ex->in_pipe, stdin_closed_after_shutdown) < 0) {
		free(s);
		ex_close(ex, (uv_handle_t *)&ex->in_pipe);
		return;
	}
	s->data = ex;
	ex->refs++;
}

static void on_stdin_written(uv_write_t *w, int status)
{
	struct stdin_write *sw = (struct stdin_write *)w;
	struct exec_session *ex = sw->ex;

	(void)status; /* the process closed its stdin: the rest is dropped, as a pipe would */
	ex->stdin_queued -= sw->len;
	free(sw);
	if (ex->stdin_paused && ex->stdin_queued < EXEC_STDIN_QUEUE / 2 && ex->stdin_req) {
		ex->stdin_paused = false;
		http_conn_resume(ex->stdin_req->conn);
	}
	ex_unref(ex);
}

static int stdin_sink(struct http_request *req, const char *data, size_t len)
{
	struct exec_session *ex = session_of(req);
	struct stdin_write *sw;
	uv_buf_t b;

	if (!ex->in_open || ex->in_shutting)
		return 0;
	sw = malloc(sizeof(*sw) + len);
	if (!sw)
		return -ENOMEM;
	memcpy(sw->data, data, len);
	sw->ex = ex;
	sw->len = len;
	b = uv_buf_init(sw->data, (unsigned)len);
	if (uv_write(&sw->w, (uv_stream_t *)&ex->in_pipe, &b, 1, on_stdin_written) < 0) {
		free(sw);
		return 0;
	}
	ex->refs++;
	ex->stdin_queued += len;
	if (ex->stdin_queued >= EXEC_STDIN_QUEUE) {
		ex->stdin_paused = true;
		return 1;
	}
	return 0;
}

static void stdin_release(struct exec_session *ex, struct http_request *req)
{
	if (ex->stdin_req != req)
		return;
	ex->stdin_req = NULL;
	http_conn_unref(req->conn);
	ex_unref(ex);
}

static void stdin_complete(struct http_request *req)
{
	struct exec_session *ex = session_of(req);

	stdin_finish(ex);
	http_respond(req, 204, NULL, NULL, 0);
	stdin_release(ex, req);
}

static void stdin_aborted(struct http_request *req)
{
	struct exec_session *ex = session_of(req);

	/* A client that went away mid-body: its stdin ends there. */
	stdin_finish(ex);
	stdin_release(ex, req);
}

static const struct http_handler stdin_handler = {
	.sink = stdin_sink, .complete = stdin_complete, .aborted = stdin_aborted};

int exec_attach_stdin(struct exec_session *ex, struct http_request *req)
{
	if (!ex->in_open || ex->in_shutting)
		return -EPIPE;
	if (ex->stdin_req)
		return -EBUSY;
	ex->stdin_req = req;
	ex->refs++;
	http_conn_ref(req->conn);
	req->ctx = ex;
	req->handler = &stdin_handler;
	req->body_mode = HTTP_BODY_SINK;
	return 0;
}

int exec_signal(struct exec_session *ex, int sig)
{
	unsigned char b = (unsigned char)sig;

	if (ex->ended)
		return -ESRCH;
	if (write(ex->sig_w, &b, 1) != 1)
		return -errno;
	return 0;
}
