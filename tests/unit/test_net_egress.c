/* The VMM's egress policy loading (vmm/net/egress.c): what is accepted, what is refused, swaps. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/egress.h"
#include "unit.h"

static const uint8_t MAC[6] = {0x02, 0x53, 0x56, 0, 0, 2};

#define BASE "\"ip\": \"10.0.0.2\", \"gateway\": \"10.0.0.1\", \"gateway_mac\": \"02:00:00:00:00:01\""

static int load(struct net_egress *e, const char *json, char *err)
{
	return net_egress_load(e, json, strlen(json), err, 256);
}

static void good_policies_load(void **state)
{
	struct net_egress e = {.mac = MAC};
	char err[256];
	cJSON *o = cJSON_CreateObject();

	(void)state;
	assert_int_equal(load(&e, "{" BASE "}", err), 0);
	assert_int_equal(e.mode, FW_OPEN);
	assert_int_equal(load(&e, "{" BASE ", \"mode\": \"allowlist\", \"allow\": [\"198.51.100.0/24\", \"2001:db8::/32\"],"
				  " \"deny_host\": [\"192.0.2.1/32\"], \"deny_sandboxes\": [\"10.0.0.0/16\"],"
				  " \"ip6\": \"fd00::2\", \"gateway6\": \"fd00::1\"}",
			      err),
			 0);
	assert_int_equal(e.mode, FW_ALLOWLIST);
	assert_int_equal(e.nallow, 2);
	assert_int_equal(e.ndeny, 2);
	net_egress_status(&e, o);
	assert_string_equal(cJSON_GetObjectItem(o, "mode")->valuestring, "allowlist");
	assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "counters"), "pass_allowlist"));
	cJSON_Delete(o);
	net_egress_destroy(&e);
}

static void bad_policies_are_refused_and_the_old_one_stays(void **state)
{
	static const char *const bad[] = {
		"[]",
		"{" BASE ", \"mode\": \"closed\"}",
		"{" BASE ", \"bogus\": 1}",
		"{\"gateway\": \"10.0.0.1\", \"gateway_mac\": \"02:00:00:00:00:01\"}",
		"{" BASE ", \"mode\": \"block\", \"allow\": [\"10.1.0.0/16\"]}",
		"{" BASE ", \"allow\": [\"10.1.0.0/16\"]}",
		"{" BASE ", \"mode\": \"allowlist\", \"allow\": [\"10.1.0.1/16\"]}",
		"{" BASE ", \"mode\": \"allowlist\", \"allow\": \"10.1.0.0/16\"}",
		"{" BASE ", \"ip6\": \"fd00::2\"}",
		"{\"ip\": \"10.0.0.2\", \"gateway\": \"10.0.0.1\", \"gateway_mac\": \"01:00:00:00:00:01\"}",
		"{\"ip\": \"300.0.0.2\", \"gateway\": \"10.0.0.1\", \"gateway_mac\": \"02:00:00:00:00:01\"}",
		"{\"ip\": \"10.0.0.1\", \"gateway\": \"10.0.0.1\", \"gateway_mac\": \"02:00:00:00:00:01\"}",
		/* The operator's opt-in: CIDR strings, each inside a private range. */
		"{" BASE ", \"allow_private\": \"10.0.0.0/8\"}",
		"{" BASE ", \"allow_private\": [10]}",
		"{" BASE ", \"allow_private\": [\"10.0.0.1/8\"]}",
		"{" BASE ", \"allow_private\": [\"8.0.0.0/8\"]}",
		"{" BASE ", \"allow_private\": [\"10.77.0.0/24\", \"0.0.0.0/0\"]}",
		"{" BASE ", \"allow_private\": [\"10.0.0.0/7\"]}",
		"{" BASE ", \"allow_private\": [\"::/0\"]}",
	};
	struct net_egress e = {.mac = MAC};
	char err[256];

	(void)state;
	assert_int_equal(load(&e, "{" BASE ", \"mode\": \"block\"}", err), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (load(&e, bad[i], err) == 0)
			fail_msg("accepted %s", bad[i]);
		if (!err[0])
			fail_msg("no message for %s", bad[i]);
		assert_int_equal(e.mode, FW_BLOCK);
		assert_non_null(e.policy);
	}
	net_egress_destroy(&e);
}

