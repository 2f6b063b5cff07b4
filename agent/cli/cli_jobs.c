/*
 * cli_jobs.c - the commands that manage background jobs: resume, suspend,
 * cancel, complete, the set-* settings, replace-remote-prefix, wait and
 * daemon.  Every change goes through job_modify()/job_event(), so that a
 * process transferring the job sees it at its next commit, and then wakes
 * a running daemon.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "jobs.h"
#include "cli_int.h"
#include "peertable.h"
#include "record.h"

#define SECONDS_MAX (10LL * 365 * 24 * 3600) /* longest delay or timeout accepted */
#define PASSWORD_MAX 1024                     /* bytes */
#define NOTIFY_ARGS_MAX 64

static volatile sig_atomic_t wait_interrupted;

static void
on_wait_signal(int sig)
{
	(void)sig;
	wait_interrupted = 1;
}

/* Opens the store and checks the job; returns an exit status. */
static int
prepare(struct ctx *c, const char *id)
{
	int rc;

	if ((rc = cli_open_store(c)) != EXIT_DONE)
		return rc;
	return cli_check_job(c, id);
}

static int
finished_job(const char *id, int err)
{
	if (err == BG_EINVAL) {
		cli_complain("job %s is completed or cancelled: it cannot change", id);
		return EXIT_USAGE;
	}
	return cli_store_failed(id, err);
}

static int
event_command(struct ctx *c, int argc, char **argv, enum job_event ev)
{
	enum job_state from, to;
	int rc, err;

	if (argc != 2) {
		cli_complain("usage: bgcopy %s JOB", argv[0]);
		return EXIT_USAGE;
	}
	if ((rc = prepare(c, argv[1])) != EXIT_DONE)
		return rc;
	err = job_event(c->st, argv[1], ev, &from, &to);
	if (err == BG_ENOENT && ev == JOB_EV_RESUME) {
		cli_complain("job %s has no files: add some first", argv[1]);
		return EXIT_USAGE;
	}
	if (err == BG_EINVAL) {
		cli_complain("cannot %s job %s: it is %s", argv[0], argv[1], job_state_name(from));
		return EXIT_USAGE;
	}
	if (err != 0)
		return cli_store_failed(argv[0], err);
	cli_wake(c);
	return EXIT_DONE;
}

int
cmd_resume(struct ctx *c, int argc, char **argv)
{
	return event_command(c, argc, argv, JOB_EV_RESUME);
}

int
cmd_suspend(struct ctx *c, int argc, char **argv)
{
	return event_command(c, argc, argv, JOB_EV_SUSPEND);
}

int
cmd_cancel(struct ctx *c, int argc, char **argv)
{
	struct job_lock *lock = NULL;
	int rc, err;

	if ((rc = event_command(c, argc, argv, JOB_EV_CANCEL)) != EXIT_DONE)
		return rc;
	/* Partial data goes now if nobody transfers the job; otherwise its
	 * runner sees the change at its next commit and removes it. */
	if (job_lock(c->home, argv[1], &lock) == 0) {
		err = job_discard_partials(c->st, argv[1]);
		job_unlock(lock);
		if (err != 0)
			return cli_store_failed("cancel", err);
	}
	return EXIT_DONE;
}

int
cmd_complete(struct ctx *c, int argc, char **argv)
{
	struct job_lock *lock = NULL;
	struct job_rec job = {0};
	int rc, err;

	if (argc != 2) {
		cli_complain("usage: bgcopy complete JOB");
		return EXIT_USAGE;
	}
	if ((rc = prepare(c, argv[1])) != EXIT_DONE)
		return rc;
	if ((rc = cli_lock_job(c, argv[1], "complete", &lock)) != EXIT_DONE)
		return rc;
	/* The state is in the job record: the files are read by job_complete. */
	if ((err = job_load(c->st, argv[1], &job)) != 0) {
		rc = err == BG_ENOENT ? cli_check_job(c, argv[1]) : cli_store_failed("complete", err);
		goto out;
	}
	if (job.state != JOB_TRANSFERRED) {
		cli_complain("cannot complete job %s: it is %s, not TRANSFERRED", argv[1],
		             job_state_name(job.state));
		rc = EXIT_USAGE;
		goto out;
	}
	if ((err = job_complete(c->st, argv[1], cli_sync_wanted())) != 0) {
		cli_complain("cannot complete job %s: %s", argv[1], bg_strerror(err));
		rc = EXIT_SYSTEM;
		goto out;
	}
	cli_wake(c);
	rc = EXIT_DONE;
out:
	job_rec_clear(&job);
	job_unlock(lock);
	return rc;
}

