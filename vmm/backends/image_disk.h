#ifndef SANDVM_VMM_BACKENDS_IMAGE_DISK_H
#define SANDVM_VMM_BACKENDS_IMAGE_DISK_H

/*
 * A block backend over an encrypted snapshot image (docs/image-format.md):
 * the image is only read, every chunk authenticated before a byte of it
 * reaches the guest; the guest's writes go to a copy-on-write overlay,
 * whole chunks sealed with AES-256-GCM under a random key that lives only
 * in this process, in an unlinked file. A chunk that fails authentication
 * is an I/O error to the guest and a warning in the VMM's log, never data.
 */

#include "backends/blk_backend.h"
#include "simage/crypto.h"

/*
 * Opens the image at path with keys already derived by the daemon (the
 * customer's key never reaches the VMM) and an overlay file in overlay_dir.
 * label names the drive in log lines. 0 with *out, -errno or SIMAGE_E_*.
 */
int image_disk_create(struct blk_backend **out, const char *path, const struct simage_keys *keys,
		      const char *overlay_dir, const char *label);

/*
 * The same over descriptors the disk takes (both closed on failure too): the
 * image (read), and the overlay, an empty regular file open read-write that
 * whoever made it has already unlinked (O_TMPFILE) or will not reuse.
 */
int image_disk_create_fd(struct blk_backend **out, int image_fd, const struct simage_keys *keys, int overlay_fd,
			 const char *label);

/* Chunks that failed authentication since the disk was opened. */
unsigned long image_disk_auth_failures(const struct blk_backend *b);
/* Whether b is an image disk. */
int image_disk_is(const struct blk_backend *b);

#endif
