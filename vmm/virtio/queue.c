#include "queue.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

#include "memory.h"

static bool is_pow2(unsigned v)
{
	return v && !(v & (v - 1));
}

int virtq_init(struct virtq *q, const struct guest_mem *mem, unsigned max_size)
{
	if (!mem || !is_pow2(max_size) || max_size > VIRTQ_MAX_SIZE)
		return -EINVAL;
	memset(q, 0, sizeof(*q));
	q->mem = mem;
	q->max_size = max_size;
	return 0;
}

void virtq_reset(struct virtq *q)
{
	const struct guest_mem *mem = q->mem;
	unsigned max_size = q->max_size;

	memset(q, 0, sizeof(*q));
	q->mem = mem;
	q->max_size = max_size;
}

void virtq_unpop(struct virtq *q, unsigned n)
{
	q->last_avail_idx = (uint16_t)(q->last_avail_idx - n);
}

static void *ring_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len, uint64_t align)
{
	if (gpa & (align - 1))
		return NULL;
	return guest_mem_ptr(mem, gpa, len);
}

int virtq_configure(struct virtq *q, unsigned size, uint64_t desc, uint64_t avail,
		    uint64_t used, uint64_t features)
{
	void *d, *a, *u;

	if (!is_pow2(size) || size > q->max_size)
		return -EINVAL;
	d = ring_ptr(q->mem, desc, VIRTQ_DESC_BYTES(size), VIRTQ_DESC_ALIGN);
	a = ring_ptr(q->mem, avail, VIRTQ_AVAIL_BYTES(size), VIRTQ_AVAIL_ALIGN);
	u = ring_ptr(q->mem, used, VIRTQ_USED_BYTES(size), VIRTQ_USED_ALIGN);
	if (!d || !a || !u)
		return -EINVAL;
	virtq_reset(q);
	q->size = size;
	q->desc_gpa = desc;
	q->avail_gpa = avail;
	q->used_gpa = used;
	/* Guest RAM never moves once mapped, so the checked views stay valid. */
	q->desc = d;
	q->avail = a;
	q->used = u;
	q->indirect = features & VIRTQ_F_INDIRECT_DESC;
	q->event_idx = features & VIRTQ_F_RING_EVENT_IDX;
	q->ready = true;
	return 0;
}

/*
 * One copy of a descriptor the guest may be rewriting: the compiler barrier
 * keeps the checks and the use on the same copy instead of a re-read. memcpy
 * because an indirect table need not be aligned.
 */
static void read_desc(const uint8_t *src, struct virtq_desc *out)
{
	memcpy(out, src, sizeof(*out));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	out->addr = le64toh(out->addr);
	out->len = le32toh(out->len);
	out->flags = le16toh(out->flags);
	out->next = le16toh(out->next);
}

static int walk_chain(const struct virtq *q, uint16_t head, struct virtq_chain *chain)
{
	const uint8_t *table = (const uint8_t *)q->desc;
	uint32_t table_len = q->size; /* entries in the table being walked */
	uint32_t seen = 0;            /* descriptors taken from that table */
	uint32_t idx = head;
	uint64_t read_len = 0, write_len = 0;
	bool in_indirect = false, writable = false;
	unsigned nseg = 0;

	chain->head = head;
	chain->nread = 0;
	chain->nwrite = 0;
	for (;;) {
		struct virtq_desc d;

		if (idx >= table_len)
			return -EPROTO;
		/* Following more links than the table has entries means a cycle. */
		if (++seen > table_len)
			return -ELOOP;
		read_desc(table + (uint64_t)idx * sizeof(struct virtq_desc), &d);

		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			/* Spec 2.7.5.3.1: no nesting, and never together with NEXT. */
			if (!q->indirect || in_indirect || (d.flags & VIRTQ_DESC_F_NEXT))
				return -EPROTO;
			if (d.len == 0 || d.len % sizeof(struct virtq_desc) ||
			    d.len / sizeof(struct virtq_desc) > VIRTQ_MAX_SIZE)
				return -EPROTO;
			table = guest_mem_ptr(q->mem, d.addr, d.len);
			if (!table)
				return -EFAULT;
			table_len = d.len / sizeof(struct virtq_desc);
			seen = 0;
			idx = 0;
			in_indirect = true;
			continue;
		}

		/* Spec 2.7.4.2: device-writable buffers follow device-readable ones. */
		if (d.flags & VIRTQ_DESC_F_WRITE)
			writable = true;
		else if (writable)
			return -EPROTO;

		/* A zero-length buffer has no bytes to check or to hand out. */
		if (d.len) {
			void *p = guest_mem_ptr(q->mem, d.addr, d.len);
			uint64_t *total = writable ? &write_len : &read_len;

			if (!p)
				return -EFAULT;
			if (nseg == VIRTQ_MAX_SEGS)
				return -E2BIG;
			/* At most VIRTQ_MAX_SEGS 32-bit lengths: the sum cannot wrap. */
			*total += d.len;
			if (*total > UINT32_MAX)
				return -EOVERFLOW;
			chain->iov[nseg].iov_base = p;
			chain->iov[nseg].iov_len = d.len;
			nseg++;
			if (writable)
				chain->nwrite++;
			else
				chain->nread++;
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		idx = d.next;
	}
	chain->read_len = (uint32_t)read_len;
	chain->write_len = (uint32_t)write_len;
	return 0;
}

