/*
 * libFuzzer target: the ingress proxy's head rewriting (ingress_head.c) over
 * arbitrary request targets and header fields, and its metadata encoding
 * over arbitrary JSON. Byte 0 chooses the output size. Whatever the client
 * sends, the forwarded head has exactly one X-Verified-User-Data field (ours)
 * and one Host, ends at its single blank line, holds no bare CR or LF, and
 * no copy of the accepted token in its query, Authorization or cookies;
 * encoded metadata is printable ASCII that parses back to the same JSON.
 * The guest's response fields, rewritten for the client, end in CRLF, hold
 * no bare CR or LF, no framing or hop-by-hop field and no token cookie.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_head.h"
#include "ingress_head.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TOKEN "ct_FUZZTOKEN0123456789"

/* Like the HTTP core: names are tokens, values have no controls (http_head.c refuses the rest). */
static bool field_ok(const char *name, size_t nlen, const char *value, size_t vlen)
{
	if (!nlen)
		return false;
	for (size_t i = 0; i < nlen; i++) {
		bool alnum = ((name[i] | 32) >= 'a' && (name[i] | 32) <= 'z') || (name[i] >= '0' && name[i] <= '9');

		if (!name[i] || (!alnum && !strchr("!#$%&'*+-.^_`|~", name[i])))
			return false;
	}
	for (size_t i = 0; i < vlen; i++)
		if ((unsigned char)value[i] < 0x20 && value[i] != '\t')
			return false;
	return true;
}

static bool name_is_verified(const char *line, size_t n)
{
	static const char want[] = "x-verified-user-data";

	if (n < sizeof(want))
		return false;
	for (size_t i = 0; i < sizeof(want) - 1; i++) {
		char c = line[i] == '_' ? '-' : (char)(line[i] | 32);

		if (c != want[i])
			return false;
	}
	return line[sizeof(want) - 1] == ':';
}

/* "Bearer TOKEN" (any case, any blanks) in v[0..n): the one Authorization value that must not pass. */
static bool bearer_of_token(const char *v, size_t n)
{
	size_t i = 0;

	while (i < n && (v[i] == ' ' || v[i] == '\t'))
		i++;
	if (n - i < 7 || strncasecmp(v + i, "bearer", 6) || (v[i + 6] != ' ' && v[i + 6] != '\t'))
		return false;
	i += 6;
	while (i < n && (v[i] == ' ' || v[i] == '\t'))
		i++;
	return n - i == strlen(TOKEN) && !memcmp(v + i, TOKEN, n - i);
}

/* A cookie named like the token among the ';'-separated ones of v[0..n). */
static bool has_token_cookie(const char *v, size_t n)
{
	size_t i = 0, name = strlen(INGRESS_TOKEN_PARAM);

	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ';'))
			i++;
		if (n - i > name && !memcmp(v + i, INGRESS_TOKEN_PARAM, name) && v[i + name] == '=')
			return true;
		while (i < n && v[i] != ';')
			i++;
	}
	return false;
}

static void check_head(const char *out, int n)
{
	const char *end = strstr(out, "\r\n\r\n");
	unsigned verified = 0, host = 0;

	const char *line_end = strstr(out, "\r\n");

	if (!end || end + 4 != out + n)
		abort();
	/*
	 * The accepted token leaves no copy in the query (what the token finder
	 * would take for one there), the Authorization field or a cookie of its name.
	 */
	{
		static struct http_headers none;
		struct ingress_token_candidate c[1];
		char target[HTTP_MAX_URL + 64];
		const char *sp = memchr(out, ' ', (size_t)(line_end - out));
		size_t tlen;

		if (!sp)
			abort();
		tlen = (size_t)(line_end - sp - 1) - strlen(" HTTP/1.1");
		if (tlen >= sizeof(target))
			abort();
		memcpy(target, sp + 1, tlen);
		target[tlen] = '\0';
		http_headers_init(&none);
		http_headers_finish(&none);
		if (ingress_token_find(target, &none, c, 1))
			abort();
	}
	for (const char *p = out; p < end;) {
		const char *eol = strstr(p, "\r\n");
		size_t len = (size_t)(eol - p);

		if (memchr(p, '\n', len) || memchr(p, '\r', len))
			abort();
		if ((!strncasecmp(p, "authorization:", 14) && bearer_of_token(p + 14, len - 14)) ||
		    (!strncasecmp(p, "cookie:", 7) && has_token_cookie(p + 7, len - 7)))
			abort();
		if (name_is_verified(p, (size_t)(eol - p)))
			verified++;
		if (!strncasecmp(p, "host:", 5))
			host++;
		p = eol + 2;
	}
	if (verified != 1 || host != 1)
		abort();
}

static void response(const struct http_headers *h, uint8_t mode);

