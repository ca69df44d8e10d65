/*
 * The ingress part of a sandbox: connect tokens (connect_token.h) and the
 * labels of its ports, their API calls, and their place in the registry.
 */
#include "ingress.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "api_call.h"
#include "ingress_head.h"
#include "log.h"
#include "parse.h"
#include "sandbox.h"
#include "sandbox_part.h"
#include "sandboxd.h"
#include "store.h"
#include "tunnels.h"

#define DEFAULT_PORT 8080

int ingress_label_new(struct sandboxd *d, char out[INGRESS_LABEL_LEN + 1])
{
	uint8_t b[INGRESS_LABEL_LEN / 2];
	const struct sandbox_tunnel *t;
	uint16_t port;

	/* 64 random bits: a collision is rare, but two sandboxes must never answer for one name. */
	for (int tries = 0; tries < 8; tries++) {
		if (uv_random(NULL, NULL, b, sizeof(b), 0, NULL) < 0)
			return -EIO;
		sv_hex_encode(b, sizeof(b), out);
		if (!ingress_find_label(d, out, &port) && !tunnel_find_label(d, out, &t))
			return 0;
	}
	return -EIO;
}

static int label_for(struct sandbox *sb, uint16_t port, const char **label)
{
	struct sandbox_ingress *in = &sb->ingress;
	int r;

	for (unsigned i = 0; i < in->nports; i++)
		if (in->ports[i].port == port) {
			*label = in->ports[i].label;
			return 0;
		}
	if (in->nports == INGRESS_PORTS_MAX)
		return -EDQUOT;
	if ((r = ingress_label_new(sb->d, in->ports[in->nports].label)) < 0)
		return r;
	in->ports[in->nports].port = port;
	*label = in->ports[in->nports++].label;
	return 0;
}

static const char *label_of(const struct sandbox *sb, uint16_t port)
{
	for (unsigned i = 0; i < sb->ingress.nports; i++)
		if (sb->ingress.ports[i].port == port)
			return sb->ingress.ports[i].label;
	return "";
}

static void url_of(const struct sandboxd *d, const char *label, char *out, size_t cap)
{
	if (d->ingress_port == 443)
		snprintf(out, cap, "https://%s.%s", label, d->ingress_domain);
	else
		snprintf(out, cap, "https://%s.%s:%u", label, d->ingress_domain, d->ingress_port);
}

static cJSON *token_json(const struct sandbox *sb, const struct connect_token *t)
{
	cJSON *o = cJSON_CreateObject();
	char url[400];

	url_of(sb->d, label_of(sb, t->port), url, sizeof(url));
	cJSON_AddStringToObject(o, "id", t->id);
	cJSON_AddStringToObject(o, "url", url);
	cJSON_AddNumberToObject(o, "port", t->port);
	cJSON_AddNumberToObject(o, "created_at", (double)(long long)t->created_at);
	if (t->expires_at)
		cJSON_AddNumberToObject(o, "expires_at", (double)(long long)t->expires_at);
	else
		cJSON_AddNullToObject(o, "expires_at");
	return o;
}

/* 409 unless the sandbox can be reached; 503 without an ingress listener. */
static bool reachable(struct sandbox *sb, struct api_call *call)
{
	if (!sb->d->ingress_domain[0]) {
		api_call_fail(call, -EAGAIN, NULL,
			      "this worker serves no ingress (start sandboxd with --ingress and --ingress-domain)");
		return false;
	}
	if (sb->state != SANDBOX_RUNNING) {
		char why[300];

		sandbox_not_running(sb, why, sizeof(why));
		api_call_fail(call, -ESRCH, NULL, "%s", why);
		return false;
	}
	if (sb->spec.restricted) {
		api_call_fail(call, -EBUSY, NULL, "a restricted sandbox takes no connections");
		return false;
	}
	return true;
}

