/* Agent wire format: header, stream reader, every message, hostile payloads. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "unit.h"
#include "agent_proto.h"

static uint8_t big[AGENT_PROTO_MAX_FRAME + 64];
static uint8_t rbuf[AGENT_PROTO_MAX_PAYLOAD];
static const char *ptrs[AGENT_PROTO_EXEC_PTRS];

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Appends one TLV with a declared length that may differ from what follows. */
static size_t tlv(uint8_t *p, uint16_t tag, uint32_t len, const void *v, size_t vlen)
{
	put16(p, tag);
	put32(p + 2, len);
	if (vlen)
		memcpy(p + 6, v, vlen);
	return 6 + vlen;
}

static size_t tlv_u32(uint8_t *p, uint16_t tag, uint32_t v)
{
	uint8_t b[4];

	put32(b, v);
	return tlv(p, tag, 4, b, 4);
}

static size_t tlv_str(uint8_t *p, uint16_t tag, const char *s)
{
	return tlv(p, tag, (uint32_t)strlen(s) + 1, s, strlen(s) + 1);
}

static struct agent_proto_frame raw(uint8_t type, const uint8_t *payload, size_t len)
{
	struct agent_proto_frame f = { .hdr = { .version = 1, .type = type, .stream = 1 } };

	f.hdr.length = (uint32_t)len;
	f.payload = payload;
	return f;
}

/* Parses an encoded frame back: header must decode and cover exactly len bytes. */
static struct agent_proto_frame parse(const uint8_t *buf, size_t len)
{
	struct agent_proto_frame f;

	assert_int_equal(agent_proto_decode_header(buf, len, &f.hdr), 0);
	assert_int_equal(f.hdr.length + AGENT_PROTO_HEADER_SIZE, len);
	f.payload = buf + AGENT_PROTO_HEADER_SIZE;
	return f;
}

static void valid_header(uint8_t *b, uint8_t type, uint32_t stream, uint32_t len)
{
	struct agent_proto_header h = { .type = type, .stream = stream, .length = len };

	assert_int_equal(agent_proto_encode_header(&h, b), 0);
}

static void header_roundtrip(void **state)
{
	struct agent_proto_header h = { .type = AGENT_PROTO_STDOUT, .stream = 0xdeadbeef,
					.length = 1234, .flags = 0x8001 };
	const uint8_t want[16] = { 0x53, 0x56, 1, AGENT_PROTO_STDOUT, 0xef, 0xbe, 0xad, 0xde,
				   0xd2, 0x04, 0, 0, 0x01, 0x80, 0, 0 };
	struct agent_proto_header out;
	uint8_t b[16];

	(void)state;
	assert_int_equal(agent_proto_encode_header(&h, b), 0);
	assert_memory_equal(b, want, 16);
	assert_int_equal(agent_proto_decode_header(b, 16, &out), 0);
	assert_int_equal(out.version, 1);
	assert_int_equal(out.type, AGENT_PROTO_STDOUT);
	assert_int_equal(out.stream, 0xdeadbeef);
	assert_int_equal(out.length, 1234);
	assert_int_equal(out.flags, 0x8001); /* unknown flags pass through */
	assert_string_equal(agent_proto_type_name(AGENT_PROTO_EXEC_START), "EXEC_START");
	assert_string_equal(agent_proto_type_name(0xff), "UNKNOWN");
}

static void header_truncated(void **state)
{
	struct agent_proto_header h;
	uint8_t b[16];

	(void)state;
	valid_header(b, AGENT_PROTO_PING, 0, 14);
	for (size_t n = 0; n < 16; n++)
		assert_int_equal(agent_proto_decode_header(b, n, &h), -ENODATA);
	assert_int_equal(agent_proto_decode_header(b, 16, &h), 0);
}

static void header_hostile(void **state)
{
	struct agent_proto_header h;
	uint8_t b[16];

	(void)state;
	valid_header(b, AGENT_PROTO_PING, 0, 14);
	b[0] = 0x56;
	b[1] = 0x53; /* byte-swapped magic */
	assert_int_equal(agent_proto_decode_header(b, 16, &h), -EBADMSG);

	for (unsigned v = 0; v < 256; v++) {
		valid_header(b, AGENT_PROTO_PING, 0, 14);
		b[2] = (uint8_t)v;
		assert_int_equal(agent_proto_decode_header(b, 16, &h), v == 1 ? 0 : -EPROTONOSUPPORT);
	}

	for (unsigned bit = 0; bit < 16; bit++) {
		valid_header(b, AGENT_PROTO_PING, 0, 14);
		put16(b + 14, (uint16_t)(1u << bit));
		assert_int_equal(agent_proto_decode_header(b, 16, &h), -EPROTO);
	}

	valid_header(b, AGENT_PROTO_STDOUT, 1, 0);
	put32(b + 8, AGENT_PROTO_MAX_PAYLOAD);
	assert_int_equal(agent_proto_decode_header(b, 16, &h), 0);
	put32(b + 8, AGENT_PROTO_MAX_PAYLOAD + 1);
	assert_int_equal(agent_proto_decode_header(b, 16, &h), -EMSGSIZE);
	put32(b + 8, UINT32_MAX);
	assert_int_equal(agent_proto_decode_header(b, 16, &h), -EMSGSIZE);

	for (unsigned t = 0; t < 256; t++) {
		valid_header(b, AGENT_PROTO_OK, 0, 0);
		b[3] = (uint8_t)t;
		if (strcmp(agent_proto_type_name((uint8_t)t), "UNKNOWN") == 0)
			assert_int_equal(agent_proto_decode_header(b, 16, &h), -ENOMSG);
	}
}

static void header_stream_rules(void **state)
{
	struct agent_proto_header h = { .type = AGENT_PROTO_HELLO, .stream = 7 };
	uint8_t b[16];

	(void)state;
	assert_int_equal(agent_proto_encode_header(&h, b), -EINVAL);
	h = (struct agent_proto_header){ .type = AGENT_PROTO_EXEC_START, .stream = 0 };
	assert_int_equal(agent_proto_encode_header(&h, b), -EINVAL);
	h = (struct agent_proto_header){ .type = 0x77, .stream = 1 };
	assert_int_equal(agent_proto_encode_header(&h, b), -EINVAL);
	h = (struct agent_proto_header){ .type = AGENT_PROTO_STDOUT, .stream = 1,
					 .length = AGENT_PROTO_MAX_PAYLOAD + 1 };
	assert_int_equal(agent_proto_encode_header(&h, b), -EINVAL);

	valid_header(b, AGENT_PROTO_PING, 0, 0);
	put32(b + 4, 3);
	assert_int_equal(agent_proto_decode_header(b, 16, &h), -EBADR);
	valid_header(b, AGENT_PROTO_FILE_STAT, 9, 0);
	put32(b + 4, 0);
	assert_int_equal(agent_proto_decode_header(b, 16, &h), -EBADR);
	/* OK and ERROR answer both connection-level and stream requests. */
	valid_header(b, AGENT_PROTO_OK, 0, 0);
	assert_int_equal(agent_proto_decode_header(b, 16, &h), 0);
	valid_header(b, AGENT_PROTO_ERROR, 42, 0);
	assert_int_equal(agent_proto_decode_header(b, 16, &h), 0);
}

