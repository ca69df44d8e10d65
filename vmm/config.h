#ifndef SANDVM_VMM_CONFIG_H
#define SANDVM_VMM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "seccomp.h"
#include "jail.h"

/*
 * Everything the VMM is told, parsed once (flags and/or a JSON file) into this
 * struct and validated before any KVM object exists. Later code trusts it.
 */

#define VMM_MIN_MEMORY_MIB 32u
#define VMM_MAX_MEMORY_MIB (1024u * 1024u) /* 1 TiB */
/* APIC IDs are 8 bits in the MP table, and the I/O APIC takes the next one. */
#define VMM_MAX_CPUS 254u
#define VMM_MAX_BOOT_TIMEOUT_S 86400u
#define VMM_MAX_DRIVES 8u
#define VMM_MAX_SERIAL 20u /* virtio-blk's ID is 20 bytes */
/* A console file and its one rotated predecessor together (devices/console.h). */
#define VMM_CONSOLE_MAX_BYTES_DEFAULT (1024ull * 1024)
#define VMM_CONSOLE_MAX_BYTES_MIN (16ull * 1024)
#define VMM_CONSOLE_MAX_BYTES_MAX (1ull << 40)

enum vmm_console {
	VMM_CONSOLE_STDOUT,
	VMM_CONSOLE_NONE,
	VMM_CONSOLE_FILE,
};

/* A virtio-blk drive; the first is /dev/vda in the guest. */
struct vmm_drive {
	char *path;   /* NULL for a spare; "fd:N" for an inherited descriptor */
	int fd;       /* N of "fd:N", else -1 */
	char *serial; /* optional, at most 20 printable ASCII bytes; required for a spare */
	bool read_only;
	bool spare; /* empty until the control socket attaches something (drive-attach) */
};

/*
 * Each path-valued field may be "fd:N" (fd_spec.h): the string stays for
 * messages and the descriptor is in the *_fd beside it (-1 for a path). The
 * descriptors are taken over by vmm_config_take_fds() and closed by
 * vmm_config_destroy() after that.
 */
struct vmm_config {
	char *kernel;
	char *initrd;
	char *kvm;           /* the KVM device; NULL: /dev/kvm */
	int kernel_fd, initrd_fd, kvm_fd, console_fd, control_fd, vsock_fd, net_policy_fd;
	int net_tap_fd;      /* --net tapfd=N: an attached tap, instead of net_tap */
	/*
	 * --restore DIR (DIR/state and DIR/memory), or --restore-state and
	 * --restore-memory (paths or fd:N): start from a snapshot instead of
	 * booting; NULL: boot. The kernel, initrd and cmdline are not needed.
	 */
	char *restore_state, *restore_memory;
	int restore_state_fd, restore_memory_fd;
	/*
	 * --restore-memory-key PATH|fd:N: where the 32-byte key of a sealed
	 * memory file is read from (a pipe or a file, read once and closed);
	 * NULL: the memory file is not sealed.
	 */
	char *restore_memory_key;
	int restore_memory_key_fd;
	/* The key itself, once vmm_config_take_memory_key read it; wiped once guest RAM is decrypted. */
	uint8_t memory_key[32];
	bool has_memory_key;
	bool fds_taken;      /* the descriptors are the config's own (closed by destroy) */
	char *cmdline;       /* appended to the VMM's own defaults */
	char *console_path;  /* VMM_CONSOLE_FILE only */
	char *control_path;  /* unix socket, optional */
	enum vmm_console console;
	uint64_t console_max_bytes; /* a file console's cap, NAME and NAME.1 together */
	uint32_t cpus;
	uint64_t memory_mib;
	uint32_t boot_timeout_s; /* 0: none */
	bool hugepages;
	bool verbose;
	struct vmm_drive drives[VMM_MAX_DRIVES];
	unsigned ndrives;
	char *vsock_path;    /* unix socket of the hybrid vsock; NULL: no vsock device */
	char *net_tap;       /* tap device of the virtio-net; NULL (and net_tap_fd -1): no network device */
	uint8_t net_mac[6];  /* the guest's MAC (locally administered unicast) */
	char *net_policy;    /* egress policy JSON file (vmm/net/egress.h); required with net_tap */
	uint64_t vsock_cid;  /* the guest's CID, 3 unless given */
	enum vmm_seccomp_mode seccomp; /* per-thread filters; VMM_SECCOMP_KILL unless given */
	struct vmm_jail_config jail; /* --jail-*: root NULL: not jailed */
};

/* What main() should do after parsing. */
enum vmm_config_action {
	VMM_CONFIG_RUN,
	VMM_CONFIG_HELP,
	VMM_CONFIG_VERSION,
};

void vmm_config_init(struct vmm_config *cfg);
void vmm_config_destroy(struct vmm_config *cfg);

/*
 * Applies a JSON document (the --config file format) on top of cfg.
 * Returns 0 or -EINVAL with a message naming the field in err.
 */
int vmm_config_parse_json(struct vmm_config *cfg, const char *text, size_t len,
			  char *err, size_t errlen);

/*
 * Parses argv: a --config file is applied first, then the flags on top of it.
 * Does not validate; call vmm_config_validate() after.
 */
int vmm_config_parse_args(struct vmm_config *cfg, int argc, char **argv,
			  enum vmm_config_action *action, char *err, size_t errlen);

/* Checks required fields, ranges and that the files can be read. */
int vmm_config_validate(const struct vmm_config *cfg, char *err, size_t errlen);

/*
 * Takes over every "fd:N" descriptor (type and access checked per flag,
 * close-on-exec set); after it, vmm_config_destroy closes them. 0 or -errno
 * with a message naming the flag in err.
 */
int vmm_config_take_fds(struct vmm_config *cfg, char *err, size_t errlen);
/*
 * Reads the key of --restore-memory-key into memory_key and closes its
 * descriptor (or the file it opened): the key never stays in a descriptor
 * the VMM keeps. 0 (nothing to do without the flag), or -EINVAL with err.
 */
int vmm_config_take_memory_key(struct vmm_config *cfg, char *err, size_t errlen);

/* The descriptors the config names, at most max of them into fds; returns how many it names. */
unsigned vmm_config_fds(const struct vmm_config *cfg, int *fds, unsigned max);

/* Whether the VM has a network device (--net tap=NAME or tapfd=N). */
static inline bool vmm_config_has_net(const struct vmm_config *cfg)
{
	return cfg->net_tap || cfg->net_tap_fd >= 0;
}

extern const char vmm_config_usage[];

#endif
