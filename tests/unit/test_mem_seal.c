/*
 * Sealed memory files (vmm/snapshot/mem_seal.h): guest RAM round trips
 * through the sealed format with zero pages left untouched, and a wrong
 * key, a flipped byte, a truncated or extended file, a file of another RAM
 * size, an unsealed file and a hostile key input are each refused, never
 * read as other data.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "unit.h"
#include "memory.h"
#include "simage/file.h"
#include "snapshot/mem_seal.h"

#define MIB (1ull << 20)

static const uint8_t key_a[32] = "0123456789abcdef0123456789abcde";
static const uint8_t key_b[32] = "0123456789abcdef0123456789abcdX";
static const char marker[] = "SECRET-MARKER-7f3a9c";

/* Two regions, like x86 above 3 GiB, in miniature: 3 MiB and 1 MiB. */
static void mem_make(struct guest_mem *m)
{
	const struct guest_mem_region layout[2] = { { .gpa = 0, .size = 3 * MIB }, { .gpa = 8 * MIB, .size = MIB } };

	assert_int_equal(guest_mem_init(m, layout, 2, false), 0);
}

/* Some pages of recognisable data (one across the region boundary's chunk), the rest zero. */
static void mem_fill(struct guest_mem *m)
{
	for (unsigned i = 0; i < 3 * MIB / 4096; i += 37)
		for (unsigned o = 0; o + sizeof(marker) < 4096; o += 512)
			memcpy(m->regions[0].host + i * 4096 + o, marker, sizeof(marker));
	memset(m->regions[0].host + 3 * MIB - 4096, 0x5a, 4096);
	memset(m->regions[1].host, 0xa5, 4096);
	m->regions[1].host[MIB - 1] = 1;
}

static int sealed_file(const struct guest_mem *m, const uint8_t *key)
{
	char err[256] = "";
	int fd = memfd_create("mem", 0);

	assert_true(fd >= 0);
	if (mem_seal_write(m, fd, key, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return fd;
}

static bool contains(int fd, const void *needle, size_t nlen)
{
	off_t size = lseek(fd, 0, SEEK_END);
	uint8_t *buf = malloc((size_t)size);
	bool found;

	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)size, 0), size);
	found = memmem(buf, (size_t)size, needle, nlen) != NULL;
	free(buf);
	return found;
}

static int unseal(int fd, const uint8_t *key, struct guest_mem *out, char *err, size_t errlen)
{
	mem_make(out);
	return mem_seal_read(out, fd, key, err, errlen);
}

