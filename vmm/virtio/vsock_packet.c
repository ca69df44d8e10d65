#include "virtio/vsock_packet.h"

#include "virtio/iov.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

int vsock_packet_parse(const struct virtq_chain *chain, uint64_t guest_cid,
		       struct vsock_packet *pkt)
{
	uint8_t raw[VSOCK_HDR_BYTES];
	struct vsock_hdr *h = &pkt->hdr;

	memset(pkt, 0, sizeof(*pkt));
	if (chain->read_len < VSOCK_HDR_BYTES ||
	    iov_gather(chain->iov, chain->nread, 0, raw, sizeof(raw)) < 0)
		return -EINVAL;
	memcpy(&h->src_cid, raw + 0, 8);
	memcpy(&h->dst_cid, raw + 8, 8);
	memcpy(&h->src_port, raw + 16, 4);
	memcpy(&h->dst_port, raw + 20, 4);
	memcpy(&h->len, raw + 24, 4);
	memcpy(&h->type, raw + 28, 2);
	memcpy(&h->op, raw + 30, 2);
	memcpy(&h->flags, raw + 32, 4);
	memcpy(&h->buf_alloc, raw + 36, 4);
	memcpy(&h->fwd_cnt, raw + 40, 4);
	h->src_cid = le64toh(h->src_cid);
	h->dst_cid = le64toh(h->dst_cid);
	h->src_port = le32toh(h->src_port);
	h->dst_port = le32toh(h->dst_port);
	h->len = le32toh(h->len);
	h->type = le16toh(h->type);
	h->op = le16toh(h->op);
	h->flags = le32toh(h->flags);
	h->buf_alloc = le32toh(h->buf_alloc);
	h->fwd_cnt = le32toh(h->fwd_cnt);

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
	uint64_t v64;
	uint32_t v32;
	uint16_t v16;

	v64 = htole64(hdr->src_cid);
	memcpy(out + 0, &v64, 8);
	v64 = htole64(hdr->dst_cid);
	memcpy(out + 8, &v64, 8);
	v32 = htole32(hdr->src_port);
	memcpy(out + 16, &v32, 4);
	v32 = htole32(hdr->dst_port);
	memcpy(out + 20, &v32, 4);
	v32 = htole32(hdr->len);
	memcpy(out + 24, &v32, 4);
	v16 = htole16(hdr->type);
	memcpy(out + 28, &v16, 2);
	v16 = htole16(hdr->op);
	memcpy(out + 30, &v16, 2);
	v32 = htole32(hdr->flags);
	memcpy(out + 32, &v32, 4);
	v32 = htole32(hdr->buf_alloc);
	memcpy(out + 36, &v32, 4);
	v32 = htole32(hdr->fwd_cnt);
	memcpy(out + 40, &v32, 4);
}
