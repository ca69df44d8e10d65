/*
 * The isolation monitor's probe program (guest-agent/probe/): its spec
 * parser with good and hostile command lines, its report as sandboxd's
 * parser (api/sandboxd/isolation_report.c) reads it, the probes themselves
 * on loopback, and the program's exit statuses.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "isolation_report.h"
#include "probe_local.h"
#include "probe_net.h"
#include "probe_report.h"
#include "probe_spec.h"
#include "probe_spoof.h"
#include "unit.h"

/* The program writes what sandboxd reads: the same bounds. */
_Static_assert(PROBE_SPECS_MAX == ISOLATION_PROBES_MAX, "probe count bound");
_Static_assert(PROBE_NAME_MAX == ISOLATION_NAME_MAX, "name bound");
_Static_assert(PROBE_DETAIL_MAX == ISOLATION_DETAIL_MAX, "detail bound");
_Static_assert(PROBE_REPORT_MAX == ISOLATION_REPORT_MAX, "report bound");
_Static_assert((int)PROBE_BLOCKED == (int)ISOLATION_BLOCKED && (int)PROBE_REACHED == (int)ISOLATION_REACHED &&
		       (int)PROBE_ERROR == (int)ISOLATION_ERROR,
	       "outcome order");

static struct probe_plan plan;
static struct probe_result results[PROBE_SPECS_MAX];
static struct isolation_report rep;
static char report[PROBE_REPORT_MAX];

static int spec(const char *text, struct probe_spec *s)
{
	char err[200];

	return probe_spec_parse(text, s, err, sizeof(err));
}

static void good_specs(void **state)
{
	struct probe_spec s;
	char buf[16];

	(void)state;
	assert_int_equal(spec("api_tcp:10.200.0.1:8443,blocked,tcp,10.200.0.1,8443", &s), 0);
	assert_string_equal(s.name, "api_tcp:10.200.0.1:8443");
	assert_int_equal(s.expected, PROBE_BLOCKED);
	assert_int_equal(s.kind, PROBE_TCP);
	assert_int_equal(s.addr.family, AF_INET);
	assert_int_equal(s.port, 8443);
	assert_string_equal(inet_ntop(AF_INET, &s.addr.v4, buf, sizeof(buf)), "10.200.0.1");
	/* IPv6 without brackets: the port is what follows the last comma. */
	assert_int_equal(spec("metadata_v6,blocked,tcp,fd00:ec2::254,80", &s), 0);
	assert_int_equal(s.addr.family, AF_INET6);
	assert_int_equal(s.port, 80);
	assert_int_equal(s.addr.v6.s6_addr[15], 0x54);
	assert_int_equal(spec("m,reached,tcp,::ffff:198.51.100.7,65535", &s), 0);
	assert_int_equal(s.addr.family, AF_INET6);
	assert_int_equal(s.port, 65535);
	assert_int_equal(spec("ping.v4,blocked,icmp,169.254.169.254", &s), 0);
	assert_int_equal(s.kind, PROBE_ICMP);
	assert_int_equal(spec("ping-v6,reached,icmp,2001:db8::1", &s), 0);
	assert_int_equal(s.addr.family, AF_INET6);
	assert_int_equal(spec("host_vsock,blocked,vsock,2,1024", &s), 0);
	assert_int_equal(s.kind, PROBE_VSOCK);
	assert_int_equal(s.cid, 2);
	assert_int_equal(s.port, 1024);
	assert_int_equal(spec("v,blocked,vsock,0,4294967294", &s), 0);
	assert_int_equal(s.cid, 0);
	assert_int_equal(s.port, 4294967294u);
	/* env and file take the rest of the spec, commas included. */
	assert_int_equal(spec("key_env,blocked,env,svk_", &s), 0);
	assert_int_equal(s.kind, PROBE_ENV);
	assert_string_equal(s.arg, "svk_");
	assert_int_equal(spec("e,blocked,env,a,b=c", &s), 0);
	assert_string_equal(s.arg, "a,b=c");
	assert_int_equal(spec("kvm,blocked,file,/dev/kvm", &s), 0);
	assert_int_equal(s.kind, PROBE_FILE);
	assert_string_equal(s.arg, "/dev/kvm");
	assert_int_equal(spec("f,blocked,file,/a,b", &s), 0);
	assert_string_equal(s.arg, "/a,b");
	assert_int_equal(spec("spoof_ip,blocked,spoof-ip,10.200.0.1", &s), 0);
	assert_int_equal(s.kind, PROBE_SPOOF_IP);
	assert_int_equal(spec("spoof_mac,blocked,spoof-mac,fd00::1", &s), 0);
	assert_int_equal(s.kind, PROBE_SPOOF_MAC);
	assert_int_equal(s.addr.family, AF_INET6);
	/* The whole name alphabet, and the longest name. */
	assert_int_equal(spec("az09_.:-,reached,env,x", &s), 0);
	assert_int_equal(spec("nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn,reached,env,x", &s), 0);
	assert_int_equal(strlen(s.name), 63);
	assert_string_equal(probe_kind_word(PROBE_SPOOF_MAC), "spoof-mac");
	assert_string_equal(probe_outcome_word(PROBE_ERROR), "error");
}

