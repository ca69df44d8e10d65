/* A byte stream to a server in the guest over the agent's relay port (guest_relay.h). */
#include "guest_relay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_CHUNK (64 * 1024)

enum relay_state { R_CONNECTING, R_VMM_ANSWER, R_AGENT_ANSWER, R_OPEN, R_DONE };

struct guest_relay {
	uv_loop_t *loop;
	uv_pipe_t pipe;
	uv_timer_t timer;
	uv_connect_t connect_req;
	uv_shutdown_t shutdown_req;
	enum relay_state state;
	uint16_t port;
	char line[GUEST_RELAY_LINE_MAX];
	size_t line_len;
	size_t queued; /* written, not yet gone */
	bool paused, reading, shut, eof, closed_by_owner;
	unsigned open_handles;
	const struct guest_relay_ops *ops;
	void *ctx;
};

struct write_req {
	uv_write_t req;
	struct guest_relay *r;
	size_t len;
	char data[];
};

int guest_relay_parse_answer(const char *line, char *why, size_t cap)
{
	static const struct {
		const char *code;
		int err;
	} codes[] = {{"refused", -ECONNREFUSED}, {"unreachable", -EHOSTUNREACH}, {"bad-request", -EINVAL}};

	if (!strcmp(line, "OK"))
		return 0;
	if (strncmp(line, "ERROR ", 6)) {
		snprintf(why, cap, "a malformed answer from the guest agent's relay");
		return -EPROTO;
	}
	line += 6;
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		size_t n = strlen(codes[i].code);

		if (!strncmp(line, codes[i].code, n) && (line[n] == ' ' || !line[n])) {
			snprintf(why, cap, "%s", line[n] ? line + n + 1 : codes[i].code);
			return codes[i].err;
		}
	}
	snprintf(why, cap, "a malformed answer from the guest agent's relay");
	return -EPROTO;
}

static void handle_closed(uv_handle_t *h)
{
	struct guest_relay *r = h->data;

	if (--r->open_handles == 0)
		free(r);
}

static void teardown(struct guest_relay *r)
{
	r->state = R_DONE;
	uv_timer_stop(&r->timer);
	if (!uv_is_closing((uv_handle_t *)&r->timer))
		uv_close((uv_handle_t *)&r->timer, handle_closed);
	if (!uv_is_closing((uv_handle_t *)&r->pipe))
		uv_close((uv_handle_t *)&r->pipe, handle_closed);
}

/* Before OK: the owner hears why; after: that the stream ended. */
static void end(struct guest_relay *r, int err, const char *why)
{
	bool was_open = r->state == R_OPEN;

	if (r->state == R_DONE)
		return;
	teardown(r);
	if (r->closed_by_owner)
		return;
	if (was_open) {
		r->ops->closed(r->ctx, err);
		return;
	}
	/* Before the answer, whatever broke the connection (EPIPE, ENOTCONN, ...) is the VMM or agent closing it. */
	if (err != -ECONNREFUSED && err != -EHOSTUNREACH && err != -EINVAL && err != -ETIMEDOUT && err != -EPROTO)
		err = -ECONNRESET;
	r->ops->opened(r->ctx, err, why);
}

static void on_timeout(uv_timer_t *t)
{
	end(t->data, -ETIMEDOUT, "the guest agent's relay did not answer in time");
}

static void on_written(uv_write_t *w, int status)
{
	struct write_req *wr = (struct write_req *)w;
	struct guest_relay *r = wr->r;

	r->queued -= wr->len;
	free(wr);
	if (status < 0) {
		if (status != UV_ECANCELED)
			end(r, status, "writing to the guest agent's relay failed");
		return;
	}
	if (!r->queued && r->state == R_OPEN && !r->closed_by_owner && r->ops->drained)
		r->ops->drained(r->ctx);
}

/*
 * With nothing queued, what the socket takes at once goes without a copy or
 * a callback; the rest (or a write that failed: its error comes through
 * on_written, never from here) is copied and queued.
 */
static size_t write_now(struct guest_relay *r, const void *data, size_t len)
{
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
	int n;

	if (r->queued)
		return 0;
	n = uv_try_write((uv_stream_t *)&r->pipe, &b, 1);
	return n > 0 ? (size_t)n : 0;
}

static int send_bytes(struct guest_relay *r, const void *data, size_t len)
{
	size_t done = write_now(r, data, len);
	struct write_req *wr;
	uv_buf_t b;
	int e;

	if (done == len)
		return 0;
	data = (const char *)data + done;
	len -= done;
	wr = malloc(sizeof(*wr) + len);
	if (!wr)
		return -ENOMEM;
	memcpy(wr->data, data, len);
	wr->r = r;
	wr->len = len;
	b = uv_buf_init(wr->data, (unsigned)len);
	e = uv_write(&wr->req, (uv_stream_t *)&r->pipe, &b, 1, on_written);
	if (e < 0) {
		free(wr);
		return e;
	}
	r->queued += len;
	return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	buf->base = malloc(READ_CHUNK);
	buf->len = buf->base ? READ_CHUNK : 0;
}

