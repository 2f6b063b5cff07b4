/* test_http.c - the validator and digest pieces of agent/http.c: RFC 9530 digest
 * fields (RFC 8941 dictionaries) and RFC 9110's strong-date rule. */
#include <string.h>

#include "agent_int.h"
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

int
main(void)
{
	char buf[256];

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
