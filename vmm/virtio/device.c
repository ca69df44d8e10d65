#include "virtio/device.h"

#include "log.h"

void virtio_dev_notify_used(struct virtio_dev *dev, unsigned q)
{
	if (q < dev->ops->num_queues && virtq_should_notify(&dev->queues[q]))
		dev->raise(dev, VIRTIO_ISR_QUEUE);
}

void virtio_dev_set_broken(struct virtio_dev *dev, const char *why)
{
	if (dev->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	sv_warn("virtio-%s: guest driver broke the rules (%s); device stopped until reset",
		dev->ops->name, why);
	dev->status |= VIRTIO_STATUS_NEEDS_RESET;
	dev->raise(dev, VIRTIO_ISR_CONFIG);
}
