/*
 * records.c - the typed records of the store, on store.c: jobs and files
 * (JSON whose schema the agent owns), content (a fixed binary record) and
 * keys (JSON with a schema of our own), each written with its index
 * entries and totals (index.c) in the same transaction.  Stored bytes are
 * never trusted: every decoder checks lengths and types and answers
 * BG_ECORRUPT.  Also store_open(), which brings an older store's records
 * up to the format.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cache_int.h"

/* ---- JSON records ------------------------------------------------------- */

int ci_json_decode(const MDB_val *v, json_t **out)
{
	json_error_t jerr;
	json_t *j;

	*out = NULL;
	if (v->mv_size == 0 || v->mv_size > STORE_RECORD_MAX)
		return BG_ECORRUPT;
	/* JSON_ALLOW_NUL because json_dumpb writes "\u0000" for strings that
	 * contain NUL, and whatever was stored must read back. */
	j = json_loadb(v->mv_data, v->mv_size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (j == NULL)
		return json_error_code(&jerr) == json_error_out_of_memory ? BG_ENOMEM : BG_ECORRUPT;
	if (!json_is_object(j)) {
		json_decref(j);
		return BG_ECORRUPT;
	}
	*out = j;
	return 0;
}

/* Serialises rec with json_dumpb into a buffer of our own, so that the
 * buffer is freed with the allocator that made it whatever jansson was
 * told to use.  Records fit the stack buffer as a rule: encoded once; a
 * larger one is measured by that first pass and encoded again. */
int ci_json_put(struct bg_txn *txn, enum store_db db, const void *key, size_t klen,
                   const json_t *rec)
{
	const size_t flags = JSON_COMPACT;
	char small[4096], *buf = small, *big = NULL;
	size_t need;
	int rc;

	rc = ci_txn_check(txn, 1);
	if (rc != 0)
		goto out;
	if (!json_is_object(rec)) {
		rc = BG_EINVAL;
		goto out;
	}
	/* 0 means jansson cannot encode it (invalid UTF-8, NaN, no memory). */
	need = json_dumpb(rec, small, sizeof(small), flags);
	if (need == 0) {
		rc = BG_EINVAL;
		goto out;
	}
	if (need > STORE_RECORD_MAX) {
		rc = BG_ELIMIT;
		goto out;
	}
	if (need > sizeof(small)) {
		if ((buf = big = malloc(need)) == NULL) {
			rc = BG_ENOMEM;
			goto out;
		}
		if (json_dumpb(rec, big, need, flags) != need) {
			rc = BG_EINVAL;
			goto out;
		}
	}
	rc = ci_raw_put(txn, db, key, klen, buf, need);
out:
	free(big);
	return rc;
}

static int json_get(struct bg_txn *txn, enum store_db db, const void *key, size_t klen,
                    json_t **out)
{
	MDB_val v;
	int rc;

	rc = ci_raw_get(txn, db, key, klen, &v);
	if (rc != 0)
		return rc;
	return ci_json_decode(&v, out);
}

/* ---- Jobs and files ----------------------------------------------------- */

static int job_id_check(const char *id)
{
	if (id == NULL || strnlen(id, STORE_JOB_ID_LEN + 1) != STORE_JOB_ID_LEN)
		return BG_EINVAL;
	return 0;
}

static void file_key(unsigned char key[STORE_FILE_KEY_LEN], const char *job_id, uint32_t index)
{
	memcpy(key, job_id, STORE_JOB_ID_LEN);
	put_be32(key + STORE_JOB_ID_LEN, index);
}

int txn_job_put(struct bg_txn *txn, const char *id, json_t *rec)
{
	int rc = job_id_check(id);

	if (rc != 0)
		return rc;
	return ci_json_put(txn, DB_JOBS, id, STORE_JOB_ID_LEN, rec);
}

/* What every getter of a job's record checks first: *out cleared, the id
 * well-formed. */
static int get_start(const char *id, json_t **out)
{
	if (out == NULL)
		return BG_EINVAL;
	*out = NULL;
	return job_id_check(id);
}

int txn_job_get(struct bg_txn *txn, const char *id, json_t **out)
{
	int rc = get_start(id, out);

	return rc != 0 ? rc : json_get(txn, DB_JOBS, id, STORE_JOB_ID_LEN, out);
}

int txn_job_raw(struct bg_txn *txn, const char *id, const void **data, size_t *len)
{
	MDB_val v;
	int rc;

	if (data == NULL || len == NULL)
		return BG_EINVAL;
	rc = job_id_check(id);
	if (rc != 0)
		return rc;
	rc = ci_raw_get(txn, DB_JOBS, id, STORE_JOB_ID_LEN, &v);
	if (rc != 0)
		return rc;
	*data = v.mv_data;
	*len = v.mv_size;
	return 0;
}

/* Removes the job's file records first and then the job; BG_ENOENT when
 * there was no job record, even though stray file records of that id are
 * gone as well (within the txn, should the caller still commit it). */
int txn_job_del(struct bg_txn *txn, const char *id)
{
	unsigned char start[STORE_FILE_KEY_LEN];
	int rc;

	rc = ci_txn_check(txn, 1);
	if (rc != 0)
		return rc;
	rc = job_id_check(id);
	if (rc != 0)
		return rc;
	file_key(start, id, 0);
	rc = ci_delete_range(txn, DB_FILES, start, sizeof(start), STORE_JOB_ID_LEN, NULL, NULL);
	if (rc != 0)
		return rc;
	return ci_raw_del(txn, DB_JOBS, id, STORE_JOB_ID_LEN);
}

struct job_each_ctx {
	int (*fn)(const char *id, json_t *rec, void *arg);
	void *arg;
};

static int job_each_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct job_each_ctx *c = ctx;
	char id[STORE_JOB_ID_LEN + 1];
	json_t *rec = NULL;
	int rc;

	(void)txn;
	if (k->mv_size != STORE_JOB_ID_LEN || memchr(k->mv_data, '\0', k->mv_size) != NULL)
		return BG_ECORRUPT;
	memcpy(id, k->mv_data, STORE_JOB_ID_LEN);
	id[STORE_JOB_ID_LEN] = '\0';
	rc = ci_json_decode(v, &rec);
	if (rc != 0)
		return rc;
	rc = c->fn(id, rec, c->arg);
	json_decref(rec);
	return rc;
}

