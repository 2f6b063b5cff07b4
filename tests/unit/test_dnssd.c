/* test_dnssd.c - bgdnssd: TXT records, subnets, listen addresses, and what
 * announcing and browsing do without avahi-daemon (cache/dnssd). */
#include <net/if.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "dnssd_int.h"

#define ID "0123456789abcdef0123456789abcdef"
#define FP "fedcba9876543210"

/* Parses a record given as NUL-separated items ending with an empty one. */
static struct dnssd_peer
txt(const char *items[])
{
	struct dnssd_peer p;
	unsigned seen = 0;

	memset(&p, 0, sizeof(p));
	for (size_t i = 0; items[i] != NULL; i++)
		dnssd_txt_item(&p, &seen, items[i], strlen(items[i]));
	return p;
}

static void
check_txt(void)
{
	struct dnssd_peer p;
	char big[400];

	p = txt((const char *[]){"v=1", "id=" ID, "kf=" FP, NULL});
	CHECK_EQ_INT(p.version, 1);
	CHECK_EQ_STR(p.node, ID);
	CHECK_EQ_STR(p.kf, FP);
	p = txt((const char *[]){"kf=none", "V=2", "ID=" ID, "other=x", "", NULL});
	CHECK_EQ_INT(p.version, 2);
	CHECK_EQ_STR(p.node, ID);
	CHECK_EQ_STR(p.kf, "none");
	/* Nothing of ours. */
	p = txt((const char *[]){"txtvers=1", NULL});
	CHECK_EQ_INT(p.version, 0);
	CHECK_EQ_STR(p.node, "");
	CHECK_EQ_STR(p.kf, "");
	/* Only the first occurrence of a key counts, even a bad one. */
	p = txt((const char *[]){"v=1", "v=2", "id=" ID, "id=ffffffffffffffffffffffffffffffff", NULL});
	CHECK_EQ_INT(p.version, 1);
	CHECK_EQ_STR(p.node, ID);
	p = txt((const char *[]){"v=x", "v=1", "kf=nope", "kf=" FP, NULL});
	CHECK_EQ_INT(p.version, 0);
	CHECK_EQ_STR(p.kf, "");
	/* Malformed values. */
	const char *bad_v[] = {"v", "v=", "v=1x", "v=-1", "v=+1", "v= 1", "v=1234567890", NULL};
	for (size_t i = 0; bad_v[i] != NULL; i++) {
		p = txt((const char *[]){bad_v[i], NULL});
		if (!CHECK(p.version == 0))
			fprintf(stderr, "    item: %s\n", bad_v[i]);
	}
	p = txt((const char *[]){"v=123456789", NULL});
	CHECK_EQ_INT(p.version, 123456789);
	const char *bad_id[] = {"id", "id=", "id=0123456789abcdef0123456789abcde",
	                        "id=0123456789abcdef0123456789abcdef0",
	                        "id=0123456789ABCDEF0123456789ABCDEF",
	                        "id=0123456789abcdef0123456789abcdeg", NULL};
	for (size_t i = 0; bad_id[i] != NULL; i++) {
		p = txt((const char *[]){bad_id[i], NULL});
		if (!CHECK(p.node[0] == '\0'))
			fprintf(stderr, "    item: %s\n", bad_id[i]);
	}
	const char *bad_kf[] = {"kf", "kf=", "kf=NONE", "kf=nonee", "kf=fedcba987654321",
	                        "kf=fedcba98765432100", "kf=FEDCBA9876543210", NULL};
	for (size_t i = 0; bad_kf[i] != NULL; i++) {
		p = txt((const char *[]){bad_kf[i], NULL});
		if (!CHECK(p.kf[0] == '\0'))
			fprintf(stderr, "    item: %s\n", bad_kf[i]);
	}
	/* Oversized values (a TXT item holds up to 255 bytes; more is ours to
	 * refuse as well), and a NUL inside one. */
	memset(big, 'a', sizeof(big));
	memcpy(big, "id=", 3);
	memset(&p, 0, sizeof(p));
	unsigned seen = 0;
	dnssd_txt_item(&p, &seen, big, sizeof(big));
	CHECK_EQ_STR(p.node, "");
	memcpy(big, "kf=", 3);
	dnssd_txt_item(&p, &seen, big, sizeof(big));
	CHECK_EQ_STR(p.kf, "");
	memset(&p, 0, sizeof(p));
	seen = 0;
	dnssd_txt_item(&p, &seen, "kf=none\0xxxxxxxxxxxx", 20);
	CHECK_EQ_STR(p.kf, "");
	dnssd_txt_item(&p, &seen, "v=1\0", 4);
	CHECK_EQ_INT(p.version, 0);

	CHECK(dnssd_valid_node_id(ID));
	CHECK(!dnssd_valid_node_id("0123"));
	CHECK(!dnssd_valid_node_id(NULL));
	CHECK(dnssd_valid_key_fp(FP));
	CHECK(dnssd_valid_key_fp("none"));
	CHECK(!dnssd_valid_key_fp("None"));
	CHECK(!dnssd_valid_key_fp(""));
}

