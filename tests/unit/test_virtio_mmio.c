/* The virtio-mmio transport's register protocol, driven as a guest driver would, with virtio-rng. */
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "log_capture.h"
#include "mmio_driver.h"
#include "memory.h"
#include "virtio/mmio.h"
#include "virtio/rng.h"
#include "devices/serial.h"
#include "snapshot/format.h"

#define MEM_SIZE (1u << 20)
#define DESC 0x1000u
#define AVAIL 0x2000u
#define USED 0x3000u
#define BUF 0x8000u

struct rig {
	struct guest_mem mem;
	struct virtio_mmio m;
};

#define rd(r, off) mmio_rd(&(r)->m, off)
#define wr(r, off, v) mmio_wr(&(r)->m, off, v)

static void setup(struct rig *r)
{
	struct guest_mem_region layout = { .gpa = 0, .size = MEM_SIZE };

	memset(r, 0, sizeof(*r));
	assert_int_equal(guest_mem_init(&r->mem, &layout, 1, false), 0);
	assert_int_equal(virtio_mmio_init(&r->m, &virtio_rng_ops, NULL, &r->mem, -1, 0xd0000000, 5),
			 0);
}

static void teardown(struct rig *r)
{
	virtio_mmio_destroy(&r->m);
	guest_mem_destroy(&r->mem);
}

static uint64_t irqs(struct rig *r)
{
	uint64_t n = 0;

	if (read(r->m.irq_fd, &n, sizeof(n)) < 0)
		return 0;
	return n;
}

#define negotiate(r, features) mmio_negotiate(&(r)->m, features)

static void setup_queue(struct rig *r, uint32_t num, uint64_t desc)
{
	wr(r, 0x030, 0);
	wr(r, 0x038, num);
	wr(r, 0x080, (uint32_t)desc);
	wr(r, 0x084, (uint32_t)(desc >> 32));
	wr(r, 0x090, AVAIL);
	wr(r, 0x094, 0);
	wr(r, 0x0a0, USED);
	wr(r, 0x0a4, 0);
	wr(r, 0x044, 1);
}

static void identity(void **state)
{
	struct rig r;

	(void)state;
	setup(&r);
	assert_int_equal(rd(&r, 0x000), 0x74726976);
	assert_int_equal(rd(&r, 0x004), 2);
	assert_int_equal(rd(&r, 0x008), 4);
	wr(&r, 0x014, 1);
	assert_true(rd(&r, 0x010) & 1); /* VERSION_1 is bit 32 */
	wr(&r, 0x014, 7);
	assert_int_equal(rd(&r, 0x010), 0);
	wr(&r, 0x030, 0);
	assert_int_equal(rd(&r, 0x034), 256);
	wr(&r, 0x030, 1);
	assert_int_equal(rd(&r, 0x034), 0); /* rng has one queue */
	/* Narrow register accesses are ignored, not misread. */
	uint16_t half = 0xffff;
	virtio_mmio_bus_ops.read(&r.m, 0x000, (uint8_t *)&half, 2);
	assert_int_equal(half, 0);
	teardown(&r);
}

static void feature_negotiation(void **state)
{
	struct rig r;

	(void)state;
	setup(&r);
	/* Without VERSION_1 (a legacy driver) FEATURES_OK does not stick. */
	assert_false(negotiate(&r, 0) & 8);
	/* Nor with a bit that was never offered. */
	assert_false(negotiate(&r, VIRTIO_F_VERSION_1 | (1ull << 40)) & 8);
	assert_true(negotiate(&r, VIRTIO_F_VERSION_1 | VIRTQ_F_RING_EVENT_IDX) & 8);
	assert_int_equal(r.m.dev.driver_features, VIRTIO_F_VERSION_1 | VIRTQ_F_RING_EVENT_IDX);
	/* After FEATURES_OK the driver can no longer change them. */
	wr(&r, 0x024, 0);
	wr(&r, 0x020, 0);
	assert_int_equal(r.m.dev.driver_features, VIRTIO_F_VERSION_1 | VIRTQ_F_RING_EVENT_IDX);
	teardown(&r);
}

