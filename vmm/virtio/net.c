#include "virtio/net.h"

#include <errno.h>
#include <linux/if_tun.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "backends/tap.h"
#include "log.h"
#include "net/frame.h"
#include "virtio/device.h"
#include "virtio/iov.h"

#define RXQ 0u
#define TXQ 1u

#define VIRTIO_NET_F_CSUM (1ull << 0)
#define VIRTIO_NET_F_GUEST_CSUM (1ull << 1)
#define VIRTIO_NET_F_MAC (1ull << 5)
#define VIRTIO_NET_F_GUEST_TSO4 (1ull << 7)
#define VIRTIO_NET_F_GUEST_TSO6 (1ull << 8)
#define VIRTIO_NET_F_GUEST_ECN (1ull << 9)
#define VIRTIO_NET_F_HOST_TSO4 (1ull << 11)
#define VIRTIO_NET_F_HOST_TSO6 (1ull << 12)
#define VIRTIO_NET_F_HOST_ECN (1ull << 13)
#define VIRTIO_NET_F_MRG_RXBUF (1ull << 15)
#define VIRTIO_NET_F_STATUS (1ull << 16)
#define VIRTIO_NET_S_LINK_UP 1u

/* What a tap without vnet headers cannot carry. UFO and USO are never offered. */
#define NET_F_OFFLOADS                                                                                        \
	(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6 |   \
	 VIRTIO_NET_F_GUEST_ECN | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6 | VIRTIO_NET_F_HOST_ECN)

#define NET_HDR_BYTES NET_VNET_HDR_LEN
#define NET_HDR_NUM_BUFFERS 10u

/*
 * Chains one received frame may take with mergeable buffers: Linux posts
 * 1.5 KiB or more each, so 48 cover a 64 KiB frame and its header.
 */
#define NET_RX_MAX_CHAINS 48u

/* A tap read: the header, the largest frame, and one byte more to see a frame that is larger still. */
#define NET_RX_READ (NET_HDR_BYTES + NET_MAX_FRAME + 1u)

/* Where the held chains sit behind the pending frame: aligned for the struct. */
#define NET_RX_HELD_OFFSET ((NET_RX_READ + 15u) & ~15u)

#define NET_UNKNOWN_OFFLOADS (~0u)

#define NET_RX_TURN_FRAMES 256u
#define NET_RX_TURN_BYTES (4u << 20)

struct net_rx_held {
	struct virtq_chain chains[NET_RX_MAX_CHAINS];
	unsigned n;
	uint64_t room;
};

static struct net_dev *net_of(const struct virtio_dev *dev)
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

/* ---- offloads ---- */

/* What TX frames may ask for, from the features the driver acknowledged. */
static unsigned tx_offloads(uint64_t f)
{
	return ((f & VIRTIO_NET_F_CSUM) ? NET_TX_CSUM : 0) | ((f & VIRTIO_NET_F_HOST_TSO4) ? NET_TX_TSO4 : 0) |
	       ((f & VIRTIO_NET_F_HOST_TSO6) ? NET_TX_TSO6 : 0) | ((f & VIRTIO_NET_F_HOST_ECN) ? NET_TX_ECN : 0);
}

/*
 * What the tap may hand us (TUNSETOFFLOAD), from what the driver takes: no
 * segments without partial checksums (the tap would not honour them either),
 * nothing before FEATURES_OK.
 */
static unsigned tap_offloads_for(const struct virtio_dev *dev)
{
	uint64_t f = dev->driver_features;
	unsigned t = 0;

	if (!(dev->status & VIRTIO_STATUS_FEATURES_OK) || !(f & VIRTIO_NET_F_GUEST_CSUM))
		return 0;
	t = TUN_F_CSUM;
	if (f & VIRTIO_NET_F_GUEST_TSO4)
		t |= TUN_F_TSO4;
	if (f & VIRTIO_NET_F_GUEST_TSO6)
		t |= TUN_F_TSO6;
	if ((f & VIRTIO_NET_F_GUEST_ECN) && (t & (TUN_F_TSO4 | TUN_F_TSO6)))
		t |= TUN_F_TSO_ECN;
	return t;
}

