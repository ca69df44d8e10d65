/*
 * etcd_reply.c on any bytes: the first byte picks the reply kind, the rest
 * is the reply. Every kv a parse returns has a non-empty, NUL-terminated key
 * inside the reply's arena; the stream splitter never claims more bytes than
 * it was given, and what it splits off parses or fails, never crashes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/etcd_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct etcd_reply r;
	const char *body = (const char *)data + 1;
	size_t len = size ? size - 1 : 0;
	char err[128];
	long m;

	if (size == 0)
		return 0;
	if (etcd_reply_parse((enum etcd_reply_kind)(data[0] % (ETCD_REPLY_KINDS + 1)), body, len, &r, err,
			     sizeof(err)) == 0) {
		for (size_t i = 0; i < r.nkvs; i++)
			if (r.kvs[i].key_len == 0 || r.kvs[i].key[r.kvs[i].key_len] != '\0' ||
			    r.kvs[i].value[r.kvs[i].value_len] != '\0')
				abort();
	} else if (r.kvs || r.nkvs) {
		abort();
	}
	etcd_reply_free(&r);
	/* The watch stream: split off messages one by one, as the client does. */
	while (len && (m = etcd_reply_split(body, len)) > 0) {
		if ((size_t)m > len)
			abort();
		if (etcd_reply_parse(ETCD_REPLY_WATCH, body, (size_t)m, &r, err, sizeof(err)) == 0)
			etcd_reply_free(&r);
		else
			etcd_reply_free(&r);
		body += m;
		len -= (size_t)m;
	}
	return 0;
}
