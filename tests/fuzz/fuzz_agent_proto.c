/*
 * libFuzzer target: the agent wire format. The input is a byte stream fed to
 * the reader in chunks; every frame it yields goes through the decoder for its
 * type. Whatever a decoder accepts must point inside the payload, respect the
 * caps, and encode again to something that decodes again.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t payload_buf[AGENT_PROTO_MAX_PAYLOAD];
static uint8_t out[AGENT_PROTO_MAX_FRAME];
static const char *ptrs[AGENT_PROTO_EXEC_PTRS];
static const char *ptrs2[AGENT_PROTO_EXEC_PTRS];

static void check(bool ok)
{
	if (!ok)
		abort();
}

static bool inside(const struct agent_proto_frame *f, const void *p, size_t len)
{
	const uint8_t *b = p;

	return b >= f->payload && b <= f->payload + f->hdr.length &&
	       len <= (size_t)(f->payload + f->hdr.length - b);
}

/* A decoded string: inside the payload, NUL-terminated there, not too long. */
static void check_str(const struct agent_proto_frame *f, const char *s, bool optional)
{
	size_t room;

	if (!s) {
		check(optional);
		return;
	}
	check(inside(f, s, 1));
	room = (size_t)(f->payload + f->hdr.length - (const uint8_t *)s);
	check(memchr(s, 0, room) != NULL);
	check(strlen(s) <= AGENT_PROTO_MAX_STRING);
}

static void check_bytes(const struct agent_proto_frame *f, const uint8_t *p, uint32_t len)
{
	check(len == 0 || inside(f, p, len));
}

/* Re-encoding must succeed and the result must decode to the same type. */
static struct agent_proto_frame reparse(int rc, size_t len)
{
	struct agent_proto_frame f;

	check(rc == 0);
	check(agent_proto_decode_header(out, len, &f.hdr) == 0);
	check(f.hdr.length + AGENT_PROTO_HEADER_SIZE == len);
	f.payload = out + AGENT_PROTO_HEADER_SIZE;
	return f;
}

static void exec_start(const struct agent_proto_frame *f)
{
	struct agent_proto_exec_start m, m2;
	struct agent_proto_frame g;
	size_t bytes = 0, len;

	if (agent_proto_decode_exec_start(f, &m, ptrs, AGENT_PROTO_EXEC_PTRS))
		return;
	check(m.argc >= 1 && m.argc + m.envc <= AGENT_PROTO_MAX_ARGS);
	check(m.argv[m.argc] == NULL && m.env[m.envc] == NULL);
	for (uint32_t i = 0; i < m.argc + m.envc; i++) {
		const char *s = i < m.argc ? m.argv[i] : m.env[i - m.argc];

		check_str(f, s, false);
		bytes += strlen(s) + 1;
		if (i >= m.argc)
			check(strchr(s, '=') != NULL && s[0] != '=');
	}
	check(bytes <= AGENT_PROTO_MAX_ARGS_BYTES);
	check_str(f, m.workdir, true);
	check(!(m.flags & AGENT_PROTO_EXEC_PTY) || (m.rows && m.cols));
	g = reparse(agent_proto_encode_exec_start(out, sizeof(out), f->hdr.stream, &m, &len), len);
	check(agent_proto_decode_exec_start(&g, &m2, ptrs2, AGENT_PROTO_EXEC_PTRS) == 0);
	check(m2.argc == m.argc && m2.envc == m.envc && m2.uid == m.uid && m2.flags == m.flags);
	for (uint32_t i = 0; i < m.argc; i++)
		check(strcmp(m.argv[i], m2.argv[i]) == 0);
}

