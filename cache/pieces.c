/*
 * pieces.c - the SHA-256 of each chunk of a blob, in the database
 * "pieces" keyed like the chunk (blob id BE64, chunk index BE64).  The
 * agent writes a digest in the transaction that writes its chunk;
 * ci_blob_drop() (store.c) deletes digests with their chunks, so a digest
 * never outlives the bytes it describes.  Content stored before the
 * database existed gets its list lazily (store_pieces_fill, store_verify).
 *
 * A reader of a version 3 store has no "pieces" (store.c tolerates it):
 * every digest is then absent.
 */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cache_int.h"

/* Chunks hashed by one store_pieces_fill() call at most, whatever the
 * caller asks (about 1 GiB): the call returns and says what is left. */
#define PIECES_FILL_MAX 4096
/* Chunks read per read transaction while filling (as read.c). */
#define PIECES_FILL_PER_TXN 4

static void
piece_key(unsigned char key[STORE_BLOB_KEY_LEN], uint64_t blob, uint64_t index)
{
	put_be64(key, blob);
	put_be64(key + 8, index);
}

static bool
have_db(const struct bg_txn *txn)
{
	return txn->dbi[DB_PIECES] != 0;
}

int
txn_piece_put(struct bg_txn *txn, uint64_t blob, uint64_t index,
              const unsigned char d[STORE_PIECE_LEN])
{
	unsigned char key[STORE_BLOB_KEY_LEN];
	int rc;

	if (blob == 0 || d == NULL)
		return BG_EINVAL;
	if ((rc = ci_txn_check(txn, 1)) != 0)
		return rc;
	/* only a read-only opener lacks the database, and it cannot write */
	if (!have_db(txn))
		return BG_ERDONLY;
	piece_key(key, blob, index);
	return ci_raw_put(txn, DB_PIECES, key, sizeof(key), d, STORE_PIECE_LEN);
}

int
txn_piece_get(struct bg_txn *txn, uint64_t blob, uint64_t index, unsigned char d[STORE_PIECE_LEN])
{
	unsigned char key[STORE_BLOB_KEY_LEN];
	MDB_val v;
	int rc;

	if (blob == 0 || d == NULL)
		return BG_EINVAL;
	if ((rc = ci_txn_check(txn, 0)) != 0)
		return rc;
	if (!have_db(txn))
		return BG_ENOENT;
	piece_key(key, blob, index);
	if ((rc = ci_raw_get(txn, DB_PIECES, key, sizeof(key), &v)) != 0)
		return rc;
	if (v.mv_size != STORE_PIECE_LEN)
		return BG_ECORRUPT;
	memcpy(d, v.mv_data, STORE_PIECE_LEN);
	return 0;
}

/* A walk over the digests of one blob from a first index. */
struct run_ctx {
	uint64_t next;         /* the index the run expects next */
	uint64_t end;          /* stop before this index */
	unsigned char *out;    /* digests copied here, or NULL: */
	uint64_t n;            /* how many so far */
	bool gaps;             /* count every digest below end, not only a run */
};

#define RUN_STOP 1 /* a visit's "enough", never returned to callers */

static int
run_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct run_ctx *c = ctx;
	uint64_t index;

	(void)txn;
	if (k->mv_size != STORE_BLOB_KEY_LEN || v->mv_size != STORE_PIECE_LEN)
		return BG_ECORRUPT;
	index = get_be64((const unsigned char *)k->mv_data + 8);
	if (index >= c->end || (!c->gaps && index != c->next))
		return RUN_STOP;
	if (c->out != NULL)
		memcpy(c->out + c->n * STORE_PIECE_LEN, v->mv_data, STORE_PIECE_LEN);
	c->n++;
	c->next = index + 1;
	return c->n == UINT64_MAX ? RUN_STOP : 0;
}

static int
run_walk(struct bg_txn *txn, uint64_t blob, uint64_t first, struct run_ctx *c)
{
	unsigned char start[STORE_BLOB_KEY_LEN];
	int rc;

	if ((rc = ci_txn_check(txn, 0)) != 0)
		return rc;
	if (!have_db(txn) || first >= c->end)
		return 0;
	piece_key(start, blob, first);
	rc = ci_walk(txn, DB_PIECES, start, sizeof(start), 8, run_visit, c);
	return rc == RUN_STOP ? 0 : rc;
}

int
txn_pieces_read(struct bg_txn *txn, uint64_t blob, uint64_t first, uint64_t max,
                unsigned char *out, uint64_t *n)
{
	struct run_ctx c = { .next = first, .out = out };
	int rc;

	if (n != NULL)
		*n = 0;
	if (blob == 0 || n == NULL || (out == NULL && max > 0))
		return BG_EINVAL;
	/* chunks first .. first + max - 1, without running past the last index */
	c.end = max > UINT64_MAX - first ? UINT64_MAX : first + max;
	if ((rc = run_walk(txn, blob, first, &c)) != 0)
		return rc;
	*n = c.n;
	return 0;
}

