/*
 * GET /metrics (docs/api.md, "Metrics"): a scrape reads what only blocking
 * calls can give on a worker thread (each running VMM's firewall counters
 * over its control socket, the snapshot store, /proc/self), then on the loop
 * keeps the counters it read and writes the exposition from the daemon's
 * state (metrics_text.c).
 */
#include "metrics_scrape.h"

#include <dirent.h>
#include <http_parser.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_call.h"
#include "auth.h"
#include "exec.h"
#include "http_conn.h"
#include "log.h"
#include "vmm_spares.h"
#include "sandbox.h"
#include "sandboxd.h"
#include "snapshot_store.h"

_Static_assert(SANDBOX_STATES == METRICS_SANDBOX_STATES, "metrics_text.c names every sandbox state");

/* A VMM that does not answer within this is left out of one scrape (its last reading stays). */
#define SCRAPE_VMM_TIMEOUT_MS 1000
#define SCRAPE_TEXT_CAP (64 * 1024)

struct scrape_vmm {
	struct sandbox *sb; /* referenced */
	unsigned gen;       /* sb->vmm_gen when asked */
	char control[sizeof(((struct sandbox_vm *)0)->control)];
	struct metrics_fw fw;
	int result;
};

struct scrape {
	uv_work_t work;
	struct sandboxd *d;
	struct http_request *req;
	struct scrape_vmm *vmms;
	size_t nvmms;
	char store[sizeof(((struct sandboxd *)0)->snapshot_dir)];
	uint64_t images[2], image_bytes[2];
	uint64_t rss;
	unsigned fds;
};

static uint64_t read_rss(void)
{
	unsigned long long size, resident;
	FILE *f = fopen("/proc/self/statm", "re");
	int n = f ? fscanf(f, "%llu %llu", &size, &resident) : 0;

	if (f)
		fclose(f);
	return n == 2 ? resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static unsigned count_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	if (!dir)
		return 0;
	while ((e = readdir(dir)))
		n += e->d_name[0] != '.';
	closedir(dir);
	return n > 0 ? n - 1 : 0; /* less the one opendir holds */
}

static void scrape_work(uv_work_t *w)
{
	struct scrape *s = w->data;
	char reply[4096];

	for (size_t i = 0; i < s->nvmms; i++) {
		struct scrape_vmm *v = &s->vmms[i];

		v->result = metrics_fw_read(v->control, SCRAPE_VMM_TIMEOUT_MS, reply, sizeof(reply), &v->fw);
	}
	if (s->store[0])
		snapshot_store_usage(s->store, s->images, s->image_bytes);
	s->rss = read_rss();
	s->fds = count_fds();
}

/* Keeps a VMM's reading, if it is still the VMM that was asked; counters never go back. */
static void keep_reading(struct scrape_vmm *v)
{
	struct sandbox *sb = v->sb;

	if (v->result < 0) {
		sv_debug("sandbox=%s event=metrics_vmm_unread err=%d", sb->id, v->result);
		return;
	}
	if (sb->vmm_gen != v->gen || !sb->vmm)
		return;
	for (unsigned i = 0; i < METRICS_FW_REASONS; i++)
		if (v->fw.count[i] > sb->fw_seen.count[i])
			sb->fw_seen.count[i] = v->fw.count[i];
}

static void fill_view(const struct scrape *s, struct metrics_view *v)
{
	const struct sandboxd *d = s->d;

	memset(v, 0, sizeof(*v));
	v->m = &d->metrics;
	v->fw = d->metrics.fw_gone;
	for (const struct sandbox *sb = d->sandboxes; sb; sb = sb->next) {
		if ((unsigned)sb->state < METRICS_SANDBOX_STATES)
			v->sandboxes[sb->state]++;
		v->execs_running += exec_running(sb);
		for (unsigned i = 0; i < METRICS_FW_REASONS; i++)
			v->fw.count[i] += sb->fw_seen.count[i];
	}
	for (unsigned i = 0; i < METRICS_LISTENERS; i++)
		metrics_listener_read(d->metrics.servers[i], &v->listeners[i]);
	v->images_known = s->store[0] != '\0';
	memcpy(v->images, s->images, sizeof(v->images));
	memcpy(v->image_bytes, s->image_bytes, sizeof(v->image_bytes));
	v->rss_bytes = s->rss;
	v->open_fds = s->fds;
	v->vmm_spares_ready = vmm_spares_ready(d->spares);
}

