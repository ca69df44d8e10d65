#include "args.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool vmctl_args_common(struct vmctl_args *a, int opt, const char *arg)
{
	switch (opt) {
	case VMCTL_OPT_HOST: a->host = arg; return true;
	case VMCTL_OPT_KEY_FILE: a->key_file = arg; return true;
	case VMCTL_OPT_CACERT: a->cacert = arg; return true;
	case VMCTL_OPT_VERBOSE: a->verbose = true; return true;
	default: return false;
	}
}

int vmctl_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vmctl: %s%s", cmd ? cmd : "", cmd ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'vmctl %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
	return VMCTL_EXIT_USAGE;
}

int vmctl_getopt_error(const char *cmd, int c, char **argv)
{
	const char *opt = argv[optind - 1];

	if (optopt && optopt < 256 && (c == ':' || strncmp(opt, "--", 2)))
		return vmctl_usage_error(cmd, c == ':' ? "option '-%c' needs a value" : "unknown option '-%c'",
					 optopt);
	if (c == ':')
		return vmctl_usage_error(cmd, "option '%s' needs a value", opt);
	return vmctl_usage_error(cmd, "unknown option '%s'", opt);
}

int vmctl_parse_number(const char *cmd, const char *opt, const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	/* strtoull takes "-1" as a huge number; a sign is never meant here. */
	if (*s < '0' || *s > '9')
		goto bad;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > (1ull << 53))
		goto bad;
	*out = v;
	return 0;
bad:
	vmctl_usage_error(cmd, "%s: expected a whole number, got '%s'", opt, s);
	return -EINVAL;
}

int vmctl_parse_kv(const char *cmd, const char *opt, const char *s, cJSON *obj)
{
	const char *eq = strchr(s, '=');
	char *key;
	cJSON *v;

	if (!eq || eq == s) {
		vmctl_usage_error(cmd, "%s: expected KEY=VALUE, got '%s'", opt, s);
		return -EINVAL;
	}
	key = strndup(s, (size_t)(eq - s));
	v = cJSON_CreateString(eq + 1);
	if (!key || !v)
		goto nomem;
	cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
	if (!cJSON_AddItemToObject(obj, key, v))
		goto nomem;
	free(key);
	return 0;
nomem:
	free(key);
	cJSON_Delete(v);
	fprintf(stderr, "vmctl: out of memory\n");
	return -ENOMEM;
}

int vmctl_find_dashdash(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--"))
			return i;
	return argc;
}
