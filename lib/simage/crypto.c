#include "simage/crypto.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <zstd.h>

#define ZSTD_LEVEL 1 /* fast: the cipher, not the compressor, should set the pace */

static const char info_data[] = "sandvm image v1 data";
static const char info_meta[] = "sandvm image v1 meta";
static const char info_check[] = "sandvm image v1 check";
static const char aad_label[8] = "SVMCHNK1";

static int hkdf_expand(const uint8_t *ikm, size_t ikm_len, const struct simage_header *h,
		       const char *label, uint8_t *out, size_t out_len)
{
	uint8_t info[64];
	size_t label_len = strlen(label);
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[5];
	int r = -EIO;

	/* The image id in the info string: keys differ per image even with one salt. */
	memcpy(info, label, label_len);
	memcpy(info + label_len, h->image_id, SIMAGE_ID_BYTES);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)h->salt,
						      SIMAGE_SALT_BYTES);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info,
						      label_len + SIMAGE_ID_BYTES);
	params[4] = OSSL_PARAM_construct_end();
	if (ctx && EVP_KDF_derive(ctx, out, out_len, params) == 1)
		r = 0;
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	OPENSSL_cleanse(info, sizeof(info));
	return r;
}

int simage_derive_keys(const uint8_t *ikm, size_t ikm_len, const struct simage_header *h,
		       struct simage_keys *keys)
{
	if (!ikm || ikm_len < SIMAGE_IKM_MIN || ikm_len > SIMAGE_IKM_MAX)
		return -EINVAL;
	if (hkdf_expand(ikm, ikm_len, h, info_data, keys->data, sizeof(keys->data)) < 0 ||
	    hkdf_expand(ikm, ikm_len, h, info_meta, keys->meta, sizeof(keys->meta)) < 0 ||
	    hkdf_expand(ikm, ikm_len, h, info_check, keys->check, sizeof(keys->check)) < 0) {
		simage_keys_wipe(keys);
		return -EIO;
	}
	return 0;
}

int simage_key_matches(const struct simage_header *h, const struct simage_keys *keys)
{
	return CRYPTO_memcmp(h->key_check, keys->check, SIMAGE_CHECK_BYTES) == 0;
}

int simage_mac_equal(const uint8_t *a, const uint8_t *b)
{
	return CRYPTO_memcmp(a, b, SIMAGE_MAC_BYTES) == 0;
}

void simage_keys_wipe(struct simage_keys *keys)
{
	OPENSSL_cleanse(keys, sizeof(*keys));
}

int simage_compute_mac(const struct simage_keys *keys, const uint8_t *header, const uint8_t *table,
		       size_t table_len, uint8_t mac[SIMAGE_MAC_BYTES])
{
	EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
	OSSL_PARAM params[2];
	size_t out_len = 0;
	int r = -EIO;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (ctx && EVP_MAC_init(ctx, keys->meta, sizeof(keys->meta), params) == 1 &&
	    EVP_MAC_update(ctx, header, SIMAGE_MAC_OFFSET) == 1 &&
	    (table_len == 0 || EVP_MAC_update(ctx, table, table_len) == 1) &&
	    EVP_MAC_final(ctx, mac, &out_len, SIMAGE_MAC_BYTES) == 1 && out_len == SIMAGE_MAC_BYTES)
		r = 0;
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(m);
	return r;
}

