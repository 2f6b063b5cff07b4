/*
 * cli.c - the bgcopy commands: argument checks, the store, and output for
 * people (tables, a progress bar) and scripts (--json, exit statuses).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "jobs.h"
#include "cli.h"
#include "cli_int.h"
#include "record.h"
#include "peertable.h"

#define SHA256_HEX_LEN 64
#define GET_TRANSIENT_RETRIES 3 /* immediate retries of a transient error by `get` */
#define LIST_LINE_MAX (URL_MAX + PATH_MAX + 16) /* bytes of one line of an --from list */


static volatile int stop_flag;

static bool
sha256_hex_ok(const char *s)
{
	return strlen(s) == SHA256_HEX_LEN && strspn(s, "0123456789abcdefABCDEF") == SHA256_HEX_LEN;
}

void
cli_complain(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bg_vcomplain("bgcopy", fmt, ap);
	va_end(ap);
}

void
cli_usage(FILE *f)
{
	fputs("usage: bgcopy [--home DIR] [--ca-file FILE] COMMAND [ARGS]\n"
	      "       bgcopy --help | --version\n"
	      "\n"
	      "Background downloads with BITS security flags, kept in a content store.\n"
	      "\n"
	      "  get [OPTIONS] URL [-o FILE]   download one file now (a foreground job)\n"
	      "      --security-flags FLAGS    e.g. 0x0100 or redirect-report|ignore-unknown-ca\n"
	      "      --ca-file FILE            trust anchors for HTTPS instead of the system store\n"
	      "      --header 'Name: value'    extra request header (repeatable)\n"
	      "      --cache-key remote|both   also key the content under the original URL\n"
	      "      --sha256 HEX              expected SHA-256 of the content\n"
	      "      --no-cache                do not keep the content in the store\n"
	      "      --sync                    fsync the file and the store before finishing\n"
	      "      --json                    print the job document\n"
	      "      --peer HOST:PORT          ask this peer (repeatable; else the peer table)\n"
	      "      --peer-key FILE           HMAC key shared with the peers\n"
	      "      --transfer-policy always|unrestricted-only   on a metered network\n"
	      "      --max-rate RATE           at most RATE bytes/s (K, M, G: powers of 1024)\n"
	      "      --user USER [--password-file F] [--auth-scheme basic|digest|ntlm|negotiate]\n"
	      "                                server credentials (password asked when no file)\n"
	      "      --proxy-user USER [--proxy-password-file F] [--proxy-auth-scheme S]\n"
	      "                                proxy credentials (sent to the proxy only)\n"
	      "      --cert FILE [--key FILE]  client certificate (PEM; the key only its owner reads)\n"
	      "      --pkcs11 URI              client certificate and key on a PKCS#11 token\n"
	      "  create [--name N] [--priority foreground|high|normal|low]   prints the job id\n"
	      "  add JOB URL FILE [--sha256 HEX] | add JOB --from LIST\n"
	      "                                 (LIST lines: URL LOCALPATH [sha256=HEX])\n"
	      "  resume JOB | suspend JOB | cancel JOB | complete JOB\n"
	      "  set-security-flags JOB FLAGS | get-security-flags JOB\n"
	      "  set-priority JOB P | set-notify-cmd JOB PROGRAM [ARG...]\n"
	      "  set-min-retry-delay JOB SECONDS | set-no-progress-timeout JOB SECONDS\n"
	      "  set-max-download-time JOB SECONDS   (0: no limit; resume restarts the clock)\n"
	      "  set-headers JOB [--write-only] 'Name: value'... | get-headers JOB\n"
	      "  make-headers-write-only JOB   (cannot be undone: get-headers is then refused)\n"
	      "  set-credentials JOB [--target server|proxy] [--scheme basic|digest|ntlm|negotiate]\n"
	      "                  USER [--password-file F]   (default: server, basic)\n"
	      "  remove-credentials JOB --target server|proxy --scheme S\n"
	      "  set-http-method JOB METHOD | get-http-method JOB   (not GET: whole files only,\n"
	      "                                 no store, no peers, foreground)\n"
	      "  set-proxy JOB URL|none | set-ca-file JOB FILE | set-peer-caching JOB MODE\n"
	      "  set-transfer-policy JOB always|unrestricted-only   (metered networks)\n"
	      "  set-max-rate JOB RATE|none     the job's own limit, bytes/s (10M, 512K, 100000)\n"
	      "  set-client-cert JOB --cert FILE [--key FILE] | --pkcs11 URI | none\n"
	      "  get-client-cert JOB [--json]   the client certificate presented to the job's hosts\n"
	      "  set-cert-check-cmd JOB PROGRAM [ARG...] | none   must accept each new TLS session\n"
	      "  replace-remote-prefix JOB OLD NEW\n"
	      "  info JOB [--json] | list [--all] [--json] | wait JOB [--timeout SECONDS]\n"
	      "  daemon [--max-transfers N] [--slice SECONDS]   runs queued jobs until SIGTERM\n"
	      "         [--peer HOST:PORT]... [--peer-key FILE]   for peer-caching client jobs\n"
	      "         [--max-rate RATE|none] [--max-rate-schedule SCHEDULE|none]\n"
	      "                                 all transfers together but foreground jobs'\n"
	      "                                 (bgcopy.conf max_rate, max_rate_schedule)\n"
	      "      SCHEDULE: DAYS START-END RATE[, ...][; outside RATE]\n"
	      "                e.g. 'mon-fri 8-17 2M, sat,sun 0-24 none; outside 10M'\n"
	      "                DAYS mon..sun, ranges and lists; whole local hours 0-24;\n"
	      "                windows may not overlap; max_rate applies outside them\n"
	      "                unless 'outside' is given\n"
	      "  cache list [--json] | show URL | rm URL | stats [--json] | gc | clear | verify [--json]\n"
	      "  cache compact | cache config [--max-size BYTES|N%] [--max-age DAYS]\n"
	      "  crl list [--json] | crl refresh | crl clear\n"
	      "  config [--json]                the settings in effect (bgcopy.conf) and their source\n"
	      "  peers [--json]                the peers jobs ask when they name none\n"
	      "\n"
	      "Settings: /etc/bgcopy/bgcopy.conf, then ${XDG_CONFIG_HOME:-$HOME/.config}/bgcopy/\n"
	      "bgcopy.conf, or $BGCOPY_CONFIG alone (empty: none); options override them.\n"
	      "Home: --home, else $BGCOPY_HOME, else ${XDG_STATE_HOME:-$HOME/.local/state}/bgcopy.\n"
	      "Exit status: 0 done, 1 job ended in ERROR, 2 usage error or E_NOTIMPL, 3 store or\n"
	      "system error.\n",
	      f);
}

/* ---- Home and store ---------------------------------------------------- */

int
cli_resolve_home(struct ctx *c)
{
	bool is_default;
	bool explicit;
	int err = bg_home_path(c->g->home, c->home, sizeof(c->home), &is_default);

	if (err != 0) {
		cli_complain("%s", bg_home_problem(err));
		return EXIT_USAGE;
	}
	explicit = !is_default;
	if (!explicit) {
		/* The default lives under the user's state folder: make the whole
		 * path, as XDG asks. */
		for (char *p = c->home + 1; *p != '\0'; p++) {
			if (*p != '/')
				continue;
			*p = '\0';
			if (mkdir(c->home, 0700) != 0 && errno != EEXIST) {
				cli_complain("cannot create %s: %s", c->home, strerror(errno));
				return EXIT_SYSTEM;
			}
			*p = '/';
		}
	}
	if (mkdir(c->home, 0700) != 0 && errno != EEXIST) {
		cli_complain("cannot create home %s: %s", c->home, strerror(errno));
		return EXIT_SYSTEM;
	}
	return EXIT_DONE;
}

