/*
 * etcd_reply (api/sandboxd/fleet/etcd_reply.c) on replies recorded from a
 * real etcd 3.4 (tests/unit/data/etcd/, read from the source tree's root as
 * tests/run-unit runs), then on every truncation of them, random byte flips,
 * and hand-made hostile documents: numbers out of range, bad base64, wrong
 * types, and a stream split at every byte.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/etcd_reply.h"
#include "unit.h"

#define DATA "tests/unit/data/etcd/"

static char *load(const char *name, size_t *len)
{
	char path[256], *buf;
	FILE *f;
	long n;

	snprintf(path, sizeof(path), DATA "%s", name);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s (run from the source tree's root)", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void parse_file(const char *name, enum etcd_reply_kind kind, struct etcd_reply *r)
{
	size_t len;
	char *buf = load(name, &len), err[128];

	if (etcd_reply_parse(kind, buf, len, r, err, sizeof(err)) != 0)
		fail_msg("%s: %s", name, err);
	free(buf);
}

static void kv_is(const struct etcd_kv *kv, const char *key, const char *value)
{
	assert_int_equal(kv->key_len, strlen(key));
	assert_memory_equal(kv->key, key, kv->key_len);
	assert_int_equal(kv->value_len, strlen(value));
	assert_memory_equal(kv->value, value, kv->value_len);
	assert_int_equal(kv->key[kv->key_len], '\0');
}

static void lease_grant_and_keepalive(void **state)
{
	struct etcd_reply r;

	(void)state;
	parse_file("lease_grant.json", ETCD_REPLY_LEASE, &r);
	assert_int_equal(r.error_code, -1);
	assert_true(r.lease == INT64_C(7587899401721163527));
	assert_int_equal(r.ttl, 10);
	assert_int_equal(r.revision, 1);
	etcd_reply_free(&r);
	parse_file("lease_keepalive.json", ETCD_REPLY_KEEPALIVE, &r);
	assert_true(r.lease == INT64_C(7587899401721163527));
	assert_int_equal(r.ttl, 10);
	etcd_reply_free(&r);
	/* A revoked lease's keepalive: a result without a TTL. */
	parse_file("lease_keepalive_gone.json", ETCD_REPLY_KEEPALIVE, &r);
	assert_int_equal(r.error_code, -1);
	assert_int_equal(r.ttl, 0);
	etcd_reply_free(&r);
	parse_file("lease_revoke.json", ETCD_REPLY_HEADER, &r);
	assert_int_equal(r.revision, 6);
	etcd_reply_free(&r);
}

static void put_range_delete(void **state)
{
	struct etcd_reply r;

	(void)state;
	parse_file("put.json", ETCD_REPLY_HEADER, &r);
	assert_int_equal(r.revision, 2);
	etcd_reply_free(&r);
	parse_file("range_one.json", ETCD_REPLY_RANGE, &r);
	assert_int_equal(r.nkvs, 1);
	kv_is(&r.kvs[0], "/sandvm/workers/w1", "{\"id\":\"w1\"}");
	assert_int_equal(r.kvs[0].create_revision, 2);
	assert_int_equal(r.kvs[0].mod_revision, 2);
	assert_true(r.kvs[0].lease == INT64_C(7587899401721163527));
	assert_int_equal(r.revision, 3);
	etcd_reply_free(&r);
	parse_file("range_prefix.json", ETCD_REPLY_RANGE, &r);
	assert_int_equal(r.nkvs, 2);
	kv_is(&r.kvs[1], "/sandvm/workers/w2", "{\"id\":\"w2\"}");
	assert_int_equal(r.kvs[1].lease, 0); /* no lease: the field is left out */
	etcd_reply_free(&r);
	parse_file("range_empty.json", ETCD_REPLY_RANGE, &r);
	assert_int_equal(r.nkvs, 0);
	assert_int_equal(r.revision, 3);
	etcd_reply_free(&r);
	parse_file("delete.json", ETCD_REPLY_HEADER, &r);
	assert_int_equal(r.revision, 5);
	etcd_reply_free(&r);
}

