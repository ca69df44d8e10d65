/*
 * sandvm-init: PID 1 of the sandvm test guest.
 *
 * It brings up the few pseudo file systems a program expects, tells the VMM
 * that user space was reached (for boot-time measurement), reports what the
 * guest sees (CPUs, RAM, uptime) on the console, runs the test action asked
 * for on the kernel command line and then reboots, which the VMM treats as a
 * clean end of the VM. The console lines are a contract with the
 * integration tests; see docs/guest.md before changing any of them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* ioperm, outb */
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The VMM timestamps the first write of this value to this port. */
#define INIT_BOOT_PORT 0x440
#define INIT_BOOT_VALUE 0x7b

/*
 * The VMM's e820 map leaves 0x9fc00-0x100000 out of RAM, and the kernel
 * itself reserves the first page; anything beyond this slack means the
 * memory size did not reach the guest intact.
 */
#define INIT_MEM_SLACK_KIB 2048

#define INIT_PATH "/bin:/sbin:/usr/bin:/usr/sbin"

struct init_opts {
	long expect_cpus;    /* -1 when not given */
	long expect_mem_mib; /* -1 when not given */
	char test[32];       /* sandvm.test=, empty when not given */
	char run[256];       /* sandvm.run=, empty when not given */
};

/* One write() per line, so the line is not torn by concurrent printk. */
static void init_say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	n = snprintf(line, sizeof(line), "sandvm-init: ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDOUT_FILENO, line, n) < 0) {
		/* Nowhere left to report to; the VMM still sees the exit. */
	}
}

/* Reads a whole (small, pseudo) file into buf as a C string. */
static int init_read_file(const char *path, char *buf, size_t len)
{
	size_t used = 0;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (used < len - 1) {
		n = read(fd, buf + used, len - 1 - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;

			close(fd);
			return err;
		}
		if (n == 0)
			break;
		used += n;
	}
	buf[used] = '\0';
	close(fd);
	return 0;
}

static int init_write_file(const char *path, const char *text)
{
	ssize_t n;
	int fd;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = write(fd, text, strlen(text));
	if (n < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	close(fd);
	return 0;
}

static int init_mount(const char *type, const char *dir, unsigned long flags,
		      const char *data)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	/* CONFIG_DEVTMPFS_MOUNT may already have put devtmpfs on /dev. */
	if (mount(type, dir, type, flags, data) < 0 && errno != EBUSY)
		return -errno;
	return 0;
}

