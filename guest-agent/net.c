/*
 * The guest's network, as the host assigned it: at boot on the kernel
 * command line, after a restore from a snapshot in the RESTORED request
 * (restore.c). Both go through the same parsing (lib/agent_proto.c) and the
 * same set-up here:
 *
 *   sandvm.net=ADDR/PREFIX,GATEWAY     IPv4 on eth0 and a default route
 *   sandvm.net6=ADDR/PREFIX,GATEWAY    IPv6 likewise (optional)
 *   sandvm.dns=ADDR                    written to /etc/resolv.conf
 *
 * Without an address the interface stays down: a sandbox without a network
 * device, or with its network blocked, has nothing to configure. The host's
 * firewall accepts frames only from exactly these addresses (and, after a
 * restore, the new MAC), so a guest that changes them later only cuts itself
 * off.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include "agent.h"
#include "log.h"

#define NET_IFACE "eth0"
/* A dump of eth0's addresses or routes bigger than this is not a sandbox's. */
#define NET_DUMP_MAX (256u * 1024u)

/* The kernel's struct in6_ifreq (linux/ipv6.h clashes with netinet/in.h). */
struct agent_in6_ifreq {
	struct in6_addr addr;
	uint32_t prefixlen;
	int ifindex;
};

int agent_net_parse(struct agent_net_config *cfg, enum agent_net_field field, const char *v, size_t len)
{
	switch (field) {
	case AGENT_NET_V4:
		if (agent_proto_parse_net(v, len, AF_INET, &cfg->v4))
			return -EINVAL;
		cfg->has_v4 = true;
		return 0;
	case AGENT_NET_V6:
		if (agent_proto_parse_net(v, len, AF_INET6, &cfg->v6))
			return -EINVAL;
		cfg->has_v6 = true;
		return 0;
	case AGENT_NET_MAC:
		if (agent_proto_parse_mac(v, len, cfg->mac))
			return -EINVAL;
		cfg->has_mac = true;
		return 0;
	case AGENT_NET_DNS:
		if (agent_proto_parse_addr(v, len, &cfg->dns_af, cfg->dns))
			return -EINVAL;
		cfg->has_dns = true;
		return 0;
	}
	return -EINVAL;
}

static int iface_flags(int fd, short set, short clear)
{
	struct ifreq ifr = {0};

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), NET_IFACE);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return -errno;
	ifr.ifr_flags = (short)((ifr.ifr_flags | set) & ~clear);
	return ioctl(fd, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
}

static int iface_up(int fd)
{
	return iface_flags(fd, IFF_UP | IFF_RUNNING, 0);
}

static int setup_v4(const struct agent_proto_net *n)
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
	memcpy(&sin->sin_addr, n->addr, 4);
	if (ioctl(fd, SIOCSIFADDR, &ifr) < 0)
		r = -errno;
	sin->sin_addr.s_addr = n->prefix ? htonl(~0u << (32 - n->prefix)) : 0;
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
		memcpy(&sin->sin_addr, n->gw, 4);
		rt.rt_flags = RTF_UP | RTF_GATEWAY;
		rt.rt_dev = NET_IFACE;
		if (ioctl(fd, SIOCADDRT, &rt) < 0)
			r = -errno;
	}
	close(fd);
	return r;
}

static int setup_v6(const struct agent_proto_net *n)
{
	struct agent_in6_ifreq ifr6 = {.prefixlen = n->prefix};
	struct in6_rtmsg rt = {0};
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), r = 0;

	if (fd < 0)
		return -errno;
	memcpy(&ifr6.addr, n->addr, 16);
	ifr6.ifindex = (int)if_nametoindex(NET_IFACE);
	if (!ifr6.ifindex)
		r = -ENODEV;
	if (!r && ioctl(fd, SIOCSIFADDR, &ifr6) < 0)
		r = -errno;
	if (!r)
		r = iface_up(fd);
	if (!r) {
		memcpy(&rt.rtmsg_gateway, n->gw, 16);
		rt.rtmsg_flags = RTF_UP | RTF_GATEWAY;
		rt.rtmsg_metric = 1;
		rt.rtmsg_ifindex = ifr6.ifindex;
		if (ioctl(fd, SIOCADDRT, &rt) < 0)
			r = -errno;
	}
	close(fd);
	return r;
}

