#ifndef SANDVM_TESTS_UNIT_UNIT_H
#define SANDVM_TESTS_UNIT_UNIT_H

/* cmocka needs these before its header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* A small deterministic PRNG so hostile-input loops are reproducible. */
static inline uint32_t unit_rand(uint64_t *state)
{
	*state = *state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*state >> 33);
}

#endif
