/*
 * engine_int.h - what the parts of the engine (engine*.c) share: the state
 * of a run and of the file being fetched.
 */
#ifndef BG_ENGINE_INT_H
#define BG_ENGINE_INT_H

#include "jobs.h"
#include "jobs_int.h"
#include "record.h"
#include "peertable.h"
#include "fleet.h"

/* One job_run. */
struct run {
	struct bg_store *st;
	struct origin *o;
	const char *id;
	const struct job_run_options *ro;
	struct job_rec job;
	int64_t generation; /* of the job record as loaded: commits check it */
	struct job_memo memo; /* spares decoding the job record at each commit */
	const char *peers[JOB_PEERS_MAX]; /* HOST:PORT of the peers to ask (borrowed) */
	const char *sources[JOB_PEERS_MAX]; /* where each came from (peer_source_name) */
	const char *nodes[JOB_PEERS_MAX];   /* its node id, or NULL */
	size_t npeers;
	bool key_failed;                  /* the peer key cannot be read: no peer is asked */
	bool table_loaded;                /* the table's peers were taken (ro->table) */
	struct peer_row *rows;            /* the table's peers (peers[] points into them) */
	struct peer_config pc;
	struct hasher *hash;
	uint64_t file_bytes; /* bytes of the file run_file last finished */
	uint32_t nfiles;
	uint64_t bytes_before; /* job bytes in files before the current one */
	struct job_outcome out; /* of the current attempt: the error that stops the job, if any */
	/* What the job's bytes are fetched under (fleet.h), but crl: computed
	 * once per run (it reads the CA file) and when the job changes. */
	struct store_fetch_policy fetch;
	/* Time spent connecting and transferring against the job's maximum
	 * download time (dltime.h): counts while the run holds the job. */
	struct dl_clock dl;
	/* The job's own rate limit (max_rate; no limit at 0), changed by a
	 * reload.  Every byte a source hands the sink is taken from it and
	 * from ro->shared_rate (sink_data). */
	struct bg_rate rate;
};
/* The longest sleep for the rate before the run's stop is looked at, and
 * how often a long wait looks for a user's change of the job. */
#define RUN_RATE_SLICE_MS 100
#define RUN_RATE_RECHECK_MS 1000

/* The file being fetched in one attempt (run_file), and the sink its
 * sources feed. */
struct fsink {
	struct run *r;
	uint32_t index;
	struct file_rec rec;
	json_t *rec_json; /* rec as last committed (file_rec_encode updates it in place) */
	int fd;
	uint64_t blob;
	uint64_t committed; /* bytes good in both the partial file and the store */
	unsigned char *buf;            /* the chunk being filled (the hasher's) */
	const unsigned char *pending;  /* the chunk just written, for the store */
	size_t fill;
	size_t preloaded; /* bytes at the start of buf committed before: counted already */
	struct hasher *hash;
	bool cache;
	bool too_big;               /* larger than the store's limit: delivered, not kept */
	bool progressed;
	bool from_peer;             /* the bytes arriving now come from a peer */
	uint64_t from_origin;       /* committed bytes by source */
	uint64_t from_peers;
	bool has_want;              /* the content must have this digest (a peer's entry) */
	bool state_pending;         /* TRANSFERRING (and the response's validators) not committed yet */
	/* The store's own copy, looked up before peers and the origin. */
	enum { LOOK_NONE, LOOK_HIT, LOOK_REVALIDATED, LOOK_MISS } look;
	struct store_key held;      /* the key under the file's remote URL (url NULL: none) */
	bool from_store;            /* the file was written from the store: store_sha is its digest */
	bool skip_keys;             /* delivered by digest alone: no origin confirmed a key */
	unsigned char store_sha[BG_SHA256_LEN];
	unsigned char want[BG_SHA256_LEN];
	/* The digest of the chunk being committed (full chunks only). */
	bool piece_known;
	unsigned char piece_now[STORE_PIECE_LEN];
	/* A full chunk streamed in (chunk piece_chunk, hasher buffer
	 * piece_seq) is committed before its digest is known: the hasher's
	 * thread computes it, and the next commit of the file stores it. */
	bool piece_pending;
	uint64_t piece_seq, piece_chunk;
	/* The download in progress as this node publishes it for peers
	 * (doc/fleet-design.md 1.4): rewritten with every commit of the file
	 * while publish, under the lock lock_fd (-1: none held). */
	bool publish;
	bool unpublished;   /* a stale record of this file was deleted (once per attempt) */
	char *pub_url;      /* the record's URL: the one asked when the origin's bytes began */
	char *pub_final;    /* the URL that answered (ALLOW_REPORT), or NULL */
	uint64_t gen;       /* the incarnation, 0: none yet */
	int64_t pub_started;
	int lock_fd;
	/* The fleet (engine_fleet.c): this node's part for the file, and the
	 * node it follows.  A follower publishes its bytes as state "peer". */
	enum fleet_role { FLEET_ROLE_NONE, FLEET_ROLE_OWNER, FLEET_ROLE_FOLLOWER } fleet_role;
	char fleet_source[BG_NODE_ID_LEN + 1];
	bool pub_want;      /* published as an intent (state "want"): no bytes yet */
};

