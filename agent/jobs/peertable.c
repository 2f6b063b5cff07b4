/*
 * peertable.c - the peer table (peertable.h): static peers, a DNS name's
 * addresses and DNS-SD peers, merged for the jobs that name no peer.
 *
 * The merge is a pure function of its inputs, so that its rules (order,
 * duplicates, this node, subnets, keys) are tested without Avahi.  Around
 * it, the table holds what the DNS name and DNS-SD said last: fetched once
 * for `get`, kept current for the daemon (a watch thread updates the mDNS
 * list; each job takes a copy under the lock).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "peertable.h"

#define MDNS_MAX 256 /* DNS-SD peers remembered (live table) */
#define BG_STR_(x) #x
#define BG_STR(x) BG_STR_(x)

static const char *const source_names[] = {
	[PEER_SRC_OPTION] = "option", [PEER_SRC_STATIC] = "static",
	[PEER_SRC_DNS] = "dns",       [PEER_SRC_MDNS] = "mdns",
};

const char *
peer_source_name(enum peer_source s)
{
	return (unsigned)s < sizeof(source_names) / sizeof(source_names[0]) ? source_names[s] : "option";
}

const char *
peer_key_state_name(enum peer_key_state k)
{
	return k == PEER_KEY_MATCH ? "match" : k == PEER_KEY_MISMATCH ? "mismatch" : "unknown";
}

/* ---- The merge ------------------------------------------------------------ */

/* A numeric host in its one spelling (inet_ntop's: IPv6 lowercase and
 * shortest), so that a peer written two ways is one peer (one row, one
 * store key); a name is left as written.  v6: the host is an IPv6 address. */
static void
host_canonical(char *host, size_t len, bool *v6)
{
	unsigned char a[sizeof(struct in6_addr)];
	char text[INET6_ADDRSTRLEN];
	int af = strchr(host, ':') != NULL ? AF_INET6 : AF_INET;

	*v6 = af == AF_INET6;
	if (inet_pton(af, host, a) == 1 && inet_ntop(af, a, text, sizeof(text)) != NULL)
		snprintf(host, len, "%s", text);
}

/* A static peer that cannot be asked: listed as rejected with why, so that
 * `bgcopy peers` shows it (a name too long is shown cut, ending "..."). */
static void
row_unusable(struct peer_row *r, const char *hp, enum peer_source src, const char *why)
{
	size_t len = strlen(hp);

	memset(r, 0, sizeof(*r));
	if (len > STORE_PEER_KEY_MAX) {
		snprintf(r->peer, sizeof(r->peer), "%.*s...", STORE_PEER_KEY_MAX - 3, hp);
	} else {
		snprintf(r->peer, sizeof(r->peer), "%s", hp);
	}
	memcpy(r->addr, r->peer, sizeof(r->addr));
	r->source = src;
	r->rejected = true;
	snprintf(r->reason, sizeof(r->reason), "%s", why);
}

/* Splits HOST:PORT (an IPv6 HOST in brackets) into a row, a numeric host
 * in its canonical spelling; false, and a rejected row saying why, when hp
 * is no such thing or longer than a store key (STORE_PEER_KEY_MAX). */
