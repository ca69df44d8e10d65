/* RAM layout, e820, MP table and PVH start info. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "arch/x86/e820.h"
#include "arch/x86/layout.h"
#include "arch/x86/mptable.h"
#include "arch/x86/pvh.h"
#include "memory.h"

#define MIB (1ull << 20)
#define GIB (1ull << 30)

static void ram_layout_small_and_split(void **state)
{
	struct guest_mem_region r[2];

	(void)state;
	assert_int_equal(x86_ram_layout(128 * MIB, r), 1);
	assert_int_equal(r[0].gpa, 0);
	assert_int_equal(r[0].size, 128 * MIB);
	assert_int_equal(x86_ram_layout(3 * GIB, r), 1);
	assert_int_equal(x86_ram_layout(5 * GIB, r), 2);
	assert_int_equal(r[0].size, 3 * GIB);
	assert_int_equal(r[1].gpa, 4 * GIB);
	assert_int_equal(r[1].size, 2 * GIB);
}

static uint64_t ram_sum(const struct x86_e820_entry *e, int n)
{
	uint64_t sum = 0;

	for (int i = 0; i < n; i++)
		if (e[i].type == X86_E820_RAM)
			sum += e[i].size;
	return sum;
}

static void e820_covers_ram_minus_holes(void **state)
{
	struct x86_e820_entry e[X86_E820_MAX];
	int n;

	(void)state;
	n = x86_e820_build(128 * MIB, e, X86_E820_MAX);
	assert_int_equal(n, 3);
	assert_int_equal(e[0].addr, 0);
	assert_int_equal(e[0].size, X86_EBDA_START);
	assert_int_equal(e[1].type, X86_E820_RESERVED);
	assert_int_equal(e[2].addr, X86_HIMEM_START);
	assert_int_equal(e[2].addr + e[2].size, 128 * MIB);
	/* What the guest's init checks: RAM is all but the 0x9fc00..0x100000 hole. */
	assert_int_equal(ram_sum(e, n), 128 * MIB - (X86_HIMEM_START - X86_EBDA_START));

	n = x86_e820_build(6 * GIB, e, X86_E820_MAX);
	assert_int_equal(n, 4);
	assert_int_equal(e[3].addr, 4 * GIB);
	assert_int_equal(e[3].size, 3 * GIB);
	assert_int_equal(e[2].addr + e[2].size, X86_MMIO_HOLE_START);
	/* Entries are sorted and never overlap. */
	for (int i = 1; i < n; i++)
		assert_true(e[i - 1].addr + e[i - 1].size <= e[i].addr);
}

static void e820_errors(void **state)
{
	struct x86_e820_entry e[X86_E820_MAX];

	(void)state;
	assert_int_equal(x86_e820_build(128 * MIB, e, 2), -ENOSPC);
	assert_int_equal(x86_e820_build(6 * GIB, e, 3), -ENOSPC);
	assert_int_equal(x86_e820_build(MIB, e, X86_E820_MAX), -EINVAL);
}

static uint8_t sum8(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s += *p++;
	return s;
}

static void mptable_well_formed(void **state)
{
	static const unsigned counts[] = { 1, 2, 8, 254 };

	(void)state;
	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
		unsigned ncpus = counts[c];
		uint8_t buf[8192];
		uint32_t cfg_addr;
		uint16_t cfg_len, entries;
		int n = x86_mptable_build(buf, sizeof(buf), 0x9fc00, ncpus);

		assert_true(n > 0);
		assert_memory_equal(buf, "_MP_", 4);
		assert_int_equal(sum8(buf, 16), 0);
		memcpy(&cfg_addr, buf + 4, 4);
		assert_int_equal(cfg_addr, 0x9fc00 + 16);
		assert_memory_equal(buf + 16, "PCMP", 4);
		memcpy(&cfg_len, buf + 16 + 4, 2);
		assert_int_equal(16 + cfg_len, n);
		assert_int_equal(sum8(buf + 16, cfg_len), 0);
		memcpy(&entries, buf + 16 + 34, 2);
		assert_int_equal(entries, ncpus + 2 + X86_MPTABLE_IRQS + 2);
		/* Processor entries first: APIC IDs 0..n-1, only the first is the BSP. */
		for (unsigned i = 0; i < ncpus; i++) {
			const uint8_t *cpu = buf + 16 + 44 + i * 20;

			assert_int_equal(cpu[0], 0);
			assert_int_equal(cpu[1], i);
			assert_int_equal(cpu[3], i == 0 ? 3 : 1);
		}
	}
}

