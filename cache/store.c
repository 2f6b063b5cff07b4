/*
 * store.c - the bottom of the store: the LMDB environment (opening,
 * closing, syncing, compaction), the transaction runner with map growth,
 * raw record access and walks that every other file builds on, and blobs.
 * It knows no record format above the raw bytes (store_open, in records.c,
 * brings an older format up to date through a hook).
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cache.h"
#include "cache_int.h"

#define STORE_MAX_DBS 16
/* A default map is never smaller than the file, rounded up to this. */
#define STORE_MAP_ROUND ((uint64_t)1 << 20)
/* MDB_MAP_RESIZED means another process grew the map; adopting its size
 * settles it at once, so a long run of them means something is wrong. */
#define STORE_RESIZE_TRIES 64

static const char *const store_db_names[DB_COUNT] = {
	[DB_META] = "meta",
	[DB_JOBS] = "jobs",
	[DB_FILES] = "files",
	[DB_BLOBS] = "blobs",
	[DB_CONTENT] = "content",
	[DB_KEYS] = "keys",
	[DB_LRU] = "lru",
	[DB_REFS] = "refs",
	[DB_AGED] = "aged",
	[DB_PINS] = "pins",
	[DB_PEERS] = "peers",
	[DB_PIECES] = "pieces",
	[DB_INFLIGHT] = "inflight",
};

/* The store this thread is inside (store_update/store_view), used to refuse
 * nested calls: a nested transaction could wait for a remap that waits for
 * the outer transaction, and LMDB allows one write txn per thread anyway. */
static _Thread_local const struct bg_store *store_busy;

int ci_mdb_error(int mrc)
{
	switch (mrc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return BG_ENOENT;
	case MDB_KEYEXIST:
		return BG_EEXIST;
	case MDB_MAP_FULL:
		return BG_ENOSPC;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_INCOMPATIBLE:
	case MDB_CURSOR_FULL:
	case MDB_PAGE_FULL:
	case MDB_BAD_RSLOT:
	case MDB_BAD_TXN:
	case MDB_BAD_VALSIZE:
	case MDB_BAD_DBI:
		return BG_ECORRUPT;
	case MDB_VERSION_MISMATCH:
		return BG_EVERSION;
	case MDB_DBS_FULL:
	case MDB_READERS_FULL:
	case MDB_TLS_FULL:
	case MDB_TXN_FULL:
		return BG_ELIMIT;
	case MDB_MAP_RESIZED:
		return BG_EAGAIN;
	case MDB_PANIC:
		return BG_EIO;
	default:
		/* LMDB passes system errors through as positive errno values. */
		return mrc > 0 ? bg_err_from_errno(mrc) : BG_EIO;
	}
}

/* ---- Transactions ------------------------------------------------------ */

int ci_txn_check(struct bg_txn *txn, int write)
{
	if (txn == NULL || txn->mtxn == NULL)
		return BG_EINVAL;
	if (write && txn->rdonly)
		return BG_ERDONLY;
	/* After MDB_MAP_FULL or another failure LMDB refuses every further
	 * operation of the txn; answering here keeps the original cause. */
	if (txn->map_full)
		return BG_EMAPFULL_INT;
	if (txn->err != 0)
		return txn->err;
	return 0;
}

int ci_txn_fail(struct bg_txn *txn, int mrc)
{
	int rc;

	if (mrc == MDB_MAP_FULL) {
		txn->map_full = 1;
		return BG_EMAPFULL_INT;
	}
	rc = ci_mdb_error(mrc);
	/* Absent and duplicate keys are answers, not failures; anything else
	 * leaves an LMDB write txn unable to commit. */
	if (!txn->rdonly && mrc != MDB_NOTFOUND && mrc != MDB_KEYEXIST && txn->err == 0)
		txn->err = rc;
	return rc;
}

/* Remaps the environment: to the size another process recorded (grow = 0,
 * after MDB_MAP_RESIZED) or to twice the current size (grow = 1, after
 * MDB_MAP_FULL).  LMDB requires that no transaction of this process is open,
 * which the exclusive map_lock guarantees. */
