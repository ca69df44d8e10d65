#ifndef SANDVM_VMM_VIRTIO_DEVICE_H
#define SANDVM_VMM_VIRTIO_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "virtio/queue.h"

/*
 * The transport-independent half of a virtio device. A device model fills a
 * const virtio_dev_ops table and works on its queues; the transport (MMIO
 * today) owns the registers, feature negotiation, notifications and
 * interrupts, and calls the model through the table. Models never see the
 * transport: they report used buffers with virtio_dev_notify_used().
 */

#define VIRTIO_MAX_QUEUES 8u

/*
 * Chains one queue serves per turn of the main loop. A guest that keeps a
 * ring fed from another vCPU would otherwise hold the main thread for as long
 * as it likes; past the budget the queue asks the transport for another turn
 * (dev->requeue), and the loop serves the control socket, signals, timers and
 * the other devices first.
 */
#define VIRTIO_QUEUE_BUDGET 64u

#define VIRTIO_F_VERSION_1 (1ull << 32)

#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_NEEDS_RESET 0x40u
#define VIRTIO_STATUS_FAILED 0x80u

#define VIRTIO_ISR_QUEUE 1u
#define VIRTIO_ISR_CONFIG 2u

enum virtio_device_id {
	VIRTIO_ID_NET = 1,
	VIRTIO_ID_BLOCK = 2,
	VIRTIO_ID_RNG = 4,
	VIRTIO_ID_VSOCK = 19,
};

struct virtio_dev;

struct virtio_dev_ops {
	const char *name;
	uint32_t device_id;
	unsigned num_queues;
	unsigned queue_max;
	uint64_t features;   /* device-specific; the transport adds VERSION_1 etc. */
	/*
	 * The device-specific features this instance offers, where they depend
	 * on its host side (a net device's tap without vnet headers offers no
	 * offloads); a subset of `features`. NULL: all of `features`.
	 */
	uint64_t (*offered)(const struct virtio_dev *dev);
	uint32_t config_size;
	/* Config space access; offset + len <= config_size is checked by the transport. */
	void (*config_read)(struct virtio_dev *dev, uint32_t offset, uint8_t *data, uint32_t len);
	void (*config_write)(struct virtio_dev *dev, uint32_t offset, const uint8_t *data,
			     uint32_t len);
	/* The driver made buffers available on queue q (main thread, dev->lock held). */
	void (*queue_notify)(struct virtio_dev *dev, unsigned q);
	/* The driver reset the device (dev->lock held). */
	void (*reset)(struct virtio_dev *dev);
	/*
	 * Before a snapshot (VM paused, dev->lock held): gives back the chains
	 * the model popped but has not used, by moving the queue's
	 * last_avail_idx back (virtq_unpop), so the saved rings lose no buffer.
	 * The model may take them again later. NULL: it never holds one.
	 */
	void (*quiesce)(struct virtio_dev *dev);
	/*
	 * After a restore (main thread, before any vCPU runs, dev->lock held):
	 * the model's host side is new while the guest's driver state is the
	 * snapshot's (vsock tells the guest its connections are gone). NULL:
	 * nothing to do.
	 */
	void (*restored)(struct virtio_dev *dev);
};

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	void *model;
	pthread_mutex_t lock;
	struct virtq queues[VIRTIO_MAX_QUEUES];
	uint64_t driver_features;
	uint32_t status;
	uint32_t isr;
	uint32_t config_generation;
	/* Set by the transport: raise the device's interrupt for these ISR bits. */
	void (*raise)(struct virtio_dev *dev, uint32_t isr_bits);
	/*
	 * Set by the transport: call queue_notify(q) again on a later turn of
	 * the main loop, after what is already waiting there (a queue that ran
	 * out of budget). Called with dev->lock held; never calls back at once.
	 */
	void (*requeue)(struct virtio_dev *dev, unsigned q);
	void *transport;
	/* "broke the rules": a guest can break, reset and break again at will. */
	struct sv_ratelimit broken_log;
};

struct cJSON;

/*
 * Adds queue q's state to out (for the control socket's diagnostics): its
 * size and flags, the device's indices, and the indices and event fields as
 * the guest's ring memory holds them now. Called with dev->lock held.
 */
void virtio_dev_queue_status(const struct virtio_dev *dev, unsigned q, struct cJSON *out);

/* After pushing used buffers on q: interrupts the driver if it wants one. */
void virtio_dev_notify_used(struct virtio_dev *dev, unsigned q);

/*
 * Serves the chains available on queue q, at most VIRTIO_QUEUE_BUDGET of
 * them: handle() does the work and says how many bytes it wrote into the
 * chain, and the chain goes back to the driver; one interrupt follows if the
 * driver wants it. With chains left after the budget, the queue is requeued
 * (dev->requeue). A chain that breaks the rules (in the
 * queue, or handle() returning < 0 with `why`) stops the device. Called with
 * dev->lock held.
 */
typedef int (*virtio_chain_handler)(struct virtio_dev *dev, struct virtq_chain *chain,
				    uint32_t *written, const char **why);
void virtio_dev_serve_queue(struct virtio_dev *dev, unsigned q, virtio_chain_handler handle);

/*
 * The guest broke the virtio rules on this device: it stops processing
 * (DEVICE_NEEDS_RESET) until the driver resets it; the VMM goes on.
 */
void virtio_dev_set_broken(struct virtio_dev *dev, const char *why);

#endif
