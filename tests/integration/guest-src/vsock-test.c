/*
 * Guest-side helper for the vsock integration test (static, in the test initramfs).
 *   vsock-test echo PORT          serve: echo every connection's bytes back (a child each)
 *   vsock-test wait PORT          accept one connection, then exit 0
 *   vsock-test connect PORT MSG   connect to the host (CID 2), send MSG, print the reply
 */
#include <linux/vm_sockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int listen_on(unsigned port)
{
	struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
				    .svm_port = port };
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0) {
		perror("vsock listen");
		exit(1);
	}
	return fd;
}

static void echo(int c)
{
	static char buf[65536];
	ssize_t n;

	while ((n = read(c, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(c, buf + off, (size_t)(n - off));

			if (w <= 0)
				exit(1);
			off += w;
		}
	}
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "echo") == 0) {
		int fd = listen_on((unsigned)atoi(argv[2]));

		signal(SIGCHLD, SIG_IGN);
		for (;;) {
			int c = accept(fd, NULL, NULL);

			if (c < 0)
				continue;
			if (fork() == 0)
				echo(c);
			close(c);
		}
	}
	if (argc >= 3 && strcmp(argv[1], "wait") == 0) {
		int fd = listen_on((unsigned)atoi(argv[2]));

		return accept(fd, NULL, NULL) < 0;
	}
	if (argc >= 4 && strcmp(argv[1], "connect") == 0) {
		struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST,
					    .svm_port = (unsigned)atoi(argv[2]) };
		char reply[4096] = "";
		size_t got = 0;
		ssize_t n;
		int fd = socket(AF_VSOCK, SOCK_STREAM, 0);

		if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
			perror("vsock connect");
			return 1;
		}
		if (write(fd, argv[3], strlen(argv[3])) < 0)
			return 1;
		shutdown(fd, SHUT_WR);
		while (got < sizeof(reply) - 1 && (n = read(fd, reply + got, sizeof(reply) - 1 - got)) > 0)
			got += (size_t)n;
		printf("VSOCK-REPLY %s\n", reply);
		return 0;
	}
	fprintf(stderr, "usage: vsock-test echo PORT | wait PORT | connect PORT MSG\n");
	return 2;
}
