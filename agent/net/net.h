/*
 * net.h - the agent's network side: URLs, HTTP field parsing, the origin
 * client (libcurl; redirects and TLS checked by the BITS flags), the CRL
 * cache and the peer client.  It knows nothing of jobs or of the store: it
 * fetches what it is asked into a sink and says how that went (an HRESULT
 * and a message).  Builds on bits.h and the core (cache.h).
 */
#ifndef BG_NET_H
#define BG_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "bits.h"

/* ---- Limits ------------------------------------------------------------ */
#define ORIGIN_MAX_HOPS 10                 /* redirects followed per request chain */
#define ORIGIN_HEADER_MAX (256 * 1024)     /* bytes of response headers per response */
#define ORIGIN_CONNECT_TIMEOUT 30          /* seconds */
#define ORIGIN_LOW_SPEED_TIME 60           /* seconds below 1 byte/s before a transfer is transient-failed */
#define ORIGIN_MAX_RESTARTS 3              /* validator changes tolerated in one attempt */
#define ORIGIN_AUTH_ROUNDS 4               /* 401/407 challenges answered per request */
#define ORIGIN_NOTE_MAX 128                /* bytes of a reason phrase, Via or proxy marker kept for a message */

/* ---- URLs (libcurl's URL API) ------------------------------------------ */
#define URL_MAX STORE_URL_MAX

/* Parses an absolute http or https URL given by a user and writes its
 * canonical form (as libcurl prints it, fragment and default port dropped)
 * as a new string into *out (caller frees).  BG_EINVAL for a malformed URL,
 * BG_ENOTIMPL for another scheme, BG_ELIMIT for one longer than URL_MAX. */
int url_canonical(const char *in, char **out) BG_WUR;
/* Resolves a Location header value against base (absolute or relative, as
 * RFC 3986), dropping any fragment and user:password.  *out (caller frees)
 * may have any scheme: callers check it with url_scheme_ok().
 * BG_EINVAL when it cannot be parsed. */
int url_resolve(const char *base, const char *location, char **out) BG_WUR;
/* Writes the host of url (brackets of an IPv6 literal removed) into buf.
 * BG_EINVAL when it has none, BG_ELIMIT when it does not fit. */
int url_host(const char *url, char *buf, size_t len) BG_WUR;
/* Whether the URL's scheme is http or https; *https tells which. */
bool url_scheme_ok(const char *url, bool *https);
/* Checks a proxy given to set-proxy: SCHEME://[USER[:PASSWORD]@]HOST[:PORT][/]
 * with a scheme libcurl proxies through (http, https, socks4, socks4a,
 * socks5, socks5h).  0, or BG_EINVAL with the reason in why. */
int url_proxy_check(const char *proxy, char *why, size_t len) BG_WUR;
/* Whether a and b have the same scheme, host and port (the "host" that
 * credentials were set for). */
bool url_same_origin(const char *a, const char *b);
/* Writes "host:port" of url into buf (the scheme's default port when it
 * names none; an IPv6 literal in brackets).  BG_EINVAL for a malformed URL,
 * BG_ELIMIT when it does not fit. */
int url_authority(const char *url, char *buf, size_t len) BG_WUR;
/* The same for a proxy URL (any scheme url_proxy_check takes; 1080, as
 * libcurl, when it names no port). */
int url_proxy_address(const char *proxy, char *buf, size_t len) BG_WUR;
/* The proxy URL as users may see it: a password is shown as "***"
 * (http://user:***@host:3128), the rest as set.  *out is a new string
 * (caller frees).  BG_ENOMEM. */
int url_proxy_redacted(const char *proxy, char **out) BG_WUR;

/* ---- Origin client ----------------------------------------------------- */
struct origin;

