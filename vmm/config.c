#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "fd_spec.h"
#include "parse.h"
#include "snapshot/mem_seal.h"

/* Config files are small; anything bigger is a mistake, not a config. */
#define CONFIG_FILE_MAX (1u << 20)

const char vmm_config_usage[] =
	"usage: vmm --kernel PATH [--initrd PATH] [--cmdline STR] [--cpus N]\n"
	"           [--memory MIB] [--console stdout|none|FILE] [--console-max-bytes N]\n"
	"           [--config FILE.json] [--control SOCKET] [--boot-timeout SEC]\n"
	"           [--hugepages] [--verbose] [--seccomp kill|log|off]\n"
	"           [--drive PATH[,ro][,serial=ID]]... [--spare-drive SERIAL]...\n"
	"           [--vsock SOCKET[,cid=N]]\n"
	"           [--net tap=NAME|tapfd=N[,mac=MAC] --net-policy FILE.json]\n"
	"           [--kvm PATH] [--restore DIR | --restore-state F --restore-memory F]\n"
	"           [--restore-memory-key F]\n"
	"           [--jail-root DIR --jail-uid U --jail-gid G [--jail-cgroup DIR]\n"
	"            [--jail-fsize BYTES] [--jail-nofile N]]\n"
	"\n"
	"Boots one microVM on KVM and runs until the guest reboots or shuts down.\n"
	"  --kernel PATH       ELF vmlinux (PVH entry) or bzImage (64-bit boot protocol)\n"
	"  --initrd PATH       initial ramdisk (cpio, optionally compressed)\n"
	"  --cmdline STR       appended to the default kernel command line\n"
	"  --cpus N            vCPUs, 1..254 (default 1)\n"
	"  --memory MIB        guest RAM in MiB, 32..1048576 (default 128)\n"
	"  --console WHERE     guest serial console: stdout (default), none, a file,\n"
	"                      or a listening unix socket to connect to\n"
	"  --console-max-bytes N  a file console keeps at most N bytes, the newest:\n"
	"                      FILE and FILE.1 (rotated at N/2), 16384..2^40 (default 1 MiB)\n"
	"  --config FILE       JSON with the same fields; flags given too override it\n"
	"  --control SOCKET    unix socket for control requests (docs/vmm.md)\n"
	"  --boot-timeout SEC  fail (exit 6) if the guest init does not signal within SEC\n"
	"  --drive SPEC        a virtio-blk disk backed by a raw file: PATH[,ro][,serial=ID];\n"
	"                      repeatable (at most 8), the first is /dev/vda\n"
	"  --spare-drive ID    an empty read-write virtio-blk disk with serial ID; the\n"
	"                      control socket attaches a file or snapshot image to it\n"
	"  --vsock SPEC        virtio-vsock: SOCKET[,cid=N]; host clients connect to SOCKET\n"
	"                      and send \"CONNECT <port>\\n\"; guest connections to the host's\n"
	"                      port P reach SOCKET_P (guest CID 3 unless given)\n"
	"  --net SPEC          virtio-net on a tap device: tap=NAME or tapfd=N (an open,\n"
	"                      attached tap descriptor), [,mac=aa:bb:cc:dd:ee:ff]\n"
	"  --net-policy FILE   its egress firewall policy (JSON; required with --net)\n"
	"  --kvm PATH          the KVM device (default /dev/kvm)\n"
	"  --restore DIR       start from the snapshot DIR/state + DIR/memory (the\n"
	"                      control op snapshot writes them) instead of booting; the\n"
	"                      other flags must describe the same machine; --kernel is\n"
	"                      not needed. --restore-state/--restore-memory name the two\n"
	"                      files (or fd:N) one by one\n"
	"  --restore-memory-key PATH|fd:N\n"
	"                      the 32-byte key of a sealed memory file (a snapshot op\n"
	"                      given \"memory_key\" wrote it), read from a file or pipe\n"
	"  --hugepages         back guest RAM with transparent huge pages\n"
	"  --verbose           log VM set-up and exits\n"
	"  --seccomp MODE      per-thread syscall filters: kill (default: a forbidden\n"
	"                      syscall is logged and ends the VMM by SIGSYS), log (the\n"
	"                      kernel logs it and lets it through), off\n"
	"Every PATH, FILE and SOCKET above may be fd:N instead: an inherited descriptor\n"
	"(N >= 3) the VMM takes over; --console fd:N may be a directory, in which it\n"
	"writes console.log (docs/vmm.md).\n"
	"  --jail-root DIR     enter the jail before the VM exists (docs/security.md): DIR, an\n"
	"                      empty directory, becomes / (read-only); new mount, PID, IPC, UTS\n"
	"                      and network namespaces; with --jail-uid and --jail-gid (non-zero):\n"
	"                      those ids, no capabilities, no new privileges\n"
	"  --jail-cgroup DIR   join this cgroup v2 directory first\n"
	"  --jail-fsize BYTES  RLIMIT_FSIZE in the jail (default 64 GiB)\n"
	"  --jail-nofile N     RLIMIT_NOFILE in the jail, 64..1048576 (default 4096)\n"
	"\n"
	"       vmm --args-from FD TITLE\n"
	"A spare (lib/spare_args.h): loads, then waits on the unix socket FD for the\n"
	"command line above and the descriptors it names, and runs as if started with\n"
	"them; /proc/PID/cmdline shows them over TITLE. It exits 0 if FD closes first.\n"
	"Exit status: 0 guest ended (reboot, shutdown) or stop requested; 1 VMM error;\n"
	"2 invalid configuration; 3 kernel image rejected; 4 guest kernel panic;\n"
	"5 guest crashed (triple fault or unrecoverable CPU state); 6 boot timeout.\n";

