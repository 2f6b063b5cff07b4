/*
 * inflight.c - downloads in progress: one JSON record per URL in the
 * database "inflight", filed under SHA-256(url) like keys, rewritten by
 * the agent in the transaction of every chunk it commits, so that
 * bgcopy-peerd can serve the committed prefix while the rest arrives.
 * The writer's liveness is a lock file it holds (flock) while it fetches:
 * a kill -9 drops the lock with the process, never the record's truth.
 *
 * Decoding is strict (BG_ECORRUPT): a record that says more than it
 * should could make a reader serve bytes that are not there.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "cache.h"
#include "cache_int.h"

static const char *const state_names[] = {
	[STORE_INFLIGHT_WANT] = "want",
	[STORE_INFLIGHT_ORIGIN] = "origin",
	[STORE_INFLIGHT_PEER] = "peer",
	[STORE_INFLIGHT_FINAL] = "final",
};
#define STATE_N (sizeof(state_names) / sizeof(state_names[0]))

void
store_inflight_clear(struct store_inflight *f)
{
	if (f == NULL)
		return;
	free(f->url);
	free(f->etag);
	free(f->last_modified);
	free(f->date);
	free(f->final_url);
	memset(f, 0, sizeof(*f));
}

const char *
store_inflight_state_name(enum store_inflight_state s)
{
	return (unsigned)s < STATE_N ? state_names[s] : NULL;
}

static bool
have_db(const struct bg_txn *txn)
{
	return txn->dbi[DB_INFLIGHT] != 0;
}

/* The lock file's name relative to the home, as the record tells it. */
static void
lock_name(const unsigned char urlhash[BG_SHA256_LEN], char out[96])
{
	char hex[BG_SHA256_HEX_LEN + 1];

	bg_sha256_hex(urlhash, hex);
	snprintf(out, 96, "%s/%s.lock", STORE_INFLIGHT_LOCK_DIR, hex);
}

int
store_inflight_lock_path(const char *home, const unsigned char urlhash[BG_SHA256_LEN], char *out,
                         size_t outlen)
{
	char name[96];
	int n;

	if (home == NULL || urlhash == NULL || out == NULL || outlen == 0)
		return BG_EINVAL;
	lock_name(urlhash, name);
	n = snprintf(out, outlen, "%s/%s", home, name);
	if (n < 0 || (size_t)n >= outlen) {
		out[0] = '\0';
		return BG_ELIMIT;
	}
	return 0;
}

bool
store_inflight_alive(const char *home, const unsigned char urlhash[BG_SHA256_LEN])
{
	char path[PATH_MAX];
	bool alive = false;
	int fd;

	if (store_inflight_lock_path(home, urlhash, path, sizeof(path)) != 0)
		return false;
	/* Never created here: peerd is a reader, and a file nobody holds is
	 * a writer that is gone. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return false;
	while (flock(fd, LOCK_SH | LOCK_NB) != 0) {
		if (errno == EINTR)
			continue;
		alive = errno == EWOULDBLOCK;
		break;
	}
	close(fd); /* releases a lock taken by the test */
	return alive;
}

/* ---- Records --------------------------------------------------------------- */

static bool
text_fits(const char *s, size_t max)
{
	return s == NULL || strnlen(s, max + 1) <= max;
}

