/*
 * File calls through the guest agent, each on a libuv worker thread with a
 * connection of its own. Downloads are spooled to an unlinked file in the
 * sandbox's run directory first, so the reply carries a true status and
 * length; uploads are spooled there as they arrive, then copied in.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_client.h"
#include "files.h"
#include "http_conn.h"
#include "log.h"
#include "sandbox.h"
#include "sandboxd.h"

#define FILE_MAX (256ull * 1024 * 1024)
#define FILE_LIST_MAX 100000
#define FILE_FRAME_TIMEOUT_MS 30000
#define FILE_CONNECT_MS 10000

enum file_op { OP_READ, OP_WRITE, OP_STAT, OP_LIST, OP_MKDIR, OP_REMOVE };

struct file_call {
	uv_work_t work;
	struct sandbox *sb;
	struct http_request *req;
	enum file_op op;
	char vsock[320];
	char path[4096];
	uint32_t mode;
	bool flag; /* parents / recursive */
	int fd;    /* spool file */
	uint64_t bytes;
	int result;
	char error[512];
	struct agent_proto_stat_result st;
	cJSON *list;
	unsigned list_count;
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

static int add_entry(void *ctx, const struct agent_proto_list_entry *e)
{
	struct file_call *fc = ctx;
	cJSON *o;

	/* A guest can make a folder of any size: the reply (and this daemon's memory) stays bounded. */
	if (fc->list_count == FILE_LIST_MAX)
		return -E2BIG;
	fc->list_count++;
	o = cJSON_CreateObject();
	if (!o)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "name", e->name);
	cJSON_AddStringToObject(o, "type", type_name(e->type));
	cJSON_AddNumberToObject(o, "size", (double)e->size);
	cJSON_AddItemToArray(fc->list, o);
	return 0;
}

static void file_work(uv_work_t *w)
{
	struct file_call *fc = w->data;
	struct agent_client c;
	int r;

	r = agent_client_connect(&c, fc->vsock, AGENT_CLIENT_PORT, FILE_CONNECT_MS);
	if (r < 0) {
		fc->result = r;
		snprintf(fc->error, sizeof(fc->error), "cannot reach the guest agent: %s", agent_client_error(&c));
		return;
	}
	/* A guest that stops answering fails the call instead of holding a worker thread. */
	c.frame_timeout_ms = FILE_FRAME_TIMEOUT_MS;
	switch (fc->op) {
	case OP_READ:
		r = agent_client_read_file(&c, fc->path, fc->fd, FILE_MAX, &fc->bytes);
		break;
	case OP_WRITE:
		if (lseek(fc->fd, 0, SEEK_SET) < 0)
			r = -errno;
		else
			r = agent_client_write_file(&c, fc->path, fc->fd, fc->mode, &fc->bytes);
		break;
	case OP_STAT:
		r = agent_client_stat(&c, fc->path, &fc->st);
		break;
	case OP_LIST:
		fc->list = cJSON_CreateArray();
		r = agent_client_list(&c, fc->path, add_entry, fc);
		if (r == -E2BIG)
			snprintf(c.error, sizeof(c.error), "the folder has more than %d entries, the most a listing returns",
				 FILE_LIST_MAX);
		break;
	case OP_MKDIR:
		r = agent_client_mkdir(&c, fc->path, fc->mode, fc->flag);
		break;
	case OP_REMOVE:
		r = agent_client_remove(&c, fc->path, fc->flag);
		break;
	}
	if (r < 0)
		snprintf(fc->error, sizeof(fc->error), "%s", agent_client_error(&c));
	fc->result = r;
	agent_client_close(&c);
}

static int status_for(int r)
{
	switch (-r) {
	case ENOENT: return 404;
	case EEXIST:
	case ENOTEMPTY:
	case EISDIR:
	case ENOTDIR: return 409;
	case EACCES:
	case EPERM: return 403;
	case EFBIG:
	case E2BIG: return 413;
	case EINVAL: return 400;
	default: return 500;
	}
}

static void file_done(uv_work_t *w, int status)
{
	struct file_call *fc = w->data;
	struct http_request *req = fc->req;
	cJSON *o;

	(void)status;
	sandbox_activity(fc->sb, -1);
	if (http_conn_closed(req->conn)) {
		/* The client left; nothing to say to it. */
	} else if (fc->result < 0) {
		http_respond_error(req, status_for(fc->result), NULL, "%s: %s", fc->path,
				   fc->error[0] ? fc->error : strerror(-fc->result));
	} else {
		switch (fc->op) {
		case OP_READ:
			http_respond_fd(req, 200, "application/octet-stream", fc->fd, fc->bytes);
			fc->fd = -1;
			break;
		case OP_STAT:
			o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "type", type_name(fc->st.type));
			cJSON_AddNumberToObject(o, "size", (double)fc->st.size);
			cJSON_AddNumberToObject(o, "mode", fc->st.mode);
			cJSON_AddNumberToObject(o, "mtime", (double)fc->st.mtime);
			cJSON_AddNumberToObject(o, "uid", fc->st.uid);
			cJSON_AddNumberToObject(o, "gid", fc->st.gid);
			http_respond_json(req, 200, o);
			break;
		case OP_LIST:
			o = cJSON_CreateObject();
			cJSON_AddItemToObject(o, "entries", fc->list);
			fc->list = NULL;
			http_respond_json(req, 200, o);
			break;
		default:
			http_respond(req, 204, NULL, NULL, 0);
		}
	}
	cJSON_Delete(fc->list);
	if (fc->fd >= 0)
		close(fc->fd);
	http_conn_unref(req->conn);
	sandbox_unref(fc->sb);
	free(fc);
}

