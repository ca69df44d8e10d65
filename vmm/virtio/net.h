#ifndef SANDVM_VMM_VIRTIO_NET_H
#define SANDVM_VMM_VIRTIO_NET_H

/*
 * virtio-net (modern, mergeable RX buffers) on a tap device. Every frame the
 * guest sends passes the egress filter, its virtio-net header included,
 * before it reaches the tap; frames from the tap go to the guest as they
 * are. On a tap with vnet headers the device offers checksum offload and
 * TCP segmentation both ways (CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6,
 * HOST_ECN, GUEST_ECN): the guest may send TCP frames of up to 64 KiB with
 * the checksum left to the host, which the filter judges once by their
 * headers, and the tap is told (TUNSETOFFLOAD) to hand over only what the
 * driver acknowledged. On a tap without them nothing is offered, and every
 * frame either way is complete and checksummed.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event_loop.h"
#include "virtio/queue.h"

/* The largest frame either way: a 64 KiB GSO packet and its Ethernet header (IPv4 64 KiB - 1 + 14, with room). */
#define NET_MAX_FRAME 65550u

struct virtio_dev;
struct net_vnet_hdr;

/*
 * The decision on one guest frame and the virtio-net header in front of it
 * (in), given the offloads the driver may use (NET_TX_* of net/frame.h):
 * true lets it out with the header *out (all zero for a plain frame).
 * Called on the main thread with the device lock held.
 */
typedef bool (*net_egress_fn)(void *ctx, const uint8_t *frame, size_t len, const struct net_vnet_hdr *in,
			      unsigned offloads, struct net_vnet_hdr *out);

/*
 * Frames and bytes, each frame counted once: a GSO frame is one frame
 * however many segments it becomes. *_gso: the frames among them that
 * carried a segmentation request; *_csum: those that left a checksum to the
 * other side.
 */
struct net_stats {
	uint64_t tx_frames, tx_bytes, tx_dropped, rx_frames, rx_bytes, rx_dropped;
	uint64_t tx_gso, tx_csum, rx_gso, rx_csum;
};

struct net_dev {
	struct virtio_dev *dev;
	struct event_loop *loop;
	struct event_handler tap_h;
	bool tap_polled;
	bool vnet_hdr;         /* the tap carries 12-byte virtio-net headers: offloads offered */
	unsigned tap_offloads; /* TUN_F_* last set on the tap */
	bool offload_warned;
	uint8_t mac[6];
	net_egress_fn egress;
	void *egress_ctx;
	struct net_stats stats;
	/* A frame read from the tap that waits for RX buffers: its virtio-net header, then rx_len bytes. */
	uint8_t *rx_buf;
	size_t rx_len;
	bool rx_pending;
	uint8_t *tx_buf;
};

/* Flags of net_dev_init. */
#define NET_DEV_VNET_HDR 1u /* tap_fd reads and writes a 12-byte virtio-net header before each frame */

/* Takes tap_fd (non-blocking, IFF_TAP | IFF_NO_PI, and IFF_VNET_HDR with NET_DEV_VNET_HDR). */
int net_dev_init(struct net_dev *n, int tap_fd, const uint8_t mac[6], unsigned flags);
int net_dev_start(struct net_dev *n, struct virtio_dev *dev, struct event_loop *loop);
void net_dev_set_egress(struct net_dev *n, net_egress_fn fn, void *ctx);
void net_dev_destroy(struct net_dev *n);

extern const struct virtio_dev_ops virtio_net_ops;

#endif
