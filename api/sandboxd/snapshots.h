#ifndef SANDVM_API_SANDBOXD_SNAPSHOTS_H
#define SANDVM_API_SANDBOXD_SNAPSHOTS_H

/*
 * Encrypted snapshot images (snapshots.c, snapshot_store.c;
 * docs/image-format.md): snapshot a folder, mount and unmount images, the
 * image store's calls and its sweep. Its part of the lifecycle is
 * sandbox_mounts_part (sandbox_part.h).
 */

#include <stdbool.h>
#include <stddef.h>

struct sandbox;
struct sandboxd;
struct api_call;

/* A snapshot image mounted in a sandbox (snapshots.c); path "" when the slot is free. */
#define SANDBOX_MOUNT_SLOTS 3
struct sandbox_mount {
	char path[256];
	char image[40];
	bool busy; /* a mount or unmount is under way */
};

/* Creates the store and the managed key; 0 or -errno with a message on stderr. */
int snapshots_init(struct sandboxd *d);
/* Replaces the managed key, re-wrapping every managed image's key; for --rotate-managed-key. */
int snapshots_rotate_managed_key(const char *state_dir);
void snapshots_sweep(struct sandboxd *d);
void snapshot_create(struct sandbox *sb, struct api_call *call);
void snapshot_mount(struct sandbox *sb, struct api_call *call);
void snapshot_unmount(struct sandbox *sb, struct api_call *call);
/* The image records (a cJSON *). */
void *snapshots_list(struct sandboxd *d);
/* 0 with *out (a cJSON *), or -ENOENT with a message. */
int snapshots_get(struct sandboxd *d, const char *id, void **out, char *err, size_t errlen);
/* 0, or -ENOENT, -EBUSY (mounted), -EIO with a message. */
int snapshots_delete(struct sandboxd *d, const char *id, char *err, size_t errlen);

#endif
