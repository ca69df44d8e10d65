#include "simage/file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "parse.h"

int simage_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return SIMAGE_E_TRUNCATED;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int simage_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

void simage_hex(const uint8_t *in, size_t len, char *out)
{
	sv_hex_encode(in, len, out);
}

void simage_id_hex(const uint8_t id[SIMAGE_ID_BYTES], char out[2 * SIMAGE_ID_BYTES + 1])
{
	simage_hex(id, SIMAGE_ID_BYTES, out);
}

static int read_raw(void *ctx, void *buf, size_t len, uint64_t off)
{
	return simage_pread_full(*(const int *)ctx, buf, len, off);
}

int simage_write(int raw_fd, uint64_t disk_size, int out_fd, const uint8_t *ikm, size_t ikm_len,
		 const struct simage_write_opts *opts, struct simage_header *h,
		 struct simage_write_stats *stats)
{
	return simage_write_from(read_raw, &raw_fd, disk_size, out_fd, ikm, ikm_len, opts, h, stats);
}

int simage_write_from(int (*fill)(void *ctx, void *buf, size_t len, uint64_t off), void *fill_ctx,
		      uint64_t disk_size, int out_fd, const uint8_t *ikm, size_t ikm_len,
		      const struct simage_write_opts *opts, struct simage_header *h,
		      struct simage_write_stats *stats)
{
	struct simage_codec codec = {0};
	struct simage_keys keys;
	uint8_t header[SIMAGE_HEADER_SIZE], *table = NULL, *plain = NULL, *sealed = NULL;
	uint64_t chunk, pos;
	int r;

	memset(h, 0, sizeof(*h));
	memset(stats, 0, sizeof(*stats));
	h->version = SIMAGE_VERSION;
	h->flags = opts->flags;
	h->chunk_shift = opts->chunk_shift ? opts->chunk_shift : SIMAGE_CHUNK_SHIFT_DEFAULT;
	h->disk_size = disk_size;
	h->created = (uint64_t)time(NULL);
	if ((h->flags & ~SIMAGE_KNOWN_FLAGS) || simage_header_layout(h) < 0)
		return -EINVAL;
	r = simage_random(h->image_id, sizeof(h->image_id));
	if (r == 0)
		r = simage_random(h->salt, sizeof(h->salt));
	if (r < 0)
		return r;
	r = simage_derive_keys(ikm, ikm_len, h, &keys);
	if (r < 0)
		return r;
	memcpy(h->key_check, keys.check, SIMAGE_CHECK_BYTES);
	chunk = simage_chunk_size(h);
	r = simage_codec_init(&codec, chunk);
	table = calloc(h->chunk_count, SIMAGE_ENTRY_SIZE);
	plain = malloc(chunk);
	sealed = malloc(simage_sealed_max(chunk));
	if (r < 0 || !table || !plain || !sealed) {
		r = r < 0 ? r : -ENOMEM;
		goto out;
	}
	if (ftruncate(out_fd, 0) < 0) {
		r = -errno;
		goto out;
	}
	pos = h->data_offset;
	for (uint64_t i = 0; i < h->chunk_count; i++) {
		uint64_t len = simage_chunk_len(h, i);
		struct simage_entry e;

		r = fill(fill_ctx, plain, len, i * chunk);
		if (r < 0)
			goto out;
		r = simage_seal_chunk(&codec, h, &keys, i, plain, sealed, &e);
		if (r < 0)
			goto out;
		if (!(e.flags & SIMAGE_CHUNK_HOLE)) {
			e.offset = pos;
			r = simage_pwrite_full(out_fd, sealed, e.length, pos);
			if (r < 0)
				goto out;
			pos += e.length;
		} else {
			stats->holes++;
		}
		if (e.flags & SIMAGE_CHUNK_COMPRESSED)
			stats->compressed++;
		simage_entry_encode(&e, table + i * SIMAGE_ENTRY_SIZE);
		stats->chunks++;
		if (opts->progress)
			opts->progress(opts->progress_ctx, i + 1, h->chunk_count);
	}
	h->file_size = pos;
	simage_header_encode(h, header);
	r = simage_compute_mac(&keys, header, table, h->chunk_count * SIMAGE_ENTRY_SIZE, h->mac);
	if (r < 0)
		goto out;
	simage_header_encode(h, header);
	r = simage_pwrite_full(out_fd, table, h->chunk_count * SIMAGE_ENTRY_SIZE, h->table_offset);
	if (r == 0)
		r = simage_pwrite_full(out_fd, header, sizeof(header), 0);
	if (r == 0 && ftruncate(out_fd, (off_t)pos) < 0)
		r = -errno;
	if (r == 0 && fsync(out_fd) < 0)
		r = -errno;
	stats->file_size = pos;
out:
	simage_keys_wipe(&keys);
	simage_codec_destroy(&codec);
	free(table);
	/* The plaintext may be a guest's memory: nothing of it stays in freed heap. */
	if (plain)
		OPENSSL_cleanse(plain, chunk);
	free(plain);
	free(sealed);
	return r;
}

