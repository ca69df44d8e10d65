#include "virtio/vsock.h"

#include <cjson/cJSON.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "virtio/device.h"
#include "virtio/iov.h"

enum { RXQ = 0, TXQ = 1, EVQ = 2 };

enum conn_state {
	CONN_HANDSHAKE,  /* host client has not sent its CONNECT line yet */
	CONN_CONNECTING, /* REQUEST sent to the guest, waiting for its RESPONSE */
	CONN_ESTABLISHED,
};

struct vsock_conn {
	struct event_handler h;
	struct vsock_dev *vs;
	struct vsock_conn *next;
	enum conn_state state;
	uint32_t local_port; /* the host side's port */
	uint32_t peer_port;  /* the guest's port */
	uint32_t peer_buf_alloc, peer_fwd_cnt;
	uint32_t tx_cnt;        /* payload bytes sent to the guest */
	uint32_t fwd_cnt;       /* payload bytes from the guest written to the host */
	uint32_t fwd_announced; /* fwd_cnt as last told to the guest */
	uint32_t events;
	bool host_eof;       /* the host side sent all it will send; the guest was told */
	bool rx_blocked;     /* no RX buffer for this connection's data until the guest adds some */
	bool polled;         /* the fd is in the event loop */
	bool guest_no_send;  /* the guest shut down its sending side */
	bool guest_gone;     /* the guest closed fully: finish writing, then reset */
	size_t out_len;      /* guest bytes not yet written to the host socket */
	uint8_t *out;
};

/* ---- small helpers ---- */

