/*
 * config.h - bgcopy.conf: the settings bgcopy and bgcopy-peerd share
 * (discovery, peers, the peer key, peerd's address), read from
 * /etc/bgcopy/bgcopy.conf, then ${XDG_CONFIG_HOME:-$HOME/.config}/bgcopy/bgcopy.conf
 * (a later file overrides an earlier one key by key), or from $BGCOPY_CONFIG
 * alone when that is set (empty: no file at all).  Command-line options
 * override every file (bg_config_set).
 *
 * Format: one "key = value" per line; '#' starts a comment line; blank
 * lines are ignored; spaces around key and value are dropped.  Keys:
 *   discovery         on | off              (on)   mDNS announce and browse
 *   discovery_subnets same | any            (same) mDNS peers outside this
 *                                                   node's subnets are ignored
 *   peer              HOST:PORT, repeatable        static peers
 *   peer_dns          NAME                         every A/AAAA of NAME; port
 *                                                   from _bgcopy._tcp.NAME SRV,
 *                                                   else peerd's default
 *   peer_key          FILE (absolute)              HMAC key for peers
 *   peer_caching      off|client|server|both (server) new jobs' mode
 *   listen            numeric address  (127.0.0.1) peerd listens there
 *   port              0-65535              (7654)   peerd's port
 *   partial_wait_max  0-30 seconds         (10)     longest wait peerd grants
 *                                                   a /v1/partial or /v1/pieces
 *                                                   request (0: never waits)
 *   serve_connections_per_peer 0-1000      (8)      connections peerd accepts
 *                                                   from one address (0: no limit)
 *   fleet             on | off              (on)   downloads follow a peer fetching
 *                                                   the same URL, or join the
 *                                                   election of who fetches it
 *   fleet_owner       on | off              (on)   this node may be elected
 *   serve_max_rate    RATE | none           (none) peerd's bodies together, bytes/s
 *                                                   (serve_rate: its older name)
 *   max_rate          RATE | none           (none) the daemon's transfers together
 *                                                   (not foreground jobs)
 *   max_rate_schedule SCHEDULE | none       (none) the daemon's limit by day and
 *                                                   hour (cache.h's bg_rate_schedule);
 *                                                   max_rate applies outside its
 *                                                   windows unless it says "outside"
 * RATE: bytes/s, K M G T for powers of 1024; 0 or none: no limit.
 * An empty value for peer, peer_dns or peer_key sets none (so a user's
 * file can drop what the system's file named).  discovery also takes
 * yes/no and true/false.
 */
#ifndef BG_CONFIG_H
#define BG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "cache.h"

#define BG_CONFIG_PEERS_MAX 16
#define BG_CONFIG_SYSTEM_PATH "/etc/bgcopy/bgcopy.conf"
#define BG_CONFIG_PATH_MAX 4096 /* bytes of a file name, NUL included */
#define BG_CONF_PARTIAL_WAIT_DEFAULT_S 10   /* peerd.h's PEERD_PARTIAL_WAIT_DEFAULT_MS */
#define BG_CONF_PARTIAL_WAIT_MAX_S 30       /* PEER_PARTIAL_WAIT_MAX_MS */
#define BG_CONF_PER_PEER_DEFAULT 8          /* peerd.h's PEERD_PER_PEER_DEFAULT */
#define BG_CONF_PER_PEER_MAX 1000
#define BG_CONF_FLEET_ORIGIN_LIMIT 16        /* fleet_origin_max: 1 to this */
#define BG_CONF_FLEET_TAKEOVERS_DEFAULT 3
#define BG_CONF_FLEET_TAKEOVERS_MAX 16
#define BG_CONF_SERVE_RATE_MAX BG_RATE_MAX /* bytes/s (1 TiB/s) */

/* Where a setting's value came from. */
enum bg_conf_source {
	BG_CONF_DEFAULT,
	BG_CONF_FILE,    /* a file: where.file, where.line */
	BG_CONF_OPTION,  /* the command line (bg_config_set) */
};

