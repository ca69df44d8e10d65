#include "cpu.h"

#include <errno.h>
#include <stdbool.h>
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

static const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid2 *c, uint32_t function,
						 uint32_t index)
{
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == function && c->entries[i].index == index)
			return &c->entries[i];
	return NULL;
}

/* A component's size, offset and flags from its leaf 0xD sub-leaf; false when absent. */
static bool xfeature_layout(const struct kvm_cpuid2 *c, unsigned i, uint32_t *size,
			    uint32_t *offset, uint32_t *flags)
{
	const struct kvm_cpuid_entry2 *e = cpuid_find(c, 0xd, i);

	if (!e || e->eax == 0)
		return false;
	*size = e->eax;
	*offset = e->ebx;
	*flags = e->ecx;
	return true;
}

uint64_t x86_xcr0_choose(const struct kvm_cpuid2 *cpuid)
{
	const struct kvm_cpuid_entry2 *l1 = cpuid_find(cpuid, 1, 0);
	const struct kvm_cpuid_entry2 *d0 = cpuid_find(cpuid, 0xd, 0);
	uint64_t mask;

	if (!l1 || !(l1->ecx & (1u << 26)) || !d0)
		return 0;
	mask = (d0->eax | (uint64_t)d0->edx << 32) & X86_XFEATURE_OFFERED;
	/* A component whose layout KVM does not describe cannot be sized: leave it out. */
	for (unsigned i = 2; i < 64; i++) {
		uint32_t size, offset, flags;

		if ((mask & (1ull << i)) && !xfeature_layout(cpuid, i, &size, &offset, &flags))
			mask &= ~(1ull << i);
	}
	/* XSETBV refuses anything else (SDM vol. 1, 13.3), and so does KVM_SET_XCRS. */
	if (!(mask & X86_XFEATURE_FP))
		return 0;
	if (!(mask & X86_XFEATURE_SSE))
		mask &= ~X86_XFEATURE_AVX;
	if (!(mask & X86_XFEATURE_AVX) || (mask & X86_XFEATURE_AVX512) != X86_XFEATURE_AVX512)
		mask &= ~X86_XFEATURE_AVX512;
	return mask;
}

/* Size of the XSAVE area holding `xfeatures`, standard or compacted format. */
static uint32_t xsave_size(const struct kvm_cpuid2 *c, uint64_t xfeatures, bool compacted)
{
	uint32_t end = X86_XSAVE_BASE_SIZE;

	for (unsigned i = 2; i < 64; i++) {
		uint32_t size, offset, flags;

		if (!(xfeatures & (1ull << i)) || !xfeature_layout(c, i, &size, &offset, &flags))
			continue;
		if (compacted) {
			if (flags & 2) /* 64-byte aligned when compacted */
				end = (end + 63) & ~63u;
			end += size;
		} else if (offset + size > end) {
			end = offset + size;
		}
	}
	return end;
}

enum cpuid_reg { REG_EAX, REG_EBX, REG_ECX, REG_EDX };

static uint32_t *cpuid_reg(struct kvm_cpuid_entry2 *e, enum cpuid_reg r)
{
	switch (r) {
	case REG_EAX:
		return &e->eax;
	case REG_EBX:
		return &e->ebx;
	case REG_ECX:
		return &e->ecx;
	default:
		return &e->edx;
	}
}

/*
 * Feature flags that need an XSAVE component: a guest that sees the flag
 * without the component in XCR0 takes #UD or faults in XRSTOR, so each goes
 * with its component (SDM vol. 1, 13.2; AMX: 3.2 of Intel's ISA extensions).
 */
