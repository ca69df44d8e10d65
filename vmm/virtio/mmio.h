#ifndef SANDVM_VMM_VIRTIO_MMIO_H
#define SANDVM_VMM_VIRTIO_MMIO_H

#include <stddef.h>
#include <stdint.h>

#include "event_loop.h"
#include "virtio/device.h"

/*
 * The virtio-mmio transport (version 2, virtio 1.x only). Queue notifications
 * arrive through ioeventfds on the main thread's event loop (falling back to
 * MMIO exits where KVM refuses one), interrupts leave through an irqfd, so the
 * data path never stops a vCPU in user space.
 */

#define VIRTIO_MMIO_SIZE 0x1000u

struct virtio_mmio;

struct virtio_mmio_notify {
	struct event_handler h;
	struct virtio_mmio *m;
	unsigned queue;
};

struct virtio_mmio {
	struct virtio_dev dev;
	uint64_t base;
	uint32_t gsi;
	int vm_fd;
	int irq_fd;
	struct event_loop *loop;
	uint32_t device_features_sel;
	uint32_t driver_features_sel;
	uint32_t queue_sel;
	struct {
		uint32_t num;
		uint64_t desc, avail, used;
	} qcfg[VIRTIO_MAX_QUEUES];
	struct virtio_mmio_notify notify[VIRTIO_MAX_QUEUES];
};

/*
 * Creates the transport for one device model; registers its irqfd with KVM
 * (vm_fd < 0: no VM, as in unit tests; the interrupt eventfd is still written).
 */
int virtio_mmio_init(struct virtio_mmio *m, const struct virtio_dev_ops *ops, void *model,
		     const struct guest_mem *mem, int vm_fd, uint64_t base, uint32_t gsi);
/* Registers the queue-notify ioeventfds and their handlers. */
int virtio_mmio_attach(struct virtio_mmio *m, struct event_loop *loop);
void virtio_mmio_destroy(struct virtio_mmio *m);

/* The kernel parameter announcing the device: virtio_mmio.device=4K@BASE:IRQ */
int virtio_mmio_cmdline(const struct virtio_mmio *m, char *buf, size_t len);

/* All features offered for a model: its own plus the transport's. */
uint64_t virtio_mmio_offered_features(const struct virtio_dev_ops *ops);

struct bus_ops;
extern const struct bus_ops virtio_mmio_bus_ops;

#endif
