/*
 * Request and response heads of the ingress proxy (ingress_head.h). Field
 * names are compared without case and with '_' equal to '-': servers that
 * map header names to variables (CGI, WSGI) read X_Verified_User_Data as
 * X-Verified-User-Data, so neither spelling of a protected name may pass.
 */
#include "ingress_head.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "http_head.h"

#define CONNECTION_NAMES_MAX 32
#define NAME_MAX_LEN 64

struct out {
	char *p;
	size_t cap, len;
	bool overflow;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->overflow || n > o->cap - o->len) {
		o->overflow = true;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c == '_' ? '-' : c;
}

/* a[0..alen) names the same field as b: no case, '_' as '-'. */
static bool name_is(const char *a, size_t alen, const char *b)
{
	size_t i;

	for (i = 0; i < alen && b[i]; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return false;
	return i == alen && !b[i];
}

static bool ci_prefix(const char *s, const char *prefix)
{
	for (; *prefix; s++, prefix++)
		if (lower((unsigned char)*s) != lower((unsigned char)*prefix))
			return false;
	return true;
}

static int hex(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes s[0..n) into out; false when it does not fit. A stray '%' stays as it is. */
static bool decode(const char *s, size_t n, char *out, size_t cap, size_t *len)
{
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '%' && i + 2 < n && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
			c = hex(s[i + 1]) * 16 + hex(s[i + 2]);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (j + 1 >= cap)
			return false;
		out[j++] = (char)c;
	}
	out[j] = '\0';
	*len = j;
	return true;
}

/* Is the query parameter s[0..n) (NAME[=VALUE]) the token's? Its decoded value into value when so. */
static bool is_token_param(const char *s, size_t n, char *value, size_t cap)
{
	const char *eq = memchr(s, '=', n);
	size_t name_len = eq ? (size_t)(eq - s) : n, len;
	char name[sizeof(INGRESS_TOKEN_PARAM) + 1];

	/* Percent-encoded names count too: _modal_connect%5Ftoken is the same parameter. */
	if (name_len > 3 * sizeof(INGRESS_TOKEN_PARAM) || !decode(s, name_len, name, sizeof(name), &len) ||
	    strcmp(name, INGRESS_TOKEN_PARAM))
		return false;
	if (value && (!eq || !decode(eq + 1, n - name_len - 1, value, cap, &len)))
		value[0] = '\0';
	return true;
}

static void add_candidate(struct ingress_token_candidate *out, size_t max, size_t *n, enum ingress_token_place place,
			  const char *token, size_t len)
{
	if (*n == max || len == 0 || len > INGRESS_TOKEN_MAX)
		return;
	out[*n].place = place;
	memcpy(out[*n].token, token, len);
	out[*n].token[len] = '\0';
	(*n)++;
}

/* Calls fn for each "name=value" cookie of a Cookie field, trimmed. */
static void each_cookie(const char *v, void (*fn)(void *ctx, const char *c, size_t n), void *ctx)
{
	while (*v) {
		size_t n;

		while (*v == ' ' || *v == '\t' || *v == ';')
			v++;
		n = strcspn(v, ";");
		if (n) {
			size_t m = n;

			while (m && (v[m - 1] == ' ' || v[m - 1] == '\t'))
				m--;
			if (m)
				fn(ctx, v, m);
		}
		v += n;
	}
}

static bool cookie_is_token(const char *c, size_t n)
{
	size_t name = strlen(INGRESS_TOKEN_PARAM);

	return n > name && c[name] == '=' && !strncmp(c, INGRESS_TOKEN_PARAM, name);
}

struct find_ctx {
	struct ingress_token_candidate *out;
	size_t max, n;
};

static void find_cookie(void *ctx, const char *c, size_t n)
{
	struct find_ctx *f = ctx;
	size_t name = strlen(INGRESS_TOKEN_PARAM);

	if (cookie_is_token(c, n))
		add_candidate(f->out, f->max, &f->n, INGRESS_TOKEN_COOKIE, c + name + 1, n - name - 1);
}

/* The value of "Bearer TOKEN" (scheme without case, one or more spaces), or NULL. */
static const char *bearer(const char *v, size_t *len)
{
	while (*v == ' ' || *v == '\t')
		v++;
	if (!ci_prefix(v, "bearer") || (v[6] != ' ' && v[6] != '\t'))
		return NULL;
	v += 6;
	while (*v == ' ' || *v == '\t')
		v++;
	*len = strcspn(v, " \t");
	return v[*len] ? NULL : v;
}

size_t ingress_token_find(const char *target, const struct http_headers *h, struct ingress_token_candidate *out,
			  size_t max)
{
	struct find_ctx f = {.out = out, .max = max};
	const char *name, *value, *q = strchr(target, '?');

	for (unsigned i = 0; http_headers_at(h, i, &name, &value); i++) {
		const char *t;
		size_t len;

		if (name_is(name, strlen(name), "authorization") && (t = bearer(value, &len)))
			add_candidate(out, max, &f.n, INGRESS_TOKEN_AUTHORIZATION, t, len);
	}
	while (q && *q) {
		char value_buf[INGRESS_TOKEN_MAX + 2];
		size_t n;

		q++;
		n = strcspn(q, "&#");
		if (is_token_param(q, n, value_buf, sizeof(value_buf)))
			add_candidate(out, max, &f.n, INGRESS_TOKEN_QUERY, value_buf, strlen(value_buf));
		q += n;
		if (*q == '#')
			break;
	}
	for (unsigned i = 0; http_headers_at(h, i, &name, &value); i++)
		if (name_is(name, strlen(name), "cookie"))
			each_cookie(value, find_cookie, &f);
	return f.n;
}

/* ---- X-Verified-User-Data ---- */

static void put_u(struct out *o, unsigned u)
{
	char e[8];

	snprintf(e, sizeof(e), "\\u%04x", u & 0xffff);
	put(o, e, 6);
}

/* A JSON string with every byte outside printable ASCII escaped; -EINVAL when s is not UTF-8. */
static int put_string(struct out *o, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	put(o, "\"", 1);
	while (*p) {
		unsigned cp, need;

		if (*p < 0x80) {
			if (*p == '"' || *p == '\\') {
				char e[2] = {'\\', (char)*p};

				put(o, e, 2);
			} else if (*p < 0x20 || *p == 0x7f) {
				put_u(o, *p);
			} else {
				put(o, (const char *)p, 1);
			}
			p++;
			continue;
		}
		if (*p >= 0xc2 && *p <= 0xdf)
			cp = *p & 0x1f, need = 1;
		else if (*p >= 0xe0 && *p <= 0xef)
			cp = *p & 0x0f, need = 2;
		else if (*p >= 0xf0 && *p <= 0xf4)
			cp = *p & 0x07, need = 3;
		else
			return -EINVAL;
		p++;
		for (unsigned i = 0; i < need; i++, p++) {
			if ((*p & 0xc0) != 0x80)
				return -EINVAL;
			cp = cp << 6 | (*p & 0x3f);
		}
		/* Overlong forms, surrogates and code points past U+10FFFF are not UTF-8. */
		if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return -EINVAL;
		if (cp >= 0x10000) {
			cp -= 0x10000;
			put_u(o, 0xd800 | (cp >> 10));
			put_u(o, 0xdc00 | (cp & 0x3ff));
		} else {
			put_u(o, cp);
		}
	}
	put(o, "\"", 1);
	return 0;
}

static int put_json(struct out *o, const cJSON *j, int depth)
{
	const cJSON *it;
	int r;

	if (depth > 32)
		return -E2BIG;
	if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
		bool obj = cJSON_IsObject(j), first = true;

		put(o, obj ? "{" : "[", 1);
		cJSON_ArrayForEach(it, j) {
			if (!first)
				put(o, ",", 1);
			first = false;
			if (obj && (r = put_string(o, it->string ? it->string : "")) < 0)
				return r;
			if (obj)
				put(o, ":", 1);
			if ((r = put_json(o, it, depth + 1)) < 0)
				return r;
			if (o->overflow)
				return -E2BIG;
		}
		put(o, obj ? "}" : "]", 1);
		return 0;
	}
	if (cJSON_IsString(j))
		return put_string(o, j->valuestring);
	if (cJSON_IsNumber(j)) {
		char num[32];
		double v = j->valuedouble;

		if (!isfinite(v))
			snprintf(num, sizeof(num), "null"); /* JSON has no infinity; cJSON reads 1e999 as one */
		else if (v == 0 && signbit(v))
			snprintf(num, sizeof(num), "-0");
		else if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
			snprintf(num, sizeof(num), "%lld", (long long)v);
		else
			snprintf(num, sizeof(num), "%.17g", v);
		puts_(o, num);
		return 0;
	}
	puts_(o, cJSON_IsTrue(j) ? "true" : cJSON_IsFalse(j) ? "false" : "null");
	return 0;
}