bool
cli_peer_key_usable(const char *path)
{
	unsigned char key[PEER_KEY_MAX];
	size_t len;
	int err = peer_key_load(path, key, &len);

	OPENSSL_cleanse(key, sizeof(key));
	if (err == BG_EUNSAFE)
		cli_complain("peer key %s must be a file only its owner can read (chmod 600 %s)",
		             path, path);
	else if (err == BG_EINVAL)
		cli_complain("peer key %s must hold %d to %d bytes", path, PEER_KEY_MIN,
		             PEER_KEY_MAX);
	else if (err != 0)
		cli_complain("cannot read peer key %s: %s", path, bg_strerror(err));
	return err == 0;
}

int
cli_open_store(struct ctx *c)
{
	int rc, err;

	if (c->st != NULL)
		return EXIT_DONE;
	if ((rc = cli_resolve_home(c)) != EXIT_DONE)
		return rc;
	if ((err = store_open(c->home, 0, NULL, &c->st)) != 0) {
		if (err == BG_EUNSAFE)
			cli_complain("refusing the home %s: it or its store.mdb is writable by other "
			             "users (chmod go-w)", c->home);
		else
			cli_complain("cannot open the store in %s: %s", c->home, bg_strerror(err));
		return EXIT_SYSTEM;
	}
	return EXIT_DONE;
}

int
cli_store_failed(const char *what, int err)
{
	cli_complain("%s: %s", what, bg_strerror(err));
	return EXIT_SYSTEM;
}

/* Looks a job id up; prints the error and returns an exit status. */
int
cli_check_job(struct ctx *c, const char *id)
{
	struct job_rec job;
	/* The job record alone: its files need not be decoded to know it exists. */
	int err = job_load(c->st, id, &job);

	job_rec_clear(&job);
	if (err == BG_ENOENT) {
		cli_complain("no such job: %s", id);
		return EXIT_USAGE;
	}
	if (err != 0)
		return cli_store_failed(id, err);
	return EXIT_DONE;
}

bool
cli_sync_wanted(void)
{
	const char *v = getenv("BGCOPY_SYNC");

	return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

void
cli_wake(struct ctx *c)
{
	char path[PATH_MAX + 8];
	int fd;

	/* A daemon watches this file (inotify, IN_CLOSE_WRITE); nothing else
	 * reads it.  Failing to wake one only delays it to its next timer. */
	snprintf(path, sizeof(path), "%s/wake", c->home);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) >= 0)
		close(fd);
}

/* ---- Argument checks --------------------------------------------------- */

int
cli_parse_flags(const char *s, uint32_t *out)
{
	if (flags_parse(s, out) != 0) {
		cli_complain("E_NOTIMPL (0x%08X): security flags '%s' not supported", HR_E_NOTIMPL, s);
		return EXIT_USAGE;
	}
	return EXIT_DONE;
}

int
cli_parse_url(const char *s, char **out)
{
	int err = url_canonical(s, out);

	if (err == BG_ENOTIMPL)
		cli_complain("unsupported URL scheme (only http and https): %s", s);
	else if (err == BG_ELIMIT)
		cli_complain("URL longer than %d bytes", URL_MAX);
	else if (err != 0)
		cli_complain("malformed URL: %s", s);
	return err == 0 ? EXIT_DONE : EXIT_USAGE;
}

bool
cli_valid_header(const char *h)
{
	const char *colon = strchr(h, ':');

	if (colon == NULL || colon == h || strpbrk(h, "\r\n") != NULL)
		return false;
	for (const char *p = h; p < colon; p++)
		if (*p <= ' ' || *p >= 127)
			return false;
	return true;
}

/* HOST:PORT, HOST a name, an IPv4 address or a bracketed IPv6 one. */
bool
valid_peer(const char *s)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;

	if (colon == NULL || colon == s || strlen(s) > 300 || strpbrk(s, "/?#@ \t\r\n") != NULL)
		return false;
	return bg_parse_u64(colon + 1, strlen(colon + 1), 65535, &port) == 0 && port > 0;
}

/* Makes an absolute path of a local file name. */
int
cli_absolute_path(const char *in, char *out, size_t len)
{
	char cwd[PATH_MAX];
	int n;

	if (in[0] == '/') {
		n = snprintf(out, len, "%s", in);
	} else {
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return bg_err_from_errno(errno);
		n = snprintf(out, len, "%s/%s", cwd, in);
	}
	return n < 0 || (size_t)n >= len ? BG_ELIMIT : 0;
}

/* The last path segment of a URL, for `get` without -o. */
static void
name_from_url(const char *url, char *out, size_t len)
{
	const char *p = strstr(url, "://");
	const char *path, *end, *slash;

	p = p != NULL ? p + 3 : url;
	path = strchr(p, '/');
	if (path == NULL) {
		snprintf(out, len, "index.html");
		return;
	}
	end = path + strcspn(path, "?#");
	slash = path;
	for (const char *q = path; q < end; q++)
		if (*q == '/')
			slash = q;
	if (end - slash <= 1 || (end - slash == 2 && slash[1] == '.') ||
	    (end - slash == 3 && slash[1] == '.' && slash[2] == '.'))
		snprintf(out, len, "index.html");
	else
		snprintf(out, len, "%.*s", (int)(end - slash - 1), slash + 1);
}

/* Checks that a file can be created in the folder of path; the job writes
 * its partial file there and renames it at the end. */
static int
check_writable(const char *path)
{
	char dir[PATH_MAX], probe[PATH_MAX + 32];
	const char *slash = strrchr(path, '/');
	struct stat sb;
	int fd;

	if (slash == NULL || (size_t)(slash - path) >= sizeof(dir))
		return EXIT_USAGE;
	if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	if (slash[1] == '\0') {
		cli_complain("cannot write %s: no file name", path);
		return EXIT_USAGE;
	}
	if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		cli_complain("cannot write %s: it is a folder", path);
		return EXIT_SYSTEM;
	}
	snprintf(probe, sizeof(probe), "%s/.bgcopy-probe-XXXXXX", dir);
	if ((fd = mkstemp(probe)) < 0) {
		cli_complain("cannot write %s: %s", path, strerror(errno));
		return EXIT_SYSTEM;
	}
	close(fd);
	unlink(probe);
	return EXIT_DONE;
}

/* ---- Output ------------------------------------------------------------ */

const char *
cli_jstr(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : "";
}

void
cli_draw_document(struct progress_bar *bar, const json_t *doc, bool force)
{
	const json_t *total = json_object_get(doc, "bytes_total");

	if (bar == NULL)
		return;
	progress_draw(bar, (uint64_t)json_integer_value(json_object_get(doc, "bytes_transferred")),
	              json_is_integer(total) ? json_integer_value(total) : -1, force);
}

void
cli_print_json(json_t *doc)
{
	char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s != NULL) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
}

const char *
cli_error_line(json_t *doc, char *buf, size_t len)
{
	json_t *e = json_object_get(doc, "error");

	snprintf(buf, len, "%s %s: %s", json_string_value(json_object_get(e, "code")),
	         json_string_value(json_object_get(e, "symbol")),
	         json_string_value(json_object_get(e, "message")));
	return buf;
}

