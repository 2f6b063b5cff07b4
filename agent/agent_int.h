/* agent_int.h - internals shared by the agent's source files. */
#ifndef BG_AGENT_INT_H
#define BG_AGENT_INT_H

#include <curl/curl.h>
#include <openssl/x509.h>

#include "agent.h"

/* JSON record access.  Getters return NULL/def when the field is absent or
 * has another type; setters return 0 or BG_ENOMEM. */
const char *jstr(const json_t *o, const char *key);
int64_t jint(const json_t *o, const char *key, int64_t def);
bool jbool(const json_t *o, const char *key);
int jset(json_t *o, const char *key, json_t *v); /* steals v */
int jset_str(json_t *o, const char *key, const char *s);
int jset_int(json_t *o, const char *key, int64_t v);

/* Name tables indexed by an enum: the name of i (def when out of range),
 * and the index of s (-1 when none; any_case: compared ignoring case). */
#define NAMES_COUNT(a) (sizeof(a) / sizeof((a)[0]))
const char *name_at(const char *const *names, size_t n, unsigned i, const char *def);
int name_find(const char *const *names, size_t n, const char *s, bool any_case);
/* Defines PREFIX_name(enum PREFIX) and PREFIX_parse(s, enum PREFIX *) over
 * the table names (BG_EINVAL for a name not in it). */
#define NAME_TABLE_FUNCS(prefix, names, def, any_case)                                   \
	const char *prefix##_name(enum prefix v)                                          \
	{                                                                                \
		return name_at(names, NAMES_COUNT(names), (unsigned)v, def);              \
	}                                                                                \
	int prefix##_parse(const char *s, enum prefix *out)                               \
	{                                                                                \
		int i = name_find(names, NAMES_COUNT(names), s, any_case);                \
                                                                                         \
		if (i < 0)                                                               \
			return BG_EINVAL;                                                \
		*out = (enum prefix)i;                                                   \
		return 0;                                                                \
	}

struct file_rec;
/* Loads file record index of a job, or BG_ENOENT (file_rec_clear() it). */
int job_load_file(struct bg_store *st, const char *id, uint32_t index, struct file_rec *out) BG_WUR;

/* What a job's runner knows of the stored job record, so that a commit
 * need not decode it (a job record costs about as much to decode as a
 * small file's other work): bytes known to carry generation and, when
 * stamped >= 0, a progress stamp of that second (last_progress, modified).
 * Only a cache: whatever it holds, a mismatch means decoding as before. */
struct job_memo {
	unsigned char *raw;
	size_t len;
	int64_t generation;
	int64_t stamped;
};
void job_memo_clear(struct job_memo *m);
/* 0 when the stored job record still has generation, else BG_EAGAIN (or a
 * store error).  memo may be NULL. */
int txn_job_check_generation(struct bg_txn *txn, const char *id, int64_t generation,
                             struct job_memo *memo) BG_WUR;

/* Puts records (any may be NULL), patches the job record, and optionally one chunk of the file's
 * blob, in one transaction.  The file record's blob is set to the blob
 * used (a new one is allocated for the first chunk). */
struct job_commit {
	const char *id;
	uint32_t index;
	struct job_rec *job;   /* the whole record, put as it is (a new job) */
	struct file_rec *file; /* file index's record, put as it is */
	/* The file record's encoded form kept by the caller between commits
	 * (*file_json NULL at first), so that a chunk's commit only updates
	 * what changed; NULL: encoded anew. */
	json_t **file_json;
	uint64_t blob_in;  /* blob of the file (0: none yet) */
	uint64_t blob_out; /* blob after the commit */
	bool drop_blob;    /* delete the blob's chunks first (a restart) */
	uint64_t chunk;    /* index of the chunk */
	const void *data;  /* chunk to store, or NULL */
	size_t len;
	/* Job-level parts, applied to the stored record (never a stale copy). */
	int64_t generation; /* >= 0: BG_EAGAIN unless the job still has this generation */
	bool has_event;     /* event happened (BG_EINVAL when the stored state refuses it) */
	enum job_event event;
	/* The attempt at file index failed with this outcome: the job's error,
	 * and the event job_failure_event() gives from the stored clocks. */
	const struct job_outcome *failed;
	const char *failed_url; /* the file's remote URL, for the error */
	bool progress;      /* bytes arrived: stamp last_progress */
	struct job_memo *memo; /* the runner's, or NULL (used only with generation >= 0) */
};
int job_commit(struct bg_store *st, struct job_commit *c) BG_WUR;

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
};
#define TLS_MAX_CRL_URLS 8 /* CRLs one handshake may ask to download */

struct tls_policy {
	uint32_t flags;        /* the job's security flags */
	const char *crl_dir;   /* where CRLs are kept, or NULL */
	char host[256];        /* host name or IP literal the certificate must name */
	unsigned faults;       /* TLS_FAULT_* seen in the last handshake */
	unsigned fatal;        /* faults the flags do not ignore */
	char message[512];     /* the reason for the most important fatal fault */
	char fault_msg[8][384]; /* first message per fault class (index: bit number) */
	char *need_crl[TLS_MAX_CRL_URLS]; /* CRL URLs to download (owned) */
	size_t nneed;
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

/* ---- Hashing beside the download (hasher.c) ----------------------------- */
#define HASHER_RING 4 /* chunk buffers: the one filled, the ones being hashed */
struct hasher;
int hasher_new(struct hasher **out) BG_WUR;
/* Stops the thread (if any) and frees everything; NULL is accepted. */
void hasher_free(struct hasher *h);
/* The buffer to fill next (STORE_CHUNK_BYTES long). */
unsigned char *hasher_buffer(struct hasher *h);
/* Hands the filled buffer (len bytes) over; it stays readable, unchanged,
 * until HASHER_RING - 1 more buffers were submitted.  May wait until the
 * next buffer is free. */
int hasher_submit(struct hasher *h, size_t len) BG_WUR;
/* Hashes bytes of the caller's at once (after everything submitted). */
int hasher_update(struct hasher *h, const void *p, size_t len) BG_WUR;
int hasher_reset(struct hasher *h) BG_WUR;
int hasher_final(struct hasher *h, unsigned char out[BG_SHA256_LEN]) BG_WUR;

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
/* The body of an origin's or a peer's response, on its way into a sink:
 * sink_feed_start hands the sink the accepted headers, then libcurl's
 * write callback is sink_feed_write with the feed as its data. */
struct sink_feed {
	const struct origin_sink *sink;
	bool started;   /* on_start took the response: the body goes to on_data */
	int err;        /* why the sink stopped the transfer, else 0 */
	uint64_t bytes; /* body bytes on_data took */
};
/* Calls the sink's on_start: 0, or its error (kept in f->err too). */
int sink_feed_start(struct sink_feed *f, const struct origin_response *resp) BG_WUR;
/* A CURLOPT_WRITEFUNCTION (data: a struct sink_feed).  Stops the transfer
 * (returns 0) before the sink was started and when on_data fails. */
size_t sink_feed_write(char *p, size_t size, size_t nmemb, void *feed);

#endif /* BG_AGENT_INT_H */
