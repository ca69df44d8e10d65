#include "net_policy.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"

static bool listed(const cJSON *list, const char *text)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, list) {
		if (cJSON_IsString(it) && !strcmp(it->valuestring, text))
			return true;
	}
	return false;
}

int net_private_add(cJSON *list, const char *arg, char *err, size_t errlen)
{
	char texts[NET_PRIVATE_MAX + 1][CIDR_STR_MAX]; /* + 1: the one that is too many */
	size_t n = 0, have;
	const char *p = arg;

	if (!cJSON_IsArray(list) || !arg) {
		snprintf(err, errlen, "no list");
		return -EINVAL;
	}
	have = (size_t)cJSON_GetArraySize(list);
	/* Everything is checked before anything is added. */
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char one[64], why[96];
		struct cidr c;
		int r;

		if (len == 0 || len >= sizeof(one)) {
			snprintf(err, errlen, "\"%.64s\": %s", arg,
				 len ? "a prefix is too long" : "an empty prefix (CIDR,CIDR,... without spaces)");
			return -EINVAL;
		}
		memcpy(one, p, len);
		one[len] = '\0';
		r = cidr_parse(one, &c);
		if (r < 0) {
			snprintf(err, errlen, "\"%s\" %s", one, cidr_parse_why(one, why, sizeof(why)));
			return -EINVAL;
		}
		if (!cidr_is_private(&c)) {
			snprintf(err, errlen, "%s is not inside a private range (%s): only those are closed", one,
				 CIDR_PRIVATE_TEXT);
			return -EINVAL;
		}
		if (cidr_format(&c, texts[n], sizeof(texts[n])) < 0)
			return -EINVAL;
		if (!listed(list, texts[n])) {
			bool dup = false;

			for (size_t i = 0; i < n; i++)
				dup |= !strcmp(texts[i], texts[n]);
			if (!dup && ++n + have > NET_PRIVATE_MAX) {
				snprintf(err, errlen, "more than %d prefixes", NET_PRIVATE_MAX);
				return -E2BIG;
			}
		}
		if (!comma)
			break;
		p = comma + 1;
	}
	for (size_t i = 0; i < n; i++) {
		cJSON *s = cJSON_CreateString(texts[i]);

		if (!s || !cJSON_AddItemToArray(list, s)) {
			cJSON_Delete(s);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
	}
	return 0;
}

const char *net_mode_word(enum net_mode m)
{
	return m == NET_BLOCK ? "block" : m == NET_ALLOWLIST ? "allowlist" : "open";
}

int net_mode_parse(const char *word, enum net_mode *m)
{
	static const enum net_mode modes[] = { NET_OPEN, NET_BLOCK, NET_ALLOWLIST };

	for (size_t i = 0; word && i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (!strcmp(word, net_mode_word(modes[i]))) {
			*m = modes[i];
			return 0;
		}
	}
	return -EINVAL;
}

int net_policy_outcome(int call_result, const char *reply, enum net_mode *mode, char *err, size_t errlen)
{
	const cJSON *e, *m;
	cJSON *o;
	int status = -EPROTO;

	if (call_result == -ETIMEDOUT) {
		snprintf(err, errlen, "the VMM did not answer in time; a change may yet take effect, and "
				      "GET .../network reports what is in force");
		return -ETIMEDOUT;
	}
	if (call_result < 0 || !reply) {
		snprintf(err, errlen, "the VMM did not answer on its control socket: %s",
			 strerror(call_result < 0 ? -call_result : EIO));
		return -EPROTO;
	}
	o = cJSON_Parse(reply);
	e = cJSON_GetObjectItemCaseSensitive(o, "error");
	m = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "net"), "mode");
	if (!cJSON_IsObject(o))
		snprintf(err, errlen, "the VMM's reply is not a JSON object");
	else if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok")))
		snprintf(err, errlen, "the VMM refused: %.400s",
			 cJSON_IsString(e) ? e->valuestring : "no reason given");
	else if (!cJSON_IsString(m) || net_mode_parse(m->valuestring, mode) < 0)
		snprintf(err, errlen, "the VMM did not say which mode is in force");
	else
		status = 0;
	cJSON_Delete(o);
	return status;
}
