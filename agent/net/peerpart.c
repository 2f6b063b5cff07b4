/*
 * peerpart.c - the peer client's side of downloads in progress: polls of
 * what peers have of a URL (HEAD /v1/partial, many peers at once) and
 * GETs of the part a peer has beyond a byte (bounded waits in the peer for
 * more).  Nothing is trusted beyond what the answer's signature covers;
 * the caller checks the bytes against a piece list or the content's
 * SHA-256 before it keeps them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "net.h"
#include "net_int.h"

/* The header fields an answer of /v1/partial signs, in the order signed
 * (peerd/README.md).  Content-Range is absent from HEAD answers: an empty
 * field in the signature. */
enum {
	F_ETAG, F_CONTENT_RANGE, F_AVAILABLE, F_FINAL, F_STATE, F_NODE, F_TOTAL, F_FETCH,
	F_ORIGIN_ETAG, F_LAST_MODIFIED, F_ORIGIN_DATE, F_PIECE_SIZE, F_SIGNED_COUNT
};
static const char *const signed_names[F_SIGNED_COUNT] = {
	"ETag", "Content-Range", "X-Bgcopy-Available", "X-Bgcopy-Final", "X-Bgcopy-State",
	"X-Bgcopy-Node", "X-Bgcopy-Total", PEER_FETCH_HEADER, "X-Origin-ETag", "Last-Modified",
	"X-Bgcopy-Origin-Date", "X-Bgcopy-Piece-Size",
};

struct part_xfer {
	const struct peer_config *pc;
	char request_auth[PEER_AUTH_VALUE_MAX];
	long status;
	char *f[F_SIGNED_COUNT];     /* the answer's fields as sent (owned) */
	char *final_url;
	char *signed_value;
	/* GET only */
	const struct peer_partial *want;
	uint64_t offset;
	struct sink_feed feed;
	struct peer_partial got;
	int parse_err;               /* the answer's description did not hold */
	bool described;              /* got was parsed (headers complete) */
	bool refused;
};

void
peer_partial_clear(struct peer_partial *p)
{
	free(p->etag);
	free(p->origin_etag);
	free(p->last_modified);
	free(p->origin_date);
	free(p->final_url);
	memset(p, 0, sizeof(*p));
}

static void
xfer_reset_fields(struct part_xfer *x)
{
	for (size_t i = 0; i < F_SIGNED_COUNT; i++) {
		free(x->f[i]);
		x->f[i] = NULL;
	}
	free(x->final_url);
	free(x->signed_value);
	x->final_url = x->signed_value = NULL;
}

static char *
dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static bool
parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	return s != NULL && bg_parse_u64(s, strlen(s), max, out) == 0;
}

static bool
hex_is(const char *s, size_t n)
{
	return strlen(s) == n && bg_is_lower_hex(s, n);
}

/* The answer's fields into *p; BG_EPROTO when they do not describe an
 * entry of this protocol.  Signatures are checked before (describe). */
