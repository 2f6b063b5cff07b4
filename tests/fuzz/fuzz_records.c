/*
 * fuzz_records.c - stored records (cache/records.c decoders, the agent's job
 * and file records of agent/job.c, the CLI that prints them): a damaged
 * store must give an error, never a crash.
 *
 * A real store lives in a temporary home made once per process.  For each
 * input the records are written with raw LMDB into the closed store (as
 * damage would write them: nothing checks them on the way in), then the
 * store is opened with store_open() and read through the cache and agent
 * APIs, and optionally through the bgcopy commands that print it.
 *
 * Input: one byte choosing the commands run through cli_run() (bit 0 info,
 * 1 info --json, 2 list --all, 3 list --all --json, 4 cache list, 5 cache
 * list --json, 6 cache show, 7 get-security-flags), then parts separated by
 * FUZZ_SEP, each a tag and its payload:
 *   'J' JSON   the record of job A       'j' JSON   the record of job B
 *   'F' JSON   the next file record of A 'f' JSON   the next of B
 *   'K' URL "\n" JSON   a key record filed under SHA-256(URL)
 *   'C' SHA(32) VALUE   a content record  'B' KEY(16) VALUE   a blob chunk
 *   'M' NAME "\n" VALUE a meta record     'X' DB KLEN KEY VALUE   any record
 * Properties: every read gives 0 or an error code of the table (no crash,
 * leak or undefined behaviour); what reads back as a key or a document is
 * well-formed.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <lmdb.h>

#include "jobs.h"
#include "cli.h"
#include "fuzz.h"

#define JOB_A "00000000-0000-4000-8000-00000000000a"
#define JOB_B "00000000-0000-4000-8000-00000000000b"
#define MAX_PARTS 24
#define MAX_URLS 4
#define MAX_SHAS 4

static const char *const dbs[] = {"meta", "jobs", "files", "blobs", "content", "keys"};
enum { META, JOBS, FILES, BLOBS, CONTENT, KEYS, NDBS };

static char home[64];
static char store_path[96];

static void
remove_home(void)
{
	fuzz_rm_tree(home);
}

static void
setup(void)
{
	struct bg_store *st = NULL;

	snprintf(home, sizeof(home), "/tmp/bgcopy-fuzz-store.XXXXXX");
	FUZZ_ASSERT(mkdtemp(home) != NULL);
	atexit(remove_home);
	/* cli_run reads bgcopy.conf: none of this machine's. */
	setenv("BGCOPY_CONFIG", "", 1);
	snprintf(store_path, sizeof(store_path), "%s/store.mdb", home);
	/* The store as the agent makes it: databases and version record. */
	FUZZ_ASSERT(store_open(home, 0, NULL, &st) == 0);
	store_close(st);
}

struct input {
	struct fuzz_part parts[MAX_PARTS];
	size_t nparts;
	char *urls[MAX_URLS];
	size_t nurls;
};

static void
put(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t klen, const void *v, size_t vlen)
{
	MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};

	/* Keys LMDB refuses (empty, too long) are simply not written. */
	(void)mdb_put(txn, dbi, &key, &val, 0);
}

static void
put_file(MDB_txn *txn, MDB_dbi dbi, const char *id, uint32_t index, const struct fuzz_part *p)
{
	unsigned char key[STORE_JOB_ID_LEN + 4];

	memcpy(key, id, STORE_JOB_ID_LEN);
	for (int i = 0; i < 4; i++)
		key[STORE_JOB_ID_LEN + i] = (unsigned char)(index >> (24 - 8 * i));
	put(txn, dbi, key, sizeof(key), p->p + 1, p->n - 1);
}

/* Empties the store back to a fresh one and, when in is given, writes its
 * records.  Returns the LMDB code. */
