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

#endif
