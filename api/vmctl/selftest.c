/*
 * vmctl selftest isolation: one run of the isolation monitor on demand,
 * POST /v1/selftest/isolation (docs/security.md, "Isolation monitor"),
 * printed as a table of probes and a summary line.
 */
#include "commands.h"
#include "http.h"
#include "output.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char selftest_usage[] =
	"usage: vmctl selftest isolation [--json]\n"
	"\n"
	"Runs the isolation monitor once on the worker: sandboxd starts a canary sandbox\n"
	"whose guest probes the walls every sandbox has (the worker's addresses and\n"
	"listeners, metadata services, private ranges, other sandboxes, vsock, the\n"
	"worker's secrets, spoofed frames) and deletes it. Waits for the run (a run\n"
	"already going is joined; at most about two minutes), then prints each probe:\n"
	"PROBE, EXPECTED, OBSERVED, VERDICT (held, breached, failed) and DETAIL, and\n"
	"  isolation: ok|breached|unknown (N probes, M breached)\n"
	"\n"
	"Exit status: 0 ok (every wall held), 1 breached (a wall did not hold; sandboxd's\n"
	"log names it), 2 unknown (the run proved nothing: the canary did not start, a\n"
	"probe errored, the report was refused; the reason is printed).\n"
	"\n"
	"  --json               print sandboxd's JSON\n" VMCTL_COMMON_USAGE;

enum { OPT_JSON = VMCTL_OPT_FIRST_OTHER };

#define EXIT_OK 0
#define EXIT_BREACHED 1
#define EXIT_UNKNOWN 2

static int json_handle(void *ctx, int opt, const char *arg)
{
	(void)arg;
	if (opt != OPT_JSON)
		return -EINVAL;
	*(bool *)ctx = true;
	return 0;
}

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static void print_table(const cJSON *reply)
{
	const cJSON *probes = cJSON_GetObjectItemCaseSensitive(reply, "probes"), *p;
	int w = (int)strlen("PROBE");

	cJSON_ArrayForEach(p, probes)
		if ((int)strlen(str(p, "name")) > w)
			w = (int)strlen(str(p, "name"));
	if (cJSON_GetArraySize(probes) > 0)
		printf("%-*s  %-8s  %-8s  %-8s  %s\n", w, "PROBE", "EXPECTED", "OBSERVED", "VERDICT", "DETAIL");
	cJSON_ArrayForEach(p, probes)
		printf("%-*s  %-8s  %-8s  %-8s  %s\n", w, str(p, "name"), str(p, "expected"), str(p, "observed"),
		       str(p, "verdict"), str(p, "detail"));
}

/* The exit status of the run's result; the summary on stdout (and the reason on stderr) when not json. */
static int summarize(const cJSON *reply, bool json)
{
	const cJSON *probes = cJSON_GetObjectItemCaseSensitive(reply, "probes"), *p;
	const char *result = str(reply, "result"), *reason = str(reply, "reason");
	unsigned n = 0, breached = 0;

	cJSON_ArrayForEach(p, probes) {
		n++;
		breached += !strcmp(str(p, "verdict"), "breached");
	}
	if (strcmp(result, "ok") && strcmp(result, "breached"))
		result = "unknown";
	if (!json) {
		printf("isolation: %s (%u probes, %u breached)\n", result, n, breached);
		if (reason[0])
			fprintf(stderr, "vmctl: %s\n", reason);
	}
	return !strcmp(result, "ok") ? EXIT_OK : !strcmp(result, "breached") ? EXIT_BREACHED : EXIT_UNKNOWN;
}

int vmctl_cmd_selftest(struct vmctl_args *a, int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, NULL, OPT_JSON }, { 0 } };
	bool json = false;
	cJSON *reply;
	int first, r;

	r = vmctl_cmd_parse(a, "selftest", selftest_usage, argc, argv, opts, json_handle, &json, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return vmctl_usage_error("selftest", "missing what to test (isolation)");
	if (strcmp(argv[first], "isolation"))
		return vmctl_usage_error("selftest", "unknown self-test '%s' (isolation)", argv[first]);
	if (first + 1 < argc)
		return vmctl_usage_error("selftest", "unexpected argument '%s'", argv[first + 1]);
	r = vmctl_call(a, true, "POST", "/v1/selftest/isolation", NULL, &reply);
	if (r)
		return r;
	if (json) {
		r = vmctl_print_status(vmctl_print_json(reply));
		if (r) {
			cJSON_Delete(reply);
			return r;
		}
	} else {
		print_table(reply);
	}
	r = summarize(reply, json);
	cJSON_Delete(reply);
	return r;
}
