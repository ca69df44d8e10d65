/*
 * json_text.c against cJSON's own printer: any document cJSON parses is
 * written by json_text_write exactly as cJSON_PrintUnformatted writes it.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct json_text t;
	cJSON *doc = cJSON_ParseWithLength((const char *)data, size);
	char *want;
	int r;

	if (!doc)
		return 0;
	want = cJSON_PrintUnformatted(doc);
	r = json_text_write(&t, doc);
	if (want ? r != 0 || strlen(want) != t.len || memcmp(want, t.buf, t.len) : r == 0)
		abort();
	free(want);
	cJSON_Delete(doc);
	return 0;
}
