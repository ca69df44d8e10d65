/*
 * Sandbox networks: each sandbox with a network gets a persistent tap
 * ("sbxN"), a /30 out of the pool (the host end .1 of it is the gateway, the
 * guest .2; and a /64 of the IPv6 pool likewise), an egress policy file for
 * the VMM's firewall (docs/network.md), and NAT to the outside through one
 * nftables table that sandboxd owns ("inet sandvm"). The tap is removed and
 * the addresses go back to the pool when the VMM is gone.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api_call.h"
#include "cidr.h"
#include "log.h"
#include "net.h"
#include "sandbox.h"
#include "sandbox_part.h"
#include "sandboxd.h"
#include "store.h"
#include "isolation_monitor.h"
#include "vmm_control.h"

#define POOL_BASE 0x0ac80000u /* 10.200.0.0/16: 16383 sandboxes of a /30 each */
#define POOL_PREFIX 16
#define POOL_SIZE SANDBOXD_NET_POOL_SIZE
_Static_assert(POOL_SIZE == (1u << (32 - POOL_PREFIX - 2)), "one /30 per sandbox in the pool");
#define POOL6 "fd53:5356:0:"  /* + index + "::/64" */
#define TAP_PREFIX "sbx"

struct net_in6_ifreq {
	struct in6_addr addr;
	uint32_t prefixlen;
	int ifindex;
};

/* The daemon's address pool: bit i of d->net_pool is the /30 of sandbox network index i. */
static bool pool_take(struct sandboxd *d, unsigned i)
{
	if (i == 0 || i >= POOL_SIZE || (d->net_pool[i / 8] & (1u << (i % 8))))
		return false;
	d->net_pool[i / 8] |= (uint8_t)(1u << (i % 8));
	return true;
}

static void pool_give(struct sandboxd *d, unsigned i)
{
	if (i && i < POOL_SIZE)
		d->net_pool[i / 8] &= (uint8_t)~(1u << (i % 8));
}

static unsigned pool_alloc(struct sandboxd *d)
{
	for (unsigned i = 1; i < POOL_SIZE; i++)
		if (pool_take(d, i))
			return i;
	return 0;
}

static void addr4(unsigned index, unsigned host, char *out, size_t len)
{
	struct in_addr a = {.s_addr = htonl(POOL_BASE + index * 4 + host)};

	inet_ntop(AF_INET, &a, out, (socklen_t)len);
}

static void addr6(unsigned index, unsigned host, char *out, size_t len)
{
	snprintf(out, len, POOL6 "%x::%x", index, host);
}

