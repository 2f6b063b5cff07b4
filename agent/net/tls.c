/*
 * tls.c - certificate verification by BITS security flags.
 *
 * libcurl verifies the peer with OpenSSL; we replace the whole-chain step
 * (SSL_CTX_set_cert_verify_callback) so that:
 *   - every verification error is seen and sorted into its class (host
 *     name, dates, issuer, usage, revocation), verification carrying on
 *     after each so that all faults of a chain are known;
 *   - the host name is checked here (X509_VERIFY_PARAM host or IP), not by
 *     libcurl, so that a mismatch is one more class the flags may ignore;
 *   - each ignore flag removes exactly its class, and anything left fails
 *     the handshake before a byte of the request is sent;
 *   - with CRL checking, every certificate of the chain that names a CRL
 *     distribution point is checked against its issuer's CRL (kept on
 *     disk while current, downloaded otherwise by the origin client).
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "net.h"
#include "net_int.h"

#define CLOCK_SKEW 300 /* seconds a CRL's thisUpdate may lie in the future */

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static int ctx_index = -1;

static void
ex_init(void)
{
	ex_index = X509_STORE_CTX_get_ex_new_index(0, "bgcopy tls policy", NULL, NULL, NULL);
	ctx_index = SSL_CTX_get_ex_new_index(0, "bgcopy tls policy", NULL, NULL, NULL);
}

static int
fault_bit(unsigned fault)
{
	int b = 0;

	while (fault > 1) {
		fault >>= 1;
		b++;
	}
	return b;
}

void
tls_policy_reset(struct tls_policy *p)
{
	p->faults = 0;
	p->fatal = 0;
	p->message[0] = '\0';
	p->cert_asked = false;
	for (size_t i = 0; i < sizeof(p->fault_msg) / sizeof(p->fault_msg[0]); i++)
		p->fault_msg[i][0] = '\0';
	for (size_t i = 0; i < p->nneed; i++)
		free(p->need_crl[i]);
	p->nneed = 0;
}

/* The order in which faults are reported when several are fatal: trust in
 * the issuer first, then validity, then what the certificate is for. */
static const struct {
	unsigned fault;
	uint32_t hr;
} precedence[] = {
	{TLS_FAULT_REVOKED, HR_ERROR_WINHTTP_SECURE_CERT_REVOKED},
	{TLS_FAULT_REVFAILED, HR_ERROR_WINHTTP_SECURE_CERT_REV_FAILED},
	{TLS_FAULT_CA, HR_ERROR_WINHTTP_SECURE_INVALID_CA},
	{TLS_FAULT_DATE, HR_ERROR_WINHTTP_SECURE_CERT_DATE_INVALID},
	{TLS_FAULT_USAGE, HR_ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE},
	{TLS_FAULT_CN, HR_ERROR_WINHTTP_SECURE_CERT_CN_INVALID},
	{TLS_FAULT_OTHER, HR_ERROR_WINHTTP_SECURE_FAILURE},
	{TLS_FAULT_CHECKCMD, HR_ERROR_WINHTTP_SECURE_FAILURE},
};

uint32_t
tls_policy_hr(const struct tls_policy *p)
{
	for (size_t i = 0; i < sizeof(precedence) / sizeof(precedence[0]); i++)
		if (p->fatal & precedence[i].fault)
			return precedence[i].hr;
	return HR_S_OK;
}

static unsigned
ignored_by(uint32_t flags)
{
	unsigned m = 0;

	if (flags & BG_SSL_IGNORE_CERT_CN_INVALID)
		m |= TLS_FAULT_CN;
	if (flags & BG_SSL_IGNORE_CERT_DATE_INVALID)
		m |= TLS_FAULT_DATE;
	if (flags & BG_SSL_IGNORE_UNKNOWN_CA)
		m |= TLS_FAULT_CA;
	if (flags & BG_SSL_IGNORE_CERT_WRONG_USAGE)
		m |= TLS_FAULT_USAGE;
	return m; /* revocation faults are never ignored, as BITS says */
}

static unsigned
classify(int err)
{
	switch (err) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		return TLS_FAULT_CN;
	case X509_V_ERR_CERT_NOT_YET_VALID:
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
	case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
		return TLS_FAULT_DATE;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_UNTRUSTED:
		return TLS_FAULT_CA;
	case X509_V_ERR_INVALID_PURPOSE:
	case X509_V_ERR_CERT_REJECTED:
	case X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE:
		return TLS_FAULT_USAGE;
	case X509_V_ERR_CERT_REVOKED:
		return TLS_FAULT_REVOKED;
	case X509_V_ERR_UNABLE_TO_GET_CRL:
	case X509_V_ERR_CRL_NOT_YET_VALID:
	case X509_V_ERR_CRL_HAS_EXPIRED:
	case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
	case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
	case X509_V_ERR_CRL_SIGNATURE_FAILURE:
	case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
	case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
		return TLS_FAULT_REVFAILED;
	default:
		return TLS_FAULT_OTHER;
	}
}

