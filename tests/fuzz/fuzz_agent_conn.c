/*
 * sandboxd's libuv exec client (agent_conn.c) against arbitrary bytes from
 * the guest side: the VMM's answer to CONNECT, HELLO, and every frame of an
 * exec (output within or beyond the window, window updates, exits, errors,
 * pings, garbage), written in pieces whose size byte 0 picks. The client must
 * end (or be cancelled) without a crash, a leak or unbounded memory.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "agent_conn.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	bool ended;
	struct agent_conn *ac;
	unsigned outputs;
};

static void on_output(void *ctx, bool is_stdout, const uint8_t *d, size_t len)
{
	struct run *r = ctx;

	(void)d;
	/* Give some credit back now and then, as a reader would. */
	if (++r->outputs % 2)
		agent_conn_consumed(r->ac, is_stdout, len);
}

static void on_stdin_ready(void *ctx)
{
	struct run *r = ctx;

	agent_conn_stdin(r->ac, "input", 5);
	agent_conn_stdin_close(r->ac);
}

static void on_ended(void *ctx, int rc, const struct agent_exec_status *st, const char *error)
{
	struct run *r = ctx;

	(void)rc;
	(void)st;
	(void)error;
	r->ended = true;
	r->ac = NULL;
}

static const struct agent_conn_ops ops = { .output = on_output, .stdin_ready = on_stdin_ready, .ended = on_ended };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uv_loop_t loop;
	static int listen_fd = -1;
	static char path[64];
	const char *argv[] = { "sh", "-c", "x", NULL };
	struct agent_exec_request rq = { .argv = argv };
	struct agent_conn_config cfg = { .port = 1024, .connect_ms = 2000, .deadline_ms = 0 };
	struct run r = { 0 };
	size_t piece, off = 1;
	int fd = -1;

	if (listen_fd < 0) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };

		signal(SIGPIPE, SIG_IGN);
		sv_log_init("fuzz", SV_LOG_ERROR);
		uv_loop_init(&loop);
		snprintf(path, sizeof(path), "/tmp/sandvm-fuzz-aconn.%d", getpid());
		unlink(path);
		listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
		if (bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(listen_fd, 16) < 0)
			abort();
	}
	if (size < 1)
		return 0;
	/* Byte-by-byte for byte 0 of 0 mod 16, else pieces of 512..7680 bytes. */
	piece = data[0] % 16 ? (size_t)(data[0] % 16) * 512 : 1;
	cfg.vsock_path = path;
	if (agent_conn_exec(&loop, &cfg, &rq, &ops, &r, &r.ac) < 0)
		abort();
	for (int turns = 0; fd < 0 && turns < 100000; turns++) {
		uv_run(&loop, UV_RUN_NOWAIT);
		fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	}
	if (fd < 0)
		abort();
	/* The guest's side, in pieces, the client running between them. */
	while (off < size && !r.ended) {
		size_t n = size - off < piece ? size - off : piece;
		ssize_t w = send(fd, data + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		char sink[4096];

		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno != EAGAIN)
			break;
		while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
		}
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	for (int i = 0; i < 20 && !r.ended; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
	if (!r.ended)
		agent_conn_cancel(r.ac);
	close(fd);
	/* Closing handles need turns of their own. */
	for (int i = 0; i < 5; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
	return 0;
}
