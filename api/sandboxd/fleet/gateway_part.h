#ifndef SANDVM_API_SANDBOXD_FLEET_GATEWAY_PART_H
#define SANDVM_API_SANDBOXD_FLEET_GATEWAY_PART_H

/* What the gateway's files share (gateway*.c); not an interface. */

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "fleet_table.h"
#include "gateway.h"

struct api_call;
struct etcd_client;
struct etcd_watch;
struct worker_pool;

/* Sandbox id -> worker id, learned from reservations; what keeps routing while etcd is away. */
struct gateway_route {
	struct gateway_route *next;
	char sandbox[20];
	char worker[FLEET_ID_MAX + 1];
};

#define GATEWAY_ROUTE_BUCKETS 4096
#define GATEWAY_ROUTES_MAX 1000000u
#define GATEWAY_CALL_TIMEOUT_MS 30000u /* a create or list call to one worker */
#define GATEWAY_LIST_TIMEOUT_MS 5000u
/* A failed read of etcd within this long of the last good one is tried again (a leader election), not etcd down. */
#define GATEWAY_ETCD_GRACE_MS 8000u
#define GATEWAY_ETCD_RETRY_MS 500u

struct gateway {
	uv_loop_t *loop;
	struct etcd_client *etcd;
	struct etcd_watch *watch;
	struct ssl_ctx_st *tls;
	struct worker_pool *pool; /* kept connections to the workers, for relays and whole calls */
	struct auth_keys *keys;
	unsigned sample;
	unsigned sync_ms;
	unsigned relay_idle_ms;
	struct fleet_table table;
	bool etcd_ok;         /* the last read of etcd answered */
	bool syncing;         /* a range read is under way */
	bool freeing;
	double etcd_last_ok;  /* wall time of that read */
	uint64_t etcd_ok_at;  /* its loop time */
	bool retry_soon;      /* a read failed within the grace: the next comes sooner */
	char etcd_error[160]; /* why not, when not */
	uv_timer_t sync_timer;
	uint64_t rng;
	struct gateway_route *routes[GATEWAY_ROUTE_BUCKETS];
	unsigned nroutes;
	unsigned busy; /* etcd and worker calls under way (they hold the gateway) */
};

void gateway_route_set(struct gateway *g, const char *sandbox, const char *worker);
const char *gateway_route_get(const struct gateway *g, const char *sandbox);
void gateway_route_forget(struct gateway *g, const char *sandbox);
uint32_t gateway_rand(void *g);
/* The JSON of a lost sandbox (docs/fleet.md): finished, reason lost, returncode 125, its worker. */
struct cJSON *gateway_lost_json(const char *sandbox, const char *worker, double created);

/* POST /v1/sandboxes and GET /v1/sandboxes (the request's body read). */
void gateway_create(struct gateway *g, struct api_call *call);
void gateway_list(struct gateway *g, struct api_call *call);
/*
 * The lists merged from every live worker's (GET /v1/sandboxes, GET
 * /v1/snapshots; gateway_list.c). gateway_list_merge: one worker's answer to
 * its list call (worker_call's callback arguments) into the merged array
 * into: each object of its array named key, with "worker" set to worker; a
 * worker that failed, answered other than 200 or whose list does not parse
 * is named in unreachable instead, as gateway_list_unreachable names one:
 * {"worker": worker, "error": why}. gateway_list_answer: the merged reply to
 * call ("unreachable" left out when empty), and call released.
 */
void gateway_list_merge(struct cJSON *into, struct cJSON *unreachable, const char *key, const char *worker, int err,
			int status, const char *body, size_t len);
void gateway_list_unreachable(struct cJSON *unreachable, const char *worker, const char *why);
void gateway_list_answer(struct api_call *call, struct cJSON *reply, struct cJSON *unreachable);
/* The calls on one sandbox the gateway makes whole (gateway_get.c) rather than relays as bytes. */
enum gateway_sandbox_op {
	GATEWAY_SANDBOX_GET,    /* GET .../ID: the worker's object with "worker", or the lost one */
	GATEWAY_SANDBOX_WAIT,   /* GET .../ID/wait: the same, once finished */
	GATEWAY_SANDBOX_DELETE, /* DELETE .../ID: the worker's answer; then, or when lost, the reservation goes */
	GATEWAY_SANDBOX_MOUNT,  /* POST .../ID/mounts: refused when the image is on another worker, else the worker's */
};
void gateway_sandbox_call(struct gateway *g, struct api_call *call, const char *sandbox, enum gateway_sandbox_op op);
/* Snapshot images (gateway_images.c): where one is, asked of every live worker. */
#define GATEWAY_IMAGE_ID_LEN 32
bool gateway_image_id_valid(const char *id);
/*
 * worker: the one that has image, with its object (taken by the callback);
 * NULL: none that answered has it, and unreachable did not answer. Called
 * once, possibly before gateway_image_find returns when no call could go
 * out. 0, or -EINVAL (not an image id), -ENOENT (no worker is live), -ENOMEM,
 * with no callback.
 */
typedef void (*gateway_image_found_fn)(void *ctx, const char *worker, struct cJSON *image, unsigned unreachable);
int gateway_image_find(struct gateway *g, const char *image, const char *authorization, gateway_image_found_fn cb,
		       void *ctx);
/* GET /v1/snapshots (merged), GET and DELETE /v1/snapshots/ID (at the image's worker). */
void gateway_images_list(struct gateway *g, struct api_call *call);
void gateway_image_call(struct gateway *g, struct api_call *call, const char *image, bool del);
/* How long the gateway waits for a /wait with this query: its timeout (60 s by default, at most 3600) + 15 s. */
unsigned gateway_wait_timeout_ms(const char *query);

#endif
