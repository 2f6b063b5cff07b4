/*
 * agent.h - the bgcopy agent: security flags, HRESULTs, URLs, the origin
 * client and the job engine.  The CLI (cli.c) and the bgcopy binary build on
 * this; tests link the same library.
 *
 * Errors follow cache.h: 0 or a negative BG_E* code.  HRESULTs are the job
 * errors users see; they are produced here and nowhere else.
 */
#ifndef BG_AGENT_H
#define BG_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"

/* ---- Limits ------------------------------------------------------------ */
#define ORIGIN_MAX_HOPS 10                 /* redirects followed per request chain */
#define ORIGIN_HEADER_MAX (256 * 1024)     /* bytes of response headers per response */
#define ORIGIN_CONNECT_TIMEOUT 30          /* seconds */
#define ORIGIN_LOW_SPEED_TIME 60           /* seconds below 1 byte/s before a transfer is transient-failed */
#define ORIGIN_MAX_RESTARTS 3              /* validator changes tolerated in one attempt */
#define ORIGIN_NOTE_MAX 128                /* bytes of a reason phrase, Via or proxy marker kept for a message */
#define JOB_HEADERS_MAX 64                 /* custom request headers per job */
#define JOB_FILES_MAX 1000000              /* files per job */
#define JOB_NAME_MAX 256                   /* bytes */
#define JOB_PEERS_MAX 16                   /* peers asked for one file */
#define JOB_MIN_RETRY_DELAY 600            /* seconds, BITS default */
#define JOB_NO_PROGRESS_TIMEOUT (14 * 24 * 3600) /* seconds, BITS default */

/* ---- Security flags (IBackgroundCopyJobHttpOptions::SetSecurityFlags) --- */
#define BG_SSL_ENABLE_CRL_CHECK 0x0001u
#define BG_SSL_IGNORE_CERT_CN_INVALID 0x0002u
#define BG_SSL_IGNORE_CERT_DATE_INVALID 0x0004u
#define BG_SSL_IGNORE_UNKNOWN_CA 0x0008u
#define BG_SSL_IGNORE_CERT_WRONG_USAGE 0x0010u
#define BG_HTTP_REDIRECT_POLICY_ALLOW_SILENT 0x0000u
#define BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT 0x0100u
#define BG_HTTP_REDIRECT_POLICY_DISALLOW 0x0200u
#define BG_HTTP_REDIRECT_POLICY_MASK 0x0700u
#define BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP 0x0800u
#define BG_SECURITY_FLAGS_VALID 0x0F1Fu

/* Parses a FLAGS argument: a number (decimal, 0x hex) or names joined by '|'
 * or ',' (long BG_* names or their short names as the README lists them, any case,
 * spaces around names allowed).  Unknown bits, unknown names, an empty list
 * and a redirect policy other than 0x000, 0x100, 0x200 give BG_ENOTIMPL and
 * leave *out alone. */
int flags_parse(const char *s, uint32_t *out) BG_WUR;
/* Writes "0x%04X name|name" (short names; the redirect policy always named)
 * into buf; returns buf. */
char *flags_format(uint32_t flags, char *buf, size_t len);
/* Validates a flag value (same rules as flags_parse). */
bool flags_valid(uint32_t flags);

