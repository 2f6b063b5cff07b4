/*
 * peerd.c - the HTTP side of bgcopy-peerd: libmicrohttpd set-up, the
 * message rules, routing, content responses with preconditions and Range,
 * authentication, metrics.
 *
 * Every request runs in one of libmicrohttpd's pool threads.  Looking a key
 * up is one short read transaction (store_view); the body is produced by a
 * content-reader callback that reads one block per call with
 * store_read_content(), its own transaction each time.  No transaction is
 * ever open while a socket is written, so a slow peer pins no store pages.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "peerd.h"

#define PATH_CONTENT PEER_PATH_CONTENT
#define PATH_PARTIAL PEER_PATH_PARTIAL
#define PATH_PIECES PEER_PATH_PIECES
#define PATH_HEALTH "/v1/health"
#define PATH_METRICS "/metrics"
#define AUTH_SCHEME "BGCOPY-HMAC-SHA256"
#define ETAG_LEN (BG_SHA256_HEX_LEN + 2)     /* the hex digest in quotes */
#define REPR_DIGEST_LEN (9 + 44 + 1)         /* "sha-256=:" base64(32 bytes) ":" */

/* A request waiting (X-Bgcopy-Wait) for a download in progress to grow:
 * its connection is suspended until the watcher thread sees the record of
 * urlhash reach need bytes, change incarnation, become final or lose its
 * writer, or the deadline pass.  Owned by the request (its req_cls, freed
 * when libmicrohttpd completes the request); in pd->waiters while
 * suspended. */
struct waiter {
	struct waiter *next;
	struct MHD_Connection *conn;
	unsigned char urlhash[BG_SHA256_LEN];
	uint64_t gen;
	uint64_t need;                  /* bytes committed that end the wait */
	int64_t deadline_ms;            /* bg_mono_ms() */
	int64_t alive_checked_ms;       /* the writer's lock last tested */
	bool ready;
};

/* A body out of tokens (serve_rate): its connection is suspended until the
 * watcher hands it some.  Part of the body's state (struct body, struct
 * pbody); in pd->throttled, under wait_lock, only while suspended. */
struct throttle {
	struct throttle *next;
	struct MHD_Connection *conn;
	size_t want;                    /* bytes the reader was asked for */
	size_t grant;                   /* bytes handed over by the watcher, not yet sent */
	int64_t since_ms;               /* suspended at, bg_mono_ms() */
	bool queued;                    /* in pd->throttled */
};

/* Statuses counted by /metrics; anything else falls in the last slot. */
static const unsigned counted_status[] = {200, 206, 304, 400, 401, 404, 405, 412, 414, 416,
                                          500, 503};
#define N_STATUS (sizeof(counted_status) / sizeof(counted_status[0]))

struct peerd {
	struct MHD_Daemon *mhd;
	/* The store: borrowed from peerd_start()'s caller, or NULL until a
	 * request finds one in the home (store_get()), then owned.  Set once,
	 * under store_lock; read without it. */
	_Atomic(struct bg_store *) st;
	bool owns_store;
	pthread_mutex_t store_lock;
	int store_err_logged;                        /* under store_lock; 0: none yet */
	unsigned port;
	unsigned char key[PEER_KEY_MAX];
	size_t keylen; /* 0: no authentication */
	struct peerd_replay *replay;
	void (*log)(void *cls, const char *fmt, va_list ap);
	void *log_cls;

	atomic_uint_fast64_t requests[N_STATUS + 1]; /* by counted_status, then "other" */
	atomic_uint_fast64_t bytes_served;           /* body bytes handed to libmicrohttpd */
	atomic_uint_fast64_t hits;                   /* content answered 200/206 */
	atomic_uint_fast64_t misses;                 /* content answered 404 */
	atomic_uint_fast64_t partial_requests;       /* /v1/partial requests (not re-entries) */
	atomic_uint_fast64_t pieces_requests;        /* /v1/pieces requests */

	/* This node's id (X-Bgcopy-Node), "" when it could not be had; read
	 * (or made) at the first answer that carries it, never at start: a
	 * peerd started on an empty home leaves it empty (node_get()). */
	char node[BG_NODE_ID_LEN + 1];
	atomic_bool node_loaded;                     /* node is set (under store_lock) */

	/* The bounded wait: suspended requests and their watcher. */
	unsigned wait_max_ms;                        /* 0: never wait */
	unsigned waiters_max;
	pthread_mutex_t wait_lock;
	pthread_cond_t wait_cond;
	struct waiter *waiters;                      /* under wait_lock */
	unsigned nwaiters;                           /* under wait_lock */
	atomic_uint nwaiting;                        /* the gauge, read without the lock */
	bool stopping;                               /* under wait_lock: suspend no more */
	bool wait_started;                           /* the watcher runs (one thread) */
	pthread_t watcher;

	/* The serving rate: one token bucket for every body, and the bodies
	 * suspended for want of tokens, first in first served; the bucket
	 * and the list under wait_lock.  Bodies answered from memory never
	 * wait, but what they send is taken from the bucket all the same
	 * (tokens may go below 0): the streamed bodies after them wait for it.
	 * The bucket is the core's (bg_rate, its own mutex, taken under
	 * wait_lock when both are held). */
	uint64_t rate;                               /* bytes/s; 0: no limit, nothing below used */
	size_t quantum;                              /* the least tokens worth a resume */
	struct bg_rate bucket;                       /* bg_mono_ms() time */
	struct throttle *throttled;
	struct throttle **throttled_tail;
	atomic_uint_fast64_t throttled_ms;           /* time suspended for the rate, in all */

	/* Keys the origin has not confirmed for this long are not served
	 * (the store's max age), reloaded at most once a second. */
	atomic_int_fast64_t max_age;                 /* seconds */
	atomic_int_fast64_t max_age_loaded;          /* when, unix seconds; 0: never */

	/* What was served and not found, for the agent's LRU order and
	 * counters (HOME/usage.log), appended in batches. */
	char *home;                                  /* NULL: not reported */
	pthread_mutex_t usage_lock;
	struct store_usage usage[PEERD_USAGE_BATCH];
	size_t nusage;
	int64_t usage_flushed;                       /* unix seconds */
	atomic_int usage_failed;                     /* reported once, then dropped */
};

/* What the body callback of one response reads: bytes [start, start + len)
 * of content sha.  Owned by the response (freed by its free callback). */
struct body {
	struct peerd *pd;
	struct bg_store *st;
	unsigned char sha[BG_SHA256_LEN];
	uint64_t start;
	uint64_t len;
	struct throttle th;
};

/* Marks the first call of the access handler for a request. */
static int first_call_seen;

static void plog(struct peerd *pd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
plog(struct peerd *pd, const char *fmt, ...)
{
	va_list ap;

	if (pd->log == NULL)
		return;
	va_start(ap, fmt);
	pd->log(pd->log_cls, fmt, ap);
	va_end(ap);
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct peerd *pd = cls;
	char msg[1024];
	size_t n;

	if (pd->log == NULL)
		return;
	/* libmicrohttpd's messages end with a newline; ours do not. */
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	plog(pd, "%s", msg);
}

void
peerd_config_init(struct peerd_config *c)
{
	memset(c, 0, sizeof(*c));
	c->listen = PEERD_LISTEN_DEFAULT;
	c->port = PEERD_PORT_DEFAULT;
	c->threads = 0;
	c->max_connections = PEERD_CONNECTIONS_DEFAULT;
	c->timeout = PEERD_TIMEOUT_DEFAULT;
	c->connection_memory = PEERD_CONNECTION_MEMORY_DEFAULT;
	c->partial_wait_max_ms = PEERD_PARTIAL_WAIT_DEFAULT_MS;
	/* No per-address limit for library users (tests, the fuzzer);
	 * bgcopy-peerd applies PEERD_PER_PEER_DEFAULT through bgcopy.conf. */
	c->per_peer = 0;
}

int
peerd_parse_listen(const char *addr, unsigned port, struct sockaddr_storage *sa, unsigned *salen)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	struct addrinfo hints, *res = NULL;
	bool bracketed = false;
	size_t n;

	if (addr == NULL || port > 65535)
		return BG_EINVAL;
	n = strlen(addr);
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		addr++;
		n -= 2;
		bracketed = true;
	}
	if (n == 0 || n >= sizeof(host))
		return BG_EINVAL;
	memcpy(host, addr, n);
	host[n] = '\0';
	memset(sa, 0, sizeof(*sa));
	/* inet_pton wants exactly four decimal parts ("1.2.3" or "010.1.1.1"
	 * would mean something else to inet_aton, which getaddrinfo uses). */
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;
	if (!bracketed && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*salen = sizeof(*sin);
		return 0;
	}
	if (strchr(host, ':') == NULL)
		return BG_EINVAL;
	/* IPv6, with an optional %zone that only getaddrinfo understands. */
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET6;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
		return BG_EINVAL;
	if (res->ai_family != AF_INET6 || res->ai_addrlen != sizeof(struct sockaddr_in6)) {
		freeaddrinfo(res);
		return BG_EINVAL;
	}
	memcpy(sa, res->ai_addr, sizeof(struct sockaddr_in6));
	((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
	*salen = sizeof(struct sockaddr_in6);
	freeaddrinfo(res);
	return 0;
}

/* ---- Responses ----------------------------------------------------------- */

static void
count_status(struct peerd *pd, unsigned status)
{
	size_t i;

	for (i = 0; i < N_STATUS; i++)
		if (counted_status[i] == status)
			break;
	atomic_fetch_add_explicit(&pd->requests[i], 1, memory_order_relaxed);
}

/* Queues r with status and drops our reference to it.  r may be NULL (out of
 * memory): the connection is then closed. */
static enum MHD_Result
send_response(struct peerd *pd, struct MHD_Connection *conn, unsigned status,
              struct MHD_Response *r)
{
	enum MHD_Result ret;

	if (r == NULL)
		return MHD_NO;
	ret = MHD_queue_response(conn, status, r);
	if (ret == MHD_YES)
		count_status(pd, status);
	MHD_destroy_response(r);
	return ret;
}

/* A short text/plain answer (the message is static). */
static enum MHD_Result
send_text(struct peerd *pd, struct MHD_Connection *conn, unsigned status, const char *msg)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_PERSISTENT);

	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain") != MHD_YES)
		goto fail;
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED &&
	    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES)
		goto fail;
	if (status == MHD_HTTP_UNAUTHORIZED &&
	    MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, AUTH_SCHEME) != MHD_YES)
		goto fail;
	if (status == MHD_HTTP_SERVICE_UNAVAILABLE &&
	    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1") != MHD_YES)
		goto fail;
	return send_response(pd, conn, status, r);
fail:
	MHD_destroy_response(r);
	return MHD_NO;
}

/* True when v can be sent as a header value as it is: non-empty safe text,
 * tabs allowed (stored validators are checked, never trusted). */
static bool
header_safe(const char *v)
{
	return v != NULL && *v != '\0' && bg_text_is_safe(v, BG_TEXT_TAB);
}

/* ---- The serving rate (serve_rate) --------------------------------------- */

/* The tokens a body asking for want bytes waits for. */
static size_t
rate_need(const struct peerd *pd, size_t want)
{
	return want < pd->quantum ? want : pd->quantum;
}

/* Takes th off the head of the list and resumes its connection, which
 * calls the reader again (wait_lock held). */