struct origin_response {
	long status;            /* 200 or 206 */
	const char *final_url;  /* URL that answered (after redirects) */
	uint64_t start;         /* first byte of the body: the offset asked, or 0 on a restart */
	int64_t total;          /* size of the whole file, -1 when unknown */
	const char *etag;       /* NULL when absent */
	const char *last_modified;
	const char *date;       /* the response's Date, NULL when absent */
	bool has_digest;        /* the origin said what the whole file's SHA-256 is */
	unsigned char digest[BG_SHA256_LEN]; /* (Repr-Digest, or Content-Digest of a 200; RFC 9530) */
};

/* The receiver of one fetch.  Return 0 to go on, a BG_E* code to stop the
 * transfer (the code comes back as origin_result.local_err). */
struct origin_sink {
	int (*on_start)(void *arg, const struct origin_response *resp);
	int (*on_data)(void *arg, const void *p, size_t len);
	void *arg;
};

/* Authentication schemes offered to one target, ORed (libcurl picks the
 * strongest the server or proxy asks for among them). */
enum origin_auth_scheme {
	ORIGIN_AUTH_BASIC = 1u << 0,     /* RFC 7617 */
	ORIGIN_AUTH_DIGEST = 1u << 1,    /* RFC 7616 */
	ORIGIN_AUTH_NTLM = 1u << 2,
	ORIGIN_AUTH_NEGOTIATE = 1u << 3, /* RFC 4559 */
};
struct origin_auth {
	const char *user;     /* NULL: no credentials for this target */
	const char *password; /* NULL: empty */
	unsigned schemes;     /* ORIGIN_AUTH_*, 0: basic */
};

struct origin_request {
	const char *url;            /* where the chain starts (the file's remote URL) */
	uint32_t security_flags;
	const char *ca_file;        /* trust anchors, or NULL for the system store */
	const char *const *headers; /* custom "Name: value" lines, NULL-terminated, or NULL */
	const char *headers_for;    /* URL whose origin the sensitive headers were set for */
	uint64_t offset;            /* resume from this byte; 0 for the whole file */
	const char *if_range;       /* validator for If-Range; NULL sends no Range at all */
	/* A conditional request for a copy held (RFC 9110 13.1.2, 13.1.3): a
	 * 304 then ends it with result.not_modified and no body.  NULL: not sent. */
	const char *if_none_match;
	const char *if_modified_since;
	const char *crl_dir;        /* where CRLs are kept (for 0x0001), or NULL */
	const char *proxy;          /* proxy URL, "none", or NULL for libcurl's default */
	bool head;                  /* HEAD: the sink's on_start only (validators, size) */
	/* Credentials: the server's go only to the origin of headers_for (a
	 * redirect elsewhere drops them), the proxy's only to the proxy. */
	struct origin_auth server_auth, proxy_auth;
	const char *method;         /* request method, NULL: GET (HEAD with head) */
	unsigned stall_seconds;     /* without a byte before the transfer fails (transient);
	                             * 0: ORIGIN_LOW_SPEED_TIME */
	volatile const int *stop;   /* non-zero: abort now, even while the origin is silent;
	                             * the result's local_err is then BG_ECANCELED (or NULL) */
	int64_t deadline_ms;        /* bg_mono_ms() at which to abort as stop does; 0: none */
	/* The job's client certificate: a PEM file (with the key unless
	 * client_key names one) or a "pkcs11:" URI; NULL: none.  Presented to
	 * the scheme, host and port of headers_for only, never to a proxy. */
	const char *client_cert;
	const char *client_key;     /* PEM private key file, or NULL */
	/* Program and arguments (NULL-terminated) that must accept each new
	 * TLS session's server certificate (net_int.h), or NULL. */
	const char *const *cert_check_cmd;
};

struct origin_result {
	uint32_t hr;           /* HR_S_OK or the job error */
	int local_err;         /* a sink's BG_E* code when the sink stopped the transfer */
	long status;           /* last HTTP status seen */
	char *remote_url;      /* URL the file's remote name becomes (caller frees), or NULL */
	char *final_url;       /* URL that answered last (caller frees), or NULL */
	bool not_modified;     /* 304 to a conditional request: the copy held is current */
	char *etag;            /* with not_modified: the 304's validators and Date */
	char *last_modified;   /* (RFC 9110 15.4.5; caller frees), or NULL */
	char *date;
	char message[512];     /* what happened, for the job error */
};

