/*
 * What the agent does as PID 1 before serving the host: pseudo file
 * systems, console, hostname, loopback, the boot-timer port; and the end of
 * the VM. Everything here is best effort: a sandbox with a missing /dev/shm
 * is still more useful than one whose init gave up.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"

/* The VMM timestamps the first write of this value to this port (docs/vmm.md). */
#define AGENT_BOOT_PORT 0x440
#define AGENT_BOOT_VALUE 0x7b
#define AGENT_DEFAULT_HOSTNAME "sandbox"

static void mount_one(const char *type, const char *dir, unsigned long flags, const char *data)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		sv_warn("mkdir %s: %s", dir, strerror(errno));
		return;
	}
	/* CONFIG_DEVTMPFS_MOUNT may already have put devtmpfs on /dev. */
	if (mount(type, dir, type, flags, data) < 0 && errno != EBUSY)
		sv_warn("mount %s on %s: %s", type, dir, strerror(errno));
}

/*
 * The links udev or systemd make in a usual /dev, which devtmpfs has not:
 * shells and programs open /dev/stdin, /dev/stdout, /dev/stderr and
 * /dev/fd/N (bash's process substitution, `cat /dev/stdin`, CPython's
 * asyncio tests). /dev/ptmx is the devpts one for programs that open it
 * directly (python's pty, script).
 */
static void dev_links(void)
{
	static const char *const links[][2] = {
		{ "/proc/self/fd", "/dev/fd" },
		{ "/proc/self/fd/0", "/dev/stdin" },
		{ "/proc/self/fd/1", "/dev/stdout" },
		{ "/proc/self/fd/2", "/dev/stderr" },
		{ "pts/ptmx", "/dev/ptmx" },
	};

	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		unlink(links[i][1]);
		if (symlink(links[i][0], links[i][1]) < 0)
			sv_warn("%s: %s", links[i][1], strerror(errno));
	}
}

static void mount_all(bool remount_rw)
{
	mount_one("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_one("sysfs", "/sys", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_one("devtmpfs", "/dev", MS_NOSUID, "mode=0755");
	mount_one("devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666");
	mount_one("tmpfs", "/dev/shm", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_one("tmpfs", "/tmp", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_one("tmpfs", "/run", MS_NOSUID | MS_NODEV, "mode=0755");
	/* A root file system from a disk may be mounted read-only by the kernel. */
	if (remount_rw && mount(NULL, "/", NULL, MS_REMOUNT, NULL) < 0 && errno != EINVAL)
		sv_warn("remount / read-write: %s", strerror(errno));
	dev_links();
}

/* The kernel opens /dev/console for init only if the node existed before devtmpfs. */
static void open_console(void)
{
	int fd;

	if (fcntl(STDERR_FILENO, F_GETFD) >= 0)
		return;
	fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

/* Reads a small text file, NUL-terminated; its length, or 0 when unreadable or empty. */
static size_t read_text(const char *path, char *buf, size_t cap)
{
	ssize_t n = -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		n = read(fd, buf, cap - 1);
		close(fd);
	}
	buf[n > 0 ? n : 0] = '\0';
	return n > 0 ? (size_t)n : 0;
}

/* sandvm.hostname= on the kernel command line, else /etc/hostname, else "sandbox". */
static void set_hostname(const char *cmdline)
{
	char buf[4096], name[HOST_NAME_MAX + 1] = AGENT_DEFAULT_HOSTNAME;
	const char *v;
	size_t len;

	if ((v = agent_proto_cmdline_word(cmdline, "sandvm.hostname", &len))) {
		snprintf(name, sizeof(name), "%.*s", (int)len, v);
	} else if (read_text("/etc/hostname", buf, sizeof(buf))) {
		buf[strcspn(buf, " \n")] = '\0';
		if (buf[0])
			snprintf(name, sizeof(name), "%.*s", (int)sizeof(name) - 1, buf);
	}
	if (sethostname(name, strlen(name)) < 0)
		sv_warn("sethostname: %s", strerror(errno));
}

static void loopback_up(void)
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
			sv_warn("loopback up: %s", strerror(errno));
	}
	close(fd);
}

/* Best effort: a VMM without the port ignores the write. */
static void signal_boot(void)
{
	if (ioperm(AGENT_BOOT_PORT, 1, 1) < 0)
		return;
	outb(AGENT_BOOT_VALUE, AGENT_BOOT_PORT);
	ioperm(AGENT_BOOT_PORT, 1, 0);
}

/*
 * sandvm.overlay=1: the root file system is a shared image attached
 * read-only; the sandbox gets an overlay with its writes in memory, then the
 * overlay becomes / (as switch_root does). Nothing reaches the image.
 */
static bool overlay_root(void)
{
	static const char *const dirs[] = { "/run/sandvm", "/run/sandvm/upper", "/run/sandvm/work",
					    "/run/sandvm/root" };

	if (mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0) {
		sv_err("overlay: tmpfs on /run: %s", strerror(errno));
		return false;
	}
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(dirs[i], 0755) < 0) {
			sv_err("overlay: mkdir %s: %s", dirs[i], strerror(errno));
			return false;
		}
	if (mount("overlay", "/run/sandvm/root", "overlay", 0,
		  "lowerdir=/,upperdir=/run/sandvm/upper,workdir=/run/sandvm/work") < 0) {
		sv_err("overlay: mount: %s", strerror(errno));
		return false;
	}
	if (chdir("/run/sandvm/root") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 ||
	    chroot(".") < 0 || chdir("/") < 0) {
		sv_err("overlay: switching root: %s", strerror(errno));
		return false;
	}
	return true;
}

