#include "control.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "event_loop.h"
#include "log.h"
#include "parse.h"
#include "simage/crypto.h"

#include <openssl/crypto.h>

struct control_client {
	struct event_handler h;
	struct control *owner;
	int fds[CONTROL_MAX_FDS]; /* came with the bytes in buf, for the request they end */
	unsigned nfds;
	size_t len;
	char buf[CONTROL_MAX_REQUEST];
};

struct control {
	struct event_loop *loop;
	struct event_handler listen_h;
	const struct control_ops *ops;
	void *ctx;
	char *path;
	struct control_client *clients[CONTROL_MAX_CLIENTS];
};

static char *reply_line(cJSON *reply)
{
	char *text = cJSON_PrintUnformatted(reply);
	char *line;
	size_t n;

	cJSON_Delete(reply);
	if (!text)
		return NULL;
	n = strlen(text);
	line = realloc(text, n + 2);
	if (!line) {
		free(text);
		return NULL;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	return line;
}

static char *error_reply(const char *msg)
{
	cJSON *reply = cJSON_CreateObject();

	if (!reply)
		return NULL;
	cJSON_AddFalseToObject(reply, "ok");
	cJSON_AddStringToObject(reply, "error", msg);
	return reply_line(reply);
}

/* "drive": N or "serial": S; the index or -1 with msg filled. */
static int drive_index(const cJSON *req, const struct control_ops *ops, void *ctx, char *msg,
		       size_t len)
{
	const cJSON *drive = cJSON_GetObjectItemCaseSensitive(req, "drive");
	const cJSON *serial = cJSON_GetObjectItemCaseSensitive(req, "serial");
	int i;

	if (cJSON_IsNumber(drive) && drive->valuedouble >= 0 && drive->valuedouble <= 64 &&
	    drive->valuedouble == (double)(unsigned)drive->valuedouble)
		return (int)drive->valuedouble;
	if (cJSON_IsString(serial) && ops->drive_find) {
		i = ops->drive_find(ctx, serial->valuestring);
		if (i >= 0)
			return i;
		snprintf(msg, len, "no drive with serial '%.32s'", serial->valuestring);
		return -1;
	}
	snprintf(msg, len, "needs \"drive\" (an index) or \"serial\"");
	return -1;
}

static int hex_key(const cJSON *item, uint8_t *out, size_t len)
{
	const char *s = cJSON_IsString(item) ? item->valuestring : NULL;

	if (!s || strlen(s) != 2 * len)
		return -1;
	return sv_hex_decode(s, out, len) < 0 ? -1 : 0;
}

/*
 * The descriptor a request's field names by index (taken out of fds): 0 with
 * *fd, -1 when the field is absent; or -1 with msg filled.
 */
static int take_fd(const cJSON *req, const char *op, const char *field, int *fds, unsigned nfds, int *fd,
		   char *msg, size_t len)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(req, field);
	unsigned i;

	*fd = -1;
	if (!item)
		return 0;
	if (!cJSON_IsNumber(item) || item->valuedouble < 0 || item->valuedouble >= CONTROL_MAX_FDS ||
	    item->valuedouble != (double)(unsigned)item->valuedouble) {
		snprintf(msg, len, "%s: \"%s\" must be the index (0..%u) of a descriptor sent with the request", op,
			 field, CONTROL_MAX_FDS - 1);
		return -1;
	}
	i = (unsigned)item->valuedouble;
	if (i >= nfds) {
		snprintf(msg, len, "%s: \"%s\" %u is out of range: the request carried %u descriptor%s", op, field, i,
			 nfds, nfds == 1 ? "" : "s");
		return -1;
	}
	if (fds[i] < 0) {
		snprintf(msg, len, "%s: \"%s\" %u names a descriptor another field took", op, field, i);
		return -1;
	}
	*fd = fds[i];
	fds[i] = -1;
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void drive_op(const cJSON *req, const char *op, int *fds, unsigned nfds, const struct control_ops *ops,
		     void *ctx, cJSON *reply)
{
	const cJSON *path = cJSON_GetObjectItemCaseSensitive(req, "path");
	const cJSON *data_key = cJSON_GetObjectItemCaseSensitive(req, "data_key");
	const cJSON *meta_key = cJSON_GetObjectItemCaseSensitive(req, "meta_key");
	const cJSON *overlay = cJSON_GetObjectItemCaseSensitive(req, "overlay_dir");
	struct simage_keys keys;
	char err[256] = "";
	int index = drive_index(req, ops, ctx, err, sizeof(err)), r = -EINVAL, fd = -1, ofd = -1;

	memset(&keys, 0, sizeof(keys));
	if (index < 0) {
		/* err says what */
	} else if (!strcmp(op, "drive-detach")) {
		r = ops->drive_detach(ctx, (unsigned)index, err, sizeof(err));
	} else if (take_fd(req, op, "fd", fds, nfds, &fd, err, sizeof(err)) < 0 ||
		   take_fd(req, op, "overlay_fd", fds, nfds, &ofd, err, sizeof(err)) < 0) {
		/* err says what */
	} else if ((fd >= 0) == cJSON_IsString(path)) {
		snprintf(err, sizeof(err), "drive-attach needs \"path\" or \"fd\" (one of them)");
	} else if (!data_key && !meta_key) {
		/* A raw file has no overlay: an overlay_fd sent anyway is closed as unused. */
		r = ops->drive_attach(ctx, (unsigned)index, fd >= 0 ? NULL : path->valuestring, fd, NULL, NULL, -1, err,
				      sizeof(err));
		fd = -1;
	} else if (hex_key(data_key, keys.data, sizeof(keys.data)) < 0 ||
		   hex_key(meta_key, keys.meta, sizeof(keys.meta)) < 0) {
		snprintf(err, sizeof(err), "data_key and meta_key must be %zu hex digits each",
			 2 * sizeof(keys.data));
	} else if (ofd >= 0 && overlay) {
		snprintf(err, sizeof(err), "drive-attach: \"overlay_dir\" or \"overlay_fd\", not both");
	} else {
		r = ops->drive_attach(ctx, (unsigned)index, fd >= 0 ? NULL : path->valuestring, fd, &keys,
				      ofd >= 0 ? NULL : cJSON_IsString(overlay) ? overlay->valuestring : "/tmp", ofd, err,
				      sizeof(err));
		fd = ofd = -1;
	}
	close_fd(&fd);
	close_fd(&ofd);
	simage_keys_wipe(&keys);
	cJSON_AddBoolToObject(reply, "ok", r == 0);
	if (r < 0)
		cJSON_AddStringToObject(reply, "error", err[0] ? err : strerror(-r));
}

typedef int (*device_status_fn)(void *ctx, cJSON *reply, char *err, size_t errlen);

/* The ops that report one device's state ("net", "vsock"), if the VM has that device. */
static device_status_fn device_status_op(const struct control_ops *ops, const char *op)
{
	if (strcmp(op, "net") == 0)
		return ops->net_status;
	if (strcmp(op, "vsock") == 0)
		return ops->vsock_status;
	return NULL;
}

static char *handle(const char *line, size_t len, int *fds, unsigned nfds, const struct control_ops *ops,
		    void *ctx)
{
	const cJSON *op;
	cJSON *req, *reply;
	device_status_fn device_status;
	char msg[256];

	req = cJSON_ParseWithLength(line, len);
	if (!req || !cJSON_IsObject(req)) {
		cJSON_Delete(req);
		return error_reply("request is not a JSON object");
	}
	op = cJSON_GetObjectItemCaseSensitive(req, "op");
	if (!cJSON_IsString(op)) {
		cJSON_Delete(req);
		return error_reply("request has no \"op\" string");
	}
	reply = cJSON_CreateObject();
	if (!reply) {
		cJSON_Delete(req);
		return NULL;
	}
	if (strcmp(op->valuestring, "status") == 0) {
		cJSON_AddTrueToObject(reply, "ok");
		ops->status(ctx, reply);
	} else if (strcmp(op->valuestring, "stop") == 0) {
		int r = ops->stop(ctx);

		cJSON_AddBoolToObject(reply, "ok", r == 0);
		if (r < 0)
			cJSON_AddStringToObject(reply, "error", strerror(-r));
	} else if (strcmp(op->valuestring, "drive-swap") == 0) {
		const cJSON *drive = cJSON_GetObjectItemCaseSensitive(req, "drive");
		const cJSON *path = cJSON_GetObjectItemCaseSensitive(req, "path");
		char err[256] = "";
		int r, fd;

		if (take_fd(req, "drive-swap", "fd", fds, nfds, &fd, msg, sizeof(msg)) < 0) {
			cJSON_Delete(reply);
			cJSON_Delete(req);
			return error_reply(msg);
		}
		if (!cJSON_IsNumber(drive) || drive->valuedouble < 0 || drive->valuedouble > 64 ||
		    drive->valuedouble != (double)(unsigned)drive->valuedouble ||
		    (fd >= 0) == cJSON_IsString(path) || !ops->drive_swap) {
			close_fd(&fd);
			cJSON_Delete(reply);
			cJSON_Delete(req);
			return error_reply("drive-swap needs \"drive\" (an index) and \"path\" or \"fd\" (one of them)");
		}
		r = ops->drive_swap(ctx, (unsigned)drive->valuedouble, fd >= 0 ? NULL : path->valuestring, fd, err,
				    sizeof(err));
		cJSON_AddBoolToObject(reply, "ok", r == 0);
		if (r < 0)
			cJSON_AddStringToObject(reply, "error", err[0] ? err : strerror(-r));
	} else if ((!strcmp(op->valuestring, "drive-attach") || !strcmp(op->valuestring, "drive-detach")) &&
		   ops->drive_attach && ops->drive_detach) {
		drive_op(req, op->valuestring, fds, nfds, ops, ctx, reply);
	} else if ((device_status = device_status_op(ops, op->valuestring))) {
		char err[256] = "";
		int r = device_status(ctx, reply, err, sizeof(err));

		cJSON_AddBoolToObject(reply, "ok", r == 0);
		if (r < 0)
			cJSON_AddStringToObject(reply, "error", err[0] ? err : strerror(-r));
	} else if (strcmp(op->valuestring, "net-policy") == 0 && ops->net_policy) {
		const cJSON *path = cJSON_GetObjectItemCaseSensitive(req, "path");
		char err[512] = "";
		int r, fd;

		if (take_fd(req, "net-policy", "fd", fds, nfds, &fd, msg, sizeof(msg)) < 0) {
			cJSON_Delete(reply);
			cJSON_Delete(req);
			return error_reply(msg);
		}
		if ((fd >= 0) == cJSON_IsString(path)) {
			close_fd(&fd);
			cJSON_Delete(reply);
			cJSON_Delete(req);
			return error_reply("net-policy needs \"path\" or \"fd\" (a JSON policy file; one of them)");
		}
		r = ops->net_policy(ctx, fd >= 0 ? NULL : path->valuestring, fd, err, sizeof(err));
		/*
		 * The reply says what is now in force (mode, list sizes,
		 * counters): the caller reports that, not what it asked for.
		 */
		if (r == 0 && ops->net_status)
			r = ops->net_status(ctx, reply, err, sizeof(err));
		cJSON_AddBoolToObject(reply, "ok", r == 0);
		if (r < 0)
			cJSON_AddStringToObject(reply, "error", err[0] ? err : strerror(-r));
	} else if ((!strcmp(op->valuestring, "pause") || !strcmp(op->valuestring, "resume")) && ops->pause) {
		char err[256] = "";
		int r = ops->pause(ctx, !strcmp(op->valuestring, "pause"), reply, err, sizeof(err));

		cJSON_AddBoolToObject(reply, "ok", r == 0);
		if (r < 0)
			cJSON_AddStringToObject(reply, "error", err[0] ? err : strerror(-r));
	} else if (strcmp(op->valuestring, "snapshot") == 0 && ops->snapshot) {
		const cJSON *dir = cJSON_GetObjectItemCaseSensitive(req, "dir");
		const cJSON *mkey = cJSON_GetObjectItemCaseSensitive(req, "memory_key");
		uint8_t key[32];
		char err[512] = "";
		int r, sfd, mfd = -1;

		if (take_fd(req, "snapshot", "state_fd", fds, nfds, &sfd, msg, sizeof(msg)) < 0 ||
		    take_fd(req, "snapshot", "memory_fd", fds, nfds, &mfd, msg, sizeof(msg)) < 0) {
			close_fd(&sfd);
			cJSON_Delete(reply);
			cJSON_Delete(req);
			return error_reply(msg);
		}
		if ((sfd >= 0) != (mfd >= 0) || (sfd >= 0) == (cJSON_IsString(dir) && *dir->valuestring)) {
			close_fd(&sfd);
			close_fd(&mfd);
			cJSON_Delete(reply);
			cJSON_Delete(req);
			return error_reply("snapshot needs \"dir\" or both \"state_fd\" and \"memory_fd\" (one form)");
		}
		if (mkey && hex_key(mkey, key, sizeof(key)) < 0) {
			OPENSSL_cleanse(key, sizeof(key));
			if (cJSON_IsString(mkey))
				OPENSSL_cleanse(mkey->valuestring, strlen(mkey->valuestring));
			close_fd(&sfd);
			close_fd(&mfd);
			cJSON_Delete(reply);
			cJSON_Delete(req);
			return error_reply("snapshot: \"memory_key\" must be 64 hex digits");
		}
		r = ops->snapshot(ctx, sfd >= 0 ? NULL : dir->valuestring, sfd, mfd, mkey ? key : NULL, reply, err,
				  sizeof(err));
		OPENSSL_cleanse(key, sizeof(key));
		if (cJSON_IsString(mkey))
			OPENSSL_cleanse(mkey->valuestring, strlen(mkey->valuestring));
		cJSON_AddBoolToObject(reply, "ok", r == 0);
		if (r < 0)
			cJSON_AddStringToObject(reply, "error", err[0] ? err : strerror(-r));
#ifdef SANDVM_TEST_OPS
	} else if (strcmp(op->valuestring, "test-forbidden-syscall") == 0) {
		/*
		 * Test builds only (tests/integration/seccomp.sh): a syscall no filter
		 * allows, made on the main thread. Under --seccomp kill it never returns.
		 */
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd >= 0)
			close(fd);
		cJSON_AddBoolToObject(reply, "ok", true);
		cJSON_AddStringToObject(reply, "note", "socket(AF_INET) was allowed: no filter in kill mode");
#endif
	} else {
		snprintf(msg, sizeof(msg), "unknown op '%.64s' (known: status, stop, pause, resume, snapshot, drive-swap, drive-attach, drive-detach, net, net-policy, vsock)",
			 op->valuestring);
		cJSON_Delete(reply);
		cJSON_Delete(req);
		return error_reply(msg);
	}
	cJSON_Delete(req);
	return reply_line(reply);
}