/* Runs argv with input on stdin; 0 or -EIO with its output in err. */
static int run_tool(char *const argv[], const char *input, char *err, size_t errlen)
{
	int in[2], out[2], status;
	pid_t pid;
	ssize_t n;

	if (pipe2(in, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(out, O_CLOEXEC) < 0) {
		close(in[0]);
		close(in[1]);
		return -errno;
	}
	pid = fork();
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(out[1], 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	if (input && write(in[1], input, strlen(input)) < 0)
		sv_warn("net: writing to %s: %s", argv[0], strerror(errno));
	close(in[1]);
	n = read(out[0], err, errlen - 1);
	err[n > 0 ? n : 0] = '\0';
	close(out[0]);
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

int net_init(struct sandboxd *d)
{
	static const char rules[] =
		"table inet sandvm\n"
		"delete table inet sandvm\n"
		"table inet sandvm {\n"
		"  chain postrouting {\n"
		"    type nat hook postrouting priority srcnat; policy accept;\n"
		"    ip saddr 10.200.0.0/16 oifname != \"" TAP_PREFIX "*\" masquerade\n"
		"    ip6 saddr fd53:5356::/48 oifname != \"" TAP_PREFIX "*\" masquerade\n"
		"  }\n"
		"  chain forward {\n"
		"    type filter hook forward priority filter; policy accept;\n"
		/* Sandboxes never reach each other, whatever their policies say. */
		"    iifname \"" TAP_PREFIX "*\" oifname \"" TAP_PREFIX "*\" drop\n"
		"  }\n"
		"  chain input {\n"
		"    type filter hook input priority filter; policy accept;\n"
		/* The host answers a sandbox's ARP and neighbour discovery, nothing else. */
		"    iifname \"" TAP_PREFIX "*\" icmpv6 type { nd-neighbor-solicit, nd-router-solicit, nd-neighbor-advert } accept\n"
		"    iifname \"" TAP_PREFIX "*\" drop\n"
		"  }\n"
		"}\n";
	char *nft[] = {"nft", "-f", "-", NULL}, out[1024];
	int fd, r;

	if (!d->net_enabled)
		return 0;
	if (access("/dev/net/tun", R_OK | W_OK) < 0 || geteuid() != 0) {
		sv_warn("net: sandboxes get no network (needs root and /dev/net/tun)");
		d->net_enabled = false;
		return 0;
	}
	r = run_tool(nft, rules, out, sizeof(out));
	if (r < 0) {
		sv_err("net: installing the nftables table inet sandvm failed: %s", out);
		d->net_enabled = false;
		return 0;
	}
	/* Forwarding is what NAT needs; sandboxd turns it on for the host (docs/network.md). */
	fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1\n", 2) != 2)
			sv_warn("net: cannot enable IPv4 forwarding");
		close(fd);
	}
	fd = open("/proc/sys/net/ipv6/conf/all/forwarding", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1\n", 2) != 2)
			sv_warn("net: cannot enable IPv6 forwarding");
		close(fd);
	}
	sv_info("net: sandbox networks on 10.200.0.0/16 and fd53:5356::/48, NAT by nftables table inet sandvm");
	if (cJSON_GetArraySize(d->allow_private) > 0) {
		char *list = cJSON_PrintUnformatted(d->allow_private);

		sv_info("net: sandboxes may reach these private networks: %s", list ? list : "?");
		free(list);
	}
	return 0;
}

static int tap_persist(const char *name, bool persist)
{
	struct ifreq ifr = {0};
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, persist ? 1 : 0) < 0)
		r = -errno;
	close(fd);
	return r;
}

static int tap_configure(struct sandbox *sb)
{
	struct ifreq ifr = {0};
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	struct net_in6_ifreq ifr6 = {.prefixlen = 64};
	char a[64];
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), fd6, r = 0;

	if (fd < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", sb->net.tap);
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(POOL_BASE + sb->net.index * 4 + 1);
	if (ioctl(fd, SIOCSIFADDR, &ifr) < 0)
		r = -errno;
	sin->sin_addr.s_addr = htonl(0xfffffffcu);
	if (!r && ioctl(fd, SIOCSIFNETMASK, &ifr) < 0)
		r = -errno;
	if (!r && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
			r = -errno;
	}
	if (!r && ioctl(fd, SIOCGIFHWADDR, &ifr) == 0)
		memcpy(sb->net.gateway_mac, ifr.ifr_hwaddr.sa_data, 6);
	close(fd);
	if (r)
		return r;
	fd6 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd6 >= 0) {
		addr6(sb->net.index, 1, a, sizeof(a));
		inet_pton(AF_INET6, a, &ifr6.addr);
		ifr6.ifindex = (int)if_nametoindex(sb->net.tap);
		/* IPv6 is a bonus: a host without it still gives the sandbox IPv4. */
		sb->net.has_v6 = ifr6.ifindex && ioctl(fd6, SIOCSIFADDR, &ifr6) == 0;
		close(fd6);
	}
	return 0;
}

