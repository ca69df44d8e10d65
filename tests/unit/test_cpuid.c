/*
 * The CPUID edits of vmm/arch/x86/cpu.c (x86_cpuid_normalize, x86_xcr0_choose,
 * x86_xsave_init) on KVM_GET_SUPPORTED_CPUID tables kept in tests/unit/data/
 * (each file's header says where it came from). Run from the repository root,
 * as tests/run-unit does; SANDVM_CPUID_DATA names another data directory.
 */
#include "unit.h"

#include <glob.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86/cpu.h"

#define MAX_ENTRIES 256

static const char *data_dir(void)
{
	const char *d = getenv("SANDVM_CPUID_DATA");

	return d ? d : "tests/unit/data";
}

/* Parses one table file; every failure fails the test with the line. */
static struct kvm_cpuid2 *load_table(const char *name)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + MAX_ENTRIES * sizeof(c->entries[0]));
	char path[512], line[1024];
	unsigned lineno = 0;
	FILE *f;

	assert_non_null(c);
	if (strchr(name, '/'))
		snprintf(path, sizeof(path), "%s", name);
	else
		snprintf(path, sizeof(path), "%s/%s", data_dir(), name);
	f = fopen(path, "r");
	if (!f)
		fail_msg("cannot open %s (run from the repository root)", path);
	while (fgets(line, sizeof(line), f)) {
		struct kvm_cpuid_entry2 e = { 0 };
		char *hash = strchr(line, '#'), rest[2];
		int n;

		lineno++;
		if (hash)
			*hash = '\0';
		if (strspn(line, " \t\r\n") == strlen(line))
			continue;
		n = sscanf(line, "%x %x %x %x %x %x %x %1s", &e.function, &e.index, &e.flags,
			   &e.eax, &e.ebx, &e.ecx, &e.edx, rest);
		if (n != 7)
			fail_msg("%s:%u: want 7 hex numbers, got %d fields", path, lineno, n);
		if (c->nent == MAX_ENTRIES)
			fail_msg("%s: more than %d entries", path, MAX_ENTRIES);
		c->entries[c->nent++] = e;
	}
	fclose(f);
	if (c->nent == 0)
		fail_msg("%s: no entries", path);
	return c;
}

static struct kvm_cpuid2 *copy_table(const struct kvm_cpuid2 *c)
{
	size_t size = sizeof(*c) + MAX_ENTRIES * sizeof(c->entries[0]);
	struct kvm_cpuid2 *d = malloc(size);

	assert_non_null(d);
	memcpy(d, c, size);
	return d;
}

static struct kvm_cpuid_entry2 *find(struct kvm_cpuid2 *c, uint32_t function, uint32_t index)
{
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == function && c->entries[i].index == index)
			return &c->entries[i];
	return NULL;
}

static struct kvm_cpuid_entry2 *get(struct kvm_cpuid2 *c, uint32_t function, uint32_t index)
{
	struct kvm_cpuid_entry2 *e = find(c, function, index);

	if (!e)
		fail_msg("no CPUID entry 0x%x.%u", function, index);
	return e;
}

static void drop(struct kvm_cpuid2 *c, uint32_t function, uint32_t index)
{
	struct kvm_cpuid_entry2 *e = get(c, function, index);
	unsigned i = (unsigned)(e - c->entries);

	memmove(e, e + 1, (c->nent - i - 1) * sizeof(*e));
	c->nent--;
}

#define BIT(n) (1u << (n))
#define AVX512_EBX7 (BIT(16) | BIT(17) | BIT(21) | BIT(28) | BIT(30) | BIT(31))
#define AVX512_ECX7 (BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14))
#define AMX_EDX7 (BIT(22) | BIT(24) | BIT(25))

/*
 * Every bit outside the positions x86_cpuid_normalize may edit is as KVM
 * reported it: leaf 1 ECX's XSAVE-dependent flags, leaf 7's edited flags,
 * leaf 0xD and the AMX leaves.
 */
