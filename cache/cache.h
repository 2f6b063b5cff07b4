/*
 * cache.h - libbgcore, the project's core library: every other module (the
 * agent, bgcopy-peerd, the tests and tools) builds on it, and it builds on
 * none of them.  It owns the error space, SHA-256 and the peer protocol's
 * HMAC signatures, where the home is, the one clock, files replaced whole,
 * strict number parsing and safe text, the programs' exit statuses and
 * complaints, and the LMDB store.  It includes neither libcurl nor
 * libmicrohttpd.
 *
 * The store is one LMDB environment in the home folder ("store.mdb" plus its
 * lock file).  It holds jobs, the files of jobs, content (deduplicated by
 * SHA-256, kept in fixed-size chunks) and URL keys pointing at content.  The
 * agent opens it read-write, bgcopy-peerd read-only; several processes may
 * have it open at once.
 *
 * Records whose schema belongs to the agent (jobs, files) are stored as JSON objects
 * (jansson); content and key records are typed here because peerd reads them.
 *
 * Thread safety: a struct bg_store may be shared by threads for store_view()
 * and store_read_content() (the environment is opened MDB_NOTLS).  Only one
 * thread of a process may be inside store_update() at a time (LMDB's writer
 * lock serialises processes, a mutex in the store serialises threads).
 */
#ifndef BG_CACHE_H
#define BG_CACHE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define BG_WUR __attribute__((warn_unused_result))

/* ---- Errors ------------------------------------------------------------
 * One error space for the whole project: 0 is success, every error is a
 * negative int from this table.  Foreign codes (errno, MDB_*, CURLcode, MHD,
 * OpenSSL) are translated at the module edge.  HRESULTs are for users (job
 * errors) and are not part of this space. */
#define BG_ERRNO_MAP(XX)                                                   \
	XX(ENOMEM, -1, "out of memory")                                    \
	XX(EIO, -2, "input/output error")                                  \
	XX(ENOENT, -3, "not found")                                        \
	XX(EEXIST, -4, "already exists")                                   \
	XX(EINVAL, -5, "invalid argument")                                 \
	XX(ECORRUPT, -6, "store record is damaged")                        \
	XX(EBUSY, -7, "in use by another process")                         \
	XX(ENOSPC, -8, "no space left on device")                          \
	XX(EACCES, -9, "permission denied")                                \
	XX(EVERSION, -10, "store format version not supported")            \
	XX(ELIMIT, -11, "limit exceeded")                                  \
	XX(ERDONLY, -12, "store is open read-only")                        \
	XX(ENOTIMPL, -13, "not supported")                                 \
	XX(EPROTO, -14, "protocol error")                                  \
	XX(ECANCELED, -15, "cancelled")                                    \
	XX(EDIGEST, -16, "content digest mismatch")                        \
	XX(ETIMEDOUT, -17, "timed out")                                    \
	XX(EAGAIN, -18, "try again")                                       \
	XX(EUNSAFE, -19, "writable or readable by other users")

enum bg_err {
	BG_OK = 0,
#define XX(name, value, msg) BG_##name = value,
	BG_ERRNO_MAP(XX)
#undef XX
};

/* Returns a static description of err (never NULL; unknown codes give
 * "unknown error"). */
const char *bg_strerror(int err);
/* Returns the symbolic name of err ("BG_ENOENT"), or "BG_UNKNOWN". */
const char *bg_err_name(int err);
/* Translates an errno value into the table: ENOMEM, ENOENT, EEXIST, ENOSPC,
 * EDQUOT, EACCES, EPERM, EROFS, EBUSY, EAGAIN, EINVAL map to their
 * counterparts, anything else to BG_EIO. */
int bg_err_from_errno(int errnum);

/* ---- Digests ----------------------------------------------------------- */
#define BG_SHA256_LEN 32
#define BG_SHA256_HEX_LEN 64

/* Writes the lower-case hex form of the n bytes at p and a NUL into out
 * (2 * n + 1 bytes). */
void bg_hex(const void *p, size_t n, char *out);
/* Whether the n bytes at s are all lowercase hex digits (as bg_hex writes). */
bool bg_is_lower_hex(const char *s, size_t n);
/* Writes the lower-case hex form of d and a NUL into out[65]. */
void bg_sha256_hex(const unsigned char d[BG_SHA256_LEN], char out[BG_SHA256_HEX_LEN + 1]);
/* Parses exactly 64 hex digits (either case) into d.  Returns 0 or BG_EINVAL. */
int bg_sha256_from_hex(const char *hex, unsigned char d[BG_SHA256_LEN]) BG_WUR;
/* One-shot SHA-256 of len bytes at p (OpenSSL EVP). */
void bg_sha256(const void *p, size_t len, unsigned char d[BG_SHA256_LEN]);

/* ---- The home ------------------------------------------------------------
 * bgcopy and bgcopy-peerd find the home the same way: arg (--home), else
 * $BGCOPY_HOME, else ${XDG_STATE_HOME:-$HOME/.local/state}/bgcopy
 * (*is_default tells the last case).  Nothing is created here.  BG_ENOENT
 * when neither variable helps, BG_ELIMIT when the path does not fit. */
int bg_home_path(const char *arg, char *out, size_t outlen, bool *is_default) BG_WUR;
/* What to tell the user when bg_home_path() returned err (not 0). */
const char *bg_home_problem(int err);

/* ---- Numbers and text from outside (text.c) -------------------------------
 * One strict decimal parser for every option, header field, environment
 * variable and record field read as a number: exactly the n bytes at s, all
 * digits (a leading '-' allowed by bg_parse_i64 only), at least one; no
 * space, no '+', no base prefix (leading zeros are digits like any other).
 * 0 with *out set; BG_EINVAL for anything that is not such a number (also
 * s or out NULL, n 0), BG_ELIMIT for a number outside the range (never
 * wrapped or clamped).  *out is written only on success. */
int bg_parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out) BG_WUR;
/* The same in base 8, 10 or 16 (digits a-f in either case; the caller
 * strips any prefix such as "0x"), at most max. */
int bg_parse_uint(const char *s, size_t n, unsigned base, uint64_t max, uint64_t *out) BG_WUR;
/* The same in [min, max] (BG_EINVAL when min > max). */
int bg_parse_i64(const char *s, size_t n, int64_t min, int64_t max, int64_t *out) BG_WUR;
/* A number of bytes as users write it: digits, then optionally K, M, G or T
 * (either case; powers of 1024, as curl's --limit-rate and aria2 read them)
 * and optionally "B" or "iB" after the unit ("16M", "16MiB", "512k").  The
 * whole NUL-terminated s; BG_ELIMIT past max. */
int bg_parse_bytes(const char *s, uint64_t max, uint64_t *out) BG_WUR;

/* Safe text is valid UTF-8 (no overlong form, surrogate or code point past
 * U+10FFFF) without ASCII control characters (0x00-0x1F, 0x7F), a tab being
 * allowed only with BG_TEXT_TAB: it can be printed to a terminal or sent as
 * an HTTP field value as it is. */