/* Every address of this host, and the daemon's TCP listener: a sandbox reaches none of them. */
int net_template_make(const char *key, const char *dir, char tap[16], char *err, size_t errlen)
{
	static const char policy[] = "{\"ip\":\"192.0.2.2\",\"gateway\":\"192.0.2.1\","
				     "\"gateway_mac\":\"02:53:56:ff:ff:ff\",\"mode\":\"block\"}";
	int r;

	/* "sbt" + 12 of the key's hex: under IFNAMSIZ, and outside the NAT rule's "sbx*". */
	snprintf(tap, 16, "sbt%.12s", key);
	r = tap_persist(tap, true);
	if (r < 0) {
		snprintf(err, errlen, "making the template's tap %s: %s", tap, strerror(-r));
		tap[0] = '\0';
		return r;
	}
	r = store_write_atomic(dir, "policy.json", policy);
	if (r < 0) {
		snprintf(err, errlen, "writing the template's network policy: %s", strerror(-r));
		net_template_release(tap);
		tap[0] = '\0';
	}
	return r;
}

void net_template_release(const char *tap)
{
	if (tap[0] && tap_persist(tap, false) < 0)
		sv_warn("event=tap_left tap=%s", tap);
}

static void add_host_addresses(cJSON *deny)
{
	struct ifaddrs *ifs, *i;
	char a[INET6_ADDRSTRLEN + 8];

	if (getifaddrs(&ifs) < 0)
		return;
	for (i = ifs; i; i = i->ifa_next) {
		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
			continue;
		if (i->ifa_addr->sa_family == AF_INET) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, a, sizeof(a));
			strcat(a, "/32");
		} else {
			const struct in6_addr *x = &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;

			if (IN6_IS_ADDR_LINKLOCAL(x))
				continue; /* fe80::/10 is denied as a whole already */
			inet_ntop(AF_INET6, x, a, sizeof(a));
			strcat(a, "/128");
		}
		cJSON_AddItemToArray(deny, cJSON_CreateString(a));
	}
	freeifaddrs(ifs);
}

void net_sandbox_address(const struct sandbox *sb, unsigned host, bool v6, char *out, size_t len)
{
	if (!sb->net.index || (v6 && !sb->net.has_v6))
		snprintf(out, len, "%s", "");
	else if (v6)
		addr6(sb->net.index, host, out, len);
	else
		addr4(sb->net.index, host, out, len);
}

bool net_in_sandbox_pool(int family, const void *addr)
{
	static const uint8_t pool6[6] = {0xfd, 0x53, 0x53, 0x56, 0, 0}; /* fd53:5356::/48, POOL6's */

	if (family == AF_INET)
		return (ntohl(((const struct in_addr *)addr)->s_addr) & 0xffff0000u) == POOL_BASE;
	return !memcmp(addr, pool6, sizeof(pool6));
}

const char *net_mode_name(const struct sandbox *sb)
{
	if (!sb->net.index)
		return "none";
	return net_mode_word(sb->net.mode);
}

/*
 * Writes the VMM's policy file `name` in the sandbox's run directory for mode
 * and allow (the allowlist's CIDR strings, with NET_ALLOWLIST).
 */
static int write_policy(struct sandbox *sb, enum net_mode mode, const cJSON *allow, const char *name, char *err,
			size_t errlen)
{
	cJSON *p = cJSON_CreateObject(), *deny = cJSON_CreateArray(), *sbx = cJSON_CreateArray();
	char a[64], mac[32], *text;
	const uint8_t *m = sb->net.gateway_mac;
	const char *extra;
	int r;

	addr4(sb->net.index, 2, a, sizeof(a));
	cJSON_AddStringToObject(p, "ip", a);
	addr4(sb->net.index, 1, a, sizeof(a));
	cJSON_AddStringToObject(p, "gateway", a);
	snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
	cJSON_AddStringToObject(p, "gateway_mac", mac);
	if (sb->net.has_v6) {
		addr6(sb->net.index, 2, a, sizeof(a));
		cJSON_AddStringToObject(p, "ip6", a);
		addr6(sb->net.index, 1, a, sizeof(a));
		cJSON_AddStringToObject(p, "gateway6", a);
	}
	cJSON_AddStringToObject(p, "mode", net_mode_word(mode));
	if (mode == NET_ALLOWLIST)
		cJSON_AddItemToObject(p, "allow", allow ? cJSON_Duplicate(allow, 1) : cJSON_CreateArray());
	add_host_addresses(deny);
	cJSON_AddItemToObject(p, "deny_host", deny);
	cJSON_AddItemToArray(sbx, cJSON_CreateString("10.200.0.0/16"));
	cJSON_AddItemToArray(sbx, cJSON_CreateString("fd53:5356::/48"));
	cJSON_AddItemToObject(p, "deny_sandboxes", sbx);
	/* The worker's private networks stay closed but where the operator opened them. */
	extra = isolation_monitor_test_allow_private(sb->d->isolation, sb);
	if (cJSON_GetArraySize(sb->d->allow_private) > 0 || extra) {
		cJSON *ap = cJSON_Duplicate(sb->d->allow_private, 1);

		/* Test only (docs/testing.md): a policy that wrongly opens a range, for the canary alone. */
		if (ap && extra)
			cJSON_AddItemToArray(ap, cJSON_CreateString(extra));
		cJSON_AddItemToObject(p, "allow_private", ap);
	}
	text = cJSON_PrintUnformatted(p);
	cJSON_Delete(p);
	if (!text)
		return -ENOMEM;
	r = store_write_atomic(sb->vm.dir, name, text);
	free(text);
	if (r < 0)
		snprintf(err, errlen, "writing the network policy: %s", strerror(-r));
	return r;
}

