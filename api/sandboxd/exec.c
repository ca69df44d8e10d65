/*
 * Exec sessions, each driven on the event loop by an agent_conn (no thread):
 * the process's output is framed (docs/api.md) and kept until a reader takes
 * it, at most EXEC_BACKLOG bytes, after which the agent gets no more credit,
 * its window closes and the guest process waits. Nothing is dropped. Stdin
 * goes out as the agent's window allows, at most EXEC_STDIN_QUEUE bytes kept
 * before the client's upload is paused.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_client.h"
#include "agent_conn.h"
#include "api_call.h"
#include "exec.h"
#include "http_conn.h"
#include "log.h"
#include "sandbox.h"
#include "sandboxd.h"

#define EXEC_BACKLOG (1024 * 1024)
#define EXEC_STDIN_QUEUE (256 * 1024)
#define EXEC_KEEP_MS (10 * 60 * 1000)
#define EXEC_CONNECT_MS 10000
/* The agent enforces an exec's timeout; the host gives up this much later on a guest that does not. */
#define EXEC_DEADLINE_GRACE_MS 30000
#define LOG_ROTATE_BYTES (2 * 1024 * 1024)

enum frame_type { FRAME_STDOUT = 1, FRAME_STDERR = 2, FRAME_EXIT = 3, FRAME_ERROR = 4 };

struct exec_session {
	struct exec_session *next;
	struct sandbox *sb;
	char id[32];
	bool entrypoint;
	char **argv, **env;

	struct agent_conn *ac; /* until it reports the end */
	int result;
	struct agent_exec_status status;
	char error[512];
	size_t owed[2]; /* output credit held back while the backlog is full: stdout, stderr */

	bool conn_done, ended, forgotten;
	int returncode;
	const char *reason;
	char *q;
	size_t q_len, q_cap;
	struct http_request *reader;

	/* stdin: what the client sent and the agent's window did not take yet */
	bool stdin_open; /* more may come (asked for, and not finished) */
	char *sq;
	size_t sq_len, sq_cap;
	struct http_request *stdin_req;
	bool stdin_paused;

	int log_fd;
	uv_timer_t keep_timer;
	unsigned refs;
};

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
	free(ex->sq);
	if (ex->log_fd >= 0)
		close(ex->log_fd);
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

