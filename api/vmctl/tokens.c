/*
 * vmctl connect-token, connect-tokens, connect-token rm: connect tokens of a
 * sandbox (docs/ingress.md), POST/GET .../connect-tokens and DELETE
 * .../connect-tokens/TID.
 */
#include "commands.h"
#include "http.h"
#include "output.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

static const char token_usage[] =
	"usage: vmctl connect-token ID [--port P] [--user-metadata JSON] [--ttl S] [--json]\n"
	"       vmctl connect-token rm ID TID\n"
	"       vmctl connect-tokens ID [--json]\n"
	"\n"
	"connect-token makes a token that lets its holder reach port P (default 8080) of\n"
	"sandbox ID over HTTPS and WebSocket, from anywhere, at the URL it prints. The\n"
	"holder passes the token as \"Authorization: Bearer TOKEN\", as the\n"
	"_modal_connect_token query parameter or cookie. The server in the sandbox gets\n"
	"each request with an X-Verified-User-Data header holding --user-metadata (a JSON\n"
	"object or string; {} without it), which no client can forge. The token is\n"
	"printed once and kept only hashed; it ends with the sandbox, after --ttl S\n"
	"seconds, or when removed.\n"
	"connect-tokens lists a sandbox's tokens (no secrets); connect-token rm removes\n"
	"one and closes its open connections.\n"
	"\n"
	"  --port P             the port in the sandbox (1..65535, default 8080)\n"
	"  --user-metadata JSON what the server receives as X-Verified-User-Data\n"
	"  --ttl S              seconds the token lives (default: as long as the sandbox)\n"
	"  --json               print sandboxd's JSON\n" VMCTL_COMMON_USAGE;

enum { OPT_PORT = VMCTL_OPT_FIRST_OTHER, OPT_META, OPT_TTL, OPT_JSON };

struct token_opts {
	const char *port, *meta, *ttl;
	bool json;
};

static int token_handle(void *ctx, int opt, const char *arg)
{
	struct token_opts *o = ctx;

	switch (opt) {
	case OPT_PORT: o->port = arg; return 0;
	case OPT_META: o->meta = arg; return 0;
	case OPT_TTL: o->ttl = arg; return 0;
	case OPT_JSON: o->json = true; return 0;
	default: return -EINVAL;
	}
}

static int parse(struct vmctl_args *a, const char *cmd, int argc, char **argv, struct token_opts *o, int *first)
{
	static const struct option opts[] = {
		{"port", required_argument, NULL, OPT_PORT},
		{"user-metadata", required_argument, NULL, OPT_META},
		{"ttl", required_argument, NULL, OPT_TTL},
		{"json", no_argument, NULL, OPT_JSON},
		{0},
	};

	return vmctl_cmd_parse(a, cmd, token_usage, argc, argv, opts, token_handle, o, first);
}

/* One request about sandbox id's tokens; the reply's JSON in *reply (NULL for DELETE, which has none). */
static int call(const struct vmctl_args *a, const char *method, const char *id, const char *suffix,
		const cJSON *body, cJSON **reply)
{
	*reply = NULL;
	return vmctl_call_sandbox(a, method, id, suffix, body, strcmp(method, "DELETE") ? reply : NULL);
}

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static int create(struct vmctl_args *a, const char *id, const struct token_opts *o)
{
	cJSON *body = cJSON_CreateObject(), *reply = NULL;
	uint64_t n;
	int r = VMCTL_EXIT_FAILED;

	if (!body)
		goto oom;
	if (o->port) {
		if (sv_parse_u64(o->port, 1, 65535, &n) < 0) {
			r = vmctl_usage_error("connect-token", "--port wants a number 1..65535");
			goto out;
		}
		if (!cJSON_AddNumberToObject(body, "port", (double)n))
			goto oom;
	}
	if (o->ttl) {
		if (sv_parse_u64(o->ttl, 1, 365ull * 24 * 3600, &n) < 0) {
			r = vmctl_usage_error("connect-token", "--ttl wants whole seconds, 1 or more");
			goto out;
		}
		if (!cJSON_AddNumberToObject(body, "ttl", (double)n))
			goto oom;
	}
	if (o->meta) {
		cJSON *m = cJSON_Parse(o->meta);

		if (!cJSON_IsObject(m) && !cJSON_IsString(m)) {
			cJSON_Delete(m);
			r = vmctl_usage_error("connect-token", "--user-metadata wants a JSON object or string");
			goto out;
		}
		cJSON_AddItemToObject(body, "user_metadata", m);
	}
	r = call(a, "POST", id, "/connect-tokens", body, &reply);
	if (r)
		goto out;
	if (o->json) {
		r = vmctl_print_json(reply) < 0 ? VMCTL_EXIT_FAILED : 0;
	} else {
		printf("url:   %s\ntoken: %s\nid:    %s\n", str(reply, "url"), str(reply, "token"), str(reply, "id"));
		fprintf(stderr, "vmctl: the token is shown this once; sandboxd keeps only its hash\n");
		r = 0;
	}
	goto out;
oom:
	fprintf(stderr, "vmctl: out of memory\n");
	r = VMCTL_EXIT_FAILED;
out:
	cJSON_Delete(reply);
	cJSON_Delete(body);
	return r;
}

