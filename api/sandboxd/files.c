/*
 * File calls through the guest agent, each on the event loop with a
 * connection of its own (agent_conn: no thread; 30 s at most without a frame
 * of the call, 10 minutes for the whole call). Downloads and listings are
 * spooled to an unlinked file in the sandbox's run directory first, so the
 * reply carries a true status and length, and the daemon holds no more than
 * a frame of either; uploads are spooled there as they arrive, then copied in.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_conn.h"
#include "api_call.h"
#include "files.h"
#include "http_conn.h"
#include "log.h"
#include "sandbox.h"
#include "sandboxd.h"

#define FILE_MAX (256ull * 1024 * 1024)
#define FILE_LIST_MAX 100000
#define FILE_FRAME_TIMEOUT_MS 30000
#define FILE_CALL_MS (10 * 60 * 1000)
#define FILE_CONNECT_MS 10000
/* A listing is written to its spool file in pieces of about this size. */
#define LIST_BUF 16384

struct file_call {
	struct sandbox *sb;
	struct http_request *req; /* NULL once its client left */
	struct http_conn *conn;   /* held while the call runs */
	struct agent_conn *ac;  /* while the call runs */
	enum agent_file_op op;
	char path[4096];
	uint32_t mode;
	bool flag; /* parents / recursive */
	int fd;    /* spool file */
	char error[512];
	/* A listing, as JSON: entries counted, bytes written to fd, the piece not written yet. */
	unsigned list_count;
	bool list_full;
	uint64_t list_len;
	size_t buf_len;
	char buf[LIST_BUF];
};

