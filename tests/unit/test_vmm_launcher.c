/*
 * The VMM launcher (api/sandboxd/vmm_launcher.c) with ordinary processes in
 * place of a VMM: a spawned one's exit status and its clean environment, a
 * stop that has to kill, adoption by pid and start time (a reused pid is
 * refused), a released process that reports nothing, and what the child
 * starts with (its descriptors, its own session, default signals). Spare
 * VMMs (vmm_spares.c) with the real VMM program (build/bin/vmm, no KVM
 * needed for what it is asked here): a launch taken by a waiting spare, which
 * parses the command line it is sent; a program that dies at once stops the
 * pool after three tries.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox_vm.h"
#include "unit.h"
#include "vmm_launcher.h"
#include "vmm_spares.h"

struct outcome {
	int calls;
	char how[64];
};

static void exited(void *ctx, const char *how)
{
	struct outcome *o = ctx;

	o->calls++;
	snprintf(o->how, sizeof(o->how), "%s", how);
}

static void run_until(uv_loop_t *loop, const struct outcome *o, int ms)
{
	for (int i = 0; i < ms / 10 && !o->calls; i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(10000);
	}
}

static void drain(uv_loop_t *loop)
{
	for (int i = 0; i < 100 && uv_loop_alive(loop); i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(10000);
	}
	assert_int_equal(uv_loop_close(loop), 0);
}

static void sh_cmd(struct sandbox_vm_cmd *cmd, const char *script)
{
	memset(cmd, 0, sizeof(*cmd));
	cmd->argv[0] = "/bin/sh";
	cmd->argv[1] = "-c";
	cmd->argv[2] = script;
}

static void spawn_reports_exit_with_clean_env(void **state)
{
	const struct vmm_launcher_ops *l = &vmm_launcher_process;
	char log[] = "/tmp/sandvm-launcher-XXXXXX", text[4096] = "";
	struct sandbox_vm_cmd cmd;
	struct outcome o = {0};
	struct vmm_process *p = NULL;
	unsigned long long start = 0;
	uv_loop_t loop;
	FILE *f;
	int fd = mkstemp(log);

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	uv_loop_init(&loop);
	setenv("SANDVM_API_KEY", "must-not-leak", 1);
	sh_cmd(&cmd, "env; exit 3");
	assert_int_equal(l->spawn(&loop, NULL, &cmd, log, exited, &o, &p), 0);
	assert_true(l->pid(p, &start) > 0);
	assert_true(start > 0);
	run_until(&loop, &o, 5000);
	assert_int_equal(o.calls, 1);
	assert_string_equal(o.how, "exit status 3");
	f = fopen(log, "r");
	assert_non_null(f);
	text[fread(text, 1, sizeof(text) - 1, f)] = '\0';
	fclose(f);
	assert_null(strstr(text, "must-not-leak"));
	assert_non_null(strstr(text, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"));
	unsetenv("SANDVM_API_KEY");
	unlink(log);
	drain(&loop);
	assert_int_equal(o.calls, 1);
}

static void spawn_failure_reports_nothing(void **state)
{
	struct sandbox_vm_cmd cmd = {.argv = {"/nonexistent/vmm"}};
	struct outcome o = {0};
	struct vmm_process *p = NULL;
	uv_loop_t loop;

	(void)state;
	uv_loop_init(&loop);
	assert_true(vmm_launcher_process.spawn(&loop, NULL, &cmd, "/dev/null", exited, &o, &p) < 0);
	assert_int_equal(vmm_launcher_process.spawn(&loop, NULL, &cmd, "/nonexistent/dir/log", exited, &o, &p), -ENOENT);
	drain(&loop);
	assert_int_equal(o.calls, 0);
}

static void stop_terminates_then_kills(void **state)
{
	const struct vmm_launcher_ops *l = &vmm_launcher_process;
	struct sandbox_vm_cmd polite, stubborn;
	struct outcome a = {0}, b = {0};
	struct vmm_process *pa, *pb;
	uv_loop_t loop;

	(void)state;
	uv_loop_init(&loop);
	sh_cmd(&polite, "exec sleep 30");
	sh_cmd(&stubborn, "trap '' TERM; sleep 30 & wait; wait");
	assert_int_equal(l->spawn(&loop, NULL, &polite, "/dev/null", exited, &a, &pa), 0);
	assert_int_equal(l->spawn(&loop, NULL, &stubborn, "/dev/null", exited, &b, &pb), 0);
	usleep(200000); /* the trap is set */
	uv_update_time(&loop); /* the grace period counts from now, not from the loop's last turn */
	l->stop(pa, 200);
	l->stop(pb, 200);
	l->stop(pb, 200); /* twice is once */
	run_until(&loop, &a, 5000);
	run_until(&loop, &b, 5000);
	assert_string_equal(a.how, "killed by signal 15");
	assert_string_equal(b.how, "killed by signal 9");
	drain(&loop);
	assert_int_equal(a.calls + b.calls, 2);
}

