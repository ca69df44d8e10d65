#ifndef SANDVM_LIB_LOG_H
#define SANDVM_LIB_LOG_H

/*
 * Messages for people, on stderr, each line prefixed with the program name so
 * that output of several processes (sandboxd, its VMMs) stays attributable.
 */

enum sv_log_level {
	SV_LOG_ERROR = 0,
	SV_LOG_WARN = 1,
	SV_LOG_INFO = 2,
	SV_LOG_DEBUG = 3,
};

/* Set once by main() before any thread starts. */
void sv_log_init(const char *progname, enum sv_log_level level);
enum sv_log_level sv_log_get_level(void);

void sv_log(enum sv_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define sv_err(...) sv_log(SV_LOG_ERROR, __VA_ARGS__)
#define sv_warn(...) sv_log(SV_LOG_WARN, __VA_ARGS__)
#define sv_info(...) sv_log(SV_LOG_INFO, __VA_ARGS__)
#define sv_debug(...) sv_log(SV_LOG_DEBUG, __VA_ARGS__)

#endif
