/*
 * cli_cache.c - `bgcopy cache ...`: the content store's administration.
 *
 *   cache list [--json]          keys with size, digest, last use, last validation
 *   cache show URL | rm URL      one key
 *   cache stats [--json]         entries, bytes, limit, hits and misses, evictions
 *   cache config [--max-size BYTES|N%] [--max-age DAYS]
 *   cache gc                     unreferenced content, expired keys, size limit
 *   cache clear                  every entry and key (jobs and partial files stay)
 *   cache verify [--json]        re-hash every entry, remove what is corrupt
 *   cache compact                rewrite store.mdb without its free pages
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobs.h"
#include "cli.h"
#include "cli_int.h"
#include "record.h"

#define USAGE_CACHE                                                                          \
	"usage: bgcopy cache list [--json] | show URL | rm URL | stats [--json] | gc | clear |\n" \
	"       verify [--json] | compact | config [--max-size BYTES|N%%] [--max-age DAYS]"

#define NS 1000000000 /* nanoseconds a second: uses are dated in ns, shown in seconds */

/* What peerd served counts before anything is reported or decided. */
static void
fold_usage(struct ctx *c)
{
	int err = store_usage_fold(c->st, c->home);

	if (err != 0)
		cli_complain("warning: cannot read %s/usage.log: %s", c->home, bg_strerror(err));
}

static json_t *
time_or_null(int64_t t)
{
	return t > 0 ? json_integer((json_int_t)t) : json_null();
}

static void
format_time(int64_t t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, len, "-");
}

/* ---- list, show, rm ------------------------------------------------------ */

