/*
 * engine.c - runs a job: each unfinished file is fetched from the origin
 * into its partial file and the store, committed chunk by chunk, verified,
 * and at the end keyed in the content store.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "agent.h"
#include "agent_int.h"
#include "record.h"


struct run {
	struct bg_store *st;
	struct origin *o;
	const char *id;
	const struct job_run_options *ro;
	struct job_rec job;
	int64_t generation; /* of the job record as loaded: commits check it */
	struct job_memo memo; /* spares decoding the job record at each commit */
	const char *peers[JOB_PEERS_MAX]; /* HOST:PORT of the peers to ask (borrowed) */
	size_t npeers;
	struct peer_config pc;
	struct hasher *hash;
	uint64_t file_bytes; /* bytes of the file run_file last finished */
	uint32_t nfiles;
	uint64_t bytes_before; /* job bytes in files before the current one */
	struct job_outcome out; /* of the current attempt: the error that stops the job, if any */
};

/* Bytes copied from the store per call when it serves the file itself
 * (between two looks at the stop flag). */
#define STORE_READ_BYTES (64 * STORE_CHUNK_BYTES)

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
};

static bool
stopping(const struct run *r)
{
	return r->ro != NULL && r->ro->stop != NULL && *r->ro->stop;
}

static void
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

/* Commits the file record (and the job record when with_job), plus one
 * chunk when chunk != NULL, and a restart of the blob when drop. */
static int
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
	};
	int err;

	if ((err = job_commit(s->r->st, &c)) == 0)
		s->blob = c.blob_out;
	return err;
}

/* Writes the buffered bytes to the partial file, hashes them and counts
 * them in the file record; the caller commits them. */
static int
write_pending(struct fsink *s)
{
	int err;

	if ((err = pwrite_all(s->fd, s->buf, s->fill, s->committed)) != 0)
		return err;
	s->pending = s->buf;
	if ((err = hasher_submit(s->hash, s->fill)) != 0)
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

static void
pending_committed(struct fsink *s)
{
	s->committed += s->fill;
	s->fill = 0;
	s->progressed = true;
	report_progress(s);
}

/* Commits the buffered bytes: partial file, blob chunk and file record in
 * one step (the job's state too, the first time after a response began). */
static int
flush_chunk(struct fsink *s)
{
	int err;

	/* Nothing new (a resumed short chunk is in the store already): no
	 * commit, and no progress that would reset the retries. */
	if (s->fill == s->preloaded)
		return 0;
	if ((err = write_pending(s)) != 0)
		return err;
	if ((err = commit_file(s, s->pending, s->fill, false, s->state_pending)) != 0)
		return err;
	s->state_pending = false;
	pending_committed(s);
	return 0;
}

static int
reset_digest(struct fsink *s)
{
	return hasher_reset(s->hash);
}

/* Throws away every byte of the file kept so far (partial file and blob). */
static int
restart_file(struct fsink *s)
{
	int err;

	if (ftruncate(s->fd, 0) != 0)
		return bg_err_from_errno(errno);
	s->committed = 0;
	s->fill = 0;
	s->preloaded = 0;
	s->from_origin = s->from_peers = 0;
	if ((err = reset_digest(s)) != 0)
		return err;
	s->from_store = s->skip_keys = false;
	s->rec.bytes_committed = s->rec.bytes_from_origin = s->rec.bytes_from_peers = 0;
	s->rec.bytes_from_cache = 0;
	return commit_file(s, NULL, 0, true, false);
}

static bool
strong_etag(const char *etag)
{
	return etag != NULL && etag[0] == '"' && strlen(etag) >= 2 &&
	       strlen(etag) <= STORE_VALIDATOR_MAX && etag[strlen(etag) - 1] == '"';
}

/* The validator a resume may put in If-Range, or NULL when the file must
 * start over from byte 0 (RFC 9110 section 13.1.5): a strong entity tag;
 * else, only when the response carried no entity tag at all (a weak one
 * included), its Last-Modified, and only if that date is strong (see
 * http_date_strong).  nginx and lighttpd answer a date If-Range by string
 * equality: with a weaker date a file rewritten within the same second
 * would come back as a 206 of the new version, spliced onto the old. */
static const char *
resume_validator(const struct file_rec *rec)
{
	if (rec->etag != NULL)
		return strong_etag(rec->etag) ? rec->etag : NULL;
	return http_date_strong(rec->last_modified, rec->date) ? rec->last_modified : NULL;
}

/* Validators are kept only when they are what RFC 9110 allows: visible
 * ASCII and spaces, of a sane length.  Anything else is not used to resume
 * (the file then restarts from byte 0 after an interruption). */
static const char *
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

static int
sink_start(void *arg, const struct origin_response *resp)
{
	struct fsink *s = arg;
	struct run *r = s->r;
	uint32_t policy = r->job.security_flags & BG_HTTP_REDIRECT_POLICY_MASK;
	int err;

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
	report_progress(s);
	return 0;
}

static int
sink_data(void *arg, const void *p, size_t len)
{
	struct fsink *s = arg;
	const unsigned char *c = p;
	int64_t total = s->rec.bytes_total;
	int err;

	if (stopping(s->r))
		return BG_ECANCELED;
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
		if (s->fill == STORE_CHUNK_BYTES && (err = flush_chunk(s)) != 0)
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

/* Makes the partial file hold exactly the committed bytes, repairing it
 * from the store when it lost some (power loss), and re-hashes them.  Also
 * after a source broke off within a run. */
static int
prepare_partial(struct fsink *s)
{
	struct stat sb;
	uint64_t committed = s->rec.bytes_committed, aligned;
	unsigned char *block = NULL;
	int err = 0;

	s->fill = 0;
	s->preloaded = 0;

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
		                       .generation = s->r->generation, .memo = &s->r->memo};
		if ((err = job_commit(s->r->st, &c)) != 0)
			goto out;
		s->blob = c.blob_out;
	}
	s->committed = aligned;
out:
	free(block);
	return err;
}

static int
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