void vmm_config_init(struct vmm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->cpus = 1;
	cfg->memory_mib = 128;
	cfg->console = VMM_CONSOLE_STDOUT;
	cfg->console_max_bytes = VMM_CONSOLE_MAX_BYTES_DEFAULT;
	cfg->vsock_cid = 3;
	cfg->kernel_fd = cfg->initrd_fd = cfg->kvm_fd = cfg->console_fd = -1;
	cfg->control_fd = cfg->vsock_fd = cfg->net_policy_fd = cfg->net_tap_fd = -1;
	cfg->restore_state_fd = cfg->restore_memory_fd = cfg->restore_memory_key_fd = -1;
	/* Locally administered, unicast: the default when --net gives no mac. */
	memcpy(cfg->net_mac, (const uint8_t[6]){0x02, 0x53, 0x56, 0x00, 0x00, 0x02}, 6);
}

void vmm_config_destroy(struct vmm_config *cfg)
{
	if (cfg->fds_taken) {
		int fds[VMM_MAX_DRIVES + 11];
		unsigned n = vmm_config_fds(cfg, fds, sizeof(fds) / sizeof(fds[0]));

		for (unsigned i = 0; i < n; i++)
			close(fds[i]);
	}
	for (unsigned i = 0; i < cfg->ndrives; i++) {
		free(cfg->drives[i].path);
		free(cfg->drives[i].serial);
	}
	free(cfg->kernel);
	free(cfg->initrd);
	free(cfg->kvm);
	free(cfg->cmdline);
	free(cfg->console_path);
	free(cfg->control_path);
	free(cfg->vsock_path);
	free(cfg->net_tap);
	free(cfg->net_policy);
	free(cfg->restore_state);
	free(cfg->restore_memory);
	free(cfg->restore_memory_key);
	OPENSSL_cleanse(cfg->memory_key, sizeof(cfg->memory_key));
	vmm_jail_config_destroy(&cfg->jail);
	memset(cfg, 0, sizeof(*cfg));
}

