/*
 * engine_sink.c - the partial file of the file being fetched: the sink a
 * source feeds (sink_start, sink_data), chunk by chunk committed to the
 * partial file and the store's blob in one step, restarted from byte 0 or
 * made to hold exactly the committed bytes before a resume.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "engine_int.h"

bool
run_stopping(const struct run *r)
{
	return (r->ro != NULL && r->ro->stop != NULL && *r->ro->stop) || run_out_of_time(r);
}

void
report_progress(struct fsink *s)
{
	const struct job_run_options *ro = s->r->ro;
	struct job_progress p;
	int64_t t = s->rec.bytes_total;

	if (ro == NULL || ro->progress == NULL)
		return;
	p.bytes_done = s->r->bytes_before + s->committed + s->fill;
	p.bytes_total = t < 0 ? -1 : (int64_t)s->r->bytes_before + t;
	p.file_index = s->index;
	p.files_total = s->r->nfiles;
	ro->progress(ro->progress_arg, &p);
}

static int
pwrite_all(int fd, const void *p, size_t len, uint64_t off)
{
	const char *c = p;

	while (len > 0) {
		ssize_t n = pwrite(fd, c, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return bg_err_from_errno(errno);
		}
		c += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

uint64_t
inflight_new_gen(void)
{
	for (;;) {
		unsigned char b[8];
		uint64_t v = 0;

		if (RAND_bytes(b, sizeof(b)) != 1 && getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
			/* Only readers' incarnation checks depend on it: differing
			 * from the last one is what matters, not secrecy. */
			v = (uint64_t)bg_now_ns() ^ (uint64_t)getpid() << 40;
		} else {
			for (size_t i = 0; i < sizeof(b); i++)
				v = v << 8 | b[i];
		}
		v &= INT64_MAX;
		if (v != 0)
			return v;
	}
}

void
file_fetch_policy(const struct fsink *s, struct store_fetch_policy *out)
{
	*out = s->r->fetch;
	out->crl = out->crl && s->rec.crl_checked;
}

void
inflight_of(const struct fsink *s, uint64_t committed, struct store_inflight *out)
{
	memset(out, 0, sizeof(*out));
	out->url = s->pub_url;
	snprintf(out->job, sizeof(out->job), "%s", s->r->id);
	out->file = s->index;
	out->blob = s->blob;
	out->gen = s->gen;
	out->committed = committed;
	out->total = s->rec.bytes_total;
	out->state = s->pub_want ? STORE_INFLIGHT_WANT
	             : s->fleet_role == FLEET_ROLE_FOLLOWER ? STORE_INFLIGHT_PEER
	                                                   : STORE_INFLIGHT_ORIGIN;
	if (out->state == STORE_INFLIGHT_PEER)
		memcpy(out->source, s->fleet_source, sizeof(out->source));
	out->etag = s->rec.etag;
	out->last_modified = s->rec.last_modified;
	out->date = s->rec.date;
	out->final_url = s->pub_final;
	file_fetch_policy(s, &out->fetch);
	out->started = s->pub_started;
	out->updated = bg_now();
}

void
inflight_release(struct fsink *s)
{
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* drops the flock */
	s->lock_fd = -1;
	s->publish = false;
}

int
commit_file(struct fsink *s, const void *chunk, size_t len, bool drop, bool with_job)
{
	struct job_commit c = {
		.id = s->r->id,
		.index = s->index,
		.file = &s->rec,
		.file_json = &s->rec_json,
		.blob_in = s->blob,
		.drop_blob = drop,
		.chunk = s->committed / STORE_CHUNK_BYTES,
		.data = s->cache ? chunk : NULL,
		.len = len,
		.generation = s->r->generation,
		.has_event = with_job,
		.event = JOB_EV_RECEIVE,
		.progress = chunk != NULL,
		.memo = &s->r->memo,
		.clock = &s->r->dl,
	};
	struct store_inflight f;
	unsigned char prev[STORE_PIECE_LEN];
	int err;

	if (c.data != NULL && s->piece_known)
		c.piece = s->piece_now;
	/* A streamed chunk's digest goes with the next commit; dropped bytes
	 * take theirs along. */
	if (s->piece_pending && !drop) {
		if ((err = hasher_piece(s->hash, s->piece_seq, prev)) != 0)
			return err;
		c.prev_piece = prev;
		c.prev_chunk = s->piece_chunk;
	}
	/* The record counts the bytes the store holds after this commit
	 * (commit_fn counts a chunk's itself). */
	if (s->publish) {
		inflight_of(s, s->committed + s->preloaded, &f);
		c.inflight = &f;
	} else if (!s->unpublished) {
		/* A file that does not publish (now) leaves no record of its
		 * own behind, e.g. one an earlier run wrote. */
		c.inflight_del = true;
		c.inflight_url = s->pub_url != NULL ? s->pub_url : s->rec.remote_url;
	}
	if ((err = job_commit(s->r->st, &c)) == 0) {
		s->blob = c.blob_out;
		s->piece_pending = false;
		if (c.inflight_del)
			s->unpublished = true;
	}
	return err;
}

