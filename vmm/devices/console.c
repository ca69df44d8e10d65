#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int init_common(struct console_out *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->dir_fd = -1;
	return sv_ratelimit_init(&c->warn_rl, "console", SV_RATELIMIT_BURST, SV_RATELIMIT_INTERVAL_NS);
}

int console_out_init_fd(struct console_out *c, int fd)
{
	int r = init_common(c);

	if (r == 0)
		c->fd = fd;
	return r;
}

static int connect_socket(struct console_out *c, const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	c->fd = fd;
	c->owned = true;
	c->drop_when_full = true;
	return 0;
}

static int open_in_dir(struct console_out *c, const char *name, uint64_t max_bytes);

static int open_file(struct console_out *c, const char *path, uint64_t max_bytes)
{
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	char dir[PATH_MAX];

	if (!*name)
		return -EISDIR;
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else if ((size_t)(slash - path) >= sizeof(dir))
		return -ENAMETOOLONG;
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	c->dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c->dir_fd < 0)
		return -errno;
	return open_in_dir(c, name, max_bytes);
}

/* NAME in the directory c->dir_fd (taken by c: closed on failure). */
static int open_in_dir(struct console_out *c, const char *name, uint64_t max_bytes)
{
	struct stat st;
	int r;

	c->fd = openat(c->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
	if (c->fd < 0 || fstat(c->fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	c->owned = true;
	if (!S_ISREG(st.st_mode)) {
		/* /dev/null, a FIFO, a terminal: nothing on disk to bound. */
		close(c->dir_fd);
		c->dir_fd = -1;
		return 0;
	}
	snprintf(c->name, sizeof(c->name), "%s", name);
	snprintf(c->old_name, sizeof(c->old_name), "%s%s", name, CONSOLE_OLD_SUFFIX);
	c->rotate_bytes = max_bytes / 2;
	/* A NAME.1 of an earlier run would pass for this guest's older output. */
	if (unlinkat(c->dir_fd, c->old_name, 0) < 0 && errno != ENOENT)
		sv_warn("console: cannot remove the old %s: %s", c->old_name, strerror(errno));
	return 0;
fail:
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	close(c->dir_fd);
	c->dir_fd = -1;
	return r;
}

int console_out_open(struct console_out *c, const char *path, uint64_t max_bytes)
{
	struct stat st;
	int r;

	if (max_bytes < 2ull * CONSOLE_CHUNK_MAX)
		return -EINVAL;
	r = init_common(c);
	if (r < 0)
		return r;
	if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		r = connect_socket(c, path);
	else
		r = open_file(c, path, max_bytes);
	if (r < 0)
		sv_ratelimit_destroy(&c->warn_rl);
	return r;
}

int console_out_open_fd(struct console_out *c, int fd, uint64_t max_bytes)
{
	struct stat st;
	int r, fl;

	if (max_bytes < 2ull * CONSOLE_CHUNK_MAX || fd < 0)
		return -EINVAL;
	r = init_common(c);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		c->dir_fd = fd;
		r = open_in_dir(c, CONSOLE_DIR_FILE, max_bytes);
		if (r < 0)
			sv_ratelimit_destroy(&c->warn_rl);
		return r;
	}
	c->fd = fd;
	c->owned = true;
	if (S_ISSOCK(st.st_mode)) {
		fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
			r = -errno;
			goto fail;
		}
		c->drop_when_full = true;
	} else if (S_ISREG(st.st_mode)) {
		/* No directory to rotate in: the one file is truncated at the cap. */
		c->rotate_bytes = max_bytes / 2;
		c->size = (uint64_t)st.st_size;
		snprintf(c->name, sizeof(c->name), "the console file");
	}
	return 0;
fail:
	close(fd);
	c->fd = -1;
	sv_ratelimit_destroy(&c->warn_rl);
	return r;
}

void console_out_destroy(struct console_out *c)
{
	if (c->owned && c->fd >= 0)
		close(c->fd);
	if (c->dir_fd >= 0)
		close(c->dir_fd);
	c->fd = c->dir_fd = -1;
	sv_ratelimit_destroy(&c->warn_rl);
}

/* Gives up on the console: the guest carries on without one. */
static void give_up(struct console_out *c, const char *what, int err)
{
	sv_warn("console: %s: %s; guest console output is discarded from now on", what, strerror(err));
	if (c->owned)
		close(c->fd);
	c->fd = -1;
}

/* NAME becomes NAME.1 (replacing the older one) and a new, empty NAME takes the output. */
static void rotate(struct console_out *c)
{
	int fd, err;

	if (c->dir_fd < 0) {
		if (ftruncate(c->fd, 0) < 0 || lseek(c->fd, 0, SEEK_SET) < 0) {
			give_up(c, "cannot truncate the console file", errno);
			return;
		}
		c->size = 0;
		c->truncations++;
		return;
	}
	if (renameat(c->dir_fd, c->name, c->dir_fd, c->old_name) == 0) {
		fd = openat(c->dir_fd, c->name, CONSOLE_ROTATE_FLAGS, 0640);
		if (fd >= 0) {
			close(c->fd);
			c->fd = fd;
			c->size = 0;
			c->rotations++;
			return;
		}
		/* The descriptor in hand is NAME.1 now; truncating it keeps the bound. */
		err = errno;
	} else {
		err = errno;
	}
	if (ftruncate(c->fd, 0) < 0) {
		give_up(c, "cannot rotate or truncate the console file", errno);
		return;
	}
	c->size = 0;
	c->truncations++;
	sv_warn_ratelimited(&c->warn_rl, "console: cannot rotate %s to %s: %s; truncated it instead (older output lost)",
			    c->name, c->old_name, strerror(err));
}

void console_out_write(struct console_out *c, const char *buf, size_t len)
{
	size_t done = 0;

	if (c->fd < 0 || len == 0)
		return;
	if (c->rotate_bytes) {
		if (len > c->rotate_bytes) { /* the newest part only */
			buf += len - c->rotate_bytes;
			len = (size_t)c->rotate_bytes;
		}
		if (c->size > 0 && c->size + len > c->rotate_bytes)
			rotate(c);
		if (c->fd < 0)
			return;
	}
	while (done < len) {
		ssize_t n = write(c->fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && c->drop_when_full) {
			c->dropped_bytes += len - done;
			sv_warn_ratelimited(&c->warn_rl,
					    "console: the console socket's reader is behind; dropped %zu bytes of guest "
					    "output (%llu so far)",
					    len - done, (unsigned long long)c->dropped_bytes);
			return;
		}
		if (n <= 0) {
			/* A reader that went away, a full disk: neither may stop the guest. */
			give_up(c, "writing guest output", n < 0 ? errno : EIO);
			return;
		}
		done += (size_t)n;
	}
	c->size += done;
}
