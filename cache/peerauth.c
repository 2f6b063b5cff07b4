/* peerauth.c - HMAC-SHA256 request signatures of the peer protocol. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "cache.h"

int
peer_key_load(const char *path, unsigned char *key, size_t *keylen)
{
	unsigned char buf[PEER_KEY_MAX + 2];
	size_t n = 0;
	ssize_t r;
	struct stat sb;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return bg_err_from_errno(errno);
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) ||
	    (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		close(fd);
		return BG_EUNSAFE;
	}
	while (n < sizeof(buf) && (r = read(fd, buf + n, sizeof(buf) - n)) != 0) {
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			return bg_err_from_errno(e);
		}
		n += (size_t)r;
	}
	close(fd);
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n < PEER_KEY_MIN || n > PEER_KEY_MAX) {
		OPENSSL_cleanse(buf, sizeof(buf));
		return BG_EINVAL;
	}
	memcpy(key, buf, n);
	*keylen = n;
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

/* nonce NULL: the first form, without one. */
static int
mac(const unsigned char *key, size_t keylen, const char *method, const char *path,
    const char *url, int64_t t, const char *nonce, unsigned char out[BG_SHA256_LEN])
{
	char ts[32 + PEER_AUTH_NONCE_LEN + 1];
	unsigned int len = 0;
	int ok;

	if (nonce != NULL)
		snprintf(ts, sizeof(ts), "%" PRId64 "\n%s", t, nonce);
	else
		snprintf(ts, sizeof(ts), "%" PRId64, t);
	size_t mlen = strlen(method), plen = strlen(path), ulen = strlen(url), tlen = strlen(ts);
	size_t total = mlen + plen + ulen + tlen + 3;
	unsigned char *msg = malloc(total);

	if (msg == NULL)
		return BG_ENOMEM;
	memcpy(msg, method, mlen);
	msg[mlen] = '\n';
	memcpy(msg + mlen + 1, path, plen);
	msg[mlen + 1 + plen] = '\n';
	memcpy(msg + mlen + plen + 2, url, ulen);
	msg[mlen + plen + 2 + ulen] = '\n';
	memcpy(msg + mlen + plen + ulen + 3, ts, tlen);
	ok = HMAC(EVP_sha256(), key, (int)keylen, msg, total, out, &len) != NULL &&
	     len == BG_SHA256_LEN;
	free(msg);
	return ok ? 0 : BG_ENOMEM;
}

int
peer_auth_sign(const unsigned char *key, size_t keylen, const char *method, const char *path,
               const char *url, int64_t now, char *out, size_t outlen)
{
	unsigned char sig[BG_SHA256_LEN], rnd[PEER_AUTH_NONCE_LEN / 2];
	char hex[BG_SHA256_HEX_LEN + 1], nonce[PEER_AUTH_NONCE_LEN + 1];
	int n, err;

	/* Nodes asking one peer for one URL within the same second would
	 * otherwise send the same signature, which it takes only once. */
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return BG_EIO;
	bg_hex(rnd, sizeof(rnd), nonce);
	if ((err = mac(key, keylen, method, path, url, now, nonce, sig)) != 0)
		return err;
	bg_sha256_hex(sig, hex);
	n = snprintf(out, outlen, "t=%" PRId64 ",n=%s,sig=%s", now, nonce, hex);
	return n < 0 || (size_t)n >= outlen ? BG_ELIMIT : 0;
}