static json_t *
key_json(struct bg_txn *txn, const struct store_key *k)
{
	char hex[BG_SHA256_HEX_LEN + 1];
	struct store_content c;
	json_t *o = json_object();
	int64_t last_used = txn_content_get(txn, k->sha256, &c) == 0 ? c.last_used_ns / NS : 0;

	bg_sha256_hex(k->sha256, hex);
	if (o == NULL || json_object_set_new(o, "url", json_string(k->url)) != 0 ||
	    json_object_set_new(o, "size", json_integer((json_int_t)k->size)) != 0 ||
	    json_object_set_new(o, "sha256", json_string(hex)) != 0 ||
	    json_object_set_new(o, "etag", k->etag ? json_string(k->etag) : json_null()) != 0 ||
	    json_object_set_new(o, "last_modified",
	                        k->last_modified ? json_string(k->last_modified) : json_null()) != 0 ||
	    json_object_set_new(o, "stored", json_integer((json_int_t)k->stored)) != 0 ||
	    json_object_set_new(o, "validated", json_integer((json_int_t)k->validated)) != 0 ||
	    json_object_set_new(o, "last_used", time_or_null(last_used)) != 0 ||
	    json_object_set_new(o, "private", json_boolean(k->flags & STORE_KEY_PRIVATE)) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

struct list_args {
	struct bg_txn *txn;
	bool json;
	uint64_t n;   /* keys printed */
};

static int
key_list_fn(const struct store_key *k, void *arg)
{
	struct list_args *a = arg;
	char hex[BG_SHA256_HEX_LEN + 1], used[32], valid[32];
	struct store_content c;
	json_t *o;

	/* Out as it is read (a read view runs once): a listing of many
	 * entries needs no memory for them.  JSON: one object a line. */
	if (a->json) {
		char *text;

		if ((o = key_json(a->txn, k)) == NULL)
			return BG_ENOMEM;
		text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(o);
		if (text == NULL)
			return BG_ENOMEM;
		printf("%s%s", a->n++ == 0 ? "[\n  " : ",\n  ", text);
		free(text);
		return 0;
	}
	bg_sha256_hex(k->sha256, hex);
	format_time(txn_content_get(a->txn, k->sha256, &c) == 0 ? c.last_used_ns / NS : 0, used,
	            sizeof(used));
	format_time(k->validated, valid, sizeof(valid));
	printf("%s  %12" PRIu64 "  %-20s  %-20s  %s\n", hex, k->size, used, valid, k->url);
	return 0;
}

static int
key_list_txn(struct bg_txn *txn, void *arg)
{
	struct list_args *a = arg;

	a->txn = txn;
	return txn_key_each(txn, key_list_fn, a);
}

static int
cache_list(struct ctx *c, int argc, char **argv)
{
	struct list_args a = { NULL, cli_take_flag(&argc, argv, "--json"), 0 };
	int err;

	if (argc != 2) {
		cli_complain("usage: bgcopy cache list [--json]");
		return EXIT_USAGE;
	}
	fold_usage(c);
	if (!a.json)
		printf("%-64s  %12s  %-20s  %-20s  %s\n", "SHA256", "SIZE", "LAST USED",
		       "LAST VALIDATED", "URL");
	err = store_view(c->st, key_list_txn, &a);
	if (a.json)
		fputs(a.n == 0 ? "[]\n" : "\n]\n", stdout);
	return err != 0 ? cli_store_failed("cache list", err) : EXIT_DONE;
}

struct key_args {
	const char *url;
	json_t *doc;
};

static int
key_get_txn(struct bg_txn *txn, void *arg)
{
	struct key_args *a = arg;
	struct store_key k;
	int err = txn_key_get(txn, a->url, &k);

	if (err != 0)
		return err;
	json_decref(a->doc);
	a->doc = key_json(txn, &k);
	store_key_clear(&k);
	return a->doc != NULL ? 0 : BG_ENOMEM;
}

static int
key_del_txn(struct bg_txn *txn, void *arg)
{
	struct key_args *a = arg;

	return txn_key_del(txn, a->url);
}

static int
cache_show_rm(struct ctx *c, bool show, const char *arg)
{
	struct key_args a = { NULL, NULL };
	char *canon = NULL;
	int err;

	/* Keys are canonical URLs; anything else is looked up as typed. */
	a.url = url_canonical(arg, &canon) == 0 ? canon : arg;
	err = show ? store_view(c->st, key_get_txn, &a) : store_update(c->st, key_del_txn, &a);
	if (err == 0 && show)
		cli_print_json(a.doc);
	json_decref(a.doc);
	free(canon);
	if (err == BG_ENOENT) {
		cli_complain("not in the cache: %s", arg);
		return EXIT_JOB_ERROR;
	}
	return err != 0 ? cli_store_failed("cache", err) : EXIT_DONE;
}

/* ---- config and stats ------------------------------------------------------ */

/* BYTES with an optional K, M, G or T (powers of 1024), or N% with N in
 * 1..100. */
static bool
parse_max_size(const char *s, struct store_config *cfg)
{
	uint64_t v;
	const char *end = s + strspn(s, "0123456789");

	if (strcmp(end, "%") == 0) {
		if (bg_parse_u64(s, (size_t)(end - s), 100, &v) != 0 || v < 1)
			return false;
		cfg->max_size_percent = (unsigned)v;
		cfg->max_size_bytes = 0;
		return true;
	}
	if (bg_parse_bytes(s, (uint64_t)INT64_MAX, &v) != 0 || v == 0)
		return false;
	cfg->max_size_bytes = v;
	cfg->max_size_percent = 0;
	return true;
}

struct config_args {
	struct store_config cfg;
	const char *max_size;  /* to set, or NULL */
	long max_age;          /* to set, or -1 */
	bool bad_size;
};

static int
config_txn(struct bg_txn *txn, void *arg)
{
	struct config_args *a = arg;
	int err = txn_config_get(txn, &a->cfg);

	/* A damaged configuration is replaced by what is set now. */
	if (err == BG_ECORRUPT && a->max_size != NULL && a->max_age >= 0)
		err = 0;
	if (err != 0)
		return err;
	if (a->max_size != NULL && !parse_max_size(a->max_size, &a->cfg)) {
		a->bad_size = true;
		return BG_EINVAL;
	}
	if (a->max_age >= 0)
		a->cfg.max_age_days = (uint32_t)a->max_age;
	return txn_config_put(txn, &a->cfg);
}

static int
config_get_txn(struct bg_txn *txn, void *arg)
{
	return txn_config_get(txn, arg);
}

static void
print_size_setting(const struct store_config *cfg, uint64_t limit)
{
	if (cfg->max_size_percent != 0)
		printf("max-size %u%% of the filesystem (%" PRIu64 " bytes now)\n",
		       cfg->max_size_percent, limit);
	else
		printf("max-size %" PRIu64 " bytes\n", limit);
}

static int
cache_config(struct ctx *c, int argc, char **argv)
{
	struct config_args a;
	uint64_t limit;
	int err;

	memset(&a, 0, sizeof(a));
	a.max_age = -1;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--max-size") == 0 && i + 1 < argc) {
			a.max_size = argv[++i];
		} else if (strcmp(argv[i], "--max-age") == 0 && i + 1 < argc) {
			int64_t days;

			i++;
			if (bg_parse_i64(argv[i], strlen(argv[i]), 1, STORE_MAX_AGE_DAYS_MAX, &days) != 0) {
				cli_complain("--max-age takes a number of days from 1 to %d, not '%s'",
				             STORE_MAX_AGE_DAYS_MAX, argv[i]);
				return EXIT_USAGE;
			}
			a.max_age = (long)days;
		} else {
			cli_complain("usage: bgcopy cache config [--max-size BYTES|N%%] "
			             "[--max-age DAYS]");
			return EXIT_USAGE;
		}
	}
	if (a.max_size != NULL && !parse_max_size(a.max_size, &a.cfg)) {
		cli_complain("--max-size takes BYTES (K, M, G, T suffixes allowed) or N%% (1 to "
		             "100), not '%s'", a.max_size);
		return EXIT_USAGE;
	}
	if (a.max_size != NULL || a.max_age >= 0) {
		if ((err = store_update(c->st, config_txn, &a)) != 0)
			return cli_store_failed("cache config", err);
		/* The new limit applies at once, not at the next transfer. */
		if ((err = cli_enforce_limits(c, NULL)) != 0)
			return cli_store_failed("cache config", err);
	} else if ((err = store_view(c->st, config_get_txn, &a.cfg)) != 0) {
		return cli_store_failed("cache config", err);
	}
	if ((err = store_limit_bytes(c->st, &a.cfg, &limit)) != 0)
		return cli_store_failed("cache config", err);
	print_size_setting(&a.cfg, limit);
	printf("max-age %" PRIu32 " days\n", a.cfg.max_age_days);
	return EXIT_DONE;
}

