/*
 * config.c - bgcopy.conf: defaults, then the files, then the command line.
 *
 * Every line is checked when the file is read, so that a typo shows up at
 * once as "FILE:LINE: KEY: problem" rather than as a peer that is never
 * asked.  The values kept are the checked ones; nothing downstream parses
 * them again except to use them (peerd_parse_listen, the peer URL).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "config.h"

#define CONF_LINE_MAX 4096  /* bytes of one line; a longer one is refused */
#define CONF_DNS_NAME_MAX 253
#define CONF_DNS_LABEL_MAX 63
#define CONF_DEFAULT_LISTEN "127.0.0.1" /* peerd.h's PEERD_LISTEN_DEFAULT */
#define CONF_DEFAULT_CACHING "server"
#define STR_(x) #x
#define STR(x) STR_(x)

static const char *const key_names[BG_CONF_KEYS] = {
	[BG_CONF_DISCOVERY] = "discovery",   [BG_CONF_DISCOVERY_SUBNETS] = "discovery_subnets",
	[BG_CONF_PEER] = "peer",             [BG_CONF_PEER_DNS] = "peer_dns",
	[BG_CONF_PEER_KEY] = "peer_key",     [BG_CONF_PEER_CACHING] = "peer_caching",
	[BG_CONF_LISTEN] = "listen",         [BG_CONF_PORT] = "port",
	[BG_CONF_PARTIAL_WAIT_MAX] = "partial_wait_max",
	[BG_CONF_FLEET] = "fleet", [BG_CONF_FLEET_OWNER] = "fleet_owner",
	[BG_CONF_SERVE_CONNECTIONS_PER_PEER] = "serve_connections_per_peer",
	[BG_CONF_FLEET_ORIGIN_MAX] = "fleet_origin_max",
	[BG_CONF_FLEET_TAKEOVERS] = "fleet_takeovers", [BG_CONF_SERVE_RATE] = "serve_max_rate",
	[BG_CONF_MAX_RATE] = "max_rate", [BG_CONF_MAX_RATE_SCHEDULE] = "max_rate_schedule",
};

const char *
bg_config_key_name(enum bg_conf_key k)
{
	return (unsigned)k < BG_CONF_KEYS ? key_names[k] : NULL;
}

int
bg_config_key_parse(const char *name, enum bg_conf_key *out)
{
	/* serve_max_rate's older name. */
	if (name != NULL && strcmp(name, "serve_rate") == 0) {
		*out = BG_CONF_SERVE_RATE;
		return 0;
	}
	for (unsigned k = 0; k < BG_CONF_KEYS; k++) {
		if (strcmp(name, key_names[k]) == 0) {
			*out = (enum bg_conf_key)k;
			return 0;
		}
	}
	return BG_EINVAL;
}

/* ---- Values ------------------------------------------------------------ */

/* Each checker returns NULL when v is good, else the problem (a static
 * string, or prob filled in). */

static const char *
check_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"on", "yes", "true"}, *const no[] = {"off", "no", "false"};

	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return NULL;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return NULL;
		}
	}
	return "expected on or off (or yes/no, true/false)";
}

/* A DNS name: labels of letters, digits and '-' (not first nor last),
 * separated by dots, one final dot allowed. */
static bool
dns_name_ok(const char *s)
{
	size_t n = strlen(s), label = 0;

	if (n == 0 || n > CONF_DNS_NAME_MAX + 1 || (n == CONF_DNS_NAME_MAX + 1 && s[n - 1] != '.'))
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (ch == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '-'))
			return false;
		if (ch == '-' && label == 0)
			return false;
		if (++label > CONF_DNS_LABEL_MAX)
			return false;
	}
	return s[n - 1] != '-';
}

/* A numeric IPv6 address, with an optional %zone (getaddrinfo knows
 * those; inet_pton does not). */
static bool
ipv6_ok(const char *s, size_t n)
{
	char host[INET6_ADDRSTRLEN + 64];
	struct addrinfo hints, *res = NULL;
	bool ok;

	if (n == 0 || n >= sizeof(host) || memchr(s, ':', n) == NULL)
		return false;
	memcpy(host, s, n);
	host[n] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET6;
	hints.ai_flags = AI_NUMERICHOST;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
		return false;
	ok = res->ai_family == AF_INET6;
	freeaddrinfo(res);
	return ok;
}

