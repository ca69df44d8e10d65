/*
 * The libuv agent client (api/sandboxd/agent_conn.c), execs and file calls:
 * against the real agent (its --unix mode) behind a fake VMM vsock socket
 * that answers CONNECT and then splices bytes, and against fake agents that
 * misbehave: silent after HELLO (a thousand of them at once), output beyond
 * the window, oversized frames, nothing listening, and scripted replies to
 * file calls (too big, too many, malformed, on the wrong stream).
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
	FAKE_SCRIPT,    /* OK, HELLO, then the bytes of script, whatever the client asks */
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
	const uint8_t *script; /* set before mode, while no connection is served */
	size_t script_len;
	atomic_int scripts_sent;
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
		if (f->mode == FAKE_SCRIPT) {
			write_all(fd, f->script, f->script_len);
			f->scripts_sent++;
		} else if (f->mode == FAKE_FLOOD) {
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

/*
 * RESTORED through the real agent (not PID 1): it is sent after HELLO and the
 * agent's refusal, naming the step, comes back through ops->ended; a refused
 * value fails at once without a callback; a silent agent is bounded.
 */
static void restored_call(void **state)
{
	struct fixture *f = *state;
	struct result res = { 0 }, mute = { 0 };
	struct agent_conn_config cfg = { .vsock_path = f->vmm_sock, .port = AGENT_CLIENT_PORT, .connect_ms = 10000 };
	struct agent_conn_ops r_ops = { .ended = on_ended };
	uint8_t entropy[AGENT_PROTO_RESTORED_ENTROPY];
	struct agent_proto_restored m;
	struct agent_conn *ac = NULL;
	char host[] = "sbx-restored";

	f->mode = FAKE_PROXY;
	fake_listen(f);
	assert_int_equal(agent_client_restored_prepare(&m, entropy), 0);
	m.hostname = host;
	m.net = "10.98.0.2/30,10.98.0.1";
	m.mac = "02:00:00:00:98:02";
	m.machine_id = "00000000000000000000000000000000";
	assert_int_equal(agent_conn_restored(&f->loop, &cfg, &m, &r_ops, &res, &ac), -EINVAL);
	assert_null(ac);
	m.machine_id = NULL;
	assert_int_equal(agent_conn_restored(&f->loop, &cfg, &m, &r_ops, &res, &res.ac), 0);
	/* The request was encoded at once: the caller's strings may go. */
	memset(host, 'x', sizeof(host) - 1);
	memset(entropy, 0, sizeof(entropy));
	assert_true(run_until_ended(f, &res, 10));
	assert_int_equal(res.r, -EPERM);
	assert_non_null(strstr(res.error, "entropy: not PID 1"));

	f->mode = FAKE_NO_HELLO;
	cfg.connect_ms = 400;
	assert_int_equal(agent_conn_restored(&f->loop, &cfg, &m, &r_ops, &mute, &mute.ac), 0);
	assert_true(run_until_ended(f, &mute, 5));
	assert_int_equal(mute.r, -ETIMEDOUT);
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

/* ---- file calls ---- */

struct fresult {
	bool ended;
	int r;
	char error[512];
	struct agent_file_result res;
	struct agent_conn *ac;
	unsigned entries, max_entries; /* max_entries 0: any number */
	char names[1024];
};

static int on_entry(void *ctx, const struct agent_proto_list_entry *e)
{
	struct fresult *res = ctx;
	size_t n = strlen(res->names);

	if (res->max_entries && res->entries == res->max_entries)
		return -E2BIG;
	res->entries++;
	snprintf(res->names + n, sizeof(res->names) - n, "%s%s", n ? "," : "", e->name);
	return 0;
}

static void on_file_ended(void *ctx, int r, const struct agent_file_result *fr, const char *error)
{
	struct fresult *res = ctx;

	assert_false(res->ended);
	res->ended = true;
	res->r = r;
	res->res = *fr;
	snprintf(res->error, sizeof(res->error), "%s", error);
	res->ac = NULL;
}

static const struct agent_file_ops file_ops = { .entry = on_entry, .ended = on_file_ended };

static void file_start(struct fixture *f, struct fresult *res, const struct agent_file_request *rq, uint32_t idle_ms)
{
	struct agent_conn_config cfg = { .vsock_path = f->vmm_sock, .port = AGENT_CLIENT_PORT, .connect_ms = 5000,
					 .deadline_ms = 20000, .idle_ms = idle_ms };

	assert_int_equal(agent_conn_file(&f->loop, &cfg, rq, &file_ops, res, &res->ac), 0);
}

static bool run_file(struct fixture *f, struct fresult *res, double seconds)
{
	double end = now_s() + seconds;

	while (!res->ended && now_s() < end)
		uv_run(&f->loop, UV_RUN_ONCE);
	return res->ended;
}

/* One file call against the real agent; its result. */
static int file_call(struct fixture *f, struct fresult *res, const struct agent_file_request *rq)
{
	memset(res, 0, sizeof(*res));
	file_start(f, res, rq, 5000);
	assert_true(run_file(f, res, 10));
	return res->r;
}

static int tmp_file(struct fixture *f)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/spool.XXXXXX", f->dir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	return fd;
}

static void file_calls(void **state)
{
	struct fixture *f = *state;
	size_t size = 5 * 1024 * 1024 + 17; /* more than one FILE_READ reply of 4 MiB */
	uint8_t *data = malloc(size), *back = malloc(size);
	char dir[128], path[160], missing[160];
	struct fresult res;
	int in = tmp_file(f), out = tmp_file(f);

	assert_non_null(data);
	assert_non_null(back);
	for (size_t i = 0; i < size; i++)
		data[i] = (uint8_t)(i * 7 + i / 4096);
	assert_int_equal(write(in, data, size), (ssize_t)size);
	assert_int_equal(lseek(in, 0, SEEK_SET), 0);
	snprintf(dir, sizeof(dir), "%s/a/b", f->dir);
	snprintf(path, sizeof(path), "%s/blob.bin", dir);
	snprintf(missing, sizeof(missing), "%s/missing", f->dir);
	f->mode = FAKE_PROXY;
	fake_listen(f);

	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_MKDIR, .path = dir,
									  .mode = 0755, .flag = true }), 0);
	if (file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_WRITE, .path = path, .mode = 0600, .fd = in }))
		fail_msg("%d %s", res.r, res.error);
	assert_int_equal(res.res.bytes, size);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_STAT, .path = path }), 0);
	assert_int_equal(res.res.stat.type, AGENT_PROTO_FT_REGULAR);
	assert_int_equal(res.res.stat.size, size);
	assert_int_equal(res.res.stat.mode, 0600);
	if (file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_READ, .path = path, .fd = out,
							       .limit = 256u << 20 }))
		fail_msg("%d %s", res.r, res.error);
	assert_int_equal(res.res.bytes, size);
	assert_int_equal(pread(out, back, size, 0), (ssize_t)size);
	assert_memory_equal(back, data, size);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_LIST, .path = dir }), 0);
	assert_string_equal(res.names, "blob.bin");

	/* The agent's errors, with its message. */
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_STAT, .path = missing }),
			 -ENOENT);
	assert_non_null(strstr(res.error, "missing"));
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_READ, .path = dir, .fd = out }),
			 -EISDIR);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_READ, .path = path, .fd = out,
									  .limit = 1000 }),
			 -EFBIG);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_REMOVE, .path = dir }),
			 -ENOTEMPTY);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_MKDIR, .path = dir }), -EEXIST);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_REMOVE, .path = dir,
									  .flag = true }), 0);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_STAT, .path = dir }), -ENOENT);
	/* An empty file: one empty chunk, flagged EOF. */
	assert_int_equal(ftruncate(in, 0), 0);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_WRITE, .path = path, .fd = in }),
			 -ENOENT); /* its folder went */
	snprintf(path, sizeof(path), "%s/empty", f->dir);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_WRITE, .path = path, .fd = in }), 0);
	assert_int_equal(file_call(f, &res, &(struct agent_file_request){ .op = AGENT_FILE_READ, .path = path, .fd = out }), 0);
	assert_int_equal(res.res.bytes, 0);
	/* Arguments are checked before anything starts. */
	{
		struct agent_conn_config cfg = { .vsock_path = f->vmm_sock };
		struct agent_conn *ac = NULL;

		assert_int_equal(agent_conn_file(&f->loop, &cfg, &(struct agent_file_request){ .op = AGENT_FILE_READ,
											 .path = path, .fd = -1 },
						 &file_ops, &res, &ac),
				 -EINVAL);
		assert_int_equal(agent_conn_file(&f->loop, &cfg, &(struct agent_file_request){ .op = AGENT_FILE_LIST,
											 .path = path },
						 &(struct agent_file_ops){ .ended = on_file_ended }, &res, &ac),
				 -EINVAL);
	}
	close(in);
	close(out);
	free(data);
	free(back);
	drain_loop(f);
}

