#ifndef SANDVM_VMM_FD_SPEC_H
#define SANDVM_VMM_FD_SPEC_H

#include <stdbool.h>
#include <stddef.h>

/*
 * "fd:N or a path": every path-valued flag of the VMM also accepts an
 * inherited descriptor, so that a privileged launcher opens what the VMM
 * needs and the VMM opens no host path at all (docs/vmm.md). N must be 3 or
 * more (0..2 are the VMM's stdio), a plain decimal number that fits an int.
 * The VMM takes such a descriptor over: it checks its type and access mode
 * once and marks it close-on-exec.
 */

#define FD_SPEC_PREFIX "fd:"

/* Kinds of file a flag accepts (a mask). */
enum fd_spec_kind {
	FD_SPEC_REG = 1u << 0,
	FD_SPEC_DIR = 1u << 1,
	FD_SPEC_BLK = 1u << 2,
	FD_SPEC_CHR = 1u << 3,
	FD_SPEC_SOCK = 1u << 4,
	FD_SPEC_FIFO = 1u << 5,
};

/* What the descriptor must allow. */
enum fd_spec_access {
	FD_SPEC_ANY,   /* O_PATH will do (a directory to work in through *at calls) */
	FD_SPEC_READ,  /* O_RDONLY or O_RDWR */
	FD_SPEC_WRITE, /* O_WRONLY or O_RDWR */
	FD_SPEC_RDWR,  /* O_RDWR */
};

/* Whether text is meant as a descriptor ("fd:" and anything after it). */
bool fd_spec_is(const char *text);

/*
 * text as "fd:N": 0 with *fd, or -EINVAL with a message naming flag in err
 * ("fd:", "fd:-1", "fd:2", "fd:3x", a number past INT_MAX are all refused).
 */
int fd_spec_parse(const char *flag, const char *text, int *fd, char *err, size_t errlen);

/*
 * Takes over fd for flag: it must be open, one of kinds, allow access; it
 * is marked close-on-exec. 0, or -errno with a message naming flag in err.
 */
int fd_spec_take(const char *flag, int fd, unsigned kinds, enum fd_spec_access access, char *err,
		 size_t errlen);

/* fd is a listening unix stream socket (after fd_spec_take). 0 or -EINVAL with err. */
int fd_spec_check_listener(const char *flag, int fd, char *err, size_t errlen);

/* A descriptor checked like fd_spec_take, with no flag and no change to it: 0 or -errno (-EINVAL: wrong kind, -EBADF: access). */
int fd_spec_check(int fd, unsigned kinds, enum fd_spec_access access);

/*
 * A descriptor of its own for a resource given as path (opened with flags
 * and mode) or as an already taken fd (duplicated, close-on-exec): >= 0, or
 * -errno.
 */
int fd_spec_open(const char *path, int fd, int flags, unsigned mode);

#endif
