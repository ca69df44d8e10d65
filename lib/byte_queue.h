#ifndef SANDVM_LIB_BYTE_QUEUE_H
#define SANDVM_LIB_BYTE_QUEUE_H

/*
 * Bytes waiting to be written to a non-blocking socket: frames are encoded
 * straight into reserved room, and send() takes from the front what the
 * socket accepts. Used by both ends of the agent protocol.
 */

#include <stddef.h>
#include <stdint.h>

struct byte_queue {
	uint8_t *buf;
	size_t head, tail, cap; /* pending bytes are buf[head..tail) */
};

static inline size_t byte_queue_len(const struct byte_queue *q)
{
	return q->tail - q->head;
}

/* Room for len more bytes at the tail (moving or growing the buffer); NULL if out of memory. */
uint8_t *byte_queue_reserve(struct byte_queue *q, size_t len);
/* Appends len bytes written into the room byte_queue_reserve returned. */
void byte_queue_commit(struct byte_queue *q, size_t len);
/* Sends what fd takes now, without blocking; 0, or -errno of a failed send other than EAGAIN. */
int byte_queue_send(struct byte_queue *q, int fd);
void byte_queue_free(struct byte_queue *q);

#endif
