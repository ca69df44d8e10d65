/*
 * The spare VMM's command-line message (lib/spare_args.c): encode and decode
 * round trips, every malformed message refused, random bytes never accepted
 * out of bounds, and the receive side in a child process: the log on stdout
 * and stderr, each descriptor on 3, 4, ... without close-on-exec, the socket
 * closed, the command line shown in /proc/self/cmdline (over the test
 * program's own arguments); a sender that goes away, a message without
 * descriptors and an oversized one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spare_args.h"
#include "unit.h"

static void round_trip(void **state)
{
	const char *argv[] = {"/usr/bin/vmm", "--vsock", "fd:5", "", "--cpus", "2", NULL};
	char buf[SPARE_ARGS_MAX_BYTES], *out[SPARE_ARGS_MAX_ARGS + 1];
	int len, n;

	(void)state;
	len = spare_args_encode(argv, buf, sizeof(buf));
	assert_true(len > 0);
	n = spare_args_decode(buf, (size_t)len, out, SPARE_ARGS_MAX_ARGS);
	assert_int_equal(n, 6);
	for (int i = 0; i < n; i++)
		assert_string_equal(out[i], argv[i]);
	assert_null(out[n]);
}

static void encode_limits(void **state)
{
	const char *none[] = {NULL};
	const char *many[SPARE_ARGS_MAX_ARGS + 2];
	char big[SPARE_ARGS_MAX_BYTES], buf[SPARE_ARGS_MAX_BYTES];
	const char *huge[] = {"vmm", big, NULL};

	(void)state;
	assert_int_equal(spare_args_encode(none, buf, sizeof(buf)), -E2BIG);
	for (unsigned i = 0; i < SPARE_ARGS_MAX_ARGS + 1; i++)
		many[i] = "x";
	many[SPARE_ARGS_MAX_ARGS + 1] = NULL;
	assert_int_equal(spare_args_encode(many, buf, sizeof(buf)), -E2BIG);
	many[SPARE_ARGS_MAX_ARGS] = NULL;
	assert_true(spare_args_encode(many, buf, sizeof(buf)) > 0);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(spare_args_encode(huge, buf, sizeof(buf)), -E2BIG);
	assert_int_equal(spare_args_encode(many, buf, 10), -E2BIG);
}

static void decode_refuses(void **state)
{
	char *out[4];
	char buf[64];
	const size_t m = sizeof(SPARE_ARGS_MAGIC);

	(void)state;
	/* Too short, wrong magic, no argument. */
	memcpy(buf, SPARE_ARGS_MAGIC, m);
	assert_int_equal(spare_args_decode(buf, m - 1, out, 3), -EINVAL);
	assert_int_equal(spare_args_decode(buf, m, out, 3), -EINVAL);
	buf[0] = 'S';
	memcpy(buf + m, "vmm", 4);
	assert_int_equal(spare_args_decode(buf, m + 4, out, 3), -EINVAL);
	/* The last argument without its NUL. */
	memcpy(buf, SPARE_ARGS_MAGIC, m);
	memcpy(buf + m, "vmm\0abc", 8); /* with the literal's own NUL at m + 7 */
	assert_int_equal(spare_args_decode(buf, m + 7, out, 3), -EINVAL);
	assert_int_equal(spare_args_decode(buf, m + 8, out, 3), 2);
	/* More than max_args. */
	memcpy(buf + m, "a\0b\0c\0d\0", 8);
	assert_int_equal(spare_args_decode(buf, m + 8, out, 3), -EINVAL);
	assert_int_equal(spare_args_decode(buf, m + 6, out, 3), 3);
	assert_null(out[3]);
	/* Longer than a message can be. */
	assert_int_equal(spare_args_decode(buf, SPARE_ARGS_MAX_BYTES + 1, out, 3), -EINVAL);
}

