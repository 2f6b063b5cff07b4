/*
 * stats.c - the counters of the store: one "stats" record in meta, fifteen
 * u64 LE (what the store holds, and events: evictions, hits, misses...).
 * The totals are kept by index.c with every record change; the events are
 * added by whoever sees them.
 */
#include <string.h>

#include "cache.h"
#include "cache_int.h"

#define STATS_KEY "stats"
#define STATS_FIELDS 15
#define STATS_FIELDS_V2 12 /* before the store's own hit counters */

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
	rc = ci_raw_get(txn, DB_META, STATS_KEY, strlen(STATS_KEY), &v);
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
	return ci_raw_put(txn, DB_META, STATS_KEY, strlen(STATS_KEY), buf, sizeof(buf));
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

int ci_stats_set_totals(struct bg_txn *txn, const struct store_stats *totals)
{
	struct store_stats s;
	int rc = txn_stats_get(txn, &s);

	/* The event counters stay; the totals given replace the rest (a
	 * damaged record starts again from them). */
	if (rc == BG_ECORRUPT)
		memset(&s, 0, sizeof(s)), rc = 0;
	if (rc != 0)
		return rc;
	s.entries = totals->entries;
	s.bytes = totals->bytes;
	s.keys = totals->keys;
	return stats_put(txn, &s);
}