int ingress_metadata_encode(const cJSON *metadata, char *out, size_t cap)
{
	char buf[INGRESS_METADATA_MAX + 1];
	struct out o = {.p = buf, .cap = INGRESS_METADATA_MAX};
	int r;

	if (!metadata || cJSON_IsNull(metadata))
		puts_(&o, "{}");
	else if ((r = put_json(&o, metadata, 0)) < 0)
		return r;
	if (o.overflow || o.len + 1 > cap)
		return -E2BIG;
	memcpy(out, buf, o.len);
	out[o.len] = '\0';
	return (int)o.len;
}

/* ---- the forwarded request ---- */

/* Fields the proxy never passes on: hop-by-hop, its own, and what the client may not claim. */
static const char *const dropped_fields[] = {
	"x-verified-user-data", "connection", "keep-alive", "proxy-connection", "te", "trailer",
	"transfer-encoding", "upgrade", "content-length", "host", "expect", "proxy-authorization",
	"proxy-authenticate", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
	"x-real-ip",
};

struct connection_names {
	unsigned n;
	char name[CONNECTION_NAMES_MAX][NAME_MAX_LEN + 1];
};

static void collect_connection_names(const struct http_headers *h, struct connection_names *c)
{
	const char *name, *v;

	c->n = 0;
	for (unsigned i = 0; http_headers_at(h, i, &name, &v); i++) {
		if (!name_is(name, strlen(name), "connection"))
			continue;
		while (*v && c->n < CONNECTION_NAMES_MAX) {
			size_t n;

			while (*v == ' ' || *v == '\t' || *v == ',')
				v++;
			n = strcspn(v, ", \t");
			if (n && n <= NAME_MAX_LEN) {
				memcpy(c->name[c->n], v, n);
				c->name[c->n++][n] = '\0';
			}
			v += n;
		}
	}
}

