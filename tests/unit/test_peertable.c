/*
 * test_peertable.c - the peer table's merge (agent/jobs/peertable.c):
 * order, duplicates, this node, subnets and keys, fed with DNS-SD peers
 * made here instead of Avahi's; and the one-shot table over static peers.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "peertable.h"

#define SELF "00000000000000000000000000000000"
#define NODE_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define NODE_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define NODE_C "cccccccccccccccccccccccccccccccc"
#define NODE_D "dddddddddddddddddddddddddddddddd"
#define KF "0123456789abcdef"
#define KF_OTHER "fedcba9876543210"

static struct dnssd_peer
mdns(const char *name, const char *addr, unsigned port, const char *node, const char *kf,
     bool same_subnet)
{
	struct dnssd_peer p;

	memset(&p, 0, sizeof(p));
	snprintf(p.name, sizeof(p.name), "%s", name);
	snprintf(p.addr, sizeof(p.addr), "%s", addr);
	p.port = port;
	p.ifindex = 2;
	p.same_subnet = same_subnet;
	p.version = DNSSD_VERSION;
	snprintf(p.node, sizeof(p.node), "%s", node);
	snprintf(p.kf, sizeof(p.kf), "%s", kf);
	return p;
}

static void
test_merge(void)
{
	const char *statics[] = {"10.0.0.1:7654", "[fd00::1]:7000", "10.0.0.1:7654"};
	struct peer_table_config c = {
		.statics = statics, .nstatics = 3, .discovery = true, .self = SELF,
	};
	struct dns_peer dns[] = {{"10.0.0.2", 7654}, {"10.0.0.1", 7654}, {"fd00::2", 7654}};
	struct dnssd_peer m[] = {
		mdns("a6", "fd00::a", 7654, NODE_A, KF, true),      /* node A again: after its IPv4 */
		mdns("a", "10.0.0.10", 7654, NODE_A, KF, true),
		mdns("self", "10.0.0.99", 7654, SELF, KF, true),   /* this node */
		mdns("far", "10.9.0.1", 7654, NODE_B, KF, false),   /* another subnet */
		mdns("wrong", "10.0.0.11", 7654, NODE_C, KF_OTHER, true),
		mdns("static", "10.0.0.2", 7654, NODE_D, KF, true), /* the DNS name's peer */
		mdns("ll", "fe80::1", 7654, "", KF, true),          /* link-local */
	};
	struct peer_row rows[PEER_TABLE_MAX];
	size_t n;

	peer_table_merge(&c, KF, dns, 3, m, sizeof(m) / sizeof(m[0]), rows, PEER_TABLE_MAX, &n);
	CHECK_EQ_INT(n, 6);
	CHECK_EQ_STR(rows[0].peer, "10.0.0.1:7654");
	CHECK_EQ_STR(rows[0].addr, "10.0.0.1");
	CHECK_EQ_INT(rows[0].port, 7654);
	CHECK_EQ_STR(peer_source_name(rows[0].source), "static");
	CHECK_EQ_STR(rows[1].peer, "[fd00::1]:7000");
	CHECK_EQ_STR(rows[1].addr, "fd00::1");
	CHECK_EQ_INT(rows[1].port, 7000);
	CHECK_EQ_STR(rows[2].peer, "10.0.0.2:7654");
	CHECK_EQ_STR(peer_source_name(rows[2].source), "dns");
	/* DNS-SD names the DNS name's peer: its node and key are added. */
	CHECK_EQ_STR(rows[2].node, NODE_D);
	CHECK_EQ_STR(rows[2].name, "static");
	CHECK_EQ_STR(peer_key_state_name(rows[2].key), "match");
	CHECK_EQ_STR(rows[3].peer, "[fd00::2]:7654");
	CHECK_EQ_STR(peer_source_name(rows[3].source), "dns");
	CHECK_EQ_STR(rows[4].peer, "10.0.0.10:7654");
	CHECK_EQ_STR(peer_source_name(rows[4].source), "mdns");
	CHECK_EQ_STR(rows[4].node, NODE_A);
	CHECK_EQ_STR(rows[4].name, "a");
	CHECK(!rows[4].rejected);
	CHECK_EQ_STR(peer_key_state_name(rows[4].key), "match");
	CHECK_EQ_STR(rows[5].peer, "10.0.0.11:7654");
	CHECK(rows[5].rejected);
	CHECK_EQ_STR(rows[5].reason, "key mismatch");
	CHECK_EQ_STR(peer_key_state_name(rows[5].key), "mismatch");

	/* Other subnets too when configured. */
	c.any_subnet = true;
	peer_table_merge(&c, KF, NULL, 0, m, sizeof(m) / sizeof(m[0]), rows, PEER_TABLE_MAX, &n);
	CHECK_EQ_INT(n, 6);
	CHECK_EQ_STR(rows[3].peer, "10.9.0.1:7654");

	/* Without a key ("none"), a peer with one is a mismatch; one that
	 * published no fingerprint is unknown and asked. */
	{
		struct dnssd_peer k[] = {
			mdns("keyed", "10.0.0.20", 7654, NODE_A, KF, true),
			mdns("nokf", "10.0.0.21", 7654, NODE_B, "", true),
			mdns("none", "10.0.0.22", 7654, NODE_C, "none", true),
		};
		struct peer_table_config c2 = {.discovery = true};

		peer_table_merge(&c2, "none", NULL, 0, k, 3, rows, PEER_TABLE_MAX, &n);
		CHECK_EQ_INT(n, 3);
		CHECK(rows[0].rejected);
		CHECK(!rows[1].rejected);
		CHECK_EQ_STR(peer_key_state_name(rows[1].key), "unknown");
		CHECK(!rows[2].rejected);
		CHECK_EQ_STR(peer_key_state_name(rows[2].key), "match");
	}

	/* The bound. */
	peer_table_merge(&c, KF, dns, 3, m, sizeof(m) / sizeof(m[0]), rows, 2, &n);
	CHECK_EQ_INT(n, 2);
}

