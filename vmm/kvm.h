#ifndef SANDVM_VMM_KVM_H
#define SANDVM_VMM_KVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Thin, checked wrappers over the /dev/kvm system and VM ioctls. */

/*
 * Opens the KVM device at path, or duplicates given (>= 0: a descriptor the
 * VMM was handed), and checks the API version. 0 with *kvm_fd, or -errno
 * (-ENOENT: no KVM on this host).
 */
int kvm_sys_open(const char *path, int given, int *kvm_fd);

/*
 * True when /dev/kvm is served by PVM (the kvm_pvm module, no kvm_intel or
 * kvm_amd), as on some cloud VMs without VMX or SVM: PVM runs only guest
 * kernels built for it, and any other kernel ends in a KVM emulation failure
 * early in its boot (docs/vmm.md). sys_module: "/sys/module" when NULL.
 */
bool kvm_host_is_pvm(const char *sys_module);

/* Checks every capability the VMM relies on; on failure names it in *missing. */
int kvm_sys_check_caps(int kvm_fd, const char **missing);

/* 1 if the capability is present, else 0. */
int kvm_sys_has_cap(int kvm_fd, int cap);

/*
 * Bytes of a KVM_SET_XSAVE buffer (KVM_CAP_XSAVE2, at least struct kvm_xsave),
 * or 0 when KVM has no KVM_SET_XSAVE.
 */
size_t kvm_sys_xsave_size(int kvm_fd);

/* The most vCPUs one VM may have (KVM_CAP_MAX_VCPUS, or NR_VCPUS). */
int kvm_sys_max_vcpus(int kvm_fd);

/* Size of each vCPU's shared kvm_run area. */
int kvm_sys_run_size(int kvm_fd, size_t *size);

int kvm_sys_create_vm(int kvm_fd, int *vm_fd);

int kvm_sys_set_memslot(int vm_fd, uint32_t slot, uint64_t gpa, uint64_t size, void *host);

/* x86 platform set-up: TSS and identity map pages, in-kernel PIC/IOAPIC/LAPIC, PIT. */
int kvm_sys_setup_x86_platform(int vm_fd, uint64_t tss_addr, uint64_t identity_map_addr);

int kvm_sys_irq_line(int vm_fd, uint32_t gsi, int level);

#endif
