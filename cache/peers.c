/*
 * peers.c - what this node's downloads learnt of each peer: one JSON
 * record per "ADDR:PORT" in the "peers" database (source, node id, when it
 * was last seen and used, the last result and counts by result), kept for
 * `bgcopy peers`.  Only the agent writes it; peerd never reads it.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "cache.h"
#include "cache_int.h"

_Static_assert(STORE_PEER_KEY_MAX <= STORE_WALK_KEY_MAX, "a walk remembers a peer key");

/* The results a lookup records (engine), and the count each one adds to. */
static const struct {
	const char *name;
	int count; /* 0 hits, 1 misses, 2 failures, 3 rejected */
	bool answered;
} results[] = {
	{"hit", 0, true},      {"miss", 1, true},     {"stale", 1, true},
	{"error", 2, false},   {"failed", 2, false},  {"rejected", 3, true},
};

static int
peer_key_check(const char *peer, size_t *len)
{
	if (peer == NULL || (*len = strlen(peer)) == 0 || *len > STORE_PEER_KEY_MAX)
		return BG_EINVAL;
	return 0;
}

static void
copy_str(char *dst, size_t len, const char *src)
{
	size_t n = src != NULL ? strnlen(src, len - 1) : 0;

	if (n > 0)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static void
peer_decode(const json_t *o, const char *peer, size_t plen, struct store_peer *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->peer, peer, plen);
	out->peer[plen] = '\0';
	copy_str(out->source, sizeof(out->source), jstr(o, "source"));
	copy_str(out->node, sizeof(out->node), jstr(o, "node"));
	copy_str(out->last_result, sizeof(out->last_result), jstr(o, "last_result"));
	out->last_seen = jint(o, "last_seen", 0);
	out->last_used = jint(o, "last_used", 0);
	out->hits = (uint64_t)jint(o, "hits", 0);
	out->misses = (uint64_t)jint(o, "misses", 0);
	out->failures = (uint64_t)jint(o, "failures", 0);
	out->rejected = (uint64_t)jint(o, "rejected", 0);
}

/* Whether the database exists: a reader of a store no writer opened since
 * it came finds none (store.c). */
static bool
have_db(const struct bg_txn *txn)
{
	return txn->dbi[DB_PEERS] != 0;
}

int
txn_peer_get(struct bg_txn *txn, const char *peer, struct store_peer *out)
{
	MDB_val v;
	json_t *o = NULL;
	size_t len;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = peer_key_check(peer, &len)) != 0)
		return rc;
	if (!have_db(txn))
		return BG_ENOENT;
	if ((rc = ci_raw_get(txn, DB_PEERS, peer, len, &v)) != 0 || (rc = ci_json_decode(&v, &o)) != 0)
		return rc;
	peer_decode(o, peer, len, out);
	json_decref(o);
	return 0;
}

/* The record of peer as stored (a new one when absent), with source and
 * node replaced when given. */
static int
peer_load(struct bg_txn *txn, const char *peer, size_t len, const char *source, const char *node,
          json_t **out)
{
	MDB_val v;
	int rc;

	*out = NULL;
	if (!have_db(txn))
		return BG_ERDONLY;
	rc = ci_raw_get(txn, DB_PEERS, peer, len, &v);
	if (rc == 0)
		rc = ci_json_decode(&v, out);
	/* A damaged record starts over: it is a note, not data. */
	if (rc == BG_ENOENT || rc == BG_ECORRUPT)
		rc = (*out = json_object()) != NULL ? 0 : BG_ENOMEM;
	if (rc != 0)
		return rc;
	if ((source != NULL && *source != '\0' && (rc = jset_str(*out, "source", source)) != 0) ||
	    (node != NULL && *node != '\0' && (rc = jset_str(*out, "node", node)) != 0)) {
		json_decref(*out);
		*out = NULL;
	}
	return rc;
}

/* ---- Pruning -------------------------------------------------------------------
 * The database would otherwise only grow (every address a DNS name or
 * DNS-SD ever showed).  After a note or a sighting: at most once a day per
 * process (a walk of at most STORE_PEERS_MAX small records), the records
 * neither seen nor used for STORE_PEER_MAX_AGE go, damaged ones too; and
 * whenever there are more than STORE_PEERS_MAX (an O(1) count), the oldest
 * go until there are not.  The record just written is never a victim. */

static _Atomic int64_t pruned_at = INT64_MIN; /* when (the writes' clock) this process last walked */

struct prune_ctx {
	int64_t cutoff;        /* older than this goes (INT64_MIN: none) */
	const char *keep;      /* the record just written */
	size_t keep_len;
	unsigned char oldest[STORE_PEER_KEY_MAX]; /* the oldest record kept */
	size_t oldest_len;
	int64_t oldest_at;
};

static int64_t
peer_last(const json_t *o)
{
	int64_t seen = jint(o, "last_seen", 0), used = jint(o, "last_used", 0);

	return seen > used ? seen : used;
}

static int
prune_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct prune_ctx *c = ctx;
	unsigned char key[STORE_WALK_KEY_MAX];
	size_t klen = k->mv_size;
	json_t *o;
	int64_t last = INT64_MIN;

	if (klen == c->keep_len && memcmp(k->mv_data, c->keep, klen) == 0)
		return 0;
	if (klen > sizeof(key))
		return 0; /* not one of ours (ci_walk stops at such a key anyway) */
	memcpy(key, k->mv_data, klen);
	if (ci_json_decode(v, &o) == 0) {
		last = peer_last(o);
		json_decref(o);
	}
	/* A damaged record (last INT64_MIN) is a note, not data: it goes. */
	if (last == INT64_MIN || last < c->cutoff)
		return ci_raw_del(txn, DB_PEERS, key, klen);
	if (klen <= sizeof(c->oldest) && (c->oldest_len == 0 || last < c->oldest_at)) {
		memcpy(c->oldest, key, klen);
		c->oldest_len = klen;
		c->oldest_at = last;
	}
	return 0;
}

