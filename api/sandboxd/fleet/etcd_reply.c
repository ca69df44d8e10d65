/*
 * etcd v3 JSON-gateway replies into structs (etcd_reply.h). Nothing here
 * trusts the reply: every number is a checked string of digits, every
 * base64 field strictly decoded into an arena sized from the input, every
 * count bounded.
 */
#include "etcd_reply.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* gRPC status codes etcd answers with. */
enum { GRPC_INVALID_ARGUMENT = 3, GRPC_DEADLINE_EXCEEDED = 4, GRPC_NOT_FOUND = 5, GRPC_ALREADY_EXISTS = 6,
       GRPC_PERMISSION_DENIED = 7, GRPC_RESOURCE_EXHAUSTED = 8, GRPC_FAILED_PRECONDITION = 9,
       GRPC_UNAVAILABLE = 14, GRPC_UNAUTHENTICATED = 16, GRPC_CODE_MAX = 16 };

struct parse {
	struct etcd_reply *out;
	char *err;
	size_t errlen;
	size_t arena_used, arena_cap;
};

static int fail(struct parse *p, const char *why)
{
	snprintf(p->err, p->errlen, "%s", why);
	return -EPROTO;
}

/*
 * An int64 as etcd writes it: a JSON string of 1..19 decimal digits (no
 * sign, no leading zeros but "0"), or a small JSON integer. Absent: 0.
 */
static int number(struct parse *p, const cJSON *parent, const char *name, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(parent, name);
	uint64_t n = 0;

	*out = 0;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;

		if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d)
			return fail(p, "a number out of range");
		*out = (int64_t)d;
		return 0;
	}
	if (!cJSON_IsString(v) || !v->valuestring)
		return fail(p, "a number that is neither a string nor a number");
	const char *s = v->valuestring;
	size_t len = strlen(s);

	if (len == 0 || len > 19 || (len > 1 && s[0] == '0'))
		return fail(p, "a malformed number");
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return fail(p, "a malformed number");
		n = n * 10 + (uint64_t)(s[i] - '0');
	}
	if (n > (uint64_t)INT64_MAX)
		return fail(p, "a number out of range");
	*out = (int64_t)n;
	return 0;
}

static int flag(struct parse *p, const cJSON *parent, const char *name, bool *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(parent, name);

	*out = false;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsBool(v))
		return fail(p, "a flag that is not true or false");
	*out = cJSON_IsTrue(v);
	return 0;
}

static int val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long etcd_base64_decode(const char *in, size_t len, unsigned char *out)
{
	size_t o = 0;

	if (len % 4)
		return -EINVAL;
	for (size_t i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		int a = val(in[i]), b = val(in[i + 1]), c, d;

		if (a < 0 || b < 0)
			return -EINVAL;
		if (last && in[i + 2] == '=' && in[i + 3] == '=') {
			if (b & 0xf) /* bits past the end must be zero: one encoding per value */
				return -EINVAL;
			out[o++] = (unsigned char)(a << 2 | b >> 4);
			break;
		}
		c = val(in[i + 2]);
		if (c < 0)
			return -EINVAL;
		if (last && in[i + 3] == '=') {
			if (c & 0x3)
				return -EINVAL;
			out[o++] = (unsigned char)(a << 2 | b >> 4);
			out[o++] = (unsigned char)((b & 0xf) << 4 | c >> 2);
			break;
		}
		d = val(in[i + 3]);
		if (d < 0)
			return -EINVAL;
		out[o++] = (unsigned char)(a << 2 | b >> 4);
		out[o++] = (unsigned char)((b & 0xf) << 4 | c >> 2);
		out[o++] = (unsigned char)((c & 0x3) << 6 | d);
	}
	return (long)o;
}

/* A base64 field into the arena, NUL-terminated; absent: "". */
static int bytes(struct parse *p, const cJSON *parent, const char *name, const char **out, size_t *out_len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(parent, name);
	char *dst = p->out->arena + p->arena_used;
	size_t len;
	long n;

	if (!v || cJSON_IsNull(v)) {
		*out = "";
		*out_len = 0;
		return 0;
	}
	if (!cJSON_IsString(v) || !v->valuestring)
		return fail(p, "a key or value that is not a string");
	len = strlen(v->valuestring);
	/*
	 * The arena is the reply's length plus one: each field present took at
	 * least its two quotes of the reply and decodes to 3/4 of its text, so
	 * it and its NUL fit; checked all the same.
	 */
	if (len / 4 * 3 + 1 > p->arena_cap - p->arena_used)
		return fail(p, "keys and values longer than the reply");
	n = etcd_base64_decode(v->valuestring, len, (unsigned char *)dst);
	if (n < 0)
		return fail(p, "a key or value that is not base64");
	dst[n] = '\0';
	p->arena_used += (size_t)n + 1;
	*out = dst;
	*out_len = (size_t)n;
	return 0;
}