static int
parse_fields(struct part_xfer *x, struct peer_partial *p)
{
	const char *etag = x->f[F_ETAG], *state = x->f[F_STATE], *final = x->f[F_FINAL];
	uint64_t v;

	memset(p, 0, sizeof(*p));
	p->status = x->status;
	p->total = -1;
	if (etag == NULL || state == NULL || final == NULL || x->f[F_AVAILABLE] == NULL)
		return BG_EPROTO;
	if (!parse_u64(x->f[F_AVAILABLE], INT64_MAX, &p->available))
		return BG_EPROTO;
	if (strcmp(final, "?1") == 0)
		p->final = true;
	else if (strcmp(final, "?0") != 0)
		return BG_EPROTO;
	if (strcmp(state, "want") == 0)
		p->state = STORE_INFLIGHT_WANT;
	else if (strcmp(state, "origin") == 0)
		p->state = STORE_INFLIGHT_ORIGIN;
	else if (strcmp(state, "peer") == 0)
		p->state = STORE_INFLIGHT_PEER;
	else if (strcmp(state, "final") == 0)
		p->state = STORE_INFLIGHT_FINAL;
	else if (strcmp(state, "stalled") == 0)
		p->state = -1;
	else
		return BG_EPROTO;
	if (p->final != (p->state == STORE_INFLIGHT_FINAL))
		return BG_EPROTO;
	/* ETag: "partial-<gen, 16 hex>" while in progress, "<sha256>" once final. */
	size_t n = strlen(etag);
	if (p->final) {
		char hex[BG_SHA256_HEX_LEN + 1];

		if (n != BG_SHA256_HEX_LEN + 2 || etag[0] != '"' || etag[n - 1] != '"')
			return BG_EPROTO;
		memcpy(hex, etag + 1, BG_SHA256_HEX_LEN);
		hex[BG_SHA256_HEX_LEN] = '\0';
		if (bg_sha256_from_hex(hex, p->sha256) != 0)
			return BG_EPROTO;
		p->has_sha = true;
	} else {
		char hex[17];

		if (n != 8 + 16 + 2 || strncmp(etag, "\"partial-", 9) != 0 || etag[n - 1] != '"')
			return BG_EPROTO;
		memcpy(hex, etag + 9, 16);
		hex[16] = '\0';
		if (!bg_is_lower_hex(hex, 16) || bg_parse_uint(hex, 16, 16, INT64_MAX, &p->gen) != 0 ||
		    p->gen == 0)
			return BG_EPROTO;
	}
	if (x->f[F_TOTAL] != NULL && x->f[F_TOTAL][0] != '\0') {
		if (!parse_u64(x->f[F_TOTAL], INT64_MAX, &v) || v < p->available)
			return BG_EPROTO;
		p->total = (int64_t)v;
	}
	if (p->final && p->total >= 0 && (uint64_t)p->total != p->available)
		return BG_EPROTO;
	if (x->f[F_NODE] != NULL) {
		if (!hex_is(x->f[F_NODE], BG_NODE_ID_LEN))
			return BG_EPROTO;
		memcpy(p->node, x->f[F_NODE], BG_NODE_ID_LEN + 1);
	}
	if (x->f[F_FETCH] != NULL && x->f[F_FETCH][0] != '\0' &&
	    bg_fetch_policy_parse(x->f[F_FETCH], &p->fetch) != 0)
		return BG_EPROTO;
	if (!parse_u64(x->f[F_PIECE_SIZE], STORE_RECORD_MAX, &p->piece_size) ||
	    p->piece_size == 0)
		return BG_EPROTO;
	if (x->status == 206) {
		struct http_content_range cr;
		const char *c = x->f[F_CONTENT_RANGE];

		if (c == NULL || http_content_range(c, strlen(c), 206, &cr) != 0 ||
		    cr.last >= p->available || (cr.total >= 0 && cr.total != p->total))
			return BG_EPROTO;
		p->first = cr.first;
		p->last = cr.last;
	}
	if ((p->etag = strdup(etag)) == NULL)
		return BG_ENOMEM;
	p->origin_etag = dup_or_null(x->f[F_ORIGIN_ETAG]);
	p->last_modified = dup_or_null(x->f[F_LAST_MODIFIED]);
	p->origin_date = dup_or_null(x->f[F_ORIGIN_DATE]);
	p->final_url = dup_or_null(x->final_url);
	return 0;
}

/* With a key, the answer must be signed for our request, this path, this
 * status and exactly the fields it carries: else it may come from whoever
 * answered in the peer's place. */
static bool
authentic(const struct part_xfer *x)
{
	const char *f[F_SIGNED_COUNT];

	if (x->pc->keylen == 0)
		return true;
	if (x->signed_value == NULL || x->status < 100 || x->status > 599)
		return false;
	for (size_t i = 0; i < F_SIGNED_COUNT; i++)
		f[i] = x->f[i] != NULL ? x->f[i] : "";
	return peer_auth_check_fields(x->pc->key, x->pc->keylen, x->request_auth,
	                              PEER_PATH_PARTIAL, (unsigned)x->status, f, F_SIGNED_COUNT,
	                              x->signed_value) == 0;
}