/* ---- HRESULTs ---------------------------------------------------------- */
#define HR_MAP(XX)                                                                           \
	XX(S_OK, 0x00000000u, false, "success")                                              \
	XX(E_NOTIMPL, 0x80004001u, false, "flag value not supported")                        \
	XX(E_ACCESSDENIED, 0x80070005u, false, "access denied")                              \
	XX(ERROR_PATH_NOT_FOUND, 0x80070003u, false, "path not found")                       \
	XX(ERROR_CRC, 0x80070017u, false, "content does not match its expected SHA-256")     \
	XX(ERROR_WRITE_FAULT, 0x8007001Du, false, "cannot write the file")                   \
	XX(ERROR_DISK_FULL, 0x80070070u, false, "disk full")                                 \
	XX(HTTP_STATUS_AMBIGUOUS, 0x8007012Cu, false, "redirect (300) refused by policy")    \
	XX(HTTP_STATUS_MOVED, 0x8007012Du, false, "redirect (301) refused by policy")        \
	XX(HTTP_STATUS_REDIRECT, 0x8007012Eu, false, "redirect (302) refused by policy")     \
	XX(HTTP_STATUS_REDIRECT_METHOD, 0x8007012Fu, false, "redirect (303) refused by policy") \
	XX(HTTP_STATUS_REDIRECT_KEEP_VERB, 0x80070133u, false, "redirect (307) refused by policy") \
	XX(HTTP_STATUS_PERMANENT_REDIRECT, 0x80070134u, false, "redirect (308) refused by policy") \
	XX(ERROR_WINHTTP_TIMEOUT, 0x80072EE2u, true, "the operation timed out")               \
	XX(ERROR_WINHTTP_NAME_NOT_RESOLVED, 0x80072EE7u, true, "the server name could not be resolved") \
	XX(ERROR_WINHTTP_CANNOT_CONNECT, 0x80072EFDu, true, "cannot connect to the server")   \
	XX(ERROR_WINHTTP_CONNECTION_ERROR, 0x80072EFEu, true, "the connection was reset or closed") \
	XX(ERROR_WINHTTP_SECURE_CERT_DATE_INVALID, 0x80072F05u, false, "certificate expired or not yet valid") \
	XX(ERROR_WINHTTP_SECURE_CERT_CN_INVALID, 0x80072F06u, false, "certificate host name mismatch") \
	XX(ERROR_WINHTTP_SECURE_INVALID_CA, 0x80072F0Du, false, "unknown or untrusted certificate authority") \
	XX(ERROR_WINHTTP_SECURE_CERT_REV_FAILED, 0x80072F19u, false, "revocation check failed") \
	XX(ERROR_WINHTTP_INVALID_SERVER_RESPONSE, 0x80072F78u, false, "invalid server response") \
	XX(ERROR_WINHTTP_REDIRECT_FAILED, 0x80072F7Cu, false, "redirect refused")             \
	XX(ERROR_WINHTTP_SECURE_CERT_REVOKED, 0x80072F8Au, false, "certificate revoked")      \
	XX(ERROR_WINHTTP_SECURE_FAILURE, 0x80072F8Fu, false, "TLS failure")                   \
	XX(ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE, 0x80072F93u, false, "certificate not valid for server use")

enum hr_code {
#define XX(sym, code, transient, msg) HR_##sym = code,
	HR_MAP(XX)
#undef XX
};

#define HR_HTTP_ERROR_BASE 0x80190000u /* BG_E_HTTP_ERROR_xxx = base | status */
#define HR_FROM_WIN32(x) (0x80070000u | ((uint32_t)(x) & 0xFFFFu))

/* Symbol of an HRESULT ("HTTP_STATUS_REDIRECT", "BG_E_HTTP_ERROR_404");
 * writes into buf when it has to compose one; returns buf or a static. */
const char *hr_symbol(uint32_t hr, char *buf, size_t len);
/* Short description of an HRESULT (static). */
const char *hr_message(uint32_t hr);
/* Whether BITS treats the error as transient (retry after a delay). */
bool hr_transient(uint32_t hr);
/* HRESULT for an HTTP error status (>= 400, or an unusable 2xx/3xx). */
uint32_t hr_from_http(long status);
/* HRESULT for a redirect status refused under DISALLOW. */
uint32_t hr_from_redirect(long status);
/* HRESULT for a local error code (disk full, access denied, ...). */
uint32_t hr_from_bg(int err);

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
	const char *user;           /* basic auth credentials, or NULL */
	const char *password;
	unsigned stall_seconds;     /* without a byte before the transfer fails (transient);
	                             * 0: ORIGIN_LOW_SPEED_TIME */
	volatile const int *stop;   /* non-zero: abort now, even while the origin is silent;
	                             * the result's local_err is then BG_ECANCELED (or NULL) */
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
 * res->remote_url is set when the policy changes the file's remote name:
 * the final URL under ALLOW_REPORT (on success), the redirect target under
 * DISALLOW.  Free res with origin_result_clear(). */
