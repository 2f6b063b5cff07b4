/*
 * verify.c - store_verify(): re-hashes every content entry and removes what
 * does not hold the bytes its digest names, with every key pointing at it;
 * the digests of the chunks of good entries are written where missing or
 * wrong (the pass hashes every byte anyway).
 *
 * The entries are listed in one read transaction, then each is read back in
 * short read transactions (store_read_content) so that a verify of a large
 * store never pins old pages for long and never blocks a writer.  Removal
 * happens in one write transaction per bad entry, after checking that the
 * record is still the one that was read: content replaced or removed by
 * somebody else meanwhile is left alone.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "cache.h"
#include "cache_int.h"

#define VERIFY_READ_BYTES (4 * STORE_CHUNK_BYTES) /* one read transaction's worth */

struct entry {
	unsigned char sha[BG_SHA256_LEN];
	uint64_t blob;
	uint64_t size;
	int problem; /* 0, or why the entry is bad */
	int damaged; /* the record itself could not be decoded */
};

struct entry_list {
	struct entry *v;
	size_t n, cap;
};

static int
entry_add(struct entry_list *l, const struct entry *e)
{
	if (l->n == l->cap) {
		size_t ncap = l->cap != 0 ? l->cap * 2 : 256;
		struct entry *p;

		if (ncap > SIZE_MAX / sizeof(*p))
			return BG_ENOMEM;
		if ((p = realloc(l->v, ncap * sizeof(*p))) == NULL)
			return BG_ENOMEM;
		l->v = p;
		l->cap = ncap;
	}
	l->v[l->n++] = *e;
	return 0;
}

static int
list_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct store_content c;
	struct entry e;

	(void)txn;
	memset(&e, 0, sizeof(e));
	if (k->mv_size != BG_SHA256_LEN)
		return 0; /* not a digest: nothing a key can name; left to the LMDB level */
	memcpy(e.sha, k->mv_data, BG_SHA256_LEN);
	if (ci_content_decode(v, &c) != 0) {
		e.problem = BG_ECORRUPT;
		e.damaged = 1;
	} else {
		e.blob = c.blob;
		e.size = c.size;
	}
	return entry_add(ctx, &e);
}

static int
list_txn(struct bg_txn *txn, void *arg)
{
	struct entry_list *l = arg;

	l->n = 0;
	return ci_walk(txn, DB_CONTENT, NULL, 0, 0, list_visit, l);
}

/* The digests of one entry's chunks, computed while it is re-hashed. */
struct piece_list {
	unsigned char *d;
	uint64_t n, cap;
};

static uint64_t
chunks_of(uint64_t size)
{
	return size / STORE_CHUNK_BYTES + (size % STORE_CHUNK_BYTES != 0);
}

/* Reads the content back and hashes it, whole and chunk by chunk (into
 * pl).  0 with e->problem set (or not); an error only when the store
 * itself fails. */
static int
check_entry(struct bg_store *st, struct entry *e, unsigned char *buf, uint64_t *hashed,
            struct piece_list *pl)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint64_t off = 0;
	int rc = 0;

	pl->n = 0;
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		rc = BG_ENOMEM;
		goto out;
	}
	if (chunks_of(e->size) > pl->cap) {
		uint64_t n = chunks_of(e->size);
		unsigned char *p;

		if (n > SIZE_MAX / STORE_PIECE_LEN ||
		    (p = realloc(pl->d, (size_t)n * STORE_PIECE_LEN)) == NULL) {
			rc = BG_ENOMEM;
			goto out;
		}
		pl->d = p;
		pl->cap = n;
	}
	while (off < e->size) {
		size_t want = e->size - off < VERIFY_READ_BYTES ? (size_t)(e->size - off)
		                                                : VERIFY_READ_BYTES;
		size_t got = 0;

		rc = store_read_content(st, e->sha, off, buf, want, &got);
		if (rc == BG_ECORRUPT || (rc == 0 && got != want)) {
			e->problem = BG_ECORRUPT; /* a chunk is missing or has the wrong size */
			rc = 0;
			goto out;
		}
		if (rc != 0)
			goto out; /* BG_ENOENT: removed meanwhile; the caller skips it */
		if (EVP_DigestUpdate(md, buf, got) != 1) {
			rc = BG_ENOMEM;
			goto out;
		}
		/* off is a multiple of the chunk size here (every read but the
		 * last is VERIFY_READ_BYTES): buf holds whole chunks. */
		for (size_t at = 0; at < got && pl->n < pl->cap; at += STORE_CHUNK_BYTES) {
			size_t n = got - at < STORE_CHUNK_BYTES ? got - at : STORE_CHUNK_BYTES;

			if ((rc = ci_sha256(buf + at, n, pl->d + pl->n++ * STORE_PIECE_LEN)) != 0)
				goto out;
		}
		off += got;
		*hashed += got;
	}
	if (EVP_DigestFinal_ex(md, d, &dlen) != 1 || dlen != BG_SHA256_LEN) {
		rc = BG_ENOMEM;
		goto out;
	}
	if (memcmp(d, e->sha, BG_SHA256_LEN) != 0)
		e->problem = BG_EDIGEST;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