int
write_pending(struct fsink *s)
{
	int err;

	if ((err = pwrite_all(s->fd, s->buf, s->fill, s->committed)) != 0)
		return err;
	s->pending = s->buf;
	/* A full chunk of a cached file gets its digest computed beside the
	 * whole-file one (a short chunk has none until written whole). */
	if ((err = hasher_submit(s->hash, s->fill, s->cache && s->fill == STORE_CHUNK_BYTES)) != 0)
		return err;
	s->buf = hasher_buffer(s->hash);
	if (s->from_peer)
		s->from_peers += s->fill - s->preloaded;
	else
		s->from_origin += s->fill - s->preloaded;
	s->preloaded = 0;
	s->rec.bytes_committed = s->committed + s->fill;
	s->rec.bytes_from_origin = s->from_origin;
	s->rec.bytes_from_peers = s->from_peers;
	return 0;
}

void
pending_committed(struct fsink *s)
{
	s->committed += s->fill;
	s->fill = 0;
	s->progressed = true;
	report_progress(s);
}

/* Commits the buffered bytes.  defer: a chunk streamed in, whose digest
 * the next commit stores (the hasher computes it meanwhile); otherwise
 * (a break, the end of a source) every digest known is stored now. */
static int
flush(struct fsink *s, bool defer)
{
	bool piece;
	int err;

	/* Nothing new (a resumed short chunk is in the store already): no
	 * commit, and no progress that would reset the retries; a digest
	 * still pending is stored. */
	if (s->fill == s->preloaded)
		return defer || !s->piece_pending ? 0 : commit_file(s, NULL, 0, false, false);
	if ((err = write_pending(s)) != 0)
		return err;
	/* Only a full chunk gets its digest: a short one committed at a
	 * break is written again, whole, by the resume (prepare_partial). */
	piece = s->cache && s->fill == STORE_CHUNK_BYTES;
	if (piece && !defer) {
		if ((err = hasher_piece(s->hash, hasher_submitted(s->hash) - 1, s->piece_now)) != 0)
			return err;
		s->piece_known = true;
	}
	err = commit_file(s, s->pending, s->fill, false, s->state_pending);
	s->piece_known = false;
	if (err != 0)
		return err;
	if (piece && defer) {
		s->piece_pending = true;
		s->piece_seq = hasher_submitted(s->hash) - 1;
		s->piece_chunk = s->committed / STORE_CHUNK_BYTES;
	}
	s->state_pending = false;
	pending_committed(s);
	return 0;
}

int
flush_chunk(struct fsink *s)
{
	return flush(s, false);
}

static int
reset_digest(struct fsink *s)
{
	return hasher_reset(s->hash);
}

int
restart_file(struct fsink *s)
{
	int err;

	if (ftruncate(s->fd, 0) != 0)
		return bg_err_from_errno(errno);
	s->piece_pending = false;
	s->committed = 0;
	s->fill = 0;
	s->preloaded = 0;
	s->from_origin = s->from_peers = 0;
	if ((err = reset_digest(s)) != 0)
		return err;
	s->from_store = s->skip_keys = false;
	s->rec.bytes_committed = s->rec.bytes_from_origin = s->rec.bytes_from_peers = 0;
	s->rec.bytes_checked = 0;
	s->rec.bytes_from_cache = 0;
	/* Readers of the old bytes must not take the new ones for theirs. */
	if (s->publish) {
		s->gen = inflight_new_gen();
		s->pub_started = bg_now();
	} else {
		s->gen = 0;
	}
	return commit_file(s, NULL, 0, true, false);
}

