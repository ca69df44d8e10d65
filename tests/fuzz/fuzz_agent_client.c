/*
 * libFuzzer target: the host client against a hostile guest agent. The
 * "agent" answers HELLO properly, then sends the fuzz input as its byte
 * stream and closes; the client runs one request (chosen by the first byte)
 * through whatever arrives. It must return (an error is fine), never crash,
 * hang or write past a buffer.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent_client.h"
#include "agent_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int devnull = -1;

static int list_cb(void *ctx, const struct agent_proto_list_entry *e)
{
	(void)ctx;
	/* Names the client hands out must be proper C strings. */
	return strlen(e->name) > 65535;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const argv[] = { "/bin/true", NULL };
	struct agent_proto_hello hello = { .min_version = 1, .max_version = 1, .name = "fuzz",
					   .features = AGENT_PROTO_FEATURE_RESTORED };
	uint8_t entropy[AGENT_PROTO_RESTORED_ENTROPY] = { 0 };
	struct agent_proto_restored rm = { .entropy = entropy, .entropy_len = sizeof(entropy),
					   .realtime_ns = 1, .hostname = "h", .net = "10.0.0.2/30,10.0.0.1" };
	struct agent_exec_request req = { .argv = argv };
	struct agent_exec_io io = { .in_fd = -1, .out_fd = -1, .err_fd = -1, .signal_fd = -1 };
	struct agent_proto_stat_result st;
	struct agent_exec_status es;
	struct agent_client c;
	uint8_t frame[256];
	size_t len;
	uint64_t n;
	int sv[2];

	if (size < 1)
		return 0;
	if (devnull < 0) {
		devnull = open("/dev/null", O_WRONLY);
		signal(SIGPIPE, SIG_IGN);
	}
	io.out_fd = io.err_fd = devnull;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	/* Room for the whole input and the client's requests, so nobody blocks. */
	int big = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	if (agent_proto_encode_hello(frame, sizeof(frame), &hello, &len) ||
	    write(sv[1], frame, len) != (ssize_t)len ||
	    write(sv[1], data + 1, size - 1) != (ssize_t)(size - 1))
		abort();
	shutdown(sv[1], SHUT_WR);
	if (agent_client_attach_fd(&c, sv[0], 1000) == 0) {
		switch (data[0] % 6) {
		case 0:
			agent_client_exec(&c, &req, &io, &es);
			break;
		case 1:
			agent_client_read_file(&c, "/f", devnull, 0, &n);
			break;
		case 2:
			agent_client_list(&c, "/", list_cb, NULL);
			break;
		case 3:
			agent_client_ping(&c, 1000);
			break;
		case 5:
			agent_client_restored(&c, &rm, 1000);
			break;
		default:
			agent_client_stat(&c, "/f", &st);
			break;
		}
		agent_client_close(&c);
	}
	close(sv[1]);
	return 0;
}
