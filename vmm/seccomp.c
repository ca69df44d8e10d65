#include "seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "devices/console.h"

/* One allowed syscall, optionally only when one argument compares as given. */
struct seccomp_rule {
	int nr;
	unsigned ncmp; /* 0 or 1 */
	struct scmp_arg_cmp cmp;
};

#define ALLOW(name) { .nr = SCMP_SYS(name) }
#define ALLOW_IF(name, argn, cmp_op, a, b) \
	{ .nr = SCMP_SYS(name), .ncmp = 1, .cmp = { .arg = (argn), .op = (cmp_op), .datum_a = (a), .datum_b = (b) } }
/* The kernel reads ioctl's request as 32 bits: compare exactly those. */
#define IOCTL(req) ALLOW_IF(ioctl, 1, SCMP_CMP_MASKED_EQ, 0xffffffffu, (uint32_t)(req))
/* Memory is never made executable after set-up. */
#define NO_EXEC(name) ALLOW_IF(name, 2, SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)
#define FCNTL(cmd) ALLOW_IF(fcntl, 1, SCMP_CMP_EQ, (cmd), 0)

/*
 * What glibc itself does on any thread: locks and condition variables
 * (futex), pthread_kill (rt_sigprocmask, getpid, tgkill: added with their
 * arguments in add_tgkill), the kick signal's return, the allocator (mmap,
 * mprotect without PROT_EXEC, munmap, madvise), the end of a thread (exit,
 * after madvise on its stack), clock_gettime where the vDSO falls back to the
 * syscall, and one-line log writes.
 */
#define COMMON_RULES                                                                              \
	ALLOW(futex), ALLOW(rt_sigreturn), ALLOW(restart_syscall), ALLOW(rt_sigprocmask),          \
	ALLOW(getpid), ALLOW(gettid), ALLOW(clock_gettime), NO_EXEC(mmap), NO_EXEC(mprotect),      \
	ALLOW(munmap), ALLOW(madvise), ALLOW(write), ALLOW(exit)

/*
 * A vCPU thread: KVM_RUN and the exits it handles synchronously on the
 * buses. Device models never run here (the transport forwards QueueNotify
 * and reset to the main loop through eventfds: write); what does is the
 * serial port's output to the console (write, and the rotation of a console
 * file: renameat, an openat with exactly the console's flags, close,
 * ftruncate), its interrupt line (KVM_IRQ_LINE), stop requests (an eventfd
 * write, kicks of the other vCPUs), and the registers logged on a crash.
 */
static const struct seccomp_rule vcpu_rules[] = {
	COMMON_RULES,
	IOCTL(KVM_RUN),
	IOCTL(KVM_IRQ_LINE),
	IOCTL(KVM_GET_REGS),
	IOCTL(KVM_GET_SREGS),
	ALLOW_IF(openat, 2, SCMP_CMP_MASKED_EQ, 0xffffffffu, CONSOLE_ROTATE_FLAGS),
	ALLOW(renameat),
	ALLOW(renameat2),
	ALLOW(ftruncate),
	ALLOW(close),
};

/*
 * The main thread from its event loop on, and the teardown after it: every
 * device model (virtio-blk's raw files and encrypted images, the tap,
 * vsock's unix sockets, the entropy device), the control socket (requests
 * may carry descriptors: recvmsg/sendmsg), the console, and the path forms
 * of drive-swap, drive-attach (O_TMPFILE overlays) and net-policy, which open
 * host files at run time outside a jail.
 */