void ingress_token_create(struct sandbox *sb, struct api_call *call)
{
	size_t len;
	const char *text = api_call_body(call, &len);
	cJSON *body = cJSON_ParseWithLength(len ? text : "{}", len ? len : 2), *o;
	const cJSON *it, *meta, *port, *ttl;
	char verified[INGRESS_METADATA_MAX + 1], secret[CONNECT_TOKEN_SECRET_LEN + 1];
	const struct connect_token *t;
	const char *label;
	double p = DEFAULT_PORT, s = 0;
	int r;

	if (!cJSON_IsObject(body)) {
		api_call_fail(call, -EINVAL, NULL, "body must be a JSON object");
		goto out;
	}
	cJSON_ArrayForEach(it, body) {
		if (strcmp(it->string, "user_metadata") && strcmp(it->string, "port") && strcmp(it->string, "ttl")) {
			api_call_fail(call, -EINVAL, it->string, "unknown field %.64s (known: user_metadata, port, ttl)",
				      it->string);
			goto out;
		}
	}
	meta = cJSON_GetObjectItemCaseSensitive(body, "user_metadata");
	port = cJSON_GetObjectItemCaseSensitive(body, "port");
	ttl = cJSON_GetObjectItemCaseSensitive(body, "ttl");
	if (port && (!cJSON_IsNumber(port) || (p = port->valuedouble) < 1 || p > 65535 || p != (double)(int)p)) {
		api_call_fail(call, -EINVAL, "port", "port must be a whole number 1..65535");
		goto out;
	}
	if (ttl && !cJSON_IsNull(ttl) &&
	    (!cJSON_IsNumber(ttl) || (s = ttl->valuedouble) < 1 || s > CONNECT_TOKEN_TTL_MAX ||
	     s != (double)(long long)s)) {
		api_call_fail(call, -EINVAL, "ttl", "ttl is whole seconds 1..%u, or null for the sandbox's life",
			      CONNECT_TOKEN_TTL_MAX);
		goto out;
	}
	if (meta && !cJSON_IsObject(meta) && !cJSON_IsString(meta) && !cJSON_IsNull(meta)) {
		api_call_fail(call, -EINVAL, "user_metadata", "user_metadata is an object, a string or null");
		goto out;
	}
	r = ingress_metadata_encode(meta, verified, sizeof(verified));
	if (r < 0) {
		api_call_fail(call, -EINVAL, "user_metadata",
			      r == -E2BIG ? "user_metadata is over %d characters as JSON with \\uXXXX escapes"
					  : "user_metadata holds text that is not UTF-8 (limit %d)",
			      INGRESS_METADATA_MAX);
		goto out;
	}
	if (tunnel_of_port(sb, (uint16_t)p)) {
		/* The raw tunnel reaches the same server without the proxy, so a client could forge the header. */
		api_call_fail(call, -EINVAL, "port",
			      "port %u is a tunnel port of %s: a connect token there would not be trustworthy, "
			      "since the tunnel lets anyone send its own X-Verified-User-Data",
			      (unsigned)p, sb->id);
		goto out;
	}
	if (!reachable(sb, call))
		goto out;
	r = label_for(sb, (uint16_t)p, &label);
	if (r == 0)
		r = connect_token_new(&sb->ingress.tokens, (uint16_t)p, verified, sandboxd_wall_time(), (unsigned)s,
				      secret, sizeof(secret), &t);
	if (r < 0) {
		api_call_fail(call, r, NULL, r == -EDQUOT ? "sandbox %s has as many connect tokens or ports as it can"
							 : "cannot make a connect token for %s",
			      sb->id);
		goto out;
	}
	store_save(sb);
	sv_info("sandbox=%s event=connect_token_created token=%s port=%u", sb->id, t->id, t->port);
	o = token_json(sb, t);
	cJSON_AddStringToObject(o, "token", secret);
	api_call_ok(call, o);
	/* The secret leaves once, in the reply: this copy goes. */
	OPENSSL_cleanse(secret, sizeof(secret));
out:
	cJSON_Delete(body);
}

void ingress_token_list(struct sandbox *sb, struct api_call *call)
{
	cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "connect_tokens");

	connect_tokens_expire(&sb->ingress.tokens, sandboxd_wall_time());
	for (unsigned i = 0; i < sb->ingress.tokens.count; i++)
		cJSON_AddItemToArray(arr, token_json(sb, &sb->ingress.tokens.item[i]));
	api_call_ok(call, o);
}