/* ---- The run (engine.c) ---------------------------------------------------- */
/* Errors that end the attempt without being the job's error: the store
 * failed, a user changed the job (BG_EAGAIN), or we were told to stop. */
bool run_propagated(int err);
/* Whether the job has used up its maximum download time (dltime.h). */
bool run_out_of_time(const struct run *r);

/* ---- The partial file and its commits (engine_sink.c) ---------------------- */
/* Whether the run was told to stop (ro->stop), or reached the job's
 * maximum download time (run_out_of_time). */
bool run_stopping(const struct run *r);
/* Reports the run's progress with the file's bytes so far. */
void report_progress(struct fsink *s);
/* Commits the file record (and the job record when with_job), plus one
 * chunk when chunk != NULL, and a restart of the blob when drop. */
int commit_file(struct fsink *s, const void *chunk, size_t len, bool drop, bool with_job) BG_WUR;
/* Writes the buffered bytes to the partial file, hashes them and counts
 * them in the file record; the caller commits them. */
int write_pending(struct fsink *s) BG_WUR;
/* Counts the bytes written by write_pending() as committed. */
void pending_committed(struct fsink *s);
/* Commits the buffered bytes: partial file, blob chunk and file record in
 * one step (the job's state too, the first time after a response began). */
int flush_chunk(struct fsink *s) BG_WUR;
/* Throws away every byte of the file kept so far (partial file and blob);
 * a published download starts a new incarnation (gen) at 0 bytes. */
int restart_file(struct fsink *s) BG_WUR;
/* The fetch policy of the file's bytes (the run's, with its crl_checked). */
void file_fetch_policy(const struct fsink *s, struct store_fetch_policy *out);
/* The record of the download in progress as it stands, committed bytes
 * committed (strings borrowed from s). */
void inflight_of(const struct fsink *s, uint64_t committed, struct store_inflight *out);
/* A random incarnation number, 1 .. 2^63 - 1. */
uint64_t inflight_new_gen(void);
/* Whether the file's download may be published for peers (the store
 * keeps it and may offer it): a candidate of the fleet's elections. */
bool may_publish(const struct fsink *s);
/* Publishes the file's download now in state st (want: an intent before
 * any byte; origin: elected to fetch it), taking the lock first.  Nothing
 * when the file may not be published. */
int fleet_publish(struct fsink *s, enum store_inflight_state st) BG_WUR;
/* Ends the file's publishing: its lock is released (the record stays, as
 * the store has it).  Every way out of an attempt goes through it. */
void inflight_release(struct fsink *s);
/* Whether etag is a strong entity tag of a length the store keeps. */
bool strong_etag(const char *etag);
/* The validator a resume may put in If-Range, or NULL when the file must
 * start over from byte 0 (RFC 9110 section 13.1.5): a strong entity tag;
 * else, only when the response carried no entity tag at all (a weak one
 * included), its Last-Modified, and only if that date is strong (see
 * http_date_strong).  nginx and lighttpd answer a date If-Range by string
 * equality: with a weaker date a file rewritten within the same second
 * would come back as a 206 of the new version, spliced onto the old. */
