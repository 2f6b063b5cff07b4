/*
 * gc.c - store_gc(): drops content no key points at and blobs nothing
 * refers to, in one write transaction so that nothing can gain a reference
 * between the marking and the sweeping.
 *
 * A record that cannot be read makes the whole collection fail with
 * BG_ECORRUPT: a file or key record we cannot read might name something we
 * would otherwise delete.
 */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cache_int.h"

struct u64_set {
	uint64_t *v;
	size_t n;
	size_t cap;
};

struct victim {
	unsigned char sha[BG_SHA256_LEN];
	uint64_t blob;
};

struct gc_ctx {
	struct u64_set file_blobs;    /* named by a file record's "blob" */
	struct u64_set content_blobs; /* owned by content that stays */
	unsigned char (*keys)[BG_SHA256_LEN]; /* content digests keys point at */
	size_t nkeys;
	size_t keys_cap;
	struct victim *victims;       /* content nobody points at */
	size_t nvictims;
	size_t victims_cap;
};

struct gc_result {
	uint64_t entries;
	uint64_t bytes;
};

/* Makes room for one more element of size elem in *arr. */
static int grow(void **arr, size_t n, size_t *cap, size_t elem)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return 0;
	ncap = *cap != 0 ? *cap * 2 : 64;
	if (ncap > SIZE_MAX / elem)
		return BG_ENOMEM;
	p = realloc(*arr, ncap * elem);
	if (p == NULL)
		return BG_ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

