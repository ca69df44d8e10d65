/*
 * virtio-vsock after a restore: the guest gets TRANSPORT_RESET in its first
 * event buffer, and nothing reaches RX until it has handled it (refilled
 * the event queue and kicked it); a hostile event buffer breaks the device,
 * not the VMM. Driven as the guest's driver would, through the transport.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "unit.h"
#include "mmio_driver.h"
#include "event_loop.h"
#include "memory.h"
#include "snapshot/format.h"
#include "virtio/mmio.h"
#include "virtio/vsock.h"

#define MEM_SIZE (1u << 20)
#define QSIZE 8u
/* Per queue q: descriptors, avail and used rings; then buffers. */
#define DESC(q) (0x10000u + (q) * 0x1000u)
#define AVAIL(q) (0x20000u + (q) * 0x1000u)
#define USED(q) (0x30000u + (q) * 0x1000u)
#define BUF(q, i) (0x40000u + (q) * 0x4000u + (i) * 0x400u)
enum { RXQ = 0, TXQ = 1, EVQ = 2 };

struct rig {
	struct guest_mem mem;
	struct virtio_mmio m;
	struct vsock_dev vs;
	struct event_loop loop;
	char path[108];
	uint16_t avail_idx[3];
};

static void setup_queue(struct rig *r, unsigned q)
{
	mmio_wr(&r->m, 0x030, q);
	mmio_wr(&r->m, 0x038, QSIZE);
	mmio_wr(&r->m, 0x080, DESC(q));
	mmio_wr(&r->m, 0x084, 0);
	mmio_wr(&r->m, 0x090, AVAIL(q));
	mmio_wr(&r->m, 0x094, 0);
	mmio_wr(&r->m, 0x0a0, USED(q));
	mmio_wr(&r->m, 0x0a4, 0);
	mmio_wr(&r->m, 0x044, 1);
}

/* Makes descriptor i of queue q (a writable buffer of len bytes) available. */
static void post(struct rig *r, unsigned q, uint16_t i, uint32_t len)
{
	struct virtq_desc d = { .addr = htole64(BUF(q, i)), .len = htole32(len), .flags = htole16(VIRTQ_DESC_F_WRITE) };
	uint16_t head = htole16(i), idx;

	assert_int_equal(guest_mem_write(&r->mem, DESC(q) + 16u * i, &d, sizeof(d)), 0);
	assert_int_equal(guest_mem_write(&r->mem, AVAIL(q) + 4 + 2u * (r->avail_idx[q] % QSIZE), &head, 2), 0);
	idx = htole16(++r->avail_idx[q]);
	assert_int_equal(guest_mem_write(&r->mem, AVAIL(q) + 2, &idx, 2), 0);
}

static uint16_t used_idx(struct rig *r, unsigned q)
{
	uint16_t v;

	assert_int_equal(guest_mem_read(&r->mem, USED(q) + 2, &v, 2), 0);
	return le16toh(v);
}

/* A driven device, then saved and restored into a fresh transport and device, as a restored VMM does. */
static void setup(struct rig *r)
{
	struct guest_mem_region layout = { .gpa = 0, .size = MEM_SIZE };
	struct snap_virtio saved;
	char err[256];

	memset(r, 0, sizeof(*r));
	snprintf(r->path, sizeof(r->path), "/tmp/sandvm-test-vsock-restore-%d", (int)getpid());
	assert_int_equal(guest_mem_init(&r->mem, &layout, 1, false), 0);
	assert_int_equal(event_loop_init(&r->loop), 0);
	assert_int_equal(vsock_dev_init(&r->vs, 3, r->path), 0);
	assert_int_equal(virtio_mmio_init(&r->m, &virtio_vsock_ops, &r->vs, &r->mem, -1, 0xd0000000, 5), 0);
	assert_true(mmio_negotiate(&r->m, VIRTIO_F_VERSION_1) & 8);
	for (unsigned q = 0; q < 3; q++)
		setup_queue(r, q);
	mmio_wr(&r->m, 0x070, 0xf);
	virtio_mmio_save(&r->m, &saved);
	virtio_mmio_destroy(&r->m);
	vsock_dev_destroy(&r->vs);

	assert_int_equal(vsock_dev_init(&r->vs, 3, r->path), 0);
	assert_int_equal(virtio_mmio_init(&r->m, &virtio_vsock_ops, &r->vs, &r->mem, -1, 0xd0000000, 5), 0);
	assert_int_equal(virtio_mmio_restore(&r->m, &saved, err, sizeof(err)), 0);
	assert_int_equal(vsock_dev_start(&r->vs, &r->m.dev, &r->loop), 0);
}

