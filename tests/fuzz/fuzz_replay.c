/*
 * fuzz_replay.c - the replay set of bgcopy-peerd (peerd/replay.c), driven
 * by a sequence of checks as a stream of signed requests would.
 *
 * Input: records of 6 bytes: a signature seed (2 bytes: the hash bytes, so
 * that neighbourhoods fill up and collide), a signature tail byte, a time
 * step (0..255 s) and a lifetime (two bytes, seconds).  A fresh set per input.
 * Properties, against a shadow list of what was recorded: SEEN only for a
 * signature recorded before and still alive; NEW never for one that is
 * alive; right after NEW the same signature is SEEN.
 */
#include <stdio.h>

#include "fuzz.h"
#include "peerd.h"

#define MAX_OPS 512

struct shadow {
	unsigned char sig[BG_SHA256_LEN];
	int64_t expires;
};

static bool
alive_in(const struct shadow *sh, size_t n, const unsigned char *sig, int64_t now)
{
	for (size_t i = 0; i < n; i++)
		if (sh[i].expires >= now && memcmp(sh[i].sig, sig, BG_SHA256_LEN) == 0)
			return true;
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct shadow sh[MAX_OPS];
	struct peerd_replay *r = peerd_replay_new();
	int64_t now = 1700000000;
	size_t nsh = 0;

	if (r == NULL)
		return 0;
	for (size_t off = 0; off + 6 <= size && nsh < MAX_OPS; off += 6) {
		const uint8_t *op = data + off;
		unsigned char sig[BG_SHA256_LEN];
		int64_t expires;
		enum peerd_replay_result res;
		bool alive;

		memset(sig, 0xa5, sizeof(sig));
		/* Slot index = the first 4 bytes; keep the high ones fixed so
		 * that different seeds land near each other. */
		sig[0] = op[0];
		sig[1] = op[1] & 0x01;
		sig[2] = 0;
		sig[3] = 0;
		sig[31] = op[2];
		now += op[3];
		expires = now + (int64_t)(op[4] | op[5] << 8) - 600;
		alive = alive_in(sh, nsh, sig, now);
		res = peerd_replay_check(r, sig, expires, now);
		switch (res) {
		case PEERD_REPLAY_SEEN:
			FUZZ_ASSERT(alive);
			break;
		case PEERD_REPLAY_NEW:
			FUZZ_ASSERT(!alive);
			memcpy(sh[nsh].sig, sig, sizeof(sig));
			sh[nsh].expires = expires;
			nsh++;
			if (expires >= now)
				FUZZ_ASSERT(peerd_replay_check(r, sig, expires, now) == PEERD_REPLAY_SEEN);
			break;
		case PEERD_REPLAY_FULL:
			break;
		default:
			FUZZ_ASSERT(!"unknown result");
		}
	}
	peerd_replay_free(r);
	return 0;
}