static int store_remap(struct bg_store *st, int grow)
{
	MDB_envinfo info;
	uint64_t size = 0;
	int rc = 0;
	int mrc;

	if (pthread_rwlock_wrlock(&st->map_lock) != 0)
		return BG_EIO;
	assert(atomic_load(&st->open_txns) == 0);
	if (st->broken != 0) {
		rc = st->broken;
		goto out;
	}
	if (atomic_load(&st->open_txns) != 0) {
		rc = BG_EIO;
		goto out;
	}
	if (grow) {
		mrc = mdb_env_info(st->env, &info);
		if (mrc != 0) {
			rc = ci_mdb_error(mrc);
			goto out;
		}
		if ((uint64_t)info.me_mapsize >= STORE_MAP_MAX) {
			rc = BG_ENOSPC;
			goto out;
		}
		size = (uint64_t)info.me_mapsize > STORE_MAP_MAX / 2 ? STORE_MAP_MAX
		                                                     : (uint64_t)info.me_mapsize * 2;
	}
	mrc = mdb_env_set_mapsize(st->env, (size_t)size);
	if (mrc == EINVAL) {
		/* LMDB saw an open transaction and changed nothing. */
		rc = BG_EIO;
	} else if (mrc != 0) {
		/* mmap failed after the old map was dropped: the env has no map
		 * any more and must not be used again. */
		rc = ci_mdb_error(mrc);
		st->broken = rc;
	}
out:
	pthread_rwlock_unlock(&st->map_lock);
	return rc;
}

/* Begins an LMDB txn and returns with map_lock held shared, adopting a map
 * grown by another process on the way. */
static int store_txn_begin(struct bg_store *st, unsigned mflags, MDB_txn **mtxn)
{
	int rc = 0;
	int mrc;

	for (int tries = 0;; tries++) {
		if (pthread_rwlock_rdlock(&st->map_lock) != 0)
			return BG_EIO;
		if (st->broken != 0) {
			rc = st->broken;
			pthread_rwlock_unlock(&st->map_lock);
			break;
		}
		mrc = mdb_txn_begin(st->env, NULL, mflags, mtxn);
		if (mrc == 0) {
			atomic_fetch_add(&st->open_txns, 1);
			rc = 0;
			break;
		}
		pthread_rwlock_unlock(&st->map_lock);
		if (mrc != MDB_MAP_RESIZED) {
			rc = ci_mdb_error(mrc);
			break;
		}
		if (tries >= STORE_RESIZE_TRIES) {
			rc = BG_EAGAIN;
			break;
		}
		rc = store_remap(st, 0);
		if (rc != 0)
			break;
	}
	return rc;
}

/* Commits (commit != 0) or aborts the txn and drops map_lock.  Returns the
 * raw LMDB code of the commit so that the caller can see MDB_MAP_FULL. */
static int store_txn_end(struct bg_store *st, struct bg_txn *txn, int commit)
{
	int mrc = 0;

	if (commit)
		mrc = mdb_txn_commit(txn->mtxn);
	else
		mdb_txn_abort(txn->mtxn);
	txn->mtxn = NULL;
	atomic_fetch_sub(&st->open_txns, 1);
	pthread_rwlock_unlock(&st->map_lock);
	return mrc;
}

/* LMDB reports a write that stopped short as EIO, which is what a commit
 * meets when the filesystem fills: tell the two apart by looking at the
 * space left, so that users see "disk full", not an I/O error. */
static int store_disk_full(struct bg_store *st)
{
	mdb_filehandle_t fd;
	struct statvfs sv;

	if (mdb_env_get_fd(st->env, &fd) != 0 || fstatvfs(fd, &sv) != 0)
		return 0;
	return (uint64_t)sv.f_bavail * sv.f_frsize < STORE_SPACE_MIN;
}

/* Runs fn in a transaction until it neither fills the map nor meets a map
 * resized elsewhere.  Read transactions are aborted unless commit_read is
 * set, which only store_open() needs: committing is what makes database
 * handles opened in a read txn usable by later ones. */
static int store_run(struct bg_store *st, int write, int commit_read,
                     int (*fn)(struct bg_txn *txn, void *arg), void *arg)
{
	struct bg_txn txn;
	int rc;
	int mrc;

	for (;;) {
		memset(&txn, 0, sizeof(txn));
		txn.st = st;
		txn.rdonly = !write;
		memcpy(txn.dbi, st->dbi, sizeof(txn.dbi));
		rc = store_txn_begin(st, write ? 0 : MDB_RDONLY, &txn.mtxn);
		if (rc != 0)
			goto out;
		rc = fn(&txn, arg);
		if (txn.map_full) {
			/* Whatever fn made of the failure, the txn is dead: start
			 * again with a bigger map. */
			store_txn_end(st, &txn, 0);
			rc = store_remap(st, 1);
			if (rc != 0)
				goto out;
			continue;
		}
		if (rc == 0 && write && txn.err != 0)
			rc = txn.err;
		if (rc != 0 || (!write && !commit_read)) {
			store_txn_end(st, &txn, 0);
			goto out;
		}
		mrc = store_txn_end(st, &txn, 1);
		if (mrc == MDB_MAP_FULL) {
			rc = store_remap(st, 1);
			if (rc != 0)
				goto out;
			continue;
		}
		rc = ci_mdb_error(mrc);
		if (rc == BG_EIO && store_disk_full(st))
			rc = BG_ENOSPC;
		goto out;
	}
out:
	/* The private code is meaningless to callers; it can only get here if
	 * fn made it up, and the map-full case is what it describes. */
	if (rc == BG_EMAPFULL_INT)
		rc = BG_ENOSPC;
	return rc;
}