/* Decode, check, re-encode, decode again: the same steps for every simple shape. */
#define ROUND(name, type_arg, checks)                                                         \
	do {                                                                                  \
		struct agent_proto_##name m, m2;                                              \
		struct agent_proto_frame g;                                                   \
		size_t len;                                                                   \
		if (agent_proto_decode_##name(f, &m))                                         \
			return;                                                               \
		checks;                                                                       \
		g = reparse(agent_proto_encode_##name type_arg, len);                         \
		check(agent_proto_decode_##name(&g, &m2) == 0);                               \
		check(g.hdr.type == f->hdr.type && g.hdr.stream == f->hdr.stream);            \
	} while (0)

static void decode(const struct agent_proto_frame *f)
{
	uint32_t s = f->hdr.stream;

	switch (f->hdr.type) {
	case AGENT_PROTO_HELLO:
		ROUND(hello, (out, sizeof(out), &m, &len),
		      { check_str(f, m.name, false); check(m.min_version <= m.max_version); });
		break;
	case AGENT_PROTO_PING:
	case AGENT_PROTO_PONG:
		ROUND(ping, (out, sizeof(out), f->hdr.type, &m, &len), {});
		break;
	case AGENT_PROTO_SHUTDOWN:
		ROUND(shutdown, (out, sizeof(out), &m, &len), check(m.action <= AGENT_PROTO_REBOOT));
		break;
	case AGENT_PROTO_RESTORED:
		ROUND(restored, (out, sizeof(out), s, &m, &len), {
			check_bytes(f, m.entropy, m.entropy_len);
			check(m.entropy_len == AGENT_PROTO_RESTORED_ENTROPY && m.realtime_ns >= 1);
			check_str(f, m.hostname, true);
			check_str(f, m.machine_id, true);
			check_str(f, m.net, true);
			check_str(f, m.net6, true);
			check_str(f, m.mac, true);
			check_str(f, m.dns, true);
		});
		break;
	case AGENT_PROTO_ERROR:
		ROUND(error, (out, sizeof(out), s, &m, &len), check_str(f, m.message, true));
		break;
	case AGENT_PROTO_OK:
	case AGENT_PROTO_STDIN_CLOSE:
	case AGENT_PROTO_LIST_END: {
		size_t len;

		if (agent_proto_decode_empty(f) == 0)
			reparse(agent_proto_encode_empty(out, sizeof(out), f->hdr.type, s, &len), len);
		break;
	}
	case AGENT_PROTO_EXEC_START:
		exec_start(f);
		break;
	case AGENT_PROTO_EXEC_STARTED:
		ROUND(exec_started, (out, sizeof(out), s, &m, &len), check(m.pid >= 1));
		break;
	case AGENT_PROTO_STDIN:
	case AGENT_PROTO_STDOUT:
	case AGENT_PROTO_STDERR:
		ROUND(data, (out, sizeof(out), f->hdr.type, s, &m, &len), check_bytes(f, m.data, m.len));
		break;
	case AGENT_PROTO_WINDOW:
		ROUND(window, (out, sizeof(out), s, &m, &len), check(m.direction <= AGENT_PROTO_DIR_STDERR));
		break;
	case AGENT_PROTO_SIGNAL:
		ROUND(signal, (out, sizeof(out), s, &m, &len), check(m.signo >= 1 && m.signo <= 64));
		break;
	case AGENT_PROTO_EXIT:
		ROUND(exit, (out, sizeof(out), s, &m, &len), check(m.kind <= AGENT_PROTO_EXIT_TIMED_OUT));
		break;
	case AGENT_PROTO_FILE_READ:
		ROUND(file_read, (out, sizeof(out), s, &m, &len), check_str(f, m.path, false));
		break;
	case AGENT_PROTO_FILE_DATA:
		ROUND(file_data, (out, sizeof(out), s, &m, &len), check_bytes(f, m.data, m.len));
		break;
	case AGENT_PROTO_FILE_WRITE:
		ROUND(file_write, (out, sizeof(out), s, &m, &len),
		      { check_str(f, m.path, false); check_bytes(f, m.data, m.len); check(m.mode <= 07777); });
		break;
	case AGENT_PROTO_FILE_STAT:
	case AGENT_PROTO_FILE_LIST:
		ROUND(path, (out, sizeof(out), f->hdr.type, s, &m, &len),
		      { check_str(f, m.path, false); check(m.path[0] != 0); });
		break;
	case AGENT_PROTO_STAT_RESULT:
		ROUND(stat_result, (out, sizeof(out), s, &m, &len), check(m.type <= AGENT_PROTO_FT_SYMLINK));
		break;
	case AGENT_PROTO_LIST_ENTRY:
		ROUND(list_entry, (out, sizeof(out), s, &m, &len),
		      { check_str(f, m.name, false); check(!strchr(m.name, '/')); });
		break;
	case AGENT_PROTO_MKDIR:
		ROUND(mkdir, (out, sizeof(out), s, &m, &len), check_str(f, m.path, false));
		break;
	case AGENT_PROTO_REMOVE:
		ROUND(remove, (out, sizeof(out), s, &m, &len), check_str(f, m.path, false));
		break;
	default:
		abort(); /* the reader only yields known types */
	}
}

/* Byte 0 seeds the chunk sizes; the rest is the stream. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_proto_reader r;
	struct agent_proto_frame f;
	uint32_t seed;
	size_t pos = 1;

	if (size < 1)
		return 0;
	seed = data[0] * 2654435761u + 1;
	agent_proto_reader_init(&r, payload_buf, sizeof(payload_buf));
	while (pos < size) {
		size_t chunk, used;
		int rc;

		seed = seed * 1103515245u + 12345u;
		chunk = 1 + (seed >> 16) % 64;
		if (chunk > size - pos)
			chunk = size - pos;
		rc = agent_proto_reader_feed(&r, data + pos, chunk, &used, &f);
		if (rc < 0)
			break;
		check(used <= chunk && (rc == 1 || used == chunk));
		pos += used;
		if (rc == 1) {
			check(f.hdr.length <= AGENT_PROTO_MAX_PAYLOAD && f.payload == payload_buf);
			decode(&f);
		}
	}
	return 0;
}
