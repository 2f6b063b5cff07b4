/*
 * test_pieces.c - unit tests of the store's fleet records (cache/): piece
 * digests and how they go with their chunks, downloads in progress and
 * reading them while they grow, the version 4 format and its upgrade,
 * fetch policies, and the version 2 answer signatures.
 *
 * Every test works in a fresh mkdtemp() home under /tmp, removed at the
 * end.  Damaged records and older formats are written with plain LMDB
 * calls while the store is closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "cache.h"
#include "check.h"

#define CHECK_RC(expr, want)                                                           \
	do {                                                                           \
		int rc_ = (expr);                                                      \
		int want_ = (want);                                                    \
		if (!check_report(rc_ == want_, __FILE__, __LINE__, #expr " == " #want)) \
			fprintf(stderr, "    got %s (%d), want %s (%d)\n", bg_err_name(rc_), \
			        rc_, bg_err_name(want_), want_);                       \
	} while (0)
#define CHECK_OK(expr) CHECK_RC(expr, 0)

#define JOB_A "aaaaaaaa-0000-4000-8000-000000000001"
#define MIB ((uint64_t)1 << 20)
#define CH STORE_CHUNK_BYTES
#define URL_A "https://origin.example/a.iso"
#define URL_B "https://origin.example/b.iso"

/* ---- Helpers ------------------------------------------------------------- */

/* The agent's reading of a file record for store_gc(): "blob" names one. */
static int test_blob_of(const void *rec, size_t len, uint64_t *blob)
{
	json_t *j = json_loadb(rec, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
	json_int_t b = json_integer_value(json_object_get(j, "blob"));
	int rc = json_is_object(j) ? 0 : BG_ECORRUPT;

	*blob = b > 0 ? (uint64_t)b : 0;
	json_decref(j);
	return rc;
}

static char *home_new(void)
{
	char tmpl[] = "/tmp/bgpieces-test-XXXXXX";
	char *dir = mkdtemp(tmpl);

	if (dir == NULL) {
		perror("mkdtemp");
		exit(2);
	}
	return strdup(dir);
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path);
}

