#include "json_text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Room for n more bytes and the NUL. */
static bool reserve(struct json_text *t, size_t n)
{
	size_t cap;
	char *p;

	if (n < t->cap - t->len)
		return true;
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

static bool put(struct json_text *t, const char *s, size_t n)
{
	if (!reserve(t, n))
		return false;
	memcpy(t->buf + t->len, s, n);
	t->len += n;
	return true;
}

static bool put_string(struct json_text *t, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t run;

	if (!s)
		return put(t, "\"\"", 2);
	if (!put(t, "\"", 1))
		return false;
	for (;;) {
		/* Bytes that need no escape go in one piece (0x80 and above as they are, as cJSON does). */
		for (run = 0; p[run] >= 32 && p[run] != '"' && p[run] != '\\'; run++)
			;
		if (run && !put(t, (const char *)p, run))
			return false;
		p += run;
		if (!*p)
			break;
		if (!reserve(t, 6))
			return false;
		t->buf[t->len++] = '\\';
		switch (*p) {
		case '"': t->buf[t->len++] = '"'; break;
		case '\\': t->buf[t->len++] = '\\'; break;
		case '\b': t->buf[t->len++] = 'b'; break;
		case '\f': t->buf[t->len++] = 'f'; break;
		case '\n': t->buf[t->len++] = 'n'; break;
		case '\r': t->buf[t->len++] = 'r'; break;
		case '\t': t->buf[t->len++] = 't'; break;
		default:
			memcpy(t->buf + t->len, "u00", 3);
			t->buf[t->len + 3] = hex[*p >> 4];
			t->buf[t->len + 4] = hex[*p & 15];
			t->len += 5;
		}
		p++;
	}
	return put(t, "\"", 1);
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
