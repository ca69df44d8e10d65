/*
 * A tunnel connection's byte pump (api/sandboxd/tunnel_relay.c) end to end
 * without KVM: tests/unit/fake-vmm serves a vsock socket in front of the real
 * agent (--unix), whose relay dials a TCP server of this test on 127.0.0.1
 * (the guest port); the client is a plain TCP socket of a thread of this test
 * connected to a listener on the loop (an unencrypted tunnel's host port).
 * Checked: bytes sent before the guest side opens, a megabyte of random bytes
 * both ways, half-closes each way, a refused guest port, the idle timeout,
 * bounded queues under back-pressure, and a drop.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "tunnel_relay.h"
#include "fake_vmm_env.h"
#include "unit.h"

#define MEG (1u << 20)

/* The owner: one listener, the relays it accepted. */
struct owner {
	uv_loop_t loop;
	uv_tcp_t listener;
	unsigned port; /* the listener's */
	struct tunnel_relay_config cfg;
	struct tunnel_relay *r;
	int accepted, closed_calls, closed_err;
	size_t max_to_client, max_to_guest;
};

static void on_relay_closed(void *ctx, struct tunnel_relay *r, int err)
{
	struct owner *o = ctx;

	(void)r;
	o->closed_calls++;
	o->closed_err = err;
	o->r = NULL;
}

static const struct tunnel_relay_ops owner_ops = {.closed = on_relay_closed};

static void on_connection(uv_stream_t *l, int status)
{
	struct owner *o = l->data;

	assert_int_equal(status, 0);
	assert_int_equal(tunnel_relay_accept(&o->cfg, l, &o->r), 0);
	o->accepted++;
}