int
peer_auth_check(const unsigned char *key, size_t keylen, const char *method, const char *path,
                const char *url, const char *value, int64_t now, unsigned char sig[BG_SHA256_LEN])
{
	unsigned char want[BG_SHA256_LEN], got[BG_SHA256_LEN];
	char nonce[PEER_AUTH_NONCE_LEN + 1];
	bool has_nonce = false;
	const char *end;
	int64_t t;

	if (value == NULL || strlen(value) > PEER_AUTH_VALUE_MAX || strncmp(value, "t=", 2) != 0)
		return BG_EACCES;
	/* "t=" decimal seconds (a strict number: no space, no '+'), then
	 * ",n=" 16 lowercase hex digits (the nonce; absent in the first
	 * form, still accepted), then ",sig=" */
	end = value + 2 + strcspn(value + 2, ",");
	if (bg_parse_i64(value + 2, (size_t)(end - (value + 2)), INT64_MIN, INT64_MAX, &t) != 0)
		return BG_EACCES;
	if (strncmp(end, ",n=", 3) == 0) {
		if (!bg_is_lower_hex(end + 3, PEER_AUTH_NONCE_LEN))
			return BG_EACCES;
		memcpy(nonce, end + 3, PEER_AUTH_NONCE_LEN);
		nonce[PEER_AUTH_NONCE_LEN] = '\0';
		has_nonce = true;
		end += 3 + PEER_AUTH_NONCE_LEN;
	}
	if (strncmp(end, ",sig=", 5) != 0)
		return BG_EACCES;
	if (bg_sha256_from_hex(end + 5, got) != 0)
		return BG_EACCES;
	if (t < now - PEER_AUTH_WINDOW || t > now + PEER_AUTH_WINDOW)
		return BG_EACCES;
	if (mac(key, keylen, method, path, url, (int64_t)t, has_nonce ? nonce : NULL, want) != 0)
		return BG_EACCES;
	if (CRYPTO_memcmp(want, got, BG_SHA256_LEN) != 0)
		return BG_EACCES;
	memcpy(sig, got, BG_SHA256_LEN);
	return 0;
}

/* ---- Answers --------------------------------------------------------------- */

#define ANSWER_PARTS 6

static int
answer_mac(const unsigned char *key, size_t keylen, const char *request_value,
           const char *sha_hex, uint64_t size, const char *origin_etag,
           const char *last_modified, unsigned char out[BG_SHA256_LEN])
{
	char sz[32];
	const char *parts[ANSWER_PARTS] = { "answer", request_value, sha_hex, sz,
		                            origin_etag != NULL ? origin_etag : "",
		                            last_modified != NULL ? last_modified : "" };
	size_t total = 0, off = 0;
	unsigned char *msg;
	unsigned int len = 0;
	int ok;

	snprintf(sz, sizeof(sz), "%" PRIu64, size);
	for (int i = 0; i < ANSWER_PARTS; i++)
		total += strlen(parts[i]) + 1;
	if ((msg = malloc(total)) == NULL)
		return BG_ENOMEM;
	for (int i = 0; i < ANSWER_PARTS; i++) {
		size_t n = strlen(parts[i]);

		memcpy(msg + off, parts[i], n);
		off += n;
		msg[off++] = '\n';
	}
	ok = HMAC(EVP_sha256(), key, (int)keylen, msg, total, out, &len) != NULL &&
	     len == BG_SHA256_LEN;
	free(msg);
	return ok ? 0 : BG_ENOMEM;
}

int
peer_auth_sign_answer(const unsigned char *key, size_t keylen, const char *request_value,
                      const char *sha_hex, uint64_t size, const char *origin_etag,
                      const char *last_modified, char *out, size_t outlen)
{
	unsigned char sig[BG_SHA256_LEN];
	char hex[BG_SHA256_HEX_LEN + 1];
	int n, err;

	if (request_value == NULL || sha_hex == NULL)
		return BG_EINVAL;
	if ((err = answer_mac(key, keylen, request_value, sha_hex, size, origin_etag,
	                      last_modified, sig)) != 0)
		return err;
	bg_sha256_hex(sig, hex);
	n = snprintf(out, outlen, "sig=%s", hex);
	return n < 0 || (size_t)n >= outlen ? BG_ELIMIT : 0;
}

int
peer_auth_check_answer(const unsigned char *key, size_t keylen, const char *request_value,
                       const char *sha_hex, uint64_t size, const char *origin_etag,
                       const char *last_modified, const char *value)
{
	unsigned char want[BG_SHA256_LEN], got[BG_SHA256_LEN];

	if (value == NULL || request_value == NULL || sha_hex == NULL ||
	    strncmp(value, "sig=", 4) != 0 || bg_sha256_from_hex(value + 4, got) != 0)
		return BG_EACCES;
	if (answer_mac(key, keylen, request_value, sha_hex, size, origin_etag, last_modified,
	               want) != 0)
		return BG_EACCES;
	return CRYPTO_memcmp(want, got, BG_SHA256_LEN) == 0 ? 0 : BG_EACCES;
}

/* ---- Signed answers, version 2 --------------------------------------------- */

#define FIELDS_PREFIX "v=2,sig="