/* The headers are complete: decide whether the answer is one we take. */
static int
describe(struct part_xfer *x)
{
	int err;

	x->described = true;
	if (x->status != 200 && x->status != 206 && x->status != 416)
		return 0; /* the caller maps the status */
	if (!authentic(x)) {
		x->parse_err = BG_EACCES;
		return BG_EACCES;
	}
	peer_partial_clear(&x->got);
	if ((err = parse_fields(x, &x->got)) != 0) {
		x->parse_err = err;
		return err;
	}
	return 0;
}

/* A GET's body may start: it must be the part asked for, of the
 * incarnation (or content) polled. */
static int
begin_body(struct part_xfer *x)
{
	const struct peer_partial *w = x->want, *g = &x->got;
	struct origin_response resp;

	if (x->status != 206)
		return 0; /* no body to take (416), or refused below */
	if (g->first != x->offset || strcmp(g->etag, w->etag) != 0) {
		/* another incarnation, or final content whose digest differs from
		 * the one polled: the caller polls again */
		if (!(w->final == false && g->final && g->first == x->offset)) {
			x->refused = true;
			return BG_EAGAIN;
		}
	}
	memset(&resp, 0, sizeof(resp));
	resp.status = 206;
	resp.final_url = NULL; /* a peer never changes the file's remote name */
	resp.start = x->offset;
	resp.total = g->total;
	resp.etag = g->origin_etag;
	resp.last_modified = g->last_modified;
	resp.date = g->origin_date;
	return sink_feed_start(&x->feed, &resp);
}

static size_t
on_header(char *buf, size_t size, size_t nitems, void *arg)
{
	struct part_xfer *x = arg;
	size_t n = size * nitems, namelen, vlen;
	const char *name, *value;
	long status;

	if ((status = http_status_line(buf, n)) >= 0) {
		x->status = status;
		xfer_reset_fields(x);
		x->described = false;
		x->parse_err = 0;
		peer_partial_clear(&x->got);
		return n;
	}
	if (n <= 2) {
		if (describe(x) != 0)
			return 0;
		if (x->feed.sink != NULL && begin_body(x) != 0)
			return 0;
		return n;
	}
	if (!http_header_split(buf, n, &name, &namelen, &value, &vlen))
		return n;
	for (size_t i = 0; i < F_SIGNED_COUNT; i++) {
		if (http_header_is(name, namelen, signed_names[i])) {
			free(x->f[i]);
			/* A field sent twice is not what was signed once. */
			x->f[i] = http_value_dup(value, vlen, STORE_VALIDATOR_MAX);
			return x->f[i] != NULL ? n : 0;
		}
	}
	if (http_header_is(name, namelen, PEER_SIGNED_HEADER)) {
		free(x->signed_value);
		x->signed_value = http_value_dup(value, vlen, PEER_AUTH_VALUE_MAX);
	} else if (http_header_is(name, namelen, "X-Bgcopy-Final-URL")) {
		free(x->final_url);
		x->final_url = http_value_dup(value, vlen, STORE_URL_MAX);
	}
	return n;
}

static void
xfer_free(struct part_xfer *x)
{
	xfer_reset_fields(x);
	peer_partial_clear(&x->got);
}

