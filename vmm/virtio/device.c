#include "virtio/device.h"

#include <errno.h>
#include <string.h>

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

void virtio_dev_serve_queue(struct virtio_dev *dev, unsigned qi, virtio_chain_handler handle)
{
	struct virtq *q = &dev->queues[qi];
	struct virtq_chain chain;
	bool pushed = false;
	int r;

	while ((r = virtq_pop(q, &chain)) > 0) {
		const char *why = NULL;
		uint32_t written = 0;

		if (handle(dev, &chain, &written, &why) < 0) {
			virtio_dev_set_broken(dev, why ? why : "malformed request");
			break;
		}
		if (virtq_push(q, chain.head, written) < 0)
			break;
		pushed = true;
	}
	if (r < 0 && r != -EIO)
		virtio_dev_set_broken(dev, strerror(-r));
	if (pushed)
		virtio_dev_notify_used(dev, qi);
}