int txn_job_each(struct bg_txn *txn, int (*fn)(const char *id, json_t *rec, void *arg), void *arg)
{
	struct job_each_ctx c = { .fn = fn, .arg = arg };

	if (fn == NULL)
		return BG_EINVAL;
	return ci_walk(txn, DB_JOBS, NULL, 0, 0, job_each_visit, &c);
}

int txn_file_put(struct bg_txn *txn, const char *job_id, uint32_t index, json_t *rec)
{
	unsigned char key[STORE_FILE_KEY_LEN];
	int rc = job_id_check(job_id);

	if (rc != 0)
		return rc;
	file_key(key, job_id, index);
	return ci_json_put(txn, DB_FILES, key, sizeof(key), rec);
}

int txn_file_get(struct bg_txn *txn, const char *job_id, uint32_t index, json_t **out)
{
	unsigned char key[STORE_FILE_KEY_LEN];
	int rc = get_start(job_id, out);

	if (rc != 0)
		return rc;
	file_key(key, job_id, index);
	return json_get(txn, DB_FILES, key, sizeof(key), out);
}

static int file_count_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	uint64_t *n = ctx;

	(void)txn;
	(void)v;
	if (k->mv_size != STORE_FILE_KEY_LEN)
		return BG_ECORRUPT;
	if (++*n > UINT32_MAX)
		return BG_ELIMIT;
	return 0;
}

int txn_file_count(struct bg_txn *txn, const char *job_id, uint32_t *out)
{
	unsigned char start[STORE_FILE_KEY_LEN];
	uint64_t n = 0;
	int rc;

	if (out == NULL)
		return BG_EINVAL;
	*out = 0;
	rc = job_id_check(job_id);
	if (rc != 0)
		return rc;
	file_key(start, job_id, 0);
	rc = ci_walk(txn, DB_FILES, start, sizeof(start), STORE_JOB_ID_LEN, file_count_visit, &n);
	if (rc == 0)
		*out = (uint32_t)n;
	return rc;
}

