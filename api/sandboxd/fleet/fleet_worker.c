/*
 * This worker's record in etcd (fleet_worker.h, docs/fleet.md "Workers").
 *
 * One timer drives everything every FLEET_UPDATE_MS: the keepalive every
 * FLEET_KEEPALIVE_MS, the loss of the lease when none succeeded within its
 * TTL, the record rewritten when the usage changed, and registration tries
 * while unregistered. At most one request of each kind is in flight, and an
 * answer about a lease that is no longer ours is ignored.
 */
#include "fleet_worker.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "log.h"
#include "../sandbox.h"
#include "../sandboxd.h"
#include "etcd.h"

/* Registration tries while etcd does not answer. */
#define FLEET_RETRY_MS 1000
/* ... and while another worker holds our id. */
#define FLEET_CONFLICT_RETRY_MS 3000

struct fleet_worker {
	struct sandboxd *d;
	struct etcd_client *etcd;
	uv_timer_t tick, stop_timer;
	unsigned open_timers;
	char id[FLEET_ID_MAX + 1];
	char key[sizeof(FLEET_WORKERS_PREFIX) + FLEET_ID_MAX];
	char address[256];
	double started;
	int64_t lease;        /* the lease we are registered under; 0 while not */
	int64_t new_lease;    /* granted, while its record is being written */
	int64_t old_lease;    /* the one lost: a record still under it is ours */
	bool registered, registering;
	bool etcd_ok;         /* the last request had an answer */
	bool starting;        /* the first try, whose conflict refuses the start */
	int start_err;
	char *start_msg;
	size_t start_msglen;
	bool first_done;
	bool stopping, stop_told;
	void (*stop_done)(void *arg);
	void *stop_arg;
	int64_t keepalive_lease, put_lease; /* which lease the request in flight was for; 0: none in flight */
	uint64_t last_keepalive_ok, last_keepalive_sent, last_put, next_try;
	uint64_t grant_sent; /* the lease's TTL runs from about then */
	unsigned rec_sandboxes, rec_memory; /* what the record in etcd says */
	bool rec_stale;                     /* a write failed: write it again */
};

bool fleet_worker_address_valid(const char *url)
{
	char host[FLEET_HOST_MAX + 1], why[128];
	uint16_t port;

	/* The gateways parse the record's address with the same function: what one refuses, both do. */
	return url && fleet_address_parse(url, strlen(url), host, sizeof(host), &port, why, sizeof(why)) == 0;
}

static void usage_now(const struct fleet_worker *w, unsigned *count, unsigned *memory)
{
	sandbox_usage(w->d, count, memory);
}

/* The record of docs/fleet.md; NULL when out of memory. */
static char *record(struct fleet_worker *w, unsigned count, unsigned memory)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "id", w->id);
	cJSON_AddStringToObject(o, "address", w->address);
	cJSON_AddStringToObject(o, "version", SANDVM_VERSION);
	cJSON_AddNumberToObject(o, "sandboxes", count);
	cJSON_AddNumberToObject(o, "memory_mib", memory);
	cJSON_AddNumberToObject(o, "max_sandboxes", w->d->max_sandboxes);
	cJSON_AddNumberToObject(o, "max_memory_mib", w->d->max_memory_mib);
	cJSON_AddBoolToObject(o, "accepting", !w->stopping);
	cJSON_AddNumberToObject(o, "started", (double)(int64_t)w->started);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

static void set_etcd_ok(struct fleet_worker *w, bool ok, int err)
{
	if (ok && !w->etcd_ok)
		sv_info("fleet: etcd answers again");
	else if (!ok && w->etcd_ok)
		sv_warn("fleet: etcd does not answer (%s)", strerror(-err));
	w->etcd_ok = ok;
}

static void first_done(struct fleet_worker *w, int err)
{
	if (w->starting) {
		w->starting = false;
		w->start_err = err;
		w->first_done = true;
	}
}

static void lose(struct fleet_worker *w, const char *why)
{
	if (!w->registered)
		return;
	sv_warn("fleet: worker %s lost its lease %" PRId64 " (%s); it takes no creates until it is registered again",
		w->id, w->lease, why);
	w->registered = false;
	w->old_lease = w->lease;
	w->lease = 0;
	w->next_try = 0;
}

