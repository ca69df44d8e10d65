#ifndef SANDVM_LIB_LOG_H
#define SANDVM_LIB_LOG_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

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
void sv_vlog(enum sv_log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

#define sv_err(...) sv_log(SV_LOG_ERROR, __VA_ARGS__)
#define sv_warn(...) sv_log(SV_LOG_WARN, __VA_ARGS__)
#define sv_info(...) sv_log(SV_LOG_INFO, __VA_ARGS__)
#define sv_debug(...) sv_log(SV_LOG_DEBUG, __VA_ARGS__)

/*
 * A rate limit for messages something untrusted (a guest, a client) can
 * trigger as often as it likes: at most `burst` messages per `interval_ns`
 * window (the window starts with its first message). Messages beyond that are
 * counted, not logged; the count is logged as "NAME: N similar messages
 * suppressed" just before the next message that passes, or by
 * sv_ratelimit_flush() (sv_ratelimit_destroy() flushes too).
 *
 * The state lives in the object whose messages it limits (a device model, a
 * connection table), one limiter per kind of message, never in a global.
 *
 * Locking: the limiter has its own mutex, so callers on different threads
 * (vCPU threads and the main thread) may share one limiter without a lock of
 * their own; init and destroy need the caller to own the object exclusively,
 * as for any init/destroy pair. The mutex is a leaf: held only for the
 * bookkeeping, never while the message is formatted or written, so calling
 * with the caller's own locks held is fine.
 */
#define SV_RATELIMIT_BURST 10
#define SV_RATELIMIT_INTERVAL_NS 5000000000ull /* 10 per 5 s, like the Linux kernel's printk */

struct sv_ratelimit {
	pthread_mutex_t lock;
	const char *name; /* static text naming the message kind, e.g. "virtio-vsock: control queue full" */
	unsigned burst;
	uint64_t interval_ns;
	uint64_t (*clock)(void *ctx); /* nanoseconds; NULL: CLOCK_MONOTONIC (tests inject theirs) */
	void *clock_ctx;
	bool started;
	uint64_t window_start_ns;
	unsigned in_window;         /* messages logged in the current window */
	uint64_t pending;           /* suppressed since the last report */
	uint64_t suppressed_total;  /* suppressed over the limiter's life */
	enum sv_log_level pending_level;
};

/* burst 0 or interval 0 is -EINVAL; name must outlive the limiter. */
int sv_ratelimit_init(struct sv_ratelimit *rl, const char *name, unsigned burst, uint64_t interval_ns);
void sv_ratelimit_destroy(struct sv_ratelimit *rl); /* flushes */
void sv_ratelimit_set_clock(struct sv_ratelimit *rl, uint64_t (*clock)(void *ctx), void *ctx);

/*
 * For callers that do work to build the message: true when a message at this
 * level may be logged now (a pending suppressed count has then been logged
 * already); false when it is suppressed (and counted) or below the log level
 * (not counted: it would not have been logged anyway).
 */
bool sv_ratelimit_allow(struct sv_ratelimit *rl, enum sv_log_level level);

/* Logs the pending suppressed count, if any. */
void sv_ratelimit_flush(struct sv_ratelimit *rl);

uint64_t sv_ratelimit_suppressed(struct sv_ratelimit *rl);

void sv_log_ratelimited(struct sv_ratelimit *rl, enum sv_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define sv_warn_ratelimited(rl, ...) sv_log_ratelimited((rl), SV_LOG_WARN, __VA_ARGS__)
#define sv_info_ratelimited(rl, ...) sv_log_ratelimited((rl), SV_LOG_INFO, __VA_ARGS__)
#define sv_debug_ratelimited(rl, ...) sv_log_ratelimited((rl), SV_LOG_DEBUG, __VA_ARGS__)

#endif
