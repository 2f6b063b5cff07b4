/*
 * inflight_writer.c - plays the agent's part of a download in progress for
 * peerd's tests (/v1/partial, /v1/pieces): commits a file chunk by chunk
 * into a home's store as the agent's commit_fn does, with the record of the
 * download in progress and the digest of each full chunk in the same
 * transaction, while it holds the writer's lock.
 *
 *   inflight_writer HOME URL SIZE [options]
 *
 *   --gen G            the incarnation (default 1)
 *   --pace MS          milliseconds between two chunks (default 0)
 *   --chunks-per-commit N  chunks per transaction (default 1)
 *   --pause-after K    after K chunks, wait for SIGUSR1 before going on
 *   --exit-after K     after K chunks, exit without finalising (the lock
 *                      drops with the process, as after a crash)
 *   --final            once every chunk is in, finalise: content, key and
 *                      the record's final state (sha256) in one transaction;
 *                      without it the writer waits for SIGTERM at the end
 *   --total-unknown    the record's total is -1 (an origin without a length)
 *   --status FILE      after each commit, FILE holds the bytes committed
 *                      (written whole with rename: a reader never sees half)
 *   --seed S           the pattern's seed (default 7)
 *
 * The bytes are a pattern anyone can recompute: byte i of the file is
 * (i * 31 + S) & 0xff.  The record says state "origin", etag "\"w1\"",
 * Last-Modified "Tue, 01 Dec 2026 10:00:00 GMT", Date "Sat, 05 Dec 2026
 * 10:00:00 GMT" and the fetch policy "ignore=0, crl=?0, ca=system,
 * redirect=silent, h2h=?0".  SIGTERM at any point ends it (not finalised).
 * Prints "ready" on stdout once the lock is held and the first record
 * (committed 0) is written.  Exit status: 0 done, 2 usage, 3 store error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"

struct writer {
	const char *url;
	uint64_t size, gen, done; /* done: bytes committed */
	int64_t total;
	uint64_t blob;
	unsigned per_commit;
	unsigned seed;
	int64_t started;
	unsigned char *data;       /* the whole file */
	unsigned char sha[BG_SHA256_LEN];
};

static void
record(const struct writer *w, struct store_inflight *f, bool final)
{
	memset(f, 0, sizeof(*f));
	f->url = (char *)w->url;
	snprintf(f->job, sizeof(f->job), "%s", "{00000000-0000-0000-0000-000000000001}");
	f->blob = w->blob;
	f->gen = w->gen;
	f->committed = w->done;
	f->total = w->total;
	f->state = final ? STORE_INFLIGHT_FINAL : STORE_INFLIGHT_ORIGIN;
	f->etag = (char *)"\"w1\"";
	f->last_modified = (char *)"Tue, 01 Dec 2026 10:00:00 GMT";
	f->date = (char *)"Sat, 05 Dec 2026 10:00:00 GMT";
	f->fetch.known = true;
	f->fetch.redirect = STORE_FETCH_REDIRECT_SILENT;
	snprintf(f->fetch.ca, sizeof(f->fetch.ca), "system");
	f->started = w->started;
	f->updated = bg_now();
	if (final) {
		f->has_sha = true;
		memcpy(f->sha256, w->sha, BG_SHA256_LEN);
	}
}

static int
start_fn(struct bg_txn *txn, void *arg)
{
	struct writer *w = arg;
	struct store_inflight f;

	record(w, &f, false);
	return txn_inflight_put(txn, &f);
}

/* The next chunks: their bytes, the digest of each full one, and the
 * record that counts them, in one transaction (fleet design 1.4). */
