#ifndef SANDVM_API_SANDBOXD_AUTH_H
#define SANDVM_API_SANDBOXD_AUTH_H

/*
 * API keys: the keys file holds "SHA256-HEX NAME" lines, never a key. A
 * request's bearer token is hashed and compared with every stored hash in
 * constant time. The file is read again when it changes, so a key added
 * with `sandboxd --new-key` works without a restart.
 */

#include <stddef.h>

struct auth_keys;

int auth_open(const char *path, struct auth_keys **out);
void auth_close(struct auth_keys *k);
/* The key's name for an "Authorization" header value, or NULL. */
const char *auth_check(struct auth_keys *k, const char *header, size_t len);
/* Makes a key, appends its hash to path; the key (NUL-terminated) goes to out. */
int auth_new_key(const char *path, const char *name, char *out, size_t cap);

#endif