const char *resume_validator(const struct file_rec *rec);
/* Validators are kept only when they are what RFC 9110 allows: visible
 * ASCII and spaces, of a sane length.  Anything else is not used to resume
 * (the file then restarts from byte 0 after an interruption). */
const char *usable_validator(const char *v);
/* The origin_sink of a file (arg: its struct fsink): a response begins,
 * bytes arrive. */
int sink_start(void *arg, const struct origin_response *resp) BG_WUR;
int sink_data(void *arg, const void *p, size_t len) BG_WUR;
/* Makes the partial file hold exactly the committed bytes, repairing it
 * from the store when it lost some (power loss), and re-hashes them.  Also
 * after a source broke off within a run. */
int prepare_partial(struct fsink *s) BG_WUR;
/* The partial file of local path local in job id: a hidden name beside it. */
int temp_path_for(const char *id, const char *local, char *out, size_t len) BG_WUR;

/* ---- The store as a source (engine_store.c) -------------------------------- */
/* The conditions a request for the held copy carries (RFC 9110 13.1.2,
 * 13.1.3): its strong ETag; else its Last-Modified, only when that date is
 * strong and no entity tag came with it, as for If-Range.  A weak ETag
 * would let a 304 stand for bytes that are only equivalent.  False when
 * the copy cannot be asked about. */
bool held_conditions(const struct store_key *k, const char **inm, const char **ims);
/* Looks the file up in the store before peers and the origin.  Content of
 * the job's expected SHA-256 is delivered with no request at all (*done
 * once the file is finished).  A key under the file's current remote URL
 * is kept in s->held for a conditional request to the origin. */
int try_store(struct run *r, struct fsink *s, bool *done) BG_WUR;
/* The origin said 304 for the held copy: it is written from the store and
 * its key confirmed with the 304's validators (RFC 9110 15.4.5). */
int revalidated(struct run *r, struct fsink *s, const struct origin_result *res) BG_WUR;

/* ---- Peers and the origin request (engine_peers.c) ------------------------- */
/* The origin request for the file's current remote URL with the job's
 * settings, resuming from the bytes held. */
void origin_request_for(struct run *r, struct fsink *s, const char *const *headers,
                        struct origin_request *req);
/* Asks the peers, in order, for the file under its current remote URL and
 * takes the first valid entry.  *done when all bytes came in (the caller
 * verifies them); otherwise what arrived stays committed and the origin
 * carries on from there. */
int try_peers(struct run *r, struct fsink *s, const struct origin_sink *sink,
              const char *const *headers, bool *done) BG_WUR;
/* Whether the run has peers to ask: the job's, the runner's, else (taken
 * now, once per run) the peer table's. */
bool run_has_peers(struct run *r);
/* Notes the lookups of the attempt in the store's peer results (best
 * effort: a note, not the download's business). */
void note_peer_results(struct run *r, const struct fsink *s);

/* ---- The fleet (engine_fleet.c) ---------------------------------------------
 * One origin copy for many nodes: README.md "The fleet". */
#define FLEET_SETTLE_MS 300        /* between publishing an intent and deciding */
#define FLEET_POLL_MS 1000         /* a poll of every peer, at most */
#define FLEET_STALL_MS 10000       /* no growth at the node followed: somebody else fetches */
#define FLEET_FOLLOW_MIN ((uint64_t)16 * STORE_CHUNK_BYTES) /* bytes waited for per request */
#define FLEET_OWNER_START_MS 3000  /* an elected node that has not started by then is passed over */
#define FLEET_WATCH_MS 200         /* polls while waiting for it */
#define FLEET_ROUNDS_MAX 12        /* polls of every peer per attempt, whatever they found */
/* Whether the fleet is asked for this file: the run takes part (a home,
 * fleet on), the job is a peer-caching client with peers, and its redirect
 * policy is not ALLOW_REPORT (such a job keys the file under the URL that
 * answered: other nodes asking for the original URL never see it). */
