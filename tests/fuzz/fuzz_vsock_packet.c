/* libFuzzer target: virtio-vsock TX packets split over fuzzer-chosen segments. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/vsock_packet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Input: byte 0 = segment count (1..8), then one length byte per segment (x8), then bytes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t mem[8 * 255 * 8];
	struct virtq_chain chain;
	struct vsock_packet pkt;
	unsigned nseg;
	size_t off = 0;

	if (size < 1)
		return 0;
	nseg = data[0] % 8 + 1;
	if (size < 1 + nseg)
		return 0;
	memset(&chain, 0, sizeof(chain));
	memcpy(mem, data + 1 + nseg, size - 1 - nseg < sizeof(mem) ? size - 1 - nseg : sizeof(mem));
	for (unsigned i = 0; i < nseg; i++) {
		size_t len = (size_t)data[1 + i] * 8;

		chain.iov[i] = (struct iovec){ mem + off, len };
		chain.read_len += (uint32_t)len;
		off += len;
	}
	chain.nread = nseg;
	if (vsock_packet_parse(&chain, 3, &pkt) != 0)
		return 0;
	{
		size_t total = 0;

		for (int i = 0; i < pkt.npayload; i++) {
			if ((uint8_t *)pkt.payload[i].iov_base < mem ||
			    (uint8_t *)pkt.payload[i].iov_base + pkt.payload[i].iov_len > mem + off)
				abort();
			total += pkt.payload[i].iov_len;
		}
		if (total != pkt.hdr.len || pkt.hdr.src_cid != 3 || pkt.hdr.dst_cid != 2 ||
		    pkt.hdr.len > VSOCK_MAX_PAYLOAD)
			abort();
	}
	return 0;
}