static void hostile_specs(void **state)
{
	static const char *const bad[] = {
		"",
		",",
		",,,",
		"a",
		"a,blocked",
		"a,blocked,tcp",
		"a,blocked,tcp,",
		",blocked,env,x",                       /* empty name */
		"a,,env,x",                             /* empty expected */
		"a,blocked,,x",                         /* empty kind */
		"A,blocked,env,x",                      /* upper case */
		"a/b,blocked,env,x",
		"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn,reached,env,x", /* 64 */
		"a,Blocked,env,x",
		"a,error,env,x",                        /* error is observed, never expected */
		"a,blockedx,env,x",
		"a,blocked,udp,1.2.3.4,53",
		"a,blocked,TCP,1.2.3.4,53",
		"a,blocked,tcp,127.0.0.1",              /* no port */
		"a,blocked,tcp,127.0.0.1,",
		"a,blocked,tcp,,80",
		"a,blocked,tcp,127.0.0.1,0",
		"a,blocked,tcp,127.0.0.1,65536",
		"a,blocked,tcp,127.0.0.1,-1",
		"a,blocked,tcp,127.0.0.1,+80",
		"a,blocked,tcp,127.0.0.1,0x50",
		"a,blocked,tcp,127.0.0.1,99999999999999999999999",
		"a,blocked,tcp,[::1],80",
		"a,blocked,tcp,::1%lo,80",
		"a,blocked,tcp,1.2.3,80",
		"a,blocked,tcp,1.2.3.4.5,80",
		"a,blocked,tcp,256.1.1.1,80",
		"a,blocked,tcp,example.com,80",
		"a,blocked,tcp,fd00:ec2::254:80",       /* IPv6 without its comma */
		"a,blocked,icmp,",
		"a,blocked,icmp,127.0.0.1,",
		"a,blocked,icmp,localhost",
		"a,blocked,vsock,2",
		"a,blocked,vsock,2,",
		"a,blocked,vsock,,1",
		"a,blocked,vsock,2,1,3",
		"a,blocked,vsock,-1,1",
		"a,blocked,vsock,4294967295,1",         /* VMADDR_CID_ANY */
		"a,blocked,vsock,2,4294967295",         /* VMADDR_PORT_ANY */
		"a,blocked,vsock,4294967296,1",
		"a,blocked,vsock,0x2,1",
		"a,blocked,env,",
		"a,blocked,env",
		"a,blocked,file,",
		"a,blocked,file,etc/passwd",            /* relative */
		"a,blocked,spoof-ip,::1",               /* spoof-ip is IPv4 */
		"a,blocked,spoof-ip,",
		"a,blocked,spoof-mac,gw",
		"a b,blocked,env,x",                    /* blanks anywhere */
		" a,blocked,env,x",
		"a,blocked,env,x y",
		"a,blocked,env,x\ny",
		"a,blocked,env,x\ty",
		"a,blocked,env,x\r",
		"a,blocked,file,/tmp/\x1b[31m",
		"a,blocked,env,caf\xc3\xa9",
		"a,blocked,env,\x7f",
	};
	struct probe_spec s;
	char err[200], big[PROBE_SPEC_LEN_MAX + 64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (probe_spec_parse(bad[i], &s, err, sizeof(err)) != -EINVAL)
			fail_msg("accepted spec %zu: %s", i, bad[i]);
		assert_true(err[0] != '\0');
	}
	assert_int_equal(probe_spec_parse(NULL, &s, err, sizeof(err)), -EINVAL);
	/* Too long as a whole, and a path or needle of PROBE_ARG_MAX bytes. */
	memset(big, 'x', sizeof(big));
	memcpy(big, "a,blocked,env,", 14);
	big[PROBE_SPEC_LEN_MAX + 1] = '\0';
	assert_int_equal(spec(big, &s), -EINVAL);
	big[14 + PROBE_ARG_MAX] = '\0';
	assert_int_equal(spec(big, &s), -EINVAL);
	big[14 + PROBE_ARG_MAX - 1] = '\0';
	assert_int_equal(spec(big, &s), 0);
	assert_int_equal(strlen(s.arg), PROBE_ARG_MAX - 1);
	/* No room for a message: still refused. */
	assert_int_equal(probe_spec_parse("a", &s, NULL, 0), -EINVAL);
}

