/*
 * engine_finish.c - the end of a file and of a job: a file whose bytes are
 * all in is verified and keyed in the content store; a completed job's
 * partial files are renamed to their paths (fsync'd with sync); a
 * cancelled job's are removed.
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

#include "engine_int.h"

struct final_args {
	struct fsink *s;
	unsigned char sha[BG_SHA256_LEN];
	uint64_t size;
	const char *keys[2];
	unsigned key_flags;
	struct file_rec rec; /* the file record as committed (a copy per attempt) */
	struct store_enforce_result evicted;
	bool has_last_piece;  /* the digest of the last chunk (index last) is known */
	bool has_prev_piece;  /* a streamed chunk's digest not stored yet (engine_sink.c) */
	uint64_t prev_index;
	unsigned char prev_piece[STORE_PIECE_LEN];
	uint64_t last;
	unsigned char last_piece[STORE_PIECE_LEN];
	struct store_fetch_policy fetch; /* what the bytes were fetched under */
};

#define PIECES_BATCH 256 /* digests copied at a time (8 KiB) */

/* The identical content sha is stored already (blob to) and its piece
 * list is incomplete: the digests of this download's own blob (from),
 * written for every full chunk it committed, are its digests too (the
 * whole-file SHA-256 is the same).  Read before the own blob is dropped. */
static int
copy_pieces(struct bg_txn *txn, struct final_args *a, uint64_t from, uint64_t to)
{
	uint64_t full = a->has_last_piece ? a->last : a->size / STORE_CHUNK_BYTES;
	unsigned char buf[PIECES_BATCH * STORE_PIECE_LEN];
	int err;

	for (uint64_t i = 0; from != 0 && i < full;) {
		uint64_t want = full - i < PIECES_BATCH ? full - i : PIECES_BATCH, n = 0;

		if ((err = txn_pieces_read(txn, from, i, want, buf, &n)) != 0)
			return err;
		for (uint64_t j = 0; j < n; j++)
			if ((err = txn_piece_put(txn, to, i + j, buf + j * STORE_PIECE_LEN)) != 0)
				return err;
		if (n < want)
			break; /* a gap: the rest is filled lazily (store_pieces_fill) */
		i += n;
	}
	if (a->has_last_piece &&
	    (err = txn_piece_put(txn, to, a->last, a->last_piece)) != 0)
		return err;
	return 0;
}

/* The digest of a short last chunk committed before the end (at a break,
 * or when a peer's bytes ended), read back from the own blob: flush_chunk
 * gives full chunks only. */
static int
last_piece_from_blob(struct bg_txn *txn, struct final_args *a)
{
	const void *data;
	size_t len;
	int err;

	if (a->has_last_piece || a->size % STORE_CHUNK_BYTES == 0 || a->s->blob == 0)
		return 0;
	err = txn_blob_get(txn, a->s->blob, a->last, &data, &len);
	if (err == BG_ENOENT)
		return 0;
	if (err != 0)
		return err;
	if (len == a->size % STORE_CHUNK_BYTES) {
		bg_sha256(data, len, a->last_piece);
		a->has_last_piece = true;
	}
	return 0;
}

/* The download's record for peers at the end: the tombstone naming the
 * content (blob), or none when the file was not kept or never published. */
