/*
 * restored.h. The agent's RESTORED request is being added to lib/agent_proto
 * and agent_conn in parallel: until agent_conn can carry it, this connects
 * and says HELLO only, so a warm start's readiness is real but the clone
 * keeps the template's identity; each such start says so in the log
 * (event=identity_not_sent). The RESTORED call goes where marked below.
 */
#include "restored.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "agent_client.h"
#include "agent_conn.h"
#include "log.h"

struct restored_call {
	restored_done_fn done;
	void *ctx;
	struct restored_identity id;
};

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

static void hello_ended(void *ctx, int r, const struct agent_exec_status *st, const char *error)
{
	struct restored_call *c = ctx;

	(void)st;
	/* Here the lead wires agent_conn's RESTORED call with c->id (helper A's branch agent-restored). */
	if (r == 0)
		sv_warn("event=identity_not_sent why=\"this build's agent_conn cannot send RESTORED yet\"");
	c->done(c->ctx, r, error);
	explicit_bzero(&c->id, sizeof(c->id));
	free(c);
}

static const struct agent_conn_ops hello_ops = {.ended = hello_ended};

int restored_send(uv_loop_t *loop, const char *vsock_path, uint32_t connect_ms, const struct restored_identity *id,
		  restored_done_fn done, void *ctx, struct agent_conn **out)
{
	struct agent_conn_config cfg = {.vsock_path = vsock_path, .port = AGENT_CLIENT_PORT, .connect_ms = connect_ms};
	struct restored_call *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	c->done = done;
	c->ctx = ctx;
	c->id = *id;
	r = agent_conn_hello(loop, &cfg, &hello_ops, c, out);
	if (r < 0) {
		explicit_bzero(&c->id, sizeof(c->id));
		free(c);
	}
	return r;
}
