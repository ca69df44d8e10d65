#ifndef SANDVM_VMM_VM_H
#define SANDVM_VMM_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arch/x86/cpu.h"
#include "bus.h"
#include "config.h"
#include "devices/boot_timer.h"
#include "devices/i8042.h"
#include "devices/serial.h"
#include "event_loop.h"
#include "machine.h"
#include "memory.h"
#include "virtio/blk.h"
#include "virtio/mmio.h"
#include "virtio/net.h"
#include "net/egress.h"
#include "virtio/vsock.h"

struct vcpu;
struct control;
struct snap_record;
struct x86_msr_list;

#define VM_MAX_VIRTIO 11u /* GSIs 5..15 */
#define VM_VIRTIO_FIRST_GSI 5u

/* Why the VM stopped; the first reason recorded wins. */
enum vm_stop_reason {
	VM_RUNNING = 0,
	VM_STOP_GUEST_RESET,
	VM_STOP_GUEST_SHUTDOWN,
	VM_STOP_REQUESTED,
	VM_STOP_GUEST_PANIC,
	VM_STOP_GUEST_CRASH,
	VM_STOP_BOOT_TIMEOUT,
	VM_STOP_ERROR,
};

/* The VMM's documented exit statuses. */
enum vmm_exit {
	VMM_EXIT_OK = 0,
	VMM_EXIT_ERROR = 1,
	VMM_EXIT_CONFIG = 2,
	VMM_EXIT_KERNEL = 3,
	VMM_EXIT_PANIC = 4,
	VMM_EXIT_CRASH = 5,
	VMM_EXIT_BOOT_TIMEOUT = 6,
};

struct vm {
	const struct vmm_config *cfg;
	int kvm_fd;
	int vm_fd;
	bool host_pvm; /* kvm_host_is_pvm(): an internal error says why */
	size_t run_size;
	int tsc_deadline;
	struct kvm_cpuid2 *cpuid;    /* normalised once (x86_cpuid_normalize), patched per vCPU */
	struct x86_xsave_cfg xsave;  /* the XCR0 that CPUID declares */
	size_t xsave_size;           /* KVM_SET_XSAVE buffer; 0: KVM_SET_FPU */
	struct guest_mem mem;
	struct bus pio;
	struct bus mmio;
	struct machine_hooks hooks;
	struct serial serial;
	struct i8042 i8042;
	struct boot_timer boot_timer;
	struct virtio_mmio rng;
	struct virtio_blk blk[VMM_MAX_DRIVES];
	struct virtio_mmio blk_mmio[VMM_MAX_DRIVES];
	unsigned nblk;
	struct vsock_dev vsock;
	struct virtio_mmio vsock_mmio;
	bool has_vsock;
	struct net_dev net;
	struct net_egress egress;
	struct virtio_mmio net_mmio;
	bool has_net;
	/* Every virtio-mmio device, in slot order (slot i: BASE + i * 4 KiB, GSI 5 + i). */
	struct virtio_mmio *virtio[VM_MAX_VIRTIO];
	unsigned nvirtio;
	struct console_out *console; /* main()'s; NULL: no console */
	bool serial_ready;
	struct x86_boot_cpu boot;
	struct vcpu *vcpus;
	unsigned nvcpus;

	struct event_loop loop;
	struct event_handler signal_h;
	struct event_handler stop_h;
	struct event_handler timeout_h;
	struct control *control;

	/*
	 * Pause: vm_pause() sets pause_requested and kicks; each vCPU thread
	 * completes its pending exit, counts itself in `parked` and waits on
	 * pause_cond until it is cleared (or the VM stops).
	 */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	atomic_bool pause_requested;
	unsigned parked;
	bool pause_ready; /* the lock and cond exist */
	struct x86_msr_list *msrs; /* the MSRs a snapshot saves, read once at start */

	/* A restore: the state file and its records, kept until the vCPUs are restored. */
	uint8_t *restore_buf;
	struct snap_record *restore_recs;
	unsigned restore_nrecs;
	bool restored;
	uint64_t restore_ns; /* VMM start to the vCPUs running */

	_Atomic int stop_reason;
	atomic_bool panicked;
	atomic_bool init_reached;
	_Atomic uint64_t init_ns; /* since VMM start */
	uint64_t start_ns;        /* CLOCK_MONOTONIC at VMM start */
	char stop_detail[160];
};

/* Monotonic nanoseconds. */
uint64_t vm_now_ns(void);

/*
 * Creates the VM: KVM, memory, in-kernel interrupt controllers, devices.
 * Returns 0 or -errno with a message in err.
 */
int vm_init(struct vm *vm, const struct vmm_config *cfg, struct console_out *console, uint64_t start_ns,
	    char *err, size_t errlen);

/*
 * Loads kernel, initrd, command line and boot tables into guest memory.
 * On failure *exit_code says whether it was the kernel image (VMM_EXIT_KERNEL)
 * or something else.
 */
int vm_load(struct vm *vm, int *exit_code, char *err, size_t errlen);

/*
 * Reads and checks the kernel's headers without creating anything, so a bad
 * image is refused (VMM_EXIT_KERNEL) before KVM is touched.
 */
int vm_probe_kernel(const char *path, int fd, int *exit_code, char *err, size_t errlen);

/* Creates the vCPUs, starts them, and runs the event loop until the VM stops. */
enum vm_stop_reason vm_run(struct vm *vm);

void vm_destroy(struct vm *vm);

/*
 * Instead of vm_load: reads and checks the snapshot state file
 * (cfg->restore_state), checks it describes this machine, and restores the
 * VM-wide and device state; the vCPUs' state is restored by vm_run before
 * they start. Guest RAM was mapped from the memory file by vm_init. On
 * failure *exit_code is VMM_EXIT_CONFIG for a snapshot that is broken or for
 * another machine, VMM_EXIT_ERROR for a KVM failure.
 */
int vm_restore(struct vm *vm, int *exit_code, char *err, size_t errlen);
/* Frees the state file vm_restore kept for the vCPUs (vm_run does, once they are restored). */
void vm_restore_release(struct vm *vm);

/*
 * Stops every vCPU out of KVM_RUN (their pending exits completed) and holds
 * them; idempotent. 0, or -EBUSY when one did not stop within a second
 * (the VM is left running), -ESHUTDOWN when the VM is stopping.
 */
int vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
bool vm_paused(struct vm *vm);

/*
 * Pauses the VM (and leaves it paused) and writes a snapshot: the state
 * file to state_fd, guest RAM to mem_fd (sparse: zero pages are holes),
 * sealed with memory_key when it is not NULL (32 bytes: snapshot/mem_seal.h);
 * both regular files, truncated first. *mem_bytes: guest RAM size.
 * 0 or -errno with err.
 */
int vm_snapshot(struct vm *vm, int state_fd, int mem_fd, const uint8_t *memory_key, uint64_t *mem_bytes, char *err,
		size_t errlen);

/* Called by each vCPU thread between runs: parks it while a pause is requested. */
void vm_vcpu_park_if_paused(struct vm *vm, struct vcpu *v);

/* Records why the VM stops (first caller wins) and kicks every vCPU out. */
void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, const char *detail);

int vm_exit_code(enum vm_stop_reason reason);
const char *vm_stop_reason_name(enum vm_stop_reason reason);

#endif
