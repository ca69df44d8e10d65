#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/*
 * The only process-wide state in the library: written once by main() before
 * threads exist, read-only afterwards.
 */
static const char *log_progname = "sandvm";
static enum sv_log_level log_level = SV_LOG_INFO;

void sv_log_init(const char *progname, enum sv_log_level level)
{
	const char *slash = strrchr(progname, '/');

	log_progname = slash ? slash + 1 : progname;
	log_level = level;
}

enum sv_log_level sv_log_get_level(void)
{
	return log_level;
}

void sv_log(enum sv_log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[1024];
	va_list ap;
	int n;

	if (level > log_level)
		return;
	n = snprintf(line, sizeof(line), "%s: %s: ", log_progname, names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	/* One write per line so lines of concurrent threads never interleave. */
	strcat(line, "\n");
	fputs(line, stderr);
}
