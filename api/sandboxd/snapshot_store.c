/*
 * The snapshot image store, STATE/snapshots/: ID.img (the image), ID.json
 * (its record: times, ttl, key kind, source) and, for managed images, ID.key
 * (a random per-image key wrapped with the managed key managed.key, so
 * deleting an image deletes its key material). Listing, deletion and the
 * retention sweep of the API live here too.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "pause.h"
#include "sandbox.h"
#include "sandboxd.h"
#include "simage/file.h"
#include "snapshot_store.h"
#include "snapshots.h"
#include "store.h"

#define MANAGED_KEY_FILE "managed.key"
#define WRAP_VERSION 1
#define IMAGE_WRAP_LABEL "sandvm managed v1 "
#define PAUSE_WRAP_LABEL "sandvm pause v1 "
#define WRAPPED_BYTES SNAPSHOT_WRAPPED_BYTES

/* ---- the store ---- */

bool snapshot_id_valid(const char *id)
{
	size_t n = strlen(id);

	if (n != 2 * SIMAGE_ID_BYTES)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return false;
	return true;
}

void snapshot_store_path(const char *store, const char *id, const char *ext, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.%s", store, id, ext);
}

cJSON *snapshot_record_load(const char *store, const char *id)
{
	char path[400], buf[8192];
	ssize_t n;
	int fd;

	if (!snapshot_id_valid(id))
		return NULL;
	snapshot_store_path(store, id, "json", path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	return cJSON_Parse(buf);
}

int snapshot_record_save(const char *store, const char *id, const cJSON *rec)
{
	char name[64], *text = cJSON_PrintUnformatted(rec);
	int r;

	if (!text)
		return -ENOMEM;
	snprintf(name, sizeof(name), "%s.json", id);
	r = store_write_atomic(store, name, text);
	free(text);
	return r;
}

double snapshot_record_num(const cJSON *rec, const char *name, double dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, name);

	return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* Seconds since the epoch at which the record expires; 0: never. */
double snapshot_expires_at(const cJSON *rec)
{
	const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(rec, "ttl");

	if (cJSON_IsNull(ttl))
		return 0;
	return snapshot_record_num(rec, "last_used", 0) + (cJSON_IsNumber(ttl) ? ttl->valuedouble : (double)DEFAULT_TTL_S);
}

void snapshot_record_touch(const char *store, const char *id)
{
	cJSON *rec = snapshot_record_load(store, id);

	if (!rec)
		return;
	cJSON_DeleteItemFromObject(rec, "last_used");
	cJSON_AddNumberToObject(rec, "last_used", (double)(long long)sandboxd_wall_time());
	snapshot_record_save(store, id, rec);
	cJSON_Delete(rec);
}

/* Unlinks an image with its record and wrapped key: its key material is gone with it. */
int snapshot_store_remove(const char *store, const char *id)
{
	static const char *const exts[] = { "key", "img", "json" };
	char path[400];
	int r = 0;

	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		snapshot_store_path(store, id, exts[i], path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT)
			r = -errno;
	}
	return r;
}

/* ---- managed keys ---- */

static int read_exact(const char *path, uint8_t *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), r = 0;
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len);
	if (n != (ssize_t)len)
		r = n < 0 ? -errno : -EINVAL;
	close(fd);
	return r;
}

static int write_secret(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
	char tmp[400], path[400];
	int fd, r = 0;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, len) != (ssize_t)len || fsync(fd) < 0)
		r = -EIO;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

/*
 * "sandvm managed v1 " and an image id, or "sandvm pause v1 " and a sandbox
 * id: a key wrapped for one never opens as the other.
 */
static int wrap_aad(const char *label, const char *id, uint8_t aad[128])
{
	size_t l = strlen(label), n = strnlen(id, 128 - l);

	memcpy(aad, label, l);
	memcpy(aad + l, id, n);
	return (int)(l + n);
}

/* A key sealed under the managed key, its owner's label and id as associated data. */
static int wrap_key_as(const uint8_t master[SIMAGE_KEY_BYTES], const char *label, const char *id,
		       const uint8_t key[SIMAGE_KEY_BYTES], uint8_t out[WRAPPED_BYTES])
{
	struct simage_codec c;
	uint8_t aad[128];
	int r = simage_codec_init(&c, SIMAGE_KEY_BYTES);

	if (r < 0)
		return r;
	out[0] = WRAP_VERSION;
	r = simage_random(out + 1, SIMAGE_NONCE_BYTES);
	if (r == 0)
		r = simage_gcm_seal(&c, master, out + 1, aad, (size_t)wrap_aad(label, id, aad), key, SIMAGE_KEY_BYTES,
				    out + 1 + SIMAGE_NONCE_BYTES);
	simage_codec_destroy(&c);
	return r;
}