static void teardown(struct rig *r)
{
	virtio_mmio_destroy(&r->m);
	vsock_dev_destroy(&r->vs);
	event_loop_destroy(&r->loop);
	guest_mem_destroy(&r->mem);
}

static int host_connect(struct rig *r, unsigned port)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char line[32];
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", r->path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	snprintf(line, sizeof(line), "CONNECT %u\n", port);
	assert_int_equal(send(fd, line, strlen(line), MSG_NOSIGNAL), (ssize_t)strlen(line));
	/* Accept, then read the CONNECT line. */
	for (unsigned i = 0; i < 4; i++)
		event_loop_run_once(&r->loop, 50);
	return fd;
}

static void reset_event_then_rx(void **state)
{
	struct virtq_used_elem e;
	uint32_t ev = 0xffffffffu;
	struct rig r;
	int fd;

	(void)state;
	setup(&r);
	/* RX buffers are there, a host client asks for a guest port: held, the guest has not seen the reset. */
	post(&r, RXQ, 0, 1024);
	post(&r, RXQ, 1, 1024);
	fd = host_connect(&r, 52);
	mmio_wr(&r.m, 0x050, RXQ);
	assert_int_equal(used_idx(&r, RXQ), 0);

	/* The guest's event buffer arrives (its kick): it gets TRANSPORT_RESET (id 0), 4 bytes. */
	guest_mem_write(&r.mem, BUF(EVQ, 0), &ev, sizeof(ev));
	post(&r, EVQ, 0, 8);
	mmio_wr(&r.m, 0x050, EVQ);
	assert_int_equal(used_idx(&r, EVQ), 1);
	assert_int_equal(guest_mem_read(&r.mem, USED(EVQ) + 4, &e, sizeof(e)), 0);
	assert_int_equal(le32toh(e.id), 0);
	assert_int_equal(le32toh(e.len), 4);
	assert_int_equal(guest_mem_read(&r.mem, BUF(EVQ, 0), &ev, sizeof(ev)), 0);
	assert_int_equal(ev, 0);
	assert_int_equal(used_idx(&r, RXQ), 0);

	/* It handled the event and gave the buffer back: now the REQUEST goes out on RX. */
	post(&r, EVQ, 0, 8);
	mmio_wr(&r.m, 0x050, EVQ);
	assert_int_equal(used_idx(&r, EVQ), 1); /* one reset only */
	assert_int_equal(used_idx(&r, RXQ), 1);
	close(fd);
	teardown(&r);
}

static void hostile_event_buffer(void **state)
{
	struct rig r;

	(void)state;
	setup(&r);
	/* Too small for an event: the device asks for a reset; nothing else breaks. */
	post(&r, EVQ, 0, 2);
	mmio_wr(&r.m, 0x050, EVQ);
	assert_int_equal(used_idx(&r, EVQ), 0);
	assert_true(mmio_rd(&r.m, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	/* The driver resets the device: the held reset and RX hold go with it. */
	mmio_wr(&r.m, 0x070, 0);
	assert_false(r.vs.reset_event_pending);
	assert_false(r.vs.reset_hold_rx);
	teardown(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reset_event_then_rx),
		cmocka_unit_test(hostile_event_buffer),
	};

	return cmocka_run_group_tests_name("vsock_restore", tests, NULL, NULL);
}
