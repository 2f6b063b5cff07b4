/*
 * peer.c - the peer-caching client: asks bgcopy-peerd on other machines for
 * a file's content under a key (the file's remote URL) and streams it into
 * the same sink as an origin transfer.  Nothing from a peer is trusted: the
 * caller checks the entry against the origin's validators (or --sha256)
 * before asking for the body, and the SHA-256 of what arrived before keeping
 * it.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "net.h"
#include "net_int.h"

struct peer_xfer {
	const struct peer_entry *want; /* GET: the entry the HEAD described */
	struct sink_feed feed;         /* GET: the body (no sink for a HEAD) */
	const char *key;
	uint64_t offset;
	bool has_last;  /* a span: the answer must be exactly offset..last */
	uint64_t last;
	long status;
	struct peer_entry got;
	char *content_range;
	bool refused; /* the answer is not the content we asked for */
	const struct peer_config *pc;
	char request_auth[PEER_AUTH_VALUE_MAX]; /* our request's signature, with a key */
	char *answer_auth;                       /* the answer's, or NULL */
};

/* With a key, an answer must be signed for our request and the entry it
 * describes (cache.h): else it may come from whoever answered in the
 * peer's place. */
static bool
answer_authentic(const struct peer_xfer *x, const struct peer_entry *e, uint64_t size)
{
	char hex[BG_SHA256_HEX_LEN + 1];

	if (x->pc->keylen == 0)
		return true;
	if (!e->has_sha)
		return false;
	bg_sha256_hex(e->sha256, hex);
	return peer_auth_check_answer(x->pc->key, x->pc->keylen, x->request_auth, hex, size,
	                              e->origin_etag, e->last_modified, x->answer_auth) == 0;
}

void
peer_entry_clear(struct peer_entry *e)
{
	free(e->origin_etag);
	free(e->last_modified);
	memset(e, 0, sizeof(*e));
}

static bool
parse_quoted_sha(const char *v, unsigned char out[BG_SHA256_LEN])
{
	char hex[BG_SHA256_HEX_LEN + 1];

	if (v == NULL || strlen(v) != BG_SHA256_HEX_LEN + 2 || v[0] != '"' ||
	    v[BG_SHA256_HEX_LEN + 1] != '"')
		return false;
	memcpy(hex, v + 1, BG_SHA256_HEX_LEN);
	hex[BG_SHA256_HEX_LEN] = '\0';
	return bg_sha256_from_hex(hex, out) == 0;
}

static int
begin_body(struct peer_xfer *x)
{
	struct origin_response resp;
	struct http_content_range cr;

	if (x->status == 206 && x->content_range != NULL &&
	    http_content_range(x->content_range, strlen(x->content_range), 206, &cr) == 0 &&
	    cr.first == x->offset && cr.total >= 0 && (uint64_t)cr.total == x->want->size &&
	    (!x->has_last || cr.last == x->last)) {
		/* The part asked for. */
	} else if (x->status == 200 && x->offset == 0 && !x->has_last) {
		/* The whole entry. */
	} else {
		x->refused = true;
		return BG_EPROTO;
	}
	/* A peer that now describes other content than its HEAD did is
	 * dropped before a byte is taken. */
	if (!x->got.has_sha || memcmp(x->got.sha256, x->want->sha256, BG_SHA256_LEN) != 0 ||
	    !answer_authentic(x, &x->got, x->want->size)) {
		x->refused = true;
		return BG_EPROTO;
	}
	memset(&resp, 0, sizeof(resp));
	resp.status = x->status;
	resp.final_url = NULL; /* a peer never changes the file's remote name */
	resp.start = x->offset;
	resp.total = (int64_t)x->want->size;
	resp.etag = x->want->origin_etag;
	resp.last_modified = x->want->last_modified;
	return sink_feed_start(&x->feed, &resp);
}

