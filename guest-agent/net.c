/*
 * The guest's network, as the host assigned it on the kernel command line:
 *
 *   sandvm.net=ADDR/PREFIX,GATEWAY     IPv4 on eth0 and a default route
 *   sandvm.net6=ADDR/PREFIX,GATEWAY    IPv6 likewise (optional)
 *   sandvm.dns=ADDR                    written to /etc/resolv.conf
 *
 * Without sandvm.net the interface stays down: a sandbox without a network
 * device, or with its network blocked, has nothing to configure. The host's
 * firewall accepts frames only from exactly these addresses, so a guest that
 * changes them later only cuts itself off.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"

#define NET_IFACE "eth0"

/* The kernel's struct in6_ifreq (linux/ipv6.h clashes with netinet/in.h). */
struct agent_in6_ifreq {
	struct in6_addr addr;
	uint32_t prefixlen;
	int ifindex;
};

/* "ADDR/PREFIX,GATEWAY" of family af; false when malformed. */
static bool parse_spec(const char *v, size_t len, int af, void *addr, unsigned *prefix, void *gw)
{
	char buf[128], *slash, *comma, *end;
	unsigned long p;

	if (len >= sizeof(buf))
		return false;
	memcpy(buf, v, len);
	buf[len] = '\0';
	slash = strchr(buf, '/');
	comma = strchr(buf, ',');
	if (!slash || !comma || comma < slash)
		return false;
	*slash = *comma = '\0';
	p = strtoul(slash + 1, &end, 10);
	if (*end || end == slash + 1 || p > (af == AF_INET ? 32u : 128u))
		return false;
	*prefix = (unsigned)p;
	return inet_pton(af, buf, addr) == 1 && inet_pton(af, comma + 1, gw) == 1;
}

static int iface_up(int fd)
{
	struct ifreq ifr = {0};

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), NET_IFACE);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return -errno;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(fd, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
}

static int setup_v4(const struct in_addr *addr, unsigned prefix, const struct in_addr *gw)
{
	struct ifreq ifr = {0};
	struct rtentry rt = {0};
	struct sockaddr_in *sin;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), r = 0;

	if (fd < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), NET_IFACE);
	sin = (struct sockaddr_in *)&ifr.ifr_addr;
	sin->sin_family = AF_INET;
	sin->sin_addr = *addr;
	if (ioctl(fd, SIOCSIFADDR, &ifr) < 0)
		r = -errno;
	sin->sin_addr.s_addr = prefix ? htonl(~0u << (32 - prefix)) : 0;
	if (!r && ioctl(fd, SIOCSIFNETMASK, &ifr) < 0)
		r = -errno;
	if (!r)
		r = iface_up(fd);
	if (!r) {
		sin = (struct sockaddr_in *)&rt.rt_dst;
		sin->sin_family = AF_INET;
		sin = (struct sockaddr_in *)&rt.rt_genmask;
		sin->sin_family = AF_INET;
		sin = (struct sockaddr_in *)&rt.rt_gateway;
		sin->sin_family = AF_INET;
		sin->sin_addr = *gw;
		rt.rt_flags = RTF_UP | RTF_GATEWAY;
		rt.rt_dev = NET_IFACE;
		if (ioctl(fd, SIOCADDRT, &rt) < 0)
			r = -errno;
	}
	close(fd);
	return r;
}

static int setup_v6(const struct in6_addr *addr, unsigned prefix, const struct in6_addr *gw)
{
	struct agent_in6_ifreq ifr6 = {.addr = *addr, .prefixlen = prefix};
	struct in6_rtmsg rt = {0};
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), r = 0;

	if (fd < 0)
		return -errno;
	ifr6.ifindex = (int)if_nametoindex(NET_IFACE);
	if (!ifr6.ifindex)
		r = -ENODEV;
	if (!r && ioctl(fd, SIOCSIFADDR, &ifr6) < 0)
		r = -errno;
	if (!r)
		r = iface_up(fd);
	if (!r) {
		rt.rtmsg_gateway = *gw;
		rt.rtmsg_flags = RTF_UP | RTF_GATEWAY;
		rt.rtmsg_metric = 1;
		rt.rtmsg_ifindex = ifr6.ifindex;
		if (ioctl(fd, SIOCADDRT, &rt) < 0)
			r = -errno;
	}
	close(fd);
	return r;
}

static void write_resolv_conf(const char *v, size_t len)
{
	char ns[64];
	struct in6_addr a6;
	struct in_addr a4;
	FILE *f;

	if (len >= sizeof(ns))
		return;
	memcpy(ns, v, len);
	ns[len] = '\0';
	if (inet_pton(AF_INET, ns, &a4) != 1 && inet_pton(AF_INET6, ns, &a6) != 1) {
		sv_warn("network: sandvm.dns=%s is not an address", ns);
		return;
	}
	f = fopen("/etc/resolv.conf", "we");
	if (!f) {
		sv_warn("network: /etc/resolv.conf: %s", strerror(errno));
		return;
	}
	fprintf(f, "nameserver %s\n", ns);
	fclose(f);
}

void agent_net_setup(const char *cmdline)
{
	const char *v;
	size_t len;
	int r;

	if ((v = agent_cmdline_param(cmdline, "sandvm.net", &len))) {
		struct in_addr addr, gw;
		unsigned prefix;

		if (!parse_spec(v, len, AF_INET, &addr, &prefix, &gw))
			sv_warn("network: sandvm.net=%.*s is not ADDR/PREFIX,GATEWAY", (int)len, v);
		else if ((r = setup_v4(&addr, prefix, &gw)) < 0)
			sv_warn("network: configuring %s: %s", NET_IFACE, strerror(-r));
	}
	if ((v = agent_cmdline_param(cmdline, "sandvm.net6", &len))) {
		struct in6_addr addr, gw;
		unsigned prefix;

		if (!parse_spec(v, len, AF_INET6, &addr, &prefix, &gw))
			sv_warn("network: sandvm.net6=%.*s is not ADDR/PREFIX,GATEWAY", (int)len, v);
		else if ((r = setup_v6(&addr, prefix, &gw)) < 0)
			sv_warn("network: configuring IPv6 on %s: %s", NET_IFACE, strerror(-r));
	}
	if ((v = agent_cmdline_param(cmdline, "sandvm.dns", &len)))
		write_resolv_conf(v, len);
}
