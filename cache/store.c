/*
 * store.c - the LMDB environment: opening, the transaction runner with map
 * growth, the generic record helpers the other files build on, and reads of
 * content in short transactions.
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
#include <sys/sysmacros.h>
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
/* store_read_content() copies at most this many chunks (about 1 MiB) per
 * read transaction so that no reader pins old pages for long. */
#define STORE_READ_CHUNKS_PER_TXN 4

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
};

/* The store this thread is inside (store_update/store_view), used to refuse
 * nested calls: a nested transaction could wait for a remap that waits for
 * the outer transaction, and LMDB allows one write txn per thread anyway. */
static _Thread_local const struct bg_store *store_busy;

int store_mdb_error(int mrc)
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

int txn_check(struct bg_txn *txn, int write)
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

int txn_fail(struct bg_txn *txn, int mrc)
{
	int rc;

	if (mrc == MDB_MAP_FULL) {
		txn->map_full = 1;
		return BG_EMAPFULL_INT;
	}
	rc = store_mdb_error(mrc);
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
			rc = store_mdb_error(mrc);
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
		rc = store_mdb_error(mrc);
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
			rc = store_mdb_error(mrc);
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
		rc = store_mdb_error(mrc);
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

int store_update(struct bg_store *st, int (*fn)(struct bg_txn *txn, void *arg), void *arg)
{
	const struct bg_store *prev = store_busy;
	int rc;

	if (st == NULL || fn == NULL)
		return BG_EINVAL;
	if (st->flags & STORE_RDONLY)
		return BG_ERDONLY;
	if (prev == st)
		return BG_EINVAL;
	store_busy = st;
	if (pthread_mutex_lock(&st->write_lock) != 0) {
		rc = BG_EIO;
		goto out;
	}
	rc = store_run(st, 1, 0, fn, arg);
	pthread_mutex_unlock(&st->write_lock);
out:
	store_busy = prev;
	return rc;
}

int store_view(struct bg_store *st, int (*fn)(struct bg_txn *txn, void *arg), void *arg)
{
	const struct bg_store *prev = store_busy;
	int rc;

	if (st == NULL || fn == NULL)
		return BG_EINVAL;
	if (prev == st)
		return BG_EINVAL;
	store_busy = st;
	rc = store_run(st, 0, 0, fn, arg);
	store_busy = prev;
	return rc;
}

/* ---- Generic record access --------------------------------------------- */

int txn_raw_get(struct bg_txn *txn, enum store_db db, const void *key, size_t klen,
                MDB_val *val)
{
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
	int rc = txn_check(txn, 0);
	int mrc;

	if (rc != 0)
		return rc;
	mrc = mdb_get(txn->mtxn, txn->dbi[db], &k, val);
	return mrc == 0 ? 0 : txn_fail(txn, mrc);
}

int txn_raw_put(struct bg_txn *txn, enum store_db db, const void *key, size_t klen,
                const void *data, size_t dlen)
{
	static const unsigned char empty;
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
	/* An empty value still gets a valid pointer: LMDB copies from it. */
	MDB_val v = { .mv_size = dlen, .mv_data = (void *)(data != NULL ? data : &empty) };
	int rc = txn_check(txn, 1);
	int mrc;

	if (rc != 0)
		return rc;
	mrc = mdb_put(txn->mtxn, txn->dbi[db], &k, &v, 0);
	return mrc == 0 ? 0 : txn_fail(txn, mrc);
}

int txn_raw_del(struct bg_txn *txn, enum store_db db, const void *key, size_t klen)
{
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
	int rc = txn_check(txn, 1);
	int mrc;

	if (rc != 0)
		return rc;
	mrc = mdb_del(txn->mtxn, txn->dbi[db], &k, NULL);
	return mrc == 0 ? 0 : txn_fail(txn, mrc);
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
int txn_walk(struct bg_txn *txn, enum store_db db, const void *start, size_t start_len,
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

	rc = txn_check(txn, 0);
	if (rc != 0)
		return rc;
	if (start_len > sizeof(last) || prefix_len > start_len)
		return BG_EINVAL;
	mrc = mdb_cursor_open(txn->mtxn, txn->dbi[db], &cur);
	if (mrc != 0) {
		rc = txn_fail(txn, mrc);
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
			rc = txn_fail(txn, mrc);
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
int txn_delete_range(struct bg_txn *txn, enum store_db db, const void *start,
                     size_t start_len, size_t prefix_len, uint64_t *count, uint64_t *bytes)
{
	MDB_cursor *cur = NULL;
	uint64_t n = 0;
	uint64_t b = 0;
	MDB_val k;
	MDB_val v;
	int rc;
	int mrc;

	rc = txn_check(txn, 1);
	if (rc != 0)
		goto out;
	if (prefix_len > start_len) {
		rc = BG_EINVAL;
		goto out;
	}
	mrc = mdb_cursor_open(txn->mtxn, txn->dbi[db], &cur);
	if (mrc != 0) {
		rc = txn_fail(txn, mrc);
		goto out;
	}
	for (;;) {
		k.mv_data = (void *)start;
		k.mv_size = start_len;
		mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (mrc == MDB_NOTFOUND)
			break;
		if (mrc != 0) {
			rc = txn_fail(txn, mrc);
			goto out;
		}
		if (!key_in_prefix(&k, start, prefix_len))
			break;
		b += v.mv_size;
		mrc = mdb_cursor_del(cur, 0);
		if (mrc != 0) {
			rc = txn_fail(txn, mrc);
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

/* ---- Opening and closing ----------------------------------------------- */

/* Opens the named databases (creating them in a write txn) and checks the
 * format version.  "meta" comes first so that a store of a newer format is
 * refused before anything else is opened or created. */
static int store_init_txn(struct bg_txn *txn, void *arg)
{
	struct bg_store *st = txn->st;
	unsigned dflags = txn->rdonly ? 0 : MDB_CREATE;
	unsigned char buf[8];
	uint64_t version = STORE_FORMAT_VERSION;
	int fresh = 0;
	MDB_val v;
	int rc;
	int mrc;

	(void)arg;
	for (int i = 0; i < DB_COUNT; i++) {
		mrc = mdb_dbi_open(txn->mtxn, store_db_names[i], dflags, &st->dbi[i]);
		/* A reader of a version 1 store finds no indexes: it needs none
		 * (only the agent, which creates them, evicts). */
		if (mrc == MDB_NOTFOUND && txn->rdonly && i >= DB_LRU) {
			st->dbi[i] = 0;
			continue;
		}
		if (mrc != 0)
			return txn_fail(txn, mrc);
		txn->dbi[i] = st->dbi[i];
		if (i != DB_META)
			continue;
		rc = txn_raw_get(txn, DB_META, "version", strlen("version"), &v);
		if (rc == BG_ENOENT && !txn->rdonly) {
			put_le64(buf, STORE_FORMAT_VERSION);
			rc = txn_raw_put(txn, DB_META, "version", strlen("version"), buf, sizeof(buf));
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
		if ((rc = store_reindex(txn)) != 0)
			return rc;
		put_le64(buf, STORE_FORMAT_VERSION);
		rc = txn_raw_put(txn, DB_META, "version", strlen("version"), buf, sizeof(buf));
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

int store_open(const char *home, unsigned flags, const struct store_options *opts,
               struct bg_store **out)
{
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
	if (home == NULL || out == NULL || (flags & ~STORE_RDONLY) != 0)
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
		rc = store_mdb_error(mrc);
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
		rc = store_mdb_error(mrc);
		goto out;
	}
	rc = store_run(st, !(flags & STORE_RDONLY), 1, store_init_txn, NULL);
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
		rc = store_mdb_error(mdb_env_sync(st->env, 1));
	pthread_rwlock_unlock(&st->map_lock);
	return rc;
}

/* ---- Reading content --------------------------------------------------- */

/* Where the store's map shows store.mdb: [start, end) shows the file from
 * byte pgoff.  Found in /proc/self/maps, since LMDB tells its map address
 * only for MDB_FIXEDMAP. */
struct map_view {
	uintptr_t start, end;
	uint64_t pgoff;
	int known;
};

struct read_ctx {
	const unsigned char *sha;
	uint64_t offset;
	unsigned char *buf;        /* where the bytes go, or NULL: */
	int fd;                    /* to this file, at out_offset + (bytes so far) */
	uint64_t out_offset;
	struct map_view view;      /* for fd: where the map shows store.mdb */
	size_t len;
	size_t got;
	uint64_t size;     /* content size seen by the first txn */
	int have_size;
	int done;
};

/* Finds the mapping of the file st->path (by device and inode) that holds
 * p.  0 when found. */
static int map_view_find(struct bg_store *st, const void *p, struct map_view *v)
{
	struct stat sb;
	FILE *f;
	char line[512];
	int found = -1;

	v->known = 0;
	if (stat(st->path, &sb) != 0 || (f = fopen("/proc/self/maps", "re")) == NULL)
		return -1;
	while (found != 0 && fgets(line, sizeof(line), f) != NULL) {
		unsigned long long a, b, off, ino;
		unsigned maj, min;

		if (sscanf(line, "%llx-%llx %*4s %llx %x:%x %llu", &a, &b, &off, &maj, &min, &ino) != 6)
			continue;
		if ((uintptr_t)p < a || (uintptr_t)p >= b || ino != (unsigned long long)sb.st_ino ||
		    makedev(maj, min) != sb.st_dev)
			continue;
		v->start = (uintptr_t)a;
		v->end = (uintptr_t)b;
		v->pgoff = off;
		v->known = 1;
		found = 0;
	}
	fclose(f);
	return found;
}

/* Writes n bytes that the store's map shows at data to fd at off, while the
 * read transaction that found them keeps their pages.  Without
 * MDB_WRITEMAP the map is a read-only view of store.mdb, so the bytes are
 * those of the file at the same place: the kernel copies them
 * (copy_file_range), with no copy through this process and no fault on the
 * map.  pwrite from the map where it cannot. */
static int put_mapped(struct bg_store *st, struct map_view *v, const unsigned char *data,
                      size_t n, int fd, uint64_t off)
{
	int envfd;

	if ((!v->known || (uintptr_t)data < v->start || (uintptr_t)data + n > v->end) &&
	    map_view_find(st, data, v) != 0)
		v->known = 0;
	if (v->known && (uintptr_t)data + n <= v->end && mdb_env_get_fd(st->env, &envfd) == 0) {
		loff_t in = (loff_t)((uintptr_t)data - v->start + v->pgoff);
		loff_t out = (loff_t)off;

		while (n > 0) {
			ssize_t w = copy_file_range(envfd, &in, fd, &out, n, 0);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break; /* EXDEV, ENOSYS, EINVAL...: the rest by pwrite */
			n -= (size_t)w;
			data += w;
			off += (uint64_t)w;
		}
	}
	while (n > 0) {
		ssize_t w = pwrite(fd, data, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? bg_err_from_errno(errno) : BG_EIO;
		n -= (size_t)w;
		data += w;
		off += (uint64_t)w;
	}
	return 0;
}

static int read_content_txn(struct bg_txn *txn, void *arg)
{
	struct read_ctx *c = arg;
	struct store_content rec;
	const void *data;
	size_t clen;
	uint64_t pos;
	int rc;

	rc = txn_content_get(txn, c->sha, &rec);
	if (rc != 0)
		return rc;
	/* Equal digests mean equal bytes, so a record replaced between two
	 * txns must still describe the same size. */
	if (c->have_size && rec.size != c->size)
		return BG_ECORRUPT;
	c->size = rec.size;
	c->have_size = 1;
	if (c->offset >= rec.size) {
		c->done = 1;
		return 0;
	}
	pos = c->offset + c->got;
	for (int n = 0; n < STORE_READ_CHUNKS_PER_TXN; n++) {
		uint64_t chunk = pos / STORE_CHUNK_BYTES;
		uint64_t within = pos % STORE_CHUNK_BYTES;
		uint64_t left = rec.size - chunk * STORE_CHUNK_BYTES;
		size_t expect = left < STORE_CHUNK_BYTES ? (size_t)left : STORE_CHUNK_BYTES;
		size_t take;

		if (c->got == c->len || pos >= rec.size) {
			c->done = 1;
			break;
		}
		rc = txn_blob_get(txn, rec.blob, chunk, &data, &clen);
		if (rc == BG_ENOENT)
			return BG_ECORRUPT;
		if (rc != 0)
			return rc;
		/* Every chunk but the last is full and the last holds exactly
		 * the rest: anything else means the blob does not match. */
		if (clen != expect)
			return BG_ECORRUPT;
		take = expect - (size_t)within;
		if (take > c->len - c->got)
			take = c->len - c->got;
		if (c->buf != NULL)
			memcpy(c->buf + c->got, (const unsigned char *)data + within, take);
		else if ((rc = put_mapped(txn->st, &c->view, (const unsigned char *)data + within, take,
		                          c->fd, c->out_offset + c->got)) != 0)
			return rc;
		c->got += take;
		pos += take;
	}
	if (c->got == c->len || pos >= rec.size)
		c->done = 1;
	return 0;
}

/* Runs read_content_txn in short read transactions until c is done; *n
 * receives the bytes handed over (0 on error). */
static int read_content_walk(struct bg_store *st, struct read_ctx *c, size_t *n)
{
	int rc;

	do {
		rc = store_view(st, read_content_txn, c);
	} while (rc == 0 && !c->done);
	if (n != NULL)
		*n = rc == 0 ? c->got : 0;
	return rc;
}

int store_read_content(struct bg_store *st, const unsigned char sha[BG_SHA256_LEN],
                       uint64_t offset, void *buf, size_t len, size_t *got)
{
	struct read_ctx c = { .sha = sha, .offset = offset, .buf = buf, .fd = -1, .len = len };

	if (got != NULL)
		*got = 0;
	if (st == NULL || sha == NULL || (buf == NULL && len > 0))
		return BG_EINVAL;
	return read_content_walk(st, &c, got);
}

int store_write_content(struct bg_store *st, const unsigned char sha[BG_SHA256_LEN],
                        uint64_t offset, size_t len, int fd, size_t *put)
{
	struct read_ctx c = { .sha = sha, .offset = offset, .fd = fd, .out_offset = offset,
	                      .len = len };

	if (put != NULL)
		*put = 0;
	if (st == NULL || sha == NULL || fd < 0)
		return BG_EINVAL;
	return read_content_walk(st, &c, put);
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

int store_compact(struct bg_store *st, uint64_t *before, uint64_t *after, int *holder)
{
	char tmp[PATH_MAX], lp[PATH_MAX], dir[PATH_MAX], *slash;
	mdb_filehandle_t envfd;
	struct stat sb;
	int fd = -1, rc, mrc;

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
	(void)unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		rc = bg_err_from_errno(errno);
		goto out;
	}
	/* A consistent copy from a read transaction, free pages left out. */
	if ((mrc = mdb_env_copyfd2(st->env, fd, MDB_CP_COMPACT)) != 0) {
		rc = store_mdb_error(mrc);
		goto out;
	}
	if (fsync(fd) != 0 || fstat(fd, &sb) != 0) {
		rc = bg_err_from_errno(errno);
		goto out;
	}
	*after = (uint64_t)sb.st_size;
	close(fd);
	fd = -1;
	if (rename(tmp, st->path) != 0) {
		rc = bg_err_from_errno(errno);
		goto out;
	}
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0)
		(void)fsync(fd);
	/* This handle still maps the old file: it may only be closed now.
	 * The exclusive lock keeps everybody else out until it is. */
	st->broken = BG_EAGAIN;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (rc != 0) {
		(void)unlink(tmp);
		(void)flock(st->use_fd, LOCK_SH);
	}
	return rc;
}
