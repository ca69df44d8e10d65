/* The split virtqueue: valid chains, and every rule a hostile guest can break. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "unit.h"
#include "memory.h"
#include "virtio/queue.h"

#define MEM_SIZE  (1u << 20)
#define DESC_GPA  0x1000u
#define AVAIL_GPA 0x2000u
#define USED_GPA  0x3000u
#define TABLE_GPA 0x8000u /* indirect tables */
#define BUF_GPA   0x10000u

struct ring {
	struct guest_mem mem;
	struct virtq q;
	struct virtq_chain chain;
	unsigned size;
	uint16_t avail_idx;
};

static void ring_setup_mem(struct ring *r, uint64_t mem_size, unsigned size, uint64_t features)
{
	struct guest_mem_region layout = { .gpa = 0, .size = mem_size };

	memset(r, 0, sizeof(*r));
	assert_int_equal(guest_mem_init(&r->mem, &layout, 1, false), 0);
	assert_int_equal(virtq_init(&r->q, &r->mem, 256), 0);
	assert_int_equal(virtq_configure(&r->q, size, DESC_GPA, AVAIL_GPA, USED_GPA, features), 0);
	r->size = size;
}

static void ring_setup(struct ring *r, unsigned size, uint64_t features)
{
	ring_setup_mem(r, MEM_SIZE, size, features);
}

static void ring_teardown(struct ring *r)
{
	guest_mem_destroy(&r->mem);
}

static void put_desc(struct ring *r, uint64_t table, unsigned i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	struct virtq_desc d = { .addr = htole64(addr), .len = htole32(len),
				.flags = htole16(flags), .next = htole16(next) };

	assert_int_equal(guest_mem_write(&r->mem, table + 16ull * i, &d, sizeof(d)), 0);
}

static void set_avail_idx(struct ring *r, uint16_t idx)
{
	uint16_t v = htole16(idx);

	assert_int_equal(guest_mem_write(&r->mem, AVAIL_GPA + 2, &v, 2), 0);
}

static void post(struct ring *r, uint16_t head)
{
	uint16_t v = htole16(head);

	assert_int_equal(guest_mem_write(&r->mem, AVAIL_GPA + 4 + 2 * (r->avail_idx % r->size),
					 &v, 2), 0);
	set_avail_idx(r, ++r->avail_idx);
}

static uint16_t read16(struct ring *r, uint64_t gpa)
{
	uint16_t v;

	assert_int_equal(guest_mem_read(&r->mem, gpa, &v, 2), 0);
	return le16toh(v);
}

static void write16(struct ring *r, uint64_t gpa, uint16_t v)
{
	v = htole16(v);
	assert_int_equal(guest_mem_write(&r->mem, gpa, &v, 2), 0);
}

/* The hostile case must fail with `err`, mark the queue broken, and stay broken. */
static void expect_broken(struct ring *r, int err)
{
	assert_int_equal(virtq_pop(&r->q, &r->chain), err);
	assert_true(r->q.broken);
	assert_int_equal(virtq_pop(&r->q, &r->chain), -EIO);
	assert_int_equal(virtq_push(&r->q, 0, 0), -EIO);
	assert_false(virtq_should_notify(&r->q));
}

static void *gptr(struct ring *r, uint64_t gpa)
{
	return guest_mem_ptr(&r->mem, gpa, 1);
}

