#include "cpu.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "layout.h"
#include "memory.h"

#define CR0_PE 0x1ull
#define CR0_ET 0x10ull
#define CR0_PG 0x80000000ull
#define CR4_PAE 0x20ull
#define EFER_LME 0x100ull
#define EFER_LMA 0x400ull
#define PTE_PRESENT 0x1ull
#define PTE_WRITE 0x2ull
#define PTE_HUGE 0x80ull

#define SEL_CODE 0x10
#define SEL_DATA 0x18
#define SEL_TSS 0x20

#define MSR_IA32_TSC 0x10
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102

#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_MODE_NMI 0x4
#define APIC_MODE_EXTINT 0x7

/* Flat 4 GiB descriptors (base 0, limit 0xfffff pages). */
#define GDT_CODE64 0x00af9b000000ffffull
#define GDT_CODE32 0x00cf9b000000ffffull
#define GDT_DATA 0x00cf93000000ffffull
#define GDT_TSS 0x00008b0000000067ull

void x86_gdt_fill(uint64_t gdt[5], enum x86_boot_mode mode)
{
	/* The 64-bit boot protocol wants __BOOT_CS = 0x10 and __BOOT_DS = 0x18. */
	gdt[0] = 0;
	gdt[1] = 0;
	gdt[2] = mode == X86_BOOT_LINUX64 ? GDT_CODE64 : GDT_CODE32;
	gdt[3] = GDT_DATA;
	gdt[4] = GDT_TSS;
}

int x86_boot_tables_write(const struct guest_mem *mem, enum x86_boot_mode mode)
{
	uint64_t gdt[5], *pml4, *pdpt, *pd;
	int r;

	x86_gdt_fill(gdt, mode);
	r = guest_mem_write(mem, X86_GDT_ADDR, gdt, sizeof(gdt));
	if (r < 0 || mode != X86_BOOT_LINUX64)
		return r;
	pml4 = guest_mem_ptr(mem, X86_PML4_ADDR, 4096);
	pdpt = guest_mem_ptr(mem, X86_PDPT_ADDR, 4096);
	pd = guest_mem_ptr(mem, X86_PD_ADDR, 4 * 4096);
	if (!pml4 || !pdpt || !pd)
		return -EFAULT;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = X86_PDPT_ADDR | PTE_PRESENT | PTE_WRITE;
	for (uint64_t i = 0; i < 4; i++)
		pdpt[i] = (X86_PD_ADDR + i * 4096) | PTE_PRESENT | PTE_WRITE;
	/* 2 MiB pages: 2048 entries map the first 4 GiB one to one. */
	for (uint64_t i = 0; i < 2048; i++)
		pd[i] = (i << 21) | PTE_PRESENT | PTE_WRITE | PTE_HUGE;
	return 0;
}

struct kvm_cpuid2 *x86_cpuid_supported(int kvm_fd, int *err)
{
	/* Ask with a growing buffer: KVM says E2BIG until it fits. */
	for (unsigned n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

		if (!c) {
			*err = -ENOMEM;
			return NULL;
		}
		c->nent = n;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		*err = -errno;
		free(c);
		if (*err != -E2BIG)
			return NULL;
	}
	return NULL;
}

void x86_cpuid_patch(struct kvm_cpuid2 *cpuid, const struct x86_cpuid_opts *opts)
{
	unsigned apic_id = opts->apic_id, ncpus = opts->ncpus;

	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0xffff) | (apic_id << 24) | ((ncpus & 0xff) << 16);
			if (ncpus > 1)
				e->edx |= 1u << 28; /* HTT: the count above is valid */
			e->ecx |= 1u << 31;     /* running under a hypervisor */
			if (opts->tsc_deadline)
				e->ecx |= 1u << 24;
			/*
			 * No VMX: a sandbox gets no nested virtualization, whatever the
			 * host's KVM offers (its nested code is attack surface).
			 */
			e->ecx &= ~(1u << 5);
			break;
		case 0x80000001:
			e->ecx &= ~(1u << 2); /* no SVM, for the same reason */
			break;
		case 0x8000000a:
			/* The SVM feature leaf describes a feature the guest does not have. */
			e->eax = e->ebx = e->ecx = e->edx = 0;
			break;
		case 0xb:
		case 0x1f:
			e->edx = apic_id;
			break;
		case 0xa:
			/* No PMU is offered: the guest must not program counters. */
			e->eax = e->ebx = e->ecx = e->edx = 0;
			break;
		default:
			break;
		}
	}
}

static int set_cpuid(int fd, const struct x86_cpuid_opts *opts,
		     const struct kvm_cpuid2 *supported)
{
	size_t size = sizeof(*supported) + supported->nent * sizeof(supported->entries[0]);
	struct kvm_cpuid2 *c = malloc(size);
	int r = 0;

	if (!c)
		return -ENOMEM;
	memcpy(c, supported, size);
	x86_cpuid_patch(c, opts);
	if (ioctl(fd, KVM_SET_CPUID2, c) < 0)
		r = -errno;
	free(c);
	return r;
}