/*
 * Brings the tap's offloads in line with the driver's features. Runs on the
 * main thread (queue work, tap events, reset, restore): the vCPU that writes
 * FEATURES_OK only changes registers. Until it has run the tap hands over
 * whole frames, which every driver takes.
 */
static void offload_sync(struct net_dev *n, const struct virtio_dev *dev)
{
	unsigned want;
	int r;

	if (!n->vnet_hdr || n->tap_h.fd < 0)
		return;
	want = tap_offloads_for(dev);
	if (want == n->tap_offloads)
		return;
	r = tap_set_offload(n->tap_h.fd, want);
	if (r < 0 && !n->offload_warned) {
		sv_warn("net: TUNSETOFFLOAD 0x%x: %s", want, strerror(-r));
		n->offload_warned = true;
	}
	n->tap_offloads = want;
}

/* ---- TX: guest to the tap, through the egress filter ---- */

static int tx_chain(struct virtio_dev *dev, struct virtq_chain *ch, uint32_t *written, const char **why)
{
	struct net_dev *n = net_of(dev);
	uint8_t *frame = n->tx_buf + NET_HDR_BYTES;
	struct net_vnet_hdr in, out;
	size_t len;
	bool pass;

	*written = 0;
	(void)why;
	if (ch->read_len < NET_HDR_BYTES + 14 || ch->read_len - NET_HDR_BYTES > NET_MAX_FRAME) {
		n->stats.tx_dropped++;
		return 0;
	}
	len = ch->read_len - NET_HDR_BYTES;
	if (iov_gather(ch->iov, ch->nread, 0, n->tx_buf, NET_HDR_BYTES) < 0 ||
	    iov_gather(ch->iov, ch->nread, NET_HDR_BYTES, frame, len) < 0) {
		n->stats.tx_dropped++;
		return 0;
	}
	/* Read once from our copy: the guest may rewrite its buffers meanwhile. */
	net_vnet_hdr_get(n->tx_buf, &in);
	memset(&out, 0, sizeof(out));
	if (n->egress)
		pass = n->egress(n->egress_ctx, frame, len, &in, tx_offloads(dev->driver_features), &out);
	else
		pass = in.flags == 0 && in.gso_type == NET_VNET_GSO_NONE;
	/* A tap without vnet headers cannot carry an offload request, whatever the filter said. */
	if (!pass || (!n->vnet_hdr && (out.flags || out.gso_type))) {
		n->stats.tx_dropped++;
		return 0;
	}
	if (n->vnet_hdr) {
		/* The tap gets the header the filter rebuilt from checked fields, never the guest's bytes. */
		net_vnet_hdr_put(&out, n->tx_buf);
		pass = write(n->tap_h.fd, n->tx_buf, NET_HDR_BYTES + len) == (ssize_t)(NET_HDR_BYTES + len);
	} else {
		pass = write(n->tap_h.fd, frame, len) == (ssize_t)len;
	}
	if (!pass) {
		/* A full tap queue drops, as a busy wire would; the guest's TCP recovers. */
		n->stats.tx_dropped++;
		return 0;
	}
	n->stats.tx_frames++;
	n->stats.tx_bytes += len;
	n->stats.tx_gso += out.gso_type != NET_VNET_GSO_NONE;
	n->stats.tx_csum += (out.flags & NET_VNET_F_NEEDS_CSUM) != 0;
	return 0;
}

/* ---- RX: the tap to the guest ---- */

static struct net_rx_held *held_of(struct net_dev *n)
{
	return (struct net_rx_held *)(void *)(n->rx_buf + NET_RX_HELD_OFFSET);
}

/*
 * The tap's header for the frame just read, against what the driver took:
 * a partial checksum or a segment it did not ask for (the tap's offloads
 * lag a reset by a turn of the loop) cannot go to it: false, dropped.
 * DATA_VALID is only a hint and is cleared where GUEST_CSUM is not taken.
 */
