/*
 * Connect tokens (api/sandboxd/connect_token.c): a secret is shown once and
 * kept only hashed; a changed, short, expired or revoked secret opens
 * nothing; a sandbox's set is bounded.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "connect_token.h"
#include "unit.h"

static void new_and_check(void **state)
{
	struct connect_tokens set;
	const struct connect_token *t, *u;
	char secret[CONNECT_TOKEN_SECRET_LEN + 1], other[CONNECT_TOKEN_SECRET_LEN + 1], id[24];

	(void)state;
	connect_tokens_init(&set);
	assert_int_equal(connect_token_new(&set, 8080, "{\"u\":1}", 1000, 0, secret, sizeof(secret), &t), 0);
	assert_int_equal(strlen(secret), CONNECT_TOKEN_SECRET_LEN);
	assert_true(!strncmp(secret, "ct_", 3));
	for (size_t i = 3; i < strlen(secret); i++)
		assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", secret[i]));
	assert_true(!strncmp(t->id, "tok-", 4) && strlen(t->id) == 20);
	snprintf(id, sizeof(id), "%s", t->id);
	assert_int_equal(t->port, 8080);
	assert_string_equal(t->verified, "{\"u\":1}");
	assert_ptr_equal(connect_token_check(&set, secret, 5000), t);
	assert_ptr_equal(connect_token_find(&set, id), t);
	/* The secret is nowhere in the set: only its hash. */
	assert_null(memmem(set.item, set.cap * sizeof(set.item[0]), secret + 3, CONNECT_TOKEN_SECRET_LEN - 3));
	/* Each character matters. */
	for (size_t i = 0; i < CONNECT_TOKEN_SECRET_LEN; i++) {
		snprintf(other, sizeof(other), "%s", secret);
		other[i] = other[i] == 'A' ? 'B' : 'A';
		assert_null(connect_token_check(&set, other, 5000));
	}
	other[CONNECT_TOKEN_SECRET_LEN - 1] = '\0';
	assert_null(connect_token_check(&set, other, 5000));
	assert_null(connect_token_check(&set, "", 5000));
	/* A second token: another secret, another id; both work. */
	assert_int_equal(connect_token_new(&set, 9000, "{}", 1000, 0, other, sizeof(other), &u), 0);
	assert_string_not_equal(secret, other);
	t = connect_token_find(&set, id);
	assert_string_not_equal(t->id, u->id);
	assert_int_equal(connect_token_check(&set, other, 1)->port, 9000);
	assert_int_equal(connect_token_check(&set, secret, 1)->port, 8080);
	/* Revoked: gone. */
	assert_int_equal(connect_token_revoke(&set, id), 0);
	assert_null(connect_token_check(&set, secret, 1));
	assert_int_equal(connect_token_revoke(&set, id), -ENOENT);
	assert_non_null(connect_token_check(&set, other, 1));
	connect_tokens_destroy(&set);
	assert_int_equal(set.count, 0);
}

static void ttl(void **state)
{
	struct connect_tokens set;
	const struct connect_token *t;
	char a[CONNECT_TOKEN_SECRET_LEN + 1], b[CONNECT_TOKEN_SECRET_LEN + 1];

	(void)state;
	connect_tokens_init(&set);
	assert_int_equal(connect_token_new(&set, 80, "{}", 100, 60, a, sizeof(a), &t), 0);
	assert_true(t->expires_at == 160);
	assert_int_equal(connect_token_new(&set, 80, "{}", 100, 0, b, sizeof(b), &t), 0);
	assert_non_null(connect_token_check(&set, a, 159.9));
	assert_null(connect_token_check(&set, a, 160));
	assert_non_null(connect_token_check(&set, b, 1e9));
	assert_int_equal(connect_tokens_expire(&set, 159), 0);
	assert_int_equal(connect_tokens_expire(&set, 161), 1);
	assert_int_equal(set.count, 1);
	assert_non_null(connect_token_check(&set, b, 1e9));
	connect_tokens_destroy(&set);
}

static void bounds(void **state)
{
	struct connect_tokens set;
	const struct connect_token *t;
	char s[CONNECT_TOKEN_SECRET_LEN + 1], long_meta[INGRESS_METADATA_MAX + 2];

	(void)state;
	connect_tokens_init(&set);
	assert_int_equal(connect_token_new(&set, 0, "{}", 1, 0, s, sizeof(s), &t), -EINVAL);
	assert_int_equal(connect_token_new(&set, 1, "{}", 1, CONNECT_TOKEN_TTL_MAX + 1, s, sizeof(s), &t), -EINVAL);
	assert_int_equal(connect_token_new(&set, 1, "{}", 1, 0, s, CONNECT_TOKEN_SECRET_LEN, &t), -EINVAL);
	memset(long_meta, 'x', sizeof(long_meta) - 1);
	long_meta[sizeof(long_meta) - 1] = '\0';
	assert_int_equal(connect_token_new(&set, 1, long_meta, 1, 0, s, sizeof(s), &t), -EINVAL);
	for (unsigned i = 0; i < CONNECT_TOKENS_MAX; i++)
		assert_int_equal(connect_token_new(&set, 1, "{}", 1, 0, s, sizeof(s), &t), 0);
	assert_int_equal(connect_token_new(&set, 1, "{}", 1, 0, s, sizeof(s), &t), -EDQUOT);
	assert_ptr_equal(connect_token_check(&set, s, 2), t);
	assert_true(set.cap <= CONNECT_TOKENS_MAX);
	connect_tokens_destroy(&set);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(new_and_check),
		cmocka_unit_test(ttl),
		cmocka_unit_test(bounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
