/*
 * Encrypted snapshot images (docs/image-format.md, docs/api.md):
 *
 * - snapshot: the guest makes an ext4 file system of a directory on the
 *   VMM's scratch drive (untrusted content never becomes a file system on
 *   the host); the daemon turns that raw disk into an image sealed with the
 *   customer's key (never stored) or a managed one, and removes the disk.
 * - mount: the image is opened with the key here first (a wrong or missing
 *   key is refused before anything is attached); the VMM gets the derived
 *   keys only and serves the image on a spare drive with an encrypted
 *   copy-on-write overlay; the guest mounts it.
 *
 * The store, managed keys, listing and retention are snapshot_store.c's.
 * Slow work runs on the threadpool; records change on the loop thread.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_client.h"
#include "api_call.h"
#include "log.h"
#include "sandbox.h"
#include "sandbox_part.h"
#include "sandboxd.h"
#include "simage/file.h"
#include "snapshot_store.h"
#include "snapshots.h"
#include "store.h"
#include "vmm_control.h"

#define MAX_TTL_S (10ll * 365 * 24 * 3600)
/*
 * The largest scratch disk a snapshot may use. The guest says how big its
 * directory is and then writes the disk: without a cap, a hostile guest
 * could fill the host's disk through it.
 */
#define MAX_SCRATCH_BYTES (64ull << 30)
#define SCRATCH_SERIAL "sandvm-scratch"
#define GUEST_CONNECT_MS 10000
#define GUEST_STEP_MS (15 * 60 * 1000) /* mke2fs of a large tree is slow under nested virtualization */

/* The VMM's spare drives: a scratch disk for snapshots, then one per mount. */
static const char *const snapshot_spare_drives[] = { SCRATCH_SERIAL, "sandvm-mount0", "sandvm-mount1",
					      "sandvm-mount2", NULL };

_Static_assert(SANDBOX_MOUNT_SLOTS == 3, "one spare drive per mount slot");

/*
 * Guest side, run by /bin/sh with arguments as positional parameters (never
 * pasted into the script). find_drive waits for the drive with serial $1 to
 * show a non-zero size: attaching raises a configuration interrupt the
 * guest handles on its own time.
 */
#define FIND_DRIVE                                                                                   \
	"find_drive() { i=0; while [ $i -lt 100 ]; do for b in /sys/block/vd*; do "                  \
	"if [ \"$(cat $b/serial 2>/dev/null)\" = \"$1\" ] && [ \"$(cat $b/size)\" != 0 ]; then "     \
	"dev=/dev/${b##*/}; return 0; fi; done; i=$((i+1)); sleep 0.1; done; "                       \
	"echo \"drive $1 did not appear in the guest\" >&2; exit 5; }\n"

/*
 * No -x: on an overlay root, files report the upper layer's device, and du
 * -x would skip them; mke2fs -d copies whatever is below the path anyway.
 */
static const char probe_script[] =
	"[ -d \"$1\" ] || { echo \"$1 is not a directory in the sandbox\" >&2; exit 3; }\n"
	"command -v mke2fs >/dev/null || { echo 'the sandbox image has no mke2fs (e2fsprogs)' >&2; exit 4; }\n"
	"echo \"$(du -sk -- \"$1\" | cut -f1) $(du -sk --apparent-size -- \"$1\" | cut -f1) "
	"$(find \"$1\" | wc -l)\"\n";

static const char mkfs_script[] = FIND_DRIVE
	"find_drive \"$1\"\nblockdev --flushbufs \"$dev\" || exit 6\n"
	"mke2fs -q -F -t ext4 -N \"$3\" -L snapshot -d \"$2\" \"$dev\"\nrc=$?\n"
	/* Failed or not, nothing of this disk stays cached once it is detached. */
	"sync\nblockdev --flushbufs \"$dev\"\nexit $rc\n";

static const char mount_script[] = FIND_DRIVE
	"set -e\nfind_drive \"$1\"\nblockdev --flushbufs \"$dev\"\nmkdir -p -- \"$2\"\n"
	"mount -t ext4 -o nosuid,nodev \"$dev\" \"$2\"\n";

static const char unmount_script[] =
	"set -e\numount -- \"$1\"\nfor b in /sys/block/vd*; do "
	"if [ \"$(cat $b/serial 2>/dev/null)\" = \"$2\" ]; then blockdev --flushbufs /dev/${b##*/}; fi; done\n";

enum job_kind { JOB_SNAPSHOT, JOB_MOUNT, JOB_UNMOUNT };