/* A frame from the sandbox to dst over UDP, as the guest would send it through the gateway. */
static size_t udp_frame(uint8_t *f, const char *dst)
{
	static const uint8_t gw[6] = {2, 0, 0, 0, 0, 1};
	uint8_t *ip = f + 14;

	memset(f, 0, 64);
	memcpy(f, gw, 6);
	memcpy(f + 6, MAC, 6);
	f[12] = 0x08;
	ip[0] = 0x45;
	ip[3] = 28;
	ip[8] = 64;
	ip[9] = 17;
	inet_pton(AF_INET, "10.0.0.2", ip + 12);
	inet_pton(AF_INET, dst, ip + 16);
	ip[20 + 1] = 53;
	ip[20 + 3] = 53;
	ip[20 + 5] = 8;
	return 14 + 28;
}

static void verdicts_follow_the_current_policy(void **state)
{
	struct net_egress e = {.mac = MAC};
	uint8_t f[64];
	size_t n = udp_frame(f, "198.51.100.7");
	char err[256];

	(void)state;
	assert_false(net_egress_check(&e, f, n)); /* no policy: nothing passes */
	assert_int_equal(load(&e, "{" BASE "}", err), 0);
	assert_true(net_egress_check(&e, f, n));
	assert_int_equal(load(&e, "{" BASE ", \"mode\": \"block\"}", err), 0);
	assert_false(net_egress_check(&e, f, n));
	assert_int_equal(load(&e, "{" BASE ", \"mode\": \"allowlist\", \"allow\": [\"198.51.100.0/24\"]}", err), 0);
	assert_true(net_egress_check(&e, f, n));
	n = udp_frame(f, "203.0.113.7");
	assert_false(net_egress_check(&e, f, n));
	assert_int_equal(e.counters.count[FW_PASS_OPEN], 1);
	assert_int_equal(e.counters.count[FW_DROP_BLOCKED], 1);
	assert_int_equal(e.counters.count[FW_PASS_ALLOWLIST], 1);
	assert_int_equal(e.counters.count[FW_DROP_NOT_ALLOWED], 1);
	net_egress_destroy(&e);
}

/* The counter of one verdict, by its name in the status. */
static double counter(const struct net_egress *e, const char *name)
{
	cJSON *o = cJSON_CreateObject();
	const cJSON *c;
	double v;

	net_egress_status(e, o);
	c = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "counters"), name);
	if (!cJSON_IsNumber(c))
		fail_msg("no counter %s", name);
	v = c->valuedouble;
	cJSON_Delete(o);
	return v;
}

