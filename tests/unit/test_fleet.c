/*
 * test_fleet.c - the pure parts of the fleet (fleet.c): the fetch policy a
 * job's flags give, rendezvous hashing (fixed vectors, the order, that
 * removing a node moves only the URLs it owned, and an even spread), the
 * election of several owners, and the followers' spread over them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bits.h"
#include "fleet.h"
#include "record.h"
#include "check.h"

static struct store_fetch_policy
policy_of(uint32_t flags, bool crl_checked, const char *ca_file)
{
	struct job_rec job;
	struct store_fetch_policy p;

	memset(&job, 0, sizeof(job));
	job.security_flags = flags;
	job.ca_file = (char *)ca_file;
	fetch_policy_of_job(&job, crl_checked, &p);
	return p;
}

static void
test_policy(void)
{
	struct store_fetch_policy p = policy_of(0, false, NULL), q;
	char tmpl[] = "/tmp/bgfleet-ca-XXXXXX";
	int fd;

	CHECK(p.known && p.ignore == 0 && !p.crl && !p.h2h);
	CHECK(p.redirect == STORE_FETCH_REDIRECT_SILENT);
	CHECK_EQ_STR(p.ca, "system");
	CHECK_EQ_INT(policy_of(BG_SSL_IGNORE_CERT_CN_INVALID, false, NULL).ignore, STORE_FETCH_IGNORE_CN);
	CHECK_EQ_INT(policy_of(BG_SSL_IGNORE_CERT_DATE_INVALID, false, NULL).ignore,
	             STORE_FETCH_IGNORE_DATE);
	CHECK_EQ_INT(policy_of(BG_SSL_IGNORE_UNKNOWN_CA, false, NULL).ignore, STORE_FETCH_IGNORE_CA);
	CHECK_EQ_INT(policy_of(BG_SSL_IGNORE_CERT_WRONG_USAGE, false, NULL).ignore,
	             STORE_FETCH_IGNORE_USAGE);
	CHECK_EQ_INT(policy_of(0x1Eu, false, NULL).ignore, STORE_FETCH_IGNORE_ALL);
	/* CRLs count only when the bytes came under the check. */
	CHECK(!policy_of(BG_SSL_ENABLE_CRL_CHECK, false, NULL).crl);
	CHECK(policy_of(BG_SSL_ENABLE_CRL_CHECK, true, NULL).crl);
	CHECK(!policy_of(0, true, NULL).crl);
	CHECK_EQ_INT(policy_of(BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT, false, NULL).redirect,
	             STORE_FETCH_REDIRECT_REPORT);
	CHECK_EQ_INT(policy_of(BG_HTTP_REDIRECT_POLICY_DISALLOW, false, NULL).redirect,
	             STORE_FETCH_REDIRECT_DISALLOW);
	CHECK(policy_of(BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP, false, NULL).h2h);
	CHECK(!policy_of(BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT, false, NULL).h2h);
	CHECK_EQ_INT(policy_of(BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP, false, NULL).redirect,
	             STORE_FETCH_REDIRECT_SILENT);

	/* A CA file: the first 16 hex digits of SHA-256 of its bytes.
	 * printf 'anchors\n' | sha256sum = dbf40272b85994b1... */
	fd = mkstemp(tmpl);
	if (CHECK(fd >= 0)) {
		CHECK(write(fd, "anchors\n", 8) == 8);
		close(fd);
		p = policy_of(0, false, tmpl);
		CHECK(p.known);
		CHECK_EQ_STR(p.ca, "dbf40272b85994b1");
		unlink(tmpl);
		/* Gone: nothing can be said of the anchors. */
		CHECK(!policy_of(0, false, tmpl).known);
	}

	/* The weaker of two. */
	p = policy_of(BG_SSL_IGNORE_CERT_CN_INVALID | BG_SSL_ENABLE_CRL_CHECK, true, NULL);
	q = policy_of(BG_SSL_IGNORE_CERT_DATE_INVALID | BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP,
	              false, NULL);
	fetch_policy_weaker(&p, &q);
	CHECK(p.known && p.ignore == (STORE_FETCH_IGNORE_CN | STORE_FETCH_IGNORE_DATE) && !p.crl && p.h2h);
	p = policy_of(0, false, NULL);
	q = policy_of(BG_HTTP_REDIRECT_POLICY_DISALLOW, false, NULL);
	fetch_policy_weaker(&p, &q);
	CHECK(!p.known);
}

/* Spec vectors, computed outside the code under test:
 *   python3 -c 'import hashlib; n, u = "...", "..."; print(hex(int.from_bytes(
 *     hashlib.sha256(b"bgcopy rendezvous 1\n" + n.encode() + b"\n" + u.encode())
 *     .digest()[:8], "big")))' */
