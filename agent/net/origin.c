/*
 * origin.c - the origin client: one libcurl transfer per hop, redirects
 * followed here (never by libcurl) so that every hop is checked against the
 * job's policy, and resume guarded by If-Range and checked before any byte
 * of a body is taken.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "net.h"
#include "net_int.h"

#define ORIGIN_POOLS 4 /* connection pools kept, one per TLS identity (pool_ident) */

/* Connections and TLS sessions verified under one set of flags are never
 * used for a transfer under another: libcurl's connection cache and session
 * cache know nothing of our verification callback, so each flag set (and CA
 * file, client certificate and certificate check command) gets a share of
 * its own, which keeps those caches.  A connection made with one client
 * certificate thus never carries a request with another or with none, and a
 * session the check command accepted is only resumed under that command.
 * Every request gets a fresh easy handle on its pool's share
 * (origin_easy_on). */
struct pool {
	CURLSH *share;      /* connections and TLS sessions of this flag set */
	uint32_t tls_flags; /* the certificate-related bits of the flags */
	char *ident;        /* CA file, client certificate, key, check command */
	uint64_t last_used;
	struct tls_policy policy; /* stays put: SSL_CTXs of live connections point at it */
};

struct origin {
	struct pool pools[ORIGIN_POOLS];
	uint64_t tick;
	CURLSH *peer; /* for peer.c: plain http to LAN peers, its own connections */
};

CURLSH *
origin_share_new(void)
{
	CURLSH *sh = curl_share_init();

	/* Used by one thread at a time (an origin client is per thread): no
	 * lock callbacks. */
	if (sh != NULL && (curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK ||
	                   curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
	                   curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK)) {
		curl_share_cleanup(sh);
		sh = NULL;
	}
	return sh;
}

CURL *
origin_easy_on(CURLSH *sh)
{
	CURL *e = curl_easy_init();

	if (e != NULL && curl_easy_setopt(e, CURLOPT_SHARE, sh) != CURLE_OK) {
		curl_easy_cleanup(e);
		e = NULL;
	}
	return e;
}

CURLSH *
origin_peer_share(struct origin *o)
{
	if (o->peer == NULL)
		o->peer = origin_share_new();
	return o->peer;
}

int
sink_feed_start(struct sink_feed *f, const struct origin_response *resp)
{
	int err;

	if ((err = f->sink->on_start(f->sink->arg, resp)) != 0) {
		f->err = err;
		return err;
	}
	f->started = true;
	return 0;
}

size_t
sink_feed_write(char *p, size_t size, size_t nmemb, void *arg)
{
	struct sink_feed *f = arg;
	size_t n = size * nmemb;
	int err;

	/* Nothing of a body is taken before its headers were (a redirect's or
	 * a refused answer's body): 0 stops the transfer. */
	if (f->discard)
		return n;
	if (!f->started)
		return 0;
	if ((err = f->sink->on_data(f->sink->arg, p, n)) != 0) {
		f->err = err;
		return 0;
	}
	f->bytes += n;
	return n;
}

/* What the header callback decided about a response. */
enum verdict {
	V_NONE,     /* headers not complete yet */
	V_BODY,     /* the body goes to the sink */
	V_REDIRECT, /* a redirect: the transfer was stopped after the headers */
	V_RESTART,  /* the ranged answer cannot be used: ask again from byte 0 */
	V_ERROR,    /* hr/message say why; the transfer was stopped */
	V_NEEDCRL,  /* the handshake needs CRLs that are not kept yet */
	V_NOT_MODIFIED, /* 304 to a conditional request */
};

struct hop {
	const struct origin_request *req;
	struct sink_feed feed; /* the body: started with V_BODY, err the sink's (or a stop's) */
	const char *url;
	uint64_t offset; /* Range start asked; 0 when no Range was sent */
	const char *if_range;
	const char *method; /* NULL: GET (or HEAD); else sent as CURLOPT_CUSTOMREQUEST */

	long status;
	char reason[ORIGIN_NOTE_MAX]; /* the status line's reason phrase */
	bool want_status; /* the next header line starts a response (curl's view) */
	size_t header_bytes;
	char *location;
	char *etag;
	char *last_modified;
	char *date;
	char *content_range;
	int64_t content_length;
	/* RFC 9530 digests of the response, sha-256 only. */
	bool has_repr_digest, has_content_digest;
	unsigned char repr_digest[BG_SHA256_LEN], content_digest[BG_SHA256_LEN];
	char *via;        /* the first Via: a proxy relayed the response */
	char *proxy_mark; /* "Name: value" that shows a proxy answered itself */
	bool sent_auth, sent_proxy_auth; /* credentials were given to libcurl for this hop */
	unsigned auth_rounds;            /* challenges left to libcurl (ORIGIN_AUTH_ROUNDS) */

	CURL *easy; /* the transfer, for what libcurl knows of its connection */
	enum verdict verdict;
	uint32_t hr;
	char message[512];
	char curl_error[CURL_ERROR_SIZE]; /* libcurl's own account of a failure */
	char *need_crl[TLS_MAX_CRL_URLS]; /* V_NEEDCRL: what to download (owned) */
	size_t nneed;
};

int
origin_new(struct origin **out)
{
	struct origin *o;

	if ((o = calloc(1, sizeof(*o))) == NULL)
		return BG_ENOMEM;
	*out = o;
	return 0;
}

static void
pool_clear(struct pool *p)
{
	curl_share_cleanup(p->share);
	free(p->ident);
	tls_policy_reset(&p->policy);
	memset(p, 0, sizeof(*p));
}

void
origin_free(struct origin *o)
{
	if (o == NULL)
		return;
	for (size_t i = 0; i < ORIGIN_POOLS; i++)
		pool_clear(&o->pools[i]);
	curl_share_cleanup(o->peer);
	free(o);
}