static int plan_of(const char *const *args, int n)
{
	char err[256];

	return probe_plan_parse(n, args, &plan, err, sizeof(err));
}

static void plans(void **state)
{
	static char names[PROBE_SPECS_MAX + 1][32];
	const char *args[PROBE_SPECS_MAX + 4];
	char err[256];

	(void)state;
	{
		const char *a[] = {"a,blocked,env,x", "b,reached,file,/"};

		assert_int_equal(plan_of(a, 2), 0);
		assert_int_equal(plan.count, 2);
		assert_int_equal(plan.timeout_ms, PROBE_TIMEOUT_MS_DEFAULT);
	}
	{
		const char *a[] = {"--timeout-ms", "250", "a,blocked,env,x"};

		assert_int_equal(plan_of(a, 3), 0);
		assert_int_equal(plan.timeout_ms, 250);
	}
	{
		const char *a[] = {"--timeout-ms=10000", "--", "--x,blocked,env,x"};

		assert_int_equal(plan_of(a, 3), 0);
		assert_int_equal(plan.timeout_ms, 10000);
		assert_string_equal(plan.specs[0].name, "--x");
	}
	{
		static const char *const bad[][3] = {
			{"--timeout-ms", "99", "a,blocked,env,x"},
			{"--timeout-ms", "10001", "a,blocked,env,x"},
			{"--timeout-ms", "", "a,blocked,env,x"},
			{"--timeout-ms", "1e3", "a,blocked,env,x"},
			{"--timeout-ms=00000000000000000000000100", "a,blocked,env,x", "b,blocked,env,x"},
			{"--verbose", "a,blocked,env,x", "b,blocked,env,x"},
			{"a,blocked,env,x", "a,reached,file,/", "b,blocked,env,x"}, /* a twice */
			{"a,blocked,env,x", "b,blocked,env,x", "c,blocked,nope,x"},
			{"--timeout-ms", "200", "--"},                           /* no probes */
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			err[0] = '\0';
			if (probe_plan_parse(3, bad[i], &plan, err, sizeof(err)) != -EINVAL)
				fail_msg("accepted command line %zu", i);
			assert_true(err[0] != '\0');
			assert_int_equal(plan.count, 0);
		}
		assert_int_equal(plan_of(bad[0], 0), -EINVAL);
		assert_int_equal(plan_of((const char *[]){"--timeout-ms"}, 1), -EINVAL);
	}
	/* PROBE_SPECS_MAX probes are taken, one more is refused before any is looked at. */
	for (unsigned i = 0; i <= PROBE_SPECS_MAX; i++) {
		snprintf(names[i], sizeof(names[i]), "p%u,blocked,env,x", i);
		args[i] = names[i];
	}
	assert_int_equal(plan_of(args, PROBE_SPECS_MAX), 0);
	assert_int_equal(plan.count, PROBE_SPECS_MAX);
	assert_int_equal(probe_plan_parse(PROBE_SPECS_MAX + 1, args, &plan, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "more than 128"));
	/* A bad spec is named by its place. */
	args[5] = "p5,blocked,tcp,1.2.3.4,0";
	assert_int_equal(probe_plan_parse(PROBE_SPECS_MAX, args, &plan, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "probe 6"));
}