static void
throttle_release_locked(struct peerd *pd, int64_t now)
{
	struct throttle *th = pd->throttled;

	pd->throttled = th->next;
	if (pd->throttled == NULL)
		pd->throttled_tail = &pd->throttled;
	th->next = NULL;
	th->queued = false;
	atomic_fetch_add_explicit(&pd->throttled_ms, (uint64_t)(now - th->since_ms),
	                          memory_order_relaxed);
	MHD_resume_connection(th->conn);
}

/* The watcher's turn (wait_lock held): hands the tokens there are to the
 * suspended bodies in the order they stopped, each what its block needs or
 * what there is, and resumes them.  The rest waits for the next round. */
static void
rate_grant_locked(struct peerd *pd, int64_t now)
{
	struct throttle *th;
	size_t got;

	while ((th = pd->throttled) != NULL &&
	       (got = bg_rate_take(&pd->bucket, th->want, rate_need(pd, th->want), now)) > 0) {
		th->grant = got;
		throttle_release_locked(pd, now);
	}
}

/* Milliseconds until the first suspended body can be served, 1 to
 * PEERD_WAIT_POLL_MS (wait_lock held, pd->throttled not NULL). */
static long
rate_due_ms_locked(struct peerd *pd, int64_t now)
{
	int64_t ms = bg_rate_due_ms(&pd->bucket, rate_need(pd, pd->throttled->want), now);

	if (ms <= 0)
		return 1;
	return ms >= PEERD_WAIT_POLL_MS ? PEERD_WAIT_POLL_MS : (long)ms;
}

/* How many of want bytes the body of th may send now: what the watcher
 * granted it, else what the bucket holds if no other body waits before it.
 * 0 when there is not enough: the connection is then suspended, the
 * reader returns 0 and libmicrohttpd calls it again once the watcher has
 * granted tokens and resumed it (microhttpd.h allows both: suspending from
 * a content reader, and 0 with a suspended connection).  At stop,
 * MHD_CONTENT_READER_END_WITH_ERROR: the stop resumed the connection to
 * close it, not to send the rest of the body at once. */
static ssize_t
rate_take(struct peerd *pd, struct throttle *th, size_t want)
{
	ssize_t n = (ssize_t)want;
	size_t got;
	int64_t now;

	pthread_mutex_lock(&pd->wait_lock);
	if (pd->stopping) {
		n = MHD_CONTENT_READER_END_WITH_ERROR;
	} else if (th->grant > 0) {
		if (want > th->grant)
			n = (ssize_t)th->grant;
		th->grant -= (size_t)n;
	} else if (pd->wait_started) {
		/* (Without a watcher nobody would resume it: no limit.) */
		now = bg_mono_ms();
		if (pd->throttled == NULL &&
		    (got = bg_rate_take(&pd->bucket, want, rate_need(pd, want), now)) > 0) {
			n = (ssize_t)got;
		} else {
			/* Suspended under wait_lock: the watcher, which resumes
			 * under it, never resumes a connection not yet
			 * suspended. */
			MHD_suspend_connection(th->conn);
			th->want = want;
			th->since_ms = now;
			th->queued = true;
			*pd->throttled_tail = th;
			pd->throttled_tail = &th->next;
			pthread_cond_signal(&pd->wait_cond);
			n = 0;
		}
	}
	pthread_mutex_unlock(&pd->wait_lock);
	return n;
}

/* Takes n bytes sent from memory from the bucket, without waiting. */
static void
rate_charge(struct peerd *pd, uint64_t n)
{
	bg_rate_charge(&pd->bucket, n, bg_mono_ms());
}

/* Called as a body is freed: a body still listed (its connection was
 * closed while suspended, which libmicrohttpd is not known to do) leaves
 * the list, so that the watcher never resumes a connection that is gone. */
static void
throttle_forget(struct peerd *pd, struct throttle *th)
{
	if (pd->rate == 0)
		return;
	pthread_mutex_lock(&pd->wait_lock);
	if (th->queued) {
		struct throttle **link = &pd->throttled;

		while (*link != th)
			link = &(*link)->next;
		*link = th->next;
		if (pd->throttled_tail == &th->next)
			pd->throttled_tail = link;
		th->queued = false;
	}
	pthread_mutex_unlock(&pd->wait_lock);
}

/* The size of the next read of a body at pos of len, at most max bytes and
 * a block, as the rate allows; else what the reader returns (rate_take). */
static ssize_t
body_want(struct peerd *pd, struct throttle *th, uint64_t pos, uint64_t len, size_t max)
{
	size_t want = len - pos < max ? (size_t)(len - pos) : max;

	if (want > PEERD_BLOCK_BYTES)
		want = PEERD_BLOCK_BYTES;
	if (pd->rate == 0)
		return (ssize_t)want;
	return rate_take(pd, th, want);
}

static ssize_t
read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct body *b = cls;
	size_t want, got = 0;
	ssize_t n;
	int err;

	if (pos >= b->len)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if ((n = body_want(b->pd, &b->th, pos, b->len, max)) <= 0)
		return n; /* suspended for the rate (called again once resumed), or stopping */
	want = (size_t)n;
	err = store_read_content(b->st, b->sha, b->start + pos, buf, want, &got);
	if (err != 0 || got == 0) {
		/* The content went away or is damaged mid-stream: cut the
		 * connection so that the peer sees a short body, never wrong or
		 * missing bytes presented as complete.  0 bytes would make
		 * libmicrohttpd spin. */
		plog(b->pd, "content read at %" PRIu64 " failed: %s", b->start + pos,
		     err != 0 ? bg_strerror(err) : "content shorter than its record");
		return MHD_CONTENT_READER_END_WITH_ERROR;
	}
	atomic_fetch_add_explicit(&b->pd->bytes_served, got, memory_order_relaxed);
	return (ssize_t)got;
}

static void
free_body(void *cls)
{
	struct body *b = cls;

	throttle_forget(b->pd, &b->th);
	free(b);
}

/* The body of a 304, never sent: should libmicrohttpd ask for it, the
 * connection is closed rather than anything sent. */
static ssize_t
no_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	(void)pos;
	(void)buf;
	(void)max;
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* ---- Usage reports -------------------------------------------------------- */

static void
usage_flush_locked(struct peerd *pd, int64_t now, struct store_usage *out, size_t *n)
{
	*n = pd->nusage;
	memcpy(out, pd->usage, pd->nusage * sizeof(*out));
	pd->nusage = 0;
	pd->usage_flushed = now;
}

static void
usage_write(struct peerd *pd, const struct store_usage *u, size_t n)
{
	int err = store_usage_append(pd->home, u, n);

	if (err != 0 && atomic_exchange(&pd->usage_failed, 1) == 0) {
		plog(pd, "cannot report use to %s/usage.log (%s): eviction will not see what "
		     "peers fetched", pd->home, bg_strerror(err));
	}
}

/* Notes a hit (sha) or a miss (NULL).  Hits of the same content and all
 * misses are counted in one record each, so the log grows with the number
 * of different entries served, not of requests; the batch goes to the log
 * when it holds PEERD_USAGE_BATCH entries or is PEERD_USAGE_FLUSH_SECONDS
 * old. */
static void
usage_note(struct peerd *pd, int64_t now, const unsigned char *sha)
{
	struct store_usage batch[PEERD_USAGE_BATCH];
	struct store_usage *u = NULL;
	size_t n = 0;

	if (pd->home == NULL || atomic_load(&pd->usage_failed))
		return;
	pthread_mutex_lock(&pd->usage_lock);
	for (size_t i = 0; i < pd->nusage && u == NULL; i++)
		if (pd->usage[i].hit == (sha != NULL) &&
		    (sha == NULL || memcmp(pd->usage[i].sha256, sha, BG_SHA256_LEN) == 0))
			u = &pd->usage[i];
	if (u == NULL) {
		u = &pd->usage[pd->nusage++];
		memset(u, 0, sizeof(*u));
		u->hit = sha != NULL;
		if (sha != NULL)
			memcpy(u->sha256, sha, BG_SHA256_LEN);
	}
	if (u->count < UINT32_MAX)
		u->count++;
	/* Dated now, in the agent's clock and unit: a use folded into the
	 * store later keeps its place among the agent's own uses. */
	u->when_ns = bg_now_ns();
	if (pd->nusage == PEERD_USAGE_BATCH || now - pd->usage_flushed >= PEERD_USAGE_FLUSH_SECONDS)
		usage_flush_locked(pd, now, batch, &n);
	pthread_mutex_unlock(&pd->usage_lock);
	if (n > 0)
		usage_write(pd, batch, n);
}

/* ---- The store ------------------------------------------------------------ */

/* The store to read, opened now if peerd started before bgcopy had made
 * one: a service started at the boot of a fresh machine serves the entries
 * once the agent stores them, without a restart.  Opening is tried again
 * by each request until it succeeds (a few stat() calls while there is no
 * store); the mutex makes one thread open it, so the process has one LMDB
 * environment at most.  peerd opens it read-only as at start and creates
 * nothing: bgcopy makes the home (0700) and the store with its own map size
 * and modes.  NULL with *err set: BG_ENOENT while there is none (nor, it
 * may be, a home), another code when it cannot be opened (logged once per
 * code). */
static struct bg_store *
store_get(struct peerd *pd, int *err)
{
	struct bg_store *st = atomic_load_explicit(&pd->st, memory_order_acquire);
	int rc;

	if (st != NULL)
		return st;
	pthread_mutex_lock(&pd->store_lock);
	st = atomic_load_explicit(&pd->st, memory_order_relaxed);
	if (st == NULL) {
		rc = store_open(pd->home, STORE_RDONLY, NULL, &st);
		if (rc == 0) {
			pd->owns_store = true;
			atomic_store_explicit(&pd->st, st, memory_order_release);
			plog(pd, "store found in %s: serving it", pd->home);
		} else {
			*err = rc;
			if (rc != BG_ENOENT && rc != pd->store_err_logged) {
				plog(pd, "cannot open the store in %s: %s%s", pd->home, bg_strerror(rc),
				     rc == BG_EUNSAFE ? " (the home or its store.mdb is writable by "
				                        "other users: chmod go-w)"
				                      : "");
				pd->store_err_logged = rc;
			}
		}
	}
	pthread_mutex_unlock(&pd->store_lock);
	return st;
}

/* This node's id for X-Bgcopy-Node.  Asked for only once a store was
 * found, which bgcopy made, and with it the node id: peerd creates
 * HOME/node-id only if bgcopy has not (an older one). */
static const char *
node_get(struct peerd *pd)
{
	if (atomic_load_explicit(&pd->node_loaded, memory_order_acquire))
		return pd->node;
	pthread_mutex_lock(&pd->store_lock);
	if (!atomic_load_explicit(&pd->node_loaded, memory_order_relaxed)) {
		if (bg_node_id(pd->home, pd->node) != 0)
			pd->node[0] = '\0';
		atomic_store_explicit(&pd->node_loaded, true, memory_order_release);
	}
	pthread_mutex_unlock(&pd->store_lock);
	return pd->node;
}

/* ---- Content lookup ---------------------------------------------------- */

struct lookup {
	struct peerd *pd;
	struct bg_store *st;
	int64_t now;
	const char *url;
	struct store_key key;
	struct store_content content;
	unsigned char *small; /* the whole body of a small entry, read with the lookup */
};

