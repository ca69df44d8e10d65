#ifndef SANDVM_API_SANDBOXD_GUEST_RELAY_H
#define SANDVM_API_SANDBOXD_GUEST_RELAY_H

/*
 * A byte stream to a TCP server inside a guest, through the guest agent's
 * relay port (docs/agent-protocol.md, section 9), on the libuv loop: the
 * VMM's vsock socket is asked for port 1025 (CONNECT 1025), the agent for
 * 127.0.0.1:PORT (RELAY PORT); once it answers OK the stream carries bytes
 * both ways, with half-closes. The ingress proxy's way into a sandbox.
 *
 * Bounds are the host's: both answer lines within timeout_ms and 128 bytes;
 * reads of 64 KiB at a time, stopped while the owner pauses; writes queued
 * and counted so the owner can hold its own reading back.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define GUEST_RELAY_PORT 1025
#define GUEST_RELAY_LINE_MAX 128

struct guest_relay;

struct guest_relay_ops {
	/*
	 * The server answered (err 0), or why not: -ECONNREFUSED nothing listens
	 * on the port, -EHOSTUNREACH another connect failure in the guest,
	 * -ETIMEDOUT no answer in time, -EPROTO a malformed answer, -ECONNRESET
	 * the VMM or the agent closed. After a failure nothing more is called
	 * and the relay frees itself.
	 */
	void (*opened)(void *ctx, int err, const char *why);
	/* Bytes from the server; len 0 once it ended its side. */
	void (*data)(void *ctx, const char *data, size_t len);
	/*
	 * The stream is over (after opened(0)): err 0 when both sides ended,
	 * or -errno. Called once, never after guest_relay_close; the relay then
	 * frees itself.
	 */
	void (*closed)(void *ctx, int err);
	/* Everything queued went out (after a write that left bytes queued). May be NULL. */
	void (*drained)(void *ctx);
};

/* 0 with *out (callbacks follow), or -errno (none will). */
int guest_relay_open(uv_loop_t *loop, const char *vsock_path, uint16_t port, unsigned timeout_ms,
		     const struct guest_relay_ops *ops, void *ctx, struct guest_relay **out);
/* Writes bytes for the server, queueing (a copy of) what the socket does not take now; returns the bytes queued and not yet written. */
size_t guest_relay_write(struct guest_relay *r, const void *data, size_t len);
/* Ends the stream towards the server once what is queued went out. */
void guest_relay_shutdown(struct guest_relay *r);
void guest_relay_pause(struct guest_relay *r);
void guest_relay_resume(struct guest_relay *r);
/* The owner leaves: no more callbacks; the connection closes. */
void guest_relay_close(struct guest_relay *r);

/*
 * The agent's answer line (without its LF): 0 for "OK", else the errno of
 * its ERROR code (as guest_relay_ops.opened), with its text in why.
 */
int guest_relay_parse_answer(const char *line, char *why, size_t cap);

#endif