/* ---- Content ------------------------------------------------------------ */

int ci_content_decode(const MDB_val *v, struct store_content *out)
{
	const unsigned char *p = v->mv_data;

	if (v->mv_size != STORE_CONTENT_REC_LEN ||
	    (p[0] != STORE_CONTENT_VERSION && p[0] != STORE_CONTENT_VERSION_SECONDS))
		return BG_ECORRUPT;
	out->blob = get_le64(p + 1);
	out->size = get_le64(p + 9);
	out->created = (int64_t)get_le64(p + 17);
	out->last_used_ns = (int64_t)get_le64(p + 25);
	/* Blob ids start at 1; 0 is never allocated. */
	if (out->blob == 0)
		return BG_ECORRUPT;
	/* A record of an older build: its second's first nanosecond, so that
	 * any use recorded since, even within that second, is newer. */
	if (p[0] == STORE_CONTENT_VERSION_SECONDS &&
	    __builtin_mul_overflow(out->last_used_ns, (int64_t)1000000000, &out->last_used_ns))
		return BG_ECORRUPT;
	return 0;
}

int txn_content_get(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                    struct store_content *out)
{
	MDB_val v;
	int rc;

	if (sha == NULL || out == NULL)
		return BG_EINVAL;
	memset(out, 0, sizeof(*out));
	rc = ci_raw_get(txn, DB_CONTENT, sha, BG_SHA256_LEN, &v);
	if (rc != 0)
		return rc;
	rc = ci_content_decode(&v, out);
	if (rc != 0)
		memset(out, 0, sizeof(*out));
	return rc;
}

int txn_content_put(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                    const struct store_content *c)
{
	unsigned char rec[STORE_CONTENT_REC_LEN];
	struct store_content old;
	MDB_val v;
	int rc, have_old;

	if (sha == NULL || c == NULL || c->blob == 0)
		return BG_EINVAL;
	rc = ci_txn_check(txn, 1);
	if (rc != 0)
		return rc;
	rc = ci_raw_get(txn, DB_CONTENT, sha, BG_SHA256_LEN, &v);
	if (rc != 0 && rc != BG_ENOENT)
		return rc;
	have_old = rc == 0 && ci_content_decode(&v, &old) == 0;
	rec[0] = STORE_CONTENT_VERSION;
	put_le64(rec + 1, c->blob);
	put_le64(rec + 9, c->size);
	put_le64(rec + 17, (uint64_t)c->created);
	put_le64(rec + 25, (uint64_t)c->last_used_ns);
	rc = ci_raw_put(txn, DB_CONTENT, sha, BG_SHA256_LEN, rec, sizeof(rec));
	if (rc != 0)
		return rc;
	return ci_index_content_put(txn, sha, have_old ? &old : NULL, c);
}

int ci_content_del_record(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                          uint64_t *blob)
{
	struct store_content c;
	int have_blob;
	MDB_val v;
	int rc;

	*blob = 0;
	rc = ci_raw_get(txn, DB_CONTENT, sha, BG_SHA256_LEN, &v);
	if (rc != 0)
		return rc;
	have_blob = ci_content_decode(&v, &c) == 0;
	rc = ci_raw_del(txn, DB_CONTENT, sha, BG_SHA256_LEN);
	if (rc != 0 || !have_blob)
		return rc;
	*blob = c.blob;
	return ci_index_content_del(txn, sha, &c);
}

/* A damaged record is still deleted (that is how it gets repaired); its
 * chunks cannot be found and are left for store_gc(). */
int txn_content_del(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN])
{
	uint64_t blob;
	int rc;

	if (sha == NULL)
		return BG_EINVAL;
	if ((rc = ci_txn_check(txn, 1)) != 0 || (rc = ci_content_del_record(txn, sha, &blob)) != 0 ||
	    blob == 0)
		return rc;
	return ci_blob_drop(txn, blob, 0, NULL, NULL);
}

