/*
 * engine_fleet.c - one origin copy for many nodes.  A file no peer holds
 * whole may be arriving at one of them right now: then this node takes it
 * from there as it arrives (follows) instead of asking the origin again.
 * When nobody fetches it yet, the nodes that want it agree without a
 * coordinator on which of them goes to the origin: each publishes its
 * intent, waits FLEET_SETTLE_MS so that nodes starting together see each
 * other, and ranks the nodes that want the URL by rendezvous hashing
 * (fleet.h); the first fleet_origin_max (1) go, the others follow them.
 * README.md "The fleet" tells the whole story; doc/fleet-design.md the
 * reasons.
 *
 * What is followed is only ever bytes fetched under a policy this job
 * accepts (bg_fetch_policy_acceptable): no weaker TLS checks, the same
 * anchors and the same redirect policy.  Under ALLOW_REPORT nothing is
 * followed: such a job keys the file under the URL that answered, which a
 * node asking for the original URL does not know (the miss BITS documents).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "engine_int.h"

/* A poll of every peer, with the peers' indexes in r->peers. */
struct fleet_view {
	struct peer_poll poll[PEER_POLL_MAX];
	size_t idx[PEER_POLL_MAX];
	size_t n;
};

struct fleet {
	struct run *r;
	struct fsink *s;
	const struct origin_sink *sink;
	CURLSH *sh;
	const char *key;
	char self[BG_NODE_ID_LEN + 1];
	struct store_fetch_policy mine;
	bool tls;
	bool candidate;       /* may be elected: publishes its bytes for others */
	size_t origin_max;    /* fleet_origin_max: origin fetches of the URL at once */
	bool excluded[JOB_PEERS_MAX]; /* failed us in this attempt: not asked again */
	bool live[JOB_PEERS_MAX];     /* seen fetching in this attempt: its final copy is current */
	bool source[JOB_PEERS_MAX];   /* a source in the last view (sources()) */
	struct fleet_view v;
};

enum follow_end { FOLLOW_DONE, FOLLOW_AGAIN, FOLLOW_LOST };

/* BGCOPY_FLEET_TRACE=1: one line per poll answer and decision on stderr. */
static void
trace(const char *fmt, ...)
{
	static int on = -1;
	va_list ap;

	if (on < 0) {
		const char *v = getenv("BGCOPY_FLEET_TRACE");
		on = v != NULL && strcmp(v, "1") == 0;
	}
	if (!on)
		return;
	va_start(ap, fmt);
	bg_vcomplain("bgcopy: fleet", fmt, ap);
	va_end(ap);
}

static void
view_clear(struct fleet_view *v)
{
	for (size_t i = 0; i < v->n; i++)
		peer_partial_clear(&v->poll[i].p);
	v->n = 0;
}

static int
poll_all(struct fleet *f)
{
	const char *peers[PEER_POLL_MAX];
	struct run *r = f->r;
	int err;

	view_clear(&f->v);
	for (size_t i = 0; i < r->npeers && f->v.n < PEER_POLL_MAX; i++) {
		if (f->excluded[i])
			continue;
		f->v.idx[f->v.n] = i;
		peers[f->v.n++] = r->peers[i];
	}
	if ((err = peer_partial_poll(f->sh, &r->pc, peers, f->v.n, f->key, FLEET_POLL_MS,
	                             f->v.poll)) != 0)
		view_clear(&f->v);
	for (size_t j = 0; j < f->v.n; j++) {
		const struct peer_poll *q = &f->v.poll[j];

		trace("poll %s: %s state %d available %" PRIu64 " node %.8s fetch %s",
		      peers[j], q->err == 0 ? "ok" : q->why, q->p.state, q->p.available, q->p.node,
		      q->p.fetch.known ? "known" : "unknown");
	}
	return err;
}

/* Whether this job may take bytes fetched under theirs, and the owner of
 * theirs bytes fetched under ours (same class: they could follow us). */
