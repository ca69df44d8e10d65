#ifndef SANDVM_VMM_SNAPSHOT_FORMAT_H
#define SANDVM_VMM_SNAPSHOT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/*
 * The machine-state file of a VM snapshot (docs/vmm.md, "Snapshot file format"). Guest
 * RAM is not in it: it lives in a file of its own (the memory file), the
 * regions one after another, so a restore can map it MAP_PRIVATE.
 *
 * Layout, all integers little-endian:
 *
 *   header  magic "SVSNAP\r\n" (8) | u32 version | u32 flags (0) | u64 file length
 *   record  u32 type | u32 instance | u32 length | u32 reserved (0) | payload,
 *           padded with zero bytes to a multiple of 8
 *   ...
 *   END     the last record: payload = SHA-256 of every byte before it
 *
 * Records of one (type, instance) appear at most once. Each known type has a
 * size rule (fixed, or bounded and a whole number of elements), checked by
 * the parser, so a component reading a record may trust its length; unknown
 * types are refused (a snapshot from a newer VMM is not half understood).
 *
 * The writer and the parser are pure functions over memory: no I/O, no
 * globals. A hostile or truncated file is refused with a message saying what
 * is wrong and where.
 */

#define SNAP_MAGIC "SVSNAP\r\n"
#define SNAP_MAGIC_LEN 8u
#define SNAP_VERSION 1u
#define SNAP_HEADER_SIZE 24u
#define SNAP_RECORD_HEADER_SIZE 16u
#define SNAP_HASH_SIZE 32u
#define SNAP_MAX_FILE (16u << 20)  /* the state file, not guest RAM */
#define SNAP_MAX_RECORDS 4096u
#define SNAP_MAX_INSTANCE 255u     /* vCPU ids, device slots, chip numbers */

enum snap_type {
	/* The machine: struct snap_machine. Instance 0. */
	SNAP_MACHINE = 0x01,

	/* Per vCPU, instance = vCPU id; payloads are KVM's structs as KVM_GET_* fills them. */
	SNAP_VCPU_MP_STATE = 0x10, /* struct kvm_mp_state */
	SNAP_VCPU_REGS = 0x11,     /* struct kvm_regs */
	SNAP_VCPU_SREGS = 0x12,    /* struct kvm_sregs */
	SNAP_VCPU_XSAVE = 0x13,    /* KVM_GET_XSAVE(2) area: sizeof(struct kvm_xsave) .. SNAP_MAX_XSAVE, multiple of 4 */
	SNAP_VCPU_FPU = 0x14,      /* struct kvm_fpu (hosts without XSAVE) */
	SNAP_VCPU_XCRS = 0x15,     /* struct kvm_xcrs */
	SNAP_VCPU_DEBUGREGS = 0x16, /* struct kvm_debugregs */
	SNAP_VCPU_LAPIC = 0x17,    /* struct kvm_lapic_state */
	SNAP_VCPU_TSC_KHZ = 0x18,  /* u64 */
	SNAP_VCPU_CPUID = 0x19,    /* struct kvm_cpuid_entry2[n], 1 <= n <= SNAP_MAX_CPUID */
	SNAP_VCPU_MSRS = 0x1a,     /* struct kvm_msr_entry[n], 1 <= n <= SNAP_MAX_MSRS */
	SNAP_VCPU_EVENTS = 0x1b,   /* struct kvm_vcpu_events */

	/* VM-wide. */
	SNAP_VM_PIT2 = 0x20,    /* struct kvm_pit_state2, instance 0 */
	SNAP_VM_CLOCK = 0x21,   /* struct kvm_clock_data, instance 0 */
	SNAP_VM_IRQCHIP = 0x22, /* struct kvm_irqchip; instance = chip_id (0, 1 PIC; 2 IOAPIC) */

	/* Devices. */
	SNAP_DEV_VIRTIO = 0x30,       /* struct snap_virtio; instance = virtio-mmio slot */
	SNAP_DEV_VIRTIO_MODEL = 0x31, /* device model bytes, 0 .. SNAP_MAX_MODEL; instance = slot */
	SNAP_DEV_SERIAL = 0x32,       /* struct snap_serial, instance 0 */

	SNAP_END = 0xffff, /* SNAP_HASH_SIZE bytes: SHA-256 of the file before this record */
};

#define SNAP_MAX_XSAVE (64u << 10)
#define SNAP_MAX_CPUID 256u
#define SNAP_MAX_MSRS 512u
#define SNAP_MAX_MODEL 4096u
#define SNAP_MAX_REGIONS 4u
#define SNAP_MAX_QUEUES 8u
#define SNAP_MAX_VIRTIO 11u /* virtio-mmio slots (GSIs 5..15), as VM_MAX_VIRTIO */