static int set_string(char **field, const char *value)
{
	char *copy = strdup(value);

	if (!copy)
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

/* A path, or "fd:N" (its descriptor into *fd; -1 for a path). */
static int set_path(const char *flag, char **field, int *fd, const char *value, char *err, size_t errlen)
{
	int n = -1, r;

	if (fd_spec_is(value)) {
		r = fd_spec_parse(flag, value, &n, err, errlen);
		if (r < 0)
			return r;
	} else if (!*value) {
		return sv_errf(-EINVAL, err, errlen, "%s: empty path", flag);
	}
	r = set_string(field, value);
	if (r == 0)
		*fd = n;
	return r;
}

static int set_console(struct vmm_config *cfg, const char *value, char *err,
		       size_t errlen)
{
	if (!*value)
		return sv_errf(-EINVAL, err, errlen, "console: empty value (use stdout, none or a file path)");
	if (strcmp(value, "stdout") == 0) {
		cfg->console = VMM_CONSOLE_STDOUT;
		return 0;
	}
	if (strcmp(value, "none") == 0) {
		cfg->console = VMM_CONSOLE_NONE;
		return 0;
	}
	cfg->console = VMM_CONSOLE_FILE;
	return set_path("console", &cfg->console_path, &cfg->console_fd, value, err, errlen);
}

static int set_number(const char *name, const char *text, uint64_t min, uint64_t max,
		      uint64_t *out, char *err, size_t errlen)
{
	int r = sv_parse_u64(text, min, max, out);

	if (r == -EINVAL)
		return sv_errf(-EINVAL, err, errlen, "%s: '%s' is not a whole number", name, text);
	if (r == -ERANGE)
		return sv_errf(-EINVAL, err, errlen, "%s: %s is out of range (%llu..%llu)", name, text,
			    (unsigned long long)min, (unsigned long long)max);
	return r;
}

static int check_serial(const char *serial, char *err, size_t errlen)
{
	size_t n = strlen(serial);

	if (n == 0 || n > VMM_MAX_SERIAL)
		return sv_errf(-EINVAL, err, errlen, "drive: serial must be 1..%u bytes", VMM_MAX_SERIAL);
	for (size_t i = 0; i < n; i++)
		if (serial[i] < 0x21 || serial[i] > 0x7e)
			return sv_errf(-EINVAL, err, errlen, "drive: serial must be printable ASCII without spaces");
	return 0;
}

/* path NULL: a spare, which needs a serial (the control socket finds it by that). */
static int add_drive(struct vmm_config *cfg, const char *path, bool read_only,
		     const char *serial, char *err, size_t errlen)
{
	struct vmm_drive *d;
	int r, fd = -1;

	if (cfg->ndrives == VMM_MAX_DRIVES)
		return sv_errf(-EINVAL, err, errlen, "drive: at most %u drives", VMM_MAX_DRIVES);
	if (path && !*path)
		return sv_errf(-EINVAL, err, errlen, "drive: empty path");
	if (fd_spec_is(path)) {
		r = fd_spec_parse("drive", path, &fd, err, errlen);
		if (r < 0)
			return r;
	}
	if (!path && !serial)
		return sv_errf(-EINVAL, err, errlen, "spare-drive: a spare drive needs a serial");
	if (serial) {
		r = check_serial(serial, err, errlen);
		if (r < 0)
			return r;
	}
	d = &cfg->drives[cfg->ndrives];
	d->spare = !path;
	d->fd = fd;
	d->path = path ? strdup(path) : NULL;
	d->serial = serial ? strdup(serial) : NULL;
	if ((path && !d->path) || (serial && !d->serial)) {
		free(d->path);
		free(d->serial);
		d->path = d->serial = NULL;
		return -ENOMEM;
	}
	d->read_only = read_only;
	cfg->ndrives++;
	return 0;
}

/* --vsock SOCKET[,cid=N] */
static int parse_vsock(struct vmm_config *cfg, const char *spec, char *err, size_t errlen)
{
	char *copy = strdup(spec), *rest, *opt, *path;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	rest = copy;
	path = strsep(&rest, ",");
	while (r == 0 && (opt = strsep(&rest, ","))) {
		if (strncmp(opt, "cid=", 4) == 0)
			r = set_number("vsock cid", opt + 4, 3, 0xfffffffe, &cfg->vsock_cid, err,
				       errlen);
		else
			r = sv_errf(-EINVAL, err, errlen, "vsock: unknown option '%s' (known: cid=N)", opt);
	}
	if (r == 0 && !*path)
		r = sv_errf(-EINVAL, err, errlen, "vsock: empty socket path");
	if (r == 0)
		r = set_path("vsock", &cfg->vsock_path, &cfg->vsock_fd, path, err, errlen);
	free(copy);
	return r;
}

/* aa:bb:cc:dd:ee:ff, unicast (the guest must not own a group address). */
static int parse_mac(const char *s, uint8_t mac[6], char *err, size_t errlen)
{
	unsigned v[6];
	char tail;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6 ||
	    strlen(s) != 17)
		return sv_errf(-EINVAL, err, errlen, "net: mac '%s' is not aa:bb:cc:dd:ee:ff", s);
	if (v[0] & 1)
		return sv_errf(-EINVAL, err, errlen, "net: mac '%s' is a multicast address", s);
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return 0;
}

/* --net tap=NAME[,mac=MAC] */
static int parse_net(struct vmm_config *cfg, const char *spec, char *err, size_t errlen)
{
	char *copy = strdup(spec), *rest, *opt;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	rest = copy;
	while (r == 0 && (opt = strsep(&rest, ","))) {
		if (strncmp(opt, "tap=", 4) == 0 && opt[4] && strlen(opt + 4) < 16 && cfg->net_tap_fd < 0) {
			r = set_string(&cfg->net_tap, opt + 4);
		} else if (strncmp(opt, "tapfd=", 6) == 0 && !cfg->net_tap) {
			char fd_text[32];

			snprintf(fd_text, sizeof(fd_text), FD_SPEC_PREFIX "%.20s", opt + 6);
			r = fd_spec_parse("net tapfd", fd_text, &cfg->net_tap_fd, err, errlen);
		}
		else if (strncmp(opt, "mac=", 4) == 0)
			r = parse_mac(opt + 4, cfg->net_mac, err, errlen);
		else
			r = sv_errf(-EINVAL, err, errlen,
				    "net: bad option '%s' (known: tap=NAME (< 16 bytes) or tapfd=N, mac=MAC)", opt);
	}
	if (r == 0 && !vmm_config_has_net(cfg))
		r = sv_errf(-EINVAL, err, errlen, "net: tap=NAME or tapfd=N is required");
	free(copy);
	return r;
}

/* --drive PATH[,ro][,serial=ID] */
static int parse_drive_flag(struct vmm_config *cfg, const char *spec, char *err, size_t errlen)
{
	char *copy = strdup(spec), *rest, *opt, *path;
	const char *serial = NULL;
	bool ro = false;
	int r;

	if (!copy)
		return -ENOMEM;
	/* strsep keeps empty fields, so ",ro" is an empty path, not a path "ro". */
	rest = copy;
	path = strsep(&rest, ",");
	while ((opt = strsep(&rest, ","))) {
		if (strcmp(opt, "ro") == 0) {
			ro = true;
		} else if (strncmp(opt, "serial=", 7) == 0) {
			serial = opt + 7;
		} else {
			r = sv_errf(-EINVAL, err, errlen, "drive: unknown option '%s' (known: ro, serial=ID)", opt);
			goto out;
		}
	}
	r = add_drive(cfg, path, ro, serial, err, errlen);
out:
	free(copy);
	return r;
}

