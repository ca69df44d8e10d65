/*
 * libFuzzer target: arbitrary bytes as the isolation canary's probe report
 * (api/sandboxd/isolation_report.c), which a guest prints. A refusal is
 * "unknown" with no probes; an accepted report's result agrees with its
 * probes' verdicts, and every name and detail is NUL-terminated within bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "isolation_report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct isolation_report rep;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[128];
	unsigned breached = 0, failed = 0;

	if (isolation_report_parse((const char *)data, size, &rep, err, sizeof(err)) < 0) {
		if (rep.result != ISOLATION_RESULT_UNKNOWN || rep.count || !err[0])
			abort();
		return 0;
	}
	if (rep.count == 0 || rep.count > ISOLATION_PROBES_MAX)
		abort();
	for (unsigned i = 0; i < rep.count; i++) {
		const struct isolation_probe *p = &rep.probes[i];

		if (!memchr(p->name, '\0', sizeof(p->name)) || !memchr(p->detail, '\0', sizeof(p->detail)) || !p->name[0])
			abort();
		breached += p->verdict == ISOLATION_BREACHED;
		failed += p->verdict == ISOLATION_FAILED;
		if (p->verdict == ISOLATION_BREACHED && !(p->expected == ISOLATION_BLOCKED && p->observed == ISOLATION_REACHED))
			abort();
	}
	if (breached != rep.breached || failed != rep.failed)
		abort();
	if ((rep.result == ISOLATION_RESULT_OK) != (breached == 0 && failed == 0))
		abort();
	if ((rep.result == ISOLATION_RESULT_BREACHED) != (breached > 0))
		abort();
	return 0;
}
