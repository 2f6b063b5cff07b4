/*
 * clock.c - the one clock of the program: bg_now() in seconds and
 * bg_now_ns() in nanoseconds, both moved by $BGCOPY_TIME_OFFSET.
 *
 * Everything the store dates, and everything bgcopy and bgcopy-peerd
 * compare with those dates, reads this clock: a test that sets the offset
 * moves them all together (cache.h tells how).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"

/* An offset beyond this (about 35 000 years) is a mistake, not a test. */
#define CLOCK_OFFSET_MAX ((int64_t)1 << 40)

/* $BGCOPY_TIME_OFFSET in seconds, 0 when unset or not a number.  Read at
 * every call, so that a test may change it between two readings. */
static int64_t clock_offset(void)
{
	const char *off = getenv(BG_CLOCK_OFFSET_ENV);
	int64_t v;

	if (off == NULL ||
	    bg_parse_i64(off, strlen(off), -CLOCK_OFFSET_MAX + 1, CLOCK_OFFSET_MAX - 1, &v) != 0)
		return 0;
	return v;
}

int64_t bg_now(void)
{
	return (int64_t)time(NULL) + clock_offset();
}

int64_t bg_now_ns(void)
{
	static _Atomic int64_t last;
	struct timespec ts;
	int64_t t, prev;

	clock_gettime(CLOCK_REALTIME, &ts);
	t = ((int64_t)ts.tv_sec + clock_offset()) * 1000000000 + ts.tv_nsec;
	/* Strictly increasing within the process: two uses by one process
	 * never tie, and a clock stepped back does not reorder them. */
	prev = atomic_load(&last);
	do {
		if (t <= prev)
			t = prev + 1;
	} while (!atomic_compare_exchange_weak(&last, &prev, t));
	return t;
}

int64_t bg_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