static int
lookup_fn(struct bg_txn *txn, void *arg)
{
	struct lookup *l = arg;
	int err;

	/* store_view may run this again after a map resize. */
	store_key_clear(&l->key);
	if ((err = txn_key_get(txn, l->url, &l->key)) != 0)
		return err;
	/* Content fetched with credentials is never offered: answer as if absent. */
	if (l->key.flags & STORE_KEY_PRIVATE)
		return BG_ENOENT;
	if (l->now - atomic_load(&l->pd->max_age_loaded) >= 1) {
		struct store_config cfg;

		if (txn_config_get(txn, &cfg) == 0) {
			atomic_store(&l->pd->max_age, (int64_t)cfg.max_age_days * 86400);
			atomic_store(&l->pd->max_age_loaded, l->now);
		}
	}
	/* Expired: the agent drops it at its next transfer or gc. */
	if (l->key.validated < l->now - atomic_load(&l->pd->max_age))
		return BG_ENOENT;
	if ((err = txn_content_get(txn, l->key.sha256, &l->content)) != 0)
		return err;
	free(l->small);
	l->small = NULL;
	if (l->content.size > 0 && l->content.size <= PEERD_SMALL_BYTES) {
		/* A small entry is one chunk: read it in the same transaction and
		 * answer from memory, one transaction per request. */
		const void *data;
		size_t len;

		if ((err = txn_blob_get(txn, l->content.blob, 0, &data, &len)) != 0)
			return err == BG_ENOENT ? BG_ECORRUPT : err;
		if (len != l->content.size)
			return BG_ECORRUPT;
		if ((l->small = malloc(len)) == NULL)
			return BG_ENOMEM;
		memcpy(l->small, data, len);
	}
	return 0;
}

/* ---- Conditional requests ------------------------------------------------ */

/* One request header field over all its lines (libmicrohttpd keeps a field
 * sent on several lines as several entries), and for entity-tag fields how
 * the lines compare with our ETag. */
struct field_scan {
	const char *name;
	const char *etag;          /* NULL: a date field, nothing to compare */
	bool weak_compare;
	unsigned lines;
	const char *value;         /* the last line's value */
	enum peerd_match match;    /* YES if a line matched, else INVALID if one was */
};

static enum MHD_Result
scan_field_line(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct field_scan *f = cls;

	(void)kind;
	if (key == NULL || strcasecmp(key, f->name) != 0)
		return MHD_YES;
	f->lines++;
	f->value = value != NULL ? value : "";
	if (f->etag != NULL) {
		enum peerd_match m = peerd_etag_match(f->value, f->etag, f->weak_compare);

		if (m == PEERD_MATCH_YES || (m == PEERD_MATCH_INVALID && f->match == PEERD_MATCH_NO))
			f->match = m;
	}
	return MHD_YES;
}

static void
scan_field(struct MHD_Connection *conn, const char *name, const char *etag, bool weak_compare,
           struct field_scan *f)
{
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->etag = etag;
	f->weak_compare = weak_compare;
	f->match = PEERD_MATCH_NO;
	MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_field_line, f);
}

/* A date field is used only when sent once and valid: a list of dates or
 * anything else is ignored (RFC 9110 sections 13.1.3 and 13.1.4). */
static bool
field_date(const struct field_scan *f, int64_t now, int64_t *when)
{
	return f->lines == 1 && peerd_http_date_parse(f->value, now, when) == 0;
}

/* Evaluates the preconditions of a GET or HEAD of an entry that exists, in
 * the order of RFC 9110 section 13.2.2: 0 when the request goes on (to
 * If-Range and Range), else 412 or 304.  Requests that would not be
 * answered 2xx without them (401, 404, ...) never get here: a server
 * ignores preconditions then (section 13.2.1).  etag is ours (strong);
 * last_modified is the Last-Modified we send, NULL when none: the date
 * conditions need it and are ignored without it. */
static unsigned
preconditions(struct MHD_Connection *conn, const char *etag, const char *last_modified,
              int64_t now)
{
	struct field_scan f;
	int64_t modified = 0, date;
	bool have_modified =
	    last_modified != NULL && peerd_http_date_parse(last_modified, now, &modified) == 0;

	/* 1. If-Match, strong comparison: false (412) unless a member is our
	 * ETag or "*"; a value that is no entity-tag list matches nothing. */
	scan_field(conn, MHD_HTTP_HEADER_IF_MATCH, etag, false, &f);
	if (f.lines > 0) {
		if (f.match != PEERD_MATCH_YES)
			return MHD_HTTP_PRECONDITION_FAILED;
	} else if (have_modified) {
		/* 2. If-Unmodified-Since, only without If-Match: false (412) when
		 * the entry was modified after the date. */
		scan_field(conn, MHD_HTTP_HEADER_IF_UNMODIFIED_SINCE, NULL, false, &f);
		if (field_date(&f, now, &date) && modified > date)
			return MHD_HTTP_PRECONDITION_FAILED;
	}
	/* 3. If-None-Match, weak comparison: false when a member matches or is
	 * "*", which for GET and HEAD is 304.  An invalid value matches
	 * nothing: the client gets the whole answer. */
	scan_field(conn, MHD_HTTP_HEADER_IF_NONE_MATCH, etag, true, &f);
	if (f.lines > 0) {
		if (f.match == PEERD_MATCH_YES)
			return MHD_HTTP_NOT_MODIFIED;
	} else if (have_modified) {
		/* 4. If-Modified-Since, only without If-None-Match: false (304)
		 * when the entry was not modified after the date. */
		scan_field(conn, MHD_HTTP_HEADER_IF_MODIFIED_SINCE, NULL, false, &f);
		if (field_date(&f, now, &date) && modified <= date)
			return MHD_HTTP_NOT_MODIFIED;
	}
	return 0;
}

/* ---- Content answers ------------------------------------------------------- */

/* Adds the answer signature of the fleet's form (PEER_SIGNED_HEADER) over
 * the n field values f, in the order fixed for path (README.md, "Signed
 * answers"), when peerd has a key.  False when out of memory. */
static bool
add_signed(struct peerd *pd, struct MHD_Connection *conn, struct MHD_Response *r,
           const char *path, unsigned status, const char *const *f, size_t n)
{
	const char *req;
	char sig[PEER_AUTH_VALUE_MAX];

	if (pd->keylen == 0)
		return true;
	/* The request was authenticated (check_auth): its value binds the
	 * answer to it, so that an answer cannot be replayed to another. */
	req = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, PEER_AUTH_HEADER);
	if (peer_auth_sign_fields(pd->key, pd->keylen, req != NULL ? req : "", path, status, f, n,
	                          sig, sizeof(sig)) != 0)
		return false;
	return MHD_add_response_header(r, PEER_SIGNED_HEADER, sig) == MHD_YES;
}

/* X-Bgcopy-Fetch's value for p into out, "" when p is not known. */
static void
fetch_value(const struct store_fetch_policy *p, char out[STORE_FETCH_POLICY_MAX])
{
	out[0] = '\0';
	if (p->known && bg_fetch_policy_format(p, out, STORE_FETCH_POLICY_MAX) != 0)
		out[0] = '\0';
}

/* The headers that describe the entry, on 200, 206 and 304 answers alike:
 * our ETag, the origin's validators stored with it, the fetch policy and
 * this node's id and, with a key, the signed answer in both forms: the v1
 * one (PEER_AUTH_HEADER, unchanged for older clients) and the fleet's
 * (PEER_SIGNED_HEADER over ETag, size, X-Origin-ETag, Last-Modified,
 * X-Bgcopy-Fetch, X-Bgcopy-Node).  False when out of memory. */
static bool
add_entry_headers(struct peerd *pd, struct MHD_Connection *conn, struct MHD_Response *r,
                  const char *etag, const char *hex, const struct lookup *l, unsigned status)
{
	char fetch[STORE_FETCH_POLICY_MAX], size[24];
	const char *node = node_get(pd);

	fetch_value(&l->key.fetch, fetch);
	snprintf(size, sizeof(size), "%" PRIu64, l->content.size);
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag) != MHD_YES)
		return false;
	if (fetch[0] != '\0' && MHD_add_response_header(r, PEER_FETCH_HEADER, fetch) != MHD_YES)
		return false;
	if (node[0] != '\0' && MHD_add_response_header(r, "X-Bgcopy-Node", node) != MHD_YES)
		return false;
	if (pd->keylen > 0) {
		const char *f[] = {
		    etag,
		    size,
		    header_safe(l->key.etag) ? l->key.etag : "",
		    header_safe(l->key.last_modified) ? l->key.last_modified : "",
		    fetch,
		    node,
		};

		if (!add_signed(pd, conn, r, PATH_CONTENT, status, f, sizeof(f) / sizeof(f[0])))
			return false;
	}
	if (header_safe(l->key.last_modified) &&
	    MHD_add_response_header(r, MHD_HTTP_HEADER_LAST_MODIFIED, l->key.last_modified) != MHD_YES)
		return false;
	if (header_safe(l->key.etag) &&
	    MHD_add_response_header(r, "X-Origin-ETag", l->key.etag) != MHD_YES)
		return false;
	if (pd->keylen > 0) {
		/* The request was authenticated (check_auth): answer in kind. */
		const char *req = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, PEER_AUTH_HEADER);
		char sig[PEER_AUTH_VALUE_MAX];

		if (peer_auth_sign_answer(pd->key, pd->keylen, req, hex, l->content.size,
		                          header_safe(l->key.etag) ? l->key.etag : NULL,
		                          header_safe(l->key.last_modified) ? l->key.last_modified
		                                                            : NULL,
		                          sig, sizeof(sig)) != 0 ||
		    MHD_add_response_header(r, PEER_AUTH_HEADER, sig) != MHD_YES)
			return false;
	}
	return true;
}

/* Answers a GET (get) or HEAD of the entry l found; *status is what was
 * queued. */
