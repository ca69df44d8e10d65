/*
 * The VMM's per-thread seccomp filters (vmm/seccomp.c), each loaded for real
 * in a forked child: what a thread kind needs goes through, a forbidden
 * syscall ends the child by SIGSYS with one line naming it on stderr, and
 * "log" mode lets it through.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"
#include "backends/image_disk.h"
#include "backends/raw_file.h"
#include "devices/console.h"
#include "net/egress.h"
#include "seccomp.h"
#include "simage/file.h"

/* What a child did before it ended: a failed step's exit code, or the signal. */
struct outcome {
	int status;
	char err[1024];
};

/* Codes a child exits with when an allowed step did not go through. */
enum { STEP_OK = 0, STEP_LOAD = 90, STEP_ALLOWED = 91, STEP_FORBIDDEN_RETURNED = 92 };

typedef int (*child_fn)(void *arg);

/* Runs fn in a child with kind's filter in mode; fn returns a STEP_ code, or dies. */
static void run_child(enum vmm_seccomp_kind kind, enum vmm_seccomp_mode mode, child_fn fn, void *arg,
		      struct outcome *out)
{
	int errpipe[2];
	ssize_t n;
	size_t len = 0;
	pid_t pid;

	memset(out, 0, sizeof(*out));
	assert_int_equal(pipe2(errpipe, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		const struct vmm_seccomp_ctx ctx = { .kick_signal = SIGUSR1 };

		/* A death by SIGSYS dumps core by default: not into the test's directory. */
		setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 });
		dup2(errpipe[1], STDERR_FILENO);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_IGN);
		if (vmm_seccomp_install_handler() < 0 || vmm_seccomp_load(kind, mode, &ctx) < 0)
			_exit(STEP_LOAD);
		_exit(fn(arg));
	}
	close(errpipe[1]);
	while (len < sizeof(out->err) - 1 &&
	       (n = read(errpipe[0], out->err + len, sizeof(out->err) - 1 - len)) > 0)
		len += (size_t)n;
	close(errpipe[0]);
	assert_int_equal(waitpid(pid, &out->status, 0), pid);
}

static void assert_killed_naming(const struct outcome *o, const char *line)
{
	if (!WIFSIGNALED(o->status) || WTERMSIG(o->status) != SIGSYS || !strstr(o->err, line))
		fail_msg("expected death by SIGSYS with '%s'; status 0x%x, stderr '%s'", line, o->status, o->err);
}

static void assert_exited_ok(const struct outcome *o)
{
	if (!WIFEXITED(o->status) || WEXITSTATUS(o->status) != STEP_OK)
		fail_msg("expected exit 0; status 0x%x, stderr '%s'", o->status, o->err);
}

static int socket_inet(void *arg)
{
	int fd;

	(void)arg;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return STEP_FORBIDDEN_RETURNED;
	close(fd);
	return STEP_OK;
}

/*
 * A vCPU thread's own calls: an eventfd-like write, KVM_RUN (on a pipe the
 * kernel answers ENOTTY, which shows the filter let it through), KVM_RUN
 * with garbage above bit 31 (the kernel reads 32 bits, and so does the
 * filter), a kick; then the socket no vCPU ever opens.
 */
static int vcpu_allowed_then_socket(void *arg)
{
	const int *p = arg;

	if (write(p[1], "x", 1) != 1)
		return STEP_ALLOWED;
	if (ioctl(p[0], KVM_RUN, 0) != -1 || errno != ENOTTY)
		return STEP_ALLOWED;
	if (syscall(SYS_ioctl, p[0], 0xdead00000000ul | KVM_RUN, 0) != -1 || errno != ENOTTY)
		return STEP_ALLOWED;
	if (syscall(SYS_tgkill, getpid(), gettid(), SIGUSR1) != 0)
		return STEP_ALLOWED;
	return socket_inet(NULL);
}

static void vcpu_filter_allows_its_calls_and_kills_on_socket(void **state)
{
	struct outcome o;
	int p[2];

	(void)state;
	assert_int_equal(pipe(p), 0);
	run_child(VMM_SECCOMP_VCPU, VMM_SECCOMP_KILL, vcpu_allowed_then_socket, p, &o);
	close(p[0]);
	close(p[1]);
	assert_killed_naming(&o, "vmm: error: seccomp: thread vcpu made forbidden syscall socket (41)\n");
}

