/*
 * The isolation monitor's probe list and host-side judgements
 * (api/sandboxd/isolation_probes.c): every family present, names valid and
 * unique, the bound of 128 with a crowded worker, ranges the operator opened
 * left out, a report checked against the plan, the spoof probes judged from
 * the VMM's firewall counters, and the flags' values.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "isolation_probes.h"
#include "metrics.h"
#include "unit.h"

static struct isolation_plan plan;

static void worker(struct isolation_worker *w)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->local[w->nlocal++], ISOLATION_ADDR_MAX, "192.0.2.7");
	snprintf(w->local[w->nlocal++], ISOLATION_ADDR_MAX, "2001:db8::7");
	snprintf(w->local[w->nlocal++], ISOLATION_ADDR_MAX, "10.200.0.5");
	w->listeners[w->nlisteners++] = (struct isolation_endpoint){"0.0.0.0", 8443, false};
	w->listeners[w->nlisteners++] = (struct isolation_endpoint){"192.0.2.7", 9100, false};
	w->listeners[w->nlisteners++] = (struct isolation_endpoint){"127.0.0.1", 9443, false};
	snprintf(w->sandboxes[0].guest, ISOLATION_ADDR_MAX, "10.200.0.10");
	snprintf(w->sandboxes[0].gateway, ISOLATION_ADDR_MAX, "10.200.0.9");
	w->nsandboxes = 1;
	w->deny[w->ndeny++] = (struct isolation_endpoint){"10.9.8.7", 5432, false};
	w->has_peer = true;
	w->peer = (struct isolation_endpoint){"2001:db8::99", 8080, true};
	w->secrets[w->nsecrets++] = (struct isolation_secret){"api-keys", "/var/lib/sandvm/api-keys"};
	w->secrets[w->nsecrets++] = (struct isolation_secret){"state-dir", "/var/lib/sandvm"};
	w->secrets[w->nsecrets++] = (struct isolation_secret){"bad", "/a,b"}; /* a comma: left out */
	snprintf(w->canary_gateway, ISOLATION_ADDR_MAX, "10.200.0.5");
	w->agent_vsock_port = 1024;
}

static bool has_spec(const char *spec)
{
	for (unsigned i = 0; i < plan.count; i++)
		if (!strcmp(plan.probes[i].spec, spec))
			return true;
	return false;
}

static unsigned family(const char *prefix)
{
	unsigned n = 0;

	for (unsigned i = 0; i < plan.count; i++)
		n += !strncmp(plan.probes[i].name, prefix, strlen(prefix));
	return n;
}