static void configure_rules(void **state)
{
	struct guest_mem_region layout = { .gpa = 0, .size = MEM_SIZE };
	struct guest_mem mem;
	struct virtq q;

	(void)state;
	assert_int_equal(guest_mem_init(&mem, &layout, 1, false), 0);
	assert_int_equal(virtq_init(&q, &mem, 0), -EINVAL);
	assert_int_equal(virtq_init(&q, &mem, 48), -EINVAL);
	assert_int_equal(virtq_init(&q, &mem, 65536), -EINVAL);
	assert_int_equal(virtq_init(&q, &mem, VIRTQ_MAX_SIZE), 0);
	assert_int_equal(virtq_init(&q, &mem, 256), 0);

	assert_int_equal(virtq_configure(&q, 0, DESC_GPA, AVAIL_GPA, USED_GPA, 0), -EINVAL);
	assert_int_equal(virtq_configure(&q, 12, DESC_GPA, AVAIL_GPA, USED_GPA, 0), -EINVAL);
	assert_int_equal(virtq_configure(&q, 512, DESC_GPA, AVAIL_GPA, USED_GPA, 0), -EINVAL);
	/* Alignment: desc 16, avail 2, used 4. */
	assert_int_equal(virtq_configure(&q, 8, DESC_GPA + 8, AVAIL_GPA, USED_GPA, 0), -EINVAL);
	assert_int_equal(virtq_configure(&q, 8, DESC_GPA, AVAIL_GPA + 1, USED_GPA, 0), -EINVAL);
	assert_int_equal(virtq_configure(&q, 8, DESC_GPA, AVAIL_GPA, USED_GPA + 2, 0), -EINVAL);
	/* Each part wholly in RAM, trailing event fields included. */
	assert_int_equal(virtq_configure(&q, 8, MEM_SIZE, AVAIL_GPA, USED_GPA, 0), -EINVAL);
	assert_int_equal(virtq_configure(&q, 8, DESC_GPA, MEM_SIZE - 6 - 2 * 8, USED_GPA, 0), 0);
	/* A used ring cannot end exactly at a 4-aligned end: 2 bytes spare. */
	assert_int_equal(virtq_configure(&q, 8, DESC_GPA, AVAIL_GPA, MEM_SIZE - 8 - 8 * 8, 0), 0);
	assert_int_equal(virtq_configure(&q, 8, MEM_SIZE - 16 * 8, AVAIL_GPA, USED_GPA, 0), 0);
	assert_int_equal(virtq_configure(&q, 8, DESC_GPA, MEM_SIZE - 4 - 2 * 8, USED_GPA, 0),
			 -EINVAL);
	assert_int_equal(virtq_configure(&q, 8, DESC_GPA, AVAIL_GPA, MEM_SIZE - 4 - 8 * 8, 0),
			 -EINVAL);
	assert_int_equal(virtq_configure(&q, 8, DESC_GPA, AVAIL_GPA, UINT64_MAX - 3, 0), -EINVAL);
	assert_true(q.ready);
	/* A refused configuration leaves the previous one in place. */
	assert_int_equal(q.size, 8);
	assert_int_equal(q.desc_gpa, MEM_SIZE - 16 * 8);

	virtq_reset(&q);
	assert_false(q.ready);
	assert_int_equal(q.max_size, 256);
	{
		struct virtq_chain chain;

		assert_int_equal(virtq_pop(&q, &chain), 0); /* not ready: nothing to take */
		assert_int_equal(virtq_push(&q, 0, 0), -EINVAL);
	}
	guest_mem_destroy(&mem);
}

static void valid_chain(void **state)
{
	struct ring r;

	(void)state;
	ring_setup(&r, 8, 0);
	put_desc(&r, DESC_GPA, 5, BUF_GPA, 100, VIRTQ_DESC_F_NEXT, 2);
	put_desc(&r, DESC_GPA, 2, BUF_GPA + 0x1000, 200, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 7);
	put_desc(&r, DESC_GPA, 7, BUF_GPA + 0x2000, 300, VIRTQ_DESC_F_WRITE, 0);
	post(&r, 5);

	assert_int_equal(virtq_pop(&r.q, &r.chain), 1);
	assert_int_equal(r.chain.head, 5);
	assert_int_equal(r.chain.nread, 1);
	assert_int_equal(r.chain.nwrite, 2);
	assert_int_equal(r.chain.read_len, 100);
	assert_int_equal(r.chain.write_len, 500);
	assert_ptr_equal(r.chain.iov[0].iov_base, gptr(&r, BUF_GPA));
	assert_int_equal(r.chain.iov[0].iov_len, 100);
	assert_ptr_equal(r.chain.iov[1].iov_base, gptr(&r, BUF_GPA + 0x1000));
	assert_int_equal(r.chain.iov[1].iov_len, 200);
	assert_ptr_equal(r.chain.iov[2].iov_base, gptr(&r, BUF_GPA + 0x2000));
	assert_int_equal(r.chain.iov[2].iov_len, 300);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 0);
	assert_false(r.q.broken);

	/* Zero-length buffers are skipped; a write-only chain has no readable part. */
	put_desc(&r, DESC_GPA, 0, 0xdeadbeef0000ull, 0, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	put_desc(&r, DESC_GPA, 1, BUF_GPA, 16, VIRTQ_DESC_F_WRITE, 0);
	post(&r, 0);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 1);
	assert_int_equal(r.chain.nread, 0);
	assert_int_equal(r.chain.nwrite, 1);
	assert_int_equal(r.chain.write_len, 16);
	ring_teardown(&r);
}

