/*
 * policy.c - what the store keeps: its limits (size, age), the indexes that
 * make enforcing them cheap, usage counters, and what bgcopy-peerd reports
 * of its use.
 *
 * Indexes (all maintained by the record functions of records.c, in the
 * transaction that changes the record they index):
 *   lru   be64(last_used_ns) sha256       -> ""  content, least recently used first
 *   refs  content sha256 | sha256(url)    -> ""  the keys that name a content
 *   aged  be64(validated) | sha256(url)   -> ""  keys, least recently validated first
 *   pins  job id | content sha256         -> ""  content a job has finished into
 * An index entry whose record is gone or changed is stale: walkers check the
 * record and delete what is stale, so that a record written without its
 * index (a damaged one, say) costs a lookup, never a wrong decision.
 *
 * The "stats" record in meta counts entries, bytes and keys (kept by the
 * same functions) and the events below.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "cache_int.h"

#define STATS_KEY "stats"
#define CONFIG_KEY "config"
#define STATS_FIELDS 15
#define STATS_FIELDS_V2 12 /* before the store's own hit counters */
#define DAY_SECONDS 86400

/* ---- The clock ------------------------------------------------------------ */

/* $BGCOPY_TIME_OFFSET in seconds, 0 when unset or not a number. */
static int64_t clock_offset(void)
{
	const char *off = getenv("BGCOPY_TIME_OFFSET");

	if (off != NULL && off[0] != '\0') {
		char *end;
		long long v;

		errno = 0;
		v = strtoll(off, &end, 10);
		if (errno == 0 && *end == '\0' && v > -(1LL << 40) && v < (1LL << 40))
			return v;
	}
	return 0;
}

int64_t bg_now(void)
{
	return (int64_t)time(NULL) + clock_offset();
}

int64_t bg_now_ns(void)
{
	static _Atomic int64_t last;
	struct timespec ts;
	int64_t t, prev;

	clock_gettime(CLOCK_REALTIME, &ts);
	t = ((int64_t)ts.tv_sec + clock_offset()) * 1000000000 + ts.tv_nsec;
	/* Strictly increasing within the process: two uses by one process
	 * never tie, and a clock stepped back does not reorder them. */
	prev = atomic_load(&last);
	do {
		if (t <= prev)
			t = prev + 1;
	} while (!atomic_compare_exchange_weak(&last, &prev, t));
	return t;
}

/* ---- Counters --------------------------------------------------------------- */

static uint64_t *stats_field(struct store_stats *s, int i)
{
	uint64_t *f[STATS_FIELDS] = {
		&s->entries,     &s->bytes,        &s->keys,       &s->evicted,
		&s->evicted_bytes, &s->expired,    &s->local_hits, &s->local_misses,
		&s->peer_hits,   &s->peer_misses,  &s->not_kept,   &s->not_kept_bytes,
		&s->store_hits,  &s->store_revalidated, &s->store_misses,
	};

	return f[i];
}

int txn_stats_get(struct bg_txn *txn, struct store_stats *out)
{
	MDB_val v;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = txn_raw_get(txn, DB_META, STATS_KEY, strlen(STATS_KEY), &v);
	if (rc == BG_ENOENT)
		return 0;
	if (rc != 0)
		return rc;
	/* A record of an older build has fewer counters: the rest are 0. */
	if (v.mv_size != STATS_FIELDS * 8 && v.mv_size != STATS_FIELDS_V2 * 8)
		return BG_ECORRUPT;
	for (int i = 0; i < (int)(v.mv_size / 8); i++)
		*stats_field(out, i) = get_le64((const unsigned char *)v.mv_data + i * 8);
	return 0;
}

static int stats_put(struct bg_txn *txn, struct store_stats *s)
{
	unsigned char buf[STATS_FIELDS * 8];

	for (int i = 0; i < STATS_FIELDS; i++)
		put_le64(buf + i * 8, *stats_field(s, i));
	return txn_raw_put(txn, DB_META, STATS_KEY, strlen(STATS_KEY), buf, sizeof(buf));
}