#define BG_TEXT_TAB 0x1u
/* Replaces every byte of s that is not part of safe text with '?', in
 * place (the length does not change). */
void bg_text_safe_inplace(char *s, unsigned flags);
/* Whether s is safe text (false for NULL; true for ""). */
bool bg_text_is_safe(const char *s, unsigned flags);

/* ---- JSON record fields (json.c) ---------------------------------------
 * JSON record access.  Getters return NULL/def when the field is absent or
 * has another type; setters return 0 or BG_ENOMEM. */
const char *jstr(const json_t *o, const char *key);
int64_t jint(const json_t *o, const char *key, int64_t def);
bool jbool(const json_t *o, const char *key);
int jset(json_t *o, const char *key, json_t *v); /* steals v */
int jset_str(json_t *o, const char *key, const char *s);
int jset_int(json_t *o, const char *key, int64_t v);

/* ---- The clock (clock.c) -------------------------------------------------
 * One clock for the whole program: everything the store dates and every
 * date bgcopy and bgcopy-peerd compare with it: job dates, retry times and
 * the scheduler's slices included.  Dates that come from outside are
 * compared on the system clock, as their makers use it: certificates' and
 * CRLs' validity (OpenSSL reads the system clock) and peer request
 * signatures (made and checked on both sides); log lines show it too.
 *
 * Tests set it: BG_CLOCK_OFFSET_ENV ("BGCOPY_TIME_OFFSET") in the
 * environment, a decimal number of seconds (a minus sign allowed, less
 * than 2^40 either way), is added to the system clock.  It is read at every
 * call, so setenv() in a unit test moves the clock at once, and a test
 * that starts bgcopy and bgcopy-peerd with it moves theirs together.
 * Anything else in it (empty, not a number, too large) counts as 0. */
#define BG_CLOCK_OFFSET_ENV "BGCOPY_TIME_OFFSET"

/* "Now" in unix seconds: time(NULL) plus the offset. */
int64_t bg_now(void);
/* The same clock in nanoseconds (CLOCK_REALTIME plus the same offset), for
 * the order of use: shared by the processes of a machine, and strictly
 * increasing within a process, so that two uses never tie.  Thread-safe. */
int64_t bg_now_ns(void);
/* Milliseconds of CLOCK_MONOTONIC, for deadlines and durations only (no
 * offset: it never jumps). */
int64_t bg_mono_ms(void);

/* ---- Rates: the token bucket and the daily schedule (rate.c) ------------
 * One token bucket for every byte-rate limit of the programs (a job's own,
 * the daemon's, peerd's serving rate).  It holds at most one eighth of a
 * second of its rate (BG_RATE_BURST_DIV), but at least burst_min bytes, so
 * that no one-second window ever sees more than 1.125 times the rate plus
 * burst_min.  Time comes from the caller (milliseconds of bg_mono_ms() or
 * any clock that never goes back), so that a test drives it.  Thread-safe:
 * every call takes the bucket's mutex. */

#define BG_RATE_BURST_DIV 8
#define BG_RATE_MAX ((uint64_t)1 << 40) /* bytes/s (1 TiB/s), = BG_CONF_SERVE_RATE_MAX */

struct bg_rate {
	pthread_mutex_t lock;
	uint64_t rate;      /* bytes/s; 0: no limit (nothing below is used) */
	uint64_t burst_min; /* bytes */
	double burst;       /* bytes the bucket holds at most */
	double tokens;      /* bytes that may pass now (below 0: owed) */
	int64_t last_ms;    /* the last refill */
};

/* A full bucket of rate bytes/s (0: no limit).  BG_ENOMEM when the mutex
 * cannot be made. */
int bg_rate_init(struct bg_rate *b, uint64_t rate, uint64_t burst_min, int64_t now_ms) BG_WUR;
void bg_rate_destroy(struct bg_rate *b);
/* Changes the rate from now on (what was earned at the old rate is kept,
 * up to the new burst). */
void bg_rate_set(struct bg_rate *b, uint64_t rate, int64_t now_ms);
uint64_t bg_rate_get(struct bg_rate *b);
/* Takes at most want bytes when the bucket holds at least need of them
 * (need <= want): returns how many were taken, 0 when fewer than need are
 * there (nothing taken).  Without a limit: want. */
size_t bg_rate_take(struct bg_rate *b, size_t want, size_t need, int64_t now_ms);
/* Takes n bytes that passed already: the bucket may go below 0, and what
 * is owed delays whoever takes next. */
void bg_rate_charge(struct bg_rate *b, uint64_t n, int64_t now_ms);
/* Milliseconds until the bucket holds need bytes (0: now).  need 0: until
 * nothing is owed. */
int64_t bg_rate_due_ms(struct bg_rate *b, size_t need, int64_t now_ms);

/* A daily schedule of rates, as BITS's bandwidth policy has it: windows of
 * days and hours with a rate each, and a rate outside them.  Text form
 * (bg_rate_schedule_parse):
 *     WINDOW [, WINDOW]... [; outside RATE]     or "outside RATE" alone
 *     WINDOW = DAYS START-END RATE
 *     DAYS   = DAY | DAY-DAY | DAYS,DAYS   (mon tue wed thu fri sat sun;
 *              a range may wrap: fri-mon)
 *     START-END: whole hours of the local day, 0 <= START < END <= 24
 *     RATE   = bytes/s as bg_parse_bytes reads them, or none (0 is none)
 * e.g. "mon-fri 8-17 2M, sat,sun 0-24 none; outside 10M".  Windows may not
 * overlap.  Without "outside", the rate outside the windows is the caller's
 * (the daemon's max_rate). */
#define BG_RATE_WINDOWS_MAX 16
struct bg_rate_window {
	uint8_t days;        /* bit 0: Monday ... bit 6: Sunday */
	uint8_t start, end;  /* hours, start < end <= 24 */
	uint64_t rate;       /* bytes/s, 0: no limit */
};
struct bg_rate_schedule {
	struct bg_rate_window w[BG_RATE_WINDOWS_MAX];
	size_t n;
	bool has_outside;
	uint64_t outside;    /* bytes/s, 0: no limit (when has_outside) */
};
/* Parses s into *out.  BG_EINVAL with why (one line naming the problem)
 * for a bad day, hour, rate, separator or overlap. */
int bg_rate_schedule_parse(const char *s, struct bg_rate_schedule *out, char *why,
                           size_t whylen) BG_WUR;
/* The rate at unix time t (local time of the process's TZ): the window
 * holding t, else outside, else fallback.  *which (when not NULL): the
 * window's index, -1 outside the windows. */
uint64_t bg_rate_schedule_at(const struct bg_rate_schedule *s, uint64_t fallback, int64_t t,
                             int *which);
