/* test_cond.c - entity-tag lists and HTTP-dates of conditional requests (peerd/cond.c),
 * and the X-Bgcopy-Wait dictionary (peerd/waitparse.c). */
#include "check.h"
#include "peerd.h"

#define TAG "\"0123abcd\""
#define NOW 1764806400 /* 2025-12-04 00:00:00 UTC */

static void
date_is(const char *value, int64_t want)
{
	int64_t got = -1;

	if (!CHECK(peerd_http_date_parse(value, NOW, &got) == 0))
		fprintf(stderr, "    value: \"%s\"\n", value);
	CHECK_EQ_INT(got, want);
}

static void
date_bad(const char *value)
{
	int64_t got = -1;

	if (!CHECK(peerd_http_date_parse(value, NOW, &got) == BG_EINVAL))
		fprintf(stderr, "    value: \"%s\" gave %lld\n", value, (long long)got);
}

static void
wait_is(const char *value, uint64_t want_ms, uint64_t want_min)
{
	uint64_t ms = 0, min = 1;

	if (!CHECK(peerd_wait_parse(value, &ms, &min) == 0))
		fprintf(stderr, "    value: \"%s\"\n", value);
	CHECK_EQ_INT(ms, want_ms);
	CHECK_EQ_INT(min, want_min);
}

static void
wait_bad(const char *value)
{
	uint64_t ms = 5, min = 6;

	if (!CHECK(peerd_wait_parse(value, &ms, &min) == BG_EINVAL))
		fprintf(stderr, "    value: \"%s\"\n", value);
	/* Nothing is taken from a refused value. */
	CHECK_EQ_INT(ms, 5);
	CHECK_EQ_INT(min, 6);
}

static void
test_wait(void)
{
	wait_is("ms=250", 250, 1);
	wait_is("ms=250, min=4194304", 250, 4194304);
	wait_is("min=3,ms=0", 0, 3);
	wait_is("  ms=1 ,\tmin=2", 1, 2);
	wait_is("", 0, 1);
	wait_is("ms=1, ms=2", 2, 1);                   /* the last value counts */
	wait_is("ms=10;unit=x, min=2", 10, 2);         /* parameters ignored */
	wait_is("other=?1, future=\"a,b\", ms=7", 7, 1); /* other members ignored */
	wait_is("ms=999999999999999", 999999999999999, 1);
	wait_bad("ms=1.5");                            /* a Decimal */
	wait_bad("ms=-1");
	wait_bad("ms");                                /* Boolean true */
	wait_bad("ms=");
	wait_bad("ms=1,");
	wait_bad("ms=1 min=2");
	wait_bad("MS=1");                              /* keys are lowercase */
	wait_bad("ms=1234567890123456");               /* 16 digits */
	wait_bad("ms=0x10");
	wait_bad(NULL);
}

int
main(void)
{
	test_wait();
	/* Weak comparison (If-None-Match): W/ does not matter. */
	CHECK_EQ_INT(peerd_etag_match(TAG, TAG, true), PEERD_MATCH_YES);
	CHECK_EQ_INT(peerd_etag_match("W/" TAG, TAG, true), PEERD_MATCH_YES);
	CHECK_EQ_INT(peerd_etag_match("\"x\", W/" TAG, TAG, true), PEERD_MATCH_YES);
	CHECK_EQ_INT(peerd_etag_match(" , \"x\" ,," TAG " ", TAG, true), PEERD_MATCH_YES);
	CHECK_EQ_INT(peerd_etag_match("\"x\", \"y\"", TAG, true), PEERD_MATCH_NO);
	CHECK_EQ_INT(peerd_etag_match("\"0123ABCD\"", TAG, true), PEERD_MATCH_NO);
	CHECK_EQ_INT(peerd_etag_match("*", TAG, true), PEERD_MATCH_YES);
	CHECK_EQ_INT(peerd_etag_match(" * ", TAG, false), PEERD_MATCH_YES);
	/* Strong comparison (If-Match): a weak tag never matches. */
	CHECK_EQ_INT(peerd_etag_match(TAG, TAG, false), PEERD_MATCH_YES);
	CHECK_EQ_INT(peerd_etag_match("W/" TAG, TAG, false), PEERD_MATCH_NO);
	CHECK_EQ_INT(peerd_etag_match("\"x\"," TAG, TAG, false), PEERD_MATCH_YES);
	CHECK_EQ_INT(peerd_etag_match(TAG, "W/" TAG, false), PEERD_MATCH_NO);
	/* Not entity-tag lists. */
	CHECK_EQ_INT(peerd_etag_match("", TAG, true), PEERD_MATCH_INVALID);
	CHECK_EQ_INT(peerd_etag_match(" , ", TAG, true), PEERD_MATCH_INVALID);
	CHECK_EQ_INT(peerd_etag_match("0123abcd", TAG, true), PEERD_MATCH_INVALID);
	CHECK_EQ_INT(peerd_etag_match("w/" TAG, TAG, true), PEERD_MATCH_INVALID);
	CHECK_EQ_INT(peerd_etag_match("\"open", TAG, true), PEERD_MATCH_INVALID);
	CHECK_EQ_INT(peerd_etag_match(TAG " " TAG, TAG, true), PEERD_MATCH_INVALID);
	CHECK_EQ_INT(peerd_etag_match("*, " TAG, TAG, true), PEERD_MATCH_INVALID);
	CHECK_EQ_INT(peerd_etag_match("\"a b\"", TAG, true), PEERD_MATCH_INVALID);
	CHECK_EQ_INT(peerd_etag_match(NULL, TAG, true), PEERD_MATCH_INVALID);

	/* The three forms of RFC 9110 section 5.6.7, all the same instant. */
	date_is("Sun, 06 Nov 1994 08:49:37 GMT", 784111777);
	date_is("Sunday, 06-Nov-94 08:49:37 GMT", 784111777);
	date_is("Sun Nov  6 08:49:37 1994", 784111777);
	date_is("  Sun, 06 Nov 1994 08:49:37 GMT\t", 784111777);
	date_is("Thu, 01 Jan 1970 00:00:00 GMT", 0);
	date_is("Tue, 29 Feb 2000 23:59:59 GMT", 951868799);
	date_is("Sat, 31 Dec 2016 23:59:60 GMT", 1483228799); /* leap second: :59 */
	/* Two-digit years: more than 50 years ahead of NOW (2025) is a century back. */
	date_is("Monday, 01-Jan-35 00:00:00 GMT", 2051222400);
	date_is("Thursday, 01-Jan-76 00:00:00 GMT", 189302400);
	date_bad("Sun, 06 Nov 1994 08:49:37 UTC");
	date_bad("Sun, 6 Nov 1994 08:49:37 GMT");
	date_bad("sun, 06 Nov 1994 08:49:37 GMT");
	date_bad("Sun, 06 nov 1994 08:49:37 GMT");
	date_bad("Sun, 31 Nov 1994 08:49:37 GMT");
	date_bad("Thu, 29 Feb 2001 00:00:00 GMT");
	date_bad("Sun, 06 Nov 1994 24:00:00 GMT");
	date_bad("Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT");
	date_bad("Sun Nov 6 08:49:37 1994");
	date_bad("Sun, 06 Nov 94 08:49:37 GMT");
	date_bad("784111777");
	date_bad("");
	date_bad(NULL);
	return check_done();
}