int txn_stats_add(struct bg_txn *txn, const struct store_stats *d, int sign)
{
	struct store_stats s;
	struct store_stats delta = *d;
	int rc = txn_stats_get(txn, &s);

	/* A damaged counter record is started again rather than blocking
	 * every transfer; `cache verify` rebuilds it. */
	if (rc == BG_ECORRUPT)
		memset(&s, 0, sizeof(s)), rc = 0;
	if (rc != 0)
		return rc;
	for (int i = 0; i < STATS_FIELDS; i++) {
		uint64_t *f = stats_field(&s, i);
		uint64_t x = *stats_field(&delta, i);

		*f = sign >= 0 ? *f + x : *f >= x ? *f - x : 0;
	}
	return stats_put(txn, &s);
}

/* ---- Configuration ---------------------------------------------------------- */

int txn_config_get(struct bg_txn *txn, struct store_config *out)
{
	json_t *rec = NULL;
	MDB_val v;
	int rc;

	out->max_size_bytes = 0;
	out->max_size_percent = STORE_DEFAULT_MAX_PERCENT;
	out->max_age_days = STORE_DEFAULT_MAX_AGE_DAYS;
	rc = txn_raw_get(txn, DB_META, CONFIG_KEY, strlen(CONFIG_KEY), &v);
	if (rc == BG_ENOENT)
		return 0;
	if (rc != 0)
		return rc;
	if ((rc = store_json_decode(&v, &rec)) != 0)
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
	rc = store_json_put(txn, DB_META, CONFIG_KEY, strlen(CONFIG_KEY), rec);
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

/* ---- Index upkeep (called by records.c) ---------------------------------------- */

static void lru_key(unsigned char k[8 + BG_SHA256_LEN], int64_t last_used_ns,
                    const unsigned char sha[BG_SHA256_LEN])
{
	put_be64(k, (uint64_t)last_used_ns);
	memcpy(k + 8, sha, BG_SHA256_LEN);
}

static int del_quiet(struct bg_txn *txn, enum store_db db, const void *k, size_t klen)
{
	int rc = txn_raw_del(txn, db, k, klen);

	return rc == BG_ENOENT ? 0 : rc;
}

int idx_content_put(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                    const struct store_content *old, const struct store_content *c)
{
	unsigned char k[8 + BG_SHA256_LEN];
	struct store_stats d;
	int rc;

	if (old != NULL && old->last_used_ns == c->last_used_ns && old->size == c->size)
		return 0;
	if (old != NULL) {
		lru_key(k, old->last_used_ns, sha);
		if ((rc = del_quiet(txn, DB_LRU, k, sizeof(k))) != 0)
			return rc;
	}
	lru_key(k, c->last_used_ns, sha);
	if ((rc = txn_raw_put(txn, DB_LRU, k, sizeof(k), NULL, 0)) != 0)
		return rc;
	memset(&d, 0, sizeof(d));
	if (old == NULL) {
		d.entries = 1;
		d.bytes = c->size;
	} else if (old->size != c->size) {
		/* Not something the agent does; kept exact anyway. */
		d.bytes = old->size;
		if ((rc = txn_stats_add(txn, &d, -1)) != 0)
			return rc;
		d.bytes = c->size;
	} else {
		return 0;
	}
	return txn_stats_add(txn, &d, 1);
}

int idx_content_del(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                    const struct store_content *old)
{
	unsigned char k[8 + BG_SHA256_LEN];
	struct store_stats d;
	int rc;

	lru_key(k, old->last_used_ns, sha);
	if ((rc = del_quiet(txn, DB_LRU, k, sizeof(k))) != 0)
		return rc;
	memset(&d, 0, sizeof(d));
	d.entries = 1;
	d.bytes = old->size;
	return txn_stats_add(txn, &d, -1);
}

int idx_key_put(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                const struct store_key *old, const struct store_key *k)
{
	unsigned char r[2 * BG_SHA256_LEN];
	unsigned char a[8 + BG_SHA256_LEN];
	struct store_stats d;
	int rc;

	if (old != NULL && (rc = idx_key_del(txn, urlhash, old, 0)) != 0)
		return rc;
	memcpy(r, k->sha256, BG_SHA256_LEN);
	memcpy(r + BG_SHA256_LEN, urlhash, BG_SHA256_LEN);
	put_be64(a, (uint64_t)k->validated);
	memcpy(a + 8, urlhash, BG_SHA256_LEN);
	if ((rc = txn_raw_put(txn, DB_REFS, r, sizeof(r), NULL, 0)) != 0 ||
	    (rc = txn_raw_put(txn, DB_AGED, a, sizeof(a), NULL, 0)) != 0)
		return rc;
	if (old != NULL)
		return 0;
	memset(&d, 0, sizeof(d));
	d.keys = 1;
	return txn_stats_add(txn, &d, 1);
}

int idx_key_del(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                const struct store_key *old, int count)
{
	unsigned char r[2 * BG_SHA256_LEN];
	unsigned char a[8 + BG_SHA256_LEN];
	struct store_stats d;
	int rc;

	memcpy(r, old->sha256, BG_SHA256_LEN);
	memcpy(r + BG_SHA256_LEN, urlhash, BG_SHA256_LEN);
	put_be64(a, (uint64_t)old->validated);
	memcpy(a + 8, urlhash, BG_SHA256_LEN);
	if ((rc = del_quiet(txn, DB_REFS, r, sizeof(r))) != 0 ||
	    (rc = del_quiet(txn, DB_AGED, a, sizeof(a))) != 0)
		return rc;
	if (!count)
		return 0;
	memset(&d, 0, sizeof(d));
	d.keys = 1;
	return txn_stats_add(txn, &d, -1);
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
	return txn_raw_put(txn, DB_PINS, k, sizeof(k), NULL, 0);
}

/* ---- Removing content and keys ---------------------------------------------------- */

/* Deletes the content and every key that names it.  *keys counts them. */
static int drop_content(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                        uint64_t *keys)
{
	unsigned char start[BG_SHA256_LEN];
	int rc;

	memcpy(start, sha, BG_SHA256_LEN);
	for (;;) {
		unsigned char r[2 * BG_SHA256_LEN];
		int found = 0;
		MDB_cursor *cur = NULL;
		MDB_val k = { .mv_size = BG_SHA256_LEN, .mv_data = start };
		MDB_val v;
		int mrc;

		if ((rc = txn_check(txn, 1)) != 0)
			return rc;
		if ((mrc = mdb_cursor_open(txn->mtxn, txn->dbi[DB_REFS], &cur)) != 0)
			return txn_fail(txn, mrc);
		mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (mrc == 0 && k.mv_size == sizeof(r) && memcmp(k.mv_data, sha, BG_SHA256_LEN) == 0) {
			memcpy(r, k.mv_data, sizeof(r));
			found = 1;
		}
		mdb_cursor_close(cur);
		if (mrc != 0 && mrc != MDB_NOTFOUND)
			return txn_fail(txn, mrc);
		if (!found)
			break;
		rc = store_key_del_hash(txn, r + BG_SHA256_LEN, sha);
		if (rc == 0 && keys != NULL)
			(*keys)++;
		if (rc == BG_ENOENT || rc == BG_ECORRUPT)
			rc = del_quiet(txn, DB_REFS, r, sizeof(r)); /* stale entry */
		if (rc != 0)
			return rc;
	}
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
	if (k->mv_size != 2 * BG_SHA256_LEN)
		return 0;
	rc = txn_raw_get(txn, DB_KEYS, (const unsigned char *)k->mv_data + BG_SHA256_LEN,
	                 BG_SHA256_LEN, &kv);
	if (rc == BG_ENOENT)
		return 0; /* a stale reference */
	if (rc != 0)
		return rc;
	{
		MDB_val kk = { .mv_size = BG_SHA256_LEN,
		               .mv_data = (unsigned char *)k->mv_data + BG_SHA256_LEN };

		if (store_key_decode(&kk, &kv, &key) != 0)
			return 0; /* a damaged key shares nothing */
	}
	rc = memcmp(key.sha256, sha, BG_SHA256_LEN) == 0 && !(key.flags & STORE_KEY_PRIVATE);
	store_key_clear(&key);
	return rc; /* 1 stops the walk: found */
}

int txn_content_shared(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN], bool *shared)
{
	int rc = txn_walk(txn, DB_REFS, sha, BG_SHA256_LEN, BG_SHA256_LEN, shared_visit,
	                  (void *)sha);

	*shared = rc == 1;
	return rc == 1 ? 0 : rc;
}

