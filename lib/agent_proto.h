#ifndef SANDVM_LIB_AGENT_PROTO_H
#define SANDVM_LIB_AGENT_PROTO_H

/*
 * Wire format between the host and the guest agent (vsock stream). Shared by
 * both sides; docs/agent-protocol.md is the contract this file implements.
 *
 * Everything here is a pure function over caller buffers: no allocation, no
 * I/O, no globals. Every decoded pointer (strings, byte ranges) points into
 * the frame payload it was decoded from, so the payload must outlive the
 * decoded struct. Strings on the wire carry their own NUL terminator, which is
 * what makes them usable in place as C strings.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_PROTO_MAGIC 0x5653u /* "SV" as a little-endian u16 */
#define AGENT_PROTO_VERSION 1u
#define AGENT_PROTO_VERSION_MIN 1u
#define AGENT_PROTO_VERSION_MAX 1u
#define AGENT_PROTO_HEADER_SIZE 16u
#define AGENT_PROTO_MAX_PAYLOAD (1u << 20)
#define AGENT_PROTO_MAX_FRAME (AGENT_PROTO_HEADER_SIZE + AGENT_PROTO_MAX_PAYLOAD)
#define AGENT_PROTO_TLV_HEADER_SIZE 6u
/* Longest string, not counting its NUL terminator. */
#define AGENT_PROTO_MAX_STRING 65535u
/* Caps on EXEC_START: argv and env entries together, and their bytes with NULs. */
#define AGENT_PROTO_MAX_ARGS 4096u
#define AGENT_PROTO_MAX_ARGS_BYTES 65536u
/* Pointer slots agent_proto_decode_exec_start needs: both lists plus two NULLs. */
#define AGENT_PROTO_EXEC_PTRS (AGENT_PROTO_MAX_ARGS + 2u)
/* Flow-control credit each data direction of an exec stream starts with. */
#define AGENT_PROTO_INITIAL_WINDOW (256u * 1024u)

enum agent_proto_type {
	AGENT_PROTO_HELLO = 0x01,
	AGENT_PROTO_PING = 0x02,
	AGENT_PROTO_PONG = 0x03,
	AGENT_PROTO_SHUTDOWN = 0x04,
	AGENT_PROTO_RESTORED = 0x05,
	AGENT_PROTO_OK = 0x08,
	AGENT_PROTO_ERROR = 0x09,
	AGENT_PROTO_EXEC_START = 0x10,
	AGENT_PROTO_EXEC_STARTED = 0x11,
	AGENT_PROTO_STDIN = 0x12,
	AGENT_PROTO_STDIN_CLOSE = 0x13,
	AGENT_PROTO_STDOUT = 0x14,
	AGENT_PROTO_STDERR = 0x15,
	AGENT_PROTO_WINDOW = 0x16,
	AGENT_PROTO_SIGNAL = 0x17,
	AGENT_PROTO_EXIT = 0x18,
	AGENT_PROTO_FILE_READ = 0x20,
	AGENT_PROTO_FILE_DATA = 0x21,
	AGENT_PROTO_FILE_WRITE = 0x22,
	AGENT_PROTO_FILE_STAT = 0x23,
	AGENT_PROTO_STAT_RESULT = 0x24,
	AGENT_PROTO_FILE_LIST = 0x25,
	AGENT_PROTO_LIST_ENTRY = 0x26,
	AGENT_PROTO_LIST_END = 0x27,
	AGENT_PROTO_MKDIR = 0x28,
	AGENT_PROTO_REMOVE = 0x29,
};

