/*
 * The ingress proxy's head rewriting (api/sandboxd/ingress_head.c): where a
 * token is found, what the guest's server receives, and every way a client
 * could try to forge X-Verified-User-Data or leak the token to the guest.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_head.h"
#include "ingress_head.h"
#include "unit.h"

#define TOKEN "ct_4f2a9b7c1d3e5f60718293a4b5c6d7e8"
#define VERIFIED "{\"user\":\"ann\"}"

/* Fields from "Name: value" lines separated by \n, as the HTTP core would keep them. */
static void headers_of(struct http_headers *h, const char *lines)
{
	static char buf[HTTP_MAX_HEADER_BYTES + 1024];
	char *line, *save = NULL;

	http_headers_init(h);
	assert_true(strlen(lines) < sizeof(buf));
	snprintf(buf, sizeof(buf), "%s", lines);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(line, ':');

		assert_non_null(colon);
		assert_int_equal(http_headers_add_name(h, line, (size_t)(colon - line)), 0);
		colon++;
		while (*colon == ' ')
			colon++;
		assert_int_equal(http_headers_add_value(h, colon, strlen(colon)), 0);
	}
	http_headers_finish(h);
}

/* The forwarded head of a GET of target with the fields in lines. */
static int forward(const char *target, const char *lines, char *out, size_t cap)
{
	static struct http_headers h;
	struct ingress_forward f = {
		.method = "GET",
		.target = target,
		.headers = &h,
		.token = TOKEN,
		.verified = VERIFIED,
		.client_addr = "192.0.2.7",
		.host = "a1b2c3.sandbox.example:8443",
	};

	headers_of(&h, lines);
	return ingress_forward_head(&f, out, cap);
}

static bool starts(const char *s, const char *prefix)
{
	return !strncmp(s, prefix, strlen(prefix));
}

static unsigned count(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *p = hay; (p = strcasestr(p, needle)); p++)
		n++;
	return n;
}

static void token_places(void **state)
{
	struct http_headers h;
	struct ingress_token_candidate c[INGRESS_TOKEN_CANDIDATES];
	size_t n;

	(void)state;
	headers_of(&h, "Authorization: Bearer " TOKEN "\nCookie: a=1; _modal_connect_token=ck; b=2");
	n = ingress_token_find("/x?y=1&_modal_connect_token=qq", &h, c, INGRESS_TOKEN_CANDIDATES);
	assert_int_equal(n, 3);
	assert_int_equal(c[0].place, INGRESS_TOKEN_AUTHORIZATION);
	assert_string_equal(c[0].token, TOKEN);
	assert_int_equal(c[1].place, INGRESS_TOKEN_QUERY);
	assert_string_equal(c[1].token, "qq");
	assert_int_equal(c[2].place, INGRESS_TOKEN_COOKIE);
	assert_string_equal(c[2].token, "ck");
	/* A percent-encoded name and value are the same parameter. */
	headers_of(&h, "Accept: */*");
	n = ingress_token_find("/?_modal_connect%5Ftoken=a%2Fb", &h, c, INGRESS_TOKEN_CANDIDATES);
	assert_int_equal(n, 1);
	assert_string_equal(c[0].token, "a/b");
	/* Other schemes, an empty token, one too long, a fragment: none. */
	headers_of(&h, "Authorization: Basic dXNlcjpwYXNz\nCookie: _modal_connect_token=");
	assert_int_equal(ingress_token_find("/#_modal_connect_token=x", &h, c, INGRESS_TOKEN_CANDIDATES), 0);
	{
		char target[400] = "/?_modal_connect_token=";

		memset(target + strlen(target), 'x', INGRESS_TOKEN_MAX + 1);
		assert_int_equal(ingress_token_find(target, &h, c, INGRESS_TOKEN_CANDIDATES), 0);
	}
	/* Bounded: never more than asked for. */
	headers_of(&h, "Cookie: _modal_connect_token=1; _modal_connect_token=2; _modal_connect_token=3");
	assert_int_equal(ingress_token_find("/?_modal_connect_token=0&_modal_connect_token=9", &h, c, 4), 4);
	/* bearer is a scheme without case; the token must be the whole rest. */
	headers_of(&h, "authorization: bEaReR   " TOKEN);
	assert_int_equal(ingress_token_find("/", &h, c, 1), 1);
	assert_string_equal(c[0].token, TOKEN);
	headers_of(&h, "Authorization: Bearer a b");
	assert_int_equal(ingress_token_find("/", &h, c, 1), 0);
}

