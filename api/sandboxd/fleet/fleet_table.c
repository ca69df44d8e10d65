/*
 * The worker table (fleet_table.h): records parsed strictly, entries kept by
 * id in an array of separately allocated workers.
 */
#include "fleet_table.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"
#include "parse.h"

bool fleet_id_valid(const char *s, size_t len)
{
	if (!s || len == 0 || len > FLEET_ID_MAX)
		return false;
	/* "." and ".." would be path segments in a key or a URL. */
	if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool fleet_sandbox_id_valid(const char *s, size_t len)
{
	if (!s || len != 19 || memcmp(s, "sb-", 3))
		return false;
	for (size_t i = 3; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

int fleet_address_parse(const char *s, size_t len, char *host, size_t cap, uint16_t *port, char *err,
			size_t errlen)
{
	const char *h, *end = s + len, *colon;
	size_t hlen;
	uint64_t p = 0;

	if (len > FLEET_ADDRESS_MAX || len < 9 || memcmp(s, "https://", 8))
		return sv_errf(-EINVAL, err, errlen, "the address is not https://HOST:PORT");
	h = s + 8;
	if (*h == '[') {
		const char *close = memchr(h, ']', (size_t)(end - h));

		if (!close || close == h + 1 || close + 1 >= end || close[1] != ':')
			return sv_errf(-EINVAL, err, errlen, "the address has a malformed [IPv6] host");
		for (const char *c = h + 1; c < close; c++)
			if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F') ||
			      *c == ':' || *c == '.'))
				return sv_errf(-EINVAL, err, errlen, "the address has a malformed [IPv6] host");
		hlen = (size_t)(close - h - 1);
		h++;
		colon = close + 1;
	} else {
		colon = memchr(h, ':', (size_t)(end - h));
		if (!colon || colon == h)
			return sv_errf(-EINVAL, err, errlen, "the address has no HOST:PORT");
		for (const char *c = h; c < colon; c++)
			if (!host_char(*c))
				return sv_errf(-EINVAL, err, errlen, "the address's host has a character not allowed");
		hlen = (size_t)(colon - h);
	}
	if (hlen > FLEET_HOST_MAX || hlen >= cap)
		return sv_errf(-EINVAL, err, errlen, "the address's host is too long");
	if (colon + 1 >= end || end - colon - 1 > 5)
		return sv_errf(-EINVAL, err, errlen, "the address's port is not 1..65535");
	for (const char *c = colon + 1; c < end; c++) {
		if (*c < '0' || *c > '9')
			return sv_errf(-EINVAL, err, errlen, "the address's port is not 1..65535 (nothing may follow it)");
		p = p * 10 + (uint64_t)(*c - '0');
	}
	if (p < 1 || p > 65535)
		return sv_errf(-EINVAL, err, errlen, "the address's port is not 1..65535");
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)p;
	return 0;
}

/* A string member: present (when required), a string, 1..max bytes without NULs. */
static int get_string(const cJSON *o, const char *name, bool required, size_t max, char *out, char *err,
		      size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	size_t len;

	if (!v) {
		out[0] = '\0';
		return required ? sv_errf(-EINVAL, err, errlen, "\"%s\" is missing", name) : 0;
	}
	if (!cJSON_IsString(v) || !v->valuestring)
		return sv_errf(-EINVAL, err, errlen, "\"%s\" is not a string", name);
	len = strlen(v->valuestring);
	if (len == 0 || len > max)
		return sv_errf(-EINVAL, err, errlen, "\"%s\" is empty or longer than %zu bytes", name, max);
	memcpy(out, v->valuestring, len + 1);
	return 0;
}

/* A whole number 0..max. */
static int get_count(const cJSON *o, const char *name, uint32_t max, uint32_t *out, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	if (!cJSON_IsNumber(v))
		return sv_errf(-EINVAL, err, errlen, "\"%s\" is missing or not a number", name);
	if (!isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > max ||
	    v->valuedouble != floor(v->valuedouble))
		return sv_errf(-EINVAL, err, errlen, "\"%s\" is not a whole number 0..%u", name, max);
	*out = (uint32_t)v->valuedouble;
	return 0;
}

