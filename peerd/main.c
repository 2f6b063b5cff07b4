/*
 * main.c - the bgcopy-peerd binary: options, the home, the store (read-only),
 * then peerd_start() and a wait for SIGTERM or SIGINT.
 *
 * Exit statuses (as bgcopy's): 0 stopped by a signal; 2 usage error;
 * 3 store or system error (unsafe home, damaged store, port taken, ...).
 * A home without a store, or no home yet, is no error: peerd serves the
 * store once bgcopy has made it.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "config.h"
#include "dnssd.h"
#include "peerd.h"

#define PROG "bgcopy-peerd"

_Static_assert(PEERD_SERVE_RATE_MAX == BG_CONF_SERVE_RATE_MAX,
               "peerd takes every serve_rate bgcopy.conf allows");

/* Messages go out as bgcopy's do (the exit statuses too: cache.h). */
#define complain(...) bg_complain(PROG, __VA_ARGS__)

static void
log_cb(void *cls, const char *fmt, va_list ap)
{
	bg_vcomplain(PROG, fmt, ap);
}

/* DNS-SD's log lines, as peerd's own. */
static void dnssd_log(void *arg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
dnssd_log(void *arg, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bg_vcomplain(PROG, fmt, ap);
	va_end(ap);
}

/* Announces peerd on the LAN (DNS-SD through avahi-daemon), with the
 * node's id and the key's fingerprint.  Not announcing is no reason to
 * stop serving: *out stays NULL then, and the reason has been logged. */
static void
start_announcing(const char *home, const char *listen, unsigned port, const unsigned char *key,
         size_t keylen, struct dnssd_announce **out)
{
	struct dnssd_announce_config ac;
	char node[BG_NODE_ID_LEN + 1], fp[PEER_KEY_FP_LEN + 1], why[256];
	int err;

	*out = NULL;
	/* Checked first: the node id is made (HOME/node-id) only for a
	 * node that announces, the one file peerd may create. */
	if (!dnssd_listen_announced(listen, why, sizeof(why))) {
		complain("DNS-SD: not announced: %s", why);
		return;
	}
	if ((err = bg_node_id(home, node)) != 0) {
		complain("cannot read the node id in %s (%s): announcing a random one",
		         home, bg_strerror(err));
		if ((err = bg_node_id(NULL, node)) != 0)
			return;
	}
	if ((err = peer_key_fingerprint(key, keylen, fp)) != 0) {
		complain("DNS-SD: not announced: %s", bg_strerror(err));
		return;
	}
	memset(&ac, 0, sizeof(ac));
	ac.listen = listen;
	ac.port = port;
	ac.node_id = node;
	ac.key_fp = fp;
	ac.log = dnssd_log;
	err = dnssd_announce_start(&ac, out);
	if (err != 0 && err != BG_ENOTIMPL) /* ENOTIMPL: loopback, logged */
		complain("DNS-SD: not announced: %s", bg_strerror(err));
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: bgcopy-peerd [--home DIR] [--listen ADDR] [--port N] [--port-file F]\n"
	        "                    [--threads N] [--max-connections N] [--timeout SECONDS]\n"
	        "                    [--peer-key FILE] [--partial-wait-max SECONDS]\n"
	        "                    [--connections-per-peer N] [--max-rate RATE]\n"
	        "\n"
	        "Serves the bgcopy content store (read-only) to LAN peers over HTTP:\n"
	        "  GET|HEAD /v1/content?url=KEY   GET|HEAD /v1/partial?url=KEY\n"
	        "  GET /v1/pieces?url=KEY[&from=I]   GET /v1/health   GET /metrics\n"
	        "\n"
	        "  --home DIR            the bgcopy home (else $BGCOPY_HOME, else\n"
	        "                        ${XDG_STATE_HOME:-$HOME/.local/state}/bgcopy)\n"
	        "  --listen ADDR         numeric IPv4 or IPv6 address (default: listen in\n"
	        "                        bgcopy.conf, else %s)\n"
	        "  --port N              TCP port, 0: any free one (default: port in\n"
	        "                        bgcopy.conf, else %u)\n"
	        "  --port-file F         write the port listened on to F once listening\n"
	        "  --threads N           polling threads (default: one per online CPU)\n"
	        "  --max-connections N   open connections at most (default %u)\n"
	        "  --timeout SECONDS     close connections idle that long (default %u)\n"
	        "  --peer-key FILE       require HMAC-signed requests (X-Bgcopy-Auth)\n"
	        "                        (default: peer_key in bgcopy.conf, else none)\n"
	        "  --partial-wait-max SECONDS  longest X-Bgcopy-Wait granted, 0-%u, 0: never\n"
	        "                        wait (default: partial_wait_max in bgcopy.conf,\n"
	        "                        else %u)\n"
	        "  --connections-per-peer N  connections from one address, 0-%u, 0: no limit\n"
	        "                        (default: serve_connections_per_peer in\n"
	        "                        bgcopy.conf, else %u)\n"
	        "  --max-rate RATE       upload limit: bytes/s of every body together, K, M, G\n"
	        "                        or T for 1024^1..4 (16M), none or 0: no limit\n"
	        "                        (default: serve_max_rate in bgcopy.conf, else none;\n"
	        "                        --serve-rate and serve_rate: the older names)\n"
	        "  --help, --version\n"
	        "\n"
	        "bgcopy.conf (as bgcopy reads it: /etc/bgcopy/bgcopy.conf, then\n"
	        "${XDG_CONFIG_HOME:-$HOME/.config}/bgcopy/bgcopy.conf, or $BGCOPY_CONFIG alone)\n"
	        "gives listen, port, peer_key, discovery, partial_wait_max,\n"
	        "serve_connections_per_peer and serve_max_rate; the options above override it.\n"
	        "\n"
	        "Runs until SIGTERM or SIGINT.  Exit status: 0 stopped by a signal, 2 usage\n"
	        "error, 3 store or system error.\n",
	        PEERD_LISTEN_DEFAULT, PEERD_PORT_DEFAULT, PEERD_CONNECTIONS_DEFAULT,
	        PEERD_TIMEOUT_DEFAULT, PEER_PARTIAL_WAIT_MAX_MS / 1000,
	        PEERD_PARTIAL_WAIT_DEFAULT_MS / 1000, PEERD_PER_PEER_MAX, PEERD_PER_PEER_DEFAULT);
}

