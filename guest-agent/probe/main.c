/*
 * sandvm-isolation-probe: the isolation monitor's probe program, run by
 * sandboxd in a canary sandbox (docs/security.md, "Isolation monitor").
 * It runs each probe its command line names, bounded in time, and prints
 * the report that api/sandboxd/isolation_report.c reads. Exit status 0
 * when the report was printed (whatever it says), 2 for a bad command
 * line (nothing run), 1 when the report could not be written.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "probe_local.h"
#include "probe_net.h"
#include "probe_report.h"
#include "probe_spec.h"
#include "probe_spoof.h"

extern char **environ;

static const char usage[] =
	"usage: sandvm-isolation-probe [--timeout-ms N] SPEC...\n"
	"  SPEC: NAME,EXPECTED,KIND[,ARG...]  EXPECTED: blocked | reached\n"
	"  KIND: tcp,ADDR,PORT | icmp,ADDR | vsock,CID,PORT | env,NEEDLE | file,PATH\n"
	"        | spoof-ip,GATEWAY | spoof-mac,GATEWAY\n"
	"  --timeout-ms N: each network probe's wait, 100..10000 (default 1500)\n";

/* Past the probes' own deadlines: a call stuck in the kernel ends the run, with no report. */
#define WATCHDOG_SLACK_S 10

static struct probe_plan plan;
static struct probe_result results[PROBE_SPECS_MAX];
static char report[PROBE_REPORT_MAX];

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	char err[256];
	int n;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(usage, stdout);
		return 0;
	}
	if (probe_plan_parse(argc - 1, (const char *const *)argv + 1, &plan, err, sizeof(err)) < 0) {
		fprintf(stderr, "sandvm-isolation-probe: %s\n%s", err, usage);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	alarm(plan.timeout_ms / 1000 + WATCHDOG_SLACK_S);
	for (unsigned i = 0; i < plan.count; i++)
		probe_result_set(&results[i], PROBE_ERROR, "not run");
	probe_net_run(&plan, results);
	probe_local_run(&plan, environ, results);
	probe_spoof_run(&plan, results);
	n = probe_report_write(&plan, results, report, sizeof(report));
	if (n < 0) {
		fprintf(stderr, "sandvm-isolation-probe: the report does not fit %d bytes\n", PROBE_REPORT_MAX);
		return 1;
	}
	if (write_all(STDOUT_FILENO, report, (size_t)n) < 0) {
		fprintf(stderr, "sandvm-isolation-probe: writing the report: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
