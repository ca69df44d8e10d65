#ifndef SANDVM_LIB_AGENT_CLIENT_H
#define SANDVM_LIB_AGENT_CLIENT_H

/*
 * Host side of the agent protocol (docs/agent-protocol.md) over a VMM's
 * hybrid vsock socket: connect with readiness retries, exec with streamed
 * stdio between file descriptors, file requests. Calls block the calling
 * thread; one client is used by one thread at a time. The CLI uses it
 * directly; a daemon runs it on worker threads with pipes or socketpairs as
 * the exec's descriptors.
 *
 * Errors are negative errno values. When the agent refused a request the
 * value is the negated protocol code (the Linux errno numbers) and
 * agent_client_error() holds the agent's message; transport failures give
 * -EPIPE, -ECONNRESET, -EPROTO or -ETIMEDOUT with a message too.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent_proto.h"
#include "byte_queue.h"

/* The vsock port the guest agent listens on. */
#define AGENT_CLIENT_PORT 1024u

struct agent_client {
	int fd;
	struct agent_proto_reader reader;
	uint8_t *rbuf;
	uint8_t *in;
	size_t in_len, in_off;
	struct byte_queue out;
	uint8_t *scratch; /* one chunk of stdin or file data on its way out */
	uint32_t next_stream;
	/* File calls wait this long for each frame of the agent's (0: for ever); then -ETIMEDOUT. */
	uint32_t frame_timeout_ms;
	char agent_name[128];
	uint32_t agent_features; /* AGENT_PROTO_FEATURE_* the agent announced in HELLO */
	char error[512];
};

struct agent_exec_request {
	const char *const *argv; /* NULL-terminated, argv[0] required */
	const char *const *env;  /* NULL-terminated "K=V"; NULL: agent_client_default_env */
	const char *workdir;     /* NULL: "/" */
	uint32_t uid, gid;
	bool pty;
	uint16_t rows, cols; /* with pty; 0: 24x80 */
	uint32_t timeout_ms; /* 0: none */
	/*
	 * Bounds the client keeps itself, whatever the guest does (0: none):
	 * more stdout and stderr than output_limit bytes in all fails the call
	 * with -EFBIG; no exit within deadline_ms fails it with -ETIMEDOUT. The
	 * connection is then unusable; the caller closes it.
	 */
	uint64_t output_limit;
	uint32_t deadline_ms;
};

/*
 * The process's stdio. in_fd: read until end of file, then stdin is closed
 * (-1: closed at once). out_fd/err_fd: written with blocking writes (-1:
 * discarded). signal_fd: each byte read from it is a signal number to
 * deliver (-1: none); the CLI's signal handlers write into a pipe.
 */
struct agent_exec_io {
	int in_fd, out_fd, err_fd, signal_fd;
};

struct agent_exec_status {
	uint32_t pid;
	uint32_t kind; /* AGENT_PROTO_EXIT_* */
	uint32_t code;
	uint64_t out_bytes, err_bytes;
};

extern const char *const agent_client_default_env[];

/*
 * Connects to the guest agent behind a VMM's vsock unix socket and completes
 * HELLO. Retries (the socket may not exist yet, the agent may not listen
 * yet) until timeout_ms has passed: -ETIMEDOUT then.
 */
int agent_client_connect(struct agent_client *c, const char *vsock_path, uint32_t port,
			 int timeout_ms);
/* HELLO over an already connected stream (the agent's --unix test mode); takes fd. */
int agent_client_attach_fd(struct agent_client *c, int fd, int timeout_ms);
void agent_client_close(struct agent_client *c);
const char *agent_client_error(const struct agent_client *c);

int agent_client_ping(struct agent_client *c, int timeout_ms);
/* Asks the agent to end the VM; returns once it acknowledged. */
int agent_client_shutdown(struct agent_client *c, uint32_t action);

/*
 * Fills m for RESTORED with fresh values: entropy_len bytes from getrandom
 * into entropy (m points at it) and the host's CLOCK_REALTIME; the optional
 * fields (hostname, machine_id, net, net6, mac, dns) are NULL for the caller
 * to set. 0 or -errno.
 */
int agent_client_restored_prepare(struct agent_proto_restored *m,
				  uint8_t entropy[AGENT_PROTO_RESTORED_ENTROPY]);
/*
 * After a restore from a snapshot, before anything else runs in the guest:
 * sends RESTORED (m as agent_client_restored_prepare filled it, plus the
 * sandbox's identity) and waits up to timeout_ms (< 0: for ever) for the
 * agent to apply it. -EINVAL (nothing sent) for a value the protocol
 * refuses; -EOPNOTSUPP (nothing sent) when the agent did not announce
 * AGENT_PROTO_FEATURE_RESTORED; otherwise the agent's error, whose message
 * (agent_client_error) names the step that failed.
 */
int agent_client_restored(struct agent_client *c, const struct agent_proto_restored *m, int timeout_ms);

/* Runs one process to its end; 0 with *st filled, or an error before or while it ran. */
int agent_client_exec(struct agent_client *c, const struct agent_exec_request *req,
		      const struct agent_exec_io *io, struct agent_exec_status *st);
/* Shell convention: the exit status, 128+signal, 124 for a timeout. */
int agent_exec_status_code(const struct agent_exec_status *st);

/* Copies a guest file to out_fd; -EFBIG (nothing written) if larger than limit (0: none). */
int agent_client_read_file(struct agent_client *c, const char *path, int out_fd, uint64_t limit,
			   uint64_t *copied);
/* Creates or replaces a guest file with everything read from in_fd. */
int agent_client_write_file(struct agent_client *c, const char *path, int in_fd, uint32_t mode,
			    uint64_t *copied);
int agent_client_stat(struct agent_client *c, const char *path, struct agent_proto_stat_result *st);
/*
 * Calls fn for every entry; a non-zero return from fn stops the listing and
 * is returned, and closes the connection (the rest of the listing is not read).
 */
int agent_client_list(struct agent_client *c, const char *path,
		      int (*fn)(void *ctx, const struct agent_proto_list_entry *e), void *ctx);
int agent_client_mkdir(struct agent_client *c, const char *path, uint32_t mode, bool parents);
int agent_client_remove(struct agent_client *c, const char *path, bool recursive);

#endif
