/*
 * vmm: boots one microVM on KVM and runs it until the guest ends.
 * One process is one VM; every failure unwinds to here, the only exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "config.h"
#include "devices/console.h"
#include "jail.h"
#include "log.h"
#include "seccomp.h"
#include "spare_args.h"
#include "vcpu.h"
#include "vm.h"

#ifndef SANDVM_VERSION
#define SANDVM_VERSION "dev"
#endif

/* With --verbose, where start-up time goes. */
static void phase_done(uint64_t start_ns, const char *what)
{
	sv_debug("%.3f ms: %s", (double)(vm_now_ns() - start_ns) / 1e6, what);
}

static void kick_handler(int sig)
{
	(void)sig;
}

/* Signals reach the event loop through a signalfd; vCPU threads only get kicks. */
static int setup_signals(void)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler; /* no SA_RESTART: KVM_RUN must return EINTR */
	if (sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	return -pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/*
 * The descriptors the configuration names ("fd:N", "tapfd=N"): every value
 * on the command line, and the paths a --config file set.
 */
static int named_fds(const struct vmm_config *cfg, int argc, char **argv, int *fds, size_t *n)
{
	const char *paths[] = {cfg->kernel, cfg->initrd, cfg->console_path, cfg->control_path, cfg->vsock_path,
			       cfg->net_tap, cfg->net_policy, cfg->restore_state, cfg->restore_memory, cfg->restore_memory_key};
	int r = 0;

	for (int i = 1; r == 0 && i < argc; i++)
		r = vmm_jail_named_fds(argv[i], fds, n, VMM_JAIL_MAX_FDS);
	for (size_t i = 0; r == 0 && i < sizeof(paths) / sizeof(paths[0]); i++)
		if (paths[i])
			r = vmm_jail_named_fds(paths[i], fds, n, VMM_JAIL_MAX_FDS);
	for (unsigned i = 0; r == 0 && i < cfg->ndrives; i++)
		if (cfg->drives[i].path)
			r = vmm_jail_named_fds(cfg->drives[i].path, fds, n, VMM_JAIL_MAX_FDS);
	return r;
}

/*
 * With --jail-*: 0 in the jailed child, which goes on; 1 in the keeper,
 * whose child ended with *code; -1 after an error (logged, *code set).
 */
static int enter_jail(const struct vmm_config *cfg, int argc, char **argv, int *code)
{
	int fds[VMM_JAIL_MAX_FDS], r;
	char err[512];
	size_t n = 0;

	if (named_fds(cfg, argc, argv, fds, &n) < 0) {
		sv_err("jail: more than %u descriptors named on the command line", VMM_JAIL_MAX_FDS);
		*code = VMM_EXIT_CONFIG;
		return -1;
	}
	r = vmm_jail_enter(&cfg->jail, fds, n, code, err, sizeof(err));
	if (r < 0) {
		sv_err("%s", err);
		*code = VMM_EXIT_ERROR;
		return -1;
	}
	return r == VMM_JAIL_KEEPER ? 1 : 0;
}

/* Returns 0, or -1 with a message in err. */
static int open_console(const struct vmm_config *cfg, struct console_out *console, char *err, size_t errlen)
{
	int r;

	switch (cfg->console) {
	case VMM_CONSOLE_NONE:
		r = console_out_init_fd(console, -1);
		break;
	case VMM_CONSOLE_STDOUT:
		r = console_out_init_fd(console, STDOUT_FILENO);
		break;
	default:
		if (cfg->console_fd >= 0) {
			/* The console takes its own descriptor; the config keeps (and closes) the one it was given. */
			r = fcntl(cfg->console_fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
			r = r < 0 ? -errno : console_out_open_fd(console, r, cfg->console_max_bytes);
		} else {
			r = console_out_open(console, cfg->console_path, cfg->console_max_bytes);
		}
		break;
	}
	if (r < 0) {
		snprintf(err, errlen, "console '%s': %s", cfg->console_path ? cfg->console_path : "-",
			 strerror(-r));
		return -1;
	}
	return 0;
}

/*
 * `vmm --args-from FD TITLE`, a spare (spare_args.h): started before any
 * sandbox needs it, it waits on FD for the command line it would have been
 * started with, then goes on as that VMM, its descriptors where a fresh
 * start has them and its command line shown over TITLE. 0 with argc and argv
 * replaced; 1 when the sender went away first (nothing to do); -1 after an
 * error (logged).
 */
static int wait_for_args(int *argc, char ***argv, struct spare_args *spare)
{
	const char *fd = (*argv)[2];
	int r = spare_args_become(argc, argv, spare);

	if (r == -EPIPE)
		return 1;
	if (r == -EBADF)
		sv_err("--args-from: '%s' is not a descriptor", fd);
	else if (r < 0)
		sv_err("--args-from: %s", r == -EPROTO ? "not a command line" : strerror(-r));
	return r < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	uint64_t start_ns = vm_now_ns();
	enum vmm_config_action action;
	enum vm_stop_reason reason;
	struct vmm_config cfg;
	struct vm vm;
	char err[512] = "";
	struct console_out console;
	struct spare_args spare; /* a spare's argv points into it, for main's (the process's) life */
	int code, r;

	sv_log_init("vmm", SV_LOG_INFO);
	/*
	 * OpenSSL (snapshot hashes, encrypted images) without its configuration
	 * file: the VMM needs none, a jail has none, and reading it is most of
	 * OpenSSL's start-up cost, which a restore pays.
	 */
	OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
	if (argc == 4 && strcmp(argv[1], "--args-from") == 0) {
		r = wait_for_args(&argc, &argv, &spare);
		if (r != 0)
			return r > 0 ? 0 : VMM_EXIT_CONFIG;
		start_ns = vm_now_ns();
	}
	vmm_config_init(&cfg);
	r = vmm_config_parse_args(&cfg, argc, argv, &action, err, sizeof(err));
	if (r == 0 && action == VMM_CONFIG_HELP) {
		fputs(vmm_config_usage, stdout);
		vmm_config_destroy(&cfg);
		return 0;
	}
	if (r == 0 && action == VMM_CONFIG_VERSION) {
		printf("vmm %s\n", SANDVM_VERSION);
		vmm_config_destroy(&cfg);
		return 0;
	}
	if (r == 0)
		r = vmm_config_validate(&cfg, err, sizeof(err));
	if (r == 0)
		r = vmm_config_take_fds(&cfg, err, sizeof(err));
	if (r == 0)
		r = vmm_config_take_memory_key(&cfg, err, sizeof(err));
	if (r < 0) {
		sv_err("%s", r == -ENOMEM ? "out of memory" : err);
		vmm_config_destroy(&cfg);
		return VMM_EXIT_CONFIG;
	}
	if (cfg.verbose)
		sv_log_init("vmm", SV_LOG_DEBUG);
	/* Before anything else: the VM and every guest input exist only inside the jail. */
	if (cfg.jail.root && enter_jail(&cfg, argc, argv, &code) != 0) {
		vmm_config_destroy(&cfg);
		return code;
	}
	code = VMM_EXIT_ERROR;
	if (!cfg.restore_state && vm_probe_kernel(cfg.kernel, cfg.kernel_fd, &code, err, sizeof(err)) < 0) {
		sv_err("%s", err);
		vmm_config_destroy(&cfg);
		return code;
	}

	if (open_console(&cfg, &console, err, sizeof(err)) < 0) {
		sv_err("%s", err);
		vmm_config_destroy(&cfg);
		return VMM_EXIT_CONFIG;
	}
	r = setup_signals();
	/* Before any thread loads a filter that traps. */
	if (r == 0 && cfg.seccomp == VMM_SECCOMP_KILL)
		r = vmm_seccomp_install_handler();
	if (r < 0) {
		sv_err("setting up signals: %s", strerror(-r));
		code = VMM_EXIT_ERROR;
		goto out_console;
	}
	phase_done(start_ns, "configuration parsed and kernel probed");
	r = vm_init(&vm, &cfg, &console, start_ns, err, sizeof(err));
	if (r < 0) {
		sv_err("%s", err);
		/* Too many vCPUs, or a snapshot's memory file that does not fit this machine: the command line's fault. */
		code = r == -E2BIG || (cfg.restore_state && r == -EINVAL) ? VMM_EXIT_CONFIG : VMM_EXIT_ERROR;
		goto out_vm;
	}
	code = VMM_EXIT_ERROR;
	r = cfg.restore_state ? vm_restore(&vm, &code, err, sizeof(err)) : vm_load(&vm, &code, err, sizeof(err));
	/* Guest RAM and the state file are decrypted (or the restore failed): the key has done its work. */
	OPENSSL_cleanse(cfg.memory_key, sizeof(cfg.memory_key));
	if (r < 0) {
		sv_err("%s", err);
		goto out_vm;
	}
	phase_done(start_ns, "VM created and loaded");
	reason = vm_run(&vm);
	code = vm_exit_code(reason);
	if (code == VMM_EXIT_OK)
		sv_debug("VM ended: %s (%s)", vm_stop_reason_name(reason), vm.stop_detail);
	else
		sv_err("VM ended: %s: %s", vm_stop_reason_name(reason), vm.stop_detail);
out_vm:
	vm_destroy(&vm);
out_console:
	console_out_destroy(&console);
	vmm_config_destroy(&cfg);
	return code;
}
