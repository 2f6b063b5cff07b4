/*
 * cache_int.h - internals shared by the files of the cache module.  Nothing
 * outside cache/ may include this header.
 */
#ifndef BG_CACHE_INT_H
#define BG_CACHE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include <lmdb.h>

#include "cache.h"

/* A txn_* call hit MDB_MAP_FULL.  The code never leaves the module:
 * store_update() sees the flag in struct bg_txn, grows the map and runs fn
 * again, whatever fn did with the code. */
#define BG_EMAPFULL_INT (-1000)

/* 2: the indexes of index.c and the counters; 3: content is dated in
 * nanoseconds (content record version 2); 4: the databases "pieces" and
 * "inflight".  An older store is upgraded when the agent opens it (below
 * version 3 its indexes are rebuilt; 3 -> 4 only creates the two
 * databases); a build that knows only version 2 refuses a version 3 store
 * rather than take its content records for damaged ones, and one that
 * knows only 3 refuses 4: it would rewrite chunks without dropping their
 * digests and leave downloads in progress that nobody finishes. */
#define STORE_FORMAT_VERSION 4u
/* The last version whose upgrade must rebuild the indexes. */
#define STORE_FORMAT_REINDEXED 3u
#define STORE_MAP_DEFAULT ((uint64_t)1 << 30) /* 1 GiB */
#define STORE_MAP_MAX ((uint64_t)1 << 40)     /* 1 TiB: growth stops here */
#define STORE_FILE_NAME "store.mdb"
#define STORE_USE_LOCK_NAME "store.mdb-open" /* flock: shared by users, exclusive to compact */
/* bytes: with less free space than this left, a failed write is "disk full" */
#define STORE_SPACE_MIN ((uint64_t)4 * STORE_CHUNK_BYTES)

/* Content record: version byte, then blob, size, created, last_used as
 * 8-byte little-endian integers.  Version 2 dates the last use in
 * nanoseconds, version 1 (still read) in seconds. */
#define STORE_CONTENT_VERSION 2u
#define STORE_CONTENT_VERSION_SECONDS 1u
#define STORE_CONTENT_REC_LEN (1 + 4 * 8)

/* Key lengths of the named databases. */
#define STORE_FILE_KEY_LEN (STORE_JOB_ID_LEN + 4)
#define STORE_BLOB_KEY_LEN 16
#define STORE_WALK_KEY_MAX 80 /* longest key any walk has to remember */

enum store_db {
	DB_META,
	DB_JOBS,
	DB_FILES,
	DB_BLOBS,
	DB_CONTENT,
	DB_KEYS,
	DB_LRU,                      /* indexes: see index.c */
	DB_REFS,
	DB_AGED,
	DB_PINS,
	DB_PEERS,                    /* per-peer results: peers.c */
	DB_PIECES,                   /* SHA-256 of each chunk: pieces.c */
	DB_INFLIGHT,                 /* downloads in progress: inflight.c */
	DB_COUNT
};

struct bg_store {
	MDB_env *env;
	MDB_dbi dbi[DB_COUNT];
	unsigned flags;              /* STORE_RDONLY */
	/* Set when a remap failed and LMDB was left without a map: every
	 * later call fails with this code instead of touching the env. */
	int broken;
	/* One thread of this process inside store_update() at a time. */
	pthread_mutex_t write_lock;
	/* Every transaction holds it shared; mdb_env_set_mapsize() needs it
	 * exclusive because LMDB forbids remapping while any transaction of
	 * this process is open. */
	pthread_rwlock_t map_lock;
	atomic_int open_txns;        /* checks the rule above */
	int have_write_lock;
	int have_map_lock;
	int use_fd;                  /* the use lock (STORE_USE_LOCK_NAME), or -1 */
	char *path;                  /* of store.mdb */
};

struct bg_txn {
	struct bg_store *st;
	MDB_txn *mtxn;
	MDB_dbi dbi[DB_COUNT];
	int rdonly;
	int map_full;                /* MDB_MAP_FULL seen: retry after growth */
	int err;                     /* first LMDB failure; the txn is unusable */
};

/*
 * Module-private functions shared between files carry the prefix ci_
 * ("cache internal").  Files are listed bottom up (README.md draws the
 * order): each calls only files listed before it.
 */

/* store.c: the environment, transactions, raw records, walks, blobs. */
/* The environment of store_open(); upgrade (run in the opening write
 * transaction of a store older than STORE_FORMAT_VERSION) brings its
 * records up to the format. */
int ci_env_open(const char *home, unsigned flags, const struct store_options *opts,
                int (*upgrade)(struct bg_txn *txn), struct bg_store **out);
int ci_mdb_error(int mrc);
int ci_txn_check(struct bg_txn *txn, int write);
int ci_txn_fail(struct bg_txn *txn, int mrc);
int ci_raw_get(struct bg_txn *txn, enum store_db db, const void *key, size_t klen,
               MDB_val *val);
int ci_raw_put(struct bg_txn *txn, enum store_db db, const void *key, size_t klen,
               const void *data, size_t dlen);
int ci_raw_del(struct bg_txn *txn, enum store_db db, const void *key, size_t klen);
/* ci_raw_del(), but 0 when the record is absent. */
int ci_raw_del_quiet(struct bg_txn *txn, enum store_db db, const void *key, size_t klen);
/* The first record at or after key: *k and *v borrowed until the txn
 * writes; BG_ENOENT past the last record. */
int ci_seek(struct bg_txn *txn, enum store_db db, const void *key, size_t klen, MDB_val *k,
            MDB_val *v);
int ci_walk(struct bg_txn *txn, enum store_db db, const void *start, size_t start_len,
            size_t prefix_len,
            int (*visit)(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx),
            void *ctx);
