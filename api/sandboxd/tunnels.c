/*
 * The API side of tunnels (tunnels.h, docs/ingress.md "Tunnels"): the model
 * filled at create from the spec's encrypted_ports, unencrypted_ports and
 * h2_ports, its labels and host ports, its place in the registry, and
 * GET .../tunnels. Host ports in use are those held by the sandboxes'
 * tunnels, so the daemon keeps no separate table.
 */
#include "tunnels.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api_call.h"
#include "sandbox.h"
#include "sandbox_part.h"
#include "sandboxd.h"
#include "spec.h"

_Static_assert(TUNNELS_MAX == SPEC_TUNNELS_MAX, "the spec bounds the tunnels a sandbox holds");

static const char *const kind_field[] = {
	[TUNNEL_ENCRYPTED] = "encrypted_ports",
	[TUNNEL_UNENCRYPTED] = "unencrypted_ports",
	[TUNNEL_H2] = "h2_ports",
};
static const char *const kind_name[] = {
	[TUNNEL_ENCRYPTED] = "encrypted",
	[TUNNEL_UNENCRYPTED] = "unencrypted",
	[TUNNEL_H2] = "h2",
};

static const struct cJSON *spec_ports(const struct sandbox_spec *spec, enum tunnel_kind k)
{
	return k == TUNNEL_ENCRYPTED ? spec->encrypted_ports : k == TUNNEL_UNENCRYPTED ? spec->unencrypted_ports
										       : spec->h2_ports;
}

const struct sandbox_tunnel *tunnel_of_port(const struct sandbox *sb, uint16_t port)
{
	for (unsigned i = 0; i < sb->tunnels.n; i++)
		if (sb->tunnels.t[i].port == port)
			return &sb->tunnels.t[i];
	return NULL;
}

struct sandbox *tunnel_find_label(struct sandboxd *d, const char *label, const struct sandbox_tunnel **t)
{
	for (struct sandbox *sb = d->sandboxes; sb; sb = sb->next)
		for (unsigned i = 0; i < sb->tunnels.n; i++)
			if (!strcmp(sb->tunnels.t[i].label, label)) {
				*t = &sb->tunnels.t[i];
				return sb;
			}
	return NULL;
}

struct sandbox *tunnel_find_plain_port(struct sandboxd *d, uint16_t plain_port, const struct sandbox_tunnel **t)
{
	if (!plain_port)
		return NULL;
	for (struct sandbox *sb = d->sandboxes; sb; sb = sb->next)
		for (unsigned i = 0; i < sb->tunnels.n; i++)
			if (sb->tunnels.t[i].plain_port == plain_port) {
				*t = &sb->tunnels.t[i];
				return sb;
			}
	return NULL;
}

bool tunnels_admit(const struct sandboxd *d, const struct sandbox_spec *spec, char *field, size_t fieldlen, char *msg,
		   size_t msglen)
{
	for (enum tunnel_kind k = TUNNEL_ENCRYPTED; k <= TUNNEL_H2; k++) {
		if (!spec_ports(spec, k))
			continue;
		snprintf(field, fieldlen, "%s", kind_field[k]);
		if (!d->ingress_domain[0]) {
			snprintf(msg, msglen,
				 "%s needs the ingress listener, and this daemon has none "
				 "(start sandboxd with --ingress and --ingress-domain)",
				 kind_field[k]);
			return false;
		}
		if (k == TUNNEL_UNENCRYPTED && !d->tunnel_port_lo) {
			snprintf(msg, msglen,
				 "unencrypted_ports need host TCP ports, and this daemon has none to give "
				 "(start sandboxd with --tunnel-ports LO-HI)");
			return false;
		}
	}
	return true;
}

/* Held by a sandbox's tunnels, sb's own included (it is not in the list while it is set up). */
static bool plain_port_taken(struct sandboxd *d, const struct sandbox *sb, uint16_t port)
{
	const struct sandbox_tunnel *t;

	for (unsigned i = 0; i < sb->tunnels.n; i++)
		if (sb->tunnels.t[i].plain_port == port)
			return true;
	return tunnel_find_plain_port(d, port, &t) != NULL;
}