static int report_parse(void)
{
	char err[200];
	int n = probe_report_write(&plan, results, report, sizeof(report));

	assert_true(n > 0);
	if (isolation_report_parse(report, (size_t)n, &rep, err, sizeof(err)) < 0)
		fail_msg("report refused: %s\n%s", err, report);
	return n;
}

static void report_reads_back(void **state)
{
	const char *a[] = {"api,blocked,tcp,10.200.0.1,8443", "peer,reached,tcp,198.51.100.7,80",
			   "key,blocked,env,svk_", "kvm,blocked,file,/dev/kvm"};
	char big[400];
	int n;

	(void)state;
	assert_int_equal(plan_of(a, 4), 0);
	probe_result_set(&results[0], PROBE_BLOCKED, "timed out after %u ms", 1500u);
	probe_result_set(&results[1], PROBE_REACHED, "connected");
	probe_result_set(&results[2], PROBE_REACHED, "in %s", "LEAK");
	probe_result_set(&results[3], PROBE_ERROR, "%s", "");
	n = report_parse();
	assert_string_equal(report, "sandvm-isolation-report 1\n"
				    "probe api blocked blocked timed out after 1500 ms\n"
				    "probe peer reached reached connected\n"
				    "probe key blocked reached in LEAK\n"
				    "probe kvm blocked error\n"
				    "end 4\n");
	assert_int_equal(n, (int)strlen(report));
	assert_int_equal(rep.count, 4);
	assert_int_equal(rep.result, ISOLATION_RESULT_BREACHED);
	assert_string_equal(rep.probes[2].name, "key");
	assert_int_equal(rep.probes[2].verdict, ISOLATION_BREACHED);
	assert_int_equal(rep.probes[3].verdict, ISOLATION_FAILED);
	assert_string_equal(rep.probes[0].detail, "timed out after 1500 ms");

	/* Details that would break a line or the parser are cleaned and cut. */
	memset(big, 'd', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	probe_result_set(&results[0], PROBE_BLOCKED, "a\nb\rc\x1b[31m\xc3\xa9\x7f");
	probe_result_set(&results[1], PROBE_REACHED, "%s", big);
	results[2].observed = (enum probe_outcome)7; /* whatever a result holds, the line is well formed */
	memset(results[3].detail, '\n', sizeof(results[3].detail));
	report_parse();
	assert_string_equal(rep.probes[0].detail, "a?b?c?[31m???");
	assert_int_equal(strlen(rep.probes[1].detail), PROBE_DETAIL_MAX - 1);
	assert_int_equal(rep.probes[2].observed, ISOLATION_ERROR);
	assert_int_equal(strlen(rep.probes[3].detail), PROBE_DETAIL_MAX - 1);

	/* The largest report: 128 probes, longest names and details, fits and reads back. */
	{
		static char names[PROBE_SPECS_MAX][PROBE_NAME_MAX + 16];
		const char *args[PROBE_SPECS_MAX];

		for (unsigned i = 0; i < PROBE_SPECS_MAX; i++) {
			snprintf(names[i], sizeof(names[i]), "%03u%060u,reached,env,x", i, 0u);
			args[i] = names[i];
			probe_result_set(&results[i], PROBE_ERROR, "%s", big);
		}
		assert_int_equal(plan_of(args, PROBE_SPECS_MAX), 0);
		assert_int_equal(strlen(plan.specs[0].name), PROBE_NAME_MAX - 1);
		report_parse();
		assert_int_equal(rep.count, PROBE_SPECS_MAX);
		assert_int_equal(rep.result, ISOLATION_RESULT_UNKNOWN);
		/* Too small a buffer is said, not overrun. */
		assert_int_equal(probe_report_write(&plan, results, report, 1000), -ENOSPC);
		assert_int_equal(probe_report_write(&plan, results, report, 10), -ENOSPC);
	}
}

/* A TCP listener on 127.0.0.1 with an ephemeral port, or -1. */
static int listener(int backlog, unsigned *port)
{
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(in);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof(in)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &len), 0);
	*port = ntohs(in.sin_port);
	return fd;
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void set_plan(unsigned timeout_ms, const char *const *args, int n)
{
	char err[256];

	if (probe_plan_parse(n, args, &plan, err, sizeof(err)) < 0)
		fail_msg("plan refused: %s", err);
	plan.timeout_ms = timeout_ms;
	for (int i = 0; i < n; i++)
		probe_result_set(&results[i], PROBE_ERROR, "not run");
}