/* Seconds since the epoch, 0..2^40 (optional: 0 when absent). */
static int get_time(const cJSON *o, const char *name, double *out, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	*out = 0;
	if (!v)
		return 0;
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 1099511627776.0)
		return sv_errf(-EINVAL, err, errlen, "\"%s\" is not a time in seconds", name);
	*out = v->valuedouble;
	return 0;
}

static cJSON *parse_object(const char *json, size_t len, char *err, size_t errlen)
{
	cJSON *o;

	if (!json || len == 0 || len > FLEET_RECORD_MAX) {
		sv_errf(-EINVAL, err, errlen, "the record is empty or over %d bytes", FLEET_RECORD_MAX);
		return NULL;
	}
	o = cJSON_ParseWithLength(json, len);
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		sv_errf(-EINVAL, err, errlen, "the record is not a JSON object");
		return NULL;
	}
	return o;
}

int fleet_worker_record_parse(const char *json, size_t len, struct fleet_worker_record *out, char *err,
			      size_t errlen)
{
	struct fleet_worker_record r;
	cJSON *o = parse_object(json, len, err, errlen);
	const cJSON *acc;
	int e;

	if (!o)
		return -EINVAL;
	memset(&r, 0, sizeof(r));
	acc = cJSON_GetObjectItemCaseSensitive(o, "accepting");
	if ((e = get_string(o, "id", true, FLEET_ID_MAX, r.id, err, errlen)) < 0 ||
	    (e = get_string(o, "address", true, FLEET_ADDRESS_MAX, r.address, err, errlen)) < 0 ||
	    (e = get_string(o, "version", false, FLEET_VERSION_MAX, r.version, err, errlen)) < 0 ||
	    (e = get_count(o, "sandboxes", FLEET_COUNT_MAX, &r.sandboxes, err, errlen)) < 0 ||
	    (e = get_count(o, "memory_mib", FLEET_MIB_MAX, &r.memory_mib, err, errlen)) < 0 ||
	    (e = get_count(o, "max_sandboxes", FLEET_COUNT_MAX, &r.max_sandboxes, err, errlen)) < 0 ||
	    (e = get_count(o, "max_memory_mib", FLEET_MIB_MAX, &r.max_memory_mib, err, errlen)) < 0 ||
	    (e = get_time(o, "started", &r.started, err, errlen)) < 0)
		goto out;
	if (!cJSON_IsBool(acc)) {
		e = sv_errf(-EINVAL, err, errlen, "\"accepting\" is missing or not true/false");
		goto out;
	}
	r.accepting = cJSON_IsTrue(acc);
	if (!fleet_id_valid(r.id, strlen(r.id))) {
		e = sv_errf(-EINVAL, err, errlen, "\"id\" is not [A-Za-z0-9._-]{1,63}");
		goto out;
	}
	for (const char *c = r.version; *c; c++)
		if (*c < 0x20 || *c > 0x7e) {
			e = sv_errf(-EINVAL, err, errlen, "\"version\" is not printable ASCII");
			goto out;
		}
	e = fleet_address_parse(r.address, strlen(r.address), r.host, sizeof(r.host), &r.port, err, errlen);
	if (e == 0)
		*out = r;
out:
	cJSON_Delete(o);
	return e;
}

int fleet_sandbox_record_parse(const char *json, size_t len, struct fleet_sandbox_record *out, char *err,
			       size_t errlen)
{
	struct fleet_sandbox_record r;
	cJSON *o = parse_object(json, len, err, errlen);
	int e;

	if (!o)
		return -EINVAL;
	memset(&r, 0, sizeof(r));
	if ((e = get_string(o, "worker", true, FLEET_ID_MAX, r.worker, err, errlen)) < 0 ||
	    (e = get_time(o, "created", &r.created, err, errlen)) < 0)
		goto out;
	if (!fleet_id_valid(r.worker, strlen(r.worker))) {
		e = sv_errf(-EINVAL, err, errlen, "\"worker\" is not [A-Za-z0-9._-]{1,63}");
		goto out;
	}
	*out = r;
out:
	cJSON_Delete(o);
	return e;
}

int fleet_key_id(const char *key, size_t key_len, const char *prefix, char *out, size_t cap)
{
	size_t plen = strlen(prefix);

	if (!key || key_len <= plen || memcmp(key, prefix, plen) || key_len - plen >= cap ||
	    !fleet_id_valid(key + plen, key_len - plen))
		return -EINVAL;
	memcpy(out, key + plen, key_len - plen);
	out[key_len - plen] = '\0';
	return 0;
}

