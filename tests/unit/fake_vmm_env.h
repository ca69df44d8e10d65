#ifndef SANDVM_TESTS_UNIT_FAKE_VMM_ENV_H
#define SANDVM_TESTS_UNIT_FAKE_VMM_ENV_H

/*
 * tests/unit/fake-vmm (built beside each test binary) in a fresh directory:
 * the VMM's vsock socket in front of the real guest agent, for the tests of
 * what talks to a guest over vsock without KVM.
 */

#include <arpa/inet.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"

struct fake_vmm_env {
	char dir[64], vsock[96], control[96];
	pid_t vmm;
};

/*
 * Starts the fake VMM in /tmp/PREFIX.XXXXXX and waits (up to 5 s) for its
 * vsock socket and the agent's relay socket. SIGPIPE is ignored from then on.
 * 0, or -1 when it cannot start.
 */
static inline int fake_vmm_env_start(struct fake_vmm_env *e, const char *prefix)
{
	char self[PATH_MAX], vmm[PATH_MAX + 32], relay[128];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	struct stat st;

	if (n <= 0)
		return -1;
	self[n] = '\0';
	snprintf(vmm, sizeof(vmm), "%s/fake-vmm", dirname(self));
	snprintf(e->dir, sizeof(e->dir), "/tmp/%s.XXXXXX", prefix);
	if (!mkdtemp(e->dir))
		return -1;
	snprintf(e->vsock, sizeof(e->vsock), "%s/vsock", e->dir);
	snprintf(e->control, sizeof(e->control), "%s/control", e->dir);
	e->vmm = fork();
	if (e->vmm < 0)
		return -1;
	if (e->vmm == 0) {
		execl(vmm, vmm, "--vsock", e->vsock, "--control", e->control, (char *)NULL);
		_exit(127);
	}
	signal(SIGPIPE, SIG_IGN);
	snprintf(relay, sizeof(relay), "%s/agent.sock.relay", e->dir);
	for (int i = 0; i < 500; i++) {
		if (stat(relay, &st) == 0 && stat(e->vsock, &st) == 0)
			break;
		usleep(10000);
	}
	return 0;
}

/* Stops the fake VMM and removes its directory: 0, or -1 when the removal failed. */
static inline int fake_vmm_env_stop(struct fake_vmm_env *e)
{
	char cmd[128];

	kill(e->vmm, SIGTERM);
	waitpid(e->vmm, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	return system(cmd) == 0 ? 0 : -1;
}

/*
 * A "guest server": the fake VMM's agent dials 127.0.0.1:PORT on this host.
 * A listening socket on a free loopback port (*port); fails the test case
 * (cmocka, unit.h) when it cannot listen.
 */
static inline int fake_guest_listener(unsigned *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

#endif
