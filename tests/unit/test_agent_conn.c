/*
 * The libuv exec client (api/sandboxd/agent_conn.c): against the real agent
 * (its --unix mode) behind a fake VMM vsock socket that answers CONNECT and
 * then splices bytes, and against fake agents that misbehave: silent after
 * HELLO (a thousand of them at once), output beyond the window, oversized
 * frames, nothing listening.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "agent_conn.h"
#include "agent_proto.h"
#include "unit.h"

enum fake_mode {
	FAKE_PROXY,     /* splice to the real agent */
	FAKE_SILENT,    /* OK, HELLO, then nothing */
	FAKE_FLOOD,     /* OK, HELLO, EXEC_STARTED, then output beyond the window */
	FAKE_BIG_FRAME, /* OK, HELLO, then a frame over the client's limit */
	FAKE_NO_HELLO,  /* OK, then nothing: an agent that never says HELLO */
	FAKE_MUTE_FIRST, /* no answer at all to the first CONNECT, then as FAKE_PROXY */
};

struct fixture {
	char dir[64], agent_sock[100], vmm_sock[100];
	pid_t agent_pid;
	int listen_fd;
	atomic_int mode; /* enum fake_mode, read by the fake's thread */
	pthread_t thread;
	atomic_bool stop;
	int held[2048]; /* connections the fake keeps open */
	atomic_int nheld;
	uv_loop_t loop;
};

/* ---- the fake VMM ---- */

static int connect_unix(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	for (int i = 0; i < 500; i++) {
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
		usleep(10000);
	}
	close(fd);
	return -1;
}

static void write_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

static void *splice_main(void *arg)
{
	int *fds = arg, a = fds[0], b = fds[1];
	char buf[65536];

	free(fds);
	for (;;) {
		struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, -1) < 0)
			break;
		if (p[0].revents) {
			n = read(a, buf, sizeof(buf));
			if (n <= 0)
				break;
			write_all(b, buf, (size_t)n);
		}
		if (p[1].revents) {
			n = read(b, buf, sizeof(buf));
			if (n <= 0)
				break;
			write_all(a, buf, (size_t)n);
		}
	}
	close(a);
	close(b);
	return NULL;
}

static void send_frame(int fd, int (*enc)(uint8_t *buf, size_t cap, size_t *len, void *arg), void *arg)
{
	uint8_t buf[256 * 1024];
	size_t len;

	if (enc(buf, sizeof(buf), &len, arg) == 0)
		write_all(fd, buf, len);
}

static int enc_hello(uint8_t *buf, size_t cap, size_t *len, void *arg)
{
	struct agent_proto_hello h = { .min_version = AGENT_PROTO_VERSION_MIN,
				       .max_version = AGENT_PROTO_VERSION_MAX, .name = "fake" };

	(void)arg;
	return agent_proto_encode_hello(buf, cap, &h, len);
}

static int enc_started(uint8_t *buf, size_t cap, size_t *len, void *arg)
{
	struct agent_proto_exec_started m = { .pid = 42 };

	(void)arg;
	return agent_proto_encode_exec_started(buf, cap, 1, &m, len);
}

static int enc_output(uint8_t *buf, size_t cap, size_t *len, void *arg)
{
	static uint8_t zeros[64 * 1024];
	struct agent_proto_data d = { .data = zeros, .len = *(uint32_t *)arg };

	return agent_proto_encode_data(buf, cap, AGENT_PROTO_STDOUT, 1, &d, len);
}

static void *fake_main(void *arg)
{
	struct fixture *f = arg;

	while (!f->stop) {
		struct pollfd p = { .fd = f->listen_fd, .events = POLLIN };
		char line[64];
		size_t got = 0;
		int fd;

		if (poll(&p, 1, 50) != 1)
			continue;
		fd = accept(f->listen_fd, NULL, NULL);
		if (fd < 0)
			continue;
		while (got < sizeof(line) - 1 && read(fd, line + got, 1) == 1 && line[got] != '\n')
			got++;
		if (f->mode == FAKE_MUTE_FIRST) {
			/* A CONNECT lost on its way to a booting guest: never answered. */
			f->held[f->nheld] = fd;
			f->nheld++;
			f->mode = FAKE_PROXY;
			continue;
		}
		write_all(fd, "OK 1\n", 5);
		if (f->mode == FAKE_PROXY) {
			int *fds = malloc(2 * sizeof(int));
			pthread_t t;

			fds[0] = fd;
			fds[1] = connect_unix(f->agent_sock);
			pthread_create(&t, NULL, splice_main, fds);
			pthread_detach(t);
			continue;
		}
		if (f->mode != FAKE_NO_HELLO)
			send_frame(fd, enc_hello, NULL);
		if (f->mode == FAKE_FLOOD) {
			uint32_t n = 64 * 1024;

			send_frame(fd, enc_started, NULL);
			/* Five chunks of 64 KiB against a window of 256 KiB, no credit asked. */
			for (int i = 0; i < 5; i++)
				send_frame(fd, enc_output, &n);
		} else if (f->mode == FAKE_BIG_FRAME) {
			uint8_t hdr[AGENT_PROTO_HEADER_SIZE];
			struct agent_proto_header h = { .version = AGENT_PROTO_VERSION, .type = AGENT_PROTO_STDOUT, .stream = 1,
							 .length = 200 * 1024 };

			send_frame(fd, enc_started, NULL);
			agent_proto_encode_header(&h, hdr);
			write_all(fd, hdr, sizeof(hdr));
		}
		if (f->nheld < (int)(sizeof(f->held) / sizeof(f->held[0]))) {
			f->held[f->nheld] = fd;
			f->nheld++;
		} else {
			close(fd);
		}
	}
	return NULL;
}

