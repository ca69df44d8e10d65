#ifndef SANDVM_BENCH_BENCH_UTIL_H
#define SANDVM_BENCH_BENCH_UTIL_H

/* What the native microbenchmarks share: a fixed-seed PRNG and a monotonic clock. */

#include <stdint.h>
#include <time.h>

static uint64_t bench_rng = 0x9e3779b97f4a7c15ull;

static inline uint32_t rand32(void)
{
	bench_rng = bench_rng * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(bench_rng >> 32);
}

static inline double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
