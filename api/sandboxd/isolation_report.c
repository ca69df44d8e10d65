/*
 * The probe report of the isolation monitor's canary (isolation_report.h).
 * Line by line, each bounded before it is looked at; the first thing out of
 * place refuses the report.
 */
#include "isolation_report.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define HEADER "sandvm-isolation-report 1"
#define LINE_MAX_BYTES 512

static const char *const outcome_words[] = {"blocked", "reached", "error"};

const char *isolation_outcome_word(enum isolation_outcome o)
{
	return (unsigned)o < 3 ? outcome_words[o] : "?";
}

const char *isolation_verdict_word(enum isolation_verdict v)
{
	static const char *const w[] = {"held", "breached", "failed"};

	return (unsigned)v < 3 ? w[v] : "?";
}

const char *isolation_result_word(enum isolation_result r)
{
	static const char *const w[] = {"unknown", "ok", "breached"};

	return (unsigned)r < 3 ? w[r] : "?";
}

__attribute__((format(printf, 3, 4))) static int refuse(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

/* The next space-separated word of [*p, end): its start and length; false when none. */
static bool word(const char **p, const char *end, const char **w, size_t *n)
{
	const char *s = *p, *e;

	if (s >= end || *s == ' ')
		return false;
	e = memchr(s, ' ', (size_t)(end - s));
	if (!e)
		e = end;
	*w = s;
	*n = (size_t)(e - s);
	*p = e < end ? e + 1 : e;
	return true;
}

static bool name_ok(const char *w, size_t n)
{
	if (n == 0 || n >= ISOLATION_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = w[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
		      c == '-'))
			return false;
	}
	return true;
}

static int outcome(const char *w, size_t n, bool allow_error)
{
	for (int i = 0; i < (allow_error ? 3 : 2); i++)
		if (strlen(outcome_words[i]) == n && !memcmp(w, outcome_words[i], n))
			return i;
	return -1;
}

static int parse_probe(struct isolation_report *out, const char *p, const char *end, char *err, size_t errlen)
{
	struct isolation_probe *pr;
	const char *w;
	size_t n;
	int ex, ob;

	if (out->count == ISOLATION_PROBES_MAX)
		return refuse(err, errlen, "more than %d probes", ISOLATION_PROBES_MAX);
	pr = &out->probes[out->count];
	if (!word(&p, end, &w, &n) || !name_ok(w, n))
		return refuse(err, errlen, "probe %u: bad name", out->count + 1);
	memcpy(pr->name, w, n);
	pr->name[n] = '\0';
	for (unsigned i = 0; i < out->count; i++)
		if (!strcmp(out->probes[i].name, pr->name))
			return refuse(err, errlen, "probe %s twice", pr->name);
	if (!word(&p, end, &w, &n) || (ex = outcome(w, n, false)) < 0)
		return refuse(err, errlen, "probe %s: expected is blocked or reached", pr->name);
	if (!word(&p, end, &w, &n) || (ob = outcome(w, n, true)) < 0)
		return refuse(err, errlen, "probe %s: observed is blocked, reached or error", pr->name);
	if ((size_t)(end - p) >= ISOLATION_DETAIL_MAX)
		return refuse(err, errlen, "probe %s: detail longer than %d bytes", pr->name, ISOLATION_DETAIL_MAX - 1);
	for (const char *c = p; c < end; c++)
		if (*c < 0x20 || *c > 0x7e)
			return refuse(err, errlen, "probe %s: detail is not printable ASCII", pr->name);
	memcpy(pr->detail, p, (size_t)(end - p));
	pr->detail[end - p] = '\0';
	pr->expected = (enum isolation_outcome)ex;
	pr->observed = (enum isolation_outcome)ob;
	out->count++;
	return 0;
}

static int parse_end(const struct isolation_report *out, const char *p, const char *end, char *err, size_t errlen)
{
	unsigned long v = 0;

	if (p == end || end - p > 3)
		return refuse(err, errlen, "bad end line");
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return refuse(err, errlen, "bad end line");
		v = v * 10 + (unsigned long)(*p - '0');
	}
	if (v != out->count)
		return refuse(err, errlen, "end says %lu probes, the report has %u", v, out->count);
	return 0;
}

static int parse(const char *text, size_t len, struct isolation_report *out, char *err, size_t errlen)
{
	const char *p = text, *end = text + len;
	bool header = false, ended = false;

	if (!text || len > ISOLATION_REPORT_MAX)
		return refuse(err, errlen, "no report, or one over %d bytes", ISOLATION_REPORT_MAX);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		int r;

		if (!nl)
			return refuse(err, errlen, "the last line does not end");
		if (nl - p > LINE_MAX_BYTES)
			return refuse(err, errlen, "a line over %d bytes", LINE_MAX_BYTES);
		if (ended)
			return refuse(err, errlen, "text after the end line");
		if (!header) {
			if ((size_t)(nl - p) != strlen(HEADER) || memcmp(p, HEADER, strlen(HEADER)))
				return refuse(err, errlen, "not a version 1 report");
			header = true;
		} else if (nl - p > 6 && !memcmp(p, "probe ", 6)) {
			if ((r = parse_probe(out, p + 6, nl, err, errlen)) < 0)
				return r;
		} else if (nl - p > 4 && !memcmp(p, "end ", 4)) {
			if ((r = parse_end(out, p + 4, nl, err, errlen)) < 0)
				return r;
			ended = true;
		} else {
			return refuse(err, errlen, "an unknown line");
		}
		p = nl + 1;
	}
	if (!ended)
		return refuse(err, errlen, "no end line: the report is cut short");
	if (out->count == 0)
		return refuse(err, errlen, "no probes");
	return 0;
}

int isolation_report_parse(const char *text, size_t len, struct isolation_report *out, char *err, size_t errlen)
{
	int r;

	memset(out, 0, sizeof(*out));
	if (errlen)
		err[0] = '\0';
	r = parse(text, len, out, err, errlen);
	if (r < 0) {
		memset(out, 0, sizeof(*out));
		out->result = ISOLATION_RESULT_UNKNOWN;
		return r;
	}
	isolation_report_judge(out);
	return 0;
}

void isolation_report_judge(struct isolation_report *r)
{
	r->breached = r->failed = 0;
	for (unsigned i = 0; i < r->count; i++) {
		struct isolation_probe *pr = &r->probes[i];

		if (pr->observed == pr->expected)
			pr->verdict = ISOLATION_HELD;
		else if (pr->expected == ISOLATION_BLOCKED && pr->observed == ISOLATION_REACHED)
			pr->verdict = ISOLATION_BREACHED;
		else
			pr->verdict = ISOLATION_FAILED;
		r->breached += pr->verdict == ISOLATION_BREACHED;
		r->failed += pr->verdict == ISOLATION_FAILED;
	}
	r->result = r->breached ? ISOLATION_RESULT_BREACHED
		    : r->failed ? ISOLATION_RESULT_UNKNOWN
				: ISOLATION_RESULT_OK;
}
