/*
 * The anti-spoofing probes (probe_spoof.h). The guest cannot see whether
 * its forged frames left the VMM: the firewall drops them silently and
 * counts them (drop_spoof_ip, drop_spoof_mac), and sandboxd judges these
 * probes from those counters. So each reports "blocked" with "sent N", or
 * "error" when it could not send at all.
 */
#include "probe_spoof.h"

#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SPOOF_SENDS 3
#define DISCARD_PORT 9
#define SPOOF_PAYLOAD "sandvm-isolation-probe spoof\n"
#define RESTORE_TRIES 5

/* A connected UDP socket to the gateway's discard port, and the source address routing chose. */
static int route_to(const struct probe_addr *gw, struct sockaddr_storage *own)
{
	struct sockaddr_storage dst;
	socklen_t len = probe_addr_sockaddr(gw, DISCARD_PORT, &dst), ol = sizeof(*own);
	int fd = socket(gw->family, SOCK_DGRAM | SOCK_CLOEXEC, 0), r;

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)&dst, len) < 0 ||
	    getsockname(fd, (struct sockaddr *)own, &ol) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

static void spoof_ip(const struct probe_spec *s, struct probe_result *r)
{
	uint8_t pkt[20 + 8 + sizeof(SPOOF_PAYLOAD) - 1];
	struct sockaddr_storage own, dst;
	socklen_t dl = probe_addr_sockaddr(&s->addr, DISCARD_PORT, &dst);
	uint32_t src;
	int fd, sent = 0, err = 0;

	fd = route_to(&s->addr, &own);
	if (fd < 0) {
		probe_result_set(r, PROBE_ERROR, "no route to the gateway: %s", strerror(-fd));
		return;
	}
	close(fd);
	/* Any address that is not ours (nor the gateway's): ours with its last bit flipped. */
	src = ((struct sockaddr_in *)&own)->sin_addr.s_addr ^ htonl(1);
	if (src == s->addr.v4.s_addr)
		src ^= htonl(3);
	fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (fd < 0) {
		probe_result_set(r, PROBE_ERROR, "raw socket: %s", strerror(errno));
		return;
	}
	/* IPPROTO_RAW means IP_HDRINCL: the kernel fills in the id and header checksum, nothing else. */
	memset(pkt, 0, sizeof(pkt));
	pkt[0] = 0x45;
	pkt[2] = (uint8_t)(sizeof(pkt) >> 8);
	pkt[3] = (uint8_t)sizeof(pkt);
	pkt[8] = 64;
	pkt[9] = IPPROTO_UDP;
	memcpy(pkt + 12, &src, 4);
	memcpy(pkt + 16, &s->addr.v4.s_addr, 4);
	pkt[21] = DISCARD_PORT; /* source port 9 too; checksum 0: none */
	pkt[23] = DISCARD_PORT;
	pkt[24] = (uint8_t)((sizeof(pkt) - 20) >> 8);
	pkt[25] = (uint8_t)(sizeof(pkt) - 20);
	memcpy(pkt + 28, SPOOF_PAYLOAD, sizeof(SPOOF_PAYLOAD) - 1);
	for (int i = 0; i < SPOOF_SENDS; i++) {
		if (sendto(fd, pkt, sizeof(pkt), MSG_DONTWAIT, (const struct sockaddr *)&dst, dl) == (ssize_t)sizeof(pkt))
			sent++;
		else
			err = errno;
	}
	close(fd);
	if (!sent)
		probe_result_set(r, PROBE_ERROR, "send: %s", strerror(err));
	else
		probe_result_set(r, PROBE_BLOCKED, "sent %d", sent);
}

static bool same_ip(const struct sockaddr *a, const struct sockaddr_storage *b)
{
	if (!a || a->sa_family != b->ss_family)
		return false;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->sa_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
			       sizeof(struct in6_addr));
	return false;
}