static void file_complete(struct http_request *req)
{
	struct file_call *fc = req->ctx;
	int r;

	req->ctx = NULL;
	req->handler = NULL;
	if (fc->op == OP_WRITE) {
		/* The spooled body moves to the call; the request must not close it. */
		req->body_fd = -1;
	}
	if (fc->sb->state != SANDBOX_RUNNING) {
		http_respond_error(req, 409, NULL, "sandbox %s is not running", fc->sb->id);
		goto drop;
	}
	sandbox_activity(fc->sb, +1);
	http_conn_ref(req->conn);
	r = uv_queue_work(fc->sb->d->loop, &fc->work, file_work, file_done);
	if (r < 0) {
		fc->result = r;
		file_done(&fc->work, r);
	}
	return;
drop:
	if (fc->fd >= 0)
		close(fc->fd);
	sandbox_unref(fc->sb);
	free(fc);
}

static void file_aborted(struct http_request *req)
{
	struct file_call *fc = req->ctx;

	if (!fc)
		return;
	req->ctx = NULL;
	if (fc->op == OP_WRITE)
		req->body_fd = -1;
	if (fc->fd >= 0)
		close(fc->fd);
	sandbox_unref(fc->sb);
	free(fc);
}

static const struct http_handler file_handler = {.complete = file_complete, .aborted = file_aborted};

void files_route(struct sandbox *sb, const char *op, struct http_request *req)
{
	struct file_call *fc;
	char value[16];
	enum file_op kind;

	if (sb->spec.restricted) {
		http_respond_error(req, 403, NULL, "a restricted sandbox has no file API");
		return;
	}
	if (!*op && req->method == 1 /* GET */)
		kind = OP_READ;
	else if (!*op && req->method == 4 /* PUT */)
		kind = OP_WRITE;
	else if (!*op && req->method == 0 /* DELETE */)
		kind = OP_REMOVE;
	else if (!strcmp(op, "stat") && req->method == 1)
		kind = OP_STAT;
	else if (!strcmp(op, "list") && req->method == 1)
		kind = OP_LIST;
	else if (!strcmp(op, "mkdir") && req->method == 3 /* POST */)
		kind = OP_MKDIR;
	else {
		http_respond_error(req, 405, NULL, "no such file call");
		return;
	}
	fc = calloc(1, sizeof(*fc));
	if (!fc) {
		http_respond_error(req, 500, NULL, "out of memory");
		return;
	}
	fc->op = kind;
	fc->fd = -1;
	fc->req = req;
	fc->sb = sb;
	snprintf(fc->vsock, sizeof(fc->vsock), "%s", sb->vm.vsock);
	if (!http_query_param(req->query, "path", fc->path, sizeof(fc->path)) || fc->path[0] != '/') {
		free(fc);
		http_respond_error(req, 400, "path", "path must be given as an absolute path (?path=/...)");
		return;
	}
	fc->mode = kind == OP_MKDIR ? 0755 : 0644;
	if (http_query_param(req->query, "mode", value, sizeof(value))) {
		char *end;
		long m = strtol(value, &end, 8);

		if (!*value || *end || m < 0 || m > 07777) {
			free(fc);
			http_respond_error(req, 400, "mode", "mode must be octal, 0..7777");
			return;
		}
		fc->mode = (uint32_t)m;
	}
	if (http_query_param(req->query, kind == OP_MKDIR ? "parents" : "recursive", value, sizeof(value)))
		fc->flag = !strcmp(value, "1") || !strcmp(value, "true") || !*value;
	if (kind == OP_READ || kind == OP_WRITE) {
		fc->fd = spool_file(sb);
		if (fc->fd < 0) {
			http_respond_error(req, 500, NULL, "cannot create a spool file: %s", strerror(errno));
			free(fc);
			return;
		}
	}
	if (kind == OP_WRITE) {
		req->body_mode = HTTP_BODY_FILE;
		req->body_fd = fc->fd;
		req->body_limit = FILE_MAX;
	}
	sandbox_ref(sb);
	fc->work.data = fc;
	req->ctx = fc;
	req->handler = &file_handler;
}