struct content_each_ctx {
	int (*fn)(const unsigned char sha[BG_SHA256_LEN], const struct store_content *c,
	          void *arg);
	void *arg;
};

static int content_each_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v,
                              void *ctx)
{
	struct content_each_ctx *c = ctx;
	unsigned char sha[BG_SHA256_LEN];
	struct store_content rec;
	int rc;

	(void)txn;
	if (k->mv_size != BG_SHA256_LEN)
		return BG_ECORRUPT;
	memcpy(sha, k->mv_data, BG_SHA256_LEN);
	rc = ci_content_decode(v, &rec);
	if (rc != 0)
		return rc;
	return c->fn(sha, &rec, c->arg);
}

int txn_content_each(struct bg_txn *txn,
                     int (*fn)(const unsigned char sha[BG_SHA256_LEN],
                               const struct store_content *c, void *arg),
                     void *arg)
{
	struct content_each_ctx c = { .fn = fn, .arg = arg };

	if (fn == NULL)
		return BG_EINVAL;
	return ci_walk(txn, DB_CONTENT, NULL, 0, 0, content_each_visit, &c);
}

/* ---- Keys --------------------------------------------------------------- */

void store_key_clear(struct store_key *k)
{
	if (k == NULL)
		return;
	free(k->url);
	free(k->etag);
	free(k->last_modified);
	free(k->date);
	memset(k, 0, sizeof(*k));
}

/* A URL hashes to its LMDB key; 0 or BG_ENOMEM (OpenSSL failed). */
static int url_key(const char *url, size_t len, unsigned char key[BG_SHA256_LEN])
{
	return ci_sha256(url, len, key);
}

static json_t *json_text_or_null(const char *s)
{
	return s == NULL ? json_null() : json_string(s);
}

int txn_key_put(struct bg_txn *txn, const struct store_key *k)
{
	char hex[BG_SHA256_HEX_LEN + 1];
	unsigned char key[BG_SHA256_LEN];
	json_t *rec = NULL;
	size_t url_len;
	int rc;

	rc = ci_txn_check(txn, 1);
	if (rc != 0)
		goto out;
	if (k == NULL || k->url == NULL || k->size > INT64_MAX) {
		rc = BG_EINVAL;
		goto out;
	}
	url_len = strnlen(k->url, STORE_URL_MAX + 1);
	if (url_len == 0) {
		rc = BG_EINVAL;
		goto out;
	}
	if (url_len > STORE_URL_MAX ||
	    (k->etag != NULL && strnlen(k->etag, STORE_VALIDATOR_MAX + 1) > STORE_VALIDATOR_MAX) ||
	    (k->last_modified != NULL &&
	     strnlen(k->last_modified, STORE_VALIDATOR_MAX + 1) > STORE_VALIDATOR_MAX) ||
	    (k->date != NULL && strnlen(k->date, STORE_VALIDATOR_MAX + 1) > STORE_VALIDATOR_MAX)) {
		rc = BG_ELIMIT;
		goto out;
	}
	rc = url_key(k->url, url_len, key);
	if (rc != 0)
		goto out;
	bg_sha256_hex(k->sha256, hex);
	rec = json_object();
	if (rec == NULL) {
		rc = BG_ENOMEM;
		goto out;
	}
	/* json_string() refuses text that is not UTF-8 and returns NULL,
	 * which json_object_set_new() reports as failure. */
	if (json_object_set_new(rec, "url", json_string(k->url)) != 0 ||
	    json_object_set_new(rec, "sha256", json_string(hex)) != 0 ||
	    json_object_set_new(rec, "size", json_integer((json_int_t)k->size)) != 0 ||
	    json_object_set_new(rec, "etag", json_text_or_null(k->etag)) != 0 ||
	    json_object_set_new(rec, "last_modified", json_text_or_null(k->last_modified)) != 0 ||
	    json_object_set_new(rec, "date", json_text_or_null(k->date)) != 0 ||
	    json_object_set_new(rec, "stored", json_integer(k->stored)) != 0 ||
	    json_object_set_new(rec, "validated", json_integer(k->validated)) != 0 ||
	    json_object_set_new(rec, "flags", json_integer(k->flags)) != 0) {
		rc = BG_EINVAL;
		goto out;
	}
	/* "fetch" only when known: a record without it reads as unknown,
	 * as those of older builds do. */
	if (k->fetch.known) {
		json_t *f;

		if ((rc = ci_fetch_to_json(&k->fetch, &f)) != 0)
			goto out;
		if ((rc = jset(rec, "fetch", f)) != 0)
			goto out;
	}
	{
		struct store_key old;
		MDB_val kk = { .mv_size = sizeof(key), .mv_data = key };
		MDB_val v;
		int have_old;

		rc = ci_raw_get(txn, DB_KEYS, key, sizeof(key), &v);
		if (rc != 0 && rc != BG_ENOENT)
			goto out;
		have_old = rc == 0 && ci_key_decode(&kk, &v, &old) == 0;
		rc = ci_json_put(txn, DB_KEYS, key, sizeof(key), rec);
		if (rc == 0)
			rc = ci_index_key_put(txn, key, have_old ? &old : NULL, k);
		if (have_old)
			store_key_clear(&old);
	}
out:
	json_decref(rec);
	return rc;
}