struct image_job {
	uv_work_t work;
	enum job_kind kind;
	struct sandboxd *d;
	struct sandbox *sb;
	struct api_call *call;
	char vsock[320], control[320], run_dir[256], store[320];
	char path[256];
	char id[40];
	char serial[24];
	int slot;
	uint8_t ikm[SIMAGE_IKM_MAX];
	size_t ikm_len;
	bool managed;
	long long ttl; /* -1: keep forever */
	/* Results */
	int err; /* -errno of a failure (api_error.h), 0 on success */
	char error[768];
	struct simage_header h;
	struct simage_write_stats stats;
};

static void job_fail(struct image_job *j, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void job_fail(struct image_job *j, int err, const char *fmt, ...)
{
	va_list ap;

	if (j->err)
		return; /* the first failure is the one to report */
	j->err = err;
	va_start(ap, fmt);
	vsnprintf(j->error, sizeof(j->error), fmt, ap);
	va_end(ap);
}

static void job_free(struct image_job *j)
{
	OPENSSL_cleanse(j->ikm, sizeof(j->ikm));
	free(j);
}

/* ---- the guest and the VMM, from a worker ---- */

/* Runs script in the guest with args; its exit code, output (both streams) in out. */
#define GUEST_OUTPUT_MAX (64 * 1024)

static int guest_sh(struct image_job *j, const char *script, const char *const *args, char *out, size_t len)
{
	const char *argv[8] = { "/bin/sh", "-c", script, "sh" };
	/* What the guest says is read into a small buffer: more is refused, as is a guest that stalls. */
	struct agent_exec_request rq = { .argv = argv, .timeout_ms = GUEST_STEP_MS,
					 .output_limit = GUEST_OUTPUT_MAX, .deadline_ms = GUEST_STEP_MS + 15000 };
	struct agent_exec_status st;
	struct agent_exec_io io = { .in_fd = -1, .signal_fd = -1 };
	struct agent_client c;
	int fd = memfd_create("guest-output", MFD_CLOEXEC), r;
	ssize_t n;

	for (int i = 0; args[i] && i < 4; i++)
		argv[4 + i] = args[i];
	out[0] = '\0';
	if (fd < 0)
		return -errno;
	io.out_fd = io.err_fd = fd;
	r = agent_client_connect(&c, j->vsock, AGENT_CLIENT_PORT, GUEST_CONNECT_MS);
	if (r == 0)
		r = agent_client_exec(&c, &rq, &io, &st);
	if (r < 0)
		snprintf(out, len, "the guest agent: %s", agent_client_error(&c));
	agent_client_close(&c);
	if (r == 0) {
		n = pread(fd, out, len - 1, 0);
		out[n > 0 ? n : 0] = '\0';
		/* One line is what people need; trailing newlines go. */
		while (n > 0 && out[n - 1] == '\n')
			out[--n] = '\0';
		r = agent_exec_status_code(&st);
	}
	close(fd);
	return r;
}

/*
 * {"op":..., "serial":..., more} to the VMM with nfds descriptors (which stay
 * ours; "fd": 0 names the first); 0 or -1 with the VMM's words in j->error.
 */
static int vmm_call_fds(struct image_job *j, cJSON *req, const int *fds, unsigned nfds)
{
	char *text = cJSON_PrintUnformatted(req), reply[1024];
	cJSON *rep;
	int r;

	cJSON_Delete(req);
	if (!text)
		return -ENOMEM;
	/* The request may carry keys: it is wiped, never logged. */
	{
		size_t n = strlen(text);
		char *line = realloc(text, n + 2);

		if (!line) {
			OPENSSL_cleanse(text, n);
			free(text);
			return -ENOMEM;
		}
		text = line;
		text[n] = '\n';
		text[n + 1] = '\0';
		r = vmm_control_call_fds(j->control, text, fds, nfds, reply, sizeof(reply));
		OPENSSL_cleanse(text, n);
		free(text);
	}
	if (r < 0) {
		job_fail(j, -EIO, "the VMM did not answer on its control socket: %s", strerror(-r));
		return -1;
	}
	rep = cJSON_Parse(reply);
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "ok"))) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(rep, "error");

		job_fail(j, -EIO, "the VMM refused: %s", cJSON_IsString(e) ? e->valuestring : "no reason given");
		cJSON_Delete(rep);
		return -1;
	}
	cJSON_Delete(rep);
	return 0;
}

static int vmm_call(struct image_job *j, cJSON *req)
{
	return vmm_call_fds(j, req, NULL, 0);
}

static cJSON *drive_req(const char *op, const char *serial)
{
	cJSON *req = cJSON_CreateObject();

	cJSON_AddStringToObject(req, "op", op);
	cJSON_AddStringToObject(req, "serial", serial);
	return req;
}

