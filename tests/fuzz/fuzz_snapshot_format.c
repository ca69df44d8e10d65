/*
 * libFuzzer target: snapshot state files (vmm/snapshot/format.h). The file
 * comes from the host's own store, but a damaged or planted one must only
 * ever be refused, never read past its end or half trusted.
 *
 * Input: byte 0 = mode, then the file. Mode bit 0 set: the length field and
 * END's hash are fixed up first (when the file is long enough to hold them),
 * so mutations reach the checks behind the hash. An accepted file must come
 * out of the writer byte for byte from its own records, in their order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "snapshot/format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct snap_record recs[SNAP_MAX_RECORDS];

static void fix_up(uint8_t *b, size_t len)
{
	uint64_t flen = len;
	unsigned int n;

	if (len < SNAP_HEADER_SIZE + SNAP_RECORD_HEADER_SIZE + SNAP_HASH_SIZE)
		return;
	memcpy(b + 16, &flen, sizeof(flen));
	EVP_Digest(b, len - SNAP_HASH_SIZE - SNAP_RECORD_HEADER_SIZE, b + len - SNAP_HASH_SIZE, &n, EVP_sha256(),
		   NULL);
}

static void check_accepted(const uint8_t *b, size_t len, unsigned nrecs)
{
	struct snap_writer w;

	snap_writer_init(&w);
	for (unsigned i = 0; i < nrecs; i++) {
		const struct snap_record *r = &recs[i];

		if (r->data < b + SNAP_HEADER_SIZE + SNAP_RECORD_HEADER_SIZE || r->data + r->len > b + len ||
		    (r->data - b) % 8 || snap_find(recs, nrecs, r->type, r->instance) != r)
			abort();
		if (snap_put(&w, r->type, r->instance, r->data, r->len) != 0)
			abort();
	}
	if (snap_writer_finish(&w) != 0 || w.len != len || memcmp(w.buf, b, len) != 0)
		abort();
	snap_writer_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[160];
	unsigned nrecs;
	uint8_t *b;
	size_t len;

	if (size < 1)
		return 0;
	len = size - 1;
	/* A copy of its own: the parser's pointers must stay inside exactly these bytes. */
	b = malloc(len ? len : 1);
	if (!b)
		return 0;
	memcpy(b, data + 1, len);
	if (data[0] & 1)
		fix_up(b, len);
	if (snap_parse(b, len, recs, SNAP_MAX_RECORDS, &nrecs, err, sizeof(err)) == 0)
		check_accepted(b, len, nrecs);
	else if (!err[0])
		abort(); /* a refusal always says why */
	free(b);
	return 0;
}
