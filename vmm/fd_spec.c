#include "fd_spec.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "parse.h"

bool fd_spec_is(const char *text)
{
	return text && strncmp(text, FD_SPEC_PREFIX, strlen(FD_SPEC_PREFIX)) == 0;
}

int fd_spec_parse(const char *flag, const char *text, int *fd, char *err, size_t errlen)
{
	uint64_t n;

	if (!fd_spec_is(text) ||
	    sv_parse_u64(text + strlen(FD_SPEC_PREFIX), STDERR_FILENO + 1, INT_MAX, &n) < 0)
		return sv_errf(-EINVAL, err, errlen, "%s: '%.32s' is not fd:N with N a descriptor number of 3 or more",
			       flag, text ? text : "");
	*fd = (int)n;
	return 0;
}

static unsigned kind_of(mode_t mode)
{
	if (S_ISREG(mode))
		return FD_SPEC_REG;
	if (S_ISDIR(mode))
		return FD_SPEC_DIR;
	if (S_ISBLK(mode))
		return FD_SPEC_BLK;
	if (S_ISCHR(mode))
		return FD_SPEC_CHR;
	if (S_ISSOCK(mode))
		return FD_SPEC_SOCK;
	if (S_ISFIFO(mode))
		return FD_SPEC_FIFO;
	return 0;
}

static bool access_ok(int fl, enum fd_spec_access access)
{
	int acc = fl & O_ACCMODE;

	if (access == FD_SPEC_ANY)
		return true;
	if (fl & O_PATH)
		return false;
	switch (access) {
	case FD_SPEC_READ:
		return acc == O_RDONLY || acc == O_RDWR;
	case FD_SPEC_WRITE:
		return acc == O_WRONLY || acc == O_RDWR;
	default:
		return acc == O_RDWR;
	}
}

int fd_spec_check(int fd, unsigned kinds, enum fd_spec_access access)
{
	struct stat st;
	int fl;

	if (fd < 0)
		return -EBADF;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (!(kind_of(st.st_mode) & kinds))
		return -EINVAL;
	/* A socket's file status flags say O_RDWR whatever it is. */
	if (!S_ISSOCK(st.st_mode) && !access_ok(fl, access))
		return -EBADF;
	return 0;
}

static const char *access_word(enum fd_spec_access access)
{
	static const char *const words[] = { "any", "reading", "writing", "reading and writing" };

	return words[access];
}

int fd_spec_take(const char *flag, int fd, unsigned kinds, enum fd_spec_access access, char *err,
		 size_t errlen)
{
	int r = fd_spec_check(fd, kinds, access);

	if (r == -EINVAL) {
		static const char *const names[] = { "regular file", "directory", "block device", "character device",
						     "socket", "FIFO" };
		char what[128] = "";
		size_t n = 0;

		for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (kinds & (1u << i) && n < sizeof(what))
				n += (size_t)snprintf(what + n, sizeof(what) - n, "%s%s", n ? " or " : "", names[i]);
		return sv_errf(r, err, errlen, "%s: descriptor %d is not a %s", flag, fd, what);
	}
	if (r == -EBADF && fcntl(fd, F_GETFD) >= 0)
		return sv_errf(r, err, errlen, "%s: descriptor %d is not open for %s", flag, fd, access_word(access));
	if (r < 0)
		return sv_errf(r, err, errlen, "%s: descriptor %d: %s", flag, fd, strerror(-r));
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return sv_errf(-errno, err, errlen, "%s: descriptor %d: %s", flag, fd, strerror(errno));
	return 0;
}

int fd_spec_check_listener(const char *flag, int fd, char *err, size_t errlen)
{
	int domain = 0, type = 0, listening = 0;
	socklen_t len = sizeof(int);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || (len = sizeof(int),
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) || (len = sizeof(int),
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0) ||
	    domain != AF_UNIX || type != SOCK_STREAM || !listening)
		return sv_errf(-EINVAL, err, errlen, "%s: descriptor %d is not a listening unix stream socket", flag, fd);
	return 0;
}

int fd_spec_open(const char *path, int fd, int flags, unsigned mode)
{
	int r = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1)
			: open(path, flags | O_CLOEXEC, (mode_t)mode);

	return r < 0 ? -errno : r;
}