/* ---- snapshot ---- */

static void snapshot_work(uv_work_t *w)
{
	struct image_job *j = w->data;
	const char *probe_args[] = { j->path, NULL };
	char out[1024], raw[400], img[400], tmp_img[400], inodes_text[32];
	unsigned long long kb = 0, apparent_kb = 0, files = 0, size, inodes;
	struct simage_write_opts opts = { 0 };
	uint8_t managed_key[SIMAGE_KEY_BYTES];
	int code, rfd = -1, ofd = -1;
	bool attached = false;

	code = guest_sh(j, probe_script, probe_args, out, sizeof(out));
	if (code != 0 || sscanf(out, "%llu %llu %llu", &kb, &apparent_kb, &files) != 3) {
		job_fail(j, code == 3 ? -ENOENT : code == 4 ? -EBUSY : -EIO, "%s",
			 out[0] ? out : "cannot size the directory in the guest");
		return;
	}
	if (apparent_kb > kb)
		kb = apparent_kb;
	/*
	 * Room for the data, ext4's metadata and journal, and inodes for every
	 * file. The scratch file is sparse, so room never written costs nothing;
	 * a tree that still does not fit gets twice the room, twice.
	 */
	size = kb * 1024 * 13 / 10 + files * 4096 + (64ull << 20);
	inodes = files + files / 2 + 1024;
	snprintf(inodes_text, sizeof(inodes_text), "%llu", inodes);
	snprintf(raw, sizeof(raw), "%s/.scratch-%s.raw", j->store, j->sb->id);
	rfd = open(raw, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (rfd < 0) {
		job_fail(j, -EIO, "cannot make a scratch disk: %s", strerror(errno));
		goto out;
	}
	for (int attempt = 0;; attempt++) {
		const char *args[] = { SCRATCH_SERIAL, j->path, inodes_text, NULL };
		cJSON *req;

		size = (size + (1 << 20) - 1) & ~((1ull << 20) - 1);
		if (size > MAX_SCRATCH_BYTES) {
			job_fail(j, 413, "%s needs a %llu MiB file system; snapshots are limited to %llu MiB", j->path,
				 size >> 20, MAX_SCRATCH_BYTES >> 20);
			goto out;
		}
		if (ftruncate(rfd, 0) < 0 || ftruncate(rfd, (off_t)size) < 0) {
			job_fail(j, -EIO, "cannot make a %llu-byte scratch disk: %s", size, strerror(errno));
			goto out;
		}
		sv_info("snapshot of %s in %s: %llu KiB in %llu files, a %llu MiB file system", j->path, j->sb->id,
			kb, files, size >> 20);
		/* The VMM opens no host path: the scratch file goes as a descriptor. */
		req = drive_req("drive-attach", SCRATCH_SERIAL);
		cJSON_AddNumberToObject(req, "fd", 0);
		if (vmm_call_fds(j, req, &rfd, 1) < 0)
			goto out;
		attached = true;
		code = guest_sh(j, mkfs_script, args, out, sizeof(out));
		if (code == 0)
			break;
		if (attempt == 2 || !strstr(out, "allocate")) {
			job_fail(j, -EIO, "making the file system in the guest failed (%d): %s", code, out);
			goto out;
		}
		if (vmm_call(j, drive_req("drive-detach", SCRATCH_SERIAL)) < 0)
			goto out;
		attached = false;
		size *= 2;
	}
	if (vmm_call(j, drive_req("drive-detach", SCRATCH_SERIAL)) < 0)
		goto out;
	attached = false;
	/* The image: sealed with the customer key, or a fresh managed key once the id is known. */
	opts.flags = j->managed ? SIMAGE_FLAG_MANAGED : 0;
	/* Sealed on a few threads beside this worker: the daemon runs no seccomp filter. */
	opts.threads = simage_default_threads();
	snprintf(tmp_img, sizeof(tmp_img), "%s/.writing-%s.img", j->store, j->sb->id);
	ofd = open(tmp_img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (ofd < 0) {
		job_fail(j, -EIO, "%s: %s", tmp_img, strerror(errno));
		goto out;
	}
	if (j->managed) {
		/* A random per-image key, wrapped below once the writer has made the image's id. */
		if (simage_random(managed_key, sizeof(managed_key)) < 0) {
			job_fail(j, -EIO, "no random bytes");
			goto out;
		}
		memcpy(j->ikm, managed_key, sizeof(managed_key));
		j->ikm_len = sizeof(managed_key);
	}
	code = simage_write(rfd, size, ofd, j->ikm, j->ikm_len, &opts, &j->h, &j->stats);
	if (code < 0) {
		job_fail(j, -EIO, "writing the image failed: %s",
			 code <= SIMAGE_E_TRUNCATED ? simage_strerror(code) : strerror(-code));
		goto out;
	}
	simage_id_hex(j->h.image_id, j->id);
	if (j->managed) {
		code = snapshot_managed_key_store(j->store, j->id, managed_key);
		if (code < 0) {
			job_fail(j, -EIO, "cannot store the managed image key: %s", strerror(-code));
			goto out;
		}
	}
	snapshot_store_path(j->store, j->id, "img", img, sizeof(img));
	if (rename(tmp_img, img) < 0)
		job_fail(j, -EIO, "%s: %s", img, strerror(errno));
out:
	OPENSSL_cleanse(managed_key, sizeof(managed_key));
	if (attached)
		vmm_call(j, drive_req("drive-detach", SCRATCH_SERIAL));
	if (rfd >= 0) {
		close(rfd);
		unlink(raw);
	}
	if (ofd >= 0) {
		close(ofd);
		if (j->err)
			unlink(tmp_img);
	}
}

static void snapshot_done(uv_work_t *w, int status)
{
	struct image_job *j = w->data;
	struct sandbox *sb = j->sb;
	cJSON *rec, *o;

	(void)status;
	sb->snapshot_busy = false;
	if (!j->err) {
		double now = (double)(long long)sandboxd_wall_time();

		rec = cJSON_CreateObject();
		cJSON_AddStringToObject(rec, "id", j->id);
		cJSON_AddNumberToObject(rec, "created", now);
		cJSON_AddNumberToObject(rec, "last_used", now);
		if (j->ttl < 0)
			cJSON_AddNullToObject(rec, "ttl");
		else
			cJSON_AddNumberToObject(rec, "ttl", (double)j->ttl);
		cJSON_AddStringToObject(rec, "key", j->managed ? "managed" : "customer");
		cJSON_AddNumberToObject(rec, "disk_size", (double)j->h.disk_size);
		cJSON_AddNumberToObject(rec, "file_size", (double)j->stats.file_size);
		cJSON_AddStringToObject(rec, "sandbox", sb->id);
		cJSON_AddStringToObject(rec, "path", j->path);
		if (snapshot_record_save(j->store, j->id, rec) < 0)
			job_fail(j, -EIO, "cannot write the image record");
		cJSON_Delete(rec);
		if (j->err)
			snapshot_store_remove(j->store, j->id);
	}
	if (j->err) {
		sv_warn("snapshot of %s in %s failed: %s", j->path, sb->id, j->error);
	} else {
		sv_info("snapshot %s of %s in %s: %llu bytes (%s key)", j->id, j->path, sb->id,
			(unsigned long long)j->stats.file_size, j->managed ? "managed" : "customer");
	}
	if (j->err) {
		api_call_fail(j->call, j->err, NULL, "%s", j->error);
	} else {
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "image", j->id);
		cJSON_AddStringToObject(o, "key", j->managed ? "managed" : "customer");
		cJSON_AddNumberToObject(o, "file_size", (double)j->stats.file_size);
		api_call_ok(j->call, o);
	}
	sandbox_activity(sb, -1);
	api_call_release(j->call);
	sandbox_unref(sb);
	job_free(j);
}

/* ---- request bodies ---- */

/* "key": base64 of 16..512 bytes; absent is fine (then none). */
static int parse_key(struct api_call *call, const cJSON *body, struct image_job *j)
{
	const cJSON *k = cJSON_GetObjectItemCaseSensitive(body, "key");
	uint8_t buf[(SIMAGE_IKM_MAX + 2) / 3 * 3 + 3];
	size_t len, pad = 0;
	int n;

	if (!k || cJSON_IsNull(k))
		return 0;
	len = cJSON_IsString(k) ? strlen(k->valuestring) : 0;
	if (!cJSON_IsString(k) || len == 0 || len % 4 || len / 4 * 3 > sizeof(buf)) {
		api_call_fail(call, -EINVAL, "key", "key must be base64 of %u..%u bytes", SIMAGE_IKM_MIN,
				   SIMAGE_IKM_MAX);
		return -1;
	}
	n = EVP_DecodeBlock(buf, (const unsigned char *)k->valuestring, (int)len);
	if (n < 0) {
		api_call_fail(call, -EINVAL, "key", "key is not valid base64");
		return -1;
	}
	while (pad < 2 && k->valuestring[len - 1 - pad] == '=')
		pad++;
	n -= (int)pad;
	if (n < (int)SIMAGE_IKM_MIN || n > (int)SIMAGE_IKM_MAX) {
		OPENSSL_cleanse(buf, sizeof(buf));
		api_call_fail(call, -EINVAL, "key", "a key is %u..%u bytes; this one is %d", SIMAGE_IKM_MIN,
				   SIMAGE_IKM_MAX, n);
		return -1;
	}
	memcpy(j->ikm, buf, (size_t)n);
	j->ikm_len = (size_t)n;
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

static int parse_path(struct api_call *call, const cJSON *body, char *out, size_t len)
{
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(body, "path");

	if (!cJSON_IsString(p) || p->valuestring[0] != '/' || strlen(p->valuestring) >= len ||
	    strstr(p->valuestring, "/../") || !strcmp(p->valuestring, "/")) {
		api_call_fail(call, -EINVAL, "path", "path must be an absolute directory other than / (under %zu bytes)",
				   len);
		return -1;
	}
	snprintf(out, len, "%s", p->valuestring);
	/* "/project/" and "/project" are one mount point. */
	for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--)
		out[n - 1] = '\0';
	return 0;
}

static struct image_job *job_new(struct sandbox *sb, struct api_call *call, enum job_kind kind)
{
	struct image_job *j = calloc(1, sizeof(*j));

	if (!j) {
		api_call_fail(call, -ENOMEM, NULL, "out of memory");
		return NULL;
	}
	j->kind = kind;
	j->d = sb->d;
	j->sb = sb;
	j->call = call;
	j->slot = -1;
	snprintf(j->vsock, sizeof(j->vsock), "%s", sb->vm.vsock);
	snprintf(j->control, sizeof(j->control), "%s", sb->vm.control);
	snprintf(j->run_dir, sizeof(j->run_dir), "%s", sb->vm.dir);
	snprintf(j->store, sizeof(j->store), "%s", sb->d->snapshot_dir);
	j->work.data = j;
	return j;
}

static bool sandbox_usable(struct sandbox *sb, struct api_call *call)
{
	if (sb->state != SANDBOX_RUNNING) {
		char why[300];

		sandbox_not_running(sb, why, sizeof(why));
		api_call_fail(call, -ESRCH, NULL, "%s", why);
		return false;
	}
	if (sb->spec.restricted) {
		api_call_fail(call, -EBUSY, NULL, "restricted sandboxes cannot snapshot or mount images");
		return false;
	}
	return true;
}

static void queue(struct image_job *j, uv_work_cb work, uv_after_work_cb done)
{
	sandbox_ref(j->sb);
	sandbox_activity(j->sb, +1);
	api_call_hold(j->call);
	uv_queue_work(j->d->loop, &j->work, work, done);
}

void snapshot_create(struct sandbox *sb, struct api_call *call)
{
	size_t len;
	const char *text = api_call_body(call, &len);
	cJSON *body = cJSON_ParseWithLength(text, len);
	const cJSON *ttl, *it;
	struct image_job *j;

	if (!cJSON_IsObject(body)) {
		api_call_fail(call, -EINVAL, NULL, "body must be a JSON object");
		goto out;
	}
	cJSON_ArrayForEach(it, body) {
		if (strcmp(it->string, "path") && strcmp(it->string, "key") && strcmp(it->string, "ttl")) {
			api_call_fail(call, -EINVAL, it->string, "unknown field %s (known: path, key, ttl)", it->string);
			goto out;
		}
	}
	if (!sandbox_usable(sb, call))
		goto out;
	if (sb->snapshot_busy) {
		api_call_fail(call, -EBUSY, NULL, "a snapshot of sandbox %s is already being made", sb->id);
		goto out;
	}
	j = job_new(sb, call, JOB_SNAPSHOT);
	if (!j)
		goto out;
	if (parse_path(call, body, j->path, sizeof(j->path)) < 0 || parse_key(call, body, j) < 0) {
		job_free(j);
		goto out;
	}
	j->managed = j->ikm_len == 0;
	ttl = cJSON_GetObjectItemCaseSensitive(body, "ttl");
	j->ttl = DEFAULT_TTL_S;
	if (cJSON_IsNull(ttl) || (cJSON_IsString(ttl) && !strcmp(ttl->valuestring, "none"))) {
		j->ttl = -1;
	} else if (ttl) {
		if (!cJSON_IsNumber(ttl) || ttl->valuedouble < 1 || ttl->valuedouble > (double)MAX_TTL_S ||
		    ttl->valuedouble != (double)(long long)ttl->valuedouble) {
			api_call_fail(call, -EINVAL, "ttl", "ttl is whole seconds 1..%lld, or \"none\" to keep",
					   MAX_TTL_S);
			job_free(j);
			goto out;
		}
		j->ttl = (long long)ttl->valuedouble;
	}
	sb->snapshot_busy = true;
	queue(j, snapshot_work, snapshot_done);
out:
	cJSON_Delete(body);
}

/* ---- mount and unmount ---- */

static void mount_work(uv_work_t *w)
{
	struct image_job *j = w->data;
	struct simage_reader rd;
	char img[400], out[1024], data_hex[2 * SIMAGE_KEY_BYTES + 1], meta_hex[2 * SIMAGE_KEY_BYTES + 1],
		id_hex[2 * SIMAGE_ID_BYTES + 1];
	int fd, r;

	snapshot_store_path(j->store, j->id, "img", img, sizeof(img));
	fd = open(img, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		job_fail(j, -ENOENT, "image %s: %s", j->id, strerror(errno));
		return;
	}
	/* fd stays open: the file checked here is the one the VMM gets. */
	r = simage_reader_open(&rd, fd, j->ikm, j->ikm_len);
	if (r == SIMAGE_E_KEY) {
		close(fd);
		job_fail(j, -EACCES, "wrong key: the key does not match image %s", j->id);
		return;
	}
	if (r < 0) {
		job_fail(j, r == SIMAGE_E_NOKEY ? -EINVAL : -EIO, "image %s: %s", j->id,
			 r <= SIMAGE_E_TRUNCATED ? simage_strerror(r) : strerror(-r));
		if (r != SIMAGE_E_NOKEY)
			sv_warn("image %s refused: %s", j->id, simage_strerror(r));
		close(fd);
		return;
	}
	/* The id is in the authenticated header: a file renamed to another image's name is not that image. */
	simage_id_hex(rd.h.image_id, id_hex);
	if (strcmp(id_hex, j->id)) {
		simage_reader_close(&rd);
		job_fail(j, -EIO, "image %s: the file holds image %s (renamed in the store?); not mounted", j->id,
			 id_hex);
		sv_warn("image %s refused: the file holds image %s", j->id, id_hex);
		close(fd);
		return;
	}
	simage_hex(rd.keys.data, SIMAGE_KEY_BYTES, data_hex);
	simage_hex(rd.keys.meta, SIMAGE_KEY_BYTES, meta_hex);
	simage_reader_close(&rd);
	{
		cJSON *req = drive_req("drive-attach", snapshot_spare_drives[1 + j->slot]);
		/*
		 * The image and its overlay go as descriptors (the VMM opens no host
		 * path); the overlay is unlinked from birth, so it never outlives
		 * the VMM, and its descriptor lets the VMM write whoever owns it.
		 */
		int fds[2] = { fd, open(j->run_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) };

		if (fds[1] < 0) {
			job_fail(j, -EIO, "cannot make the overlay file in %s: %s", j->run_dir, strerror(errno));
			OPENSSL_cleanse(data_hex, sizeof(data_hex));
			OPENSSL_cleanse(meta_hex, sizeof(meta_hex));
			cJSON_Delete(req);
			close(fd);
			return;
		}
		cJSON_AddNumberToObject(req, "fd", 0);
		cJSON_AddStringToObject(req, "data_key", data_hex);
		cJSON_AddStringToObject(req, "meta_key", meta_hex);
		cJSON_AddNumberToObject(req, "overlay_fd", 1);
		OPENSSL_cleanse(data_hex, sizeof(data_hex));
		OPENSSL_cleanse(meta_hex, sizeof(meta_hex));
		r = vmm_call_fds(j, req, fds, 2);
		close(fds[1]);
		close(fd);
	}
	if (r < 0)
		return;
	{
		const char *args[] = { snapshot_spare_drives[1 + j->slot], j->path, NULL };

		r = guest_sh(j, mount_script, args, out, sizeof(out));
	}
	if (r != 0) {
		job_fail(j, -EIO, "mounting in the guest failed (%d): %s", r, out);
		vmm_call(j, drive_req("drive-detach", snapshot_spare_drives[1 + j->slot]));
	}
}

static void unmount_work(uv_work_t *w)
{
	struct image_job *j = w->data;
	const char *args[] = { j->path, snapshot_spare_drives[1 + j->slot], NULL };
	char out[1024];
	int r = guest_sh(j, unmount_script, args, out, sizeof(out));

	if (r != 0) {
		job_fail(j, r == 32 || strstr(out, "busy") ? -EBUSY : -EIO, "unmounting %s in the guest failed: %s",
			 j->path, out);
		return;
	}
	vmm_call(j, drive_req("drive-detach", snapshot_spare_drives[1 + j->slot]));
}

static void mount_done(uv_work_t *w, int status)
{
	struct image_job *j = w->data;
	struct sandbox *sb = j->sb;
	struct sandbox_mount *m = &sb->mounts[j->slot];
	cJSON *o;

	(void)status;
	m->busy = false;
	if (j->kind == JOB_MOUNT && j->err) {
		m->path[0] = '\0';
		m->image[0] = '\0';
	} else if (j->kind == JOB_MOUNT) {
		snapshot_record_touch(j->store, j->id);
		sv_info("image %s mounted at %s in %s", j->id, j->path, sb->id);
	} else if (!j->err) {
		sv_info("image %s unmounted from %s in %s", m->image, m->path, sb->id);
		m->path[0] = '\0';
		m->image[0] = '\0';
	}
	if (!j->err)
		store_save(sb);
	if (j->err) {
		api_call_fail(j->call, j->err, j->err == -EINVAL ? "key" : NULL, "%s", j->error);
	} else if (j->kind == JOB_MOUNT) {
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "path", j->path);
		cJSON_AddStringToObject(o, "image", j->id);
		api_call_ok(j->call, o);
	} else {
		api_call_ok(j->call, NULL);
	}
	sandbox_activity(sb, -1);
	api_call_release(j->call);
	sandbox_unref(sb);
	job_free(j);
}

