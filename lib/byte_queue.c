#include "byte_queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BYTE_QUEUE_MIN_CAP (64u * 1024u)

uint8_t *byte_queue_reserve(struct byte_queue *q, size_t len)
{
	if (q->head == q->tail)
		q->head = q->tail = 0;
	if (q->cap - q->tail < len && q->head) {
		memmove(q->buf, q->buf + q->head, q->tail - q->head);
		q->tail -= q->head;
		q->head = 0;
	}
	if (q->cap - q->tail < len) {
		size_t cap = q->cap ? q->cap : BYTE_QUEUE_MIN_CAP;
		uint8_t *n;

		while (cap - q->tail < len)
			cap *= 2;
		n = realloc(q->buf, cap);
		if (!n)
			return NULL;
		q->buf = n;
		q->cap = cap;
	}
	return q->buf + q->tail;
}

void byte_queue_commit(struct byte_queue *q, size_t len)
{
	q->tail += len;
}

int byte_queue_send(struct byte_queue *q, int fd)
{
	while (q->head < q->tail) {
		ssize_t n = send(fd, q->buf + q->head, q->tail - q->head, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0)
			return -errno;
		q->head += (size_t)n;
	}
	if (q->head == q->tail)
		q->head = q->tail = 0;
	return 0;
}

void byte_queue_free(struct byte_queue *q)
{
	free(q->buf);
	*q = (struct byte_queue){ 0 };
}
