/*
 * peertable.h - the peers a job asks when it names none: static peers from
 * bgcopy.conf, every address of a DNS name, and bgcopy-peerd nodes found by
 * DNS-SD (mDNS through Avahi), merged in that order.  `get` builds it once
 * (the mDNS browse only when a job needs peers); the daemon keeps it live.
 */
#ifndef BG_PEERTABLE_H
#define BG_PEERTABLE_H

#include <stdbool.h>
#include <stddef.h>

#include "dnssd.h"
#include "net.h"

#define PEER_TABLE_MAX 64          /* peers listed at once */
#define PEER_TABLE_BROWSE_MS 250   /* the one-shot mDNS browse's bound: a get with no peer adds at most ~300 ms; resolves of peers found may take DNSSD_RESOLVE_GRACE x more */
#define PEER_TABLE_DNS_TTL 60      /* seconds a DNS name's addresses are kept (live table) */

enum peer_source { PEER_SRC_OPTION, PEER_SRC_STATIC, PEER_SRC_DNS, PEER_SRC_MDNS };
/* "option" (--peer), "static", "dns", "mdns". */
const char *peer_source_name(enum peer_source s);

enum peer_key_state { PEER_KEY_UNKNOWN, PEER_KEY_MATCH, PEER_KEY_MISMATCH };
/* "unknown", "match", "mismatch". */
const char *peer_key_state_name(enum peer_key_state k);

/* One peer of the table. */
struct peer_row {
	char peer[STORE_PEER_KEY_MAX + 1]; /* HOST:PORT as asked (IPv6 in brackets) */
	char addr[STORE_PEER_KEY_MAX + 1]; /* HOST (no brackets) */
	unsigned port;
	enum peer_source source;
	char node[BG_NODE_ID_LEN + 1];      /* "" when not known */
	char name[DNSSD_NAME_MAX];          /* DNS-SD instance name, "" when none */
	enum peer_key_state key;
	bool rejected;                      /* listed, never asked */
	char reason[64];                    /* why rejected, "" otherwise */
};

/* What the table is built from (strings borrowed for the table's life). */
struct peer_table_config {
	const char *const *statics;  /* HOST:PORT */
	size_t nstatics;
	const char *dns_name;        /* or NULL */
	bool discovery;              /* browse mDNS */
	bool any_subnet;             /* mDNS peers off this node's subnets too */
	const char *self;            /* this node's id (its own announcement is skipped), or NULL: */
	const char *home;            /* ... read from (or made in) this home at the first browse */
	unsigned browse_ms;          /* the one-shot browse's bound, waiting for every answer
	                              * (bgcopy peers); 0: a download's, PEER_TABLE_BROWSE_MS
	                              * and ended by the first peer cached */
	/* The DNS name's lookup: NULL for dns_peers_resolve (tests give theirs). */
	int (*resolve)(const char *name, unsigned timeout_ms, struct dns_peer *out, size_t max,
	               size_t *n, char *why, size_t whylen);
};

/* The merge, without any I/O (unit-tested): statics, then the DNS name's
 * addresses, then mDNS peers (IPv4 before IPv6), each peer once (the first
 * of the same HOST:PORT, a numeric HOST in inet_ntop's spelling; the first
 * asked row of the same node id: a rejected row never hides an asked one,
 * and is left out behind any row of its node).  A static peer that is not
 * HOST:PORT (an IPv6 HOST as [ADDR], PORT 1-65535) or longer than
 * STORE_PEER_KEY_MAX is listed rejected, with why.  mDNS peers of
 * this node, on another subnet (unless any_subnet), or at a link-local
 * IPv6 address are left out; one whose key fingerprint differs from kf
 * (ours: peer_key_fingerprint(), "none" without a key) is listed as
 * rejected ("key mismatch").  At most max rows. */
void peer_table_merge(const struct peer_table_config *c, const char *kf, const struct dns_peer *dns,
                      size_t ndns, const struct dnssd_peer *mdns, size_t nmdns,
                      struct peer_row *out, size_t max, size_t *n);

struct peer_table;
/* A table over c (copied).  live: the daemon's, kept current by a DNS-SD
 * watch started here (when c->discovery); else one-shot: resolved and
 * browsed at the first peer_table_get that wants it. */
int peer_table_new(const struct peer_table_config *c, bool live, struct peer_table **out) BG_WUR;
void peer_table_free(struct peer_table *t);
/* The peers now, for a client whose key fingerprint is kf; thread-safe
 * (the DNS name is looked up without the table's lock: see peertable.c).
 * *rows is malloc'd (free() it; NULL when *n is 0).  When discovery is on
 * and Avahi cannot be reached, one warning line per process on stderr. */
int peer_table_get(struct peer_table *t, const char *kf, struct peer_row **rows, size_t *n) BG_WUR;
/* What the live table's DNS-SD watch calls (thread-safe): p resolved
 * (up) or withdrawn.  Tests feed a table through it. */
void peer_table_feed(struct peer_table *t, bool up, const struct dnssd_peer *p);
/* Whether the last lookup of the DNS name failed, and why, copied into
 * why (whylen bytes; "" when it did not, or there is no name); a failed
 * refresh of the live table says too that the last good list is kept.
 * Thread-safe. */
bool peer_table_dns_problem(struct peer_table *t, char *why, size_t whylen);

#endif /* BG_PEERTABLE_H */