int origin_fetch(struct origin *o, const struct origin_request *req,
                 const struct origin_sink *sink, struct origin_result *res) BG_WUR;
void origin_result_clear(struct origin_result *res);

/* ---- Jobs -------------------------------------------------------------- */
enum job_state {
	JOB_QUEUED,
	JOB_CONNECTING,
	JOB_TRANSFERRING,
	JOB_SUSPENDED,
	JOB_ERROR,
	JOB_TRANSIENT_ERROR,
	JOB_TRANSFERRED,
	JOB_ACKNOWLEDGED,
	JOB_CANCELLED,
};
const char *job_state_name(enum job_state s);
int job_state_parse(const char *s, enum job_state *out) BG_WUR;
/* Whether the state is final (ACKNOWLEDGED or CANCELLED). */
bool job_state_final(enum job_state s);

/* What happens to a job (state.c).  agent/README.md has the table. */
enum job_event {
	JOB_EV_RESUME,    /* `resume` */
	JOB_EV_SUSPEND,   /* `suspend` */
	JOB_EV_CANCEL,    /* `cancel` */
	JOB_EV_COMPLETE,  /* `complete` */
	JOB_EV_START,     /* a runner takes the job */
	JOB_EV_RECEIVE,   /* a body starts arriving */
	JOB_EV_DONE,      /* every file is in */
	JOB_EV_TRANSIENT, /* a transient error (retried after the minimum retry delay) */
	JOB_EV_FATAL,     /* a fatal error, or no progress for the no-progress timeout */
	JOB_EV_RETRY,     /* the retry time of a transient error came */
	JOB_EV_STOP,      /* the runner was stopped (daemon stopping, another job's turn) */
	JOB_EV_ADD,       /* files were added */
	JOB_EV_RUN,       /* a get runs its own job now, whatever state it was left in */
	JOB_EV_GIVE_UP,   /* a get returns on an error: nobody retries its job */
};
/* Where event ev takes a job in state from; BG_EINVAL when ev is not
 * allowed there (e.g. complete before TRANSFERRED, anything after cancel). */
int job_transition(enum job_state from, enum job_event ev, enum job_state *to) BG_WUR;
const char *job_event_name(enum job_event ev);
/* Whether a scheduler may start a job stored in state s at time now: QUEUED,
 * a TRANSIENT_ERROR whose retry_at came, or a runner's state left by a
 * runner that is gone (the job's lock decides whether one still runs). */
bool job_due(enum job_state s, int64_t retry_at, int64_t now);
/* The event a failed attempt is: JOB_EV_TRANSIENT for a transient error
 * while the job is within its no-progress timeout, counted from
 * transient_since (the first transient error since the last progress, 0:
 * none yet, this one is); JOB_EV_FATAL otherwise (a timeout of 0 makes
 * every error fatal). */
enum job_event job_failure_event(bool transient, int64_t now, int64_t transient_since,
                                 int64_t no_progress_timeout);
/* What a foreground get does with its job once the transfer returned. */
enum job_get_end {
	JOB_GET_COMPLETE,        /* TRANSFERRED: complete it */
	JOB_GET_GIVE_UP_KEEP,    /* give up (ERROR), keeping the bytes for the same get */
	JOB_GET_GIVE_UP_DISCARD, /* give up (ERROR), discarding the partial data */
};
enum job_get_end job_get_end(enum job_state s, uint64_t bytes_transferred, bool local_error);

/* How an attempt at a job ended.  A job's error is the outcome that stopped
 * it, with the file it was about (its "error" object: code, symbol, context,
 * file_index, url, message). */
