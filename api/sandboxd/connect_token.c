/* Connect tokens (connect_token.h): random secrets kept only as SHA-256 hashes. */
#include "connect_token.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET_PREFIX "ct_"
#define SECRET_RANDOM_BYTES 32

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void connect_tokens_init(struct connect_tokens *set)
{
	memset(set, 0, sizeof(*set));
}

void connect_tokens_destroy(struct connect_tokens *set)
{
	if (set->item)
		OPENSSL_cleanse(set->item, set->cap * sizeof(*set->item));
	free(set->item);
	memset(set, 0, sizeof(*set));
}

/* base64url without padding: 32 bytes -> 43 characters. */
static void encode(const uint8_t *b, size_t n, char *out)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		acc = acc << 8 | b[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[j++] = b64url[(acc >> bits) & 63];
		}
	}
	if (bits)
		out[j++] = b64url[(acc << (6 - bits)) & 63];
	out[j] = '\0';
}

static bool well_formed(const char *secret)
{
	size_t n = strlen(secret);

	if (n != CONNECT_TOKEN_SECRET_LEN || strncmp(secret, SECRET_PREFIX, strlen(SECRET_PREFIX)))
		return false;
	for (size_t i = strlen(SECRET_PREFIX); i < n; i++)
		if (!strchr(b64url, secret[i]) || !secret[i])
			return false;
	return true;
}

static int grow(struct connect_tokens *set)
{
	unsigned ncap = set->cap ? set->cap * 2 : 4;
	struct connect_token *v;

	if (set->count < set->cap)
		return 0;
	if (set->count == CONNECT_TOKENS_MAX)
		return -EDQUOT;
	if (ncap > CONNECT_TOKENS_MAX)
		ncap = CONNECT_TOKENS_MAX;
	v = calloc(ncap, sizeof(*v));
	if (!v)
		return -ENOMEM;
	if (set->item) {
		memcpy(v, set->item, set->count * sizeof(*v));
		OPENSSL_cleanse(set->item, set->cap * sizeof(*v));
		free(set->item);
	}
	set->item = v;
	set->cap = ncap;
	return 0;
}

int connect_token_restore(struct connect_tokens *set, const struct connect_token *t)
{
	int r = grow(set);

	if (r < 0)
		return r;
	set->item[set->count++] = *t;
	return 0;
}

int connect_token_new(struct connect_tokens *set, uint16_t port, const char *verified, double now, unsigned ttl_s,
		      char *secret, size_t cap, const struct connect_token **out)
{
	uint8_t raw[SECRET_RANDOM_BYTES], idb[8];
	struct connect_token *t;
	int r;

	if (!port || ttl_s > CONNECT_TOKEN_TTL_MAX || cap < CONNECT_TOKEN_SECRET_LEN + 1 ||
	    strlen(verified) > INGRESS_METADATA_MAX)
		return -EINVAL;
	r = grow(set);
	if (r < 0)
		return r;
	if (RAND_bytes(raw, sizeof(raw)) != 1 || RAND_bytes(idb, sizeof(idb)) != 1)
		return -EIO;
	t = &set->item[set->count];
	memset(t, 0, sizeof(*t));
	memcpy(secret, SECRET_PREFIX, strlen(SECRET_PREFIX));
	encode(raw, sizeof(raw), secret + strlen(SECRET_PREFIX));
	OPENSSL_cleanse(raw, sizeof(raw));
	SHA256((const unsigned char *)secret, CONNECT_TOKEN_SECRET_LEN, t->hash);
	snprintf(t->id, sizeof(t->id), "tok-%02x%02x%02x%02x%02x%02x%02x%02x", idb[0], idb[1], idb[2], idb[3], idb[4],
		 idb[5], idb[6], idb[7]);
	t->port = port;
	snprintf(t->verified, sizeof(t->verified), "%s", verified);
	t->created_at = now;
	t->expires_at = ttl_s ? now + ttl_s : 0;
	set->count++;
	*out = t;
	return 0;
}

const struct connect_token *connect_token_check(const struct connect_tokens *set, const char *secret, double now)
{
	const struct connect_token *found = NULL;
	uint8_t h[32];

	if (!well_formed(secret))
		return NULL;
	SHA256((const unsigned char *)secret, CONNECT_TOKEN_SECRET_LEN, h);
	/* Every entry is compared, in constant time each: the time says nothing of which matched. */
	for (unsigned i = 0; i < set->count; i++)
		if (!CRYPTO_memcmp(h, set->item[i].hash, sizeof(h)))
			found = &set->item[i];
	OPENSSL_cleanse(h, sizeof(h));
	if (found && found->expires_at && now >= found->expires_at)
		return NULL;
	return found;
}

const struct connect_token *connect_token_find(const struct connect_tokens *set, const char *id)
{
	for (unsigned i = 0; i < set->count; i++)
		if (!strcmp(set->item[i].id, id))
			return &set->item[i];
	return NULL;
}

static void remove_at(struct connect_tokens *set, unsigned i)
{
	set->item[i] = set->item[--set->count];
	OPENSSL_cleanse(&set->item[set->count], sizeof(set->item[0]));
}

int connect_token_revoke(struct connect_tokens *set, const char *id)
{
	for (unsigned i = 0; i < set->count; i++)
		if (!strcmp(set->item[i].id, id)) {
			remove_at(set, i);
			return 0;
		}
	return -ENOENT;
}

unsigned connect_tokens_expire(struct connect_tokens *set, double now)
{
	unsigned removed = 0;

	for (unsigned i = 0; i < set->count;)
		if (set->item[i].expires_at && now >= set->item[i].expires_at) {
			remove_at(set, i);
			removed++;
		} else {
			i++;
		}
	return removed;
}
