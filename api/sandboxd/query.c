/* Query strings: pure functions over the request bytes (fuzzed). */
#include "query.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

bool http_query_param(const char *query, const char *name, char *out, size_t cap)
{
	size_t nlen = strlen(name);

	for (const char *p = query; p && *p;) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len > nlen && !strncmp(p, name, nlen) && p[nlen] == '=') {
			size_t o = 0;

			for (size_t i = nlen + 1; i < len && o + 1 < cap; i++) {
				if (p[i] == '%' && i + 2 < len && isxdigit((unsigned char)p[i + 1]) &&
				    isxdigit((unsigned char)p[i + 2])) {
					char hex[3] = {p[i + 1], p[i + 2], 0};

					out[o++] = (char)strtol(hex, NULL, 16);
					i += 2;
				} else {
					out[o++] = p[i] == '+' ? ' ' : p[i];
				}
			}
			out[o] = '\0';
			return true;
		}
		if (len == nlen && !strncmp(p, name, nlen)) {
			out[0] = '\0';
			return true;
		}
		p = end ? end + 1 : NULL;
	}
	return false;
}

size_t http_query_params(const char *query, const char *name, char out[][HTTP_PARAM_MAX], size_t max)
{
	size_t n = 0;

	for (const char *p = query; p && *p && n < max;) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char seg[HTTP_PARAM_MAX + 64];

		if (len < sizeof(seg)) {
			memcpy(seg, p, len);
			seg[len] = '\0';
			if (http_query_param(seg, name, out[n], HTTP_PARAM_MAX))
				n++;
		}
		p = end ? end + 1 : NULL;
	}
	return n;
}
