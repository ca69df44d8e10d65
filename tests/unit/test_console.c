/*
 * The guest console's sinks (vmm/devices/console.c) behind the serial device:
 * a file rotated within its cap, a socket whose stalled reader never blocks
 * the vCPU, and the guest-triggered warnings of both bounded in the log.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "unit.h"
#include "log_capture.h"
#include "devices/console.h"
#include "devices/serial.h"
#include "sandbox_vm.h"

#define CAP 16384u

static int fake_set_irq(void *ctx, uint32_t gsi, int level)
{
	(void)ctx;
	(void)gsi;
	(void)level;
	return 0;
}

static void fake_event(void *ctx, enum machine_event ev)
{
	(void)ctx;
	(void)ev;
}

static const struct machine_hooks hooks = { .set_irq = fake_set_irq, .event = fake_event };

static uint64_t fake_clock(void *ctx)
{
	return *(const uint64_t *)ctx;
}

struct tmp {
	char dir[64];
	char path[128]; /* DIR/console.log */
	char old[128];  /* DIR/console.log.1 */
};

static void tmp_make(struct tmp *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/sandvm-console-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/console.log", t->dir);
	snprintf(t->old, sizeof(t->old), "%s/console.log.1", t->dir);
}

static void tmp_remove(struct tmp *t)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	assert_int_equal(system(cmd), 0);
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "re");
	char *buf;
	long n;

	*len = 0;
	if (!f)
		return strdup("");
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void guest_prints(struct serial *s, const char *text)
{
	while (*text)
		serial_write(s, 0, (uint8_t)*text++);
}

/* A guest printing far more than the cap: NAME and NAME.1 hold the newest output, at most CAP together. */
static void file_console_rotates_within_the_cap(void **state)
{
	struct console_out c;
	struct serial s;
	struct tmp t;
	size_t total = 0, old_len, cur_len;
	char *all = calloc(1, 1 << 20), *old, *cur;
	int fd;

	(void)state;
	assert_non_null(all);
	tmp_make(&t);
	/* An earlier run's NAME.1 is not this guest's output. */
	fd = open(t.old, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "stale\n", 6), 6);
	close(fd);
	assert_int_equal(console_out_open(&c, t.path, CAP), 0);
	assert_int_equal(file_size(t.old), -1);
	assert_int_equal(serial_init(&s, 4, &c, &hooks), 0);
	for (int i = 0; i < 5000; i++) {
		char line[80];
		int n = snprintf(line, sizeof(line), "guest line %06d %s\n", i, i % 7 ? "abc" : "a longer line, sometimes");

		guest_prints(&s, line);
		memcpy(all + total, line, (size_t)n);
		total += (size_t)n;
		assert_true(file_size(t.path) <= CAP / 2);
		assert_true(file_size(t.old) <= (long)CAP / 2);
	}
	serial_destroy(&s);
	assert_true(c.rotations > 10);
	assert_int_equal(c.truncations, 0);
	old = read_all(t.old, &old_len);
	cur = read_all(t.path, &cur_len);
	assert_true(old_len + cur_len <= CAP);
	assert_true(old_len + cur_len >= CAP / 2 - 64);
	/* Together they are exactly the newest stretch of what the guest printed. */
	assert_memory_equal(all + total - cur_len, cur, cur_len);
	assert_memory_equal(all + total - cur_len - old_len, old, old_len);
	assert_non_null(strstr(cur_len ? cur : old, "guest line 004999"));
	/* What sandbox_vm and sandboxd report on a failure: the newest bytes across both files. */
	{
		struct sandbox_vm vm = { 0 };
		char tail[CAP + 100];

		snprintf(vm.console, sizeof(vm.console), "%s", t.path);
		assert_int_equal(sandbox_vm_console_tail(&vm, tail, sizeof(tail)), old_len + cur_len);
		assert_memory_equal(tail, all + total - cur_len - old_len, old_len + cur_len);
		assert_int_equal(sandbox_vm_console_tail(&vm, tail, 100), 99);
		assert_string_equal(tail, all + total - 99);
		unlink(t.old);
		assert_int_equal(sandbox_vm_console_tail(&vm, tail, sizeof(tail)), cur_len);
	}
	console_out_destroy(&c);
	free(old);
	free(cur);
	free(all);
	tmp_remove(&t);
}

/* One write bigger than half the cap keeps its newest part only. */
static void file_console_oversized_write(void **state)
{
	char buf[3 * CAP], *cur;
	struct console_out c;
	struct tmp t;
	size_t len;

	(void)state;
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)('a' + i % 26);
	tmp_make(&t);
	assert_int_equal(console_out_open(&c, t.path, CAP), 0);
	console_out_write(&c, buf, sizeof(buf));
	console_out_destroy(&c);
	cur = read_all(t.path, &len);
	assert_int_equal(len, CAP / 2);
	assert_memory_equal(cur, buf + sizeof(buf) - CAP / 2, CAP / 2);
	free(cur);
	tmp_remove(&t);
}

/*
 * NAME.1 cannot be replaced (a directory is in the way): every rotation
 * truncates instead, the file stays bounded, and of 10,000 warnings the log
 * gets the burst and then the count.
 */