static enum MHD_Result
send_content(struct peerd *pd, struct MHD_Connection *conn, struct lookup *l, bool get,
             unsigned *status_out)
{
	char etag[ETAG_LEN + 1], hex[BG_SHA256_HEX_LEN + 1], digest[REPR_DIGEST_LEN + 1];
	char crange[96];
	unsigned char b64[48];
	uint64_t total = l->content.size, start = 0, len = total;
	enum peerd_range rr = PEERD_RANGE_NONE;
	struct MHD_Response *r = NULL;
	struct body *b = NULL;
	unsigned status = MHD_HTTP_OK;
	const char *range, *if_range;

	bg_sha256_hex(l->key.sha256, hex);
	snprintf(etag, sizeof(etag), "\"%s\"", hex);
	EVP_EncodeBlock(b64, l->key.sha256, BG_SHA256_LEN);
	snprintf(digest, sizeof(digest), "sha-256=:%s:", (const char *)b64);

	switch (preconditions(conn, etag,
	                      header_safe(l->key.last_modified) ? l->key.last_modified : NULL,
	                      l->now)) {
	case MHD_HTTP_PRECONDITION_FAILED:
		*status_out = MHD_HTTP_PRECONDITION_FAILED;
		return send_text(pd, conn, MHD_HTTP_PRECONDITION_FAILED, "precondition failed\n");
	case MHD_HTTP_NOT_MODIFIED:
		/* A 304 has no body and carries the validators a 200 would
		 * (RFC 9110 section 15.4.5), nothing else about the content.
		 * libmicrohttpd sends no body for a 304 but does send the
		 * response's size as Content-Length, which must then be the
		 * 200's (section 8.6), as for HEAD: hence a body of the entry's
		 * size that is never read (so a token buffer for it). */
		r = MHD_create_response_from_callback(total, 64, no_body, NULL, NULL);
		if (r == NULL)
			return MHD_NO;
		if (!add_entry_headers(pd, conn, r, etag, hex, l, MHD_HTTP_NOT_MODIFIED))
			goto fail;
		*status_out = MHD_HTTP_NOT_MODIFIED;
		return send_response(pd, conn, MHD_HTTP_NOT_MODIFIED, r);
	default:
		break;
	}

	range = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
	if_range = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_RANGE);
	/* If-Range names the representation the client holds part of: only our
	 * strong ETag matches (RFC 9110 section 13.1.5, strong comparison); a
	 * date or another tag means "send it all". */
	if (range != NULL && (if_range == NULL || strcmp(if_range, etag) == 0))
		rr = peerd_range_parse(range, total, &start, &len);

	if (rr == PEERD_RANGE_UNSATISFIABLE) {
		r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		if (r == NULL)
			return MHD_NO;
		snprintf(crange, sizeof(crange), "bytes */%" PRIu64, total);
		if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_RANGE, crange) != MHD_YES ||
		    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes") != MHD_YES ||
		    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag) != MHD_YES)
			goto fail;
		*status_out = MHD_HTTP_RANGE_NOT_SATISFIABLE;
		return send_response(pd, conn, MHD_HTTP_RANGE_NOT_SATISFIABLE, r);
	}
	if (rr == PEERD_RANGE_OK) {
		status = MHD_HTTP_PARTIAL_CONTENT;
		snprintf(crange, sizeof(crange), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, start,
		         start + len - 1, total);
	} else {
		start = 0;
		len = total;
	}

	if (len == 0) {
		r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	} else if (l->small != NULL) {
		unsigned char *part = l->small;

		if (start > 0) {
			if ((part = malloc(len)) == NULL)
				return MHD_NO;
			memcpy(part, l->small + start, len);
		} else {
			l->small = NULL; /* transferred to the response */
		}
		r = MHD_create_response_from_buffer_with_free_callback(len, part, free);
		if (r == NULL) {
			free(part);
			return MHD_NO;
		}
		atomic_fetch_add_explicit(&pd->bytes_served, len, memory_order_relaxed);
		if (get)
			rate_charge(pd, len);
	} else {
		if ((b = malloc(sizeof(*b))) == NULL)
			return MHD_NO;
		b->pd = pd;
		b->st = l->st;
		memcpy(b->sha, l->key.sha256, BG_SHA256_LEN);
		b->start = start;
		b->len = len;
		memset(&b->th, 0, sizeof(b->th));
		b->th.conn = conn;
		/* The size given here becomes Content-Length (also for HEAD, whose
		 * body libmicrohttpd leaves out without calling read_body). */
		r = MHD_create_response_from_callback(len, PEERD_BLOCK_BYTES, read_body, b, free_body);
		if (r == NULL) {
			free(b);
			return MHD_NO;
		}
		b = NULL; /* transferred */
	}
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream") !=
	        MHD_YES ||
	    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes") != MHD_YES ||
	    MHD_add_response_header(r, "Repr-Digest", digest) != MHD_YES ||
	    !add_entry_headers(pd, conn, r, etag, hex, l, status))
		goto fail;
	if (status == MHD_HTTP_PARTIAL_CONTENT &&
	    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_RANGE, crange) != MHD_YES)
		goto fail;
	*status_out = status;
	if (send_response(pd, conn, status, r) != MHD_YES)
		return MHD_NO;
	atomic_fetch_add_explicit(&pd->hits, 1, memory_order_relaxed);
	return MHD_YES;
fail:
	MHD_destroy_response(r);
	return MHD_NO;
}

/* ---- Authentication ------------------------------------------------------ */

/* 0 when the request may go on; otherwise the status to answer (401 or 503). */
static unsigned
check_auth(struct peerd *pd, struct MHD_Connection *conn, const char *method, const char *path,
           const char *url)
{
	unsigned char sig[BG_SHA256_LEN];
	const char *value;
	/* The system clock, as the signer's (the agent signs with time(NULL)):
	 * a test moving bg_now() must not move the window of one side only. */
	int64_t now = (int64_t)time(NULL);

	if (pd->keylen == 0)
		return 0;
	value = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, PEER_AUTH_HEADER);
	if (peer_auth_check(pd->key, pd->keylen, method, path, url, value, now, sig) != 0)
		return MHD_HTTP_UNAUTHORIZED;
	/* A valid signature carries a timestamp t within the window of now; it
	 * stays acceptable until t + PEER_AUTH_WINDOW, so remember it that long
	 * (at most 2 * PEER_AUTH_WINDOW).  peer_auth_check accepted t, so the
	 * header parses ("t=T,sig=..."). */
	int64_t t;

	if (bg_parse_i64(value + 2, strcspn(value + 2, ","), INT64_MIN, INT64_MAX, &t) != 0)
		return MHD_HTTP_UNAUTHORIZED;
	switch (peerd_replay_check(pd->replay, sig, t + PEER_AUTH_WINDOW, now)) {
	case PEERD_REPLAY_NEW:
		return 0;
	case PEERD_REPLAY_SEEN:
		return MHD_HTTP_UNAUTHORIZED;
	case PEERD_REPLAY_FULL:
	default:
		plog(pd, "replay set full: refusing an authenticated request");
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	}
}

/* ---- Routes -------------------------------------------------------------- */

static enum MHD_Result
count_url_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	unsigned *n = cls;

	if (strcmp(key, "url") == 0)
		(*n)++;
	return MHD_YES;
}

static enum MHD_Result
serve_content(struct peerd *pd, struct MHD_Connection *conn, const char *method)
{
	struct lookup l;
	const char *url = NULL;
	size_t url_len = 0;
	unsigned n_url = 0, status;
	enum MHD_Result ret;
	int err;

	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, count_url_arg, &n_url);
	if (n_url != 1 ||
	    MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "url", 3, &url, &url_len) !=
	        MHD_YES ||
	    url == NULL || url_len == 0)
		return send_text(pd, conn, MHD_HTTP_BAD_REQUEST, "exactly one non-empty url= argument\n");
	/* A decoded %00 would cut the key short: no stored key holds one. */
	if (memchr(url, '\0', url_len) != NULL)
		return send_text(pd, conn, MHD_HTTP_BAD_REQUEST, "NUL in url\n");
	if (url_len > STORE_URL_MAX)
		return send_text(pd, conn, MHD_HTTP_URI_TOO_LONG, "url longer than any stored key\n");
	if ((status = check_auth(pd, conn, method, PATH_CONTENT, url)) != 0)
		return send_text(pd, conn, status,
		                 status == MHD_HTTP_UNAUTHORIZED ? "authentication required\n"
		                                                 : "busy, retry\n");

	memset(&l, 0, sizeof(l));
	l.pd = pd;
	l.now = bg_now();
	l.url = url;
	err = 0;
	if ((l.st = store_get(pd, &err)) != NULL)
		err = store_view(l.st, lookup_fn, &l);
	if (err == BG_ENOENT) {
		atomic_fetch_add_explicit(&pd->misses, 1, memory_order_relaxed);
		ret = send_text(pd, conn, MHD_HTTP_NOT_FOUND, "not found\n");
		/* Without a store there is nobody to report the miss to. */
		if (l.st != NULL)
			usage_note(pd, l.now, NULL);
	} else if (err != 0) {
		/* A store that cannot be opened was logged once by store_get(). */
		if (l.st != NULL)
			plog(pd, "lookup failed: %s", bg_strerror(err));
		ret = send_text(pd, conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "store error\n");
	} else {
		status = 0;
		ret = send_content(pd, conn, &l, strcmp(method, MHD_HTTP_METHOD_GET) == 0, &status);
		/* A 304 or 412 answers a client that holds the content or wants
		 * another one: neither is a use of this entry. */
		if (ret == MHD_YES && strcmp(method, MHD_HTTP_METHOD_GET) == 0 &&
		    status != MHD_HTTP_NOT_MODIFIED && status != MHD_HTTP_PRECONDITION_FAILED)
			usage_note(pd, l.now, l.key.sha256);
	}
	free(l.small);
	store_key_clear(&l.key);
	return ret;
}

/* ---- Downloads in progress: /v1/partial and /v1/pieces ----------------- */

/* What one lookup of the fleet's paths found, in one read transaction:
 * the complete entry (key and content) if there is one that /v1/content
 * would serve, else the record of the download in progress; for
 * /v1/pieces also the digests asked for. */
struct plookup {
	struct peerd *pd;
	int64_t now;
	const char *url;
	bool pieces;                  /* also read digests from `from` */
	uint64_t from;

	bool complete;                /* key + content found: answered as final */
	struct store_key key;
	struct store_content content; /* complete, or a final record's content */
	bool has_content;
	struct store_inflight rec;    /* !complete */
	/* /v1/pieces */
	bool no_list;                 /* final content without a complete list */
	uint64_t known;               /* digests listable */
	uint64_t count;
	unsigned char *digests;       /* count * STORE_PIECE_LEN bytes */
};

static uint64_t
chunks_of(uint64_t size)
{
	return size / STORE_PIECE_BYTES + (size % STORE_PIECE_BYTES != 0);
}

static void
plookup_clear(struct plookup *l)
{
	store_key_clear(&l->key);
	store_inflight_clear(&l->rec);
	free(l->digests);
	l->digests = NULL;
	l->complete = l->has_content = l->no_list = false;
	l->known = l->count = 0;
}

static int
plookup_fn(struct bg_txn *txn, void *arg)
{
	struct plookup *l = arg;
	const unsigned char *sha = NULL;
	uint64_t blob = 0;
	int err;

	/* store_view may run this again after a map resize. */
	plookup_clear(l);
	/* 1. A complete entry, by exactly lookup_fn's rules. */
	err = txn_key_get(txn, l->url, &l->key);
	if (err != 0 && err != BG_ENOENT)
		return err;
	if (err == 0 && l->now - atomic_load(&l->pd->max_age_loaded) >= 1) {
		struct store_config cfg;

		if (txn_config_get(txn, &cfg) == 0) {
			atomic_store(&l->pd->max_age, (int64_t)cfg.max_age_days * 86400);
			atomic_store(&l->pd->max_age_loaded, l->now);
		}
	}
	if (err == 0 && !(l->key.flags & STORE_KEY_PRIVATE) &&
	    l->key.validated >= l->now - atomic_load(&l->pd->max_age)) {
		err = txn_content_get(txn, l->key.sha256, &l->content);
		if (err != 0 && err != BG_ENOENT)
			return err;
		l->complete = l->has_content = err == 0;
	}
	if (!l->complete) {
		/* 2. A download in progress (or its tombstone).  A private job
		 * never writes one (fleet design 1.5). */
		store_key_clear(&l->key);
		if ((err = txn_inflight_get(txn, l->url, &l->rec)) != 0)
			return err;
		if (l->rec.state == STORE_INFLIGHT_FINAL && l->rec.has_sha) {
			err = txn_content_get(txn, l->rec.sha256, &l->content);
			if (err != 0 && err != BG_ENOENT)
				return err;
			l->has_content = err == 0;
		}
	}
	if (!l->pieces)
		return 0;
	if (l->complete || l->rec.state == STORE_INFLIGHT_FINAL) {
		bool all = false;

		/* Content lists every chunk, the short last one included, unless
		 * an older build stored it: then there is no list to give. */
		sha = l->complete ? l->key.sha256 : l->rec.sha256;
		if (!l->has_content)
			return BG_ENOENT;
		err = txn_content_pieces_complete(txn, sha, &all);
		if (err != 0)
			return err;
		if (!all) {
			l->no_list = true;
			return 0;
		}
		blob = l->content.blob;
		l->known = chunks_of(l->content.size);
	} else {
		/* Only full committed chunks have a digest (fleet design 1.4),
		 * and the last one's comes with the writer's next commit. */
		unsigned char d[STORE_PIECE_LEN];

		blob = l->rec.blob;
		l->known = l->rec.committed / STORE_PIECE_BYTES;
		if (l->known > 0 && blob != 0) {
			err = txn_piece_get(txn, blob, l->known - 1, d);
			if (err == BG_ENOENT)
				l->known--;
			else if (err != 0)
				return err;
		}
	}
	if (l->from < l->known && blob != 0) {
		uint64_t max = l->known - l->from;

		if (max > PEER_PIECES_MAX)
			max = PEER_PIECES_MAX;
		if ((l->digests = malloc((size_t)max * STORE_PIECE_LEN)) == NULL)
			return BG_ENOMEM;
		if ((err = txn_pieces_read(txn, blob, l->from, max, l->digests, &l->count)) != 0)
			return err;
	}
	return 0;
}

