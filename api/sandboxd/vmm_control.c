/*
 * One request to a VMM's control socket (docs/vmm.md), from a worker
 * thread: a JSON line out, a JSON line back.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sandboxd.h"

#define CONTROL_REPLY_MS 10000

int vmm_control_call(const char *socket_path, const char *request, char *reply, size_t cap)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct pollfd p;
	size_t got = 0, len = strlen(request);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ready = 1;

	if (cap == 0)
		return -EINVAL;
	reply[0] = '\0';
	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", socket_path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	if (write(fd, request, len) != (ssize_t)len) {
		close(fd);
		return -EIO;
	}
	p.fd = fd;
	p.events = POLLIN;
	while (got < cap - 1 && (ready = poll(&p, 1, CONTROL_REPLY_MS)) == 1) {
		ssize_t n = read(fd, reply + got, cap - 1 - got);

		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(reply, '\n', got))
			break;
	}
	reply[got] = '\0';
	close(fd);
	/* No answer in time is not the same failure as a VMM gone: callers tell them apart. */
	if (ready == 0 && !memchr(reply, '\n', got))
		return -ETIMEDOUT;
	return got ? 0 : -EIO;
}