char *control_handle_request(const char *line, size_t len, int *fds, unsigned nfds,
			     const struct control_ops *ops, void *ctx)
{
	char *reply = handle(line, len, fds, nfds, ops, ctx);

	/* What the op did not take goes now: a descriptor never outlives its request. */
	for (unsigned i = 0; i < nfds; i++)
		close_fd(&fds[i]);
	return reply;
}

int control_take_rights(const struct msghdr *msg, int *fds, unsigned *nfds)
{
	bool refuse = msg->msg_flags & MSG_CTRUNC;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
		size_t n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) {
			refuse = true;
			continue;
		}
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*nfds < CONTROL_MAX_FDS)
				fds[(*nfds)++] = fd;
			else {
				close(fd);
				refuse = true;
			}
		}
	}
	if (!refuse)
		return 0;
	for (unsigned i = 0; i < *nfds; i++)
		close_fd(&fds[i]);
	*nfds = 0;
	return -EMSGSIZE;
}

static void client_close(struct control_client *cl)
{
	struct control *c = cl->owner;

	for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (c->clients[i] == cl)
			c->clients[i] = NULL;
	for (unsigned i = 0; i < cl->nfds; i++)
		close(cl->fds[i]);
	cl->nfds = 0;
	event_loop_del(c->loop, &cl->h);
	close(cl->h.fd);
	free(cl);
}

