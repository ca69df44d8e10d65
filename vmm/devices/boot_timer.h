#ifndef SANDVM_VMM_DEVICES_BOOT_TIMER_H
#define SANDVM_VMM_DEVICES_BOOT_TIMER_H

#include "machine.h"

/*
 * An I/O port the guest's init writes (value 123) once it runs, so boot time
 * is measured from inside the guest rather than guessed from console output.
 */
struct boot_timer {
	struct machine_hooks hooks;
};

void boot_timer_init(struct boot_timer *bt, const struct machine_hooks *hooks);

struct bus_ops;
extern const struct bus_ops boot_timer_ops;

#endif
