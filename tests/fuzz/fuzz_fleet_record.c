/*
 * The gateway's readers of etcd records (fleet_table.h): a worker record, a
 * sandbox reservation and a worker address, as anything a compromised
 * worker or a bad etcd write could leave there. Whatever parses keeps every
 * promise of the parser: a valid id, a bounded host, a port 1..65535,
 * numbers in range; and a table fed it as an event stays consistent.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/fleet_table.h"
#include "fleet/placement.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t zero(void *ctx)
{
	(void)ctx;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	struct fleet_worker_record r;
	struct fleet_sandbox_record sr;
	struct fleet_table t;
	struct fleet_entry *w;
	char err[256], host[FLEET_HOST_MAX + 1], key[FLEET_ID_MAX + 32];
	uint16_t port;
	struct placement_request rq = {.memory_mib = 1, .rand = zero};

	if (fleet_worker_record_parse(s, size, &r, err, sizeof(err)) == 0) {
		if (!fleet_id_valid(r.id, strlen(r.id)) || !r.port || strlen(r.host) > FLEET_HOST_MAX ||
		    r.sandboxes > FLEET_COUNT_MAX || r.max_memory_mib > FLEET_MIB_MAX || strncmp(r.address, "https://", 8))
			abort();
		/* The same bytes as an event under the worker's own key. */
		fleet_table_init(&t);
		memcpy(key, FLEET_WORKERS_PREFIX, strlen(FLEET_WORKERS_PREFIX));
		strcpy(key + strlen(FLEET_WORKERS_PREFIX), r.id);
		if (fleet_table_put(&t, key, strlen(key), s, size, 1, err, sizeof(err)) < 0 || fleet_table_live(&t) != 1)
			abort();
		if (placement_choose(&t, &rq, &w) == 0 && w != fleet_table_find(&t, r.id))
			abort();
		fleet_table_delete(&t, key, strlen(key));
		if (fleet_table_live(&t) != 0)
			abort();
		fleet_table_destroy(&t);
	}
	if (fleet_sandbox_record_parse(s, size, &sr, err, sizeof(err)) == 0 &&
	    !fleet_id_valid(sr.worker, strlen(sr.worker)))
		abort();
	if (fleet_address_parse(s, size, host, sizeof(host), &port, err, sizeof(err)) == 0 &&
	    (!port || strlen(host) > FLEET_HOST_MAX || !host[0]))
		abort();
	return 0;
}