static void net_part_teardown(struct sandbox *sb);

/* The guest's MAC and its kernel command line words (sandvm.net=, sandvm.net6=), from its index. */
static void net_launch_words(struct sandbox *sb, struct sandbox_launch *l)
{
	char *cmdline = l->cmdline, a[64], gw[64];
	size_t cmd_len = sizeof(l->cmdline);

	snprintf(l->net, sizeof(l->net), "02:53:56:%02x:%02x:%02x", (sb->net.index >> 16) & 0xff,
		 (sb->net.index >> 8) & 0xff, sb->net.index & 0xff);
	addr4(sb->net.index, 2, a, sizeof(a));
	addr4(sb->net.index, 1, gw, sizeof(gw));
	snprintf(cmdline, cmd_len, "sandvm.net=%s/30,%s", a, gw);
	if (sb->net.has_v6) {
		size_t n = strlen(cmdline);

		addr6(sb->net.index, 2, a, sizeof(a));
		addr6(sb->net.index, 1, gw, sizeof(gw));
		snprintf(cmdline + n, cmd_len - n, " sandvm.net6=%s/64,%s", a, gw);
	}
}

static int net_make(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen);

/* A tap, addresses, NAT and the egress policy file; the VMM's --net, --net-policy and kernel arguments. */
static int net_part_setup(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	char *vmm_net = l->net, *cmdline = l->cmdline;
	int r;

	vmm_net[0] = cmdline[0] = '\0';
	if (!sb->d->net_enabled || sb->spec.restricted)
		return 0; /* no device at all: stricter than block */
	r = net_make(sb, l, err, errlen);
	if (r < 0) {
		char why[400];

		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "cannot give the sandbox a network: %s", why);
	}
	return r;
}

/*
 * The launch's network from what the sandbox holds (its tap and index): the
 * policy file in the run directory and the VMM's --net, --net-policy and
 * kernel words.
 */
static int net_launch(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	/*
	 * The VMM loads this file before the guest runs and refuses to start
	 * without it, so a running sandbox's mode is this one, confirmed.
	 */
	int r = write_policy(sb, sb->net.mode, sb->net.allow, "policy.json", err, errlen);

	if (r < 0)
		return r;
	snprintf(l->net_policy, sizeof(l->net_policy), "%s/policy.json", l->run_dir);
	/* sandbox_vm_prepare attaches the tap and gives the VMM tapfd=N (and the policy as fd:N). */
	l->cfg->net_tap = sb->net.tap;
	l->cfg->net_mac = l->net;
	l->cfg->net_policy = l->net_policy;
	l->cfg->cmdline = l->cmdline;
	net_launch_words(sb, l);
	return 0;
}