static void mptable_bounds(void **state)
{
	uint8_t buf[1024];

	(void)state;
	/* A buffer too small for the CPU count is refused, never overrun. */
	assert_true(x86_mptable_build(buf, sizeof(buf), 0x9fc00, 32) > 0);
	assert_int_equal(x86_mptable_build(buf, sizeof(buf), 0x9fc00, 64), -ENOSPC);
	assert_true(x86_mptable_build(buf, 0, 0xfffffff0, 1) == -EINVAL);
	assert_int_equal(x86_mptable_build(buf, sizeof(buf), 0x9fc00, 0), -EINVAL);
	assert_int_equal(x86_mptable_build(buf, sizeof(buf), 0x9fc00, 255), -EINVAL);
	assert_int_equal(x86_mptable_build(buf, 10, 0x9fc00, 1), -ENOSPC);
}

static void pvh_start_info(void **state)
{
	struct x86_e820_entry e[3] = { { 0, 0x9fc00, 1 }, { 0x9fc00, 0x400, 2 },
				       { 0x100000, 0x100000, 1 } };
	struct x86_boot_inputs in = { .cmdline_gpa = 0x20000, .initrd_gpa = 0x500000,
				      .initrd_size = 999, .e820 = e, .e820_count = 3 };
	uint8_t buf[4096];
	uint32_t u32;
	uint64_t u64;
	int n;

	(void)state;
	n = x86_pvh_build(buf, sizeof(buf), 0x6000, &in);
	assert_true(n > 0);
	memcpy(&u32, buf, 4);
	assert_int_equal(u32, X86_PVH_MAGIC);
	memcpy(&u32, buf + 4, 4);
	assert_int_equal(u32, 1);
	memcpy(&u32, buf + 12, 4); /* nr_modules */
	assert_int_equal(u32, 1);
	memcpy(&u64, buf + 16, 8); /* modlist_paddr */
	assert_int_equal(u64, 0x6000 + 64);
	memcpy(&u64, buf + 64, 8);
	assert_int_equal(u64, 0x500000);
	memcpy(&u64, buf + 72, 8);
	assert_int_equal(u64, 999);
	memcpy(&u64, buf + 24, 8); /* cmdline */
	assert_int_equal(u64, 0x20000);
	memcpy(&u64, buf + 40, 8); /* memmap */
	assert_int_equal(u64, 0x6000 + 96);
	memcpy(&u32, buf + 48, 4);
	assert_int_equal(u32, 3);
	memcpy(&u64, buf + 96 + 2 * 24, 8);
	assert_int_equal(u64, 0x100000);

	in.initrd_size = 0;
	assert_true(x86_pvh_build(buf, sizeof(buf), 0x6000, &in) > 0);
	memcpy(&u32, buf + 12, 4);
	assert_int_equal(u32, 0);
	assert_int_equal(x86_pvh_build(buf, 100, 0x6000, &in), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ram_layout_small_and_split),
		cmocka_unit_test(e820_covers_ram_minus_holes),
		cmocka_unit_test(e820_errors),
		cmocka_unit_test(mptable_well_formed),
		cmocka_unit_test(mptable_bounds),
		cmocka_unit_test(pvh_start_info),
	};

	return cmocka_run_group_tests_name("layout", tests, NULL, NULL);
}
