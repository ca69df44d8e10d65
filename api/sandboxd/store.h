#ifndef SANDVM_API_SANDBOXD_STORE_H
#define SANDVM_API_SANDBOXD_STORE_H

/*
 * The registry on disk (store.c): one JSON record per sandbox, written
 * atomically, read back by a restarted daemon.
 */

struct sandbox;

/* dir/name replaced by text all at once: write, fsync, rename, fsync dir. */
int store_write_atomic(const char *dir, const char *name, const char *text);
int store_save(const struct sandbox *sb);
/* Calls fn for each stored record (a cJSON * it takes). */
int store_load_all(const char *state_dir, void (*fn)(void *ctx, const char *id, void *record), void *ctx);
int store_remove(const struct sandbox *sb);

#endif
