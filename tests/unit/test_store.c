/*
 * test_store.c - unit tests of cache/: the error table, the digest helpers
 * and the LMDB store (records, chunked content, map growth in one and in
 * two processes, garbage collection, damaged records, read-only use).
 *
 * Every test works in a fresh mkdtemp() home under /tmp, removed at the end.
 * Damaged records are written with plain LMDB calls while the store is
 * closed, since LMDB forbids one process to open an environment twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
#define JOB_B "bbbbbbbb-0000-4000-8000-000000000002"
#define JOB_C "cccccccc-0000-4000-8000-000000000003"
#define MIB ((uint64_t)1 << 20)

/* ---- Helpers ------------------------------------------------------------- */

/* The agent's reading of a file record for store_gc() (its schema, not the
 * store's): a positive integer "blob" names a blob. */
static int test_blob_of(const void *rec, size_t len, uint64_t *blob)
{
	json_t *j = json_loadb(rec, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
	json_int_t b = json_integer_value(json_object_get(j, "blob"));
	int rc = json_is_object(j) ? 0 : BG_ECORRUPT;

	*blob = b > 0 ? (uint64_t)b : 0;
	json_decref(j);
	return rc;
}

/* A caller's reading that refuses every file record. */
static int refusing_blob_of(const void *rec, size_t len, uint64_t *blob)
{
	(void)rec;
	(void)len;
	*blob = 0;
	return BG_EACCES;
}

static char *home_new(void)
{
	char tmpl[] = "/tmp/bgstore-test-XXXXXX";
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

/* Counts this process's descriptors of the store that a program it starts
 * would inherit (no FD_CLOEXEC). */
static int store_fds_cloexec(const char *home)
{
	char link[64];
	char target[4096];
	char prefix[4096];
	int leaks = 0;

	snprintf(prefix, sizeof(prefix), "%s/store.mdb", home);
	for (int fd = 0; fd < 1024; fd++) {
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, prefix, strlen(prefix)) == 0 && !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
			leaks++;
	}
	return leaks;
}

static struct bg_store *open_rw(const char *home, uint64_t map)
{
	struct store_options opts = { .initial_map_bytes = map };
	struct bg_store *st = NULL;

	CHECK_OK(store_open(home, 0, &opts, &st));
	return st;
}

/* Deterministic bytes of a content at a given offset. */
static unsigned char pattern(uint64_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;

	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return (unsigned char)x;
}

static unsigned char *pattern_buf(uint64_t seed, size_t len)
{
	unsigned char *p = malloc(len ? len : 1);

	for (size_t i = 0; i < len; i++)
		p[i] = pattern(seed, i);
	return p;
}

/* Writes, with raw LMDB, one record of a named database of a closed store;
 * data NULL deletes it.  Returns the LMDB code. */
static int raw_put(const char *home, const char *db, const void *key, size_t klen,
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
		rc = mdb_env_set_mapsize(env, 256 * MIB);
	if (rc == 0)
		rc = mdb_env_open(env, home_file(home, "store.mdb"), MDB_NOSUBDIR, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, 0, &txn);
	if (rc == 0)
		rc = mdb_dbi_open(txn, db, MDB_CREATE, &dbi);
	if (rc == 0)
		rc = data != NULL ? mdb_put(txn, dbi, &k, &v, 0) : mdb_del(txn, dbi, &k, NULL);
	if (rc == 0) {
		rc = mdb_txn_commit(txn);
		txn = NULL;
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return rc;
}

/* Reads one record with raw LMDB into buf; returns the LMDB code. */
static int raw_get(const char *home, const char *db, const void *key, size_t klen,
                   void *buf, size_t cap, size_t *len)
{
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	MDB_dbi dbi;
	MDB_val k = { klen, (void *)key };
	MDB_val v;
	int rc;

	*len = 0;
	rc = mdb_env_create(&env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(env, 16);
	if (rc == 0)
		rc = mdb_env_open(env, home_file(home, "store.mdb"), MDB_NOSUBDIR | MDB_RDONLY, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc == 0)
		rc = mdb_dbi_open(txn, db, 0, &dbi);
	if (rc == 0)
		rc = mdb_get(txn, dbi, &k, &v);
	if (rc == 0) {
		*len = v.mv_size;
		memcpy(buf, v.mv_data, v.mv_size < cap ? v.mv_size : cap);
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return rc;
}

static void blob_key(unsigned char key[16], uint64_t blob, uint64_t index)
{
	for (int i = 0; i < 8; i++) {
		key[i] = (unsigned char)(blob >> (56 - 8 * i));
		key[8 + i] = (unsigned char)(index >> (56 - 8 * i));
	}
}

/* Stores len bytes of pattern(seed) as blob chunks and a content record, in
 * updates of at most chunks_per_txn chunks.  *sha receives the digest. */
struct put_content {
	const unsigned char *data;
	size_t len;
	uint64_t blob;
	uint64_t first;     /* first chunk of this update */
	uint64_t count;     /* chunks in this update */
	int last;           /* write the content record too */
	unsigned char sha[BG_SHA256_LEN];
	int calls;          /* how often fn ran: retries after map growth */
};

static int put_content_fn(struct bg_txn *txn, void *arg)
{
	struct put_content *p = arg;
	int rc = 0;

	p->calls++;
	/* The first update allocates the blob.  When it is run again after
	 * map growth, the earlier allocation was rolled back with the rest of
	 * the txn, so it must allocate again rather than reuse p->blob. */
	if (p->first == 0)
		rc = txn_blob_new(txn, &p->blob);
	for (uint64_t i = p->first; rc == 0 && i < p->first + p->count; i++) {
		size_t off = (size_t)i * STORE_CHUNK_BYTES;
		size_t n = p->len - off < STORE_CHUNK_BYTES ? p->len - off : STORE_CHUNK_BYTES;

		rc = txn_blob_put(txn, p->blob, i, p->data + off, n);
	}
	if (rc == 0 && p->last) {
		struct store_content c = { .blob = p->blob, .size = p->len, .created = 10,
			                   .last_used_ns = 20 };

		rc = txn_content_put(txn, p->sha, &c);
	}
	return rc;
}

static int store_put_content(struct bg_store *st, const unsigned char *data, size_t len,
                             uint64_t chunks_per_txn, unsigned char sha[BG_SHA256_LEN],
                             int *calls, int *updates)
{
	struct put_content p = { .data = data, .len = len };
	uint64_t nchunks = (len + STORE_CHUNK_BYTES - 1) / STORE_CHUNK_BYTES;

	if (nchunks == 0)
		nchunks = 1;
	int rc = 0;

	bg_sha256(data, len, p.sha);
	if (updates != NULL)
		*updates = 0;
	do {
		p.count = nchunks - p.first < chunks_per_txn ? nchunks - p.first : chunks_per_txn;
		p.last = p.first + p.count == nchunks;
		rc = store_update(st, put_content_fn, &p);
		if (updates != NULL)
			(*updates)++;
		p.first += p.count;
	} while (rc == 0 && !p.last);
	memcpy(sha, p.sha, BG_SHA256_LEN);
	if (calls != NULL)
		*calls = p.calls;
	return rc;
}

/* ---- Errors and digests -------------------------------------------------- */

static void test_errors(void)
{
	CHECK_EQ_STR(bg_err_name(BG_ENOENT), "BG_ENOENT");
	CHECK_EQ_STR(bg_err_name(BG_EAGAIN), "BG_EAGAIN");
	CHECK_EQ_STR(bg_err_name(0), "BG_OK");
	CHECK_EQ_STR(bg_err_name(-999), "BG_UNKNOWN");
	CHECK_EQ_STR(bg_strerror(BG_ECORRUPT), "store record is damaged");
	CHECK_EQ_STR(bg_strerror(12345), "unknown error");
	CHECK_EQ_INT(bg_err_from_errno(ENOMEM), BG_ENOMEM);
	CHECK_EQ_INT(bg_err_from_errno(EDQUOT), BG_ENOSPC);
	CHECK_EQ_INT(bg_err_from_errno(EROFS), BG_EACCES);
	CHECK_EQ_INT(bg_err_from_errno(EPERM), BG_EACCES);
	CHECK_EQ_INT(bg_err_from_errno(EWOULDBLOCK), BG_EAGAIN);
	CHECK_EQ_INT(bg_err_from_errno(EPIPE), BG_EIO);
}

static void test_digest(void)
{
	unsigned char d[BG_SHA256_LEN];
	unsigned char e[BG_SHA256_LEN];
	char hex[BG_SHA256_HEX_LEN + 1];

	bg_sha256("abc", 3, d);
	bg_sha256_hex(d, hex);
	CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	bg_sha256("", 0, d);
	bg_sha256_hex(d, hex);
	CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	CHECK_OK(bg_sha256_from_hex(hex, e));
	CHECK_EQ_MEM(d, e, BG_SHA256_LEN);
	CHECK_OK(bg_sha256_from_hex(
		"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", e));
	CHECK_EQ_MEM(d, e, BG_SHA256_LEN);
	CHECK_RC(bg_sha256_from_hex("e3b0", e), BG_EINVAL);
	CHECK_RC(bg_sha256_from_hex(
			 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550", e),
		 BG_EINVAL);
	CHECK_RC(bg_sha256_from_hex(
			 "g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", e),
		 BG_EINVAL);
	CHECK_RC(bg_sha256_from_hex(NULL, e), BG_EINVAL);
}

/* ---- Open, close, version ------------------------------------------------ */

static void test_open(void)
{
	char *home = home_new();
	struct bg_store *st = NULL;
	unsigned char buf[16];
	size_t len;
	struct stat sb;

	CHECK_RC(store_open(NULL, 0, NULL, &st), BG_EINVAL);
	CHECK_RC(store_open("/nonexistent/bgcopy-home", 0, NULL, &st), BG_ENOENT);
	CHECK(st == NULL);

	CHECK_OK(store_open(home, 0, NULL, &st));
	CHECK(store_map_bytes(st) >= ((uint64_t)1 << 30));
	CHECK_EQ_INT(store_fds_cloexec(home), 0);
	CHECK(stat(home_file(home, "store.mdb"), &sb) == 0 && (sb.st_mode & 0777) == 0600);
	CHECK(stat(home_file(home, "store.mdb-lock"), &sb) == 0 && (sb.st_mode & 0777) == 0600);
	CHECK_OK(store_sync(st));
	store_close(st);
	store_close(NULL);

	/* Reopen, then look at the version record with plain LMDB. */
	st = NULL;
	CHECK_OK(store_open(home, 0, NULL, &st));
	store_close(st);
	CHECK_EQ_INT(raw_get(home, "meta", "version", 7, buf, sizeof(buf), &len), 0);
	CHECK_EQ_INT(len, 8);
	CHECK(len == 8 && buf[0] == 4 && buf[1] == 0 && buf[7] == 0);

	/* A newer format is refused, a damaged version record too. */
	memset(buf, 0, 8);
	buf[0] = 5;
	CHECK_EQ_INT(raw_put(home, "meta", "version", 7, buf, 8), 0);
	st = NULL;
	CHECK_RC(store_open(home, 0, NULL, &st), BG_EVERSION);
	CHECK_RC(store_open(home, STORE_RDONLY, NULL, &st), BG_EVERSION);
	CHECK(st == NULL);
	CHECK_EQ_INT(raw_put(home, "meta", "version", 7, buf, 3), 0);
	CHECK_RC(store_open(home, 0, NULL, &st), BG_ECORRUPT);
	buf[0] = 1;
	CHECK_EQ_INT(raw_put(home, "meta", "version", 7, buf, 8), 0);
	CHECK_OK(store_open(home, 0, NULL, &st));
	store_close(st);
	home_free(home);
}

/* ---- Jobs and files ------------------------------------------------------ */

static int jobs_put_fn(struct bg_txn *txn, void *arg)
{
	json_t *a = json_pack("{s:s, s:i}", "name", "first", "state", 1);
	json_t *b = json_pack("{s:s}", "name", "second");
	json_t *f = NULL;
	int rc;

	(void)arg;
	/* B goes in first: the walk must still give id order. */
	rc = txn_job_put(txn, JOB_B, b);
	if (rc == 0)
		rc = txn_job_put(txn, JOB_A, a);
	for (int i = 0; rc == 0 && i < 3; i++) {
		f = json_pack("{s:i}", "index", i);
		rc = txn_file_put(txn, JOB_A, (uint32_t)i, f);
		json_decref(f);
	}
	if (rc == 0) {
		f = json_pack("{s:s}", "name", "b0");
		rc = txn_file_put(txn, JOB_B, 0, f);
		json_decref(f);
	}
	json_decref(a);
	json_decref(b);
	return rc;
}

struct job_list {
	char ids[8][STORE_JOB_ID_LEN + 1];
	int n;
	int stop_after;
	struct bg_txn *txn; /* to delete from inside the walk */
};

static int job_list_fn(const char *id, json_t *rec, void *arg)
{
	struct job_list *l = arg;

	if (!json_is_object(rec))
		return BG_EINVAL;
	if (l->n < 8)
		snprintf(l->ids[l->n], sizeof(l->ids[0]), "%s", id);
	l->n++;
	if (l->txn != NULL)
		return txn_job_del(l->txn, id);
	return l->stop_after != 0 && l->n == l->stop_after ? 77 : 0;
}

static int jobs_view_fn(struct bg_txn *txn, void *arg)
{
	struct job_list list = { .n = 0 };
	json_t *rec = NULL;
	json_t *junk = json_pack("{s:i}", "x", 1);
	uint32_t n = 99;

	(void)arg;
	CHECK_OK(txn_job_get(txn, JOB_A, &rec));
	CHECK_EQ_STR(json_string_value(json_object_get(rec, "name")), "first");
	CHECK_EQ_INT(json_integer_value(json_object_get(rec, "state")), 1);
	json_decref(rec);
	CHECK_RC(txn_job_get(txn, JOB_C, &rec), BG_ENOENT);
	CHECK(rec == NULL);
	CHECK_RC(txn_job_get(txn, "short-id", &rec), BG_EINVAL);

	CHECK_OK(txn_job_each(txn, job_list_fn, &list));
	CHECK_EQ_INT(list.n, 2);
	CHECK_EQ_STR(list.ids[0], JOB_A);
	CHECK_EQ_STR(list.ids[1], JOB_B);
	memset(&list, 0, sizeof(list));
	list.stop_after = 1;
	CHECK_RC(txn_job_each(txn, job_list_fn, &list), 77);
	CHECK_EQ_INT(list.n, 1);

	CHECK_OK(txn_file_count(txn, JOB_A, &n));
	CHECK_EQ_INT(n, 3);
	CHECK_OK(txn_file_count(txn, JOB_B, &n));
	CHECK_EQ_INT(n, 1);
	CHECK_OK(txn_file_count(txn, JOB_C, &n));
	CHECK_EQ_INT(n, 0);
	CHECK_OK(txn_file_get(txn, JOB_A, 1, &rec));
	CHECK_EQ_INT(json_integer_value(json_object_get(rec, "index")), 1);
	json_decref(rec);
	CHECK_RC(txn_file_get(txn, JOB_A, 3, &rec), BG_ENOENT);

	/* Writes in a read txn. */
	CHECK_RC(txn_job_put(txn, JOB_C, junk), BG_ERDONLY);
	CHECK_RC(txn_job_del(txn, JOB_A), BG_ERDONLY);
	CHECK_RC(txn_file_put(txn, JOB_A, 9, junk), BG_ERDONLY);
	json_decref(junk);
	return 0;
}

static int jobs_del_a_fn(struct bg_txn *txn, void *arg)
{
	(void)arg;
	return txn_job_del(txn, JOB_A);
}

static int jobs_after_del_fn(struct bg_txn *txn, void *arg)
{
	json_t *rec = NULL;
	uint32_t n = 99;

	(void)arg;
	CHECK_RC(txn_job_get(txn, JOB_A, &rec), BG_ENOENT);
	CHECK_OK(txn_file_count(txn, JOB_A, &n));
	CHECK_EQ_INT(n, 0);
	CHECK_RC(txn_file_get(txn, JOB_A, 0, &rec), BG_ENOENT);
	CHECK_OK(txn_file_count(txn, JOB_B, &n));
	CHECK_EQ_INT(n, 1);
	CHECK_OK(txn_job_get(txn, JOB_B, &rec));
	json_decref(rec);
	return 0;
}

static int jobs_bad_put_fn(struct bg_txn *txn, void *arg)
{
	json_t *arr = json_pack("[i]", 1);
	json_t *obj = json_pack("{s:i}", "x", 1);
	int rc;

	(void)arg;
	CHECK_RC(txn_job_put(txn, JOB_C, arr), BG_EINVAL);
	CHECK_RC(txn_job_put(txn, JOB_C, NULL), BG_EINVAL);
	CHECK_RC(txn_job_put(txn, "x", obj), BG_EINVAL);
	/* Written, then undone by the error this fn returns. */
	rc = txn_job_put(txn, JOB_C, obj);
	json_decref(arr);
	json_decref(obj);
	return rc == 0 ? BG_ECANCELED : rc;
}

static int jobs_delete_all_fn(struct bg_txn *txn, void *arg)
{
	struct job_list *l = arg;
	json_t *rec = json_pack("{}");
	int rc;

	rc = txn_job_put(txn, JOB_A, rec);
	if (rc == 0)
		rc = txn_job_put(txn, JOB_C, rec);
	json_decref(rec);
	if (rc != 0)
		return rc;
	/* The walk must survive its callback deleting the current record. */
	memset(l, 0, sizeof(*l));
	l->txn = txn;
	rc = txn_job_each(txn, job_list_fn, l);
	l->txn = NULL;
	return rc;
}

static int jobs_count_fn(struct bg_txn *txn, void *arg)
{
	struct job_list *l = arg;

	memset(l, 0, sizeof(*l));
	return txn_job_each(txn, job_list_fn, l);
}

static int nested_view_fn(struct bg_txn *txn, void *arg)
{
	(void)txn;
	return store_view(arg, jobs_count_fn, NULL);
}

static int nested_update_fn(struct bg_txn *txn, void *arg)
{
	(void)txn;
	return store_update(arg, jobs_del_a_fn, NULL);
}

/* Records of every size class come back as they went in ({"t":"...","n":N}
 * is 14 bytes more than its string: 4082 fills the 4096-byte buffer): encoded in one
 * pass below the encoder's stack buffer, in two above it, refused above
 * STORE_RECORD_MAX. */
static int jobs_sizes_fn(struct bg_txn *txn, void *arg)
{
	static const size_t sizes[] = {0, 4070, 4081, 4082, 4083, 4084, 4096, 5000, 200000};
	char *text = malloc(STORE_RECORD_MAX + 1);
	int rc = 0;

	(void)arg;
	if (text == NULL)
		return BG_ENOMEM;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && rc == 0; i++) {
		json_t *rec, *back = NULL;

		memset(text, 'a' + (int)i, sizes[i]);
		text[sizes[i]] = '\0';
		rec = json_pack("{s:s,s:i}", "t", text, "n", (int)i);
		rc = txn_job_put(txn, JOB_C, rec);
		if (rc == 0)
			rc = txn_job_get(txn, JOB_C, &back);
		if (!CHECK(rc == 0 && json_equal(rec, back)))
			fprintf(stderr, "    record with a %zu-byte string\n", sizes[i]);
		json_decref(back);
		json_decref(rec);
	}
	if (rc == 0) {
		json_t *rec;

		memset(text, 'z', STORE_RECORD_MAX);
		text[STORE_RECORD_MAX] = '\0';
		rec = json_pack("{s:s}", "t", text);
		CHECK_RC(txn_job_put(txn, JOB_C, rec), BG_ELIMIT);
		json_decref(rec);
	}
	free(text);
	return rc;
}

static void test_jobs(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct job_list list;

	CHECK_OK(store_update(st, jobs_put_fn, NULL));
	CHECK_OK(store_view(st, jobs_view_fn, NULL));
	CHECK_OK(store_update(st, jobs_del_a_fn, NULL));
	CHECK_OK(store_view(st, jobs_after_del_fn, NULL));
	CHECK_RC(store_update(st, jobs_del_a_fn, NULL), BG_ENOENT);
	CHECK_RC(store_update(st, jobs_bad_put_fn, NULL), BG_ECANCELED);
	CHECK_OK(store_view(st, jobs_count_fn, &list));
	CHECK_EQ_INT(list.n, 1);
	CHECK_OK(store_update(st, jobs_sizes_fn, NULL));

	CHECK_OK(store_update(st, jobs_delete_all_fn, &list));
	CHECK_EQ_INT(list.n, 3);
	CHECK_OK(store_view(st, jobs_count_fn, &list));
	CHECK_EQ_INT(list.n, 0);

	/* Nested transactions are refused rather than risking a deadlock. */
	CHECK_RC(store_update(st, nested_view_fn, st), BG_EINVAL);
	CHECK_RC(store_view(st, nested_update_fn, st), BG_EINVAL);
	CHECK_RC(store_view(st, nested_view_fn, st), BG_EINVAL);
	store_close(st);
	home_free(home);
}

/* ---- Blobs --------------------------------------------------------------- */

struct blob_ctx {
	uint64_t ids[4];
	unsigned char *full;
};

static int blob_put_fn(struct bg_txn *txn, void *arg)
{
	struct blob_ctx *c = arg;
	static const char small[100] = "small";
	int rc;

	rc = txn_blob_new(txn, &c->ids[0]);
	if (rc == 0)
		rc = txn_blob_new(txn, &c->ids[1]);
	if (rc == 0)
		rc = txn_blob_put(txn, c->ids[0], 0, c->full, STORE_CHUNK_BYTES);
	if (rc == 0)
		rc = txn_blob_put(txn, c->ids[0], 1, small, sizeof(small));
	if (rc == 0)
		rc = txn_blob_put(txn, c->ids[0], 2, small, 50);
	if (rc == 0)
		rc = txn_blob_put(txn, c->ids[1], 0, small, 10);
	CHECK_RC(txn_blob_put(txn, c->ids[1], 1, c->full, STORE_CHUNK_BYTES + 1), BG_EINVAL);
	CHECK_RC(txn_blob_put(txn, 0, 0, small, 10), BG_EINVAL);
	return rc;
}

static int blob_check_fn(struct bg_txn *txn, void *arg)
{
	struct blob_ctx *c = arg;
	const void *data = NULL;
	size_t len = 0;

	CHECK_EQ_INT(c->ids[0], 1);
	CHECK_EQ_INT(c->ids[1], 2);
	CHECK_OK(txn_blob_get(txn, c->ids[0], 0, &data, &len));
	CHECK_EQ_INT(len, STORE_CHUNK_BYTES);
	CHECK_EQ_MEM(data, c->full, STORE_CHUNK_BYTES);
	CHECK_OK(txn_blob_get(txn, c->ids[0], 1, &data, &len));
	CHECK_EQ_INT(len, 100);
	CHECK_EQ_STR(data, "small");
	CHECK_OK(txn_blob_get(txn, c->ids[0], 2, &data, &len));
	CHECK_EQ_INT(len, 50);
	CHECK_RC(txn_blob_get(txn, c->ids[0], 3, &data, &len), BG_ENOENT);
	CHECK(data == NULL && len == 0);
	CHECK_OK(txn_blob_get(txn, c->ids[1], 0, &data, &len));
	CHECK_EQ_INT(len, 10);
	CHECK_RC(txn_blob_truncate(txn, c->ids[0], 1), BG_ERDONLY);
	CHECK_RC(txn_blob_new(txn, &c->ids[3]), BG_ERDONLY);
	return 0;
}

static int blob_trunc_fn(struct bg_txn *txn, void *arg)
{
	struct blob_ctx *c = arg;
	int rc = txn_blob_truncate(txn, c->ids[0], 1);

	if (rc == 0)
		rc = txn_blob_truncate(txn, c->ids[1], 0);
	/* Truncating what is not there is not an error. */
	if (rc == 0)
		rc = txn_blob_truncate(txn, 999, 0);
	if (rc == 0)
		rc = txn_blob_new(txn, &c->ids[2]);
	return rc;
}

static int blob_after_trunc_fn(struct bg_txn *txn, void *arg)
{
	struct blob_ctx *c = arg;
	const void *data;
	size_t len;

	CHECK_OK(txn_blob_get(txn, c->ids[0], 0, &data, &len));
	CHECK_RC(txn_blob_get(txn, c->ids[0], 1, &data, &len), BG_ENOENT);
	CHECK_RC(txn_blob_get(txn, c->ids[0], 2, &data, &len), BG_ENOENT);
	CHECK_RC(txn_blob_get(txn, c->ids[1], 0, &data, &len), BG_ENOENT);
	CHECK_EQ_INT(c->ids[2], 3);
	return 0;
}

static int blob_new_fn(struct bg_txn *txn, void *arg)
{
	return txn_blob_new(txn, arg);
}

static void test_blobs(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct blob_ctx c = { .full = pattern_buf(1, STORE_CHUNK_BYTES) };
	uint64_t id = 0;

	CHECK_OK(store_update(st, blob_put_fn, &c));
	CHECK_OK(store_view(st, blob_check_fn, &c));
	CHECK_OK(store_update(st, blob_trunc_fn, &c));
	CHECK_OK(store_view(st, blob_after_trunc_fn, &c));
	store_close(st);
	/* Ids survive a reopen and are never reused. */
	st = open_rw(home, 0);
	CHECK_OK(store_update(st, blob_new_fn, &id));
	CHECK_EQ_INT(id, 4);
	store_close(st);
	free(c.full);
	home_free(home);
}

/* ---- Content ------------------------------------------------------------- */

struct content_ctx {
	unsigned char sha[BG_SHA256_LEN];
	uint64_t blob;
	int seen;
};

static int content_put_fn(struct bg_txn *txn, void *arg)
{
	struct content_ctx *c = arg;
	struct store_content rec = { .size = 11, .created = 100, .last_used_ns = -5 };
	int rc;

	rc = txn_blob_new(txn, &c->blob);
	rec.blob = c->blob;
	if (rc == 0)
		rc = txn_blob_put(txn, c->blob, 0, "content one", 11);
	if (rc == 0)
		rc = txn_content_put(txn, c->sha, &rec);
	rec.blob = 0;
	CHECK_RC(txn_content_put(txn, c->sha, &rec), BG_EINVAL);
	return rc;
}

static int content_seen_fn(const unsigned char sha[BG_SHA256_LEN], const struct store_content *rec,
                           void *arg)
{
	struct content_ctx *c = arg;

	CHECK_EQ_MEM(sha, c->sha, BG_SHA256_LEN);
	CHECK_EQ_INT(rec->blob, c->blob);
	c->seen++;
	return 0;
}

static int content_check_fn(struct bg_txn *txn, void *arg)
{
	struct content_ctx *c = arg;
	struct store_content rec;
	unsigned char other[BG_SHA256_LEN] = { 1 };

	CHECK_OK(txn_content_get(txn, c->sha, &rec));
	CHECK_EQ_INT(rec.blob, c->blob);
	CHECK_EQ_INT(rec.size, 11);
	CHECK_EQ_INT(rec.created, 100);
	CHECK_EQ_INT(rec.last_used_ns, -5);
	CHECK_RC(txn_content_get(txn, other, &rec), BG_ENOENT);
	c->seen = 0;
	CHECK_OK(txn_content_each(txn, content_seen_fn, c));
	CHECK_EQ_INT(c->seen, 1);
	CHECK_RC(txn_content_del(txn, c->sha), BG_ERDONLY);
	return 0;
}

static int content_del_fn(struct bg_txn *txn, void *arg)
{
	struct content_ctx *c = arg;

	return txn_content_del(txn, c->sha);
}

static int content_gone_fn(struct bg_txn *txn, void *arg)
{
	struct content_ctx *c = arg;
	struct store_content rec;
	const void *data;
	size_t len;

	CHECK_RC(txn_content_get(txn, c->sha, &rec), BG_ENOENT);
	CHECK_RC(txn_blob_get(txn, c->blob, 0, &data, &len), BG_ENOENT);
	return 0;
}

static void test_content(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct content_ctx c;

	bg_sha256("content one", 11, c.sha);
	CHECK_OK(store_update(st, content_put_fn, &c));
	CHECK_OK(store_view(st, content_check_fn, &c));
	CHECK_OK(store_update(st, content_del_fn, &c));
	CHECK_OK(store_view(st, content_gone_fn, &c));
	CHECK_RC(store_update(st, content_del_fn, &c), BG_ENOENT);
	store_close(st);
	home_free(home);
}

/* ---- Keys ---------------------------------------------------------------- */

#define URL_PUBLIC "https://example.com/pub/file.iso"
#define URL_PRIVATE "https://example.com/private/report.pdf?token=x"

struct key_ctx {
	unsigned char sha[BG_SHA256_LEN];
	char urls[4][128];
	int n;
};

static int key_put_fn(struct bg_txn *txn, void *arg)
{
	struct key_ctx *c = arg;
	struct store_key pub = { .url = URL_PUBLIC, .size = 1234, .etag = "\"abc\"",
		                 .last_modified = "Mon, 01 Jan 2024 00:00:00 GMT",
		                 .date = "Tue, 02 Jan 2024 00:00:00 GMT",
		                 .stored = 1700000000, .validated = 1700000500 };
	struct store_key priv = { .url = URL_PRIVATE, .size = 0, .stored = -1,
		                  .validated = 0, .flags = STORE_KEY_PRIVATE };
	struct store_key only = { .url = URL_PRIVATE "2", .flags = STORE_KEY_PRIVATE };
	int rc;

	memcpy(pub.sha256, c->sha, BG_SHA256_LEN);
	memcpy(priv.sha256, c->sha, BG_SHA256_LEN);
	/* Content named by a private key alone (not kept as content here:
	 * the references are what txn_content_shared reads). */
	bg_sha256("private only", 12, only.sha256);
	rc = txn_key_put(txn, &pub);
	if (rc == 0)
		rc = txn_key_put(txn, &priv);
	if (rc == 0)
		rc = txn_key_put(txn, &only);
	return rc;
}

static int key_seen_fn(const struct store_key *k, void *arg)
{
	struct key_ctx *c = arg;

	if (c->n < 4)
		snprintf(c->urls[c->n], sizeof(c->urls[0]), "%s", k->url);
	c->n++;
	return 0;
}

static int key_check_fn(struct bg_txn *txn, void *arg)
{
	struct key_ctx *c = arg;
	struct store_key k;
	unsigned char h1[BG_SHA256_LEN];
	unsigned char h2[BG_SHA256_LEN];

	CHECK_OK(txn_key_get(txn, URL_PUBLIC, &k));
	CHECK_EQ_STR(k.url, URL_PUBLIC);
	CHECK_EQ_MEM(k.sha256, c->sha, BG_SHA256_LEN);
	CHECK_EQ_INT(k.size, 1234);
	CHECK_EQ_STR(k.etag, "\"abc\"");
	CHECK_EQ_STR(k.last_modified, "Mon, 01 Jan 2024 00:00:00 GMT");
	CHECK_EQ_STR(k.date, "Tue, 02 Jan 2024 00:00:00 GMT");
	CHECK_EQ_INT(k.stored, 1700000000);
	CHECK_EQ_INT(k.validated, 1700000500);
	CHECK_EQ_INT(k.flags, 0);
	store_key_clear(&k);
	CHECK(k.url == NULL);
	store_key_clear(NULL);

	CHECK_OK(txn_key_get(txn, URL_PRIVATE, &k));
	CHECK_EQ_INT(k.flags, STORE_KEY_PRIVATE);
	CHECK(k.etag == NULL);
	CHECK(k.last_modified == NULL);
	CHECK(k.date == NULL);
	CHECK_EQ_INT(k.stored, -1);
	store_key_clear(&k);

	/* Shared: a key that is not private names the content. */
	{
		unsigned char other[BG_SHA256_LEN], none[BG_SHA256_LEN];
		bool shared = false;

		CHECK_OK(txn_content_shared(txn, c->sha, &shared));
		CHECK(shared);
		bg_sha256("private only", 12, other);
		CHECK_OK(txn_content_shared(txn, other, &shared));
		CHECK(!shared);
		bg_sha256("no key at all", 13, none);
		CHECK_OK(txn_content_shared(txn, none, &shared));
		CHECK(!shared);
	}

	CHECK_RC(txn_key_get(txn, "https://example.com/none", &k), BG_ENOENT);
	CHECK_RC(txn_key_get(txn, "", &k), BG_ENOENT);

	c->n = 0;
	CHECK_OK(txn_key_each(txn, key_seen_fn, c));
	CHECK_EQ_INT(c->n, 3);
	/* Walk order is SHA-256(url) order. */
	bg_sha256(c->urls[0], strlen(c->urls[0]), h1);
	bg_sha256(c->urls[1], strlen(c->urls[1]), h2);
	CHECK(memcmp(h1, h2, BG_SHA256_LEN) < 0);
	CHECK_RC(txn_key_del(txn, URL_PUBLIC), BG_ERDONLY);
	return 0;
}

static int key_limits_fn(struct bg_txn *txn, void *arg)
{
	size_t n = STORE_URL_MAX + 2;
	char *url = malloc(n);
	char *tag = malloc(STORE_VALIDATOR_MAX + 2);
	struct store_key k = { .url = url };
	struct store_key got;
	int rc;

	(void)arg;
	memset(url, 'u', n - 1);
	url[n - 1] = '\0';
	CHECK_RC(txn_key_put(txn, &k), BG_ELIMIT);
	url[STORE_URL_MAX] = '\0';
	rc = txn_key_put(txn, &k);
	CHECK_OK(rc);
	CHECK_OK(txn_key_get(txn, url, &got));
	CHECK_EQ_INT(strlen(got.url), STORE_URL_MAX);
	store_key_clear(&got);
	memset(tag, 't', STORE_VALIDATOR_MAX + 1);
	tag[STORE_VALIDATOR_MAX + 1] = '\0';
	k.etag = tag;
	CHECK_RC(txn_key_put(txn, &k), BG_ELIMIT);
	k.etag = NULL;
	k.last_modified = tag;
	CHECK_RC(txn_key_put(txn, &k), BG_ELIMIT);
	k.last_modified = NULL;
	k.url = "";
	CHECK_RC(txn_key_put(txn, &k), BG_EINVAL);
	k.url = "https://example.com/\xff";
	CHECK_RC(txn_key_put(txn, &k), BG_EINVAL);
	k.url = "https://example.com/ok";
	k.size = (uint64_t)INT64_MAX + 1;
	CHECK_RC(txn_key_put(txn, &k), BG_EINVAL);
	CHECK_RC(txn_key_put(txn, NULL), BG_EINVAL);
	free(url);
	free(tag);
	return rc;
}

static int key_del_fn(struct bg_txn *txn, void *arg)
{
	return txn_key_del(txn, arg);
}

static int key_after_del_fn(struct bg_txn *txn, void *arg)
{
	struct key_ctx *c = arg;
	struct store_key k;

	CHECK_RC(txn_key_get(txn, URL_PUBLIC, &k), BG_ENOENT);
	CHECK_OK(txn_key_get(txn, URL_PRIVATE, &k));
	store_key_clear(&k);
	c->n = 0;
	CHECK_OK(txn_key_each(txn, key_seen_fn, c));
	/* The two private keys and the longest URL of key_limits_fn. */
	CHECK_EQ_INT(c->n, 3);
	return 0;
}

static void test_keys(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct key_ctx c;

	bg_sha256("some content", 12, c.sha);
	CHECK_OK(store_update(st, key_put_fn, &c));
	CHECK_OK(store_view(st, key_check_fn, &c));
	CHECK_OK(store_update(st, key_limits_fn, NULL));
	CHECK_OK(store_update(st, key_del_fn, URL_PUBLIC));
	CHECK_RC(store_update(st, key_del_fn, URL_PUBLIC), BG_ENOENT);
	CHECK_OK(store_view(st, key_after_del_fn, &c));
	store_close(st);
	home_free(home);
}

/* ---- Dedupe and garbage collection --------------------------------------- */

struct dedupe_ctx {
	unsigned char sha[BG_SHA256_LEN];
	uint64_t blob;
};

static int dedupe_put_fn(struct bg_txn *txn, void *arg)
{
	struct dedupe_ctx *c = arg;
	struct store_key k1 = { .url = "https://a.example/x.bin", .size = 5 };
	struct store_key k2 = { .url = "https://mirror.example/x.bin", .size = 5 };
	struct store_content rec = { .size = 5 };
	int rc;

	rc = txn_blob_new(txn, &c->blob);
	rec.blob = c->blob;
	memcpy(k1.sha256, c->sha, BG_SHA256_LEN);
	memcpy(k2.sha256, c->sha, BG_SHA256_LEN);
	if (rc == 0)
		rc = txn_blob_put(txn, c->blob, 0, "hello", 5);
	if (rc == 0)
		rc = txn_content_put(txn, c->sha, &rec);
	if (rc == 0)
		rc = txn_key_put(txn, &k1);
	if (rc == 0)
		rc = txn_key_put(txn, &k2);
	return rc;
}

static int dedupe_check_fn(struct bg_txn *txn, void *arg)
{
	struct dedupe_ctx *c = arg;
	struct store_key k1;
	struct store_key k2;
	struct store_content rec;

	CHECK_OK(txn_key_get(txn, "https://a.example/x.bin", &k1));
	CHECK_OK(txn_key_get(txn, "https://mirror.example/x.bin", &k2));
	CHECK_EQ_MEM(k1.sha256, k2.sha256, BG_SHA256_LEN);
	CHECK_OK(txn_content_get(txn, k1.sha256, &rec));
	CHECK_EQ_INT(rec.blob, c->blob);
	store_key_clear(&k1);
	store_key_clear(&k2);
	return 0;
}

static void test_dedupe(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct dedupe_ctx c;
	uint64_t entries = 99;
	uint64_t bytes = 99;
	unsigned char buf[8];
	size_t got = 0;

	bg_sha256("hello", 5, c.sha);
	CHECK_OK(store_update(st, dedupe_put_fn, &c));
	CHECK_OK(store_view(st, dedupe_check_fn, &c));
	CHECK_OK(store_gc(st, test_blob_of, &entries, &bytes));
	CHECK_EQ_INT(entries, 0);
	CHECK_EQ_INT(bytes, 0);
	CHECK_OK(store_update(st, key_del_fn, "https://a.example/x.bin"));
	CHECK_OK(store_gc(st, test_blob_of, &entries, &bytes));
	CHECK_EQ_INT(entries, 0);
	CHECK_OK(store_read_content(st, c.sha, 0, buf, sizeof(buf), &got));
	CHECK_EQ_INT(got, 5);
	CHECK_EQ_MEM(buf, "hello", 5);
	CHECK_OK(store_update(st, key_del_fn, "https://mirror.example/x.bin"));
	CHECK_OK(store_gc(st, test_blob_of, &entries, &bytes));
	CHECK_EQ_INT(entries, 1);
	CHECK_EQ_INT(bytes, 5);
	CHECK_RC(store_read_content(st, c.sha, 0, buf, sizeof(buf), &got), BG_ENOENT);
	store_close(st);
	home_free(home);
}

struct gc_ctx {
	unsigned char sha_a[BG_SHA256_LEN], sha_b[BG_SHA256_LEN], sha_e[BG_SHA256_LEN];
	uint64_t a, b, c, d, e;
	unsigned char *big;
};

static int gc_put_fn(struct bg_txn *txn, void *arg)
{
	struct gc_ctx *g = arg;
	struct store_key k = { .url = "https://example.com/a" };
	struct store_content rec = { 0 };
	json_t *f;
	int rc = 0;

	if (rc == 0)
		rc = txn_blob_new(txn, &g->a);
	if (rc == 0)
		rc = txn_blob_new(txn, &g->b);
	if (rc == 0)
		rc = txn_blob_new(txn, &g->c);
	if (rc == 0)
		rc = txn_blob_new(txn, &g->d);
	if (rc == 0)
		rc = txn_blob_new(txn, &g->e);
	/* a: content with a key. */
	if (rc == 0)
		rc = txn_blob_put(txn, g->a, 0, g->big, 1000);
	rec.blob = g->a;
	rec.size = 1000;
	if (rc == 0)
		rc = txn_content_put(txn, g->sha_a, &rec);
	memcpy(k.sha256, g->sha_a, BG_SHA256_LEN);
	if (rc == 0)
		rc = txn_key_put(txn, &k);
	/* b: content nobody points at, two chunks. */
	if (rc == 0)
		rc = txn_blob_put(txn, g->b, 0, g->big, STORE_CHUNK_BYTES);
	if (rc == 0)
		rc = txn_blob_put(txn, g->b, 1, g->big, 500);
	rec.blob = g->b;
	rec.size = STORE_CHUNK_BYTES + 500;
	if (rc == 0)
		rc = txn_content_put(txn, g->sha_b, &rec);
	/* c: an orphan blob. */
	if (rc == 0)
		rc = txn_blob_put(txn, g->c, 0, g->big, 300);
	/* d: a download in progress, named by a file record. */
	if (rc == 0)
		rc = txn_blob_put(txn, g->d, 0, g->big, 400);
	/* e: content nobody points at whose blob a file still names. */
	if (rc == 0)
		rc = txn_blob_put(txn, g->e, 0, g->big, 200);
	rec.blob = g->e;
	rec.size = 200;
	if (rc == 0)
		rc = txn_content_put(txn, g->sha_e, &rec);
	f = json_pack("{}");
	if (rc == 0)
		rc = txn_job_put(txn, JOB_A, f);
	json_decref(f);
	f = json_pack("{s:I}", "blob", (json_int_t)g->d);
	if (rc == 0)
		rc = txn_file_put(txn, JOB_A, 0, f);
	json_decref(f);
	f = json_pack("{s:I}", "blob", (json_int_t)g->e);
	if (rc == 0)
		rc = txn_file_put(txn, JOB_A, 1, f);
	json_decref(f);
	f = json_pack("{s:s}", "blob", "not a number");
	if (rc == 0)
		rc = txn_file_put(txn, JOB_A, 2, f);
	json_decref(f);
	return rc;
}

static int blob_exists(struct bg_txn *txn, uint64_t blob, uint64_t index)
{
	const void *data;
	size_t len;

	return txn_blob_get(txn, blob, index, &data, &len) == 0;
}

static int gc_check_fn(struct bg_txn *txn, void *arg)
{
	struct gc_ctx *g = arg;
	struct store_content rec;

	CHECK_OK(txn_content_get(txn, g->sha_a, &rec));
	CHECK(blob_exists(txn, g->a, 0));
	CHECK_RC(txn_content_get(txn, g->sha_b, &rec), BG_ENOENT);
	CHECK(!blob_exists(txn, g->b, 0));
	CHECK(!blob_exists(txn, g->b, 1));
	CHECK(!blob_exists(txn, g->c, 0));
	CHECK(blob_exists(txn, g->d, 0));
	CHECK_RC(txn_content_get(txn, g->sha_e, &rec), BG_ENOENT);
	CHECK(blob_exists(txn, g->e, 0));
	return 0;
}

static void test_gc(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct gc_ctx g = { .big = pattern_buf(3, STORE_CHUNK_BYTES) };
	uint64_t entries = 0;
	uint64_t bytes = 0;

	bg_sha256("a", 1, g.sha_a);
	bg_sha256("b", 1, g.sha_b);
	bg_sha256("e", 1, g.sha_e);
	CHECK_OK(store_update(st, gc_put_fn, &g));
	CHECK_OK(store_gc(st, test_blob_of, &entries, &bytes));
	/* b (content), c (orphan blob), e (content record only). */
	CHECK_EQ_INT(entries, 3);
	CHECK_EQ_INT(bytes, STORE_CHUNK_BYTES + 500 + 300);
	CHECK_OK(store_view(st, gc_check_fn, &g));
	CHECK_OK(store_gc(st, test_blob_of, &entries, &bytes));
	CHECK_EQ_INT(entries, 0);
	CHECK_EQ_INT(bytes, 0);
	/* What the caller's reader answers stops the collection. */
	CHECK_RC(store_gc(st, refusing_blob_of, &entries, NULL), BG_EACCES);
	CHECK_EQ_INT(entries, 0);
	/* Once the job is gone its blobs are orphans. */
	CHECK_OK(store_update(st, jobs_del_a_fn, NULL));
	CHECK_OK(store_gc(st, test_blob_of, &entries, NULL));
	CHECK_EQ_INT(entries, 2);
	CHECK_OK(store_gc(st, test_blob_of, NULL, NULL));
	/* The caller reads file records: no reader, no collection. */
	CHECK_RC(store_gc(st, NULL, NULL, NULL), BG_EINVAL);
	free(g.big);
	store_close(st);
	home_free(home);
}

/* ---- Reading content ----------------------------------------------------- */

static int chunk_put_fn(struct bg_txn *txn, void *arg)
{
	struct put_content *p = arg;

	return txn_blob_put(txn, p->blob, p->first, p->data, p->len);
}

static int chunk_drop_fn(struct bg_txn *txn, void *arg)
{
	struct put_content *p = arg;

	return txn_blob_truncate(txn, p->blob, p->first);
}

static int content_blob_fn(struct bg_txn *txn, void *arg)
{
	struct put_content *p = arg;
	struct store_content c;
	int rc = txn_content_get(txn, p->sha, &c);

	p->blob = c.blob;
	return rc;
}

static void test_read_content(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	size_t size = 2 * STORE_CHUNK_BYTES + 1000;
	unsigned char *data = pattern_buf(7, size);
	unsigned char *buf = malloc(size + 100);
	unsigned char sha[BG_SHA256_LEN];
	unsigned char none[BG_SHA256_LEN] = { 9 };
	struct put_content p = { 0 };
	size_t got = 0;
	size_t off;
	int ok = 1;

	CHECK_OK(store_put_content(st, data, size, 2, sha, NULL, NULL));

	CHECK_OK(store_read_content(st, sha, 0, buf, size + 100, &got));
	CHECK_EQ_INT(got, size);
	CHECK_EQ_MEM(buf, data, size);
	/* Across the first boundary, into the last chunk, at the end. */
	CHECK_OK(store_read_content(st, sha, STORE_CHUNK_BYTES - 10, buf, 20, &got));
	CHECK_EQ_INT(got, 20);
	CHECK_EQ_MEM(buf, data + STORE_CHUNK_BYTES - 10, 20);
	CHECK_OK(store_read_content(st, sha, 2 * STORE_CHUNK_BYTES - 5, buf, 100, &got));
	CHECK_EQ_INT(got, 100);
	CHECK_EQ_MEM(buf, data + 2 * STORE_CHUNK_BYTES - 5, 100);
	CHECK_OK(store_read_content(st, sha, size - 10, buf, 100, &got));
	CHECK_EQ_INT(got, 10);
	CHECK_EQ_MEM(buf, data + size - 10, 10);
	CHECK_OK(store_read_content(st, sha, size, buf, 100, &got));
	CHECK_EQ_INT(got, 0);
	CHECK_OK(store_read_content(st, sha, size + 12345, buf, 100, &got));
	CHECK_EQ_INT(got, 0);
	CHECK_OK(store_read_content(st, sha, 5, buf, 0, &got));
	CHECK_EQ_INT(got, 0);
	/* Odd-sized pieces, as a peer would ask for them. */
	for (off = 0; off < size; off += got) {
		if (store_read_content(st, sha, off, buf, 77777, &got) != 0 || got == 0 ||
		    memcmp(buf, data + off, got) != 0) {
			ok = 0;
			break;
		}
	}
	CHECK(ok && off == size);
	CHECK_RC(store_read_content(st, none, 0, buf, 10, &got), BG_ENOENT);
	CHECK_RC(store_read_content(st, sha, 0, NULL, 10, &got), BG_EINVAL);

	/* The same into a file (copy_file_range from store.mdb): whole, in odd
	 * pieces, each at its own offset of the file. */
	{
		int fd = open(home_file(home, "out.bin"), O_RDWR | O_CREAT | O_TRUNC, 0600);
		size_t put = 0;

		CHECK(fd >= 0);
		CHECK_OK(store_write_content(st, sha, 0, size + 100, fd, &put));
		CHECK_EQ_INT(put, size);
		CHECK(pread(fd, buf, size + 100, 0) == (ssize_t)size);
		CHECK_EQ_MEM(buf, data, size);
		CHECK(ftruncate(fd, 0) == 0);
		ok = 1;
		for (off = 0; off < size; off += put) {
			if (store_write_content(st, sha, off, 77777, fd, &put) != 0 || put == 0) {
				ok = 0;
				break;
			}
		}
		CHECK(ok && off == size);
		memset(buf, 0, size);
		CHECK(pread(fd, buf, size + 100, 0) == (ssize_t)size);
		CHECK_EQ_MEM(buf, data, size);
		CHECK_OK(store_write_content(st, sha, size, 10, fd, &put));
		CHECK_EQ_INT(put, 0);
		CHECK_RC(store_write_content(st, none, 0, 10, fd, &put), BG_ENOENT);
		CHECK_RC(store_write_content(st, sha, 0, 10, -1, &put), BG_EINVAL);
		close(fd);
	}

	/* A short middle chunk, then a missing one. */
	memcpy(p.sha, sha, BG_SHA256_LEN);
	CHECK_OK(store_view(st, content_blob_fn, &p));
	p.first = 1;
	p.data = data + STORE_CHUNK_BYTES;
	p.len = STORE_CHUNK_BYTES - 1;
	CHECK_OK(store_update(st, chunk_put_fn, &p));
	CHECK_RC(store_read_content(st, sha, 0, buf, size, &got), BG_ECORRUPT);
	CHECK_EQ_INT(got, 0);
	/* The first chunk alone is still fine. */
	CHECK_OK(store_read_content(st, sha, 0, buf, 100, &got));
	CHECK_EQ_INT(got, 100);
	CHECK_OK(store_update(st, chunk_drop_fn, &p));
	CHECK_RC(store_read_content(st, sha, STORE_CHUNK_BYTES, buf, 10, &got), BG_ECORRUPT);
	CHECK_RC(store_read_content(st, sha, size - 1, buf, 10, &got), BG_ECORRUPT);
	/* A last chunk longer than the content says. */
	p.first = 1;
	p.data = data + STORE_CHUNK_BYTES;
	p.len = STORE_CHUNK_BYTES;
	CHECK_OK(store_update(st, chunk_put_fn, &p));
	p.first = 2;
	p.data = data;
	p.len = 1001;
	CHECK_OK(store_update(st, chunk_put_fn, &p));
	CHECK_RC(store_read_content(st, sha, size - 1, buf, 1, &got), BG_ECORRUPT);

	free(data);
	free(buf);
	store_close(st);
	home_free(home);
}

/* ---- Damaged records ----------------------------------------------------- */

static int damage_setup_fn(struct bg_txn *txn, void *arg)
{
	json_t *rec = json_pack("{s:s}", "name", "ok");
	struct store_key k = { .url = "https://example.com/good", .size = 1 };
	int rc;

	(void)arg;
	rc = txn_job_put(txn, JOB_A, rec);
	if (rc == 0)
		rc = txn_job_put(txn, JOB_B, rec);
	if (rc == 0)
		rc = txn_key_put(txn, &k);
	json_decref(rec);
	return rc;
}

struct damage_ctx {
	const char *url;
	unsigned char sha[BG_SHA256_LEN];
	int want;
};

static int count_key_fn(const struct store_key *k, void *arg)
{
	(void)k;
	++*(int *)arg;
	return 0;
}

static int damaged_key_fn(struct bg_txn *txn, void *arg)
{
	struct damage_ctx *d = arg;
	struct store_key k;
	int n = 0;

	CHECK_RC(txn_key_get(txn, d->url, &k), d->want);
	CHECK(d->want == 0 || k.url == NULL);
	store_key_clear(&k);
	CHECK_RC(txn_key_each(txn, count_key_fn, &n), d->want);
	return 0;
}

static int damaged_jobs_fn(struct bg_txn *txn, void *arg)
{
	struct job_list list = { .n = 0 };
	json_t *rec = NULL;

	(void)arg;
	CHECK_RC(txn_job_get(txn, JOB_A, &rec), BG_ECORRUPT);
	CHECK(rec == NULL);
	CHECK_RC(txn_job_get(txn, JOB_B, &rec), BG_ECORRUPT);
	CHECK_RC(txn_job_get(txn, JOB_C, &rec), BG_ECORRUPT);
	CHECK_RC(txn_job_each(txn, job_list_fn, &list), BG_ECORRUPT);
	return 0;
}

static int damaged_misc_fn(struct bg_txn *txn, void *arg)
{
	const struct damage_ctx *d = arg;
	struct store_content c;
	uint64_t id;
	size_t len;
	const void *data;

	CHECK_RC(txn_content_get(txn, d->sha, &c), BG_ECORRUPT);
	CHECK_RC(txn_blob_get(txn, 5, 0, &data, &len), BG_ECORRUPT);
	CHECK_RC(txn_blob_new(txn, &id), BG_ERDONLY);
	return 0;
}

static int damaged_blob_new_fn(struct bg_txn *txn, void *arg)
{
	uint64_t id;

	(void)arg;
	CHECK_RC(txn_blob_new(txn, &id), BG_ECORRUPT);
	return 0;
}

static int damaged_cleanup_fn(struct bg_txn *txn, void *arg)
{
	struct damage_ctx *d = arg;
	int rc;

	/* Damaged records can still be deleted: that is the repair. */
	rc = txn_job_del(txn, JOB_A);
	if (rc == 0)
		rc = txn_job_del(txn, JOB_B);
	if (rc == 0)
		rc = txn_job_del(txn, JOB_C);
	if (rc == 0)
		rc = txn_content_del(txn, d->sha);
	return rc;
}

/* Copies tmpl into out with @URL@ and @SHA@ replaced. */
static void fill(char *out, size_t cap, const char *tmpl, const char *url, const char *sha)
{
	size_t n = 0;

	while (*tmpl != '\0' && n + 1 < cap) {
		const char *sub = NULL;

		if (strncmp(tmpl, "@URL@", 5) == 0)
			sub = url;
		else if (strncmp(tmpl, "@SHA@", 5) == 0)
			sub = sha;
		if (sub != NULL) {
			size_t len = strlen(sub);

			if (n + len + 1 > cap)
				break;
			memcpy(out + n, sub, len);
			n += len;
			tmpl += 5;
		} else {
			out[n++] = *tmpl++;
		}
	}
	out[n] = '\0';
}

/* Files a key record with the given JSON under SHA-256(url). */
static void damage_key(const char *home, const char *url, const char *json)
{
	unsigned char k[BG_SHA256_LEN];

	bg_sha256(url, strlen(url), k);
	CHECK_EQ_INT(raw_put(home, "keys", k, sizeof(k), json, strlen(json)), 0);
}

static void test_damaged(void)
{
	static const char *const bad_keys[] = {
		"garbage{",
		"[1,2,3]",
		"\"just a string\"",
		"{}",
		/* Every field in turn: wrong type, range, form or missing. */
		"{\"url\":\"@URL@\",\"sha256\":\"zz\",\"size\":1,\"etag\":null,"
		"\"last_modified\":null,\"stored\":0,\"validated\":0,\"flags\":0}",
		"{\"url\":\"@URL@\",\"sha256\":\"@SHA@\",\"size\":-1,\"etag\":null,"
		"\"last_modified\":null,\"stored\":0,\"validated\":0,\"flags\":0}",
		"{\"url\":\"@URL@\",\"sha256\":\"@SHA@\",\"size\":1,\"etag\":7,"
		"\"last_modified\":null,\"stored\":0,\"validated\":0,\"flags\":0}",
		"{\"url\":\"@URL@\",\"sha256\":\"@SHA@\",\"size\":1,\"etag\":null,"
		"\"stored\":0,\"validated\":0,\"flags\":0}",
		"{\"url\":\"@URL@\",\"sha256\":\"@SHA@\",\"size\":1,\"etag\":null,"
		"\"last_modified\":null,\"stored\":\"now\",\"validated\":0,\"flags\":0}",
		"{\"url\":\"@URL@\",\"sha256\":\"@SHA@\",\"size\":1,\"etag\":null,"
		"\"last_modified\":null,\"stored\":0,\"validated\":0,\"flags\":-3}",
		"{\"url\":\"@URL@\",\"sha256\":\"@SHA@\",\"size\":1.5,\"etag\":null,"
		"\"last_modified\":null,\"stored\":0,\"validated\":0,\"flags\":0}",
		"{\"url\":\"@URL@\\u0000x\",\"sha256\":\"@SHA@\",\"size\":1,\"etag\":null,"
		"\"last_modified\":null,\"stored\":0,\"validated\":0,\"flags\":0}",
		"{\"url\":\"@URL@\",\"sha256\":\"@SHA@\",\"size\":1,\"etag\":null,"
		"\"last_modified\":null,\"stored\":0,\"validated\":0,\"flags\":0,"
		"\"flags\":1}",
		/* A well-formed record filed under another URL's key. */
		"{\"url\":\"https://example.com/other\",\"sha256\":\"@SHA@\",\"size\":1,"
		"\"etag\":null,\"last_modified\":null,\"stored\":0,\"validated\":0,\"flags\":0}",
	};
	const char *url = "https://example.com/damaged";
	char hex[BG_SHA256_HEX_LEN + 1];
	char json[1024];
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct damage_ctx d = { .url = url, .want = BG_ECORRUPT };
	unsigned char key[16];
	unsigned char *big;
	uint64_t entries;

	CHECK_OK(store_update(st, damage_setup_fn, NULL));
	store_close(st);

	bg_sha256("x", 1, d.sha);
	bg_sha256_hex(d.sha, hex);
	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
		fill(json, sizeof(json), bad_keys[i], url, hex);
		damage_key(home, url, json);
		st = open_rw(home, 0);
		CHECK_OK(store_view(st, damaged_key_fn, &d));
		CHECK_RC(store_gc(st, test_blob_of, &entries, NULL), BG_ECORRUPT);
		store_close(st);
	}
	/* The same record, well-formed, reads fine: the templates are right. */
	fill(json, sizeof(json),
	     "{\"url\":\"@URL@\",\"sha256\":\"@SHA@\",\"size\":1,\"etag\":\"\\\"e\\\"\","
	     "\"last_modified\":null,\"stored\":0,\"validated\":0,\"flags\":0}",
	     url, hex);
	damage_key(home, url, json);
	d.want = 0;
	st = open_rw(home, 0);
	CHECK_OK(store_view(st, damaged_key_fn, &d));
	CHECK_OK(store_update(st, key_del_fn, (void *)url));
	store_close(st);

	/* Jobs: not JSON, not an object, empty. */
	CHECK_EQ_INT(raw_put(home, "jobs", JOB_A, STORE_JOB_ID_LEN, "{\"a\":", 5), 0);
	CHECK_EQ_INT(raw_put(home, "jobs", JOB_B, STORE_JOB_ID_LEN, "[1]", 3), 0);
	CHECK_EQ_INT(raw_put(home, "jobs", JOB_C, STORE_JOB_ID_LEN, "", 0), 0);
	/* Content of the wrong length, a chunk that is too long, a damaged
	 * blob counter. */
	CHECK_EQ_INT(raw_put(home, "content", d.sha, BG_SHA256_LEN, "\x01\x02\x03", 3), 0);
	big = pattern_buf(5, STORE_CHUNK_BYTES + 1);
	blob_key(key, 5, 0);
	CHECK_EQ_INT(raw_put(home, "blobs", key, sizeof(key), big, STORE_CHUNK_BYTES + 1), 0);
	free(big);
	st = open_rw(home, 0);
	CHECK_OK(store_view(st, damaged_jobs_fn, NULL));
	CHECK_OK(store_view(st, damaged_misc_fn, &d));
	CHECK_OK(store_update(st, damaged_cleanup_fn, &d));
	CHECK_OK(store_view(st, jobs_count_fn, &(struct job_list){ .n = 0 }));
	store_close(st);

	/* A content record of the right length but an unknown version. */
	memset(json, 0, 33);
	json[0] = 3;
	json[1] = 1;
	CHECK_EQ_INT(raw_put(home, "content", d.sha, BG_SHA256_LEN, json, 33), 0);
	CHECK_EQ_INT(raw_put(home, "meta", "next_blob", 9, "\x01\x02\x03", 3), 0);
	st = open_rw(home, 0);
	CHECK_OK(store_view(st, damaged_misc_fn, &d));
	CHECK_OK(store_update(st, damaged_blob_new_fn, NULL));
	store_close(st);
	home_free(home);
}

/* ---- Verify -------------------------------------------------------------- */

struct verify_setup {
	unsigned char sha[6][BG_SHA256_LEN]; /* A B C D E, absent */
	unsigned char *bytes;                /* 2 chunks + 100 bytes */
};

static const char *const verify_urls[] = {
	"https://v.example/a1", "https://v.example/a2", "https://v.example/b",
	"https://v.example/c",  "https://v.example/d",  "https://v.example/e",
	"https://v.example/stray",
};
#define VERIFY_LEN (2 * STORE_CHUNK_BYTES + 100)

static int verify_put_content(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                              const unsigned char *data, size_t len, size_t chunks_stored)
{
	struct store_content c = { .size = len, .created = 1, .last_used_ns = 1 };
	int rc = txn_blob_new(txn, &c.blob);

	for (size_t i = 0; rc == 0 && i * STORE_CHUNK_BYTES < len && i < chunks_stored; i++) {
		size_t n = len - i * STORE_CHUNK_BYTES;

		rc = txn_blob_put(txn, c.blob, i, data + i * STORE_CHUNK_BYTES,
		                  n < STORE_CHUNK_BYTES ? n : STORE_CHUNK_BYTES);
	}
	return rc != 0 ? rc : txn_content_put(txn, sha, &c);
}

static int verify_put_key(struct bg_txn *txn, const char *url,
                          const unsigned char sha[BG_SHA256_LEN], uint64_t size)
{
	struct store_key k = { .url = (char *)url, .size = size, .stored = 1, .validated = 1 };

	memcpy(k.sha256, sha, BG_SHA256_LEN);
	return txn_key_put(txn, &k);
}

static int verify_setup_fn(struct bg_txn *txn, void *arg)
{
	struct verify_setup *v = arg;
	int rc;

	/* A: good, 3 chunks, two keys.  B: good, small.  C: bytes that do not
	 * hash to its digest.  D: its middle chunk missing.  E: a damaged
	 * record (written raw below).  A key pointing at absent content. */
	if ((rc = verify_put_content(txn, v->sha[0], v->bytes, VERIFY_LEN, 3)) != 0 ||
	    (rc = verify_put_content(txn, v->sha[1], v->bytes, 100, 1)) != 0 ||
	    (rc = verify_put_content(txn, v->sha[2], v->bytes + 1, 1000, 1)) != 0 ||
	    (rc = verify_put_content(txn, v->sha[3], v->bytes, VERIFY_LEN, 1)) != 0)
		return rc;
	if ((rc = verify_put_key(txn, verify_urls[0], v->sha[0], VERIFY_LEN)) != 0 ||
	    (rc = verify_put_key(txn, verify_urls[1], v->sha[0], VERIFY_LEN)) != 0 ||
	    (rc = verify_put_key(txn, verify_urls[2], v->sha[1], 100)) != 0 ||
	    (rc = verify_put_key(txn, verify_urls[3], v->sha[2], 1000)) != 0 ||
	    (rc = verify_put_key(txn, verify_urls[4], v->sha[3], VERIFY_LEN)) != 0 ||
	    (rc = verify_put_key(txn, verify_urls[5], v->sha[4], 10)) != 0 ||
	    (rc = verify_put_key(txn, verify_urls[6], v->sha[5], 10)) != 0)
		return rc;
	return 0;
}

struct verify_seen {
	int content[32]; /* by -problem */
	int keys[32];
	char urls[512];
};

static int verify_seen_fn(const struct store_verify_bad *b, void *arg)
{
	struct verify_seen *s = arg;

	if (b->problem < 0 && -b->problem < 32)
		(b->is_key ? s->keys : s->content)[-b->problem]++;
	for (size_t i = 0; i < b->nurls; i++) {
		strncat(s->urls, b->urls[i] + strlen("https://v.example/"),
		        sizeof(s->urls) - strlen(s->urls) - 2);
		strcat(s->urls, " ");
	}
	return 0;
}

static int verify_left_fn(const struct store_key *k, void *arg)
{
	strncat(arg, k->url + strlen("https://v.example/"), 64);
	strcat(arg, " ");
	return 0;
}

static int verify_left_txn(struct bg_txn *txn, void *arg)
{
	((char *)arg)[0] = '\0';
	return txn_key_each(txn, verify_left_fn, arg);
}

static void test_verify(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct verify_setup v;
	struct verify_seen seen;
	struct store_verify_stats vs;
	unsigned char garbage_key[BG_SHA256_LEN];
	char left[512];
	unsigned char buf[128];
	size_t got;

	memset(&seen, 0, sizeof(seen));
	v.bytes = pattern_buf(11, VERIFY_LEN + 1);
	bg_sha256(v.bytes, VERIFY_LEN, v.sha[0]);
	bg_sha256(v.bytes, 100, v.sha[1]);
	bg_sha256("not these bytes", 15, v.sha[2]);
	bg_sha256(v.bytes, VERIFY_LEN, v.sha[3]);
	v.sha[3][0] ^= 1; /* D is A's bytes under another digest, one chunk stored */
	bg_sha256("e", 1, v.sha[4]);
	bg_sha256("absent", 6, v.sha[5]);
	CHECK_OK(store_update(st, verify_setup_fn, &v));
	store_close(st);
	CHECK_EQ_INT(raw_put(home, "content", v.sha[4], BG_SHA256_LEN, "\x01\x02", 2), 0);
	bg_sha256("https://v.example/garbage", 25, garbage_key);
	CHECK_EQ_INT(raw_put(home, "keys", garbage_key, BG_SHA256_LEN, "{oops", 5), 0);

	st = open_rw(home, 0);
	CHECK_OK(store_verify(st, verify_seen_fn, &seen, &vs));
	CHECK_EQ_INT(vs.entries, 5);
	CHECK_EQ_INT(vs.bytes, VERIFY_LEN + 100 + 1000); /* D fails in its first read */
	CHECK_EQ_INT(vs.corrupt, 3);
	CHECK_EQ_INT(vs.keys, 5); /* a1 a2 b stray garbage remained for the key pass */
	CHECK_EQ_INT(vs.keys_removed, 5);
	CHECK_EQ_INT(seen.content[-BG_EDIGEST], 1);
	CHECK_EQ_INT(seen.content[-BG_ECORRUPT], 2);
	CHECK_EQ_INT(seen.keys[-BG_ENOENT], 1);
	CHECK_EQ_INT(seen.keys[-BG_ECORRUPT], 1);
	CHECK(strstr(seen.urls, "c ") != NULL);
	CHECK(strstr(seen.urls, "d ") != NULL);
	CHECK(strstr(seen.urls, "e ") != NULL);
	CHECK(strstr(seen.urls, "stray ") != NULL);
	CHECK_OK(store_view(st, verify_left_txn, left));
	CHECK(strstr(left, "a1 ") != NULL && strstr(left, "a2 ") != NULL &&
	      strstr(left, "b ") != NULL);
	CHECK_EQ_INT(strlen(left), strlen("a1 a2 b "));
	/* The good content is intact and a second verify finds nothing. */
	CHECK_OK(store_read_content(st, v.sha[0], 2 * STORE_CHUNK_BYTES, buf, 100, &got));
	CHECK_EQ_INT(got, 100);
	CHECK(memcmp(buf, v.bytes + 2 * STORE_CHUNK_BYTES, 100) == 0);
	CHECK_OK(store_verify(st, NULL, NULL, &vs));
	CHECK_EQ_INT(vs.entries, 2);
	CHECK_EQ_INT(vs.corrupt + vs.keys_removed, 0);
	CHECK_EQ_INT(vs.keys, 3);
	free(v.bytes);
	store_close(st);
	home_free(home);
}

/* ---- Limits, LRU eviction, age ----------------------------------------------- */

#define POL_N 10
#define POL_JOB "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"

struct pol {
	unsigned char sha[POL_N + 1][BG_SHA256_LEN]; /* POL_N entries, then X */
	char url[POL_N + 2][64];                     /* POL_N keys, then X's two */
	struct store_enforce_result res;
	uint64_t limit;
	int64_t now;
	uint32_t days;
	const char *job_state;
};

static int pol_unfinished(const json_t *job)
{
	const char *s = json_string_value(json_object_get(job, "state"));

	return s != NULL && strcmp(s, "DONE") != 0;
}

static int pol_key(struct bg_txn *txn, const char *url, const unsigned char sha[BG_SHA256_LEN],
                   uint64_t size, int64_t validated)
{
	struct store_key k = { .url = (char *)url, .size = size, .stored = validated,
	                       .validated = validated };

	memcpy(k.sha256, sha, BG_SHA256_LEN);
	return txn_key_put(txn, &k);
}

static int pol_setup_fn(struct bg_txn *txn, void *arg)
{
	struct pol *p = arg;
	unsigned char data[100];
	int rc;

	for (int i = 0; i < POL_N; i++) {
		struct store_content c = { .size = sizeof(data), .created = 1, .last_used_ns = 1 + i };

		memset(data, 'a' + i, sizeof(data));
		bg_sha256(data, sizeof(data), p->sha[i]);
		if ((rc = txn_blob_new(txn, &c.blob)) != 0 ||
		    (rc = txn_blob_put(txn, c.blob, 0, data, sizeof(data))) != 0 ||
		    (rc = txn_content_put(txn, p->sha[i], &c)) != 0 ||
		    (rc = pol_key(txn, p->url[i], p->sha[i], sizeof(data), 1000)) != 0)
			return rc;
	}
	return 0;
}

static int pol_enforce_fn(struct bg_txn *txn, void *arg)
{
	struct pol *p = arg;

	return txn_enforce_limits(txn, p->limit, p->now, p->days, pol_unfinished, &p->res);
}

static int pol_stats_fn(struct bg_txn *txn, void *arg)
{
	return txn_stats_get(txn, arg);
}

static int pol_touch_fn(struct bg_txn *txn, void *arg)
{
	struct pol *p = arg;

	return txn_content_touch(txn, p->sha[0], 100);
}

static int pol_pin_fn(struct bg_txn *txn, void *arg)
{
	struct pol *p = arg;
	json_t *job = json_pack("{ss}", "state", p->job_state);
	int rc = txn_job_put(txn, POL_JOB, job);

	json_decref(job);
	return rc != 0 ? rc : txn_pin(txn, POL_JOB, p->sha[4]);
}

static int pol_job_state_fn(struct bg_txn *txn, void *arg)
{
	struct pol *p = arg;
	json_t *job = json_pack("{ss}", "state", p->job_state);
	int rc = txn_job_put(txn, POL_JOB, job);

	json_decref(job);
	return rc;
}

/* Which of the POL_N entries are still there, as a string of digits. */
struct pol_left {
	struct pol *p;
	char s[POL_N + 1];
};

static int pol_left_fn(struct bg_txn *txn, void *arg)
{
	struct pol_left *l = arg;
	struct store_content c;
	struct store_key k;
	size_t n = 0;

	for (int i = 0; i < POL_N; i++) {
		int have_c = txn_content_get(txn, l->p->sha[i], &c) == 0;
		int have_k = txn_key_get(txn, l->p->url[i], &k) == 0;

		store_key_clear(&k);
		if (have_c != have_k)
			l->s[n++] = '!'; /* a key without content or the reverse */
		else if (have_c)
			l->s[n++] = (char)('0' + i);
	}
	l->s[n] = '\0';
	return 0;
}

static const char *pol_left(struct bg_store *st, struct pol *p)
{
	static struct pol_left l;

	l.p = p;
	CHECK_OK(store_view(st, pol_left_fn, &l));
	return l.s;
}

static int pol_shared_fn(struct bg_txn *txn, void *arg)
{
	struct pol *p = arg;
	unsigned char data[300];
	struct store_content c = { .size = sizeof(data), .created = 1, .last_used_ns = 50 };
	int rc;

	memset(data, 'x', sizeof(data));
	bg_sha256(data, sizeof(data), p->sha[POL_N]);
	if ((rc = txn_blob_new(txn, &c.blob)) != 0 ||
	    (rc = txn_blob_put(txn, c.blob, 0, data, sizeof(data))) != 0 ||
	    (rc = txn_content_put(txn, p->sha[POL_N], &c)) != 0 ||
	    (rc = pol_key(txn, p->url[POL_N], p->sha[POL_N], sizeof(data), 2000)) != 0)
		return rc;
	return pol_key(txn, p->url[POL_N + 1], p->sha[POL_N], sizeof(data), 5000);
}

static int pol_shared_left_fn(struct bg_txn *txn, void *arg)
{
	struct pol *p = arg;
	struct store_content c;
	struct store_key k;
	int *v = (int *)&p->res; /* scratch: reuse the result's memory for 3 flags */
	int rc;

	(void)v;
	rc = txn_content_get(txn, p->sha[POL_N], &c);
	p->res.evicted = rc == 0;
	rc = txn_key_get(txn, p->url[POL_N], &k);
	store_key_clear(&k);
	p->res.expired = rc == 0;
	rc = txn_key_get(txn, p->url[POL_N + 1], &k);
	store_key_clear(&k);
	p->res.keys_removed = rc == 0;
	return 0;
}

static int pol_config_fn(struct bg_txn *txn, void *arg)
{
	struct store_config *c = arg;

	return txn_config_put(txn, c);
}

static int pol_config_get_fn(struct bg_txn *txn, void *arg)
{
	return txn_config_get(txn, arg);
}

static void test_policy(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct store_config cfg;
	struct store_stats s, s2;
	struct pol p;
	uint64_t limit;

	memset(&p, 0, sizeof(p));
	for (int i = 0; i < POL_N + 2; i++)
		snprintf(p.url[i], sizeof(p.url[i]), "https://pol.example/%d", i);

	/* Configuration: defaults, a round trip, refusals. */
	CHECK_OK(store_view(st, pol_config_get_fn, &cfg));
	CHECK_EQ_INT(cfg.max_size_percent, STORE_DEFAULT_MAX_PERCENT);
	CHECK_EQ_INT(cfg.max_size_bytes, 0);
	CHECK_EQ_INT(cfg.max_age_days, STORE_DEFAULT_MAX_AGE_DAYS);
	CHECK_OK(store_limit_bytes(st, &cfg, &limit));
	CHECK(limit > 0);
	cfg = (struct store_config){ .max_size_bytes = 12345, .max_age_days = 7 };
	CHECK_OK(store_update(st, pol_config_fn, &cfg));
	memset(&cfg, 0, sizeof(cfg));
	CHECK_OK(store_view(st, pol_config_get_fn, &cfg));
	CHECK_EQ_INT(cfg.max_size_bytes, 12345);
	CHECK_EQ_INT(cfg.max_size_percent, 0);
	CHECK_EQ_INT(cfg.max_age_days, 7);
	CHECK_OK(store_limit_bytes(st, &cfg, &limit));
	CHECK_EQ_INT(limit, 12345);
	cfg = (struct store_config){ .max_size_bytes = 1, .max_size_percent = 1, .max_age_days = 7 };
	CHECK_RC(store_update(st, pol_config_fn, &cfg), BG_EINVAL);
	cfg = (struct store_config){ .max_size_percent = 101, .max_age_days = 7 };
	CHECK_RC(store_update(st, pol_config_fn, &cfg), BG_EINVAL);
	cfg = (struct store_config){ .max_size_percent = 5, .max_age_days = 0 };
	CHECK_RC(store_update(st, pol_config_fn, &cfg), BG_EINVAL);

	/* Ten entries of 100 bytes, used at 1..10; the first is used again at
	 * 100, so it is the most recent one. */
	CHECK_OK(store_update(st, pol_setup_fn, &p));
	CHECK_OK(store_view(st, pol_stats_fn, &s));
	CHECK_EQ_INT(s.entries, POL_N);
	CHECK_EQ_INT(s.bytes, POL_N * 100);
	CHECK_EQ_INT(s.keys, POL_N);
	CHECK_OK(store_update(st, pol_touch_fn, &p));
	CHECK_EQ_STR(pol_left(st, &p), "0123456789");

	p.now = 2000;
	p.days = 1;
	p.limit = 700;
	CHECK_OK(store_update(st, pol_enforce_fn, &p));
	CHECK_EQ_INT(p.res.evicted, 3);
	CHECK_EQ_INT(p.res.evicted_bytes, 300);
	CHECK_EQ_INT(p.res.keys_removed, 3);
	CHECK_EQ_INT(p.res.over_limit, 0);
	CHECK_EQ_STR(pol_left(st, &p), "0456789");
	CHECK_OK(store_view(st, pol_stats_fn, &s));
	CHECK_EQ_INT(s.entries, 7);
	CHECK_EQ_INT(s.bytes, 700);
	CHECK_EQ_INT(s.keys, 7);
	CHECK_EQ_INT(s.evicted, 3);

	/* Entry 4 is pinned by a job that is not over: 5 and 6 go instead. */
	p.job_state = "RUNNING";
	CHECK_OK(store_update(st, pol_pin_fn, &p));
	p.limit = 500;
	CHECK_OK(store_update(st, pol_enforce_fn, &p));
	CHECK_EQ_INT(p.res.evicted, 2);
	CHECK_EQ_STR(pol_left(st, &p), "04789");
	/* Everything but the pinned entry goes when the limit is 0. */
	p.limit = 0;
	CHECK_OK(store_update(st, pol_enforce_fn, &p));
	CHECK_EQ_STR(pol_left(st, &p), "4");
	CHECK_EQ_INT(p.res.over_limit, 100);
	/* Once the job is over, its pin goes and so does the entry. */
	p.job_state = "DONE";
	CHECK_OK(store_update(st, pol_job_state_fn, &p));
	CHECK_OK(store_update(st, pol_enforce_fn, &p));
	CHECK_EQ_STR(pol_left(st, &p), "");
	CHECK_EQ_INT(p.res.over_limit, 0);
	CHECK_OK(store_view(st, pol_stats_fn, &s));
	CHECK_EQ_INT(s.entries, 0);
	CHECK_EQ_INT(s.bytes, 0);
	CHECK_EQ_INT(s.keys, 0);
	CHECK_EQ_INT(s.evicted, POL_N);

	/* Age: content X under two keys validated at 2000 and 5000.  With a
	 * max age of one day, at 2000 + 86400 + 1 the first key has expired
	 * and X stays for the second; at 5000 + 86400 + 1 both are gone. */
	CHECK_OK(store_update(st, pol_shared_fn, &p));
	p.limit = 1 << 20;
	p.now = 2000 + 86400 + 1;
	CHECK_OK(store_update(st, pol_enforce_fn, &p));
	CHECK_EQ_INT(p.res.expired, 1);
	CHECK_EQ_INT(p.res.expired_entries, 0);
	CHECK_OK(store_view(st, pol_shared_left_fn, &p));
	CHECK_EQ_INT(p.res.evicted, 1);      /* X is there */
	CHECK_EQ_INT(p.res.expired, 0);      /* its first key is not */
	CHECK_EQ_INT(p.res.keys_removed, 1); /* its second key is */
	p.now = 5000 + 86400 + 1;
	CHECK_OK(store_update(st, pol_enforce_fn, &p));
	CHECK_EQ_INT(p.res.expired, 1);
	CHECK_EQ_INT(p.res.expired_entries, 1);
	CHECK_EQ_INT(p.res.expired_bytes, 300);
	CHECK_OK(store_view(st, pol_shared_left_fn, &p));
	CHECK_EQ_INT(p.res.evicted + p.res.expired + p.res.keys_removed, 0);

	/* The counters rebuilt from the records are the counters kept. */
	CHECK_OK(store_update(st, pol_setup_fn, &p));
	CHECK_OK(store_view(st, pol_stats_fn, &s));
	CHECK_OK(store_verify(st, NULL, NULL, NULL)); /* rebuilds them */
	CHECK_OK(store_view(st, pol_stats_fn, &s2));
	CHECK(memcmp(&s, &s2, sizeof(s)) == 0);
	CHECK_EQ_INT(s2.entries, POL_N);
	CHECK_EQ_INT(s2.bytes, POL_N * 100);
	store_close(st);
	home_free(home);
}

/* ---- The order of use ------------------------------------------------------------- */

#define LRU_N 3
#define LRU_SECOND ((int64_t)1700000000 * 1000000000) /* a second's first ns */

/* Three entries whose roles are given by digest order: lru.sha[0] sorts
 * first.  With ties broken by digest, it is the one evicted first: each
 * test makes it the most recently used, so only a true order of use keeps
 * it. */
struct lru {
	unsigned char sha[LRU_N][BG_SHA256_LEN];
	uint64_t blob[LRU_N];
	int64_t when[LRU_N];          /* last_used_ns to store, or read back */
	int which;                    /* the entry touched */
	int64_t at;                   /* ns of the touch */
	struct store_enforce_result res;
	uint64_t limit;
};

static int lru_sha_cmp(const void *a, const void *b)
{
	return memcmp(a, b, BG_SHA256_LEN);
}

static int lru_put_fn(struct bg_txn *txn, void *arg)
{
	struct lru *l = arg;
	unsigned char data[LRU_N][100];
	unsigned char sha[LRU_N][BG_SHA256_LEN];
	int rc;

	for (int i = 0; i < LRU_N; i++) {
		memset(data[i], 'k' + i, sizeof(data[i]));
		bg_sha256(data[i], sizeof(data[i]), sha[i]);
	}
	memcpy(l->sha, sha, sizeof(sha));
	qsort(l->sha, LRU_N, BG_SHA256_LEN, lru_sha_cmp);
	for (int i = 0; i < LRU_N; i++) {
		int j = 0;
		char url[64];
		struct store_content c = { .size = 100, .created = 1, .last_used_ns = l->when[i] };

		while (memcmp(sha[j], l->sha[i], BG_SHA256_LEN) != 0)
			j++;
		snprintf(url, sizeof(url), "https://lru.example/%d", i);
		if ((rc = txn_blob_new(txn, &c.blob)) != 0 ||
		    (rc = txn_blob_put(txn, c.blob, 0, data[j], 100)) != 0 ||
		    (rc = txn_content_put(txn, l->sha[i], &c)) != 0 ||
		    (rc = pol_key(txn, url, l->sha[i], 100, 1000)) != 0)
			return rc;
		l->blob[i] = c.blob;
	}
	return 0;
}

static int lru_touch_fn(struct bg_txn *txn, void *arg)
{
	struct lru *l = arg;

	return txn_content_touch(txn, l->sha[l->which], l->at);
}

static int lru_enforce_fn(struct bg_txn *txn, void *arg)
{
	struct lru *l = arg;

	return txn_enforce_limits(txn, l->limit, 2000, 36500, pol_unfinished, &l->res);
}

/* Which entries are left ("012" all), and their last use into l->when. */
static int lru_left_fn(struct bg_txn *txn, void *arg)
{
	struct lru *l = arg;
	struct store_content c;

	for (int i = 0; i < LRU_N; i++)
		l->when[i] = txn_content_get(txn, l->sha[i], &c) == 0 ? c.last_used_ns : -1;
	return 0;
}

static const char *lru_left(struct bg_store *st, struct lru *l)
{
	static char s[LRU_N + 1];
	size_t n = 0;

	CHECK_OK(store_view(st, lru_left_fn, l));
	for (int i = 0; i < LRU_N; i++)
		if (l->when[i] != -1)
			s[n++] = (char)('0' + i);
	s[n] = '\0';
	return s;
}

static void lru_evict_to(struct bg_store *st, struct lru *l, uint64_t entries)
{
	l->limit = entries * 100;
	CHECK_OK(store_update(st, lru_enforce_fn, l));
}

/* Uses within one second are evicted in the order they happened: 0, 1, 2
 * stored, then 0 used again, all in one second; 1 goes first, not 0. */
static void test_lru_within_one_second(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct lru l;

	memset(&l, 0, sizeof(l));
	for (int i = 0; i < LRU_N; i++)
		l.when[i] = LRU_SECOND + 1000 * (i + 1);
	CHECK_OK(store_update(st, lru_put_fn, &l));
	l.which = 0;
	l.at = LRU_SECOND + 999999999; /* the same second's last nanosecond */
	CHECK_OK(store_update(st, lru_touch_fn, &l));
	CHECK_EQ_STR(lru_left(st, &l), "012");
	CHECK_EQ_INT(l.when[0], LRU_SECOND + 999999999);
	lru_evict_to(st, &l, 2);
	CHECK_EQ_INT(l.res.evicted, 1);
	CHECK_EQ_STR(lru_left(st, &l), "02");
	lru_evict_to(st, &l, 1);
	CHECK_EQ_STR(lru_left(st, &l), "0");
	/* An index rebuilt from the records (cache verify) keeps the order. */
	CHECK_OK(store_verify(st, NULL, NULL, NULL));
	CHECK_EQ_STR(lru_left(st, &l), "0");

	/* The clock itself: nanoseconds of this second, never the same twice
	 * in a process, and the seconds clock's second. */
	{
		int64_t s0 = bg_now(), a = bg_now_ns(), b = bg_now_ns(), s1 = bg_now();

		CHECK(b > a);
		CHECK(a / 1000000000 >= s0 && b / 1000000000 <= s1);
	}
	store_close(st);
	home_free(home);
}

/* A usage record in the log's format, written as given (unit 'N' or 0). */
static void lru_usage_raw(const char *home, char unit, int64_t when,
                          const unsigned char sha[BG_SHA256_LEN])
{
	unsigned char r[48];
	FILE *f = fopen(home_file(home, "usage.log"), "ab");

	memset(r, 0, sizeof(r));
	r[0] = 'U';
	r[1] = 'H';
	r[2] = (unsigned char)unit;
	r[4] = 1;
	for (int i = 0; i < 8; i++)
		r[8 + i] = (unsigned char)((uint64_t)when >> (8 * i));
	memcpy(r + 16, sha, BG_SHA256_LEN);
	CHECK(f != NULL && fwrite(r, sizeof(r), 1, f) == 1);
	if (f != NULL)
		fclose(f);
}

/* bgcopy-peerd's uses keep their place among local ones however late they
 * are folded: 2 served by peerd, then 0 used locally, then the log folded;
 * 0 is the most recent and 1, unused since it was stored, the least. */
static void test_lru_peer_use_folded_late(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	struct store_usage u;
	struct lru l;

	memset(&l, 0, sizeof(l));
	for (int i = 0; i < LRU_N; i++)
		l.when[i] = LRU_SECOND + 1000 * (i + 1);
	CHECK_OK(store_update(st, lru_put_fn, &l));
	memset(&u, 0, sizeof(u));
	u.hit = 1;
	u.when_ns = LRU_SECOND + 500000;
	memcpy(u.sha256, l.sha[2], BG_SHA256_LEN);
	CHECK_OK(store_usage_append(home, &u, 1));
	l.which = 0;
	l.at = LRU_SECOND + 600000;
	CHECK_OK(store_update(st, lru_touch_fn, &l));
	CHECK_OK(store_usage_fold(st, home));
	CHECK_EQ_STR(lru_left(st, &l), "012");
	CHECK_EQ_INT(l.when[2], LRU_SECOND + 500000);
	CHECK_EQ_INT(l.when[0], LRU_SECOND + 600000);
	lru_evict_to(st, &l, 2);
	CHECK_EQ_STR(lru_left(st, &l), "02");
	lru_evict_to(st, &l, 1);
	CHECK_EQ_STR(lru_left(st, &l), "0");

	/* A record of an older bgcopy-peerd dates in seconds: the first
	 * nanosecond of that second, never later than a use within it. */
	lru_usage_raw(home, 0, LRU_SECOND / 1000000000 + 5, l.sha[0]);
	CHECK_OK(store_usage_fold(st, home));
	CHECK_OK(store_view(st, lru_left_fn, &l));
	CHECK_EQ_INT(l.when[0], LRU_SECOND + 5 * (int64_t)1000000000);
	lru_usage_raw(home, 0, LRU_SECOND / 1000000000 + 1, l.sha[0]);
	CHECK_OK(store_usage_fold(st, home));
	CHECK_OK(store_view(st, lru_left_fn, &l));
	CHECK_EQ_INT(l.when[0], LRU_SECOND + 5 * (int64_t)1000000000);
	store_close(st);
	home_free(home);
}

/* A version 2 store dated its content in seconds (content record version
 * 1): it still reads, is upgraded to version 4 with its index rebuilt,
 * and an old use ranks as its second's first nanosecond. */
static void test_lru_old_store_upgraded(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	unsigned char rec[33], lkey[8 + BG_SHA256_LEN], buf[16];
	struct store_verify_stats vs;
	struct lru l;
	size_t len;

	memset(&l, 0, sizeof(l));
	for (int i = 0; i < LRU_N; i++)
		l.when[i] = LRU_SECOND + 1000 * (i + 1);
	CHECK_OK(store_update(st, lru_put_fn, &l));
	store_close(st);

	/* Entry 0 as an older build wrote it: last used in the same second,
	 * in seconds, filed so in the old index; the store at version 2. */
	rec[0] = 1;
	for (int i = 0; i < 8; i++) {
		rec[1 + i] = (unsigned char)(l.blob[0] >> (8 * i));
		rec[9 + i] = (unsigned char)((uint64_t)100 >> (8 * i));
		rec[17 + i] = (unsigned char)((uint64_t)1 >> (8 * i));
		rec[25 + i] = (unsigned char)((uint64_t)(LRU_SECOND / 1000000000) >> (8 * i));
		lkey[i] = (unsigned char)((uint64_t)l.when[0] >> (56 - 8 * i));
	}
	memcpy(lkey + 8, l.sha[0], BG_SHA256_LEN);
	CHECK_EQ_INT(raw_put(home, "content", l.sha[0], BG_SHA256_LEN, rec, sizeof(rec)), 0);
	CHECK_EQ_INT(raw_put(home, "lru", lkey, sizeof(lkey), NULL, 0), 0);
	for (int i = 0; i < 8; i++)
		lkey[i] = (unsigned char)((uint64_t)(LRU_SECOND / 1000000000) >> (56 - 8 * i));
	CHECK_EQ_INT(raw_put(home, "lru", lkey, sizeof(lkey), "", 0), 0);
	memset(buf, 0, 8);
	buf[0] = 2;
	CHECK_EQ_INT(raw_put(home, "meta", "version", 7, buf, 8), 0);

	st = open_rw(home, 0);
	CHECK_EQ_INT(raw_get(home, "meta", "version", 7, buf, sizeof(buf), &len), 0);
	CHECK(len == 8 && buf[0] == 4);
	CHECK_EQ_STR(lru_left(st, &l), "012");
	CHECK_EQ_INT(l.when[0], LRU_SECOND);
	CHECK_EQ_INT(l.when[1], LRU_SECOND + 2000);
	/* Used again within its second: now the most recent. */
	l.which = 0;
	l.at = LRU_SECOND + 900000000;
	CHECK_OK(store_update(st, lru_touch_fn, &l));
	CHECK_OK(store_verify(st, NULL, NULL, &vs));
	CHECK_EQ_INT(vs.corrupt, 0);
	lru_evict_to(st, &l, 1);
	CHECK_EQ_STR(lru_left(st, &l), "0");
	store_close(st);
	home_free(home);
}

/* ---- Map growth ---------------------------------------------------------- */

static void test_map_growth(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, MIB);
	size_t size = 20 * MIB;
	unsigned char *data = pattern_buf(11, size);
	unsigned char *buf = malloc(size);
	unsigned char sha[BG_SHA256_LEN];
	uint64_t before = store_map_bytes(st);
	int calls = 0;
	int updates = 0;
	size_t got = 0;

	CHECK(before < 2 * MIB);
	CHECK_OK(store_put_content(st, data, size, 8, sha, &calls, &updates));
	CHECK(store_map_bytes(st) >= size);
	/* Growth made some updates run fn again. */
	CHECK(calls > updates);
	CHECK_OK(store_read_content(st, sha, 0, buf, size, &got));
	CHECK_EQ_INT(got, size);
	CHECK(memcmp(buf, data, size) == 0);
	store_close(st);

	/* A small map asked for at reopen is raised to what the data needs. */
	st = open_rw(home, MIB);
	CHECK(store_map_bytes(st) >= size);
	memset(buf, 0, size);
	CHECK_OK(store_read_content(st, sha, 0, buf, size, &got));
	CHECK_EQ_INT(got, size);
	CHECK(memcmp(buf, data, size) == 0);
	store_close(st);
	free(data);
	free(buf);
	home_free(home);
}

/* ---- A second process grows the map -------------------------------------- */

static int first_chunk_fn(struct bg_txn *txn, void *arg)
{
	struct put_content *p = arg;
	struct store_content c;
	const void *data;
	size_t len;
	int rc;

	rc = txn_content_get(txn, p->sha, &c);
	if (rc == 0)
		rc = txn_blob_get(txn, c.blob, 0, &data, &len);
	if (rc == 0 && (len != STORE_CHUNK_BYTES || memcmp(data, p->data, len) != 0))
		rc = BG_EDIGEST;
	return rc;
}

static void test_two_processes(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, MIB);
	size_t size = 8 * MIB;
	unsigned char *data = pattern_buf(13, size);
	unsigned char *buf = malloc(size);
	struct put_content p = { .data = data };
	uint64_t before;
	size_t got = 0;
	int status = -1;
	pid_t pid;

	CHECK_OK(store_update(st, jobs_put_fn, NULL));
	before = store_map_bytes(st);
	CHECK(before < 2 * MIB);
	bg_sha256(data, size, p.sha);

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		/* The child never touches the parent's handle: LMDB environments
		 * do not survive fork().  It opens its own. */
		struct store_options opts = { .initial_map_bytes = MIB };
		struct bg_store *cst = NULL;
		unsigned char sha[BG_SHA256_LEN];
		int rc = store_open(home, 0, &opts, &cst);

		if (rc == 0)
			rc = store_put_content(cst, data, size, 4, sha, NULL, NULL);
		store_close(cst);
		_exit(rc == 0 ? 0 : 1);
	}
	CHECK(pid > 0);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* The data now reaches past this process's map: the read txn meets
	 * MDB_MAP_RESIZED and must adopt the new size. */
	CHECK_OK(store_view(st, first_chunk_fn, &p));
	CHECK(store_map_bytes(st) > before);
	CHECK_OK(store_read_content(st, p.sha, 0, buf, size, &got));
	CHECK_EQ_INT(got, size);
	CHECK(memcmp(buf, data, size) == 0);
	CHECK_OK(store_update(st, jobs_del_a_fn, NULL));
	store_close(st);
	free(data);
	free(buf);
	home_free(home);
}