static void
subject_of(X509 *cert, char *buf, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p;
	long n;

	buf[0] = '\0';
	if (b == NULL || cert == NULL)
		goto out;
	X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
	n = BIO_get_mem_data(b, &p);
	snprintf(buf, len, "%.*s", (int)(n < 0 ? 0 : n), p);
out:
	BIO_free(b);
	/* A subject is the certificate issuer's text: it goes into job errors
	 * (JSON) and onto terminals. */
	text_make_safe(buf);
}

static void
time_of(const ASN1_TIME *t, char *buf, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p;
	long n;

	buf[0] = '\0';
	if (b == NULL || t == NULL || ASN1_TIME_print(b, t) != 1)
		goto out;
	n = BIO_get_mem_data(b, &p);
	snprintf(buf, len, "%.*s", (int)(n < 0 ? 0 : n), p);
out:
	BIO_free(b);
}

static void __attribute__((format(printf, 3, 4)))
add_fault(struct tls_policy *p, unsigned fault, const char *fmt, ...)
{
	char *slot = p->fault_msg[fault_bit(fault)];
	va_list ap;

	p->faults |= fault;
	if (slot[0] != '\0')
		return; /* the first occurrence of a class tells the story */
	va_start(ap, fmt);
	vsnprintf(slot, sizeof(p->fault_msg[0]), fmt, ap);
	va_end(ap);
}

/* Called by X509_verify_cert for each problem; records it and carries on,
 * so that the whole chain is examined. */
static int
record_cb(int ok, X509_STORE_CTX *ctx)
{
	struct tls_policy *p = X509_STORE_CTX_get_ex_data(ctx, ex_index);
	int err = X509_STORE_CTX_get_error(ctx);
	int depth = X509_STORE_CTX_get_error_depth(ctx);
	X509 *cert = X509_STORE_CTX_get_current_cert(ctx);
	char subj[256], t1[64], t2[64];
	unsigned fault;

	if (ok || p == NULL)
		return ok;
	fault = classify(err);
	subject_of(cert, subj, sizeof(subj));
	switch (fault) {
	case TLS_FAULT_DATE:
		time_of(X509_get0_notBefore(cert), t1, sizeof(t1));
		time_of(X509_get0_notAfter(cert), t2, sizeof(t2));
		add_fault(p, fault, "%s: notBefore=%s notAfter=%s, subject %s (depth %d)",
		          X509_verify_cert_error_string(err), t1, t2, subj, depth);
		break;
	case TLS_FAULT_CN:
		add_fault(p, fault, "certificate does not name host %s: subject %s", p->host, subj);
		break;
	default:
		add_fault(p, fault, "%s: subject %s (depth %d)", X509_verify_cert_error_string(err),
		          subj, depth);
		break;
	}
	X509_STORE_CTX_set_error(ctx, X509_V_OK);
	return 1;
}

static bool
is_ip_literal(const char *host)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

STACK_OF(OPENSSL_STRING) *
tls_cdp_uris(X509 *cert)
{
	STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);
	STACK_OF(OPENSSL_STRING) *out = NULL;

	if (dps == NULL)
		return NULL;
	for (int i = 0; i < sk_DIST_POINT_num(dps); i++) {
		DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
		GENERAL_NAMES *names;

		if (dp->distpoint == NULL || dp->distpoint->type != 0)
			continue;
		names = dp->distpoint->name.fullname;
		for (int j = 0; j < sk_GENERAL_NAME_num(names); j++) {
			GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, j);
			const unsigned char *d;
			char *uri;
			int n;

			if (gn->type != GEN_URI)
				continue;
			d = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
			n = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
			if (n <= 0 || n > URL_MAX || memchr(d, '\0', (size_t)n) != NULL)
				continue;
			if ((uri = OPENSSL_strndup((const char *)d, (size_t)n)) == NULL)
				continue;
			if (!url_scheme_ok(uri, NULL)) {
				OPENSSL_free(uri);
				continue;
			}
			if (out == NULL && (out = sk_OPENSSL_STRING_new_null()) == NULL) {
				OPENSSL_free(uri);
				continue;
			}
			if (sk_OPENSSL_STRING_push(out, uri) <= 0)
				OPENSSL_free(uri);
		}
	}
	sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	return out;
}

static void
free_string(char *s)
{
	OPENSSL_free(s);
}

