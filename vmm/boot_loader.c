#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "arch/x86/bzimage.h"
#include "arch/x86/elf.h"
#include "arch/x86/layout.h"
#include "arch/x86/mptable.h"
#include "arch/x86/pvh.h"
#include "cmdline.h"
#include "file_map.h"
#include "log.h"
#include "vm.h"

/*
 * Puts everything the guest kernel needs into guest memory: the kernel
 * (bzImage or ELF/PVH), the initrd, the command line, the memory map, the
 * MP table and the boot CPU's page tables and GDT.
 */

/* Always first, so a user's words can override them (the last one wins). */
static const char default_cmdline[] = "console=ttyS0 reboot=k panic=-1 io_delay=none";

/* The x86 kernel's COMMAND_LINE_SIZE, which PVH guests are held to. */
#define PVH_CMDLINE_CAP 2048u
#define PAGE_SIZE 4096ull

struct load_state {
	struct sv_file_map kernel;
	struct sv_file_map initrd;
	struct x86_bzimage bz;
	struct x86_elf_image elf;
	bool is_elf;
	uint64_t kernel_end;
	uint64_t initrd_limit; /* highest address (exclusive) the initrd may use */
	size_t cmdline_cap;
};

/* Where a load failure is described, and which exit status it maps to. */
struct load_error {
	char *msg;
	size_t msglen;
	int *exit_code;
};

__attribute__((format(printf, 4, 5)))
static int fail(struct load_error *e, int r, int code, const char *fmt, ...)
{
	va_list ap;

	*e->exit_code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, e->msglen, fmt, ap);
	va_end(ap);
	return r;
}