static bool
acceptable(const struct fleet *f, const struct peer_partial *p, bool both)
{
	if (!bg_fetch_policy_acceptable(&p->fetch, &f->mine, f->tls, NULL))
		return false;
	return !both || bg_fetch_policy_acceptable(&f->mine, &p->fetch, f->tls, NULL);
}

/* The sources now in the view: nodes fetching from the origin (or
 * finished since we saw them fetching).  Returns how many, and sets *best
 * to the view index of the one to follow, -1 when none: with one origin
 * fetch at a time the highest-ranked for the URL (every follower the
 * same); with more, the first for this node (fleet_rank_sources), which
 * spreads the followers over them. */
static size_t
sources(struct fleet *f, int *best)
{
	const char *nodes[PEER_POLL_MAX];
	size_t which[PEER_POLL_MAX], order[PEER_POLL_MAX], n = 0;

	*best = -1;
	memset(f->source, 0, sizeof(f->source));
	for (size_t j = 0; j < f->v.n; j++) {
		const struct peer_poll *q = &f->v.poll[j];
		size_t i = f->v.idx[j];
		bool fetching = q->err == 0 && q->p.state == STORE_INFLIGHT_ORIGIN;

		if (q->err != 0 || q->p.node[0] == '\0' || !acceptable(f, &q->p, false))
			continue;
		if (fetching)
			f->live[i] = true;
		/* A finished copy is taken only from a node seen fetching it in
		 * this attempt: one found finished at once was try_peers' to
		 * judge (it asks the origin whether it is current). */
		if (!fetching && !(q->p.final && f->live[i]))
			continue;
		f->source[i] = true;
		nodes[n] = q->p.node;
		which[n++] = j;
	}
	if (n == 0)
		return 0;
	if (f->origin_max > 1)
		fleet_rank_sources(nodes, n, f->self, f->key, order);
	else
		fleet_rank(nodes, n, f->key, order);
	*best = (int)which[order[0]];
	return n;
}

/* The election among us and the nodes that want the URL in our class:
 * the first `seats` of the ranking fetch from the origin.  Returns whether
 * we are one of them; the others elected go to owners[] (indexes in
 * r->peers), *nowners of them. */
static bool
elect(struct fleet *f, size_t seats, size_t *owners, size_t *nowners)
{
	const char *nodes[PEER_POLL_MAX + 1];
	size_t which[PEER_POLL_MAX + 1], order[PEER_POLL_MAX + 1], n = 0, won;
	bool us = false;

	nodes[n] = f->self;
	which[n++] = (size_t)-2;
	for (size_t j = 0; j < f->v.n; j++) {
		const struct peer_poll *q = &f->v.poll[j];

		if (q->err != 0 || q->p.node[0] == '\0' || !acceptable(f, &q->p, true))
			continue;
		if (q->p.state != STORE_INFLIGHT_WANT)
			continue; /* candidates say so: a follower or a node that may not own is not one */
		if (strcmp(q->p.node, f->self) == 0)
			continue; /* ourselves under another address */
		nodes[n] = q->p.node;
		which[n++] = j;
	}
	won = fleet_elect(nodes, n, f->key, seats, order);
	*nowners = 0;
	for (size_t k = 0; k < won; k++) {
		trace("elect %zu of %zu: %.8s", k + 1, n, nodes[order[k]]);
		if (which[order[k]] == (size_t)-2)
			us = true;
		else
			owners[(*nowners)++] = f->v.idx[which[order[k]]];
	}
	return us;
}

/* Whether anyone in the view wants the URL in our class (a node that may
 * be elected: worth waiting for). */
static bool
someone_wants(const struct fleet *f)
{
	for (size_t j = 0; j < f->v.n; j++) {
		const struct peer_poll *q = &f->v.poll[j];

		if (q->err == 0 && q->p.state == STORE_INFLIGHT_WANT && acceptable(f, &q->p, true))
			return true;
	}
	return false;
}

