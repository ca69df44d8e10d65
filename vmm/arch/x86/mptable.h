#ifndef SANDVM_VMM_ARCH_X86_MPTABLE_H
#define SANDVM_VMM_ARCH_X86_MPTABLE_H

#include <stddef.h>
#include <stdint.h>

/*
 * The Intel MultiProcessor table (spec 1.4) tells a kernel without ACPI how
 * many CPUs there are and how interrupts are wired: one local APIC per vCPU,
 * one I/O APIC with ISA IRQs 0..23 wired 1:1 to its pins (KVM's default GSI
 * routing), ExtINT on LINT0 and NMI on LINT1.
 */

#define X86_MPTABLE_IRQS 24u

/*
 * Writes the floating pointer and configuration table into buf, which will
 * sit at guest physical address gpa. Returns the bytes used, or -ENOSPC /
 * -EINVAL.
 */
int x86_mptable_build(uint8_t *buf, size_t buflen, uint64_t gpa, unsigned ncpus);

#endif
