/*
 * Warm-start templates (templates.h): the key of a shape, the template's
 * files and meta.json, one build per shape with the creates that wait for
 * it, and what makes a template stale or broken. A build is a VMM like a
 * sandbox's (jailed with an id of its own, files passed as descriptors)
 * booted with nothing of any sandbox on its command line; once its agent
 * answers HELLO the VMM writes its state and memory (control op snapshot,
 * the files opened here and sent as descriptors, so the jailed VMM never
 * opens a host path) and is stopped.
 */
#include "templates.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "agent_client.h"
#include "agent_conn.h"
#include "jail_host.h"
#include "log.h"
#include "net.h"
#include "sandbox.h"
#include "sandbox_vm.h"
#include "sandboxd.h"
#include "store.h"
#include "vmm_control.h"
#include "vmm_launcher.h"

#define BUILD_READY_MS 120000
#define BUILD_STOP_GRACE_MS 3000
#define META_FILE "meta.json"
#define STAMP_LEN 96

enum template_state { TEMPLATE_NONE, TEMPLATE_BUILDING, TEMPLATE_READY, TEMPLATE_FAILED };

/* What a template was made from; a change in any of them makes it stale. */
enum { STAMP_KERNEL, STAMP_IMAGE, STAMP_VMM, STAMPS };
static const char *const stamp_names[STAMPS] = {"kernel", "image", "vmm"};

struct template {
	struct template *next;
	struct sandboxd *d;
	char key[TEMPLATES_KEY_LEN + 1];
	char dir[400];  /* STATE/templates/KEY */
	char run[420];  /* DIR/run: the build VM's run directory */
	enum template_state state;
	char stamps[STAMPS][STAMP_LEN];
	char why[600]; /* a failed build's reason */
	struct template_wait *waiters;
	/* The shape, copied */
	char kernel[4200], image[4200];
	bool rootfs, net;
	unsigned cpus, memory_mib;
	char spares[SANDBOX_VM_MAX_SPARES][32];
	const char *spare_ptrs[SANDBOX_VM_MAX_SPARES + 1];
	/* A build in progress */
	struct sandbox_vm vm;
	struct vmm_process *vmm;
	struct agent_conn *conn;
	struct sandbox_jail jail;
	int slot; /* in d->template_jail_ids, -1: none */
	char tap[16], policy[440]; /* a shape with a network device: the build VM's own */
	uv_work_t work;
	bool work_busy, snapshotted, failed;
	/* The snapshot job's result, written by the worker, read after it (snapshot_done) */
	bool work_ok;
	char work_why[300];
	long long memory_bytes;
	double started;
};

/* ---- pure parts ---- */

void templates_key(const struct template_shape *s, const char *vmm, char key[TEMPLATES_KEY_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char text[13000];
	int n;

	n = snprintf(text, sizeof(text), "sandvm-template 1\nkernel=%s\ninitrd=%s\nrootfs=%s\nvmm=%s\ncpus=%u\n"
		     "memory_mib=%u\nnet=%d\nspares=",
		     s->kernel ? s->kernel : "", s->initrd && !s->rootfs ? s->initrd : "", s->rootfs ? s->rootfs : "",
		     vmm, s->cpus, s->memory_mib, s->net ? 1 : 0);
	for (unsigned i = 0; s->spare_drives && s->spare_drives[i] && i < SANDBOX_VM_MAX_SPARES; i++)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "%s,", s->spare_drives[i]);
	EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < TEMPLATES_KEY_LEN / 2; i++)
		snprintf(key + 2 * i, 3, "%02x", md[i]);
}

/* ---- files ---- */

/* "dev:ino:size:mtime" of path; false when it cannot be read. */
static bool stamp_of(const char *path, char out[STAMP_LEN])
{
	struct stat st;

	if (stat(path, &st) < 0)
		return false;
	snprintf(out, STAMP_LEN, "%llu:%llu:%lld:%lld.%09ld", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
		 st.st_mtim.tv_nsec);
	return true;
}

static void unlink_in(const char *dir, const char *name)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
}

/* The build VM's run directory, whatever is left in it. */
static void remove_run(struct template *t)
{
	static const char *const names[] = {"vsock", "control", "vmm.log", SANDBOX_VM_CONSOLE_DIR "/console.log",
					    SANDBOX_VM_CONSOLE_DIR "/console.log.1"};
	char path[600];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unlink_in(t->run, names[i]);
	snprintf(path, sizeof(path), "%s/" SANDBOX_VM_CONSOLE_DIR, t->run);
	rmdir(path);
	rmdir(t->run);
}