/* ---- Threads: readers while a writer grows the map ------------------------ */

struct reader {
	struct bg_store *st;
	const unsigned char *sha;
	const unsigned char *data;
	size_t size;
	atomic_int *stop;
	int errors;
	int reads;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	unsigned char *buf = malloc(r->size);
	size_t got;

	while (!atomic_load(r->stop) || r->reads == 0) {
		if (store_read_content(r->st, r->sha, 0, buf, r->size, &got) != 0 ||
		    got != r->size || memcmp(buf, r->data, got) != 0)
			r->errors++;
		r->reads++;
	}
	free(buf);
	return NULL;
}

static void test_threads(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, MIB);
	size_t small = STORE_CHUNK_BYTES + 4321;
	size_t size = 12 * MIB;
	unsigned char *data = pattern_buf(17, size);
	unsigned char sha_small[BG_SHA256_LEN];
	unsigned char sha[BG_SHA256_LEN];
	struct reader r[4];
	pthread_t tid[4];
	atomic_int stop;
	uint64_t before;

	atomic_init(&stop, 0);
	CHECK_OK(store_put_content(st, data, small, 8, sha_small, NULL, NULL));
	before = store_map_bytes(st);
	for (int i = 0; i < 4; i++) {
		r[i] = (struct reader){ .st = st, .sha = sha_small, .data = data, .size = small,
			                .stop = &stop };
		CHECK(pthread_create(&tid[i], NULL, reader_main, &r[i]) == 0);
	}
	CHECK_OK(store_put_content(st, data, size, 4, sha, NULL, NULL));
	atomic_store(&stop, 1);
	for (int i = 0; i < 4; i++) {
		pthread_join(tid[i], NULL);
		CHECK_EQ_INT(r[i].errors, 0);
		CHECK(r[i].reads > 0);
	}
	CHECK(store_map_bytes(st) > before);
	store_close(st);
	free(data);
	home_free(home);
}

