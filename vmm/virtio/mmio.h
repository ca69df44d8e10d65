#ifndef SANDVM_VMM_VIRTIO_MMIO_H
#define SANDVM_VMM_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event_loop.h"
#include "virtio/device.h"

/*
 * The virtio-mmio transport (version 2, virtio 1.x only). Queue notifications
 * arrive through ioeventfds on the main thread's event loop (falling back to
 * MMIO exits where KVM refuses one), interrupts leave through an irqfd, so the
 * data path never stops a vCPU in user space.
 *
 * Threads: register accesses come from vCPU threads, device work runs on the
 * main thread, both under dev.lock. Once a loop is attached, nothing a vCPU
 * thread does reaches a device model: a QueueNotify that arrives as an MMIO
 * exit writes the queue's notify eventfd, and a reset (Status = 0) is done by
 * the main loop while the writing vCPU waits for it (so the guest still sees
 * the reset complete when its write returns). Device models may therefore
 * touch the event loop and host fds in queue_notify and reset.
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
	/* Reset requests from vCPU threads, done on the main loop (see above). */
	struct event_handler reset_h;
	pthread_cond_t reset_done;
	bool reset_pending;
	bool loop_stopped;      /* the main loop runs no more: nobody waits for it */
};

/*
 * Creates the transport for one device model; registers its irqfd with KVM
 * (vm_fd < 0: no VM, as in unit tests; the interrupt eventfd is still written).
 */
int virtio_mmio_init(struct virtio_mmio *m, const struct virtio_dev_ops *ops, void *model,
		     const struct guest_mem *mem, int vm_fd, uint64_t base, uint32_t gsi);
/*
 * Registers the queue-notify eventfds (as KVM ioeventfds where KVM takes
 * them) and the reset handler on the loop. Before it, the transport runs
 * device work on the calling thread (unit tests, fuzzers).
 */
int virtio_mmio_attach(struct virtio_mmio *m, struct event_loop *loop);
/*
 * The main loop has stopped: vCPU threads waiting for a reset stop waiting,
 * and later resets are left undone. Called before the vCPUs are joined.
 */
void virtio_mmio_stop(struct virtio_mmio *m);
void virtio_mmio_destroy(struct virtio_mmio *m);

struct snap_virtio;

/*
 * Snapshot support (VM paused, no vCPU in KVM_RUN). save: the transport's
 * registers and each queue's addresses and indices, after the model's
 * quiesce. restore: puts them back on a freshly initialised transport; a
 * queue the state marks ready must lie in guest RAM as virtq_configure
 * checks (-EINVAL, with the device id or queue naming the fault), then the
 * model's restored hook runs. virtio_mmio_kick_all: after the vCPUs start,
 * every ready queue is served once, since a guest with EVENT_IDX will not
 * notify again for buffers it already made available.
 */
void virtio_mmio_save(struct virtio_mmio *m, struct snap_virtio *out);
int virtio_mmio_restore(struct virtio_mmio *m, const struct snap_virtio *in, char *err, size_t errlen);
void virtio_mmio_kick_all(struct virtio_mmio *m);

/* Queue q's notify eventfd: readable while the queue waits for service. */
int virtio_mmio_notify_fd(const struct virtio_mmio *m, unsigned q);

/* The kernel parameter announcing the device: virtio_mmio.device=4K@BASE:IRQ */
int virtio_mmio_cmdline(const struct virtio_mmio *m, char *buf, size_t len);

/* All features offered for a model: its own plus the transport's. */
uint64_t virtio_mmio_offered_features(const struct virtio_dev *dev);

struct bus_ops;
extern const struct bus_ops virtio_mmio_bus_ops;

#endif
