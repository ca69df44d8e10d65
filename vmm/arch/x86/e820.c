#include "e820.h"

#include <errno.h>

#include "layout.h"
#include "memory.h"

unsigned x86_ram_layout(uint64_t ram_size, struct guest_mem_region *out)
{
	uint64_t low = ram_size < X86_MMIO_HOLE_START ? ram_size : X86_MMIO_HOLE_START;

	out[0] = (struct guest_mem_region){ .gpa = 0, .size = low };
	if (ram_size <= X86_MMIO_HOLE_START)
		return 1;
	out[1] = (struct guest_mem_region){ .gpa = X86_MMIO_HOLE_END,
					    .size = ram_size - X86_MMIO_HOLE_START };
	return 2;
}

static int add(struct x86_e820_entry *out, unsigned max, unsigned *n, uint64_t addr,
	       uint64_t size, uint32_t type)
{
	if (*n >= max)
		return -ENOSPC;
	out[(*n)++] = (struct x86_e820_entry){ addr, size, type };
	return 0;
}

int x86_e820_build(uint64_t ram_size, struct x86_e820_entry *out, unsigned max)
{
	uint64_t low_end = ram_size < X86_MMIO_HOLE_START ? ram_size : X86_MMIO_HOLE_START;
	unsigned n = 0;
	int r;

	if (ram_size <= X86_HIMEM_START)
		return -EINVAL;
	r = add(out, max, &n, 0, X86_EBDA_START, X86_E820_RAM);
	/* The EBDA: never RAM on a PC, and kernels expect it reserved. */
	if (!r)
		r = add(out, max, &n, X86_EBDA_START, X86_BIOS_HOLE_START - X86_EBDA_START,
			X86_E820_RESERVED);
	if (!r)
		r = add(out, max, &n, X86_HIMEM_START, low_end - X86_HIMEM_START, X86_E820_RAM);
	if (!r && ram_size > X86_MMIO_HOLE_START)
		r = add(out, max, &n, X86_MMIO_HOLE_END, ram_size - X86_MMIO_HOLE_START,
			X86_E820_RAM);
	return r < 0 ? r : (int)n;
}