static void home_free(char *home)
{
	if (home == NULL)
		return;
	if (nftw(home, rm_entry, 8, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "cannot remove %s: %s\n", home, strerror(errno));
	free(home);
}

static char *home_file(const char *home, const char *name)
{
	static char path[4096];

	snprintf(path, sizeof(path), "%s/%s", home, name);
	return path;
}

static struct bg_store *open_rw(const char *home)
{
	struct bg_store *st = NULL;

	CHECK_OK(store_open(home, 0, NULL, &st));
	return st;
}

static unsigned char *pattern_buf(uint64_t seed, size_t len)
{
	unsigned char *p = malloc(len ? len : 1);

	for (size_t i = 0; i < len; i++) {
		uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;

		x ^= x >> 29;
		x *= 0xbf58476d1ce4e5b9ull;
		x ^= x >> 32;
		p[i] = (unsigned char)x;
	}
	return p;
}

/* Runs ops on a closed store with raw LMDB: db NULL drops nothing; del
 * means mdb_drop(db, 1), otherwise one record is written (data NULL
 * deletes it).  Returns the LMDB code. */
static int raw_op(const char *home, const char *db, int drop, const void *key, size_t klen,
                  const void *data, size_t dlen)
{
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	MDB_dbi dbi;
	MDB_val k = { klen, (void *)key };
	MDB_val v = { dlen, (void *)data };
	int rc;

	rc = mdb_env_create(&env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(env, 16);
	if (rc == 0)
		rc = mdb_env_set_mapsize(env, 1024 * MIB);
	if (rc == 0)
		rc = mdb_env_open(env, home_file(home, "store.mdb"), MDB_NOSUBDIR, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, 0, &txn);
	if (rc == 0)
		rc = mdb_dbi_open(txn, db, drop ? 0 : MDB_CREATE, &dbi);
	if (rc == 0 && drop)
		rc = mdb_drop(txn, dbi, 1);
	else if (rc == 0)
		rc = data != NULL ? mdb_put(txn, dbi, &k, &v, 0) : mdb_del(txn, dbi, &k, NULL);
	if (rc == 0) {
		rc = mdb_txn_commit(txn);
		txn = NULL;
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return rc;
}

/* Whether the named database exists (raw LMDB, store closed). */
static int raw_has_db(const char *home, const char *db, uint64_t *version)
{
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	MDB_dbi dbi;
	MDB_val k = { 7, "version" }, v;
	int rc;

	*version = 0;
	rc = mdb_env_create(&env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(env, 16);
	if (rc == 0)
		rc = mdb_env_open(env, home_file(home, "store.mdb"), MDB_NOSUBDIR | MDB_RDONLY, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc == 0 && mdb_dbi_open(txn, "meta", 0, &dbi) == 0 && mdb_get(txn, dbi, &k, &v) == 0 &&
	    v.mv_size == 8)
		*version = ((unsigned char *)v.mv_data)[0];
	if (rc == 0)
		rc = mdb_dbi_open(txn, db, 0, &dbi);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return rc;
}

static void version_set(const char *home, unsigned char version)
{
	unsigned char buf[8] = { version };

	CHECK_EQ_INT(raw_op(home, "meta", 0, "version", 7, buf, 8), 0);
}

static void url_hash(const char *url, unsigned char h[BG_SHA256_LEN])
{
	bg_sha256(url, strlen(url), h);
}

/* A blob of len bytes of pattern(seed), committed as content (with a key
 * naming it, so that gc keeps it) or only as chunks (content 0); digests
 * of its chunks when pieces. */
struct blob_put {
	const unsigned char *data;
	size_t len;
	int content, key, pieces;
	const char *url;
	uint64_t blob;
	unsigned char sha[BG_SHA256_LEN];
};

static int blob_put_fn(struct bg_txn *txn, void *arg)
{
	struct blob_put *p = arg;
	int rc = txn_blob_new(txn, &p->blob);

	for (size_t off = 0; rc == 0 && off < p->len; off += CH) {
		size_t n = p->len - off < CH ? p->len - off : CH;
		unsigned char d[BG_SHA256_LEN];

		rc = txn_blob_put(txn, p->blob, off / CH, p->data + off, n);
		if (rc == 0 && p->pieces) {
			bg_sha256(p->data + off, n, d);
			rc = txn_piece_put(txn, p->blob, off / CH, d);
		}
	}
	bg_sha256(p->data, p->len, p->sha);
	if (rc == 0 && p->content) {
		struct store_content c = { .blob = p->blob, .size = p->len, .created = 1,
		                           .last_used_ns = 2 };

		rc = txn_content_put(txn, p->sha, &c);
	}
	if (rc == 0 && p->key) {
		struct store_key k = { .url = (char *)p->url, .size = p->len, .stored = 1,
		                       .validated = 1 };

		memcpy(k.sha256, p->sha, BG_SHA256_LEN);
		rc = txn_key_put(txn, &k);
	}
	return rc;
}

static int put_blob(struct bg_store *st, struct blob_put *p)
{
	return store_update(st, blob_put_fn, p);
}

/* ---- Pieces -------------------------------------------------------------- */

struct pieces_ctx {
	uint64_t blob;
	unsigned char d[6][BG_SHA256_LEN];
};

static int pieces_put_fn(struct bg_txn *txn, void *arg)
{
	struct pieces_ctx *c = arg;
	int rc = txn_blob_new(txn, &c->blob);

	/* a blob before it, without digests */
	if (rc == 0)
		rc = txn_blob_new(txn, &c->blob);
	/* chunks 0, 1, 2 and 4: a gap at 3 */
	for (int i = 0; rc == 0 && i < 5; i++)
		if (i != 3)
			rc = txn_piece_put(txn, c->blob, (uint64_t)i, c->d[i]);
	CHECK_RC(txn_piece_put(txn, 0, 0, c->d[0]), BG_EINVAL);
	CHECK_RC(txn_piece_put(txn, c->blob, 0, NULL), BG_EINVAL);
	return rc;
}

static int pieces_check_fn(struct bg_txn *txn, void *arg)
{
	struct pieces_ctx *c = arg;
	unsigned char d[BG_SHA256_LEN], out[6 * BG_SHA256_LEN];
	uint64_t n = 99;

	CHECK_OK(txn_piece_get(txn, c->blob, 1, d));
	CHECK_EQ_MEM(d, c->d[1], BG_SHA256_LEN);
	CHECK_RC(txn_piece_get(txn, c->blob, 3, d), BG_ENOENT);
	CHECK_RC(txn_piece_get(txn, c->blob + 1, 0, d), BG_ENOENT);
	/* a read stops at the gap */
	CHECK_OK(txn_pieces_read(txn, c->blob, 0, 6, out, &n));
	CHECK_EQ_INT(n, 3);
	CHECK_EQ_MEM(out, c->d[0], BG_SHA256_LEN);
	CHECK_EQ_MEM(out + 2 * BG_SHA256_LEN, c->d[2], BG_SHA256_LEN);
	CHECK_OK(txn_pieces_read(txn, c->blob, 0, 2, out, &n));
	CHECK_EQ_INT(n, 2);
	CHECK_OK(txn_pieces_read(txn, c->blob, 1, 6, out, &n));
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_MEM(out, c->d[1], BG_SHA256_LEN);
	CHECK_OK(txn_pieces_read(txn, c->blob, 3, 6, out, &n));
	CHECK_EQ_INT(n, 0);
	CHECK_OK(txn_pieces_read(txn, c->blob, 4, 6, out, &n));
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_MEM(out, c->d[4], BG_SHA256_LEN);
	CHECK_OK(txn_pieces_read(txn, c->blob, 5, 6, out, &n));
	CHECK_EQ_INT(n, 0);
	/* the next blob's digests are not the previous one's */
	CHECK_OK(txn_pieces_read(txn, c->blob - 1, 0, 6, out, &n));
	CHECK_EQ_INT(n, 0);
	CHECK_OK(txn_pieces_read(txn, c->blob, 0, 0, NULL, &n));
	CHECK_EQ_INT(n, 0);
	CHECK_RC(txn_pieces_read(txn, 0, 0, 1, out, &n), BG_EINVAL);
	return 0;
}

static int pieces_ro_fn(struct bg_txn *txn, void *arg)
{
	struct pieces_ctx *c = arg;

	CHECK_RC(txn_piece_put(txn, c->blob, 9, c->d[0]), BG_ERDONLY);
	return 0;
}

static void test_pieces(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home);
	struct pieces_ctx c;

	memset(&c, 0, sizeof(c));
	for (int i = 0; i < 6; i++)
		memset(c.d[i], 0x10 + i, BG_SHA256_LEN);
	CHECK_OK(store_update(st, pieces_put_fn, &c));
	CHECK_OK(store_view(st, pieces_check_fn, &c));
	CHECK_OK(store_view(st, pieces_ro_fn, &c));
	store_close(st);
	home_free(home);
}

/* Truncating a blob and deleting content take the digests along. */
struct drop_ctx {
	struct blob_put *a, *b;
};

static int drop_fn(struct bg_txn *txn, void *arg)
{
	struct drop_ctx *c = arg;
	unsigned char d[BG_SHA256_LEN];
	bool complete = false;

	CHECK_OK(txn_content_pieces_complete(txn, c->a->sha, &complete));
	CHECK(complete);
	CHECK_OK(txn_blob_truncate(txn, c->b->blob, 1));
	CHECK_OK(txn_piece_get(txn, c->b->blob, 0, d));
	CHECK_RC(txn_piece_get(txn, c->b->blob, 1, d), BG_ENOENT);
	CHECK_RC(txn_piece_get(txn, c->b->blob, 2, d), BG_ENOENT);
	CHECK_OK(txn_content_del(txn, c->a->sha));
	CHECK_RC(txn_piece_get(txn, c->a->blob, 0, d), BG_ENOENT);
	CHECK_RC(txn_piece_get(txn, c->a->blob, 2, d), BG_ENOENT);
	CHECK_RC(txn_content_pieces_complete(txn, c->a->sha, &complete), BG_ENOENT);
	return 0;
}

static void test_pieces_go_with_chunks(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home);
	unsigned char *data = pattern_buf(1, 2 * CH + 100);
	struct blob_put a = { .data = data, .len = 2 * CH + 100, .content = 1, .pieces = 1 };
	struct blob_put b = { .data = data, .len = 3 * CH, .pieces = 1 };
	struct drop_ctx c = { &a, &b };

	b.len = 2 * CH + 100;
	CHECK_OK(put_blob(st, &a));
	CHECK_OK(put_blob(st, &b));
	CHECK_OK(store_update(st, drop_fn, &c));
	store_close(st);
	free(data);
	home_free(home);
}

/* ---- Lazy piece lists ---------------------------------------------------- */

struct fill_check {
	struct blob_put *p;
	uint64_t have;
	bool complete;
};

static int fill_check_fn(struct bg_txn *txn, void *arg)
{
	struct fill_check *c = arg;
	unsigned char out[8 * BG_SHA256_LEN], d[BG_SHA256_LEN];
	uint64_t n = 0;

	CHECK_OK(txn_content_pieces_complete(txn, c->p->sha, &c->complete));
	CHECK_OK(txn_pieces_read(txn, c->p->blob, 0, 8, out, &n));
	c->have = n;
	for (uint64_t i = 0; i < n; i++) {
		size_t len = i * CH + CH <= c->p->len ? CH : c->p->len - i * CH;

		bg_sha256(c->p->data + i * CH, len, d);
		CHECK_EQ_MEM(out + i * BG_SHA256_LEN, d, BG_SHA256_LEN);
	}
	return 0;
}

/* A digest past the content's last chunk (left by a longer blob) does
 * not hide the chunks before it. */
static int stray_piece_fn(struct bg_txn *txn, void *arg)
{
	struct blob_put *q = arg;
	unsigned char d[BG_SHA256_LEN];
	int rc = blob_put_fn(txn, q);

	memset(d, 1, sizeof(d));
	return rc != 0 ? rc : txn_piece_put(txn, q->blob, 5, d);
}

static void test_pieces_fill(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home), *ro = NULL;
	size_t len = 5 * CH + 777;
	unsigned char *data = pattern_buf(2, len);
	struct blob_put p = { .data = data, .len = len, .content = 1, .key = 1, .url = URL_A };
	struct blob_put q = { .data = data + 1, .len = 2 * CH, .content = 1, .key = 1, .url = URL_B };
	struct fill_check c = { .p = &p };
	unsigned char absent[BG_SHA256_LEN];
	uint64_t left = 99;

	CHECK_OK(put_blob(st, &p));
	CHECK_OK(store_view(st, fill_check_fn, &c));
	CHECK(!c.complete);
	CHECK_EQ_INT(c.have, 0);
	/* 6 chunks, 2 per call */
	CHECK_OK(store_pieces_fill(st, p.sha, 2, &left));
	CHECK_EQ_INT(left, 4);
	CHECK_OK(store_view(st, fill_check_fn, &c));
	CHECK_EQ_INT(c.have, 2);
	CHECK_OK(store_pieces_fill(st, p.sha, 0, &left));
	CHECK_EQ_INT(left, 4);
	CHECK_OK(store_pieces_fill(st, p.sha, 3, &left));
	CHECK_EQ_INT(left, 1);
	CHECK(!c.complete);
	CHECK_OK(store_pieces_fill(st, p.sha, 2, &left));
	CHECK_EQ_INT(left, 0);
	CHECK_OK(store_view(st, fill_check_fn, &c));
	CHECK(c.complete);
	CHECK_EQ_INT(c.have, 6);
	CHECK_OK(store_pieces_fill(st, p.sha, 2, NULL));
	CHECK_OK(store_update(st, stray_piece_fn, &q));
	CHECK_OK(store_pieces_fill(st, q.sha, 10, &left));
	CHECK_EQ_INT(left, 0);
	c.p = &q;
	CHECK_OK(store_view(st, fill_check_fn, &c));
	CHECK(c.complete);
	CHECK_EQ_INT(c.have, 2);
	memset(absent, 0xee, sizeof(absent));
	CHECK_RC(store_pieces_fill(st, absent, 2, &left), BG_ENOENT);
	CHECK_OK(store_open(home, STORE_RDONLY, NULL, &ro));
	CHECK_RC(store_pieces_fill(ro, p.sha, 2, &left), BG_ERDONLY);
	store_close(ro);
	store_close(st);
	free(data);
	home_free(home);
}

/* A walk over the whole store fills every list, a few chunks per call, and
 * ends. */
static void test_pieces_fill_next(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home), *ro = NULL;
	size_t lens[3] = { 3 * CH + 1, CH, 2 * CH };
	const char *urls[3] = { URL_A, URL_B, "https://origin.example/n.iso" };
	struct blob_put p[3];
	unsigned char *data[3], from[BG_SHA256_LEN];
	bool done = false;
	unsigned calls = 0;

	for (int i = 0; i < 3; i++) {
		data[i] = pattern_buf(10 + i, lens[i]);
		memset(&p[i], 0, sizeof(p[i]));
		p[i].data = data[i];
		p[i].len = lens[i];
		p[i].content = 1;
		p[i].key = 1;
		p[i].url = urls[i];
		CHECK_OK(put_blob(st, &p[i]));
	}
	/* max_chunks 0 hashes nothing, and still ends */
	memset(from, 0, sizeof(from));
	for (calls = 0; !done && calls < 10; calls++)
		CHECK_OK(store_pieces_fill_next(st, from, 0, &done));
	CHECK(done);
	for (int i = 0; i < 3; i++) {
		struct fill_check c = { .p = &p[i] };

		CHECK_OK(store_view(st, fill_check_fn, &c));
		CHECK_EQ_INT(c.have, 0);
	}
	memset(from, 0, sizeof(from));
	done = false;
	for (calls = 0; !done && calls < 20; calls++)
		CHECK_OK(store_pieces_fill_next(st, from, 2, &done));
	CHECK(done);
	/* 4 + 1 + 2 chunks, at most 2 per call: at least 5 calls */
	CHECK(calls >= 5);
	for (int i = 0; i < 3; i++) {
		struct fill_check c = { .p = &p[i] };

		CHECK_OK(store_view(st, fill_check_fn, &c));
		CHECK(c.complete);
		CHECK_EQ_INT(c.have, (lens[i] + CH - 1) / CH);
	}
	/* nothing left: the first call says so */
	memset(from, 0, sizeof(from));
	CHECK_OK(store_pieces_fill_next(st, from, 2, &done));
	CHECK(done);
	CHECK_OK(store_open(home, STORE_RDONLY, NULL, &ro));
	memset(from, 0, sizeof(from));
	CHECK_RC(store_pieces_fill_next(ro, from, 2, &done), BG_ERDONLY);
	store_close(ro);
	store_close(st);
	for (int i = 0; i < 3; i++)
		free(data[i]);
	home_free(home);
}