static bool icmp_allowed(int family)
{
	int proto = family == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6;
	int fd = socket(family, SOCK_DGRAM, proto);

	if (fd < 0)
		fd = socket(family, SOCK_RAW, proto);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static void tcp_on_loopback(void **state)
{
	char open_spec[64], closed_spec[64], full_spec[64];
	unsigned open_port, closed_port, full_port;
	int lfd = listener(16, &open_port), cfd = listener(1, &closed_port), ffd, first;
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

	(void)state;
	close(cfd); /* nobody listens there now: the kernel answers RST */
	/* A listener whose accept queue is full drops SYNs: a wall that stays silent, deterministically. */
	ffd = listener(0, &full_port);
	in.sin_port = htons((uint16_t)full_port);
	first = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(first, (struct sockaddr *)&in, sizeof(in)), 0);
	snprintf(open_spec, sizeof(open_spec), "open,reached,tcp,127.0.0.1,%u", open_port);
	snprintf(closed_spec, sizeof(closed_spec), "closed,blocked,tcp,127.0.0.1,%u", closed_port);
	snprintf(full_spec, sizeof(full_spec), "silent,blocked,tcp,127.0.0.1,%u", full_port);
	{
		const char *a[] = {open_spec, closed_spec, full_spec, "v6_closed,blocked,tcp,::1,1"};
		uint64_t t0 = ms_now(), took;

		set_plan(200, a, 4);
		probe_net_run(&plan, results);
		took = ms_now() - t0;
		assert_int_equal(results[0].observed, PROBE_REACHED);
		assert_string_equal(results[0].detail, "connected");
		assert_int_equal(results[1].observed, PROBE_REACHED);
		assert_string_equal(results[1].detail, "refused by a host");
		assert_int_equal(results[2].observed, PROBE_BLOCKED);
		assert_string_equal(results[2].detail, "timed out after 200 ms");
		/* ::1 may be off (IPv6 disabled): then no source address, blocked too; never an error. */
		assert_int_not_equal(results[3].observed, PROBE_ERROR);
		assert_true(took >= 190 && took < 1500);
		report_parse();
	}
	{
		/* 60 silent probes at once take one timeout, not 60. */
		static char specs[60][64];
		const char *a[60];
		uint64_t t0 = ms_now(), took;

		for (int i = 0; i < 60; i++) {
			snprintf(specs[i], sizeof(specs[i]), "s%d,blocked,tcp,127.0.0.1,%u", i, full_port);
			a[i] = specs[i];
		}
		set_plan(300, a, 60);
		probe_net_run(&plan, results);
		took = ms_now() - t0;
		for (int i = 0; i < 60; i++)
			assert_int_equal(results[i].observed, PROBE_BLOCKED);
		if (took > 1000)
			fail_msg("60 probes took %llu ms", (unsigned long long)took);
	}
	close(first);
	close(ffd);
	close(lfd);
}

static void icmp_and_vsock_on_loopback(void **state)
{
	const char *a[] = {"ping4,reached,icmp,127.0.0.1", "ping6,reached,icmp,::1", "vsock_local,blocked,vsock,1,9",
			   "env_untouched,blocked,env,x"};

	(void)state;
	set_plan(500, a, 4);
	probe_net_run(&plan, results);
	/* Raw or ping sockets need root or net.ipv4.ping_group_range; without them the probe errs, says why. */
	if (icmp_allowed(AF_INET))
		assert_int_equal(results[0].observed, PROBE_REACHED);
	else
		assert_int_equal(results[0].observed, PROBE_ERROR);
	if (icmp_allowed(AF_INET6) && results[1].observed != PROBE_REACHED)
		/* A host with IPv6 off has no ::1 to answer. */
		assert_int_equal(results[1].observed, PROBE_BLOCKED);
	/* Loopback vsock (CID 1) is rarely there, and a refusal is the wall holding: never reached. */
	assert_int_not_equal(results[2].observed, PROBE_REACHED);
	assert_true(results[2].detail[0] != '\0');
	/* Not a network probe: left alone. */
	assert_string_equal(results[3].detail, "not run");
	report_parse();
}

