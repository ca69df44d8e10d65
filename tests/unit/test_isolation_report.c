/*
 * The isolation monitor's probe report (api/sandboxd/isolation_report.c):
 * a guest prints it, so every malformed, oversized or ambiguous report is
 * refused (and reads "unknown", never "ok"), and a wall that did not hold is
 * "breached" naming the probe.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "isolation_report.h"
#include "unit.h"

static struct isolation_report rep;

static int parse(const char *text, char *err, size_t cap)
{
	return isolation_report_parse(text, strlen(text), &rep, err, cap);
}

static void healthy_report_is_ok(void **state)
{
	char err[200];

	(void)state;
	assert_int_equal(parse("sandvm-isolation-report 1\n"
			       "probe api_tcp:10.200.0.1:8443 blocked blocked connect: timed out\n"
			       "probe metadata_v4 blocked blocked\n"
			       "probe peer reached reached 198.51.100.7:8080 answered\n"
			       "end 3\n", err, sizeof(err)), 0);
	assert_int_equal(rep.count, 3);
	assert_int_equal(rep.result, ISOLATION_RESULT_OK);
	assert_int_equal(rep.breached, 0);
	assert_string_equal(rep.probes[0].name, "api_tcp:10.200.0.1:8443");
	assert_string_equal(rep.probes[0].detail, "connect: timed out");
	assert_string_equal(rep.probes[1].detail, "");
	assert_int_equal(rep.probes[2].verdict, ISOLATION_HELD);
	assert_string_equal(isolation_result_word(rep.result), "ok");
}

static void breach_names_the_probe(void **state)
{
	char err[200];

	(void)state;
	assert_int_equal(parse("sandvm-isolation-report 1\n"
			       "probe metadata_v4 blocked blocked\n"
			       "probe api_key_env blocked reached SANDVM_API_KEY set\n"
			       "probe kvm_device blocked error open: EPERM\n"
			       "end 3\n", err, sizeof(err)), 0);
	assert_int_equal(rep.result, ISOLATION_RESULT_BREACHED);
	assert_int_equal(rep.breached, 1);
	assert_int_equal(rep.failed, 1);
	assert_int_equal(rep.probes[1].verdict, ISOLATION_BREACHED);
	assert_string_equal(rep.probes[1].name, "api_key_env");
	assert_int_equal(rep.probes[2].verdict, ISOLATION_FAILED);
}

/* An error, or an allowlisted peer not reached, proves nothing: unknown, never ok. */
static void unproven_is_unknown(void **state)
{
	char err[200];

	(void)state;
	assert_int_equal(parse("sandvm-isolation-report 1\nprobe peer reached blocked\nend 1\n", err, sizeof(err)), 0);
	assert_int_equal(rep.result, ISOLATION_RESULT_UNKNOWN);
	assert_int_equal(parse("sandvm-isolation-report 1\nprobe a blocked error\nend 1\n", err, sizeof(err)), 0);
	assert_int_equal(rep.result, ISOLATION_RESULT_UNKNOWN);
}

static void hostile_reports_are_refused(void **state)
{
	static const char *const bad[] = {
		"",
		"\n",
		"sandvm-isolation-report 1\n",                                    /* no probes, no end */
		"sandvm-isolation-report 1\nend 0\n",                             /* no probes */
		"sandvm-isolation-report 2\nprobe a blocked blocked\nend 1\n",    /* another version */
		"sandvm-isolation-report 1\nprobe a blocked blocked\n",           /* cut short */
		"sandvm-isolation-report 1\nprobe a blocked blocked\nend 1",      /* the last line does not end */
		"sandvm-isolation-report 1\nprobe a blocked blocked\nend 2\n",    /* count mismatch */
		"sandvm-isolation-report 1\nprobe a blocked blocked\nend 01x\n",
		"sandvm-isolation-report 1\nprobe a blocked blocked\nend 1\nprobe b blocked reached\n",
		"sandvm-isolation-report 1\nprobe a blocked blocked\nend 1\nend 1\n",
		"sandvm-isolation-report 1\nprobe a blocked blocked\nprobe a blocked blocked\nend 2\n", /* twice */
		"sandvm-isolation-report 1\nprobe A blocked blocked\nend 1\n",    /* upper case name */
		"sandvm-isolation-report 1\nprobe a\"b blocked blocked\nend 1\n",
		"sandvm-isolation-report 1\nprobe  a blocked blocked\nend 1\n",   /* empty name */
		"sandvm-isolation-report 1\nprobe a error blocked\nend 1\n",      /* error is not an expectation */
		"sandvm-isolation-report 1\nprobe a blocked maybe\nend 1\n",
		"sandvm-isolation-report 1\nprobe a blocked\nend 1\n",
		"sandvm-isolation-report 1\nprobe a blocked blocked \x1b[31m\nend 1\n", /* escape in the detail */
		"sandvm-isolation-report 1\nprobe a blocked blocked caf\xc3\xa9\nend 1\n",
		"sandvm-isolation-report 1\nprobe a blocked blocked\r\nend 1\n",
		"sandvm-isolation-report 1\nprobe a blocked blocked\nend 1\r\n",
		"sandvm-isolation-report 1\nprobe a blocked blocked\nnote hi\nend 1\n",
		"garbage\nsandvm-isolation-report 1\nprobe a blocked blocked\nend 1\n",
	};
	char err[200];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (parse(bad[i], err, sizeof(err)) != -EBADMSG)
			fail_msg("accepted report %zu", i);
		assert_true(err[0] != '\0');
		assert_int_equal(rep.result, ISOLATION_RESULT_UNKNOWN);
		assert_int_equal(rep.count, 0);
	}
	assert_int_equal(isolation_report_parse(NULL, 0, &rep, err, sizeof(err)), -EBADMSG);
	/* A NUL inside is not a line end, and the length is the bound. */
	{
		static const char nul[] = "sandvm-isolation-report 1\nprobe a blocked blocked x\0y\nend 1\n";

		assert_int_equal(isolation_report_parse(nul, sizeof(nul) - 1, &rep, err, sizeof(err)), -EBADMSG);
		assert_non_null(strstr(err, "printable"));
	}
	assert_int_equal(isolation_report_parse("sandvm-isolation-report 1\nprobe a blocked blocked\nend 1\n", 40, &rep,
						err, sizeof(err)), -EBADMSG);
	/* No room for a message: still refused. */
	assert_int_equal(isolation_report_parse("x\n", 2, &rep, NULL, 0), -EBADMSG);
}