static void assert_rest_unchanged(struct kvm_cpuid2 *before, struct kvm_cpuid2 *after)
{
	assert_int_equal(before->nent, after->nent);
	for (unsigned i = 0; i < before->nent; i++) {
		struct kvm_cpuid_entry2 b = before->entries[i], a = after->entries[i];
		uint32_t m[4] = { ~0u, ~0u, ~0u, ~0u }; /* eax ebx ecx edx: bits that must match */

		assert_int_equal(b.function, a.function);
		assert_int_equal(b.index, a.index);
		assert_int_equal(b.flags, a.flags);
		if (b.function == 0xd || b.function == 0x1d || b.function == 0x1e)
			continue;
		if (b.function == 1)
			m[2] &= ~(BIT(12) | BIT(26) | BIT(28) | BIT(29));
		if (b.function == 7 && b.index == 0) {
			m[1] &= ~(BIT(5) | BIT(6) | BIT(13) | BIT(14) | AVX512_EBX7 | BIT(26) | BIT(27));
			m[2] &= ~(BIT(3) | BIT(5) | BIT(7) | BIT(9) | BIT(10) | AVX512_ECX7);
			m[3] &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(20) | BIT(23) | AMX_EDX7);
		}
		if (b.function == 7 && b.index == 1) {
			m[0] &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23));
			m[3] &= ~(BIT(4) | BIT(5) | BIT(8) | BIT(10) | BIT(19));
		}
		if ((b.eax ^ a.eax) & m[0] || (b.ebx ^ a.ebx) & m[1] || (b.ecx ^ a.ecx) & m[2] ||
		    (b.edx ^ a.edx) & m[3])
			fail_msg("leaf 0x%x.%u changed outside the edited bits", b.function, b.index);
	}
}

static void intel_with_amx(void **state)
{
	struct kvm_cpuid2 *orig = load_table("cpuid-intel-spr-amx.txt"), *c = copy_table(orig);
	struct x86_xsave_cfg cfg;
	struct kvm_cpuid_entry2 *l7;

	(void)state;
	/* The table offers what the edits must take away, or this test proves nothing. */
	assert_true(get(orig, 7, 0)->ecx & BIT(5));
	assert_int_equal(get(orig, 7, 0)->edx & AMX_EDX7, AMX_EDX7);
	assert_int_equal(get(orig, 0xd, 0)->eax, 0x602e7);
	assert_false(get(orig, 7, 0)->ebx & BIT(6));

	x86_cpuid_normalize(c, &cfg);
	assert_int_equal(cfg.xcr0, 0x2e7); /* x87 SSE AVX opmask ZMM_Hi256 Hi16_ZMM PKRU */
	assert_int_equal(cfg.size, 2696);  /* PKRU ends at 2688 + 8 */
	l7 = get(c, 7, 0);
	assert_false(l7->ecx & BIT(5));                                 /* WAITPKG */
	assert_int_equal(l7->ebx & (BIT(6) | BIT(13)), BIT(6) | BIT(13)); /* FDP_EXCPTN_ONLY, ZERO_FCS_FDS */
	assert_int_equal(l7->edx & AMX_EDX7, 0);
	assert_false(l7->ecx & BIT(7));  /* CET shadow stacks: XSS is 0 */
	assert_false(l7->edx & BIT(20)); /* CET IBT */
	/* What the XCR0 holds stays. */
	assert_int_equal(l7->ebx & AVX512_EBX7, AVX512_EBX7);
	assert_int_equal(l7->ecx & AVX512_ECX7, AVX512_ECX7);
	assert_true(l7->edx & BIT(23)); /* AVX512_FP16 */
	assert_true(l7->ecx & BIT(3));  /* PKU */
	assert_true(l7->ebx & BIT(5));  /* AVX2 */
	assert_int_equal(get(c, 7, 1)->eax, BIT(4) | BIT(5));
	assert_int_equal(get(c, 1, 0)->ecx, get(orig, 1, 0)->ecx);

	assert_int_equal(get(c, 0xd, 0)->eax, 0x2e7);
	assert_int_equal(get(c, 0xd, 0)->edx, 0);
	assert_int_equal(get(c, 0xd, 0)->ebx, 2696);
	assert_int_equal(get(c, 0xd, 0)->ecx, 2696);
	assert_int_equal(get(c, 0xd, 1)->eax, 0xf); /* XFD gone, XSAVES kept */
	assert_int_equal(get(c, 0xd, 1)->ebx, 2440); /* compacted: 576+256+64+512+1024+8 */
	assert_int_equal(get(c, 0xd, 1)->ecx | get(c, 0xd, 1)->edx, 0);
	for (unsigned i = 2; i <= 18; i++) {
		struct kvm_cpuid_entry2 *e = find(c, 0xd, i), *o = find(orig, 0xd, i);

		if (!e)
			continue;
		if (cfg.xcr0 & (1ull << i))
			assert_memory_equal(e, o, sizeof(*e));
		else
			assert_int_equal(e->eax | e->ebx | e->ecx | e->edx, 0);
	}
	assert_int_equal(get(c, 0x1d, 1)->eax | get(c, 0x1d, 1)->ebx | get(c, 0x1d, 0)->eax, 0);
	assert_int_equal(get(c, 0x1e, 0)->ebx, 0);
	assert_rest_unchanged(orig, c);
	free(orig);
	free(c);
}