static const struct seccomp_rule main_rules[] = {
	COMMON_RULES,
	ALLOW(exit_group),
	ALLOW(brk),
	ALLOW(mremap),
	ALLOW(getrandom),
	/*
	 * glibc's qsort asks for the size of RAM (sysconf(_SC_PHYS_PAGES)) the
	 * first time it sorts a large array: a net-policy op's allowlist of
	 * thousands of CIDRs, when the policy at start was small.
	 */
	ALLOW(sysinfo),
	ALLOW(epoll_wait),
	ALLOW(epoll_pwait),
	ALLOW(epoll_ctl),
	ALLOW(read),
	ALLOW(readv),
	ALLOW(writev),
	ALLOW(pread64),
	ALLOW(pwrite64),
	ALLOW(preadv),
	ALLOW(pwritev),
	ALLOW(lseek),
	ALLOW(fsync),
	ALLOW(fdatasync),
	ALLOW(ftruncate),
	ALLOW(close),
	ALLOW(openat),
	ALLOW(newfstatat),
	ALLOW(fstat),
	ALLOW(renameat),
	ALLOW(renameat2),
	ALLOW(unlink),
	ALLOW(unlinkat),
	FCNTL(F_GETFD),
	FCNTL(F_SETFD),
	FCNTL(F_GETFL),
	FCNTL(F_SETFL),
	FCNTL(F_DUPFD_CLOEXEC),
	ALLOW_IF(socket, 0, SCMP_CMP_EQ, AF_UNIX, 0),
	ALLOW(connect),
	ALLOW(accept4),
	ALLOW(recvfrom),
	ALLOW(sendto),
	ALLOW(recvmsg),
	ALLOW(sendmsg),
	ALLOW(shutdown),
	IOCTL(KVM_IOEVENTFD),
	IOCTL(BLKGETSIZE64),
	/* The tap's offloads follow the net driver's features (and go off on its reset). */
	IOCTL(TUNSETOFFLOAD),
	/* The snapshot op reads every vCPU's and the VM's state; resume tells kvmclock. */
	IOCTL(KVM_GET_MP_STATE),
	IOCTL(KVM_GET_REGS),
	IOCTL(KVM_GET_SREGS),
	IOCTL(KVM_GET_XSAVE),
	IOCTL(KVM_GET_XSAVE2),
	IOCTL(KVM_GET_FPU),
	IOCTL(KVM_GET_XCRS),
	IOCTL(KVM_GET_DEBUGREGS),
	IOCTL(KVM_GET_LAPIC),
	IOCTL(KVM_GET_TSC_KHZ),
	IOCTL(KVM_GET_CPUID2),
	IOCTL(KVM_GET_MSRS),
	IOCTL(KVM_GET_VCPU_EVENTS),
	IOCTL(KVM_GET_PIT2),
	IOCTL(KVM_GET_CLOCK),
	IOCTL(KVM_GET_IRQCHIP),
	IOCTL(KVM_KVMCLOCK_CTRL),
};

struct seccomp_filter {
	const char *name;
	const struct seccomp_rule *rules;
	size_t nrules;
};

static const struct seccomp_filter filters[VMM_SECCOMP_NKINDS] = {
	[VMM_SECCOMP_VCPU] = { "vcpu", vcpu_rules, sizeof(vcpu_rules) / sizeof(vcpu_rules[0]) },
	[VMM_SECCOMP_MAIN] = { "main", main_rules, sizeof(main_rules) / sizeof(main_rules[0]) },
};

/*
 * The one piece of state the SIGSYS handler needs that the kernel does not
 * give it: which kind of thread it interrupted. Set by each thread for itself
 * when it loads its filter; read only by the handler on that same thread.
 */
static _Thread_local const char *thread_kind = "unfiltered";

/* __NR_x -> "x", generated from <sys/syscall.h> at build time (Makefile). */
static const char *const syscall_names[] = {
#include "syscall_names.h"
};

const char *vmm_seccomp_syscall_name(long nr)
{
	if (nr < 0 || (unsigned long)nr >= sizeof(syscall_names) / sizeof(syscall_names[0]))
		return NULL;
	return syscall_names[nr];
}