static int
ident_add(char **s, const char *v)
{
	char *n;

	/* Unit separators keep "a" + "bc" apart from "ab" + "c"; "-" is unset. */
	if (asprintf(&n, "%s%s%s\x1f", *s != NULL ? *s : "", v != NULL ? "+" : "-",
	             v != NULL ? v : "") < 0)
		return BG_ENOMEM;
	free(*s);
	*s = n;
	return 0;
}

/* What, beside the flags, tells apart the pools a hop may use: the CA file,
 * the client certificate and key the hop presents, the check command. */
static int
pool_ident(const struct origin_request *req, bool with_cert, char **out)
{
	char *s = NULL;
	int err;

	if ((err = ident_add(&s, req->ca_file)) != 0 ||
	    (err = ident_add(&s, with_cert ? req->client_cert : NULL)) != 0 ||
	    (err = ident_add(&s, with_cert ? req->client_key : NULL)) != 0)
		goto out;
	for (const char *const *a = req->cert_check_cmd; a != NULL && *a != NULL; a++)
		if ((err = ident_add(&s, *a)) != 0)
			goto out;
	*out = s;
	s = NULL; /* transferred */
out:
	free(s);
	return err;
}

/* The pool for a flag set and identity (pool_ident, taken over); the least
 * recently used one makes room when all are taken. */
static int
pool_for(struct origin *o, uint32_t flags, char *ident, struct pool **out)
{
	uint32_t tls = flags & (BG_SSL_ENABLE_CRL_CHECK | BG_SSL_IGNORE_CERT_CN_INVALID |
	                        BG_SSL_IGNORE_CERT_DATE_INVALID | BG_SSL_IGNORE_UNKNOWN_CA |
	                        BG_SSL_IGNORE_CERT_WRONG_USAGE);
	struct pool *p = NULL;

	for (size_t i = 0; i < ORIGIN_POOLS; i++) {
		struct pool *c = &o->pools[i];

		if (c->share != NULL && c->tls_flags == tls && strcmp(c->ident, ident) == 0) {
			p = c;
			break;
		}
		if (p == NULL || c->share == NULL || (p->share != NULL && c->last_used < p->last_used))
			p = c;
	}
	if (p->share == NULL || p->tls_flags != tls || strcmp(p->ident, ident) != 0) {
		pool_clear(p);
		if ((p->share = origin_share_new()) == NULL) {
			free(ident);
			return BG_ENOMEM;
		}
		p->ident = ident;
		ident = NULL; /* transferred */
		p->tls_flags = tls;
	}
	free(ident);
	p->last_used = ++o->tick;
	*out = p;
	return 0;
}

void
origin_result_clear(struct origin_result *res)
{
	if (res == NULL)
		return;
	free(res->remote_url);
	free(res->final_url);
	free(res->etag);
	free(res->last_modified);
	free(res->date);
	memset(res, 0, sizeof(*res));
}

static void
hop_free_crls(struct hop *h)
{
	for (size_t i = 0; i < h->nneed; i++)
		free(h->need_crl[i]);
	h->nneed = 0;
}

static void
hop_reset_headers(struct hop *h)
{
	free(h->location);
	free(h->etag);
	free(h->last_modified);
	free(h->date);
	free(h->content_range);
	free(h->via);
	free(h->proxy_mark);
	h->location = h->etag = h->last_modified = h->date = h->content_range = NULL;
	h->via = h->proxy_mark = NULL;
	h->content_length = -1;
	h->has_repr_digest = h->has_content_digest = false;
	h->status = 0;
	h->reason[0] = '\0';
}

static bool
is_redirect(long status, const char *location)
{
	switch (status) {
	case 301:
	case 302:
	case 303:
	case 307:
	case 308:
		return true;
	case 300:
		/* 300 Multiple Choices is a redirect only when the server picks one. */
		return location != NULL;
	default:
		return false;
	}
}

/* Job error messages go into JSON documents (UTF-8 only) and onto
 * terminals; text an origin chose (a Location, curl's account of a reply)
 * must bring neither invalid UTF-8 nor control sequences there.  Anything
 * but printable ASCII becomes '?'. */
static void
printable(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7E)
			*s = '?';
}

static void __attribute__((format(printf, 3, 4)))
hop_fail(struct hop *h, uint32_t hr, const char *fmt, ...)
{
	va_list ap;

	h->verdict = V_ERROR;
	h->hr = hr;
	va_start(ap, fmt);
	vsnprintf(h->message, sizeof(h->message), fmt, ap);
	va_end(ap);
	printable(h->message);
}

/* Whether the validator of a 206 matches the one the If-Range carried.  A
 * server that ignores If-Range would otherwise splice two versions. */
static bool
validator_matches(const struct hop *h)
{
	const char *v = h->if_range;

	if (v == NULL)
		return true;
	if (v[0] == '"')
		return h->etag != NULL && strcmp(h->etag, v) == 0;
	return h->last_modified != NULL && strcmp(h->last_modified, v) == 0;
}

/* Whether req names a proxy of its own (not "none", not the environment's). */
static bool
own_proxy(const struct origin_request *req)
{
	return req->proxy != NULL && strcmp(req->proxy, "none") != 0;
}

/* "host:port" of the proxy a transfer went through: the job's, or else the
 * address libcurl is connected to (a proxy from the environment). */