/* Everything of the template: meta.json first, so a half-deleted template is never taken for whole. */
static void remove_files(struct template *t)
{
	unlink_in(t->dir, META_FILE);
	unlink_in(t->dir, SANDBOX_VM_STATE_FILE);
	unlink_in(t->dir, SANDBOX_VM_MEMORY_FILE);
	remove_run(t);
	rmdir(t->dir);
}

static bool regular(const char *dir, const char *name)
{
	char path[600];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid();
}

/* A template a previous daemon left: whole, of this key, made from these very inputs. */
static bool load(struct template *t)
{
	char path[600], text[8192];
	cJSON *meta, *stamps;
	bool ok;
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/" META_FILE, t->dir);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return false;
	text[n] = '\0';
	meta = cJSON_Parse(text);
	stamps = cJSON_GetObjectItemCaseSensitive(meta, "stamps");
	ok = cJSON_IsObject(meta) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(meta, "key")) &&
	     !strcmp(cJSON_GetObjectItemCaseSensitive(meta, "key")->valuestring, t->key);
	for (int i = 0; ok && i < STAMPS; i++) {
		const cJSON *s = cJSON_GetObjectItemCaseSensitive(stamps, stamp_names[i]);

		ok = cJSON_IsString(s) && !strcmp(s->valuestring, t->stamps[i]);
	}
	cJSON_Delete(meta);
	return ok && regular(t->dir, SANDBOX_VM_STATE_FILE) && regular(t->dir, SANDBOX_VM_MEMORY_FILE);
}

static int save_meta(struct template *t)
{
	cJSON *o = cJSON_CreateObject(), *st = cJSON_AddObjectToObject(o, "stamps"), *sp;
	char *text;
	int r;

	cJSON_AddNumberToObject(o, "version", 1);
	cJSON_AddStringToObject(o, "key", t->key);
	cJSON_AddStringToObject(o, "kernel", t->kernel);
	cJSON_AddStringToObject(o, t->rootfs ? "rootfs" : "initrd", t->image);
	cJSON_AddStringToObject(o, "vmm", t->d->vmm_path);
	/* The agent is the image's (its /sbin/init, or the initramfs's): the image's stamp covers it. */
	cJSON_AddStringToObject(o, "agent", "in the image");
	cJSON_AddStringToObject(o, "sandvm_version", SANDVM_VERSION);
	cJSON_AddNumberToObject(o, "cpus", t->cpus);
	cJSON_AddNumberToObject(o, "memory_mib", t->memory_mib);
	cJSON_AddBoolToObject(o, "net", t->net);
	sp = cJSON_AddArrayToObject(o, "spare_drives");
	for (unsigned i = 0; t->spare_ptrs[i]; i++)
		cJSON_AddItemToArray(sp, cJSON_CreateString(t->spare_ptrs[i]));
	for (int i = 0; i < STAMPS; i++)
		cJSON_AddStringToObject(st, stamp_names[i], t->stamps[i]);
	cJSON_AddNumberToObject(o, "memory_bytes", (double)t->memory_bytes);
	cJSON_AddNumberToObject(o, "built_at", sandboxd_wall_time());
	cJSON_AddNumberToObject(o, "build_ms", (sandboxd_wall_time() - t->started) * 1000);
	text = cJSON_Print(o);
	cJSON_Delete(o);
	if (!text)
		return -ENOMEM;
	r = store_write_atomic(t->dir, META_FILE, text);
	free(text);
	if (r == 0) {
		char path[600];

		snprintf(path, sizeof(path), "%s/" META_FILE, t->dir);
		chmod(path, 0600);
	}
	return r;
}

/* ---- the build ---- */

static void fail(struct template *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct template *t, const char *fmt, ...)
{
	va_list ap;

	if (t->failed)
		return;
	t->failed = true;
	va_start(ap, fmt);
	vsnprintf(t->why, sizeof(t->why), fmt, ap);
	va_end(ap);
}

static void release_slot(struct template *t)
{
	net_template_release(t->tap);
	t->tap[0] = '\0';
	jail_host_release(&t->jail);
	if (t->slot >= 0)
		t->d->template_jail_ids[t->slot] = 0;
	t->slot = -1;
}