/* A process without the AMX permission gets leaf 7's AMX flags but no tile state: same result. */
static void intel_without_amx_permission(void **state)
{
	struct kvm_cpuid2 *a = load_table("cpuid-intel-spr-amx.txt");
	struct kvm_cpuid2 *b = load_table("cpuid-intel-spr.txt"), *orig_b = copy_table(b);
	struct x86_xsave_cfg ca, cb;

	(void)state;
	assert_null(find(b, 0xd, 18));
	assert_int_equal(get(b, 7, 0)->edx & AMX_EDX7, AMX_EDX7);
	x86_cpuid_normalize(a, &ca);
	x86_cpuid_normalize(b, &cb);
	assert_int_equal(ca.xcr0, cb.xcr0);
	assert_int_equal(ca.size, cb.size);
	for (unsigned i = 0; i < a->nent; i++) {
		struct kvm_cpuid_entry2 *ea = &a->entries[i], *eb = find(b, ea->function, ea->index);

		if (eb)
			assert_memory_equal(ea, eb, sizeof(*ea));
		else
			assert_int_equal(ea->eax | ea->ebx | ea->ecx | ea->edx, 0);
	}
	assert_rest_unchanged(orig_b, b);
	free(a);
	free(b);
	free(orig_b);
}

static void amd_zen4(void **state)
{
	struct kvm_cpuid2 *orig = load_table("cpuid-amd-zen4.txt"), *c = copy_table(orig);
	struct x86_xsave_cfg cfg;

	(void)state;
	assert_int_equal(get(orig, 7, 0)->ebx & (BIT(6) | BIT(13)), 0);
	x86_cpuid_normalize(c, &cfg);
	assert_int_equal(cfg.xcr0, 0x2e7);
	assert_int_equal(cfg.size, 2440); /* AMD packs opmask right after AVX: PKRU ends at 2432 + 8 */
	assert_int_equal(get(c, 0xd, 0)->ebx, 2440);
	assert_int_equal(get(c, 0xd, 1)->ebx, 2440);
	assert_int_equal(get(c, 7, 0)->ebx & (BIT(6) | BIT(13)), BIT(6) | BIT(13));
	assert_false(get(c, 7, 0)->ecx & BIT(5));
	assert_false(get(c, 7, 0)->ecx & BIT(7)); /* CET shadow stacks: no XSS state offered */
	assert_int_equal(get(c, 7, 0)->ebx & AVX512_EBX7, AVX512_EBX7);
	assert_true(get(c, 7, 1)->eax & BIT(5)); /* AVX512_BF16 */
	/* SVM is x86_cpuid_patch's business, per vCPU; normalising leaves it. */
	assert_true(get(c, 0x80000001, 0)->ecx & BIT(2));
	assert_memory_equal(get(c, 0x8000000a, 0), get(orig, 0x8000000a, 0), sizeof(struct kvm_cpuid_entry2));
	assert_rest_unchanged(orig, c);
	free(orig);
	free(c);
}

/*
 * The L1's table, recorded: the guest kernel booted with the result reported
 * "Enabled xstate features 0x207, context size is 2696 bytes" (tests/real-kvm/check).
 */