static void env_and_file(void **state)
{
	char *envp[] = {"PATH=/bin", "SANDVM_TEST_KEY=svk_0123secret", "OTHER=svk_more", NULL};
	char *quiet[] = {"PATH=/bin", NULL};
	char tmp[] = "/tmp/sandvm-probe-test.XXXXXX", file_spec[128], unreadable_spec[128];
	const char *a[] = {"key,blocked,env,svk_", "nokey,blocked,env,nothing-like-this", "tmp,reached,file,/",
			   "missing,blocked,file,/nonexistent/sandvm-probe", "notdir,blocked,file,/dev/null/x",
			   "null,blocked,file,/dev/null", file_spec, unreadable_spec, "net_untouched,blocked,tcp,127.0.0.1,1"};
	int fd = mkstemp(tmp);

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	snprintf(file_spec, sizeof(file_spec), "file,reached,file,%s", tmp);
	snprintf(unreadable_spec, sizeof(unreadable_spec), "dir,reached,file,/tmp");
	set_plan(200, a, 9);
	probe_local_run(&plan, envp, results);
	assert_int_equal(results[0].observed, PROBE_REACHED);
	assert_string_equal(results[0].detail, "in SANDVM_TEST_KEY and 1 more");
	assert_null(strstr(results[0].detail, "secret"));
	assert_int_equal(results[1].observed, PROBE_BLOCKED);
	assert_string_equal(results[1].detail, "in none of 3 variables");
	assert_int_equal(results[2].observed, PROBE_REACHED);
	assert_int_equal(results[3].observed, PROBE_BLOCKED);
	assert_string_equal(results[3].detail, "stat: No such file or directory");
	assert_int_equal(results[4].observed, PROBE_BLOCKED);
	assert_int_equal(results[5].observed, PROBE_REACHED);
	assert_string_equal(results[5].detail, "character device 1:3 exists");
	assert_int_equal(results[6].observed, PROBE_REACHED);
	assert_string_equal(results[6].detail, "exists, readable");
	assert_int_equal(results[7].observed, PROBE_REACHED);
	assert_string_equal(results[8].detail, "not run");
	report_parse();
	probe_local_run(&plan, quiet, results);
	assert_int_equal(results[0].observed, PROBE_BLOCKED);
	probe_local_run(&plan, NULL, results);
	assert_string_equal(results[0].detail, "in none of 0 variables");
	unlink(tmp);
}

static void spoof_on_loopback(void **state)
{
	const char *a[] = {"sip,blocked,spoof-ip,127.0.0.1", "smac,blocked,spoof-mac,127.0.0.1"};
	int raw = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);

	(void)state;
	set_plan(200, a, 2);
	probe_spoof_run(&plan, results);
	if (raw >= 0) {
		assert_int_equal(results[0].observed, PROBE_BLOCKED);
		assert_string_equal(results[0].detail, "sent 3");
		close(raw);
	} else {
		assert_int_equal(results[0].observed, PROBE_ERROR);
	}
	/* The loopback interface has no MAC to change, and the probe never tries. */
	assert_int_equal(results[1].observed, PROBE_ERROR);
	assert_string_equal(results[1].detail, "the gateway is on the loopback interface");
	report_parse();
}

#define NS_CHECK(cond, code)                                                \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "netns: %s: %s %s\n", #cond,        \
				probe_outcome_word(results[0].observed),    \
				results[0].detail);                         \
			return code;                                        \
		}                                                           \
	} while (0)

/* Frames captured on fd (AF_PACKET) within ms: true when one matches want(frame, len, ctx). */
static bool captured(int fd, bool (*want)(const uint8_t *, size_t, const void *), const void *ctx)
{
	uint8_t buf[2048];
	uint64_t end = ms_now() + 500;

	while (ms_now() < end) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
			if (want(buf, (size_t)n, ctx))
				return true;
	}
	return false;
}

/* An IPv4 UDP datagram to 10.99.0.1:9 from 10.99.0.3 (the guest's 10.99.0.2, its last bit flipped). */
static bool spoofed_ip(const uint8_t *f, size_t n, const void *ctx)
{
	(void)ctx;
	return n >= 14 + 28 && f[12] == 0x08 && f[13] == 0x00 && f[14 + 9] == IPPROTO_UDP &&
	       !memcmp(f + 14 + 12, (const uint8_t[]){10, 99, 0, 3, 10, 99, 0, 1}, 8) && f[14 + 23] == 9;
}

