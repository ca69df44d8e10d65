/*
 * sandboxd's network policy parts (api/sandboxd/net_policy.c): the operator's
 * --allow-private-egress prefixes, and what a VMM's reply to a policy change
 * confirms.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "net_policy.h"
#include "unit.h"

/* The list as one string: ["10.0.0.0/8","fd77::/64"]. */
static void expect_list(cJSON *list, const char *want)
{
	char *text = cJSON_PrintUnformatted(list);

	assert_non_null(text);
	if (strcmp(text, want))
		fail_msg("list %s, expected %s", text, want);
	cJSON_free(text);
}

static void private_prefixes(void **state)
{
	static const struct {
		const char *arg, *why;
		int r;
	} bad[] = {
		{ "8.8.8.0/24", "not inside a private range", -EINVAL },
		{ "0.0.0.0/0", "not inside a private range", -EINVAL },
		{ "10.0.0.0/7", "not inside a private range", -EINVAL },
		{ "100.0.0.0/8", "not inside a private range", -EINVAL },
		{ "2001:db8::/32", "not inside a private range", -EINVAL },
		{ "10.0.0.1/8", "the prefix would be 10.0.0.0/8", -EINVAL },
		{ "10.0.0.0/8,", "an empty prefix", -EINVAL },
		{ ",10.0.0.0/8", "an empty prefix", -EINVAL },
		{ "10.0.0.0/8, 172.16.0.0/12", "is not an IPv4 or IPv6 prefix", -EINVAL },
		{ "", "an empty prefix", -EINVAL },
		{ "10.0.0.0/8,bogus", "\"bogus\" is not an IPv4", -EINVAL },
		{ "192.168.0.0/16,172.32.0.0/16", "172.32.0.0/16 is not inside", -EINVAL },
		{ "10.0.0.0/0008", "is not an IPv4", -EINVAL },
		{ "fd00::/8,12345678901234567890123456789012345678901234567890123456789012345678", "too long", -EINVAL },
	};
	cJSON *list = cJSON_CreateArray();
	char err[256], arg[64 * 20];
	size_t n = 0;

	(void)state;
	assert_int_equal(net_private_add(list, "10.77.0.0/24", err, sizeof(err)), 0);
	assert_int_equal(net_private_add(list, "fd77::/64,172.16.0.0/12,192.168.1.7", err, sizeof(err)), 0);
	/* Canonical text, each once. */
	assert_int_equal(net_private_add(list, "10.77.0.0/24,FD77:0::/64,fd77::/64", err, sizeof(err)), 0);
	assert_int_equal(net_private_add(list, "100.64.0.0/10,fc00::/7", err, sizeof(err)), 0);
	expect_list(list, "[\"10.77.0.0/24\",\"fd77::/64\",\"172.16.0.0/12\",\"192.168.1.7/32\","
			  "\"100.64.0.0/10\",\"fc00::/7\"]");
	/* A refused argument adds nothing, not even its good prefixes, and says why. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (net_private_add(list, bad[i].arg, err, sizeof(err)) != bad[i].r)
			fail_msg("\"%s\" was not refused", bad[i].arg);
		if (!strstr(err, bad[i].why))
			fail_msg("\"%s\": message \"%s\" lacks \"%s\"", bad[i].arg, err, bad[i].why);
		assert_int_equal(cJSON_GetArraySize(list), 6);
	}
	assert_int_equal(net_private_add(NULL, "10.0.0.0/8", err, sizeof(err)), -EINVAL);
	assert_int_equal(net_private_add(list, NULL, err, sizeof(err)), -EINVAL);
	cJSON_Delete(list);

	/* At most NET_PRIVATE_MAX prefixes, in one argument or several. */
	list = cJSON_CreateArray();
	for (int i = 0; i < NET_PRIVATE_MAX; i++)
		n += (size_t)snprintf(arg + n, sizeof(arg) - n, "%s10.%d.0.0/16", i ? "," : "", i);
	assert_int_equal(net_private_add(list, arg, err, sizeof(err)), 0);
	assert_int_equal(cJSON_GetArraySize(list), NET_PRIVATE_MAX);
	assert_int_equal(net_private_add(list, "10.0.0.0/16", err, sizeof(err)), 0); /* already there */
	assert_int_equal(net_private_add(list, "10.200.0.0/16", err, sizeof(err)), -E2BIG);
	assert_non_null(strstr(err, "more than"));
	assert_int_equal(cJSON_GetArraySize(list), NET_PRIVATE_MAX);
	cJSON_Delete(list);
	list = cJSON_CreateArray();
	snprintf(arg + n, sizeof(arg) - n, ",10.200.0.0/16");
	assert_int_equal(net_private_add(list, arg, err, sizeof(err)), -E2BIG);
	assert_int_equal(cJSON_GetArraySize(list), 0);
	cJSON_Delete(list);
}

