#ifndef SANDVM_VMM_EVENT_LOOP_H
#define SANDVM_VMM_EVENT_LOOP_H

#include <stddef.h>
#include <stdint.h>

/*
 * The VMM's device event loop (epoll): signals, stop requests, timers, the
 * control socket, and later virtqueue notifications all arrive here on the
 * main thread, while vCPU threads only run guest code and trap I/O.
 */

struct event_handler {
	int fd;
	void (*cb)(struct event_handler *h, uint32_t events);
	void *opaque;
};

struct event_loop_deferred {
	void (*fn)(void *arg);
	void *arg;
};

struct event_loop {
	int epfd;
	struct event_loop_deferred *deferred;
	size_t ndeferred, cap_deferred;
};

int event_loop_init(struct event_loop *loop);
void event_loop_destroy(struct event_loop *loop);

/* The handler must stay valid until removed. events: EPOLLIN etc. */
int event_loop_add(struct event_loop *loop, struct event_handler *h, uint32_t events);
int event_loop_del(struct event_loop *loop, struct event_handler *h);
/* Changes the events a registered handler waits for. */
int event_loop_mod(struct event_loop *loop, struct event_handler *h, uint32_t events);

/*
 * Runs fn(arg) once the current batch of events has been dispatched: how a
 * handler frees another handler whose event may still be pending in the
 * batch. The freed handler must first be removed and have its fd set to -1.
 * Without memory for the record, fn runs at once.
 */
void event_loop_defer(struct event_loop *loop, void (*fn)(void *arg), void *arg);

/* Waits up to timeout_ms (-1: forever) and runs the ready handlers. */
int event_loop_run_once(struct event_loop *loop, int timeout_ms);

#endif