/* HMAC-SHA256(key, "answer2\n" REQUEST_VALUE "\n" PATH "\n" STATUS "\n"
 * f[0] "\n" ... f[n-1] "\n"), an absent field empty.  A part holding a
 * newline is refused: it could pass for two parts (header values never
 * hold one). */
static int
fields_mac(const unsigned char *key, size_t keylen, const char *request_value, const char *path,
           unsigned status, const char *const *f, size_t n, unsigned char out[BG_SHA256_LEN])
{
	char st[16];
	const char *head[4] = { "answer2", request_value, path, st };
	size_t total = 0, off = 0;
	unsigned char *msg;
	unsigned int len = 0;
	int ok;

	if (request_value == NULL || path == NULL || (f == NULL && n > 0) || keylen > PEER_KEY_MAX ||
	    n > SIZE_MAX / 2 - 4)
		return BG_EINVAL;
	snprintf(st, sizeof(st), "%u", status);
	for (size_t i = 0; i < 4 + n; i++) {
		const char *p = i < 4 ? head[i] : f[i - 4] != NULL ? f[i - 4] : "";
		size_t plen = strlen(p);

		if (memchr(p, '\n', plen) != NULL || plen > SIZE_MAX - 1 - total)
			return BG_EINVAL;
		total += plen + 1;
	}
	if ((msg = malloc(total)) == NULL)
		return BG_ENOMEM;
	for (size_t i = 0; i < 4 + n; i++) {
		const char *p = i < 4 ? head[i] : f[i - 4] != NULL ? f[i - 4] : "";
		size_t plen = strlen(p);

		memcpy(msg + off, p, plen);
		off += plen;
		msg[off++] = '\n';
	}
	ok = HMAC(EVP_sha256(), key != NULL ? key : (const unsigned char *)"", (int)keylen, msg,
	          total, out, &len) != NULL &&
	     len == BG_SHA256_LEN;
	free(msg);
	return ok ? 0 : BG_ENOMEM;
}

int
peer_auth_sign_fields(const unsigned char *key, size_t keylen, const char *request_value,
                      const char *path, unsigned status, const char *const *f, size_t n,
                      char *out, size_t outlen)
{
	unsigned char sig[BG_SHA256_LEN];
	char hex[BG_SHA256_HEX_LEN + 1];
	int len, rc;

	if (out == NULL || outlen == 0)
		return BG_EINVAL;
	out[0] = '\0';
	if ((rc = fields_mac(key, keylen, request_value, path, status, f, n, sig)) != 0)
		return rc;
	bg_sha256_hex(sig, hex);
	len = snprintf(out, outlen, FIELDS_PREFIX "%s", hex);
	if (len < 0 || (size_t)len >= outlen) {
		out[0] = '\0';
		return BG_ELIMIT;
	}
	return 0;
}

int
peer_auth_check_fields(const unsigned char *key, size_t keylen, const char *request_value,
                       const char *path, unsigned status, const char *const *f, size_t n,
                       const char *value)
{
	unsigned char want[BG_SHA256_LEN], got[BG_SHA256_LEN];

	if (value == NULL || strncmp(value, FIELDS_PREFIX, strlen(FIELDS_PREFIX)) != 0 ||
	    strlen(value) != strlen(FIELDS_PREFIX) + BG_SHA256_HEX_LEN ||
	    bg_sha256_from_hex(value + strlen(FIELDS_PREFIX), got) != 0)
		return BG_EACCES;
	if (fields_mac(key, keylen, request_value, path, status, f, n, want) != 0)
		return BG_EACCES;
	return CRYPTO_memcmp(want, got, BG_SHA256_LEN) == 0 ? 0 : BG_EACCES;
}

int
peer_key_fingerprint(const unsigned char *key, size_t keylen, char out[PEER_KEY_FP_LEN + 1])
{
	static const char label[] = "bgcopy peer key fingerprint 1";
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;

	if (keylen == 0) {
		memcpy(out, "none", sizeof("none"));
		return 0;
	}
	if (keylen > PEER_KEY_MAX ||
	    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)label, sizeof(label) - 1, d,
	         &dlen) == NULL ||
	    dlen < PEER_KEY_FP_LEN / 2)
		return BG_EINVAL;
	bg_hex(d, PEER_KEY_FP_LEN / 2, out);
	OPENSSL_cleanse(d, sizeof(d));
	return 0;
}
