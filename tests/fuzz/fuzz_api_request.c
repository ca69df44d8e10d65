/*
 * The daemon's request parsers against arbitrary bytes: sandbox and exec
 * bodies (spec.c) and query strings (query.c). Byte 0 picks the parser.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "query.h"
#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Accepted tunnel ports: whole, 1..65535, distinct across the lists, SPEC_TUNNELS_MAX in all, not restricted. */
static void check_tunnels(const struct sandbox_spec *s)
{
	const cJSON *lists[] = {s->encrypted_ports, s->unencrypted_ports, s->h2_ports}, *it;
	double seen[SPEC_TUNNELS_MAX];
	unsigned n = 0;

	for (size_t l = 0; l < 3; l++) {
		if (lists[l] && s->restricted)
			abort();
		cJSON_ArrayForEach(it, lists[l]) {
			if (n == SPEC_TUNNELS_MAX || !cJSON_IsNumber(it) || it->valuedouble < 1 || it->valuedouble > 65535 ||
			    it->valuedouble != (double)(int)it->valuedouble)
				abort();
			for (unsigned i = 0; i < n; i++)
				if (seen[i] == it->valuedouble)
					abort();
			seen[n++] = it->valuedouble;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sandbox_spec s;
	struct exec_spec e;
	struct spec_error err;
	char value[HTTP_PARAM_MAX], *query;
	static char many[8][HTTP_PARAM_MAX];

	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		if (spec_parse_sandbox((const char *)data + 1, size - 1, &s, &err) == 0) {
			/* What was accepted holds up: the invariants the daemon relies on. */
			if (s.cpu < 1 || s.cpu > 32 || s.memory_mib < 64 || !s.image || !s.workdir ||
			    s.workdir[0] != '/' || !s.app || !spec_valid_name(s.app))
				abort();
			check_tunnels(&s);
			spec_sandbox_free(&s);
		} else if (!err.message[0]) {
			abort();
		}
		break;
	case 1:
		if (spec_parse_exec((const char *)data + 1, size - 1, &e, &err) == 0) {
			if (!e.argv || (e.workdir && e.workdir[0] != '/'))
				abort();
			spec_exec_free(&e);
		}
		break;
	default:
		query = malloc(size);
		memcpy(query, data + 1, size - 1);
		query[size - 1] = '\0';
		if (http_query_param(query, "path", value, sizeof(value)) && strlen(value) >= sizeof(value))
			abort();
		if (http_query_params(query, "tag", many, 8) > 8)
			abort();
		free(query);
	}
	return 0;
}