static size_t
peers_count(struct bg_txn *txn)
{
	MDB_stat ms;

	return mdb_stat(txn->mtxn, txn->dbi[DB_PEERS], &ms) == 0 ? ms.ms_entries : 0;
}

static int
peers_prune(struct bg_txn *txn, const char *peer, size_t len, int64_t when)
{
	struct prune_ctx c = {.keep = peer, .keep_len = len, .cutoff = INT64_MIN};
	int64_t last = atomic_load(&pruned_at);
	bool daily = last == INT64_MIN || when - last >= 86400 || when < last;
	int rc;

	if (!daily && peers_count(txn) <= STORE_PEERS_MAX)
		return 0;
	if (daily) {
		atomic_store(&pruned_at, when);
		if (when > INT64_MIN + STORE_PEER_MAX_AGE)
			c.cutoff = when - STORE_PEER_MAX_AGE;
	}
	for (;;) {
		c.oldest_len = 0;
		rc = ci_walk(txn, DB_PEERS, NULL, 0, 0, prune_visit, &c);
		/* A key not ours stops the walk: what was pruned so far stands. */
		if (rc != 0 && rc != BG_ECORRUPT)
			return rc;
		if (peers_count(txn) <= STORE_PEERS_MAX || c.oldest_len == 0)
			return 0;
		if ((rc = ci_raw_del(txn, DB_PEERS, c.oldest, c.oldest_len)) != 0)
			return rc;
		if (peers_count(txn) <= STORE_PEERS_MAX)
			return 0;
		c.cutoff = INT64_MIN; /* more than one over: walk again for the next oldest */
	}
}

static int
bump(json_t *o, const char *field)
{
	return jset_int(o, field, jint(o, field, 0) + 1);
}

/* Ends an update of o (rc: how it went so far): writes it, drops it, then
 * prunes the db around the record just written. */
static int
peer_store(struct bg_txn *txn, const char *peer, size_t len, json_t *o, int rc, int64_t when)
{
	if (rc == 0)
		rc = ci_json_put(txn, DB_PEERS, peer, len, o);
	json_decref(o);
	if (rc == 0)
		rc = peers_prune(txn, peer, len, when);
	return rc;
}

int
txn_peer_note(struct bg_txn *txn, const char *peer, const char *source, const char *node,
              const char *result, int64_t when)
{
	static const char *const counts[] = {"hits", "misses", "failures", "rejected"};
	size_t len, i;
	json_t *o;
	int rc;

	if ((rc = peer_key_check(peer, &len)) != 0 || result == NULL)
		return BG_EINVAL;
	for (i = 0; i < sizeof(results) / sizeof(results[0]); i++)
		if (strcmp(results[i].name, result) == 0)
			break;
	if (i == sizeof(results) / sizeof(results[0]))
		return BG_EINVAL;
	if ((rc = ci_txn_check(txn, 1)) != 0 || (rc = peer_load(txn, peer, len, source, node, &o)) != 0)
		return rc;
	if ((rc = jset_str(o, "last_result", result)) == 0 && (rc = jset_int(o, "last_used", when)) == 0 &&
	    (rc = bump(o, counts[results[i].count])) == 0 && results[i].answered)
		rc = jset_int(o, "last_seen", when);
	return peer_store(txn, peer, len, o, rc, when);
}

int
txn_peer_seen(struct bg_txn *txn, const char *peer, const char *source, const char *node,
              int64_t when)
{
	size_t len;
	json_t *o;
	int rc;

	if ((rc = peer_key_check(peer, &len)) != 0)
		return rc;
	if ((rc = ci_txn_check(txn, 1)) != 0 || (rc = peer_load(txn, peer, len, source, node, &o)) != 0)
		return rc;
	if (jint(o, "last_seen", 0) < when)
		rc = jset_int(o, "last_seen", when);
	return peer_store(txn, peer, len, o, rc, when);
}

struct peer_each_ctx {
	int (*fn)(const struct store_peer *p, void *arg);
	void *arg;
};

static int
peer_each_visit(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx)
{
	struct peer_each_ctx *c = ctx;
	struct store_peer p;
	json_t *o;
	int rc;

	(void)txn;
	/* A record that cannot be read is passed over: a note, not data. */
	if (k->mv_size > STORE_PEER_KEY_MAX || memchr(k->mv_data, '\0', k->mv_size) != NULL ||
	    ci_json_decode(v, &o) != 0)
		return 0;
	peer_decode(o, k->mv_data, k->mv_size, &p);
	json_decref(o);
	rc = c->fn(&p, c->arg);
	return rc;
}

int
txn_peer_each(struct bg_txn *txn, int (*fn)(const struct store_peer *p, void *arg), void *arg)
{
	struct peer_each_ctx c = {fn, arg};

	if (fn == NULL)
		return BG_EINVAL;
	if (!have_db(txn))
		return ci_txn_check(txn, 0);
	return ci_walk(txn, DB_PEERS, NULL, 0, 0, peer_each_visit, &c);
}
