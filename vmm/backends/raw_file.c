#include "backends/raw_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

int raw_file_open(struct raw_file *f, const char *path, bool read_only)
{
	struct stat st;
	int r;

	memset(f, 0, sizeof(*f));
	f->fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (f->fd < 0)
		return -errno;
	if (fstat(f->fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (S_ISREG(st.st_mode)) {
		f->size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(f->fd, BLKGETSIZE64, &f->size) < 0) {
			r = -errno;
			goto fail;
		}
	} else {
		r = -EINVAL;
		goto fail;
	}
	f->read_only = read_only;
	return 0;
fail:
	close(f->fd);
	f->fd = -1;
	return r;
}

void raw_file_close(struct raw_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

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

int raw_file_read(struct raw_file *f, uint64_t offset, const struct iovec *iov, int iovcnt)
{
	return transfer(f, offset, iov, iovcnt, false);
}

int raw_file_write(struct raw_file *f, uint64_t offset, const struct iovec *iov, int iovcnt)
{
	if (f->read_only)
		return -EROFS;
	return transfer(f, offset, iov, iovcnt, true);
}

int raw_file_flush(struct raw_file *f)
{
	if (f->read_only)
		return 0;
	return fdatasync(f->fd) < 0 ? -errno : 0;
}