bool
strong_etag(const char *etag)
{
	return etag != NULL && etag[0] == '"' && strlen(etag) >= 2 &&
	       strlen(etag) <= STORE_VALIDATOR_MAX && etag[strlen(etag) - 1] == '"';
}

const char *
resume_validator(const struct file_rec *rec)
{
	if (rec->etag != NULL)
		return strong_etag(rec->etag) ? rec->etag : NULL;
	return http_date_strong(rec->last_modified, rec->date) ? rec->last_modified : NULL;
}

const char *
usable_validator(const char *v)
{
	if (v == NULL || v[0] == '\0' || strlen(v) > STORE_VALIDATOR_MAX)
		return NULL;
	for (const char *p = v; *p != '\0'; p++)
		if (*p < 0x20 || *p > 0x7E)
			return NULL;
	return v;
}

static int
limit_txn(struct bg_txn *txn, void *arg)
{
	return txn_config_get(txn, arg);
}

/* The store's size limit in bytes, as configured now. */
static int
store_limit_now(struct bg_store *st, uint64_t *limit)
{
	struct store_config cfg;
	int err = store_view(st, limit_txn, &cfg);

	return err != 0 ? err : store_limit_bytes(st, &cfg, limit);
}

/* Whether the file's download is published for peers: bytes from the
 * origin (or, for the fleet's follower, from the node it follows) that the
 * store keeps and may offer (not private, the job a peer-caching server),
 * in a home that can hold the lock. */
bool
may_publish(const struct fsink *s)
{
	const struct run *r = s->r;

	return s->cache && !s->too_big && (!s->from_peer || s->fleet_role == FLEET_ROLE_FOLLOWER) &&
	       s->pub_url != NULL && r->ro != NULL &&
	       r->ro->home != NULL && !job_is_private(&r->job) &&
	       peer_mode(&r->job, PEER_CACHING_SERVER);
}

static int
gen_fn(struct bg_txn *txn, void *arg)
{
	struct fsink *s = arg;
	struct store_inflight f;
	int err;

	memset(&f, 0, sizeof(f));
	err = txn_inflight_get(txn, s->pub_url, &f);
	if (err == 0 && strcmp(f.job, s->r->id) == 0 && f.file == s->index && f.blob == s->blob &&
	    (f.state == STORE_INFLIGHT_ORIGIN || f.state == STORE_INFLIGHT_PEER)) {
		s->gen = f.gen;
		s->pub_started = f.started;
	}
	store_inflight_clear(&f);
	return err == BG_ENOENT || err == BG_ECORRUPT ? 0 : err;
}

/* Starts publishing the download: takes the lock that tells peers a
 * writer is alive, and the incarnation.  A resume keeping its prefix keeps
 * the incarnation the store's record has (its bytes are the same ones:
 * the resume's If-Range vouched for them); anything else is a new one.
 * Without the lock (no room for the file, or another download of the
 * same URL on this node holds it) the file is simply not published. */
