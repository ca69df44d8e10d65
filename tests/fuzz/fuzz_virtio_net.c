/*
 * libFuzzer target: the virtio-net device model with guest memory, rings and
 * frames all taken from the input. Both queues sit at fixed addresses in a
 * small guest RAM whose bytes (descriptor tables, avail rings, buffers) are
 * the input's; a script of operations then kicks the queues, feeds frames of
 * chosen lengths through the "tap" (a socket pair) and resets the device.
 * Beyond the sanitizers (on the device's own buffers and state; its guest
 * accesses go through checked ranges): what the device writes to the tap is a whole
 * frame of 14 to NET_MAX_FRAME bytes, and on a tap with vnet headers the
 * header in front of it is one net_vnet_check passes again, unchanged. The
 * filter is net_vnet_check alone (no policy), so offloaded frames get through.
 * The used rings are not checked: the guest may point its RX buffers at
 * them, and what lands there is its own doing.
 *
 * Input: byte 0 = driver features (bit 0 mergeable RX buffers, bit 1 event
 * index, bit 2 indirect descriptors, bit 3 a tap with vnet headers, bit 4
 * CSUM and HOST_TSO4/6/ECN, bit 5 GUEST_CSUM and GUEST_TSO4/6/ECN, bit 6
 * HOST_TSO4 alone, bit 7 GUEST_TSO4 alone), byte 1 = log2 of the queue size
 * (1..5), bytes 2..17 = the operation script, the rest = guest RAM from
 * address 0. With vnet headers, a frame from the tap carries a header the
 * operation's bits choose.
 */
#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "event_loop.h"
#include "memory.h"
#include "../unit/mmio_driver.h"
#include "net/frame.h"
#include "virtio/net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM (256u * 1024)
#define SCRIPT 16u
#define RXQ 0u
#define TXQ 1u
/* Ring addresses: well inside RAM, so the input can shape them all. */
static const uint64_t q_desc[2] = { 0x0000, 0x0800 };
static const uint64_t q_avail[2] = { 0x1000, 0x1400 };
static const uint64_t q_used[2] = { 0x1800, 0x1c00 };

struct rig {
	struct guest_mem mem;
	struct event_loop loop;
	struct net_dev net;
	struct virtio_mmio m;
	int peer;
};

#define wr(r, off, v) mmio_wr(&(r)->m, off, v)

/* Passes what net_vnet_check passes, and hands on the header it rebuilt. */
static bool egress(void *ctx, const uint8_t *frame, size_t len, const struct net_vnet_hdr *in, unsigned offloads,
		   struct net_vnet_hdr *out)
{
	struct net_frame f;

	(void)ctx;
	memset(out, 0, sizeof(*out));
	net_frame_parse(frame, len, &f);
	if (f.status != NET_FRAME_OK)
		return !in->flags && !in->gso_type;
	return net_vnet_check(in, offloads, frame, len, &f, out) == NET_VNET_OK;
}

static struct rig *rig(bool vnet)
{
	static struct rig rigs[2];
	static int ready[2];
	struct rig *r = &rigs[vnet];
	struct guest_mem_region layout = { .gpa = 0, .size = RAM };
	const uint8_t mac[6] = { 0x02, 0x53, 0x56, 0, 0, 2 };
	int sv[2];

	if (ready[vnet])
		return r;
	if (guest_mem_init(&r->mem, &layout, 1, false) < 0 || event_loop_init(&r->loop) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &(int){ 1 << 21 }, sizeof(int));
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &(int){ 1 << 21 }, sizeof(int));
	r->peer = sv[1];
	if (net_dev_init(&r->net, sv[0], mac, vnet ? NET_DEV_VNET_HDR : 0) < 0 ||
	    virtio_mmio_init(&r->m, &virtio_net_ops, &r->net, &r->mem, -1, 0xd0000000, 5) < 0 ||
	    net_dev_start(&r->net, &r->m.dev, &r->loop) < 0)
		abort();
	net_dev_set_egress(&r->net, egress, NULL);
	ready[vnet] = 1;
	return r;
}

static void bring_up(struct rig *r, uint64_t features, unsigned qsize)
{
	mmio_negotiate(&r->m, features | VIRTIO_F_VERSION_1);
	for (unsigned q = 0; q < 2; q++) {
		wr(r, 0x030, q);
		wr(r, 0x038, qsize);
		wr(r, 0x080, (uint32_t)q_desc[q]);
		wr(r, 0x084, 0);
		wr(r, 0x090, (uint32_t)q_avail[q]);
		wr(r, 0x094, 0);
		wr(r, 0x0a0, (uint32_t)q_used[q]);
		wr(r, 0x0a4, 0);
		wr(r, 0x044, 1);
	}
	wr(r, 0x070, 0xf);
}