static int find_mount(const struct sandbox *sb, const char *path)
{
	for (int i = 0; i < SANDBOX_MOUNT_SLOTS; i++)
		if (sb->mounts[i].path[0] && !strcmp(sb->mounts[i].path, path))
			return i;
	return -1;
}

void snapshot_mount(struct sandbox *sb, struct api_call *call)
{
	size_t len;
	const char *text = api_call_body(call, &len);
	cJSON *body = cJSON_ParseWithLength(text, len), *rec = NULL;
	const cJSON *image, *kind, *it;
	struct image_job *j = NULL;
	int slot = -1;

	if (!cJSON_IsObject(body)) {
		api_call_fail(call, -EINVAL, NULL, "body must be a JSON object");
		goto out;
	}
	cJSON_ArrayForEach(it, body) {
		if (strcmp(it->string, "path") && strcmp(it->string, "key") && strcmp(it->string, "image")) {
			api_call_fail(call, -EINVAL, it->string, "unknown field %s (known: path, image, key)", it->string);
			goto out;
		}
	}
	if (!sandbox_usable(sb, call))
		goto out;
	image = cJSON_GetObjectItemCaseSensitive(body, "image");
	if (!cJSON_IsString(image) || !snapshot_id_valid(image->valuestring)) {
		api_call_fail(call, -EINVAL, "image", "image must be an image id (32 hex digits)");
		goto out;
	}
	rec = snapshot_record_load(sb->d->snapshot_dir, image->valuestring);
	if (!rec) {
		api_call_fail(call, -ENOENT, "image", "no image %s", image->valuestring);
		goto out;
	}
	j = job_new(sb, call, JOB_MOUNT);
	if (!j || parse_path(call, body, j->path, sizeof(j->path)) < 0 || parse_key(call, body, j) < 0)
		goto out;
	snprintf(j->id, sizeof(j->id), "%s", image->valuestring);
	kind = cJSON_GetObjectItemCaseSensitive(rec, "key");
	if (cJSON_IsString(kind) && !strcmp(kind->valuestring, "managed")) {
		if (j->ikm_len) {
			api_call_fail(call, -EINVAL, "key", "image %s uses managed encryption: give no key", j->id);
			goto out;
		}
		if (snapshot_managed_key_get(sb->d->snapshot_dir, j->id, j->ikm) < 0) {
			api_call_fail(call, -EIO, NULL, "the managed key of image %s cannot be read", j->id);
			goto out;
		}
		j->ikm_len = SIMAGE_KEY_BYTES;
		j->managed = true;
	} else if (!j->ikm_len) {
		api_call_fail(call, -EINVAL, "key",
				   "missing key: image %s is encrypted with a customer key; give the key it was made with",
				   j->id);
		goto out;
	}
	if (find_mount(sb, j->path) >= 0) {
		api_call_fail(call, -EBUSY, "path", "an image is already mounted at %s", j->path);
		goto out;
	}
	for (int i = 0; i < SANDBOX_MOUNT_SLOTS && slot < 0; i++)
		if (!sb->mounts[i].path[0])
			slot = i;
	if (slot < 0) {
		api_call_fail(call, -EBUSY, NULL, "sandbox %s has %d images mounted, the most it can", sb->id,
				   SANDBOX_MOUNT_SLOTS);
		goto out;
	}
	j->slot = slot;
	snprintf(sb->mounts[slot].path, sizeof(sb->mounts[slot].path), "%s", j->path);
	snprintf(sb->mounts[slot].image, sizeof(sb->mounts[slot].image), "%s", j->id);
	sb->mounts[slot].busy = true;
	queue(j, mount_work, mount_done);
	j = NULL;
out:
	if (j)
		job_free(j);
	cJSON_Delete(rec);
	cJSON_Delete(body);
}

