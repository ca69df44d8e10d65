/*
 * The guest agent's event loop and the host client, end to end, without a
 * VM: the agent runs as an ordinary process (its --unix test mode, built
 * beside this binary, with the same sanitizers) and commands run on this
 * host. What needs a real guest (PID 1 duties, vsock, users) is covered by
 * the integration tests; this covers the protocol handling, flow control and
 * hostile input, under ASan/UBSan.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "agent_proto.h"
#include "unit.h"

static pid_t agent_pid;
static char dir[64];
static char sock_path[100];

static int connect_raw(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock_path);
	assert_true(fd >= 0);
	for (int i = 0; i < 500; i++) {
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
			return fd;
		usleep(10000);
	}
	fail_msg("cannot connect to the agent at %s", sock_path);
	return -1;
}

static void client(struct agent_client *c)
{
	int r = agent_client_attach_fd(c, connect_raw(), 10000);

	if (r)
		fail_msg("attach: %s", agent_client_error(c));
}

static int setup(void **state)
{
	char self[PATH_MAX], agent[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	(void)state;
	if (n <= 0)
		return -1;
	self[n] = '\0';
	snprintf(agent, sizeof(agent), "%s/sandvm-agent", dirname(self));
	snprintf(dir, sizeof(dir), "/tmp/sandvm-agent-test.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(sock_path, sizeof(sock_path), "%s/agent.sock", dir);
	agent_pid = fork();
	if (agent_pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDOUT_FILENO);
		execl(agent, agent, "--unix", sock_path, (char *)NULL);
		fprintf(stderr, "cannot run %s: %s\n", agent, strerror(errno));
		_exit(127);
	}
	signal(SIGPIPE, SIG_IGN);
	return agent_pid > 0 ? 0 : -1;
}

static int teardown(void **state)
{
	int st = 0;
	char cmd[128];

	(void)state;
	kill(agent_pid, SIGTERM);
	waitpid(agent_pid, &st, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		return -1;
	/* Killed by our SIGTERM, not by a sanitizer or a crash of its own. */
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM ? 0 : -1;
}

static int temp_fd(void)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/tmp.XXXXXX", dir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	return fd;
}

static size_t slurp(int fd, char *buf, size_t cap)
{
	ssize_t n = pread(fd, buf, cap - 1, 0);

	assert_true(n >= 0);
	buf[n] = '\0';
	return (size_t)n;
}

static int run(struct agent_client *c, const char *const *argv, int in_fd, int out_fd, int err_fd,
	       uint32_t timeout_ms, struct agent_exec_status *st)
{
	struct agent_exec_request req = { .argv = argv, .timeout_ms = timeout_ms };
	struct agent_exec_io io = { .in_fd = in_fd, .out_fd = out_fd, .err_fd = err_fd, .signal_fd = -1 };

	return agent_client_exec(c, &req, &io, st);
}

static void test_ping(void **state)
{
	struct agent_client c;

	(void)state;
	client(&c);
	assert_int_equal(agent_client_ping(&c, 5000), 0);
	assert_non_null(strstr(c.agent_name, "sandvm-agent"));
	/* Not PID 1: there is no VM to power off. */
	assert_int_equal(agent_client_shutdown(&c, AGENT_PROTO_POWEROFF), -EPERM);
	assert_int_equal(agent_client_ping(&c, 5000), 0);
	agent_client_close(&c);
}

