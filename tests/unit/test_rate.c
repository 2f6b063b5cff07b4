/* test_rate.c - the core's token bucket (its arithmetic on a clock the test
 * drives: burst, refill, debt, a rate changed midway) and the daily
 * schedule of rates (the grammar, what it refuses, and which rate applies
 * at a given time).  Run with TZ=UTC set by main(). */
#include <stdlib.h>
#include <time.h>

#include "cache.h"
#include "check.h"

static void
test_bucket(void)
{
	struct bg_rate b;

	/* 8000 B/s: the burst is 1000 bytes (an eighth), above burst_min 100. */
	CHECK_EQ_INT(bg_rate_init(&b, 8000, 100, 0), 0);
	CHECK_EQ_INT(bg_rate_take(&b, 600, 1, 0), 600);
	CHECK_EQ_INT(bg_rate_take(&b, 600, 1, 0), 400); /* what is left */
	CHECK_EQ_INT(bg_rate_take(&b, 600, 1, 0), 0);   /* empty */
	CHECK_EQ_INT(bg_rate_due_ms(&b, 80, 0), 11);    /* 80 bytes at 8/ms, rounded up */
	CHECK_EQ_INT(bg_rate_take(&b, 100, 80, 5), 0);  /* 40 earned: below need */
	CHECK_EQ_INT(bg_rate_take(&b, 100, 80, 10), 80);/* 80 earned */
	/* A long pause fills the bucket to its burst, never more. */
	CHECK_EQ_INT(bg_rate_take(&b, 5000, 1, 100000), 1000);
	/* Bytes that passed already: a debt that delays the next taker. */
	bg_rate_charge(&b, 4000, 100000);
	CHECK_EQ_INT(bg_rate_due_ms(&b, 0, 100000), 501);
	CHECK_EQ_INT(bg_rate_take(&b, 10, 1, 100250), 0);
	CHECK_EQ_INT(bg_rate_due_ms(&b, 0, 100500), 0);
	/* Over any time the bytes taken are the rate times the time, plus
	 * at most the burst: 10 s in 1 ms steps. */
	{
		uint64_t sum = 0;

		for (int64_t t = 200000; t <= 210000; t++)
			sum += bg_rate_take(&b, 64, 1, t);
		CHECK(sum <= 80000 + 1000 + 64);
		CHECK(sum >= 80000 - 64);
	}
	/* A new rate: the burst follows it. */
	bg_rate_set(&b, 80000, 300000);
	CHECK_EQ_INT(bg_rate_get(&b), 80000);
	CHECK_EQ_INT(bg_rate_take(&b, 100000, 1, 400000), 10000);
	/* No limit: everything passes, nothing is owed. */
	bg_rate_set(&b, 0, 400000);
	CHECK_EQ_INT(bg_rate_take(&b, 1 << 30, 1 << 30, 400000), 1 << 30);
	bg_rate_charge(&b, 1 << 30, 400000);
	CHECK_EQ_INT(bg_rate_due_ms(&b, 1 << 20, 400000), 0);
	/* From no limit to a limit: it starts empty. */
	bg_rate_set(&b, 1000, 500000);
	CHECK_EQ_INT(bg_rate_take(&b, 10, 1, 500000), 0);
	CHECK_EQ_INT(bg_rate_take(&b, 10, 1, 500010), 10);
	bg_rate_destroy(&b);

	/* A slow rate still holds burst_min. */
	CHECK_EQ_INT(bg_rate_init(&b, 800, 4096, 0), 0);
	CHECK_EQ_INT(bg_rate_take(&b, 10000, 1, 0), 4096);
	bg_rate_destroy(&b);
}

static int64_t
utc(int y, int mon, int d, int h, int mi, int s)
{
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d,
	                .tm_hour = h, .tm_min = mi, .tm_sec = s};

	return (int64_t)timegm(&tm);
}