void
tls_cdp_uris_free(STACK_OF(OPENSSL_STRING) *uris)
{
	sk_OPENSSL_STRING_pop_free(uris, free_string);
}

void
tls_cert_describe(X509 *cert, char *subject, size_t slen, char *not_after, size_t alen)
{
	subject_of(cert, subject, slen);
	time_of(X509_get0_notAfter(cert), not_after, alen);
}

static void
need_crl(struct tls_policy *p, const char *url)
{
	for (size_t i = 0; i < p->nneed; i++)
		if (strcmp(p->need_crl[i], url) == 0)
			return;
	if (p->nneed < TLS_MAX_CRL_URLS && (p->need_crl[p->nneed] = strdup(url)) != NULL)
		p->nneed++;
}

/* Checks one certificate against its issuer's CRL. */
static void
check_one(struct tls_policy *p, X509 *cert, X509 *issuer, STACK_OF(OPENSSL_STRING) *uris)
{
	char subj[256], isubj[256], t[64];
	X509_CRL *crl = NULL;
	const char *used = NULL;
	X509_REVOKED *rev = NULL;
	int64_t expired_at = 0;
	bool expired = false, damaged = false;

	subject_of(cert, subj, sizeof(subj));
	for (int i = 0; i < sk_OPENSSL_STRING_num(uris) && crl == NULL; i++) {
		const char *url = sk_OPENSSL_STRING_value(uris, i);
		int err = crl_lookup(p->crl_dir, url, &crl, &expired_at);

		if (err == 0)
			used = url;
		else if (err == BG_ETIMEDOUT)
			expired = true;
		else if (err == BG_ECORRUPT)
			damaged = true;
	}
	if (crl == NULL) {
		for (int i = 0; i < sk_OPENSSL_STRING_num(uris); i++)
			need_crl(p, sk_OPENSSL_STRING_value(uris, i));
		p->faults |= TLS_FAULT_NEEDCRL;
		add_fault(p, TLS_FAULT_REVFAILED, "no current CRL for %s from %s%s", subj,
		          sk_OPENSSL_STRING_value(uris, 0),
		          expired ? " (the CRL is past its nextUpdate)" : damaged ? " (damaged copy)" : "");
		return;
	}
	if (issuer == NULL) {
		add_fault(p, TLS_FAULT_REVFAILED,
		          "cannot verify the CRL of %s: its issuer is not in the chain", subj);
		goto out;
	}
	subject_of(issuer, isubj, sizeof(isubj));
	if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuer)) != 0 ||
	    X509_CRL_verify(crl, X509_get0_pubkey(issuer)) != 1) {
		add_fault(p, TLS_FAULT_REVFAILED, "CRL from %s is not signed by %s", used, isubj);
		goto out;
	}
	if (X509_cmp_time(X509_CRL_get0_lastUpdate(crl), &(time_t){time(NULL) + CLOCK_SKEW}) > 0) {
		time_of(X509_CRL_get0_lastUpdate(crl), t, sizeof(t));
		add_fault(p, TLS_FAULT_REVFAILED, "CRL from %s is not yet valid (thisUpdate=%s)", used, t);
		goto out;
	}
	/* 1: revoked; 2: listed with removeFromCRL, i.e. no longer revoked. */
	if (X509_CRL_get0_by_cert(crl, &rev, cert) == 1) {
		char serial[128] = "?";
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
		char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;

		if (hex != NULL)
			snprintf(serial, sizeof(serial), "%s", hex);
		OPENSSL_free(hex);
		BN_free(bn);
		time_of(X509_REVOKED_get0_revocationDate(rev), t, sizeof(t));
		add_fault(p, TLS_FAULT_REVOKED, "certificate revoked on %s: subject %s, serial %s (CRL %s)",
		          t, subj, serial, used);
	}
out:
	X509_CRL_free(crl);
}

static void
check_revocation(struct tls_policy *p, X509_STORE_CTX *ctx)
{
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
	int n = sk_X509_num(chain);

	if (p->crl_dir == NULL) {
		add_fault(p, TLS_FAULT_REVFAILED, "no folder to keep CRLs in");
		return;
	}
	for (int i = 0; i < n; i++) {
		X509 *cert = sk_X509_value(chain, i);
		X509 *issuer = NULL;
		STACK_OF(OPENSSL_STRING) *uris = tls_cdp_uris(cert);

		/* A certificate without a distribution point (a trust anchor, as a
		 * rule) is not revocation-checked. */
		if (uris == NULL)
			continue;
		if (i + 1 < n && X509_check_issued(sk_X509_value(chain, i + 1), cert) == X509_V_OK)
			issuer = sk_X509_value(chain, i + 1);
		else if (X509_check_issued(cert, cert) == X509_V_OK)
			issuer = cert;
		check_one(p, cert, issuer, uris);
		sk_OPENSSL_STRING_pop_free(uris, free_string);
	}
}

