/*
 * libFuzzer target: arbitrary bytes as a VMM's reply to {"op":"net"}, from
 * which a scrape reads the firewall counters (api/sandboxd/metrics.c). A
 * refusal leaves every count 0; an accepted reply gives only counts a sum
 * over many sandboxes keeps exact (at most 2^53 each).
 */
#include <stdint.h>
#include <stdlib.h>

#include "metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct metrics_fw fw;
	int r;

	if (size > 1u << 16)
		return 0;
	r = metrics_fw_parse((const char *)data, size, &fw);
	for (unsigned i = 0; i < METRICS_FW_REASONS; i++)
		if ((r < 0 && fw.count[i]) || fw.count[i] > (1ull << 53))
			abort();
	return 0;
}