static int kv(struct parse *p, const cJSON *o, struct etcd_kv *out)
{
	int r;

	if (!cJSON_IsObject(o))
		return fail(p, "a kv that is not an object");
	if ((r = bytes(p, o, "key", &out->key, &out->key_len)) < 0 ||
	    (r = bytes(p, o, "value", &out->value, &out->value_len)) < 0 ||
	    (r = number(p, o, "create_revision", &out->create_revision)) < 0 ||
	    (r = number(p, o, "mod_revision", &out->mod_revision)) < 0 || (r = number(p, o, "lease", &out->lease)) < 0)
		return r;
	if (out->key_len == 0)
		return fail(p, "a kv without a key");
	return 0;
}

/* Room for n more kvs. */
static int grow(struct parse *p, size_t n)
{
	struct etcd_reply *r = p->out;
	size_t want = r->nkvs + n;

	if (n > ETCD_REPLY_KVS_MAX || want > ETCD_REPLY_KVS_MAX)
		return fail(p, "too many kvs");
	struct etcd_kv *kvs = realloc(r->kvs, (want ? want : 1) * sizeof(*kvs));
	if (!kvs)
		return fail(p, "out of memory");
	r->kvs = kvs;
	bool *del = realloc(r->deleted, (want ? want : 1) * sizeof(*del));
	if (!del)
		return fail(p, "out of memory");
	r->deleted = del;
	return 0;
}

static int kvs(struct parse *p, const cJSON *parent)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(parent, "kvs"), *e;
	int r;

	if (!arr || cJSON_IsNull(arr))
		return 0;
	if (!cJSON_IsArray(arr))
		return fail(p, "kvs that are not an array");
	if ((r = grow(p, (size_t)cJSON_GetArraySize(arr))) < 0)
		return r;
	cJSON_ArrayForEach(e, arr) {
		struct etcd_reply *o = p->out;

		memset(&o->kvs[o->nkvs], 0, sizeof(o->kvs[0]));
		if ((r = kv(p, e, &o->kvs[o->nkvs])) < 0)
			return r;
		o->deleted[o->nkvs++] = false;
	}
	return 0;
}

static int header(struct parse *p, const cJSON *o)
{
	const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "header");

	if (!h || cJSON_IsNull(h))
		return 0;
	if (!cJSON_IsObject(h))
		return fail(p, "a header that is not an object");
	return number(p, h, "revision", &p->out->revision);
}

/* {"error": "...", "code": N} or, on a stream, {"error": {"grpc_code": N, "message": "..."}}. */
static int error_reply(struct parse *p, const cJSON *e, const cJSON *root)
{
	const cJSON *msg = e, *code = cJSON_GetObjectItemCaseSensitive(root, "code");

	if (cJSON_IsObject(e)) {
		msg = cJSON_GetObjectItemCaseSensitive(e, "message");
		code = cJSON_GetObjectItemCaseSensitive(e, "grpc_code");
	}
	if (!cJSON_IsNumber(code) || code->valuedouble < 0 || code->valuedouble > 255 ||
	    code->valuedouble != (double)(int)code->valuedouble)
		return fail(p, "an error reply without a valid code");
	p->out->error_code = (int)code->valuedouble;
	snprintf(p->out->error, sizeof(p->out->error), "%s",
		 cJSON_IsString(msg) && msg->valuestring ? msg->valuestring : "(no message)");
	/* A message is shown to people: control bytes become '?'. */
	for (char *c = p->out->error; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return 0;
}

static int txn(struct parse *p, const cJSON *o)
{
	const cJSON *resp = cJSON_GetObjectItemCaseSensitive(o, "responses"), *e;
	int r;

	if ((r = flag(p, o, "succeeded", &p->out->succeeded)) < 0)
		return r;
	if (!resp || cJSON_IsNull(resp))
		return 0;
	if (!cJSON_IsArray(resp))
		return fail(p, "responses that are not an array");
	cJSON_ArrayForEach(e, resp) {
		const cJSON *range = cJSON_GetObjectItemCaseSensitive(e, "response_range");

		if (!cJSON_IsObject(e))
			return fail(p, "a response that is not an object");
		if (!range || cJSON_IsNull(range))
			continue;
		if (!cJSON_IsObject(range))
			return fail(p, "a response_range that is not an object");
		if ((r = kvs(p, range)) < 0)
			return r;
	}
	return 0;
}

static int watch(struct parse *p, const cJSON *o)
{
	const cJSON *events = cJSON_GetObjectItemCaseSensitive(o, "events"), *e;
	struct etcd_reply *out = p->out;
	int r;

	if ((r = flag(p, o, "created", &out->created)) < 0 || (r = flag(p, o, "canceled", &out->canceled)) < 0 ||
	    (r = number(p, o, "compact_revision", &out->compact_revision)) < 0)
		return r;
	if (!events || cJSON_IsNull(events))
		return 0;
	if (!cJSON_IsArray(events))
		return fail(p, "events that are not an array");
	if ((r = grow(p, (size_t)cJSON_GetArraySize(events))) < 0)
		return r;
	cJSON_ArrayForEach(e, events) {
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "type");
		bool del;

		if (!cJSON_IsObject(e))
			return fail(p, "an event that is not an object");
		/* PUT is type 0, which the gateway leaves out. */
		if (!type || cJSON_IsNull(type) || (cJSON_IsString(type) && !strcmp(type->valuestring, "PUT")))
			del = false;
		else if (cJSON_IsString(type) && !strcmp(type->valuestring, "DELETE"))
			del = true;
		else
			return fail(p, "an event of an unknown type");
		memset(&out->kvs[out->nkvs], 0, sizeof(out->kvs[0]));
		if ((r = kv(p, cJSON_GetObjectItemCaseSensitive(e, "kv"), &out->kvs[out->nkvs])) < 0)
			return r;
		out->deleted[out->nkvs++] = del;
	}
	return 0;
}