static int list(struct vmctl_args *a, const char *id, bool json)
{
	cJSON *reply;
	const cJSON *t;
	int r = call(a, "GET", id, "/connect-tokens", NULL, &reply);

	if (r)
		return r;
	if (json) {
		r = vmctl_print_json(reply) < 0 ? VMCTL_EXIT_FAILED : 0;
	} else {
		printf("%-20s  %-5s  %-12s  %s\n", "ID", "PORT", "EXPIRES", "URL");
		cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(reply, "connect_tokens")) {
			const cJSON *port = cJSON_GetObjectItemCaseSensitive(t, "port");
			const cJSON *exp = cJSON_GetObjectItemCaseSensitive(t, "expires_at");
			char expires[32] = "with sandbox";

			if (cJSON_IsNumber(exp))
				snprintf(expires, sizeof(expires), "%.0f", exp->valuedouble);
			printf("%-20.20s  %-5d  %-12s  %s\n", str(t, "id"), cJSON_IsNumber(port) ? (int)port->valuedouble : 0,
			       expires, str(t, "url"));
		}
	}
	cJSON_Delete(reply);
	return r;
}

static int run(struct vmctl_args *a, const char *cmd, int argc, char **argv)
{
	struct token_opts o = {0};
	int first = 0, r = parse(a, cmd, argc, argv, &o, &first);
	bool rm;

	if (r >= 0)
		return r;
	rm = !strcmp(cmd, "connect-token") && first < argc && !strcmp(argv[first], "rm");
	if (rm) {
		cJSON *none;

		if (argc - first != 3 || !argv[first + 1][0] || !argv[first + 2][0])
			return vmctl_usage_error(cmd, "rm wants a sandbox ID and a token ID");
		if (o.port || o.meta || o.ttl || o.json)
			return vmctl_usage_error(cmd, "rm takes no options");
		{
			char suffix[300];

			if (strchr(argv[first + 2], '/') || strlen(argv[first + 2]) > 200)
				return vmctl_usage_error(cmd, "bad token ID '%s'", argv[first + 2]);
			snprintf(suffix, sizeof(suffix), "/connect-tokens/%s", argv[first + 2]);
			return call(a, "DELETE", argv[first + 1], suffix, NULL, &none);
		}
	}
	if (argc - first != 1 || !argv[first][0])
		return vmctl_usage_error(cmd, argc - first < 1 ? "missing sandbox ID" : "one sandbox ID, please");
	if (!strcmp(cmd, "connect-tokens")) {
		if (o.port || o.meta || o.ttl)
			return vmctl_usage_error(cmd, "--port, --user-metadata and --ttl are for connect-token");
		return list(a, argv[first], o.json);
	}
	return create(a, argv[first], &o);
}

int vmctl_cmd_connect_token(struct vmctl_args *a, int argc, char **argv)
{
	return run(a, "connect-token", argc, argv);
}

int vmctl_cmd_connect_tokens(struct vmctl_args *a, int argc, char **argv)
{
	return run(a, "connect-tokens", argc, argv);
}