static void on_revoked_quietly(void *arg, int err)
{
	(void)arg;
	(void)err;
}

/* A lease granted for a registration that did not happen: given back at once rather than left to expire. */
static void drop_lease(struct fleet_worker *w, int64_t lease)
{
	if (lease)
		etcd_lease_revoke(w->etcd, lease, on_revoked_quietly, w);
}

static void registered(struct fleet_worker *w, unsigned count, unsigned memory)
{
	uint64_t now = uv_now(w->d->loop);

	w->lease = w->new_lease;
	w->new_lease = 0;
	w->old_lease = 0;
	w->registered = true;
	w->registering = false;
	w->last_keepalive_ok = w->grant_sent;
	w->last_keepalive_sent = w->last_put = now;
	w->rec_sandboxes = count;
	w->rec_memory = memory;
	w->rec_stale = false;
	sv_info("fleet: registered as %s (%s) under lease %" PRId64 "; taking creates", w->key, w->address, w->lease);
	first_done(w, 0);
}

static void retry_later(struct fleet_worker *w, uint64_t ms)
{
	w->registering = false;
	w->next_try = uv_now(w->d->loop) + ms;
}

static void on_reput(void *arg, int err)
{
	struct fleet_worker *w = arg;

	if (w->stopping)
		return;
	if (err < 0) {
		set_etcd_ok(w, err == -ENOENT, err);
		drop_lease(w, w->new_lease);
		w->new_lease = 0;
		retry_later(w, FLEET_RETRY_MS);
		first_done(w, 0);
		return;
	}
	registered(w, w->rec_sandboxes, w->rec_memory);
}

static void on_txn(void *arg, int err, bool succeeded, const struct etcd_kv *existing)
{
	struct fleet_worker *w = arg;
	char *rec;

	if (w->stopping)
		return;
	if (err < 0) {
		set_etcd_ok(w, false, err);
		drop_lease(w, w->new_lease);
		w->new_lease = 0;
		retry_later(w, FLEET_RETRY_MS);
		first_done(w, 0);
		return;
	}
	set_etcd_ok(w, true, 0);
	if (succeeded)
		return registered(w, w->rec_sandboxes, w->rec_memory);
	/*
	 * The key is there. Under the lease just granted (our own txn, retried on
	 * another member) or the one we lost (etcd has not expired it yet), it is
	 * ours: written again under the new lease. Under any other, another live
	 * worker has our id.
	 */
	if (existing && (existing->lease == w->new_lease || (w->old_lease && existing->lease == w->old_lease))) {
		rec = record(w, w->rec_sandboxes, w->rec_memory);
		if (rec && etcd_put(w->etcd, w->key, rec, strlen(rec), w->new_lease, on_reput, w) == 0) {
			free(rec);
			return;
		}
		free(rec);
		drop_lease(w, w->new_lease);
		w->new_lease = 0;
		retry_later(w, FLEET_RETRY_MS);
		first_done(w, 0);
		return;
	}
	drop_lease(w, w->new_lease);
	w->new_lease = 0;
	if (w->starting) {
		snprintf(w->start_msg, w->start_msglen,
			 "another live worker is registered as %s (lease %" PRId64 "); give this one another "
			 "--worker-id, or stop that one (a worker that died frees its id within %d s)",
			 w->key, existing ? existing->lease : 0, ETCD_WORKER_LEASE_S);
		first_done(w, -EEXIST);
		retry_later(w, FLEET_CONFLICT_RETRY_MS);
		return;
	}
	sv_err("fleet: another live worker is registered as %s (lease %" PRId64 "); this one takes no creates",
	       w->key, existing ? existing->lease : 0);
	retry_later(w, FLEET_CONFLICT_RETRY_MS);
}

