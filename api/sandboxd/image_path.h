#ifndef SANDVM_API_SANDBOXD_IMAGE_PATH_H
#define SANDVM_API_SANDBOXD_IMAGE_PATH_H

/*
 * Which root filesystem files a sandbox may boot: a path a client names is
 * resolved (symlinks and "..") and must be a regular file inside the images
 * folder or one of the folders the operator allowed (sandboxd --image-dir),
 * and must hold no comma (the VMM's drive options are comma-separated).
 */

#include <stddef.h>

#define IMAGE_PATH_MAX_DIRS 8

struct image_dirs {
	unsigned count;
	char dir[IMAGE_PATH_MAX_DIRS][4096]; /* resolved, no trailing slash */
};

/* Adds a folder (resolved now; it must exist). 0, or -errno with a message. */
int image_dirs_add(struct image_dirs *dirs, const char *dir, char *err, size_t errlen);

/*
 * Resolves path into out. 0; -ENOENT when it does not exist or is not a
 * regular file; -EACCES when it lies outside every folder of dirs or the
 * resolved path holds a comma; -ENAMETOOLONG. A message in err.
 */
int image_path_resolve(const struct image_dirs *dirs, const char *path, char *out, size_t cap, char *err,
		       size_t errlen);

#endif