/* ---- Read-only use ------------------------------------------------------- */

static int ro_view_fn(struct bg_txn *txn, void *arg)
{
	json_t *rec = NULL;
	json_t *obj = json_pack("{}");
	uint64_t id;

	(void)arg;
	CHECK_OK(txn_job_get(txn, JOB_B, &rec));
	json_decref(rec);
	CHECK_RC(txn_job_put(txn, JOB_C, obj), BG_ERDONLY);
	CHECK_RC(txn_blob_new(txn, &id), BG_ERDONLY);
	json_decref(obj);
	return 0;
}

static void test_readonly(void)
{
	char *home = home_new();
	struct bg_store *st = NULL;
	MDB_env *env = NULL;
	uint64_t entries;
	struct stat sb;

	/* Nothing there yet, and nothing left behind by looking. */
	CHECK_RC(store_open(home, STORE_RDONLY, NULL, &st), BG_ENOENT);
	CHECK(st == NULL);
	CHECK(stat(home_file(home, "store.mdb-lock"), &sb) != 0 && errno == ENOENT);

	/* A file a writer has just created, still empty. */
	fclose(fopen(home_file(home, "store.mdb"), "w"));
	CHECK_RC(store_open(home, STORE_RDONLY, NULL, &st), BG_ENOENT);
	CHECK(stat(home_file(home, "store.mdb-lock"), &sb) != 0 && errno == ENOENT);

	/* An environment without our databases (a writer still setting up). */
	CHECK_EQ_INT(mdb_env_create(&env), 0);
	CHECK_EQ_INT(mdb_env_open(env, home_file(home, "store.mdb"), MDB_NOSUBDIR, 0600), 0);
	mdb_env_close(env);
	CHECK_RC(store_open(home, STORE_RDONLY, NULL, &st), BG_ENOENT);

	st = open_rw(home, 0);
	CHECK_OK(store_update(st, jobs_put_fn, NULL));
	store_close(st);

	st = NULL;
	CHECK_OK(store_open(home, STORE_RDONLY, NULL, &st));
	CHECK_OK(store_view(st, ro_view_fn, NULL));
	CHECK_RC(store_update(st, jobs_del_a_fn, NULL), BG_ERDONLY);
	CHECK_RC(store_gc(st, test_blob_of, &entries, NULL), BG_ERDONLY);
	CHECK_RC(store_sync(st), BG_ERDONLY);
	store_close(st);
	home_free(home);
}

