/*
 * hasher.c - SHA-256 of a download, computed on threads of their own once a
 * file is more than one chunk long, so that hashing (about 0.6 s per GiB
 * here) overlaps receiving and writing instead of adding to them.
 *
 * The hasher owns a ring of HASHER_RING chunk buffers.  The downloader
 * fills the current one, submits it and moves to the next, waiting only if
 * that one is still being read.  A submitted buffer is only read from then
 * on, by the threads and by the downloader (write to disk, store commit),
 * never written.
 *
 * Two threads read each buffer, in order: one feeds the whole-file digest,
 * the other computes the buffer's own digest when it was submitted with
 * one asked for (a store chunk's piece digest, handed over by
 * hasher_piece()).  The downloader commits a chunk's digest one commit
 * later than its bytes (engine_sink.c): neither hash runs on its path, and
 * on two cores the two hashes run side by side.  Without a second thread,
 * the first one computes both.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "jobs.h"
#include "jobs_int.h"

struct hasher {
	EVP_MD_CTX *md;
	unsigned char *buf[HASHER_RING];
	size_t len[HASHER_RING];
	bool want_piece[HASHER_RING];
	unsigned char piece[HASHER_RING][BG_SHA256_LEN];
	uint64_t submitted; /* buffers handed over so far */
	uint64_t hashed;    /* buffers in the whole-file digest */
	uint64_t pieced;    /* buffers whose own digest is done (or not asked) */
	uint64_t this_file; /* buffers submitted since the last reset */
	bool threaded;      /* thread runs */
	bool threaded2;     /* thread2 (pieces) runs */
	bool stop;
	bool failed;
	pthread_t thread, thread2;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static void
piece_slot(struct hasher *h, unsigned slot)
{
	if (h->want_piece[slot])
		bg_sha256(h->buf[slot], h->len[slot], h->piece[slot]);
}