/* The build is over (the VMM gone, no work in flight): the waiters learn how it went. */
static void complete(struct template *t)
{
	struct template_wait *w;

	release_slot(t);
	remove_run(t);
	if (!t->failed && t->snapshotted && save_meta(t) < 0)
		fail(t, "cannot write %s/" META_FILE, t->dir);
	if (!t->failed && !t->snapshotted)
		fail(t, "the template VM stopped before its snapshot was taken");
	if (t->failed) {
		t->state = TEMPLATE_FAILED;
		unlink_in(t->dir, META_FILE);
		unlink_in(t->dir, SANDBOX_VM_STATE_FILE);
		unlink_in(t->dir, SANDBOX_VM_MEMORY_FILE);
		rmdir(t->dir);
		sv_warn("template=%s event=build_failed why=\"%s\"", t->key, t->why);
	} else {
		t->state = TEMPLATE_READY;
		sv_info("template=%s event=built ms=%.0f memory_bytes=%lld", t->key,
			(sandboxd_wall_time() - t->started) * 1000, t->memory_bytes);
	}
	while ((w = t->waiters)) {
		t->waiters = w->next;
		w->next = NULL;
		if (t->failed)
			w->done(w, -EIO, NULL, t->why);
		else
			w->done(w, 0, t->dir, NULL);
	}
}

static void tail_console(struct template *t, char *out, size_t cap)
{
	size_t n = sandbox_vm_console_tail(&t->vm, out, cap);

	for (size_t i = 0; i < n; i++)
		if ((unsigned char)out[i] < 0x20)
			out[i] = ' ';
}

static void build_vmm_exited(void *ctx, const char *how)
{
	struct template *t = ctx;
	char console[300];

	t->vmm = NULL;
	if (t->conn) {
		agent_conn_cancel(t->conn);
		t->conn = NULL;
	}
	if (!t->snapshotted) {
		tail_console(t, console, sizeof(console));
		fail(t, "the template VM exited (%s) before it was snapshotted; console: %s", how, console);
	}
	if (!t->work_busy)
		complete(t);
}

static void stop_vmm(struct template *t)
{
	if (t->vmm)
		t->d->launcher->stop(t->vmm, BUILD_STOP_GRACE_MS);
	else if (!t->work_busy)
		complete(t);
}

/* A worker thread: the files opened here, root's and 0600, and given to the VMM with the request. */
static void snapshot_work(uv_work_t *w)
{
	struct template *t = w->data;
	char path[600], req[128], reply[1024];
	int fds[2] = {-1, -1}, r;
	cJSON *rep;

	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", t->dir, i ? SANDBOX_VM_MEMORY_FILE : SANDBOX_VM_STATE_FILE);
		fds[i] = open(path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fds[i] < 0) {
			snprintf(t->work_why, sizeof(t->work_why), "cannot create %s: %s", path, strerror(errno));
			goto out;
		}
	}
	sandbox_vm_snapshot_request(NULL, NULL, req, sizeof(req));
	r = vmm_control_call_fds(t->vm.control, req, fds, 2, reply, sizeof(reply));
	if (r < 0) {
		snprintf(t->work_why, sizeof(t->work_why), "the template VM did not answer the snapshot request: %s",
			 strerror(-r));
		goto out;
	}
	rep = cJSON_Parse(reply);
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "ok"))) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(rep, "error");

		snprintf(t->work_why, sizeof(t->work_why), "the template VM refused the snapshot: %s",
			 cJSON_IsString(e) ? e->valuestring : "no reason given");
	} else {
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(rep, "memory_bytes");

		t->memory_bytes = cJSON_IsNumber(b) ? (long long)b->valuedouble : 0;
		t->work_ok = true;
	}
	cJSON_Delete(rep);
out:
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static void snapshot_done(uv_work_t *w, int status)
{
	struct template *t = w->data;

	(void)status;
	t->work_busy = false;
	if (t->work_ok && !t->failed)
		t->snapshotted = true;
	else
		fail(t, "%s", t->work_why[0] ? t->work_why : "the snapshot was not taken");
	stop_vmm(t); /* snapshotted or not, the template VM's work is done */
}

static void build_ready(void *ctx, int r, const struct agent_exec_status *st, const char *error)
{
	struct template *t = ctx;

	(void)st;
	t->conn = NULL;
	if (r < 0) {
		fail(t, "the template VM's agent did not answer: %s", error ? error : strerror(-r));
		stop_vmm(t);
		return;
	}
	t->work.data = t;
	t->work_ok = false;
	t->work_why[0] = '\0';
	t->work_busy = true;
	uv_queue_work(t->d->loop, &t->work, snapshot_work, snapshot_done);
}

static const struct agent_conn_ops build_ops = {.ended = build_ready};

