/*
 * hasher.c - SHA-256 of a download, computed on a thread of its own once a
 * file is more than one chunk long, so that hashing (about 0.6 s per GiB
 * here) overlaps receiving and writing instead of adding to them.
 *
 * The hasher owns a ring of HASHER_RING chunk buffers.  The downloader
 * fills the current one, submits it (the thread hashes it, in order) and
 * moves to the next, waiting only if that one is still being hashed.  A
 * submitted buffer is only read from then on, by the thread and by the
 * downloader (write to disk, store commit), never written.
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
	uint64_t submitted; /* buffers handed over so far */
	uint64_t hashed;    /* buffers the thread has hashed */
	uint64_t this_file; /* buffers submitted since the last reset */
	bool threaded;
	bool stop;
	bool failed;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

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
		pthread_mutex_unlock(&h->mu);
		bool ok = EVP_DigestUpdate(h->md, h->buf[slot], h->len[slot]) == 1;
		pthread_mutex_lock(&h->mu);
		if (!ok)
			h->failed = true;
		h->hashed++;
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

/* Waits until every submitted buffer is hashed. */
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
	if (h->threaded) {
		pthread_mutex_lock(&h->mu);
		h->stop = true;
		pthread_cond_broadcast(&h->cv);
		pthread_mutex_unlock(&h->mu);
		pthread_join(h->thread, NULL);
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

int
hasher_submit(struct hasher *h, size_t len)
{
	unsigned slot = (unsigned)(h->submitted % HASHER_RING);

	h->this_file++;
	if (!h->threaded && h->this_file == 1) {
		/* A file's first chunk is hashed here: a file that fits in one
		 * never costs a thread. */
		unsigned next = (unsigned)((h->submitted + 1) % HASHER_RING);

		if (EVP_DigestUpdate(h->md, h->buf[slot], len) != 1)
			return BG_ENOMEM;
		h->submitted++;
		h->hashed++;
		return h->buf[next] != NULL || (h->buf[next] = malloc(STORE_CHUNK_BYTES)) != NULL
		           ? 0
		           : BG_ENOMEM;
	}
	if (!h->threaded) {
		for (size_t i = 0; i < HASHER_RING; i++)
			if (h->buf[i] == NULL && (h->buf[i] = malloc(STORE_CHUNK_BYTES)) == NULL)
				return BG_ENOMEM;
		if (pthread_create(&h->thread, NULL, hash_main, h) != 0) {
			/* No thread: hash here, as for the first chunk. */
			if (EVP_DigestUpdate(h->md, h->buf[slot], len) != 1)
				return BG_ENOMEM;
			h->submitted++;
			h->hashed++;
			return 0;
		}
		h->threaded = true;
	}
	pthread_mutex_lock(&h->mu);
	h->len[slot] = len;
	h->submitted++;
	pthread_cond_broadcast(&h->cv);
	/* The next buffer must be hashed before it is filled again. */
	while (h->submitted - h->hashed >= HASHER_RING)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
	return h->failed ? BG_ENOMEM : 0;
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