/* The whole-file thread (and the pieces too when there is no thread2). */
static void *
hash_main(void *arg)
{
	struct hasher *h = arg;

	pthread_mutex_lock(&h->mu);
	for (;;) {
		while (!h->stop && h->hashed == h->submitted)
			pthread_cond_wait(&h->cv, &h->mu);
		if (h->hashed == h->submitted)
			break; /* stopped and drained */
		unsigned slot = (unsigned)(h->hashed % HASHER_RING);
		bool pieces = !h->threaded2;
		pthread_mutex_unlock(&h->mu);
		bool ok = EVP_DigestUpdate(h->md, h->buf[slot], h->len[slot]) == 1;
		if (pieces)
			piece_slot(h, slot);
		pthread_mutex_lock(&h->mu);
		if (!ok)
			h->failed = true;
		h->hashed++;
		if (pieces)
			h->pieced++;
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

static void *
piece_main(void *arg)
{
	struct hasher *h = arg;

	pthread_mutex_lock(&h->mu);
	for (;;) {
		while (!h->stop && h->pieced == h->submitted)
			pthread_cond_wait(&h->cv, &h->mu);
		if (h->pieced == h->submitted)
			break;
		unsigned slot = (unsigned)(h->pieced % HASHER_RING);
		pthread_mutex_unlock(&h->mu);
		piece_slot(h, slot);
		pthread_mutex_lock(&h->mu);
		h->pieced++;
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

int
hasher_new(struct hasher **out)
{
	struct hasher *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return BG_ENOMEM;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	if ((h->md = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1)
		goto fail;
	/* Only the first buffer exists at first: small files never need more. */
	if ((h->buf[0] = malloc(STORE_CHUNK_BYTES)) == NULL)
		goto fail;
	*out = h;
	return 0;
fail:
	hasher_free(h);
	return BG_ENOMEM;
}

/* Waits until every submitted buffer is in the whole-file digest. */
static void
drain(struct hasher *h)
{
	if (!h->threaded)
		return;
	pthread_mutex_lock(&h->mu);
	while (h->hashed != h->submitted)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
}

void
hasher_free(struct hasher *h)
{
	if (h == NULL)
		return;
	if (h->threaded || h->threaded2) {
		pthread_mutex_lock(&h->mu);
		h->stop = true;
		pthread_cond_broadcast(&h->cv);
		pthread_mutex_unlock(&h->mu);
		if (h->threaded)
			pthread_join(h->thread, NULL);
		if (h->threaded2)
			pthread_join(h->thread2, NULL);
	}
	for (size_t i = 0; i < HASHER_RING; i++)
		free(h->buf[i]);
	EVP_MD_CTX_free(h->md);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

unsigned char *
hasher_buffer(struct hasher *h)
{
	return h->buf[h->submitted % HASHER_RING];
}

/* Hashes buffer slot here, both ways (no thread). */
static int
hash_here(struct hasher *h, unsigned slot)
{
	if (EVP_DigestUpdate(h->md, h->buf[slot], h->len[slot]) != 1)
		return BG_ENOMEM;
	piece_slot(h, slot);
	h->submitted++;
	h->hashed++;
	h->pieced++;
	return 0;
}

static uint64_t
oldest_read(const struct hasher *h)
{
	return h->hashed < h->pieced ? h->hashed : h->pieced;
}

int
hasher_submit(struct hasher *h, size_t len, bool piece)
{
	unsigned slot = (unsigned)(h->submitted % HASHER_RING);
	int err;

	h->this_file++;
	h->len[slot] = len;
	h->want_piece[slot] = piece;
	if (!h->threaded && h->this_file == 1) {
		/* A file's first chunk is hashed here: a file that fits in one
		 * never costs a thread. */
		unsigned next = (unsigned)((h->submitted + 1) % HASHER_RING);

		if ((err = hash_here(h, slot)) != 0)
			return err;
		return h->buf[next] != NULL || (h->buf[next] = malloc(STORE_CHUNK_BYTES)) != NULL
		           ? 0
		           : BG_ENOMEM;
	}
	if (!h->threaded) {
		for (size_t i = 0; i < HASHER_RING; i++)
			if (h->buf[i] == NULL && (h->buf[i] = malloc(STORE_CHUNK_BYTES)) == NULL)
				return BG_ENOMEM;
		/* The pieces' thread first: the whole-file one reads threaded2
		 * to know whether the pieces are its job too. */
		h->threaded2 = pthread_create(&h->thread2, NULL, piece_main, h) == 0;
		if (pthread_create(&h->thread, NULL, hash_main, h) != 0) {
			if (h->threaded2) {
				pthread_mutex_lock(&h->mu);
				h->stop = true;
				pthread_cond_broadcast(&h->cv);
				pthread_mutex_unlock(&h->mu);
				pthread_join(h->thread2, NULL);
				h->threaded2 = false;
				h->stop = false;
			}
			/* No thread: hash here, as for the first chunk. */
			return hash_here(h, slot);
		}
		h->threaded = true;
	}
	pthread_mutex_lock(&h->mu);
	h->submitted++;
	pthread_cond_broadcast(&h->cv);
	/* The next buffer must be read by both before it is filled again. */
	while (h->submitted - oldest_read(h) >= HASHER_RING)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
	return h->failed ? BG_ENOMEM : 0;
}

uint64_t
hasher_submitted(const struct hasher *h)
{
	return h->submitted;
}

int
hasher_piece(struct hasher *h, uint64_t seq, unsigned char out[BG_SHA256_LEN])
{
	unsigned slot = (unsigned)(seq % HASHER_RING);

	if (seq >= h->submitted || h->submitted - seq > HASHER_RING || !h->want_piece[slot])
		return BG_EINVAL;
	if (h->threaded) {
		pthread_mutex_lock(&h->mu);
		while (h->pieced <= seq)
			pthread_cond_wait(&h->cv, &h->mu);
		pthread_mutex_unlock(&h->mu);
	}
	memcpy(out, h->piece[slot], BG_SHA256_LEN);
	return 0;
}

int
hasher_update(struct hasher *h, const void *p, size_t len)
{
	drain(h);
	return EVP_DigestUpdate(h->md, p, len) == 1 && !h->failed ? 0 : BG_ENOMEM;
}

int
hasher_reset(struct hasher *h)
{
	drain(h);
	h->failed = false;
	h->this_file = 0;
	return EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) == 1 ? 0 : BG_ENOMEM;
}

int
hasher_final(struct hasher *h, unsigned char out[BG_SHA256_LEN])
{
	unsigned int n = 0;

	drain(h);
	if (h->failed || EVP_DigestFinal_ex(h->md, out, &n) != 1 || n != BG_SHA256_LEN)
		return BG_ENOMEM;
	return 0;
}