static int
start_publishing(struct fsink *s)
{
	unsigned char urlhash[BG_SHA256_LEN];
	char path[PATH_MAX];
	int err;

	bg_sha256(s->pub_url, strlen(s->pub_url), urlhash);
	if (snprintf(path, sizeof(path), "%s/%s", s->r->ro->home, STORE_INFLIGHT_LOCK_DIR) >=
	        (int)sizeof(path) ||
	    (mkdir(path, 0700) != 0 && errno != EEXIST) ||
	    store_inflight_lock_path(s->r->ro->home, urlhash, path, sizeof(path)) != 0)
		return 0;
	if ((s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
		return 0;
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		inflight_release(s);
		return 0;
	}
	s->publish = true;
	s->unpublished = false; /* a record is ours again: stopping must delete it */
	if (s->gen == 0 && s->committed + s->fill > 0 && s->blob != 0 &&
	    (err = store_view(s->r->st, gen_fn, s)) != 0) {
		inflight_release(s);
		return err;
	}
	if (s->gen == 0) {
		s->gen = inflight_new_gen();
		s->pub_started = bg_now();
	}
	return 0;
}

int
fleet_publish(struct fsink *s, enum store_inflight_state st)
{
	int err;

	if (s->pub_url == NULL && s->rec.remote_url != NULL &&
	    (s->pub_url = strdup(s->rec.remote_url)) == NULL)
		return BG_ENOMEM;
	if (!may_publish(s))
		return 0;
	if (!s->publish && (err = start_publishing(s)) != 0)
		return err;
	if (!s->publish)
		return 0; /* another download of the URL on this node holds the lock */
	s->pub_want = st == STORE_INFLIGHT_WANT;
	return commit_file(s, NULL, 0, false, false);
}

int
sink_start(void *arg, const struct origin_response *resp)
{
	struct fsink *s = arg;
	struct run *r = s->r;
	uint32_t policy = r->job.security_flags & BG_HTTP_REDIRECT_POLICY_MASK;
	int err;

	/* The URL asked, before a redirect renames the file: the one other
	 * nodes look the download up by. */
	if (s->pub_url == NULL && s->rec.remote_url != NULL &&
	    (s->pub_url = strdup(s->rec.remote_url)) == NULL)
		return BG_ENOMEM;
	if (resp->start != s->committed + s->fill) {
		if (resp->start != 0)
			return BG_EPROTO; /* the origin client never asks for that */
		if ((err = restart_file(s)) != 0)
			return err;
	}
	/* The Date is kept to judge the Last-Modified's strength; none is kept
	 * when the response had an entity tag that is not kept, since a date
	 * must then never stand in for it. */
	if ((err = rec_set_str(&s->rec.etag, usable_validator(resp->etag))) != 0 ||
	    (err = rec_set_str(&s->rec.last_modified, usable_validator(resp->last_modified))) != 0 ||
	    (err = rec_set_str(&s->rec.date, resp->etag != NULL && usable_validator(resp->etag) == NULL
	                                         ? NULL
	                                         : usable_validator(resp->date))) != 0)
		return err;
	s->rec.bytes_total = resp->total;
	/* The digest the origin announced for the whole file (RFC 9530) is
	 * checked when the file is finished.  A 206 without one keeps the
	 * one of the response it continues (the validator vouched for that). */
	if (resp->start == 0 || resp->has_digest) {
		char dhex[BG_SHA256_HEX_LEN + 1];

		if (resp->has_digest)
			bg_sha256_hex(resp->digest, dhex);
		if ((err = rec_set_str(&s->rec.origin_sha256, resp->has_digest ? dhex : NULL)) != 0)
			return err;
	}
	/* ALLOW_REPORT: the remote name becomes the URL that answered, now,
	 * so that a resume after a crash goes straight there, as BITS does. */
	if (policy == BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT && resp->final_url != NULL &&
	    (err = rec_set_str(&s->rec.remote_url, resp->final_url)) != 0)
		return err;
	if ((err = rec_set_str(&s->pub_final, policy == BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT
	                                          ? s->rec.remote_url
	                                          : NULL)) != 0)
		return err;
	s->rec.crl_checked = (r->job.security_flags & BG_SSL_ENABLE_CRL_CHECK) != 0;
	/* A file larger than the store's limit is not written to it at all:
	 * it would only be dropped at the end. */
	if (s->cache && resp->total >= 0 && resp->start == 0) {
		uint64_t limit;

		if ((err = store_limit_now(r->st, &limit)) != 0)
			return err;
		/* Remembered in the file record: a resume must not start
		 * storing a file whose first part never was. */
		if ((uint64_t)resp->total > limit) {
			s->cache = false;
			s->too_big = true;
			s->rec.not_stored = true;
		}
	}
	/* Committed with the first chunk or, for a small file, with the file
	 * itself: one transaction per small file.  Until then a crash loses
	 * nothing that a resume could use. */
	s->state_pending = true;
	s->pub_want = false; /* bytes arrive: an intent no more */
	if (!s->publish && may_publish(s) && (err = start_publishing(s)) != 0)
		return err;
	if (s->publish && !may_publish(s))
		inflight_release(s); /* too big after all: the next commit deletes the record */
	/* A download that takes more than one commit is published as it
	 * starts, so that other nodes see early who fetches it. */
	if (s->publish && (resp->total < 0 || (uint64_t)resp->total > STORE_CHUNK_BYTES)) {
		if ((err = commit_file(s, NULL, 0, false, true)) != 0)
			return err;
		s->state_pending = false;
	}
	report_progress(s);
	return 0;
}

static int
changed_fn(struct bg_txn *txn, void *arg)
{
	struct run *r = arg;

	return txn_job_check_generation(txn, r->id, r->generation, &r->memo);
}

/* Takes n bytes just received from the job's own bucket and, unless the
 * job is foreground (BITS exempts foreground jobs from its bandwidth
 * policy), from the daemon's; then waits until neither is owed anything.
 * The transfer's thread sleeps meanwhile, in slices of RUN_RATE_SLICE_MS
 * at most with the run's stop looked at between them: libcurl reads no
 * more from the socket, and TCP slows the sender down.  A long wait (a
 * low limit) also looks at the job record every RUN_RATE_RECHECK_MS: a
 * user's change (a new limit, another priority, suspend) ends it with
 * BG_EAGAIN, and the run reloads the job as after a commit. */
static int
throttle(struct run *r, size_t n)
{
	struct bg_rate *shared = r->ro != NULL && r->job.priority != JOB_PRIO_FOREGROUND
	                                 ? r->ro->shared_rate
	                                 : NULL;
	int64_t now = bg_mono_ms(), recheck = now + RUN_RATE_RECHECK_MS;

	bg_rate_charge(&r->rate, n, now);
	if (shared != NULL)
		bg_rate_charge(shared, n, now);
	for (;;) {
		int64_t due = bg_rate_due_ms(&r->rate, 0, now);
		struct timespec ts;

		if (shared != NULL) {
			int64_t d2 = bg_rate_due_ms(shared, 0, now);

			if (d2 > due)
				due = d2;
		}
		if (due <= 0)
			return 0;
		if (run_stopping(r))
			return BG_ECANCELED;
		if (now >= recheck) {
			if (store_view(r->st, changed_fn, r) == BG_EAGAIN)
				return BG_EAGAIN;
			recheck = now + RUN_RATE_RECHECK_MS;
		}
		if (due > RUN_RATE_SLICE_MS)
			due = RUN_RATE_SLICE_MS;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)due * 1000000L;
		nanosleep(&ts, NULL);
		now = bg_mono_ms();
	}
}

