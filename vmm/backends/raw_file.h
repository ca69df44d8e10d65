#ifndef SANDVM_VMM_BACKENDS_RAW_FILE_H
#define SANDVM_VMM_BACKENDS_RAW_FILE_H

#include <stdbool.h>

#include "backends/blk_backend.h"

/*
 * A block backend over a plain file (or block device): the bytes are the
 * disk. A read-write open of a read-only file fails rather than degrading.
 * 0 with *out, or -errno.
 */
int raw_file_create(struct blk_backend **out, const char *path, bool read_only);
/* The same over an open descriptor, which the backend takes (closed on failure too). */
int raw_file_create_fd(struct blk_backend **out, int fd, bool read_only);

#endif
