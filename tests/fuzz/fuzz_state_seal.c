/*
 * libFuzzer target: sealed snapshot state files (vmm/snapshot/state_seal.h).
 * A planted or damaged file must be refused without reading past its end;
 * what opens must be exactly what a seal with that key put in.
 *
 * Input: byte 0 = mode. Mode bit 0 set: the rest is a clear state that is
 * sealed, then the byte at offset (byte 1) flipped by byte 2 (when both are
 * non-zero), then opened: it must open to the same bytes exactly when
 * nothing was flipped. Otherwise the rest is opened as a sealed file as it is.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/state_seal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t key[32] = "fuzz-key-fuzz-key-fuzz-key-fuzz";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *out, *s;
	size_t out_len = 0;
	char why[160];
	int r;

	if (size < 3)
		return 0;
	if (data[0] & 1) {
		size_t len = size - 3, slen = len + STATE_SEAL_OVERHEAD;
		size_t at = data[1] % slen;
		uint8_t flip = data[2];

		s = malloc(slen);
		out = malloc(len + 1);
		if (!s || !out || state_seal(key, data + 3, len, s) != 0)
			abort();
		s[at] ^= flip;
		r = state_unseal(key, s, slen, out, &out_len, why, sizeof(why));
		if (flip == 0 && (r != 0 || out_len != len || memcmp(out, data + 3, len)))
			abort();
		if (flip != 0 && r == 0)
			abort();
		free(s);
		free(out);
		return 0;
	}
	out = malloc(size);
	if (!out)
		abort();
	r = state_unseal(key, data + 1, size - 1, out, &out_len, why, sizeof(why));
	if (r == 0 && out_len + STATE_SEAL_OVERHEAD != size - 1)
		abort();
	free(out);
	return 0;
}