/* ---- Peers' results ---------------------------------------------------- */

static int peers_note_fn(struct bg_txn *txn, void *arg)
{
	(void)arg;
	CHECK_OK(txn_peer_note(txn, "127.0.0.2:7654", "static", NULL, "hit", 100));
	CHECK_OK(txn_peer_note(txn, "127.0.0.2:7654", "static", "", "miss", 110));
	CHECK_OK(txn_peer_note(txn, "127.0.0.2:7654", NULL, NULL, "stale", 120));
	CHECK_OK(txn_peer_note(txn, "127.0.0.2:7654", NULL, NULL, "error", 130));
	CHECK_OK(txn_peer_note(txn, "127.0.0.2:7654", NULL, NULL, "failed", 140));
	CHECK_OK(txn_peer_note(txn, "127.0.0.2:7654", NULL, NULL, "rejected", 150));
	CHECK_OK(txn_peer_note(txn, "[::1]:7655", "mdns", "0123456789abcdef0123456789abcdef",
	                       "error", 160));
	CHECK_OK(txn_peer_seen(txn, "[::1]:7655", "mdns", NULL, 170));
	CHECK_OK(txn_peer_seen(txn, "[::1]:7655", NULL, NULL, 165)); /* never back in time */
	CHECK_RC(txn_peer_note(txn, "127.0.0.2:7654", NULL, NULL, "maybe", 1), BG_EINVAL);
	CHECK_RC(txn_peer_note(txn, "", NULL, NULL, "hit", 1), BG_EINVAL);
	{
		char longname[STORE_PEER_KEY_MAX + 8];

		memset(longname, 'a', sizeof(longname) - 1);
		longname[sizeof(longname) - 1] = '\0';
		CHECK_RC(txn_peer_note(txn, longname, NULL, NULL, "hit", 1), BG_EINVAL);
	}
	return 0;
}

