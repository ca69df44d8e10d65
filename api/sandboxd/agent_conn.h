#ifndef SANDVM_API_SANDBOXD_AGENT_CONN_H
#define SANDVM_API_SANDBOXD_AGENT_CONN_H

/*
 * One call in a guest, driven on the libuv loop: no thread, no blocking
 * call. It connects to the guest agent behind a VMM's vsock unix socket
 * (CONNECT PORT, retried while the agent is not listening yet), says HELLO,
 * and then carries one exec (its output, stdin, signals and exit status with
 * the agent protocol's flow control, lib/agent_proto.h) or one file call
 * (read, write, stat, list, mkdir, remove), or the RESTORED message after a
 * restore from a snapshot, or nothing (the readiness check).
 *
 * Every bound is the host's own, whatever the guest does: connecting and
 * HELLO within connect_ms; frames of at most AGENT_CONN_MAX_PAYLOAD bytes;
 * no more output than the credit granted (agent_conn_consumed returns it);
 * the whole call within deadline_ms and without a frame of it for no longer
 * than idle_ms, when set; a file read no bigger than its limit, listed names
 * of at most AGENT_CONN_NAME_MAX bytes. A guest that answers HELLO and then
 * goes silent costs one timer. Whatever ends the call is reported once,
 * through ops->ended; the connection then closes itself.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "agent_client.h"
#include "agent_proto.h"

/* The agent sends output and file data in chunks of 64 KiB; a bigger frame is refused. */
#define AGENT_CONN_MAX_PAYLOAD (64 * 1024 + 4096)
/* A listed name longer than a Linux file name (NAME_MAX) is a broken agent. */
#define AGENT_CONN_NAME_MAX 255

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
	uint32_t deadline_ms;   /* the whole call after HELLO, 0: none */
	uint32_t idle_ms;       /* a file call: the longest wait for its next frame, 0: none */
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

/*
 * After a restore from a snapshot: connects, says HELLO and sends RESTORED
 * (m encoded at once: its strings and entropy need not outlive the call;
 * agent_client_restored_prepare fills entropy and time). ops->ended reports 0
 * once the agent applied it; -EOPNOTSUPP when the agent did not announce
 * AGENT_PROTO_FEATURE_RESTORED (nothing sent); the agent's error, its message
 * naming the step that failed; or a transport error. deadline_ms 0 means
 * 10 s here. ops->ended is all it needs. -EINVAL (no callback) for a value
 * the protocol refuses.
 */
int agent_conn_restored(uv_loop_t *loop, const struct agent_conn_config *cfg, const struct agent_proto_restored *m,
			const struct agent_conn_ops *ops, void *ctx, struct agent_conn **out);

enum agent_file_op {
	AGENT_FILE_READ,   /* the file's bytes written to fd, at most limit of them */
	AGENT_FILE_WRITE,  /* fd read from its offset to its end, the file created or replaced with it */
	AGENT_FILE_STAT,
	AGENT_FILE_LIST,   /* each entry through ops->entry */
	AGENT_FILE_MKDIR,  /* flag: with parents */
	AGENT_FILE_REMOVE, /* flag: recursively */
};

struct agent_file_request {
	enum agent_file_op op;
	const char *path; /* copied */
	uint32_t mode;    /* write (when it creates the file), mkdir */
	bool flag;
	int fd;         /* read, write: the caller's, not closed; written and read on the loop thread */
	uint64_t limit; /* read: more bytes than this is -EFBIG; 0: none */
};

struct agent_file_result {
	uint64_t bytes;                      /* read, write: bytes copied */
	struct agent_proto_stat_result stat; /* stat */
};

struct agent_file_ops {
	/* One entry of a listing (its name bounded): 0 goes on, -errno ends the call with that error. */
	int (*entry)(void *ctx, const struct agent_proto_list_entry *e);
	/*
	 * The end: r 0 with the result, or -errno with a message (the agent's own
	 * for its errors). Called once, never after agent_conn_cancel.
	 */
	void (*ended)(void *ctx, int r, const struct agent_file_result *res, const char *error);
};

/* Starts one file call; as agent_conn_exec. ops->entry is needed for a listing only. */
int agent_conn_file(uv_loop_t *loop, const struct agent_conn_config *cfg, const struct agent_file_request *rq,
		    const struct agent_file_ops *ops, void *ctx, struct agent_conn **out);

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