static int read_header(int fd, struct simage_header *h, uint8_t raw[SIMAGE_HEADER_SIZE])
{
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size < SIMAGE_HEADER_SIZE) {
		uint8_t magic[8];

		if (st.st_size >= 8 && simage_pread_full(fd, magic, 8, 0) == 0 && memcmp(magic, SIMAGE_MAGIC, 8))
			return SIMAGE_E_MAGIC;
		return SIMAGE_E_TRUNCATED;
	}
	r = simage_pread_full(fd, raw, SIMAGE_HEADER_SIZE, 0);
	if (r == 0)
		r = simage_header_decode(raw, SIMAGE_HEADER_SIZE, h);
	if (r == 0 && (uint64_t)st.st_size != h->file_size)
		r = (uint64_t)st.st_size < h->file_size ? SIMAGE_E_TRUNCATED : SIMAGE_E_FIELD;
	return r;
}

int simage_peek(int fd, struct simage_header *h)
{
	uint8_t raw[SIMAGE_HEADER_SIZE];

	return read_header(fd, h, raw);
}

static int reader_finish(struct simage_reader *r, const uint8_t raw[SIMAGE_HEADER_SIZE])
{
	uint8_t *table, mac[SIMAGE_MAC_BYTES];
	size_t table_len = r->h.chunk_count * SIMAGE_ENTRY_SIZE;
	int e;

	table = malloc(table_len ? table_len : 1);
	r->table = calloc(r->h.chunk_count ? r->h.chunk_count : 1, sizeof(*r->table));
	if (!table || !r->table) {
		free(table);
		return -ENOMEM;
	}
	e = simage_pread_full(r->fd, table, table_len, r->h.table_offset);
	if (e == 0)
		e = simage_compute_mac(&r->keys, raw, table, table_len, mac);
	/* Authenticate before parsing: a forged table never reaches the checks below. */
	if (e == 0 && !simage_mac_equal(mac, r->h.mac))
		e = SIMAGE_E_AUTH;
	if (e == 0)
		e = simage_table_decode(&r->h, table, table_len, r->table);
	free(table);
	if (e == 0)
		e = simage_codec_init(&r->codec, simage_chunk_size(&r->h));
	if (e == 0) {
		r->sealed = malloc(simage_sealed_max(simage_chunk_size(&r->h)));
		if (!r->sealed)
			e = -ENOMEM;
	}
	return e;
}

int simage_reader_open(struct simage_reader *r, int fd, const uint8_t *ikm, size_t ikm_len)
{
	uint8_t raw[SIMAGE_HEADER_SIZE];
	int e;

	memset(r, 0, sizeof(*r));
	r->fd = fd;
	e = read_header(fd, &r->h, raw);
	if (e == 0 && !ikm)
		e = SIMAGE_E_NOKEY;
	if (e == 0)
		e = simage_derive_keys(ikm, ikm_len, &r->h, &r->keys);
	if (e == 0 && !simage_key_matches(&r->h, &r->keys))
		e = SIMAGE_E_KEY;
	if (e == 0)
		e = reader_finish(r, raw);
	if (e < 0)
		simage_reader_close(r);
	return e;
}

int simage_reader_open_keys(struct simage_reader *r, int fd, const struct simage_keys *keys)
{
	uint8_t raw[SIMAGE_HEADER_SIZE];
	int e;

	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->keys = *keys;
	e = read_header(fd, &r->h, raw);
	if (e == 0)
		e = reader_finish(r, raw);
	if (e < 0)
		simage_reader_close(r);
	return e;
}

int simage_reader_read_chunk(struct simage_reader *r, uint64_t index, uint8_t *plain)
{
	const struct simage_entry *e;
	int err;

	if (index >= r->h.chunk_count)
		return -EINVAL;
	e = &r->table[index];
	if (!(e->flags & SIMAGE_CHUNK_HOLE)) {
		err = simage_pread_full(r->fd, r->sealed, e->length, e->offset);
		if (err < 0)
			return err;
	}
	return simage_open_chunk(&r->codec, &r->h, &r->keys, index, e, r->sealed, plain);
}

void simage_reader_close(struct simage_reader *r)
{
	simage_keys_wipe(&r->keys);
	simage_codec_destroy(&r->codec);
	free(r->table);
	free(r->sealed);
	r->table = NULL;
	r->sealed = NULL;
}