struct final_args {
	struct fsink *s;
	unsigned char sha[BG_SHA256_LEN];
	uint64_t size;
	const char *keys[2];
	unsigned key_flags;
	struct file_rec rec; /* the file record as committed (a copy per attempt) */
	struct store_enforce_result evicted;
};

/* The counters of the peer client: a file the peers were asked for either
 * came (in part) from one, or not. */
static int
count_peer_lookup(struct bg_txn *txn, const struct file_rec *rec)
{
	struct store_stats d;

	if (rec->nlookups == 0)
		return 0;
	memset(&d, 0, sizeof(d));
	if (rec->bytes_from_peers > 0)
		d.peer_hits = 1;
	else
		d.peer_misses = 1;
	return txn_stats_add(txn, &d, 1);
}

/* The store lookup's outcome, counted with the file's completion. */
static int
count_store_lookup(struct bg_txn *txn, const struct fsink *s)
{
	struct store_stats d;

	memset(&d, 0, sizeof(d));
	if (s->look == LOOK_HIT)
		d.store_hits = 1;
	else if (s->look == LOOK_REVALIDATED)
		d.store_revalidated = 1;
	else if (s->look == LOOK_MISS)
		d.store_misses = 1;
	else
		return 0;
	return txn_stats_add(txn, &d, 1);
}

static int
final_fn(struct bg_txn *txn, void *arg)
{
	struct final_args *a = arg;
	struct fsink *s = a->s;
	int64_t now = bg_now();
	/* Taken inside the write transaction: local uses are dated in the
	 * order they commit. */
	int64_t now_ns = bg_now_ns();
	struct store_config cfg;
	uint64_t limit;
	int err;

	/* The record is rebuilt from s->rec each time (the transaction may
	 * run twice). */
	file_rec_clear(&a->rec);
	if ((err = file_rec_copy(&a->rec, &s->rec)) != 0)
		return err;
	memset(&a->evicted, 0, sizeof(a->evicted));
	if ((err = txn_job_check_generation(txn, s->r->id, s->r->generation, &s->r->memo)) != 0)
		return err;
	if ((err = count_peer_lookup(txn, &a->rec)) != 0 ||
	    (err = count_store_lookup(txn, s)) != 0)
		return err;
	if (s->cache || s->too_big) {
		if ((err = txn_config_get(txn, &cfg)) != 0 ||
		    (err = store_limit_bytes(s->r->st, &cfg, &limit)) != 0)
			return err;
		if (s->too_big || a->size > limit) {
			/* Delivered, not kept: it would push out everything else. */
			struct store_stats d;
			char note[96];

			memset(&d, 0, sizeof(d));
			d.not_kept = 1;
			d.not_kept_bytes = a->size;
			snprintf(note, sizeof(note), "not kept: larger than the cache limit (%" PRIu64
			         " bytes)", limit);
			if ((s->blob != 0 && (err = txn_blob_truncate(txn, s->blob, 0)) != 0) ||
			    (err = txn_stats_add(txn, &d, 1)) != 0 ||
			    (err = rec_set_str(&a->rec.cache_key, NULL)) != 0 ||
			    (err = rec_set_str(&a->rec.cache_note, note)) != 0)
				return err;
			a->rec.has_cached = true;
			a->rec.cached = false;
			goto file;
		}
	}
	if (s->cache) {
		struct store_content c;

		err = txn_content_get(txn, a->sha, &c);
		if (err == 0) {
			/* The same bytes are stored already: keep one copy. */
			if (s->blob != 0 && c.blob != s->blob &&
			    (err = txn_blob_truncate(txn, s->blob, 0)) != 0)
				return err;
			if ((err = txn_content_touch(txn, a->sha, now_ns)) != 0)
				return err;
		} else if (err == BG_ENOENT) {
			/* A file without a chunk yet (small or empty) gets a blob
			 * here, so that content always names one. */
			c.blob = s->blob;
			if (c.blob == 0 && (err = txn_blob_new(txn, &c.blob)) != 0)
				return err;
			if (s->fill > 0 &&
			    (err = txn_blob_put(txn, c.blob, s->committed / STORE_CHUNK_BYTES, s->pending,
			                        s->fill)) != 0)
				return err;
			c.size = a->size;
			c.created = now;
			c.last_used_ns = now_ns;
			if ((err = txn_content_put(txn, a->sha, &c)) != 0)
				return err;
		} else {
			return err;
		}
		for (size_t i = 0; i < 2 && a->keys[i] != NULL; i++) {
			struct store_key k = {
				.url = (char *)a->keys[i],
				.size = a->size,
				.etag = s->rec.etag,
				.last_modified = s->rec.last_modified,
				.date = s->rec.date,
				.stored = now,
				.validated = now,
				.flags = a->key_flags,
			};
			memcpy(k.sha256, a->sha, BG_SHA256_LEN);
			if ((err = txn_key_put(txn, &k)) != 0)
				return err;
		}
		/* Kept while the job has not ended; then the oldest content
		 * makes room for it, in this same transaction, so that the
		 * store never stays above its limit. */
		a->rec.has_cached = true;
		a->rec.cached = true;
		if ((err = txn_pin(txn, s->r->id, a->sha)) != 0 ||
		    (err = txn_enforce_limits(txn, limit, now, cfg.max_age_days, job_record_unfinished,
		                              &a->evicted)) != 0)
			return err;
	} else {
		a->rec.has_cached = true;
		a->rec.cached = false;
	}
file:
	a->rec.blob = 0;
	{
		json_t *o = NULL;

		if ((err = file_rec_encode(&a->rec, &o)) == 0)
			err = txn_file_put(txn, s->r->id, s->index, o);
		json_decref(o);
	}
	return err;
}

static bool
job_is_private(const struct job_rec *job)
{
	if (job->user != NULL)
		return true;
	for (size_t i = 0; i < job->headers.n; i++) {
		const char *line = job->headers.v[i];

		if (strncasecmp(line, "authorization:", 14) == 0 || strncasecmp(line, "cookie:", 7) == 0)
			return true;
	}
	return false;
}

/* Whether the job's peer-caching mode includes side (client or server). */
static bool
peer_mode(const struct job_rec *job, enum peer_caching side)
{
	return job->peer_caching == PEER_CACHING_BOTH || job->peer_caching == side;
}

