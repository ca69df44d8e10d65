#include "boot_timer.h"

#include <string.h>

#include "arch/x86/layout.h"
#include "bus.h"

void boot_timer_init(struct boot_timer *bt, const struct machine_hooks *hooks)
{
	bt->hooks = *hooks;
}

static void bt_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t len)
{
	(void)opaque;
	(void)offset;
	memset(data, 0, len);
}

static void bt_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	struct boot_timer *bt = opaque;

	if (offset == 0 && len >= 1 && data[0] == X86_BOOT_TIMER_MAGIC)
		bt->hooks.event(bt->hooks.ctx, MACHINE_EVENT_INIT_REACHED);
}

const struct bus_ops boot_timer_ops = { .read = bt_read, .write = bt_write };
