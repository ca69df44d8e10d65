/*
 * The registry on disk: STATE_DIR/sandboxes/ID/sandbox.json per sandbox,
 * replaced atomically (write a temporary file, fsync, rename, fsync the
 * folder), so a crash leaves the old record or the new one, never half.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sandbox.h"
#include "sandbox_part.h"
#include "sandboxd.h"
#include "store.h"

#define RECORD_MAX (4 * 1024 * 1024)

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int store_write_atomic(const char *dir, const char *name, const char *text)
{
	char path[400], tmp[420];
	int fd, r;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = write_all(fd, text, strlen(text));
	if (!r && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (!r && rename(tmp, path) < 0)
		r = -errno;
	if (!r)
		r = sync_dir(dir);
	if (r)
		unlink(tmp);
	return r;
}

int store_save(const struct sandbox *sb)
{
	cJSON *o = cJSON_CreateObject();
	char *text;
	int r;

	cJSON_AddNumberToObject(o, "version", 1);
	cJSON_AddStringToObject(o, "id", sb->id);
	cJSON_AddItemToObject(o, "spec", cJSON_Duplicate(sb->spec.json, 1));
	cJSON_AddStringToObject(o, "state", sandbox_state_name(sb->state));
	cJSON_AddNumberToObject(o, "returncode", sb->returncode);
	if (sb->reason)
		cJSON_AddStringToObject(o, "reason", sb->reason);
	cJSON_AddStringToObject(o, "message", sb->message);
	cJSON_AddNumberToObject(o, "created_at", sb->created_at);
	cJSON_AddNumberToObject(o, "started_at", sb->started_at);
	cJSON_AddNumberToObject(o, "finished_at", sb->finished_at);
	cJSON_AddNumberToObject(o, "deadline", sb->deadline);
	if (sb->state == SANDBOX_PAUSED || sb->state == SANDBOX_RESUMING) {
		cJSON_AddNumberToObject(o, "timeout_left", sb->timeout_left);
		cJSON_AddNumberToObject(o, "paused_at", sb->paused_at);
	}
	if (sb->resume_error[0])
		cJSON_AddStringToObject(o, "resume_error", sb->resume_error);
	cJSON_AddNumberToObject(o, "pid", sb->pid);
	cJSON_AddNumberToObject(o, "pid_start", (double)sb->pid_start);
	if (sb->start_mode)
		cJSON_AddStringToObject(o, "start", sb->start_mode);
	if (sb->start_reason[0])
		cJSON_AddStringToObject(o, "start_reason", sb->start_reason);
	for (const struct sandbox_part_ops *const *part = sandbox_parts; *part; part++)
		if ((*part)->save)
			(*part)->save(sb, o);
	text = cJSON_Print(o);
	cJSON_Delete(o);
	if (!text)
		return -ENOMEM;
	r = store_write_atomic(sb->vm.dir, "sandbox.json", text);
	if (r < 0)
		sv_err("sandbox=%s event=save_failed dir=%s why=\"%s\"", sb->id, sb->vm.dir, strerror(-r));
	free(text);
	return r;
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

int store_remove(const struct sandbox *sb)
{
	if (!sb->vm.dir[0])
		return 0;
	/* The record goes first: a crash midway leaves no half-known sandbox. */
	char path[400];

	snprintf(path, sizeof(path), "%s/sandbox.json", sb->vm.dir);
	unlink(path);
	return nftw(sb->vm.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS) < 0 ? -errno : 0;
}

static cJSON *read_record(const char *path)
{
	char *buf;
	ssize_t n;
	cJSON *j;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	buf = malloc(RECORD_MAX + 1);
	if (!buf) {
		close(fd);
		return NULL;
	}
	n = read(fd, buf, RECORD_MAX);
	close(fd);
	if (n <= 0) {
		free(buf);
		return NULL;
	}
	j = cJSON_ParseWithLength(buf, (size_t)n);
	free(buf);
	return j;
}

int store_load_all(const char *state_dir, void (*fn)(void *ctx, const char *id, void *record), void *ctx)
{
	char dir[400], path[700];
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/sandboxes", state_dir);
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		cJSON *rec;

		if (strncmp(e->d_name, "sb-", 3) || strlen(e->d_name) >= 32)
			continue;
		snprintf(path, sizeof(path), "%s/%s/sandbox.json", dir, e->d_name);
		rec = read_record(path);
		if (!rec) {
			sv_warn("sandbox %s: no readable record in %s/%s; left alone", e->d_name, dir, e->d_name);
			continue;
		}
		fn(ctx, e->d_name, rec);
	}
	closedir(d);
	return 0;
}