/* EXEC_START flags */
#define AGENT_PROTO_EXEC_PTY 0x1u
/* WINDOW directions */
enum { AGENT_PROTO_DIR_STDIN = 0, AGENT_PROTO_DIR_STDOUT = 1, AGENT_PROTO_DIR_STDERR = 2 };
/* EXIT kinds; code is the exit status, or the signal number otherwise. */
enum { AGENT_PROTO_EXIT_EXITED = 0, AGENT_PROTO_EXIT_SIGNALED = 1, AGENT_PROTO_EXIT_TIMED_OUT = 2 };
/* FILE_DATA flags */
#define AGENT_PROTO_DATA_EOF 0x1u  /* the end of the file was reached */
#define AGENT_PROTO_DATA_LAST 0x2u /* last FILE_DATA of this reply */
/* FILE_WRITE flags */
#define AGENT_PROTO_WRITE_CREATE 0x1u
#define AGENT_PROTO_WRITE_TRUNCATE 0x2u
#define AGENT_PROTO_WRITE_APPEND 0x4u
#define AGENT_PROTO_WRITE_FINAL 0x8u
/* MKDIR and REMOVE flags */
#define AGENT_PROTO_MKDIR_PARENTS 0x1u
#define AGENT_PROTO_REMOVE_RECURSIVE 0x1u
/* File types in STAT_RESULT and LIST_ENTRY */
enum {
	AGENT_PROTO_FT_OTHER = 0,
	AGENT_PROTO_FT_REGULAR = 1,
	AGENT_PROTO_FT_DIRECTORY = 2,
	AGENT_PROTO_FT_SYMLINK = 3,
};
/*
 * HELLO features: what a peer supports beyond the base protocol of its
 * version. A sender of a request that needs one checks the peer announced it;
 * unknown bits are ignored.
 */
#define AGENT_PROTO_FEATURE_RESTORED 0x1u
/* RESTORED bounds */
#define AGENT_PROTO_RESTORED_ENTROPY 64u /* bytes of entropy, exactly */
#define AGENT_PROTO_HOSTNAME_MAX 64u     /* HOST_NAME_MAX */
#define AGENT_PROTO_MACHINE_ID_LEN 32u   /* lowercase hex digits */
/* Longest net, net6 or dns value ("ADDR/PREFIX,GATEWAY" of two IPv6 addresses fits). */
#define AGENT_PROTO_NET_SPEC_MAX 127u
/* SHUTDOWN actions */
enum { AGENT_PROTO_POWEROFF = 0, AGENT_PROTO_REBOOT = 1 };

/*
 * ERROR codes: fixed numbers (the Linux generic errno values), so they mean
 * the same on both sides whatever libc either one was built with.
 */
enum {
	AGENT_PROTO_EPERM = 1,
	AGENT_PROTO_ENOENT = 2,
	AGENT_PROTO_EIO = 5,
	AGENT_PROTO_E2BIG = 7,
	AGENT_PROTO_ENOMEM = 12,
	AGENT_PROTO_EACCES = 13,
	AGENT_PROTO_EBUSY = 16,
	AGENT_PROTO_EEXIST = 17,
	AGENT_PROTO_ENOTDIR = 20,
	AGENT_PROTO_EISDIR = 21,
	AGENT_PROTO_EINVAL = 22,
	AGENT_PROTO_EFBIG = 27,
	AGENT_PROTO_ENOSPC = 28,
	AGENT_PROTO_ENAMETOOLONG = 36,
	AGENT_PROTO_ENOSYS = 38,
	AGENT_PROTO_ENOTEMPTY = 39,
	AGENT_PROTO_EPROTO = 71,
	AGENT_PROTO_ETIMEDOUT = 110,
};

struct agent_proto_header {
	uint8_t version;
	uint8_t type;
	uint16_t flags; /* none defined in version 1: sent as 0, ignored on receipt */
	uint32_t stream;
	uint32_t length; /* payload bytes after the header */
};

/* A complete frame; payload points into the reader's (or caller's) buffer. */
struct agent_proto_frame {
	struct agent_proto_header hdr;
	const uint8_t *payload;
};

struct agent_proto_hello {
	uint32_t min_version;
	uint32_t max_version;
	const char *name; /* e.g. "sandvm-agent 1.2"; may be empty */
	uint32_t features; /* AGENT_PROTO_FEATURE_*; optional on the wire, 0 when absent */
};

/* PING and PONG */
struct agent_proto_ping {
	uint64_t token;
};

struct agent_proto_exec_start {
	/* Each list is NULL-terminated: argv[argc] == NULL, env[envc] == NULL. */
	const char *const *argv;
	uint32_t argc; /* >= 1 */
	const char *const *env; /* "KEY=VALUE", KEY non-empty */
	uint32_t envc;
	const char *workdir; /* NULL: the agent's default */
	uint32_t uid;
	uint32_t gid;
	uint32_t flags;      /* AGENT_PROTO_EXEC_* */
	uint32_t timeout_ms; /* 0: none */
	uint32_t rows;       /* terminal size, non-zero when AGENT_PROTO_EXEC_PTY */
	uint32_t cols;
};

struct agent_proto_exec_started {
	uint32_t pid;
};

