#include "sandbox_vm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "parse.h"

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

void sandbox_vm_cmd_close(struct sandbox_vm_cmd *cmd)
{
	for (unsigned i = 0; i < cmd->nfds; i++)
		if (cmd->fds[i] >= 0)
			close(cmd->fds[i]);
	cmd->nfds = 0;
}

/* A listening unix socket bound at path (a stale socket there replaced), for the VMM to accept on. */
static int listen_at(const char *path, int backlog)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		unlink(path);
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || chmod(path, 0600) < 0 || listen(fd, backlog) < 0) {
		r = -errno;
		close(fd);
		unlink(path);
		return r;
	}
	return fd;
}

/*
 * The persistent tap, attached here as the VMM's tap_open would attach it
 * (vmm/backends/tap.c: a tap, no packet information, a virtio-net header in
 * front of each frame, which the VMM sizes and needs for offloads), owned
 * by the jail's ids so that its uid may use it.
 */
static int open_tap(const char *name, const struct sandbox_vm_jail *jail)
{
	struct ifreq ifr;
	int fd, r;

	if (strlen(name) >= IFNAMSIZ)
		return -EINVAL;
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 ||
	    (jail && (ioctl(fd, TUNSETOWNER, (unsigned long)jail->uid) < 0 ||
		      ioctl(fd, TUNSETGROUP, (unsigned long)jail->gid) < 0))) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* RUN_DIR/console: the VMM's own (jail uid, 0700), so the run directory stays root's. */
