/*
 * The network probes (probe_net.h). What each observation means:
 *
 * tcp: a connection, or a refusal (a RST, or an ICMP port unreachable), is
 * "reached": some stack beyond the wall answered, so the packet got
 * through. sandvm's firewall drops silently and never answers for a
 * destination, so a wall that holds shows as a timeout, or as a local
 * error when the guest has no route.
 *
 * vsock: the only peer is the VMM's own device, and a refusal or reset comes
 * from it: that is the wall holding, so only a connection is "reached".
 *
 * icmp: an echo reply from the address itself is "reached"; silence or an
 * unreachable is "blocked".
 */
#include "probe_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/vm_sockets.h>
#include <netinet/icmp6.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ICMP_SEQ 1
#define ICMP_PAYLOAD "sandvm-isolation-probe"
/* Replies read per socket per wake-up: a flood of other ICMP cannot hold the loop. */
#define ICMP_READS_MAX 64

struct pending {
	int fd;
	unsigned idx;  /* into the plan */
	short events;
	bool raw;      /* icmp over SOCK_RAW: every reply is seen, ours is matched by id */
	uint16_t id;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool from_addr(const struct probe_addr *a, const struct sockaddr_storage *ss)
{
	if (a->family == AF_INET && ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == a->v4.s_addr;
	if (a->family == AF_INET6 && ss->ss_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)ss)->sin6_addr, &a->v6, sizeof(a->v6));
	return false;
}

static bool unreachable_errno(int err)
{
	return err == EHOSTUNREACH || err == ENETUNREACH || err == EACCES || err == EPERM || err == EADDRNOTAVAIL;
}

static const char *unreachable_words(int err)
{
	switch (err) {
	case ENETUNREACH:
		return "no route";
	case EHOSTUNREACH:
		return "host unreachable";
	case EADDRNOTAVAIL:
		return "no source address";
	default:
		return "not permitted";
	}
}

static void tcp_verdict(struct probe_result *r, int err)
{
	if (err == 0)
		probe_result_set(r, PROBE_REACHED, "connected");
	else if (err == ECONNREFUSED)
		probe_result_set(r, PROBE_REACHED, "refused by a host");
	else if (err == ETIMEDOUT)
		probe_result_set(r, PROBE_BLOCKED, "timed out");
	else if (unreachable_errno(err))
		probe_result_set(r, PROBE_BLOCKED, "%s (%s)", unreachable_words(err), strerror(err));
	else
		probe_result_set(r, PROBE_ERROR, "connect: %s", strerror(err));
}

static void vsock_verdict(struct probe_result *r, int err)
{
	if (err == 0)
		probe_result_set(r, PROBE_REACHED, "connected");
	else if (err == ECONNREFUSED)
		probe_result_set(r, PROBE_BLOCKED, "refused");
	else if (err == ECONNRESET)
		probe_result_set(r, PROBE_BLOCKED, "reset");
	else if (err == ETIMEDOUT)
		probe_result_set(r, PROBE_BLOCKED, "timed out");
	else
		probe_result_set(r, PROBE_ERROR, "connect: %s", strerror(err));
}

static void icmp_error_verdict(struct probe_result *r, const char *what, int err)
{
	if (unreachable_errno(err))
		probe_result_set(r, PROBE_BLOCKED, "%s (%s)", unreachable_words(err), strerror(err));
	else
		probe_result_set(r, PROBE_ERROR, "%s: %s", what, strerror(err));
}

/* Starts a connect; true while it is under way (p->fd then polled for POLLOUT). */
static bool stream_start(const struct probe_spec *s, struct pending *p, struct probe_result *r)
{
	struct sockaddr_storage ss;
	struct sockaddr_vm vm;
	const struct sockaddr *sa;
	socklen_t len;
	int fd, err;

	if (s->kind == PROBE_VSOCK) {
		memset(&vm, 0, sizeof(vm));
		vm.svm_family = AF_VSOCK;
		vm.svm_cid = s->cid;
		vm.svm_port = s->port;
		sa = (const struct sockaddr *)&vm;
		len = sizeof(vm);
	} else {
		len = probe_addr_sockaddr(&s->addr, (uint16_t)s->port, &ss);
		sa = (const struct sockaddr *)&ss;
	}
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		probe_result_set(r, PROBE_ERROR, "%s: %s", s->kind == PROBE_VSOCK ? "no vsock socket" : "socket",
				 strerror(errno));
		return false;
	}
	err = connect(fd, sa, len) < 0 ? errno : 0;
	if (err == EINPROGRESS) {
		p->fd = fd;
		p->events = POLLOUT;
		return true;
	}
	(s->kind == PROBE_VSOCK ? vsock_verdict : tcp_verdict)(r, err);
	close(fd);
	return false;
}