static void test_exec_output_and_status(void **state)
{
	static const char *const both[] = { "/bin/sh", "-c", "echo out; echo err >&2; exit 7", NULL };
	static const char *const sig[] = { "/bin/sh", "-c", "kill -KILL $$", NULL };
	static const char *const missing[] = { "no-such-program-here", NULL };
	struct agent_exec_status st;
	struct agent_client c;
	int out = temp_fd(), err = temp_fd();
	char buf[256];

	(void)state;
	client(&c);
	assert_int_equal(run(&c, both, -1, out, err, 0, &st), 0);
	assert_int_equal(st.kind, AGENT_PROTO_EXIT_EXITED);
	assert_int_equal(st.code, 7);
	assert_int_equal(agent_exec_status_code(&st), 7);
	slurp(out, buf, sizeof(buf));
	assert_string_equal(buf, "out\n");
	slurp(err, buf, sizeof(buf));
	assert_string_equal(buf, "err\n");

	assert_int_equal(run(&c, sig, -1, -1, -1, 0, &st), 0);
	assert_int_equal(st.kind, AGENT_PROTO_EXIT_SIGNALED);
	assert_int_equal(agent_exec_status_code(&st), 137);

	assert_int_equal(run(&c, missing, -1, -1, -1, 0, &st), -ENOENT);
	assert_non_null(strstr(agent_client_error(&c), "cannot execute no-such-program-here"));
	/* The connection is still good after a refused exec. */
	assert_int_equal(agent_client_ping(&c, 5000), 0);
	close(out);
	close(err);
	agent_client_close(&c);
}

/* 4 MiB through cat: stdin credit, output windows and ordering, byte for byte. */
static void test_exec_stdin_roundtrip(void **state)
{
	static const char *const cat[] = { "/bin/cat", NULL };
	const size_t size = 4u << 20;
	uint8_t *data = malloc(size), *back = malloc(size);
	struct agent_exec_status st;
	struct agent_client c;
	int in = temp_fd(), out = temp_fd();
	uint64_t seed = 42;

	(void)state;
	assert_non_null(data);
	assert_non_null(back);
	for (size_t i = 0; i < size; i++)
		data[i] = (uint8_t)unit_rand(&seed);
	assert_int_equal(pwrite(in, data, size, 0), (ssize_t)size);
	lseek(in, 0, SEEK_SET);
	client(&c);
	assert_int_equal(run(&c, cat, in, out, -1, 0, &st), 0);
	assert_int_equal(agent_exec_status_code(&st), 0);
	assert_int_equal(st.out_bytes, size);
	assert_int_equal(pread(out, back, size, 0), (ssize_t)size);
	assert_memory_equal(data, back, size);
	free(data);
	free(back);
	close(in);
	close(out);
	agent_client_close(&c);
}

static void test_exec_timeout_kills_group(void **state)
{
	char pidfile[128], cmd[256], buf[64];
	const char *const argv[] = { "/bin/sh", "-c", cmd, NULL };
	struct agent_exec_status st;
	struct agent_client c;
	pid_t bg;
	int fd;

	(void)state;
	snprintf(pidfile, sizeof(pidfile), "%s/bg.pid", dir);
	snprintf(cmd, sizeof(cmd), "sleep 60 & echo $! > %s; wait", pidfile);
	client(&c);
	assert_int_equal(run(&c, argv, -1, -1, -1, 300, &st), 0);
	assert_int_equal(st.kind, AGENT_PROTO_EXIT_TIMED_OUT);
	assert_int_equal(st.code, SIGKILL);
	assert_int_equal(agent_exec_status_code(&st), 124);
	fd = open(pidfile, O_RDONLY);
	assert_true(fd >= 0);
	slurp(fd, buf, sizeof(buf));
	close(fd);
	bg = (pid_t)atoi(buf);
	assert_true(bg > 0);
	/* The background sleep was in the group: killed, and reaped by the agent. */
	for (int i = 0; i < 200 && kill(bg, 0) == 0; i++)
		usleep(10000);
	assert_int_equal(kill(bg, 0), -1);
	agent_client_close(&c);
}

