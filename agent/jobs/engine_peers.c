/*
 * engine_peers.c - the origin request of a file, and peers as a source:
 * each peer is asked in turn, its entry checked with the origin (or against
 * the expected SHA-256), and what it sends goes through the sink.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine_int.h"

/* A target's credentials for libcurl, which sends one user name per
 * target: the strongest scheme set (negotiate, ntlm, digest, basic) gives
 * it, and every scheme set with the same user and password is offered
 * with it; libcurl then answers the strongest the server asks for. */
static void
auth_for(const struct job_rec *job, enum job_auth_target t, struct origin_auth *out)
{
	static const unsigned bits[JOB_AUTH_SCHEMES] = {
		[JOB_AUTH_BASIC] = ORIGIN_AUTH_BASIC,
		[JOB_AUTH_DIGEST] = ORIGIN_AUTH_DIGEST,
		[JOB_AUTH_NTLM] = ORIGIN_AUTH_NTLM,
		[JOB_AUTH_NEGOTIATE] = ORIGIN_AUTH_NEGOTIATE,
	};
	const struct job_cred *best = NULL;

	memset(out, 0, sizeof(*out));
	for (int sc = JOB_AUTH_SCHEMES - 1; sc >= 0 && best == NULL; sc--)
		if (job->cred[t][sc].user != NULL)
			best = &job->cred[t][sc];
	if (best == NULL)
		return;
	out->user = best->user;
	out->password = best->password;
	for (int sc = 0; sc < JOB_AUTH_SCHEMES; sc++) {
		const struct job_cred *c = &job->cred[t][sc];

		if (c->user != NULL && strcmp(c->user, best->user) == 0 &&
		    strcmp(c->password != NULL ? c->password : "",
		           best->password != NULL ? best->password : "") == 0)
			out->schemes |= bits[sc];
	}
}

void
origin_request_for(struct run *r, struct fsink *s, const char *const *headers,
                   struct origin_request *req)
{
	memset(req, 0, sizeof(*req));
	req->url = s->rec.remote_url;
	req->security_flags = r->job.security_flags;
	req->ca_file = r->job.ca_file;
	if (req->ca_file == NULL && r->ro != NULL)
		req->ca_file = r->ro->ca_file;
	req->headers = headers;
	req->headers_for = s->rec.original_url;
	req->offset = s->committed + s->fill;
	if (req->offset > 0)
		req->if_range = resume_validator(&s->rec);
	req->crl_dir = r->ro != NULL ? r->ro->crl_dir : NULL;
	req->proxy = r->job.proxy;
	auth_for(&r->job, JOB_AUTH_SERVER, &req->server_auth);
	auth_for(&r->job, JOB_AUTH_PROXY, &req->proxy_auth);
	/* Another method than GET (SetHttpMethod) fetches whole files only:
	 * no Range, so an attempt after an interruption starts from byte 0. */
	req->method = r->job.http_method;
	if (req->method != NULL) {
		req->offset = 0;
		req->if_range = NULL;
	}
	req->client_cert = r->job.client_cert;
	req->client_key = r->job.client_key;
	req->cert_check_cmd = r->job.cert_check_cmd.n > 0 ? strv_list(&r->job.cert_check_cmd) : NULL;
	req->stop = r->ro != NULL ? r->ro->stop : NULL;
	req->deadline_ms = dl_clock_deadline_ms(&r->dl);
	/* A silent origin is a transient error after the job's no-progress
	 * timeout at most: a job told to give up after 30 s without progress
	 * does not wait a minute for the stall to count. */
	{
		int64_t npt = r->job.no_progress_timeout;

		req->stall_seconds = npt > 0 && npt < ORIGIN_LOW_SPEED_TIME ? (unsigned)npt : 0;
	}
}

/* What a HEAD of the origin said. */
struct head_result {
	int64_t total;
	char *etag, *last_modified, *final_url;
};

static int
head_start(void *arg, const struct origin_response *resp)
{
	struct head_result *h = arg;

	h->total = resp->total;
	h->etag = resp->etag != NULL ? strdup(resp->etag) : NULL;
	h->last_modified = resp->last_modified != NULL ? strdup(resp->last_modified) : NULL;
	h->final_url = resp->final_url != NULL ? strdup(resp->final_url) : NULL;
	return 0;
}

static int
head_data(void *arg, const void *p, size_t len)
{
	(void)arg;
	(void)p;
	(void)len;
	return BG_EPROTO; /* a HEAD has no body */
}