static bool
ipv4_ok(const char *s, size_t n)
{
	char host[INET_ADDRSTRLEN];
	struct in_addr a;

	if (n == 0 || n >= sizeof(host))
		return false;
	memcpy(host, s, n);
	host[n] = '\0';
	return inet_pton(AF_INET, host, &a) == 1;
}

/* HOST:PORT: a DNS name or IPv4 address, or [IPv6]; port 1-65535. */
static const char *
check_peer(const char *v)
{
	const char *colon, *host = v;
	size_t hostlen;
	uint64_t port;

	if (v[0] == '[') {
		const char *close = strchr(v, ']');

		if (close == NULL || !ipv6_ok(v + 1, (size_t)(close - v - 1)))
			return "expected HOST:PORT, an IPv6 address as [ADDR]:PORT";
		if (close[1] != ':')
			return "expected HOST:PORT (the port is missing)";
		colon = close + 1;
	} else {
		colon = strrchr(v, ':');
		if (colon == NULL)
			return "expected HOST:PORT (the port is missing)";
		hostlen = (size_t)(colon - v);
		if (memchr(v, ':', hostlen) != NULL)
			return "expected HOST:PORT, an IPv6 address as [ADDR]:PORT";
		if (hostlen == 0 || hostlen > CONF_DNS_NAME_MAX)
			return "expected HOST:PORT (the host is missing or too long)";
		{
			char name[CONF_DNS_NAME_MAX + 1];

			memcpy(name, host, hostlen);
			name[hostlen] = '\0';
			if (!ipv4_ok(host, hostlen) && !dns_name_ok(name))
				return "expected HOST:PORT, HOST a DNS name, an IPv4 address or "
				       "[IPv6]";
		}
	}
	if (bg_parse_u64(colon + 1, strlen(colon + 1), 65535, &port) != 0 || port == 0)
		return "expected HOST:PORT, PORT 1-65535";
	/* Results are kept per peer under HOST:PORT in the store. */
	if (strlen(v) > STORE_PEER_KEY_MAX)
		return "HOST:PORT too long (at most " STR(STORE_PEER_KEY_MAX) " bytes)";
	return NULL;
}

/* A numeric address peerd can listen on (as its --listen takes it). */
static const char *
check_listen(const char *v)
{
	size_t n = strlen(v);

	if (n >= 2 && v[0] == '[' && v[n - 1] == ']') {
		if (ipv6_ok(v + 1, n - 2))
			return NULL;
	} else if (ipv4_ok(v, n) || ipv6_ok(v, n)) {
		return NULL;
	}
	return "expected a numeric IPv4 or IPv6 address";
}