/* Output credit held back while the backlog was full goes to the agent once there is room. */
static void return_credit(struct exec_session *ex)
{
	if (!ex->ac || backlog(ex) >= EXEC_BACKLOG)
		return;
	for (int i = 0; i < 2 && ex->ac; i++) {
		size_t n = ex->owed[i];

		ex->owed[i] = 0;
		agent_conn_consumed(ex->ac, i == 0, n);
	}
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
	return_credit(ex);
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

/* agent_conn: output of the process. */
static void on_output(void *ctx, bool is_stdout, const uint8_t *data, size_t len)
{
	struct exec_session *ex = ctx;

	ex->sb->d->metrics.exec_output_bytes[is_stdout ? 0 : 1] += len;
	if (ex->entrypoint) {
		log_output(ex, (const char *)data, len);
		agent_conn_consumed(ex->ac, is_stdout, len);
		return;
	}
	queue_frame(ex, is_stdout ? FRAME_STDOUT : FRAME_STDERR, data, len);
	ex->owed[is_stdout ? 0 : 1] += len;
	if (ex->reader)
		flush(ex); /* returns the credit once the reader took it */
	else
		return_credit(ex);
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

	if (!ex->conn_done || ex->ended)
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
	/* Stdin still on its way has nowhere to go. */
	ex->stdin_open = false;
	ex->sq_len = 0;
	if (ex->stdin_paused && ex->stdin_req) {
		ex->stdin_paused = false;
		http_conn_resume(ex->stdin_req->conn);
	}
	sandbox_activity(sb, -1);
	metrics_exec_end(&sb->d->metrics, ex->reason);
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

static void pump_stdin(struct exec_session *ex);

/* agent_conn: the end, whatever it was. */
static void on_ended(void *ctx, int r, const struct agent_exec_status *st, const char *error)
{
	struct exec_session *ex = ctx;

	ex->ac = NULL;
	ex->conn_done = true;
	ex->result = r;
	ex->status = *st;
	snprintf(ex->error, sizeof(ex->error), "%s", error);
	ex->refs++; /* maybe_end may forget the session */
	maybe_end(ex);
	ex_unref(ex);
	ex_unref(ex); /* the connection's reference */
}

static void on_stdin_ready(void *ctx)
{
	pump_stdin(ctx);
}

static const struct agent_conn_ops exec_conn_ops = {
	.output = on_output,
	.stdin_ready = on_stdin_ready,
	.ended = on_ended,
};

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

int exec_start(struct sandbox *sb, const struct exec_spec *spec, bool entrypoint, struct exec_session **out,
	       char *err, size_t errlen)
{
	struct agent_exec_request rq = {0};
	struct agent_conn_config cfg = {
		.vsock_path = sb->vm.vsock,
		.port = AGENT_CLIENT_PORT,
		.connect_ms = EXEC_CONNECT_MS,
	};
	struct exec_session *ex;
	int r = -ENOMEM;

	if (sb->state != SANDBOX_RUNNING) {
		sandbox_not_running(sb, err, errlen);
		return -ESRCH;
	}
	ex = calloc(1, sizeof(*ex));
	if (!ex)
		goto fail_msg;
	ex->refs = 1;
	ex->sb = sb;
	ex->log_fd = -1;
	ex->entrypoint = entrypoint;
	sandbox_ref(sb);
	sandbox_make_id("ex", ex->id, sizeof(ex->id));
	ex->argv = json_strv(spec->argv);
	ex->env = merge_env(sb->spec.env, spec->env);
	if (!ex->argv || !ex->env)
		goto fail;
	if (entrypoint) {
		char path[400];

		snprintf(path, sizeof(path), "%s/output.log", sb->vm.dir);
		ex->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	}
	rq.argv = (const char *const *)ex->argv;
	rq.env = (const char *const *)ex->env;
	rq.workdir = spec->workdir ? spec->workdir : sb->spec.workdir;
	rq.timeout_ms = spec->timeout * 1000u;
	if (rq.timeout_ms)
		cfg.deadline_ms = rq.timeout_ms + EXEC_DEADLINE_GRACE_MS;
	r = agent_conn_exec(sb->d->loop, &cfg, &rq, &exec_conn_ops, ex, &ex->ac);
	if (r < 0)
		goto fail;
	ex->refs++; /* the connection's, until it reports the end */
	ex->stdin_open = spec->stdin_open;
	if (!spec->stdin_open)
		agent_conn_stdin_close(ex->ac);
	uv_timer_init(sb->d->loop, &ex->keep_timer);
	ex->next = sb->execs;
	sb->execs = ex;
	sb->execs_started++;
	sb->d->metrics.execs_started++;
	sandbox_activity(sb, +1);
	*out = ex;
	sv_info("sandbox=%s exec=%s event=exec_started", sb->id, ex->id);
	return 0;

fail:
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

unsigned exec_running(const struct sandbox *sb)
{
	unsigned n = 0;

	for (const struct exec_session *ex = sb->execs; ex; ex = ex->next)
		n += !ex->ended;
	return n;
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
	return_credit(ex);
	ex_unref(ex);
}

static const struct http_handler reader_handler = {.drained = reader_drained, .aborted = reader_aborted};

int exec_attach_output(struct exec_session *ex, struct http_request *req)
{
	if (ex->reader)
		return -EBUSY;
	ex->reader = req;
	ex->refs++;
	req->ctx = ex;
	req->handler = &reader_handler;
	http_conn_ref(req->conn);
	uv_timer_stop(&ex->keep_timer);
	http_stream_begin(req, req->route_status, "application/vnd.sandvm.exec-stream");
	flush(ex); /* may end the stream at once, and drop the reader's reference with it */
	return 0;
}

/* ---- stdin ---- */

/* Hands the agent what its window takes; ends stdin once the client finished and all went out. */
static void pump_stdin(struct exec_session *ex)
{
	size_t n;

	if (!ex->ac)
		return;
	if (ex->sq_len) {
		n = agent_conn_stdin(ex->ac, ex->sq, ex->sq_len);
		if (!ex->ac)
			return; /* the write failed and ended the exec */
		memmove(ex->sq, ex->sq + n, ex->sq_len - n);
		ex->sq_len -= n;
	}
	if (!ex->stdin_open && !ex->sq_len)
		agent_conn_stdin_close(ex->ac);
	if (ex->stdin_paused && ex->sq_len < EXEC_STDIN_QUEUE / 2 && ex->stdin_req) {
		ex->stdin_paused = false;
		http_conn_resume(ex->stdin_req->conn);
	}
}

/* The client's upload ended (or broke off): stdin closes once what came went out. */
static void stdin_finish(struct exec_session *ex)
{
	if (!ex->stdin_open)
		return;
	ex->stdin_open = false;
	pump_stdin(ex);
}

static int stdin_sink(struct http_request *req, const char *data, size_t len)
{
	struct exec_session *ex = session_of(req);

	/* The process ended or closed its stdin: the rest is dropped, as a pipe would. */
	if (!ex->stdin_open || !ex->ac)
		return 0;
	/* Bounded: the sink pauses at EXEC_STDIN_QUEUE, and one call brings one read of the connection. */
	if (ex->sq_len + len > ex->sq_cap) {
		char *q = realloc(ex->sq, ex->sq_len + len);

		if (!q)
			return -ENOMEM;
		ex->sq = q;
		ex->sq_cap = ex->sq_len + len;
	}
	memcpy(ex->sq + ex->sq_len, data, len);
	ex->sq_len += len;
	pump_stdin(ex);
	if (ex->sq_len >= EXEC_STDIN_QUEUE) {
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
	ex->stdin_paused = false;
	http_conn_unref(req->conn);
	ex_unref(ex);
}

static void stdin_complete(struct http_request *req)
{
	struct exec_session *ex = session_of(req);

	stdin_finish(ex);
	api_call_ok(api_call_of(req), NULL);
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
	if (!ex->stdin_open || ex->ended)
		return -EPIPE;
	if (ex->stdin_req)
		return -EBUSY;
	ex->stdin_req = req;
	ex->refs++;
	http_conn_ref(req->conn);
	req->ctx = ex;
	req->handler = &stdin_handler;
	req->body_mode = HTTP_BODY_SINK;
	/* Streamed with back-pressure, so no size bound: a sized body (Content-Length) is as good as a chunked one. */
	req->body_limit = SIZE_MAX;
	return 0;
}

int exec_signal(struct exec_session *ex, int sig)
{
	if (ex->ended || !ex->ac)
		return -ESRCH;
	return agent_conn_signal(ex->ac, sig);
}