int
ci_pieces_count(struct bg_txn *txn, uint64_t blob, uint64_t chunks, uint64_t *n)
{
	struct run_ctx c = { .end = chunks, .gaps = true };
	int rc = run_walk(txn, blob, 0, &c);

	*n = rc == 0 ? c.n : 0;
	return rc;
}

/* Chunks of content of size bytes (an empty file has none). */
static uint64_t
chunks_of(uint64_t size)
{
	return size / STORE_CHUNK_BYTES + (size % STORE_CHUNK_BYTES != 0);
}

int
txn_content_pieces_complete(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                            bool *complete)
{
	struct store_content c;
	uint64_t n;
	int rc;

	if (complete == NULL)
		return BG_EINVAL;
	*complete = false;
	if ((rc = txn_content_get(txn, sha, &c)) != 0 ||
	    (rc = ci_pieces_count(txn, c.blob, chunks_of(c.size), &n)) != 0)
		return rc;
	*complete = n == chunks_of(c.size);
	return 0;
}

/* ---- Lazy lists --------------------------------------------------------------
 * One call: a read transaction finds the chunks without a digest (at most
 * want of them), read transactions of a few chunks each hash them, and one
 * write transaction stores the digests if the content record is still the
 * one read (content is never rewritten in place: same blob, same bytes). */

struct fill {
	const unsigned char *sha;
	struct store_content rec;
	uint64_t want;           /* chunks to hash in this call */
	uint64_t *idx;           /* the chunks found without a digest */
	unsigned char *d;        /* their digests, as computed */
	uint64_t n, done;        /* found; hashed so far */
	uint64_t left;           /* still without a digest after the write */
};

struct gap_ctx {
	struct fill *f;
	uint64_t next;
	uint64_t end;
};

static int
gap_add(struct gap_ctx *g, uint64_t upto)
{
	for (; g->next < upto && g->f->n < g->f->want; g->next++)
		g->f->idx[g->f->n++] = g->next;
	return g->f->n == g->f->want ? RUN_STOP : 0;
}

static int
gap_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct gap_ctx *g = ctx;
	uint64_t index;
	int rc;

	(void)txn;
	(void)v;
	if (k->mv_size != STORE_BLOB_KEY_LEN)
		return BG_ECORRUPT;
	index = get_be64((const unsigned char *)k->mv_data + 8);
	if (index >= g->end)
		return RUN_STOP;
	if ((rc = gap_add(g, index)) != 0)
		return rc;
	g->next = index + 1;
	return 0;
}

static int
fill_find_txn(struct bg_txn *txn, void *arg)
{
	struct fill *f = arg;
	struct gap_ctx g = { .f = f };
	unsigned char start[STORE_BLOB_KEY_LEN];
	int rc;

	f->n = 0;
	if ((rc = txn_content_get(txn, f->sha, &f->rec)) != 0)
		return rc;
	g.end = chunks_of(f->rec.size);
	if (!have_db(txn))
		return BG_ERDONLY;
	piece_key(start, f->rec.blob, 0);
	if (f->want > 0) {
		rc = ci_walk(txn, DB_PIECES, start, sizeof(start), 8, gap_visit, &g);
		if (rc != 0 && rc != RUN_STOP)
			return rc;
		/* the chunks after the last digest (none once want is reached) */
		(void)gap_add(&g, g.end);
	}
	return 0;
}

static int
fill_hash_txn(struct bg_txn *txn, void *arg)
{
	struct fill *f = arg;
	struct store_content c;
	int rc;

	if ((rc = txn_content_get(txn, f->sha, &c)) != 0)
		return rc;
	if (c.blob != f->rec.blob || c.size != f->rec.size)
		return BG_EAGAIN; /* replaced meanwhile: start over */
	for (int i = 0; i < PIECES_FILL_PER_TXN && f->done < f->n; i++, f->done++) {
		uint64_t index = f->idx[f->done];
		uint64_t rest = c.size - index * STORE_CHUNK_BYTES;
		size_t expect = rest < STORE_CHUNK_BYTES ? (size_t)rest : STORE_CHUNK_BYTES;
		const void *data;
		size_t len;

		rc = txn_blob_get(txn, c.blob, index, &data, &len);
		if (rc == BG_ENOENT || (rc == 0 && len != expect))
			return BG_ECORRUPT; /* the content is damaged: verify's business */
		if (rc != 0)
			return rc;
		if ((rc = ci_sha256(data, len, f->d + f->done * STORE_PIECE_LEN)) != 0)
			return rc;
	}
	return 0;
}

static int
fill_write_txn(struct bg_txn *txn, void *arg)
{
	struct fill *f = arg;
	struct store_content c;
	uint64_t have;
	int rc;

	if ((rc = txn_content_get(txn, f->sha, &c)) != 0)
		return rc;
	if (c.blob == f->rec.blob && c.size == f->rec.size) {
		for (uint64_t i = 0; i < f->n; i++)
			if ((rc = txn_piece_put(txn, c.blob, f->idx[i], f->d + i * STORE_PIECE_LEN)) != 0)
				return rc;
	}
	if ((rc = ci_pieces_count(txn, c.blob, chunks_of(c.size), &have)) != 0)
		return rc;
	f->left = chunks_of(c.size) - have;
	return 0;
}

