/*
 * The ALPN choice of tunnel connections (api/sandboxd/tunnel_serve.c): h2
 * required for h2 tunnels, http/1.1 when offered for the others, http/1.1
 * required (when ALPN is offered) for connect-token names; malformed lists
 * offer nothing.
 */
#include <errno.h>
#include <string.h>

#include "tunnel_serve.h"
#include "unit.h"

#define L(s) ((const unsigned char *)(s)), (unsigned)(sizeof(s) - 1)

static int choose(int kind, const unsigned char *in, unsigned len, char *got)
{
	const unsigned char *out = NULL;
	unsigned char outlen = 0;
	int r = tunnel_alpn_choose(kind, in, len, &out, &outlen);

	got[0] = '\0';
	if (r == 0) {
		assert_true(out >= in && out + outlen <= in + len);
		memcpy(got, out, outlen);
		got[outlen] = '\0';
	}
	return r;
}

static void h2_tunnels(void **state)
{
	char got[64];

	(void)state;
	assert_int_equal(choose(TUNNEL_H2, L("\x08http/1.1\x02h2"), got), 0);
	assert_string_equal(got, "h2");
	assert_int_equal(choose(TUNNEL_H2, L("\x08http/1.1"), got), -EPROTO);
	assert_int_equal(choose(TUNNEL_H2, L(""), got), -EPROTO);
}

static void byte_tunnels(void **state)
{
	char got[64];

	(void)state;
	assert_int_equal(choose(TUNNEL_ENCRYPTED, L("\x02h2\x08http/1.1"), got), 0);
	assert_string_equal(got, "http/1.1");
	assert_int_equal(choose(TUNNEL_UNENCRYPTED, L("\x02h2"), got), 1);
	assert_int_equal(choose(TUNNEL_ENCRYPTED, L("\x03xyz"), got), 1);
}

static void token_names(void **state)
{
	char got[64];

	(void)state;
	assert_int_equal(choose(-1, L("\x02h2\x08http/1.1"), got), 0);
	assert_string_equal(got, "http/1.1");
	assert_int_equal(choose(-1, L("\x02h2"), got), -EPROTO);
}

static void malformed_lists(void **state)
{
	char got[64];

	(void)state;
	/* A length past the end, a zero length, a truncated protocol. */
	assert_int_equal(choose(TUNNEL_H2, L("\x09h2"), got), -EPROTO);
	assert_int_equal(choose(TUNNEL_H2, L("\x00\x02h2"), got), -EPROTO);
	assert_int_equal(choose(-1, L("\x08http/1."), got), -EPROTO);
	assert_int_equal(choose(TUNNEL_ENCRYPTED, L("\xff"), got), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(h2_tunnels),
		cmocka_unit_test(byte_tunnels),
		cmocka_unit_test(token_names),
		cmocka_unit_test(malformed_lists),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
