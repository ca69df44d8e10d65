#include "virtio/net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "log.h"
#include "virtio/device.h"
#include "virtio/iov.h"

#define RXQ 0u
#define TXQ 1u

#define VIRTIO_NET_F_MAC (1ull << 5)
#define VIRTIO_NET_F_MRG_RXBUF (1ull << 15)
#define VIRTIO_NET_F_STATUS (1ull << 16)
#define VIRTIO_NET_S_LINK_UP 1u

/* struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
#define NET_HDR_BYTES 12u
#define NET_HDR_NUM_BUFFERS 10u

/* Chains one received frame may take with mergeable buffers (1.5 KiB each covers 64 KiB). */
#define NET_RX_MAX_CHAINS 48u

/* Where the held chains sit behind the pending frame: aligned for the struct. */
#define NET_RX_HELD_OFFSET ((NET_MAX_FRAME + 15u) & ~15u)

struct net_rx_held {
	struct virtq_chain chains[NET_RX_MAX_CHAINS];
	unsigned n;
	uint64_t room;
};

static struct net_dev *net_of(struct virtio_dev *dev)
{
	return dev->model;
}

static bool mergeable(const struct net_dev *n)
{
	return n->dev->driver_features & VIRTIO_NET_F_MRG_RXBUF;
}

static void set_tap_events(struct net_dev *n, bool want)
{
	if (want == n->tap_polled || n->tap_h.fd < 0)
		return;
	if (event_loop_mod(n->loop, &n->tap_h, want ? EPOLLIN : 0) == 0)
		n->tap_polled = want;
}

/* ---- TX: guest to the tap, through the egress filter ---- */

static int tx_chain(struct virtio_dev *dev, struct virtq_chain *ch, uint32_t *written, const char **why)
{
	struct net_dev *n = net_of(dev);
	uint8_t hdr[NET_HDR_BYTES];
	size_t len;

	*written = 0;
	(void)why;
	if (ch->read_len < NET_HDR_BYTES + 14 || ch->read_len - NET_HDR_BYTES > NET_MAX_FRAME) {
		n->stats.tx_dropped++;
		return 0;
	}
	len = ch->read_len - NET_HDR_BYTES;
	if (iov_gather(ch->iov, ch->nread, 0, hdr, sizeof(hdr)) < 0 ||
	    iov_gather(ch->iov, ch->nread, NET_HDR_BYTES, n->tx_frame, len) < 0) {
		n->stats.tx_dropped++;
		return 0;
	}
	/* No offload was offered: a frame asking for checksum or GSO help is not a frame we can send. */
	if (hdr[0] != 0 || hdr[1] != 0) {
		n->stats.tx_dropped++;
		return 0;
	}
	if (n->egress && !n->egress(n->egress_ctx, n->tx_frame, len)) {
		n->stats.tx_dropped++;
		return 0;
	}
	if (write(n->tap_h.fd, n->tx_frame, len) != (ssize_t)len) {
		/* A full tap queue drops, as a busy wire would; the guest's TCP recovers. */
		n->stats.tx_dropped++;
		return 0;
	}
	n->stats.tx_frames++;
	n->stats.tx_bytes += len;
	return 0;
}

/* ---- RX: the tap to the guest ---- */

static struct net_rx_held *held_of(struct net_dev *n)
{
	return (struct net_rx_held *)(void *)(n->rx_frame + NET_RX_HELD_OFFSET);
}

/* Collects buffers until the pending frame fits: 1 ready, 0 waiting for the guest, < 0 broken. */
static int rx_collect(struct net_dev *n)
{
	struct net_rx_held *h = held_of(n);
	uint64_t need = NET_HDR_BYTES + n->rx_len;

	while (h->room < need) {
		struct virtq_chain *ch;
		int r;

		if (h->n == NET_RX_MAX_CHAINS || (h->n && !mergeable(n)))
			return -E2BIG;
		ch = &h->chains[h->n];
		r = virtq_pop(&n->dev->queues[RXQ], ch);
		if (r < 0 && r != -EIO)
			virtio_dev_set_broken(n->dev, "net RX queue broke the ring rules");
		if (r <= 0)
			return r;
		if (ch->nread != 0 || ch->write_len < NET_HDR_BYTES) {
			virtio_dev_set_broken(n->dev, "net RX buffer is not writable or too small for a header");
			return -EINVAL;
		}
		h->n++;
		h->room += ch->write_len;
	}
	return 1;
}

static void rx_deliver(struct net_dev *n)
{
	struct net_rx_held *h = held_of(n);
	uint8_t hdr[NET_HDR_BYTES] = {0};
	size_t off = 0;

	hdr[NET_HDR_NUM_BUFFERS] = (uint8_t)h->n;
	hdr[NET_HDR_NUM_BUFFERS + 1] = (uint8_t)(h->n >> 8);
	for (unsigned i = 0; i < h->n; i++) {
		struct virtq_chain *ch = &h->chains[i];
		size_t room = ch->write_len, used = 0;

		if (i == 0) {
			iov_scatter(ch->iov, ch->nwrite, 0, hdr, NET_HDR_BYTES);
			used = NET_HDR_BYTES;
		}
		if (off < n->rx_len) {
			size_t part = n->rx_len - off < room - used ? n->rx_len - off : room - used;

			iov_scatter(ch->iov, ch->nwrite, used, n->rx_frame + off, part);
			off += part;
			used += part;
		}
		virtq_push(&n->dev->queues[RXQ], ch->head, (uint32_t)used);
	}
	n->stats.rx_frames++;
	n->stats.rx_bytes += n->rx_len;
	h->n = 0;
	h->room = 0;
	n->rx_pending = false;
}