static void respond(struct scrape *s)
{
	struct metrics_view v;
	size_t cap = SCRAPE_TEXT_CAP, len = 0;
	char *buf = NULL;
	int r = -ENOSPC;

	fill_view(s, &v);
	while (r == -ENOSPC && cap <= 16 * SCRAPE_TEXT_CAP) {
		free(buf);
		buf = malloc(cap);
		if (!buf) {
			r = -ENOMEM;
			break;
		}
		r = metrics_text_write(&v, buf, cap, &len);
		cap *= 2;
	}
	if (r < 0)
		api_call_fail(api_call_of(s->req), r, NULL, "cannot write the metrics: %s", strerror(-r));
	else
		http_respond(s->req, 200, METRICS_CONTENT_TYPE, buf, len);
	free(buf);
}

static void scrape_done(uv_work_t *w, int status)
{
	struct scrape *s = w->data;

	(void)status;
	for (size_t i = 0; i < s->nvmms; i++) {
		keep_reading(&s->vmms[i]);
		sandbox_unref(s->vmms[i].sb);
	}
	if (!http_conn_closed(s->req->conn))
		respond(s);
	api_call_release(api_call_of(s->req));
	free(s->vmms);
	free(s);
}

void metrics_scrape(struct sandboxd *d, struct http_request *req)
{
	struct api_call *call = api_call_of(req);
	struct scrape *s = calloc(1, sizeof(*s));
	size_t n = 0;

	if (!s)
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	for (const struct sandbox *sb = d->sandboxes; sb; sb = sb->next)
		n += sb->vmm && sb->net.index && sb->state == SANDBOX_RUNNING;
	s->vmms = n ? calloc(n, sizeof(*s->vmms)) : NULL;
	if (n && !s->vmms) {
		free(s);
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	}
	for (struct sandbox *sb = d->sandboxes; sb && s->nvmms < n; sb = sb->next) {
		struct scrape_vmm *v = &s->vmms[s->nvmms];

		if (!(sb->vmm && sb->net.index && sb->state == SANDBOX_RUNNING))
			continue;
		v->sb = sb;
		v->gen = sb->vmm_gen;
		snprintf(v->control, sizeof(v->control), "%s", sb->vm.control);
		sandbox_ref(sb);
		s->nvmms++;
	}
	s->d = d;
	s->req = req;
	snprintf(s->store, sizeof(s->store), "%s", d->snapshot_dir);
	s->work.data = s;
	api_call_hold(call);
	if (uv_queue_work(d->loop, &s->work, scrape_work, scrape_done) < 0) {
		/* No worker: answer with what the loop knows, without the VMMs' and the store's figures. */
		for (size_t i = 0; i < s->nvmms; i++)
			s->vmms[i].result = -EAGAIN;
		s->store[0] = '\0';
		scrape_done(&s->work, -EAGAIN);
	}
}

/* The --metrics-listen listener: GET /metrics only, with an API key only under --metrics-auth key. */
static void metrics_complete(struct http_request *req)
{
	metrics_scrape(req->ctx, req);
}

static const struct http_handler metrics_handler = {.complete = metrics_complete};

void metrics_on_headers(struct http_request *req, void *ctx)
{
	struct sandboxd *d = ctx;
	size_t plen = strcspn(req->url, "?");

	if (plen != 8 || memcmp(req->url, "/metrics", 8)) {
		http_respond_error(req, 404, NULL, "this listener serves GET /metrics only");
		return;
	}
	if (req->method != HTTP_GET) {
		http_respond_error(req, 405, NULL, "GET only");
		return;
	}
	if (d->metrics_need_key) {
		req->key_name = auth_check(d->keys, req->auth, req->auth_len);
		if (!req->key_name) {
			http_respond_error(req, 401, NULL, "missing or invalid API key (Authorization: Bearer KEY)");
			return;
		}
	}
	req->handler = &metrics_handler;
	req->ctx = d;
	req->body_mode = HTTP_BODY_DISCARD;
}
