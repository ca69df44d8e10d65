/*
 * The snapshot state file: a full machine's records round trip, and every
 * refusal of the parser (header, record headers, size rules, padding,
 * duplicates, END, the hash, the machine's sanity) with hostile files built
 * byte by byte. The writer must refuse exactly what the parser refuses: a
 * random comparison of both over the same records checks that.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "snapshot/format.h"

#define RAW_CAP (512u << 10)
#define MAXR SNAP_MAX_RECORDS

static struct snap_record recs[MAXR];
static char err[256];

/* ---- a raw builder: the format without any check, for files the writer would never make ---- */

struct raw {
	uint8_t *b;
	size_t len;
};

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static void raw_init(struct raw *r)
{
	r->b = calloc(1, RAW_CAP);
	assert_non_null(r->b);
	memcpy(r->b, SNAP_MAGIC, SNAP_MAGIC_LEN);
	put32(r->b + 8, SNAP_VERSION);
	r->len = SNAP_HEADER_SIZE;
}

static void raw_rec(struct raw *r, uint32_t type, uint32_t instance, const void *data, uint32_t len)
{
	uint32_t padded = (len + 7) & ~7u;

	assert_true(r->len + SNAP_RECORD_HEADER_SIZE + padded <= RAW_CAP);
	put32(r->b + r->len, type);
	put32(r->b + r->len + 4, instance);
	put32(r->b + r->len + 8, len);
	put32(r->b + r->len + 12, 0);
	if (len)
		memcpy(r->b + r->len + SNAP_RECORD_HEADER_SIZE, data, len);
	r->len += SNAP_RECORD_HEADER_SIZE + padded;
}

/* The length field and the hash over everything before the last 48 bytes (END). */
static void seal(uint8_t *b, size_t len)
{
	unsigned int n;

	put64(b + 16, len);
	assert_int_equal(EVP_Digest(b, len - 48, b + len - 32, &n, EVP_sha256(), NULL), 1);
}

static void raw_end(struct raw *r)
{
	uint8_t zero[SNAP_HASH_SIZE] = { 0 };

	raw_rec(r, SNAP_END, 0, zero, sizeof(zero));
	seal(r->b, r->len);
}

/* ---- a whole machine ---- */

static struct snap_machine machine(void)
{
	struct snap_machine m;

	memset(&m, 0, sizeof(m));
	m.cpus = 2;
	m.nregions = 2;
	m.region_gpa[0] = 0;
	m.region_size[0] = 256u << 20;
	m.region_gpa[1] = 4ull << 30;
	m.region_size[1] = 64u << 20;
	m.memory_bytes = (256u << 20) + (64u << 20);
	m.nvirtio = 2;
	m.device_id[0] = 4;  /* rng */
	m.device_id[1] = 19; /* vsock */
	m.flags = SNAP_MACHINE_HAS_XSAVE;
	m.snapshot_unix_ns = 1700000000123456789ull;
	return m;
}

static struct snap_virtio virtio(uint32_t device_id)
{
	struct snap_virtio v;

	memset(&v, 0, sizeof(v));
	v.device_id = device_id;
	v.status = 0xf;
	v.driver_features = 1ull << 32;
	v.nqueues = 3;
	v.q[0] = (struct snap_virtq){ .num = 256, .ready = 1, .desc = 0x1000, .avail = 0x2000, .used = 0x3000,
				      .last_avail_idx = 7, .used_idx = 7, .signalled_used = 6 };
	return v;
}

/* A payload of len bytes that names its record, so a mix-up shows. */
static uint8_t *pattern(uint32_t type, uint32_t instance, uint32_t len)
{
	static uint8_t p[SNAP_MAX_XSAVE + 64];

	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)(type * 31 + instance * 7 + i);
	return p;
}

struct rec_spec {
	uint32_t type, instance, len;
};

static const struct rec_spec vcpu_recs[] = {
	{ SNAP_VCPU_MP_STATE, 0, sizeof(struct kvm_mp_state) },
	{ SNAP_VCPU_REGS, 0, sizeof(struct kvm_regs) },
	{ SNAP_VCPU_SREGS, 0, sizeof(struct kvm_sregs) },
	{ SNAP_VCPU_XSAVE, 0, sizeof(struct kvm_xsave) + 256 },
	{ SNAP_VCPU_XCRS, 0, sizeof(struct kvm_xcrs) },
	{ SNAP_VCPU_DEBUGREGS, 0, sizeof(struct kvm_debugregs) },
	{ SNAP_VCPU_LAPIC, 0, sizeof(struct kvm_lapic_state) },
	{ SNAP_VCPU_TSC_KHZ, 0, 8 },
	{ SNAP_VCPU_CPUID, 0, 3 * sizeof(struct kvm_cpuid_entry2) },
	{ SNAP_VCPU_MSRS, 0, 5 * sizeof(struct kvm_msr_entry) },
	{ SNAP_VCPU_EVENTS, 0, sizeof(struct kvm_vcpu_events) },
};
#define NVCPU_RECS (sizeof(vcpu_recs) / sizeof(vcpu_recs[0]))

