/*
 * Host <-> guest agent wire format: frame header, stream reader and the
 * table-driven TLV codec behind every message. See docs/agent-protocol.md.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include "agent_proto.h"

/* Explicit little-endian access: the wire order must not depend on the host. */
static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)v);
	wr32(p + 4, (uint32_t)(v >> 32));
}

/* ---- types ---- */

enum stream_rule { STREAM_ZERO, STREAM_NONZERO, STREAM_ANY };

static const struct type_info {
	const char *name;
	uint8_t rule;
} types[256] = {
	[AGENT_PROTO_HELLO] = { "HELLO", STREAM_ZERO },
	[AGENT_PROTO_PING] = { "PING", STREAM_ZERO },
	[AGENT_PROTO_PONG] = { "PONG", STREAM_ZERO },
	[AGENT_PROTO_SHUTDOWN] = { "SHUTDOWN", STREAM_ZERO },
	[AGENT_PROTO_RESTORED] = { "RESTORED", STREAM_NONZERO },
	[AGENT_PROTO_OK] = { "OK", STREAM_ANY },
	[AGENT_PROTO_ERROR] = { "ERROR", STREAM_ANY },
	[AGENT_PROTO_EXEC_START] = { "EXEC_START", STREAM_NONZERO },
	[AGENT_PROTO_EXEC_STARTED] = { "EXEC_STARTED", STREAM_NONZERO },
	[AGENT_PROTO_STDIN] = { "STDIN", STREAM_NONZERO },
	[AGENT_PROTO_STDIN_CLOSE] = { "STDIN_CLOSE", STREAM_NONZERO },
	[AGENT_PROTO_STDOUT] = { "STDOUT", STREAM_NONZERO },
	[AGENT_PROTO_STDERR] = { "STDERR", STREAM_NONZERO },
	[AGENT_PROTO_WINDOW] = { "WINDOW", STREAM_NONZERO },
	[AGENT_PROTO_SIGNAL] = { "SIGNAL", STREAM_NONZERO },
	[AGENT_PROTO_EXIT] = { "EXIT", STREAM_NONZERO },
	[AGENT_PROTO_FILE_READ] = { "FILE_READ", STREAM_NONZERO },
	[AGENT_PROTO_FILE_DATA] = { "FILE_DATA", STREAM_NONZERO },
	[AGENT_PROTO_FILE_WRITE] = { "FILE_WRITE", STREAM_NONZERO },
	[AGENT_PROTO_FILE_STAT] = { "FILE_STAT", STREAM_NONZERO },
	[AGENT_PROTO_STAT_RESULT] = { "STAT_RESULT", STREAM_NONZERO },
	[AGENT_PROTO_FILE_LIST] = { "FILE_LIST", STREAM_NONZERO },
	[AGENT_PROTO_LIST_ENTRY] = { "LIST_ENTRY", STREAM_NONZERO },
	[AGENT_PROTO_LIST_END] = { "LIST_END", STREAM_NONZERO },
	[AGENT_PROTO_MKDIR] = { "MKDIR", STREAM_NONZERO },
	[AGENT_PROTO_REMOVE] = { "REMOVE", STREAM_NONZERO },
};

const char *agent_proto_type_name(uint8_t type)
{
	return types[type].name ? types[type].name : "UNKNOWN";
}

static bool stream_ok(uint8_t type, uint32_t stream)
{
	switch (types[type].rule) {
	case STREAM_ZERO:
		return stream == 0;
	case STREAM_NONZERO:
		return stream != 0;
	default:
		return true;
	}
}

/* ---- header ---- */

int agent_proto_encode_header(const struct agent_proto_header *h, uint8_t out[AGENT_PROTO_HEADER_SIZE])
{
	if (!types[h->type].name || !stream_ok(h->type, h->stream) ||
	    h->length > AGENT_PROTO_MAX_PAYLOAD)
		return -EINVAL;
	wr16(out, AGENT_PROTO_MAGIC);
	out[2] = AGENT_PROTO_VERSION;
	out[3] = h->type;
	wr32(out + 4, h->stream);
	wr32(out + 8, h->length);
	wr16(out + 12, h->flags);
	wr16(out + 14, 0);
	return 0;
}