/* Closes the sandbox's ingress connections whose latest request used token id (every one for NULL). */
static unsigned drop_links(struct sandbox *sb, const char *id)
{
	struct ingress_link *l = sb->ingress.links, *next;
	unsigned n = 0;

	for (; l; l = next) {
		next = l->next;
		if (!id || !strcmp(l->token_id, id)) {
			ingress_proxy_drop(l); /* release unlinks it */
			n++;
		}
	}
	return n;
}

void ingress_token_delete(struct sandbox *sb, const char *id, struct api_call *call)
{
	unsigned closed;

	if (connect_token_revoke(&sb->ingress.tokens, id) < 0)
		return api_call_fail(call, -ENOENT, NULL, "no connect token %.64s in %s", id, sb->id);
	store_save(sb);
	closed = drop_links(sb, id);
	sv_info("sandbox=%s event=connect_token_revoked token=%s connections_closed=%u", sb->id, id, closed);
	api_call_ok(call, NULL);
}

/* ---- the proxy's owner ---- */

static void link_detach(struct ingress_link *l)
{
	struct sandbox *sb = l->owner;

	if (l->prev)
		l->prev->next = l->next;
	else
		sb->ingress.links = l->next;
	if (l->next)
		l->next->prev = l->prev;
	l->prev = l->next = NULL;
	l->owner = NULL;
	sb->ingress.nlinks--;
	sandbox_activity(sb, -1);
	sandbox_unref(sb);
}

static int authorize(void *ctx, const char *label, const struct ingress_token_candidate *cand, size_t n,
		     struct ingress_link *link, struct ingress_grant *grant, char *why, size_t cap)
{
	struct sandboxd *d = ctx;
	const struct connect_token *t = NULL;
	struct sandbox *sb;
	uint16_t port;
	double now = sandboxd_wall_time();
	size_t i;

	sb = ingress_find_label(d, label, &port);
	if (!sb) {
		snprintf(why, cap, "no sandbox is served at this address");
		return 404;
	}
	for (i = 0; i < n && !t; i++) {
		t = connect_token_check(&sb->ingress.tokens, cand[i].token, now);
		if (t && t->port != port)
			t = NULL;
	}
	if (!t) {
		snprintf(why, cap, n ? "the connect token is not valid here (unknown, revoked or expired)"
				     : "a connect token is needed (Authorization: Bearer, or the " INGRESS_TOKEN_PARAM
				       " query parameter or cookie)");
		return 401;
	}
	if (sb->state != SANDBOX_RUNNING) {
		snprintf(why, cap, "the sandbox is %s", sandbox_state_name(sb->state));
		return 409;
	}
	if (link->owner != sb) {
		if (link->owner)
			link_detach(link);
		if (sb->ingress.nlinks >= d->ingress_max_connections) {
			snprintf(why, cap, "the sandbox has %u open connections, its limit", sb->ingress.nlinks);
			return 429;
		}
		link->owner = sb;
		link->prev = NULL;
		link->next = sb->ingress.links;
		if (link->next)
			link->next->prev = link;
		sb->ingress.links = link;
		sb->ingress.nlinks++;
		sandbox_ref(sb);
		/* An open connection keeps the sandbox from its idle timeout. */
		sandbox_activity(sb, 1);
	}
	snprintf(grant->vsock_path, sizeof(grant->vsock_path), "%s", sb->vm.vsock);
	grant->port = port;
	snprintf(grant->verified, sizeof(grant->verified), "%s", t->verified);
	snprintf(grant->token_id, sizeof(grant->token_id), "%s", t->id);
	grant->token_index = i - 1;
	return 0;
}

static void release(void *ctx, struct ingress_link *link)
{
	(void)ctx;
	if (link->owner)
		link_detach(link);
}

const struct ingress_proxy_ops sandboxd_ingress_ops = {
	.authorize = authorize,
	.release = release,
};