static void forwarded_head(void **state)
{
	char out[8192];
	int n;

	(void)state;
	n = forward("/app/x?b=2&_modal_connect_token=" TOKEN "&c=%20&d", "User-Agent: t\nAccept: text/html", out,
		    sizeof(out));
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(out));
	assert_true(starts(out, "GET /app/x?b=2&c=%20&d HTTP/1.1\r\n"));
	assert_non_null(strstr(out, "\r\nUser-Agent: t\r\nAccept: text/html\r\n"));
	assert_non_null(strstr(out, "\r\nHost: a1b2c3.sandbox.example:8443\r\n"));
	assert_non_null(strstr(out, "\r\nX-Verified-User-Data: " VERIFIED "\r\n"));
	assert_non_null(strstr(out, "\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\n"));
	assert_non_null(strstr(out, "\r\nX-Forwarded-Host: a1b2c3.sandbox.example:8443\r\n\r\n"));
	assert_null(strstr(out, TOKEN));
	assert_int_equal(count(out, "\r\n\r\n"), 1);
	/* Only the token's parameter goes; one alone leaves no '?'. */
	n = forward("/?_modal_connect_token=x", "", out, sizeof(out));
	assert_true(starts(out, "GET / HTTP/1.1\r\n"));
	n = forward("/p?_modal_connect_token=x&_modal_connect_token=y&_modal_connect%5ftoken=z", "", out, sizeof(out));
	assert_true(starts(out, "GET /p HTTP/1.1\r\n"));
	/* Framing is the proxy's. */
	{
		static struct http_headers h;
		struct ingress_forward f = {.method = "POST", .target = "/u", .headers = &h, .token = TOKEN,
					    .verified = "{}", .client_addr = "::1", .host = "h",
					    .body = INGRESS_BODY_LENGTH, .content_length = 12};

		headers_of(&h, "Content-Length: 99\nTransfer-Encoding: chunked");
		assert_true(ingress_forward_head(&f, out, sizeof(out)) > 0);
		assert_int_equal(count(out, "Content-Length"), 1);
		assert_non_null(strstr(out, "Content-Length: 12\r\n"));
		assert_null(strstr(out, "Transfer-Encoding"));
		f.body = INGRESS_BODY_CHUNKED;
		assert_true(ingress_forward_head(&f, out, sizeof(out)) > 0);
		assert_null(strstr(out, "Content-Length"));
		assert_int_equal(count(out, "Transfer-Encoding: chunked"), 1);
	}
}

/* Each forgery: the value the client chose never reaches the guest. */
static void forgeries(void **state)
{
	static const char *const attempts[] = {
		"X-Verified-User-Data: {\"user\":\"root\"}",
		"x-verified-user-data: {\"user\":\"root\"}",
		"X-VERIFIED-USER-DATA: {\"user\":\"root\"}",
		"X_Verified_User_Data: {\"user\":\"root\"}",
		"X-Verified_User-Data: {\"user\":\"root\"}",
		"X-Verified-User-Data: {\"user\":\"root\"}\nX-Verified-User-Data: {\"user\":\"root\"}",
		"Connection: X-Verified-User-Data\nX-Verified-User-Data: {\"user\":\"root\"}",
		"X-Forwarded-For: 10.0.0.1 {\"user\":\"root\"}",
		"Forwarded: for=\"{\\\"user\\\":\\\"root\\\"}\"",
		"X-Real-IP: {\"user\":\"root\"}",
		"Host: {\"user\":\"root\"}.evil",
	};
	char out[8192];

	(void)state;
	for (size_t i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
		if (forward("/", attempts[i], out, sizeof(out)) <= 0)
			fail_msg("attempt %zu refused", i);
		if (strstr(out, "root"))
			fail_msg("attempt %zu reached the guest:\n%s", i, out);
		assert_int_equal(count(out, "X-Verified-User-Data:"), 1);
		assert_int_equal(count(out, "\nHost:"), 1);
	}
	/* An absolute-form target naming another host is forwarded in origin-form, with the ingress Host. */
	assert_true(forward("http://internal.example/admin?x=1", "", out, sizeof(out)) > 0);
	assert_true(starts(out, "GET /admin?x=1 HTTP/1.1\r\n"));
	assert_null(strstr(out, "internal.example"));
	assert_true(forward("HTTPS://other", "", out, sizeof(out)) > 0);
	assert_true(starts(out, "GET / HTTP/1.1\r\n"));
	/* Targets that cannot be forwarded. */
	assert_int_equal(forward("example.com:443", "", out, sizeof(out)), -EINVAL);
	assert_int_equal(forward("*", "", out, sizeof(out)), -EINVAL);
	assert_int_equal(forward("ftp://x/y", "", out, sizeof(out)), -EINVAL);
}