static void round_trip(void **state)
{
	struct guest_mem a, b;
	char err[256] = "";
	int fd;

	(void)state;
	mem_make(&a);
	mem_fill(&a);
	fd = sealed_file(&a, key_a);
	assert_true(mem_seal_is_sealed(fd));
	/* No plaintext: not the marker, not a page of 0x5a. */
	assert_false(contains(fd, marker, sizeof(marker) - 1));
	/* Smaller than the RAM: zero chunks are holes, the rest compressed. */
	assert_true(lseek(fd, 0, SEEK_END) < (off_t)(4 * MIB));
	if (unseal(fd, key_a, &b, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_memory_equal(a.regions[0].host, b.regions[0].host, 3 * MIB);
	assert_memory_equal(a.regions[1].host, b.regions[1].host, MIB);
	guest_mem_destroy(&b);
	guest_mem_destroy(&a);
	close(fd);
}

/* Zero pages are not written on restore: they stay unallocated anonymous memory. */
static void zero_pages_untouched(void **state)
{
	struct guest_mem a, b;
	unsigned char vec[3 * MIB / 4096];
	char err[256] = "";
	unsigned resident = 0;
	int fd;

	(void)state;
	mem_make(&a);
	memcpy(a.regions[0].host + 5 * 4096, marker, sizeof(marker));
	fd = sealed_file(&a, key_a);
	if (unseal(fd, key_a, &b, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(mincore(b.regions[0].host, 3 * MIB, vec), 0);
	for (size_t i = 0; i < sizeof(vec); i++)
		resident += vec[i] & 1;
	assert_int_equal(resident, 1);
	assert_memory_equal(b.regions[0].host + 5 * 4096, marker, sizeof(marker));
	guest_mem_destroy(&b);
	/* An all-zero RAM: a file of header and table only. */
	memset(a.regions[0].host, 0, 3 * MIB);
	close(fd);
	fd = sealed_file(&a, key_a);
	assert_true(lseek(fd, 0, SEEK_END) < 4096);
	if (unseal(fd, key_a, &b, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	guest_mem_destroy(&b);
	guest_mem_destroy(&a);
	close(fd);
}

static void wrong_key(void **state)
{
	struct guest_mem a, b;
	char err[256] = "";
	int fd;

	(void)state;
	mem_make(&a);
	mem_fill(&a);
	fd = sealed_file(&a, key_a);
	assert_int_equal(unseal(fd, key_b, &b, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "wrong key"));
	/* Nothing was copied in before the refusal. */
	assert_true(b.regions[0].host[0] == 0 && b.regions[1].host[0] == 0);
	guest_mem_destroy(&b);
	guest_mem_destroy(&a);
	close(fd);
}

/* Every byte of header and table, and a spread of data bytes: each flip is refused. */
static void tamper(void **state)
{
	struct guest_mem a, b;
	struct simage_header h;
	char err[256];
	off_t size;
	int fd;

	(void)state;
	mem_make(&a);
	mem_fill(&a);
	fd = sealed_file(&a, key_a);
	assert_int_equal(simage_peek(fd, &h), 0);
	size = lseek(fd, 0, SEEK_END);
	for (off_t off = 0; off < size; off += off < (off_t)h.data_offset ? 1 : 997) {
		uint8_t byte;

		assert_int_equal(pread(fd, &byte, 1, off), 1);
		byte ^= 0x10;
		assert_int_equal(pwrite(fd, &byte, 1, off), 1);
		err[0] = '\0';
		if (unseal(fd, key_a, &b, err, sizeof(err)) == 0)
			fail_msg("a flip at %lld went unnoticed", (long long)off);
		assert_true(err[0] != '\0');
		guest_mem_destroy(&b);
		byte ^= 0x10;
		assert_int_equal(pwrite(fd, &byte, 1, off), 1);
	}
	err[0] = '\0';
	assert_int_equal(unseal(fd, key_a, &b, err, sizeof(err)), 0);
	guest_mem_destroy(&b);
	guest_mem_destroy(&a);
	close(fd);
}

static void truncated_extended(void **state)
{
	struct guest_mem a, b;
	char err[256] = "";
	off_t size;
	int fd;

	(void)state;
	mem_make(&a);
	mem_fill(&a);
	fd = sealed_file(&a, key_a);
	size = lseek(fd, 0, SEEK_END);
	assert_int_equal(ftruncate(fd, size - 1), 0);
	assert_int_equal(unseal(fd, key_a, &b, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "truncated"));
	guest_mem_destroy(&b);
	assert_int_equal(ftruncate(fd, 100), 0);
	assert_int_equal(unseal(fd, key_a, &b, err, sizeof(err)), -EINVAL);
	guest_mem_destroy(&b);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(unseal(fd, key_a, &b, err, sizeof(err)), -EINVAL);
	assert_false(mem_seal_is_sealed(fd));
	guest_mem_destroy(&b);
	close(fd);
	fd = sealed_file(&a, key_a);
	assert_int_equal(ftruncate(fd, size + 4096), 0);
	assert_int_equal(unseal(fd, key_a, &b, err, sizeof(err)), -EINVAL);
	guest_mem_destroy(&b);
	guest_mem_destroy(&a);
	close(fd);
}

/* Another RAM size, and an unsealed memory file: refused, saying which. */
static void other_machine_and_unsealed(void **state)
{
	const struct guest_mem_region small = { .gpa = 0, .size = 2 * MIB };
	struct guest_mem a, b;
	char err[256] = "";
	uint8_t page[4096];
	int fd;

	(void)state;
	mem_make(&a);
	mem_fill(&a);
	fd = sealed_file(&a, key_a);
	assert_int_equal(guest_mem_init(&b, &small, 1, false), 0);
	assert_int_equal(mem_seal_read(&b, fd, key_a, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "4 MiB of RAM, this VM has 2"));
	guest_mem_destroy(&b);
	close(fd);
	fd = memfd_create("plain", 0);
	memset(page, 0x41, sizeof(page));
	assert_int_equal(pwrite(fd, page, sizeof(page), 0), (ssize_t)sizeof(page));
	assert_false(mem_seal_is_sealed(fd));
	assert_int_equal(unseal(fd, key_a, &b, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a sealed memory file"));
	guest_mem_destroy(&b);
	guest_mem_destroy(&a);
	close(fd);
}

/* The key's descriptor: exactly 32 bytes, from a pipe or a file. */
static void key_input(void **state)
{
	uint8_t key[32], big[64] = { 0 };
	int p[2];

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], key_a, 32), 32);
	close(p[1]);
	assert_int_equal(mem_seal_read_key(p[0], key), 0);
	assert_memory_equal(key, key_a, 32);
	close(p[0]);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], key_a, 31), 31);
	close(p[1]);
	assert_int_equal(mem_seal_read_key(p[0], key), -EINVAL);
	close(p[0]);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], big, sizeof(big)), (ssize_t)sizeof(big));
	close(p[1]);
	assert_int_equal(mem_seal_read_key(p[0], key), -EINVAL);
	close(p[0]);
	assert_int_equal(pipe(p), 0);
	close(p[1]);
	assert_int_equal(mem_seal_read_key(p[0], key), -EINVAL);
	close(p[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip),
		cmocka_unit_test(zero_pages_untouched),
		cmocka_unit_test(wrong_key),
		cmocka_unit_test(tamper),
		cmocka_unit_test(truncated_extended),
		cmocka_unit_test(other_machine_and_unsealed),
		cmocka_unit_test(key_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
