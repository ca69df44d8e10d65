#ifndef SANDVM_API_SANDBOXD_FLEET_ETCD_REPLY_H
#define SANDVM_API_SANDBOXD_FLEET_ETCD_REPLY_H

/*
 * etcd v3 JSON-gateway replies, parsed as hostile input: buffer in, struct
 * out, no I/O. What etcd 3.4 writes (tests/unit/data/etcd/ holds real ones):
 * 64-bit numbers as JSON strings of digits, keys and values in base64, a
 * field left out when it is zero or false (a failed txn has no "succeeded",
 * a PUT watch event no "type", a kv with an empty value no "value"),
 * streamed replies (lease keepalive, watch) wrapped in {"result": ...}, and
 * errors as {"error": "...", "code": N} (or, on a stream, "error" as an
 * object with "grpc_code" and "message").
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "etcd.h"

/* kvs (or watch events) in one reply; a reply is at most ETCD_REPLY_MAX bytes anyway. */
#define ETCD_REPLY_KVS_MAX (1u << 18)
#define ETCD_REPLY_ERROR_MAX 256

enum etcd_reply_kind {
	ETCD_REPLY_HEADER,    /* put, delete, lease revoke: only the header matters */
	ETCD_REPLY_LEASE,     /* lease grant: ID, TTL at the top */
	ETCD_REPLY_KEEPALIVE, /* lease keepalive: {"result": {ID, TTL}}; no TTL or 0: gone */
	ETCD_REPLY_RANGE,     /* range: kvs, header.revision */
	ETCD_REPLY_TXN,       /* txn: succeeded, responses[].response_range.kvs */
	ETCD_REPLY_WATCH,     /* one watch stream message: created, canceled, events */
	ETCD_REPLY_KINDS
};

struct etcd_reply {
	int64_t revision; /* header.revision (0 when absent: a canceled watch has none) */
	/* An error reply: its gRPC code (>= 0) and message; -1 when the reply is no error. */
	int error_code;
	char error[ETCD_REPLY_ERROR_MAX];
	int64_t lease;    /* lease grant and keepalive: ID */
	int64_t ttl;      /* and TTL, 0 when absent */
	bool succeeded;   /* txn; absent means false */
	bool created, canceled; /* watch */
	int64_t compact_revision; /* a watch canceled because its start was compacted */
	struct etcd_kv *kvs; /* range, the failed txn's range, watch events' kvs */
	bool *deleted;       /* watch: per kv, a DELETE event */
	size_t nkvs;
	char *arena;         /* decoded keys and values, each NUL-terminated */
};

/*
 * Parses one reply of kind. 0 (an error reply is parsed too: error_code >= 0),
 * or -EPROTO with a reason in err (out is then empty). etcd_reply_free after
 * either.
 */
int etcd_reply_parse(enum etcd_reply_kind kind, const char *buf, size_t len, struct etcd_reply *out, char *err,
		     size_t errlen);
void etcd_reply_free(struct etcd_reply *r);

/* An error reply's code as -errno: NotFound -ENOENT, DeadlineExceeded -ETIMEDOUT, Unavailable -EAGAIN, ... */
int etcd_reply_errno(int code);

/*
 * A stream of JSON objects one after another (a watch reply's body):
 * the length of the first complete object in buf, leading whitespace
 * included; 0 while it is incomplete; -EPROTO if buf does not start one
 * (after whitespace). Strings and escapes are honoured, so a brace in a
 * string does not count.
 */
long etcd_reply_split(const char *buf, size_t len);

/* Strict standard base64 (with padding). The decoded length, or -EINVAL. out holds at least len / 4 * 3. */
long etcd_base64_decode(const char *in, size_t len, unsigned char *out);

#endif
