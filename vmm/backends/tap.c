#include "backends/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

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
	/* One queue, no PI header, no vnet header: the device hands over whole frames. */
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(f, TUNSETIFF, &ifr) < 0) {
		r = -errno;
		close(f);
		return r;
	}
	*fd = f;
	return 0;
}

int tap_check_fd(int fd)
{
	struct ifreq ifr;
	int fl;

	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0)
		return errno == EBADFD || errno == ENOTTY || errno == EINVAL ? -EINVAL : -errno;
	if ((ifr.ifr_flags & (IFF_TAP | IFF_TUN)) != IFF_TAP || !(ifr.ifr_flags & IFF_NO_PI) ||
	    (ifr.ifr_flags & IFF_VNET_HDR))
		return -EINVAL;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}
