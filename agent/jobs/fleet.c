/*
 * fleet.c - fetch policies of jobs and rendezvous hashing (fleet.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "bits.h"
#include "fleet.h"

/* SHA-256 of the bytes of path; false when it cannot be read. */
static bool
sha256_of_file(const char *path, unsigned char d[BG_SHA256_LEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char buf[16384];
	unsigned int n = 0;
	bool ok = false;
	int fd = -1;

	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		goto out;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		goto out;
	for (;;) {
		ssize_t got = read(fd, buf, sizeof(buf));

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			goto out;
		if (got == 0)
			break;
		if (EVP_DigestUpdate(md, buf, (size_t)got) != 1)
			goto out;
	}
	ok = EVP_DigestFinal_ex(md, d, &n) == 1 && n == BG_SHA256_LEN;
out:
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(md);
	return ok;
}

void
fetch_policy_set_ca(struct store_fetch_policy *p, const char *ca_file)
{
	unsigned char d[BG_SHA256_LEN];
	char hex[BG_SHA256_HEX_LEN + 1];

	if (ca_file == NULL) {
		snprintf(p->ca, sizeof(p->ca), "system");
		return;
	}
	if (!sha256_of_file(ca_file, d)) {
		/* The fetch fails the same way; nothing is claimed meanwhile. */
		p->known = false;
		snprintf(p->ca, sizeof(p->ca), "system");
		return;
	}
	bg_sha256_hex(d, hex);
	memcpy(p->ca, hex, STORE_FETCH_CA_LEN);
	p->ca[STORE_FETCH_CA_LEN] = '\0';
}

void
fetch_policy_of_job(const struct job_rec *job, bool crl_checked, struct store_fetch_policy *out)
{
	uint32_t f = job->security_flags;

	memset(out, 0, sizeof(*out));
	out->known = true;
	if (f & BG_SSL_IGNORE_CERT_CN_INVALID)
		out->ignore |= STORE_FETCH_IGNORE_CN;
	if (f & BG_SSL_IGNORE_CERT_DATE_INVALID)
		out->ignore |= STORE_FETCH_IGNORE_DATE;
	if (f & BG_SSL_IGNORE_UNKNOWN_CA)
		out->ignore |= STORE_FETCH_IGNORE_CA;
	if (f & BG_SSL_IGNORE_CERT_WRONG_USAGE)
		out->ignore |= STORE_FETCH_IGNORE_USAGE;
	out->crl = (f & BG_SSL_ENABLE_CRL_CHECK) != 0 && crl_checked;
	out->h2h = (f & BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP) != 0;
	switch (f & BG_HTTP_REDIRECT_POLICY_MASK) {
	case BG_HTTP_REDIRECT_POLICY_ALLOW_SILENT:
		out->redirect = STORE_FETCH_REDIRECT_SILENT;
		break;
	case BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT:
		out->redirect = STORE_FETCH_REDIRECT_REPORT;
		break;
	default:
		/* DISALLOW, and values BITS does not define (refused when the
		 * flags are set): the strictest. */
		out->redirect = STORE_FETCH_REDIRECT_DISALLOW;
		break;
	}
	fetch_policy_set_ca(out, job->ca_file);
}

void
fetch_policy_weaker(struct store_fetch_policy *a, const struct store_fetch_policy *b)
{
	if (!a->known || !b->known || a->redirect != b->redirect || strcmp(a->ca, b->ca) != 0) {
		a->known = false;
		return;
	}
	a->ignore |= b->ignore;
	a->crl = a->crl && b->crl;
	a->h2h = a->h2h || b->h2h;
}

/* The first 8 bytes, big-endian, of SHA-256(label || a || "\n" || b), or
 * of SHA-256(label || a || "\n" || b || "\n" || c) when c is not NULL. */
static uint64_t
score64(const char *label, const char *a, const char *b, const char *c)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char d[BG_SHA256_LEN];
	unsigned int n = 0;
	uint64_t v = 0;

	/* Only allocation can fail here; a score of 0 then ranks the node
	 * last, which is what an unusable node deserves. */
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, label, strlen(label)) != 1 ||
	    EVP_DigestUpdate(md, a, strlen(a)) != 1 || EVP_DigestUpdate(md, "\n", 1) != 1 ||
	    EVP_DigestUpdate(md, b, strlen(b)) != 1 ||
	    (c != NULL && (EVP_DigestUpdate(md, "\n", 1) != 1 ||
	                   EVP_DigestUpdate(md, c, strlen(c)) != 1)) ||
	    EVP_DigestFinal_ex(md, d, &n) != 1 || n != BG_SHA256_LEN) {
		EVP_MD_CTX_free(md);
		return 0;
	}
	EVP_MD_CTX_free(md);
	for (int i = 0; i < 8; i++)
		v = v << 8 | d[i];
	return v;
}

uint64_t
fleet_score(const char *node_id, const char *url)
{
	return score64(FLEET_RENDEZVOUS_LABEL, node_id, url, NULL);
}

uint64_t
fleet_follow_score(const char *source, const char *follower, const char *url)
{
	return score64(FLEET_FOLLOW_LABEL, source, follower, url);
}

/* fleet_score of nodes[i], or fleet_follow_score for follower when it is
 * not NULL. */
static uint64_t
score_of(const char *const *nodes, size_t i, const char *follower, const char *url)
{
	return follower == NULL ? fleet_score(nodes[i], url)
	                        : fleet_follow_score(nodes[i], follower, url);
}

static size_t
rank(const char *const *nodes, size_t n, const char *follower, const char *url, size_t *order)
{
	uint64_t stack[64], *score = n <= 64 ? stack : malloc(n * sizeof(*score));

	for (size_t i = 0; i < n; i++)
		order[i] = i;
	if (score == NULL) {
		/* Without memory the scores are computed at each comparison. */
		for (size_t i = 1; i < n; i++) {
			for (size_t j = i; j > 0; j--) {
				size_t a = order[j - 1], b = order[j];
				uint64_t sa = score_of(nodes, a, follower, url);
				uint64_t sb = score_of(nodes, b, follower, url);

				if (sa > sb || (sa == sb && strcmp(nodes[a], nodes[b]) <= 0))
					break;
				order[j - 1] = b;
				order[j] = a;
			}
		}
		return n;
	}
	for (size_t i = 0; i < n; i++)
		score[i] = score_of(nodes, i, follower, url);
	/* Insertion sort: a fleet is a LAN's nodes, tens, not thousands. */
	for (size_t i = 1; i < n; i++) {
		size_t x = order[i], j = i;

		while (j > 0) {
			size_t y = order[j - 1];

			if (score[y] > score[x] || (score[y] == score[x] && strcmp(nodes[y], nodes[x]) <= 0))
				break;
			order[j] = y;
			j--;
		}
		order[j] = x;
	}
	if (score != stack)
		free(score);
	return n;
}

size_t
fleet_rank(const char *const *nodes, size_t n, const char *url, size_t *order)
{
	return rank(nodes, n, NULL, url, order);
}

size_t
fleet_elect(const char *const *nodes, size_t n, const char *url, size_t max, size_t *order)
{
	rank(nodes, n, NULL, url, order);
	if (max == 0)
		max = 1; /* options a caller zeroed: the default */
	return n < max ? n : max;
}

size_t
fleet_rank_sources(const char *const *sources, size_t n, const char *follower, const char *url,
                   size_t *order)
{
	return rank(sources, n, follower, url, order);
}