/* ---- scripted agents ---- */

struct script {
	uint8_t *buf;
	size_t len, cap;
};

static uint8_t *script_room(struct script *sc, size_t need)
{
	if (sc->len + need > sc->cap) {
		sc->cap = (sc->len + need) * 2;
		sc->buf = realloc(sc->buf, sc->cap);
		assert_non_null(sc->buf);
	}
	return sc->buf + sc->len;
}

#define SCRIPT(sc, cap, call)                                            \
	do {                                                             \
		uint8_t *p_ = script_room((sc), (cap));                  \
		size_t len_ = 0;                                         \
		assert_int_equal((call), 0);                             \
		(sc)->len += len_;                                       \
	} while (0)

static void script_stat(struct script *sc, uint32_t stream, uint32_t type, uint64_t size)
{
	struct agent_proto_stat_result st = { .type = type, .mode = 0644, .size = size };

	SCRIPT(sc, 256, agent_proto_encode_stat_result(p_, 256, stream, &st, &len_));
}

static void script_data(struct script *sc, uint32_t stream, uint32_t flags, size_t n)
{
	static const uint8_t zeros[64 * 1024];
	struct agent_proto_file_data d = { .flags = flags, .data = zeros, .len = (uint32_t)n };

	SCRIPT(sc, n + 64, agent_proto_encode_file_data(p_, n + 64, stream, &d, &len_));
}