/* Static peers that cannot be asked are listed, rejected, with why; a
 * numeric host is one peer however it is written. */
static void
test_statics(void)
{
	char longname[STORE_PEER_KEY_MAX + 16];
	const char *statics[] = {
		"[2001:DB8::1]:7654", "[2001:db8::1]:7654", "[2001:0db8:0:0::1]:7654",
		"10.0.0.1:7654",      "10.0.0.1:07654",     longname,
		"10.0.0.2: 80",       "10.0.0.2:+80",       "10.0.0.2:0",
		"10.0.0.2:65536",     "bad",                "fd00::1:7654",
		"[10.0.0.3]:7654",    "[fd00::1:7654",      "name.example:8000",
	};
	struct peer_table_config c = {.statics = statics, .nstatics = sizeof(statics) / sizeof(statics[0])};
	struct peer_row rows[PEER_TABLE_MAX];
	size_t n, i = 0;

	memset(longname, 'h', sizeof(longname));
	memcpy(longname + STORE_PEER_KEY_MAX - 4, ":7654", 6); /* 81 bytes */
	peer_table_merge(&c, KF, NULL, 0, NULL, 0, rows, PEER_TABLE_MAX, &n);
	CHECK_EQ_INT(n, 12);
	if (n != 12)
		return;
	/* Three spellings, one peer, one store key. */
	CHECK_EQ_STR(rows[i].peer, "[2001:db8::1]:7654");
	CHECK_EQ_STR(rows[i].addr, "2001:db8::1");
	CHECK(!rows[i].rejected);
	i++;
	CHECK_EQ_STR(rows[i].peer, "10.0.0.1:7654"); /* and 07654 is 7654 */
	CHECK(!rows[i].rejected);
	i++;
	CHECK_EQ_STR(rows[i].reason, "longer than 80 bytes");
	CHECK(rows[i].rejected);
	CHECK_EQ_INT(strlen(rows[i].peer), STORE_PEER_KEY_MAX);
	CHECK(strcmp(rows[i].peer + STORE_PEER_KEY_MAX - 3, "...") == 0);
	CHECK_EQ_STR(peer_source_name(rows[i].source), "static");
	i++;
	/* The port as bg_parse_u64 reads it: no space, no sign, 1-65535. */
	for (int k = 0; k < 4; k++, i++) {
		CHECK(rows[i].rejected);
		CHECK_EQ_STR(rows[i].reason, "not HOST:PORT (PORT 1-65535)");
	}
	CHECK_EQ_STR(rows[i].peer, "bad");
	CHECK(rows[i].rejected);
	i++;
	CHECK_EQ_STR(rows[i].peer, "fd00::1:7654"); /* IPv6 without brackets */
	CHECK_EQ_STR(rows[i].reason, "not HOST:PORT (an IPv6 HOST as [ADDR])");
	i++;
	CHECK_EQ_STR(rows[i].peer, "[10.0.0.3]:7654");
	CHECK(rows[i].rejected);
	i++;
	CHECK_EQ_STR(rows[i].peer, "[fd00::1:7654");
	CHECK(rows[i].rejected);
	i++;
	CHECK_EQ_STR(rows[i].peer, "name.example:8000");
	CHECK_EQ_STR(rows[i].addr, "name.example");
	CHECK_EQ_INT(rows[i].port, 8000);
	CHECK(!rows[i].rejected);

	/* The DNS name's and DNS-SD's addresses are spelt the same way. */
	{
		const char *one[] = {"[2001:db8::1]:7654"};
		struct peer_table_config c1 = {.statics = one, .nstatics = 1, .discovery = true};
		struct dns_peer dns[] = {{"2001:DB8:0::1", 7654}};
		struct dnssd_peer m[] = {mdns("x", "2001:0DB8::1", 7654, NODE_A, KF, true)};

		peer_table_merge(&c1, KF, dns, 1, m, 1, rows, PEER_TABLE_MAX, &n);
		CHECK_EQ_INT(n, 1);
		CHECK_EQ_STR(rows[0].node, NODE_A);
	}
}