/* STDIN, STDOUT, STDERR */
struct agent_proto_data {
	const uint8_t *data;
	uint32_t len;
};

struct agent_proto_window {
	uint32_t direction; /* AGENT_PROTO_DIR_* */
	uint32_t credit;    /* bytes added to the window */
};

struct agent_proto_signal {
	uint32_t signo; /* 1..64 */
};

struct agent_proto_exit {
	uint32_t kind; /* AGENT_PROTO_EXIT_* */
	uint32_t code;
};

struct agent_proto_file_read {
	const char *path;
	uint64_t offset;
	uint32_t max_len;
};

struct agent_proto_file_data {
	uint32_t flags; /* AGENT_PROTO_DATA_* */
	const uint8_t *data;
	uint32_t len;
};

struct agent_proto_file_write {
	const char *path;
	uint32_t mode; /* permission bits, 07777 at most; used when the file is created */
	uint32_t flags; /* AGENT_PROTO_WRITE_* */
	const uint8_t *data;
	uint32_t len;
};

/* FILE_STAT and FILE_LIST */
struct agent_proto_path {
	const char *path;
};

struct agent_proto_stat_result {
	uint32_t type; /* AGENT_PROTO_FT_* */
	uint32_t mode; /* permission bits */
	uint64_t size;
	int64_t mtime; /* seconds since the epoch */
	uint32_t uid;
	uint32_t gid;
};

struct agent_proto_list_entry {
	const char *name; /* one path component: no '/' */
	uint32_t type;
	uint64_t size;
};

struct agent_proto_mkdir {
	const char *path;
	uint32_t mode;
	uint32_t flags; /* AGENT_PROTO_MKDIR_* */
};

struct agent_proto_remove {
	const char *path;
	uint32_t flags; /* AGENT_PROTO_REMOVE_* */
};

struct agent_proto_error {
	uint32_t code;       /* AGENT_PROTO_E* */
	const char *message; /* NULL when absent */
};

struct agent_proto_shutdown {
	uint32_t action; /* AGENT_PROTO_POWEROFF or AGENT_PROTO_REBOOT */
};

/*
 * RESTORED: the VM was restored from a snapshot; the guest takes a fresh
 * identity before any user code runs. Optional strings are NULL when absent;
 * every present one is validated by the decoder (and refused by the encoder)
 * with the helpers below.
 */
struct agent_proto_restored {
	const uint8_t *entropy; /* AGENT_PROTO_RESTORED_ENTROPY bytes from the host's getrandom */
	uint32_t entropy_len;
	uint64_t realtime_ns; /* host CLOCK_REALTIME, ns since the epoch: 1..INT64_MAX */
	const char *hostname;   /* agent_proto_hostname_ok */
	const char *machine_id; /* agent_proto_machine_id_ok */
	const char *net;        /* IPv4 "ADDR/PREFIX,GATEWAY", as sandvm.net= */
	const char *net6;       /* IPv6 likewise, as sandvm.net6= */
	const char *mac;        /* "aa:bb:cc:dd:ee:ff", unicast, not all zero */
	const char *dns;        /* one IPv4 or IPv6 address, as sandvm.dns= */
};

/* An address and prefix with a gateway, parsed from "ADDR/PREFIX,GATEWAY". */
struct agent_proto_net {
	int af;          /* AF_INET or AF_INET6 */
	unsigned prefix; /* 0..32 or 0..128 */
	uint8_t addr[16]; /* network order; 4 bytes used for AF_INET */
	uint8_t gw[16];
};

/* "EXEC_START", or "UNKNOWN" for a type this version does not define. */
const char *agent_proto_type_name(uint8_t type);

/*
 * Header codec. encode returns -EINVAL for an unknown type, a stream id the
 * type may not use or a length over AGENT_PROTO_MAX_PAYLOAD. decode checks,
 * in this order: -ENODATA fewer than 16 bytes, -EBADMSG bad magic,
 * -EPROTONOSUPPORT version, -EPROTO reserved field not zero, -EMSGSIZE
 * length over the maximum, -ENOMSG unknown type, -EBADR stream id not
 * allowed for the type (connection-level types use 0, exec and file types
 * non-zero).
 */
int agent_proto_encode_header(const struct agent_proto_header *h, uint8_t out[AGENT_PROTO_HEADER_SIZE]);
int agent_proto_decode_header(const void *buf, size_t len, struct agent_proto_header *h);