static void failed_rotation_truncates_and_is_rate_limited(void **state)
{
	struct log_capture cap;
	struct console_out c;
	char chunk[CONSOLE_CHUNK_MAX], sub[160], want[128];
	uint64_t now = 1000, truncations;
	struct tmp t;
	char *log;
	int fd;

	(void)state;
	memset(chunk, 'x', sizeof(chunk));
	tmp_make(&t);
	assert_int_equal(mkdir(t.old, 0700), 0);
	snprintf(sub, sizeof(sub), "%s/keep", t.old);
	fd = open(sub, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	log_capture_start(&cap);
	assert_int_equal(console_out_open(&c, t.path, CAP), 0);
	sv_ratelimit_set_clock(&c.warn_rl, fake_clock, &now);
	for (int i = 0; i < 20001; i++) {
		console_out_write(&c, chunk, sizeof(chunk));
		if (i % 1000 == 0)
			assert_true(file_size(t.path) <= CAP / 2);
	}
	truncations = c.truncations;
	assert_int_equal(truncations, 10000); /* every other write after the first two */
	assert_int_equal(c.rotations, 0);
	assert_int_equal(sv_ratelimit_suppressed(&c.warn_rl), truncations - SV_RATELIMIT_BURST);
	now += SV_RATELIMIT_INTERVAL_NS; /* the next window: the count, then the message */
	console_out_write(&c, chunk, sizeof(chunk));
	console_out_write(&c, chunk, sizeof(chunk));
	console_out_destroy(&c);
	log = log_capture_end(&cap);
	assert_int_equal(log_count_lines(log, "cannot remove the old console.log.1"), 1);
	assert_int_equal(log_count_lines(log, "console: cannot rotate console.log to console.log.1"),
			 SV_RATELIMIT_BURST + 1);
	snprintf(want, sizeof(want), "console: %llu similar messages suppressed",
		 (unsigned long long)(truncations - SV_RATELIMIT_BURST));
	assert_int_equal(log_count_lines(log, want), 1);
	assert_int_equal(log_count_lines(log, NULL), 1 + SV_RATELIMIT_BURST + 2);
	assert_true(file_size(t.path) <= CAP / 2);
	free(log);
	tmp_remove(&t);
}

/*
 * A console socket nobody reads: the guest's output that does not fit is
 * dropped (the vCPU never blocks), and 20,000 lines make a bounded log.
 */
static void socket_console_never_blocks_the_guest(void **state)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct log_capture cap;
	struct console_out c;
	struct serial s;
	uint64_t now = 7, suppressed;
	char want[128], *log;
	struct tmp t;
	int srv, conn;

	(void)state;
	tmp_make(&t);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/console.sock", t.dir);
	srv = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(srv >= 0);
	assert_int_equal(bind(srv, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(srv, 1), 0);
	log_capture_start(&cap);
	assert_int_equal(console_out_open(&c, addr.sun_path, CAP), 0);
	conn = accept(srv, NULL, NULL);
	assert_true(conn >= 0);
	assert_int_equal(c.dir_fd, -1); /* nothing to rotate */
	sv_ratelimit_set_clock(&c.warn_rl, fake_clock, &now);
	assert_int_equal(serial_init(&s, 4, &c, &hooks), 0);
	for (int i = 0; i < 20000; i++)
		guest_prints(&s, "a guest that prints and prints, to a console nobody reads ..........\n");
	serial_destroy(&s);
	assert_true(c.dropped_bytes > 0);
	assert_true(console_out_active(&c)); /* dropping is not giving up */
	suppressed = sv_ratelimit_suppressed(&c.warn_rl);
	assert_true(suppressed > 1000);
	console_out_destroy(&c); /* flushes the count */
	log = log_capture_end(&cap);
	assert_int_equal(log_count_lines(log, "reader is behind"), SV_RATELIMIT_BURST);
	snprintf(want, sizeof(want), "console: %llu similar messages suppressed", (unsigned long long)suppressed);
	assert_int_equal(log_count_lines(log, want), 1);
	assert_int_equal(log_count_lines(log, NULL), SV_RATELIMIT_BURST + 1);
	free(log);
	close(conn);
	close(srv);
	tmp_remove(&t);
}

/* Devices and FIFOs are written as they are; stdout is borrowed, never closed. */
static void non_files_are_not_rotated(void **state)
{
	struct console_out c;

	(void)state;
	assert_int_equal(console_out_open(&c, "/dev/null", CAP), 0);
	assert_int_equal(c.dir_fd, -1);
	for (int i = 0; i < 10; i++)
		console_out_write(&c, "0123456789abcdef0123456789abcdef", 32);
	assert_true(console_out_active(&c));
	console_out_destroy(&c);
	assert_int_equal(console_out_open(&c, "/tmp", CAP), -EISDIR);
	assert_int_equal(console_out_open(&c, "/nonexistent-dir/console.log", CAP), -ENOENT);
	assert_int_equal(console_out_open(&c, "/dev/null", CONSOLE_CHUNK_MAX), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(file_console_rotates_within_the_cap),
		cmocka_unit_test(file_console_oversized_write),
		cmocka_unit_test(failed_rotation_truncates_and_is_rate_limited),
		cmocka_unit_test(socket_console_never_blocks_the_guest),
		cmocka_unit_test(non_files_are_not_rotated),
	};

	sv_log_init("vmm", SV_LOG_INFO);
	return cmocka_run_group_tests_name("console", tests, NULL, NULL);
}