static void
print_info_text(json_t *doc)
{
	json_t *files = json_object_get(doc, "files"), *f, *err, *cc;
	char flags[160], line[1024];
	size_t i;

	printf("job %s '%s'\n", json_string_value(json_object_get(doc, "id")),
	       json_string_value(json_object_get(doc, "name")));
	printf("  state          %s\n", json_string_value(json_object_get(doc, "state")));
	printf("  priority       %s\n", json_string_value(json_object_get(doc, "priority")));
	printf("  security flags %s\n",
	       flags_format((uint32_t)json_integer_value(json_object_get(doc, "security_flags")),
	                    flags, sizeof(flags)));
	if (json_is_string(json_object_get(doc, "proxy")))
		printf("  proxy          %s\n", json_string_value(json_object_get(doc, "proxy")));
	else
		printf("  proxy          from the environment (http_proxy, https_proxy, no_proxy)\n");
	if (json_is_string(json_object_get(doc, "transfer_policy")))
		printf("  transfer policy %s (BITS cost flags 0x%08X)\n",
		       json_string_value(json_object_get(doc, "transfer_policy")),
		       (unsigned)json_integer_value(json_object_get(doc, "cost_flags")));
	if (json_integer_value(json_object_get(doc, "max_rate")) > 0) {
		json_int_t mr = json_integer_value(json_object_get(doc, "max_rate"));
		char rate[32];

		printf("  max rate       %" JSON_INTEGER_FORMAT " B/s (%s)\n", mr,
		       bg_rate_name((uint64_t)mr, rate, sizeof(rate)));
	} else {
		printf("  max rate       none of its own\n");
	}
	/* The HTTP options: user names, never a password nor a header value. */
	{
		json_t *creds = json_object_get(doc, "credentials"), *cr;
		json_int_t nh = json_integer_value(json_object_get(doc, "custom_headers"));

		json_array_foreach(creds, i, cr)
			printf("  credentials    %s %s user '%s'\n",
			       json_string_value(json_object_get(cr, "target")),
			       json_string_value(json_object_get(cr, "scheme")),
			       json_string_value(json_object_get(cr, "user")));
		if (json_is_string(json_object_get(doc, "http_method")))
			printf("  http method    %s\n",
			       json_string_value(json_object_get(doc, "http_method")));
		if (nh > 0)
			printf("  custom headers %" JSON_INTEGER_FORMAT "%s\n", nh,
			       json_is_true(json_object_get(doc, "headers_write_only"))
			           ? " (write-only)"
			           : "");
	}
	if (json_is_string(json_object_get(doc, "waiting_reason")))
		printf("  waiting        %s\n", json_string_value(json_object_get(doc, "waiting_reason")));
	printf("  files          %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT " transferred\n",
	       json_integer_value(json_object_get(doc, "files_transferred")),
	       json_integer_value(json_object_get(doc, "files_total")));
	if (json_is_integer(json_object_get(doc, "bytes_total")))
		printf("  bytes          %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT "\n",
		       json_integer_value(json_object_get(doc, "bytes_transferred")),
		       json_integer_value(json_object_get(doc, "bytes_total")));
	else
		printf("  bytes          %" JSON_INTEGER_FORMAT " of unknown\n",
		       json_integer_value(json_object_get(doc, "bytes_transferred")));
	/* The maximum download time and the time used against it. */
	if (json_integer_value(json_object_get(doc, "max_download_time")) > 0)
		printf("  download time  %" JSON_INTEGER_FORMAT " s used of %" JSON_INTEGER_FORMAT
		       " s at most\n",
		       json_integer_value(json_object_get(doc, "download_time_used")),
		       json_integer_value(json_object_get(doc, "max_download_time")));
	else
		printf("  download time  %" JSON_INTEGER_FORMAT " s used (no limit)\n",
		       json_integer_value(json_object_get(doc, "download_time_used")));
	/* The client certificate as its document shows it (never the key). */
	if (json_is_object(cc = json_object_get(doc, "client_certificate"))) {
		if (json_is_string(json_object_get(cc, "pkcs11")))
			printf("  client cert    %s\n", cli_jstr(cc, "pkcs11"));
		else
			printf("  client cert    %s (%s)\n",
			       json_is_string(json_object_get(cc, "subject")) ? cli_jstr(cc, "subject")
			                                                      : cli_jstr(cc, "problem"),
			       cli_jstr(cc, "cert_file"));
	}
	json_array_foreach(json_object_get(doc, "cert_check_cmd"), i, f)
		printf("%s%s%s", i == 0 ? "  cert check     " : " ", json_string_value(f),
		       i + 1 == json_array_size(json_object_get(doc, "cert_check_cmd")) ? "\n" : "");
	if (json_is_object(err = json_object_get(doc, "error")))
		printf("  error          %s\n", cli_error_line(doc, line, sizeof(line)));
	json_array_foreach(files, i, f) {
		const char *orig = json_string_value(json_object_get(f, "original_url"));
		const char *remote = json_string_value(json_object_get(f, "remote_url"));

		printf("  [%zu] %s %s\n", i, json_is_true(json_object_get(f, "done")) ? "done" : "    ",
		       json_string_value(json_object_get(f, "local_path")));
		printf("      from %s\n", orig);
		if (remote != NULL && orig != NULL && strcmp(remote, orig) != 0)
			printf("      remote name now %s\n", remote);
		if (json_is_string(json_object_get(f, "sha256")))
			printf("      sha256 %s\n", json_string_value(json_object_get(f, "sha256")));
		if (json_is_string(json_object_get(f, "expected_sha256")))
			printf("      expected sha256 %s\n",
			       json_string_value(json_object_get(f, "expected_sha256")));
	}
}

/* ---- get --------------------------------------------------------------- */

static void
on_stop_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void
on_progress(void *arg, const struct job_progress *p)
{
	progress_draw(arg, p->bytes_done, p->bytes_total, false);
}

struct get_opts {
	struct job_options jo;
	const char *url_arg;
	const char *out_arg;
	const char *sha256;
	const char *headers[JOB_HEADERS_MAX + 1];
	size_t nheaders;
	const char *peers[JOB_PEERS_MAX + 1];
	size_t npeers;
	char peer_key[PATH_MAX];
	bool json;
	bool sync;
	enum job_transfer_policy policy;
	uint64_t max_rate;
	const char *password_file, *proxy_password_file;
	char password[1024], proxy_password[1024];
	const char *cert_arg, *key_arg, *pkcs11_arg;
	struct cli_cert cert;
};