static size_t
on_peer_header(char *buf, size_t size, size_t nitems, void *arg)
{
	struct peer_xfer *x = arg;
	size_t n = size * nitems, namelen, vlen;
	const char *name, *value;
	long status;

	if ((status = http_status_line(buf, n)) >= 0) {
		x->status = status;
		free(x->content_range);
		x->content_range = NULL;
		free(x->answer_auth);
		x->answer_auth = NULL;
		peer_entry_clear(&x->got);
		return n;
	}
	if (n <= 2)
		return (x->feed.sink == NULL || (x->status != 200 && x->status != 206) || begin_body(x) == 0)
		           ? n
		           : 0;
	if (!http_header_split(buf, n, &name, &namelen, &value, &vlen))
		return n;
	if (http_header_is(name, namelen, "ETag")) {
		char *v = http_value_dup(value, vlen, STORE_VALIDATOR_MAX);

		x->got.has_sha = parse_quoted_sha(v, x->got.sha256);
		free(v);
	} else if (http_header_is(name, namelen, "X-Origin-ETag")) {
		free(x->got.origin_etag);
		x->got.origin_etag = http_value_dup(value, vlen, STORE_VALIDATOR_MAX);
	} else if (http_header_is(name, namelen, "Last-Modified")) {
		free(x->got.last_modified);
		x->got.last_modified = http_value_dup(value, vlen, STORE_VALIDATOR_MAX);
	} else if (http_header_is(name, namelen, "Content-Range")) {
		free(x->content_range);
		x->content_range = http_value_dup(value, vlen, STORE_VALIDATOR_MAX);
	} else if (http_header_is(name, namelen, PEER_AUTH_HEADER)) {
		free(x->answer_auth);
		x->answer_auth = http_value_dup(value, vlen, PEER_AUTH_VALUE_MAX);
	} else if (http_header_is(name, namelen, "Content-Length")) {
		if (!http_value_u64(value, vlen, &x->got.size))
			x->got.size = 0;
	}
	return n;
}

int
peer_prepare(CURL *e, const struct peer_config *pc, const char *peer, const char *path,
             const char *key, const char *method, const char *const *extra,
             struct curl_slist **headers, char request_auth[PEER_AUTH_VALUE_MAX])
{
	return peer_prepare_at(e, pc, peer, path, key, method, extra, headers, request_auth,
	                       (int64_t)time(NULL));
}

int
peer_prepare_at(CURL *e, const struct peer_config *pc, const char *peer, const char *path,
                const char *key, const char *method, const char *const *extra,
                struct curl_slist **headers, char request_auth[PEER_AUTH_VALUE_MAX], int64_t when)
{
	char *esc = curl_easy_escape(e, key, 0);
	char url[URL_MAX * 3 + 300], auth[PEER_AUTH_VALUE_MAX + 32], value[PEER_AUTH_VALUE_MAX];
	struct curl_slist *h = NULL, *t;
	int n, err;

	if (esc == NULL)
		return BG_ENOMEM;
	n = snprintf(url, sizeof(url), "http://%s%s?url=%s", peer, path, esc);
	curl_free(esc);
	if (n < 0 || (size_t)n >= sizeof(url))
		return BG_ELIMIT;
	if (pc->keylen > 0) {
		if ((err = peer_auth_sign(pc->key, pc->keylen, method, path, key, when, value,
		                          sizeof(value))) != 0)
			return err;
		snprintf(auth, sizeof(auth), "%s: %s", PEER_AUTH_HEADER, value);
		snprintf(request_auth, PEER_AUTH_VALUE_MAX, "%s", value);
		if ((h = curl_slist_append(NULL, auth)) == NULL)
			return BG_ENOMEM;
	}
	for (; extra != NULL && *extra != NULL; extra++) {
		if ((t = curl_slist_append(h, *extra)) == NULL) {
			curl_slist_free_all(h);
			return BG_ENOMEM;
		}
		h = t;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "bgcopy/" BGCOPY_VERSION);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)PEER_CONNECT_TIMEOUT);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, (long)PEER_MIN_SPEED);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)PEER_STALL_TIMEOUT);
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
	/* A peer is never a proxy user: it is on the LAN. */
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	*headers = h;
	return 0;
}