static void
proxy_name(const struct hop *h, char *buf, size_t len)
{
	char *ip = NULL;
	long port = 0;

	if (own_proxy(h->req) && url_proxy_address(h->req->proxy, buf, len) == 0)
		return;
	if (curl_easy_getinfo(h->easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != NULL &&
	    ip[0] != '\0' && curl_easy_getinfo(h->easy, CURLINFO_PRIMARY_PORT, &port) == CURLE_OK)
		snprintf(buf, len, strchr(ip, ':') != NULL ? "[%s]:%ld" : "%s:%ld", ip, port);
	else
		snprintf(buf, len, "(address unknown)");
}

/* An HTTP error status as a job error.  Through a proxy, the message says
 * whether the proxy answered itself (a 407, RFC 9110 15.5.8, or a marker
 * such as squid's X-Squid-Error) or relayed the origin's answer (Via,
 * RFC 9110 7.6.3): a 403 means something else in each case. */
static void
fail_http_status(struct hop *h)
{
	const char *reason = h->reason[0] != '\0' ? h->reason : http_reason(h->status);
	char proxy[ORIGIN_NOTE_MAX];

	if (h->proxy_mark != NULL || h->status == 407) {
		proxy_name(h, proxy, sizeof(proxy));
		hop_fail(h, hr_from_http(h->status), "proxy %s answered for %s: %ld %s (%s)", proxy,
		         h->url, h->status, reason,
		         h->proxy_mark != NULL ? h->proxy_mark : "a 407 comes from a proxy");
	} else if (h->via != NULL) {
		hop_fail(h, hr_from_http(h->status), "HTTP %ld %s from %s, relayed by a proxy (Via: %s)",
		         h->status, reason, h->url, h->via);
	} else {
		hop_fail(h, hr_from_http(h->status), "HTTP %ld from %s", h->status, h->url);
	}
}

/* Called once the headers of a final (non-1xx) response are complete. */
static void
decide(struct hop *h)
{
	struct origin_response resp;
	struct http_content_range cr = {0, 0, -1};
	int err;

	if (is_redirect(h->status, h->location)) {
		if (h->location == NULL || h->location[0] == '\0')
			hop_fail(h, hr_from_http(h->status), "HTTP %ld without a Location header",
			         h->status);
		else
			h->verdict = V_REDIRECT;
		return;
	}
	/* RFC 9110 15.4.5: the copy the conditions named is current.  Only
	 * an answer to conditions we sent; an unasked 304 is an error below. */
	if (h->status == 304 && h->offset == 0 &&
	    (h->req->if_none_match != NULL || h->req->if_modified_since != NULL)) {
		h->verdict = V_NOT_MODIFIED;
		return;
	}
	if (h->status == 416 && h->offset > 0) {
		h->verdict = V_RESTART;
		return;
	}
	if (h->status == 206) {
		if (h->offset == 0) {
			hop_fail(h, HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE,
			         "206 answer to a request without Range (Content-Range: %s)",
			         h->content_range ? h->content_range : "none");
			return;
		}
		/* Not the range asked for (or no single range at all): nothing
		 * of it is taken; the file is asked for again from byte 0. */
		if (h->content_range == NULL ||
		    http_content_range(h->content_range, strlen(h->content_range), 206, &cr) != 0 ||
		    cr.first != h->offset) {
			h->verdict = V_RESTART;
			return;
		}
		if (!validator_matches(h)) {
			h->verdict = V_RESTART;
			return;
		}
	} else if (h->status != 200) {
		fail_http_status(h);
		return;
	}
	memset(&resp, 0, sizeof(resp));
	resp.status = h->status;
	resp.final_url = h->url;
	/* A 200 to a ranged request is the whole (possibly new) file: the
	 * sink starts over instead of appending it. */
	resp.start = h->status == 206 ? h->offset : 0;
	resp.total = h->status == 200 ? h->content_length : cr.total;
	resp.etag = h->etag;
	resp.last_modified = h->last_modified;
	resp.date = h->date;
	/* RFC 9530: Repr-Digest is of the whole representation, whatever part
	 * of it the message carries; Content-Digest is of this message's
	 * content, which is the whole representation only in a 200. */
	if (h->has_repr_digest) {
		resp.has_digest = true;
		memcpy(resp.digest, h->repr_digest, BG_SHA256_LEN);
	} else if (h->has_content_digest && h->status == 200) {
		resp.has_digest = true;
		memcpy(resp.digest, h->content_digest, BG_SHA256_LEN);
	}
	if ((err = sink_feed_start(&h->feed, &resp)) != 0) {
		hop_fail(h, hr_from_bg(err), "%s", bg_strerror(err));
		return;
	}
	h->verdict = V_BODY;
}

static void
take_header(char **slot, const char *p, size_t n, size_t max)
{
	/* The first occurrence wins; a repeated Location must not swap the
	 * target after the first one was seen. */
	if (*slot == NULL)
		*slot = http_value_dup(p, n, max);
}

/* A Content-Length value: digits, or a list of the same digits ("42, 42",
 * which RFC 9110 8.6 lets a recipient take as one). */
static bool
content_length_value(const char *p, size_t n, uint64_t *out)
{
	bool any = false;
	uint64_t v = 0, first = 0;

	while (n > 0) {
		const char *comma = memchr(p, ',', n);
		size_t len = comma != NULL ? (size_t)(comma - p) : n;

		if (!http_value_u64(p, len, &v) || v > INT64_MAX || (any && v != first))
			return false;
		first = v;
		any = true;
		if (comma == NULL)
			break;
		n -= len + 1;
		p = comma + 1;
	}
	*out = first;
	return any;
}

/* A header's value cut to ORIGIN_NOTE_MAX bytes, for a message. */
static char *
note_dup(const char *name, const char *p, size_t n)
{
	char *v = http_value_dup(p, n, ORIGIN_HEADER_MAX), *s = NULL;

	if (v != NULL && asprintf(&s, "%s%s%.*s", name != NULL ? name : "", name != NULL ? ": " : "",
	                          ORIGIN_NOTE_MAX - 1, v) < 0)
		s = NULL;
	free(v);
	if (s != NULL && strlen(s) >= ORIGIN_NOTE_MAX)
		s[ORIGIN_NOTE_MAX - 1] = '\0';
	return s;
}

/* Whether a header shows that a proxy wrote the response itself rather than
 * relaying the origin's: squid marks its error pages with X-Squid-Error;
 * tinyproxy's carry its own Server and no Via (a relayed answer keeps the
 * origin's Server); Proxy-Authenticate is a proxy's challenge (RFC 9110
 * 11.7.1). */
static bool
proxy_marker(const char *name, size_t namelen, const char *value, size_t vlen)
{
	static const char *const products[] = {"squid", "tinyproxy"};

	if (http_header_is(name, namelen, "X-Squid-Error") ||
	    http_header_is(name, namelen, "Proxy-Authenticate"))
		return true;
	if (!http_header_is(name, namelen, "Server"))
		return false;
	while (vlen > 0 && (*value == ' ' || *value == '\t'))
		value++, vlen--;
	for (size_t i = 0; i < sizeof(products) / sizeof(products[0]); i++) {
		size_t k = strlen(products[i]);

		if (vlen > k && strncasecmp(value, products[i], k) == 0 && value[k] == '/')
			return true;
	}
	return false;
}

static size_t
on_header(char *buf, size_t size, size_t nitems, void *arg)
{
	struct hop *h = arg;
	size_t n = size * nitems, namelen, vlen;
	const char *name, *value;
	long status;
	uint64_t cl;

	h->header_bytes += n;
	if (h->header_bytes > ORIGIN_HEADER_MAX) {
		hop_fail(h, HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE,
		         "response headers larger than %d bytes", ORIGIN_HEADER_MAX);
		return 0;
	}
	/* Only the first line of a response is its status line, as for
	 * libcurl: a header line that merely starts with "HTTP/" (a 404
	 * carrying "HTTP/1.1 200 OK: x") must not change the status. */
	if (h->want_status) {
		h->want_status = false;
		if ((status = http_status_line(buf, n)) >= 0) {
			hop_reset_headers(h);
			h->status = status;
			h->feed.discard = false;
			http_status_reason(buf, n, h->reason, sizeof(h->reason));
			return n;
		}
	}
	if (n <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
		h->want_status = true;
		if (h->status >= 100 && h->status < 200)
			return n; /* interim response: the real one follows */
		/* A challenge (RFC 9110 sections 11.6.1, 11.7.1) to credentials we
		 * gave: libcurl answers it with a new request on its own (Digest,
		 * NTLM and Negotiate need one), or ends the transfer, when this
		 * status is the answer (after the perform). */
		if (((h->status == 401 && h->sent_auth) || (h->status == 407 && h->sent_proxy_auth)) &&
		    h->auth_rounds < ORIGIN_AUTH_ROUNDS) {
			h->auth_rounds++;
			h->feed.discard = true;
			return n;
		}
		decide(h);
		return h->verdict == V_BODY || h->verdict == V_NOT_MODIFIED ? n : 0;
	}
	if (!http_header_split(buf, n, &name, &namelen, &value, &vlen))
		return n;
	/* A Location is kept whatever its length (the headers are bounded):
	 * one too long to follow is a refused redirect, not a missing one. */
	if (http_header_is(name, namelen, "Location"))
		take_header(&h->location, value, vlen, ORIGIN_HEADER_MAX);
	else if (http_header_is(name, namelen, "ETag"))
		take_header(&h->etag, value, vlen, STORE_URL_MAX);
	else if (http_header_is(name, namelen, "Last-Modified"))
		take_header(&h->last_modified, value, vlen, STORE_URL_MAX);
	else if (http_header_is(name, namelen, "Date"))
		take_header(&h->date, value, vlen, STORE_URL_MAX);
	else if (http_header_is(name, namelen, "Repr-Digest"))
		h->has_repr_digest = http_digest_sha256(value, vlen, h->repr_digest);
	else if (http_header_is(name, namelen, "Content-Digest"))
		h->has_content_digest = http_digest_sha256(value, vlen, h->content_digest);
	else if (http_header_is(name, namelen, "Content-Range"))
		take_header(&h->content_range, value, vlen, STORE_URL_MAX);
	else if (http_header_is(name, namelen, "Via") && h->via == NULL)
		h->via = note_dup(NULL, value, vlen);
	else if (proxy_marker(name, namelen, value, vlen) &&
	         (h->proxy_mark == NULL || http_header_is(name, namelen, "X-Squid-Error"))) {
		/* squid's error name says most: it wins over its Server. */
		char hname[32];

		snprintf(hname, sizeof(hname), "%.*s", namelen > 31 ? 31 : (int)namelen, name);
		free(h->proxy_mark);
		h->proxy_mark = note_dup(hname, value, vlen);
	} else if (http_header_is(name, namelen, "Content-Length")) {
		/* RFC 9112 6.3: a length that is not digits, or lengths that
		 * differ, make the framing unknowable.  libcurl 7.88 would frame
		 * "1e3" as 1 byte and take the last of two lengths. */
		if (!content_length_value(value, vlen, &cl)) {
			http_value_trim(&value, &vlen);
			hop_fail(h, HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE,
			         "%s: invalid Content-Length: %.*s", h->url, vlen > 64 ? 64 : (int)vlen,
			         value);
			return 0;
		}
		if (h->content_length >= 0 && (uint64_t)h->content_length != cl) {
			hop_fail(h, HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE,
			         "%s: conflicting Content-Length headers (%" PRId64 " and %" PRIu64 ")",
			         h->url, h->content_length, cl);
			return 0;
		}
		h->content_length = (int64_t)cl;
	}
	return n;
}

/* Whether the request's runner asked it to stop, or its deadline passed. */
static bool
origin_stopped(const struct origin_request *req)
{
	return (req->stop != NULL && *req->stop) ||
	       (req->deadline_ms > 0 && bg_mono_ms() >= req->deadline_ms);
}

/* Stops a transfer the runner was asked to stop, also while the origin
 * sends nothing (libcurl calls this about once a second then). */
static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct hop *h = arg;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return origin_stopped(h->req) ? 1 : 0;
}

