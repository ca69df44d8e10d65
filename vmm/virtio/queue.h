#ifndef SANDVM_VMM_VIRTIO_QUEUE_H
#define SANDVM_VMM_VIRTIO_QUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * The split virtqueue of virtio 1.x (spec section 2.7), device side. Pure
 * logic over guest memory: every index, address and length read from the
 * rings is checked before use, and the first rule the guest breaks marks the
 * queue broken for good, so a device model only ever sees chains whose every
 * byte is guest RAM. Models use it without knowing the transport.
 *
 * Virtio 1.x rings are little-endian whatever the guest; fields are converted
 * with le*toh/htole*, which cost nothing on x86 (the only target for now).
 * Legacy (pre-1.0, guest-endian) rings are not supported.
 *
 * Not thread-safe: one thread owns a queue. The guest may rewrite the rings
 * at any moment; each guest field is read once, into a local, before it is
 * checked and used.
 */

struct guest_mem;

#define VIRTQ_MAX_SIZE 32768u
/* Segments in one chain. Devices advertise limits (seg_max etc.) below it. */
#define VIRTQ_MAX_SEGS 256u

/* Feature bits this module acts on (VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX). */
#define VIRTQ_F_INDIRECT_DESC  (1ull << 28)
#define VIRTQ_F_RING_EVENT_IDX (1ull << 29)

/* Guest-visible layout, spec 2.7.5 - 2.7.8. All fields little-endian. */
#define VIRTQ_DESC_F_NEXT     1u
#define VIRTQ_DESC_F_WRITE    2u
#define VIRTQ_DESC_F_INDIRECT 4u
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u
#define VIRTQ_USED_F_NO_NOTIFY     1u

#define VIRTQ_DESC_ALIGN  16u
#define VIRTQ_AVAIL_ALIGN 2u
#define VIRTQ_USED_ALIGN  4u

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

/* ring[size] is followed by used_event (only meaningful with EVENT_IDX). */
struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

/* ring[size] is followed by avail_event (only meaningful with EVENT_IDX). */
struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[];
};

/* Bytes each part occupies for a queue of `size` entries, event fields included. */
#define VIRTQ_DESC_BYTES(size)  (16ull * (size))
#define VIRTQ_AVAIL_BYTES(size) (6ull + 2ull * (size))
#define VIRTQ_USED_BYTES(size)  (6ull + 8ull * (size))

struct virtq {
	const struct guest_mem *mem;
	unsigned max_size;      /* set by the device model */
	unsigned size;          /* set by the driver; power of two <= max_size */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	/* Host views of the three parts, checked once in virtq_configure(). */
	struct virtq_desc *desc;
	struct virtq_avail *avail;
	struct virtq_used *used;
	uint16_t last_avail_idx; /* next avail entry the device will take */
	uint16_t used_idx;       /* shadow of used->idx; only the device writes it */
	uint16_t signalled_used; /* used_idx when virtq_should_notify() last ran */
	bool ready;
	bool indirect;           /* VIRTIO_F_INDIRECT_DESC negotiated */
	bool event_idx;          /* VIRTIO_F_RING_EVENT_IDX negotiated */
	bool broken;             /* the guest broke a rule; see virtq_pop() */
};

/*
 * A popped descriptor chain: iov[0, nread) are device-readable buffers,
 * iov[nread, nread + nwrite) device-writable ones; all point into guest RAM.
 * Zero-length buffers are dropped. Totals fit in 32 bits.
 */
struct virtq_chain {
	uint16_t head;
	unsigned nread, nwrite;
	uint32_t read_len, write_len;
	struct iovec iov[VIRTQ_MAX_SEGS];
};

/* An unconfigured queue over `mem`; max_size is a power of two <= VIRTQ_MAX_SIZE. */
int virtq_init(struct virtq *q, const struct guest_mem *mem, unsigned max_size);

/*
 * Enables the queue as the driver set it up (QueueReady = 1). -EINVAL, and
 * the queue left as it was, unless size is a power of two <= max_size, every
 * part is aligned (desc 16, avail 2, used 4) and lies wholly in guest RAM.
 * `features` are the negotiated feature bits.
 */
int virtq_configure(struct virtq *q, unsigned size, uint64_t desc, uint64_t avail,
		    uint64_t used, uint64_t features);

/*
 * Gives the last n popped chains back to the device side's view of the ring
 * (last_avail_idx moves back by n; the guest sees no change): the next pops
 * return them again. For chains a model held but never pushed (snapshots).
 */
void virtq_unpop(struct virtq *q, unsigned n);

/* Back to unconfigured (device reset or QueueReady = 0); clears broken. */
void virtq_reset(struct virtq *q);

/*
 * Takes the next available chain. 1: a chain is in *chain; 0: nothing
 * available (or the queue is not ready); -EIO: the queue is broken. Any other
 * negative errno: the guest broke a rule just now and the queue is broken:
 * -EPROTO (bad index or flags, avail idx ran ahead by more than size),
 * -EFAULT (a buffer or table outside RAM), -ELOOP (chain longer than its
 * table), -E2BIG (more than VIRTQ_MAX_SEGS buffers), -EOVERFLOW (a total
 * above 4 GiB - 1). *chain is meaningless unless 1 is returned.
 */
int virtq_pop(struct virtq *q, struct virtq_chain *chain);

/*
 * Returns chain `head` to the driver with `written` bytes stored in its
 * writable part. -EINVAL when the queue is not ready or head is out of range,
 * -EIO when broken.
 */
int virtq_push(struct virtq *q, uint16_t head, uint32_t written);

/*
 * After one or more pushes: whether the driver wants an interrupt for them
 * (used_event with EVENT_IDX, else VIRTQ_AVAIL_F_NO_INTERRUPT). False when
 * nothing was pushed since the previous call.
 */
bool virtq_should_notify(struct virtq *q);

/*
 * EVENT_IDX, device side: asks for a notification once the driver makes the
 * entry at last_avail_idx available. virtq_pop() does this itself whenever it
 * finds the queue empty (and looks once more afterwards), so device models
 * just pop until 0. Does nothing without EVENT_IDX.
 */
void virtq_set_avail_event(struct virtq *q);

/*
 * The two event-index fields (VIRTIO_F_RING_EVENT_IDX): used_event, the
 * driver's, just after avail->ring[size]; avail_event, the device's, just
 * after used->ring[size]. Only for a configured queue.
 */
static inline uint16_t *virtq_used_event(const struct virtq *q)
{
	return &q->avail->ring[q->size];
}

static inline uint16_t *virtq_avail_event(const struct virtq *q)
{
	return (uint16_t *)(void *)((uint8_t *)q->used + 4 + sizeof(struct virtq_used_elem) * q->size);
}

#endif