/* A forged announcement with a real node's id and the wrong key (rejected)
 * does not hide the real node, whichever comes first. */
static void
test_forged(void)
{
	struct peer_table_config c = {.discovery = true, .self = SELF};
	struct dnssd_peer m[] = {
		mdns("forged", "10.0.0.66", 7654, NODE_A, KF_OTHER, true),
		mdns("real", "10.0.0.10", 7654, NODE_A, KF, true),
		mdns("forged2", "10.0.0.67", 7654, NODE_A, KF_OTHER, true),
	};
	struct dnssd_peer r[] = {m[1], m[0]};
	struct peer_row rows[PEER_TABLE_MAX];
	size_t n;

	peer_table_merge(&c, KF, NULL, 0, m, 3, rows, PEER_TABLE_MAX, &n);
	CHECK_EQ_INT(n, 2); /* the forged one (listed, rejected), the real one; not the second forged */
	if (n == 2) {
		CHECK_EQ_STR(rows[0].peer, "10.0.0.66:7654");
		CHECK(rows[0].rejected);
		CHECK_EQ_STR(rows[0].reason, "key mismatch");
		CHECK_EQ_STR(rows[1].peer, "10.0.0.10:7654");
		CHECK(!rows[1].rejected);
		CHECK_EQ_STR(rows[1].node, NODE_A);
	}
	/* The real one first: the forged one is the same node at another
	 * address, left out. */
	peer_table_merge(&c, KF, NULL, 0, r, 2, rows, PEER_TABLE_MAX, &n);
	CHECK_EQ_INT(n, 1);
	if (n == 1) {
		CHECK_EQ_STR(rows[0].peer, "10.0.0.10:7654");
		CHECK(!rows[0].rejected);
	}
}

static void
test_table(void)
{
	const char *statics[] = {"127.0.0.5:7654", "127.0.0.6:8000"};
	struct peer_table_config c = {.statics = statics, .nstatics = 2, .discovery = false};
	struct peer_table *t = NULL;
	struct peer_row *rows = NULL;
	size_t n = 0;

	CHECK_EQ_INT(peer_table_new(&c, false, &t), 0);
	statics[0] = "changed:1"; /* the table keeps its own copy */
	CHECK_EQ_INT(peer_table_get(t, "none", &rows, &n), 0);
	CHECK_EQ_INT(n, 2);
	if (n == 2) {
		CHECK_EQ_STR(rows[0].peer, "127.0.0.5:7654");
		CHECK_EQ_STR(rows[1].peer, "127.0.0.6:8000");
	}
	free(rows);
	peer_table_free(t);

	/* A DNS name that does not exist: no peer, a reason, no failure. */
	{
		struct peer_table_config d = {.dns_name = "no-such-name.invalid"};

		CHECK_EQ_INT(peer_table_new(&d, false, &t), 0);
		CHECK_EQ_INT(peer_table_get(t, "none", &rows, &n), 0);
		CHECK_EQ_INT(n, 0);
		CHECK(rows == NULL);
		{
			char why[256];

			CHECK(peer_table_dns_problem(t, why, sizeof(why)));
			CHECK(why[0] != '\0');
		}
		peer_table_free(t);
	}
	/* localhost resolves through /etc/hosts, on the default port (no SRV). */
	{
		struct dns_peer dp[4];
		char why[256];

		n = 0;
		CHECK_EQ_INT(dns_peers_resolve("localhost", 2000, dp, 4, &n, why, sizeof(why)), 0);
		CHECK(n >= 1);
		if (n >= 1)
			CHECK_EQ_INT(dp[0].port, PEER_PORT_DEFAULT);
	}
}

