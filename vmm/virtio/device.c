#include "virtio/device.h"

#include <cjson/cJSON.h>
#include <endian.h>
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
	sv_warn_ratelimited(&dev->broken_log,
			    "virtio-%s: guest driver broke the rules (%s); device stopped until reset",
			    dev->ops->name, why);
	dev->status |= VIRTIO_STATUS_NEEDS_RESET;
	dev->raise(dev, VIRTIO_ISR_CONFIG);
}

void virtio_dev_serve_queue(struct virtio_dev *dev, unsigned qi, virtio_chain_handler handle)
{
	struct virtq *q = &dev->queues[qi];
	struct virtq_chain chain;
	unsigned served = 0;
	bool pushed = false;
	int r = 0;

	while (served < VIRTIO_QUEUE_BUDGET && (r = virtq_pop(q, &chain)) > 0) {
		const char *why = NULL;
		uint32_t written = 0;

		served++;
		if (handle(dev, &chain, &written, &why) < 0) {
			virtio_dev_set_broken(dev, why ? why : "malformed request");
			r = 0;
			break;
		}
		if (virtq_push(q, chain.head, written) < 0) {
			r = 0;
			break;
		}
		pushed = true;
	}
	if (r < 0 && r != -EIO)
		virtio_dev_set_broken(dev, strerror(-r));
	/*
	 * Out of budget with the ring maybe not empty: the driver will not kick
	 * again for chains it already made available, so come back ourselves.
	 */
	if (served == VIRTIO_QUEUE_BUDGET && r > 0 && !(dev->status & VIRTIO_STATUS_NEEDS_RESET) &&
	    dev->requeue)
		dev->requeue(dev, qi);
	if (pushed)
		virtio_dev_notify_used(dev, qi);
}

void virtio_dev_queue_status(const struct virtio_dev *dev, unsigned qi, cJSON *out)
{
	const struct virtq *q = &dev->queues[qi];

	cJSON_AddNumberToObject(out, "size", q->size);
	cJSON_AddBoolToObject(out, "ready", q->ready);
	cJSON_AddBoolToObject(out, "broken", q->broken);
	cJSON_AddBoolToObject(out, "event_idx", q->event_idx);
	cJSON_AddNumberToObject(out, "last_avail_idx", q->last_avail_idx);
	cJSON_AddNumberToObject(out, "used_idx", q->used_idx);
	cJSON_AddNumberToObject(out, "signalled_used", q->signalled_used);
	if (!q->ready)
		return;
	/* The guest's side, read once each: diagnostics only, nothing is decided on them. */
	cJSON_AddNumberToObject(out, "guest_avail_idx",
				le16toh(__atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE)));
	cJSON_AddNumberToObject(out, "guest_avail_flags",
				le16toh(__atomic_load_n(&q->avail->flags, __ATOMIC_RELAXED)));
	if (q->event_idx) {
		cJSON_AddNumberToObject(out, "used_event",
					le16toh(__atomic_load_n(virtq_used_event(q), __ATOMIC_RELAXED)));
		cJSON_AddNumberToObject(out, "avail_event",
					le16toh(__atomic_load_n(virtq_avail_event(q), __ATOMIC_RELAXED)));
	}
}