/* Starts the build VM; 0, or -errno with t->why (nothing left running). */
static int build_start(struct template *t)
{
	struct sandboxd *d = t->d;
	struct sandbox_vm_config cfg = {0};
	struct sandbox_vm_cmd cmd;
	struct agent_conn_config acfg = {.port = AGENT_CLIENT_PORT, .connect_ms = BUILD_READY_MS};
	char id[32], err[400];
	int r;

	t->failed = t->snapshotted = false;
	t->why[0] = '\0';
	t->started = sandboxd_wall_time();
	t->slot = -1;
	remove_files(t);
	if (mkdir(t->dir, 0700) < 0 && errno != EEXIST) {
		fail(t, "cannot make %s: %s", t->dir, strerror(errno));
		return -errno;
	}
	cfg.vmm = d->vmm_path;
	cfg.kernel = t->kernel;
	if (t->rootfs)
		cfg.rootfs = t->image;
	else
		cfg.initrd = t->image;
	cfg.cpus = t->cpus;
	cfg.memory_mib = t->memory_mib;
	cfg.run_dir = t->run;
	cfg.spare_drives = t->spare_ptrs;
	cfg.pass_fds = true;
	/* A neutral identity: no hostname, no network configuration, nothing of any sandbox. */
	if (mkdir(t->run, 0700) < 0 && errno != EEXIST) {
		fail(t, "cannot make %s: %s", t->run, strerror(errno));
		return -errno;
	}
	if (t->net) {
		/* The clones' guests keep this device; the agent gives it their MAC and addresses (RESTORED). */
		r = net_template_make(t->key, t->run, t->tap, err, sizeof(err));
		if (r < 0) {
			fail(t, "%s", err);
			goto out;
		}
		snprintf(t->policy, sizeof(t->policy), "%s/policy.json", t->run);
		cfg.net_tap = t->tap;
		cfg.net_mac = "02:53:56:ff:ff:fe";
		cfg.net_policy = t->policy;
	}
	if (d->jail.enabled) {
		for (int i = 0; i < SANDBOXD_TEMPLATE_BUILDS_MAX; i++)
			if (!d->template_jail_ids[i]) {
				t->slot = i;
				break;
			}
		if (t->slot < 0) {
			fail(t, "%d templates are being built already", SANDBOXD_TEMPLATE_BUILDS_MAX);
			r = -EAGAIN;
			goto out;
		}
		snprintf(id, sizeof(id), "tpl-%s", t->key);
		r = jail_host_take(d, id, t->run, t->memory_mib, t->cpus, &t->jail, err, sizeof(err));
		if (r < 0) {
			fail(t, "%s", err);
			t->slot = -1;
			goto out;
		}
		d->template_jail_ids[t->slot] = t->jail.vm.uid;
		cfg.jail = &t->jail.vm;
	}
	r = d->launcher->prepare(&cfg, &t->vm, &cmd);
	if (r == 0) {
		r = d->launcher->spawn(d->loop, d->spares, &cmd, t->vm.log, build_vmm_exited, t, &t->vmm);
		sandbox_vm_cmd_close(&cmd);
	}
	if (r < 0) {
		fail(t, "cannot start the VMM %s for the template: %s", d->vmm_path, strerror(-r));
		goto out;
	}
	d->metrics.vmm_starts[d->launcher->from_spare(t->vmm)]++;
	acfg.vsock_path = t->vm.vsock;
	r = agent_conn_hello(d->loop, &acfg, &build_ops, t, &t->conn);
	if (r < 0) {
		fail(t, "cannot wait for the template VM's agent: %s", strerror(-r));
		d->launcher->stop(t->vmm, 0);
		t->state = TEMPLATE_BUILDING; /* completes when the VMM is gone */
		return 0;
	}
	t->state = TEMPLATE_BUILDING;
	sv_info("template=%s event=building cpus=%u memory_mib=%u image=%s", t->key, t->cpus, t->memory_mib, t->image);
	return 0;
out:
	release_slot(t);
	remove_files(t);
	t->state = TEMPLATE_FAILED;
	return r;
}

/* ---- the interface ---- */

static struct template *find_or_add(struct sandboxd *d, const struct template_shape *s, const char *key)
{
	struct template *t;

	for (t = d->templates; t; t = t->next)
		if (!strcmp(t->key, key))
			return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->d = d;
	t->slot = -1;
	snprintf(t->key, sizeof(t->key), "%s", key);
	snprintf(t->dir, sizeof(t->dir), "%s/" TEMPLATES_DIR "/%s", d->state_dir, key);
	snprintf(t->run, sizeof(t->run), "%s/run", t->dir);
	snprintf(t->kernel, sizeof(t->kernel), "%s", s->kernel);
	t->rootfs = s->rootfs != NULL;
	snprintf(t->image, sizeof(t->image), "%s", s->rootfs ? s->rootfs : s->initrd);
	t->cpus = s->cpus;
	t->memory_mib = s->memory_mib;
	t->net = s->net;
	for (unsigned i = 0; s->spare_drives && s->spare_drives[i] && i < SANDBOX_VM_MAX_SPARES; i++) {
		snprintf(t->spares[i], sizeof(t->spares[i]), "%s", s->spare_drives[i]);
		t->spare_ptrs[i] = t->spares[i];
	}
	t->next = d->templates;
	d->templates = t;
	return t;
}

