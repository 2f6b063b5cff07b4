/* test_http.c - the parsing pieces of agent/http.c: RFC 9530 digest fields (RFC 8941
 * dictionaries), RFC 9110's strong-date rule, Content-Range (RFC 9110 section 14.4)
 * and the number parser under Content-Length and the security flags. */
#include <stdint.h>
#include <string.h>

#include "net_int.h"
#include "check.h"

/* SHA-256 of "abc", and its base64. */
static const char ABC_B64[] = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
static const unsigned char ABC[BG_SHA256_LEN] = {
	0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
	0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};

static void
digest_ok(const char *field)
{
	unsigned char got[BG_SHA256_LEN];

	memset(got, 0, sizeof(got));
	if (!CHECK(http_digest_sha256(field, strlen(field), got)))
		fprintf(stderr, "    field: %s\n", field);
	CHECK_EQ_MEM(got, ABC, BG_SHA256_LEN);
}

static void
digest_none(const char *field)
{
	unsigned char got[BG_SHA256_LEN];

	if (!CHECK(!http_digest_sha256(field, strlen(field), got)))
		fprintf(stderr, "    field taken: %s\n", field);
}

static void
range_ok(const char *v, long status, uint64_t first, uint64_t last, int64_t total)
{
	struct http_content_range cr = {99, 99, 99};

	if (!CHECK(http_content_range(v, strlen(v), status, &cr) == 0))
		fprintf(stderr, "    Content-Range of a %ld: %s\n", status, v);
	CHECK_EQ_INT(cr.first, first);
	CHECK_EQ_INT(cr.last, last);
	CHECK_EQ_INT(cr.total, total);
}

static void
range_bad(const char *v, long status)
{
	struct http_content_range cr;

	if (!CHECK(http_content_range(v, strlen(v), status, &cr) == BG_EPROTO))
		fprintf(stderr, "    Content-Range of a %ld taken: %s\n", status, v);
}

static void
digits_ok(const char *s, unsigned base, uint64_t want)
{
	uint64_t got = 12345;

	if (!CHECK(bg_parse_uint(s, strlen(s), base, UINT64_MAX, &got) == 0))
		fprintf(stderr, "    digits (base %u): %s\n", base, s);
	CHECK(got == want);
}

static void
digits_bad(const char *s, unsigned base)
{
	uint64_t got = 12345;

	if (!CHECK(bg_parse_uint(s, strlen(s), base, UINT64_MAX, &got) != 0))
		fprintf(stderr, "    digits (base %u) taken: %s\n", base, s);
	CHECK_EQ_INT(got, 12345); /* untouched */
}

