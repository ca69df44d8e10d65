#ifndef SANDVM_LIB_SIMAGE_CRYPTO_H
#define SANDVM_LIB_SIMAGE_CRYPTO_H

/*
 * The cryptography of snapshot images (docs/image-format.md): keys derived
 * with HKDF-SHA256 from the customer's key (or a managed one) and the
 * image's salt, HMAC-SHA256 over header and chunk table, and chunks
 * zstd-compressed then sealed with AES-256-GCM, the image id and the chunk
 * index bound into the associated data.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "simage/format.h"

#define SIMAGE_KEY_BYTES 32u
#define SIMAGE_IKM_MIN 16u  /* customer keys: 16..512 bytes */
#define SIMAGE_IKM_MAX 512u
#define SIMAGE_NONCE_BYTES 12u

struct simage_keys {
	uint8_t data[SIMAGE_KEY_BYTES]; /* AES-256-GCM key of the chunks */
	uint8_t meta[SIMAGE_KEY_BYTES]; /* HMAC key of header and table */
	uint8_t check[SIMAGE_CHECK_BYTES]; /* the key-check value stored in the header */
};

/* Derives the keys of the image h (its salt and id) from ikm; 0 or -EINVAL/-EIO. */
int simage_derive_keys(const uint8_t *ikm, size_t ikm_len, const struct simage_header *h,
		       struct simage_keys *keys);
/* Whether keys' check value is the header's, in constant time. */
int simage_key_matches(const struct simage_header *h, const struct simage_keys *keys);
/* HMAC-SHA256 over the encoded header's first SIMAGE_MAC_OFFSET bytes and the table. */
int simage_compute_mac(const struct simage_keys *keys, const uint8_t *header, const uint8_t *table,
		       size_t table_len, uint8_t mac[SIMAGE_MAC_BYTES]);
/* Constant-time comparison of two MACs: 1 when equal. */
int simage_mac_equal(const uint8_t *a, const uint8_t *b);
void simage_keys_wipe(struct simage_keys *keys);
/* Fills buf with random bytes from the kernel; 0 or -errno. */
int simage_random(void *buf, size_t len);

/* Per-thread working state: cipher context, zstd contexts, a scratch chunk. */
struct simage_codec {
	void *cipher; /* EVP_CIPHER_CTX */
	void *cctx;   /* ZSTD_CCtx */
	void *dctx;   /* ZSTD_DCtx */
	uint8_t *scratch;
	size_t scratch_len;
	/* Whether scratch ever held a chunk: one that never did is not wiped (nor faulted in to be). */
	bool scratch_used;
};

int simage_codec_init(struct simage_codec *c, uint64_t chunk_size);
void simage_codec_destroy(struct simage_codec *c);

/* AES-256-GCM with caller-built nonce and associated data; out gets len + 16 bytes. */
int simage_gcm_seal(struct simage_codec *c, const uint8_t key[SIMAGE_KEY_BYTES],
		    const uint8_t nonce[SIMAGE_NONCE_BYTES], const uint8_t *aad, size_t aad_len,
		    const uint8_t *in, size_t len, uint8_t *out);
/* The reverse; SIMAGE_E_AUTH when the tag does not verify. len counts the tag. */
int simage_gcm_open(struct simage_codec *c, const uint8_t key[SIMAGE_KEY_BYTES],
		    const uint8_t nonce[SIMAGE_NONCE_BYTES], const uint8_t *aad, size_t aad_len,
		    const uint8_t *in, size_t len, uint8_t *out);

/*
 * Whether zstd is worth trying on a chunk of len plaintext bytes: a sample
 * of SIMAGE_SAMPLE_WINDOWS windows of SIMAGE_SAMPLE_WINDOW bytes, evenly
 * spread, is compressed at the writer's level and must shrink by 1/32.
 * Random or already compressed data (zstd's costliest case: it scans the
 * whole chunk to find nothing) is then sealed as it is. The price: a chunk
 * whose windows all fall on incompressible bytes while the rest would
 * compress is stored uncompressed; it still reads back the same, only
 * larger. Chunks of at most 4 samples' size are always tried.
 */
#define SIMAGE_SAMPLE_WINDOWS 16u
#define SIMAGE_SAMPLE_WINDOW 256u
bool simage_worth_compressing(struct simage_codec *c, const uint8_t *plain, size_t len);

/*
 * Seals chunk `index` of plaintext plain (simage_chunk_len bytes): an
 * all-zero chunk becomes a hole, a chunk zstd shrinks (tried when
 * simage_worth_compressing says so) is stored compressed.
 * out has room for simage_sealed_max(len); fills entry's length and flags.
 */
int simage_seal_chunk(struct simage_codec *c, const struct simage_header *h,
		      const struct simage_keys *keys, uint64_t index, const uint8_t *plain,
		      uint8_t *out, struct simage_entry *entry);
/*
 * Opens sealed chunk `index` (entry->length bytes at sealed) into plain,
 * exactly simage_chunk_len bytes; SIMAGE_E_AUTH for anything tampered.
 */
int simage_open_chunk(struct simage_codec *c, const struct simage_header *h,
		      const struct simage_keys *keys, uint64_t index, const struct simage_entry *entry,
		      const uint8_t *sealed, uint8_t *plain);

#endif