static bool
plookup_final(const struct plookup *l)
{
	return l->complete || l->rec.state == STORE_INFLIGHT_FINAL;
}

/* Whether the writer of a record still holds its lock.  Without a home
 * there is no lock to test: taken as alive (the deadline ends the wait). */
static bool
writer_alive(struct peerd *pd, const unsigned char urlhash[BG_SHA256_LEN])
{
	return pd->home == NULL || store_inflight_alive(pd->home, urlhash);
}

/* The header values of a /v1/partial answer, in the order they are
 * signed (README.md, "Signed answers"); "" for an absent one. */
enum {
	PF_ETAG, PF_RANGE, PF_AVAILABLE, PF_FINAL, PF_STATE, PF_NODE, PF_TOTAL, PF_FETCH,
	PF_ORIGIN_ETAG, PF_LAST_MODIFIED, PF_ORIGIN_DATE, PF_PIECE_SIZE, PF_N
};
static const char *const partial_names[PF_N] = {
    MHD_HTTP_HEADER_ETAG, MHD_HTTP_HEADER_CONTENT_RANGE, "X-Bgcopy-Available",
    "X-Bgcopy-Final", "X-Bgcopy-State", "X-Bgcopy-Node", "X-Bgcopy-Total", PEER_FETCH_HEADER,
    "X-Origin-ETag", MHD_HTTP_HEADER_LAST_MODIFIED, "X-Bgcopy-Origin-Date",
    "X-Bgcopy-Piece-Size",
};

struct pvals {
	unsigned char urlhash[BG_SHA256_LEN];
	bool final, alive;
	uint64_t available;           /* N */
	int64_t total;                /* -1: unknown */
	char etag[ETAG_LEN + 1];
	char crange[96];
	char avail[24], total_s[24], psize[24];
	char fetch[STORE_FETCH_POLICY_MAX];
	const char *f[PF_N];
};

static void
pvals_fill(struct peerd *pd, const struct plookup *l, struct pvals *v)
{
	char hex[BG_SHA256_HEX_LEN + 1];
	const char *state;

	bg_sha256(l->url, strlen(l->url), v->urlhash);
	v->final = plookup_final(l);
	if (l->complete) {
		v->available = l->content.size;
		v->total = (int64_t)l->content.size;
		bg_sha256_hex(l->key.sha256, hex);
		snprintf(v->etag, sizeof(v->etag), "\"%s\"", hex);
		fetch_value(&l->key.fetch, v->fetch);
	} else {
		v->available = l->rec.committed;
		v->total = v->final && l->has_content ? (int64_t)l->content.size : l->rec.total;
		if (v->final) {
			/* The tombstone names the content: its ETag from now on. */
			bg_sha256_hex(l->rec.sha256, hex);
			snprintf(v->etag, sizeof(v->etag), "\"%s\"", hex);
		} else {
			snprintf(v->etag, sizeof(v->etag), "\"partial-%016" PRIx64 "\"", l->rec.gen);
		}
		fetch_value(&l->rec.fetch, v->fetch);
	}
	v->alive = v->final || writer_alive(pd, v->urlhash);
	if (v->final)
		state = "final";
	else if (!v->alive)
		state = "stalled";
	else
		state = store_inflight_state_name(l->rec.state);
	snprintf(v->avail, sizeof(v->avail), "%" PRIu64, v->available);
	v->total_s[0] = '\0';
	if (v->total >= 0)
		snprintf(v->total_s, sizeof(v->total_s), "%" PRId64, v->total);
	snprintf(v->psize, sizeof(v->psize), "%u", (unsigned)STORE_PIECE_BYTES);
	v->crange[0] = '\0';
	v->f[PF_ETAG] = v->etag;
	v->f[PF_RANGE] = v->crange;
	v->f[PF_AVAILABLE] = v->avail;
	v->f[PF_FINAL] = v->final ? "?1" : "?0";
	v->f[PF_STATE] = state != NULL ? state : "";
	v->f[PF_NODE] = node_get(pd);
	v->f[PF_TOTAL] = v->total_s;
	v->f[PF_FETCH] = v->fetch;
	if (l->complete) {
		v->f[PF_ORIGIN_ETAG] = header_safe(l->key.etag) ? l->key.etag : "";
		v->f[PF_LAST_MODIFIED] = header_safe(l->key.last_modified) ? l->key.last_modified : "";
		v->f[PF_ORIGIN_DATE] = "";
	} else {
		v->f[PF_ORIGIN_ETAG] = header_safe(l->rec.etag) ? l->rec.etag : "";
		v->f[PF_LAST_MODIFIED] = header_safe(l->rec.last_modified) ? l->rec.last_modified : "";
		v->f[PF_ORIGIN_DATE] = header_safe(l->rec.date) ? l->rec.date : "";
	}
	v->f[PF_PIECE_SIZE] = v->psize;
}

/* Adds every non-empty value of v and the signature over all of them. */
static bool
add_partial_headers(struct peerd *pd, struct MHD_Connection *conn, struct MHD_Response *r,
                    const struct pvals *v, unsigned status)
{
	for (size_t i = 0; i < PF_N; i++)
		if (v->f[i][0] != '\0' &&
		    MHD_add_response_header(r, partial_names[i], v->f[i]) != MHD_YES)
			return false;
	return add_signed(pd, conn, r, PATH_PARTIAL, status, v->f, PF_N);
}

/* What the body callback of a /v1/partial answer reads: bytes [start,
 * start + len) of incarnation gen of the download of urlhash, or of
 * content sha once complete.  Both readers bound every read by what the
 * store holds at that moment; len was fixed from what was committed when
 * the answer was made. */
struct pbody {
	struct peerd *pd;
	struct bg_store *st;
	bool content;
	unsigned char sha[BG_SHA256_LEN];
	unsigned char urlhash[BG_SHA256_LEN];
	uint64_t gen;
	uint64_t start;
	uint64_t len;
	struct throttle th;
};

static ssize_t
read_partial_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct pbody *b = cls;
	size_t want, got = 0;
	ssize_t n;
	int err;

	if (pos >= b->len)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if ((n = body_want(b->pd, &b->th, pos, b->len, max)) <= 0)
		return n; /* suspended for the rate (called again once resumed), or stopping */
	want = (size_t)n;
	if (b->content)
		err = store_read_content(b->st, b->sha, b->start + pos, buf, want, &got);
	else
		err = store_read_inflight(b->st, b->urlhash, b->gen, b->start + pos, buf, want, &got);
	if (err != 0 || got == 0) {
		/* Another incarnation (BG_EAGAIN: a restart from byte 0), or the
		 * download or its content gone: a short body, as read_body does,
		 * never bytes of another incarnation under this one's ETag. */
		plog(b->pd, "partial read at %" PRIu64 " ended: %s", b->start + pos,
		     err != 0 ? bg_strerror(err) : "fewer bytes than committed");
		return MHD_CONTENT_READER_END_WITH_ERROR;
	}
	atomic_fetch_add_explicit(&b->pd->bytes_served, got, memory_order_relaxed);
	return (ssize_t)got;
}

static void
free_pbody(void *cls)
{
	struct pbody *b = cls;

	throttle_forget(b->pd, &b->th);
	free(b);
}

/* ---- The bounded wait ------------------------------------------------------ */

/* Resumes w's connection and takes it off the list (wait_lock held). */
static void
waiter_release_locked(struct peerd *pd, struct waiter **link)
{
	struct waiter *w = *link;

	*link = w->next;
	w->next = NULL;
	pd->nwaiters--;
	atomic_store(&pd->nwaiting, pd->nwaiters);
	/* libmicrohttpd calls the access handler again, which answers with
	 * what there is then (the waiter stays its req_cls). */
	MHD_resume_connection(w->conn);
}

static int
wait_check_fn(struct bg_txn *txn, void *arg)
{
	struct peerd *pd = arg;

	for (struct waiter *w = pd->waiters; w != NULL; w = w->next) {
		struct store_inflight rec;
		int err;

		memset(&rec, 0, sizeof(rec));
		err = txn_inflight_get_hash(txn, w->urlhash, &rec);
		/* Gone (finished and its tombstone dropped, deleted) or
		 * damaged, restarted, final, or grown enough: answer now. */
		if (err != 0 || rec.gen != w->gen || rec.state == STORE_INFLIGHT_FINAL ||
		    rec.committed >= w->need)
			w->ready = true;
		store_inflight_clear(&rec);
	}
	return 0;
}

/* The watcher: every PEERD_WAIT_POLL_MS while requests wait, one short
 * read transaction looks at all their records; the writer's lock is
 * tested at most every 250 ms per waiter (an open and a flock).  While
 * bodies are suspended for the rate it wakes when the first of them can be
 * served (at most PEERD_WAIT_POLL_MS later), grants tokens and resumes
 * them.  At stop every waiter and every throttled body is resumed, so that
 * MHD_stop_daemon finds none suspended (libmicrohttpd panics on a
 * suspended connection at stop). */
static void *
wait_main(void *arg)
{
	struct peerd *pd = arg;
	int64_t checked_ms = 0; /* the waiters' last round */

	pthread_mutex_lock(&pd->wait_lock);
	for (;;) {
		struct timespec ts = {0, PEERD_WAIT_POLL_MS * 1000000L};
		struct bg_store *st;
		int64_t now;
		int err = 0;

		while (!pd->stopping && pd->waiters == NULL && pd->throttled == NULL)
			pthread_cond_wait(&pd->wait_cond, &pd->wait_lock);
		if (pd->stopping)
			break;
		if (pd->throttled != NULL)
			ts.tv_nsec = rate_due_ms_locked(pd, bg_mono_ms()) * 1000000L;
		pthread_mutex_unlock(&pd->wait_lock);
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&pd->wait_lock);
		if (pd->stopping)
			break;
		now = bg_mono_ms();
		if (pd->throttled != NULL)
			rate_grant_locked(pd, now);
		/* The waiters keep their pace when the rate wakes the watcher
		 * sooner. */
		if (pd->waiters == NULL ||
		    (ts.tv_nsec < PEERD_WAIT_POLL_MS * 1000000L && now - checked_ms < PEERD_WAIT_POLL_MS))
			continue;
		checked_ms = now;
		for (struct waiter *w = pd->waiters; w != NULL; w = w->next)
			if (now - w->alive_checked_ms >= 250) {
				w->alive_checked_ms = now;
				if (!writer_alive(pd, w->urlhash))
					w->ready = true;
			}
		if ((st = atomic_load_explicit(&pd->st, memory_order_acquire)) != NULL &&
		    (err = store_view(st, wait_check_fn, pd)) != 0)
			plog(pd, "waiting requests: store read failed: %s", bg_strerror(err));
		for (struct waiter **link = &pd->waiters; *link != NULL;) {
			struct waiter *w = *link;

			if (w->ready || err != 0 || now >= w->deadline_ms)
				waiter_release_locked(pd, link);
			else
				link = &w->next;
		}
	}
	while (pd->waiters != NULL)
		waiter_release_locked(pd, &pd->waiters);
	while (pd->throttled != NULL)
		throttle_release_locked(pd, bg_mono_ms());
	pthread_mutex_unlock(&pd->wait_lock);
	return NULL;
}

