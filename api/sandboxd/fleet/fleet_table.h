#ifndef SANDVM_API_SANDBOXD_FLEET_FLEET_TABLE_H
#define SANDVM_API_SANDBOXD_FLEET_FLEET_TABLE_H

/*
 * The gateway's picture of the fleet (docs/fleet.md): one entry per worker
 * ever seen under /sandvm/workers/, built from etcd's records and events.
 * Pure: no I/O, no clock; the records are parsed as hostile input (a worker
 * host may be compromised, etcd may hold anything), every string bounded and
 * every number range-checked.
 *
 * A worker whose key goes away stays in the table, not live: its sandboxes
 * are then reported lost, and when it comes back under the same id it is
 * the same entry again (its creates in flight still counted).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct etcd_kv;

#define FLEET_WORKERS_PREFIX "/sandvm/workers/"
#define FLEET_SANDBOXES_PREFIX "/sandvm/sandboxes/"
#define FLEET_ID_MAX 63      /* [A-Za-z0-9._-]{1,63} */
#define FLEET_ADDRESS_MAX 255 /* https://HOST:PORT */
#define FLEET_HOST_MAX 253
#define FLEET_VERSION_MAX 127
#define FLEET_RECORD_MAX 4096 /* a record's JSON text */
#define FLEET_WORKERS_MAX 1024
/* Counts and MiB a record may claim (a worker of 16 TiB and a million sandboxes is beyond any host). */
#define FLEET_COUNT_MAX 1000000u
#define FLEET_MIB_MAX (16u << 20)

/* What a worker writes under /sandvm/workers/ID. */
struct fleet_worker_record {
	char id[FLEET_ID_MAX + 1];
	char address[FLEET_ADDRESS_MAX + 1];
	char host[FLEET_HOST_MAX + 1]; /* of address, without brackets for IPv6 */
	uint16_t port;
	char version[FLEET_VERSION_MAX + 1];
	uint32_t sandboxes, memory_mib, max_sandboxes, max_memory_mib;
	bool accepting;
	double started; /* seconds since the epoch */
};

/* What a gateway writes under /sandvm/sandboxes/SID. */
struct fleet_sandbox_record {
	char worker[FLEET_ID_MAX + 1];
	double created;
};

struct fleet_entry {
	struct fleet_worker_record rec;
	bool live;            /* its key is in etcd now */
	unsigned inflight;    /* creates placed here through this gateway, not answered yet */
	uint64_t inflight_mib; /* their memory */
	int64_t mod_revision; /* of the record held */
};

/*
 * Entries are allocated one by one, so a pointer stays good while its entry
 * exists; a lost entry is only dropped (to make room for a new worker) when
 * nothing is in flight on it, which is when a gateway holds pointers.
 */
struct fleet_table {
	struct fleet_entry **w;
	size_t n, cap;
};

/* [A-Za-z0-9._-]{1,63}, not "." or "..". */
bool fleet_id_valid(const char *s, size_t len);
/* sb-[0-9a-f]{16}: the ids gateways and workers give sandboxes. */
bool fleet_sandbox_id_valid(const char *s, size_t len);
/*
 * "https://HOST:PORT" (HOST a name, an IPv4 address or [IPv6]; no path,
 * user or query). 0 with host and port, or -EINVAL with a message.
 */
int fleet_address_parse(const char *s, size_t len, char *host, size_t cap, uint16_t *port, char *err,
			size_t errlen);
/* 0, or -EINVAL with a message in err. */
int fleet_worker_record_parse(const char *json, size_t len, struct fleet_worker_record *out, char *err,
			      size_t errlen);
int fleet_sandbox_record_parse(const char *json, size_t len, struct fleet_sandbox_record *out, char *err,
			       size_t errlen);
/* The ID of "/sandvm/workers/ID" (or of the sandboxes prefix) into out; -EINVAL when key is not one. */
int fleet_key_id(const char *key, size_t key_len, const char *prefix, char *out, size_t cap);

void fleet_table_init(struct fleet_table *t);
void fleet_table_destroy(struct fleet_table *t);
/*
 * A record written (a PUT event or a kv of a range): the worker is live with
 * it. -EINVAL (message in err) for a key or record that does not parse, or
 * whose id is not the key's: a known worker keeps its record but takes no
 * creates until a good one comes. -ENOSPC past FLEET_WORKERS_MAX.
 */
int fleet_table_put(struct fleet_table *t, const char *key, size_t key_len, const char *value, size_t value_len,
		    int64_t mod_revision, char *err, size_t errlen);
/* The key went away (a DELETE, its lease expired): the worker is lost. -ENOENT when unknown. */
int fleet_table_delete(struct fleet_table *t, const char *key, size_t key_len);
/*
 * Everything under /sandvm/workers/ read again (after a watch broke): workers
 * absent from kvs are lost, the others live with their records. Returns how
 * many records were refused (each refusal's message in err, the last one).
 */
size_t fleet_table_reload(struct fleet_table *t, const struct etcd_kv *kvs, size_t n, char *err, size_t errlen);
struct fleet_entry *fleet_table_find(const struct fleet_table *t, const char *id);
/* Workers live now. */
size_t fleet_table_live(const struct fleet_table *t);

/* A create placed on w is under way / answered (whatever the answer). */
void fleet_entry_inflight_add(struct fleet_entry *w, uint32_t memory_mib);
void fleet_entry_inflight_done(struct fleet_entry *w, uint32_t memory_mib);

#endif