static bool
same_validator(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* Whether a peer's entry is the file as the origin has it now: the
 * expected SHA-256 when the job gives one, else the origin's current size
 * and ETag or Last-Modified, asked with the job's flags and redirect
 * policy.  Under ALLOW_REPORT the file's remote name becomes the URL that
 * answered, as for a download (the key already looked up does not change). */
static bool
peer_entry_valid(struct run *r, struct fsink *s, const char *const *headers, const struct peer_entry *e,
                 char *why, size_t whylen)
{
	const char *expect = s->rec.expect_sha256;
	struct head_result h = {.total = -1};
	struct origin_sink sink = {head_start, head_data, &h};
	struct origin_request req;
	struct origin_result res;
	bool ok = false;

	if (expect != NULL) {
		unsigned char want[BG_SHA256_LEN];

		ok = bg_sha256_from_hex(expect, want) == 0 && memcmp(want, e->sha256, BG_SHA256_LEN) == 0;
		if (!ok)
			snprintf(why, whylen, "its digest is not the one expected");
		return ok;
	}
	origin_request_for(r, s, headers, &req);
	req.head = true;
	req.offset = 0;
	req.if_range = NULL;
	if (origin_fetch(r->o, &req, &sink, &res) != 0 || res.hr != HR_S_OK) {
		snprintf(why, whylen, "the origin could not confirm it: %s", res.message);
		goto out;
	}
	ok = h.total >= 0 && (uint64_t)h.total == e->size &&
	     (same_validator(h.etag, e->origin_etag) || same_validator(h.last_modified, e->last_modified));
	if (!ok) {
		snprintf(why, whylen, "stale: the origin has size %" PRId64 ", ETag %s, Last-Modified %s",
		         h.total, h.etag ? h.etag : "none", h.last_modified ? h.last_modified : "none");
		goto out;
	}
	if ((r->job.security_flags & BG_HTTP_REDIRECT_POLICY_MASK) ==
	        BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT &&
	    h.final_url != NULL && rec_set_str(&s->rec.remote_url, h.final_url) != 0)
		ok = false;
out:
	origin_result_clear(&res);
	free(h.etag);
	free(h.last_modified);
	free(h.final_url);
	return ok;
}

void
note_peer_lookup(struct fsink *s, const char *key, size_t i, enum peer_lookup_result result,
            const char *detail)
{
	struct peer_lookup l = {.result = result};
	struct run *r = s->r;

	/* The last lookup, and one per peer asked in this attempt, in order.
	 * Only a note: without memory it is left out. */
	if (rec_set_str(&l.key, key) != 0 || rec_set_str(&l.peer, r->peers[i]) != 0 ||
	    rec_set_str(&l.source, r->sources[i]) != 0 || rec_set_str(&l.detail, detail) != 0 ||
	    file_rec_note_lookup(&s->rec, &l) != 0)
		peer_lookup_clear(&l);
}

bool
run_has_peers(struct run *r)
{
	char kf[PEER_KEY_FP_LEN + 1];
	size_t n = 0;

	if (r->npeers > 0 || r->key_failed || r->table_loaded || r->ro == NULL || r->ro->table == NULL)
		return r->npeers > 0;
	/* Taken once per run, when a file first needs peers: a job that the
	 * store serves never waits for a browse. */
	r->table_loaded = true;
	if (peer_key_fingerprint(r->pc.key, r->pc.keylen, kf) != 0 ||
	    peer_table_get(r->ro->table, kf, &r->rows, &n) != 0)
		return false;
	for (size_t i = 0; i < n && r->npeers < JOB_PEERS_MAX; i++) {
		if (r->rows[i].rejected)
			continue; /* listed by `bgcopy peers`, never asked */
		r->peers[r->npeers] = r->rows[i].peer;
		r->sources[r->npeers] = peer_source_name(r->rows[i].source);
		r->nodes[r->npeers] = r->rows[i].node[0] != '\0' ? r->rows[i].node : NULL;
		r->npeers++;
	}
	return r->npeers > 0;
}

struct note_args {
	struct run *r;
	const struct fsink *s;
	int64_t now;
};

static int
note_fn(struct bg_txn *txn, void *arg)
{
	struct note_args *a = arg;

	for (size_t i = 0; i < a->s->rec.nlookups; i++) {
		const struct peer_lookup *l = &a->s->rec.lookups[i];
		const char *node = NULL, *result = peer_lookup_result_name(l->result);
		int err;

		if (l->peer == NULL || result == NULL)
			continue;
		for (size_t j = 0; j < a->r->npeers; j++)
			if (strcmp(a->r->peers[j], l->peer) == 0)
				node = a->r->nodes[j];
		err = txn_peer_note(txn, l->peer, l->source, node, result, a->now);
		/* A name too long to key is not recorded; anything else ends
		 * the note (the transaction is spoilt). */
		if (err != 0 && err != BG_EINVAL)
			return err;
	}
	return 0;
}

void
note_peer_results(struct run *r, const struct fsink *s)
{
	struct note_args a = {r, s, bg_now()};

	if (s->rec.nlookups > 0 && store_update(r->st, note_fn, &a) != 0) {
		/* Only a note for `bgcopy peers`: the download goes on. */
	}
}

static bool
same_str(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/* Whether two peers describe the same entry: content, size and the
 * origin's validators. */
static bool
same_entry(const struct peer_entry *a, const struct peer_entry *b)
{
	return a->has_sha && b->has_sha && a->size == b->size &&
	       memcmp(a->sha256, b->sha256, BG_SHA256_LEN) == 0 &&
	       same_str(a->origin_etag, b->origin_etag) && same_str(a->last_modified, b->last_modified);
}

/* The piece list of the entry sha from the first holder that has it,
 * whole (one digest per piece), or NULL. */
static unsigned char *
swarm_list(struct run *r, CURLSH *e, const char *key, const struct swarm_holder *h, size_t nh,
           uint64_t npieces)
{
	for (size_t i = 0; i < nh; i++) {
		unsigned char *all = malloc(npieces * BG_SHA256_LEN + 1), *d = NULL;
		uint64_t have = 0, count, known;
		unsigned char sha[BG_SHA256_LEN];
		char why[256];
		bool final;

		if (all == NULL)
			return NULL;
		while (have < npieces &&
		       peer_pieces_get(e, &r->pc, r->peers[h[i].peer], key, have, NULL, &d, &count,
		                       &known,
		                       &final, sha, why, sizeof(why)) == 0) {
			bool ok = final && known == npieces && count > 0 && have + count <= npieces &&
			          memcmp(sha, h[i].ent->sha256, BG_SHA256_LEN) == 0;

			if (ok)
				memcpy(all + have * BG_SHA256_LEN, d, count * BG_SHA256_LEN);
			free(d);
			d = NULL;
			if (!ok)
				break;
			have += count;
		}
		if (have == npieces)
			return all;
		free(all);
	}
	return NULL;
}

/* The file from every holder at once (engine_swarm.c).  *ran when the
 * swarm took over: the single-peer path is then not tried. */
static int
try_swarm(struct run *r, struct fsink *s, const struct origin_sink *sink, const char *key,
          const struct swarm_holder *h, size_t nh, bool *ran, bool *done)
{
	CURLSH *e = origin_peer_share(r->o);
	uint64_t npieces = (h[0].ent->size + STORE_PIECE_BYTES - 1) / STORE_PIECE_BYTES;
	unsigned char *digests;
	int err;

	*ran = false;
	if (npieces < 2 || s->fill != 0 || s->committed % STORE_PIECE_BYTES != 0 ||
	    (digests = swarm_list(r, e, key, h, nh, npieces)) == NULL)
		return 0;
	*ran = true;
	s->has_want = true;
	memcpy(s->want, h[0].ent->sha256, BG_SHA256_LEN);
	err = swarm_run(r, s, sink, key, h, nh, digests, done);
	free(digests);
	if (err != 0 || !*done) {
		*done = false;
		return err != 0 && run_propagated(err) ? err : 0;
	}
	/* The last, short piece is in the sink's buffer; then the whole
	 * file's digest decides, as for one peer. */
	*done = false;
	s->from_peer = true;
	err = flush_chunk(s);
	s->from_peer = false;
	if (err != 0)
		return err;
	err = finish_file(s);
	if (err == 0 && r->out.hr != HR_S_OK) {
		job_outcome_clear(&r->out);
		return restart_file(s);
	}
	if (err == BG_EDIGEST)
		return 0;
	if (err == 0)
		*done = true;
	return err;
}

int
try_peers(struct run *r, struct fsink *s, const struct origin_sink *sink, const char *const *headers,
          bool *done)
{
	CURLSH *e = origin_peer_share(r->o);
	char *key = s->rec.remote_url != NULL ? strdup(s->rec.remote_url) : NULL;
	struct peer_entry ents[JOB_PEERS_MAX];
	bool valid[JOB_PEERS_MAX];
	struct swarm_holder h[JOB_PEERS_MAX];
	size_t nh = 0;
	int err = 0;

	*done = false;
	if (e == NULL || key == NULL) {
		free(key);
		return BG_ENOMEM;
	}
	memset(ents, 0, sizeof(ents));
	memset(valid, 0, sizeof(valid));
	/* Every peer is asked first: several holders of the same content
	 * serve it together. */
	for (size_t i = 0; i < r->npeers; i++) {
		char why[384] = "";

		err = peer_lookup(e, &r->pc, r->peers[i], key, &ents[i], why, sizeof(why));
		if (err != 0) {
			note_peer_lookup(s, key, i, err == BG_ENOENT ? PEER_LOOKUP_MISS : PEER_LOOKUP_ERROR, why);
			err = 0;
			continue;
		}
		/* An entry like one the origin confirmed already is not asked
		 * about again: one HEAD at the origin for every holder. */
		for (size_t j = 0; j < i && !valid[i]; j++)
			valid[i] = valid[j] && same_entry(&ents[i], &ents[j]);
		if (valid[i])
			continue;
		if (!peer_entry_valid(r, s, headers, &ents[i], why, sizeof(why))) {
			note_peer_lookup(s, key, i, PEER_LOOKUP_STALE, why);
			peer_entry_clear(&ents[i]);
			continue;
		}
		valid[i] = true;
	}
	/* The holders of the first valid entry's content. */
	for (size_t i = 0; i < r->npeers; i++) {
		if (valid[i] && (nh == 0 || (ents[i].size == h[0].ent->size &&
		                             memcmp(ents[i].sha256, h[0].ent->sha256, BG_SHA256_LEN) == 0))) {
			h[nh].peer = i;
			h[nh].ent = &ents[i];
			nh++;
		}
	}
	if (nh >= 2) {
		bool ran = false;

		/* The holders' results are noted by the swarm as it ends (a
		 * holder dropped for a bad piece is "rejected", not a hit). */
		err = try_swarm(r, s, sink, key, h, nh, &ran, done);
		if (ran || err != 0)
			goto out;
	}
	for (size_t i = 0; i < r->npeers && !*done; i++) {
		const char *peer = r->peers[i];
		char why[384] = "";
		int serr = 0;

		if (!valid[i])
			continue;
		note_peer_lookup(s, key, i, PEER_LOOKUP_HIT, NULL);
		s->from_peer = true;
		s->has_want = true;
		memcpy(s->want, ents[i].sha256, BG_SHA256_LEN);
		err = peer_fetch(e, &r->pc, peer, key, &ents[i], s->committed + s->fill, sink, &serr, why,
		                 sizeof(why));
		if (err == 0) {
			/* The last, partial chunk is the peer's too; then the
			 * digest decides.  A peer whose bytes are not what it
			 * described is passed over for the next source. */
			if ((err = flush_chunk(s)) != 0)
				break;
			err = finish_file(s);
			if (err == 0 && r->out.hr != HR_S_OK) {
				/* Not whole after all: start over with the next source. */
				note_peer_lookup(s, key, i, PEER_LOOKUP_REJECTED, r->out.message);
				job_outcome_clear(&r->out);
				if ((err = restart_file(s)) != 0)
					break;
			} else if (err == BG_EDIGEST) {
				note_peer_lookup(s, key, i, PEER_LOOKUP_REJECTED, "the content does not match its digest");
				err = 0;
			} else if (err != 0) {
				break;
			} else {
				*done = true;
			}
		} else if (serr != 0 && run_propagated(serr)) {
			err = serr;
			break;
		} else {
			/* Broken off: what came in whole is kept (checked at the end
			 * against the digest), and the next source goes on from it. */
			note_peer_lookup(s, key, i, PEER_LOOKUP_FAILED, why);
			err = serr == 0 || serr == BG_EPROTO ? flush_chunk(s) : 0;
			if (err != 0 && run_propagated(err))
				break;
			/* The next source appends from a chunk boundary, as a
			 * resume does (prepare_partial). */
			if (err == 0 && s->cache && s->committed % STORE_CHUNK_BYTES != 0 &&
			    (err = prepare_partial(s)) != 0)
				break;
			err = 0;
		}
		s->from_peer = false;
	}
out:
	s->from_peer = false;
	for (size_t i = 0; i < r->npeers; i++)
		peer_entry_clear(&ents[i]);
	free(key);
	return err;
}