/* Feeds the answer lines; returns how many bytes of data they took (the rest is the server's). */
static size_t take_lines(struct guest_relay *r, const char *data, size_t len)
{
	size_t i = 0;

	while (i < len && (r->state == R_VMM_ANSWER || r->state == R_AGENT_ANSWER)) {
		char c = data[i++];
		char why[GUEST_RELAY_LINE_MAX + 64];
		int e;

		if (c != '\n') {
			if (r->line_len == sizeof(r->line) - 1) {
				end(r, -EPROTO, "an overlong answer on the vsock socket");
				return len;
			}
			r->line[r->line_len++] = c;
			continue;
		}
		r->line[r->line_len] = '\0';
		r->line_len = 0;
		if (r->state == R_VMM_ANSWER) {
			char relay[32];
			int n = snprintf(relay, sizeof(relay), "RELAY %u\n", r->port);

			if (strncmp(r->line, "OK ", 3)) {
				end(r, -ECONNRESET, "the VMM refused the relay port");
				return len;
			}
			r->state = R_AGENT_ANSWER;
			if ((e = send_bytes(r, relay, (size_t)n)) < 0) {
				end(r, e, "writing to the VMM's vsock socket failed");
				return len;
			}
			continue;
		}
		e = guest_relay_parse_answer(r->line, why, sizeof(why));
		if (e < 0) {
			end(r, e, why);
			return len;
		}
		r->state = R_OPEN;
		uv_timer_stop(&r->timer);
		r->ops->opened(r->ctx, 0, NULL);
	}
	return i;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct guest_relay *r = s->data;
	size_t used = 0;

	if (n > 0 && r->state != R_OPEN)
		used = take_lines(r, buf->base, (size_t)n);
	if (n > 0 && r->state == R_OPEN && used < (size_t)n && !r->closed_by_owner)
		r->ops->data(r->ctx, buf->base + used, (size_t)n - used);
	free(buf->base);
	if (n >= 0 || r->state == R_DONE)
		return;
	if (n == UV_EOF && r->state == R_OPEN) {
		r->eof = true;
		uv_read_stop(s);
		r->reading = false;
		if (!r->closed_by_owner)
			r->ops->data(r->ctx, "", 0);
		if (r->shut && r->state == R_OPEN)
			end(r, 0, NULL);
		return;
	}
	end(r, n == UV_EOF ? -ECONNRESET : (int)n, "the VMM or the guest agent closed the relay");
}

static void start_reading(struct guest_relay *r)
{
	if (r->reading || r->paused || r->eof || r->state == R_DONE)
		return;
	if (uv_read_start((uv_stream_t *)&r->pipe, on_alloc, on_read) == 0)
		r->reading = true;
}

static void on_connected(uv_connect_t *req, int status)
{
	struct guest_relay *r = req->data;
	char line[32];
	int n, e;

	if (r->state == R_DONE)
		return;
	if (status < 0) {
		end(r, -ECONNRESET, "cannot reach the VMM's vsock socket");
		return;
	}
	r->state = R_VMM_ANSWER;
	n = snprintf(line, sizeof(line), "CONNECT %u\n", GUEST_RELAY_PORT);
	if ((e = send_bytes(r, line, (size_t)n)) < 0) {
		end(r, e, "writing to the VMM's vsock socket failed");
		return;
	}
	start_reading(r);
}

int guest_relay_open(uv_loop_t *loop, const char *vsock_path, uint16_t port, unsigned timeout_ms,
		     const struct guest_relay_ops *ops, void *ctx, struct guest_relay **out)
{
	struct guest_relay *r;

	if (!port || !timeout_ms || !ops || !ops->opened || !ops->data || !ops->closed)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->loop = loop;
	r->port = port;
	r->ops = ops;
	r->ctx = ctx;
	if (uv_pipe_init(loop, &r->pipe, 0) < 0) {
		free(r);
		return -ENOMEM;
	}
	uv_timer_init(loop, &r->timer);
	r->pipe.data = r->timer.data = r->connect_req.data = r;
	r->open_handles = 2;
	uv_timer_start(&r->timer, on_timeout, timeout_ms, 0);
	uv_pipe_connect(&r->connect_req, &r->pipe, vsock_path, on_connected);
	*out = r;
	return 0;
}

size_t guest_relay_write(struct guest_relay *r, const void *data, size_t len)
{
	int e;

	if (r->state != R_OPEN || r->shut || !len)
		return r->queued;
	if ((e = send_bytes(r, data, len)) < 0)
		end(r, e, "writing to the guest agent's relay failed");
	return r->queued;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct guest_relay *r = req->data;

	if (status < 0 && status != UV_ECANCELED) {
		end(r, status, "ending the stream to the guest failed");
		return;
	}
	if (r->eof && r->state == R_OPEN)
		end(r, 0, NULL);
}

void guest_relay_shutdown(struct guest_relay *r)
{
	if (r->state != R_OPEN || r->shut)
		return;
	r->shut = true;
	r->shutdown_req.data = r;
	if (uv_shutdown(&r->shutdown_req, (uv_stream_t *)&r->pipe, on_shutdown) < 0)
		end(r, -EIO, "ending the stream to the guest failed");
}

void guest_relay_pause(struct guest_relay *r)
{
	r->paused = true;
	if (r->reading && r->state == R_OPEN) {
		uv_read_stop((uv_stream_t *)&r->pipe);
		r->reading = false;
	}
}

void guest_relay_resume(struct guest_relay *r)
{
	r->paused = false;
	start_reading(r);
}

void guest_relay_close(struct guest_relay *r)
{
	r->closed_by_owner = true;
	if (r->state != R_DONE)
		teardown(r);
}
