/*
 * peerpieces.c - the piece list of an entry at a peer (GET /v1/pieces):
 * the SHA-256 of each piece, against which the swarm checks every piece it
 * takes from any peer.  With a key the list is authenticated (its body's
 * digest is among the signed fields): a machine answering in the peer's
 * place cannot hand out a list that would make wrong bytes pass.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "net.h"
#include "net_int.h"

struct pieces_xfer {
	const struct peer_config *pc;
	char request_auth[PEER_AUTH_VALUE_MAX];
	long status;
	char *etag, *pieces, *signed_value;
	unsigned char *body;
	size_t len, cap;
	bool too_long;
};

static void
reset_fields(struct pieces_xfer *x)
{
	free(x->etag);
	free(x->pieces);
	free(x->signed_value);
	x->etag = x->pieces = x->signed_value = NULL;
	x->len = 0;
}

static size_t
on_header(char *buf, size_t size, size_t nitems, void *arg)
{
	struct pieces_xfer *x = arg;
	size_t n = size * nitems, namelen, vlen;
	const char *name, *value;
	char **slot = NULL;
	long status;

	if ((status = http_status_line(buf, n)) >= 0) {
		x->status = status;
		reset_fields(x);
		return n;
	}
	if (!http_header_split(buf, n, &name, &namelen, &value, &vlen))
		return n;
	if (http_header_is(name, namelen, "ETag"))
		slot = &x->etag;
	else if (http_header_is(name, namelen, "X-Bgcopy-Pieces"))
		slot = &x->pieces;
	else if (http_header_is(name, namelen, PEER_SIGNED_HEADER))
		slot = &x->signed_value;
	if (slot == NULL)
		return n;
	free(*slot);
	/* A field sent twice is not what was signed once. */
	*slot = http_value_dup(value, vlen, STORE_VALIDATOR_MAX);
	return *slot != NULL ? n : 0;
}

static size_t
on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct pieces_xfer *x = arg;
	size_t n = size * nmemb;

	if (n > (size_t)PEER_PIECES_MAX * BG_SHA256_LEN - x->len) {
		x->too_long = true;
		return 0;
	}
	if (x->len + n > x->cap) {
		size_t cap = x->cap == 0 ? 64 * 1024 : x->cap;
		unsigned char *b;

		while (cap < x->len + n)
			cap *= 2;
		if ((b = realloc(x->body, cap)) == NULL)
			return 0;
		x->body = b;
		x->cap = cap;
	}
	memcpy(x->body + x->len, p, n);
	x->len += n;
	return n;
}

/* "from=I, count=C, known=K, size=S, final=?1" (peerd/README.md): every
 * member, in this order, as peerd writes it. */
static bool
parse_pieces(const char *v, uint64_t *from, uint64_t *count, uint64_t *known, uint64_t *psize,
             bool *final)
{
	static const char *const names[] = {"from=", "count=", "known=", "size="};
	uint64_t *out[] = {from, count, known, psize};
	const char *p = v;

	for (size_t i = 0; i < 4; i++) {
		size_t k = strlen(names[i]), d = 0;

		if (strncmp(p, names[i], k) != 0)
			return false;
		p += k;
		while (p[d] >= '0' && p[d] <= '9')
			d++;
		if (d == 0 || bg_parse_u64(p, d, INT64_MAX, out[i]) != 0)
			return false;
		p += d;
		if (strncmp(p, ", ", 2) != 0)
			return false;
		p += 2;
	}
	if (strcmp(p, "final=?1") == 0)
		*final = true;
	else if (strcmp(p, "final=?0") == 0)
		*final = false;
	else
		return false;
	return true;
}

static bool
authentic(const struct pieces_xfer *x)
{
	unsigned char d[BG_SHA256_LEN];
	char hex[BG_SHA256_HEX_LEN + 1];
	const char *f[3];

	if (x->pc->keylen == 0)
		return true;
	if (x->signed_value == NULL)
		return false;
	bg_sha256(x->body != NULL ? (const void *)x->body : (const void *)"", x->len, d);
	bg_sha256_hex(d, hex);
	f[0] = x->etag != NULL ? x->etag : "";
	f[1] = x->pieces != NULL ? x->pieces : "";
	f[2] = hex;
	return peer_auth_check_fields(x->pc->key, x->pc->keylen, x->request_auth, PEER_PATH_PIECES,
	                              (unsigned)x->status, f, 3, x->signed_value) == 0;
}