struct peers_seen {
	int n;
	char first[STORE_PEER_KEY_MAX + 1];
};

static int peers_each_fn(const struct store_peer *p, void *arg)
{
	struct peers_seen *s = arg;

	if (s->n++ == 0)
		snprintf(s->first, sizeof(s->first), "%s", p->peer);
	return 0;
}

static int peers_check_fn(struct bg_txn *txn, void *arg)
{
	struct store_peer p;
	struct peers_seen seen = {0};

	(void)arg;
	CHECK_OK(txn_peer_get(txn, "127.0.0.2:7654", &p));
	CHECK_EQ_STR(p.peer, "127.0.0.2:7654");
	CHECK_EQ_STR(p.source, "static");
	CHECK_EQ_STR(p.node, "");
	CHECK_EQ_INT(p.hits, 1);
	CHECK_EQ_INT(p.misses, 2);    /* miss and stale */
	CHECK_EQ_INT(p.failures, 2);  /* error and failed */
	CHECK_EQ_INT(p.rejected, 1);
	CHECK_EQ_STR(p.last_result, "rejected");
	CHECK_EQ_INT(p.last_used, 150);
	CHECK_EQ_INT(p.last_seen, 150);
	CHECK_OK(txn_peer_get(txn, "[::1]:7655", &p));
	CHECK_EQ_STR(p.source, "mdns");
	CHECK_EQ_STR(p.node, "0123456789abcdef0123456789abcdef");
	CHECK_EQ_INT(p.failures, 1);
	CHECK_EQ_INT(p.last_used, 160);
	CHECK_EQ_INT(p.last_seen, 170); /* an error is no sign of life; being seen is */
	CHECK_RC(txn_peer_get(txn, "127.0.0.3:1", &p), BG_ENOENT);
	CHECK_OK(txn_peer_each(txn, peers_each_fn, &seen));
	CHECK_EQ_INT(seen.n, 2);
	CHECK_EQ_STR(seen.first, "127.0.0.2:7654");
	return 0;
}

