/*
 * gc.c - store_gc(): drops content no key points at and blobs nothing
 * refers to (with their piece digests), in one write transaction so that
 * nothing can gain a reference between the marking and the sweeping; and
 * downloads in progress whose writer is gone, and old tombstones.
 *
 * A record that cannot be read makes the whole collection fail with
 * BG_ECORRUPT: a file or key record we cannot read might name something we
 * would otherwise delete.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cache_int.h"

/* A growing array of elements of one size. */
struct vec {
	void *v;
	size_t n;
	size_t cap;
};

struct victim {
	unsigned char sha[BG_SHA256_LEN];
	uint64_t blob;
};

struct gc_ctx {
	int (*blob_of)(const void *rec, size_t len, uint64_t *blob);
	struct vec file_blobs;    /* uint64_t: named by a file record */
	struct vec content_blobs; /* uint64_t: owned by content that stays */
	struct vec keys;          /* SHA-256: content digests keys point at */
	struct vec victims;       /* struct victim: content nobody points at */
};

struct gc_result {
	int (*blob_of)(const void *rec, size_t len, uint64_t *blob);
	const char *home;         /* where the writers' lock files are */
	int64_t now;
	uint64_t entries;
	uint64_t bytes;
};

/* Appends the elem bytes at x to a. */
static int vec_add(struct vec *a, const void *x, size_t elem)
{
	if (a->n == a->cap) {
		size_t ncap = a->cap != 0 ? a->cap * 2 : 64;
		void *p;

		if (ncap > SIZE_MAX / elem || (p = realloc(a->v, ncap * elem)) == NULL)
			return BG_ENOMEM;
		a->v = p;
		a->cap = ncap;
	}
	memcpy((unsigned char *)a->v + a->n++ * elem, x, elem);
	return 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a;
	uint64_t y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int sha_cmp(const void *a, const void *b)
{
	return memcmp(a, b, BG_SHA256_LEN);
}

/* Sorts a for vec_has(). */
static void vec_sort(struct vec *a, size_t elem, int (*cmp)(const void *, const void *))
{
	if (a->n > 1)
		qsort(a->v, a->n, elem, cmp);
}

static int vec_has(const struct vec *a, const void *x, size_t elem,
                   int (*cmp)(const void *, const void *))
{
	return a->n > 0 && bsearch(x, a->v, a->n, elem, cmp) != NULL;
}

static int blob_kept(const struct gc_ctx *c, uint64_t blob)
{
	return vec_has(&c->content_blobs, &blob, sizeof(blob), u64_cmp) ||
	       vec_has(&c->file_blobs, &blob, sizeof(blob), u64_cmp);
}

/* The caller knows the schema of file records: blob_of says which blob
 * one names.  The store only frames the bytes. */
static int gc_visit_file(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct gc_ctx *c = ctx;
	uint64_t blob = 0;
	int rc;

	(void)txn;
	(void)k;
	if (v->mv_size == 0 || v->mv_size > STORE_RECORD_MAX)
		return BG_ECORRUPT;
	if ((rc = c->blob_of(v->mv_data, v->mv_size, &blob)) != 0)
		return rc;
	return blob != 0 ? vec_add(&c->file_blobs, &blob, sizeof(blob)) : 0;
}

static int gc_visit_key(const struct store_key *k, void *arg)
{
	struct gc_ctx *c = arg;

	return vec_add(&c->keys, k->sha256, BG_SHA256_LEN);
}

static int gc_visit_content(const unsigned char sha[BG_SHA256_LEN],
                            const struct store_content *rec, void *arg)
{
	struct gc_ctx *c = arg;
	struct victim vic;

	if (vec_has(&c->keys, sha, BG_SHA256_LEN, sha_cmp))
		return vec_add(&c->content_blobs, &rec->blob, sizeof(rec->blob));
	memcpy(vic.sha, sha, BG_SHA256_LEN);
	vic.blob = rec->blob;
	return vec_add(&c->victims, &vic, sizeof(vic));
}

/* Deletes every blob that is in neither set, jumping from blob to blob
 * instead of stepping over every chunk of the blobs that stay. */
static int gc_sweep_blobs(struct bg_txn *txn, struct gc_ctx *c, struct gc_result *res)
{
	uint64_t next = 0;
	uint64_t bytes;
	uint64_t blob;
	int rc;

	while ((rc = ci_blob_next(txn, next, &blob)) == 0) {
		if (!blob_kept(c, blob)) {
			if ((rc = ci_blob_drop(txn, blob, 0, NULL, &bytes)) != 0)
				return rc;
			res->entries++;
			res->bytes += bytes;
		}
		if (blob == UINT64_MAX)
			return 0;
		next = blob + 1;
	}
	return rc == BG_ENOENT ? 0 : rc;
}

/* Digests of blobs in neither set: those of chunks dropped above went
 * with them; these are digests whose chunks were never written or went
 * by a path that did not know the database (a version 3 writer). */
static int gc_sweep_pieces(struct bg_txn *txn, struct gc_ctx *c)
{
	uint64_t next = 0;
	uint64_t blob;
	int rc;

	while ((rc = ci_pieces_next(txn, next, &blob)) == 0) {
		if (!blob_kept(c, blob) && (rc = ci_blob_drop(txn, blob, 0, NULL, NULL)) != 0)
			return rc;
		if (blob == UINT64_MAX)
			return 0;
		next = blob + 1;
	}
	return rc == BG_ENOENT ? 0 : rc;
}

/* A download in progress whose writer holds no lock and has not written
 * for STORE_INFLIGHT_STALE seconds is one that died: nobody will finish
 * it, and peers waiting on it should hear so.  Tombstones serve streams
 * of the incarnation that ended; after STORE_INFLIGHT_TOMBSTONE none is
 * left.  A record that cannot be decoded is served by nobody: it goes. */
static int gc_visit_inflight(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	const struct gc_result *res = ctx;
	unsigned char key[STORE_WALK_KEY_MAX];
	struct store_inflight f;
	size_t klen = k->mv_size;
	bool drop;
	int rc;

	memcpy(key, k->mv_data, klen);
	rc = ci_inflight_decode(k, v, &f);
	if (rc == BG_ECORRUPT)
		return ci_raw_del(txn, DB_INFLIGHT, key, klen);
	if (rc != 0)
		return rc;
	if (f.state == STORE_INFLIGHT_FINAL)
		drop = f.updated < res->now - STORE_INFLIGHT_TOMBSTONE;
	else
		drop = f.updated < res->now - STORE_INFLIGHT_STALE &&
		       (res->home == NULL || !store_inflight_alive(res->home, key));
	store_inflight_clear(&f);
	return drop ? ci_raw_del(txn, DB_INFLIGHT, key, klen) : 0;
}

static int gc_sweep_inflight(struct bg_txn *txn, struct gc_result *res)
{
	if (txn->dbi[DB_INFLIGHT] == 0)
		return 0;
	return ci_walk(txn, DB_INFLIGHT, NULL, 0, 0, gc_visit_inflight, res);
}

static int gc_txn(struct bg_txn *txn, void *arg)
{
	struct gc_result *res = arg;
	struct gc_ctx c;
	uint64_t bytes;
	int rc;

	/* fn may run more than once (map growth): start from nothing. */
	memset(&c, 0, sizeof(c));
	c.blob_of = res->blob_of;
	res->entries = 0;
	res->bytes = 0;
	rc = ci_walk(txn, DB_FILES, NULL, 0, 0, gc_visit_file, &c);
	if (rc != 0)
		goto out;
	rc = txn_key_each(txn, gc_visit_key, &c);
	if (rc != 0)
		goto out;
	vec_sort(&c.keys, BG_SHA256_LEN, sha_cmp);
	rc = txn_content_each(txn, gc_visit_content, &c);
	if (rc != 0)
		goto out;
	vec_sort(&c.file_blobs, sizeof(uint64_t), u64_cmp);
	vec_sort(&c.content_blobs, sizeof(uint64_t), u64_cmp);
	for (size_t i = 0; i < c.victims.n; i++) {
		const struct victim *vic = (const struct victim *)c.victims.v + i;
		uint64_t owned;

		if ((rc = ci_content_del_record(txn, vic->sha, &owned)) != 0)
			goto out;
		res->entries++;
		/* A file record may still name the blob (a job that has not
		 * been completed yet): the record goes, the bytes stay until
		 * the file record does. */
		if (blob_kept(&c, vic->blob))
			continue;
		rc = ci_blob_drop(txn, vic->blob, 0, NULL, &bytes);
		if (rc != 0)
			goto out;
		res->bytes += bytes;
	}
	if ((rc = gc_sweep_blobs(txn, &c, res)) != 0 || (rc = gc_sweep_pieces(txn, &c)) != 0)
		goto out;
	rc = gc_sweep_inflight(txn, res);
out:
	free(c.file_blobs.v);
	free(c.content_blobs.v);
	free(c.keys.v);
	free(c.victims.v);
	return rc;
}

int store_gc(struct bg_store *st, int (*blob_of)(const void *rec, size_t len, uint64_t *blob),
             uint64_t *freed_entries, uint64_t *freed_bytes)
{
	struct gc_result res = { .blob_of = blob_of };
	char home[PATH_MAX], *slash;
	int rc;

	if (freed_entries != NULL)
		*freed_entries = 0;
	if (freed_bytes != NULL)
		*freed_bytes = 0;
	if (blob_of == NULL || st == NULL)
		return BG_EINVAL;
	/* The home is the folder of store.mdb: the lock files are there.
	 * Without it (a path too long) no writer is taken for dead. */
	if (st->path != NULL && snprintf(home, sizeof(home), "%s", st->path) < (int)sizeof(home) &&
	    (slash = strrchr(home, '/')) != NULL) {
		*slash = '\0';
		res.home = home;
	}
	res.now = bg_now();
	rc = store_update(st, gc_txn, &res);
	if (rc != 0)
		return rc;
	if (freed_entries != NULL)
		*freed_entries = res.entries;
	if (freed_bytes != NULL)
		*freed_bytes = res.bytes;
	return 0;
}
