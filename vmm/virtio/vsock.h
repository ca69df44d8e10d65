#ifndef SANDVM_VMM_VIRTIO_VSOCK_H
#define SANDVM_VMM_VIRTIO_VSOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "event_loop.h"
#include "log.h"
#include "virtio/queue.h"
#include "virtio/vsock_packet.h"

/*
 * virtio-vsock with a hybrid host side, so host programs need no vsock
 * support: a host client connects to the unix socket at `path` and writes
 * "CONNECT <port>\n"; once the guest accepts, it reads "OK <host port>\n" and
 * the stream is the guest connection. A guest connecting to the host (CID 2)
 * on port P reaches a listener on the unix socket "<path>_<P>". Flow control
 * follows the virtio credit scheme both ways; a guest that overruns its
 * credit, spoofs addresses or sends malformed packets gets its connection
 * reset, and the VMM carries on.
 *
 * Given an already listening socket instead of a path (vsock_dev_init_fd),
 * the device neither binds nor unlinks anything, and a guest's connections
 * to the host are refused (reset): there is no path to connect to.
 */

#define VSOCK_CONN_BUF (256u * 1024u) /* what the host side buffers per connection */
#define VSOCK_MAX_CONNS 1024u
#define VSOCK_CTL_QUEUE 512u

struct vsock_conn;
struct virtio_dev;

struct vsock_dev {
	struct virtio_dev *dev; /* set when attached to its transport */
	struct event_loop *loop;
	uint64_t guest_cid;
	char *path;   /* NULL with a listening socket given */
	int given_fd; /* that socket, until vsock_dev_start takes it; -1: none */
	struct event_handler listen_h;
	struct vsock_conn *conns;
	unsigned nconns;
	uint32_t next_local_port;
	/* Control packets waiting for an RX buffer. */
	struct vsock_hdr ctl[VSOCK_CTL_QUEUE];
	unsigned ctl_head, ctl_count;
	/* An RX chain popped but not used yet (the read it was for had nothing). */
	struct virtq_chain held;
	bool have_held;
	/*
	 * After a restore: the guest still has the snapshot's connections. A
	 * TRANSPORT_RESET event waits for an event buffer (reset_event_pending),
	 * and nothing goes to RX until the guest has handled it: it refills the
	 * event queue and kicks it (reset_hold_rx).
	 */
	bool reset_event_pending, reset_hold_rx;
	uint8_t bounce[VSOCK_MAX_PAYLOAD];
	/* Warnings a guest can cause at will (lib/log.h). */
	struct sv_ratelimit ctl_full_log, credit_log, malformed_log;
};

int vsock_dev_init(struct vsock_dev *vs, uint64_t guest_cid, const char *path);
/* The same over listen_fd, a listening unix stream socket the device takes (closed by destroy). */
int vsock_dev_init_fd(struct vsock_dev *vs, uint64_t guest_cid, int listen_fd);
/* Starts listening for host clients; needs the device's transport already set. */
int vsock_dev_start(struct vsock_dev *vs, struct virtio_dev *dev, struct event_loop *loop);
void vsock_dev_destroy(struct vsock_dev *vs);
/*
 * Adds the device's state to out: both queues, control packets waiting, and
 * each connection's ports, state, credit counters and buffered bytes. For
 * diagnosing a stalled stream; called with the device lock held.
 */
struct cJSON;
void vsock_dev_status(const struct vsock_dev *vs, struct cJSON *out);

struct virtio_dev_ops;
extern const struct virtio_dev_ops virtio_vsock_ops;

#endif