int
peer_pieces_get(CURLSH *sh, const struct peer_config *pc, const char *peer, const char *key,
                uint64_t from, const char *partial, unsigned char **digests, uint64_t *count,
                uint64_t *known,
                bool *final, unsigned char sha[BG_SHA256_LEN], char *why, size_t whylen)
{
	struct pieces_xfer x;
	struct curl_slist *h = NULL;
	uint64_t f = 0, c = 0, k = 0, ps = 0;
	char *esc, fkey[64];
	CURLcode rc;
	CURL *e;
	int err;

	memset(&x, 0, sizeof(x));
	x.pc = pc;
	*digests = NULL;
	*count = *known = 0;
	*final = false;
	if ((e = origin_easy_on(sh)) == NULL) {
		snprintf(why, whylen, "%s", bg_strerror(BG_ENOMEM));
		return BG_ENOMEM;
	}
	if ((err = peer_prepare(e, pc, peer, PEER_PATH_PIECES, key, "GET", NULL, &h,
	                        x.request_auth)) != 0) {
		snprintf(why, whylen, "%s", bg_strerror(err));
		curl_easy_cleanup(e);
		return err;
	}
	/* peer_prepare wrote PATH?url=KEY: from is appended to it. */
	{
		char *url = NULL, *u;

		curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &url);
		snprintf(fkey, sizeof(fkey), "&from=%" PRIu64, from);
		esc = url != NULL ? malloc(strlen(url) + strlen(fkey) + 1) : NULL;
		if (esc == NULL) {
			curl_slist_free_all(h);
			curl_easy_cleanup(e);
			snprintf(why, whylen, "%s", bg_strerror(BG_ENOMEM));
			return BG_ENOMEM;
		}
		u = esc;
		strcpy(u, url);
		strcat(u, fkey);
		curl_easy_setopt(e, CURLOPT_URL, u);
	}
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)PEER_LOOKUP_TIMEOUT * 2);
	rc = curl_easy_perform(e);
	curl_easy_cleanup(e);
	curl_slist_free_all(h);
	free(esc);
	err = BG_EPROTO;
	if (rc != CURLE_OK) {
		snprintf(why, whylen, "%s", x.too_long ? "the list is longer than asked"
		                                       : curl_easy_strerror(rc));
		err = x.too_long ? BG_EPROTO : BG_EIO;
	} else if (x.status == 404) {
		snprintf(why, whylen, "no piece list");
		err = BG_ENOENT;
	} else if (x.status != 200) {
		snprintf(why, whylen, "HTTP %ld", x.status);
	} else if (!authentic(&x)) {
		snprintf(why, whylen, "the answer is not signed with the peer key");
	} else if (x.pieces == NULL || !parse_pieces(x.pieces, &f, &c, &k, &ps, final) ||
	           f != from || c > PEER_PIECES_MAX || c * BG_SHA256_LEN != x.len ||
	           ps != STORE_PIECE_BYTES || f + c > k) {
		snprintf(why, whylen, "the answer does not describe a piece list");
	} else if (partial != NULL && x.etag != NULL && strcmp(x.etag, partial) == 0) {
		memset(sha, 0, BG_SHA256_LEN); /* the download in progress asked for */
		*digests = x.body;
		x.body = NULL;
		*count = c;
		*known = k;
		err = 0;
	} else if (x.etag == NULL || strlen(x.etag) != BG_SHA256_HEX_LEN + 2 || x.etag[0] != '"' ||
	           x.etag[BG_SHA256_HEX_LEN + 1] != '"') {
		snprintf(why, whylen, "the list is not of complete content");
	} else {
		char hex[BG_SHA256_HEX_LEN + 1];

		memcpy(hex, x.etag + 1, BG_SHA256_HEX_LEN);
		hex[BG_SHA256_HEX_LEN] = '\0';
		if (bg_sha256_from_hex(hex, sha) != 0) {
			snprintf(why, whylen, "the list is not of complete content");
		} else {
			*digests = x.body;
			x.body = NULL;
			*count = c;
			*known = k;
			err = 0;
		}
	}
	free(x.body);
	reset_fields(&x);
	return err;
}