/* The interface holding address own: its name into name; 0, -ENOENT, -ELOOP (loopback) or -errno. */
static int interface_of(const struct sockaddr_storage *own, char name[IFNAMSIZ])
{
	struct ifaddrs *ifs, *i;
	int r = -ENOENT;

	if (getifaddrs(&ifs) < 0)
		return -errno;
	for (i = ifs; i; i = i->ifa_next) {
		if (!same_ip(i->ifa_addr, own) || strlen(i->ifa_name) >= IFNAMSIZ)
			continue;
		snprintf(name, IFNAMSIZ, "%s", i->ifa_name);
		r = i->ifa_flags & IFF_LOOPBACK ? -ELOOP : 0;
		break;
	}
	freeifaddrs(ifs);
	return r;
}

static void spoof_mac(const struct probe_spec *s, struct probe_result *r)
{
	struct sockaddr_storage own;
	struct ifreq orig, forged;
	char name[IFNAMSIZ];
	sigset_t all, old;
	int udp, ctl, sent = 0, err = 0, rerr = 0, rc;
	bool restored = false;

	udp = route_to(&s->addr, &own);
	if (udp < 0) {
		probe_result_set(r, PROBE_ERROR, "no route to the gateway: %s", strerror(-udp));
		return;
	}
	rc = interface_of(&own, name);
	if (rc < 0) {
		if (rc == -ELOOP)
			probe_result_set(r, PROBE_ERROR, "the gateway is on the loopback interface");
		else
			probe_result_set(r, PROBE_ERROR, "no interface holds the source address: %s", strerror(-rc));
		close(udp);
		return;
	}
	ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (ctl < 0) {
		probe_result_set(r, PROBE_ERROR, "socket: %s", strerror(errno));
		close(udp);
		return;
	}
	memset(&orig, 0, sizeof(orig));
	memcpy(orig.ifr_name, name, IFNAMSIZ);
	if (ioctl(ctl, SIOCGIFHWADDR, &orig) < 0 || orig.ifr_hwaddr.sa_family != ARPHRD_ETHER) {
		probe_result_set(r, PROBE_ERROR, "%s: no Ethernet MAC address", name);
		goto out;
	}
	forged = orig;
	forged.ifr_hwaddr.sa_data[5] ^= 0x01; /* still unicast, still the same kind of address */
	/* No signal ends the program between the change and its undoing (SIGKILL aside). */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	if (ioctl(ctl, SIOCSIFHWADDR, &forged) < 0) {
		err = errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		probe_result_set(r, PROBE_ERROR, "%s: set MAC: %s", name, strerror(err));
		goto out;
	}
	/* The neighbour cache was flushed by the change: the first datagram makes the guest ARP from the forged MAC. */
	for (int i = 0; i < SPOOF_SENDS; i++) {
		if (send(udp, SPOOF_PAYLOAD, sizeof(SPOOF_PAYLOAD) - 1, MSG_DONTWAIT) >= 0)
			sent++;
		else
			err = errno;
	}
	for (int i = 0; i < RESTORE_TRIES && !restored; i++) {
		if (ioctl(ctl, SIOCSIFHWADDR, &orig) == 0) {
			restored = true;
		} else {
			rerr = errno;
			nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (!restored)
		probe_result_set(r, PROBE_ERROR, "%s: MAC address not restored: %s", name, strerror(rerr));
	else if (!sent)
		probe_result_set(r, PROBE_ERROR, "send: %s", strerror(err));
	else
		probe_result_set(r, PROBE_BLOCKED, "sent %d", sent);
out:
	close(ctl);
	close(udp);
}

void probe_spoof_run(const struct probe_plan *plan, struct probe_result *results)
{
	for (unsigned i = 0; i < plan->count && i < PROBE_SPECS_MAX; i++) {
		const struct probe_spec *s = &plan->specs[i];

		if (s->kind == PROBE_SPOOF_IP)
			spoof_ip(s, &results[i]);
		else if (s->kind == PROBE_SPOOF_MAC)
			spoof_mac(s, &results[i]);
	}
}