/* Moves tap frames into the guest while it has buffers; stops polling the tap when it has none. */
static void rx_pump(struct net_dev *n)
{
	bool pushed = false;

	for (unsigned budget = 256; budget; budget--) {
		int r;

		if (!n->rx_pending) {
			ssize_t got = read(n->tap_h.fd, n->rx_frame, NET_MAX_FRAME);

			if (got <= 0)
				break;
			n->rx_len = (size_t)got;
			n->rx_pending = true;
		}
		r = rx_collect(n);
		if (r == 0) {
			/* No buffers: the guest's next RX notification brings us back. */
			set_tap_events(n, false);
			goto out;
		}
		if (r < 0) {
			/* Too big for the buffers the guest offers: drop it, give the buffers back unused. */
			struct net_rx_held *h = held_of(n);

			for (unsigned i = 0; i < h->n; i++)
				virtq_push(&n->dev->queues[RXQ], h->chains[i].head, 0);
			pushed |= h->n > 0;
			h->n = 0;
			h->room = 0;
			n->rx_pending = false;
			n->stats.rx_dropped++;
			if (r != -E2BIG) {
				/* The queue is broken: nothing moves until the driver resets the device. */
				set_tap_events(n, false);
				goto out;
			}
			continue;
		}
		rx_deliver(n);
		pushed = true;
	}
	set_tap_events(n, true);
out:
	if (pushed)
		virtio_dev_notify_used(n->dev, RXQ);
}

static bool dev_running(const struct net_dev *n)
{
	return n->dev && (n->dev->status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(n->dev->status & VIRTIO_STATUS_NEEDS_RESET);
}

static void tap_event(struct event_handler *h, uint32_t events)
{
	struct net_dev *n = h->opaque;

	(void)events;
	pthread_mutex_lock(&n->dev->lock);
	if (dev_running(n))
		rx_pump(n);
	else
		set_tap_events(n, false); /* frames wait in the tap until the driver is up */
	pthread_mutex_unlock(&n->dev->lock);
}

static void net_notify(struct virtio_dev *dev, unsigned q)
{
	struct net_dev *n = net_of(dev);

	if (q == TXQ)
		virtio_dev_serve_queue(dev, TXQ, tx_chain);
	else if (q == RXQ && dev_running(n))
		rx_pump(n);
}

static void net_reset(struct virtio_dev *dev)
{
	struct net_dev *n = net_of(dev);
	struct net_rx_held *h = held_of(n);

	h->n = 0;
	h->room = 0;
	n->rx_pending = false;
	set_tap_events(n, false);
}

static void net_config_read(struct virtio_dev *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
	struct net_dev *n = net_of(dev);
	uint8_t cfg[10] = {0};

	memcpy(cfg, n->mac, 6);
	cfg[6] = VIRTIO_NET_S_LINK_UP;
	cfg[8] = 1; /* max_virtqueue_pairs */
	memcpy(data, cfg + offset, len);
}

static void net_config_write(struct virtio_dev *dev, uint32_t offset, const uint8_t *data, uint32_t len)
{
	/* The MAC is the sandbox's, not the guest's to change (anti-spoofing relies on it). */
	(void)dev;
	(void)offset;
	(void)data;
	(void)len;
}

/* RX chains held for a pending frame go back to the ring; the frame stays pending. */
static void net_quiesce(struct virtio_dev *dev)
{
	struct net_dev *n = net_of(dev);
	struct net_rx_held *h = held_of(n);

	if (h->n)
		virtq_unpop(&dev->queues[RXQ], h->n);
	h->n = 0;
	h->room = 0;
}

const struct virtio_dev_ops virtio_net_ops = {
	.name = "net",
	.device_id = VIRTIO_ID_NET,
	.num_queues = 2,
	.queue_max = 256,
	.features = VIRTIO_NET_F_MAC | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_STATUS,
	.config_size = 10,
	.config_read = net_config_read,
	.config_write = net_config_write,
	.queue_notify = net_notify,
	.reset = net_reset,
	.quiesce = net_quiesce,
};

int net_dev_init(struct net_dev *n, int tap_fd, const uint8_t mac[6])
{
	memset(n, 0, sizeof(*n));
	n->tap_h.fd = -1;
	/* The pending RX frame and the chains it will fill, in one allocation. */
	n->rx_frame = malloc(NET_RX_HELD_OFFSET + sizeof(struct net_rx_held));
	n->tx_frame = malloc(NET_MAX_FRAME);
	if (!n->rx_frame || !n->tx_frame) {
		free(n->rx_frame);
		free(n->tx_frame);
		return -ENOMEM;
	}
	memset(held_of(n), 0, sizeof(struct net_rx_held));
	memcpy(n->mac, mac, 6);
	n->tap_h.fd = tap_fd;
	n->tap_h.cb = tap_event;
	n->tap_h.opaque = n;
	return 0;
}

int net_dev_start(struct net_dev *n, struct virtio_dev *dev, struct event_loop *loop)
{
	int r;

	n->dev = dev;
	n->loop = loop;
	/* Registered idle; polled for frames once the driver is ready and has buffers. */
	r = event_loop_add(loop, &n->tap_h, 0);
	return r;
}

void net_dev_set_egress(struct net_dev *n, net_egress_fn fn, void *ctx)
{
	n->egress = fn;
	n->egress_ctx = ctx;
}

void net_dev_destroy(struct net_dev *n)
{
	if (n->tap_h.fd >= 0) {
		if (n->loop)
			event_loop_del(n->loop, &n->tap_h);
		close(n->tap_h.fd);
		n->tap_h.fd = -1;
	}
	free(n->rx_frame);
	free(n->tx_frame);
	n->rx_frame = n->tx_frame = NULL;
}
