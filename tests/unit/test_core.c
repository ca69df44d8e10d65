/* Command-line builder, guest memory bounds, the device bus, and the strict number parser. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "bus.h"
#include "cmdline.h"
#include "memory.h"
#include "parse.h"
#include "virtio/iov.h"

static void cmdline_bounds(void **state)
{
	struct cmdline cl;

	(void)state;
	assert_int_equal(cmdline_init(&cl, 16), 0);
	assert_int_equal(cmdline_append(&cl, "  console=x  "), 0);
	assert_string_equal(cl.buf, "console=x");
	assert_int_equal(cmdline_append(&cl, ""), 0);
	assert_int_equal(cmdline_append(&cl, "abcde"), 0); /* 9 + 1 + 5 = 15 < 16 */
	assert_string_equal(cl.buf, "console=x abcde");
	assert_int_equal(cmdline_append(&cl, "z"), -E2BIG);
	assert_string_equal(cl.buf, "console=x abcde"); /* unchanged on failure */
	cmdline_destroy(&cl);

	assert_int_equal(cmdline_init(&cl, 8), 0);
	assert_int_equal(cmdline_append(&cl, "12345678"), -E2BIG); /* needs 9 with NUL */
	assert_int_equal(cmdline_append(&cl, "1234567"), 0);
	cmdline_destroy(&cl);

	assert_int_equal(cmdline_init(&cl, 64), 0);
	assert_int_equal(cmdline_append(&cl, "a\nb"), -EINVAL);
	assert_int_equal(cmdline_append(&cl, "a\x7f"), -EINVAL);
	assert_int_equal(cl.len, 0);
	cmdline_destroy(&cl);
	assert_int_equal(cmdline_init(&cl, 0), -EINVAL);
}

static void memory_bounds(void **state)
{
	struct guest_mem_region layout[2] = { { .gpa = 0, .size = 1 << 20 },
					       { .gpa = 4ull << 30, .size = 1 << 20 } };
	struct guest_mem mem;
	uint8_t b[16] = { 0 };

	(void)state;
	assert_int_equal(guest_mem_init(&mem, layout, 2, false), 0);
	assert_int_equal(mem.total, 2 << 20);
	assert_non_null(guest_mem_ptr(&mem, 0, 1 << 20));
	assert_null(guest_mem_ptr(&mem, 0, (1 << 20) + 1));
	assert_null(guest_mem_ptr(&mem, (1 << 20) - 1, 2));
	assert_non_null(guest_mem_ptr(&mem, (1 << 20) - 1, 1));
	assert_null(guest_mem_ptr(&mem, 1 << 20, 1)); /* the hole */
	assert_non_null(guest_mem_ptr(&mem, 4ull << 30, 16));
	assert_null(guest_mem_ptr(&mem, (4ull << 30) - 8, 16)); /* straddles into region 2 */
	assert_null(guest_mem_ptr(&mem, UINT64_MAX, 2));
	assert_null(guest_mem_ptr(&mem, 16, UINT64_MAX));
	assert_null(guest_mem_ptr(&mem, (4ull << 30) + 8, UINT64_MAX - 4));
	assert_int_equal(guest_mem_write(&mem, 100, "hello", 5), 0);
	assert_int_equal(guest_mem_read(&mem, 100, b, 5), 0);
	assert_memory_equal(b, "hello", 5);
	assert_int_equal(guest_mem_write(&mem, (1 << 20) - 2, "hello", 5), -EFAULT);
	assert_int_equal(guest_mem_read(&mem, 5ull << 30, b, 1), -EFAULT);
	guest_mem_destroy(&mem);

	/* Overlapping or unsorted layouts are refused. */
	layout[1].gpa = 512 << 10;
	assert_int_equal(guest_mem_init(&mem, layout, 2, false), -EINVAL);
	assert_int_equal(guest_mem_init(&mem, layout, 0, false), -EINVAL);
	assert_int_equal(guest_mem_init(&mem, layout, 3, false), -EINVAL);
}

struct fake_dev {
	uint64_t last_off;
	uint32_t last_len;
	uint8_t last_val;
	int reads, writes;
};

static void dev_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len)
{
	struct fake_dev *d = opaque;

	d->reads++;
	d->last_off = off;
	d->last_len = len;
	memset(data, 0x5a, len);
}

static void dev_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
	struct fake_dev *d = opaque;

	d->writes++;
	d->last_off = off;
	d->last_len = len;
	d->last_val = data[0];
}

static const struct bus_ops fake_ops = { .read = dev_read, .write = dev_write };

