/* lib/log.c's rate limiter, on an injected clock, and what it writes to the log. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "log_capture.h"
#include "log.h"

static uint64_t fake_clock(void *ctx)
{
	return *(const uint64_t *)ctx;
}

static void ratelimit_refuses_empty_limits(void **state)
{
	struct sv_ratelimit rl;

	(void)state;
	assert_int_equal(sv_ratelimit_init(&rl, "x", 0, 1000), -EINVAL);
	assert_int_equal(sv_ratelimit_init(&rl, "x", 1, 0), -EINVAL);
	assert_int_equal(sv_ratelimit_init(&rl, NULL, 1, 1000), -EINVAL);
}

/* burst per window, the rest counted; the count is logged before the next message that passes. */
static void ratelimit_burst_window_and_count(void **state)
{
	struct log_capture cap;
	struct sv_ratelimit rl;
	uint64_t now = 5000;
	unsigned passed = 0;
	char *log;

	(void)state;
	assert_int_equal(sv_ratelimit_init(&rl, "dev: thing broke", 3, 1000), 0);
	sv_ratelimit_set_clock(&rl, fake_clock, &now);
	log_capture_start(&cap);
	for (int i = 0; i < 10; i++)
		sv_warn_ratelimited(&rl, "dev: thing broke (%d)", i);
	now += 999; /* still the same window */
	for (int i = 0; i < 5; i++)
		passed += sv_ratelimit_allow(&rl, SV_LOG_WARN);
	assert_int_equal(passed, 0);
	assert_int_equal(sv_ratelimit_suppressed(&rl), 12);
	now += 1; /* a new window: the count first, then the message */
	sv_warn_ratelimited(&rl, "dev: thing broke (%d)", 100);
	sv_ratelimit_flush(&rl); /* nothing pending: logs nothing */
	sv_warn_ratelimited(&rl, "dev: thing broke (%d)", 101);
	sv_warn_ratelimited(&rl, "dev: thing broke (%d)", 102);
	sv_warn_ratelimited(&rl, "dev: thing broke (%d)", 103); /* over the burst again */
	sv_ratelimit_destroy(&rl); /* flushes */
	log = log_capture_end(&cap);
	assert_string_equal(log, "sandvm: warning: dev: thing broke (0)\n"
				 "sandvm: warning: dev: thing broke (1)\n"
				 "sandvm: warning: dev: thing broke (2)\n"
				 "sandvm: warning: dev: thing broke: 12 similar messages suppressed\n"
				 "sandvm: warning: dev: thing broke (100)\n"
				 "sandvm: warning: dev: thing broke (101)\n"
				 "sandvm: warning: dev: thing broke (102)\n"
				 "sandvm: warning: dev: thing broke: 1 similar message suppressed\n");
	free(log);
}

/* Messages below the log level are neither logged nor counted. */
static void ratelimit_ignores_filtered_levels(void **state)
{
	struct log_capture cap;
	struct sv_ratelimit rl;
	uint64_t now = 0;
	char *log;

	(void)state;
	assert_int_equal(sv_ratelimit_init(&rl, "dbg", 1, 1000), 0);
	sv_ratelimit_set_clock(&rl, fake_clock, &now);
	log_capture_start(&cap);
	for (int i = 0; i < 100; i++)
		sv_debug_ratelimited(&rl, "dbg %d", i);
	assert_int_equal(sv_ratelimit_suppressed(&rl), 0);
	sv_info_ratelimited(&rl, "info %d", 1);
	sv_info_ratelimited(&rl, "info %d", 2);
	sv_ratelimit_destroy(&rl);
	log = log_capture_end(&cap);
	assert_string_equal(log, "sandvm: info: info 1\n"
				 "sandvm: info: dbg: 1 similar message suppressed\n");
	free(log);
}

struct hammer {
	struct sv_ratelimit *rl;
	unsigned passed;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;

	for (int i = 0; i < 10000; i++)
		if (sv_ratelimit_allow(h->rl, SV_LOG_DEBUG))
			h->passed++;
	for (int i = 0; i < 10000; i++)
		if (sv_ratelimit_allow(h->rl, SV_LOG_WARN))
			h->passed++;
	return NULL;
}

/* vCPU threads and the main thread share a device's limiter: the burst holds across threads. */
static void ratelimit_shared_between_threads(void **state)
{
	struct hammer h[4];
	pthread_t t[4];
	struct log_capture cap;
	struct sv_ratelimit rl;
	uint64_t now = 42;
	unsigned passed = 0;
	char *log;

	(void)state;
	assert_int_equal(sv_ratelimit_init(&rl, "shared", 7, 1000), 0);
	sv_ratelimit_set_clock(&rl, fake_clock, &now);
	log_capture_start(&cap);
	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){ .rl = &rl };
		assert_int_equal(pthread_create(&t[i], NULL, hammer_thread, &h[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		passed += h[i].passed;
	}
	assert_int_equal(passed, 7);
	assert_int_equal(sv_ratelimit_suppressed(&rl), 4 * 10000 - 7);
	sv_ratelimit_destroy(&rl);
	log = log_capture_end(&cap);
	assert_string_equal(log, "sandvm: warning: shared: 39993 similar messages suppressed\n");
	free(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ratelimit_refuses_empty_limits),
		cmocka_unit_test(ratelimit_burst_window_and_count),
		cmocka_unit_test(ratelimit_ignores_filtered_levels),
		cmocka_unit_test(ratelimit_shared_between_threads),
	};

	sv_log_init("sandvm", SV_LOG_INFO);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