/* Writes the machine above through the writer: 0 or its error. */
static int write_machine(struct snap_writer *w)
{
	struct snap_machine m = machine();
	struct snap_virtio v0 = virtio(4), v1 = virtio(19);
	struct snap_serial s = { .ier = 1, .lcr = 3, .mcr = 8, .thr_empty_pending = 1 };

	snap_writer_init(w);
	snap_put(w, SNAP_MACHINE, 0, &m, sizeof(m));
	for (uint32_t cpu = 0; cpu < 2; cpu++)
		for (unsigned i = 0; i < NVCPU_RECS; i++)
			snap_put(w, vcpu_recs[i].type, cpu, pattern(vcpu_recs[i].type, cpu, vcpu_recs[i].len),
				 vcpu_recs[i].len);
	snap_put(w, SNAP_VM_PIT2, 0, pattern(SNAP_VM_PIT2, 0, sizeof(struct kvm_pit_state2)),
		 sizeof(struct kvm_pit_state2));
	snap_put(w, SNAP_VM_CLOCK, 0, pattern(SNAP_VM_CLOCK, 0, sizeof(struct kvm_clock_data)),
		 sizeof(struct kvm_clock_data));
	for (uint32_t chip = 0; chip < 3; chip++)
		snap_put(w, SNAP_VM_IRQCHIP, chip, pattern(SNAP_VM_IRQCHIP, chip, sizeof(struct kvm_irqchip)),
			 sizeof(struct kvm_irqchip));
	snap_put(w, SNAP_DEV_VIRTIO, 0, &v0, sizeof(v0));
	snap_put(w, SNAP_DEV_VIRTIO_MODEL, 0, NULL, 0);
	snap_put(w, SNAP_DEV_VIRTIO, 1, &v1, sizeof(v1));
	snap_put(w, SNAP_DEV_VIRTIO_MODEL, 1, pattern(SNAP_DEV_VIRTIO_MODEL, 1, 13), 13);
	snap_put(w, SNAP_DEV_SERIAL, 0, &s, sizeof(s));
	return snap_writer_finish(w);
}

#define NMACHINE_RECS (1 + 2 * NVCPU_RECS + 2 + 3 + 4 + 1)

/* A valid file, copied into a buffer of its own with slack (callers modify it). */
static uint8_t *valid_file(size_t *len)
{
	struct snap_writer w;
	uint8_t *b;

	assert_int_equal(write_machine(&w), 0);
	b = calloc(1, w.len + 4096);
	assert_non_null(b);
	memcpy(b, w.buf, w.len);
	*len = w.len;
	snap_writer_free(&w);
	return b;
}

/* The offset of the record header of (type, instance) in a file. */
static size_t rec_off(const uint8_t *b, size_t len, uint32_t type, uint32_t instance)
{
	unsigned n;
	const struct snap_record *r;

	assert_int_equal(snap_parse(b, len, recs, MAXR, &n, err, sizeof(err)), 0);
	r = snap_find(recs, n, type, instance);
	assert_non_null(r);
	return (size_t)(r->data - b) - SNAP_RECORD_HEADER_SIZE;
}

