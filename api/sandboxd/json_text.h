#ifndef SANDVM_API_SANDBOXD_JSON_TEXT_H
#define SANDVM_API_SANDBOXD_JSON_TEXT_H

/*
 * A cJSON tree written as compact text into a buffer the caller keeps and
 * reuses: byte for byte what cJSON_PrintUnformatted writes, without its
 * allocation per reply, its length scans, and its printing of every number
 * with %1.15g read back by sscanf (cJSON 1.7.15 does that even for integers,
 * which is most of what sandboxd's replies hold). A whole number below 1e15
 * is written with integer arithmetic; any other number goes through cJSON
 * itself, so the text stays the same.
 */

#include <stddef.h>

struct cJSON;

struct json_text {
	char *buf; /* NUL-terminated after a successful json_text_write */
	size_t len, cap;
};

/*
 * Replaces t's text with item's (len bytes). 0, -ENOMEM, or -EINVAL for what
 * cJSON would not print either (an invalid item, a raw item without text).
 */
int json_text_write(struct json_text *t, const struct cJSON *item);
void json_text_free(struct json_text *t);

#endif