/* "mon-fri 08-17" (the days as one range or a list) into buf. */
const char *bg_rate_window_name(const struct bg_rate_window *w, char *buf, size_t len);
/* A rate limit as users write it: bytes/s as bg_parse_bytes reads them (at
 * most BG_RATE_MAX), or "none" (as 0) for no limit.  BG_EINVAL otherwise. */
int bg_parse_rate(const char *s, uint64_t *out) BG_WUR;
/* A rate as users read it: "none", else bytes/s with the largest exact
 * unit of 1024 ("10M", "1536K", "1000"). */
const char *bg_rate_name(uint64_t rate, char *buf, size_t len);

/* ---- The programs (prog.c) -----------------------------------------------
 * Exit statuses of bgcopy and bgcopy-peerd: 0 done; 1 the job ended in
 * ERROR (bgcopy only); 2 usage error or refused value; 3 store or system
 * error. */
enum bg_exit {
	EXIT_DONE = 0,
	EXIT_JOB_ERROR = 1,
	EXIT_USAGE = 2,
	EXIT_SYSTEM = 3,
};
#include <stdarg.h>
/* Prints "PROG: message\n" to stderr in one call (threads of a program
 * complain too), however long the message.  For programs, never for the
 * library, which returns codes and leaves the words to its callers. */
void bg_complain(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bg_vcomplain(const char *prog, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* ---- Files replaced whole (file.c) ----------------------------------------
 * A reader sees the old file or the new one, never a part, and after a
 * crash the name holds one of the two: the bytes go to a temporary file in
 * the same folder, which is synced, renamed over path, and the folder
 * synced (a folder that cannot be synced is not reported: the file is in
 * place by then).  On failure the temporary file is removed and path left
 * as it was. */
#include <sys/types.h>
/* Writes len bytes at data as path, created with mode (less the umask).
 * The temporary file is PATH.tmp.PID.N, created exclusively, so writers of
 * the same path in several threads or processes never share one. */
int bg_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode) BG_WUR;
/* The same with fill(fd, arg) writing the bytes (a non-zero return is the
 * error returned).  tmp_name, when not NULL, is the temporary file's name,
 * removed first: only for a caller that alone writes path (under a lock),
 * so that one a crash left behind is reused, not kept. */
int bg_file_replace(const char *path, const char *tmp_name, mode_t mode,
                    int (*fill)(int fd, void *arg), void *arg) BG_WUR;
/* fsync of the file (dir false) or folder (dir true) at path. */
int bg_fsync_path(const char *path, bool dir) BG_WUR;
/* rename(from, to), then a sync of to's folder as above: the new name is
 * on disk when it returns 0. */
int bg_rename_durable(const char *from, const char *to) BG_WUR;

/* ---- Limits (every size an origin, a peer or a file can grow) ---------- */
#define STORE_CHUNK_BYTES (64 * 4096 - 16) /* fills 64 LMDB overflow pages exactly */
#define STORE_URL_MAX 8192                 /* bytes, longest URL kept as a key */
#define STORE_VALIDATOR_MAX 1024           /* bytes, longest ETag / Last-Modified kept */
#define STORE_JOB_ID_LEN 36                /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
#define STORE_RECORD_MAX (1024 * 1024)     /* bytes, largest JSON record accepted */
#define STORE_MAX_READERS 256              /* LMDB reader slots, shared by all processes */

/* ---- The store --------------------------------------------------------- */
struct bg_store;
struct bg_txn;

#define STORE_RDONLY 0x1u /* open read-only (peerd); update functions give BG_ERDONLY */

struct store_options {
	uint64_t initial_map_bytes; /* 0: default (1 GiB or the current file size, if larger) */
};

/* Opens (creating if needed, unless STORE_RDONLY) the environment in home,
 * which must exist.  Creates the named databases on first use, checks the
 * format version (BG_EVERSION when newer than this build), and clears stale
 * reader slots left by dead processes.  opts may be NULL.
 * Refuses (BG_EUNSAFE) a home or store file that group or others may write:
 * whoever can replace the store decides what bgcopy and its peers receive.
 * Errors: BG_ENOENT (no store and STORE_RDONLY), BG_EACCES, BG_EVERSION,
 * BG_ENOMEM, BG_EIO.  Also BG_ECORRUPT (not an LMDB file, damaged version
 * record) and BG_EINVAL (bad arguments).  With STORE_RDONLY, BG_ENOENT also
 * covers a store the agent has created but not finished setting up (empty
 * file, databases not created yet): retry later. */
int store_open(const char *home, unsigned flags, const struct store_options *opts,
               struct bg_store **out) BG_WUR;
/* Closes the store; NULL is accepted.  No transaction may be active. */
void store_close(struct bg_store *st);
/* Current map size in bytes (for tests and `cache stats`). */
uint64_t store_map_bytes(struct bg_store *st);
/* Size of store.mdb on disk in bytes (0 when unknown). */
uint64_t store_file_bytes(struct bg_store *st);
/* Forces committed data to disk (fdatasync of the environment).  Commits are
 * made without a sync (MDB_NOSYNC): a kill -9 loses nothing committed, a power
 * loss may lose commits since the last store_sync().  Call it before
 * reporting anything as durable.  BG_ERDONLY on a read-only store. */
int store_sync(struct bg_store *st) BG_WUR;

/* Runs fn inside one write transaction and commits it.  If fn returns an
 * error the transaction is aborted and that error returned.  On MDB_MAP_FULL
 * (from fn's calls or from the commit) the transaction is aborted, the map
 * is doubled and fn is run again from the start: fn must therefore have no
 * side effects outside the transaction.  Errors: fn's, BG_ERDONLY,
 * BG_ENOSPC (the map cannot grow), BG_EIO.
 * After the map fills, txn_* calls return a private code until fn returns:
 * fn should pass any error of a txn_* call back unchanged (the retry happens
 * whatever fn returns).  A txn_* call that fails inside LMDB (anything but
 * BG_ENOENT / BG_EEXIST) spoils the transaction: store_update returns that
 * error even if fn ignored it.  fn must not call store_update, store_view,
 * store_read_content or store_gc on the same store (BG_EINVAL: nesting
 * could deadlock against a map resize). */
int store_update(struct bg_store *st, int (*fn)(struct bg_txn *txn, void *arg), void *arg) BG_WUR;
/* Runs fn inside one read transaction (restarted after MDB_MAP_RESIZED).
 * Memory borrowed from the store inside fn is valid only until fn returns.
 * The same no-nesting rule as store_update applies. */
int store_view(struct bg_store *st, int (*fn)(struct bg_txn *txn, void *arg), void *arg) BG_WUR;

/* -- Jobs and files.  The agent owns the schema; the store keeps the JSON.
 * Ids are STORE_JOB_ID_LEN characters.  Getters return a new reference the
 * caller must json_decref(); BG_ENOENT when absent; BG_ECORRUPT when the
 * stored bytes are not a JSON object. */
int txn_job_put(struct bg_txn *txn, const char *id, json_t *rec) BG_WUR;
int txn_job_get(struct bg_txn *txn, const char *id, json_t **out) BG_WUR;
/* The stored bytes of the job record, undecoded: valid until the
 * transaction ends or writes. */
int txn_job_raw(struct bg_txn *txn, const char *id, const void **data, size_t *len) BG_WUR;
/* Deletes the job and all its file records (not their blobs).  BG_ENOENT
 * when there is no job record (stray file records of the id still go). */
int txn_job_del(struct bg_txn *txn, const char *id) BG_WUR;
/* Calls fn(id, rec, arg) for every job in id order; a non-zero return of fn
 * stops the walk and is returned.  rec is borrowed for the call. */
int txn_job_each(struct bg_txn *txn, int (*fn)(const char *id, json_t *rec, void *arg),
                 void *arg) BG_WUR;
int txn_file_put(struct bg_txn *txn, const char *job_id, uint32_t index, json_t *rec) BG_WUR;
int txn_file_get(struct bg_txn *txn, const char *job_id, uint32_t index, json_t **out) BG_WUR;
/* Number of file records of a job (they are indexed 0..n-1). */
int txn_file_count(struct bg_txn *txn, const char *job_id, uint32_t *out) BG_WUR;

/* -- Blobs: numbered sequences of chunks.  A download in progress appends to
 * a blob of its own; at completion the blob becomes content (or is dropped
 * if identical content is already stored).  Chunk i holds bytes
 * [i * STORE_CHUNK_BYTES, ...); every chunk but the last of a blob is full. */
/* Allocates a fresh blob id (never 0, never reused).  Blob 0 passed to any
 * blob function gives BG_EINVAL.  store_gc() keeps a blob only while content
 * owns it or a file record names it (as its blob_of reads it): write that
 * file record in the same transaction that allocates the blob. */
int txn_blob_new(struct bg_txn *txn, uint64_t *out) BG_WUR;
/* Stores chunk index of blob (replacing any).  len <= STORE_CHUNK_BYTES. */
int txn_blob_put(struct bg_txn *txn, uint64_t blob, uint64_t index, const void *data,
                 size_t len) BG_WUR;
/* Borrows chunk index of blob: *data stays valid until the transaction ends.
 * BG_ENOENT when absent. */
int txn_blob_get(struct bg_txn *txn, uint64_t blob, uint64_t index, const void **data,
                 size_t *len) BG_WUR;
/* Deletes chunks index >= first of blob (first 0 drops the whole blob). */
int txn_blob_truncate(struct bg_txn *txn, uint64_t blob, uint64_t first) BG_WUR;

/* -- Content: SHA-256 -> blob.  The blob holds exactly the content's bytes
 * (ceil(size / STORE_CHUNK_BYTES) chunks); blob 0 is refused on put. */
struct store_content {
	uint64_t blob;
	uint64_t size;        /* bytes */
	int64_t created;      /* unix seconds */
	/* Unix nanoseconds (bg_now_ns()) of the last use: eviction follows
	 * the true order of use, also between uses within one second.  A
	 * record written by an older build (seconds) reads as the first
	 * nanosecond of its second. */
	int64_t last_used_ns;
};
int txn_content_get(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                    struct store_content *out) BG_WUR;
int txn_content_put(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                    const struct store_content *c) BG_WUR;
/* Deletes the content record and its blob's chunks.  A damaged record is
 * deleted too (its chunks are then left to store_gc()). */
int txn_content_del(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN]) BG_WUR;
/* *shared: whether a key that is not STORE_KEY_PRIVATE names content sha
 * (content only fetched with credentials is not). */