/* ---- Downloads in progress ----------------------------------------------- */

static void inflight_sample(struct store_inflight *f, const char *url)
{
	memset(f, 0, sizeof(*f));
	f->url = (char *)url;
	memcpy(f->job, JOB_A, sizeof(JOB_A));
	f->file = 3;
	f->blob = 0;
	f->gen = 123456789;
	f->committed = 0;
	f->total = -1;
	f->state = STORE_INFLIGHT_ORIGIN;
	f->etag = "\"abc\"";
	f->date = "Sat, 05 Dec 2026 12:00:00 GMT";
	f->fetch.known = true;
	f->fetch.ignore = STORE_FETCH_IGNORE_DATE;
	f->fetch.crl = true;
	f->fetch.redirect = STORE_FETCH_REDIRECT_REPORT;
	memcpy(f->fetch.ca, "0123456789abcdef", 17);
	memcpy(f->source, "00112233445566778899aabbccddeeff", 33);
	f->started = 1764921600;
	f->updated = 1764921632;
}

struct rec_ctx {
	int calls;
	int64_t seen_total;
};

static int inflight_each_fn(const struct store_inflight *f, void *arg)
{
	struct rec_ctx *c = arg;

	c->calls++;
	c->seen_total = f->total;
	return 0;
}

static int inflight_stop_fn(const struct store_inflight *f, void *arg)
{
	(void)f;
	(void)arg;
	return 42;
}

static int inflight_rt_fn(struct bg_txn *txn, void *arg)
{
	struct store_inflight f, g;
	unsigned char h[BG_SHA256_LEN];
	struct rec_ctx c = { 0, 0 };

	(void)arg;
	inflight_sample(&f, URL_A);
	CHECK_OK(txn_inflight_put(txn, &f));
	CHECK_OK(txn_inflight_get(txn, URL_A, &g));
	CHECK_EQ_STR(g.url, URL_A);
	CHECK_EQ_STR(g.job, JOB_A);
	CHECK_EQ_INT(g.file, 3);
	CHECK_EQ_INT(g.gen, 123456789);
	CHECK_EQ_INT(g.total, -1);
	CHECK_EQ_INT(g.state, STORE_INFLIGHT_ORIGIN);
	CHECK_EQ_STR(g.etag, "\"abc\"");
	CHECK(g.last_modified == NULL);
	CHECK_EQ_STR(g.date, f.date);
	CHECK(g.final_url == NULL);
	CHECK(g.fetch.known);
	CHECK_EQ_INT(g.fetch.ignore, STORE_FETCH_IGNORE_DATE);
	CHECK(g.fetch.crl && !g.fetch.h2h);
	CHECK_EQ_INT(g.fetch.redirect, STORE_FETCH_REDIRECT_REPORT);
	CHECK_EQ_STR(g.fetch.ca, "0123456789abcdef");
	CHECK_EQ_STR(g.source, f.source);
	CHECK(!g.has_sha);
	CHECK_EQ_INT(g.started, 1764921600);
	CHECK_EQ_INT(g.updated, 1764921632);
	store_inflight_clear(&g);
	CHECK(g.url == NULL);

	/* final, with its content and the URL that answered */
	f.state = STORE_INFLIGHT_FINAL;
	f.blob = 7;
	f.total = 1000;
	f.committed = 1000;
	f.final_url = "https://mirror.example/a.iso";
	f.fetch.known = false;
	f.source[0] = '\0';
	f.has_sha = true;
	memset(f.sha256, 0xab, BG_SHA256_LEN);
	CHECK_OK(txn_inflight_put(txn, &f));
	url_hash(URL_A, h);
	CHECK_OK(txn_inflight_get_hash(txn, h, &g));
	CHECK_EQ_INT(g.state, STORE_INFLIGHT_FINAL);
	CHECK(g.has_sha);
	CHECK_EQ_MEM(g.sha256, f.sha256, BG_SHA256_LEN);
	CHECK_EQ_STR(g.final_url, f.final_url);
	CHECK(!g.fetch.known);
	CHECK_EQ_STR(g.source, "");
	CHECK_EQ_INT(g.blob, 7);
	store_inflight_clear(&g);

	inflight_sample(&f, URL_B);
	f.total = 55;
	CHECK_OK(txn_inflight_put(txn, &f));
	CHECK_OK(txn_inflight_each(txn, inflight_each_fn, &c));
	CHECK_EQ_INT(c.calls, 2);
	CHECK_EQ_INT(txn_inflight_each(txn, inflight_stop_fn, NULL), 42);

	/* refused records */
	inflight_sample(&f, URL_B);
	f.gen = 0;
	CHECK_RC(txn_inflight_put(txn, &f), BG_EINVAL);
	f.gen = (uint64_t)INT64_MAX + 1;
	CHECK_RC(txn_inflight_put(txn, &f), BG_EINVAL);
	inflight_sample(&f, URL_B);
	f.total = 10;
	f.committed = 11;
	CHECK_RC(txn_inflight_put(txn, &f), BG_EINVAL);
	inflight_sample(&f, URL_B);
	f.state = STORE_INFLIGHT_FINAL;
	CHECK_RC(txn_inflight_put(txn, &f), BG_EINVAL);
	f.state = (enum store_inflight_state)4;
	CHECK_RC(txn_inflight_put(txn, &f), BG_EINVAL);
	inflight_sample(&f, "");
	CHECK_RC(txn_inflight_put(txn, &f), BG_EINVAL);
	inflight_sample(&f, URL_B);
	memcpy(f.fetch.ca, "0123456789ABCDEF", 17);
	CHECK_RC(txn_inflight_put(txn, &f), BG_EINVAL);
	inflight_sample(&f, URL_B);
	f.fetch.ignore = 16;
	CHECK_RC(txn_inflight_put(txn, &f), BG_EINVAL);
	inflight_sample(&f, URL_B);
	f.etag = "\"\xff\"";
	CHECK_RC(txn_inflight_put(txn, &f), BG_EINVAL);
	/* B's record is still the one put first */
	CHECK_OK(txn_inflight_get(txn, URL_B, &g));
	CHECK_EQ_INT(g.total, 55);
	store_inflight_clear(&g);

	CHECK_OK(txn_inflight_del(txn, URL_B));
	CHECK_RC(txn_inflight_del(txn, URL_B), BG_ENOENT);
	CHECK_RC(txn_inflight_get(txn, URL_B, &g), BG_ENOENT);
	CHECK(g.url == NULL);
	return 0;
}