struct stats_args {
	struct store_stats s;
	struct store_config cfg;
};

static int
stats_txn(struct bg_txn *txn, void *arg)
{
	struct stats_args *a = arg;
	int err = txn_stats_get(txn, &a->s);

	return err != 0 ? err : txn_config_get(txn, &a->cfg);
}

static int
cache_stats(struct ctx *c, int argc, char **argv)
{
	bool json = cli_take_flag(&argc, argv, "--json");
	struct stats_args a;
	uint64_t limit;
	int err;

	if (argc != 2) {
		cli_complain("usage: bgcopy cache stats [--json]");
		return EXIT_USAGE;
	}
	fold_usage(c);
	if ((err = store_view(c->st, stats_txn, &a)) != 0 ||
	    (err = store_limit_bytes(c->st, &a.cfg, &limit)) != 0)
		return cli_store_failed("cache stats", err);
	if (json) {
		json_t *d = json_pack(
		    "{sI sI sI sI s{sI sI} sI s{sI sI} s{sI sI} s{sI sI sI} sI sI sI sI sI}", "entries",
		    (json_int_t)a.s.entries, "keys", (json_int_t)a.s.keys, "bytes",
		    (json_int_t)a.s.bytes, "limit", (json_int_t)limit, "max_size", "bytes",
		    (json_int_t)a.cfg.max_size_bytes, "percent", (json_int_t)a.cfg.max_size_percent,
		    "max_age_days", (json_int_t)a.cfg.max_age_days, "hits", "local",
		    (json_int_t)a.s.local_hits, "peer", (json_int_t)a.s.peer_hits, "misses", "local",
		    (json_int_t)a.s.local_misses, "peer", (json_int_t)a.s.peer_misses, "store", "hits",
		    (json_int_t)a.s.store_hits, "revalidated", (json_int_t)a.s.store_revalidated,
		    "misses", (json_int_t)a.s.store_misses, "evictions",
		    (json_int_t)a.s.evicted, "evicted_bytes", (json_int_t)a.s.evicted_bytes,
		    "expired", (json_int_t)a.s.expired, "not_kept", (json_int_t)a.s.not_kept,
		    "store_file_bytes", (json_int_t)store_file_bytes(c->st));

		if (d == NULL)
			return cli_store_failed("cache stats", BG_ENOMEM);
		cli_print_json(d);
		json_decref(d);
		return EXIT_DONE;
	}
	printf("entries   %" PRIu64 " (%" PRIu64 " bytes) under %" PRIu64 " keys\n", a.s.entries,
	       a.s.bytes, a.s.keys);
	printf("limit     %" PRIu64 " bytes", limit);
	if (a.cfg.max_size_percent != 0)
		printf(" (%u%% of the filesystem)", a.cfg.max_size_percent);
	printf(", max age %" PRIu32 " days\n", a.cfg.max_age_days);
	printf("local     %" PRIu64 " hits, %" PRIu64 " misses (peers asking this node)\n",
	       a.s.local_hits, a.s.local_misses);
	printf("peer      %" PRIu64 " hits, %" PRIu64 " misses (this node asking peers)\n",
	       a.s.peer_hits, a.s.peer_misses);
	printf("own       %" PRIu64 " hits, %" PRIu64 " revalidated, %" PRIu64
	       " misses (this node's downloads looking here first)\n",
	       a.s.store_hits, a.s.store_revalidated, a.s.store_misses);
	printf("evicted   %" PRIu64 " entries (%" PRIu64 " bytes); %" PRIu64
	       " keys expired; %" PRIu64 " files too large to keep\n",
	       a.s.evicted, a.s.evicted_bytes, a.s.expired, a.s.not_kept);
	printf("store     %" PRIu64 " bytes on disk (store.mdb)\n", store_file_bytes(c->st));
	return EXIT_DONE;
}

