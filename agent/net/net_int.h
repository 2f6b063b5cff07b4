/*
 * net_int.h - internals shared by the files of agent/net (and their unit
 * tests and fuzzers): TLS verification, kept CRLs, the body feed.
 */
#ifndef BG_NET_INT_H
#define BG_NET_INT_H

#include <openssl/x509.h>

#include "net.h"

/* ---- TLS verification by BITS flags (tls.c) ----------------------------
 * One struct tls_policy lives as long as the connection pool it belongs to
 * (libcurl keeps SSL_CTXs per connection and calls back into them on later
 * handshakes).  Before each transfer the origin client sets the host and
 * resets the verdict; the certificate callback fills the verdict. */
enum tls_fault {
	TLS_FAULT_CN = 0x01,
	TLS_FAULT_DATE = 0x02,
	TLS_FAULT_CA = 0x04,
	TLS_FAULT_USAGE = 0x08,
	TLS_FAULT_REVOKED = 0x10,
	TLS_FAULT_REVFAILED = 0x20,
	TLS_FAULT_OTHER = 0x40,
	TLS_FAULT_NEEDCRL = 0x80, /* a CRL must be downloaded before deciding */
	TLS_FAULT_CHECKCMD = 0x100, /* the job's certificate check command said no */
};
#define TLS_MAX_CRL_URLS 8 /* CRLs one handshake may ask to download */

struct tls_policy {
	uint32_t flags;        /* the job's security flags */
	const char *crl_dir;   /* where CRLs are kept, or NULL */
	char host[256];        /* host name or IP literal the certificate must name */
	unsigned faults;       /* TLS_FAULT_* seen in the last handshake */
	unsigned fatal;        /* faults the flags do not ignore */
	char message[512];     /* the reason for the most important fatal fault */
	char fault_msg[9][384]; /* first message per fault class (index: bit number) */
	char *need_crl[TLS_MAX_CRL_URLS]; /* CRL URLs to download (owned) */
	size_t nneed;
	/* The job's certificate check command (program and arguments), run
	 * once per full handshake after the flags' checks passed, or NULL. */
	const char *const *check_cmd;
	unsigned check_timeout_ms;
	unsigned port;         /* the server's port, for the command's input */
	/* The server asked for a client certificate and none was set. */
	bool cert_asked;
};

/* The http and https URIs of a certificate's CRL distribution points (at
 * most URL_MAX bytes, no NUL), or NULL; free with tls_cdp_uris_free(). */
STACK_OF(OPENSSL_STRING) *tls_cdp_uris(X509 *cert);
void tls_cdp_uris_free(STACK_OF(OPENSSL_STRING) *uris);
/* The subject (RFC 2253) and notAfter of a certificate as they appear in
 * job errors: UTF-8 without control characters. */
void tls_cert_describe(X509 *cert, char *subject, size_t slen, char *not_after, size_t alen);
/* Installs the policy on an SSL_CTX (a CURLOPT_SSL_CTX_FUNCTION). */
CURLcode tls_ssl_ctx_cb(CURL *curl, void *ssl_ctx, void *policy);
/* ---- Certificate check command (certcheck.c) ----------------------------
 * The command reads, on its standard input, one line "host HOST PORT" and
 * then the server's chain in PEM, leaf first (the chain as verified, up to
 * the trust anchor when there is one).  Exit status 0 accepts; any other
 * status, a signal, or no answer within the bound rejects. */
#define CERTCHECK_TIMEOUT_MS 30000 /* a command still running then is killed */
/* The bound: CERTCHECK_TIMEOUT_MS, or less from BGCOPY_CERT_CHECK_TIMEOUT_MS
 * (milliseconds; for tests). */
unsigned certcheck_timeout_ms(void);
/* The command's input, as a new NUL-terminated string (*out, caller frees)
 * of *outlen bytes.  BG_ENOMEM. */