static int vcpu_create_vm(void *arg)
{
	ioctl(*(const int *)arg, KVM_CREATE_VM, 0);
	return STEP_FORBIDDEN_RETURNED;
}

/* ioctl is allowed by request number only: a VM-creating one is not a vCPU's. */
static void vcpu_filter_kills_on_other_ioctl(void **state)
{
	struct outcome o;
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	run_child(VMM_SECCOMP_VCPU, VMM_SECCOMP_KILL, vcpu_create_vm, &fd, &o);
	close(fd);
	assert_killed_naming(&o, "thread vcpu made forbidden syscall ioctl (16)");
}

/* The console's rotation flags open a file; other flags are refused. */
static int vcpu_openat(void *arg)
{
	int dir = *(const int *)arg, fd;

	fd = openat(dir, "console.log", CONSOLE_ROTATE_FLAGS, 0640);
	if (fd < 0)
		return STEP_ALLOWED;
	close(fd);
	openat(dir, "console.log", O_RDONLY | O_CLOEXEC);
	return STEP_FORBIDDEN_RETURNED;
}

static void vcpu_filter_opens_only_like_a_console_rotation(void **state)
{
	char dir[] = "/tmp/sandvm-seccomp-XXXXXX", path[64];
	struct outcome o;
	int dfd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	run_child(VMM_SECCOMP_VCPU, VMM_SECCOMP_KILL, vcpu_openat, &dfd, &o);
	snprintf(path, sizeof(path), "%s/console.log", dir);
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
	rmdir(dir);
	close(dfd);
	assert_killed_naming(&o, "thread vcpu made forbidden syscall openat (257)");
}

static int vcpu_tgkill_other_signal(void *arg)
{
	(void)arg;
	syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2);
	return STEP_FORBIDDEN_RETURNED;
}

/* tgkill carries only the kick signal (and the SIGSYS and SIGABRT that end the process). */
static void vcpu_filter_kicks_with_its_signal_only(void **state)
{
	struct outcome o;

	(void)state;
	run_child(VMM_SECCOMP_VCPU, VMM_SECCOMP_KILL, vcpu_tgkill_other_signal, NULL, &o);
	assert_killed_naming(&o, "thread vcpu made forbidden syscall tgkill (234)");
}

/* The main thread's unix sockets and files go through; an internet socket does not. */
static int main_allowed_then_socket(void *arg)
{
	int fd, sp[2];
	char c;

	(void)arg;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return STEP_ALLOWED;
	close(fd);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, &c, 1) != 0)
		return STEP_ALLOWED;
	close(fd);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0)
		return STEP_FORBIDDEN_RETURNED; /* socketpair is no loop's business */
	return socket_inet(NULL);
}

static void main_filter_allows_its_calls_and_kills_on_socketpair(void **state)
{
	struct outcome o;

	(void)state;
	run_child(VMM_SECCOMP_MAIN, VMM_SECCOMP_KILL, main_allowed_then_socket, NULL, &o);
	assert_killed_naming(&o, "vmm: error: seccomp: thread main made forbidden syscall socketpair (53)\n");
}

/*
 * drive-attach and drive-swap at run time, on the main thread: a raw file,
 * and an encrypted snapshot image with its O_TMPFILE overlay, read, written
 * and flushed. This process has not used OpenSSL before, as a VMM has not
 * before its first encrypted drive-attach: its initialisation runs under the
 * filter too.
 */