static bool
row_from_hostport(struct peer_row *r, const char *hp, enum peer_source src)
{
	const char *colon = strrchr(hp, ':'), *h = hp;
	char host[STORE_PEER_KEY_MAX + 1];
	unsigned char a6[sizeof(struct in6_addr)];
	size_t hlen;
	uint64_t port;
	bool v6;

	if (strlen(hp) > STORE_PEER_KEY_MAX) {
		row_unusable(r, hp, src, "longer than " BG_STR(STORE_PEER_KEY_MAX) " bytes");
		return false;
	}
	if (colon == NULL || colon == hp || colon[1] == '\0' ||
	    bg_parse_u64(colon + 1, strlen(colon + 1), 65535, &port) != 0 || port == 0) {
		row_unusable(r, hp, src, "not HOST:PORT (PORT 1-65535)");
		return false;
	}
	hlen = (size_t)(colon - hp);
	if (hp[0] == '[') {
		if (hlen < 3 || hp[hlen - 1] != ']') {
			row_unusable(r, hp, src, "not [IPv6]:PORT");
			return false;
		}
		h++;
		hlen -= 2;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	v6 = strchr(host, ':') != NULL;
	if (v6 != (h != hp) || (v6 && inet_pton(AF_INET6, host, a6) != 1)) {
		row_unusable(r, hp, src, "not HOST:PORT (an IPv6 HOST as [ADDR])");
		return false;
	}
	host_canonical(host, sizeof(host), &v6);
	memset(r, 0, sizeof(*r));
	snprintf(r->addr, sizeof(r->addr), "%s", host);
	snprintf(r->peer, sizeof(r->peer), v6 ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
	r->port = (unsigned)port;
	r->source = src;
	return true;
}

/* A row for a numeric address and port. */
static void
row_from_addr(struct peer_row *r, const char *addr, unsigned port, enum peer_source src)
{
	bool v6;

	memset(r, 0, sizeof(*r));
	snprintf(r->addr, sizeof(r->addr), "%s", addr);
	host_canonical(r->addr, sizeof(r->addr), &v6);
	snprintf(r->peer, sizeof(r->peer), v6 ? "[%s]:%u" : "%s:%u", r->addr, port);
	r->port = port;
	r->source = src;
}

static struct peer_row *
find_peer(struct peer_row *rows, size_t n, const char *peer)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(rows[i].peer, peer) == 0)
			return &rows[i];
	return NULL;
}

/* Whether node is listed already, for a row that is asked (rejected
 * false) by a row that is asked too: a rejected row (a forged
 * announcement with a real node's id, say) never hides the real one.  A
 * rejected row is left out behind any row of its node. */
static bool
node_listed(const struct peer_row *rows, size_t n, const char *node, bool rejected)
{
	for (size_t i = 0; node[0] != '\0' && i < n; i++)
		if (strcmp(rows[i].node, node) == 0 && (rejected || !rows[i].rejected))
			return true;
	return false;
}

static void
add_mdns(const struct peer_table_config *c, const char *kf, const struct dnssd_peer *p,
         struct peer_row *out, size_t max, size_t *n)
{
	struct peer_row row, *same;

	if (p->addr[0] == '\0' || p->port == 0 || p->port > 65535)
		return;
	if (c->self != NULL && p->node[0] != '\0' && strcmp(p->node, c->self) == 0)
		return; /* this node's own peerd */
	if (!p->same_subnet && !c->any_subnet)
		return; /* BITS asks peers of its own subnet only */
	if (strncasecmp(p->addr, "fe80:", 5) == 0)
		return; /* needs a zone to be reached: its IPv4 or global address serves */
	row_from_addr(&row, p->addr, p->port, PEER_SRC_MDNS);
	snprintf(row.node, sizeof(row.node), "%s", p->node);
	snprintf(row.name, sizeof(row.name), "%s", p->name);
	if (p->kf[0] == '\0') {
		row.key = PEER_KEY_UNKNOWN;
	} else if (kf != NULL && strcmp(p->kf, kf) == 0) {
		row.key = PEER_KEY_MATCH;
	} else {
		row.key = PEER_KEY_MISMATCH;
		row.rejected = true;
		snprintf(row.reason, sizeof(row.reason), "key mismatch");
	}
	if (!row.rejected && p->version > DNSSD_VERSION) {
		row.rejected = true;
		snprintf(row.reason, sizeof(row.reason), "protocol version %u", p->version);
	}
	if ((same = find_peer(out, *n, row.peer)) != NULL) {
		/* Configured already: what DNS-SD knows of it is added. */
		if (same->node[0] == '\0')
			memcpy(same->node, row.node, sizeof(row.node));
		if (same->name[0] == '\0')
			memcpy(same->name, row.name, sizeof(row.name));
		if (same->key == PEER_KEY_UNKNOWN)
			same->key = row.key;
		return;
	}
	if (node_listed(out, *n, row.node, row.rejected) || *n >= max)
		return; /* the same node at another address (IPv6, a second link) */
	out[(*n)++] = row;
}

