/*
 * dnssd.h - DNS-SD for bgcopy peers over Avahi (libavahi-client): peerd
 * announces _bgcopy._tcp, the agent browses for it.  A library of its own
 * (bgdnssd) so that only the programs that discover link libavahi-client.
 *
 * TXT records of a bgcopy peer: "v=1" (DNSSD_VERSION), "id=NODE" (bg_node_id,
 * 32 lowercase hex), "kf=FP" (peer_key_fingerprint: 16 hex, or "none").
 * Neither side needs a running avahi-daemon: without one, an announcement
 * waits for it and a browse reports BG_EAGAIN.
 */
#ifndef BG_DNSSD_H
#define BG_DNSSD_H

#include <stdbool.h>
#include <stddef.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include "cache.h"

#define DNSSD_TYPE "_bgcopy._tcp"
#define DNSSD_VERSION 1
#define DNSSD_NAME_MAX 64 /* bytes of a service instance name, with the NUL */

/* A log line (no trailing newline), from any thread; NULL: dropped. */
typedef void (*dnssd_log_fn)(void *arg, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- Announce (peerd) ---------------------------------------------------- */
struct dnssd_announce_config {
	const char *listen;  /* the address peerd listens on: a loopback one is not
	                      * announced; a wildcard one on every interface; another
	                      * on the interface that holds it */
	unsigned port;
	const char *node_id; /* BG_NODE_ID_LEN hex */
	const char *key_fp;  /* peer_key_fingerprint() */
	dnssd_log_fn log;
	void *log_arg;
};
struct dnssd_announce;
/* Whether a listen address would be announced: false for a loopback (or
 * malformed) one, why saying so in a phrase for a log line.  For a caller
 * that has work to do only when announcing (peerd makes HOME/node-id). */
bool dnssd_listen_announced(const char *listen, char *why, size_t whylen);
/* Starts announcing (in a thread of its own); keeps trying while
 * avahi-daemon is absent and announces again after it restarts.  0, or
 * BG_ENOMEM / BG_EINVAL; BG_ENOTIMPL when there is nothing to announce
 * (loopback address: logged). */
int dnssd_announce_start(const struct dnssd_announce_config *c, struct dnssd_announce **out) BG_WUR;
/* Withdraws the service (goodbye packets) and frees a. NULL: nothing.
 * Nothing is logged after it returns. */
void dnssd_announce_stop(struct dnssd_announce *a);

/* ---- Browse (agent) ------------------------------------------------------ */
struct dnssd_peer {
	char name[DNSSD_NAME_MAX];      /* service instance name */
	char addr[INET6_ADDRSTRLEN];    /* numeric */
	unsigned port;
	int ifindex;                    /* interface it was seen on */
	bool same_subnet;               /* addr is inside a subnet of that interface */
	unsigned version;               /* TXT v=, 0 when absent or not a number */
	char node[BG_NODE_ID_LEN + 1];  /* TXT id=, "" when absent or malformed */
	char kf[PEER_KEY_FP_LEN + 1];   /* TXT kf=, "" when absent or malformed */
	int family;                     /* AF_INET or AF_INET6, addr's */
	bool local;                     /* published on this machine (maybe by
	                                 * our own peerd: compare node) */
};

/* Browses and resolves for at most timeout_ms; returns earlier once Avahi
 * has said all it knows and every resolve has ended, and with
 * DNSSD_FIRST_CACHED also once avahi-daemon's cache has given a peer on
 * another machine and it is resolved (a download needs a peer, not every
 * one).  Resolves pending at the deadline get DNSSD_RESOLVE_GRACE more.  *out (malloc'd, free() it; NULL when *n is 0).  BG_EAGAIN when
 * avahi-daemon cannot be reached (why says so), BG_ENOMEM. */
#define DNSSD_FIRST_CACHED 0x1u
/* Resolves still pending at the deadline may take this many times the
 * timeout more (a busy avahi-daemon); a browse that found nothing ends at
 * the deadline. */
#define DNSSD_RESOLVE_GRACE 3
int dnssd_browse_once(unsigned timeout_ms, unsigned flags, struct dnssd_peer **out, size_t *n,
                      char *why, size_t whylen) BG_WUR;

/* A live browse: cb(arg, true, p) when a peer is resolved (again: its data
 * may have changed), cb(arg, false, p) when it is withdrawn or stops
 * resolving, or when avahi-daemon goes away (then for every peer known;
 * logged once; the watch reconnects when the daemon is back).  A peer is
 * one sighting: (name, ifindex, family); a down carries the data of the
 * last up.  Called from the watch's own thread, which must not call
 * dnssd_watch_stop().  Starting without avahi-daemon is no error (0,
 * logged once): the watch waits for it.  0, BG_ENOMEM, BG_EINVAL. */
typedef void (*dnssd_watch_fn)(void *arg, bool up, const struct dnssd_peer *p);
struct dnssd_watch;
int dnssd_watch_start(dnssd_watch_fn cb, void *arg, dnssd_log_fn log, void *log_arg,
                      struct dnssd_watch **out) BG_WUR;
/* Stops the watch: no callback runs once it returns (none reports the
 * peers down).  NULL: nothing. */
void dnssd_watch_stop(struct dnssd_watch *w);

#endif /* BG_DNSSD_H */
