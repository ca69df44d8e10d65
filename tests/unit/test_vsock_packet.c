/* virtio-vsock TX packet parsing with spoofed, truncated and oversized packets. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "unit.h"
#include "virtio/vsock_packet.h"

#define GUEST_CID 3

static uint8_t raw[VSOCK_HDR_BYTES];
static uint8_t payload[VSOCK_MAX_PAYLOAD + 64];

static void make(struct virtq_chain *c, struct vsock_hdr h, size_t payload_len, int split)
{
	vsock_hdr_encode(&h, raw);
	memset(c, 0, sizeof(*c));
	if (split) {
		c->iov[c->nread++] = (struct iovec){ raw, 20 };
		c->iov[c->nread++] = (struct iovec){ raw + 20, VSOCK_HDR_BYTES - 20 };
	} else {
		c->iov[c->nread++] = (struct iovec){ raw, VSOCK_HDR_BYTES };
	}
	c->read_len = VSOCK_HDR_BYTES;
	if (payload_len) {
		c->iov[c->nread++] = (struct iovec){ payload, payload_len };
		c->read_len += (uint32_t)payload_len;
	}
}

static struct vsock_hdr hdr(uint16_t op, uint32_t len)
{
	return (struct vsock_hdr){ .src_cid = GUEST_CID, .dst_cid = VSOCK_HOST_CID,
				   .src_port = 1234, .dst_port = 5000, .len = len,
				   .type = VSOCK_TYPE_STREAM, .op = op, .buf_alloc = 65536,
				   .fwd_cnt = 7 };
}

static void valid_packets(void **state)
{
	struct vsock_packet p;
	struct virtq_chain c;

	(void)state;
	make(&c, hdr(VSOCK_OP_REQUEST, 0), 0, 1);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), 0);
	assert_int_equal(p.hdr.op, VSOCK_OP_REQUEST);
	assert_int_equal(p.hdr.src_port, 1234);
	assert_int_equal(p.hdr.dst_port, 5000);
	assert_int_equal(p.hdr.buf_alloc, 65536);
	assert_int_equal(p.hdr.fwd_cnt, 7);
	assert_int_equal(p.npayload, 0);

	make(&c, hdr(VSOCK_OP_RW, 100), 300, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), 0);
	assert_int_equal(p.npayload, 1);
	assert_int_equal(p.payload[0].iov_len, 100);
	assert_ptr_equal(p.payload[0].iov_base, payload);

	/* Header and payload in one segment. */
	make(&c, hdr(VSOCK_OP_RW, 10), 0, 0);
	c.iov[0].iov_base = payload;
	memcpy(payload, raw, VSOCK_HDR_BYTES);
	c.iov[0].iov_len = VSOCK_HDR_BYTES + 10;
	c.read_len = VSOCK_HDR_BYTES + 10;
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), 0);
	assert_ptr_equal(p.payload[0].iov_base, payload + VSOCK_HDR_BYTES);
}

static void hostile_packets(void **state)
{
	struct vsock_packet p;
	struct virtq_chain c;
	struct vsock_hdr h;

	(void)state;
	/* Spoofed source CID, or a destination other than the host. */
	h = hdr(VSOCK_OP_RW, 0);
	h.src_cid = 4;
	make(&c, h, 0, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EPERM);
	h = hdr(VSOCK_OP_RW, 0);
	h.dst_cid = 5;
	make(&c, h, 0, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EPERM);
	h = hdr(VSOCK_OP_RW, 0);
	h.src_cid = GUEST_CID | (1ull << 40); /* the upper bits count too */
	make(&c, h, 0, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EPERM);
	/* Not a stream, or an unknown op. */
	h = hdr(VSOCK_OP_RW, 0);
	h.type = 2;
	make(&c, h, 0, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EPROTONOSUPPORT);
	make(&c, hdr(0, 0), 0, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EOPNOTSUPP);
	make(&c, hdr(8, 0), 0, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EOPNOTSUPP);
	/* A length the chain does not carry, one over the cap, one on a control op. */
	make(&c, hdr(VSOCK_OP_RW, 101), 100, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EINVAL);
	make(&c, hdr(VSOCK_OP_RW, 0xffffffff), 100, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EINVAL);
	make(&c, hdr(VSOCK_OP_RW, VSOCK_MAX_PAYLOAD + 1), VSOCK_MAX_PAYLOAD + 1, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EINVAL);
	make(&c, hdr(VSOCK_OP_REQUEST, 4), 4, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EINVAL);
	/* A header cut short. */
	make(&c, hdr(VSOCK_OP_RW, 0), 0, 1);
	c.iov[1].iov_len = 3;
	c.read_len = 23;
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EINVAL);
	/* read_len claiming more than the segments hold. */
	make(&c, hdr(VSOCK_OP_RW, 50), 10, 0);
	c.read_len = VSOCK_HDR_BYTES + 50;
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), -EINVAL);
}

static void encode_round_trip(void **state)
{
	struct vsock_hdr h = hdr(VSOCK_OP_CREDIT_UPDATE, 0), back;
	struct vsock_packet p;
	struct virtq_chain c;

	(void)state;
	h.flags = 3;
	make(&c, h, 0, 0);
	assert_int_equal(vsock_packet_parse(&c, GUEST_CID, &p), 0);
	back = p.hdr;
	assert_memory_equal(&back, &h, sizeof(h));
	assert_int_equal(raw[30], VSOCK_OP_CREDIT_UPDATE); /* little-endian op at 30 */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid_packets),
		cmocka_unit_test(hostile_packets),
		cmocka_unit_test(encode_round_trip),
	};

	return cmocka_run_group_tests_name("vsock_packet", tests, NULL, NULL);
}