/* Bits of snap_machine.flags. */
#define SNAP_MACHINE_HAS_XSAVE 0x1u /* vCPUs carry SNAP_VCPU_XSAVE, else SNAP_VCPU_FPU */

struct snap_machine {
	uint32_t cpus;
	uint32_t nregions;            /* guest RAM regions, in the memory file in this order */
	uint64_t memory_bytes;        /* sum of the regions' sizes = the memory file's length */
	uint64_t region_gpa[SNAP_MAX_REGIONS];
	uint64_t region_size[SNAP_MAX_REGIONS];
	uint32_t nvirtio;             /* virtio-mmio slots in use */
	uint32_t device_id[SNAP_MAX_VIRTIO]; /* per slot, the virtio device id (checked against the restoring VM's) */
	uint32_t flags;
	uint32_t reserved;
	uint64_t snapshot_unix_ns;    /* host wall clock when taken */
};

struct snap_virtq {
	uint32_t num;
	uint32_t ready;
	uint64_t desc, avail, used;
	uint16_t last_avail_idx, used_idx, signalled_used, reserved;
	uint32_t reserved2, reserved3; /* 48 bytes, no padding the compiler would leave unwritten */
};

struct snap_virtio {
	uint32_t device_id;
	uint32_t status;
	uint64_t driver_features;
	uint32_t isr;
	uint32_t config_generation;
	uint32_t device_features_sel, driver_features_sel, queue_sel;
	uint32_t nqueues;
	struct snap_virtq q[SNAP_MAX_QUEUES];
};

struct snap_serial {
	uint8_t ier, lcr, mcr, scr, dll, dlm;
	uint8_t fifo_enabled, thr_empty_pending, irq_level;
	uint8_t reserved[7];
};

/* ---- writing ---- */

struct snap_writer {
	uint8_t *buf;
	size_t len, cap;
	int err; /* the first failure (-ENOMEM, -E2BIG, -EINVAL); later puts do nothing */
};

/* Starts a file: the header, its length filled in by snap_writer_finish. */
void snap_writer_init(struct snap_writer *w);
/*
 * Appends one record (the payload copied, padded). A type, instance, length,
 * duplicate or SNAP_MACHINE the parser would refuse is -EINVAL here too, so a
 * VMM never writes what it cannot read; a record that would take the file
 * (with END) past SNAP_MAX_FILE is -E2BIG. Returns w->err after the call.
 */
int snap_put(struct snap_writer *w, uint32_t type, uint32_t instance, const void *data, uint32_t len);
/*
 * Appends END and fills in the length, then checks the whole file with
 * snap_parse (what no single record shows: SNAP_MACHINE missing, records for
 * vCPUs or slots it does not have): -EINVAL if the parser would refuse it.
 * 0 with the file in w->buf[0, w->len), or w->err.
 */
int snap_writer_finish(struct snap_writer *w);
void snap_writer_free(struct snap_writer *w);

/* ---- reading ---- */

struct snap_record {
	uint32_t type;
	uint32_t instance;
	uint32_t len;
	const uint8_t *data; /* into the parsed buffer */
};

/*
 * Checks a whole state file and indexes its records (at most max, which
 * should be SNAP_MAX_RECORDS): magic, version, flags, the length field
 * against len, every record header (known type, instance <= SNAP_MAX_INSTANCE,
 * the type's size rule, reserved zero, padding zero, within the file), no
 * (type, instance) twice, END last and exactly at the end, the hash; then
 * SNAP_MACHINE's own sanity (1 <= cpus <= SNAP_MAX_INSTANCE + 1, regions
 * sorted, non-overlapping, page-aligned, summing to memory_bytes, nvirtio
 * <= SNAP_MAX_VIRTIO, unused slots zero, flags known, reserved zero) and the
 * records' instances against it (vCPU records < cpus, device records <
 * nvirtio with the slot's device id, nqueues <= SNAP_MAX_QUEUES). A file
 * without SNAP_MACHINE is refused. 0 with *nrecs (END not counted), or
 * -EINVAL with err naming the offset and the fault (no "snapshot:" prefix:
 * the caller adds its own). Payloads start 8-aligned in the file, so at
 * 8-aligned addresses when buf is.
 */
int snap_parse(const uint8_t *buf, size_t len, struct snap_record *recs, unsigned max, unsigned *nrecs,
	       char *err, size_t errlen);

/* The record of (type, instance), or NULL. */
const struct snap_record *snap_find(const struct snap_record *recs, unsigned nrecs, uint32_t type,
				    uint32_t instance);

#endif