/* Copies a JSON string field of at most max bytes without NUL into *out;
 * null is allowed (and gives NULL) only when nullable. */
static int key_text(const json_t *rec, const char *name, size_t max, int nullable, char **out)
{
	const json_t *j = json_object_get(rec, name);
	size_t len;
	char *s;

	*out = NULL;
	if (j == NULL)
		return BG_ECORRUPT;
	if (json_is_null(j) && nullable)
		return 0;
	if (!json_is_string(j))
		return BG_ECORRUPT;
	len = json_string_length(j);
	if (len > max || memchr(json_string_value(j), '\0', len) != NULL)
		return BG_ECORRUPT;
	s = malloc(len + 1);
	if (s == NULL)
		return BG_ENOMEM;
	memcpy(s, json_string_value(j), len + 1);
	*out = s;
	return 0;
}

static int key_int(const json_t *rec, const char *name, json_int_t min, json_int_t max,
                   json_int_t *out)
{
	const json_t *j = json_object_get(rec, name);

	if (!json_is_integer(j))
		return BG_ECORRUPT;
	*out = json_integer_value(j);
	if (*out < min || *out > max)
		return BG_ECORRUPT;
	return 0;
}

int ci_key_decode(const MDB_val *k, const MDB_val *v, struct store_key *out)
{
	unsigned char key[BG_SHA256_LEN];
	char *sha_hex = NULL;
	json_t *rec = NULL;
	json_int_t n;
	int rc;

	memset(out, 0, sizeof(*out));
	if (k->mv_size != BG_SHA256_LEN) {
		rc = BG_ECORRUPT;
		goto out;
	}
	rc = ci_json_decode(v, &rec);
	if (rc != 0)
		goto out;
	rc = key_text(rec, "url", STORE_URL_MAX, 0, &out->url);
	if (rc != 0)
		goto out;
	/* The record must belong to the key it is filed under. */
	rc = url_key(out->url, strlen(out->url), key);
	if (rc != 0)
		goto out;
	if (out->url[0] == '\0' || memcmp(key, k->mv_data, BG_SHA256_LEN) != 0) {
		rc = BG_ECORRUPT;
		goto out;
	}
	rc = key_text(rec, "sha256", BG_SHA256_HEX_LEN, 0, &sha_hex);
	if (rc != 0)
		goto out;
	if (bg_sha256_from_hex(sha_hex, out->sha256) != 0) {
		rc = BG_ECORRUPT;
		goto out;
	}
	rc = key_int(rec, "size", 0, INT64_MAX, &n);
	if (rc != 0)
		goto out;
	out->size = (uint64_t)n;
	rc = key_text(rec, "etag", STORE_VALIDATOR_MAX, 1, &out->etag);
	if (rc != 0)
		goto out;
	rc = key_text(rec, "last_modified", STORE_VALIDATOR_MAX, 1, &out->last_modified);
	if (rc != 0)
		goto out;
	/* Records of older builds have no date: their Last-Modified is then
	 * never used as a validator. */
	if (json_object_get(rec, "date") != NULL &&
	    (rc = key_text(rec, "date", STORE_VALIDATOR_MAX, 1, &out->date)) != 0)
		goto out;
	rc = key_int(rec, "stored", INT64_MIN, INT64_MAX, &n);
	if (rc != 0)
		goto out;
	out->stored = n;
	rc = key_int(rec, "validated", INT64_MIN, INT64_MAX, &n);
	if (rc != 0)
		goto out;
	out->validated = n;
	rc = key_int(rec, "flags", 0, UINT_MAX, &n);
	if (rc != 0)
		goto out;
	out->flags = (unsigned)n;
	/* Records of older builds have no policy: unknown. */
	rc = ci_fetch_from_json(json_object_get(rec, "fetch"), &out->fetch);
out:
	if (rc != 0)
		store_key_clear(out);
	free(sha_hex);
	json_decref(rec);
	return rc;
}

