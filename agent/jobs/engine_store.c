/*
 * engine_store.c - the node's own store as the first source of a file: its
 * content of the expected SHA-256 is delivered without a request, and a
 * copy kept under the file's URL is revalidated with a conditional request.
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

/* Bytes copied from the store per call when it serves the file itself
 * (between two looks at the stop flag). */
#define STORE_READ_BYTES (64 * STORE_CHUNK_BYTES)

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

		if (run_stopping(s->r))
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

bool
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

int
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

int
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