static bool
sensitive_header(const char *line)
{
	static const char *const names[] = {"authorization:", "cookie:", "proxy-authorization:"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strncasecmp(line, names[i], strlen(names[i])) == 0)
			return true;
	return false;
}

/* Maps a libcurl failure that happened outside our callbacks. */
static uint32_t
hr_from_curl(CURL *easy, CURLcode rc)
{
	long vr = 0;

	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return HR_ERROR_WINHTTP_NAME_NOT_RESOLVED;
	case CURLE_COULDNT_CONNECT:
		return HR_ERROR_WINHTTP_CANNOT_CONNECT;
	case CURLE_OPERATION_TIMEDOUT:
		return HR_ERROR_WINHTTP_TIMEOUT;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return HR_ERROR_WINHTTP_CONNECTION_ERROR;
	case CURLE_PEER_FAILED_VERIFICATION:
		curl_easy_getinfo(easy, CURLINFO_SSL_VERIFYRESULT, &vr);
		switch (vr) {
		case 9:  /* X509_V_ERR_CERT_NOT_YET_VALID */
		case 10: /* X509_V_ERR_CERT_HAS_EXPIRED */
			return HR_ERROR_WINHTTP_SECURE_CERT_DATE_INVALID;
		case 2:  /* unable to get issuer certificate */
		case 18: /* self-signed leaf */
		case 19: /* self-signed in chain */
		case 20: /* unable to get local issuer */
		case 21: /* unable to verify leaf signature */
		case 27: /* certificate not trusted */
			return HR_ERROR_WINHTTP_SECURE_INVALID_CA;
		case 26: /* invalid purpose */
		case 28: /* certificate rejected */
			return HR_ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE;
		case 23:
			return HR_ERROR_WINHTTP_SECURE_CERT_REVOKED;
		case 0:
		case 1:
		case 62: /* host name mismatch: libcurl checks it after the chain */
			return HR_ERROR_WINHTTP_SECURE_CERT_CN_INVALID;
		default:
			return HR_ERROR_WINHTTP_SECURE_FAILURE;
		}
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_USE_SSL_FAILED:
		return HR_ERROR_WINHTTP_SECURE_FAILURE;
	default:
		return HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE;
	}
}