static void init_mount_all(void)
{
	static const struct {
		const char *type;
		const char *dir;
		unsigned long flags;
		const char *data;
	} mounts[] = {
		{ "proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
		{ "sysfs", "/sys", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
		{ "devtmpfs", "/dev", MS_NOSUID, "mode=0755" },
		{ "tmpfs", "/tmp", MS_NOSUID | MS_NODEV, "mode=1777" },
	};
	size_t i;
	int err;

	for (i = 0; i < sizeof(mounts) / sizeof(mounts[0]); i++) {
		err = init_mount(mounts[i].type, mounts[i].dir, mounts[i].flags,
				 mounts[i].data);
		if (err)
			init_say("mount %s: %s", mounts[i].dir, strerror(-err));
	}
}

/*
 * The kernel opens /dev/console for init only if the node exists in the
 * initramfs; when it did not, fall back to the devtmpfs node.
 */
static void init_console(void)
{
	int fd;

	if (fcntl(STDOUT_FILENO, F_GETFD) >= 0)
		return;
	fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd < 0)
		return;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

/* Best effort: a VMM without the port, or plain QEMU, simply ignores it. */
static void init_signal_boot(void)
{
	if (ioperm(INIT_BOOT_PORT, 1, 1) < 0) {
		init_say("boot port 0x%x: %s", INIT_BOOT_PORT, strerror(errno));
		return;
	}
	outb(INIT_BOOT_VALUE, INIT_BOOT_PORT);
	ioperm(INIT_BOOT_PORT, 1, 0);
}

/* Counts CPUs in a sysfs list such as "0-3,5,7-8"; -EINVAL if malformed. */
static int init_parse_cpu_list(const char *s)
{
	unsigned long first, last;
	char *end;
	int count = 0;

	while (*s && *s != '\n') {
		errno = 0;
		first = strtoul(s, &end, 10);
		if (end == s || errno)
			return -EINVAL;
		last = first;
		s = end;
		if (*s == '-') {
			s++;
			last = strtoul(s, &end, 10);
			if (end == s || errno || last < first)
				return -EINVAL;
			s = end;
		}
		count += last - first + 1;
		if (*s == ',')
			s++;
		else if (*s && *s != '\n')
			return -EINVAL;
	}
	return count;
}

static int init_count_cpus(void)
{
	char buf[256];
	long n;

	if (init_read_file("/sys/devices/system/cpu/online", buf, sizeof(buf)) == 0) {
		n = init_parse_cpu_list(buf);
		if (n > 0)
			return n;
	}
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? n : -ENOENT;
}

/*
 * Sums the top-level "System RAM" ranges of /proc/iomem, which are exactly
 * the RAM entries of the e820 map the kernel was given (less the first
 * page, which the kernel keeps for itself). Nested lines are indented and
 * describe parts of those ranges, so they are skipped.
 */
static int init_parse_iomem(const char *text, unsigned long long *kib)
{
	unsigned long long start, end, bytes = 0;
	const char *line = text;
	char *p;

	while (*line) {
		const char *next = strchr(line, '\n');

		next = next ? next + 1 : line + strlen(line);
		if (*line != ' ') {
			start = strtoull(line, &p, 16);
			if (*p != '-')
				return -EINVAL;
			end = strtoull(p + 1, &p, 16);
			if (end < start)
				return -EINVAL;
			if (strncmp(p, " : System RAM\n", 14) == 0 ||
			    strcmp(p, " : System RAM") == 0)
				bytes += end - start + 1;
		}
		line = next;
	}
	*kib = bytes / 1024;
	return 0;
}

static int init_ram_kib(unsigned long long *kib)
{
	char buf[16384];
	int err;

	err = init_read_file("/proc/iomem", buf, sizeof(buf));
	if (err)
		return err;
	return init_parse_iomem(buf, kib);
}

/* /proc/uptime is "SECONDS.HUNDREDTHS IDLE"; avoids pulling in float I/O. */
static int init_uptime_ms(unsigned long long *ms)
{
	unsigned long long secs, frac = 0;
	char buf[128];
	char *p;
	int err, digits = 0;

	err = init_read_file("/proc/uptime", buf, sizeof(buf));
	if (err)
		return err;
	secs = strtoull(buf, &p, 10);
	if (p == buf)
		return -EINVAL;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
			frac = frac * 10 + (*p - '0');
		for (; digits < 3; digits++)
			frac *= 10;
	}
	*ms = secs * 1000 + frac;
	return 0;
}

/* A cut-off path would run the wrong thing, so an overlong value is refused. */
static void init_copy_value(char *dst, size_t len, const char *value)
{
	size_t n = strlen(value);

	if (n >= len) {
		init_say("ignoring option value longer than %zu bytes: %.40s...",
			 len - 1, value);
		return;
	}
	memcpy(dst, value, n + 1);
}

static long init_parse_long(const char *value)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(value, &end, 10);
	if (end == value || *end || errno || n < 0)
		return -1;
	return n;
}

/* Returns the value of "key=value" in word, or NULL if word is another key. */
static const char *init_option_value(const char *word, const char *key)
{
	size_t len = strlen(key);

	if (memcmp(word, key, len) != 0 || word[len] != '=')
		return NULL;
	return word + len + 1;
}

