#include "vcpu.h"

#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "seccomp.h"
#include "vm.h"

int vcpu_init(struct vcpu *v, struct vm *vm, unsigned id)
{
	int r;

	memset(v, 0, sizeof(*v));
	v->vm = vm;
	v->id = id;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (v->fd < 0)
		return -errno;
	v->run_size = vm->run_size;
	v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		r = -errno;
		close(v->fd);
		v->fd = -1;
		v->run = NULL;
		return r;
	}
	return 0;
}

void vcpu_destroy(struct vcpu *v)
{
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->fd >= 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}

static bool handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint32_t size = run->io.size;
	uint64_t total = (uint64_t)size * run->io.count;
	uint8_t *data;

	/* The run area is shared with KVM; still, check before trusting offsets. */
	if ((size != 1 && size != 2 && size != 4) || run->io.count == 0 ||
	    run->io.data_offset > v->run_size || total > v->run_size - run->io.data_offset)
		return false;
	data = (uint8_t *)run + run->io.data_offset;
	for (uint32_t i = 0; i < run->io.count; i++, data += size) {
		if (run->io.direction == KVM_EXIT_IO_OUT)
			bus_write(&v->vm->pio, run->io.port, data, size);
		else
			bus_read(&v->vm->pio, run->io.port, data, size);
	}
	return true;
}

static bool handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	if (run->mmio.len == 0 || run->mmio.len > sizeof(run->mmio.data))
		return false;
	if (run->mmio.is_write)
		bus_write(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len);
	else
		bus_read(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len);
	return true;
}

static void handle_system_event(struct vcpu *v)
{
	switch (v->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_request_stop(v->vm, VM_STOP_GUEST_SHUTDOWN, "guest shut down");
		break;
	case KVM_SYSTEM_EVENT_RESET:
		vm_request_stop(v->vm, VM_STOP_GUEST_RESET, "guest reset");
		break;
	default:
		vm_request_stop(v->vm, VM_STOP_GUEST_CRASH, "guest reported a crash event");
		break;
	}
}

/*
 * What a person needs to tell why a guest died: where it was and, for KVM's
 * internal errors, the words KVM attached (for an emulation failure: flags,
 * the instruction's length and bytes, when the kernel provides them).
 */
static void log_crash_state(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	char words[16 * 19 + 1] = "";
	size_t len = 0;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) == 0 && ioctl(v->fd, KVM_GET_SREGS, &sregs) == 0)
		sv_err("vCPU %u: rip 0x%llx rsp 0x%llx rax 0x%llx rcx 0x%llx rdx 0x%llx cs 0x%x cr0 0x%llx "
		       "cr3 0x%llx cr4 0x%llx efer 0x%llx",
		       v->id, (unsigned long long)regs.rip, (unsigned long long)regs.rsp,
		       (unsigned long long)regs.rax, (unsigned long long)regs.rcx, (unsigned long long)regs.rdx,
		       sregs.cs.selector, (unsigned long long)sregs.cr0, (unsigned long long)sregs.cr3,
		       (unsigned long long)sregs.cr4, (unsigned long long)sregs.efer);
	if (run->exit_reason != KVM_EXIT_INTERNAL_ERROR)
		return;
	for (unsigned i = 0; i < run->internal.ndata && i < 16; i++)
		len += (size_t)snprintf(words + len, sizeof(words) - len, " %llx",
					(unsigned long long)run->internal.data[i]);
	sv_err("vCPU %u: internal error %u, %u data words:%s", v->id, run->internal.suberror,
	       run->internal.ndata, words);
}

/* Returns false when the vCPU must stop. */
static bool handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	char detail[224];

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		v->pio_exits++;
		if (handle_io(v))
			return true;
		vm_request_stop(v->vm, VM_STOP_ERROR, "malformed port I/O exit");
		return false;
	case KVM_EXIT_MMIO:
		v->mmio_exits++;
		if (handle_mmio(v))
			return true;
		vm_request_stop(v->vm, VM_STOP_ERROR, "malformed MMIO exit");
		return false;
	case KVM_EXIT_HLT:
		vm_request_stop(v->vm, VM_STOP_GUEST_SHUTDOWN, "guest halted");
		return false;
	case KVM_EXIT_SHUTDOWN:
		log_crash_state(v);
		snprintf(detail, sizeof(detail), "triple fault on vCPU %u", v->id);
		vm_request_stop(v->vm, VM_STOP_GUEST_CRASH, detail);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		handle_system_event(v);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(detail, sizeof(detail), "vCPU %u failed to enter the guest (reason 0x%llx)",
			 v->id, (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		vm_request_stop(v->vm, VM_STOP_GUEST_CRASH, detail);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		log_crash_state(v);
		snprintf(detail, sizeof(detail), "KVM internal error on vCPU %u (suberror %u)%s",
			 v->id, run->internal.suberror,
			 v->vm->host_pvm ? "; this host's KVM is PVM, which boots only kernels built for it" : "");
		vm_request_stop(v->vm, VM_STOP_GUEST_CRASH, detail);
		return false;
	case KVM_EXIT_INTR:
		return true;
	default:
		snprintf(detail, sizeof(detail), "unexpected KVM exit %u on vCPU %u",
			 run->exit_reason, v->id);
		vm_request_stop(v->vm, VM_STOP_ERROR, detail);
		return false;
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	char name[16];
	int r;

	snprintf(name, sizeof(name), "vcpu%u", v->id);
	pthread_setname_np(pthread_self(), name);
	/* Before the first KVM_RUN: nothing the guest does reaches this thread unfiltered. */
	r = vmm_seccomp_load(VMM_SECCOMP_VCPU, v->vm->cfg->seccomp,
			     &(struct vmm_seccomp_ctx){ .kick_signal = VCPU_KICK_SIGNAL });
	if (r < 0) {
		char detail[96];

		snprintf(detail, sizeof(detail), "vCPU %u: loading its seccomp filter: %s", v->id, strerror(-r));
		vm_request_stop(v->vm, VM_STOP_ERROR, detail);
		return NULL;
	}
	while (atomic_load(&v->vm->stop_reason) == VM_RUNNING) {
		if (atomic_load(&v->vm->pause_requested)) {
			vm_vcpu_park_if_paused(v->vm, v);
			continue;
		}
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			char detail[96];

			if (errno == EINTR || errno == EAGAIN)
				continue;
			snprintf(detail, sizeof(detail), "KVM_RUN on vCPU %u: %s", v->id,
				 strerror(errno));
			vm_request_stop(v->vm, VM_STOP_ERROR, detail);
			break;
		}
		v->exits++;
		if (!handle_exit(v))
			break;
	}
	return NULL;
}

int vcpu_start(struct vcpu *v)
{
	int r = pthread_create(&v->thread, NULL, vcpu_thread, v);

	if (r)
		return -r;
	v->started = true;
	return 0;
}

void vcpu_kick(struct vcpu *v)
{
	if (!v->run)
		return;
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->started)
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

void vcpu_join(struct vcpu *v)
{
	if (v->started)
		pthread_join(v->thread, NULL);
	v->started = false;
}
