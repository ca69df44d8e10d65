/*
 * File requests: read, write, stat, list, mkdir, remove, as root, with the
 * kernel's error mapped to the protocol's fixed codes and a message that
 * names the path. Every request is answered before the next one is read,
 * except FILE_WRITE, whose stream stays open across chunks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"

static uint32_t file_type(mode_t mode)
{
	if (S_ISREG(mode))
		return AGENT_PROTO_FT_REGULAR;
	if (S_ISDIR(mode))
		return AGENT_PROTO_FT_DIRECTORY;
	if (S_ISLNK(mode))
		return AGENT_PROTO_FT_SYMLINK;
	return AGENT_PROTO_FT_OTHER;
}

static void fail(struct agent_conn *c, uint32_t stream, const char *path, int err)
{
	agent_conn_send_error(c, stream, err, "%s: %s", path, strerror(err));
}

static bool absolute(struct agent_conn *c, uint32_t stream, const char *path)
{
	if (path[0] == '/')
		return true;
	agent_conn_send_error(c, stream, EINVAL, "%s: not an absolute path", path);
	return false;
}

static void send_data(struct agent_conn *c, uint32_t stream, uint32_t flags, const uint8_t *data,
		      size_t n)
{
	struct agent_proto_file_data m = { .flags = flags, .data = data, .len = (uint32_t)n };
	size_t len, cap = n + 64;
	uint8_t *p = agent_conn_reserve(c, cap);

	if (p && agent_proto_encode_file_data(p, cap, stream, &m, &len) == 0)
		agent_conn_commit(c, len);
}

/*
 * Chunks are sent one behind the read, so that the last one can carry EOF
 * when the next read finds the end.
 */
static void file_read(struct agent_conn *c, uint32_t stream, const struct agent_proto_file_read *m)
{
	static uint8_t bufs[2][AGENT_CHUNK];
	uint64_t off = m->offset;
	uint32_t left = m->max_len < AGENT_READ_REPLY_MAX ? m->max_len : AGENT_READ_REPLY_MAX;
	size_t pending = 0;
	int cur = 0, fd;
	struct stat st;

	if (!absolute(c, stream, m->path))
		return;
	fd = open(m->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fail(c, stream, m->path, errno);
		if (fd >= 0)
			close(fd);
		return;
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		fail(c, stream, m->path, EISDIR);
		return;
	}
	if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode)) {
		/* A FIFO or socket could block the agent, and with it every other request. */
		close(fd);
		agent_conn_send_error(c, stream, EINVAL, "%s: not a regular file", m->path);
		return;
	}
	if (off > (uint64_t)LLONG_MAX) {
		close(fd);
		agent_conn_send_error(c, stream, EINVAL, "%s: offset out of range", m->path);
		return;
	}
	for (;;) {
		size_t want = left < AGENT_CHUNK ? left : AGENT_CHUNK;
		ssize_t n;

		if (!want) {
			bool eof = S_ISREG(st.st_mode) && off >= (uint64_t)st.st_size;

			send_data(c, stream, AGENT_PROTO_DATA_LAST | (eof ? AGENT_PROTO_DATA_EOF : 0),
				  bufs[!cur], pending);
			break;
		}
		n = pread(fd, bufs[cur], want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fail(c, stream, m->path, errno);
			break;
		}
		if (n == 0) {
			send_data(c, stream, AGENT_PROTO_DATA_LAST | AGENT_PROTO_DATA_EOF, bufs[!cur],
				  pending);
			break;
		}
		if (pending)
			send_data(c, stream, 0, bufs[!cur], pending);
		pending = (size_t)n;
		off += (uint64_t)n;
		left -= (uint32_t)n;
		cur = !cur;
	}
	close(fd);
}