int txn_content_shared(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                       bool *shared) BG_WUR;
/* Calls fn for each content record in digest order (rec borrowed). */
int txn_content_each(struct bg_txn *txn,
                     int (*fn)(const unsigned char sha[BG_SHA256_LEN],
                               const struct store_content *c, void *arg),
                     void *arg) BG_WUR;

/* -- What bytes were fetched under (fetchpol.c).
 * Content fetched from an origin is only as trustworthy as the checks made
 * while fetching it.  A node never accepts from a peer content fetched
 * under weaker TLS checks, other trust anchors or another redirect policy
 * than its own job's.  The policy travels with key records ("fetch"), with
 * downloads in progress, and in the peer protocol's X-Bgcopy-Fetch header,
 * an RFC 8941 dictionary: "ignore=0, crl=?1, ca=system, redirect=silent,
 * h2h=?0".  The core has its own bits for it (it knows no BITS flags). */
#define STORE_FETCH_IGNORE_CN 0x1u    /* certificate name not checked */
#define STORE_FETCH_IGNORE_DATE 0x2u  /* certificate dates not checked */
#define STORE_FETCH_IGNORE_CA 0x4u    /* unknown CA accepted */
#define STORE_FETCH_IGNORE_USAGE 0x8u /* wrong key usage accepted */
#define STORE_FETCH_IGNORE_ALL 0xfu
enum store_fetch_redirect {
	STORE_FETCH_REDIRECT_SILENT = 0, /* followed, the original URL kept */
	STORE_FETCH_REDIRECT_REPORT = 1, /* followed, the final URL reported */
	STORE_FETCH_REDIRECT_DISALLOW = 2,
};
#define STORE_FETCH_CA_LEN 16         /* hex digits of a CA file's digest */
struct store_fetch_policy {
	bool known;        /* false: not recorded (an older writer) */
	uint32_t ignore;   /* STORE_FETCH_IGNORE_* */
	bool crl;          /* revocation was checked */
	bool h2h;          /* https -> http redirects were allowed */
	uint8_t redirect;  /* enum store_fetch_redirect */
	char ca[STORE_FETCH_CA_LEN + 1]; /* "system", or 16 hex of SHA-256(CA file) */
};
#define STORE_FETCH_POLICY_MAX 96 /* bytes of the formatted dictionary */
/* Writes p as the dictionary above (p->known must be true) into out
 * (STORE_FETCH_POLICY_MAX).  BG_EINVAL for an unknown or bad policy. */
int bg_fetch_policy_format(const struct store_fetch_policy *p, char *out, size_t outlen) BG_WUR;
/* Parses exactly that form (members in any order, every one present, no
 * other member, ignore 0..15, ca the token system or 16 lowercase hex
 * digits as a string, ca="0123456789abcdef", since an RFC 8941 token
 * cannot start with a digit; a boolean member alone means ?1).
 * 0 with *out known; BG_EINVAL for anything else (*out then unknown). */
int bg_fetch_policy_parse(const char *s, struct store_fetch_policy *out) BG_WUR;
/* Whether bytes fetched under theirs may be used by a job fetching under
 * mine: theirs is known, ignores no check mine makes, checked revocation
 * if mine does (https only: tls false means the URL is http, where the TLS
 * fields are moot), uses the same anchors and the same redirect policy,
 * and allows https -> http only if mine does.  why (may be NULL) receives
 * a short static reason when not. */
bool bg_fetch_policy_acceptable(const struct store_fetch_policy *theirs,
                                const struct store_fetch_policy *mine, bool tls,
                                const char **why);