static int inflight_damaged_fn(struct bg_txn *txn, void *arg)
{
	struct store_inflight g;
	struct rec_ctx c = { 0, 0 };
	int *phase = arg;

	CHECK_RC(txn_inflight_get(txn, URL_B, &g), BG_ECORRUPT);
	CHECK(g.url == NULL);
	/* passed over by each, the sound one still seen */
	CHECK_OK(txn_inflight_each(txn, inflight_each_fn, &c));
	CHECK_EQ_INT(c.calls, 1);
	if (*phase == 1) {
		CHECK_OK(txn_inflight_del(txn, URL_B));
		CHECK_RC(txn_inflight_get(txn, URL_B, &g), BG_ENOENT);
	}
	return 0;
}

static int inflight_view_b_fn(struct bg_txn *txn, void *arg)
{
	struct store_inflight g;
	struct rec_ctx c = { 0, 0 };

	(void)arg;
	CHECK_OK(txn_inflight_get(txn, URL_B, &g));
	CHECK_EQ_INT(g.gen, 1);
	CHECK_EQ_INT(g.state, STORE_INFLIGHT_WANT);
	CHECK(!g.fetch.known);
	store_inflight_clear(&g);
	/* A and B; the record filed under a key not its URL's is passed over */
	CHECK_OK(txn_inflight_each(txn, inflight_each_fn, &c));
	CHECK_EQ_INT(c.calls, 2);
	return 0;
}

static void test_inflight_records(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home);
	unsigned char h[BG_SHA256_LEN];
	const char *s;
	int phase = 0;

	CHECK_OK(store_update(st, inflight_rt_fn, NULL));
	store_close(st);

	/* Not JSON at all, then JSON that claims a gen of 0. */
	url_hash(URL_B, h);
	CHECK_EQ_INT(raw_op(home, "inflight", 0, h, sizeof(h), "{\"url\":", 7), 0);
	st = open_rw(home);
	CHECK_OK(store_view(st, inflight_damaged_fn, &phase));
	phase = 1;
	CHECK_OK(store_update(st, inflight_damaged_fn, &phase));
	store_close(st);
	s = "{\"url\":\"" URL_B "\",\"job\":\"\",\"file\":0,\"blob\":0,\"gen\":0,\"state\":\"want\","
	    "\"committed\":0,\"total\":-1,\"etag\":null,\"last_modified\":null,\"date\":null,"
	    "\"final_url\":null,\"fetch\":null,\"source\":null,\"sha256\":null,\"started\":1,"
	    "\"updated\":1}";
	CHECK_EQ_INT(raw_op(home, "inflight", 0, h, sizeof(h), s, strlen(s)), 0);
	st = open_rw(home);
	phase = 0;
	CHECK_OK(store_view(st, inflight_damaged_fn, &phase));
	store_close(st);
	/* The same with gen 1 is sound: the test above failed for the gen. */
	s = "{\"url\":\"" URL_B "\",\"job\":\"\",\"file\":0,\"blob\":0,\"gen\":1,\"state\":\"want\","
	    "\"committed\":0,\"total\":-1,\"etag\":null,\"last_modified\":null,\"date\":null,"
	    "\"final_url\":null,\"fetch\":null,\"source\":null,\"sha256\":null,\"started\":1,"
	    "\"updated\":1}";
	CHECK_EQ_INT(raw_op(home, "inflight", 0, h, sizeof(h), s, strlen(s)), 0);
	/* and a record filed under another URL's key is not */
	CHECK_EQ_INT(raw_op(home, "inflight", 0, "0123456789abcdef0123456789abcdef", 32, s, strlen(s)), 0);
	st = open_rw(home);
	CHECK_OK(store_view(st, inflight_view_b_fn, NULL));
	store_close(st);
	home_free(home);
}

/* ---- Reading a download in progress -------------------------------------- */

struct grow {
	const unsigned char *data;
	size_t len;             /* the whole file */
	uint64_t blob;
	uint64_t gen;
	uint64_t chunks;        /* put chunks [0, chunks) */
	uint64_t committed;     /* the record's */
	int final;
	int content;            /* put the content record too */
	unsigned char sha[BG_SHA256_LEN];
};

/* What the agent's commit does: the chunks and the record in one txn. */
static int grow_fn(struct bg_txn *txn, void *arg)
{
	struct grow *g = arg;
	struct store_inflight f;
	int rc = 0;

	if (g->blob == 0)
		rc = txn_blob_new(txn, &g->blob);
	for (uint64_t i = 0; rc == 0 && i < g->chunks; i++) {
		size_t n = g->len - i * CH < CH ? g->len - i * CH : CH;

		rc = txn_blob_put(txn, g->blob, i, g->data + i * CH, n);
	}
	bg_sha256(g->data, g->len, g->sha);
	if (rc == 0 && g->content) {
		struct store_content c = { .blob = g->blob, .size = g->len, .created = 1,
		                           .last_used_ns = 2 };

		rc = txn_content_put(txn, g->sha, &c);
	}
	inflight_sample(&f, URL_A);
	f.blob = g->blob;
	f.gen = g->gen;
	f.total = (int64_t)g->len;
	f.committed = g->committed;
	if (g->final) {
		f.state = STORE_INFLIGHT_FINAL;
		f.has_sha = true;
		memcpy(f.sha256, g->sha, BG_SHA256_LEN);
	}
	return rc != 0 ? rc : txn_inflight_put(txn, &f);
}

static int content_del_fn(struct bg_txn *txn, void *arg)
{
	return txn_content_del(txn, arg);
}

static void test_read_inflight(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home), *ro = NULL;
	size_t len = 6 * CH + 500;
	unsigned char *data = pattern_buf(3, len), *buf = malloc(len + 10);
	struct grow g = { .data = data, .len = len, .gen = 77 };
	unsigned char h[BG_SHA256_LEN], other[BG_SHA256_LEN];
	size_t got = 99;

	url_hash(URL_A, h);
	memset(other, 0x5a, sizeof(other));
	CHECK_RC(store_read_inflight(st, h, 77, 0, buf, len, &got), BG_ENOENT);
	CHECK_EQ_INT(got, 0);

	/* nothing committed yet */
	CHECK_OK(store_update(st, grow_fn, &g));
	CHECK_OK(store_read_inflight(st, h, 77, 0, buf, len, &got));
	CHECK_EQ_INT(got, 0);

	/* 5 chunks in the store, the record counts 2.5 of them: never more */
	g.chunks = 5;
	g.committed = 2 * CH + CH / 2;
	CHECK_OK(store_update(st, grow_fn, &g));
	CHECK_OK(store_read_inflight(st, h, 77, 0, buf, len, &got));
	CHECK_EQ_INT(got, g.committed);
	CHECK_EQ_MEM(buf, data, g.committed);
	CHECK_OK(store_read_inflight(st, h, 77, CH + 3, buf, 10, &got));
	CHECK_EQ_INT(got, 10);
	CHECK_EQ_MEM(buf, data + CH + 3, 10);
	CHECK_OK(store_read_inflight(st, h, 77, g.committed - 4, buf, 100, &got));
	CHECK_EQ_INT(got, 4);
	CHECK_OK(store_read_inflight(st, h, 77, g.committed, buf, 100, &got));
	CHECK_EQ_INT(got, 0);
	CHECK_OK(store_read_inflight(st, h, 77, len + 5, buf, 100, &got));
	CHECK_EQ_INT(got, 0);
	/* another incarnation, another URL */
	CHECK_RC(store_read_inflight(st, h, 78, 0, buf, 100, &got), BG_EAGAIN);
	CHECK_EQ_INT(got, 0);
	CHECK_RC(store_read_inflight(st, other, 77, 0, buf, 100, &got), BG_ENOENT);
	/* a read-only opener (peerd) reads the same */
	CHECK_OK(store_open(home, STORE_RDONLY, NULL, &ro));
	CHECK_OK(store_read_inflight(ro, h, 77, 0, buf, len, &got));
	CHECK_EQ_INT(got, g.committed);
	store_close(ro);

	/* final: the whole content, read through the content record */
	g.chunks = 7;
	g.committed = len;
	g.final = 1;
	g.content = 1;
	CHECK_OK(store_update(st, grow_fn, &g));
	CHECK_OK(store_read_inflight(st, h, 77, 0, buf, len + 10, &got));
	CHECK_EQ_INT(got, len);
	CHECK_EQ_MEM(buf, data, len);
	CHECK_RC(store_read_inflight(st, h, 76, 0, buf, 10, &got), BG_EAGAIN);
	/* evicted: the tombstone names content that is gone */
	CHECK_OK(store_update(st, content_del_fn, g.sha));
	CHECK_RC(store_read_inflight(st, h, 77, 0, buf, 10, &got), BG_ENOENT);
	CHECK_EQ_INT(got, 0);

	store_close(st);
	free(buf);
	free(data);
	home_free(home);
}

