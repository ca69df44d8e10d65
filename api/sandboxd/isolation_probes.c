/*
 * The isolation monitor's probe list and the host's own judgements
 * (isolation_probes.h). Families are added in order of what they prove
 * for the least count: the fixed ones first, the per-address ones last, so
 * that a worker with many addresses loses probes of its last addresses,
 * never a whole family.
 */
#include "isolation_probes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "metrics.h"
#include "parse.h"

/* Host-side vsock ports a guest might try (the canary's agent port is left out). */
static const unsigned vsock_host_ports[] = {1, 22, 80, 1024, 1025, 9999};

/* One address in each private or CGNAT range, closed to sandboxes unless the operator opened it. */
static const char *const private_addrs[] = {"10.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1", "fd00::1"};

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' || c == '-';
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n >= ISOLATION_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!name_char(*s))
			return false;
	return true;
}

/* An argument of a spec: no separator, no space, printable. */
static bool valid_arg(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s == ',' || *s <= 0x20 || *s > 0x7e)
			return false;
	return true;
}

/*
 * Adds a probe: name, then expected, then the kind and its arguments (fmt).
 * A name already planned, an invalid one or a spec too long is skipped; a
 * probe beyond ISOLATION_PROBES_MAX is counted as dropped.
 */
static void __attribute__((format(printf, 4, 5)))
add(struct isolation_plan *p, const char *name, enum isolation_outcome expected, const char *fmt, ...)
{
	struct isolation_planned *pr;
	va_list ap;
	int n;

	if (!valid_name(name) || isolation_plan_find(p, name))
		return;
	if (p->count == ISOLATION_PROBES_MAX) {
		p->dropped++;
		return;
	}
	pr = &p->probes[p->count];
	n = snprintf(pr->spec, sizeof(pr->spec), "%s,%s,", name, isolation_outcome_word(expected));
	va_start(ap, fmt);
	n += vsnprintf(pr->spec + n, sizeof(pr->spec) - (size_t)n, fmt, ap);
	va_end(ap);
	if ((size_t)n >= sizeof(pr->spec))
		return;
	snprintf(pr->name, sizeof(pr->name), "%s", name);
	pr->expected = expected;
	p->count++;
}

static void tcp(struct isolation_plan *p, const char *name, enum isolation_outcome expected, const char *addr,
		unsigned port)
{
	add(p, name, expected, "tcp,%s,%u", addr, port);
}

static void icmp(struct isolation_plan *p, const char *name, const char *addr)
{
	add(p, name, ISOLATION_BLOCKED, "icmp,%s", addr);
}

/* Parses an IPv4 or IPv6 address: 4 or 16 bytes into out, 0 when it is neither. */
static int addr_bytes(const char *s, uint8_t out[16])
{
	if (inet_pton(AF_INET, s, out) == 1)
		return 4;
	if (inet_pton(AF_INET6, s, out) == 1)
		return 16;
	return 0;
}

/* Whether addr lies inside the CIDR text ("10.1.0.0/16"); a malformed CIDR holds nothing. */
static bool cidr_holds(const char *cidr, const char *addr)
{
	struct cidr c;
	uint8_t b[16];
	int n = addr_bytes(addr, b);

	return n && cidr_parse_masked(cidr, &c) == 0 && cidr_contains(&c, n == 4 ? 4 : 6, b);
}

static bool opened_by_operator(const struct isolation_worker *w, const char *addr)
{
	for (unsigned i = 0; i < w->nallow_private; i++)
		if (cidr_holds(w->allow_private[i], addr))
			return true;
	return false;
}

static bool is_wildcard_or_loopback(const char *addr)
{
	uint8_t b[16];
	int n = addr_bytes(addr, b);
	static const uint8_t zero[16], one[16] = {[15] = 1};

	if (n == 4)
		return b[0] == 127 || !memcmp(b, zero, 4);
	return n == 16 && (!memcmp(b, zero, 16) || !memcmp(b, one, 16));
}

/* The listeners' distinct ports, in order; at most cap. */
static unsigned listener_ports(const struct isolation_worker *w, unsigned *ports, unsigned cap)
{
	unsigned n = 0;

	for (unsigned i = 0; i < w->nlisteners && n < cap; i++) {
		bool seen = false;

		for (unsigned j = 0; j < n; j++)
			seen |= ports[j] == w->listeners[i].port;
		if (!seen)
			ports[n++] = w->listeners[i].port;
	}
	return n;
}

