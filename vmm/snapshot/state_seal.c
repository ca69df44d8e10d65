/* The sealed state file: state_seal.h, docs/vmm.md "Sealed state file". */
#include "snapshot/state_seal.h"

#include <endian.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#define STATE_SEAL_VERSION 1u
#define SALT_OFF 16u
#define SALT_BYTES 16u
#define NONCE_OFF 32u
#define NONCE_BYTES 12u

static const char magic[8] = {'S', 'V', 'S', 'T', 'S', 'E', 'A', 'L'};
static const char info[] = "sandvm snapshot state v1";

bool state_seal_is_sealed(const uint8_t *buf, size_t len)
{
	return len >= sizeof(magic) && memcmp(buf, magic, sizeof(magic)) == 0;
}

static int derive(const uint8_t key[STATE_SEAL_KEY_BYTES], const uint8_t *salt, uint8_t out[32])
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[5];
	int r = -EIO;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, STATE_SEAL_KEY_BYTES);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, SALT_BYTES);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, sizeof(info) - 1);
	params[4] = OSSL_PARAM_construct_end();
	if (ctx && EVP_KDF_derive(ctx, out, 32, params) == 1)
		r = 0;
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return r;
}

/* AES-256-GCM one way or the other over len bytes; the tag is written (seal) or checked (open). */
static int gcm(bool seal, const uint8_t k[32], const uint8_t *header, const uint8_t *in, size_t len, uint8_t *out,
	       uint8_t tag[STATE_SEAL_TAG_BYTES])
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0, r = -EIO;

	if (!c || len > (size_t)INT32_MAX)
		goto out;
	if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, seal) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) != 1 ||
	    EVP_CipherInit_ex(c, NULL, NULL, k, header + NONCE_OFF, seal) != 1 ||
	    EVP_CipherUpdate(c, NULL, &n, header, STATE_SEAL_HEADER_BYTES) != 1 ||
	    (len && EVP_CipherUpdate(c, out, &n, in, (int)len) != 1))
		goto out;
	if (seal) {
		if (EVP_CipherFinal_ex(c, out + len, &n) == 1 &&
		    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, STATE_SEAL_TAG_BYTES, tag) == 1)
			r = 0;
	} else if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, STATE_SEAL_TAG_BYTES, tag) == 1) {
		r = EVP_CipherFinal_ex(c, out + len, &n) == 1 ? 0 : -EBADMSG;
	}
out:
	EVP_CIPHER_CTX_free(c);
	return r;
}

int state_seal(const uint8_t key[STATE_SEAL_KEY_BYTES], const uint8_t *in, size_t len, uint8_t *out)
{
	uint32_t v = htole32(STATE_SEAL_VERSION);
	uint8_t k[32];
	int r;

	memcpy(out, magic, sizeof(magic));
	memcpy(out + 8, &v, 4);
	memset(out + 12, 0, 4);
	if (getrandom(out + SALT_OFF, SALT_BYTES + NONCE_BYTES, 0) != (ssize_t)(SALT_BYTES + NONCE_BYTES))
		return -EIO;
	r = derive(key, out + SALT_OFF, k);
	if (r == 0)
		r = gcm(true, k, out, in, len, out + STATE_SEAL_HEADER_BYTES,
			out + STATE_SEAL_HEADER_BYTES + len);
	OPENSSL_cleanse(k, sizeof(k));
	return r;
}

int state_unseal(const uint8_t key[STATE_SEAL_KEY_BYTES], const uint8_t *buf, size_t len, uint8_t *out,
		 size_t *out_len, char *why, size_t whylen)
{
	uint8_t k[32], tag[STATE_SEAL_TAG_BYTES];
	uint32_t v, zero;
	size_t body;
	int r;

	*out_len = 0;
	if (len < STATE_SEAL_OVERHEAD || !state_seal_is_sealed(buf, len)) {
		snprintf(why, whylen, "not a sealed state file (%zu bytes)", len);
		return -EINVAL;
	}
	memcpy(&v, buf + 8, 4);
	memcpy(&zero, buf + 12, 4);
	if (le32toh(v) != STATE_SEAL_VERSION || zero != 0) {
		snprintf(why, whylen, "sealed state file of version %u, this VMM reads %u", le32toh(v),
			 STATE_SEAL_VERSION);
		return -EINVAL;
	}
	body = len - STATE_SEAL_OVERHEAD;
	memcpy(tag, buf + len - STATE_SEAL_TAG_BYTES, sizeof(tag));
	r = derive(key, buf + SALT_OFF, k);
	if (r == 0)
		r = gcm(false, k, buf, buf + STATE_SEAL_HEADER_BYTES, body, out, tag);
	OPENSSL_cleanse(k, sizeof(k));
	if (r == -EBADMSG) {
		/* Nothing of a file that does not verify is handed on. */
		OPENSSL_cleanse(out, body);
		snprintf(why, whylen, "the sealed state file does not open with this key (another key, or tampered)");
		return r;
	}
	if (r < 0) {
		snprintf(why, whylen, "the cipher failed");
		return r;
	}
	*out_len = body;
	return 0;
}