enum bg_conf_key {
	BG_CONF_DISCOVERY,
	BG_CONF_DISCOVERY_SUBNETS,
	BG_CONF_PEER,
	BG_CONF_PEER_DNS,
	BG_CONF_PEER_KEY,
	BG_CONF_PEER_CACHING,
	BG_CONF_LISTEN,
	BG_CONF_PORT,
	BG_CONF_PARTIAL_WAIT_MAX,
	BG_CONF_SERVE_CONNECTIONS_PER_PEER,
	BG_CONF_FLEET,
	BG_CONF_FLEET_OWNER,
	BG_CONF_FLEET_ORIGIN_MAX,
	BG_CONF_FLEET_TAKEOVERS,
	BG_CONF_SERVE_RATE,
	BG_CONF_MAX_RATE,
	BG_CONF_MAX_RATE_SCHEDULE,
	BG_CONF_KEYS
};

struct bg_conf_where {
	enum bg_conf_source source;
	const char *file; /* points into struct bg_config's files (source FILE) */
	unsigned line;
};

struct bg_config {
	bool discovery;               /* discovery = on|off */
	bool discovery_any_subnet;    /* discovery_subnets = any */
	char *peers[BG_CONFIG_PEERS_MAX]; /* peer = HOST:PORT (in file order) */
	size_t npeers;
	char *peer_dns;               /* peer_dns = NAME, or NULL */
	char *peer_key;               /* peer_key = FILE, or NULL */
	char *peer_caching;           /* "off" | "client" | "server" | "both" */
	char *listen;                 /* peerd's address */
	unsigned port;                /* peerd's port */
	unsigned partial_wait_max;    /* seconds, 0-BG_CONF_PARTIAL_WAIT_MAX_S */
	bool fleet;                   /* fleet = on|off */
	bool fleet_owner;             /* fleet_owner = on|off */
	unsigned serve_per_peer;      /* peerd's connections per address, 0: no limit */
	unsigned fleet_origin_max;    /* origin fetches of one URL at once, 1-16 */
	unsigned fleet_takeovers;     /* re-elections per file, 0-16 */
	uint64_t serve_rate;          /* peerd's bodies, bytes/s, 0: no limit */
	uint64_t max_rate;            /* the daemon's transfers together, bytes/s, 0: no limit */
	char *max_rate_schedule;      /* as written, or NULL: none */
	bool has_schedule;
	struct bg_rate_schedule schedule; /* max_rate_schedule parsed (has_schedule) */
	struct bg_conf_where where[BG_CONF_KEYS];
	char *files[3];               /* the files read, in order (NULL after the last) */
};

/* The name of key k as written in the file ("discovery", ...). */
const char *bg_config_key_name(enum bg_conf_key k);

/* Fills c with the defaults, then with the files.  0; BG_EINVAL with why
 * "FILE:LINE: KEY: problem" (one line, no newline) for a bad line, key or
 * value; errno-based errors for a file that exists but cannot be read (why
 * names it).  A missing file is no error.  On error c is left freed. */
int bg_config_load(struct bg_config *c, char *why, size_t whylen) BG_WUR;

/* Sets key name to value as the command line does (source OPTION; for
 * "peer" the first call replaces the files' peers, later calls add).
 * BG_EINVAL with why "--OPTION: problem" for a bad value or key name. */
int bg_config_set(struct bg_config *c, const char *name, const char *value, char *why,
                  size_t whylen) BG_WUR;

void bg_config_free(struct bg_config *c);

/* The key named name ("peer_key"); BG_EINVAL for no key of that name. */
int bg_config_key_parse(const char *name, enum bg_conf_key *out) BG_WUR;

/* The files bg_config_load looks for, in the order read: $BGCOPY_CONFIG
 * alone when set (none when empty), else the system file and the user's.
 * Returns how many were written to paths (at most max). */
size_t bg_config_paths(char paths[][BG_CONFIG_PATH_MAX], size_t max);

/* bg_config_load with the files given (at most 3) instead of the usual
 * ones, for tests and tools. */
int bg_config_load_paths(struct bg_config *c, const char *const *paths, size_t npaths,
                         char *why, size_t whylen) BG_WUR;

/* The value of key k as the file would write it ("on", "7654"; the peers
 * separated by spaces; "" for none) in buf. */
const char *bg_config_value(const struct bg_config *c, enum bg_conf_key k, char *buf,
                            size_t len);

#endif /* BG_CONFIG_H */