/* The client's own bounds hold whatever the guest does: output over the limit, no exit by the deadline. */
static void test_exec_client_bounds(void **state)
{
	const char *const flood[] = { "/bin/sh", "-c", "head -c 10000000 /dev/zero", NULL };
	const char *const stall[] = { "/bin/sh", "-c", "sleep 30", NULL };
	const char *const small[] = { "/bin/sh", "-c", "echo fits", NULL };
	struct agent_exec_request req = { .argv = flood, .output_limit = 65536 };
	struct agent_exec_io io = { .in_fd = -1, .out_fd = -1, .err_fd = -1, .signal_fd = -1 };
	struct agent_exec_status st;
	struct agent_client c;
	struct timespec t0, t1;
	double took;

	(void)state;
	client(&c);
	assert_int_equal(agent_client_exec(&c, &req, &io, &st), -EFBIG);
	assert_non_null(strstr(agent_client_error(&c), "more than 65536 bytes"));
	/* It stopped soon after the limit, not after all 10 MB. */
	assert_true(st.out_bytes < 65536 + 2 * 65536);
	agent_client_close(&c);

	client(&c);
	req = (struct agent_exec_request){ .argv = stall, .deadline_ms = 300 };
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(agent_client_exec(&c, &req, &io, &st), -ETIMEDOUT);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (took < 0.25 || took > 2.0)
		fail_msg("the deadline of 300 ms ended the call after %.3f s", took);
	agent_client_close(&c);

	/* Within the bounds nothing changes. */
	client(&c);
	req = (struct agent_exec_request){ .argv = small, .output_limit = 65536, .deadline_ms = 10000 };
	assert_int_equal(agent_client_exec(&c, &req, &io, &st), 0);
	assert_int_equal(st.out_bytes, 5);
	assert_int_equal(agent_exec_status_code(&st), 0);
	agent_client_close(&c);
}

static int stop_after_ten(void *ctx, const struct agent_proto_list_entry *e)
{
	unsigned *n = ctx;

	(void)e;
	return ++*n == 10 ? -E2BIG : 0;
}

