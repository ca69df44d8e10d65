/* The daemon's checks of what clients send (api/sandboxd/spec.c, query.c). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "query.h"
#include "spec.h"
#include "unit.h"

static int parse(const char *body, struct sandbox_spec *s, struct spec_error *err)
{
	return spec_parse_sandbox(body, strlen(body), s, err);
}

static void defaults_are_filled_in(void **state)
{
	struct sandbox_spec s;
	struct spec_error err;

	(void)state;
	assert_int_equal(parse("", &s, &err), 0);
	assert_string_equal(s.image, "debian");
	assert_int_equal(s.cpu, 1);
	assert_int_equal(s.memory_mib, 512);
	assert_int_equal(s.timeout, 300);
	assert_int_equal(s.idle_timeout, 0);
	assert_string_equal(s.workdir, "/");
	assert_string_equal(s.app, "default");
	assert_null(s.name);
	assert_null(s.command);
	assert_false(s.block_network);
	assert_non_null(cJSON_GetObjectItem(s.json, "timeout"));
	spec_sandbox_free(&s);
}

static void full_spec_is_kept(void **state)
{
	struct sandbox_spec s;
	struct spec_error err;

	(void)state;
	assert_int_equal(parse("{\"image\":\"/img/x.ext4\",\"cpu\":4,\"memory_mib\":1024,\"timeout\":86400,"
			       "\"idle_timeout\":60,\"workdir\":\"/srv\",\"env\":{\"A_1\":\"x\"},\"name\":\"web-1\","
			       "\"app\":\"shop\",\"tags\":{\"team\":\"ml\"},\"command\":[\"sleep\",\"9\"]}",
			       &s, &err),
			 0);
	assert_string_equal(s.image, "/img/x.ext4");
	assert_int_equal(s.cpu, 4);
	assert_int_equal(s.idle_timeout, 60);
	assert_string_equal(s.name, "web-1");
	assert_string_equal(s.app, "shop");
	assert_int_equal(cJSON_GetArraySize(s.command), 2);
	assert_string_equal(cJSON_GetObjectItem(s.env, "A_1")->valuestring, "x");
	spec_sandbox_free(&s);
}

/* null means "the default", never a missing value the daemon trips over. */
static void null_fields_get_defaults(void **state)
{
	struct sandbox_spec s;
	struct spec_error err;

	(void)state;
	assert_int_equal(parse("{\"image\":null,\"workdir\":null,\"app\":null,\"env\":null,\"tags\":null,"
			       "\"name\":null,\"command\":null}",
			       &s, &err),
			 0);
	assert_string_equal(s.image, "debian");
	assert_string_equal(s.workdir, "/");
	assert_string_equal(s.app, "default");
	assert_true(cJSON_IsObject(s.env));
	assert_true(cJSON_IsObject(s.tags));
	assert_null(s.name);
	assert_null(s.command);
	spec_sandbox_free(&s);
}

static void restricted_implies_no_network(void **state)
{
	struct sandbox_spec s;
	struct spec_error err;

	(void)state;
	assert_int_equal(parse("{\"restricted\":true,\"block_network\":false}", &s, &err), 0);
	assert_true(s.block_network);
	assert_true(s.restricted);
	spec_sandbox_free(&s);
}

/* A fleet gateway's id (docs/fleet.md): taken out of the stored spec, kept in spec.id. */
static void gateway_id_is_taken(void **state)
{
	struct sandbox_spec s;
	struct spec_error err;

	(void)state;
	assert_int_equal(parse("{\"id\":\"sb-0123456789abcdef\",\"cpu\":2}", &s, &err), 0);
	assert_string_equal(s.id, "sb-0123456789abcdef");
	assert_null(cJSON_GetObjectItem(s.json, "id"));
	assert_int_equal(s.cpu, 2);
	spec_sandbox_free(&s);
	assert_int_equal(parse("{\"id\":null}", &s, &err), 0);
	assert_string_equal(s.id, "");
	assert_null(cJSON_GetObjectItem(s.json, "id"));
	spec_sandbox_free(&s);
	assert_int_equal(parse("{}", &s, &err), 0);
	assert_string_equal(s.id, "");
	spec_sandbox_free(&s);
}

