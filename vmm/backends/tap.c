#include "backends/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* The header size, and no offloads until a driver acknowledges some: the tap may be a reused persistent one. */
static int vnet_setup(int fd)
{
	int sz = TAP_VNET_HDR_LEN;

	if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0 || ioctl(fd, TUNSETOFFLOAD, 0ul) < 0)
		return -errno;
	return 0;
}

int tap_open(const char *name, int *fd)
{
	struct ifreq ifr;
	int f, r;

	if (!name || !*name || strlen(name) >= IFNAMSIZ)
		return -EINVAL;
	f = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (f < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	/* One queue, no PI header; the vnet header carries what offloads need. */
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(f, TUNSETIFF, &ifr) < 0) {
		r = -errno;
		close(f);
		return r;
	}
	r = vnet_setup(f);
	if (r < 0) {
		close(f);
		return r;
	}
	*fd = f;
	return 0;
}

int tap_check_fd(int fd, bool *vnet_hdr)
{
	struct ifreq ifr;
	int fl, r;

	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0)
		return errno == EBADFD || errno == ENOTTY || errno == EINVAL ? -EINVAL : -errno;
	if ((ifr.ifr_flags & (IFF_TAP | IFF_TUN)) != IFF_TAP || !(ifr.ifr_flags & IFF_NO_PI))
		return -EINVAL;
	*vnet_hdr = ifr.ifr_flags & IFF_VNET_HDR;
	if (*vnet_hdr) {
		r = vnet_setup(fd);
		if (r < 0)
			return r;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int tap_set_offload(int fd, unsigned tun_flags)
{
	return ioctl(fd, TUNSETOFFLOAD, (unsigned long)tun_flags) < 0 ? -errno : 0;
}