/* -- Keys: URL -> content.  The URL is used byte for byte (the agent
 * canonicalises it); the LMDB key is SHA-256(url), the URL kept in the value. */
#define STORE_KEY_PRIVATE 0x1u /* fetched with credentials: never offered to peers */
struct store_key {
	char *url;                   /* owned */
	unsigned char sha256[BG_SHA256_LEN];
	uint64_t size;               /* bytes */
	char *etag;                  /* origin ETag as sent (quotes included), or NULL; owned */
	char *last_modified;         /* origin Last-Modified, or NULL; owned */
	char *date;                  /* Date of the response that gave them, or NULL; owned */
	int64_t stored;              /* unix seconds */
	int64_t validated;           /* unix seconds the origin last confirmed it */
	unsigned flags;              /* STORE_KEY_* */
	struct store_fetch_policy fetch; /* what the bytes were fetched under ("fetch") */
};
/* Frees what k owns and zeroes it; NULL is accepted. */
void store_key_clear(struct store_key *k);
/* Stores k under k->url (replacing any).  BG_ELIMIT for a URL longer than
 * STORE_URL_MAX or validators longer than STORE_VALIDATOR_MAX; BG_EINVAL for
 * an empty URL, a size above INT64_MAX, or a URL or validator that is not
 * valid UTF-8 (the record is JSON). */
int txn_key_put(struct bg_txn *txn, const struct store_key *k) BG_WUR;
/* Fills *out (owned copies; store_key_clear() it) or BG_ENOENT. */
int txn_key_get(struct bg_txn *txn, const char *url, struct store_key *out) BG_WUR;
int txn_key_del(struct bg_txn *txn, const char *url) BG_WUR;
/* Calls fn for each key (k borrowed for the call) in SHA-256(url) order. */
int txn_key_each(struct bg_txn *txn, int (*fn)(const struct store_key *k, void *arg),
                 void *arg) BG_WUR;

/* -- Convenience operations, each its own short transaction(s). */
/* Copies up to len bytes of content sha from offset into buf, in read
 * transactions of at most a few chunks (no transaction outlives the call).
 * *got receives the bytes copied (less than len only at the end).
 * BG_ENOENT when the content is absent, BG_ECORRUPT when a chunk is missing
 * or has the wrong size. */
int store_read_content(struct bg_store *st, const unsigned char sha[BG_SHA256_LEN],
                       uint64_t offset, void *buf, size_t len, size_t *got) BG_WUR;
/* The same, into file fd at the same offset (the bytes [offset, offset +
 * len) of the content go to [offset, offset + len) of the file), copied by
 * the kernel where it can.  *put receives the bytes written.  Also a
 * BG_E* code of the write. */
int store_write_content(struct bg_store *st, const unsigned char sha[BG_SHA256_LEN],
                        uint64_t offset, size_t len, int fd, size_t *put) BG_WUR;
/* Deletes every content record that no key points at, and every blob that
 * is neither content nor named by a file record (with the digests of its
 * chunks, and digests of such blobs that have no chunk); also downloads in
 * progress whose writer holds no lock and that were not updated for
 * STORE_INFLIGHT_STALE seconds, tombstones older than
 * STORE_INFLIGHT_TOMBSTONE and damaged inflight records (the lock files
 * are looked for in the store's own folder).  The schema of file
 * records is the caller's: blob_of(rec, len, blob) is given the stored bytes
 * of each (1 to STORE_RECORD_MAX bytes, borrowed for the call) and sets
 * *blob to the blob it names, or 0 for none.  A non-zero return (BG_ECORRUPT
 * for a record it cannot read, which might name a live blob) stops the
 * collection, which then removes nothing and returns that code.
 * *freed_entries / *freed_bytes (may be NULL) receive what was removed.
 * BG_EINVAL when blob_of is NULL. */
int store_gc(struct bg_store *st, int (*blob_of)(const void *rec, size_t len, uint64_t *blob),
             uint64_t *freed_entries, uint64_t *freed_bytes) BG_WUR;

/* Rewrites the store without its free pages (LMDB files never shrink) and
 * swaps the copy in atomically.  Only when no other process has the store
 * open: otherwise BG_EBUSY, with *holder set to the pid of one that has (0
 * when it cannot be seen).  *before / *after receive the file sizes.  On
 * success st may only be closed (it still maps the old file); processes
 * opening the store meanwhile wait for that.  BG_ERDONLY on a read-only
 * store. */
int store_compact(struct bg_store *st, uint64_t *before, uint64_t *after, int *holder) BG_WUR;

/* What store_verify() found wrong and removed. */
struct store_verify_bad {
	int is_key;          /* 0: a content entry; 1: a key on its own */
	int problem;         /* BG_EDIGEST: the bytes do not hash to the digest;
	                      * BG_ECORRUPT: a damaged record or a missing or
	                      * wrongly sized chunk; BG_ENOENT (keys): the
	                      * content it names is not in the store */
	unsigned char sha256[BG_SHA256_LEN]; /* zero for an undecodable key */
	uint64_t size;       /* bytes, as recorded */
	char **urls;         /* the keys removed with it (borrowed for the call) */
	size_t nurls;
};
struct store_verify_stats {
	uint64_t entries;      /* content entries checked */
	uint64_t bytes;        /* bytes re-hashed */
	uint64_t corrupt;      /* content entries removed */
	uint64_t keys;         /* keys checked */
	uint64_t keys_removed; /* with the content, or on their own */
};
/* Re-hashes every content entry, reading it back in short read transactions.
 * An entry whose bytes do not hash to its digest, or that cannot be read
 * whole, is removed with every key pointing at it, in one write transaction
 * that first checks the record is still the one read (content replaced or
 * removed meanwhile is left alone).  A good entry's chunk digests (pieces)
 * that are missing or wrong are written, in a write transaction of the
 * same kind.  Then keys that cannot be decoded or
 * name absent content are removed.  fn (may be NULL) is called after each
 * removal is committed; a non-zero return stops further calls and is
 * returned at the end.  stats (may be NULL) receives the counts.
 * Errors: fn's, BG_ERDONLY, and store errors. */
int store_verify(struct bg_store *st, int (*fn)(const struct store_verify_bad *bad, void *arg),
                 void *arg, struct store_verify_stats *stats) BG_WUR;

/* ---- Limits, use and counters (policy.c, stats.c, usage.c) --------------
 * The store keeps its content within a size limit by evicting the least
 * recently used content, and drops keys the origin has not confirmed for
 * max_age_days (content goes when no key names it).  Content a job that is
 * not over has finished into is pinned (txn_pin) and never evicted. */
#define STORE_DEFAULT_MAX_PERCENT 1     /* of the filesystem holding the home */
#define STORE_DEFAULT_MAX_AGE_DAYS 90
#define STORE_MAX_AGE_DAYS_MAX 36500

