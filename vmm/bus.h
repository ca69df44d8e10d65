#ifndef SANDVM_VMM_BUS_H
#define SANDVM_VMM_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * An address space of device ranges (one for port I/O, one for MMIO), owned
 * by the VM. Ranges are registered before vCPUs start and never change after,
 * so lookups from vCPU threads need no lock; devices lock their own state.
 */

struct bus_ops {
	/* offset is relative to the range base; len is 1..8. */
	void (*read)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len);
	void (*write)(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len);
};

struct bus_range {
	uint64_t base;
	uint64_t len;
	const struct bus_ops *ops;
	void *opaque;
	const char *name;
};

struct bus {
	struct bus_range *ranges; /* sorted by base */
	size_t count;
	size_t cap;
};

void bus_init(struct bus *bus);
void bus_destroy(struct bus *bus);

/* -EEXIST if it overlaps a registered range, -EINVAL for an empty or wrapping one. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops,
		 void *opaque, const char *name);

const struct bus_range *bus_find(const struct bus *bus, uint64_t addr, uint32_t len);

/* false when no device claims the access (reads then return all ones). */
bool bus_read(const struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len);
bool bus_write(const struct bus *bus, uint64_t addr, const uint8_t *data, uint32_t len);

#endif
