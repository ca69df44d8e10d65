#ifndef SANDVM_VMM_ARCH_X86_CPU_STATE_H
#define SANDVM_VMM_ARCH_X86_CPU_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot/format.h"

/*
 * The x86 machine state KVM holds, to and from snapshot records
 * (snapshot/format.h), in the orders KVM requires (docs/vmm.md,
 * "Snapshots"). The VM must be paused: no vCPU in KVM_RUN.
 */

/* The MSRs a snapshot carries: KVM's KVM_GET_MSR_INDEX_LIST. */
struct x86_msr_list {
	uint32_t n;
	uint32_t index[SNAP_MAX_MSRS];
};

/* Fills list from KVM (at most SNAP_MAX_MSRS; more is -E2BIG). */
int x86_msr_list_get(int kvm_fd, struct x86_msr_list *list);

/*
 * One vCPU's state: MP_STATE first, then REGS, SREGS, XSAVE (or FPU when
 * xsave_size is 0), XCRS (with_xcrs), DEBUGREGS, LAPIC, TSC_KHZ, CPUID,
 * the MSRs KVM reads of list, VCPU_EVENTS last. 0 or -errno with err.
 */
int x86_vcpu_state_save(int vcpu_fd, unsigned id, size_t xsave_size, int with_xcrs,
			const struct x86_msr_list *list, struct snap_writer *w, char *err, size_t errlen);

/*
 * Restores vCPU `id` from recs: CPUID, MP_STATE, REGS, SREGS, XSAVE or FPU,
 * XCRS, DEBUGREGS, LAPIC, then the MSRs (TSC_DEADLINE last), VCPU_EVENTS,
 * and finally tells a guest using kvmclock that it was paused
 * (KVM_KVMCLOCK_CTRL). A record KVM refuses is an error naming it; an MSR
 * KVM refuses is skipped (counted in *msrs_skipped) as KVM's own list
 * includes MSRs a given CPUID does not enable.
 */
int x86_vcpu_state_restore(int vcpu_fd, unsigned id, size_t xsave_size, const struct snap_record *recs,
			   unsigned nrecs, unsigned *msrs_skipped, char *err, size_t errlen);

/* VM-wide: PIT2, CLOCK, IRQCHIP (PIC master, PIC slave, IOAPIC). */
int x86_vm_state_save(int vm_fd, struct snap_writer *w, char *err, size_t errlen);
/* The same, restored in that order, before any vCPU state. */
int x86_vm_state_restore(int vm_fd, const struct snap_record *recs, unsigned nrecs, char *err, size_t errlen);

/* Tells a vCPU's guest it was paused (soft-lockup watchdogs); harmless without kvmclock. */
void x86_vcpu_kvmclock_ctrl(int vcpu_fd);

#endif