int simage_random(void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = getrandom(p, len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int simage_codec_init(struct simage_codec *c, uint64_t chunk_size)
{
	memset(c, 0, sizeof(*c));
	c->cipher = EVP_CIPHER_CTX_new();
	c->cctx = ZSTD_createCCtx();
	c->dctx = ZSTD_createDCtx();
	/* Room for a whole chunk plus a tag: the widest thing sealed or opened. */
	c->scratch_len = chunk_size + SIMAGE_TAG_BYTES;
	c->scratch = malloc(c->scratch_len);
	if (!c->cipher || !c->cctx || !c->dctx || !c->scratch) {
		simage_codec_destroy(c);
		return -ENOMEM;
	}
	return 0;
}

void simage_codec_destroy(struct simage_codec *c)
{
	EVP_CIPHER_CTX_free(c->cipher);
	ZSTD_freeCCtx(c->cctx);
	ZSTD_freeDCtx(c->dctx);
	if (c->scratch && c->scratch_used)
		OPENSSL_cleanse(c->scratch, c->scratch_len);
	free(c->scratch);
	memset(c, 0, sizeof(*c));
}

int simage_gcm_seal(struct simage_codec *c, const uint8_t key[SIMAGE_KEY_BYTES],
		    const uint8_t nonce[SIMAGE_NONCE_BYTES], const uint8_t *aad, size_t aad_len,
		    const uint8_t *in, size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = c->cipher;
	int n = 0, fin = 0;

	if (len > INT32_MAX || aad_len > INT32_MAX)
		return -EINVAL;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1 ||
	    EVP_EncryptUpdate(ctx, out, &n, in, (int)len) != 1 ||
	    EVP_EncryptFinal_ex(ctx, out + n, &fin) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SIMAGE_TAG_BYTES, out + len) != 1)
		return -EIO;
	return 0;
}

int simage_gcm_open(struct simage_codec *c, const uint8_t key[SIMAGE_KEY_BYTES],
		    const uint8_t nonce[SIMAGE_NONCE_BYTES], const uint8_t *aad, size_t aad_len,
		    const uint8_t *in, size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = c->cipher;
	size_t body;
	int n = 0, fin = 0;

	if (len < SIMAGE_TAG_BYTES || len > INT32_MAX || aad_len > INT32_MAX)
		return SIMAGE_E_AUTH;
	body = len - SIMAGE_TAG_BYTES;
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SIMAGE_TAG_BYTES, (void *)(in + body)) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1 ||
	    EVP_DecryptUpdate(ctx, out, &n, in, (int)body) != 1)
		return -EIO;
	if (EVP_DecryptFinal_ex(ctx, out + n, &fin) != 1)
		return SIMAGE_E_AUTH;
	return 0;
}

/* label | image id | index | flags | plaintext length */
#define CHUNK_AAD_BYTES (8 + SIMAGE_ID_BYTES + 8 + 4 + 4)

static void chunk_aad(const struct simage_header *h, uint64_t index, uint32_t flags, uint32_t plain_len,
		      uint8_t aad[CHUNK_AAD_BYTES])
{
	uint8_t *p = aad;

	memcpy(p, aad_label, 8);
	p += 8;
	memcpy(p, h->image_id, SIMAGE_ID_BYTES);
	p += SIMAGE_ID_BYTES;
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)(index >> (8 * i));
	for (int i = 0; i < 4; i++)
		*p++ = (uint8_t)(flags >> (8 * i));
	for (int i = 0; i < 4; i++)
		*p++ = (uint8_t)(plain_len >> (8 * i));
}

/* Each image has its own key (its random salt), so the index alone is a unique nonce. */
static void chunk_nonce(uint64_t index, uint8_t nonce[SIMAGE_NONCE_BYTES])
{
	memset(nonce, 0, SIMAGE_NONCE_BYTES);
	for (int i = 0; i < 8; i++)
		nonce[i] = (uint8_t)(index >> (8 * i));
}

static bool all_zero(const uint8_t *p, size_t len)
{
	static const uint8_t zero[4096];

	while (len) {
		size_t n = len < sizeof(zero) ? len : sizeof(zero);

		if (memcmp(p, zero, n))
			return false;
		p += n;
		len -= n;
	}
	return true;
}