static void bus_dispatch(void **state)
{
	struct fake_dev a = { 0 }, b = { 0 };
	struct bus bus;
	uint8_t data[8];
	uint8_t v = 7;

	(void)state;
	bus_init(&bus);
	assert_int_equal(bus_register(&bus, 0x3f8, 8, &fake_ops, &a, "a"), 0);
	assert_int_equal(bus_register(&bus, 0x60, 1, &fake_ops, &b, "b"), 0);
	assert_int_equal(bus_register(&bus, 0x3f0, 9, &fake_ops, &b, "x"), -EEXIST);
	assert_int_equal(bus_register(&bus, 0x3ff, 1, &fake_ops, &b, "x"), -EEXIST);
	assert_int_equal(bus_register(&bus, 0x3f9, 1, &fake_ops, &b, "x"), -EEXIST);
	assert_int_equal(bus_register(&bus, 0x400, 0, &fake_ops, &b, "x"), -EINVAL);
	assert_int_equal(bus_register(&bus, UINT64_MAX, 2, &fake_ops, &b, "x"), -EINVAL);
	assert_int_equal(bus_register(&bus, 0x400, 1, &fake_ops, &b, "c"), 0);

	assert_true(bus_write(&bus, 0x3fb, &v, 1));
	assert_int_equal(a.writes, 1);
	assert_int_equal(a.last_off, 3);
	assert_int_equal(a.last_val, 7);
	assert_true(bus_read(&bus, 0x60, data, 1));
	assert_int_equal(b.reads, 1);
	assert_int_equal(b.last_off, 0);
	/* An access hanging over the end of a range reaches nobody. */
	assert_false(bus_read(&bus, 0x3fe, data, 4));
	assert_int_equal(data[0], 0xff);
	assert_false(bus_write(&bus, 0x1234, &v, 1));
	assert_false(bus_read(&bus, 0x1234, data, 2));
	assert_int_equal(data[1], 0xff);
	bus_destroy(&bus);
}

static void bus_many_ranges(void **state)
{
	struct fake_dev d = { 0 };
	struct bus bus;
	uint8_t v;

	(void)state;
	bus_init(&bus);
	/* Registered out of order; lookups must still find each one. */
	for (uint64_t i = 0; i < 100; i++)
		assert_int_equal(bus_register(&bus, ((i * 37) % 100) * 0x1000, 0x100, &fake_ops,
					      &d, "r"),
				 0);
	for (uint64_t i = 0; i < 100; i++) {
		const struct bus_range *r = bus_find(&bus, i * 0x1000 + 0x80, 4);

		assert_non_null(r);
		assert_int_equal(r->base, i * 0x1000);
		assert_null(bus_find(&bus, i * 0x1000 + 0x100, 1));
	}
	assert_true(bus_read(&bus, 0x5000, &v, 1));
	bus_destroy(&bus);
}

static void iov_ranges(void **state)
{
	char a[4] = "abcd", b[3] = "efg", out[8] = { 0 };
	struct iovec iov[2] = { { a, 4 }, { b, 3 } }, sl[2];
	int n;

	(void)state;
	assert_int_equal(iov_gather(iov, 2, 2, out, 4), 0);
	assert_memory_equal(out, "cdef", 4);
	assert_int_equal(iov_gather(iov, 2, 0, out, 7), 0);
	assert_int_equal(iov_gather(iov, 2, 0, out, 8), -EINVAL);
	assert_int_equal(iov_gather(iov, 2, 8, out, 0), -EINVAL);
	assert_int_equal(iov_gather(iov, 2, 5, out, SIZE_MAX), -EINVAL);
	assert_int_equal(iov_scatter(iov, 2, 3, "XY", 2), 0);
	assert_memory_equal(a, "abcX", 4);
	assert_memory_equal(b, "Yfg", 3);
	assert_int_equal(iov_scatter(iov, 2, 6, "XY", 2), -EINVAL);
	assert_memory_equal(b, "Yfg", 3); /* nothing written on failure */
	assert_int_equal(iov_slice(iov, 2, 3, 2, sl, &n), 0);
	assert_int_equal(n, 2);
	assert_ptr_equal(sl[0].iov_base, a + 3);
	assert_int_equal(sl[0].iov_len, 1);
	assert_ptr_equal(sl[1].iov_base, b);
	assert_int_equal(sl[1].iov_len, 1);
	assert_int_equal(iov_slice(iov, 2, 0, 8, sl, &n), -EINVAL);
}

