#include "sandbox_vm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"

#define VM_CONNECT_SLICE_MS 250

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int make_dir(const struct sandbox_vm_config *cfg, struct sandbox_vm *vm)
{
	const char *tmp = getenv("TMPDIR");

	if (cfg->run_dir) {
		if (mkdir(cfg->run_dir, 0700) < 0 && errno != EEXIST)
			return -errno;
		snprintf(vm->dir, sizeof(vm->dir), "%s", cfg->run_dir);
		return 0;
	}
	snprintf(vm->dir, sizeof(vm->dir), "%s/sandvm.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(vm->dir))
		return -errno;
	vm->own_dir = true;
	return 0;
}

int sandbox_vm_prepare(const struct sandbox_vm_config *cfg, struct sandbox_vm *vm, struct sandbox_vm_cmd *cmd)
{
	const char **argv = cmd->argv;
	int argc = 0, err;

	memset(vm, 0, sizeof(*vm));
	vm->pid = -1;
	vm->status = -1;
	err = make_dir(cfg, vm);
	if (err) {
		fprintf(stderr, "sandvm: cannot create a run directory: %s\n", strerror(-err));
		return err;
	}
	/* A unix socket path is at most 107 bytes; say so rather than fail obscurely later. */
	if (strlen(vm->dir) + sizeof("/control") > 108) {
		fprintf(stderr, "sandvm: run directory %s is too long for unix socket paths\n", vm->dir);
		sandbox_vm_destroy(vm);
		return -ENAMETOOLONG;
	}
	snprintf(vm->vsock, sizeof(vm->vsock), "%s/vsock", vm->dir);
	snprintf(vm->control, sizeof(vm->control), "%s/control", vm->dir);
	snprintf(vm->console, sizeof(vm->console), "%s/console.log", vm->dir);
	snprintf(vm->log, sizeof(vm->log), "%s/vmm.log", vm->dir);
	snprintf(cmd->cpus, sizeof(cmd->cpus), "%u", cfg->cpus ? cfg->cpus : 1);
	snprintf(cmd->mem, sizeof(cmd->mem), "%u", cfg->memory_mib ? cfg->memory_mib : 512);
	snprintf(cmd->cmdline, sizeof(cmd->cmdline), "quiet%s%s%s",
		 cfg->rootfs ? " root=/dev/vda ro rootfstype=ext4 sandvm.overlay=1" : "",
		 cfg->cmdline ? " " : "", cfg->cmdline ? cfg->cmdline : "");

	argv[argc++] = cfg->vmm;
	argv[argc++] = "--kernel";
	argv[argc++] = cfg->kernel;
	if (cfg->rootfs) {
		snprintf(cmd->drive, sizeof(cmd->drive), "%s,ro,serial=rootfs", cfg->rootfs);
		argv[argc++] = "--drive";
		argv[argc++] = cmd->drive;
	} else if (cfg->initrd) {
		argv[argc++] = "--initrd";
		argv[argc++] = cfg->initrd;
	}
	argv[argc++] = "--cpus";
	argv[argc++] = cmd->cpus;
	argv[argc++] = "--memory";
	argv[argc++] = cmd->mem;
	argv[argc++] = "--cmdline";
	argv[argc++] = cmd->cmdline;
	argv[argc++] = "--console";
	argv[argc++] = vm->console;
	argv[argc++] = "--vsock";
	argv[argc++] = vm->vsock;
	argv[argc++] = "--control";
	argv[argc++] = vm->control;
	for (unsigned i = 0; cfg->spare_drives && cfg->spare_drives[i] && i < SANDBOX_VM_MAX_SPARES; i++) {
		argv[argc++] = "--spare-drive";
		argv[argc++] = cfg->spare_drives[i];
	}
	if (cfg->net && cfg->net_policy) {
		argv[argc++] = "--net";
		argv[argc++] = cfg->net;
		argv[argc++] = "--net-policy";
		argv[argc++] = cfg->net_policy;
	}
	if (cfg->jail) {
		snprintf(cmd->jail_uid, sizeof(cmd->jail_uid), "%u", cfg->jail->uid);
		snprintf(cmd->jail_gid, sizeof(cmd->jail_gid), "%u", cfg->jail->gid);
		argv[argc++] = "--jail-root";
		argv[argc++] = cfg->jail->root;
		argv[argc++] = "--jail-uid";
		argv[argc++] = cmd->jail_uid;
		argv[argc++] = "--jail-gid";
		argv[argc++] = cmd->jail_gid;
		if (cfg->jail->cgroup) {
			argv[argc++] = "--jail-cgroup";
			argv[argc++] = cfg->jail->cgroup;
		}
		if (cfg->jail->fsize) {
			snprintf(cmd->jail_fsize, sizeof(cmd->jail_fsize), "%llu", cfg->jail->fsize);
			argv[argc++] = "--jail-fsize";
			argv[argc++] = cmd->jail_fsize;
		}
	}
	argv[argc] = NULL;
	return 0;
}

int sandbox_vm_start(const struct sandbox_vm_config *cfg, struct sandbox_vm *vm)
{
	struct sandbox_vm_cmd cmd;
	const char **argv = cmd.argv;
	int err, logfd;
	pid_t pid;

	err = sandbox_vm_prepare(cfg, vm, &cmd);
	if (err)
		return err;
	logfd = open(vm->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (logfd < 0) {
		err = -errno;
		fprintf(stderr, "sandvm: %s: %s\n", vm->log, strerror(errno));
		sandbox_vm_destroy(vm);
		return err;
	}
	pid = fork();
	if (pid < 0) {
		err = -errno;
		close(logfd);
		sandbox_vm_destroy(vm);
		return err;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, STDIN_FILENO);
		dup2(logfd, STDOUT_FILENO);
		dup2(logfd, STDERR_FILENO);
		/* Ctrl-C at the terminal is for the CLI to forward, not to kill the VM. */
		setpgid(0, 0);
		execv(cfg->vmm, (char *const *)argv);
		fprintf(stderr, "sandvm: cannot run %s: %s\n", cfg->vmm, strerror(errno));
		_exit(127);
	}
	close(logfd);
	vm->pid = pid;
	return 0;
}

static bool reap(struct sandbox_vm *vm, int flags)
{
	int st;

	if (vm->pid < 0)
		return true;
	if (waitpid(vm->pid, &st, flags) != vm->pid)
		return false;
	vm->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	vm->pid = -1;
	return true;
}

int sandbox_vm_connect(struct sandbox_vm *vm, struct agent_client *c, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;

	for (;;) {
		long long left = deadline - now_ms();
		int r;

		if (reap(vm, WNOHANG)) {
			snprintf(c->error, sizeof(c->error), "the VMM exited with status %d before the agent answered",
				 vm->status);
			return -ECHILD;
		}
		if (left <= 0) {
			snprintf(c->error, sizeof(c->error), "the agent did not come up within %d ms",
				 timeout_ms);
			return -ETIMEDOUT;
		}
		r = agent_client_connect(c, vm->vsock, AGENT_CLIENT_PORT,
					 left < VM_CONNECT_SLICE_MS ? (int)left : VM_CONNECT_SLICE_MS);
		if (r != -ETIMEDOUT)
			return r;
	}
}

int sandbox_vm_wait(struct sandbox_vm *vm, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;

	while (!reap(vm, WNOHANG)) {
		if (now_ms() >= deadline) {
			kill(vm->pid, SIGKILL);
			reap(vm, 0);
			break;
		}
		poll(NULL, 0, 10);
	}
	return vm->status;
}

static void remove_run_dir(struct sandbox_vm *vm)
{
	static const char *const names[] = { "vsock", "control", "console.log", "console.log.1", "vmm.log" };
	char path[512];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", vm->dir, names[i]);
		unlink(path);
	}
	rmdir(vm->dir);
}

