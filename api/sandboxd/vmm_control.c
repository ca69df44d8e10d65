#include "vmm_control.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline: 1 ready, 0 timed out, -errno. */
static int wait_fd(int fd, short events, long long deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		long long left = deadline - now_ms();
		int r;

		if (left <= 0)
			return 0;
		r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* The first bytes of the request, with the descriptors riding on them (SCM_RIGHTS). */
static ssize_t send_with_fds(int fd, const char *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * VMM_CONTROL_MAX_FDS)];
	} cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	if (!nfds)
		return send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	memset(&cbuf, 0, sizeof(cbuf));
	msg.msg_control = cbuf.buf;
	msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	return sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static int exchange(int fd, const char *request, const int *fds, unsigned nfds, char *reply, size_t cap,
		    long long deadline)
{
	size_t len = strlen(request), sent = 0, got = 0;
	int r;

	while (sent < len) {
		ssize_t n = send_with_fds(fd, request + sent, len - sent, fds, sent ? 0 : nfds);

		if (n > 0) {
			sent += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -EIO;
		r = wait_fd(fd, POLLOUT, deadline);
		if (r <= 0)
			return r == 0 ? -ETIMEDOUT : r;
	}
	for (;;) {
		ssize_t n;

		r = wait_fd(fd, POLLIN, deadline);
		if (r <= 0)
			return r == 0 ? -ETIMEDOUT : r;
		n = recv(fd, reply + got, cap - 1 - got, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		reply[got] = '\0';
		if (memchr(reply, '\n', got) || got == cap - 1)
			break;
	}
	return got ? 0 : -EIO;
}

static int call(const char *socket_path, const char *request, const int *fds, unsigned nfds, char *reply,
		size_t cap, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	long long deadline;
	int fd, r;

	/* Arguments first: nothing is opened for a call that cannot be made. */
	if (!socket_path || !request || !*request || !reply || cap == 0 || timeout_ms <= 0 ||
	    nfds > VMM_CONTROL_MAX_FDS || (nfds && !fds))
		return -EINVAL;
	for (unsigned i = 0; i < nfds; i++)
		if (fds[i] < 0)
			return -EINVAL;
	reply[0] = '\0';
	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	deadline = now_ms() + timeout_ms;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A unix socket connects at once or fails: the VMM's backlog is the only wait. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	r = exchange(fd, request, fds, nfds, reply, cap, deadline);
	close(fd);
	return r;
}

int vmm_control_call_timeout(const char *socket_path, const char *request, char *reply, size_t cap,
			     int timeout_ms)
{
	return call(socket_path, request, NULL, 0, reply, cap, timeout_ms);
}

int vmm_control_call_fds(const char *socket_path, const char *request, const int *fds, unsigned nfds, char *reply,
			 size_t cap)
{
	return call(socket_path, request, fds, nfds, reply, cap, VMM_CONTROL_TIMEOUT_MS);
}

int vmm_control_call_fds_timeout(const char *socket_path, const char *request, const int *fds, unsigned nfds,
				 char *reply, size_t cap, int timeout_ms)
{
	return call(socket_path, request, fds, nfds, reply, cap, timeout_ms);
}

int vmm_control_call(const char *socket_path, const char *request, char *reply, size_t cap)
{
	return vmm_control_call_timeout(socket_path, request, reply, cap, VMM_CONTROL_TIMEOUT_MS);
}