/* Verifies and records a file whose bytes are all in. */
static int
finish_file(struct fsink *s)
{
	struct run *r = s->r;
	struct final_args a = {.s = s};
	int64_t total = s->rec.bytes_total;
	const char *expect = s->rec.expect_sha256;
	const char *announced = s->rec.origin_sha256;
	const char *remote = s->rec.remote_url;
	const char *original = s->rec.original_url;
	char hex[BG_SHA256_HEX_LEN + 1];
	int err;

	if (total >= 0 && s->committed + s->fill != (uint64_t)total) {
		job_outcome_set(&r->out, HR_ERROR_WINHTTP_CONNECTION_ERROR, false,
		                "%s: got %" PRIu64 " of %" PRId64 " bytes", remote,
		                s->committed + s->fill, total);
		return flush_chunk(s); /* whole bytes are kept for the resume */
	}
	/* The last, partial chunk goes into the same transaction as the file's
	 * completion. */
	if (s->fill > 0 && (err = write_pending(s)) != 0)
		return err;
	if (s->from_store)
		memcpy(a.sha, s->store_sha, BG_SHA256_LEN); /* the store's, checked when stored */
	else if ((err = hasher_final(s->hash, a.sha)) != 0)
		return err;
	bg_sha256_hex(a.sha, hex);
	a.size = s->committed + s->fill;
	if (s->has_want && memcmp(a.sha, s->want, BG_SHA256_LEN) != 0) {
		/* Not the content a peer described: none of it is kept, and the
		 * caller fetches the file again from the origin alone. */
		int e2 = restart_file(s);

		s->has_want = false;
		return e2 != 0 ? e2 : BG_EDIGEST;
	}
	if (expect != NULL && strcasecmp(expect, hex) != 0) {
		job_outcome_set(&r->out, HR_ERROR_CRC, false, "%s: content SHA-256 is %s, expected %s",
		                remote, hex, expect);
		/* Wrong bytes are never kept: the next attempt starts over. */
		return restart_file(s);
	}
	if (announced != NULL && strcasecmp(announced, hex) != 0) {
		/* Not what the origin's Repr-Digest or Content-Digest said: a
		 * damaged transfer, or two versions put together.  None of it is
		 * kept, and the caller asks once more from byte 0. */
		int e2;

		job_outcome_set(&r->out, HR_ERROR_CRC, false,
		                "%s: content SHA-256 is %s, the origin's digest says %s", remote, hex,
		                announced);
		e2 = restart_file(s);
		return e2 != 0 ? e2 : BG_EDIGEST;
	}
	a.key_flags = job_is_private(&r->job) || !peer_mode(&r->job, PEER_CACHING_SERVER) ? STORE_KEY_PRIVATE : 0;
	a.keys[0] = s->skip_keys ? NULL : remote;
	if (!s->skip_keys && r->job.cache_both && original != NULL &&
	    strcmp(original, remote) != 0)
		a.keys[1] = original;
	s->rec.done = true;
	s->rec.bytes_total = (int64_t)a.size;
	if ((err = rec_set_str(&s->rec.sha256, hex)) != 0 ||
	    (err = rec_set_str(&s->rec.cache_key, s->cache && !s->skip_keys ? remote : NULL)) != 0)
		return err;
	/* What peerd served since the last time counts as use before the
	 * limits decide what goes. */
	if (s->cache && r->ro != NULL && r->ro->home != NULL &&
	    store_usage_fold(r->st, r->ro->home) != 0) {
		/* Only a hint for the order of eviction: the file goes on. */
	}
	err = store_update(r->st, final_fn, &a);
	if (err == 0) {
		/* The record as committed; the encoded form kept is not that
		 * record's any more. */
		file_rec_clear(&s->rec);
		s->rec = a.rec; /* transferred */
		memset(&a.rec, 0, sizeof(a.rec));
		json_decref(s->rec_json);
		s->rec_json = NULL;
	}
	file_rec_clear(&a.rec);
	if (err != 0)
		return err;
	pending_committed(s);
	return 0;
}

static void
set_local_error(struct run *r, int err, const char *what, const char *path)
{
	job_outcome_set(&r->out, hr_from_bg(err), true, "%s %s: %s", what, path, bg_strerror(err));
}

/* Errors that end the attempt without being the job's error: the store
 * failed, a user changed the job (BG_EAGAIN), or we were told to stop. */
static bool
propagated(int err)
{
	return err == BG_ENOMEM || err == BG_ECORRUPT || err == BG_EAGAIN || err == BG_ECANCELED;
}

static void
origin_request_for(struct run *r, struct fsink *s, const char *const *headers,
                   struct origin_request *req)
{
	memset(req, 0, sizeof(*req));
	req->url = s->rec.remote_url;
	req->security_flags = r->job.security_flags;
	req->ca_file = r->job.ca_file;
	if (req->ca_file == NULL && r->ro != NULL)
		req->ca_file = r->ro->ca_file;
	req->headers = headers;
	req->headers_for = s->rec.original_url;
	req->offset = s->committed + s->fill;
	if (req->offset > 0)
		req->if_range = resume_validator(&s->rec);
	req->crl_dir = r->ro != NULL ? r->ro->crl_dir : NULL;
	req->proxy = r->job.proxy;
	req->user = r->job.user;
	req->password = r->job.password;
	req->stop = r->ro != NULL ? r->ro->stop : NULL;
	/* A silent origin is a transient error after the job's no-progress
	 * timeout at most: a job told to give up after 30 s without progress
	 * does not wait a minute for the stall to count. */
	{
		int64_t npt = r->job.no_progress_timeout;

		req->stall_seconds = npt > 0 && npt < ORIGIN_LOW_SPEED_TIME ? (unsigned)npt : 0;
	}
}

/* What a HEAD of the origin said. */
struct head_result {
	int64_t total;
	char *etag, *last_modified, *final_url;
};

