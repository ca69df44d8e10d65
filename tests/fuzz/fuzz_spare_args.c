/*
 * libFuzzer target: the message that gives a spare VMM its command line
 * (lib/spare_args.c). Whatever decodes lies inside the message, NUL-ended,
 * and encodes back to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spare_args.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[SPARE_ARGS_MAX_BYTES], again[SPARE_ARGS_MAX_BYTES];
	char *argv[SPARE_ARGS_MAX_ARGS + 1];
	int n, len;

	if (size > sizeof(buf))
		return 0;
	memcpy(buf, data, size);
	n = spare_args_decode(buf, size, argv, SPARE_ARGS_MAX_ARGS);
	if (n < 0)
		return 0;
	if (n == 0 || (unsigned)n > SPARE_ARGS_MAX_ARGS || argv[n] != NULL)
		abort();
	for (int i = 0; i < n; i++)
		if (argv[i] < buf || argv[i] + strlen(argv[i]) >= buf + size)
			abort();
	len = spare_args_encode((const char *const *)argv, again, sizeof(again));
	if (len != (int)size || memcmp(again, data, size) != 0)
		abort();
	return 0;
}