int
store_pieces_fill(struct bg_store *st, const unsigned char sha[BG_SHA256_LEN], uint64_t max_chunks,
                  uint64_t *left)
{
	struct fill f;
	int rc;

	if (left != NULL)
		*left = 0;
	if (st == NULL || sha == NULL)
		return BG_EINVAL;
	if (st->flags & STORE_RDONLY)
		return BG_ERDONLY;
	memset(&f, 0, sizeof(f));
	f.sha = sha;
	f.want = max_chunks < PIECES_FILL_MAX ? max_chunks : PIECES_FILL_MAX;
	if (f.want > 0 && ((f.idx = malloc(f.want * sizeof(*f.idx))) == NULL ||
	                   (f.d = malloc(f.want * STORE_PIECE_LEN)) == NULL)) {
		rc = BG_ENOMEM;
		goto out;
	}
	if ((rc = store_view(st, fill_find_txn, &f)) != 0)
		goto out;
	while (f.done < f.n) {
		if ((rc = store_view(st, fill_hash_txn, &f)) != 0)
			break;
	}
	/* Replaced between two reads: nothing is written this time (the
	 * write below sees the new record and counts what it lacks). */
	if (rc == BG_EAGAIN) {
		f.n = 0;
		rc = 0;
	}
	if (rc != 0)
		goto out;
	if ((rc = store_update(st, fill_write_txn, &f)) != 0)
		goto out;
	if (left != NULL)
		*left = f.left;
out:
	free(f.idx);
	free(f.d);
	return rc;
}

/* ---- Filling a whole store, a little at a time ----------------------------- */

/* Content records looked at by one store_pieces_fill_next() call at most. */
#define PIECES_SCAN_MAX 4096

struct scan_ctx {
	uint64_t seen;
	bool found;                        /* sha: content whose list lacks digests */
	bool more;                         /* stopped at the cap: resume from next */
	unsigned char sha[BG_SHA256_LEN];
	unsigned char next[BG_SHA256_LEN];
};

static int
scan_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct scan_ctx *s = ctx;
	struct store_content c;
	uint64_t have;
	int rc;

	if (k->mv_size != BG_SHA256_LEN)
		return 0; /* store_verify's business */
	if (s->seen++ == PIECES_SCAN_MAX) {
		memcpy(s->next, k->mv_data, BG_SHA256_LEN);
		s->more = true;
		return RUN_STOP;
	}
	if (ci_content_decode(v, &c) != 0)
		return 0;
	if ((rc = ci_pieces_count(txn, c.blob, chunks_of(c.size), &have)) != 0)
		return rc;
	if (have == chunks_of(c.size))
		return 0;
	memcpy(s->sha, k->mv_data, BG_SHA256_LEN);
	s->found = true;
	return RUN_STOP;
}

static int
scan_txn(struct bg_txn *txn, void *arg)
{
	struct scan_ctx *s = arg;
	int rc;

	if (!have_db(txn))
		return BG_ERDONLY;
	rc = ci_walk(txn, DB_CONTENT, s->next, BG_SHA256_LEN, 0, scan_visit, s);
	return rc == RUN_STOP ? 0 : rc;
}

/* The digest after sha in key order; false past the last one. */
static bool
sha_successor(unsigned char sha[BG_SHA256_LEN])
{
	for (size_t i = BG_SHA256_LEN; i-- > 0;)
		if (++sha[i] != 0)
			return true;
	return false;
}

int
store_pieces_fill_next(struct bg_store *st, unsigned char from[BG_SHA256_LEN],
                       uint64_t max_chunks, bool *done)
{
	struct scan_ctx s;
	uint64_t left = 0;
	int rc;

	if (st == NULL || from == NULL || done == NULL)
		return BG_EINVAL;
	*done = false;
	if (st->flags & STORE_RDONLY)
		return BG_ERDONLY;
	memset(&s, 0, sizeof(s));
	memcpy(s.next, from, BG_SHA256_LEN);
	if ((rc = store_view(st, scan_txn, &s)) != 0)
		return rc;
	if (!s.found) {
		if (s.more)
			memcpy(from, s.next, BG_SHA256_LEN);
		else
			*done = true;
		return 0;
	}
	rc = store_pieces_fill(st, s.sha, max_chunks, &left);
	if (rc == BG_ENOENT) /* removed since the scan */
		rc = 0, left = 0;
	if (rc != 0)
		return rc;
	memcpy(from, s.sha, BG_SHA256_LEN);
	/* An entry whose list stays short (max_chunks 0, or chunks that
	 * cannot be read: store_verify's business) is passed over. */
	if ((left == 0 || max_chunks == 0) && !sha_successor(from))
		*done = true;
	return 0;
}
