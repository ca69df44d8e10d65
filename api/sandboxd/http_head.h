#ifndef SANDVM_API_SANDBOXD_HTTP_HEAD_H
#define SANDVM_API_SANDBOXD_HTTP_HEAD_H

/*
 * The request head of HTTP/1.1 (RFC 9112), judged strictly before the
 * packaged http_parser sees it, and the bounded list of header fields a
 * request keeps. Both are pure functions over buffers: no I/O, no
 * allocation, every size and count bounded.
 *
 * The scanner refuses what RFC 9112 lets a server refuse and what request
 * smuggling relies on: obs-fold (a line starting with SP or HTAB), whitespace
 * between a field name and its colon, a bare LF or CR, control characters in
 * a field value, a field name that is not a token, and heads over the limits
 * below.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_URL 8192
/* The request line: method, target and version. */
#define HTTP_MAX_REQUEST_LINE (HTTP_MAX_URL + 64)
/* Every header line of one request together (names, values, CRLFs). */
#define HTTP_MAX_HEADER_BYTES (16 * 1024)
#define HTTP_MAX_HEADERS 64
/* Empty lines allowed before a request line (RFC 9112 section 2.2). */
#define HTTP_MAX_LEADING_EMPTY 4

struct http_head_scan {
	int state;
	size_t line_bytes;   /* of the line being read */
	size_t header_bytes; /* of all header lines so far */
	unsigned fields;
	unsigned empty_lines;
};

void http_head_scan_init(struct http_head_scan *s);

/*
 * Scans buf[0..len) as the next bytes of a request head. Returns 0 when all
 * of it was fine and the head goes on (*used = len), 1 when the head ended
 * (*used: the bytes through its final LF; what follows is the body or the
 * next request), or -1 when the head is refused: *status is the reply
 * (400, 414 or 431) and *why says what was wrong.
 */
int http_head_scan(struct http_head_scan *s, const char *buf, size_t len, size_t *used, int *status,
		   const char **why);

/* The header fields of one request, names and values as they arrived (values trimmed). */
struct http_headers {
	unsigned count;
	size_t used; /* bytes of arena */
	bool overflow;
	bool in_value; /* the last piece was part of a value */
	struct {
		uint32_t name, name_len, value, value_len;
	} field[HTTP_MAX_HEADERS];
	char arena[HTTP_MAX_HEADER_BYTES];
};

void http_headers_init(struct http_headers *h);
/*
 * The parser hands names and values over in pieces: a name piece after a
 * value starts a new field. Over the limits the list is marked overflowed
 * and refuses more (-E2BIG).
 */
int http_headers_add_name(struct http_headers *h, const char *at, size_t len);
int http_headers_add_value(struct http_headers *h, const char *at, size_t len);
/* Ends the head: trims the last value. */
void http_headers_finish(struct http_headers *h);

/* The value of the first field named name (case-insensitive), NUL-terminated; NULL when absent. */
const char *http_headers_get(const struct http_headers *h, const char *name, size_t *len);
/* How many fields are named name. */
unsigned http_headers_count_of(const struct http_headers *h, const char *name);
/* Field i's name and value (NUL-terminated); false past the end. */
bool http_headers_at(const struct http_headers *h, unsigned i, const char **name, const char **value);

#endif
