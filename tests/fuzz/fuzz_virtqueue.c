/*
 * libFuzzer target: split virtqueue chains. The input is guest RAM from
 * address 0; its first bytes also pick the queue layout:
 *   [0,2) size  [2,4) desc  [4,6) avail  [6,8) used  (le16)  [8] features
 * (bit 0 INDIRECT_DESC, bit 1 RING_EVENT_IDX). virtq_configure() decides
 * whether that layout is acceptable; the rest is whatever the guest wrote.
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memory.h"
#include "virtio/queue.h"

#define MEM_SIZE (64u << 10)
#define MAX_POPS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return le16toh(v);
}

static void check_chain(const struct virtq_chain *c, const uint8_t *ram)
{
	uint64_t read_len = 0, write_len = 0;

	if (c->nread + c->nwrite > VIRTQ_MAX_SEGS)
		abort();
	for (unsigned i = 0; i < c->nread + c->nwrite; i++) {
		const uint8_t *p = c->iov[i].iov_base;
		size_t len = c->iov[i].iov_len;

		if (len == 0 || p < ram || p > ram + MEM_SIZE || len > (size_t)(ram + MEM_SIZE - p))
			abort();
		/* Touch both ends so ASan vouches for the range too. */
		if (p[0] == 0x5a && p[len - 1] == 0xa5)
			__asm__ volatile("" ::: "memory");
		if (i < c->nread)
			read_len += len;
		else
			write_len += len;
	}
	if (read_len != c->read_len || write_len != c->write_len)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct guest_mem mem;
	static bool mapped;
	struct virtq_chain chain;
	struct virtq q;
	uint64_t features = 0;
	uint8_t *ram;
	int rc = 0;

	if (size < 9 || size > MEM_SIZE)
		return 0;
	if (!mapped) {
		struct guest_mem_region layout = { .gpa = 0, .size = MEM_SIZE };

		if (guest_mem_init(&mem, &layout, 1, false) != 0)
			abort();
		mapped = true;
	}
	ram = guest_mem_ptr(&mem, 0, MEM_SIZE);
	memset(ram, 0, MEM_SIZE);
	memcpy(ram, data, size);

	if (data[8] & 1)
		features |= VIRTQ_F_INDIRECT_DESC;
	if (data[8] & 2)
		features |= VIRTQ_F_RING_EVENT_IDX;
	if (virtq_init(&q, &mem, VIRTQ_MAX_SIZE) != 0)
		abort();
	if (virtq_configure(&q, get16(data), get16(data + 2), get16(data + 4), get16(data + 6),
			    features) != 0)
		return 0;

	for (unsigned n = 0; n < MAX_POPS; n++) {
		rc = virtq_pop(&q, &chain);
		if (rc == 0) {
			/* The device's idle path: re-arm, then look once more. */
			virtq_set_avail_event(&q);
			rc = virtq_pop(&q, &chain);
		}
		if (rc != 1)
			break;
		check_chain(&chain, ram);
		if (virtq_push(&q, chain.head, chain.write_len) != 0)
			abort();
		(void)virtq_should_notify(&q);
	}
	if (rc < 0 && (!q.broken || virtq_pop(&q, &chain) != -EIO))
		abort();
	return 0;
}