int
peer_lookup(CURLSH *sh, const struct peer_config *pc, const char *peer, const char *key,
            struct peer_entry *out, char *why, size_t whylen)
{
	struct peer_xfer x;
	struct curl_slist *h = NULL;
	CURLcode rc;
	CURL *e;
	int err;

	memset(&x, 0, sizeof(x));
	memset(out, 0, sizeof(*out));
	x.pc = pc;
	if ((e = origin_easy_on(sh)) == NULL) {
		snprintf(why, whylen, "%s", bg_strerror(BG_ENOMEM));
		return BG_ENOMEM;
	}
	if ((err = peer_prepare(e, pc, peer, PEER_PATH_CONTENT, key, "HEAD", NULL, &h, x.request_auth)) != 0) {
		snprintf(why, whylen, "%s", bg_strerror(err));
		curl_easy_cleanup(e);
		return err;
	}
	curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_peer_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)PEER_LOOKUP_TIMEOUT);
	rc = curl_easy_perform(e);
	curl_easy_cleanup(e);
	curl_slist_free_all(h);
	free(x.content_range);
	if (rc != CURLE_OK || x.status == 404) {
		snprintf(why, whylen, "%s", rc != CURLE_OK ? curl_easy_strerror(rc) : "not found");
		peer_entry_clear(&x.got);
		free(x.answer_auth);
		return rc != CURLE_OK ? BG_EIO : BG_ENOENT;
	}
	if (x.status != 200 || !x.got.has_sha) {
		snprintf(why, whylen, "HTTP %ld%s", x.status, x.got.has_sha ? "" : " without a digest");
		peer_entry_clear(&x.got);
		free(x.answer_auth);
		return BG_EPROTO;
	}
	if (!answer_authentic(&x, &x.got, x.got.size)) {
		snprintf(why, whylen, "the answer is not signed with the peer key");
		peer_entry_clear(&x.got);
		free(x.answer_auth);
		return BG_EPROTO;
	}
	free(x.answer_auth);
	*out = x.got;
	return 0;
}

int
peer_fetch(CURLSH *sh, const struct peer_config *pc, const char *peer, const char *key,
           const struct peer_entry *want, uint64_t offset, const struct origin_sink *sink,
           int *sink_err, char *why, size_t whylen)
{
	struct peer_xfer x;
	struct curl_slist *h = NULL;
	char range[48];
	CURLcode rc;
	CURL *e;
	int err;

	memset(&x, 0, sizeof(x));
	x.want = want;
	x.feed.sink = sink;
	x.key = key;
	x.offset = offset;
	x.pc = pc;
	*sink_err = 0;
	if ((e = origin_easy_on(sh)) == NULL) {
		snprintf(why, whylen, "%s", bg_strerror(BG_ENOMEM));
		return BG_ENOMEM;
	}
	if ((err = peer_prepare(e, pc, peer, PEER_PATH_CONTENT, key, "GET", NULL, &h, x.request_auth)) != 0) {
		snprintf(why, whylen, "%s", bg_strerror(err));
		curl_easy_cleanup(e);
		return err;
	}
	if (offset > 0) {
		snprintf(range, sizeof(range), "%" PRIu64 "-", offset);
		curl_easy_setopt(e, CURLOPT_RANGE, range);
	}
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_peer_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_feed_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &x.feed);
	rc = curl_easy_perform(e);
	curl_easy_cleanup(e);
	curl_slist_free_all(h);
	free(x.content_range);
	free(x.answer_auth);
	peer_entry_clear(&x.got);
	*sink_err = x.feed.err;
	if (rc == CURLE_OK && x.feed.started)
		return 0;
	if (x.feed.err != 0 && !x.refused) {
		snprintf(why, whylen, "%s", bg_strerror(x.feed.err));
		return x.feed.err;
	}
	if (x.refused)
		snprintf(why, whylen, "the answer (HTTP %ld) is not the entry described", x.status);
	else if (rc != CURLE_OK)
		snprintf(why, whylen, "%s", curl_easy_strerror(rc));
	else
		snprintf(why, whylen, "HTTP %ld", x.status);
	return BG_EIO;
}