int certcheck_input(const char *host, unsigned port, STACK_OF(X509) *chain, char **out,
                    size_t *outlen) BG_WUR;
/* Runs argv (no shell, PATH searched) in a process group of its own with
 * input on its standard input and its standard output to /dev/null; after
 * timeout_ms the group gets SIGKILL.  0: accepted; 1: rejected, why says
 * how. */
int certcheck_run(const char *const *argv, const char *input, size_t len, unsigned timeout_ms,
                  char *why, size_t whylen) BG_WUR;

/* Clears the verdict before a handshake. */
void tls_policy_reset(struct tls_policy *p);
/* The HRESULT for the policy's fatal faults (HR_S_OK when none). */
uint32_t tls_policy_hr(const struct tls_policy *p);


/* ---- CRLs (crl.c) ------------------------------------------------------
 * CRLs are kept in a folder (HOME/crl): NAME.crl (DER) and NAME.json (url,
 * fetched, this_update, next_update, issuer, bytes), NAME = SHA-256 of the
 * URL in hex.  A kept CRL is used while it is current (before nextUpdate;
 * without nextUpdate, CRL_TTL_NO_NEXT_UPDATE after it was fetched). */
#define CRL_MAX_BYTES (256LL * 1024 * 1024) /* largest CRL downloaded */
#define CRL_FETCH_TIMEOUT 120              /* seconds for one download */
#define CRL_CONNECT_TIMEOUT 15             /* seconds */
#define CRL_MAX_REDIRS 3
#define CRL_TTL_NO_NEXT_UPDATE (24 * 3600) /* seconds */

/* Returns (new reference, X509_CRL_free it) the current CRL kept for url.
 * BG_ENOENT when none is kept, BG_ETIMEDOUT when the kept one is past its
 * nextUpdate (*expired_at gets its nextUpdate, unix seconds, may be NULL),
 * BG_ECORRUPT when the files are damaged. */
int crl_lookup(const char *dir, const char *url, X509_CRL **out, int64_t *expired_at) BG_WUR;



/* The body of an origin's or a peer's response, on its way into a sink:
 * sink_feed_start hands the sink the accepted headers, then libcurl's
 * write callback is sink_feed_write with the feed as its data. */
struct sink_feed {
	const struct origin_sink *sink;
	bool started;   /* on_start took the response: the body goes to on_data */
	bool discard;   /* the body of a challenge libcurl answers: thrown away */
	int err;        /* why the sink stopped the transfer, else 0 */
	uint64_t bytes; /* body bytes on_data took */
};
/* Calls the sink's on_start: 0, or its error (kept in f->err too). */
int sink_feed_start(struct sink_feed *f, const struct origin_response *resp) BG_WUR;
/* A CURLOPT_WRITEFUNCTION (data: a struct sink_feed).  Stops the transfer
 * (returns 0) before the sink was started and when on_data fails. */
size_t sink_feed_write(char *p, size_t size, size_t nmemb, void *feed);

/* ---- The peer protocol's requests (peer.c) ------------------------------ */
/* Sets up e for METHOD PATH?url=KEY at peer ("host:port"): signed with the
 * key when there is one (the signature's value goes to request_auth), the
 * "Name: value" lines of extra (NULL-terminated, or NULL) added, the peer
 * timeouts, no proxy.  *headers receives the list to free after the
 * transfer. */
int peer_prepare(CURL *e, const struct peer_config *pc, const char *peer, const char *path,
                 const char *key, const char *method, const char *const *extra,
                 struct curl_slist **headers, char request_auth[PEER_AUTH_VALUE_MAX]) BG_WUR;
/* The same, signed with time t instead of now. */
int peer_prepare_at(CURL *e, const struct peer_config *pc, const char *peer, const char *path,
                    const char *key, const char *method, const char *const *extra,
                    struct curl_slist **headers, char request_auth[PEER_AUTH_VALUE_MAX],
                    int64_t t) BG_WUR;

#endif /* BG_NET_INT_H */
