/*
 * Sealed state files (vmm/snapshot/state_seal.h): a state file round trips
 * through the envelope with nothing of it in clear; another key, a flipped
 * bit anywhere, a truncated or extended file, another version and a file
 * too short to be an envelope are each refused, and a refused file hands
 * nothing on.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "snapshot/state_seal.h"

static const uint8_t key_a[32] = "0123456789abcdef0123456789abcde";
static const uint8_t key_b[32] = "0123456789abcdef0123456789abcdX";
static const char marker[] = "XSAVE-SECRET-MARKER-91c2";

static uint8_t *clear_file(size_t len)
{
	uint8_t *b = malloc(len);

	assert_non_null(b);
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(i * 7 + 3);
	memcpy(b + len / 2, marker, sizeof(marker) - 1);
	return b;
}

static uint8_t *sealed_file(const uint8_t *key, const uint8_t *clear, size_t len)
{
	uint8_t *s = malloc(len + STATE_SEAL_OVERHEAD);

	assert_non_null(s);
	assert_int_equal(state_seal(key, clear, len, s), 0);
	return s;
}

static void round_trip(void **state)
{
	const size_t len = 20000;
	uint8_t *clear = clear_file(len), *s = sealed_file(key_a, clear, len), *out = malloc(len);
	uint8_t *again = sealed_file(key_a, clear, len);
	size_t out_len = 0;
	char why[160];

	(void)state;
	assert_true(state_seal_is_sealed(s, len + STATE_SEAL_OVERHEAD));
	assert_false(state_seal_is_sealed(clear, len));
	assert_null(memmem(s, len + STATE_SEAL_OVERHEAD, marker, sizeof(marker) - 1));
	/* A fresh salt and nonce per file: the same state never seals to the same bytes. */
	assert_memory_not_equal(s, again, len + STATE_SEAL_OVERHEAD);
	assert_int_equal(state_unseal(key_a, s, len + STATE_SEAL_OVERHEAD, out, &out_len, why, sizeof(why)), 0);
	assert_int_equal(out_len, len);
	assert_memory_equal(out, clear, len);
	free(clear);
	free(s);
	free(again);
	free(out);
}

static void refusals(void **state)
{
	const size_t len = 3000, slen = len + STATE_SEAL_OVERHEAD;
	uint8_t *clear = clear_file(len), *s = sealed_file(key_a, clear, len), *out = malloc(slen), *bad = malloc(slen + 1);
	size_t out_len = 99;
	char why[160];

	(void)state;
	assert_int_equal(state_unseal(key_b, s, slen, out, &out_len, why, sizeof(why)), -EBADMSG);
	assert_int_equal(out_len, 0);
	assert_non_null(strstr(why, "another key"));
	assert_null(memmem(out, len, marker, sizeof(marker) - 1));
	/* Every bit of header, ciphertext and tag is covered. */
	for (size_t i = 0; i < slen; i += (i < STATE_SEAL_HEADER_BYTES || i >= slen - STATE_SEAL_TAG_BYTES) ? 1 : 97) {
		int r;

		memcpy(bad, s, slen);
		bad[i] ^= 0x10;
		r = state_unseal(key_a, bad, slen, out, &out_len, why, sizeof(why));
		assert_true(r == -EBADMSG || r == -EINVAL);
		assert_int_equal(out_len, 0);
	}
	assert_int_equal(state_unseal(key_a, s, slen - 1, out, &out_len, why, sizeof(why)), -EBADMSG);
	memcpy(bad, s, slen);
	bad[slen] = 0;
	assert_int_equal(state_unseal(key_a, bad, slen + 1, out, &out_len, why, sizeof(why)), -EBADMSG);
	memcpy(bad, s, slen);
	bad[8] = 2;
	assert_int_equal(state_unseal(key_a, bad, slen, out, &out_len, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "version 2"));
	for (size_t n = 0; n < STATE_SEAL_OVERHEAD; n++)
		assert_int_equal(state_unseal(key_a, s, n, out, &out_len, why, sizeof(why)), -EINVAL);
	assert_int_equal(state_unseal(key_a, clear, len, out, &out_len, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "not a sealed state file"));
	free(clear);
	free(s);
	free(out);
	free(bad);
}

/* An empty state seals and opens (the envelope alone). */
static void empty(void **state)
{
	uint8_t s[STATE_SEAL_OVERHEAD], out[1];
	size_t out_len = 5;
	char why[160];

	(void)state;
	assert_int_equal(state_seal(key_a, NULL, 0, s), 0);
	assert_int_equal(state_unseal(key_a, s, sizeof(s), out, &out_len, why, sizeof(why)), 0);
	assert_int_equal(out_len, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip),
		cmocka_unit_test(refusals),
		cmocka_unit_test(empty),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
