#ifndef SANDVM_VMM_CONTROL_H
#define SANDVM_VMM_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
 * {"op":"pause"}, {"op":"resume"}, {"op":"snapshot","dir":D} or
 * {"op":"snapshot","state_fd":I,"memory_fd":J} (docs/vmm.md, "Snapshots"),
 * {"op":"drive-attach","drive":N | "serial":S,"path":P[,"data_key":HEX,
 * "meta_key":HEX,"overlay_dir":D]} (a raw file, or with keys an encrypted
 * snapshot image) and {"op":"drive-detach",...} (the drive becomes empty);
 * every reply carries "ok" and, when false, "error".
 *
 * A request may come with up to CONTROL_MAX_FDS descriptors (SCM_RIGHTS, sent
 * with its bytes); an op names one by its index in that array instead of a
 * path: drive-swap and drive-attach "fd":I, drive-attach "overlay_fd":J
 * instead of "overlay_dir", net-policy "fd":I. A VMM that opens no host path
 * (a jailed one) is driven that way only.
 */

#define CONTROL_MAX_FDS 4

struct control_ops {
	/* Adds the VM's state to reply. */
	void (*status)(void *ctx, struct cJSON *reply);
	/* Asks the VM to stop; 0 or -errno. */
	int (*stop)(void *ctx);
	/*
	 * Replaces drive `index`'s backing file: the one at path, or (path NULL)
	 * fd, which the op takes whatever it returns. 0 or -errno with err.
	 */
	int (*drive_swap)(void *ctx, unsigned index, const char *path, int fd, char *err, size_t errlen);
	/* The index of the drive with this serial, or -ENODEV. */
	int (*drive_find)(void *ctx, const char *serial);
	/*
	 * Backs drive `index` by the raw file at path (or fd, path NULL), or with
	 * keys by the snapshot image there, its overlay a file made in
	 * overlay_dir (or overlay_fd, overlay_dir NULL). The op takes fd and
	 * overlay_fd (when >= 0) whatever it returns. 0 or -errno with err.
	 */
	int (*drive_attach)(void *ctx, unsigned index, const char *path, int fd, const struct simage_keys *keys,
			    const char *overlay_dir, int overlay_fd, char *err, size_t errlen);
	/* Empties drive `index`. */
	int (*drive_detach)(void *ctx, unsigned index, char *err, size_t errlen);
	/* Adds the network device's policy and counters to reply; -ENODEV without one. */
	int (*net_status)(void *ctx, struct cJSON *reply, char *err, size_t errlen);
	/*
	 * Replaces the egress policy with the JSON file at path, or (path NULL)
	 * in fd, which the op takes whatever it returns (vmm/net/egress.h).
	 */
	int (*net_policy)(void *ctx, const char *path, int fd, char *err, size_t errlen);
	/* Adds the vsock device's queues and connections to reply; -ENODEV without one. */
	int (*vsock_status)(void *ctx, struct cJSON *reply, char *err, size_t errlen);
	/* Pauses (pause true) or resumes the vCPUs; adds "state" to reply. 0 or -errno with err. */
	int (*pause)(void *ctx, bool pause, struct cJSON *reply, char *err, size_t errlen);
	/*
	 * Pauses the VM and writes a snapshot into dir (files "state" and
	 * "memory"), or (dir NULL) to state_fd and mem_fd, which the op takes
	 * whatever it returns; adds "state", "memory_bytes", "snapshot_ms".
	 * memory_key (32 bytes, or NULL) seals the memory file; the caller
	 * wipes it after the op.
	 */
	int (*snapshot)(void *ctx, const char *dir, int state_fd, int mem_fd, const uint8_t *memory_key,
			struct cJSON *reply, char *err, size_t errlen);
};

struct control;

/*
 * Listens on path (a stale socket there is replaced, anything else is not),
 * or (path NULL) on listen_fd, an already listening unix stream socket it
 * takes (neither bound nor unlinked here; closed by control_destroy, and on
 * failure).
 */
int control_create(struct control **out, struct event_loop *loop, const char *path, int listen_fd,
		   const struct control_ops *ops, void *ctx);
void control_destroy(struct control *c);

/*
 * Handles one request line (no newline) with the nfds (at most
 * CONTROL_MAX_FDS) descriptors that came with it, and returns the reply
 * line, newline included, in malloc'd memory. Every descriptor is gone when
 * it returns: taken by the op that named it, or closed (fds[] is all -1
 * then). Pure apart from the ops it calls and those closes.
 */
char *control_handle_request(const char *line, size_t len, int *fds, unsigned nfds,
			     const struct control_ops *ops, void *ctx);

/*
 * The descriptors a received message carries (SCM_RIGHTS), appended to
 * fds[0..*nfds): 0, or -EMSGSIZE when it would make more than
 * CONTROL_MAX_FDS, was cut short (MSG_CTRUNC) or carries anything else; then
 * every descriptor, those already in fds too, is closed and *nfds is 0.
 */
struct msghdr;
int control_take_rights(const struct msghdr *msg, int *fds, unsigned *nfds);

#define CONTROL_MAX_REQUEST 4096
#define CONTROL_MAX_CLIENTS 16

#endif
