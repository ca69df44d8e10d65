#ifndef SANDVM_VMM_BACKENDS_BLK_BACKEND_H
#define SANDVM_VMM_BACKENDS_BLK_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * What a virtio-blk drive reads and writes: a raw file (raw_file.h) or an
 * encrypted snapshot image with its overlay (image_disk.h). Ranges are
 * checked against size by the device before a backend sees them.
 */
struct blk_backend;

struct blk_backend_ops {
	/* Whole transfers or -errno. */
	int (*read)(struct blk_backend *b, uint64_t offset, const struct iovec *iov, int iovcnt);
	int (*write)(struct blk_backend *b, uint64_t offset, const struct iovec *iov, int iovcnt);
	int (*flush)(struct blk_backend *b);
	void (*destroy)(struct blk_backend *b);
};

struct blk_backend {
	const struct blk_backend_ops *ops;
	uint64_t size; /* bytes */
	bool read_only;
};

static inline void blk_backend_destroy(struct blk_backend *b)
{
	if (b)
		b->ops->destroy(b);
}

#endif
