#ifndef SANDVM_VMM_ARCH_X86_ELF_H
#define SANDVM_VMM_ARCH_X86_ELF_H

#include <stddef.h>
#include <stdint.h>

/*
 * An uncompressed ELF vmlinux booted through its PVH entry point: the
 * 32-bit physical entry published in a Xen ELF note (XEN_ELFNOTE_PHYS32_ENTRY),
 * which Linux builds with CONFIG_PVH carry. No firmware, no decompressor.
 */

#define X86_ELF_MAX_SEGMENTS 16u

struct x86_elf_segment {
	uint64_t paddr;
	uint64_t filesz;
	uint64_t memsz;
	const uint8_t *data; /* into the caller's buffer */
};

struct x86_elf_image {
	struct x86_elf_segment seg[X86_ELF_MAX_SEGMENTS];
	unsigned nseg;
	uint32_t pvh_entry;
	uint64_t lowest;  /* lowest paddr loaded */
	uint64_t highest; /* one past the highest byte loaded */
};

/* True when buf starts with the ELF magic. */
int x86_elf_is_elf(const uint8_t *buf, size_t len);

/* Parse over an untrusted buffer. -ENOEXEC: not an x86-64 ELF executable;
 * -EINVAL: malformed; -ENOENT: no PVH entry note. */
int x86_elf_parse(const uint8_t *buf, size_t len, struct x86_elf_image *out,
		  const char **why);

#endif
