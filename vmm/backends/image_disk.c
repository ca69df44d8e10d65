#include "backends/image_disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "simage/file.h"
#include "virtio/iov.h"

/* Plaintext chunks kept decrypted: enough for a guest's readahead window. */
#define CACHE_SLOTS 16u
/* Authentication failures logged one by one before they are only counted. */
#define LOGGED_FAILURES 20u

struct cache_slot {
	uint64_t index;
	uint64_t used; /* LRU clock */
	bool valid;
	uint8_t *data;
};

struct image_disk {
	struct blk_backend base;
	int fd;
	struct simage_reader rd;
	int overlay_fd;
	uint8_t overlay_key[SIMAGE_KEY_BYTES];
	/* Per chunk: 0 when not in the overlay, else the counter its last seal used. */
	uint64_t *overlay_nonce;
	uint64_t counter;
	uint64_t clock;
	unsigned long auth_failures;
	struct cache_slot cache[CACHE_SLOTS];
	char label[64];
};

static const struct blk_backend_ops image_disk_ops;

static uint64_t chunk_size(const struct image_disk *d)
{
	return simage_chunk_size(&d->rd.h);
}

/* Overlay chunks: their own label, index and length, under the ephemeral key. */
static void overlay_aad(uint64_t index, uint32_t len, uint8_t aad[20])
{
	memcpy(aad, "SVMOVL01", 8);
	for (int i = 0; i < 8; i++)
		aad[8 + i] = (uint8_t)(index >> (8 * i));
	for (int i = 0; i < 4; i++)
		aad[16 + i] = (uint8_t)(len >> (8 * i));
}

static void overlay_nonce(uint64_t counter, uint8_t nonce[SIMAGE_NONCE_BYTES])
{
	memset(nonce, 0, SIMAGE_NONCE_BYTES);
	for (int i = 0; i < 8; i++)
		nonce[i] = (uint8_t)(counter >> (8 * i));
}

static uint64_t overlay_offset(const struct image_disk *d, uint64_t index)
{
	return index * (chunk_size(d) + SIMAGE_TAG_BYTES);
}

static void auth_failed(struct image_disk *d, uint64_t index, const char *where)
{
	d->auth_failures++;
	if (d->auth_failures <= LOGGED_FAILURES)
		sv_warn("%s: chunk %llu of the %s failed authentication: I/O error to the guest%s", d->label,
			(unsigned long long)index, where,
			d->auth_failures == LOGGED_FAILURES ? " (further failures only counted)" : "");
}

/* Fills slot with chunk index's plaintext: from the overlay if written, else the image. */
static int load(struct image_disk *d, struct cache_slot *slot, uint64_t index)
{
	uint64_t len = simage_chunk_len(&d->rd.h, index);
	int r;

	slot->valid = false;
	if (d->overlay_nonce[index]) {
		uint8_t aad[20], nonce[SIMAGE_NONCE_BYTES];

		r = simage_pread_full(d->overlay_fd, d->rd.sealed, len + SIMAGE_TAG_BYTES,
				      overlay_offset(d, index));
		if (r < 0)
			return r;
		overlay_aad(index, (uint32_t)len, aad);
		overlay_nonce(d->overlay_nonce[index], nonce);
		r = simage_gcm_open(&d->rd.codec, d->overlay_key, nonce, aad, sizeof(aad), d->rd.sealed,
				    len + SIMAGE_TAG_BYTES, slot->data);
		if (r == SIMAGE_E_AUTH)
			auth_failed(d, index, "overlay");
	} else {
		r = simage_reader_read_chunk(&d->rd, index, slot->data);
		if (r == SIMAGE_E_AUTH || r == SIMAGE_E_TABLE)
			auth_failed(d, index, "image");
	}
	if (r < 0)
		return r <= SIMAGE_E_TRUNCATED ? -EIO : r; /* format errors are I/O errors to the guest */
	slot->index = index;
	slot->valid = true;
	return 0;
}

/* The cached slot of chunk index, loaded unless the caller overwrites it whole. */
static int get_slot(struct image_disk *d, uint64_t index, bool whole_write, struct cache_slot **out)
{
	struct cache_slot *victim = &d->cache[0];
	int r;

	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		struct cache_slot *s = &d->cache[i];

		if (s->valid && s->index == index) {
			s->used = ++d->clock;
			*out = s;
			return 0;
		}
		if (!s->valid || (victim->valid && s->used < victim->used))
			victim = s;
	}
	if (whole_write) {
		victim->valid = true;
		victim->index = index;
	} else {
		r = load(d, victim, index);
		if (r < 0)
			return r;
	}
	victim->used = ++d->clock;
	*out = victim;
	return 0;
}

/* Seals the slot's chunk into the overlay under a fresh nonce. */
static int store(struct image_disk *d, struct cache_slot *slot)
{
	uint64_t len = simage_chunk_len(&d->rd.h, slot->index);
	uint8_t aad[20], nonce[SIMAGE_NONCE_BYTES];
	uint64_t counter = ++d->counter;
	int r;

	overlay_aad(slot->index, (uint32_t)len, aad);
	overlay_nonce(counter, nonce);
	r = simage_gcm_seal(&d->rd.codec, d->overlay_key, nonce, aad, sizeof(aad), slot->data, len,
			    d->rd.sealed);
	if (r == 0)
		r = simage_pwrite_full(d->overlay_fd, d->rd.sealed, len + SIMAGE_TAG_BYTES,
				       overlay_offset(d, slot->index));
	if (r < 0) {
		/* The overlay may now hold half a chunk: forget the cached copy too. */
		slot->valid = false;
		return r;
	}
	d->overlay_nonce[slot->index] = counter;
	return 0;
}

