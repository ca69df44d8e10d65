/*
 * GET /metrics' pure parts (api/sandboxd/metrics.c, metrics_text.c): known
 * activity goes into the counters, the exposition is parsed by the
 * Prometheus client's own strict parser (tests/unit/prom_parse.py) and every
 * value is checked against that activity; the VMM's firewall counters are
 * parsed from hostile replies; the writer never overruns a short buffer.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_conn.h"
#include "metrics.h"
#include "net/firewall.h"
#include "unit.h"

#define TEXT_CAP (64 * 1024)

static char text[TEXT_CAP];

/* The script next to this test's source: build/tests/test_metrics -> tests/unit/prom_parse.py. */
static void script_path(char *out, size_t cap)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	assert_true(n > 0);
	self[n] = '\0';
	snprintf(out, cap, "%s/../../tests/unit/prom_parse.py", dirname(self));
	if (access(out, R_OK) < 0)
		snprintf(out, cap, "tests/unit/prom_parse.py");
}

/* The samples of the exposition, as the strict parser read them; fails the test when it refuses it. */
static cJSON *parse_strictly(const char *exposition, size_t len)
{
	char path[] = "/tmp/test_metrics.XXXXXX", script[PATH_MAX + 64], cmd[2 * PATH_MAX];
	static char out[TEXT_CAP * 2];
	size_t got = 0, n;
	int fd = mkstemp(path), status;
	FILE *p;
	cJSON *j;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, exposition, len), (ssize_t)len);
	close(fd);
	script_path(script, sizeof(script));
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s", script, path);
	p = popen(cmd, "r");
	assert_non_null(p);
	while ((n = fread(out + got, 1, sizeof(out) - 1 - got, p)) > 0)
		got += n;
	out[got] = '\0';
	status = pclose(p);
	unlink(path);
	if (status != 0)
		fail_msg("the strict parser refused the exposition (status %d):\n%s", status, exposition);
	j = cJSON_Parse(out);
	assert_non_null(j);
	return j;
}

static double value(const cJSON *samples, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(samples, key);

	if (!cJSON_IsNumber(v))
		fail_msg("no sample %s", key);
	return v->valuedouble;
}

static const char VMM_REPLY_A[] =
	"{\"ok\":true,\"net\":{\"mode\":\"open\",\"counters\":{\"pass_open\":40,\"drop_host\":3,"
	"\"drop_metadata\":2,\"drop_private\":1,\"not_a_reason\":99}}}";
static const char VMM_REPLY_B[] = "{\"ok\":true,\"net\":{\"counters\":{\"pass_open\":5,\"drop_host\":1}}}";

/* Activity with known figures; the view a scrape would make of it. */
static void known_activity(struct metrics *m, struct metrics_view *v, struct http_server *api,
			   struct http_server *ingress)
{
	struct metrics_fw a, b;

	metrics_init(m, 1700000000.5);
	metrics_create(m, METRICS_CREATE_READY);
	metrics_create(m, METRICS_CREATE_READY);
	metrics_create(m, METRICS_CREATE_READY);
	metrics_create(m, METRICS_CREATE_FAILED);
	metrics_create(m, METRICS_CREATE_REJECTED);
	metrics_create(m, METRICS_CREATE_REJECTED);
	metrics_ready(m, 0.05); /* on a bound: in that bucket (le) */
	metrics_ready(m, 0.3);
	metrics_ready(m, 500);  /* beyond the last bound: +Inf only */
	metrics_end(m, "exited");
	metrics_end(m, "terminated");
	metrics_end(m, "terminated");
	metrics_end(m, "idle_timeout");
	metrics_end(m, "something new");
	metrics_end(m, NULL);
	m->execs_started = 4;
	metrics_exec_end(m, "exited");
	metrics_exec_end(m, "exited");
	metrics_exec_end(m, "signaled");
	metrics_exec_end(m, "weird");
	m->exec_output_bytes[0] = 12345;
	m->exec_output_bytes[1] = 6;
	/* A sandbox whose VMM went (A retired) and one still running (B seen). */
	assert_int_equal(metrics_fw_parse(VMM_REPLY_A, strlen(VMM_REPLY_A), &a), 0);
	assert_int_equal(metrics_fw_parse(VMM_REPLY_B, strlen(VMM_REPLY_B), &b), 0);
	metrics_fw_retire(m, &a);
	for (unsigned i = 0; i < METRICS_FW_REASONS; i++)
		assert_int_equal(a.count[i], 0);
	m->isolation = METRICS_ISOLATION_BREACHED;
	m->isolation_runs[METRICS_ISOLATION_OK] = 2;
	m->isolation_runs[METRICS_ISOLATION_BREACHED] = 1;
	m->isolation_probe_failures = 1;
	m->isolation_probes = 20;
	m->isolation_breached = 1;
	m->isolation_last_run = 1700000100.25;