uint16_t tunnel_plain_port_after(struct sandboxd *d, const struct sandbox *sb, uint16_t after)
{
	unsigned p = after + 1u > d->tunnel_port_lo ? after + 1u : d->tunnel_port_lo;

	for (; p && p <= d->tunnel_port_hi; p++)
		if (!plain_port_taken(d, sb, (uint16_t)p))
			return (uint16_t)p;
	return 0;
}

/* The lowest free port of --tunnel-ports, or 0. */
static uint16_t plain_port_new(struct sandboxd *d, const struct sandbox *sb)
{
	return tunnel_plain_port_after(d, sb, 0);
}

static bool label_taken(const struct sandbox *sb, const char *label)
{
	for (unsigned i = 0; i < sb->tunnels.n; i++)
		if (!strcmp(sb->tunnels.t[i].label, label))
			return true;
	return false;
}

/* ---- the part ---- */

static void tunnels_part_teardown(struct sandbox *sb)
{
	/* The host ports go back to the range; the labels stay, naming a finished sandbox. */
	for (unsigned i = 0; i < sb->tunnels.n; i++)
		sb->tunnels.t[i].plain_port = 0;
}

static int tunnels_part_setup(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	struct sandbox_tunnels *ts = &sb->tunnels;
	const cJSON *it;
	int r;

	(void)l;
	ts->n = 0;
	for (enum tunnel_kind k = TUNNEL_ENCRYPTED; k <= TUNNEL_H2; k++) {
		cJSON_ArrayForEach(it, spec_ports(&sb->spec, k)) {
			struct sandbox_tunnel *t = &ts->t[ts->n];

			if (ts->n == TUNNELS_MAX) /* the spec saw to it */
				return -E2BIG;
			memset(t, 0, sizeof(*t));
			t->port = (uint16_t)it->valuedouble;
			t->kind = k;
			do
				r = ingress_label_new(sb->d, t->label);
			while (r == 0 && label_taken(sb, t->label));
			if (r < 0) {
				snprintf(err, errlen, "cannot make a tunnel label");
				goto fail;
			}
			if (k == TUNNEL_UNENCRYPTED && !(t->plain_port = plain_port_new(sb->d, sb))) {
				snprintf(err, errlen,
					 "no free host port for unencrypted_ports: every port of --tunnel-ports %u-%u "
					 "is in use",
					 sb->d->tunnel_port_lo, sb->d->tunnel_port_hi);
				r = -EADDRINUSE;
				goto fail;
			}
			ts->n++;
		}
	}
	return 0;
fail:
	tunnels_part_teardown(sb);
	ts->n = 0;
	return r;
}

static void tunnels_part_save(const struct sandbox *sb, cJSON *record)
{
	cJSON *arr;

	if (!sb->tunnels.n)
		return;
	arr = cJSON_AddArrayToObject(record, "tunnels");
	for (unsigned i = 0; i < sb->tunnels.n; i++) {
		const struct sandbox_tunnel *t = &sb->tunnels.t[i];
		cJSON *o = cJSON_CreateObject();

		cJSON_AddNumberToObject(o, "port", t->port);
		cJSON_AddStringToObject(o, "kind", kind_name[t->kind]);
		cJSON_AddStringToObject(o, "label", t->label);
		cJSON_AddNumberToObject(o, "plain_port", t->plain_port);
		cJSON_AddItemToArray(arr, o);
	}
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/*
 * The record is ours, but it is a file: each entry is checked; a label or a
 * host port that two records claim stays with the first restored.
 */
static void tunnels_part_restore(struct sandbox *sb, const cJSON *record)
{
	struct sandbox_tunnels *ts = &sb->tunnels;
	const struct sandbox_tunnel *other;
	const cJSON *it;

	ts->n = 0;
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(record, "tunnels")) {
		const cJSON *label = cJSON_GetObjectItemCaseSensitive(it, "label");
		const cJSON *kind = cJSON_GetObjectItemCaseSensitive(it, "kind");
		double port = num(it, "port"), plain = num(it, "plain_port");
		struct sandbox_tunnel *t = &ts->t[ts->n];
		int k = -1;

		for (int i = TUNNEL_ENCRYPTED; i <= TUNNEL_H2; i++)
			if (cJSON_IsString(kind) && !strcmp(kind->valuestring, kind_name[i]))
				k = i;
		if (ts->n == TUNNELS_MAX || k < 0 || port < 1 || port > 65535 || port != (double)(int)port ||
		    plain < 0 || plain > 65535 || plain != (double)(int)plain || !cJSON_IsString(label) ||
		    strlen(label->valuestring) != INGRESS_LABEL_LEN ||
		    strspn(label->valuestring, "0123456789abcdef") != INGRESS_LABEL_LEN ||
		    tunnel_of_port(sb, (uint16_t)port) || label_taken(sb, label->valuestring) ||
		    tunnel_find_label(sb->d, label->valuestring, &other))
			continue;
		memset(t, 0, sizeof(*t));
		t->port = (uint16_t)port;
		t->kind = (enum tunnel_kind)k;
		snprintf(t->label, sizeof(t->label), "%s", label->valuestring);
		if (k == TUNNEL_UNENCRYPTED && plain && !plain_port_taken(sb->d, sb, (uint16_t)plain))
			t->plain_port = (uint16_t)plain;
		ts->n++;
	}
}

