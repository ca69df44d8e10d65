/*
 * The isolation probe's specs (probe_spec.h). The command line comes from
 * sandboxd, but a spec is still bounded and checked byte by byte before any
 * part of it is used: whatever is not exactly a spec refuses the whole run.
 */
#include "probe_spec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "parse.h"

static const char *const outcome_words[] = {"blocked", "reached", "error"};

static const char *const kind_words[] = {
	[PROBE_TCP] = "tcp",   [PROBE_ICMP] = "icmp",	       [PROBE_VSOCK] = "vsock",
	[PROBE_ENV] = "env",   [PROBE_FILE] = "file",	       [PROBE_SPOOF_IP] = "spoof-ip",
	[PROBE_SPOOF_MAC] = "spoof-mac",
};

#define N_KINDS (sizeof(kind_words) / sizeof(kind_words[0]))

const char *probe_outcome_word(enum probe_outcome o)
{
	return (unsigned)o < 3 ? outcome_words[o] : "?";
}

const char *probe_kind_word(enum probe_kind k)
{
	return (unsigned)k < N_KINDS ? kind_words[k] : "?";
}

bool probe_kind_is_net(enum probe_kind k)
{
	return k == PROBE_TCP || k == PROBE_ICMP || k == PROBE_VSOCK;
}

bool probe_kind_is_spoof(enum probe_kind k)
{
	return k == PROBE_SPOOF_IP || k == PROBE_SPOOF_MAC;
}

socklen_t probe_addr_sockaddr(const struct probe_addr *a, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;

		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		in->sin_addr = a->v4;
		return sizeof(*in);
	}
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons(port);
	in6->sin6_addr = a->v6;
	return sizeof(*in6);
}

/* [s, s + n) equals the NUL-terminated word w. */
static bool is(const char *s, size_t n, const char *w)
{
	return strlen(w) == n && !memcmp(s, w, n);
}

static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || n >= PROBE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
		      c == '-'))
			return false;
	}
	return true;
}