struct store_config {
	uint64_t max_size_bytes;    /* the limit in bytes, or 0 when given in percent */
	unsigned max_size_percent;  /* 1..100 of the filesystem, or 0 */
	uint32_t max_age_days;      /* 1..STORE_MAX_AGE_DAYS_MAX */
};
/* The configuration, or the defaults when none was set. */
int txn_config_get(struct bg_txn *txn, struct store_config *out) BG_WUR;
/* BG_EINVAL unless exactly one of bytes and percent is set and the values
 * are in range. */
int txn_config_put(struct bg_txn *txn, const struct store_config *c) BG_WUR;
/* The limit in bytes: c's bytes, or its percent of the filesystem that
 * holds the store. */
int store_limit_bytes(struct bg_store *st, const struct store_config *c, uint64_t *out) BG_WUR;

struct store_stats {
	uint64_t entries, bytes, keys;  /* what the store holds now */
	uint64_t evicted, evicted_bytes; /* content evicted for room */
	uint64_t expired;               /* keys dropped for age */
	uint64_t local_hits, local_misses; /* lookups bgcopy-peerd answered from here */
	uint64_t peer_hits, peer_misses;   /* lookups this node's downloads made of peers */
	uint64_t not_kept, not_kept_bytes; /* files larger than the limit, delivered only */
	/* This node's own downloads looking in its store first: content used
	 * without a request (a known SHA-256), revalidated (the origin said
	 * 304), or nothing usable found. */
	uint64_t store_hits, store_revalidated, store_misses;
};
int txn_stats_get(struct bg_txn *txn, struct store_stats *out) BG_WUR;
/* Adds (sign >= 0) or subtracts every field of d. */
int txn_stats_add(struct bg_txn *txn, const struct store_stats *d, int sign) BG_WUR;

/* Marks content used at when_ns (bg_now_ns()); never moves it back in
 * time, so a use reported late (bgcopy-peerd's) cannot make content look
 * newer than a later one. */
int txn_content_touch(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                      int64_t when_ns) BG_WUR;
/* Pins content to a job: not evicted while job_unfinished() says the job
 * is not over (see txn_enforce_limits). */
int txn_pin(struct bg_txn *txn, const char *job_id, const unsigned char sha[BG_SHA256_LEN]) BG_WUR;
/* Deletes content and every key naming it; *keys (may be NULL) counts the
 * keys.  0 when the content was absent. */
int txn_content_drop(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                     uint64_t *keys) BG_WUR;

struct store_enforce_result {
	uint64_t evicted, evicted_bytes;   /* content evicted, least recently used first */
	uint64_t expired;                  /* keys validated more than max age ago */
	uint64_t expired_entries, expired_bytes; /* content gone with its last key */
	uint64_t keys_removed;
	uint64_t over_limit;               /* bytes still above the limit (pinned content) */
};
/* Drops expired keys (and content no key names any more), then evicts
 * unpinned content, least recently used first, until the content fits in
 * limit bytes; then deletes inflight tombstones older than
 * STORE_INFLIGHT_TOMBSTONE at now.  job_unfinished(job record) says whether a pinning job is
 * not over; pins of jobs that are over, or gone, are deleted. */
int txn_enforce_limits(struct bg_txn *txn, uint64_t limit, int64_t now, uint32_t max_age_days,
                       int (*job_unfinished)(const json_t *job),
                       struct store_enforce_result *res) BG_WUR;

/* What bgcopy-peerd saw: content served (hit, with its digest) or a lookup
 * of a URL it does not have (miss).  peerd opens the store read-only, so it
 * appends these to HOME/usage.log (0600, whole records under flock), and
 * the agent folds the log into the store (last use, counters) before it
 * enforces limits or reports them. */
struct store_usage {
	int hit;
	uint32_t count;     /* times (0 counts as 1) */
	int64_t when_ns;    /* the last of them, bg_now_ns() when it happened */
	unsigned char sha256[BG_SHA256_LEN];
};
/* BG_ELIMIT once the log holds 16 MiB that nobody folded: use is dropped. */
int store_usage_append(const char *home, const struct store_usage *u, size_t n) BG_WUR;
int store_usage_fold(struct bg_store *st, const char *home) BG_WUR;

/* ---- Peer protocol authentication (peerauth.c) --------------------------
 * Shared by the peer client (agent) and bgcopy-peerd.  With a key on both
 * sides, a request carries PEER_AUTH_HEADER: "t=UNIX_SECONDS,n=NONCE,sig=HEX"
 * where sig = HMAC-SHA256(key, METHOD "\n" PATH "\n" KEY_URL "\n"
 * UNIX_SECONDS "\n" NONCE), KEY_URL being the url= argument as decoded and
 * NONCE 16 random lowercase hex digits (many nodes of a fleet ask one peer
 * for one URL within the same second).  The first form, without ",n=" and
 * without "\n" NONCE in the MAC, is still accepted.  A signature is valid for
 * PEER_AUTH_WINDOW seconds either side of the server's clock; the server
 * refuses one it has already seen (replay). */
#define PEER_AUTH_HEADER "X-Bgcopy-Auth"
#define PEER_PATH_CONTENT "/v1/content" /* the path signed for content requests */
#define PEER_AUTH_WINDOW 300     /* seconds */
#define PEER_KEY_MIN 16          /* bytes */
#define PEER_KEY_MAX 4096        /* bytes */
#define PEER_AUTH_VALUE_MAX 128  /* bytes of the header value */
#define PEER_AUTH_NONCE_LEN 16   /* hex digits of a request's nonce */

/* Reads a key file (its bytes, a trailing newline dropped) into key
 * (PEER_KEY_MAX bytes).  BG_EINVAL when shorter than PEER_KEY_MIN or
 * longer than PEER_KEY_MAX; BG_EUNSAFE when the file is not a regular file
 * or group or others may read or write it (a shared secret); errno-based
 * errors otherwise. */
int peer_key_load(const char *path, unsigned char *key, size_t *keylen) BG_WUR;
/* Writes the header value for a request into out (PEER_AUTH_VALUE_MAX). */
int peer_auth_sign(const unsigned char *key, size_t keylen, const char *method,
                   const char *path, const char *url, int64_t now, char *out,
                   size_t outlen) BG_WUR;
/* Checks a header value in constant time.  0 when it is right and within
 * the window (sig receives the signature, for replay checks), BG_EACCES
 * otherwise (missing, malformed, wrong, too old or too new). */
int peer_auth_check(const unsigned char *key, size_t keylen, const char *method,
                    const char *path, const char *url, const char *value, int64_t now,
                    unsigned char sig[BG_SHA256_LEN]) BG_WUR;

/* With a key, peerd also signs its content answers (HEAD and GET, 200 and
 * 206) with PEER_AUTH_HEADER: "sig=HEX", HMAC-SHA256(key, "answer" "\n"
 * REQUEST_VALUE "\n" SHA256_HEX "\n" SIZE "\n" ORIGIN_ETAG "\n"
 * LAST_MODIFIED "\n"), REQUEST_VALUE being the request's own header value
 * (unique: replays are refused), SIZE the entry's whole size and absent
 * validators empty.  A client holding the key thus knows the entry it is
 * described came from a holder of the key, for this request: a machine
 * answering in a peer's place cannot describe other bytes. */
