#ifndef SANDVM_GUEST_AGENT_AGENT_H
#define SANDVM_GUEST_AGENT_AGENT_H

/*
 * sandvm-agent: PID 1 of a sandbox guest. One thread, one epoll loop; the
 * host talks to it over vsock with the protocol of lib/agent_proto.h
 * (docs/agent-protocol.md). Objects that the loop watches embed a
 * struct agent_watch; objects closed while an event batch is being handled
 * are freed only after the batch (agent_defer_free), so a later event of the
 * same batch never reaches freed memory.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent_proto.h"
#include "byte_queue.h"

/* The vsock port the agent listens on. */
#define AGENT_VSOCK_PORT 1024u
/* The relay port: one line names a TCP port of the guest's loopback, then bytes flow (relay.c). */
#define AGENT_RELAY_PORT 1025u
/* Relays at once. */
#define AGENT_MAX_RELAYS 256u
/* Open streams (execs and file writes) per connection. */
#define AGENT_MAX_STREAMS 256u
/* Connections at once. */
#define AGENT_MAX_CONNS 64u
/* Process output read per frame; the protocol asks for chunks of 64 KiB at most. */
#define AGENT_CHUNK (64u * 1024u)
/* Reading from processes and the host pauses while a connection has this much unsent. */
#define AGENT_OUT_HIGH (1u << 20)
/* A FILE_READ reply carries at most this much; the host asks again for more. */
#define AGENT_READ_REPLY_MAX (4u << 20)
/* After the process exits, output is drained until the pipes have been idle this long. */
#define AGENT_DRAIN_IDLE_MS 200

struct agent;
struct agent_watch;

typedef void (*agent_watch_fn)(struct agent_watch *w, uint32_t events);

struct agent_watch {
	int fd;
	uint32_t events; /* what epoll is asked for now; 0: not registered */
	agent_watch_fn fn;
};

struct agent_conn;
struct agent_exec;
struct agent_relay;

/* A stream id in use on a connection: an exec, or a file write in progress. */
struct agent_stream {
	uint32_t id;
	struct agent_exec *exec; /* NULL for a file write */
	int write_fd;            /* file writes: -1 after an error (chunks ignored until FINAL) */
	char *write_path;
};

struct agent_conn {
	struct agent_watch w;
	struct agent *agent;
	struct agent_conn *next;
	struct agent_proto_reader reader;
	uint8_t *rbuf;
	struct byte_queue out; /* frames not yet written to the socket */
	bool hello_done;
	bool closed;
	bool shutdown_after_flush;
	uint32_t shutdown_action;
	struct agent_stream streams[AGENT_MAX_STREAMS];
	unsigned nstreams;
};

struct agent {
	int epfd;
	struct agent_watch listen;
	struct agent_watch sigchld;
	struct agent_watch timer;
	struct agent_conn *conns;
	unsigned nconns;
	struct agent_exec *execs; /* every running exec, of every connection */
	struct agent_watch relay_listen;
	struct agent_relay *relays;
	unsigned nrelays;
	void **deferred;
	size_t ndeferred, deferred_cap;
	bool pid1;
};

/* ---- loop (main.c) ---- */
int agent_watch_set(struct agent *a, struct agent_watch *w, uint32_t events);
void agent_watch_remove(struct agent *a, struct agent_watch *w);
void agent_defer_free(struct agent *a, void *p);
uint64_t agent_now_ms(void);

/* ---- system duties of PID 1 (system.c) ---- */
/* Replaces path with data through a temporary file and a rename: readers see the old or the new. */
int agent_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);

/* ---- the network (net.c) ---- */
/* What eth0 and the resolver are to have; parsed by lib/agent_proto.c's shared rules. */
struct agent_net_config {
	bool has_v4, has_v6, has_mac, has_dns;
	struct agent_proto_net v4, v6;
	uint8_t mac[6];
	int dns_af;
	uint8_t dns[16];
};
enum agent_net_field { AGENT_NET_V4, AGENT_NET_V6, AGENT_NET_MAC, AGENT_NET_DNS };
/* One value (not NUL-terminated) into cfg; -EINVAL when malformed. */
int agent_net_parse(struct agent_net_config *cfg, enum agent_net_field field, const char *v, size_t len);
/*
 * Configures eth0 and /etc/resolv.conf. reconfigure (after a restore): eth0
 * goes down, takes cfg's MAC, loses every address and route first, and the
 * first failure ends the call. Otherwise (boot) every part is tried and
 * failures are logged. On failure *step names what failed.
 */
int agent_net_apply(const struct agent_net_config *cfg, bool reconfigure, const char **step);
/* eth0's addresses, routes and resolver from sandvm.net=, sandvm.net6=, sandvm.dns=. */
void agent_net_setup(const char *cmdline);

/* ---- after a restore from a snapshot (restore.c) ---- */
/* RESTORED: fresh entropy, clock, hostname, machine-id and network; OK or ERROR naming the step. */
void agent_restored(struct agent_conn *c, const struct agent_proto_frame *f);
void agent_system_setup(void);
void agent_system_poweroff(uint32_t action) __attribute__((noreturn));
/* Maps an errno value to the protocol's fixed error numbers. */
uint32_t agent_errno_code(int err);

/* ---- connections (conn.c) ---- */
void agent_conn_accept(struct agent *a);
/* Appends one encoded frame; the encoder writes into the connection's buffer. */
uint8_t *agent_conn_reserve(struct agent_conn *c, size_t len);
void agent_conn_commit(struct agent_conn *c, size_t len);
void agent_conn_send_error(struct agent_conn *c, uint32_t stream, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void agent_conn_send_empty(struct agent_conn *c, uint8_t type, uint32_t stream);
bool agent_conn_backlogged(const struct agent_conn *c);
struct agent_stream *agent_conn_stream_open(struct agent_conn *c, uint32_t id);
struct agent_stream *agent_conn_stream_find(struct agent_conn *c, uint32_t id);
void agent_conn_stream_close(struct agent_conn *c, struct agent_stream *s);

/* ---- exec (exec.c) ---- */
void agent_exec_start(struct agent_conn *c, const struct agent_proto_frame *f);
/* STDIN, STDIN_CLOSE, SIGNAL, WINDOW for an open exec stream. */
void agent_exec_frame(struct agent_exec *e, const struct agent_proto_frame *f);
/* The connection went away: the exec's processes are killed and it is freed. */
void agent_exec_abandon(struct agent_exec *e);
/* The connection's buffer drained: output reading may resume. */
void agent_exec_resume(struct agent_exec *e);
void agent_exec_reap(struct agent *a);
/* Deadlines (timeouts, output drain); returns ms until the next one, or -1. */
int64_t agent_exec_tick(struct agent *a);

/* ---- the relay port (relay.c) ---- */
void agent_relay_accept(struct agent *a);
/* Header deadlines; returns ms until the next one, or -1. */
int64_t agent_relay_tick(struct agent *a);

/* ---- files (files.c) ---- */
void agent_file_request(struct agent_conn *c, const struct agent_proto_frame *f);
void agent_file_write_chunk(struct agent_conn *c, struct agent_stream *s,
			    const struct agent_proto_frame *f);

#endif
