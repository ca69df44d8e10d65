#ifndef SANDVM_API_SANDBOXD_FLEET_FLEET_WORKER_H
#define SANDVM_API_SANDBOXD_FLEET_FLEET_WORKER_H

/*
 * This worker in etcd (docs/fleet.md, "Workers"): its record at
 * /sandvm/workers/ID under a lease of ETCD_WORKER_LEASE_S, kept alive from
 * the loop and rewritten when its usage changes. A worker that lost its
 * lease, or could not renew it within the TTL, takes no creates until it has
 * a new lease and its record again.
 */

#include <stdbool.h>
#include <stddef.h>

#include "fleet_table.h" /* the keys, and ids as fleet_id_valid() takes them */

#define ETCD_WORKER_LEASE_S 10
/* How often the lease is renewed: three tries within one TTL. */
#define FLEET_KEEPALIVE_MS 3000
/* The record is rewritten at most this often when the usage changes. */
#define FLEET_UPDATE_MS 500

struct cJSON;
struct sandboxd;
struct fleet_worker;

struct fleet_worker_config {
	const char *endpoints; /* --etcd */
	const char *advertise; /* --advertise https://HOST:PORT */
	char id[FLEET_ID_MAX + 1];
};

/* --advertise: https://HOST:PORT as a gateway's table takes it (fleet_address_parse). */
bool fleet_worker_address_valid(const char *url);

/*
 * Registers this worker, running the loop until the first try has an
 * answer. 0: registered, or etcd is unreachable (then it keeps trying and
 * takes no creates meanwhile); -EEXIST: another live worker holds the id
 * (told in err); -EINVAL: bad endpoints.
 */
int fleet_worker_start(struct sandboxd *d, const struct fleet_worker_config *cfg, struct fleet_worker **out,
		       char *err, size_t errlen);
/* Whether creates are taken: registered under a live lease and not stopping. */
bool fleet_worker_accepting(const struct fleet_worker *w);
/* /v1/health's "fleet" object into o. */
void fleet_worker_health(const struct fleet_worker *w, struct cJSON *o);
/*
 * Stops taking creates and revokes the lease (the record goes with it);
 * done() runs once that is answered or after ETCD_REQUEST_TIMEOUT_MS.
 */
void fleet_worker_stop(struct fleet_worker *w, void (*done)(void *arg), void *arg);
/* Frees it and its client (no callbacks after). */
void fleet_worker_free(struct fleet_worker *w);

#endif
