#ifndef SANDVM_VMM_DEVICES_SERIAL_H
#define SANDVM_VMM_DEVICES_SERIAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "machine.h"

struct console_out;

/*
 * A 16550A UART as far as a Linux console needs: transmit (to a console,
 * devices/console.h, or nowhere), THR-empty interrupts, divisor latch, scratch
 * register, FIFO identification. Nothing is received. It also watches the
 * byte stream for the kernel's panic banner, so a panicking guest is told
 * apart from one that rebooted.
 */

#define SERIAL_REG_COUNT 8
#define SERIAL_OUT_BUF 4096

struct serial {
	pthread_mutex_t lock;
	struct machine_hooks hooks;
	uint32_t irq;
	struct console_out *console; /* borrowed; NULL: discard */
	uint8_t ier, lcr, mcr, scr, dll, dlm;
	bool fifo_enabled;
	bool thr_empty_pending; /* THRE interrupt not yet acknowledged */
	bool irq_level;
	size_t panic_match; /* bytes of the panic banner matched so far */
	size_t out_len;
	char out[SERIAL_OUT_BUF];
};

/* console must outlive the serial device (serial_destroy flushes into it). */
int serial_init(struct serial *s, uint32_t irq, struct console_out *console,
		const struct machine_hooks *hooks);
void serial_destroy(struct serial *s); /* flushes */

/* Register access; offset 0..7 from the base port. */
uint8_t serial_read(struct serial *s, unsigned offset);
void serial_write(struct serial *s, unsigned offset, uint8_t value);

void serial_flush(struct serial *s);

/* The registers, for snapshots (the console and its buffered bytes are the host's). */
struct snap_serial;
void serial_save(struct serial *s, struct snap_serial *out);
void serial_restore(struct serial *s, const struct snap_serial *in);

struct bus_ops;
extern const struct bus_ops serial_bus_ops;

#endif
