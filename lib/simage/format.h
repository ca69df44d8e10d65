#ifndef SANDVM_LIB_SIMAGE_FORMAT_H
#define SANDVM_LIB_SIMAGE_FORMAT_H

/*
 * The on-disk layout of an encrypted snapshot image, version 1
 * (docs/image-format.md is the contract): a 512-byte header, a table of one
 * 16-byte entry per chunk, then the sealed chunks back to back in index
 * order. All integers little-endian.
 *
 * Everything here is pure: encoders and decoders over caller buffers, no
 * I/O, no crypto. A decoded header or table is only structurally valid;
 * its authenticity (the MAC over header and table) is checked by the
 * crypto layer with the key.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIMAGE_MAGIC "SANDVMIM"
#define SIMAGE_VERSION 1u
#define SIMAGE_HEADER_SIZE 512u
#define SIMAGE_ENTRY_SIZE 16u
#define SIMAGE_ID_BYTES 16u
#define SIMAGE_SALT_BYTES 32u
#define SIMAGE_CHECK_BYTES 32u
#define SIMAGE_MAC_BYTES 32u
#define SIMAGE_TAG_BYTES 16u
/* The header bytes the MAC covers: everything before the MAC itself. */
#define SIMAGE_MAC_OFFSET (SIMAGE_HEADER_SIZE - SIMAGE_MAC_BYTES)
#define SIMAGE_CHUNK_SHIFT_MIN 16u /* 64 KiB */
#define SIMAGE_CHUNK_SHIFT_MAX 22u /* 4 MiB */
#define SIMAGE_CHUNK_SHIFT_DEFAULT 18u /* 256 KiB */
/* Caps that keep a hostile header from asking for absurd allocations. */
#define SIMAGE_MAX_CHUNKS (1ull << 22)
#define SIMAGE_MAX_DISK_SIZE (1ull << 40) /* 1 TiB */

/* Header flags */
#define SIMAGE_FLAG_MANAGED 0x1u /* key from the daemon's managed key store, not a customer key */
#define SIMAGE_KNOWN_FLAGS SIMAGE_FLAG_MANAGED

/* Chunk entry flags */
#define SIMAGE_CHUNK_HOLE 0x1u       /* all zero; nothing stored (offset and length 0) */
#define SIMAGE_CHUNK_COMPRESSED 0x2u /* the plaintext was zstd-compressed before sealing */
#define SIMAGE_CHUNK_KNOWN_FLAGS (SIMAGE_CHUNK_HOLE | SIMAGE_CHUNK_COMPRESSED)

struct simage_header {
	uint32_t version;
	uint32_t flags;
	uint32_t chunk_shift;
	uint64_t disk_size;   /* bytes the guest sees; a multiple of 512 */
	uint64_t chunk_count; /* ceil(disk_size / chunk size) */
	uint64_t table_offset; /* = SIMAGE_HEADER_SIZE */
	uint64_t data_offset;  /* = table_offset + chunk_count * SIMAGE_ENTRY_SIZE */
	uint64_t file_size;    /* the whole image: a shorter file is truncated */
	uint64_t created;      /* unix seconds, informational */
	uint8_t image_id[SIMAGE_ID_BYTES];
	uint8_t salt[SIMAGE_SALT_BYTES];
	uint8_t key_check[SIMAGE_CHECK_BYTES];
	uint8_t mac[SIMAGE_MAC_BYTES]; /* HMAC-SHA256 over header bytes [0, 480) and the table */
};

struct simage_entry {
	uint64_t offset; /* of the sealed chunk in the file */
	uint32_t length; /* sealed bytes: ciphertext and tag */
	uint32_t flags;
};

/* Errors, as negative numbers; simage_strerror names them for people. */
enum {
	SIMAGE_E_TRUNCATED = -1000,
	SIMAGE_E_MAGIC = -1001,
	SIMAGE_E_VERSION = -1002,
	SIMAGE_E_FIELD = -1003, /* a header field out of range or inconsistent */
	SIMAGE_E_TABLE = -1004, /* a chunk entry out of range, overlapping or out of order */
	SIMAGE_E_KEY = -1005,   /* the key does not match the image */
	SIMAGE_E_AUTH = -1006,  /* header, table or a chunk failed authentication: tampered */
	SIMAGE_E_NOKEY = -1007, /* a customer-key image opened without a key */
};

const char *simage_strerror(int err);

static inline uint64_t simage_chunk_size(const struct simage_header *h)
{
	return 1ull << h->chunk_shift;
}

/* Plaintext bytes of chunk i: the chunk size, or less for the last one. */
uint64_t simage_chunk_len(const struct simage_header *h, uint64_t index);

/* The largest sealed length a chunk of chunk_len plaintext bytes may have. */
uint64_t simage_sealed_max(uint64_t chunk_len);

/*
 * Fills the derived fields (chunk_count, table_offset, data_offset) from
 * disk_size and chunk_shift; 0 or SIMAGE_E_FIELD when those are out of range.
 */
int simage_header_layout(struct simage_header *h);

void simage_header_encode(const struct simage_header *h, uint8_t out[SIMAGE_HEADER_SIZE]);
/*
 * Decodes and checks a header from the first len bytes of an image:
 * magic, version, known flags, chunk size, sizes and offsets consistent.
 */
int simage_header_decode(const uint8_t *buf, size_t len, struct simage_header *h);

void simage_entry_encode(const struct simage_entry *e, uint8_t out[SIMAGE_ENTRY_SIZE]);
/*
 * Decodes the whole chunk table (h->chunk_count entries from buf) into
 * entries and checks it against the header: holes are empty, stored
 * chunks lie in [data_offset, file_size) back to back in index order with
 * plausible lengths, and the last one ends exactly at file_size.
 */
int simage_table_decode(const struct simage_header *h, const uint8_t *buf, size_t len,
			struct simage_entry *entries);

#endif
