/* cli_int.h - helpers shared by the command files of the CLI. */
#ifndef BG_CLI_INT_H
#define BG_CLI_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "jobs.h"
#include "cli.h"

struct ctx {
	const struct cli_globals *g;
	char home[PATH_MAX];
	struct bg_store *st;
	/* bgcopy.conf, loaded once before every command (cli_run): defaults,
	 * the files, no command-line overrides. */
	struct bg_config conf;
};

/* Prints "bgcopy: MESSAGE" on stderr. */
void cli_complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Resolves (and creates) the home; returns an exit status. */
int cli_resolve_home(struct ctx *c);
/* Loads the peer key at path to check it; complains and returns false when
 * it cannot be used (unreadable, wrong size, readable by others). */
bool cli_peer_key_usable(const char *path);
/* Opens the store in the home (once); returns an exit status. */
int cli_open_store(struct ctx *c);
/* Reports a store or system failure; returns EXIT_SYSTEM. */
int cli_store_failed(const char *what, int err);
/* EXIT_DONE when the job exists, else reports and returns an exit status. */
int cli_check_job(struct ctx *c, const char *id);
int cli_parse_flags(const char *s, uint32_t *out);
int cli_parse_url(const char *s, char **out);
int cli_absolute_path(const char *in, char *out, size_t len);
const char *cli_jstr(const json_t *o, const char *key);
/* Draws the bar for a job document's bytes (a no-op without a bar). */
void cli_draw_document(struct progress_bar *bar, const json_t *doc, bool force);
void cli_print_json(json_t *doc);
const char *cli_error_line(json_t *doc, char *buf, size_t len);
int cli_lock_job(struct ctx *c, const char *id, const char *what, struct job_lock **lock);
bool cli_valid_header(const char *h);
/* Whether s is HOST:PORT. */
bool valid_peer(const char *s);
/* Removes flag from argv if present; returns whether it was. */
bool cli_take_flag(int *argc, char **argv, const char *flag);
/* Whether BGCOPY_SYNC asks for power-loss durability (fsync at the end). */
bool cli_sync_wanted(void);
/* A client certificate given on the command line, checked and made
 * absolute: cert is the PEM file or the "pkcs11:" URI, key the PEM key file
 * or NULL (then in cert).  Both point into the struct or at the arguments. */
struct cli_cert {
	const char *cert, *key;
	char cert_path[PATH_MAX], key_path[PATH_MAX];
};
/* Checks --cert FILE [--key FILE] (pkcs11 NULL) or --pkcs11 URI (cert and
 * key NULL) into out.  Complains in one line and returns EXIT_USAGE for a
 * key others may read, an unreadable, encrypted or mismatched pair, or a
 * malformed URI; EXIT_DONE otherwise. */
int cli_client_cert(const char *cert, const char *key, const char *pkcs11, struct cli_cert *out);
/* Tells a running daemon that jobs changed (HOME/wake). */
void cli_wake(struct ctx *c);

/* The peer key file to use when no --peer-key is given: the config's
 * peer_key, or NULL, in *key.  One that cannot be used is reported in one
 * line naming where it was set: with fatal, EXIT_USAGE is returned; else
 * it is a warning (the runner then asks no peer) and EXIT_DONE. */
int cli_config_peer_key(struct ctx *c, bool fatal, const char **key);

/* config [--json] (cli_config.c). */
int cmd_config(struct ctx *c, int argc, char **argv);

/* cache ... (cli_cache.c). */
int cmd_cache(struct ctx *c, int argc, char **argv);
/* Folds peerd's usage log in, then drops expired keys and evicts down to
 * the configured limit; res (may be NULL) receives what went. */
int cli_enforce_limits(struct ctx *c, struct store_enforce_result *res);

/* The peers of jobs that name none (cli_peers.c). */
struct peer_table;
/* The peer table of the configuration: live (the daemon) or one-shot
 * (browse_ms 0: PEER_TABLE_BROWSE_MS); an exit status. */
int cli_peer_table(struct ctx *c, bool live, unsigned browse_ms, struct peer_table **out);
int cmd_peers(struct ctx *c, int argc, char **argv);

/* Commands in cli_jobs.c. */
int cmd_resume(struct ctx *c, int argc, char **argv);
int cmd_suspend(struct ctx *c, int argc, char **argv);
int cmd_cancel(struct ctx *c, int argc, char **argv);
int cmd_complete(struct ctx *c, int argc, char **argv);
int cmd_set_priority(struct ctx *c, int argc, char **argv);
int cmd_set_notify_cmd(struct ctx *c, int argc, char **argv);
int cmd_set_min_retry_delay(struct ctx *c, int argc, char **argv);
int cmd_set_no_progress_timeout(struct ctx *c, int argc, char **argv);
int cmd_set_max_download_time(struct ctx *c, int argc, char **argv);
int cmd_set_max_rate(struct ctx *c, int argc, char **argv);
int cmd_set_headers(struct ctx *c, int argc, char **argv);
int cmd_set_credentials(struct ctx *c, int argc, char **argv);
int cmd_remove_credentials(struct ctx *c, int argc, char **argv);
int cmd_set_http_method(struct ctx *c, int argc, char **argv);
int cmd_get_http_method(struct ctx *c, int argc, char **argv);
int cmd_get_headers(struct ctx *c, int argc, char **argv);
int cmd_make_headers_write_only(struct ctx *c, int argc, char **argv);
/* Reads a password (one line): from file, or from standard input (without
 * echo on a terminal); an exit status. */
int cli_read_password(const char *file, char *buf, size_t len);
/* Parses an authentication scheme name; PASSPORT is refused with
 * E_NOTIMPL.  An exit status (the complaint printed). */
int cli_parse_auth_scheme(const char *s, enum job_auth_scheme *out);
/* Whether user can be sent under scheme (complains if not). */
bool cli_valid_auth_user(const char *user, enum job_auth_scheme sc);
int cmd_set_proxy(struct ctx *c, int argc, char **argv);
int cmd_set_ca_file(struct ctx *c, int argc, char **argv);
int cmd_set_client_cert(struct ctx *c, int argc, char **argv);
int cmd_get_client_cert(struct ctx *c, int argc, char **argv);
int cmd_set_cert_check_cmd(struct ctx *c, int argc, char **argv);
int cmd_set_peer_caching(struct ctx *c, int argc, char **argv);
int cmd_set_transfer_policy(struct ctx *c, int argc, char **argv);
int cmd_replace_remote_prefix(struct ctx *c, int argc, char **argv);
int cmd_wait(struct ctx *c, int argc, char **argv);
int cmd_daemon(struct ctx *c, int argc, char **argv);

#endif /* BG_CLI_INT_H */