/* Whether any key still names the content. */
static int has_refs(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN], int *yes)
{
	MDB_cursor *cur = NULL;
	MDB_val k = { .mv_size = BG_SHA256_LEN, .mv_data = (void *)sha };
	MDB_val v;
	int mrc;

	*yes = 0;
	if ((mrc = mdb_cursor_open(txn->mtxn, txn->dbi[DB_REFS], &cur)) != 0)
		return txn_fail(txn, mrc);
	mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	if (mrc == 0 && k.mv_size == 2 * BG_SHA256_LEN && memcmp(k.mv_data, sha, BG_SHA256_LEN) == 0)
		*yes = 1;
	mdb_cursor_close(cur);
	return mrc == 0 || mrc == MDB_NOTFOUND ? 0 : txn_fail(txn, mrc);
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
		return txn_raw_del(txn, DB_PINS, k->mv_data, k->mv_size);
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
		return txn_raw_del(txn, DB_PINS, copy, sizeof(copy));
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
	unsigned char key[8 + BG_SHA256_LEN];
	const unsigned char *sha;
	struct store_content c;
	uint64_t keys = 0;
	int rc;

	(void)v;
	if (e->bytes <= e->limit)
		return WALK_STOP;
	if (k->mv_size != sizeof(key))
		return txn_raw_del(txn, DB_LRU, k->mv_data, k->mv_size);
	memcpy(key, k->mv_data, sizeof(key));
	sha = key + 8;
	rc = txn_content_get(txn, sha, &c);
	if (rc == BG_ENOENT || (rc == 0 && (uint64_t)c.last_used_ns != get_be64(key)))
		return txn_raw_del(txn, DB_LRU, key, sizeof(key)); /* stale */
	if (rc != 0 && rc != BG_ECORRUPT)
		return rc;
	if (!e->pins_loaded) {
		e->pins->job_unfinished = e->job_unfinished;
		if ((rc = txn_walk(txn, DB_PINS, NULL, 0, 0, pin_visit, e->pins)) != 0)
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
	unsigned char key[8 + BG_SHA256_LEN];
	unsigned char sha[BG_SHA256_LEN];
	int rc, refs;

	(void)v;
	if (k->mv_size != sizeof(key))
		return txn_raw_del(txn, DB_AGED, k->mv_data, k->mv_size);
	memcpy(key, k->mv_data, sizeof(key));
	if ((int64_t)get_be64(key) >= e->cutoff)
		return WALK_STOP;
	rc = store_key_validated_del(txn, key + 8, (int64_t)get_be64(key), sha);
	if (rc == BG_ENOENT)
		return del_quiet(txn, DB_AGED, key, sizeof(key)); /* stale */
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
	rc = txn_walk(txn, DB_AGED, NULL, 0, 0, aged_visit, &e);
	if (rc == WALK_STOP)
		rc = 0;
	if (rc == 0 && e.bytes > limit) {
		rc = txn_walk(txn, DB_LRU, NULL, 0, 0, lru_visit, &e);
		if (rc == WALK_STOP)
			rc = 0;
	}
	free(pins.v);
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

/* ---- What bgcopy-peerd reports ------------------------------------------------------- */

/* A usage record: 'U', kind ('H' served, 'M' not found), the unit of the
 * time ('N' nanoseconds; 0 seconds, as older builds wrote it), a zero byte,
 * how many times (4 bytes LE), the last time (8 bytes LE), the content
 * digest (zero for 'M').  Each record carries the time of its use, so the
 * order in the file and the time of folding do not matter. */
#define USAGE_REC_LEN 48
#define USAGE_UNIT_NS 'N'
#define USAGE_FILE "usage.log"
#define USAGE_MAX_BYTES (16 * 1024 * 1024) /* a log this long is dropped, not read */

int store_usage_append(const char *home, const struct store_usage *u, size_t n)
{
	char path[4096];
	unsigned char *buf;
	size_t len = n * USAGE_REC_LEN, off = 0;
	struct stat sb;
	int fd, rc = 0;

	if (n == 0)
		return 0;
	if (snprintf(path, sizeof(path), "%s/%s", home, USAGE_FILE) >= (int)sizeof(path))
		return BG_ELIMIT;
	if ((buf = calloc(n, USAGE_REC_LEN)) == NULL)
		return BG_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		unsigned char *r = buf + i * USAGE_REC_LEN;

		r[0] = 'U';
		r[1] = u[i].hit ? 'H' : 'M';
		r[2] = USAGE_UNIT_NS;
		put_le32(r + 4, u[i].count ? u[i].count : 1);
		put_le64(r + 8, (uint64_t)u[i].when_ns);
		if (u[i].hit)
			memcpy(r + 16, u[i].sha256, BG_SHA256_LEN);
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = bg_err_from_errno(errno);
		goto out;
	}
	/* Whole records only: the reader holds the same lock while it reads
	 * and truncates. */
	if (flock(fd, LOCK_EX) != 0 || fstat(fd, &sb) != 0) {
		rc = bg_err_from_errno(errno);
		goto out;
	}
	/* Nobody folds it (no agent runs here): stop growing, forget use. */
	if (sb.st_size >= USAGE_MAX_BYTES) {
		rc = BG_ELIMIT;
		goto out;
	}
	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = bg_err_from_errno(errno);
			break;
		}
		off += (size_t)w;
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

struct fold_args {
	const unsigned char *buf;
	size_t n;
};

static int fold_txn(struct bg_txn *txn, void *arg)
{
	struct fold_args *a = arg;
	struct store_stats d;
	int rc;

	memset(&d, 0, sizeof(d));
	for (size_t i = 0; i < a->n; i++) {
		const unsigned char *r = a->buf + i * USAGE_REC_LEN;
		int64_t when_ns = (int64_t)get_le64(r + 8);

		if (r[0] != 'U' || (r[1] != 'H' && r[1] != 'M'))
			continue;
		if (r[1] == 'M') {
			d.local_misses += get_le32(r + 4);
			continue;
		}
		d.local_hits += get_le32(r + 4);
		/* Seconds (an older bgcopy-peerd): the first nanosecond of the
		 * second, as for content records of that age. */
		if (r[2] != USAGE_UNIT_NS &&
		    __builtin_mul_overflow(when_ns, (int64_t)1000000000, &when_ns))
			continue;
		rc = txn_content_touch(txn, r + 16, when_ns);
		if (rc != 0 && rc != BG_ENOENT && rc != BG_ECORRUPT)
			return rc;
	}
	return txn_stats_add(txn, &d, 1);
}

int store_usage_fold(struct bg_store *st, const char *home)
{
	char path[4096];
	unsigned char *buf = NULL;
	struct stat sb;
	size_t len = 0;
	int fd, rc = 0;

	if (snprintf(path, sizeof(path), "%s/%s", home, USAGE_FILE) >= (int)sizeof(path))
		return BG_ELIMIT;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 0 : bg_err_from_errno(errno);
	if (flock(fd, LOCK_EX) != 0 || fstat(fd, &sb) != 0) {
		rc = bg_err_from_errno(errno);
		goto out;
	}
	if (sb.st_size == 0)
		goto out;
	if (sb.st_size <= USAGE_MAX_BYTES) {
		len = (size_t)sb.st_size / USAGE_REC_LEN * USAGE_REC_LEN;
		if ((buf = malloc(len ? len : 1)) == NULL) {
			rc = BG_ENOMEM;
			goto out;
		}
		for (size_t off = 0; off < len;) {
			ssize_t r = pread(fd, buf + off, len - off, (off_t)off);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				len = off / USAGE_REC_LEN * USAGE_REC_LEN;
				break;
			}
			off += (size_t)r;
		}
		{
			struct fold_args a = { buf, len / USAGE_REC_LEN };

			if ((rc = store_update(st, fold_txn, &a)) != 0)
				goto out;
		}
	}
	if (ftruncate(fd, 0) != 0)
		rc = bg_err_from_errno(errno);
out:
	free(buf);
	close(fd);
	return rc;
}