struct sandbox *ingress_find_label(struct sandboxd *d, const char *label, uint16_t *port)
{
	for (struct sandbox *sb = d->sandboxes; sb; sb = sb->next)
		for (unsigned i = 0; i < sb->ingress.nports; i++)
			if (!strcmp(sb->ingress.ports[i].label, label)) {
				*port = sb->ingress.ports[i].port;
				return sb;
			}
	return NULL;
}

/* ---- the part ---- */

/* Hashes only: a registry that leaks opens nothing. */
static void ingress_part_save(const struct sandbox *sb, cJSON *record)
{
	const struct sandbox_ingress *in = &sb->ingress;
	cJSON *o, *ports, *tokens;

	if (!in->nports && !in->tokens.count)
		return;
	o = cJSON_AddObjectToObject(record, "ingress");
	ports = cJSON_AddArrayToObject(o, "ports");
	tokens = cJSON_AddArrayToObject(o, "tokens");
	for (unsigned i = 0; i < in->nports; i++) {
		cJSON *p = cJSON_CreateObject();

		cJSON_AddNumberToObject(p, "port", in->ports[i].port);
		cJSON_AddStringToObject(p, "label", in->ports[i].label);
		cJSON_AddItemToArray(ports, p);
	}
	for (unsigned i = 0; i < in->tokens.count; i++) {
		const struct connect_token *t = &in->tokens.item[i];
		cJSON *j = cJSON_CreateObject();
		char h[2 * sizeof(t->hash) + 1];

		sv_hex_encode(t->hash, sizeof(t->hash), h);
		cJSON_AddStringToObject(j, "id", t->id);
		cJSON_AddStringToObject(j, "sha256", h);
		cJSON_AddNumberToObject(j, "port", t->port);
		cJSON_AddStringToObject(j, "verified", t->verified);
		cJSON_AddNumberToObject(j, "created_at", t->created_at);
		cJSON_AddNumberToObject(j, "expires_at", t->expires_at);
		cJSON_AddItemToArray(tokens, j);
	}
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void ingress_part_restore(struct sandbox *sb, const cJSON *record)
{
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(record, "ingress"), *it;
	struct sandbox_ingress *in = &sb->ingress;

	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(o, "ports")) {
		const cJSON *label = cJSON_GetObjectItemCaseSensitive(it, "label");
		double port = num(it, "port");

		if (in->nports == INGRESS_PORTS_MAX || port < 1 || port > 65535 || !cJSON_IsString(label) ||
		    strlen(label->valuestring) != INGRESS_LABEL_LEN)
			continue;
		in->ports[in->nports].port = (uint16_t)port;
		snprintf(in->ports[in->nports++].label, INGRESS_LABEL_LEN + 1, "%s", label->valuestring);
	}
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(o, "tokens")) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
		const cJSON *h = cJSON_GetObjectItemCaseSensitive(it, "sha256");
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "verified");
		struct connect_token t = {0};

		if (!cJSON_IsString(id) || strlen(id->valuestring) >= sizeof(t.id) || !cJSON_IsString(h) ||
		    sv_hex_decode(h->valuestring, t.hash, sizeof(t.hash)) < 0 || !cJSON_IsString(v) ||
		    strlen(v->valuestring) > INGRESS_METADATA_MAX || num(it, "port") < 1 || num(it, "port") > 65535)
			continue;
		snprintf(t.id, sizeof(t.id), "%s", id->valuestring);
		snprintf(t.verified, sizeof(t.verified), "%s", v->valuestring);
		t.port = (uint16_t)num(it, "port");
		t.created_at = num(it, "created_at");
		t.expires_at = num(it, "expires_at");
		if (connect_token_restore(&in->tokens, &t) < 0)
			break;
	}
}

/* Tokens and open connections end with the sandbox. */
static void ingress_part_teardown(struct sandbox *sb)
{
	drop_links(sb, NULL);
	connect_tokens_destroy(&sb->ingress.tokens);
}

const struct sandbox_part_ops sandbox_ingress_part = {
	.name = "ingress",
	.teardown = ingress_part_teardown,
	.restore = ingress_part_restore,
	.save = ingress_part_save,
};