/* a fixed-size text field must end inside its array */
static bool
field_ok(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

static int
inflight_check(const struct store_inflight *f, size_t *url_len)
{
	if (f == NULL || f->url == NULL)
		return BG_EINVAL;
	*url_len = strnlen(f->url, STORE_URL_MAX + 1);
	if (*url_len == 0)
		return BG_EINVAL;
	if (*url_len > STORE_URL_MAX || !text_fits(f->final_url, STORE_URL_MAX) ||
	    !text_fits(f->etag, STORE_VALIDATOR_MAX) ||
	    !text_fits(f->last_modified, STORE_VALIDATOR_MAX) ||
	    !text_fits(f->date, STORE_VALIDATOR_MAX))
		return BG_ELIMIT;
	if (f->gen == 0 || f->gen > INT64_MAX || f->blob > INT64_MAX || f->committed > INT64_MAX ||
	    f->total < -1 || (f->total >= 0 && f->committed > (uint64_t)f->total) ||
	    (unsigned)f->state >= STATE_N || (f->state == STORE_INFLIGHT_FINAL && !f->has_sha) ||
	    !field_ok(f->job, sizeof(f->job)) || !field_ok(f->source, sizeof(f->source)) ||
	    (f->fetch.known && !ci_fetch_valid(&f->fetch)))
		return BG_EINVAL;
	return 0;
}

int
txn_inflight_put(struct bg_txn *txn, const struct store_inflight *f)
{
	unsigned char key[BG_SHA256_LEN];
	char hex[BG_SHA256_HEX_LEN + 1], lock[96];
	json_t *rec = NULL, *fetch = NULL;
	size_t url_len;
	int rc;

	if ((rc = ci_txn_check(txn, 1)) != 0 || (rc = inflight_check(f, &url_len)) != 0)
		return rc;
	if (!have_db(txn))
		return BG_ERDONLY;
	if ((rc = ci_sha256(f->url, url_len, key)) != 0)
		return rc;
	lock_name(key, lock);
	if ((rc = ci_fetch_to_json(&f->fetch, &fetch)) != 0)
		return rc;
	if (f->has_sha)
		bg_sha256_hex(f->sha256, hex);
	if ((rec = json_object()) == NULL) {
		json_decref(fetch);
		return BG_ENOMEM;
	}
	/* json_string() refuses text that is not UTF-8 (NULL): BG_EINVAL,
	 * as txn_key_put says.  fetch is set without giving our reference
	 * away, so that it is dropped below whichever member failed. */
	if (json_object_set_new(rec, "url", json_string(f->url)) != 0 ||
	    json_object_set_new(rec, "job", json_string(f->job)) != 0 ||
	    json_object_set_new(rec, "file", json_integer(f->file)) != 0 ||
	    json_object_set_new(rec, "blob", json_integer((json_int_t)f->blob)) != 0 ||
	    json_object_set_new(rec, "gen", json_integer((json_int_t)f->gen)) != 0 ||
	    json_object_set_new(rec, "state", json_string(state_names[f->state])) != 0 ||
	    json_object_set_new(rec, "committed", json_integer((json_int_t)f->committed)) != 0 ||
	    json_object_set_new(rec, "total", json_integer(f->total)) != 0 ||
	    json_object_set_new(rec, "etag", f->etag ? json_string(f->etag) : json_null()) != 0 ||
	    json_object_set_new(rec, "last_modified",
	                        f->last_modified ? json_string(f->last_modified) : json_null()) != 0 ||
	    json_object_set_new(rec, "date", f->date ? json_string(f->date) : json_null()) != 0 ||
	    json_object_set_new(rec, "final_url",
	                        f->final_url ? json_string(f->final_url) : json_null()) != 0 ||
	    json_object_set(rec, "fetch", fetch != NULL ? fetch : json_null()) != 0 ||
	    json_object_set_new(rec, "source",
	                        f->source[0] != '\0' ? json_string(f->source) : json_null()) != 0 ||
	    json_object_set_new(rec, "sha256", f->has_sha ? json_string(hex) : json_null()) != 0 ||
	    json_object_set_new(rec, "lock", json_string(lock)) != 0 ||
	    json_object_set_new(rec, "started", json_integer(f->started)) != 0 ||
	    json_object_set_new(rec, "updated", json_integer(f->updated)) != 0)
		rc = BG_EINVAL;
	else
		rc = ci_json_put(txn, DB_INFLIGHT, key, sizeof(key), rec);
	json_decref(fetch);
	json_decref(rec);
	return rc;
}

/* Copies string field name (null allowed only when nullable) of at most
 * max bytes, without NUL, into a new string. */
static int
dup_text(const json_t *rec, const char *name, size_t max, bool nullable, char **out)
{
	const json_t *j = json_object_get(rec, name);
	size_t len;

	*out = NULL;
	if (j == NULL)
		return BG_ECORRUPT;
	if (json_is_null(j) && nullable)
		return 0;
	if (!json_is_string(j) || (len = json_string_length(j)) > max ||
	    memchr(json_string_value(j), '\0', len) != NULL)
		return BG_ECORRUPT;
	if ((*out = malloc(len + 1)) == NULL)
		return BG_ENOMEM;
	memcpy(*out, json_string_value(j), len + 1);
	return 0;
}

/* The same into a fixed array of size bytes; null gives "". */
static int
copy_text(const json_t *rec, const char *name, char *out, size_t size)
{
	const json_t *j = json_object_get(rec, name);
	size_t len;

	out[0] = '\0';
	if (j == NULL)
		return BG_ECORRUPT;
	if (json_is_null(j))
		return 0;
	if (!json_is_string(j) || (len = json_string_length(j)) >= size ||
	    memchr(json_string_value(j), '\0', len) != NULL)
		return BG_ECORRUPT;
	memcpy(out, json_string_value(j), len + 1);
	return 0;
}

static int
get_int(const json_t *rec, const char *name, json_int_t min, json_int_t max, json_int_t *out)
{
	const json_t *j = json_object_get(rec, name);

	if (!json_is_integer(j) || (*out = json_integer_value(j)) < min || *out > max)
		return BG_ECORRUPT;
	return 0;
}

static int
inflight_decode(const MDB_val *k, const MDB_val *v, struct store_inflight *out)
{
	unsigned char key[BG_SHA256_LEN];
	char *sha_hex = NULL, lock[96];
	const json_t *st, *lk;
	json_t *rec = NULL;
	json_int_t n;
	size_t i;
	int rc;

	memset(out, 0, sizeof(*out));
	if (k->mv_size != BG_SHA256_LEN)
		return BG_ECORRUPT;
	if ((rc = ci_json_decode(v, &rec)) != 0)
		return rc;
	/* The record must belong to the key it is filed under. */
	if ((rc = dup_text(rec, "url", STORE_URL_MAX, false, &out->url)) != 0 ||
	    (rc = ci_sha256(out->url, strlen(out->url), key)) != 0)
		goto out;
	if (out->url[0] == '\0' || memcmp(key, k->mv_data, BG_SHA256_LEN) != 0) {
		rc = BG_ECORRUPT;
		goto out;
	}
	if ((rc = copy_text(rec, "job", out->job, sizeof(out->job))) != 0 ||
	    (rc = get_int(rec, "file", 0, UINT32_MAX, &n)) != 0)
		goto out;
	out->file = (uint32_t)n;
	if ((rc = get_int(rec, "blob", 0, INT64_MAX, &n)) != 0)
		goto out;
	out->blob = (uint64_t)n;
	if ((rc = get_int(rec, "gen", 1, INT64_MAX, &n)) != 0)
		goto out;
	out->gen = (uint64_t)n;
	if ((rc = get_int(rec, "committed", 0, INT64_MAX, &n)) != 0)
		goto out;
	out->committed = (uint64_t)n;
	if ((rc = get_int(rec, "total", -1, INT64_MAX, &n)) != 0)
		goto out;
	out->total = n;
	st = json_object_get(rec, "state");
	for (i = 0; i < STATE_N && json_is_string(st); i++)
		if (strcmp(json_string_value(st), state_names[i]) == 0)
			break;
	if (!json_is_string(st) || i == STATE_N || (out->total >= 0 && out->committed > (uint64_t)out->total)) {
		rc = BG_ECORRUPT;
		goto out;
	}
	out->state = (enum store_inflight_state)i;
	if ((rc = dup_text(rec, "etag", STORE_VALIDATOR_MAX, true, &out->etag)) != 0 ||
	    (rc = dup_text(rec, "last_modified", STORE_VALIDATOR_MAX, true, &out->last_modified)) != 0 ||
	    (rc = dup_text(rec, "date", STORE_VALIDATOR_MAX, true, &out->date)) != 0 ||
	    (rc = dup_text(rec, "final_url", STORE_URL_MAX, true, &out->final_url)) != 0 ||
	    (rc = ci_fetch_from_json(json_object_get(rec, "fetch"), &out->fetch)) != 0 ||
	    (rc = copy_text(rec, "source", out->source, sizeof(out->source))) != 0 ||
	    (rc = dup_text(rec, "sha256", BG_SHA256_HEX_LEN, true, &sha_hex)) != 0)
		goto out;
	if (sha_hex != NULL) {
		if (bg_sha256_from_hex(sha_hex, out->sha256) != 0) {
			rc = BG_ECORRUPT;
			goto out;
		}
		out->has_sha = true;
	}
	if (out->state == STORE_INFLIGHT_FINAL && !out->has_sha) {
		rc = BG_ECORRUPT;
		goto out;
	}
	/* "lock" names the file derived from the key; any other is not ours */
	lk = json_object_get(rec, "lock");
	lock_name(key, lock);
	if (lk != NULL && (!json_is_string(lk) || strcmp(json_string_value(lk), lock) != 0)) {
		rc = BG_ECORRUPT;
		goto out;
	}
	if ((rc = get_int(rec, "started", INT64_MIN, INT64_MAX, &n)) != 0)
		goto out;
	out->started = n;
	if ((rc = get_int(rec, "updated", INT64_MIN, INT64_MAX, &n)) != 0)
		goto out;
	out->updated = n;
out:
	if (rc != 0)
		store_inflight_clear(out);
	free(sha_hex);
	json_decref(rec);
	return rc;
}

int
txn_inflight_get_hash(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                      struct store_inflight *out)
{
	MDB_val k = { .mv_size = BG_SHA256_LEN, .mv_data = (void *)urlhash };
	MDB_val v;
	int rc;

	if (out == NULL)
		return BG_EINVAL;
	memset(out, 0, sizeof(*out));
	if (urlhash == NULL)
		return BG_EINVAL;
	if ((rc = ci_txn_check(txn, 0)) != 0)
		return rc;
	if (!have_db(txn))
		return BG_ENOENT;
	if ((rc = ci_raw_get(txn, DB_INFLIGHT, urlhash, BG_SHA256_LEN, &v)) != 0)
		return rc;
	return inflight_decode(&k, &v, out);
}

/* The LMDB key of a URL looked up (as records.c: BG_ENOENT for a URL no
 * record can have). */
static int
url_lookup_key(const char *url, unsigned char key[BG_SHA256_LEN])
{
	size_t len;

	if (url == NULL)
		return BG_EINVAL;
	len = strnlen(url, STORE_URL_MAX + 1);
	if (len == 0 || len > STORE_URL_MAX)
		return BG_ENOENT;
	return ci_sha256(url, len, key);
}

int
txn_inflight_get(struct bg_txn *txn, const char *url, struct store_inflight *out)
{
	unsigned char key[BG_SHA256_LEN];
	int rc;

	if (out == NULL)
		return BG_EINVAL;
	memset(out, 0, sizeof(*out));
	if ((rc = url_lookup_key(url, key)) != 0 || (rc = txn_inflight_get_hash(txn, key, out)) != 0)
		return rc;
	if (strcmp(out->url, url) != 0) {
		store_inflight_clear(out);
		return BG_ECORRUPT;
	}
	return 0;
}

int
txn_inflight_del(struct bg_txn *txn, const char *url)
{
	unsigned char key[BG_SHA256_LEN];
	int rc;

	if ((rc = ci_txn_check(txn, 1)) != 0 || (rc = url_lookup_key(url, key)) != 0)
		return rc;
	if (!have_db(txn))
		return BG_ENOENT;
	/* whatever the record holds: a damaged one goes the same way */
	return ci_raw_del(txn, DB_INFLIGHT, key, sizeof(key));
}

struct each_ctx {
	int (*fn)(const struct store_inflight *f, void *arg);
	void *arg;
};

static int
each_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct each_ctx *c = ctx;
	struct store_inflight f;
	int rc;

	(void)txn;
	rc = inflight_decode(k, v, &f);
	if (rc == BG_ECORRUPT)
		return 0; /* passed over; store_gc deletes it */
	if (rc != 0)
		return rc;
	rc = c->fn(&f, c->arg);
	store_inflight_clear(&f);
	return rc;
}

