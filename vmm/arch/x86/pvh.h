#ifndef SANDVM_VMM_ARCH_X86_PVH_H
#define SANDVM_VMM_ARCH_X86_PVH_H

#include <stddef.h>
#include <stdint.h>

#include "bzimage.h"

/*
 * The PVH start info page (struct hvm_start_info, version 1): command line,
 * initrd as module 0, and the memory map, laid out in one buffer placed at
 * guest address gpa. Returns the bytes used or -ENOSPC.
 */
int x86_pvh_build(uint8_t *buf, size_t buflen, uint64_t gpa,
		  const struct x86_boot_inputs *in);

#define X86_PVH_MAGIC 0x336ec578u

#endif