/* Runs fn in a transaction of its own, refusing a nested one (see
 * store_busy); writers of this process take their turn on write_lock. */
static int store_enter(struct bg_store *st, int write,
                       int (*fn)(struct bg_txn *txn, void *arg), void *arg)
{
	const struct bg_store *prev = store_busy;
	int rc;

	if (st == NULL || fn == NULL)
		return BG_EINVAL;
	if (write && (st->flags & STORE_RDONLY))
		return BG_ERDONLY;
	if (prev == st)
		return BG_EINVAL;
	store_busy = st;
	if (!write) {
		rc = store_run(st, 0, 0, fn, arg);
	} else if (pthread_mutex_lock(&st->write_lock) != 0) {
		rc = BG_EIO;
	} else {
		rc = store_run(st, 1, 0, fn, arg);
		pthread_mutex_unlock(&st->write_lock);
	}
	store_busy = prev;
	return rc;
}

int store_update(struct bg_store *st, int (*fn)(struct bg_txn *txn, void *arg), void *arg)
{
	return store_enter(st, 1, fn, arg);
}

int store_view(struct bg_store *st, int (*fn)(struct bg_txn *txn, void *arg), void *arg)
{
	return store_enter(st, 0, fn, arg);
}

/* ---- Generic record access --------------------------------------------- */

/* 0, or what an LMDB failure inside txn means (see ci_txn_fail). */
static int mdb_result(struct bg_txn *txn, int mrc)
{
	return mrc == 0 ? 0 : ci_txn_fail(txn, mrc);
}

int ci_raw_get(struct bg_txn *txn, enum store_db db, const void *key, size_t klen,
                MDB_val *val)
{
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
	int rc = ci_txn_check(txn, 0);

	return rc != 0 ? rc : mdb_result(txn, mdb_get(txn->mtxn, txn->dbi[db], &k, val));
}

int ci_raw_put(struct bg_txn *txn, enum store_db db, const void *key, size_t klen,
                const void *data, size_t dlen)
{
	static const unsigned char empty;
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
	/* An empty value still gets a valid pointer: LMDB copies from it. */
	MDB_val v = { .mv_size = dlen, .mv_data = (void *)(data != NULL ? data : &empty) };
	int rc = ci_txn_check(txn, 1);

	return rc != 0 ? rc : mdb_result(txn, mdb_put(txn->mtxn, txn->dbi[db], &k, &v, 0));
}

int ci_raw_del(struct bg_txn *txn, enum store_db db, const void *key, size_t klen)
{
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
	int rc = ci_txn_check(txn, 1);

	return rc != 0 ? rc : mdb_result(txn, mdb_del(txn->mtxn, txn->dbi[db], &k, NULL));
}

int ci_raw_del_quiet(struct bg_txn *txn, enum store_db db, const void *key, size_t klen)
{
	int rc = ci_raw_del(txn, db, key, klen);

	return rc == BG_ENOENT ? 0 : rc;
}

/* Opens a cursor on db after the checks every cursor user makes. */
static int cursor_open(struct bg_txn *txn, enum store_db db, int write, MDB_cursor **cur)
{
	int rc = ci_txn_check(txn, write);
	int mrc;

	*cur = NULL;
	if (rc != 0)
		return rc;
	mrc = mdb_cursor_open(txn->mtxn, txn->dbi[db], cur);
	return mrc == 0 ? 0 : ci_txn_fail(txn, mrc);
}

int ci_seek(struct bg_txn *txn, enum store_db db, const void *key, size_t klen, MDB_val *k,
            MDB_val *v)
{
	MDB_cursor *cur;
	int rc = cursor_open(txn, db, 0, &cur);
	int mrc;

	if (rc != 0)
		return rc;
	k->mv_data = (void *)key;
	k->mv_size = klen;
	mrc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
	mdb_cursor_close(cur);
	return mrc == 0 ? 0 : ci_txn_fail(txn, mrc);
}

static int key_in_prefix(const MDB_val *k, const void *start, size_t prefix_len)
{
	return prefix_len == 0 ||
	       (k->mv_size >= prefix_len && memcmp(k->mv_data, start, prefix_len) == 0);
}