/* Maps a finished poll transfer into out. */
static void
poll_result(struct part_xfer *x, CURLcode rc, struct peer_poll *out)
{
	if (rc != CURLE_OK && !x->described) {
		out->err = BG_EIO;
		snprintf(out->why, sizeof(out->why), "%s", curl_easy_strerror(rc));
	} else if (x->status == 404) {
		out->err = BG_ENOENT;
		snprintf(out->why, sizeof(out->why), "not found");
	} else if (x->parse_err == BG_EACCES) {
		out->err = BG_EPROTO;
		snprintf(out->why, sizeof(out->why), "the answer is not signed with the peer key");
	} else if (x->parse_err != 0) {
		out->err = BG_EPROTO;
		snprintf(out->why, sizeof(out->why), "the answer does not describe a download");
	} else if (x->status != 200 && x->status != 206 && x->status != 416) {
		out->err = BG_EPROTO;
		snprintf(out->why, sizeof(out->why), "HTTP %ld", x->status);
	} else {
		out->err = 0;
		out->p = x->got;
		memset(&x->got, 0, sizeof(x->got));
	}
}

int
peer_partial_poll(CURLSH *sh, const struct peer_config *pc, const char *const *peers, size_t n,
                  const char *key, unsigned timeout_ms, struct peer_poll *out)
{
	struct part_xfer *xs;
	CURL **es;
	struct curl_slist **hs;
	CURLM *m;
	int running = 0, err = 0;
	int64_t t0 = bg_mono_ms();

	if (n > PEER_POLL_MAX)
		return BG_EINVAL;
	memset(out, 0, n * sizeof(*out));
	if (n == 0)
		return 0;
	xs = calloc(n, sizeof(*xs));
	es = calloc(n, sizeof(*es));
	hs = calloc(n, sizeof(*hs));
	if (xs == NULL || es == NULL || hs == NULL || (m = curl_multi_init()) == NULL) {
		free(xs);
		free(es);
		free(hs);
		return BG_ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		out[i].err = BG_EIO;
		snprintf(out[i].why, sizeof(out[i].why), "not asked");
		xs[i].pc = pc;
		if ((es[i] = origin_easy_on(sh)) == NULL) {
			err = BG_ENOMEM;
			break;
		}
		if ((err = peer_prepare(es[i], pc, peers[i], PEER_PATH_PARTIAL, key, "HEAD", NULL,
		                        &hs[i], xs[i].request_auth)) != 0) {
			if (err == BG_ENOMEM)
				break;
			/* This peer cannot be asked (a name too long): the others can. */
			snprintf(out[i].why, sizeof(out[i].why), "%s", bg_strerror(err));
			curl_easy_cleanup(es[i]);
			es[i] = NULL;
			err = 0;
			continue;
		}
		curl_easy_setopt(es[i], CURLOPT_NOBODY, 1L);
		curl_easy_setopt(es[i], CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(es[i], CURLOPT_HEADERDATA, &xs[i]);
		curl_easy_setopt(es[i], CURLOPT_CONNECTTIMEOUT_MS, (long)PEER_POLL_CONNECT_MS);
		curl_easy_setopt(es[i], CURLOPT_TIMEOUT_MS, (long)timeout_ms);
		curl_easy_setopt(es[i], CURLOPT_PRIVATE, (void *)(uintptr_t)i);
		if (curl_multi_add_handle(m, es[i]) != CURLM_OK) {
			err = BG_ENOMEM;
			break;
		}
	}
	if (err == 0) {
		do {
			CURLMsg *msg;
			int left;

			if (curl_multi_perform(m, &running) != CURLM_OK) {
				err = BG_EIO;
				break;
			}
			while ((msg = curl_multi_info_read(m, &left)) != NULL) {
				void *priv = NULL;

				if (msg->msg != CURLMSG_DONE)
					continue;
				curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
				size_t i = (size_t)(uintptr_t)priv;
				poll_result(&xs[i], msg->data.result, &out[i]);
				out[i].ms = bg_mono_ms() - t0;
			}
			if (running > 0 && curl_multi_poll(m, NULL, 0, 100, NULL) != CURLM_OK) {
				err = BG_EIO;
				break;
			}
		} while (running > 0);
	}
	for (size_t i = 0; i < n; i++) {
		if (es[i] != NULL) {
			curl_multi_remove_handle(m, es[i]);
			curl_easy_cleanup(es[i]);
		}
		curl_slist_free_all(hs[i]);
		xfer_free(&xs[i]);
	}
	curl_multi_cleanup(m);
	free(xs);
	free(es);
	free(hs);
	return err;
}

int
peer_partial_get(CURLSH *sh, const struct peer_config *pc, const char *peer, const char *key,
                 const struct peer_partial *want, uint64_t offset, unsigned wait_ms,
                 uint64_t min, const struct origin_sink *sink, int *sink_err,
                 struct peer_partial *got, char *why, size_t whylen)
{
	struct part_xfer x;
	struct curl_slist *h = NULL;
	char range[48], ifmatch[STORE_VALIDATOR_MAX + 16], wait[80];
	const char *extra[3];
	CURLcode rc;
	CURL *e;
	int err;

	memset(&x, 0, sizeof(x));
	memset(got, 0, sizeof(*got));
	x.pc = pc;
	x.want = want;
	x.offset = offset;
	x.feed.sink = sink;
	*sink_err = 0;
	if (want->etag == NULL)
		return BG_EINVAL;
	snprintf(ifmatch, sizeof(ifmatch), "If-Match: %s", want->etag);
	snprintf(wait, sizeof(wait), "%s: ms=%u, min=%" PRIu64, PEER_WAIT_HEADER, wait_ms,
	         min > 0 ? min : 1);
	extra[0] = ifmatch;
	extra[1] = wait;
	extra[2] = NULL;
	if ((e = origin_easy_on(sh)) == NULL) {
		snprintf(why, whylen, "%s", bg_strerror(BG_ENOMEM));
		return BG_ENOMEM;
	}
	if ((err = peer_prepare(e, pc, peer, PEER_PATH_PARTIAL, key, "GET", extra, &h,
	                        x.request_auth)) != 0) {
		snprintf(why, whylen, "%s", bg_strerror(err));
		curl_easy_cleanup(e);
		return err;
	}
	snprintf(range, sizeof(range), "%" PRIu64 "-", offset);
	curl_easy_setopt(e, CURLOPT_RANGE, range);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_feed_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &x.feed);
	/* The wait happens before the first byte: the low-speed check must
	 * not count it. */
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)(PEER_STALL_TIMEOUT + wait_ms / 1000));
	rc = curl_easy_perform(e);
	curl_easy_cleanup(e);
	curl_slist_free_all(h);
	*sink_err = x.feed.err;
	if (x.described && x.parse_err == 0 && (x.status == 206 || x.status == 416)) {
		*got = x.got;
		memset(&x.got, 0, sizeof(x.got));
	}
	xfer_free(&x);
	if (x.feed.err != 0 && !x.refused) {
		snprintf(why, whylen, "%s", bg_strerror(x.feed.err));
		peer_partial_clear(got);
		return x.feed.err;
	}
	if (x.refused || x.status == 412) {
		snprintf(why, whylen, "the download there is another one now");
		peer_partial_clear(got);
		return BG_EAGAIN;
	}
	if (x.status == 404) {
		snprintf(why, whylen, "not found");
		return BG_ENOENT;
	}
	if (x.status == 503) {
		snprintf(why, whylen, "HTTP 503: busy");
		return BG_EBUSY;
	}
	if (x.parse_err == BG_EACCES) {
		snprintf(why, whylen, "the answer is not signed with the peer key");
		return BG_EPROTO;
	}
	if (x.parse_err != 0) {
		snprintf(why, whylen, "the answer does not describe a download");
		return BG_EPROTO;
	}
	if (x.status == 416 && rc == CURLE_OK)
		return 0;
	if (x.status == 206 && rc == CURLE_OK && x.feed.started &&
	    x.feed.bytes == got->last - got->first + 1)
		return 0;
	if (rc != CURLE_OK)
		snprintf(why, whylen, "%s", curl_easy_strerror(rc));
	else
		snprintf(why, whylen, "HTTP %ld", x.status);
	peer_partial_clear(got);
	return BG_EIO;
}