static void modes(void **state)
{
	enum net_mode m = NET_BLOCK;

	(void)state;
	assert_string_equal(net_mode_word(NET_OPEN), "open");
	assert_string_equal(net_mode_word(NET_BLOCK), "block");
	assert_string_equal(net_mode_word(NET_ALLOWLIST), "allowlist");
	assert_int_equal(net_mode_parse("allowlist", &m), 0);
	assert_int_equal(m, NET_ALLOWLIST);
	assert_int_equal(net_mode_parse("open", &m), 0);
	assert_int_equal(m, NET_OPEN);
	assert_int_equal(net_mode_parse("Open", &m), -EINVAL);
	assert_int_equal(net_mode_parse("none", &m), -EINVAL);
	assert_int_equal(net_mode_parse("", &m), -EINVAL);
	assert_int_equal(net_mode_parse(NULL, &m), -EINVAL);
	assert_int_equal(m, NET_OPEN);
}

/* The mode reported is the VMM's, never the one asked for; anything else is an error. */
static void policy_outcomes(void **state)
{
	static const struct {
		int call;
		const char *reply;
		int status;
		enum net_mode mode;
		const char *why;
	} cases[] = {
		{ 0, "{\"net\":{\"mode\":\"block\",\"allow\":0},\"ok\":true}\n", 0, NET_BLOCK, NULL },
		{ 0, "{\"ok\":true,\"net\":{\"mode\":\"allowlist\",\"allow\":2}}", 0, NET_ALLOWLIST, NULL },
		{ 0, "{\"ok\":true,\"net\":{\"mode\":\"open\"}}", 0, NET_OPEN, NULL },
		{ 0, "{\"ok\":false,\"error\":\"net policy: \\\"allow\\\" needs mode allowlist\"}", -EPROTO, NET_BLOCK,
		  "the VMM refused: net policy: \"allow\" needs mode allowlist" },
		{ 0, "{\"ok\":false}", -EPROTO, NET_BLOCK, "no reason given" },
		{ 0, "{\"ok\":true}", -EPROTO, NET_BLOCK, "did not say which mode" },
		{ 0, "{\"ok\":true,\"net\":{\"mode\":\"closed\"}}", -EPROTO, NET_BLOCK, "did not say which mode" },
		{ 0, "{\"ok\":true,\"net\":{\"mode\":3}}", -EPROTO, NET_BLOCK, "did not say which mode" },
		{ 0, "{\"ok\":true,\"net\":\"open\"}", -EPROTO, NET_BLOCK, "did not say which mode" },
		{ 0, "{\"ok\":\"true\",\"net\":{\"mode\":\"open\"}}", -EPROTO, NET_BLOCK, "refused" },
		{ 0, "{\"ok\":tr", -EPROTO, NET_BLOCK, "not a JSON object" },
		{ 0, "[1]", -EPROTO, NET_BLOCK, "not a JSON object" },
		{ 0, "", -EPROTO, NET_BLOCK, "not a JSON object" },
		{ -ETIMEDOUT, "", -ETIMEDOUT, NET_BLOCK, "did not answer in time" },
		{ -ECONNREFUSED, "", -EPROTO, NET_BLOCK, "did not answer on its control socket" },
		{ -ENOENT, "", -EPROTO, NET_BLOCK, "No such file" },
		{ -EIO, "{\"ok\":true,\"net\":{\"mode\":\"open\"}}", -EPROTO, NET_BLOCK, "did not answer" },
	};
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum net_mode m = NET_BLOCK;
		int st;

		err[0] = '\0';
		st = net_policy_outcome(cases[i].call, cases[i].reply, &m, err, sizeof(err));
		if (st != cases[i].status || m != cases[i].mode)
			fail_msg("case %zu (%s): status %d mode %s", i, cases[i].reply, st, net_mode_word(m));
		if (cases[i].why && !strstr(err, cases[i].why))
			fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err, cases[i].why);
	}
	/* A refusal's reason is bounded in the message. */
	{
		char reply[2048];
		enum net_mode m = NET_OPEN;

		memset(reply, 'x', sizeof(reply));
		memcpy(reply, "{\"ok\":false,\"error\":\"", 21);
		memcpy(reply + sizeof(reply) - 3, "\"}", 3);
		assert_int_equal(net_policy_outcome(0, reply, &m, err, 128), -EPROTO);
		assert_true(strlen(err) < 128);
		assert_int_equal(net_policy_outcome(0, NULL, &m, err, sizeof(err)), -EPROTO);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(private_prefixes),
		cmocka_unit_test(modes),
		cmocka_unit_test(policy_outcomes),
	};

	return cmocka_run_group_tests_name("sandboxd_net", tests, NULL, NULL);
}
