#ifndef SANDVM_VMM_VCPU_H
#define SANDVM_VMM_VCPU_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct vm;
struct kvm_run;

/* One vCPU: its KVM fd, the shared run area, and the thread running it. */
struct vcpu {
	struct vm *vm;
	unsigned id;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;
	atomic_bool started; /* read by other threads that kick this one */
	unsigned long exits;      /* exits handled in user space */
	unsigned long pio_exits;
	unsigned long mmio_exits;
};

int vcpu_init(struct vcpu *v, struct vm *vm, unsigned id);
void vcpu_destroy(struct vcpu *v);

int vcpu_start(struct vcpu *v);

/* Makes KVM_RUN return soon: immediately if the thread is about to enter it. */
void vcpu_kick(struct vcpu *v);
void vcpu_join(struct vcpu *v);

/* Signal used to kick vCPU threads out of KVM_RUN; main() installs a no-op handler. */
#define VCPU_KICK_SIGNAL SIGUSR1

#endif