/* The dedup case: final names content whose blob is another one. */
static void test_read_inflight_dedup(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home);
	size_t len = 2 * CH + 1;
	unsigned char *data = pattern_buf(4, len), *buf = malloc(len);
	struct blob_put p = { .data = data, .len = len, .content = 1, .key = 1, .url = URL_B };
	struct grow g = { .data = data, .len = len, .gen = 5, .final = 1, .committed = len };
	unsigned char h[BG_SHA256_LEN];
	size_t got = 0;

	url_hash(URL_A, h);
	CHECK_OK(put_blob(st, &p));
	/* the download's own blob has no chunks left (truncated at final) */
	CHECK_OK(store_update(st, grow_fn, &g));
	CHECK(g.blob != p.blob);
	CHECK_OK(store_read_inflight(st, h, 5, 1, buf, len, &got));
	CHECK_EQ_INT(got, len - 1);
	CHECK_EQ_MEM(buf, data + 1, len - 1);
	store_close(st);
	free(buf);
	free(data);
	home_free(home);
}

/* ---- Liveness ------------------------------------------------------------ */

static void test_inflight_lock(void)
{
	char *home = home_new();
	unsigned char h[BG_SHA256_LEN];
	char path[4096], small[16], hex[BG_SHA256_HEX_LEN + 1], want[4096];
	int fd, fd2;

	url_hash(URL_A, h);
	bg_sha256_hex(h, hex);
	CHECK_OK(store_inflight_lock_path(home, h, path, sizeof(path)));
	snprintf(want, sizeof(want), "%s/inflight/%s.lock", home, hex);
	CHECK_EQ_STR(path, want);
	CHECK_RC(store_inflight_lock_path(home, h, small, sizeof(small)), BG_ELIMIT);

	/* no folder, no file: nobody writes it; and it is not created */
	CHECK(!store_inflight_alive(home, h));
	CHECK(access(path, F_OK) != 0);
	CHECK_EQ_INT(mkdir(home_file(home, "inflight"), 0700), 0);
	CHECK(!store_inflight_alive(home, h));
	CHECK(access(path, F_OK) != 0);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	CHECK(fd >= 0);
	/* a file nobody holds: the writer is gone (kill -9 included) */
	CHECK(!store_inflight_alive(home, h));
	CHECK_EQ_INT(flock(fd, LOCK_EX), 0);
	CHECK(store_inflight_alive(home, h));
	CHECK(store_inflight_alive(home, h)); /* the test did not take it */
	CHECK_EQ_INT(flock(fd, LOCK_UN), 0);
	CHECK(!store_inflight_alive(home, h));
	/* and the test leaves no lock behind: the writer can take it again */
	fd2 = open(path, O_RDWR);
	CHECK(fd2 >= 0);
	CHECK_EQ_INT(flock(fd2, LOCK_EX | LOCK_NB), 0);
	close(fd2);
	close(fd);
	home_free(home);
}

/* ---- Format version 4 ---------------------------------------------------- */

static int v3_reader_fn(struct bg_txn *txn, void *arg)
{
	unsigned char d[BG_SHA256_LEN], out[BG_SHA256_LEN];
	struct store_inflight f;
	struct rec_ctx c = { 0, 0 };
	uint64_t n = 9;
	bool complete = true;
	struct blob_put *p = arg;

	CHECK_RC(txn_piece_get(txn, p->blob, 0, d), BG_ENOENT);
	CHECK_OK(txn_pieces_read(txn, p->blob, 0, 1, out, &n));
	CHECK_EQ_INT(n, 0);
	CHECK_OK(txn_content_pieces_complete(txn, p->sha, &complete));
	CHECK(!complete);
	CHECK_RC(txn_inflight_get(txn, URL_A, &f), BG_ENOENT);
	CHECK_OK(txn_inflight_each(txn, inflight_each_fn, &c));
	CHECK_EQ_INT(c.calls, 0);
	return 0;
}

static void test_upgrade_v3(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home), *ro = NULL;
	unsigned char *data = pattern_buf(5, CH + 10);
	struct blob_put p = { .data = data, .len = CH + 10, .content = 1, .key = 1, .url = URL_B };
	struct store_inflight f;
	unsigned char h[BG_SHA256_LEN], buf[16];
	uint64_t version = 0, left = 0;
	size_t got = 1;

	CHECK_OK(put_blob(st, &p));
	store_close(st);
	CHECK_EQ_INT(raw_has_db(home, "pieces", &version), 0);
	CHECK_EQ_INT(version, 4);
	CHECK_EQ_INT(raw_has_db(home, "inflight", &version), 0);

	/* a version 3 store, as the previous build left it */
	CHECK_EQ_INT(raw_op(home, "pieces", 1, NULL, 0, NULL, 0), 0);
	CHECK_EQ_INT(raw_op(home, "inflight", 1, NULL, 0, NULL, 0), 0);
	version_set(home, 3);
	CHECK_EQ_INT(raw_has_db(home, "pieces", &version), MDB_NOTFOUND);
	CHECK_EQ_INT(version, 3);

	/* a reader (peerd) before the agent upgraded it: all absent */
	CHECK_OK(store_open(home, STORE_RDONLY, NULL, &ro));
	CHECK_OK(store_view(ro, v3_reader_fn, &p));
	url_hash(URL_A, h);
	CHECK_RC(store_read_inflight(ro, h, 1, 0, buf, sizeof(buf), &got), BG_ENOENT);
	CHECK_EQ_INT(got, 0);
	store_close(ro);
	CHECK_EQ_INT(raw_has_db(home, "pieces", &version), MDB_NOTFOUND);

	/* the agent upgrades it: both databases, empty, and version 4 */
	st = open_rw(home);
	CHECK_EQ_INT(raw_has_db(home, "pieces", &version), 0);
	CHECK_EQ_INT(version, 4);
	CHECK_EQ_INT(raw_has_db(home, "inflight", &version), 0);
	CHECK_OK(store_view(st, v3_reader_fn, &p));
	/* the old content's list is filled lazily */
	CHECK_OK(store_pieces_fill(st, p.sha, 10, &left));
	CHECK_EQ_INT(left, 0);
	inflight_sample(&f, URL_A);
	store_close(st);

	/* a newer format is refused by writers and readers */
	version_set(home, 5);
	st = NULL;
	CHECK_RC(store_open(home, 0, NULL, &st), BG_EVERSION);
	CHECK_RC(store_open(home, STORE_RDONLY, NULL, &st), BG_EVERSION);
	CHECK(st == NULL);
	free(data);
	home_free(home);
}

/* ---- Fetch policies ------------------------------------------------------ */

static struct store_fetch_policy pol(uint32_t ignore, bool crl, const char *ca, uint8_t redirect,
                                     bool h2h)
{
	struct store_fetch_policy p;

	memset(&p, 0, sizeof(p));
	p.known = true;
	p.ignore = ignore;
	p.crl = crl;
	p.h2h = h2h;
	p.redirect = redirect;
	snprintf(p.ca, sizeof(p.ca), "%s", ca);
	return p;
}

