#ifndef SANDVM_LIB_SANDBOX_VM_H
#define SANDVM_LIB_SANDBOX_VM_H

/*
 * One sandbox VM as a child process: builds the VMM's command line (kernel,
 * root file system, vsock and control sockets in a private run directory),
 * starts it, waits for the guest agent, and stops it. The run directory
 * holds the VMM's log and the guest console, which is what a person reads
 * when a sandbox fails to come up.
 */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct agent_client;

/* Where and as whom a VMM is jailed (vmm --jail-*; docs/security.md). */
struct sandbox_vm_jail {
	const char *root;         /* an empty directory: the VMM's / */
	unsigned uid, gid;        /* the VMM's own ids, unprivileged, no supplementary groups */
	const char *cgroup;       /* the VMM's cgroup v2 leaf (limits already written), NULL: none */
	unsigned long long fsize; /* RLIMIT_FSIZE in bytes, 0: the VMM's default */
};

struct sandbox_vm_config {
	const char *vmm;    /* path of the vmm binary */
	const char *kernel; /* vmlinux (PVH) or bzImage */
	const char *initrd; /* the initramfs; ignored when rootfs is set */
	/*
	 * An ext4 image with the agent as /sbin/init, attached read-only as
	 * /dev/vda; the agent puts an in-memory overlay over it, so a sandbox
	 * never changes the image and many sandboxes share one.
	 */
	const char *rootfs;
	unsigned cpus;
	unsigned memory_mib;
	const char *cmdline; /* extra kernel arguments, may be NULL */
	const char *net;        /* the VMM's --net value (tap=NAME,mac=MAC), NULL: no network device */
	const char *net_policy; /* its --net-policy file, with net */
	const char *run_dir; /* NULL: a fresh directory under $TMPDIR (or /tmp) */
	/* Serials of empty drives to attach images to at run time; NULL-terminated, may be NULL. */
	const char *const *spare_drives;
	const struct sandbox_vm_jail *jail; /* NULL: the VMM runs unjailed */
};

struct sandbox_vm {
	pid_t pid;
	bool own_dir;
	int status; /* the VMM's exit status once reaped, else -1 */
	char dir[256];
	char vsock[320];
	char control[320];
	char console[320];
	char log[320];
};

#define SANDBOX_VM_MAX_SPARES 4u

/* The VMM's command line; the strings argv points to live in the struct. */
struct sandbox_vm_cmd {
	const char *argv[64];
	char cpus[16], mem[16], cmdline[2048], drive[4096 + 32];
	char jail_uid[16], jail_gid[16], jail_fsize[24];
};

/*
 * Creates the run directory, fills vm's paths and cmd; starts nothing (a
 * daemon spawns the VMM its own way). 0 or -errno with a message on stderr.
 */
int sandbox_vm_prepare(const struct sandbox_vm_config *cfg, struct sandbox_vm *vm, struct sandbox_vm_cmd *cmd);
/* Starts the VMM; 0 or -errno with a message on stderr. */
int sandbox_vm_start(const struct sandbox_vm_config *cfg, struct sandbox_vm *vm);
/*
 * Connects c to the guest agent, waiting up to timeout_ms for it to come
 * up; -ECHILD if the VMM exited meanwhile (vm->status says how).
 */
int sandbox_vm_connect(struct sandbox_vm *vm, struct agent_client *c, int timeout_ms);
/* Waits up to timeout_ms for the VMM to exit, then kills it; returns its exit status. */
int sandbox_vm_wait(struct sandbox_vm *vm, int timeout_ms);
/* Kills the VMM if it still runs and removes the run directory it created. */
void sandbox_vm_destroy(struct sandbox_vm *vm);
/*
 * The newest cap - 1 bytes of the guest console, NUL-terminated: console.log
 * after the tail of console.log.1, which the VMM rotates it into. Returns the
 * length.
 */
size_t sandbox_vm_console_tail(const struct sandbox_vm *vm, char *out, size_t cap);
/* Copies the last lines of the console and the VMM log to stderr. */
void sandbox_vm_report(const struct sandbox_vm *vm, int lines);

#endif