static uint16_t inet_sum(const uint8_t *b, size_t n)
{
	uint32_t sum = 0;

	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(b[i] << 8 | b[i + 1]);
	if (n & 1)
		sum += (uint32_t)b[n - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Sends one echo request; true while its reply is awaited (p->fd polled for POLLIN). */
static bool icmp_start(const struct probe_spec *s, struct pending *p, struct probe_result *r)
{
	uint8_t pkt[8 + sizeof(ICMP_PAYLOAD) - 1];
	struct sockaddr_storage ss;
	socklen_t len = probe_addr_sockaddr(&s->addr, 0, &ss);
	int proto = s->addr.family == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6;
	uint16_t sum;
	int fd;

	/* An unprivileged ping socket where the guest allows it (net.ipv4.ping_group_range), else raw. */
	p->raw = false;
	fd = socket(s->addr.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
	if (fd < 0) {
		p->raw = true;
		fd = socket(s->addr.family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
	}
	if (fd < 0) {
		probe_result_set(r, PROBE_ERROR, "no ICMP socket: %s", strerror(errno));
		return false;
	}
	/* Unique among this run's probes: raw sockets see each other's replies. */
	p->id = (uint16_t)(getpid() * 131u + p->idx);
	memset(pkt, 0, sizeof(pkt));
	pkt[0] = s->addr.family == AF_INET ? ICMP_ECHO : ICMP6_ECHO_REQUEST;
	pkt[4] = (uint8_t)(p->id >> 8);
	pkt[5] = (uint8_t)p->id;
	pkt[7] = ICMP_SEQ;
	memcpy(pkt + 8, ICMP_PAYLOAD, sizeof(ICMP_PAYLOAD) - 1);
	/* ICMPv6's checksum covers a pseudo-header: the kernel fills it in. */
	if (s->addr.family == AF_INET) {
		sum = inet_sum(pkt, sizeof(pkt));
		pkt[2] = (uint8_t)(sum >> 8);
		pkt[3] = (uint8_t)sum;
	}
	if (sendto(fd, pkt, sizeof(pkt), 0, (const struct sockaddr *)&ss, len) < 0) {
		icmp_error_verdict(r, "send", errno);
		close(fd);
		return false;
	}
	p->fd = fd;
	p->events = POLLIN;
	return true;
}

/*
 * One datagram read from an ICMP socket: 1 for our echo reply from the
 * address, -1 for an error message about our request (ICMP unreachable or
 * time exceeded quoting it), 0 for anything else.
 */
static int icmp_match(const struct probe_spec *s, const struct pending *p, const uint8_t *b, size_t n,
		      const struct sockaddr_storage *from, int *type, int *code)
{
	bool v4 = s->addr.family == AF_INET;
	const uint8_t *inner;
	size_t hl, ihl;

	if (v4 && p->raw) {
		if (n < 20 || (b[0] >> 4) != 4 || (hl = (size_t)(b[0] & 0xf) * 4) < 20 || n < hl + 8)
			return 0;
		b += hl;
		n -= hl;
	}
	if (n < 8)
		return 0;
	*type = b[0];
	*code = b[1];
	if (b[0] == (v4 ? ICMP_ECHOREPLY : ICMP6_ECHO_REPLY)) {
		if (b[7] != ICMP_SEQ || (p->raw && (b[4] << 8 | b[5]) != p->id))
			return 0;
		return from_addr(&s->addr, from) ? 1 : 0;
	}
	if (!p->raw)
		return 0;
	if (v4 && (b[0] == ICMP_DEST_UNREACH || b[0] == ICMP_TIME_EXCEEDED)) {
		inner = b + 8;
		if (n < 8 + 20 || (inner[0] >> 4) != 4 || (ihl = (size_t)(inner[0] & 0xf) * 4) < 20 || n < 8 + ihl + 8)
			return 0;
		inner += ihl;
		return inner[0] == ICMP_ECHO && (inner[4] << 8 | inner[5]) == p->id ? -1 : 0;
	}
	if (!v4 && (b[0] == ICMP6_DST_UNREACH || b[0] == ICMP6_TIME_EXCEEDED)) {
		/* The quoted IPv6 header, then (no extension headers: we sent none) our echo request. */
		if (n < 8 + 40 + 8)
			return 0;
		inner = b + 8 + 40;
		return inner[0] == ICMP6_ECHO_REQUEST && (inner[4] << 8 | inner[5]) == p->id ? -1 : 0;
	}
	return 0;
}

/* An ICMP socket is readable: true when the probe has its answer. */
static bool icmp_read(const struct probe_spec *s, const struct pending *p, struct probe_result *r)
{
	uint8_t buf[1500];

	for (int i = 0; i < ICMP_READS_MAX; i++) {
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(p->fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		int m, type = 0, code = 0;

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return false;
			icmp_error_verdict(r, "receive", errno);
			return true;
		}
		m = icmp_match(s, p, buf, (size_t)n, &from, &type, &code);
		if (m > 0) {
			probe_result_set(r, PROBE_REACHED, "echo reply");
			return true;
		}
		if (m < 0) {
			probe_result_set(r, PROBE_BLOCKED, "unreachable (ICMP type %d code %d)", type, code);
			return true;
		}
	}
	return false;
}

/* p->fd has events: true when the probe has its answer. */
static bool handle(const struct probe_spec *s, const struct pending *p, short revents, struct probe_result *r)
{
	int err = 0;
	socklen_t el = sizeof(err);

	if (s->kind == PROBE_ICMP) {
		if (revents & POLLIN && icmp_read(s, p, r))
			return true;
		if (!(revents & (POLLERR | POLLHUP)))
			return false;
		if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			err = errno;
		if (err == 0)
			return false;
		icmp_error_verdict(r, "receive", err);
		return true;
	}
	if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
		err = errno;
	if (err == 0 && !(revents & POLLOUT)) {
		probe_result_set(r, PROBE_ERROR, "connect: hung up without an error");
		return true;
	}
	(s->kind == PROBE_VSOCK ? vsock_verdict : tcp_verdict)(r, err);
	return true;
}

static void timed_out(const struct probe_plan *plan, const struct probe_spec *s, struct probe_result *r)
{
	if (s->kind == PROBE_ICMP)
		probe_result_set(r, PROBE_BLOCKED, "no reply within %u ms", plan->timeout_ms);
	else
		probe_result_set(r, PROBE_BLOCKED, "timed out after %u ms", plan->timeout_ms);
}

void probe_net_run(const struct probe_plan *plan, struct probe_result *results)
{
	struct pending live[PROBE_SPECS_MAX];
	struct pollfd pfd[PROBE_SPECS_MAX];
	unsigned n = 0;
	uint64_t deadline;

	for (unsigned i = 0; i < plan->count && i < PROBE_SPECS_MAX; i++) {
		const struct probe_spec *s = &plan->specs[i];
		struct pending *p = &live[n];
		bool started;

		if (!probe_kind_is_net(s->kind))
			continue;
		memset(p, 0, sizeof(*p));
		p->fd = -1;
		p->idx = i;
		started = s->kind == PROBE_ICMP ? icmp_start(s, p, &results[i]) : stream_start(s, p, &results[i]);
		if (started)
			n++;
	}
	deadline = now_ms() + plan->timeout_ms;
	while (n > 0) {
		uint64_t t = now_ms();
		unsigned kept = 0;
		int ready;

		if (t >= deadline)
			break;
		for (unsigned j = 0; j < n; j++)
			pfd[j] = (struct pollfd){.fd = live[j].fd, .events = live[j].events};
		ready = poll(pfd, n, (int)(deadline - t));
		if (ready < 0 && errno != EINTR) {
			int err = errno;

			for (unsigned j = 0; j < n; j++) {
				probe_result_set(&results[live[j].idx], PROBE_ERROR, "poll: %s", strerror(err));
				close(live[j].fd);
			}
			return;
		}
		for (unsigned j = 0; j < n; j++) {
			const struct probe_spec *s = &plan->specs[live[j].idx];

			if (ready > 0 && pfd[j].revents && handle(s, &live[j], pfd[j].revents, &results[live[j].idx])) {
				close(live[j].fd);
				continue;
			}
			live[kept++] = live[j];
		}
		n = kept;
	}
	for (unsigned j = 0; j < n; j++) {
		timed_out(plan, &plan->specs[live[j].idx], &results[live[j].idx]);
		close(live[j].fd);
	}
}