/* Random bytes after the magic: whatever is accepted lies inside the buffer and is NUL-ended. */
static void decode_random(void **state)
{
	char buf[256], *out[9];
	uint64_t seed = 7;
	const size_t m = sizeof(SPARE_ARGS_MAGIC);

	(void)state;
	for (int round = 0; round < 20000; round++) {
		size_t len = m + unit_rand(&seed) % (sizeof(buf) - m);

		memcpy(buf, SPARE_ARGS_MAGIC, m);
		for (size_t i = m; i < len; i++)
			buf[i] = (char)(unit_rand(&seed) % 4 ? 'a' + unit_rand(&seed) % 3 : 0);
		int n = spare_args_decode(buf, len, out, 8);

		if (n < 0) {
			assert_int_equal(n, -EINVAL);
			continue;
		}
		assert_true(n >= 1 && n <= 8);
		for (int i = 0; i < n; i++) {
			assert_true(out[i] >= buf + m && out[i] < buf + len);
			assert_true(out[i] + strlen(out[i]) < buf + len);
		}
		assert_null(out[n]);
	}
}

static int read_all(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	ssize_t n;

	while (got < cap - 1 && (n = read(fd, buf + got, cap - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	return (int)got;
}

/*
 * The child: receives, then reports on its stdout (the log) what it has:
 * argc, each descriptor 3.. read to its end, whether the socket is closed
 * and what its /proc/self/cmdline says.
 */
struct own_args {
	int argc;
	char **argv;
};

static int receiving_child(char **orig_argv, int orig_argc, int sock)
{
	struct spare_args sa;
	char text[256], cmdline[4096];
	int r = spare_args_receive(sock, &sa), fd, len;

	if (r < 0) {
		dprintf(STDOUT_FILENO, "receive %d\n", r);
		return 1;
	}
	spare_args_retitle(orig_argv, orig_argc, sa.argv);
	printf("argc %d argv1 %s\n", sa.argc, sa.argv[1]);
	for (fd = 3; fd < 5; fd++) {
		int flags = fcntl(fd, F_GETFD);

		len = read_all(fd, text, sizeof(text));
		printf("fd %d cloexec %d: %.*s\n", fd, flags & FD_CLOEXEC, len, text);
	}
	printf("sock %s\n", fcntl(sock, F_GETFD) < 0 ? "closed" : "open");
	fd = open("/proc/self/cmdline", O_RDONLY);
	len = read_all(fd, cmdline, sizeof(cmdline));
	close(fd);
	for (int i = 0; i < len; i++)
		if (!cmdline[i])
			cmdline[i] = ' ';
	printf("cmdline %s|\n", cmdline);
	fflush(stdout);
	return 0;
}

static int pipe_with(const char *text)
{
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(write(p[1], text, strlen(text)), (ssize_t)strlen(text));
	close(p[1]);
	return p[0];
}

static void receive_places_descriptors(void **state)
{
	const struct own_args *own = *state;
	char log[] = "/tmp/sandvm-spare-XXXXXX", text[4096], expect[64];
	const char *argv[] = {"/usr/bin/vmm", "--vsock", "fd:3", "--control", "fd:4", NULL};
	int pair[2], fds[2], logfd = mkstemp(log), status;
	pid_t pid;

	assert_true(logfd >= 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
	pid = fork();
	if (pid == 0) {
		/* This program's own arguments, as the kernel laid them out, are what /proc shows. */
		close(pair[0]);
		_exit(receiving_child(own->argv, own->argc, pair[1]));
	}
	close(pair[1]);
	fds[0] = pipe_with("vsock here");
	fds[1] = pipe_with("control here");
	assert_int_equal(spare_args_send(pair[0], argv, logfd, fds, 2), 0);
	close(fds[0]);
	close(fds[1]);
	close(pair[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	lseek(logfd, 0, SEEK_SET);
	read_all(logfd, text, sizeof(text));
	close(logfd);
	unlink(log);
	assert_non_null(strstr(text, "argc 5 argv1 --vsock\n"));
	assert_non_null(strstr(text, "fd 3 cloexec 0: vsock here\n"));
	assert_non_null(strstr(text, "fd 4 cloexec 0: control here\n"));
	assert_non_null(strstr(text, "sock closed\n"));
	/* As much of "/usr/bin/vmm --vsock fd:3 ..." as fits where the test's own arguments were. */
	snprintf(expect, sizeof(expect), "cmdline %.*s", (int)strlen(own->argv[0]), "/usr/bin/vmm --vsock fd:3");
	assert_non_null(strstr(text, expect));
}

/* What the receiving side returns for a message that went wrong (the child's exit status carries it). */
static int receive_in_child(void (*send_side)(int sock))
{
	int pair[2], status;
	pid_t pid;

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
	pid = fork();
	if (pid == 0) {
		struct spare_args sa;

		close(pair[0]);
		_exit(-spare_args_receive(pair[1], &sa));
	}
	close(pair[1]);
	send_side(pair[0]);
	close(pair[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return -WEXITSTATUS(status);
}

static void send_nothing(int sock)
{
	(void)sock;
}

static void send_without_fds(int sock)
{
	char buf[64];
	const char *argv[] = {"vmm", NULL};
	int len = spare_args_encode(argv, buf, sizeof(buf));

	assert_int_equal(write(sock, buf, (size_t)len), len);
}

static void send_oversized(int sock)
{
	static char buf[SPARE_ARGS_MAX_BYTES + 100];
	const char *argv[] = {"vmm", NULL};
	int len = spare_args_encode(argv, buf, sizeof(buf));
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.b,
			     .msg_controllen = sizeof(control.b)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	assert_true(len > 0);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	assert_int_equal(sendmsg(sock, &msg, 0), (ssize_t)sizeof(buf));
	close(fd);
}

static void send_smallest(int sock)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	const char *argv[] = {"vmm", NULL};
	int r;

	r = spare_args_send(sock, argv, fd, NULL, 0);
	assert_int_equal(r, 0);
	close(fd);
}

static void receive_refuses(void **state)
{
	(void)state;
	assert_int_equal(receive_in_child(send_nothing), -EPIPE);
	assert_int_equal(receive_in_child(send_without_fds), -EPROTO);
	assert_int_equal(receive_in_child(send_oversized), -EPROTO);
	/* The smallest good message: a log and one argument. */
	assert_int_equal(receive_in_child(send_smallest), 0);
}

static void send_limits(void **state)
{
	const char *argv[] = {"vmm", NULL};
	int fds[SPARE_ARGS_MAX_FDS];

	(void)state;
	for (unsigned i = 0; i < SPARE_ARGS_MAX_FDS; i++)
		fds[i] = 0;
	assert_int_equal(spare_args_send(-1, argv, 1, fds, SPARE_ARGS_MAX_FDS), -E2BIG);
	assert_int_equal(spare_args_send(-1, argv, 1, fds, 0), -EBADF);
}

/* The command line shown over a block of arguments: in place, cut short, the rest NULs. */
static void retitle_in_place(void **state)
{
	char block[64], *args[3];
	char *const shown[] = {"vmm", "--vsock", "fd:3", NULL};
	char *const longer[] = {"vmm", "--control", "/a/very/long/path/that/does/not/fit/in/the/block/at/all", NULL};

	(void)state;
	memset(block, 0, sizeof(block));
	args[0] = block;
	strcpy(args[0], "spare");
	args[1] = args[0] + 6;
	strcpy(args[1], "--args-from");
	args[2] = args[1] + 12;
	strcpy(args[2], "3                   ");
	spare_args_retitle(args, 3, shown);
	assert_memory_equal(block, "vmm\0--vsock\0fd:3\0", 17);
	for (size_t i = 17; i < 6 + 12 + 20; i++)
		assert_int_equal(block[i], 0);
	strcpy(args[0], "spare");
	strcpy(args[1], "--args-from");
	strcpy(args[2], "3                   ");
	spare_args_retitle(args, 3, longer);
	assert_memory_equal(block, "vmm\0--control\0/a/very/long/path/", 32);
	assert_int_equal(block[6 + 12 + 20], 0); /* the block's last NUL stays */
	assert_int_equal(block[6 + 12 + 20 - 1], 0);
}

int main(int argc, char **argv)
{
	struct own_args own = {argc, argv};
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip),
		cmocka_unit_test(encode_limits),
		cmocka_unit_test(decode_refuses),
		cmocka_unit_test(decode_random),
		cmocka_unit_test_prestate(receive_places_descriptors, &own),
		cmocka_unit_test(receive_refuses),
		cmocka_unit_test(send_limits),
		cmocka_unit_test(retitle_in_place),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
