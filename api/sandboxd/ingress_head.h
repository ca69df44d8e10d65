#ifndef SANDVM_API_SANDBOXD_INGRESS_HEAD_H
#define SANDVM_API_SANDBOXD_INGRESS_HEAD_H

/*
 * What the ingress proxy does to a request head and a response head, as pure
 * functions over buffers (docs/ingress.md): where a client put its connect
 * token, the head forwarded to the server in the guest (rebuilt from parsed
 * fields, never the client's bytes), the one X-Verified-User-Data header, and
 * the response fields the guest may not set. Nothing here allocates or does
 * I/O; every output is bounded by its buffer.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_headers;
struct cJSON;

#define INGRESS_TOKEN_PARAM "_modal_connect_token"
#define INGRESS_VERIFIED_HEADER "X-Verified-User-Data"
/* The encoded metadata, without its NUL. */
#define INGRESS_METADATA_MAX 511
#define INGRESS_TOKEN_MAX 128
/* Authorization, the query, each Cookie field: at most this many candidates are tried. */
#define INGRESS_TOKEN_CANDIDATES 4

enum ingress_token_place {
	INGRESS_TOKEN_AUTHORIZATION,
	INGRESS_TOKEN_QUERY,
	INGRESS_TOKEN_COOKIE,
};

struct ingress_token_candidate {
	enum ingress_token_place place;
	char token[INGRESS_TOKEN_MAX + 1];
};

/*
 * The tokens a request may carry, in the order to try them: an
 * "Authorization: Bearer" value, then each _modal_connect_token query
 * parameter (percent-decoded, names too), then each such cookie. Values
 * that are empty or longer than INGRESS_TOKEN_MAX are skipped. Returns how
 * many were found (at most max).
 */
size_t ingress_token_find(const char *target, const struct http_headers *h, struct ingress_token_candidate *out,
			  size_t max);

/*
 * The value of X-Verified-User-Data for user metadata: compact JSON in which
 * everything outside printable ASCII is a \uXXXX escape, so no CR, LF or
 * byte over 0x7e reaches the header; NULL metadata is {}. Returns its length,
 * -E2BIG over INGRESS_METADATA_MAX, or -EINVAL for a string that is not UTF-8.
 */
int ingress_metadata_encode(const struct cJSON *metadata, char *out, size_t cap);

enum ingress_body { INGRESS_BODY_NONE, INGRESS_BODY_LENGTH, INGRESS_BODY_CHUNKED };

struct ingress_forward {
	const char *method;                 /* as parsed */
	const char *target;                 /* as received: origin-form, absolute-form or "*" */
	const struct http_headers *headers; /* the client's fields */
	const char *token;                  /* the token accepted: removed from Authorization, query, Cookie */
	const char *verified;               /* ingress_metadata_encode's output */
	const char *client_addr;            /* X-Forwarded-For */
	const char *host;                   /* the ingress host the client named: Host, X-Forwarded-Host */
	enum ingress_body body;             /* how the proxy frames the body it forwards */
	uint64_t content_length;            /* with INGRESS_BODY_LENGTH */
	bool upgrade;                       /* a WebSocket handshake: Connection: Upgrade and Upgrade kept */
};

/*
 * The request head for the guest: request line (origin-form target, token
 * parameters removed, the rest of the query byte for byte), the client's
 * fields less hop-by-hop ones, those Connection names, every copy of
 * X-Verified-User-Data (any case, '_' for '-'), forwarding fields, this
 * token's Authorization and cookie; then Host, framing, exactly one
 * X-Verified-User-Data, X-Forwarded-For/-Proto/-Host, and the blank line.
 * Returns the head's length (a NUL follows it), -E2BIG when it does not
 * fit, -EINVAL for a target that cannot be forwarded (authority-form, or
 * "*" other than for OPTIONS).
 */
int ingress_forward_head(const struct ingress_forward *f, char *out, size_t cap);

/* Whether the guest's response field may reach the client: never a Set-Cookie for the token's name. */
bool ingress_response_field_allowed(const char *name, const char *value);

/*
 * The guest's response fields as the client gets them, lines ending in CRLF
 * (a NUL follows): without hop-by-hop fields, those Connection names,
 * framing (the proxy frames the body itself; keep_length keeps the
 * Content-Length of a reply without a body, to HEAD or a 304) and a
 * Set-Cookie for the token's name. upgrade (a 101) keeps Upgrade and adds
 * "Connection: Upgrade". Returns the length, -E2BIG when it does not fit, or
 * -EPROTO for a value with a control character.
 */
int ingress_response_fields(const struct http_headers *h, bool upgrade, bool keep_length, char *out, size_t cap);

#endif
