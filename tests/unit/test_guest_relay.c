/*
 * The host side of the agent's relay port (api/sandboxd/guest_relay.c) end to
 * end without KVM: tests/unit/fake-vmm serves a vsock socket in front of the
 * real agent (--unix), whose relay dials a TCP server of this test on
 * 127.0.0.1. Checked: a megabyte echoed with half-closes, a refused port, a
 * VMM that never answers or hangs up, an owner that leaves mid-stream, and
 * the answer-line parser.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "guest_relay.h"
#include "fake_vmm_env.h"
#include "unit.h"

#define ECHO_BYTES (1u << 20)

struct outcome {
	int opened_calls, opened_err, closed_calls, closed_err;
	bool eof, drained;
	char why[256];
	char *got;
	size_t got_len, got_cap;
	struct guest_relay *r;
	const char *send;
	size_t send_len;
	bool close_on_data;
};

static void on_opened(void *ctx, int err, const char *why)
{
	struct outcome *o = ctx;

	o->opened_calls++;
	o->opened_err = err;
	snprintf(o->why, sizeof(o->why), "%s", why ? why : "");
	if (!err && o->send) {
		guest_relay_write(o->r, o->send, o->send_len);
		guest_relay_shutdown(o->r);
	}
}

static void on_data(void *ctx, const char *data, size_t len)
{
	struct outcome *o = ctx;

	if (!len) {
		o->eof = true;
		return;
	}
	if (o->got_len + len > o->got_cap) {
		o->got_cap = (o->got_len + len) * 2;
		o->got = realloc(o->got, o->got_cap);
		assert_non_null(o->got);
	}
	memcpy(o->got + o->got_len, data, len);
	o->got_len += len;
	if (o->close_on_data) {
		guest_relay_close(o->r);
		o->close_on_data = false;
	}
}

static void on_closed(void *ctx, int err)
{
	struct outcome *o = ctx;

	o->closed_calls++;
	o->closed_err = err;
}

static void on_drained(void *ctx)
{
	((struct outcome *)ctx)->drained = true;
}

static const struct guest_relay_ops ops = {
	.opened = on_opened, .data = on_data, .closed = on_closed, .drained = on_drained};

/* Runs the loop until cond holds or 10 s pass. */
#define RUN_UNTIL(loop, cond)                                                                                  \
	do {                                                                                                   \
		for (int i_ = 0; i_ < 10000 && !(cond); i_++) {                                                \
			uv_run(loop, UV_RUN_NOWAIT);                                                           \
			usleep(1000);                                                                          \
		}                                                                                              \
	} while (0)

static void drain_loop(uv_loop_t *loop)
{
	for (int i = 0; i < 200 && uv_loop_alive(loop); i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_int_equal(uv_loop_close(loop), 0);
}

static int setup(void **state)
{
	static struct fake_vmm_env e;

	if (fake_vmm_env_start(&e, "sandvm-relay") < 0)
		return -1;
	*state = &e;
	return 0;
}

static int teardown(void **state)
{
	return fake_vmm_env_stop(*state);
}

/* Echoes one connection until its end, then ends its own side. */
static void *echo_server(void *arg)
{
	int lfd = (int)(intptr_t)arg, fd = accept(lfd, NULL, NULL);
	char buf[8192];
	ssize_t n;

	while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));

			if (w <= 0)
				break;
			off += w;
		}
	if (fd >= 0) {
		shutdown(fd, SHUT_WR);
		close(fd);
	}
	return NULL;
}

static void echo_megabyte(void **state)
{
	struct fake_vmm_env *e = *state;
	struct outcome o = {0};
	unsigned port;
	int lfd = fake_guest_listener(&port);
	pthread_t t;
	uv_loop_t loop;
	char *msg = malloc(ECHO_BYTES);

	for (size_t i = 0; i < ECHO_BYTES; i++)
		msg[i] = (char)(i * 31 + 7);
	o.send = msg;
	o.send_len = ECHO_BYTES;
	pthread_create(&t, NULL, echo_server, (void *)(intptr_t)lfd);
	uv_loop_init(&loop);
	assert_int_equal(guest_relay_open(&loop, e->vsock, (uint16_t)port, 5000, &ops, &o, &o.r), 0);
	RUN_UNTIL(&loop, o.closed_calls || (o.opened_calls && o.opened_err));
	if (o.opened_err)
		fail_msg("opened: %d %s", o.opened_err, o.why);
	assert_int_equal(o.opened_calls, 1);
	assert_int_equal(o.closed_calls, 1);
	assert_int_equal(o.closed_err, 0);
	assert_true(o.eof);
	assert_true(o.drained);
	assert_int_equal(o.got_len, ECHO_BYTES);
	assert_memory_equal(o.got, msg, ECHO_BYTES);
	pthread_join(t, NULL);
	close(lfd);
	drain_loop(&loop);
	free(o.got);
	free(msg);
}