static bool
match(int family, const char *a, const char *b, unsigned prefix)
{
	unsigned char x[16], y[16];

	if (inet_pton(family, a, x) != 1 || inet_pton(family, b, y) != 1)
		return false;
	return dnssd_prefix_match(x, y, family == AF_INET ? 4 : 16, prefix);
}

static int
prefix_of(int family, const char *mask)
{
	unsigned char m[16];

	if (inet_pton(family, mask, m) != 1)
		return -2;
	return dnssd_mask_prefix(m, family == AF_INET ? 4 : 16);
}

static void
check_subnets(void)
{
	unsigned lo = if_nametoindex("lo");

	CHECK(match(AF_INET, "10.1.2.3", "10.1.2.200", 24));
	CHECK(!match(AF_INET, "10.1.2.3", "10.1.2.200", 25));
	CHECK(match(AF_INET, "10.1.2.3", "10.1.2.100", 25));
	CHECK(!match(AF_INET, "10.1.2.3", "10.1.3.3", 24));
	CHECK(match(AF_INET, "10.1.2.3", "10.1.3.3", 23));
	CHECK(match(AF_INET, "10.1.2.3", "192.168.0.1", 0));
	CHECK(match(AF_INET, "10.1.2.3", "10.1.2.3", 32));
	CHECK(!match(AF_INET, "10.1.2.3", "10.1.2.4", 32));
	CHECK(!match(AF_INET, "10.1.2.3", "10.1.2.3", 33));
	CHECK(match(AF_INET6, "fe80::1", "fe80::2:3", 64));
	CHECK(!match(AF_INET6, "fe80::1", "fe81::1", 64));
	CHECK(match(AF_INET6, "2001:db8:0:1::5", "2001:db8:0:2::5", 62));
	CHECK(!match(AF_INET6, "2001:db8:0:1::5", "2001:db8:0:2::5", 63));
	CHECK(match(AF_INET6, "2001:db8::1", "2001:db8::1", 128));
	CHECK(!match(AF_INET6, "2001:db8::1", "2001:db8::1", 129));

	CHECK_EQ_INT(prefix_of(AF_INET, "255.255.255.0"), 24);
	CHECK_EQ_INT(prefix_of(AF_INET, "255.255.254.0"), 23);
	CHECK_EQ_INT(prefix_of(AF_INET, "255.255.255.255"), 32);
	CHECK_EQ_INT(prefix_of(AF_INET, "0.0.0.0"), 0);
	CHECK_EQ_INT(prefix_of(AF_INET, "255.0.255.0"), -1);
	CHECK_EQ_INT(prefix_of(AF_INET, "255.255.255.1"), -1);
	CHECK_EQ_INT(prefix_of(AF_INET6, "ffff:ffff:ffff:ffff::"), 64);
	CHECK_EQ_INT(prefix_of(AF_INET6, "ffff:ffff:ffff:fffe::"), 63);
	CHECK_EQ_INT(prefix_of(AF_INET6, "ffff:ffff:ffff:ffff::1"), -1);

	/* lo holds 127.0.0.1/8 wherever this runs. */
	CHECK(lo != 0);
	CHECK(dnssd_same_subnet("127.0.0.9", (int)lo));
	CHECK(dnssd_same_subnet("127.200.0.1", (int)lo));
	CHECK(!dnssd_same_subnet("10.1.2.3", (int)lo));
	CHECK(!dnssd_same_subnet("127.0.0.9", 0));
	CHECK(!dnssd_same_subnet("not an address", (int)lo));
}