static void parse_numbers_and_refusals(void **state)
{
	uint64_t v = 7;
	char err[16];

	(void)state;
	assert_int_equal(sv_parse_u64("0", 0, 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(sv_parse_u64("18446744073709551615", 0, UINT64_MAX, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(sv_parse_u64("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
	assert_int_equal(sv_parse_u64("11", 0, 10, &v), -ERANGE);
	assert_int_equal(sv_parse_u64("", 0, 10, &v), -EINVAL);
	assert_int_equal(sv_parse_u64("-1", 0, 10, &v), -EINVAL);
	assert_int_equal(sv_parse_u64("1 ", 0, 10, &v), -EINVAL);
	assert_int_equal(sv_parse_u64(NULL, 0, 10, &v), -EINVAL);

	/* sv_errf: the message, cut to the buffer, and the code it was given. */
	assert_int_equal(sv_errf(-EINVAL, err, sizeof(err), "cpus: %u", 9u), -EINVAL);
	assert_string_equal(err, "cpus: 9");
	assert_int_equal(sv_errf(-ERANGE, err, sizeof(err), "%s", "a message longer than 16"), -ERANGE);
	assert_string_equal(err, "a message longe");
	assert_int_equal(sv_errf(0, NULL, 0, "nowhere %d", 1), 0);
	err[0] = 'x';
	assert_int_equal(sv_errf(-EIO, err, 0, "nothing written"), -EIO);
	assert_int_equal(err[0], 'x');
}

static void hex_both_ways(void **state)
{
	const uint8_t in[] = {0x00, 0x7f, 0xa5, 0xff};
	uint8_t out[4];
	char text[9];

	(void)state;
	sv_hex_encode(in, sizeof(in), text);
	assert_string_equal(text, "007fa5ff");
	assert_int_equal(sv_hex_decode(text, out, sizeof(out)), 0);
	assert_memory_equal(out, in, sizeof(in));
	assert_int_equal(sv_hex_decode("007FA5FF", out, sizeof(out)), 0);
	assert_memory_equal(out, in, sizeof(in));
	/* Exactly the digits asked for: no sign, blank, 0x, short or long text. */
	assert_int_equal(sv_hex_decode("+07fa5ff", out, 4), -EINVAL);
	assert_int_equal(sv_hex_decode(" 07fa5ff", out, 4), -EINVAL);
	assert_int_equal(sv_hex_decode("0x7fa5ff", out, 4), -EINVAL);
	assert_int_equal(sv_hex_decode("007fa5f", out, 4), -EINVAL);
	assert_int_equal(sv_hex_decode("007fa5ff0", out, 4), -EINVAL);
	assert_int_equal(sv_hex_decode("007fa5fg", out, 4), -EINVAL);
	assert_int_equal(sv_hex_decode("", out, 0), 0);
}

/*
 * Guest RAM from a snapshot's sparse memory file: data pages read back,
 * holes are zero, nothing the guest writes reaches the file (MAP_PRIVATE),
 * and a file shorter than the RAM is refused.
 */
static void memory_from_file(void **state)
{
	struct guest_mem_region layout[2] = { { .gpa = 0, .size = 8u << 20 }, { .gpa = 16u << 20, .size = 4u << 20 } };
	char path[] = "/tmp/sandvm-test-memfile-XXXXXX";
	uint8_t page[4096], back[4096], zero[4096] = { 0 };
	/* Data at these offsets of the file: an isolated page, two pages 8 KiB apart (one mapping), the second region. */
	const uint64_t at[] = { 4096, 3u << 20, (3u << 20) + 12288, (8u << 20) + (1u << 20) };
	struct guest_mem mem;
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, 12u << 20), 0);
	for (unsigned i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		memset(page, 0xa0 + (int)i, sizeof(page));
		assert_int_equal(pwrite(fd, page, sizeof(page), (off_t)at[i]), (ssize_t)sizeof(page));
	}
	assert_int_equal(guest_mem_init_file(&mem, layout, 2, fd), 0);
	for (unsigned i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		uint64_t gpa = at[i] < (8u << 20) ? at[i] : at[i] - (8u << 20) + (16u << 20);

		memset(page, 0xa0 + (int)i, sizeof(page));
		assert_int_equal(guest_mem_read(&mem, gpa, back, sizeof(back)), 0);
		assert_memory_equal(back, page, sizeof(page));
	}
	assert_int_equal(guest_mem_read(&mem, 0, back, sizeof(back)), 0);
	assert_memory_equal(back, zero, sizeof(zero));
	assert_int_equal(guest_mem_read(&mem, (3u << 20) + 4096, back, sizeof(back)), 0);
	assert_memory_equal(back, zero, sizeof(zero));
	assert_int_equal(guest_mem_read(&mem, (16u << 20) + (3u << 20), back, sizeof(back)), 0);
	assert_memory_equal(back, zero, sizeof(zero));
	/* Writes, to a data page and to a hole, stay in this VM. */
	memset(page, 0x55, sizeof(page));
	assert_int_equal(guest_mem_write(&mem, 4096, page, sizeof(page)), 0);
	assert_int_equal(guest_mem_write(&mem, 8192, page, sizeof(page)), 0);
	assert_int_equal(pread(fd, back, sizeof(back), 4096), (ssize_t)sizeof(back));
	assert_int_equal(back[0], 0xa0);
	assert_int_equal(pread(fd, back, sizeof(back), 8192), (ssize_t)sizeof(back));
	assert_memory_equal(back, zero, sizeof(zero));
	guest_mem_destroy(&mem);
	/* Shorter than the RAM: refused. */
	assert_int_equal(ftruncate(fd, 11u << 20), 0);
	assert_int_equal(guest_mem_init_file(&mem, layout, 2, fd), -EINVAL);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(cmdline_bounds),
		cmocka_unit_test(memory_bounds),
		cmocka_unit_test(memory_from_file),
		cmocka_unit_test(bus_dispatch),
		cmocka_unit_test(bus_many_ranges),
		cmocka_unit_test(iov_ranges),
		cmocka_unit_test(parse_numbers_and_refusals),
		cmocka_unit_test(hex_both_ways),
	};

	return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
