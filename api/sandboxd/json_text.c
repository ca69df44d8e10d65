#include "json_text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static bool grow(struct json_text *t, size_t n)
{
	size_t cap;
	char *p;

	if (n > SIZE_MAX / 4 - t->len)
		return false;
	cap = t->cap ? t->cap : 512;
	while (cap <= t->len + n)
		cap *= 2;
	p = realloc(t->buf, cap);
	if (!p)
		return false;
	t->buf = p;
	t->cap = cap;
	return true;
}

/* Room for n more bytes and the NUL. */
static inline bool reserve(struct json_text *t, size_t n)
{
	return n < t->cap - t->len || grow(t, n);
}

static inline bool put(struct json_text *t, const char *s, size_t n)
{
	if (!reserve(t, n))
		return false;
	memcpy(t->buf + t->len, s, n);
	t->len += n;
	return true;
}

/* What follows the backslash for a byte that needs an escape in a JSON string ('u': \u00XX); 0 for none. */
static const char escapes[256] = {
	['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f', ['\r'] = 'r', ['"'] = '"', ['\\'] = '\\',
	[0x00] = 'u', [0x01] = 'u', [0x02] = 'u', [0x03] = 'u', [0x04] = 'u', [0x05] = 'u', [0x06] = 'u',
	[0x07] = 'u', [0x0b] = 'u', [0x0e] = 'u', [0x0f] = 'u', [0x10] = 'u', [0x11] = 'u', [0x12] = 'u',
	[0x13] = 'u', [0x14] = 'u', [0x15] = 'u', [0x16] = 'u', [0x17] = 'u', [0x18] = 'u', [0x19] = 'u',
	[0x1a] = 'u', [0x1b] = 'u', [0x1c] = 'u', [0x1d] = 'u', [0x1e] = 'u', [0x1f] = 'u',
};

/* As cJSON escapes: the seven short escapes, \u00XX for other bytes below 32, every other byte as it is. */
static bool put_string(struct json_text *t, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t len = s ? strlen(s) : 0, need = len * 6 + 2;
	char *out;

	if (len > SIZE_MAX / 8)
		return false;
	/* At most 6 bytes for each byte and the quotes; a long string is measured, not reserved 6 times over. */
	if (len > 256) {
		need = len + 2;
		for (size_t i = 0; i < len; i++)
			need += escapes[(unsigned char)s[i]] == 'u' ? 5 : escapes[(unsigned char)s[i]] ? 1 : 0;
	}
	if (!reserve(t, need))
		return false;
	out = t->buf + t->len;
	*out++ = '"';
	for (const unsigned char *p = (const unsigned char *)s, *end = p + len; p < end; p++) {
		char e = escapes[*p];

		if (!e) {
			*out++ = (char)*p;
			continue;
		}
		*out++ = '\\';
		*out++ = e;
		if (e == 'u') {
			*out++ = '0';
			*out++ = '0';
			*out++ = hex[*p >> 4];
			*out++ = hex[*p & 15];
		}
	}
	*out++ = '"';
	t->len = (size_t)(out - t->buf);
	return true;
}

static int put_number(struct json_text *t, const cJSON *item)
{
	double d = item->valuedouble;
	char digits[24], *p = digits + sizeof(digits);
	unsigned long long u;
	char *text;
	bool ok;

	/*
	 * %1.15g writes a whole number of at most 15 digits as plain digits,
	 * and reads back exactly; -0 keeps its sign there, so it goes to cJSON.
	 */
	if (d > -1e15 && d < 1e15 && d == (double)(long long)d && (d != 0 || !signbit(d))) {
		u = d < 0 ? (unsigned long long)-(long long)d : (unsigned long long)d;
		do {
			*--p = (char)('0' + u % 10);
			u /= 10;
		} while (u);
		if (d < 0)
			*--p = '-';
		return put(t, p, (size_t)(digits + sizeof(digits) - p)) ? 0 : -ENOMEM;
	}
	text = cJSON_PrintUnformatted(item);
	if (!text)
		return -ENOMEM;
	ok = put(t, text, strlen(text));
	free(text);
	return ok ? 0 : -ENOMEM;
}

static int put_item(struct json_text *t, const cJSON *item)
{
	const cJSON *child;
	int r;

	switch (item->type & 0xff) {
	case cJSON_NULL:
		return put(t, "null", 4) ? 0 : -ENOMEM;
	case cJSON_False:
		return put(t, "false", 5) ? 0 : -ENOMEM;
	case cJSON_True:
		return put(t, "true", 4) ? 0 : -ENOMEM;
	case cJSON_Number:
		return put_number(t, item);
	case cJSON_Raw:
		if (!item->valuestring)
			return -EINVAL;
		return put(t, item->valuestring, strlen(item->valuestring)) ? 0 : -ENOMEM;
	case cJSON_String:
		return put_string(t, item->valuestring) ? 0 : -ENOMEM;
	case cJSON_Array:
	case cJSON_Object:
		if (!put(t, (item->type & 0xff) == cJSON_Array ? "[" : "{", 1))
			return -ENOMEM;
		for (child = item->child; child; child = child->next) {
			if (child != item->child && !put(t, ",", 1))
				return -ENOMEM;
			if ((item->type & 0xff) == cJSON_Object && (!put_string(t, child->string) || !put(t, ":", 1)))
				return -ENOMEM;
			r = put_item(t, child);
			if (r < 0)
				return r;
		}
		return put(t, (item->type & 0xff) == cJSON_Array ? "]" : "}", 1) ? 0 : -ENOMEM;
	default:
		return -EINVAL;
	}
}

int json_text_write(struct json_text *t, const struct cJSON *item)
{
	int r;

	t->len = 0;
	if (!item)
		return -EINVAL;
	r = put_item(t, item);
	if (r < 0) {
		t->len = 0;
		return r;
	}
	t->buf[t->len] = '\0';
	return 0;
}

void json_text_free(struct json_text *t)
{
	free(t->buf);
	t->buf = NULL;
	t->len = t->cap = 0;
}