static void rng_request_round_trip(void **state)
{
	struct virtq_desc d = { .addr = htole64(BUF), .len = htole32(64),
				.flags = htole16(VIRTQ_DESC_F_WRITE) };
	uint16_t avail[3] = { 0, htole16(1), 0 };
	uint8_t zero[64] = { 0 };
	struct virtq_used_elem e;
	uint16_t used_idx;
	struct rig r;

	(void)state;
	setup(&r);
	assert_true(negotiate(&r, VIRTIO_F_VERSION_1) & 8);
	setup_queue(&r, 8, DESC);
	assert_int_equal(rd(&r, 0x044), 1);
	wr(&r, 0x070, 0xf);
	assert_int_equal(guest_mem_write(&r.mem, DESC, &d, sizeof(d)), 0);
	assert_int_equal(guest_mem_write(&r.mem, AVAIL, avail, sizeof(avail)), 0);
	wr(&r, 0x050, 0); /* QueueNotify, as an MMIO exit would deliver it */
	assert_int_equal(guest_mem_read(&r.mem, USED + 2, &used_idx, 2), 0);
	assert_int_equal(le16toh(used_idx), 1);
	assert_int_equal(guest_mem_read(&r.mem, USED + 4, &e, sizeof(e)), 0);
	assert_int_equal(le32toh(e.id), 0);
	assert_int_equal(le32toh(e.len), 64);
	assert_memory_not_equal(guest_mem_ptr(&r.mem, BUF, 64), zero, 64);
	assert_int_equal(rd(&r, 0x060), 1);
	assert_int_equal(irqs(&r), 1);
	wr(&r, 0x064, 1);
	assert_int_equal(rd(&r, 0x060), 0);
	/* Notifying a queue that does not exist does nothing. */
	wr(&r, 0x050, 5);
	assert_int_equal(irqs(&r), 0);
	/* Reset: everything back to the start. */
	wr(&r, 0x070, 0);
	assert_int_equal(rd(&r, 0x070), 0);
	assert_int_equal(rd(&r, 0x044), 0);
	assert_int_equal(r.m.dev.driver_features, 0);
	teardown(&r);
}

