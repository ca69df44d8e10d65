/*
 * Built-in images built on first use: a create that asks for `debian` or
 * `minimal` before the image exists starts the image builder (one run per
 * image at a time) and waits for it; the builder's output lines are the
 * progress, in the daemon log and in GET /v1/images.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_call.h"
#include "images.h"
#include "log.h"
#include "sandbox.h"
#include "sandboxd.h"

#define TAIL_BYTES 2048

struct image_waiter {
	struct image_waiter *next;
	struct sandbox_spec spec;
	struct api_call *call;
};

struct image_build {
	const char *name;
	const char *file; /* in the images folder */
	bool running;
	uv_process_t proc;
	uv_pipe_t out;
	int open_handles; /* process and pipe: waiters are answered once both closed */
	char partial[512];
	size_t partial_len;
	char last[512];
	char tail[TAIL_BYTES];
	int status; /* of the last run; -1: never ran */
	double started_at, finished_at;
	struct image_waiter *waiters;
	struct sandboxd *d;
};

static const struct {
	const char *name, *file;
} builtin[] = {
	{"debian", "debian.ext4"},
	{"minimal", "initramfs.cpio.gz"},
};

int images_init(struct sandboxd *d)
{
	size_t n = sizeof(builtin) / sizeof(builtin[0]);

	d->builds = calloc(n, sizeof(*d->builds));
	if (!d->builds)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		d->builds[i].name = builtin[i].name;
		d->builds[i].file = builtin[i].file;
		d->builds[i].status = -1;
		d->builds[i].d = d;
	}
	d->nbuilds = n;
	return 0;
}

void images_destroy(struct sandboxd *d)
{
	free(d->builds);
	d->builds = NULL;
	d->nbuilds = 0;
}

static struct image_build *find(const struct sandboxd *d, const char *name)
{
	for (size_t i = 0; i < d->nbuilds; i++)
		if (!strcmp(d->builds[i].name, name))
			return &d->builds[i];
	return NULL;
}

static void add_tail(struct image_build *b, const char *line)
{
	size_t have = strlen(b->tail), len = strlen(line) + 1;

	if (len >= sizeof(b->tail))
		return;
	if (have + len >= sizeof(b->tail)) {
		size_t drop = have + len - sizeof(b->tail) + 1;
		const char *nl = strchr(b->tail + drop, '\n');

		drop = nl ? (size_t)(nl + 1 - b->tail) : have;
		memmove(b->tail, b->tail + drop, have - drop + 1);
		have -= drop;
	}
	snprintf(b->tail + have, sizeof(b->tail) - have, "%s\n", line);
}

static void take_line(struct image_build *b, const char *line)
{
	if (!*line)
		return;
	snprintf(b->last, sizeof(b->last), "%s", line);
	add_tail(b, line);
	sv_info("image %s: %s", b->name, line);
}

static void on_handle_closed(uv_handle_t *h);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	buf->base = malloc(4096);
	buf->len = buf->base ? 4096 : 0;
}

static void on_output(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct image_build *b = s->data;

	for (ssize_t i = 0; i < n; i++) {
		char c = buf->base[i];

		if (c == '\n' || c == '\r' || b->partial_len == sizeof(b->partial) - 1) {
			b->partial[b->partial_len] = '\0';
			take_line(b, b->partial);
			b->partial_len = 0;
		}
		if (c != '\n' && c != '\r')
			b->partial[b->partial_len++] = (c >= 0x20 || c == '\t') ? c : ' ';
	}
	free(buf->base);
	if (n < 0) {
		b->partial[b->partial_len] = '\0';
		take_line(b, b->partial);
		b->partial_len = 0;
		uv_close((uv_handle_t *)s, on_handle_closed);
	}
}

static void finish_waiters(struct image_build *b)
{
	struct image_waiter *w = b->waiters, *next;

	b->waiters = NULL;
	for (; w; w = next) {
		next = w->next;
		if (api_call_gone(w->call)) {
			spec_sandbox_free(&w->spec); /* nobody waits for that sandbox any more */
		} else if (b->status != 0) {
			api_call_fail(w->call, -EAGAIN, "image", "building image %s failed (status %d): %s", b->name,
				      b->status, b->tail);
			spec_sandbox_free(&w->spec);
		} else {
			sandbox_create(b->d, &w->spec, w->call);
		}
		api_call_release(w->call);
		free(w);
	}
}