bool simage_worth_compressing(struct simage_codec *c, const uint8_t *plain, size_t len)
{
	uint8_t sample[SIMAGE_SAMPLE_WINDOWS * SIMAGE_SAMPLE_WINDOW];
	uint8_t out[SIMAGE_SAMPLE_WINDOWS * SIMAGE_SAMPLE_WINDOW + 128];
	size_t stride, z;
	bool worth;

	/* A short chunk costs no more to try whole than to sample. */
	if (len <= 4 * sizeof(sample))
		return true;
	/*
	 * Windows spread evenly over the chunk, not one block at its start: a
	 * chunk of a file system is often part one thing and part another (a
	 * file's tail, then zeros or another file), and a window in each part
	 * lets the sample see both. Compressed together, the windows also show
	 * repetition at a period that divides the stride, which a byte
	 * histogram would not.
	 */
	stride = len / SIMAGE_SAMPLE_WINDOWS;
	for (size_t i = 0; i < SIMAGE_SAMPLE_WINDOWS; i++)
		memcpy(sample + i * SIMAGE_SAMPLE_WINDOW, plain + i * stride, SIMAGE_SAMPLE_WINDOW);
	z = ZSTD_compressCCtx(c->cctx, out, sizeof(out), sample, sizeof(sample), ZSTD_LEVEL);
	/*
	 * Worth the whole attempt when the sample shrinks by at least 1/32:
	 * zstd stores random or already compressed bytes as raw blocks, a few
	 * bytes longer than the sample, and a chunk that would shrink by less
	 * than 3 % is not worth decompressing on every read.
	 */
	worth = ZSTD_isError(z) || z <= sizeof(sample) - sizeof(sample) / 32;
	/* The sample may be a guest's memory: none of it stays on the stack. */
	OPENSSL_cleanse(sample, sizeof(sample));
	OPENSSL_cleanse(out, sizeof(out));
	return worth;
}

int simage_seal_chunk(struct simage_codec *c, const struct simage_header *h,
		      const struct simage_keys *keys, uint64_t index, const uint8_t *plain,
		      uint8_t *out, struct simage_entry *entry)
{
	uint64_t len = simage_chunk_len(h, index);
	uint8_t aad[CHUNK_AAD_BYTES], nonce[SIMAGE_NONCE_BYTES];
	const uint8_t *body = plain;
	size_t body_len = len;
	int r;

	memset(entry, 0, sizeof(*entry));
	if (len == 0 || len + SIMAGE_TAG_BYTES > c->scratch_len)
		return -EINVAL;
	if (all_zero(plain, len)) {
		entry->flags = SIMAGE_CHUNK_HOLE;
		return 0;
	}
	if (simage_worth_compressing(c, plain, len)) {
		size_t z;

		c->scratch_used = true;
		z = ZSTD_compressCCtx(c->cctx, c->scratch, len - 1, plain, len, ZSTD_LEVEL);

		/* Stored compressed only when that saves something. */
		if (!ZSTD_isError(z) && z < len) {
			body = c->scratch;
			body_len = z;
			entry->flags = SIMAGE_CHUNK_COMPRESSED;
		}
	}
	chunk_aad(h, index, entry->flags, (uint32_t)len, aad);
	chunk_nonce(index, nonce);
	r = simage_gcm_seal(c, keys->data, nonce, aad, sizeof(aad), body, body_len, out);
	if (r < 0)
		return r;
	entry->length = (uint32_t)(body_len + SIMAGE_TAG_BYTES);
	return 0;
}

int simage_open_chunk(struct simage_codec *c, const struct simage_header *h,
		      const struct simage_keys *keys, uint64_t index, const struct simage_entry *entry,
		      const uint8_t *sealed, uint8_t *plain)
{
	uint64_t len = simage_chunk_len(h, index);
	uint8_t aad[CHUNK_AAD_BYTES], nonce[SIMAGE_NONCE_BYTES];
	size_t body_len;
	int r;

	if (len == 0)
		return -EINVAL;
	if (entry->flags & SIMAGE_CHUNK_HOLE) {
		memset(plain, 0, len);
		return 0;
	}
	if (entry->length < SIMAGE_TAG_BYTES || entry->length > simage_sealed_max(len))
		return SIMAGE_E_TABLE;
	body_len = entry->length - SIMAGE_TAG_BYTES;
	chunk_aad(h, index, entry->flags, (uint32_t)len, aad);
	chunk_nonce(index, nonce);
	if (!(entry->flags & SIMAGE_CHUNK_COMPRESSED))
		return simage_gcm_open(c, keys->data, nonce, aad, sizeof(aad), sealed, entry->length,
				       plain);
	c->scratch_used = true;
	r = simage_gcm_open(c, keys->data, nonce, aad, sizeof(aad), sealed, entry->length, c->scratch);
	if (r < 0)
		return r;
	{
		size_t n = ZSTD_decompressDCtx(c->dctx, plain, len, c->scratch, body_len);

		/* Authentic bytes that do not inflate to the chunk: a writer bug, not a guest's. */
		if (ZSTD_isError(n) || n != len)
			return SIMAGE_E_AUTH;
	}
	return 0;
}
