#include "virtio/mmio.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bus.h"
#include "log.h"
#include "parse.h"
#include "snapshot/format.h"

enum {
	REG_MAGIC = 0x000,
	REG_VERSION = 0x004,
	REG_DEVICE_ID = 0x008,
	REG_VENDOR_ID = 0x00c,
	REG_DEVICE_FEATURES = 0x010,
	REG_DEVICE_FEATURES_SEL = 0x014,
	REG_DRIVER_FEATURES = 0x020,
	REG_DRIVER_FEATURES_SEL = 0x024,
	REG_QUEUE_SEL = 0x030,
	REG_QUEUE_NUM_MAX = 0x034,
	REG_QUEUE_NUM = 0x038,
	REG_QUEUE_READY = 0x044,
	REG_QUEUE_NOTIFY = 0x050,
	REG_INTERRUPT_STATUS = 0x060,
	REG_INTERRUPT_ACK = 0x064,
	REG_STATUS = 0x070,
	REG_QUEUE_DESC_LOW = 0x080,
	REG_QUEUE_DESC_HIGH = 0x084,
	REG_QUEUE_DRIVER_LOW = 0x090,
	REG_QUEUE_DRIVER_HIGH = 0x094,
	REG_QUEUE_DEVICE_LOW = 0x0a0,
	REG_QUEUE_DEVICE_HIGH = 0x0a4,
	REG_CONFIG_GENERATION = 0x0fc,
	REG_CONFIG = 0x100,

	MMIO_MAGIC = 0x74726976, /* "virt" */
	MMIO_VERSION = 2,
	MMIO_VENDOR = 0x4d565353, /* "SSVM" */
};

uint64_t virtio_mmio_offered_features(const struct virtio_dev *dev)
{
	uint64_t own = dev->ops->offered ? dev->ops->offered(dev) & dev->ops->features : dev->ops->features;

	return own | VIRTIO_F_VERSION_1 | VIRTQ_F_RING_EVENT_IDX |
	       VIRTQ_F_INDIRECT_DESC;
}

static void signal_eventfd(int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) < 0) {
		/* An eventfd write fails only on counter overflow; it is readable anyway. */
	}
}

static void raise_irq(struct virtio_dev *dev, uint32_t isr_bits)
{
	struct virtio_mmio *m = dev->transport;

	dev->isr |= isr_bits;
	signal_eventfd(m->irq_fd);
}

/* Wakes the main loop's handler of queue q, as an ioeventfd would. */
static void kick_queue(struct virtio_mmio *m, unsigned q)
{
	if (q < m->dev.ops->num_queues)
		signal_eventfd(m->notify[q].h.fd);
}

static void requeue(struct virtio_dev *dev, unsigned q)
{
	kick_queue(dev->transport, q);
}

static void reset_locked(struct virtio_mmio *m)
{
	struct virtio_dev *dev = &m->dev;

	for (unsigned i = 0; i < dev->ops->num_queues; i++)
		virtq_reset(&dev->queues[i]);
	memset(m->qcfg, 0, sizeof(m->qcfg));
	dev->driver_features = 0;
	dev->status = 0;
	dev->isr = 0;
	m->device_features_sel = m->driver_features_sel = m->queue_sel = 0;
	if (dev->ops->reset)
		dev->ops->reset(dev);
}

static bool active(const struct virtio_dev *dev)
{
	return (dev->status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(dev->status & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED));
}

static void notify_locked(struct virtio_mmio *m, unsigned q)
{
	struct virtio_dev *dev = &m->dev;

	if (q >= dev->ops->num_queues || !active(dev) || !dev->queues[q].ready)
		return;
	dev->ops->queue_notify(dev, q);
}

/* A QueueNotify write that KVM did not turn into an ioeventfd signal. */
static void notify_from_guest(struct virtio_mmio *m, unsigned q)
{
	if (!m->loop) {
		notify_locked(m, q);
		return;
	}
	/* On a vCPU thread: the model runs on the main loop only. */
	kick_queue(m, q);
}

/*
 * Status = 0 from the guest. With a loop attached the reset runs there, on
 * the main thread, and this vCPU waits (dev.lock released meanwhile) until
 * it is done or the loop has stopped.
 */
static void reset_from_guest(struct virtio_mmio *m)
{
	if (!m->loop) {
		reset_locked(m);
		return;
	}
	if (m->loop_stopped)
		return;
	m->reset_pending = true;
	signal_eventfd(m->reset_h.fd);
	while (m->reset_pending && !m->loop_stopped)
		pthread_cond_wait(&m->reset_done, &m->dev.lock);
}