static void names_valid_and_unique(void)
{
	for (unsigned i = 0; i < plan.count; i++) {
		const char *s = plan.probes[i].name;
		size_t n = strlen(s);

		assert_true(n >= 1 && n <= 63);
		assert_int_equal(strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_.:-"), n);
		/* The spec starts with the name, then the expectation. */
		assert_int_equal(strncmp(plan.probes[i].spec, s, n), 0);
		assert_int_equal(plan.probes[i].spec[n], ',');
		for (unsigned j = i + 1; j < plan.count; j++)
			assert_string_not_equal(s, plan.probes[j].name);
	}
}

static void every_family(void **state)
{
	static const char *const families[] = {"host.", "listener.", "redirect.", "metadata.", "sandbox.",
					       "private.", "deny.", "v6map.", "vsock.", "guest.", "spoof.", "peer"};
	struct isolation_worker w;

	(void)state;
	worker(&w);
	isolation_plan_build(&w, &plan);
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		if (!family(families[i]))
			fail_msg("no %s probe", families[i]);
	names_valid_and_unique();
	assert_int_equal(plan.dropped, 0);
	assert_true(has_spec("peer,reached,tcp,2001:db8::99,8080"));
	assert_true(has_spec("host.192.0.2.7.icmp,blocked,icmp,192.0.2.7"));
	assert_true(has_spec("host.2001:db8::7.tcp.8443,blocked,tcp,2001:db8::7,8443"));
	assert_true(has_spec("host.10.200.0.5.tcp.9443,blocked,tcp,10.200.0.5,9443"));
	/* The listener on a routable address is probed itself; wildcard and loopback ones are not. */
	assert_true(has_spec("listener.192.0.2.7.tcp.9100,blocked,tcp,192.0.2.7,9100"));
	assert_int_equal(family("listener."), 1);
	assert_true(has_spec("redirect.tcp.8443,blocked,tcp,192.0.2.1,8443"));
	assert_int_equal(family("redirect."), 3);
	assert_true(has_spec("metadata.aws.tcp.80,blocked,tcp,169.254.169.254,80"));
	assert_true(has_spec("metadata.aws.icmp,blocked,icmp,169.254.169.254"));
	assert_true(has_spec("metadata.alibaba.tcp.80,blocked,tcp,100.100.100.200,80"));
	assert_true(has_spec("metadata.aws6.tcp.80,blocked,tcp,fd00:ec2::254,80"));
	assert_true(has_spec("sandbox.10.200.0.10.icmp,blocked,icmp,10.200.0.10"));
	assert_true(has_spec("sandbox.10.200.0.10.tcp.22,blocked,tcp,10.200.0.10,22"));
	assert_true(has_spec("sandbox.gw.10.200.0.9.icmp,blocked,icmp,10.200.0.9"));
	assert_true(has_spec("private.172.16.0.1.tcp.80,blocked,tcp,172.16.0.1,80"));
	assert_true(has_spec("private.fd00::1.icmp,blocked,icmp,fd00::1"));
	assert_true(has_spec("deny.10.9.8.7.tcp.5432,blocked,tcp,10.9.8.7,5432"));
	assert_true(has_spec("v6map.6to4.192.0.2.7,blocked,tcp,2002:c000:0207::1,8443"));
	assert_true(has_spec("v6map.nat64.192.0.2.7,blocked,tcp,64:ff9b::192.0.2.7,8443"));
	assert_true(has_spec("v6map.mapped.169.254.169.254,blocked,tcp,::ffff:169.254.169.254,8443"));
	assert_true(has_spec("vsock.2.22,blocked,vsock,2,22"));
	assert_true(has_spec("vsock.1.1,blocked,vsock,1,1"));
	assert_true(has_spec("vsock.3.1,blocked,vsock,3,1"));
	assert_null(isolation_plan_find(&plan, "vsock.2.1024")); /* the canary's own agent */
	assert_true(has_spec("guest.env.svk,blocked,env,svk_"));
	assert_true(has_spec("guest.file.dev-kvm,blocked,file,/dev/kvm"));
	assert_true(has_spec("guest.file.api-keys,blocked,file,/var/lib/sandvm/api-keys"));
	assert_null(isolation_plan_find(&plan, "guest.file.bad"));
	assert_true(has_spec("spoof.source-ip,blocked,spoof-ip,10.200.0.5"));
	assert_true(has_spec("spoof.source-mac,blocked,spoof-mac,10.200.0.5"));
}

static void bounded(void **state)
{
	struct isolation_worker w;

	(void)state;
	worker(&w);
	w.nlocal = 0;
	for (unsigned i = 0; i < ISOLATION_LOCAL_MAX; i++)
		snprintf(w.local[w.nlocal++], ISOLATION_ADDR_MAX, "2001:db8:ffff:ffff:ffff:ffff:ffff:%x", i + 1);
	w.nlisteners = 0;
	for (unsigned i = 0; i < ISOLATION_LISTENERS_MAX; i++)
		w.listeners[w.nlisteners++] = (struct isolation_endpoint){"198.51.100.1", 40000 + i, false};
	for (unsigned i = 0; i < ISOLATION_SANDBOXES_MAX; i++) {
		snprintf(w.sandboxes[i].guest, ISOLATION_ADDR_MAX, "10.200.1.%u", i * 4 + 2);
		snprintf(w.sandboxes[i].gateway, ISOLATION_ADDR_MAX, "10.200.1.%u", i * 4 + 1);
	}
	w.nsandboxes = ISOLATION_SANDBOXES_MAX;
	for (unsigned i = 0; i < ISOLATION_DENY_MAX; i++)
		w.deny[i] = (struct isolation_endpoint){"10.1.1.1", 1000 + i, false};
	w.ndeny = ISOLATION_DENY_MAX;
	isolation_plan_build(&w, &plan);
	assert_int_equal(plan.count, ISOLATION_PROBES_MAX);
	assert_true(plan.dropped > 0);
	names_valid_and_unique();
	/* The fixed families come first and stay whole. */
	assert_non_null(isolation_plan_find(&plan, "peer"));
	assert_non_null(isolation_plan_find(&plan, "spoof.source-mac"));
	assert_int_equal(family("deny."), ISOLATION_DENY_MAX);
	assert_int_equal(family("metadata."), 4);
	/* The longest name still fits. */
	assert_non_null(isolation_plan_find(&plan, "host.2001:db8:ffff:ffff:ffff:ffff:ffff:1.tcp.40000"));
}

static void operator_ranges_left_out(void **state)
{
	static const char *const allow[] = {"10.0.0.0/8", "fd00::/8", "192.168.0.0/24"};
	struct isolation_worker w;

	(void)state;
	worker(&w);
	w.allow_private = allow;
	w.nallow_private = 3;
	isolation_plan_build(&w, &plan);
	assert_null(isolation_plan_find(&plan, "private.10.0.0.1.tcp.80"));
	assert_null(isolation_plan_find(&plan, "private.10.0.0.1.icmp"));
	assert_null(isolation_plan_find(&plan, "private.fd00::1.tcp.80"));
	assert_null(isolation_plan_find(&plan, "private.192.168.0.1.icmp"));
	assert_non_null(isolation_plan_find(&plan, "private.172.16.0.1.tcp.80"));
	assert_non_null(isolation_plan_find(&plan, "private.100.64.0.1.icmp"));
	/* No network (no gateway), no peer: no spoof probes, no positive control. */
	w.canary_gateway[0] = '\0';
	w.has_peer = false;
	isolation_plan_build(&w, &plan);
	assert_int_equal(family("spoof."), 0);
	assert_null(isolation_plan_find(&plan, "peer"));
}

static void endpoints(void **state)
{
	struct isolation_endpoint e;
	char why[200];
	static const char *const bad[] = {
		"", "10.0.0.1", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:-1", "10.0.0.1:80x",
		":80", "host.example:80", "::1:80", "[::1]", "[::1:80", "[10.0.0.1]:80", "[]:80", "10.0.0.1: 80",
		"[fe80::1%eth0]:80", "1.2.3.4.5:80"};

	(void)state;
	assert_int_equal(isolation_endpoint_parse("10.9.8.7:5432", &e, why, sizeof(why)), 0);
	assert_string_equal(e.addr, "10.9.8.7");
	assert_int_equal(e.port, 5432);
	assert_false(e.v6);
	assert_int_equal(isolation_endpoint_parse("[2001:DB8:0::1]:443", &e, why, sizeof(why)), 0);
	assert_string_equal(e.addr, "2001:db8::1");
	assert_int_equal(e.port, 443);
	assert_true(e.v6);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (isolation_endpoint_parse(bad[i], &e, why, sizeof(why)) != -EINVAL)
			fail_msg("accepted %s", bad[i]);
}

static void intervals(void **state)
{
	unsigned s = 0;
	static const char *const bad[] = {"0", "-5", "", "9", "86401", "99999999999999999999", "60s", " 60", "+60"};

	(void)state;
	assert_int_equal(isolation_interval_parse("60", &s), 0);
	assert_int_equal(s, 60);
	assert_int_equal(isolation_interval_parse("86400", &s), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (isolation_interval_parse(bad[i], &s) != -EINVAL)
			fail_msg("accepted %s", bad[i]);
}

static int parse_plan_report(const char *text, struct isolation_report *rep)
{
	char err[200];

	return isolation_report_parse(text, strlen(text), rep, err, sizeof(err));
}

static void plan_checked(void **state)
{
	static struct isolation_report rep;
	struct isolation_worker w;
	char why[200];

	(void)state;
	memset(&w, 0, sizeof(w));
	w.has_peer = true;
	w.peer = (struct isolation_endpoint){"10.1.2.3", 80, false};
	isolation_plan_build(&w, &plan);
	/* Build a full report of plan, all held. */
	{
		static char text[ISOLATION_REPORT_MAX];
		size_t n = (size_t)snprintf(text, sizeof(text), "sandvm-isolation-report 1\n");

		for (unsigned i = 0; i < plan.count; i++) {
			const char *e = isolation_outcome_word(plan.probes[i].expected);

			n += (size_t)snprintf(text + n, sizeof(text) - n, "probe %s %s %s\n", plan.probes[i].name, e, e);
		}
		snprintf(text + n, sizeof(text) - n, "end %u\n", plan.count);
		assert_int_equal(parse_plan_report(text, &rep), 0);
	}
	assert_int_equal(isolation_plan_check(&plan, &rep, why, sizeof(why)), 0);
	assert_int_equal(rep.result, ISOLATION_RESULT_OK);
	/* One left out: the plan is not answered. */
	rep.count--;
	assert_int_equal(isolation_plan_check(&plan, &rep, why, sizeof(why)), -EBADMSG);
	rep.count++;
	/* A probe not asked for. */
	snprintf(rep.probes[0].name, sizeof(rep.probes[0].name), "made.up");
	assert_int_equal(isolation_plan_check(&plan, &rep, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "made.up"));
	/* Another expectation. */
	snprintf(rep.probes[0].name, sizeof(rep.probes[0].name), "peer");
	rep.probes[0].expected = ISOLATION_BLOCKED;
	assert_int_equal(isolation_plan_check(&plan, &rep, why, sizeof(why)), -EBADMSG);
}

static void spoof_judged_by_counters(void **state)
{
	static struct isolation_report rep;
	struct metrics_fw before = {0}, after = {0};
	int ip = -1, mac = -1;

	(void)state;
	for (int i = 0; i < METRICS_FW_REASONS; i++) {
		if (!strcmp(metrics_fw_reason_names[i], "drop_spoof_ip"))
			ip = i;
		if (!strcmp(metrics_fw_reason_names[i], "drop_spoof_mac"))
			mac = i;
	}
	assert_true(ip >= 0 && mac >= 0);
	const char *text = "sandvm-isolation-report 1\n"
			   "probe spoof.source-ip blocked blocked sent 3\n"
			   "probe spoof.source-mac blocked blocked sent 3\n"
			   "probe metadata.aws.icmp blocked blocked\n"
			   "end 3\n";

	/* Both counters rose: held. */
	assert_int_equal(parse_plan_report(text, &rep), 0);
	before.count[ip] = 5;
	after.count[ip] = 8;
	after.count[mac] = 3;
	isolation_judge_spoof(&rep, &before, &after, true);
	assert_int_equal(rep.result, ISOLATION_RESULT_OK);
	assert_non_null(strstr(rep.probes[0].detail, "drop_spoof_ip +3"));

	/* The MAC counter did not move: the frames left the VMM, a breach whatever the guest said. */
	assert_int_equal(parse_plan_report(text, &rep), 0);
	after.count[mac] = 0;
	isolation_judge_spoof(&rep, &before, &after, true);
	assert_int_equal(rep.result, ISOLATION_RESULT_BREACHED);
	assert_int_equal(rep.breached, 1);
	assert_int_equal(rep.probes[1].observed, ISOLATION_REACHED);
	assert_int_equal(rep.probes[1].verdict, ISOLATION_BREACHED);
	assert_int_equal(rep.probes[0].verdict, ISOLATION_HELD);

	/* Counters unreadable: error, so unknown. */
	assert_int_equal(parse_plan_report(text, &rep), 0);
	isolation_judge_spoof(&rep, &before, &after, false);
	assert_int_equal(rep.result, ISOLATION_RESULT_UNKNOWN);
	assert_int_equal(rep.probes[0].observed, ISOLATION_ERROR);

	/* The guest sent nothing, or could not: nothing to judge. */
	assert_int_equal(parse_plan_report("sandvm-isolation-report 1\n"
					   "probe spoof.source-ip blocked blocked sent 0\n"
					   "probe spoof.source-mac blocked error socket: EPERM\n"
					   "end 2\n", &rep), 0);
	after.count[mac] = 9;
	isolation_judge_spoof(&rep, &before, &after, true);
	assert_int_equal(rep.result, ISOLATION_RESULT_UNKNOWN);
	assert_int_equal(rep.probes[0].observed, ISOLATION_ERROR);
	assert_int_equal(rep.probes[1].observed, ISOLATION_ERROR);
	assert_string_equal(rep.probes[1].detail, "socket: EPERM");

	/* A guest that claims "reached" for a spoof is judged by the counters all the same. */
	assert_int_equal(parse_plan_report("sandvm-isolation-report 1\n"
					   "probe spoof.source-ip blocked reached sent 2\n"
					   "end 1\n", &rep), 0);
	assert_int_equal(rep.result, ISOLATION_RESULT_BREACHED);
	isolation_judge_spoof(&rep, &before, &after, true);
	assert_int_equal(rep.result, ISOLATION_RESULT_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_family),
		cmocka_unit_test(bounded),
		cmocka_unit_test(operator_ranges_left_out),
		cmocka_unit_test(endpoints),
		cmocka_unit_test(intervals),
		cmocka_unit_test(plan_checked),
		cmocka_unit_test(spoof_judged_by_counters),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