static void hop_by_hop_and_connection(void **state)
{
	char out[8192];

	(void)state;
	assert_true(forward("/", "Connection: keep-alive, X-Secret, Host, Content-Length\nX-Secret: s\nKeep-Alive: 5\n"
				 "TE: trailers\nTrailer: X-Verified-User-Data\nUpgrade: websocket\nExpect: 100-continue\n"
				 "Proxy-Authorization: Basic eA==\nX-Kept: k",
			    out, sizeof(out)) > 0);
	assert_null(strstr(out, "X-Secret"));
	assert_null(strcasestr(out, "keep-alive"));
	assert_null(strstr(out, "TE:"));
	assert_null(strstr(out, "Trailer"));
	assert_null(strstr(out, "Upgrade"));
	assert_null(strstr(out, "Expect"));
	assert_null(strstr(out, "Proxy-Authorization"));
	assert_non_null(strstr(out, "X-Kept: k\r\n"));
	/* Connection can never take Host away. */
	assert_int_equal(count(out, "\nHost:"), 1);
	/* A WebSocket handshake keeps its Upgrade and its Sec-WebSocket fields. */
	{
		static struct http_headers h;
		struct ingress_forward f = {.method = "GET", .target = "/ws", .headers = &h, .token = TOKEN,
					    .verified = "{}", .client_addr = "::1", .host = "h", .upgrade = true};

		headers_of(&h, "Connection: Upgrade\nUpgrade: websocket\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\n"
			       "Sec-WebSocket-Version: 13");
		assert_true(ingress_forward_head(&f, out, sizeof(out)) > 0);
		assert_non_null(strstr(out, "Connection: Upgrade\r\nUpgrade: websocket\r\n"));
		assert_non_null(strstr(out, "Sec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"));
		assert_int_equal(count(out, "Upgrade: websocket"), 1);
		headers_of(&h, "Connection: Upgrade");
		assert_int_equal(ingress_forward_head(&f, out, sizeof(out)), -EINVAL);
	}
}

static void token_never_reaches_guest(void **state)
{
	char out[8192];

	(void)state;
	/* This token's Authorization goes; another one (the app's own) stays. */
	assert_true(forward("/", "Authorization: Bearer " TOKEN, out, sizeof(out)) > 0);
	assert_null(strstr(out, "Authorization"));
	assert_true(forward("/", "Authorization: Bearer app-token", out, sizeof(out)) > 0);
	assert_non_null(strstr(out, "Authorization: Bearer app-token\r\n"));
	/* Cookies: the token's go (any value), the others stay in order; an emptied field goes. */
	assert_true(forward("/", "Cookie: a=1; _modal_connect_token=" TOKEN "; b=2\nCookie: _modal_connect_token=old",
			    out, sizeof(out)) > 0);
	assert_non_null(strstr(out, "\r\nCookie: a=1; b=2\r\n"));
	assert_int_equal(count(out, "Cookie:"), 1);
	assert_null(strstr(out, "_modal_connect_token"));
	assert_null(strstr(out, "old"));
}

static void bounded_output(void **state)
{
	char out[8192];
	static char lines[HTTP_MAX_HEADER_BYTES];
	size_t n = 0;

	(void)state;
	/* Every cut of the buffer: the head fits or -E2BIG, never a partial success. */
	for (size_t cap = 0; cap < 400; cap++) {
		int r = forward("/a?b=c", "Accept: x\nCookie: z=1", out, cap);

		assert_true(r == -E2BIG || (r > 0 && (size_t)r < cap && out[r] == '\0'));
	}
	/* The most fields, each at length. */
	for (int i = 0; i < HTTP_MAX_HEADERS - 1; i++) {
		n += (size_t)snprintf(lines + n, sizeof(lines) - n, "X-F%02d: %0200d\n", i, 0);
		assert_true(n < sizeof(lines));
	}
	lines[n - 1] = '\0';
	{
		static char big[64 * 1024];

		assert_true(forward("/", lines, big, sizeof(big)) > 0);
		assert_int_equal(forward("/", lines, out, 1024), -E2BIG);
	}
}