static void txn_succeeded_and_failed(void **state)
{
	struct etcd_reply r;

	(void)state;
	parse_file("txn_succeeded.json", ETCD_REPLY_TXN, &r);
	assert_true(r.succeeded);
	assert_int_equal(r.nkvs, 0);
	etcd_reply_free(&r);
	/* No "succeeded" at all: false. */
	parse_file("txn_failed.json", ETCD_REPLY_TXN, &r);
	assert_false(r.succeeded);
	assert_int_equal(r.nkvs, 1);
	kv_is(&r.kvs[0], "/sandvm/workers/w3", "x");
	assert_int_equal(r.kvs[0].create_revision, 4);
	etcd_reply_free(&r);
}

static void watch_messages(void **state)
{
	struct etcd_reply r;

	(void)state;
	parse_file("watch_created.json", ETCD_REPLY_WATCH, &r);
	assert_true(r.created);
	assert_int_equal(r.nkvs, 0);
	etcd_reply_free(&r);
	parse_file("watch_put.json", ETCD_REPLY_WATCH, &r);
	assert_int_equal(r.nkvs, 1);
	assert_false(r.deleted[0]);
	kv_is(&r.kvs[0], "/sandvm/workers/w4", "{\"id\":\"w4\"}");
	etcd_reply_free(&r);
	parse_file("watch_delete.json", ETCD_REPLY_WATCH, &r);
	assert_int_equal(r.nkvs, 1);
	assert_true(r.deleted[0]);
	kv_is(&r.kvs[0], "/sandvm/workers/w4", "");
	assert_int_equal(r.kvs[0].mod_revision, 8);
	etcd_reply_free(&r);
	parse_file("watch_events_many.json", ETCD_REPLY_WATCH, &r);
	assert_int_equal(r.nkvs, 7);
	assert_false(r.deleted[2]);
	assert_true(r.deleted[3]);
	etcd_reply_free(&r);
	parse_file("watch_canceled.json", ETCD_REPLY_WATCH, &r);
	assert_true(r.canceled);
	assert_int_equal(r.compact_revision, 5);
	assert_int_equal(r.revision, 0);
	etcd_reply_free(&r);
}

static void errors(void **state)
{
	static const char stream_err[] =
		"{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\",\"http_status\":"
		"\"Service Unavailable\"}}";
	struct etcd_reply r;
	char err[128];

	(void)state;
	parse_file("error_lease_not_found.json", ETCD_REPLY_KEEPALIVE, &r);
	assert_int_equal(r.error_code, 5);
	assert_int_equal(etcd_reply_errno(r.error_code), -ENOENT);
	assert_string_equal(r.error, "etcdserver: requested lease not found");
	etcd_reply_free(&r);
	parse_file("error_bad_request.json", ETCD_REPLY_HEADER, &r);
	assert_int_equal(etcd_reply_errno(r.error_code), -EINVAL);
	etcd_reply_free(&r);
	assert_int_equal(etcd_reply_parse(ETCD_REPLY_WATCH, stream_err, strlen(stream_err), &r, err, sizeof(err)), 0);
	assert_int_equal(etcd_reply_errno(r.error_code), -EAGAIN);
	etcd_reply_free(&r);
	assert_int_equal(etcd_reply_errno(4), -ETIMEDOUT);
	assert_int_equal(etcd_reply_errno(2), -EPROTO);
}

