/* test_hresult.c - the HRESULTs bgcopy reports (README.md) and their classes. */
#include "bits.h"
#include "check.h"

int
main(void)
{
	char buf[64];

	/* Redirects refused under DISALLOW: HRESULT_FROM_WIN32(status). */
	CHECK_EQ_INT(hr_from_redirect(300), 0x8007012C);
	CHECK_EQ_INT(hr_from_redirect(301), 0x8007012D);
	CHECK_EQ_INT(hr_from_redirect(302), 0x8007012E);
	CHECK_EQ_INT(hr_from_redirect(303), 0x8007012F);
	CHECK_EQ_INT(hr_from_redirect(307), 0x80070133);
	CHECK_EQ_INT(hr_from_redirect(308), 0x80070134);
	CHECK_EQ_STR(hr_symbol(0x8007012C, buf, sizeof(buf)), "HTTP_STATUS_AMBIGUOUS");
	CHECK_EQ_STR(hr_symbol(0x8007012E, buf, sizeof(buf)), "HTTP_STATUS_REDIRECT");
	CHECK_EQ_STR(hr_symbol(0x80070133, buf, sizeof(buf)), "HTTP_STATUS_REDIRECT_KEEP_VERB");
	CHECK_EQ_STR(hr_symbol(0x80070134, buf, sizeof(buf)), "HTTP_STATUS_PERMANENT_REDIRECT");

	/* HTTP errors: BG_E_HTTP_ERROR_xxx. */
	CHECK_EQ_INT(hr_from_http(404), 0x80190194);
	CHECK_EQ_INT(hr_from_http(500), 0x801901F4);
	CHECK_EQ_STR(hr_symbol(0x80190194, buf, sizeof(buf)), "BG_E_HTTP_ERROR_404");
	CHECK(!hr_transient(0x80190194));
	CHECK(hr_transient(0x801901F4));
	CHECK(hr_transient(0x801901F7)); /* 503 */
	CHECK(hr_transient(hr_from_http(429)));
	CHECK(!hr_transient(hr_from_http(403)));

	/* The fixed table. */
	CHECK_EQ_INT(HR_E_NOTIMPL, 0x80004001);
	CHECK_EQ_STR(hr_symbol(0x80004001, buf, sizeof(buf)), "E_NOTIMPL");
	CHECK_EQ_STR(hr_symbol(0x80072F7C, buf, sizeof(buf)), "ERROR_WINHTTP_REDIRECT_FAILED");
	CHECK_EQ_STR(hr_symbol(0x80072F05, buf, sizeof(buf)), "ERROR_WINHTTP_SECURE_CERT_DATE_INVALID");
	CHECK_EQ_STR(hr_symbol(0x80072F06, buf, sizeof(buf)), "ERROR_WINHTTP_SECURE_CERT_CN_INVALID");
	CHECK_EQ_STR(hr_symbol(0x80072F0D, buf, sizeof(buf)), "ERROR_WINHTTP_SECURE_INVALID_CA");
	CHECK_EQ_STR(hr_symbol(0x80072F93, buf, sizeof(buf)), "ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE");
	CHECK_EQ_STR(hr_symbol(0x80072F19, buf, sizeof(buf)), "ERROR_WINHTTP_SECURE_CERT_REV_FAILED");
	CHECK_EQ_STR(hr_symbol(0x80072F8A, buf, sizeof(buf)), "ERROR_WINHTTP_SECURE_CERT_REVOKED");
	CHECK_EQ_STR(hr_symbol(0x80072F8F, buf, sizeof(buf)), "ERROR_WINHTTP_SECURE_FAILURE");
	CHECK(hr_transient(HR_ERROR_WINHTTP_CANNOT_CONNECT));
	CHECK(hr_transient(HR_ERROR_WINHTTP_TIMEOUT));
	CHECK(hr_transient(HR_ERROR_WINHTTP_CONNECTION_ERROR));
	CHECK(!hr_transient(HR_ERROR_WINHTTP_REDIRECT_FAILED));
	CHECK(!hr_transient(HR_ERROR_WINHTTP_SECURE_INVALID_CA));
	CHECK(!hr_transient(HR_ERROR_WINHTTP_SECURE_CERT_REVOKED));
	CHECK(!hr_transient(0x8007012E));

	/* Local errors. */
	CHECK_EQ_INT(hr_from_bg(BG_ENOSPC), 0x80070070);
	CHECK_EQ_INT(hr_from_bg(BG_EACCES), 0x80070005);
	CHECK_EQ_INT(hr_from_bg(BG_EDIGEST), 0x80070017);
	return check_done();
}