/* Any frame whose Ethernet source is the forged MAC (an ARP request or the datagram itself). */
static bool spoofed_mac(const uint8_t *f, size_t n, const void *ctx)
{
	return n >= 14 && !memcmp(f + 6, ctx, 6);
}

static int run_in_netns(void)
{
	struct ifreq before, after;
	uint8_t forged[6];
	struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL)};
	int ctl, cap;

	if (unshare(CLONE_NEWNET) < 0 || system("ip link add sv-v0 type veth peer name sv-v1 2>/dev/null") != 0)
		return 77;
	/* sv-v0 is the guest's interface; sv-v1, with no address, drops all it gets: a silent wall. */
	if (system("ip link set lo up && ip addr add 10.99.0.2/24 dev sv-v0 && ip link set sv-v0 up && "
		   "ip link set sv-v1 up && ip neigh replace 10.99.0.1 lladdr 02:00:00:00:00:01 dev sv-v0 nud permanent") != 0)
		return 10;
	{
		/* TEST-NET-2 (RFC 5737): no route at all, then a route into the silent wall. */
		const char *a[] = {"testnet,blocked,tcp,198.51.100.1,9", "testnet_ping,blocked,icmp,198.51.100.1"};

		set_plan(200, a, 2);
		probe_net_run(&plan, results);
		NS_CHECK(results[0].observed == PROBE_BLOCKED && !strncmp(results[0].detail, "no route", 8), 11);
		NS_CHECK(results[1].observed == PROBE_BLOCKED, 12);
		if (system("ip route add default via 10.99.0.1") != 0)
			return 13;
		set_plan(200, a, 2);
		probe_net_run(&plan, results);
		NS_CHECK(results[0].observed == PROBE_BLOCKED && !strcmp(results[0].detail, "timed out after 200 ms"), 14);
		NS_CHECK(results[1].observed == PROBE_BLOCKED && !strcmp(results[1].detail, "no reply within 200 ms"), 15);
	}
	{
		/* Ping sockets allowed in this namespace: the echo goes through SOCK_DGRAM, not raw. */
		const char *a[] = {"ping_dgram,reached,icmp,127.0.0.1"};
		FILE *f = fopen("/proc/sys/net/ipv4/ping_group_range", "w");

		if (!f || fputs("0 0\n", f) < 0 || fclose(f) != 0)
			return 24;
		set_plan(500, a, 1);
		probe_net_run(&plan, results);
		NS_CHECK(results[0].observed == PROBE_REACHED && !strcmp(results[0].detail, "echo reply"), 25);
	}
	cap = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	ll.sll_ifindex = (int)if_nametoindex("sv-v1");
	if (cap < 0 || bind(cap, (struct sockaddr *)&ll, sizeof(ll)) < 0)
		return 16;
	{
		const char *a[] = {"sip,blocked,spoof-ip,10.99.0.1"};

		set_plan(200, a, 1);
		probe_spoof_run(&plan, results);
		NS_CHECK(results[0].observed == PROBE_BLOCKED && !strcmp(results[0].detail, "sent 3"), 17);
		NS_CHECK(captured(cap, spoofed_ip, NULL), 18);
	}
	ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	memset(&before, 0, sizeof(before));
	snprintf(before.ifr_name, sizeof(before.ifr_name), "sv-v0");
	after = before;
	if (ctl < 0 || ioctl(ctl, SIOCGIFHWADDR, &before) < 0)
		return 19;
	memcpy(forged, before.ifr_hwaddr.sa_data, 6);
	forged[5] ^= 1;
	{
		const char *a[] = {"smac,blocked,spoof-mac,10.99.0.1"};

		set_plan(200, a, 1);
		probe_spoof_run(&plan, results);
		NS_CHECK(results[0].observed == PROBE_BLOCKED && !strcmp(results[0].detail, "sent 3"), 20);
		NS_CHECK(ioctl(ctl, SIOCGIFHWADDR, &after) == 0, 21);
		NS_CHECK(!memcmp(before.ifr_hwaddr.sa_data, after.ifr_hwaddr.sa_data, 6), 22);
		NS_CHECK(captured(cap, spoofed_mac, forged), 23);
	}
	return 0;
}

