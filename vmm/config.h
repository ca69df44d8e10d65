#ifndef SANDVM_VMM_CONFIG_H
#define SANDVM_VMM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
	char *path;   /* NULL for a spare */
	char *serial; /* optional, at most 20 printable ASCII bytes; required for a spare */
	bool read_only;
	bool spare; /* empty until the control socket attaches something (drive-attach) */
};

struct vmm_config {
	char *kernel;
	char *initrd;
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
	char *net_tap;       /* tap device of the virtio-net; NULL: no network device */
	uint8_t net_mac[6];  /* the guest's MAC (locally administered unicast) */
	char *net_policy;    /* egress policy JSON file (vmm/net/egress.h); required with net_tap */
	uint64_t vsock_cid;  /* the guest's CID, 3 unless given */
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

extern const char vmm_config_usage[];

#endif