static const struct {
	uint32_t function, index;
	enum cpuid_reg reg;
	uint8_t bit;
	uint64_t needs;
} xfeature_flags[] = {
	{ 1, 0, REG_ECX, 12, X86_XFEATURE_AVX },          /* FMA */
	{ 1, 0, REG_ECX, 28, X86_XFEATURE_AVX },          /* AVX */
	{ 1, 0, REG_ECX, 29, X86_XFEATURE_AVX },          /* F16C */
	{ 7, 0, REG_EBX, 5, X86_XFEATURE_AVX },           /* AVX2 */
	{ 7, 0, REG_ECX, 9, X86_XFEATURE_AVX },           /* VAES */
	{ 7, 0, REG_ECX, 10, X86_XFEATURE_AVX },          /* VPCLMULQDQ */
	{ 7, 1, REG_EAX, 4, X86_XFEATURE_AVX },           /* AVX-VNNI */
	{ 7, 1, REG_EAX, 23, X86_XFEATURE_AVX },          /* AVX-IFMA */
	{ 7, 1, REG_EDX, 4, X86_XFEATURE_AVX },           /* AVX-VNNI-INT8 */
	{ 7, 1, REG_EDX, 5, X86_XFEATURE_AVX },           /* AVX-NE-CONVERT */
	{ 7, 1, REG_EDX, 10, X86_XFEATURE_AVX },          /* AVX-VNNI-INT16 */
	{ 7, 0, REG_EBX, 14, X86_XFEATURE_BNDREGS | X86_XFEATURE_BNDCSR }, /* MPX */
	{ 7, 0, REG_EBX, 16, X86_XFEATURE_AVX512 },       /* AVX512F */
	{ 7, 0, REG_EBX, 17, X86_XFEATURE_AVX512 },       /* AVX512DQ */
	{ 7, 0, REG_EBX, 21, X86_XFEATURE_AVX512 },       /* AVX512_IFMA */
	{ 7, 0, REG_EBX, 26, X86_XFEATURE_AVX512 },       /* AVX512PF */
	{ 7, 0, REG_EBX, 27, X86_XFEATURE_AVX512 },       /* AVX512ER */
	{ 7, 0, REG_EBX, 28, X86_XFEATURE_AVX512 },       /* AVX512CD */
	{ 7, 0, REG_EBX, 30, X86_XFEATURE_AVX512 },       /* AVX512BW */
	{ 7, 0, REG_EBX, 31, X86_XFEATURE_AVX512 },       /* AVX512VL */
	{ 7, 0, REG_ECX, 1, X86_XFEATURE_AVX512 },        /* AVX512_VBMI */
	{ 7, 0, REG_ECX, 6, X86_XFEATURE_AVX512 },        /* AVX512_VBMI2 */
	{ 7, 0, REG_ECX, 11, X86_XFEATURE_AVX512 },       /* AVX512_VNNI */
	{ 7, 0, REG_ECX, 12, X86_XFEATURE_AVX512 },       /* AVX512_BITALG */
	{ 7, 0, REG_ECX, 14, X86_XFEATURE_AVX512 },       /* AVX512_VPOPCNTDQ */
	{ 7, 0, REG_EDX, 2, X86_XFEATURE_AVX512 },        /* AVX512_4VNNIW */
	{ 7, 0, REG_EDX, 3, X86_XFEATURE_AVX512 },        /* AVX512_4FMAPS */
	{ 7, 0, REG_EDX, 8, X86_XFEATURE_AVX512 },        /* AVX512_VP2INTERSECT */
	{ 7, 0, REG_EDX, 23, X86_XFEATURE_AVX512 },       /* AVX512_FP16 */
	{ 7, 1, REG_EAX, 5, X86_XFEATURE_AVX512 },        /* AVX512_BF16 */
	{ 7, 1, REG_EDX, 19, X86_XFEATURE_AVX512 },       /* AVX10 */
	{ 7, 0, REG_ECX, 3, X86_XFEATURE_PKRU },          /* PKU */
	{ 7, 0, REG_ECX, 7, X86_XFEATURE_CET_U | X86_XFEATURE_CET_S }, /* CET shadow stacks */
	{ 7, 0, REG_EDX, 20, X86_XFEATURE_CET_U | X86_XFEATURE_CET_S }, /* CET IBT */
	{ 7, 0, REG_EDX, 22, X86_XFEATURE_XTILECFG | X86_XFEATURE_XTILEDATA }, /* AMX-BF16 */
	{ 7, 0, REG_EDX, 24, X86_XFEATURE_XTILECFG | X86_XFEATURE_XTILEDATA }, /* AMX-TILE */
	{ 7, 0, REG_EDX, 25, X86_XFEATURE_XTILECFG | X86_XFEATURE_XTILEDATA }, /* AMX-INT8 */
	{ 7, 1, REG_EAX, 21, X86_XFEATURE_XTILECFG | X86_XFEATURE_XTILEDATA }, /* AMX-FP16 */
	{ 7, 1, REG_EDX, 8, X86_XFEATURE_XTILECFG | X86_XFEATURE_XTILEDATA },  /* AMX-COMPLEX */
};

#define CPUID7_EBX_FDP_EXCPTN_ONLY (1u << 6)
#define CPUID7_EBX_ZERO_FCS_FDS (1u << 13)
#define CPUID7_ECX_WAITPKG (1u << 5)
#define CPUIDD1_EAX_XSAVEC (1u << 1)
#define CPUIDD1_EAX_XSAVES (1u << 3)
#define CPUIDD1_EAX_XFD (1u << 4)

/* Sizes are taken from the table before leaf 0xD is edited. */
static void normalize_xsave_leaf(struct kvm_cpuid_entry2 *e, uint64_t xcr0, uint32_t size,
				 uint32_t compacted_size)
{
	if (xcr0 == 0) {
		e->eax = e->ebx = e->ecx = e->edx = 0;
		return;
	}
	switch (e->index) {
	case 0:
		e->eax = (uint32_t)xcr0;
		e->edx = (uint32_t)(xcr0 >> 32);
		/* EBX follows the guest's XCR0 at run time (KVM updates it); it starts at xcr0. */
		e->ebx = e->ecx = size;
		break;
	case 1:
		/* XFD only serves AMX's lazily allocated tile data, which is not offered. */
		e->eax &= ~CPUIDD1_EAX_XFD;
		e->ebx = e->eax & (CPUIDD1_EAX_XSAVEC | CPUIDD1_EAX_XSAVES) ? compacted_size : 0;
		/* No supervisor state (XSS 0): no CET, PT or other XSAVES-only component. */
		e->ecx = e->edx = 0;
		break;
	default:
		if (e->index >= 64 || !(xcr0 & (1ull << e->index)))
			e->eax = e->ebx = e->ecx = e->edx = 0;
		break;
	}
}