static void empty_queue(void **state)
{
	struct ring r;

	(void)state;
	ring_setup(&r, 8, 0);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 0);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 0);
	assert_false(r.q.broken);
	assert_false(virtq_should_notify(&r.q)); /* nothing pushed */
	ring_teardown(&r);
}

static void buffer_outside_ram(void **state)
{
	struct ring r;

	(void)state;
	ring_setup(&r, 8, 0);
	put_desc(&r, DESC_GPA, 0, MEM_SIZE + 0x1000, 16, 0, 0);
	post(&r, 0);
	expect_broken(&r, -EFAULT);
	ring_teardown(&r);

	/* Straddling the end of RAM by one byte. */
	ring_setup(&r, 8, 0);
	put_desc(&r, DESC_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(&r, DESC_GPA, 1, MEM_SIZE - 15, 16, VIRTQ_DESC_F_WRITE, 0);
	post(&r, 0);
	expect_broken(&r, -EFAULT);
	ring_teardown(&r);

	/* An address near the top of the address space, where addr + len wraps. */
	ring_setup(&r, 8, 0);
	put_desc(&r, DESC_GPA, 0, UINT64_MAX - 7, 16, 0, 0);
	post(&r, 0);
	expect_broken(&r, -EFAULT);
	ring_teardown(&r);
}

static void huge_lengths(void **state)
{
	struct ring r;

	(void)state;
	ring_setup(&r, 8, 0);
	put_desc(&r, DESC_GPA, 0, BUF_GPA, UINT32_MAX, 0, 0);
	post(&r, 0);
	expect_broken(&r, -EFAULT);
	ring_teardown(&r);

	/*
	 * Two buffers that are each in RAM but sum past 4 GiB - 1. The 2 GiB
	 * of RAM is reserved, never touched beyond the rings.
	 */
	ring_setup_mem(&r, 2ull << 30, 8, 0);
	put_desc(&r, DESC_GPA, 0, 0, 0x80000000u, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	put_desc(&r, DESC_GPA, 1, 0, 0x80000000u, VIRTQ_DESC_F_WRITE, 0);
	post(&r, 0);
	expect_broken(&r, -EOVERFLOW);
	ring_teardown(&r);
}

static void descriptor_loops(void **state)
{
	struct ring r;

	(void)state;
	/* a -> b -> a */
	ring_setup(&r, 8, 0);
	put_desc(&r, DESC_GPA, 3, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 4);
	put_desc(&r, DESC_GPA, 4, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 3);
	post(&r, 3);
	expect_broken(&r, -ELOOP);
	ring_teardown(&r);

	/* A descriptor pointing at itself. */
	ring_setup(&r, 8, 0);
	put_desc(&r, DESC_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
	post(&r, 0);
	expect_broken(&r, -ELOOP);
	ring_teardown(&r);

	/* Every entry used once is fine; one link more is a chain longer than the queue. */
	ring_setup(&r, 4, 0);
	for (unsigned i = 0; i < 4; i++)
		put_desc(&r, DESC_GPA, i, BUF_GPA, 16, i < 3 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
	post(&r, 0);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 1);
	assert_int_equal(r.chain.nread, 4);
	put_desc(&r, DESC_GPA, 3, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
	post(&r, 1);
	expect_broken(&r, -ELOOP);
	ring_teardown(&r);
}

static void bad_indexes(void **state)
{
	struct ring r;

	(void)state;
	/* next >= size */
	ring_setup(&r, 8, 0);
	put_desc(&r, DESC_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 8);
	post(&r, 0);
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);

	/* head >= size */
	ring_setup(&r, 8, 0);
	post(&r, 8);
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);

	ring_setup(&r, 8, 0);
	post(&r, 0xffff);
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);
}

static void avail_idx_jump(void **state)
{
	struct ring r;

	(void)state;
	/* Exactly size entries outstanding is legal. */
	ring_setup(&r, 8, 0);
	for (unsigned i = 0; i < 8; i++) {
		put_desc(&r, DESC_GPA, i, BUF_GPA, 16, 0, 0);
		post(&r, (uint16_t)i);
	}
	for (unsigned i = 0; i < 8; i++) {
		assert_int_equal(virtq_pop(&r.q, &r.chain), 1);
		assert_int_equal(r.chain.head, i);
	}
	assert_int_equal(virtq_pop(&r.q, &r.chain), 0);
	/* size + 1 is not. */
	set_avail_idx(&r, (uint16_t)(r.avail_idx + 9));
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);

	/* Neither is going backwards (a jump of 65535). */
	ring_setup(&r, 8, 0);
	set_avail_idx(&r, 0xffff);
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);
}