/* The status a proxy answered CONNECT with, 0 when there was none. */
static long
connect_code(CURL *easy)
{
	long code = 0;

	if (curl_easy_getinfo(easy, CURLINFO_HTTP_CONNECTCODE, &code) != CURLE_OK)
		return 0;
	return code;
}

/* Whether no_proxy (which libcurl reads when CURLOPT_NOPROXY is unset)
 * names hosts that go around the job's proxy. */
static bool
noproxy_in_env(void)
{
	const char *a = getenv("no_proxy"), *b = getenv("NO_PROXY");

	return (a != NULL && a[0] != '\0') || (b != NULL && b[0] != '\0');
}

/* What libcurl said about a failure: its error buffer names the cause
 * ("Invalid Content-Length: value", "Received HTTP/0.9 when not allowed")
 * where the code alone would say "Weird server reply". */
static const char *
curl_text(const struct hop *h, CURLcode rc)
{
	return h->curl_error[0] != '\0' ? h->curl_error : curl_easy_strerror(rc);
}

/* libcurl's CURLAUTH_* mask of ORIGIN_AUTH_* schemes (none: basic). */
static long
curl_auth(unsigned schemes)
{
	unsigned long a = 0;

	if (schemes == 0 || (schemes & ORIGIN_AUTH_BASIC))
		a |= CURLAUTH_BASIC;
	if (schemes & ORIGIN_AUTH_DIGEST)
		a |= CURLAUTH_DIGEST;
	if (schemes & ORIGIN_AUTH_NTLM)
		a |= CURLAUTH_NTLM;
	if (schemes & ORIGIN_AUTH_NEGOTIATE)
		a |= CURLAUTH_NEGOTIATE;
	return (long)a;
}

/* A server that asked for a client certificate and got none refuses the
 * handshake (TLS alert) or answers 400 or 403 (nginx says 400 "No required
 * SSL certificate was sent"): that is ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED,
 * as WinHTTP reports it to BITS.  A certificate the server then refuses is
 * its answer as it stands (an HTTP error, or a TLS failure). */
static void
cert_needed(struct hop *h, const struct tls_policy *tp, bool with_cert, CURLcode rc)
{
	char was[sizeof(h->message)];

	if (!tp->cert_asked || with_cert || tp->fatal != 0 || h->verdict != V_ERROR ||
	    h->feed.err != 0)
		return;
	if (!(h->status == 400 || h->status == 403 || (h->status == 0 && rc != CURLE_OK)))
		return;
	memcpy(was, h->message, sizeof(was));
	hop_fail(h, HR_ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED,
	         "the server asked for a client certificate and the job has none (%s)", was);
}

/* A "pkcs11:" URI as the certificate or key: OpenSSL's pkcs11 engine
 * (libengine-pkcs11-openssl) loads it from the token. */
static void
set_pkcs11(CURL *e, const char *cert, const char *key)
{
	curl_easy_setopt(e, CURLOPT_SSLENGINE, "pkcs11");
	if (client_cert_is_pkcs11(cert))
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "ENG");
	if (client_cert_is_pkcs11(key))
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "ENG");
}

