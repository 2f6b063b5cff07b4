/*
 * policy.c - what the store keeps: its configuration and limits (size,
 * age), uses and pins of content, and the enforcement of the limits, which
 * walks the indexes of index.c (lru, refs, aged) and the pins.
 *
 * A walker that meets an index entry whose record is gone or changed
 * deletes it as stale and goes on: a damaged record costs a lookup, never a
 * wrong eviction.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "cache.h"
#include "cache_int.h"

#define CONFIG_KEY "config"
#define DAY_SECONDS 86400

/* ---- Configuration ---------------------------------------------------------- */

int txn_config_get(struct bg_txn *txn, struct store_config *out)
{
	json_t *rec = NULL;
	MDB_val v;
	int rc;

	out->max_size_bytes = 0;
	out->max_size_percent = STORE_DEFAULT_MAX_PERCENT;
	out->max_age_days = STORE_DEFAULT_MAX_AGE_DAYS;
	rc = ci_raw_get(txn, DB_META, CONFIG_KEY, strlen(CONFIG_KEY), &v);
	if (rc == BG_ENOENT)
		return 0;
	if (rc != 0)
		return rc;
	if ((rc = ci_json_decode(&v, &rec)) != 0)
		return rc;
	{
		json_t *b = json_object_get(rec, "max_size_bytes");
		json_t *p = json_object_get(rec, "max_size_percent");
		json_t *a = json_object_get(rec, "max_age_days");

		if (!json_is_integer(b) || !json_is_integer(p) || !json_is_integer(a) ||
		    json_integer_value(b) < 0 || json_integer_value(p) < 0 ||
		    json_integer_value(p) > 100 || json_integer_value(a) < 1 ||
		    json_integer_value(a) > STORE_MAX_AGE_DAYS_MAX ||
		    (json_integer_value(b) == 0) == (json_integer_value(p) == 0)) {
			rc = BG_ECORRUPT;
		} else {
			out->max_size_bytes = (uint64_t)json_integer_value(b);
			out->max_size_percent = (unsigned)json_integer_value(p);
			out->max_age_days = (uint32_t)json_integer_value(a);
		}
	}
	json_decref(rec);
	return rc;
}

int txn_config_put(struct bg_txn *txn, const struct store_config *c)
{
	json_t *rec;
	int rc;

	if ((c->max_size_bytes == 0) == (c->max_size_percent == 0) || c->max_size_percent > 100 ||
	    c->max_size_bytes > INT64_MAX || c->max_age_days < 1 ||
	    c->max_age_days > STORE_MAX_AGE_DAYS_MAX)
		return BG_EINVAL;
	rec = json_pack("{sI sI sI}", "max_size_bytes", (json_int_t)c->max_size_bytes,
	                "max_size_percent", (json_int_t)c->max_size_percent, "max_age_days",
	                (json_int_t)c->max_age_days);
	if (rec == NULL)
		return BG_ENOMEM;
	rc = ci_json_put(txn, DB_META, CONFIG_KEY, strlen(CONFIG_KEY), rec);
	json_decref(rec);
	return rc;
}

int store_limit_bytes(struct bg_store *st, const struct store_config *c, uint64_t *out)
{
	mdb_filehandle_t fd;
	struct statvfs sv;

	if (c->max_size_percent == 0) {
		*out = c->max_size_bytes;
		return 0;
	}
	if (mdb_env_get_fd(st->env, &fd) != 0)
		return BG_EINVAL;
	if (fstatvfs(fd, &sv) != 0)
		return bg_err_from_errno(errno);
	*out = (uint64_t)sv.f_blocks * sv.f_frsize / 100 * c->max_size_percent;
	return 0;
}

/* ---- Use ------------------------------------------------------------------------ */

int txn_content_touch(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                      int64_t when_ns)
{
	struct store_content c;
	int rc = txn_content_get(txn, sha, &c);

	if (rc != 0)
		return rc;
	if (when_ns <= c.last_used_ns)
		return 0;
	c.last_used_ns = when_ns;
	return txn_content_put(txn, sha, &c);
}

int txn_pin(struct bg_txn *txn, const char *job_id, const unsigned char sha[BG_SHA256_LEN])
{
	unsigned char k[STORE_JOB_ID_LEN + BG_SHA256_LEN];

	if (job_id == NULL || strlen(job_id) != STORE_JOB_ID_LEN)
		return BG_EINVAL;
	memcpy(k, job_id, STORE_JOB_ID_LEN);
	memcpy(k + STORE_JOB_ID_LEN, sha, BG_SHA256_LEN);
	return ci_raw_put(txn, DB_PINS, k, sizeof(k), NULL, 0);
}

/* ---- Removing content and keys ---------------------------------------------------- */

/* The first refs entry of content sha, copied into r; BG_ENOENT when no
 * key names it. */
static int first_ref(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                     unsigned char r[CI_REFS_KEY_LEN])
{
	MDB_val k, v;
	int rc = ci_seek(txn, DB_REFS, sha, BG_SHA256_LEN, &k, &v);

	if (rc != 0)
		return rc;
	if (k.mv_size != CI_REFS_KEY_LEN || memcmp(k.mv_data, sha, BG_SHA256_LEN) != 0)
		return BG_ENOENT;
	memcpy(r, k.mv_data, CI_REFS_KEY_LEN);
	return 0;
}