static void refused_port(void **state)
{
	struct fake_vmm_env *e = *state;
	struct outcome o = {0};
	unsigned port;
	uv_loop_t loop;

	close(fake_guest_listener(&port)); /* a port nobody listens on now */
	uv_loop_init(&loop);
	assert_int_equal(guest_relay_open(&loop, e->vsock, (uint16_t)port, 5000, &ops, &o, &o.r), 0);
	RUN_UNTIL(&loop, o.opened_calls);
	assert_int_equal(o.opened_calls, 1);
	assert_int_equal(o.opened_err, -ECONNREFUSED);
	assert_non_null(strstr(o.why, "nothing listens"));
	drain_loop(&loop);
	assert_int_equal(o.closed_calls, 0);
}

/* A unix socket that accepts and then does what mode says: 0 never answers, 1 hangs up. */
static void *odd_vmm(void *arg)
{
	int *a = arg, fd = accept(a[0], NULL, NULL);

	if (a[1] == 1) {
		close(fd);
	} else {
		usleep(800000);
		close(fd);
	}
	return NULL;
}

static void odd_vmms(void **state)
{
	char path[] = "/tmp/sandvm-relay-odd.XXXXXX", sock[96];

	(void)state;
	assert_non_null(mkdtemp(path));
	snprintf(sock, sizeof(sock), "%s/vsock", path);
	for (int mode = 0; mode < 2; mode++) {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		struct outcome o = {0};
		int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), args[2];
		pthread_t t;
		uv_loop_t loop;

		snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
		unlink(sock);
		assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
		assert_int_equal(listen(lfd, 1), 0);
		args[0] = lfd;
		args[1] = mode;
		pthread_create(&t, NULL, odd_vmm, args);
		uv_loop_init(&loop);
		assert_int_equal(guest_relay_open(&loop, sock, 8080, 300, &ops, &o, &o.r), 0);
		RUN_UNTIL(&loop, o.opened_calls);
		assert_int_equal(o.opened_calls, 1);
		assert_int_equal(o.opened_err, mode == 0 ? -ETIMEDOUT : -ECONNRESET);
		pthread_join(t, NULL);
		close(lfd);
		drain_loop(&loop);
	}
	/* No socket at all. */
	{
		struct outcome o = {0};
		uv_loop_t loop;

		uv_loop_init(&loop);
		assert_int_equal(guest_relay_open(&loop, "/nonexistent/vsock", 80, 1000, &ops, &o, &o.r), 0);
		RUN_UNTIL(&loop, o.opened_calls);
		assert_int_equal(o.opened_err, -ECONNRESET);
		drain_loop(&loop);
	}
	rmdir(path);
}

/* The owner leaves on the first bytes: nothing more is called, nothing leaks. */
static void owner_leaves(void **state)
{
	struct fake_vmm_env *e = *state;
	struct outcome o = {0};
	unsigned port;
	int lfd = fake_guest_listener(&port);
	pthread_t t;
	uv_loop_t loop;
	char msg[64 * 1024];

	memset(msg, 'z', sizeof(msg));
	o.send = msg;
	o.send_len = sizeof(msg);
	o.close_on_data = true;
	pthread_create(&t, NULL, echo_server, (void *)(intptr_t)lfd);
	uv_loop_init(&loop);
	assert_int_equal(guest_relay_open(&loop, e->vsock, (uint16_t)port, 5000, &ops, &o, &o.r), 0);
	RUN_UNTIL(&loop, o.got_len);
	assert_true(o.got_len > 0);
	drain_loop(&loop);
	assert_int_equal(o.closed_calls, 0);
	pthread_join(t, NULL);
	close(lfd);
	free(o.got);
}

static void answers(void **state)
{
	char why[128];

	(void)state;
	assert_int_equal(guest_relay_parse_answer("OK", why, sizeof(why)), 0);
	assert_int_equal(guest_relay_parse_answer("ERROR refused nothing listens on that port", why, sizeof(why)),
			 -ECONNREFUSED);
	assert_string_equal(why, "nothing listens on that port");
	assert_int_equal(guest_relay_parse_answer("ERROR unreachable", why, sizeof(why)), -EHOSTUNREACH);
	assert_int_equal(guest_relay_parse_answer("ERROR bad-request x", why, sizeof(why)), -EINVAL);
	assert_int_equal(guest_relay_parse_answer("ERROR refusedx", why, sizeof(why)), -EPROTO);
	assert_int_equal(guest_relay_parse_answer("OK ", why, sizeof(why)), -EPROTO);
	assert_int_equal(guest_relay_parse_answer("", why, sizeof(why)), -EPROTO);
	assert_int_equal(guest_relay_parse_answer("HTTP/1.1 200 OK", why, sizeof(why)), -EPROTO);
	/* Arguments checked first: nothing starts, nothing is called. */
	{
		struct guest_relay *r;
		uv_loop_t loop;

		uv_loop_init(&loop);
		assert_int_equal(guest_relay_open(&loop, "/x", 0, 1000, &ops, NULL, &r), -EINVAL);
		assert_int_equal(guest_relay_open(&loop, "/x", 80, 0, &ops, NULL, &r), -EINVAL);
		assert_int_equal(uv_loop_close(&loop), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(echo_megabyte),
		cmocka_unit_test(refused_port),
		cmocka_unit_test(odd_vmms),
		cmocka_unit_test(owner_leaves),
		cmocka_unit_test(answers),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