static void
contents_range(void)
{
	/* The forms section 14.4 gives: a range of a known or unknown length;
	 * a 416's unsatisfied range. */
	range_ok("bytes 42-1233/1234", 206, 42, 1233, 1234);
	range_ok("bytes 0-0/1", 206, 0, 0, 1);
	range_ok("bytes 42-1233/*", 206, 42, 1233, -1);
	range_ok("bytes 0-9223372036854775806/9223372036854775807", 206, 0, INT64_MAX - 1,
	         INT64_MAX);
	range_ok("bytes 18446744073709551614-18446744073709551615/*", 206, UINT64_MAX - 1,
	         UINT64_MAX, -1);
	range_ok("bytes */1234", 416, 0, 0, 1234);
	range_ok("bytes */0", 416, 0, 0, 0);
	/* Range units are case-insensitive (section 14.1); leading zeros are digits. */
	range_ok("Bytes 0-9/10", 206, 0, 9, 10);
	range_ok("BYTES */10", 416, 0, 0, 10);
	range_ok("bytes 007-009/010", 206, 7, 9, 10);

	/* Another unit, or none. */
	range_bad("", 206);
	range_bad("bytes", 206);
	range_bad("bytes ", 206);
	range_bad("items 0-9/10", 206);
	range_bad("bytesx 0-9/10", 206);
	range_bad("bytes=0-9/10", 206);
	/* One SP between the unit and the range, no other blank anywhere. */
	range_bad("bytes0-9/10", 206);
	range_bad("bytes  0-9/10", 206);
	range_bad("bytes\t0-9/10", 206);
	range_bad("bytes 0 -9/10", 206);
	range_bad("bytes 0- 9/10", 206);
	range_bad("bytes 0-9 /10", 206);
	range_bad("bytes 0-9/ 10", 206);
	range_bad("bytes 0-9/10 ", 206);
	/* Digits only: no sign, no other base, nothing after the length. */
	range_bad("bytes +0-9/10", 206);
	range_bad("bytes 0-+9/10", 206);
	range_bad("bytes 0-9/+10", 206);
	range_bad("bytes -1-9/10", 206);
	range_bad("bytes 0x0-9/10", 206);
	range_bad("bytes 0-9/10x", 206);
	range_bad("bytes 0-9/10,bytes 0-9/10", 206);
	range_bad("bytes 0-9/**", 206);
	range_bad("bytes 0-9/*/", 206);
	/* Parts missing. */
	range_bad("bytes -9/10", 206);
	range_bad("bytes 0-/10", 206);
	range_bad("bytes 0-9/", 206);
	range_bad("bytes 0-9", 206);
	range_bad("bytes 0/10", 206);
	range_bad("bytes 0--9/10", 206);
	/* An invalid range: last before first, or at or past the length. */
	range_bad("bytes 9-8/10", 206);
	range_bad("bytes 0-10/10", 206);
	range_bad("bytes 5-20/10", 206);
	range_bad("bytes 0-0/0", 206);
	/* Numbers past 64 bits, a length past what an int64_t size holds. */
	range_bad("bytes 0-18446744073709551616/*", 206);
	range_bad("bytes 18446744073709551616-18446744073709551617/*", 206);
	range_bad("bytes 0-9/18446744073709551616", 206);
	range_bad("bytes 0-9/9223372036854775808", 206);
	range_bad("bytes */9223372036854775808", 416);
	/* Each status its form: no range in a 416, no unsatisfied range otherwise. */
	range_bad("bytes */10", 206);
	range_bad("bytes */10", 200);
	range_bad("bytes 0-9/10", 416);
	range_bad("bytes */*", 416);
	range_bad("bytes *//10", 416);
	range_bad("bytes */", 416);
	range_bad("bytes * /10", 416);
	/* The length given is all there is: an embedded NUL is not the end. */
	{
		static const char nul[] = "bytes 0-9/10\0";
		struct http_content_range cr;

		CHECK(http_content_range(nul, sizeof(nul) - 1, 206, &cr) == BG_EPROTO);
	}
}

static void
numbers(void)
{
	char max[32];

	digits_ok("0", 10, 0);
	digits_ok("000042", 10, 42);
	digits_ok("18446744073709551615", 10, UINT64_MAX);
	digits_ok("ffffffffffffffff", 16, UINT64_MAX);
	digits_ok("0901", 16, 0x901);
	digits_ok("aBcD", 16, 0xABCD);
	digits_ok("0400", 8, 0400);
	digits_ok("1777777777777777777777", 8, UINT64_MAX);
	digits_bad("", 10);
	digits_bad("18446744073709551616", 10);
	digits_bad("10000000000000000", 16);
	digits_bad("2000000000000000000000", 8);
	digits_bad("12a", 10);
	digits_bad("08", 8);
	digits_bad("0xff", 16);
	digits_bad("+1", 10);
	digits_bad("-1", 10);
	digits_bad(" 1", 10);
	digits_bad("1 ", 10);
	digits_bad("10", 2);
	digits_bad("10", 0);

	/* Content-Length: blanks around, a NUL ends it, at most 32 characters. */
	{
		uint64_t v = 0;
		static const char nul[] = "42\0x";

		CHECK(http_value_u64(" \t42\r\n", 6, &v) && v == 42);
		CHECK(http_value_u64(nul, sizeof(nul) - 1, &v) && v == 42);
		CHECK(http_value_u64("00000000000000000000000000000042", 32, &v) && v == 42);
		CHECK(!http_value_u64("000000000000000000000000000000042", 33, &v));
		CHECK(!http_value_u64("", 0, &v));
		CHECK(!http_value_u64(" \r\n", 3, &v));
		CHECK(!http_value_u64("4 2", 3, &v));
		CHECK(!http_value_u64("1e3", 3, &v));
		CHECK(!http_value_u64("-1", 2, &v));
		snprintf(max, sizeof(max), "%llu", (unsigned long long)UINT64_MAX);
		CHECK(http_value_u64(max, strlen(max), &v) && v == UINT64_MAX);
		CHECK(!http_value_u64("18446744073709551616", 20, &v));
	}
}