static int load_elf(struct vm *vm, struct load_state *st, struct load_error *e)
{
	const char *why = NULL;
	int r = x86_elf_parse(st->kernel.data, st->kernel.size, &st->elf, &why);

	if (r < 0)
		return fail(e, r, VMM_EXIT_KERNEL, "kernel '%s': %s", vm->cfg->kernel, why);
	for (unsigned i = 0; i < st->elf.nseg; i++) {
		const struct x86_elf_segment *s = &st->elf.seg[i];
		uint8_t *dst = guest_mem_ptr(&vm->mem, s->paddr, s->memsz);

		if (!dst)
			return fail(e, -ENOSPC, VMM_EXIT_CONFIG,
				    "kernel '%s' needs memory up to 0x%llx: more than the guest has",
				    vm->cfg->kernel, (unsigned long long)(s->paddr + s->memsz));
		memcpy(dst, s->data, s->filesz);
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	st->kernel_end = st->elf.highest;
	st->initrd_limit = X86_MMIO_HOLE_START;
	st->cmdline_cap = PVH_CMDLINE_CAP;
	vm->boot = (struct x86_boot_cpu){ .mode = X86_BOOT_PVH, .entry = st->elf.pvh_entry,
					  .boot_info = X86_PVH_INFO_ADDR };
	return 0;
}

static int load_bzimage(struct vm *vm, struct load_state *st, struct load_error *e)
{
	const char *why = NULL;
	uint8_t *dst;
	int r = x86_bzimage_parse(st->kernel.data, st->kernel.size, &st->bz, &why);

	if (r < 0)
		return fail(e, r, VMM_EXIT_KERNEL, "kernel '%s': %s", vm->cfg->kernel, why);
	/* The kernel decompresses itself in place: init_size bytes from load_addr. */
	dst = guest_mem_ptr(&vm->mem, st->bz.load_addr, st->bz.init_size);
	if (!dst)
		return fail(e, -ENOSPC, VMM_EXIT_CONFIG,
			    "kernel '%s' needs %llu MiB from 0x%llx: more than the guest has",
			    vm->cfg->kernel, (unsigned long long)(st->bz.init_size >> 20),
			    (unsigned long long)st->bz.load_addr);
	memcpy(dst, st->bz.payload, st->bz.payload_size);
	st->kernel_end = st->bz.load_addr + st->bz.init_size;
	st->initrd_limit = st->bz.initrd_addr_max == UINT64_MAX ? X86_MMIO_HOLE_START
								 : st->bz.initrd_addr_max + 1;
	st->cmdline_cap = st->bz.cmdline_cap;
	vm->boot = (struct x86_boot_cpu){ .mode = X86_BOOT_LINUX64,
					  .entry = x86_bzimage_entry(&st->bz),
					  .boot_info = X86_ZERO_PAGE_ADDR };
	return 0;
}

/* The initrd goes as high in low RAM as the kernel allows, page aligned. */
static int load_initrd(struct vm *vm, struct load_state *st, struct x86_boot_inputs *in,
		       struct load_error *e)
{
	uint64_t top = vm->mem.regions[0].size;
	uint64_t size = st->initrd.size, gpa;

	if (top > st->initrd_limit)
		top = st->initrd_limit;
	if (size > top || (top - size) < st->kernel_end) {
		return fail(e, -ENOSPC, VMM_EXIT_CONFIG,
			    "initrd '%s' (%llu MiB) does not fit in guest memory beside the kernel; "
			    "give the guest more memory",
			    vm->cfg->initrd, (unsigned long long)(size >> 20));
	}
	gpa = (top - size) & ~(PAGE_SIZE - 1);
	if (gpa < st->kernel_end)
		return fail(e, -ENOSPC, VMM_EXIT_CONFIG, "initrd does not fit in guest memory");
	if (guest_mem_write(&vm->mem, gpa, st->initrd.data, size) < 0)
		return fail(e, -EFAULT, VMM_EXIT_ERROR, "initrd placement outside RAM");
	in->initrd_gpa = gpa;
	in->initrd_size = size;
	return 0;
}

static int write_cmdline(struct vm *vm, struct load_state *st, struct x86_boot_inputs *in,
			 struct load_error *e)
{
	struct cmdline cl;
	size_t cap = st->cmdline_cap < X86_CMDLINE_MAX ? st->cmdline_cap : X86_CMDLINE_MAX;
	int r;

	r = cmdline_init(&cl, cap);
	if (r < 0)
		return fail(e, r, VMM_EXIT_ERROR, "out of memory");
	r = cmdline_append(&cl, default_cmdline);
	for (unsigned i = 0; r == 0 && i < vm->nvirtio; i++) {
		char dev[64];

		r = virtio_mmio_cmdline(vm->virtio[i], dev, sizeof(dev));
		if (r == 0)
			r = cmdline_append(&cl, dev);
	}
	if (r == 0 && vm->cfg->cmdline)
		r = cmdline_append(&cl, vm->cfg->cmdline);
	if (r == 0)
		r = guest_mem_write(&vm->mem, X86_CMDLINE_ADDR, cl.buf, cl.len + 1);
	if (r == 0)
		sv_debug("kernel command line: %s", cl.buf);
	cmdline_destroy(&cl);
	if (r == -E2BIG)
		return fail(e, r, VMM_EXIT_CONFIG,
			    "cmdline: longer than the kernel accepts (%zu bytes with the defaults)",
			    cap - 1);
	if (r == -EINVAL)
		return fail(e, r, VMM_EXIT_CONFIG, "cmdline: contains a control character");
	if (r < 0)
		return fail(e, r, VMM_EXIT_ERROR, "writing the command line: %s", strerror(-r));
	in->cmdline_gpa = X86_CMDLINE_ADDR;
	return 0;
}

static int write_boot_info(struct vm *vm, struct load_state *st, struct x86_boot_inputs *in,
			   struct load_error *e)
{
	struct x86_e820_entry e820[X86_E820_MAX];
	uint8_t *p;
	int n, r;

	n = x86_e820_build(vm->mem.total, e820, X86_E820_MAX);
	if (n < 0)
		return fail(e, n, VMM_EXIT_ERROR, "building the memory map: %s", strerror(-n));
	in->e820 = e820;
	in->e820_count = (unsigned)n;

	p = guest_mem_ptr(&vm->mem, X86_MPTABLE_ADDR, X86_MPTABLE_MAX);
	r = p ? x86_mptable_build(p, X86_MPTABLE_MAX, X86_MPTABLE_ADDR, vm->cfg->cpus) : -EFAULT;
	if (r < 0)
		return fail(e, r, VMM_EXIT_ERROR, "building the MP table: %s", strerror(-r));

	if (st->is_elf) {
		p = guest_mem_ptr(&vm->mem, X86_PVH_INFO_ADDR, X86_PVH_INFO_SIZE);
		r = p ? x86_pvh_build(p, X86_PVH_INFO_SIZE, X86_PVH_INFO_ADDR, in) : -EFAULT;
	} else {
		struct boot_params *bp = guest_mem_ptr(&vm->mem, X86_ZERO_PAGE_ADDR, sizeof(*bp));

		r = bp ? x86_zero_page_build(bp, &st->bz, in) : -EFAULT;
	}
	if (r < 0)
		return fail(e, r, VMM_EXIT_ERROR, "writing boot information: %s", strerror(-r));
	r = x86_boot_tables_write(&vm->mem, vm->boot.mode);
	if (r < 0)
		return fail(e, r, VMM_EXIT_ERROR, "writing page tables: %s", strerror(-r));
	return 0;
}

/* A file given as a path, or as a descriptor the config took over (fd >= 0). */
static int map_file(struct sv_file_map *map, const char *path, int fd)
{
	return fd >= 0 ? sv_file_map_fd(map, fd) : sv_file_map_open(map, path);
}

int vm_probe_kernel(const char *path, int fd, int *exit_code, char *err, size_t errlen)
{
	struct load_error err_out = { err, errlen, exit_code };
	struct sv_file_map map;
	struct x86_bzimage bz;
	struct x86_elf_image elf;
	const char *why = NULL;
	int r;

	r = map_file(&map, path, fd);
	if (r < 0)
		return fail(&err_out, r, VMM_EXIT_CONFIG, "kernel '%s': %s", path, strerror(-r));
	if (x86_elf_is_elf(map.data, map.size))
		r = x86_elf_parse(map.data, map.size, &elf, &why);
	else
		r = x86_bzimage_parse(map.data, map.size, &bz, &why);
	sv_file_map_close(&map);
	if (r < 0)
		return fail(&err_out, r, VMM_EXIT_KERNEL, "kernel '%s': %s%s", path, why,
			    r == -ENOEXEC ? " (need an ELF vmlinux with PVH or a bzImage)" : "");
	return 0;
}

int vm_load(struct vm *vm, int *exit_code, char *err, size_t errlen)
{
	struct load_error err_out = { err, errlen, exit_code };
	struct load_error *e = &err_out;
	struct x86_boot_inputs in = { 0 };
	struct load_state st;
	int r;

	memset(&st, 0, sizeof(st));
	r = map_file(&st.kernel, vm->cfg->kernel, vm->cfg->kernel_fd);
	if (r < 0) {
		r = fail(e, r, VMM_EXIT_CONFIG, "kernel '%s': %s", vm->cfg->kernel,
			 strerror(-r));
		goto out;
	}
	st.is_elf = x86_elf_is_elf(st.kernel.data, st.kernel.size);
	r = st.is_elf ? load_elf(vm, &st, e) : load_bzimage(vm, &st, e);
	if (r < 0)
		goto out;
	if (vm->cfg->initrd) {
		r = map_file(&st.initrd, vm->cfg->initrd, vm->cfg->initrd_fd);
		if (r < 0) {
			r = fail(e, r, VMM_EXIT_CONFIG, "initrd '%s': %s", vm->cfg->initrd,
				 strerror(-r));
			goto out;
		}
		r = load_initrd(vm, &st, &in, e);
		if (r < 0)
			goto out;
	}
	r = write_cmdline(vm, &st, &in, e);
	if (r == 0)
		r = write_boot_info(vm, &st, &in, e);
	if (r == 0)
		sv_debug("loaded %s kernel, entry 0x%llx, initrd %llu bytes at 0x%llx",
			 st.is_elf ? "ELF/PVH" : "bzImage", (unsigned long long)vm->boot.entry,
			 (unsigned long long)in.initrd_size, (unsigned long long)in.initrd_gpa);
out:
	sv_file_map_close(&st.initrd);
	sv_file_map_close(&st.kernel);
	return r;
}