static void
note(struct fleet *f, size_t i, enum peer_lookup_result result, const char *detail)
{
	struct peer_lookup l = {.result = result};
	struct run *r = f->r;

	if (rec_set_str(&l.key, f->key) != 0 || rec_set_str(&l.peer, r->peers[i]) != 0 ||
	    rec_set_str(&l.source, r->sources[i]) != 0 || rec_set_str(&l.detail, detail) != 0 ||
	    file_rec_note_lookup(&f->s->rec, &l) != 0)
		peer_lookup_clear(&l);
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0)
		;
}

struct own_pieces {
	uint64_t blob, first, max, n;
	unsigned char *out;
};

static int
own_pieces_fn(struct bg_txn *txn, void *arg)
{
	struct own_pieces *o = arg;

	return txn_pieces_read(txn, o->blob, o->first, o->max, o->out, &o->n);
}

/* The pieces followed from node i since the last check, against the list
 * it signs of the download it serves (etag: that download's): the prefix
 * found there is kept if the node dies (keep_verified).  0 also when no
 * list could be had now (a later step asks again); BG_EDIGEST when one of
 * our pieces is not the node's: bytes damaged on the way. */
static int
check_followed(struct fleet *f, size_t i, const char *etag)
{
	struct fsink *s = f->s;
	uint64_t have = s->committed / STORE_PIECE_BYTES, count = 0, known = 0;
	uint64_t checked = s->rec.bytes_checked / STORE_PIECE_BYTES;
	unsigned char *theirs = NULL, sha[BG_SHA256_LEN];
	struct own_pieces o = {.blob = s->blob, .first = checked};
	char why[256];
	bool final;
	int err;

	if (!s->cache || have <= checked)
		return 0;
	if (peer_pieces_get(f->sh, &f->r->pc, f->r->peers[i], f->key, checked, etag,
	                    &theirs, &count, &known, &final, sha, why, sizeof(why)) != 0)
		return 0;
	o.max = count < have - checked ? count : have - checked;
	if (o.max > 0 && (o.out = malloc(o.max * STORE_PIECE_LEN)) == NULL) {
		free(theirs);
		return BG_ENOMEM;
	}
	err = o.max > 0 ? store_view(f->r->st, own_pieces_fn, &o) : 0;
	for (uint64_t k = 0; err == 0 && k < o.n; k++)
		if (memcmp(o.out + k * STORE_PIECE_LEN, theirs + k * STORE_PIECE_LEN,
		           STORE_PIECE_LEN) != 0)
			err = BG_EDIGEST;
	/* Written with the next commit: a resume keeps these. */
	if (err == 0)
		s->rec.bytes_checked = (checked + o.n) * STORE_PIECE_BYTES;
	trace("fleet: pieces of %s: %" PRIu64 " checked, %" PRIu64 " of %" PRIu64 " verified%s",
	      f->r->peers[i], o.n, checked + (err == 0 ? o.n : 0), have,
	      err == BG_EDIGEST ? ": MISMATCH" : "");
	free(o.out);
	free(theirs);
	return err;
}

/* After the node followed failed: the verified pieces stay, every byte
 * after them goes (the file, the hash, the record), and the origin sends
 * the rest with Range and If-Range on the validators the followed node had
 * from the origin.  Nothing verified, or no validator to guard a Range
 * with: from byte 0. */
static int
keep_verified(struct fsink *s)
{
	uint64_t keep = s->rec.bytes_checked - s->rec.bytes_checked % STORE_PIECE_BYTES;
	int err;

	if (keep == 0 || keep > s->committed || resume_validator(&s->rec) == NULL)
		return restart_file(s);
	s->fill = s->preloaded = 0;
	s->rec.bytes_committed = keep;
	if (s->rec.bytes_from_peers > keep)
		s->rec.bytes_from_peers = keep;
	if ((err = prepare_partial(s)) != 0)
		return err;
	/* Readers of the bytes past keep (none should have been: a follower
	 * serves nobody) must not take the new ones for them. */
	if (s->publish)
		s->gen = inflight_new_gen();
	return commit_file(s, NULL, 0, false, false);
}