/* argv[from..argc) as a NULL-terminated list in list (at least argc - from + 1 long). */
static const char *const *
arg_list(int argc, char **argv, int from, const char **list)
{
	int n = 0;

	for (int i = from; i < argc; i++)
		list[n++] = argv[i];
	list[n] = NULL;
	return list;
}

/* Changes the settings of a job named in s. */
static int
change(struct ctx *c, const char *id, const struct job_settings *s)
{
	int rc, err;

	if ((rc = prepare(c, id)) != EXIT_DONE)
		return rc;
	if ((err = job_change(c->st, id, s)) != 0)
		return finished_job(id, err);
	cli_wake(c);
	return EXIT_DONE;
}

int
cmd_set_priority(struct ctx *c, int argc, char **argv)
{
	enum job_priority p;

	int rc, err;

	if (argc != 3 || job_priority_parse(argv[2], &p) != 0) {
		cli_complain("usage: bgcopy set-priority JOB foreground|high|normal|low");
		return EXIT_USAGE;
	}
	struct job_settings s = {.set = JOB_SET_PRIORITY, .priority = p};

	if ((rc = prepare(c, argv[1])) != EXIT_DONE)
		return rc;
	if ((err = job_change(c->st, argv[1], &s)) == BG_EBUSY) {
		cli_complain("job %s uses another HTTP method than GET: it stays foreground "
		             "(set-http-method JOB GET first)",
		             argv[1]);
		return EXIT_USAGE;
	}
	if (err != 0)
		return finished_job(argv[1], err);
	cli_wake(c);
	return EXIT_DONE;
}

int
cmd_set_notify_cmd(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_NOTIFY_CMD};
	const char *list[NOTIFY_ARGS_MAX + 1];

	if (argc < 3 || argc - 2 > NOTIFY_ARGS_MAX) {
		cli_complain("usage: bgcopy set-notify-cmd JOB PROGRAM [ARG...]   ('' clears it)");
		return EXIT_USAGE;
	}
	/* '' alone clears it. */
	if (!(argc == 3 && argv[2][0] == '\0'))
		s.notify_cmd = arg_list(argc, argv, 2, list);
	return change(c, argv[1], &s);
}

static int
parse_seconds(const char *s, int64_t *out)
{
	return bg_parse_i64(s, strlen(s), 0, SECONDS_MAX, out) != 0 ? BG_EINVAL : 0;
}

static int
seconds_command(struct ctx *c, int argc, char **argv, enum job_setting which)
{
	struct job_settings s = {.set = which};
	int64_t v;

	if (argc != 3 || parse_seconds(argv[2], &v) != 0) {
		cli_complain("usage: bgcopy %s JOB SECONDS (0 to %lld)", argv[0], SECONDS_MAX);
		return EXIT_USAGE;
	}
	s.min_retry_delay = s.no_progress_timeout = v;
	return change(c, argv[1], &s);
}

int
cmd_set_min_retry_delay(struct ctx *c, int argc, char **argv)
{
	return seconds_command(c, argc, argv, JOB_SET_MIN_RETRY_DELAY);
}

int
cmd_set_no_progress_timeout(struct ctx *c, int argc, char **argv)
{
	return seconds_command(c, argc, argv, JOB_SET_NO_PROGRESS_TIMEOUT);
}

/* BITS SetMaximumDownloadTime: seconds in CONNECTING or TRANSFERRING
 * before the job is in ERROR (0: no limit), up to a ULONG as BITS takes. */
int
cmd_set_max_download_time(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_MAX_DOWNLOAD_TIME};
	int64_t v;

	if (argc != 3 || bg_parse_i64(argv[2], strlen(argv[2]), 0, JOB_MAX_DOWNLOAD_TIME_MAX, &v) != 0) {
		cli_complain("usage: bgcopy set-max-download-time JOB SECONDS (0: no limit, at most %lld)",
		             JOB_MAX_DOWNLOAD_TIME_MAX);
		return EXIT_USAGE;
	}
	s.max_download_time = v;
	return change(c, argv[1], &s);
}