static void writable_before_readable(void **state)
{
	struct ring r;

	(void)state;
	ring_setup(&r, 8, 0);
	put_desc(&r, DESC_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	put_desc(&r, DESC_GPA, 1, BUF_GPA, 16, 0, 0);
	post(&r, 0);
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);
}

static void indirect_valid(void **state)
{
	struct ring r;

	(void)state;
	ring_setup(&r, 8, VIRTQ_F_INDIRECT_DESC);
	put_desc(&r, TABLE_GPA, 0, BUF_GPA, 10, VIRTQ_DESC_F_NEXT, 2);
	put_desc(&r, TABLE_GPA, 2, BUF_GPA + 0x100, 20, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	put_desc(&r, TABLE_GPA, 1, BUF_GPA + 0x200, 30, VIRTQ_DESC_F_WRITE, 0);
	/* WRITE on the descriptor naming the table is ignored, as the spec says. */
	put_desc(&r, DESC_GPA, 6, TABLE_GPA, 3 * 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
	post(&r, 6);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 1);
	assert_int_equal(r.chain.head, 6);
	assert_int_equal(r.chain.nread, 1);
	assert_int_equal(r.chain.nwrite, 2);
	assert_int_equal(r.chain.read_len, 10);
	assert_int_equal(r.chain.write_len, 50);
	assert_ptr_equal(r.chain.iov[0].iov_base, gptr(&r, BUF_GPA));
	assert_ptr_equal(r.chain.iov[1].iov_base, gptr(&r, BUF_GPA + 0x100));
	assert_ptr_equal(r.chain.iov[2].iov_base, gptr(&r, BUF_GPA + 0x200));

	/* A direct readable head that ends in an indirect table; unaligned table. */
	put_desc(&r, DESC_GPA, 0, BUF_GPA, 4, VIRTQ_DESC_F_NEXT, 1);
	put_desc(&r, DESC_GPA, 1, TABLE_GPA + 0x103, 16, VIRTQ_DESC_F_INDIRECT, 0);
	put_desc(&r, TABLE_GPA + 0x103, 0, BUF_GPA + 0x300, 8, VIRTQ_DESC_F_WRITE, 0);
	post(&r, 0);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 1);
	assert_int_equal(r.chain.nread, 1);
	assert_int_equal(r.chain.nwrite, 1);
	assert_ptr_equal(r.chain.iov[1].iov_base, gptr(&r, BUF_GPA + 0x300));
	ring_teardown(&r);

	/* Not negotiated: the flag is a protocol error. */
	ring_setup(&r, 8, 0);
	put_desc(&r, TABLE_GPA, 0, BUF_GPA, 10, 0, 0);
	put_desc(&r, DESC_GPA, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	post(&r, 0);
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);
}

