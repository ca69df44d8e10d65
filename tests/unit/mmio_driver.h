#ifndef SANDVM_TESTS_UNIT_MMIO_DRIVER_H
#define SANDVM_TESTS_UNIT_MMIO_DRIVER_H

/* A guest driver's side of the virtio-mmio registers, for device tests. */

#include <stdint.h>

#include "bus.h"
#include "virtio/mmio.h"

static inline uint32_t mmio_rd(struct virtio_mmio *m, uint64_t off)
{
	uint32_t v;

	virtio_mmio_bus_ops.read(m, off, (uint8_t *)&v, 4);
	return v;
}

static inline void mmio_wr(struct virtio_mmio *m, uint64_t off, uint32_t v)
{
	virtio_mmio_bus_ops.write(m, off, (const uint8_t *)&v, 4);
}

/* The Linux driver's sequence from reset up to FEATURES_OK; returns the status read back. */
static inline uint32_t mmio_negotiate(struct virtio_mmio *m, uint64_t features)
{
	mmio_wr(m, 0x070, 0);
	mmio_wr(m, 0x070, 1);
	mmio_wr(m, 0x070, 3);
	mmio_wr(m, 0x024, 0);
	mmio_wr(m, 0x020, (uint32_t)features);
	mmio_wr(m, 0x024, 1);
	mmio_wr(m, 0x020, (uint32_t)(features >> 32));
	mmio_wr(m, 0x070, 0xb);
	return mmio_rd(m, 0x070);
}

#endif
