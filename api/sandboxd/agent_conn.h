#ifndef SANDVM_API_SANDBOXD_AGENT_CONN_H
#define SANDVM_API_SANDBOXD_AGENT_CONN_H

/*
 * One exec in a guest, driven on the libuv loop: no thread, no blocking
 * call. It connects to the guest agent behind a VMM's vsock unix socket
 * (CONNECT PORT, retried while the agent is not listening yet), says HELLO,
 * starts the process and carries its output, stdin, signals and exit status
 * with the agent protocol's flow control (lib/agent_proto.h).
 *
 * Every bound is the host's own, whatever the guest does: connecting and
 * HELLO within connect_ms; frames of at most AGENT_CONN_MAX_PAYLOAD bytes;
 * no more output than the credit granted (agent_conn_consumed returns it);
 * the whole exec within deadline_ms when set. A guest that answers HELLO and
 * then goes silent costs one timer. Whatever ends the exec is reported once,
 * through ops->ended; the connection then closes itself.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "agent_client.h"

/* The agent sends output in chunks of 64 KiB; a bigger frame is refused. */
#define AGENT_CONN_MAX_PAYLOAD (64 * 1024 + 4096)

struct agent_conn;

struct agent_conn_ops {
	/* The process runs. */
	void (*started)(void *ctx, uint32_t pid);
	/* Output of the process; its credit goes back to the agent with agent_conn_consumed. */
	void (*output)(void *ctx, bool is_stdout, const uint8_t *data, size_t len);
	/* More stdin may be sent (the window opened, or the process started). May be NULL. */
	void (*stdin_ready)(void *ctx);
	/*
	 * The end: r 0 with the exit status, or -errno with a message (the agent
	 * could not be reached, refused the command, broke the protocol, the
	 * deadline passed). Called once, never after agent_conn_cancel.
	 */
	void (*ended)(void *ctx, int r, const struct agent_exec_status *st, const char *error);
};

struct agent_conn_config {
	const char *vsock_path; /* the VMM's vsock unix socket */
	uint32_t port;          /* AGENT_CLIENT_PORT */
	uint32_t connect_ms;    /* connecting and HELLO */
	uint32_t deadline_ms;   /* the whole exec, 0: none */
};

/*
 * Starts rq (copied) in the guest. 0 with *out, or -errno (nothing started,
 * no callback). The strings of rq are copied.
 */
int agent_conn_exec(uv_loop_t *loop, const struct agent_conn_config *cfg, const struct agent_exec_request *rq,
		    const struct agent_conn_ops *ops, void *ctx, struct agent_conn **out);

/*
 * Only connects and says HELLO: ops->ended reports 0 once the agent answered
 * (the guest is ready), or why not within connect_ms. ops->ended is all it needs.
 */
int agent_conn_hello(uv_loop_t *loop, const struct agent_conn_config *cfg, const struct agent_conn_ops *ops,
		     void *ctx, struct agent_conn **out);

/* n bytes of stdout (or stderr) were taken: the agent may send that much more. */
void agent_conn_consumed(struct agent_conn *ac, bool is_stdout, size_t n);
/* Sends what the stdin window allows now; returns the bytes taken (0 before the process started). */
size_t agent_conn_stdin(struct agent_conn *ac, const void *data, size_t len);
/* Ends the process's stdin (once it started, if it has not yet). */
void agent_conn_stdin_close(struct agent_conn *ac);
/* Delivers a signal (1..64) once the process runs. -ESRCH when it ended, -EINVAL for a bad number. */
int agent_conn_signal(struct agent_conn *ac, int sig);
/* The owner goes away: no more callbacks; the connection closes. */
void agent_conn_cancel(struct agent_conn *ac);

#endif
