/* The gateway's worker table and placement (api/sandboxd/fleet/): hostile records, events, choices. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "fleet/etcd.h"
#include "fleet/fleet_table.h"
#include "fleet/placement.h"

static char *record(const char *id, const char *address, unsigned sandboxes, unsigned mem, unsigned max_sb,
		    unsigned max_mem, bool accepting)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf),
		 "{\"id\":\"%s\",\"address\":\"%s\",\"version\":\"v1\",\"sandboxes\":%u,\"memory_mib\":%u,"
		 "\"max_sandboxes\":%u,\"max_memory_mib\":%u,\"accepting\":%s,\"started\":1700000000}",
		 id, address, sandboxes, mem, max_sb, max_mem, accepting ? "true" : "false");
	return buf;
}

static int put(struct fleet_table *t, const char *id, unsigned sandboxes, unsigned mem, unsigned max_sb,
	       unsigned max_mem, bool accepting)
{
	char key[128], err[256];
	const char *v = record(id, "https://10.0.0.1:8443", sandboxes, mem, max_sb, max_mem, accepting);

	snprintf(key, sizeof(key), "/sandvm/workers/%s", id);
	return fleet_table_put(t, key, strlen(key), v, strlen(v), 1, err, sizeof(err));
}

static void test_record_good(void **state)
{
	struct fleet_worker_record r;
	char err[256];
	const char *v = record("w-1.a_b", "https://[::1]:443", 3, 1024, 64, 8192, true);

	(void)state;
	assert_int_equal(fleet_worker_record_parse(v, strlen(v), &r, err, sizeof(err)), 0);
	assert_string_equal(r.id, "w-1.a_b");
	assert_string_equal(r.host, "::1");
	assert_int_equal(r.port, 443);
	assert_int_equal(r.sandboxes, 3);
	assert_int_equal(r.memory_mib, 1024);
	assert_int_equal(r.max_sandboxes, 64);
	assert_int_equal(r.max_memory_mib, 8192);
	assert_true(r.accepting);
	assert_true(r.started == 1700000000.0);
	assert_string_equal(r.version, "v1");
}

static void test_record_hostile(void **state)
{
	static const char *bad[] = {
		"",
		"[]",
		"{}",
		"null",
		"{\"id\":\"w\"}",
		/* ids */
		"{\"id\":\"\",\"address\":\"https://a:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"a/b\",\"address\":\"https://a:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"..\",\"address\":\"https://a:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":7,\"address\":\"https://a:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		/* addresses */
		"{\"id\":\"w\",\"address\":\"http://a:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://a:0\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://a:65536\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://a:1/path\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://u@a:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://a\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://[zz]:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://a b:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		/* numbers */
		"{\"id\":\"w\",\"address\":\"https://a:1\",\"sandboxes\":-1,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://a:1\",\"sandboxes\":0.5,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://a:1\",\"sandboxes\":0,\"memory_mib\":1e300,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://a:1\",\"sandboxes\":\"0\",\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true}",
		"{\"id\":\"w\",\"address\":\"https://a:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":1}",
		"{\"id\":\"w\",\"address\":\"https://a:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true,\"started\":-5}",
		"{\"id\":\"w\",\"address\":\"https://a:1\",\"sandboxes\":0,\"memory_mib\":0,\"max_sandboxes\":1,"
		"\"max_memory_mib\":1,\"accepting\":true,\"version\":\"a\\u0001\"}",
	};
	struct fleet_worker_record r;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(fleet_worker_record_parse(bad[i], strlen(bad[i]), &r, err, sizeof(err)), -EINVAL);
		assert_true(err[0] != '\0');
	}
	/* Over the size bound, whatever it holds. */
	{
		size_t n = FLEET_RECORD_MAX + 1;
		char *big = malloc(n);

		memset(big, ' ', n);
		assert_int_equal(fleet_worker_record_parse(big, n, &r, err, sizeof(err)), -EINVAL);
		free(big);
	}
	/* A 64-byte id is one too long. */
	{
		char id[65];

		memset(id, 'a', 64);
		id[64] = '\0';
		const char *v = record(id, "https://a:1", 0, 0, 1, 1, true);
		assert_int_equal(fleet_worker_record_parse(v, strlen(v), &r, err, sizeof(err)), -EINVAL);
		id[63] = '\0';
		v = record(id, "https://a:1", 0, 0, 1, 1, true);
		assert_int_equal(fleet_worker_record_parse(v, strlen(v), &r, err, sizeof(err)), 0);
	}
}

