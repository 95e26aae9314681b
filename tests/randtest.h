/* randtest.h - shared scaffolding of the randomised C tests (chain, crash):
 * a reproducible generator (splitmix64), the seed/temp-dir/context globals
 * and a fail() that says how to reproduce.  Include once per test program. */
#ifndef RANDTEST_H
#define RANDTEST_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define KiB ((uint64_t)1024)
#define MiB ((uint64_t)1024 * 1024)

static uint64_t seed;
static char tmpdir[4096];
static char ctx[256]; /* what we are doing, for failure messages */

__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "FAIL [%s]: ", ctx);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n  reproduce with TEST_SEED=%" PRIu64 " (temporary directory kept: %s)\n",
		seed, tmpdir);
	exit(1);
}

#define CHECK(cond)                                                                       \
	do {                                                                              \
		if (!(cond))                                                              \
			fail("%s:%d: %s", __FILE__, __LINE__, #cond);                     \
	} while (0)

static uint64_t rng;

static uint64_t rnd64(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* uniform in [0, n) (0 when n == 0) */
static inline uint64_t rnd(uint64_t n)
{
	return n ? rnd64() % n : 0;
}

/* uniform in [lo, hi] */
static inline uint64_t rnd_in(uint64_t lo, uint64_t hi)
{
	return lo + rnd(hi - lo + 1);
}

#endif