static bool rx_header_fits(struct net_dev *n, struct net_vnet_hdr *h)
{
	uint64_t f = n->dev->driver_features;
	uint8_t gso = h->gso_type & (uint8_t)~NET_VNET_GSO_ECN;

	h->flags &= NET_VNET_F_NEEDS_CSUM | NET_VNET_F_DATA_VALID;
	if (!(f & VIRTIO_NET_F_GUEST_CSUM))
		h->flags &= (uint8_t)~NET_VNET_F_DATA_VALID;
	if ((h->flags & NET_VNET_F_NEEDS_CSUM) && !(f & VIRTIO_NET_F_GUEST_CSUM))
		return false;
	if (gso == NET_VNET_GSO_NONE)
		return !(h->gso_type & NET_VNET_GSO_ECN);
	if ((gso == NET_VNET_GSO_TCPV4 && !(f & VIRTIO_NET_F_GUEST_TSO4)) ||
	    (gso == NET_VNET_GSO_TCPV6 && !(f & VIRTIO_NET_F_GUEST_TSO6)) ||
	    (gso != NET_VNET_GSO_TCPV4 && gso != NET_VNET_GSO_TCPV6))
		return false;
	return !(h->gso_type & NET_VNET_GSO_ECN) || (f & VIRTIO_NET_F_GUEST_ECN);
}