static const char *
check_path(const char *v)
{
	if (v[0] != '/')
		return "expected an absolute path (starting with /)";
	if (strlen(v) >= 4096)
		return "path too long";
	for (const char *p = v; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return "control character in the path";
	return NULL;
}

static const char *
check_caching(const char *v)
{
	static const char *const modes[] = {"off", "client", "server", "both"};

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (strcmp(v, modes[i]) == 0)
			return NULL;
	return "expected off, client, server or both";
}

static int
set_str(char **slot, const char *v)
{
	char *s = NULL;

	if (v != NULL && v[0] != '\0' && (s = strdup(v)) == NULL)
		return BG_ENOMEM;
	free(*slot);
	*slot = s;
	return 0;
}

static void
clear_peers(struct bg_config *c)
{
	for (size_t i = 0; i < c->npeers; i++) {
		free(c->peers[i]);
		c->peers[i] = NULL;
	}
	c->npeers = 0;
}

/* Checks v for key k and stores it.  fresh_peers: a "peer" starts a new
 * list (the first one of a file, or of the command line).  0; BG_EINVAL
 * with *problem set; BG_ENOMEM. */
static int
apply(struct bg_config *c, enum bg_conf_key k, const char *v, bool fresh_peers,
      const char **problem)
{
	const char *p = NULL;
	uint64_t port;
	bool b;

	switch (k) {
	case BG_CONF_DISCOVERY:
		if ((p = check_bool(v, &b)) == NULL)
			c->discovery = b;
		break;
	case BG_CONF_FLEET:
		if ((p = check_bool(v, &b)) == NULL)
			c->fleet = b;
		break;
	case BG_CONF_FLEET_OWNER:
		if ((p = check_bool(v, &b)) == NULL)
			c->fleet_owner = b;
		break;
	case BG_CONF_DISCOVERY_SUBNETS:
		if (strcmp(v, "same") == 0)
			c->discovery_any_subnet = false;
		else if (strcmp(v, "any") == 0)
			c->discovery_any_subnet = true;
		else
			p = "expected same or any";
		break;
	case BG_CONF_PEER:
		/* An empty value names no peer: it only empties the list (a
		 * user's file can so drop the system's peers). */
		if (v[0] != '\0' && (p = check_peer(v)) != NULL)
			break;
		if (fresh_peers || v[0] == '\0')
			clear_peers(c);
		if (v[0] == '\0')
			break;
		if (c->npeers >= BG_CONFIG_PEERS_MAX) {
			p = "too many peers (at most " STR(BG_CONFIG_PEERS_MAX) ")";
			break;
		}
		if ((c->peers[c->npeers] = strdup(v)) == NULL)
			return BG_ENOMEM;
		c->npeers++;
		break;
	case BG_CONF_PEER_DNS:
		if (v[0] != '\0' && !dns_name_ok(v))
			p = "expected a DNS name (letters, digits, '-' and '.', at most 253 bytes)";
		else if (set_str(&c->peer_dns, v) != 0)
			return BG_ENOMEM;
		break;
	case BG_CONF_PEER_KEY:
		if (v[0] != '\0' && (p = check_path(v)) != NULL)
			break;
		if (set_str(&c->peer_key, v) != 0)
			return BG_ENOMEM;
		break;
	case BG_CONF_PEER_CACHING:
		if ((p = check_caching(v)) == NULL && set_str(&c->peer_caching, v) != 0)
			return BG_ENOMEM;
		break;
	case BG_CONF_LISTEN:
		if ((p = check_listen(v)) == NULL && set_str(&c->listen, v) != 0)
			return BG_ENOMEM;
		break;
	case BG_CONF_PORT:
		if (bg_parse_u64(v, strlen(v), 65535, &port) != 0)
			p = "expected a port number 0-65535";
		else
			c->port = (unsigned)port;
		break;
	case BG_CONF_PARTIAL_WAIT_MAX:
		if (bg_parse_u64(v, strlen(v), BG_CONF_PARTIAL_WAIT_MAX_S, &port) != 0)
			p = "expected seconds 0-" STR(BG_CONF_PARTIAL_WAIT_MAX_S);
		else
			c->partial_wait_max = (unsigned)port;
		break;
	case BG_CONF_SERVE_CONNECTIONS_PER_PEER:
		if (bg_parse_u64(v, strlen(v), BG_CONF_PER_PEER_MAX, &port) != 0)
			p = "expected a number of connections 0-" STR(BG_CONF_PER_PEER_MAX)
			    " (0: no limit)";
		else
			c->serve_per_peer = (unsigned)port;
		break;
	case BG_CONF_FLEET_ORIGIN_MAX:
		if (bg_parse_u64(v, strlen(v), BG_CONF_FLEET_ORIGIN_LIMIT, &port) != 0 || port < 1)
			p = "expected a number of origin fetches 1-" STR(BG_CONF_FLEET_ORIGIN_LIMIT);
		else
			c->fleet_origin_max = (unsigned)port;
		break;
	case BG_CONF_FLEET_TAKEOVERS:
		if (bg_parse_u64(v, strlen(v), BG_CONF_FLEET_TAKEOVERS_MAX, &port) != 0)
			p = "expected a number of takeovers 0-" STR(BG_CONF_FLEET_TAKEOVERS_MAX);
		else
			c->fleet_takeovers = (unsigned)port;
		break;
	case BG_CONF_SERVE_RATE:
		if (bg_parse_rate(v, &port) != 0)
			p = "expected bytes per second (K, M, G suffixes: powers of 1024), none or 0: "
			    "no limit";
		else
			c->serve_rate = port;
		break;
	case BG_CONF_MAX_RATE:
		if (bg_parse_rate(v, &port) != 0)
			p = "expected bytes per second (K, M, G suffixes: powers of 1024), none or 0: "
			    "no limit";
		else
			c->max_rate = port;
		break;
	case BG_CONF_MAX_RATE_SCHEDULE: {
		static _Thread_local char prob[256];
		struct bg_rate_schedule s;

		if (v[0] == '\0' || strcmp(v, "none") == 0) {
			c->has_schedule = false;
			free(c->max_rate_schedule);
			c->max_rate_schedule = NULL;
		} else if (bg_rate_schedule_parse(v, &s, prob, sizeof(prob)) != 0) {
			p = prob;
		} else if (set_str(&c->max_rate_schedule, v) != 0) {
			return BG_ENOMEM;
		} else {
			c->schedule = s;
			c->has_schedule = true;
		}
		break;
	}
	default:
		p = "unknown key";
		break;
	}
	*problem = p;
	return p != NULL ? BG_EINVAL : 0;
}

/* ---- Files ------------------------------------------------------------- */

static int
defaults(struct bg_config *c)
{
	memset(c, 0, sizeof(*c));
	c->discovery = true;
	c->fleet = true;
	c->fleet_owner = true;
	c->port = PEER_PORT_DEFAULT;
	c->partial_wait_max = BG_CONF_PARTIAL_WAIT_DEFAULT_S;
	c->serve_per_peer = BG_CONF_PER_PEER_DEFAULT;
	c->fleet_origin_max = 1;
	c->fleet_takeovers = BG_CONF_FLEET_TAKEOVERS_DEFAULT;
	if ((c->peer_caching = strdup(CONF_DEFAULT_CACHING)) == NULL ||
	    (c->listen = strdup(CONF_DEFAULT_LISTEN)) == NULL) {
		bg_config_free(c);
		return BG_ENOMEM;
	}
	return 0;
}

static char *
trim(char *s)
{
	char *e;

	s += strspn(s, " \t");
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

__attribute__((format(printf, 3, 4))) static void
say(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || whylen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	/* One line, whatever the file held. */
	for (char *p = why; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20)
			*p = '?';
}

/* Reads one file into c.  A missing one is skipped (*read false). */
/* Reads one line (without its newline) into buf (CONF_LINE_MAX + 1 bytes)
 * and NUL-terminates it.  1: a line; 0: end of file; -1: longer than
 * CONF_LINE_MAX (the rest is not read: a huge file costs no memory);
 * -2: a NUL byte in it; -3: a read error. */
static int
read_line(FILE *f, char *buf, size_t *len)
{
	size_t n = 0;
	int ch;

	while ((ch = getc(f)) != EOF && ch != '\n') {
		if (ch == '\0')
			return -2;
		if (n == CONF_LINE_MAX)
			return -1;
		buf[n++] = (char)ch;
	}
	buf[n] = '\0';
	*len = n;
	if (ch == EOF && ferror(f))
		return -3;
	return ch == EOF && n == 0 ? 0 : 1;
}

static int
read_file(struct bg_config *c, const char *path, bool *read, char *why, size_t whylen)
{
	FILE *f;
	char line[CONF_LINE_MAX + 1], *file = NULL;
	size_t slot, n;
	int got;
	unsigned lineno = 0;
	bool fresh_peers = true;
	int err = 0;

	*read = false;
	if ((f = fopen(path, "re")) == NULL) {
		/* Absent (or a folder on the way is a file): nothing set there. */
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		err = bg_err_from_errno(errno);
		say(why, whylen, "%s: cannot read: %s", path, strerror(errno));
		return err;
	}
	for (slot = 0; slot < 3 && c->files[slot] != NULL; slot++)
		;
	if (slot == 3 || (file = strdup(path)) == NULL) {
		fclose(f);
		say(why, whylen, "%s: %s", path, slot == 3 ? "too many files" : "out of memory");
		return slot == 3 ? BG_ELIMIT : BG_ENOMEM;
	}
	c->files[slot] = file;
	errno = 0;
	while ((got = read_line(f, line, &n)) > 0) {
		char *s, *eq, *key, *val;
		const char *problem = NULL;
		enum bg_conf_key k;

		(void)n;
		lineno++;
		s = trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		if ((eq = strchr(s, '=')) == NULL) {
			say(why, whylen, "%s:%u: %.60s: expected KEY = VALUE", path, lineno, s);
			err = BG_EINVAL;
			break;
		}
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		if (*key == '\0') {
			say(why, whylen, "%s:%u: (no key): expected KEY = VALUE", path, lineno);
			err = BG_EINVAL;
			break;
		}
		if (bg_config_key_parse(key, &k) != 0) {
			say(why, whylen,
			    "%s:%u: %.60s: unknown key (known: discovery, discovery_subnets, peer, "
			    "peer_dns, peer_key, peer_caching, listen, port, partial_wait_max, "
			    "serve_connections_per_peer, serve_max_rate, fleet, fleet_owner, "
			    "fleet_origin_max, fleet_takeovers, max_rate, max_rate_schedule)",
			    path, lineno, key);
			err = BG_EINVAL;
			break;
		}
		if ((err = apply(c, k, val, k == BG_CONF_PEER && fresh_peers, &problem)) != 0) {
			if (err == BG_EINVAL)
				say(why, whylen, "%s:%u: %s: %s, not '%.80s'", path, lineno, key,
				    problem, val);
			else
				say(why, whylen, "%s:%u: %s: %s", path, lineno, key, bg_strerror(err));
			break;
		}
		if (k == BG_CONF_PEER) {
			/* The list's place is its first line in this file. */
			if (fresh_peers)
				c->where[k] = (struct bg_conf_where){BG_CONF_FILE, file, lineno};
			fresh_peers = false;
		} else {
			c->where[k] = (struct bg_conf_where){BG_CONF_FILE, file, lineno};
		}
		errno = 0;
	}
	if (err == 0 && got == -1) {
		say(why, whylen, "%s:%u: line longer than %d bytes", path, lineno + 1, CONF_LINE_MAX);
		err = BG_EINVAL;
	} else if (err == 0 && got == -2) {
		say(why, whylen, "%s:%u: NUL byte in the line", path, lineno + 1);
		err = BG_EINVAL;
	} else if (err == 0 && got == -3) {
		err = bg_err_from_errno(errno != 0 ? errno : EIO);
		say(why, whylen, "%s: cannot read: %s", path, strerror(errno != 0 ? errno : EIO));
	}
	fclose(f);
	*read = err == 0;
	return err;
}

size_t
bg_config_paths(char paths[][BG_CONFIG_PATH_MAX], size_t max)
{
	const char *env = getenv("BGCOPY_CONFIG"), *xdg, *home;
	size_t n = 0;
	int len;

	if (env != NULL) {
		if (env[0] != '\0' && max > 0 && strlen(env) < BG_CONFIG_PATH_MAX)
			snprintf(paths[n++], BG_CONFIG_PATH_MAX, "%s", env);
		return n;
	}
	if (n < max)
		snprintf(paths[n++], BG_CONFIG_PATH_MAX, "%s", BG_CONFIG_SYSTEM_PATH);
	xdg = getenv("XDG_CONFIG_HOME");
	home = getenv("HOME");
	/* XDG: a relative XDG_CONFIG_HOME is to be ignored. */
	if (xdg != NULL && xdg[0] == '/')
		len = snprintf(n < max ? paths[n] : NULL, n < max ? BG_CONFIG_PATH_MAX : 0,
		               "%s/bgcopy/bgcopy.conf", xdg);
	else if (home != NULL && home[0] == '/')
		len = snprintf(n < max ? paths[n] : NULL, n < max ? BG_CONFIG_PATH_MAX : 0,
		               "%s/.config/bgcopy/bgcopy.conf", home);
	else
		len = -1;
	if (n < max && len > 0 && len < BG_CONFIG_PATH_MAX)
		n++;
	return n;
}

int
bg_config_load_paths(struct bg_config *c, const char *const *paths, size_t npaths, char *why,
                     size_t whylen)
{
	int err;

	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if ((err = defaults(c)) != 0) {
		say(why, whylen, "configuration: %s", bg_strerror(err));
		return err;
	}
	for (size_t i = 0; i < npaths; i++) {
		bool read;

		if ((err = read_file(c, paths[i], &read, why, whylen)) != 0) {
			bg_config_free(c);
			return err;
		}
	}
	return 0;
}

int
bg_config_load(struct bg_config *c, char *why, size_t whylen)
{
	char paths[2][BG_CONFIG_PATH_MAX];
	const char *p[2];
	const char *env = getenv("BGCOPY_CONFIG"), *xdg = getenv("XDG_CONFIG_HOME");
	size_t n = bg_config_paths(paths, 2);

	/* A name too long to open is a mistake to report, not a file to skip. */
	if ((env != NULL && strlen(env) >= BG_CONFIG_PATH_MAX) ||
	    (env == NULL && xdg != NULL && strlen(xdg) + 32 >= BG_CONFIG_PATH_MAX)) {
		say(why, whylen, "%s: path too long", env != NULL ? "BGCOPY_CONFIG" : "XDG_CONFIG_HOME");
		memset(c, 0, sizeof(*c));
		return BG_EINVAL;
	}

	for (size_t i = 0; i < n; i++)
		p[i] = paths[i];
	return bg_config_load_paths(c, p, n, why, whylen);
}

int
bg_config_set(struct bg_config *c, const char *name, const char *value, char *why, size_t whylen)
{
	const char *problem = NULL;
	enum bg_conf_key k;
	char opt[32];
	int err;

	snprintf(opt, sizeof(opt), "%s", name != NULL ? name : "");
	for (char *p = opt; *p != '\0'; p++)
		if (*p == '_')
			*p = '-';
	if (name == NULL || value == NULL || bg_config_key_parse(name, &k) != 0) {
		say(why, whylen, "--%s: unknown setting", opt);
		return BG_EINVAL;
	}
	err = apply(c, k, value, k == BG_CONF_PEER && c->where[k].source != BG_CONF_OPTION,
	            &problem);
	if (err == BG_EINVAL)
		say(why, whylen, "--%s: %s, not '%.80s'", opt, problem, value);
	else if (err != 0)
		say(why, whylen, "--%s: %s", opt, bg_strerror(err));
	else
		c->where[k] = (struct bg_conf_where){BG_CONF_OPTION, NULL, 0};
	return err;
}

const char *
bg_config_value(const struct bg_config *c, enum bg_conf_key k, char *buf, size_t len)
{
	size_t off = 0;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	switch (k) {
	case BG_CONF_DISCOVERY:
		snprintf(buf, len, "%s", c->discovery ? "on" : "off");
		break;
	case BG_CONF_FLEET:
		snprintf(buf, len, "%s", c->fleet ? "on" : "off");
		break;
	case BG_CONF_FLEET_OWNER:
		snprintf(buf, len, "%s", c->fleet_owner ? "on" : "off");
		break;
	case BG_CONF_DISCOVERY_SUBNETS:
		snprintf(buf, len, "%s", c->discovery_any_subnet ? "any" : "same");
		break;
	case BG_CONF_PEER:
		for (size_t i = 0; i < c->npeers && off < len; i++) {
			int w = snprintf(buf + off, len - off, "%s%s", i > 0 ? " " : "", c->peers[i]);

			if (w < 0)
				break;
			off += (size_t)w;
		}
		break;
	case BG_CONF_PEER_DNS:
		snprintf(buf, len, "%s", c->peer_dns != NULL ? c->peer_dns : "");
		break;
	case BG_CONF_PEER_KEY:
		snprintf(buf, len, "%s", c->peer_key != NULL ? c->peer_key : "");
		break;
	case BG_CONF_PEER_CACHING:
		snprintf(buf, len, "%s", c->peer_caching != NULL ? c->peer_caching : "");
		break;
	case BG_CONF_LISTEN:
		snprintf(buf, len, "%s", c->listen != NULL ? c->listen : "");
		break;
	case BG_CONF_PORT:
		snprintf(buf, len, "%u", c->port);
		break;
	case BG_CONF_PARTIAL_WAIT_MAX:
		snprintf(buf, len, "%u", c->partial_wait_max);
		break;
	case BG_CONF_SERVE_CONNECTIONS_PER_PEER:
		snprintf(buf, len, "%u", c->serve_per_peer);
		break;
	case BG_CONF_FLEET_ORIGIN_MAX:
		snprintf(buf, len, "%u", c->fleet_origin_max);
		break;
	case BG_CONF_FLEET_TAKEOVERS:
		snprintf(buf, len, "%u", c->fleet_takeovers);
		break;
	case BG_CONF_SERVE_RATE:
		snprintf(buf, len, "%llu", (unsigned long long)c->serve_rate);
		break;
	case BG_CONF_MAX_RATE:
		bg_rate_name(c->max_rate, buf, len);
		break;
	case BG_CONF_MAX_RATE_SCHEDULE:
		snprintf(buf, len, "%s", c->max_rate_schedule != NULL ? c->max_rate_schedule : "none");
		break;
	default:
		break;
	}
	return buf;
}

void
bg_config_free(struct bg_config *c)
{
	clear_peers(c);
	free(c->peer_dns);
	free(c->peer_key);
	free(c->peer_caching);
	free(c->listen);
	free(c->max_rate_schedule);
	for (size_t i = 0; i < 3; i++)
		free(c->files[i]);
	memset(c, 0, sizeof(*c));
}