static void drain_tap(struct rig *r)
{
	static uint8_t buf[NET_VNET_HDR_LEN + NET_MAX_FRAME + 16];
	size_t hl = r->net.vnet_hdr ? NET_VNET_HDR_LEN : 0;
	struct net_vnet_hdr h, again;
	struct net_frame f;
	ssize_t got;

	while ((got = recv(r->peer, buf, sizeof(buf), MSG_TRUNC)) >= 0) {
		if ((size_t)got < hl + 14 || (size_t)got > hl + NET_MAX_FRAME)
			abort();
		if (!hl)
			continue;
		net_vnet_hdr_get(buf, &h);
		net_frame_parse(buf + hl, (size_t)got - hl, &f);
		if (h.num_buffers || (f.status != NET_FRAME_OK && (h.flags || h.gso_type)))
			abort();
		if (f.status == NET_FRAME_OK &&
		    (net_vnet_check(&h, ~0u, buf + hl, (size_t)got - hl, &f, &again) != NET_VNET_OK ||
		     memcmp(&h, &again, sizeof(h)) != 0))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t frame[NET_VNET_HDR_LEN + NET_MAX_FRAME];
	/* Headers a tap hands over: plain, DATA_VALID, partial checksum, TSO4, TSO6, TSO4 with ECN, UFO, junk. */
	static const uint8_t tap_hdrs[8][NET_VNET_HDR_LEN] = {
		{ 0 },
		{ 2 },
		{ 1, 0, 0, 0, 0, 0, 34, 0, 16, 0 },
		{ 1, 1, 66, 0, 0xa8, 5, 34, 0, 16, 0 },
		{ 1, 4, 86, 0, 0xa0, 5, 54, 0, 16, 0 },
		{ 1, 0x81, 66, 0, 0xa8, 5, 34, 0, 16, 0 },
		{ 1, 3, 42, 0, 0xa8, 5, 34, 0, 6, 0 },
		{ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 9, 9 },
	};
	struct rig *r;
	uint64_t features = 0;
	unsigned qsize;
	uint8_t *ram;
	size_t hl;

	if (size < 2 + SCRIPT)
		return 0;
	r = rig(data[0] & 8);
	hl = r->net.vnet_hdr ? NET_VNET_HDR_LEN : 0;
	if (data[0] & 0x10)
		features |= 0x3801; /* CSUM, HOST_TSO4, HOST_TSO6, HOST_ECN */
	if (data[0] & 0x20)
		features |= 0x0382; /* GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN */
	if (data[0] & 0x40)
		features |= 1ull << 11; /* HOST_TSO4 without CSUM */
	if (data[0] & 0x80)
		features |= 1ull << 7; /* GUEST_TSO4 without GUEST_CSUM */
	if (data[0] & 1)
		features |= 1ull << 15; /* VIRTIO_NET_F_MRG_RXBUF */
	if (data[0] & 2)
		features |= VIRTQ_F_RING_EVENT_IDX;
	if (data[0] & 4)
		features |= VIRTQ_F_INDIRECT_DESC;
	qsize = 1u << (data[1] % 5 + 1);
	ram = guest_mem_ptr(&r->mem, 0, RAM);
	memset(ram, 0, RAM);
	memcpy(ram, data + 2 + SCRIPT, size - 2 - SCRIPT < RAM ? size - 2 - SCRIPT : RAM);
	drain_tap(r);
	while (recv(r->net.tap_h.fd, frame, sizeof(frame), MSG_DONTWAIT) >= 0) {
		/* frames a previous input left for the device */
	}
	bring_up(r, features, qsize);

	for (unsigned i = 0; i < SCRIPT; i++) {
		uint8_t op = data[2 + i];

		switch (op & 7) {
		case 0:
			wr(r, 0x050, RXQ);
			break;
		case 1:
			wr(r, 0x050, TXQ);
			break;
		case 2:
		case 3: {
			/* A frame from the tap: 60 bytes to 64 KiB, by the op's high bits. */
			static const size_t lens[] = { 60, 1514, 1515, 4000, 9000, 32768, 65535, 65550 };
			size_t len = lens[op >> 5];

			memset(frame + hl, op, len);
			if (hl)
				memcpy(frame, tap_hdrs[((op >> 3) & 3) | (op & 1) << 2], hl);
			if (send(r->peer, frame, hl + len, MSG_DONTWAIT) < 0)
				break;
			r->net.tap_h.cb(&r->net.tap_h, EPOLLIN);
			break;
		}
		case 4:
			r->net.tap_h.cb(&r->net.tap_h, EPOLLIN);
			break;
		case 5:
			/* The driver writes a used/avail byte mid-flight: the rings are the guest's to scribble. */
			ram[q_avail[op >> 7] + 2 + (op >> 3) % 4] ^= op;
			break;
		case 6:
			bring_up(r, features, qsize);
			break;
		default:
			wr(r, 0x070, 0); /* reset */
			break;
		}
		drain_tap(r);
	}
	wr(r, 0x070, 0);
	return 0;
}
