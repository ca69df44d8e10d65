/* libFuzzer target: ELF program headers and PVH notes of a vmlinux. */
#include <stdint.h>
#include <stdlib.h>

#include "arch/x86/elf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct x86_elf_image img;
	const char *why = NULL;

	if (x86_elf_parse(data, size, &img, &why) != 0)
		return why ? 0 : (abort(), 0);
	for (unsigned i = 0; i < img.nseg; i++) {
		const struct x86_elf_segment *s = &img.seg[i];

		if (s->data < data || s->data + s->filesz > data + size || s->filesz > s->memsz ||
		    s->paddr < 0x100000 || s->paddr + s->memsz > 0xc0000000ull)
			abort();
	}
	if (img.pvh_entry < img.lowest || img.pvh_entry >= img.highest)
		abort();
	return 0;
}
