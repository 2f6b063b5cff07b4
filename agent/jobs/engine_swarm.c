/*
 * engine_swarm.c - a complete entry held by several peers, taken from all
 * of them at once (doc/fleet-design.md 3.5): a window of pieces ahead of
 * the committed head, requests of a few consecutive pieces each to the
 * source expected to finish first, every piece checked against the piece
 * list as it completes, and the verified pieces given to the sink in
 * order.  A peer that sends a piece not matching its digest is dropped for
 * the rest of the file (with a valid key a wrong piece is a lie or damage,
 * never a race) and its pieces are asked elsewhere.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_int.h"

size_t
swarm_piece_len(const struct swarm *w, uint64_t i)
{
	uint64_t start = i * STORE_PIECE_BYTES;

	if (start >= w->size)
		return 0;
	return w->size - start < STORE_PIECE_BYTES ? (size_t)(w->size - start) : STORE_PIECE_BYTES;
}

/* The source with a free connection expected to finish bytes more first,
 * or -1. */
static int
best_source(const struct swarm *w, uint64_t bytes)
{
	double sum = 0, mean = 1, best_t = 0;
	size_t known = 0;
	int best = -1;

	for (size_t i = 0; i < w->nsrc; i++) {
		if (!w->src[i].dead && w->src[i].rate > 0) {
			sum += w->src[i].rate;
			known++;
		}
	}
	if (known > 0)
		mean = sum / (double)known;
	for (size_t i = 0; i < w->nsrc; i++) {
		const struct swarm_src *c = &w->src[i];
		double rate = c->rate > 0 ? c->rate : mean, t;

		if (c->dead || c->conns >= PEER_CONNECTIONS)
			continue;
		t = (double)(c->queued + bytes) / rate;
		if (best < 0 || t < best_t) {
			best = (int)i;
			best_t = t;
		}
	}
	return best;
}

size_t
swarm_plan(struct swarm *w, struct swarm_req *out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < SWARM_WINDOW && n < max && w->head + i < w->npieces; i++) {
		uint64_t bytes = 0;
		unsigned count = 0;
		int src;

		if (w->win[i].st != SWARM_EMPTY)
			continue;
		while (count < SWARM_SPAN && i + count < SWARM_WINDOW &&
		       w->head + i + count < w->npieces && w->win[i + count].st == SWARM_EMPTY) {
			bytes += swarm_piece_len(w, w->head + i + count);
			count++;
		}
		if ((src = best_source(w, bytes)) < 0)
			break; /* every live source is busy (or none is left) */
		for (unsigned k = 0; k < count; k++) {
			w->win[i + k].st = SWARM_ASKED;
			w->win[i + k].src = src;
		}
		w->src[src].conns++;
		w->src[src].queued += bytes;
		out[n].src = src;
		out[n].first = w->head + i;
		out[n].count = count;
		n++;
		i += count - 1;
	}
	return n;
}

/* ---- The I/O ------------------------------------------------------------ */
/* A request on its way. */
struct swarm_xfer {
	struct swarm_req q;
	struct peer_range *pr;
	unsigned char *buf;
	size_t len;
	int64_t t0;
	struct swarm_xfer *next;
};

struct swarm_state {
	struct run *r;
	struct fsink *s;
	struct swarm w;
	CURLM *m;
	struct swarm_xfer *xs;        /* outstanding */
	const struct swarm_holder *h;
	const unsigned char *digests;
	int *failed_by;               /* per piece: the first sender it failed from, or -1 */
	const char *key;
	bool started;                 /* the sink's on_start was called */
	bool suspect;                 /* the list itself is not to be trusted */
};

static void
xfer_drop(struct swarm_state *st, struct swarm_xfer *x)
{
	struct swarm_xfer **pp;

	for (pp = &st->xs; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	}
	peer_range_free(x->pr, st->m);
	free(x->buf);
	free(x);
}

/* The pieces of x that are still asked go back to empty, and its source
 * gets its connection back. */
static void
xfer_release(struct swarm_state *st, struct swarm_xfer *x)
{
	struct swarm *w = &st->w;
	struct swarm_src *c = &w->src[x->q.src];

	for (unsigned k = 0; k < x->q.count; k++) {
		uint64_t p = x->q.first + k;

		if (p >= w->head && p - w->head < SWARM_WINDOW &&
		    w->win[p - w->head].st == SWARM_ASKED && w->win[p - w->head].src == x->q.src)
			w->win[p - w->head].st = SWARM_EMPTY;
	}
	c->conns--;
	c->queued -= c->queued >= x->len ? x->len : c->queued;
}

/* Drops source src for the rest of the file: its outstanding requests are
 * cancelled and their pieces asked elsewhere. */
static void
source_kill(struct swarm_state *st, int src)
{
	struct swarm_xfer *x, *next;

	st->w.src[src].dead = true;
	for (x = st->xs; x != NULL; x = next) {
		next = x->next;
		if (x->q.src == src) {
			xfer_release(st, x);
			xfer_drop(st, x);
		}
	}
}