static void script_entry(struct script *sc, uint32_t stream, const char *name)
{
	struct agent_proto_list_entry e = { .name = name, .type = AGENT_PROTO_FT_REGULAR, .size = 1 };
	size_t cap = strlen(name) + 64;

	SCRIPT(sc, cap, agent_proto_encode_list_entry(p_, cap, stream, &e, &len_));
}

static void script_empty(struct script *sc, uint8_t type, uint32_t stream)
{
	SCRIPT(sc, 64, agent_proto_encode_empty(p_, 64, type, stream, &len_));
}

/* The guest's replies are sc, whatever is asked: the call's result (a listing stops after max_entries). */
static int scripted_n(struct fixture *f, struct script *sc, const struct agent_file_request *rq, struct fresult *res,
		      unsigned max_entries)
{
	int sent = f->scripts_sent;

	f->script = sc->buf;
	f->script_len = sc->len;
	f->mode = FAKE_SCRIPT;
	memset(res, 0, sizeof(*res));
	res->max_entries = max_entries;
	file_start(f, res, rq, 5000);
	assert_true(run_file(f, res, 10));
	/* The fake is done with the script before the next one replaces it. */
	for (int i = 0; i < 2000 && f->scripts_sent == sent; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT), usleep(1000);
	assert_int_equal(f->scripts_sent, sent + 1);
	sc->len = 0;
	return res->r;
}

static int scripted(struct fixture *f, struct script *sc, const struct agent_file_request *rq, struct fresult *res)
{
	return scripted_n(f, sc, rq, res, 0);
}

