/*
 * vmctl net show|set: a sandbox's network policy (its egress firewall) and
 * counters, GET and PUT /v1/sandboxes/ID/network (docs/network.md).
 */
#include "commands.h"
#include "http.h"
#include "output.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char net_usage[] =
	"usage: vmctl net show ID [--json]\n"
	"       vmctl net set ID (--open | --block | --cidr-allow CIDR...) [--json]\n"
	"\n"
	"net show prints the network of a sandbox: its mode (open: anywhere but the\n"
	"always-denied ranges; block: nothing; allowlist: only the CIDRs allowed; none:\n"
	"the sandbox has no network device), its addresses, the frames sent and\n"
	"received, and each firewall verdict counter that is not zero.\n"
	"\n"
	"net set replaces the policy of a running sandbox with exactly one of:\n"
	"  --open               anywhere but the always-denied ranges\n"
	"  --block              no network access (as create --block-network)\n"
	"  --cidr-allow CIDR    only to CIDR (repeatable; IPv4 or IPv6, longest prefix\n"
	"                       wins); the host, other sandboxes and metadata\n"
	"                       addresses stay denied whatever it says\n"
	"It takes effect on the next frame the guest sends (a flow the new policy denies\n"
	"stops there) and prints the new state as net show does.\n"
	"\n"
	"  --json               print sandboxd's JSON\n" VMCTL_COMMON_USAGE;

enum { OPT_JSON = VMCTL_OPT_FIRST_OTHER, OPT_OPEN, OPT_BLOCK };

struct net_opts {
	bool json, open, block;
	cJSON *body; /* the PUT body; holds the --cidr-allow list */
};

static int net_handle(void *ctx, int opt, const char *arg)
{
	struct net_opts *o = ctx;

	switch (opt) {
	case OPT_JSON: o->json = true; return 0;
	case OPT_OPEN: o->open = true; return 0;
	case OPT_BLOCK: o->block = true; return 0;
	case VMCTL_OPT_CIDR_ALLOW: return vmctl_add_cidr("net", "--cidr-allow", o->body, arg) ? -EINVAL : 0;
	default: return -EINVAL;
	}
}

/* Returns -1 to go on, or an exit status; the sub-command and ID from argv[*first]. */
static int net_parse(struct vmctl_args *a, int argc, char **argv, struct net_opts *o, int *first)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ "open", no_argument, NULL, OPT_OPEN },
		{ "block", no_argument, NULL, OPT_BLOCK },
		{ "cidr-allow", required_argument, NULL, VMCTL_OPT_CIDR_ALLOW },
		{ 0 },
	};

	return vmctl_cmd_parse(a, "net", net_usage, argc, argv, opts, net_handle, o, first);
}

/* The sandbox's network, by GET (body NULL) or PUT body, printed. */
static int net_call(const struct vmctl_args *a, const char *id, const cJSON *body, bool json)
{
	cJSON *reply;
	int r = vmctl_call_sandbox(a, body ? "PUT" : "GET", id, "/network", body, &reply);

	if (r)
		return r;
	r = vmctl_print_status(json ? vmctl_print_json(reply) : vmctl_print_network(reply));
	cJSON_Delete(reply);
	return r;
}

int vmctl_cmd_net(struct vmctl_args *a, int argc, char **argv)
{
	struct net_opts o = { .body = cJSON_CreateObject() };
	bool cidrs, set;
	const char *sub;
	int first = 0, forms, r;

	if (!o.body) {
		fprintf(stderr, "vmctl: out of memory\n");
		return VMCTL_EXIT_FAILED;
	}
	r = net_parse(a, argc, argv, &o, &first);
	if (r >= 0)
		goto out;
	if (first >= argc) {
		r = vmctl_usage_error("net", "missing sub-command (show or set)");
		goto out;
	}
	sub = argv[first];
	set = !strcmp(sub, "set");
	if (!set && strcmp(sub, "show")) {
		r = vmctl_usage_error("net", "unknown sub-command '%s' (show or set)", sub);
		goto out;
	}
	if (first + 1 >= argc) {
		r = vmctl_usage_error("net", "%s: missing sandbox ID", sub);
		goto out;
	}
	if (first + 2 < argc) {
		r = vmctl_usage_error("net", "%s: unexpected argument '%s'", sub, argv[first + 2]);
		goto out;
	}
	if (!argv[first + 1][0]) {
		r = vmctl_usage_error("net", "%s: empty sandbox ID", sub);
		goto out;
	}
	cidrs = cJSON_GetObjectItemCaseSensitive(o.body, "cidr_allowlist") != NULL;
	forms = o.open + o.block + cidrs;
	if (!set && forms) {
		r = vmctl_usage_error("net", "show: --open, --block and --cidr-allow are for net set");
		goto out;
	}
	if (set && forms != 1) {
		r = vmctl_usage_error("net", forms ? "set: --open, --block and --cidr-allow exclude one another"
						   : "set: give one of --open, --block or --cidr-allow CIDR");
		goto out;
	}
	if (o.block && !cJSON_AddTrueToObject(o.body, "block_network")) {
		fprintf(stderr, "vmctl: out of memory\n");
		r = VMCTL_EXIT_FAILED;
		goto out;
	}
	/* --open: the body stays {} */
	r = net_call(a, argv[first + 1], set ? o.body : NULL, o.json);
out:
	cJSON_Delete(o.body);
	return r;
}