/* Parses a decimal number in [lo, hi]; false for anything else. */
static bool
parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	uint64_t v;

	if (s == NULL || bg_parse_u64(s, strlen(s), hi, &v) != 0 || v < lo)
		return false;
	*out = (unsigned)v;
	return true;
}

/* The home, as bgcopy finds it.  Unlike bgcopy, nothing is created: a
 * read-only server has no business making the agent's folders. */
static int
resolve_home(const char *arg, char *out, size_t outlen)
{
	bool is_default;
	int err = bg_home_path(arg, out, outlen, &is_default);

	if (err != 0)
		complain("%s", bg_home_problem(err));
	return err != 0 ? EXIT_USAGE : EXIT_DONE;
}

/* Writes "PORT\n" to path, replaced whole, so that a reader never sees a
 * partial file. */
static int
write_port_file(const char *path, unsigned port)
{
	char line[16];
	int len = snprintf(line, sizeof(line), "%u\n", port);
	int err = bg_file_write_atomic(path, line, (size_t)len, 0644);

	if (err != 0) {
		complain("cannot write %s: %s", path,
		         err == BG_ELIMIT ? "path too long" : bg_strerror(err));
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"home", required_argument, NULL, 'H'},
	    {"listen", required_argument, NULL, 'l'},
	    {"port", required_argument, NULL, 'p'},
	    {"port-file", required_argument, NULL, 'f'},
	    {"threads", required_argument, NULL, 't'},
	    {"max-connections", required_argument, NULL, 'c'},
	    {"timeout", required_argument, NULL, 'T'},
	    {"peer-key", required_argument, NULL, 'k'},
	    {"partial-wait-max", required_argument, NULL, 'w'},
	    {"connections-per-peer", required_argument, NULL, 'P'},
	    {"max-rate", required_argument, NULL, 'r'},
	    {"serve-rate", required_argument, NULL, 'r'}, /* --max-rate's older name */
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct peerd_config cfg;
	struct bg_config conf;
	struct sockaddr_storage sa;
	struct bg_store *st = NULL;
	struct peerd *pd = NULL;
	struct dnssd_announce *ann = NULL;
	const char *home_arg = NULL, *port_file = NULL, *key_file = NULL;
	char home[PATH_MAX];
	unsigned char key[PEER_KEY_MAX];
	size_t keylen = 0;
	unsigned salen;
	sigset_t stop_set;
	char why[1024];
	int opt, err, sig, li = 0, rc = EXIT_SYSTEM;
	bool wrote_port_file = false, listen_given = false, port_given = false;
	bool wait_given = false, per_peer_given = false, rate_given = false;
	unsigned wait_s = 0;

	peerd_config_init(&cfg);
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hV", longopts, &li)) != -1) {
		switch (opt) {
		case 'H':
			home_arg = optarg;
			break;
		case 'l':
			cfg.listen = optarg;
			listen_given = true;
			break;
		case 'p':
			if (!parse_uint(optarg, 0, 65535, &cfg.port)) {
				complain("--port: expected 0..65535, got '%s'", optarg);
				return EXIT_USAGE;
			}
			port_given = true;
			break;
		case 'f':
			port_file = optarg;
			break;
		case 't':
			if (!parse_uint(optarg, 1, PEERD_THREADS_MAX, &cfg.threads)) {
				complain("--threads: expected 1..%d, got '%s'", PEERD_THREADS_MAX, optarg);
				return EXIT_USAGE;
			}
			break;
		case 'c':
			if (!parse_uint(optarg, 1, PEERD_CONNECTIONS_MAX, &cfg.max_connections)) {
				complain("--max-connections: expected 1..%d, got '%s'",
				         PEERD_CONNECTIONS_MAX, optarg);
				return EXIT_USAGE;
			}
			break;
		case 'T':
			if (!parse_uint(optarg, 1, PEERD_TIMEOUT_MAX, &cfg.timeout)) {
				complain("--timeout: expected 1..%d seconds, got '%s'", PEERD_TIMEOUT_MAX,
				         optarg);
				return EXIT_USAGE;
			}
			break;
		case 'k':
			key_file = optarg;
			break;
		case 'w':
			if (!parse_uint(optarg, 0, PEER_PARTIAL_WAIT_MAX_MS / 1000, &wait_s)) {
				complain("--partial-wait-max: expected 0..%d seconds, got '%s'",
				         PEER_PARTIAL_WAIT_MAX_MS / 1000, optarg);
				return EXIT_USAGE;
			}
			wait_given = true;
			break;
		case 'P':
			if (!parse_uint(optarg, 0, PEERD_PER_PEER_MAX, &cfg.per_peer)) {
				complain("--connections-per-peer: expected 0..%d, got '%s'",
				         PEERD_PER_PEER_MAX, optarg);
				return EXIT_USAGE;
			}
			per_peer_given = true;
			break;
		case 'r':
			if (bg_parse_rate(optarg, &cfg.serve_rate) != 0) {
				complain("--%s: expected bytes per second (K, M, G, T: powers of "
				         "1024) up to 1T, none or 0: no limit, got '%s'",
				         longopts[li].name, optarg);
				return EXIT_USAGE;
			}
			rate_given = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_DONE;
		case 'V':
			printf("bgcopy-peerd %s (libmicrohttpd %s)\n", BGCOPY_VERSION,
			       peerd_mhd_version());
			return EXIT_DONE;
		default:
			complain("unknown or incomplete option '%s' (see bgcopy-peerd --help)",
			         argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		complain("unexpected argument '%s' (see bgcopy-peerd --help)", argv[optind]);
		return EXIT_USAGE;
	}
	/* bgcopy.conf gives what the options did not (bgcopy reads the same
	 * files).  The strings stay in conf until the end. */
	if ((err = bg_config_load(&conf, why, sizeof(why))) != 0) {
		complain("%s", why);
		return err == BG_EINVAL ? EXIT_USAGE : EXIT_SYSTEM;
	}
	if (!listen_given)
		cfg.listen = conf.listen;
	if (!port_given)
		cfg.port = conf.port;
	if (!wait_given)
		wait_s = conf.partial_wait_max;
	cfg.partial_wait_max_ms = wait_s * 1000;
	if (!per_peer_given)
		cfg.per_peer = conf.serve_per_peer;
	if (!rate_given)
		cfg.serve_rate = conf.serve_rate;
	if (key_file == NULL)
		key_file = conf.peer_key;
	if (peerd_parse_listen(cfg.listen, cfg.port, &sa, &salen) != 0) {
		complain("--listen: expected a numeric IPv4 or IPv6 address, got '%s'", cfg.listen);
		rc = EXIT_USAGE;
		goto out;
	}
	if (cfg.threads != 0 && cfg.max_connections < cfg.threads) {
		complain("--max-connections (%u) must be at least --threads (%u)",
		         cfg.max_connections, cfg.threads);
		rc = EXIT_USAGE;
		goto out;
	}
	if ((rc = resolve_home(home_arg, home, sizeof(home))) != EXIT_DONE)
		goto out;
	rc = EXIT_SYSTEM;
	if (key_file != NULL) {
		if ((err = peer_key_load(key_file, key, &keylen)) != 0) {
			char where[BG_CONFIG_PATH_MAX + 32] = "";

			/* A key from the file names where it was set. */
			if (key_file == conf.peer_key &&
			    conf.where[BG_CONF_PEER_KEY].source == BG_CONF_FILE)
				snprintf(where, sizeof(where), "%s:%u: peer_key: ",
				         conf.where[BG_CONF_PEER_KEY].file,
				         conf.where[BG_CONF_PEER_KEY].line);
			complain("%scannot use the peer key %s: %s%s", where, key_file, bg_strerror(err),
			         err == BG_EINVAL   ? " (it must hold 16 to 4096 bytes)"
			         : err == BG_EUNSAFE ? " (it must be a file only its owner can read: "
			                               "chmod 600)"
			                             : "");
			rc = err == BG_EINVAL || err == BG_EUNSAFE ? EXIT_USAGE : EXIT_SYSTEM;
			goto out;
		}
		cfg.peer_key = key;
		cfg.peer_key_len = keylen;
	}
	cfg.log = log_cb;
	cfg.home = home;

	/* A fresh machine has no store yet (nor, it may be, a home): a service
	 * started at boot must not fail for that.  peerd then starts without
	 * one and opens it when a request finds it there (peerd_start() with
	 * NULL).  Whatever else keeps the store from opening now, an unsafe
	 * home above all, is refused as before. */
	err = store_open(home, STORE_RDONLY, NULL, &st);
	if (err != 0 && err != BG_ENOENT) {
		complain("cannot open the store in %s: %s%s", home, bg_strerror(err),
		         err == BG_EUNSAFE ? " (the home or its store.mdb is writable by "
		                             "other users: chmod go-w)"
		                           : "");
		goto out;
	}

	/* Block the stop signals in every thread (libmicrohttpd's inherit this
	 * mask) and wait for them here. */
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGTERM);
	sigaddset(&stop_set, SIGINT);
	if (pthread_sigmask(SIG_BLOCK, &stop_set, NULL) != 0) {
		complain("cannot block signals");
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);

	if ((err = peerd_start(&cfg, st, &pd)) != 0) {
		if (err == BG_EIO)
			complain("cannot listen on %s port %u (see above)", cfg.listen, cfg.port);
		else
			complain("cannot serve on %s port %u: %s", cfg.listen, cfg.port,
			         bg_strerror(err));
		goto out;
	}
	if (port_file != NULL) {
		if (write_port_file(port_file, peerd_port(pd)) != 0)
			goto out;
		wrote_port_file = true;
	}
	complain("serving %s on %s port %u%s%s", home, cfg.listen, peerd_port(pd),
	         keylen != 0 ? " (peer key required)" : "",
	         st == NULL ? " (no store there yet: content is 404 until bgcopy creates it; "
	                      "check --home)"
	                    : "");
	/* Announced by DNS-SD unless bgcopy.conf turns discovery off. */
	if (conf.discovery)
		start_announcing(home, cfg.listen, peerd_port(pd), keylen != 0 ? key : NULL,
		                 keylen, &ann);

	do {
		err = sigwait(&stop_set, &sig);
	} while (err == EINTR);
	if (err != 0) {
		complain("sigwait failed: %s", strerror(err));
		goto out;
	}
	complain("stopping on signal %d", sig);
	rc = EXIT_DONE;
out:
	/* Withdrawn first: peers stop coming before the door closes. */
	dnssd_announce_stop(ann);
	peerd_stop(pd);
	store_close(st);
	if (wrote_port_file)
		unlink(port_file);
	OPENSSL_cleanse(key, sizeof(key));
	bg_config_free(&conf);
	return rc;
}