/* Writes the digests of a good entry's chunks that are missing or wrong
 * (a stored digest that disagrees with bytes whose whole digest is right
 * is the digest's fault), if the record is still the one read.  A read
 * transaction first: most stores need no write at all. */
struct piece_fix {
	const struct entry *e;
	const struct piece_list *pl;
	int write;
	uint64_t fixed;
};

static int
piece_fix_txn(struct bg_txn *txn, void *arg)
{
	struct piece_fix *f = arg;
	unsigned char d[STORE_PIECE_LEN];
	struct store_content c;
	int rc;

	f->fixed = 0;
	rc = txn_content_get(txn, f->e->sha, &c);
	if (rc == BG_ENOENT || rc == BG_ECORRUPT)
		return 0; /* removed or damaged since: the next verify sees it */
	if (rc != 0)
		return rc;
	if (c.blob != f->e->blob || c.size != f->e->size)
		return 0; /* replaced meanwhile */
	for (uint64_t i = 0; i < f->pl->n; i++) {
		const unsigned char *want = f->pl->d + i * STORE_PIECE_LEN;

		rc = txn_piece_get(txn, c.blob, i, d);
		if (rc == 0 && memcmp(d, want, STORE_PIECE_LEN) == 0)
			continue;
		if (rc != 0 && rc != BG_ENOENT && rc != BG_ECORRUPT)
			return rc;
		f->fixed++;
		if (f->write && (rc = txn_piece_put(txn, c.blob, i, want)) != 0)
			return rc;
	}
	return 0;
}

static int
fix_pieces(struct bg_store *st, const struct entry *e, const struct piece_list *pl)
{
	struct piece_fix f = { .e = e, .pl = pl };
	int rc;

	if (pl->n != chunks_of(e->size))
		return 0;
	if ((rc = store_view(st, piece_fix_txn, &f)) != 0 || f.fixed == 0)
		return rc;
	f.write = 1;
	return store_update(st, piece_fix_txn, &f);
}

struct removal {
	const struct entry *e;
	struct store_verify_bad *bad;
	size_t cap_urls;
	int gone; /* the record changed meanwhile: nothing removed */
};

static int
add_url(struct removal *r, const char *url)
{
	struct store_verify_bad *b = r->bad;
	char *dup;

	if (b->nurls == r->cap_urls) {
		size_t ncap = r->cap_urls != 0 ? r->cap_urls * 2 : 4;
		char **p = realloc(b->urls, ncap * sizeof(*p));

		if (p == NULL)
			return BG_ENOMEM;
		b->urls = p;
		r->cap_urls = ncap;
	}
	if ((dup = strdup(url)) == NULL)
		return BG_ENOMEM;
	b->urls[b->nurls++] = dup;
	return 0;
}

static int
key_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct removal *r = ctx;
	struct store_key key;
	int rc;

	if (ci_key_decode(k, v, &key) != 0)
		return 0; /* damaged keys are found by the key pass */
	if (memcmp(key.sha256, r->e->sha, BG_SHA256_LEN) != 0) {
		store_key_clear(&key);
		return 0;
	}
	rc = add_url(r, key.url);
	store_key_clear(&key);
	if (rc != 0)
		return rc;
	{
		unsigned char hash[BG_SHA256_LEN];

		memcpy(hash, k->mv_data, BG_SHA256_LEN);
		return ci_key_del_raw(txn, hash);
	}
}

static void
bad_clear(struct store_verify_bad *b)
{
	for (size_t i = 0; i < b->nurls; i++)
		free(b->urls[i]);
	free(b->urls);
	b->urls = NULL;
	b->nurls = 0;
}

static int
remove_txn(struct bg_txn *txn, void *arg)
{
	struct removal *r = arg;
	struct store_content c;
	int rc;

	bad_clear(r->bad);
	r->cap_urls = 0;
	r->gone = 0;
	rc = txn_content_get(txn, r->e->sha, &c);
	if (rc == BG_ENOENT) {
		r->gone = 1;
		return 0;
	}
	if (rc == BG_ECORRUPT) {
		if (!r->e->damaged) {
			r->gone = 1; /* damaged since: the next verify sees it */
			return 0;
		}
	} else if (rc != 0) {
		return rc;
	} else if (r->e->damaged || c.blob != r->e->blob) {
		r->gone = 1; /* replaced meanwhile */
		return 0;
	}
	if ((rc = txn_content_del(txn, r->e->sha)) != 0)
		return rc;
	return ci_walk(txn, DB_KEYS, NULL, 0, 0, key_visit, r);
}

/* Keys that cannot be decoded, or that name content the store does not
 * hold, are removed: no lookup could use them.  What was removed is kept in
 * a list and reported after the commit (the transaction may run twice). */
struct key_pass {
	struct store_verify_bad *v;
	size_t n, cap;
	uint64_t keys;
};

static void
key_pass_clear(struct key_pass *p)
{
	for (size_t i = 0; i < p->n; i++)
		bad_clear(&p->v[i]);
	p->n = 0;
	p->keys = 0;
}