/* BITS has no per-job rate (its limits are Group Policy's): the job's own
 * limit, bytes/s, which applies besides the daemon's and to foreground
 * jobs too. */
int
cmd_set_max_rate(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_MAX_RATE};

	if (argc != 3) {
		cli_complain("usage: bgcopy set-max-rate JOB RATE|none (bytes/s; K, M, G: powers of "
		             "1024; none or 0: no limit)");
		return EXIT_USAGE;
	}
	if (bg_parse_rate(argv[2], &s.max_rate) != 0) {
		cli_complain("set-max-rate: expected bytes per second (K, M, G: powers of 1024), none "
		             "or 0: no limit, not '%s'",
		             argv[2]);
		return EXIT_USAGE;
	}
	return change(c, argv[1], &s);
}

int
cmd_set_headers(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_HEADERS};
	const char *list[JOB_HEADERS_MAX + 1];

	/* --write-only: the headers and MakeCustomHeadersWriteOnly at once. */
	if (cli_take_flag(&argc, argv, "--write-only"))
		s.set |= JOB_SET_HEADERS_WRITE_ONLY;
	if (argc < 2 || argc - 2 > JOB_HEADERS_MAX) {
		cli_complain("usage: bgcopy set-headers JOB [--write-only] ['Name: value'...]   "
		             "(none clears them)");
		return EXIT_USAGE;
	}
	for (int i = 2; i < argc; i++) {
		if (!cli_valid_header(argv[i])) {
			cli_complain("set-headers takes 'Name: value', not '%s'", argv[i]);
			return EXIT_USAGE;
		}
	}
	s.headers = arg_list(argc, argv, 2, list);
	return change(c, argv[1], &s);
}