int agent_proto_decode_header(const void *buf, size_t len, struct agent_proto_header *h)
{
	const uint8_t *p = buf;

	if (len < AGENT_PROTO_HEADER_SIZE)
		return -ENODATA;
	if (rd16(p) != AGENT_PROTO_MAGIC)
		return -EBADMSG;
	if (p[2] < AGENT_PROTO_VERSION_MIN || p[2] > AGENT_PROTO_VERSION_MAX)
		return -EPROTONOSUPPORT;
	if (rd16(p + 14) != 0)
		return -EPROTO;
	if (rd32(p + 8) > AGENT_PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (!types[p[3]].name)
		return -ENOMSG;
	if (!stream_ok(p[3], rd32(p + 4)))
		return -EBADR;
	h->version = p[2];
	h->type = p[3];
	h->stream = rd32(p + 4);
	h->length = rd32(p + 8);
	h->flags = rd16(p + 12);
	return 0;
}

/* ---- reader ---- */

void agent_proto_reader_init(struct agent_proto_reader *r, void *buf, size_t cap)
{
	memset(r, 0, sizeof(*r));
	r->buf = buf;
	r->cap = cap < AGENT_PROTO_MAX_PAYLOAD ? cap : AGENT_PROTO_MAX_PAYLOAD;
}

int agent_proto_reader_feed(struct agent_proto_reader *r, const void *data, size_t len,
			    size_t *used, struct agent_proto_frame *frame)
{
	const uint8_t *p = data;
	size_t off = 0;
	int err;

	*used = 0;
	if (r->err)
		return r->err;
	if (r->hdr_len < AGENT_PROTO_HEADER_SIZE) {
		size_t n = AGENT_PROTO_HEADER_SIZE - r->hdr_len;

		if (n > len)
			n = len;
		if (n)
			memcpy(r->hdr_buf + r->hdr_len, p, n);
		r->hdr_len += n;
		off += n;
		*used = off;
		if (r->hdr_len < AGENT_PROTO_HEADER_SIZE)
			return 0;
		err = agent_proto_decode_header(r->hdr_buf, r->hdr_len, &r->hdr);
		if (err == 0 && r->hdr.length > r->cap)
			err = -EMSGSIZE;
		if (err) {
			r->err = err;
			return err;
		}
		r->have = 0;
	}
	if (r->have < r->hdr.length) {
		size_t n = r->hdr.length - r->have;

		if (n > len - off)
			n = len - off;
		if (n)
			memcpy(r->buf + r->have, p + off, n);
		r->have += n;
		off += n;
		*used = off;
		if (r->have < r->hdr.length)
			return 0;
	}
	frame->hdr = r->hdr;
	frame->payload = r->buf;
	r->hdr_len = 0;
	r->have = 0;
	return 1;
}

/* ---- TLV ---- */

/* Returns 1 with the next element, 0 at the end, -EBADMSG if one overruns. */
static int tlv_next(const uint8_t **p, size_t *left, uint16_t *tag, const uint8_t **val, uint32_t *len)
{
	uint32_t l;

	if (*left == 0)
		return 0;
	if (*left < AGENT_PROTO_TLV_HEADER_SIZE)
		return -EBADMSG;
	l = rd32(*p + 2);
	/* Compared against what is left, never added to a pointer first. */
	if (l > *left - AGENT_PROTO_TLV_HEADER_SIZE)
		return -EBADMSG;
	*tag = rd16(*p);
	*val = *p + AGENT_PROTO_TLV_HEADER_SIZE;
	*len = l;
	*p += AGENT_PROTO_TLV_HEADER_SIZE + l;
	*left -= AGENT_PROTO_TLV_HEADER_SIZE + l;
	return 1;
}

/* A wire string: content bytes, then exactly one NUL, which ends it. */
static bool wire_string_ok(const uint8_t *v, uint32_t len)
{
	return len >= 1 && len - 1 <= AGENT_PROTO_MAX_STRING && v[len - 1] == 0 &&
	       memchr(v, 0, len - 1) == NULL;
}

struct enc {
	uint8_t *buf;
	size_t cap;
	size_t pos;
	int err;
};

static void put_tlv(struct enc *e, uint16_t tag, const void *val, size_t len, bool nul)
{
	size_t total = len + (nul ? 1 : 0);

	if (e->err)
		return;
	if (total > UINT32_MAX || e->pos > e->cap || e->cap - e->pos < AGENT_PROTO_TLV_HEADER_SIZE ||
	    e->cap - e->pos - AGENT_PROTO_TLV_HEADER_SIZE < total) {
		e->err = -ENOSPC;
		return;
	}
	wr16(e->buf + e->pos, tag);
	wr32(e->buf + e->pos + 2, (uint32_t)total);
	e->pos += AGENT_PROTO_TLV_HEADER_SIZE;
	if (len)
		memcpy(e->buf + e->pos, val, len);
	e->pos += len;
	if (nul)
		e->buf[e->pos++] = 0;
}

static void put_u32(struct enc *e, uint16_t tag, uint32_t v)
{
	uint8_t b[4];

	wr32(b, v);
	put_tlv(e, tag, b, 4, false);
}

static void put_u64(struct enc *e, uint16_t tag, uint64_t v)
{
	uint8_t b[8];

	wr64(b, v);
	put_tlv(e, tag, b, 8, false);
}

static int put_str(struct enc *e, uint16_t tag, const char *s)
{
	size_t n = strlen(s);

	if (n > AGENT_PROTO_MAX_STRING)
		return -EINVAL;
	put_tlv(e, tag, s, n, true);
	return 0;
}

/* ---- table-driven message shapes ---- */

enum kind { K_U32, K_U64, K_STR, K_BYTES, K_LIST };
#define F_REQ 0x1u      /* must be present */
#define F_MASK 0x2u     /* u32 is a bit set: hi is the allowed mask */
#define F_NONEMPTY 0x4u /* string must not be empty */

struct field {
	uint16_t tag;
	uint8_t kind;
	uint8_t fl;
	uint32_t lo, hi; /* u32 range, or the mask with F_MASK */
	size_t off;      /* the value in the struct */
	size_t len_off;  /* K_BYTES: its uint32_t length */
};

struct shape {
	const struct field *f;
	unsigned n;
};

#define U32(t, s, m, fl, lo, hi) { t, K_U32, fl, lo, hi, offsetof(struct s, m), 0 }
#define MASK(t, s, m, fl, mask) { t, K_U32, (fl) | F_MASK, 0, mask, offsetof(struct s, m), 0 }
#define U64(t, s, m, fl) { t, K_U64, fl, 0, 0, offsetof(struct s, m), 0 }
#define STR(t, s, m, fl) { t, K_STR, fl, 0, 0, offsetof(struct s, m), 0 }
#define BYTES(t, s, m, l) { t, K_BYTES, F_REQ, 0, 0, offsetof(struct s, m), offsetof(struct s, l) }
#define SHAPE(a) { a, sizeof(a) / sizeof((a)[0]) }

static const struct field f_hello[] = {
	U32(1, agent_proto_hello, min_version, F_REQ, 1, UINT32_MAX),
	U32(2, agent_proto_hello, max_version, F_REQ, 1, UINT32_MAX),
	STR(3, agent_proto_hello, name, F_REQ),
	/* Any bits: a peer ignores features it does not know. */
	U32(4, agent_proto_hello, features, 0, 0, UINT32_MAX),
};
static const struct field f_ping[] = { U64(1, agent_proto_ping, token, F_REQ) };
static const struct field f_shutdown[] = {
	U32(1, agent_proto_shutdown, action, F_REQ, 0, AGENT_PROTO_REBOOT),
};
static const struct field f_error[] = {
	U32(1, agent_proto_error, code, F_REQ, 1, UINT32_MAX),
	STR(2, agent_proto_error, message, 0),
};
#define TAG_ARG 1
#define TAG_ENV 2
static const struct field f_exec_start[] = {
	{ TAG_ARG, K_LIST, F_REQ, 0, 0, 0, 0 },
	{ TAG_ENV, K_LIST, 0, 0, 0, 0, 0 },
	STR(3, agent_proto_exec_start, workdir, F_NONEMPTY),
	U32(4, agent_proto_exec_start, uid, F_REQ, 0, UINT32_MAX),
	U32(5, agent_proto_exec_start, gid, F_REQ, 0, UINT32_MAX),
	MASK(6, agent_proto_exec_start, flags, 0, AGENT_PROTO_EXEC_PTY),
	U32(7, agent_proto_exec_start, timeout_ms, 0, 0, UINT32_MAX),
	U32(8, agent_proto_exec_start, rows, 0, 0, 65535),
	U32(9, agent_proto_exec_start, cols, 0, 0, 65535),
};
static const struct field f_exec_started[] = {
	U32(1, agent_proto_exec_started, pid, F_REQ, 1, INT32_MAX),
};
static const struct field f_data[] = { BYTES(1, agent_proto_data, data, len) };
static const struct field f_window[] = {
	U32(1, agent_proto_window, direction, F_REQ, 0, AGENT_PROTO_DIR_STDERR),
	U32(2, agent_proto_window, credit, F_REQ, 0, UINT32_MAX),
};
static const struct field f_signal[] = { U32(1, agent_proto_signal, signo, F_REQ, 1, 64) };
static const struct field f_exit[] = {
	U32(1, agent_proto_exit, kind, F_REQ, 0, AGENT_PROTO_EXIT_TIMED_OUT),
	U32(2, agent_proto_exit, code, F_REQ, 0, UINT32_MAX),
};
static const struct field f_file_read[] = {
	STR(1, agent_proto_file_read, path, F_REQ | F_NONEMPTY),
	U64(2, agent_proto_file_read, offset, F_REQ),
	U32(3, agent_proto_file_read, max_len, F_REQ, 0, UINT32_MAX),
};
static const struct field f_file_data[] = {
	MASK(1, agent_proto_file_data, flags, F_REQ, AGENT_PROTO_DATA_EOF | AGENT_PROTO_DATA_LAST),
	BYTES(2, agent_proto_file_data, data, len),
};
static const struct field f_file_write[] = {
	STR(1, agent_proto_file_write, path, F_REQ | F_NONEMPTY),
	MASK(2, agent_proto_file_write, mode, F_REQ, 07777),
	MASK(3, agent_proto_file_write, flags, F_REQ,
	     AGENT_PROTO_WRITE_CREATE | AGENT_PROTO_WRITE_TRUNCATE | AGENT_PROTO_WRITE_APPEND |
		     AGENT_PROTO_WRITE_FINAL),
	BYTES(4, agent_proto_file_write, data, len),
};
static const struct field f_path[] = { STR(1, agent_proto_path, path, F_REQ | F_NONEMPTY) };
static const struct field f_stat_result[] = {
	U32(1, agent_proto_stat_result, type, F_REQ, 0, AGENT_PROTO_FT_SYMLINK),
	MASK(2, agent_proto_stat_result, mode, F_REQ, 07777),
	U64(3, agent_proto_stat_result, size, F_REQ),
	U64(4, agent_proto_stat_result, mtime, F_REQ),
	U32(5, agent_proto_stat_result, uid, F_REQ, 0, UINT32_MAX),
	U32(6, agent_proto_stat_result, gid, F_REQ, 0, UINT32_MAX),
};
static const struct field f_list_entry[] = {
	STR(1, agent_proto_list_entry, name, F_REQ | F_NONEMPTY),
	U32(2, agent_proto_list_entry, type, F_REQ, 0, AGENT_PROTO_FT_SYMLINK),
	U64(3, agent_proto_list_entry, size, F_REQ),
};
static const struct field f_mkdir[] = {
	STR(1, agent_proto_mkdir, path, F_REQ | F_NONEMPTY),
	MASK(2, agent_proto_mkdir, mode, F_REQ, 07777),
	MASK(3, agent_proto_mkdir, flags, F_REQ, AGENT_PROTO_MKDIR_PARENTS),
};
static const struct field f_remove[] = {
	STR(1, agent_proto_remove, path, F_REQ | F_NONEMPTY),
	MASK(2, agent_proto_remove, flags, F_REQ, AGENT_PROTO_REMOVE_RECURSIVE),
};

static const struct field f_restored[] = {
	BYTES(1, agent_proto_restored, entropy, entropy_len),
	U64(2, agent_proto_restored, realtime_ns, F_REQ),
	STR(3, agent_proto_restored, hostname, F_NONEMPTY),
	STR(4, agent_proto_restored, machine_id, F_NONEMPTY),
	STR(5, agent_proto_restored, net, F_NONEMPTY),
	STR(6, agent_proto_restored, net6, F_NONEMPTY),
	STR(7, agent_proto_restored, mac, F_NONEMPTY),
	STR(8, agent_proto_restored, dns, F_NONEMPTY),
};

static const struct shape s_empty = { NULL, 0 };
static const struct shape s_hello = SHAPE(f_hello);
static const struct shape s_ping = SHAPE(f_ping);
static const struct shape s_shutdown = SHAPE(f_shutdown);
static const struct shape s_error = SHAPE(f_error);
static const struct shape s_restored = SHAPE(f_restored);
static const struct shape s_exec_start = SHAPE(f_exec_start);
static const struct shape s_exec_started = SHAPE(f_exec_started);
static const struct shape s_data = SHAPE(f_data);
static const struct shape s_window = SHAPE(f_window);
static const struct shape s_signal = SHAPE(f_signal);
static const struct shape s_exit = SHAPE(f_exit);
static const struct shape s_file_read = SHAPE(f_file_read);
static const struct shape s_file_data = SHAPE(f_file_data);
static const struct shape s_file_write = SHAPE(f_file_write);
static const struct shape s_path = SHAPE(f_path);
static const struct shape s_stat_result = SHAPE(f_stat_result);
static const struct shape s_list_entry = SHAPE(f_list_entry);
static const struct shape s_mkdir = SHAPE(f_mkdir);
static const struct shape s_remove = SHAPE(f_remove);

static const struct shape *shape_of(uint8_t type)
{
	switch (type) {
	case AGENT_PROTO_HELLO:
		return &s_hello;
	case AGENT_PROTO_PING:
	case AGENT_PROTO_PONG:
		return &s_ping;
	case AGENT_PROTO_SHUTDOWN:
		return &s_shutdown;
	case AGENT_PROTO_RESTORED:
		return &s_restored;
	case AGENT_PROTO_OK:
	case AGENT_PROTO_STDIN_CLOSE:
	case AGENT_PROTO_LIST_END:
		return &s_empty;
	case AGENT_PROTO_ERROR:
		return &s_error;
	case AGENT_PROTO_EXEC_START:
		return &s_exec_start;
	case AGENT_PROTO_EXEC_STARTED:
		return &s_exec_started;
	case AGENT_PROTO_STDIN:
	case AGENT_PROTO_STDOUT:
	case AGENT_PROTO_STDERR:
		return &s_data;
	case AGENT_PROTO_WINDOW:
		return &s_window;
	case AGENT_PROTO_SIGNAL:
		return &s_signal;
	case AGENT_PROTO_EXIT:
		return &s_exit;
	case AGENT_PROTO_FILE_READ:
		return &s_file_read;
	case AGENT_PROTO_FILE_DATA:
		return &s_file_data;
	case AGENT_PROTO_FILE_WRITE:
		return &s_file_write;
	case AGENT_PROTO_FILE_STAT:
	case AGENT_PROTO_FILE_LIST:
		return &s_path;
	case AGENT_PROTO_STAT_RESULT:
		return &s_stat_result;
	case AGENT_PROTO_LIST_ENTRY:
		return &s_list_entry;
	case AGENT_PROTO_MKDIR:
		return &s_mkdir;
	case AGENT_PROTO_REMOVE:
		return &s_remove;
	default:
		return NULL;
	}
}

#define AT(m, off, t) ((t *)(void *)((char *)(m) + (off)))
#define AT_C(m, off, t) ((t const *)(const void *)((const char *)(m) + (off)))

static bool u32_ok(const struct field *f, uint32_t v)
{
	if (f->fl & F_MASK)
		return (v & ~f->hi) == 0;
	return v >= f->lo && v <= f->hi;
}

/* Totals for K_LIST fields, which the generic pass validates but does not store. */
struct list_count {
	uint32_t entries[2]; /* by TAG_ARG - 1, TAG_ENV - 1 */
	uint64_t bytes;
};

static int decode_fields(const struct shape *s, const uint8_t *p, size_t left, void *m,
			 struct list_count *lc)
{
	uint32_t seen = 0, len;
	const uint8_t *v;
	uint16_t tag;
	int rc;

	while ((rc = tlv_next(&p, &left, &tag, &v, &len)) > 0) {
		const struct field *f = NULL;
		unsigned i;

		for (i = 0; i < s->n; i++) {
			if (s->f[i].tag == tag) {
				f = &s->f[i];
				break;
			}
		}
		if (!f)
			continue; /* unknown tags are skipped: see the contract */
		if (f->kind != K_LIST && (seen & (1u << i)))
			return -ENOTUNIQ;
		seen |= 1u << i;
		switch (f->kind) {
		case K_U32:
			if (len != 4 || !u32_ok(f, rd32(v)))
				return -EINVAL;
			*AT(m, f->off, uint32_t) = rd32(v);
			break;
		case K_U64:
			if (len != 8)
				return -EINVAL;
			*AT(m, f->off, uint64_t) = rd64(v);
			break;
		case K_STR:
			if (!wire_string_ok(v, len) || ((f->fl & F_NONEMPTY) && len == 1))
				return -EINVAL;
			*AT(m, f->off, const char *) = (const char *)v;
			break;
		case K_BYTES:
			*AT(m, f->off, const uint8_t *) = v;
			*AT(m, f->len_off, uint32_t) = len;
			break;
		case K_LIST:
			if (!wire_string_ok(v, len))
				return -EINVAL;
			if (!lc)
				return -EINVAL;
			lc->entries[tag - 1]++;
			lc->bytes += len;
			if (lc->entries[0] + lc->entries[1] > AGENT_PROTO_MAX_ARGS ||
			    lc->bytes > AGENT_PROTO_MAX_ARGS_BYTES)
				return -E2BIG;
			break;
		}
	}
	if (rc < 0)
		return rc;
	for (unsigned i = 0; i < s->n; i++)
		if ((s->f[i].fl & F_REQ) && !(seen & (1u << i)))
			return -ENOENT;
	return 0;
}

static int encode_fields(const struct shape *s, struct enc *e, const void *m)
{
	for (unsigned i = 0; i < s->n; i++) {
		const struct field *f = &s->f[i];

		switch (f->kind) {
		case K_U32:
			if (!u32_ok(f, *AT_C(m, f->off, uint32_t)))
				return -EINVAL;
			put_u32(e, f->tag, *AT_C(m, f->off, uint32_t));
			break;
		case K_U64:
			put_u64(e, f->tag, *AT_C(m, f->off, uint64_t));
			break;
		case K_STR: {
			const char *str = *AT_C(m, f->off, const char *);

			if (!str) {
				if (f->fl & F_REQ)
					return -EINVAL;
				break;
			}
			if ((f->fl & F_NONEMPTY) && !*str)
				return -EINVAL;
			if (put_str(e, f->tag, str))
				return -EINVAL;
			break;
		}
		case K_BYTES: {
			const uint8_t *d = *AT_C(m, f->off, const uint8_t *);
			uint32_t n = *AT_C(m, f->len_off, uint32_t);

			if (!d && n)
				return -EINVAL;
			put_tlv(e, f->tag, d, n, false);
			break;
		}
		case K_LIST:
			break; /* written by the message's own encoder */
		}
	}
	return 0;
}

/* Writes the header in front of the payload an encoder left in e. */
static int finish(struct enc *e, uint8_t type, uint32_t stream, size_t *len)
{
	struct agent_proto_header h = { .type = type, .stream = stream };

	if (e->err)
		return e->err;
	if (e->pos - AGENT_PROTO_HEADER_SIZE > AGENT_PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	h.length = (uint32_t)(e->pos - AGENT_PROTO_HEADER_SIZE);
	if (agent_proto_encode_header(&h, e->buf))
		return -EINVAL;
	*len = e->pos;
	return 0;
}

static int start(struct enc *e, void *buf, size_t cap, uint8_t type, const struct shape *want)
{
	if (shape_of(type) != want)
		return -EINVAL;
	if (cap < AGENT_PROTO_HEADER_SIZE)
		return -ENOSPC;
	*e = (struct enc){ .buf = buf, .cap = cap, .pos = AGENT_PROTO_HEADER_SIZE };
	return 0;
}

static int encode_msg(void *buf, size_t cap, uint8_t type, uint32_t stream, const struct shape *want,
		      const void *m, size_t *len)
{
	struct enc e;
	int err = start(&e, buf, cap, type, want);

	if (err)
		return err;
	err = encode_fields(want, &e, m);
	if (err)
		return err;
	return finish(&e, type, stream, len);
}

static int decode_msg(const struct agent_proto_frame *f, const struct shape *want, void *m, size_t size)
{
	if (shape_of(f->hdr.type) != want)
		return -ENOMSG;
	memset(m, 0, size);
	return decode_fields(want, f->payload, f->hdr.length, m, NULL);
}

/* ---- messages ---- */

int agent_proto_encode_empty(void *buf, size_t cap, uint8_t type, uint32_t stream, size_t *len)
{
	return encode_msg(buf, cap, type, stream, &s_empty, NULL, len);
}

int agent_proto_decode_empty(const struct agent_proto_frame *f)
{
	if (shape_of(f->hdr.type) != &s_empty)
		return -ENOMSG;
	return decode_fields(&s_empty, f->payload, f->hdr.length, NULL, NULL);
}

int agent_proto_encode_hello(void *buf, size_t cap, const struct agent_proto_hello *m, size_t *len)
{
	if (m->min_version > m->max_version)
		return -EINVAL;
	return encode_msg(buf, cap, AGENT_PROTO_HELLO, 0, &s_hello, m, len);
}

int agent_proto_decode_hello(const struct agent_proto_frame *f, struct agent_proto_hello *m)
{
	int err = decode_msg(f, &s_hello, m, sizeof(*m));

	if (err == 0 && m->min_version > m->max_version)
		err = -EINVAL;
	return err;
}

int agent_proto_encode_ping(void *buf, size_t cap, uint8_t type, const struct agent_proto_ping *m,
			    size_t *len)
{
	return encode_msg(buf, cap, type, 0, &s_ping, m, len);
}

int agent_proto_decode_ping(const struct agent_proto_frame *f, struct agent_proto_ping *m)
{
	return decode_msg(f, &s_ping, m, sizeof(*m));
}

int agent_proto_encode_shutdown(void *buf, size_t cap, const struct agent_proto_shutdown *m,
				size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_SHUTDOWN, 0, &s_shutdown, m, len);
}

int agent_proto_decode_shutdown(const struct agent_proto_frame *f, struct agent_proto_shutdown *m)
{
	return decode_msg(f, &s_shutdown, m, sizeof(*m));
}

int agent_proto_encode_error(void *buf, size_t cap, uint32_t stream, const struct agent_proto_error *m,
			     size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_ERROR, stream, &s_error, m, len);
}

