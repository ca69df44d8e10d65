/* The probe report's writer (probe_report.h): the only place its format is spelt. */
#include "probe_report.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void clean(char *s, size_t cap)
{
	for (size_t i = 0; i < cap && s[i]; i++)
		if (s[i] < ' ' || s[i] > '~')
			s[i] = '?';
}

void probe_result_set(struct probe_result *r, enum probe_outcome o, const char *fmt, ...)
{
	va_list ap;

	r->observed = o;
	va_start(ap, fmt);
	vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
	va_end(ap);
	clean(r->detail, sizeof(r->detail));
}

int probe_report_write(const struct probe_plan *plan, const struct probe_result *results, char *buf, size_t cap)
{
	unsigned count = plan->count < PROBE_SPECS_MAX ? plan->count : PROBE_SPECS_MAX;
	size_t at = 0;
	int n;

	n = snprintf(buf, cap, "sandvm-isolation-report 1\n");
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	at = (size_t)n;
	for (unsigned i = 0; i < count; i++) {
		const struct probe_spec *s = &plan->specs[i];
		const struct probe_result *r = &results[i];
		char detail[PROBE_DETAIL_MAX];
		enum probe_outcome o = (unsigned)r->observed <= PROBE_ERROR ? r->observed : PROBE_ERROR;

		memcpy(detail, r->detail, sizeof(detail));
		detail[sizeof(detail) - 1] = '\0';
		clean(detail, sizeof(detail));
		n = snprintf(buf + at, cap - at, "probe %s %s %s%s%s\n", s->name, probe_outcome_word(s->expected),
			     probe_outcome_word(o), detail[0] ? " " : "", detail);
		if (n < 0 || (size_t)n >= cap - at)
			return -ENOSPC;
		at += (size_t)n;
	}
	n = snprintf(buf + at, cap - at, "end %u\n", count);
	if (n < 0 || (size_t)n >= cap - at)
		return -ENOSPC;
	at += (size_t)n;
	return (int)at;
}