static void on_granted(void *arg, int err, int64_t lease, int64_t ttl_s)
{
	struct fleet_worker *w = arg;
	char *rec;

	(void)ttl_s;
	if (w->stopping) {
		if (!err)
			drop_lease(w, lease);
		return;
	}
	if (err < 0) {
		set_etcd_ok(w, false, err);
		retry_later(w, FLEET_RETRY_MS);
		first_done(w, 0);
		return;
	}
	set_etcd_ok(w, true, 0);
	w->new_lease = lease;
	usage_now(w, &w->rec_sandboxes, &w->rec_memory);
	rec = record(w, w->rec_sandboxes, w->rec_memory);
	if (!rec || etcd_create_if_absent(w->etcd, w->key, rec, strlen(rec), lease, on_txn, w) < 0) {
		drop_lease(w, lease);
		w->new_lease = 0;
		retry_later(w, FLEET_RETRY_MS);
		first_done(w, 0);
	}
	free(rec);
}

static void try_register(struct fleet_worker *w)
{
	w->registering = true;
	uv_update_time(w->d->loop); /* at start, the loop's clock may be from before a long restore */
	w->grant_sent = uv_now(w->d->loop);
	if (etcd_lease_grant(w->etcd, ETCD_WORKER_LEASE_S, on_granted, w) < 0) {
		retry_later(w, FLEET_RETRY_MS);
		first_done(w, 0);
	}
}

static void on_keepalive(void *arg, int err, int64_t lease, int64_t ttl_s)
{
	struct fleet_worker *w = arg;
	int64_t sent_for = w->keepalive_lease;

	(void)lease;
	(void)ttl_s;
	w->keepalive_lease = 0;
	if (w->stopping || !w->registered || sent_for != w->lease)
		return;
	if (err == -ENOENT) {
		set_etcd_ok(w, true, 0);
		lose(w, "etcd says it is gone");
		return;
	}
	set_etcd_ok(w, err == 0, err);
	/* etcd renewed the lease after we sent: counting from the send errs on the safe side. */
	if (err == 0)
		w->last_keepalive_ok = w->last_keepalive_sent;
}

static void on_put(void *arg, int err)
{
	struct fleet_worker *w = arg;
	int64_t sent_for = w->put_lease;

	w->put_lease = 0;
	if (w->stopping || !w->registered || sent_for != w->lease)
		return;
	if (err == -ENOENT) {
		set_etcd_ok(w, true, 0);
		lose(w, "etcd refused a write under it");
		return;
	}
	set_etcd_ok(w, err == 0, err);
	w->rec_stale = err < 0;
}

static void on_tick(uv_timer_t *t)
{
	struct fleet_worker *w = t->data;
	uint64_t now = uv_now(w->d->loop);
	unsigned count, memory;

	if (w->stopping)
		return;
	if (!w->registered) {
		if (!w->registering && now >= w->next_try)
			try_register(w);
		return;
	}
	/*
	 * Lost once etcd may have let the lease expire: a TTL after the send of
	 * the last keepalive it answered, less a tick so that this check is not
	 * late.
	 */
	if (now - w->last_keepalive_ok > ETCD_WORKER_LEASE_S * 1000u - FLEET_UPDATE_MS) {
		lose(w, "no keepalive was answered within its TTL");
		try_register(w);
		return;
	}
	if (!w->keepalive_lease && now - w->last_keepalive_sent >= FLEET_KEEPALIVE_MS) {
		w->last_keepalive_sent = now;
		if (etcd_lease_keepalive(w->etcd, w->lease, on_keepalive, w) == 0)
			w->keepalive_lease = w->lease;
	}
	usage_now(w, &count, &memory);
	if (!w->put_lease && now - w->last_put >= FLEET_UPDATE_MS &&
	    (w->rec_stale || count != w->rec_sandboxes || memory != w->rec_memory)) {
		char *rec = record(w, count, memory);

		w->last_put = now;
		if (rec && etcd_put(w->etcd, w->key, rec, strlen(rec), w->lease, on_put, w) == 0) {
			w->put_lease = w->lease;
			w->rec_sandboxes = count;
			w->rec_memory = memory;
		}
		free(rec);
	}
}