	memset(api, 0, sizeof(*api));
	memset(ingress, 0, sizeof(*ingress));
	api->connections = 2;
	api->accepted = 9;
	api->replies[2] = 7;
	api->replies[4] = 2;
	ingress->connections = 1;
	ingress->accepted = 5;
	ingress->replies[2] = 3;
	ingress->replies[5] = 1;
	m->servers[METRICS_LISTENER_UNIX] = api;
	m->servers[METRICS_LISTENER_INGRESS] = ingress;

	memset(v, 0, sizeof(*v));
	v->m = m;
	v->sandboxes[1] = 2; /* running */
	v->sandboxes[3] = 1; /* paused */
	v->sandboxes[6] = 4; /* finished */
	v->execs_running = 1;
	v->fw = m->fw_gone;
	for (unsigned i = 0; i < METRICS_FW_REASONS; i++)
		v->fw.count[i] += b.count[i];
	for (unsigned i = 0; i < METRICS_LISTENERS; i++)
		metrics_listener_read(m->servers[i], &v->listeners[i]);
	v->images_known = true;
	v->images[0] = 2;
	v->image_bytes[0] = 1 << 20;
	v->images[1] = 1;
	v->image_bytes[1] = 4096;
	v->rss_bytes = 8 << 20;
	v->open_fds = 17;
}

static void exposition_parses_and_counts(void **state)
{
	struct metrics m;
	struct metrics_view v;
	struct http_server api, ingress;
	size_t len;
	cJSON *s;

	(void)state;
	known_activity(&m, &v, &api, &ingress);
	assert_int_equal(metrics_text_write(&v, text, sizeof(text), &len), 0);
	assert_int_equal(strlen(text), len);
	s = parse_strictly(text, len);

	assert_true(value(s, "sandvm_sandboxes{state=\"running\"}") == 2);
	assert_true(value(s, "sandvm_sandboxes{state=\"paused\"}") == 1);
	assert_true(value(s, "sandvm_sandboxes{state=\"finished\"}") == 4);
	assert_true(value(s, "sandvm_sandboxes{state=\"starting\"}") == 0);
	assert_true(value(s, "sandvm_sandbox_creates_total{outcome=\"ready\"}") == 3);
	assert_true(value(s, "sandvm_sandbox_creates_total{outcome=\"failed\"}") == 1);
	assert_true(value(s, "sandvm_sandbox_creates_total{outcome=\"rejected\"}") == 2);
	assert_true(value(s, "sandvm_sandbox_terminations_total{reason=\"exited\"}") == 1);
	assert_true(value(s, "sandvm_sandbox_terminations_total{reason=\"terminated\"}") == 2);
	assert_true(value(s, "sandvm_sandbox_terminations_total{reason=\"idle_timeout\"}") == 1);
	assert_true(value(s, "sandvm_sandbox_terminations_total{reason=\"other\"}") == 2);
	assert_true(value(s, "sandvm_sandbox_terminations_total{reason=\"timeout\"}") == 0);
	/* The histogram: cumulative buckets, the sum and the count. */
	assert_true(value(s, "sandvm_sandbox_create_ready_seconds_bucket{le=\"0.05\"}") == 1);
	assert_true(value(s, "sandvm_sandbox_create_ready_seconds_bucket{le=\"0.25\"}") == 1);
	assert_true(value(s, "sandvm_sandbox_create_ready_seconds_bucket{le=\"0.5\"}") == 2);
	assert_true(value(s, "sandvm_sandbox_create_ready_seconds_bucket{le=\"120\"}") == 2);
	assert_true(value(s, "sandvm_sandbox_create_ready_seconds_bucket{le=\"+Inf\"}") == 3);
	assert_true(value(s, "sandvm_sandbox_create_ready_seconds_count") == 3);
	assert_true(value(s, "sandvm_sandbox_create_ready_seconds_sum") > 500.34 &&
		    value(s, "sandvm_sandbox_create_ready_seconds_sum") < 500.36);
	assert_true(value(s, "sandvm_execs_running") == 1);
	assert_true(value(s, "sandvm_execs_started_total") == 4);
	assert_true(value(s, "sandvm_execs_completed_total{reason=\"exited\"}") == 2);
	assert_true(value(s, "sandvm_execs_completed_total{reason=\"signaled\"}") == 1);
	assert_true(value(s, "sandvm_execs_completed_total{reason=\"error\"}") == 1);
	assert_true(value(s, "sandvm_exec_output_bytes_total{stream=\"stdout\"}") == 12345);
	assert_true(value(s, "sandvm_exec_output_bytes_total{stream=\"stderr\"}") == 6);
	/* Verdicts: the retired VMM's plus the live one's; an unknown name in a reply is never a label. */
	assert_true(value(s, "sandvm_firewall_verdicts_total{reason=\"pass_open\"}") == 45);
	assert_true(value(s, "sandvm_firewall_verdicts_total{reason=\"drop_host\"}") == 4);
	assert_true(value(s, "sandvm_firewall_verdicts_total{reason=\"drop_metadata\"}") == 2);
	assert_true(value(s, "sandvm_firewall_verdicts_total{reason=\"drop_private\"}") == 1);
	assert_true(value(s, "sandvm_firewall_verdicts_total{reason=\"drop_spoof_ip\"}") == 0);
	assert_null(cJSON_GetObjectItemCaseSensitive(s, "sandvm_firewall_verdicts_total{reason=\"not_a_reason\"}"));
	assert_true(value(s, "sandvm_connections_open{listener=\"unix\"}") == 2);
	assert_true(value(s, "sandvm_connections_open{listener=\"ingress\"}") == 1);
	assert_null(cJSON_GetObjectItemCaseSensitive(s, "sandvm_connections_open{listener=\"tcp\"}"));
	assert_true(value(s, "sandvm_api_requests_total{code=\"2xx\"}") == 7);
	assert_true(value(s, "sandvm_api_requests_total{code=\"4xx\"}") == 2);
	assert_true(value(s, "sandvm_ingress_connections_total") == 5);
	assert_true(value(s, "sandvm_ingress_requests_total{code=\"2xx\"}") == 3);
	assert_true(value(s, "sandvm_ingress_requests_total{code=\"5xx\"}") == 1);
	assert_true(value(s, "sandvm_snapshot_images{key=\"managed\"}") == 2);
	assert_true(value(s, "sandvm_snapshot_images{key=\"customer\"}") == 1);
	assert_true(value(s, "sandvm_snapshot_image_bytes{key=\"managed\"}") == 1 << 20);
	assert_true(value(s, "sandvm_snapshot_image_bytes{key=\"customer\"}") == 4096);
	assert_true(value(s, "sandvm_isolation_state{state=\"breached\"}") == 1);
	assert_true(value(s, "sandvm_isolation_state{state=\"ok\"}") == 0);
	assert_true(value(s, "sandvm_isolation_runs_total{result=\"ok\"}") == 2);
	assert_true(value(s, "sandvm_isolation_probe_failures_total") == 1);
	assert_true(value(s, "sandvm_isolation_last_run_breached_probes") == 1);
	assert_true(value(s, "sandvm_isolation_last_run_timestamp_seconds") == 1700000100.25);
	assert_true(value(s, "process_resident_memory_bytes") == 8 << 20);
	assert_true(value(s, "process_open_fds") == 17);
	assert_true(value(s, "process_start_time_seconds") == 1700000000.5);
	cJSON_Delete(s);
}

