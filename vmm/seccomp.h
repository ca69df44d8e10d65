#ifndef SANDVM_VMM_SECCOMP_H
#define SANDVM_VMM_SECCOMP_H

#include <stdint.h>

/*
 * Per-thread seccomp filters (docs/vmm.md, "seccomp"). Each kind of VMM
 * thread has one filter, described as const data: the syscalls it may make
 * and, for ioctl, the request numbers (compared as 32 bits, as the kernel
 * reads them). Each thread loads its own filter (no TSYNC) before it touches
 * guest input; what it did before (set-up) is not constrained.
 */

enum vmm_seccomp_mode {
	VMM_SECCOMP_KILL, /* a forbidden syscall ends the process by SIGSYS, after one log line */
	VMM_SECCOMP_LOG,  /* it is allowed and logged by the kernel (audit); for development */
	VMM_SECCOMP_OFF,  /* no filter */
};

enum vmm_seccomp_kind {
	VMM_SECCOMP_VCPU, /* a vCPU thread: KVM_RUN and its exits */
	VMM_SECCOMP_MAIN, /* the main thread's event loop: devices, control socket, teardown */
	VMM_SECCOMP_NKINDS,
};

/* Values that only exist at run time, narrowing a filter's arguments. */
struct vmm_seccomp_ctx {
	int kick_signal; /* the signal a vCPU thread is kicked with (tgkill's argument) */
};

/* "kill", "log", "off" -> mode; -EINVAL for anything else. */
int vmm_seccomp_mode_parse(const char *text, enum vmm_seccomp_mode *mode);
const char *vmm_seccomp_mode_name(enum vmm_seccomp_mode mode);
const char *vmm_seccomp_kind_name(enum vmm_seccomp_kind kind);

/*
 * Installs the process's SIGSYS handler, which writes
 * "vmm: error: seccomp: thread KIND made forbidden syscall NAME (NR)" to
 * stderr with write(2) and ends the process by SIGSYS. Call once, before any
 * thread loads a filter in VMM_SECCOMP_KILL mode. Returns 0 or -errno.
 */
int vmm_seccomp_install_handler(void);

/*
 * Sets PR_SET_NO_NEW_PRIVS and loads kind's filter on the calling thread only
 * (nothing for VMM_SECCOMP_OFF). Returns 0 or a negative errno.
 */
int vmm_seccomp_load(enum vmm_seccomp_kind kind, enum vmm_seccomp_mode mode, const struct vmm_seccomp_ctx *ctx);

/* The name of syscall nr on this architecture, or NULL; async-signal-safe (a const table). */
const char *vmm_seccomp_syscall_name(long nr);

#endif