static bool dev_active(const struct vsock_dev *vs)
{
	return vs->dev && (vs->dev->status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(vs->dev->status & VIRTIO_STATUS_NEEDS_RESET) && vs->dev->queues[RXQ].ready &&
	       vs->dev->queues[TXQ].ready;
}

static struct vsock_hdr reply_hdr(const struct vsock_dev *vs, const struct vsock_conn *c,
				  uint16_t op)
{
	return (struct vsock_hdr){
		.src_cid = VSOCK_HOST_CID,
		.dst_cid = vs->guest_cid,
		.src_port = c->local_port,
		.dst_port = c->peer_port,
		.type = VSOCK_TYPE_STREAM,
		.op = op,
		.buf_alloc = VSOCK_CONN_BUF,
		.fwd_cnt = c->fwd_cnt,
	};
}

static void queue_ctl(struct vsock_dev *vs, const struct vsock_hdr *h)
{
	if (vs->ctl_count == VSOCK_CTL_QUEUE) {
		/* The guest is not taking RX buffers; it loses control packets first. */
		sv_warn_ratelimited(&vs->ctl_full_log, "virtio-vsock: control queue full; dropping a packet");
		return;
	}
	vs->ctl[(vs->ctl_head + vs->ctl_count++) % VSOCK_CTL_QUEUE] = *h;
}

static void queue_rst_to(struct vsock_dev *vs, uint32_t local_port, uint32_t peer_port)
{
	struct vsock_hdr h = { .src_cid = VSOCK_HOST_CID, .dst_cid = vs->guest_cid,
			       .src_port = local_port, .dst_port = peer_port,
			       .type = VSOCK_TYPE_STREAM, .op = VSOCK_OP_RST };

	queue_ctl(vs, &h);
}

static uint32_t peer_credit(const struct vsock_conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

	return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/*
 * Sockets report hang-ups whatever they are polled for, so a connection that
 * wants nothing leaves the event loop instead of waking it in a spin.
 */
static void set_events(struct vsock_conn *c, uint32_t events)
{
	struct event_loop *loop = c->vs->loop;

	if (!events) {
		if (c->polled)
			event_loop_del(loop, &c->h);
		c->polled = false;
	} else if (!c->polled) {
		c->polled = event_loop_add(loop, &c->h, events) == 0;
	} else if (c->events != events) {
		event_loop_mod(loop, &c->h, events);
	}
	c->events = events;
}

/* What the host fd should be polled for in the connection's present state. */
static void update_events(struct vsock_conn *c)
{
	uint32_t ev = 0;

	if (c->state == CONN_HANDSHAKE)
		ev = EPOLLIN;
	else if (c->state == CONN_ESTABLISHED) {
		if (!c->host_eof && !c->rx_blocked && peer_credit(c) > 0)
			ev |= EPOLLIN;
		if (c->out_len)
			ev |= EPOLLOUT;
	}
	set_events(c, ev);
}

static void conn_release(void *arg)
{
	struct vsock_conn *c = arg;

	free(c->out);
	free(c);
}

static void conn_free(struct vsock_dev *vs, struct vsock_conn *c)
{
	struct vsock_conn **p;

	for (p = &vs->conns; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	if (c->polled)
		event_loop_del(vs->loop, &c->h);
	close(c->h.fd);
	/* An event for this fd may still wait in the loop's current batch. */
	c->h.fd = -1;
	vs->nconns--;
	event_loop_defer(vs->loop, conn_release, c);
}

static struct vsock_conn *conn_find(struct vsock_dev *vs, uint32_t local, uint32_t peer)
{
	for (struct vsock_conn *c = vs->conns; c; c = c->next)
		if (c->state != CONN_HANDSHAKE && c->local_port == local && c->peer_port == peer)
			return c;
	return NULL;
}

static void fd_event(struct event_handler *h, uint32_t events);

static struct vsock_conn *conn_new(struct vsock_dev *vs, int fd, enum conn_state state)
{
	struct vsock_conn *c;

	if (vs->nconns >= VSOCK_MAX_CONNS)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->out = malloc(VSOCK_CONN_BUF);
	if (!c->out) {
		free(c);
		return NULL;
	}
	c->vs = vs;
	c->state = state;
	c->h = (struct event_handler){ .fd = fd, .cb = fd_event, .opaque = c };
	c->next = vs->conns;
	vs->conns = c;
	vs->nconns++;
	return c;
}

/* ---- RX: host to guest ---- */

static int rx_chain(struct vsock_dev *vs, struct virtq_chain **out)
{
	int r;

	if (!vs->have_held) {
		r = virtq_pop(&vs->dev->queues[RXQ], &vs->held);
		if (r <= 0)
			return r;
		if (vs->held.nwrite == 0 || vs->held.write_len < VSOCK_HDR_BYTES) {
			virtio_dev_set_broken(vs->dev, "vsock RX buffer too small for a header");
			return -EINVAL;
		}
		vs->have_held = true;
	}
	*out = &vs->held;
	return 1;
}

static void rx_deliver(struct vsock_dev *vs, struct virtq_chain *ch, const struct vsock_hdr *h,
		       const uint8_t *payload)
{
	uint8_t raw[VSOCK_HDR_BYTES];

	vsock_hdr_encode(h, raw);
	/* rx_data() never asks for more than the chain's writable room. */
	iov_scatter(ch->iov + ch->nread, ch->nwrite, 0, raw, sizeof(raw));
	if (h->len)
		iov_scatter(ch->iov + ch->nread, ch->nwrite, VSOCK_HDR_BYTES, payload, h->len);
	virtq_push(&vs->dev->queues[RXQ], ch->head, VSOCK_HDR_BYTES + h->len);
	vs->have_held = false;
}

/* Moves one chunk of host data into the guest; false when nothing moved. */
static bool rx_data(struct vsock_dev *vs, struct vsock_conn *c, struct virtq_chain *ch)
{
	uint32_t room = ch->write_len - VSOCK_HDR_BYTES;
	uint32_t credit = peer_credit(c);
	uint32_t want = room < credit ? room : credit;
	struct vsock_hdr h;
	ssize_t n;

	if (want > VSOCK_MAX_PAYLOAD)
		want = VSOCK_MAX_PAYLOAD;
	if (want == 0)
		return false;
	n = recv(c->h.fd, vs->bounce, want, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (n <= 0) {
		/* The host side sends no more; the guest may still send to it (half close). */
		c->host_eof = true;
		h = reply_hdr(vs, c, VSOCK_OP_SHUTDOWN);
		h.flags = VSOCK_SHUTDOWN_SEND;
		rx_deliver(vs, ch, &h, NULL);
		return true;
	}
	h = reply_hdr(vs, c, VSOCK_OP_RW);
	h.len = (uint32_t)n;
	c->tx_cnt += (uint32_t)n;
	c->fwd_announced = c->fwd_cnt;
	rx_deliver(vs, ch, &h, vs->bounce);
	return true;
}

/* Fills RX buffers: control packets first, then data of readable connections. */
static void rx_pump(struct vsock_dev *vs, struct vsock_conn *only)
{
	struct virtq_chain *ch;
	bool pushed = false;

	if (!dev_active(vs) || vs->reset_hold_rx)
		return;
	while (vs->ctl_count && rx_chain(vs, &ch) > 0) {
		rx_deliver(vs, ch, &vs->ctl[vs->ctl_head], NULL);
		vs->ctl_head = (vs->ctl_head + 1) % VSOCK_CTL_QUEUE;
		vs->ctl_count--;
		pushed = true;
	}
	if (only && only->state == CONN_ESTABLISHED) {
		/* Control packets go first; without buffers for them, data waits too. */
		unsigned budget = VIRTIO_QUEUE_BUDGET;

		only->rx_blocked = vs->ctl_count != 0;
		/* Past the budget the fd stays polled and the loop brings us back. */
		while (!only->rx_blocked && !only->host_eof && budget--) {
			if (rx_chain(vs, &ch) <= 0) {
				only->rx_blocked = true;
				break;
			}
			if (!rx_data(vs, only, ch))
				break;
			pushed = true;
		}
		update_events(only);
	}
	if (pushed)
		virtio_dev_notify_used(vs->dev, RXQ);
}

/* After the guest added RX buffers or granted credit: let blocked readers go again. */
static void rx_resume(struct vsock_dev *vs)
{
	rx_pump(vs, NULL);
	for (struct vsock_conn *c = vs->conns; c; c = c->next) {
		c->rx_blocked = false;
		if (c->state == CONN_ESTABLISHED)
			update_events(c);
	}
}

/* ---- TX: guest to host ---- */

static void flush_out(struct vsock_conn *c)
{
	struct vsock_dev *vs = c->vs;

	while (c->out_len) {
		ssize_t n = send(c->h.fd, c->out, c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
		c->fwd_cnt += (uint32_t)n;
	}
	/* Tell the guest about freed space before it stalls on a stale window. */
	if (c->fwd_cnt - c->fwd_announced >= VSOCK_CONN_BUF / 4) {
		struct vsock_hdr h = reply_hdr(vs, c, VSOCK_OP_CREDIT_UPDATE);

		queue_ctl(vs, &h);
		c->fwd_announced = c->fwd_cnt;
	}
	if (c->guest_no_send && !c->out_len)
		shutdown(c->h.fd, SHUT_WR);
}

static void reset_conn(struct vsock_dev *vs, struct vsock_conn *c)
{
	queue_rst_to(vs, c->local_port, c->peer_port);
	conn_free(vs, c);
}

static void tx_rw(struct vsock_dev *vs, struct vsock_conn *c, const struct vsock_packet *p)
{
	size_t len = p->hdr.len;

	/* A guest sending past the window it was given breaks the protocol. */
	if (c->out_len + len > VSOCK_CONN_BUF) {
		sv_warn_ratelimited(&vs->credit_log, "virtio-vsock: guest port %u overran its credit; resetting",
				    c->peer_port);
		reset_conn(vs, c);
		return;
	}
	for (int i = 0; i < p->npayload; i++) {
		memcpy(c->out + c->out_len, p->payload[i].iov_base, p->payload[i].iov_len);
		c->out_len += p->payload[i].iov_len;
	}
	flush_out(c);
	update_events(c);
}

static int connect_host_listener(const struct vsock_dev *vs, uint32_t port)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, n;

	if (!vs->path)
		return -ECONNREFUSED;
	n = snprintf(addr.sun_path, sizeof(addr.sun_path), "%s_%u", vs->path, port);
	if (n < 0 || (size_t)n >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

static void tx_request(struct vsock_dev *vs, const struct vsock_packet *p)
{
	const struct vsock_hdr *ph = &p->hdr;
	struct vsock_conn *c;
	struct vsock_hdr h;
	int fd;

	if (conn_find(vs, ph->dst_port, ph->src_port)) {
		queue_rst_to(vs, ph->dst_port, ph->src_port);
		return;
	}
	fd = connect_host_listener(vs, ph->dst_port);
	c = fd >= 0 ? conn_new(vs, fd, CONN_ESTABLISHED) : NULL;
	if (!c) {
		if (fd >= 0)
			close(fd);
		queue_rst_to(vs, ph->dst_port, ph->src_port);
		return;
	}
	c->local_port = ph->dst_port;
	c->peer_port = ph->src_port;
	c->peer_buf_alloc = ph->buf_alloc;
	c->peer_fwd_cnt = ph->fwd_cnt;
	h = reply_hdr(vs, c, VSOCK_OP_RESPONSE);
	queue_ctl(vs, &h);
	update_events(c);
}

static void tx_connected(struct vsock_dev *vs, struct vsock_conn *c, const struct vsock_packet *p)
{
	struct vsock_hdr h;
	char line[32];
	int n;

	c->peer_buf_alloc = p->hdr.buf_alloc;
	c->peer_fwd_cnt = p->hdr.fwd_cnt;
	switch (p->hdr.op) {
	case VSOCK_OP_RESPONSE:
		if (c->state != CONN_CONNECTING) {
			reset_conn(vs, c);
			return;
		}
		c->state = CONN_ESTABLISHED;
		n = snprintf(line, sizeof(line), "OK %u\n", c->local_port);
		if (send(c->h.fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) != n) {
			reset_conn(vs, c);
			return;
		}
		break;
	case VSOCK_OP_RW:
		if (c->state != CONN_ESTABLISHED) {
			reset_conn(vs, c);
			return;
		}
		tx_rw(vs, c, p);
		return;
	case VSOCK_OP_CREDIT_REQUEST:
		h = reply_hdr(vs, c, VSOCK_OP_CREDIT_UPDATE);
		queue_ctl(vs, &h);
		break;
	case VSOCK_OP_SHUTDOWN:
		if (p->hdr.flags & VSOCK_SHUTDOWN_SEND) {
			c->guest_no_send = true;
			flush_out(c);
		}
		if ((p->hdr.flags & VSOCK_SHUTDOWN_RCV) && c->guest_no_send) {
			/* Closed for good: what it sent still reaches the host first. */
			c->guest_gone = true;
			if (!c->out_len) {
				reset_conn(vs, c);
				return;
			}
		}
		break;
	case VSOCK_OP_RST:
		conn_free(vs, c);
		return;
	case VSOCK_OP_REQUEST:
		reset_conn(vs, c);
		return;
	default:
		break;
	}
	update_events(c);
}

/* One guest packet; malformed ones are dropped, the queue goes on. */
static int tx_chain(struct virtio_dev *dev, struct virtq_chain *ch, uint32_t *written,
		    const char **why)
{
	struct vsock_dev *vs = dev->model;
	struct vsock_packet pkt;
	struct vsock_conn *c;
	int e = vsock_packet_parse(ch, vs->guest_cid, &pkt);

	(void)why;
	*written = 0;
	if (e < 0) {
		sv_debug_ratelimited(&vs->malformed_log,
				     "virtio-vsock: dropped a malformed packet from the guest: %s", strerror(-e));
		return 0;
	}
	c = conn_find(vs, pkt.hdr.dst_port, pkt.hdr.src_port);
	if (c)
		tx_connected(vs, c, &pkt);
	else if (pkt.hdr.op == VSOCK_OP_REQUEST)
		tx_request(vs, &pkt);
	else if (pkt.hdr.op != VSOCK_OP_RST)
		queue_rst_to(vs, pkt.hdr.dst_port, pkt.hdr.src_port);
	return 0;
}

/* ---- host sockets ---- */

/* Reads "CONNECT <port>\n" without consuming what follows it. */
static void reset_conn(struct vsock_dev *vs, struct vsock_conn *c);

static void handshake(struct vsock_dev *vs, struct vsock_conn *c)
{
	char buf[32];
	char *nl, *end;
	unsigned long port;
	ssize_t n = recv(c->h.fd, buf, sizeof(buf) - 1, MSG_PEEK | MSG_DONTWAIT);
	struct vsock_hdr h;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_free(vs, c);
		return;
	}
	buf[n] = '\0';
	nl = memchr(buf, '\n', (size_t)n);
	if (!nl) {
		if (n == sizeof(buf) - 1)
			conn_free(vs, c);
		return;
	}
	if (recv(c->h.fd, buf, (size_t)(nl - buf + 1), MSG_DONTWAIT) != nl - buf + 1) {
		conn_free(vs, c);
		return;
	}
	*nl = '\0';
	errno = 0;
	port = strncmp(buf, "CONNECT ", 8) == 0 ? strtoul(buf + 8, &end, 10) : 0;
	if (strncmp(buf, "CONNECT ", 8) != 0 || errno || *end || end == buf + 8 ||
	    port > UINT32_MAX) {
		send(c->h.fd, "ERROR bad CONNECT line\n", 23, MSG_DONTWAIT | MSG_NOSIGNAL);
		conn_free(vs, c);
		return;
	}
	c->peer_port = (uint32_t)port;
	c->local_port = vs->next_local_port++;
	c->state = CONN_CONNECTING;
	h = reply_hdr(vs, c, VSOCK_OP_REQUEST);
	queue_ctl(vs, &h);
	update_events(c);
	rx_pump(vs, NULL);
}

static void fd_event(struct event_handler *eh, uint32_t events)
{
	struct vsock_conn *c = eh->opaque;
	struct vsock_dev *vs = c->vs;

	pthread_mutex_lock(&vs->dev->lock);
	if (c->state == CONN_HANDSHAKE) {
		handshake(vs, c);
	} else if (!dev_active(vs)) {
		set_events(c, 0);
	} else {
		if (events & EPOLLOUT) {
			flush_out(c);
			if (c->guest_gone && !c->out_len) {
				reset_conn(vs, c);
				goto out;
			}
			/*
			 * The credit update flush_out may have queued must reach the
			 * guest now: a guest out of credit sends nothing that would
			 * make us deliver it later, and the stream would stall.
			 */
			rx_pump(vs, NULL);
			update_events(c);
		}
		if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			rx_pump(vs, c);
		/* Hung up both ways and nothing left to read: nothing can cross any more. */
		if ((events & (EPOLLHUP | EPOLLERR)) && c->host_eof) {
			reset_conn(vs, c);
			goto out;
		}
	}
out:
	pthread_mutex_unlock(&vs->dev->lock);
}

static void listen_event(struct event_handler *h, uint32_t events)
{
	struct vsock_dev *vs = h->opaque;
	struct vsock_conn *c;
	int fd;

	(void)events;
	fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	pthread_mutex_lock(&vs->dev->lock);
	c = conn_new(vs, fd, CONN_HANDSHAKE);
	if (c)
		update_events(c);
	else
		close(fd);
	pthread_mutex_unlock(&vs->dev->lock);
}

/* ---- device model ---- */

/*
 * TRANSPORT_RESET (virtio spec 5.10.6.6.1): every connection the guest has
 * is gone; its listeners stay. Sent once after a restore, in the first event
 * buffer the guest offers. The guest handles it, refills that buffer and
 * kicks the event queue; avail_event is set so the kick comes with
 * EVENT_IDX too, and that kick lets RX go.
 */
static void send_reset_event(struct vsock_dev *vs)
{
	struct virtq *q = &vs->dev->queues[EVQ];
	struct virtq_chain ch;
	uint8_t ev[4] = { 0 }; /* le32 id 0: VIRTIO_VSOCK_EVENT_TRANSPORT_RESET */
	int r;

	if (!vs->reset_event_pending) {
		if (vs->reset_hold_rx) {
			vs->reset_hold_rx = false;
			rx_resume(vs);
		}
		return;
	}
	if (!q->ready || !(vs->dev->status & VIRTIO_STATUS_DRIVER_OK))
		return;
	r = virtq_pop(q, &ch);
	if (r < 0 && r != -EIO)
		virtio_dev_set_broken(vs->dev, "vsock event queue broke the ring rules");
	if (r <= 0)
		return;
	if (ch.nread != 0 || ch.write_len < sizeof(ev)) {
		virtio_dev_set_broken(vs->dev, "vsock event buffer is not writable or too small");
		return;
	}
	iov_scatter(ch.iov, ch.nwrite, 0, ev, sizeof(ev));
	if (q->event_idx)
		*virtq_avail_event(q) = q->avail->idx; /* the guest's next refill crosses it */
	virtq_push(q, ch.head, sizeof(ev));
	vs->reset_event_pending = false;
	virtio_dev_notify_used(vs->dev, EVQ);
	sv_debug("virtio-vsock: transport reset sent to the guest");
}

static void vsock_notify(struct virtio_dev *dev, unsigned q)
{
	struct vsock_dev *vs = dev->model;

	if (q == EVQ) {
		send_reset_event(vs);
		return;
	}
	if (q == TXQ)
		virtio_dev_serve_queue(dev, TXQ, tx_chain);
	/* New RX buffers, or TX may have freed credit or queued replies. */
	rx_resume(vs);
}

/* An RX chain popped and not used goes back to the ring, to be taken again. */
static void vsock_quiesce(struct virtio_dev *dev)
{
	struct vsock_dev *vs = dev->model;

	if (vs->have_held)
		virtq_unpop(&dev->queues[RXQ], 1);
	vs->have_held = false;
}

static void vsock_restored(struct virtio_dev *dev)
{
	struct vsock_dev *vs = dev->model;
	uint32_t salt = 0;

	vs->reset_event_pending = vs->reset_hold_rx = true;
	/* Host ports unlike the snapshot's, so nothing new can be taken for an old connection. */
	if (getrandom(&salt, sizeof(salt), 0) == (ssize_t)sizeof(salt))
		vs->next_local_port += salt & 0x3fffffffu;
}

static void vsock_reset(struct virtio_dev *dev)
{
	struct vsock_dev *vs = dev->model;

	while (vs->conns) {
		if (vs->conns->state == CONN_HANDSHAKE) {
			conn_free(vs, vs->conns);
			continue;
		}
		conn_free(vs, vs->conns);
	}
	vs->ctl_count = 0;
	vs->have_held = false;
	vs->reset_event_pending = vs->reset_hold_rx = false;
}

static void vsock_config_read(struct virtio_dev *dev, uint32_t offset, uint8_t *data,
			      uint32_t len)
{
	struct vsock_dev *vs = dev->model;
	uint64_t cid = htole64(vs->guest_cid);

	memcpy(data, (uint8_t *)&cid + offset, len);
}

const struct virtio_dev_ops virtio_vsock_ops = {
	.name = "vsock",
	.device_id = VIRTIO_ID_VSOCK,
	.num_queues = 3,
	.queue_max = 256,
	.features = 0,
	.config_size = 8,
	.config_read = vsock_config_read,
	.queue_notify = vsock_notify,
	.reset = vsock_reset,
	.quiesce = vsock_quiesce,
	.restored = vsock_restored,
};

static int init_common(struct vsock_dev *vs, uint64_t guest_cid, const char *path, int listen_fd)
{
	memset(vs, 0, sizeof(*vs));
	vs->listen_h.fd = -1;
	vs->given_fd = -1;
	if (guest_cid <= VSOCK_HOST_CID || guest_cid >= 0xffffffffull || (!path) == (listen_fd < 0))
		return -EINVAL;
	vs->guest_cid = guest_cid;
	/* Ports the host side picks for its own connections, out of the way of services. */
	vs->next_local_port = 1u << 30;
	if (path) {
		vs->path = strdup(path);
		if (!vs->path)
			return -ENOMEM;
	}
	if (sv_ratelimit_init(&vs->ctl_full_log, "virtio-vsock: control queue full", SV_RATELIMIT_BURST,
			      SV_RATELIMIT_INTERVAL_NS) < 0)
		goto fail_ctl;
	if (sv_ratelimit_init(&vs->credit_log, "virtio-vsock: guest overran its credit", SV_RATELIMIT_BURST,
			      SV_RATELIMIT_INTERVAL_NS) < 0)
		goto fail_credit;
	if (sv_ratelimit_init(&vs->malformed_log, "virtio-vsock: malformed packet", SV_RATELIMIT_BURST,
			      SV_RATELIMIT_INTERVAL_NS) < 0)
		goto fail_malformed;
	return 0;
fail_malformed:
	sv_ratelimit_destroy(&vs->credit_log);
fail_credit:
	sv_ratelimit_destroy(&vs->ctl_full_log);
fail_ctl:
	free(vs->path);
	vs->path = NULL;
	return -ENOMEM;
}

int vsock_dev_init(struct vsock_dev *vs, uint64_t guest_cid, const char *path)
{
	return path ? init_common(vs, guest_cid, path, -1) : -EINVAL;
}

int vsock_dev_init_fd(struct vsock_dev *vs, uint64_t guest_cid, int listen_fd)
{
	int r = listen_fd >= 0 ? init_common(vs, guest_cid, NULL, listen_fd) : -EINVAL;

	if (r == 0)
		vs->given_fd = listen_fd;
	return r;
}

int vsock_dev_start(struct vsock_dev *vs, struct virtio_dev *dev, struct event_loop *loop)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	vs->dev = dev;
	vs->loop = loop;
	if (!vs->path) {
		int fl = fcntl(vs->given_fd, F_GETFL);

		if (fl < 0 || fcntl(vs->given_fd, F_SETFL, fl | O_NONBLOCK) < 0)
			return -errno;
		vs->listen_h = (struct event_handler){ .fd = vs->given_fd, .cb = listen_event, .opaque = vs };
		vs->given_fd = -1;
		if (event_loop_add(loop, &vs->listen_h, EPOLLIN) < 0)
			return -EIO;
		return 0;
	}
	if (strlen(vs->path) >= sizeof(addr.sun_path) - 12)
		return -ENAMETOOLONG;
	if (lstat(vs->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		unlink(vs->path);
	}
	strcpy(addr.sun_path, vs->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || chmod(vs->path, 0600) < 0 ||
	    listen(fd, 64) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	vs->listen_h = (struct event_handler){ .fd = fd, .cb = listen_event, .opaque = vs };
	if (event_loop_add(loop, &vs->listen_h, EPOLLIN) < 0) {
		close(fd);
		vs->listen_h.fd = -1;
		unlink(vs->path);
		return -EIO;
	}
	return 0;
}

void vsock_dev_destroy(struct vsock_dev *vs)
{
	while (vs->conns)
		conn_free(vs, vs->conns);
	if (vs->listen_h.fd >= 0) {
		event_loop_del(vs->loop, &vs->listen_h);
		close(vs->listen_h.fd);
		if (vs->path)
			unlink(vs->path);
	}
	if (vs->given_fd >= 0)
		close(vs->given_fd);
	vs->given_fd = -1;
	free(vs->path);
	vs->path = NULL;
	sv_ratelimit_destroy(&vs->ctl_full_log);
	sv_ratelimit_destroy(&vs->credit_log);
	sv_ratelimit_destroy(&vs->malformed_log);
}

void vsock_dev_status(const struct vsock_dev *vs, cJSON *out)
{
	static const char *const states[] = { "handshake", "connecting", "established" };
	cJSON *conns;

	if (vs->dev) {
		virtio_dev_queue_status(vs->dev, RXQ, cJSON_AddObjectToObject(out, "rxq"));
		virtio_dev_queue_status(vs->dev, TXQ, cJSON_AddObjectToObject(out, "txq"));
	}
	cJSON_AddNumberToObject(out, "control_packets_waiting", vs->ctl_count);
	cJSON_AddBoolToObject(out, "rx_chain_held", vs->have_held);
	conns = cJSON_AddArrayToObject(out, "connections");
	for (const struct vsock_conn *c = vs->conns; c; c = c->next) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddNumberToObject(j, "host_port", c->local_port);
		cJSON_AddNumberToObject(j, "guest_port", c->peer_port);
		cJSON_AddStringToObject(j, "state", states[c->state]);
		cJSON_AddNumberToObject(j, "tx_cnt", c->tx_cnt);
		cJSON_AddNumberToObject(j, "peer_fwd_cnt", c->peer_fwd_cnt);
		cJSON_AddNumberToObject(j, "peer_buf_alloc", c->peer_buf_alloc);
		cJSON_AddNumberToObject(j, "peer_credit", peer_credit(c));
		cJSON_AddNumberToObject(j, "fwd_cnt", c->fwd_cnt);
		cJSON_AddNumberToObject(j, "fwd_announced", c->fwd_announced);
		cJSON_AddNumberToObject(j, "out_len", (double)c->out_len);
		cJSON_AddNumberToObject(j, "polled_events", c->polled ? c->events : 0);
		cJSON_AddBoolToObject(j, "host_eof", c->host_eof);
		cJSON_AddBoolToObject(j, "rx_blocked", c->rx_blocked);
		cJSON_AddBoolToObject(j, "guest_no_send", c->guest_no_send);
		cJSON_AddBoolToObject(j, "guest_gone", c->guest_gone);
		cJSON_AddItemToArray(conns, j);
	}
}