int virtq_pop(struct virtq *q, struct virtq_chain *chain)
{
	uint16_t avail_idx, head;
	int err;

	if (q->broken)
		return -EIO;
	if (!q->ready)
		return 0;
	/* Acquire: ring entries and descriptors written before idx are seen. */
	avail_idx = le16toh(__atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE));
	if (avail_idx == q->last_avail_idx) {
		if (!q->event_idx)
			return 0;
		/*
		 * Empty: ask the driver to kick for its next buffer, then look once
		 * more, since one may have arrived before it could see the request.
		 */
		virtq_set_avail_event(q);
		avail_idx = le16toh(__atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE));
		if (avail_idx == q->last_avail_idx)
			return 0;
	}
	if ((uint16_t)(avail_idx - q->last_avail_idx) > q->size) {
		err = -EPROTO;
		goto broken;
	}
	head = le16toh(__atomic_load_n(&q->avail->ring[q->last_avail_idx & (q->size - 1)],
				       __ATOMIC_RELAXED));
	if (head >= q->size) {
		err = -EPROTO;
		goto broken;
	}
	err = walk_chain(q, head, chain);
	if (err)
		goto broken;
	q->last_avail_idx++;
	return 1;
broken:
	q->broken = true;
	return err;
}

int virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
	struct virtq_used_elem *e;

	if (q->broken)
		return -EIO;
	if (!q->ready || head >= q->size)
		return -EINVAL;
	e = &q->used->ring[q->used_idx & (q->size - 1)];
	__atomic_store_n(&e->id, htole32(head), __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, htole32(written), __ATOMIC_RELAXED);
	q->used_idx++;
	/* Release: a driver that sees the new idx sees the element. */
	__atomic_store_n(&q->used->idx, htole16(q->used_idx), __ATOMIC_RELEASE);
	return 0;
}

bool virtq_should_notify(struct virtq *q)
{
	uint16_t old = q->signalled_used, now = q->used_idx;
	uint16_t v;

	if (!q->ready || q->broken || old == now)
		return false;
	q->signalled_used = now;
	/*
	 * Full barrier: the used idx store must be visible before the driver's
	 * suppression state is read, or each side could wait for the other.
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (q->event_idx) {
		v = le16toh(__atomic_load_n(virtq_used_event(q), __ATOMIC_RELAXED));
		/* Notify iff used_event lies in [old, now): spec 2.7.7.2. */
		return (uint16_t)(now - v - 1) < (uint16_t)(now - old);
	}
	v = le16toh(__atomic_load_n(&q->avail->flags, __ATOMIC_RELAXED));
	return !(v & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

void virtq_set_avail_event(struct virtq *q)
{
	if (!q->ready || !q->event_idx || q->broken)
		return;
	__atomic_store_n(virtq_avail_event(q), htole16(q->last_avail_idx), __ATOMIC_RELAXED);
	/* Full barrier: visible before the caller re-reads avail idx. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}
