#ifndef SANDVM_LIB_PARSE_H
#define SANDVM_LIB_PARSE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Strict number parsing for command lines and config files: the whole string
 * must be a decimal number in range, no sign, no trailing junk.
 * Returns 0, -EINVAL (not a number) or -ERANGE (outside [min, max]).
 */
int sv_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/*
 * A parser's refusal: formats the message into err (errlen bytes; nothing
 * when err is NULL or errlen is 0) and returns r, so that a check reads
 * `return sv_errf(-EINVAL, err, errlen, "...", ...);`.
 */
int sv_errf(int r, char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