static int unwrap_key_as(const uint8_t master[SIMAGE_KEY_BYTES], const char *label, const char *id,
			 const uint8_t in[WRAPPED_BYTES], uint8_t key[SIMAGE_KEY_BYTES])
{
	struct simage_codec c;
	uint8_t aad[128];
	int r;

	if (in[0] != WRAP_VERSION)
		return -EINVAL;
	r = simage_codec_init(&c, SIMAGE_KEY_BYTES);
	if (r < 0)
		return r;
	r = simage_gcm_open(&c, master, in + 1, aad, (size_t)wrap_aad(label, id, aad), in + 1 + SIMAGE_NONCE_BYTES,
			    SIMAGE_KEY_BYTES + SIMAGE_TAG_BYTES, key);
	simage_codec_destroy(&c);
	return r;
}

static int wrap_key(const uint8_t master[SIMAGE_KEY_BYTES], const char *id, const uint8_t key[SIMAGE_KEY_BYTES],
		    uint8_t out[WRAPPED_BYTES])
{
	return wrap_key_as(master, IMAGE_WRAP_LABEL, id, key, out);
}

static int unwrap_key(const uint8_t master[SIMAGE_KEY_BYTES], const char *id, const uint8_t in[WRAPPED_BYTES],
		      uint8_t key[SIMAGE_KEY_BYTES])
{
	return unwrap_key_as(master, IMAGE_WRAP_LABEL, id, in, key);
}

static int load_master(const char *store, uint8_t master[SIMAGE_KEY_BYTES])
{
	char path[400];

	snprintf(path, sizeof(path), "%s/%s", store, MANAGED_KEY_FILE);
	return read_exact(path, master, SIMAGE_KEY_BYTES);
}

int snapshot_managed_key_get(const char *store, const char *id, uint8_t key[SIMAGE_KEY_BYTES])
{
	uint8_t master[SIMAGE_KEY_BYTES], wrapped[WRAPPED_BYTES];
	char path[400];
	int r = load_master(store, master);

	snapshot_store_path(store, id, "key", path, sizeof(path));
	if (r == 0)
		r = read_exact(path, wrapped, sizeof(wrapped));
	if (r == 0)
		r = unwrap_key(master, id, wrapped, key);
	OPENSSL_cleanse(master, sizeof(master));
	return r;
}

int snapshot_managed_key_store(const char *store, const char *id, const uint8_t key[SIMAGE_KEY_BYTES])
{
	uint8_t wrapped[WRAPPED_BYTES], master[SIMAGE_KEY_BYTES];
	char name[64];
	int r = load_master(store, master);

	snprintf(name, sizeof(name), "%s.key", id);
	if (r == 0)
		r = wrap_key(master, id, key, wrapped);
	if (r == 0)
		r = write_secret(store, name, wrapped, sizeof(wrapped));
	OPENSSL_cleanse(master, sizeof(master));
	return r;
}

int snapshot_pause_key_wrap(const char *store, const char *sandbox_id, const uint8_t key[SIMAGE_KEY_BYTES],
			     uint8_t out[SNAPSHOT_WRAPPED_BYTES])
{
	uint8_t master[SIMAGE_KEY_BYTES];
	int r = load_master(store, master);

	if (r == 0)
		r = wrap_key_as(master, PAUSE_WRAP_LABEL, sandbox_id, key, out);
	OPENSSL_cleanse(master, sizeof(master));
	return r;
}

int snapshot_pause_key_unwrap(const char *store, const char *sandbox_id, const uint8_t in[SNAPSHOT_WRAPPED_BYTES],
			      uint8_t key[SIMAGE_KEY_BYTES])
{
	uint8_t master[SIMAGE_KEY_BYTES];
	int r = load_master(store, master);

	if (r == 0)
		r = unwrap_key_as(master, PAUSE_WRAP_LABEL, sandbox_id, in, key);
	OPENSSL_cleanse(master, sizeof(master));
	return r;
}

int snapshots_init(struct sandboxd *d)
{
	uint8_t master[SIMAGE_KEY_BYTES];
	char path[400];
	struct stat st;
	int r;

	snprintf(d->snapshot_dir, sizeof(d->snapshot_dir), "%s/snapshots", d->state_dir);
	if (mkdir(d->snapshot_dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "sandboxd: %s: %s\n", d->snapshot_dir, strerror(errno));
		return -errno;
	}
	snprintf(path, sizeof(path), "%s/%s", d->snapshot_dir, MANAGED_KEY_FILE);
	if (stat(path, &st) == 0) {
		if ((st.st_mode & 077) || st.st_size != SIMAGE_KEY_BYTES) {
			fprintf(stderr, "sandboxd: %s must be %u bytes with mode 0600\n", path, SIMAGE_KEY_BYTES);
			return -EPERM;
		}
		return 0;
	}
	r = simage_random(master, sizeof(master));
	if (r == 0)
		r = write_secret(d->snapshot_dir, MANAGED_KEY_FILE, master, sizeof(master));
	OPENSSL_cleanse(master, sizeof(master));
	if (r < 0)
		fprintf(stderr, "sandboxd: cannot create %s: %s\n", path, strerror(-r));
	return r;
}