/* The worker's private networks: closed in open mode, opened by the operator or an explicit entry. */
static void private_ranges(void **state)
{
	static const struct {
		const char *policy;
		bool passes; /* the frame to 10.2.3.4 */
	} cases[] = {
		{ "{" BASE "}", false },
		{ "{" BASE ", \"mode\": \"allowlist\", \"allow\": [\"0.0.0.0/0\"]}", false },
		{ "{" BASE ", \"mode\": \"allowlist\", \"allow\": [\"8.0.0.0/5\"]}", false },
		{ "{" BASE ", \"allow_private\": [\"192.168.0.0/16\", \"fd00::/8\"]}", false },
		{ "{" BASE ", \"allow_private\": [\"10.2.0.0/16\"]}", true },
		{ "{" BASE ", \"allow_private\": [\"10.0.0.0/8\"]}", true },
		{ "{" BASE ", \"mode\": \"allowlist\", \"allow\": [\"10.2.3.0/24\"]}", true },
		{ "{" BASE ", \"mode\": \"allowlist\", \"allow\": [\"10.0.0.0/8\", \"0.0.0.0/0\"]}", true },
		/* The opt-in lifts the private floor; in allowlist mode the list still decides. */
		{ "{" BASE ", \"mode\": \"allowlist\", \"allow\": [\"198.51.100.0/24\"], \"allow_private\": [\"10.2.0.0/16\"]}",
		  false },
		{ "{" BASE ", \"mode\": \"block\", \"allow_private\": [\"10.0.0.0/8\"]}", false },
		/* Never past the deny list. */
		{ "{" BASE ", \"allow_private\": [\"10.0.0.0/8\"], \"deny_sandboxes\": [\"10.2.0.0/16\"]}", false },
	};
	struct net_egress e = {.mac = MAC};
	uint8_t f[64];
	size_t n = udp_frame(f, "10.2.3.4");
	char err[256];
	cJSON *o;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (load(&e, cases[i].policy, err) != 0)
			fail_msg("refused %s: %s", cases[i].policy, err);
		if (net_egress_check(&e, f, n) != cases[i].passes)
			fail_msg("%s: 10.2.3.4 %s", cases[i].policy, cases[i].passes ? "dropped" : "passed");
	}
	/* Open mode to a private address is counted as such. */
	memset(&e.counters, 0, sizeof(e.counters));
	assert_int_equal(load(&e, "{" BASE "}", err), 0);
	assert_false(net_egress_check(&e, f, n));
	n = udp_frame(f, "192.168.1.1");
	assert_false(net_egress_check(&e, f, n));
	n = udp_frame(f, "100.64.0.1");
	assert_false(net_egress_check(&e, f, n));
	n = udp_frame(f, "172.16.0.1");
	assert_false(net_egress_check(&e, f, n));
	n = udp_frame(f, "198.51.100.7");
	assert_true(net_egress_check(&e, f, n));
	assert_true(counter(&e, "drop_private") == 4);
	assert_true(counter(&e, "pass_open") == 1);
	/* The status says how many prefixes the operator opened. */
	assert_int_equal(load(&e, "{" BASE ", \"allow_private\": [\"10.77.0.0/24\", \"fd77::/64\"]}", err), 0);
	o = cJSON_CreateObject();
	net_egress_status(&e, o);
	assert_true(cJSON_GetObjectItem(o, "allow_private")->valuedouble == 2);
	cJSON_Delete(o);
	/* A refusal names the prefix and the ranges. */
	assert_int_equal(load(&e, "{" BASE ", \"allow_private\": [\"10.77.0.0/24\", \"8.0.0.0/5\"]}", err), -EINVAL);
	assert_non_null(strstr(err, "allow_private"));
	assert_non_null(strstr(err, "8.0.0.0/5"));
	assert_non_null(strstr(err, "10.0.0.0/8, 172.16.0.0/12"));
	assert_int_equal(load(&e, "{" BASE ", \"allow_private\": [\"10.77.0.1/24\"]}", err), -EINVAL);
	assert_non_null(strstr(err, "10.77.0.0/24"));
	net_egress_destroy(&e);
}

/* --net-policy FILE: the file's errors name the file and keep their errno; a good file loads. */
static void policy_files(void **state)
{
	struct net_egress e = {.mac = MAC};
	char err[256], dir[] = "/tmp/sandvm-egress.XXXXXX", path[64];
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/policy.json", dir);
	assert_int_equal(net_egress_load_file(&e, path, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, strerror(ENOENT)));
	assert_int_equal(net_egress_load_file(&e, dir, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("{" BASE ", \"mode\": \"block\"}", f);
	fclose(f);
	assert_int_equal(net_egress_load_file(&e, path, err, sizeof(err)), 0);
	assert_int_equal(e.mode, FW_BLOCK);
	net_egress_destroy(&e);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(good_policies_load),
		cmocka_unit_test(bad_policies_are_refused_and_the_old_one_stays),
		cmocka_unit_test(verdicts_follow_the_current_policy),
		cmocka_unit_test(private_ranges),
		cmocka_unit_test(policy_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
