#include "bzimage.h"

#include <errno.h>
#include <string.h>

#define SETUP_HEADER_OFFSET 0x1f1
#define BOOT_FLAG 0xaa55
#define HDRS_MAGIC 0x53726448u /* "HdrS" */
#define MIN_PROTOCOL 0x020c   /* 2.12: xloadflags, 64-bit entry */
#define LOADER_TYPE_UNDEFINED 0xff
#define KERNEL_64_ENTRY_OFFSET 0x200
#define MIN_LOAD_ADDR 0x100000ull

static int reject(const char **why, const char *reason, int err)
{
	if (why)
		*why = reason;
	return err;
}

int x86_bzimage_parse(const uint8_t *buf, size_t len, struct x86_bzimage *out,
		      const char **why)
{
	const struct setup_header *h;
	size_t setup_size;
	unsigned setup_sects;

	memset(out, 0, sizeof(*out));
	if (len < SETUP_HEADER_OFFSET + sizeof(struct setup_header))
		return reject(why, "file too small for a Linux boot header", -ENOEXEC);
	memcpy(&out->hdr, buf + SETUP_HEADER_OFFSET, sizeof(out->hdr));
	h = &out->hdr;
	if (h->header != HDRS_MAGIC || h->boot_flag != BOOT_FLAG)
		return reject(why, "no Linux boot header (not a bzImage)", -ENOEXEC);
	if (h->version < MIN_PROTOCOL)
		return reject(why, "boot protocol older than 2.12", -EINVAL);
	if (!(h->xloadflags & XLF_KERNEL_64))
		return reject(why, "kernel has no 64-bit entry point", -EINVAL);
	if (!(h->loadflags & LOADED_HIGH))
		return reject(why, "kernel does not load high (zImage)", -EINVAL);
	setup_sects = h->setup_sects ? h->setup_sects : 4;
	setup_size = ((size_t)setup_sects + 1) * 512;
	if (setup_size >= len)
		return reject(why, "file truncated inside the setup code", -EINVAL);
	if (h->syssize == 0 || (uint64_t)h->syssize * 16 > len - setup_size)
		return reject(why, "file truncated: payload shorter than the header says",
			      -EINVAL);
	if (h->pref_address < MIN_LOAD_ADDR || h->init_size == 0)
		return reject(why, "bad preferred load address or init size", -EINVAL);
	if (h->relocatable_kernel && h->kernel_alignment &&
	    (h->kernel_alignment & (h->kernel_alignment - 1)))
		return reject(why, "kernel alignment is not a power of two", -EINVAL);
	if (h->pref_address + h->init_size < h->pref_address)
		return reject(why, "init size overflows", -EINVAL);

	out->payload = buf + setup_size;
	out->payload_size = len - setup_size;
	out->load_addr = h->pref_address;
	out->init_size = h->init_size;
	if (out->payload_size > out->init_size)
		return reject(why, "payload larger than the kernel's init size", -EINVAL);
	/* cmdline_size exists since 2.06 and excludes the NUL. */
	out->cmdline_cap = h->cmdline_size ? h->cmdline_size + 1 : 256;
	if (out->cmdline_cap > 0x10000)
		out->cmdline_cap = 0x10000;
	out->initrd_addr_max = (h->xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G)
				       ? UINT64_MAX
				       : (uint64_t)h->initrd_addr_max;
	return 0;
}

int x86_zero_page_build(struct boot_params *bp, const struct x86_bzimage *img,
			const struct x86_boot_inputs *in)
{
	if (in->e820_count > E820_MAX_ENTRIES_ZEROPAGE)
		return -EINVAL;
	memset(bp, 0, sizeof(*bp));
	bp->hdr = img->hdr;
	bp->hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
	bp->hdr.loadflags |= CAN_USE_HEAP;
	bp->hdr.heap_end_ptr = 0xfe00;
	bp->hdr.vid_mode = 0xffff;
	bp->hdr.cmd_line_ptr = (uint32_t)in->cmdline_gpa;
	bp->ext_cmd_line_ptr = (uint32_t)(in->cmdline_gpa >> 32);
	bp->hdr.ramdisk_image = (uint32_t)in->initrd_gpa;
	bp->ext_ramdisk_image = (uint32_t)(in->initrd_gpa >> 32);
	bp->hdr.ramdisk_size = (uint32_t)in->initrd_size;
	bp->ext_ramdisk_size = (uint32_t)(in->initrd_size >> 32);
	bp->e820_entries = (uint8_t)in->e820_count;
	for (unsigned i = 0; i < in->e820_count; i++) {
		bp->e820_table[i].addr = in->e820[i].addr;
		bp->e820_table[i].size = in->e820[i].size;
		bp->e820_table[i].type = in->e820[i].type;
	}
	return 0;
}

uint64_t x86_bzimage_entry(const struct x86_bzimage *img)
{
	return img->load_addr + KERNEL_64_ENTRY_OFFSET;
}