static int u64_add(struct u64_set *s, uint64_t x)
{
	void *p = s->v;
	int rc = grow(&p, s->n, &s->cap, sizeof(*s->v));

	s->v = p;
	if (rc != 0)
		return rc;
	s->v[s->n++] = x;
	return 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a;
	uint64_t y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int u64_has(const struct u64_set *s, uint64_t x)
{
	return s->n > 0 && bsearch(&x, s->v, s->n, sizeof(*s->v), u64_cmp) != NULL;
}

static int sha_cmp(const void *a, const void *b)
{
	return memcmp(a, b, BG_SHA256_LEN);
}

static int gc_visit_file(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct gc_ctx *c = ctx;
	json_t *rec = NULL;
	json_t *blob;
	int rc;

	(void)txn;
	(void)k;
	rc = store_json_decode(v, &rec);
	if (rc != 0)
		return rc;
	/* The agent's schema: a file whose download has a blob names it in
	 * an integer field "blob". */
	blob = json_object_get(rec, "blob");
	if (json_is_integer(blob) && json_integer_value(blob) > 0)
		rc = u64_add(&c->file_blobs, (uint64_t)json_integer_value(blob));
	json_decref(rec);
	return rc;
}

static int gc_visit_key(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct gc_ctx *c = ctx;
	struct store_key key;
	void *p = c->keys;
	int rc;

	(void)txn;
	rc = store_key_decode(k, v, &key);
	if (rc != 0)
		return rc;
	rc = grow(&p, c->nkeys, &c->keys_cap, sizeof(*c->keys));
	c->keys = p;
	if (rc == 0)
		memcpy(c->keys[c->nkeys++], key.sha256, BG_SHA256_LEN);
	store_key_clear(&key);
	return rc;
}

static int gc_visit_content(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct gc_ctx *c = ctx;
	struct store_content rec;
	void *p = c->victims;
	int rc;

	(void)txn;
	if (k->mv_size != BG_SHA256_LEN)
		return BG_ECORRUPT;
	rc = store_content_decode(v, &rec);
	if (rc != 0)
		return rc;
	if (c->nkeys > 0 && bsearch(k->mv_data, c->keys, c->nkeys, BG_SHA256_LEN, sha_cmp) != NULL)
		return u64_add(&c->content_blobs, rec.blob);
	rc = grow(&p, c->nvictims, &c->victims_cap, sizeof(*c->victims));
	c->victims = p;
	if (rc != 0)
		return rc;
	memcpy(c->victims[c->nvictims].sha, k->mv_data, BG_SHA256_LEN);
	c->victims[c->nvictims].blob = rec.blob;
	c->nvictims++;
	return 0;
}

/* Deletes every blob that is in neither set.  The walk jumps from blob to
 * blob instead of stepping over every chunk of the blobs that stay. */
static int gc_sweep_blobs(struct bg_txn *txn, struct gc_ctx *c, struct gc_result *res)
{
	unsigned char key[STORE_BLOB_KEY_LEN];
	MDB_cursor *cur = NULL;
	uint64_t next = 0;
	uint64_t bytes;
	uint64_t blob;
	MDB_val k;
	MDB_val v;
	int rc;
	int mrc;

	rc = txn_check(txn, 1);
	if (rc != 0)
		goto out;
	mrc = mdb_cursor_open(txn->mtxn, txn->dbi[DB_BLOBS], &cur);
	if (mrc != 0) {
		rc = txn_fail(txn, mrc);
		goto out;
	}
	for (;;) {
		put_be64(key, next);
		put_be64(key + 8, 0);
		k.mv_data = key;
		k.mv_size = sizeof(key);
		mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (mrc == MDB_NOTFOUND)
			break;
		if (mrc != 0) {
			rc = txn_fail(txn, mrc);
			goto out;
		}
		if (k.mv_size != STORE_BLOB_KEY_LEN) {
			rc = BG_ECORRUPT;
			goto out;
		}
		blob = get_be64(k.mv_data);
		if (!u64_has(&c->content_blobs, blob) && !u64_has(&c->file_blobs, blob)) {
			rc = blob_drop(txn, blob, 0, NULL, &bytes);
			if (rc != 0)
				goto out;
			res->entries++;
			res->bytes += bytes;
		}
		if (blob == UINT64_MAX)
			break;
		next = blob + 1;
	}
out:
	mdb_cursor_close(cur);
	return rc;
}

static int gc_txn(struct bg_txn *txn, void *arg)
{
	struct gc_result *res = arg;
	struct gc_ctx c;
	uint64_t bytes;
	int rc;

	/* fn may run more than once (map growth): start from nothing. */
	memset(&c, 0, sizeof(c));
	res->entries = 0;
	res->bytes = 0;
	rc = txn_walk(txn, DB_FILES, NULL, 0, 0, gc_visit_file, &c);
	if (rc != 0)
		goto out;
	rc = txn_walk(txn, DB_KEYS, NULL, 0, 0, gc_visit_key, &c);
	if (rc != 0)
		goto out;
	if (c.nkeys > 0)
		qsort(c.keys, c.nkeys, BG_SHA256_LEN, sha_cmp);
	rc = txn_walk(txn, DB_CONTENT, NULL, 0, 0, gc_visit_content, &c);
	if (rc != 0)
		goto out;
	if (c.file_blobs.n > 0)
		qsort(c.file_blobs.v, c.file_blobs.n, sizeof(uint64_t), u64_cmp);
	if (c.content_blobs.n > 0)
		qsort(c.content_blobs.v, c.content_blobs.n, sizeof(uint64_t), u64_cmp);
	for (size_t i = 0; i < c.nvictims; i++) {
		struct store_content old;
		int have = txn_content_get(txn, c.victims[i].sha, &old) == 0;

		rc = txn_raw_del(txn, DB_CONTENT, c.victims[i].sha, BG_SHA256_LEN);
		if (rc == 0 && have)
			rc = idx_content_del(txn, c.victims[i].sha, &old);
		if (rc != 0)
			goto out;
		res->entries++;
		/* A file record may still name the blob (a job that has not
		 * been completed yet): the record goes, the bytes stay until
		 * the file record does. */
		if (u64_has(&c.file_blobs, c.victims[i].blob) ||
		    u64_has(&c.content_blobs, c.victims[i].blob))
			continue;
		rc = blob_drop(txn, c.victims[i].blob, 0, NULL, &bytes);
		if (rc != 0)
			goto out;
		res->bytes += bytes;
	}
	rc = gc_sweep_blobs(txn, &c, res);
out:
	free(c.file_blobs.v);
	free(c.content_blobs.v);
	free(c.keys);
	free(c.victims);
	return rc;
}

int store_gc(struct bg_store *st, uint64_t *freed_entries, uint64_t *freed_bytes)
{
	struct gc_result res = { 0, 0 };
	int rc;

	if (freed_entries != NULL)
		*freed_entries = 0;
	if (freed_bytes != NULL)
		*freed_bytes = 0;
	rc = store_update(st, gc_txn, &res);
	if (rc != 0)
		return rc;
	if (freed_entries != NULL)
		*freed_entries = res.entries;
	if (freed_bytes != NULL)
		*freed_bytes = res.bytes;
	return 0;
}