int
sink_data(void *arg, const void *p, size_t len)
{
	struct fsink *s = arg;
	const unsigned char *c = p;
	int64_t total = s->rec.bytes_total;
	int err;

	if (run_stopping(s->r))
		return BG_ECANCELED;
	if ((err = throttle(s->r, len)) != 0)
		return err;
	if (total >= 0 && s->committed + s->fill + len > (uint64_t)total)
		return BG_EPROTO; /* more bytes than announced */
	while (len > 0) {
		size_t n = STORE_CHUNK_BYTES - s->fill;

		if (n > len)
			n = len;
		memcpy(s->buf + s->fill, c, n);
		s->fill += n;
		c += n;
		len -= n;
		if (s->fill == STORE_CHUNK_BYTES && (err = flush(s, true)) != 0)
			return err;
	}
	return 0;
}

struct chunk_read {
	uint64_t blob, index;
	unsigned char *dst;
	size_t got;
};

static int
read_chunk_fn(struct bg_txn *txn, void *arg)
{
	struct chunk_read *c = arg;
	const void *data;
	size_t len;
	int err;

	if ((err = txn_blob_get(txn, c->blob, c->index, &data, &len)) != 0)
		return err;
	if (len > STORE_CHUNK_BYTES)
		return BG_ECORRUPT;
	memcpy(c->dst, data, len);
	c->got = len;
	return 0;
}

