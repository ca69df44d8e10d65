#ifndef SANDVM_VMM_ARCH_X86_E820_H
#define SANDVM_VMM_ARCH_X86_E820_H

#include <stdint.h>

#define X86_E820_RAM 1u
#define X86_E820_RESERVED 2u
#define X86_E820_MAX 8u

struct x86_e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};

struct guest_mem_region;

/*
 * The RAM regions for a guest with ram_size bytes: below the MMIO hole, and
 * the rest above 4 GiB. Returns the number of regions (1 or 2).
 */
unsigned x86_ram_layout(uint64_t ram_size, struct guest_mem_region *out);

/*
 * The memory map handed to the kernel (zero page or PVH start info).
 * Returns the number of entries, or -ENOSPC if max is too small, -EINVAL if
 * ram_size cannot hold the boot structures.
 */
int x86_e820_build(uint64_t ram_size, struct x86_e820_entry *out, unsigned max);

#endif