/* Reads the next frame from the tap into rx_buf: 1 one to deliver, 0 none waiting, -1 one dropped. */
static int rx_read(struct net_dev *n)
{
	struct net_vnet_hdr h;
	ssize_t got;

	if (n->vnet_hdr) {
		got = read(n->tap_h.fd, n->rx_buf, NET_RX_READ);
		if (got <= 0)
			return 0;
		if ((size_t)got < NET_HDR_BYTES + 14 || (size_t)got > NET_HDR_BYTES + NET_MAX_FRAME)
			return -1;
		n->rx_len = (size_t)got - NET_HDR_BYTES;
		net_vnet_hdr_get(n->rx_buf, &h);
		if (!rx_header_fits(n, &h))
			return -1;
		h.num_buffers = 0;
		net_vnet_hdr_put(&h, n->rx_buf);
		n->stats.rx_gso += h.gso_type != NET_VNET_GSO_NONE;
		n->stats.rx_csum += (h.flags & NET_VNET_F_NEEDS_CSUM) != 0;
	} else {
		got = read(n->tap_h.fd, n->rx_buf + NET_HDR_BYTES, NET_RX_READ - NET_HDR_BYTES);
		if (got <= 0)
			return 0;
		if ((size_t)got > NET_MAX_FRAME)
			return -1;
		n->rx_len = (size_t)got;
		memset(n->rx_buf, 0, NET_HDR_BYTES);
	}
	return 1;
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
		/*
		 * Every entry of the ring held and still short: the guest has no
		 * room left to post more, so waiting would stop its RX for good.
		 */
		if (r == 0 && h->n && h->n >= n->dev->queues[RXQ].size)
			return -E2BIG;
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

/* The header and the frame, one run of bytes, spread over the held chains in order. */
static void rx_deliver(struct net_dev *n)
{
	struct net_rx_held *h = held_of(n);
	size_t total = NET_HDR_BYTES + n->rx_len, off = 0;

	n->rx_buf[NET_HDR_NUM_BUFFERS] = (uint8_t)h->n;
	n->rx_buf[NET_HDR_NUM_BUFFERS + 1] = (uint8_t)(h->n >> 8);
	for (unsigned i = 0; i < h->n; i++) {
		struct virtq_chain *ch = &h->chains[i];
		size_t part = total - off < ch->write_len ? total - off : ch->write_len;

		if (part)
			iov_scatter(ch->iov, ch->nwrite, 0, n->rx_buf + off, part);
		off += part;
		virtq_push(&n->dev->queues[RXQ], ch->head, (uint32_t)part);
	}
	n->stats.rx_frames++;
	n->stats.rx_bytes += n->rx_len;
	h->n = 0;
	h->room = 0;
	n->rx_pending = false;
}

/*
 * Moves tap frames into the guest while it has buffers; stops polling the
 * tap when it has none. At most NET_RX_TURN_FRAMES frames or
 * NET_RX_TURN_BYTES a turn (as much as TX's budget of 64 chains of 64 KiB
 * frames), so a busy tap cannot hold the main loop; the tap stays polled and
 * the next turn goes on.
 */
static void rx_pump(struct net_dev *n)
{
	uint64_t bytes = 0;
	bool pushed = false;

	for (unsigned budget = NET_RX_TURN_FRAMES; budget && bytes < NET_RX_TURN_BYTES; budget--) {
		int r;

		if (!n->rx_pending) {
			r = rx_read(n);
			if (r == 0)
				break;
			if (r < 0) {
				n->stats.rx_dropped++;
				continue;
			}
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
		bytes += n->rx_len;
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
	offload_sync(n, n->dev);
	if (dev_running(n))
		rx_pump(n);
	else
		set_tap_events(n, false); /* frames wait in the tap until the driver is up */
	pthread_mutex_unlock(&n->dev->lock);
}

static void net_notify(struct virtio_dev *dev, unsigned q)
{
	struct net_dev *n = net_of(dev);

	offload_sync(n, dev);
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
	/* The status is 0 by now: the tap goes back to whole frames. */
	offload_sync(n, dev);
}

/* The tap is new (or reused) and the driver's features are the snapshot's: the tap learns them again. */
static void net_restored(struct virtio_dev *dev)
{
	struct net_dev *n = net_of(dev);

	n->tap_offloads = NET_UNKNOWN_OFFLOADS;
	offload_sync(n, dev);
}

static uint64_t net_offered(const struct virtio_dev *dev)
{
	const struct net_dev *n = net_of(dev);

	return n->vnet_hdr ? ~0ull : ~NET_F_OFFLOADS;
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
	.features = VIRTIO_NET_F_MAC | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_STATUS | NET_F_OFFLOADS,
	.offered = net_offered,
	.config_size = 10,
	.config_read = net_config_read,
	.config_write = net_config_write,
	.queue_notify = net_notify,
	.reset = net_reset,
	.quiesce = net_quiesce,
	.restored = net_restored,
};

int net_dev_init(struct net_dev *n, int tap_fd, const uint8_t mac[6], unsigned flags)
{
	if (flags & ~NET_DEV_VNET_HDR)
		return -EINVAL;
	memset(n, 0, sizeof(*n));
	n->tap_h.fd = -1;
	/* The pending RX frame and the chains it will fill, in one allocation. */
	n->rx_buf = malloc(NET_RX_HELD_OFFSET + sizeof(struct net_rx_held));
	n->tx_buf = malloc(NET_HDR_BYTES + NET_MAX_FRAME);
	if (!n->rx_buf || !n->tx_buf) {
		free(n->rx_buf);
		free(n->tx_buf);
		n->rx_buf = n->tx_buf = NULL;
		return -ENOMEM;
	}
	memset(held_of(n), 0, sizeof(struct net_rx_held));
	memcpy(n->mac, mac, 6);
	n->vnet_hdr = flags & NET_DEV_VNET_HDR;
	n->tap_h.fd = tap_fd;
	n->tap_h.cb = tap_event;
	n->tap_h.opaque = n;
	return 0;
}

int net_dev_start(struct net_dev *n, struct virtio_dev *dev, struct event_loop *loop)
{
	n->dev = dev;
	n->loop = loop;
	/* Registered idle; polled for frames once the driver is ready and has buffers. */
	return event_loop_add(loop, &n->tap_h, 0);
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
	free(n->rx_buf);
	free(n->tx_buf);
	n->rx_buf = n->tx_buf = NULL;
}
