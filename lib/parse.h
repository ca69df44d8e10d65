#ifndef SANDVM_LIB_PARSE_H
#define SANDVM_LIB_PARSE_H

#include <stdint.h>

/*
 * Strict number parsing for command lines and config files: the whole string
 * must be a decimal number in range, no sign, no trailing junk.
 * Returns 0, -EINVAL (not a number) or -ERANGE (outside [min, max]).
 */
int sv_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

#endif