/* Creates a client.  One per thread. */
int origin_new(struct origin **out) BG_WUR;
void origin_free(struct origin *o);
/* Fetches req->url, following redirects by the job's policy, and feeds the
 * final response to sink.  Returns 0 when the request ran (res->hr tells
 * the outcome), or a BG_E* code when it could not be attempted.
 * res->remote_url is set under DISALLOW: the redirect target, which the
 * file's remote name becomes.  (Under ALLOW_REPORT the caller takes the
 * URL that answered from the response its sink's on_start receives.)  Free res with origin_result_clear(). */
int origin_fetch(struct origin *o, const struct origin_request *req,
                 const struct origin_sink *sink, struct origin_result *res) BG_WUR;
void origin_result_clear(struct origin_result *res);

/* ---- Client certificates (certcheck.c) --------------------------------- */
/* Whether a client certificate setting is a PKCS#11 URI ("pkcs11:..."). */
bool client_cert_is_pkcs11(const char *cert);
/* Checks a PEM private key file before use: a regular file that only its
 * owner may access (as ssh demands) and that can be read.  0, or BG_EUNSAFE
 * (group or others have any access), BG_EINVAL (not a regular file) or an
 * errno-based error, with one line in why. */
int client_key_check(const char *path, char *why, size_t len) BG_WUR;
/* Reads the first certificate of a PEM file: its subject (RFC 2253) and
 * notAfter as tls_cert_describe writes them.  0, or an error with one line
 * in why. */
int client_cert_load(const char *path, char *subject, size_t slen, char *not_after, size_t alen,
                     char *why, size_t len) BG_WUR;
/* Checks a PEM certificate file and its key (key NULL: in the same file)
 * before they are set: client_key_check, a certificate, an unencrypted
 * private key, and that the two belong together.  0, or an error (BG_EUNSAFE
 * for a key others may read, BG_EINVAL for the rest) with one line in why. */
int client_cert_check(const char *cert, const char *key, char *why, size_t len) BG_WUR;


/* ---- CRL cache (crl.c) ------------------------------------------------ */
/* Calls fn for each CRL kept in dir with its record (url, fetched,
 * this_update, next_update, issuer, bytes, current); damaged records are
 * skipped. */
int crl_each(const char *dir, int (*fn)(json_t *info, void *arg), void *arg) BG_WUR;
/* Downloads the CRL at url (http or https, CRL_MAX_REDIRS redirects, size
 * and time limits) and keeps it in dir.  The CRL's signature is checked
 * when it is used, against the issuer of the certificate it covers.
 * ca_file: trust anchors for an https URL (NULL: system store).  On error
 * a reason is written into err. */
int crl_fetch(const char *dir, const char *url, const char *ca_file, char *err, size_t errlen) BG_WUR;
/* Deletes every CRL kept in dir; *removed (may be NULL) gets how many. */
int crl_clear(const char *dir, unsigned *removed) BG_WUR;


/* ---- HTTP response lines (http.c) ------------------------------------- */
/* The status of a status line ("HTTP/1.1 200 OK"), or -1 for another line. */
long http_status_line(const char *line, size_t n);
/* Splits "Name: value\r\n" (not NUL-terminated) at its colon. */
bool http_header_split(const char *line, size_t n, const char **name, size_t *namelen,
                       const char **value, size_t *valuelen);
bool http_header_is(const char *name, size_t namelen, const char *want);
/* Moves *p and *n past the blanks around a header value (leading SP and
 * HTAB, trailing white space with the line's CRLF). */
void http_value_trim(const char **p, size_t *n);
/* The value without surrounding blanks, as a new string; NULL when longer
 * than max bytes (or out of memory). */
char *http_value_dup(const char *p, size_t n, size_t max);
/* A decimal header value (Content-Length): blanks around it allowed, cut
 * at a NUL, at most HTTP_U64_CHARS_MAX characters (leading zeros count). */