int agent_proto_decode_error(const struct agent_proto_frame *f, struct agent_proto_error *m)
{
	return decode_msg(f, &s_error, m, sizeof(*m));
}

/* ---- RESTORED and its values ---- */

bool agent_proto_hostname_ok(const char *s, size_t len)
{
	size_t label = 0;

	if (len < 1 || len > AGENT_PROTO_HOSTNAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (ch == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '-'))
			return false;
		if (ch == '-' && label == 0)
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0 && s[len - 1] != '-';
}

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

bool agent_proto_machine_id_ok(const char *s, size_t len)
{
	bool nonzero = false;

	if (len != AGENT_PROTO_MACHINE_ID_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		/* Lowercase only: machine-id(5) says so, and systemd refuses others. */
		if (hex_digit(s[i]) < 0 || (s[i] >= 'A' && s[i] <= 'F'))
			return false;
		nonzero |= s[i] != '0';
	}
	return nonzero;
}

int agent_proto_parse_mac(const char *s, size_t len, uint8_t mac[6])
{
	uint8_t m[6];

	if (len != 17)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		int hi = hex_digit(s[3 * i]), lo = hex_digit(s[3 * i + 1]);

		if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
			return -EINVAL;
		m[i] = (uint8_t)(hi << 4 | lo);
	}
	/* A multicast or zero source address is not one an interface can have. */
	if ((m[0] & 1) || !(m[0] | m[1] | m[2] | m[3] | m[4] | m[5]))
		return -EINVAL;
	memcpy(mac, m, 6);
	return 0;
}

