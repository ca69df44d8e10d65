#include "serial.h"

#include <string.h>

#include "bus.h"
#include "console.h"
#include "snapshot/format.h"

enum {
	REG_DATA = 0, /* RBR / THR, or DLL with DLAB */
	REG_IER = 1,  /* or DLM with DLAB */
	REG_IIR = 2,  /* read: IIR; write: FCR */
	REG_LCR = 3,
	REG_MCR = 4,
	REG_LSR = 5,
	REG_MSR = 6,
	REG_SCR = 7,

	LCR_DLAB = 0x80,
	IER_THRI = 0x02,
	IER_MASK = 0x0f,
	IIR_NO_INT = 0x01,
	IIR_THRI = 0x02,
	IIR_FIFO_ENABLED = 0xc0,
	FCR_ENABLE_FIFO = 0x01,
	LSR_THRE = 0x20,
	LSR_TEMT = 0x40,
	MCR_LOOP = 0x10,
	MSR_CTS = 0x10,
	MSR_DSR = 0x20,
	MSR_DCD = 0x80,
};

_Static_assert(SERIAL_OUT_BUF <= CONSOLE_CHUNK_MAX, "the console's rotation bound assumes chunks this small");

static const char panic_banner[] = "Kernel panic - not syncing";

int serial_init(struct serial *s, uint32_t irq, struct console_out *console,
		const struct machine_hooks *hooks)
{
	int r;

	memset(s, 0, sizeof(*s));
	r = pthread_mutex_init(&s->lock, NULL);
	if (r)
		return -r;
	s->irq = irq;
	s->console = console;
	s->hooks = *hooks;
	s->dll = 12; /* 9600 baud until the guest says otherwise */
	return 0;
}

static void flush_locked(struct serial *s)
{
	if (s->out_len && s->console)
		console_out_write(s->console, s->out, s->out_len);
	s->out_len = 0;
}

void serial_flush(struct serial *s)
{
	pthread_mutex_lock(&s->lock);
	flush_locked(s);
	pthread_mutex_unlock(&s->lock);
}

void serial_destroy(struct serial *s)
{
	serial_flush(s);
	pthread_mutex_destroy(&s->lock);
}

/* Mirrors the UART's INTR pin: high while an enabled interrupt is pending. */
static void update_irq_locked(struct serial *s)
{
	bool level = (s->ier & IER_THRI) && s->thr_empty_pending;

	if (level != s->irq_level) {
		s->irq_level = level;
		s->hooks.set_irq(s->hooks.ctx, s->irq, level);
	}
}

static bool watch_for_panic(struct serial *s, uint8_t c)
{
	if (c == (uint8_t)panic_banner[s->panic_match]) {
		if (++s->panic_match == sizeof(panic_banner) - 1) {
			s->panic_match = 0;
			return true;
		}
		return false;
	}
	/* The banner has no repeated prefix, so restarting the match is exact. */
	s->panic_match = c == (uint8_t)panic_banner[0] ? 1 : 0;
	return false;
}

static bool transmit_locked(struct serial *s, uint8_t c)
{
	if (s->mcr & MCR_LOOP)
		return false;
	if (console_out_active(s->console)) {
		s->out[s->out_len++] = (char)c;
		if (c == '\n' || s->out_len == sizeof(s->out))
			flush_locked(s);
	}
	return watch_for_panic(s, c);
}

uint8_t serial_read(struct serial *s, unsigned offset)
{
	uint8_t v = 0;

	pthread_mutex_lock(&s->lock);
	switch (offset) {
	case REG_DATA:
		v = (s->lcr & LCR_DLAB) ? s->dll : 0;
		break;
	case REG_IER:
		v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
		break;
	case REG_IIR:
		if ((s->ier & IER_THRI) && s->thr_empty_pending) {
			v = IIR_THRI;
			/* Reading IIR acknowledges a THRE interrupt. */
			s->thr_empty_pending = false;
		} else {
			v = IIR_NO_INT;
		}
		if (s->fifo_enabled)
			v |= IIR_FIFO_ENABLED;
		break;
	case REG_LCR:
		v = s->lcr;
		break;
	case REG_MCR:
		v = s->mcr;
		break;
	case REG_LSR:
		v = LSR_THRE | LSR_TEMT; /* transmission is instant */
		break;
	case REG_MSR:
		v = (s->mcr & MCR_LOOP) ? (uint8_t)((s->mcr & 0x0f) << 4)
					: (MSR_DCD | MSR_DSR | MSR_CTS);
		break;
	case REG_SCR:
		v = s->scr;
		break;
	default:
		v = 0xff;
		break;
	}
	update_irq_locked(s);
	pthread_mutex_unlock(&s->lock);
	return v;
}

void serial_write(struct serial *s, unsigned offset, uint8_t value)
{
	bool panicked = false;

	pthread_mutex_lock(&s->lock);
	switch (offset) {
	case REG_DATA:
		if (s->lcr & LCR_DLAB) {
			s->dll = value;
			break;
		}
		panicked = transmit_locked(s, value);
		s->thr_empty_pending = true;
		break;
	case REG_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = value;
			break;
		}
		/* Enabling THRE interrupts with an empty THR raises one at once. */
		if (!(s->ier & IER_THRI) && (value & IER_THRI))
			s->thr_empty_pending = true;
		s->ier = value & IER_MASK;
		break;
	case REG_IIR:
		s->fifo_enabled = value & FCR_ENABLE_FIFO;
		break;
	case REG_LCR:
		s->lcr = value;
		break;
	case REG_MCR:
		s->mcr = value & 0x1f;
		break;
	case REG_SCR:
		s->scr = value;
		break;
	default:
		break;
	}
	update_irq_locked(s);
	pthread_mutex_unlock(&s->lock);
	if (panicked)
		s->hooks.event(s->hooks.ctx, MACHINE_EVENT_PANIC);
}

static void bus_read_cb(void *opaque, uint64_t offset, uint8_t *data, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		data[i] = serial_read(opaque, (unsigned)(offset + i) & 7);
}

static void bus_write_cb(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		serial_write(opaque, (unsigned)(offset + i) & 7, data[i]);
}

const struct bus_ops serial_bus_ops = {
	.read = bus_read_cb,
	.write = bus_write_cb,
};

void serial_save(struct serial *s, struct snap_serial *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&s->lock);
	out->ier = s->ier;
	out->lcr = s->lcr;
	out->mcr = s->mcr;
	out->scr = s->scr;
	out->dll = s->dll;
	out->dlm = s->dlm;
	out->fifo_enabled = s->fifo_enabled;
	out->thr_empty_pending = s->thr_empty_pending;
	out->irq_level = s->irq_level;
	pthread_mutex_unlock(&s->lock);
}

void serial_restore(struct serial *s, const struct snap_serial *in)
{
	pthread_mutex_lock(&s->lock);
	s->ier = in->ier;
	s->lcr = in->lcr;
	s->mcr = in->mcr;
	s->scr = in->scr;
	s->dll = in->dll;
	s->dlm = in->dlm;
	s->fifo_enabled = in->fifo_enabled != 0;
	s->thr_empty_pending = in->thr_empty_pending != 0;
	/* The line's level is in the restored interrupt controllers already. */
	s->irq_level = in->irq_level != 0;
	pthread_mutex_unlock(&s->lock);
}