int
cli_read_password(const char *file, char *buf, size_t len)
{
	FILE *f = file != NULL ? fopen(file, "r") : stdin;
	struct termios old, quiet;
	bool tty = file == NULL && isatty(STDIN_FILENO);
	bool ok;

	if (f == NULL) {
		cli_complain("cannot read %s: %s", file, strerror(errno));
		return EXIT_USAGE;
	}
	if (tty) {
		fprintf(stderr, "password: ");
		tcgetattr(STDIN_FILENO, &old);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	ok = fgets(buf, (int)len, f) != NULL;
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (f != stdin)
		fclose(f);
	if (!ok) {
		buf[0] = '\0';
		return EXIT_DONE; /* an empty password */
	}
	buf[strcspn(buf, "\r\n")] = '\0';
	return EXIT_DONE;
}

/* Parses "--target T" and "--scheme S" at argv[*i] (one of them); an exit
 * status, EXIT_DONE when argv[*i] is neither. */
static int
auth_option(int argc, char **argv, int *i, enum job_auth_target *t, enum job_auth_scheme *sc,
            bool *taken)
{
	const char *opt = argv[*i];

	*taken = false;
	if (strcmp(opt, "--target") != 0 && strcmp(opt, "--scheme") != 0)
		return EXIT_DONE;
	if (*i + 1 >= argc) {
		cli_complain("option %s needs a value", opt);
		return EXIT_USAGE;
	}
	*taken = true;
	(*i)++;
	if (strcmp(opt, "--target") == 0) {
		if (job_auth_target_parse(argv[*i], t) != 0) {
			cli_complain("--target takes server or proxy, not '%s'", argv[*i]);
			return EXIT_USAGE;
		}
		return EXIT_DONE;
	}
	return cli_parse_auth_scheme(argv[*i], sc);
}

int
cli_parse_auth_scheme(const char *s, enum job_auth_scheme *out)
{
	int err = job_auth_scheme_parse(s, out);

	if (err == BG_ENOTIMPL) {
		cli_complain("E_NOTIMPL (0x%08X): authentication scheme '%s' not supported", HR_E_NOTIMPL,
		             s);
		return EXIT_USAGE;
	}
	if (err != 0) {
		cli_complain("an authentication scheme is basic, digest, ntlm or negotiate, not '%s'", s);
		return EXIT_USAGE;
	}
	return EXIT_DONE;
}

bool
cli_valid_auth_user(const char *user, enum job_auth_scheme sc)
{
	/* RFC 7617 section 2: a basic user-id cannot hold a colon. */
	if (sc == JOB_AUTH_BASIC && strchr(user, ':') != NULL) {
		cli_complain("a user name for basic authentication cannot hold ':'");
		return false;
	}
	if (strpbrk(user, "\r\n") != NULL) {
		cli_complain("a user name cannot hold line breaks");
		return false;
	}
	return true;
}

/* Applies one credential change; an exit status. */
static int
change_auth(struct ctx *c, const char *id, struct job_settings *a, const char *file)
{
	char password[PASSWORD_MAX];
	int rc, err;

	if ((rc = prepare(c, id)) != EXIT_DONE)
		return rc;
	a->password = NULL;
	password[0] = '\0';
	if (a->user != NULL) {
		if ((rc = cli_read_password(file, password, sizeof(password))) != EXIT_DONE)
			return rc;
		a->password = password;
	}
	/* The store is readable by its owner only (home 0700, files 0600). */
	err = job_change(c->st, id, a);
	explicit_bzero(password, sizeof(password));
	if (err != 0)
		return finished_job(id, err);
	cli_wake(c);
	return EXIT_DONE;
}

int
cmd_set_credentials(struct ctx *c, int argc, char **argv)
{
	const char *file = NULL, *user = NULL;
	struct job_settings a = {.set = JOB_SET_AUTH,
	                         .auth_target = JOB_AUTH_SERVER,
	                         .auth_scheme = JOB_AUTH_BASIC};
	bool taken;
	int rc;

	for (int i = 2; i < argc; i++) {
		if ((rc = auth_option(argc, argv, &i, &a.auth_target, &a.auth_scheme, &taken)) !=
		    EXIT_DONE)
			return rc;
		if (taken)
			continue;
		if (strcmp(argv[i], "--password-file") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (user == NULL && (argv[i][0] != '-' || argv[i][1] == '\0'))
			user = argv[i];
		else
			goto usage;
	}
	if (argc < 3 || user == NULL)
		goto usage;
	if (!cli_valid_auth_user(user, a.auth_scheme))
		return EXIT_USAGE;
	/* Without --target and --scheme: the server's basic credential, as
	 * before schemes existed; USER '' clears it. */
	a.user = user[0] != '\0' ? user : NULL;
	return change_auth(c, argv[1], &a, file);
usage:
	cli_complain("usage: bgcopy set-credentials JOB [--target server|proxy] "
	             "[--scheme basic|digest|ntlm|negotiate] USER [--password-file F]   "
	             "(USER '' clears it)");
	return EXIT_USAGE;
}

int
cmd_remove_credentials(struct ctx *c, int argc, char **argv)
{
	struct job_settings a = {.set = JOB_SET_AUTH};
	bool target = false, scheme = false, taken;
	int rc;

	for (int i = 2; i < argc; i++) {
		bool is_target = strcmp(argv[i], "--target") == 0;

		if ((rc = auth_option(argc, argv, &i, &a.auth_target, &a.auth_scheme, &taken)) !=
		    EXIT_DONE)
			return rc;
		if (!taken)
			goto usage;
		*(is_target ? &target : &scheme) = true;
	}
	if (argc < 2 || !target || !scheme)
		goto usage;
	a.user = NULL;
	return change_auth(c, argv[1], &a, NULL);
usage:
	cli_complain("usage: bgcopy remove-credentials JOB --target server|proxy "
	             "--scheme basic|digest|ntlm|negotiate");
	return EXIT_USAGE;
}

int
cmd_set_http_method(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_HTTP_METHOD};
	int rc, err;

	if (argc != 3) {
		cli_complain("usage: bgcopy set-http-method JOB METHOD   (GET, the default, or another "
		             "method token such as POST)");
		return EXIT_USAGE;
	}
	if (!job_http_method_valid(argv[2])) {
		/* The name is echoed only when it cannot break the line. */
		bool plain = strpbrk(argv[2], "\r\n") == NULL && strlen(argv[2]) < 64;

		cli_complain("'%s' is not a method that can download: a token of letters, digits "
		             "and !#$%%&'*+-.^_`|~ (RFC 9110 section 9), not HEAD nor CONNECT",
		             plain ? argv[2] : "(a name with line breaks or too long)");
		return EXIT_USAGE;
	}
	s.http_method = argv[2];
	if ((rc = prepare(c, argv[1])) != EXIT_DONE)
		return rc;
	err = job_change(c->st, argv[1], &s);
	if (err == BG_EBUSY) {
		cli_complain("job %s: the method can change only while the job is SUSPENDED or in "
		             "ERROR",
		             argv[1]);
		return EXIT_USAGE;
	}
	if (err != 0)
		return finished_job(argv[1], err);
	cli_wake(c);
	return EXIT_DONE;
}

/* Loads the record of the job a "COMMAND JOB" command names into *job
 * (job_rec_clear() it on EXIT_DONE); an exit status. */
static int
load_named_job(struct ctx *c, int argc, char **argv, struct job_rec *job)
{
	int rc, err;

	if (argc != 2) {
		cli_complain("usage: bgcopy %s JOB", argv[0]);
		return EXIT_USAGE;
	}
	if ((rc = prepare(c, argv[1])) != EXIT_DONE)
		return rc;
	if ((err = job_load(c->st, argv[1], job)) != 0) {
		job_rec_clear(job);
		return cli_store_failed(argv[1], err);
	}
	return EXIT_DONE;
}

int
cmd_get_http_method(struct ctx *c, int argc, char **argv)
{
	struct job_rec job;
	int rc;

	if ((rc = load_named_job(c, argc, argv, &job)) != EXIT_DONE)
		return rc;
	printf("%s\n", job.http_method != NULL ? job.http_method : "GET");
	job_rec_clear(&job);
	return EXIT_DONE;
}

int
cmd_get_headers(struct ctx *c, int argc, char **argv)
{
	struct job_rec job;
	int rc;

	if ((rc = load_named_job(c, argc, argv, &job)) != EXIT_DONE)
		return rc;
	/* BITS: GetCustomHeaders fails with E_ACCESSDENIED once the headers
	 * are write-only (MakeCustomHeadersWriteOnly). */
	if (job.headers_write_only) {
		job_rec_clear(&job);
		cli_complain("E_ACCESSDENIED (0x%08X): the custom headers of job %s are write-only",
		             HR_E_ACCESSDENIED, argv[1]);
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < job.headers.n; i++)
		printf("%s\n", job.headers.v[i]);
	job_rec_clear(&job);
	return EXIT_DONE;
}

int
cmd_make_headers_write_only(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_HEADERS_WRITE_ONLY};

	if (argc != 2) {
		cli_complain("usage: bgcopy make-headers-write-only JOB   (cannot be undone)");
		return EXIT_USAGE;
	}
	return change(c, argv[1], &s);
}

