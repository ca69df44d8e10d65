/*
 * sandboxd's libuv agent client (agent_conn.c) against arbitrary bytes from
 * the guest side: the VMM's answer to CONNECT, HELLO, and every frame of an
 * exec (output within or beyond the window, window updates, exits, errors,
 * pings, garbage) or of a file call (stat results, file data within or past
 * the limit, listings past the caller's bound, OKs, errors), written in
 * pieces. Byte 0 picks the size of the pieces (low four bits) and the call
 * (high four: 0 and 8..15 an exec, 1 the readiness check, 2..7 read, write,
 * stat, list, mkdir, remove). The client must end (or be cancelled) without
 * a crash, a leak or unbounded memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
	unsigned outputs, entries;
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

/* A caller's bound on a listing, as sandboxd's, but small. */
static int on_entry(void *ctx, const struct agent_proto_list_entry *e)
{
	struct run *r = ctx;

	(void)e;
	return ++r->entries > 50 ? -E2BIG : 0;
}

static void on_file_ended(void *ctx, int rc, const struct agent_file_result *res, const char *error)
{
	struct run *r = ctx;

	(void)rc;
	(void)res;
	(void)error;
	r->ended = true;
	r->ac = NULL;
}

static const struct agent_file_ops file_ops = { .entry = on_entry, .ended = on_file_ended };

/* Starts the call byte 0 names. */
static int start(uv_loop_t *loop, const struct agent_conn_config *cfg, unsigned call, int read_fd, int write_fd,
		 struct run *r)
{
	static const enum agent_file_op file_op[] = { AGENT_FILE_READ,	AGENT_FILE_WRITE, AGENT_FILE_STAT,
						      AGENT_FILE_LIST,	AGENT_FILE_MKDIR, AGENT_FILE_REMOVE };
	const char *argv[] = { "sh", "-c", "x", NULL };
	struct agent_exec_request rq = { .argv = argv };
	struct agent_file_request frq = { .path = "/tmp/f", .mode = 0644, .limit = 20000 };

	if (call == 1)
		return agent_conn_hello(loop, cfg, &ops, r, &r->ac);
	if (call < 2 || call > 7)
		return agent_conn_exec(loop, cfg, &rq, &ops, r, &r->ac);
	frq.op = file_op[call - 2];
	frq.fd = frq.op == AGENT_FILE_READ ? read_fd : write_fd;
	if (frq.op == AGENT_FILE_WRITE && lseek(write_fd, 0, SEEK_SET) < 0)
		abort();
	return agent_conn_file(loop, cfg, &frq, &file_ops, r, &r->ac);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uv_loop_t loop;
	static int listen_fd = -1, read_fd = -1, write_fd = -1;
	static char path[64];
	struct agent_conn_config cfg = { .port = 1024, .connect_ms = 2000, .deadline_ms = 0, .idle_ms = 2000 };
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
		/* A read's data goes nowhere; a write sends 150 KiB, three chunks. */
		read_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
		write_fd = memfd_create("fuzz-upload", MFD_CLOEXEC);
		if (read_fd < 0 || write_fd < 0 || ftruncate(write_fd, 150 * 1024) < 0)
			abort();
	}
	if (size < 1)
		return 0;
	/* Byte-by-byte for byte 0 of 0 mod 16, else pieces of 512..7680 bytes. */
	piece = data[0] % 16 ? (size_t)(data[0] % 16) * 512 : 1;
	cfg.vsock_path = path;
	if (start(&loop, &cfg, data[0] >> 4, read_fd, write_fd, &r) < 0)
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