static int
write_records(struct input *in)
{
	static const unsigned char version[8] = {1};
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	MDB_dbi dbi[NDBS];
	uint32_t nfiles_a = 0, nfiles_b = 0;
	int rc;

	if ((rc = mdb_env_create(&env)) != 0)
		return rc;
	if ((rc = mdb_env_set_maxdbs(env, 16)) != 0 ||
	    (rc = mdb_env_set_mapsize(env, (size_t)256 << 20)) != 0 ||
	    (rc = mdb_env_open(env, store_path, MDB_NOSUBDIR, 0600)) != 0 ||
	    (rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
		goto out;
	for (int i = 0; i < NDBS; i++) {
		if ((rc = mdb_dbi_open(txn, dbs[i], MDB_CREATE, &dbi[i])) != 0 ||
		    (rc = mdb_drop(txn, dbi[i], 0)) != 0)
			goto out;
	}
	put(txn, dbi[META], "version", 7, version, sizeof(version));
	for (size_t i = 0; in != NULL && i < in->nparts; i++) {
		const struct fuzz_part *p = &in->parts[i];
		const uint8_t *v = p->p + 1, *nl;
		size_t n = p->n - 1;

		if (p->n == 0)
			continue;
		switch (p->p[0]) {
		case 'J':
			put(txn, dbi[JOBS], JOB_A, STORE_JOB_ID_LEN, v, n);
			break;
		case 'j':
			put(txn, dbi[JOBS], JOB_B, STORE_JOB_ID_LEN, v, n);
			break;
		case 'F':
			put_file(txn, dbi[FILES], JOB_A, nfiles_a++, p);
			break;
		case 'f':
			put_file(txn, dbi[FILES], JOB_B, nfiles_b++, p);
			break;
		case 'K':
			if ((nl = memchr(v, '\n', n)) != NULL) {
				unsigned char sha[BG_SHA256_LEN];

				bg_sha256(v, (size_t)(nl - v), sha);
				put(txn, dbi[KEYS], sha, sizeof(sha), nl + 1, n - (size_t)(nl - v) - 1);
				if (in->nurls < MAX_URLS)
					in->urls[in->nurls++] = fuzz_str(v, (size_t)(nl - v));
			}
			break;
		case 'C':
			if (n >= BG_SHA256_LEN)
				put(txn, dbi[CONTENT], v, BG_SHA256_LEN, v + BG_SHA256_LEN,
				    n - BG_SHA256_LEN);
			break;
		case 'B':
			if (n >= 16)
				put(txn, dbi[BLOBS], v, 16, v + 16, n - 16);
			break;
		case 'M':
			if ((nl = memchr(v, '\n', n)) != NULL)
				put(txn, dbi[META], v, (size_t)(nl - v), nl + 1, n - (size_t)(nl - v) - 1);
			break;
		case 'X':
			if (n >= 2 && (size_t)v[1] + 2 <= n)
				put(txn, dbi[v[0] % NDBS], v + 2, v[1], v + 2 + v[1], n - 2 - v[1]);
			break;
		default:
			break;
		}
	}
	rc = mdb_txn_commit(txn);
	txn = NULL;
out:
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return rc;
}

/* ---- Reads through the cache API ---------------------------------------- */

/* Every call answers 0 or a code of the error table. */
static void
rc_ok(int rc)
{
	FUZZ_ASSERT(rc <= 0 && strcmp(bg_err_name(rc), "BG_UNKNOWN") != 0);
}

struct seen {
	unsigned char shas[MAX_SHAS][BG_SHA256_LEN];
	size_t nshas;
	unsigned keys, jobs;
};

static int
key_fn(const struct store_key *k, void *arg)
{
	struct seen *s = arg;

	FUZZ_ASSERT(k->url != NULL && k->url[0] != '\0' && strlen(k->url) <= STORE_URL_MAX);
	FUZZ_ASSERT(k->etag == NULL || strlen(k->etag) <= STORE_VALIDATOR_MAX);
	s->keys++;
	return 0;
}

static int
content_fn(const unsigned char sha[BG_SHA256_LEN], const struct store_content *c, void *arg)
{
	struct seen *s = arg;

	FUZZ_ASSERT(c->blob != 0);
	if (s->nshas < MAX_SHAS)
		memcpy(s->shas[s->nshas++], sha, BG_SHA256_LEN);
	return 0;
}

static int
job_fn(const char *id, json_t *rec, void *arg)
{
	FUZZ_ASSERT(strlen(id) == STORE_JOB_ID_LEN && json_is_object(rec));
	((struct seen *)arg)->jobs++;
	return 0;
}

static int
view_fn(struct bg_txn *txn, void *arg)
{
	struct seen *s = arg;
	uint32_t n;

	s->nshas = s->keys = s->jobs = 0;
	rc_ok(txn_key_each(txn, key_fn, s));
	rc_ok(txn_content_each(txn, content_fn, s));
	rc_ok(txn_job_each(txn, job_fn, s));
	if (txn_file_count(txn, JOB_A, &n) == 0) {
		for (uint32_t i = 0; i < n && i < 8; i++) {
			json_t *f = NULL;

			if (txn_file_get(txn, JOB_A, i, &f) == 0)
				FUZZ_ASSERT(json_is_object(f));
			json_decref(f);
		}
	}
	return 0;
}

static int
key_get_fn(struct bg_txn *txn, void *arg)
{
	struct store_key k;
	int rc = txn_key_get(txn, arg, &k);

	if (rc == 0)
		FUZZ_ASSERT(strcmp(k.url, arg) == 0);
	store_key_clear(&k);
	return rc;
}

static int
doc_fn(json_t *doc, void *arg)
{
	char *s = json_dumps(doc, JSON_COMPACT);

	(void)arg;
	FUZZ_ASSERT(json_is_object(doc));
	free(s);
	return 0;
}

/* store_gc() asks the caller which blob a file record names: the agent's
 * schema, as bgcopy's `cache gc` reads it. */
static int
file_blob_of(const void *rec, size_t len, uint64_t *blob)
{
	json_error_t jerr;
	json_t *f = json_loadb(rec, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	const json_t *b = json_object_get(f, "blob");

	*blob = json_is_integer(b) && json_integer_value(b) > 0 ? (uint64_t)json_integer_value(b) : 0;
	if (json_is_object(f)) {
		json_decref(f);
		return 0;
	}
	json_decref(f);
	return f == NULL && json_error_code(&jerr) == json_error_out_of_memory ? BG_ENOMEM
	                                                                     : BG_ECORRUPT;
}

static void
read_api(struct input *in)
{
	struct store_options opts = {.initial_map_bytes = (uint64_t)64 << 20};
	char id[STORE_JOB_ID_LEN + 1];
	struct bg_store *st = NULL;
	struct seen seen;
	json_t *doc = NULL;
	uint32_t flags;
	unsigned changed;
	bool errored;

	if (store_open(home, 0, &opts, &st) != 0)
		return;
	if (job_document(st, NULL, JOB_A, &doc) == 0)
		doc_fn(doc, NULL);
	json_decref(doc);
	doc = NULL;
	rc_ok(job_list(st, NULL, true, doc_fn, NULL));
	rc_ok(job_list(st, NULL, false, doc_fn, NULL));
	rc_ok(job_get_flags(st, JOB_A, &flags));
	rc_ok(job_find_get(st, "fuzz-get", id, &errored));
	if (store_view(st, view_fn, &seen) == 0) {
		for (size_t i = 0; i < seen.nshas; i++) {
			unsigned char buf[512];
			size_t got;

			rc_ok(store_read_content(st, seen.shas[i], 0, buf, sizeof(buf), &got));
			rc_ok(store_read_content(st, seen.shas[i], STORE_CHUNK_BYTES - 8, buf,
			                         sizeof(buf), &got));
		}
	}
	for (size_t i = 0; i < in->nurls; i++)
		if (in->urls[i] != NULL)
			rc_ok(store_view(st, key_get_fn, in->urls[i]));
	/* Changes that read the records first (no file is touched). */
	rc_ok(job_event(st, JOB_A, JOB_EV_RESUME, NULL, NULL));
	rc_ok(job_event(st, JOB_A, JOB_EV_SUSPEND, NULL, NULL));
	rc_ok(job_replace_remote_prefix(st, JOB_A, "http://", "https://", &changed));
	rc_ok(store_gc(st, file_blob_of, NULL, NULL));
	store_close(st);
}

/* ---- Reads through the commands ----------------------------------------- */

static void
run_cli(uint8_t mask, struct input *in)
{
	char url[STORE_URL_MAX + 1] = "http://127.0.0.1/";
	char *cmds[8][5] = {
		{"info", JOB_A, NULL},
		{"info", JOB_A, "--json", NULL},
		{"list", "--all", NULL},
		{"list", "--all", "--json", NULL},
		{"cache", "list", NULL},
		{"cache", "list", "--json", NULL},
		{"cache", "show", url, NULL},
		{"get-security-flags", JOB_A, NULL},
	};
	struct cli_globals g = {home, NULL};
	int saved, devnull;

	if (mask == 0)
		return;
	if (in->nurls > 0 && in->urls[0] != NULL)
		snprintf(url, sizeof(url), "%s", in->urls[0]);
	/* The commands print documents: keep them off the fuzzer's output. */
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (saved < 0 || devnull < 0 || dup2(devnull, STDOUT_FILENO) < 0)
		goto out;
	for (int i = 0; i < 8; i++) {
		int argc = 0;

		if (!(mask & (1u << i)))
			continue;
		while (cmds[i][argc] != NULL)
			argc++;
		(void)cli_run(&g, argc, cmds[i]);
	}
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
out:
	if (saved >= 0)
		close(saved);
	if (devnull >= 0)
		close(devnull);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in;

	if (home[0] == '\0')
		setup();
	if (size < 1)
		return 0;
	memset(&in, 0, sizeof(in));
	in.nparts = fuzz_split(data + 1, size - 1, in.parts, MAX_PARTS);
	if (write_records(&in) != 0)
		FUZZ_ASSERT(write_records(NULL) == 0);
	read_api(&in);
	run_cli(data[0], &in);
	for (size_t i = 0; i < in.nurls; i++)
		free(in.urls[i]);
	return 0;
}