/* The IPv6 transition forms of the IPv4 address v4 (6to4, NAT64, IPv4-mapped), tcp to port. */
static void v6map(struct isolation_plan *p, const char *v4, unsigned port)
{
	uint8_t b[16];
	char name[ISOLATION_NAME_MAX];

	if (addr_bytes(v4, b) != 4)
		return;
	snprintf(name, sizeof(name), "v6map.6to4.%s", v4);
	add(p, name, ISOLATION_BLOCKED, "tcp,2002:%02x%02x:%02x%02x::1,%u", b[0], b[1], b[2], b[3], port);
	snprintf(name, sizeof(name), "v6map.nat64.%s", v4);
	add(p, name, ISOLATION_BLOCKED, "tcp,64:ff9b::%s,%u", v4, port);
	snprintf(name, sizeof(name), "v6map.mapped.%s", v4);
	add(p, name, ISOLATION_BLOCKED, "tcp,::ffff:%s,%u", v4, port);
}

void isolation_plan_build(const struct isolation_worker *w, struct isolation_plan *out)
{
	unsigned ports[ISOLATION_LISTENERS_MAX + 1], nports;
	char name[ISOLATION_NAME_MAX];
	const char *first_v4 = NULL;
	uint8_t b[16];

	memset(out, 0, sizeof(*out));
	nports = listener_ports(w, ports, ISOLATION_LISTENERS_MAX);

	/* The positive control first: without it, "blocked" may only mean the canary has no network. */
	if (w->has_peer)
		tcp(out, "peer", ISOLATION_REACHED, w->peer.addr, w->peer.port);
	if (w->canary_gateway[0]) {
		add(out, "spoof.source-ip", ISOLATION_BLOCKED, "spoof-ip,%s", w->canary_gateway);
		add(out, "spoof.source-mac", ISOLATION_BLOCKED, "spoof-mac,%s", w->canary_gateway);
	}

	tcp(out, "metadata.aws.tcp.80", ISOLATION_BLOCKED, "169.254.169.254", 80);
	icmp(out, "metadata.aws.icmp", "169.254.169.254");
	tcp(out, "metadata.alibaba.tcp.80", ISOLATION_BLOCKED, "100.100.100.200", 80);
	tcp(out, "metadata.aws6.tcp.80", ISOLATION_BLOCKED, "fd00:ec2::254", 80);

	add(out, "guest.env.svk", ISOLATION_BLOCKED, "env,svk_");
	add(out, "guest.file.dev-kvm", ISOLATION_BLOCKED, "file,/dev/kvm");
	for (unsigned i = 0; i < w->nsecrets && i < ISOLATION_SECRETS_MAX; i++) {
		if (!valid_arg(w->secrets[i].path))
			continue;
		snprintf(name, sizeof(name), "guest.file.%s", w->secrets[i].label);
		add(out, name, ISOLATION_BLOCKED, "file,%s", w->secrets[i].path);
	}

	for (unsigned i = 0; i < w->ndeny && i < ISOLATION_DENY_MAX; i++) {
		snprintf(name, sizeof(name), "deny.%s.tcp.%u", w->deny[i].addr, w->deny[i].port);
		tcp(out, name, ISOLATION_BLOCKED, w->deny[i].addr, w->deny[i].port);
	}

	for (size_t i = 0; i < sizeof(vsock_host_ports) / sizeof(vsock_host_ports[0]); i++) {
		if (vsock_host_ports[i] == w->agent_vsock_port)
			continue;
		snprintf(name, sizeof(name), "vsock.2.%u", vsock_host_ports[i]);
		add(out, name, ISOLATION_BLOCKED, "vsock,2,%u", vsock_host_ports[i]);
	}
	add(out, "vsock.1.1", ISOLATION_BLOCKED, "vsock,1,1");
	add(out, "vsock.3.1", ISOLATION_BLOCKED, "vsock,3,1");

	for (size_t i = 0; i < sizeof(private_addrs) / sizeof(private_addrs[0]); i++) {
		if (opened_by_operator(w, private_addrs[i]))
			continue;
		snprintf(name, sizeof(name), "private.%s.tcp.80", private_addrs[i]);
		tcp(out, name, ISOLATION_BLOCKED, private_addrs[i], 80);
		snprintf(name, sizeof(name), "private.%s.icmp", private_addrs[i]);
		icmp(out, name, private_addrs[i]);
	}

	/* Nothing routes TEST-NET-1: an answer there comes from a rule of the worker that redirects. */
	for (unsigned i = 0; i < nports; i++) {
		snprintf(name, sizeof(name), "redirect.tcp.%u", ports[i]);
		tcp(out, name, ISOLATION_BLOCKED, "192.0.2.1", ports[i]);
	}

	for (unsigned i = 0; i < w->nlisteners && i < ISOLATION_LISTENERS_MAX; i++) {
		const struct isolation_endpoint *l = &w->listeners[i];

		if (is_wildcard_or_loopback(l->addr))
			continue;
		snprintf(name, sizeof(name), "listener.%s.tcp.%u", l->addr, l->port);
		tcp(out, name, ISOLATION_BLOCKED, l->addr, l->port);
	}

	for (unsigned i = 0; i < w->nlocal && i < ISOLATION_LOCAL_MAX; i++)
		if (addr_bytes(w->local[i], b) == 4 && !is_wildcard_or_loopback(w->local[i])) {
			first_v4 = w->local[i];
			break;
		}
	if (first_v4)
		v6map(out, first_v4, nports ? ports[0] : 80);
	v6map(out, "169.254.169.254", nports ? ports[0] : 80);

	/* Per address: the worker's own, then the other sandboxes. */
	for (unsigned i = 0; i < w->nlocal && i < ISOLATION_LOCAL_MAX; i++) {
		const char *a = w->local[i];

		if (!addr_bytes(a, b) || is_wildcard_or_loopback(a))
			continue;
		snprintf(name, sizeof(name), "host.%s.icmp", a);
		icmp(out, name, a);
		for (unsigned j = 0; j < nports; j++) {
			snprintf(name, sizeof(name), "host.%s.tcp.%u", a, ports[j]);
			tcp(out, name, ISOLATION_BLOCKED, a, ports[j]);
		}
		snprintf(name, sizeof(name), "host.%s.tcp.22", a);
		tcp(out, name, ISOLATION_BLOCKED, a, 22);
	}
	for (unsigned i = 0; i < w->nsandboxes && i < ISOLATION_SANDBOXES_MAX; i++) {
		const char *g = w->sandboxes[i].guest, *gw = w->sandboxes[i].gateway;

		if (addr_bytes(g, b)) {
			snprintf(name, sizeof(name), "sandbox.%s.icmp", g);
			icmp(out, name, g);
			/* Any port: a guest kernel answers a closed one with a reset, which is reached. */
			snprintf(name, sizeof(name), "sandbox.%s.tcp.22", g);
			tcp(out, name, ISOLATION_BLOCKED, g, 22);
			snprintf(name, sizeof(name), "sandbox.%s.tcp.8080", g);
			tcp(out, name, ISOLATION_BLOCKED, g, 8080);
		}
		if (addr_bytes(gw, b)) {
			snprintf(name, sizeof(name), "sandbox.gw.%s.icmp", gw);
			icmp(out, name, gw);
		}
	}
}

