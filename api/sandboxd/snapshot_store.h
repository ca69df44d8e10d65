#ifndef SANDVM_API_SANDBOXD_SNAPSHOT_STORE_H
#define SANDVM_API_SANDBOXD_SNAPSHOT_STORE_H

/* The snapshot image store of snapshot_store.c, as snapshots.c uses it. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "simage/crypto.h"

struct cJSON;

/* Images expire this long after their last create or mount unless a ttl says otherwise. */
#define DEFAULT_TTL_S (30ll * 24 * 3600)

/* 32 lowercase hex digits: what image ids look like (and all a path may hold). */
bool snapshot_id_valid(const char *id);
void snapshot_store_path(const char *store, const char *id, const char *ext, char *out, size_t len);
/* The record of image id, or NULL; the caller deletes it. */
struct cJSON *snapshot_record_load(const char *store, const char *id);
int snapshot_record_save(const char *store, const char *id, const struct cJSON *rec);
/* last_used = now. */
void snapshot_record_touch(const char *store, const char *id);
double snapshot_record_num(const struct cJSON *rec, const char *name, double dflt);
/* When the record expires, in unix seconds; 0: never. */
double snapshot_expires_at(const struct cJSON *rec);
/* Counts the images of store and their files' bytes by key kind ([0] managed, [1] customer); from any thread. */
void snapshot_store_usage(const char *store, uint64_t images[2], uint64_t bytes[2]);
/* Unlinks the image, its record and its wrapped key. */
int snapshot_store_remove(const char *store, const char *id);
/* The managed image's own key, unwrapped; or a new one wrapped into ID.key. */
int snapshot_managed_key_get(const char *store, const char *id, uint8_t key[SIMAGE_KEY_BYTES]);
int snapshot_managed_key_store(const char *store, const char *id, const uint8_t key[SIMAGE_KEY_BYTES]);

/* A key wrapped with the managed key: version byte, 12-byte nonce, the key sealed with AES-256-GCM. */
#define SNAPSHOT_WRAPPED_BYTES (1 + SIMAGE_NONCE_BYTES + SIMAGE_KEY_BYTES + SIMAGE_TAG_BYTES)
/*
 * A paused sandbox's memory key (pause.h) wrapped with the managed key of
 * store, "sandvm pause v1 " and the sandbox id as associated data; and back
 * (SIMAGE_E_AUTH when it does not open: another managed key or sandbox, or tampered).
 */
int snapshot_pause_key_wrap(const char *store, const char *sandbox_id, const uint8_t key[SIMAGE_KEY_BYTES],
			     uint8_t out[SNAPSHOT_WRAPPED_BYTES]);
int snapshot_pause_key_unwrap(const char *store, const char *sandbox_id, const uint8_t in[SNAPSHOT_WRAPPED_BYTES],
			      uint8_t key[SIMAGE_KEY_BYTES]);

#endif