/* Copies chunk index of blob into dst (STORE_CHUNK_BYTES long). */
static int
read_chunk(struct bg_store *st, uint64_t blob, uint64_t index, unsigned char *dst, size_t *got)
{
	struct chunk_read c = {blob, index, dst, 0};
	int err;

	if (blob == 0)
		return BG_ENOENT;
	if ((err = store_view(st, read_chunk_fn, &c)) == 0)
		*got = c.got;
	return err;
}

struct piece_probe {
	uint64_t blob, index;
	bool missing;
};

static int
piece_probe_fn(struct bg_txn *txn, void *arg)
{
	struct piece_probe *p = arg;
	unsigned char d[STORE_PIECE_LEN];
	int err = txn_piece_get(txn, p->blob, p->index, d);

	p->missing = err == BG_ENOENT;
	return err == BG_ENOENT ? 0 : err;
}

/* The last full chunk kept may lack its digest (it comes with the commit
 * after the chunk's, which a crash or a stop can prevent): computed from
 * the stored chunk and stored. */
static int
last_piece_after_break(struct fsink *s, uint64_t aligned, unsigned char *block)
{
	struct piece_probe p = {s->blob, aligned / STORE_CHUNK_BYTES - 1, false};
	unsigned char d[STORE_PIECE_LEN];
	size_t got = 0;
	int err;

	if ((err = store_view(s->r->st, piece_probe_fn, &p)) != 0 || !p.missing)
		return err;
	if ((err = read_chunk(s->r->st, s->blob, p.index, block, &got)) != 0 ||
	    got != STORE_CHUNK_BYTES)
		return err; /* left to store_verify */
	bg_sha256(block, got, d);
	struct job_commit c = {.id = s->r->id, .index = s->index, .file = &s->rec,
	                       .file_json = &s->rec_json, .blob_in = s->blob,
	                       .prev_piece = d, .prev_chunk = p.index,
	                       .generation = s->r->generation, .memo = &s->r->memo};
	if ((err = job_commit(s->r->st, &c)) == 0)
		s->blob = c.blob_out;
	return err;
}