static int
stray_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct key_pass *p = ctx;
	struct store_verify_bad *bad;
	struct store_content c;
	struct store_key key;
	int rc;

	p->keys++;
	memset(&key, 0, sizeof(key));
	if (ci_key_decode(k, v, &key) == 0) {
		rc = txn_content_get(txn, key.sha256, &c);
		/* Present, or damaged (the content pass's business). */
		if (rc != BG_ENOENT) {
			store_key_clear(&key);
			return rc == BG_ECORRUPT ? 0 : rc;
		}
	}
	if (p->n == p->cap) {
		size_t ncap = p->cap != 0 ? p->cap * 2 : 16;
		struct store_verify_bad *nv = realloc(p->v, ncap * sizeof(*nv));

		if (nv == NULL) {
			store_key_clear(&key);
			return BG_ENOMEM;
		}
		p->v = nv;
		p->cap = ncap;
	}
	bad = &p->v[p->n++];
	memset(bad, 0, sizeof(*bad));
	bad->is_key = 1;
	if (key.url == NULL) {
		bad->problem = BG_ECORRUPT;
	} else {
		bad->problem = BG_ENOENT;
		memcpy(bad->sha256, key.sha256, BG_SHA256_LEN);
		bad->size = key.size;
		if ((bad->urls = malloc(sizeof(*bad->urls))) == NULL) {
			store_key_clear(&key);
			return BG_ENOMEM;
		}
		bad->urls[0] = key.url;
		bad->nurls = 1;
		key.url = NULL; /* transferred */
	}
	store_key_clear(&key);
	if (k->mv_size != BG_SHA256_LEN)
		return ci_raw_del(txn, DB_KEYS, k->mv_data, k->mv_size);
	{
		unsigned char hash[BG_SHA256_LEN];

		memcpy(hash, k->mv_data, BG_SHA256_LEN);
		return ci_key_del_raw(txn, hash);
	}
}

static int
stray_txn(struct bg_txn *txn, void *arg)
{
	struct key_pass *p = arg;

	key_pass_clear(p);
	return ci_walk(txn, DB_KEYS, NULL, 0, 0, stray_visit, p);
}

static int
reindex_txn(struct bg_txn *txn, void *arg)
{
	(void)arg;
	return ci_records_reindex(txn);
}

int
store_verify(struct bg_store *st, int (*fn)(const struct store_verify_bad *bad, void *arg),
             void *arg, struct store_verify_stats *stats)
{
	struct store_verify_stats local;
	struct entry_list l = { NULL, 0, 0 };
	struct key_pass kp = { NULL, 0, 0, 0 };
	struct piece_list pl = { NULL, 0, 0 };
	unsigned char *buf = NULL;
	int rc, cb_rc = 0;

	if (st == NULL)
		return BG_EINVAL;
	if (stats == NULL)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	if ((buf = malloc(VERIFY_READ_BYTES)) == NULL) {
		rc = BG_ENOMEM;
		goto out;
	}
	if ((rc = store_view(st, list_txn, &l)) != 0)
		goto out;
	for (size_t i = 0; i < l.n; i++) {
		struct entry *e = &l.v[i];
		struct store_verify_bad bad;
		struct removal r;

		if (e->problem == 0) {
			rc = check_entry(st, e, buf, &stats->bytes, &pl);
			if (rc == BG_ENOENT)
				continue; /* removed by somebody else meanwhile */
			if (rc != 0)
				goto out;
		}
		stats->entries++;
		if (e->problem == 0) {
			/* The bytes are good: their piece list is completed
			 * (content stored before version 4) and put right. */
			if ((rc = fix_pieces(st, e, &pl)) != 0)
				goto out;
			continue;
		}
		memset(&bad, 0, sizeof(bad));
		memcpy(bad.sha256, e->sha, BG_SHA256_LEN);
		bad.size = e->size;
		bad.problem = e->problem;
		memset(&r, 0, sizeof(r));
		r.e = e;
		r.bad = &bad;
		rc = store_update(st, remove_txn, &r);
		if (rc == 0 && !r.gone) {
			stats->corrupt++;
			stats->keys_removed += bad.nurls;
			if (fn != NULL && cb_rc == 0)
				cb_rc = fn(&bad, arg);
		}
		bad_clear(&bad);
		if (rc != 0)
			goto out;
	}
	if ((rc = store_update(st, stray_txn, &kp)) != 0)
		goto out;
	stats->keys = kp.keys;
	/* The indexes and counters are derived from the records: rebuilt,
	 * they are right whatever happened to them. */
	if ((rc = store_update(st, reindex_txn, NULL)) != 0)
		goto out;
	for (size_t i = 0; i < kp.n; i++) {
		stats->keys_removed++;
		if (fn != NULL && cb_rc == 0)
			cb_rc = fn(&kp.v[i], arg);
	}
out:
	key_pass_clear(&kp);
	free(kp.v);
	free(pl.d);
	free(l.v);
	free(buf);
	return rc != 0 ? rc : cb_rc;
}