static int net_make(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	int r;

	/*
	 * A tap of that name held by a process this daemon does not know (another
	 * sandboxd, a VMM left from a crash) is busy: its index is taken, try the next.
	 */
	for (unsigned tries = 0;; tries++) {
		if (!(sb->net.index = pool_alloc(sb->d))) {
			snprintf(err, errlen, "no free sandbox network address left");
			return -ENOSPC;
		}
		snprintf(sb->net.tap, sizeof(sb->net.tap), TAP_PREFIX "%u", sb->net.index);
		r = tap_persist(sb->net.tap, true);
		if (r != -EBUSY || tries == 64)
			break;
		sv_warn("sandbox=%s event=tap_busy tap=%s", sb->id, sb->net.tap);
		sb->net.index = 0; /* stays marked used in the pool */
	}
	if (r == 0)
		r = tap_configure(sb);
	if (r < 0) {
		snprintf(err, errlen, "making tap %s: %s", sb->net.tap, strerror(-r));
		net_part_teardown(sb);
		return r;
	}
	r = net_launch(sb, l, err, errlen);
	if (r < 0)
		net_part_teardown(sb);
	return r;
}

/*
 * A paused sandbox resumes on the tap, MAC and addresses it had; the policy
 * file is written again from the mode it has now (PUT .../network may have
 * changed it since the create).
 */
static int net_part_relaunch(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	l->net[0] = l->cmdline[0] = '\0';
	return sb->net.index ? net_launch(sb, l, err, errlen) : 0;
}

static void net_part_teardown(struct sandbox *sb)
{
	if (!sb->net.index)
		return;
	if (sb->net.tap[0] && tap_persist(sb->net.tap, false) < 0)
		sv_warn("sandbox=%s event=tap_left tap=%s", sb->id, sb->net.tap);
	pool_give(sb->d, sb->net.index);
	sb->net.index = 0;
	sb->net.tap[0] = '\0';
}

static void net_part_adopt(struct sandbox *sb)
{
	if (sb->net.index && !pool_take(sb->d, sb->net.index))
		sv_warn("sandbox=%s event=net_index_clash index=%u", sb->id, sb->net.index);
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void net_part_restore(struct sandbox *sb, const cJSON *record)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(record, "net"), *v;
	unsigned m[6];

	if (!cJSON_IsObject(n) || num(n, "index") < 1 || num(n, "index") > 65535)
		return;
	sb->net.index = (unsigned)num(n, "index");
	v = cJSON_GetObjectItemCaseSensitive(n, "tap");
	if (cJSON_IsString(v))
		snprintf(sb->net.tap, sizeof(sb->net.tap), "%s", v->valuestring);
	sb->net.has_v6 = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(n, "has_v6"));
	v = cJSON_GetObjectItemCaseSensitive(n, "mode");
	sb->net.mode = cJSON_IsString(v) && !strcmp(v->valuestring, "block")       ? NET_BLOCK
		       : cJSON_IsString(v) && !strcmp(v->valuestring, "allowlist") ? NET_ALLOWLIST
										   : NET_OPEN;
	v = cJSON_GetObjectItemCaseSensitive(n, "allow");
	if (cJSON_IsArray(v))
		sb->net.allow = cJSON_Duplicate(v, 1);
	v = cJSON_GetObjectItemCaseSensitive(n, "gateway_mac");
	if (cJSON_IsString(v) &&
	    sscanf(v->valuestring, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) == 6)
		for (int i = 0; i < 6; i++)
			sb->net.gateway_mac[i] = (uint8_t)m[i];
}

static void net_part_save(const struct sandbox *sb, cJSON *record)
{
	cJSON *n;
	const uint8_t *m = sb->net.gateway_mac;
	char mac[32];

	if (!sb->net.index)
		return;
	n = cJSON_AddObjectToObject(record, "net");
	snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
	cJSON_AddNumberToObject(n, "index", sb->net.index);
	cJSON_AddStringToObject(n, "tap", sb->net.tap);
	cJSON_AddBoolToObject(n, "has_v6", sb->net.has_v6);
	cJSON_AddStringToObject(n, "mode", net_mode_name(sb));
	cJSON_AddStringToObject(n, "gateway_mac", mac);
	if (sb->net.allow)
		cJSON_AddItemToObject(n, "allow", cJSON_Duplicate(sb->net.allow, 1));
}

