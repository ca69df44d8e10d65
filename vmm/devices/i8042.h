#ifndef SANDVM_VMM_DEVICES_I8042_H
#define SANDVM_VMM_DEVICES_I8042_H

#include "machine.h"

/*
 * Just enough of the PS/2 controller for a guest to reset the machine:
 * the status port reads "buffers empty", and command 0xfe (pulse reset line)
 * ends the VM. With reboot=k, that is how Linux reboots without ACPI.
 */
struct i8042 {
	struct machine_hooks hooks;
};

void i8042_init(struct i8042 *dev, const struct machine_hooks *hooks);

struct bus_ops;
extern const struct bus_ops i8042_data_ops; /* port 0x60 */
extern const struct bus_ops i8042_cmd_ops;  /* port 0x64 */

#endif