/* eth0 down and its MAC replaced (the link must be down for that). */
static int set_down(int fd)
{
	return iface_flags(fd, 0, IFF_UP);
}

static int set_mac(int fd, const uint8_t mac[6])
{
	struct ifreq ifr = {0};

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), NET_IFACE);
	ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
	memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
	return ioctl(fd, SIOCSIFHWADDR, &ifr) < 0 ? -errno : 0;
}

/* Sends one netlink request and waits for its acknowledgement; the kernel's error, or 0. */
static int nl_request(int fd, struct nlmsghdr *req)
{
	char buf[4096];
	ssize_t n;

	req->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	if (send(fd, req, req->nlmsg_len, 0) < 0)
		return -errno;
	n = recv(fd, buf, sizeof(buf), 0);
	if (n < 0)
		return -errno;
	for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n))
		if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr)))
			return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
	return -EPROTO;
}

/* A whole dump of `type` for family AF_UNSPEC into buf; its length, or -errno. */
static ssize_t nl_dump(int fd, uint16_t type, uint8_t *buf, size_t cap)
{
	struct {
		struct nlmsghdr h;
		struct rtgenmsg g;
	} req = {
		.h = { .nlmsg_len = sizeof(req), .nlmsg_type = type, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
		       .nlmsg_seq = 1 },
		.g = { .rtgen_family = AF_UNSPEC },
	};
	size_t used = 0;

	if (send(fd, &req, sizeof(req), 0) < 0)
		return -errno;
	for (;;) {
		ssize_t n;

		if (cap - used < 32768)
			return -E2BIG;
		ssize_t left;

		n = recv(fd, buf + used, cap - used, 0);
		if (n < 0)
			return -errno;
		left = n;
		for (struct nlmsghdr *h = (struct nlmsghdr *)(buf + used); NLMSG_OK(h, (size_t)left);
		     h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return (ssize_t)((uint8_t *)h - buf);
			if (h->nlmsg_type == NLMSG_ERROR)
				return h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr))
					       ? ((struct nlmsgerr *)NLMSG_DATA(h))->error
					       : -EPROTO;
		}
		used += (size_t)n;
	}
}

static int route_oif(struct nlmsghdr *h)
{
	struct rtmsg *rtm = NLMSG_DATA(h);
	int len = (int)RTM_PAYLOAD(h);

	if (rtm->rtm_table != RT_TABLE_MAIN)
		return -1;
	for (struct rtattr *a = RTM_RTA(rtm); RTA_OK(a, len); a = RTA_NEXT(a, len))
		if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) >= sizeof(int))
			return *(int *)RTA_DATA(a);
	return -1;
}

/*
 * Every address on eth0, and every route of the main table through it, is
 * removed: each dumped entry goes back to the kernel as a delete. An entry
 * that vanished meanwhile (a prefix route with its address) is not an error.
 */
static int flush(int ifindex, uint16_t get, uint16_t del, uint8_t *buf)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE), r = 0;
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = nl_dump(fd, get, buf, NET_DUMP_MAX);
	if (n < 0)
		r = (int)n;
	for (struct nlmsghdr *h = (struct nlmsghdr *)buf; !r && NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
		bool mine = h->nlmsg_type == RTM_NEWADDR
				    ? ((struct ifaddrmsg *)NLMSG_DATA(h))->ifa_index == (unsigned)ifindex
				    : h->nlmsg_type == RTM_NEWROUTE && route_oif(h) == ifindex;

		if (!mine)
			continue;
		h->nlmsg_type = del;
		r = nl_request(fd, h);
		if (r == -ESRCH || r == -ENOENT || r == -EADDRNOTAVAIL)
			r = 0;
	}
	close(fd);
	return r;
}