static void adopt_checks_start_time(void **state)
{
	const struct vmm_launcher_ops *l = &vmm_launcher_process;
	struct outcome o = {0};
	struct vmm_process *p = NULL;
	unsigned long long start, got;
	uv_loop_t loop;
	pid_t pid = fork();

	(void)state;
	if (pid == 0) {
		execl("/bin/sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	assert_true(pid > 0);
	uv_loop_init(&loop);
	usleep(50000);
	start = vmm_launcher_start_time(pid);
	assert_true(start > 0);
	/* Another process that got the pid has another start time: not ours. */
	assert_int_equal(l->adopt(&loop, pid, start + 1, exited, &o, &p), -ESRCH);
	assert_int_equal(l->adopt(&loop, pid, 0, exited, &o, &p), -ESRCH);
	assert_int_equal(l->adopt(&loop, -1, start, exited, &o, &p), -ESRCH);
	assert_int_equal(l->adopt(&loop, pid, start, exited, &o, &p), 0);
	assert_int_equal(l->pid(p, &got), pid);
	assert_true(got == start);
	l->stop(p, 2000);
	run_until(&loop, &o, 5000);
	assert_int_equal(o.calls, 1);
	assert_string_equal(o.how, "adopted VMM exited");
	waitpid(pid, NULL, 0);
	drain(&loop);
	assert_int_equal(o.calls, 1);
}

static void released_process_runs_on_silently(void **state)
{
	const struct vmm_launcher_ops *l = &vmm_launcher_process;
	struct sandbox_vm_cmd cmd;
	struct outcome o = {0};
	struct vmm_process *p;
	unsigned long long start;
	uv_loop_t loop;
	int pid;

	(void)state;
	uv_loop_init(&loop);
	sh_cmd(&cmd, "exec sleep 30");
	assert_int_equal(l->spawn(&loop, NULL, &cmd, "/dev/null", exited, &o, &p), 0);
	pid = l->pid(p, &start);
	l->release(p);
	uv_run(&loop, UV_RUN_NOWAIT);
	/* Released: still running. */
	assert_int_equal(kill(pid, 0), 0);
	kill(pid, SIGKILL);
	drain(&loop);
	assert_int_equal(o.calls, 0);
}

static char *read_text(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	buf[fread(buf, 1, cap - 1, f)] = '\0';
	fclose(f);
	return buf;
}

/* The daemon's descriptors go in as 3, 4 in the order given (here the reverse of their numbers); SIGUSR1 ignored and SIGUSR2 blocked here are not there. */
static void child_starts_clean(void **state)
{
	const struct vmm_launcher_ops *l = &vmm_launcher_process;
	char log[] = "/tmp/sandvm-launcher-XXXXXX", a[] = "/tmp/sandvm-launcher-a-XXXXXX";
	char b[] = "/tmp/sandvm-launcher-b-XXXXXX", text[4096], want[128];
	struct sandbox_vm_cmd cmd;
	struct outcome o = {0};
	struct vmm_process *p = NULL;
	sigset_t block, old;
	uv_loop_t loop;
	int fd = mkstemp(log), fa = mkstemp(a), fb = mkstemp(b);

	(void)state;
	assert_true(fd >= 0 && fa >= 0 && fb >= 0);
	close(fd);
	assert_int_equal(fcntl(fa, F_SETFD, FD_CLOEXEC), 0);
	assert_int_equal(fcntl(fb, F_SETFD, FD_CLOEXEC), 0);
	uv_loop_init(&loop);
	signal(SIGUSR1, SIG_IGN);
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, &old);
	/*
	 * The masks are read by the spawned process itself, exec'ed into grep (exec keeps the blocked
	 * and ignored sets): a grep run as the shell's child would read the shell while it waits for
	 * that child, when dash blocks signals for the while.
	 */
	sh_cmd(&cmd, "echo in=$(readlink /proc/$$/fd/0); echo three=$(readlink /proc/$$/fd/3); "
		     "echo four=$(readlink /proc/$$/fd/4); echo five=$(readlink /proc/$$/fd/5); "
		     "echo session=$(cut -d' ' -f6 /proc/$$/stat) pid=$$; exec grep -E '^Sig(Blk|Ign)' /proc/self/status");
	cmd.fds[0] = fb;
	cmd.fds[1] = fa;
	cmd.nfds = 2;
	assert_int_equal(l->spawn(&loop, NULL, &cmd, log, exited, &o, &p), 0);
	sigprocmask(SIG_SETMASK, &old, NULL);
	signal(SIGUSR1, SIG_DFL);
	run_until(&loop, &o, 5000);
	assert_string_equal(o.how, "exit status 0");
	read_text(log, text, sizeof(text));
	assert_non_null(strstr(text, "in=/dev/null\n"));
	snprintf(want, sizeof(want), "three=%s\nfour=%s\n", b, a);
	assert_non_null(strstr(text, want));
	{
		const char *s = strstr(text, "session=");
		int sid = 0, pid = -1;

		assert_non_null(s);
		assert_int_equal(sscanf(s, "session=%d pid=%d", &sid, &pid), 2);
		assert_int_equal(sid, pid);
	}
	assert_non_null(strstr(text, "SigBlk:\t0000000000000000\n"));
	{
		const char *s = strstr(text, "SigIgn:\t");
		unsigned long long ign;

		assert_non_null(s);
		ign = strtoull(s + 8, NULL, 16);
		assert_int_equal(ign & (1ull << (SIGUSR1 - 1)), 0);
	}
	/* The daemon's own descriptors stay as they were. */
	assert_true(fcntl(fa, F_GETFD) & FD_CLOEXEC);
	close(fa);
	close(fb);
	unlink(a);
	unlink(b);
	unlink(log);
	drain(&loop);
	assert_int_equal(o.calls, 1);
}

/* Released, it ends unwatched by anyone but the loop, which still reaps it: no zombie stays. */
static void released_process_is_reaped(void **state)
{
	const struct vmm_launcher_ops *l = &vmm_launcher_process;
	struct sandbox_vm_cmd cmd;
	struct outcome o = {0};
	struct vmm_process *p;
	unsigned long long start;
	uv_loop_t loop;
	int pid;

	(void)state;
	uv_loop_init(&loop);
	sh_cmd(&cmd, "exec sleep 30");
	assert_int_equal(l->spawn(&loop, NULL, &cmd, "/dev/null", exited, &o, &p), 0);
	pid = l->pid(p, &start);
	l->release(p);
	kill(pid, SIGKILL);
	drain(&loop);
	assert_int_equal(o.calls, 0);
	assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
}

/* BUILD/bin/vmm, beside BUILD/tests (or tests-asan, tests-tsan) where this binary is. */
static void vmm_path(char *out, size_t cap)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	assert_true(n > 0);
	self[n] = '\0';
	*strrchr(self, '/') = '\0';
	snprintf(out, cap, "%s/../bin/vmm", self);
}

