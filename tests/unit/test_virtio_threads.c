/*
 * The virtio transport between vCPU threads and the main loop: a guest that
 * keeps a ring fed gets a budget per turn and the loop serves its other
 * handlers in between; a reset written on a vCPU thread is done by the main
 * loop while that thread waits; virtio-vsock reset from one thread while the
 * loop accepts and frees host connections (run under ThreadSanitizer in CI).
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "event_loop.h"
#include "memory.h"
#include "mmio_driver.h"
#include "virtio/mmio.h"
#include "virtio/vsock.h"

#define MEM_SIZE (1u << 20)
#define DESC 0x1000u
#define AVAIL 0x2000u
#define USED 0x3000u
#define BUF 0x8000u
#define RING 8u
/* Far past any budget: reaching it means one notify never gave the loop back. */
#define RUNAWAY 1000000u

/* ---- a device whose guest refills the ring as fast as it is served ---- */

struct flood {
	struct guest_mem mem;
	struct virtio_mmio m;
	unsigned calls;
	uint16_t avail_idx;
	bool idle_guest; /* posts nothing more once the first chains are out */
};

/* The guest side: makes descriptor `head` available again, as another vCPU would. */
static void post(struct flood *f, uint16_t head)
{
	uint16_t v = htole16(head), idx;

	assert_int_equal(guest_mem_write(&f->mem, AVAIL + 4 + 2u * (f->avail_idx % RING), &v, 2), 0);
	f->avail_idx++;
	idx = htole16(f->avail_idx);
	assert_int_equal(guest_mem_write(&f->mem, AVAIL + 2, &idx, 2), 0);
}

static int flood_chain(struct virtio_dev *dev, struct virtq_chain *chain, uint32_t *written,
		       const char **why)
{
	struct flood *f = dev->model;

	(void)why;
	*written = 0;
	if (++f->calls >= RUNAWAY)
		fail_msg("one notification served %u chains without returning", f->calls);
	if (!f->idle_guest)
		post(f, chain->head);
	return 0;
}

static void flood_notify(struct virtio_dev *dev, unsigned q)
{
	virtio_dev_serve_queue(dev, q, flood_chain);
}

static const struct virtio_dev_ops flood_ops = {
	.name = "flood",
	.device_id = VIRTIO_ID_RNG,
	.num_queues = 1,
	.queue_max = 256,
	.queue_notify = flood_notify,
};

