/*
 * index.c - the indexes of the store and the totals among its counters,
 * kept by records.c in the transaction that changes the record they
 * describe, and rebuilt by it from the records (ci_records_reindex):
 *
 *   lru   be64(last_used_ns) | content sha256 -> ""  content, least recently used first
 *   refs  content sha256 | sha256(url)        -> ""  the keys that name a content
 *   aged  be64(validated) | sha256(url)       -> ""  keys, least recently validated first
 *
 * (pins, job id | content sha256, is no index of a record: policy.c writes
 * it.)  Only records.c calls this file.  The walkers of policy.c read the
 * indexes and delete an entry whose record is gone or changed (stale), so
 * that a record written without its index (a damaged one, say) costs a
 * lookup, never a wrong decision.
 */
#include <string.h>

#include "cache.h"
#include "cache_int.h"

static const enum store_db index_dbs[] = { DB_LRU, DB_REFS, DB_AGED };

int ci_index_clear(struct bg_txn *txn)
{
	int rc;

	if ((rc = ci_txn_check(txn, 1)) != 0)
		return rc;
	for (size_t i = 0; i < sizeof(index_dbs) / sizeof(index_dbs[0]); i++) {
		int mrc = mdb_drop(txn->mtxn, txn->dbi[index_dbs[i]], 0);

		if (mrc != 0)
			return ci_txn_fail(txn, mrc);
	}
	return 0;
}

int ci_index_content_add(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                         const struct store_content *c)
{
	unsigned char k[CI_LRU_KEY_LEN];

	ci_lru_key(k, c->last_used_ns, sha);
	return ci_raw_put(txn, DB_LRU, k, sizeof(k), NULL, 0);
}

int ci_index_key_add(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                     const struct store_key *k)
{
	unsigned char r[CI_REFS_KEY_LEN];
	unsigned char a[CI_AGED_KEY_LEN];
	int rc;

	ci_refs_key(r, k->sha256, urlhash);
	ci_aged_key(a, k->validated, urlhash);
	if ((rc = ci_raw_put(txn, DB_REFS, r, sizeof(r), NULL, 0)) != 0)
		return rc;
	return ci_raw_put(txn, DB_AGED, a, sizeof(a), NULL, 0);
}

/* Adds d to the totals (sign 1) or takes it away (-1). */
static int totals_add(struct bg_txn *txn, uint64_t entries, uint64_t bytes, uint64_t keys,
                      int sign)
{
	struct store_stats d;

	memset(&d, 0, sizeof(d));
	d.entries = entries;
	d.bytes = bytes;
	d.keys = keys;
	return txn_stats_add(txn, &d, sign);
}

int ci_index_content_put(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                         const struct store_content *old, const struct store_content *c)
{
	int rc;

	if (old != NULL && old->last_used_ns == c->last_used_ns && old->size == c->size)
		return 0;
	if (old != NULL) {
		unsigned char k[CI_LRU_KEY_LEN];

		ci_lru_key(k, old->last_used_ns, sha);
		if ((rc = ci_raw_del_quiet(txn, DB_LRU, k, sizeof(k))) != 0)
			return rc;
	}
	if ((rc = ci_index_content_add(txn, sha, c)) != 0)
		return rc;
	if (old == NULL)
		return totals_add(txn, 1, c->size, 0, 1);
	if (old->size == c->size)
		return 0;
	/* Not something the agent does; kept exact anyway. */
	if ((rc = totals_add(txn, 0, old->size, 0, -1)) != 0)
		return rc;
	return totals_add(txn, 0, c->size, 0, 1);
}

int ci_index_content_del(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                         const struct store_content *old)
{
	unsigned char k[CI_LRU_KEY_LEN];
	int rc;

	ci_lru_key(k, old->last_used_ns, sha);
	if ((rc = ci_raw_del_quiet(txn, DB_LRU, k, sizeof(k))) != 0)
		return rc;
	return totals_add(txn, 1, old->size, 0, -1);
}

int ci_index_key_put(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                     const struct store_key *old, const struct store_key *k)
{
	int rc;

	if (old != NULL && (rc = ci_index_key_del(txn, urlhash, old, 0)) != 0)
		return rc;
	if ((rc = ci_index_key_add(txn, urlhash, k)) != 0)
		return rc;
	return old != NULL ? 0 : totals_add(txn, 0, 0, 1, 1);
}

int ci_index_key_del(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                     const struct store_key *old, int count)
{
	unsigned char r[CI_REFS_KEY_LEN];
	unsigned char a[CI_AGED_KEY_LEN];
	int rc;

	ci_refs_key(r, old->sha256, urlhash);
	ci_aged_key(a, old->validated, urlhash);
	if ((rc = ci_raw_del_quiet(txn, DB_REFS, r, sizeof(r))) != 0 ||
	    (rc = ci_raw_del_quiet(txn, DB_AGED, a, sizeof(a))) != 0)
		return rc;
	return count ? totals_add(txn, 0, 0, 1, -1) : 0;
}