int peer_auth_sign_answer(const unsigned char *key, size_t keylen, const char *request_value,
                          const char *sha_hex, uint64_t size, const char *origin_etag,
                          const char *last_modified, char *out, size_t outlen) BG_WUR;
/* 0 when value is the right signature, BG_EACCES otherwise. */
int peer_auth_check_answer(const unsigned char *key, size_t keylen, const char *request_value,
                           const char *sha_hex, uint64_t size, const char *origin_etag,
                           const char *last_modified, const char *value) BG_WUR;

/* The fleet's paths (peerd/README.md describes them): a download in
 * progress served as it arrives, and the piece lists.  Their answers are
 * signed with PEER_SIGNED_HEADER: "v=2,sig=HEX", HMAC-SHA256(key,
 * "answer2" "\n" REQUEST_VALUE "\n" PATH "\n" STATUS "\n" f[0] "\n" ...
 * f[n-1] "\n"), the fields being the answer's header values in the order
 * peerd/README.md lists for the path (an absent one empty).  /v1/content
 * answers carry it too, beside the unchanged PEER_AUTH_HEADER. */
#define PEER_PATH_PARTIAL "/v1/partial"
#define PEER_PATH_PIECES "/v1/pieces"
#define PEER_SIGNED_HEADER "X-Bgcopy-Signed"
#define PEER_WAIT_HEADER "X-Bgcopy-Wait"
#define PEER_FETCH_HEADER "X-Bgcopy-Fetch"
#define PEER_PARTIAL_WAIT_MAX_MS 30000 /* the longest wait peerd ever grants */
#define PEER_PIECES_MAX 65536          /* digests in one /v1/pieces answer */
int peer_auth_sign_fields(const unsigned char *key, size_t keylen, const char *request_value,
                          const char *path, unsigned status, const char *const *f, size_t n,
                          char *out, size_t outlen) BG_WUR;
/* 0 when value is the right "v=2,sig=HEX", BG_EACCES otherwise. */
int peer_auth_check_fields(const unsigned char *key, size_t keylen, const char *request_value,
                           const char *path, unsigned status, const char *const *f, size_t n,
                           const char *value) BG_WUR;

/* The key's fingerprint, published in DNS-SD TXT records so that nodes
 * holding different keys do not try each other: the first 8 bytes of
 * HMAC-SHA256(key, "bgcopy peer key fingerprint 1") in lowercase hex, or
 * "none" when keylen is 0.  It tells nothing about the key beyond equality. */
#define PEER_KEY_FP_LEN 16
int peer_key_fingerprint(const unsigned char *key, size_t keylen,
                         char out[PEER_KEY_FP_LEN + 1]) BG_WUR;

/* ---- The node's identity (node.c) ---------------------------------------
 * A node is one home: HOME/node-id holds 16 random bytes in lowercase hex
 * (and a newline), made the first time bgcopy or bgcopy-peerd asks for it.
 * Discovery publishes it, so that a node knows itself among its peers and
 * sees one peer once whatever addresses it has.  Without the home (peerd
 * started before bgcopy ever ran) the id is random for this process. */
#define BG_NODE_ID_LEN 32
int bg_node_id(const char *home, char out[BG_NODE_ID_LEN + 1]) BG_WUR;

/* ---- Peers' results (peers.c) ------------------------------------------
 * What this node's downloads learnt of each peer, kept in the store for
 * `bgcopy peers`: one record per "ADDR:PORT" (IPv6 in brackets; at most
 * STORE_PEER_KEY_MAX bytes, longer names are not recorded: BG_EINVAL).
 * A lookup's result (the job document's peer_lookups[].result) counts as:
 * "hit" a hit; "miss" and "stale" (the peer's copy is not the origin's
 * current one) a miss; "error" (no answer, refused, bad answer) and
 * "failed" (the transfer broke off) a failure; "rejected" (the bytes were
 * not what the peer described) a rejection.  Every result sets last_used;
 * all but error and failed also last_seen (the peer answered).
 *
 * The database is pruned as notes and sightings are written: records
 * neither seen nor used for STORE_PEER_MAX_AGE (against the write's when),
 * and damaged ones, go (a walk at most once a day per process); beyond
 * STORE_PEERS_MAX records, the oldest (by the later of last_seen and
 * last_used) go.  The record being written is never pruned. */
#define PEER_PORT_DEFAULT 7654 /* bgcopy-peerd's TCP port, and DNS peers' without SRV */
#define STORE_PEER_KEY_MAX 80
#define STORE_PEERS_MAX 1024                 /* peers' records kept at most */
#define STORE_PEER_MAX_AGE (30 * 24 * 3600)  /* seconds a record is kept unseen and unused */
struct store_peer {
	char peer[STORE_PEER_KEY_MAX + 1];
	char source[8];                  /* "option" "static" "dns" "mdns", or "" */
	char node[BG_NODE_ID_LEN + 1];   /* its node id, "" when not known */
	int64_t last_seen, last_used;    /* unix seconds, 0: never */
	char last_result[16];            /* as noted, "" when none */
	uint64_t hits, misses, failures, rejected;
};
/* Notes one lookup of peer; source and node (NULL or "": unchanged) are
 * kept as the latest.  BG_EINVAL for a result not listed above;
 * BG_ERDONLY in a store opened read-only. */
int txn_peer_note(struct bg_txn *txn, const char *peer, const char *source, const char *node,
                  const char *result, int64_t when) BG_WUR;
/* Notes that the peer was seen (discovered) at when. */
int txn_peer_seen(struct bg_txn *txn, const char *peer, const char *source, const char *node,
                  int64_t when) BG_WUR;
/* BG_ENOENT when nothing is known of peer. */
int txn_peer_get(struct bg_txn *txn, const char *peer, struct store_peer *out) BG_WUR;
/* Calls fn for every peer known, in key order; a non-zero return stops
 * the walk and is returned.  Damaged records are passed over. */
int txn_peer_each(struct bg_txn *txn, int (*fn)(const struct store_peer *p, void *arg),
                  void *arg) BG_WUR;

/* ---- Pieces (pieces.c) ----------------------------------------------------
 * A piece is a store chunk: the SHA-256 of each chunk of a blob is kept in
 * the database "pieces", keyed like the chunk (blob id, chunk index), and
 * goes with the chunk (txn_blob_truncate, txn_content_del, eviction and
 * store_gc drop both).  A piece list is what lets a node take different
 * pieces of one file from several peers and check each on arrival; the
 * whole-file SHA-256 stays the content's identity.  Only full chunks of a
 * blob still being written have a digest (the agent stores a chunk's with
 * its next commit of the file, so the last full chunk may lack one for a
 * while, or after a crash until the resume); content (finished) has one for
 * every chunk, the short last one included, unless it was stored by an
 * older build (then its list is filled lazily: store_pieces_fill). */
