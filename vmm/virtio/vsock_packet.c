#include "virtio/vsock_packet.h"

#include "virtio/iov.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

/* The header as it lies in guest memory (little-endian, no padding). */
struct vsock_hdr_wire {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
} __attribute__((packed));

_Static_assert(sizeof(struct vsock_hdr_wire) == VSOCK_HDR_BYTES, "virtio-vsock header ABI");

int vsock_packet_parse(const struct virtq_chain *chain, uint64_t guest_cid,
		       struct vsock_packet *pkt)
{
	uint8_t raw[VSOCK_HDR_BYTES];
	struct vsock_hdr *h = &pkt->hdr;
	struct vsock_hdr_wire wire;

	memset(pkt, 0, sizeof(*pkt));
	if (chain->read_len < VSOCK_HDR_BYTES ||
	    iov_gather(chain->iov, chain->nread, 0, raw, sizeof(raw)) < 0)
		return -EINVAL;
	memcpy(&wire, raw, sizeof(wire));
	*h = (struct vsock_hdr){
		.src_cid = le64toh(wire.src_cid),
		.dst_cid = le64toh(wire.dst_cid),
		.src_port = le32toh(wire.src_port),
		.dst_port = le32toh(wire.dst_port),
		.len = le32toh(wire.len),
		.type = le16toh(wire.type),
		.op = le16toh(wire.op),
		.flags = le32toh(wire.flags),
		.buf_alloc = le32toh(wire.buf_alloc),
		.fwd_cnt = le32toh(wire.fwd_cnt),
	};

	if (h->src_cid != guest_cid || h->dst_cid != VSOCK_HOST_CID)
		return -EPERM;
	if (h->type != VSOCK_TYPE_STREAM)
		return -EPROTONOSUPPORT;
	if (h->op < VSOCK_OP_REQUEST || h->op > VSOCK_OP_CREDIT_REQUEST)
		return -EOPNOTSUPP;
	if (h->op != VSOCK_OP_RW && h->len != 0)
		return -EINVAL;
	if (h->len > VSOCK_MAX_PAYLOAD || h->len > chain->read_len - VSOCK_HDR_BYTES)
		return -EINVAL;
	/* The payload: the next len readable bytes after the header. */
	if (iov_slice(chain->iov, chain->nread, VSOCK_HDR_BYTES, h->len, pkt->payload,
		      &pkt->npayload) < 0)
		return -EINVAL;
	return 0;
}

void vsock_hdr_encode(const struct vsock_hdr *hdr, uint8_t out[VSOCK_HDR_BYTES])
{
	struct vsock_hdr_wire wire = {
		.src_cid = htole64(hdr->src_cid),
		.dst_cid = htole64(hdr->dst_cid),
		.src_port = htole32(hdr->src_port),
		.dst_port = htole32(hdr->dst_port),
		.len = htole32(hdr->len),
		.type = htole16(hdr->type),
		.op = htole16(hdr->op),
		.flags = htole32(hdr->flags),
		.buf_alloc = htole32(hdr->buf_alloc),
		.fwd_cnt = htole32(hdr->fwd_cnt),
	};

	memcpy(out, &wire, sizeof(wire));
}
