/*
 * peerd.h - bgcopy-peerd, the LAN peer cache: serves the content store
 * read-only over HTTP/1.1 (libmicrohttpd).  The protocol is in README.md.
 *
 * This header includes no libmicrohttpd header: main.c and tests see only
 * the daemon's life cycle, its limits and the pure helpers (Range parsing,
 * the replay set) that tests can call directly.
 *
 * Threads: peerd_start() runs libmicrohttpd with its own polling threads
 * (a pool); the request handlers share the store (store_view() and
 * store_read_content(), each a short read transaction that never spans
 * network I/O), atomic counters and the mutex-protected replay set.  One
 * thread of peerd's own watches the downloads in progress that suspended
 * requests wait on (X-Bgcopy-Wait) and resumes them, and the bodies
 * suspended for the serving rate (serve_rate), which it resumes as the
 * rate allows.
 * peerd_start(), peerd_port() and peerd_stop() are called by one thread.
 */
#ifndef BG_PEERD_H
#define BG_PEERD_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cache.h"

/* ---- Defaults and limits ------------------------------------------------
 * Everything a peer can grow is bounded here. */
#define PEERD_LISTEN_DEFAULT "127.0.0.1"
#define PEERD_PORT_DEFAULT PEER_PORT_DEFAULT /* TCP port (cache.h) */
#define PEERD_CONNECTIONS_DEFAULT 1000       /* open connections, split over the threads */
#define PEERD_CONNECTIONS_MAX 100000
#define PEERD_TIMEOUT_DEFAULT 30             /* seconds a connection may stay idle */
#define PEERD_TIMEOUT_MAX 86400              /* seconds */
/* Polling threads (0 = one per online CPU).  Each thread holds at most one
 * read transaction at a time; the store has 256 LMDB reader slots for all
 * processes together, so peerd keeps well below that. */
#define PEERD_THREADS_MAX (STORE_MAX_READERS / 4) /* leave most reader slots to the agent */
/* Bytes of per-connection memory for the request line, headers and response
 * headers.  The longest key, percent-encoded in full (3 * STORE_URL_MAX),
 * fits with room for ordinary headers; larger requests get 414/431 from
 * libmicrohttpd before any handler runs. */
#define PEERD_CONNECTION_MEMORY_DEFAULT (32 * 1024)
/* Bytes read from the store per body read: one chunk, so that a full
 * response reads whole chunks.  Also the buffer of each response being
 * sent: with every connection streaming, max_connections * 256 KiB (250 MiB
 * at the default limit) is the worst case. */
#define PEERD_BLOCK_BYTES STORE_CHUNK_BYTES
/* Entries up to this size are read with their lookup and answered from
 * memory (one transaction, no read callback). */
#define PEERD_SMALL_BYTES (64 * 1024)
/* What was served is reported to the agent (HOME/usage.log) in batches of
 * this many requests, or this often, whichever comes first. */
#define PEERD_USAGE_BATCH 256
#define PEERD_USAGE_FLUSH_SECONDS 2
#define PEERD_METRICS_MAX 4096               /* bytes of the /metrics body */
/* The bounded wait of /v1/partial and /v1/pieces (X-Bgcopy-Wait): the
 * longest wait granted unless configured (partial_wait_max), and how often
 * the watcher thread looks at the records waited on. */
#define PEERD_PARTIAL_WAIT_DEFAULT_MS 10000
#define PEERD_WAIT_POLL_MS 25
/* Connections one client address may hold open (0: no limit). */
#define PEERD_PER_PEER_DEFAULT 8
#define PEERD_PER_PEER_MAX 1000
/* The serving rate (serve_rate): bytes/s of every body together, at most
 * config.h's BG_CONF_SERVE_RATE_MAX.  The token bucket (the core's
 * bg_rate) holds an eighth of a second of the rate, and at least
 * PEERD_RATE_BURST_MIN so that a slow rate still
 * sends in blocks of some size.  A body out of tokens is suspended and
 * resumed once the bucket holds PEERD_WAIT_POLL_MS of the rate, at least
 * PEERD_RATE_GRANT_MIN bytes (or what the block still needs): fewer
 * resumes, each worth a send. */
