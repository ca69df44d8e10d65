#ifndef SANDVM_VMM_BACKENDS_RAW_FILE_H
#define SANDVM_VMM_BACKENDS_RAW_FILE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

/* A block backend over a plain file (or block device): the bytes are the disk. */
struct raw_file {
	int fd;
	uint64_t size;
	bool read_only;
};

/* -errno; a read-write open of a read-only file fails rather than degrading. */
int raw_file_open(struct raw_file *f, const char *path, bool read_only);
void raw_file_close(struct raw_file *f);

/* Whole transfers or -errno (a short read past the end is -EIO). */
int raw_file_read(struct raw_file *f, uint64_t offset, const struct iovec *iov, int iovcnt);
int raw_file_write(struct raw_file *f, uint64_t offset, const struct iovec *iov, int iovcnt);
int raw_file_flush(struct raw_file *f);

#endif