static void test_fetch_policy_text(void)
{
	static const char *const bad[] = {
		"",
		"ignore=0, crl=?1, ca=system, redirect=silent",             /* h2h missing */
		"ignore=0, crl=?1, ca=system, redirect=silent, h2h=?0, x=1", /* another member */
		"ignore=0, crl=?1, ca=system, redirect=silent, h2h=?0,",     /* trailing comma */
		"ignore=0, ignore=0, crl=?1, ca=system, redirect=silent, h2h=?0",
		"ignore=16, crl=?1, ca=system, redirect=silent, h2h=?0",
		"ignore=-1, crl=?1, ca=system, redirect=silent, h2h=?0",
		"ignore=?1, crl=?1, ca=system, redirect=silent, h2h=?0",
		"ignore=0, crl=1, ca=system, redirect=silent, h2h=?0",
		"ignore=0, crl=?2, ca=system, redirect=silent, h2h=?0",
		"ignore=0, crl=?1, ca=System, redirect=silent, h2h=?0",
		"ignore=0, crl=?1, ca=\"0123456789ABCDEF\", redirect=silent, h2h=?0",
		"ignore=0, crl=?1, ca=\"0123456789abcde\", redirect=silent, h2h=?0",
		"ignore=0, crl=?1, ca=\"system\", redirect=silent, h2h=?0",
		"ignore=0, crl=?1, ca=system, redirect=follow, h2h=?0",
		"ignore=0, crl=?1, ca=system, redirect=silent;a=1, h2h=?0",
		"ignore=0, crl=?1, ca=system, redirect=silent, h2h=?0 x",
		"Ignore=0, crl=?1, ca=system, redirect=silent, h2h=?0",
		"ignore=0,, crl=?1, ca=system, redirect=silent, h2h=?0",
		"ignore=0, crl=?1, ca=system, redirect, h2h=?0",
	};
	struct store_fetch_policy p = pol(STORE_FETCH_IGNORE_CN | STORE_FETCH_IGNORE_USAGE, true,
	                                  "system", STORE_FETCH_REDIRECT_DISALLOW, false);
	struct store_fetch_policy q;
	char s[STORE_FETCH_POLICY_MAX];

	CHECK_OK(bg_fetch_policy_format(&p, s, sizeof(s)));
	CHECK_EQ_STR(s, "ignore=9, crl=?1, ca=system, redirect=disallow, h2h=?0");
	CHECK_OK(bg_fetch_policy_parse(s, &q));
	CHECK(q.known);
	CHECK_EQ_INT(q.ignore, 9);
	CHECK(q.crl && !q.h2h);
	CHECK_EQ_STR(q.ca, "system");
	CHECK_EQ_INT(q.redirect, STORE_FETCH_REDIRECT_DISALLOW);

	p = pol(STORE_FETCH_IGNORE_ALL, false, "00ff00ff00ff00ff", STORE_FETCH_REDIRECT_REPORT, true);
	CHECK_OK(bg_fetch_policy_format(&p, s, sizeof(s)));
	CHECK_EQ_STR(s, "ignore=15, crl=?0, ca=\"00ff00ff00ff00ff\", redirect=report, h2h=?1");
	CHECK_OK(bg_fetch_policy_parse(s, &q));
	CHECK_EQ_INT(q.ignore, 15);
	CHECK(!q.crl && q.h2h);
	CHECK_EQ_STR(q.ca, "00ff00ff00ff00ff");
	CHECK_EQ_INT(q.redirect, STORE_FETCH_REDIRECT_REPORT);
	CHECK(strlen(s) < STORE_FETCH_POLICY_MAX);

	/* any order, spaces and tabs around commas, a bare boolean is true */
	CHECK_OK(bg_fetch_policy_parse(" h2h,redirect=silent ,\tca=system,  crl=?0, ignore=0", &q));
	CHECK(q.known && q.h2h && !q.crl && q.ignore == 0);
	CHECK_EQ_INT(q.redirect, STORE_FETCH_REDIRECT_SILENT);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		q.known = true;
		if (!check_report(bg_fetch_policy_parse(bad[i], &q) == BG_EINVAL, __FILE__, __LINE__,
		                  "bad policy refused"))
			fprintf(stderr, "    accepted: %s\n", bad[i]);
		CHECK(!q.known);
	}
	CHECK_RC(bg_fetch_policy_parse(NULL, &q), BG_EINVAL);

	/* what cannot be formatted */
	p.known = false;
	CHECK_RC(bg_fetch_policy_format(&p, s, sizeof(s)), BG_EINVAL);
	p = pol(16, false, "system", 0, false);
	CHECK_RC(bg_fetch_policy_format(&p, s, sizeof(s)), BG_EINVAL);
	p = pol(0, false, "system", 3, false);
	CHECK_RC(bg_fetch_policy_format(&p, s, sizeof(s)), BG_EINVAL);
	p = pol(0, false, "sys", 0, false);
	CHECK_RC(bg_fetch_policy_format(&p, s, sizeof(s)), BG_EINVAL);
	p = pol(0, false, "system", 0, false);
	CHECK_RC(bg_fetch_policy_format(&p, s, 10), BG_ELIMIT);
}

static void test_fetch_policy_acceptable(void)
{
	const char *ca2 = "0123456789abcdef";
	struct store_fetch_policy mine = pol(STORE_FETCH_IGNORE_DATE, true, "system",
	                                     STORE_FETCH_REDIRECT_SILENT, false);
	struct store_fetch_policy t;
	const char *why = "x";

	/* the same policy, and a stricter one */
	t = mine;
	CHECK(bg_fetch_policy_acceptable(&t, &mine, true, &why));
	CHECK(why == NULL);
	t.ignore = 0;
	CHECK(bg_fetch_policy_acceptable(&t, &mine, true, NULL));
	/* unknown */
	t = mine;
	t.known = false;
	CHECK(!bg_fetch_policy_acceptable(&t, &mine, true, &why));
	CHECK(why != NULL);
	CHECK(!bg_fetch_policy_acceptable(&t, &mine, false, NULL));
	CHECK(!bg_fetch_policy_acceptable(NULL, &mine, false, NULL));
	/* they skipped a check we make */
	t = mine;
	t.ignore = STORE_FETCH_IGNORE_CN;
	CHECK(!bg_fetch_policy_acceptable(&t, &mine, true, &why));
	CHECK(why != NULL);
	CHECK(bg_fetch_policy_acceptable(&t, &mine, false, NULL)); /* http: moot */
	mine.ignore |= STORE_FETCH_IGNORE_CN;
	CHECK(bg_fetch_policy_acceptable(&t, &mine, true, NULL));
	mine.ignore = STORE_FETCH_IGNORE_DATE;
	/* revocation */
	t = mine;
	t.crl = false;
	CHECK(!bg_fetch_policy_acceptable(&t, &mine, true, NULL));
	CHECK(bg_fetch_policy_acceptable(&t, &mine, false, NULL));
	CHECK(bg_fetch_policy_acceptable(&mine, &t, true, NULL)); /* they checked more */
	/* anchors, in either direction */
	t = mine;
	snprintf(t.ca, sizeof(t.ca), "%s", ca2);
	CHECK(!bg_fetch_policy_acceptable(&t, &mine, true, NULL));
	CHECK(!bg_fetch_policy_acceptable(&mine, &t, true, NULL));
	CHECK(bg_fetch_policy_acceptable(&t, &mine, false, NULL));
	/* redirect policy, in either direction and for http too */
	t = mine;
	t.redirect = STORE_FETCH_REDIRECT_REPORT;
	CHECK(!bg_fetch_policy_acceptable(&t, &mine, true, &why));
	CHECK(why != NULL);
	CHECK(!bg_fetch_policy_acceptable(&mine, &t, true, NULL));
	CHECK(!bg_fetch_policy_acceptable(&t, &mine, false, NULL));
	/* https -> http only if we allow it */
	t = mine;
	t.h2h = true;
	CHECK(!bg_fetch_policy_acceptable(&t, &mine, true, NULL));
	CHECK(!bg_fetch_policy_acceptable(&t, &mine, false, NULL));
	CHECK(bg_fetch_policy_acceptable(&mine, &t, true, NULL));
	mine.h2h = true;
	CHECK(bg_fetch_policy_acceptable(&t, &mine, true, NULL));
}

/* Key records carry the policy; a zeroed struct (older callers) none. */
static int key_fetch_fn(struct bg_txn *txn, void *arg)
{
	struct store_key k, g;

	(void)arg;
	memset(&k, 0, sizeof(k));
	k.url = URL_A;
	k.size = 5;
	CHECK_OK(txn_key_put(txn, &k));
	CHECK_OK(txn_key_get(txn, URL_A, &g));
	CHECK(!g.fetch.known);
	store_key_clear(&g);
	k.fetch = pol(STORE_FETCH_IGNORE_CA, true, "fedcba9876543210", STORE_FETCH_REDIRECT_REPORT,
	              true);
	CHECK_OK(txn_key_put(txn, &k));
	CHECK_OK(txn_key_get(txn, URL_A, &g));
	CHECK(g.fetch.known && g.fetch.crl && g.fetch.h2h);
	CHECK_EQ_INT(g.fetch.ignore, STORE_FETCH_IGNORE_CA);
	CHECK_EQ_INT(g.fetch.redirect, STORE_FETCH_REDIRECT_REPORT);
	CHECK_EQ_STR(g.fetch.ca, "fedcba9876543210");
	store_key_clear(&g);
	CHECK(!g.fetch.known && g.url == NULL);
	k.fetch.redirect = 7;
	CHECK_RC(txn_key_put(txn, &k), BG_EINVAL);
	return 0;
}

