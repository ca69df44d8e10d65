#include "virtio/rng.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "virtio/device.h"

/* Bounds the work one notification can make the VMM do. */
#define RNG_MAX_BYTES_PER_CHAIN (64u * 1024u)

static int fill(const struct virtq_chain *chain, uint32_t *written)
{
	uint32_t total = 0;

	for (unsigned i = chain->nread; i < chain->nread + chain->nwrite; i++) {
		uint8_t *p = chain->iov[i].iov_base;
		size_t left = chain->iov[i].iov_len;

		while (left > 0 && total < RNG_MAX_BYTES_PER_CHAIN) {
			size_t want = left < RNG_MAX_BYTES_PER_CHAIN - total
					      ? left
					      : RNG_MAX_BYTES_PER_CHAIN - total;
			ssize_t n = getrandom(p, want, 0);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return -EIO;
			p += n;
			left -= (size_t)n;
			total += (uint32_t)n;
		}
	}
	*written = total;
	return 0;
}

static int rng_chain(struct virtio_dev *dev, struct virtq_chain *chain, uint32_t *written,
		     const char **why)
{
	(void)dev;
	(void)why;
	/* A failing getrandom() leaves the buffer unfilled, never the guest stuck. */
	if (fill(chain, written) < 0)
		*written = 0;
	return 0;
}

static void rng_notify(struct virtio_dev *dev, unsigned qi)
{
	virtio_dev_serve_queue(dev, qi, rng_chain);
}

static void rng_reset(struct virtio_dev *dev)
{
	(void)dev;
}

const struct virtio_dev_ops virtio_rng_ops = {
	.name = "rng",
	.device_id = VIRTIO_ID_RNG,
	.num_queues = 1,
	.queue_max = 256,
	.features = 0,
	.config_size = 0,
	.queue_notify = rng_notify,
	.reset = rng_reset,
};
