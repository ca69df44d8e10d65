#ifndef SANDVM_VMM_DEVICES_CONSOLE_H
#define SANDVM_VMM_DEVICES_CONSOLE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

/*
 * Where the guest's serial output goes: a file descriptor the VMM was given
 * (stdout), a file it opened, a unix socket it connected to, or nowhere. The
 * guest decides how much it writes, so none of them may grow or block without
 * bound:
 *
 * - A regular file is rotated: NAME holds the newest output, NAME.1 the
 *   stretch before it, each at most half of max_bytes, so the two together
 *   never hold more than max_bytes and always the newest half of it at least.
 *   Rotation renames within the directory the file was opened in, through a
 *   directory descriptor opened at start, so it needs no path lookups above
 *   that directory. When the rename cannot be done the file is truncated
 *   instead (older output lost, the bound kept) and a rate-limited warning
 *   says why.
 * - A socket is non-blocking: output its reader has no room for is dropped
 *   and counted (rate-limited warning), so a stalled reader never stalls the
 *   vCPU that writes the serial port.
 * - stdout belongs to whoever started the VMM and is written as it is.
 *
 * Not thread-safe: the serial device calls it under its own lock.
 */

#define CONSOLE_OLD_SUFFIX ".1"
/*
 * How a rotation opens the new NAME. It runs on a vCPU thread, whose seccomp
 * filter allows openat with exactly these flags (vmm/seccomp.c).
 */
#define CONSOLE_ROTATE_FLAGS (O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW | O_CLOEXEC)

struct console_out {
	int fd;     /* -1: discard */
	bool owned; /* closed by console_out_destroy */
	bool drop_when_full; /* non-blocking socket */
	int dir_fd; /* a regular file's directory (O_PATH); -1: no rotation */
	uint64_t rotate_bytes; /* the current file is rotated (or, with no directory, truncated) before it
				* would pass this; 0: unbounded (not a regular file) */
	uint64_t size;         /* bytes in the current file */
	uint64_t rotations;    /* renames done */
	uint64_t truncations;  /* rotations that had to truncate instead */
	uint64_t dropped_bytes; /* output a full socket had no room for */
	char name[NAME_MAX + 1];
	char old_name[NAME_MAX + sizeof(CONSOLE_OLD_SUFFIX)];
	struct sv_ratelimit warn_rl; /* guest-triggered warnings */
};

/* fd is borrowed (stdout, a test's pipe) and never closed; -1 discards. */
int console_out_init_fd(struct console_out *c, int fd);

/*
 * path names a listening unix socket (connected to, made non-blocking) or a
 * file (created or truncated; a regular one rotated at max_bytes as above,
 * and a NAME.1 left from an earlier run removed). max_bytes must be at least
 * 2 * CONSOLE_CHUNK_MAX. Returns 0 or -errno.
 */
#define CONSOLE_CHUNK_MAX 4096u /* the most one console_out_write gets from the serial device */
int console_out_open(struct console_out *c, const char *path, uint64_t max_bytes);

/*
 * The same for a descriptor, which c takes (closed on failure too): a
 * directory (O_PATH will do) gets CONSOLE_DIR_FILE in it, rotated as above
 * through that descriptor; a regular file is written as it is and truncated
 * when it would pass max_bytes / 2; a socket is made non-blocking; anything
 * else is written as it is. 0 or -errno.
 */
#define CONSOLE_DIR_FILE "console.log"
int console_out_open_fd(struct console_out *c, int fd, uint64_t max_bytes);

void console_out_destroy(struct console_out *c);

static inline bool console_out_active(const struct console_out *c)
{
	return c && c->fd >= 0;
}

/* Writes guest output; errors end the console (fd -1), never the guest. */
void console_out_write(struct console_out *c, const char *buf, size_t len);

#endif
