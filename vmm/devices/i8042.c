#include "i8042.h"

#include <string.h>

#include "bus.h"

#define I8042_STATUS_SYSTEM_FLAG 0x04
#define I8042_CMD_RESET 0xfe

void i8042_init(struct i8042 *dev, const struct machine_hooks *hooks)
{
	dev->hooks = *hooks;
}

static void data_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t len)
{
	(void)opaque;
	(void)offset;
	memset(data, 0, len);
}

static void cmd_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t len)
{
	(void)opaque;
	(void)offset;
	memset(data, 0, len);
	/* Output and input buffers empty, self-test passed. */
	data[0] = I8042_STATUS_SYSTEM_FLAG;
}

static void cmd_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	struct i8042 *dev = opaque;

	(void)offset;
	if (len >= 1 && data[0] == I8042_CMD_RESET)
		dev->hooks.event(dev->hooks.ctx, MACHINE_EVENT_RESET);
}

const struct bus_ops i8042_data_ops = { .read = data_read, .write = NULL };
const struct bus_ops i8042_cmd_ops = { .read = cmd_read, .write = cmd_write };
