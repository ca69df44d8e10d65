#include "simage/format.h"

#include <string.h>

/* Header field offsets (docs/image-format.md). */
enum {
	OFF_MAGIC = 0,
	OFF_VERSION = 8,
	OFF_HEADER_SIZE = 12,
	OFF_FLAGS = 16,
	OFF_CHUNK_SHIFT = 20,
	OFF_DISK_SIZE = 24,
	OFF_CHUNK_COUNT = 32,
	OFF_TABLE_OFFSET = 40,
	OFF_DATA_OFFSET = 48,
	OFF_FILE_SIZE = 56,
	OFF_CREATED = 64,
	OFF_IMAGE_ID = 72,
	OFF_SALT = OFF_IMAGE_ID + SIMAGE_ID_BYTES,
	OFF_KEY_CHECK = OFF_SALT + SIMAGE_SALT_BYTES,
	OFF_RESERVED = OFF_KEY_CHECK + SIMAGE_CHECK_BYTES,
};

_Static_assert(OFF_RESERVED <= SIMAGE_MAC_OFFSET, "header fields overlap the MAC");

const char *simage_strerror(int err)
{
	switch (err) {
	case SIMAGE_E_TRUNCATED:
		return "the image is truncated";
	case SIMAGE_E_MAGIC:
		return "not a sandvm snapshot image";
	case SIMAGE_E_VERSION:
		return "image format version not supported";
	case SIMAGE_E_FIELD:
		return "the image header is corrupt";
	case SIMAGE_E_TABLE:
		return "the image's chunk table is corrupt";
	case SIMAGE_E_KEY:
		return "the key does not match this image";
	case SIMAGE_E_AUTH:
		return "the image failed authentication (tampered or corrupt)";
	case SIMAGE_E_NOKEY:
		return "the image is encrypted with a customer key and none was given";
	default:
		return "image error";
	}
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

uint64_t simage_chunk_len(const struct simage_header *h, uint64_t index)
{
	uint64_t size = simage_chunk_size(h);
	uint64_t start = index * size;

	if (index >= h->chunk_count || start >= h->disk_size)
		return 0;
	return h->disk_size - start < size ? h->disk_size - start : size;
}

uint64_t simage_sealed_max(uint64_t chunk_len)
{
	return chunk_len + SIMAGE_TAG_BYTES;
}

int simage_header_layout(struct simage_header *h)
{
	uint64_t size;

	if (h->chunk_shift < SIMAGE_CHUNK_SHIFT_MIN || h->chunk_shift > SIMAGE_CHUNK_SHIFT_MAX ||
	    h->disk_size == 0 || h->disk_size % 512 || h->disk_size > SIMAGE_MAX_DISK_SIZE)
		return SIMAGE_E_FIELD;
	size = simage_chunk_size(h);
	h->chunk_count = (h->disk_size + size - 1) / size;
	if (h->chunk_count > SIMAGE_MAX_CHUNKS)
		return SIMAGE_E_FIELD;
	h->table_offset = SIMAGE_HEADER_SIZE;
	h->data_offset = h->table_offset + h->chunk_count * SIMAGE_ENTRY_SIZE;
	return 0;
}

void simage_header_encode(const struct simage_header *h, uint8_t out[SIMAGE_HEADER_SIZE])
{
	memset(out, 0, SIMAGE_HEADER_SIZE);
	memcpy(out + OFF_MAGIC, SIMAGE_MAGIC, 8);
	put32(out + OFF_VERSION, h->version);
	put32(out + OFF_HEADER_SIZE, SIMAGE_HEADER_SIZE);
	put32(out + OFF_FLAGS, h->flags);
	put32(out + OFF_CHUNK_SHIFT, h->chunk_shift);
	put64(out + OFF_DISK_SIZE, h->disk_size);
	put64(out + OFF_CHUNK_COUNT, h->chunk_count);
	put64(out + OFF_TABLE_OFFSET, h->table_offset);
	put64(out + OFF_DATA_OFFSET, h->data_offset);
	put64(out + OFF_FILE_SIZE, h->file_size);
	put64(out + OFF_CREATED, h->created);
	memcpy(out + OFF_IMAGE_ID, h->image_id, SIMAGE_ID_BYTES);
	memcpy(out + OFF_SALT, h->salt, SIMAGE_SALT_BYTES);
	memcpy(out + OFF_KEY_CHECK, h->key_check, SIMAGE_CHECK_BYTES);
	memcpy(out + SIMAGE_MAC_OFFSET, h->mac, SIMAGE_MAC_BYTES);
}

int simage_header_decode(const uint8_t *buf, size_t len, struct simage_header *h)
{
	struct simage_header want;

	memset(h, 0, sizeof(*h));
	if (len < 8 || memcmp(buf + OFF_MAGIC, SIMAGE_MAGIC, 8) != 0)
		return len < 8 ? SIMAGE_E_TRUNCATED : SIMAGE_E_MAGIC;
	if (len < SIMAGE_HEADER_SIZE)
		return SIMAGE_E_TRUNCATED;
	h->version = get32(buf + OFF_VERSION);
	if (h->version != SIMAGE_VERSION)
		return SIMAGE_E_VERSION;
	if (get32(buf + OFF_HEADER_SIZE) != SIMAGE_HEADER_SIZE)
		return SIMAGE_E_FIELD;
	h->flags = get32(buf + OFF_FLAGS);
	h->chunk_shift = get32(buf + OFF_CHUNK_SHIFT);
	h->disk_size = get64(buf + OFF_DISK_SIZE);
	h->chunk_count = get64(buf + OFF_CHUNK_COUNT);
	h->table_offset = get64(buf + OFF_TABLE_OFFSET);
	h->data_offset = get64(buf + OFF_DATA_OFFSET);
	h->file_size = get64(buf + OFF_FILE_SIZE);
	h->created = get64(buf + OFF_CREATED);
	memcpy(h->image_id, buf + OFF_IMAGE_ID, SIMAGE_ID_BYTES);
	memcpy(h->salt, buf + OFF_SALT, SIMAGE_SALT_BYTES);
	memcpy(h->key_check, buf + OFF_KEY_CHECK, SIMAGE_CHECK_BYTES);
	memcpy(h->mac, buf + SIMAGE_MAC_OFFSET, SIMAGE_MAC_BYTES);
	if (h->flags & ~SIMAGE_KNOWN_FLAGS)
		return SIMAGE_E_FIELD;
	/* Reserved bytes are zero in version 1. */
	for (size_t i = OFF_RESERVED; i < SIMAGE_MAC_OFFSET; i++)
		if (buf[i])
			return SIMAGE_E_FIELD;
	want = *h;
	if (simage_header_layout(&want) < 0 || want.chunk_count != h->chunk_count ||
	    want.table_offset != h->table_offset || want.data_offset != h->data_offset ||
	    h->file_size < h->data_offset)
		return SIMAGE_E_FIELD;
	return 0;
}

void simage_entry_encode(const struct simage_entry *e, uint8_t out[SIMAGE_ENTRY_SIZE])
{
	put64(out, e->offset);
	put32(out + 8, e->length);
	put32(out + 12, e->flags);
}

int simage_table_decode(const struct simage_header *h, const uint8_t *buf, size_t len,
			struct simage_entry *entries)
{
	uint64_t next = h->data_offset;

	if (h->chunk_count > SIMAGE_MAX_CHUNKS || len / SIMAGE_ENTRY_SIZE < h->chunk_count)
		return SIMAGE_E_TRUNCATED;
	for (uint64_t i = 0; i < h->chunk_count; i++) {
		const uint8_t *p = buf + i * SIMAGE_ENTRY_SIZE;
		struct simage_entry *e = &entries[i];
		uint64_t plain = simage_chunk_len(h, i);

		e->offset = get64(p);
		e->length = get32(p + 8);
		e->flags = get32(p + 12);
		if (e->flags & ~SIMAGE_CHUNK_KNOWN_FLAGS)
			return SIMAGE_E_TABLE;
		if (e->flags & SIMAGE_CHUNK_HOLE) {
			if (e->flags != SIMAGE_CHUNK_HOLE || e->offset || e->length)
				return SIMAGE_E_TABLE;
			continue;
		}
		/* Sealed chunks follow each other with no gap, in index order. */
		if (e->offset != next || e->length <= SIMAGE_TAG_BYTES)
			return SIMAGE_E_TABLE;
		if (e->flags & SIMAGE_CHUNK_COMPRESSED) {
			if (e->length - SIMAGE_TAG_BYTES >= plain)
				return SIMAGE_E_TABLE;
		} else if (e->length != simage_sealed_max(plain)) {
			return SIMAGE_E_TABLE;
		}
		if (e->length > h->file_size - next)
			return SIMAGE_E_TABLE;
		next += e->length;
	}
	return next == h->file_size ? 0 : SIMAGE_E_TABLE;
}