/* Runs one request of the chain. */
static int
run_hop(struct origin *o, struct hop *h, bool send_sensitive)
{
	const struct origin_request *req = h->req;
	struct curl_slist *list = NULL, *tmp;
	char range[48], ifr[STORE_VALIDATOR_MAX + 16];
	struct tls_policy *tp;
	struct pool *pool;
	CURLcode rc;
	CURL *e;
	bool want_digest = true;
	/* The client certificate goes where credentials go: to the file's own
	 * scheme, host and port (see README.md). */
	bool with_cert = send_sensitive && req->client_cert != NULL;
	const char *key = req->client_key != NULL ? req->client_key : req->client_cert;
	char *ident = NULL, authority[300];
	int err;

	if (with_cert && !client_cert_is_pkcs11(key)) {
		char why[384];

		/* Checked again at each use: the mode may have changed since
		 * set-client-cert. */
		if (client_key_check(key, why, sizeof(why)) != 0) {
			hop_fail(h, HR_ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY, "%s: %s", h->url, why);
			return 0;
		}
	}
	if ((err = pool_ident(req, with_cert, &ident)) != 0 ||
	    (err = pool_for(o, req->security_flags, ident, &pool)) != 0)
		return err;
	if ((e = origin_easy_on(pool->share)) == NULL)
		return BG_ENOMEM;
	tp = &pool->policy;
	tls_policy_reset(tp);
	tp->flags = req->security_flags;
	tp->crl_dir = req->crl_dir;
	tp->check_cmd = req->cert_check_cmd;
	tp->check_timeout_ms = certcheck_timeout_ms();
	if ((err = url_host(h->url, tp->host, sizeof(tp->host))) != 0 ||
	    (err = url_authority(h->url, authority, sizeof(authority))) != 0)
		goto out;
	/* url_authority always names the port (the scheme's default if need be). */
	tp->port = (unsigned)strtoul(strrchr(authority, ':') + 1, NULL, 10);

	/* Everything is set anew for each hop, on a new handle; the pool's
	 * share keeps the connections, TLS sessions and DNS answers. */
	for (const char *const *p = req->headers; p != NULL && *p != NULL; p++) {
		if (!send_sensitive && sensitive_header(*p))
			continue;
		if (strncasecmp(*p, "Want-Repr-Digest:", 17) == 0)
			want_digest = false; /* the job's own preference */
		if ((tmp = curl_slist_append(list, *p)) == NULL) {
			err = BG_ENOMEM;
			goto out;
		}
		list = tmp;
	}
	/* RFC 9530 section 4: origins that can, say what the representation's
	 * SHA-256 is; the finished file is checked against it. */
	if (want_digest) {
		if ((tmp = curl_slist_append(list, "Want-Repr-Digest: sha-256=10")) == NULL) {
			err = BG_ENOMEM;
			goto out;
		}
		list = tmp;
	}
	if (h->offset == 0) {
		const char *cond[2][2] = {{"If-None-Match", req->if_none_match},
		                          {"If-Modified-Since", req->if_modified_since}};

		for (size_t i = 0; i < 2; i++) {
			char line[STORE_VALIDATOR_MAX + 32];

			if (cond[i][1] == NULL)
				continue;
			snprintf(line, sizeof(line), "%s: %s", cond[i][0], cond[i][1]);
			if ((tmp = curl_slist_append(list, line)) == NULL) {
				err = BG_ENOMEM;
				goto out;
			}
			list = tmp;
		}
	}
	if (req->head)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	if (h->offset > 0) {
		snprintf(range, sizeof(range), "%" PRIu64 "-", h->offset);
		snprintf(ifr, sizeof(ifr), "If-Range: %s", h->if_range);
		if ((tmp = curl_slist_append(list, ifr)) == NULL) {
			err = BG_ENOMEM;
			goto out;
		}
		list = tmp;
		curl_easy_setopt(e, CURLOPT_RANGE, range);
	}
	/* No Accept-Encoding is sent and none is decoded: the bytes stored are
	 * the bytes the origin sent. */
	curl_easy_setopt(e, CURLOPT_URL, h->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "bgcopy/" BGCOPY_VERSION);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
	/* Through a proxy, libcurl hands the answer to its CONNECT to the
	 * header callback too: a proxy's "200 Connection established" would
	 * start the sink (a resume would restart from byte 0) and its 3xx would
	 * be followed as if the https origin had sent it. */
	curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_feed_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &h->feed);
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)ORIGIN_CONNECT_TIMEOUT);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
	                 (long)(req->stall_seconds > 0 && req->stall_seconds < ORIGIN_LOW_SPEED_TIME
	                            ? req->stall_seconds
	                            : ORIGIN_LOW_SPEED_TIME));
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->curl_error);
	if (req->stop != NULL || req->deadline_ms > 0) {
		curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(e, CURLOPT_XFERINFODATA, h);
	}
	/* The chain and the host name are checked by the policy's callback
	 * (tls.c), which fails the handshake on any fault the flags do not
	 * ignore; libcurl's own host check would not let 0x0002 work. */
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, tls_ssl_ctx_cb);
	curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, tp);
	if (req->security_flags & BG_SSL_ENABLE_CRL_CHECK) {
		/* BITS checks revocation before each file: a new handshake, never
		 * a resumed session, whose verification would be skipped. */
		curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(e, CURLOPT_SSL_SESSIONID_CACHE, 0L);
	}
	if (req->ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
	/* The origin's TLS only: a proxy's own TLS (CURLOPT_PROXY_SSLCERT)
	 * never gets it. */
	if (with_cert) {
		curl_easy_setopt(e, CURLOPT_SSLCERT, req->client_cert);
		curl_easy_setopt(e, CURLOPT_SSLKEY, key);
		if (client_cert_is_pkcs11(req->client_cert) || client_cert_is_pkcs11(key))
			set_pkcs11(e, req->client_cert, key);
	}
	/* "none": no proxy, whatever the environment says (an empty string
	 * turns libcurl's proxy use off). */
	if (req->proxy != NULL)
		curl_easy_setopt(e, CURLOPT_PROXY, strcmp(req->proxy, "none") == 0 ? "" : req->proxy);
	/* RFC 9110 section 11: the server's credentials, only to the origin
	 * they were set for (each hop is a new handle, and libcurl's
	 * CURLOPT_UNRESTRICTED_AUTH stays off).  Section 11.7: the proxy's go
	 * to the proxy alone, which consumes Proxy-Authorization. */
	if (req->server_auth.user != NULL && send_sensitive) {
		curl_easy_setopt(e, CURLOPT_HTTPAUTH, curl_auth(req->server_auth.schemes));
		curl_easy_setopt(e, CURLOPT_USERNAME, req->server_auth.user);
		curl_easy_setopt(e, CURLOPT_PASSWORD,
		                 req->server_auth.password ? req->server_auth.password : "");
		h->sent_auth = true;
	}
	if (req->proxy_auth.user != NULL && !(req->proxy != NULL && strcmp(req->proxy, "none") == 0)) {
		curl_easy_setopt(e, CURLOPT_PROXYAUTH, curl_auth(req->proxy_auth.schemes));
		curl_easy_setopt(e, CURLOPT_PROXYUSERNAME, req->proxy_auth.user);
		curl_easy_setopt(e, CURLOPT_PROXYPASSWORD,
		                 req->proxy_auth.password ? req->proxy_auth.password : "");
		h->sent_proxy_auth = true;
	}
	/* Another method than GET (the job's, SetHttpMethod) is sent as it is
	 * on every hop: see origin_fetch for the redirects that change it. */
	if (h->method != NULL && !req->head)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, h->method);

	h->want_status = true;
	h->easy = e;
	rc = curl_easy_perform(e);
	if (rc == CURLE_ABORTED_BY_CALLBACK && origin_stopped(req) && h->feed.err == 0) {
		/* Stopped from outside (on_progress): like a sink that stops. */
		h->feed.err = BG_ECANCELED;
		hop_fail(h, HR_ERROR_WINHTTP_CONNECTION_ERROR, "%s: stopped", h->url);
	} else if (h->verdict == V_BODY && h->feed.err != 0) {
		/* The sink stopped the body (sink_feed_write). */
		hop_fail(h, hr_from_bg(h->feed.err), "%s", bg_strerror(h->feed.err));
	} else if (h->verdict == V_BODY && rc != CURLE_OK) {
		/* The body broke off: transient, resumable from what was kept. */
		hop_fail(h, hr_from_curl(e, rc), "transfer from %s failed after %" PRIu64 " bytes: %s",
		         h->url, h->feed.bytes, curl_text(h, rc));
	} else if (h->verdict == V_NONE && rc != CURLE_OK && (tp->faults & TLS_FAULT_NEEDCRL)) {
		h->verdict = V_NEEDCRL;
		snprintf(h->message, sizeof(h->message), "%s", tp->message);
		for (size_t i = 0; i < tp->nneed; i++) {
			h->need_crl[i] = tp->need_crl[i];
			tp->need_crl[i] = NULL;
		}
		h->nneed = tp->nneed;
		tp->nneed = 0;
	} else if (h->verdict == V_NONE && rc != CURLE_OK && tp->fatal != 0) {
		hop_fail(h, tls_policy_hr(tp), "%s: %s", h->url, tp->message);
	} else if (h->verdict == V_NONE && rc == CURLE_OUT_OF_MEMORY && h->curl_error[0] == '\0') {
		/* What libcurl 7.88 says, and all it says, about a status or
		 * header line longer than it accepts. */
		hop_fail(h, HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE,
		         "%s: a response %s line longer than %d bytes", h->url,
		         h->status != 0 ? "header" : "status", CURL_MAX_HTTP_HEADER);
	} else if (h->verdict == V_NONE && rc != CURLE_OK && connect_code(e) >= 300) {
		/* The proxy refused the tunnel (RFC 9110 9.3.6: any status but
		 * 2xx).  libcurl says CURLE_RECV_ERROR; the status is the
		 * proxy's, with an origin's fatal/transient rule. */
		char proxy[ORIGIN_NOTE_MAX], target[ORIGIN_NOTE_MAX];
		long code = connect_code(e);

		proxy_name(h, proxy, sizeof(proxy));
		if (url_authority(h->url, target, sizeof(target)) != 0)
			snprintf(target, sizeof(target), "%s", h->url);
		hop_fail(h, hr_from_http(code), "proxy %s refused CONNECT to %s: %ld %s", proxy, target,
		         code, http_reason(code));
	} else if (h->verdict == V_NONE && rc == CURLE_COULDNT_CONNECT && own_proxy(req) &&
	           !noproxy_in_env()) {
		/* libcurl connects to the job's proxy first, and to nothing
		 * else, unless no_proxy sends the host around it. */
		char proxy[ORIGIN_NOTE_MAX];

		proxy_name(h, proxy, sizeof(proxy));
		hop_fail(h, hr_from_curl(e, rc), "proxy %s unreachable for %s: %s", proxy, h->url,
		         curl_text(h, rc));
	} else if (h->verdict == V_NONE && rc == CURLE_SSL_CERTPROBLEM && with_cert) {
		hop_fail(h, HR_ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY,
		         "%s: the client certificate or its key cannot be used: %s", h->url,
		         curl_text(h, rc));
	} else if (h->verdict == V_NONE && rc != CURLE_OK) {
		hop_fail(h, hr_from_curl(e, rc), "%s: %s", h->url, curl_text(h, rc));
	} else if (h->verdict == V_NONE && h->feed.discard) {
		/* The challenge was the answer: libcurl had nothing more to send. */
		h->feed.discard = false;
		fail_http_status(h);
	} else if (h->verdict == V_NONE) {
		hop_fail(h, HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE, "%s: no usable response", h->url);
	}
	cert_needed(h, tp, with_cert, rc);