/* ---- gc, clear ------------------------------------------------------------- */

struct enforce_args {
	uint64_t limit;
	struct store_config cfg;
	struct store_enforce_result res;
};

static int
enforce_txn(struct bg_txn *txn, void *arg)
{
	struct enforce_args *a = arg;

	return txn_enforce_limits(txn, a->limit, bg_now(), a->cfg.max_age_days, job_record_unfinished,
	                          &a->res);
}

int
cli_enforce_limits(struct ctx *c, struct store_enforce_result *res)
{
	struct enforce_args a;
	int err;

	memset(&a, 0, sizeof(a));
	fold_usage(c);
	if ((err = store_view(c->st, config_get_txn, &a.cfg)) != 0 ||
	    (err = store_limit_bytes(c->st, &a.cfg, &a.limit)) != 0 ||
	    (err = store_update(c->st, enforce_txn, &a)) != 0)
		return err;
	if (res != NULL)
		*res = a.res;
	return 0;
}

static int
cache_gc(struct ctx *c)
{
	struct store_enforce_result res;
	uint64_t entries = 0, bytes = 0;
	int err;

	if ((err = cli_enforce_limits(c, &res)) != 0 ||
	    (err = store_gc(c->st, file_rec_blob, &entries, &bytes)) != 0)
		return cli_store_failed("cache gc", err);
	printf("freed %" PRIu64 " entries, %" PRIu64 " bytes\n", entries, bytes);
	if (res.evicted > 0 || res.expired > 0)
		printf("evicted %" PRIu64 " entries (%" PRIu64 " bytes); expired %" PRIu64
		       " keys (%" PRIu64 " entries, %" PRIu64 " bytes)\n", res.evicted,
		       res.evicted_bytes, res.expired, res.expired_entries, res.expired_bytes);
	if (res.over_limit > 0)
		printf("still %" PRIu64 " bytes over the limit: content of jobs not completed\n",
		       res.over_limit);
	return EXIT_DONE;
}