static int main_drives(void *arg)
{
	static const uint8_t key[24] = "seccomp drive test key!";
	struct simage_write_opts opts = { .chunk_shift = 16 };
	const char *dir = arg;
	char raw[128], image[128];
	static uint8_t buf[1 << 17];
	struct iovec iov = { buf, 4096 };
	struct simage_write_stats st;
	struct simage_header h;
	struct simage_keys keys;
	struct blk_backend *b;
	int rfd, ifd;

	snprintf(raw, sizeof(raw), "%s/raw", dir);
	snprintf(image, sizeof(image), "%s/image", dir);
	memset(buf, 0x5a, sizeof(buf));
	rfd = open(raw, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ifd = open(image, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (rfd < 0 || ifd < 0 || pwrite(rfd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
		return STEP_ALLOWED;
	if (simage_write(rfd, sizeof(buf), ifd, key, sizeof(key), &opts, &h, &st) != 0 ||
	    simage_derive_keys(key, sizeof(key), &h, &keys) != 0)
		return STEP_ALLOWED + 1;
	close(rfd);
	close(ifd);
	if (raw_file_create(&b, raw, false) != 0 || b->ops->read(b, 0, &iov, 1) != 0 ||
	    b->ops->write(b, 4096, &iov, 1) != 0 || b->ops->flush(b) != 0)
		return STEP_ALLOWED + 2;
	blk_backend_destroy(b);
	if (image_disk_create(&b, image, &keys, dir, "test") != 0 || b->ops->read(b, 0, &iov, 1) != 0 ||
	    b->ops->write(b, 8192, &iov, 1) != 0 || b->ops->read(b, 8192, &iov, 1) != 0 || b->ops->flush(b) != 0)
		return STEP_ALLOWED + 3;
	blk_backend_destroy(b);
	unlink(raw);
	unlink(image);
	/*
	 * exit(), not a return to _exit(): OpenSSL's atexit clean-up runs under
	 * the filter, as it does when a VMM ends. Not in sanitizer builds, whose
	 * own exit work (LeakSanitizer stops the process's threads) no VMM does.
	 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return STEP_OK;
#else
	exit(STEP_OK);
#endif
}

static __attribute__((unused)) void main_filter_allows_drive_attach_and_images(void **state)
{
	char dir[] = "/tmp/sandvm-seccomp-XXXXXX";
	struct outcome o;

	(void)state;
	assert_non_null(mkdtemp(dir));
	run_child(VMM_SECCOMP_MAIN, VMM_SECCOMP_KILL, main_drives, dir, &o);
	rmdir(dir);
	assert_exited_ok(&o);
}

/*
 * A net-policy op at run time replacing a small policy with 10,000 CIDRs:
 * the first large sort in the process, which glibc's qsort starts by
 * reading the size of RAM (sysinfo).
 */
static int main_large_policy(void *arg)
{
	static const uint8_t mac[6] = { 2, 0x53, 0x56, 0, 0, 2 };
	struct net_egress e = { .mac = mac };
	size_t cap = 256 + 10000 * 24, len;
	char *json = malloc(cap), err[256];

	(void)arg;
	if (!json)
		return STEP_ALLOWED;
	len = (size_t)snprintf(json, cap, "{\"ip\": \"10.0.0.2\", \"gateway\": \"10.0.0.1\", "
				       "\"gateway_mac\": \"02:00:00:00:00:01\", \"mode\": \"allowlist\", \"allow\": [");
	for (unsigned i = 0; i < 10000; i++)
		len += (size_t)snprintf(json + len, cap - len, "%s\"%u.%u.%u.0/24\"", i ? ", " : "",
					 11 + i / 65536 % 100, i / 256 % 256, i % 256);
	snprintf(json + len, cap - len, "]}");
	if (net_egress_load(&e, json, strlen(json), err, sizeof(err)) != 0 || e.nallow != 10000)
		return STEP_ALLOWED + 1;
	net_egress_destroy(&e);
	free(json);
	return STEP_OK;
}

static __attribute__((unused)) void main_filter_takes_a_large_net_policy(void **state)
{
	struct outcome o;

	(void)state;
	run_child(VMM_SECCOMP_MAIN, VMM_SECCOMP_KILL, main_large_policy, NULL, &o);
	assert_exited_ok(&o);
}

static void main_filter_kills_on_inet_socket(void **state)
{
	struct outcome o;

	(void)state;
	run_child(VMM_SECCOMP_MAIN, VMM_SECCOMP_KILL, socket_inet, NULL, &o);
	assert_killed_naming(&o, "thread main made forbidden syscall socket (41)");
}

static int main_execve(void *arg)
{
	char *const argv[] = { "/bin/true", NULL };

	(void)arg;
	execve(argv[0], argv, NULL);
	return STEP_FORBIDDEN_RETURNED;
}

static void main_filter_kills_on_execve(void **state)
{
	struct outcome o;

	(void)state;
	run_child(VMM_SECCOMP_MAIN, VMM_SECCOMP_KILL, main_execve, NULL, &o);
	assert_killed_naming(&o, "thread main made forbidden syscall execve (59)");
}

/* "log": the kernel records it and the syscall goes through, for either kind. */
static void log_mode_lets_it_through(void **state)
{
	struct outcome o;

	(void)state;
	run_child(VMM_SECCOMP_MAIN, VMM_SECCOMP_LOG, socket_inet, NULL, &o);
	assert_exited_ok(&o);
	assert_null(strstr(o.err, "seccomp"));
	run_child(VMM_SECCOMP_VCPU, VMM_SECCOMP_LOG, socket_inet, NULL, &o);
	assert_exited_ok(&o);
}

static int seccomp_status(void *arg)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	int found = STEP_ALLOWED;

	(void)arg;
	if (!f)
		return STEP_ALLOWED;
	while (fgets(line, sizeof(line), f))
		if (!strcmp(line, "Seccomp:\t0\n"))
			found = STEP_OK;
	fclose(f);
	return found;
}

/* "off" loads nothing: the child is not in seccomp mode at all. */
static void off_mode_loads_nothing(void **state)
{
	struct outcome o;

	(void)state;
	run_child(VMM_SECCOMP_VCPU, VMM_SECCOMP_OFF, seccomp_status, NULL, &o);
	assert_exited_ok(&o);
}

static void modes_and_names(void **state)
{
	enum vmm_seccomp_mode m = VMM_SECCOMP_OFF;

	(void)state;
	assert_int_equal(vmm_seccomp_mode_parse("kill", &m), 0);
	assert_int_equal(m, VMM_SECCOMP_KILL);
	assert_int_equal(vmm_seccomp_mode_parse("log", &m), 0);
	assert_int_equal(m, VMM_SECCOMP_LOG);
	assert_int_equal(vmm_seccomp_mode_parse("off", &m), 0);
	assert_int_equal(m, VMM_SECCOMP_OFF);
	assert_int_equal(vmm_seccomp_mode_parse("Kill", &m), -EINVAL);
	assert_int_equal(vmm_seccomp_mode_parse("", &m), -EINVAL);
	assert_string_equal(vmm_seccomp_mode_name(VMM_SECCOMP_LOG), "log");
	assert_string_equal(vmm_seccomp_kind_name(VMM_SECCOMP_VCPU), "vcpu");
	assert_string_equal(vmm_seccomp_kind_name(VMM_SECCOMP_MAIN), "main");
	assert_string_equal(vmm_seccomp_syscall_name(SYS_socket), "socket");
	assert_string_equal(vmm_seccomp_syscall_name(SYS_read), "read");
	assert_string_equal(vmm_seccomp_syscall_name(SYS_openat), "openat");
	assert_null(vmm_seccomp_syscall_name(-1));
	assert_null(vmm_seccomp_syscall_name(100000));
	assert_int_equal(vmm_seccomp_load(VMM_SECCOMP_NKINDS, VMM_SECCOMP_KILL, NULL), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(modes_and_names),
		cmocka_unit_test(vcpu_filter_allows_its_calls_and_kills_on_socket),
		cmocka_unit_test(vcpu_filter_kills_on_other_ioctl),
		cmocka_unit_test(vcpu_filter_opens_only_like_a_console_rotation),
		cmocka_unit_test(vcpu_filter_kicks_with_its_signal_only),
		cmocka_unit_test(main_filter_allows_its_calls_and_kills_on_socketpair),
#if !defined(__SANITIZE_ADDRESS__)
		/* ASan's runtime makes syscalls of its own on these paths (sigaltstack): the plain build checks them. */
		cmocka_unit_test(main_filter_allows_drive_attach_and_images),
#endif
#if !defined(__SANITIZE_ADDRESS__)
		cmocka_unit_test(main_filter_takes_a_large_net_policy),
#endif
		cmocka_unit_test(main_filter_kills_on_inet_socket),
		cmocka_unit_test(main_filter_kills_on_execve),
		cmocka_unit_test(log_mode_lets_it_through),
		cmocka_unit_test(off_mode_loads_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