/* The live table follows the watch: a peer resolved, resolved again at
 * another address, its IPv6 sighting, withdrawn. */
static void
test_feed(void)
{
	struct peer_table_config c = {.discovery = false, .self = SELF};
	struct dnssd_peer a = mdns("a", "10.0.0.10", 7654, NODE_A, KF, true);
	struct dnssd_peer a6 = mdns("a", "fd00::a", 7654, NODE_A, KF, true);
	struct dnssd_peer b = mdns("b", "10.0.0.11", 7655, NODE_B, KF, true);
	struct peer_table *t = NULL;
	struct peer_row *rows = NULL;
	size_t n = 0;

	CHECK_EQ_INT(peer_table_new(&c, true, &t), 0);
	peer_table_feed(t, true, &a6);
	peer_table_feed(t, true, &a);
	peer_table_feed(t, true, &b);
	CHECK_EQ_INT(peer_table_get(t, KF, &rows, &n), 0);
	CHECK_EQ_INT(n, 2); /* node A once, at its IPv4 address */
	if (n == 2) {
		CHECK_EQ_STR(rows[0].peer, "10.0.0.10:7654");
		CHECK_EQ_STR(rows[1].peer, "10.0.0.11:7655");
	}
	free(rows);
	snprintf(a.addr, sizeof(a.addr), "10.0.0.20"); /* the same sighting moved */
	peer_table_feed(t, true, &a);
	peer_table_feed(t, false, &b);
	CHECK_EQ_INT(peer_table_get(t, KF, &rows, &n), 0);
	CHECK_EQ_INT(n, 1);
	if (n == 1)
		CHECK_EQ_STR(rows[0].peer, "10.0.0.20:7654");
	free(rows);
	peer_table_feed(t, false, &a);
	CHECK_EQ_INT(peer_table_get(t, KF, &rows, &n), 0);
	CHECK_EQ_INT(n, 1); /* its IPv6 sighting is still there */
	if (n == 1)
		CHECK_EQ_STR(rows[0].peer, "[fd00::a]:7654");
	free(rows);
	peer_table_feed(t, false, &a6);
	CHECK_EQ_INT(peer_table_get(t, KF, &rows, &n), 0);
	CHECK_EQ_INT(n, 0);
	free(rows);
	peer_table_free(t);
}

/* ---- The live table's DNS refresh, with a lookup made here ----------------- */

static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hook_cond = PTHREAD_COND_INITIALIZER;
static int hook_mode;      /* 0 two addresses, 1 waits for hook_go then times out, 2 no address */
static int hook_calls;
static bool hook_in, hook_go;

static int
hook_resolve(const char *name, unsigned timeout_ms, struct dns_peer *out, size_t max, size_t *n,
             char *why, size_t whylen)
{
	int mode;

	(void)timeout_ms;
	pthread_mutex_lock(&hook_lock);
	hook_calls++;
	mode = hook_mode;
	hook_in = true;
	pthread_cond_broadcast(&hook_cond);
	while (mode == 1 && !hook_go)
		pthread_cond_wait(&hook_cond, &hook_lock);
	pthread_mutex_unlock(&hook_lock);
	*n = 0;
	if (mode == 1) {
		snprintf(why, whylen, "%s: no answer within 2000 ms", name);
		return BG_ETIMEDOUT;
	}
	if (mode == 2) {
		snprintf(why, whylen, "%s has no address", name);
		return BG_ENOENT;
	}
	if (max >= 2) {
		*out++ = (struct dns_peer){"10.0.1.1", 7654};
		*out = (struct dns_peer){"10.0.1.2", 7654};
		*n = 2;
	}
	return 0;
}

