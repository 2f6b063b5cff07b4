/*
 * test_config.c - bgcopy.conf: the format, every key's good and bad values,
 * the error line (FILE:LINE: KEY: problem), two files' precedence, the peer
 * list a later file replaces, and command-line overrides.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

static char dir[] = "/tmp/bg-test-config-XXXXXX";

/* Writes text to dir/name; returns the path (static, one per name slot). */
static const char *
file(const char *name, const char *text)
{
	static char paths[4][256];
	static unsigned next;
	char *p = paths[next++ % 4];
	FILE *f;

	snprintf(p, 256, "%s/%s", dir, name);
	f = fopen(p, "w");
	if (f == NULL) {
		perror(p);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
	return p;
}

/* Loads one file holding text; returns the error, why filled. */
static int
load1(struct bg_config *c, const char *text, char *why, size_t len)
{
	const char *p = file("one.conf", text);

	return bg_config_load_paths(c, &p, 1, why, len);
}

/* Whether "KEY = value" alone is accepted. */
static bool
good(const char *line)
{
	struct bg_config c;
	char why[512];
	int err = load1(&c, line, why, sizeof(why));

	if (err == 0)
		bg_config_free(&c);
	else
		fprintf(stderr, "    (refused: %s)\n", why);
	return err == 0;
}

static bool
bad(const char *line)
{
	struct bg_config c;
	char why[512];
	int err = load1(&c, line, why, sizeof(why));

	if (err == 0)
		bg_config_free(&c);
	return err == BG_EINVAL && strchr(why, '\n') == NULL && why[0] != '\0';
}

static void
test_defaults(void)
{
	struct bg_config c;
	char why[256], buf[256];

	CHECK_EQ_INT(bg_config_load_paths(&c, NULL, 0, why, sizeof(why)), 0);
	CHECK(c.discovery);
	CHECK(!c.discovery_any_subnet);
	CHECK_EQ_INT(c.npeers, 0);
	CHECK(c.peer_dns == NULL);
	CHECK(c.peer_key == NULL);
	CHECK_EQ_STR(c.peer_caching, "server");
	CHECK_EQ_STR(c.listen, "127.0.0.1");
	CHECK_EQ_INT(c.port, 7654);
	CHECK(c.files[0] == NULL);
	for (unsigned k = 0; k < BG_CONF_KEYS; k++)
		CHECK_EQ_INT(c.where[k].source, BG_CONF_DEFAULT);
	CHECK_EQ_STR(bg_config_value(&c, BG_CONF_DISCOVERY, buf, sizeof(buf)), "on");
	CHECK_EQ_STR(bg_config_value(&c, BG_CONF_PORT, buf, sizeof(buf)), "7654");
	CHECK_EQ_STR(bg_config_value(&c, BG_CONF_PEER, buf, sizeof(buf)), "");
	bg_config_free(&c);

	/* A missing file is no error and is not listed as read. */
	{
		const char *p = "/tmp/bg-test-config-no-such/x.conf";

		CHECK_EQ_INT(bg_config_load_paths(&c, &p, 1, why, sizeof(why)), 0);
		CHECK(c.files[0] == NULL);
		bg_config_free(&c);
	}
}

static void
test_format(void)
{
	struct bg_config c;
	char why[512];
	const char *p;

	/* Comments, blank lines, spaces and tabs around key and value, CRLF. */
	CHECK_EQ_INT(load1(&c,
	                   "# bgcopy\n"
	                   "\n"
	                   "   # indented comment\n"
	                   "discovery=off\n"
	                   "\tport =  8000 \r\n"
	                   "peer_caching\t=\tboth\n"
	                   "  \t\n"
	                   "listen = ::1",
	                   why, sizeof(why)),
	             0);
	CHECK(!c.discovery);
	CHECK_EQ_INT(c.port, 8000);
	CHECK_EQ_STR(c.peer_caching, "both");
	CHECK_EQ_STR(c.listen, "::1");
	CHECK(c.files[0] != NULL && strstr(c.files[0], "one.conf") != NULL);
	CHECK_EQ_INT(c.where[BG_CONF_DISCOVERY].source, BG_CONF_FILE);
	CHECK_EQ_INT(c.where[BG_CONF_DISCOVERY].line, 4);
	CHECK(c.where[BG_CONF_DISCOVERY].file == c.files[0]);
	CHECK_EQ_INT(c.where[BG_CONF_PORT].line, 5);
	CHECK_EQ_INT(c.where[BG_CONF_PEER_CACHING].line, 6);
	CHECK_EQ_INT(c.where[BG_CONF_LISTEN].line, 8);
	CHECK_EQ_INT(c.where[BG_CONF_PEER].source, BG_CONF_DEFAULT);
	bg_config_free(&c);

	/* The last of a key in one file wins, and its line is kept. */
	CHECK_EQ_INT(load1(&c, "port = 1\nport = 2\n", why, sizeof(why)), 0);
	CHECK_EQ_INT(c.port, 2);
	CHECK_EQ_INT(c.where[BG_CONF_PORT].line, 2);
	bg_config_free(&c);

	/* The error line: FILE:LINE: KEY: problem. */
	p = file("one.conf", "");
	CHECK_EQ_INT(load1(&c, "# x\n\nport = 70000\n", why, sizeof(why)), BG_EINVAL);
	{
		char want[512];

		snprintf(want, sizeof(want), "%s:3: port: expected a port number 0-65535, not '70000'",
		         p);
		CHECK_EQ_STR(why, want);
	}
	CHECK_EQ_INT(load1(&c, "discovery on\n", why, sizeof(why)), BG_EINVAL);
	CHECK(strstr(why, "one.conf:1: discovery on: expected KEY = VALUE") != NULL);
	CHECK_EQ_INT(load1(&c, "port = 1\ncolour = blue\n", why, sizeof(why)), BG_EINVAL);
	CHECK(strstr(why, "one.conf:2: colour: unknown key") != NULL);
	CHECK_EQ_INT(load1(&c, " = x\n", why, sizeof(why)), BG_EINVAL);
	CHECK(strstr(why, "one.conf:1: (no key)") != NULL);
	/* Keys are exact: no case folding, no dashes. */
	CHECK(bad("Port = 1\n"));
	CHECK(bad("peer-key = /k\n"));
	/* A value with a newline-like control byte still gives one line. */
	CHECK_EQ_INT(load1(&c, "peer_caching = a\033b\n", why, sizeof(why)), BG_EINVAL);
	CHECK(strchr(why, '\033') == NULL);
	CHECK(strstr(why, ":1: peer_caching: expected off, client, server or both") != NULL);
	/* A NUL byte, a line too long. */
	{
		const char *q = file("nul.conf", "");
		FILE *f = fopen(q, "w");
		char *big;

		fwrite("port = 1\0\n", 1, 10, f);
		fclose(f);
		CHECK_EQ_INT(bg_config_load_paths(&c, &q, 1, why, sizeof(why)), BG_EINVAL);
		CHECK(strstr(why, "nul.conf:1: NUL byte") != NULL);
		big = malloc(6000);
		memset(big, 'x', 5998);
		big[5998] = '\n';
		big[5999] = '\0';
		CHECK_EQ_INT(load1(&c, big, why, sizeof(why)), BG_EINVAL);
		CHECK(strstr(why, ":1: line longer than") != NULL);
		free(big);
	}
	/* A file that exists but cannot be read names itself. */
	{
		const char *q = dir; /* a folder: opens, but reading fails */

		CHECK(bg_config_load_paths(&c, &q, 1, why, sizeof(why)) != 0);
		CHECK(strstr(why, dir) != NULL && strstr(why, "cannot read") != NULL);
	}
	if (geteuid() != 0) {
		const char *q = file("locked.conf", "port = 1\n");

		chmod(q, 0);
		CHECK_EQ_INT(bg_config_load_paths(&c, &q, 1, why, sizeof(why)), BG_EACCES);
		CHECK(strstr(why, "locked.conf: cannot read") != NULL);
	}
}

static void
test_values(void)
{
	struct bg_config c;
	char why[512];

	/* discovery */
	CHECK(good("discovery = on"));
	CHECK(good("discovery = off"));
	CHECK(good("discovery = yes"));
	CHECK(good("discovery = No"));
	CHECK(good("discovery = true"));
	CHECK(good("discovery = FALSE"));
	CHECK(bad("discovery = 1"));
	CHECK(bad("discovery = "));
	CHECK(bad("discovery = onn"));
	CHECK_EQ_INT(load1(&c, "discovery = no", why, sizeof(why)), 0);
	CHECK(!c.discovery);
	bg_config_free(&c);
	/* discovery_subnets */
	CHECK(good("discovery_subnets = same"));
	CHECK(good("discovery_subnets = any"));
	CHECK(bad("discovery_subnets = all"));
	CHECK(bad("discovery_subnets ="));
	CHECK_EQ_INT(load1(&c, "discovery_subnets = any", why, sizeof(why)), 0);
	CHECK(c.discovery_any_subnet);
	bg_config_free(&c);
	/* peer */
	CHECK(good("peer = 10.0.0.2:7654"));
	CHECK(good("peer = cache.example.org:1"));
	CHECK(good("peer = localhost:65535"));
	CHECK(good("peer = [::1]:7654"));
	CHECK(good("peer = [fe80::1%lo]:7654"));
	CHECK(bad("peer = 10.0.0.2"));
	CHECK(bad("peer = 10.0.0.2:0"));
	CHECK(bad("peer = 10.0.0.2:65536"));
	CHECK(bad("peer = 10.0.0.2:"));
	CHECK(bad("peer = :7654"));
	CHECK(bad("peer = ::1:7654"));
	CHECK(bad("peer = [::1]"));
	CHECK(bad("peer = [::1]7654"));
	CHECK(bad("peer = [10.0.0.1]:7654"));
	CHECK(bad("peer = [zz::1]:7654"));
	CHECK(bad("peer = host name:7654"));
	CHECK(bad("peer = http://h:7654"));
	CHECK(bad("peer = h_st:7654"));
	CHECK(bad("peer = -host:7654"));
	CHECK(bad("peer = h:+80"));
	/* peer_dns */
	CHECK(good("peer_dns = peers.example.org"));
	CHECK(good("peer_dns = peers.example.org."));
	CHECK(good("peer_dns = a-b.c0"));
	CHECK(good("peer_dns ="));
	CHECK(bad("peer_dns = peers..example.org"));
	CHECK(bad("peer_dns = .example.org"));
	CHECK(bad("peer_dns = -a.example.org"));
	CHECK(bad("peer_dns = a-.example.org"));
	CHECK(bad("peer_dns = under_score.org"));
	CHECK(bad("peer_dns = 10.0.0.1:80"));
	{
		char line[400] = "peer_dns = ";
		size_t n = strlen(line);

		memset(line + n, 'a', 64);
		line[n + 64] = '\0';
		CHECK(bad(line)); /* a label of 64 */
		for (int i = 0; i < 4; i++) {
			memset(line + n + i * 64, 'a', 63);
			line[n + i * 64 + 63] = '.';
		}
		line[n + 4 * 64] = '\0';
		CHECK(bad(line)); /* 256 bytes */
		line[n + 4 * 64 - 1 - 3] = '\0';
		CHECK(good(line)); /* 252 bytes */
	}
	/* peer_key */
	CHECK(good("peer_key = /etc/bgcopy/peer.key"));
	CHECK(good("peer_key = /a path/with spaces"));
	CHECK(good("peer_key ="));
	CHECK(bad("peer_key = peer.key"));
	CHECK(bad("peer_key = ~/peer.key"));
	CHECK(bad("peer_key = /a\tb"));
	/* peer_caching */
	CHECK(good("peer_caching = off"));
	CHECK(good("peer_caching = client"));
	CHECK(good("peer_caching = server"));
	CHECK(good("peer_caching = both"));
	CHECK(bad("peer_caching = on"));
	CHECK(bad("peer_caching = Both"));
	CHECK(bad("peer_caching ="));
	/* listen */
	CHECK(good("listen = 0.0.0.0"));
	CHECK(good("listen = 192.168.1.10"));
	CHECK(good("listen = ::"));
	CHECK(good("listen = [::1]"));
	CHECK(good("listen = fe80::1%lo"));
	CHECK(bad("listen = localhost"));
	CHECK(bad("listen = 1.2.3"));
	CHECK(bad("listen = 256.1.1.1"));
	CHECK(bad("listen = [127.0.0.1]"));
	CHECK(bad("listen = 127.0.0.1:80"));
	CHECK(bad("listen = [::1"));
	CHECK(bad("listen ="));
	/* port */
	CHECK(good("port = 0"));
	CHECK(good("port = 65535"));
	CHECK(bad("port = 65536"));
	CHECK(bad("port = -1"));
	CHECK(bad("port = 80x"));
	CHECK(bad("port = 0x50"));
	CHECK(bad("port = 8 0"));
	CHECK(bad("port ="));
}

static void
test_peers(void)
{
	struct bg_config c;
	char why[512], text[2048], buf[512];
	size_t n = 0;

	CHECK_EQ_INT(load1(&c, "peer = a:1\nport = 5\npeer = [::1]:2\npeer = b.lan:3\n", why,
	                   sizeof(why)),
	             0);
	CHECK_EQ_INT(c.npeers, 3);
	CHECK_EQ_STR(c.peers[0], "a:1");
	CHECK_EQ_STR(c.peers[1], "[::1]:2");
	CHECK_EQ_STR(c.peers[2], "b.lan:3");
	CHECK_EQ_INT(c.where[BG_CONF_PEER].line, 1);
	CHECK_EQ_STR(bg_config_value(&c, BG_CONF_PEER, buf, sizeof(buf)), "a:1 [::1]:2 b.lan:3");
	bg_config_free(&c);

	/* At most BG_CONFIG_PEERS_MAX. */
	for (int i = 0; i < BG_CONFIG_PEERS_MAX; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "peer = h%d:1\n", i);
	CHECK_EQ_INT(load1(&c, text, why, sizeof(why)), 0);
	CHECK_EQ_INT(c.npeers, BG_CONFIG_PEERS_MAX);
	bg_config_free(&c);
	snprintf(text + n, sizeof(text) - n, "peer = one-more:1\n");
	CHECK_EQ_INT(load1(&c, text, why, sizeof(why)), BG_EINVAL);
	CHECK(strstr(why, ":17: peer: too many peers") != NULL);
}

static void
test_two_files(void)
{
	struct bg_config c;
	char why[512];
	const char *p[2];

	p[0] = file("system.conf", "discovery = off\n"
	                           "peer = s1:1\n"
	                           "peer = s2:2\n"
	                           "peer_dns = sys.example\n"
	                           "port = 1111\n"
	                           "listen = 0.0.0.0\n");
	p[1] = file("user.conf", "# mine\n"
	                         "port = 2222\n"
	                         "peer = u1:3\n"
	                         "peer_dns =\n");
	CHECK_EQ_INT(bg_config_load_paths(&c, p, 2, why, sizeof(why)), 0);
	CHECK(c.files[0] != NULL && strstr(c.files[0], "system.conf") != NULL);
	CHECK(c.files[1] != NULL && strstr(c.files[1], "user.conf") != NULL);
	CHECK(c.files[2] == NULL);
	/* Key by key: the user's file wins where it speaks. */
	CHECK(!c.discovery);
	CHECK(c.where[BG_CONF_DISCOVERY].file == c.files[0]);
	CHECK_EQ_INT(c.where[BG_CONF_DISCOVERY].line, 1);
	CHECK_EQ_INT(c.port, 2222);
	CHECK(c.where[BG_CONF_PORT].file == c.files[1]);
	CHECK_EQ_INT(c.where[BG_CONF_PORT].line, 2);
	CHECK_EQ_STR(c.listen, "0.0.0.0");
	CHECK(c.where[BG_CONF_LISTEN].file == c.files[0]);
	/* Its peer lines replace the system's list, not add to it. */
	CHECK_EQ_INT(c.npeers, 1);
	CHECK_EQ_STR(c.peers[0], "u1:3");
	CHECK(c.where[BG_CONF_PEER].file == c.files[1]);
	CHECK_EQ_INT(c.where[BG_CONF_PEER].line, 3);
	/* An empty value drops the system's name. */
	CHECK(c.peer_dns == NULL);
	CHECK_EQ_INT(c.where[BG_CONF_PEER_DNS].line, 4);
	bg_config_free(&c);

	/* A user's file without peer lines keeps the system's list; "peer ="
	 * empties it. */
	p[1] = file("user.conf", "port = 3\n");
	CHECK_EQ_INT(bg_config_load_paths(&c, p, 2, why, sizeof(why)), 0);
	CHECK_EQ_INT(c.npeers, 2);
	CHECK(c.where[BG_CONF_PEER].file == c.files[0]);
	CHECK_EQ_INT(c.where[BG_CONF_PEER].line, 2);
	bg_config_free(&c);
	p[1] = file("user.conf", "peer =\n");
	CHECK_EQ_INT(bg_config_load_paths(&c, p, 2, why, sizeof(why)), 0);
	CHECK_EQ_INT(c.npeers, 0);
	bg_config_free(&c);

	/* An error in the second file names that file. */
	p[1] = file("user.conf", "\n\npeer_caching = sometimes\n");
	CHECK_EQ_INT(bg_config_load_paths(&c, p, 2, why, sizeof(why)), BG_EINVAL);
	CHECK(strstr(why, "user.conf:3: peer_caching: ") != NULL);
}

static void
test_set(void)
{
	struct bg_config c;
	char why[512];
	const char *p = file("one.conf", "peer = f1:1\npeer = f2:2\nport = 9\n");

	CHECK_EQ_INT(bg_config_load_paths(&c, &p, 1, why, sizeof(why)), 0);
	CHECK_EQ_INT(bg_config_set(&c, "port", "10", why, sizeof(why)), 0);
	CHECK_EQ_INT(c.port, 10);
	CHECK_EQ_INT(c.where[BG_CONF_PORT].source, BG_CONF_OPTION);
	CHECK(c.where[BG_CONF_PORT].file == NULL);
	/* The first peer replaces the files' list, later ones add. */
	CHECK_EQ_INT(bg_config_set(&c, "peer", "o1:1", why, sizeof(why)), 0);
	CHECK_EQ_INT(c.npeers, 1);
	CHECK_EQ_INT(bg_config_set(&c, "peer", "o2:2", why, sizeof(why)), 0);
	CHECK_EQ_INT(c.npeers, 2);
	CHECK_EQ_STR(c.peers[0], "o1:1");
	CHECK_EQ_STR(c.peers[1], "o2:2");
	CHECK_EQ_INT(c.where[BG_CONF_PEER].source, BG_CONF_OPTION);
	CHECK_EQ_INT(bg_config_set(&c, "peer_key", "/k", why, sizeof(why)), 0);
	CHECK_EQ_STR(c.peer_key, "/k");
	CHECK_EQ_INT(bg_config_set(&c, "listen", "[::]", why, sizeof(why)), 0);
	CHECK_EQ_STR(c.listen, "[::]");
	CHECK_EQ_INT(bg_config_set(&c, "discovery", "off", why, sizeof(why)), 0);
	CHECK(!c.discovery);
	/* Bad values and names: "--OPTION: problem", nothing changed. */
	CHECK_EQ_INT(bg_config_set(&c, "port", "x", why, sizeof(why)), BG_EINVAL);
	CHECK_EQ_STR(why, "--port: expected a port number 0-65535, not 'x'");
	CHECK_EQ_INT(c.port, 10);
	CHECK_EQ_INT(bg_config_set(&c, "peer_key", "rel", why, sizeof(why)), BG_EINVAL);
	CHECK(strncmp(why, "--peer-key: expected an absolute path", 37) == 0);
	CHECK_EQ_STR(c.peer_key, "/k");
	CHECK_EQ_INT(bg_config_set(&c, "peer", "nope", why, sizeof(why)), BG_EINVAL);
	CHECK_EQ_INT(c.npeers, 2);
	CHECK_EQ_INT(bg_config_set(&c, "colour", "x", why, sizeof(why)), BG_EINVAL);
	CHECK_EQ_STR(why, "--colour: unknown setting");
	bg_config_free(&c);
}

static void
test_paths(void)
{
	char paths[3][BG_CONFIG_PATH_MAX];
	struct bg_config c;
	char why[512];
	const char *u;

	unsetenv("BGCOPY_CONFIG");
	setenv("XDG_CONFIG_HOME", "/xdg", 1);
	CHECK_EQ_INT(bg_config_paths(paths, 3), 2);
	CHECK_EQ_STR(paths[0], "/etc/bgcopy/bgcopy.conf");
	CHECK_EQ_STR(paths[1], "/xdg/bgcopy/bgcopy.conf");
	/* A relative XDG_CONFIG_HOME is ignored (the XDG rule). */
	setenv("XDG_CONFIG_HOME", "rel", 1);
	setenv("HOME", "/home/u", 1);
	CHECK_EQ_INT(bg_config_paths(paths, 3), 2);
	CHECK_EQ_STR(paths[1], "/home/u/.config/bgcopy/bgcopy.conf");
	unsetenv("XDG_CONFIG_HOME");
	CHECK_EQ_INT(bg_config_paths(paths, 3), 2);
	CHECK_EQ_STR(paths[1], "/home/u/.config/bgcopy/bgcopy.conf");
	/* $BGCOPY_CONFIG alone; empty: no file. */
	setenv("BGCOPY_CONFIG", "/only.conf", 1);
	CHECK_EQ_INT(bg_config_paths(paths, 3), 1);
	CHECK_EQ_STR(paths[0], "/only.conf");
	setenv("BGCOPY_CONFIG", "", 1);
	CHECK_EQ_INT(bg_config_paths(paths, 3), 0);

	/* bg_config_load reads what bg_config_paths names. */
	u = file("env.conf", "port = 4242\n");
	setenv("BGCOPY_CONFIG", u, 1);
	CHECK_EQ_INT(bg_config_load(&c, why, sizeof(why)), 0);
	CHECK_EQ_INT(c.port, 4242);
	CHECK_EQ_STR(c.files[0], u);
	bg_config_free(&c);
	setenv("BGCOPY_CONFIG", "", 1);
	CHECK_EQ_INT(bg_config_load(&c, why, sizeof(why)), 0);
	CHECK_EQ_INT(c.port, 7654);
	CHECK(c.files[0] == NULL);
	bg_config_free(&c);
}

/* What a review found: an empty peer empties a list begun in the same
 * file; a peer too long to keep results for is refused; a line too long
 * is refused without reading the rest; a path too long in the
 * environment is an error, not a file skipped. */
static void
test_review(void)
{
	struct bg_config c;
	char why[512], line[200];
	const char *p;
	FILE *f;

	CHECK_EQ_INT(load1(&c, "peer = a:1\npeer =\n", why, sizeof(why)), 0);
	CHECK_EQ_INT(c.npeers, 0);
	bg_config_free(&c);
	memset(line, 'a', sizeof(line));
	snprintf(line + 70, sizeof(line) - 70, ".example:7654");
	CHECK(!bad("peer = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example:7654"));
	{
		char text[256];

		snprintf(text, sizeof(text), "peer = %s\n", line);
		CHECK(bad(text));
	}
	/* 1 MiB on one line: refused at the limit. */
	p = file("huge.conf", "");
	f = fopen(p, "w");
	CHECK(f != NULL);
	if (f != NULL) {
		fputs("# ", f);
		for (int i = 0; i < 1024 * 1024; i++)
			fputc('x', f);
		fputc('\n', f);
		fclose(f);
	}
	CHECK_EQ_INT(bg_config_load_paths(&c, &p, 1, why, sizeof(why)), BG_EINVAL);
	CHECK(strstr(why, ":1: line longer than") != NULL);
	{
		char *big = malloc(BG_CONFIG_PATH_MAX + 10);

		CHECK(big != NULL);
		if (big != NULL) {
			memset(big, 'x', BG_CONFIG_PATH_MAX + 9);
			big[0] = '/';
			big[BG_CONFIG_PATH_MAX + 9] = '\0';
			setenv("BGCOPY_CONFIG", big, 1);
			CHECK_EQ_INT(bg_config_load(&c, why, sizeof(why)), BG_EINVAL);
			CHECK_EQ_STR(why, "BGCOPY_CONFIG: path too long");
			unsetenv("BGCOPY_CONFIG");
			free(big);
		}
	}
}

/* The fleet's bounds and serve_rate, and the byte counts it is written in. */
static void
test_bounds(void)
{
	struct bg_config c;
	char why[512];
	uint64_t v;

	CHECK_EQ_INT(load1(&c, "", why, sizeof(why)), 0);
	CHECK_EQ_INT((int)c.fleet_origin_max, 1);
	CHECK_EQ_INT((int)c.fleet_takeovers, 3);
	CHECK(c.serve_rate == 0);
	bg_config_free(&c);
	CHECK_EQ_INT(load1(&c, "serve_rate = 16M\nfleet_origin_max = 2\nfleet_takeovers = 0\n", why,
	                   sizeof(why)),
	             0);
	CHECK(c.serve_rate == 16u * 1024 * 1024);
	CHECK_EQ_INT((int)c.fleet_origin_max, 2);
	CHECK_EQ_INT((int)c.fleet_takeovers, 0);
	bg_config_free(&c);
	CHECK(bad("fleet_origin_max = 0\n"));
	CHECK(bad("fleet_origin_max = 17\n"));
	CHECK(bad("fleet_takeovers = 17\n"));
	CHECK(bad("serve_rate = 10 M\n"));
	CHECK(bad("serve_rate = 2T\n")); /* past 1 TiB/s */
	CHECK(bad("serve_rate = -1\n"));
	CHECK_EQ_INT(bg_parse_bytes("512k", UINT64_MAX, &v), 0);
	CHECK(v == 512 * 1024);
	CHECK_EQ_INT(bg_parse_bytes("3GiB", UINT64_MAX, &v), 0);
	CHECK(v == 3ull << 30);
	CHECK_EQ_INT(bg_parse_bytes("7", UINT64_MAX, &v), 0);
	CHECK(v == 7);
	CHECK_EQ_INT(bg_parse_bytes("1X", UINT64_MAX, &v), BG_EINVAL);
	CHECK_EQ_INT(bg_parse_bytes("1 ", UINT64_MAX, &v), BG_EINVAL);
	CHECK_EQ_INT(bg_parse_bytes("M", UINT64_MAX, &v), BG_EINVAL);
	CHECK_EQ_INT(bg_parse_bytes("1Mb", UINT64_MAX, &v), BG_EINVAL);
	CHECK_EQ_INT(bg_parse_bytes("17179869184T", UINT64_MAX, &v), BG_ELIMIT);
	CHECK_EQ_INT(bg_parse_bytes("2K", 2047, &v), BG_ELIMIT);
}

int
main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_defaults();
	test_format();
	test_values();
	test_peers();
	test_two_files();
	test_set();
	test_paths();
	test_review();
	test_bounds();
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	return check_done();
}