static const struct {
	const char *node, *url;
	uint64_t score;
} vectors[] = {
	{"0123456789abcdef0123456789abcdef", "http://example.com/a.iso", 0xe9ba6a51c4f8f864ull},
	{"0123456789abcdef0123456789abcdef", "https://origin.test/big.bin", 0xdfec10b78aab9a27ull},
	{"fedcba9876543210fedcba9876543210", "http://example.com/a.iso", 0x9f3faf8debedc262ull},
	{"fedcba9876543210fedcba9876543210", "https://origin.test/big.bin", 0xc199350d94825f97ull},
	{"00000000000000000000000000000000", "http://example.com/a.iso", 0x7f1b3d016e0df9c2ull},
	{"00000000000000000000000000000000", "https://origin.test/big.bin", 0x270b8ba62dfc3624ull},
	{"node-a", "http://example.com/a.iso", 0x1f23a42a549501d3ull},
	{"node-a", "https://origin.test/big.bin", 0x0a1f405e6668824dull},
};

#define NODES 16
#define URLS 10000

static void
test_rendezvous(void)
{
	const char *four[] = {"node-a", "00000000000000000000000000000000",
	                      "fedcba9876543210fedcba9876543210", "0123456789abcdef0123456789abcdef"};
	const char *twins[] = {"node-b", "node-a", "node-a"};
	char ids[NODES][33], url[64];
	const char *nodes[NODES];
	size_t order[NODES], owner[URLS], count[NODES] = {0};

	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		if (!CHECK(fleet_score(vectors[i].node, vectors[i].url) == vectors[i].score))
			fprintf(stderr, "    vector %zu: %016llx\n", i,
			        (unsigned long long)fleet_score(vectors[i].node, vectors[i].url));
	}
	/* Highest first: by the vectors, 0123.., fedc.., 0000.., node-a. */
	CHECK_EQ_INT(fleet_rank(four, 4, "http://example.com/a.iso", order), 4);
	CHECK(order[0] == 3 && order[1] == 2 && order[2] == 1 && order[3] == 0);
	CHECK_EQ_INT(fleet_rank(four, 4, "https://origin.test/big.bin", order), 4);
	CHECK(order[0] == 3 && order[1] == 2 && order[2] == 1 && order[3] == 0);
	/* Ties (only equal ids in practice) keep strcmp order, stably. */
	fleet_rank(twins, 3, "http://example.com/a.iso", order);
	CHECK(strcmp(twins[order[1]], twins[order[2]]) <= 0);
	CHECK(order[0] == 0 || order[2] == 0);
	CHECK_EQ_INT(fleet_rank(four, 0, "x", order), 0);

	for (size_t i = 0; i < NODES; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%08zx%024x", i * 2654435761u, 0);
		nodes[i] = ids[i];
	}
	for (size_t u = 0; u < URLS; u++) {
		snprintf(url, sizeof(url), "http://origin.test/file/%zu", u);
		fleet_rank(nodes, NODES, url, order);
		owner[u] = order[0];
		count[order[0]]++;
	}
	/* Spread: each owns 1/16 of the URLs, within 20 %. */
	for (size_t i = 0; i < NODES; i++) {
		if (!CHECK(count[i] >= URLS / NODES * 8 / 10 && count[i] <= URLS / NODES * 12 / 10))
			fprintf(stderr, "    node %zu owns %zu\n", i, count[i]);
	}
	/* Minimal disruption: without node 5, only its URLs move. */
	{
		const char *fewer[NODES - 1];
		size_t idx[NODES - 1], k = 0, moved = 0, wrong = 0;

		for (size_t i = 0; i < NODES; i++) {
			if (i == 5)
				continue;
			idx[k] = i;
			fewer[k++] = nodes[i];
		}
		for (size_t u = 0; u < URLS; u++) {
			size_t now;

			snprintf(url, sizeof(url), "http://origin.test/file/%zu", u);
			fleet_rank(fewer, NODES - 1, url, order);
			now = idx[order[0]];
			if (now != owner[u]) {
				moved++;
				if (owner[u] != 5)
					wrong++;
			}
		}
		CHECK_EQ_INT(wrong, 0);
		CHECK_EQ_INT(moved, count[5]);
	}
}

/* fleet_follow_score, as above with
 *   b"bgcopy follow 1\n" + source + b"\n" + follower + b"\n" + url */
static const struct {
	const char *source, *follower, *url;
	uint64_t score;
} follow_vectors[] = {
	{"0123456789abcdef0123456789abcdef", "node-a", "http://example.com/a.iso",
	 0xb4fbcb28b142b634ull},
	{"fedcba9876543210fedcba9876543210", "node-a", "http://example.com/a.iso",
	 0x219b997f79171fd8ull},
	{"0123456789abcdef0123456789abcdef", "node-b", "http://example.com/a.iso",
	 0x02095fcde2387e1dull},
	{"fedcba9876543210fedcba9876543210", "node-b", "http://example.com/a.iso",
	 0xf3b1ec1dc824424aull},
};

#define FOLLOWERS 4000