static void
test_schedule_choice(void)
{
	struct bg_rate_schedule s;
	char why[256] = "", name[64];
	int which;
	/* Monday 7 December 2026. */
	int64_t mon_0759 = utc(2026, 12, 7, 7, 59, 59), mon_0800 = utc(2026, 12, 7, 8, 0, 0);
	int64_t mon_1659 = utc(2026, 12, 7, 16, 59, 59), mon_1700 = utc(2026, 12, 7, 17, 0, 0);
	int64_t sat_1200 = utc(2026, 12, 12, 12, 0, 0), sun_2359 = utc(2026, 12, 13, 23, 59, 59);

	CHECK_EQ_INT(bg_rate_schedule_parse("mon-fri 8-17 2M, sat,sun 0-24 none; outside 10M", &s,
	                                    why, sizeof(why)),
	             0);
	CHECK_EQ_STR(why, "");
	CHECK_EQ_INT(s.n, 2);
	CHECK_EQ_INT(s.w[0].days, 0x1f);
	CHECK_EQ_INT(s.w[1].days, 0x60);
	CHECK(s.has_outside);
	CHECK_EQ_INT(bg_rate_schedule_at(&s, 5, mon_0759, &which), 10 << 20);
	CHECK_EQ_INT(which, -1);
	CHECK_EQ_INT(bg_rate_schedule_at(&s, 5, mon_0800, &which), 2 << 20);
	CHECK_EQ_INT(which, 0);
	CHECK_EQ_INT(bg_rate_schedule_at(&s, 5, mon_1659, NULL), 2 << 20);
	CHECK_EQ_INT(bg_rate_schedule_at(&s, 5, mon_1700, NULL), 10 << 20);
	CHECK_EQ_INT(bg_rate_schedule_at(&s, 5, sat_1200, &which), 0);
	CHECK_EQ_INT(which, 1);
	CHECK_EQ_INT(bg_rate_schedule_at(&s, 5, sun_2359, &which), 0);
	CHECK_EQ_STR(bg_rate_window_name(&s.w[0], name, sizeof(name)), "mon-fri 08-17");
	CHECK_EQ_STR(bg_rate_window_name(&s.w[1], name, sizeof(name)), "sat-sun 00-24");

	/* Without "outside" the caller's rate applies outside the windows. */
	CHECK_EQ_INT(bg_rate_schedule_parse("mon 9-10 1K", &s, why, sizeof(why)), 0);
	CHECK(!s.has_outside);
	CHECK_EQ_INT(bg_rate_schedule_at(&s, 777, mon_0800, NULL), 777);
	CHECK_EQ_INT(bg_rate_schedule_at(&s, 777, mon_0800 + 3600, NULL), 1024);
	/* A wrapping range and a list; separators as tokens. */
	CHECK_EQ_INT(bg_rate_schedule_parse("fri-mon 0-6 1M , wed,tue 22-24 512K", &s, why,
	                                    sizeof(why)),
	             0);
	CHECK_EQ_INT(s.w[0].days, 0x71);
	CHECK_EQ_INT(s.w[1].days, 0x06);
	CHECK_EQ_STR(bg_rate_window_name(&s.w[0], name, sizeof(name)), "mon,fri-sun 00-06");
	/* "outside" alone. */
	CHECK_EQ_INT(bg_rate_schedule_parse("outside 3M", &s, why, sizeof(why)), 0);
	CHECK_EQ_INT(s.n, 0);
	CHECK_EQ_INT(bg_rate_schedule_at(&s, 1, sat_1200, NULL), 3 << 20);
}

static void
test_schedule_refused(void)
{
	static const struct {
		const char *text, *why;
	} bad[] = {
		{"mon-fri 8-17 2M, fri 16-18 1M", "windows 'mon-fri 08-17' and 'fri 16-18' overlap"},
		{"mon-fri 17-8 2M", "'17-8': the window must start before it ends (0 <= START < END <= 24)"},
		{"mon-fri 8-25 2M", "'8-25': expected hours START-END, whole hours 0 to 24 (8-17)"},
		{"mon-fry 8-17 2M", "'mon-fry': expected days (mon, tue, wed, thu, fri, sat, sun, a range "
		                    "such as mon-fri, or a list such as sat,sun)"},
		{"mon 8-17 2X", "'2X': expected a rate in bytes/s (K, M, G: powers of 1024) or none"},
		{"mon 8-17", "a window is DAYS START-END RATE (mon-fri 8-17 2M): 'mon 8-17' is cut short"},
		{"mon 8-17 1M tue 8-17 1M", "'tue': expected ',' between windows"},
		{"mon 8-17 1M,", "a ',' ends the windows: expected another window after it"},
		{"mon 8-17 1M; inside 2M", "expected 'outside RATE' after the windows and ';'"},
		{"", "expected windows DAYS START-END RATE and/or 'outside RATE'"},
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct bg_rate_schedule s;
		char why[256] = "";

		CHECK_EQ_INT(bg_rate_schedule_parse(bad[i].text, &s, why, sizeof(why)), BG_EINVAL);
		CHECK_EQ_STR(why, bad[i].why);
	}
}

static void
test_rate_name(void)
{
	char buf[32];

	CHECK_EQ_STR(bg_rate_name(0, buf, sizeof(buf)), "none");
	CHECK_EQ_STR(bg_rate_name(10 << 20, buf, sizeof(buf)), "10M");
	CHECK_EQ_STR(bg_rate_name(1536 * 1024, buf, sizeof(buf)), "1536K");
	CHECK_EQ_STR(bg_rate_name(1000, buf, sizeof(buf)), "1000");
}

int
main(void)
{
	setenv("TZ", "UTC", 1);
	tzset();
	test_bucket();
	test_schedule_choice();
	test_schedule_refused();
	test_rate_name();
	return check_done();
}