static int
parse_get(int argc, char **argv, struct get_opts *o)
{
	static const struct option longopts[] = {
		{"security-flags", required_argument, NULL, 'f'},
		{"ca-file", required_argument, NULL, 'c'},
		{"peer", required_argument, NULL, 'p'},
		{"peer-key", required_argument, NULL, 'k'},
		{"cache-key", required_argument, NULL, 'K'},
		{"sha256", required_argument, NULL, 's'},
		{"header", required_argument, NULL, 'H'},
		{"no-cache", no_argument, NULL, 'n'},
		{"sync", no_argument, NULL, 'S'},
		{"json", no_argument, NULL, 'j'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{"transfer-policy", required_argument, NULL, 'T'},
		{"max-rate", required_argument, NULL, 'R'},
		{"user", required_argument, NULL, 'u'},
		{"password-file", required_argument, NULL, 'P'},
		{"auth-scheme", required_argument, NULL, 'A'},
		{"proxy-user", required_argument, NULL, 'U'},
		{"proxy-password-file", required_argument, NULL, 'Q'},
		{"proxy-auth-scheme", required_argument, NULL, 'B'},
		{"cert", required_argument, NULL, 'C'},
		{"key", required_argument, NULL, 'Y'},
		{"pkcs11", required_argument, NULL, 'E'},
		{NULL, 0, NULL, 0},
	};
	int ch, rc;

	optind = 0;
	opterr = 0;
	/* GNU getopt permutes: options may follow the URL, as with curl. */
	while ((ch = getopt_long(argc, argv, ":o:H:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			if ((rc = cli_parse_flags(optarg, &o->jo.security_flags)) != EXIT_DONE)
				return rc;
			break;
		case 'c':
			o->jo.ca_file = optarg;
			break;
		case 'p':
			if (!valid_peer(optarg)) {
				cli_complain("--peer takes HOST:PORT, not '%s'", optarg);
				return EXIT_USAGE;
			}
			if (o->npeers >= JOB_PEERS_MAX) {
				cli_complain("at most %d peers", JOB_PEERS_MAX);
				return EXIT_USAGE;
			}
			o->peers[o->npeers++] = optarg;
			break;
		case 'k':
			if (!cli_peer_key_usable(optarg))
				return EXIT_USAGE;
			if (cli_absolute_path(optarg, o->peer_key, sizeof(o->peer_key)) != 0) {
				cli_complain("cannot read peer key %s: %s", optarg, strerror(errno));
				return EXIT_USAGE;
			}
			o->jo.peer_key = o->peer_key;
			break;
		case 'K':
			if (strcmp(optarg, "both") == 0)
				o->jo.cache_both = true;
			else if (strcmp(optarg, "remote") == 0)
				o->jo.cache_both = false;
			else {
				cli_complain("--cache-key takes remote or both, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 's':
			if (!sha256_hex_ok(optarg)) {
				cli_complain("--sha256 takes 64 hex digits, not '%s'", optarg);
				return EXIT_USAGE;
			}
			o->sha256 = optarg;
			break;
		case 'H':
			if (!cli_valid_header(optarg)) {
				cli_complain("--header takes 'Name: value', not '%s'", optarg);
				return EXIT_USAGE;
			}
			if (o->nheaders >= JOB_HEADERS_MAX) {
				cli_complain("at most %d headers", JOB_HEADERS_MAX);
				return EXIT_USAGE;
			}
			o->headers[o->nheaders++] = optarg;
			break;
		case 'n':
			o->jo.no_cache = true;
			break;
		case 'S':
			o->sync = true;
			break;
		case 'j':
			o->json = true;
			break;
		case 'o':
			o->out_arg = optarg;
			break;
		case 'T':
			if (job_transfer_policy_parse(optarg, &o->policy) != 0) {
				cli_complain("--transfer-policy takes always or unrestricted-only, not '%s'",
				             optarg);
				return EXIT_USAGE;
			}
			o->jo.transfer_policy = &o->policy;
			break;
		case 'R':
			if (bg_parse_rate(optarg, &o->max_rate) != 0) {
				cli_complain("--max-rate: expected bytes per second (K, M, G: powers "
				             "of 1024), none or 0: no limit, not '%s'",
				             optarg);
				return EXIT_USAGE;
			}
			o->jo.max_rate = &o->max_rate;
			break;
		case 'u':
			o->jo.user = optarg;
			break;
		case 'P':
			o->password_file = optarg;
			break;
		case 'A':
			if ((rc = cli_parse_auth_scheme(optarg, &o->jo.auth_scheme)) != EXIT_DONE)
				return rc;
			break;
		case 'U':
			o->jo.proxy_user = optarg;
			break;
		case 'Q':
			o->proxy_password_file = optarg;
			break;
		case 'B':
			if ((rc = cli_parse_auth_scheme(optarg, &o->jo.proxy_auth_scheme)) != EXIT_DONE)
				return rc;
			break;
		case 'C':
			o->cert_arg = optarg;
			break;
		case 'Y':
			o->key_arg = optarg;
			break;
		case 'E':
			o->pkcs11_arg = optarg;
			break;
		case 'h':
			cli_usage(stdout);
			return -1;
		case ':':
			cli_complain("option %s needs a value", argv[optind - 1]);
			return EXIT_USAGE;
		default:
			cli_complain("get: unknown option '%s'", argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	for (; optind < argc; optind++) {
		if (o->url_arg != NULL) {
			cli_complain("get takes one URL ('%s' and '%s' given)", o->url_arg, argv[optind]);
			return EXIT_USAGE;
		}
		o->url_arg = argv[optind];
	}
	if (o->url_arg == NULL) {
		cli_complain("get: no URL given");
		return EXIT_USAGE;
	}
	/* A password never comes on the command line, where other users see
	 * it (ps): from a file, or asked on the terminal. */
	if ((o->jo.user != NULL && !cli_valid_auth_user(o->jo.user, o->jo.auth_scheme)) ||
	    (o->jo.proxy_user != NULL &&
	     !cli_valid_auth_user(o->jo.proxy_user, o->jo.proxy_auth_scheme)))
		return EXIT_USAGE;
	if ((o->password_file != NULL && o->jo.user == NULL) ||
	    (o->proxy_password_file != NULL && o->jo.proxy_user == NULL)) {
		cli_complain("get: a password file needs --user (--proxy-user for the proxy's)");
		return EXIT_USAGE;
	}
	if (o->cert_arg != NULL || o->key_arg != NULL || o->pkcs11_arg != NULL) {
		if ((rc = cli_client_cert(o->cert_arg, o->key_arg, o->pkcs11_arg, &o->cert)) != EXIT_DONE)
			return rc;
		o->jo.client_cert = o->cert.cert;
		o->jo.client_key = o->cert.key;
	}
	return EXIT_DONE;
}

int
cli_lock_job(struct ctx *c, const char *id, const char *what, struct job_lock **lock)
{
	int err = job_lock(c->home, id, lock);

	if (err == BG_EBUSY) {
		cli_complain("job %s (%s) is being transferred by another process", id, what);
		return EXIT_SYSTEM;
	}
	if (err != 0) {
		cli_complain("cannot lock job %s: %s", id, bg_strerror(err));
		return EXIT_SYSTEM;
	}
	return EXIT_DONE;
}

/* Whether a job in ERROR kept bytes that a repeated get can continue from. */
static bool
resumable(struct bg_store *st, const char *id)
{
	json_t *doc = NULL;
	bool yes;

	if (job_document(st, NULL, id, &doc) != 0)
		return false;
	yes = json_integer_value(json_object_get(doc, "bytes_transferred")) > 0 &&
	      json_integer_value(json_object_get(doc, "files_transferred")) <
	          json_integer_value(json_object_get(doc, "files_total"));
	json_decref(doc);
	return yes;
}

/* A get honours its job's transfer policy as the daemon does, but does not
 * wait for the network: an unrestricted-only job on a metered network is
 * left as it is (its bytes kept) for the same get to run later.  Only such
 * a job asks NetworkManager. */
static int
get_cost_check(struct ctx *c, const char *id)
{
	struct job_rec job;
	int err = job_load(c->st, id, &job);
	bool held;

	if (err != 0) {
		job_rec_clear(&job);
		return cli_store_failed("get", err);
	}
	held = job_transfer_policy_of(job.cost_flags) == JOB_POLICY_UNRESTRICTED_ONLY &&
	       netcost_read() == NET_COST_METERED;
	job_rec_clear(&job);
	if (held) {
		cli_complain("job %s: the network is metered and its transfer policy is "
		             "unrestricted-only; run the same command again on another network",
		             id);
		return EXIT_SYSTEM;
	}
	return EXIT_DONE;
}

static int
cmd_get(struct ctx *c, int argc, char **argv)
{
	struct get_opts o;
	enum peer_caching caching;
	const char *conf_key = NULL;
	char *url = NULL, *key = NULL, id[STORE_JOB_ID_LEN + 1];
	char out[PATH_MAX], name[PATH_MAX], crl_dir[PATH_MAX + 8];
	struct job_lock *lock = NULL;
	struct origin *origin = NULL;
	struct progress_bar *bar = NULL;
	struct job_run_options ro;
	struct peer_table *table = NULL;
	struct sigaction sa;
	json_t *doc = NULL;
	bool errored = false;
	enum job_state state;
	enum job_get_end end;
	json_int_t bytes;
	const char *ctx;
	int rc, err;

	memset(&o, 0, sizeof(o));
	o.jo.priority = JOB_PRIO_FOREGROUND;
	o.sync = cli_sync_wanted();
	o.jo.ca_file = c->g->ca_file;
	if ((rc = parse_get(argc, argv, &o)) != EXIT_DONE)
		return rc < 0 ? EXIT_DONE : rc;
	o.jo.headers = o.headers;
	o.jo.peers = o.peers;
	/* A new job's mode is the config's (--peer still makes it both). */
	o.jo.peer_caching = &caching;
	if (peer_caching_parse(c->conf.peer_caching, &caching) != 0)
		caching = PEER_CACHING_SERVER;
	/* The config's key is the runner's, not written into the job: a
	 * changed config applies to the next run. */
	if (o.jo.peer_key == NULL && (rc = cli_config_peer_key(c, false, &conf_key)) != EXIT_DONE)
		return rc;
	if ((rc = cli_parse_url(o.url_arg, &url)) != EXIT_DONE)
		goto out;
	if (o.out_arg == NULL) {
		name_from_url(url, name, sizeof(name));
		o.out_arg = name;
	}
	if (cli_absolute_path(o.out_arg, out, sizeof(out)) != 0) {
		cli_complain("output path too long: %s", o.out_arg);
		rc = EXIT_USAGE;
		goto out;
	}
	if ((rc = check_writable(out)) != EXIT_DONE)
		goto out;
	if (o.jo.ca_file != NULL && access(o.jo.ca_file, R_OK) != 0) {
		cli_complain("cannot read CA file %s: %s", o.jo.ca_file, strerror(errno));
		rc = EXIT_USAGE;
		goto out;
	}
	if (o.jo.user != NULL) {
		if ((rc = cli_read_password(o.password_file, o.password, sizeof(o.password))) !=
		    EXIT_DONE)
			goto out;
		o.jo.password = o.password;
	}
	if (o.jo.proxy_user != NULL) {
		if ((rc = cli_read_password(o.proxy_password_file, o.proxy_password,
		                            sizeof(o.proxy_password))) != EXIT_DONE)
			goto out;
		o.jo.proxy_password = o.proxy_password;
	}
	if ((rc = cli_open_store(c)) != EXIT_DONE)
		goto out;

	/* A repeated get (same URL, same output) resumes its job. */
	if (asprintf(&key, "%s\n%s", url, out) < 0) {
		key = NULL;
		rc = cli_store_failed("get", BG_ENOMEM);
		goto out;
	}
	o.jo.get_key = key;
	err = job_find_get(c->st, key, id, &errored);
	if (err == 0) {
		/* Ours before anything about it changes: a get still running
		 * the job must not see its settings move. */
		if ((rc = cli_lock_job(c, id, url, &lock)) != EXIT_DONE)
			goto out;
		if (errored && !resumable(c->st, id)) {
			/* Nothing kept to continue from: a fresh job, as a new get. */
			if ((err = job_cancel(c->st, id)) != 0) {
				rc = cli_store_failed("get", err);
				goto out;
			}
			job_unlock(lock);
			lock = NULL;
			err = BG_ENOENT;
		}
	}
	if (err == 0) {
		if ((err = job_update_options(c->st, id, &o.jo)) != 0) {
			rc = cli_store_failed("get", err);
			goto out;
		}
	} else if (err == BG_ENOENT) {
		struct job_file_spec spec = {url, out, o.sha256};

		if ((err = job_create(c->st, &o.jo, &spec, 1, id)) != 0) {
			rc = cli_store_failed("cannot create the job", err);
			goto out;
		}
		if ((rc = cli_lock_job(c, id, url, &lock)) != EXIT_DONE)
			goto out;
	} else {
		rc = cli_store_failed("get", err);
		goto out;
	}
	if ((rc = get_cost_check(c, id)) != EXIT_DONE)
		goto out;
	if ((err = origin_new(&origin)) != 0) {
		rc = cli_store_failed("get", err);
		goto out;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	memset(&ro, 0, sizeof(ro));
	snprintf(crl_dir, sizeof(crl_dir), "%s/crl", c->home);
	ro.crl_dir = crl_dir;
	ro.home = c->home;
	ro.transient_retries = GET_TRANSIENT_RETRIES;
	ro.peer_key = conf_key;
	ro.sync = o.sync;
	ro.stop = &stop_flag;
	/* Without --peer the job asks the peer table (built only when a file
	 * needs peers). */
	if (o.npeers == 0 && (rc = cli_peer_table(c, false, 0, &table)) != EXIT_DONE)
		goto out;
	ro.table = table;
	ro.fleet = c->conf.fleet;
	ro.fleet_owner = c->conf.fleet_owner;
	ro.fleet_origin_max = c->conf.fleet_origin_max;
	ro.fleet_takeovers = c->conf.fleet_takeovers;
	if (isatty(STDERR_FILENO)) {
		bar = progress_new(stderr);
		ro.progress = on_progress;
		ro.progress_arg = bar;
	}
	err = job_run(c->st, origin, id, &ro);
	if (err == BG_ECANCELED) {
		progress_end(bar);
		bar = NULL;
		cli_complain("interrupted; run the same command again to resume");
		rc = EXIT_SYSTEM;
		goto out;
	}
	if (err != 0) {
		progress_end(bar);
		bar = NULL;
		rc = cli_store_failed("transfer stopped", err);
		goto out;
	}
	if ((err = job_document(c->st, c->home, id, &doc)) != 0) {
		rc = cli_store_failed("get", err);
		goto out;
	}
	if (job_state_parse(json_string_value(json_object_get(doc, "state")), &state) != 0) {
		rc = cli_store_failed("get", BG_ECORRUPT);
		goto out;
	}
	ctx = json_string_value(json_object_get(json_object_get(doc, "error"), "context"));
	bytes = json_integer_value(json_object_get(doc, "bytes_transferred"));
	end = job_get_end(state, bytes > 0 ? (uint64_t)bytes : 0,
	                  ctx != NULL && strcmp(ctx, "local_file") == 0);
	{
		/* Out of download time: the bytes are good, and the same get
		 * goes on from them with the clock started again. */
		const char *code = json_string_value(
			json_object_get(json_object_get(doc, "error"), "code"));
		char mdt[16];

		snprintf(mdt, sizeof(mdt), "0x%08X", (unsigned)HR_BG_E_MAXDOWNLOAD_TIMEOUT);
		if (end == JOB_GET_GIVE_UP_DISCARD && bytes > 0 && code != NULL && strcmp(code, mdt) == 0)
			end = JOB_GET_GIVE_UP_KEEP;
	}
	if (bar != NULL) {
		cli_draw_document(bar, doc, true);
		progress_end(bar);
		bar = NULL;
	}
	if (end == JOB_GET_COMPLETE) {
		/* The document shows the job as it ended its transfer; completing
		 * it then makes the file appear at its path. */
		if ((err = job_complete(c->st, id, o.sync)) != 0) {
			cli_complain("cannot move the download to %s: %s", out, bg_strerror(err));
			rc = EXIT_SYSTEM;
			goto out;
		}
		if (o.json)
			cli_print_json(doc);
		else if (isatty(STDERR_FILENO))
			fprintf(stderr, "saved %s\n", out);
		rc = EXIT_DONE;
	} else {
		char line[1024];

		/* Nobody retries a foreground job once get returns: it ends in
		 * ERROR, with or without its partial data (job_get_end). */
		if ((end == JOB_GET_GIVE_UP_DISCARD && (err = job_discard_partials(c->st, id)) != 0) ||
		    (err = job_event(c->st, id, JOB_EV_GIVE_UP, NULL, NULL)) != 0) {
			rc = cli_store_failed("get", err);
			goto out;
		}
		json_decref(doc);
		doc = NULL;
		if ((err = job_document(c->st, c->home, id, &doc)) != 0) {
			rc = cli_store_failed("get", err);
			goto out;
		}
		if (o.json)
			cli_print_json(doc);
		cli_complain("job %s ERROR %s", id, cli_error_line(doc, line, sizeof(line)));
		rc = EXIT_JOB_ERROR;
	}
out:
	explicit_bzero(o.password, sizeof(o.password));
	explicit_bzero(o.proxy_password, sizeof(o.proxy_password));
	progress_end(bar);
	json_decref(doc);
	origin_free(origin);
	peer_table_free(table);
	job_unlock(lock);
	free(key);
	free(url);
	return rc;
}

/* ---- Job commands ------------------------------------------------------ */

static int
cmd_create(struct ctx *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"name", required_argument, NULL, 'n'},
		{"priority", required_argument, NULL, 'p'},
		{NULL, 0, NULL, 0},
	};
	struct job_options jo;
	enum peer_caching caching;
	char id[STORE_JOB_ID_LEN + 1];
	int ch, rc, err;

	memset(&jo, 0, sizeof(jo));
	jo.priority = JOB_PRIO_NORMAL;
	jo.ca_file = c->g->ca_file;
	if (peer_caching_parse(c->conf.peer_caching, &caching) != 0)
		caching = PEER_CACHING_SERVER;
	jo.peer_caching = &caching;
	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			if (strlen(optarg) > JOB_NAME_MAX) {
				cli_complain("--name longer than %d bytes", JOB_NAME_MAX);
				return EXIT_USAGE;
			}
			jo.name = optarg;
			break;
		case 'p':
			if (job_priority_parse(optarg, &jo.priority) != 0) {
				cli_complain("--priority takes foreground, high, normal or low, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		default:
			cli_complain("usage: bgcopy create [--name N] [--priority P]");
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		cli_complain("usage: bgcopy create [--name N] [--priority P]");
		return EXIT_USAGE;
	}
	if ((rc = cli_open_store(c)) != EXIT_DONE)
		return rc;
	if ((err = job_create(c->st, &jo, NULL, 0, id)) != 0)
		return cli_store_failed("create", err);
	printf("%s\n", id);
	return EXIT_DONE;
}

struct add_list {
	struct job_file_spec *files;
	char **owned; /* strings to free: three per file */
	size_t n, cap;
};

static void
add_list_free(struct add_list *l)
{
	for (size_t i = 0; i < 3 * l->n; i++)
		free(l->owned[i]);
	free(l->owned);
	free(l->files);
}

/* Checks one URL, path and expected SHA-256 (or NULL) and appends them to l. */
static int
add_list_push(struct add_list *l, const char *url_arg, const char *path_arg, const char *sha_arg)
{
	char *url = NULL, *path = NULL, *sha = NULL, abs[PATH_MAX];
	int rc;

	if (sha_arg != NULL && !sha256_hex_ok(sha_arg)) {
		cli_complain("a SHA-256 is 64 hex digits, not '%s'", sha_arg);
		return EXIT_USAGE;
	}
	if ((rc = cli_parse_url(url_arg, &url)) != EXIT_DONE)
		return rc;
	if (cli_absolute_path(path_arg, abs, sizeof(abs)) != 0) {
		cli_complain("path too long: %s", path_arg);
		free(url);
		return EXIT_USAGE;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct job_file_spec *f = realloc(l->files, cap * sizeof(*f));
		char **o;

		if (f != NULL)
			l->files = f;
		o = f != NULL ? realloc(l->owned, 3 * cap * sizeof(*o)) : NULL;
		if (o == NULL) {
			free(url);
			return cli_store_failed("add", BG_ENOMEM);
		}
		l->owned = o;
		l->cap = cap;
	}
	if ((path = strdup(abs)) == NULL || (sha_arg != NULL && (sha = strdup(sha_arg)) == NULL)) {
		free(url);
		free(path);
		return cli_store_failed("add", BG_ENOMEM);
	}
	l->owned[3 * l->n] = url;
	l->owned[3 * l->n + 1] = path;
	l->owned[3 * l->n + 2] = sha;
	l->files[l->n++] = (struct job_file_spec){url, path, sha};
	return EXIT_DONE;
}

static int
add_list_commit(struct ctx *c, const char *id, struct add_list *l)
{
	int err = job_add_files(c->st, id, l->files, l->n);

	if (err == 0)
		cli_wake(c);

	if (err == BG_EINVAL) {
		cli_complain("job %s takes no more files (it has finished)", id);
		return EXIT_USAGE;
	}
	if (err == BG_ELIMIT) {
		cli_complain("job %s would have more than %d files", id, JOB_FILES_MAX);
		return EXIT_USAGE;
	}
	return err != 0 ? cli_store_failed("add", err) : EXIT_DONE;
}

/* The digest a list line may end with: "URL LOCALPATH sha256=HEX".  A last
 * column starting with "sha256=" is always the digest, whatever follows
 * (the caller checks it), so that a mistyped one is refused rather than
 * taken as part of the path.  Cuts it off path (the rest of the line) and
 * returns HEX, or NULL. */
static char *
list_digest(char *path)
{
	char *end = path + strlen(path), *col;

	while (end > path && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	for (col = end; col > path && col[-1] != ' ' && col[-1] != '\t'; col--)
		;
	if (col == path || strncmp(col, "sha256=", 7) != 0)
		return NULL;
	*end = '\0';
	for (char *e = col; e > path && (e[-1] == ' ' || e[-1] == '\t'); e--)
		e[-1] = '\0';
	return col + 7;
}

/* Reads "URL LOCALPATH [sha256=HEX]" lines; every line is checked before any
 * file is added, so a bad list adds nothing. */
static int
add_from_list(struct ctx *c, const char *id, const char *list)
{
	FILE *f = strcmp(list, "-") == 0 ? stdin : fopen(list, "r");
	struct add_list l = {0};
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	unsigned lineno = 0;
	int rc = EXIT_DONE;

	if (f == NULL) {
		cli_complain("cannot read %s: %s", list, strerror(errno));
		return EXIT_USAGE;
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		char *p = line, *u, *path;

		lineno++;
		if (n > LIST_LINE_MAX) {
			cli_complain("%s:%u: line too long", list, lineno);
			rc = EXIT_USAGE;
			break;
		}
		line[strcspn(line, "\r\n")] = '\0';
		p += strspn(p, " \t");
		if (*p == '\0' || *p == '#')
			continue;
		u = p;
		p += strcspn(p, " \t");
		if (*p != '\0')
			*p++ = '\0';
		p += strspn(p, " \t");
		path = p;
		if (*path == '\0') {
			cli_complain("%s:%u: expected 'URL LOCALPATH'", list, lineno);
			rc = EXIT_USAGE;
			break;
		}
		if ((rc = add_list_push(&l, u, path, list_digest(path))) != EXIT_DONE) {
			cli_complain("%s:%u: nothing added", list, lineno);
			break;
		}
	}
	free(line);
	if (f != stdin)
		fclose(f);
	if (rc == EXIT_DONE && l.n > 0)
		rc = add_list_commit(c, id, &l);
	add_list_free(&l);
	return rc;
}

static int
add_one(struct ctx *c, const char *id, const char *url_arg, const char *path_arg,
        const char *sha_arg)
{
	struct add_list l = {0};
	int rc;

	if ((rc = add_list_push(&l, url_arg, path_arg, sha_arg)) == EXIT_DONE)
		rc = add_list_commit(c, id, &l);
	add_list_free(&l);
	return rc;
}

static int
cmd_add(struct ctx *c, int argc, char **argv)
{
	int rc;

	bool digest = argc == 6 && strcmp(argv[4], "--sha256") == 0;

	if ((argc != 4 && !digest) || (digest && strcmp(argv[2], "--from") == 0)) {
		cli_complain("usage: bgcopy add JOB URL FILE [--sha256 HEX] | bgcopy add JOB --from LIST");
		return EXIT_USAGE;
	}
	if (digest && !sha256_hex_ok(argv[5])) {
		cli_complain("--sha256 takes 64 hex digits, not '%s'", argv[5]);
		return EXIT_USAGE;
	}
	if ((rc = cli_open_store(c)) != EXIT_DONE || (rc = cli_check_job(c, argv[1])) != EXIT_DONE)
		return rc;
	if (strcmp(argv[2], "--from") == 0)
		return add_from_list(c, argv[1], argv[3]);
	return add_one(c, argv[1], argv[2], argv[3], digest ? argv[5] : NULL);
}

static int
cmd_set_flags(struct ctx *c, int argc, char **argv)
{
	uint32_t flags;
	int rc, err;

	if (argc != 3) {
		cli_complain("usage: bgcopy set-security-flags JOB FLAGS");
		return EXIT_USAGE;
	}
	if ((rc = cli_parse_flags(argv[2], &flags)) != EXIT_DONE)
		return rc;
	if ((rc = cli_open_store(c)) != EXIT_DONE || (rc = cli_check_job(c, argv[1])) != EXIT_DONE)
		return rc;
	if ((err = job_set_flags(c->st, argv[1], flags)) != 0)
		return cli_store_failed("set-security-flags", err);
	cli_wake(c);
	return EXIT_DONE;
}

static int
cmd_get_flags(struct ctx *c, int argc, char **argv)
{
	char buf[256];
	uint32_t flags;
	int rc, err;

	if (argc != 2) {
		cli_complain("usage: bgcopy get-security-flags JOB");
		return EXIT_USAGE;
	}
	if ((rc = cli_open_store(c)) != EXIT_DONE || (rc = cli_check_job(c, argv[1])) != EXIT_DONE)
		return rc;
	if ((err = job_get_flags(c->st, argv[1], &flags)) != 0)
		return cli_store_failed("get-security-flags", err);
	printf("%s\n", flags_format(flags, buf, sizeof(buf)));
	return EXIT_DONE;
}

int
cli_client_cert(const char *cert, const char *key, const char *pkcs11, struct cli_cert *out)
{
	char why[512];
	int err;

	memset(out, 0, sizeof(*out));
	if (pkcs11 != NULL) {
		if (cert != NULL || key != NULL) {
			cli_complain("a client certificate is --cert FILE [--key FILE] or --pkcs11 URI, "
			             "not both");
			return EXIT_USAGE;
		}
		if (!client_cert_is_pkcs11(pkcs11) || strpbrk(pkcs11, " \t\r\n") != NULL) {
			cli_complain("--pkcs11 takes a PKCS#11 URI (pkcs11:...), not '%s'", pkcs11);
			return EXIT_USAGE;
		}
		out->cert = pkcs11;
		return EXIT_DONE;
	}
	if (cert == NULL) {
		cli_complain("--key needs --cert");
		return EXIT_USAGE;
	}
	if (cli_absolute_path(cert, out->cert_path, sizeof(out->cert_path)) != 0 ||
	    (key != NULL && cli_absolute_path(key, out->key_path, sizeof(out->key_path)) != 0)) {
		cli_complain("path too long: %s", cert);
		return EXIT_USAGE;
	}
	out->cert = out->cert_path;
	out->key = key != NULL ? out->key_path : NULL;
	if ((err = client_cert_check(out->cert, out->key, why, sizeof(why))) != 0) {
		cli_complain("%s", why);
		return EXIT_USAGE;
	}
	return EXIT_DONE;
}

bool
cli_take_flag(int *argc, char **argv, const char *flag)
{
	for (int i = 1; i < *argc; i++) {
		if (strcmp(argv[i], flag) == 0) {
			memmove(&argv[i], &argv[i + 1], (size_t)(*argc - i) * sizeof(*argv));
			(*argc)--;
			return true;
		}
	}
	return false;
}

static int
cmd_info(struct ctx *c, int argc, char **argv)
{
	bool json = cli_take_flag(&argc, argv, "--json");
	json_t *doc = NULL;
	int rc, err;

	if (argc != 2) {
		cli_complain("usage: bgcopy info JOB [--json]");
		return EXIT_USAGE;
	}
	if ((rc = cli_open_store(c)) != EXIT_DONE)
		return rc;
	if ((err = job_document(c->st, c->home, argv[1], &doc)) != 0) {
		if (err == BG_ENOENT) {
			cli_complain("no such job: %s", argv[1]);
			return EXIT_USAGE;
		}
		return cli_store_failed("info", err);
	}
	if (json)
		cli_print_json(doc);
	else
		print_info_text(doc);
	json_decref(doc);
	return EXIT_DONE;
}

static int
list_text_fn(json_t *doc, void *arg)
{
	json_t *bt = json_object_get(doc, "bytes_total");
	char total[32];

	(void)arg;
	if (json_is_integer(bt))
		snprintf(total, sizeof(total), "%" JSON_INTEGER_FORMAT, json_integer_value(bt));
	else
		snprintf(total, sizeof(total), "?");
	printf("%-36s  %-15s  %-10s  %5" JSON_INTEGER_FORMAT "/%-5" JSON_INTEGER_FORMAT
	       "  %12" JSON_INTEGER_FORMAT "/%-12s  %s\n",
	       json_string_value(json_object_get(doc, "id")),
	       json_string_value(json_object_get(doc, "state")),
	       json_string_value(json_object_get(doc, "priority")),
	       json_integer_value(json_object_get(doc, "files_transferred")),
	       json_integer_value(json_object_get(doc, "files_total")),
	       json_integer_value(json_object_get(doc, "bytes_transferred")), total,
	       json_string_value(json_object_get(doc, "name")));
	return 0;
}

static int
list_json_fn(json_t *doc, void *arg)
{
	return json_array_append(arg, doc) == 0 ? 0 : BG_ENOMEM;
}

static int
cmd_list(struct ctx *c, int argc, char **argv)
{
	bool json = cli_take_flag(&argc, argv, "--json");
	bool all = cli_take_flag(&argc, argv, "--all");
	json_t *arr = NULL;
	int rc, err;

	if (argc != 1) {
		cli_complain("usage: bgcopy list [--all] [--json]");
		return EXIT_USAGE;
	}
	if ((rc = cli_open_store(c)) != EXIT_DONE)
		return rc;
	if (json) {
		if ((arr = json_array()) == NULL)
			return cli_store_failed("list", BG_ENOMEM);
		if ((err = job_list(c->st, c->home, all, list_json_fn, arr)) == 0)
			cli_print_json(arr);
		json_decref(arr);
	} else {
		printf("%-36s  %-15s  %-10s  %11s  %25s  %s\n", "ID", "STATE", "PRIORITY", "FILES",
		       "BYTES", "NAME");
		err = job_list(c->st, c->home, all, list_text_fn, NULL);
	}
	return err != 0 ? cli_store_failed("list", err) : EXIT_DONE;
}

/* ---- crl --------------------------------------------------------------- */

static int
crl_text_fn(json_t *info, void *arg)
{
	json_t *nu = json_object_get(info, "next_update");
	char when[32] = "(none)";

	(void)arg;
	if (json_is_integer(nu)) {
		time_t t = (time_t)json_integer_value(nu);
		struct tm tm;

		if (gmtime_r(&t, &tm) != NULL)
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
	}
	printf("%-8s  %-20s  %10" JSON_INTEGER_FORMAT "  %s\n",
	       json_is_true(json_object_get(info, "current")) ? "current" : "expired", when,
	       json_integer_value(json_object_get(info, "bytes")), cli_jstr(info, "url"));
	return 0;
}

static int
crl_collect_fn(json_t *info, void *arg)
{
	return json_array_append(arg, info) == 0 ? 0 : BG_ENOMEM;
}

static int
cmd_crl(struct ctx *c, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";
	char dir[PATH_MAX + 8];
	json_t *arr = NULL, *v;
	size_t i;
	int rc, err;

	if ((rc = cli_resolve_home(c)) != EXIT_DONE)
		return rc;
	snprintf(dir, sizeof(dir), "%s/crl", c->home);
	if (strcmp(sub, "list") == 0) {
		bool json = cli_take_flag(&argc, argv, "--json");

		if (argc != 2)
			goto usage;
		if ((arr = json_array()) == NULL)
			return cli_store_failed("crl list", BG_ENOMEM);
		if ((err = crl_each(dir, crl_collect_fn, arr)) != 0) {
			json_decref(arr);
			return cli_store_failed("crl list", err);
		}
		if (json) {
			cli_print_json(arr);
		} else {
			printf("%-8s  %-20s  %10s  %s\n", "STATE", "NEXT UPDATE", "BYTES", "URL");
			json_array_foreach(arr, i, v) crl_text_fn(v, NULL);
		}
		json_decref(arr);
		return EXIT_DONE;
	}
	if (strcmp(sub, "refresh") == 0 && argc == 2) {
		unsigned ok = 0, failed = 0;

		if ((arr = json_array()) == NULL)
			return cli_store_failed("crl refresh", BG_ENOMEM);
		if ((err = crl_each(dir, crl_collect_fn, arr)) != 0) {
			json_decref(arr);
			return cli_store_failed("crl refresh", err);
		}
		json_array_foreach(arr, i, v) {
			char why[512];

			if (crl_fetch(dir, cli_jstr(v, "url"), c->g->ca_file, why, sizeof(why)) == 0) {
				ok++;
			} else {
				failed++;
				cli_complain("%s", why);
			}
		}
		json_decref(arr);
		printf("refreshed %u CRLs, %u failed\n", ok, failed);
		return failed ? EXIT_SYSTEM : EXIT_DONE;
	}
	if (strcmp(sub, "clear") == 0 && argc == 2) {
		unsigned n = 0;

		if ((err = crl_clear(dir, &n)) != 0)
			return cli_store_failed("crl clear", err);
		printf("removed %u CRLs\n", n);
		return EXIT_DONE;
	}
usage:
	cli_complain("usage: bgcopy crl list [--json] | crl refresh | crl clear");
	return EXIT_USAGE;
}

/* ---- Dispatch ---------------------------------------------------------- */

static const struct command {
	const char *name;
	int (*fn)(struct ctx *c, int argc, char **argv);
} commands[] = {
	{"get", cmd_get},
	{"create", cmd_create},
	{"add", cmd_add},
	{"set-security-flags", cmd_set_flags},
	{"get-security-flags", cmd_get_flags},
	{"info", cmd_info},
	{"list", cmd_list},
	{"cache", cmd_cache},
	{"crl", cmd_crl},
	{"resume", cmd_resume},
	{"suspend", cmd_suspend},
	{"cancel", cmd_cancel},
	{"complete", cmd_complete},
	{"set-priority", cmd_set_priority},
	{"set-notify-cmd", cmd_set_notify_cmd},
	{"set-min-retry-delay", cmd_set_min_retry_delay},
	{"set-no-progress-timeout", cmd_set_no_progress_timeout},
	{"set-max-download-time", cmd_set_max_download_time},
	{"set-headers", cmd_set_headers},
	{"set-credentials", cmd_set_credentials},
	{"remove-credentials", cmd_remove_credentials},
	{"set-http-method", cmd_set_http_method},
	{"get-http-method", cmd_get_http_method},
	{"get-headers", cmd_get_headers},
	{"make-headers-write-only", cmd_make_headers_write_only},
	{"set-proxy", cmd_set_proxy},
	{"set-ca-file", cmd_set_ca_file},
	{"set-client-cert", cmd_set_client_cert},
	{"get-client-cert", cmd_get_client_cert},
	{"set-cert-check-cmd", cmd_set_cert_check_cmd},
	{"set-peer-caching", cmd_set_peer_caching},
	{"set-transfer-policy", cmd_set_transfer_policy},
	{"set-max-rate", cmd_set_max_rate},
	{"replace-remote-prefix", cmd_replace_remote_prefix},
	{"wait", cmd_wait},
	{"daemon", cmd_daemon},
	{"config", cmd_config},
	{"peers", cmd_peers},
};

int
cli_run(const struct cli_globals *g, int argc, char **argv)
{
	struct ctx c;
	char why[1024];
	int rc = -1, err;

	memset(&c, 0, sizeof(c));
	c.g = g;
	/* Every command sees the same settings; a bad file stops them all,
	 * so that a typo is found at once and not by a peer never asked. */
	if ((err = bg_config_load(&c.conf, why, sizeof(why))) != 0) {
		cli_complain("%s", why);
		return err == BG_EINVAL ? EXIT_USAGE : EXIT_SYSTEM;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[0], commands[i].name) == 0) {
			rc = commands[i].fn(&c, argc, argv);
			break;
		}
	}
	if (rc < 0) {
		cli_complain("unknown command '%s' (see bgcopy --help)", argv[0]);
		rc = EXIT_USAGE;
	}
	store_close(c.st);
	bg_config_free(&c.conf);
	return rc;
}