void
peer_table_merge(const struct peer_table_config *c, const char *kf, const struct dns_peer *dns,
                 size_t ndns, const struct dnssd_peer *mdns, size_t nmdns, struct peer_row *out,
                 size_t max, size_t *n)
{
	struct peer_row row;

	*n = 0;
	/* A static peer that cannot be asked is listed, rejected, for
	 * `bgcopy peers` to show why. */
	for (size_t i = 0; i < c->nstatics && *n < max; i++) {
		if (c->statics[i] == NULL)
			continue;
		(void)row_from_hostport(&row, c->statics[i], PEER_SRC_STATIC);
		if (find_peer(out, *n, row.peer) == NULL)
			out[(*n)++] = row;
	}
	for (size_t i = 0; i < ndns && *n < max; i++) {
		row_from_addr(&row, dns[i].addr, dns[i].port, PEER_SRC_DNS);
		if (find_peer(out, *n, row.peer) == NULL)
			out[(*n)++] = row;
	}
	/* IPv4 first: a node seen at both is asked at the address every
	 * client reaches. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < nmdns; i++)
			if ((strchr(mdns[i].addr, ':') == NULL) == (pass == 0))
				add_mdns(c, kf, &mdns[i], out, max, n);
}

/* ---- The table -------------------------------------------------------------- */

struct peer_table {
	struct peer_table_config c;
	char **statics;
	char *dns_name;
	char *home;
	char self[BG_NODE_ID_LEN + 1];
	bool live;
	pthread_mutex_t lock;        /* everything below */
	pthread_cond_t dns_cond;     /* a lookup of the DNS name ended */
	bool dns_done, mdns_done;    /* dns_done: a lookup ended (good or not) */
	bool dns_busy;               /* a thread is looking the DNS name up, unlocked */
	int64_t dns_at;              /* when the DNS name was last looked up (live) */
	struct dns_peer dns[PEER_TABLE_MAX];
	size_t ndns;
	char dns_why[256];
	struct dnssd_peer *mdns;     /* MDNS_MAX */
	size_t nmdns;
	struct dnssd_watch *watch;
};

static atomic_flag warned = ATOMIC_FLAG_INIT;

/* One line per process, whatever the number of jobs. */
static void
warn_discovery(const char *why)
{
	if (!atomic_flag_test_and_set(&warned))
		bg_complain("bgcopy", "peer discovery unavailable: %s; using static and DNS peers", why);
}

static void
watch_log(void *arg, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	(void)arg;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	bg_complain("bgcopy", "peer discovery: %s", line);
}

/* A sighting: one instance name on one interface in one address family
 * (its address may change while it stays the same sighting). */
static bool
same_sighting(const struct dnssd_peer *a, const struct dnssd_peer *b)
{
	return strcmp(a->name, b->name) == 0 && a->ifindex == b->ifindex &&
	       (strchr(a->addr, ':') == NULL) == (strchr(b->addr, ':') == NULL);
}

static void
on_watch(void *arg, bool up, const struct dnssd_peer *p)
{
	peer_table_feed(arg, up, p);
}

void
peer_table_feed(struct peer_table *t, bool up, const struct dnssd_peer *p)
{

	pthread_mutex_lock(&t->lock);
	if (up) {
		size_t i;

		for (i = 0; i < t->nmdns; i++)
			if (same_sighting(&t->mdns[i], p))
				break;
		if (i < t->nmdns)
			t->mdns[i] = *p; /* resolved again: its data may have changed */
		else if (t->nmdns < MDNS_MAX)
			t->mdns[t->nmdns++] = *p;
	} else {
		for (size_t i = 0; i < t->nmdns;) {
			if (same_sighting(&t->mdns[i], p))
				t->mdns[i] = t->mdns[--t->nmdns];
			else
				i++;
		}
	}
	pthread_mutex_unlock(&t->lock);
}

/* This node's id, needed only to pass over its own announcement: read (or
 * made) when DNS-SD is first asked, so that a get that needs no peer
 * leaves the home as it was.  Without it the node's own peerd is asked
 * too, which answers misses: no harm. */
static void
find_self(struct peer_table *t)
{
	if (t->c.self != NULL || t->home == NULL)
		return;
	if (bg_node_id(t->home, t->self) == 0)
		t->c.self = t->self;
}

int
peer_table_new(const struct peer_table_config *c, bool live, struct peer_table **out)
{
	struct peer_table *t = calloc(1, sizeof(*t));
	int err = BG_ENOMEM;

	*out = NULL;
	if (t == NULL)
		return BG_ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->dns_cond, NULL);
	t->c = *c;
	t->live = live;
	if ((t->mdns = calloc(MDNS_MAX, sizeof(*t->mdns))) == NULL)
		goto fail;
	if (c->nstatics > 0) {
		if ((t->statics = calloc(c->nstatics, sizeof(*t->statics))) == NULL)
			goto fail;
		for (size_t i = 0; i < c->nstatics; i++)
			if (c->statics[i] != NULL && (t->statics[i] = strdup(c->statics[i])) == NULL)
				goto fail;
	}
	t->c.statics = (const char *const *)t->statics;
	if (c->dns_name != NULL && c->dns_name[0] != '\0' && (t->dns_name = strdup(c->dns_name)) == NULL)
		goto fail;
	t->c.dns_name = t->dns_name;
	if (c->self != NULL)
		snprintf(t->self, sizeof(t->self), "%s", c->self);
	t->c.self = c->self != NULL ? t->self : NULL;
	if (c->self == NULL && c->home != NULL && (t->home = strdup(c->home)) == NULL)
		goto fail;
	t->c.home = t->home;
	if (live && c->discovery) {
		find_self(t);
		err = dnssd_watch_start(on_watch, t, watch_log, NULL, &t->watch);
		if (err == BG_ENOMEM)
			goto fail;
		if (err != 0) {
			t->watch = NULL;
			warn_discovery(err == BG_EAGAIN ? "avahi-daemon is not running" : bg_strerror(err));
		}
		t->mdns_done = true;
	}
	*out = t;
	return 0;
fail:
	peer_table_free(t);
	return err;
}