static void bounds(void **state)
{
	static char buf[ISOLATION_REPORT_MAX + 4096];
	char name[ISOLATION_NAME_MAX + 1], detail[ISOLATION_DETAIL_MAX + 1], err[200];
	size_t n;

	(void)state;
	/* The longest name and detail are taken; one byte more is refused. */
	memset(name, 'n', ISOLATION_NAME_MAX - 1);
	name[ISOLATION_NAME_MAX - 1] = '\0';
	memset(detail, 'd', ISOLATION_DETAIL_MAX - 1);
	detail[ISOLATION_DETAIL_MAX - 1] = '\0';
	snprintf(buf, sizeof(buf), "sandvm-isolation-report 1\nprobe %s blocked blocked %s\nend 1\n", name, detail);
	assert_int_equal(parse(buf, err, sizeof(err)), 0);
	assert_string_equal(rep.probes[0].name, name);
	assert_string_equal(rep.probes[0].detail, detail);
	snprintf(buf, sizeof(buf), "sandvm-isolation-report 1\nprobe %sn blocked blocked\nend 1\n", name);
	assert_int_equal(parse(buf, err, sizeof(err)), -EBADMSG);
	snprintf(buf, sizeof(buf), "sandvm-isolation-report 1\nprobe a blocked blocked %sd\nend 1\n", detail);
	assert_int_equal(parse(buf, err, sizeof(err)), -EBADMSG);
	/* ISOLATION_PROBES_MAX probes are taken, one more is refused. */
	for (unsigned extra = 0; extra <= 1; extra++) {
		n = (size_t)snprintf(buf, sizeof(buf), "sandvm-isolation-report 1\n");
		for (unsigned i = 0; i < ISOLATION_PROBES_MAX + extra; i++)
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "probe p%u blocked blocked\n", i);
		snprintf(buf + n, sizeof(buf) - n, "end %u\n", ISOLATION_PROBES_MAX + extra);
		assert_int_equal(parse(buf, err, sizeof(err)), extra ? -EBADMSG : 0);
	}
	/* Over the size limit: refused before it is read. */
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(isolation_report_parse(buf, ISOLATION_REPORT_MAX + 1, &rep, err, sizeof(err)), -EBADMSG);
}

static void random_damage(void **state)
{
	static const char good[] = "sandvm-isolation-report 1\nprobe api blocked blocked refused\n"
				   "probe peer reached reached\nend 2\n";
	char buf[sizeof(good)], err[64];
	uint64_t seed = 24;

	(void)state;
	for (int round = 0; round < 50000; round++) {
		size_t n = sizeof(good) - 1;

		memcpy(buf, good, n);
		for (int k = 0; k < 2; k++)
			buf[unit_rand(&seed) % n] = (char)unit_rand(&seed);
		if (isolation_report_parse(buf, unit_rand(&seed) % (n + 1), &rep, err, sizeof(err)) == 0) {
			/* Whatever it accepted is consistent. */
			assert_true(rep.count >= 1 && rep.count <= 2);
			assert_true(rep.result != ISOLATION_RESULT_OK || (rep.breached == 0 && rep.failed == 0));
		} else {
			assert_int_equal(rep.result, ISOLATION_RESULT_UNKNOWN);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(healthy_report_is_ok),
		cmocka_unit_test(breach_names_the_probe),
		cmocka_unit_test(unproven_is_unknown),
		cmocka_unit_test(hostile_reports_are_refused),
		cmocka_unit_test(bounds),
		cmocka_unit_test(random_damage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