static uint32_t read_reg(struct virtio_mmio *m, uint64_t off)
{
	struct virtio_dev *dev = &m->dev;
	unsigned sel = m->queue_sel;

	switch (off) {
	case REG_MAGIC:
		return MMIO_MAGIC;
	case REG_VERSION:
		return MMIO_VERSION;
	case REG_DEVICE_ID:
		return dev->ops->device_id;
	case REG_VENDOR_ID:
		return MMIO_VENDOR;
	case REG_DEVICE_FEATURES:
		if (m->device_features_sel > 1)
			return 0;
		return (uint32_t)(virtio_mmio_offered_features(dev) >>
				  (32 * m->device_features_sel));
	case REG_QUEUE_NUM_MAX:
		return sel < dev->ops->num_queues ? dev->ops->queue_max : 0;
	case REG_QUEUE_READY:
		return sel < dev->ops->num_queues && dev->queues[sel].ready;
	case REG_INTERRUPT_STATUS:
		return dev->isr;
	case REG_STATUS:
		return dev->status;
	case REG_CONFIG_GENERATION:
		return dev->config_generation;
	default:
		return 0;
	}
}

static void set_queue_ready(struct virtio_mmio *m, unsigned sel, uint32_t value)
{
	struct virtio_dev *dev = &m->dev;
	int r;

	if (sel >= dev->ops->num_queues)
		return;
	if (!value) {
		virtq_reset(&dev->queues[sel]);
		return;
	}
	r = virtq_configure(&dev->queues[sel], m->qcfg[sel].num, m->qcfg[sel].desc,
			    m->qcfg[sel].avail, m->qcfg[sel].used, dev->driver_features);
	if (r < 0)
		virtio_dev_set_broken(dev, "queue set up outside guest RAM or with a bad size");
}

static void set_status(struct virtio_mmio *m, uint32_t value)
{
	struct virtio_dev *dev = &m->dev;
	uint64_t offered = virtio_mmio_offered_features(dev);

	if (value == 0) {
		reset_from_guest(m);
		return;
	}
	/* FEATURES_OK sticks only for a subset of what was offered, VERSION_1 included. */
	if ((value & VIRTIO_STATUS_FEATURES_OK) && !(dev->status & VIRTIO_STATUS_FEATURES_OK) &&
	    ((dev->driver_features & ~offered) || !(dev->driver_features & VIRTIO_F_VERSION_1)))
		value &= ~VIRTIO_STATUS_FEATURES_OK;
	dev->status = value | (dev->status & VIRTIO_STATUS_NEEDS_RESET);
}

static void set_addr_half(uint64_t *field, uint32_t value, int high)
{
	if (high)
		*field = (*field & 0xffffffffull) | ((uint64_t)value << 32);
	else
		*field = (*field & ~0xffffffffull) | value;
}

static void write_reg(struct virtio_mmio *m, uint64_t off, uint32_t value)
{
	struct virtio_dev *dev = &m->dev;
	unsigned sel = m->queue_sel;
	bool qok = sel < dev->ops->num_queues && !dev->queues[sel].ready;
	bool negotiating = (dev->status & VIRTIO_STATUS_DRIVER) &&
			   !(dev->status & VIRTIO_STATUS_FEATURES_OK);

	switch (off) {
	case REG_DEVICE_FEATURES_SEL:
		m->device_features_sel = value;
		break;
	case REG_DRIVER_FEATURES:
		if (negotiating && m->driver_features_sel <= 1)
			set_addr_half(&dev->driver_features, value, (int)m->driver_features_sel);
		break;
	case REG_DRIVER_FEATURES_SEL:
		m->driver_features_sel = value;
		break;
	case REG_QUEUE_SEL:
		m->queue_sel = value;
		break;
	case REG_QUEUE_NUM:
		if (qok)
			m->qcfg[sel].num = value;
		break;
	case REG_QUEUE_READY:
		set_queue_ready(m, sel, value);
		break;
	case REG_QUEUE_NOTIFY:
		notify_from_guest(m, value);
		break;
	case REG_INTERRUPT_ACK:
		dev->isr &= ~value;
		break;
	case REG_STATUS:
		set_status(m, value);
		break;
	case REG_QUEUE_DESC_LOW:
	case REG_QUEUE_DESC_HIGH:
		if (qok)
			set_addr_half(&m->qcfg[sel].desc, value, off == REG_QUEUE_DESC_HIGH);
		break;
	case REG_QUEUE_DRIVER_LOW:
	case REG_QUEUE_DRIVER_HIGH:
		if (qok)
			set_addr_half(&m->qcfg[sel].avail, value, off == REG_QUEUE_DRIVER_HIGH);
		break;
	case REG_QUEUE_DEVICE_LOW:
	case REG_QUEUE_DEVICE_HIGH:
		if (qok)
			set_addr_half(&m->qcfg[sel].used, value, off == REG_QUEUE_DEVICE_HIGH);
		break;
	default:
		break;
	}
}