static int open_console_dir(const struct sandbox_vm *vm, const struct sandbox_vm_jail *jail)
{
	char path[sizeof(vm->dir) + sizeof(SANDBOX_VM_CONSOLE_DIR) + 1];
	int fd, r;

	snprintf(path, sizeof(path), "%s/" SANDBOX_VM_CONSOLE_DIR, vm->dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fchown(fd, jail ? jail->uid : 0, jail ? jail->gid : 0) < 0 || fchmod(fd, 0700) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* Adds fd to the child's descriptors; returns its "fd:N" argument. */
static const char *add_fd(struct sandbox_vm_cmd *cmd, int fd)
{
	unsigned i = cmd->nfds++;

	cmd->fds[i] = fd;
	snprintf(cmd->fd_args[i], sizeof(cmd->fd_args[i]), "fd:%u", 3 + i);
	return cmd->fd_args[i];
}

/*
 * Opens everything the VMM needs and puts each into cmd as the next
 * descriptor; the resources, in the order argv names them. 0 or -errno with
 * what failed in *what.
 */
struct vm_fds {
	const char *kvm, *kernel, *image, *console, *vsock, *control, *tap, *policy, *state, *memory, *memory_key;
};

/*
 * The read end of a pipe holding the 32-byte key and nothing more (the
 * write end closed): the VMM reads it once, and no file or command line
 * ever holds the key.
 */
static int key_pipe(const unsigned char *key)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	/* 32 bytes fit in any pipe buffer: the write does not block. */
	if (write(p[1], key, 32) != 32) {
		int e = errno ? -errno : -EIO;

		close(p[0]);
		close(p[1]);
		return e;
	}
	close(p[1]);
	return p[0];
}

/* DIR/NAME of a snapshot, opened read-only: clones map the memory MAP_PRIVATE and never write it. */
static int open_snapshot_file(const char *dir, const char *name)
{
	char path[4200];

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	return open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

static int open_fds(const struct sandbox_vm_config *cfg, const struct sandbox_vm *vm, struct sandbox_vm_cmd *cmd,
		    struct vm_fds *out, const char **what)
{
	const char *image = cfg->rootfs ? cfg->rootfs : cfg->initrd;
	int fd;

#define ADD(field, name, expr)                 \
	do {                                   \
		*what = (name);                \
		fd = (expr);                   \
		if (fd < 0)                    \
			return fd == -1 ? -errno : fd; \
		out->field = add_fd(cmd, fd);  \
	} while (0)
	/* No KVM device at all: the VMM says so itself, in its log, as on any such host. */
	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd >= 0)
		out->kvm = add_fd(cmd, fd);
	else if (errno != ENOENT)
		return *what = "/dev/kvm", -errno;
	if (cfg->restore) {
		ADD(state, "the snapshot's state file", open_snapshot_file(cfg->restore, SANDBOX_VM_STATE_FILE));
		ADD(memory, "the snapshot's memory file", open_snapshot_file(cfg->restore, SANDBOX_VM_MEMORY_FILE));
		if (cfg->restore_memory_key)
			ADD(memory_key, "a pipe for the memory key", key_pipe(cfg->restore_memory_key));
	} else {
		ADD(kernel, cfg->kernel, open(cfg->kernel, O_RDONLY | O_CLOEXEC));
	}
	/* An initrd is in a snapshot's memory already; a root file system is a drive, given again. */
	if (image && (cfg->rootfs || !cfg->restore))
		ADD(image, image, open(image, O_RDONLY | O_CLOEXEC));
	ADD(console, "the console directory", open_console_dir(vm, cfg->jail));
	ADD(vsock, vm->vsock, listen_at(vm->vsock, 64));
	ADD(control, vm->control, listen_at(vm->control, 8));
	if (cfg->net_tap && cfg->net_policy) {
		ADD(tap, cfg->net_tap, open_tap(cfg->net_tap, cfg->jail));
		ADD(policy, cfg->net_policy, open(cfg->net_policy, O_RDONLY | O_CLOEXEC));
	}
#undef ADD
	return 0;
}

int sandbox_vm_prepare(const struct sandbox_vm_config *cfg, struct sandbox_vm *vm, struct sandbox_vm_cmd *cmd)
{
	const char **argv = cmd->argv;
	struct vm_fds fds = { 0 };
	const char *what = "";
	int argc = 0, err;

	cmd->nfds = 0;
	/* A key goes only through a descriptor: without pass_fds there is none to give. */
	if (cfg->restore_memory_key && (!cfg->pass_fds || !cfg->restore))
		return -EINVAL;
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
	snprintf(vm->console, sizeof(vm->console), "%s/%sconsole.log", vm->dir,
		 cfg->pass_fds ? SANDBOX_VM_CONSOLE_DIR "/" : "");
	snprintf(vm->log, sizeof(vm->log), "%s/vmm.log", vm->dir);
	snprintf(cmd->cpus, sizeof(cmd->cpus), "%u", cfg->cpus ? cfg->cpus : 1);
	snprintf(cmd->mem, sizeof(cmd->mem), "%u", cfg->memory_mib ? cfg->memory_mib : 512);
	snprintf(cmd->cmdline, sizeof(cmd->cmdline), "quiet%s%s%s",
		 cfg->rootfs ? " root=/dev/vda ro rootfstype=ext4 sandvm.overlay=1" : "",
		 cfg->cmdline ? " " : "", cfg->cmdline ? cfg->cmdline : "");

	if (cfg->pass_fds) {
		err = open_fds(cfg, vm, cmd, &fds, &what);
		if (err) {
			fprintf(stderr, "sandvm: cannot open %s for the VMM: %s\n", what, strerror(-err));
			sandbox_vm_cmd_close(cmd);
			if (fds.vsock)
				unlink(vm->vsock);
			if (fds.control)
				unlink(vm->control);
			sandbox_vm_destroy(vm);
			return err;
		}
	} else {
		fds = (struct vm_fds){ .kernel = cfg->kernel, .image = cfg->rootfs ? cfg->rootfs : cfg->initrd,
				       .console = vm->console, .vsock = vm->vsock, .control = vm->control,
				       .tap = cfg->net_tap, .policy = cfg->net_policy };
	}
	argv[argc++] = cfg->vmm;
	if (fds.kvm) {
		argv[argc++] = "--kvm";
		argv[argc++] = fds.kvm;
	}
	if (cfg->restore && cfg->pass_fds) {
		argv[argc++] = "--restore-state";
		argv[argc++] = fds.state;
		argv[argc++] = "--restore-memory";
		argv[argc++] = fds.memory;
		if (fds.memory_key) {
			argv[argc++] = "--restore-memory-key";
			argv[argc++] = fds.memory_key;
		}
	} else if (cfg->restore) {
		argv[argc++] = "--restore";
		argv[argc++] = cfg->restore;
	} else {
		argv[argc++] = "--kernel";
		argv[argc++] = fds.kernel;
	}
	if (cfg->rootfs) {
		snprintf(cmd->drive, sizeof(cmd->drive), "%s,ro,serial=rootfs", fds.image);
		argv[argc++] = "--drive";
		argv[argc++] = cmd->drive;
	} else if (cfg->initrd && !cfg->restore) {
		argv[argc++] = "--initrd";
		argv[argc++] = fds.image;
	}
	argv[argc++] = "--cpus";
	argv[argc++] = cmd->cpus;
	argv[argc++] = "--memory";
	argv[argc++] = cmd->mem;
	if (!cfg->restore) {
		argv[argc++] = "--cmdline";
		argv[argc++] = cmd->cmdline;
	}
	argv[argc++] = "--console";
	argv[argc++] = fds.console;
	argv[argc++] = "--vsock";
	argv[argc++] = fds.vsock;
	argv[argc++] = "--control";
	argv[argc++] = fds.control;
	for (unsigned i = 0; cfg->spare_drives && cfg->spare_drives[i] && i < SANDBOX_VM_MAX_SPARES; i++) {
		argv[argc++] = "--spare-drive";
		argv[argc++] = cfg->spare_drives[i];
	}
	if (cfg->net_tap && cfg->net_policy) {
		snprintf(cmd->net, sizeof(cmd->net), "%s=%s%s%s", cfg->pass_fds ? "tapfd" : "tap",
			 cfg->pass_fds ? fds.tap + 3 : fds.tap, cfg->net_mac ? ",mac=" : "",
			 cfg->net_mac ? cfg->net_mac : "");
		argv[argc++] = "--net";
		argv[argc++] = cmd->net;
		argv[argc++] = "--net-policy";
		argv[argc++] = fds.policy;
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

int sandbox_vm_snapshot_request(const char *dir, const unsigned char *memory_key, char *out, size_t cap)
{
	char key[2 * 32 + 1] = "";
	int n;

	/* A directory is a host path of the caller's: nothing in it needs JSON escaping, or it is refused. */
	for (const char *p = dir; p && *p; p++)
		if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
			return -EINVAL;
	if (memory_key)
		sv_hex_encode(memory_key, 32, key);
	n = dir ? snprintf(out, cap, "{\"op\":\"snapshot\",\"dir\":\"%s\"%s%s%s}\n", dir,
			   memory_key ? ",\"memory_key\":\"" : "", key, memory_key ? "\"" : "")
		: snprintf(out, cap, "{\"op\":\"snapshot\",\"state_fd\":0,\"memory_fd\":1%s%s%s}\n",
			   memory_key ? ",\"memory_key\":\"" : "", key, memory_key ? "\"" : "");
	explicit_bzero(key, sizeof(key));
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : n;
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
	static const char *const names[] = { "vsock", "control", "console.log", "console.log.1", "vmm.log",
					     SANDBOX_VM_CONSOLE_DIR "/console.log", SANDBOX_VM_CONSOLE_DIR "/console.log.1",
					     SANDBOX_VM_CONSOLE_DIR };
	char path[512];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", vm->dir, names[i]);
		if (unlink(path) < 0 && errno == EISDIR)
			rmdir(path);
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
int sandbox_vm_open_console(const char *path)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	return fd;
}

static size_t append_tail(const char *path, char *buf, size_t cap, size_t len)
{
	int fd = sandbox_vm_open_console(path);
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