int
txn_inflight_each(struct bg_txn *txn, int (*fn)(const struct store_inflight *f, void *arg),
                  void *arg)
{
	struct each_ctx c = { fn, arg };
	int rc;

	if (fn == NULL)
		return BG_EINVAL;
	if ((rc = ci_txn_check(txn, 0)) != 0 || !have_db(txn))
		return rc;
	return ci_walk(txn, DB_INFLIGHT, NULL, 0, 0, each_visit, &c);
}

/* For store_gc (gc.c): decodes a raw record; BG_ECORRUPT when it cannot. */
int
ci_inflight_decode(const MDB_val *k, const MDB_val *v, struct store_inflight *out)
{
	return inflight_decode(k, v, out);
}

/* Tombstones older than STORE_INFLIGHT_TOMBSTONE at now: every stream of
 * their incarnation has had its time. */
static int
prune_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	const int64_t *now = ctx;
	unsigned char key[BG_SHA256_LEN];
	struct store_inflight f;
	bool drop;

	if (k->mv_size != BG_SHA256_LEN || inflight_decode(k, v, &f) != 0)
		return 0; /* store_gc's business */
	drop = f.state == STORE_INFLIGHT_FINAL && f.updated < *now - STORE_INFLIGHT_TOMBSTONE;
	store_inflight_clear(&f);
	if (!drop)
		return 0;
	memcpy(key, k->mv_data, sizeof(key));
	return ci_raw_del(txn, DB_INFLIGHT, key, sizeof(key));
}

int
ci_inflight_prune_final(struct bg_txn *txn, int64_t now)
{
	int rc;

	if ((rc = ci_txn_check(txn, 1)) != 0 || !have_db(txn))
		return rc;
	return ci_walk(txn, DB_INFLIGHT, NULL, 0, 0, prune_visit, &now);
}
