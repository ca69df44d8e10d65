/*
 * api/sandboxd/json_text.c: the text of a cJSON tree must be byte for byte
 * what cJSON_PrintUnformatted writes, for every kind of item and for the
 * numbers where %1.15g and integer arithmetic could part ways.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_text.h"
#include "unit.h"

/* json_text_write and cJSON_PrintUnformatted agree on item (0), or both refuse it. */
static void same_as_cjson(struct json_text *t, const cJSON *item)
{
	char *want = cJSON_PrintUnformatted(item);
	int r = json_text_write(t, item);

	if (!want) {
		assert_int_equal(r, -EINVAL);
		return;
	}
	assert_int_equal(r, 0);
	if (strlen(want) != t->len || memcmp(want, t->buf, t->len) || t->buf[t->len]) {
		fprintf(stderr, "cJSON: %s\njson_text: %.*s\n", want, (int)t->len, t->buf);
		fail();
	}
	free(want);
}

static void numbers(void **state)
{
	static const double values[] = {
		0, 1, -1, 7, 10, 42, 512, 300, -300, 2147483647.0, 2147483648.0, -2147483648.0, -2147483649.0,
		4294967296.0, 123456789012345.0, 999999999999999.0, -999999999999999.0, 1e14, 1e15, -1e15,
		1e15 + 1, 1e16, 9007199254740992.0, 9007199254740993.0, 1e17, 1e21, 1e300, -1e300, 0.5, -0.5,
		0.1, 0.2, 0.3, 1.0 / 3, 2.0 / 3, 1e-7, 1e-300, 5e-324, 1796407796.072652, 99.99, 1.5e14 + 0.5,
		999999999999999.5, 1.7976931348623157e308,
	};
	struct json_text t = { 0 };
	cJSON *n;

	(void)state;
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		n = cJSON_CreateNumber(values[i]);
		same_as_cjson(&t, n);
		cJSON_Delete(n);
		n = cJSON_CreateNumber(-values[i]); /* -0 too */
		same_as_cjson(&t, n);
		cJSON_Delete(n);
	}
	n = cJSON_CreateNumber(NAN);
	same_as_cjson(&t, n);
	assert_string_equal(t.buf, "null");
	cJSON_Delete(n);
	n = cJSON_CreateNumber(-INFINITY);
	same_as_cjson(&t, n);
	cJSON_Delete(n);
	n = cJSON_CreateNumber(123);
	assert_int_equal(json_text_write(&t, n), 0);
	assert_string_equal(t.buf, "123");
	cJSON_Delete(n);
	json_text_free(&t);
}

static void strings(void **state)
{
	struct json_text t = { 0 };
	char every[256];
	cJSON *s, *o;

	(void)state;
	for (int i = 1; i < 256; i++)
		every[i - 1] = (char)i;
	every[255] = '\0';
	s = cJSON_CreateString(every);
	same_as_cjson(&t, s);
	cJSON_Delete(s);
	/* Long strings are measured before they are written: plain, and all escapes. */
	{
		char *big = malloc(5000);

		assert_non_null(big);
		for (int pass = 0; pass < 2; pass++) {
			for (int i = 0; i < 4999; i++)
				big[i] = pass ? (char)(i % 31 + 1) : (char)('a' + i % 26);
			big[4999] = '\0';
			s = cJSON_CreateString(big);
			same_as_cjson(&t, s);
			cJSON_Delete(s);
		}
		free(big);
	}
	s = cJSON_CreateString("");
	same_as_cjson(&t, s);
	/* A string item without text is written as "". */
	free(s->valuestring);
	s->valuestring = NULL;
	same_as_cjson(&t, s);
	assert_string_equal(t.buf, "\"\"");
	cJSON_Delete(s);
	s = cJSON_CreateString("tab\there \"quoted\" back\\slash\r\n\x01\x1f/\xc3\xa9");
	same_as_cjson(&t, s);
	assert_string_equal(t.buf, "\"tab\\there \\\"quoted\\\" back\\\\slash\\r\\n\\u0001\\u001f/\xc3\xa9\"");
	cJSON_Delete(s);
	/* Keys are escaped the same way; an item in an object without a key gets "". */
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "a\"b\n", "v");
	cJSON_AddItemToArray(o, cJSON_CreateTrue());
	same_as_cjson(&t, o);
	cJSON_Delete(o);
	json_text_free(&t);
}

