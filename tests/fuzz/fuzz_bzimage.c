/* libFuzzer target: bzImage header parsing and zero-page construction. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86/bzimage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct x86_e820_entry e820[2] = { { 0, 0x9fc00, 1 }, { 0x100000, 0x7f00000, 1 } };
	struct x86_boot_inputs in = { .cmdline_gpa = 0x20000, .e820 = e820, .e820_count = 2 };
	struct x86_bzimage bz;
	struct boot_params bp;
	const char *why = NULL;

	if (x86_bzimage_parse(data, size, &bz, &why) != 0)
		return why ? 0 : (abort(), 0);
	/* Whatever is accepted must point inside the input and be loadable. */
	if (bz.payload < data || bz.payload + bz.payload_size > data + size ||
	    bz.load_addr < 0x100000 || bz.payload_size > bz.init_size)
		abort();
	if (x86_zero_page_build(&bp, &bz, &in) != 0)
		abort();
	return 0;
}
