/*
 * The virtio-net device model, driven through the virtio-mmio registers as the
 * guest's driver would, with a SOCK_SEQPACKET socket pair standing in for the
 * tap (one read or write per frame, like a tap). Covers TX through the egress
 * filter, RX into mergeable buffers, RX waiting for buffers, oversized frames
 * and rings that break the rules, offloads both ways; and, last, the device
 * on a real tap in a network namespace of its own, where the process may make
 * one (skipped otherwise).
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "unit.h"
#include "event_loop.h"
#include "memory.h"
#include "mmio_driver.h"
#include "backends/tap.h"
#include "net/egress.h"
#include "net/frame.h"
#include "virtio/net.h"

#include <linux/if_tun.h>

#define MEM_SIZE (4u << 20)
#define QSIZE 16u
#define BUF_BASE 0x100000u
#define BUF_SIZE 0x1000u

#define F_CSUM (1ull << 0)
#define F_GUEST_CSUM (1ull << 1)
#define F_GUEST_TSO4 (1ull << 7)
#define F_GUEST_TSO6 (1ull << 8)
#define F_GUEST_ECN (1ull << 9)
#define F_GUEST_UFO (1ull << 10)
#define F_HOST_TSO4 (1ull << 11)
#define F_HOST_TSO6 (1ull << 12)
#define F_HOST_ECN (1ull << 13)
#define F_HOST_UFO (1ull << 14)
#define F_MRG_RXBUF (1ull << 15)
#define F_OFFLOADS (F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_ECN | F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_ECN)
#define NET_HDR 12u
#define RXQ 0u
#define TXQ 1u

struct ring {
	uint64_t desc, avail, used;
	uint16_t avail_idx, used_seen, next_desc;
};

struct rig {
	struct guest_mem mem;
	struct event_loop loop;
	struct net_dev net;
	struct virtio_mmio m;
	int peer; /* the far side of the "tap" */
	struct ring q[2];
	unsigned egress_calls;
	bool egress_verdict;
	struct net_vnet_hdr egress_in; /* the header the filter was last shown */
	unsigned egress_offloads;
};

#define rd(r, off) mmio_rd(&(r)->m, off)
#define wr(r, off, v) mmio_wr(&(r)->m, off, v)

static uint8_t *gpa(struct rig *r, uint64_t addr, uint64_t len)
{
	uint8_t *p = guest_mem_ptr(&r->mem, addr, len);

	assert_non_null(p);
	return p;
}

/* A filter that passes or drops everything, handing the guest's header on unchanged when it passes. */
static bool egress(void *ctx, const uint8_t *frame, size_t len, const struct net_vnet_hdr *in, unsigned offloads,
		   struct net_vnet_hdr *out)
{
	struct rig *r = ctx;

	(void)frame;
	(void)len;
	r->egress_calls++;
	r->egress_in = *in;
	r->egress_offloads = offloads;
	*out = *in;
	out->num_buffers = 0;
	return r->egress_verdict;
}

static void setup_queue(struct rig *r, unsigned qi)
{
	struct ring *q = &r->q[qi];

	q->desc = 0x1000 + qi * 0x1000;
	q->avail = 0x10000 + qi * 0x1000;
	q->used = 0x20000 + qi * 0x1000;
	wr(r, 0x030, qi);
	wr(r, 0x038, QSIZE);
	wr(r, 0x080, (uint32_t)q->desc);
	wr(r, 0x084, 0);
	wr(r, 0x090, (uint32_t)q->avail);
	wr(r, 0x094, 0);
	wr(r, 0x0a0, (uint32_t)q->used);
	wr(r, 0x0a4, 0);
	wr(r, 0x044, 1);
}

/* The Linux driver's bring-up: features, both queues, DRIVER_OK. */
static void bring_up(struct rig *r, uint64_t features)
{
	memset(r->q, 0, sizeof(r->q));
	assert_true(mmio_negotiate(&r->m, features | VIRTIO_F_VERSION_1) & 8);
	setup_queue(r, RXQ);
	setup_queue(r, TXQ);
	wr(r, 0x070, 0xf);
}

static void rig_up_tap(struct rig *r, uint64_t features, unsigned flags)
{
	struct guest_mem_region layout = { .gpa = 0, .size = MEM_SIZE };
	const uint8_t mac[6] = { 0x02, 0x53, 0x56, 0, 0, 2 };
	int sv[2];

	memset(r, 0, sizeof(*r));
	r->egress_verdict = true;
	assert_int_equal(guest_mem_init(&r->mem, &layout, 1, false), 0);
	assert_int_equal(event_loop_init(&r->loop), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	/* Room for a 64 KiB frame in flight either way. */
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &(int){ 1 << 20 }, sizeof(int));
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &(int){ 1 << 20 }, sizeof(int));
	r->peer = sv[1];
	assert_int_equal(net_dev_init(&r->net, sv[0], mac, flags), 0);
	net_dev_set_egress(&r->net, egress, r);
	assert_int_equal(virtio_mmio_init(&r->m, &virtio_net_ops, &r->net, &r->mem, -1, 0xd0000000, 5), 0);
	assert_int_equal(net_dev_start(&r->net, &r->m.dev, &r->loop), 0);
	bring_up(r, features);
}