static void net_part_to_json(const struct sandbox *sb, cJSON *out)
{
	cJSON *n = cJSON_AddObjectToObject(out, "network");
	char a[64];

	cJSON_AddStringToObject(n, "mode", net_mode_name(sb));
	if (!sb->net.index)
		return;
	addr4(sb->net.index, 2, a, sizeof(a));
	cJSON_AddStringToObject(n, "ip", a);
	addr4(sb->net.index, 1, a, sizeof(a));
	cJSON_AddStringToObject(n, "gateway", a);
	if (sb->net.has_v6) {
		addr6(sb->net.index, 2, a, sizeof(a));
		cJSON_AddStringToObject(n, "ip6", a);
	}
	cJSON_AddStringToObject(n, "tap", sb->net.tap);
	if (sb->net.mode == NET_ALLOWLIST)
		cJSON_AddNumberToObject(n, "allow", cJSON_GetArraySize(sb->net.allow));
}

const struct sandbox_part_ops sandbox_net_part = {
	.name = "net",
	.setup = net_part_setup,
	.relaunch = net_part_relaunch,
	.teardown = net_part_teardown,
	.restore = net_part_restore,
	.adopt = net_part_adopt,
	.save = net_part_save,
	.to_json = net_part_to_json,
};

/* ---- run time: the VMM's control socket, on a worker thread ---- */

#define POLICY_NEXT "policy.next.json"

struct net_call {
	uv_work_t work;
	struct sandbox *sb;
	struct api_call *call;
	char control[320];
	char request[512];
	char policy[400];        /* with change: the policy file, sent as a descriptor */
	char reply[65536];
	int result;
	bool change;             /* a policy change (PUT), not a status call (GET) */
	enum net_mode want;      /* with change: what was asked for */
	cJSON *want_allow;       /* with change: its allowlist, or NULL */
};

static void net_call_work(uv_work_t *w)
{
	struct net_call *c = w->data;

	int fd;

	if (!c->policy[0]) {
		c->result = vmm_control_call(c->control, c->request, c->reply, sizeof(c->reply));
		return;
	}
	/* The VMM opens no host path: it reads the policy from the descriptor sent along. */
	fd = open(c->policy, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		c->result = -errno;
		return;
	}
	c->result = vmm_control_call_fds(c->control, c->request, &fd, 1, c->reply, sizeof(c->reply));
	/*
	 * No answer: the change is withdrawn, and a VMM that reads the request
	 * late (stopped, not dead) must not apply it then. It holds the file,
	 * not its name, so the file is emptied (by its name: the descriptor it
	 * got is read-only, and stays so): a late read is a refusal.
	 */
	if (c->result < 0 && truncate(c->policy, 0) < 0)
		sv_warn("event=policy_not_withdrawn path=%s: %s", c->policy, strerror(errno));
	close(fd);
}

/*
 * The sandbox's network object with the VMM's own word over ours: its mode
 * and list sizes, and with all its counters and device figures too.
 */
static cJSON *network_json(const struct sandbox *sb, const cJSON *vmm_net, bool all)
{
	static const char *const policy_fields[] = { "mode", "allow", "deny", "allow_private", NULL };
	cJSON *out = cJSON_CreateObject(), *net, *it;

	net_part_to_json(sb, out);
	net = cJSON_DetachItemFromObject(out, "network");
	cJSON_Delete(out);
	cJSON_ArrayForEach(it, vmm_net) {
		bool wanted = all;

		for (const char *const *f = policy_fields; *f && !wanted; f++)
			wanted = !strcmp(it->string, *f);
		if (!wanted)
			continue;
		cJSON_DeleteItemFromObjectCaseSensitive(net, it->string);
		cJSON_AddItemToObject(net, it->string, cJSON_Duplicate(it, 1));
	}
	return net;
}

/*
 * Records the mode the VMM confirmed after a change. The change's allowlist
 * comes with it when that is the mode asked for (*allow is taken); a VMM
 * that confirms another mode is believed, and logged.
 */
