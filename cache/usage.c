/*
 * usage.c - what bgcopy-peerd reports of its use.  peerd opens the store
 * read-only, so it appends what it served (or could not) to HOME/usage.log,
 * and the agent folds the log into the store: the last use of content and
 * the hit counters.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "cache_int.h"

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