/* The LMDB key of a URL looked up: BG_EINVAL for NULL, BG_ENOENT for a URL
 * no key can have (empty, or longer than any stored). */
static int url_lookup_key(const char *url, unsigned char key[BG_SHA256_LEN])
{
	size_t url_len;

	if (url == NULL)
		return BG_EINVAL;
	url_len = strnlen(url, STORE_URL_MAX + 1);
	if (url_len == 0 || url_len > STORE_URL_MAX)
		return BG_ENOENT;
	return url_key(url, url_len, key);
}

int txn_key_get(struct bg_txn *txn, const char *url, struct store_key *out)
{
	unsigned char key[BG_SHA256_LEN];
	MDB_val k = { .mv_size = sizeof(key), .mv_data = key };
	MDB_val v;
	int rc;

	if (out == NULL)
		return BG_EINVAL;
	memset(out, 0, sizeof(*out));
	if ((rc = url_lookup_key(url, key)) != 0)
		return rc;
	rc = ci_raw_get(txn, DB_KEYS, key, sizeof(key), &v);
	if (rc != 0)
		return rc;
	rc = ci_key_decode(&k, &v, out);
	if (rc == 0 && strcmp(out->url, url) != 0) {
		store_key_clear(out);
		rc = BG_ECORRUPT;
	}
	return rc;
}

int txn_key_del(struct bg_txn *txn, const char *url)
{
	unsigned char key[BG_SHA256_LEN];
	int rc;

	if ((rc = ci_txn_check(txn, 1)) != 0 || (rc = url_lookup_key(url, key)) != 0)
		return rc;
	return ci_key_del_raw(txn, key);
}

int ci_key_del_raw(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN])
{
	MDB_val k = { .mv_size = BG_SHA256_LEN, .mv_data = (void *)urlhash };
	struct store_key old;
	MDB_val v;
	int rc, have_old;

	rc = ci_raw_get(txn, DB_KEYS, urlhash, BG_SHA256_LEN, &v);
	if (rc != 0)
		return rc;
	have_old = ci_key_decode(&k, &v, &old) == 0;
	rc = ci_raw_del(txn, DB_KEYS, urlhash, BG_SHA256_LEN);
	if (rc == 0) {
		if (have_old) {
			rc = ci_index_key_del(txn, urlhash, &old, 1);
		} else {
			/* Its index entries cannot be found: walkers drop them
			 * as stale.  The count still goes down. */
			struct store_stats d;

			memset(&d, 0, sizeof(d));
			d.keys = 1;
			rc = txn_stats_add(txn, &d, -1);
		}
	}
	if (have_old)
		store_key_clear(&old);
	return rc;
}

/* Deletes the key filed under urlhash, with its index entries, if the
 * record decodes and names content sha (when sha is given) or was
 * validated at `validated` (when sha is NULL); *named receives the content
 * it named.  BG_ENOENT when absent or not the record expected: the caller's
 * index entry is stale.  A record that does not decode is left to verify. */
