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

/* Lower-case hex of in[0..len) into out (2 * len + 1 bytes, NUL-terminated). */
void sv_hex_encode(const uint8_t *in, size_t len, char *out);
/* Exactly 2 * len hex digits (either case) of s into out; 0, or -EINVAL (out then unspecified). */
int sv_hex_decode(const char *s, uint8_t *out, size_t len);

#endif
