#ifndef SANDVM_VMM_ARCH_X86_BZIMAGE_H
#define SANDVM_VMM_ARCH_X86_BZIMAGE_H

#include <asm/bootparam.h>
#include <stddef.h>
#include <stdint.h>

#include "e820.h"

/*
 * A bzImage as the 64-bit Linux boot protocol sees it (boot protocol 2.12+):
 * a real-mode setup part we skip, and a protected-mode payload loaded at the
 * kernel's preferred address and entered 0x200 bytes in, in long mode.
 */
struct x86_bzimage {
	struct setup_header hdr;  /* copied out of the file */
	const uint8_t *payload;   /* points into the caller's buffer */
	size_t payload_size;
	uint64_t load_addr;
	uint64_t init_size;       /* memory the kernel needs from load_addr */
	uint32_t cmdline_cap;     /* bytes including NUL */
	uint64_t initrd_addr_max;
};

/* Header parse over an untrusted buffer. -ENOEXEC: not a bzImage;
 * -EINVAL: a bzImage that is truncated, too old or inconsistent. */
int x86_bzimage_parse(const uint8_t *buf, size_t len, struct x86_bzimage *out,
		      const char **why);

struct x86_boot_inputs {
	uint64_t cmdline_gpa;
	uint64_t initrd_gpa;
	uint64_t initrd_size;
	const struct x86_e820_entry *e820;
	unsigned e820_count;
};

/* Where a 64-bit boot protocol kernel is entered. */
uint64_t x86_bzimage_entry(const struct x86_bzimage *img);

/* Fills the zero page for the kernel. -EINVAL if the inputs do not fit it. */
int x86_zero_page_build(struct boot_params *bp, const struct x86_bzimage *img,
			const struct x86_boot_inputs *in);

#endif
