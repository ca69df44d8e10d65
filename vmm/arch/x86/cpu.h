#ifndef SANDVM_VMM_ARCH_X86_CPU_H
#define SANDVM_VMM_ARCH_X86_CPU_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;
struct kvm_cpuid2;

/* How the boot vCPU starts: the Linux 64-bit boot protocol or PVH. */
enum x86_boot_mode {
	X86_BOOT_LINUX64,
	X86_BOOT_PVH,
};

struct x86_boot_cpu {
	enum x86_boot_mode mode;
	uint64_t entry;     /* rip */
	uint64_t boot_info; /* rsi (zero page) or rbx (PVH start info) */
};

/* Writes the GDT and, for 64-bit boot, identity page tables for 4 GiB. */
int x86_boot_tables_write(const struct guest_mem *mem, enum x86_boot_mode mode);

/* The GDT entry values for a mode, index by selector / 8 (pure, for tests). */
void x86_gdt_fill(uint64_t gdt[5], enum x86_boot_mode mode);

/*
 * Fetches what KVM supports. Caller frees. Returns NULL and sets *err on failure.
 */
struct kvm_cpuid2 *x86_cpuid_supported(int kvm_fd, int *err);

/*
 * Per-vCPU CPUID: the supported set with this vCPU's APIC ID, the CPU count
 * and the hypervisor bit filled in, and without VMX/SVM (no nested
 * virtualization inside a sandbox) or a PMU. Pure; modifies `cpuid` in place.
 */
struct x86_cpuid_opts {
	unsigned apic_id;
	unsigned ncpus;
	/* KVM emulates the TSC-deadline LAPIC timer but leaves announcing it to us. */
	int tsc_deadline;
	/* For x86_vcpu_setup: XCR0 to set (0: leave KVM's), KVM_SET_XSAVE buffer size (0: KVM_SET_FPU). */
	uint64_t xcr0;
	size_t xsave_size;
};

void x86_cpuid_patch(struct kvm_cpuid2 *cpuid, const struct x86_cpuid_opts *opts);

/* XSAVE state components (Intel SDM vol. 1, 13.1), as bits of XCR0 and XSS. */
#define X86_XFEATURE_FP (1ull << 0)
#define X86_XFEATURE_SSE (1ull << 1)
#define X86_XFEATURE_AVX (1ull << 2)
#define X86_XFEATURE_BNDREGS (1ull << 3)
#define X86_XFEATURE_BNDCSR (1ull << 4)
#define X86_XFEATURE_OPMASK (1ull << 5)
#define X86_XFEATURE_ZMM_HI256 (1ull << 6)
#define X86_XFEATURE_HI16_ZMM (1ull << 7)
#define X86_XFEATURE_PKRU (1ull << 9)
#define X86_XFEATURE_CET_U (1ull << 11)
#define X86_XFEATURE_CET_S (1ull << 12)
#define X86_XFEATURE_XTILECFG (1ull << 17)
#define X86_XFEATURE_XTILEDATA (1ull << 18)
#define X86_XFEATURE_AVX512 (X86_XFEATURE_OPMASK | X86_XFEATURE_ZMM_HI256 | X86_XFEATURE_HI16_ZMM)
/* The user state a sandbox may have: no MPX (gone from Linux), no AMX (see x86_cpuid_normalize). */
#define X86_XFEATURE_OFFERED (X86_XFEATURE_FP | X86_XFEATURE_SSE | X86_XFEATURE_AVX | \
			      X86_XFEATURE_AVX512 | X86_XFEATURE_PKRU)

/* The legacy region plus the XSAVE header: where the first extended component may start. */
#define X86_XSAVE_BASE_SIZE 576u

/* What x86_cpuid_normalize decided, for the vCPU set-up. */
struct x86_xsave_cfg {
	uint64_t xcr0;  /* XCR0 each vCPU starts with; 0: no XSAVE offered */
	uint32_t size;  /* standard-format XSAVE area for xcr0 (leaf 0xD.0 EBX and ECX) */
};

/*
 * The XCR0 a VM's vCPUs get from a KVM_GET_SUPPORTED_CPUID table: what KVM
 * supports (leaf 0xD.0 EDX:EAX, only if leaf 1 has XSAVE) within
 * X86_XFEATURE_OFFERED, closed under the architecture's rules (x87 always,
 * AVX needs SSE, the three AVX-512 components together and with AVX).
 * 0 when the table offers no XSAVE. Pure.
 */
uint64_t x86_xcr0_choose(const struct kvm_cpuid2 *cpuid);

/*
 * Edits a KVM_GET_SUPPORTED_CPUID table once per VM, before the per-vCPU
 * x86_cpuid_patch: WAITPKG off; FDP_EXCPTN_ONLY and ZERO_FCS_FDS set (KVM's
 * errata notes); AMX, XFD, CET and every feature whose XSAVE component is not
 * in the chosen XCR0 off; leaf 0xD describing exactly that XCR0 and no
 * supervisor state (XSS 0); leaves 0x1D/0x1E (AMX tiles) zeroed. Pure;
 * reports the XCR0 and the area size it settled on in *out.
 * docs/vmm.md ("CPUID") says why each.
 */
void x86_cpuid_normalize(struct kvm_cpuid2 *cpuid, struct x86_xsave_cfg *out);

/*
 * A vCPU's initial XSAVE area (KVM_SET_XSAVE, standard format): zero but for
 * the x87 control word 0x37f, MXCSR 0x1f80 and XSTATE_BV naming x87 and SSE,
 * the state after INIT/RESET. `len` at least 576 bytes. Pure.
 */
void x86_xsave_init(void *area, size_t len);

/*
 * Puts one vCPU in its boot state: CPUID, MSRs, FPU, LAPIC LINT wiring,
 * and for the boot vCPU (id 0) the registers for the kernel entry.
 * Application processors wait for INIT/SIPI from the kernel.
 */
int x86_vcpu_setup(int vcpu_fd, const struct x86_cpuid_opts *opts,
		   const struct kvm_cpuid2 *supported, const struct x86_boot_cpu *boot);

#endif