static void hostile_driver(void **state)
{
	struct rig r;

	(void)state;
	setup(&r);
	assert_true(negotiate(&r, VIRTIO_F_VERSION_1) & 8);
	/* A ring outside guest RAM: the device asks for a reset and says so. */
	setup_queue(&r, 8, MEM_SIZE - 16);
	assert_int_equal(rd(&r, 0x044), 0);
	assert_true(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(rd(&r, 0x060) & VIRTIO_ISR_CONFIG, VIRTIO_ISR_CONFIG);
	/* A size that is not a power of two. */
	wr(&r, 0x070, 0);
	assert_true(negotiate(&r, VIRTIO_F_VERSION_1) & 8);
	setup_queue(&r, 7, DESC);
	assert_int_equal(rd(&r, 0x044), 0);
	/* A broken device ignores notifications until reset. */
	wr(&r, 0x070, 0xf | VIRTIO_STATUS_NEEDS_RESET);
	wr(&r, 0x050, 0);
	wr(&r, 0x070, 0);
	assert_false(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	/* Config space beyond the device's size reads as zero. */
	assert_int_equal(rd(&r, 0x100), 0);
	assert_int_equal(rd(&r, 0xffc), 0);
	teardown(&r);
}

static uint64_t frozen_clock(void *ctx)
{
	(void)ctx;
	return 42;
}

/* A guest breaking the device, resetting it and breaking it again cannot fill the log. */
static void broken_cycles_log_bounded(void **state)
{
	struct log_capture cap;
	struct rig r;
	char *text;

	(void)state;
	setup(&r);
	/* One window, however slow the machine (sanitizer builds). */
	sv_ratelimit_set_clock(&r.m.dev.broken_log, frozen_clock, NULL);
	log_capture_start(&cap);
	for (unsigned i = 0; i < 10000; i++) {
		wr(&r, 0x070, 0);
		assert_true(negotiate(&r, VIRTIO_F_VERSION_1) & 8);
		setup_queue(&r, 8, MEM_SIZE - 16);
		assert_true(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	}
	teardown(&r); /* flushes the suppressed count */
	text = log_capture_end(&cap);
	assert_int_equal(log_count_lines(text, "broke the rules (queue set up outside guest RAM"),
			 SV_RATELIMIT_BURST);
	assert_int_equal(log_count_lines(text, "9990 similar messages suppressed"), 1);
	assert_true(log_count_lines(text, NULL) <= SV_RATELIMIT_BURST + 1);
	free(text);
}


/* One rng request through queue 0 whose chain is at avail slot `slot`; returns the used idx after it. */
static uint16_t rng_request(struct rig *r, uint16_t slot)
{
	struct virtq_desc d = { .addr = htole64(BUF), .len = htole32(16), .flags = htole16(VIRTQ_DESC_F_WRITE) };
	uint16_t head = 0, idx = htole16((uint16_t)(slot + 1)), used_idx;

	assert_int_equal(guest_mem_write(&r->mem, DESC, &d, sizeof(d)), 0);
	assert_int_equal(guest_mem_write(&r->mem, AVAIL + 4 + 2u * (slot % 8), &head, 2), 0);
	assert_int_equal(guest_mem_write(&r->mem, AVAIL + 2, &idx, 2), 0);
	wr(r, 0x050, 0);
	assert_int_equal(guest_mem_read(&r->mem, USED + 2, &used_idx, 2), 0);
	return le16toh(used_idx);
}

/*
 * A snapshot of the transport restored into a fresh one (same guest RAM, as
 * a restored VM maps it): the registers and the queue's indices come back,
 * and the queue goes on from where it stood.
 */
static void save_restore_round_trip(void **state)
{
	struct snap_virtio saved, again;
	struct virtio_mmio fresh;
	struct rig r;
	char err[256];

	(void)state;
	setup(&r);
	assert_true(negotiate(&r, VIRTIO_F_VERSION_1 | VIRTQ_F_RING_EVENT_IDX) & 8);
	setup_queue(&r, 8, DESC);
	wr(&r, 0x070, 0xf);
	assert_int_equal(rng_request(&r, 0), 1);
	assert_int_equal(rng_request(&r, 1), 2);
	virtio_mmio_save(&r.m, &saved);
	assert_int_equal(saved.device_id, VIRTIO_ID_RNG);
	assert_int_equal(saved.status, 0xf);
	assert_int_equal(saved.nqueues, 1);
	assert_int_equal(saved.q[0].ready, 1);
	assert_int_equal(saved.q[0].num, 8);
	assert_int_equal(saved.q[0].desc, DESC);
	assert_int_equal(saved.q[0].last_avail_idx, 2);
	assert_int_equal(saved.q[0].used_idx, 2);

	virtio_mmio_destroy(&r.m);
	assert_int_equal(virtio_mmio_init(&r.m, &virtio_rng_ops, NULL, &r.mem, -1, 0xd0000000, 5), 0);
	assert_int_equal(virtio_mmio_restore(&r.m, &saved, err, sizeof(err)), 0);
	assert_int_equal(rd(&r, 0x070), 0xf);
	assert_int_equal(rd(&r, 0x044), 1);
	assert_int_equal(r.m.dev.driver_features, VIRTIO_F_VERSION_1 | VIRTQ_F_RING_EVENT_IDX);
	virtio_mmio_save(&r.m, &again);
	assert_memory_equal(&saved, &again, sizeof(saved));
	/* The next request is served as the third: nothing replayed, nothing lost. */
	assert_int_equal(rng_request(&r, 2), 3);

	/* Another device type in the slot, features never offered, rings outside RAM: refused. */
	assert_int_equal(virtio_mmio_init(&fresh, &virtio_rng_ops, NULL, &r.mem, -1, 0xd0001000, 6), 0);
	again = saved;
	again.device_id = VIRTIO_ID_BLOCK;
	assert_int_equal(virtio_mmio_restore(&fresh, &again, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "virtio-rng"));
	again = saved;
	again.driver_features |= 1ull << 40;
	assert_int_equal(virtio_mmio_restore(&fresh, &again, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "never offered"));
	again = saved;
	again.q[0].used = MEM_SIZE - 8;
	assert_int_equal(virtio_mmio_restore(&fresh, &again, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "queue 0"));
	virtio_mmio_destroy(&fresh);
	teardown(&r);
}

/* A chain given back before a snapshot is popped again, the same one. */
static void unpop_gives_the_chain_back(void **state)
{
	struct virtq_desc d = { .addr = htole64(BUF), .len = htole32(16), .flags = htole16(VIRTQ_DESC_F_WRITE) };
	uint16_t avail[3] = { 0, htole16(1), 0 };
	struct virtq_chain ch;
	struct virtq q;
	struct rig r;

	(void)state;
	setup(&r);
	assert_int_equal(guest_mem_write(&r.mem, DESC, &d, sizeof(d)), 0);
	assert_int_equal(guest_mem_write(&r.mem, AVAIL, avail, sizeof(avail)), 0);
	assert_int_equal(virtq_init(&q, &r.mem, 8), 0);
	assert_int_equal(virtq_configure(&q, 8, DESC, AVAIL, USED, VIRTIO_F_VERSION_1), 0);
	assert_int_equal(virtq_pop(&q, &ch), 1);
	assert_int_equal(virtq_pop(&q, &ch), 0);
	virtq_unpop(&q, 1);
	assert_int_equal(q.last_avail_idx, 0);
	assert_int_equal(virtq_pop(&q, &ch), 1);
	assert_int_equal(ch.head, 0);
	teardown(&r);
}

static int no_irq(void *ctx, uint32_t gsi, int level)
{
	(void)ctx;
	(void)gsi;
	(void)level;
	return 0;
}

static void no_event(void *ctx, enum machine_event ev)
{
	(void)ctx;
	(void)ev;
}

static void serial_registers_round_trip(void **state)
{
	struct machine_hooks hooks = { .set_irq = no_irq, .event = no_event };
	struct snap_serial a, b;
	struct serial s;

	(void)state;
	assert_int_equal(serial_init(&s, 4, NULL, &hooks), 0);
	serial_write(&s, 3, 0x80); /* DLAB */
	serial_write(&s, 0, 0x01);
	serial_write(&s, 1, 0x02);
	serial_write(&s, 3, 0x03);
	serial_write(&s, 7, 0x5a);
	serial_save(&s, &a);
	serial_destroy(&s);
	assert_int_equal(serial_init(&s, 4, NULL, &hooks), 0);
	serial_restore(&s, &a);
	serial_save(&s, &b);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(serial_read(&s, 7), 0x5a);
	assert_int_equal(serial_read(&s, 3), 0x03);
	serial_destroy(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(identity),
		cmocka_unit_test(save_restore_round_trip),
		cmocka_unit_test(unpop_gives_the_chain_back),
		cmocka_unit_test(serial_registers_round_trip),
		cmocka_unit_test(feature_negotiation),
		cmocka_unit_test(rng_request_round_trip),
		cmocka_unit_test(hostile_driver),
		cmocka_unit_test(broken_cycles_log_bounded),
	};

	return cmocka_run_group_tests_name("virtio_mmio", tests, NULL, NULL);
}
