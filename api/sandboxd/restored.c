/* restored.h: a restored guest's identity, sent with agent_conn's RESTORED call. */
#include "restored.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "agent_client.h"
#include "agent_conn.h"
#include "agent_proto.h"

_Static_assert(RESTORED_ENTROPY_BYTES == AGENT_PROTO_RESTORED_ENTROPY, "one entropy size on both sides");

int restored_identity_init(struct restored_identity *id)
{
	uint8_t mid[16];
	struct timespec ts;

	memset(id, 0, sizeof(*id));
	if (getrandom(id->entropy, sizeof(id->entropy), 0) != (ssize_t)sizeof(id->entropy) ||
	    getrandom(mid, sizeof(mid), 0) != (ssize_t)sizeof(mid))
		return -EIO;
	for (size_t i = 0; i < sizeof(mid); i++)
		snprintf(id->machine_id + 2 * i, 3, "%02x", mid[i]);
	clock_gettime(CLOCK_REALTIME, &ts);
	id->realtime_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	return 0;
}

/* KEY's value in cmdline into out; empty when absent or too long to be valid. */
static void word(const char *cmdline, const char *key, char *out, size_t cap)
{
	size_t n;
	const char *v = agent_proto_cmdline_word(cmdline, key, &n);

	out[0] = '\0';
	if (v && n < cap)
		snprintf(out, cap, "%.*s", (int)n, v);
}

void restored_identity_from_cmdline(struct restored_identity *id, const char *cmdline)
{
	if (!cmdline)
		return;
	word(cmdline, "sandvm.net", id->net, sizeof(id->net));
	word(cmdline, "sandvm.net6", id->net6, sizeof(id->net6));
	word(cmdline, "sandvm.dns", id->dns, sizeof(id->dns));
	word(cmdline, "sandvm.hostname", id->hostname, sizeof(id->hostname));
}

static const char *opt(const char *s)
{
	return s[0] ? s : NULL;
}

int restored_send(uv_loop_t *loop, const char *vsock_path, uint32_t connect_ms, const struct restored_identity *id,
		  const struct agent_conn_ops *ops, void *ctx, struct agent_conn **out)
{
	struct agent_conn_config cfg = {.vsock_path = vsock_path, .port = AGENT_CLIENT_PORT, .connect_ms = connect_ms};
	struct agent_proto_restored m = {
		.entropy = id->entropy,
		.entropy_len = sizeof(id->entropy),
		.realtime_ns = id->realtime_ns,
		.hostname = opt(id->hostname),
		.machine_id = opt(id->machine_id),
		.net = opt(id->net),
		.net6 = opt(id->net6),
		.mac = opt(id->mac),
		.dns = opt(id->dns),
	};

	return agent_conn_restored(loop, &cfg, &m, ops, ctx, out);
}