static int
head_start(void *arg, const struct origin_response *resp)
{
	struct head_result *h = arg;

	h->total = resp->total;
	h->etag = resp->etag != NULL ? strdup(resp->etag) : NULL;
	h->last_modified = resp->last_modified != NULL ? strdup(resp->last_modified) : NULL;
	h->final_url = resp->final_url != NULL ? strdup(resp->final_url) : NULL;
	return 0;
}

static int
head_data(void *arg, const void *p, size_t len)
{
	(void)arg;
	(void)p;
	(void)len;
	return BG_EPROTO; /* a HEAD has no body */
}

static bool
same_validator(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* Whether a peer's entry is the file as the origin has it now: the
 * expected SHA-256 when the job gives one, else the origin's current size
 * and ETag or Last-Modified, asked with the job's flags and redirect
 * policy.  Under ALLOW_REPORT the file's remote name becomes the URL that
 * answered, as for a download (the key already looked up does not change). */
static bool
peer_entry_valid(struct run *r, struct fsink *s, const char *const *headers, const struct peer_entry *e,
                 char *why, size_t whylen)
{
	const char *expect = s->rec.expect_sha256;
	struct head_result h = {.total = -1};
	struct origin_sink sink = {head_start, head_data, &h};
	struct origin_request req;
	struct origin_result res;
	bool ok = false;

	if (expect != NULL) {
		unsigned char want[BG_SHA256_LEN];

		ok = bg_sha256_from_hex(expect, want) == 0 && memcmp(want, e->sha256, BG_SHA256_LEN) == 0;
		if (!ok)
			snprintf(why, whylen, "its digest is not the one expected");
		return ok;
	}
	origin_request_for(r, s, headers, &req);
	req.head = true;
	req.offset = 0;
	req.if_range = NULL;
	if (origin_fetch(r->o, &req, &sink, &res) != 0 || res.hr != HR_S_OK) {
		snprintf(why, whylen, "the origin could not confirm it: %s", res.message);
		goto out;
	}
	ok = h.total >= 0 && (uint64_t)h.total == e->size &&
	     (same_validator(h.etag, e->origin_etag) || same_validator(h.last_modified, e->last_modified));
	if (!ok) {
		snprintf(why, whylen, "stale: the origin has size %" PRId64 ", ETag %s, Last-Modified %s",
		         h.total, h.etag ? h.etag : "none", h.last_modified ? h.last_modified : "none");
		goto out;
	}
	if ((r->job.security_flags & BG_HTTP_REDIRECT_POLICY_MASK) ==
	        BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT &&
	    h.final_url != NULL && rec_set_str(&s->rec.remote_url, h.final_url) != 0)
		ok = false;
out:
	origin_result_clear(&res);
	free(h.etag);
	free(h.last_modified);
	free(h.final_url);
	return ok;
}

static void
note_lookup(struct fsink *s, const char *key, const char *peer, enum peer_lookup_result result,
            const char *detail)
{
	struct peer_lookup l = {.result = result};

	/* The last lookup, and one per peer asked in this attempt, in order.
	 * Only a note: without memory it is left out. */
	if (rec_set_str(&l.key, key) != 0 || rec_set_str(&l.peer, peer) != 0 ||
	    rec_set_str(&l.detail, detail) != 0 || file_rec_note_lookup(&s->rec, &l) != 0)
		peer_lookup_clear(&l);
}

/* Asks the peers, in order, for the file under its current remote URL and
 * takes the first valid entry.  *done when all bytes came in (the caller
 * verifies them); otherwise what arrived stays committed and the origin
 * carries on from there. */
static int
try_peers(struct run *r, struct fsink *s, const struct origin_sink *sink, const char *const *headers,
          bool *done)
{
	CURLSH *e = origin_peer_share(r->o);
	char *key = s->rec.remote_url != NULL ? strdup(s->rec.remote_url) : NULL;
	int err = 0;

	*done = false;
	if (e == NULL || key == NULL) {
		free(key);
		return BG_ENOMEM;
	}
	for (size_t i = 0; i < r->npeers && !*done; i++) {
		const char *peer = r->peers[i];
		struct peer_entry ent;
		char why[384] = "";
		int serr = 0;

		err = peer_lookup(e, &r->pc, peer, key, &ent, why, sizeof(why));
		if (err != 0) {
			note_lookup(s, key, peer, err == BG_ENOENT ? PEER_LOOKUP_MISS : PEER_LOOKUP_ERROR, why);
			err = 0;
			continue;
		}
		if (!peer_entry_valid(r, s, headers, &ent, why, sizeof(why))) {
			note_lookup(s, key, peer, PEER_LOOKUP_STALE, why);
			peer_entry_clear(&ent);
			continue;
		}
		note_lookup(s, key, peer, PEER_LOOKUP_HIT, NULL);
		s->from_peer = true;
		s->has_want = true;
		memcpy(s->want, ent.sha256, BG_SHA256_LEN);
		err = peer_fetch(e, &r->pc, peer, key, &ent, s->committed + s->fill, sink, &serr, why,
		                 sizeof(why));
		peer_entry_clear(&ent);
		if (err == 0) {
			/* The last, partial chunk is the peer's too; then the
			 * digest decides.  A peer whose bytes are not what it
			 * described is passed over for the next source. */
			if ((err = flush_chunk(s)) != 0)
				break;
			err = finish_file(s);
			if (err == 0 && r->out.hr != HR_S_OK) {
				/* Not whole after all: start over with the next source. */
				note_lookup(s, key, peer, PEER_LOOKUP_REJECTED, r->out.message);
				job_outcome_clear(&r->out);
				if ((err = restart_file(s)) != 0)
					break;
			} else if (err == BG_EDIGEST) {
				note_lookup(s, key, peer, PEER_LOOKUP_REJECTED, "the content does not match its digest");
				err = 0;
			} else if (err != 0) {
				break;
			} else {
				*done = true;
			}
		} else if (serr != 0 && propagated(serr)) {
			err = serr;
			break;
		} else {
			/* Broken off: what came in whole is kept (checked at the end
			 * against the digest), and the next source goes on from it. */
			note_lookup(s, key, peer, PEER_LOOKUP_FAILED, why);
			err = serr == 0 || serr == BG_EPROTO ? flush_chunk(s) : 0;
			if (err != 0 && propagated(err))
				break;
			/* The next source appends from a chunk boundary, as a
			 * resume does (prepare_partial). */
			if (err == 0 && s->cache && s->committed % STORE_CHUNK_BYTES != 0 &&
			    (err = prepare_partial(s)) != 0)
				break;
			err = 0;
		}
		s->from_peer = false;
	}
	s->from_peer = false;
	free(key);
	return err;
}

/* ---- The store serves its own node ------------------------------------- */

struct store_find {
	const char *url;           /* the file's current remote URL */
	const char *expect;        /* the job's expected SHA-256 (hex), or NULL */
	bool by_digest;            /* content of the expected digest, not only private */
	struct store_key key;      /* the key under url, its content present (url NULL: none) */
	unsigned char sha[BG_SHA256_LEN];
	uint64_t size;
};

static int
find_txn(struct bg_txn *txn, void *arg)
{
	struct store_find *f = arg;
	struct store_content c;
	int err;

	f->by_digest = false;
	store_key_clear(&f->key);
	if (f->expect != NULL && bg_sha256_from_hex(f->expect, f->sha) == 0) {
		bool shared = false;

		err = txn_content_get(txn, f->sha, &c);
		if (err == 0 && (err = txn_content_shared(txn, f->sha, &shared)) != 0)
			return err;
		if (err == 0 && shared) {
			f->by_digest = true;
			f->size = c.size;
			return 0;
		}
		if (err != 0 && err != BG_ENOENT && err != BG_ECORRUPT)
			return err;
	}
	err = txn_key_get(txn, f->url, &f->key);
	if (err == BG_ENOENT || err == BG_ECORRUPT)
		return 0;
	if (err != 0)
		return err;
	err = txn_content_get(txn, f->key.sha256, &c);
	/* A key whose content is gone, or not the content the job expects,
	 * holds nothing to revalidate. */
	if (err == 0 && c.size == f->key.size &&
	    (f->expect == NULL || memcmp(f->sha, f->key.sha256, BG_SHA256_LEN) == 0)) {
		memcpy(f->sha, f->key.sha256, BG_SHA256_LEN);
		f->size = c.size;
		return 0;
	}
	store_key_clear(&f->key);
	return err == 0 || err == BG_ENOENT || err == BG_ECORRUPT ? 0 : err;
}

/* Writes content sha (size bytes) from the store into the partial file,
 * which then holds the whole file.  BG_ENOENT or BG_ECORRUPT when the
 * store no longer has it whole (evicted meanwhile, damaged). */
static int
deliver_from_store(struct fsink *s, const unsigned char sha[BG_SHA256_LEN], uint64_t size)
{
	uint64_t off = 0;
	int err;

	if (ftruncate(s->fd, 0) != 0)
		return bg_err_from_errno(errno);
	while (off < size) {
		size_t want = size - off < STORE_READ_BYTES ? (size_t)(size - off) : STORE_READ_BYTES;
		size_t put = 0;

		if (stopping(s->r))
			return BG_ECANCELED;
		if ((err = store_write_content(s->r->st, sha, off, want, s->fd, &put)) != 0)
			return err;
		if (put != want)
			return BG_ECORRUPT;
		off += put;
	}
	s->committed = size;
	s->fill = s->preloaded = 0;
	s->from_store = true;
	memcpy(s->store_sha, sha, BG_SHA256_LEN);
	s->rec.bytes_total = (int64_t)size;
	s->rec.bytes_committed = size;
	s->rec.bytes_from_origin = s->rec.bytes_from_peers = 0;
	s->rec.bytes_from_cache = size;
	if ((err = rec_set_str(&s->rec.origin_sha256, NULL)) != 0)
		return err;
	report_progress(s);
	return 0;
}

/* The conditions a request for the held copy carries (RFC 9110 13.1.2,
 * 13.1.3): its strong ETag; else its Last-Modified, only when that date is
 * strong and no entity tag came with it, as for If-Range.  A weak ETag
 * would let a 304 stand for bytes that are only equivalent.  False when
 * the copy cannot be asked about. */
static bool
held_conditions(const struct store_key *k, const char **inm, const char **ims)
{
	*inm = *ims = NULL;
	if (k->url == NULL)
		return false;
	if (k->etag != NULL)
		*inm = strong_etag(k->etag) ? k->etag : NULL;
	else if (http_date_strong(k->last_modified, k->date))
		*ims = k->last_modified;
	return *inm != NULL || *ims != NULL;
}

/* Looks the file up in the store before peers and the origin.  Content of
 * the job's expected SHA-256 is delivered with no request at all (*done
 * once the file is finished).  A key under the file's current remote URL
 * is kept in s->held for a conditional request to the origin. */
static int
try_store(struct run *r, struct fsink *s, bool *done)
{
	struct store_find f = {.url = s->rec.remote_url, .expect = s->rec.expect_sha256};
	const char *inm, *ims;
	int err;

	*done = false;
	s->look = LOOK_MISS;
	err = store_view(r->st, find_txn, &f);
	if (err != 0) {
		store_key_clear(&f.key);
		return err;
	}
	if (f.by_digest) {
		s->skip_keys = true;
		err = deliver_from_store(s, f.sha, f.size);
		if (err == 0) {
			s->look = LOOK_HIT;
			err = finish_file(s);
			*done = err == 0 && r->out.hr == HR_S_OK;
			if (err == 0 && !*done) {
				/* Not whole after all: the origin's turn. */
				job_outcome_clear(&r->out);
				s->look = LOOK_MISS;
				err = restart_file(s);
			}
			return err;
		}
		if (err != BG_ENOENT && err != BG_ECORRUPT)
			return err;
		s->look = LOOK_MISS;
		return restart_file(s);
	}
	if (held_conditions(&f.key, &inm, &ims)) {
		s->held = f.key; /* transferred */
		memset(&f.key, 0, sizeof(f.key));
	}
	store_key_clear(&f.key);
	return 0;
}

/* The origin said 304 for the held copy: it is written from the store and
 * its key confirmed with the 304's validators (RFC 9110 15.4.5). */
static int
revalidated(struct run *r, struct fsink *s, const struct origin_result *res)
{
	uint32_t policy = r->job.security_flags & BG_HTTP_REDIRECT_POLICY_MASK;
	int err;

	if ((err = rec_set_str(&s->rec.etag,
	                       usable_validator(res->etag ? res->etag : s->held.etag))) != 0 ||
	    (err = rec_set_str(&s->rec.last_modified,
	                       usable_validator(res->last_modified ? res->last_modified
	                                                           : s->held.last_modified))) != 0 ||
	    (err = rec_set_str(&s->rec.date,
	                       usable_validator(res->last_modified ? res->date : s->held.date))) != 0)
		return err;
	if (policy == BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT && res->final_url != NULL &&
	    (err = rec_set_str(&s->rec.remote_url, res->final_url)) != 0)
		return err;
	if ((err = deliver_from_store(s, s->held.sha256, s->held.size)) != 0)
		return err;
	s->look = LOOK_REVALIDATED;
	return 0;
}

/* Runs one attempt at file index.  Returns a BG_E* code only for failures
 * of the store; transfer outcomes are left in r->out. */
static int
run_file(struct run *r, uint32_t index, bool *progressed)
{
	struct fsink s = {.r = r, .index = index, .fd = -1};
	struct origin_request req;
	struct origin_result res;
	struct origin_sink sink = {sink_start, sink_data, &s};
	const char *const *headers = strv_list(&r->job.headers);
	char temp[PATH_MAX];
	bool retried_alone = false;
	int err;

	memset(&res, 0, sizeof(res));
	job_outcome_clear(&r->out);
	if ((err = job_load_file(r->st, r->id, index, &s.rec)) != 0)
		return err;
	if (s.rec.done)
		goto out;
	s.cache = !r->job.no_cache;
	if (s.cache && s.rec.not_stored) {
		s.cache = false; /* its first part was never stored */
		s.too_big = true;
	}
	s.blob = s.rec.blob;
	/* One hasher per run: its buffers and thread serve file after file. */
	if (r->hash == NULL && (err = hasher_new(&r->hash)) != 0)
		goto out;
	s.hash = r->hash;
	if ((err = hasher_reset(s.hash)) != 0)
		goto out;
	s.buf = hasher_buffer(s.hash);
	if (s.rec.temp_path == NULL) {
		const char *local = s.rec.local_path;

		if (local == NULL) {
			err = BG_ECORRUPT;
			goto out;
		}
		if ((err = temp_path_for(r->id, local, temp, sizeof(temp))) != 0) {
			set_local_error(r, err, "cannot name a partial file for", local);
			err = 0;
			goto out;
		}
		/* The name follows from the job and the local path, so a crash
		 * before the first commit leaves no file nobody can find: a
		 * resume, a cancel or a complete computes the same name. */
		if ((err = rec_set_str(&s.rec.temp_path, temp)) != 0)
			goto out;
	}
	snprintf(temp, sizeof(temp), "%s", s.rec.temp_path);
	if ((s.fd = open(temp, O_RDWR | O_CREAT | O_CLOEXEC, 0666)) < 0) {
		set_local_error(r, bg_err_from_errno(errno), "cannot write", temp);
		goto out;
	}
	if ((err = prepare_partial(&s)) != 0) {
		if (propagated(err))
			goto out;
		set_local_error(r, err, "cannot prepare", temp);
		err = 0;
		goto out;
	}

	/* All bytes were committed before an interruption: only the final
	 * checks remain. */
	if (s.committed + s.fill > 0 &&
	    s.rec.bytes_total == (int64_t)(s.committed + s.fill)) {
		err = finish_file(&s);
		goto check;
	}

	if (s.rec.remote_url == NULL) {
		err = BG_ECORRUPT;
		goto out;
	}

	/* Sources before the origin: the node's own store (BITS looks in its
	 * own cache first; not with --no-cache), then peers when the job is a
	 * peer-caching client and the store holds no copy the origin can
	 * confirm. */
	if (s.committed + s.fill == 0) {
		bool done = false;

		err = s.cache ? try_store(r, &s, &done) : 0;
		if (err == 0 && !done && peer_mode(&r->job, PEER_CACHING_CLIENT) && r->npeers > 0 &&
		    s.held.url == NULL && s.committed + s.fill == 0) {
			/* The lookups of this attempt only. */
			for (size_t i = 0; i < s.rec.nlookups; i++)
				peer_lookup_clear(&s.rec.lookups[i]);
			s.rec.nlookups = 0;
			err = try_peers(r, &s, &sink, headers, &done);
		}
		if (err != 0) {
			if (!propagated(err)) {
				set_local_error(r, err, "cannot write", temp);
				err = 0;
			}
			goto out;
		}
		if (done)
			goto out;
	}
again:
	origin_request_for(r, &s, headers, &req);
	if (req.offset == 0)
		held_conditions(&s.held, &req.if_none_match, &req.if_modified_since);
	if ((err = origin_fetch(r->o, &req, &sink, &res)) != 0)
		goto out;
	if (res.hr == HR_S_OK && res.not_modified) {
		err = revalidated(r, &s, &res);
		if (err == BG_ENOENT || err == BG_ECORRUPT) {
			/* Gone from the store since the lookup: a plain request. */
			store_key_clear(&s.held);
			s.look = LOOK_MISS;
			origin_result_clear(&res);
			if ((err = restart_file(&s)) != 0)
				goto out;
			goto again;
		}
		if (err == 0)
			err = finish_file(&s);
		goto check;
	}
	if (res.remote_url != NULL) {
		/* DISALLOW: the remote name becomes the redirect target. */
		if ((err = rec_set_str(&s.rec.remote_url, res.remote_url)) != 0 ||
		    (err = commit_file(&s, NULL, 0, false, false)) != 0)
			goto out;
	}
	if (res.hr != HR_S_OK) {
		job_outcome_set(&r->out, res.hr, false, "%s", res.message);
		if (res.local_err != 0) {
			if (propagated(res.local_err)) {
				err = res.local_err;
				goto out;
			}
			if (res.local_err == BG_EPROTO) {
				job_outcome_set(&r->out, HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE, false,
				                "%s sent more bytes than it announced", req.url);
				/* What was kept is suspect: start over next time. */
				if ((err = restart_file(&s)) != 0)
					goto out;
			} else {
				set_local_error(r, res.local_err, "cannot write", temp);
			}
		} else if (s.fill > 0 && hr_transient(res.hr)) {
			/* Keep whole bytes received before the break: they are good
			 * and the resume picks up after them. */
			if ((err = flush_chunk(&s)) != 0) {
				if (propagated(err))
					goto out;
				set_local_error(r, err, "cannot write", temp);
				err = 0;
			}
		}
		goto out;
	}
	err = finish_file(&s);
	if (err == BG_EDIGEST && !retried_alone) {
		/* Bytes kept from a peer plus the origin's rest did not make the
		 * content the peer described, or the origin's bytes not the
		 * digest it announced: once more, from the origin alone. */
		retried_alone = true;
		r->out.hr = HR_S_OK;
		origin_result_clear(&res);
		goto again;
	}
check:
	if (err == BG_EDIGEST) {
		/* finish_file said why when the origin's digest disagreed. */
		if (r->out.hr != HR_ERROR_CRC)
			job_outcome_set(&r->out, HR_ERROR_CRC, false,
			                "%s: the content does not match its digest",
			                s.rec.remote_url);
		err = 0;
	} else if (err != 0 && !propagated(err) && err != BG_EIO) {
		set_local_error(r, err, "cannot write", temp);
		err = 0;
	}
out:
	r->file_bytes = s.rec.bytes_committed;
	if (progressed != NULL)
		*progressed = s.progressed;
	origin_result_clear(&res);
	store_key_clear(&s.held);
	if (s.fd >= 0)
		close(s.fd);
	json_decref(s.rec_json);
	file_rec_clear(&s.rec);
	return err;
}

/* Records the error that stopped the job: ERROR or, for a transient
 * error, TRANSIENT_ERROR until its retry time, unless the job made no
 * progress for longer than its no-progress timeout (decided in the
 * transaction, from the stored record's clock: job_failure_event). */
static int
set_job_error(struct run *r, uint32_t index)
{
	struct file_rec f;
	struct job_commit c = {
		.id = r->id,
		.index = index,
		.generation = r->generation,
		.failed = &r->out,
		.memo = &r->memo,
	};
	int err;

	if (job_load_file(r->st, r->id, index, &f) == 0)
		c.failed_url = f.remote_url;
	err = job_commit(r->st, &c);
	file_rec_clear(&f);
	return err;
}

/* Commits an event of the runner's. */
static int
run_event(struct run *r, enum job_event ev)
{
	struct job_commit c = {
		.id = r->id,
		.generation = r->generation,
		.has_event = true,
		.event = ev,
		.memo = &r->memo,
	};

	return job_commit(r->st, &c);
}

/* The peers a job asks: its own list, else the runner's (the daemon's). */
static void
load_peers(struct run *r)
{
	const char *keyfile = r->job.peer_key;

	r->npeers = 0;
	for (size_t i = 0; i < r->job.peers.n && r->npeers < JOB_PEERS_MAX; i++)
		r->peers[r->npeers++] = r->job.peers.v[i];
	if (r->npeers == 0 && r->ro != NULL) {
		for (size_t i = 0; i < r->ro->npeers && r->npeers < JOB_PEERS_MAX; i++)
			r->peers[r->npeers++] = r->ro->peers[i];
	}
	if (keyfile == NULL && r->ro != NULL)
		keyfile = r->ro->peer_key;
	r->pc.keylen = 0;
	if (keyfile != NULL && peer_key_load(keyfile, r->pc.key, &r->pc.keylen) != 0) {
		/* Without its key no peer would answer: ask none. */
		r->pc.keylen = 0;
		r->npeers = 0;
	}
}

/* Loads the job again after a user changed it; BG_EAGAIN when it is no
 * longer ours to run (suspended, cancelled, completed...). */
static int
reload(struct run *r)
{
	struct job_rec job;
	int err;

	/* The peers in use point into the record: it is replaced only by a
	 * whole one. */
	if ((err = job_load(r->st, r->id, &job)) != 0) {
		job_rec_clear(&job);
		return err;
	}
	job_rec_clear(&r->job);
	r->job = job;
	r->generation = job.generation;
	r->nfiles = job.nfiles;
	load_peers(r);
	if (job.state != JOB_QUEUED && job.state != JOB_CONNECTING && job.state != JOB_TRANSFERRING)
		return BG_EAGAIN;
	return 0;
}

static void
sleep_unless_stopped(const struct run *r, unsigned seconds)
{
	for (unsigned i = 0; i < seconds * 10 && !stopping(r); i++) {
		struct timespec ts = {0, 100 * 1000 * 1000};

		nanosleep(&ts, NULL);
	}
}

int
job_run(struct bg_store *st, struct origin *o, const char *id, const struct job_run_options *ro)
{
	struct run r = {.st = st, .o = o, .id = id, .ro = ro, .memo = {.stamped = -1}};
	int err;

	if ((err = job_load(st, id, &r.job)) != 0) {
		job_rec_clear(&r.job);
		return err;
	}
	r.generation = r.job.generation;
	r.nfiles = r.job.nfiles;
	load_peers(&r);
	if (ro != NULL && ro->only_if_due) {
		/* A scheduler chose the job before it held its lock: the job may
		 * have been suspended, cancelled or finished by someone else
		 * since.  Only a job that is still due is started. */
		if (!job_due(r.job.state, r.job.retry_at, (int64_t)time(NULL))) {
			err = BG_EAGAIN;
			goto out;
		}
	}
	if ((err = run_event(&r, ro != NULL && ro->only_if_due ? JOB_EV_START : JOB_EV_RUN)) != 0)
		goto out;
	for (uint32_t i = 0; i < r.nfiles; i++) {
		unsigned attempts = 0, delay = 0;

		for (;;) {
			bool progressed = false;

			err = run_file(&r, i, &progressed);
			if (err == BG_EAGAIN) {
				/* A user changed the job: carry on with the new settings
				 * (the same file again), unless it is no longer to run. */
				if ((err = reload(&r)) != 0)
					goto out;
				continue;
			}
			if (err == BG_ECANCELED || (err == 0 && r.out.hr != HR_S_OK && stopping(&r))) {
				/* Stopped from outside: the job stays resumable. */
				err = run_event(&r, JOB_EV_STOP);
				err = err != 0 && err != BG_EAGAIN ? err : BG_ECANCELED;
				goto out;
			}
			if (err != 0)
				goto out;
			if (r.out.hr == HR_S_OK)
				break;
			if (progressed) {
				attempts = 0;
				delay = 0;
			}
			if (!job_retry_now(r.out.hr, attempts, ro != NULL ? ro->transient_retries : 0)) {
				err = set_job_error(&r, i);
				goto out;
			}
			attempts++;
			delay = job_retry_delay(delay);
			sleep_unless_stopped(&r, delay);
		}
		r.bytes_before += r.file_bytes;
	}
	if ((err = run_event(&r, JOB_EV_DONE)) != 0)
		goto out;
	/* Committed is safe from any crash of bgcopy; with sync, TRANSFERRED
	 * also survives a power loss. */
	if (ro != NULL && ro->sync)
		err = store_sync(st);
out:
	hasher_free(r.hash);
	job_memo_clear(&r.memo);
	OPENSSL_cleanse(r.pc.key, sizeof(r.pc.key));
	job_rec_clear(&r.job);
	return err;
}

/* The partial file of a file record: recorded, or derived as run_file
 * derives it (a crash may come before the first commit records it). */
static const char *
partial_of(const char *id, const struct file_rec *f, char *buf, size_t len)
{
	if (f->temp_path != NULL)
		return f->temp_path;
	if (f->local_path == NULL || temp_path_for(id, f->local_path, buf, len) != 0)
		return NULL;
	return buf;
}

static int
fsync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);
	int err = 0;

	if (fd < 0)
		return bg_err_from_errno(errno);
	if (fsync(fd) != 0)
		err = bg_err_from_errno(errno);
	close(fd);
	return err;
}