static int peers_ro_fn(struct bg_txn *txn, void *arg)
{
	struct store_peer p;
	struct peers_seen seen = {0};

	(void)arg;
	CHECK_RC(txn_peer_get(txn, "127.0.0.2:7654", &p), BG_ENOENT);
	CHECK_OK(txn_peer_each(txn, peers_each_fn, &seen));
	CHECK_EQ_INT(seen.n, 0);
	CHECK_RC(txn_peer_seen(txn, "127.0.0.2:7654", NULL, NULL, 1), BG_ERDONLY);
	return 0;
}

static void test_peers(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);
	MDB_env *env = NULL;
	MDB_txn *t = NULL;
	MDB_dbi dbi;

	CHECK_OK(store_update(st, peers_note_fn, NULL));
	CHECK_OK(store_view(st, peers_check_fn, NULL));
	store_close(st);

	/* A store from before the peers' database: a reader does without. */
	CHECK_EQ_INT(mdb_env_create(&env), 0);
	CHECK_EQ_INT(mdb_env_set_maxdbs(env, 16), 0);
	CHECK_EQ_INT(mdb_env_open(env, home_file(home, "store.mdb"), MDB_NOSUBDIR, 0600), 0);
	CHECK_EQ_INT(mdb_txn_begin(env, NULL, 0, &t), 0);
	CHECK_EQ_INT(mdb_dbi_open(t, "peers", 0, &dbi), 0);
	CHECK_EQ_INT(mdb_drop(t, dbi, 1), 0);
	CHECK_EQ_INT(mdb_txn_commit(t), 0);
	mdb_env_close(env);
	st = NULL;
	CHECK_OK(store_open(home, STORE_RDONLY, NULL, &st));
	if (st != NULL) {
		CHECK_OK(store_view(st, peers_ro_fn, NULL));
		store_close(st);
	}
	/* A writer makes it again. */
	st = open_rw(home, 0);
	CHECK_OK(store_update(st, peers_note_fn, NULL));
	CHECK_OK(store_view(st, peers_check_fn, NULL));
	store_close(st);
	home_free(home);
}

