#ifndef SANDVM_API_SANDBOXD_CONNECT_TOKEN_H
#define SANDVM_API_SANDBOXD_CONNECT_TOKEN_H

/*
 * Connect tokens (docs/ingress.md): a secret that lets its holder reach one
 * port of one sandbox through the ingress listener, with the user metadata
 * the server there receives as X-Verified-User-Data. The secret is shown
 * once, when the token is made; only its SHA-256 is kept, and a presented
 * secret is hashed and compared in constant time. A token ends when it is
 * revoked, when its ttl passes, or with its sandbox.
 *
 * The set is plain data (no I/O but the random bytes of a new token),
 * bounded in size; the daemon keeps one per sandbox.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ingress_head.h"

/* "ct_" and 43 base64url characters: 256 random bits. */
#define CONNECT_TOKEN_SECRET_LEN 46
/* A sandbox's live tokens at most. */
#define CONNECT_TOKENS_MAX 256
#define CONNECT_TOKEN_TTL_MAX (365u * 24 * 3600)

struct connect_token {
	char id[24];       /* "tok-" and 16 hex digits: names it in the API, never a secret */
	uint8_t hash[32];  /* SHA-256 of the secret */
	uint16_t port;
	char verified[INGRESS_METADATA_MAX + 1]; /* the X-Verified-User-Data value */
	double created_at;
	double expires_at; /* 0: lives as long as its sandbox */
};

struct connect_tokens {
	struct connect_token *item; /* grown as needed, up to CONNECT_TOKENS_MAX */
	unsigned count, cap;
};

void connect_tokens_init(struct connect_tokens *set);
/* Forgets every token (their hashes wiped). */
void connect_tokens_destroy(struct connect_tokens *set);

/*
 * A new token for port with verified (ingress_metadata_encode's output),
 * expiring ttl_s after now (0: never). 0 with the secret in secret (at least
 * CONNECT_TOKEN_SECRET_LEN + 1 bytes) and *out (valid until the set
 * changes), -EINVAL for a bad port or ttl, -EDQUOT when the set is full,
 * -ENOMEM, -EIO without random bytes.
 */
int connect_token_new(struct connect_tokens *set, uint16_t port, const char *verified, double now, unsigned ttl_s,
		      char *secret, size_t cap, const struct connect_token **out);

/* The live token whose secret this is, or NULL (unknown, malformed or expired). */
const struct connect_token *connect_token_check(const struct connect_tokens *set, const char *secret, double now);

const struct connect_token *connect_token_find(const struct connect_tokens *set, const char *id);
/* 0, or -ENOENT. */
int connect_token_revoke(struct connect_tokens *set, const char *id);
/* Puts back a token read from the registry (its hash, never a secret). 0, -EDQUOT or -ENOMEM. */
int connect_token_restore(struct connect_tokens *set, const struct connect_token *t);
/* Forgets tokens whose ttl passed; returns how many. */
unsigned connect_tokens_expire(struct connect_tokens *set, double now);

#endif