/* Takes the file from the node at view index j as it arrives there, until
 * it is whole (then finished and checked), the node fails or stops
 * growing, or its download there becomes another one. */
static int
follow(struct fleet *f, size_t j, enum follow_end *end)
{
	struct run *r = f->r;
	struct fsink *s = f->s;
	size_t i = f->v.idx[j];
	struct peer_partial want = f->v.poll[j].p;
	char why[384] = "";
	int err = 0;

	memset(&f->v.poll[j].p, 0, sizeof(want)); /* ours now */
	*end = FOLLOW_LOST;
	s->fleet_role = FLEET_ROLE_FOLLOWER;
	memcpy(s->fleet_source, want.node, sizeof(s->fleet_source));
	s->rec.fleet_follows++;
	if ((err = rec_set_str(&s->rec.fleet_role, "follower")) != 0 ||
	    (err = rec_set_str(&s->rec.fleet_source, want.node)) != 0) {
		peer_partial_clear(&want);
		return err;
	}
	int64_t last_growth = bg_mono_ms();

	for (;;) {
		uint64_t off = s->committed + s->fill, min = FLEET_FOLLOW_MIN;
		struct peer_partial got;
		int serr = 0;

		if (run_stopping(r)) {
			err = BG_ECANCELED;
			break;
		}
		if (want.final && off > want.available) {
			/* Its content is shorter than what came from elsewhere: not
			 * the same file (the whole-file digest will say which). */
			note(f, i, PEER_LOOKUP_STALE, "its copy is shorter than the bytes already here");
			f->excluded[i] = true;
			*end = FOLLOW_AGAIN;
			break;
		}
		if (want.final && off == want.available) {
			/* Whole: the digest the node signed decides (finish_file). */
			note(f, i, PEER_LOOKUP_HIT, "followed as it arrived");
			s->has_want = true;
			memcpy(s->want, want.sha256, BG_SHA256_LEN);
			/* The last, short chunk is the node's bytes too. */
			s->from_peer = true;
			err = flush_chunk(s);
			s->from_peer = false;
			if (err != 0)
				break;
			err = finish_file(s);
			if (err == 0 && r->out.hr != HR_S_OK) {
				/* Not the content the job expects: never this node again,
				 * and no digest of its to judge the next source by. */
				note(f, i, PEER_LOOKUP_REJECTED, r->out.message);
				job_outcome_clear(&r->out);
				f->excluded[i] = true;
				s->has_want = false;
				err = restart_file(s);
				break;
			}
			if (err == BG_EDIGEST) {
				note(f, i, PEER_LOOKUP_REJECTED, "the content does not match its digest");
				f->excluded[i] = true;
				s->has_want = false;
				err = restart_file(s);
				break;
			}
			if (err == 0)
				*end = FOLLOW_DONE;
			break;
		}
		if (want.total >= 0 && (uint64_t)want.total >= off && (uint64_t)want.total - off < min)
			min = (uint64_t)want.total - off;
		s->from_peer = true;
		err = peer_partial_get(f->sh, &r->pc, r->peers[i], f->key, &want, off,
		                       FLEET_STALL_MS, min, f->sink, &serr, &got, why, sizeof(why));
		s->from_peer = false;
		if (err == 0) {
			bool grew = got.available > want.available || (got.final && !want.final) ||
			            s->committed + s->fill > off;

			if (got.final || strcmp(got.etag, want.etag) != 0) {
				peer_partial_clear(&want);
				want = got;
			} else {
				want.available = got.available;
				want.total = got.total;
				want.state = got.state;
				peer_partial_clear(&got);
			}
			if (grew)
				last_growth = bg_mono_ms();
			if (grew && (err = check_followed(f, i, want.etag)) != 0) {
				if (err != BG_EDIGEST)
					break;
				note(f, i, PEER_LOOKUP_REJECTED,
				     "a piece followed is not the one in its signed list");
				f->excluded[i] = true;
				err = restart_file(s);
				*end = FOLLOW_AGAIN;
				break;
			}
			if (want.state == -1 ||
			    (!grew && bg_mono_ms() - last_growth >= FLEET_STALL_MS)) {
				/* Its writer is gone, or nothing came for FLEET_STALL_MS
				 * (whatever wait its peerd grants): somebody else must
				 * fetch the rest. */
				note(f, i, PEER_LOOKUP_FAILED, want.state == -1
				                                   ? "its download stopped there"
				                                   : "its download made no progress");
				f->excluded[i] = true;
				*end = FOLLOW_AGAIN;
				err = 0;
				break;
			}
			if (!grew)
				sleep_ms(FLEET_WATCH_MS); /* a peerd that waits less than asked */
			continue;
		}
		if (err == BG_EBUSY && bg_mono_ms() - last_growth < FLEET_STALL_MS) {
			sleep_ms(1000); /* 503, Retry-After: 1: busy, not gone */
			continue;
		}
		if (err == BG_EAGAIN) {
			*end = FOLLOW_AGAIN; /* another incarnation: poll again */
			err = 0;
			break;
		}
		if (serr != 0 && run_propagated(serr)) {
			err = serr;
			break;
		}
		note(f, i, PEER_LOOKUP_FAILED, why);
		f->excluded[i] = true;
		*end = FOLLOW_AGAIN;
		err = 0;
		break;
	}
	peer_partial_clear(&want);
	if (err == 0 && *end != FOLLOW_DONE) {
		/* What came in whole is kept; the next source appends from a
		 * chunk boundary, as a resume does. */
		if ((err = flush_chunk(s)) == 0 && s->cache && s->committed % STORE_CHUNK_BYTES != 0)
			err = prepare_partial(s);
		if (err != 0 && !run_propagated(err))
			err = 0;
	}
	return err;
}