static int
chunk_fn(struct bg_txn *txn, void *arg)
{
	struct writer *w = arg;
	struct store_inflight f;
	uint64_t done = w->done;
	int rc;

	if (w->blob == 0 && (rc = txn_blob_new(txn, &w->blob)) != 0)
		return rc;
	for (unsigned i = 0; i < w->per_commit && done < w->size; i++) {
		uint64_t index = done / STORE_CHUNK_BYTES;
		size_t len = w->size - done < STORE_CHUNK_BYTES ? (size_t)(w->size - done)
		                                                : STORE_CHUNK_BYTES;
		unsigned char d[STORE_PIECE_LEN];

		if ((rc = txn_blob_put(txn, w->blob, index, w->data + done, len)) != 0)
			return rc;
		if (len == STORE_CHUNK_BYTES) {
			bg_sha256(w->data + done, len, d);
			if ((rc = txn_piece_put(txn, w->blob, index, d)) != 0)
				return rc;
		}
		done += len;
	}
	record(w, &f, false);
	f.committed = done;
	if ((rc = txn_inflight_put(txn, &f)) != 0)
		return rc;
	w->done = done; /* a retried transaction starts from the same place */
	return 0;
}

/* Content, key, the short last chunk's digest and the final record. */
static int
final_fn(struct bg_txn *txn, void *arg)
{
	struct writer *w = arg;
	struct store_content c = {.blob = w->blob, .size = w->size, .created = bg_now(),
	                          .last_used_ns = bg_now_ns()};
	struct store_key k;
	struct store_inflight f;
	uint64_t last = w->size / STORE_CHUNK_BYTES;
	int rc;

	memset(&k, 0, sizeof(k));
	k.url = (char *)w->url;
	memcpy(k.sha256, w->sha, BG_SHA256_LEN);
	k.size = w->size;
	k.etag = (char *)"\"w1\"";
	k.last_modified = (char *)"Tue, 01 Dec 2026 10:00:00 GMT";
	k.stored = k.validated = bg_now();
	k.fetch.known = true;
	snprintf(k.fetch.ca, sizeof(k.fetch.ca), "system");
	if (w->size % STORE_CHUNK_BYTES != 0) {
		unsigned char d[STORE_PIECE_LEN];

		bg_sha256(w->data + last * STORE_CHUNK_BYTES, w->size % STORE_CHUNK_BYTES, d);
		if ((rc = txn_piece_put(txn, w->blob, last, d)) != 0)
			return rc;
	}
	record(w, &f, true);
	if ((rc = txn_content_put(txn, w->sha, &c)) != 0 || (rc = txn_key_put(txn, &k)) != 0 ||
	    (rc = txn_inflight_put(txn, &f)) != 0)
		return rc;
	return 0;
}

static void
write_status(const char *path, uint64_t done)
{
	char tmp[4096];
	FILE *f;

	if (path == NULL)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((f = fopen(tmp, "w")) == NULL)
		return;
	fprintf(f, "%" PRIu64 "\n", done);
	if (fclose(f) == 0)
		rename(tmp, path);
}

static bool
num(const char *s, uint64_t max, uint64_t *out)
{
	return s != NULL && bg_parse_u64(s, strlen(s), max, out) == 0;
}

static int
usage(void)
{
	fprintf(stderr, "usage: inflight_writer HOME URL SIZE [--gen G] [--pace MS] "
	                "[--chunks-per-commit N] [--pause-after K] [--exit-after K] [--final] "
	                "[--total-unknown] [--status FILE] [--seed S]\n");
	return 2;
}

