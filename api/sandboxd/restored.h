#ifndef SANDVM_API_SANDBOXD_RESTORED_H
#define SANDVM_API_SANDBOXD_RESTORED_H

/*
 * The one call a restored guest gets before it is ready (docs/agent-protocol.md,
 * RESTORED): connect to its agent (the vsock was reset by the restore),
 * HELLO, then its own identity, so that no two clones of one template share
 * RNG state, clock, MAC, addresses or machine-id. On the loop, as
 * agent_conn.h's calls; done is called once, never after agent_conn_cancel
 * of *out.
 */

#include <stdint.h>
#include <uv.h>

struct agent_conn;

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

typedef void (*restored_done_fn)(void *ctx, int r, const char *error);

/* Fills entropy, realtime_ns and a fresh machine_id; the rest is the caller's. 0 or -errno. */
int restored_identity_init(struct restored_identity *id);

/* 0 with *out, or -errno (nothing started, no callback). */
int restored_send(uv_loop_t *loop, const char *vsock_path, uint32_t connect_ms, const struct restored_identity *id,
		  restored_done_fn done, void *ctx, struct agent_conn **out);

#endif