bool
fleet_applies(struct run *r, struct fsink *s)
{
	const char *url = s->rec.remote_url;

	if (r->ro == NULL || r->ro->home == NULL || !r->ro->fleet || url == NULL)
		return false;
	if ((r->job.security_flags & BG_HTTP_REDIRECT_POLICY_MASK) ==
	    BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT)
		return false;
	return peer_mode(&r->job, PEER_CACHING_CLIENT) && run_has_peers(r);
}

int
try_fleet(struct run *r, struct fsink *s, const struct origin_sink *sink, bool *done)
{
	struct fleet *f;
	enum follow_end end;
	int err = 0;
	bool intent = false;

	*done = false;
	if ((f = calloc(1, sizeof(*f))) == NULL)
		return BG_ENOMEM;
	f->r = r;
	f->s = s;
	f->sink = sink;
	f->key = s->rec.remote_url;
	f->sh = origin_peer_share(r->o);
	f->tls = strncasecmp(f->key, "https:", 6) == 0;
	file_fetch_policy(s, &f->mine);
	if (f->sh == NULL || bg_node_id(r->ro->home, f->self) != 0) {
		free(f);
		return 0; /* no fleet without an identity: the origin as before */
	}
	if (s->pub_url == NULL && (s->pub_url = strdup(f->key)) == NULL) {
		free(f);
		return BG_ENOMEM;
	}
	f->candidate = may_publish(s) && r->ro->fleet_owner;
	/* Options a caller zeroed (not from bgcopy.conf) mean the default. */
	f->origin_max = r->ro->fleet_origin_max > 0 ? r->ro->fleet_origin_max : 1;
	s->fleet_role = FLEET_ROLE_NONE; /* the record's counts were reset by run_file */
	unsigned iterations = 0;

	for (unsigned round = 0; round <= r->ro->fleet_takeovers && err == 0 && !*done; round++) {
		size_t owners[PEER_POLL_MAX], nowners = 0; /* the others elected, by r->peers index */
		size_t nsrc;
		int j;

		/* Rounds that are not takeovers (somebody started meanwhile) do
		 * not count as such, but every round counts here. */
		if (++iterations > FLEET_ROUNDS_MAX)
			break;
		if (run_stopping(r)) {
			err = BG_ECANCELED;
			break;
		}
		if (poll_all(f) != 0)
			break; /* no fleet this time: the origin */
		/* A node that may be elected follows once origin_max nodes fetch
		 * (fewer leave it a seat in an election); any other node as soon
		 * as one does. */
		if ((nsrc = sources(f, &j)) >= (f->candidate ? f->origin_max : 1)) {
			if ((err = follow(f, (size_t)j, &end)) == 0 && end == FOLLOW_DONE)
				*done = true;
			continue;
		}
		if (!f->candidate) {
			/* Never elected: wait a little for a node that is. */
			if (!someone_wants(f))
				break;
		} else {
			/* The intent, at every election: only nodes that want the
			 * URL now are candidates (a follower is not, until it says
			 * so again). */
			if ((err = fleet_publish(s, STORE_INFLIGHT_WANT)) != 0)
				break;
			intent = true;
			s->rec.fleet_elections++;
			sleep_ms(FLEET_SETTLE_MS);
			if (run_stopping(r)) {
				err = BG_ECANCELED;
				break;
			}
			if (poll_all(f) != 0)
				break;
			if ((nsrc = sources(f, &j)) >= f->origin_max) {
				round--; /* not a takeover: somebody started meanwhile */
				continue;
			}
			/* Nodes already fetching hold their seats: an election
			 * fills only the others, so that nodes deciding before or
			 * after one of them started elect the same. */
			if (elect(f, f->origin_max - nsrc, owners, &nowners)) {
				/* Us: the origin, published at once so that later
				 * starters follow instead of electing again. */
				goto out;
			}
		}
		/* Somebody else is to fetch: wait for it (or anyone) to start,
		 * with several seats until every one elected has. */
		size_t want_src = nsrc + (nowners > 0 ? nowners : 1);
		int64_t deadline = bg_mono_ms() + FLEET_OWNER_START_MS;
		bool started = false;

		while (!started && bg_mono_ms() < deadline && err == 0) {
			sleep_ms(FLEET_WATCH_MS);
			if (run_stopping(r)) {
				err = BG_ECANCELED;
				break;
			}
			if (poll_all(f) != 0)
				break;
			started = sources(f, &j) >= want_src;
		}
		for (size_t k = 0; err == 0 && !started && k < nowners; k++) {
			if (f->source[owners[k]])
				continue;
			/* Elected but never started: the next election is without it. */
			note(f, owners[k], PEER_LOOKUP_FAILED, "elected to fetch the file but did not start");
			f->excluded[owners[k]] = true;
		}
		if (started)
			round--; /* followed next round */
		else if (!f->candidate)
			break; /* waited once: the origin */
	}
out:
	if (err == 0 && !*done && (s->fleet_role == FLEET_ROLE_FOLLOWER || intent)) {
		/* The origin after all (nobody else fetches, or what we followed
		 * failed): we fetch, publishing our bytes as the origin's. */
		if (s->fleet_role == FLEET_ROLE_FOLLOWER)
			s->rec.fleet_takeovers++;
		s->fleet_role = FLEET_ROLE_OWNER;
		/* Bytes followed are kept only as far as they were found in the
		 * signed piece list of the node they came from; the rest comes
		 * from the origin, guarded by If-Range. */
		if (s->rec.bytes_from_peers > 0 && (err = keep_verified(s)) != 0)
			goto done;
		if ((err = rec_set_str(&s->rec.fleet_role, "owner")) == 0 && s->publish)
			err = fleet_publish(s, STORE_INFLIGHT_ORIGIN);
	}
done:
	view_clear(&f->v);
	free(f);
	return err;
}