/*
 * Visits the records from start (the first record when start_len is 0)
 * while their first prefix_len bytes equal start's.  The cursor is placed
 * again from the last key after every visit, so that visit may add or
 * delete records (the callbacks of txn_*_each may) without confusing the
 * walk.  visit must decode v before it changes the database: v points into
 * pages a write may move.
 */
int ci_walk(struct bg_txn *txn, enum store_db db, const void *start, size_t start_len,
             size_t prefix_len,
             int (*visit)(struct bg_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx),
             void *ctx)
{
	unsigned char last[STORE_WALK_KEY_MAX];
	size_t last_len = 0;
	MDB_cursor *cur = NULL;
	MDB_val k;
	MDB_val v;
	int rc;
	int mrc;

	if ((rc = cursor_open(txn, db, 0, &cur)) != 0)
		return rc;
	if (start_len > sizeof(last) || prefix_len > start_len) {
		rc = BG_EINVAL;
		goto out;
	}
	for (;;) {
		if (last_len > 0) {
			k.mv_data = last;
			k.mv_size = last_len;
			mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
			if (mrc == 0 && k.mv_size == last_len && memcmp(k.mv_data, last, last_len) == 0)
				mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		} else if (start_len > 0) {
			k.mv_data = (void *)start;
			k.mv_size = start_len;
			mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		} else {
			mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		}
		if (mrc == MDB_NOTFOUND) {
			rc = 0;
			goto out;
		}
		if (mrc != 0) {
			rc = ci_txn_fail(txn, mrc);
			goto out;
		}
		if (!key_in_prefix(&k, start, prefix_len)) {
			rc = 0;
			goto out;
		}
		/* Every key this module writes is short; a long (or empty) one
		 * is not ours. */
		if (k.mv_size == 0 || k.mv_size > sizeof(last)) {
			rc = BG_ECORRUPT;
			goto out;
		}
		memcpy(last, k.mv_data, k.mv_size);
		last_len = k.mv_size;
		rc = visit(txn, &k, &v, ctx);
		if (rc != 0)
			goto out;
	}
out:
	mdb_cursor_close(cur);
	return rc;
}

/* Deletes the records from start on while they share start's first
 * prefix_len bytes, counting them and their value bytes (either pointer may
 * be NULL).  Seeking from start after each delete finds the next victim
 * without relying on where LMDB leaves a cursor after mdb_cursor_del. */
int ci_delete_range(struct bg_txn *txn, enum store_db db, const void *start,
                     size_t start_len, size_t prefix_len, uint64_t *count, uint64_t *bytes)
{
	uint64_t n = 0, b = 0;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	int rc, mrc;

	if ((rc = cursor_open(txn, db, 1, &cur)) != 0)
		goto out;
	if (prefix_len > start_len) {
		rc = BG_EINVAL;
		goto out;
	}
	for (;;) {
		k.mv_data = (void *)start;
		k.mv_size = start_len;
		mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (mrc == MDB_NOTFOUND)
			break;
		if (mrc != 0) {
			rc = ci_txn_fail(txn, mrc);
			goto out;
		}
		if (!key_in_prefix(&k, start, prefix_len))
			break;
		b += v.mv_size;
		mrc = mdb_cursor_del(cur, 0);
		if (mrc != 0) {
			rc = ci_txn_fail(txn, mrc);
			goto out;
		}
		n++;
	}
out:
	mdb_cursor_close(cur);
	if (count != NULL)
		*count = n;
	if (bytes != NULL)
		*bytes = b;
	return rc;
}

/* ---- Blobs -------------------------------------------------------------- */

static void blob_key(unsigned char key[STORE_BLOB_KEY_LEN], uint64_t blob, uint64_t index)
{
	put_be64(key, blob);
	put_be64(key + 8, index);
}

int txn_blob_new(struct bg_txn *txn, uint64_t *out)
{
	static const char name[] = "next_blob";
	unsigned char buf[8];
	uint64_t next = 1;
	MDB_val v;
	int rc;

	if (out == NULL)
		return BG_EINVAL;
	*out = 0;
	rc = ci_txn_check(txn, 1);
	if (rc != 0)
		return rc;
	rc = ci_raw_get(txn, DB_META, name, sizeof(name) - 1, &v);
	if (rc == 0) {
		if (v.mv_size != sizeof(buf))
			return BG_ECORRUPT;
		next = get_le64(v.mv_data);
		if (next == 0)
			return BG_ECORRUPT;
	} else if (rc != BG_ENOENT) {
		return rc;
	}
	if (next == UINT64_MAX)
		return BG_ELIMIT;
	put_le64(buf, next + 1);
	rc = ci_raw_put(txn, DB_META, name, sizeof(name) - 1, buf, sizeof(buf));
	if (rc != 0)
		return rc;
	*out = next;
	return 0;
}