static void l1_recorded(void **state)
{
	struct kvm_cpuid2 *orig = load_table("cpuid-l1-amd-tcg.txt"), *c = copy_table(orig);
	struct x86_xsave_cfg cfg;

	(void)state;
	x86_cpuid_normalize(c, &cfg);
	assert_int_equal(cfg.xcr0, 0x207);
	assert_int_equal(cfg.size, 2696);
	assert_true(get(c, 7, 0)->ecx & BIT(3)); /* PKU stays with PKRU */
	assert_true(get(c, 7, 0)->ebx & BIT(5)); /* AVX2 */
	assert_int_equal(get(c, 7, 0)->ebx & (BIT(6) | BIT(13)), BIT(6) | BIT(13));
	assert_rest_unchanged(orig, c);
	free(orig);
	free(c);
}

/* A host lacking one AVX-512 component: the whole group and every AVX-512 flag go. */
static void incomplete_avx512_dropped(void **state)
{
	struct kvm_cpuid2 *orig = load_table("cpuid-amd-zen4.txt"), *c;
	struct x86_xsave_cfg cfg;

	(void)state;
	for (int variant = 0; variant < 2; variant++) {
		c = copy_table(orig);
		if (variant == 0)
			get(c, 0xd, 0)->eax &= ~(1u << 7); /* Hi16_ZMM not supported */
		else
			drop(c, 0xd, 6); /* ZMM_Hi256's layout missing */
		x86_cpuid_normalize(c, &cfg);
		assert_int_equal(cfg.xcr0, 0x207);
		assert_int_equal(get(c, 7, 0)->ebx & AVX512_EBX7, 0);
		assert_int_equal(get(c, 7, 0)->ecx & AVX512_ECX7, 0);
		assert_false(get(c, 7, 1)->eax & BIT(5));
		assert_true(get(c, 7, 0)->ebx & BIT(5)); /* AVX2 stays */
		assert_int_equal(get(c, 0xd, 1)->ebx, 576 + 256 + 8);
		assert_int_equal(get(c, 0xd, 5)->eax | get(c, 0xd, 7)->eax, 0);
		free(c);
	}
	free(orig);
}

static void no_xsave_or_no_sse(void **state)
{
	struct kvm_cpuid2 *orig = load_table("cpuid-intel-spr.txt"), *c = copy_table(orig);
	struct x86_xsave_cfg cfg;

	(void)state;
	get(c, 1, 0)->ecx &= ~BIT(26);
	assert_int_equal(x86_xcr0_choose(c), 0);
	x86_cpuid_normalize(c, &cfg);
	assert_int_equal(cfg.xcr0, 0);
	assert_int_equal(cfg.size, 0);
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == 0xd)
			assert_int_equal(c->entries[i].eax | c->entries[i].ebx | c->entries[i].ecx |
						 c->entries[i].edx, 0);
	assert_int_equal(get(c, 1, 0)->ecx & (BIT(12) | BIT(28) | BIT(29)), 0); /* FMA AVX F16C */
	assert_false(get(c, 7, 0)->ebx & BIT(5));
	assert_false(get(c, 7, 0)->ebx & BIT(16));
	assert_true(get(c, 1, 0)->ecx & BIT(0)); /* SSE3 has nothing to do with XSAVE */
	free(c);

	/* SSE missing from what KVM supports: AVX cannot be enabled, AVX-512 neither. */
	c = copy_table(orig);
	get(c, 0xd, 0)->eax &= ~2u;
	assert_int_equal(x86_xcr0_choose(c), 0x201);
	free(c);
	/* x87 missing: XSETBV would refuse any value, so no XSAVE at all. */
	c = copy_table(orig);
	get(c, 0xd, 0)->eax &= ~1u;
	assert_int_equal(x86_xcr0_choose(c), 0);
	free(c);
	free(orig);
}