/* Suspends the request until urlhash's record reaches need bytes (or
 * another end of the wait) or ms pass.  0: suspended, the handler returns
 * MHD_YES and is called again on resume; 503: too many waiters; -1: peerd
 * is stopping, answer now. */
static int
wait_begin(struct peerd *pd, struct MHD_Connection *conn, void **req_cls,
           const unsigned char urlhash[BG_SHA256_LEN], uint64_t gen, uint64_t need, uint64_t ms)
{
	struct waiter *w;
	int ret = 0;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return -1;
	w->conn = conn;
	memcpy(w->urlhash, urlhash, BG_SHA256_LEN);
	w->gen = gen;
	w->need = need;
	w->alive_checked_ms = bg_mono_ms();
	w->deadline_ms = w->alive_checked_ms + (int64_t)ms;
	pthread_mutex_lock(&pd->wait_lock);
	if (pd->stopping || !pd->wait_started) {
		ret = -1;
	} else if (pd->nwaiters >= pd->waiters_max) {
		ret = MHD_HTTP_SERVICE_UNAVAILABLE;
	} else {
		/* Suspended under wait_lock: the watcher, which resumes under it,
		 * never resumes a connection not yet suspended. */
		MHD_suspend_connection(conn);
		w->next = pd->waiters;
		pd->waiters = w;
		pd->nwaiters++;
		atomic_store(&pd->nwaiting, pd->nwaiters);
		*req_cls = w; /* freed by on_completed */
		pthread_cond_signal(&pd->wait_cond);
	}
	pthread_mutex_unlock(&pd->wait_lock);
	if (ret != 0)
		free(w);
	return ret;
}

/* ---- The fleet's routes ---------------------------------------------------- */

/* The url= argument: 0 with *url set, else the status to answer with *msg. */
static unsigned
url_arg(struct MHD_Connection *conn, const char **url, const char **msg)
{
	size_t url_len = 0;
	unsigned n_url = 0;

	*url = NULL;
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, count_url_arg, &n_url);
	if (n_url != 1 ||
	    MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "url", 3, url, &url_len) !=
	        MHD_YES ||
	    *url == NULL || url_len == 0) {
		*msg = "exactly one non-empty url= argument\n";
		return MHD_HTTP_BAD_REQUEST;
	}
	/* A decoded %00 would cut the key short: no stored key holds one. */
	if (memchr(*url, '\0', url_len) != NULL) {
		*msg = "NUL in url\n";
		return MHD_HTTP_BAD_REQUEST;
	}
	if (url_len > STORE_URL_MAX) {
		*msg = "url longer than any stored key\n";
		return MHD_HTTP_URI_TOO_LONG;
	}
	return 0;
}

/* The wait asked for (X-Bgcopy-Wait), ms capped by the configuration; min
 * defaults to 1 (bytes or pieces).  False for an invalid field. */
static bool
wait_arg(struct peerd *pd, struct MHD_Connection *conn, uint64_t *ms, uint64_t *min)
{
	const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, PEER_WAIT_HEADER);

	*ms = 0;
	*min = 1;
	if (v != NULL && peerd_wait_parse(v, ms, min) != 0)
		return false;
	if (*ms > pd->wait_max_ms)
		*ms = pd->wait_max_ms;
	if (*min == 0)
		*min = 1;
	return true;
}

static uint64_t
sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* GET|HEAD /v1/partial (README.md): the committed prefix of a download in
 * progress, or a complete entry, as one range. */
static enum MHD_Result
answer_partial(struct peerd *pd, struct MHD_Connection *conn, const char *method,
               void **req_cls, bool woken, struct bg_store *st, struct plookup *l)
{
	struct pvals v;
	struct MHD_Response *r = NULL;
	struct pbody *b;
	const char *range, *if_range;
	bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0, use_range = false;
	uint64_t ms = 0, min = 1, a = 0, last = UINT64_MAX, start, len;
	unsigned status, pre;

	pvals_fill(pd, l, &v);
	if (get && !woken && !wait_arg(pd, conn, &ms, &min))
		return send_text(pd, conn, MHD_HTTP_BAD_REQUEST, "invalid " PEER_WAIT_HEADER "\n");
	/* Preconditions against the current ETag (RFC 9110 section 13.2.2):
	 * If-Match "partial-<gen>" pins the incarnation (section 13.1.1). */
	pre = preconditions(conn, v.etag, v.f[PF_LAST_MODIFIED][0] != '\0' ? v.f[PF_LAST_MODIFIED]
	                                                                      : NULL,
	                    l->now);
	if (pre != 0) {
		r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		if (r == NULL || !add_partial_headers(pd, conn, r, &v, pre))
			goto fail;
		return send_response(pd, conn, pre, r);
	}
	/* Range: for GET only (RFC 9110 section 14.2); If-Range honoured only
	 * when it is the current ETag. */
	range = get ? MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE)
	            : NULL;
	if_range = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_RANGE);
	if (range != NULL && if_range != NULL && strcmp(if_range, v.etag) != 0)
		range = NULL;
	if (range != NULL) {
		const char *p = range + strspn(range, " \t");
		uint64_t s0, l0;

		if (strncasecmp(p, "bytes=", 6) == 0 && p[6] == '-') {
			/* A suffix: its end is known only once final. */
			if (!v.final)
				goto unsatisfiable;
			if (peerd_range_parse(range, v.available, &s0, &l0) != PEERD_RANGE_OK)
				goto unsatisfiable;
			a = s0;
			last = s0 + l0 - 1;
			use_range = true;
		} else if (peerd_range_parse(range, UINT64_MAX, &s0, &l0) == PEERD_RANGE_OK) {
			/* Parsed against an unbounded length to learn A and B, then
			 * held against N below. */
			a = s0;
			last = l0 == UINT64_MAX - s0 ? UINT64_MAX : s0 + l0 - 1;
			use_range = true;
		} else if (peerd_range_parse(range, UINT64_MAX, &s0, &l0) ==
		           PEERD_RANGE_UNSATISFIABLE) {
			goto unsatisfiable;
		}
		/* An unusable Range is ignored (section 14.2): as no Range. */
	}
	/* The wait: fewer than min bytes at A, not final, a live writer. */
	if (get && ms > 0 && !v.final && v.alive && v.available < sat_add(a, min)) {
		int w = wait_begin(pd, conn, req_cls, v.urlhash, l->rec.gen, sat_add(a, min), ms);

		if (w == 0)
			return MHD_YES;
		if (w == MHD_HTTP_SERVICE_UNAVAILABLE)
			return send_text(pd, conn, MHD_HTTP_SERVICE_UNAVAILABLE, "too many waiting, retry\n");
	}
	if (!get) {
		/* HEAD: the headers of a GET without Range, status 200 and the
		 * length available (no Range on HEAD, section 14.2). */
		start = 0;
		len = v.available;
		status = MHD_HTTP_OK;
	} else if (!use_range && v.final) {
		start = 0;
		len = v.available;
		status = MHD_HTTP_OK;
	} else {
		/* A non-final entry is always answered as a range, "bytes=0-"
		 * without Range (the deviation README.md documents). */
		if (a >= v.available)
			goto unsatisfiable;
		start = a;
		len = (last >= v.available ? v.available - 1 : last) - a + 1;
		status = MHD_HTTP_PARTIAL_CONTENT;
		if (v.total >= 0)
			snprintf(v.crange, sizeof(v.crange), "bytes %" PRIu64 "-%" PRIu64 "/%" PRId64,
			         start, start + len - 1, v.total);
		else
			/* RFC 9110 section 14.4: "*" when the complete length is
			 * unknown. */
			snprintf(v.crange, sizeof(v.crange), "bytes %" PRIu64 "-%" PRIu64 "/*", start,
			         start + len - 1);
	}
	if (len == 0) {
		r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	} else {
		if ((b = calloc(1, sizeof(*b))) == NULL)
			return MHD_NO;
		b->pd = pd;
		b->st = st;
		b->content = l->complete;
		if (l->complete)
			memcpy(b->sha, l->key.sha256, BG_SHA256_LEN);
		memcpy(b->urlhash, v.urlhash, BG_SHA256_LEN);
		b->gen = l->rec.gen;
		b->start = start;
		b->len = len;
		b->th.conn = conn;
		r = MHD_create_response_from_callback(len, PEERD_BLOCK_BYTES, read_partial_body, b,
		                                      free_pbody);
		if (r == NULL) {
			free(b);
			return MHD_NO;
		}
	}
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream") !=
	        MHD_YES ||
	    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes") != MHD_YES ||
	    !add_partial_headers(pd, conn, r, &v, status))
		goto fail;
	if (v.final) {
		char digest[REPR_DIGEST_LEN + 1];
		unsigned char b64[48];

		EVP_EncodeBlock(b64, l->complete ? l->key.sha256 : l->rec.sha256, BG_SHA256_LEN);
		snprintf(digest, sizeof(digest), "sha-256=:%s:", (const char *)b64);
		if (MHD_add_response_header(r, "Repr-Digest", digest) != MHD_YES)
			goto fail;
	}
	return send_response(pd, conn, status, r);

unsatisfiable:
	/* RFC 9110 section 15.5.17: no part of the range overlaps the current
	 * extent, given as "bytes * / N" with N what is available now. */
	snprintf(v.crange, sizeof(v.crange), "bytes */%" PRIu64, v.available);
	r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (r == NULL || !add_partial_headers(pd, conn, r, &v, MHD_HTTP_RANGE_NOT_SATISFIABLE))
		goto fail;
	return send_response(pd, conn, MHD_HTTP_RANGE_NOT_SATISFIABLE, r);
fail:
	if (r != NULL)
		MHD_destroy_response(r);
	return MHD_NO;
}

