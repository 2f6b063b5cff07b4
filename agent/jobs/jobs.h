/*
 * jobs.h - download jobs: creating and changing them, running them (the
 * engine: store, peers, origin, in that order), completing them, and the
 * daemon that schedules them.  Job and file records live in the store
 * (record.h has their fields).  Builds on net.h, bits.h and the core.
 */
#ifndef BG_JOBS_H
#define BG_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"
#include "netcost.h"

/* ---- Limits ------------------------------------------------------------ */
#define JOB_HEADERS_MAX 64                 /* custom request headers per job */
#define JOB_FILES_MAX 1000000              /* files per job */
#define JOB_NAME_MAX 256                   /* bytes */
#define JOB_PEERS_MAX 16                   /* peers asked for one file */
#define JOB_MIN_RETRY_DELAY 600            /* seconds, BITS default */
#define JOB_NO_PROGRESS_TIMEOUT (14 * 24 * 3600) /* seconds, BITS default */
#define JOB_MAX_DOWNLOAD_TIME (90 * 24 * 3600)   /* seconds, BITS default; 0: no limit */
#define JOB_MAX_DOWNLOAD_TIME_MAX 4294967295LL   /* seconds: BITS takes a ULONG */
#define JOB_RATE_BURST_MIN (16 * 1024)          /* bytes a rate bucket holds at least: one
                                                 * libcurl write (the burst is 1/8 s of the rate) */
#define JOB_HTTP_METHOD_MAX 32             /* bytes of an HTTP method name */

/* ---- Jobs -------------------------------------------------------------- */
enum job_priority { JOB_PRIO_FOREGROUND, JOB_PRIO_HIGH, JOB_PRIO_NORMAL, JOB_PRIO_LOW };
const char *job_priority_name(enum job_priority p);
int job_priority_parse(const char *s, enum job_priority *out) BG_WUR;

/* Which side of peer caching a job takes: it asks peers (client), offers
 * what it fetched (server), both, or neither. */
enum peer_caching { PEER_CACHING_OFF, PEER_CACHING_CLIENT, PEER_CACHING_SERVER, PEER_CACHING_BOTH };
const char *peer_caching_name(enum peer_caching m);
int peer_caching_parse(const char *s, enum peer_caching *out) BG_WUR;

/* Transfer policy on costed networks (BITS 5: SetProperty
 * BITS_JOB_PROPERTY_ID_COST_FLAGS).  NetworkManager tells metered from not
 * (netcost.h), so two of BITS's classes apply: ALWAYS transfers on any
 * network (BITS_COST_STATE_TRANSFER_ALWAYS, the default: see cost.c);
 * UNRESTRICTED_ONLY only where the network is not metered
 * (BITS_COST_STATE_UNRESTRICTED).  The record keeps the BITS value. */
#define JOB_COST_FLAGS_ALWAYS 0x800000ffu       /* BITS_COST_STATE_TRANSFER_ALWAYS */
#define JOB_COST_FLAGS_UNRESTRICTED 0x00000001u /* BITS_COST_STATE_UNRESTRICTED */
enum job_transfer_policy { JOB_POLICY_ALWAYS, JOB_POLICY_UNRESTRICTED_ONLY };
/* "always", "unrestricted-only". */
const char *job_transfer_policy_name(enum job_transfer_policy p);
/* BG_EINVAL for another name. */
int job_transfer_policy_parse(const char *s, enum job_transfer_policy *out) BG_WUR;
uint32_t job_transfer_policy_flags(enum job_transfer_policy p);
/* The policy stored BITS cost flags mean: a value without any metered cost
 * state (BITS_COST_STATE_UNRESTRICTED alone, or with option bits) is
 * UNRESTRICTED_ONLY; any other, ALWAYS. */
enum job_transfer_policy job_transfer_policy_of(uint32_t cost_flags);
/* Whether a job of policy p may transfer on a network of cost c. */
bool job_policy_allows(enum job_transfer_policy p, enum net_cost c);
/* What a waiting job of this policy waits for on a network of cost c, or
 * NULL when the network does not hold it back. */
const char *job_cost_waiting_reason(enum job_transfer_policy p, enum net_cost c);
#define JOB_WAITING_UNRESTRICTED "waiting for an unrestricted network"

/* Credentials (BITS IBackgroundCopyJob2::SetCredentials): one per target
 * and scheme.  BITS's PASSPORT scheme is parsed so that it can be refused
 * with E_NOTIMPL; no record ever holds it. */
enum job_auth_target { JOB_AUTH_SERVER, JOB_AUTH_PROXY, JOB_AUTH_TARGETS };
enum job_auth_scheme {
	JOB_AUTH_BASIC,
	JOB_AUTH_DIGEST,
	JOB_AUTH_NTLM,
	JOB_AUTH_NEGOTIATE,
	JOB_AUTH_SCHEMES,
	JOB_AUTH_PASSPORT = JOB_AUTH_SCHEMES,
};
/* "server", "proxy"; "basic", "digest", "ntlm", "negotiate" ("passport"
 * parses, BG_ENOTIMPL).  BG_EINVAL for another name. */
const char *job_auth_target_name(enum job_auth_target t);
int job_auth_target_parse(const char *s, enum job_auth_target *out) BG_WUR;
const char *job_auth_scheme_name(enum job_auth_scheme s);
int job_auth_scheme_parse(const char *s, enum job_auth_scheme *out) BG_WUR;
/* Whether s is an HTTP method name (a token, RFC 9110 section 9.1 and
 * 5.6.2) of at most JOB_HTTP_METHOD_MAX - 1 bytes that can fetch a body:
 * not HEAD nor CONNECT.  Method names are case-sensitive. */
