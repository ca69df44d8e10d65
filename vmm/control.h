#ifndef SANDVM_VMM_CONTROL_H
#define SANDVM_VMM_CONTROL_H

#include <stddef.h>

struct cJSON;
struct event_loop;
struct simage_keys;

/*
 * The per-VM control socket: a unix stream socket speaking one JSON object
 * per line each way. Requests: {"op":"status"}, {"op":"stop"} and
 * {"op":"drive-swap","drive":N,"path":P}, {"op":"net"} (egress policy and
 * counters) and {"op":"net-policy","path":P} (a new egress policy from a JSON
 * file: policies with thousands of CIDRs do not fit a request line; the
 * reply carries "net" as {"op":"net"} would: the policy now in force),
 * {"op":"drive-attach","drive":N | "serial":S,"path":P[,"data_key":HEX,
 * "meta_key":HEX,"overlay_dir":D]} (a raw file, or with keys an encrypted
 * snapshot image) and {"op":"drive-detach",...} (the drive becomes empty);
 * every reply carries "ok" and, when false, "error".
 */

struct control_ops {
	/* Adds the VM's state to reply. */
	void (*status)(void *ctx, struct cJSON *reply);
	/* Asks the VM to stop; 0 or -errno. */
	int (*stop)(void *ctx);
	/* Replaces drive `index`'s backing file; 0 or -errno with a message in err. */
	int (*drive_swap)(void *ctx, unsigned index, const char *path, char *err, size_t errlen);
	/* The index of the drive with this serial, or -ENODEV. */
	int (*drive_find)(void *ctx, const char *serial);
	/*
	 * Backs drive `index` by the raw file at path, or with keys by the
	 * snapshot image there (overlay in overlay_dir); 0 or -errno with err.
	 */
	int (*drive_attach)(void *ctx, unsigned index, const char *path, const struct simage_keys *keys,
			    const char *overlay_dir, char *err, size_t errlen);
	/* Empties drive `index`. */
	int (*drive_detach)(void *ctx, unsigned index, char *err, size_t errlen);
	/* Adds the network device's policy and counters to reply; -ENODEV without one. */
	int (*net_status)(void *ctx, struct cJSON *reply, char *err, size_t errlen);
	/* Replaces the egress policy with the JSON file at path (vmm/net/egress.h). */
	int (*net_policy)(void *ctx, const char *path, char *err, size_t errlen);
	/* Adds the vsock device's queues and connections to reply; -ENODEV without one. */
	int (*vsock_status)(void *ctx, struct cJSON *reply, char *err, size_t errlen);
};

struct control;

/* Listens on path (a stale socket there is replaced, anything else is not). */
int control_create(struct control **out, struct event_loop *loop, const char *path,
		   const struct control_ops *ops, void *ctx);
void control_destroy(struct control *c);

/*
 * Handles one request line (no newline) and returns the reply line, newline
 * included, in malloc'd memory. Pure apart from the ops it calls.
 */
char *control_handle_request(const char *line, size_t len, const struct control_ops *ops,
			     void *ctx);

#define CONTROL_MAX_REQUEST 4096
#define CONTROL_MAX_CLIENTS 16

#endif