int vmm_seccomp_mode_parse(const char *text, enum vmm_seccomp_mode *mode)
{
	static const char *const names[] = { "kill", "log", "off" };

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(text, names[i]) == 0) {
			*mode = (enum vmm_seccomp_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *vmm_seccomp_mode_name(enum vmm_seccomp_mode mode)
{
	switch (mode) {
	case VMM_SECCOMP_KILL:
		return "kill";
	case VMM_SECCOMP_LOG:
		return "log";
	case VMM_SECCOMP_OFF:
		return "off";
	}
	return "?";
}

const char *vmm_seccomp_kind_name(enum vmm_seccomp_kind kind)
{
	return (unsigned)kind < VMM_SECCOMP_NKINDS ? filters[kind].name : "?";
}

/* Appends s to buf[*len..cap); async-signal-safe. */
static void put_str(char *buf, size_t *len, size_t cap, const char *s)
{
	while (*s && *len < cap)
		buf[(*len)++] = *s++;
}

static void put_num(char *buf, size_t *len, size_t cap, long v)
{
	char digits[24];
	size_t n = 0;
	unsigned long u = v < 0 ? 0ul - (unsigned long)v : (unsigned long)v;

	do {
		digits[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		digits[n++] = '-';
	while (n && *len < cap)
		buf[(*len)++] = digits[--n];
}

/*
 * SA_RESETHAND | SA_NODEFER: by the time this runs, SIGSYS is back to its
 * default action and not blocked, so the tgkill ends the whole process by
 * SIGSYS (every filter allows tgkill of SIGSYS to this process). Should that
 * fail, the trapped syscall made again is forced to the same end by the
 * kernel (a trapped syscall's SIGSYS is delivered even when blocked); and
 * last, exit_group with 128 + SIGSYS.
 */
static void on_sigsys(int sig, siginfo_t *info, void *uctx)
{
	char line[160];
	size_t len = 0;
	const char *name = vmm_seccomp_syscall_name(info->si_syscall);

	(void)sig;
	(void)uctx;
	put_str(line, &len, sizeof(line) - 1, "vmm: error: seccomp: thread ");
	put_str(line, &len, sizeof(line) - 1, thread_kind);
	put_str(line, &len, sizeof(line) - 1, " made forbidden syscall ");
	put_str(line, &len, sizeof(line) - 1, name ? name : "unknown");
	put_str(line, &len, sizeof(line) - 1, " (");
	put_num(line, &len, sizeof(line) - 1, info->si_syscall);
	put_str(line, &len, sizeof(line) - 1, ")");
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) < 0) {
		/* Nowhere else to say it; the end by SIGSYS still tells. */
	}
	syscall(SYS_tgkill, getpid(), gettid(), SIGSYS);
	syscall(info->si_syscall, 0, 0, 0, 0, 0, 0);
	syscall(SYS_exit_group, 128 + SIGSYS);
}

int vmm_seccomp_install_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGSYS, &sa, NULL) < 0 ? -errno : 0;
}

/*
 * tgkill to this process only, and only the kick signal, the SIGSYS that ends
 * it, or abort()'s SIGABRT (glibc's own checks, so that they end as such).
 */
static int add_tgkill(scmp_filter_ctx f, const struct vmm_seccomp_ctx *ctx)
{
	int sigs[3] = { SIGSYS, SIGABRT, ctx ? ctx->kick_signal : 0 };
	int r = 0;

	for (unsigned i = 0; r == 0 && i < 3; i++) {
		if (sigs[i] <= 0 || (i == 2 && (sigs[2] == SIGSYS || sigs[2] == SIGABRT)))
			continue;
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 2,
				     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()),
				     SCMP_A2(SCMP_CMP_EQ, (scmp_datum_t)sigs[i]));
	}
	return r;
}

int vmm_seccomp_load(enum vmm_seccomp_kind kind, enum vmm_seccomp_mode mode, const struct vmm_seccomp_ctx *ctx)
{
	const struct seccomp_filter *flt;
	scmp_filter_ctx f;
	int r = 0;

	if ((unsigned)kind >= VMM_SECCOMP_NKINDS)
		return -EINVAL;
	if (mode == VMM_SECCOMP_OFF)
		return 0;
	flt = &filters[kind];
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	f = seccomp_init(mode == VMM_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
	if (!f)
		return -ENOMEM;
	/* Per thread: never synchronise onto the other threads. */
	r = seccomp_attr_set(f, SCMP_FLTATR_CTL_TSYNC, 0);
	/* The filter's own NO_NEW_PRIVS is set above, where a failure is seen. */
	if (r == 0)
		r = seccomp_attr_set(f, SCMP_FLTATR_CTL_NNP, 0);
	for (size_t i = 0; r == 0 && i < flt->nrules; i++) {
		const struct seccomp_rule *rule = &flt->rules[i];

		r = rule->ncmp ? seccomp_rule_add_array(f, SCMP_ACT_ALLOW, rule->nr, 1, &rule->cmp)
			       : seccomp_rule_add(f, SCMP_ACT_ALLOW, rule->nr, 0);
	}
	if (r == 0)
		r = add_tgkill(f, ctx);
	if (r == 0) {
		thread_kind = flt->name;
		r = seccomp_load(f);
	}
	seccomp_release(f);
	return r > 0 ? -r : r;
}