/* A worker without ingress, images or isolation runs: those families go or read 0, and it still parses. */
static void quiet_worker_parses(void **state)
{
	struct metrics m;
	struct metrics_view v = {0};
	size_t len;
	cJSON *s;

	(void)state;
	metrics_init(&m, 1.0);
	v.m = &m;
	assert_int_equal(metrics_text_write(&v, text, sizeof(text), &len), 0);
	s = parse_strictly(text, len);
	assert_null(cJSON_GetObjectItemCaseSensitive(s, "sandvm_ingress_connections_total"));
	assert_null(cJSON_GetObjectItemCaseSensitive(s, "sandvm_snapshot_images{key=\"managed\"}"));
	assert_true(value(s, "sandvm_isolation_state{state=\"unknown\"}") == 1);
	assert_true(value(s, "sandvm_sandbox_create_ready_seconds_count") == 0);
	cJSON_Delete(s);
}

static void short_buffers_are_refused(void **state)
{
	struct metrics m;
	struct metrics_view v;
	struct http_server api, ingress;
	static char small[TEXT_CAP];
	size_t len, full;

	(void)state;
	known_activity(&m, &v, &api, &ingress);
	assert_int_equal(metrics_text_write(&v, text, sizeof(text), &full), 0);
	for (size_t cap = 0; cap <= full; cap++) {
		memset(small, 'x', sizeof(small));
		assert_int_equal(metrics_text_write(&v, small, cap, &len), -ENOSPC);
		for (size_t i = cap; i < sizeof(small); i++)
			if (small[i] != 'x')
				fail_msg("cap %zu: byte %zu written", cap, i);
	}
	assert_int_equal(metrics_text_write(&v, small, full + 1, &len), 0);
	assert_int_equal(len, full);
}