#define PEERD_SERVE_RATE_MAX ((uint64_t)1 << 40)
#define PEERD_RATE_BURST_MIN (64 * 1024)
#define PEERD_RATE_GRANT_MIN 4096

/* The replay set: signatures seen whose timestamp is still inside the
 * window.  An entry lives until t + PEER_AUTH_WINDOW (after that the
 * signature fails peer_auth_check anyway).  A signature is looked up in
 * PEERD_REPLAY_PROBE slots from its hash; when all of them hold live
 * entries the set is full there and the request is refused (503) rather
 * than a recent signature forgotten. */
#define PEERD_REPLAY_SLOTS 65536
#define PEERD_REPLAY_PROBE 32

struct peerd;

struct peerd_config {
	const char *listen;          /* numeric IPv4 or IPv6 address ("::1", "[::1]") */
	unsigned port;               /* 0: the kernel picks (see peerd_port()) */
	unsigned threads;            /* polling threads; 0: one per online CPU */
	unsigned max_connections;    /* >= threads */
	unsigned timeout;            /* seconds idle before a connection is closed */
	size_t connection_memory;    /* bytes per connection for the request */
	unsigned partial_wait_max_ms; /* longest X-Bgcopy-Wait granted, <= PEER_PARTIAL_WAIT_MAX_MS;
	                              * 0: never wait */
	unsigned per_peer;           /* connections per client address, 0: no limit */
	uint64_t serve_rate;         /* bytes/s of all bodies together, <= PEERD_SERVE_RATE_MAX;
	                              * 0: no limit */
	const char *home;            /* where to report use (HOME/usage.log) and, without a
	                              * store at start, to find it; NULL: nowhere */
	const unsigned char *peer_key; /* NULL: no authentication; copied by peerd_start */
	size_t peer_key_len;
	/* Diagnostics (libmicrohttpd's and peerd's own), one message per call
	 * without a trailing newline; NULL: dropped.  Called from any thread. */
	void (*log)(void *cls, const char *fmt, va_list ap);
	void *log_cls;
};

/* Fills c with the defaults above (no key, no log). */
void peerd_config_init(struct peerd_config *c);

/* Parses a numeric address ("127.0.0.1", "::1", "[fe80::1%eth0]") and a
 * port into *sa (a struct sockaddr_in or sockaddr_in6) and *salen
 * (sizeof of it).  BG_EINVAL for anything else (no name lookups). */
int peerd_parse_listen(const char *addr, unsigned port, struct sockaddr_storage *sa,
                       unsigned *salen) BG_WUR;

/* Starts serving st (borrowed: it must stay open until peerd_stop()
 * returns; open it with STORE_RDONLY) on c->listen:c->port.  st may be
 * NULL when c->home has no store yet: content is then answered 404 until a
 * request finds one there, which peerd opens (STORE_RDONLY, creating
 * nothing), keeps and closes in peerd_stop(); a store that cannot be
 * opened then (unsafe, damaged) is answered 500 and logged.  Returns once
 * the socket listens.  Errors: BG_EINVAL (bad address or limits, or
 * neither st nor c->home), BG_ENOMEM, BG_EIO (libmicrohttpd could not
 * start, e.g. the port is taken: the reason went to c->log). */
int peerd_start(const struct peerd_config *c, struct bg_store *st, struct peerd **out) BG_WUR;
/* The TCP port the daemon listens on (the kernel's choice for port 0). */
unsigned peerd_port(const struct peerd *pd);
/* Stops listening, closes every connection (transfers in flight are cut),
 * waits for the threads and frees pd.  NULL is accepted. */
void peerd_stop(struct peerd *pd);

/* The libmicrohttpd version in use ("0.9.75"), for --version. */
const char *peerd_mhd_version(void);