/* GET /v1/pieces (README.md): the digests of pieces from .. from+count-1. */
static enum MHD_Result
answer_pieces(struct peerd *pd, struct MHD_Connection *conn, const char *method,
              void **req_cls, bool woken, struct plookup *l)
{
	static const char no_list[] = "no complete piece list\n";
	struct pvals v;
	struct MHD_Response *r;
	unsigned char bsha[BG_SHA256_LEN];
	char pieces[160], bhex[BG_SHA256_HEX_LEN + 1];
	uint64_t ms = 0, min = 1;
	unsigned status = MHD_HTTP_OK;
	bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
	size_t blen = (size_t)l->count * STORE_PIECE_LEN;

	pvals_fill(pd, l, &v);
	if (get && !woken && !wait_arg(pd, conn, &ms, &min))
		return send_text(pd, conn, MHD_HTTP_BAD_REQUEST, "invalid " PEER_WAIT_HEADER "\n");
	if (l->no_list) {
		status = MHD_HTTP_NOT_FOUND;
		snprintf(pieces, sizeof(pieces), "none");
		r = MHD_create_response_from_buffer(sizeof(no_list) - 1, (void *)no_list,
		                                    MHD_RESPMEM_PERSISTENT);
		bg_sha256(no_list, sizeof(no_list) - 1, bsha);
	} else {
		if (get && ms > 0 && !v.final && v.alive && l->known < sat_add(l->from, min)) {
			uint64_t need = sat_add(l->from, min);
			int w;

			need = need > UINT64_MAX / STORE_PIECE_BYTES ? UINT64_MAX
			                                             : need * STORE_PIECE_BYTES;
			w = wait_begin(pd, conn, req_cls, v.urlhash, l->rec.gen, need, ms);
			if (w == 0)
				return MHD_YES;
			if (w == MHD_HTTP_SERVICE_UNAVAILABLE)
				return send_text(pd, conn, MHD_HTTP_SERVICE_UNAVAILABLE,
				                 "too many waiting, retry\n");
		}
		snprintf(pieces, sizeof(pieces),
		         "from=%" PRIu64 ", count=%" PRIu64 ", known=%" PRIu64 ", size=%u, final=%s",
		         l->from, l->count, l->known, (unsigned)STORE_PIECE_BYTES,
		         v.final ? "?1" : "?0");
		bg_sha256(l->digests != NULL ? (const void *)l->digests : (const void *)"", blen, bsha);
		if (blen > 0) {
			r = MHD_create_response_from_buffer_with_free_callback(blen, l->digests, free);
			if (r != NULL)
				l->digests = NULL; /* transferred */
			if (r != NULL && get)
				rate_charge(pd, blen);
		} else {
			r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		}
	}
	if (r == NULL)
		return MHD_NO;
	bg_sha256_hex(bsha, bhex);
	{
		const char *f[] = {v.etag, pieces, bhex};

		if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
		                            status == MHD_HTTP_OK ? "application/octet-stream"
		                                                  : "text/plain") != MHD_YES ||
		    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, v.etag) != MHD_YES ||
		    MHD_add_response_header(r, "X-Bgcopy-Pieces", pieces) != MHD_YES ||
		    (v.f[PF_NODE][0] != '\0' &&
		     MHD_add_response_header(r, "X-Bgcopy-Node", v.f[PF_NODE]) != MHD_YES) ||
		    !add_signed(pd, conn, r, PATH_PIECES, status, f, 3)) {
			MHD_destroy_response(r);
			return MHD_NO;
		}
	}
	return send_response(pd, conn, status, r);
}

static enum MHD_Result
serve_fleet(struct peerd *pd, struct MHD_Connection *conn, const char *method,
            const char *path, void **req_cls)
{
	struct plookup l;
	struct bg_store *st;
	const char *url, *msg;
	bool pieces = strcmp(path, PATH_PIECES) == 0;
	/* Called again after a wait: answer with what there is now.  The
	 * request was authenticated on its first call (checking it again
	 * would find its own signature in the replay set). */
	bool woken = *req_cls != NULL && *req_cls != &first_call_seen;
	enum MHD_Result ret;
	unsigned status;
	int err = 0;

	if ((status = url_arg(conn, &url, &msg)) != 0)
		return send_text(pd, conn, status, msg);
	if (!woken) {
		atomic_fetch_add_explicit(pieces ? &pd->pieces_requests : &pd->partial_requests, 1,
		                          memory_order_relaxed);
		if ((status = check_auth(pd, conn, method, path, url)) != 0)
			return send_text(pd, conn, status,
			                 status == MHD_HTTP_UNAUTHORIZED ? "authentication required\n"
			                                                 : "busy, retry\n");
	}
	memset(&l, 0, sizeof(l));
	l.pd = pd;
	l.now = bg_now();
	l.url = url;
	l.pieces = pieces;
	if (pieces) {
		const char *from = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "from");

		if (from != NULL && bg_parse_u64(from, strlen(from), UINT64_MAX, &l.from) != 0)
			return send_text(pd, conn, MHD_HTTP_BAD_REQUEST, "from= is not a piece index\n");
	}
	if ((st = store_get(pd, &err)) != NULL)
		err = store_view(st, plookup_fn, &l);
	if (err == BG_ENOENT) {
		ret = send_text(pd, conn, MHD_HTTP_NOT_FOUND, "not found\n");
	} else if (err != 0) {
		if (st != NULL)
			plog(pd, "lookup failed: %s", bg_strerror(err));
		ret = send_text(pd, conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "store error\n");
	} else if (pieces) {
		ret = answer_pieces(pd, conn, method, req_cls, woken, &l);
	} else {
		ret = answer_partial(pd, conn, method, req_cls, woken, st, &l);
	}
	plookup_clear(&l);
	return ret;
}

static enum MHD_Result
serve_metrics(struct peerd *pd, struct MHD_Connection *conn, const char *method)
{
	const union MHD_DaemonInfo *info;
	struct MHD_Response *r;
	unsigned status;
	char *buf;
	size_t off = 0;
	uint64_t ms;
	int n;

	if ((status = check_auth(pd, conn, method, PATH_METRICS, "")) != 0)
		return send_text(pd, conn, status,
		                 status == MHD_HTTP_UNAUTHORIZED ? "authentication required\n"
		                                                 : "busy, retry\n");
	if ((buf = malloc(PEERD_METRICS_MAX)) == NULL)
		return MHD_NO;
#define EMIT(...)                                                                  \
	do {                                                                       \
		n = snprintf(buf + off, PEERD_METRICS_MAX - off, __VA_ARGS__);     \
		if (n < 0 || (size_t)n >= PEERD_METRICS_MAX - off)                 \
			goto too_long;                                             \
		off += (size_t)n;                                                  \
	} while (0)
	/* This request is counted as it is queued: the 200 shown here excludes
	 * the answer being built. */
	EMIT("# HELP bgcopy_peerd_requests_total Responses queued by peerd, by status.\n"
	     "# TYPE bgcopy_peerd_requests_total counter\n");
	for (size_t i = 0; i <= N_STATUS; i++) {
		uint64_t v = atomic_load_explicit(&pd->requests[i], memory_order_relaxed);

		if (i < N_STATUS)
			EMIT("bgcopy_peerd_requests_total{status=\"%u\"} %" PRIu64 "\n",
			     counted_status[i], v);
		else
			EMIT("bgcopy_peerd_requests_total{status=\"other\"} %" PRIu64 "\n", v);
	}
	EMIT("# HELP bgcopy_peerd_bytes_served_total Content body bytes handed to the network.\n"
	     "# TYPE bgcopy_peerd_bytes_served_total counter\n"
	     "bgcopy_peerd_bytes_served_total %" PRIu64 "\n",
	     (uint64_t)atomic_load_explicit(&pd->bytes_served, memory_order_relaxed));
	EMIT("# HELP bgcopy_peerd_hits_total Content requests answered 200 or 206.\n"
	     "# TYPE bgcopy_peerd_hits_total counter\n"
	     "bgcopy_peerd_hits_total %" PRIu64 "\n",
	     (uint64_t)atomic_load_explicit(&pd->hits, memory_order_relaxed));
	EMIT("# HELP bgcopy_peerd_misses_total Content requests answered 404 (absent or private).\n"
	     "# TYPE bgcopy_peerd_misses_total counter\n"
	     "bgcopy_peerd_misses_total %" PRIu64 "\n",
	     (uint64_t)atomic_load_explicit(&pd->misses, memory_order_relaxed));
	EMIT("# HELP bgcopy_peerd_partial_requests_total Requests of /v1/partial.\n"
	     "# TYPE bgcopy_peerd_partial_requests_total counter\n"
	     "bgcopy_peerd_partial_requests_total %" PRIu64 "\n",
	     (uint64_t)atomic_load_explicit(&pd->partial_requests, memory_order_relaxed));
	EMIT("# HELP bgcopy_peerd_pieces_requests_total Requests of /v1/pieces.\n"
	     "# TYPE bgcopy_peerd_pieces_requests_total counter\n"
	     "bgcopy_peerd_pieces_requests_total %" PRIu64 "\n",
	     (uint64_t)atomic_load_explicit(&pd->pieces_requests, memory_order_relaxed));
	EMIT("# HELP bgcopy_peerd_waiting Requests suspended in a wait (X-Bgcopy-Wait).\n"
	     "# TYPE bgcopy_peerd_waiting gauge\n"
	     "bgcopy_peerd_waiting %u\n",
	     (unsigned)atomic_load(&pd->nwaiting));
	EMIT("# HELP bgcopy_peerd_serve_rate_bytes The serving rate of all bodies together, "
	     "bytes/s (0: no limit).\n"
	     "# TYPE bgcopy_peerd_serve_rate_bytes gauge\n"
	     "bgcopy_peerd_serve_rate_bytes %" PRIu64 "\n",
	     pd->rate);
	ms = atomic_load_explicit(&pd->throttled_ms, memory_order_relaxed);
	EMIT("# HELP bgcopy_peerd_throttled_seconds_total Time bodies spent suspended for the "
	     "serving rate, all together.\n"
	     "# TYPE bgcopy_peerd_throttled_seconds_total counter\n"
	     "bgcopy_peerd_throttled_seconds_total %" PRIu64 ".%03u\n",
	     ms / 1000, (unsigned)(ms % 1000));
	info = MHD_get_daemon_info(pd->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	if (info != NULL)
		EMIT("# HELP bgcopy_peerd_connections Open connections.\n"
		     "# TYPE bgcopy_peerd_connections gauge\n"
		     "bgcopy_peerd_connections %u\n",
		     info->num_connections);
#undef EMIT
	r = MHD_create_response_from_buffer(off, buf, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(buf);
		return MHD_NO;
	}
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	                            "text/plain; version=0.0.4") != MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	return send_response(pd, conn, MHD_HTTP_OK, r);
too_long:
	free(buf);
	return send_text(pd, conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "metrics too long\n");
}

/* True when the request announces a body (none of our routes takes one). */
static bool
has_body(struct MHD_Connection *conn)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	                                             MHD_HTTP_HEADER_CONTENT_LENGTH);

	if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	                                MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL)
		return true;
	return cl != NULL && strspn(cl, "0") != strlen(cl);
}

/* True when v may be a Host value or an authority: uri-host [ ":" port ],
 * whose characters are unreserved, pct-encoded, sub-delims, ":" and the
 * brackets of an IP literal (RFC 3986 section 3.2).  Whitespace, "/", "@"
 * or controls make it invalid. */
static bool
authority_ok(const char *v, size_t n)
{
	static const char extra[] = "-._~%!$&'()*+,;=:[]";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      (c != '\0' && strchr(extra, c) != NULL)))
			return false;
	}
	return true;
}

/* field-name = token (RFC 9110 section 5.1): tchar only. */
static bool
token_ok(const char *s)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr(extra, c) != NULL))
			return false;
	}
	return true;
}

struct header_scan {
	unsigned host_lines;
	bool valid;        /* every name a token, every Host value an authority */
};

static enum MHD_Result
scan_header_line(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct header_scan *h = cls;

	(void)kind;
	if (key == NULL || !token_ok(key)) {
		h->valid = false;
		return MHD_YES;
	}
	if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
		h->host_lines++;
		if (value == NULL || !authority_ok(value, strlen(value)))
			h->valid = false;
	}
	return MHD_YES;
}

/* The header rules whose breach is a 400 (RFC 9112): an HTTP/1.1 request
 * without Host, any request with more than one Host line or an invalid Host
 * value (section 3.2), and whitespace between a field name and its colon
 * (section 5.1), which leaves a name that is no token.  libmicrohttpd
 * (MHD_OPTION_STRICT_FOR_CLIENT) already refuses a missing Host and a space
 * before the colon before peerd sees the request; it lets two Host lines
 * and a tab before the colon through. */