static void init_apply_option(struct init_opts *o, const char *word)
{
	const char *v;

	if ((v = init_option_value(word, "sandvm.expect_cpus")))
		o->expect_cpus = init_parse_long(v);
	else if ((v = init_option_value(word, "sandvm.expect_mem_mib")))
		o->expect_mem_mib = init_parse_long(v);
	else if ((v = init_option_value(word, "sandvm.test")))
		init_copy_value(o->test, sizeof(o->test), v);
	else if ((v = init_option_value(word, "sandvm.run")))
		init_copy_value(o->run, sizeof(o->run), v);
}

/*
 * Splits the command line into words the way the kernel does: blanks
 * separate, double quotes group and are dropped. Words that do not fit
 * are cut; none of ours come close.
 */
static void init_parse_cmdline(const char *s, struct init_opts *o)
{
	char word[512];
	size_t n;
	int quoted;

	o->expect_cpus = -1;
	o->expect_mem_mib = -1;
	o->test[0] = '\0';
	o->run[0] = '\0';
	while (*s) {
		while (*s == ' ' || *s == '\t' || *s == '\n')
			s++;
		if (!*s)
			break;
		n = 0;
		quoted = 0;
		for (; *s && (quoted || (*s != ' ' && *s != '\t' && *s != '\n')); s++) {
			if (*s == '"')
				quoted = !quoted;
			else if (n < sizeof(word) - 1)
				word[n++] = *s;
		}
		word[n] = '\0';
		init_apply_option(o, word);
	}
}