static int key_del_if(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                      const unsigned char *sha, int64_t validated,
                      unsigned char named[BG_SHA256_LEN])
{
	MDB_val k = { .mv_size = BG_SHA256_LEN, .mv_data = (void *)urlhash };
	struct store_key old;
	MDB_val v;
	int rc;

	rc = ci_raw_get(txn, DB_KEYS, urlhash, BG_SHA256_LEN, &v);
	if (rc != 0)
		return rc;
	if (ci_key_decode(&k, &v, &old) != 0)
		return BG_ENOENT;
	if (sha != NULL ? memcmp(old.sha256, sha, BG_SHA256_LEN) != 0 : old.validated != validated) {
		store_key_clear(&old);
		return BG_ENOENT; /* pointed elsewhere, or validated again, since */
	}
	if (named != NULL)
		memcpy(named, old.sha256, BG_SHA256_LEN);
	rc = ci_raw_del(txn, DB_KEYS, urlhash, BG_SHA256_LEN);
	if (rc == 0)
		rc = ci_index_key_del(txn, urlhash, &old, 1);
	store_key_clear(&old);
	return rc;
}

int ci_key_del_naming(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                       const unsigned char sha[BG_SHA256_LEN])
{
	return key_del_if(txn, urlhash, sha, 0, NULL);
}

int ci_key_del_validated(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                            int64_t validated, unsigned char sha[BG_SHA256_LEN])
{
	return key_del_if(txn, urlhash, NULL, validated, sha);
}

struct key_each_ctx {
	int (*fn)(const struct store_key *k, void *arg);
	void *arg;
};

static int key_each_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct key_each_ctx *c = ctx;
	struct store_key key;
	int rc;

	(void)txn;
	rc = ci_key_decode(k, v, &key);
	if (rc != 0)
		return rc;
	rc = c->fn(&key, c->arg);
	store_key_clear(&key);
	return rc;
}

int txn_key_each(struct bg_txn *txn, int (*fn)(const struct store_key *k, void *arg), void *arg)
{
	struct key_each_ctx c = { .fn = fn, .arg = arg };

	if (fn == NULL)
		return BG_EINVAL;
	return ci_walk(txn, DB_KEYS, NULL, 0, 0, key_each_visit, &c);
}

/* ---- Derived data and opening ------------------------------------------- */

static int reindex_content(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct store_stats *totals = ctx;
	struct store_content c;

	if (k->mv_size != BG_SHA256_LEN || ci_content_decode(v, &c) != 0)
		return 0; /* verify's business */
	totals->entries++;
	totals->bytes += c.size;
	return ci_index_content_add(txn, k->mv_data, &c);
}

static int reindex_key(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct store_stats *totals = ctx;
	unsigned char urlhash[BG_SHA256_LEN];
	struct store_key key;
	int rc;

	totals->keys++;
	if (ci_key_decode(k, v, &key) != 0)
		return 0;
	memcpy(urlhash, k->mv_data, BG_SHA256_LEN);
	rc = ci_index_key_add(txn, urlhash, &key);
	store_key_clear(&key);
	return rc;
}

int ci_records_reindex(struct bg_txn *txn)
{
	struct store_stats totals;
	int rc;

	memset(&totals, 0, sizeof(totals));
	if ((rc = ci_index_clear(txn)) != 0 ||
	    (rc = ci_walk(txn, DB_CONTENT, NULL, 0, 0, reindex_content, &totals)) != 0 ||
	    (rc = ci_walk(txn, DB_KEYS, NULL, 0, 0, reindex_key, &totals)) != 0)
		return rc;
	return ci_stats_set_totals(txn, &totals);
}

/* Opening the store is opening the environment (store.c) and bringing the
 * records of an older format up to this one: their indexes are rebuilt. */
int store_open(const char *home, unsigned flags, const struct store_options *opts,
               struct bg_store **out)
{
	return ci_env_open(home, flags, opts, ci_records_reindex, out);
}