int snapshots_rotate_managed_key(const char *state_dir)
{
	uint8_t old[SIMAGE_KEY_BYTES], fresh[SIMAGE_KEY_BYTES], key[SIMAGE_KEY_BYTES], wrapped[WRAPPED_BYTES];
	char store[320], path[400], name[64];
	unsigned rewrapped = 0, rewrapped_pause = 0;
	struct dirent *e;
	DIR *dir;
	int r;

	snprintf(store, sizeof(store), "%s/snapshots", state_dir);
	r = load_master(store, old);
	if (r < 0) {
		fprintf(stderr, "sandboxd: no managed key in %s: %s\n", store, strerror(-r));
		return r;
	}
	r = simage_random(fresh, sizeof(fresh));
	/* The new key is written aside first: a crash leaves each image under one of the two. */
	if (r == 0)
		r = write_secret(store, MANAGED_KEY_FILE ".new", fresh, sizeof(fresh));
	dir = r == 0 ? opendir(store) : NULL;
	while (dir && r == 0 && (e = readdir(dir))) {
		char id[40];
		size_t n = strlen(e->d_name);

		if (n != 2 * SIMAGE_ID_BYTES + 4 || strcmp(e->d_name + 2 * SIMAGE_ID_BYTES, ".key"))
			continue;
		snprintf(id, sizeof(id), "%.*s", (int)(2 * SIMAGE_ID_BYTES), e->d_name);
		if (!snapshot_id_valid(id))
			continue;
		snapshot_store_path(store, id, "key", path, sizeof(path));
		r = read_exact(path, wrapped, sizeof(wrapped));
		if (r == 0)
			r = unwrap_key(old, id, wrapped, key);
		if (r == 0)
			r = wrap_key(fresh, id, key, wrapped);
		snprintf(name, sizeof(name), "%s.key", id);
		if (r == 0)
			r = write_secret(store, name, wrapped, sizeof(wrapped));
		if (r < 0)
			fprintf(stderr, "sandboxd: re-wrapping the key of image %s failed: %s\n", id,
				r <= SIMAGE_E_TRUNCATED ? simage_strerror(r) : strerror(-r));
		rewrapped += r == 0;
	}
	if (dir)
		closedir(dir);
	/* Paused sandboxes' keys too: STATE/sandboxes/ID/pause/key, wrapped for ID. */
	snprintf(path, sizeof(path), "%s/sandboxes", state_dir);
	dir = r == 0 ? opendir(path) : NULL;
	while (dir && r == 0 && (e = readdir(dir))) {
		char pdir[700], kpath[800];

		if (e->d_name[0] == '.' || strlen(e->d_name) >= 64)
			continue;
		snprintf(pdir, sizeof(pdir), "%s/sandboxes/%s/" PAUSE_DIR, state_dir, e->d_name);
		snprintf(kpath, sizeof(kpath), "%s/" PAUSE_KEY_FILE, pdir);
		if (access(kpath, F_OK) < 0)
			continue;
		r = read_exact(kpath, wrapped, sizeof(wrapped));
		if (r == 0)
			r = unwrap_key_as(old, PAUSE_WRAP_LABEL, e->d_name, wrapped, key);
		if (r == 0)
			r = wrap_key_as(fresh, PAUSE_WRAP_LABEL, e->d_name, key, wrapped);
		if (r == 0)
			r = write_secret(pdir, PAUSE_KEY_FILE, wrapped, sizeof(wrapped));
		if (r < 0)
			fprintf(stderr, "sandboxd: re-wrapping the pause key of sandbox %s failed: %s\n", e->d_name,
				r <= SIMAGE_E_TRUNCATED ? simage_strerror(r) : strerror(-r));
		rewrapped_pause += r == 0;
	}
	if (dir)
		closedir(dir);
	if (r == 0)
		r = write_secret(store, MANAGED_KEY_FILE, fresh, sizeof(fresh));
	snprintf(path, sizeof(path), "%s/%s.new", store, MANAGED_KEY_FILE);
	unlink(path);
	OPENSSL_cleanse(old, sizeof(old));
	OPENSSL_cleanse(fresh, sizeof(fresh));
	OPENSSL_cleanse(key, sizeof(key));
	if (r == 0)
		fprintf(stderr, "sandboxd: managed key replaced; %u image keys and %u pause keys re-wrapped\n", rewrapped,
			rewrapped_pause);
	return r;
}