/* inet_pton over a counted string. */
static bool pton(int af, const char *s, size_t len, uint8_t *out)
{
	char buf[64];

	if (len == 0 || len >= sizeof(buf) || memchr(s, 0, len))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return inet_pton(af, buf, out) == 1;
}

const char *agent_proto_cmdline_word(const char *cmdline, const char *key, size_t *len)
{
	size_t klen = strlen(key);

	for (const char *p = cmdline; (p = strstr(p, key)); p++) {
		if ((p == cmdline || p[-1] == ' ') && p[klen] == '=') {
			*len = strcspn(p + klen + 1, " \n");
			return p + klen + 1;
		}
	}
	return NULL;
}

int agent_proto_parse_addr(const char *s, size_t len, int *af, uint8_t addr[16])
{
	uint8_t a[16] = { 0 };

	if (pton(AF_INET, s, len, a))
		*af = AF_INET;
	else if (pton(AF_INET6, s, len, a))
		*af = AF_INET6;
	else
		return -EINVAL;
	memcpy(addr, a, 16);
	return 0;
}

int agent_proto_parse_net(const char *s, size_t len, int af, struct agent_proto_net *out)
{
	const char *slash, *comma;
	struct agent_proto_net n = { .af = af };
	size_t plen;
	unsigned max = af == AF_INET ? 32 : 128;

	if ((af != AF_INET && af != AF_INET6) || len > AGENT_PROTO_NET_SPEC_MAX)
		return -EINVAL;
	slash = memchr(s, '/', len);
	if (!slash)
		return -EINVAL;
	comma = memchr(slash, ',', len - (size_t)(slash - s));
	if (!comma)
		return -EINVAL;
	plen = (size_t)(comma - slash - 1);
	if (plen < 1 || plen > 3 || (plen > 1 && slash[1] == '0'))
		return -EINVAL;
	for (size_t i = 1; i <= plen; i++) {
		if (slash[i] < '0' || slash[i] > '9')
			return -EINVAL;
		n.prefix = n.prefix * 10 + (unsigned)(slash[i] - '0');
	}
	if (n.prefix > max || !pton(af, s, (size_t)(slash - s), n.addr) ||
	    !pton(af, comma + 1, len - (size_t)(comma + 1 - s), n.gw))
		return -EINVAL;
	*out = n;
	return 0;
}

