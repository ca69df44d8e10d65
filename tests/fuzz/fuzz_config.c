/* libFuzzer target: the VMM's JSON config and control-socket requests. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void status(void *ctx, cJSON *reply)
{
	(void)ctx;
	cJSON_AddStringToObject(reply, "state", "running");
}

static int stop(void *ctx)
{
	(void)ctx;
	return 0;
}

static const struct control_ops ops = { .status = status, .stop = stop };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vmm_config cfg;
	char err[256];
	char *reply;

	vmm_config_init(&cfg);
	if (vmm_config_parse_json(&cfg, (const char *)data, size, err, sizeof(err)) == 0) {
		if (cfg.cpus < 1 || cfg.cpus > VMM_MAX_CPUS || cfg.memory_mib < VMM_MIN_MEMORY_MIB)
			abort();
	}
	vmm_config_destroy(&cfg);
	reply = control_handle_request((const char *)data, size, NULL, 0, &ops, NULL);
	if (!reply || reply[strlen(reply) - 1] != '\n')
		abort();
	free(reply);
	return 0;
}