/* ---- listing, deletion, retention ---- */

static cJSON *record_public(cJSON *rec)
{
	double exp = snapshot_expires_at(rec);

	if (exp)
		cJSON_AddNumberToObject(rec, "expires", exp);
	else
		cJSON_AddNullToObject(rec, "expires");
	return rec;
}

/* Calls fn for every image record in the store. */
static void for_each_record(const char *store, void (*fn)(void *ctx, const char *id, cJSON *rec), void *ctx)
{
	DIR *dir = opendir(store);
	struct dirent *e;

	while (dir && (e = readdir(dir))) {
		char id[40];
		cJSON *rec;

		if (strlen(e->d_name) != 2 * SIMAGE_ID_BYTES + 5 || strcmp(e->d_name + 2 * SIMAGE_ID_BYTES, ".json"))
			continue;
		snprintf(id, sizeof(id), "%.*s", (int)(2 * SIMAGE_ID_BYTES), e->d_name);
		rec = snapshot_record_load(store, id);
		if (rec)
			fn(ctx, id, rec);
	}
	if (dir)
		closedir(dir);
}

static void add_listed(void *ctx, const char *id, cJSON *rec)
{
	(void)id;
	cJSON_AddItemToArray(ctx, record_public(rec));
}

void *snapshots_list(struct sandboxd *d)
{
	cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "images");

	for_each_record(d->snapshot_dir, add_listed, arr);
	return o;
}

struct usage {
	uint64_t *images, *bytes;
};

static void add_usage(void *ctx, const char *id, cJSON *rec)
{
	struct usage *u = ctx;
	const cJSON *key = cJSON_GetObjectItemCaseSensitive(rec, "key");
	int kind = cJSON_IsString(key) && !strcmp(key->valuestring, "customer") ? 1 : 0;
	double size = snapshot_record_num(rec, "file_size", 0);

	(void)id;
	u->images[kind]++;
	u->bytes[kind] += size > 0 ? (uint64_t)size : 0;
	cJSON_Delete(rec);
}

void snapshot_store_usage(const char *store, uint64_t images[2], uint64_t bytes[2])
{
	struct usage u = {images, bytes};

	images[0] = images[1] = bytes[0] = bytes[1] = 0;
	for_each_record(store, add_usage, &u);
}

int snapshots_get(struct sandboxd *d, const char *id, void **out, char *err, size_t errlen)
{
	cJSON *rec = snapshot_record_load(d->snapshot_dir, id);

	if (!rec) {
		snprintf(err, errlen, "no image %.64s", id);
		return -ENOENT;
	}
	*out = record_public(rec);
	return 0;
}

static bool image_in_use(struct sandboxd *d, const char *id)
{
	for (struct sandbox *sb = d->sandboxes; sb; sb = sb->next)
		if (sb->state != SANDBOX_FINISHED)
			for (int i = 0; i < SANDBOX_MOUNT_SLOTS; i++)
				if (!strcmp(sb->mounts[i].image, id))
					return true;
	return false;
}

int snapshots_delete(struct sandboxd *d, const char *id, char *err, size_t errlen)
{
	cJSON *rec = snapshot_record_load(d->snapshot_dir, id);
	int r;

	if (!rec) {
		snprintf(err, errlen, "no image %.64s", id);
		return -ENOENT;
	}
	cJSON_Delete(rec);
	if (image_in_use(d, id)) {
		snprintf(err, errlen, "image %s is mounted in a running sandbox", id);
		return -EBUSY;
	}
	r = snapshot_store_remove(d->snapshot_dir, id);
	if (r < 0) {
		snprintf(err, errlen, "deleting image %s: %s", id, strerror(-r));
		return -EIO; /* whatever the store said, the daemon failed: 500 */
	}
	sv_info("image %s deleted", id);
	return 0;
}

struct sweep {
	struct sandboxd *d;
	double now;
	unsigned removed;
};

static void sweep_one(void *ctx, const char *id, cJSON *rec)
{
	struct sweep *s = ctx;
	double exp = snapshot_expires_at(rec);

	if (exp && exp <= s->now && !image_in_use(s->d, id) && snapshot_store_remove(s->d->snapshot_dir, id) == 0) {
		sv_info("image %s expired (last used %.0f s ago) and was deleted", id, s->now - snapshot_record_num(rec, "last_used", 0));
		s->removed++;
	}
	cJSON_Delete(rec);
}

void snapshots_sweep(struct sandboxd *d)
{
	struct sweep s = { .d = d, .now = sandboxd_wall_time() };

	for_each_record(d->snapshot_dir, sweep_one, &s);
}