const struct isolation_planned *isolation_plan_find(const struct isolation_plan *p, const char *name)
{
	for (unsigned i = 0; i < p->count; i++)
		if (!strcmp(p->probes[i].name, name))
			return &p->probes[i];
	return NULL;
}

int isolation_plan_check(const struct isolation_plan *p, const struct isolation_report *rep, char *why,
			 size_t cap)
{
	for (unsigned i = 0; i < rep->count; i++) {
		const struct isolation_planned *pp = isolation_plan_find(p, rep->probes[i].name);

		if (!pp) {
			snprintf(why, cap, "the report names probe %s, which was not asked for", rep->probes[i].name);
			return -EBADMSG;
		}
		if (pp->expected != rep->probes[i].expected) {
			snprintf(why, cap, "the report gives probe %s another expectation", pp->name);
			return -EBADMSG;
		}
	}
	/* Names are unique on both sides: as many as planned means every one. */
	if (rep->count != p->count) {
		snprintf(why, cap, "the report holds %u probes of the %u asked for", rep->count, p->count);
		return -EBADMSG;
	}
	return 0;
}

static int reason_index(const char *name)
{
	for (int i = 0; i < METRICS_FW_REASONS; i++)
		if (!strcmp(metrics_fw_reason_names[i], name))
			return i;
	return -1;
}