static void hostile_file_replies(void **state)
{
	struct fixture *f = *state;
	struct script sc = { 0 };
	struct fresult res;
	int out = tmp_file(f), in = tmp_file(f);
	struct agent_file_request rd = { .op = AGENT_FILE_READ, .path = "/x", .fd = out, .limit = 100000 };
	struct agent_file_request ls = { .op = AGENT_FILE_LIST, .path = "/x" };
	struct agent_file_request st = { .op = AGENT_FILE_STAT, .path = "/x" };
	char name[300];

	f->mode = FAKE_SCRIPT;
	fake_listen(f);

	/* A file bigger than the limit: refused on its size, before any data. */
	script_stat(&sc, 1, AGENT_PROTO_FT_REGULAR, 1ull << 40);
	assert_int_equal(scripted(f, &sc, &rd, &res), -EFBIG);
	/* One that grows past it while it is read: refused at the chunk that crosses it. */
	script_stat(&sc, 1, AGENT_PROTO_FT_REGULAR, 10);
	for (int i = 0; i < 3; i++)
		script_data(&sc, 2, 0, 60000);
	assert_int_equal(scripted(f, &sc, &rd, &res), -EFBIG);
	assert_non_null(strstr(res.error, "grew"));
	assert_true(res.res.bytes <= rd.limit);
	/* Frames over the client's bound, declared by a header alone. */
	{
		struct agent_proto_header h = { .version = AGENT_PROTO_VERSION, .type = AGENT_PROTO_FILE_DATA,
						 .stream = 2, .length = 200 * 1024 };

		script_stat(&sc, 1, AGENT_PROTO_FT_REGULAR, 10);
		agent_proto_encode_header(&h, script_room(&sc, AGENT_PROTO_HEADER_SIZE));
		sc.len += AGENT_PROTO_HEADER_SIZE;
		assert_int_equal(scripted(f, &sc, &rd, &res), -EPROTO);
		assert_non_null(strstr(res.error, "Message too long"));
	}
	/* Empty chunks that are not the end, and an empty end that is not EOF: no progress, refused. */
	script_stat(&sc, 1, AGENT_PROTO_FT_REGULAR, 10);
	script_data(&sc, 2, 0, 0);
	assert_int_equal(scripted(f, &sc, &rd, &res), -EPROTO);
	script_stat(&sc, 1, AGENT_PROTO_FT_REGULAR, 10);
	script_data(&sc, 2, AGENT_PROTO_DATA_LAST, 0);
	assert_int_equal(scripted(f, &sc, &rd, &res), -EPROTO);
	/* A reply on a stream nobody asked on. */
	script_stat(&sc, 7, AGENT_PROTO_FT_REGULAR, 10);
	assert_int_equal(scripted(f, &sc, &st, &res), -EPROTO);
	assert_non_null(strstr(res.error, "stream 7"));
	/* A reply of the wrong type, and a truncated one. */
	script_empty(&sc, AGENT_PROTO_LIST_END, 1);
	assert_int_equal(scripted(f, &sc, &st, &res), -EPROTO);
	{
		struct agent_proto_header h = { .version = AGENT_PROTO_VERSION, .type = AGENT_PROTO_STAT_RESULT,
						 .stream = 1, .length = 3 };

		agent_proto_encode_header(&h, script_room(&sc, AGENT_PROTO_HEADER_SIZE + 3));
		memcpy(sc.buf + AGENT_PROTO_HEADER_SIZE, "\x01\x00\x04", 3);
		sc.len += AGENT_PROTO_HEADER_SIZE + 3;
		assert_int_equal(scripted(f, &sc, &st, &res), -EPROTO);
	}
	/* A listing beyond the caller's bound ends at the bound. */
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		script_entry(&sc, 1, name);
	}
	script_empty(&sc, AGENT_PROTO_LIST_END, 1);
	assert_int_equal(scripted_n(f, &sc, &ls, &res, 100), -E2BIG);
	assert_int_equal(res.entries, 100);
	/* Within the bound: every entry, then the end. */
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		script_entry(&sc, 1, name);
	}
	script_empty(&sc, AGENT_PROTO_LIST_END, 1);
	assert_int_equal(scripted_n(f, &sc, &ls, &res, 100), 0);
	assert_string_equal(res.names, "f0,f1,f2");
	/* A listed name no file system has. */
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	script_entry(&sc, 1, name);
	assert_int_equal(scripted(f, &sc, &ls, &res), -EPROTO);
	/* An OK to a write before its last chunk. */
	assert_int_equal(write(in, "abc", 3), 3);
	assert_int_equal(lseek(in, 0, SEEK_SET), 0);
	script_empty(&sc, AGENT_PROTO_OK, 1);
	{
		struct agent_file_request wr = { .op = AGENT_FILE_WRITE, .path = "/x", .fd = in };
		int r = scripted(f, &sc, &wr, &res);

		/* The chunks may all be written before the OK is read: then it is the answer. */
		assert_true(r == -EPROTO || r == 0);
	}
	/* An ERROR with a message of 60000 bytes: its code, and a message bounded by the client. */
	{
		char *msg = malloc(60001);
		struct agent_proto_error e = { .code = AGENT_PROTO_EACCES, .message = msg };

		memset(msg, 'm', 60000);
		msg[60000] = '\0';
		SCRIPT(&sc, 61000, agent_proto_encode_error(p_, 61000, 1, &e, &len_));
		assert_int_equal(scripted(f, &sc, &st, &res), -EACCES);
		assert_true(strlen(res.error) < 512);
		free(msg);
	}
	free(sc.buf);
	close(in);
	close(out);
	drain_loop(f);
}