int
cmd_set_proxy(struct ctx *c, int argc, char **argv)
{
	char why[160];
	int err;

	if (argc != 3) {
		cli_complain("usage: bgcopy set-proxy JOB URL|none");
		return EXIT_USAGE;
	}
	if (strcmp(argv[2], "none") != 0 && (err = url_proxy_check(argv[2], why, sizeof(why))) != 0) {
		if (err == BG_ENOMEM)
			return cli_store_failed("set-proxy", err);
		cli_complain("set-proxy: %s   (usage: bgcopy set-proxy JOB URL|none)", why);
		return EXIT_USAGE;
	}
	{
		struct job_settings s = {.set = JOB_SET_PROXY, .proxy = argv[2]};

		return change(c, argv[1], &s);
	}
}

int
cmd_set_ca_file(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_CA_FILE};
	char path[PATH_MAX];

	if (argc != 3) {
		cli_complain("usage: bgcopy set-ca-file JOB FILE|none");
		return EXIT_USAGE;
	}
	if (strcmp(argv[2], "none") == 0)
		return change(c, argv[1], &s);
	if (access(argv[2], R_OK) != 0) {
		cli_complain("cannot read CA file %s: %s", argv[2], strerror(errno));
		return EXIT_USAGE;
	}
	if (cli_absolute_path(argv[2], path, sizeof(path)) != 0) {
		cli_complain("path too long: %s", argv[2]);
		return EXIT_USAGE;
	}
	s.ca_file = path;
	return change(c, argv[1], &s);
}

/* BITS SetClientCertificateByID/ByName and RemoveClientCertificate: the
 * certificate is presented to the job's own hosts (README.md). */
