/*
 * read.c - content read out of the store in short read transactions, into
 * memory (store_read_content) or into a file (store_write_content, copied
 * by the kernel from store.mdb where it can): no reader pins old pages for
 * long, however large the content.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cache.h"
#include "cache_int.h"

/* store_read_content() copies at most this many chunks (about 1 MiB) per
 * read transaction so that no reader pins old pages for long. */
#define STORE_READ_CHUNKS_PER_TXN 4

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
	uint64_t pos;
	int rc = txn_content_get(txn, c->sha, &rec);

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
		const void *data;
		size_t clen, take;

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


/* ---- Downloads in progress ---------------------------------------------------
 * Each read transaction reads the record and the chunks together: the
 * bound it copies to (committed, or the content's size once final) was
 * written in the same commit as the bytes it covers, so a reader never
 * sees a byte that is not in the store, nor one of another incarnation. */

struct inflight_ctx {
	const unsigned char *urlhash;
	uint64_t gen;
	uint64_t offset;
	unsigned char *buf;
	size_t len;
	size_t got;
	int done;
};

static int read_inflight_txn(struct bg_txn *txn, void *arg)
{
	struct inflight_ctx *c = arg;
	struct store_inflight rec;
	struct store_content content;
	uint64_t blob, bound, pos;
	int final;
	int rc = txn_inflight_get_hash(txn, c->urlhash, &rec);

	if (rc != 0)
		return rc;
	if (rec.gen != c->gen) {
		store_inflight_clear(&rec);
		return BG_EAGAIN;
	}
	final = rec.state == STORE_INFLIGHT_FINAL;
	blob = rec.blob;
	bound = rec.committed;
	if (final) {
		/* The bytes are the content's now (its own blob, or the one
		 * it was found identical to): gone content is gone. */
		rc = txn_content_get(txn, rec.sha256, &content);
		if (rc != 0) {
			store_inflight_clear(&rec);
			return rc;
		}
		blob = content.blob;
		bound = content.size;
	}
	store_inflight_clear(&rec);
	pos = c->offset + c->got;
	if (pos >= bound || c->got == c->len) {
		c->done = 1;
		return 0;
	}
	if (blob == 0)
		return BG_ECORRUPT; /* bytes committed without a blob */
	for (int n = 0; n < STORE_READ_CHUNKS_PER_TXN && pos < bound && c->got < c->len; n++) {
		uint64_t chunk = pos / STORE_CHUNK_BYTES;
		uint64_t within = pos % STORE_CHUNK_BYTES;
		uint64_t rest = bound - chunk * STORE_CHUNK_BYTES;
		size_t need = rest < STORE_CHUNK_BYTES ? (size_t)rest : STORE_CHUNK_BYTES;
		const void *data;
		size_t clen, take;

		rc = txn_blob_get(txn, blob, chunk, &data, &clen);
		if (rc == BG_ENOENT)
			return BG_ECORRUPT;
		if (rc != 0)
			return rc;
		/* A chunk of content is exactly its share; one in progress
		 * holds at least what the record counts (never less). */
		if (final ? clen != need : clen < need)
			return BG_ECORRUPT;
		take = need - (size_t)within;
		if (take > c->len - c->got)
			take = c->len - c->got;
		memcpy(c->buf + c->got, (const unsigned char *)data + within, take);
		c->got += take;
		pos += take;
	}
	if (c->got == c->len || pos >= bound)
		c->done = 1;
	return 0;
}

int store_read_inflight(struct bg_store *st, const unsigned char urlhash[BG_SHA256_LEN],
                        uint64_t gen, uint64_t offset, void *buf, size_t len, size_t *got)
{
	struct inflight_ctx c = { .urlhash = urlhash, .gen = gen, .offset = offset, .buf = buf,
	                          .len = len };
	int rc;

	if (got != NULL)
		*got = 0;
	if (st == NULL || urlhash == NULL || (buf == NULL && len > 0))
		return BG_EINVAL;
	do {
		rc = store_view(st, read_inflight_txn, &c);
	} while (rc == 0 && !c.done);
	if (got != NULL && rc == 0)
		*got = c.got;
	return rc;
}
