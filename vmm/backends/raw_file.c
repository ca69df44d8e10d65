#include "backends/raw_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct raw_file {
	struct blk_backend base;
	int fd;
};

static int transfer(struct raw_file *f, uint64_t offset, const struct iovec *iov, int iovcnt,
		    bool write)
{
	struct iovec local[IOV_MAX];
	int n = 0;

	if (iovcnt > IOV_MAX)
		return -EINVAL;
	memcpy(local, iov, (size_t)iovcnt * sizeof(*iov));
	while (n < iovcnt) {
		ssize_t done = write ? pwritev(f->fd, local + n, iovcnt - n, (off_t)offset)
				     : preadv(f->fd, local + n, iovcnt - n, (off_t)offset);

		if (done < 0 && errno == EINTR)
			continue;
		if (done < 0)
			return -errno;
		if (done == 0)
			return -EIO;
		offset += (uint64_t)done;
		/* Skip what was transferred, possibly part of one iovec. */
		while (n < iovcnt && (size_t)done >= local[n].iov_len)
			done -= (ssize_t)local[n++].iov_len;
		if (n < iovcnt) {
			local[n].iov_base = (uint8_t *)local[n].iov_base + done;
			local[n].iov_len -= (size_t)done;
		}
	}
	return 0;
}

static int raw_read(struct blk_backend *b, uint64_t offset, const struct iovec *iov, int iovcnt)
{
	return transfer((struct raw_file *)b, offset, iov, iovcnt, false);
}

static int raw_write(struct blk_backend *b, uint64_t offset, const struct iovec *iov, int iovcnt)
{
	if (b->read_only)
		return -EROFS;
	return transfer((struct raw_file *)b, offset, iov, iovcnt, true);
}

static int raw_flush(struct blk_backend *b)
{
	if (b->read_only)
		return 0;
	return fdatasync(((struct raw_file *)b)->fd) < 0 ? -errno : 0;
}

static void raw_destroy(struct blk_backend *b)
{
	struct raw_file *f = (struct raw_file *)b;

	close(f->fd);
	free(f);
}

static const struct blk_backend_ops raw_ops = {
	.read = raw_read,
	.write = raw_write,
	.flush = raw_flush,
	.destroy = raw_destroy,
};

int raw_file_create(struct blk_backend **out, const char *path, bool read_only)
{
	int fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);

	return fd < 0 ? -errno : raw_file_create_fd(out, fd, read_only);
}

int raw_file_create_fd(struct blk_backend **out, int fd, bool read_only)
{
	struct raw_file *f = calloc(1, sizeof(*f));
	struct stat st;
	int r, fl;

	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	f->fd = fd;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0) {
		r = -errno;
		goto fail;
	}
	/* A descriptor from elsewhere: one that cannot do what the drive needs is refused now, not at the guest's first write. */
	if ((fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY || (!read_only && (fl & O_ACCMODE) != O_RDWR)) {
		r = -EBADF;
		goto fail;
	}
	if (fstat(f->fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (S_ISREG(st.st_mode)) {
		f->base.size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(f->fd, BLKGETSIZE64, &f->base.size) < 0) {
			r = -errno;
			goto fail;
		}
	} else {
		r = -EINVAL;
		goto fail;
	}
	f->base.ops = &raw_ops;
	f->base.read_only = read_only;
	*out = &f->base;
	return 0;
fail:
	close(f->fd);
	free(f);
	return r;
}