static bool opt_ok(const char *s, bool (*ok)(const char *, size_t))
{
	return !s || ok(s, strlen(s));
}

static bool net_ok(const char *s, size_t len)
{
	struct agent_proto_net n;

	return agent_proto_parse_net(s, len, AF_INET, &n) == 0;
}

static bool net6_ok(const char *s, size_t len)
{
	struct agent_proto_net n;

	return agent_proto_parse_net(s, len, AF_INET6, &n) == 0;
}

static bool mac_ok(const char *s, size_t len)
{
	uint8_t mac[6];

	return agent_proto_parse_mac(s, len, mac) == 0;
}

static bool dns_ok(const char *s, size_t len)
{
	uint8_t a[16];
	int af;

	return agent_proto_parse_addr(s, len, &af, a) == 0;
}

static bool restored_ok(const struct agent_proto_restored *m)
{
	return m->entropy && m->entropy_len == AGENT_PROTO_RESTORED_ENTROPY && m->realtime_ns >= 1 &&
	       m->realtime_ns <= INT64_MAX && opt_ok(m->hostname, agent_proto_hostname_ok) &&
	       opt_ok(m->machine_id, agent_proto_machine_id_ok) && opt_ok(m->net, net_ok) &&
	       opt_ok(m->net6, net6_ok) && opt_ok(m->mac, mac_ok) && opt_ok(m->dns, dns_ok);
}