/* MPX is in no offered XCR0: its flag goes with its components. */
static void mpx_masked(void **state)
{
	struct kvm_cpuid2 *c = load_table("cpuid-intel-spr.txt");
	struct kvm_cpuid_entry2 *d0;
	struct x86_xsave_cfg cfg;

	(void)state;
	get(c, 7, 0)->ebx |= BIT(14);
	d0 = get(c, 0xd, 0);
	d0->eax |= 0x18;
	c->entries[c->nent++] = (struct kvm_cpuid_entry2){ .function = 0xd, .index = 3, .flags = 1,
							   .eax = 0x40, .ebx = 0x3c0 };
	c->entries[c->nent++] = (struct kvm_cpuid_entry2){ .function = 0xd, .index = 4, .flags = 1,
							   .eax = 0x40, .ebx = 0x400 };
	x86_cpuid_normalize(c, &cfg);
	assert_int_equal(cfg.xcr0, 0x2e7);
	assert_false(get(c, 7, 0)->ebx & BIT(14));
	assert_int_equal(get(c, 0xd, 3)->eax | get(c, 0xd, 4)->ebx, 0);
	free(c);
}

/* Whatever the table, the result is self-consistent (every data file, the recorded ones too). */
static void every_table_consistent(void **state)
{
	char pattern[512];
	glob_t g;

	(void)state;
	snprintf(pattern, sizeof(pattern), "%s/cpuid-*.txt", data_dir());
	assert_int_equal(glob(pattern, 0, NULL, &g), 0);
	assert_true(g.gl_pathc >= 4);
	for (size_t f = 0; f < g.gl_pathc; f++) {
		struct kvm_cpuid2 *orig = load_table(g.gl_pathv[f]), *c = copy_table(orig);
		struct kvm_cpuid_entry2 *l7, *d0;
		struct x86_xsave_cfg cfg;
		uint32_t end = 576;

		x86_cpuid_normalize(c, &cfg);
		assert_rest_unchanged(orig, c);
		l7 = find(c, 7, 0);
		if (l7) {
			assert_false(l7->ecx & BIT(5));
			assert_int_equal(l7->edx & AMX_EDX7, 0);
			assert_int_equal(l7->ebx & (BIT(6) | BIT(13)), BIT(6) | BIT(13));
			if ((cfg.xcr0 & 0xe0) != 0xe0)
				assert_false(l7->ebx & BIT(16));
		}
		assert_int_equal(cfg.xcr0 & ~0x2e7ull, 0);
		d0 = find(c, 0xd, 0);
		if (cfg.xcr0 == 0)
			goto next;
		assert_non_null(d0);
		assert_int_equal(d0->eax | (uint64_t)d0->edx << 32, cfg.xcr0);
		for (unsigned i = 2; i < 64; i++) {
			struct kvm_cpuid_entry2 *e = find(c, 0xd, i);

			if (!(cfg.xcr0 & (1ull << i))) {
				assert_true(!e || (e->eax | e->ebx | e->ecx | e->edx) == 0);
				continue;
			}
			assert_non_null(e);
			if (e->ebx + e->eax > end)
				end = e->ebx + e->eax;
		}
		assert_int_equal(d0->ebx, end);
		assert_int_equal(d0->ecx, end);
		assert_int_equal(cfg.size, end);
		assert_int_equal(get(c, 0xd, 1)->ecx | get(c, 0xd, 1)->edx, 0);
next:
		free(orig);
		free(c);
	}
	globfree(&g);
}

static void xsave_area(void **state)
{
	uint8_t a[4096];
	uint8_t want[4096];

	(void)state;
	memset(a, 0xaa, sizeof(a));
	x86_xsave_init(a, sizeof(a));
	memset(want, 0, sizeof(want));
	want[0] = 0x7f; /* FCW 0x037f: all x87 exceptions masked, 64-bit precision */
	want[1] = 0x03;
	want[24] = 0x80; /* MXCSR 0x1f80: all SSE exceptions masked */
	want[25] = 0x1f;
	want[512] = 0x03; /* XSTATE_BV: x87 and SSE taken from the legacy region */
	assert_memory_equal(a, want, sizeof(a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(intel_with_amx),
		cmocka_unit_test(intel_without_amx_permission),
		cmocka_unit_test(amd_zen4),
		cmocka_unit_test(l1_recorded),
		cmocka_unit_test(incomplete_avx512_dropped),
		cmocka_unit_test(no_xsave_or_no_sse),
		cmocka_unit_test(mpx_masked),
		cmocka_unit_test(every_table_consistent),
		cmocka_unit_test(xsave_area),
	};

	return cmocka_run_group_tests_name("cpuid", tests, NULL, NULL);
}
