/*
 * The message that turns a spare VMM process into a sandbox's VMM
 * (spare_args.h): encoding, a pure decoder, and the descriptor moves.
 */
#include "spare_args.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int spare_args_encode(const char *const *argv, char *buf, size_t cap)
{
	size_t len = sizeof(SPARE_ARGS_MAGIC), n;
	unsigned count = 0;

	if (cap > SPARE_ARGS_MAX_BYTES)
		cap = SPARE_ARGS_MAX_BYTES;
	if (len > cap)
		return -E2BIG;
	memcpy(buf, SPARE_ARGS_MAGIC, len);
	for (; argv[count]; count++) {
		n = strlen(argv[count]) + 1;
		if (count == SPARE_ARGS_MAX_ARGS || n > cap - len)
			return -E2BIG;
		memcpy(buf + len, argv[count], n);
		len += n;
	}
	return count ? (int)len : -E2BIG;
}

int spare_args_decode(char *buf, size_t len, char **argv, unsigned max_args)
{
	size_t off = sizeof(SPARE_ARGS_MAGIC);
	unsigned n = 0;

	if (len < off || len > SPARE_ARGS_MAX_BYTES || memcmp(buf, SPARE_ARGS_MAGIC, off) != 0)
		return -EINVAL;
	while (off < len) {
		char *end = memchr(buf + off, '\0', len - off);

		if (!end || n == max_args)
			return -EINVAL;
		argv[n++] = buf + off;
		off = (size_t)(end - buf) + 1;
	}
	if (n == 0)
		return -EINVAL;
	argv[n] = NULL;
	return (int)n;
}

int spare_args_send(int sock, const char *const *argv, int logfd, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SPARE_ARGS_MAX_FDS)];
		struct cmsghdr align;
	} control;
	char payload[SPARE_ARGS_MAX_BYTES];
	struct iovec iov;
	struct msghdr msg;
	struct cmsghdr *c;
	int len = spare_args_encode(argv, payload, sizeof(payload));
	ssize_t sent;

	if (len < 0)
		return len;
	if (nfds + 1 > SPARE_ARGS_MAX_FDS)
		return -E2BIG;
	memset(&control, 0, sizeof(control));
	memset(&msg, 0, sizeof(msg));
	iov.iov_base = payload;
	iov.iov_len = (size_t)len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = CMSG_SPACE(sizeof(int) * (nfds + 1));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * (nfds + 1));
	memcpy(CMSG_DATA(c), &logfd, sizeof(int));
	if (nfds)
		memcpy(CMSG_DATA(c) + sizeof(int), fds, sizeof(int) * nfds);
	do
		sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR);
	if (sent < 0)
		return -errno;
	return sent == len ? 0 : -EIO;
}

static void close_all(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/*
 * fds[0] onto stdout and stderr, fds[1..] onto 3, 4, ...: each first copied
 * above every target, so that no dup2 overwrites one still to be placed.
 */
static int place(int *fds, unsigned n)
{
	const int floor = 3 + (int)SPARE_ARGS_MAX_FDS;
	int r = 0;

	for (unsigned i = 0; i < n; i++) {
		int high = fcntl(fds[i], F_DUPFD_CLOEXEC, floor);

		if (high < 0) {
			close_all(fds, n);
			return -errno;
		}
		close(fds[i]);
		fds[i] = high;
	}
	if (dup2(fds[0], STDOUT_FILENO) < 0 || dup2(fds[0], STDERR_FILENO) < 0)
		r = -errno;
	for (unsigned i = 1; r == 0 && i < n; i++)
		if (dup2(fds[i], 2 + (int)i) < 0)
			r = -errno;
	close_all(fds, n);
	return r;
}

int spare_args_receive(int sock, struct spare_args *out)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SPARE_ARGS_MAX_FDS)];
		struct cmsghdr align;
	} control;
	int fds[SPARE_ARGS_MAX_FDS];
	unsigned nfds = 0;
	struct iovec iov;
	struct msghdr msg;
	ssize_t len;
	int r;

	memset(&msg, 0, sizeof(msg));
	iov.iov_base = out->buf;
	iov.iov_len = sizeof(out->buf);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof(control.buf);
	do
		len = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (len < 0 && errno == EINTR);
	if (len < 0)
		return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (nfds < SPARE_ARGS_MAX_FDS)
				fds[nfds++] = fd;
			else
				close(fd);
		}
	}
	if (len == 0 && nfds == 0)
		return -EPIPE;
	r = spare_args_decode(out->buf, (size_t)len, out->argv, SPARE_ARGS_MAX_ARGS);
	if (r < 0 || nfds == 0 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		close_all(fds, nfds);
		return -EPROTO;
	}
	out->argc = r;
	close(sock);
	return place(fds, nfds);
}

int spare_args_become(int *argc, char ***argv, struct spare_args *sa)
{
	const char *s = (*argv)[2];
	char *end;
	long fd = strtol(s, &end, 10);
	int r;

	if (*end || end == s || fd < 3 || fd > 1023)
		return -EBADF;
	r = spare_args_receive((int)fd, sa);
	if (r < 0)
		return r;
	spare_args_retitle(*argv, *argc, sa->argv);
	*argc = sa->argc;
	*argv = sa->argv;
	return 0;
}

void spare_args_retitle(char **orig_argv, int orig_argc, char *const *argv)
{
	char *area, *end;
	size_t room, n;

	if (orig_argc < 1)
		return;
	area = orig_argv[0];
	end = orig_argv[orig_argc - 1] + strlen(orig_argv[orig_argc - 1]);
	for (int i = 1; i < orig_argc; i++)
		if (orig_argv[i] != orig_argv[i - 1] + strlen(orig_argv[i - 1]) + 1)
			return; /* not laid out as the kernel does: leave it */
	room = (size_t)(end - area);
	memset(area, 0, room);
	for (char *p = area; *argv && room > 1; argv++) {
		n = strlen(*argv) + 1;
		if (n > room)
			n = room;
		memcpy(p, *argv, n - 1);
		p += n;
		room -= n;
	}
}
