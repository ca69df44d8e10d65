#ifndef SANDVM_API_SANDBOXD_ISOLATION_PROBES_H
#define SANDVM_API_SANDBOXD_ISOLATION_PROBES_H

/*
 * What the isolation monitor's canary probes, and how sandboxd judges what
 * the guest cannot (docs/security.md, "Isolation monitor"). Pure functions:
 * the probe list from a description of the worker (its addresses,
 * listeners, other sandboxes, secrets, the operator's flags), the check of
 * a report against that list, the spoof probes' verdicts from the canary
 * VMM's firewall counters, and the monitor's flags.
 *
 * A probe is one argument of the guest's probe program
 * (/sbin/sandvm-isolation-probe): NAME,EXPECTED,KIND[,ARG...], e.g.
 * "host.192.0.2.7.tcp.443,blocked,tcp,192.0.2.7,443".
 */

#include <stdbool.h>
#include <stddef.h>

#include "isolation_report.h"

struct metrics_fw;

#define ISOLATION_ADDR_MAX 46 /* INET6_ADDRSTRLEN */
#define ISOLATION_SPEC_MAX 256
#define ISOLATION_LOCAL_MAX 16     /* worker addresses probed */
#define ISOLATION_LISTENERS_MAX 8
#define ISOLATION_SANDBOXES_MAX 8  /* other sandboxes probed */
#define ISOLATION_DENY_MAX 16      /* --isolation-probe-deny */
#define ISOLATION_SECRETS_MAX 8    /* host paths that must not exist in the guest */
#define ISOLATION_ALLOW_PRIVATE_MAX 64
#define ISOLATION_INTERVAL_MIN 10
#define ISOLATION_INTERVAL_MAX 86400

/* An IP address and a port: ADDR:PORT, IPv6 as [ADDR]:PORT. */
struct isolation_endpoint {
	char addr[ISOLATION_ADDR_MAX]; /* inet_ntop's form */
	unsigned port;
	bool v6;
};

/* A host path that must not be visible inside a guest, with the word that names its probe. */
struct isolation_secret {
	char label[24]; /* [a-z0-9-]+ */
	char path[200];
};

/* What the probe list is computed from; sandboxd fills it before each run. */
struct isolation_worker {
	char local[ISOLATION_LOCAL_MAX][ISOLATION_ADDR_MAX]; /* the worker's addresses, loopback left out */
	unsigned nlocal;
	/* The API, metrics and ingress listeners (wildcard and loopback addresses included: their ports count). */
	struct isolation_endpoint listeners[ISOLATION_LISTENERS_MAX];
	unsigned nlisteners;
	/* Other running sandboxes with a network: guest and gateway addresses (IPv4). */
	struct {
		char guest[ISOLATION_ADDR_MAX], gateway[ISOLATION_ADDR_MAX];
	} sandboxes[ISOLATION_SANDBOXES_MAX];
	unsigned nsandboxes;
	const char *const *allow_private; /* --allow-private-egress CIDRs */
	unsigned nallow_private;
	struct isolation_endpoint deny[ISOLATION_DENY_MAX];
	unsigned ndeny;
	bool has_peer;
	struct isolation_endpoint peer;
	struct isolation_secret secrets[ISOLATION_SECRETS_MAX];
	unsigned nsecrets;
	char canary_gateway[ISOLATION_ADDR_MAX]; /* the spoof probes' target; "": none (no network) */
	unsigned agent_vsock_port;                /* the canary's agent: not probed */
};

struct isolation_planned {
	char name[ISOLATION_NAME_MAX];
	enum isolation_outcome expected;
	char spec[ISOLATION_SPEC_MAX];
};

struct isolation_plan {
	unsigned count;
	unsigned dropped; /* probes left out to stay within ISOLATION_PROBES_MAX */
	struct isolation_planned probes[ISOLATION_PROBES_MAX];
};

/* The probe list for w into out (every family; see docs/security.md). */
void isolation_plan_build(const struct isolation_worker *w, struct isolation_plan *out);

/* The planned probe named name, or NULL. */
const struct isolation_planned *isolation_plan_find(const struct isolation_plan *p, const char *name);

/*
 * A report answers the plan when it holds every planned probe, with the
 * expectation planned, and nothing else: a guest that leaves out the probe
 * that reached proves nothing. 0, or -EBADMSG with why.
 */
int isolation_plan_check(const struct isolation_plan *p, const struct isolation_report *rep, char *why,
			 size_t cap);

/*
 * The spoof probes (spoof.source-ip, spoof.source-mac) are judged by the
 * host: the guest only says what it sent ("sent N"). Observed is blocked
 * when the VMM's drop_spoof_ip (drop_spoof_mac) counter rose between
 * before and after, reached when it did not (the frames left the VMM), and
 * error when the counters could not be read (known false), when the guest
 * reported an error or sent nothing. Verdicts and the result are judged
 * again.
 */
void isolation_judge_spoof(struct isolation_report *rep, const struct metrics_fw *before,
			   const struct metrics_fw *after, bool known);

/* ADDR:PORT, IPv6 as [ADDR]:PORT. 0, or -EINVAL with why. */
int isolation_endpoint_parse(const char *text, struct isolation_endpoint *out, char *why, size_t cap);

/* --isolation-probe S: whole seconds, ISOLATION_INTERVAL_MIN..ISOLATION_INTERVAL_MAX. 0 or -EINVAL. */
int isolation_interval_parse(const char *text, unsigned *out);

#endif