/* ---- Rebuilding the indexes ---------------------------------------------------------- */

struct reindex_ctx {
	struct store_stats s;
};

static int reindex_content(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct reindex_ctx *r = ctx;
	unsigned char key[8 + BG_SHA256_LEN];
	struct store_content c;

	if (k->mv_size != BG_SHA256_LEN || store_content_decode(v, &c) != 0)
		return 0; /* verify's business */
	lru_key(key, c.last_used_ns, k->mv_data);
	r->s.entries++;
	r->s.bytes += c.size;
	return txn_raw_put(txn, DB_LRU, key, sizeof(key), NULL, 0);
}

static int reindex_key(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct reindex_ctx *r = ctx;
	unsigned char rk[2 * BG_SHA256_LEN];
	unsigned char ak[8 + BG_SHA256_LEN];
	struct store_key key;
	int rc;

	r->s.keys++;
	if (store_key_decode(k, v, &key) != 0)
		return 0;
	memcpy(rk, key.sha256, BG_SHA256_LEN);
	memcpy(rk + BG_SHA256_LEN, k->mv_data, BG_SHA256_LEN);
	put_be64(ak, (uint64_t)key.validated);
	memcpy(ak + 8, k->mv_data, BG_SHA256_LEN);
	store_key_clear(&key);
	if ((rc = txn_raw_put(txn, DB_REFS, rk, sizeof(rk), NULL, 0)) != 0)
		return rc;
	return txn_raw_put(txn, DB_AGED, ak, sizeof(ak), NULL, 0);
}

int store_reindex(struct bg_txn *txn)
{
	static const enum store_db idx[] = { DB_LRU, DB_REFS, DB_AGED };
	struct reindex_ctx r;
	struct store_stats old;
	int rc;

	if ((rc = txn_check(txn, 1)) != 0)
		return rc;
	for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++) {
		int mrc = mdb_drop(txn->mtxn, txn->dbi[idx[i]], 0);

		if (mrc != 0)
			return txn_fail(txn, mrc);
	}
	memset(&r, 0, sizeof(r));
	if ((rc = txn_walk(txn, DB_CONTENT, NULL, 0, 0, reindex_content, &r)) != 0 ||
	    (rc = txn_walk(txn, DB_KEYS, NULL, 0, 0, reindex_key, &r)) != 0)
		return rc;
	/* The event counters stay; what the records say replaces the rest. */
	rc = txn_stats_get(txn, &old);
	if (rc == 0) {
		old.entries = r.s.entries;
		old.bytes = r.s.bytes;
		old.keys = r.s.keys;
	} else if (rc == BG_ECORRUPT) {
		old = r.s;
	} else {
		return rc;
	}
	return stats_put(txn, &old);
}