static void owner_init(struct owner *o, const struct fake_vmm_env *e, unsigned guest_port)
{
	struct sockaddr_in a;
	int len = sizeof(a);

	memset(o, 0, sizeof(*o));
	uv_loop_init(&o->loop);
	uv_tcp_init(&o->loop, &o->listener);
	o->listener.data = o;
	uv_ip4_addr("127.0.0.1", 0, &a);
	assert_int_equal(uv_tcp_bind(&o->listener, (struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&o->listener, 8, on_connection), 0);
	uv_tcp_getsockname(&o->listener, (struct sockaddr *)&a, &len);
	o->port = ntohs(a.sin_port);
	o->cfg = (struct tunnel_relay_config){.loop = &o->loop,
					      .vsock_path = e->vsock,
					      .port = (uint16_t)guest_port,
					      .connect_timeout_ms = 5000,
					      .idle_timeout_ms = 20000,
					      .max_queued = 256 * 1024,
					      .ops = &owner_ops,
					      .ctx = o};
}

static void owner_watch(struct owner *o)
{
	size_t c, g;

	if (!o->r)
		return;
	tunnel_relay_queued(o->r, &c, &g);
	if (c > o->max_to_client)
		o->max_to_client = c;
	if (g > o->max_to_guest)
		o->max_to_guest = g;
}

/* Runs the loop until cond holds or 15 s pass. */
#define RUN_UNTIL(o, cond)                                                                                     \
	do {                                                                                                   \
		for (int i_ = 0; i_ < 15000 && !(cond); i_++) {                                                \
			uv_run(&(o)->loop, UV_RUN_NOWAIT);                                                     \
			owner_watch(o);                                                                        \
			usleep(1000);                                                                          \
		}                                                                                              \
	} while (0)

static void owner_done(struct owner *o)
{
	uv_close((uv_handle_t *)&o->listener, NULL);
	for (int i = 0; i < 500 && uv_loop_alive(&o->loop); i++) {
		uv_run(&o->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_int_equal(uv_loop_close(&o->loop), 0);
}

static int setup(void **state)
{
	static struct fake_vmm_env e;

	if (fake_vmm_env_start(&e, "sandvm-tunnel") < 0)
		return -1;
	*state = &e;
	return 0;
}

static int teardown(void **state)
{
	return fake_vmm_env_stop(*state);
}

static int tcp_connect(unsigned port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t w = write(fd, p, len);

		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Reads until EOF (or an error, or 15 s), up to cap bytes; returns the count. */
static size_t read_to_eof(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	struct pollfd p = {.fd = fd, .events = POLLIN};

	for (;;) {
		ssize_t n;

		if (poll(&p, 1, 15000) <= 0)
			return got;
		n = read(fd, buf + got, cap - got);
		if (n <= 0)
			return got;
		got += (size_t)n;
		if (got == cap) {
			char c;

			return read(fd, &c, 1) == 0 ? got : got + 1;
		}
	}
}

/* ---- guest servers (threads) ---- */

struct guest {
	int lfd;
	int mode;
	char *got;
	size_t got_len;
	atomic_int accepted, done;
	int fd;
};

enum { G_ECHO, G_READ_THEN_ANSWER, G_BANNER_FIRST, G_FLOOD, G_HOLD };

static void *guest_main(void *arg)
{
	struct guest *g = arg;
	int fd = accept(g->lfd, NULL, NULL);
	char buf[16384];
	ssize_t n;

	g->fd = fd;
	atomic_store(&g->accepted, 1);
	if (fd < 0)
		goto out;
	switch (g->mode) {
	case G_ECHO:
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (write_all(fd, buf, (size_t)n) < 0)
				break;
		shutdown(fd, SHUT_WR);
		break;
	case G_READ_THEN_ANSWER:
		g->got_len = read_to_eof(fd, g->got, MEG);
		write_all(fd, "bye", 3);
		break;
	case G_BANNER_FIRST:
		write_all(fd, "banner", 6);
		shutdown(fd, SHUT_WR);
		g->got_len = read_to_eof(fd, g->got, MEG);
		break;
	case G_FLOOD:
		memset(buf, 'f', sizeof(buf));
		for (size_t sent = 0; sent < 8 * MEG; sent += sizeof(buf))
			if (write_all(fd, buf, sizeof(buf)) < 0)
				break;
		shutdown(fd, SHUT_WR);
		read_to_eof(fd, buf, sizeof(buf));
		break;
	case G_HOLD:
		read_to_eof(fd, buf, sizeof(buf));
		break;
	}
	close(fd);
out:
	atomic_store(&g->done, 1);
	return NULL;
}

static void guest_start(struct guest *g, int mode, unsigned *port, pthread_t *t)
{
	memset(g, 0, sizeof(*g));
	g->mode = mode;
	g->got = malloc(MEG + 1);
	g->lfd = fake_guest_listener(port);
	pthread_create(t, NULL, guest_main, g);
}

static void guest_join(struct guest *g, pthread_t t)
{
	pthread_join(t, NULL);
	close(g->lfd);
	free(g->got);
}

/* ---- clients (threads) ---- */

struct client {
	unsigned port;
	int mode;
	const char *send;
	size_t send_len;
	char *got;
	size_t got_len, got_cap;
	atomic_int done;
	uint64_t eof_ms; /* when the read side ended, since connect */
};

/* C_READ_LATE: reads nothing for a second, then all (fixed before the thread starts). */
enum { C_SEND_THEN_READ, C_ECHO, C_READ_THEN_SEND, C_READ, C_READ_LATE };

struct sender {
	int fd;
	const char *p;
	size_t len;
};

static void *sender_main(void *arg)
{
	struct sender *s = arg;

	write_all(s->fd, s->p, s->len);
	shutdown(s->fd, SHUT_WR);
	return NULL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	int fd = tcp_connect(c->port);
	uint64_t t0 = now_ms();

	switch (c->mode) {
	case C_SEND_THEN_READ:
		write_all(fd, c->send, c->send_len);
		shutdown(fd, SHUT_WR);
		c->got_len = read_to_eof(fd, c->got, c->got_cap);
		break;
	case C_ECHO: {
		struct sender s = {fd, c->send, c->send_len};
		pthread_t t;

		pthread_create(&t, NULL, sender_main, &s);
		c->got_len = read_to_eof(fd, c->got, c->got_cap);
		pthread_join(t, NULL);
		break;
	}
	case C_READ_THEN_SEND:
		c->got_len = read_to_eof(fd, c->got, c->got_cap);
		write_all(fd, c->send, c->send_len);
		shutdown(fd, SHUT_WR);
		{
			char b;

			while (read(fd, &b, 1) > 0)
				;
		}
		break;
	case C_READ_LATE:
		usleep(1000 * 1000);
		/* fall through */
	case C_READ:
		c->got_len = read_to_eof(fd, c->got, c->got_cap);
		break;
	}
	c->eof_ms = now_ms() - t0;
	close(fd);
	atomic_store(&c->done, 1);
	return NULL;
}

static void client_start(struct client *c, struct owner *o, int mode, const char *send, size_t send_len,
			 size_t cap, pthread_t *t)
{
	memset(c, 0, sizeof(*c));
	c->port = o->port;
	c->mode = mode;
	c->send = send;
	c->send_len = send_len;
	c->got_cap = cap;
	c->got = malloc(cap + 1);
	pthread_create(t, NULL, client_main, c);
}

/* ---- cases ---- */

static void early_bytes_and_client_half_close(void **state)
{
	struct fake_vmm_env *e = *state;
	struct owner o;
	struct guest g;
	struct client c;
	pthread_t gt, ct;
	unsigned gport;

	guest_start(&g, G_READ_THEN_ANSWER, &gport, &gt);
	owner_init(&o, e, gport);
	/* The client's bytes and its end leave at once, before the agent answered. */
	client_start(&c, &o, C_SEND_THEN_READ, "hello, guest", 12, 64, &ct);
	RUN_UNTIL(&o, atomic_load(&c.done) && o.closed_calls);
	pthread_join(ct, NULL);
	guest_join(&g, gt);
	assert_int_equal(o.accepted, 1);
	assert_int_equal(o.closed_calls, 1);
	assert_int_equal(o.closed_err, 0);
	assert_int_equal(g.got_len, 12);
	assert_int_equal(c.got_len, 3);
	assert_memory_equal(c.got, "bye", 3);
	free(c.got);
	owner_done(&o);
}

static void megabyte_both_ways(void **state)
{
	struct fake_vmm_env *e = *state;
	struct owner o;
	struct guest g;
	struct client c;
	pthread_t gt, ct;
	unsigned gport;
	uint64_t seed = 17;
	char *msg = malloc(MEG);

	for (size_t i = 0; i < MEG; i++)
		msg[i] = (char)unit_rand(&seed);
	guest_start(&g, G_ECHO, &gport, &gt);
	owner_init(&o, e, gport);
	client_start(&c, &o, C_ECHO, msg, MEG, MEG, &ct);
	RUN_UNTIL(&o, atomic_load(&c.done) && o.closed_calls);
	pthread_join(ct, NULL);
	guest_join(&g, gt);
	assert_int_equal(o.closed_calls, 1);
	assert_int_equal(o.closed_err, 0);
	assert_int_equal(c.got_len, MEG);
	assert_memory_equal(c.got, msg, MEG);
	/* Towards the guest too: the bound, plus one read of the client. */
	assert_true(o.max_to_guest <= 256 * 1024 + 65536);
	free(c.got);
	free(msg);
	owner_done(&o);
}

static void guest_half_close(void **state)
{
	struct fake_vmm_env *e = *state;
	struct owner o;
	struct guest g;
	struct client c;
	pthread_t gt, ct;
	unsigned gport;

	guest_start(&g, G_BANNER_FIRST, &gport, &gt);
	owner_init(&o, e, gport);
	/* The guest ends its side first; the client still sends after reading that end. */
	client_start(&c, &o, C_READ_THEN_SEND, "after the end", 13, 64, &ct);
	RUN_UNTIL(&o, atomic_load(&c.done) && o.closed_calls);
	pthread_join(ct, NULL);
	/* Joined by hand: what the guest read is checked before guest_join would free it. */
	pthread_join(gt, NULL);
	assert_int_equal(c.got_len, 6);
	assert_memory_equal(c.got, "banner", 6);
	assert_int_equal(g.got_len, 13);
	assert_memory_equal(g.got, "after the end", 13);
	assert_int_equal(o.closed_calls, 1);
	assert_int_equal(o.closed_err, 0);
	close(g.lfd);
	free(g.got);
	free(c.got);
	owner_done(&o);
}

static void refused_port_closes_client(void **state)
{
	struct fake_vmm_env *e = *state;
	struct owner o;
	struct client c;
	pthread_t ct;
	unsigned gport;

	close(fake_guest_listener(&gport)); /* nobody listens there now */
	owner_init(&o, e, gport);
	client_start(&c, &o, C_READ, NULL, 0, 64, &ct);
	RUN_UNTIL(&o, atomic_load(&c.done) && o.closed_calls);
	pthread_join(ct, NULL);
	assert_int_equal(o.closed_calls, 1);
	assert_int_equal(o.closed_err, -ECONNREFUSED);
	assert_int_equal(c.got_len, 0);
	assert_true(c.eof_ms < 2000);
	free(c.got);
	owner_done(&o);
}

static void idle_timeout(void **state)
{
	struct fake_vmm_env *e = *state;
	struct owner o;
	struct guest g;
	struct client c;
	pthread_t gt, ct;
	unsigned gport;

	guest_start(&g, G_HOLD, &gport, &gt);
	owner_init(&o, e, gport);
	o.cfg.idle_timeout_ms = 300;
	client_start(&c, &o, C_READ, NULL, 0, 64, &ct);
	RUN_UNTIL(&o, atomic_load(&c.done) && o.closed_calls && atomic_load(&g.done));
	pthread_join(ct, NULL);
	guest_join(&g, gt);
	assert_int_equal(o.closed_calls, 1);
	assert_int_equal(o.closed_err, -ETIMEDOUT);
	assert_true(c.eof_ms >= 250 && c.eof_ms < 5000);
	free(c.got);
	owner_done(&o);
}

static void back_pressure_bounded(void **state)
{
	struct fake_vmm_env *e = *state;
	struct owner o;
	struct guest g;
	struct client c;
	pthread_t gt, ct;
	unsigned gport;

	guest_start(&g, G_FLOOD, &gport, &gt);
	owner_init(&o, e, gport);
	/* 8 MiB from the guest to a client that reads nothing for a second. */
	client_start(&c, &o, C_READ_LATE, NULL, 0, 8 * MEG, &ct);
	RUN_UNTIL(&o, atomic_load(&c.done) && o.closed_calls);
	pthread_join(ct, NULL);
	guest_join(&g, gt);
	assert_int_equal(c.got_len, 8 * MEG);
	assert_int_equal(o.closed_err, 0);
	/* The bound, plus one read of the guest side. */
	assert_true(o.max_to_client <= 256 * 1024 + 65536);
	assert_true(o.max_to_client > 0);
	free(c.got);
	owner_done(&o);
}

static void drop_closes_both(void **state)
{
	struct fake_vmm_env *e = *state;
	struct owner o;
	struct guest g;
	struct client c;
	pthread_t gt, ct;
	unsigned gport;

	guest_start(&g, G_HOLD, &gport, &gt);
	owner_init(&o, e, gport);
	client_start(&c, &o, C_READ, NULL, 0, 64, &ct);
	RUN_UNTIL(&o, atomic_load(&g.accepted) && o.r);
	assert_non_null(o.r);
	tunnel_relay_drop(o.r);
	RUN_UNTIL(&o, atomic_load(&c.done) && o.closed_calls && atomic_load(&g.done));
	pthread_join(ct, NULL);
	guest_join(&g, gt);
	assert_int_equal(o.closed_calls, 1);
	assert_int_equal(o.closed_err, -ECANCELED);
	assert_int_equal(c.got_len, 0);
	free(c.got);
	owner_done(&o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(early_bytes_and_client_half_close),
		cmocka_unit_test(megabyte_both_ways),
		cmocka_unit_test(guest_half_close),
		cmocka_unit_test(refused_port_closes_client),
		cmocka_unit_test(idle_timeout),
		cmocka_unit_test(back_pressure_bounded),
		cmocka_unit_test(drop_closes_both),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