static void metadata(void **state)
{
	char out[INGRESS_METADATA_MAX + 1];
	cJSON *j;

	(void)state;
	assert_int_equal(ingress_metadata_encode(NULL, out, sizeof(out)), 2);
	assert_string_equal(out, "{}");
	j = cJSON_Parse("{\"user\": \"ann\", \"n\": 3, \"f\": 1.5, \"ok\": true, \"l\": [1, null]}");
	assert_true(ingress_metadata_encode(j, out, sizeof(out)) > 0);
	assert_string_equal(out, "{\"user\":\"ann\",\"n\":3,\"f\":1.5,\"ok\":true,\"l\":[1,null]}");
	cJSON_Delete(j);
	/* CR, LF, quotes and everything past ASCII are escapes. */
	j = cJSON_Parse("{\"a\\r\\nb\": \"\\\"\\\\ é 😀 \\u007f\"}");
	assert_true(ingress_metadata_encode(j, out, sizeof(out)) > 0);
	assert_string_equal(out, "{\"a\\u000d\\u000ab\":\"\\\"\\\\ \\u00e9 \\ud83d\\ude00 \\u007f\"}");
	for (const char *p = out; *p; p++)
		assert_true(*p >= 0x20 && *p < 0x7f);
	cJSON_Delete(j);
	/* Numbers JSON cannot hold become null; -0 stays -0; big ones are not cast out of range. */
	j = cJSON_Parse("[1e999, -1e999, -0, 7.7e59, 123456789012]");
	assert_true(ingress_metadata_encode(j, out, sizeof(out)) > 0);
	assert_string_equal(out, "[null,null,-0,7.6999999999999999e+59,123456789012]");
	cJSON_Delete(j);
	/* A string is its JSON. */
	j = cJSON_CreateString("tenant-7");
	assert_true(ingress_metadata_encode(j, out, sizeof(out)) > 0);
	assert_string_equal(out, "\"tenant-7\"");
	cJSON_Delete(j);
	/* Not UTF-8: refused. */
	{
		static const char *const bad[] = {"\xff", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
						  "\xc3"};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			j = cJSON_CreateString(bad[i]);
			if (ingress_metadata_encode(j, out, sizeof(out)) != -EINVAL)
				fail_msg("case %zu accepted", i);
			cJSON_Delete(j);
		}
	}
	/* 511 encoded characters fit; 512 do not. */
	{
		char s[600];

		memset(s, 'x', 509);
		s[509] = '\0';
		j = cJSON_CreateString(s);
		assert_int_equal(ingress_metadata_encode(j, out, sizeof(out)), 511);
		cJSON_Delete(j);
		s[509] = 'x';
		s[510] = '\0';
		j = cJSON_CreateString(s);
		assert_int_equal(ingress_metadata_encode(j, out, sizeof(out)), -E2BIG);
		cJSON_Delete(j);
	}
	/* Deep nesting is refused, not recursed into without end. */
	{
		char deep[200];
		size_t n = 0;

		for (int i = 0; i < 40; i++)
			deep[n++] = '[';
		for (int i = 0; i < 40; i++)
			deep[n++] = ']';
		deep[n] = '\0';
		j = cJSON_Parse(deep);
		assert_int_equal(ingress_metadata_encode(j, out, sizeof(out)), -E2BIG);
		cJSON_Delete(j);
	}
}

static void guest_set_cookie(void **state)
{
	(void)state;
	assert_false(ingress_response_field_allowed("Set-Cookie", "_modal_connect_token=x; Path=/"));
	assert_false(ingress_response_field_allowed("set-cookie", "  _MODAL_CONNECT_TOKEN = x"));
	assert_true(ingress_response_field_allowed("Set-Cookie", "session=abc; HttpOnly"));
	assert_true(ingress_response_field_allowed("Set-Cookie", "_modal_connect_tokens=x"));
	assert_true(ingress_response_field_allowed("Content-Type", "_modal_connect_token=x"));
}

/* The guest's response head as the client gets it. */
static void response_fields(void **state)
{
	static struct http_headers h;
	char out[1024];
	int n;

	(void)state;
	headers_of(&h, "Content-Type: text/html\nConnection: keep-alive, X-Hop\nX-Hop: 1\nKeep-Alive: timeout=5\n"
		       "Transfer-Encoding: chunked\nContent-Length: 12\nSet-Cookie: _modal_connect_token=stolen\n"
		       "Set-Cookie: a=b\nUpgrade: h2c\nTE: trailers\nTrailer: X-T\nX-App: yes");
	n = ingress_response_fields(&h, false, false, out, sizeof(out));
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(out));
	assert_string_equal(out, "Content-Type: text/html\r\nSet-Cookie: a=b\r\nX-App: yes\r\n");
	/* A reply without a body keeps its Content-Length; a 101 its Upgrade. */
	n = ingress_response_fields(&h, false, true, out, sizeof(out));
	assert_non_null(strstr(out, "Content-Length: 12\r\n"));
	headers_of(&h, "Upgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: abc");
	n = ingress_response_fields(&h, true, false, out, sizeof(out));
	assert_string_equal(out, "Upgrade: websocket\r\nSec-WebSocket-Accept: abc\r\nConnection: Upgrade\r\n");
	/* Bounded; a control character in a value is a malformed response. */
	assert_int_equal(ingress_response_fields(&h, true, false, out, 20), -E2BIG);
	headers_of(&h, "X-Bad: a\x01b");
	assert_int_equal(ingress_response_fields(&h, false, false, out, sizeof(out)), -EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(token_places),
		cmocka_unit_test(forwarded_head),
		cmocka_unit_test(forgeries),
		cmocka_unit_test(hop_by_hop_and_connection),
		cmocka_unit_test(token_never_reaches_guest),
		cmocka_unit_test(bounded_output),
		cmocka_unit_test(metadata),
		cmocka_unit_test(guest_set_cookie),
		cmocka_unit_test(response_fields),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