/* The time a request is signed with.  A peer takes each signature once,
 * and the signature of a range does not cover the range: every request of
 * this process gets a time of its own, from SWARM_T_SPREAD seconds in the
 * past up (within the peer's window of PEER_AUTH_WINDOW), never one handed
 * out before (a later attempt, another job's swarm).  Once ahead of the
 * clock by SWARM_T_SPREAD it is a time peers refuse: the source then fails
 * and the others, or the origin, take its pieces. */
#define SWARM_T_SPREAD (PEER_AUTH_WINDOW - 10)
static _Atomic int64_t swarm_next_t;

static int64_t
request_time(void)
{
	int64_t now = (int64_t)time(NULL), t = atomic_load(&swarm_next_t), want;

	do {
		want = t < now - SWARM_T_SPREAD ? now - SWARM_T_SPREAD : t;
	} while (!atomic_compare_exchange_weak(&swarm_next_t, &t, want + 1));
	return want;
}

static int
start_requests(struct swarm_state *st, CURLSH *sh)
{
	struct swarm_req q[SWARM_WINDOW];
	size_t n = swarm_plan(&st->w, q, SWARM_WINDOW);

	for (size_t i = 0; i < n; i++) {
		const struct swarm_holder *h = &st->h[q[i].src];
		uint64_t first = q[i].first * STORE_PIECE_BYTES, last;
		struct swarm_xfer *x = calloc(1, sizeof(*x));
		int err;

		last = (q[i].first + q[i].count) * STORE_PIECE_BYTES;
		if (last > st->w.size)
			last = st->w.size;
		last--;
		if (x == NULL)
			return BG_ENOMEM;
		x->q = q[i];
		x->len = (size_t)(last - first + 1);
		x->t0 = bg_mono_ms();
		x->next = st->xs;
		st->xs = x;
		if ((x->buf = malloc(x->len)) == NULL) {
			xfer_release(st, x);
			xfer_drop(st, x);
			return BG_ENOMEM;
		}
		if ((err = peer_range_new(sh, &st->r->pc, st->r->peers[h->peer], st->key, h->ent, first,
		                          last, x->buf, request_time(),
		                          &x->pr)) != 0) {
			xfer_release(st, x);
			xfer_drop(st, x);
			return err;
		}
		curl_easy_setopt(peer_range_easy(x->pr), CURLOPT_PRIVATE, (void *)x);
		if (curl_multi_add_handle(st->m, peer_range_easy(x->pr)) != CURLM_OK) {
			xfer_release(st, x);
			xfer_drop(st, x);
			return BG_ENOMEM;
		}
	}
	return 0;
}

/* A request ended: its pieces are checked one by one against the list. */
static void
xfer_done(struct swarm_state *st, struct swarm_xfer *x, CURLcode rc)
{
	struct swarm *w = &st->w;
	struct swarm_src *c = &w->src[x->q.src];
	size_t peer = st->h[x->q.src].peer;
	char why[256];
	int err = peer_range_done(x->pr, rc, why, sizeof(why));

	if (err != 0) {
		/* A peer that cannot serve its span is not asked again for this
		 * file: the others (or the origin) take its pieces. */
		note_peer_lookup(st->s, st->key, peer, PEER_LOOKUP_FAILED, why);
		source_kill(st, x->q.src);
		return;
	}
	{
		double secs = (double)(bg_mono_ms() - x->t0) / 1000.0, rate;

		rate = (double)x->len / (secs > 0.001 ? secs : 0.001);
		c->rate = c->rate > 0 ? 0.7 * c->rate + 0.3 * rate : rate;
	}
	for (unsigned k = 0; k < x->q.count; k++) {
		uint64_t p = x->q.first + k;
		size_t off = (size_t)(k * STORE_PIECE_BYTES), len = swarm_piece_len(w, p);
		unsigned char d[BG_SHA256_LEN];
		struct swarm_slot *sl;

		if (p < w->head || p - w->head >= SWARM_WINDOW)
			continue;
		sl = &w->win[p - w->head];
		if (sl->st != SWARM_ASKED || sl->src != x->q.src)
			continue;
		bg_sha256(x->buf + off, len, d);
		if (memcmp(d, st->digests + p * BG_SHA256_LEN, BG_SHA256_LEN) != 0) {
			snprintf(why, sizeof(why), "piece %" PRIu64 " does not match its digest", p);
			st->s->rec.bytes_rejected += len;
			note_peer_lookup(st->s, st->key, peer, PEER_LOOKUP_REJECTED, why);
			/* The same piece wrong from two senders: the list is the
			 * suspect, not them. */
			if (st->failed_by[p] >= 0 && st->failed_by[p] != x->q.src)
				st->suspect = true;
			st->failed_by[p] = x->q.src;
			source_kill(st, x->q.src); /* also gives back this request's pieces */
			return;
		}
		if ((sl->buf = malloc(len)) == NULL) {
			sl->st = SWARM_EMPTY; /* asked again */
			continue;
		}
		memcpy(sl->buf, x->buf + off, len);
		sl->len = len;
		sl->st = SWARM_HAVE;
		c->bytes += len;
	}
	xfer_release(st, x);
	xfer_drop(st, x);
}