int txn_blob_put(struct bg_txn *txn, uint64_t blob, uint64_t index, const void *data, size_t len)
{
	unsigned char key[STORE_BLOB_KEY_LEN];

	if (blob == 0 || len > STORE_CHUNK_BYTES || (data == NULL && len > 0))
		return BG_EINVAL;
	blob_key(key, blob, index);
	return ci_raw_put(txn, DB_BLOBS, key, sizeof(key), data, len);
}

int txn_blob_get(struct bg_txn *txn, uint64_t blob, uint64_t index, const void **data,
                 size_t *len)
{
	unsigned char key[STORE_BLOB_KEY_LEN];
	MDB_val v;
	int rc;

	if (data == NULL || len == NULL)
		return BG_EINVAL;
	*data = NULL;
	*len = 0;
	if (blob == 0)
		return BG_EINVAL;
	blob_key(key, blob, index);
	rc = ci_raw_get(txn, DB_BLOBS, key, sizeof(key), &v);
	if (rc != 0)
		return rc;
	if (v.mv_size > STORE_CHUNK_BYTES)
		return BG_ECORRUPT;
	*data = v.mv_data;
	*len = v.mv_size;
	return 0;
}

int ci_blob_drop(struct bg_txn *txn, uint64_t blob, uint64_t first, uint64_t *chunks,
              uint64_t *bytes)
{
	unsigned char start[STORE_BLOB_KEY_LEN];
	int rc;

	blob_key(start, blob, first);
	rc = ci_delete_range(txn, DB_BLOBS, start, sizeof(start), 8, chunks, bytes);
	/* A digest never outlives the bytes it describes: a restarted blob
	 * rewrites its chunks, and a stale digest would describe new bytes.
	 * (A read-only opener of a version 3 store has no "pieces", but it
	 * deletes nothing either.) */
	if (rc == 0 && txn->dbi[DB_PIECES] != 0)
		rc = ci_delete_range(txn, DB_PIECES, start, sizeof(start), 8, NULL, NULL);
	return rc;
}

/* The first blob id >= from that has a record in db (keyed as chunks). */
static int blob_next_in(struct bg_txn *txn, enum store_db db, uint64_t from, uint64_t *blob)
{
	unsigned char start[STORE_BLOB_KEY_LEN];
	MDB_val k, v;
	int rc;

	blob_key(start, from, 0);
	if ((rc = ci_seek(txn, db, start, sizeof(start), &k, &v)) != 0)
		return rc;
	if (k.mv_size != STORE_BLOB_KEY_LEN)
		return BG_ECORRUPT;
	*blob = get_be64(k.mv_data);
	return 0;
}

int ci_blob_next(struct bg_txn *txn, uint64_t from, uint64_t *blob)
{
	return blob_next_in(txn, DB_BLOBS, from, blob);
}

int ci_pieces_next(struct bg_txn *txn, uint64_t from, uint64_t *blob)
{
	if (txn->dbi[DB_PIECES] == 0)
		return BG_ENOENT;
	return blob_next_in(txn, DB_PIECES, from, blob);
}

int txn_blob_truncate(struct bg_txn *txn, uint64_t blob, uint64_t first)
{
	if (blob == 0)
		return BG_EINVAL;
	return ci_blob_drop(txn, blob, first, NULL, NULL);
}

/* ---- Opening and closing ----------------------------------------------- */

/* How the records above this file bring an older store up to the format. */
struct store_upgrade {
	int (*fn)(struct bg_txn *txn);
};

/* Opens the named databases (creating them in a write txn) and checks the
 * format version.  "meta" comes first so that a store of a newer format is
 * refused before anything else is opened or created.  A writer upgrades an
 * older store with the hook, in the same transaction. */