static void
test_elect(void)
{
	const char *four[] = {"node-a", "00000000000000000000000000000000",
	                      "fedcba9876543210fedcba9876543210", "0123456789abcdef0123456789abcdef"};
	char ids[NODES][33], url[64];
	const char *nodes[NODES];
	size_t order[NODES], rest[NODES];

	/* The first max of the ranking (by the vectors: 0123.., fedc..). */
	CHECK_EQ_INT(fleet_elect(four, 4, "http://example.com/a.iso", 1, order), 1);
	CHECK_EQ_INT(order[0], 3);
	CHECK_EQ_INT(fleet_elect(four, 4, "http://example.com/a.iso", 2, order), 2);
	CHECK(order[0] == 3 && order[1] == 2);
	/* 0 is the default, 1; more seats than candidates elect them all. */
	CHECK_EQ_INT(fleet_elect(four, 4, "http://example.com/a.iso", 0, order), 1);
	CHECK_EQ_INT(order[0], 3);
	CHECK_EQ_INT(fleet_elect(four, 4, "http://example.com/a.iso", 16, order), 4);
	CHECK_EQ_INT(fleet_elect(four, 0, "x", 2, order), 0);

	for (size_t i = 0; i < NODES; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%08zx%024x", i * 2654435761u, 1);
		nodes[i] = ids[i];
	}
	for (size_t u = 0; u < 200; u++) {
		size_t k = 1 + u % 4, won;

		snprintf(url, sizeof(url), "http://origin.test/file/%zu", u);
		won = fleet_elect(nodes, NODES, url, k, order);
		CHECK_EQ_INT(won, k);
		/* Elected: the k highest scores. */
		for (size_t a = 0; a < won; a++) {
			for (size_t b = won; b < NODES; b++)
				CHECK(fleet_score(nodes[order[a]], url) > fleet_score(nodes[order[b]], url));
		}
		/* The first elected already fetching (no candidate any more):
		 * the others elect k - 1 among the rest, the same nodes. */
		if (k > 1) {
			const char *others[NODES - 1];
			size_t idx[NODES - 1], m = 0;

			for (size_t i = 0; i < NODES; i++) {
				if (i == order[0])
					continue;
				idx[m] = i;
				others[m++] = nodes[i];
			}
			CHECK_EQ_INT(fleet_elect(others, m, url, k - 1, rest), k - 1);
			for (size_t a = 0; a + 1 < k; a++)
				CHECK_EQ_INT(idx[rest[a]], order[a + 1]);
		}
	}
}

static void
test_spread(void)
{
	const char *two[] = {"fedcba9876543210fedcba9876543210", "0123456789abcdef0123456789abcdef"};
	const char *url = "https://origin.test/big.bin";
	char ids[FOLLOWERS][33];
	const char *owners[3];
	size_t order[3], count[3] = {0}, first[FOLLOWERS];

	for (size_t i = 0; i < sizeof(follow_vectors) / sizeof(follow_vectors[0]); i++) {
		uint64_t v = fleet_follow_score(follow_vectors[i].source, follow_vectors[i].follower,
		                                follow_vectors[i].url);

		if (!CHECK(v == follow_vectors[i].score))
			fprintf(stderr, "    follow vector %zu: %016llx\n", i, (unsigned long long)v);
	}
	/* Keyed by the follower: by the vectors node-a takes 0123.. and node-b
	 * fedc.., where fleet_rank puts 0123.. first for everyone. */
	CHECK_EQ_INT(fleet_rank_sources(two, 2, "node-a", "http://example.com/a.iso", order), 2);
	CHECK(order[0] == 1 && order[1] == 0);
	CHECK_EQ_INT(fleet_rank_sources(two, 2, "node-b", "http://example.com/a.iso", order), 2);
	CHECK(order[0] == 0 && order[1] == 1);
	fleet_rank(two, 2, "http://example.com/a.iso", order);
	CHECK_EQ_INT(order[0], 1);
	CHECK_EQ_INT(fleet_rank_sources(two, 2, "x", "x", order), 2);
	CHECK_EQ_INT(fleet_rank_sources(two, 0, "x", "x", order), 0);

	/* Three owners: each is first for a third of the followers, within
	 * 15 %, where fleet_rank would send every follower to the same one. */
	owners[0] = "owner-one";
	owners[1] = "owner-two";
	owners[2] = "owner-three";
	for (size_t i = 0; i < FOLLOWERS; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%032zx", i * 2654435761u);
		fleet_rank_sources(owners, 3, ids[i], url, order);
		first[i] = order[0];
		count[order[0]]++;
	}
	for (size_t o = 0; o < 3; o++) {
		if (!CHECK(count[o] >= FOLLOWERS / 3 * 85 / 100 && count[o] <= FOLLOWERS / 3 * 115 / 100))
			fprintf(stderr, "    owner %zu is first for %zu\n", o, count[o]);
	}
	/* An owner gone moves only its own followers. */
	{
		size_t moved = 0;

		for (size_t i = 0; i < FOLLOWERS; i++) {
			fleet_rank_sources(owners, 2, ids[i], url, order);
			if (first[i] != 2 && order[0] != first[i])
				moved++;
		}
		CHECK_EQ_INT(moved, 0);
	}
}

int
main(void)
{
	test_policy();
	test_rendezvous();
	test_elect();
	test_spread();
	return check_done();
}