static void test_key_fetch(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home);

	CHECK_OK(store_update(st, key_fetch_fn, NULL));
	store_close(st);
	home_free(home);
}

/* ---- Signed answers ------------------------------------------------------ */

static void test_sign_fields(void)
{
	const unsigned char key[] = "0123456789abcdef-test-key";
	const unsigned char key2[] = "0123456789abcdef-test-kez";
	const char *f[4] = { "\"etag\"", "bytes 0-9/100", NULL, "?1" };
	const char *g[4] = { "\"etag\"", "bytes 0-9/100", "", "?1" };
	const char *h[4] = { "\"etag\"", "bytes 0-9/101", NULL, "?1" };
	const char *nl[1] = { "a\nb" };
	char v[128], w[128];

	CHECK_OK(peer_auth_sign_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206, f,
	                               4, v, sizeof(v)));
	CHECK(strncmp(v, "v=2,sig=", 8) == 0 && strlen(v) == 8 + 64);
	CHECK(bg_is_lower_hex(v + 8, 64));
	CHECK_OK(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206, f,
	                                4, v));
	/* an absent field is an empty one */
	CHECK_OK(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206, g,
	                                4, v));
	/* anything changed fails */
	CHECK_RC(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206, h,
	                                4, v),
	         BG_EACCES);
	CHECK_RC(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=ab", PEER_PATH_PARTIAL, 206, f,
	                                4, v),
	         BG_EACCES);
	CHECK_RC(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PIECES, 206, f,
	                                4, v),
	         BG_EACCES);
	CHECK_RC(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 200, f,
	                                4, v),
	         BG_EACCES);
	CHECK_RC(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206, f,
	                                3, v),
	         BG_EACCES);
	CHECK_RC(peer_auth_check_fields(key2, sizeof(key2) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206,
	                                f, 4, v),
	         BG_EACCES);
	/* a changed or malformed value fails */
	snprintf(w, sizeof(w), "%s", v);
	w[20] = w[20] == '0' ? '1' : '0';
	CHECK_RC(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206, f,
	                                4, w),
	         BG_EACCES);
	snprintf(w, sizeof(w), "v=1,sig=%s", v + 8);
	CHECK_RC(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206, f,
	                                4, w),
	         BG_EACCES);
	snprintf(w, sizeof(w), "%s,x", v);
	CHECK_RC(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206, f,
	                                4, w),
	         BG_EACCES);
	CHECK_RC(peer_auth_check_fields(key, sizeof(key) - 1, "t=1,sig=aa", PEER_PATH_PARTIAL, 206, f,
	                                4, NULL),
	         BG_EACCES);
	/* fields may not shift between parts */
	CHECK_RC(peer_auth_sign_fields(key, sizeof(key) - 1, "r", "/p", 200, nl, 1, w, sizeof(w)),
	         BG_EINVAL);
	/* no fields at all, and the output too small */
	CHECK_OK(peer_auth_sign_fields(key, sizeof(key) - 1, "r", "/p", 404, NULL, 0, w, sizeof(w)));
	CHECK_OK(peer_auth_check_fields(key, sizeof(key) - 1, "r", "/p", 404, NULL, 0, w));
	CHECK(strcmp(w, v) != 0);
	CHECK_RC(peer_auth_sign_fields(key, sizeof(key) - 1, "r", "/p", 404, NULL, 0, w, 20),
	         BG_ELIMIT);
}

/* ---- Garbage collection and limits ---------------------------------------- */

#define URL_C "https://origin.example/c.iso"
#define URL_D "https://origin.example/d.iso"
#define URL_E "https://origin.example/e.iso"
#define URL_F "https://origin.example/f.iso"

struct gc_setup {
	uint64_t kept_blob;     /* named by a file record */
	uint64_t bare_blob;     /* digests, never a chunk */
	int64_t now;
};

static int gc_setup_fn(struct bg_txn *txn, void *arg)
{
	struct gc_setup *g = arg;
	unsigned char d[BG_SHA256_LEN];
	struct store_inflight f;
	json_t *rec;
	int rc;

	memset(d, 0x33, sizeof(d));
	if ((rc = txn_blob_new(txn, &g->kept_blob)) != 0 ||
	    (rc = txn_blob_put(txn, g->kept_blob, 0, "abc", 3)) != 0 ||
	    (rc = txn_piece_put(txn, g->kept_blob, 0, d)) != 0)
		return rc;
	rec = json_pack("{s:I}", "blob", (json_int_t)g->kept_blob);
	rc = txn_file_put(txn, JOB_A, 0, rec);
	json_decref(rec);
	if (rc != 0 || (rc = txn_blob_new(txn, &g->bare_blob)) != 0 ||
	    (rc = txn_piece_put(txn, g->bare_blob, 0, d)) != 0 ||
	    (rc = txn_piece_put(txn, g->bare_blob, 1, d)) != 0)
		return rc;
	/* A: gone quiet, no lock; B: quiet, lock held; C: fresh;
	 * D: an old tombstone; E: a young one */
	inflight_sample(&f, URL_A);
	f.updated = g->now - STORE_INFLIGHT_STALE - 60;
	if ((rc = txn_inflight_put(txn, &f)) != 0)
		return rc;
	f.url = URL_B;
	if ((rc = txn_inflight_put(txn, &f)) != 0)
		return rc;
	f.url = URL_C;
	f.updated = g->now - 5;
	if ((rc = txn_inflight_put(txn, &f)) != 0)
		return rc;
	f.url = URL_D;
	f.state = STORE_INFLIGHT_FINAL;
	f.has_sha = true;
	f.updated = g->now - STORE_INFLIGHT_TOMBSTONE - 100;
	if ((rc = txn_inflight_put(txn, &f)) != 0)
		return rc;
	f.url = URL_E;
	f.updated = g->now - STORE_INFLIGHT_TOMBSTONE + 100;
	return txn_inflight_put(txn, &f);
}

struct gc_expect {
	struct gc_setup *g;
	struct blob_put *kept, *orphan, *unnamed;
	const char *present;    /* URLs expected among the records: letters */
};

static int gc_check_fn(struct bg_txn *txn, void *arg)
{
	struct gc_expect *e = arg;
	static const char *const urls[] = { URL_A, URL_B, URL_C, URL_D, URL_E, URL_F };
	unsigned char d[BG_SHA256_LEN];
	struct store_inflight f;

	CHECK_OK(txn_piece_get(txn, e->g->kept_blob, 0, d));
	CHECK_OK(txn_piece_get(txn, e->kept->blob, 1, d));
	CHECK_RC(txn_piece_get(txn, e->orphan->blob, 0, d), BG_ENOENT);
	CHECK_RC(txn_piece_get(txn, e->unnamed->blob, 0, d), BG_ENOENT);
	CHECK_RC(txn_piece_get(txn, e->g->bare_blob, 0, d), BG_ENOENT);
	CHECK_RC(txn_piece_get(txn, e->g->bare_blob, 1, d), BG_ENOENT);
	for (int i = 0; i < 6; i++) {
		int rc = txn_inflight_get(txn, urls[i], &f);
		bool want = strchr(e->present, 'A' + i) != NULL;

		if (!check_report(want ? rc == 0 : rc == BG_ENOENT, __FILE__, __LINE__,
		                  "inflight record kept or dropped"))
			fprintf(stderr, "    record %c: %s\n", 'A' + i, bg_err_name(rc));
		store_inflight_clear(&f);
	}
	return 0;
}