/* Deletes the content and every key that names it.  *keys counts them. */
static int drop_content(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                        uint64_t *keys)
{
	unsigned char r[CI_REFS_KEY_LEN];
	int rc;

	while ((rc = first_ref(txn, sha, r)) == 0) {
		rc = ci_key_del_naming(txn, r + BG_SHA256_LEN, sha);
		if (rc == 0 && keys != NULL)
			(*keys)++;
		if (rc == BG_ENOENT || rc == BG_ECORRUPT)
			rc = ci_raw_del_quiet(txn, DB_REFS, r, sizeof(r)); /* stale entry */
		if (rc != 0)
			return rc;
	}
	if (rc != BG_ENOENT)
		return rc;
	rc = txn_content_del(txn, sha);
	return rc == BG_ENOENT ? 0 : rc;
}

int txn_content_drop(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN], uint64_t *keys)
{
	return drop_content(txn, sha, keys);
}

static int shared_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	const unsigned char *sha = ctx;
	struct store_key key;
	MDB_val kv;
	int rc;

	(void)v;
	if (k->mv_size != CI_REFS_KEY_LEN)
		return 0;
	rc = ci_raw_get(txn, DB_KEYS, (const unsigned char *)k->mv_data + BG_SHA256_LEN,
	                 BG_SHA256_LEN, &kv);
	if (rc == BG_ENOENT)
		return 0; /* a stale reference */
	if (rc != 0)
		return rc;
	{
		MDB_val kk = { .mv_size = BG_SHA256_LEN,
		               .mv_data = (unsigned char *)k->mv_data + BG_SHA256_LEN };

		if (ci_key_decode(&kk, &kv, &key) != 0)
			return 0; /* a damaged key shares nothing */
	}
	rc = memcmp(key.sha256, sha, BG_SHA256_LEN) == 0 && !(key.flags & STORE_KEY_PRIVATE);
	store_key_clear(&key);
	return rc; /* 1 stops the walk: found */
}

int txn_content_shared(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN], bool *shared)
{
	int rc = ci_walk(txn, DB_REFS, sha, BG_SHA256_LEN, BG_SHA256_LEN, shared_visit,
	                  (void *)sha);

	*shared = rc == 1;
	return rc == 1 ? 0 : rc;
}

/* Whether any key still names the content. */
static int has_refs(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN], int *yes)
{
	unsigned char r[CI_REFS_KEY_LEN];
	int rc = first_ref(txn, sha, r);

	*yes = rc == 0;
	return rc == BG_ENOENT ? 0 : rc;
}

/* ---- Enforcing the limits ------------------------------------------------------------ */

struct pin_set {
	unsigned char (*v)[BG_SHA256_LEN];
	size_t n, cap;
	char job[STORE_JOB_ID_LEN + 1]; /* the job of the last pin seen */
	int job_live;
	int (*job_unfinished)(const json_t *job);
};

static int sha_cmp(const void *a, const void *b)
{
	return memcmp(a, b, BG_SHA256_LEN);
}

static int pin_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct pin_set *p = ctx;
	const unsigned char *key = k->mv_data;
	int rc;

	(void)v;
	if (k->mv_size != STORE_JOB_ID_LEN + BG_SHA256_LEN)
		return ci_raw_del(txn, DB_PINS, k->mv_data, k->mv_size);
	if (memcmp(p->job, key, STORE_JOB_ID_LEN) != 0) {
		json_t *job = NULL;

		memcpy(p->job, key, STORE_JOB_ID_LEN);
		p->job[STORE_JOB_ID_LEN] = '\0';
		rc = txn_job_get(txn, p->job, &job);
		if (rc != 0 && rc != BG_ENOENT && rc != BG_ECORRUPT)
			return rc;
		p->job_live = rc == 0 && p->job_unfinished(job);
		json_decref(job);
	}
	if (!p->job_live) {
		/* The job is over: its pins go. */
		unsigned char copy[STORE_JOB_ID_LEN + BG_SHA256_LEN];

		memcpy(copy, key, sizeof(copy));
		return ci_raw_del(txn, DB_PINS, copy, sizeof(copy));
	}
	if (p->n == p->cap) {
		size_t ncap = p->cap ? p->cap * 2 : 64;
		void *nv = realloc(p->v, ncap * BG_SHA256_LEN);

		if (nv == NULL)
			return BG_ENOMEM;
		p->v = nv;
		p->cap = ncap;
	}
	memcpy(p->v[p->n++], key + STORE_JOB_ID_LEN, BG_SHA256_LEN);
	return 0;
}

struct evict_ctx {
	struct pin_set *pins;
	uint64_t limit;
	uint64_t bytes;             /* content bytes now */
	struct store_enforce_result *res;
	int pins_loaded;
	int (*job_unfinished)(const json_t *job);
	int64_t cutoff;             /* keys validated before this have expired */
};