static int
parent_dir(const char *path, char *out, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return snprintf(out, len, ".") < 0 ? BG_EINVAL : 0;
	if (slash == path)
		return snprintf(out, len, "/") < 0 ? BG_EINVAL : 0;
	if ((size_t)(slash - path) >= len)
		return BG_ELIMIT;
	memcpy(out, path, (size_t)(slash - path));
	out[slash - path] = '\0';
	return 0;
}

int
job_complete(struct bg_store *st, const char *id, bool sync)
{
	struct job_rec job;
	struct file_rec f = {0};
	char dir[PATH_MAX], last_dir[PATH_MAX] = "", tbuf[PATH_MAX];
	enum job_state to;
	int err;

	if ((err = job_load(st, id, &job)) != 0)
		goto out;
	/* Checked before any file moves; the commit checks it again. */
	if (job_transition(job.state, JOB_EV_COMPLETE, &to) != 0) {
		err = BG_EINVAL;
		goto out;
	}
	for (uint32_t i = 0; i < job.nfiles; i++) {
		const char *temp, *local;
		struct stat sb;

		file_rec_clear(&f);
		if ((err = job_load_file(st, id, i, &f)) != 0)
			goto out;
		temp = partial_of(id, &f, tbuf, sizeof(tbuf));
		local = f.local_path;
		if (local == NULL) {
			err = BG_ECORRUPT;
			goto out;
		}
		if (temp == NULL || stat(temp, &sb) != 0) {
			/* Renamed before an interruption: nothing left to do. */
			if (stat(local, &sb) == 0)
				continue;
			err = BG_ENOENT;
			goto out;
		}
		/* With sync, the bytes reach the disk before the name does, so
		 * that the file is never empty after a power loss.  A crash of
		 * bgcopy itself cannot show a partial file either way: the
		 * rename is atomic. */
		if (sync && (err = fsync_path(temp, O_RDONLY)) != 0)
			goto out;
		if (rename(temp, local) != 0) {
			err = bg_err_from_errno(errno);
			goto out;
		}
		if ((err = parent_dir(local, dir, sizeof(dir))) != 0)
			goto out;
		if (sync && strcmp(dir, last_dir) != 0) {
			if ((err = fsync_path(dir, O_RDONLY | O_DIRECTORY)) != 0)
				goto out;
			memcpy(last_dir, dir, sizeof(dir));
		}
	}
	{
		struct job_commit c = {.id = id, .generation = -1, .has_event = true,
		                       .event = JOB_EV_COMPLETE};
		err = job_commit(st, &c);
	}
	if (err == 0 && sync)
		err = store_sync(st);
out:
	file_rec_clear(&f);
	job_rec_clear(&job);
	return err;
}