static void record_mode(struct sandbox *sb, enum net_mode mode, cJSON **allow, enum net_mode asked)
{
	cJSON_Delete(sb->net.allow);
	sb->net.allow = NULL;
	if (mode == asked) {
		sb->net.allow = *allow;
		*allow = NULL;
		sv_info("sandbox=%s event=net_policy mode=%s", sb->id, net_mode_word(mode));
	} else {
		sv_warn("sandbox=%s event=net_policy mode=%s asked=%s: the VMM confirmed another mode", sb->id,
			net_mode_word(mode), net_mode_word(asked));
	}
	sb->net.mode = mode;
	store_save(sb);
}

static void net_call_done(uv_work_t *w, int status)
{
	struct net_call *c = w->data;
	struct sandbox *sb = c->sb;
	char why[512], next[sizeof(sb->vm.dir) + sizeof(POLICY_NEXT) + 1], cur[sizeof(next)];
	enum net_mode mode = sb->net.mode;
	int r = net_policy_outcome(status < 0 ? status : c->result, c->reply, &mode, why, sizeof(why));
	cJSON *reply = r == 0 ? cJSON_Parse(c->reply) : NULL;

	if (c->change) {
		snprintf(next, sizeof(next), "%s/" POLICY_NEXT, sb->vm.dir);
		snprintf(cur, sizeof(cur), "%s/policy.json", sb->vm.dir);
		/* policy.json is what is in force: a VMM started again from it gets the same. */
		if (r == 0 ? rename(next, cur) < 0 : unlink(next) < 0 && errno != ENOENT)
			sv_warn("sandbox=%s event=policy_file_left path=%s: %s", sb->id, next, strerror(errno));
		sb->net.changing = false;
		if (r < 0)
			sv_warn("sandbox=%s event=net_policy_failed err=%d asked=%s in_force=%s: %s", sb->id, r,
				net_mode_word(c->want), net_mode_word(sb->net.mode), why);
	}
	/*
	 * The VMM's word is what is in force, whatever was asked for. Only a
	 * change's own reply is recorded: a status reply may have been overtaken
	 * by a change since, so it is reported, never recorded.
	 */
	if (r == 0 && c->change)
		record_mode(sb, mode, &c->want_allow, c->want);
	if (r < 0)
		api_call_fail(c->call, r, NULL, "%s", why);
	else
		api_call_ok(c->call, network_json(sb, cJSON_GetObjectItemCaseSensitive(reply, "net"), !c->change));
	cJSON_Delete(reply);
	cJSON_Delete(c->want_allow);
	sandbox_activity(sb, -1);
	api_call_release(c->call);
	sandbox_unref(sb);
	free(c);
}

/* Takes want_allow. */
static void net_call(struct sandbox *sb, struct api_call *call, const char *request, bool change,
		     enum net_mode want, cJSON *want_allow)
{
	struct net_call *c = calloc(1, sizeof(*c));

	if (!c) {
		cJSON_Delete(want_allow);
		api_call_fail(call, -ENOMEM, NULL, "out of memory");
		return;
	}
	c->sb = sb;
	c->call = call;
	c->change = change;
	c->want = want;
	c->want_allow = want_allow;
	snprintf(c->control, sizeof(c->control), "%s", sb->vm.control);
	snprintf(c->request, sizeof(c->request), "%s\n", request);
	if (change)
		snprintf(c->policy, sizeof(c->policy), "%s/" POLICY_NEXT, sb->vm.dir);
	c->work.data = c;
	sandbox_ref(sb);
	api_call_hold(call);
	sandbox_activity(sb, +1);
	if (change)
		sb->net.changing = true;
	if (uv_queue_work(sb->d->loop, &c->work, net_call_work, net_call_done) < 0) {
		c->result = -EIO;
		net_call_done(&c->work, -EIO);
	}
}