/* Runs the job's check command on the verified chain; true: accepted. */
static bool
run_check_cmd(struct tls_policy *p, X509_STORE_CTX *ctx)
{
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
	char why[384];
	char *input = NULL;
	size_t len = 0;
	int rc;

	if (sk_X509_num(chain) <= 0)
		chain = X509_STORE_CTX_get0_untrusted(ctx);
	if (certcheck_input(p->host, p->port, chain, &input, &len) != 0) {
		add_fault(p, TLS_FAULT_CHECKCMD, "out of memory for the certificate check command");
		return false;
	}
	rc = certcheck_run(p->check_cmd, input, len, p->check_timeout_ms, why, sizeof(why));
	free(input);
	if (rc != 0)
		add_fault(p, TLS_FAULT_CHECKCMD, "%s: %s", p->host, why);
	return rc == 0;
}

static int
cert_verify_cb(X509_STORE_CTX *ctx, void *arg)
{
	struct tls_policy *p = arg;
	X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
	int ok;

	pthread_once(&ex_once, ex_init);
	if (ex_index < 0 || !X509_STORE_CTX_set_ex_data(ctx, ex_index, p))
		return 0;
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (is_ip_literal(p->host))
		ok = X509_VERIFY_PARAM_set1_ip_asc(vp, p->host);
	else
		ok = X509_VERIFY_PARAM_set1_host(vp, p->host, 0);
	if (ok != 1)
		return 0;
	X509_STORE_CTX_set_verify_cb(ctx, record_cb);
	ok = X509_verify_cert(ctx);
	if (ok <= 0 && p->faults == 0)
		add_fault(p, TLS_FAULT_OTHER, "certificate verification failed: %s",
		          X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	if (p->flags & BG_SSL_ENABLE_CRL_CHECK)
		check_revocation(p, ctx);

	p->fatal = p->faults & ~ignored_by(p->flags) & ~(unsigned)TLS_FAULT_NEEDCRL;
	if (p->faults & TLS_FAULT_NEEDCRL) {
		/* Undecided until the origin client has fetched the CRLs: fail
		 * this handshake, it will be tried again. */
		snprintf(p->message, sizeof(p->message), "%s",
		         p->fault_msg[fault_bit(TLS_FAULT_REVFAILED)]);
		X509_STORE_CTX_set_error(ctx, X509_V_ERR_UNABLE_TO_GET_CRL);
		return 0;
	}
	if (p->fatal != 0) {
		for (size_t i = 0; i < sizeof(precedence) / sizeof(precedence[0]); i++) {
			if (p->fatal & precedence[i].fault) {
				snprintf(p->message, sizeof(p->message), "%s",
				         p->fault_msg[fault_bit(precedence[i].fault)]);
				break;
			}
		}
		X509_STORE_CTX_set_error(ctx, X509_V_ERR_CERT_REJECTED);
		return 0;
	}
	/* BITS calls the job's validation callback only once the system's
	 * checks passed; so does the check command. */
	if (p->check_cmd != NULL && !run_check_cmd(p, ctx)) {
		p->fatal |= TLS_FAULT_CHECKCMD;
		snprintf(p->message, sizeof(p->message), "%s",
		         p->fault_msg[fault_bit(TLS_FAULT_CHECKCMD)]);
		X509_STORE_CTX_set_error(ctx, X509_V_ERR_CERT_REJECTED);
		return 0;
	}
	/* libcurl reads the result back after the handshake. */
	X509_STORE_CTX_set_error(ctx, X509_V_OK);
	return 1;
}

/* Called by OpenSSL when the server asks for a client certificate and
 * none is set: noted, so that the server's refusal can be told for what it
 * is (ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED). */
static int
client_cert_cb(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
	struct tls_policy *p = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index);

	(void)x509;
	(void)pkey;
	if (p != NULL)
		p->cert_asked = true;
	return 0; /* no certificate: the handshake goes on without one */
}

CURLcode
tls_ssl_ctx_cb(CURL *curl, void *ssl_ctx, void *policy)
{
	(void)curl;
	SSL_CTX_set_cert_verify_callback(ssl_ctx, cert_verify_cb, policy);
	pthread_once(&ex_once, ex_init);
	if (ctx_index >= 0 && SSL_CTX_set_ex_data(ssl_ctx, ctx_index, policy) == 1)
		SSL_CTX_set_client_cert_cb(ssl_ctx, client_cert_cb);
	return CURLE_OK;
}