/* A tap without vnet headers, as before offloads. */
static void rig_up(struct rig *r, uint64_t features)
{
	rig_up_tap(r, features, 0);
}

static void rig_down(struct rig *r)
{
	virtio_mmio_destroy(&r->m);
	net_dev_destroy(&r->net);
	event_loop_destroy(&r->loop);
	close(r->peer);
	guest_mem_destroy(&r->mem);
}

/* Makes one chain of buffers (each `lens[i]` bytes, writable or not) available on queue qi. */
static uint16_t post(struct rig *r, unsigned qi, const uint32_t *lens, unsigned n, bool writable,
		     uint64_t *addrs)
{
	struct ring *q = &r->q[qi];
	struct virtq_desc *table = (struct virtq_desc *)gpa(r, q->desc, 16 * QSIZE);
	uint16_t head = q->next_desc % QSIZE;

	for (unsigned i = 0; i < n; i++) {
		uint16_t id = (uint16_t)((head + i) % QSIZE);
		uint64_t addr = BUF_BASE + (uint64_t)(qi * QSIZE + id) * BUF_SIZE * 16;

		table[id] = (struct virtq_desc){
			.addr = htole64(addr), .len = htole32(lens[i]),
			.flags = htole16((writable ? VIRTQ_DESC_F_WRITE : 0) |
					 (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
			.next = htole16((uint16_t)((id + 1) % QSIZE)),
		};
		if (addrs)
			addrs[i] = addr;
	}
	q->next_desc = (uint16_t)(q->next_desc + n);
	{
		uint16_t *avail = (uint16_t *)gpa(r, q->avail, 4 + 2 * QSIZE);

		avail[2 + q->avail_idx % QSIZE] = htole16(head);
		q->avail_idx++;
		__atomic_store_n(&avail[1], htole16(q->avail_idx), __ATOMIC_RELEASE);
	}
	return head;
}

static void kick(struct rig *r, unsigned qi)
{
	wr(r, 0x050, qi);
}

/* The next used element of queue qi, or false when the device has returned none. */
static bool take_used(struct rig *r, unsigned qi, uint32_t *id, uint32_t *len)
{
	struct ring *q = &r->q[qi];
	struct virtq_used *u = (struct virtq_used *)gpa(r, q->used, VIRTQ_USED_BYTES(QSIZE));

	if (le16toh(u->idx) == q->used_seen)
		return false;
	*id = le32toh(u->ring[q->used_seen % QSIZE].id);
	*len = le32toh(u->ring[q->used_seen % QSIZE].len);
	q->used_seen++;
	return true;
}

static void tap_ready(struct rig *r)
{
	r->net.tap_h.cb(&r->net.tap_h, EPOLLIN);
}

static size_t fill_frame(uint8_t *f, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		f[i] = (uint8_t)(seed + i * 7);
	return len;
}

static void tx_reaches_the_tap_through_the_filter(void **state)
{
	static uint8_t frame[NET_HDR + 1514], got[2048];
	uint32_t lens[2] = { NET_HDR, 1514 };
	uint64_t addrs[2];
	uint32_t id, len;
	struct rig r;

	(void)state;
	rig_up(&r, F_MRG_RXBUF);
	memset(frame, 0, NET_HDR);
	fill_frame(frame + NET_HDR, 1514, 1);
	/* Header and frame in separate descriptors, as Linux sends them. */
	post(&r, TXQ, lens, 2, false, addrs);
	memcpy(gpa(&r, addrs[0], NET_HDR), frame, NET_HDR);
	memcpy(gpa(&r, addrs[1], 1514), frame + NET_HDR, 1514);
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(len, 0);
	assert_int_equal(read(r.peer, got, sizeof(got)), 1514);
	assert_memory_equal(got, frame + NET_HDR, 1514);
	assert_int_equal(r.egress_calls, 1);
	assert_int_equal(r.net.stats.tx_frames, 1);
	assert_int_equal(r.net.stats.tx_bytes, 1514);

	/* Denied by the filter: the buffer comes back, nothing reaches the tap. */
	r.egress_verdict = false;
	post(&r, TXQ, lens, 2, false, addrs);
	memcpy(gpa(&r, addrs[1], 1514), frame + NET_HDR, 1514);
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(read(r.peer, got, sizeof(got)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(r.net.stats.tx_dropped, 1);

	/*
	 * A header asking for checksum help on a tap without vnet headers: the
	 * filter is told no offload may be used, and even a filter that let it
	 * through could not put it on this tap.
	 */
	r.egress_verdict = true;
	post(&r, TXQ, lens, 2, false, addrs);
	gpa(&r, addrs[0], 1)[0] = 1; /* VIRTIO_NET_HDR_F_NEEDS_CSUM */
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(r.egress_calls, 3);
	assert_int_equal(r.egress_offloads, 0);
	assert_int_equal(r.egress_in.flags, 1);
	assert_int_equal(r.net.stats.tx_dropped, 2);
	assert_int_equal(read(r.peer, got, sizeof(got)), -1);

	/* Shorter than a header and an Ethernet header. */
	lens[1] = 13;
	post(&r, TXQ, lens, 2, false, addrs);
	memset(gpa(&r, addrs[0], NET_HDR), 0, NET_HDR);
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(r.net.stats.tx_dropped, 3);
	assert_int_equal(read(r.peer, got, sizeof(got)), -1);
	assert_false(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	rig_down(&r);
}

static void rx_spreads_a_frame_over_mergeable_buffers(void **state)
{
	static uint8_t frame[4000], out[8192];
	uint32_t one = 1536;
	uint64_t addrs[4];
	uint32_t id, len, lens[4];
	size_t off = 0;
	struct rig r;

	(void)state;
	rig_up(&r, F_MRG_RXBUF);
	for (int i = 0; i < 4; i++)
		post(&r, RXQ, &one, 1, true, &addrs[i]);
	kick(&r, RXQ);
	fill_frame(frame, sizeof(frame), 3);
	assert_int_equal(write(r.peer, frame, sizeof(frame)), (ssize_t)sizeof(frame));
	tap_ready(&r);
	/* 12 + 4000 bytes: three 1536-byte buffers, the last one partly. */
	for (int i = 0; i < 3; i++) {
		assert_true(take_used(&r, RXQ, &id, &lens[i]));
		assert_int_equal(id, i);
		memcpy(out + off, gpa(&r, addrs[i], lens[i]), lens[i]);
		off += lens[i];
	}
	assert_int_equal(lens[0], 1536);
	assert_int_equal(lens[1], 1536);
	assert_int_equal(lens[2], NET_HDR + 4000 - 2 * 1536);
	assert_false(take_used(&r, RXQ, &id, &len));
	assert_int_equal(out[10] | out[11] << 8, 3); /* num_buffers */
	assert_int_equal(out[0], 0);                 /* no flags, no GSO */
	assert_memory_equal(out + NET_HDR, frame, sizeof(frame));
	assert_int_equal(r.net.stats.rx_frames, 1);
	assert_int_equal(r.net.stats.rx_bytes, 4000);
	assert_true(r.m.dev.isr & 1);
	rig_down(&r);
}

static void rx_waits_for_buffers_then_delivers(void **state)
{
	static uint8_t frame[600];
	uint32_t one = 1536;
	uint64_t addr;
	uint32_t id, len;
	struct rig r;

	(void)state;
	rig_up(&r, F_MRG_RXBUF);
	kick(&r, RXQ); /* an empty ring: the tap is polled all the same */
	assert_true(r.net.tap_polled);
	fill_frame(frame, sizeof(frame), 9);
	assert_int_equal(write(r.peer, frame, sizeof(frame)), (ssize_t)sizeof(frame));
	assert_int_equal(write(r.peer, frame, 100), 100);
	/* No buffers yet: the frame is held and the tap is no longer polled. */
	tap_ready(&r);
	assert_true(r.net.rx_pending);
	assert_false(r.net.tap_polled);
	assert_false(take_used(&r, RXQ, &id, &len));
	/* The guest's buffer and its kick bring both frames in, in order. */
	post(&r, RXQ, &one, 1, true, &addr);
	kick(&r, RXQ);
	assert_true(take_used(&r, RXQ, &id, &len));
	assert_int_equal(len, NET_HDR + sizeof(frame));
	assert_memory_equal(gpa(&r, addr + NET_HDR, sizeof(frame)), frame, sizeof(frame));
	assert_false(take_used(&r, RXQ, &id, &len));
	assert_false(r.net.tap_polled); /* the second frame waits again */
	post(&r, RXQ, &one, 1, true, &addr);
	kick(&r, RXQ);
	assert_true(take_used(&r, RXQ, &id, &len));
	assert_int_equal(len, NET_HDR + 100);
	/* Both taken, buffers to spare: the tap is polled again. */
	post(&r, RXQ, &one, 1, true, &addr);
	kick(&r, RXQ);
	assert_true(r.net.tap_polled);
	assert_false(r.net.rx_pending);
	rig_down(&r);
}

static void rx_drops_what_cannot_fit(void **state)
{
	static uint8_t frame[3000];
	uint32_t one = 1536;
	uint64_t addr;
	uint32_t id, len;
	struct rig r;

	(void)state;
	/* Without mergeable buffers one buffer must take the whole frame. */
	rig_up(&r, 0);
	post(&r, RXQ, &one, 1, true, &addr);
	post(&r, RXQ, &one, 1, true, &addr);
	kick(&r, RXQ);
	fill_frame(frame, sizeof(frame), 5);
	assert_int_equal(write(r.peer, frame, sizeof(frame)), (ssize_t)sizeof(frame));
	assert_int_equal(write(r.peer, frame, 200), 200);
	tap_ready(&r);
	/* The big frame is dropped and its buffer returned empty; the small one arrives. */
	assert_true(take_used(&r, RXQ, &id, &len));
	assert_int_equal(len, 0);
	assert_true(take_used(&r, RXQ, &id, &len));
	assert_int_equal(len, NET_HDR + 200);
	assert_int_equal(r.net.stats.rx_dropped, 1);
	assert_int_equal(r.net.stats.rx_frames, 1);
	assert_false(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	rig_down(&r);
}

static void rx_rules_broken_by_the_guest(void **state)
{
	static uint8_t frame[100];
	uint32_t one = 1536, tiny = 4;
	uint32_t id, len;
	struct rig r;

	(void)state;
	/* A device-readable RX buffer. */
	rig_up(&r, F_MRG_RXBUF);
	post(&r, RXQ, &one, 1, false, NULL);
	kick(&r, RXQ);
	assert_int_equal(write(r.peer, frame, sizeof(frame)), (ssize_t)sizeof(frame));
	tap_ready(&r);
	assert_true(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	assert_false(take_used(&r, RXQ, &id, &len));
	rig_down(&r);

	/* A buffer too small for the header. */
	rig_up(&r, F_MRG_RXBUF);
	post(&r, RXQ, &tiny, 1, true, NULL);
	kick(&r, RXQ);
	assert_int_equal(write(r.peer, frame, sizeof(frame)), (ssize_t)sizeof(frame));
	tap_ready(&r);
	assert_true(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	rig_down(&r);

	/* An avail index that runs more than a ring ahead: the queue is broken, the device says so. */
	rig_up(&r, F_MRG_RXBUF);
	{
		uint16_t *avail = (uint16_t *)gpa(&r, r.q[RXQ].avail, 4 + 2 * QSIZE);

		avail[1] = htole16(QSIZE + 5);
	}
	kick(&r, RXQ);
	assert_int_equal(write(r.peer, frame, sizeof(frame)), (ssize_t)sizeof(frame));
	tap_ready(&r);
	assert_true(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	assert_false(r.net.tap_polled);
	/* A reset brings the device back: buffers posted after it are filled. */
	bring_up(&r, F_MRG_RXBUF);
	memset(gpa(&r, r.q[RXQ].avail, 4 + 2 * QSIZE), 0, 4 + 2 * QSIZE);
	memset(gpa(&r, r.q[RXQ].used, VIRTQ_USED_BYTES(QSIZE)), 0, VIRTQ_USED_BYTES(QSIZE));
	post(&r, RXQ, &one, 1, true, NULL);
	kick(&r, RXQ);
	assert_int_equal(write(r.peer, frame, sizeof(frame)), (ssize_t)sizeof(frame));
	tap_ready(&r);
	assert_true(take_used(&r, RXQ, &id, &len));
	assert_int_equal(len, NET_HDR + sizeof(frame));
	rig_down(&r);
}

/* ---- offloads, on a tap with vnet headers ---- */

static uint64_t offered(struct rig *r)
{
	uint64_t lo, hi;

	wr(r, 0x014, 0);
	lo = rd(r, 0x010);
	wr(r, 0x014, 1);
	hi = rd(r, 0x010);
	return lo | hi << 32;
}

static void offloads_follow_the_tap(void **state)
{
	struct rig r;
	uint64_t f;

	(void)state;
	/* Without vnet headers: none offered, and a driver that takes one anyway gets no FEATURES_OK. */
	rig_up(&r, F_MRG_RXBUF);
	f = offered(&r);
	assert_int_equal(f & F_OFFLOADS, 0);
	assert_true(f & F_MRG_RXBUF);
	assert_false(mmio_negotiate(&r.m, F_CSUM | VIRTIO_F_VERSION_1) & 8);
	assert_false(mmio_negotiate(&r.m, F_GUEST_TSO4 | VIRTIO_F_VERSION_1) & 8);
	rig_down(&r);

	rig_up_tap(&r, F_MRG_RXBUF, NET_DEV_VNET_HDR);
	f = offered(&r);
	assert_int_equal(f & F_OFFLOADS, F_OFFLOADS);
	assert_int_equal(f & (F_GUEST_UFO | F_HOST_UFO), 0); /* UDP fragmentation offload: never */
	assert_false(mmio_negotiate(&r.m, F_HOST_UFO | VIRTIO_F_VERSION_1) & 8);
	assert_false(mmio_negotiate(&r.m, F_GUEST_UFO | VIRTIO_F_VERSION_1) & 8);
	/* The tap's offloads follow the driver's features at the device's next work after FEATURES_OK. */
	bring_up(&r, F_MRG_RXBUF | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_ECN);
	assert_int_equal(r.net.tap_offloads, 0);
	kick(&r, RXQ);
	assert_int_equal(r.net.tap_offloads, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
	/* A reset turns them off at once. */
	wr(&r, 0x070, 0);
	assert_int_equal(r.net.tap_offloads, 0);
	/* No segments without partial checksums, ECN only with segments; host-side features are not the tap's. */
	bring_up(&r, F_GUEST_TSO4 | F_GUEST_ECN | F_CSUM | F_HOST_TSO4);
	kick(&r, TXQ);
	assert_int_equal(r.net.tap_offloads, 0);
	bring_up(&r, F_GUEST_CSUM | F_GUEST_ECN);
	kick(&r, RXQ);
	assert_int_equal(r.net.tap_offloads, TUN_F_CSUM);
	/* A restore makes the tap learn them again, whatever it had. */
	r.net.tap_offloads = TUN_F_TSO6;
	virtio_net_ops.restored(&r.m.dev);
	assert_int_equal(r.net.tap_offloads, TUN_F_CSUM);
	rig_down(&r);
}

static void tx_offloads_reach_the_tap_with_the_checked_header(void **state)
{
	static uint8_t got[NET_HDR + NET_MAX_FRAME + 16];
	const uint8_t hdr[NET_HDR] = { 1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 7, 0 };
	uint32_t lens[2] = { NET_HDR, 20000 };
	uint64_t addrs[2];
	uint32_t id, len;
	struct rig r;

	(void)state;
	rig_up_tap(&r, F_MRG_RXBUF | F_CSUM | F_HOST_TSO4, NET_DEV_VNET_HDR);
	post(&r, TXQ, lens, 2, false, addrs);
	memcpy(gpa(&r, addrs[0], NET_HDR), hdr, NET_HDR);
	fill_frame(gpa(&r, addrs[1], 20000), 20000, 4);
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(len, 0);
	assert_int_equal(r.egress_offloads, NET_TX_CSUM | NET_TX_TSO4);
	assert_int_equal(r.egress_in.gso_size, 1448);
	assert_int_equal(r.egress_in.num_buffers, 7);
	/* What the filter handed back goes in front of the frame: num_buffers is not the guest's to set. */
	assert_int_equal(read(r.peer, got, sizeof(got)), NET_HDR + 20000);
	assert_memory_equal(got, hdr, 10);
	assert_int_equal(got[10] | got[11], 0);
	assert_memory_equal(got + NET_HDR, gpa(&r, addrs[1], 20000), 20000);
	assert_int_equal(r.net.stats.tx_frames, 1);
	assert_int_equal(r.net.stats.tx_bytes, 20000);
	assert_int_equal(r.net.stats.tx_gso, 1);
	assert_int_equal(r.net.stats.tx_csum, 1);

	/* Refused by the filter: nothing on the tap. */
	r.egress_verdict = false;
	post(&r, TXQ, lens, 2, false, addrs);
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(read(r.peer, got, sizeof(got)), -1);
	assert_int_equal(r.net.stats.tx_dropped, 1);

	/* Larger than any frame: dropped before the filter sees it. */
	r.egress_verdict = true;
	lens[1] = NET_MAX_FRAME + 1;
	post(&r, TXQ, lens, 2, false, addrs);
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(r.egress_calls, 2);
	assert_int_equal(r.net.stats.tx_dropped, 2);
	lens[1] = NET_MAX_FRAME;
	post(&r, TXQ, lens, 2, false, addrs);
	memset(gpa(&r, addrs[0], NET_HDR), 0, NET_HDR);
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(read(r.peer, got, sizeof(got)), NET_HDR + NET_MAX_FRAME);
	assert_false(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	rig_down(&r);
}

/* Writes a frame of len bytes with the tap's header h in front, as a tap with vnet headers would. */
static void tap_send(struct rig *r, const struct net_vnet_hdr *h, size_t len, uint8_t seed)
{
	static uint8_t buf[NET_HDR + NET_MAX_FRAME + 64];

	assert_true(len + NET_HDR <= sizeof(buf));
	net_vnet_hdr_put(h, buf);
	fill_frame(buf + NET_HDR, len, seed);
	assert_int_equal(write(r->peer, buf, NET_HDR + len), (ssize_t)(NET_HDR + len));
}

static void rx_64k_segments_over_mergeable_buffers(void **state)
{
	static uint8_t out[16 * 4200], frame[NET_MAX_FRAME];
	const struct net_vnet_hdr gso = { .flags = 1, .gso_type = 1, .hdr_len = 66, .gso_size = 1448,
					  .csum_start = 34, .csum_offset = 16 };
	uint32_t big = 4200, id, len;
	uint64_t addrs[QSIZE];
	struct net_vnet_hdr h;
	size_t off = 0;
	struct rig r;

	(void)state;
	rig_up_tap(&r, F_MRG_RXBUF | F_GUEST_CSUM | F_GUEST_TSO4, NET_DEV_VNET_HDR);
	for (unsigned i = 0; i < QSIZE; i++)
		post(&r, RXQ, &big, 1, true, &addrs[i]);
	kick(&r, RXQ);
	/* One byte past the largest frame: dropped and counted; then the largest. */
	tap_send(&r, &gso, NET_MAX_FRAME + 1, 1);
	tap_send(&r, &gso, NET_MAX_FRAME, 2);
	tap_ready(&r);
	assert_int_equal(r.net.stats.rx_dropped, 1);
	for (unsigned i = 0; i < QSIZE; i++) {
		assert_true(take_used(&r, RXQ, &id, &len));
		assert_int_equal(id, i);
		memcpy(out + off, gpa(&r, addrs[i], len), len);
		off += len;
	}
	assert_int_equal(off, NET_HDR + NET_MAX_FRAME);
	net_vnet_hdr_get(out, &h);
	assert_int_equal(h.num_buffers, QSIZE);
	assert_int_equal(h.flags, 1);
	assert_int_equal(h.gso_type, 1);
	assert_int_equal(h.gso_size, 1448);
	assert_int_equal(h.csum_start, 34);
	assert_int_equal(h.csum_offset, 16);
	fill_frame(frame, NET_MAX_FRAME, 2);
	assert_memory_equal(out + NET_HDR, frame, NET_MAX_FRAME);
	assert_int_equal(r.net.stats.rx_frames, 1);
	assert_int_equal(r.net.stats.rx_gso, 1);
	assert_int_equal(r.net.stats.rx_csum, 1);
	rig_down(&r);
}

static void rx_headers_the_driver_did_not_take(void **state)
{
	const struct net_vnet_hdr csum = { .flags = 1, .csum_start = 34, .csum_offset = 16 };
	const struct net_vnet_hdr valid = { .flags = 2 };
	const struct net_vnet_hdr tso4 = { .flags = 1, .gso_type = 1, .gso_size = 1448, .csum_start = 34, .csum_offset = 16 };
	struct net_vnet_hdr tso6 = tso4, ecn = tso4, ufo = tso4, odd = valid;
	uint32_t one = 1536, id, len;
	uint64_t addr;
	struct rig r;

	(void)state;
	tso6.gso_type = 4;
	ecn.gso_type = 0x81;
	ufo.gso_type = 3;
	odd.flags = 0x6; /* DATA_VALID and RSC_INFO */
	/* No GUEST_CSUM: partial checksums and segments are dropped, DATA_VALID is cleared. */
	rig_up_tap(&r, F_MRG_RXBUF, NET_DEV_VNET_HDR);
	post(&r, RXQ, &one, 1, true, &addr);
	kick(&r, RXQ);
	tap_send(&r, &csum, 100, 1);
	tap_send(&r, &tso4, 3000, 1);
	tap_send(&r, &valid, 100, 1);
	tap_ready(&r);
	assert_int_equal(r.net.stats.rx_dropped, 2);
	assert_true(take_used(&r, RXQ, &id, &len));
	assert_int_equal(len, NET_HDR + 100);
	assert_int_equal(gpa(&r, addr, 1)[0], 0);
	rig_down(&r);

	/* GUEST_CSUM and GUEST_TSO4 only: TSO6, ECN and UFO are dropped; the rest arrives as the tap said. */
	rig_up_tap(&r, F_MRG_RXBUF | F_GUEST_CSUM | F_GUEST_TSO4, NET_DEV_VNET_HDR);
	for (int i = 0; i < 3; i++)
		post(&r, RXQ, &one, 1, true, NULL);
	kick(&r, RXQ);
	tap_send(&r, &tso6, 3000, 1);
	tap_send(&r, &ecn, 3000, 1);
	tap_send(&r, &ufo, 3000, 1);
	tap_send(&r, &odd, 100, 1);
	tap_send(&r, &csum, 100, 1);
	tap_ready(&r);
	assert_int_equal(r.net.stats.rx_dropped, 3);
	assert_true(take_used(&r, RXQ, &id, &len));
	assert_int_equal(len, NET_HDR + 100);
	assert_true(take_used(&r, RXQ, &id, &len));
	assert_int_equal(r.net.stats.rx_frames, 2);
	assert_int_equal(r.net.stats.rx_csum, 1);
	rig_down(&r);
}

/* A frame larger than every buffer the ring can hold is dropped, not waited on for ever. */
static void rx_frame_larger_than_the_whole_ring(void **state)
{
	const struct net_vnet_hdr gso = { .flags = 1, .gso_type = 1, .gso_size = 1448, .csum_start = 34,
					  .csum_offset = 16 };
	uint32_t one = 1536, id, len;
	struct rig r;
	unsigned n = 0;

	(void)state;
	rig_up_tap(&r, F_MRG_RXBUF | F_GUEST_CSUM | F_GUEST_TSO4, NET_DEV_VNET_HDR);
	for (unsigned i = 0; i < QSIZE; i++)
		post(&r, RXQ, &one, 1, true, NULL);
	kick(&r, RXQ);
	tap_send(&r, &gso, 30000, 1); /* 16 x 1536 = 24576 */
	tap_send(&r, &(struct net_vnet_hdr){ 0 }, 200, 2);
	tap_ready(&r);
	while (take_used(&r, RXQ, &id, &len)) {
		/* The whole ring back empty, then the small frame in the first buffer reposted. */
		assert_int_equal(len, 0);
		n++;
	}
	assert_int_equal(n, QSIZE);
	assert_int_equal(r.net.stats.rx_dropped, 1);
	assert_true(r.net.rx_pending);
	post(&r, RXQ, &one, 1, true, NULL);
	kick(&r, RXQ);
	assert_true(take_used(&r, RXQ, &id, &len));
	assert_int_equal(len, NET_HDR + 200);
	assert_false(rd(&r, 0x070) & VIRTIO_STATUS_NEEDS_RESET);
	rig_down(&r);
}

/*
 * The next frame the capture saw coming from the guest's MAC, or -1: the
 * host sends frames of its own on the interface when it comes up (router
 * solicitations, MLD reports), at times of its choosing.
 */
static ssize_t next_guest_frame(int cap, uint8_t *buf, size_t len, const uint8_t mac[6])
{
	ssize_t n;

	while ((n = recv(cap, buf, len, 0)) > 0)
		if (n >= 14 && memcmp(buf + 6, mac, 6) == 0)
			return n;
	return -1;
}

/*
 * The real thing: a tap made by tap_open in a network namespace of this
 * process's own (it stays in it; this test runs last), the egress filter with
 * an open policy, a TSO frame the host stack accepts and a header that
 * would have the host write over the IP source dropped before the tap.
 */
static void real_tap_in_a_private_namespace(void **state)
{
	static const char policy[] = "{\"ip\": \"10.0.0.2\", \"gateway\": \"10.0.0.1\", "
				     "\"gateway_mac\": \"02:00:00:00:00:01\", \"mode\": \"open\"}";
	static uint8_t frame[14 + 20 + 32 + 8000], got[70000];
	const uint8_t gw_mac[6] = { 2, 0, 0, 0, 0, 1 };
	struct guest_mem_region layout = { .gpa = 0, .size = MEM_SIZE };
	struct net_egress eg;
	struct ifreq ifr;
	struct sockaddr_ll sll;
	uint32_t lens[2] = { NET_HDR, sizeof(frame) }, id, len;
	uint64_t addrs[2];
	uint8_t hdr[NET_HDR];
	char err[256];
	struct rig r;
	bool vnet = false;
	int fd, s, cap;
	ssize_t n;

	(void)state;
	if (unshare(CLONE_NEWNET) < 0 || tap_open("svtest0", &fd) < 0)
		skip();
	assert_int_equal(tap_check_fd(fd, &vnet), 0);
	assert_true(vnet);
	assert_int_equal(tap_set_offload(fd, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN), 0);
	assert_int_equal(tap_set_offload(fd, 0), 0);
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "svtest0");
	assert_int_equal(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	assert_int_equal(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
	close(s);
	/* What the host stack receives from the tap. */
	cap = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
	assert_true(cap >= 0);
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = (int)if_nametoindex("svtest0");
	assert_int_equal(bind(cap, (struct sockaddr *)&sll, sizeof(sll)), 0);

	memset(&r, 0, sizeof(r));
	r.peer = -1;
	assert_int_equal(guest_mem_init(&r.mem, &layout, 1, false), 0);
	assert_int_equal(event_loop_init(&r.loop), 0);
	assert_int_equal(net_dev_init(&r.net, fd, (const uint8_t[6]){ 2, 0x53, 0x56, 0, 0, 2 }, NET_DEV_VNET_HDR), 0);
	memset(&eg, 0, sizeof(eg));
	eg.mac = r.net.mac;
	assert_int_equal(net_egress_load(&eg, policy, sizeof(policy) - 1, err, sizeof(err)), 0);
	net_dev_set_egress(&r.net, net_egress_check_tx, &eg);
	assert_int_equal(virtio_mmio_init(&r.m, &virtio_net_ops, &r.net, &r.mem, -1, 0xd0000000, 5), 0);
	assert_int_equal(net_dev_start(&r.net, &r.m.dev, &r.loop), 0);
	bring_up(&r, F_MRG_RXBUF | F_CSUM | F_HOST_TSO4 | F_GUEST_CSUM | F_GUEST_TSO4);
	kick(&r, RXQ);
	assert_int_equal(r.net.tap_offloads, TUN_F_CSUM | TUN_F_TSO4);
	assert_false(r.net.offload_warned); /* the tap took them */

	/* A TSO frame from the guest: judged once, accepted by the host stack whole. */
	memcpy(frame, gw_mac, 6);
	memcpy(frame + 6, r.net.mac, 6);
	frame[12] = 0x08;
	frame[14] = 0x45;
	frame[16] = (uint8_t)((sizeof(frame) - 14) >> 8);
	frame[17] = (uint8_t)(sizeof(frame) - 14);
	frame[20] = 0x40; /* DF */
	frame[22] = 64;
	frame[23] = 6;
	memcpy(frame + 26, (const uint8_t[4]){ 10, 0, 0, 2 }, 4);
	memcpy(frame + 30, (const uint8_t[4]){ 198, 51, 100, 7 }, 4);
	frame[34 + 12] = 8 << 4;
	frame[34 + 13] = 0x18;
	memset(frame + 34 + 20, 1, 12);
	net_vnet_hdr_put(&(struct net_vnet_hdr){ .flags = 1, .gso_type = 1, .hdr_len = 66, .gso_size = 1448,
						  .csum_start = 34, .csum_offset = 16 },
			 hdr);
	post(&r, TXQ, lens, 2, false, addrs);
	memcpy(gpa(&r, addrs[0], NET_HDR), hdr, NET_HDR);
	memcpy(gpa(&r, addrs[1], sizeof(frame)), frame, sizeof(frame));
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(r.net.stats.tx_frames, 1);
	assert_int_equal(r.net.stats.tx_gso, 1);
	assert_int_equal(eg.counters.count[FW_PASS_OPEN], 1);
	n = next_guest_frame(cap, got, sizeof(got), r.net.mac);
	assert_int_equal(n, (ssize_t)sizeof(frame));
	assert_memory_equal(got + 26, frame + 26, 8);

	/* The checksum asked over the IP source: refused by the filter, nothing reaches the host. */
	hdr[6] = 26;
	hdr[8] = 0;
	post(&r, TXQ, lens, 2, false, addrs);
	memcpy(gpa(&r, addrs[0], NET_HDR), hdr, NET_HDR);
	memcpy(gpa(&r, addrs[1], sizeof(frame)), frame, sizeof(frame));
	kick(&r, TXQ);
	assert_true(take_used(&r, TXQ, &id, &len));
	assert_int_equal(eg.counters.count[FW_DROP_OFFLOAD], 1);
	assert_int_equal(r.net.stats.tx_dropped, 1);
	assert_int_equal(next_guest_frame(cap, got, sizeof(got), r.net.mac), -1);

	/*
	 * From the host: a UDP datagram to the guest, whose checksum the host
	 * leaves to the guest now that GUEST_CSUM is taken, arrives with the
	 * tap's header as the driver expects it.
	 */
	{
		struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
		struct arpreq arp;
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9) };
		uint32_t one = 4096;
		uint64_t addr;
		struct net_vnet_hdr h;
		int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

		assert_true(u >= 0);
		memset(&ifr, 0, sizeof(ifr));
		strcpy(ifr.ifr_name, "svtest0");
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(0x0a000001);
		assert_int_equal(ioctl(u, SIOCSIFADDR, &ifr), 0);
		sin->sin_addr.s_addr = htonl(0xffffff00);
		assert_int_equal(ioctl(u, SIOCSIFNETMASK, &ifr), 0);
		memset(&arp, 0, sizeof(arp));
		((struct sockaddr_in *)&arp.arp_pa)->sin_family = AF_INET;
		((struct sockaddr_in *)&arp.arp_pa)->sin_addr.s_addr = htonl(0x0a000002);
		arp.arp_ha.sa_family = 1; /* ARPHRD_ETHER */
		memcpy(arp.arp_ha.sa_data, r.net.mac, 6);
		arp.arp_flags = ATF_COM | ATF_PERM;
		strcpy(arp.arp_dev, "svtest0");
		assert_int_equal(ioctl(u, SIOCSARP, &arp), 0);
		to.sin_addr.s_addr = htonl(0x0a000002);
		assert_int_equal(sendto(u, frame, 200, 0, (struct sockaddr *)&to, sizeof(to)), 200);
		close(u);
		/* Whatever the host sent when the interface came up (IPv6 router solicitations...) comes first. */
		for (int tries = 0; tries < 8; tries++) {
			post(&r, RXQ, &one, 1, true, &addr);
			kick(&r, RXQ);
			assert_true(take_used(&r, RXQ, &id, &len));
			if (len == NET_HDR + 14 + 20 + 8 + 200)
				break;
		}
		assert_int_equal(len, NET_HDR + 14 + 20 + 8 + 200);
		net_vnet_hdr_get(gpa(&r, addr, NET_HDR), &h);
		assert_int_equal(h.num_buffers, 1);
		assert_int_equal(h.gso_type, 0);
		/* The host's own datagram on a tap with TUN_F_CSUM: its checksum left to the guest. */
		assert_int_equal(h.flags, NET_VNET_F_NEEDS_CSUM);
		assert_int_equal(h.csum_start, 34);
		assert_int_equal(h.csum_offset, 6);
		assert_int_equal(r.net.stats.rx_csum, 1);
	}

	/* A reset turns the tap's offloads off. */
	wr(&r, 0x070, 0);
	assert_int_equal(r.net.tap_offloads, 0);
	close(cap);
	virtio_mmio_destroy(&r.m);
	net_dev_destroy(&r.net);
	net_egress_destroy(&eg);
	event_loop_destroy(&r.loop);
	guest_mem_destroy(&r.mem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tx_reaches_the_tap_through_the_filter),
		cmocka_unit_test(rx_spreads_a_frame_over_mergeable_buffers),
		cmocka_unit_test(rx_waits_for_buffers_then_delivers),
		cmocka_unit_test(rx_drops_what_cannot_fit),
		cmocka_unit_test(rx_rules_broken_by_the_guest),
		cmocka_unit_test(offloads_follow_the_tap),
		cmocka_unit_test(tx_offloads_reach_the_tap_with_the_checked_header),
		cmocka_unit_test(rx_64k_segments_over_mergeable_buffers),
		cmocka_unit_test(rx_headers_the_driver_did_not_take),
		cmocka_unit_test(rx_frame_larger_than_the_whole_ring),
		cmocka_unit_test(real_tap_in_a_private_namespace), /* last: it leaves this process in its namespace */
	};

	return cmocka_run_group_tests_name("virtio_net", tests, NULL, NULL);
}