static void indirect_hostile(void **state)
{
	static const uint32_t bad_len[] = { 0, 8, 17, 16 * (VIRTQ_MAX_SIZE + 1), UINT32_MAX & ~15u };
	struct ring r;

	(void)state;
	for (unsigned i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
		ring_setup(&r, 8, VIRTQ_F_INDIRECT_DESC);
		put_desc(&r, DESC_GPA, 0, TABLE_GPA, bad_len[i], VIRTQ_DESC_F_INDIRECT, 0);
		post(&r, 0);
		expect_broken(&r, -EPROTO);
		ring_teardown(&r);
	}

	/* Table outside RAM, and straddling its end. */
	ring_setup(&r, 8, VIRTQ_F_INDIRECT_DESC);
	put_desc(&r, DESC_GPA, 0, MEM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
	post(&r, 0);
	expect_broken(&r, -EFAULT);
	ring_teardown(&r);

	/* Nested indirect. */
	ring_setup(&r, 8, VIRTQ_F_INDIRECT_DESC);
	put_desc(&r, TABLE_GPA, 0, TABLE_GPA + 0x100, 16, VIRTQ_DESC_F_INDIRECT, 0);
	put_desc(&r, TABLE_GPA + 0x100, 0, BUF_GPA, 16, 0, 0);
	put_desc(&r, DESC_GPA, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	post(&r, 0);
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);

	/* INDIRECT together with NEXT. */
	ring_setup(&r, 8, VIRTQ_F_INDIRECT_DESC);
	put_desc(&r, TABLE_GPA, 0, BUF_GPA, 16, 0, 0);
	put_desc(&r, DESC_GPA, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	put_desc(&r, DESC_GPA, 1, BUF_GPA, 16, 0, 0);
	post(&r, 0);
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);

	/* Inside a table: a loop, and next beyond the table's own length. */
	ring_setup(&r, 8, VIRTQ_F_INDIRECT_DESC);
	put_desc(&r, TABLE_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(&r, TABLE_GPA, 1, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
	put_desc(&r, DESC_GPA, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	post(&r, 0);
	expect_broken(&r, -ELOOP);
	ring_teardown(&r);

	ring_setup(&r, 8, VIRTQ_F_INDIRECT_DESC);
	put_desc(&r, TABLE_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 2); /* entry 2 is past len */
	put_desc(&r, TABLE_GPA, 2, BUF_GPA, 16, 0, 0);
	put_desc(&r, DESC_GPA, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	post(&r, 0);
	expect_broken(&r, -EPROTO);
	ring_teardown(&r);

	/* More segments than a chain can carry. */
	ring_setup(&r, 8, VIRTQ_F_INDIRECT_DESC);
	for (unsigned i = 0; i < VIRTQ_MAX_SEGS; i++)
		put_desc(&r, TABLE_GPA, i, BUF_GPA + i, 1,
			 i + 1 < VIRTQ_MAX_SEGS ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	put_desc(&r, DESC_GPA, 0, TABLE_GPA, 16 * VIRTQ_MAX_SEGS, VIRTQ_DESC_F_INDIRECT, 0);
	post(&r, 0);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 1); /* exactly the limit */
	assert_int_equal(r.chain.nread, VIRTQ_MAX_SEGS);
	put_desc(&r, TABLE_GPA, VIRTQ_MAX_SEGS - 1, BUF_GPA, 1, VIRTQ_DESC_F_NEXT, VIRTQ_MAX_SEGS);
	put_desc(&r, TABLE_GPA, VIRTQ_MAX_SEGS, BUF_GPA, 1, 0, 0);
	put_desc(&r, DESC_GPA, 1, TABLE_GPA, 16 * (VIRTQ_MAX_SEGS + 1), VIRTQ_DESC_F_INDIRECT, 0);
	post(&r, 1);
	expect_broken(&r, -E2BIG);
	ring_teardown(&r);
}

static void push_used(void **state)
{
	struct ring r;

	(void)state;
	ring_setup(&r, 4, 0);
	for (unsigned round = 0; round < 6; round++) {
		uint32_t id, len;

		put_desc(&r, DESC_GPA, 2, BUF_GPA, 64, VIRTQ_DESC_F_WRITE, 0);
		post(&r, 2);
		assert_int_equal(virtq_pop(&r.q, &r.chain), 1);
		assert_int_equal(virtq_push(&r.q, r.chain.head, 42 + round), 0);
		assert_int_equal(read16(&r, USED_GPA + 2), round + 1);
		assert_int_equal(guest_mem_read(&r.mem, USED_GPA + 4 + 8 * (round % 4), &id, 4), 0);
		assert_int_equal(guest_mem_read(&r.mem, USED_GPA + 8 + 8 * (round % 4), &len, 4), 0);
		assert_int_equal(le32toh(id), 2);
		assert_int_equal(le32toh(len), 42 + round);
	}
	assert_int_equal(virtq_push(&r.q, 4, 0), -EINVAL); /* a device bug, not the guest's */
	assert_false(r.q.broken);
	ring_teardown(&r);
}

static void notify_flags(void **state)
{
	struct ring r;

	(void)state;
	ring_setup(&r, 8, 0);
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_true(virtq_should_notify(&r.q));
	assert_false(virtq_should_notify(&r.q)); /* nothing new */
	write16(&r, AVAIL_GPA, VIRTQ_AVAIL_F_NO_INTERRUPT);
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_false(virtq_should_notify(&r.q));
	write16(&r, AVAIL_GPA, 0);
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_true(virtq_should_notify(&r.q));
	/* Without EVENT_IDX there is no avail_event to set. */
	write16(&r, USED_GPA + 4 + 8 * 8, 0x1234);
	virtq_set_avail_event(&r.q);
	assert_int_equal(read16(&r, USED_GPA + 4 + 8 * 8), 0x1234);
	ring_teardown(&r);
}

static void notify_event_idx(void **state)
{
	const uint64_t used_event = AVAIL_GPA + 4 + 2 * 8;
	struct ring r;

	(void)state;
	ring_setup(&r, 8, VIRTQ_F_RING_EVENT_IDX);
	/* used_event 0: wants to hear about the first used entry. */
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_true(virtq_should_notify(&r.q));

	/* used_event 3: entries 1 and 2 go by quietly, entry 3 (idx 3 -> 4) notifies. */
	write16(&r, used_event, 3);
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_false(virtq_should_notify(&r.q));
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_false(virtq_should_notify(&r.q));
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_true(virtq_should_notify(&r.q));

	/* A batch that steps over used_event notifies once. */
	write16(&r, used_event, 5);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_true(virtq_should_notify(&r.q));
	assert_false(virtq_should_notify(&r.q));

	/* The flag means nothing under EVENT_IDX; used_event behind us stays quiet. */
	write16(&r, AVAIL_GPA, VIRTQ_AVAIL_F_NO_INTERRUPT);
	write16(&r, used_event, 7);
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_true(virtq_should_notify(&r.q));
	write16(&r, used_event, 2);
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_false(virtq_should_notify(&r.q));

	/* Wrap-around of the 16-bit indexes. */
	r.q.used_idx = 0xfffe;
	r.q.signalled_used = 0xfffe;
	write16(&r, used_event, 0xffff);
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_int_equal(virtq_push(&r.q, 0, 0), 0);
	assert_true(virtq_should_notify(&r.q));
	assert_int_equal(read16(&r, USED_GPA + 2), 0);

	/* Device side: avail_event follows last_avail_idx. */
	put_desc(&r, DESC_GPA, 0, BUF_GPA, 16, 0, 0);
	post(&r, 0);
	post(&r, 0);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 1);
	assert_int_equal(virtq_pop(&r.q, &r.chain), 1);
	write16(&r, USED_GPA + 4 + 8 * 8, 0);
	/* An empty pop re-arms the driver's kick by itself: no buffer is missed. */
	assert_int_equal(virtq_pop(&r.q, &r.chain), 0);
	assert_int_equal(read16(&r, USED_GPA + 4 + 8 * 8), 2);
	write16(&r, USED_GPA + 4 + 8 * 8, 0);
	virtq_set_avail_event(&r.q);
	assert_int_equal(read16(&r, USED_GPA + 4 + 8 * 8), 2);
	ring_teardown(&r);
}

/* Random rings: any outcome is fine as long as nothing escapes guest RAM. */
static void random_rings(void **state)
{
	uint64_t seed = 0x5eed;
	struct ring r;

	(void)state;
	ring_setup(&r, 16, VIRTQ_F_INDIRECT_DESC | VIRTQ_F_RING_EVENT_IDX);
	for (unsigned round = 0; round < 2000; round++) {
		const uint8_t *lo = gptr(&r, 0);
		int rc = 0;

		virtq_reset(&r.q);
		assert_int_equal(virtq_configure(&r.q, 16, DESC_GPA, AVAIL_GPA, USED_GPA,
						 VIRTQ_F_INDIRECT_DESC | VIRTQ_F_RING_EVENT_IDX), 0);
		for (unsigned i = 0; i < 16; i++) {
			uint32_t a = unit_rand(&seed);
			uint64_t table = (a & 1) ? DESC_GPA : TABLE_GPA;

			put_desc(&r, table, i, unit_rand(&seed) % (MEM_SIZE + 0x100),
				 (a & 2) ? unit_rand(&seed) : unit_rand(&seed) % 0x400,
				 (uint16_t)(unit_rand(&seed) & 7), (uint16_t)(unit_rand(&seed) % 20));
			write16(&r, AVAIL_GPA + 4 + 2 * i, (uint16_t)(unit_rand(&seed) % 18));
		}
		put_desc(&r, DESC_GPA, unit_rand(&seed) % 16, TABLE_GPA,
			 16 * (unit_rand(&seed) % 18), VIRTQ_DESC_F_INDIRECT, 0);
		set_avail_idx(&r, (uint16_t)(unit_rand(&seed) % 20));
		for (unsigned n = 0; n < 32; n++) {
			rc = virtq_pop(&r.q, &r.chain);
			if (rc != 1)
				break;
			assert_true(r.chain.nread + r.chain.nwrite <= VIRTQ_MAX_SEGS);
			for (unsigned s = 0; s < r.chain.nread + r.chain.nwrite; s++) {
				const uint8_t *p = r.chain.iov[s].iov_base;

				assert_true(p >= lo && p + r.chain.iov[s].iov_len <= lo + MEM_SIZE);
			}
			assert_int_equal(virtq_push(&r.q, r.chain.head, r.chain.write_len), 0);
		}
		assert_true(rc == 0 || rc == -EIO || r.q.broken);
	}
	ring_teardown(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(configure_rules),
		cmocka_unit_test(valid_chain),
		cmocka_unit_test(empty_queue),
		cmocka_unit_test(buffer_outside_ram),
		cmocka_unit_test(huge_lengths),
		cmocka_unit_test(descriptor_loops),
		cmocka_unit_test(bad_indexes),
		cmocka_unit_test(avail_idx_jump),
		cmocka_unit_test(writable_before_readable),
		cmocka_unit_test(indirect_valid),
		cmocka_unit_test(indirect_hostile),
		cmocka_unit_test(push_used),
		cmocka_unit_test(notify_flags),
		cmocka_unit_test(notify_event_idx),
		cmocka_unit_test(random_rings),
	};

	return cmocka_run_group_tests_name("virtqueue", tests, NULL, NULL);
}