int
cmd_set_client_cert(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_CLIENT_CERT};
	const char *cert = NULL, *key = NULL, *pkcs11 = NULL;
	struct cli_cert cc;
	int rc;

	if (argc == 3 && strcmp(argv[2], "none") == 0)
		return change(c, argv[1], &s);
	for (int i = 2; i + 1 < argc && argc >= 4; i += 2) {
		const char **slot = strcmp(argv[i], "--cert") == 0     ? &cert
		                    : strcmp(argv[i], "--key") == 0    ? &key
		                    : strcmp(argv[i], "--pkcs11") == 0 ? &pkcs11
		                                                       : NULL;

		if (slot == NULL || *slot != NULL)
			goto usage;
		*slot = argv[i + 1];
	}
	if (argc < 4 || argc % 2 != 0)
		goto usage;
	if ((rc = cli_client_cert(cert, key, pkcs11, &cc)) != EXIT_DONE)
		return rc;
	s.client_cert = cc.cert;
	s.client_key = cc.key;
	return change(c, argv[1], &s);
usage:
	cli_complain("usage: bgcopy set-client-cert JOB --cert FILE [--key FILE] | --pkcs11 URI | none");
	return EXIT_USAGE;
}

/* BITS GetClientCertificate: what is set, never the key's bytes. */
int
cmd_get_client_cert(struct ctx *c, int argc, char **argv)
{
	bool json = cli_take_flag(&argc, argv, "--json");
	struct job_rec job;
	json_t *o = NULL;
	int rc, err;

	if (argc != 2) {
		cli_complain("usage: bgcopy get-client-cert JOB [--json]");
		return EXIT_USAGE;
	}
	if ((rc = prepare(c, argv[1])) != EXIT_DONE)
		return rc;
	if ((err = job_load(c->st, argv[1], &job)) != 0)
		return cli_store_failed(argv[1], err);
	if ((o = job_client_cert_json(&job)) == NULL) {
		job_rec_clear(&job);
		return cli_store_failed("get-client-cert", BG_ENOMEM);
	}
	if (json) {
		cli_print_json(o);
	} else if (json_is_null(o)) {
		printf("none\n");
	} else {
		static const char *const keys[] = {"pkcs11", "cert_file", "key_file", "subject",
		                                   "not_after", "problem"};

		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (json_is_string(json_object_get(o, keys[i])))
				printf("%s %s\n", keys[i], cli_jstr(o, keys[i]));
	}
	json_decref(o);
	job_rec_clear(&job);
	return EXIT_DONE;
}

/* BITS SetServerCertificateValidationInterface, as a program: run with the
 * host and the server's chain on its standard input (net_int.h) once per
 * new TLS session, after the security flags' checks passed; 0 accepts. */
int
cmd_set_cert_check_cmd(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_CERT_CHECK_CMD};
	const char *list[NOTIFY_ARGS_MAX + 1];
	char path[PATH_MAX];

	if (argc < 3 || argc - 2 > NOTIFY_ARGS_MAX || argv[2][0] == '\0') {
		cli_complain("usage: bgcopy set-cert-check-cmd JOB PROGRAM [ARG...] | none");
		return EXIT_USAGE;
	}
	if (argc == 3 && strcmp(argv[2], "none") == 0)
		return change(c, argv[1], &s);
	/* A program named by a path is taken as an absolute path (the daemon
	 * runs elsewhere); a bare name is searched in the runner's PATH. */
	if (strchr(argv[2], '/') != NULL) {
		if (cli_absolute_path(argv[2], path, sizeof(path)) != 0 || access(path, X_OK) != 0) {
			cli_complain("set-cert-check-cmd: %s is not an executable program", argv[2]);
			return EXIT_USAGE;
		}
		argv[2] = path;
	}
	s.cert_check_cmd = arg_list(argc, argv, 2, list);
	return change(c, argv[1], &s);
}

int
cmd_set_peer_caching(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_PEER_CACHING};

	if (argc == 3 && peer_caching_parse(argv[2], &s.peer_caching) == 0)
		return change(c, argv[1], &s);
	cli_complain("usage: bgcopy set-peer-caching JOB off|client|server|both");
	return EXIT_USAGE;
}

