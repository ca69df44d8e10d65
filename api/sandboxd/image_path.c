#include "image_path.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int image_dirs_add(struct image_dirs *dirs, const char *dir, char *err, size_t errlen)
{
	char resolved[PATH_MAX];

	if (dirs->count == IMAGE_PATH_MAX_DIRS) {
		snprintf(err, errlen, "at most %d image folders", IMAGE_PATH_MAX_DIRS);
		return -E2BIG;
	}
	if (!realpath(dir, resolved)) {
		int e = errno;

		snprintf(err, errlen, "image folder %s: %s", dir, strerror(e));
		return -e;
	}
	if (strlen(resolved) >= sizeof(dirs->dir[0])) {
		snprintf(err, errlen, "image folder %s: path too long", dir);
		return -ENAMETOOLONG;
	}
	snprintf(dirs->dir[dirs->count++], sizeof(dirs->dir[0]), "%s", resolved);
	return 0;
}

static int inside(const char *dir, const char *path)
{
	size_t n = strlen(dir);

	/* "/" holds everything; otherwise the folder's name must end at a slash. */
	if (n == 1 && dir[0] == '/')
		return 1;
	return !strncmp(path, dir, n) && path[n] == '/';
}

int image_path_resolve(const struct image_dirs *dirs, const char *path, char *out, size_t cap, char *err,
		       size_t errlen)
{
	char resolved[PATH_MAX];
	struct stat st;
	unsigned i;

	if (!realpath(path, resolved) || stat(resolved, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "image %s is not a regular file", path);
		return -ENOENT;
	}
	for (i = 0; i < dirs->count; i++)
		if (inside(dirs->dir[i], resolved))
			break;
	if (i == dirs->count) {
		snprintf(err, errlen, "image %s is outside the image folders of this worker (--images, --image-dir)",
			 path);
		return -EACCES;
	}
	if (strchr(resolved, ',')) {
		snprintf(err, errlen, "image %s resolves to a path with a comma", path);
		return -EACCES;
	}
	if (strlen(resolved) >= cap) {
		snprintf(err, errlen, "image %s: path too long", path);
		return -ENAMETOOLONG;
	}
	memcpy(out, resolved, strlen(resolved) + 1);
	return 0;
}