/* "sent N" at the start of the guest's detail: N, or 0 when it is not there. */
static unsigned long sent_count(const char *detail)
{
	char *end;
	unsigned long n;

	if (strncmp(detail, "sent ", 5) || detail[5] < '0' || detail[5] > '9')
		return 0;
	n = strtoul(detail + 5, &end, 10);
	return *end && *end != ' ' ? 0 : n;
}

static void judge_one(struct isolation_probe *pr, const char *counter, const struct metrics_fw *before,
		      const struct metrics_fw *after, bool known)
{
	int k = reason_index(counter);
	unsigned long sent = sent_count(pr->detail);
	uint64_t rose;

	if (pr->observed == ISOLATION_ERROR)
		return; /* the guest could not send: nothing to judge */
	if (!sent) {
		pr->observed = ISOLATION_ERROR;
		snprintf(pr->detail, sizeof(pr->detail), "the guest sent nothing");
		return;
	}
	if (!known || k < 0) {
		pr->observed = ISOLATION_ERROR;
		snprintf(pr->detail, sizeof(pr->detail), "sent %lu; the VMM's firewall counters could not be read",
			 sent);
		return;
	}
	rose = after->count[k] >= before->count[k] ? after->count[k] - before->count[k] : 0;
	if (rose) {
		pr->observed = ISOLATION_BLOCKED;
		snprintf(pr->detail, sizeof(pr->detail), "sent %lu; %s +%llu", sent, counter,
			 (unsigned long long)rose);
	} else {
		pr->observed = ISOLATION_REACHED;
		snprintf(pr->detail, sizeof(pr->detail), "sent %lu; %s did not move: the frames left the VMM", sent,
			 counter);
	}
}

void isolation_judge_spoof(struct isolation_report *rep, const struct metrics_fw *before,
			   const struct metrics_fw *after, bool known)
{
	for (unsigned i = 0; i < rep->count; i++) {
		struct isolation_probe *pr = &rep->probes[i];

		if (!strcmp(pr->name, "spoof.source-ip"))
			judge_one(pr, "drop_spoof_ip", before, after, known);
		else if (!strcmp(pr->name, "spoof.source-mac"))
			judge_one(pr, "drop_spoof_mac", before, after, known);
	}
	isolation_report_judge(rep);
}

int isolation_endpoint_parse(const char *text, struct isolation_endpoint *out, char *why, size_t cap)
{
	const char *colon = strrchr(text, ':');
	char host[ISOLATION_ADDR_MAX + 2];
	uint8_t b[16];
	uint64_t port;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!colon || colon == text || (n = (size_t)(colon - text)) >= sizeof(host)) {
		snprintf(why, cap, "wants ADDR:PORT (IPv6 as [ADDR]:PORT), not %.80s", text);
		return -EINVAL;
	}
	memcpy(host, text, n);
	host[n] = '\0';
	if (host[0] == '[') {
		if (n < 3 || host[n - 1] != ']') {
			snprintf(why, cap, "%.80s: an IPv6 address goes in brackets, [ADDR]:PORT", text);
			return -EINVAL;
		}
		memmove(host, host + 1, n - 2);
		host[n - 2] = '\0';
		if (inet_pton(AF_INET6, host, b) != 1) {
			snprintf(why, cap, "%.80s: %s is not an IPv6 address", text, host);
			return -EINVAL;
		}
		out->v6 = true;
	} else if (inet_pton(AF_INET, host, b) != 1) {
		snprintf(why, cap, "%.80s: %s is not an IPv4 address (IPv6 goes as [ADDR]:PORT)", text, host);
		return -EINVAL;
	}
	if (sv_parse_u64(colon + 1, 1, 65535, &port) < 0) {
		snprintf(why, cap, "%.80s: the port is 1..65535", text);
		return -EINVAL;
	}
	inet_ntop(out->v6 ? AF_INET6 : AF_INET, b, out->addr, sizeof(out->addr));
	out->port = (unsigned)port;
	return 0;
}

int isolation_interval_parse(const char *text, unsigned *out)
{
	uint64_t v;

	if (sv_parse_u64(text, ISOLATION_INTERVAL_MIN, ISOLATION_INTERVAL_MAX, &v) < 0)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}