/* Before collection: every digest and record as set up. */
static int gc_check_pre_fn(struct bg_txn *txn, void *arg)
{
	struct gc_expect *e = arg;
	static const char *const urls[] = { URL_A, URL_B, URL_C, URL_D, URL_E };
	unsigned char d[BG_SHA256_LEN];
	struct store_inflight f;

	CHECK_OK(txn_piece_get(txn, e->orphan->blob, 0, d));
	CHECK_OK(txn_piece_get(txn, e->unnamed->blob, 1, d));
	CHECK_OK(txn_piece_get(txn, e->g->bare_blob, 1, d));
	for (int i = 0; i < 5; i++) {
		CHECK_OK(txn_inflight_get(txn, urls[i], &f));
		store_inflight_clear(&f);
	}
	CHECK_RC(txn_inflight_get(txn, URL_F, &f), BG_ECORRUPT);
	return 0;
}

static void test_gc(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home);
	unsigned char *data = pattern_buf(6, 2 * CH + 9);
	struct blob_put kept = { .data = data, .len = 2 * CH + 9, .content = 1, .key = 1,
	                         .url = URL_F, .pieces = 1 };
	struct blob_put orphan = { .data = data, .len = CH + 1, .pieces = 1 };
	struct blob_put unnamed = { .data = data + 5, .len = CH + 1, .content = 1, .pieces = 1 };
	struct gc_setup g = { .now = bg_now() };
	struct gc_expect e = { &g, &kept, &orphan, &unnamed, "" };
	unsigned char h[BG_SHA256_LEN];
	char path[4096];
	uint64_t entries = 0, bytes = 0;
	int fd;

	CHECK_OK(put_blob(st, &kept));
	CHECK_OK(put_blob(st, &orphan));
	CHECK_OK(put_blob(st, &unnamed));
	CHECK_OK(store_update(st, gc_setup_fn, &g));
	store_close(st);
	/* F: damaged (the key of F's URL is taken by content; this is its
	 * inflight record) */
	url_hash(URL_F, h);
	CHECK_EQ_INT(raw_op(home, "inflight", 0, h, sizeof(h), "[1]", 3), 0);
	st = open_rw(home);
	CHECK_OK(store_view(st, gc_check_pre_fn, &e));

	/* B's writer is alive */
	url_hash(URL_B, h);
	CHECK_OK(store_inflight_lock_path(home, h, path, sizeof(path)));
	CHECK_EQ_INT(mkdir(home_file(home, "inflight"), 0700), 0);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	CHECK(fd >= 0 && flock(fd, LOCK_EX) == 0);

	CHECK_OK(store_gc(st, test_blob_of, &entries, &bytes));
	/* the orphan blob and the unnamed content (record and blob) */
	CHECK_EQ_INT(entries, 2);
	CHECK_EQ_INT(bytes, 2 * (CH + 1));
	e.present = "BCE";
	CHECK_OK(store_view(st, gc_check_fn, &e));

	/* the writer of B died: its record goes (it is old enough) */
	close(fd);
	e.present = "CE";
	CHECK_OK(store_gc(st, test_blob_of, NULL, NULL));
	CHECK_OK(store_view(st, gc_check_fn, &e));
	store_close(st);
	free(data);
	home_free(home);
}

static int no_job_unfinished(const json_t *job)
{
	(void)job;
	return 0;
}

/* The limits take old tombstones, never a download still in progress. */
static int enforce_fn(struct bg_txn *txn, void *arg)
{
	int64_t now = *(int64_t *)arg;
	struct store_enforce_result res;
	struct store_inflight f;

	inflight_sample(&f, URL_A);
	f.updated = now - STORE_INFLIGHT_TOMBSTONE - 1;
	CHECK_OK(txn_inflight_put(txn, &f));
	f.url = URL_B;
	f.state = STORE_INFLIGHT_FINAL;
	f.has_sha = true;
	CHECK_OK(txn_inflight_put(txn, &f));
	f.url = URL_C;
	f.updated = now;
	CHECK_OK(txn_inflight_put(txn, &f));
	CHECK_OK(txn_enforce_limits(txn, UINT64_MAX / 2, now, 90, no_job_unfinished, &res));
	CHECK_OK(txn_inflight_get(txn, URL_A, &f));
	store_inflight_clear(&f);
	CHECK_RC(txn_inflight_get(txn, URL_B, &f), BG_ENOENT);
	CHECK_OK(txn_inflight_get(txn, URL_C, &f));
	store_inflight_clear(&f);
	return 0;
}

/* Eviction takes the digests with the chunks. */
static int evict_fn(struct bg_txn *txn, void *arg)
{
	struct blob_put *p = arg;
	struct store_enforce_result res;
	unsigned char d[BG_SHA256_LEN];

	CHECK_OK(txn_piece_get(txn, p->blob, 0, d));
	CHECK_OK(txn_enforce_limits(txn, 0, 1000, 90, no_job_unfinished, &res));
	CHECK_EQ_INT(res.evicted, 1);
	CHECK_RC(txn_piece_get(txn, p->blob, 0, d), BG_ENOENT);
	CHECK_RC(txn_piece_get(txn, p->blob, 1, d), BG_ENOENT);
	return 0;
}

static void test_enforce_tombstones(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home);
	int64_t now = 1800000000;
	unsigned char *data = pattern_buf(8, CH + 2);
	struct blob_put p = { .data = data, .len = CH + 2, .content = 1, .key = 1, .url = URL_D,
	                      .pieces = 1 };

	CHECK_OK(store_update(st, enforce_fn, &now));
	CHECK_OK(put_blob(st, &p));
	CHECK_OK(store_update(st, evict_fn, &p));
	store_close(st);
	free(data);
	home_free(home);
}

/* ---- Verify completes piece lists ----------------------------------------- */

struct vfy {
	struct blob_put *a, *b;
	unsigned char wrong[BG_SHA256_LEN];
};

static int vfy_wrong_fn(struct bg_txn *txn, void *arg)
{
	struct vfy *v = arg;

	return txn_piece_put(txn, v->b->blob, 1, v->wrong);
}

static int vfy_check_fn(struct bg_txn *txn, void *arg)
{
	struct vfy *v = arg;
	struct fill_check c = { .p = v->a };

	CHECK_OK(fill_check_fn(txn, &c));
	CHECK(c.complete);
	CHECK_EQ_INT(c.have, 3);
	c.p = v->b;
	CHECK_OK(fill_check_fn(txn, &c));
	CHECK(c.complete);
	CHECK_EQ_INT(c.have, 2);
	return 0;
}

static int vfy_pre_fn(struct bg_txn *txn, void *arg)
{
	struct vfy *v = arg;
	unsigned char d[BG_SHA256_LEN];
	bool complete = true;

	CHECK_OK(txn_content_pieces_complete(txn, v->a->sha, &complete));
	CHECK(!complete);
	CHECK_OK(txn_content_pieces_complete(txn, v->b->sha, &complete));
	CHECK(complete);
	CHECK_OK(txn_piece_get(txn, v->b->blob, 1, d));
	CHECK_EQ_MEM(d, v->wrong, BG_SHA256_LEN);
	return 0;
}

static void test_verify_pieces(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home);
	unsigned char *data = pattern_buf(7, 3 * CH);
	struct blob_put a = { .data = data, .len = 2 * CH + 3, .content = 1, .key = 1, .url = URL_A };
	struct blob_put b = { .data = data + 1, .len = 2 * CH, .content = 1, .key = 1, .url = URL_B,
	                      .pieces = 1 };
	struct store_verify_stats vs;
	struct vfy v = { &a, &b, { 0 } };
	memset(v.wrong, 0x77, sizeof(v.wrong));
	CHECK_OK(put_blob(st, &a));
	CHECK_OK(put_blob(st, &b));
	CHECK_OK(store_update(st, vfy_wrong_fn, &v));
	/* a has no list; b's is complete but its second digest is wrong */
	CHECK_OK(store_view(st, vfy_pre_fn, &v));
	CHECK_OK(store_verify(st, NULL, NULL, &vs));
	CHECK_EQ_INT(vs.entries, 2);
	CHECK_EQ_INT(vs.corrupt, 0);
	CHECK_OK(store_view(st, vfy_check_fn, &v));
	store_close(st);
	free(data);
	home_free(home);
}

int main(void)
{
	test_pieces();
	test_pieces_go_with_chunks();
	test_pieces_fill();
	test_pieces_fill_next();
	test_inflight_records();
	test_read_inflight();
	test_read_inflight_dedup();
	test_inflight_lock();
	test_upgrade_v3();
	test_fetch_policy_text();
	test_fetch_policy_acceptable();
	test_key_fetch();
	test_sign_fields();
	test_gc();
	test_enforce_tombstones();
	test_verify_pieces();
	return check_done();
}
