#include "http_head.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

enum scan_state {
	S_LEADING,      /* before the request line: empty lines allowed */
	S_LEADING_CR,
	S_REQUEST_LINE,
	S_REQUEST_LINE_CR,
	S_LINE_START,   /* a header line or the empty line that ends the head */
	S_NAME,
	S_VALUE,
	S_VALUE_CR,
	S_END_CR,
	S_DONE,
};

void http_head_scan_init(struct http_head_scan *s)
{
	memset(s, 0, sizeof(*s));
	s->state = S_LEADING;
}

/* Byte classes: tchar of RFC 9110 section 5.6.2; a field value's SP, HTAB, visible ASCII and obs-text. */
enum { C_TCHAR = 1, C_VALUE = 2, C_LINE = 4 /* a request line's: no control character */ };

static const unsigned char byte_class[256] = {
	['\t'] = C_VALUE,
	[' '] = C_VALUE | C_LINE,
	['!'] = 7, ['"'] = 6, ['#'] = 7, ['$'] = 7, ['%'] = 7, ['&'] = 7, ['\''] = 7, ['('] = 6, [')'] = 6,
	['*'] = 7, ['+'] = 7, [','] = 6, ['-'] = 7, ['.'] = 7, ['/'] = 6,
	['0' ... '9'] = 7,
	[':'] = 6, [';'] = 6, ['<'] = 6, ['='] = 6, ['>'] = 6, ['?'] = 6, ['@'] = 6,
	['A' ... 'Z'] = 7,
	['['] = 6, ['\\'] = 6, [']'] = 6, ['^'] = 7, ['_'] = 7, ['`'] = 7,
	['a' ... 'z'] = 7,
	['{'] = 6, ['|'] = 7, ['}'] = 6, ['~'] = 7,
	[0x80 ... 0xff] = C_VALUE | C_LINE,
};

static bool is_tchar(unsigned char c)
{
	return byte_class[c] & C_TCHAR;
}

/* Field values may hold SP, HTAB, visible ASCII and obs-text; no other control. */
static bool is_value_char(unsigned char c)
{
	return byte_class[c] & C_VALUE;
}

/* How many of buf[0..len), at most max, are of class cls. */
static size_t run_of(const char *buf, size_t len, size_t max, unsigned char cls)
{
	size_t n = 0;

	if (max < len)
		len = max;
	while (n < len && (byte_class[(unsigned char)buf[n]] & cls))
		n++;
	return n;
}

static int refuse(int *status, const char **why, int code, const char *text)
{
	*status = code;
	*why = text;
	return -1;
}

int http_head_scan(struct http_head_scan *s, const char *buf, size_t len, size_t *used, int *status,
		   const char **why)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c;
		size_t run = 0;

		/*
		 * Most bytes of a head are plain ones inside a request line, a name or a
		 * value: taken a run at a time, up to where a limit would be passed (the
		 * byte that passes it goes the slow way below and is refused there).
		 */
		if (s->state == S_REQUEST_LINE) {
			run = run_of(buf + i, len - i, HTTP_MAX_REQUEST_LINE - s->line_bytes, C_LINE);
		} else if (s->state == S_NAME || s->state == S_VALUE) {
			run = run_of(buf + i, len - i, HTTP_MAX_HEADER_BYTES + 2 - s->header_bytes,
				     s->state == S_NAME ? C_TCHAR : C_VALUE);
			s->header_bytes += run;
		}
		s->line_bytes += run;
		i += run;
		if (i == len)
			break;
		c = (unsigned char)buf[i];

		if (s->state >= S_LINE_START && s->state != S_DONE &&
		    ++s->header_bytes > HTTP_MAX_HEADER_BYTES + 2)
			return refuse(status, why, 431, "request header fields are too large");
		switch (s->state) {
		case S_LEADING:
			if (c == '\r') {
				s->state = S_LEADING_CR;
				break;
			}
			if (c == '\n')
				return refuse(status, why, 400, "bare LF in the request head");
			s->state = S_REQUEST_LINE;
			s->line_bytes = 0;
			/* This byte starts the request line. */
			__attribute__((fallthrough));
		case S_REQUEST_LINE:
			if (c == '\r') {
				s->state = S_REQUEST_LINE_CR;
				break;
			}
			if (c == '\n')
				return refuse(status, why, 400, "bare LF in the request head");
			if (c < 0x20 || c == 0x7f)
				return refuse(status, why, 400, "control character in the request line");
			if (++s->line_bytes > HTTP_MAX_REQUEST_LINE)
				return refuse(status, why, 414, "request line is too long");
			break;
		case S_LEADING_CR:
			if (c != '\n')
				return refuse(status, why, 400, "bare CR in the request head");
			if (++s->empty_lines > HTTP_MAX_LEADING_EMPTY)
				return refuse(status, why, 400, "too many empty lines before the request line");
			s->state = S_LEADING;
			break;
		case S_REQUEST_LINE_CR:
			if (c != '\n')
				return refuse(status, why, 400, "bare CR in the request head");
			s->state = S_LINE_START;
			break;
		case S_LINE_START:
			s->line_bytes = 1;
			if (c == '\r') {
				s->state = S_END_CR;
			} else if (c == ' ' || c == '\t') {
				return refuse(status, why, 400, "obsolete line folding in a header field");
			} else if (c == '\n') {
				return refuse(status, why, 400, "bare LF in the request head");
			} else if (!is_tchar(c)) {
				return refuse(status, why, 400, "invalid character in a header field name");
			} else {
				if (++s->fields > HTTP_MAX_HEADERS)
					return refuse(status, why, 431, "too many header fields");
				s->state = S_NAME;
			}
			break;
		case S_NAME:
			s->line_bytes++;
			if (c == ':')
				s->state = S_VALUE;
			else if (c == ' ' || c == '\t')
				return refuse(status, why, 400, "whitespace between a header field name and its colon");
			else if (!is_tchar(c))
				return refuse(status, why, 400, "invalid character in a header field name");
			break;
		case S_VALUE:
			s->line_bytes++;
			if (c == '\r')
				s->state = S_VALUE_CR;
			else if (c == '\n')
				return refuse(status, why, 400, "bare LF in the request head");
			else if (!is_value_char(c))
				return refuse(status, why, 400, "control character in a header field value");
			break;
		case S_VALUE_CR:
			if (c != '\n')
				return refuse(status, why, 400, "bare CR in the request head");
			s->state = S_LINE_START;
			break;
		case S_END_CR:
			if (c != '\n')
				return refuse(status, why, 400, "bare CR in the request head");
			s->state = S_DONE;
			*used = i + 1;
			return 1;
		case S_DONE:
		default:
			*used = 0;
			return 1;
		}
	}
	*used = len;
	return 0;
}