out:
	curl_easy_cleanup(e);
	h->easy = NULL;
	curl_slist_free_all(list);
	return err;
}

static void __attribute__((format(printf, 3, 4)))
result_fail(struct origin_result *res, uint32_t hr, const char *fmt, ...)
{
	va_list ap;

	res->hr = hr;
	va_start(ap, fmt);
	vsnprintf(res->message, sizeof(res->message), fmt, ap);
	va_end(ap);
	printable(res->message);
}

/* The method of the request that follows a redirect, as user agents do
 * (RFC 9110 section 15.4): 303 turns any method but HEAD into GET, 301
 * and 302 turn POST into GET (15.4.2, 15.4.3 note it as common practice),
 * 307 and 308 keep it (15.4.8, 15.4.9).  NULL is GET. */
static const char *
redirected_method(const char *method, long status)
{
	if (method == NULL)
		return NULL;
	if (status == 303 && strcmp(method, "HEAD") != 0)
		return NULL;
	if ((status == 301 || status == 302) && strcmp(method, "POST") == 0)
		return NULL;
	return method;
}

int
origin_fetch(struct origin *o, const struct origin_request *req, const struct origin_sink *sink,
             struct origin_result *res)
{
	char *visited[ORIGIN_MAX_HOPS + 2] = {NULL};
	size_t nvisited = 0;
	char *url = NULL, *target = NULL;
	uint64_t offset = req->if_range != NULL ? req->offset : 0;
	const char *if_range = req->if_range;
	uint32_t policy = req->security_flags & BG_HTTP_REDIRECT_POLICY_MASK;
	unsigned restarts = 0;
	bool crls_fetched = false;
	const char *method = req->method != NULL && strcmp(req->method, "GET") != 0 ? req->method : NULL;
	long redirect_status = 0;
	int err = 0;