static bool
headers_ok(struct MHD_Connection *conn, const char *version)
{
	struct header_scan h = {.host_lines = 0, .valid = true};

	MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header_line, &h);
	if (!h.valid || h.host_lines > 1)
		return false;
	return h.host_lines == 1 || strcmp(version, MHD_HTTP_VERSION_1_1) != 0;
}

/* The path that a request target names.  An origin-form target is its own
 * path.  An absolute-form one ("http://host:port/v1/health"), which a
 * server must accept (RFC 9112 section 3.2.2), names the path after its
 * authority ("/" when there is none); the authority itself is not compared
 * with anything, peerd answering for one host only.  NULL when that
 * authority is invalid: empty (RFC 9110 section 4.2.1) or with userinfo
 * (section 4.2.4), both errors.  Another scheme is not recognised: the
 * target stays an unknown path. */
static const char *
target_path(const char *target)
{
	static const char scheme[] = "http://";
	const char *auth, *slash;
	size_t n;

	if (strncasecmp(target, scheme, sizeof(scheme) - 1) != 0)
		return target;
	auth = target + sizeof(scheme) - 1;
	slash = strchr(auth, '/');
	n = slash != NULL ? (size_t)(slash - auth) : strlen(auth);
	if (n == 0 || auth[0] == ':' || memchr(auth, '@', n) != NULL || !authority_ok(auth, n))
		return NULL;
	return slash != NULL ? slash : "/";
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *target, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size,
           void **req_cls)
{
	struct peerd *pd = cls;
	const char *path;
	bool known, get, head;

	if (*req_cls != NULL && *req_cls != &first_call_seen) {
		/* Resumed after a wait (wait_begin): the request was checked on
		 * its first calls; answer it now. */
		return serve_fleet(pd, conn, method, target_path(target), req_cls);
	}
	if (*req_cls == NULL) {
		*req_cls = &first_call_seen;
		/* Queueing on the first call makes libmicrohttpd close the
		 * connection after the answer, which is what a request that comes
		 * with a body deserves: no route takes one, and we will not read
		 * it.  Everything else is answered on the second call, which keeps
		 * the connection alive. */
		if (!has_body(conn))
			return MHD_YES;
	} else if (*upload_data_size != 0) {
		/* Only reached if a body arrives unannounced: drop it. */
		*upload_data_size = 0;
		return MHD_YES;
	}

	/* The message first: a request that breaks HTTP/1.1's rules is 400
	 * whatever it asks for. */
	if (!headers_ok(conn, version))
		return send_text(pd, conn, MHD_HTTP_BAD_REQUEST,
		                 "malformed field name, or not exactly one valid Host\n");
	if ((path = target_path(target)) == NULL)
		return send_text(pd, conn, MHD_HTTP_BAD_REQUEST, "invalid authority in the target\n");
	known = strcmp(path, PATH_CONTENT) == 0 || strcmp(path, PATH_HEALTH) == 0 ||
	        strcmp(path, PATH_METRICS) == 0 || strcmp(path, PATH_PARTIAL) == 0 ||
	        strcmp(path, PATH_PIECES) == 0;
	get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
	head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	if (!known)
		return send_text(pd, conn, MHD_HTTP_NOT_FOUND, "no such path\n");
	if (!(get || head))
		return send_text(pd, conn, MHD_HTTP_METHOD_NOT_ALLOWED, "GET or HEAD only\n");
	if (has_body(conn))
		return send_text(pd, conn, MHD_HTTP_BAD_REQUEST, "no request body expected\n");
	if (strcmp(path, PATH_HEALTH) == 0)
		return send_text(pd, conn, MHD_HTTP_OK, "ok\n");
	if (strcmp(path, PATH_METRICS) == 0)
		return serve_metrics(pd, conn, method);
	if (strcmp(path, PATH_PARTIAL) == 0 || strcmp(path, PATH_PIECES) == 0)
		return serve_fleet(pd, conn, method, path, req_cls);
	return serve_content(pd, conn, method);
}

/* Frees a waiter left as the request's state (wait_begin). */
static void
on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
             enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	if (*req_cls != NULL && *req_cls != &first_call_seen)
		free(*req_cls);
	*req_cls = NULL;
}

/* ---- Life cycle ------------------------------------------------------------ */

int
peerd_start(const struct peerd_config *c, struct bg_store *st, struct peerd **out)
{
	struct sockaddr_storage sa;
	const union MHD_DaemonInfo *info;
	struct peerd *pd = NULL;
	unsigned salen = 0, threads = c->threads;
	/* Suspend and resume (the bounded wait): resumed connections are
	 * processed at once by their pool thread, woken by its ITC. */
	unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
	                 MHD_ALLOW_SUSPEND_RESUME;
	int err;

	if (threads == 0) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		threads = ncpu < 1 ? 1 : ncpu > PEERD_THREADS_MAX ? PEERD_THREADS_MAX : (unsigned)ncpu;
	}
	if ((st == NULL && c->home == NULL) || threads > PEERD_THREADS_MAX ||
	    c->max_connections < threads ||
	    c->max_connections > PEERD_CONNECTIONS_MAX || c->timeout == 0 ||
	    c->timeout > PEERD_TIMEOUT_MAX || c->connection_memory < 4096 ||
	    c->partial_wait_max_ms > PEER_PARTIAL_WAIT_MAX_MS || c->per_peer > PEERD_PER_PEER_MAX ||
	    c->serve_rate > PEERD_SERVE_RATE_MAX ||
	    (c->peer_key != NULL && (c->peer_key_len < PEER_KEY_MIN ||
	                             c->peer_key_len > PEER_KEY_MAX)))
		return BG_EINVAL;
	if ((err = peerd_parse_listen(c->listen, c->port, &sa, &salen)) != 0)
		return err;
	if (sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&sa;

		/* "::" means every address, IPv4 ones included (mapped). */
		flags |= IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
	}

	if ((pd = calloc(1, sizeof(*pd))) == NULL)
		return BG_ENOMEM;
	atomic_init(&pd->st, st);
	pd->log = c->log;
	pd->log_cls = c->log_cls;
	for (size_t i = 0; i <= N_STATUS; i++)
		atomic_init(&pd->requests[i], 0);
	atomic_init(&pd->bytes_served, 0);
	atomic_init(&pd->hits, 0);
	atomic_init(&pd->misses, 0);
	atomic_init(&pd->max_age, (int64_t)STORE_DEFAULT_MAX_AGE_DAYS * 86400);
	atomic_init(&pd->max_age_loaded, 0);
	if (pthread_mutex_init(&pd->usage_lock, NULL) != 0) {
		free(pd);
		return BG_ENOMEM;
	}
	if (pthread_mutex_init(&pd->store_lock, NULL) != 0) {
		pthread_mutex_destroy(&pd->usage_lock);
		free(pd);
		return BG_ENOMEM;
	}
	pd->usage_flushed = bg_now();
	atomic_init(&pd->partial_requests, 0);
	atomic_init(&pd->pieces_requests, 0);
	atomic_init(&pd->nwaiting, 0);
	atomic_init(&pd->node_loaded, false);
	pd->wait_max_ms = c->partial_wait_max_ms;
	pd->rate = c->serve_rate;
	pd->quantum = (size_t)(c->serve_rate / (1000 / PEERD_WAIT_POLL_MS));
	if (pd->quantum < PEERD_RATE_GRANT_MIN)
		pd->quantum = PEERD_RATE_GRANT_MIN;
	pd->throttled_tail = &pd->throttled;
	atomic_init(&pd->throttled_ms, 0);
	/* Waiters hold connections: at most half of them may wait. */
	pd->waiters_max = c->max_connections / 2 > 0 ? c->max_connections / 2 : 1;
	/* A full bucket at start: an eighth of a second of the rate. */
	if (pthread_mutex_init(&pd->wait_lock, NULL) != 0 ||
	    pthread_cond_init(&pd->wait_cond, NULL) != 0 ||
	    bg_rate_init(&pd->bucket, c->serve_rate, PEERD_RATE_BURST_MIN, bg_mono_ms()) != 0) {
		/* Not worth unwinding precisely: both are plain on Linux. */
		pthread_mutex_destroy(&pd->usage_lock);
		pthread_mutex_destroy(&pd->store_lock);
		free(pd);
		return BG_ENOMEM;
	}
	if (pthread_create(&pd->watcher, NULL, wait_main, pd) == 0)
		pd->wait_started = true;
	else
		plog(pd, "cannot start the wait watcher: waits are answered at once");
	if (c->home != NULL && (pd->home = strdup(c->home)) == NULL) {
		err = BG_ENOMEM;
		goto out;
	}
	if (c->peer_key != NULL) {
		memcpy(pd->key, c->peer_key, c->peer_key_len);
		pd->keylen = c->peer_key_len;
		if ((pd->replay = peerd_replay_new()) == NULL) {
			err = BG_ENOMEM;
			goto out;
		}
	}

	pd->mhd = MHD_start_daemon(
	    flags, 0, NULL, NULL, on_request, pd,
	    /* First, so that libmicrohttpd logs nothing on its own. */
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, pd,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
	    MHD_OPTION_THREAD_POOL_SIZE, threads,
	    MHD_OPTION_CONNECTION_LIMIT, c->max_connections,
	    MHD_OPTION_CONNECTION_TIMEOUT, c->timeout,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, c->connection_memory,
	    /* 400 for an HTTP/1.1 request without Host and for whitespace
	     * between a field name and its colon (RFC 9112 sections 3.2 and
	     * 5.1); the rest of those rules is headers_ok()'s. */
	    MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, pd,
	    /* 0: none (libmicrohttpd's default). */
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, c->per_peer,
	    MHD_OPTION_END);
	if (pd->mhd == NULL) {
		err = BG_EIO;
		goto out;
	}
	info = MHD_get_daemon_info(pd->mhd, MHD_DAEMON_INFO_BIND_PORT);
	if (info == NULL || info->port == 0) {
		plog(pd, "cannot tell the port listened on");
		err = BG_EIO;
		goto out;
	}
	pd->port = info->port;
	*out = pd;
	pd = NULL; /* transferred */
	err = 0;
out:
	peerd_stop(pd);
	return err;
}

const char *
peerd_mhd_version(void)
{
	return MHD_get_version();
}

unsigned
peerd_port(const struct peerd *pd)
{
	return pd->port;
}

void
peerd_stop(struct peerd *pd)
{
	if (pd == NULL)
		return;
	/* Every waiter resumed first (the watcher does it as it ends): a
	 * connection still suspended would make MHD_stop_daemon panic.  No
	 * request suspends once stopping is set. */
	pthread_mutex_lock(&pd->wait_lock);
	pd->stopping = true;
	pthread_cond_broadcast(&pd->wait_cond);
	pthread_mutex_unlock(&pd->wait_lock);
	if (pd->wait_started)
		pthread_join(pd->watcher, NULL);
	if (pd->mhd != NULL)
		MHD_stop_daemon(pd->mhd);
	if (pd->home != NULL && pd->nusage > 0 && !pd->usage_failed)
		usage_write(pd, pd->usage, pd->nusage);
	/* After the daemon: no request reads the store any more. */
	if (pd->owns_store)
		store_close(atomic_load(&pd->st));
	free(pd->home);
	pthread_mutex_destroy(&pd->usage_lock);
	pthread_mutex_destroy(&pd->store_lock);
	pthread_mutex_destroy(&pd->wait_lock);
	bg_rate_destroy(&pd->bucket);
	pthread_cond_destroy(&pd->wait_cond);
	peerd_replay_free(pd->replay);
	OPENSSL_cleanse(pd->key, sizeof(pd->key));
	free(pd);
}