static void expect_refused(const uint8_t *b, size_t len, const char *what)
{
	unsigned n = 77;

	err[0] = 0;
	assert_int_equal(snap_parse(b, len, recs, MAXR, &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(n, 0);
	if (!strstr(err, what))
		fail_msg("expected \"%s\" in \"%s\"", what, err);
	assert_non_null(strstr(err, "offset "));
}

/* ---- tests ---- */

static void round_trip(void **state)
{
	struct snap_machine m = machine(), back;
	const struct snap_record *r;
	struct snap_writer w;
	unsigned n;
	uint64_t flen;

	(void)state;
	assert_int_equal(write_machine(&w), 0);
	assert_int_equal(w.len % 8, 0);
	assert_memory_equal(w.buf, SNAP_MAGIC, SNAP_MAGIC_LEN);
	memcpy(&flen, w.buf + 16, 8);
	assert_int_equal(flen, w.len);
	assert_int_equal(snap_parse(w.buf, w.len, recs, MAXR, &n, err, sizeof(err)), 0);
	assert_int_equal(n, NMACHINE_RECS);

	r = snap_find(recs, n, SNAP_MACHINE, 0);
	assert_non_null(r);
	assert_int_equal(r->len, sizeof(back));
	memcpy(&back, r->data, sizeof(back));
	assert_memory_equal(&back, &m, sizeof(m));
	for (uint32_t cpu = 0; cpu < 2; cpu++)
		for (unsigned i = 0; i < NVCPU_RECS; i++) {
			r = snap_find(recs, n, vcpu_recs[i].type, cpu);
			assert_non_null(r);
			assert_int_equal(r->len, vcpu_recs[i].len);
			assert_memory_equal(r->data, pattern(vcpu_recs[i].type, cpu, vcpu_recs[i].len), r->len);
		}
	r = snap_find(recs, n, SNAP_DEV_VIRTIO_MODEL, 0);
	assert_non_null(r);
	assert_int_equal(r->len, 0);
	r = snap_find(recs, n, SNAP_DEV_VIRTIO_MODEL, 1);
	assert_non_null(r);
	assert_int_equal(r->len, 13);
	assert_memory_equal(r->data, pattern(SNAP_DEV_VIRTIO_MODEL, 1, 13), 13);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal((recs[i].data - w.buf) % 8, 0);
	assert_null(snap_find(recs, n, SNAP_VCPU_FPU, 0));
	assert_null(snap_find(recs, n, SNAP_VCPU_REGS, 2));
	assert_null(snap_find(recs, n, SNAP_END, 0));

	/* Exactly max records is enough; one fewer is refused. */
	assert_int_equal(snap_parse(w.buf, w.len, recs, NMACHINE_RECS, &n, err, sizeof(err)), 0);
	assert_int_equal(snap_parse(w.buf, w.len, recs, NMACHINE_RECS - 1, &n, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "more than"));
	/* A short message buffer, or none, is fine. */
	assert_int_equal(snap_parse(w.buf, w.len - 1, recs, MAXR, &n, err, 5), -EINVAL);
	assert_int_equal(strlen(err), 4);
	assert_int_equal(snap_parse(w.buf, w.len - 1, recs, MAXR, &n, NULL, 0), -EINVAL);
	snap_writer_free(&w);
}

static void bad_header(void **state)
{
	size_t len;
	uint8_t *b = valid_file(&len);

	(void)state;
	expect_refused(b, 0, "shorter than the header");
	expect_refused(b, SNAP_HEADER_SIZE - 1, "shorter than the header");
	b[7] = '\0';
	expect_refused(b, len, "bad magic");
	b[7] = '\n';
	put32(b + 8, 2);
	expect_refused(b, len, "version 2");
	put32(b + 8, 0);
	expect_refused(b, len, "version 0");
	put32(b + 8, SNAP_VERSION);
	put32(b + 12, 1);
	expect_refused(b, len, "unknown flags");
	put32(b + 12, 0);
	put64(b + 16, len + 8);
	expect_refused(b, len, "length field");
	put64(b + 16, len - 8);
	expect_refused(b, len, "length field");
	put64(b + 16, 1ull << 63);
	expect_refused(b, len, "length field");
	put64(b + 16, len);
	assert_int_equal(snap_parse(b, len, recs, MAXR, &(unsigned){ 0 }, err, sizeof(err)), 0);
	/* A trailing byte the length field does not cover, or one it claims. */
	expect_refused(b, len + 1, "length field");
	free(b);
}

static void too_big(void **state)
{
	size_t len = SNAP_MAX_FILE + 8;
	uint8_t *b = calloc(1, len);

	(void)state;
	assert_non_null(b);
	memcpy(b, SNAP_MAGIC, SNAP_MAGIC_LEN);
	put32(b + 8, SNAP_VERSION);
	put64(b + 16, len);
	expect_refused(b, len, "more than");
	free(b);
}

/* Every prefix of a valid file is refused, with the length field agreeing or not. */
static void truncated_anywhere(void **state)
{
	size_t len;
	uint8_t *b = valid_file(&len);
	uint8_t *c = malloc(len);

	(void)state;
	assert_non_null(c);
	for (size_t cut = 0; cut < len; cut++) {
		unsigned n;

		memcpy(c, b, len);
		assert_int_equal(snap_parse(c, cut, recs, MAXR, &n, err, sizeof(err)), -EINVAL);
		if (cut >= SNAP_HEADER_SIZE) {
			put64(c + 16, cut);
			assert_int_equal(snap_parse(c, cut, recs, MAXR, &n, err, sizeof(err)), -EINVAL);
		}
	}
	/* Where the cut lands says which fault. */
	memcpy(c, b, len);
	{
		size_t x = rec_off(b, len, SNAP_VCPU_XSAVE, 1);

		put64(c + 16, x + 100);
		expect_refused(c, x + 100, "run past the end");
		put64(c + 16, x + 8);
		expect_refused(c, x + 8, "truncated record header");
		put64(c + 16, x);
		expect_refused(c, x, "no END record");
	}
	free(c);
	free(b);
}

static void record_past_the_end(void **state)
{
	struct snap_machine m = machine();
	struct raw r;

	(void)state;
	/* A model record claiming 4096 bytes with 16 left: then the file ends. */
	raw_init(&r);
	raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
	raw_rec(&r, SNAP_DEV_VIRTIO_MODEL, 0, "0123456789abcdef", 16);
	put32(r.b + r.len - 32 + 8, SNAP_MAX_MODEL);
	put64(r.b + 16, r.len);
	expect_refused(r.b, r.len, "run past the end");
	free(r.b);
}

/* A file of the valid machine plus one raw record (before END), sealed. */
static void with_record(struct raw *r, uint32_t type, uint32_t instance, const void *data, uint32_t len)
{
	struct snap_machine m = machine();

	raw_init(r);
	raw_rec(r, SNAP_MACHINE, 0, &m, sizeof(m));
	raw_rec(r, type, instance, data, len);
	raw_end(r);
}

static void unknown_type_and_instance(void **state)
{
	struct snap_virtio v = virtio(4);
	struct raw r;
	static const struct {
		uint32_t type, instance, len;
	} bad[] = {
		{ SNAP_VCPU_REGS, SNAP_MAX_INSTANCE + 1, sizeof(struct kvm_regs) },
		{ SNAP_VCPU_TSC_KHZ, 0xffffffffu, 8 },
		{ SNAP_VM_PIT2, 1, sizeof(struct kvm_pit_state2) },
		{ SNAP_VM_CLOCK, 1, sizeof(struct kvm_clock_data) },
		{ SNAP_VM_IRQCHIP, 3, sizeof(struct kvm_irqchip) },
		{ SNAP_DEV_VIRTIO_MODEL, SNAP_MAX_VIRTIO, 0 },
		{ SNAP_DEV_SERIAL, 1, sizeof(struct snap_serial) },
	};

	(void)state;
	with_record(&r, 0x99, 0, "abcd", 4);
	expect_refused(r.b, r.len, "unknown record type 0x99");
	free(r.b);
	with_record(&r, 0, 0, NULL, 0);
	expect_refused(r.b, r.len, "unknown record type 0x0");
	free(r.b);
	with_record(&r, SNAP_END + 1, 0, NULL, 0);
	expect_refused(r.b, r.len, "unknown record type");
	free(r.b);

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		with_record(&r, bad[i].type, bad[i].instance, pattern(1, 2, bad[i].len), bad[i].len);
		expect_refused(r.b, r.len, "instance");
		free(r.b);
	}
	with_record(&r, SNAP_DEV_VIRTIO, SNAP_MAX_VIRTIO, &v, sizeof(v));
	expect_refused(r.b, r.len, "instance");
	free(r.b);
	/* SNAP_MACHINE at instance 1 (and none at 0). */
	{
		struct snap_machine m = machine();

		raw_init(&r);
		raw_rec(&r, SNAP_MACHINE, 1, &m, sizeof(m));
		raw_end(&r);
		expect_refused(r.b, r.len, "instance");
		free(r.b);
	}
}

/* Lengths a type's rule refuses, and one it takes, for each type. */
static const struct {
	uint32_t type, ok, bad[5];
} size_rules[] = {
	{ SNAP_MACHINE, sizeof(struct snap_machine), { 0, sizeof(struct snap_machine) - 8, sizeof(struct snap_machine) + 8, 1 } },
	{ SNAP_VCPU_MP_STATE, 4, { 0, 3, 5, 8 } },
	{ SNAP_VCPU_REGS, sizeof(struct kvm_regs), { 0, sizeof(struct kvm_regs) - 8, sizeof(struct kvm_regs) + 1 } },
	{ SNAP_VCPU_SREGS, sizeof(struct kvm_sregs), { 0, sizeof(struct kvm_sregs) - 1, sizeof(struct kvm_sregs) + 8 } },
	{ SNAP_VCPU_XSAVE, SNAP_MAX_XSAVE, { 0, sizeof(struct kvm_xsave) - 4, sizeof(struct kvm_xsave) + 2,
					     SNAP_MAX_XSAVE + 4, SNAP_MAX_XSAVE - 1 } },
	{ SNAP_VCPU_FPU, sizeof(struct kvm_fpu), { 0, sizeof(struct kvm_fpu) - 8, sizeof(struct kvm_fpu) + 8 } },
	{ SNAP_VCPU_XCRS, sizeof(struct kvm_xcrs), { 0, sizeof(struct kvm_xcrs) + 8 } },
	{ SNAP_VCPU_DEBUGREGS, sizeof(struct kvm_debugregs), { 0, sizeof(struct kvm_debugregs) - 8 } },
	{ SNAP_VCPU_LAPIC, sizeof(struct kvm_lapic_state), { 0, 1023, 1025, 2048 } },
	{ SNAP_VCPU_TSC_KHZ, 8, { 0, 4, 16 } },
	{ SNAP_VCPU_CPUID, SNAP_MAX_CPUID * sizeof(struct kvm_cpuid_entry2),
	  { 0, sizeof(struct kvm_cpuid_entry2) - 8, sizeof(struct kvm_cpuid_entry2) + 8,
	    (SNAP_MAX_CPUID + 1) * sizeof(struct kvm_cpuid_entry2) } },
	{ SNAP_VCPU_MSRS, SNAP_MAX_MSRS * sizeof(struct kvm_msr_entry),
	  { 0, 8, 24, (SNAP_MAX_MSRS + 1) * sizeof(struct kvm_msr_entry) } },
	{ SNAP_VCPU_EVENTS, sizeof(struct kvm_vcpu_events), { 0, sizeof(struct kvm_vcpu_events) + 8 } },
	{ SNAP_VM_PIT2, sizeof(struct kvm_pit_state2), { 0, sizeof(struct kvm_pit_state2) - 8 } },
	{ SNAP_VM_CLOCK, sizeof(struct kvm_clock_data), { 0, sizeof(struct kvm_clock_data) + 8 } },
	{ SNAP_VM_IRQCHIP, sizeof(struct kvm_irqchip), { 0, sizeof(struct kvm_irqchip) - 8 } },
	{ SNAP_DEV_VIRTIO_MODEL, SNAP_MAX_MODEL, { SNAP_MAX_MODEL + 1, SNAP_MAX_MODEL + 8 } },
	{ SNAP_DEV_SERIAL, sizeof(struct snap_serial), { 0, 8, 24 } },
	{ SNAP_END, SNAP_HASH_SIZE, { 0, 24, 40 } },
};

static void wrong_size_per_type(void **state)
{
	struct snap_writer w;
	struct raw r;

	(void)state;
	for (unsigned i = 0; i < sizeof(size_rules) / sizeof(size_rules[0]); i++) {
		uint32_t type = size_rules[i].type;

		/* The machine record is tried in place of the real one: instance 0 is taken. */
		for (unsigned j = 0; j < 5; j++) {
			uint32_t len = size_rules[i].bad[j];

			if (j > 0 && len == 0)
				break;
			raw_init(&r);
			if (type != SNAP_MACHINE) {
				struct snap_machine m = machine();

				raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
			}
			raw_rec(&r, type, 0, pattern(type, 0, len), len);
			raw_end(&r);
			expect_refused(r.b, r.len, "wrong for the type");
			free(r.b);

			snap_writer_init(&w);
			assert_int_equal(snap_put(&w, type, 0, pattern(type, 0, len), len), -EINVAL);
			snap_writer_free(&w);
		}
	}
	/* The largest lengths are taken (the machine's own size is the round trip's). */
	for (unsigned i = 0; i < sizeof(size_rules) / sizeof(size_rules[0]); i++) {
		uint32_t type = size_rules[i].type;
		unsigned n;

		if (type == SNAP_MACHINE || type == SNAP_END)
			continue;
		with_record(&r, type, 0, pattern(type, 0, size_rules[i].ok), size_rules[i].ok);
		assert_int_equal(snap_parse(r.b, r.len, recs, MAXR, &n, err, sizeof(err)), 0);
		assert_int_equal(n, 2);
		free(r.b);
	}
	with_record(&r, SNAP_DEV_VIRTIO, 0, pattern(1, 1, sizeof(struct snap_virtio) - 8), sizeof(struct snap_virtio) - 8);
	expect_refused(r.b, r.len, "wrong for the type");
	free(r.b);
}

static void reserved_and_padding(void **state)
{
	size_t len;
	uint8_t *b = valid_file(&len);
	size_t off;

	(void)state;
	off = rec_off(b, len, SNAP_VCPU_REGS, 1);
	put32(b + off + 12, 1);
	expect_refused(b, len, "reserved not zero");
	put32(b + off + 12, 0);
	/* The 13-byte model record has 3 bytes of padding. */
	off = rec_off(b, len, SNAP_DEV_VIRTIO_MODEL, 1);
	for (unsigned i = 13; i < 16; i++) {
		b[off + SNAP_RECORD_HEADER_SIZE + i] = 0x80;
		expect_refused(b, len, "padding not zero");
		b[off + SNAP_RECORD_HEADER_SIZE + i] = 0;
	}
	/* END's own reserved word. */
	put32(b + len - 48 + 12, 0x100);
	expect_refused(b, len, "reserved not zero");
	free(b);
}

static void duplicates(void **state)
{
	struct snap_machine m = machine();
	struct raw r;

	(void)state;
	raw_init(&r);
	raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
	raw_rec(&r, SNAP_VCPU_REGS, 1, pattern(1, 1, sizeof(struct kvm_regs)), sizeof(struct kvm_regs));
	raw_rec(&r, SNAP_VCPU_SREGS, 1, pattern(1, 1, sizeof(struct kvm_sregs)), sizeof(struct kvm_sregs));
	raw_rec(&r, SNAP_VCPU_REGS, 1, pattern(2, 1, sizeof(struct kvm_regs)), sizeof(struct kvm_regs));
	raw_end(&r);
	expect_refused(r.b, r.len, "SNAP_VCPU_REGS instance 1 twice");
	free(r.b);

	raw_init(&r);
	raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
	raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
	raw_end(&r);
	expect_refused(r.b, r.len, "twice");
	free(r.b);

	/* The same instance in two types, or two instances of a type, are not duplicates. */
	raw_init(&r);
	raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
	raw_rec(&r, SNAP_VCPU_REGS, 0, pattern(1, 0, sizeof(struct kvm_regs)), sizeof(struct kvm_regs));
	raw_rec(&r, SNAP_VCPU_REGS, 1, pattern(1, 1, sizeof(struct kvm_regs)), sizeof(struct kvm_regs));
	raw_rec(&r, SNAP_VCPU_SREGS, 0, pattern(1, 0, sizeof(struct kvm_sregs)), sizeof(struct kvm_sregs));
	raw_end(&r);
	assert_int_equal(snap_parse(r.b, r.len, recs, MAXR, &(unsigned){ 0 }, err, sizeof(err)), 0);
	free(r.b);
}

static void end_record(void **state)
{
	struct snap_machine m = machine();
	uint8_t zero[SNAP_HASH_SIZE] = { 0 };
	size_t len;
	uint8_t *b = valid_file(&len);
	struct raw r;

	(void)state;
	/* No END: the records simply stop. */
	raw_init(&r);
	raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
	put64(r.b + 16, r.len);
	expect_refused(r.b, r.len, "no END record");
	free(r.b);

	/* END, then another record (sealed as if that one ended the file). */
	raw_init(&r);
	raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
	raw_rec(&r, SNAP_END, 0, zero, sizeof(zero));
	raw_rec(&r, SNAP_DEV_SERIAL, 0, pattern(3, 0, 16), 16);
	put64(r.b + 16, r.len);
	expect_refused(r.b, r.len, "END is not the last record");
	free(r.b);

	/* END at instance 1. */
	raw_init(&r);
	raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
	raw_rec(&r, SNAP_END, 1, zero, sizeof(zero));
	seal(r.b, r.len);
	expect_refused(r.b, r.len, "instance");
	free(r.b);

	/* Any byte changed before END, or in the hash itself. */
	for (size_t i = 0; i < len; i += 7) {
		if (i >= 16 && i < 24)
			continue; /* the length field: refused as such */
		b[i] ^= 0x01;
		assert_int_equal(snap_parse(b, len, recs, MAXR, &(unsigned){ 0 }, err, sizeof(err)), -EINVAL);
		b[i] ^= 0x01;
	}
	b[rec_off(b, len, SNAP_VCPU_LAPIC, 1) + 100] ^= 0x20;
	expect_refused(b, len, "hash mismatch");
	free(b);
	b = valid_file(&len);
	b[len - 1] ^= 0x80;
	expect_refused(b, len, "hash mismatch");
	free(b);
}

/* The valid machine with one change, through a raw file (sealed) and through the writer. */
static void machine_refused(struct snap_machine m, const char *what)
{
	struct snap_writer w;
	struct raw r;

	raw_init(&r);
	raw_rec(&r, SNAP_MACHINE, 0, &m, sizeof(m));
	raw_end(&r);
	expect_refused(r.b, r.len, what);
	free(r.b);
	snap_writer_init(&w);
	assert_int_equal(snap_put(&w, SNAP_MACHINE, 0, &m, sizeof(m)), -EINVAL);
	assert_int_equal(snap_writer_finish(&w), -EINVAL);
	snap_writer_free(&w);
}

static void machine_sanity(void **state)
{
	struct snap_machine m;

	(void)state;
	m = machine(), m.cpus = 0, machine_refused(m, "cpus");
	m = machine(), m.cpus = SNAP_MAX_INSTANCE + 2, machine_refused(m, "cpus");
	m = machine(), m.nregions = 0, m.region_gpa[0] = m.region_gpa[1] = 0, m.region_size[0] = m.region_size[1] = 0,
	m.memory_bytes = 0, machine_refused(m, "nregions");
	m = machine(), m.nregions = SNAP_MAX_REGIONS + 1, machine_refused(m, "nregions");
	m = machine(), m.nregions = 1, machine_refused(m, "unused region not zero");
	m = machine(), m.region_gpa[1] += 512, machine_refused(m, "page-aligned");
	m = machine(), m.region_size[0] -= 1, m.memory_bytes -= 1, machine_refused(m, "page-aligned");
	m = machine(), m.region_size[1] = 0, m.memory_bytes = 256u << 20, machine_refused(m, "empty");
	m = machine(), m.region_gpa[1] = (256u << 20) - 4096, machine_refused(m, "overlapping");
	m = machine(), m.region_gpa[0] = 8ull << 30, machine_refused(m, "unsorted");
	m = machine(), m.region_gpa[1] = 0xfffffffffffff000ull, machine_refused(m, "wraps");
	m = machine(), m.memory_bytes += 4096, machine_refused(m, "memory_bytes");
	m = machine(), m.memory_bytes = 0, machine_refused(m, "memory_bytes");
	m = machine(), m.nvirtio = SNAP_MAX_VIRTIO + 1, machine_refused(m, "nvirtio");
	m = machine(), m.device_id[1] = 0, machine_refused(m, "device id 0");
	m = machine(), m.device_id[5] = 2, machine_refused(m, "unused virtio slot");
	m = machine(), m.flags = 0x2, machine_refused(m, "flags");
	m = machine(), m.reserved = 1, machine_refused(m, "reserved");

	/* At the edges, taken. */
	{
		struct snap_writer w;

		m = machine();
		m.cpus = SNAP_MAX_INSTANCE + 1;
		m.nregions = SNAP_MAX_REGIONS;
		m.region_gpa[1] = 256u << 20; /* adjacent */
		m.region_gpa[2] = 1ull << 40;
		m.region_size[2] = 4096;
		m.region_gpa[3] = 0xffffffffffffe000ull;
		m.region_size[3] = 4096; /* ends at the last page, does not wrap */
		m.memory_bytes += 8192;
		m.nvirtio = SNAP_MAX_VIRTIO;
		for (unsigned i = 0; i < SNAP_MAX_VIRTIO; i++)
			m.device_id[i] = 2;
		m.flags = 0;
		snap_writer_init(&w);
		snap_put(&w, SNAP_MACHINE, 0, &m, sizeof(m));
		snap_put(&w, SNAP_VCPU_TSC_KHZ, SNAP_MAX_INSTANCE, "12345678", 8);
		assert_int_equal(snap_writer_finish(&w), 0);
		assert_int_equal(snap_parse(w.buf, w.len, recs, MAXR, &(unsigned){ 0 }, err, sizeof(err)), 0);
		snap_writer_free(&w);
	}
}

/* Records that disagree with the machine; and no machine at all. */
static void against_machine(void **state)
{
	struct snap_virtio v;
	struct raw r;

	(void)state;
	with_record(&r, SNAP_VCPU_REGS, 2, pattern(1, 2, sizeof(struct kvm_regs)), sizeof(struct kvm_regs));
	expect_refused(r.b, r.len, "SNAP_VCPU_REGS for vCPU 2, the machine has 2");
	free(r.b);
	with_record(&r, SNAP_DEV_VIRTIO_MODEL, 2, "x", 1);
	expect_refused(r.b, r.len, "for slot 2");
	free(r.b);
	v = virtio(19);
	with_record(&r, SNAP_DEV_VIRTIO, 0, &v, sizeof(v));
	expect_refused(r.b, r.len, "device id 19, the machine says 4");
	free(r.b);
	v = virtio(4);
	v.nqueues = SNAP_MAX_QUEUES + 1;
	with_record(&r, SNAP_DEV_VIRTIO, 0, &v, sizeof(v));
	expect_refused(r.b, r.len, "queues");
	free(r.b);

	raw_init(&r);
	raw_rec(&r, SNAP_DEV_SERIAL, 0, pattern(1, 0, 16), 16);
	raw_end(&r);
	expect_refused(r.b, r.len, "no SNAP_MACHINE");
	free(r.b);
}

static void writer_refusals(void **state)
{
	struct snap_machine m = machine();
	struct snap_virtio v = virtio(4);
	struct snap_writer w;

	(void)state;
	snap_writer_init(&w);
	assert_int_equal(snap_put(&w, 0x99, 0, "abcd", 4), -EINVAL);
	/* The first error sticks: later puts and finish give it back and add nothing. */
	assert_int_equal(snap_put(&w, SNAP_MACHINE, 0, &m, sizeof(m)), -EINVAL);
	assert_int_equal(w.len, SNAP_HEADER_SIZE);
	assert_int_equal(snap_writer_finish(&w), -EINVAL);
	snap_writer_free(&w);

	static const struct {
		uint32_t type, instance, len;
		const void *data;
	} bad[] = {
		{ SNAP_END, 0, SNAP_HASH_SIZE, "0123456789abcdef0123456789abcdef" },
		{ SNAP_VCPU_REGS, SNAP_MAX_INSTANCE + 1, sizeof(struct kvm_regs), NULL },
		{ SNAP_VM_IRQCHIP, 3, sizeof(struct kvm_irqchip), NULL },
		{ SNAP_DEV_VIRTIO_MODEL, SNAP_MAX_VIRTIO, 1, "x" },
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snap_writer_init(&w);
		assert_int_equal(snap_put(&w, SNAP_MACHINE, 0, &m, sizeof(m)), 0);
		assert_int_equal(snap_put(&w, bad[i].type, bad[i].instance,
					  bad[i].data ? bad[i].data : pattern(1, 1, bad[i].len), bad[i].len),
				 -EINVAL);
		snap_writer_free(&w);
	}
	/* No payload: fine for an empty one, refused where bytes are promised. */
	snap_writer_init(&w);
	assert_int_equal(snap_put(&w, SNAP_DEV_VIRTIO_MODEL, 0, NULL, 0), 0);
	assert_int_equal(snap_put(&w, SNAP_DEV_VIRTIO_MODEL, 1, NULL, 1), -EINVAL);
	snap_writer_free(&w);

	/* A duplicate. */
	snap_writer_init(&w);
	assert_int_equal(snap_put(&w, SNAP_MACHINE, 0, &m, sizeof(m)), 0);
	assert_int_equal(snap_put(&w, SNAP_DEV_VIRTIO, 0, &v, sizeof(v)), 0);
	assert_int_equal(snap_put(&w, SNAP_DEV_VIRTIO, 0, &v, sizeof(v)), -EINVAL);
	assert_int_equal(snap_writer_finish(&w), -EINVAL);
	snap_writer_free(&w);

	/* What only the whole file shows: no machine; records the machine does not have. */
	snap_writer_init(&w);
	assert_int_equal(snap_put(&w, SNAP_DEV_SERIAL, 0, pattern(1, 1, 16), 16), 0);
	assert_int_equal(snap_writer_finish(&w), -EINVAL);
	snap_writer_free(&w);
	snap_writer_init(&w);
	assert_int_equal(snap_put(&w, SNAP_VCPU_TSC_KHZ, 5, "12345678", 8), 0);
	assert_int_equal(snap_put(&w, SNAP_MACHINE, 0, &m, sizeof(m)), 0);
	assert_int_equal(snap_writer_finish(&w), -EINVAL);
	snap_writer_free(&w);
	snap_writer_init(&w);
	v = virtio(19);
	assert_int_equal(snap_put(&w, SNAP_MACHINE, 0, &m, sizeof(m)), 0);
	assert_int_equal(snap_put(&w, SNAP_DEV_VIRTIO, 0, &v, sizeof(v)), 0);
	assert_int_equal(snap_writer_finish(&w), -EINVAL);
	snap_writer_free(&w);
}

/* The state file's size limit: the writer stops before it, with room for END. */
static void writer_size_limit(void **state)
{
	struct snap_machine m = machine();
	struct snap_writer w;
	uint8_t *x = pattern(1, 1, SNAP_MAX_XSAVE);
	uint32_t fit = 0;
	int rc = 0;

	(void)state;
	m.cpus = SNAP_MAX_INSTANCE + 1;
	snap_writer_init(&w);
	assert_int_equal(snap_put(&w, SNAP_MACHINE, 0, &m, sizeof(m)), 0);
	for (uint32_t cpu = 0; cpu <= SNAP_MAX_INSTANCE; cpu++) {
		rc = snap_put(&w, SNAP_VCPU_XSAVE, cpu, x, SNAP_MAX_XSAVE);
		if (rc)
			break;
		fit++;
	}
	/* 256 records of 64 KiB do not fit in 16 MiB with the header and END. */
	assert_int_equal(rc, -E2BIG);
	assert_true(fit > 200 && fit < SNAP_MAX_INSTANCE + 1);
	assert_true(w.len + SNAP_RECORD_HEADER_SIZE + SNAP_HASH_SIZE <= SNAP_MAX_FILE);
	assert_int_equal(snap_writer_finish(&w), -E2BIG);
	snap_writer_free(&w);

	/* As many as fitted, END included, finish and parse. */
	snap_writer_init(&w);
	assert_int_equal(snap_put(&w, SNAP_MACHINE, 0, &m, sizeof(m)), 0);
	for (uint32_t i = 0; i < fit; i++)
		assert_int_equal(snap_put(&w, SNAP_VCPU_XSAVE, i, x, SNAP_MAX_XSAVE), 0);
	assert_int_equal(snap_writer_finish(&w), 0);
	assert_true(w.len <= SNAP_MAX_FILE);
	assert_int_equal(snap_parse(w.buf, w.len, recs, MAXR, &(unsigned){ 0 }, err, sizeof(err)), 0);
	snap_writer_free(&w);
}

/*
 * The writer and the parser agree: random records (valid and not), through
 * the writer and through the raw builder in the same order. The writer
 * finishes exactly when the parser takes the raw file, and then both are the
 * same bytes.
 */
static void writer_matches_parser(void **state)
{
	static const uint32_t types[] = {
		SNAP_MACHINE, SNAP_VCPU_MP_STATE, SNAP_VCPU_REGS, SNAP_VCPU_XSAVE, SNAP_VCPU_FPU,
		SNAP_VCPU_TSC_KHZ, SNAP_VCPU_CPUID, SNAP_VCPU_MSRS, SNAP_VM_IRQCHIP, SNAP_VM_CLOCK,
		SNAP_DEV_VIRTIO, SNAP_DEV_VIRTIO_MODEL, SNAP_DEV_SERIAL,
	};
	/* Mostly what a two-vCPU, two-slot machine has; sometimes past it. */
	static const uint32_t odd_types[] = { SNAP_END, 0x42, SNAP_VCPU_EVENTS + 1 };
	static const uint32_t odd_instances[] = { 2, 3, 10, 11, 255, 256 };
	uint64_t rng = 19;
	unsigned accepted = 0, refused = 0;

	(void)state;
	for (unsigned iter = 0; iter < 3000; iter++) {
		struct snap_writer w;
		struct raw r;
		unsigned nrec = 1 + unit_rand(&rng) % 6, n;
		int wrc, prc;

		snap_writer_init(&w);
		raw_init(&r);
		for (unsigned k = 0; k < nrec; k++) {
			uint32_t type = types[unit_rand(&rng) % (sizeof(types) / sizeof(types[0]))];
			uint32_t instance = unit_rand(&rng) % 2;
			uint32_t len = 0;

			if (k == 0 && unit_rand(&rng) % 8)
				type = SNAP_MACHINE, instance = 0;
			if (unit_rand(&rng) % 16 == 0)
				type = odd_types[unit_rand(&rng) % (sizeof(odd_types) / sizeof(odd_types[0]))];
			if (unit_rand(&rng) % 16 == 0)
				instance = odd_instances[unit_rand(&rng) % (sizeof(odd_instances) / sizeof(odd_instances[0]))];
			uint8_t *data;
			struct snap_machine m;
			struct snap_virtio v;

			for (unsigned i = 0; i < sizeof(size_rules) / sizeof(size_rules[0]); i++)
				if (size_rules[i].type == type)
					len = unit_rand(&rng) % 16 ? (type == SNAP_VCPU_XSAVE ? sizeof(struct kvm_xsave)
							       : type == SNAP_VCPU_CPUID ? 2 * 40u : type == SNAP_VCPU_MSRS ? 32u
							       : type == SNAP_DEV_VIRTIO_MODEL ? unit_rand(&rng) % 20
							       : size_rules[i].ok)
								  : size_rules[i].bad[unit_rand(&rng) % 2];
			if (type == SNAP_DEV_VIRTIO)
				len = unit_rand(&rng) % 8 ? sizeof(struct snap_virtio) : sizeof(struct snap_virtio) - 8;
			data = pattern(type, instance, len);
			if (type == SNAP_MACHINE && len == sizeof(m)) {
				m = machine();
				if (unit_rand(&rng) % 4 == 0)
					m.cpus = unit_rand(&rng) % 4;
				if (unit_rand(&rng) % 6 == 0)
					m.nvirtio = unit_rand(&rng) % 3;
				memcpy(data, &m, sizeof(m));
			}
			if (type == SNAP_DEV_VIRTIO && len == sizeof(v)) {
				v = virtio(unit_rand(&rng) % 3 ? (instance ? 19 : 4) : 7);
				memcpy(data, &v, sizeof(v));
			}
			snap_put(&w, type, instance, data, len);
			if (r.len + SNAP_RECORD_HEADER_SIZE + len + 8 + 48 <= RAW_CAP)
				raw_rec(&r, type, instance, data, len);
		}
		raw_end(&r);
		wrc = snap_writer_finish(&w);
		prc = snap_parse(r.b, r.len, recs, MAXR, &n, err, sizeof(err));
		if ((wrc == 0) != (prc == 0))
			fail_msg("iteration %u: writer %d, parser %d (%s)", iter, wrc, prc, err);
		if (wrc == 0) {
			assert_int_equal(w.len, r.len);
			assert_memory_equal(w.buf, r.b, r.len);
			accepted++;
		} else {
			refused++;
		}
		snap_writer_free(&w);
		free(r.b);
	}
	/* Both outcomes were exercised. */
	assert_true(accepted > 100);
	assert_true(refused > 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip),
		cmocka_unit_test(bad_header),
		cmocka_unit_test(too_big),
		cmocka_unit_test(truncated_anywhere),
		cmocka_unit_test(record_past_the_end),
		cmocka_unit_test(unknown_type_and_instance),
		cmocka_unit_test(wrong_size_per_type),
		cmocka_unit_test(reserved_and_padding),
		cmocka_unit_test(duplicates),
		cmocka_unit_test(end_record),
		cmocka_unit_test(machine_sanity),
		cmocka_unit_test(against_machine),
		cmocka_unit_test(writer_refusals),
		cmocka_unit_test(writer_size_limit),
		cmocka_unit_test(writer_matches_parser),
	};

	return cmocka_run_group_tests_name("snapshot_format", tests, NULL, NULL);
}