/*
 * Incremental frame decoder for a byte stream. The caller supplies the
 * payload buffer; frames whose payload exceeds it (or AGENT_PROTO_MAX_PAYLOAD)
 * are refused with -EMSGSIZE as soon as their header arrives, so nothing
 * beyond one frame is ever buffered.
 */
struct agent_proto_reader {
	uint8_t hdr_buf[AGENT_PROTO_HEADER_SIZE];
	size_t hdr_len;
	struct agent_proto_header hdr;
	uint8_t *buf;
	size_t cap;
	size_t have; /* payload bytes of the current frame so far */
	int err;     /* sticky: a byte stream cannot resynchronise */
};

void agent_proto_reader_init(struct agent_proto_reader *r, void *buf, size_t cap);

/*
 * Consumes bytes until one frame is complete or data runs out; *used says
 * how many. Returns 1 with *frame filled when a frame completed (its payload
 * stays valid until the next feed), 0 when all bytes were consumed without
 * completing one, or a header error as agent_proto_decode_header returns it
 * (and the same error on every later call).
 */
int agent_proto_reader_feed(struct agent_proto_reader *r, const void *data, size_t len,
			    size_t *used, struct agent_proto_frame *frame);

/*
 * Message codecs. Encoders write a whole frame (header and payload) to buf
 * and set *len; -ENOSPC if cap is too small, -EINVAL for a value the decoder
 * would refuse, -EMSGSIZE if the payload would exceed the maximum. Where one
 * struct serves several types, the encoder takes the type.
 *
 * Decoders take a frame of the matching type (-ENOMSG otherwise) and fill
 * the struct with pointers into frame->payload. Payload errors: -EBADMSG a
 * TLV runs past the payload, -EINVAL a value of the wrong size, out of range
 * or an invalid string, -ENOTUNIQ a singular tag repeated, -ENOENT a required
 * tag missing, -E2BIG argv/env over their caps. Unknown tags are skipped.
 */
int agent_proto_encode_empty(void *buf, size_t cap, uint8_t type, uint32_t stream, size_t *len);
int agent_proto_decode_empty(const struct agent_proto_frame *f); /* STDIN_CLOSE, LIST_END, OK */

int agent_proto_encode_hello(void *buf, size_t cap, const struct agent_proto_hello *m, size_t *len);
int agent_proto_decode_hello(const struct agent_proto_frame *f, struct agent_proto_hello *m);
int agent_proto_encode_ping(void *buf, size_t cap, uint8_t type, const struct agent_proto_ping *m,
			    size_t *len);
int agent_proto_decode_ping(const struct agent_proto_frame *f, struct agent_proto_ping *m);
int agent_proto_encode_shutdown(void *buf, size_t cap, const struct agent_proto_shutdown *m,
				size_t *len);
int agent_proto_decode_shutdown(const struct agent_proto_frame *f, struct agent_proto_shutdown *m);
int agent_proto_encode_error(void *buf, size_t cap, uint32_t stream, const struct agent_proto_error *m,
			     size_t *len);
int agent_proto_decode_error(const struct agent_proto_frame *f, struct agent_proto_error *m);
/* RESTORED uses a request stream (non-zero); the reply is OK or ERROR on it. */
int agent_proto_encode_restored(void *buf, size_t cap, uint32_t stream,
				const struct agent_proto_restored *m, size_t *len);
int agent_proto_decode_restored(const struct agent_proto_frame *f, struct agent_proto_restored *m);

/*
 * Value checks shared by the RESTORED codec, the agent's kernel command line
 * (sandvm.net=, sandvm.net6=, sandvm.dns=) and the host. They take a length
 * because command-line values are not NUL-terminated.
 *
 * hostname: 1..64 bytes, dot-separated labels of 1..63 letters, digits and
 * '-', no label starting or ending with '-'. machine_id: 32 lowercase hex
 * digits, not all zero. mac: six two-digit hex bytes separated by ':', not
 * multicast, not all zero. net: "ADDR/PREFIX,GATEWAY" of family af, PREFIX
 * decimal without sign or leading zeros. addr: one IPv4 or IPv6 address.
 * The parsers return 0 or -EINVAL.
 */
bool agent_proto_hostname_ok(const char *s, size_t len);
bool agent_proto_machine_id_ok(const char *s, size_t len);
int agent_proto_parse_mac(const char *s, size_t len, uint8_t mac[6]);
int agent_proto_parse_net(const char *s, size_t len, int af, struct agent_proto_net *out);
int agent_proto_parse_addr(const char *s, size_t len, int *af, uint8_t addr[16]);