/*
 * What needs a network of its own (root, iproute2 and veth, else skipped):
 * a host's own network may answer for any address (a transparent proxy
 * does), so TEST-NET-2 is probed in a namespace with no route, then with a
 * route into a veth whose far end drops everything; and the spoof probes
 * for real, their frames caught at the far end: the forged source address
 * and MAC go out, and the MAC is put back.
 */
static void in_a_network_namespace(void **state)
{
	pid_t pid;
	int status;

	(void)state;
	if (geteuid() != 0) {
		skip();
		return;
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(run_in_netns());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77) {
		skip();
		return;
	}
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Runs the program with args; its exit status, and its stdout into out. */
static int run_program(const char *const *args, int n, char *out, size_t cap, size_t *len)
{
	char self[PATH_MAX], prog[PATH_MAX + 32];
	const char *argv[PROBE_SPECS_MAX + 8];
	ssize_t r = readlink("/proc/self/exe", self, sizeof(self) - 1);
	int pfd[2], status;
	pid_t pid;

	assert_true(r > 0);
	self[r] = '\0';
	snprintf(prog, sizeof(prog), "%s/../bin/sandvm-isolation-probe", dirname(self));
	argv[0] = prog;
	for (int i = 0; i < n; i++)
		argv[i + 1] = args[i];
	argv[n + 1] = NULL;
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		dup2(pfd[1], 1);
		dup2(devnull, 2);
		setenv("SANDVM_PROBE_TEST_SECRET", "svk_do_not_print", 1);
		execv(prog, (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	*len = 0;
	while ((r = read(pfd[0], out + *len, cap - 1 - *len)) > 0)
		*len += (size_t)r;
	out[*len] = '\0';
	close(pfd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void the_program(void **state)
{
	static char out[PROBE_REPORT_MAX + 1];
	char spec_open[64], err[200];
	unsigned port;
	int lfd = listener(4, &port);
	size_t len;

	(void)state;
	snprintf(spec_open, sizeof(spec_open), "open,reached,tcp,127.0.0.1,%u", port);
	{
		const char *a[] = {"--timeout-ms", "200", spec_open, "key,blocked,env,svk_", "kvm,blocked,file,/nonexistent",
				   "sip,blocked,spoof-ip,127.0.0.1"};
		uint64_t t0 = ms_now();

		assert_int_equal(run_program(a, 6, out, sizeof(out), &len), 0);
		assert_true(ms_now() - t0 < 2000);
		if (isolation_report_parse(out, len, &rep, err, sizeof(err)) < 0)
			fail_msg("report refused: %s\n%s", err, out);
		assert_int_equal(rep.count, 4);
		assert_string_equal(rep.probes[0].name, "open");
		assert_int_equal(rep.probes[0].observed, ISOLATION_REACHED);
		assert_int_equal(rep.probes[1].observed, ISOLATION_REACHED); /* planted by run_program */
		assert_int_equal(rep.result, ISOLATION_RESULT_BREACHED);
		assert_null(strstr(out, "do_not_print"));
		assert_int_equal(rep.probes[2].verdict, ISOLATION_HELD);
	}
	{
		/* Malformed: status 2, nothing run, nothing on stdout. */
		static const char *const bad[][2] = {
			{"a,blocked,env,x", "a,blocked,env,y"},
			{"a,blocked,tcp,::1", "b,blocked,env,x"},
			{"--timeout-ms", "50"},
			{"a,maybe,env,x", "b,blocked,env,x"},
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			assert_int_equal(run_program(bad[i], 2, out, sizeof(out), &len), 2);
			assert_int_equal(len, 0);
		}
		assert_int_equal(run_program(NULL, 0, out, sizeof(out), &len), 2);
	}
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(good_specs),
		cmocka_unit_test(hostile_specs),
		cmocka_unit_test(plans),
		cmocka_unit_test(report_reads_back),
		cmocka_unit_test(tcp_on_loopback),
		cmocka_unit_test(icmp_and_vsock_on_loopback),
		cmocka_unit_test(env_and_file),
		cmocka_unit_test(spoof_on_loopback),
		cmocka_unit_test(in_a_network_namespace),
		cmocka_unit_test(the_program),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