bool job_http_method_valid(const char *s);

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
	const enum peer_caching *peer_caching; /* a new job's mode (bgcopy.conf), NULL: server */
	const enum job_transfer_policy *transfer_policy; /* a new job's, NULL: always */
	const uint64_t *max_rate;     /* bytes/s, 0: no limit (get --max-rate); NULL: unchanged */
	/* Credentials of a get (--user, --proxy-user): NULL users set none. */
	const char *user, *password;
	enum job_auth_scheme auth_scheme;
	const char *proxy_user, *proxy_password;
	enum job_auth_scheme proxy_auth_scheme;
	const char *client_cert, *client_key; /* as job_settings has them, NULL: none */
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
	JOB_SET_MAX_DOWNLOAD_TIME = 1u << 16,
	JOB_SET_TRANSFER_POLICY = 1u << 17,
	JOB_SET_MAX_RATE = 1u << 18,
	JOB_SET_AUTH = 1u << 21,              /* one credential: auth_target, auth_scheme */
	JOB_SET_HTTP_METHOD = 1u << 22,
	JOB_SET_HEADERS_WRITE_ONLY = 1u << 23, /* irreversible */
	JOB_SET_CLIENT_CERT = 1u << 19,
	JOB_SET_CERT_CHECK_CMD = 1u << 20,
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
	int64_t max_download_time;      /* seconds in CONNECTING/TRANSFERRING, 0: no limit (dltime.h) */
	enum job_transfer_policy transfer_policy;
	uint64_t max_rate;              /* bytes/s, 0: no limit (at most BG_RATE_MAX) */
	/* JOB_SET_AUTH: user and password above set (NULL user: removes) the
	 * credential of this target and scheme.  JOB_SET_CREDENTIALS is the
	 * same for the server's basic credential. */
	enum job_auth_target auth_target;
	enum job_auth_scheme auth_scheme;
	const char *http_method;        /* a token (job_http_method_valid); NULL or "GET": GET */
	/* PEM file or "pkcs11:" URI, and the key file apart from it (or NULL);
	 * client_cert NULL removes both.  The caller checked them. */
	const char *client_cert, *client_key;
	const char *const *cert_check_cmd; /* program and arguments, NULL-terminated; NULL clears */
};
/* Applies s atomically (a user change: see job_modify).  BG_EINVAL once the
 * job is ACKNOWLEDGED or CANCELLED; BG_EBUSY for JOB_SET_HTTP_METHOD unless
 * the job is SUSPENDED or in ERROR (nothing transfers it then), and for a
 * priority other than foreground of a job whose method is not GET (BITS
 * pins such a job to foreground).  Setting a method other than GET makes
 * the job's priority foreground. */
int job_change(struct bg_store *st, const char *id, const struct job_settings *s) BG_WUR;
/* The client certificate as documents show it: null, {"pkcs11": URI (a
 * PIN shown as ***)} or {"cert_file", "key_file", "subject", "not_after"}
 * ("problem" instead of the last two when the file cannot be read).  New
 * reference; NULL when out of memory. */
json_t *job_client_cert_json(const struct job_rec *job);
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

/* The peer table (peertable.h): the peers of jobs that name none. */
struct peer_table;

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
	struct peer_table *table;   /* asked when neither the job nor peers above name a peer, or NULL */
	bool only_if_due;           /* run only a job QUEUED, due for retry, or orphaned */
	bool fleet;                 /* take part in the fleet (bgcopy.conf fleet) */
	bool fleet_owner;           /* may be elected to fetch for others (fleet_owner) */
	unsigned fleet_origin_max;  /* origin fetches of one URL at once (fleet_origin_max, 1-16) */
	unsigned fleet_takeovers;   /* re-elections per file attempt (fleet_takeovers) */
	bool sync;                  /* TRANSFERRED only once the store is on disk (power loss) */
	/* The daemon's limit, shared by all its transfers but foreground
	 * jobs' (BITS: the bandwidth policy does not apply to them), or NULL;
	 * a job's own max_rate applies besides it. */
	struct bg_rate *shared_rate;
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
#define DAEMON_NOTIFY_MAX 256  /* notification commands reaped while running at once */
#define DAEMON_SLICE 30        /* seconds a background job runs while others of its level wait */

struct daemon_options {
	const char *home;
	const char *ca_file;      /* trust anchors for jobs that set none, or NULL */
	unsigned max_transfers;   /* background jobs at once (1..DAEMON_MAX_WORKERS) */
	unsigned slice_seconds;   /* round-robin time slice */
	const char *const *peers; /* peers for jobs that are peer-caching clients */
	size_t npeers;
	const char *peer_key;     /* HMAC key file for them, or NULL */
	struct peer_table *table; /* peers for clients when peers above names none, or NULL */
	bool sync;                /* fsync the store before a job is TRANSFERRED */
	bool fleet, fleet_owner;  /* bgcopy.conf fleet, fleet_owner (job_run_options) */
	unsigned fleet_origin_max, fleet_takeovers; /* the same */
	/* The limit of all transfers together but foreground jobs' (bytes/s,
	 * 0: none), and the schedule that chooses it by day and hour (NULL:
	 * none; max_rate applies outside its windows unless it says
	 * "outside").  Looked at every second; each change is logged as
	 * "rate limit now N B/s (RATE, SOURCE)". */
	uint64_t max_rate;
	const struct bg_rate_schedule *schedule;
};
/* Runs queued jobs until SIGTERM or SIGINT (installed here), then stops
 * every transfer cleanly (jobs back to QUEUED) and returns 0.  Writes one
 * line per event on stderr. */
int daemon_run(struct bg_store *st, const struct daemon_options *opt) BG_WUR;


/* Generates a random job id. */
int job_new_id(char id[STORE_JOB_ID_LEN + 1]) BG_WUR;


#endif /* BG_JOBS_H */
