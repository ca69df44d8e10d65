/*
 * The VMM's encrypted-image block backend: reads match the disk the image
 * was made from, writes land in the overlay (never the image) and read
 * back, a tampered chunk is an I/O error and a counted failure, and an
 * image opened with another image's keys is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit.h"
#include "backends/image_disk.h"
#include "simage/file.h"

#define CHUNK (1u << 16)
#define DISK (5u * CHUNK + 4096u)

static const uint8_t key[24] = "image disk test key 24b";
static char dir[] = "/tmp/sandvm-test-imgdisk-XXXXXX";
static char image[128];
static uint8_t disk[DISK];
static struct simage_keys keys;

static int setup(void **state)
{
	struct simage_write_opts opts = { .chunk_shift = 16 };
	struct simage_write_stats st;
	struct simage_header h;
	uint64_t seed = 42;
	char raw[128];
	int rfd, ofd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	for (size_t i = 0; i < DISK; i++)
		disk[i] = (i / CHUNK) == 2 ? 0 : (uint8_t)unit_rand(&seed);
	snprintf(raw, sizeof(raw), "%s/raw", dir);
	snprintf(image, sizeof(image), "%s/image", dir);
	rfd = open(raw, O_RDWR | O_CREAT, 0600);
	ofd = open(image, O_RDWR | O_CREAT, 0600);
	assert_true(rfd >= 0 && ofd >= 0);
	assert_int_equal(pwrite(rfd, disk, DISK, 0), DISK);
	assert_int_equal(simage_write(rfd, DISK, ofd, key, sizeof(key), &opts, &h, &st), 0);
	assert_int_equal(simage_derive_keys(key, sizeof(key), &h, &keys), 0);
	close(rfd);
	close(ofd);
	unlink(raw);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(image);
	rmdir(dir);
	return 0;
}

static int read_at(struct blk_backend *b, uint64_t off, uint8_t *buf, size_t len)
{
	/* Two iovecs, split unevenly, to cross chunk and iovec edges together. */
	struct iovec iov[2] = { { buf, len / 3 }, { buf + len / 3, len - len / 3 } };

	return b->ops->read(b, off, iov, 2);
}

static int write_at(struct blk_backend *b, uint64_t off, const uint8_t *buf, size_t len)
{
	struct iovec iov = { (void *)buf, len };

	return b->ops->write(b, off, &iov, 1);
}

static void reads_match_the_disk(void **state)
{
	struct blk_backend *b;
	static uint8_t buf[DISK];

	(void)state;
	assert_int_equal(image_disk_create(&b, image, &keys, dir, "test"), 0);
	assert_int_equal(b->size, DISK);
	assert_int_equal(read_at(b, 0, buf, DISK), 0);
	assert_memory_equal(buf, disk, DISK);
	/* Unaligned ranges across chunk edges, many times over (the cache evicts). */
	for (uint64_t off = 512; off + 3 * CHUNK < DISK; off += 7 * 512) {
		assert_int_equal(read_at(b, off, buf, 3 * CHUNK - 1024), 0);
		assert_memory_equal(buf, disk + off, 3 * CHUNK - 1024);
	}
	assert_int_equal(read_at(b, DISK - 512, buf, 1024), -EINVAL);
	assert_int_equal(image_disk_auth_failures(b), 0);
	blk_backend_destroy(b);
}

