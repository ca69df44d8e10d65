#ifndef SANDVM_VMM_VIRTIO_NET_H
#define SANDVM_VMM_VIRTIO_NET_H

/*
 * virtio-net (modern, mergeable RX buffers, no offloads) on a tap device.
 * Every frame the guest sends passes the egress filter before it reaches
 * the tap; frames from the tap go to the guest as they are. The device never
 * asks the guest for checksum or segmentation help it does not handle: with
 * no offload features negotiated, every frame is complete and checksummed.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event_loop.h"
#include "virtio/queue.h"

/* A frame as large as the guest may send without TSO: MTU 1500 + Ethernet header, and jumbo headroom. */
#define NET_MAX_FRAME 65550u

struct virtio_dev;

/* The decision on one guest frame: true lets it out. Called on the main thread with the device lock held. */
typedef bool (*net_egress_fn)(void *ctx, const uint8_t *frame, size_t len);

struct net_stats {
	uint64_t tx_frames, tx_bytes, tx_dropped, rx_frames, rx_bytes, rx_dropped;
};

struct net_dev {
	struct virtio_dev *dev;
	struct event_loop *loop;
	struct event_handler tap_h;
	bool tap_polled;
	uint8_t mac[6];
	net_egress_fn egress;
	void *egress_ctx;
	struct net_stats stats;
	/* A frame read from the tap that waits for RX buffers. */
	uint8_t *rx_frame;
	size_t rx_len;
	bool rx_pending;
	uint8_t *tx_frame;
};

/* Takes tap_fd (non-blocking, IFF_TAP | IFF_NO_PI). */
int net_dev_init(struct net_dev *n, int tap_fd, const uint8_t mac[6]);
int net_dev_start(struct net_dev *n, struct virtio_dev *dev, struct event_loop *loop);
void net_dev_set_egress(struct net_dev *n, net_egress_fn fn, void *ctx);
void net_dev_destroy(struct net_dev *n);

extern const struct virtio_dev_ops virtio_net_ops;

#endif