void x86_cpuid_normalize(struct kvm_cpuid2 *cpuid, struct x86_xsave_cfg *out)
{
	uint64_t xcr0 = x86_xcr0_choose(cpuid);
	uint32_t size = xcr0 ? xsave_size(cpuid, xcr0, false) : 0;
	uint32_t compacted_size = xcr0 ? xsave_size(cpuid, xcr0, true) : 0;

	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		if (e->function == 1 && e->index == 0 && !xcr0)
			e->ecx &= ~(1u << 26); /* XSAVE, when leaf 0xD cannot back it */
		if (e->function == 7 && e->index == 0) {
			/*
			 * UMWAIT/TPAUSE would let the guest park a physical CPU in
			 * C0.2 for as long as IA32_UMWAIT_CONTROL allows, and that
			 * MSR is the host's.
			 */
			e->ecx &= ~CPUID7_ECX_WAITPKG;
			/*
			 * Inverted "deprecation" flags: set means the old x87 FDP/FCS/FDS
			 * behaviour is gone, which is true in any VM; KVM's errata notes
			 * (Documentation/virt/kvm/x86/errata.rst) recommend setting both.
			 */
			e->ebx |= CPUID7_EBX_FDP_EXCPTN_ONLY | CPUID7_EBX_ZERO_FCS_FDS;
		}
		if (e->function == 0xd)
			normalize_xsave_leaf(e, xcr0, size, compacted_size);
		/* AMX palette and TMUL leaves: no AMX. */
		if (e->function == 0x1d || e->function == 0x1e)
			e->eax = e->ebx = e->ecx = e->edx = 0;
		for (size_t f = 0; f < sizeof(xfeature_flags) / sizeof(xfeature_flags[0]); f++) {
			if (xfeature_flags[f].function != e->function ||
			    xfeature_flags[f].index != e->index ||
			    (xfeature_flags[f].needs & ~xcr0) == 0)
				continue;
			*cpuid_reg(e, xfeature_flags[f].reg) &= ~(1u << xfeature_flags[f].bit);
		}
	}
	out->xcr0 = xcr0;
	out->size = size;
}

void x86_xsave_init(void *area, size_t len)
{
	uint8_t *a = area;
	uint16_t fcw = 0x37f;
	uint32_t mxcsr = 0x1f80;
	uint64_t xstate_bv = X86_XFEATURE_FP | X86_XFEATURE_SSE;

	memset(a, 0, len);
	/* FXSAVE layout: FCW at 0, MXCSR at 24; the XSAVE header's XSTATE_BV at 512. */
	memcpy(a, &fcw, sizeof(fcw));
	memcpy(a + 24, &mxcsr, sizeof(mxcsr));
	memcpy(a + 512, &xstate_bv, sizeof(xstate_bv));
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

/*
 * XCR0 as the normalised CPUID declares it, set before the first KVM_RUN
 * (as QEMU does) so the state KVM saves and restores for the guest matches
 * what the guest was told from its first instruction; the guest's own
 * XSETBV replaces it when it enables XSAVE.
 */
static int set_xcrs(int fd, uint64_t xcr0)
{
	struct kvm_xcrs x;

	memset(&x, 0, sizeof(x));
	x.nr_xcrs = 1;
	x.xcrs[0].xcr = 0;
	x.xcrs[0].value = xcr0;
	return ioctl(fd, KVM_SET_XCRS, &x) < 0 ? -errno : 0;
}

static int set_xsave(int fd, size_t size)
{
	void *area;
	int r = 0;

	/* struct kvm_xsave is at least 4 KiB; KVM copies its guest's full size. */
	if (size < sizeof(struct kvm_xsave))
		size = sizeof(struct kvm_xsave);
	area = calloc(1, size);
	if (!area)
		return -ENOMEM;
	x86_xsave_init(area, size);
	if (ioctl(fd, KVM_SET_XSAVE, area) < 0)
		r = -errno;
	free(area);
	return r;
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
	/* After the CPUID: KVM checks XCR0 against the XSAVE components it declares. */
	if (r == 0 && opts->xcr0)
		r = set_xcrs(vcpu_fd, opts->xcr0);
	if (r == 0)
		r = set_msrs(vcpu_fd);
	if (r == 0)
		r = opts->xsave_size ? set_xsave(vcpu_fd, opts->xsave_size) : set_fpu(vcpu_fd);
	if (r == 0)
		r = set_lapic(vcpu_fd);
	if (r == 0 && opts->apic_id == 0)
		r = set_boot_registers(vcpu_fd, boot);
	return r;
}
