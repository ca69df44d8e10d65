#ifndef SANDVM_VMM_VIRTIO_VSOCK_PACKET_H
#define SANDVM_VMM_VIRTIO_VSOCK_PACKET_H

#include <stdint.h>
#include <sys/uio.h>

#include "virtio/queue.h"

/*
 * virtio-vsock stream packets as they travel on the TX and RX queues: a
 * 44-byte little-endian header and up to `len` bytes of payload.
 */

#define VSOCK_HOST_CID 2u
#define VSOCK_HDR_BYTES 44u
/* Linux never sends more than 64 KiB in one packet; anything larger is hostile. */
#define VSOCK_MAX_PAYLOAD (64u * 1024u)

enum {
	VSOCK_TYPE_STREAM = 1,
	VSOCK_OP_REQUEST = 1,
	VSOCK_OP_RESPONSE = 2,
	VSOCK_OP_RST = 3,
	VSOCK_OP_SHUTDOWN = 4,
	VSOCK_OP_RW = 5,
	VSOCK_OP_CREDIT_UPDATE = 6,
	VSOCK_OP_CREDIT_REQUEST = 7,
	VSOCK_SHUTDOWN_RCV = 1,
	VSOCK_SHUTDOWN_SEND = 2,
};

struct vsock_hdr {
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
};

/* A TX packet from the guest: its header (host byte order) and payload segments. */
struct vsock_packet {
	struct vsock_hdr hdr;
	struct iovec payload[VIRTQ_MAX_SEGS];
	int npayload;
};

/*
 * Parses a TX chain from the guest with guest CID `guest_cid`. Pure. Fails with
 * -EINVAL (short header, payload missing or over VSOCK_MAX_PAYLOAD), -EPERM
 * (source is not the guest or destination not the host: a spoofed packet),
 * -EPROTONOSUPPORT (not a stream packet), -EOPNOTSUPP (unknown op).
 */
int vsock_packet_parse(const struct virtq_chain *chain, uint64_t guest_cid,
		       struct vsock_packet *pkt);

/* Writes a header (little-endian) into 44 bytes. */
void vsock_hdr_encode(const struct vsock_hdr *hdr, uint8_t out[VSOCK_HDR_BYTES]);

#endif
