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
	const char *net_tap;    /* the persistent tap of the VM's network device, NULL: none */
	const char *net_mac;    /* the guest's MAC (aa:bb:cc:dd:ee:ff), with net_tap */
	const char *net_policy; /* its --net-policy file, with net_tap */
	const char *run_dir; /* NULL: a fresh directory under $TMPDIR (or /tmp) */
	/* Serials of empty drives to attach images to at run time; NULL-terminated, may be NULL. */
	const char *const *spare_drives;
	const struct sandbox_vm_jail *jail; /* NULL: the VMM runs unjailed */
	/*
	 * Descriptor mode (sandboxd's): every resource is opened here and given
	 * to the VMM as fd:N (docs/vmm.md), so the VMM opens no host path;
	 * false: the VMM is given paths (sandvm-run).
	 */
	bool pass_fds;
	/*
	 * Restore instead of boot (docs/vmm.md): a directory holding the VMM's
	 * `state` and `memory` files. With pass_fds both are opened here
	 * read-only and given as --restore-state fd:N --restore-memory fd:M (a
	 * jailed VMM opens no host path); else --restore DIR. The kernel, the
	 * initrd and the cmdline are left off then; the rest of the command line
	 * must describe the snapshot's machine (cpus, memory, devices in order).
	 */
	const char *restore;
	/*
	 * The 32-byte key of a sealed memory file in restore, or NULL (not
	 * sealed). With pass_fds only: it goes to the VMM through a pipe
	 * (--restore-memory-key fd:N), never on the command line; the caller
	 * owns and wipes it.
	 */
	const unsigned char *restore_memory_key;
};

struct sandbox_vm {
	pid_t pid;
	bool own_dir;
	int status; /* the VMM's exit status once reaped, else -1 */
	char dir[256];
	char vsock[320];
	char control[320];
	char console[320]; /* with pass_fds: dir/console/console.log, in a directory the VMM owns */
	char log[320];
};

#define SANDBOX_VM_MAX_SPARES 4u

#define SANDBOX_VM_MAX_FDS 11u
#define SANDBOX_VM_STATE_FILE "state"   /* in a snapshot directory */
#define SANDBOX_VM_MEMORY_FILE "memory"
#define SANDBOX_VM_CONSOLE_DIR "console" /* in the run directory, with pass_fds */

/*
 * The VMM's command line; the strings argv points to live in the struct.
 * With pass_fds, fds[i] is to be the child's descriptor 3 + i (the argv says
 * fd:3, fd:4, ...): whoever spawns maps them so, then closes its copies
 * (sandbox_vm_cmd_close).
 */
struct sandbox_vm_cmd {
	const char *argv[64];
	char cpus[16], mem[16], cmdline[2048], drive[4096 + 32], net[96];
	char jail_uid[16], jail_gid[16], jail_fsize[24];
	int fds[SANDBOX_VM_MAX_FDS];
	unsigned nfds;
	char fd_args[SANDBOX_VM_MAX_FDS][16];
};

/*
 * Creates the run directory, fills vm's paths and cmd; starts nothing (a
 * daemon spawns the VMM its own way). 0 or -errno with a message on stderr.
 */
int sandbox_vm_prepare(const struct sandbox_vm_config *cfg, struct sandbox_vm *vm, struct sandbox_vm_cmd *cmd);
/*
 * The control socket's snapshot request (docs/vmm.md), one line with its
 * newline: {"op":"snapshot","dir":DIR} when dir is set, else the descriptor
 * form {"op":"snapshot","state_fd":0,"memory_fd":1} (the state file and
 * the memory file sent with the request, in that order); with
 * "memory_key":HEX when memory_key (32 bytes) is not NULL, and then the
 * caller wipes out after use. The VMM leaves the VM paused. The length,
 * -EINVAL for a dir with a quote, backslash or control character, or
 * -ENAMETOOLONG when it does not fit in cap.
 */
int sandbox_vm_snapshot_request(const char *dir, const unsigned char *memory_key, char *out, size_t cap);
/* Closes the descriptors prepare opened for the VMM (after the spawn, whatever came of it). */
void sandbox_vm_cmd_close(struct sandbox_vm_cmd *cmd);
/*
 * Opens a console file for reading. The VMM's uid owns the directory it is
 * in and could plant anything there: no symlink is followed (O_NOFOLLOW), a
 * FIFO does not block the open, and only a regular file is accepted. A
 * descriptor, or -errno.
 */
int sandbox_vm_open_console(const char *path);
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