static bool field_dropped(const char *name, const struct connection_names *c)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < sizeof(dropped_fields) / sizeof(dropped_fields[0]); i++)
		if (name_is(name, len, dropped_fields[i]))
			return true;
	for (unsigned i = 0; i < c->n; i++)
		if (name_is(name, len, c->name[i]))
			return true;
	return false;
}

struct cookie_ctx {
	struct out *o;
	bool any;
	const char *token;
};

static void keep_cookie(void *ctx, const char *c, size_t n)
{
	struct cookie_ctx *k = ctx;

	/* Every cookie of the token's name goes, whichever token it holds. */
	if (cookie_is_token(c, n))
		return;
	if (k->any)
		put(k->o, "; ", 2);
	put(k->o, c, n);
	k->any = true;
}

/* The origin-form of target into o: absolute-form loses its scheme and authority. */
static int put_target(struct out *o, const char *target, const char *method)
{
	const char *path = target, *q;

	if (!strcmp(target, "*")) {
		if (strcmp(method, "OPTIONS"))
			return -EINVAL;
		put(o, "*", 1);
		return 0;
	}
	if (*target != '/') {
		const char *s = strstr(target, "://");

		if (!s || (!ci_prefix(target, "http://") && !ci_prefix(target, "https://")))
			return -EINVAL;
		path = s + 3 + strcspn(s + 3, "/?#");
		if (*path != '/')
			put(o, "/", 1);
	}
	/* Fragments are never sent; the query loses every token parameter. */
	q = path + strcspn(path, "?#");
	put(o, path, (size_t)(q - path));
	if (*q == '?') {
		bool any = false;

		q++;
		while (*q && *q != '#') {
			size_t n = strcspn(q, "&#");

			if (!is_token_param(q, n, NULL, 0)) {
				put(o, any ? "&" : "?", 1);
				put(o, q, n);
				any = true;
			}
			q += n;
			if (*q == '&')
				q++;
		}
	}
	return 0;
}