static int spool_file(const struct sandbox *sb)
{
	return open(sb->vm.dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

static const char *type_name(uint32_t t)
{
	switch (t) {
	case AGENT_PROTO_FT_REGULAR: return "file";
	case AGENT_PROTO_FT_DIRECTORY: return "dir";
	case AGENT_PROTO_FT_SYMLINK: return "symlink";
	default: return "other";
	}
}

static int list_flush(struct file_call *fc)
{
	size_t off = 0;

	while (off < fc->buf_len) {
		ssize_t n = write(fc->fd, fc->buf + off, fc->buf_len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		off += (size_t)n;
	}
	fc->list_len += fc->buf_len;
	fc->buf_len = 0;
	return 0;
}

/* Appends JSON text to the listing; the spool file takes it in pieces of LIST_BUF. */
static int list_put(struct file_call *fc, const char *text, size_t len)
{
	int r;

	if (len > sizeof(fc->buf) - fc->buf_len && (r = list_flush(fc)) < 0)
		return r;
	if (len > sizeof(fc->buf))
		return -E2BIG; /* an entry's JSON is a few times its name of 255 bytes at most */
	memcpy(fc->buf + fc->buf_len, text, len);
	fc->buf_len += len;
	return 0;
}

static int add_entry(void *ctx, const struct agent_proto_list_entry *e)
{
	struct file_call *fc = ctx;
	cJSON *o;
	char *text;
	int r;

	/* A guest can make a folder of any size: the reply stays bounded. */
	if (fc->list_count == FILE_LIST_MAX) {
		fc->list_full = true;
		return -E2BIG;
	}
	o = cJSON_CreateObject();
	if (!o || !cJSON_AddStringToObject(o, "name", e->name) || !cJSON_AddStringToObject(o, "type", type_name(e->type)) ||
	    !cJSON_AddNumberToObject(o, "size", (double)e->size) || !(text = cJSON_PrintUnformatted(o))) {
		cJSON_Delete(o);
		return -ENOMEM;
	}
	cJSON_Delete(o);
	r = list_put(fc, fc->list_count ? "," : "{\"entries\":[", fc->list_count ? 1 : 12);
	if (!r)
		r = list_put(fc, text, strlen(text));
	free(text);
	fc->list_count++;
	return r;
}

/* What the guest said of the file passes on (api_error.h maps it); any other failure is the daemon's. */
static int guest_error(int r)
{
	switch (-r) {
	case ENOENT:
	case EEXIST:
	case ENOTEMPTY:
	case EISDIR:
	case ENOTDIR:
	case EACCES:
	case EPERM:
	case EFBIG:
	case E2BIG:
	case EINVAL: return r;
	default: return -EIO;
	}
}

/* The request is answered or gone: what the call held goes. */
static void call_free(struct file_call *fc)
{
	if (fc->conn) {
		sandbox_activity(fc->sb, -1);
		http_conn_unref(fc->conn);
	}
	if (fc->fd >= 0)
		close(fc->fd);
	sandbox_unref(fc->sb);
	free(fc);
}

static void call_ended(void *ctx, int r, const struct agent_file_result *res, const char *error)
{
	struct file_call *fc = ctx;
	struct http_request *req = fc->req;
	cJSON *o;

	fc->ac = NULL;
	if (req) {
		req->ctx = NULL;
		req->handler = NULL;
	}
	if (r == 0 && fc->op == AGENT_FILE_LIST) {
		r = list_put(fc, fc->list_count ? "]}" : "{\"entries\":[]}", fc->list_count ? 2 : 14);
		if (!r)
			r = list_flush(fc);
		if (r < 0)
			snprintf(fc->error, sizeof(fc->error), "writing the listing: %s", strerror(-r));
	} else if (r == -E2BIG && fc->list_full) {
		snprintf(fc->error, sizeof(fc->error), "the folder has more than %d entries, the most a listing returns",
			 FILE_LIST_MAX);
	} else if (r < 0) {
		snprintf(fc->error, sizeof(fc->error), "%s", error);
	}
	if (!req || http_conn_closed(fc->conn)) {
		/* The client left; nothing to say to it. */
	} else if (r < 0) {
		api_call_fail(api_call_of(req), guest_error(r), NULL, "%s: %s", fc->path,
			      fc->error[0] ? fc->error : strerror(-r));
	} else {
		switch (fc->op) {
		case AGENT_FILE_READ:
			http_respond_fd(req, req->route_status, "application/octet-stream", fc->fd, res->bytes);
			fc->fd = -1;
			break;
		case AGENT_FILE_LIST:
			http_respond_fd(req, req->route_status, "application/json", fc->fd, fc->list_len);
			fc->fd = -1;
			break;
		case AGENT_FILE_STAT:
			o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "type", type_name(res->stat.type));
			cJSON_AddNumberToObject(o, "size", (double)res->stat.size);
			cJSON_AddNumberToObject(o, "mode", res->stat.mode);
			cJSON_AddNumberToObject(o, "mtime", (double)res->stat.mtime);
			cJSON_AddNumberToObject(o, "uid", res->stat.uid);
			cJSON_AddNumberToObject(o, "gid", res->stat.gid);
			api_call_ok(api_call_of(req), o);
			break;
		default:
			api_call_ok(api_call_of(req), NULL);
		}
	}
	call_free(fc);
}

static const struct agent_file_ops file_ops = {.entry = add_entry, .ended = call_ended};

static void file_complete(struct http_request *req)
{
	struct file_call *fc = req->ctx;
	struct agent_file_request rq = {
		.op = fc->op,
		.path = fc->path,
		.mode = fc->mode,
		.flag = fc->flag,
		.fd = fc->fd,
		.limit = FILE_MAX,
	};
	struct agent_conn_config cfg = {
		.vsock_path = fc->sb->vm.vsock,
		.port = AGENT_CLIENT_PORT,
		.connect_ms = FILE_CONNECT_MS,
		.deadline_ms = FILE_CALL_MS,
		.idle_ms = FILE_FRAME_TIMEOUT_MS,
	};
	int r;

	if (fc->op == AGENT_FILE_WRITE) {
		/* The spooled body moves to the call; the request must not close it. */
		req->body_fd = -1;
	}
	if (fc->sb->state != SANDBOX_RUNNING) {
		char why[300];

		req->ctx = NULL;
		req->handler = NULL;
		sandbox_not_running(fc->sb, why, sizeof(why));
		api_call_fail(api_call_of(req), -ESRCH, NULL, "%s", why);
		call_free(fc);
		return;
	}
	sandbox_activity(fc->sb, +1);
	fc->conn = req->conn;
	http_conn_ref(fc->conn);
	if (fc->op == AGENT_FILE_WRITE && lseek(fc->fd, 0, SEEK_SET) < 0)
		r = -errno;
	else
		r = agent_conn_file(fc->sb->d->loop, &cfg, &rq, &file_ops, fc, &fc->ac);
	if (r < 0) {
		req->ctx = NULL;
		req->handler = NULL;
		api_call_fail(api_call_of(req), guest_error(r), NULL, "%s: %s", fc->path, strerror(-r));
		call_free(fc);
	}
	/* Otherwise the handler stays: the client may leave before the answer (file_aborted). */
}

/* The client went away, before its request was in or while the call ran. */
static void file_aborted(struct http_request *req)
{
	struct file_call *fc = req->ctx;

	if (!fc)
		return;
	req->ctx = NULL;
	req->handler = NULL;
	if (fc->op == AGENT_FILE_WRITE && req->body_fd == fc->fd)
		req->body_fd = -1;
	if (fc->ac && (fc->op == AGENT_FILE_WRITE || fc->op == AGENT_FILE_MKDIR || fc->op == AGENT_FILE_REMOVE)) {
		/* A change under way is carried through (a write cut short would leave half a file); its answer is dropped. */
		fc->req = NULL;
		return;
	}
	if (fc->ac)
		agent_conn_cancel(fc->ac);
	call_free(fc);
}

static const struct http_handler file_handler = {.complete = file_complete, .aborted = file_aborted};

void files_route(struct sandbox *sb, const char *op, struct http_request *req)
{
	struct file_call *fc;
	char value[16];
	enum agent_file_op kind;

	if (sb->spec.restricted) {
		api_call_fail(api_call_of(req), -EACCES, NULL, "a restricted sandbox has no file API");
		return;
	}
	if (!*op && req->method == 1 /* GET */)
		kind = AGENT_FILE_READ;
	else if (!*op && req->method == 4 /* PUT */)
		kind = AGENT_FILE_WRITE;
	else if (!*op && req->method == 0 /* DELETE */)
		kind = AGENT_FILE_REMOVE;
	else if (!strcmp(op, "stat") && req->method == 1)
		kind = AGENT_FILE_STAT;
	else if (!strcmp(op, "list") && req->method == 1)
		kind = AGENT_FILE_LIST;
	else if (!strcmp(op, "mkdir") && req->method == 3 /* POST */)
		kind = AGENT_FILE_MKDIR;
	else {
		api_call_fail(api_call_of(req), -EOPNOTSUPP, NULL, "no such file call");
		return;
	}
	fc = calloc(1, sizeof(*fc));
	if (!fc) {
		api_call_fail(api_call_of(req), -ENOMEM, NULL, "out of memory");
		return;
	}
	fc->op = kind;
	fc->fd = -1;
	fc->req = req;
	fc->sb = sb;
	if (!http_query_param(req->query, "path", fc->path, sizeof(fc->path)) || fc->path[0] != '/') {
		free(fc);
		api_call_fail(api_call_of(req), -EINVAL, "path", "path must be given as an absolute path (?path=/...)");
		return;
	}
	fc->mode = kind == AGENT_FILE_MKDIR ? 0755 : 0644;
	if (http_query_param(req->query, "mode", value, sizeof(value))) {
		char *end;
		long m = strtol(value, &end, 8);

		if (!*value || *end || m < 0 || m > 07777) {
			free(fc);
			api_call_fail(api_call_of(req), -EINVAL, "mode", "mode must be octal, 0..7777");
			return;
		}
		fc->mode = (uint32_t)m;
	}
	if (http_query_param(req->query, kind == AGENT_FILE_MKDIR ? "parents" : "recursive", value, sizeof(value)))
		fc->flag = !strcmp(value, "1") || !strcmp(value, "true") || !*value;
	if (kind == AGENT_FILE_READ || kind == AGENT_FILE_WRITE || kind == AGENT_FILE_LIST) {
		fc->fd = spool_file(sb);
		if (fc->fd < 0) {
			int e = errno;

			free(fc);
			api_call_fail(api_call_of(req), -EIO, NULL, "cannot create a spool file: %s", strerror(e));
			return;
		}
	}
	if (kind == AGENT_FILE_WRITE) {
		req->body_mode = HTTP_BODY_FILE;
		req->body_fd = fc->fd;
		req->body_limit = FILE_MAX;
	}
	sandbox_ref(sb);
	req->ctx = fc;
	req->handler = &file_handler;
}
