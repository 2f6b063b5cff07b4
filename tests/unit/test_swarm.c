/*
 * test_swarm.c - the multi-peer piece planner (engine_swarm.c, swarm_plan):
 * how requests spread over sources at equal and unequal rates, that the
 * window and the connections per peer are never exceeded, that no piece is
 * asked twice at once, that a dead source's pieces go elsewhere, and that
 * planning stops when no live source is left.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "check.h"

static void
setup(struct swarm *w, size_t nsrc, uint64_t npieces)
{
	memset(w, 0, sizeof(*w));
	w->nsrc = nsrc;
	w->npieces = npieces;
	w->size = npieces * STORE_PIECE_BYTES - 100; /* a short last piece */
}

/* The invariants of a plan over the current state of w. */
static void
check_bounds(const struct swarm *w, const struct swarm_req *q, size_t n)
{
	unsigned asked[SWARM_WINDOW] = {0};

	for (size_t i = 0; i < w->nsrc; i++)
		CHECK(w->src[i].conns <= PEER_CONNECTIONS);
	for (size_t i = 0; i < n; i++) {
		CHECK(q[i].count >= 1 && q[i].count <= SWARM_SPAN);
		CHECK(q[i].first >= w->head);
		CHECK(q[i].first + q[i].count <= w->head + SWARM_WINDOW);
		CHECK(q[i].first + q[i].count <= w->npieces);
		CHECK(!w->src[q[i].src].dead);
		for (unsigned k = 0; k < q[i].count && q[i].first + k - w->head < SWARM_WINDOW; k++)
			asked[q[i].first + k - w->head]++;
	}
	for (size_t i = 0; i < SWARM_WINDOW; i++)
		CHECK(asked[i] <= 1);
}

/* Completes request q: its pieces become HAVE, its source free again. */
static void
complete(struct swarm *w, const struct swarm_req *q)
{
	for (unsigned k = 0; k < q->count; k++)
		w->win[q->first + k - w->head].st = SWARM_HAVE;
	w->src[q->src].conns--;
	w->src[q->src].queued = 0;
}

/* Slides the window past the HAVE pieces at its head. */
static void
slide(struct swarm *w)
{
	while (w->head < w->npieces && w->win[0].st == SWARM_HAVE) {
		memmove(&w->win[0], &w->win[1], (SWARM_WINDOW - 1) * sizeof(w->win[0]));
		memset(&w->win[SWARM_WINDOW - 1], 0, sizeof(w->win[0]));
		w->head++;
	}
}

static void
test_equal(void)
{
	struct swarm w;
	struct swarm_req q[SWARM_WINDOW];
	unsigned per[3] = {0};
	size_t n;

	setup(&w, 3, 100);
	n = swarm_plan(&w, q, SWARM_WINDOW);
	/* 3 sources x 2 connections, 4 pieces each: 24 pieces asked. */
	CHECK_EQ_INT(n, 3 * PEER_CONNECTIONS);
	check_bounds(&w, q, n);
	for (size_t i = 0; i < n; i++) {
		per[q[i].src]++;
		CHECK_EQ_INT(q[i].count, SWARM_SPAN);
		CHECK_EQ_INT(q[i].first, i * SWARM_SPAN); /* lowest first */
	}
	CHECK(per[0] == PEER_CONNECTIONS && per[1] == PEER_CONNECTIONS && per[2] == PEER_CONNECTIONS);
	/* Everyone busy: nothing more. */
	CHECK_EQ_INT(swarm_plan(&w, q, SWARM_WINDOW), 0);
	check_bounds(&w, q, 0);
}

static void
test_unequal(void)
{
	struct swarm w;
	struct swarm_req q[SWARM_WINDOW];
	unsigned long long got[3] = {0};
	int rounds = 0;

	/* Source 0 is 4 times as fast: simulated by completing its requests
	 * 4 times as often.  Over the file it must get the most pieces. */
	setup(&w, 3, 400);
	w.src[0].rate = 4e6;
	w.src[1].rate = 1e6;
	w.src[2].rate = 1e6;
	{
		struct swarm_req out[64];
		size_t nout = 0;

		while (w.head < w.npieces && rounds < 10000) {
			size_t n = swarm_plan(&w, q, SWARM_WINDOW);

			check_bounds(&w, q, n);
			for (size_t i = 0; i < n && nout < 64; i++)
				out[nout++] = q[i];
			/* Complete one request: a fast one each round, a slow one every
			 * fourth round. */
			for (size_t i = 0; i < nout; i++) {
				if (out[i].src == 0 || rounds % 4 == 0) {
					got[out[i].src] += out[i].count;
					complete(&w, &out[i]);
					out[i] = out[--nout];
					break;
				}
			}
			slide(&w);
			rounds++;
		}
	}
	CHECK_EQ_INT(w.head, w.npieces);
	CHECK(got[0] > got[1] && got[0] > got[2]);
	CHECK_EQ_INT(got[0] + got[1] + got[2], 400);
}

static void
test_window(void)
{
	struct swarm w;
	struct swarm_req q[SWARM_WINDOW];
	size_t n;

	/* Many sources: the window bounds what is asked. */
	setup(&w, 16, 1000);
	n = swarm_plan(&w, q, SWARM_WINDOW);
	CHECK_EQ_INT(n, SWARM_WINDOW / SWARM_SPAN);
	check_bounds(&w, q, n);
	CHECK_EQ_INT(swarm_plan(&w, q, SWARM_WINDOW), 0);
	/* The end of the file bounds it too: 5 pieces, one run of 4 and one of 1. */
	setup(&w, 3, 5);
	n = swarm_plan(&w, q, SWARM_WINDOW);
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_INT(q[0].count + q[1].count, 5);
	CHECK_EQ_INT(swarm_piece_len(&w, 4), STORE_PIECE_BYTES - 100);
	CHECK_EQ_INT(swarm_piece_len(&w, 5), 0);
}

static void
test_dead(void)
{
	struct swarm w;
	struct swarm_req q[SWARM_WINDOW];
	size_t n;

	setup(&w, 3, 100);
	n = swarm_plan(&w, q, SWARM_WINDOW);
	CHECK_EQ_INT(n, 6);
	/* Source 1 dies: its pieces go back to empty and its connections are
	 * released, as swarm_run does. */
	w.src[1].dead = true;
	for (size_t i = 0; i < n; i++) {
		if (q[i].src != 1)
			continue;
		for (unsigned k = 0; k < q[i].count; k++)
			w.win[q[i].first + k - w.head].st = SWARM_EMPTY;
		w.src[1].conns--;
	}
	/* Sources 0 and 2 complete one request each: they take source 1's
	 * pieces first (lowest first). */
	for (size_t i = 0; i < n; i++) {
		if (q[i].src == 0 || q[i].src == 2) {
			complete(&w, &q[i]);
			break;
		}
	}
	n = swarm_plan(&w, q, SWARM_WINDOW);
	check_bounds(&w, q, n);
	CHECK_EQ_INT(n, 1);
	CHECK(q[0].src != 1);
	/* Every source dead: nothing is planned. */
	setup(&w, 2, 100);
	w.src[0].dead = w.src[1].dead = true;
	CHECK_EQ_INT(swarm_plan(&w, q, SWARM_WINDOW), 0);
	setup(&w, 0, 100);
	CHECK_EQ_INT(swarm_plan(&w, q, SWARM_WINDOW), 0);
}

int
main(void)
{
	test_equal();
	test_unequal();
	test_window();
	test_dead();
	return check_done();
}
