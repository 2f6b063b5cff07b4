/*
 * store_fill.c - fills a home's store with many small entries, for
 * scripts/bench's store administration figures (listing, eviction).
 *
 *   store_fill HOME N [BYTES]
 *
 * Adds N entries of BYTES bytes (default 1024), each its own content under
 * the key https://fill.example/I, used and validated at increasing times
 * (entry 0 the least recently used), 1,000 per transaction, through the
 * same store API the agent uses.  Prints the seconds it took.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"

#define PER_TXN 1000

struct fill {
	uint64_t first, n, bytes;
	unsigned char *data;
	int64_t base;
};

static int
fill_txn(struct bg_txn *txn, void *arg)
{
	struct fill *f = arg;
	char url[64];
	int rc;

	for (uint64_t i = f->first; i < f->first + f->n; i++) {
		struct store_content c = { .size = f->bytes, .created = f->base,
		                           .last_used_ns = (f->base + (int64_t)i) * 1000000000 };
		struct store_key k = { .url = url, .size = f->bytes, .stored = f->base,
		                       .validated = f->base + (int64_t)i };
		unsigned char sha[BG_SHA256_LEN];

		memcpy(f->data, &i, sizeof(i)); /* every entry its own bytes */
		bg_sha256(f->data, f->bytes, sha);
		snprintf(url, sizeof(url), "https://fill.example/%" PRIu64, i);
		memcpy(k.sha256, sha, BG_SHA256_LEN);
		if ((rc = txn_blob_new(txn, &c.blob)) != 0 ||
		    (rc = txn_blob_put(txn, c.blob, 0, f->data, f->bytes)) != 0 ||
		    (rc = txn_content_put(txn, sha, &c)) != 0 || (rc = txn_key_put(txn, &k)) != 0)
			return rc;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct bg_store *st = NULL;
	struct timespec t0, t1;
	struct fill f;
	uint64_t n;
	int rc;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: store_fill HOME N [BYTES]\n");
		return 2;
	}
	n = strtoull(argv[2], NULL, 10);
	memset(&f, 0, sizeof(f));
	f.bytes = argc == 4 ? strtoull(argv[3], NULL, 10) : 1024;
	if (n == 0 || f.bytes < sizeof(uint64_t) || f.bytes > STORE_CHUNK_BYTES) {
		fprintf(stderr, "store_fill: N >= 1 and 8 <= BYTES <= %d\n", STORE_CHUNK_BYTES);
		return 2;
	}
	if ((f.data = calloc(1, f.bytes)) == NULL)
		return 3;
	f.base = bg_now() - (int64_t)n;
	if ((rc = store_open(argv[1], 0, NULL, &st)) != 0) {
		fprintf(stderr, "store_fill: %s: %s\n", argv[1], bg_strerror(rc));
		return 3;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (f.first = 0; f.first < n; f.first += f.n) {
		f.n = n - f.first < PER_TXN ? n - f.first : PER_TXN;
		if ((rc = store_update(st, fill_txn, &f)) != 0) {
			fprintf(stderr, "store_fill: %s\n", bg_strerror(rc));
			store_close(st);
			return 3;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.3f\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	store_close(st);
	free(f.data);
	return 0;
}
