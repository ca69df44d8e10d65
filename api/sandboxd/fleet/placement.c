/* Choosing a worker for a create (placement.h). */
#include "placement.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fleet_table.h"

uint64_t placement_free_mib(const struct fleet_entry *w)
{
	uint64_t used = (uint64_t)w->rec.memory_mib + w->inflight_mib;

	return used >= w->rec.max_memory_mib ? 0 : w->rec.max_memory_mib - used;
}

static bool excluded(const struct placement_request *rq, const char *id)
{
	for (size_t i = 0; i < rq->nexclude; i++)
		if (rq->exclude[i] && !strcmp(rq->exclude[i], id))
			return true;
	return false;
}

static bool eligible(const struct fleet_entry *w, const struct placement_request *rq)
{
	if (!w->live || !w->rec.accepting || excluded(rq, w->rec.id))
		return false;
	if ((uint64_t)w->rec.sandboxes + w->inflight >= w->rec.max_sandboxes)
		return false;
	return (uint64_t)w->rec.memory_mib + w->inflight_mib + rq->memory_mib <= w->rec.max_memory_mib;
}

int placement_choose(const struct fleet_table *t, const struct placement_request *rq, struct fleet_entry **out)
{
	uint16_t cand[FLEET_WORKERS_MAX];
	size_t n = 0;
	unsigned k;
	struct fleet_entry *best = NULL;

	if (!t || !rq || !out || !rq->rand || t->n > FLEET_WORKERS_MAX)
		return -EINVAL;
	for (size_t i = 0; i < t->n; i++)
		if (eligible(t->w[i], rq))
			cand[n++] = (uint16_t)i;
	if (!n)
		return -ENOSPC;
	k = rq->sample ? rq->sample : PLACEMENT_SAMPLE_DEFAULT;
	if (k > n)
		k = (unsigned)n;
	/* A partial Fisher-Yates shuffle: the first k of cand become a sample without replacement. */
	for (unsigned i = 0; i < k; i++) {
		size_t j = i + rq->rand(rq->rand_ctx) % (n - i);
		uint16_t tmp = cand[i];
		struct fleet_entry *w;

		cand[i] = cand[j];
		cand[j] = tmp;
		w = t->w[cand[i]];
		if (!best || placement_free_mib(w) > placement_free_mib(best))
			best = w;
	}
	*out = best;
	return 0;
}
