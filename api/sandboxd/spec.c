#include "spec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cidr.h"

#define SPEC_BODY_MAX (1024 * 1024)
#define SPEC_PATH_MAX 4095
#define SPEC_TAG_VALUE_MAX 256

static int fail(struct spec_error *err, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct spec_error *err, const char *field, const char *fmt, ...)
{
	va_list ap;

	snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

bool spec_valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '.' || *s == '_' || *s == '-'))
			return false;
	return true;
}

bool spec_valid_env_name(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9') || strlen(s) > 256)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '_'))
			return false;
	return true;
}

static int get_uint(const cJSON *o, const char *field, unsigned def, unsigned min, unsigned max, unsigned *out,
		    struct spec_error *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
	double d;

	if (!v) {
		*out = def;
		return 0;
	}
	if (!cJSON_IsNumber(v))
		return fail(err, field, "%s must be a number", field);
	d = v->valuedouble;
	if (!isfinite(d) || d != floor(d))
		return fail(err, field, "%s must be a whole number", field);
	if (d < min || d > max)
		return fail(err, field, "%s must be between %u and %u", field, min, max);
	*out = (unsigned)d;
	return 0;
}

static int get_bool(const cJSON *o, const char *field, bool *out, struct spec_error *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

	if (!v) {
		*out = false;
		return 0;
	}
	if (!cJSON_IsBool(v))
		return fail(err, field, "%s must be true or false", field);
	*out = cJSON_IsTrue(v);
	return 0;
}

static int get_string(const cJSON *o, const char *field, const char **out, struct spec_error *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v))
		return fail(err, field, "%s must be a string", field);
	*out = v->valuestring;
	return 0;
}

static int check_path(const char *field, const char *p, struct spec_error *err)
{
	if (p[0] != '/')
		return fail(err, field, "%s must be an absolute path", field);
	if (strlen(p) > SPEC_PATH_MAX)
		return fail(err, field, "%s is longer than %d bytes", field, SPEC_PATH_MAX);
	return 0;
}

/* Rejects fields not in allowed: a typo must not be silently ignored. */
static int check_fields(const cJSON *o, const char *const *allowed, struct spec_error *err)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, o) {
		bool known = false;

		for (const char *const *a = allowed; *a; a++)
			if (it->string && !strcmp(it->string, *a))
				known = true;
		if (!known)
			return fail(err, it->string, "unknown field \"%.64s\"", it->string ? it->string : "");
		for (const cJSON *j = it->next; j; j = j->next)
			if (j->string && !strcmp(j->string, it->string))
				return fail(err, it->string, "field \"%.64s\" given twice", it->string);
	}
	return 0;
}

static int check_env(const cJSON *o, const char *field, struct spec_error *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field), *it;
	size_t n = 0, bytes = 0;

	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsObject(v))
		return fail(err, field, "%s must be an object of strings", field);
	cJSON_ArrayForEach(it, v) {
		if (!spec_valid_env_name(it->string))
			return fail(err, field, "%s: \"%.64s\" is not a valid variable name", field, it->string);
		if (!cJSON_IsString(it))
			return fail(err, field, "%s: the value of %.64s must be a string", field, it->string);
		for (const cJSON *j = it->next; j; j = j->next)
			if (!strcmp(j->string, it->string))
				return fail(err, field, "%s: %.64s given twice", field, it->string);
		bytes += strlen(it->string) + strlen(it->valuestring) + 2;
		if (++n > SPEC_ENV_MAX_ENTRIES)
			return fail(err, field, "%s has more than %d entries", field, SPEC_ENV_MAX_ENTRIES);
	}
	if (bytes > SPEC_ENV_MAX_BYTES)
		return fail(err, field, "%s is larger than %d bytes", field, SPEC_ENV_MAX_BYTES);
	return 0;
}

static int check_argv(const cJSON *o, const char *field, bool required, struct spec_error *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field), *it;
	size_t bytes = 0, n = 0;

	if (!v || cJSON_IsNull(v)) {
		if (required)
			return fail(err, field, "%s is required", field);
		return 0;
	}
	if (!cJSON_IsArray(v))
		return fail(err, field, "%s must be an array of strings", field);
	cJSON_ArrayForEach(it, v) {
		if (!cJSON_IsString(it))
			return fail(err, field, "%s[%zu] must be a string", field, n);
		bytes += strlen(it->valuestring) + 1;
		if (bytes > SPEC_ARGV_MAX)
			return fail(err, field, "%s is larger than %d bytes", field, SPEC_ARGV_MAX);
		n++;
	}
	if (!n)
		return fail(err, field, "%s must not be empty", field);
	if (!cJSON_GetArrayItem(v, 0)->valuestring[0])
		return fail(err, field, "%s[0] must not be empty", field);
	return 0;
}

