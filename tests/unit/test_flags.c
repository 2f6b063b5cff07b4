/* test_flags.c - every form of FLAGS the README describes, valid and invalid. */
#include "bits.h"
#include "check.h"

static void
accepts(const char *s, uint32_t want)
{
	uint32_t got = 0xDEAD;
	int err = flags_parse(s, &got);

	if (!CHECK(err == 0))
		fprintf(stderr, "    flags_parse(\"%s\") = %d\n", s, err);
	CHECK_EQ_INT(got, want);
}

static void
refuses(const char *s)
{
	uint32_t got = 0xBEEF;
	int err = flags_parse(s, &got);

	if (!CHECK(err == BG_ENOTIMPL))
		fprintf(stderr, "    flags_parse(\"%s\") = %d, value 0x%X\n", s, err, got);
	CHECK_EQ_INT(got, 0xBEEF); /* unchanged */
}

int
main(void)
{
	char buf[256];

	/* Numbers. */
	accepts("0", 0);
	accepts("0x0901", 0x0901);
	accepts("2305", 0x0901);
	accepts("0x100", 0x100);
	/* As C reads a number: 0X too, a leading 0 for octal, blanks around. */
	accepts("0X0A1F", 0x0A1F);
	accepts("0400", 0x100);
	accepts("  0x0100 \t", 0x100);
	accepts("00", 0);
	/* Names are OR'ed: silent is 0, so with report the field is 0x100. */
	accepts("redirect-silent|redirect-report", 0x100);
	accepts("redirect-disallow,redirect-silent", 0x200);
	accepts("0x200", 0x200);
	accepts("0x1F", 0x1F);
	accepts("0x091F", 0x091F);
	accepts("0x0A1F", 0x0A1F);
	accepts("0x081F", 0x081F);
	/* Names, long and short, any case, | and , */
	accepts("redirect-report|ignore-unknown-ca", 0x0108);
	accepts("redirect-report,ignore-unknown-ca", 0x0108);
	accepts("BG_HTTP_REDIRECT_POLICY_DISALLOW", 0x0200);
	accepts("bg_ssl_enable_crl_check|BG_SSL_IGNORE_CERT_CN_INVALID", 0x0003);
	accepts("crl-check, ignore-cn-invalid ,ignore-date-invalid|ignore-wrong-usage", 0x0017);
	accepts("redirect-silent", 0);
	accepts("BG_HTTP_REDIRECT_POLICY_ALLOW_SILENT|allow-https-to-http", 0x0800);
	accepts("redirect-report|allow-https-to-http", 0x0900);
	accepts("redirect-report|redirect-report", 0x0100);
	accepts("BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP", 0x0800);

	/* Unknown bits, unknown names, bad policies. */
	refuses("0x20");
	refuses("0x40");
	refuses("0x1000");
	refuses("0x10000");
	refuses("0x300");
	refuses("0x400");
	refuses("0x500");
	refuses("0x600");
	refuses("0x700");
	refuses("0x0F1F"); /* policy field 0x700 */
	refuses("no-such-flag");
	refuses("redirect-report|nope");
	refuses("redirect-report|redirect-disallow");
	refuses("");
	refuses("|");
	refuses("redirect-report|");
	refuses("-1");
	refuses("0x");
	refuses("12abc");
	refuses("08");      /* not octal */
	refuses("0x1G");
	refuses("0x 1");
	refuses("0x-1");
	refuses("1 2");
	refuses("0x100000000");
	refuses("4294967552"); /* 0x100000100: past 32 bits */
	refuses("99999999999999999999");
	refuses("BG_HTTP_REDIRECT_POLICY_MASK");

	CHECK(flags_valid(0x091F));
	CHECK(!flags_valid(0x0300));

	/* Printing: 0x%04X then the names. */
	CHECK_EQ_STR(flags_format(0x0108, buf, sizeof(buf)), "0x0108 ignore-unknown-ca|redirect-report");
	CHECK_EQ_STR(flags_format(0, buf, sizeof(buf)), "0x0000 redirect-silent");
	CHECK_EQ_STR(flags_format(0x0A01, buf, sizeof(buf)),
	             "0x0A01 crl-check|redirect-disallow|allow-https-to-http");
	return check_done();
}