static void rewrite(const uint8_t *data, size_t size)
{
	static struct http_headers h;
	static char out[64 * 1024];
	char target[HTTP_MAX_URL];
	const char *p = (const char *)data + 1, *end = (const char *)data + size, *nl;
	struct ingress_token_candidate c[INGRESS_TOKEN_CANDIDATES];
	struct ingress_forward f = {.method = "GET", .target = target, .headers = &h, .token = TOKEN,
				    .verified = "{\"user\":\"fuzz\"}", .client_addr = "192.0.2.1", .host = "x.example"};
	size_t cap = (size_t)data[0] * 64 + 1, tlen;
	int n;

	/* Line 1: the target; the others: "name: value" fields. */
	nl = memchr(p, '\n', (size_t)(end - p));
	tlen = (size_t)((nl ? nl : end) - p);
	if (tlen >= sizeof(target) || memchr(p, 0, tlen))
		return;
	memcpy(target, p, tlen);
	target[tlen] = '\0';
	for (size_t i = 0; i < tlen; i++)
		if ((unsigned char)target[i] <= 0x20 || target[i] == 0x7f)
			return;
	http_headers_init(&h);
	for (p = nl ? nl + 1 : end; p < end; p = nl ? nl + 1 : end) {
		const char *colon;

		nl = memchr(p, '\n', (size_t)(end - p));
		colon = memchr(p, ':', (size_t)((nl ? nl : end) - p));
		if (!colon)
			continue;
		const char *v = colon + 1;
		size_t vlen;

		/* http_parser hands values over without their leading whitespace. */
		while (v < (nl ? nl : end) && (*v == ' ' || *v == '\t'))
			v++;
		vlen = (size_t)((nl ? nl : end) - v);

		if (!field_ok(p, (size_t)(colon - p), v, vlen) || memchr(v, 0, vlen))
			continue;
		if (http_headers_add_name(&h, p, (size_t)(colon - p)) < 0 || http_headers_add_value(&h, v, vlen) < 0)
			break;
	}
	http_headers_finish(&h);
	size_t found = ingress_token_find(target, &h, c, INGRESS_TOKEN_CANDIDATES);

	if (found > INGRESS_TOKEN_CANDIDATES)
		abort();
	for (size_t i = 0; i < found; i++)
		if (!c[i].token[0] || strlen(c[i].token) > INGRESS_TOKEN_MAX)
			abort();
	f.upgrade = data[0] & 1;
	f.body = data[0] % 3;
	f.content_length = size;
	if (cap > sizeof(out))
		cap = sizeof(out);
	response(&h, data[0]);
	n = ingress_forward_head(&f, out, cap);
	if (n >= 0) {
		if ((size_t)n >= cap || out[n])
			abort();
		check_head(out, n);
	}
}

/* The same fields as a guest's response head. */
static void response(const struct http_headers *h, uint8_t mode)
{
	static char out[HTTP_MAX_HEADER_BYTES + 512];
	size_t cap = (size_t)mode * 64 + 1;
	int n;

	if (cap > sizeof(out))
		cap = sizeof(out);
	n = ingress_response_fields(h, mode & 1, mode & 2, out, cap);
	if (n < 0)
		return;
	if ((size_t)n >= cap || out[n] || (n && (n < 2 || memcmp(out + n - 2, "\r\n", 2))))
		abort();
	for (const char *p = out; p < out + n;) {
		const char *eol = strstr(p, "\r\n");
		size_t len = (size_t)(eol - p);

		if (!eol || memchr(p, '\n', len) || memchr(p, '\r', len))
			abort();
		if (!strncasecmp(p, "transfer-encoding:", 18) || !strncasecmp(p, "keep-alive:", 11) ||
		    (!(mode & 2) && !strncasecmp(p, "content-length:", 15)) ||
		    (!strncasecmp(p, "set-cookie:", 11) && !ingress_response_field_allowed("set-cookie", p + 11)))
			abort();
		p = eol + 2;
	}
}

static void metadata(const uint8_t *data, size_t size)
{
	cJSON *j = cJSON_ParseWithLength((const char *)data, size), *back;
	char out[INGRESS_METADATA_MAX + 1];
	int n = ingress_metadata_encode(j, out, sizeof(out));

	if (n >= 0) {
		if ((size_t)n != strlen(out) || n > INGRESS_METADATA_MAX)
			abort();
		for (int i = 0; i < n; i++)
			if (out[i] < 0x20 || out[i] > 0x7e)
				abort();
		back = cJSON_Parse(out);
		if (!back)
			abort();
		/* Printed, not cJSON_Compare: objects may repeat a key, and order counts. */
		if (j && !cJSON_IsNull(j)) {
			char *a = cJSON_PrintUnformatted(j), *b = cJSON_PrintUnformatted(back);

			if (a && b && strcmp(a, b))
				abort();
			cJSON_free(a);
			cJSON_free(b);
		}
		cJSON_Delete(back);
	}
	cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 64 * 1024)
		return 0;
	rewrite(data, size);
	metadata(data + 1, size - 1);
	return 0;
}