struct clear_args {
	struct bg_txn *txn;
	uint64_t entries, bytes, keys;
};

/* The walk places its cursor again after each visit: dropping what was
 * just visited is allowed. */
static int
clear_visit(const unsigned char sha[BG_SHA256_LEN], const struct store_content *ct, void *arg)
{
	struct clear_args *a = arg;

	a->entries++;
	a->bytes += ct->size;
	return txn_content_drop(a->txn, sha, &a->keys);
}

static int
clear_txn(struct bg_txn *txn, void *arg)
{
	struct clear_args *a = arg;

	memset(a, 0, sizeof(*a));
	a->txn = txn;
	return txn_content_each(txn, clear_visit, a);
}

static int
cache_clear(struct ctx *c)
{
	struct clear_args a;
	uint64_t entries = 0, bytes = 0;
	int err;

	if ((err = store_update(c->st, clear_txn, &a)) != 0)
		return cli_store_failed("cache clear", err);
	/* Keys whose content was already gone, and blobs nothing names. */
	if ((err = store_gc(c->st, file_rec_blob, &entries, &bytes)) != 0)
		return cli_store_failed("cache clear", err);
	printf("removed %" PRIu64 " entries (%" PRIu64 " bytes) and %" PRIu64 " keys\n", a.entries,
	       a.bytes, a.keys);
	return EXIT_DONE;
}

/* ---- verify, compact ----------------------------------------------------- */

struct verify_out {
	bool json;
	json_t *bad; /* array, with --json */
};

static const char *
verify_problem(const struct store_verify_bad *b)
{
	switch (b->problem) {
	case BG_EDIGEST:
		return "digest mismatch";
	case BG_ENOENT:
		return "key names absent content";
	default:
		return b->is_key ? "damaged key record" : "damaged or missing chunk";
	}
}

static int
verify_report_fn(const struct store_verify_bad *b, void *arg)
{
	struct verify_out *o = arg;
	char hex[BG_SHA256_HEX_LEN + 1];
	json_t *e, *urls;

	bg_sha256_hex(b->sha256, hex);
	if (!o->json) {
		printf("%s %s  %" PRIu64 " bytes  %s: removed\n", b->is_key ? "key    " : "content",
		       hex, b->size, verify_problem(b));
		for (size_t i = 0; i < b->nurls; i++)
			printf("  key %s\n", b->urls[i]);
		return 0;
	}
	if ((e = json_object()) == NULL || (urls = json_array()) == NULL ||
	    json_object_set_new(e, "urls", urls) != 0) {
		json_decref(e);
		return BG_ENOMEM;
	}
	for (size_t i = 0; i < b->nurls; i++)
		if (json_array_append_new(urls, json_string(b->urls[i])) != 0)
			goto nomem;
	if (json_object_set_new(e, "kind", json_string(b->is_key ? "key" : "content")) != 0 ||
	    json_object_set_new(e, "sha256", json_string(hex)) != 0 ||
	    json_object_set_new(e, "size", json_integer((json_int_t)b->size)) != 0 ||
	    json_object_set_new(e, "problem", json_string(verify_problem(b))) != 0 ||
	    json_array_append_new(o->bad, e) != 0)
		goto nomem;
	return 0;
nomem:
	json_decref(e);
	return BG_ENOMEM;
}

/* Exit 0 when everything was sound, 1 when something was found (and
 * removed), 3 when the store could not be read. */
