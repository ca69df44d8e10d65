/* The snapshot state file: writer and parser (format.h, docs/vmm.md "Snapshot file format"). */
/*
 * SHA-256 through the low-level calls, which OpenSSL 3 still has under the
 * 1.1.1 API level: EVP's first digest in a process loads and indexes the
 * default provider, 0.5 ms on a real CPU and 25 ms in the nested runner, on
 * every restore's path; SHA256_Init..Final is 0.06 ms there, same bytes.
 */
#define OPENSSL_API_COMPAT 10101
#include "snapshot/format.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_PAGE 4096u

/* The file's structs are written as they are in memory: every byte must be a field. */
_Static_assert(sizeof(struct snap_machine) == 144, "snap_machine has padding");
_Static_assert(sizeof(struct snap_virtq) == 48, "snap_virtq has padding");
_Static_assert(sizeof(struct snap_virtio) == 40 + SNAP_MAX_QUEUES * 48, "snap_virtio has padding");
_Static_assert(sizeof(struct snap_serial) == 16, "snap_serial has padding");

/* The size and instance rule of one record type. */
struct snap_rule {
	uint32_t type;
	uint32_t min, max;  /* payload length bounds */
	uint32_t elem;      /* the length is a whole number of these */
	uint32_t max_instance;
	uint8_t per_vcpu;   /* instance is a vCPU id: below snap_machine.cpus */
	uint8_t per_slot;   /* instance is a virtio-mmio slot: below snap_machine.nvirtio */
	const char *name;
};

#define FIXED(t, size, inst, vcpu, slot) { t, size, size, size, inst, vcpu, slot, #t }

static const struct snap_rule snap_rules[] = {
	FIXED(SNAP_MACHINE, sizeof(struct snap_machine), 0, 0, 0),
	FIXED(SNAP_VCPU_MP_STATE, sizeof(struct kvm_mp_state), SNAP_MAX_INSTANCE, 1, 0),
	FIXED(SNAP_VCPU_REGS, sizeof(struct kvm_regs), SNAP_MAX_INSTANCE, 1, 0),
	FIXED(SNAP_VCPU_SREGS, sizeof(struct kvm_sregs), SNAP_MAX_INSTANCE, 1, 0),
	{ SNAP_VCPU_XSAVE, sizeof(struct kvm_xsave), SNAP_MAX_XSAVE, 4, SNAP_MAX_INSTANCE, 1, 0, "SNAP_VCPU_XSAVE" },
	FIXED(SNAP_VCPU_FPU, sizeof(struct kvm_fpu), SNAP_MAX_INSTANCE, 1, 0),
	FIXED(SNAP_VCPU_XCRS, sizeof(struct kvm_xcrs), SNAP_MAX_INSTANCE, 1, 0),
	FIXED(SNAP_VCPU_DEBUGREGS, sizeof(struct kvm_debugregs), SNAP_MAX_INSTANCE, 1, 0),
	FIXED(SNAP_VCPU_LAPIC, sizeof(struct kvm_lapic_state), SNAP_MAX_INSTANCE, 1, 0),
	FIXED(SNAP_VCPU_TSC_KHZ, sizeof(uint64_t), SNAP_MAX_INSTANCE, 1, 0),
	{ SNAP_VCPU_CPUID, sizeof(struct kvm_cpuid_entry2), SNAP_MAX_CPUID * sizeof(struct kvm_cpuid_entry2),
	  sizeof(struct kvm_cpuid_entry2), SNAP_MAX_INSTANCE, 1, 0, "SNAP_VCPU_CPUID" },
	{ SNAP_VCPU_MSRS, sizeof(struct kvm_msr_entry), SNAP_MAX_MSRS * sizeof(struct kvm_msr_entry),
	  sizeof(struct kvm_msr_entry), SNAP_MAX_INSTANCE, 1, 0, "SNAP_VCPU_MSRS" },
	FIXED(SNAP_VCPU_EVENTS, sizeof(struct kvm_vcpu_events), SNAP_MAX_INSTANCE, 1, 0),
	FIXED(SNAP_VM_PIT2, sizeof(struct kvm_pit_state2), 0, 0, 0),
	FIXED(SNAP_VM_CLOCK, sizeof(struct kvm_clock_data), 0, 0, 0),
	FIXED(SNAP_VM_IRQCHIP, sizeof(struct kvm_irqchip), 2, 0, 0), /* KVM_IRQCHIP_PIC_MASTER .. IOAPIC */
	FIXED(SNAP_DEV_VIRTIO, sizeof(struct snap_virtio), SNAP_MAX_VIRTIO - 1, 0, 1),
	{ SNAP_DEV_VIRTIO_MODEL, 0, SNAP_MAX_MODEL, 1, SNAP_MAX_VIRTIO - 1, 0, 1, "SNAP_DEV_VIRTIO_MODEL" },
	FIXED(SNAP_DEV_SERIAL, sizeof(struct snap_serial), 0, 0, 0),
	FIXED(SNAP_END, SNAP_HASH_SIZE, 0, 0, 0),
};