void sandbox_vm_destroy(struct sandbox_vm *vm)
{
	if (vm->pid > 0) {
		kill(vm->pid, SIGKILL);
		reap(vm, 0);
	}
	if (vm->own_dir)
		remove_run_dir(vm);
	vm->own_dir = false;
}

/* Appends the end of path to buf[0..len), keeping the newest cap bytes of both. */
static size_t append_tail(const char *path, char *buf, size_t cap, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t size;
	size_t want;
	ssize_t n;

	if (fd < 0)
		return len;
	size = lseek(fd, 0, SEEK_END);
	want = size > 0 ? ((size_t)size < cap ? (size_t)size : cap) : 0;
	if (len + want > cap) {
		memmove(buf, buf + (len + want - cap), cap - want);
		len = cap - want;
	}
	n = want ? pread(fd, buf + len, want, size - (off_t)want) : 0;
	close(fd);
	return len + (n > 0 ? (size_t)n : 0);
}

size_t sandbox_vm_console_tail(const struct sandbox_vm *vm, char *out, size_t cap)
{
	char older[sizeof(vm->console) + 2];
	size_t n;

	if (cap == 0)
		return 0;
	/* The VMM rotates console.log into console.log.1 (docs/vmm.md): the older part first. */
	snprintf(older, sizeof(older), "%s.1", vm->console);
	n = append_tail(older, out, cap - 1, 0);
	n = append_tail(vm->console, out, cap - 1, n);
	out[n] = '\0';
	return n;
}

static void tail(const char *title, const char *path, const char *text, size_t n, int lines)
{
	const char *p;
	int seen = 0;

	if (n == 0)
		return;
	for (p = text + n - 1; p > text; p--)
		if (*p == '\n' && ++seen > lines) {
			p++;
			break;
		}
	fprintf(stderr, "---- %s (%s) ----\n%s%s", title, path, p, text[n - 1] == '\n' ? "" : "\n");
}

void sandbox_vm_report(const struct sandbox_vm *vm, int lines)
{
	char buf[16384];
	size_t n;

	n = sandbox_vm_console_tail(vm, buf, sizeof(buf));
	tail("guest console", vm->console, buf, n, lines);
	n = append_tail(vm->log, buf, sizeof(buf) - 1, 0);
	buf[n] = '\0';
	tail("vmm log", vm->log, buf, n, lines);
}