static void each_bad_field_is_named(void **state)
{
	static const struct {
		const char *body, *field;
	} bad[] = {
		{"{\"cpu\":0}", "cpu"},
		{"{\"id\":\"sb-0123\"}", "id"},
		{"{\"id\":\"sb-0123456789ABCDEF\"}", "id"},
		{"{\"id\":\"xx-0123456789abcdef\"}", "id"},
		{"{\"id\":\"sb-0123456789abcdef0\"}", "id"},
		{"{\"id\":7}", "id"},
		{"{\"cpu\":33}", "cpu"},
		{"{\"cpu\":1.5}", "cpu"},
		{"{\"cpu\":\"2\"}", "cpu"},
		{"{\"memory_mib\":-1}", "memory_mib"},
		{"{\"timeout\":0}", "timeout"},
		{"{\"timeout\":86401}", "timeout"},
		{"{\"idle_timeout\":-3}", "idle_timeout"},
		{"{\"workdir\":\"tmp\"}", "workdir"},
		{"{\"image\":\"relative.ext4\"}", "image"},
		{"{\"image\":\"/srv/images/a.ext4,serial=rootfs2\"}", "image"},
		{"{\"image\":\"/x,ro\"}", "image"},
		{"{\"env\":{\"1A\":\"x\"}}", "env"},
		{"{\"env\":{\"A-B\":\"x\"}}", "env"},
		{"{\"env\":{\"A\":1}}", "env"},
		{"{\"env\":[]}", "env"},
		{"{\"env\":{\"A\":\"1\",\"A\":\"2\"}}", "env"},
		{"{\"name\":\"\"}", "name"},
		{"{\"name\":\"a/b\"}", "name"},
		{"{\"tags\":{\"k\":2}}", "tags"},
		{"{\"command\":[]}", "command"},
		{"{\"command\":[\"\"]}", "command"},
		{"{\"command\":[1]}", "command"},
		{"{\"block_network\":1}", "block_network"},
		{"{\"nope\":1}", "nope"},
		{"{\"cpu\":1,\"cpu\":2}", "cpu"},
		{"{\"restricted\":true,\"command\":[\"x\"]}", "command"},
	};
	struct sandbox_spec s;
	struct spec_error err;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&err, 0, sizeof(err));
		if (parse(bad[i].body, &s, &err) != -EINVAL)
			fail_msg("accepted %s", bad[i].body);
		if (strcmp(err.field, bad[i].field))
			fail_msg("%s: field \"%s\", expected \"%s\" (%s)", bad[i].body, err.field, bad[i].field,
				 err.message);
		assert_true(strlen(err.message) > 0);
	}
}

/* Tunnel ports: whole ports 1..65535 in arrays, none twice in or across the lists, 16 in all, never restricted. */
static void tunnel_ports_are_checked(void **state)
{
	static const struct {
		const char *body, *field;
	} bad[] = {
		{"{\"encrypted_ports\":[\"80\"]}", "encrypted_ports"},
		{"{\"encrypted_ports\":[80.5]}", "encrypted_ports"},
		{"{\"encrypted_ports\":[0]}", "encrypted_ports"},
		{"{\"unencrypted_ports\":[65536]}", "unencrypted_ports"},
		{"{\"h2_ports\":[-1]}", "h2_ports"},
		{"{\"h2_ports\":[1e300]}", "h2_ports"},
		{"{\"h2_ports\":[true]}", "h2_ports"},
		{"{\"h2_ports\":[null]}", "h2_ports"},
		{"{\"encrypted_ports\":[80,80]}", "encrypted_ports"},
		{"{\"encrypted_ports\":[80],\"h2_ports\":[80]}", "h2_ports"},
		{"{\"unencrypted_ports\":[81],\"h2_ports\":[82,81]}", "h2_ports"},
		{"{\"encrypted_ports\":80}", "encrypted_ports"},
		{"{\"encrypted_ports\":\"80\"}", "encrypted_ports"},
		{"{\"encrypted_ports\":{\"80\":80}}", "encrypted_ports"},
		{"{\"encrypted_ports\":[[80]]}", "encrypted_ports"},
		{"{\"encrypted_ports\":[{\"port\":80}]}", "encrypted_ports"},
		{"{\"encrypted_ports\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}", "encrypted_ports"},
		{"{\"encrypted_ports\":[1,2,3,4,5,6,7,8],\"h2_ports\":[9,10,11,12,13,14,15,16,17]}", "h2_ports"},
		{"{\"restricted\":true,\"encrypted_ports\":[80]}", "encrypted_ports"},
		{"{\"restricted\":true,\"unencrypted_ports\":[80]}", "unencrypted_ports"},
		{"{\"restricted\":true,\"h2_ports\":[80]}", "h2_ports"},
		{"{\"encrypted_ports\":[80],\"encrypted_ports\":[81]}", "encrypted_ports"},
	};
	struct sandbox_spec s;
	struct spec_error err;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&err, 0, sizeof(err));
		if (parse(bad[i].body, &s, &err) != -EINVAL)
			fail_msg("accepted %s", bad[i].body);
		if (strcmp(err.field, bad[i].field))
			fail_msg("%s: field \"%s\", expected \"%s\" (%s)", bad[i].body, err.field, bad[i].field,
				 err.message);
		assert_true(strlen(err.message) > 0);
	}
	/* 16 in all, across the lists, with block_network: fine. Empty lists and null are none. */
	assert_int_equal(parse("{\"block_network\":true,\"encrypted_ports\":[1,2,3,4,5,6],"
			       "\"unencrypted_ports\":[65535,7,8,9,10],\"h2_ports\":[11,12,13,14,15]}",
			       &s, &err),
			 0);
	assert_int_equal(cJSON_GetArraySize(s.encrypted_ports), 6);
	assert_int_equal(cJSON_GetArraySize(s.unencrypted_ports), 5);
	assert_int_equal(cJSON_GetArraySize(s.h2_ports), 5);
	spec_sandbox_free(&s);
	assert_int_equal(parse("{\"encrypted_ports\":[],\"h2_ports\":null,\"restricted\":true}", &s, &err), 0);
	assert_null(s.encrypted_ports);
	assert_null(s.unencrypted_ports);
	assert_null(s.h2_ports);
	spec_sandbox_free(&s);
}