static void
kind_is(const char *listen, enum dnssd_listen_kind want, int want_family)
{
	int family = 0;
	enum dnssd_listen_kind k = dnssd_listen_kind(listen, &family);

	if (!CHECK(k == want && (want == DNSSD_LISTEN_INVALID || family == want_family)))
		fprintf(stderr, "    listen: %s: kind %d family %d\n", listen ? listen : "(null)",
		        (int)k, family);
}

static void
check_listen(void)
{
	unsigned lo = if_nametoindex("lo");

	kind_is("127.0.0.1", DNSSD_LISTEN_LOOPBACK, AF_INET);
	kind_is("127.1.2.3", DNSSD_LISTEN_LOOPBACK, AF_INET);
	kind_is("::1", DNSSD_LISTEN_LOOPBACK, AF_INET6);
	kind_is("[::1]", DNSSD_LISTEN_LOOPBACK, AF_INET6);
	kind_is("::ffff:127.0.0.1", DNSSD_LISTEN_LOOPBACK, AF_INET6);
	kind_is("0.0.0.0", DNSSD_LISTEN_WILDCARD, AF_INET);
	kind_is("::", DNSSD_LISTEN_WILDCARD, AF_INET6);
	kind_is("[::]", DNSSD_LISTEN_WILDCARD, AF_INET6);
	kind_is("10.88.0.1", DNSSD_LISTEN_SPECIFIC, AF_INET);
	kind_is("128.0.0.1", DNSSD_LISTEN_SPECIFIC, AF_INET);
	kind_is("2001:db8::1", DNSSD_LISTEN_SPECIFIC, AF_INET6);
	kind_is("[fe80::1%lo]", DNSSD_LISTEN_SPECIFIC, AF_INET6);
	kind_is("fe80::1%lo", DNSSD_LISTEN_SPECIFIC, AF_INET6);
	kind_is("localhost", DNSSD_LISTEN_INVALID, 0);
	kind_is("", DNSSD_LISTEN_INVALID, 0);
	kind_is("[]", DNSSD_LISTEN_INVALID, 0);
	kind_is("[10.0.0.1", DNSSD_LISTEN_INVALID, 0);
	kind_is("10.0.0.1%lo", DNSSD_LISTEN_INVALID, 0);
	kind_is("fe80::1%", DNSSD_LISTEN_INVALID, 0);
	kind_is("1.2.3", DNSSD_LISTEN_INVALID, 0);
	kind_is(NULL, DNSSD_LISTEN_INVALID, 0);

	char why[256];
	CHECK(!dnssd_listen_announced("127.0.0.1", why, sizeof(why)));
	CHECK(strstr(why, "loopback") != NULL);
	CHECK(!dnssd_listen_announced("[::1]", why, sizeof(why)));
	CHECK(!dnssd_listen_announced("localhost", why, sizeof(why)));
	CHECK(why[0] != '\0');
	CHECK(dnssd_listen_announced("0.0.0.0", why, sizeof(why)));
	CHECK(dnssd_listen_announced("10.88.0.1", why, sizeof(why)));
	CHECK(dnssd_listen_announced("fe80::1%lo", why, sizeof(why)));

	CHECK_EQ_INT(dnssd_listen_ifindex("127.0.0.1"), lo);
	CHECK_EQ_INT(dnssd_listen_ifindex("192.0.2.77"), 0); /* TEST-NET-1: on no interface */
	CHECK_EQ_INT(dnssd_listen_ifindex("[fe80::1%lo]"), lo);
	CHECK_EQ_INT(dnssd_listen_ifindex("fe80::1%7"), 7);
	CHECK_EQ_INT(dnssd_listen_ifindex("nonsense"), 0);
}

/* ---- Without avahi-daemon ------------------------------------------------ */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_lines[8][256];
static int log_count;