static void hostile_documents(void **state)
{
	static const struct {
		enum etcd_reply_kind kind;
		const char *doc;
	} bad[] = {
		{ETCD_REPLY_RANGE, "[]"},
		{ETCD_REPLY_RANGE, "null"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":\"-1\"}}"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":\"9223372036854775808\"}}"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":\"99999999999999999999\"}}"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":\"012\"}}"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":\"1e3\"}}"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":\"\"}}"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":1.5}}"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":-3}}"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":1e300}}"},
		{ETCD_REPLY_RANGE, "{\"header\":{\"revision\":true}}"},
		{ETCD_REPLY_RANGE, "{\"header\":[]}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":{}}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":[1]}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":[{}]}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":[{\"key\":\"QQ\"}]}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":[{\"key\":\"QR==\"}]}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":[{\"key\":\"Q===\"}]}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":[{\"key\":\"QQ==QQ==\"}]}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":[{\"key\":\"QUJD\",\"value\":\"*AAA\"}]}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":[{\"key\":5}]}"},
		{ETCD_REPLY_RANGE, "{\"kvs\":[{\"key\":\"QUJD\",\"lease\":\"x\"}]}"},
		{ETCD_REPLY_TXN, "{\"succeeded\":\"true\"}"},
		{ETCD_REPLY_TXN, "{\"responses\":{}}"},
		{ETCD_REPLY_TXN, "{\"responses\":[5]}"},
		{ETCD_REPLY_TXN, "{\"responses\":[{\"response_range\":[]}]}"},
		{ETCD_REPLY_LEASE, "{\"ID\":\"0\",\"TTL\":\"10\"}"},
		{ETCD_REPLY_LEASE, "{\"ID\":\"5\"}"},
		{ETCD_REPLY_KEEPALIVE, "{\"ID\":\"5\",\"TTL\":\"10\"}"},
		{ETCD_REPLY_KEEPALIVE, "{\"result\":[]}"},
		{ETCD_REPLY_WATCH, "{\"result\":{\"events\":[{\"type\":\"EXPLODE\",\"kv\":{\"key\":\"QQ==\"}}]}}"},
		{ETCD_REPLY_WATCH, "{\"result\":{\"events\":[{\"type\":1,\"kv\":{\"key\":\"QQ==\"}}]}}"},
		{ETCD_REPLY_WATCH, "{\"result\":{\"events\":[{}]}}"},
		{ETCD_REPLY_WATCH, "{\"result\":{\"created\":1}}"},
		{ETCD_REPLY_HEADER, "{\"error\":\"x\"}"},
		{ETCD_REPLY_HEADER, "{\"error\":\"x\",\"code\":-1}"},
		{ETCD_REPLY_HEADER, "{\"error\":\"x\",\"code\":1000}"},
		{ETCD_REPLY_HEADER, "{\"error\":{\"grpc_code\":\"5\"}}"},
		{ETCD_REPLY_KINDS, "{}"},
	};
	struct etcd_reply r;
	char err[128];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (etcd_reply_parse(bad[i].kind, bad[i].doc, strlen(bad[i].doc), &r, err, sizeof(err)) != -EPROTO)
			fail_msg("accepted %s", bad[i].doc);
		assert_true(err[0]);
		assert_null(r.kvs);
		etcd_reply_free(&r);
	}
	/* The largest revision there is, and a control byte in an error message, which is masked. */
	static const char max[] = "{\"header\":{\"revision\":\"9223372036854775807\"}}";
	static const char ctl[] = "{\"error\":\"a\\u0007b\\nc\",\"code\":5}";

	assert_int_equal(etcd_reply_parse(ETCD_REPLY_RANGE, max, strlen(max), &r, err, sizeof(err)), 0);
	assert_true(r.revision == INT64_MAX);
	etcd_reply_free(&r);
	assert_int_equal(etcd_reply_parse(ETCD_REPLY_HEADER, ctl, strlen(ctl), &r, err, sizeof(err)), 0);
	assert_string_equal(r.error, "a?b?c");
	etcd_reply_free(&r);
}

static void base64_strict(void **state)
{
	unsigned char out[16];

	(void)state;
	assert_int_equal(etcd_base64_decode("", 0, out), 0);
	assert_int_equal(etcd_base64_decode("QQ==", 4, out), 1);
	assert_int_equal(out[0], 'A');
	assert_int_equal(etcd_base64_decode("QUI=", 4, out), 2);
	assert_int_equal(etcd_base64_decode("QUJD", 4, out), 3);
	assert_memory_equal(out, "ABC", 3);
	assert_int_equal(etcd_base64_decode("/w==", 4, out), 1);
	assert_int_equal(out[0], 0xff);
	assert_int_equal(etcd_base64_decode("QUJ", 3, out), -EINVAL);
	assert_int_equal(etcd_base64_decode("QUJ=", 4, out), -EINVAL); /* bits past the end */
	assert_int_equal(etcd_base64_decode("Q=Q=", 4, out), -EINVAL);
	assert_int_equal(etcd_base64_decode("QQ==QUJD", 8, out), -EINVAL);
	assert_int_equal(etcd_base64_decode("QU J", 4, out), -EINVAL);
	assert_int_equal(etcd_base64_decode("QUJD\n", 5, out), -EINVAL);
}

/* Every prefix of every recorded reply, and random flips: an error or a parse, never a crash. */
static void truncated_and_mutated(void **state)
{
	static const struct {
		const char *name;
		enum etcd_reply_kind kind;
	} files[] = {
		{"lease_grant.json", ETCD_REPLY_LEASE},       {"lease_keepalive.json", ETCD_REPLY_KEEPALIVE},
		{"range_prefix.json", ETCD_REPLY_RANGE},      {"txn_failed.json", ETCD_REPLY_TXN},
		{"watch_events_many.json", ETCD_REPLY_WATCH}, {"error_lease_not_found.json", ETCD_REPLY_HEADER},
	};
	uint64_t seed = 20;
	struct etcd_reply r;
	char err[128];

	(void)state;
	for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
		size_t len;
		char *buf = load(files[f].name, &len);

		/* Cut anywhere inside the object (the trailing newline aside): never a success. */
		for (size_t n = 0; n + 1 < len; n++) {
			char *cut = malloc(n + 1);

			assert_non_null(cut);
			memcpy(cut, buf, n);
			if (etcd_reply_parse(files[f].kind, cut, n, &r, err, sizeof(err)) == 0 &&
			    strspn(buf + n, "}\n \r") != len - n)
				fail_msg("%s cut at %zu parsed", files[f].name, n);
			etcd_reply_free(&r);
			free(cut);
		}
		for (int i = 0; i < 2000; i++) {
			char *m = malloc(len);

			assert_non_null(m);
			memcpy(m, buf, len);
			for (int k = 0; k < 1 + (int)(unit_rand(&seed) % 4); k++)
				m[unit_rand(&seed) % len] = (char)unit_rand(&seed);
			for (enum etcd_reply_kind kind = 0; kind < ETCD_REPLY_KINDS; kind++) {
				if (etcd_reply_parse(kind, m, len, &r, err, sizeof(err)) == 0)
					for (size_t j = 0; j < r.nkvs; j++)
						assert_true(r.kvs[j].key_len > 0 && r.kvs[j].key[r.kvs[j].key_len] == '\0');
				etcd_reply_free(&r);
			}
			free(m);
		}
		free(buf);
	}
}

/* The recorded watch stream, fed in pieces of every size, splits into the same four messages. */
static void stream_split(void **state)
{
	size_t len;
	char *buf = load("watch_stream.txt", &len);

	(void)state;
	for (size_t piece = 1; piece <= len; piece++) {
		char acc[2048];
		size_t have = 0, fed = 0, msgs = 0;

		while (fed < len || have) {
			size_t n = fed < len ? (len - fed < piece ? len - fed : piece) : 0;
			long m;

			memcpy(acc + have, buf + fed, n);
			have += n;
			fed += n;
			while ((m = etcd_reply_split(acc, have)) > 0) {
				struct etcd_reply r;
				char err[128];

				assert_int_equal(etcd_reply_parse(ETCD_REPLY_WATCH, acc, (size_t)m, &r, err, sizeof(err)), 0);
				etcd_reply_free(&r);
				memmove(acc, acc + m, have - (size_t)m);
				have -= (size_t)m;
				msgs++;
			}
			assert_true(m == 0);
			if (!n && strspn(acc, "\n") == have)
				break;
		}
		assert_int_equal(msgs, 4);
	}
	free(buf);
	/* Braces in strings do not count; junk and a stray closer are errors. */
	assert_int_equal(etcd_reply_split("{\"a\":\"}{\\\"}\"} {", 16), 13);
	assert_int_equal(etcd_reply_split("  \n", 3), 0);
	assert_int_equal(etcd_reply_split("{\"a\":[", 6), 0);
	assert_int_equal(etcd_reply_split("x{}", 3), -EPROTO);
	assert_int_equal(etcd_reply_split("]{}", 3), -EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(lease_grant_and_keepalive),
		cmocka_unit_test(put_range_delete),
		cmocka_unit_test(txn_succeeded_and_failed),
		cmocka_unit_test(watch_messages),
		cmocka_unit_test(errors),
		cmocka_unit_test(hostile_documents),
		cmocka_unit_test(base64_strict),
		cmocka_unit_test(truncated_and_mutated),
		cmocka_unit_test(stream_split),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