static void test_sandbox_record(void **state)
{
	struct fleet_sandbox_record r;
	char err[256];
	const char *good = "{\"worker\":\"w1\",\"created\":1700000000.5}";
	const char *bad = "{\"worker\":\"w/1\"}";

	(void)state;
	assert_int_equal(fleet_sandbox_record_parse(good, strlen(good), &r, err, sizeof(err)), 0);
	assert_string_equal(r.worker, "w1");
	assert_int_equal(fleet_sandbox_record_parse(bad, strlen(bad), &r, err, sizeof(err)), -EINVAL);
	assert_true(fleet_sandbox_id_valid("sb-0123456789abcdef", 19));
	assert_false(fleet_sandbox_id_valid("sb-0123456789ABCDEF", 19));
	assert_false(fleet_sandbox_id_valid("sb-0123456789abcde", 18));
	assert_false(fleet_sandbox_id_valid("xx-0123456789abcdef", 19));
}

static void test_events(void **state)
{
	struct fleet_table t;
	char err[256];
	struct fleet_entry *w;
	const char *k = "/sandvm/workers/w1";
	char other[1024];

	(void)state;
	snprintf(other, sizeof(other), "%s", record("w2", "https://a:1", 0, 0, 1, 1, true));
	fleet_table_init(&t);
	assert_int_equal(put(&t, "w1", 1, 512, 10, 4096, true), 0);
	assert_int_equal(put(&t, "w2", 0, 0, 10, 4096, true), 0);
	assert_int_equal(fleet_table_live(&t), 2);
	w = fleet_table_find(&t, "w1");
	assert_non_null(w);
	fleet_entry_inflight_add(w, 256);
	/* The key went away: lost, still known, its in-flight count kept. */
	assert_int_equal(fleet_table_delete(&t, k, strlen(k)), 0);
	assert_false(w->live);
	assert_int_equal(fleet_table_live(&t), 1);
	assert_int_equal(fleet_table_delete(&t, "/sandvm/workers/nobody", 22), -ENOENT);
	assert_int_equal(fleet_table_delete(&t, "/sandvm/other/w1", 16), -EINVAL);
	/* Back with the same id: the same entry, live again. */
	assert_int_equal(put(&t, "w1", 2, 1024, 10, 4096, true), 0);
	assert_ptr_equal(fleet_table_find(&t, "w1"), w);
	assert_true(w->live);
	assert_int_equal(w->inflight, 1);
	assert_int_equal(w->rec.sandboxes, 2);
	fleet_entry_inflight_done(w, 256);
	assert_int_equal(w->inflight, 0);
	assert_int_equal(w->inflight_mib, 0);
	fleet_entry_inflight_done(w, 256); /* never below zero */
	assert_int_equal(w->inflight, 0);
	/* A record under another worker's key is refused; a bad record stops creates, not routing. */
	assert_int_equal(fleet_table_put(&t, k, strlen(k), other, strlen(other), 2, err, sizeof(err)), -EINVAL);
	assert_true(w->live);
	assert_false(w->rec.accepting);
	assert_string_equal(w->rec.address, "https://10.0.0.1:8443");
	/* A key that names no worker. */
	assert_int_equal(fleet_table_put(&t, "/sandvm/workers/", 16, other, strlen(other), 2, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(fleet_table_put(&t, "/sandvm/workers/a/b", 19, other, strlen(other), 2, err, sizeof(err)),
			 -EINVAL);
	fleet_table_destroy(&t);
}

static void test_reload(void **state)
{
	struct fleet_table t;
	char err[256], v2[1024], v3[1024];
	struct etcd_kv kvs[3];

	(void)state;
	fleet_table_init(&t);
	assert_int_equal(put(&t, "w1", 0, 0, 10, 4096, true), 0);
	assert_int_equal(put(&t, "w2", 0, 0, 10, 4096, true), 0);
	snprintf(v2, sizeof(v2), "%s", record("w2", "https://b:2", 5, 100, 10, 4096, true));
	snprintf(v3, sizeof(v3), "%s", record("w3", "https://c:3", 0, 0, 10, 4096, true));
	memset(kvs, 0, sizeof(kvs));
	kvs[0] = (struct etcd_kv){.key = "/sandvm/workers/w2", .key_len = 18, .value = v2, .value_len = strlen(v2)};
	kvs[1] = (struct etcd_kv){.key = "/sandvm/workers/w3", .key_len = 18, .value = v3, .value_len = strlen(v3)};
	kvs[2] = (struct etcd_kv){.key = "/sandvm/workers/w4", .key_len = 18, .value = "{", .value_len = 1};
	assert_int_equal(fleet_table_reload(&t, kvs, 3, err, sizeof(err)), 1);
	assert_false(fleet_table_find(&t, "w1")->live);
	assert_true(fleet_table_find(&t, "w2")->live);
	assert_int_equal(fleet_table_find(&t, "w2")->rec.sandboxes, 5);
	assert_true(fleet_table_find(&t, "w3")->live);
	assert_null(fleet_table_find(&t, "w4"));
	assert_int_equal(fleet_table_live(&t), 2);
	fleet_table_destroy(&t);
}

static void test_capacity(void **state)
{
	struct fleet_table t;
	char id[16];

	(void)state;
	fleet_table_init(&t);
	for (int i = 0; i < FLEET_WORKERS_MAX; i++) {
		snprintf(id, sizeof(id), "w%d", i);
		assert_int_equal(put(&t, id, 0, 0, 1, 1, true), 0);
	}
	assert_int_equal(put(&t, "one-more", 0, 0, 1, 1, true), -ENOSPC);
	/* A lost worker with nothing in flight makes room; one with a create in flight does not. */
	fleet_entry_inflight_add(fleet_table_find(&t, "w0"), 1);
	assert_int_equal(fleet_table_delete(&t, "/sandvm/workers/w0", 18), 0);
	assert_int_equal(put(&t, "one-more", 0, 0, 1, 1, true), -ENOSPC);
	assert_int_equal(fleet_table_delete(&t, "/sandvm/workers/w1", 18), 0);
	assert_int_equal(put(&t, "one-more", 0, 0, 1, 1, true), 0);
	assert_null(fleet_table_find(&t, "w1"));
	assert_non_null(fleet_table_find(&t, "w0"));
	fleet_table_destroy(&t);
}

/* ---- placement ---- */

struct seq {
	const uint32_t *v;
	size_t n, i;
};

static uint32_t seq_next(void *ctx)
{
	struct seq *s = ctx;

	return s->v[s->i++ % s->n];
}

static uint32_t lcg_next(void *ctx)
{
	return unit_rand(ctx);
}

static void test_place_eligibility(void **state)
{
	struct fleet_table t;
	struct fleet_entry *w;
	uint64_t rng = 1;
	struct placement_request rq = {.memory_mib = 512, .sample = 3, .rand = lcg_next, .rand_ctx = &rng};

	(void)state;
	fleet_table_init(&t);
	assert_int_equal(placement_choose(&t, &rq, &w), -ENOSPC);
	assert_int_equal(put(&t, "full-slots", 4, 0, 4, 8192, true), 0);
	assert_int_equal(put(&t, "full-mem", 0, 7800, 10, 8192, true), 0);
	assert_int_equal(put(&t, "closed", 0, 0, 10, 8192, false), 0);
	assert_int_equal(put(&t, "lost", 0, 0, 10, 8192, true), 0);
	assert_int_equal(fleet_table_delete(&t, "/sandvm/workers/lost", 20), 0);
	assert_int_equal(placement_choose(&t, &rq, &w), -ENOSPC);
	/* Exactly at the memory bound is room. */
	assert_int_equal(put(&t, "exact", 0, 7680, 10, 8192, true), 0);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(placement_choose(&t, &rq, &w), 0);
		assert_string_equal(w->rec.id, "exact");
	}
	/* Creates in flight count: one more 512 MiB create does not fit any more, nor does a slot. */
	fleet_entry_inflight_add(w, 1);
	assert_int_equal(placement_choose(&t, &rq, &w), -ENOSPC);
	fleet_entry_inflight_done(fleet_table_find(&t, "exact"), 1);
	assert_int_equal(put(&t, "slots", 3, 0, 4, 8192, true), 0);
	fleet_entry_inflight_add(fleet_table_find(&t, "slots"), 0);
	{
		const char *ex[] = {"exact"};

		rq.exclude = ex;
		rq.nexclude = 1;
		assert_int_equal(placement_choose(&t, &rq, &w), -ENOSPC); /* "slots" is full with its in-flight one */
		fleet_entry_inflight_done(fleet_table_find(&t, "slots"), 0);
		assert_int_equal(placement_choose(&t, &rq, &w), 0);
		assert_string_equal(w->rec.id, "slots");
	}
	rq.rand = NULL;
	assert_int_equal(placement_choose(&t, &rq, &w), -EINVAL);
	fleet_table_destroy(&t);
}

static void test_place_sample(void **state)
{
	struct fleet_table t;
	struct fleet_entry *w;
	/* Draws of 0: the first two eligible in table order, a and b. */
	const uint32_t draws[] = {0, 0};
	struct seq s = {.v = draws, .n = 2};
	struct placement_request rq = {.memory_mib = 256, .sample = 2, .rand = seq_next, .rand_ctx = &s};
	unsigned hits[4] = {0};
	uint64_t rng = 42;

	(void)state;
	fleet_table_init(&t);
	assert_int_equal(put(&t, "a", 0, 1000, 10, 8000, true), 0); /* 7000 free */
	assert_int_equal(put(&t, "b", 0, 0, 10, 8000, true), 0);    /* 8000 free */
	assert_int_equal(put(&t, "c", 0, 6000, 10, 8000, true), 0); /* 2000 free */
	assert_int_equal(put(&t, "d", 0, 3000, 10, 8000, true), 0); /* 5000 free */
	/* a against b: b has more free memory. */
	assert_int_equal(placement_choose(&t, &rq, &w), 0);
	assert_string_equal(w->rec.id, "b");
	/* Draws of 2: c (index 2 of [a b c d]), then d (index 3 of [c b a d]): d has more free. */
	{
		const uint32_t d2[] = {2, 2};
		struct seq s2 = {.v = d2, .n = 2};

		rq.rand_ctx = &s2;
		assert_int_equal(placement_choose(&t, &rq, &w), 0);
		assert_string_equal(w->rec.id, "d");
	}
	/* Free memory counts creates in flight: d with 3000 MiB in flight has less than c. */
	fleet_entry_inflight_add(fleet_table_find(&t, "d"), 4000);
	{
		const uint32_t d2[] = {2, 2};
		struct seq s2 = {.v = d2, .n = 2};

		rq.rand_ctx = &s2;
		assert_int_equal(placement_choose(&t, &rq, &w), 0);
		assert_string_equal(w->rec.id, "c");
	}
	fleet_entry_inflight_done(fleet_table_find(&t, "d"), 4000);
	/* k >= eligible: the best of all, every time. */
	rq.sample = 8;
	rq.rand = lcg_next;
	rq.rand_ctx = &rng;
	for (int i = 0; i < 50; i++) {
		assert_int_equal(placement_choose(&t, &rq, &w), 0);
		assert_string_equal(w->rec.id, "b");
	}
	/* Two choices: the emptiest wins most often, the fullest never (it loses every pair). */
	rq.sample = 2;
	for (int i = 0; i < 4000; i++) {
		assert_int_equal(placement_choose(&t, &rq, &w), 0);
		hits[w->rec.id[0] - 'a']++;
	}
	assert_int_equal(hits[2], 0);
	assert_true(hits[1] > hits[0] && hits[0] > hits[3]);
	/* b gets every pair it is in: 3 of 6 pairs. */
	assert_in_range(hits[1], 1700, 2300);
	fleet_table_destroy(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_good),   cmocka_unit_test(test_record_hostile),
		cmocka_unit_test(test_sandbox_record), cmocka_unit_test(test_events),
		cmocka_unit_test(test_reload),        cmocka_unit_test(test_capacity),
		cmocka_unit_test(test_place_eligibility), cmocka_unit_test(test_place_sample),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
