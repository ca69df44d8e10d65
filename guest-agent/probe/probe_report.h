#ifndef SANDVM_GUEST_AGENT_PROBE_PROBE_REPORT_H
#define SANDVM_GUEST_AGENT_PROBE_PROBE_REPORT_H

/*
 * What each probe observed, and the report that carries it to sandboxd
 * (api/sandboxd/isolation_report.h reads it):
 *
 *   sandvm-isolation-report 1
 *   probe NAME EXPECTED OBSERVED[ DETAIL]
 *   ...
 *   end COUNT
 */

#include <stddef.h>

#include "probe_spec.h"

#define PROBE_DETAIL_MAX 160 /* with its NUL: at most 159 bytes of printable ASCII */
#define PROBE_REPORT_MAX (64 * 1024)

struct probe_result {
	enum probe_outcome observed;
	char detail[PROBE_DETAIL_MAX];
};

/* Sets r to o with a detail from fmt, cut to fit, every byte outside ' '..'~' made '?'. */
void probe_result_set(struct probe_result *r, enum probe_outcome o, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * The report of plan's probes, results[i] being specs[i]'s, into buf, in
 * the plan's order. Its length, or -ENOSPC when cap is too small (a whole
 * plan needs well under PROBE_REPORT_MAX). Details are cleaned again here,
 * so no result can break a line.
 */
int probe_report_write(const struct probe_plan *plan, const struct probe_result *results, char *buf, size_t cap);

#endif
