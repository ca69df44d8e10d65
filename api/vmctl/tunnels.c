/*
 * vmctl tunnels: a sandbox's tunnels (docs/ingress.md, "Tunnels"), GET
 * .../tunnels, as a table of PORT, KIND, URL and TCP (the plain endpoint
 * of an unencrypted tunnel, or -), or the API's object with --json.
 */
#include "commands.h"
#include "http.h"
#include "output.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char tunnels_usage[] =
	"usage: vmctl tunnels ID [--json]\n"
	"\n"
	"Lists the tunnels sandbox ID was created with (vmctl create --encrypted-port,\n"
	"--unencrypted-port, --h2-port): the guest port, the kind, the TLS URL anyone can\n"
	"reach it at (no token: a tunnel is public, like a port forward), and for an\n"
	"unencrypted tunnel the host:port of its plain TCP endpoint.\n"
	"\n"
	"  --json               print sandboxd's JSON\n" VMCTL_COMMON_USAGE;

enum { OPT_JSON = VMCTL_OPT_FIRST_OTHER };

static int handle(void *ctx, int opt, const char *arg)
{
	(void)arg;
	if (opt != OPT_JSON)
		return -EINVAL;
	*(bool *)ctx = true;
	return 0;
}

/* A server's string for the terminal: control characters shown as '?'. */
static void cell(char *out, size_t cap, const cJSON *v)
{
	const char *s = cJSON_IsString(v) ? v->valuestring : "-";
	size_t i = 0;

	for (; s[i] && i + 1 < cap; i++)
		out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	out[i] = '\0';
}

static void print_table(const cJSON *reply)
{
	const cJSON *t;

	printf("%-5s  %-11s  %-48s  %s\n", "PORT", "KIND", "URL", "TCP");
	cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(reply, "tunnels")) {
		const cJSON *uport = cJSON_GetObjectItemCaseSensitive(t, "unencrypted_port");
		const cJSON *cport = cJSON_GetObjectItemCaseSensitive(t, "container_port");
		char url[300], host[300], tcp[320] = "-";
		const char *kind = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "h2")) ? "h2"
				   : cJSON_IsNumber(uport)                                   ? "unencrypted"
											     : "encrypted";

		cell(url, sizeof(url), cJSON_GetObjectItemCaseSensitive(t, "url"));
		cell(host, sizeof(host), cJSON_GetObjectItemCaseSensitive(t, "unencrypted_host"));
		if (cJSON_IsNumber(uport))
			snprintf(tcp, sizeof(tcp), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, (int)uport->valuedouble);
		printf("%-5d  %-11s  %-48s  %s\n", cJSON_IsNumber(cport) ? (int)cport->valuedouble : 0, kind, url, tcp);
	}
}

int vmctl_cmd_tunnels(struct vmctl_args *a, int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, NULL, OPT_JSON }, { 0 } };
	cJSON *reply = NULL;
	bool json = false;
	int first, r = vmctl_cmd_parse(a, "tunnels", tunnels_usage, argc, argv, opts, handle, &json, &first);

	if (r >= 0)
		return r;
	if (argc - first != 1 || !argv[first][0])
		return vmctl_usage_error("tunnels", argc - first < 1 ? "missing sandbox ID" : "one sandbox ID, please");
	r = vmctl_call_sandbox(a, "GET", argv[first], "/tunnels", NULL, &reply);
	if (r)
		return r;
	if (json)
		r = vmctl_print_status(vmctl_print_json(reply));
	else
		print_table(reply);
	cJSON_Delete(reply);
	return r;
}
