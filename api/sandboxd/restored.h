#ifndef SANDVM_API_SANDBOXD_RESTORED_H
#define SANDVM_API_SANDBOXD_RESTORED_H

/*
 * The one call a restored guest gets before it is ready (docs/agent-protocol.md,
 * RESTORED): connect to its agent (the vsock was reset by the restore),
 * HELLO, then its own identity, so that no two clones of one template share
 * RNG state, clock, MAC, addresses, hostname or machine-id. On the loop, as
 * agent_conn.h's calls: ops->ended once, never after agent_conn_cancel of
 * *out.
 */

#include <stdint.h>
#include <uv.h>

struct agent_conn;
struct agent_conn_ops;

#define RESTORED_ENTROPY_BYTES 64

struct restored_identity {
	uint8_t entropy[RESTORED_ENTROPY_BYTES]; /* the host's getrandom */
	uint64_t realtime_ns;                    /* the host's CLOCK_REALTIME */
	/* "" for absent */
	char hostname[64];
	char machine_id[33]; /* 32 lowercase hex */
	char net[64], net6[96]; /* as sandvm.net= and sandvm.net6= */
	char mac[18];
	char dns[48];
};

/* Fills entropy, realtime_ns and a fresh machine_id; the rest is the caller's. 0 or -errno. */
int restored_identity_init(struct restored_identity *id);

/*
 * Takes the identity's values from a boot command line's words (sandvm.net=,
 * sandvm.net6=, sandvm.dns=, sandvm.hostname=), the same a cold boot of
 * this sandbox would have been given.
 */
void restored_identity_from_cmdline(struct restored_identity *id, const char *cmdline);

/*
 * Sends it. The request is encoded before this returns (id may go); the
 * caller wipes id. 0 with *out, or -errno (nothing started, no callback;
 * -EINVAL: a value the protocol refuses).
 */
int restored_send(uv_loop_t *loop, const char *vsock_path, uint32_t connect_ms, const struct restored_identity *id,
		  const struct agent_conn_ops *ops, void *ctx, struct agent_conn **out);

#endif