/* A guest that answers HELLO and then nothing: the call's idle deadline ends it; a cancelled call says nothing. */
static void silent_file_guest(void **state)
{
	struct fixture *f = *state;
	struct fresult res = { 0 }, cancelled = { 0 };
	int out = tmp_file(f);
	struct agent_file_request rd = { .op = AGENT_FILE_READ, .path = "/x", .fd = out };
	double t0;
	int waited = 0;

	f->mode = FAKE_SILENT;
	fake_listen(f);
	t0 = now_s();
	file_start(f, &res, &rd, 300);
	assert_true(run_file(f, &res, 5));
	assert_int_equal(res.r, -ETIMEDOUT);
	assert_non_null(strstr(res.error, "sent nothing"));
	assert_true(now_s() - t0 < 2.0);

	/* Cancelled in the middle: no callback, everything closed (teardown checks the loop is empty). */
	file_start(f, &cancelled, &rd, 0);
	while (f->nheld < 2 && waited++ < 5000)
		uv_run(&f->loop, UV_RUN_NOWAIT), usleep(500);
	assert_int_equal(f->nheld, 2);
	drain_loop(f);
	assert_false(cancelled.ended);
	agent_conn_cancel(cancelled.ac);
	drain_loop(f);
	assert_false(cancelled.ended);
	close(out);
}

/* The whole call's deadline holds even for a guest that keeps sending frames. */
static void file_call_deadline(void **state)
{
	struct fixture *f = *state;
	struct fresult res = { 0 };
	struct agent_conn_config cfg = { .vsock_path = f->vmm_sock, .port = AGENT_CLIENT_PORT, .connect_ms = 5000,
					 .deadline_ms = 300, .idle_ms = 5000 };
	struct agent_file_request rd = { .op = AGENT_FILE_LIST, .path = "/x" };
	double t0 = now_s();

	f->mode = FAKE_SILENT;
	fake_listen(f);
	assert_int_equal(agent_conn_file(&f->loop, &cfg, &rd, &file_ops, &res, &res.ac), 0);
	assert_true(run_file(f, &res, 5));
	assert_int_equal(res.r, -ETIMEDOUT);
	assert_non_null(strstr(res.error, "did not finish within 300 ms"));
	assert_true(now_s() - t0 < 2.0);
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
		cmocka_unit_test_setup_teardown(restored_call, setup, teardown),
		cmocka_unit_test_setup_teardown(unanswered_connect_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(file_calls, setup, teardown),
		cmocka_unit_test_setup_teardown(hostile_file_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(silent_file_guest, setup, teardown),
		cmocka_unit_test_setup_teardown(file_call_deadline, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