void net_get(struct sandbox *sb, struct api_call *call)
{
	if (!sb->net.index) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "mode", "none");
		api_call_ok(call, o);
		return;
	}
	if (sb->state != SANDBOX_RUNNING) {
		char why[300];

		sandbox_not_running(sb, why, sizeof(why));
		api_call_fail(call, -ESRCH, NULL, "%s", why);
		return;
	}
	net_call(sb, call, "{\"op\":\"net\"}", false, sb->net.mode, NULL);
}

/*
 * PUT .../network: {} open, {"block_network": true}, or {"cidr_allowlist": [...]}.
 * The new policy goes to the VMM in a file of its own; the daemon records and
 * reports the mode the VMM's reply says is in force, and only then makes that
 * file policy.json. A refusal or no answer leaves the record as it was.
 */
void net_put(struct sandbox *sb, struct api_call *call)
{
	size_t len;
	const char *text = api_call_body(call, &len);
	cJSON *body = cJSON_ParseWithLength(len ? text : "{}", len ? len : 2), *it;
	const cJSON *block, *allow;
	cJSON *want_allow;
	char err[512], request[480];
	enum net_mode mode = NET_OPEN;

	if (!cJSON_IsObject(body)) {
		cJSON_Delete(body);
		api_call_fail(call, -EINVAL, NULL, "body must be a JSON object");
		return;
	}
	cJSON_ArrayForEach(it, body) {
		if (strcmp(it->string, "block_network") && strcmp(it->string, "cidr_allowlist")) {
			api_call_fail(call, -EINVAL, it->string, "unknown field \"%.64s\"", it->string);
			cJSON_Delete(body);
			return;
		}
	}
	block = cJSON_GetObjectItemCaseSensitive(body, "block_network");
	allow = cJSON_GetObjectItemCaseSensitive(body, "cidr_allowlist");
	if (block && !cJSON_IsBool(block)) {
		cJSON_Delete(body);
		api_call_fail(call, -EINVAL, "block_network", "block_network must be true or false");
		return;
	}
	if (spec_check_cidrs(allow, err, sizeof(err)) < 0) {
		cJSON_Delete(body);
		api_call_fail(call, -EINVAL, "cidr_allowlist", "%s", err);
		return;
	}
	if (cJSON_IsTrue(block) && allow) {
		cJSON_Delete(body);
		api_call_fail(call, -EINVAL, "cidr_allowlist", "block_network and cidr_allowlist exclude each other");
		return;
	}
	if (!sb->net.index) {
		cJSON_Delete(body);
		api_call_fail(call, -EBUSY, NULL, "sandbox %s has no network device (restricted, or networks are off)",
				   sb->id);
		return;
	}
	if (sb->state != SANDBOX_RUNNING) {
		cJSON_Delete(body);
		char why[300];

		sandbox_not_running(sb, why, sizeof(why));
		api_call_fail(call, -ESRCH, NULL, "%s", why);
		return;
	}
	/* One change at a time: each is answered with what the VMM then has in force. */
	if (sb->net.changing) {
		cJSON_Delete(body);
		api_call_fail(call, -EBUSY, NULL, "a network change of sandbox %s is under way", sb->id);
		return;
	}
	if (cJSON_IsTrue(block))
		mode = NET_BLOCK;
	else if (allow)
		mode = NET_ALLOWLIST;
	want_allow = allow ? cJSON_Duplicate(allow, 1) : NULL;
	cJSON_Delete(body);
	if (mode == NET_ALLOWLIST && !want_allow) {
		api_call_fail(call, -ENOMEM, NULL, "out of memory");
		return;
	}
	if (write_policy(sb, mode, want_allow, POLICY_NEXT, err, sizeof(err)) < 0) {
		cJSON_Delete(want_allow);
		api_call_fail(call, -EIO, NULL, "%s", err);
		return;
	}
	sv_info("sandbox=%s event=net_policy_asked mode=%s", sb->id, net_mode_word(mode));
	snprintf(request, sizeof(request), "{\"op\":\"net-policy\",\"fd\":0}");
	/* The VMM replies with what is now in force; counters come with GET. */
	net_call(sb, call, request, true, mode, want_allow);
}