int
job_discard_partials(struct bg_store *st, const char *id)
{
	struct job_rec job;
	struct file_rec f = {0};
	char tbuf[PATH_MAX];
	int err;

	if ((err = job_load(st, id, &job)) != 0)
		goto out;
	for (uint32_t i = 0; i < job.nfiles; i++) {
		const char *temp;

		file_rec_clear(&f);
		if ((err = job_load_file(st, id, i, &f)) != 0)
			goto out;
		if ((temp = partial_of(id, &f, tbuf, sizeof(tbuf))) != NULL && unlink(temp) != 0 &&
		    errno != ENOENT) {
			err = bg_err_from_errno(errno);
			goto out;
		}
		if (f.done)
			continue;
		f.bytes_committed = f.bytes_from_origin = 0;
		struct job_commit c = {.id = id, .index = i, .file = &f, .generation = -1,
		                       .blob_in = f.blob, .drop_blob = true};
		if ((err = job_commit(st, &c)) != 0)
			goto out;
	}
out:
	file_rec_clear(&f);
	job_rec_clear(&job);
	return err;
}

int
job_cancel(struct bg_store *st, const char *id)
{
	int err;

	if ((err = job_discard_partials(st, id)) != 0)
		return err;
	return job_event(st, id, JOB_EV_CANCEL, NULL, NULL);
}