int
prepare_partial(struct fsink *s)
{
	struct stat sb;
	uint64_t committed = s->rec.bytes_committed, aligned;
	unsigned char *block = NULL;
	int err = 0;

	s->fill = 0;
	s->preloaded = 0;
	s->piece_pending = false; /* a chunk may go: its digest is left to verify */

	if (fstat(s->fd, &sb) != 0)
		return bg_err_from_errno(errno);
	if (resume_validator(&s->rec) == NULL)
		committed = 0; /* nothing to guard a Range with: start over */
	/* BITS: with CRL checking turned on after part of an https file came
	 * in unchecked, that file starts again from byte 0. */
	if ((s->r->job.security_flags & BG_SSL_ENABLE_CRL_CHECK) &&
	    !s->rec.crl_checked && s->rec.remote_url != NULL &&
	    strncasecmp(s->rec.remote_url, "https:", 6) == 0)
		committed = 0;
	/* Bytes from a peer are kept through a break (a crash: the digest the
	 * peer announced is gone with the process) only as far as they were
	 * found in a signed piece list; the rest (one peer's whole-file
	 * transfer, whose digest is checked only at its end) starts again.
	 * Within a run (has_want) the final digest still vouches for them. */
	if (!s->has_want && s->rec.bytes_from_peers > s->rec.bytes_checked &&
	    committed > s->rec.bytes_checked)
		committed = s->rec.bytes_checked - s->rec.bytes_checked % STORE_CHUNK_BYTES;
	if ((uint64_t)sb.st_size < committed) {
		if (!s->cache) {
			committed = (uint64_t)sb.st_size - (uint64_t)sb.st_size % STORE_CHUNK_BYTES;
		} else {
			uint64_t first = (uint64_t)sb.st_size / STORE_CHUNK_BYTES;

			for (uint64_t off = first * STORE_CHUNK_BYTES; off < committed;
			     off += STORE_CHUNK_BYTES) {
				size_t got = 0;

				if ((block = block ? block : malloc(STORE_CHUNK_BYTES)) == NULL) {
					err = BG_ENOMEM;
					goto out;
				}
				err = read_chunk(s->r->st, s->blob, off / STORE_CHUNK_BYTES, block, &got);
				if (err != 0 || got == 0) {
					committed = off; /* keep what both still have */
					err = 0;
					break;
				}
				if ((err = pwrite_all(s->fd, block, got, off)) != 0)
					goto out;
			}
		}
	}
	if (ftruncate(s->fd, (off_t)committed) != 0) {
		err = bg_err_from_errno(errno);
		goto out;
	}
	if ((err = reset_digest(s)) != 0)
		goto out;
	/* Chunk i of the blob holds bytes [i * STORE_CHUNK_BYTES, ...) (cache.h),
	 * but bytes kept through a break end in a short chunk.  Those go back
	 * into the buffer, so that the next commit writes that chunk again,
	 * whole, rather than a chunk that starts in its middle. */
	aligned = s->cache ? committed - committed % STORE_CHUNK_BYTES : committed;
	if (aligned < committed) {
		size_t n = (size_t)(committed - aligned);

		if (pread(s->fd, s->buf, n, (off_t)aligned) != (ssize_t)n) {
			err = BG_EIO;
			goto out;
		}
		s->fill = s->preloaded = n;
	}
	if (aligned > 0) {
		if ((block = block ? block : malloc(STORE_CHUNK_BYTES)) == NULL) {
			err = BG_ENOMEM;
			goto out;
		}
		for (uint64_t off = 0; off < aligned;) {
			size_t want = aligned - off < STORE_CHUNK_BYTES ? (size_t)(aligned - off)
			                                                 : STORE_CHUNK_BYTES;
			ssize_t n = pread(s->fd, block, want, (off_t)off);

			if (n <= 0) {
				err = n < 0 ? bg_err_from_errno(errno) : BG_EIO;
				goto out;
			}
			if ((err = hasher_update(s->hash, block, (size_t)n)) != 0)
				goto out;
			off += (uint64_t)n;
		}
	}
	s->from_peers = s->rec.bytes_from_peers;
	if (s->from_peers > committed)
		s->from_peers = committed;
	s->from_origin = committed - s->from_peers;
	if (committed != s->rec.bytes_committed) {
		s->rec.bytes_committed = committed;
		s->rec.bytes_from_origin = s->from_origin;
		s->rec.bytes_from_peers = s->from_peers;
		/* Chunks past the good prefix must go, or a later append would
		 * leave a stale chunk behind it. */
		struct job_commit c = {.id = s->r->id, .index = s->index, .file = &s->rec,
		                       .file_json = &s->rec_json,
		                       .blob_in = s->blob, .drop_blob = committed == 0,
		                       .generation = s->r->generation, .memo = &s->r->memo,
		                       .clock = &s->r->dl};

		/* Dropped bytes take a record of them with them (one a crash
		 * left); a kept prefix keeps it: the chunks past it stay in the
		 * store until they are written again with the same bytes. */
		if (committed == 0) {
			c.inflight_del = true;
			c.inflight_url = s->pub_url != NULL ? s->pub_url : s->rec.remote_url;
			s->gen = 0;
		}
		if ((err = job_commit(s->r->st, &c)) != 0)
			goto out;
		s->blob = c.blob_out;
	}
	if (s->cache && s->blob != 0 && aligned >= STORE_CHUNK_BYTES) {
		if ((block = block ? block : malloc(STORE_CHUNK_BYTES)) == NULL) {
			err = BG_ENOMEM;
			goto out;
		}
		if ((err = last_piece_after_break(s, aligned, block)) != 0)
			goto out;
	}
	s->committed = aligned;
out:
	free(block);
	return err;
}

int
temp_path_for(const char *id, const char *local, char *out, size_t len)
{
	const char *slash = strrchr(local, '/');
	const char *base = slash != NULL ? slash + 1 : local;
	int dirlen = slash != NULL ? (int)(slash - local) : 1;
	const char *dir = slash != NULL ? local : ".";
	int n;

	if (slash == local) {
		dir = "/";
		dirlen = 0;
	}
	n = snprintf(out, len, "%.*s/.%s.bgcopy-%.8s.part", dirlen, dir, base, id);
	return n < 0 || (size_t)n >= len ? BG_ELIMIT : 0;
}