int agent_proto_encode_restored(void *buf, size_t cap, uint32_t stream,
				const struct agent_proto_restored *m, size_t *len)
{
	if (!restored_ok(m))
		return -EINVAL;
	return encode_msg(buf, cap, AGENT_PROTO_RESTORED, stream, &s_restored, m, len);
}

int agent_proto_decode_restored(const struct agent_proto_frame *f, struct agent_proto_restored *m)
{
	int err = decode_msg(f, &s_restored, m, sizeof(*m));

	if (err == 0 && !restored_ok(m))
		err = -EINVAL;
	return err;
}

static bool env_entry_ok(const char *s)
{
	const char *eq = strchr(s, '=');

	return eq && eq != s;
}

static bool exec_ok(const struct agent_proto_exec_start *m)
{
	return !(m->flags & AGENT_PROTO_EXEC_PTY) || (m->rows && m->cols);
}

int agent_proto_encode_exec_start(void *buf, size_t cap, uint32_t stream,
				  const struct agent_proto_exec_start *m, size_t *len)
{
	uint64_t bytes = 0;
	struct enc e;
	int err;

	if (m->argc < 1 || (uint64_t)m->argc + m->envc > AGENT_PROTO_MAX_ARGS || !exec_ok(m) ||
	    !m->argv || (m->envc && !m->env))
		return -EINVAL;
	err = start(&e, buf, cap, AGENT_PROTO_EXEC_START, &s_exec_start);
	if (err)
		return err;
	for (uint32_t i = 0; i < m->argc + m->envc; i++) {
		const char *s = i < m->argc ? m->argv[i] : m->env[i - m->argc];

		if (!s || (i >= m->argc && !env_entry_ok(s)))
			return -EINVAL;
		bytes += strlen(s) + 1;
		if (bytes > AGENT_PROTO_MAX_ARGS_BYTES)
			return -E2BIG;
		err = put_str(&e, i < m->argc ? TAG_ARG : TAG_ENV, s);
		if (err)
			return err;
	}
	err = encode_fields(&s_exec_start, &e, m);
	if (err)
		return err;
	return finish(&e, AGENT_PROTO_EXEC_START, stream, len);
}

