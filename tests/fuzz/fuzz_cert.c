/*
 * fuzz_cert.c - certificates as the TLS policy reads them (agent/tls.c):
 * the CRL distribution points of every certificate of a chain (the URLs
 * bgcopy then downloads CRLs from) and the subject and expiry quoted in
 * job errors.  The chain comes from the origin, so every byte is hostile.
 *
 * Input: a certificate, DER or PEM.
 * Properties: every distribution point taken is an http or https URL of at
 * most URL_MAX bytes without NUL; the subject and the date are valid UTF-8
 * without control characters (they go into JSON and onto terminals).
 */
#include <string.h>
#include <strings.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "net_int.h"
#include "fuzz.h"

static void
check_text(const char *s)
{
	json_t *j = json_string(s);

	/* json_string() refuses anything but valid UTF-8. */
	FUZZ_ASSERT(j != NULL);
	json_decref(j);
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		FUZZ_ASSERT(*p >= 0x20 && *p != 0x7F);
}

static void
check_cert(X509 *cert)
{
	STACK_OF(OPENSSL_STRING) *uris = tls_cdp_uris(cert);
	char subject[256], not_after[64];

	for (int i = 0; i < sk_OPENSSL_STRING_num(uris); i++) {
		const char *u = sk_OPENSSL_STRING_value(uris, i);

		FUZZ_ASSERT(strncasecmp(u, "http:", 5) == 0 || strncasecmp(u, "https:", 6) == 0);
		FUZZ_ASSERT(strlen(u) <= URL_MAX);
	}
	tls_cdp_uris_free(uris);
	tls_cert_describe(cert, subject, sizeof(subject), not_after, sizeof(not_after));
	check_text(subject);
	check_text(not_after);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char *p = data;
	X509 *cert = d2i_X509(NULL, &p, (long)size);
	BIO *b;

	if (cert != NULL) {
		check_cert(cert);
		X509_free(cert);
	}
	if ((b = BIO_new_mem_buf(data, (int)size)) != NULL) {
		if ((cert = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
			check_cert(cert);
			X509_free(cert);
		}
		BIO_free(b);
	}
	return 0;
}