	memset(res, 0, sizeof(*res));
	if ((url = strdup(req->url)) == NULL)
		return BG_ENOMEM;
	for (;;) {
		struct hop h;
		bool https_from, https_to;

		memset(&h, 0, sizeof(h));
		h.req = req;
		h.feed.sink = sink;
		h.url = url;
		h.offset = offset;
		h.if_range = offset > 0 ? if_range : NULL;
		h.method = method;
		h.content_length = -1;
		err = run_hop(o, &h, req->headers_for == NULL || url_same_origin(url, req->headers_for));
		res->status = h.status;
		if (err != 0) {
			hop_reset_headers(&h);
			goto out;
		}
		if (h.verdict == V_BODY) {
			res->hr = HR_S_OK;
			res->final_url = url;
			url = NULL;
			hop_reset_headers(&h);
			goto out;
		}
		if (h.verdict == V_NOT_MODIFIED) {
			res->hr = HR_S_OK;
			res->not_modified = true;
			res->final_url = url;
			url = NULL;
			res->etag = h.etag;
			res->last_modified = h.last_modified;
			res->date = h.date;
			h.etag = h.last_modified = h.date = NULL; /* transferred */
			hop_reset_headers(&h);
			goto out;
		}
		if (h.verdict == V_ERROR) {
			res->hr = h.hr;
			res->local_err = h.feed.err;
			memcpy(res->message, h.message, sizeof(res->message));
			hop_reset_headers(&h);
			goto out;
		}
		if (h.verdict == V_NEEDCRL) {
			char why[512] = "";

			hop_reset_headers(&h);
			if (crls_fetched) {
				hop_free_crls(&h);
				result_fail(res, HR_ERROR_WINHTTP_SECURE_CERT_REV_FAILED, "%s", h.message);
				goto out;
			}
			/* Download what the handshake asked for, outside any libcurl
			 * callback, then shake hands again: the CRLs are kept now. */
			for (size_t i = 0; i < h.nneed; i++) {
				char e1[384];

				if (crl_fetch(req->crl_dir, h.need_crl[i], req->ca_file, e1, sizeof(e1)) != 0)
					snprintf(why, sizeof(why), "%s", e1);
			}
			hop_free_crls(&h);
			crls_fetched = true;
			if (why[0] != '\0') {
				result_fail(res, HR_ERROR_WINHTTP_SECURE_CERT_REV_FAILED,
				            "%s: CRL not obtainable: %s", url, why);
				goto out;
			}
			continue;
		}
		if (h.verdict == V_RESTART) {
			hop_reset_headers(&h);
			if (++restarts > ORIGIN_MAX_RESTARTS) {
				result_fail(res, HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE,
				            "%s keeps changing while it is downloaded", url);
				goto out;
			}
			/* The file changed (or the range is gone): start over from byte
			 * 0 at the same URL, never splicing two versions. */
			offset = 0;
			if_range = NULL;
			continue;
		}

		/* V_REDIRECT (its status is gone with the headers below) */
		redirect_status = h.status;
		err = url_resolve(url, h.location, &target);
		if (policy == BG_HTTP_REDIRECT_POLICY_DISALLOW) {
			result_fail(res, hr_from_redirect(h.status),
			            "HTTP %ld redirect from %s to %s refused by policy (DISALLOW)",
			            h.status, url, err == 0 ? target : h.location);
			if (err == 0) {
				res->remote_url = target;
				target = NULL;
			}
			err = 0;
			hop_reset_headers(&h);
			goto out;
		}
		if (err != 0) {
			result_fail(res, HR_ERROR_WINHTTP_REDIRECT_FAILED,
			            "redirect from %s to an unusable Location (%.200s)", url, h.location);
			err = 0;
			hop_reset_headers(&h);
			goto out;
		}
		hop_reset_headers(&h);
		if (!url_scheme_ok(target, &https_to)) {
			result_fail(res, HR_ERROR_WINHTTP_REDIRECT_FAILED,
			            "redirect to %.300s refused: only http and https are followed", target);
			goto out;
		}
		url_scheme_ok(url, &https_from);
		if (https_from && !https_to &&
		    !(req->security_flags & BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP)) {
			result_fail(res, HR_ERROR_WINHTTP_REDIRECT_FAILED,
			            "redirect from %s to %.300s refused: https to http needs "
			            "allow-https-to-http (0x0800)",
			            url, target);
			goto out;
		}
		if (nvisited >= ORIGIN_MAX_HOPS) {
			result_fail(res, HR_ERROR_WINHTTP_REDIRECT_FAILED,
			            "more than %d redirects from %s", ORIGIN_MAX_HOPS, req->url);
			goto out;
		}
		visited[nvisited++] = url;
		url = NULL;
		for (size_t i = 0; i < nvisited; i++) {
			if (strcmp(visited[i], target) == 0) {
				result_fail(res, HR_ERROR_WINHTTP_REDIRECT_FAILED,
				            "redirect loop: %.300s was already visited", target);
				goto out;
			}
		}
		url = target;
		target = NULL;
		crls_fetched = false;
		method = redirected_method(method, redirect_status);
	}
out:
	for (size_t i = 0; i < nvisited; i++)
		free(visited[i]);
	free(url);
	free(target);
	return err;
}