#define SNAP_NRULES (sizeof(snap_rules) / sizeof(snap_rules[0]))

static int snap_rule_index(uint32_t type)
{
	for (unsigned i = 0; i < SNAP_NRULES; i++)
		if (snap_rules[i].type == type)
			return (int)i;
	return -1;
}

static uint32_t snap_pad8(uint32_t len)
{
	return (len + 7u) & ~7u;
}

static uint32_t snap_get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t snap_get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static void snap_set32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static void snap_set64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static int snap_sha256(const uint8_t *data, size_t len, uint8_t out[SNAP_HASH_SIZE])
{
	SHA256_CTX c;

	if (SHA256_Init(&c) != 1 || SHA256_Update(&c, data, len) != 1 || SHA256_Final(out, &c) != 1)
		return -EIO;
	return 0;
}

/*
 * The rule's length and instance checks, shared by the writer and the parser
 * so that the one never accepts what the other refuses. NULL or the fault.
 */
static const char *snap_check_record(const struct snap_rule *r, uint32_t instance, uint32_t len)
{
	if (instance > r->max_instance)
		return "instance out of range";
	if (len < r->min || len > r->max || len % r->elem)
		return "wrong payload length";
	return NULL;
}

/* SNAP_MACHINE on its own. NULL or the fault. */
static const char *snap_check_machine(const struct snap_machine *m)
{
	uint64_t sum = 0, end = 0;

	if (m->cpus < 1 || m->cpus > SNAP_MAX_INSTANCE + 1)
		return "cpus out of range";
	if (m->nregions < 1 || m->nregions > SNAP_MAX_REGIONS)
		return "nregions out of range";
	for (uint32_t i = 0; i < SNAP_MAX_REGIONS; i++) {
		uint64_t gpa = m->region_gpa[i], size = m->region_size[i];

		if (i >= m->nregions) {
			if (gpa || size)
				return "unused region not zero";
			continue;
		}
		if (size == 0 || gpa % SNAP_PAGE || size % SNAP_PAGE)
			return "region empty or not page-aligned";
		if (gpa + size < gpa)
			return "region wraps around";
		if (i > 0 && gpa < end)
			return "regions unsorted or overlapping";
		end = gpa + size;
		sum += size; /* no overflow: each size is below 2^64 - gpa, and the regions are disjoint */
	}
	if (sum != m->memory_bytes)
		return "memory_bytes is not the regions' sum";
	if (m->nvirtio > SNAP_MAX_VIRTIO)
		return "nvirtio out of range";
	for (uint32_t i = 0; i < SNAP_MAX_VIRTIO; i++) {
		if (i < m->nvirtio && m->device_id[i] == 0)
			return "virtio slot in use with device id 0";
		if (i >= m->nvirtio && m->device_id[i] != 0)
			return "unused virtio slot not zero";
	}
	if (m->flags & ~SNAP_MACHINE_HAS_XSAVE)
		return "unknown machine flags";
	if (m->reserved)
		return "reserved not zero";
	return NULL;
}

/* ---- writing ---- */

void snap_writer_init(struct snap_writer *w)
{
	memset(w, 0, sizeof(*w));
	w->cap = 4096;
	w->buf = calloc(1, w->cap);
	if (!w->buf) {
		w->cap = 0;
		w->err = -ENOMEM;
		return;
	}
	memcpy(w->buf, SNAP_MAGIC, SNAP_MAGIC_LEN);
	snap_set32(w->buf + 8, SNAP_VERSION);
	snap_set32(w->buf + 12, 0);
	w->len = SNAP_HEADER_SIZE;
}