void agent_system_setup(void)
{
	char cmdline[4096];
	const char *v;
	size_t len;
	bool overlay;

	/* /proc first: it is where the command line is read from. */
	mount_one("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	read_text("/proc/cmdline", cmdline, sizeof(cmdline));
	v = agent_proto_cmdline_word(cmdline, "sandvm.overlay", &len);
	overlay = v && len == 1 && v[0] == '1' && overlay_root();
	mount_all(!overlay);
	open_console();
	signal_boot();
	set_hostname(cmdline);
	loopback_up();
	agent_net_setup(cmdline);
	if (chdir("/") < 0)
		sv_warn("chdir /: %s", strerror(errno));
}

/*
 * The VMM has no power-off device: a reset (reboot=k, the i8042 line) is
 * how a VM ends cleanly, so both actions end the VM the same way.
 */
void agent_system_poweroff(uint32_t action)
{
	sync();
	sv_info("%s", action == AGENT_PROTO_REBOOT ? "rebooting" : "powering off");
	/* RB_POWER_OFF without a power-off driver halts, then PID 1 exits: a panic. */
	reboot(RB_AUTOBOOT);
	/* Still here: exiting PID 1 panics, and panic=-1 turns that into a reset. */
	_exit(1);
}

int agent_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
	char tmp[PATH_MAX];
	ssize_t n;
	int fd, r = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.sandvm-tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	n = write(fd, data, len);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != len)
		r = -EIO;
	if (!r && fchmod(fd, mode) < 0)
		r = -errno;
	if (!r && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && !r)
		r = -errno;
	if (!r && rename(tmp, path) < 0)
		r = -errno;
	if (r)
		unlink(tmp);
	return r;
}

uint32_t agent_errno_code(int err)
{
	switch (err) {
	case EPERM:
	case ENOENT:
	case EIO:
	case E2BIG:
	case ENOMEM:
	case EACCES:
	case EBUSY:
	case EEXIST:
	case ENOTDIR:
	case EISDIR:
	case EINVAL:
	case EFBIG:
	case ENOSPC:
	case ENAMETOOLONG:
	case ENOSYS:
	case ENOTEMPTY:
	case EPROTO:
	case ETIMEDOUT:
		/* The protocol's numbers are the Linux ones (agent_proto.h). */
		return (uint32_t)err;
	case EROFS:
		return AGENT_PROTO_EACCES;
	case ELOOP:
		return AGENT_PROTO_EINVAL;
	case EDQUOT:
		return AGENT_PROTO_ENOSPC;
	case ENOEXEC:
		return AGENT_PROTO_EACCES;
	default:
		return AGENT_PROTO_EIO;
	}
}