#define JOB_MESSAGE_MAX 512
struct job_outcome {
	uint32_t hr;                   /* HR_S_OK, or the error */
	bool local;                    /* about the local file (context "local_file"), not the remote one */
	char message[JOB_MESSAGE_MAX]; /* what happened; "" for hr_message(hr) */
};
/* Sets *o to hr with a message (printf format); returns o->hr. */
uint32_t job_outcome_set(struct job_outcome *o, uint32_t hr, bool local, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void job_outcome_clear(struct job_outcome *o);
/* Whether a transient error is retried at once by the runner (a foreground
 * get's few retries; attempts: those made since the file last progressed),
 * and the delay before the next such retry (seconds, from the last one). */
bool job_retry_now(uint32_t hr, unsigned attempts, unsigned max_retries);
unsigned job_retry_delay(unsigned last);

enum job_priority { JOB_PRIO_FOREGROUND, JOB_PRIO_HIGH, JOB_PRIO_NORMAL, JOB_PRIO_LOW };
const char *job_priority_name(enum job_priority p);
int job_priority_parse(const char *s, enum job_priority *out) BG_WUR;

/* Which side of peer caching a job takes: it asks peers (client), offers
 * what it fetched (server), both, or neither. */
enum peer_caching { PEER_CACHING_OFF, PEER_CACHING_CLIENT, PEER_CACHING_SERVER, PEER_CACHING_BOTH };
const char *peer_caching_name(enum peer_caching m);
int peer_caching_parse(const char *s, enum peer_caching *out) BG_WUR;

struct job_options {
	const char *name;
	enum job_priority priority;
	uint32_t security_flags;
	const char *ca_file;          /* NULL: system store */
	const char *const *headers;   /* NULL-terminated, or NULL */
	bool cache_both;              /* --cache-key both */
	const char *const *peers;     /* HOST:PORT to ask first (NULL-terminated), or NULL */
	const char *peer_key;         /* HMAC key file for the peers, or NULL */
	bool no_cache;
	const char *get_key;          /* identifies the `get` that made the job (resume), or NULL */
};

/* Adds a file.  url must be canonical (url_canonical); local_path absolute.
 * expect_sha256 (64 hex digits) or NULL.  BG_EINVAL for a job not in a state
 * that takes files. */
int job_add_file(struct bg_store *st, const char *id, const char *url, const char *local_path,
                 const char *expect_sha256) BG_WUR;
/* Adds n files in one transaction: all or none. */
struct job_file_spec {
	const char *url;           /* canonical */
	const char *local_path;    /* absolute */
	const char *expect_sha256; /* or NULL */
};
/* Creates a job (SUSPENDED) with its first nfiles files (files may be NULL
 * when nfiles is 0), all in one transaction, and writes its id
 * (STORE_JOB_ID_LEN characters + NUL) into id. */
int job_create(struct bg_store *st, const struct job_options *opt,
               const struct job_file_spec *files, size_t nfiles,
               char id[STORE_JOB_ID_LEN + 1]) BG_WUR;

int job_add_files(struct bg_store *st, const char *id, const struct job_file_spec *files,
                  size_t n) BG_WUR;
/* Finds the newest job made by a `get` with this key that is not
 * ACKNOWLEDGED or CANCELLED; BG_ENOENT if none.  *errored tells whether it
 * is in ERROR. */
int job_find_get(struct bg_store *st, const char *get_key, char id[STORE_JOB_ID_LEN + 1],
                 bool *errored) BG_WUR;
/* Reads or changes the job's security flags.  Setting validates (BG_ENOTIMPL). */
int job_get_flags(struct bg_store *st, const char *id, uint32_t *out) BG_WUR;
int job_set_flags(struct bg_store *st, const char *id, uint32_t flags) BG_WUR;
/* The job and file records (record.h has their fields). */
struct job_rec;
struct file_rec;
/* Changes a job on behalf of a user: fn edits the record inside one
 * transaction; the job's generation is then bumped, so that a process
 * transferring the job notices at its next commit and reloads it.
 * fn may also change file records through txn. */
int job_modify(struct bg_store *st, const char *id,
               int (*fn)(struct job_rec *job, struct bg_txn *txn, void *arg), void *arg) BG_WUR;
/* Applies a user event (resume, suspend, cancel, a get giving up) through
 * job_transition(), atomically, as a user change (see job_modify).  BG_EINVAL when not allowed in the
 * job's state; BG_ENOENT for resume of a job without files (or no job).
 * *from / *to (may be NULL) receive the states. */
int job_event(struct bg_store *st, const char *id, enum job_event ev, enum job_state *from,
              enum job_state *to) BG_WUR;
/* A user's change of a job's settings (the set-* commands): the fields
 * named in set change, the others stay.  Strings are copied. */
enum job_setting {
	JOB_SET_NAME = 1u << 0,
	JOB_SET_PRIORITY = 1u << 1,
	JOB_SET_NOTIFY_CMD = 1u << 2,
	JOB_SET_MIN_RETRY_DELAY = 1u << 3,
	JOB_SET_NO_PROGRESS_TIMEOUT = 1u << 4,
	JOB_SET_HEADERS = 1u << 5,
	JOB_SET_PROXY = 1u << 6,
	JOB_SET_CA_FILE = 1u << 7,
	JOB_SET_PEER_CACHING = 1u << 8,
	JOB_SET_CREDENTIALS = 1u << 9,
};
struct job_settings {
	unsigned set;                   /* JOB_SET_* */
	const char *name;
	enum job_priority priority;
	const char *const *notify_cmd;  /* program and arguments, NULL-terminated; NULL clears */
	int64_t min_retry_delay;        /* seconds */
	int64_t no_progress_timeout;    /* seconds */
	const char *const *headers;     /* "Name: value", NULL-terminated; NULL clears */
	const char *proxy;              /* URL or "none"; NULL: libcurl's default */
	const char *ca_file;            /* NULL: the system store */
	enum peer_caching peer_caching;
	const char *user, *password;    /* NULL clears */
};
/* Applies s atomically (a user change: see job_modify).  BG_EINVAL once the
 * job is ACKNOWLEDGED or CANCELLED. */
int job_change(struct bg_store *st, const char *id, const struct job_settings *s) BG_WUR;
/* Replaces OLD by NEW at the start of the remote URL of every unfinished
 * file whose current remote URL starts with OLD; *changed gets how many.
 * BG_EINVAL when a resulting URL is not a valid http(s) URL (nothing
 * changes then). */
int job_replace_remote_prefix(struct bg_store *st, const char *id, const char *old_prefix,
                              const char *new_prefix, unsigned *changed) BG_WUR;
/* Applies the options of a repeated `get` to its job (flags, headers, CA). */
int job_update_options(struct bg_store *st, const char *id, const struct job_options *opt) BG_WUR;
/* Builds the job document the README describes (caller json_decref()s).  With a
 * home, its state is the one job_state_shown() gives; with NULL, the state
 * as stored. */
int job_document(struct bg_store *st, const char *home, const char *id, json_t **out) BG_WUR;
/* Loads the job record alone, without its files, or BG_ENOENT: enough for
 * the state and the settings.  job_rec_clear() it (also after an error). */
int job_load(struct bg_store *st, const char *id, struct job_rec *out) BG_WUR;
/* Whether the job of a stored record has not ended (a pin's job, for the
 * store's limits: txn_enforce_limits). */
int job_record_unfinished(const json_t *job);
/* Calls fn with each job's document (home as for job_document). */
int job_list(struct bg_store *st, const char *home, bool all,
             int (*fn)(json_t *doc, void *arg), void *arg) BG_WUR;

/* Exclusive ownership of a job by this process (an flock on a lock file in
 * the home, released by the kernel when the process dies).  BG_EBUSY when
 * another process holds it.  The holder also has an open file description
 * lock on the file, which others can test without taking it. */
struct job_lock;
int job_lock(const char *home, const char *id, struct job_lock **out) BG_WUR;
void job_unlock(struct job_lock *l);
/* Whether a live process (this one included) holds the job's lock: 1 or 0,
 * BG_ENOTIMPL where the kernel cannot tell (no open file description
 * locks), another BG_E* code when the lock file cannot be read.  Nothing
 * is taken, so a runner about to take the job is never turned away. */
int job_lock_held(const char *home, const char *id) BG_WUR;
/* The state to show for a job stored in state s.  CONNECTING and
 * TRANSFERRING are a runner's: true only while a live process holds the
 * job's lock.  When none does (the runner was killed or crashed), the job
 * is shown as the state table's "stop" event leaves a stopped runner's
 * job, QUEUED: stopped and resumable, as BITS shows a job whose transfer
 * stopped.  The record keeps the runner's last state, which the next
 * runner (a daemon taking the job over, the same `get` again) replaces.
 * Any other state, or a lock that cannot be tested, is shown as stored. */
enum job_state job_state_shown(const char *home, const char *id, enum job_state s);

/* Progress reports from job_run. */
struct job_progress {
	uint64_t bytes_done;  /* of the job */
	int64_t bytes_total;  /* -1 when unknown */
	uint32_t file_index;
	uint32_t files_total;
};

struct job_run_options {
	void (*progress)(void *arg, const struct job_progress *p);
	void *progress_arg;
	unsigned transient_retries; /* immediate retries of transient errors (foreground get) */
	volatile const int *stop;   /* set non-zero (e.g. from a signal handler) to stop */
	const char *crl_dir;        /* where CRLs are kept (HOME/crl) */
	const char *home;           /* the home (HOME/usage.log is folded in), or NULL */
	const char *ca_file;        /* trust anchors for jobs that set none (--ca-file) */
	const char *const *peers;   /* HOST:PORT of peers for jobs that name none (daemon) */
	size_t npeers;
	const char *peer_key;       /* key file for those peers, or NULL */
	bool only_if_due;           /* run only a job QUEUED, due for retry, or orphaned */
	bool sync;                  /* TRANSFERRED only once the store is on disk (power loss) */
};

/* Transfers every unfinished file of the job, in order.  Ends with the job
 * TRANSFERRED, ERROR or TRANSIENT_ERROR (or as it was when stopped).  The
 * caller holds the job's lock.  Returns 0 when the job was run (its state
 * tells the outcome), a BG_E* code when the store failed. */
int job_run(struct bg_store *st, struct origin *o, const char *id,
            const struct job_run_options *ro) BG_WUR;
/* Moves each transferred file from its partial file to its local path
 * (atomically: rename) and sets ACKNOWLEDGED; with sync, each file and its
 * folder are fsync'd first and the store after.  BG_EINVAL unless
 * TRANSFERRED. */
int job_complete(struct bg_store *st, const char *id, bool sync) BG_WUR;
/* Deletes the partial files of the job and the stored bytes of its
 * unfinished files (they restart from byte 0); the state is unchanged. */
int job_discard_partials(struct bg_store *st, const char *id) BG_WUR;
/* Removes partial data and sets CANCELLED. */
int job_cancel(struct bg_store *st, const char *id) BG_WUR;

/* ---- The daemon (daemon.c) -------------------------------------------- */
#define DAEMON_MAX_TRANSFERS 4 /* background jobs transferring at once, by default */
#define DAEMON_MAX_WORKERS 64  /* jobs transferring at once, foreground ones included */
#define DAEMON_SLICE 30        /* seconds a background job runs while others of its level wait */

struct daemon_options {
	const char *home;
	const char *ca_file;      /* trust anchors for jobs that set none, or NULL */
	unsigned max_transfers;   /* background jobs at once (1..DAEMON_MAX_WORKERS) */
	unsigned slice_seconds;   /* round-robin time slice */
	const char *const *peers; /* peers for jobs that are peer-caching clients */
	size_t npeers;
	const char *peer_key;     /* HMAC key file for them, or NULL */
	bool sync;                /* fsync the store before a job is TRANSFERRED */
};
/* Runs queued jobs until SIGTERM or SIGINT (installed here), then stops
 * every transfer cleanly (jobs back to QUEUED) and returns 0.  Writes one
 * line per event on stderr. */
int daemon_run(struct bg_store *st, const struct daemon_options *opt) BG_WUR;

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

/* Generates a random job id. */
int job_new_id(char id[STORE_JOB_ID_LEN + 1]) BG_WUR;

#endif /* BG_AGENT_H */