void
peer_table_free(struct peer_table *t)
{
	if (t == NULL)
		return;
	/* The watch's thread calls on_watch: it ends before the table goes. */
	dnssd_watch_stop(t->watch);
	for (size_t i = 0; t->statics != NULL && i < t->c.nstatics; i++)
		free(t->statics[i]);
	free(t->statics);
	free(t->dns_name);
	free(t->home);
	free(t->mdns);
	pthread_cond_destroy(&t->dns_cond);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* The DNS name's addresses, looked up when not yet (or, live, when older
 * than PEER_TABLE_DNS_TTL).  Called with the lock held, and returns with it
 * held, but the lookup (seconds, when the resolver is slow) runs without
 * it: one thread looks up, marked by dns_busy; the others go on with the
 * list as it is (the Avahi watch's peer_table_feed never waits for DNS).
 * Only before the first lookup has ended do they wait for it, so that the
 * jobs that start together all get the name's addresses.  A refresh that
 * fails (no answer in time, a resolver error) keeps the last good list; an
 * answer that the name has no address (BG_ENOENT) empties it. */
static void
refresh_dns(struct peer_table *t)
{
	struct dns_peer found[PEER_TABLE_MAX];
	char why[sizeof(t->dns_why)];
	int64_t now = bg_now();
	size_t n = 0;
	int err;

	if (t->dns_name == NULL)
		return;
	while (t->dns_busy && !t->dns_done)
		pthread_cond_wait(&t->dns_cond, &t->lock);
	if (t->dns_busy || (t->dns_done && (!t->live || now - t->dns_at < PEER_TABLE_DNS_TTL)))
		return;
	t->dns_busy = true;
	t->dns_at = now;
	why[0] = '\0';
	pthread_mutex_unlock(&t->lock);
	/* dns_name is the table's own, never changed: read without the lock. */
	err = (t->c.resolve != NULL ? t->c.resolve : dns_peers_resolve)(
	    t->dns_name, DNS_PEERS_TIMEOUT_MS, found, PEER_TABLE_MAX, &n, why, sizeof(why));
	pthread_mutex_lock(&t->lock);
	if (err == 0) {
		memcpy(t->dns, found, n * sizeof(found[0]));
		t->ndns = n;
		t->dns_why[0] = '\0';
	} else {
		if (err == BG_ENOENT || err == BG_EINVAL)
			t->ndns = 0;
		if (why[0] == '\0')
			snprintf(why, sizeof(why), "%s: %s", t->dns_name, bg_strerror(err));
		if (t->ndns > 0)
			snprintf(t->dns_why, sizeof(t->dns_why), "%.200s (the %zu addresses found before kept)",
			         why, t->ndns);
		else
			snprintf(t->dns_why, sizeof(t->dns_why), "%s", why);
	}
	t->dns_done = true;
	t->dns_busy = false;
	pthread_cond_broadcast(&t->dns_cond);
}

/* The one-shot browse, at the first need. */
static void
browse_once(struct peer_table *t)
{
	struct dnssd_peer *found = NULL;
	char why[256] = "";
	size_t n = 0;
	int err;

	if (t->mdns_done || !t->c.discovery)
		return;
	t->mdns_done = true;
	find_self(t);
	/* A download's browse ends at the first peer avahi-daemon has
	 * cached; a listing (browse_ms given) waits for every answer. */
	if (t->c.browse_ms > 0)
		err = dnssd_browse_once(t->c.browse_ms, 0, &found, &n, why, sizeof(why));
	else
		err = dnssd_browse_once(PEER_TABLE_BROWSE_MS, DNSSD_FIRST_CACHED, &found, &n, why,
		                        sizeof(why));
	if (err != 0) {
		warn_discovery(why[0] != '\0' ? why : bg_strerror(err));
		n = 0;
	}
	if (n > MDNS_MAX)
		n = MDNS_MAX;
	if (n > 0)
		memcpy(t->mdns, found, n * sizeof(*found));
	t->nmdns = n;
	free(found);
}

int
peer_table_get(struct peer_table *t, const char *kf, struct peer_row **rows, size_t *n)
{
	struct peer_row *r = calloc(PEER_TABLE_MAX, sizeof(*r));

	*rows = NULL;
	*n = 0;
	if (r == NULL)
		return BG_ENOMEM;
	pthread_mutex_lock(&t->lock);
	refresh_dns(t);
	browse_once(t);
	peer_table_merge(&t->c, kf, t->dns, t->ndns, t->mdns, t->nmdns, r, PEER_TABLE_MAX, n);
	pthread_mutex_unlock(&t->lock);
	if (*n == 0) {
		free(r);
		return 0;
	}
	*rows = r;
	return 0;
}

bool
peer_table_dns_problem(struct peer_table *t, char *why, size_t whylen)
{
	bool problem;

	pthread_mutex_lock(&t->lock);
	problem = t->dns_why[0] != '\0';
	if (whylen > 0)
		snprintf(why, whylen, "%s", t->dns_why);
	pthread_mutex_unlock(&t->lock);
	return problem;
}