int ingress_forward_head(const struct ingress_forward *f, char *out, size_t cap)
{
	/* With a NUL after it, for those who read it as a string. */
	struct out o = {.p = out, .cap = cap};
	struct connection_names conn;
	const char *name, *value;
	char num[32];
	int r;

	puts_(&o, f->method);
	put(&o, " ", 1);
	if ((r = put_target(&o, f->target, f->method)) < 0)
		return r;
	puts_(&o, " HTTP/1.1\r\n");
	collect_connection_names(f->headers, &conn);
	for (unsigned i = 0; http_headers_at(f->headers, i, &name, &value); i++) {
		size_t len = strlen(name), tlen;
		const char *t;

		if (field_dropped(name, &conn))
			continue;
		if (name_is(name, len, "authorization") && f->token && (t = bearer(value, &tlen)) &&
		    tlen == strlen(f->token) && !memcmp(t, f->token, tlen))
			continue;
		if (name_is(name, len, "cookie")) {
			struct cookie_ctx k = {.o = &o, .token = f->token};
			size_t start = o.len;

			puts_(&o, "Cookie: ");
			each_cookie(value, keep_cookie, &k);
			if (!k.any && !o.overflow) {
				o.len = start; /* nothing left of it */
				continue;
			}
			puts_(&o, "\r\n");
			continue;
		}
		if (name_is(name, len, "upgrade") && !f->upgrade)
			continue;
		puts_(&o, name);
		put(&o, ": ", 2);
		puts_(&o, value);
		put(&o, "\r\n", 2);
	}
	puts_(&o, "Host: ");
	puts_(&o, f->host);
	puts_(&o, "\r\n");
	if (f->upgrade) {
		const char *up = http_headers_get(f->headers, "upgrade", NULL);

		if (!up)
			return -EINVAL;
		puts_(&o, "Connection: Upgrade\r\nUpgrade: ");
		puts_(&o, up);
		puts_(&o, "\r\n");
	}
	if (f->body == INGRESS_BODY_LENGTH) {
		snprintf(num, sizeof(num), "%llu", (unsigned long long)f->content_length);
		puts_(&o, "Content-Length: ");
		puts_(&o, num);
		puts_(&o, "\r\n");
	} else if (f->body == INGRESS_BODY_CHUNKED) {
		puts_(&o, "Transfer-Encoding: chunked\r\n");
	}
	puts_(&o, INGRESS_VERIFIED_HEADER ": ");
	puts_(&o, f->verified);
	puts_(&o, "\r\nX-Forwarded-For: ");
	puts_(&o, f->client_addr);
	puts_(&o, "\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ");
	puts_(&o, f->host);
	puts_(&o, "\r\n\r\n");
	put(&o, "", 1);
	if (o.overflow)
		return -E2BIG;
	return (int)o.len - 1;
}

bool ingress_response_field_allowed(const char *name, const char *value)
{
	size_t n = strlen(INGRESS_TOKEN_PARAM);

	if (!name_is(name, strlen(name), "set-cookie"))
		return true;
	while (*value == ' ' || *value == '\t')
		value++;
	/* Cookie names are case-sensitive, but no spelling of the token's name is left to chance. */
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)value[i]) != lower((unsigned char)INGRESS_TOKEN_PARAM[i]))
			return true;
	value += n;
	while (*value == ' ' || *value == '\t')
		value++;
	return *value != '=';
}

/* ---- the response ---- */

/* Hop-by-hop fields of a response and its framing, which the proxy sets itself. */
static const char *const response_dropped[] = {
	"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
	"content-length", "proxy-authenticate",
};

int ingress_response_fields(const struct http_headers *h, bool upgrade, bool keep_length, char *out, size_t cap)
{
	struct out o = {.p = out, .cap = cap};
	struct connection_names conn;
	const char *name, *value;

	collect_connection_names(h, &conn);
	for (unsigned i = 0; http_headers_at(h, i, &name, &value); i++) {
		size_t len = strlen(name);
		bool keep = true;

		for (const char *v = value; *v; v++)
			if ((unsigned char)*v < 0x20 && *v != '\t')
				return -EPROTO;
		for (size_t k = 0; k < sizeof(response_dropped) / sizeof(response_dropped[0]); k++)
			if (name_is(name, len, response_dropped[k]))
				keep = false;
		for (unsigned k = 0; k < conn.n && keep; k++)
			if (name_is(name, len, conn.name[k]))
				keep = false;
		if (name_is(name, len, "content-length") && keep_length)
			keep = true;
		if (name_is(name, len, "upgrade") && upgrade)
			keep = true;
		if (!keep || !ingress_response_field_allowed(name, value))
			continue;
		puts_(&o, name);
		put(&o, ": ", 2);
		puts_(&o, value);
		put(&o, "\r\n", 2);
	}
	if (upgrade)
		puts_(&o, "Connection: Upgrade\r\n");
	put(&o, "", 1);
	if (o.overflow)
		return -E2BIG;
	return (int)o.len - 1;
}