/* A listing its caller stops ends there (a guest could send entries for ever), closing the connection. */
static void test_list_stops(void **state)
{
	char path[160];
	struct agent_client c;
	unsigned n = 0;

	(void)state;
	for (int i = 0; i < 50; i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/many/f%d", dir, i);
		if (i == 0) {
			char sub[140];

			snprintf(sub, sizeof(sub), "%s/many", dir);
			assert_int_equal(mkdir(sub, 0700), 0);
		}
		fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		close(fd);
	}
	snprintf(path, sizeof(path), "%s/many", dir);
	client(&c);
	assert_int_equal(agent_client_list(&c, path, stop_after_ten, &n), -E2BIG);
	assert_int_equal(n, 10);
	assert_int_equal(c.fd, -1);
	agent_client_close(&c);
	for (int i = 0; i < 50; i++) {
		snprintf(path, sizeof(path), "%s/many/f%d", dir, i);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/many", dir);
	rmdir(path);
}

static void test_files(void **state)
{
	char path[256], sub[256];
	struct agent_proto_stat_result st;
	struct agent_client c;
	int in = temp_fd(), out = temp_fd();
	uint64_t n;
	char buf[128];

	(void)state;
	client(&c);
	snprintf(sub, sizeof(sub), "%s/a/b/c", dir);
	assert_int_equal(agent_client_mkdir(&c, sub, 0755, true), 0);
	assert_int_equal(agent_client_mkdir(&c, sub, 0755, false), -EEXIST);
	snprintf(path, sizeof(path), "%s/a/b/c/file", dir);
	assert_int_equal(pwrite(in, "hello agent", 11, 0), 11);
	assert_int_equal(agent_client_write_file(&c, path, in, 0600, &n), 0);
	assert_int_equal(n, 11);
	assert_int_equal(agent_client_stat(&c, path, &st), 0);
	assert_int_equal(st.type, AGENT_PROTO_FT_REGULAR);
	assert_int_equal(st.size, 11);
	assert_int_equal(st.mode, 0600);
	assert_int_equal(agent_client_read_file(&c, path, out, 0, &n), 0);
	slurp(out, buf, sizeof(buf));
	assert_string_equal(buf, "hello agent");
	assert_int_equal(agent_client_read_file(&c, path, out, 5, &n), -EFBIG);
	assert_int_equal(agent_client_read_file(&c, sub, out, 0, &n), -EISDIR);
	assert_int_equal(agent_client_stat(&c, "/no/such/path", &st), -ENOENT);
	assert_int_equal(agent_client_stat(&c, "relative/path", &st), -EINVAL);
	lseek(in, 0, SEEK_SET);
	assert_int_equal(agent_client_write_file(&c, sub, in, 0600, &n), -EISDIR);
	snprintf(path, sizeof(path), "%s/a", dir);
	assert_int_equal(agent_client_remove(&c, path, false), -ENOTEMPTY);
	assert_int_equal(agent_client_remove(&c, path, true), 0);
	assert_int_equal(agent_client_stat(&c, path, &st), -ENOENT);
	assert_int_equal(agent_client_remove(&c, "/", true), -EPERM);
	/* Still serving after all those errors. */
	assert_int_equal(agent_client_ping(&c, 5000), 0);
	close(in);
	close(out);
	agent_client_close(&c);
}

/* ---- raw frames ---- */

static void send_all(int fd, const void *p, size_t len)
{
	assert_int_equal(send(fd, p, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void raw_hello(int fd)
{
	struct agent_proto_hello h = { .min_version = 1, .max_version = 1, .name = "test" };
	uint8_t buf[256];
	size_t len;

	assert_int_equal(agent_proto_encode_hello(buf, sizeof(buf), &h, &len), 0);
	send_all(fd, buf, len);
}

/* Reads frames until one of `type` on `stream` arrives (or the timeout); counts data bytes. */
struct raw_reader {
	int fd;
	struct agent_proto_reader r;
	uint8_t *payload;
	uint8_t in[65536];
	size_t in_len, in_off;
};

static int raw_next(struct raw_reader *rr, struct agent_proto_frame *f, int timeout_ms)
{
	for (;;) {
		while (rr->in_off < rr->in_len) {
			size_t used;
			int r = agent_proto_reader_feed(&rr->r, rr->in + rr->in_off, rr->in_len - rr->in_off,
							&used, f);

			rr->in_off += used;
			assert_true(r >= 0);
			if (r == 1)
				return 1;
		}
		struct pollfd p = { .fd = rr->fd, .events = POLLIN };

		if (poll(&p, 1, timeout_ms) <= 0)
			return 0;
		ssize_t n = recv(rr->fd, rr->in, sizeof(rr->in), 0);

		if (n <= 0)
			return -1;
		rr->in_len = (size_t)n;
		rr->in_off = 0;
	}
}

static void raw_init(struct raw_reader *rr, int fd)
{
	memset(rr, 0, sizeof(*rr));
	rr->fd = fd;
	rr->payload = malloc(AGENT_PROTO_MAX_PAYLOAD);
	assert_non_null(rr->payload);
	agent_proto_reader_init(&rr->r, rr->payload, AGENT_PROTO_MAX_PAYLOAD);
}

static void raw_exec(int fd, uint32_t stream, const char *cmd)
{
	const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	const char *env[] = { "PATH=/usr/bin:/bin", NULL };
	struct agent_proto_exec_start m = { .argv = argv, .argc = 3, .env = env, .envc = 1 };
	uint8_t buf[1024];
	size_t len;

	assert_int_equal(agent_proto_encode_exec_start(buf, sizeof(buf), stream, &m, &len), 0);
	send_all(fd, buf, len);
}

/* The agent sends no more output than the window allows, and resumes on credit. */
static void test_flow_control(void **state)
{
	struct agent_proto_window w = { .direction = AGENT_PROTO_DIR_STDOUT, .credit = 1u << 20 };
	struct agent_proto_frame f;
	struct raw_reader rr;
	uint64_t got = 0;
	bool exited = false;
	uint8_t buf[64];
	size_t len;
	int fd = connect_raw(), r;

	(void)state;
	raw_init(&rr, fd);
	raw_hello(fd);
	assert_int_equal(raw_next(&rr, &f, 5000), 1);
	assert_int_equal(f.hdr.type, AGENT_PROTO_HELLO);
	raw_exec(fd, 5, "head -c 1000000 /dev/zero");
	/* No credit returned: output stops at exactly the initial window. */
	while ((r = raw_next(&rr, &f, 500)) == 1) {
		assert_int_equal(f.hdr.stream, 5);
		if (f.hdr.type == AGENT_PROTO_STDOUT)
			got += f.hdr.length - AGENT_PROTO_TLV_HEADER_SIZE;
		assert_int_not_equal(f.hdr.type, AGENT_PROTO_EXIT);
	}
	assert_int_equal(got, AGENT_PROTO_INITIAL_WINDOW);
	assert_int_equal(agent_proto_encode_window(buf, sizeof(buf), 5, &w, &len), 0);
	send_all(fd, buf, len);
	while (!exited && raw_next(&rr, &f, 5000) == 1) {
		if (f.hdr.type == AGENT_PROTO_STDOUT)
			got += f.hdr.length - AGENT_PROTO_TLV_HEADER_SIZE;
		exited = f.hdr.type == AGENT_PROTO_EXIT;
	}
	assert_true(exited);
	assert_int_equal(got, 1000000);
	free(rr.payload);
	close(fd);
}

/* Closing the connection kills what it started. */
static void test_disconnect_kills(void **state)
{
	struct agent_proto_exec_started started;
	struct agent_proto_frame f;
	struct raw_reader rr;
	int fd = connect_raw();
	pid_t pid;

	(void)state;
	raw_init(&rr, fd);
	raw_hello(fd);
	assert_int_equal(raw_next(&rr, &f, 5000), 1);
	raw_exec(fd, 9, "exec sleep 60");
	assert_int_equal(raw_next(&rr, &f, 5000), 1);
	assert_int_equal(f.hdr.type, AGENT_PROTO_EXEC_STARTED);
	assert_int_equal(agent_proto_decode_exec_started(&f, &started), 0);
	pid = (pid_t)started.pid;
	/* A second EXEC_START on the same open stream is refused, the first unharmed. */
	raw_exec(fd, 9, "true");
	assert_int_equal(raw_next(&rr, &f, 5000), 1);
	assert_int_equal(f.hdr.type, AGENT_PROTO_ERROR);
	assert_int_equal(kill(pid, 0), 0);
	close(fd);
	for (int i = 0; i < 300 && kill(pid, 0) == 0; i++)
		usleep(10000);
	assert_int_equal(kill(pid, 0), -1);
	free(rr.payload);
}

/* Garbage, frames before HELLO, truncated and random frames: connections die, the agent does not. */
/*
 * RESTORED against an agent that is not PID 1: it announces the feature,
 * validates the request, and refuses (EPERM, naming the first step) to change
 * this host's entropy, clock or network, even when the test runs as root.
 * The steps themselves run only in a VM (the L1 integration test).
 */
static void test_restored(void **state)
{
	uint8_t entropy[AGENT_PROTO_RESTORED_ENTROPY], buf[512], payload[256], t8[8] = { 1 };
	struct agent_proto_restored m;
	struct agent_proto_error e;
	struct agent_proto_frame f;
	struct agent_client c;
	struct raw_reader rr;
	char host_before[256], host_after[256];
	size_t len;
	int fd;

	(void)state;
	assert_int_equal(gethostname(host_before, sizeof(host_before)), 0);
	client(&c);
	assert_true(c.agent_features & AGENT_PROTO_FEATURE_RESTORED);
	assert_int_equal(agent_client_restored_prepare(&m, entropy), 0);
	assert_true(m.entropy == entropy && m.entropy_len == AGENT_PROTO_RESTORED_ENTROPY);
	assert_true(m.realtime_ns > 1600000000ull * 1000000000ull);
	m.hostname = "restored-test-never-set";
	m.machine_id = "0123456789abcdef0123456789abcdef";
	m.net = "10.99.0.2/30,10.99.0.1";
	m.mac = "02:00:00:00:99:02";
	m.dns = "10.99.0.1";
	assert_int_equal(agent_client_restored(&c, &m, 5000), -EPERM);
	assert_non_null(strstr(agent_client_error(&c), "entropy: not PID 1"));
	/* A value the protocol refuses does not leave the host. */
	m.mac = "01:00:00:00:00:01";
	assert_int_equal(agent_client_restored(&c, &m, 5000), -EINVAL);
	/* The connection is still good. */
	assert_int_equal(agent_client_ping(&c, 5000), 0);
	/* An agent without the feature is not sent the request. */
	c.agent_features = 0;
	m.mac = NULL;
	assert_int_equal(agent_client_restored(&c, &m, 5000), -EOPNOTSUPP);
	agent_client_close(&c);
	assert_int_equal(gethostname(host_after, sizeof(host_after)), 0);
	assert_string_equal(host_before, host_after);

	/* Past the host's encoder: a bad value reaches the agent, which names the field and changes nothing. */
	fd = connect_raw();
	raw_init(&rr, fd);
	raw_hello(fd);
	assert_int_equal(raw_next(&rr, &f, 5000), 1);
	len = 0;
	{
		uint8_t *p = payload;

		p[0] = 1, p[1] = 0, p[2] = 64, p[3] = p[4] = p[5] = 0;
		memcpy(p + 6, entropy, 64);
		len = 70;
		p[len] = 2, p[len + 1] = 0, p[len + 2] = 8, p[len + 3] = p[len + 4] = p[len + 5] = 0;
		memcpy(p + len + 6, t8, 8);
		len += 14;
		p[len] = 7, p[len + 1] = 0, p[len + 2] = 18, p[len + 3] = p[len + 4] = p[len + 5] = 0;
		memcpy(p + len + 6, "01:00:00:00:00:01", 18);
		len += 24;
	}
	{
		struct agent_proto_header h = { .type = AGENT_PROTO_RESTORED, .stream = 9, .length = (uint32_t)len };

		assert_int_equal(agent_proto_encode_header(&h, buf), 0);
		memcpy(buf + AGENT_PROTO_HEADER_SIZE, payload, len);
		send_all(fd, buf, AGENT_PROTO_HEADER_SIZE + len);
	}
	assert_int_equal(raw_next(&rr, &f, 5000), 1);
	assert_int_equal(f.hdr.type, AGENT_PROTO_ERROR);
	assert_int_equal(f.hdr.stream, 9);
	assert_int_equal(agent_proto_decode_error(&f, &e), 0);
	assert_int_equal(e.code, AGENT_PROTO_EINVAL);
	assert_non_null(strstr(e.message, "bad RESTORED"));
	close(fd);
	free(rr.payload);
}

static void test_hostile_frames(void **state)
{
	static const uint8_t garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct agent_proto_frame f;
	struct agent_client c;
	struct raw_reader rr;
	uint64_t seed = 7;
	uint8_t buf[4096];
	size_t len;
	int fd;

	(void)state;
	/* Not a frame: ERROR on stream 0, then closed. */
	fd = connect_raw();
	raw_init(&rr, fd);
	send_all(fd, garbage, sizeof(garbage) - 1);
	assert_int_equal(raw_next(&rr, &f, 5000), 1);
	assert_int_equal(f.hdr.type, AGENT_PROTO_ERROR);
	assert_int_equal(f.hdr.stream, 0);
	assert_int_equal(raw_next(&rr, &f, 5000), -1);
	close(fd);
	free(rr.payload);

	/* A valid frame, but not HELLO first. */
	fd = connect_raw();
	raw_init(&rr, fd);
	raw_exec(fd, 1, "true");
	assert_int_equal(raw_next(&rr, &f, 5000), 1);
	assert_int_equal(f.hdr.type, AGENT_PROTO_ERROR);
	assert_int_equal(raw_next(&rr, &f, 5000), -1);
	close(fd);
	free(rr.payload);

	/* After HELLO: frames with valid headers and random payloads, and agent-only types. */
	fd = connect_raw();
	raw_init(&rr, fd);
	raw_hello(fd);
	assert_int_equal(raw_next(&rr, &f, 5000), 1);
	for (int i = 0; i < 2000; i++) {
		static const uint8_t types[] = { 0x02, 0x04, 0x05, 0x10, 0x12, 0x13, 0x16, 0x17, 0x20, 0x22,
						 0x23, 0x25, 0x28, 0x29, 0x11, 0x14, 0x18, 0x21, 0x26 };
		struct agent_proto_header h = { .version = 1 };
		uint32_t plen = unit_rand(&seed) % 64;

		h.type = types[unit_rand(&seed) % sizeof(types)];
		h.stream = h.type == 0x02 || h.type == 0x04 ? 0 : 1 + unit_rand(&seed) % 4;
		if (h.type == 0x04)
			continue; /* a valid SHUTDOWN is answered, and that is not what this tests */
		h.length = plen;
		assert_int_equal(agent_proto_encode_header(&h, buf), 0);
		for (uint32_t k = 0; k < plen; k++)
			buf[AGENT_PROTO_HEADER_SIZE + k] = (uint8_t)unit_rand(&seed);
		send_all(fd, buf, AGENT_PROTO_HEADER_SIZE + plen);
		while (raw_next(&rr, &f, 0) == 1)
			;
	}
	/* A frame announcing more than the maximum payload is fatal to the connection. */
	{
		struct agent_proto_header h = { .version = 1, .type = AGENT_PROTO_STDIN, .stream = 1,
						 .length = 0 };

		assert_int_equal(agent_proto_encode_header(&h, buf), 0);
		buf[8] = 0xff;
		buf[9] = 0xff;
		buf[10] = 0xff;
		buf[11] = 0x7f;
		len = AGENT_PROTO_HEADER_SIZE;
		send_all(fd, buf, len);
		while (raw_next(&rr, &f, 5000) == 1)
			;
	}
	close(fd);
	free(rr.payload);

	client(&c);
	assert_int_equal(agent_client_ping(&c, 5000), 0);
	agent_client_close(&c);
}

/* ---- the relay port ---- */

/* A TCP listener on 127.0.0.1 (an ephemeral port) standing for a server in the guest. */
static int tcp_listener(unsigned *port)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	*port = ntohs(addr.sin_port);
	return fd;
}

static int relay_connect(void)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s.relay", sock_path);
	for (int i = 0; i < 500; i++) {
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
			return fd;
		usleep(10000);
	}
	fail_msg("cannot connect to the agent's relay at %s", addr.sun_path);
	return -1;
}

/* Reads until EOF or cap - 1 bytes, within 10 s. */
static size_t read_all(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		assert_int_equal(poll(&p, 1, 10000), 1);
		r = read(fd, buf + n, cap - 1 - n);
		assert_true(r >= 0);
		n += (size_t)r;
		if (r == 0 || n == cap - 1)
			break;
	}
	buf[n] = '\0';
	return n;
}

static int accept_within(int lfd, int ms)
{
	struct pollfd p = {.fd = lfd, .events = POLLIN};

	assert_int_equal(poll(&p, 1, ms), 1);
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void test_relay_round_trip(void **state)
{
	unsigned port;
	int lfd = tcp_listener(&port), host = relay_connect(), server;
	char line[64], buf[256];

	(void)state;
	/* The first bytes for the server may follow the line at once. */
	snprintf(line, sizeof(line), "RELAY %u\nhello", port);
	assert_int_equal(write(host, line, strlen(line)), (ssize_t)strlen(line));
	server = accept_within(lfd, 5000);
	assert_true(server >= 0);
	assert_int_equal(read(server, buf, 5), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(write(server, "world", 5), 5);
	shutdown(server, SHUT_WR);
	/* OK comes before any byte of the server's; its end is passed on. */
	assert_int_equal(read_all(host, buf, sizeof(buf)), 8);
	assert_string_equal(buf, "OK\nworld");
	/* Half-closed: the host can still send, and its end reaches the server too. */
	assert_int_equal(write(host, "more", 4), 4);
	shutdown(host, SHUT_WR);
	assert_int_equal(read_all(server, buf, sizeof(buf)), 4);
	assert_string_equal(buf, "more");
	close(server);
	close(host);
	close(lfd);
}

static void test_relay_refusals(void **state)
{
	static const char *const bad[] = {"RELAY 0\n", "RELAY 65536\n", "RELAY x\n", "RELAY 80 81\n", "GET / HTTP/1.1\n",
					  "RELAY -1\n", "relay 80\n", "RELAY 0000000000000000000000000000080"};
	unsigned port;
	int lfd = tcp_listener(&port), host;
	char line[64], buf[256];

	(void)state;
	/* Nothing listens: refused, said so, closed. */
	close(lfd);
	host = relay_connect();
	snprintf(line, sizeof(line), "RELAY %u\n", port);
	assert_int_equal(write(host, line, strlen(line)), (ssize_t)strlen(line));
	read_all(host, buf, sizeof(buf));
	assert_true(!strncmp(buf, "ERROR refused", 13));
	close(host);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		host = relay_connect();
		assert_int_equal(write(host, bad[i], strlen(bad[i])), (ssize_t)strlen(bad[i]));
		read_all(host, buf, sizeof(buf));
		if (strncmp(buf, "ERROR bad-request", 17))
			fail_msg("case %zu (%s): answered \"%s\"", i, bad[i], buf);
		close(host);
	}
	/* A client that leaves mid-line costs nothing: the agent still answers others. */
	host = relay_connect();
	assert_int_equal(write(host, "REL", 3), 3);
	close(host);
}

/* 4 MiB each way at once, the server reading slowly: every byte arrives, in order. */
static void test_relay_bulk_both_ways(void **state)
{
	const size_t total = 4u << 20;
	unsigned port;
	int lfd = tcp_listener(&port), host = relay_connect(), server;
	size_t sent[2] = {0}, got[2] = {0}, ok_left = 3;
	bool shut[2] = {false, false}, eof[2] = {false, false};
	char line[64];
	int fds[2];

	(void)state;
	snprintf(line, sizeof(line), "RELAY %u\n", port);
	assert_int_equal(write(host, line, strlen(line)), (ssize_t)strlen(line));
	server = accept_within(lfd, 5000);
	fds[0] = host;
	fds[1] = server;
	fcntl(host, F_SETFL, O_NONBLOCK);
	fcntl(server, F_SETFL, O_NONBLOCK);
	for (int rounds = 0; !(eof[0] && eof[1]); rounds++) {
		struct pollfd p[2];

		assert_true(rounds < 1000000);
		for (int i = 0; i < 2; i++)
			p[i] = (struct pollfd){.fd = fds[i], .events = (short)(POLLIN | (sent[i] < total ? POLLOUT : 0))};
		assert_true(poll(p, 2, 10000) > 0);
		for (int i = 0; i < 2; i++) {
			uint8_t buf[16384];
			ssize_t n;

			if ((p[i].revents & POLLOUT) && sent[i] < total) {
				size_t want = total - sent[i] < sizeof(buf) ? total - sent[i] : sizeof(buf);

				for (size_t k = 0; k < want; k++)
					buf[k] = (uint8_t)((sent[i] + k) * (i ? 7 : 13));
				n = write(fds[i], buf, want);
				if (n > 0)
					sent[i] += (size_t)n;
			}
			if (sent[i] == total && !shut[i]) {
				shutdown(fds[i], SHUT_WR);
				shut[i] = true;
			}
			/* The server reads 1 KiB at a time: the relay's buffers fill and hold the host back. */
			if (p[i].revents & (POLLIN | POLLHUP)) {
				n = read(fds[i], buf, i ? 1024 : sizeof(buf));
				if (n == 0)
					eof[i] = true;
				for (ssize_t k = 0; k < n; k++) {
					if (i == 0 && ok_left) {
						assert_int_equal(buf[k], "OK\n"[3 - ok_left]);
						ok_left--;
						continue;
					}
					if (buf[k] != (uint8_t)(got[i] * (i ? 13 : 7)))
						fail_msg("side %d byte %zu wrong", i, got[i]);
					got[i]++;
				}
			}
		}
	}
	assert_int_equal(got[0], total);
	assert_int_equal(got[1], total);
	close(host);
	close(server);
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ping),
		cmocka_unit_test(test_restored),
		cmocka_unit_test(test_exec_output_and_status),
		cmocka_unit_test(test_exec_stdin_roundtrip),
		cmocka_unit_test(test_exec_timeout_kills_group),
		cmocka_unit_test(test_exec_client_bounds),
		cmocka_unit_test(test_list_stops),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_flow_control),
		cmocka_unit_test(test_disconnect_kills),
		cmocka_unit_test(test_hostile_frames),
		cmocka_unit_test(test_relay_round_trip),
		cmocka_unit_test(test_relay_refusals),
		cmocka_unit_test(test_relay_bulk_both_ways),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