void snapshot_unmount(struct sandbox *sb, struct api_call *call)
{
	size_t len;
	const char *text = api_call_body(call, &len);
	cJSON *body = cJSON_ParseWithLength(text, len);
	struct image_job *j = NULL;
	int slot;

	if (!cJSON_IsObject(body)) {
		api_call_fail(call, -EINVAL, NULL, "body must be a JSON object {\"path\": P}");
		goto out;
	}
	if (!sandbox_usable(sb, call))
		goto out;
	j = job_new(sb, call, JOB_UNMOUNT);
	if (!j || parse_path(call, body, j->path, sizeof(j->path)) < 0)
		goto out;
	slot = find_mount(sb, j->path);
	if (slot < 0) {
		api_call_fail(call, -ENOENT, "path", "no image is mounted at %s", j->path);
		goto out;
	}
	if (sb->mounts[slot].busy) {
		api_call_fail(call, -EBUSY, "path", "%s is being mounted or unmounted", j->path);
		goto out;
	}
	j->slot = slot;
	snprintf(j->id, sizeof(j->id), "%s", sb->mounts[slot].image);
	sb->mounts[slot].busy = true;
	queue(j, unmount_work, mount_done);
	j = NULL;
out:
	if (j)
		job_free(j);
	cJSON_Delete(body);
}