#define STORE_PIECE_LEN BG_SHA256_LEN
#define STORE_PIECE_BYTES STORE_CHUNK_BYTES
/* Stores the digest of chunk index of blob (replacing any). */
int txn_piece_put(struct bg_txn *txn, uint64_t blob, uint64_t index,
                  const unsigned char d[STORE_PIECE_LEN]) BG_WUR;
/* BG_ENOENT when the chunk has no digest. */
int txn_piece_get(struct bg_txn *txn, uint64_t blob, uint64_t index,
                  unsigned char d[STORE_PIECE_LEN]) BG_WUR;
/* Copies the digests of chunks first, first + 1, ... of blob into out
 * (room for max of them), stopping at the first chunk without one; *n
 * receives how many were copied (0 is not an error). */
int txn_pieces_read(struct bg_txn *txn, uint64_t blob, uint64_t first, uint64_t max,
                    unsigned char *out, uint64_t *n) BG_WUR;
/* *complete: whether content sha has a digest for every chunk of its blob.
 * BG_ENOENT when the content is absent. */
int txn_content_pieces_complete(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                                bool *complete) BG_WUR;
/* Computes and writes missing digests of content sha, at most max_chunks
 * per call, each call its own short transactions (reads, then one write
 * that first checks the content record is still the one read).  *left
 * (may be NULL) receives the chunks still without a digest.  BG_ENOENT
 * when the content is absent; BG_ERDONLY on a read-only store. */
int store_pieces_fill(struct bg_store *st, const unsigned char sha[BG_SHA256_LEN],
                      uint64_t max_chunks, uint64_t *left) BG_WUR;
/* Fills the list of the next content entry, in digest order from `from`
 * (inclusive), whose list lacks digests: at most max_chunks chunks (as
 * store_pieces_fill), and looks at no more than a few thousand records per
 * call.  `from` is advanced for the next call; *done is set once no entry
 * at or after it lacks digests.  A caller walks the whole store with
 * `from` zeroed first; each call is a few short transactions.  BG_ERDONLY
 * on a read-only store. */
int store_pieces_fill_next(struct bg_store *st, unsigned char from[BG_SHA256_LEN],
                           uint64_t max_chunks, bool *done) BG_WUR;

/* ---- Downloads in progress (inflight.c) -----------------------------------
 * Each cached download on this node publishes what it has committed so far
 * in the database "inflight", keyed by SHA-256(url) like keys, so that
 * bgcopy-peerd can serve the prefix while the rest arrives.  The agent
 * rewrites the record in the same write transaction as every chunk (and
 * its digest): committed never counts a byte that is not in the store,
 * also after a kill -9.  When the file is finished the transaction that
 * writes its key turns the record into a tombstone (state final, sha256).
 * A restart from byte 0 gets a new gen: readers of an older incarnation
 * get BG_EAGAIN.  Liveness of the writer: it holds flock(LOCK_EX) on
 * HOME/STORE_INFLIGHT_LOCK_DIR/<urlhash hex>.lock while it fetches. */
#define STORE_INFLIGHT_LOCK_DIR "inflight"
#define STORE_INFLIGHT_TOMBSTONE 600 /* seconds a final record is kept */
#define STORE_INFLIGHT_STALE 60      /* seconds a lock-free record is kept by gc */
enum store_inflight_state {
	STORE_INFLIGHT_WANT = 0,   /* wants the URL, fetches nothing yet */
	STORE_INFLIGHT_ORIGIN = 1, /* fetching from the origin */
	STORE_INFLIGHT_PEER = 2,   /* fetching from peers */
	STORE_INFLIGHT_FINAL = 3,  /* finished: sha256 names the content */
};
struct store_inflight {
	char *url;                 /* owned */
	char job[STORE_JOB_ID_LEN + 1];
	uint32_t file;
	uint64_t blob;             /* 0 until the first chunk */
	uint64_t gen;              /* incarnation, 1 .. 2^63-1 */
	uint64_t committed;        /* bytes of blob in the store */
	int64_t total;             /* the origin's size, -1 unknown */
	enum store_inflight_state state;
	char *etag, *last_modified, *date, *final_url; /* owned, or NULL */
	struct store_fetch_policy fetch;
	char source[BG_NODE_ID_LEN + 1]; /* PEER: the node whose list is trusted, or "" */
	bool has_sha;              /* FINAL */
	unsigned char sha256[BG_SHA256_LEN];
	int64_t started, updated;  /* unix seconds */
};
/* Frees what f owns and zeroes it; NULL is accepted. */
void store_inflight_clear(struct store_inflight *f);
/* State names "want" "origin" "peer" "final" (NULL for others). */
const char *store_inflight_state_name(enum store_inflight_state s);
/* Stores f under f->url (replacing any).  BG_EINVAL for an empty URL, gen
 * 0 or above INT64_MAX, committed above total when known, a bad state, a
 * final record without sha256; BG_ELIMIT as txn_key_put. */
int txn_inflight_put(struct bg_txn *txn, const struct store_inflight *f) BG_WUR;
/* Fills *out (owned copies; store_inflight_clear() it).  BG_ENOENT;
 * BG_ECORRUPT for a record that cannot be decoded. */
int txn_inflight_get(struct bg_txn *txn, const char *url, struct store_inflight *out) BG_WUR;
int txn_inflight_get_hash(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                          struct store_inflight *out) BG_WUR;
/* BG_ENOENT when absent; a damaged record is deleted too. */
int txn_inflight_del(struct bg_txn *txn, const char *url) BG_WUR;
/* Calls fn for every decodable record (borrowed for the call) in
 * SHA-256(url) order; a non-zero return stops the walk and is returned. */
int txn_inflight_each(struct bg_txn *txn,
                      int (*fn)(const struct store_inflight *f, void *arg), void *arg) BG_WUR;
/* The lock file path of urlhash under home into out. */
int store_inflight_lock_path(const char *home, const unsigned char urlhash[BG_SHA256_LEN],
                             char *out, size_t outlen) BG_WUR;
/* Whether the writer of urlhash is alive: its lock file exists and is
 * locked (tested with flock(LOCK_SH | LOCK_NB), never created). */
bool store_inflight_alive(const char *home, const unsigned char urlhash[BG_SHA256_LEN]);
/* Copies up to len bytes from offset of the download of urlhash,
 * incarnation gen, into buf, never a byte past the record's committed (each
 * read transaction checks the record and reads the chunks together), in
 * read transactions of at most a few chunks.  Once the record is final
 * the bytes come from its content.  *got: bytes copied (less than len only
 * at the committed end).  BG_ENOENT: no such download (or its content has
 * gone); BG_EAGAIN: another incarnation is being written now. */
int store_read_inflight(struct bg_store *st, const unsigned char urlhash[BG_SHA256_LEN],
                        uint64_t gen, uint64_t offset, void *buf, size_t len,
                        size_t *got) BG_WUR;

#endif /* BG_CACHE_H */