static void tunnels_part_to_json(const struct sandbox *sb, cJSON *out)
{
	if (sb->tunnels.n)
		cJSON_AddNumberToObject(out, "tunnels", sb->tunnels.n);
}

const struct sandbox_part_ops sandbox_tunnels_part = {
	.name = "tunnels",
	.setup = tunnels_part_setup,
	.teardown = tunnels_part_teardown,
	.restore = tunnels_part_restore,
	.save = tunnels_part_save,
	.to_json = tunnels_part_to_json,
};

/* ---- GET .../tunnels ---- */

static cJSON *tunnel_json(const struct sandbox *sb, const struct sandbox_tunnel *t)
{
	const struct sandboxd *d = sb->d;
	cJSON *o = cJSON_CreateObject();
	char host[INGRESS_LABEL_LEN + 2 + sizeof(d->ingress_domain)], url[sizeof(host) + 16];

	cJSON_AddNumberToObject(o, "container_port", t->port);
	if (d->ingress_domain[0]) {
		snprintf(host, sizeof(host), "%s.%s", t->label, d->ingress_domain);
		if (d->ingress_port == 443)
			snprintf(url, sizeof(url), "https://%s", host);
		else
			snprintf(url, sizeof(url), "https://%s:%u", host, d->ingress_port);
		cJSON_AddStringToObject(o, "host", host);
		cJSON_AddNumberToObject(o, "port", d->ingress_port);
		cJSON_AddStringToObject(o, "url", url);
	} else {
		/* A restart without --ingress: the tunnel is kept but served nowhere. */
		cJSON_AddNullToObject(o, "host");
		cJSON_AddNullToObject(o, "port");
		cJSON_AddNullToObject(o, "url");
	}
	if (t->kind == TUNNEL_UNENCRYPTED && t->plain_port) {
		cJSON_AddStringToObject(o, "unencrypted_host", d->tunnel_host);
		cJSON_AddNumberToObject(o, "unencrypted_port", t->plain_port);
	} else {
		cJSON_AddNullToObject(o, "unencrypted_host");
		cJSON_AddNullToObject(o, "unencrypted_port");
	}
	cJSON_AddBoolToObject(o, "h2", t->kind == TUNNEL_H2);
	return o;
}

void tunnels_list(struct sandbox *sb, struct api_call *call)
{
	cJSON *o = cJSON_CreateObject(), *all = cJSON_AddObjectToObject(o, "tunnels");

	for (unsigned i = 0; i < sb->tunnels.n; i++) {
		char key[8];

		snprintf(key, sizeof(key), "%u", sb->tunnels.t[i].port);
		cJSON_AddItemToObject(all, key, tunnel_json(sb, &sb->tunnels.t[i]));
	}
	api_call_ok(call, o);
}