/*
 * The value of KEY=VALUE standing as a whole word of a kernel command line
 * (the host writes sandvm.* words, the agent reads them), with its length up
 * to the next space or newline; NULL when absent.
 */
const char *agent_proto_cmdline_word(const char *cmdline, const char *key, size_t *len);

int agent_proto_encode_exec_start(void *buf, size_t cap, uint32_t stream,
				  const struct agent_proto_exec_start *m, size_t *len);
/*
 * ptrs (nptrs >= argc + envc + 2; AGENT_PROTO_EXEC_PTRS always suffices, else
 * -ENOSPC) holds the argv and env arrays; the strings stay in the payload.
 * The agent may cast the lists to char *const * for execve: nothing writes.
 */
int agent_proto_decode_exec_start(const struct agent_proto_frame *f, struct agent_proto_exec_start *m,
				  const char **ptrs, size_t nptrs);
int agent_proto_encode_exec_started(void *buf, size_t cap, uint32_t stream,
				    const struct agent_proto_exec_started *m, size_t *len);
int agent_proto_decode_exec_started(const struct agent_proto_frame *f,
				    struct agent_proto_exec_started *m);
int agent_proto_encode_data(void *buf, size_t cap, uint8_t type, uint32_t stream,
			    const struct agent_proto_data *m, size_t *len);
int agent_proto_decode_data(const struct agent_proto_frame *f, struct agent_proto_data *m);
int agent_proto_encode_window(void *buf, size_t cap, uint32_t stream, const struct agent_proto_window *m,
			      size_t *len);
int agent_proto_decode_window(const struct agent_proto_frame *f, struct agent_proto_window *m);
int agent_proto_encode_signal(void *buf, size_t cap, uint32_t stream, const struct agent_proto_signal *m,
			      size_t *len);
int agent_proto_decode_signal(const struct agent_proto_frame *f, struct agent_proto_signal *m);
int agent_proto_encode_exit(void *buf, size_t cap, uint32_t stream, const struct agent_proto_exit *m,
			    size_t *len);
int agent_proto_decode_exit(const struct agent_proto_frame *f, struct agent_proto_exit *m);

int agent_proto_encode_file_read(void *buf, size_t cap, uint32_t stream,
				 const struct agent_proto_file_read *m, size_t *len);
int agent_proto_decode_file_read(const struct agent_proto_frame *f, struct agent_proto_file_read *m);
int agent_proto_encode_file_data(void *buf, size_t cap, uint32_t stream,
				 const struct agent_proto_file_data *m, size_t *len);
int agent_proto_decode_file_data(const struct agent_proto_frame *f, struct agent_proto_file_data *m);
int agent_proto_encode_file_write(void *buf, size_t cap, uint32_t stream,
				  const struct agent_proto_file_write *m, size_t *len);
int agent_proto_decode_file_write(const struct agent_proto_frame *f, struct agent_proto_file_write *m);
/* FILE_STAT and FILE_LIST */
int agent_proto_encode_path(void *buf, size_t cap, uint8_t type, uint32_t stream,
			    const struct agent_proto_path *m, size_t *len);
int agent_proto_decode_path(const struct agent_proto_frame *f, struct agent_proto_path *m);
int agent_proto_encode_stat_result(void *buf, size_t cap, uint32_t stream,
				   const struct agent_proto_stat_result *m, size_t *len);
int agent_proto_decode_stat_result(const struct agent_proto_frame *f, struct agent_proto_stat_result *m);
int agent_proto_encode_list_entry(void *buf, size_t cap, uint32_t stream,
				  const struct agent_proto_list_entry *m, size_t *len);
int agent_proto_decode_list_entry(const struct agent_proto_frame *f, struct agent_proto_list_entry *m);
int agent_proto_encode_mkdir(void *buf, size_t cap, uint32_t stream, const struct agent_proto_mkdir *m,
			     size_t *len);
int agent_proto_decode_mkdir(const struct agent_proto_frame *f, struct agent_proto_mkdir *m);
int agent_proto_encode_remove(void *buf, size_t cap, uint32_t stream, const struct agent_proto_remove *m,
			      size_t *len);
int agent_proto_decode_remove(const struct agent_proto_frame *f, struct agent_proto_remove *m);

#endif