static int parse_doc(struct parse *p, enum etcd_reply_kind kind, const cJSON *root)
{
	const cJSON *o = root, *e;
	int r;

	if (!cJSON_IsObject(root))
		return fail(p, "the reply is not a JSON object");
	e = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (e && !cJSON_IsNull(e))
		return error_reply(p, e, root);
	if (kind == ETCD_REPLY_KEEPALIVE || kind == ETCD_REPLY_WATCH) {
		o = cJSON_GetObjectItemCaseSensitive(root, "result");
		if (!cJSON_IsObject(o))
			return fail(p, "a streamed reply without a result object");
	}
	if ((r = header(p, o)) < 0)
		return r;
	switch (kind) {
	case ETCD_REPLY_HEADER: return 0;
	case ETCD_REPLY_LEASE:
	case ETCD_REPLY_KEEPALIVE:
		if ((r = number(p, o, "ID", &p->out->lease)) < 0 || (r = number(p, o, "TTL", &p->out->ttl)) < 0)
			return r;
		if (kind == ETCD_REPLY_LEASE && (p->out->lease == 0 || p->out->ttl == 0))
			return fail(p, "a lease grant without an ID or a TTL");
		return 0;
	case ETCD_REPLY_RANGE: return kvs(p, o);
	case ETCD_REPLY_TXN: return txn(p, o);
	case ETCD_REPLY_WATCH: return watch(p, o);
	default: return fail(p, "an unknown reply kind");
	}
}

int etcd_reply_parse(enum etcd_reply_kind kind, const char *buf, size_t len, struct etcd_reply *out, char *err,
		     size_t errlen)
{
	struct parse p = {.out = out, .err = err, .errlen = errlen};
	cJSON *root;
	int r;

	memset(out, 0, sizeof(*out));
	out->error_code = -1;
	if (errlen)
		err[0] = '\0';
	if ((unsigned)kind >= ETCD_REPLY_KINDS)
		return fail(&p, "an unknown reply kind");
	if (len > ETCD_REPLY_MAX)
		return fail(&p, "the reply is too long");
	root = cJSON_ParseWithLength(buf, len);
	if (!root)
		return fail(&p, "the reply is not JSON");
	p.arena_cap = len + 1;
	out->arena = malloc(p.arena_cap);
	r = out->arena ? parse_doc(&p, kind, root) : fail(&p, "out of memory");
	cJSON_Delete(root);
	if (r < 0) {
		etcd_reply_free(out);
		out->error_code = -1;
	}
	return r;
}

void etcd_reply_free(struct etcd_reply *r)
{
	free(r->kvs);
	free(r->deleted);
	free(r->arena);
	r->kvs = NULL;
	r->deleted = NULL;
	r->arena = NULL;
	r->nkvs = 0;
}

int etcd_reply_errno(int code)
{
	switch (code) {
	case GRPC_INVALID_ARGUMENT:
	case GRPC_FAILED_PRECONDITION: return -EINVAL;
	case GRPC_DEADLINE_EXCEEDED: return -ETIMEDOUT;
	case GRPC_NOT_FOUND: return -ENOENT;
	case GRPC_ALREADY_EXISTS: return -EEXIST;
	case GRPC_PERMISSION_DENIED:
	case GRPC_UNAUTHENTICATED: return -EACCES;
	case GRPC_RESOURCE_EXHAUSTED: return -ENOSPC;
	case GRPC_UNAVAILABLE: return -EAGAIN;
	default: return -EPROTO;
	}
}

long etcd_reply_split(const char *buf, size_t len)
{
	size_t i = 0, depth = 0;
	bool in_string = false, escaped = false;

	while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t'))
		i++;
	if (i == len)
		return 0;
	if (buf[i] != '{')
		return -EPROTO;
	for (; i < len; i++) {
		char c = buf[i];

		if (in_string) {
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"') {
			in_string = true;
		} else if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return -EPROTO;
			if (--depth == 0)
				return i + 1 > (size_t)ETCD_REPLY_MAX ? -EMSGSIZE : (long)(i + 1);
		}
	}
	return len > ETCD_REPLY_MAX ? -EMSGSIZE : 0;
}
