/* testutil.h - tiny assertion helpers for C tests (exit 1 on failure). */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...)                                                              \
	do {                                                                   \
		fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);          \
		fprintf(stderr, __VA_ARGS__);                                  \
		fputc('\n', stderr);                                           \
		exit(1);                                                       \
	} while (0)

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			FAIL("%s", #cond);                                     \
	} while (0)

#define CHECK_EQ_U(a, b)                                                       \
	do {                                                                   \
		unsigned long long a_ = (unsigned long long)(a);              \
		unsigned long long b_ = (unsigned long long)(b);              \
		if (a_ != b_)                                                  \
			FAIL("%s == %s: %llu != %llu", #a, #b, a_, b_);        \
	} while (0)

#define CHECK_STR(a, b)                                                        \
	do {                                                                   \
		const char *a_ = (a), *b_ = (b);                               \
		if (strcmp(a_, b_))                                            \
			FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_, b_);    \
	} while (0)

#endif

/* ---- clocks, for tests that wait on daemons and sockets -------------------- */
#ifndef TESTUTIL_CLOCK_H
#define TESTUTIL_CLOCK_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

static inline int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

#endif