/* Replies are small; a client that cannot take one at once is dropped. */
static int client_send(struct control_client *cl, const char *text)
{
	size_t n = strlen(text);

	return send(cl->h.fd, text, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n ? 0 : -EIO;
}

static void client_cb(struct event_handler *h, uint32_t events)
{
	struct control_client *cl = h->opaque;
	struct control *c = cl->owner;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * CONTROL_MAX_FDS)];
	} cbuf;
	struct iovec iov = { .iov_base = cl->buf + cl->len, .iov_len = sizeof(cl->buf) - cl->len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			      .msg_controllen = sizeof(cbuf.buf) };
	char *nl;
	ssize_t n;

	if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
		client_close(cl);
		return;
	}
	n = recvmsg(h->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0 && control_take_rights(&msg, cl->fds, &cl->nfds) < 0) {
		char *reply = error_reply("a request carries at most 4 descriptors (SCM_RIGHTS); none were kept");

		if (reply)
			client_send(cl, reply);
		free(reply);
		client_close(cl);
		return;
	}
	if (n <= 0) {
		client_close(cl);
		return;
	}
	cl->len += (size_t)n;
	while ((nl = memchr(cl->buf, '\n', cl->len))) {
		size_t line_len = (size_t)(nl - cl->buf);
		char *reply = control_handle_request(cl->buf, line_len, cl->fds, cl->nfds, c->ops, c->ctx);
		int r = reply ? client_send(cl, reply) : -ENOMEM;

		free(reply);
		cl->nfds = 0; /* taken or closed by the request */
		if (r < 0) {
			client_close(cl);
			return;
		}
		memmove(cl->buf, nl + 1, cl->len - line_len - 1);
		cl->len -= line_len + 1;
		/* A request may carry keys (drive-attach, snapshot): its bytes do not stay behind. */
		OPENSSL_cleanse(cl->buf + cl->len, line_len + 1);
	}
	if (cl->len == sizeof(cl->buf)) {
		char *reply = error_reply("request longer than 4096 bytes");

		if (reply)
			client_send(cl, reply);
		free(reply);
		client_close(cl);
	}
}