static void run_for(uv_loop_t *loop, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(10000);
	}
}

static unsigned wait_ready(uv_loop_t *loop, struct vmm_spares *s, unsigned n)
{
	for (int i = 0; i < 500 && vmm_spares_ready(s) < n; i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(10000);
	}
	return vmm_spares_ready(s);
}

/* The log's text, NUL-ended. */
static void read_log(const char *path, char *text, size_t cap)
{
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	text[fread(text, 1, cap - 1, f)] = '\0';
	fclose(f);
}

static void spare_runs_the_launch(void **state)
{
	const struct vmm_launcher_ops *l = &vmm_launcher_process;
	char vmm[4200], log[] = "/tmp/sandvm-launcher-XXXXXX", text[4096];
	struct sandbox_vm_cmd version, bad;
	struct outcome a = {0}, b = {0};
	struct vmm_process *pa, *pb;
	struct vmm_spares *spares;
	unsigned long long start;
	uv_loop_t loop;
	int fd = mkstemp(log);

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	vmm_path(vmm, sizeof(vmm));
	uv_loop_init(&loop);
	assert_int_equal(vmm_spares_new(&loop, vmm, 2, &spares), 0);
	assert_int_equal(wait_ready(&loop, spares, 2), 2);
	memset(&version, 0, sizeof(version));
	version.argv[0] = vmm;
	version.argv[1] = "--version";
	assert_int_equal(l->spawn(&loop, spares, &version, log, exited, &a, &pa), 0);
	assert_true(l->from_spare(pa));
	assert_true(l->pid(pa, &start) > 0 && start > 0);
	assert_int_equal(vmm_spares_ready(spares), 1);
	run_until(&loop, &a, 5000);
	assert_string_equal(a.how, "exit status 0");
	read_log(log, text, sizeof(text));
	assert_int_equal(strncmp(text, "vmm ", 4), 0);
	/* The second spare parses what it is sent as the VMM's own command line: a bad one is its error. */
	memset(&bad, 0, sizeof(bad));
	bad.argv[0] = vmm;
	bad.argv[1] = "--cpus";
	bad.argv[2] = "999";
	assert_int_equal(l->spawn(&loop, spares, &bad, log, exited, &b, &pb), 0);
	assert_true(l->from_spare(pb));
	run_until(&loop, &b, 5000);
	assert_string_equal(b.how, "exit status 2");
	read_log(log, text, sizeof(text));
	assert_non_null(strstr(text, "cpus"));
	/* Another program than the pool's: a new process. */
	version.argv[0] = "/bin/true";
	a.calls = 0;
	assert_int_equal(l->spawn(&loop, spares, &version, "/dev/null", exited, &a, &pa), 0);
	assert_false(l->from_spare(pa));
	run_until(&loop, &a, 5000);
	/* The pool fills again, then ends: its spares exit when their sockets close. */
	assert_int_equal(wait_ready(&loop, spares, 2), 2);
	vmm_spares_free(spares);
	unlink(log);
	drain(&loop);
}