static void fw_names_match_the_vmm(void **state)
{
	(void)state;
	assert_int_equal(METRICS_FW_REASONS, FW_REASON_COUNT);
	for (int r = 0; r < FW_REASON_COUNT; r++)
		assert_string_equal(metrics_fw_reason_names[r], fw_reason_name((enum fw_verdict_reason)r));
}

static void fw_parse_hostile(void **state)
{
	static const char *const bad[] = {
		"",
		"not json",
		"[]",
		"{}",
		"{\"ok\":false,\"net\":{\"counters\":{}}}",
		"{\"ok\":1,\"net\":{\"counters\":{}}}",
		"{\"ok\":true}",
		"{\"ok\":true,\"net\":[]}",
		"{\"ok\":true,\"net\":{\"counters\":[1,2]}}",
		"{\"ok\":true,\"net\":{\"counters\":{\"drop_host\":-1}}}",
		"{\"ok\":true,\"net\":{\"counters\":{\"drop_host\":1.5}}}",
		"{\"ok\":true,\"net\":{\"counters\":{\"drop_host\":1e300}}}",
		"{\"ok\":true,\"net\":{\"counters\":{\"drop_host\":9007199254740994}}}",
		"{\"ok\":true,\"net\":{\"counters\":{\"drop_host\":\"5\"}}}",
		"{\"ok\":true,\"net\":{\"counters\":{\"drop_host\":null}}}",
		"{\"ok\":true,\"net\":{\"counters\":{\"drop_host\":{\"a\":1}}}}",
		"{\"ok\":true,\"net\":{\"counters\":{\"pass_open\":1,\"drop_host\":",
	};
	struct metrics_fw fw;
	uint64_t seed = 24;
	char buf[512];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&fw, 0xa5, sizeof(fw));
		if (metrics_fw_parse(bad[i], strlen(bad[i]), &fw) != -EBADMSG)
			fail_msg("accepted %s", bad[i]);
		for (unsigned r = 0; r < METRICS_FW_REASONS; r++)
			assert_int_equal(fw.count[r], 0);
	}
	assert_int_equal(metrics_fw_parse(NULL, 0, &fw), -EBADMSG);
	/* The length is the bound, not a NUL: a good reply cut short is refused. */
	assert_int_equal(metrics_fw_parse(VMM_REPLY_A, strlen(VMM_REPLY_A) - 2, &fw), -EBADMSG);
	/* The largest exact count is taken; a missing reason is 0. */
	{
		static const char big[] = "{\"ok\":true,\"net\":{\"counters\":{\"drop_vlan\":9007199254740992}}}";

		assert_int_equal(metrics_fw_parse(big, strlen(big), &fw), 0);
	}
	assert_true(fw.count[14] == 9007199254740992ull);
	assert_int_equal(fw.count[0], 0);
	/* Random bytes spliced into a good reply never crash it, and a refusal leaves zeros. */
	for (int round = 0; round < 20000; round++) {
		size_t n = strlen(VMM_REPLY_A);

		memcpy(buf, VMM_REPLY_A, n);
		for (int k = 0; k < 3; k++)
			buf[unit_rand(&seed) % n] = (char)unit_rand(&seed);
		if (metrics_fw_parse(buf, unit_rand(&seed) % (n + 1), &fw) < 0)
			for (unsigned r = 0; r < METRICS_FW_REASONS; r++)
				assert_int_equal(fw.count[r], 0);
	}
}

static void counters_go_to_their_bucket(void **state)
{
	struct metrics m;

	(void)state;
	metrics_init(&m, 0);
	metrics_ready(&m, -3);   /* a clock step back: 0 */
	metrics_ready(&m, 0.051);
	metrics_ready(&m, 120);
	metrics_ready(&m, 120.001);
	assert_int_equal(m.ready_bucket[0], 1);
	assert_int_equal(m.ready_bucket[1], 1);
	assert_int_equal(m.ready_bucket[METRICS_READY_BUCKETS - 1], 1);
	assert_int_equal(m.ready_bucket[METRICS_READY_BUCKETS], 1);
	assert_int_equal(m.ready_count, 4);
	metrics_create(&m, METRICS_CREATE_OUTCOMES); /* out of range: ignored */
	metrics_create(&m, (enum metrics_create_outcome)-1);
	for (unsigned i = 0; i < METRICS_CREATE_OUTCOMES; i++)
		assert_int_equal(m.creates[i], 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(exposition_parses_and_counts),
		cmocka_unit_test(quiet_worker_parses),
		cmocka_unit_test(short_buffers_are_refused),
		cmocka_unit_test(fw_names_match_the_vmm),
		cmocka_unit_test(fw_parse_hostile),
		cmocka_unit_test(counters_go_to_their_bucket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
