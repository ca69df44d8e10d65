/*
 * libFuzzer target: arbitrary bytes as the isolation probe's command line
 * (guest-agent/probe/probe_spec.c), NUL-separated arguments. A refusal
 * leaves an empty plan and says why; an accepted plan is within bounds,
 * with valid unique names, and the report written for it is one that
 * sandboxd's parser (api/sandboxd/isolation_report.c) accepts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "isolation_report.h"
#include "probe_report.h"
#include "probe_spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ARGS_MAX (PROBE_SPECS_MAX + 8)

static struct probe_plan plan;
static struct probe_result results[PROBE_SPECS_MAX];
static struct isolation_report rep;
static char report[PROBE_REPORT_MAX];
static char text[70000];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *args[ARGS_MAX];
	struct probe_spec one;
	char err[256];
	int n = 0, len;

	if (size >= sizeof(text))
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	/* The whole input as one spec. */
	if (probe_spec_parse(text, &one, err, sizeof(err)) == 0 &&
	    (!one.name[0] || !memchr(one.arg, '\0', sizeof(one.arg)) || one.expected > PROBE_REACHED))
		abort();
	for (size_t at = 0; at <= size && n < ARGS_MAX; at += strlen(text + at) + 1)
		args[n++] = text + at;
	err[0] = '\0';
	if (probe_plan_parse(n, args, &plan, err, sizeof(err)) < 0) {
		if (plan.count || !err[0])
			abort();
		return 0;
	}
	if (plan.count == 0 || plan.count > PROBE_SPECS_MAX || plan.timeout_ms < PROBE_TIMEOUT_MS_MIN ||
	    plan.timeout_ms > PROBE_TIMEOUT_MS_MAX)
		abort();
	for (unsigned i = 0; i < plan.count; i++) {
		const struct probe_spec *s = &plan.specs[i];

		if (!memchr(s->name, '\0', sizeof(s->name)) || !memchr(s->arg, '\0', sizeof(s->arg)))
			abort();
		if (s->kind == PROBE_TCP && (s->port == 0 || s->port > 65535))
			abort();
		if (s->kind == PROBE_SPOOF_IP && s->addr.family != AF_INET)
			abort();
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(plan.specs[j].name, s->name))
				abort();
		/* A detail from the input itself: whatever it holds, the report stays well formed. */
		probe_result_set(&results[i], (enum probe_outcome)(i % 3), "%s", args[i % (unsigned)n]);
	}
	len = probe_report_write(&plan, results, report, sizeof(report));
	if (len < 0 || isolation_report_parse(report, (size_t)len, &rep, err, sizeof(err)) < 0 ||
	    rep.count != plan.count)
		abort();
	for (unsigned i = 0; i < plan.count; i++)
		if (strcmp(rep.probes[i].name, plan.specs[i].name) ||
		    (int)rep.probes[i].expected != (int)plan.specs[i].expected)
			abort();
	return 0;
}