static int store_init_txn(struct bg_txn *txn, void *arg)
{
	const struct store_upgrade *up = arg;
	struct bg_store *st = txn->st;
	unsigned dflags = txn->rdonly ? 0 : MDB_CREATE;
	unsigned char buf[8];
	uint64_t version = STORE_FORMAT_VERSION;
	int fresh = 0;
	MDB_val v;
	int rc;
	int mrc;

	for (int i = 0; i < DB_COUNT; i++) {
		mrc = mdb_dbi_open(txn->mtxn, store_db_names[i], dflags, &st->dbi[i]);
		/* A reader of a version 1 store finds no indexes: it needs none
		 * (only the agent, which creates them, evicts); nor the peers'
		 * results of a store no writer opened since they came, nor the
		 * pieces and downloads in progress of a version 3 store (their
		 * readers answer "absent"). */
		if (mrc == MDB_NOTFOUND && txn->rdonly && i >= DB_LRU) {
			st->dbi[i] = 0;
			continue;
		}
		if (mrc != 0)
			return ci_txn_fail(txn, mrc);
		txn->dbi[i] = st->dbi[i];
		if (i != DB_META)
			continue;
		rc = ci_raw_get(txn, DB_META, "version", strlen("version"), &v);
		if (rc == BG_ENOENT && !txn->rdonly) {
			put_le64(buf, STORE_FORMAT_VERSION);
			rc = ci_raw_put(txn, DB_META, "version", strlen("version"), buf, sizeof(buf));
			if (rc != 0)
				return rc;
			fresh = 1;
			continue;
		}
		/* The databases and the version are created in one txn, so a
		 * reader never sees one without the other. */
		if (rc == BG_ENOENT)
			return BG_ECORRUPT;
		if (rc != 0)
			return rc;
		if (v.mv_size != sizeof(buf))
			return BG_ECORRUPT;
		version = get_le64(v.mv_data);
		if (version == 0)
			return BG_ECORRUPT;
		if (version > STORE_FORMAT_VERSION)
			return BG_EVERSION;
	}
	if (!txn->rdonly && !fresh && version < STORE_FORMAT_VERSION) {
		/* 3 -> 4 only adds databases, created empty above: no digest is
		 * computed here (a large store would hold the write lock for
		 * minutes); content lists are filled lazily (pieces.c). */
		if (version < STORE_FORMAT_REINDEXED && (rc = up->fn(txn)) != 0)
			return rc;
		put_le64(buf, STORE_FORMAT_VERSION);
		rc = ci_raw_put(txn, DB_META, "version", strlen("version"), buf, sizeof(buf));
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int store_path(const char *home, char **out)
{
	size_t len = strlen(home) + 1 + strlen(STORE_FILE_NAME) + 1;
	char *path = malloc(len);

	if (path == NULL)
		return BG_ENOMEM;
	snprintf(path, len, "%s/%s", home, STORE_FILE_NAME);
	*out = path;
	return 0;
}

static int use_lock_path(const char *home, char *out, size_t len)
{
	return snprintf(out, len, "%s/%s", home, STORE_USE_LOCK_NAME) < (int)len ? 0 : BG_ELIMIT;
}

static int use_lock_open(struct bg_store *st, const char *home, unsigned flags)
{
	char lp[PATH_MAX];
	int rc;

	if ((rc = use_lock_path(home, lp, sizeof(lp))) != 0)
		return rc;
	st->use_fd = open(lp, (flags & STORE_RDONLY ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC |
	                          O_NOFOLLOW, 0600);
	if (st->use_fd < 0) {
		/* A reader of a store made before the lock existed, or one
		 * that may not create files in the home: it goes without (and
		 * a compaction cannot see it). */
		if ((flags & STORE_RDONLY) && (errno == ENOENT || errno == EACCES))
			return 0;
		return bg_err_from_errno(errno);
	}
	while (flock(st->use_fd, LOCK_SH) != 0) {
		if (errno != EINTR)
			return bg_err_from_errno(errno);
	}
	return 0;
}

int ci_env_open(const char *home, unsigned flags, const struct store_options *opts,
                int (*upgrade)(struct bg_txn *txn), struct bg_store **out)
{
	struct store_upgrade up = { upgrade };
	unsigned mflags = MDB_NOSUBDIR | MDB_NOTLS | MDB_NOSYNC;
	pthread_rwlockattr_t rwattr;
	struct bg_store *st = NULL;
	char *path = NULL;
	uint64_t map;
	struct stat sb;
	int have_file;
	mdb_filehandle_t fd;
	int dead;
	int rc;
	int mrc;

	if (out != NULL)
		*out = NULL;
	if (home == NULL || out == NULL || upgrade == NULL || (flags & ~STORE_RDONLY) != 0)
		return BG_EINVAL;
	rc = store_path(home, &path);
	if (rc != 0)
		goto out;
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		rc = BG_ENOMEM;
		goto out;
	}
	st->flags = flags;
	st->use_fd = -1;
	atomic_init(&st->open_txns, 0);
	if (pthread_mutex_init(&st->write_lock, NULL) != 0) {
		rc = BG_ENOMEM;
		goto out;
	}
	st->have_write_lock = 1;
	/* Writer preference keeps a stream of readers from starving a
	 * thread that waits to remap. */
	if (pthread_rwlockattr_init(&rwattr) != 0) {
		rc = BG_ENOMEM;
		goto out;
	}
	pthread_rwlockattr_setkind_np(&rwattr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	mrc = pthread_rwlock_init(&st->map_lock, &rwattr);
	pthread_rwlockattr_destroy(&rwattr);
	if (mrc != 0) {
		rc = BG_ENOMEM;
		goto out;
	}
	st->have_map_lock = 1;

	if (stat(home, &sb) != 0) {
		rc = bg_err_from_errno(errno);
		goto out;
	}
	if ((sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		rc = BG_EUNSAFE;
		goto out;
	}
	have_file = stat(path, &sb) == 0;
	if (!have_file && errno != ENOENT) {
		rc = bg_err_from_errno(errno);
		goto out;
	}
	if (have_file && (sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		rc = BG_EUNSAFE;
		goto out;
	}
	/* Every process with the store open holds the use lock shared;
	 * store_compact() takes it exclusive to swap the file.  Taking it
	 * before LMDB opens the file means an open waits for a compaction to
	 * finish and then opens the new file. */
	if ((rc = use_lock_open(st, home, flags)) != 0)
		goto out;
	have_file = stat(path, &sb) == 0;
	if (have_file && (sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		rc = BG_EUNSAFE;
		goto out;
	}
	if (flags & STORE_RDONLY) {
		/* Checking first keeps LMDB from leaving a lock file behind,
		 * owned by the reader, in a home the agent has not set up.  An
		 * empty file is one a writer has created but not initialised
		 * yet; LMDB would try to write its header through a read-only
		 * descriptor and fail with EBADF. */
		if (!have_file || sb.st_size == 0) {
			rc = BG_ENOENT;
			goto out;
		}
		mflags |= MDB_RDONLY;
	}
	if (opts != NULL && opts->initial_map_bytes != 0) {
		map = opts->initial_map_bytes;
	} else {
		map = STORE_MAP_DEFAULT;
		if (have_file && (uint64_t)sb.st_size > map)
			map = ((uint64_t)sb.st_size + STORE_MAP_ROUND - 1) / STORE_MAP_ROUND *
			      STORE_MAP_ROUND;
	}

	mrc = mdb_env_create(&st->env);
	if (mrc == 0)
		mrc = mdb_env_set_maxdbs(st->env, STORE_MAX_DBS);
	if (mrc == 0)
		mrc = mdb_env_set_maxreaders(st->env, STORE_MAX_READERS);
	if (mrc == 0)
		mrc = mdb_env_set_mapsize(st->env, (size_t)map);
	if (mrc == 0)
		mrc = mdb_env_open(st->env, path, mflags, 0600);
	if (mrc != 0) {
		rc = ci_mdb_error(mrc);
		goto out;
	}
	/* LMDB 0.9.24 opens the data file without O_CLOEXEC (its lock file
	 * has it): a program the agent starts must not inherit the store. */
	if (mdb_env_get_fd(st->env, &fd) == 0 && fd >= 0) {
		int fdflags = fcntl(fd, F_GETFD);

		if (fdflags >= 0)
			(void)fcntl(fd, F_SETFD, fdflags | FD_CLOEXEC);
	}
	/* Reader slots of processes that died inside a read txn would pin
	 * old pages forever and make the file grow. */
	mrc = mdb_reader_check(st->env, &dead);
	if (mrc != 0) {
		rc = ci_mdb_error(mrc);
		goto out;
	}
	rc = store_run(st, !(flags & STORE_RDONLY), 1, store_init_txn, &up);
	if (rc != 0)
		goto out;
	st->path = path;
	path = NULL; /* transferred */
	*out = st;
	st = NULL;
out:
	store_close(st);
	free(path);
	return rc;
}

void store_close(struct bg_store *st)
{
	if (st == NULL)
		return;
	/* mdb_env_close() is also how a failed mdb_env_open() is undone. */
	if (st->env != NULL)
		mdb_env_close(st->env);
	if (st->have_map_lock)
		pthread_rwlock_destroy(&st->map_lock);
	if (st->have_write_lock)
		pthread_mutex_destroy(&st->write_lock);
	if (st->use_fd >= 0)
		close(st->use_fd); /* releases the use lock */
	free(st->path);
	free(st);
}

uint64_t store_file_bytes(struct bg_store *st)
{
	mdb_filehandle_t fd;
	struct stat sb;

	if (st == NULL || st->env == NULL || mdb_env_get_fd(st->env, &fd) != 0 || fstat(fd, &sb) != 0)
		return 0;
	return (uint64_t)sb.st_size;
}

uint64_t store_map_bytes(struct bg_store *st)
{
	MDB_envinfo info;
	uint64_t size = 0;

	if (st == NULL)
		return 0;
	/* The shared lock keeps a concurrent remap from changing the value
	 * under mdb_env_info(). */
	if (pthread_rwlock_rdlock(&st->map_lock) != 0)
		return 0;
	if (st->broken == 0 && mdb_env_info(st->env, &info) == 0)
		size = info.me_mapsize;
	pthread_rwlock_unlock(&st->map_lock);
	return size;
}

int store_sync(struct bg_store *st)
{
	int rc;

	if (st == NULL)
		return BG_EINVAL;
	if (st->flags & STORE_RDONLY)
		return BG_ERDONLY;
	if (pthread_rwlock_rdlock(&st->map_lock) != 0)
		return BG_EIO;
	rc = st->broken;
	if (rc == 0)
		rc = ci_mdb_error(mdb_env_sync(st->env, 1));
	pthread_rwlock_unlock(&st->map_lock);
	return rc;
}

/* ---- Compaction ---------------------------------------------------------- */

/* The first other process that has path open, or 0. */
static int lock_holder(const char *path)
{
	DIR *proc = opendir("/proc");
	struct dirent *de;
	int found = 0;

	if (proc == NULL)
		return 0;
	while (found == 0 && (de = readdir(proc)) != NULL) {
		char fdpath[64], link[PATH_MAX];
		struct dirent *fe;
		DIR *fds;
		int pid = atoi(de->d_name);

		if (pid <= 0 || pid == (int)getpid())
			continue;
		snprintf(fdpath, sizeof(fdpath), "/proc/%d/fd", pid);
		if ((fds = opendir(fdpath)) == NULL)
			continue;
		while ((fe = readdir(fds)) != NULL) {
			char fp[96];
			ssize_t n;

			snprintf(fp, sizeof(fp), "%s/%s", fdpath, fe->d_name);
			n = readlink(fp, link, sizeof(link) - 1);
			if (n <= 0)
				continue;
			link[n] = '\0';
			if (strcmp(link, path) == 0) {
				found = pid;
				break;
			}
		}
		closedir(fds);
	}
	closedir(proc);
	return found;
}

/* Fills the compacted copy: a consistent copy from a read transaction,
 * free pages left out; *after receives its size. */
struct compact_fill {
	struct bg_store *st;
	uint64_t *after;
};

static int compact_fill(int fd, void *arg)
{
	struct compact_fill *c = arg;
	struct stat sb;
	int mrc;

	if ((mrc = mdb_env_copyfd2(c->st->env, fd, MDB_CP_COMPACT)) != 0)
		return ci_mdb_error(mrc);
	if (fstat(fd, &sb) != 0)
		return bg_err_from_errno(errno);
	*c->after = (uint64_t)sb.st_size;
	return 0;
}

int store_compact(struct bg_store *st, uint64_t *before, uint64_t *after, int *holder)
{
	char tmp[PATH_MAX], lp[PATH_MAX], dir[PATH_MAX], *slash;
	struct compact_fill fill = { st, after };
	mdb_filehandle_t envfd;
	struct stat sb;
	int rc;

	*holder = 0;
	if (st->flags & STORE_RDONLY)
		return BG_ERDONLY;
	if (st->use_fd < 0 || st->broken != 0)
		return BG_EINVAL;
	if (snprintf(dir, sizeof(dir), "%s", st->path) >= (int)sizeof(dir) ||
	    (slash = strrchr(dir, '/')) == NULL)
		return BG_ELIMIT;
	*slash = '\0';
	if ((rc = use_lock_path(dir, lp, sizeof(lp))) != 0)
		return rc;
	if (flock(st->use_fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK)
			return bg_err_from_errno(errno);
		{
			char real[PATH_MAX];

			*holder = lock_holder(realpath(lp, real) != NULL ? real : lp);
		}
		return BG_EBUSY;
	}
	if (mdb_env_get_fd(st->env, &envfd) != 0 || fstat(envfd, &sb) != 0) {
		rc = BG_EIO;
		goto out;
	}
	*before = (uint64_t)sb.st_size;
	if (snprintf(tmp, sizeof(tmp), "%s.compact", st->path) >= (int)sizeof(tmp)) {
		rc = BG_ELIMIT;
		goto out;
	}
	/* A fixed name: the exclusive lock makes this the only compaction,
	 * and one a crash left behind is replaced. */
	if ((rc = bg_file_replace(st->path, tmp, 0600, compact_fill, &fill)) != 0)
		goto out;
	/* This handle still maps the old file: it may only be closed now.
	 * The exclusive lock keeps everybody else out until it is. */
	st->broken = BG_EAGAIN;
out:
	if (rc != 0)
		(void)flock(st->use_fd, LOCK_SH);
	return rc;
}