struct getter {
	struct peer_table *t;
	size_t n;
	int err;
};

static void *
getter_run(void *arg)
{
	struct getter *g = arg;
	struct peer_row *rows = NULL;

	g->err = peer_table_get(g->t, KF, &rows, &g->n);
	free(rows);
	return NULL;
}

/* A refresh runs without the lock: the watch feeds, and jobs get the list
 * as it is, while it waits on a slow resolver; when it fails, the last good
 * list stays; when the name has no address any more, it goes. */
static void
test_dns_refresh(void)
{
	struct peer_table_config c = {.dns_name = "peers.example", .self = SELF,
	                              .resolve = hook_resolve};
	struct dnssd_peer b = mdns("b", "10.0.0.11", 7655, NODE_B, KF, true);
	struct peer_table *t = NULL;
	struct peer_row *rows = NULL;
	struct getter g = {0};
	pthread_t th;
	char why[256];
	size_t n = 0;

	CHECK_EQ_INT(peer_table_new(&c, true, &t), 0);
	CHECK_EQ_INT(peer_table_get(t, KF, &rows, &n), 0);
	CHECK_EQ_INT(n, 2);
	free(rows);
	CHECK(!peer_table_dns_problem(t, why, sizeof(why)));
	CHECK_EQ_INT(hook_calls, 1);

	/* Past the TTL, a resolver that does not answer. */
	setenv(BG_CLOCK_OFFSET_ENV, "120", 1);
	hook_mode = 1;
	g.t = t;
	CHECK_EQ_INT(pthread_create(&th, NULL, getter_run, &g), 0);
	pthread_mutex_lock(&hook_lock);
	while (!hook_in || hook_calls < 2)
		pthread_cond_wait(&hook_cond, &hook_lock);
	pthread_mutex_unlock(&hook_lock);
	/* The lookup is under way: the watch and other jobs do not wait. */
	peer_table_feed(t, true, &b);
	CHECK_EQ_INT(peer_table_get(t, KF, &rows, &n), 0);
	CHECK_EQ_INT(n, 3); /* the two DNS addresses as they were, and b */
	free(rows);
	CHECK_EQ_INT(hook_calls, 2); /* one lookup at a time */
	pthread_mutex_lock(&hook_lock);
	hook_go = true;
	pthread_cond_broadcast(&hook_cond);
	pthread_mutex_unlock(&hook_lock);
	pthread_join(th, NULL);
	CHECK_EQ_INT(g.err, 0);
	CHECK_EQ_INT(g.n, 3);
	/* It failed: the last good list is kept, and said so. */
	CHECK_EQ_INT(peer_table_get(t, KF, &rows, &n), 0);
	CHECK_EQ_INT(n, 3);
	if (n == 3)
		CHECK_EQ_STR(rows[0].peer, "10.0.1.1:7654");
	free(rows);
	CHECK(peer_table_dns_problem(t, why, sizeof(why)));
	CHECK(strstr(why, "no answer") != NULL);
	CHECK(strstr(why, "kept") != NULL);

	/* The name has no address any more: its peers go. */
	setenv(BG_CLOCK_OFFSET_ENV, "240", 1);
	hook_mode = 2;
	CHECK_EQ_INT(peer_table_get(t, KF, &rows, &n), 0);
	CHECK_EQ_INT(n, 1);
	free(rows);
	CHECK(peer_table_dns_problem(t, why, sizeof(why)));
	CHECK_EQ_STR(why, "peers.example has no address");
	/* And comes back. */
	setenv(BG_CLOCK_OFFSET_ENV, "360", 1);
	hook_mode = 0;
	CHECK_EQ_INT(peer_table_get(t, KF, &rows, &n), 0);
	CHECK_EQ_INT(n, 3);
	free(rows);
	CHECK(!peer_table_dns_problem(t, why, sizeof(why)));
	CHECK_EQ_STR(why, "");
	unsetenv(BG_CLOCK_OFFSET_ENV);
	peer_table_free(t);
}

int
main(void)
{
	test_merge();
	test_statics();
	test_forged();
	test_table();
	test_feed();
	test_dns_refresh();
	return check_done();
}