static int check_tags(const cJSON *o, struct spec_error *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "tags"), *it;
	int n = 0;

	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsObject(v))
		return fail(err, "tags", "tags must be an object of strings");
	cJSON_ArrayForEach(it, v) {
		if (!spec_valid_name(it->string))
			return fail(err, "tags", "tags: \"%.64s\" is not a valid tag name ([A-Za-z0-9._-]{1,64})",
				    it->string);
		if (!cJSON_IsString(it) || strlen(it->valuestring) > SPEC_TAG_VALUE_MAX)
			return fail(err, "tags", "tags: the value of %.64s must be a string of at most %d bytes",
				    it->string, SPEC_TAG_VALUE_MAX);
		for (const cJSON *j = it->next; j; j = j->next)
			if (!strcmp(j->string, it->string))
				return fail(err, "tags", "tags: %.64s given twice", it->string);
		if (++n > SPEC_TAGS_MAX)
			return fail(err, "tags", "tags has more than %d entries", SPEC_TAGS_MAX);
	}
	return 0;
}

int spec_check_cidrs(const cJSON *arr, char *err, size_t errlen)
{
	const cJSON *it;
	struct cidr c;
	size_t n = 0;

	if (!arr)
		return 0;
	if (!cJSON_IsArray(arr)) {
		snprintf(err, errlen, "cidr_allowlist must be an array of CIDRs");
		return -EINVAL;
	}
	cJSON_ArrayForEach(it, arr) {
		if (++n > SPEC_CIDRS_MAX) {
			snprintf(err, errlen, "cidr_allowlist has more than %d entries", SPEC_CIDRS_MAX);
			return -EINVAL;
		}
		if (!cJSON_IsString(it)) {
			snprintf(err, errlen, "cidr_allowlist[%zu] is not a string", n - 1);
			return -EINVAL;
		}
		if (cidr_parse(it->valuestring, &c) < 0) {
			char why[96];

			snprintf(err, errlen, "cidr_allowlist[%zu] \"%.64s\" %s", n - 1, it->valuestring,
				 cidr_parse_why(it->valuestring, why, sizeof(why)));
			return -EINVAL;
		}
	}
	return 0;
}

static cJSON *parse_body(const char *body, size_t len, struct spec_error *err)
{
	cJSON *json;

	if (len > SPEC_BODY_MAX) {
		fail(err, NULL, "body is larger than %d bytes", SPEC_BODY_MAX);
		return NULL;
	}
	if (!len) {
		json = cJSON_CreateObject();
	} else {
		const char *end = NULL;

		json = cJSON_ParseWithLengthOpts(body, len, &end, 0);
		if (!json) {
			fail(err, NULL, "body is not valid JSON (at byte %zu)",
			     end && end >= body ? (size_t)(end - body) : 0);
			return NULL;
		}
		/* Anything but white space after the object is an error, not ignored. */
		for (; end && end < body + len; end++)
			if (*end != ' ' && *end != '\n' && *end != '\r' && *end != '\t') {
				cJSON_Delete(json);
				fail(err, NULL, "body has data after the JSON value");
				return NULL;
			}
	}
	if (!cJSON_IsObject(json)) {
		cJSON_Delete(json);
		fail(err, NULL, "body must be a JSON object");
		return NULL;
	}
	return json;
}

/* Writes the default where the field is absent or null. */
static void set_default(cJSON *o, const char *field, cJSON *v)
{
	const cJSON *old = cJSON_GetObjectItemCaseSensitive(o, field);

	if (old && !cJSON_IsNull(old))
		cJSON_Delete(v);
	else if (old)
		cJSON_ReplaceItemInObjectCaseSensitive(o, field, v);
	else
		cJSON_AddItemToObject(o, field, v);
}

static const char *const sandbox_fields[] = {"image", "cpu", "memory_mib", "timeout", "idle_timeout",
					     "workdir", "env", "name", "app", "tags", "command",
					     "block_network", "restricted", "cidr_allowlist", "encrypted_ports",
					     "unencrypted_ports", "h2_ports", "cold_boot", "id", NULL};

/*
 * "id": the id a fleet gateway reserved in etcd before it forwarded the
 * create (docs/fleet.md), so the sandbox has the id the gateway routes by.
 * Kept out of the stored spec: the sandbox's own "id" says it.
 */
static int take_id(cJSON *json, struct sandbox_spec *s, struct spec_error *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, "id");
	size_t len;

	if (!v || cJSON_IsNull(v)) {
		cJSON_DeleteItemFromObjectCaseSensitive(json, "id");
		return 0;
	}
	len = cJSON_IsString(v) && v->valuestring ? strlen(v->valuestring) : 0;
	if (len != 19 || strncmp(v->valuestring, "sb-", 3) || strspn(v->valuestring + 3, "0123456789abcdef") != 16)
		return fail(err, "id", "id must match sb-[0-9a-f]{16}");
	memcpy(s->id, v->valuestring, len + 1);
	cJSON_DeleteItemFromObjectCaseSensitive(json, "id");
	return 0;
}