static int
cache_verify(struct ctx *c, bool json)
{
	struct verify_out o = { json, NULL };
	struct store_verify_stats vs;
	json_t *doc = NULL;
	int err;

	if (json && (o.bad = json_array()) == NULL)
		return cli_store_failed("cache verify", BG_ENOMEM);
	err = store_verify(c->st, verify_report_fn, &o, &vs);
	if (err != 0) {
		json_decref(o.bad);
		return cli_store_failed("cache verify", err);
	}
	if (json) {
		doc = json_pack("{sI sI sI sI sI so}", "entries", (json_int_t)vs.entries,
		                "bytes", (json_int_t)vs.bytes, "corrupt", (json_int_t)vs.corrupt,
		                "keys", (json_int_t)vs.keys, "keys_removed",
		                (json_int_t)vs.keys_removed, "removed", o.bad);
		if (doc == NULL)
			return cli_store_failed("cache verify", BG_ENOMEM);
		cli_print_json(doc);
		json_decref(doc);
	} else {
		printf("verified %" PRIu64 " entries (%" PRIu64 " bytes) and %" PRIu64
		       " keys: %" PRIu64 " corrupt entries and %" PRIu64 " keys removed\n",
		       vs.entries, vs.bytes, vs.keys, vs.corrupt, vs.keys_removed);
	}
	return vs.corrupt != 0 || vs.keys_removed != 0 ? EXIT_JOB_ERROR : EXIT_DONE;
}

static int
cache_compact(struct ctx *c)
{
	uint64_t before = 0, after = 0;
	int holder = 0;
	int err = store_compact(c->st, &before, &after, &holder);

	if (err == BG_EBUSY) {
		char comm[64] = "";
		char path[64];
		FILE *f;

		if (holder > 0) {
			snprintf(path, sizeof(path), "/proc/%d/comm", holder);
			if ((f = fopen(path, "r")) != NULL) {
				if (fgets(comm, sizeof(comm), f) == NULL)
					comm[0] = '\0';
				comm[strcspn(comm, "\n")] = '\0';
				fclose(f);
			}
			cli_complain("cannot compact: the store is open in process %d%s%s%s; stop it "
			             "and run cache compact again", holder, comm[0] ? " (" : "", comm,
			             comm[0] ? ")" : "");
		} else {
			cli_complain("cannot compact: another process has the store open; stop it and "
			             "run cache compact again");
		}
		return EXIT_SYSTEM;
	}
	if (err != 0)
		return cli_store_failed("cache compact", err);
	/* The handle maps the old file: only closing is left. */
	store_close(c->st);
	c->st = NULL;
	printf("compacted store.mdb from %" PRIu64 " to %" PRIu64 " bytes\n", before, after);
	return EXIT_DONE;
}

int
cmd_cache(struct ctx *c, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";
	int rc;

	if ((rc = cli_open_store(c)) != EXIT_DONE)
		return rc;
	if (strcmp(sub, "list") == 0)
		return cache_list(c, argc, argv);
	if ((strcmp(sub, "show") == 0 || strcmp(sub, "rm") == 0) && argc == 3)
		return cache_show_rm(c, sub[0] == 's', argv[2]);
	if (strcmp(sub, "stats") == 0)
		return cache_stats(c, argc, argv);
	if (strcmp(sub, "config") == 0)
		return cache_config(c, argc, argv);
	if (strcmp(sub, "gc") == 0 && argc == 2)
		return cache_gc(c);
	if (strcmp(sub, "clear") == 0 && argc == 2)
		return cache_clear(c);
	if (strcmp(sub, "compact") == 0 && argc == 2)
		return cache_compact(c);
	if (strcmp(sub, "verify") == 0) {
		bool json = cli_take_flag(&argc, argv, "--json");

		if (argc == 2)
			return cache_verify(c, json);
	}
	cli_complain(USAGE_CACHE);
	return EXIT_USAGE;
}
