/*
 * dnssd_int.h - bgdnssd's insides: the pure parts (TXT records, subnets,
 * listen addresses), exposed for the unit tests, and the connection to
 * avahi-daemon that the announcement and the live browse share.
 */
#ifndef BG_DNSSD_INT_H
#define BG_DNSSD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <avahi-client/client.h>
#include <avahi-common/thread-watch.h>

#include "dnssd.h"

/* ---- TXT records (common.c) -----------------------------------------------
 * One item of a TXT record ("key=value", bytes, not NUL-terminated) into p.
 * Keys are matched without regard to case and only their first occurrence
 * counts (RFC 6763 6.4); seen carries that between the items of one record
 * (start it at 0, with p's version 0 and node/kf empty).  A value that is
 * not exactly what bgcopy publishes leaves its field empty (version 0):
 * "v" 1 to 9 decimal digits, "id" BG_NODE_ID_LEN lowercase hex, "kf"
 * PEER_KEY_FP_LEN lowercase hex or "none". */
void dnssd_txt_item(struct dnssd_peer *p, unsigned *seen, const void *item, size_t len);
/* The checks above, for what is announced. */
bool dnssd_valid_node_id(const char *s);
bool dnssd_valid_key_fp(const char *s);

/* ---- Subnets (common.c) ---------------------------------------------------
 * Whether the first prefix bits of a and b (len bytes each: 4 or 16) are
 * equal.  A prefix longer than the address is never matched. */
bool dnssd_prefix_match(const void *a, const void *b, size_t len, unsigned prefix);
/* The prefix length of a netmask (len bytes); -1 when it is not contiguous. */
int dnssd_mask_prefix(const void *mask, size_t len);
/* Whether addr (numeric) is inside one of the subnets of interface
 * ifindex, as getifaddrs() tells them now. */
bool dnssd_same_subnet(const char *addr, int ifindex);

/* ---- Listen addresses (common.c) ------------------------------------------ */
enum dnssd_listen_kind {
	DNSSD_LISTEN_INVALID,  /* not a numeric address */
	DNSSD_LISTEN_LOOPBACK, /* 127.0.0.0/8, ::1, ::ffff:127.x: never announced */
	DNSSD_LISTEN_WILDCARD, /* 0.0.0.0, "::": every interface */
	DNSSD_LISTEN_SPECIFIC, /* one address: the interface holding it */
};
/* Classifies a listen address as peerd takes it ("10.0.0.1", "::",
 * "[fe80::1%eth0]"); *family gets AF_INET or AF_INET6 when it is valid. */
enum dnssd_listen_kind dnssd_listen_kind(const char *listen, int *family);
/* The index of the interface that holds the address listen (a
 * "%scope" suffix names it directly); 0 when none does. */
int dnssd_listen_ifindex(const char *listen);

/* Formats a line and hands it to log (NULL: dropped). */
void dnssd_logf(dnssd_log_fn log, void *arg, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- The connection to avahi-daemon (conn.c) ------------------------------
 * A client of its own in a thread of its own (avahi_threaded_poll) that
 * survives avahi-daemon (and the system bus) being absent, going away and
 * coming back.  The hooks run in that thread, the poll locked. */
struct dnssd_conn {
	/* Set by the owner before dnssd_conn_start(). */
	void *owner;
	/* The daemon runs (again: back is true after absent()): (re)create
	 * what lives in c. */
	void (*running)(void *owner, AvahiClient *c, bool back);
	/* Another client state (S_REGISTERING, S_COLLISION); may be NULL. */
	void (*state)(void *owner, AvahiClient *c, AvahiClientState s);
	/* The client and all its objects are about to be freed (daemon gone,
	 * reconnecting, stopping): forget them. */
	void (*lost)(void *owner);
	/* The daemon cannot be reached (first found so, or gone after it ran:
	 * was_running); called once per absence. */
	void (*absent)(void *owner, bool was_running, const char *why);

	/* The conn's own. */
	AvahiThreadedPoll *tp;
	const AvahiPoll *poll;
	AvahiClient *client;
	AvahiTimeout *timer;
	bool is_absent, was_running;
};
/* Creates the thread and the first client.  0 or BG_ENOMEM. */
int dnssd_conn_start(struct dnssd_conn *cn) BG_WUR;
/* Drops the client and connects again after delay_ms (poll locked). */
void dnssd_conn_reset(struct dnssd_conn *cn, unsigned delay_ms);
/* Stops the thread (no hook runs after it returns; never call it from a
 * hook), calls lost() while the client still exists (so the owner can free
 * its objects, which withdraws what they announced), frees everything. */
void dnssd_conn_stop(struct dnssd_conn *cn);

#endif /* BG_DNSSD_INT_H */