/* The spare drives (a scratch disk, then one per mount); restricted sandboxes get none. */
static int mounts_part_setup(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	if (!sb->spec.restricted)
		l->cfg->spare_drives = snapshot_spare_drives;
	return 0;
}

/* The same drives, empty: a paused sandbox has no image mounted (sandbox_pause refuses that). */
static int mounts_part_relaunch(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	return mounts_part_setup(sb, l, err, errlen);
}

static void mounts_part_to_json(const struct sandbox *sb, cJSON *out)
{
	cJSON *arr;

	if (sb->spec.restricted)
		return;
	arr = cJSON_AddArrayToObject(out, "mounts");
	for (int i = 0; arr && i < SANDBOX_MOUNT_SLOTS; i++) {
		cJSON *m;

		if (!sb->mounts[i].path[0] || sb->mounts[i].busy)
			continue;
		m = cJSON_CreateObject();
		cJSON_AddStringToObject(m, "path", sb->mounts[i].path);
		cJSON_AddStringToObject(m, "image", sb->mounts[i].image);
		cJSON_AddItemToArray(arr, m);
	}
}

/* The registry keeps the slots: a restarted daemon must not attach over a mounted drive. */
static void mounts_part_save(const struct sandbox *sb, cJSON *record)
{
	cJSON *arr = cJSON_AddArrayToObject(record, "mounts");

	for (int i = 0; arr && i < SANDBOX_MOUNT_SLOTS; i++) {
		cJSON *m;

		if (!sb->mounts[i].path[0])
			continue;
		m = cJSON_CreateObject();
		cJSON_AddNumberToObject(m, "slot", i);
		cJSON_AddStringToObject(m, "path", sb->mounts[i].path);
		cJSON_AddStringToObject(m, "image", sb->mounts[i].image);
		cJSON_AddItemToArray(arr, m);
	}
}

static void mounts_part_restore(struct sandbox *sb, const cJSON *record)
{
	const cJSON *m;

	cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(record, "mounts")) {
		const cJSON *slot = cJSON_GetObjectItemCaseSensitive(m, "slot");
		const cJSON *path = cJSON_GetObjectItemCaseSensitive(m, "path");
		const cJSON *image = cJSON_GetObjectItemCaseSensitive(m, "image");
		int i = cJSON_IsNumber(slot) ? (int)slot->valuedouble : -1;

		if (i < 0 || i >= SANDBOX_MOUNT_SLOTS || !cJSON_IsString(path) || !cJSON_IsString(image))
			continue;
		snprintf(sb->mounts[i].path, sizeof(sb->mounts[i].path), "%s", path->valuestring);
		snprintf(sb->mounts[i].image, sizeof(sb->mounts[i].image), "%s", image->valuestring);
	}
}

const struct sandbox_part_ops sandbox_mounts_part = {
	.name = "mounts",
	.setup = mounts_part_setup,
	.relaunch = mounts_part_relaunch,
	.restore = mounts_part_restore,
	.save = mounts_part_save,
	.to_json = mounts_part_to_json,
};