int templates_get(struct sandboxd *d, const struct template_shape *shape, struct template_wait *w, char *dir,
		  size_t cap, char *why, size_t whylen)
{
	char key[TEMPLATES_KEY_LEN + 1], stamps[STAMPS][STAMP_LEN], parent[320];
	const char *paths[STAMPS] = {shape->kernel, shape->rootfs ? shape->rootfs : shape->initrd, d->vmm_path};
	struct template *t;
	bool changed;
	int r;

	for (int i = 0; i < STAMPS; i++)
		if (!paths[i] || !stamp_of(paths[i], stamps[i])) {
			snprintf(why, whylen, "cannot read %s for the template: %s", paths[i] ? paths[i] : "?",
				 strerror(errno));
			return -ENOENT;
		}
	templates_key(shape, d->vmm_path, key);
	t = find_or_add(d, shape, key);
	if (!t) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	changed = false;
	for (int i = 0; i < STAMPS; i++)
		changed |= strcmp(t->stamps[i], stamps[i]) != 0;
	if (t->state == TEMPLATE_BUILDING) {
		/* A build of older inputs still serves its waiters; this create waits for it too. */
		w->next = t->waiters;
		t->waiters = w;
		return 1;
	}
	if (changed && t->state != TEMPLATE_NONE) {
		sv_info("template=%s event=stale why=\"the kernel, image or VMM changed\"", t->key);
		remove_files(t);
		t->state = TEMPLATE_NONE;
	}
	memcpy(t->stamps, stamps, sizeof(stamps));
	if (t->state == TEMPLATE_READY && regular(t->dir, SANDBOX_VM_STATE_FILE) &&
	    regular(t->dir, SANDBOX_VM_MEMORY_FILE)) {
		snprintf(dir, cap, "%s", t->dir);
		return 0;
	}
	if (t->state == TEMPLATE_FAILED) {
		snprintf(why, whylen, "the template failed to build: %s", t->why);
		return -EIO;
	}
	if (load(t)) {
		t->state = TEMPLATE_READY;
		snprintf(dir, cap, "%s", t->dir);
		return 0;
	}
	snprintf(parent, sizeof(parent), "%s/" TEMPLATES_DIR, d->state_dir);
	if (mkdir(parent, 0700) < 0 && errno != EEXIST) {
		snprintf(why, whylen, "cannot make %s: %s", parent, strerror(errno));
		return -errno;
	}
	r = build_start(t);
	if (r < 0) {
		snprintf(why, whylen, "the template failed to build: %s", t->why);
		return r;
	}
	w->next = t->waiters;
	t->waiters = w;
	return 1;
}

void templates_cancel(struct sandboxd *d, struct template_wait *w)
{
	for (struct template *t = d->templates; t; t = t->next)
		for (struct template_wait **p = &t->waiters; *p; p = &(*p)->next)
			if (*p == w) {
				*p = w->next;
				w->next = NULL;
				return;
			}
}

void templates_discard(struct sandboxd *d, const char *dir, const char *why)
{
	for (struct template *t = d->templates; t; t = t->next)
		if (!strcmp(t->dir, dir) && t->state == TEMPLATE_READY) {
			sv_warn("template=%s event=discarded why=\"%s\"", t->key, why);
			remove_files(t);
			t->state = TEMPLATE_NONE;
			return;
		}
}

void templates_shutdown(struct sandboxd *d)
{
	struct template *t;

	while ((t = d->templates)) {
		d->templates = t->next;
		if (t->conn)
			agent_conn_cancel(t->conn);
		if (t->vmm) {
			unsigned long long start;
			int pid = d->launcher->pid(t->vmm, &start);

			/* A template VM is never adopted: it goes with the daemon that built it. */
			if (pid > 0)
				kill(pid, SIGKILL);
			d->launcher->release(t->vmm);
		}
		if (t->state == TEMPLATE_BUILDING) {
			release_slot(t);
			remove_files(t);
		}
		/* A snapshot job still in flight holds t: it is left, as the process ends. */
		if (!t->work_busy)
			free(t);
	}
}