static int transfer(struct image_disk *d, uint64_t offset, const struct iovec *iov, int iovcnt,
		    bool write)
{
	uint64_t size = chunk_size(d), done = 0, total = 0;
	int r;

	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (offset > d->base.size || total > d->base.size - offset)
		return -EINVAL;
	while (done < total) {
		uint64_t index = (offset + done) / size, at = (offset + done) % size;
		uint64_t n = size - at < total - done ? size - at : total - done;
		bool whole = write && at == 0 && n == simage_chunk_len(&d->rd.h, index);
		struct cache_slot *slot;

		r = get_slot(d, index, whole, &slot);
		if (r < 0)
			return r;
		if (write) {
			if (iov_gather(iov, (unsigned)iovcnt, done, slot->data + at, n) < 0) {
				slot->valid = false;
				return -EINVAL;
			}
			r = store(d, slot);
			if (r < 0)
				return r;
		} else if (iov_scatter(iov, (unsigned)iovcnt, done, slot->data + at, n) < 0) {
			return -EINVAL;
		}
		done += n;
	}
	return 0;
}

static int image_read(struct blk_backend *b, uint64_t offset, const struct iovec *iov, int iovcnt)
{
	return transfer((struct image_disk *)b, offset, iov, iovcnt, false);
}

static int image_write(struct blk_backend *b, uint64_t offset, const struct iovec *iov, int iovcnt)
{
	return transfer((struct image_disk *)b, offset, iov, iovcnt, true);
}

/* The overlay lives and dies with this process: nothing to make durable. */
static int image_flush(struct blk_backend *b)
{
	(void)b;
	return 0;
}

static void image_destroy(struct blk_backend *b)
{
	struct image_disk *d = (struct image_disk *)b;

	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		if (d->cache[i].data)
			memset(d->cache[i].data, 0, chunk_size(d));
		free(d->cache[i].data);
	}
	simage_reader_close(&d->rd);
	memset(d->overlay_key, 0, sizeof(d->overlay_key));
	free(d->overlay_nonce);
	if (d->overlay_fd >= 0)
		close(d->overlay_fd);
	if (d->fd >= 0)
		close(d->fd);
	free(d);
}

static const struct blk_backend_ops image_disk_ops = {
	.read = image_read,
	.write = image_write,
	.flush = image_flush,
	.destroy = image_destroy,
};

int image_disk_create(struct blk_backend **out, const char *path, const struct simage_keys *keys,
		      const char *overlay_dir, const char *label)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), ofd;

	if (fd < 0)
		return -errno;
	/* Unlinked from birth: the overlay never outlives the VMM. */
	ofd = open(overlay_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (ofd < 0) {
		ofd = -errno;
		close(fd);
		return ofd;
	}
	return image_disk_create_fd(out, fd, keys, ofd, label);
}

int image_disk_create_fd(struct blk_backend **out, int image_fd, const struct simage_keys *keys, int overlay_fd,
			 const char *label)
{
	struct image_disk *d = calloc(1, sizeof(*d));
	struct stat st;
	int r, fl;

	if (!d) {
		close(image_fd);
		close(overlay_fd);
		return -ENOMEM;
	}
	d->overlay_fd = -1;
	snprintf(d->label, sizeof(d->label), "%s", label);
	d->fd = image_fd;
	fl = fcntl(overlay_fd, F_GETFL);
	r = fl < 0 || fstat(overlay_fd, &st) < 0 ? -errno : 0;
	if (r == 0 && (!S_ISREG(st.st_mode) || (fl & O_PATH) || (fl & O_ACCMODE) != O_RDWR))
		r = -EBADF;
	if (r == 0)
		r = simage_reader_open_keys(&d->rd, d->fd, keys);
	if (r < 0) {
		close(overlay_fd);
		close(d->fd);
		free(d);
		return r;
	}
	d->base.ops = &image_disk_ops;
	d->base.size = d->rd.h.disk_size;
	d->overlay_nonce = calloc(d->rd.h.chunk_count, sizeof(*d->overlay_nonce));
	r = d->overlay_nonce ? simage_random(d->overlay_key, sizeof(d->overlay_key)) : -ENOMEM;
	for (unsigned i = 0; r == 0 && i < CACHE_SLOTS; i++) {
		d->cache[i].data = malloc(chunk_size(d));
		if (!d->cache[i].data)
			r = -ENOMEM;
	}
	if (r == 0)
		d->overlay_fd = overlay_fd;
	else
		close(overlay_fd);
	if (r < 0) {
		image_destroy(&d->base);
		return r;
	}
	*out = &d->base;
	return 0;
}

unsigned long image_disk_auth_failures(const struct blk_backend *b)
{
	return image_disk_is(b) ? ((const struct image_disk *)b)->auth_failures : 0;
}

int image_disk_is(const struct blk_backend *b)
{
	return b && b->ops == &image_disk_ops;
}