bool fleet_applies(struct run *r, struct fsink *s);
/* Takes the file from a node fetching it now, or joins the election of
 * the node that fetches it.  *done when it is finished (verified); else
 * the caller goes to the origin (s->fleet_role says whether as the
 * elected owner), resuming from what came in. */
int try_fleet(struct run *r, struct fsink *s, const struct origin_sink *sink, bool *done) BG_WUR;

/* ---- Many peers at once (engine_swarm.c) ------------------------------------
 * A complete entry that several peers hold is taken from all of them, piece
 * by piece (a piece is a store chunk), each piece checked against the piece
 * list of the entry before it is kept (doc/fleet-design.md 3.5). */
#define SWARM_WINDOW 32     /* pieces ahead of the committed head (8 MiB of buffers) */
#define SWARM_SPAN 4        /* consecutive pieces per request (about 1 MiB) */
#define PEER_CONNECTIONS 2  /* requests at once per peer */
struct swarm_src {
	bool dead;          /* sent a bad piece or failed: not asked again for this file */
	unsigned conns;     /* requests outstanding */
	double rate;        /* EWMA of bytes/s, 0: not known yet */
	uint64_t queued;    /* bytes asked and not yet in */
	uint64_t bytes;     /* verified bytes it sent */
};
enum swarm_slot_state { SWARM_EMPTY, SWARM_ASKED, SWARM_HAVE };
struct swarm_slot {
	enum swarm_slot_state st;
	int src;                /* ASKED, HAVE: the sender */
	unsigned char *buf;     /* HAVE: the verified piece (owned) */
	size_t len;
};
struct swarm {
	struct swarm_src src[JOB_PEERS_MAX];
	size_t nsrc;
	uint64_t size;          /* of the entry */
	uint64_t npieces;       /* ceil(size / STORE_PIECE_BYTES) */
	uint64_t head;          /* the first piece not yet given to the sink */
	struct swarm_slot win[SWARM_WINDOW]; /* win[i]: piece head + i */
};
/* One request swarm_plan decides: pieces first .. first + count - 1 from src. */
struct swarm_req {
	int src;
	uint64_t first;
	unsigned count;
};
/* The bytes of piece i of the entry (the last one may be short). */
size_t swarm_piece_len(const struct swarm *w, uint64_t i);
/* Pure: what to ask next.  Empty pieces of the window, lowest first, in
 * runs of up to SWARM_SPAN, each run to the live source with a free
 * connection (PEER_CONNECTIONS) and the earliest estimated finish
 * ((queued + run bytes) / rate; an unknown rate counts as the mean of the
 * known ones).  The pieces become ASKED and the source's conns and queued
 * grow.  Returns the number of requests written to out (at most max). */
size_t swarm_plan(struct swarm *w, struct swarm_req *out, size_t max);
/* A holder of the entry for swarm_run: its index in r->peers. */
struct swarm_holder {
	size_t peer;
	const struct peer_entry *ent;
};
/* Takes the entry from every holder at once into sink, from s->committed
 * (a chunk boundary), each piece checked against digests (one per piece).
 * *done when every byte went to the sink (the caller flushes the last
 * chunk and finishes the file); otherwise what was committed stays and the
 * caller goes on with another source. */
int swarm_run(struct run *r, struct fsink *s, const struct origin_sink *sink, const char *key,
              const struct swarm_holder *h, size_t nh, const unsigned char *digests,
              bool *done) BG_WUR;
/* Notes a lookup of peer i of the run in the file's record (engine_peers.c). */
void note_peer_lookup(struct fsink *s, const char *key, size_t i, enum peer_lookup_result result,
                      const char *detail);

/* ---- Finishing a file (engine_finish.c) ------------------------------------ */
/* Whether the job was made with credentials (a user, an Authorization or
 * Cookie header): its content is never offered to peers. */
bool job_is_private(const struct job_rec *job);
/* Whether the job's peer-caching mode includes side (client or server). */
bool peer_mode(const struct job_rec *job, enum peer_caching side);
/* Verifies and records a file whose bytes are all in. */
int finish_file(struct fsink *s) BG_WUR;

#endif /* BG_ENGINE_INT_H */
