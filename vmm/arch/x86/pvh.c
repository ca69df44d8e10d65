#include "pvh.h"

#include <errno.h>
#include <string.h>

/* Layouts fixed by the PVH ABI (xen/include/public/arch-x86/hvm/start_info.h). */
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
};

struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

_Static_assert(sizeof(struct hvm_start_info) == 56, "PVH start info ABI");
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "PVH module ABI");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "PVH memmap ABI");

int x86_pvh_build(uint8_t *buf, size_t buflen, uint64_t gpa,
		  const struct x86_boot_inputs *in)
{
	size_t mod_off = 64;
	size_t map_off = mod_off + sizeof(struct hvm_modlist_entry);
	size_t need = map_off + in->e820_count * sizeof(struct hvm_memmap_table_entry);
	struct hvm_start_info *si = (struct hvm_start_info *)buf;
	struct hvm_modlist_entry *mod = (struct hvm_modlist_entry *)(buf + mod_off);
	struct hvm_memmap_table_entry *map = (struct hvm_memmap_table_entry *)(buf + map_off);

	if (buflen < need)
		return -ENOSPC;
	memset(buf, 0, need);
	si->magic = X86_PVH_MAGIC;
	si->version = 1;
	si->cmdline_paddr = in->cmdline_gpa;
	if (in->initrd_size) {
		si->nr_modules = 1;
		si->modlist_paddr = gpa + mod_off;
		mod->paddr = in->initrd_gpa;
		mod->size = in->initrd_size;
	}
	si->memmap_paddr = gpa + map_off;
	si->memmap_entries = in->e820_count;
	for (unsigned i = 0; i < in->e820_count; i++) {
		map[i].addr = in->e820[i].addr;
		map[i].size = in->e820[i].size;
		map[i].type = in->e820[i].type;
	}
	return (int)need;
}