#define HTTP_U64_CHARS_MAX 32
bool http_value_u64(const char *p, size_t n, uint64_t *out);
/* A Content-Range value (RFC 9110 section 14.4), blanks already removed
 * (http_value_dup).  A 416's must be the unsatisfied-range form: "bytes",
 * SP, "*", "/", TOTAL (first and last are then 0).  Any other status's must
 * be the range-resp form: "bytes FIRST-LAST/TOTAL", or "*" for TOTAL (total
 * -1).  The unit in any case (section 14.1), one SP after it, digits only,
 * no overflow, FIRST <= LAST < TOTAL <= INT64_MAX.  0, or BG_EPROTO (*out
 * unspecified). */
struct http_content_range {
	uint64_t first, last;
	int64_t total;
};
int http_content_range(const char *p, size_t n, long status,
                       struct http_content_range *out) BG_WUR;
/* The sha-256 member of a Repr-Digest or Content-Digest value (RFC 9530:
 * an RFC 8941 dictionary such as "sha-256=:BASE64:, sha-512=:...:") into
 * out.  False when the field has none or does not parse; out is then
 * unspecified. */
bool http_digest_sha256(const char *p, size_t n, unsigned char out[BG_SHA256_LEN]);
/* RFC 9110 section 8.8.2.2: a Last-Modified is a strong validator only
 * when the response that gave it had a Date at least
 * HTTP_STRONG_DATE_SECONDS later (a second write within the same second
 * would otherwise share the date).  False when either is absent or does
 * not parse. */
#define HTTP_STRONG_DATE_SECONDS 60
bool http_date_strong(const char *last_modified, const char *date);
/* Copies the reason phrase of a status line ("Forbidden" of "HTTP/1.1 403
 * Forbidden\r\n", not NUL-terminated) into buf, cut to len - 1 bytes and
 * made safe for documents (text_make_safe); "" when it has none. */
void http_status_reason(const char *line, size_t n, char *buf, size_t len);
/* The reason phrase RFC 9110 gives a status, or "" (static). */
const char *http_reason(long status);
/* Replaces, in place, control characters and bytes that are not valid UTF-8
 * with '?': text a server chose (a certificate's subject, say) can then go
 * into JSON documents and onto terminals. */
void text_make_safe(char *s);


/* ---- Peers behind a DNS name (dnspeers.c) ------------------------------ */
#define DNS_PEERS_TIMEOUT_MS 2000 /* the address lookup; the SRV one: 1 s per try, 2 tries */
struct dns_peer {
	char addr[46];  /* numeric (INET6_ADDRSTRLEN) */
	unsigned port;
};
/* Every A and AAAA of name (at most max, duplicates dropped), each on the
 * port of the SRV record _bgcopy._tcp.NAME, else PEER_PORT_DEFAULT.  0 and
 * *n > 0; BG_ENOENT (no such name, no address), BG_ETIMEDOUT, BG_EIO with
 * a one-line why.  Bounded by timeout_ms plus the SRV query's bound.  A
 * lookup glibc cannot cancel is kept (never freed while glibc may still
 * write it) and freed by a later call once done; while 8 such are still
 * running, BG_ETIMEDOUT at once.  Thread-safe. */
int dns_peers_resolve(const char *name, unsigned timeout_ms, struct dns_peer *out, size_t max,
                      size_t *n, char *why, size_t whylen) BG_WUR;

/* ---- Peer client (peer.c) ---------------------------------------------- */
#define PEER_CONNECT_TIMEOUT 3 /* seconds */
#define PEER_LOOKUP_TIMEOUT 5  /* seconds for a HEAD */
#define PEER_STALL_TIMEOUT 5   /* seconds below PEER_MIN_SPEED before a peer is dropped */
/* Bytes/s a peer must keep up (libcurl's low-speed check, over PEER_STALL_TIMEOUT).
 * Not 1: a peer that trickles a few bytes a second is never "stalled" and would hold
 * the file for hours; a LAN peer slower than this is no better than the origin. */
