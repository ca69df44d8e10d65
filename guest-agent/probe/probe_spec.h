#ifndef SANDVM_GUEST_AGENT_PROBE_PROBE_SPEC_H
#define SANDVM_GUEST_AGENT_PROBE_PROBE_SPEC_H

/*
 * The isolation probe's command line (docs/security.md, "Isolation
 * monitor"):
 *
 *   sandvm-isolation-probe [--timeout-ms N] SPEC...
 *   SPEC = NAME,EXPECTED,KIND[,ARG...]
 *
 * NAME is [a-z0-9_.:-]{1,63} and unique, EXPECTED "blocked" or "reached",
 * KIND one of
 *
 *   tcp,ADDR,PORT       IPv4 or IPv6 literal (no brackets: the port is split
 *                       off the last comma), port 1..65535
 *   icmp,ADDR           IPv4 or IPv6 literal
 *   vsock,CID,PORT      0..4294967294 each (the "any" values refused)
 *   env,NEEDLE          the rest of the spec, commas included
 *   file,PATH           the rest of the spec, an absolute path
 *   spoof-ip,GATEWAY    IPv4 literal
 *   spoof-mac,GATEWAY   IPv4 or IPv6 literal
 *
 * A spec is printable ASCII without blanks, at most PROBE_SPEC_LEN_MAX
 * bytes. The parsers are pure: they look at their strings and nothing else.
 */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROBE_SPECS_MAX 128
#define PROBE_NAME_MAX 64 /* with its NUL, as the report's NAME */
#define PROBE_ARG_MAX 256 /* env's NEEDLE or file's PATH, with its NUL */
#define PROBE_SPEC_LEN_MAX 512
#define PROBE_TIMEOUT_MS_DEFAULT 1500
#define PROBE_TIMEOUT_MS_MIN 100
#define PROBE_TIMEOUT_MS_MAX 10000

/* The report's words, in isolation_report.h's order. */
enum probe_outcome { PROBE_BLOCKED, PROBE_REACHED, PROBE_ERROR };

enum probe_kind { PROBE_TCP, PROBE_ICMP, PROBE_VSOCK, PROBE_ENV, PROBE_FILE, PROBE_SPOOF_IP, PROBE_SPOOF_MAC };

struct probe_addr {
	int family; /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	};
};

struct probe_spec {
	char name[PROBE_NAME_MAX];
	enum probe_outcome expected; /* PROBE_BLOCKED or PROBE_REACHED */
	enum probe_kind kind;
	struct probe_addr addr; /* tcp, icmp, spoof-ip, spoof-mac */
	uint32_t port;          /* tcp, vsock */
	uint32_t cid;           /* vsock */
	char arg[PROBE_ARG_MAX]; /* env's NEEDLE, file's PATH */
};

struct probe_plan {
	unsigned timeout_ms;
	unsigned count;
	struct probe_spec specs[PROBE_SPECS_MAX];
};

/* One SPEC into out: 0, or -EINVAL with why in err. */
int probe_spec_parse(const char *text, struct probe_spec *out, char *err, size_t errlen);

/*
 * The arguments after the program's name (n of them) into plan: options
 * first ("--timeout-ms N", "--timeout-ms=N", "--" ends them), then 1 to
 * PROBE_SPECS_MAX specs with unique names. 0, or -EINVAL with why in err
 * (plan is then empty).
 */
int probe_plan_parse(int n, const char *const *args, struct probe_plan *plan, char *err, size_t errlen);

/* a as a socket address with port into ss; its length. */
socklen_t probe_addr_sockaddr(const struct probe_addr *a, uint16_t port, struct sockaddr_storage *ss);

const char *probe_outcome_word(enum probe_outcome o);
const char *probe_kind_word(enum probe_kind k);

/* Whether a kind goes through the network (tcp, icmp, vsock): run together, under one deadline. */
bool probe_kind_is_net(enum probe_kind k);
/* Whether a kind changes what the guest sends (spoof-ip, spoof-mac): run last. */
bool probe_kind_is_spoof(enum probe_kind k);

#endif