int
main(int argc, char **argv)
{
	struct writer w;
	struct bg_store *st = NULL;
	unsigned char urlhash[BG_SHA256_LEN];
	char lock[4096], dir[4096];
	const char *status = NULL;
	uint64_t pace = 0, pause_after = UINT64_MAX, exit_after = UINT64_MAX, v, chunks = 0;
	bool final = false;
	sigset_t set;
	int fd, rc, sig;

	if (argc < 4)
		return usage();
	memset(&w, 0, sizeof(w));
	w.url = argv[2];
	w.gen = 1;
	w.per_commit = 1;
	w.seed = 7;
	if (!num(argv[3], (uint64_t)1 << 40, &w.size))
		return usage();
	for (int i = 4; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--final") == 0) {
			final = true;
			continue;
		}
		if (strcmp(a, "--total-unknown") == 0) {
			w.total = -1;
			continue;
		}
		if (next == NULL)
			return usage();
		i++;
		if (strcmp(a, "--gen") == 0 && num(next, INT64_MAX, &w.gen) && w.gen > 0)
			;
		else if (strcmp(a, "--pace") == 0 && num(next, 3600000, &pace))
			;
		else if (strcmp(a, "--chunks-per-commit") == 0 && num(next, 64, &v) && v > 0)
			w.per_commit = (unsigned)v;
		else if (strcmp(a, "--pause-after") == 0 && num(next, UINT64_MAX, &pause_after))
			;
		else if (strcmp(a, "--exit-after") == 0 && num(next, UINT64_MAX, &exit_after))
			;
		else if (strcmp(a, "--status") == 0)
			status = next;
		else if (strcmp(a, "--seed") == 0 && num(next, 255, &v))
			w.seed = (unsigned)v;
		else
			return usage();
	}
	if (w.total == 0)
		w.total = (int64_t)w.size;
	if ((w.data = malloc(w.size > 0 ? w.size : 1)) == NULL)
		return 3;
	for (uint64_t i = 0; i < w.size; i++)
		w.data[i] = (unsigned char)((i * 31 + w.seed) & 0xff);
	bg_sha256(w.data, w.size, w.sha);
	bg_sha256(w.url, strlen(w.url), urlhash);
	w.started = bg_now();

	/* SIGUSR1 is taken with sigwait (the pause); SIGTERM kills as usual. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);

	/* The writer's lock, held for the life of the process. */
	snprintf(dir, sizeof(dir), "%s/%s", argv[1], STORE_INFLIGHT_LOCK_DIR);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		perror(dir);
		return 3;
	}
	if ((rc = store_inflight_lock_path(argv[1], urlhash, lock, sizeof(lock))) != 0) {
		fprintf(stderr, "inflight_writer: lock path: %s\n", bg_strerror(rc));
		return 3;
	}
	if ((fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 || flock(fd, LOCK_EX) != 0) {
		perror(lock);
		return 3;
	}
	if ((rc = store_open(argv[1], 0, NULL, &st)) != 0 || (rc = store_update(st, start_fn, &w)) != 0) {
		fprintf(stderr, "inflight_writer: %s: %s\n", argv[1], bg_strerror(rc));
		store_close(st);
		return 3;
	}
	write_status(status, 0);
	printf("ready\n");
	fflush(stdout);

	while (w.done < w.size) {
		if (chunks >= exit_after) {
			store_close(st);
			return 0; /* the lock drops: the writer is gone */
		}
		if (chunks == pause_after)
			sigwait(&set, &sig);
		if (pace > 0 && chunks > 0) {
			struct timespec ts = {(time_t)(pace / 1000), (long)(pace % 1000) * 1000000L};

			nanosleep(&ts, NULL);
		}
		if ((rc = store_update(st, chunk_fn, &w)) != 0) {
			fprintf(stderr, "inflight_writer: commit: %s\n", bg_strerror(rc));
			store_close(st);
			return 3;
		}
		chunks += w.per_commit;
		write_status(status, w.done);
	}
	if (chunks >= exit_after) {
		store_close(st);
		return 0;
	}
	if (final) {
		if ((rc = store_update(st, final_fn, &w)) != 0) {
			fprintf(stderr, "inflight_writer: final: %s\n", bg_strerror(rc));
			store_close(st);
			return 3;
		}
		write_status(status, w.done);
	} else {
		/* Everything committed, not finished: hold the lock until told. */
		sigaddset(&set, SIGTERM);
		sigprocmask(SIG_BLOCK, &set, NULL);
		sigwait(&set, &sig);
	}
	store_close(st);
	free(w.data);
	close(fd);
	return 0;
}