void fleet_table_init(struct fleet_table *t)
{
	memset(t, 0, sizeof(*t));
}

void fleet_table_destroy(struct fleet_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->w[i]);
	free(t->w);
	memset(t, 0, sizeof(*t));
}

struct fleet_entry *fleet_table_find(const struct fleet_table *t, const char *id)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->w[i]->rec.id, id))
			return t->w[i];
	return NULL;
}

size_t fleet_table_live(const struct fleet_table *t)
{
	size_t live = 0;

	for (size_t i = 0; i < t->n; i++)
		live += t->w[i]->live;
	return live;
}

/* Room for one more entry: grows the array, or drops a lost worker nothing is in flight on. */
static int make_room(struct fleet_table *t)
{
	if (t->n == FLEET_WORKERS_MAX) {
		for (size_t i = 0; i < t->n; i++)
			if (!t->w[i]->live && !t->w[i]->inflight) {
				free(t->w[i]);
				t->w[i] = t->w[--t->n];
				return 0;
			}
		return -ENOSPC;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		struct fleet_entry **w = realloc(t->w, cap * sizeof(*w));

		if (!w)
			return -ENOMEM;
		t->w = w;
		t->cap = cap;
	}
	return 0;
}

int fleet_table_put(struct fleet_table *t, const char *key, size_t key_len, const char *value, size_t value_len,
		    int64_t mod_revision, char *err, size_t errlen)
{
	char id[FLEET_ID_MAX + 1], why[192];
	struct fleet_worker_record rec;
	struct fleet_entry *w;
	int e;

	if (fleet_key_id(key, key_len, FLEET_WORKERS_PREFIX, id, sizeof(id)) < 0)
		return sv_errf(-EINVAL, err, errlen, "a key under %s that names no worker", FLEET_WORKERS_PREFIX);
	w = fleet_table_find(t, id);
	e = fleet_worker_record_parse(value, value_len, &rec, why, sizeof(why));
	if (e == 0 && strcmp(rec.id, id))
		e = sv_errf(-EINVAL, why, sizeof(why), "its \"id\" is not the key's");
	if (e < 0) {
		/* Its key is there, so it is not lost: what we knew of it still routes; nothing new goes there. */
		if (w) {
			w->rec.accepting = false;
			w->live = true;
		}
		return sv_errf(-EINVAL, err, errlen, "worker %s's record: %s", id, why);
	}
	if (!w) {
		e = make_room(t);
		if (e < 0)
			return sv_errf(e, err, errlen, "more than %d workers", FLEET_WORKERS_MAX);
		w = calloc(1, sizeof(*w));
		if (!w)
			return sv_errf(-ENOMEM, err, errlen, "out of memory");
		t->w[t->n++] = w;
	}
	w->rec = rec;
	w->live = true;
	w->mod_revision = mod_revision;
	return 0;
}

int fleet_table_delete(struct fleet_table *t, const char *key, size_t key_len)
{
	char id[FLEET_ID_MAX + 1];
	struct fleet_entry *w;

	if (fleet_key_id(key, key_len, FLEET_WORKERS_PREFIX, id, sizeof(id)) < 0)
		return -EINVAL;
	w = fleet_table_find(t, id);
	if (!w)
		return -ENOENT;
	w->live = false;
	return 0;
}

size_t fleet_table_reload(struct fleet_table *t, const struct etcd_kv *kvs, size_t n, char *err, size_t errlen)
{
	size_t refused = 0;

	for (size_t i = 0; i < t->n; i++)
		t->w[i]->live = false;
	for (size_t i = 0; i < n; i++)
		if (fleet_table_put(t, kvs[i].key, kvs[i].key_len, kvs[i].value, kvs[i].value_len, kvs[i].mod_revision,
				    err, errlen) < 0)
			refused++;
	return refused;
}

void fleet_entry_inflight_add(struct fleet_entry *w, uint32_t memory_mib)
{
	w->inflight++;
	w->inflight_mib += memory_mib;
}

void fleet_entry_inflight_done(struct fleet_entry *w, uint32_t memory_mib)
{
	if (w->inflight)
		w->inflight--;
	w->inflight_mib = w->inflight_mib >= memory_mib ? w->inflight_mib - memory_mib : 0;
}
