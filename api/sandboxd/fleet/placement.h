#ifndef SANDVM_API_SANDBOXD_FLEET_PLACEMENT_H
#define SANDVM_API_SANDBOXD_FLEET_PLACEMENT_H

/*
 * Where a create goes (docs/fleet.md, "The gateway"): among the workers with
 * room for it, a few sampled at random, the one with the most free memory.
 * Sampling a few ("the power of two choices") rather than scanning for the
 * best keeps several gateways, each with its own slightly stale table, from
 * all sending the next burst of creates to the same emptiest worker. Pure:
 * the random source is the caller's, so tests are deterministic.
 */

#include <stddef.h>
#include <stdint.h>

struct fleet_table;
struct fleet_entry;

#define PLACEMENT_SAMPLE_DEFAULT 2

/* Returns a uniformly random 32-bit number. */
typedef uint32_t (*placement_rand_fn)(void *ctx);

struct placement_request {
	uint32_t memory_mib;       /* the sandbox's guest memory */
	const char *const *exclude; /* worker ids already tried (a 429, an unreachable one) */
	size_t nexclude;
	unsigned sample;            /* k: how many eligible workers to compare (0: the default) */
	placement_rand_fn rand;
	void *rand_ctx;
};

/*
 * Eligible: live, accepting, not excluded, sandboxes + inflight <
 * max_sandboxes and memory_mib + inflight_mib + M <= max_memory_mib. Of k
 * drawn without replacement among them (all of them when fewer), the one
 * with the most free memory (max - used - in flight); a tie goes to the one
 * drawn first. 0 with *out, -ENOSPC when no worker is eligible, -EINVAL.
 */
int placement_choose(const struct fleet_table *t, const struct placement_request *rq, struct fleet_entry **out);

/* Memory a worker has free for creates, counting those in flight. */
uint64_t placement_free_mib(const struct fleet_entry *w);

#endif