#define WALK_STOP 1

static int lru_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct evict_ctx *e = ctx;
	unsigned char key[CI_LRU_KEY_LEN];
	const unsigned char *sha;
	struct store_content c;
	uint64_t keys = 0;
	int rc;

	(void)v;
	if (e->bytes <= e->limit)
		return WALK_STOP;
	if (k->mv_size != sizeof(key))
		return ci_raw_del(txn, DB_LRU, k->mv_data, k->mv_size);
	memcpy(key, k->mv_data, sizeof(key));
	sha = key + 8;
	rc = txn_content_get(txn, sha, &c);
	if (rc == BG_ENOENT || (rc == 0 && (uint64_t)c.last_used_ns != get_be64(key)))
		return ci_raw_del(txn, DB_LRU, key, sizeof(key)); /* stale */
	if (rc != 0 && rc != BG_ECORRUPT)
		return rc;
	if (!e->pins_loaded) {
		e->pins->job_unfinished = e->job_unfinished;
		if ((rc = ci_walk(txn, DB_PINS, NULL, 0, 0, pin_visit, e->pins)) != 0)
			return rc;
		if (e->pins->n > 1)
			qsort(e->pins->v, e->pins->n, BG_SHA256_LEN, sha_cmp);
		e->pins_loaded = 1;
	}
	if (e->pins->n > 0 && bsearch(sha, e->pins->v, e->pins->n, BG_SHA256_LEN, sha_cmp) != NULL)
		return 0; /* a job that is not over has this content */
	if ((rc = drop_content(txn, sha, &keys)) != 0)
		return rc;
	e->bytes = e->bytes > c.size ? e->bytes - c.size : 0;
	e->res->evicted++;
	e->res->evicted_bytes += c.size;
	e->res->keys_removed += keys;
	return 0;
}

static int aged_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct evict_ctx *e = ctx;
	unsigned char key[CI_AGED_KEY_LEN];
	unsigned char sha[BG_SHA256_LEN];
	int rc, refs;

	(void)v;
	if (k->mv_size != sizeof(key))
		return ci_raw_del(txn, DB_AGED, k->mv_data, k->mv_size);
	memcpy(key, k->mv_data, sizeof(key));
	if ((int64_t)get_be64(key) >= e->cutoff)
		return WALK_STOP;
	rc = ci_key_del_validated(txn, key + 8, (int64_t)get_be64(key), sha);
	if (rc == BG_ENOENT)
		return ci_raw_del_quiet(txn, DB_AGED, key, sizeof(key)); /* stale */
	if (rc != 0)
		return rc;
	e->res->expired++;
	e->res->keys_removed++;
	if ((rc = has_refs(txn, sha, &refs)) != 0 || refs)
		return rc;
	{
		struct store_content c;

		rc = txn_content_get(txn, sha, &c);
		if (rc == BG_ENOENT)
			return 0;
		if (rc != 0 && rc != BG_ECORRUPT)
			return rc;
		if ((rc = txn_content_del(txn, sha)) != 0)
			return rc;
		e->bytes = e->bytes > c.size ? e->bytes - c.size : 0;
		e->res->expired_entries++;
		e->res->expired_bytes += c.size;
	}
	return 0;
}

int txn_enforce_limits(struct bg_txn *txn, uint64_t limit, int64_t now, uint32_t max_age_days,
                       int (*job_unfinished)(const json_t *job),
                       struct store_enforce_result *res)
{
	struct pin_set pins;
	struct evict_ctx e;
	struct store_stats s, d;
	int rc;

	memset(res, 0, sizeof(*res));
	memset(&pins, 0, sizeof(pins));
	memset(&e, 0, sizeof(e));
	if (job_unfinished == NULL)
		return BG_EINVAL;
	if ((rc = txn_stats_get(txn, &s)) != 0)
		return rc;
	e.pins = &pins;
	e.limit = limit;
	e.bytes = s.bytes;
	e.res = res;
	e.job_unfinished = job_unfinished;
	e.cutoff = now - (int64_t)max_age_days * DAY_SECONDS;
	rc = ci_walk(txn, DB_AGED, NULL, 0, 0, aged_visit, &e);
	if (rc == WALK_STOP)
		rc = 0;
	if (rc == 0 && e.bytes > limit) {
		rc = ci_walk(txn, DB_LRU, NULL, 0, 0, lru_visit, &e);
		if (rc == WALK_STOP)
			rc = 0;
	}
	free(pins.v);
	/* Tombstones of downloads that ended long ago go with the limits:
	 * the agent enforces them after every file. */
	if (rc == 0)
		rc = ci_inflight_prune_final(txn, now);
	if (rc != 0)
		return rc;
	res->over_limit = e.bytes > limit ? e.bytes - limit : 0;
	memset(&d, 0, sizeof(d));
	d.evicted = res->evicted;
	d.evicted_bytes = res->evicted_bytes;
	d.expired = res->expired;
	if (d.evicted == 0 && d.expired == 0)
		return 0;
	return txn_stats_add(txn, &d, 1);
}