/* ---- Spans of an entry, many at once (the swarm) --------------------------- */
struct peer_range {
	struct peer_xfer x;
	struct origin_sink sink;
	CURL *e;
	struct curl_slist *h;
	unsigned char *buf;
	size_t len, got;
};

static int
range_start(void *arg, const struct origin_response *resp)
{
	(void)arg;
	(void)resp;
	return 0; /* begin_body checked the answer */
}

static int
range_data(void *arg, const void *p, size_t len)
{
	struct peer_range *r = arg;

	if (len > r->len - r->got)
		return BG_EPROTO; /* more than the span */
	memcpy(r->buf + r->got, p, len);
	r->got += len;
	return 0;
}

int
peer_range_new(CURLSH *sh, const struct peer_config *pc, const char *peer, const char *key,
               const struct peer_entry *want, uint64_t first, uint64_t last, unsigned char *buf,
               int64_t t, struct peer_range **out)
{
	struct peer_range *r;
	char range[64];
	int err;

	*out = NULL;
	if (last < first || last >= want->size)
		return BG_EINVAL;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return BG_ENOMEM;
	r->x.want = want;
	r->x.key = key;
	r->x.offset = first;
	r->x.has_last = true;
	r->x.last = last;
	r->x.pc = pc;
	r->sink.on_start = range_start;
	r->sink.on_data = range_data;
	r->sink.arg = r;
	r->x.feed.sink = &r->sink;
	r->buf = buf;
	r->len = (size_t)(last - first + 1);
	if ((r->e = origin_easy_on(sh)) == NULL) {
		free(r);
		return BG_ENOMEM;
	}
	if ((err = peer_prepare_at(r->e, pc, peer, PEER_PATH_CONTENT, key, "GET", NULL, &r->h,
	                           r->x.request_auth, t != 0 ? t : (int64_t)time(NULL))) != 0) {
		curl_easy_cleanup(r->e);
		free(r);
		return err;
	}
	snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, first, last);
	curl_easy_setopt(r->e, CURLOPT_RANGE, range);
	curl_easy_setopt(r->e, CURLOPT_HEADERFUNCTION, on_peer_header);
	curl_easy_setopt(r->e, CURLOPT_HEADERDATA, &r->x);
	curl_easy_setopt(r->e, CURLOPT_WRITEFUNCTION, sink_feed_write);
	curl_easy_setopt(r->e, CURLOPT_WRITEDATA, &r->x.feed);
	*out = r;
	return 0;
}

CURL *
peer_range_easy(struct peer_range *r)
{
	return r->e;
}

int
peer_range_done(struct peer_range *r, CURLcode rc, char *why, size_t whylen)
{
	if (r->x.refused) {
		snprintf(why, whylen, "the answer (HTTP %ld) is not the span of the entry asked for",
		         r->x.status);
		return BG_EPROTO;
	}
	if (rc == CURLE_OK && r->x.feed.started && r->got == r->len)
		return 0;
	if (rc != CURLE_OK)
		snprintf(why, whylen, "%s", curl_easy_strerror(rc));
	else
		snprintf(why, whylen, "HTTP %ld, %zu of %zu bytes", r->x.status, r->got, r->len);
	return BG_EIO;
}

void
peer_range_free(struct peer_range *r, CURLM *m)
{
	if (r == NULL)
		return;
	if (m != NULL)
		curl_multi_remove_handle(m, r->e);
	curl_easy_cleanup(r->e);
	curl_slist_free_all(r->h);
	free(r->x.content_range);
	free(r->x.answer_auth);
	peer_entry_clear(&r->x.got);
	free(r);
}
