#ifndef SANDVM_API_SANDBOXD_SPEC_H
#define SANDVM_API_SANDBOXD_SPEC_H

/*
 * What a client asks for, checked field by field: the body of a sandbox
 * create and of an exec (docs/api.md). Pure functions over the request
 * bytes; the result keeps a normalized JSON copy (defaults filled in), which
 * is also what the registry stores.
 */

#include <stdbool.h>
#include <stddef.h>

struct cJSON;

#define SPEC_ARGV_MAX (64 * 1024)
#define SPEC_ENV_MAX_ENTRIES 256
#define SPEC_ENV_MAX_BYTES (64 * 1024)
#define SPEC_TAGS_MAX 32
#define SPEC_TIMEOUT_DEFAULT 300
#define SPEC_TIMEOUT_MAX 86400
#define SPEC_TUNNELS_MAX 16 /* TUNNELS_MAX (tunnels.h) */

struct spec_error {
	char field[65]; /* "" when the body as a whole is wrong */
	char message[256];
};

struct sandbox_spec {
	struct cJSON *json; /* owned; the fields below point into it */
	const char *image;
	unsigned cpu, memory_mib, timeout, idle_timeout;
	const char *workdir;
	const struct cJSON *env;     /* object of strings */
	const char *name;            /* NULL: none */
	const char *app;
	const struct cJSON *tags;    /* object of strings */
	const struct cJSON *command; /* array of strings, NULL: none */
	const struct cJSON *cidr_allowlist; /* array of CIDR strings, NULL: none */
	/* Tunnels (docs/ingress.md): arrays of distinct ports 1..65535, NULL: none */
	const struct cJSON *encrypted_ports, *unencrypted_ports, *h2_ports;
	bool block_network, restricted;
	bool cold_boot; /* boot the kernel rather than restore the shape's template */
	bool isolation_canary; /* the isolation monitor's canary (never from a request body) */
	char id[20]; /* "id": sb-[0-9a-f]{16} a fleet gateway reserved for it (docs/fleet.md); "": none */
};

struct exec_spec {
	struct cJSON *json;
	const struct cJSON *argv;
	const struct cJSON *env;
	const char *workdir; /* NULL: the sandbox's */
	unsigned timeout;
	bool stdin_open;
};

/* 0, or -EINVAL with err filled. */
int spec_parse_sandbox(const char *body, size_t len, struct sandbox_spec *spec, struct spec_error *err);
/* The same checks over an already parsed object; takes json. */
int spec_sandbox_from_json(struct cJSON *json, struct sandbox_spec *spec, struct spec_error *err);
void spec_sandbox_free(struct sandbox_spec *spec);

int spec_parse_exec(const char *body, size_t len, struct exec_spec *spec, struct spec_error *err);
void spec_exec_free(struct exec_spec *spec);

#define SPEC_CIDRS_MAX 100000

/* An array of CIDR strings (NULL is fine); -EINVAL with a message naming the bad one. */
int spec_check_cidrs(const struct cJSON *arr, char *err, size_t errlen);

/* [A-Za-z0-9._-]{1,64} */
bool spec_valid_name(const char *s);
/* [A-Za-z_][A-Za-z0-9_]* */
bool spec_valid_env_name(const char *s);

#endif
