#ifndef SANDVM_VMM_ARCH_X86_CPU_H
#define SANDVM_VMM_ARCH_X86_CPU_H

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
};

void x86_cpuid_patch(struct kvm_cpuid2 *cpuid, const struct x86_cpuid_opts *opts);

/*
 * Puts one vCPU in its boot state: CPUID, MSRs, FPU, LAPIC LINT wiring,
 * and for the boot vCPU (id 0) the registers for the kernel entry.
 * Application processors wait for INIT/SIPI from the kernel.
 */
int x86_vcpu_setup(int vcpu_fd, const struct x86_cpuid_opts *opts,
		   const struct kvm_cpuid2 *supported, const struct x86_boot_cpu *boot);

#endif