/* ---- Range (RFC 9110 section 14) ---------------------------------------- */
enum peerd_range {
	PEERD_RANGE_NONE,           /* no usable Range: answer 200 with everything */
	PEERD_RANGE_OK,             /* one satisfiable range: 206 */
	PEERD_RANGE_UNSATISFIABLE,  /* 416 with Content-Range: bytes * / size */
};
/* Reads a Range header value for a representation of size bytes.  Only a
 * single range is served: "bytes=A-B" (B clamped to size - 1), "bytes=A-",
 * "bytes=-N" (the last N bytes, all of them if N > size).  A value with
 * several ranges, another unit or any syntax error gives PEERD_RANGE_NONE
 * (the header is ignored, as RFC 9110 allows; B < A is such an error);
 * A >= size, and a suffix "-N" when N is 0 or size is 0, give
 * PEERD_RANGE_UNSATISFIABLE.  Numbers too big for 64 bits saturate.  On
 * PEERD_RANGE_OK, *start and *len (>= 1) describe the bytes to send. */
enum peerd_range peerd_range_parse(const char *value, uint64_t size, uint64_t *start,
                                   uint64_t *len);

/* ---- Conditional requests (RFC 9110 section 13) -------------------------- */
enum peerd_match {
	PEERD_MATCH_NO,       /* a valid list that names no tag matching etag */
	PEERD_MATCH_YES,      /* "*", or a member that matches etag */
	PEERD_MATCH_INVALID,  /* not "*" nor a list of entity-tags (also an empty list) */
};
/* Compares an If-Match or If-None-Match field value ("*" or a comma list
 * of entity-tags, W/ prefixed or not) with etag (one entity-tag, quotes
 * included), strongly (both must be strong: If-Match, If-Range) or weakly
 * (only the opaque-tags count: If-None-Match), RFC 9110 section 8.8.3.2.
 * "*" matches: callers ask only about a representation that exists. */
enum peerd_match peerd_etag_match(const char *field, const char *etag, bool weak_compare);

/* Parses an HTTP-date in any of the three forms a recipient must accept
 * (RFC 9110 section 5.6.7): IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT",
 * rfc850-date "Sunday, 06-Nov-94 08:49:37 GMT" (a two-digit year more than
 * 50 years after now, unix seconds, is taken a century earlier) and
 * asctime-date "Sun Nov  6 08:49:37 1994", with optional whitespace around.
 * Names are case-sensitive; the date must exist.  *out: unix seconds.
 * 0, or BG_EINVAL for anything else. */
int peerd_http_date_parse(const char *value, int64_t now, int64_t *out) BG_WUR;

/* ---- The wait request (X-Bgcopy-Wait) ------------------------------------- */
/* Reads "ms=M, min=K", an RFC 8941 dictionary whose members ms and min
 * are both optional non-negative Integers (at most 15 digits, section
 * 3.3.1); other members are ignored (section 3.2: a recipient ignores
 * what it does not understand), parameters of any member too.  A member
 * given twice counts with its last value (section 4.2.2).  *ms and *min
 * keep their values for absent members.  0, or BG_EINVAL for a value that
 * is not such a dictionary or whose ms or min is not an Integer >= 0. */
int peerd_wait_parse(const char *value, uint64_t *ms, uint64_t *min) BG_WUR;

/* ---- Replay set ----------------------------------------------------------- */
struct peerd_replay;
enum peerd_replay_result {
	PEERD_REPLAY_NEW,     /* first sighting, now recorded */
	PEERD_REPLAY_SEEN,    /* recorded before and still inside the window */
	PEERD_REPLAY_FULL,    /* no free slot near its hash: refuse, try later */
};
/* A set of PEERD_REPLAY_SLOTS entries (about 2.5 MiB, mapped lazily), or
 * NULL when out of memory.  Thread-safe. */
struct peerd_replay *peerd_replay_new(void);
void peerd_replay_free(struct peerd_replay *r);
/* Records sig (valid until expires, unix seconds) unless already present;
 * entries whose expiry is before now are treated as free. */
enum peerd_replay_result peerd_replay_check(struct peerd_replay *r,
                                            const unsigned char sig[BG_SHA256_LEN],
                                            int64_t expires, int64_t now);

#endif /* BG_PEERD_H */
