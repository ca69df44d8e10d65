#ifndef SANDVM_API_SANDBOXD_FLEET_ETCD_H
#define SANDVM_API_SANDBOXD_FLEET_ETCD_H

/*
 * etcd v3 through its JSON gateway (/v3/...), on the libuv loop: libcurl's
 * multi interface driven by the loop (uv_poll per socket, one uv_timer), so
 * no call ever blocks the loop. Keys and values are bytes (base64 on the
 * wire, handled here); 64-bit numbers arrive as JSON strings and a failed
 * txn has no "succeeded" field (etcd_reply.h parses both, as hostile input).
 *
 * Endpoints are tried in turn: a request that cannot connect or times out
 * on one goes to the next, so one etcd member down changes nothing. Every
 * request has a deadline (ETCD_REQUEST_TIMEOUT_MS); replies are bounded
 * (ETCD_REPLY_MAX bytes, else -EMSGSIZE).
 *
 * Callbacks run on the loop, exactly once per request, unless the client is
 * freed first (then never). Errors are -errno: -ETIMEDOUT, -ECONNREFUSED
 * (no endpoint answered), -EPROTO (a reply that does not parse), -ENOENT
 * (a lease that no longer exists), -EMSGSIZE.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define ETCD_REQUEST_TIMEOUT_MS 3000
#define ETCD_REPLY_MAX (4u << 20)
#define ETCD_ENDPOINTS_MAX 8

struct etcd_client;

/* One key-value as etcd reports it; pointers valid during the callback only. */
struct etcd_kv {
	const char *key;
	size_t key_len;
	const char *value;
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t lease;
};

/*
 * endpoints: "http://HOST:PORT[,http://HOST:PORT...]" (at most
 * ETCD_ENDPOINTS_MAX). 0, or -EINVAL with a message in err.
 */
int etcd_client_new(uv_loop_t *loop, const char *endpoints, struct etcd_client **out, char *err, size_t errlen);
/* Cancels every request and watch (no callbacks) and frees; closes its handles on the loop. */
void etcd_client_free(struct etcd_client *c);

typedef void (*etcd_done_cb)(void *arg, int err);
/* lease: the id, ttl_s: what etcd granted or still has; ttl_s 0 with err -ENOENT: the lease is gone. */
typedef void (*etcd_lease_cb)(void *arg, int err, int64_t lease, int64_t ttl_s);
/* succeeded false: the key existed; existing is then its kv (else NULL). */
typedef void (*etcd_txn_cb)(void *arg, int err, bool succeeded, const struct etcd_kv *existing);
/* revision: the store's revision the range was read at (a watch from revision + 1 misses nothing). */
typedef void (*etcd_range_cb)(void *arg, int err, const struct etcd_kv *kvs, size_t n, int64_t revision);

int etcd_lease_grant(struct etcd_client *c, int64_t ttl_s, etcd_lease_cb cb, void *arg);
int etcd_lease_keepalive(struct etcd_client *c, int64_t lease, etcd_lease_cb cb, void *arg);
int etcd_lease_revoke(struct etcd_client *c, int64_t lease, etcd_done_cb cb, void *arg);
/* lease 0: no lease. */
int etcd_put(struct etcd_client *c, const char *key, const void *value, size_t value_len, int64_t lease,
	     etcd_done_cb cb, void *arg);
int etcd_delete(struct etcd_client *c, const char *key, etcd_done_cb cb, void *arg);
/* A txn: compare create_revision(key) == 0, then put; else get the key. */
int etcd_create_if_absent(struct etcd_client *c, const char *key, const void *value, size_t value_len,
			  int64_t lease, etcd_txn_cb cb, void *arg);
/* Every key under prefix (at most ETCD_REPLY_MAX of reply). */
int etcd_range_prefix(struct etcd_client *c, const char *prefix, etcd_range_cb cb, void *arg);
/* One key (n 0 when absent). */
int etcd_get(struct etcd_client *c, const char *key, etcd_range_cb cb, void *arg);

/*
 * A watch of every key under prefix from start_revision on, kept open: each
 * event calls cb with its kv (deleted true for a DELETE, value empty). When
 * the stream breaks (a member died, a timeout), cb gets err (kv NULL) once;
 * the watcher then reads the prefix again (etcd_range_prefix) and watches
 * anew from that revision: events are never assumed continuous across a break.
 * A watch whose start revision etcd has compacted away ends the same way,
 * with -ESTALE. An ended watch stays allocated, inert, until
 * etcd_watch_cancel frees it; etcd_client_free frees the client's watches
 * too (cancel none of them after it).
 */
struct etcd_watch;
typedef void (*etcd_watch_cb)(void *arg, int err, bool deleted, const struct etcd_kv *kv);
int etcd_watch_prefix(struct etcd_client *c, const char *prefix, int64_t start_revision, etcd_watch_cb cb,
		      void *arg, struct etcd_watch **out);
/* No callbacks after this; frees w (also from inside its own callback). */
void etcd_watch_cancel(struct etcd_watch *w);

#endif