static void mmio_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len)
{
	struct virtio_mmio *m = opaque;
	struct virtio_dev *dev = &m->dev;
	uint32_t v;

	memset(data, 0, len);
	pthread_mutex_lock(&dev->lock);
	if (off >= REG_CONFIG) {
		uint64_t coff = off - REG_CONFIG;

		if (dev->ops->config_read && coff <= dev->ops->config_size &&
		    len <= dev->ops->config_size - coff)
			dev->ops->config_read(dev, (uint32_t)coff, data, len);
	} else if (len == 4 && (off & 3) == 0) {
		v = read_reg(m, off);
		memcpy(data, &v, 4);
	}
	pthread_mutex_unlock(&dev->lock);
}

static void mmio_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
	struct virtio_mmio *m = opaque;
	struct virtio_dev *dev = &m->dev;
	uint32_t v;

	pthread_mutex_lock(&dev->lock);
	if (off >= REG_CONFIG) {
		uint64_t coff = off - REG_CONFIG;

		if (dev->ops->config_write && coff <= dev->ops->config_size &&
		    len <= dev->ops->config_size - coff)
			dev->ops->config_write(dev, (uint32_t)coff, data, len);
	} else if (len == 4 && (off & 3) == 0) {
		memcpy(&v, data, 4);
		write_reg(m, off, v);
	}
	pthread_mutex_unlock(&dev->lock);
}

const struct bus_ops virtio_mmio_bus_ops = { .read = mmio_read, .write = mmio_write };

static void close_fds(struct virtio_mmio *m)
{
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		if (m->notify[q].h.fd >= 0)
			close(m->notify[q].h.fd);
		m->notify[q].h.fd = -1;
	}
	if (m->reset_h.fd >= 0)
		close(m->reset_h.fd);
	m->reset_h.fd = -1;
	if (m->irq_fd >= 0)
		close(m->irq_fd);
	m->irq_fd = -1;
}

int virtio_mmio_init(struct virtio_mmio *m, const struct virtio_dev_ops *ops, void *model,
		     const struct guest_mem *mem, int vm_fd, uint64_t base, uint32_t gsi)
{
	struct kvm_irqfd irqfd = { .gsi = gsi };
	int r;

	memset(m, 0, sizeof(*m));
	m->irq_fd = -1;
	m->reset_h.fd = -1;
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
		m->notify[i].h.fd = -1;
	if (ops->num_queues == 0 || ops->num_queues > VIRTIO_MAX_QUEUES)
		return -EINVAL;
	r = pthread_mutex_init(&m->dev.lock, NULL);
	if (r)
		return -r;
	r = pthread_cond_init(&m->reset_done, NULL);
	if (r) {
		pthread_mutex_destroy(&m->dev.lock);
		return -r;
	}
	r = sv_ratelimit_init(&m->dev.broken_log, "virtio: guest driver broke the rules",
			      SV_RATELIMIT_BURST, SV_RATELIMIT_INTERVAL_NS);
	if (r < 0) {
		pthread_cond_destroy(&m->reset_done);
		pthread_mutex_destroy(&m->dev.lock);
		return r;
	}
	m->dev.ops = ops;
	m->dev.model = model;
	m->dev.raise = raise_irq;
	m->dev.requeue = requeue;
	m->dev.transport = m;
	m->base = base;
	m->gsi = gsi;
	m->vm_fd = vm_fd;
	for (unsigned i = 0; i < ops->num_queues; i++) {
		r = virtq_init(&m->dev.queues[i], mem, ops->queue_max);
		if (r < 0)
			goto fail;
		m->notify[i].h.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (m->notify[i].h.fd < 0) {
			r = -errno;
			goto fail;
		}
	}
	m->reset_h.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->reset_h.fd < 0) {
		r = -errno;
		goto fail;
	}
	m->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->irq_fd < 0) {
		r = -errno;
		goto fail;
	}
	irqfd.fd = (uint32_t)m->irq_fd;
	/* Without a VM (unit tests) the eventfd alone shows what would be raised. */
	if (vm_fd >= 0 && ioctl(vm_fd, KVM_IRQFD, &irqfd) < 0) {
		r = -errno;
		goto fail;
	}
	return 0;