/* An IPv4 or IPv6 literal of n bytes (family 0 takes either). */
static int addr_parse(const char *s, size_t n, int family, struct probe_addr *out)
{
	char buf[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = '\0';
	memset(out, 0, sizeof(*out));
	if ((family == 0 || family == AF_INET) && inet_pton(AF_INET, buf, &out->v4) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if ((family == 0 || family == AF_INET6) && inet_pton(AF_INET6, buf, &out->v6) == 1) {
		out->family = AF_INET6;
		return 0;
	}
	return -EINVAL;
}

/* A decimal number of n bytes in [min, max]. */
static int num_parse(const char *s, size_t n, uint64_t min, uint64_t max, uint32_t *out)
{
	char buf[24];
	uint64_t v;

	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (sv_parse_u64(buf, min, max, &v) < 0)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int args_parse(struct probe_spec *out, const char *a, size_t n, char *err, size_t errlen)
{
	const char *c;

	switch (out->kind) {
	case PROBE_TCP:
		c = memrchr(a, ',', n);
		if (!c)
			return sv_errf(-EINVAL, err, errlen, "%s: tcp takes ADDR,PORT", out->name);
		if (addr_parse(a, (size_t)(c - a), 0, &out->addr) < 0)
			return sv_errf(-EINVAL, err, errlen, "%s: not an IPv4 or IPv6 address", out->name);
		if (num_parse(c + 1, n - (size_t)(c + 1 - a), 1, 65535, &out->port) < 0)
			return sv_errf(-EINVAL, err, errlen, "%s: the port is 1 to 65535", out->name);
		return 0;
	case PROBE_ICMP:
	case PROBE_SPOOF_MAC:
		if (addr_parse(a, n, 0, &out->addr) < 0)
			return sv_errf(-EINVAL, err, errlen, "%s: not an IPv4 or IPv6 address", out->name);
		return 0;
	case PROBE_SPOOF_IP:
		if (addr_parse(a, n, AF_INET, &out->addr) < 0)
			return sv_errf(-EINVAL, err, errlen, "%s: spoof-ip takes an IPv4 address", out->name);
		return 0;
	case PROBE_VSOCK:
		c = memchr(a, ',', n);
		if (!c)
			return sv_errf(-EINVAL, err, errlen, "%s: vsock takes CID,PORT", out->name);
		if (num_parse(a, (size_t)(c - a), 0, UINT32_MAX - 1, &out->cid) < 0)
			return sv_errf(-EINVAL, err, errlen, "%s: the CID is 0 to 4294967294", out->name);
		if (num_parse(c + 1, n - (size_t)(c + 1 - a), 0, UINT32_MAX - 1, &out->port) < 0)
			return sv_errf(-EINVAL, err, errlen, "%s: the vsock port is 0 to 4294967294", out->name);
		return 0;
	case PROBE_FILE:
		if (a[0] != '/')
			return sv_errf(-EINVAL, err, errlen, "%s: the path is absolute", out->name);
		/* fall through */
	case PROBE_ENV:
		if (n >= PROBE_ARG_MAX)
			return sv_errf(-EINVAL, err, errlen, "%s: longer than %d bytes", out->name, PROBE_ARG_MAX - 1);
		memcpy(out->arg, a, n);
		out->arg[n] = '\0';
		return 0;
	}
	return sv_errf(-EINVAL, err, errlen, "%s: unknown kind", out->name);
}

int probe_spec_parse(const char *text, struct probe_spec *out, char *err, size_t errlen)
{
	const char *f[3], *a;
	size_t len, flen[3], n;
	unsigned k;

	memset(out, 0, sizeof(*out));
	if (!text)
		return sv_errf(-EINVAL, err, errlen, "no spec");
	len = strnlen(text, PROBE_SPEC_LEN_MAX + 1);
	if (len > PROBE_SPEC_LEN_MAX)
		return sv_errf(-EINVAL, err, errlen, "a spec longer than %d bytes", PROBE_SPEC_LEN_MAX);
	for (size_t i = 0; i < len; i++)
		if (text[i] <= ' ' || text[i] > '~')
			return sv_errf(-EINVAL, err, errlen, "a spec with a blank or a byte that is not printable ASCII");
	/* NAME, EXPECTED and KIND end at the first three commas; the rest is the kind's. */
	a = text;
	for (int i = 0; i < 3; i++) {
		const char *c = memchr(a, ',', len - (size_t)(a - text));

		f[i] = a;
		flen[i] = c ? (size_t)(c - a) : len - (size_t)(a - text);
		a = c ? c + 1 : NULL;
		if (!a && i < 2)
			return sv_errf(-EINVAL, err, errlen, "a spec is NAME,EXPECTED,KIND[,ARG...]");
	}
	if (!name_ok(f[0], flen[0]))
		return sv_errf(-EINVAL, err, errlen, "a NAME is 1 to %d of [a-z0-9_.:-]", PROBE_NAME_MAX - 1);
	memcpy(out->name, f[0], flen[0]);
	out->name[flen[0]] = '\0';
	if (is(f[1], flen[1], "blocked"))
		out->expected = PROBE_BLOCKED;
	else if (is(f[1], flen[1], "reached"))
		out->expected = PROBE_REACHED;
	else
		return sv_errf(-EINVAL, err, errlen, "%s: EXPECTED is blocked or reached", out->name);
	for (k = 0; k < N_KINDS; k++)
		if (is(f[2], flen[2], kind_words[k]))
			break;
	if (k == N_KINDS)
		return sv_errf(-EINVAL, err, errlen, "%s: KIND is tcp, icmp, vsock, env, file, spoof-ip or spoof-mac",
			       out->name);
	out->kind = (enum probe_kind)k;
	n = a ? len - (size_t)(a - text) : 0;
	if (n == 0)
		return sv_errf(-EINVAL, err, errlen, "%s: %s needs its arguments", out->name, kind_words[k]);
	return args_parse(out, a, n, err, errlen);
}

static int plan_fail(struct probe_plan *plan, int r)
{
	memset(plan, 0, sizeof(*plan));
	return r;
}

int probe_plan_parse(int n, const char *const *args, struct probe_plan *plan, char *err, size_t errlen)
{
	char sub[200];
	int i = 0;

	memset(plan, 0, sizeof(*plan));
	plan->timeout_ms = PROBE_TIMEOUT_MS_DEFAULT;
	for (; i < n && args[i] && !strncmp(args[i], "--", 2); i++) {
		const char *v = NULL;
		uint32_t ms;

		if (!strcmp(args[i], "--")) {
			i++;
			break;
		}
		if (!strcmp(args[i], "--timeout-ms")) {
			if (i + 1 >= n || !args[i + 1])
				return plan_fail(plan, sv_errf(-EINVAL, err, errlen, "--timeout-ms needs a value"));
			v = args[++i];
		} else if (!strncmp(args[i], "--timeout-ms=", 13)) {
			v = args[i] + 13;
		} else {
			return plan_fail(plan, sv_errf(-EINVAL, err, errlen, "an unknown option"));
		}
		if (num_parse(v, strnlen(v, 32), PROBE_TIMEOUT_MS_MIN, PROBE_TIMEOUT_MS_MAX, &ms) < 0)
			return plan_fail(plan, sv_errf(-EINVAL, err, errlen, "--timeout-ms is %d to %d",
						       PROBE_TIMEOUT_MS_MIN, PROBE_TIMEOUT_MS_MAX));
		plan->timeout_ms = ms;
	}
	if (i >= n)
		return plan_fail(plan, sv_errf(-EINVAL, err, errlen, "no probes"));
	if (n - i > PROBE_SPECS_MAX)
		return plan_fail(plan, sv_errf(-EINVAL, err, errlen, "more than %d probes", PROBE_SPECS_MAX));
	for (; i < n; i++) {
		struct probe_spec *s = &plan->specs[plan->count];

		if (probe_spec_parse(args[i], s, sub, sizeof(sub)) < 0)
			return plan_fail(plan, sv_errf(-EINVAL, err, errlen, "probe %u: %s", plan->count + 1, sub));
		for (unsigned j = 0; j < plan->count; j++)
			if (!strcmp(plan->specs[j].name, s->name))
				return plan_fail(plan, sv_errf(-EINVAL, err, errlen, "probe %u: %s named twice",
							       plan->count + 1, s->name));
		plan->count++;
	}
	return 0;
}
