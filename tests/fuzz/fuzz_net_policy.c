/*
 * libFuzzer target: arbitrary bytes as an egress policy (the JSON that
 * --net-policy and the control socket's net-policy name, vmm/net/egress.h).
 * A refused policy must leave the one in force untouched and say why; an
 * accepted one must judge frames, report its status, and never let a frame
 * from a spoofed source out.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/egress.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t MAC[6] = { 0x02, 0x53, 0x56, 0x00, 0x00, 0x02 };
/* Whatever the policy says the sandbox's address is, this frame's source is not the device's MAC. */
static const uint8_t SPOOFED[] = {
	0x02, 0x53, 0x56, 0x00, 0x00, 0x01, 0x02, 0x66, 0x66, 0x66, 0x66, 0x66, 0x08, 0x00,
	0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
	10, 0, 0, 2, 198, 51, 100, 7, 0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00,
};
static const char BASE[] = "{\"ip\": \"10.0.0.2\", \"gateway\": \"10.0.0.1\", "
			   "\"gateway_mac\": \"02:53:56:00:00:01\", \"mode\": \"block\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct net_egress e = { .mac = MAC };
	char err[512];
	cJSON *st;

	if (size > 1u << 20)
		return 0;
	/* A policy in force first: a refused replacement must leave it as it was. */
	if (net_egress_load(&e, BASE, strlen(BASE), err, sizeof(err)) != 0)
		abort();
	err[0] = '\0';
	if (net_egress_load(&e, (const char *)data, size, err, sizeof(err)) != 0) {
		if (!err[0] || e.mode != FW_BLOCK || net_egress_check(&e, SPOOFED, sizeof(SPOOFED)))
			abort();
	} else if (net_egress_check(&e, SPOOFED, sizeof(SPOOFED))) {
		abort();
	}
	st = cJSON_CreateObject();
	net_egress_status(&e, st);
	if (!cJSON_GetObjectItemCaseSensitive(st, "counters"))
		abort();
	cJSON_Delete(st);
	net_egress_destroy(&e);
	return 0;
}