/* A regular file or nothing: writing into a device or FIFO could block the agent. */
static int open_for_write(const char *path, uint32_t mode, uint32_t flags)
{
	int oflags = O_WRONLY | O_CLOEXEC | O_NONBLOCK;
	struct stat st;
	int fd;

	if (flags & AGENT_PROTO_WRITE_CREATE)
		oflags |= O_CREAT;
	if (flags & AGENT_PROTO_WRITE_TRUNCATE)
		oflags |= O_TRUNC;
	if (flags & AGENT_PROTO_WRITE_APPEND)
		oflags |= O_APPEND;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	fd = open(path, oflags, (mode_t)mode);
	if (fd < 0)
		return -errno;
	return fd;
}

void agent_file_write_chunk(struct agent_conn *c, struct agent_stream *s,
			    const struct agent_proto_frame *f)
{
	struct agent_proto_file_write m;
	bool first = !s->write_path;
	int err = agent_proto_decode_file_write(f, &m);

	if (err) {
		if (first) {
			agent_conn_send_error(c, s->id, EINVAL, "bad FILE_WRITE: %s", strerror(-err));
			agent_conn_stream_close(c, s);
			return;
		}
		/* Without the flags the end of the stream is unknown: fail it now. */
		agent_conn_send_error(c, s->id, EINVAL, "bad FILE_WRITE chunk: %s", strerror(-err));
		agent_conn_stream_close(c, s);
		return;
	}
	if (first) {
		s->write_path = strdup(m.path);
		if (!s->write_path) {
			agent_conn_send_error(c, s->id, ENOMEM, "out of memory");
			agent_conn_stream_close(c, s);
			return;
		}
		if (!absolute(c, s->id, m.path)) {
			s->write_fd = -2; /* failed: ignore up to FINAL */
		} else {
			s->write_fd = open_for_write(m.path, m.mode, m.flags);
			if (s->write_fd < 0) {
				fail(c, s->id, m.path, -s->write_fd);
				s->write_fd = -2;
			}
		}
	}
	if (s->write_fd >= 0) {
		for (size_t done = 0; done < m.len;) {
			ssize_t n = write(s->write_fd, m.data + done, m.len - done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				fail(c, s->id, s->write_path, errno);
				close(s->write_fd);
				s->write_fd = -2;
				break;
			}
			done += (size_t)n;
		}
	}
	if (m.flags & AGENT_PROTO_WRITE_FINAL) {
		if (s->write_fd >= 0) {
			if (close(s->write_fd) < 0)
				fail(c, s->id, s->write_path, errno);
			else
				agent_conn_send_empty(c, AGENT_PROTO_OK, s->id);
		}
		s->write_fd = -1;
		agent_conn_stream_close(c, s);
	}
}

static void file_stat(struct agent_conn *c, uint32_t stream, const char *path)
{
	struct agent_proto_stat_result r;
	struct stat st;
	size_t len, cap = 128;
	uint8_t *p;

	if (!absolute(c, stream, path))
		return;
	if (lstat(path, &st) < 0) {
		fail(c, stream, path, errno);
		return;
	}
	r = (struct agent_proto_stat_result){
		.type = file_type(st.st_mode),
		.mode = st.st_mode & 07777,
		.size = (uint64_t)st.st_size,
		.mtime = st.st_mtim.tv_sec,
		.uid = st.st_uid,
		.gid = st.st_gid,
	};
	p = agent_conn_reserve(c, cap);
	if (p && agent_proto_encode_stat_result(p, cap, stream, &r, &len) == 0)
		agent_conn_commit(c, len);
}

static void file_list(struct agent_conn *c, uint32_t stream, const char *path)
{
	struct dirent *d;
	DIR *dir;

	if (!absolute(c, stream, path))
		return;
	dir = opendir(path);
	if (!dir) {
		fail(c, stream, path, errno);
		return;
	}
	while ((d = readdir(dir))) {
		struct agent_proto_list_entry e = { .name = d->d_name };
		struct stat st;
		size_t len, cap = strlen(d->d_name) + 96;
		uint8_t *p;

		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		if (fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			e.type = file_type(st.st_mode);
			e.size = (uint64_t)st.st_size;
		}
		p = agent_conn_reserve(c, cap);
		if (p && agent_proto_encode_list_entry(p, cap, stream, &e, &len) == 0)
			agent_conn_commit(c, len);
	}
	closedir(dir);
	agent_conn_send_empty(c, AGENT_PROTO_LIST_END, stream);
}