static int snap_writer_fail(struct snap_writer *w, int err)
{
	if (!w->err)
		w->err = err;
	return w->err;
}

/* Capacity for need bytes in all (the size limit is the caller's). */
static int snap_writer_grow(struct snap_writer *w, size_t need)
{
	size_t cap = w->cap;
	uint8_t *p;

	if (need <= cap)
		return 0;
	while (cap < need)
		cap *= 2;
	p = realloc(w->buf, cap);
	if (!p)
		return -ENOMEM;
	w->buf = p;
	w->cap = cap;
	return 0;
}

/* Whether (type, instance) is already in the file, and how many records it holds. */
static int snap_writer_has(const struct snap_writer *w, uint32_t type, uint32_t instance, unsigned *count)
{
	size_t off = SNAP_HEADER_SIZE;

	*count = 0;
	while (off < w->len) {
		const uint8_t *h = w->buf + off;

		if (snap_get32(h) == type && snap_get32(h + 4) == instance)
			return 1;
		(*count)++;
		off += SNAP_RECORD_HEADER_SIZE + snap_pad8(snap_get32(h + 8));
	}
	return 0;
}

static void snap_put_raw(struct snap_writer *w, uint32_t type, uint32_t instance, const void *data, uint32_t len)
{
	uint8_t *h = w->buf + w->len;
	uint32_t padded = snap_pad8(len);

	snap_set32(h, type);
	snap_set32(h + 4, instance);
	snap_set32(h + 8, len);
	snap_set32(h + 12, 0);
	if (len)
		memcpy(h + SNAP_RECORD_HEADER_SIZE, data, len);
	memset(h + SNAP_RECORD_HEADER_SIZE + len, 0, padded - len);
	w->len += SNAP_RECORD_HEADER_SIZE + padded;
}

int snap_put(struct snap_writer *w, uint32_t type, uint32_t instance, const void *data, uint32_t len)
{
	int idx = snap_rule_index(type);
	struct snap_machine m;
	unsigned count;
	size_t need;
	int rc;

	if (w->err)
		return w->err;
	/* END is snap_writer_finish's. */
	if (idx < 0 || type == SNAP_END || (len && !data) || snap_check_record(&snap_rules[idx], instance, len))
		return snap_writer_fail(w, -EINVAL);
	if (type == SNAP_MACHINE) {
		memcpy(&m, data, sizeof(m));
		if (snap_check_machine(&m))
			return snap_writer_fail(w, -EINVAL);
	}
	if (snap_writer_has(w, type, instance, &count))
		return snap_writer_fail(w, -EINVAL);
	if (count >= SNAP_MAX_RECORDS)
		return snap_writer_fail(w, -E2BIG);
	need = w->len + SNAP_RECORD_HEADER_SIZE + snap_pad8(len);
	/* END must still fit after it. */
	if (need + SNAP_RECORD_HEADER_SIZE + SNAP_HASH_SIZE > SNAP_MAX_FILE)
		return snap_writer_fail(w, -E2BIG);
	rc = snap_writer_grow(w, need);
	if (rc)
		return snap_writer_fail(w, rc);
	snap_put_raw(w, type, instance, data, len);
	return 0;
}

int snap_writer_finish(struct snap_writer *w)
{
	uint8_t hash[SNAP_HASH_SIZE];
	struct snap_record *recs;
	unsigned nrecs;
	size_t end_off;
	char err[160];
	int rc;

	if (w->err)
		return w->err;
	/* Every snap_put left room for END within SNAP_MAX_FILE. */
	rc = snap_writer_grow(w, w->len + SNAP_RECORD_HEADER_SIZE + SNAP_HASH_SIZE);
	if (rc)
		return snap_writer_fail(w, rc);
	end_off = w->len;
	snap_set64(w->buf + 16, end_off + SNAP_RECORD_HEADER_SIZE + SNAP_HASH_SIZE);
	rc = snap_sha256(w->buf, end_off, hash);
	if (rc)
		return snap_writer_fail(w, rc);
	snap_put_raw(w, SNAP_END, 0, hash, SNAP_HASH_SIZE);

	/*
	 * What snap_put cannot see record by record (no SNAP_MACHINE, records
	 * that disagree with it): the parser has the last word, so a VMM never
	 * writes a file it would refuse to restore.
	 */
	recs = malloc(SNAP_MAX_RECORDS * sizeof(*recs));
	if (!recs)
		return snap_writer_fail(w, -ENOMEM);
	rc = snap_parse(w->buf, w->len, recs, SNAP_MAX_RECORDS, &nrecs, err, sizeof(err));
	free(recs);
	if (rc) {
		w->len = end_off;
		return snap_writer_fail(w, rc);
	}
	return 0;
}