int fleet_worker_start(struct sandboxd *d, const struct fleet_worker_config *cfg, struct fleet_worker **out,
		       char *err, size_t errlen)
{
	struct fleet_worker *w;
	int r;

	*out = NULL;
	if (!fleet_id_valid(cfg->id, strlen(cfg->id))) {
		snprintf(err, errlen, "the worker id \"%s\" is not [A-Za-z0-9._-]{1,63} (--worker-id)", cfg->id);
		return -EINVAL;
	}
	if (!fleet_worker_address_valid(cfg->advertise)) {
		snprintf(err, errlen, "--advertise wants https://HOST:PORT, the address clients and gateways reach "
				      "this worker's API at");
		return -EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = etcd_client_new(d->loop, cfg->endpoints, &w->etcd, err, errlen);
	if (r < 0) {
		free(w);
		return r;
	}
	w->d = d;
	snprintf(w->id, sizeof(w->id), "%s", cfg->id);
	snprintf(w->key, sizeof(w->key), "%s%s", FLEET_WORKERS_PREFIX, cfg->id);
	snprintf(w->address, sizeof(w->address), "%s", cfg->advertise);
	w->started = sandboxd_wall_time();
	w->etcd_ok = true;
	w->starting = true;
	w->start_msg = err;
	w->start_msglen = errlen;
	uv_timer_init(d->loop, &w->tick);
	uv_timer_init(d->loop, &w->stop_timer);
	w->tick.data = w->stop_timer.data = w;
	w->open_timers = 2;
	try_register(w);
	while (!w->first_done)
		uv_run(d->loop, UV_RUN_ONCE);
	w->start_msg = NULL;
	if (w->start_err < 0) {
		r = w->start_err;
		fleet_worker_free(w);
		return r;
	}
	if (!w->registered)
		sv_warn("fleet: not registered yet (etcd at %s does not answer); taking no creates until it is",
			cfg->endpoints);
	uv_timer_start(&w->tick, on_tick, FLEET_UPDATE_MS, FLEET_UPDATE_MS);
	*out = w;
	return 0;
}

bool fleet_worker_accepting(const struct fleet_worker *w)
{
	return w->registered && !w->stopping;
}

void fleet_worker_health(const struct fleet_worker *w, cJSON *o)
{
	cJSON *f = cJSON_AddObjectToObject(o, "fleet");

	if (!f)
		return;
	cJSON_AddStringToObject(f, "worker_id", w->id);
	cJSON_AddBoolToObject(f, "registered", w->registered);
	cJSON_AddStringToObject(f, "etcd", w->etcd_ok ? "ok" : "unreachable");
}

static void stop_finished(struct fleet_worker *w)
{
	if (w->stop_told)
		return;
	w->stop_told = true;
	uv_timer_stop(&w->stop_timer);
	if (w->stop_done)
		w->stop_done(w->stop_arg);
}

static void on_stop_revoked(void *arg, int err)
{
	struct fleet_worker *w = arg;

	if (err < 0)
		sv_warn("fleet: revoking lease %" PRId64 " at shutdown: %s (the record goes within %d s)", w->lease,
			strerror(-err), ETCD_WORKER_LEASE_S);
	else
		sv_info("fleet: lease %" PRId64 " revoked; %s is gone", w->lease, w->key);
	stop_finished(w);
}

static void on_stop_timeout(uv_timer_t *t)
{
	struct fleet_worker *w = t->data;

	sv_warn("fleet: etcd did not answer the revoke of lease %" PRId64 " in time", w->lease);
	stop_finished(w);
}

void fleet_worker_stop(struct fleet_worker *w, void (*done)(void *arg), void *arg)
{
	w->stopping = true;
	w->stop_done = done;
	w->stop_arg = arg;
	uv_timer_stop(&w->tick);
	if (!w->lease || etcd_lease_revoke(w->etcd, w->lease, on_stop_revoked, w) < 0) {
		stop_finished(w);
		return;
	}
	uv_timer_start(&w->stop_timer, on_stop_timeout, ETCD_REQUEST_TIMEOUT_MS, 0);
}

static void on_timer_closed(uv_handle_t *h)
{
	struct fleet_worker *w = h->data;

	if (--w->open_timers == 0)
		free(w);
}

void fleet_worker_free(struct fleet_worker *w)
{
	if (!w)
		return;
	etcd_client_free(w->etcd);
	w->etcd = NULL;
	uv_close((uv_handle_t *)&w->tick, on_timer_closed);
	uv_close((uv_handle_t *)&w->stop_timer, on_timer_closed);
}
