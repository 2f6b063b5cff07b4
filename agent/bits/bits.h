/*
 * bits.h - what BITS defines, as C: the security flags of
 * IBackgroundCopyJobHttpOptions::SetSecurityFlags, the HRESULTs users see in
 * job errors, and the job state table with the decisions that go with it
 * (is a job due, is an error transient or fatal, how a foreground get ends).
 * Pure functions: no I/O, no store, no libcurl.  Everything else in the
 * agent builds on this.
 *
 * Errors follow cache.h: 0 or a negative BG_E* code.  HRESULTs are the job
 * errors users see; they are produced here and nowhere else.
 */
#ifndef BG_BITS_H
#define BG_BITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"

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
	XX(BG_E_MAXDOWNLOAD_TIMEOUT, 0x80200054u, false, "the job took longer than its maximum download time") \
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
	XX(ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED, 0x80072F0Cu, false, "the server requires a client certificate") \
	XX(ERROR_WINHTTP_SECURE_INVALID_CA, 0x80072F0Du, false, "unknown or untrusted certificate authority") \
	XX(ERROR_WINHTTP_SECURE_CERT_REV_FAILED, 0x80072F19u, false, "revocation check failed") \
	XX(ERROR_WINHTTP_INVALID_SERVER_RESPONSE, 0x80072F78u, false, "invalid server response") \
	XX(ERROR_WINHTTP_REDIRECT_FAILED, 0x80072F7Cu, false, "redirect refused")             \
	XX(ERROR_WINHTTP_SECURE_CERT_REVOKED, 0x80072F8Au, false, "certificate revoked")      \
	XX(ERROR_WINHTTP_SECURE_FAILURE, 0x80072F8Fu, false, "TLS failure")                   \
	XX(ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE, 0x80072F93u, false, "certificate not valid for server use") \
	XX(ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY, 0x80072F99u, false, "the client certificate's private key cannot be used")

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


/* ---- Jobs: states, events and the decisions of the table (state.c) ----- */
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

/* What happens to a job (state.c).  agent/bits/README.md has the table. */
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


#endif /* BG_BITS_H */