/* The peers' database is pruned as it is written: records neither seen nor
 * used for STORE_PEER_MAX_AGE go, and beyond STORE_PEERS_MAX the oldest. */
#define PRUNE_T0 ((int64_t)1700000000)
#define DAY ((int64_t)86400)

static int peers_count_fn(const struct store_peer *p, void *arg)
{
	(void)p;
	(*(size_t *)arg)++;
	return 0;
}

static int peers_age_fn(struct bg_txn *txn, void *arg)
{
	struct store_peer p;

	(void)arg;
	CHECK_OK(txn_peer_note(txn, "10.1.0.1:7654", "static", NULL, "hit", PRUNE_T0));
	CHECK_OK(txn_peer_seen(txn, "10.1.0.2:7654", "mdns", NULL, PRUNE_T0 + 10));
	CHECK_OK(txn_peer_seen(txn, "10.1.0.4:7654", "mdns", NULL, PRUNE_T0 + 2 * DAY));
	/* 31 days on: the first two were neither seen nor used for 30 days. */
	CHECK_OK(txn_peer_note(txn, "10.1.0.3:7654", "dns", NULL, "miss", PRUNE_T0 + 31 * DAY));
	CHECK_RC(txn_peer_get(txn, "10.1.0.1:7654", &p), BG_ENOENT);
	CHECK_RC(txn_peer_get(txn, "10.1.0.2:7654", &p), BG_ENOENT);
	CHECK_OK(txn_peer_get(txn, "10.1.0.3:7654", &p));
	CHECK_OK(txn_peer_get(txn, "10.1.0.4:7654", &p)); /* seen 29 days ago */
	return 0;
}