static void listen_cb(struct event_handler *h, uint32_t events)
{
	struct control *c = h->opaque;
	struct control_client *cl;
	size_t slot;
	int fd;

	(void)events;
	fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	for (slot = 0; slot < CONTROL_MAX_CLIENTS && c->clients[slot]; slot++)
		;
	cl = slot < CONTROL_MAX_CLIENTS ? calloc(1, sizeof(*cl)) : NULL;
	if (!cl) {
		char *reply = error_reply("too many control connections");

		if (reply)
			send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
		free(reply);
		close(fd);
		return;
	}
	cl->owner = c;
	cl->h = (struct event_handler){ .fd = fd, .cb = client_cb, .opaque = cl };
	if (event_loop_add(c->loop, &cl->h, EPOLLIN) < 0) {
		close(fd);
		free(cl);
		return;
	}
	c->clients[slot] = cl;
}

static int remove_stale_socket(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	return unlink(path) < 0 ? -errno : 0;
}

int control_create(struct control **out, struct event_loop *loop, const char *path, int listen_fd,
		   const struct control_ops *ops, void *ctx)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct control *c;
	int fd = -1, r;

	if (!path) {
		int fl = listen_fd >= 0 ? fcntl(listen_fd, F_GETFL) : -1;

		c = fl >= 0 ? calloc(1, sizeof(*c)) : NULL;
		r = fl < 0 ? -EBADF : !c ? -ENOMEM : fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
		if (r == 0) {
			c->loop = loop;
			c->ops = ops;
			c->ctx = ctx;
			c->listen_h = (struct event_handler){ .fd = listen_fd, .cb = listen_cb, .opaque = c };
			r = event_loop_add(loop, &c->listen_h, EPOLLIN);
		}
		if (r < 0) {
			if (listen_fd >= 0)
				close(listen_fd);
			free(c);
			return r;
		}
		*out = c;
		return 0;
	}
	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->path = strdup(path);
	if (!c->path) {
		r = -ENOMEM;
		goto fail;
	}
	r = remove_stale_socket(path);
	if (r < 0)
		goto fail;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	strcpy(addr.sun_path, path);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 8) < 0) {
		r = -errno;
		goto fail;
	}
	c->loop = loop;
	c->ops = ops;
	c->ctx = ctx;
	c->listen_h = (struct event_handler){ .fd = fd, .cb = listen_cb, .opaque = c };
	r = event_loop_add(loop, &c->listen_h, EPOLLIN);
	if (r < 0)
		goto fail;
	*out = c;
	return 0;
fail:
	if (fd >= 0) {
		close(fd);
		unlink(path);
	}
	free(c->path);
	free(c);
	return r;
}

void control_destroy(struct control *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (c->clients[i])
			client_close(c->clients[i]);
	event_loop_del(c->loop, &c->listen_h);
	close(c->listen_h.fd);
	if (c->path)
		unlink(c->path);
	free(c->path);
	free(c);
}