static void containers_and_raw(void **state)
{
	struct json_text t = { 0 };
	cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray(), *raw;

	(void)state;
	same_as_cjson(&t, o);
	assert_string_equal(t.buf, "{}");
	same_as_cjson(&t, a);
	assert_string_equal(t.buf, "[]");
	cJSON_AddItemToArray(a, cJSON_CreateNull());
	cJSON_AddItemToArray(a, cJSON_CreateFalse());
	cJSON_AddItemToArray(a, cJSON_CreateArray());
	cJSON_AddItemToArray(a, cJSON_CreateObject());
	cJSON_AddItemToArray(a, cJSON_CreateRaw("1796407796.072652"));
	cJSON_AddItemToObject(o, "list", a);
	cJSON_AddNumberToObject(o, "memory_mib", 512);
	cJSON_AddStringToObject(o, "state", "finished");
	same_as_cjson(&t, o);
	assert_string_equal(t.buf, "{\"list\":[null,false,[],{},1796407796.072652],\"memory_mib\":512,\"state\":\"finished\"}");
	/* What cJSON will not print, neither will json_text: a raw item without text, an invalid item. */
	raw = cJSON_CreateRaw("x");
	free(raw->valuestring);
	raw->valuestring = NULL;
	cJSON_AddItemToArray(a, raw);
	same_as_cjson(&t, o);
	assert_int_equal(t.len, 0);
	cJSON_Delete(o);
	o = cJSON_CreateNull();
	o->type = cJSON_Invalid;
	same_as_cjson(&t, o);
	assert_int_equal(json_text_write(&t, NULL), -EINVAL);
	cJSON_Delete(o);
	json_text_free(&t);
}

static cJSON *random_item(uint64_t *rng, int depth)
{
	char text[24];
	cJSON *c;
	unsigned kind = unit_rand(rng) % (depth > 4 ? 6 : 8), n;
	union {
		uint64_t u;
		double d;
	} bits;

	switch (kind) {
	case 0: return cJSON_CreateNull();
	case 1: return cJSON_CreateBool(unit_rand(rng) & 1);
	case 2:
		/* Whole numbers of every size, around the 1e15 edge too. */
		switch (unit_rand(rng) % 4) {
		case 0: return cJSON_CreateNumber((double)(int32_t)unit_rand(rng));
		case 1: return cJSON_CreateNumber((double)((int64_t)unit_rand(rng) << 20 | unit_rand(rng) % 1048576));
		case 2: return cJSON_CreateNumber(1e15 + (double)((int)(unit_rand(rng) % 64) - 32));
		default: return cJSON_CreateNumber((double)(unit_rand(rng) % 1000) / 8);
		}
	case 3:
		bits.u = (uint64_t)unit_rand(rng) << 32 | unit_rand(rng);
		return cJSON_CreateNumber(bits.d);
	case 4:
	case 5:
		n = unit_rand(rng) % sizeof(text);
		for (unsigned i = 0; i < n; i++)
			text[i] = (char)(unit_rand(rng) % 255 + 1);
		text[n] = '\0';
		return cJSON_CreateString(text);
	case 6:
		c = cJSON_CreateArray();
		for (n = unit_rand(rng) % 5; n; n--)
			cJSON_AddItemToArray(c, random_item(rng, depth + 1));
		return c;
	default:
		c = cJSON_CreateObject();
		for (n = unit_rand(rng) % 5; n; n--) {
			snprintf(text, sizeof(text), "k%u\t\"%c", unit_rand(rng) % 100, (char)(unit_rand(rng) % 127 + 1));
			cJSON_AddItemToObject(c, text, random_item(rng, depth + 1));
		}
		return c;
	}
}

static void random_trees(void **state)
{
	struct json_text t = { 0 };
	uint64_t rng = 0x5eed;

	(void)state;
	for (int i = 0; i < 3000; i++) {
		cJSON *o = random_item(&rng, 0);

		same_as_cjson(&t, o);
		cJSON_Delete(o);
	}
	/* The buffer is reused: a short text after a long one is the short one alone. */
	{
		cJSON *f = cJSON_CreateFalse();

		same_as_cjson(&t, f);
		assert_int_equal(t.len, 5);
		cJSON_Delete(f);
	}
	json_text_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(numbers),
		cmocka_unit_test(strings),
		cmocka_unit_test(containers_and_raw),
		cmocka_unit_test(random_trees),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