static int peers_cap_fn(struct bg_txn *txn, void *arg)
{
	struct store_peer p;
	char name[32];
	size_t n = 0;

	(void)arg;
	for (int i = 0; i < STORE_PEERS_MAX + 6; i++) {
		snprintf(name, sizeof(name), "10.2.%d.%d:7654", i / 256, i % 256);
		CHECK_OK(txn_peer_seen(txn, name, "mdns", NULL, PRUNE_T0 + 40 * DAY + i));
	}
	CHECK_OK(txn_peer_each(txn, peers_count_fn, &n));
	CHECK_EQ_INT(n, STORE_PEERS_MAX);
	/* 10.1.0.4 went at 40 days (age); then 10.1.0.3, the oldest, and the
	 * first six of these (1031 records, 7 over). */
	CHECK_RC(txn_peer_get(txn, "10.1.0.4:7654", &p), BG_ENOENT);
	CHECK_RC(txn_peer_get(txn, "10.1.0.3:7654", &p), BG_ENOENT);
	CHECK_RC(txn_peer_get(txn, "10.2.0.5:7654", &p), BG_ENOENT);
	CHECK_OK(txn_peer_get(txn, "10.2.0.6:7654", &p));
	snprintf(name, sizeof(name), "10.2.%d.%d:7654", (STORE_PEERS_MAX + 5) / 256,
	         (STORE_PEERS_MAX + 5) % 256);
	CHECK_OK(txn_peer_get(txn, name, &p));
	return 0;
}

static void test_peers_prune(void)
{
	char *home = home_new();
	struct bg_store *st = open_rw(home, 0);

	CHECK_OK(store_update(st, peers_age_fn, NULL));
	CHECK_OK(store_update(st, peers_cap_fn, NULL));
	store_close(st);
	home_free(home);
}

int main(void)
{
	test_errors();
	test_digest();
	test_open();
	test_jobs();
	test_blobs();
	test_content();
	test_keys();
	test_dedupe();
	test_gc();
	test_read_content();
	test_damaged();
	test_verify();
	test_policy();
	test_lru_within_one_second();
	test_lru_peer_use_folded_late();
	test_lru_old_store_upgraded();
	test_map_growth();
	test_two_processes();
	test_threads();
	test_readonly();
	test_peers();
	test_peers_prune();
	return check_done();
}