/* A CIDR with host bits set is refused with the prefix that was probably meant; junk is named as such. */
static void cidr_errors_say_why(void **state)
{
	struct sandbox_spec s;
	struct spec_error err;

	(void)state;
	memset(&err, 0, sizeof(err));
	assert_int_equal(parse("{\"cidr_allowlist\":[\"198.51.100.0/24\",\"10.1.2.3/16\"]}", &s, &err), -EINVAL);
	assert_string_equal(err.field, "cidr_allowlist");
	assert_non_null(strstr(err.message, "cidr_allowlist[1] \"10.1.2.3/16\" has host bits set"));
	assert_non_null(strstr(err.message, "10.1.0.0/16"));
	memset(&err, 0, sizeof(err));
	assert_int_equal(parse("{\"cidr_allowlist\":[\"example.com\"]}", &s, &err), -EINVAL);
	assert_non_null(strstr(err.message, "is not an IPv4 or IPv6 prefix"));
	memset(&err, 0, sizeof(err));
	assert_int_equal(parse("{\"cidr_allowlist\":[7]}", &s, &err), -EINVAL);
	assert_non_null(strstr(err.message, "cidr_allowlist[0] is not a string"));
}

static void bad_bodies_are_refused(void **state)
{
	static const char *const bodies[] = {"{", "[]", "null", "1", "\"x\"", "{} {}", "{\"cpu\":1} x"};
	struct sandbox_spec s;
	struct spec_error err;

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		assert_int_equal(parse(bodies[i], &s, &err), -EINVAL);
		assert_string_equal(err.field, "");
	}
}

static void argv_is_capped_at_64k(void **state)
{
	size_t n = SPEC_ARGV_MAX + 100;
	char *body = malloc(n + 64), *big = body;
	struct exec_spec e;
	struct spec_error err;

	(void)state;
	strcpy(body, "{\"argv\":[\"");
	memset(body + strlen(body), 'a', n);
	strcpy(body + 10 + n, "\"]}");
	assert_int_equal(spec_parse_exec(body, strlen(body), &e, &err), -EINVAL);
	assert_string_equal(err.field, "argv");
	free(big);
	body = "{\"argv\":[\"true\"],\"timeout\":5,\"stdin\":true}";
	assert_int_equal(spec_parse_exec(body, strlen(body), &e, &err), 0);
	assert_int_equal(e.timeout, 5);
	assert_true(e.stdin_open);
	assert_null(e.workdir);
	spec_exec_free(&e);
	assert_int_equal(spec_parse_exec("{}", 2, &e, &err), -EINVAL);
	assert_string_equal(err.field, "argv");
}

static void query_values_are_decoded(void **state)
{
	char v[HTTP_PARAM_MAX];
	static char many[4][HTTP_PARAM_MAX];

	(void)state;
	assert_true(http_query_param("a=1&path=%2Ftmp%2Fx+y&z", "path", v, sizeof(v)));
	assert_string_equal(v, "/tmp/x y");
	assert_true(http_query_param("a=1&recursive", "recursive", v, sizeof(v)));
	assert_string_equal(v, "");
	assert_false(http_query_param("paths=1&xpath=2", "path", v, sizeof(v)));
	assert_true(http_query_param("path=%zz%4", "path", v, sizeof(v)));
	assert_string_equal(v, "%zz%4");
	assert_int_equal(http_query_params("tag=a=b&x=1&tag=c%3Dd&tag=e=f&tag=g=h&tag=i=j", "tag", many, 4), 4);
	assert_string_equal(many[1], "c=d");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults_are_filled_in),   cmocka_unit_test(full_spec_is_kept),
		cmocka_unit_test(null_fields_get_defaults),
		cmocka_unit_test(restricted_implies_no_network), cmocka_unit_test(each_bad_field_is_named),
		cmocka_unit_test(cidr_errors_say_why),      cmocka_unit_test(tunnel_ports_are_checked),
		cmocka_unit_test(bad_bodies_are_refused),   cmocka_unit_test(argv_is_capped_at_64k),
		cmocka_unit_test(query_values_are_decoded), cmocka_unit_test(gateway_id_is_taken),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