#define PEER_MIN_SPEED (16 * 1024)

struct peer_config {
	unsigned char key[PEER_KEY_MAX]; /* HMAC key (--peer-key), keylen 0: none */
	size_t keylen;
};

/* What a peer says it has under a key (its HEAD answer). */
struct peer_entry {
	uint64_t size;
	unsigned char sha256[BG_SHA256_LEN];
	bool has_sha;
	char *origin_etag;   /* the origin's ETag it was stored with, or NULL (owned) */
	char *last_modified; /* the origin's Last-Modified, or NULL (owned) */
};
void peer_entry_clear(struct peer_entry *e);

/* HEAD /v1/content?url=key at peer (on share sh).  0 and *out filled on a hit; BG_ENOENT
 * on a miss; BG_EIO / BG_EPROTO when the peer failed (why says how). */
int peer_lookup(CURLSH *sh, const struct peer_config *pc, const char *peer, const char *key,
                struct peer_entry *out, char *why, size_t whylen) BG_WUR;
/* GETs the entry from offset into sink (on_start, then on_data).  Refuses
 * an answer that is not the entry `want` (digest, size, range).  0 when the
 * body was complete; a sink's error comes back in *sink_err. */
int peer_fetch(CURLSH *sh, const struct peer_config *pc, const char *peer, const char *key,
               const struct peer_entry *want, uint64_t offset, const struct origin_sink *sink,
               int *sink_err, char *why, size_t whylen) BG_WUR;
/* One GET of bytes first..last of a complete entry (Range), to run in a
 * curl multi handle (peer_range_easy) with others.  The answer is checked
 * as peer_fetch checks it (same content SHA-256, signed with a key, a 206
 * whose Content-Range is exactly the span); the body goes into buf
 * (last - first + 1 bytes).  peer_range_done maps the transfer's end: 0
 * when the whole span came, BG_EPROTO when the answer was not the span of
 * the entry, BG_EIO when it broke off (why says how).  peer_range_free
 * removes the handle from m (may be NULL) first.  t: the time the request
 * is signed with (0: now).  A peer accepts a signature once (its replay
 * set) and the signature covers method, path, key and t, not the range:
 * many ranges of one entry at one peer need distinct times (within
 * PEER_AUTH_WINDOW of the peer's clock). */
struct peer_range;
int peer_range_new(CURLSH *sh, const struct peer_config *pc, const char *peer, const char *key,
                   const struct peer_entry *want, uint64_t first, uint64_t last,
                   unsigned char *buf, int64_t t, struct peer_range **out) BG_WUR;
CURL *peer_range_easy(struct peer_range *r);
int peer_range_done(struct peer_range *r, CURLcode rc, char *why, size_t whylen) BG_WUR;
void peer_range_free(struct peer_range *r, CURLM *m);
/* GET /v1/pieces?url=key&from=from at peer: the digests of pieces from ..
 * from + *count - 1 of the entry (PEER_PIECES_MAX at most per answer),
 * *digests (caller frees; *count x BG_SHA256_LEN bytes), the total of
 * pieces known there in *known, whether the list is the final one in
 * *final and the content SHA-256 the list belongs to (the ETag) in sha.
 * With a key the answer must be signed over its ETag, X-Bgcopy-Pieces and
 * the SHA-256 of the body.  BG_ENOENT: no list (404, "none" included);
 * BG_EPROTO / BG_EIO: the peer failed (why says how).  partial: NULL for
 * complete content only; else the ETag of a download in progress there
 * (/v1/partial's, "partial-GEN") whose list is also taken (sha is then
 * all zeros). */
int peer_pieces_get(CURLSH *sh, const struct peer_config *pc, const char *peer, const char *key,
                    uint64_t from, const char *partial, unsigned char **digests,
                    uint64_t *count, uint64_t *known,
                    bool *final, unsigned char sha[BG_SHA256_LEN], char *why,
                    size_t whylen) BG_WUR;