static void log_cb(void *arg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
log_cb(void *arg, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&log_mu);
	if (log_count < 8) {
		va_start(ap, fmt);
		vsnprintf(log_lines[log_count], sizeof(log_lines[0]), fmt, ap);
		va_end(ap);
	}
	log_count++;
	pthread_mutex_unlock(&log_mu);
}

static int
logged(void)
{
	int n;

	pthread_mutex_lock(&log_mu);
	n = log_count;
	pthread_mutex_unlock(&log_mu);
	return n;
}

static void
log_reset(void)
{
	pthread_mutex_lock(&log_mu);
	log_count = 0;
	memset(log_lines, 0, sizeof(log_lines));
	pthread_mutex_unlock(&log_mu);
}

static int watch_calls;

static void
watch_cb(void *arg, bool up, const struct dnssd_peer *p)
{
	__atomic_add_fetch(&watch_calls, 1, __ATOMIC_SEQ_CST);
}

static void
check_no_daemon(void)
{
	struct dnssd_announce_config c = {.listen = "127.0.0.1", .port = 7654, .node_id = ID,
	                                  .key_fp = FP, .log = log_cb};
	struct dnssd_announce *a = (void *)1;
	struct dnssd_watch *w = (void *)1;
	struct dnssd_peer *peers = (void *)1;
	size_t n = 99;
	char why[128] = "";

	/* Whatever this machine has, a bus nobody listens on. */
	setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bgcopy-test-bus", 1);

	CHECK_EQ_INT(dnssd_browse_once(300, 0, &peers, &n, why, sizeof(why)), BG_EAGAIN);
	CHECK(peers == NULL);
	CHECK_EQ_INT(n, 0);
	CHECK(why[0] != '\0');

	/* Refused before anything starts. */
	CHECK_EQ_INT(dnssd_announce_start(&c, &a), BG_ENOTIMPL);
	CHECK(a == NULL);
	CHECK_EQ_INT(logged(), 1);
	CHECK(strstr(log_lines[0], "loopback") != NULL);
	c.listen = "::1";
	CHECK_EQ_INT(dnssd_announce_start(&c, &a), BG_ENOTIMPL);
	c.listen = "0.0.0.0";
	c.node_id = "0123";
	CHECK_EQ_INT(dnssd_announce_start(&c, &a), BG_EINVAL);
	c.node_id = ID;
	c.key_fp = "NONE";
	CHECK_EQ_INT(dnssd_announce_start(&c, &a), BG_EINVAL);
	c.key_fp = FP;
	c.port = 0;
	CHECK_EQ_INT(dnssd_announce_start(&c, &a), BG_EINVAL);
	c.port = 7654;
	c.listen = "localhost";
	CHECK_EQ_INT(dnssd_announce_start(&c, &a), BG_EINVAL);
	c.listen = "192.0.2.77";
	CHECK_EQ_INT(dnssd_announce_start(&c, &a), BG_EINVAL);

	/* Announcing without a daemon works (it waits for one), says so once
	 * and not again at each retry (every second: wait for two). */
	log_reset();
	c.listen = "0.0.0.0";
	CHECK_EQ_INT(dnssd_announce_start(&c, &a), 0);
	CHECK(a != NULL);
	sleep(2);
	CHECK_EQ_INT(logged(), 1);
	CHECK(strstr(log_lines[0], "avahi-daemon is not running") != NULL);
	dnssd_announce_stop(a);
	CHECK_EQ_INT(logged(), 1);
	dnssd_announce_stop(NULL);

	/* So does a watch; stopping it calls nothing. */
	log_reset();
	CHECK_EQ_INT(dnssd_watch_start(watch_cb, NULL, log_cb, NULL, &w), 0);
	CHECK(w != NULL);
	sleep(2);
	CHECK_EQ_INT(logged(), 1);
	CHECK(strstr(log_lines[0], "avahi-daemon is not running") != NULL);
	dnssd_watch_stop(w);
	CHECK_EQ_INT(watch_calls, 0);
	dnssd_watch_stop(NULL);
	CHECK_EQ_INT(dnssd_watch_start(NULL, NULL, NULL, NULL, &w), BG_EINVAL);
}

int
main(void)
{
	check_txt();
	check_subnets();
	check_listen();
	check_no_daemon();
	return check_done();
}
