#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

void sv_vlog(enum sv_log_level level, const char *fmt, va_list ap)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[1024];
	int n;

	if (level > log_level)
		return;
	n = snprintf(line, sizeof(line), "%s: %s: ", log_progname, names[level]);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	/* One write per line so lines of concurrent threads never interleave. */
	strcat(line, "\n");
	fputs(line, stderr);
}

void sv_log(enum sv_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sv_vlog(level, fmt, ap);
	va_end(ap);
}

static uint64_t monotonic_ns(void *ctx)
{
	struct timespec ts;

	(void)ctx;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int sv_ratelimit_init(struct sv_ratelimit *rl, const char *name, unsigned burst, uint64_t interval_ns)
{
	int r;

	if (!name || burst == 0 || interval_ns == 0)
		return -EINVAL;
	memset(rl, 0, sizeof(*rl));
	r = pthread_mutex_init(&rl->lock, NULL);
	if (r)
		return -r;
	rl->name = name;
	rl->burst = burst;
	rl->interval_ns = interval_ns;
	rl->clock = monotonic_ns;
	return 0;
}

void sv_ratelimit_destroy(struct sv_ratelimit *rl)
{
	sv_ratelimit_flush(rl);
	pthread_mutex_destroy(&rl->lock);
}

void sv_ratelimit_set_clock(struct sv_ratelimit *rl, uint64_t (*clock)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&rl->lock);
	rl->clock = clock ? clock : monotonic_ns;
	rl->clock_ctx = clock ? ctx : NULL;
	pthread_mutex_unlock(&rl->lock);
}

static void report(const struct sv_ratelimit *rl, enum sv_log_level level, uint64_t count)
{
	if (count)
		sv_log(level, "%s: %llu similar message%s suppressed", rl->name, (unsigned long long)count,
		       count == 1 ? "" : "s");
}

bool sv_ratelimit_allow(struct sv_ratelimit *rl, enum sv_log_level level)
{
	enum sv_log_level pending_level = level;
	uint64_t now, pending = 0;
	bool allow;

	if (level > sv_log_get_level())
		return false;
	pthread_mutex_lock(&rl->lock);
	now = rl->clock(rl->clock_ctx);
	/* A clock that went backwards (a test's) starts a new window too. */
	if (!rl->started || now - rl->window_start_ns >= rl->interval_ns || now < rl->window_start_ns) {
		rl->started = true;
		rl->window_start_ns = now;
		rl->in_window = 0;
	}
	allow = rl->in_window < rl->burst;
	if (allow) {
		rl->in_window++;
		pending = rl->pending;
		pending_level = rl->pending_level;
		rl->pending = 0;
	} else {
		if (!rl->pending || level < rl->pending_level)
			rl->pending_level = level;
		rl->pending++;
		rl->suppressed_total++;
	}
	pthread_mutex_unlock(&rl->lock);
	if (pending)
		report(rl, pending_level, pending);
	return allow;
}

void sv_ratelimit_flush(struct sv_ratelimit *rl)
{
	enum sv_log_level level;
	uint64_t pending;

	pthread_mutex_lock(&rl->lock);
	pending = rl->pending;
	level = rl->pending_level;
	rl->pending = 0;
	pthread_mutex_unlock(&rl->lock);
	report(rl, level, pending);
}

uint64_t sv_ratelimit_suppressed(struct sv_ratelimit *rl)
{
	uint64_t n;

	pthread_mutex_lock(&rl->lock);
	n = rl->suppressed_total;
	pthread_mutex_unlock(&rl->lock);
	return n;
}

void sv_log_ratelimited(struct sv_ratelimit *rl, enum sv_log_level level, const char *fmt, ...)
{
	va_list ap;

	if (!sv_ratelimit_allow(rl, level))
		return;
	va_start(ap, fmt);
	sv_vlog(level, fmt, ap);
	va_end(ap);
}