int agent_proto_decode_exec_start(const struct agent_proto_frame *f, struct agent_proto_exec_start *m,
				  const char **ptrs, size_t nptrs)
{
	struct list_count lc = { { 0, 0 }, 0 };
	const uint8_t *p = f->payload, *v;
	size_t left = f->hdr.length;
	uint32_t na = 0, ne = 0, len;
	const char **argv, **env;
	uint16_t tag;
	int err;

	if (f->hdr.type != AGENT_PROTO_EXEC_START)
		return -ENOMSG;
	memset(m, 0, sizeof(*m));
	err = decode_fields(&s_exec_start, p, left, m, &lc);
	if (err)
		return err;
	if (!exec_ok(m))
		return -EINVAL;
	if (nptrs < (size_t)lc.entries[0] + lc.entries[1] + 2)
		return -ENOSPC;
	argv = ptrs;
	env = ptrs + lc.entries[0] + 1;
	/* Second pass: the first one proved every element well formed. */
	while (tlv_next(&p, &left, &tag, &v, &len) > 0) {
		if (tag == TAG_ARG) {
			argv[na++] = (const char *)v;
		} else if (tag == TAG_ENV) {
			if (!env_entry_ok((const char *)v))
				return -EINVAL;
			env[ne++] = (const char *)v;
		}
	}
	argv[na] = NULL;
	env[ne] = NULL;
	m->argv = argv;
	m->argc = na;
	m->env = env;
	m->envc = ne;
	return 0;
}

int agent_proto_encode_exec_started(void *buf, size_t cap, uint32_t stream,
				    const struct agent_proto_exec_started *m, size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_EXEC_STARTED, stream, &s_exec_started, m, len);
}