static void fake_listen(struct fixture *f)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", f->vmm_sock);
	assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f->listen_fd, 4096), 0);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char self[PATH_MAX], agent[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	struct rlimit rl;

	if (!f || n <= 0)
		return -1;
	self[n] = '\0';
	snprintf(agent, sizeof(agent), "%s/sandvm-agent", dirname(self));
	snprintf(f->dir, sizeof(f->dir), "/tmp/sandvm-aconn.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->agent_sock, sizeof(f->agent_sock), "%s/agent.sock", f->dir);
	snprintf(f->vmm_sock, sizeof(f->vmm_sock), "%s/vsock", f->dir);
	f->listen_fd = -1;
	f->agent_pid = fork();
	if (f->agent_pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		execl(agent, agent, "--unix", f->agent_sock, (char *)NULL);
		_exit(127);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	uv_loop_init(&f->loop);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	int st;

	f->stop = true;
	if (f->listen_fd >= 0) {
		pthread_join(f->thread, NULL);
		close(f->listen_fd);
	}
	for (int i = 0; i < f->nheld; i++)
		close(f->held[i]);
	/* Everything the client opened is closed by now: the loop has nothing left. */
	uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	kill(f->agent_pid, SIGTERM);
	waitpid(f->agent_pid, &st, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* ---- the client under test ---- */

struct result {
	bool ended, started;
	int r;
	struct agent_exec_status st;
	char error[512];
	char out[4096], err[4096];
	size_t out_len, err_len;
	size_t out_total;
	bool hold_credit; /* consume nothing: flow control must stop the agent */
	size_t held_credit;
	struct agent_conn *ac;
	const char *stdin_text;
	size_t stdin_off;
};

static void on_started(void *ctx, uint32_t pid)
{
	struct result *res = ctx;

	(void)pid;
	res->started = true;
}

static void on_output(void *ctx, bool is_stdout, const uint8_t *data, size_t len)
{
	struct result *res = ctx;
	char *buf = is_stdout ? res->out : res->err;
	size_t *n = is_stdout ? &res->out_len : &res->err_len;

	if (*n + len < sizeof(res->out)) {
		memcpy(buf + *n, data, len);
		*n += len;
	}
	if (is_stdout)
		res->out_total += len;
	if (res->hold_credit)
		res->held_credit += len;
	else
		agent_conn_consumed(res->ac, is_stdout, len);
}

static void on_stdin_ready(void *ctx)
{
	struct result *res = ctx;

	if (!res->stdin_text || res->ended)
		return;
	res->stdin_off += agent_conn_stdin(res->ac, res->stdin_text + res->stdin_off,
					   strlen(res->stdin_text) - res->stdin_off);
	if (res->stdin_off == strlen(res->stdin_text))
		agent_conn_stdin_close(res->ac);
}

static void on_ended(void *ctx, int r, const struct agent_exec_status *st, const char *error)
{
	struct result *res = ctx;

	assert_false(res->ended);
	res->ended = true;
	res->r = r;
	res->st = *st;
	snprintf(res->error, sizeof(res->error), "%s", error);
	res->ac = NULL;
}

static const struct agent_conn_ops ops = {
	.started = on_started,
	.output = on_output,
	.stdin_ready = on_stdin_ready,
	.ended = on_ended,
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void start(struct fixture *f, struct result *res, const char *script, uint32_t connect_ms,
		  uint32_t deadline_ms)
{
	const char *argv[] = { "/bin/sh", "-c", script, NULL };
	struct agent_exec_request rq = { .argv = argv };
	struct agent_conn_config cfg = { .vsock_path = f->vmm_sock, .port = AGENT_CLIENT_PORT,
					 .connect_ms = connect_ms, .deadline_ms = deadline_ms };

	assert_int_equal(agent_conn_exec(&f->loop, &cfg, &rq, &ops, res, &res->ac), 0);
}

/* Runs the loop until res ended (or seconds passed); false on time out. */
static bool run_until_ended(struct fixture *f, struct result *res, double seconds)
{
	double end = now_s() + seconds;

	while (!res->ended && now_s() < end)
		uv_run(&f->loop, UV_RUN_ONCE);
	return res->ended;
}

static void drain_loop(struct fixture *f)
{
	for (int i = 0; i < 50; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void exec_output_and_status(void **state)
{
	struct fixture *f = *state;
	struct result res = { 0 };

	f->mode = FAKE_PROXY;
	fake_listen(f);
	start(f, &res, "echo out; echo err >&2; exit 3", 10000, 0);
	assert_true(run_until_ended(f, &res, 10));
	if (res.r)
		fail_msg("%d %s", res.r, res.error);
	assert_true(res.started);
	assert_string_equal(res.out, "out\n");
	assert_string_equal(res.err, "err\n");
	assert_int_equal(agent_exec_status_code(&res.st), 3);
	drain_loop(f);
}

static void stdin_and_signals(void **state)
{
	struct fixture *f = *state;
	struct result res = { .stdin_text = "hello through stdin\n" }, sig = { 0 };

	f->mode = FAKE_PROXY;
	fake_listen(f);
	start(f, &res, "cat", 10000, 0);
	assert_true(run_until_ended(f, &res, 10));
	assert_int_equal(res.r, 0);
	assert_string_equal(res.out, "hello through stdin\n");
	/* A signal asked for before the process runs is delivered once it does. */
	start(f, &sig, "sleep 30", 10000, 0);
	assert_int_equal(agent_conn_signal(sig.ac, SIGTERM), 0);
	assert_int_equal(agent_conn_signal(sig.ac, 0), -EINVAL);
	assert_true(run_until_ended(f, &sig, 10));
	assert_int_equal(sig.r, 0);
	assert_int_equal(sig.st.kind, AGENT_PROTO_EXIT_SIGNALED);
	assert_int_equal(sig.st.code, SIGTERM);
	drain_loop(f);
}

static void output_waits_for_credit(void **state)
{
	struct fixture *f = *state;
	struct result res = { .hold_credit = true };
	double end;

	f->mode = FAKE_PROXY;
	fake_listen(f);
	start(f, &res, "head -c 2000000 /dev/zero", 10000, 0);
	/* Without credit the agent stops at its window, and the process waits. */
	end = now_s() + 1.5;
	while (now_s() < end)
		uv_run(&f->loop, UV_RUN_NOWAIT), usleep(1000);
	assert_false(res.ended);
	assert_int_equal(res.out_total, AGENT_PROTO_INITIAL_WINDOW);
	res.hold_credit = false;
	agent_conn_consumed(res.ac, true, res.held_credit);
	assert_true(run_until_ended(f, &res, 20));
	assert_int_equal(res.r, 0);
	assert_int_equal(res.out_total, 2000000);
	drain_loop(f);
}

static void connect_retries_then_times_out(void **state)
{
	struct fixture *f = *state;
	struct result late = { 0 }, never = { 0 };
	double t0;

	/* The socket appears 300 ms after the call: the client retries and gets through. */
	f->mode = FAKE_PROXY;
	start(f, &late, "echo late", 10000, 0);
	t0 = now_s();
	while (now_s() - t0 < 0.3)
		uv_run(&f->loop, UV_RUN_NOWAIT), usleep(1000);
	fake_listen(f);
	assert_true(run_until_ended(f, &late, 10));
	if (late.r)
		fail_msg("%d %s", late.r, late.error);
	assert_string_equal(late.out, "late\n");
	/* A socket that never appears: -ETIMEDOUT at the connect time. */
	{
		const char *argv[] = { "true", NULL };
		struct agent_exec_request rq = { .argv = argv };
		struct agent_conn_config cfg = { .vsock_path = "/nonexistent/sandvm/vsock", .port = 1024,
						 .connect_ms = 300 };

		t0 = now_s();
		assert_int_equal(agent_conn_exec(&f->loop, &cfg, &rq, &ops, &never, &never.ac), 0);
		assert_true(run_until_ended(f, &never, 5));
		assert_int_equal(never.r, -ETIMEDOUT);
		assert_true(now_s() - t0 < 1.5);
	}
	drain_loop(f);
}

static void hostile_agents(void **state)
{
	struct fixture *f = *state;
	struct result flood = { .hold_credit = true }, big = { 0 }, silent = { 0 };

	f->mode = FAKE_FLOOD;
	fake_listen(f);
	start(f, &flood, "x", 5000, 0);
	assert_true(run_until_ended(f, &flood, 5));
	assert_int_equal(flood.r, -EPROTO);
	assert_non_null(strstr(flood.error, "window"));
	assert_true(flood.out_total <= AGENT_PROTO_INITIAL_WINDOW);

	f->mode = FAKE_BIG_FRAME;
	start(f, &big, "x", 5000, 0);
	assert_true(run_until_ended(f, &big, 5));
	assert_int_equal(big.r, -EPROTO);
	assert_non_null(strstr(big.error, "Message too long"));

	/* Silent after HELLO: the exec's deadline ends it. */
	f->mode = FAKE_SILENT;
	start(f, &silent, "x", 5000, 300);
	assert_true(run_until_ended(f, &silent, 5));
	assert_int_equal(silent.r, -ETIMEDOUT);
	drain_loop(f);
}

/* A thousand guests that answer HELLO and go silent cost timers, not threads: a real exec still runs at once. */
static void thousand_silent_guests(void **state)
{
	enum { SILENT = 1000 };
	struct fixture *f = *state;
	struct result *silent = calloc(SILENT, sizeof(*silent)), real = { 0 };
	double t0, took;
	int waited = 0;

	assert_non_null(silent);
	f->mode = FAKE_SILENT;
	fake_listen(f);
	for (int i = 0; i < SILENT; i++)
		start(f, &silent[i], "x", 10000, 0);
	while (f->nheld < SILENT && waited++ < 10000)
		uv_run(&f->loop, UV_RUN_NOWAIT), usleep(500);
	assert_int_equal(f->nheld, SILENT);
	drain_loop(f);
	f->mode = FAKE_PROXY; /* the fake splices the next connection to the real agent */
	t0 = now_s();
	start(f, &real, "echo alive", 10000, 0);
	assert_true(run_until_ended(f, &real, 10));
	took = now_s() - t0;
	assert_int_equal(real.r, 0);
	assert_string_equal(real.out, "alive\n");
	if (took > 1.0)
		fail_msg("a real exec beside %d silent ones took %.3f s", SILENT, took);
	for (int i = 0; i < SILENT; i++) {
		assert_false(silent[i].ended);
		agent_conn_cancel(silent[i].ac);
	}
	drain_loop(f);
	for (int i = 0; i < SILENT; i++)
		assert_false(silent[i].ended); /* cancelled: no callback */
	free(silent);
}

/* The readiness check: HELLO only; quick when the agent answers, bounded when it does not. */
static void hello_only(void **state)
{
	struct fixture *f = *state;
	struct result ok = { 0 }, mute = { 0 };
	struct agent_conn_config cfg = { .vsock_path = f->vmm_sock, .port = AGENT_CLIENT_PORT, .connect_ms = 10000 };
	struct agent_conn_ops hello_ops = { .ended = on_ended };
	double t0;

	f->mode = FAKE_PROXY;
	fake_listen(f);
	assert_int_equal(agent_conn_hello(&f->loop, &cfg, &hello_ops, &ok, &ok.ac), 0);
	assert_true(run_until_ended(f, &ok, 10));
	assert_int_equal(ok.r, 0);
	f->mode = FAKE_NO_HELLO;
	cfg.connect_ms = 400;
	t0 = now_s();
	assert_int_equal(agent_conn_hello(&f->loop, &cfg, &hello_ops, &mute, &mute.ac), 0);
	assert_true(run_until_ended(f, &mute, 5));
	assert_int_equal(mute.r, -ETIMEDOUT);
	assert_true(now_s() - t0 < 2.0);
	drain_loop(f);
}

/* A CONNECT that gets no answer is asked again after a second, not waited on for the whole connect time. */
static void unanswered_connect_retried(void **state)
{
	struct fixture *f = *state;
	struct result res = { 0 };
	double t0 = now_s();

	f->mode = FAKE_MUTE_FIRST;
	fake_listen(f);
	start(f, &res, "echo second try", 30000, 0);
	assert_true(run_until_ended(f, &res, 10));
	assert_int_equal(res.r, 0);
	assert_string_equal(res.out, "second try\n");
	assert_true(now_s() - t0 < 5.0);
	assert_int_equal(f->nheld, 1);
	drain_loop(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(exec_output_and_status, setup, teardown),
		cmocka_unit_test_setup_teardown(stdin_and_signals, setup, teardown),
		cmocka_unit_test_setup_teardown(output_waits_for_credit, setup, teardown),
		cmocka_unit_test_setup_teardown(connect_retries_then_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(hostile_agents, setup, teardown),
		cmocka_unit_test_setup_teardown(thousand_silent_guests, setup, teardown),
		cmocka_unit_test_setup_teardown(hello_only, setup, teardown),
		cmocka_unit_test_setup_teardown(unanswered_connect_retried, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