static void roundtrip_connection(void **state)
{
	uint8_t b[256];
	size_t n;
	struct agent_proto_frame f;

	(void)state;
	{
		struct agent_proto_hello in = { 1, 3, "sandvm-host 0.1" }, out;

		assert_int_equal(agent_proto_encode_hello(b, sizeof(b), &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(f.hdr.type, AGENT_PROTO_HELLO);
		assert_int_equal(f.hdr.stream, 0);
		assert_int_equal(agent_proto_decode_hello(&f, &out), 0);
		assert_int_equal(out.min_version, 1);
		assert_int_equal(out.max_version, 3);
		assert_string_equal(out.name, "sandvm-host 0.1");
		in.name = "";
		assert_int_equal(agent_proto_encode_hello(b, sizeof(b), &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_hello(&f, &out), 0);
		assert_string_equal(out.name, "");
		in.min_version = 4;
		assert_int_equal(agent_proto_encode_hello(b, sizeof(b), &in, &n), -EINVAL);
	}
	for (int t = AGENT_PROTO_PING; t <= AGENT_PROTO_PONG; t++) {
		struct agent_proto_ping in = { 0x0123456789abcdefull }, out;

		assert_int_equal(agent_proto_encode_ping(b, sizeof(b), (uint8_t)t, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(f.hdr.type, t);
		assert_int_equal(agent_proto_decode_ping(&f, &out), 0);
		assert_true(out.token == in.token);
	}
	{
		struct agent_proto_shutdown in = { AGENT_PROTO_REBOOT }, out;

		assert_int_equal(agent_proto_encode_shutdown(b, sizeof(b), &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_shutdown(&f, &out), 0);
		assert_int_equal(out.action, AGENT_PROTO_REBOOT);
		in.action = 2;
		assert_int_equal(agent_proto_encode_shutdown(b, sizeof(b), &in, &n), -EINVAL);
	}
	{
		struct agent_proto_error in = { AGENT_PROTO_EISDIR, "is a directory: /etc" }, out;

		assert_int_equal(agent_proto_encode_error(b, sizeof(b), 5, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(f.hdr.stream, 5);
		assert_int_equal(agent_proto_decode_error(&f, &out), 0);
		assert_int_equal(out.code, AGENT_PROTO_EISDIR);
		assert_string_equal(out.message, in.message);
		in.message = NULL;
		assert_int_equal(agent_proto_encode_error(b, sizeof(b), 0, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_error(&f, &out), 0);
		assert_null(out.message);
	}
	assert_int_equal(agent_proto_encode_empty(b, sizeof(b), AGENT_PROTO_OK, 0, &n), 0);
	assert_int_equal(n, 16);
	f = parse(b, n);
	assert_int_equal(agent_proto_decode_empty(&f), 0);
	/* A shape helper refuses types of another shape. */
	assert_int_equal(agent_proto_encode_empty(b, sizeof(b), AGENT_PROTO_PING, 0, &n), -EINVAL);
}

static void roundtrip_exec(void **state)
{
	const char *argv[] = { "/bin/sh", "-c", "echo hi", NULL };
	const char *env[] = { "PATH=/bin", "EMPTY=", NULL };
	struct agent_proto_exec_start in = { .argv = argv, .argc = 3, .env = env, .envc = 2,
					     .workdir = "/tmp", .uid = 1000, .gid = 100,
					     .flags = AGENT_PROTO_EXEC_PTY, .timeout_ms = 5000,
					     .rows = 24, .cols = 80 },
				     out;
	static uint8_t b[4096];
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	assert_int_equal(agent_proto_encode_exec_start(b, sizeof(b), 9, &in, &n), 0);
	f = parse(b, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &out, ptrs, AGENT_PROTO_EXEC_PTRS), 0);
	assert_int_equal(out.argc, 3);
	for (int i = 0; i < 3; i++)
		assert_string_equal(out.argv[i], argv[i]);
	assert_null(out.argv[3]);
	assert_int_equal(out.envc, 2);
	assert_string_equal(out.env[0], "PATH=/bin");
	assert_string_equal(out.env[1], "EMPTY=");
	assert_null(out.env[2]);
	assert_string_equal(out.workdir, "/tmp");
	assert_int_equal(out.uid, 1000);
	assert_int_equal(out.gid, 100);
	assert_int_equal(out.flags, AGENT_PROTO_EXEC_PTY);
	assert_int_equal(out.timeout_ms, 5000);
	assert_int_equal(out.rows, 24);
	assert_int_equal(out.cols, 80);
	/* Strings are used in place: they point into the payload. */
	assert_true((const uint8_t *)out.argv[0] > f.payload &&
		    (const uint8_t *)out.argv[0] < f.payload + f.hdr.length);

	/* Minimal: argv[0] only, no env, no workdir, no pty. */
	in = (struct agent_proto_exec_start){ .argv = argv, .argc = 1 };
	assert_int_equal(agent_proto_encode_exec_start(b, sizeof(b), 9, &in, &n), 0);
	f = parse(b, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &out, ptrs, 3), 0);
	assert_int_equal(out.argc, 1);
	assert_int_equal(out.envc, 0);
	assert_null(out.env[0]);
	assert_null(out.workdir);
	assert_int_equal(agent_proto_decode_exec_start(&f, &out, ptrs, 2), -ENOSPC);

	{
		struct agent_proto_exec_started s = { 4242 }, so;

		assert_int_equal(agent_proto_encode_exec_started(b, sizeof(b), 9, &s, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_exec_started(&f, &so), 0);
		assert_int_equal(so.pid, 4242);
	}
	for (int t = 0; t < 3; t++) {
		static const uint8_t types[] = { AGENT_PROTO_STDIN, AGENT_PROTO_STDOUT, AGENT_PROTO_STDERR };
		struct agent_proto_data d = { (const uint8_t *)"a\0b\xff", 4 }, dout;

		assert_int_equal(agent_proto_encode_data(b, sizeof(b), types[t], 9, &d, &n), 0);
		f = parse(b, n);
		assert_int_equal(f.hdr.type, types[t]);
		assert_int_equal(agent_proto_decode_data(&f, &dout), 0);
		assert_int_equal(dout.len, 4);
		assert_memory_equal(dout.data, "a\0b\xff", 4);
		d = (struct agent_proto_data){ NULL, 0 };
		assert_int_equal(agent_proto_encode_data(b, sizeof(b), types[t], 9, &d, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_data(&f, &dout), 0);
		assert_int_equal(dout.len, 0);
	}
	assert_int_equal(agent_proto_encode_empty(b, sizeof(b), AGENT_PROTO_STDIN_CLOSE, 9, &n), 0);
	f = parse(b, n);
	assert_int_equal(agent_proto_decode_empty(&f), 0);
	{
		struct agent_proto_window w = { AGENT_PROTO_DIR_STDERR, 65536 }, wo;

		assert_int_equal(agent_proto_encode_window(b, sizeof(b), 9, &w, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_window(&f, &wo), 0);
		assert_int_equal(wo.direction, AGENT_PROTO_DIR_STDERR);
		assert_int_equal(wo.credit, 65536);
	}
	{
		struct agent_proto_signal s = { 15 }, so;

		assert_int_equal(agent_proto_encode_signal(b, sizeof(b), 9, &s, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_signal(&f, &so), 0);
		assert_int_equal(so.signo, 15);
	}
	{
		struct agent_proto_exit e = { AGENT_PROTO_EXIT_TIMED_OUT, 9 }, eo;

		assert_int_equal(agent_proto_encode_exit(b, sizeof(b), 9, &e, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_exit(&f, &eo), 0);
		assert_int_equal(eo.kind, AGENT_PROTO_EXIT_TIMED_OUT);
		assert_int_equal(eo.code, 9);
	}
}

static void roundtrip_files(void **state)
{
	static uint8_t b[4096];
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	{
		struct agent_proto_file_read in = { "/etc/hostname", 1ull << 40, 4096 }, out;

		assert_int_equal(agent_proto_encode_file_read(b, sizeof(b), 3, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_file_read(&f, &out), 0);
		assert_string_equal(out.path, "/etc/hostname");
		assert_true(out.offset == 1ull << 40);
		assert_int_equal(out.max_len, 4096);
	}
	{
		struct agent_proto_file_data in = { AGENT_PROTO_DATA_EOF | AGENT_PROTO_DATA_LAST,
						    (const uint8_t *)"xyz", 3 },
					     out;

		assert_int_equal(agent_proto_encode_file_data(b, sizeof(b), 3, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_file_data(&f, &out), 0);
		assert_int_equal(out.flags, AGENT_PROTO_DATA_EOF | AGENT_PROTO_DATA_LAST);
		assert_int_equal(out.len, 3);
		assert_memory_equal(out.data, "xyz", 3);
	}
	{
		struct agent_proto_file_write in = { "/tmp/f", 0644,
						     AGENT_PROTO_WRITE_CREATE | AGENT_PROTO_WRITE_TRUNCATE |
							     AGENT_PROTO_WRITE_FINAL,
						     (const uint8_t *)"data", 4 },
					      out;

		assert_int_equal(agent_proto_encode_file_write(b, sizeof(b), 3, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_file_write(&f, &out), 0);
		assert_string_equal(out.path, "/tmp/f");
		assert_int_equal(out.mode, 0644);
		assert_int_equal(out.flags, in.flags);
		assert_memory_equal(out.data, "data", 4);
	}
	for (int t = 0; t < 2; t++) {
		uint8_t type = t ? AGENT_PROTO_FILE_LIST : AGENT_PROTO_FILE_STAT;
		struct agent_proto_path in = { "/var/log" }, out;

		assert_int_equal(agent_proto_encode_path(b, sizeof(b), type, 3, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(f.hdr.type, type);
		assert_int_equal(agent_proto_decode_path(&f, &out), 0);
		assert_string_equal(out.path, "/var/log");
	}
	{
		struct agent_proto_stat_result in = { AGENT_PROTO_FT_DIRECTORY, 01755, 1ull << 33, -5, 0,
						      UINT32_MAX },
					       out;

		assert_int_equal(agent_proto_encode_stat_result(b, sizeof(b), 3, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_stat_result(&f, &out), 0);
		assert_int_equal(out.type, AGENT_PROTO_FT_DIRECTORY);
		assert_int_equal(out.mode, 01755);
		assert_true(out.size == 1ull << 33);
		assert_true(out.mtime == -5);
		assert_int_equal(out.uid, 0);
		assert_int_equal(out.gid, UINT32_MAX);
	}
	{
		struct agent_proto_list_entry in = { "notes.txt", AGENT_PROTO_FT_REGULAR, 77 }, out;

		assert_int_equal(agent_proto_encode_list_entry(b, sizeof(b), 3, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_list_entry(&f, &out), 0);
		assert_string_equal(out.name, "notes.txt");
		assert_int_equal(out.type, AGENT_PROTO_FT_REGULAR);
		assert_true(out.size == 77);
		in.name = "..";
		assert_int_equal(agent_proto_encode_list_entry(b, sizeof(b), 3, &in, &n), -EINVAL);
	}
	assert_int_equal(agent_proto_encode_empty(b, sizeof(b), AGENT_PROTO_LIST_END, 3, &n), 0);
	f = parse(b, n);
	assert_int_equal(agent_proto_decode_empty(&f), 0);
	{
		struct agent_proto_mkdir in = { "/a/b/c", 0700, AGENT_PROTO_MKDIR_PARENTS }, out;

		assert_int_equal(agent_proto_encode_mkdir(b, sizeof(b), 3, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_mkdir(&f, &out), 0);
		assert_string_equal(out.path, "/a/b/c");
		assert_int_equal(out.mode, 0700);
		assert_int_equal(out.flags, AGENT_PROTO_MKDIR_PARENTS);
	}
	{
		struct agent_proto_remove in = { "/a", AGENT_PROTO_REMOVE_RECURSIVE }, out;

		assert_int_equal(agent_proto_encode_remove(b, sizeof(b), 3, &in, &n), 0);
		f = parse(b, n);
		assert_int_equal(agent_proto_decode_remove(&f, &out), 0);
		assert_string_equal(out.path, "/a");
		assert_int_equal(out.flags, AGENT_PROTO_REMOVE_RECURSIVE);
		in.path = "";
		assert_int_equal(agent_proto_encode_remove(b, sizeof(b), 3, &in, &n), -EINVAL);
		in.path = NULL;
		assert_int_equal(agent_proto_encode_remove(b, sizeof(b), 3, &in, &n), -EINVAL);
	}
}

static void encode_bounds(void **state)
{
	const char *argv[] = { "/bin/true", NULL };
	struct agent_proto_exec_start in = { .argv = argv, .argc = 1, .workdir = "/" };
	struct agent_proto_data d = { rbuf, AGENT_PROTO_MAX_PAYLOAD };
	uint8_t b[256];
	size_t n, need;

	(void)state;
	assert_int_equal(agent_proto_encode_exec_start(b, sizeof(b), 1, &in, &need), 0);
	for (size_t cap = 0; cap < need; cap++)
		assert_int_equal(agent_proto_encode_exec_start(b, cap, 1, &in, &n), -ENOSPC);
	assert_int_equal(agent_proto_encode_exec_start(b, need, 1, &in, &n), 0);
	assert_int_equal(n, need);

	/* Data that fills the payload limit once its TLV header is added. */
	assert_int_equal(agent_proto_encode_data(big, sizeof(big), AGENT_PROTO_STDOUT, 1, &d, &n),
			 -EMSGSIZE);
	d.len = AGENT_PROTO_MAX_PAYLOAD - AGENT_PROTO_TLV_HEADER_SIZE;
	assert_int_equal(agent_proto_encode_data(big, sizeof(big), AGENT_PROTO_STDOUT, 1, &d, &n), 0);
	assert_int_equal(n, AGENT_PROTO_MAX_FRAME);
	d.data = NULL;
	assert_int_equal(agent_proto_encode_data(b, sizeof(b), AGENT_PROTO_STDOUT, 1, &d, &n), -EINVAL);
	/* A stream type on stream 0 is refused by the encoder too. */
	d = (struct agent_proto_data){ NULL, 0 };
	assert_int_equal(agent_proto_encode_data(b, sizeof(b), AGENT_PROTO_STDOUT, 0, &d, &n), -EINVAL);
}

static void tlv_past_end(void **state)
{
	uint8_t p[64];
	struct agent_proto_ping m;
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	n = tlv(p, 1, 8, "\1\2\3\4\5\6\7\x8", 8);
	f = raw(AGENT_PROTO_PING, p, n);
	assert_int_equal(agent_proto_decode_ping(&f, &m), 0);
	/* Every shorter payload either cuts the TLV header or its value. */
	for (size_t cut = 1; cut < n; cut++) {
		f = raw(AGENT_PROTO_PING, p, cut);
		assert_int_equal(agent_proto_decode_ping(&f, &m), -EBADMSG);
	}
	f = raw(AGENT_PROTO_PING, p, 0);
	assert_int_equal(agent_proto_decode_ping(&f, &m), -ENOENT);
	put32(p + 2, 9);
	f = raw(AGENT_PROTO_PING, p, n);
	assert_int_equal(agent_proto_decode_ping(&f, &m), -EBADMSG);
	/* Trailing garbage shorter than a TLV header. */
	n = tlv(p, 1, 8, "\1\2\3\4\5\6\7\x8", 8);
	p[n] = 0;
	f = raw(AGENT_PROTO_PING, p, n + 1);
	assert_int_equal(agent_proto_decode_ping(&f, &m), -EBADMSG);
	/* An unknown tag with a bad length is still a framing error. */
	n = tlv(p, 99, 100, NULL, 0);
	f = raw(AGENT_PROTO_STDIN_CLOSE, p, n);
	assert_int_equal(agent_proto_decode_empty(&f), -EBADMSG);
}

static void tlv_huge_length(void **state)
{
	static const uint32_t lens[] = { UINT32_MAX, UINT32_MAX - 1, UINT32_MAX - 5, UINT32_MAX - 6,
					 0x80000000u, AGENT_PROTO_MAX_PAYLOAD };
	uint8_t p[64];
	struct agent_proto_file_write w;
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		n = tlv_str(p, 1, "/x");
		n += tlv(p + n, 4, lens[i], "abcd", 4);
		f = raw(AGENT_PROTO_FILE_WRITE, p, n);
		assert_int_equal(agent_proto_decode_file_write(&f, &w), -EBADMSG);
		n = tlv(p, 1, lens[i], "/x", 3);
		f = raw(AGENT_PROTO_FILE_WRITE, p, n);
		assert_int_equal(agent_proto_decode_file_write(&f, &w), -EBADMSG);
	}
}

static void bad_strings(void **state)
{
	static uint8_t p[AGENT_PROTO_MAX_STRING + 64];
	struct agent_proto_path m;
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	n = tlv(p, 1, 5, "/a\0b", 5); /* NUL inside */
	f = raw(AGENT_PROTO_FILE_STAT, p, n);
	assert_int_equal(agent_proto_decode_path(&f, &m), -EINVAL);
	n = tlv(p, 1, 3, "/ab", 3); /* no terminator */
	f = raw(AGENT_PROTO_FILE_STAT, p, n);
	assert_int_equal(agent_proto_decode_path(&f, &m), -EINVAL);
	n = tlv(p, 1, 0, NULL, 0); /* not even a terminator */
	f = raw(AGENT_PROTO_FILE_STAT, p, n);
	assert_int_equal(agent_proto_decode_path(&f, &m), -EINVAL);
	n = tlv(p, 1, 1, "", 1); /* empty path */
	f = raw(AGENT_PROTO_FILE_STAT, p, n);
	assert_int_equal(agent_proto_decode_path(&f, &m), -EINVAL);

	/* Longest string exactly, then one byte more. */
	memset(p + 6, 'a', AGENT_PROTO_MAX_STRING);
	p[6 + AGENT_PROTO_MAX_STRING] = 0;
	tlv(p, 1, AGENT_PROTO_MAX_STRING + 1, NULL, 0);
	f = raw(AGENT_PROTO_FILE_STAT, p, 6 + AGENT_PROTO_MAX_STRING + 1);
	assert_int_equal(agent_proto_decode_path(&f, &m), 0);
	assert_int_equal(strlen(m.path), AGENT_PROTO_MAX_STRING);
	p[6 + AGENT_PROTO_MAX_STRING] = 'a';
	p[6 + AGENT_PROTO_MAX_STRING + 1] = 0;
	tlv(p, 1, AGENT_PROTO_MAX_STRING + 2, NULL, 0);
	f = raw(AGENT_PROTO_FILE_STAT, p, 6 + AGENT_PROTO_MAX_STRING + 2);
	assert_int_equal(agent_proto_decode_path(&f, &m), -EINVAL);
	{
		struct agent_proto_path in = { (const char *)p + 6 };
		size_t len;

		assert_int_equal(agent_proto_encode_path(big, sizeof(big), AGENT_PROTO_FILE_STAT, 1, &in,
							 &len),
				 -EINVAL);
	}
}

static void duplicate_tag(void **state)
{
	uint8_t p[128];
	struct agent_proto_window w;
	struct agent_proto_error e;
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	n = tlv_u32(p, 1, 0);
	n += tlv_u32(p + n, 2, 10);
	n += tlv_u32(p + n, 2, 20);
	f = raw(AGENT_PROTO_WINDOW, p, n);
	assert_int_equal(agent_proto_decode_window(&f, &w), -ENOTUNIQ);
	n = tlv_u32(p, 1, 2);
	n += tlv_str(p + n, 2, "first");
	n += tlv_str(p + n, 2, "second");
	f = raw(AGENT_PROTO_ERROR, p, n);
	assert_int_equal(agent_proto_decode_error(&f, &e), -ENOTUNIQ);
}

static void missing_tag(void **state)
{
	uint8_t p[128];
	struct agent_proto_exec_start x;
	struct agent_proto_hello h;
	struct agent_proto_file_read r;
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	n = tlv_u32(p, 1, 1);
	n += tlv_u32(p + n, 2, 1);
	f = raw(AGENT_PROTO_HELLO, p, n);
	assert_int_equal(agent_proto_decode_hello(&f, &h), -ENOENT);
	n += tlv_str(p + n, 3, "agent");
	f = raw(AGENT_PROTO_HELLO, p, n);
	assert_int_equal(agent_proto_decode_hello(&f, &h), 0);

	/* EXEC_START without uid. */
	n = tlv_str(p, 1, "/bin/true");
	n += tlv_u32(p + n, 5, 0);
	f = raw(AGENT_PROTO_EXEC_START, p, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), -ENOENT);
	n += tlv_u32(p + n, 4, 0);
	f = raw(AGENT_PROTO_EXEC_START, p, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), 0);

	n = tlv_str(p, 1, "/f");
	n += tlv_u32(p + n, 3, 10);
	f = raw(AGENT_PROTO_FILE_READ, p, n);
	assert_int_equal(agent_proto_decode_file_read(&f, &r), -ENOENT);
}

static void exec_empty_argv(void **state)
{
	const char *env[] = { "A=b", NULL };
	struct agent_proto_exec_start in = { .argv = env, .argc = 0, .env = env, .envc = 1 }, x;
	uint8_t p[128];
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	assert_int_equal(agent_proto_encode_exec_start(p, sizeof(p), 1, &in, &n), -EINVAL);
	n = tlv_str(p, 2, "A=b");
	n += tlv_u32(p + n, 4, 0);
	n += tlv_u32(p + n, 5, 0);
	f = raw(AGENT_PROTO_EXEC_START, p, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), -ENOENT);
	/* An empty argv[0] string is allowed: execve decides. NULs are not. */
	n = tlv(p, 1, 3, "a\0b", 3);
	n += tlv_u32(p + n, 4, 0);
	n += tlv_u32(p + n, 5, 0);
	f = raw(AGENT_PROTO_EXEC_START, p, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), -EINVAL);
}

/* Builds an EXEC_START payload with `count` arguments of `len` bytes each. */
static size_t exec_payload(uint8_t *p, unsigned count, size_t len)
{
	char s[512];
	size_t n = 0;

	memset(s, 'x', len);
	s[len] = 0;
	for (unsigned i = 0; i < count; i++)
		n += tlv_str(p + n, (uint16_t)(i % 3 ? 1 : 2), i % 3 ? s : "K=v");
	n += tlv_u32(p + n, 4, 0);
	n += tlv_u32(p + n, 5, 0);
	return n;
}

static void exec_caps(void **state)
{
	struct agent_proto_exec_start x;
	struct agent_proto_frame f;
	static const char *many[AGENT_PROTO_MAX_ARGS + 2];
	size_t n;

	(void)state;
	/* 4096 entries of 4 bytes + NUL: 20 KiB, within both caps. */
	n = exec_payload(rbuf, AGENT_PROTO_MAX_ARGS - 1, 3);
	n += tlv_str(rbuf + n, 1, "abc");
	f = raw(AGENT_PROTO_EXEC_START, rbuf, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), 0);
	assert_int_equal(x.argc + x.envc, AGENT_PROTO_MAX_ARGS);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_MAX_ARGS + 1), -ENOSPC);
	n += tlv_str(rbuf + n, 1, "abc");
	f = raw(AGENT_PROTO_EXEC_START, rbuf, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), -E2BIG);

	/* 200 arguments of 400 bytes: 80 KiB, over the byte cap. */
	n = exec_payload(rbuf, 300, 400);
	f = raw(AGENT_PROTO_EXEC_START, rbuf, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), -E2BIG);

	/* The encoder enforces the same caps. */
	for (unsigned i = 0; i < AGENT_PROTO_MAX_ARGS + 1; i++)
		many[i] = "a";
	x = (struct agent_proto_exec_start){ .argv = many, .argc = AGENT_PROTO_MAX_ARGS + 1 };
	assert_int_equal(agent_proto_encode_exec_start(big, sizeof(big), 1, &x, &n), -EINVAL);
	x.argc = AGENT_PROTO_MAX_ARGS;
	assert_int_equal(agent_proto_encode_exec_start(big, sizeof(big), 1, &x, &n), 0);
	memset(rbuf, 'y', 70000);
	rbuf[70000] = 0;
	many[0] = (const char *)rbuf;
	x.argc = 1;
	assert_int_equal(agent_proto_encode_exec_start(big, sizeof(big), 1, &x, &n), -E2BIG);
}

static void exec_semantics(void **state)
{
	const char *argv[] = { "sh", NULL };
	const char *bad_env[][2] = { { "NOEQUALS", NULL }, { "=value", NULL } };
	struct agent_proto_exec_start in = { .argv = argv, .argc = 1 }, x;
	uint8_t p[256];
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	for (int i = 0; i < 2; i++) {
		in.env = bad_env[i];
		in.envc = 1;
		assert_int_equal(agent_proto_encode_exec_start(p, sizeof(p), 1, &in, &n), -EINVAL);
		n = tlv_str(p, 1, "sh");
		n += tlv_str(p + n, 2, bad_env[i][0]);
		n += tlv_u32(p + n, 4, 0);
		n += tlv_u32(p + n, 5, 0);
		f = raw(AGENT_PROTO_EXEC_START, p, n);
		assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS),
				 -EINVAL);
	}
	/* A pty needs a terminal size. */
	in = (struct agent_proto_exec_start){ .argv = argv, .argc = 1, .flags = AGENT_PROTO_EXEC_PTY };
	assert_int_equal(agent_proto_encode_exec_start(p, sizeof(p), 1, &in, &n), -EINVAL);
	n = tlv_str(p, 1, "sh");
	n += tlv_u32(p + n, 4, 0);
	n += tlv_u32(p + n, 5, 0);
	n += tlv_u32(p + n, 6, AGENT_PROTO_EXEC_PTY);
	f = raw(AGENT_PROTO_EXEC_START, p, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), -EINVAL);
	n += tlv_u32(p + n, 8, 50);
	n += tlv_u32(p + n, 9, 132);
	f = raw(AGENT_PROTO_EXEC_START, p, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), 0);
	n += tlv_u32(p + n, 6, 0);
	f = raw(AGENT_PROTO_EXEC_START, p, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), -ENOTUNIQ);
	/* Unknown flag bits. */
	n = tlv_str(p, 1, "sh");
	n += tlv_u32(p + n, 4, 0);
	n += tlv_u32(p + n, 5, 0);
	n += tlv_u32(p + n, 6, 0x2);
	f = raw(AGENT_PROTO_EXEC_START, p, n);
	assert_int_equal(agent_proto_decode_exec_start(&f, &x, ptrs, AGENT_PROTO_EXEC_PTRS), -EINVAL);
}

static void value_checks(void **state)
{
	uint8_t p[128];
	struct agent_proto_frame f;
	struct agent_proto_signal s;
	struct agent_proto_exit e;
	struct agent_proto_mkdir mk;
	struct agent_proto_list_entry le;
	struct agent_proto_ping pg;
	size_t n;

	(void)state;
	n = tlv(p, 1, 3, "\x0f\0\0", 3); /* u32 of the wrong size */
	f = raw(AGENT_PROTO_SIGNAL, p, n);
	assert_int_equal(agent_proto_decode_signal(&f, &s), -EINVAL);
	n = tlv(p, 1, 4, "\1\0\0\0", 4); /* u64 of the wrong size */
	f = raw(AGENT_PROTO_PONG, p, n);
	assert_int_equal(agent_proto_decode_ping(&f, &pg), -EINVAL);
	for (uint32_t v = 0; v < 70; v++) {
		n = tlv_u32(p, 1, v);
		f = raw(AGENT_PROTO_SIGNAL, p, n);
		assert_int_equal(agent_proto_decode_signal(&f, &s), v >= 1 && v <= 64 ? 0 : -EINVAL);
	}
	n = tlv_u32(p, 1, 3);
	n += tlv_u32(p + n, 2, 0);
	f = raw(AGENT_PROTO_EXIT, p, n);
	assert_int_equal(agent_proto_decode_exit(&f, &e), -EINVAL);
	n = tlv_str(p, 1, "/d");
	n += tlv_u32(p + n, 2, 010000);
	n += tlv_u32(p + n, 3, 0);
	f = raw(AGENT_PROTO_MKDIR, p, n);
	assert_int_equal(agent_proto_decode_mkdir(&f, &mk), -EINVAL);
	static const char *names[] = { "a/b", ".", "..", "/" };
	for (size_t i = 0; i < 4; i++) {
		n = tlv_str(p, 1, names[i]);
		n += tlv_u32(p + n, 2, 1);
		n += tlv(p + n, 3, 8, "\0\0\0\0\0\0\0\0", 8);
		f = raw(AGENT_PROTO_LIST_ENTRY, p, n);
		assert_int_equal(agent_proto_decode_list_entry(&f, &le), -EINVAL);
	}
	/* A decoder refuses a frame of another type. */
	f = raw(AGENT_PROTO_EXIT, p, 0);
	assert_int_equal(agent_proto_decode_signal(&f, &s), -ENOMSG);
	assert_int_equal(agent_proto_decode_empty(&f), -ENOMSG);
	assert_int_equal(agent_proto_decode_exec_start(&f, NULL, ptrs, 0), -ENOMSG);
}

static void unknown_tags_skipped(void **state)
{
	uint8_t p[128];
	struct agent_proto_frame f;
	struct agent_proto_signal s;
	size_t n;

	(void)state;
	n = tlv(p, 0, 0, NULL, 0);
	n += tlv(p + n, 77, 5, "\0\0\0\0\0", 5);
	n += tlv_u32(p + n, 1, 9);
	n += tlv(p + n, 0xffff, 2, "zz", 2);
	f = raw(AGENT_PROTO_SIGNAL, p, n);
	assert_int_equal(agent_proto_decode_signal(&f, &s), 0);
	assert_int_equal(s.signo, 9);
	f = raw(AGENT_PROTO_OK, p, n);
	assert_int_equal(agent_proto_decode_empty(&f), 0);
}

/* A stream of frames of assorted types and sizes, concatenated. */
static size_t build_stream(uint8_t *out, size_t cap, size_t *ends, size_t *nframes)
{
	const char *argv[] = { "/bin/ls", "-l", NULL };
	struct agent_proto_exec_start x = { .argv = argv, .argc = 2, .uid = 1 };
	struct agent_proto_ping pg = { 7 };
	struct agent_proto_data d = { rbuf, 0 };
	size_t pos = 0, n;

	*nframes = 0;
	for (uint32_t i = 0; i < 40; i++) {
		switch (i % 4) {
		case 0:
			assert_int_equal(agent_proto_encode_exec_start(out + pos, cap - pos, i + 1, &x, &n), 0);
			break;
		case 1:
			d.len = (i * 977) % 5000;
			assert_int_equal(agent_proto_encode_data(out + pos, cap - pos, AGENT_PROTO_STDOUT,
								 i + 1, &d, &n),
					 0);
			break;
		case 2:
			assert_int_equal(agent_proto_encode_empty(out + pos, cap - pos, AGENT_PROTO_OK, 0, &n),
					 0);
			break;
		default:
			pg.token = i;
			assert_int_equal(agent_proto_encode_ping(out + pos, cap - pos, AGENT_PROTO_PING, &pg,
								 &n),
					 0);
			break;
		}
		pos += n;
		ends[(*nframes)++] = pos;
	}
	return pos;
}

/* Feeds the stream in chunks from next_chunk and checks every frame against the source. */
static void feed_and_check(const uint8_t *s, size_t len, const size_t *ends, size_t nframes,
			   uint64_t seed, bool bytewise)
{
	struct agent_proto_reader r;
	struct agent_proto_frame f;
	size_t pos = 0, got = 0, start = 0;

	agent_proto_reader_init(&r, big, AGENT_PROTO_MAX_PAYLOAD);
	while (pos < len) {
		size_t chunk = bytewise ? 1 : 1 + unit_rand(&seed) % 9000;
		size_t off = 0, used;

		if (chunk > len - pos)
			chunk = len - pos;
		while (off < chunk) {
			int rc = agent_proto_reader_feed(&r, s + pos + off, chunk - off, &used, &f);

			assert_true(rc >= 0);
			off += used;
			if (rc == 1) {
				assert_true(got < nframes);
				assert_int_equal(AGENT_PROTO_HEADER_SIZE + f.hdr.length, ends[got] - start);
				assert_memory_equal(f.payload, s + start + AGENT_PROTO_HEADER_SIZE,
						    f.hdr.length);
				start = ends[got++];
				/* Nothing past this frame was taken. */
				assert_int_equal(pos + off, start);
			} else {
				assert_int_equal(off, chunk);
			}
		}
		pos += chunk;
	}
	assert_int_equal(got, nframes);
}

static void reader_bytewise_and_chunks(void **state)
{
	static uint8_t s[256 * 1024];
	size_t ends[64], nframes, len;

	(void)state;
	for (size_t i = 0; i < sizeof(rbuf); i++)
		rbuf[i] = (uint8_t)(i * 31 + 7);
	len = build_stream(s, sizeof(s), ends, &nframes);
	feed_and_check(s, len, ends, nframes, 0, true);
	for (uint64_t seed = 1; seed < 50; seed++)
		feed_and_check(s, len, ends, nframes, seed, false);
}

static void reader_rejects(void **state)
{
	struct agent_proto_reader r;
	struct agent_proto_frame f;
	uint8_t h[16], small[32];
	size_t used;

	(void)state;
	valid_header(h, AGENT_PROTO_STDOUT, 1, 0);
	put32(h + 8, AGENT_PROTO_MAX_PAYLOAD + 1);
	agent_proto_reader_init(&r, big, sizeof(big));
	assert_int_equal(agent_proto_reader_feed(&r, h, 15, &used, &f), 0);
	assert_int_equal(used, 15);
	assert_int_equal(agent_proto_reader_feed(&r, h + 15, 1, &used, &f), -EMSGSIZE);
	/* Sticky: a byte stream cannot find the next frame after a bad one. */
	valid_header(h, AGENT_PROTO_OK, 0, 0);
	assert_int_equal(agent_proto_reader_feed(&r, h, 16, &used, &f), -EMSGSIZE);
	assert_int_equal(used, 0);

	/* A caller buffer smaller than the maximum sets the limit. */
	agent_proto_reader_init(&r, small, sizeof(small));
	valid_header(h, AGENT_PROTO_STDOUT, 1, 33);
	assert_int_equal(agent_proto_reader_feed(&r, h, 16, &used, &f), -EMSGSIZE);
	agent_proto_reader_init(&r, small, sizeof(small));
	valid_header(h, AGENT_PROTO_STDOUT, 1, 32);
	assert_int_equal(agent_proto_reader_feed(&r, h, 16, &used, &f), 0);
	assert_int_equal(agent_proto_reader_feed(&r, big, 31, &used, &f), 0);
	assert_int_equal(agent_proto_reader_feed(&r, big, 100, &used, &f), 1);
	assert_int_equal(used, 1);

	/* Header errors surface through the reader unchanged. */
	agent_proto_reader_init(&r, big, sizeof(big));
	valid_header(h, AGENT_PROTO_OK, 0, 0);
	h[2] = 2;
	assert_int_equal(agent_proto_reader_feed(&r, h, 16, &used, &f), -EPROTONOSUPPORT);
}

static void reader_truncated_payload(void **state)
{
	struct agent_proto_reader r;
	struct agent_proto_frame f;
	struct agent_proto_path in = { "/some/path" };
	uint8_t b[64];
	size_t n, used;

	(void)state;
	assert_int_equal(agent_proto_encode_path(b, sizeof(b), AGENT_PROTO_FILE_STAT, 2, &in, &n), 0);
	/* Every strict prefix leaves the reader waiting, never yielding. */
	for (size_t cut = 0; cut < n; cut++) {
		agent_proto_reader_init(&r, big, sizeof(big));
		assert_int_equal(agent_proto_reader_feed(&r, b, cut, &used, &f), 0);
		assert_int_equal(used, cut);
	}
	/* A header whose length stops inside the TLV yields a frame the decoder refuses. */
	put32(b + 8, (uint32_t)(n - AGENT_PROTO_HEADER_SIZE - 1));
	agent_proto_reader_init(&r, big, sizeof(big));
	assert_int_equal(agent_proto_reader_feed(&r, b, n, &used, &f), 1);
	assert_int_equal(agent_proto_decode_path(&f, &in), -EBADMSG);
}

/* Random mutations of valid frames: decoders must stay in bounds (ASan) and self-consistent. */
static void mutations(void **state)
{
	const char *argv[] = { "/bin/sh", "-c", "x", NULL };
	const char *env[] = { "A=1", NULL };
	struct agent_proto_exec_start x = { .argv = argv, .argc = 3, .env = env, .envc = 1,
					    .workdir = "/w" };
	uint8_t orig[512], *b;
	uint64_t seed = 99;
	size_t n;

	(void)state;
	assert_int_equal(agent_proto_encode_exec_start(orig, sizeof(orig), 1, &x, &n), 0);
	for (int iter = 0; iter < 20000; iter++) {
		struct agent_proto_frame f;
		struct agent_proto_exec_start out;
		int flips = 1 + unit_rand(&seed) % 4;
		size_t len = n - unit_rand(&seed) % 4;

		/* Exactly sized heap copy so any overread is caught. */
		b = malloc(len);
		assert_non_null(b);
		memcpy(b, orig, len);
		for (int i = 0; i < flips; i++)
			b[AGENT_PROTO_HEADER_SIZE + unit_rand(&seed) % (len - AGENT_PROTO_HEADER_SIZE)] ^=
				(uint8_t)(1u << (unit_rand(&seed) % 8));
		f = raw(AGENT_PROTO_EXEC_START, b + AGENT_PROTO_HEADER_SIZE, len - AGENT_PROTO_HEADER_SIZE);
		if (agent_proto_decode_exec_start(&f, &out, ptrs, AGENT_PROTO_EXEC_PTRS) == 0) {
			assert_true(out.argc >= 1);
			assert_null(out.argv[out.argc]);
			assert_null(out.env[out.envc]);
			for (uint32_t i = 0; i < out.argc; i++)
				assert_true((const uint8_t *)out.argv[i] + strlen(out.argv[i]) <
					    f.payload + f.hdr.length);
			for (uint32_t i = 0; i < out.envc; i++)
				assert_non_null(strchr(out.env[i], '='));
		}
		free(b);
	}
}

/* ---- RESTORED ---- */

static const uint8_t entropy64[AGENT_PROTO_RESTORED_ENTROPY] = { 1, 2, 3, 4, 5, 6, 7, 8 };

static struct agent_proto_restored restored_full(void)
{
	return (struct agent_proto_restored){
		.entropy = entropy64,
		.entropy_len = AGENT_PROTO_RESTORED_ENTROPY,
		.realtime_ns = 1700000000123456789ull,
		.hostname = "sbx-1.example",
		.machine_id = "0123456789abcdef0123456789abcdef",
		.net = "10.0.0.2/30,10.0.0.1",
		.net6 = "fd00::2/126,fd00::1",
		.mac = "02:aa:BB:cc:dd:0e",
		.dns = "10.0.0.1",
	};
}

static void restored_roundtrip(void **state)
{
	struct agent_proto_restored m = restored_full(), d;
	uint8_t buf[1024];
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	assert_int_equal(agent_proto_encode_restored(buf, sizeof(buf), 7, &m, &n), 0);
	f = parse(buf, n);
	assert_int_equal(f.hdr.type, AGENT_PROTO_RESTORED);
	assert_int_equal(f.hdr.stream, 7);
	assert_string_equal(agent_proto_type_name(AGENT_PROTO_RESTORED), "RESTORED");
	assert_int_equal(agent_proto_decode_restored(&f, &d), 0);
	assert_int_equal(d.entropy_len, AGENT_PROTO_RESTORED_ENTROPY);
	assert_memory_equal(d.entropy, entropy64, AGENT_PROTO_RESTORED_ENTROPY);
	assert_true(d.realtime_ns == m.realtime_ns);
	assert_string_equal(d.hostname, m.hostname);
	assert_string_equal(d.machine_id, m.machine_id);
	assert_string_equal(d.net, m.net);
	assert_string_equal(d.net6, m.net6);
	assert_string_equal(d.mac, m.mac);
	assert_string_equal(d.dns, m.dns);

	/* Only entropy and time are required; the rest decodes as NULL. */
	m = (struct agent_proto_restored){ .entropy = entropy64, .entropy_len = 64, .realtime_ns = 1 };
	assert_int_equal(agent_proto_encode_restored(buf, sizeof(buf), 1, &m, &n), 0);
	f = parse(buf, n);
	assert_int_equal(agent_proto_decode_restored(&f, &d), 0);
	assert_null(d.hostname);
	assert_null(d.machine_id);
	assert_null(d.net);
	assert_null(d.net6);
	assert_null(d.mac);
	assert_null(d.dns);

	/* A request stream: stream 0 is refused both ways. */
	assert_int_equal(agent_proto_encode_restored(buf, sizeof(buf), 0, &m, &n), -EINVAL);
	valid_header(buf, AGENT_PROTO_STDOUT, 1, 0);
	buf[3] = AGENT_PROTO_RESTORED;
	memset(buf + 4, 0, 4);
	{
		struct agent_proto_header h;

		assert_int_equal(agent_proto_decode_header(buf, 16, &h), -EBADR);
	}
	/* The wrong decoder for the type. */
	f.hdr.type = AGENT_PROTO_MKDIR;
	assert_int_equal(agent_proto_decode_restored(&f, &d), -ENOMSG);
	/* Too small a buffer. */
	m = restored_full();
	assert_int_equal(agent_proto_encode_restored(buf, 40, 1, &m, &n), -ENOSPC);
}

/* Every field's bad values: the encoder refuses them (-EINVAL) and so does the decoder. */
static void restored_refusals(void **state)
{
	static const struct {
		int field;
		const char *v;
	} bad[] = {
		{ 0, "-leading" }, { 0, "trailing-" }, { 0, "a..b" }, { 0, ".a" }, { 0, "a." }, { 0, "a_b" },
		{ 0, "a b" }, { 0, "héllo" }, { 0, "x-.y" },
		{ 0, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }, /* a 64-byte label */
		{ 0, "a.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.bb" }, /* 65 bytes */
		{ 1, "0123456789ABCDEF0123456789abcdef" }, { 1, "0123456789abcdef0123456789abcde" },
		{ 1, "0123456789abcdef0123456789abcdef0" }, { 1, "00000000000000000000000000000000" },
		{ 1, "0123456789abcdef0123456789abcdeg" },
		{ 2, "10.0.0.2/30" }, { 2, "10.0.0.2,10.0.0.1" }, { 2, "10.0.0.2/33,10.0.0.1" },
		{ 2, "10.0.0.2/030,10.0.0.1" }, { 2, "10.0.0.2/+3,10.0.0.1" }, { 2, "10.0.0.2/,10.0.0.1" },
		{ 2, "10.0.0.2/1000,10.0.0.1" }, { 2, "fd00::2/64,fd00::1" }, { 2, "10.0.0.2/30,10.0.0.1 " },
		{ 2, "10.0.0.2/30,10.0.0.1,x" }, { 2, "10.0.0.256/30,10.0.0.1" }, { 2, "/30,10.0.0.1" },
		{ 3, "fd00::2/129,fd00::1" }, { 3, "10.0.0.2/30,10.0.0.1" }, { 3, "fd00::2/64," },
		{ 4, "01:aa:bb:cc:dd:ee" }, { 4, "00:00:00:00:00:00" }, { 4, "02:aa:bb:cc:dd" },
		{ 4, "02-aa-bb-cc-dd-ee" }, { 4, "02:aa:bb:cc:dd:eg" }, { 4, "02:aa:bb:cc:dd:ee:" },
		{ 4, "2:aa:bb:cc:dd:ee:f" },
		{ 5, "10.0.0" }, { 5, "ns.example" }, { 5, "10.0.0.1 " }, { 5, "fd00::1/64" },
		{ 0, "" }, { 1, "" }, { 2, "" }, { 3, "" }, { 4, "" }, { 5, "" },
	};
	uint8_t buf[1024], payload[1024];
	struct agent_proto_restored d;
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct agent_proto_restored m = restored_full();
		const char **slot[] = { &m.hostname, &m.machine_id, &m.net, &m.net6, &m.mac, &m.dns };
		struct agent_proto_frame f;
		size_t len = 0;

		*slot[bad[i].field] = bad[i].v;
		if (agent_proto_encode_restored(buf, sizeof(buf), 1, &m, &n) != -EINVAL)
			fail_msg("encoder took field %d = \"%s\"", bad[i].field, bad[i].v);
		/* The same value on the wire, past the encoder. */
		len += tlv(payload + len, 1, 64, entropy64, 64);
		{
			uint8_t t[8] = { 1 };

			len += tlv(payload + len, 2, 8, t, 8);
		}
		len += tlv_str(payload + len, (uint16_t)(3 + bad[i].field), bad[i].v);
		f = raw(AGENT_PROTO_RESTORED, payload, len);
		if (agent_proto_decode_restored(&f, &d) != -EINVAL)
			fail_msg("decoder took field %d = \"%s\"", bad[i].field, bad[i].v);
	}
}

static void restored_hostile(void **state)
{
	struct agent_proto_restored m = restored_full(), d;
	uint8_t payload[256], t8[8] = { 0 };
	struct agent_proto_frame f;
	size_t len;
	uint8_t buf[1024];

	(void)state;
	/* Entropy: exactly 64 bytes, both ways. */
	m.entropy_len = 63;
	assert_int_equal(agent_proto_encode_restored(buf, sizeof(buf), 1, &m, &len), -EINVAL);
	m.entropy_len = 64;
	m.entropy = NULL;
	assert_int_equal(agent_proto_encode_restored(buf, sizeof(buf), 1, &m, &len), -EINVAL);
	m = restored_full();
	m.realtime_ns = 0;
	assert_int_equal(agent_proto_encode_restored(buf, sizeof(buf), 1, &m, &len), -EINVAL);
	m.realtime_ns = (uint64_t)INT64_MAX + 1;
	assert_int_equal(agent_proto_encode_restored(buf, sizeof(buf), 1, &m, &len), -EINVAL);

	for (uint32_t elen = 0; elen <= 65; elen += 1) {
		t8[0] = 1;
		len = tlv(payload, 1, elen, entropy64, elen < 64 ? elen : 64);
		if (elen > 64)
			payload[len++] = 0;
		len += tlv(payload + len, 2, 8, t8, 8);
		f = raw(AGENT_PROTO_RESTORED, payload, len);
		assert_int_equal(agent_proto_decode_restored(&f, &d), elen == 64 ? 0 : -EINVAL);
	}
	/* Time: 8 bytes, not zero, not past INT64_MAX. */
	len = tlv(payload, 1, 64, entropy64, 64);
	len += tlv(payload + len, 2, 8, t8, 8);
	memset(payload + len - 8, 0, 8);
	f = raw(AGENT_PROTO_RESTORED, payload, len);
	assert_int_equal(agent_proto_decode_restored(&f, &d), -EINVAL);
	memset(payload + len - 8, 0xff, 8);
	assert_int_equal(agent_proto_decode_restored(&f, &d), -EINVAL);
	payload[len - 1] = 0x7f;
	assert_int_equal(agent_proto_decode_restored(&f, &d), 0);
	assert_true(d.realtime_ns == (uint64_t)INT64_MAX);
	len = tlv(payload, 1, 64, entropy64, 64);
	len += tlv(payload + len, 2, 4, t8, 4);
	f = raw(AGENT_PROTO_RESTORED, payload, len);
	assert_int_equal(agent_proto_decode_restored(&f, &d), -EINVAL);
	/* Required fields missing. */
	len = tlv(payload, 1, 64, entropy64, 64);
	f = raw(AGENT_PROTO_RESTORED, payload, len);
	assert_int_equal(agent_proto_decode_restored(&f, &d), -ENOENT);
	len = tlv(payload, 2, 8, t8, 8);
	f = raw(AGENT_PROTO_RESTORED, payload, len);
	assert_int_equal(agent_proto_decode_restored(&f, &d), -ENOENT);
	/* A repeated field, a string without its NUL, one with a NUL inside, one past the end. */
	t8[0] = 1;
	len = tlv(payload, 1, 64, entropy64, 64);
	len += tlv(payload + len, 2, 8, t8, 8);
	{
		size_t base = len;

		len += tlv_str(payload + len, 3, "a");
		len += tlv_str(payload + len, 3, "b");
		f = raw(AGENT_PROTO_RESTORED, payload, len);
		assert_int_equal(agent_proto_decode_restored(&f, &d), -ENOTUNIQ);
		len = base + tlv(payload + base, 3, 3, "abc", 3);
		f = raw(AGENT_PROTO_RESTORED, payload, len);
		assert_int_equal(agent_proto_decode_restored(&f, &d), -EINVAL);
		len = base + tlv(payload + base, 3, 4, "a\0b", 4);
		f = raw(AGENT_PROTO_RESTORED, payload, len);
		assert_int_equal(agent_proto_decode_restored(&f, &d), -EINVAL);
		len = base + tlv(payload + base, 5, 200, "10.0.0.2/30,10.0.0.1", 21);
		f = raw(AGENT_PROTO_RESTORED, payload, len);
		assert_int_equal(agent_proto_decode_restored(&f, &d), -EBADMSG);
		/* An unknown tag is skipped. */
		len = base + tlv_str(payload + base, 99, "later");
		f = raw(AGENT_PROTO_RESTORED, payload, len);
		assert_int_equal(agent_proto_decode_restored(&f, &d), 0);
	}
}

static void restored_value_parsers(void **state)
{
	struct agent_proto_net n;
	uint8_t mac[6], a[16];
	int af;

	(void)state;
	assert_int_equal(agent_proto_parse_net("10.1.2.3/24,10.1.2.1", 20, AF_INET, &n), 0);
	assert_int_equal(n.prefix, 24);
	assert_int_equal(n.af, AF_INET);
	assert_memory_equal(n.addr, ((uint8_t[]){ 10, 1, 2, 3 }), 4);
	assert_memory_equal(n.gw, ((uint8_t[]){ 10, 1, 2, 1 }), 4);
	/* Counted: what follows the length is not looked at (the kernel command line). */
	assert_int_equal(agent_proto_parse_net("10.1.2.3/0,10.1.2.1 quiet", 19, AF_INET, &n), 0);
	assert_int_equal(n.prefix, 0);
	assert_int_equal(agent_proto_parse_net("fd00::5/128,fe80::1", 19, AF_INET6, &n), 0);
	assert_int_equal(n.prefix, 128);
	assert_int_equal(agent_proto_parse_net("10.1.2.3/24,10.1.2.1", 20, AF_UNIX, &n), -EINVAL);
	assert_int_equal(agent_proto_parse_net("10.1.2.3/2\0,10.1.2.1", 20, AF_INET, &n), -EINVAL);
	assert_int_equal(agent_proto_parse_net("10.1.2.3\0/24,10.1.2.1", 21, AF_INET, &n), -EINVAL);
	assert_int_equal(agent_proto_parse_mac("02:00:00:00:00:01", 17, mac), 0);
	assert_memory_equal(mac, ((uint8_t[]){ 2, 0, 0, 0, 0, 1 }), 6);
	assert_int_equal(agent_proto_parse_addr("fd00::1", 7, &af, a), 0);
	assert_int_equal(af, AF_INET6);
	assert_int_equal(agent_proto_parse_addr("1.2.3.4", 7, &af, a), 0);
	assert_int_equal(af, AF_INET);
	assert_int_equal(agent_proto_parse_addr("1.2.3.4", 0, &af, a), -EINVAL);
	assert_true(agent_proto_hostname_ok("a", 1));
	assert_true(agent_proto_hostname_ok("sandbox-0123.internal", 21));
	assert_false(agent_proto_hostname_ok("ab", 0));
	assert_true(agent_proto_machine_id_ok("ffffffffffffffffffffffffffffffff", 32));
}

/* HELLO's features: optional, any bits, and an older peer's HELLO (without them) reads as 0. */
static void hello_features(void **state)
{
	struct agent_proto_hello h = { .min_version = 1, .max_version = 1, .name = "x",
				       .features = 0xffffffffu }, d;
	uint8_t buf[128], payload[64];
	struct agent_proto_frame f;
	size_t n;

	(void)state;
	assert_int_equal(agent_proto_encode_hello(buf, sizeof(buf), &h, &n), 0);
	f = parse(buf, n);
	assert_int_equal(agent_proto_decode_hello(&f, &d), 0);
	assert_int_equal(d.features, 0xffffffffu);
	n = tlv_u32(payload, 1, 1);
	n += tlv_u32(payload + n, 2, 1);
	n += tlv_str(payload + n, 3, "old");
	f = raw(AGENT_PROTO_HELLO, payload, n);
	f.hdr.stream = 0;
	assert_int_equal(agent_proto_decode_hello(&f, &d), 0);
	assert_int_equal(d.features, 0);
}

/* Random mutations of a valid RESTORED: in bounds (ASan), and what decodes is valid. */
static void restored_mutations(void **state)
{
	struct agent_proto_restored m = restored_full();
	uint8_t orig[1024], *b, again[1024];
	uint64_t seed = 7;
	size_t n;

	(void)state;
	assert_int_equal(agent_proto_encode_restored(orig, sizeof(orig), 1, &m, &n), 0);
	for (int iter = 0; iter < 20000; iter++) {
		struct agent_proto_frame f;
		struct agent_proto_restored out;
		int flips = 1 + unit_rand(&seed) % 4;
		size_t len = n - unit_rand(&seed) % 4, alen;

		b = malloc(len);
		assert_non_null(b);
		memcpy(b, orig, len);
		for (int i = 0; i < flips; i++)
			b[AGENT_PROTO_HEADER_SIZE + unit_rand(&seed) % (len - AGENT_PROTO_HEADER_SIZE)] ^=
				(uint8_t)(1u << (unit_rand(&seed) % 8));
		f = raw(AGENT_PROTO_RESTORED, b + AGENT_PROTO_HEADER_SIZE, len - AGENT_PROTO_HEADER_SIZE);
		if (agent_proto_decode_restored(&f, &out) == 0)
			assert_int_equal(agent_proto_encode_restored(again, sizeof(again), 1, &out, &alen), 0);
		free(b);
	}
}

/* A command line's sandvm.* words: whole words only, a longer key never matches a shorter one. */
static void cmdline_words(void **state)
{
	const char *line = "quiet xsandvm.net=9 sandvm.net6=fd00::2/64,fd00::1 sandvm.net=10.0.0.2/30,10.0.0.1\n";
	const char *v;
	size_t len;

	(void)state;
	v = agent_proto_cmdline_word(line, "sandvm.net", &len);
	assert_non_null(v);
	assert_int_equal(len, strlen("10.0.0.2/30,10.0.0.1"));
	assert_memory_equal(v, "10.0.0.2/30,10.0.0.1", len);
	v = agent_proto_cmdline_word(line, "sandvm.net6", &len);
	assert_non_null(v);
	assert_memory_equal(v, "fd00::2/64,fd00::1", len);
	assert_null(agent_proto_cmdline_word(line, "sandvm.dns", &len));
	assert_null(agent_proto_cmdline_word("sandvm.hostname", "sandvm.hostname", &len));
	v = agent_proto_cmdline_word("sandvm.hostname= quiet", "sandvm.hostname", &len);
	assert_non_null(v);
	assert_int_equal(len, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(header_roundtrip),
		cmocka_unit_test(header_truncated),
		cmocka_unit_test(header_hostile),
		cmocka_unit_test(header_stream_rules),
		cmocka_unit_test(roundtrip_connection),
		cmocka_unit_test(roundtrip_exec),
		cmocka_unit_test(roundtrip_files),
		cmocka_unit_test(encode_bounds),
		cmocka_unit_test(tlv_past_end),
		cmocka_unit_test(tlv_huge_length),
		cmocka_unit_test(bad_strings),
		cmocka_unit_test(duplicate_tag),
		cmocka_unit_test(missing_tag),
		cmocka_unit_test(exec_empty_argv),
		cmocka_unit_test(exec_caps),
		cmocka_unit_test(exec_semantics),
		cmocka_unit_test(value_checks),
		cmocka_unit_test(unknown_tags_skipped),
		cmocka_unit_test(reader_bytewise_and_chunks),
		cmocka_unit_test(reader_rejects),
		cmocka_unit_test(reader_truncated_payload),
		cmocka_unit_test(mutations),
		cmocka_unit_test(restored_roundtrip),
		cmocka_unit_test(restored_refusals),
		cmocka_unit_test(restored_hostile),
		cmocka_unit_test(restored_value_parsers),
		cmocka_unit_test(hello_features),
		cmocka_unit_test(restored_mutations),
		cmocka_unit_test(cmdline_words),
	};

	return cmocka_run_group_tests_name("agent_proto", tests, NULL, NULL);
}
