#include "event_loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

int event_loop_init(struct event_loop *loop)
{
	loop->deferred = NULL;
	loop->ndeferred = loop->cap_deferred = 0;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	return loop->epfd < 0 ? -errno : 0;
}

static void run_deferred(struct event_loop *loop)
{
	/* A deferred call may defer more; those run in the same pass. */
	for (size_t i = 0; i < loop->ndeferred; i++)
		loop->deferred[i].fn(loop->deferred[i].arg);
	loop->ndeferred = 0;
}

void event_loop_defer(struct event_loop *loop, void (*fn)(void *arg), void *arg)
{
	if (loop->ndeferred == loop->cap_deferred) {
		size_t cap = loop->cap_deferred ? loop->cap_deferred * 2 : 16;
		struct event_loop_deferred *d = realloc(loop->deferred, cap * sizeof(*d));

		if (!d) {
			fn(arg);
			return;
		}
		loop->deferred = d;
		loop->cap_deferred = cap;
	}
	loop->deferred[loop->ndeferred++] = (struct event_loop_deferred){ fn, arg };
}

void event_loop_destroy(struct event_loop *loop)
{
	run_deferred(loop);
	free(loop->deferred);
	loop->deferred = NULL;
	loop->cap_deferred = 0;
	if (loop->epfd >= 0)
		close(loop->epfd);
	loop->epfd = -1;
}

int event_loop_add(struct event_loop *loop, struct event_handler *h, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };

	return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0 ? -errno : 0;
}

int event_loop_del(struct event_loop *loop, struct event_handler *h)
{
	return epoll_ctl(loop->epfd, EPOLL_CTL_DEL, h->fd, NULL) < 0 ? -errno : 0;
}

int event_loop_mod(struct event_loop *loop, struct event_handler *h, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };

	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0 ? -errno : 0;
}

int event_loop_run_once(struct event_loop *loop, int timeout_ms)
{
	struct epoll_event evs[16];
	int n = epoll_wait(loop->epfd, evs, 16, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct event_handler *h = evs[i].data.ptr;

		/* Removed by an earlier handler of this batch. */
		if (h->fd < 0)
			continue;
		h->cb(h, evs[i].events);
	}
	run_deferred(loop);
	return n;
}