int agent_proto_decode_exec_started(const struct agent_proto_frame *f,
				    struct agent_proto_exec_started *m)
{
	return decode_msg(f, &s_exec_started, m, sizeof(*m));
}

int agent_proto_encode_data(void *buf, size_t cap, uint8_t type, uint32_t stream,
			    const struct agent_proto_data *m, size_t *len)
{
	return encode_msg(buf, cap, type, stream, &s_data, m, len);
}

int agent_proto_decode_data(const struct agent_proto_frame *f, struct agent_proto_data *m)
{
	return decode_msg(f, &s_data, m, sizeof(*m));
}

int agent_proto_encode_window(void *buf, size_t cap, uint32_t stream, const struct agent_proto_window *m,
			      size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_WINDOW, stream, &s_window, m, len);
}

int agent_proto_decode_window(const struct agent_proto_frame *f, struct agent_proto_window *m)
{
	return decode_msg(f, &s_window, m, sizeof(*m));
}

int agent_proto_encode_signal(void *buf, size_t cap, uint32_t stream, const struct agent_proto_signal *m,
			      size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_SIGNAL, stream, &s_signal, m, len);
}

int agent_proto_decode_signal(const struct agent_proto_frame *f, struct agent_proto_signal *m)
{
	return decode_msg(f, &s_signal, m, sizeof(*m));
}

int agent_proto_encode_exit(void *buf, size_t cap, uint32_t stream, const struct agent_proto_exit *m,
			    size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_EXIT, stream, &s_exit, m, len);
}

int agent_proto_decode_exit(const struct agent_proto_frame *f, struct agent_proto_exit *m)
{
	return decode_msg(f, &s_exit, m, sizeof(*m));
}

int agent_proto_encode_file_read(void *buf, size_t cap, uint32_t stream,
				 const struct agent_proto_file_read *m, size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_FILE_READ, stream, &s_file_read, m, len);
}

int agent_proto_decode_file_read(const struct agent_proto_frame *f, struct agent_proto_file_read *m)
{
	return decode_msg(f, &s_file_read, m, sizeof(*m));
}

int agent_proto_encode_file_data(void *buf, size_t cap, uint32_t stream,
				 const struct agent_proto_file_data *m, size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_FILE_DATA, stream, &s_file_data, m, len);
}

int agent_proto_decode_file_data(const struct agent_proto_frame *f, struct agent_proto_file_data *m)
{
	return decode_msg(f, &s_file_data, m, sizeof(*m));
}

int agent_proto_encode_file_write(void *buf, size_t cap, uint32_t stream,
				  const struct agent_proto_file_write *m, size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_FILE_WRITE, stream, &s_file_write, m, len);
}

int agent_proto_decode_file_write(const struct agent_proto_frame *f, struct agent_proto_file_write *m)
{
	return decode_msg(f, &s_file_write, m, sizeof(*m));
}

int agent_proto_encode_path(void *buf, size_t cap, uint8_t type, uint32_t stream,
			    const struct agent_proto_path *m, size_t *len)
{
	return encode_msg(buf, cap, type, stream, &s_path, m, len);
}

int agent_proto_decode_path(const struct agent_proto_frame *f, struct agent_proto_path *m)
{
	return decode_msg(f, &s_path, m, sizeof(*m));
}

int agent_proto_encode_stat_result(void *buf, size_t cap, uint32_t stream,
				   const struct agent_proto_stat_result *m, size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_STAT_RESULT, stream, &s_stat_result, m, len);
}

int agent_proto_decode_stat_result(const struct agent_proto_frame *f, struct agent_proto_stat_result *m)
{
	return decode_msg(f, &s_stat_result, m, sizeof(*m));
}

/* A name that is not one plain component would let a hostile agent point the host elsewhere. */
static bool name_ok(const char *name)
{
	return !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

int agent_proto_encode_list_entry(void *buf, size_t cap, uint32_t stream,
				  const struct agent_proto_list_entry *m, size_t *len)
{
	if (m->name && !name_ok(m->name))
		return -EINVAL;
	return encode_msg(buf, cap, AGENT_PROTO_LIST_ENTRY, stream, &s_list_entry, m, len);
}

int agent_proto_decode_list_entry(const struct agent_proto_frame *f, struct agent_proto_list_entry *m)
{
	int err = decode_msg(f, &s_list_entry, m, sizeof(*m));

	if (err == 0 && !name_ok(m->name))
		err = -EINVAL;
	return err;
}

int agent_proto_encode_mkdir(void *buf, size_t cap, uint32_t stream, const struct agent_proto_mkdir *m,
			     size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_MKDIR, stream, &s_mkdir, m, len);
}

int agent_proto_decode_mkdir(const struct agent_proto_frame *f, struct agent_proto_mkdir *m)
{
	return decode_msg(f, &s_mkdir, m, sizeof(*m));
}

int agent_proto_encode_remove(void *buf, size_t cap, uint32_t stream, const struct agent_proto_remove *m,
			      size_t *len)
{
	return encode_msg(buf, cap, AGENT_PROTO_REMOVE, stream, &s_remove, m, len);
}

int agent_proto_decode_remove(const struct agent_proto_frame *f, struct agent_proto_remove *m)
{
	return decode_msg(f, &s_remove, m, sizeof(*m));
}