static int
final_inflight(struct bg_txn *txn, struct final_args *a, bool kept, uint64_t blob)
{
	struct fsink *s = a->s;
	struct store_inflight f;
	int err;

	if (s->publish && kept) {
		inflight_of(s, a->size, &f);
		f.blob = blob;
		f.state = STORE_INFLIGHT_FINAL;
		f.total = (int64_t)a->size;
		f.fetch = a->fetch;
		f.has_sha = true;
		memcpy(f.sha256, a->sha, BG_SHA256_LEN);
		return txn_inflight_put(txn, &f);
	}
	if (s->unpublished && !s->publish)
		return 0;
	/* Only this file's record: another job may publish the URL. */
	{
		const char *url = s->pub_url != NULL ? s->pub_url : s->rec.remote_url;
		bool ours;

		if (url == NULL)
			return 0;
		memset(&f, 0, sizeof(f));
		err = txn_inflight_get(txn, url, &f);
		ours = err == 0 && strcmp(f.job, s->r->id) == 0 && f.file == s->index;
		store_inflight_clear(&f);
		if (err != 0 && err != BG_ENOENT && err != BG_ECORRUPT)
			return err;
		if (ours && (err = txn_inflight_del(txn, url)) != 0 && err != BG_ENOENT)
			return err;
	}
	return 0;
}

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
	/* First, so that what follows (a copy of the list, the content's
	 * own) sees the blob's every digest. */
	if (a->has_prev_piece && s->blob != 0 &&
	    (err = txn_piece_put(txn, s->blob, a->prev_index, a->prev_piece)) != 0)
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
			if ((err = final_inflight(txn, a, false, 0)) != 0)
				return err;
			goto file;
		}
	}
	if (s->cache) {
		struct store_content c;

		if ((err = last_piece_from_blob(txn, a)) != 0)
			return err;
		err = txn_content_get(txn, a->sha, &c);
		if (err == 0) {
			bool complete = true;

			/* The same bytes are stored already: keep one copy, and
			 * give it the piece list this download computed if it has
			 * none (stored by an older build). */
			if (c.blob != s->blob &&
			    ((err = txn_content_pieces_complete(txn, a->sha, &complete)) != 0 ||
			     (!complete && (err = copy_pieces(txn, a, s->blob, c.blob)) != 0)))
				return err;
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
			/* The last chunk's digest, short or full: content has a
			 * complete list from the start. */
			if (a->has_last_piece &&
			    (err = txn_piece_put(txn, c.blob, a->last, a->last_piece)) != 0)
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
				.fetch = a->fetch,
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
		if ((err = final_inflight(txn, a, true, c.blob)) != 0)
			return err;
		if ((err = txn_pin(txn, s->r->id, a->sha)) != 0 ||
		    (err = txn_enforce_limits(txn, limit, now, cfg.max_age_days, job_record_unfinished,
		                              &a->evicted)) != 0)
			return err;
	} else {
		a->rec.has_cached = true;
		a->rec.cached = false;
		if ((err = final_inflight(txn, a, false, 0)) != 0)
			return err;
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

bool
job_is_private(const struct job_rec *job)
{
	/* Content fetched with credentials or a client certificate (the
	 * holder's), or with another method than GET (its answer need not be
	 * the resource's representation). */
	if (job_has_cred(job, JOB_AUTH_SERVER) || job->http_method != NULL ||
	    job->client_cert != NULL)
		return true;
	for (size_t i = 0; i < job->headers.n; i++) {
		const char *line = job->headers.v[i];

		if (strncasecmp(line, "authorization:", 14) == 0 || strncasecmp(line, "cookie:", 7) == 0)
			return true;
	}
	return false;
}

bool
peer_mode(const struct job_rec *job, enum peer_caching side)
{
	return job->peer_caching == PEER_CACHING_BOTH || job->peer_caching == side;
}

int
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
	a.last = a.size > 0 ? (a.size - 1) / STORE_CHUNK_BYTES : 0;
	if (s->cache && s->fill > 0) {
		a.has_last_piece = true;
		bg_sha256(s->pending, s->fill, a.last_piece);
	}
	if (s->piece_pending) {
		if ((err = hasher_piece(s->hash, s->piece_seq, a.prev_piece)) != 0)
			return err;
		a.has_prev_piece = true;
		a.prev_index = s->piece_chunk;
	}
	/* Bytes are as trustworthy as the weakest fetch they came from: a
	 * copy revalidated from the store keeps what its key said (a 304
	 * under weaker checks weakens it); bytes from a peer's finished entry
	 * came under a policy this node does not know.  Bytes followed from
	 * a fleet node came under one this job accepted (at least as strict
	 * as its own, which is therefore what they can be said to be
	 * fetched under): a download from byte 0 that followed took no
	 * peer's entry (engine.c). */
	file_fetch_policy(s, &a.fetch);
	if (s->from_store && s->held.url != NULL)
		fetch_policy_weaker(&a.fetch, &s->held.fetch);
	if (s->rec.bytes_from_peers > 0 && s->rec.fleet_follows == 0)
		a.fetch.known = false;
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
		s->piece_pending = false;
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

/* Calls fn with each file record of job id (nfiles files), in order, until
 * one fails. */
static int
each_file(struct bg_store *st, const char *id, uint32_t nfiles,
          int (*fn)(struct bg_store *st, const char *id, uint32_t index, struct file_rec *f,
                    void *arg),
          void *arg)
{
	struct file_rec f = {0};
	int err = 0;

	for (uint32_t i = 0; i < nfiles && err == 0; i++) {
		file_rec_clear(&f);
		if ((err = job_load_file(st, id, i, &f)) == 0)
			err = fn(st, id, i, &f, arg);
	}
	file_rec_clear(&f);
	return err;
}

struct complete_args {
	bool sync;
	char last_dir[PATH_MAX]; /* the folder fsync'd last */
};

/* Moves a transferred file from its partial file to its local path. */
static int
complete_file(struct bg_store *st, const char *id, uint32_t index, struct file_rec *f, void *arg)
{
	struct complete_args *a = arg;
	char dir[PATH_MAX], tbuf[PATH_MAX];
	const char *temp = partial_of(id, f, tbuf, sizeof(tbuf)), *local = f->local_path;
	struct stat sb;
	int err;

	(void)st;
	(void)index;
	if (local == NULL)
		return BG_ECORRUPT;
	if (temp == NULL || stat(temp, &sb) != 0) {
		/* Renamed before an interruption: nothing left to do. */
		return stat(local, &sb) == 0 ? 0 : BG_ENOENT;
	}
	/* With sync, the bytes reach the disk before the name does, so that
	 * the file is never empty after a power loss.  A crash of bgcopy
	 * itself cannot show a partial file either way: the rename is atomic. */
	if (a->sync && (err = bg_fsync_path(temp, false)) != 0)
		return err;
	if (rename(temp, local) != 0)
		return bg_err_from_errno(errno);
	if ((err = parent_dir(local, dir, sizeof(dir))) != 0)
		return err;
	if (a->sync && strcmp(dir, a->last_dir) != 0) {
		if ((err = bg_fsync_path(dir, true)) != 0)
			return err;
		memcpy(a->last_dir, dir, sizeof(dir));
	}
	return 0;
}

int
job_complete(struct bg_store *st, const char *id, bool sync)
{
	struct complete_args a = {.sync = sync};
	struct job_commit c = {.id = id, .generation = -1, .has_event = true,
	                       .event = JOB_EV_COMPLETE};
	struct job_rec job;
	enum job_state to;
	int err;

	if ((err = job_load(st, id, &job)) == 0) {
		/* Checked before any file moves; the commit checks it again. */
		if (job_transition(job.state, JOB_EV_COMPLETE, &to) != 0)
			err = BG_EINVAL;
		else if ((err = each_file(st, id, job.nfiles, complete_file, &a)) == 0 &&
		         (err = job_commit(st, &c)) == 0 && sync)
			err = store_sync(st);
	}
	job_rec_clear(&job);
	return err;
}

/* Deletes a file's partial file and, unless it is done, its stored bytes. */
static int
discard_file(struct bg_store *st, const char *id, uint32_t index, struct file_rec *f, void *arg)
{
	char tbuf[PATH_MAX];
	const char *temp = partial_of(id, f, tbuf, sizeof(tbuf));
	struct job_commit c = {.id = id, .index = index, .file = f, .generation = -1,
	                       .blob_in = f->blob, .drop_blob = true};

	int err;

	(void)arg;
	if (temp != NULL && unlink(temp) != 0 && errno != ENOENT)
		return bg_err_from_errno(errno);
	if (f->done)
		return 0;
	f->bytes_committed = f->bytes_from_origin = 0;
	/* A record of the download in progress goes with its bytes: under the
	 * URL asked, which a redirect may have renamed since. */
	c.inflight_del = true;
	c.inflight_url = f->remote_url;
	if ((err = job_commit(st, &c)) != 0)
		return err;
	if (f->original_url != NULL && f->remote_url != NULL &&
	    strcmp(f->original_url, f->remote_url) != 0) {
		struct job_commit d = {.id = id, .index = index, .generation = -1,
		                       .inflight_del = true, .inflight_url = f->original_url};

		err = job_commit(st, &d);
	}
	return err;
}

int
job_discard_partials(struct bg_store *st, const char *id)
{
	struct job_rec job;
	int err;

	if ((err = job_load(st, id, &job)) == 0)
		err = each_file(st, id, job.nfiles, discard_file, NULL);
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
