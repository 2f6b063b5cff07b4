/* replay.c - the set of request signatures already accepted (peer auth). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "peerd.h"

struct slot {
	unsigned char sig[BG_SHA256_LEN];
	int64_t expires; /* unix seconds; 0: never used */
};

struct peerd_replay {
	pthread_mutex_t lock;
	struct slot *slots; /* PEERD_REPLAY_SLOTS */
};

struct peerd_replay *
peerd_replay_new(void)
{
	struct peerd_replay *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	/* calloc of a large block is a fresh zero mapping: pages cost memory
	 * only once written. */
	r->slots = calloc(PEERD_REPLAY_SLOTS, sizeof(*r->slots));
	if (r->slots == NULL || pthread_mutex_init(&r->lock, NULL) != 0) {
		free(r->slots);
		free(r);
		return NULL;
	}
	return r;
}

void
peerd_replay_free(struct peerd_replay *r)
{
	if (r == NULL)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r->slots);
	free(r);
}

enum peerd_replay_result
peerd_replay_check(struct peerd_replay *r, const unsigned char sig[BG_SHA256_LEN],
                   int64_t expires, int64_t now)
{
	struct slot *free_slot = NULL;
	enum peerd_replay_result res = PEERD_REPLAY_FULL;
	uint32_t h;

	/* sig is an HMAC made with our key: its bytes are uniformly spread and
	 * cannot be chosen by anyone without the key, so they serve as the hash. */
	memcpy(&h, sig, sizeof(h));
	pthread_mutex_lock(&r->lock);
	/* A signature is only ever stored within PEERD_REPLAY_PROBE slots of its
	 * hash, so looking at those slots is enough to find it again. */
	for (unsigned i = 0; i < PEERD_REPLAY_PROBE; i++) {
		struct slot *s = &r->slots[(h + i) % PEERD_REPLAY_SLOTS];

		if (s->expires < now) {
			if (free_slot == NULL)
				free_slot = s;
			continue;
		}
		if (memcmp(s->sig, sig, BG_SHA256_LEN) == 0) {
			res = PEERD_REPLAY_SEEN;
			goto out;
		}
	}
	if (free_slot != NULL) {
		memcpy(free_slot->sig, sig, BG_SHA256_LEN);
		free_slot->expires = expires;
		res = PEERD_REPLAY_NEW;
	}
out:
	pthread_mutex_unlock(&r->lock);
	return res;
}
