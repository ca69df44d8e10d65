#include "elf.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

#include "layout.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

static int reject(const char **why, const char *reason, int err)
{
	if (why)
		*why = reason;
	return err;
}

int x86_elf_is_elf(const uint8_t *buf, size_t len)
{
	return len >= SELFMAG && memcmp(buf, ELFMAG, SELFMAG) == 0;
}

/* Reads a little-endian u32 from an unaligned place. */
static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t align4(uint64_t v)
{
	return (v + 3) & ~3ull;
}

/* Walks one PT_NOTE segment; sets *entry when the PVH note is found. */
static int scan_notes(const uint8_t *p, uint64_t size, uint32_t *entry, int *found)
{
	uint64_t off = 0;

	while (size - off >= 12) {
		uint32_t namesz = le32(p + off);
		uint32_t descsz = le32(p + off + 4);
		uint32_t type = le32(p + off + 8);
		uint64_t name_off = off + 12;
		uint64_t desc_off = name_off + align4(namesz);
		uint64_t next = desc_off + align4(descsz);

		if (desc_off > size || next > size || next <= off)
			return -EINVAL;
		if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 &&
		    memcmp(p + name_off, "Xen", 4) == 0) {
			if (descsz != 4 && descsz != 8)
				return -EINVAL;
			if (descsz == 8 && le32(p + desc_off + 4) != 0)
				return -EINVAL;
			*entry = le32(p + desc_off);
			*found = 1;
		}
		off = next;
	}
	return 0;
}

int x86_elf_parse(const uint8_t *buf, size_t len, struct x86_elf_image *out,
		  const char **why)
{
	Elf64_Ehdr eh;
	int found = 0;

	memset(out, 0, sizeof(*out));
	if (!x86_elf_is_elf(buf, len))
		return reject(why, "not an ELF file", -ENOEXEC);
	if (len < sizeof(eh))
		return reject(why, "file truncated inside the ELF header", -EINVAL);
	memcpy(&eh, buf, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64)
		return reject(why, "not a little-endian x86-64 ELF file", -ENOEXEC);
	if (eh.e_type != ET_EXEC)
		return reject(why, "ELF file is not an executable", -ENOEXEC);
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0)
		return reject(why, "ELF program headers missing or of the wrong size", -EINVAL);
	if (eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
		return reject(why, "ELF program headers lie outside the file", -EINVAL);

	out->lowest = UINT64_MAX;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, buf + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
			return reject(why, "ELF segment lies outside the file", -EINVAL);
		if (ph.p_type == PT_NOTE) {
			if (scan_notes(buf + ph.p_offset, ph.p_filesz, &out->pvh_entry, &found) < 0)
				return reject(why, "malformed ELF note", -EINVAL);
			continue;
		}
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		if (ph.p_filesz > ph.p_memsz)
			return reject(why, "ELF segment file size exceeds its memory size", -EINVAL);
		if (ph.p_paddr < X86_HIMEM_START || ph.p_paddr + ph.p_memsz < ph.p_paddr ||
		    ph.p_paddr + ph.p_memsz > X86_MMIO_HOLE_START)
			return reject(why, "ELF segment outside 1 MiB..3 GiB", -EINVAL);
		if (out->nseg == X86_ELF_MAX_SEGMENTS)
			return reject(why, "too many ELF segments", -EINVAL);
		out->seg[out->nseg++] = (struct x86_elf_segment){
			.paddr = ph.p_paddr,
			.filesz = ph.p_filesz,
			.memsz = ph.p_memsz,
			.data = buf + ph.p_offset,
		};
		if (ph.p_paddr < out->lowest)
			out->lowest = ph.p_paddr;
		if (ph.p_paddr + ph.p_memsz > out->highest)
			out->highest = ph.p_paddr + ph.p_memsz;
	}
	if (out->nseg == 0)
		return reject(why, "ELF file has nothing to load", -EINVAL);
	if (!found)
		return reject(why, "no PVH entry note (kernel built without CONFIG_PVH?)",
			      -ENOENT);
	if (out->pvh_entry < out->lowest || out->pvh_entry >= out->highest)
		return reject(why, "PVH entry point outside the loaded segments", -EINVAL);
	return 0;
}