fail:
	close_fds(m);
	sv_ratelimit_destroy(&m->dev.broken_log);
	pthread_cond_destroy(&m->reset_done);
	pthread_mutex_destroy(&m->dev.lock);
	return r;
}

static void on_notify(struct event_handler *h, uint32_t events)
{
	struct virtio_mmio_notify *n = h->opaque;
	struct virtio_mmio *m = n->m;
	uint64_t count;

	(void)events;
	if (read(h->fd, &count, sizeof(count)) < 0)
		return;
	pthread_mutex_lock(&m->dev.lock);
	notify_locked(m, n->queue);
	pthread_mutex_unlock(&m->dev.lock);
}

static int add_ioeventfd(struct virtio_mmio *m, unsigned q, int fd, uint32_t flags)
{
	struct kvm_ioeventfd io = {
		.datamatch = q,
		.addr = m->base + REG_QUEUE_NOTIFY,
		.len = 4,
		.fd = fd,
		.flags = KVM_IOEVENTFD_FLAG_DATAMATCH | flags,
	};

	return ioctl(m->vm_fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

static void on_reset(struct event_handler *h, uint32_t events)
{
	struct virtio_mmio *m = h->opaque;
	uint64_t count;

	(void)events;
	if (read(h->fd, &count, sizeof(count)) < 0)
		return;
	pthread_mutex_lock(&m->dev.lock);
	if (m->reset_pending) {
		reset_locked(m);
		m->reset_pending = false;
		pthread_cond_broadcast(&m->reset_done);
	}
	pthread_mutex_unlock(&m->dev.lock);
}

static void detach(struct virtio_mmio *m)
{
	for (unsigned q = 0; q < m->dev.ops->num_queues; q++) {
		struct virtio_mmio_notify *n = &m->notify[q];

		if (n->h.fd < 0)
			continue;
		if (m->loop)
			event_loop_del(m->loop, &n->h);
		/* One KVM never took (or never was asked to take) fails harmlessly. */
		if (m->vm_fd >= 0)
			add_ioeventfd(m, q, n->h.fd, KVM_IOEVENTFD_FLAG_DEASSIGN);
	}
	if (m->loop && m->reset_h.fd >= 0)
		event_loop_del(m->loop, &m->reset_h);
	m->loop = NULL;
}

int virtio_mmio_attach(struct virtio_mmio *m, struct event_loop *loop)
{
	unsigned q;

	m->loop = loop;
	m->reset_h.cb = on_reset;
	m->reset_h.opaque = m;
	if (event_loop_add(loop, &m->reset_h, EPOLLIN) < 0)
		goto fail;
	for (q = 0; q < m->dev.ops->num_queues; q++) {
		struct virtio_mmio_notify *n = &m->notify[q];

		n->h.cb = on_notify;
		n->h.opaque = n;
		n->m = m;
		n->queue = q;
		if (event_loop_add(loop, &n->h, EPOLLIN) < 0)
			goto fail;
		if (m->vm_fd < 0)
			continue;
		if (add_ioeventfd(m, q, n->h.fd, 0) < 0)
			/* Without it, QueueNotify writes arrive as MMIO exits and are forwarded. */
			sv_debug("virtio-%s: no ioeventfd for queue %u; using MMIO exits",
				 m->dev.ops->name, q);
	}
	return 0;
fail:
	/* Handlers not yet added fail their removal harmlessly. */
	detach(m);
	return -EIO;
}

void virtio_mmio_stop(struct virtio_mmio *m)
{
	if (!m->dev.ops)
		return;
	pthread_mutex_lock(&m->dev.lock);
	m->loop_stopped = true;
	pthread_cond_broadcast(&m->reset_done);
	pthread_mutex_unlock(&m->dev.lock);
}

void virtio_mmio_destroy(struct virtio_mmio *m)
{
	if (!m->dev.ops)
		return;
	detach(m);
	close_fds(m);
	sv_ratelimit_destroy(&m->dev.broken_log);
	pthread_cond_destroy(&m->reset_done);
	pthread_mutex_destroy(&m->dev.lock);
	m->dev.ops = NULL;
}

int virtio_mmio_notify_fd(const struct virtio_mmio *m, unsigned q)
{
	return q < VIRTIO_MAX_QUEUES ? m->notify[q].h.fd : -1;
}

int virtio_mmio_cmdline(const struct virtio_mmio *m, char *buf, size_t len)
{
	int n = snprintf(buf, len, "virtio_mmio.device=4K@0x%llx:%u",
			 (unsigned long long)m->base, m->gsi);

	return n < 0 || (size_t)n >= len ? -E2BIG : 0;
}

void virtio_mmio_save(struct virtio_mmio *m, struct snap_virtio *out)
{
	struct virtio_dev *dev = &m->dev;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&dev->lock);
	if (dev->ops->quiesce)
		dev->ops->quiesce(dev);
	out->device_id = dev->ops->device_id;
	out->status = dev->status;
	out->driver_features = dev->driver_features;
	out->isr = dev->isr;
	out->config_generation = dev->config_generation;
	out->device_features_sel = m->device_features_sel;
	out->driver_features_sel = m->driver_features_sel;
	out->queue_sel = m->queue_sel;
	out->nqueues = dev->ops->num_queues;
	for (unsigned q = 0; q < dev->ops->num_queues && q < SNAP_MAX_QUEUES; q++) {
		const struct virtq *vq = &dev->queues[q];
		struct snap_virtq *s = &out->q[q];

		/* The registers as the driver wrote them, whether or not the queue is ready. */
		s->num = vq->ready ? vq->size : m->qcfg[q].num;
		s->desc = vq->ready ? vq->desc_gpa : m->qcfg[q].desc;
		s->avail = vq->ready ? vq->avail_gpa : m->qcfg[q].avail;
		s->used = vq->ready ? vq->used_gpa : m->qcfg[q].used;
		s->ready = vq->ready && !vq->broken;
		s->last_avail_idx = vq->last_avail_idx;
		s->used_idx = vq->used_idx;
		s->signalled_used = vq->signalled_used;
	}
	pthread_mutex_unlock(&dev->lock);
}

int virtio_mmio_restore(struct virtio_mmio *m, const struct snap_virtio *in, char *err, size_t errlen)
{
	struct virtio_dev *dev = &m->dev;
	int r = 0;

	if (in->device_id != dev->ops->device_id || in->nqueues != dev->ops->num_queues)
		return sv_errf(-EINVAL, err, errlen, "snapshot: virtio slot at 0x%llx holds device %u with %u queues, "
			       "this VM has virtio-%s (%u, %u queues)", (unsigned long long)m->base, in->device_id,
			       in->nqueues, dev->ops->name, dev->ops->device_id, dev->ops->num_queues);
	if (in->driver_features & ~virtio_mmio_offered_features(dev))
		return sv_errf(-EINVAL, err, errlen, "snapshot: virtio-%s: features 0x%llx were never offered",
			       dev->ops->name, (unsigned long long)in->driver_features);
	pthread_mutex_lock(&dev->lock);
	dev->status = in->status;
	dev->driver_features = in->driver_features;
	dev->isr = in->isr;
	dev->config_generation = in->config_generation;
	m->device_features_sel = in->device_features_sel;
	m->driver_features_sel = in->driver_features_sel;
	m->queue_sel = in->queue_sel;
	for (unsigned q = 0; r == 0 && q < dev->ops->num_queues; q++) {
		const struct snap_virtq *s = &in->q[q];
		struct virtq *vq = &dev->queues[q];

		m->qcfg[q].num = s->num;
		m->qcfg[q].desc = s->desc;
		m->qcfg[q].avail = s->avail;
		m->qcfg[q].used = s->used;
		if (!s->ready)
			continue;
		if (virtq_configure(vq, s->num, s->desc, s->avail, s->used, in->driver_features) < 0) {
			r = sv_errf(-EINVAL, err, errlen, "snapshot: virtio-%s queue %u: size %u or rings outside guest RAM",
				    dev->ops->name, q, s->num);
			break;
		}
		vq->last_avail_idx = s->last_avail_idx;
		vq->used_idx = s->used_idx;
		vq->signalled_used = s->signalled_used;
	}
	if (r == 0 && dev->ops->restored)
		dev->ops->restored(dev);
	pthread_mutex_unlock(&dev->lock);
	return r;
}

void virtio_mmio_kick_all(struct virtio_mmio *m)
{
	pthread_mutex_lock(&m->dev.lock);
	for (unsigned q = 0; q < m->dev.ops->num_queues; q++)
		if (m->dev.queues[q].ready)
			kick_queue(m, q);
	pthread_mutex_unlock(&m->dev.lock);
}