static void on_handle_closed(uv_handle_t *h)
{
	struct image_build *b = h->data;

	if (--b->open_handles == 0)
		finish_waiters(b);
}

static void build_exited(uv_process_t *p, int64_t status, int sig)
{
	struct image_build *b = p->data;

	b->running = false;
	b->status = sig ? 128 + sig : (int)status;
	b->finished_at = sandboxd_wall_time();
	sv_info("image %s: build %s after %.0f s (status %d)", b->name, b->status ? "failed" : "done",
		b->finished_at - b->started_at, b->status);
	uv_close((uv_handle_t *)p, on_handle_closed);
}

bool images_can_build(const struct sandboxd *d, const char *name)
{
	return d->image_builder[0] && find(d, name);
}

int images_build_and_create(struct sandboxd *d, struct sandbox_spec *spec, struct api_call *call)
{
	struct image_build *b = find(d, spec->image);
	struct image_waiter *w;
	char out[4200];

	if (!b || !d->image_builder[0])
		return -ENOENT;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	if (!b->running) {
		uv_process_options_t opt = {0};
		uv_stdio_container_t stdio[3];
		char *args[4];
		int fds[2], r;

		snprintf(out, sizeof(out), "%s/%s", d->images_dir, b->file);
		args[0] = d->image_builder;
		args[1] = (char *)b->name;
		args[2] = out;
		args[3] = NULL;
		b->d = d;
		/* stdout and stderr both into one pipe, in the order the builder wrote them. */
		if (pipe2(fds, O_CLOEXEC) < 0) {
			free(w);
			return -errno;
		}
		uv_pipe_init(d->loop, &b->out, 0);
		b->out.data = b;
		uv_pipe_open(&b->out, fds[0]);
		stdio[0].flags = UV_IGNORE;
		stdio[1].flags = UV_INHERIT_FD;
		stdio[1].data.fd = fds[1];
		stdio[2].flags = UV_INHERIT_FD;
		stdio[2].data.fd = fds[1];
		opt.file = d->image_builder;
		opt.args = args;
		opt.exit_cb = build_exited;
		opt.stdio = stdio;
		opt.stdio_count = 3;
		b->proc.data = b;
		b->tail[0] = b->last[0] = '\0';
		b->partial_len = 0;
		r = uv_spawn(d->loop, &b->proc, &opt);
		close(fds[1]);
		if (r < 0) {
			uv_close((uv_handle_t *)&b->out, NULL);
			free(w);
			sv_err("image %s: cannot run %s: %s", b->name, d->image_builder, uv_strerror(r));
			return r;
		}
		uv_read_start((uv_stream_t *)&b->out, on_alloc, on_output);
		b->open_handles = 2;
		b->running = true;
		b->started_at = sandboxd_wall_time();
		snprintf(b->last, sizeof(b->last), "starting %s %s", d->image_builder, b->name);
		sv_info("image %s: not built yet; building it (%s %s %s)", b->name, d->image_builder, b->name, out);
	}
	w->spec = *spec;
	memset(spec, 0, sizeof(*spec));
	w->call = call;
	api_call_hold(call);
	w->next = b->waiters;
	b->waiters = w;
	return 0;
}

void *images_to_json(const struct sandboxd *d)
{
	cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "images");

	for (size_t i = 0; i < d->nbuilds; i++) {
		const struct image_build *b = &d->builds[i];
		cJSON *j = cJSON_CreateObject();
		char path[4200];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", d->images_dir, b->file);
		cJSON_AddStringToObject(j, "name", b->name);
		cJSON_AddStringToObject(j, "path", path);
		cJSON_AddBoolToObject(j, "built", stat(path, &st) == 0 && S_ISREG(st.st_mode));
		cJSON_AddBoolToObject(j, "building", b->running);
		cJSON_AddBoolToObject(j, "buildable", d->image_builder[0] != '\0');
		if (b->running || b->status >= 0)
			cJSON_AddStringToObject(j, "progress", b->last);
		if (b->status > 0)
			cJSON_AddNumberToObject(j, "last_build_status", b->status);
		cJSON_AddItemToArray(arr, j);
	}
	return o;
}