static int parse_json_drives(struct vmm_config *cfg, const cJSON *arr, char *err, size_t errlen)
{
	const cJSON *d;

	if (!cJSON_IsArray(arr))
		return sv_errf(-EINVAL, err, errlen, "config: drives must be an array");
	cJSON_ArrayForEach(d, arr) {
		const cJSON *f, *path = NULL, *serial = NULL;
		bool ro = false, spare = false;
		int r;

		if (!cJSON_IsObject(d))
			return sv_errf(-EINVAL, err, errlen, "config: each drive must be an object");
		cJSON_ArrayForEach(f, d) {
			if (strcmp(f->string, "path") == 0 && cJSON_IsString(f))
				path = f;
			else if (strcmp(f->string, "serial") == 0 && cJSON_IsString(f))
				serial = f;
			else if (strcmp(f->string, "read_only") == 0 && cJSON_IsBool(f))
				ro = cJSON_IsTrue(f);
			else if (strcmp(f->string, "spare") == 0 && cJSON_IsBool(f))
				spare = cJSON_IsTrue(f);
			else
				return sv_errf(-EINVAL, err, errlen,
					    "config: drive field '%s' is unknown or of the wrong type",
					    f->string);
		}
		if (!path == !spare)
			return sv_errf(-EINVAL, err, errlen, "config: a drive has no \"path\" (or it is a \"spare\", not both)");
		r = add_drive(cfg, path ? path->valuestring : NULL, ro, serial ? serial->valuestring : NULL, err,
			      errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

/* --restore DIR: the two files a snapshot op writes there. */
static int set_restore_dir(struct vmm_config *cfg, const char *dir, char *err, size_t errlen)
{
	char path[4096];
	int r;

	if (!*dir || fd_spec_is(dir))
		return sv_errf(-EINVAL, err, errlen, "restore: a directory path is needed (descriptors: "
			       "--restore-state fd:N --restore-memory fd:M)");
	if (snprintf(path, sizeof(path), "%s/memory", dir) >= (int)sizeof(path))
		return sv_errf(-EINVAL, err, errlen, "restore: directory path too long");
	r = set_path("restore", &cfg->restore_memory, &cfg->restore_memory_fd, path, err, errlen);
	snprintf(path, sizeof(path), "%s/state", dir);
	return r < 0 ? r : set_path("restore", &cfg->restore_state, &cfg->restore_state_fd, path, err, errlen);
}

/* One setter for flags and JSON alike, so both accept exactly the same values. */
static int apply_field(struct vmm_config *cfg, const char *name, const char *value,
		       char *err, size_t errlen)
{
	uint64_t n;
	int r;

	r = vmm_jail_config_set(&cfg->jail, name, value, err, errlen);
	if (r != -ENOENT)
		return r;
	if (strcmp(name, "kernel") == 0)
		return set_path("kernel", &cfg->kernel, &cfg->kernel_fd, value, err, errlen);
	if (strcmp(name, "initrd") == 0)
		return set_path("initrd", &cfg->initrd, &cfg->initrd_fd, value, err, errlen);
	if (strcmp(name, "kvm") == 0)
		return set_path("kvm", &cfg->kvm, &cfg->kvm_fd, value, err, errlen);
	if (strcmp(name, "cmdline") == 0)
		return set_string(&cfg->cmdline, value);
	if (strcmp(name, "control") == 0)
		return set_path("control", &cfg->control_path, &cfg->control_fd, value, err, errlen);
	if (strcmp(name, "console") == 0)
		return set_console(cfg, value, err, errlen);
	if (strcmp(name, "seccomp") == 0) {
		if (vmm_seccomp_mode_parse(value, &cfg->seccomp) < 0)
			return sv_errf(-EINVAL, err, errlen, "seccomp: '%s' is not kill, log or off", value);
		return 0;
	}
	if (strcmp(name, "cpus") == 0) {
		r = set_number("cpus", value, 1, VMM_MAX_CPUS, &n, err, errlen);
		if (r == 0)
			cfg->cpus = (uint32_t)n;
		return r;
	}
	if (strcmp(name, "memory") == 0 || strcmp(name, "memory_mib") == 0) {
		r = set_number("memory", value, VMM_MIN_MEMORY_MIB, VMM_MAX_MEMORY_MIB, &n,
			       err, errlen);
		if (r == 0)
			cfg->memory_mib = n;
		return r;
	}
	if (strcmp(name, "console-max-bytes") == 0 || strcmp(name, "console_max_bytes") == 0) {
		r = set_number("console-max-bytes", value, VMM_CONSOLE_MAX_BYTES_MIN, VMM_CONSOLE_MAX_BYTES_MAX, &n,
			       err, errlen);
		if (r == 0)
			cfg->console_max_bytes = n;
		return r;
	}
	if (strcmp(name, "boot-timeout") == 0 || strcmp(name, "boot_timeout_s") == 0) {
		r = set_number("boot-timeout", value, 0, VMM_MAX_BOOT_TIMEOUT_S, &n, err,
			       errlen);
		if (r == 0)
			cfg->boot_timeout_s = (uint32_t)n;
		return r;
	}
	return sv_errf(-EINVAL, err, errlen, "unknown option '%s'", name);
}

static int json_field_to_text(const cJSON *item, char *buf, size_t buflen, const char **text)
{
	if (cJSON_IsString(item)) {
		*text = item->valuestring;
		return 0;
	}
	if (cJSON_IsNumber(item)) {
		double d = item->valuedouble;

		/* Reject fractions and negatives here; ranges are checked by the setter. */
		if (d < 0 || d > 9007199254740992.0 || d != (double)(uint64_t)d)
			return -EINVAL;
		snprintf(buf, buflen, "%llu", (unsigned long long)(uint64_t)d);
		*text = buf;
		return 0;
	}
	return -EINVAL;
}

static bool is_numeric_field(const char *name)
{
	bool numeric;

	if (vmm_jail_is_json_field(name, &numeric))
		return numeric;
	return strcmp(name, "cpus") == 0 || strcmp(name, "memory_mib") == 0 ||
	       strcmp(name, "boot_timeout_s") == 0 || strcmp(name, "console_max_bytes") == 0;
}

static bool is_json_field(const char *name)
{
	static const char *const fields[] = {
		"kernel", "initrd", "cmdline", "console", "control", "cpus",
		"memory_mib", "boot_timeout_s", "hugepages", "verbose", "drives", "vsock",
		"console_max_bytes", "seccomp", "kvm",
	};
	bool numeric;

	if (vmm_jail_is_json_field(name, &numeric))
		return true;

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (strcmp(name, fields[i]) == 0)
			return true;
	return false;
}

int vmm_config_parse_json(struct vmm_config *cfg, const char *text, size_t len,
			  char *err, size_t errlen)
{
	const cJSON *item;
	cJSON *root;
	int r = 0;

	root = cJSON_ParseWithLength(text, len);
	if (!root)
		return sv_errf(-EINVAL, err, errlen, "config: not valid JSON (near byte %td)",
			    cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : (ptrdiff_t)0);
	if (!cJSON_IsObject(root)) {
		r = sv_errf(-EINVAL, err, errlen, "config: top level must be a JSON object");
		goto out;
	}
	cJSON_ArrayForEach(item, root) {
		char numbuf[32];
		const char *value;

		if (!item->string || !is_json_field(item->string)) {
			r = sv_errf(-EINVAL, err, errlen, "config: unknown field '%s'",
				 item->string ? item->string : "");
			goto out;
		}
		if (strcmp(item->string, "vsock") == 0) {
			const cJSON *sock = cJSON_GetObjectItemCaseSensitive(item, "socket");
			const cJSON *cid = cJSON_GetObjectItemCaseSensitive(item, "cid");

			if (!cJSON_IsObject(item) || !cJSON_IsString(sock) ||
			    cJSON_GetArraySize(item) != 1 + (cid != NULL) ||
			    (cid && (!cJSON_IsNumber(cid) || cid->valuedouble < 3 ||
				     cid->valuedouble > 4294967294.0 ||
				     cid->valuedouble != (double)(uint64_t)cid->valuedouble))) {
				r = sv_errf(-EINVAL, err, errlen, "config: vsock must be {\"socket\": PATH, "
						      "\"cid\": 3..4294967294}");
				goto out;
			}
			r = set_path("vsock", &cfg->vsock_path, &cfg->vsock_fd, sock->valuestring, err, errlen);
			if (r < 0)
				goto out;
			if (cid)
				cfg->vsock_cid = (uint64_t)cid->valuedouble;
			continue;
		}
		if (strcmp(item->string, "drives") == 0) {
			r = parse_json_drives(cfg, item, err, errlen);
			if (r < 0)
				goto out;
			continue;
		}
		if (strcmp(item->string, "hugepages") == 0 ||
		    strcmp(item->string, "verbose") == 0) {
			if (!cJSON_IsBool(item)) {
				r = sv_errf(-EINVAL, err, errlen, "config: %s must be true or false", item->string);
				goto out;
			}
			if (item->string[0] == 'h')
				cfg->hugepages = cJSON_IsTrue(item);
			else
				cfg->verbose = cJSON_IsTrue(item);
			continue;
		}
		if (is_numeric_field(item->string) ? !cJSON_IsNumber(item) : !cJSON_IsString(item)) {
			r = sv_errf(-EINVAL, err, errlen, "config: %s must be a %s", item->string,
				 is_numeric_field(item->string) ? "non-negative whole number"
								: "string");
			goto out;
		}
		if (json_field_to_text(item, numbuf, sizeof(numbuf), &value) < 0) {
			r = sv_errf(-EINVAL, err, errlen, "config: %s must be a non-negative whole number",
				 item->string);
			goto out;
		}
		r = apply_field(cfg, item->string, value, err, errlen);
		if (r < 0)
			goto out;
	}
out:
	cJSON_Delete(root);
	return r;
}

static int load_json_file(struct vmm_config *cfg, const char *path, char *err, size_t errlen)
{
	char *buf = NULL;
	struct stat st;
	ssize_t n;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sv_errf(-EINVAL, err, errlen, "config: cannot open '%s': %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_FILE_MAX) {
		r = sv_errf(-EINVAL, err, errlen, "config: '%s' is not a regular file of at most 1 MiB", path);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	n = read(fd, buf, (size_t)st.st_size);
	if (n != st.st_size) {
		r = sv_errf(-EINVAL, err, errlen, "config: cannot read '%s'", path);
		goto out;
	}
	buf[n] = '\0';
	r = vmm_config_parse_json(cfg, buf, (size_t)n, err, errlen);
out:
	free(buf);
	close(fd);
	return r;
}

/* Splits "--name=value" / "--name value"; returns the value or NULL. */
static const char *option_value(int argc, char **argv, int *i, const char *arg,
				char *name, size_t namelen)
{
	const char *eq = strchr(arg, '=');
	size_t n = eq ? (size_t)(eq - arg) : strlen(arg);

	if (n >= namelen)
		n = namelen - 1;
	memcpy(name, arg, n);
	name[n] = '\0';
	if (eq)
		return eq + 1;
	if (*i + 1 < argc)
		return argv[++*i];
	return NULL;
}

int vmm_config_parse_args(struct vmm_config *cfg, int argc, char **argv,
			  enum vmm_config_action *action, char *err, size_t errlen)
{
	char name[64];
	int i, r;

	*action = VMM_CONFIG_RUN;
	/* First pass: the config file, so that flags override it wherever they stand. */
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 || strncmp(argv[i], "--config=", 9) == 0) {
			const char *v = option_value(argc, argv, &i, argv[i] + 2, name, sizeof(name));

			if (!v)
				return sv_errf(-EINVAL, err, errlen, "--config needs a file path");
			r = load_json_file(cfg, v, err, errlen);
			if (r < 0)
				return r;
		}
	}
	for (i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *value;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			*action = VMM_CONFIG_HELP;
			return 0;
		}
		if (strcmp(arg, "--version") == 0) {
			*action = VMM_CONFIG_VERSION;
			return 0;
		}
		if (strcmp(arg, "--hugepages") == 0) {
			cfg->hugepages = true;
			continue;
		}
		if (strcmp(arg, "--verbose") == 0) {
			cfg->verbose = true;
			continue;
		}
		if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
			return sv_errf(-EINVAL, err, errlen, "unexpected argument '%s'", arg);
		value = option_value(argc, argv, &i, arg + 2, name, sizeof(name));
		if (strcmp(name, "config") == 0)
			continue;
		if (strcmp(name, "memory_mib") == 0 || strcmp(name, "boot_timeout_s") == 0 ||
		    strcmp(name, "console_max_bytes") == 0 || strncmp(name, "jail_", 5) == 0)
			return sv_errf(-EINVAL, err, errlen, "unknown option '--%s'", name);
		if (!value)
			return sv_errf(-EINVAL, err, errlen, "--%s needs a value", name);
		if (strcmp(name, "vsock") == 0) {
			r = parse_vsock(cfg, value, err, errlen);
			if (r < 0)
				return r;
			continue;
		}
		if (strcmp(name, "net") == 0) {
			r = parse_net(cfg, value, err, errlen);
			if (r < 0)
				return r;
			continue;
		}
		if (strcmp(name, "net-policy") == 0) {
			r = set_path("net-policy", &cfg->net_policy, &cfg->net_policy_fd, value, err, errlen);
			if (r < 0)
				return r;
			continue;
		}
		if (strcmp(name, "restore") == 0) {
			r = set_restore_dir(cfg, value, err, errlen);
			if (r < 0)
				return r;
			continue;
		}
		if (strcmp(name, "restore-memory-key") == 0) {
			r = set_path(name, &cfg->restore_memory_key, &cfg->restore_memory_key_fd, value, err, errlen);
			if (r < 0)
				return r;
			continue;
		}
		if (strcmp(name, "restore-state") == 0 || strcmp(name, "restore-memory") == 0) {
			bool state = strcmp(name, "restore-state") == 0;

			r = set_path(name, state ? &cfg->restore_state : &cfg->restore_memory,
				     state ? &cfg->restore_state_fd : &cfg->restore_memory_fd, value, err, errlen);
			if (r < 0)
				return r;
			continue;
		}
		if (strcmp(name, "spare-drive") == 0) {
			r = add_drive(cfg, NULL, false, value, err, errlen);
			if (r < 0)
				return r;
			continue;
		}
		if (strcmp(name, "drive") == 0) {
			r = parse_drive_flag(cfg, value, err, errlen);
			if (r < 0)
				return r;
			continue;
		}
		r = apply_field(cfg, name, value, err, errlen);
		if (r < 0) {
			if (strncmp(err, "unknown option", 14) == 0)
				return sv_errf(-EINVAL, err, errlen, "unknown option '--%s' (see --help)", name);
			return r;
		}
	}
	return 0;
}

static int check_readable_file(const char *what, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return sv_errf(-EINVAL, err, errlen, "%s '%s': %s", what, path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return sv_errf(-EINVAL, err, errlen, "%s '%s': not a regular file", what, path);
	if (access(path, R_OK) < 0)
		return sv_errf(-EINVAL, err, errlen, "%s '%s': %s", what, path, strerror(errno));
	if (st.st_size == 0)
		return sv_errf(-EINVAL, err, errlen, "%s '%s': file is empty", what, path);
	return 0;
}

int vmm_config_validate(const struct vmm_config *cfg, char *err, size_t errlen)
{
	int r;

	if (!cfg->restore_state != !cfg->restore_memory)
		return sv_errf(-EINVAL, err, errlen, "restore: --restore-state and --restore-memory go together");
	if (cfg->restore_memory_key && !cfg->restore_memory)
		return sv_errf(-EINVAL, err, errlen, "restore: --restore-memory-key needs a snapshot to restore "
			       "(--restore, or --restore-state and --restore-memory)");
	if (cfg->restore_memory_key && cfg->restore_memory_key_fd < 0) {
		r = check_readable_file("restore memory key", cfg->restore_memory_key, err, errlen);
		if (r < 0)
			return r;
	}
	if (cfg->restore_state) {
		r = cfg->restore_state_fd >= 0 ? 0 : check_readable_file("restore state", cfg->restore_state, err, errlen);
		if (r == 0 && cfg->restore_memory_fd < 0)
			r = check_readable_file("restore memory", cfg->restore_memory, err, errlen);
		if (r < 0)
			return r;
	} else if (!cfg->kernel || !*cfg->kernel) {
		return sv_errf(-EINVAL, err, errlen, "no kernel given (--kernel PATH)");
	}
	r = cfg->kernel_fd >= 0 || !cfg->kernel ? 0 : check_readable_file("kernel", cfg->kernel, err, errlen);
	if (r < 0)
		return r;
	if (cfg->initrd && cfg->initrd_fd < 0) {
		r = check_readable_file("initrd", cfg->initrd, err, errlen);
		if (r < 0)
			return r;
	}
	for (unsigned i = 0; i < cfg->ndrives; i++) {
		const struct vmm_drive *d = &cfg->drives[i];
		struct stat st;

		if (d->spare || d->fd >= 0)
			continue;
		if (stat(d->path, &st) < 0)
			return sv_errf(-EINVAL, err, errlen, "drive '%s': %s", d->path, strerror(errno));
		if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
			return sv_errf(-EINVAL, err, errlen, "drive '%s': not a regular file or block device",
				    d->path);
		if (access(d->path, d->read_only ? R_OK : R_OK | W_OK) < 0)
			return sv_errf(-EINVAL, err, errlen, "drive '%s': %s%s", d->path, strerror(errno),
				    d->read_only ? "" : " (add ,ro for a read-only drive)");
	}
	if (cfg->cpus < 1 || cfg->cpus > VMM_MAX_CPUS)
		return sv_errf(-EINVAL, err, errlen, "cpus: %u is out of range (1..%u)", cfg->cpus, VMM_MAX_CPUS);
	if (cfg->memory_mib < VMM_MIN_MEMORY_MIB || cfg->memory_mib > VMM_MAX_MEMORY_MIB)
		return sv_errf(-EINVAL, err, errlen, "memory: %llu MiB is out of range (%u..%u)",
			    (unsigned long long)cfg->memory_mib, VMM_MIN_MEMORY_MIB,
			    VMM_MAX_MEMORY_MIB);
	if (cfg->control_fd < 0 && cfg->control_path && !*cfg->control_path)
		return sv_errf(-EINVAL, err, errlen, "control: empty socket path");
	if (cfg->vsock_fd < 0 && cfg->vsock_path && strlen(cfg->vsock_path) >= 96)
		return sv_errf(-EINVAL, err, errlen, "vsock: socket path longer than 95 bytes");
	if (cfg->control_fd < 0 && cfg->control_path && strlen(cfg->control_path) >= 108)
		return sv_errf(-EINVAL, err, errlen, "control: socket path longer than 107 bytes");
	/* A network device never runs unfiltered: no policy, no device. */
	if (vmm_config_has_net(cfg) && !cfg->net_policy)
		return sv_errf(-EINVAL, err, errlen, "net: --net needs --net-policy FILE (the egress firewall policy)");
	if (cfg->net_policy && !vmm_config_has_net(cfg))
		return sv_errf(-EINVAL, err, errlen, "net: --net-policy without --net");
	return vmm_jail_config_validate(&cfg->jail, err, errlen);
}

unsigned vmm_config_fds(const struct vmm_config *cfg, int *fds, unsigned max)
{
	const int one[] = { cfg->kernel_fd, cfg->initrd_fd, cfg->kvm_fd,
			    cfg->console == VMM_CONSOLE_FILE ? cfg->console_fd : -1,
			    cfg->control_fd, cfg->vsock_fd, cfg->net_policy_fd, cfg->net_tap_fd,
			    cfg->restore_state_fd, cfg->restore_memory_fd, cfg->restore_memory_key_fd };
	unsigned n = 0;

	for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++)
		if (one[i] >= 0 && n++ < max)
			fds[n - 1] = one[i];
	for (unsigned i = 0; i < cfg->ndrives; i++)
		if (!cfg->drives[i].spare && cfg->drives[i].fd >= 0 && n++ < max)
			fds[n - 1] = cfg->drives[i].fd;
	return n;
}

/* One flag's descriptor: its kinds and access, then anything more a socket needs. */
static int take_one(const char *flag, int fd, unsigned kinds, enum fd_spec_access access, bool listener,
		    char *err, size_t errlen)
{
	int r;

	if (fd < 0)
		return 0;
	r = fd_spec_take(flag, fd, kinds, access, err, errlen);
	if (r == 0 && listener)
		r = fd_spec_check_listener(flag, fd, err, errlen);
	return r;
}

int vmm_config_take_fds(struct vmm_config *cfg, char *err, size_t errlen)
{
	int fds[VMM_MAX_DRIVES + 11];
	unsigned n = vmm_config_fds(cfg, fds, sizeof(fds) / sizeof(fds[0]));
	int r;

	/* One descriptor for two resources would be closed, or moved, under the other. */
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = i + 1; j < n; j++)
			if (fds[i] == fds[j])
				return sv_errf(-EINVAL, err, errlen, "descriptor %d is named by two flags", fds[i]);
	r = take_one("kernel", cfg->kernel_fd, FD_SPEC_REG, FD_SPEC_READ, false, err, errlen);
	if (r == 0)
		r = take_one("initrd", cfg->initrd_fd, FD_SPEC_REG, FD_SPEC_READ, false, err, errlen);
	if (r == 0)
		r = take_one("kvm", cfg->kvm_fd, FD_SPEC_CHR, FD_SPEC_RDWR, false, err, errlen);
	if (r == 0 && cfg->console == VMM_CONSOLE_FILE)
		r = take_one("console", cfg->console_fd, FD_SPEC_DIR, FD_SPEC_ANY, false, err, errlen) == 0
			    ? 0
			    : take_one("console", cfg->console_fd, FD_SPEC_REG | FD_SPEC_FIFO | FD_SPEC_SOCK | FD_SPEC_CHR,
				       FD_SPEC_WRITE, false, err, errlen);
	if (r == 0)
		r = take_one("control", cfg->control_fd, FD_SPEC_SOCK, FD_SPEC_ANY, true, err, errlen);
	if (r == 0)
		r = take_one("vsock", cfg->vsock_fd, FD_SPEC_SOCK, FD_SPEC_ANY, true, err, errlen);
	if (r == 0)
		r = take_one("net-policy", cfg->net_policy_fd, FD_SPEC_REG, FD_SPEC_READ, false, err, errlen);
	if (r == 0)
		r = take_one("net tapfd", cfg->net_tap_fd, FD_SPEC_CHR, FD_SPEC_RDWR, false, err, errlen);
	if (r == 0)
		r = take_one("restore-state", cfg->restore_state_fd, FD_SPEC_REG, FD_SPEC_READ, false, err, errlen);
	if (r == 0)
		r = take_one("restore-memory", cfg->restore_memory_fd, FD_SPEC_REG, FD_SPEC_READ, false, err, errlen);
	if (r == 0)
		r = take_one("restore-memory-key", cfg->restore_memory_key_fd, FD_SPEC_REG | FD_SPEC_FIFO, FD_SPEC_READ,
			     false, err, errlen);
	for (unsigned i = 0; r == 0 && i < cfg->ndrives; i++)
		if (!cfg->drives[i].spare)
			r = take_one("drive", cfg->drives[i].fd, FD_SPEC_REG | FD_SPEC_BLK,
				     cfg->drives[i].read_only ? FD_SPEC_READ : FD_SPEC_RDWR, false, err, errlen);
	if (r == 0)
		cfg->fds_taken = true;
	return r;
}

int vmm_config_take_memory_key(struct vmm_config *cfg, char *err, size_t errlen)
{
	int fd, r;

	if (!cfg->restore_memory_key)
		return 0;
	fd = cfg->restore_memory_key_fd >= 0 ? cfg->restore_memory_key_fd
					      : open(cfg->restore_memory_key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return sv_errf(-EINVAL, err, errlen, "snapshot: memory key '%s': %s", cfg->restore_memory_key,
			       strerror(errno));
	r = mem_seal_read_key(fd, cfg->memory_key);
	close(fd);
	cfg->restore_memory_key_fd = -1;
	if (r < 0)
		return sv_errf(-EINVAL, err, errlen, "snapshot: memory key '%s': %s", cfg->restore_memory_key,
			       r == -EINVAL ? "not exactly 32 bytes" : strerror(-r));
	cfg->has_memory_key = true;
	return 0;
}