static int mkdir_parents(char *path, mode_t mode)
{
	struct stat st;

	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			int err = errno;

			*p = '/';
			return err;
		}
		*p = '/';
	}
	if (mkdir(path, mode) == 0)
		return 0;
	if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	return errno;
}

static void file_mkdir(struct agent_conn *c, uint32_t stream, const struct agent_proto_mkdir *m)
{
	int err = 0;

	if (!absolute(c, stream, m->path))
		return;
	if (m->flags & AGENT_PROTO_MKDIR_PARENTS) {
		char *copy = strdup(m->path);

		err = copy ? mkdir_parents(copy, (mode_t)m->mode) : ENOMEM;
		free(copy);
	} else if (mkdir(m->path, (mode_t)m->mode) < 0) {
		err = errno;
	}
	if (err)
		fail(c, stream, m->path, err);
	else
		agent_conn_send_empty(c, AGENT_PROTO_OK, stream);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0)
		return errno;
	return 0;
}

static void file_remove(struct agent_conn *c, uint32_t stream, const struct agent_proto_remove *m)
{
	struct stat st;
	int err = 0;

	if (!absolute(c, stream, m->path))
		return;
	if (!strcmp(m->path, "/")) {
		agent_conn_send_error(c, stream, EPERM, "refusing to remove /");
		return;
	}
	if (lstat(m->path, &st) < 0) {
		err = errno;
	} else if (!S_ISDIR(st.st_mode)) {
		if (unlink(m->path) < 0)
			err = errno;
	} else if (m->flags & AGENT_PROTO_REMOVE_RECURSIVE) {
		/* FTW_PHYS: a symlink inside is removed, never followed. */
		err = nftw(m->path, remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
		if (err < 0)
			err = errno;
	} else if (rmdir(m->path) < 0) {
		err = errno == EEXIST ? ENOTEMPTY : errno;
	}
	if (err)
		fail(c, stream, m->path, err);
	else
		agent_conn_send_empty(c, AGENT_PROTO_OK, stream);
}

void agent_file_request(struct agent_conn *c, const struct agent_proto_frame *f)
{
	uint32_t stream = f->hdr.stream;
	int err;

	switch (f->hdr.type) {
	case AGENT_PROTO_FILE_READ: {
		struct agent_proto_file_read m;

		err = agent_proto_decode_file_read(f, &m);
		if (!err)
			file_read(c, stream, &m);
		break;
	}
	case AGENT_PROTO_FILE_STAT:
	case AGENT_PROTO_FILE_LIST: {
		struct agent_proto_path m;

		err = agent_proto_decode_path(f, &m);
		if (!err && f->hdr.type == AGENT_PROTO_FILE_STAT)
			file_stat(c, stream, m.path);
		else if (!err)
			file_list(c, stream, m.path);
		break;
	}
	case AGENT_PROTO_MKDIR: {
		struct agent_proto_mkdir m;

		err = agent_proto_decode_mkdir(f, &m);
		if (!err)
			file_mkdir(c, stream, &m);
		break;
	}
	case AGENT_PROTO_REMOVE: {
		struct agent_proto_remove m;

		err = agent_proto_decode_remove(f, &m);
		if (!err)
			file_remove(c, stream, &m);
		break;
	}
	default:
		err = -EINVAL;
		break;
	}
	if (err)
		agent_conn_send_error(c, stream, EINVAL, "bad %s: %s", agent_proto_type_name(f->hdr.type),
				      strerror(-err));
}
