#ifndef SANDVM_API_SANDBOXD_ISOLATION_REPORT_H
#define SANDVM_API_SANDBOXD_ISOLATION_REPORT_H

/*
 * The isolation monitor's probe report (docs/security.md, "Isolation
 * monitor"): what the fixed probe program in the canary sandbox prints on
 * its stdout, and its verdict. It comes from a guest, so it is judged as
 * hostile: a pure parser over a buffer, every field bounded and checked, and
 * anything off refuses the whole report (a refused report is "unknown",
 * never "ok").
 *
 *   sandvm-isolation-report 1
 *   probe NAME EXPECTED OBSERVED[ DETAIL]
 *   ...
 *   end COUNT
 *
 * NAME is [a-z0-9_.:-]{1,63}, unique; EXPECTED "blocked" or "reached";
 * OBSERVED "blocked", "reached" or "error"; DETAIL printable ASCII, at most
 * 159 bytes. Lines end in "\n"; COUNT is the number of probe lines.
 */

#include <stddef.h>

#define ISOLATION_PROBES_MAX 128
#define ISOLATION_NAME_MAX 64
#define ISOLATION_DETAIL_MAX 160
#define ISOLATION_REPORT_MAX (64 * 1024)

enum isolation_outcome { ISOLATION_BLOCKED, ISOLATION_REACHED, ISOLATION_ERROR };

/*
 * A probe's verdict: held (observed what was expected), breached (reached
 * what must be blocked: a wall that did not hold), failed (an error, or an
 * allowlisted peer not reached: nothing is proven either way).
 */
enum isolation_verdict { ISOLATION_HELD, ISOLATION_BREACHED, ISOLATION_FAILED };

/* The whole run: ok (every probe held), breached (one did not), unknown (nothing proven). */
enum isolation_result { ISOLATION_RESULT_UNKNOWN, ISOLATION_RESULT_OK, ISOLATION_RESULT_BREACHED };

struct isolation_probe {
	char name[ISOLATION_NAME_MAX];
	enum isolation_outcome expected, observed;
	enum isolation_verdict verdict;
	char detail[ISOLATION_DETAIL_MAX];
};

struct isolation_report {
	unsigned count, breached, failed;
	enum isolation_result result;
	struct isolation_probe probes[ISOLATION_PROBES_MAX];
};

/*
 * Parses len bytes of report text into out, with every probe's verdict and
 * the run's result. 0, or -EBADMSG with why in err (out->result is then
 * unknown and out->count 0).
 */
int isolation_report_parse(const char *text, size_t len, struct isolation_report *out, char *err, size_t errlen);

/* Judges every probe's verdict again from expected and observed, with the counts and the result. */
void isolation_report_judge(struct isolation_report *r);

const char *isolation_outcome_word(enum isolation_outcome o);
const char *isolation_verdict_word(enum isolation_verdict v);
const char *isolation_result_word(enum isolation_result r);

#endif