static const char *const tunnel_fields[] = {"encrypted_ports", "unencrypted_ports", "h2_ports"};

/* The three tunnel lists together: whole ports 1..65535, none twice, SPEC_TUNNELS_MAX in all. */
static int check_tunnel_ports(const cJSON *o, bool restricted, struct spec_error *err)
{
	uint16_t seen[SPEC_TUNNELS_MAX];
	unsigned n = 0;

	for (size_t f = 0; f < sizeof(tunnel_fields) / sizeof(tunnel_fields[0]); f++) {
		const char *field = tunnel_fields[f];
		const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, field), *it;

		if (!arr || cJSON_IsNull(arr))
			continue;
		if (!cJSON_IsArray(arr))
			return fail(err, field, "%s must be an array of ports 1..65535", field);
		if (restricted && cJSON_GetArraySize(arr) > 0)
			return fail(err, field, "a restricted sandbox takes no connections, so no %s", field);
		cJSON_ArrayForEach(it, arr) {
			double p;

			if (!cJSON_IsNumber(it) || (p = it->valuedouble) < 1 || p > 65535 || p != (double)(int)p)
				return fail(err, field, "%s must hold whole numbers 1..65535", field);
			for (unsigned i = 0; i < n; i++)
				if (seen[i] == (uint16_t)p)
					return fail(err, field, "port %u is named twice in the tunnel ports", (unsigned)p);
			if (n == SPEC_TUNNELS_MAX)
				return fail(err, field, "at most %d tunnel ports in all", SPEC_TUNNELS_MAX);
			seen[n++] = (uint16_t)p;
		}
	}
	return 0;
}

static const cJSON *array_or_null(const cJSON *o, const char *field)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

	return v && !cJSON_IsNull(v) && cJSON_GetArraySize(v) > 0 ? v : NULL;
}

int spec_sandbox_from_json(cJSON *json, struct sandbox_spec *s, struct spec_error *err)
{
	const char *name;
	int r;

	memset(s, 0, sizeof(*s));
	s->json = json;
	if ((r = check_fields(json, sandbox_fields, err)) ||
	    (r = get_string(json, "image", &s->image, err)) ||
	    (r = get_uint(json, "cpu", 1, 1, 32, &s->cpu, err)) ||
	    (r = get_uint(json, "memory_mib", 512, 64, 65536, &s->memory_mib, err)) ||
	    (r = get_uint(json, "timeout", SPEC_TIMEOUT_DEFAULT, 1, SPEC_TIMEOUT_MAX, &s->timeout, err)) ||
	    (r = get_uint(json, "idle_timeout", 0, 0, SPEC_TIMEOUT_MAX, &s->idle_timeout, err)) ||
	    (r = get_string(json, "workdir", &s->workdir, err)) ||
	    (r = check_env(json, "env", err)) || (r = get_string(json, "name", &s->name, err)) ||
	    (r = get_string(json, "app", &s->app, err)) || (r = check_tags(json, err)) ||
	    (r = check_argv(json, "command", false, err)) ||
	    (r = get_bool(json, "block_network", &s->block_network, err)) ||
	    (r = get_bool(json, "restricted", &s->restricted, err)) ||
	    (r = get_bool(json, "cold_boot", &s->cold_boot, err)))
		goto bad;
	if ((r = take_id(json, s, err)))
		goto bad;
	if (s->image && strcmp(s->image, "debian") && strcmp(s->image, "minimal") &&
	    (r = check_path("image", s->image, err)))
		goto bad;
	/* The VMM's drive option list is comma-separated: a comma would add options of the client's. */
	if (s->image && strchr(s->image, ',')) {
		r = fail(err, "image", "image must not contain a comma");
		goto bad;
	}
	if (s->workdir && (r = check_path("workdir", s->workdir, err)))
		goto bad;
	if (s->name && !spec_valid_name(s->name)) {
		r = fail(err, "name", "name must match [A-Za-z0-9._-]{1,64}");
		goto bad;
	}
	if (s->app && !spec_valid_name(s->app)) {
		r = fail(err, "app", "app must match [A-Za-z0-9._-]{1,64}");
		goto bad;
	}
	if ((r = spec_check_cidrs(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(json, "cidr_allowlist"))
					  ? NULL
					  : cJSON_GetObjectItemCaseSensitive(json, "cidr_allowlist"),
				  err->message, sizeof(err->message)))) {
		snprintf(err->field, sizeof(err->field), "cidr_allowlist");
		goto bad;
	}
	if ((s->block_network || s->restricted) && cJSON_GetObjectItemCaseSensitive(json, "cidr_allowlist") &&
	    !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(json, "cidr_allowlist"))) {
		r = fail(err, "cidr_allowlist", "block_network (or restricted) and cidr_allowlist exclude each other");
		goto bad;
	}
	if ((r = check_tunnel_ports(json, s->restricted, err)))
		goto bad;
	if (s->restricted && cJSON_GetObjectItemCaseSensitive(json, "command") &&
	    !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(json, "command"))) {
		r = fail(err, "command", "a restricted sandbox takes its one command as an exec, not as command");
		goto bad;
	}
	/* Normalize: defaults written out, so the stored record says what ran. */
	name = s->image ? s->image : "debian";
	set_default(json, "image", cJSON_CreateString(name));
	set_default(json, "cpu", cJSON_CreateNumber(s->cpu));
	set_default(json, "memory_mib", cJSON_CreateNumber(s->memory_mib));
	set_default(json, "timeout", cJSON_CreateNumber(s->timeout));
	set_default(json, "idle_timeout", cJSON_CreateNumber(s->idle_timeout));
	set_default(json, "workdir", cJSON_CreateString(s->workdir ? s->workdir : "/"));
	set_default(json, "app", cJSON_CreateString(s->app ? s->app : "default"));
	/* A replace of an absent field would leak the new value: delete, then the default says true. */
	if (s->restricted)
		cJSON_DeleteItemFromObjectCaseSensitive(json, "block_network");
	set_default(json, "block_network", cJSON_CreateBool(s->block_network || s->restricted));
	set_default(json, "restricted", cJSON_CreateBool(s->restricted));
	set_default(json, "env", cJSON_CreateObject());
	set_default(json, "tags", cJSON_CreateObject());
	if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(json, "name")))
		cJSON_DeleteItemFromObjectCaseSensitive(json, "name");
	/* Re-point every field into the normalized object. */
	get_string(json, "image", &s->image, err);
	get_string(json, "workdir", &s->workdir, err);
	get_string(json, "app", &s->app, err);
	get_string(json, "name", &s->name, err);
	get_bool(json, "block_network", &s->block_network, err);
	s->env = cJSON_GetObjectItemCaseSensitive(json, "env");
	s->tags = cJSON_GetObjectItemCaseSensitive(json, "tags");
	s->command = cJSON_GetObjectItemCaseSensitive(json, "command");
	if (s->command && cJSON_IsNull(s->command))
		s->command = NULL;
	s->cidr_allowlist = cJSON_GetObjectItemCaseSensitive(json, "cidr_allowlist");
	if (s->cidr_allowlist && cJSON_IsNull(s->cidr_allowlist))
		s->cidr_allowlist = NULL;
	s->encrypted_ports = array_or_null(json, "encrypted_ports");
	s->unencrypted_ports = array_or_null(json, "unencrypted_ports");
	s->h2_ports = array_or_null(json, "h2_ports");
	return 0;
