#include "mptable.h"

#include <errno.h>
#include <string.h>

#include "layout.h"

struct mp_floating {
	char signature[4];
	uint32_t config_paddr;
	uint8_t length16;
	uint8_t revision;
	uint8_t checksum;
	uint8_t features[5];
} __attribute__((packed));

struct mp_config {
	char signature[4];
	uint16_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem[8];
	char product[12];
	uint32_t oem_table;
	uint16_t oem_table_size;
	uint16_t entries;
	uint32_t lapic_addr;
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

struct mp_cpu {
	uint8_t type;
	uint8_t apic_id;
	uint8_t apic_version;
	uint8_t flags;
	uint32_t signature;
	uint32_t features;
	uint32_t reserved[2];
} __attribute__((packed));

struct mp_bus {
	uint8_t type;
	uint8_t id;
	char name[6];
} __attribute__((packed));

struct mp_ioapic {
	uint8_t type;
	uint8_t id;
	uint8_t version;
	uint8_t flags;
	uint32_t addr;
} __attribute__((packed));

struct mp_irq {
	uint8_t type;
	uint8_t irq_type;
	uint16_t flags;
	uint8_t src_bus;
	uint8_t src_irq;
	uint8_t dst_apic;
	uint8_t dst_pin;
} __attribute__((packed));

enum {
	MP_ENTRY_CPU = 0,
	MP_ENTRY_BUS = 1,
	MP_ENTRY_IOAPIC = 2,
	MP_ENTRY_IRQ = 3,
	MP_ENTRY_LOCAL_IRQ = 4,
	MP_IRQ_INT = 0,
	MP_IRQ_NMI = 1,
	MP_IRQ_EXTINT = 3,
	MP_CPU_ENABLED = 1,
	MP_CPU_BSP = 2,
	MP_APIC_VERSION = 0x14,
	MP_IOAPIC_VERSION = 0x11,
	/* Family 6: what the CPU-feature fields of a modern x86 report. */
	MP_CPU_SIGNATURE = 0x600,
	MP_CPU_FEATURES = 0x201, /* FPU, APIC */
	MP_ALL_APICS = 0xff,
};

static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;

	while (len--)
		sum += *p++;
	return (uint8_t)(0 - sum);
}

int x86_mptable_build(uint8_t *buf, size_t buflen, uint64_t gpa, unsigned ncpus)
{
	size_t need = sizeof(struct mp_floating) + sizeof(struct mp_config) +
		      ncpus * sizeof(struct mp_cpu) + sizeof(struct mp_bus) +
		      sizeof(struct mp_ioapic) + (X86_MPTABLE_IRQS + 2) * sizeof(struct mp_irq);
	struct mp_floating *fp = (struct mp_floating *)buf;
	struct mp_config *cfg = (struct mp_config *)(buf + sizeof(*fp));
	uint8_t *p = (uint8_t *)(cfg + 1);
	uint8_t ioapic_id = (uint8_t)ncpus;
	uint16_t entries = 0;

	if (ncpus == 0 || ncpus > 254 || gpa + need > 0xffffffffull)
		return -EINVAL;
	if (buflen < need)
		return -ENOSPC;
	memset(buf, 0, need);

	for (unsigned i = 0; i < ncpus; i++, entries++) {
		struct mp_cpu *c = (struct mp_cpu *)p;

		c->type = MP_ENTRY_CPU;
		c->apic_id = (uint8_t)i;
		c->apic_version = MP_APIC_VERSION;
		c->flags = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0);
		c->signature = MP_CPU_SIGNATURE;
		c->features = MP_CPU_FEATURES;
		p += sizeof(*c);
	}
	{
		struct mp_bus *b = (struct mp_bus *)p;

		b->type = MP_ENTRY_BUS;
		b->id = 0;
		memcpy(b->name, "ISA   ", 6);
		p += sizeof(*b);
		entries++;
	}
	{
		struct mp_ioapic *io = (struct mp_ioapic *)p;

		io->type = MP_ENTRY_IOAPIC;
		io->id = ioapic_id;
		io->version = MP_IOAPIC_VERSION;
		io->flags = 1;
		io->addr = (uint32_t)X86_IOAPIC_ADDR;
		p += sizeof(*io);
		entries++;
	}
	for (unsigned irq = 0; irq < X86_MPTABLE_IRQS; irq++, entries++) {
		struct mp_irq *e = (struct mp_irq *)p;

		*e = (struct mp_irq){ .type = MP_ENTRY_IRQ, .irq_type = MP_IRQ_INT,
				      .src_bus = 0, .src_irq = (uint8_t)irq,
				      .dst_apic = ioapic_id, .dst_pin = (uint8_t)irq };
		p += sizeof(*e);
	}
	{
		struct mp_irq *e = (struct mp_irq *)p;

		e[0] = (struct mp_irq){ .type = MP_ENTRY_LOCAL_IRQ, .irq_type = MP_IRQ_EXTINT,
					.dst_apic = MP_ALL_APICS, .dst_pin = 0 };
		e[1] = (struct mp_irq){ .type = MP_ENTRY_LOCAL_IRQ, .irq_type = MP_IRQ_NMI,
					.dst_apic = MP_ALL_APICS, .dst_pin = 1 };
		p += 2 * sizeof(*e);
		entries += 2;
	}

	memcpy(cfg->signature, "PCMP", 4);
	cfg->length = (uint16_t)(p - (uint8_t *)cfg);
	cfg->revision = 4;
	memcpy(cfg->oem, "SANDVM  ", 8);
	memcpy(cfg->product, "MICROVM     ", 12);
	cfg->entries = entries;
	cfg->lapic_addr = (uint32_t)X86_LAPIC_ADDR;
	cfg->checksum = checksum((uint8_t *)cfg, cfg->length);

	memcpy(fp->signature, "_MP_", 4);
	fp->config_paddr = (uint32_t)(gpa + sizeof(*fp));
	fp->length16 = 1;
	fp->revision = 4;
	fp->checksum = checksum((uint8_t *)fp, sizeof(*fp));
	return (int)(p - buf);
}