static int set_msrs(int fd)
{
	static const uint32_t zeroed[] = {
		MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
		MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK, MSR_KERNEL_GS_BASE,
		MSR_IA32_TSC,
	};
	enum { N = sizeof(zeroed) / sizeof(zeroed[0]) + 2 };
	struct kvm_msrs *m = calloc(1, sizeof(*m) + N * sizeof(m->entries[0]));
	unsigned n = 0;
	int r;

	if (!m)
		return -ENOMEM;
	for (unsigned i = 0; i < N - 2; i++)
		m->entries[n++].index = zeroed[i];
	m->entries[n].index = MSR_IA32_MISC_ENABLE;
	m->entries[n++].data = 1; /* fast string operations */
	m->entries[n].index = MSR_MTRR_DEF_TYPE;
	m->entries[n++].data = (1u << 11) | 6; /* MTRRs on, default write-back */
	m->nmsrs = n;
	r = ioctl(fd, KVM_SET_MSRS, m);
	free(m);
	if (r < 0)
		return -errno;
	/* KVM stops at the first MSR it refuses and returns how many it set. */
	return (unsigned)r == n ? 0 : -EINVAL;
}

static int set_fpu(int fd)
{
	struct kvm_fpu fpu;

	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	return ioctl(fd, KVM_SET_FPU, &fpu) < 0 ? -errno : 0;
}

static int set_lapic(int fd)
{
	struct kvm_lapic_state s;
	uint32_t v;

	if (ioctl(fd, KVM_GET_LAPIC, &s) < 0)
		return -errno;
	/* Delivery mode lives in bits 8..10 of each LVT entry. */
	memcpy(&v, &s.regs[APIC_LVT_LINT0], 4);
	v = (v & ~0x700u) | (APIC_MODE_EXTINT << 8);
	memcpy(&s.regs[APIC_LVT_LINT0], &v, 4);
	memcpy(&v, &s.regs[APIC_LVT_LINT1], 4);
	v = (v & ~0x700u) | (APIC_MODE_NMI << 8);
	memcpy(&s.regs[APIC_LVT_LINT1], &v, 4);
	return ioctl(fd, KVM_SET_LAPIC, &s) < 0 ? -errno : 0;
}

static struct kvm_segment flat_segment(uint16_t sel, uint8_t type, int code64)
{
	return (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
		.present = 1, .dpl = 0, .db = code64 ? 0 : 1, .s = 1, .l = code64 ? 1 : 0,
		.g = 1,
	};
}

static int set_boot_registers(int fd, const struct x86_boot_cpu *boot)
{
	int code64 = boot->mode == X86_BOOT_LINUX64;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_segment data;

	if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	sregs.cs = flat_segment(SEL_CODE, 0xb, code64);
	data = flat_segment(SEL_DATA, 0x3, 0);
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.tr = (struct kvm_segment){ .base = 0, .limit = 0x67, .selector = SEL_TSS,
					 .type = 0xb, .present = 1 };
	sregs.gdt.base = X86_GDT_ADDR;
	sregs.gdt.limit = 5 * 8 - 1;
	sregs.idt.base = 0;
	sregs.idt.limit = 0;
	if (code64) {
		sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
		sregs.cr3 = X86_PML4_ADDR;
		sregs.cr4 = CR4_PAE;
		sregs.efer = EFER_LME | EFER_LMA;
	} else {
		/* PVH: flat 32-bit protected mode, paging off. */
		sregs.cr0 = CR0_PE | CR0_ET;
		sregs.cr3 = 0;
		sregs.cr4 = 0;
		sregs.efer = 0;
	}
	if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;

	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;
	regs.rip = boot->entry;
	regs.rsp = regs.rbp = X86_BOOT_STACK_ADDR;
	if (code64)
		regs.rsi = boot->boot_info;
	else
		regs.rbx = boot->boot_info;
	return ioctl(fd, KVM_SET_REGS, &regs) < 0 ? -errno : 0;
}

int x86_vcpu_setup(int vcpu_fd, const struct x86_cpuid_opts *opts,
		   const struct kvm_cpuid2 *supported, const struct x86_boot_cpu *boot)
{
	int r;

	r = set_cpuid(vcpu_fd, opts, supported);
	if (r == 0)
		r = set_msrs(vcpu_fd);
	if (r == 0)
		r = set_fpu(vcpu_fd);
	if (r == 0)
		r = set_lapic(vcpu_fd);
	if (r == 0 && opts->apic_id == 0)
		r = set_boot_registers(vcpu_fd, boot);
	return r;
}