int ci_delete_range(struct bg_txn *txn, enum store_db db, const void *start,
                    size_t start_len, size_t prefix_len, uint64_t *count, uint64_t *bytes);
/* Deletes chunks first.. of blob, counting them and their bytes, and
 * their digests (pieces.c) with them. */
int ci_blob_drop(struct bg_txn *txn, uint64_t blob, uint64_t first, uint64_t *chunks,
                 uint64_t *bytes);
/* The first blob id >= from that has a chunk; BG_ENOENT when none. */
int ci_blob_next(struct bg_txn *txn, uint64_t from, uint64_t *blob);
/* The same for a digest (pieces.c); BG_ENOENT also without "pieces". */
int ci_pieces_next(struct bg_txn *txn, uint64_t from, uint64_t *blob);

/* stats.c: the counters.  Replaces entries, bytes and keys with totals'
 * (the event counters stay). */
int ci_stats_set_totals(struct bg_txn *txn, const struct store_stats *totals);

/* index.c: index upkeep, for records.c only.  *_put with old NULL adds a
 * record (and counts it), *_del removes one (count: also from the totals);
 * *_add only files the index entries (rebuilding); clear empties them. */
int ci_index_content_put(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                         const struct store_content *old, const struct store_content *c);
int ci_index_content_del(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                         const struct store_content *old);
int ci_index_key_put(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                     const struct store_key *old, const struct store_key *k);
int ci_index_key_del(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                     const struct store_key *old, int count);
int ci_index_content_add(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                         const struct store_content *c);
int ci_index_key_add(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                     const struct store_key *k);
int ci_index_clear(struct bg_txn *txn);

/* records.c */
int ci_json_decode(const MDB_val *v, json_t **out);
int ci_json_put(struct bg_txn *txn, enum store_db db, const void *key, size_t klen,
                const json_t *rec);
int ci_content_decode(const MDB_val *v, struct store_content *out);
int ci_key_decode(const MDB_val *k, const MDB_val *v, struct store_key *out);
/* Deletes content record sha and its index entries, not its blob: *blob
 * receives the blob it owned (0 when the record was damaged). */
int ci_content_del_record(struct bg_txn *txn, const unsigned char sha[BG_SHA256_LEN],
                          uint64_t *blob);
/* Key deletions that keep the indexes: by SHA-256(url) whatever the record
 * holds; only if it names sha (else BG_ENOENT); only if it was validated at
 * that time (else BG_ENOENT), giving the content it named. */
int ci_key_del_raw(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN]);
int ci_key_del_naming(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                      const unsigned char sha[BG_SHA256_LEN]);
int ci_key_del_validated(struct bg_txn *txn, const unsigned char urlhash[BG_SHA256_LEN],
                         int64_t validated, unsigned char sha[BG_SHA256_LEN]);
/* Rebuilds the indexes and totals from the records (format upgrade,
 * `cache verify`). */
int ci_records_reindex(struct bg_txn *txn);

/* fetchpol.c: the "fetch" object of key and inflight records.  to_json
 * gives NULL for an unknown policy (nothing recorded), BG_EINVAL for a bad
 * one; from_json reads an absent or null one as unknown, anything but the
 * exact object as BG_ECORRUPT. */
bool ci_fetch_valid(const struct store_fetch_policy *p);
int ci_fetch_to_json(const struct store_fetch_policy *p, json_t **out);
int ci_fetch_from_json(const json_t *j, struct store_fetch_policy *out);

/* pieces.c: counts the digests blob has for chunks [0, chunks). */
int ci_pieces_count(struct bg_txn *txn, uint64_t blob, uint64_t chunks, uint64_t *n);

/* inflight.c: a raw record decoded (for store_gc); BG_ECORRUPT. */
int ci_inflight_decode(const MDB_val *k, const MDB_val *v, struct store_inflight *out);
/* Deletes final records older than STORE_INFLIGHT_TOMBSTONE at now. */
int ci_inflight_prune_final(struct bg_txn *txn, int64_t now);

/* digest.c: bg_sha256() with its failure reported (BG_ENOMEM). */
int ci_sha256(const void *p, size_t len, unsigned char d[BG_SHA256_LEN]);

/* ---- Byte layouts (inline helpers, not linked functions) --------------- */

static inline void put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static inline uint64_t get_be64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static inline void put_be32(unsigned char *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static inline uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static inline uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static inline uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Index keys (index.c): lru be64(last_used_ns) | sha; refs sha | urlhash;
 * aged be64(validated) | urlhash. */
#define CI_LRU_KEY_LEN (8 + BG_SHA256_LEN)
#define CI_REFS_KEY_LEN (2 * BG_SHA256_LEN)
#define CI_AGED_KEY_LEN (8 + BG_SHA256_LEN)

static inline void ci_lru_key(unsigned char k[CI_LRU_KEY_LEN], int64_t last_used_ns,
                              const unsigned char sha[BG_SHA256_LEN])
{
	put_be64(k, (uint64_t)last_used_ns);
	memcpy(k + 8, sha, BG_SHA256_LEN);
}

static inline void ci_refs_key(unsigned char k[CI_REFS_KEY_LEN],
                               const unsigned char sha[BG_SHA256_LEN],
                               const unsigned char urlhash[BG_SHA256_LEN])
{
	memcpy(k, sha, BG_SHA256_LEN);
	memcpy(k + BG_SHA256_LEN, urlhash, BG_SHA256_LEN);
}

static inline void ci_aged_key(unsigned char k[CI_AGED_KEY_LEN], int64_t validated,
                               const unsigned char urlhash[BG_SHA256_LEN])
{
	put_be64(k, (uint64_t)validated);
	memcpy(k + 8, urlhash, BG_SHA256_LEN);
}

#endif /* BG_CACHE_INT_H */