void snap_writer_free(struct snap_writer *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

/* ---- reading ---- */

__attribute__((format(printf, 4, 5)))
static int snap_fail(char *err, size_t errlen, size_t off, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err && errlen) {
		n = snprintf(err, errlen, "state file, offset %zu: ", off);
		if (n >= 0 && (size_t)n < errlen) {
			va_start(ap, fmt);
			vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -EINVAL;
}

/* The cross-checks between SNAP_MACHINE and the records that name its vCPUs and slots. */
static int snap_check_against_machine(const uint8_t *buf, const struct snap_record *recs, unsigned nrecs,
				      const struct snap_machine *m, char *err, size_t errlen)
{
	for (unsigned i = 0; i < nrecs; i++) {
		const struct snap_record *r = &recs[i];
		const struct snap_rule *rule = &snap_rules[snap_rule_index(r->type)];
		size_t off = (size_t)(r->data - buf) - SNAP_RECORD_HEADER_SIZE;
		struct snap_virtio v;

		if (rule->per_vcpu && r->instance >= m->cpus)
			return snap_fail(err, errlen, off, "%s for vCPU %" PRIu32 ", the machine has %" PRIu32,
					 rule->name, r->instance, m->cpus);
		if (rule->per_slot && r->instance >= m->nvirtio)
			return snap_fail(err, errlen, off, "%s for slot %" PRIu32 ", the machine has %" PRIu32,
					 rule->name, r->instance, m->nvirtio);
		if (r->type != SNAP_DEV_VIRTIO)
			continue;
		memcpy(&v, r->data, sizeof(v));
		if (v.device_id != m->device_id[r->instance])
			return snap_fail(err, errlen, off, "slot %" PRIu32 " has device id %" PRIu32 ", the machine says %" PRIu32,
					 r->instance, v.device_id, m->device_id[r->instance]);
		if (v.nqueues > SNAP_MAX_QUEUES)
			return snap_fail(err, errlen, off, "slot %" PRIu32 " has %" PRIu32 " queues, at most %u",
					 r->instance, v.nqueues, SNAP_MAX_QUEUES);
	}
	return 0;
}

int snap_parse(const uint8_t *buf, size_t len, struct snap_record *recs, unsigned max, unsigned *nrecs,
	       char *err, size_t errlen)
{
	/* (type, instance) seen: one bit per instance per known type. */
	uint64_t seen[SNAP_NRULES][(SNAP_MAX_INSTANCE + 1) / 64] = { { 0 } };
	uint8_t hash[SNAP_HASH_SIZE];
	const struct snap_record *mrec;
	struct snap_machine m;
	const char *fault;
	uint64_t flen;
	unsigned n = 0;
	size_t off;

	*nrecs = 0;
	if (len < SNAP_HEADER_SIZE)
		return snap_fail(err, errlen, 0, "%zu bytes, shorter than the header", len);
	if (memcmp(buf, SNAP_MAGIC, SNAP_MAGIC_LEN) != 0)
		return snap_fail(err, errlen, 0, "bad magic, not a snapshot state file");
	if (snap_get32(buf + 8) != SNAP_VERSION)
		return snap_fail(err, errlen, 8, "version %" PRIu32 ", this VMM reads %u", snap_get32(buf + 8),
				 SNAP_VERSION);
	if (snap_get32(buf + 12) != 0)
		return snap_fail(err, errlen, 12, "unknown flags 0x%" PRIx32, snap_get32(buf + 12));
	flen = snap_get64(buf + 16);
	if (flen != len)
		return snap_fail(err, errlen, 16, "length field says %" PRIu64 " bytes, the file has %zu", flen, len);
	if (len > SNAP_MAX_FILE)
		return snap_fail(err, errlen, 16, "%zu bytes, more than %u", len, SNAP_MAX_FILE);

	off = SNAP_HEADER_SIZE;
	for (;;) {
		uint32_t type, instance, rlen, padded;
		const struct snap_rule *rule;
		int idx;

		if (len - off < SNAP_RECORD_HEADER_SIZE)
			return snap_fail(err, errlen, off, off == len ? "no END record" : "truncated record header");
		type = snap_get32(buf + off);
		instance = snap_get32(buf + off + 4);
		rlen = snap_get32(buf + off + 8);
		idx = snap_rule_index(type);
		if (idx < 0)
			return snap_fail(err, errlen, off, "unknown record type 0x%" PRIx32, type);
		rule = &snap_rules[idx];
		if (snap_get32(buf + off + 12) != 0)
			return snap_fail(err, errlen, off, "%s: reserved not zero", rule->name);
		if (instance > rule->max_instance)
			return snap_fail(err, errlen, off, "%s: instance %" PRIu32 ", at most %" PRIu32, rule->name,
					 instance, rule->max_instance);
		if (snap_check_record(rule, instance, rlen))
			return snap_fail(err, errlen, off, "%s: %" PRIu32 " payload bytes, wrong for the type", rule->name,
					 rlen);
		padded = snap_pad8(rlen); /* rlen <= SNAP_MAX_XSAVE: no overflow */
		if (len - off - SNAP_RECORD_HEADER_SIZE < padded)
			return snap_fail(err, errlen, off, "%s: %" PRIu32 " payload bytes run past the end", rule->name,
					 rlen);
		for (uint32_t i = rlen; i < padded; i++)
			if (buf[off + SNAP_RECORD_HEADER_SIZE + i])
				return snap_fail(err, errlen, off + SNAP_RECORD_HEADER_SIZE + i, "%s: padding not zero",
						 rule->name);
		if (seen[idx][instance / 64] & (1ull << (instance % 64)))
			return snap_fail(err, errlen, off, "%s instance %" PRIu32 " twice", rule->name, instance);
		seen[idx][instance / 64] |= 1ull << (instance % 64);
		if (type == SNAP_END) {
			if (off + SNAP_RECORD_HEADER_SIZE + padded != len)
				return snap_fail(err, errlen, off, "END is not the last record");
			if (snap_sha256(buf, off, hash) != 0)
				return snap_fail(err, errlen, off, "cannot compute SHA-256");
			if (memcmp(hash, buf + off + SNAP_RECORD_HEADER_SIZE, SNAP_HASH_SIZE) != 0)
				return snap_fail(err, errlen, off, "hash mismatch: the file is damaged");
			break;
		}
		if (n >= max || n >= SNAP_MAX_RECORDS)
			return snap_fail(err, errlen, off, "more than %u records", max < SNAP_MAX_RECORDS ? max : SNAP_MAX_RECORDS);
		recs[n++] = (struct snap_record){ type, instance, rlen, buf + off + SNAP_RECORD_HEADER_SIZE };
		off += SNAP_RECORD_HEADER_SIZE + padded;
	}

	mrec = snap_find(recs, n, SNAP_MACHINE, 0);
	if (!mrec)
		return snap_fail(err, errlen, SNAP_HEADER_SIZE, "no SNAP_MACHINE record");
	memcpy(&m, mrec->data, sizeof(m));
	if ((fault = snap_check_machine(&m)))
		return snap_fail(err, errlen, (size_t)(mrec->data - buf), "SNAP_MACHINE: %s", fault);
	if (snap_check_against_machine(buf, recs, n, &m, err, errlen))
		return -EINVAL;
	*nrecs = n;
	return 0;
}

const struct snap_record *snap_find(const struct snap_record *recs, unsigned nrecs, uint32_t type,
				    uint32_t instance)
{
	for (unsigned i = 0; i < nrecs; i++)
		if (recs[i].type == type && recs[i].instance == instance)
			return &recs[i];
	return NULL;
}
