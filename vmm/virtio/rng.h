#ifndef SANDVM_VMM_VIRTIO_RNG_H
#define SANDVM_VMM_VIRTIO_RNG_H

/* virtio-rng: fills the guest's buffers from the host's getrandom(). */
struct virtio_dev_ops;
extern const struct virtio_dev_ops virtio_rng_ops;

#endif