static void writes_go_to_the_overlay(void **state)
{
	struct blk_backend *b;
	static uint8_t buf[DISK], want[DISK];
	struct stat before, after;
	uint8_t patch[3 * 512];

	(void)state;
	assert_int_equal(stat(image, &before), 0);
	assert_int_equal(image_disk_create(&b, image, &keys, dir, "test"), 0);
	memcpy(want, disk, DISK);
	memset(patch, 0xab, sizeof(patch));
	/* Across the edge of chunks 0 and 1, into the hole chunk 2, and the short tail. */
	assert_int_equal(write_at(b, CHUNK - 512, patch, sizeof(patch)), 0);
	memcpy(want + CHUNK - 512, patch, sizeof(patch));
	assert_int_equal(write_at(b, 2 * CHUNK + 4096, patch, 512), 0);
	memcpy(want + 2 * CHUNK + 4096, patch, 512);
	assert_int_equal(write_at(b, DISK - 512, patch, 512), 0);
	memcpy(want + DISK - 512, patch, 512);
	/* A whole chunk at once, then rewritten: a fresh nonce each time. */
	memset(buf, 0x5a, CHUNK);
	assert_int_equal(write_at(b, 3 * CHUNK, buf, CHUNK), 0);
	memset(buf, 0x6b, CHUNK);
	assert_int_equal(write_at(b, 3 * CHUNK, buf, CHUNK), 0);
	memset(want + 3 * CHUNK, 0x6b, CHUNK);
	/* Evict everything from the cache so reads come back through the overlay. */
	for (int round = 0; round < 40; round++)
		assert_int_equal(read_at(b, (uint64_t)(round % 5) * CHUNK, buf, 512), 0);
	assert_int_equal(read_at(b, 0, buf, DISK), 0);
	assert_memory_equal(buf, want, DISK);
	blk_backend_destroy(b);
	/* The image itself is untouched, and a fresh open sees the original. */
	assert_int_equal(stat(image, &after), 0);
	assert_int_equal(before.st_size, after.st_size);
	assert_int_equal(before.st_mtime, after.st_mtime);
	assert_int_equal(image_disk_create(&b, image, &keys, dir, "test"), 0);
	assert_int_equal(read_at(b, 0, buf, DISK), 0);
	assert_memory_equal(buf, disk, DISK);
	blk_backend_destroy(b);
}

static void tampered_chunk_is_an_io_error(void **state)
{
	struct simage_header h;
	struct simage_reader r;
	struct blk_backend *b;
	static uint8_t buf[DISK];
	uint8_t byte;
	uint64_t off;
	int fd = open(image, O_RDWR);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(simage_peek(fd, &h), 0);
	assert_int_equal(simage_reader_open_keys(&r, fd, &keys), 0);
	off = r.table[1].offset + 100;
	simage_reader_close(&r);
	assert_int_equal(pread(fd, &byte, 1, (off_t)off), 1);
	byte ^= 0x01;
	assert_int_equal(pwrite(fd, &byte, 1, (off_t)off), 1);
	assert_int_equal(image_disk_create(&b, image, &keys, dir, "test"), 0);
	assert_int_equal(read_at(b, 0, buf, CHUNK), 0);
	assert_int_equal(read_at(b, CHUNK + 512, buf, 512), -EIO);
	assert_int_equal(read_at(b, 0, buf, 2 * CHUNK), -EIO);
	assert_int_equal(image_disk_auth_failures(b), 2);
	/* A write into the bad chunk cannot start from it either. */
	assert_int_equal(write_at(b, CHUNK, buf, 512), -EIO);
	assert_int_equal(read_at(b, 3 * CHUNK, buf, CHUNK), 0);
	assert_memory_equal(buf, disk + 3 * CHUNK, CHUNK);
	blk_backend_destroy(b);
	byte ^= 0x01;
	assert_int_equal(pwrite(fd, &byte, 1, (off_t)off), 1);
	/* A flipped header byte: refused at open. */
	assert_int_equal(pread(fd, &byte, 1, 100), 1);
	byte ^= 0x80;
	assert_int_equal(pwrite(fd, &byte, 1, 100), 1);
	assert_int_equal(image_disk_create(&b, image, &keys, dir, "test"), SIMAGE_E_AUTH);
	byte ^= 0x80;
	assert_int_equal(pwrite(fd, &byte, 1, 100), 1);
	close(fd);
}

static void other_keys_refused(void **state)
{
	struct simage_keys other = keys;
	struct blk_backend *b;

	(void)state;
	other.meta[0] ^= 1;
	assert_int_equal(image_disk_create(&b, image, &other, dir, "test"), SIMAGE_E_AUTH);
	assert_int_equal(image_disk_create(&b, "/nonexistent/image", &keys, dir, "test"), -ENOENT);
	assert_int_equal(image_disk_create(&b, image, &keys, "/nonexistent", "test"), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reads_match_the_disk),
		cmocka_unit_test(writes_go_to_the_overlay),
		cmocka_unit_test(tampered_chunk_is_an_io_error),
		cmocka_unit_test(other_keys_refused),
	};

	return cmocka_run_group_tests_name("image_disk", tests, setup, teardown);
}