/* Appends to a bounded buffer; output past the end is dropped, not overrun. */
static void init_append(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

static void init_check(const struct init_opts *o, int cpus, unsigned long long kib)
{
	char what[256] = "";
	unsigned long long hi, lo;

	if (o->expect_cpus < 0 && o->expect_mem_mib < 0)
		return;
	if (o->expect_cpus >= 0 && cpus != o->expect_cpus)
		init_append(what, sizeof(what), "cpus=%d expected %ld",
			    cpus, o->expect_cpus);
	if (o->expect_mem_mib >= 0) {
		hi = (unsigned long long)o->expect_mem_mib * 1024;
		lo = hi > INIT_MEM_SLACK_KIB ? hi - INIT_MEM_SLACK_KIB : 0;
		if (kib < lo || kib > hi)
			init_append(what, sizeof(what), "%smem_kib=%llu expected %llu..%llu",
				    what[0] ? ", " : "", kib, lo, hi);
	}
	if (!what[0]) {
		init_say("check ok");
		return;
	}
	init_say("check FAILED: %s", what);
}

/*
 * The shell needs a real tty as its controlling terminal for job control
 * and ^C; /dev/console never becomes one, so use the device behind it.
 */
static void init_take_tty(void)
{
	char active[128], path[160];
	char *name;
	int fd = -1;

	setsid();
	if (init_read_file("/sys/class/tty/console/active", active, sizeof(active)) == 0) {
		active[strcspn(active, "\n")] = '\0';
		name = strrchr(active, ' ');
		name = name ? name + 1 : active;
		if (*name) {
			snprintf(path, sizeof(path), "/dev/%s", name);
			fd = open(path, O_RDWR);
		}
	}
	if (fd < 0)
		fd = open("/dev/console", O_RDWR);
	if (fd < 0)
		return;
	ioctl(fd, TIOCSCTTY, 1);
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

/* Returns the child's pid, or -errno if it could not be forked. */
static pid_t init_spawn(const char *path, int interactive)
{
	char *const argv[] = { (char *)path, NULL };
	sigset_t none;
	pid_t pid;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0)
		return pid;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (interactive)
		init_take_tty();
	execv(path, argv);
	init_say("exec %s: %s", path, strerror(errno));
	_exit(127);
}

/*
 * Waits for pid while reaping every other process that ends meanwhile:
 * as PID 1 we inherit all orphans, and nobody else will collect them.
 * Returns the exit status in shell convention (128+N for signal N).
 */
static int init_wait(pid_t pid)
{
	pid_t r;
	int st;

	for (;;) {
		r = waitpid(-1, &st, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r != pid)
			continue;
		if (WIFEXITED(st))
			return WEXITSTATUS(st);
		return 128 + WTERMSIG(st);
	}
}

static void init_reap_all(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static int init_run(const char *path, int interactive)
{
	pid_t pid;

	pid = init_spawn(path, interactive);
	if (pid < 0)
		return pid;
	return init_wait(pid);
}

/* Returns only if the panic could not be triggered. */
static void init_panic(void)
{
	int err;

	init_say("triggering kernel panic");
	sync();
	err = init_write_file("/proc/sysrq-trigger", "c");
	init_say("sysrq-trigger: %s; exiting instead", strerror(-err));
}

/*
 * sandvm.test=initcalls (with initcall_debug on the command line): the
 * initcalls that took at least 200 us, from the kernel's log buffer, one line
 * each. Reading /dev/kmsg instead of printing them all to the console keeps
 * the boot as quick as a quiet one (bench/boot-initcalls).
 */
static void init_print_slow_initcalls(void)
{
	char rec[1024];
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	unsigned printed = 0;

	if (fd < 0) {
		init_say("initcalls: /dev/kmsg: %s", strerror(errno));
		return;
	}
	for (;;) {
		ssize_t n = read(fd, rec, sizeof(rec) - 1);
		const char *msg, *after;
		unsigned long long us;

		if (n < 0 && errno == EPIPE)
			continue; /* records overwritten before we read them */
		if (n <= 0)
			break;
		rec[n] = '\0';
		msg = strchr(rec, ';');
		if (!msg || strncmp(msg + 1, "initcall ", 9) || !(after = strstr(msg, " after ")))
			continue;
		us = strtoull(after + 7, NULL, 10);
		if (us >= 200) {
			rec[strcspn(rec, "\n")] = '\0';
			init_say("%s", msg + 1);
			printed++;
		}
	}
	close(fd);
	init_say("initcalls: %u slow ones", printed);
}

/* Returns nonzero when init should exit (which panics the kernel). */
static int init_do_test(const char *test)
{
	int status;

	if (!*test)
		return 0;
	if (strcmp(test, "panic") == 0) {
		init_panic();
		return 1;
	}
	if (strcmp(test, "initcalls") == 0) {
		init_print_slow_initcalls();
		return 0;
	}
	if (strcmp(test, "shell") == 0) {
		status = init_run("/bin/sh", 1);
		init_say("shell status=%d", status);
		return 0;
	}
	init_say("unknown sandvm.test=%s", test);
	return 0;
}

static void init_report(const struct init_opts *o)
{
	unsigned long long kib = 0, ms = 0;
	int cpus, err;

	cpus = init_count_cpus();
	err = init_ram_kib(&kib);
	if (err)
		init_say("/proc/iomem: %s", strerror(-err));
	err = init_uptime_ms(&ms);
	if (err)
		init_say("/proc/uptime: %s", strerror(-err));
	init_say("up cpus=%d mem_kib=%llu uptime_ms=%llu", cpus, kib, ms);
	init_check(o, cpus, kib);
}

int main(void)
{
	struct init_opts opts;
	char cmdline[4096] = "";
	int err;

	setenv("PATH", INIT_PATH, 1);
	umask(022);
	init_mount_all();
	init_console();
	init_signal_boot();

	err = init_read_file("/proc/cmdline", cmdline, sizeof(cmdline));
	if (err)
		init_say("/proc/cmdline: %s", strerror(-err));
	init_parse_cmdline(cmdline, &opts);
	init_report(&opts);

	if (init_do_test(opts.test))
		return 1;
	if (opts.run[0]) {
		err = init_run(opts.run, 0);
		if (err < 0)
			init_say("run %s: %s", opts.run, strerror(-err));
		else
			init_say("run status=%d", err);
	}

	init_reap_all();
	init_say("rebooting");
	sync();
	reboot(RB_AUTOBOOT);
	/* Still here: exiting PID 1 panics, and panic=-1 turns that into a reboot. */
	init_say("reboot: %s", strerror(errno));
	return 1;
}