static void flood_setup(struct flood *f)
{
	struct guest_mem_region layout = { .gpa = 0, .size = MEM_SIZE };

	memset(f, 0, sizeof(*f));
	assert_int_equal(guest_mem_init(&f->mem, &layout, 1, false), 0);
	assert_int_equal(virtio_mmio_init(&f->m, &flood_ops, f, &f->mem, -1, 0xd0000000, 5), 0);
	for (unsigned i = 0; i < RING; i++) {
		struct virtq_desc d = { .addr = htole64(BUF + 64 * i), .len = htole32(64) };

		assert_int_equal(guest_mem_write(&f->mem, DESC + 16 * i, &d, sizeof(d)), 0);
	}
	assert_true(mmio_negotiate(&f->m, VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
	mmio_wr(&f->m, 0x030, 0);
	mmio_wr(&f->m, 0x038, RING);
	mmio_wr(&f->m, 0x080, DESC);
	mmio_wr(&f->m, 0x090, AVAIL);
	mmio_wr(&f->m, 0x0a0, USED);
	mmio_wr(&f->m, 0x044, 1);
	mmio_wr(&f->m, 0x070, 0xf);
	assert_int_equal(mmio_rd(&f->m, 0x044), 1);
	for (uint16_t i = 0; i < RING; i++)
		post(f, i);
}

static void flood_teardown(struct flood *f)
{
	virtio_mmio_destroy(&f->m);
	guest_mem_destroy(&f->mem);
}

/* What the queue's notify eventfd holds now (0: not signalled); reading clears it. */
static uint64_t take_kicks(struct flood *f)
{
	uint64_t n = 0;

	if (read(virtio_mmio_notify_fd(&f->m, 0), &n, sizeof(n)) < 0)
		return 0;
	return n;
}

static uint16_t used_idx(struct flood *f)
{
	uint16_t v;

	assert_int_equal(guest_mem_read(&f->mem, USED + 2, &v, 2), 0);
	return le16toh(v);
}

static void one_notify_serves_one_budget(void **state)
{
	struct flood f;

	(void)state;
	flood_setup(&f);
	/* Without a loop the notify runs inline: it must come back after the budget. */
	mmio_wr(&f.m, 0x050, 0);
	assert_int_equal(f.calls, VIRTIO_QUEUE_BUDGET);
	assert_int_equal(used_idx(&f), VIRTIO_QUEUE_BUDGET);
	/* The ring is still full, so the queue asked for another turn. */
	assert_int_equal(take_kicks(&f), 1);
	mmio_wr(&f.m, 0x050, 0);
	assert_int_equal(f.calls, 2 * VIRTIO_QUEUE_BUDGET);
	assert_int_equal(take_kicks(&f), 1);
	flood_teardown(&f);
}

static void ring_drained_within_budget_is_not_requeued(void **state)
{
	struct flood f;

	(void)state;
	flood_setup(&f);
	/* A guest that stops refilling: RING chains, fewer than the budget. */
	f.idle_guest = true;
	mmio_wr(&f.m, 0x050, 0);
	assert_int_equal(f.calls, RING);
	assert_int_equal(used_idx(&f), RING);
	assert_int_equal(take_kicks(&f), 0);
	flood_teardown(&f);
}

struct counter_handler {
	struct event_handler h;
	unsigned runs;
};

static void count_run(struct event_handler *h, uint32_t events)
{
	struct counter_handler *c = h->opaque;
	uint64_t n;

	(void)events;
	if (read(h->fd, &n, sizeof(n)) == sizeof(n))
		c->runs++;
}

static void loop_serves_others_during_a_flood(void **state)
{
	struct counter_handler ctl = { .h = { .cb = count_run } };
	struct event_loop loop;
	struct flood f;
	uint64_t one = 1;

	(void)state;
	flood_setup(&f);
	assert_int_equal(event_loop_init(&loop), 0);
	assert_int_equal(virtio_mmio_attach(&f.m, &loop), 0);
	ctl.h.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ctl.h.opaque = &ctl;
	assert_true(ctl.h.fd >= 0);
	assert_int_equal(event_loop_add(&loop, &ctl.h, EPOLLIN), 0);

	/* An MMIO-exit notify on a "vCPU" only signals the loop; the model has not run. */
	mmio_wr(&f.m, 0x050, 0);
	assert_int_equal(f.calls, 0);
	/* The flood goes on for ever; a control request arriving meanwhile is served. */
	for (unsigned turn = 0; turn < 4; turn++) {
		assert_true(event_loop_run_once(&loop, 1000) > 0);
		assert_true(f.calls <= (turn + 1) * VIRTIO_QUEUE_BUDGET);
	}
	assert_true(f.calls >= VIRTIO_QUEUE_BUDGET);
	assert_int_equal(write(ctl.h.fd, &one, sizeof(one)), sizeof(one));
	for (unsigned turn = 0; turn < 2 && ctl.runs == 0; turn++)
		assert_true(event_loop_run_once(&loop, 1000) > 0);
	assert_int_equal(ctl.runs, 1);
	/* And the flood is still being served, turn by turn. */
	unsigned before = f.calls;
	assert_true(event_loop_run_once(&loop, 1000) > 0);
	assert_int_equal(f.calls - before, VIRTIO_QUEUE_BUDGET);

	event_loop_del(&loop, &ctl.h);
	close(ctl.h.fd);
	flood_teardown(&f);
	event_loop_destroy(&loop);
}

/* ---- resets written on a vCPU thread ---- */

struct writer {
	struct virtio_mmio *m;
	uint32_t value;
	atomic_bool done;
};

static void *write_status(void *arg)
{
	struct writer *w = arg;

	mmio_wr(w->m, 0x070, w->value);
	atomic_store(&w->done, true);
	return NULL;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static void reset_is_done_by_the_loop(void **state)
{
	struct event_loop loop;
	struct writer w;
	struct flood f;
	pthread_t t;

	(void)state;
	flood_setup(&f);
	assert_int_equal(event_loop_init(&loop), 0);
	assert_int_equal(virtio_mmio_attach(&f.m, &loop), 0);
	w = (struct writer){ .m = &f.m, .value = 0 };
	assert_int_equal(pthread_create(&t, NULL, write_status, &w), 0);
	/* The writer waits: only the loop resets. */
	sleep_ms(100);
	assert_false(atomic_load(&w.done));
	for (unsigned i = 0; i < 50 && !atomic_load(&w.done); i++)
		event_loop_run_once(&loop, 100);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(atomic_load(&w.done));
	/* The guest reads the reset complete once its write has returned. */
	assert_int_equal(mmio_rd(&f.m, 0x070), 0);
	assert_int_equal(mmio_rd(&f.m, 0x044), 0);

	/* A loop that has stopped lets a waiting writer go instead of hanging the vCPU. */
	mmio_wr(&f.m, 0x070, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	assert_int_equal(mmio_rd(&f.m, 0x070), VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	w = (struct writer){ .m = &f.m, .value = 0 };
	assert_int_equal(pthread_create(&t, NULL, write_status, &w), 0);
	sleep_ms(50);
	virtio_mmio_stop(&f.m);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(atomic_load(&w.done));

	flood_teardown(&f);
	event_loop_destroy(&loop);
}

/* ---- virtio-vsock: resets from a vCPU thread while the loop takes host connections ---- */

struct vsock_rig {
	struct guest_mem mem;
	struct virtio_mmio m;
	struct vsock_dev vs;
	struct event_loop loop;
	char path[108];
	atomic_bool stop;
	atomic_uint resets, connects;
};

static void *vcpu_resets(void *arg)
{
	struct vsock_rig *r = arg;

	for (unsigned i = 0; i < 300; i++) {
		mmio_negotiate(&r->m, VIRTIO_F_VERSION_1);
		mmio_wr(&r->m, 0x070, 0xf);
		sleep_ms(1);
		mmio_wr(&r->m, 0x070, 0);
		atomic_fetch_add(&r->resets, 1);
	}
	atomic_store(&r->stop, true);
	return NULL;
}

static void *host_connects(void *arg)
{
	struct vsock_rig *r = arg;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fds[8];
	unsigned n = 0;

	memset(fds, -1, sizeof(fds));
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", r->path);
	while (!atomic_load(&r->stop)) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			break;
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
			/* Some wait in the handshake, some ask for a port. */
			if (n % 2 && send(fd, "CONNECT 5000\n", 13, MSG_NOSIGNAL) < 0) {
				/* The VMM may have reset the connection already. */
			}
			atomic_fetch_add(&r->connects, 1);
		}
		if (fds[n % 8] >= 0)
			close(fds[n % 8]);
		fds[n % 8] = fd;
		n++;
		sleep_ms(n % 3);
	}
	for (unsigned i = 0; i < 8; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return NULL;
}

static void vsock_reset_races_nothing(void **state)
{
	struct guest_mem_region layout = { .gpa = 0, .size = MEM_SIZE };
	struct vsock_rig *r = calloc(1, sizeof(*r));
	pthread_t vcpu, host;

	(void)state;
	assert_non_null(r);
	snprintf(r->path, sizeof(r->path), "/tmp/sandvm-test-vsock-%d", (int)getpid());
	assert_int_equal(guest_mem_init(&r->mem, &layout, 1, false), 0);
	assert_int_equal(event_loop_init(&r->loop), 0);
	assert_int_equal(vsock_dev_init(&r->vs, 3, r->path), 0);
	assert_int_equal(virtio_mmio_init(&r->m, &virtio_vsock_ops, &r->vs, &r->mem, -1, 0xd0000000, 5),
			 0);
	assert_int_equal(vsock_dev_start(&r->vs, &r->m.dev, &r->loop), 0);
	assert_int_equal(virtio_mmio_attach(&r->m, &r->loop), 0);

	assert_int_equal(pthread_create(&vcpu, NULL, vcpu_resets, r), 0);
	assert_int_equal(pthread_create(&host, NULL, host_connects, r), 0);
	while (!atomic_load(&r->stop))
		assert_true(event_loop_run_once(&r->loop, 5) >= 0);
	virtio_mmio_stop(&r->m);
	assert_int_equal(pthread_join(vcpu, NULL), 0);
	assert_int_equal(pthread_join(host, NULL), 0);
	assert_int_equal(atomic_load(&r->resets), 300);
	assert_true(atomic_load(&r->connects) > 0);

	virtio_mmio_destroy(&r->m);
	vsock_dev_destroy(&r->vs);
	event_loop_destroy(&r->loop);
	guest_mem_destroy(&r->mem);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(one_notify_serves_one_budget),
		cmocka_unit_test(ring_drained_within_budget_is_not_requeued),
		cmocka_unit_test(loop_serves_others_during_a_flood),
		cmocka_unit_test(reset_is_done_by_the_loop),
		cmocka_unit_test(vsock_reset_races_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
