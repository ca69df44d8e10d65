/* virtio-blk request parsing and execution against a real file, with hostile chains. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "virtio/blk.h"

struct hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};

static char path[] = "/tmp/sandvm-test-blk-XXXXXX";

static int open_disk(struct virtio_blk *blk, size_t size, bool ro, const char *serial)
{
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	assert_int_equal(pwrite(fd, "sector-one", 10, 512), 10);
	close(fd);
	return virtio_blk_open(blk, path, ro, serial);
}

/* One byte of the backing file, read behind the device's back. */
static ssize_t read_disk(uint8_t *buf, off_t off)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = pread(fd, buf, 1, off);
	close(fd);
	return n;
}

static void close_disk(struct virtio_blk *blk)
{
	virtio_blk_close(blk);
	unlink(path);
	strcpy(path, "/tmp/sandvm-test-blk-XXXXXX");
}

/* A chain: header (split over two segments), then data segments, then status. */
static void make_chain(struct virtq_chain *c, struct hdr *h, void *data, size_t len,
		       bool data_writable, uint8_t *status)
{
	memset(c, 0, sizeof(*c));
	c->iov[0] = (struct iovec){ h, 6 };
	c->iov[1] = (struct iovec){ (uint8_t *)h + 6, 10 };
	c->nread = 2;
	c->read_len = 16;
	if (len && !data_writable) {
		c->iov[c->nread++] = (struct iovec){ data, len };
		c->read_len += (uint32_t)len;
	}
	if (len && data_writable) {
		c->iov[c->nread + c->nwrite++] = (struct iovec){ data, len };
		c->write_len += (uint32_t)len;
	}
	c->iov[c->nread + c->nwrite++] = (struct iovec){ status, 1 };
	c->write_len += 1;
}

static uint8_t run(struct virtio_blk *blk, struct virtq_chain *c, uint32_t *written)
{
	struct virtio_blk_req req;

	assert_int_equal(virtio_blk_parse(c, &req), 0);
	return virtio_blk_execute(blk, &req, written);
}

static void read_write_flush(void **state)
{
	struct virtio_blk blk;
	struct virtq_chain c;
	struct hdr h = { htole32(VIRTIO_BLK_T_IN), 0, htole64(1) };
	uint8_t buf[1024], status = 0xff;
	uint32_t written;

	(void)state;
	assert_int_equal(open_disk(&blk, 8192, false, NULL), 0);
	make_chain(&c, &h, buf, 1024, true, &status);
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_OK);
	assert_int_equal(written, 1024);
	assert_memory_equal(buf, "sector-one", 10);

	memset(buf, 'w', 512);
	h = (struct hdr){ htole32(VIRTIO_BLK_T_OUT), 0, htole64(15) };
	make_chain(&c, &h, buf, 512, false, &status);
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_OK);
	assert_int_equal(written, 0);
	assert_int_equal(read_disk(buf, 15 * 512), 1);
	assert_int_equal(buf[0], 'w');

	h = (struct hdr){ htole32(VIRTIO_BLK_T_FLUSH), 0, 0 };
	make_chain(&c, &h, NULL, 0, false, &status);
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_OK);
	h = (struct hdr){ htole32(99), 0, 0 };
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_UNSUPP);
	close_disk(&blk);
}

static void out_of_range(void **state)
{
	struct virtio_blk blk;
	struct virtq_chain c;
	struct hdr h;
	uint8_t buf[1024], status;
	uint32_t written;

	(void)state;
	assert_int_equal(open_disk(&blk, 8192, false, NULL), 0); /* 16 sectors */
	h = (struct hdr){ htole32(VIRTIO_BLK_T_IN), 0, htole64(15) };
	make_chain(&c, &h, buf, 1024, true, &status); /* sectors 15..16 */
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_IOERR);
	h.sector = htole64(16);
	make_chain(&c, &h, buf, 512, true, &status);
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_IOERR);
	h.sector = htole64(UINT64_MAX);
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_IOERR);
	h.sector = htole64(UINT64_MAX / 512 + 1); /* sector * 512 would wrap */
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_IOERR);
	/* Not a whole number of sectors. */
	h = (struct hdr){ htole32(VIRTIO_BLK_T_OUT), 0, 0 };
	make_chain(&c, &h, buf, 100, false, &status);
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_IOERR);
	/* The last sector itself is fine. */
	h = (struct hdr){ htole32(VIRTIO_BLK_T_IN), 0, htole64(15) };
	make_chain(&c, &h, buf, 512, true, &status);
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_OK);
	close_disk(&blk);
}

static void read_only_and_id(void **state)
{
	struct virtio_blk blk;
	struct virtq_chain c;
	struct hdr h = { htole32(VIRTIO_BLK_T_OUT), 0, 0 };
	uint8_t buf[512] = { 1 }, id[32], status;
	uint32_t written;

	(void)state;
	assert_int_equal(open_disk(&blk, 4096, true, "SERIAL-7"), 0);
	make_chain(&c, &h, buf, 512, false, &status);
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_IOERR);
	assert_int_equal(read_disk(buf, 0), 1);
	assert_int_equal(buf[0], 0);

	memset(id, 0xaa, sizeof(id));
	h = (struct hdr){ htole32(VIRTIO_BLK_T_GET_ID), 0, 0 };
	make_chain(&c, &h, id, 32, true, &status);
	assert_int_equal(run(&blk, &c, &written), VIRTIO_BLK_S_OK);
	assert_int_equal(written, 20);
	assert_string_equal((char *)id, "SERIAL-7");
	assert_int_equal(id[19], 0);
	assert_int_equal(id[20], 0xaa); /* nothing past the 20-byte ID */
	close_disk(&blk);
}

static void malformed_chains(void **state)
{
	struct virtio_blk_req req;
	struct virtq_chain c;
	struct hdr h = { 0 };
	uint8_t status, buf[16];

	(void)state;
	/* Header shorter than 16 bytes. */
	memset(&c, 0, sizeof(c));
	c.iov[0] = (struct iovec){ &h, 8 };
	c.nread = 1;
	c.read_len = 8;
	c.iov[1] = (struct iovec){ &status, 1 };
	c.nwrite = 1;
	c.write_len = 1;
	assert_int_equal(virtio_blk_parse(&c, &req), -EINVAL);
	/* No writable byte for the status. */
	make_chain(&c, &h, buf, 16, false, &status);
	c.nwrite = 0;
	c.write_len = 0;
	assert_int_equal(virtio_blk_parse(&c, &req), -EINVAL);
	/* Lengths that disagree with the segments are caught, not trusted. */
	h.type = htole32(VIRTIO_BLK_T_OUT);
	make_chain(&c, &h, buf, 16, false, &status);
	c.read_len = 4096;
	assert_int_equal(virtio_blk_parse(&c, &req), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(read_write_flush),
		cmocka_unit_test(out_of_range),
		cmocka_unit_test(read_only_and_id),
		cmocka_unit_test(malformed_chains),
	};

	return cmocka_run_group_tests_name("virtio_blk", tests, NULL, NULL);
}
