/* libFuzzer target: virtio-blk requests built from the input, parsed and run on a memfd disk. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "virtio/blk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct virtio_blk *disk(void)
{
	static struct virtio_blk blk;
	static int ready;

	if (!ready) {
		int fd = memfd_create("fuzz-disk", 0);
		char path[64];

		if (fd < 0 || ftruncate(fd, 64 * 1024) < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (virtio_blk_open(&blk, path, false, "FUZZ") < 0)
			abort();
		ready = 1;
	}
	return &blk;
}

/*
 * Input: byte 0 = segment count (1..16), byte 1 = how many are readable, then
 * one length byte per segment (x16), then the bytes the segments cover.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t mem[16 * 255 * 16];
	struct virtio_blk_req req;
	struct virtq_chain chain;
	unsigned nseg, nread;
	size_t off = 0;
	uint32_t written;

	if (size < 2)
		return 0;
	nseg = data[0] % 16 + 1;
	nread = data[1] % (nseg + 1);
	if (size < 2 + nseg)
		return 0;
	memset(&chain, 0, sizeof(chain));
	memcpy(mem, data + 2 + nseg, size - 2 - nseg < sizeof(mem) ? size - 2 - nseg : sizeof(mem));
	for (unsigned i = 0; i < nseg; i++) {
		size_t len = (size_t)data[2 + i] * 16;

		chain.iov[i] = (struct iovec){ mem + off, len };
		off += len;
		if (i < nread)
			chain.read_len += (uint32_t)len;
		else
			chain.write_len += (uint32_t)len;
	}
	chain.nread = nread;
	chain.nwrite = nseg - nread;
	if (virtio_blk_parse(&chain, &req) != 0)
		return 0;
	for (int i = 0; i < req.ndata; i++)
		if ((uint8_t *)req.data[i].iov_base < mem ||
		    (uint8_t *)req.data[i].iov_base + req.data[i].iov_len > mem + off)
			abort();
	if (req.status < mem || req.status >= mem + off)
		abort();
	*req.status = virtio_blk_execute(disk(), &req, &written);
	if (written > req.data_len)
		abort();
	return 0;
}
