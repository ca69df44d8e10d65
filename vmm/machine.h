#ifndef SANDVM_VMM_MACHINE_H
#define SANDVM_VMM_MACHINE_H

#include <stdint.h>

/*
 * What a device may ask of the machine it sits in. Devices get this small
 * table instead of the VM itself, so they can be unit-tested with a fake.
 */

enum machine_event {
	MACHINE_EVENT_RESET,        /* guest asked for a reset (reboot) */
	MACHINE_EVENT_PANIC,        /* guest kernel reported a panic */
	MACHINE_EVENT_INIT_REACHED, /* guest init wrote the boot timer */
};

struct machine_hooks {
	void *ctx;
	/* Drives an interrupt line (GSI) high or low. */
	int (*set_irq)(void *ctx, uint32_t gsi, int level);
	void (*event)(void *ctx, enum machine_event ev);
};

#endif