static void dying_spares_stop_the_pool(void **state)
{
	struct vmm_spares *spares;
	struct vmm_spare sp;
	uv_loop_t loop;

	(void)state;
	uv_loop_init(&loop);
	/* /bin/true ignores --args-from and exits at once: each spare dies unused. */
	assert_int_equal(vmm_spares_new(&loop, "/bin/true", 1, &spares), 0);
	run_for(&loop, 3500); /* three tries, a second apart */
	assert_int_equal(vmm_spares_ready(spares), 0);
	assert_int_equal(vmm_spares_take(spares, "/bin/true", &sp), -ENOENT);
	run_for(&loop, 1500);
	assert_int_equal(vmm_spares_ready(spares), 0); /* stopped: no fourth */
	vmm_spares_free(spares);
	drain(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(spawn_reports_exit_with_clean_env),
		cmocka_unit_test(spawn_failure_reports_nothing),
		cmocka_unit_test(stop_terminates_then_kills),
		cmocka_unit_test(adopt_checks_start_time),
		cmocka_unit_test(released_process_runs_on_silently),
		cmocka_unit_test(child_starts_clean),
		cmocka_unit_test(released_process_is_reaped),
		cmocka_unit_test(spare_runs_the_launch),
		cmocka_unit_test(dying_spares_stop_the_pool),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