/* Gives the verified pieces at the head of the window to the sink, in
 * order; the window slides. */
static int
drain(struct swarm_state *st, const struct origin_sink *sink)
{
	struct swarm *w = &st->w;
	int err;

	while (w->head < w->npieces && w->win[0].st == SWARM_HAVE) {
		if (!st->started) {
			struct origin_response resp;
			const struct peer_entry *e = st->h[0].ent;

			memset(&resp, 0, sizeof(resp));
			resp.status = st->s->committed > 0 ? 206 : 200;
			resp.final_url = NULL; /* a peer never changes the file's remote name */
			resp.start = st->s->committed;
			resp.total = (int64_t)w->size;
			resp.etag = e->origin_etag;
			resp.last_modified = e->last_modified;
			if ((err = sink->on_start(sink->arg, &resp)) != 0)
				return err;
			st->started = true;
		}
		/* Checked against the list: a resume keeps it (committed with
		 * the chunk it completes). */
		st->s->rec.bytes_checked = w->head * STORE_PIECE_BYTES + w->win[0].len;
		err = sink->on_data(sink->arg, w->win[0].buf, w->win[0].len);
		free(w->win[0].buf);
		memmove(&w->win[0], &w->win[1], (SWARM_WINDOW - 1) * sizeof(w->win[0]));
		memset(&w->win[SWARM_WINDOW - 1], 0, sizeof(w->win[0]));
		w->head++;
		if (err != 0)
			return err;
	}
	return 0;
}

int
swarm_run(struct run *r, struct fsink *s, const struct origin_sink *sink, const char *key,
          const struct swarm_holder *h, size_t nh, const unsigned char *digests, bool *done)
{
	CURLSH *sh = origin_peer_share(r->o);
	struct swarm_state st;
	int err = 0, running = 0;

	*done = false;
	if (sh == NULL || nh == 0 || nh > JOB_PEERS_MAX)
		return sh == NULL ? BG_ENOMEM : BG_EINVAL;
	/* Pieces are chunks: the swarm starts at a chunk boundary only. */
	if (s->fill != 0 || s->committed % STORE_PIECE_BYTES != 0)
		return 0;
	memset(&st, 0, sizeof(st));
	st.r = r;
	st.s = s;
	st.h = h;
	st.key = key;
	st.digests = digests;
	st.w.nsrc = nh;
	st.w.size = h[0].ent->size;
	st.w.npieces = (st.w.size + STORE_PIECE_BYTES - 1) / STORE_PIECE_BYTES;
	st.w.head = s->committed / STORE_PIECE_BYTES;
	if (st.w.head >= st.w.npieces)
		return 0;
	if ((st.failed_by = malloc(st.w.npieces * sizeof(int))) == NULL ||
	    (st.m = curl_multi_init()) == NULL) {
		free(st.failed_by);
		return BG_ENOMEM;
	}
	for (uint64_t i = 0; i < st.w.npieces; i++)
		st.failed_by[i] = -1;
	s->from_peer = true;
	while (st.w.head < st.w.npieces && !st.suspect) {
		CURLMsg *msg;
		int left;

		if (run_stopping(r)) {
			err = BG_ECANCELED;
			break;
		}
		if ((err = start_requests(&st, sh)) != 0)
			break;
		if (st.xs == NULL)
			break; /* no live source has what is missing: the origin goes on */
		if (curl_multi_perform(st.m, &running) != CURLM_OK) {
			err = BG_EIO;
			break;
		}
		while ((msg = curl_multi_info_read(st.m, &left)) != NULL) {
			void *priv = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
			/* A request cancelled with its source is freed already:
			 * only those still listed are taken. */
			for (struct swarm_xfer *x = st.xs; x != NULL; x = x->next) {
				if (x == priv) {
					xfer_done(&st, x, msg->data.result);
					break;
				}
			}
		}
		if ((err = drain(&st, sink)) != 0)
			break;
		if (st.w.head < st.w.npieces && running > 0 &&
		    curl_multi_poll(st.m, NULL, 0, 100, NULL) != CURLM_OK) {
			err = BG_EIO;
			break;
		}
	}
	/* Every holder that was not dropped served (or could have served)
	 * the file: a hit, noted after the misses and rejections. */
	for (size_t i = 0; i < nh; i++)
		if (!st.w.src[i].dead)
			note_peer_lookup(s, key, h[i].peer, PEER_LOOKUP_HIT, NULL);
	while (st.xs != NULL)
		xfer_drop(&st, st.xs);
	for (size_t i = 0; i < SWARM_WINDOW; i++)
		free(st.w.win[i].buf);
	curl_multi_cleanup(st.m);
	free(st.failed_by);
	s->from_peer = false;
	if (err == 0 && st.w.head == st.w.npieces)
		*done = true;
	return err;
}