/* ---- the header list ---- */

void http_headers_init(struct http_headers *h)
{
	h->count = 0;
	h->used = 0;
	h->overflow = false;
	h->in_value = false;
}

static int append(struct http_headers *h, const char *at, size_t len)
{
	/* One byte stays free for the NUL that ends the piece's string. */
	if (len >= sizeof(h->arena) - h->used) {
		h->overflow = true;
		return -1;
	}
	memcpy(h->arena + h->used, at, len);
	h->used += len;
	return 0;
}

static void end_value(struct http_headers *h)
{
	unsigned i = h->count - 1;
	char *v = h->arena + h->field[i].value;
	uint32_t n = h->field[i].value_len;

	/* http_parser skips leading whitespace; trailing OWS is not part of the value either. */
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	h->field[i].value_len = n;
	v[n] = '\0';
	h->used = h->field[i].value + n + 1;
	h->in_value = false;
}

int http_headers_add_name(struct http_headers *h, const char *at, size_t len)
{
	if (h->overflow)
		return -E2BIG;
	if (h->in_value || h->count == 0) {
		if (h->in_value)
			end_value(h);
		if (h->count == HTTP_MAX_HEADERS || h->used >= sizeof(h->arena) - 2) {
			h->overflow = true;
			return -E2BIG;
		}
		h->field[h->count].name = (uint32_t)h->used;
		h->field[h->count].name_len = 0;
		h->field[h->count].value = 0;
		h->field[h->count].value_len = 0;
		h->count++;
	}
	if (append(h, at, len) < 0)
		return -E2BIG;
	h->field[h->count - 1].name_len += (uint32_t)len;
	return 0;
}

int http_headers_add_value(struct http_headers *h, const char *at, size_t len)
{
	unsigned i;

	if (h->overflow || h->count == 0) {
		h->overflow = true;
		return -E2BIG;
	}
	i = h->count - 1;
	if (!h->in_value) {
		/* The name ends: its NUL, then the value. */
		if (append(h, "", 1) < 0)
			return -E2BIG;
		h->field[i].value = (uint32_t)h->used;
		h->field[i].value_len = 0;
		h->in_value = true;
	}
	if (append(h, at, len) < 0)
		return -E2BIG;
	h->field[i].value_len += (uint32_t)len;
	return 0;
}

void http_headers_finish(struct http_headers *h)
{
	if (h->overflow || h->count == 0)
		return;
	if (!h->in_value) {
		/* A name without a value (the parser gave none): an empty value. */
		if (http_headers_add_value(h, "", 0) < 0)
			return;
	}
	end_value(h);
}

bool http_headers_at(const struct http_headers *h, unsigned i, const char **name, const char **value)
{
	if (i >= h->count || h->in_value || h->overflow)
		return false;
	*name = h->arena + h->field[i].name;
	*value = h->arena + h->field[i].value;
	return true;
}

const char *http_headers_get(const struct http_headers *h, const char *name, size_t *len)
{
	const char *n, *v;

	for (unsigned i = 0; http_headers_at(h, i, &n, &v); i++) {
		if (!strcasecmp(n, name)) {
			if (len)
				*len = h->field[i].value_len;
			return v;
		}
	}
	return NULL;
}

unsigned http_headers_count_of(const struct http_headers *h, const char *name)
{
	const char *n, *v;
	unsigned count = 0;

	for (unsigned i = 0; http_headers_at(h, i, &n, &v); i++)
		count += !strcasecmp(n, name);
	return count;
}