static int write_resolv_conf(const struct agent_net_config *cfg)
{
	char ns[INET6_ADDRSTRLEN], line[INET6_ADDRSTRLEN + 16];
	int n;

	if (!inet_ntop(cfg->dns_af, cfg->dns, ns, sizeof(ns)))
		return -EINVAL;
	n = snprintf(line, sizeof(line), "nameserver %s\n", ns);
	return agent_write_file_atomic("/etc/resolv.conf", line, (size_t)n, 0644);
}

/* Clears what eth0 had: it goes down, takes the new MAC, loses its addresses and routes. */
static int reset_iface(const struct agent_net_config *cfg, const char **step)
{
	int ifindex = (int)if_nametoindex(NET_IFACE);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), r;
	uint8_t *buf;

	*step = "network: " NET_IFACE " down";
	if (fd < 0)
		return -errno;
	r = ifindex ? set_down(fd) : -ENODEV;
	if (!r && cfg->has_mac) {
		*step = "network: setting the MAC of " NET_IFACE;
		r = set_mac(fd, cfg->mac);
	}
	close(fd);
	if (r)
		return r;
	buf = malloc(NET_DUMP_MAX);
	if (!buf)
		return -ENOMEM;
	*step = "network: flushing the addresses of " NET_IFACE;
	r = flush(ifindex, RTM_GETADDR, RTM_DELADDR, buf);
	if (!r) {
		*step = "network: flushing the routes through " NET_IFACE;
		r = flush(ifindex, RTM_GETROUTE, RTM_DELROUTE, buf);
	}
	free(buf);
	return r;
}

int agent_net_apply(const struct agent_net_config *cfg, bool reconfigure, const char **step)
{
	int r = 0, first = 0;
	const char *first_step = NULL;

	/* A resolver alone leaves eth0 as it is. */
	if (reconfigure && (cfg->has_v4 || cfg->has_v6 || cfg->has_mac) && (r = reset_iface(cfg, step)))
		return r;
	/* At boot every part is tried (a sandbox with IPv4 only still beats none); after a restore the first failure ends it. */
	if (cfg->has_v4 && (r = setup_v4(&cfg->v4))) {
		*step = "network: IPv4 address and route on " NET_IFACE;
		if (reconfigure)
			return r;
		sv_warn("%s: %s", *step, strerror(-r));
		first = first ? first : r;
		first_step = first_step ? first_step : *step;
	}
	if (cfg->has_v6 && (r = setup_v6(&cfg->v6))) {
		*step = "network: IPv6 address and route on " NET_IFACE;
		if (reconfigure)
			return r;
		sv_warn("%s: %s", *step, strerror(-r));
		first = first ? first : r;
		first_step = first_step ? first_step : *step;
	}
	if (cfg->has_dns && (r = write_resolv_conf(cfg))) {
		*step = "dns: /etc/resolv.conf";
		if (reconfigure)
			return r;
		sv_warn("%s: %s", *step, strerror(-r));
		first = first ? first : r;
		first_step = first_step ? first_step : *step;
	}
	if (first_step)
		*step = first_step;
	return first;
}

void agent_net_setup(const char *cmdline)
{
	static const struct {
		const char *key;
		enum agent_net_field field;
	} params[] = {
		{ "sandvm.net", AGENT_NET_V4 },
		{ "sandvm.net6", AGENT_NET_V6 },
		{ "sandvm.dns", AGENT_NET_DNS },
	};
	struct agent_net_config cfg = { 0 };
	const char *step;

	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		size_t len;
		const char *v = agent_proto_cmdline_word(cmdline, params[i].key, &len);

		if (v && agent_net_parse(&cfg, params[i].field, v, len))
			sv_warn("network: %s=%.*s is malformed", params[i].key, (int)len, v);
	}
	agent_net_apply(&cfg, false, &step);
}