/* ---- Downloads in progress at peers (peerpart.c) --------------------------
 * The fleet's side of the peer protocol (peerd/README.md): what a peer has
 * of a URL while it is still arriving there (/v1/partial), taken as it
 * grows.  Every answer is checked as /v1/content's are: with a key it must
 * carry X-Bgcopy-Signed for our request and exactly the fields it shows. */
#define PEER_POLL_CONNECT_MS 500 /* a LAN peer that has not accepted by then is gone */
#define PEER_POLL_MAX 64         /* peers one poll asks */
struct peer_partial {
	long status;                 /* of the answer: 200, 206 or 416 */
	int state;                   /* enum store_inflight_state; -1: stalled (writer gone) */
	bool final;                  /* the whole content, checked by its SHA-256 */
	uint64_t available;          /* bytes the peer has from 0 */
	int64_t total;               /* the origin's size, -1 unknown */
	uint64_t gen;                /* incarnation (not final), else 0 */
	bool has_sha;                /* final: sha256 is the content's */
	unsigned char sha256[BG_SHA256_LEN];
	char node[BG_NODE_ID_LEN + 1]; /* the peer's node id, "" unknown */
	struct store_fetch_policy fetch; /* known false when it sent none */
	uint64_t piece_size;         /* STORE_PIECE_BYTES for peers of this format */
	uint64_t first;              /* 206: the body's first byte */
	uint64_t last;               /* 206: its last byte */
	char *etag;                  /* as sent, for If-Match (owned) */
	char *origin_etag, *last_modified, *origin_date, *final_url; /* owned, or NULL */
};
void peer_partial_clear(struct peer_partial *p);
/* One answer of a poll. */
struct peer_poll {
	int err;                     /* 0: p describes an entry; BG_ENOENT: the peer has none
	                              * (or does not speak the protocol); other: it failed */
	char why[120];
	struct peer_partial p;
	int64_t ms;                  /* how long the answer took */
};
/* HEAD /v1/partial?url=key at every one of peers[0..n) at once (n at most
 * PEER_POLL_MAX), each within timeout_ms; out[i] for peers[i] (clear each
 * with peer_partial_clear(&out[i].p)). */
int peer_partial_poll(CURLSH *sh, const struct peer_config *pc, const char *const *peers,
                      size_t n, const char *key, unsigned timeout_ms,
                      struct peer_poll *out) BG_WUR;
/* GET /v1/partial?url=key at peer from byte offset (to the end it has):
 * If-Match the incarnation `want` describes (want->etag), waiting in the
 * peer up to wait_ms for at least min bytes past offset.  The body goes to
 * sink (on_start with status 206, start offset, total when known, the
 * origin's validators as the peer describes them).  *got receives the
 * answer's description (clear it).  0: answered (a 416 means nothing new
 * within the wait; got->available says where the peer is); BG_EAGAIN: the
 * incarnation changed (412) or the entry is another one (ETag); BG_ENOENT:
 * gone; BG_EBUSY: 503 (too many waiting, try again in a second); BG_EIO /
 * BG_EPROTO: the peer failed; a sink's error in *sink_err. */
int peer_partial_get(CURLSH *sh, const struct peer_config *pc, const char *peer,
                     const char *key, const struct peer_partial *want, uint64_t offset,
                     unsigned wait_ms, uint64_t min, const struct origin_sink *sink,
                     int *sink_err, struct peer_partial *got, char *why, size_t whylen) BG_WUR;

/* The connections an origin client keeps for talking to peers (a share:
 * each request gets an easy handle of its own, see origin.c), or NULL. */
CURLSH *origin_peer_share(struct origin *o);
/* A fresh easy handle on share sh (connections, TLS sessions, DNS), or
 * NULL.  libcurl 7.88 reads freed memory when a reused handle meets a
 * folded header line first in a response (curl PR #11103, fixed in 8.1.0):
 * handles are therefore never reused, only the share is. */
CURL *origin_easy_on(CURLSH *sh);
/* A share of connections, TLS sessions and DNS for one thread, or NULL. */
CURLSH *origin_share_new(void);

#endif /* BG_NET_H */
