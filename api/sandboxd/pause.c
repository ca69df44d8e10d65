/* pause.h: the pause folder of a sandbox, and the snapshot into it. */
#include "pause.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "sandbox_vm.h"
#include "simage/crypto.h"
#include "snapshot_store.h"
#include "vmm_control.h"

/* The VMM writes all of guest RAM before it answers: allow for a slow disk (about 64 MiB/s at worst). */
#define SNAPSHOT_BASE_MS 30000
#define SNAPSHOT_MS_PER_MIB 16

void pause_dir(const char *run_dir, char *out, size_t cap)
{
	snprintf(out, cap, "%s/" PAUSE_DIR, run_dir);
}

static void file_path(const char *run_dir, const char *name, char *out, size_t cap)
{
	snprintf(out, cap, "%s/" PAUSE_DIR "/%s", run_dir, name);
}

bool pause_files_present(const char *run_dir)
{
	static const char *const names[] = {SANDBOX_VM_STATE_FILE, SANDBOX_VM_MEMORY_FILE};
	char path[600];
	struct stat st;

	for (size_t i = 0; i < 2; i++) {
		file_path(run_dir, names[i], path, sizeof(path));
		if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
			return false;
	}
	return true;
}

void pause_files_remove(const char *run_dir)
{
	char path[600];

	file_path(run_dir, SANDBOX_VM_STATE_FILE, path, sizeof(path));
	unlink(path);
	file_path(run_dir, SANDBOX_VM_MEMORY_FILE, path, sizeof(path));
	unlink(path);
	file_path(run_dir, PAUSE_KEY_FILE, path, sizeof(path));
	unlink(path);
	pause_dir(run_dir, path, sizeof(path));
	rmdir(path);
}

/* The VM goes on as before a snapshot that failed; a VMM that is gone answers nothing, which is fine. */
static void resume_vm(const char *control_path)
{
	char reply[256];

	vmm_control_call(control_path, "{\"op\":\"resume\"}\n", reply, sizeof(reply));
}

int pause_undo(const char *run_dir, const char *control_path, int timeout_ms)
{
	char reply[256];
	int r = vmm_control_call_timeout(control_path, "{\"op\":\"resume\"}\n", reply, sizeof(reply), timeout_ms);

	if (r == 0 && !strstr(reply, "\"ok\":true"))
		r = -EIO;
	pause_files_remove(run_dir);
	return r;
}

/* A fresh memory key, wrapped into RUN_DIR/pause/key (synced) before the VMM seals anything with it. */
static int key_create(const char *run_dir, const char *key_store, const char *sandbox_id,
		      uint8_t key[SIMAGE_KEY_BYTES], char *why, size_t cap)
{
	uint8_t wrapped[SNAPSHOT_WRAPPED_BYTES];
	char path[600];
	int fd, r;

	r = simage_random(key, SIMAGE_KEY_BYTES);
	if (r == 0)
		r = snapshot_pause_key_wrap(key_store, sandbox_id, key, wrapped);
	if (r < 0) {
		snprintf(why, cap, "cannot make the memory key: %s",
			 r <= SIMAGE_E_TRUNCATED ? simage_strerror(r) : strerror(-r));
		return r <= SIMAGE_E_TRUNCATED ? -EIO : r;
	}
	file_path(run_dir, PAUSE_KEY_FILE, path, sizeof(path));
	errno = 0;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, wrapped, sizeof(wrapped)) != (ssize_t)sizeof(wrapped) || fsync(fd) < 0) {
		r = errno ? -errno : -EIO;
		snprintf(why, cap, "cannot write %s: %s", path, strerror(-r));
	}
	if (fd >= 0)
		close(fd);
	return r;
}

int pause_key_load(const char *run_dir, const char *key_store, const char *sandbox_id, uint8_t key[32], char *why,
		   size_t cap)
{
	uint8_t wrapped[SNAPSHOT_WRAPPED_BYTES + 1];
	char path[600];
	ssize_t n;
	int fd, r;

	file_path(run_dir, PAUSE_KEY_FILE, path, sizeof(path));
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		snprintf(why, cap, "cannot open %s: %s", path, strerror(errno));
		return r;
	}
	n = read(fd, wrapped, sizeof(wrapped));
	close(fd);
	if (n != SNAPSHOT_WRAPPED_BYTES) {
		snprintf(why, cap, "%s is not a wrapped key of %u bytes", path, (unsigned)SNAPSHOT_WRAPPED_BYTES);
		return -EINVAL;
	}
	r = snapshot_pause_key_unwrap(key_store, sandbox_id, wrapped, key);
	if (r < 0)
		snprintf(why, cap, "the memory key in %s does not open with the managed key: %s", path,
			 r <= SIMAGE_E_TRUNCATED ? "it was wrapped with another key, or tampered with" : strerror(-r));
	return r;
}

int pause_snapshot(const char *run_dir, const char *control_path, const char *key_store, const char *sandbox_id,
		   unsigned memory_mib, long long *memory_bytes, char *why, size_t cap)
{
	char dir[600], path[600], req[256], reply[1024];
	uint8_t key[SIMAGE_KEY_BYTES];
	int fds[2] = {-1, -1}, r;
	cJSON *rep = NULL;

	*memory_bytes = 0;
	pause_dir(run_dir, dir, sizeof(dir));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(why, cap, "cannot make %s: %s", dir, strerror(errno));
		return r;
	}
	for (int i = 0; i < 2; i++) {
		file_path(run_dir, i ? SANDBOX_VM_MEMORY_FILE : SANDBOX_VM_STATE_FILE, path, sizeof(path));
		fds[i] = open(path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fds[i] < 0) {
			r = -errno;
			snprintf(why, cap, "cannot create %s: %s", path, strerror(errno));
			goto fail;
		}
	}
	r = key_create(run_dir, key_store, sandbox_id, key, why, cap);
	if (r < 0)
		goto fail;
	sandbox_vm_snapshot_request(NULL, key, req, sizeof(req));
	OPENSSL_cleanse(key, sizeof(key));
	r = vmm_control_call_fds_timeout(control_path, req, fds, 2, reply, sizeof(reply),
					 SNAPSHOT_BASE_MS + (int)(memory_mib * SNAPSHOT_MS_PER_MIB));
	OPENSSL_cleanse(req, sizeof(req));
	if (r < 0) {
		snprintf(why, cap, "the VMM did not answer the snapshot request: %s", strerror(-r));
		goto fail;
	}
	rep = cJSON_Parse(reply);
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "ok"))) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(rep, "error");

		snprintf(why, cap, "the VMM refused the snapshot: %s",
			 cJSON_IsString(e) ? e->valuestring : "no reason given");
		r = -EIO;
		goto fail;
	}
	{
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(rep, "memory_bytes");

		*memory_bytes = cJSON_IsNumber(b) ? (long long)b->valuedouble : 0;
	}
	/* The VMM stops next: what it wrote must be on disk before the guest exists nowhere else. */
	for (int i = 0; i < 2; i++)
		if (fsync(fds[i]) < 0) {
			r = -errno;
			snprintf(why, cap, "cannot sync the snapshot to disk: %s", strerror(errno));
			goto fail;
		}
	r = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r >= 0) {
		fsync(r);
		close(r);
	}
	cJSON_Delete(rep);
	close(fds[0]);
	close(fds[1]);
	return 0;
fail:
	OPENSSL_cleanse(key, sizeof(key));
	cJSON_Delete(rep);
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	resume_vm(control_path);
	pause_files_remove(run_dir);
	return r;
}