int
main(void)
{
	char buf[256];

	contents_range();
	numbers();

	/* The forms RFC 9530 shows, with blanks as a header line has them. */
	snprintf(buf, sizeof(buf), "sha-256=:%s:", ABC_B64);
	digest_ok(buf);
	snprintf(buf, sizeof(buf), " sha-256=:%s:\r\n", ABC_B64);
	digest_ok(buf);
	snprintf(buf, sizeof(buf), "sha-512=:AAAA:, sha-256=:%s:", ABC_B64);
	digest_ok(buf);
	snprintf(buf, sizeof(buf), "sha-256=:%s:;p=1, unixsum=30", ABC_B64);
	digest_ok(buf);
	snprintf(buf, sizeof(buf), "x=\"a, sha-256=:bad:\", sha-256=:%s:", ABC_B64);
	digest_ok(buf);
	/* RFC 8941 4.2.2: of duplicated keys the last one counts. */
	snprintf(buf, sizeof(buf), "sha-256=:AAAA:, sha-256=:%s:", ABC_B64);
	digest_ok(buf);
	snprintf(buf, sizeof(buf), "sha-256=:%s:, sha-256=:AAAA:", ABC_B64);
	digest_none(buf);

	/* Nothing to take: absent, another algorithm, malformed members. */
	digest_none("");
	digest_none("sha-512=:AAAA:");
	digest_none("sha-256");
	digest_none("sha-256=?1");
	digest_none("sha-256=:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0:"); /* no padding */
	digest_none("sha-256=:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa1=:"); /* stray bits */
	digest_none("sha-256=:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAF*0=:"); /* not base64 */
	digest_none("sha-256=:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");  /* unclosed */
	digest_none("sha-256=:AAAA:");                                          /* too short */
	snprintf(buf, sizeof(buf), "SHA-256=:%s:", ABC_B64); /* keys are lower case */
	digest_none(buf);
	snprintf(buf, sizeof(buf), "sha-256=:%s:,", ABC_B64); /* trailing comma */
	digest_none(buf);
	snprintf(buf, sizeof(buf), "sha-256=:%s: junk", ABC_B64);
	digest_none(buf);

	/* RFC 9110 8.8.2.2: strong only with a Date 60 s or more after it, in any of
	 * the three date forms of 5.6.7. */
	CHECK(http_date_strong("Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:50:37 GMT"));
	CHECK(!http_date_strong("Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:50:36 GMT"));
	CHECK(!http_date_strong("Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT"));
	CHECK(!http_date_strong("Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 07:49:37 GMT"));
	CHECK(http_date_strong("Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 09:49:37 1994"));
	CHECK(!http_date_strong("Sun, 06 Nov 1994 08:49:37 GMT", NULL));
	CHECK(!http_date_strong(NULL, "Sun, 06 Nov 1994 08:49:37 GMT"));
	CHECK(!http_date_strong("yesterday", "Sun, 06 Nov 1994 08:49:37 GMT"));
	CHECK(!http_date_strong("Sun, 06 Nov 1994 08:49:37 GMT", "not a date"));
	return check_done();
}