bad:
	cJSON_Delete(json);
	memset(s, 0, sizeof(*s));
	return r;
}

int spec_parse_sandbox(const char *body, size_t len, struct sandbox_spec *s, struct spec_error *err)
{
	cJSON *json = parse_body(body, len, err);

	memset(s, 0, sizeof(*s));
	if (!json)
		return -EINVAL;
	return spec_sandbox_from_json(json, s, err);
}

void spec_sandbox_free(struct sandbox_spec *s)
{
	cJSON_Delete(s->json);
	memset(s, 0, sizeof(*s));
}

static const char *const exec_fields[] = {"argv", "env", "workdir", "timeout", "stdin", NULL};

int spec_parse_exec(const char *body, size_t len, struct exec_spec *s, struct spec_error *err)
{
	cJSON *json = parse_body(body, len, err);
	int r;

	memset(s, 0, sizeof(*s));
	if (!json)
		return -EINVAL;
	s->json = json;
	if ((r = check_fields(json, exec_fields, err)) || (r = check_argv(json, "argv", true, err)) ||
	    (r = check_env(json, "env", err)) || (r = get_string(json, "workdir", &s->workdir, err)) ||
	    (r = get_uint(json, "timeout", 0, 0, SPEC_TIMEOUT_MAX, &s->timeout, err)) ||
	    (r = get_bool(json, "stdin", &s->stdin_open, err)))
		goto bad;
	if (s->workdir && (r = check_path("workdir", s->workdir, err)))
		goto bad;
	s->argv = cJSON_GetObjectItemCaseSensitive(json, "argv");
	s->env = cJSON_GetObjectItemCaseSensitive(json, "env");
	if (s->env && cJSON_IsNull(s->env))
		s->env = NULL;
	return 0;
bad:
	cJSON_Delete(json);
	memset(s, 0, sizeof(*s));
	return r;
}

void spec_exec_free(struct exec_spec *s)
{
	cJSON_Delete(s->json);
	memset(s, 0, sizeof(*s));
}