int
cmd_set_transfer_policy(struct ctx *c, int argc, char **argv)
{
	struct job_settings s = {.set = JOB_SET_TRANSFER_POLICY};

	if (argc == 3 && job_transfer_policy_parse(argv[2], &s.transfer_policy) == 0)
		return change(c, argv[1], &s);
	cli_complain("usage: bgcopy set-transfer-policy JOB always|unrestricted-only");
	return EXIT_USAGE;
}

int
cmd_replace_remote_prefix(struct ctx *c, int argc, char **argv)
{
	unsigned changed = 0;
	int rc, err;

	if (argc != 4 || argv[2][0] == '\0') {
		cli_complain("usage: bgcopy replace-remote-prefix JOB OLD NEW");
		return EXIT_USAGE;
	}
	if ((rc = prepare(c, argv[1])) != EXIT_DONE)
		return rc;
	err = job_replace_remote_prefix(c->st, argv[1], argv[2], argv[3], &changed);
	if (err == BG_EINVAL) {
		cli_complain("replacing '%s' by '%s' does not give valid http(s) URLs, or the job "
		             "has finished: nothing changed",
		             argv[2], argv[3]);
		return EXIT_USAGE;
	}
	if (err != 0)
		return cli_store_failed("replace-remote-prefix", err);
	printf("%u file%s changed\n", changed, changed == 1 ? "" : "s");
	if (changed > 0)
		cli_wake(c);
	return EXIT_DONE;
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
cmd_wait(struct ctx *c, int argc, char **argv)
{
	bool has_timeout = false, done, last, timed_out;
	int64_t timeout = 0;
	struct progress_bar *bar = NULL;
	struct sigaction sa;
	char path[PATH_MAX + 16], line[1024];
	double start = now_seconds(), last_draw = 0;
	int ino = -1, rc, err;

	if (argc == 4 && strcmp(argv[2], "--timeout") == 0 && parse_seconds(argv[3], &timeout) == 0)
		has_timeout = true;
	else if (argc != 2) {
		cli_complain("usage: bgcopy wait JOB [--timeout SECONDS]");
		return EXIT_USAGE;
	}
	if ((rc = prepare(c, argv[1])) != EXIT_DONE)
		return rc;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_wait_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* Woken by every commit to the store (and by CLI changes), with a
	 * one-second tick as a fallback. */
	if ((ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) >= 0) {
		snprintf(path, sizeof(path), "%s/store.mdb", c->home);
		inotify_add_watch(ino, path, IN_MODIFY);
		snprintf(path, sizeof(path), "%s/wake", c->home);
		inotify_add_watch(ino, c->home, IN_CLOSE_WRITE);
	}
	if (isatty(STDERR_FILENO))
		bar = progress_new(stderr);
	for (;;) {
		struct job_rec job;
		json_t *doc = NULL;
		enum job_state state;

		/* The job record alone says the state; the whole document (every
		 * file) is read only to draw the bar, a few times a second. */
		if ((err = job_load(c->st, argv[1], &job)) != 0) {
			job_rec_clear(&job);
			rc = cli_store_failed("wait", err);
			break;
		}
		/* A job whose runner died waits, QUEUED, for the next one. */
		state = job_state_shown(c->home, argv[1], job.state);
		job_rec_clear(&job);
		done = state == JOB_TRANSFERRED || state == JOB_ACKNOWLEDGED;
		/* The last draw, when wait returns, shows where the job is. */
		timed_out = has_timeout && now_seconds() - start >= (double)timeout;
		last = done || state == JOB_ERROR || state == JOB_CANCELLED || wait_interrupted ||
		       timed_out;
		if (bar != NULL && (last || now_seconds() - last_draw >= 0.2)) {
			if (job_document(c->st, c->home, argv[1], &doc) == 0)
				cli_draw_document(bar, doc, last);
			json_decref(doc);
			doc = NULL;
			last_draw = now_seconds();
		}
		if (done) {
			rc = EXIT_DONE;
			break;
		}
		if (state == JOB_ERROR || state == JOB_CANCELLED) {
			progress_end(bar);
			bar = NULL;
			if (state == JOB_ERROR && job_document(c->st, NULL, argv[1], &doc) == 0)
				cli_complain("job %s ERROR %s", argv[1], cli_error_line(doc, line, sizeof(line)));
			else
				cli_complain("job %s was cancelled", argv[1]);
			json_decref(doc);
			rc = EXIT_JOB_ERROR;
			break;
		}
		if (wait_interrupted) {
			rc = EXIT_SYSTEM;
			break;
		}
		if (timed_out) {
			progress_end(bar);
			bar = NULL;
			cli_complain("timed out after %" PRId64 " s; job %s is %s", timeout, argv[1],
			             job_state_name(state));
			rc = EXIT_SYSTEM;
			break;
		}
		{
			struct pollfd pfd = {ino, POLLIN, 0};
			char buf[4096];

			if (poll(&pfd, ino >= 0 ? 1 : 0, 1000) > 0) {
				while (read(ino, buf, sizeof(buf)) > 0)
					;
				/* A burst of commits is looked at once. */
				poll(NULL, 0, 50);
			}
		}
	}
	progress_end(bar);
	if (ino >= 0)
		close(ino);
	return rc;
}

int
cmd_daemon(struct ctx *c, int argc, char **argv)
{
	struct daemon_options opt;
	const char *peers[JOB_PEERS_MAX];
	size_t npeers = 0;
	int64_t v;
	int rc;

	memset(&opt, 0, sizeof(opt));
	opt.max_transfers = DAEMON_MAX_TRANSFERS;
	opt.slice_seconds = DAEMON_SLICE;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--max-transfers") == 0 && i + 1 < argc &&
		    parse_seconds(argv[i + 1], &v) == 0 && v >= 1 && v <= DAEMON_MAX_WORKERS) {
			opt.max_transfers = (unsigned)v;
			i++;
		} else if (strcmp(argv[i], "--peer") == 0 && i + 1 < argc && valid_peer(argv[i + 1]) &&
		           npeers < JOB_PEERS_MAX) {
			peers[npeers++] = argv[++i];
		} else if (strcmp(argv[i], "--peer-key") == 0 && i + 1 < argc) {
			if (!cli_peer_key_usable(argv[i + 1]))
				return EXIT_USAGE;
			opt.peer_key = argv[++i];
		} else if (strcmp(argv[i], "--slice") == 0 && i + 1 < argc &&
		           parse_seconds(argv[i + 1], &v) == 0 && v >= 1) {
			opt.slice_seconds = (unsigned)v;
			i++;
		} else if ((strcmp(argv[i], "--max-rate") == 0 ||
		            strcmp(argv[i], "--max-rate-schedule") == 0) &&
		           i + 1 < argc) {
			/* As bgcopy.conf's max_rate and max_rate_schedule, which
			 * they override. */
			const char *key =
				strcmp(argv[i], "--max-rate") == 0 ? "max_rate" : "max_rate_schedule";
			char why[512];

			if (bg_config_set(&c->conf, key, argv[i + 1], why, sizeof(why)) != 0) {
				cli_complain("%s", why);
				return EXIT_USAGE;
			}
			i++;
		} else {
			cli_complain("usage: bgcopy daemon [--max-transfers N (1-%d)] [--slice SECONDS] "
			             "[--peer HOST:PORT]... [--peer-key FILE] [--max-rate RATE|none] "
			             "[--max-rate-schedule SCHEDULE|none]",
			             DAEMON_MAX_WORKERS);
			return EXIT_USAGE;
		}
	}
	opt.max_rate = c->conf.max_rate;
	opt.schedule = c->conf.has_schedule ? &c->conf.schedule : NULL;
	if (opt.peer_key == NULL && (rc = cli_config_peer_key(c, true, &opt.peer_key)) != EXIT_DONE)
		return rc;
	if ((rc = cli_open_store(c)) != EXIT_DONE)
		return rc;
	opt.home = c->home;
	opt.ca_file = c->g->ca_file;
	opt.peers = peers;
	opt.npeers = npeers;
	opt.sync = cli_sync_wanted();
	opt.fleet = c->conf.fleet;
	opt.fleet_owner = c->conf.fleet_owner;
	opt.fleet_origin_max = c->conf.fleet_origin_max;
	opt.fleet_takeovers = c->conf.fleet_takeovers;
	/* Without --peer, jobs that name none ask the peer table, kept
	 * current while the daemon runs. */
	if (npeers == 0 && (rc = cli_peer_table(c, true, 0, &opt.table)) != EXIT_DONE)
		return rc;
	rc = daemon_run(c->st, &opt) == 0 ? EXIT_DONE : EXIT_SYSTEM;
	peer_table_free(opt.table);
	return rc;
}
