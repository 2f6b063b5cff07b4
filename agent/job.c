/*
 * job.c - jobs and their files: records in the store, the job document, and
 * the transfer engine that runs a job's files in order.
 *
 * A file's bytes go to a hidden partial file next to its local path and, in
 * the same step, to a blob in the store.  Progress is committed chunk by
 * chunk: the file record's "bytes_committed" says how many bytes of both are
 * good, so a process killed at any moment resumes from there.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "agent.h"
#include "agent_int.h"

static const char *const state_names[] = {
	[JOB_QUEUED] = "QUEUED",           [JOB_CONNECTING] = "CONNECTING",
	[JOB_TRANSFERRING] = "TRANSFERRING", [JOB_SUSPENDED] = "SUSPENDED",
	[JOB_ERROR] = "ERROR",             [JOB_TRANSIENT_ERROR] = "TRANSIENT_ERROR",
	[JOB_TRANSFERRED] = "TRANSFERRED", [JOB_ACKNOWLEDGED] = "ACKNOWLEDGED",
	[JOB_CANCELLED] = "CANCELLED",
};

static const char *const prio_names[] = {
	[JOB_PRIO_FOREGROUND] = "foreground",
	[JOB_PRIO_HIGH] = "high",
	[JOB_PRIO_NORMAL] = "normal",
	[JOB_PRIO_LOW] = "low",
};

/* The index of s in names (n entries), or -1. */
static int
name_index(const char *const *names, size_t n, const char *s, bool any_case)
{
	for (size_t i = 0; s != NULL && i < n; i++)
		if ((any_case ? strcasecmp(s, names[i]) : strcmp(s, names[i])) == 0)
			return (int)i;
	return -1;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *
job_state_name(enum job_state s)
{
	return (unsigned)s < COUNT(state_names) ? state_names[s] : "UNKNOWN";
}

int
job_state_parse(const char *s, enum job_state *out)
{
	int i = name_index(state_names, COUNT(state_names), s, false);

	if (i < 0)
		return BG_EINVAL;
	*out = (enum job_state)i;
	return 0;
}

bool
job_state_final(enum job_state s)
{
	return s == JOB_ACKNOWLEDGED || s == JOB_CANCELLED;
}

const char *
job_priority_name(enum job_priority p)
{
	return (unsigned)p < COUNT(prio_names) ? prio_names[p] : "normal";
}

int
job_priority_parse(const char *s, enum job_priority *out)
{
	int i = name_index(prio_names, COUNT(prio_names), s, true);

	if (i < 0)
		return BG_EINVAL;
	*out = (enum job_priority)i;
	return 0;
}

int
job_new_id(char id[STORE_JOB_ID_LEN + 1])
{
	unsigned char r[16];

	if (RAND_bytes(r, sizeof(r)) != 1)
		return BG_EIO;
	/* A version 4 GUID, as BITS job ids are GUIDs. */
	r[6] = (unsigned char)((r[6] & 0x0F) | 0x40);
	r[8] = (unsigned char)((r[8] & 0x3F) | 0x80);
	snprintf(id, STORE_JOB_ID_LEN + 1,
	         "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
	         r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
	         r[15]);
	return 0;
}

/* ---- JSON field helpers ------------------------------------------------ */

const char *
jstr(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

int64_t
jint(const json_t *o, const char *key, int64_t def)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

bool
jbool(const json_t *o, const char *key)
{
	return json_is_true(json_object_get(o, key));
}

int
jset(json_t *o, const char *key, json_t *v)
{
	/* json_object_set_new steals v even on failure. */
	if (v == NULL || json_object_set_new(o, key, v) != 0)
		return BG_ENOMEM;
	return 0;
}

int
jset_str(json_t *o, const char *key, const char *s)
{
	return jset(o, key, s != NULL ? json_string(s) : json_null());
}

int
jset_int(json_t *o, const char *key, int64_t v)
{
	return jset(o, key, json_integer((json_int_t)v));
}

static enum job_state
rec_state(const json_t *job)
{
	enum job_state s = JOB_ERROR;

	if (job_state_parse(jstr(job, "state"), &s) != 0)
		return JOB_ERROR;
	return s;
}

/* ---- Transactions ------------------------------------------------------ */

struct get_args {
	const char *id;
	uint32_t index;
	json_t *job;
	json_t *file;
	uint32_t count;
};

static int
get_job_fn(struct bg_txn *txn, void *arg)
{
	struct get_args *a = arg;
	int err;

	if ((err = txn_job_get(txn, a->id, &a->job)) != 0)
		return err;
	if (!json_is_string(json_object_get(a->job, "state"))) {
		json_decref(a->job);
		a->job = NULL;
		return BG_ECORRUPT;
	}
	return 0;
}

int
job_load(struct bg_store *st, const char *id, json_t **out)
{
	struct get_args a = {.id = id};
	int err;

	if (strlen(id) != STORE_JOB_ID_LEN)
		return BG_ENOENT;
	if ((err = store_view(st, get_job_fn, &a)) != 0)
		return err;
	*out = a.job;
	return 0;
}

static int
get_file_fn(struct bg_txn *txn, void *arg)
{
	struct get_args *a = arg;

	return txn_file_get(txn, a->id, a->index, &a->file);
}

int
job_load_file(struct bg_store *st, const char *id, uint32_t index, json_t **out)
{
	struct get_args a = {.id = id, .index = index};
	int err;

	if ((err = store_view(st, get_file_fn, &a)) != 0)
		return err;
	*out = a.file;
	return 0;
}

void
job_memo_clear(struct job_memo *m)
{
	free(m->raw);
	memset(m, 0, sizeof(*m));
	m->stamped = -1;
}

/* Whether the stored job record is the memo's bytes, of generation. */
static bool
memo_matches(struct bg_txn *txn, const char *id, const struct job_memo *m, int64_t generation)
{
	const void *v;
	size_t n;

	return m != NULL && m->raw != NULL && generation >= 0 && m->generation == generation &&
	       txn_job_raw(txn, id, &v, &n) == 0 && n == m->len && memcmp(v, m->raw, n) == 0;
}

/* Remembers the stored job record's bytes as carrying generation (and the
 * stamp).  Also inside a transaction that is later aborted: the bytes do
 * carry that generation, whether or not they stay.  Failing to remember
 * only costs a decode later. */
static void
memo_take(struct bg_txn *txn, const char *id, struct job_memo *m, int64_t generation,
          int64_t stamped)
{
	const void *v;
	size_t n;
	unsigned char *p;

	if (m == NULL || generation < 0)
		return;
	if (txn_job_raw(txn, id, &v, &n) != 0 || (p = realloc(m->raw, n > 0 ? n : 1)) == NULL) {
		job_memo_clear(m);
		return;
	}
	memcpy(p, v, n);
	m->raw = p;
	m->len = n;
	m->generation = generation;
	m->stamped = stamped;
}

int
txn_job_check_generation(struct bg_txn *txn, const char *id, int64_t generation,
                         struct job_memo *memo)
{
	json_t *job = NULL;
	int err;

	if (memo_matches(txn, id, memo, generation))
		return 0;
	if ((err = txn_job_get(txn, id, &job)) != 0)
		return err;
	err = jint(job, "generation", 0) != generation ? BG_EAGAIN : 0;
	json_decref(job);
	if (err == 0)
		memo_take(txn, id, memo, generation, -1);
	return err;
}

/* The error object of a job record (see struct job_outcome). */
static json_t *
error_object(const struct job_outcome *o, uint32_t index, const char *url)
{
	json_t *e = json_object();
	char code[16], sym[48];

	if (e == NULL)
		return NULL;
	snprintf(code, sizeof(code), "0x%08X", (unsigned)o->hr);
	if (jset_str(e, "code", code) != 0 ||
	    jset_str(e, "symbol", hr_symbol(o->hr, sym, sizeof(sym))) != 0 ||
	    jset_str(e, "context", o->local ? "local_file" : "remote_file") != 0 ||
	    jset_int(e, "file_index", index) != 0 || jset_str(e, "url", url) != 0 ||
	    jset_str(e, "message", o->message[0] ? o->message : hr_message(o->hr)) != 0) {
		json_decref(e);
		return NULL;
	}
	return e;
}

/* What happens to a job record: the one place its state changes.  ev goes
 * through job_transition() from the stored state (BG_EINVAL when refused)
 * and brings its side effects.  With failed, the event is the one
 * job_failure_event() gives, and the outcome becomes the job's error. */
static int
apply_event(json_t *job, enum job_event ev, const struct job_outcome *failed, uint32_t index,
            const char *url, int64_t now, enum job_state *from, enum job_state *to)
{
	int64_t since = jint(job, "transient_since", 0);
	int err;

	if (failed != NULL)
		ev = job_failure_event(hr_transient(failed->hr), now, since,
		                       jint(job, "no_progress_timeout", JOB_NO_PROGRESS_TIMEOUT));
	*from = rec_state(job);
	if ((err = job_transition(*from, ev, to)) != 0)
		return err;
	if ((err = jset_str(job, "state", job_state_name(*to))) != 0)
		return err;
	switch (ev) {
	case JOB_EV_START:
	case JOB_EV_RUN:
		return jset(job, "error", json_null());
	case JOB_EV_RESUME:
		/* A resumed job starts its no-progress clock again and is tried
		 * at once, whatever its retry time was. */
		if (*from == *to)
			return 0;
		if ((err = jset(job, "error", json_null())) != 0 ||
		    (err = jset_int(job, "last_progress", now)) != 0 ||
		    (err = jset_int(job, "transient_since", 0)) != 0)
			return err;
		return jset_int(job, "retry_at", 0);
	case JOB_EV_TRANSIENT:
		if ((err = jset_int(job, "transient_since", since != 0 ? since : now)) != 0 ||
		    (err = jset_int(job, "retry_at",
		                    now + jint(job, "min_retry_delay", JOB_MIN_RETRY_DELAY))) != 0)
			return err;
		break;
	default:
		break;
	}
	if (failed != NULL)
		return jset(job, "error", error_object(failed, index, url));
	return 0;
}

/* Applies the job-level parts of a commit to the stored record. */
static int
patch_job(struct bg_txn *txn, struct job_commit *c)
{
	json_t *job = NULL;
	int64_t now = (int64_t)time(NULL);
	bool known = memo_matches(txn, c->id, c->memo, c->generation);
	enum job_state from, to;
	int err;

	/* Progress alone, stamped this same second already: writing the
	 * record again would not change a byte of it. */
	if (known && c->memo->stamped == now && c->progress && !c->has_event && c->failed == NULL)
		return 0;
	if ((err = txn_job_get(txn, c->id, &job)) != 0)
		return err;
	/* Someone changed the job since its runner loaded it: the runner
	 * must reload rather than write over the change. */
	if (!known && c->generation >= 0 && jint(job, "generation", 0) != c->generation) {
		err = BG_EAGAIN;
		goto out;
	}
	if ((c->has_event || c->failed != NULL) &&
	    (err = apply_event(job, c->event, c->failed, c->index, c->failed_url, now, &from,
	                       &to)) != 0)
		goto out;
	if ((c->progress && ((err = jset_int(job, "last_progress", now)) != 0 ||
	                     (err = jset_int(job, "transient_since", 0)) != 0)) ||
	    (err = jset_int(job, "modified", now)) != 0)
		goto out;
	if ((err = txn_job_put(txn, c->id, job)) == 0)
		memo_take(txn, c->id, c->memo, c->generation,
		          c->progress && c->failed == NULL ? now : -1);
out:
	json_decref(job);
	return err;
}

static int
commit_fn(struct bg_txn *txn, void *arg)
{
	struct job_commit *c = arg;
	uint64_t blob = c->blob_in;
	int err;

	if (c->generation >= 0 || c->has_event || c->failed != NULL || c->progress) {
		if ((err = patch_job(txn, c)) != 0)
			return err;
	}
	if (c->drop_blob && blob != 0) {
		if ((err = txn_blob_truncate(txn, blob, 0)) != 0)
			return err;
	}
	if (c->data != NULL) {
		/* A new blob id is taken inside the transaction so that a retry
		 * after map growth takes it again rather than reusing a stale one. */
		if (blob == 0 && (err = txn_blob_new(txn, &blob)) != 0)
			return err;
		if ((err = txn_blob_put(txn, blob, c->chunk, c->data, c->len)) != 0)
			return err;
	}
	c->blob_out = blob;
	if (c->file != NULL) {
		if ((err = jset_int(c->file, "blob", (int64_t)blob)) != 0)
			return err;
		if ((err = txn_file_put(txn, c->id, c->index, c->file)) != 0)
			return err;
	}
	if (c->job != NULL && (err = txn_job_put(txn, c->id, c->job)) != 0)
		return err;
	return 0;
}

int
job_commit(struct bg_store *st, struct job_commit *c)
{
	if (c->job != NULL && jset_int(c->job, "modified", (int64_t)time(NULL)) != 0)
		return BG_ENOMEM;
	return store_update(st, commit_fn, c);
}

static int
put_job(struct bg_store *st, const char *id, json_t *job)
{
	struct job_commit c = {.id = id, .job = job, .generation = -1};

	return job_commit(st, &c);
}

struct modify_args {
	const char *id;
	int (*fn)(json_t *job, struct bg_txn *txn, void *arg);
	void *arg;
};

static int
modify_fn(struct bg_txn *txn, void *arg)
{
	struct modify_args *a = arg;
	json_t *job = NULL;
	int err;

	if ((err = txn_job_get(txn, a->id, &job)) != 0)
		return err;
	if ((err = a->fn(job, txn, a->arg)) != 0 ||
	    (err = jset_int(job, "generation", jint(job, "generation", 0) + 1)) != 0 ||
	    (err = jset_int(job, "modified", (int64_t)time(NULL))) != 0)
		goto out;
	err = txn_job_put(txn, a->id, job);
out:
	json_decref(job);
	return err;
}

int
job_modify(struct bg_store *st, const char *id, int (*fn)(json_t *job, struct bg_txn *txn, void *arg),
           void *arg)
{
	struct modify_args a = {id, fn, arg};

	if (strlen(id) != STORE_JOB_ID_LEN)
		return BG_ENOENT;
	return store_update(st, modify_fn, &a);
}

/* ---- Creating jobs ----------------------------------------------------- */

static json_t *
headers_array(const char *const *headers)
{
	json_t *a = json_array();

	for (const char *const *p = headers; a != NULL && p != NULL && *p != NULL; p++) {
		if (json_array_append_new(a, json_string(*p)) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static int
apply_options(json_t *job, const struct job_options *opt)
{
	int err = 0;

	if (!flags_valid(opt->security_flags))
		return BG_ENOTIMPL;
	if (opt->peers != NULL && opt->peers[0] != NULL) {
		/* Peers named: the job asks them (client) and, as every job,
		 * offers what it fetched (server). */
		if ((err = jset(job, "peers", headers_array(opt->peers))) != 0 ||
		    (err = jset_str(job, "peer_caching", "both")) != 0)
			return err;
	}
	if ((err = jset_str(job, "peer_key", opt->peer_key)) != 0)
		return err;
	if ((err = jset_int(job, "security_flags", opt->security_flags)) != 0 ||
	    (err = jset_str(job, "ca_file", opt->ca_file)) != 0 ||
	    (err = jset(job, "headers", headers_array(opt->headers))) != 0 ||
	    (err = jset(job, "cache_both", json_boolean(opt->cache_both))) != 0 ||
	    (err = jset(job, "no_cache", json_boolean(opt->no_cache))) != 0)
		return err;
	return 0;
}

static int put_new_files(struct bg_txn *txn, const char *id, json_t *job,
                         const struct job_file_spec *files, size_t n);

struct create_args {
	const char *id;
	json_t *job;
	const struct job_file_spec *files;
	size_t n;
};

/* The job and its first files in one transaction: a crash never leaves a
 * job without the files it was created for. */
static int
create_fn(struct bg_txn *txn, void *arg)
{
	struct create_args *a = arg;
	int err;

	if ((err = jset_int(a->job, "nfiles", 0)) != 0 ||
	    (err = put_new_files(txn, a->id, a->job, a->files, a->n)) != 0)
		return err;
	return txn_job_put(txn, a->id, a->job);
}

int
job_create(struct bg_store *st, const struct job_options *opt, const struct job_file_spec *files,
           size_t nfiles, char id[STORE_JOB_ID_LEN + 1])
{
	json_t *job = NULL;
	int64_t now = (int64_t)time(NULL);
	int err;

	if (opt->name != NULL && strlen(opt->name) > JOB_NAME_MAX)
		return BG_ELIMIT;
	if ((err = job_new_id(id)) != 0)
		return err;
	if ((job = json_object()) == NULL)
		return BG_ENOMEM;
	if ((err = jset_str(job, "id", id)) != 0 ||
	    (err = jset_str(job, "name", opt->name != NULL ? opt->name : "")) != 0 ||
	    (err = jset_str(job, "type", "download")) != 0 ||
	    (err = jset_str(job, "state", job_state_name(JOB_SUSPENDED))) != 0 ||
	    (err = jset_str(job, "priority", job_priority_name(opt->priority))) != 0 ||
	    (err = jset_str(job, "peer_caching", "server")) != 0 ||
	    (err = jset_int(job, "created", now)) != 0 ||
	    (err = jset_int(job, "nfiles", 0)) != 0 ||
	    (err = jset_int(job, "generation", 0)) != 0 ||
	    (err = jset_int(job, "last_progress", now)) != 0 ||
	    (err = jset_int(job, "min_retry_delay", JOB_MIN_RETRY_DELAY)) != 0 ||
	    (err = jset_int(job, "no_progress_timeout", JOB_NO_PROGRESS_TIMEOUT)) != 0 ||
	    (err = jset(job, "error", json_null())) != 0 ||
	    (err = jset_str(job, "get_key", opt->get_key)) != 0 ||
	    (err = apply_options(job, opt)) != 0)
		goto out;
	if (nfiles == 0) {
		err = put_job(st, id, job);
	} else {
		struct create_args a = {.id = id, .job = job, .files = files, .n = nfiles};

		err = store_update(st, create_fn, &a);
	}
out:
	json_decref(job);
	return err;
}

static int
update_options_fn(json_t *job, struct bg_txn *txn, void *arg)
{
	(void)txn;
	return apply_options(job, arg);
}

int
job_update_options(struct bg_store *st, const char *id, const struct job_options *opt)
{
	return job_modify(st, id, update_options_fn, (void *)opt);
}

static json_t *
new_file_record(const struct job_file_spec *spec)
{
	json_t *f = json_object();

	if (f == NULL)
		return NULL;
	if (jset_str(f, "original_url", spec->url) != 0 ||
	    jset_str(f, "remote_url", spec->url) != 0 ||
	    jset_str(f, "local_path", spec->local_path) != 0 || jset_str(f, "temp_path", NULL) != 0 ||
	    jset_int(f, "bytes_total", -1) != 0 || jset_int(f, "bytes_committed", 0) != 0 ||
	    jset(f, "done", json_false()) != 0 || jset_int(f, "bytes_from_origin", 0) != 0 ||
	    jset_int(f, "bytes_from_peers", 0) != 0 || jset_str(f, "cache_key", NULL) != 0 ||
	    jset_str(f, "sha256", NULL) != 0 ||
	    jset_str(f, "expect_sha256", spec->expect_sha256) != 0 || jset_int(f, "blob", 0) != 0 ||
	    jset_str(f, "etag", NULL) != 0 || jset_str(f, "last_modified", NULL) != 0) {
		json_decref(f);
		return NULL;
	}
	return f;
}

/* Files n records after the job's current ones and counts them in job. */
static int
put_new_files(struct bg_txn *txn, const char *id, json_t *job, const struct job_file_spec *files,
              size_t n)
{
	int64_t have = jint(job, "nfiles", 0);
	int err;

	if (have < 0 || (uint64_t)have + n > JOB_FILES_MAX)
		return BG_ELIMIT;
	for (size_t i = 0; i < n; i++) {
		json_t *f = new_file_record(&files[i]);

		if (f == NULL)
			return BG_ENOMEM;
		err = txn_file_put(txn, id, (uint32_t)(have + (int64_t)i), f);
		json_decref(f);
		if (err != 0)
			return err;
	}
	return jset_int(job, "nfiles", have + (int64_t)n);
}

struct add_args {
	const char *id;
	const struct job_file_spec *files;
	size_t n;
};

static int
add_fn(struct bg_txn *txn, void *arg)
{
	struct add_args *a = arg;
	json_t *job = NULL;
	enum job_state from, to;
	int err;

	if ((err = txn_job_get(txn, a->id, &job)) != 0)
		return err;
	/* BITS takes new files until the job is completed or cancelled; a
	 * transferred job is queued again. */
	if ((err = apply_event(job, JOB_EV_ADD, NULL, 0, NULL, (int64_t)time(NULL), &from, &to)) != 0)
		goto out;
	if ((err = put_new_files(txn, a->id, job, a->files, a->n)) != 0)
		goto out;
	if ((err = jset_int(job, "generation", jint(job, "generation", 0) + 1)) != 0 ||
	    (err = jset_int(job, "modified", (int64_t)time(NULL))) != 0)
		goto out;
	err = txn_job_put(txn, a->id, job);
out:
	json_decref(job);
	return err;
}

int
job_add_files(struct bg_store *st, const char *id, const struct job_file_spec *files, size_t n)
{
	struct add_args a = {.id = id, .files = files, .n = n};

	return store_update(st, add_fn, &a);
}

int
job_add_file(struct bg_store *st, const char *id, const char *url, const char *local_path,
             const char *expect_sha256)
{
	struct job_file_spec spec = {url, local_path, expect_sha256};

	return job_add_files(st, id, &spec, 1);
}

struct find_args {
	const char *key;
	char id[STORE_JOB_ID_LEN + 1];
	int64_t created;
	bool found;
	bool errored;
};

static int
find_fn(const char *id, json_t *rec, void *arg)
{
	struct find_args *a = arg;
	const char *k = jstr(rec, "get_key");
	enum job_state s = rec_state(rec);
	int64_t created = jint(rec, "created", 0);

	if (k == NULL || strcmp(k, a->key) != 0 || job_state_final(s))
		return 0;
	/* The newest job of a key is the one a repeated get continues. */
	if (a->found && created < a->created)
		return 0;
	snprintf(a->id, sizeof(a->id), "%s", id);
	a->created = created;
	a->found = true;
	a->errored = s == JOB_ERROR;
	return 0;
}

static int
find_txn_fn(struct bg_txn *txn, void *arg)
{
	return txn_job_each(txn, find_fn, arg);
}

int
job_find_get(struct bg_store *st, const char *get_key, char id[STORE_JOB_ID_LEN + 1],
             bool *errored)
{
	struct find_args a = {.key = get_key};
	int err;

	if ((err = store_view(st, find_txn_fn, &a)) != 0)
		return err;
	if (errored != NULL)
		*errored = a.errored;
	if (!a.found)
		return BG_ENOENT;
	memcpy(id, a.id, sizeof(a.id));
	return 0;
}

int
job_get_flags(struct bg_store *st, const char *id, uint32_t *out)
{
	json_t *job = NULL;
	int err;

	if ((err = job_load(st, id, &job)) != 0)
		return err;
	*out = (uint32_t)jint(job, "security_flags", 0);
	json_decref(job);
	return 0;
}

static int
set_flags_fn(json_t *job, struct bg_txn *txn, void *arg)
{
	(void)txn;
	/* Turning CRL checking on restarts a partly downloaded https file:
	 * whoever transfers the job next sees that its bytes were not fetched
	 * under CRL checking (the file record's "crl_checked"). */
	return jset_int(job, "security_flags", *(uint32_t *)arg);
}

int
job_set_flags(struct bg_store *st, const char *id, uint32_t flags)
{
	if (!flags_valid(flags))
		return BG_ENOTIMPL;
	return job_modify(st, id, set_flags_fn, &flags);
}

/* ---- The job document -------------------------------------------------- */

static json_t *
size_or_null(int64_t v)
{
	return v < 0 ? json_null() : json_integer((json_int_t)v);
}

struct doc_args {
	const char *id;
	json_t *job;
	json_t *files;
};

static int
doc_fn(struct bg_txn *txn, void *arg)
{
	struct doc_args *a = arg;
	uint32_t n = 0;
	int err;

	json_decref(a->job);
	json_decref(a->files);
	a->job = NULL;
	if ((a->files = json_array()) == NULL)
		return BG_ENOMEM;
	if ((err = txn_job_get(txn, a->id, &a->job)) != 0)
		return err;
	if ((err = txn_file_count(txn, a->id, &n)) != 0)
		return err;
	for (uint32_t i = 0; i < n; i++) {
		json_t *f = NULL;

		if ((err = txn_file_get(txn, a->id, i, &f)) != 0)
			return err;
		if (json_array_append_new(a->files, f) != 0)
			return BG_ENOMEM;
	}
	return 0;
}

static json_t *
file_document(const json_t *f)
{
	json_t *d = json_object();
	int64_t total = jint(f, "bytes_total", -1);

	if (d == NULL)
		return NULL;
	if (jset_str(d, "original_url", jstr(f, "original_url")) != 0 ||
	    jset_str(d, "remote_url", jstr(f, "remote_url")) != 0 ||
	    jset_str(d, "local_path", jstr(f, "local_path")) != 0 ||
	    jset(d, "bytes_total", size_or_null(total)) != 0 ||
	    jset_int(d, "bytes_transferred", jint(f, "bytes_committed", 0)) != 0 ||
	    jset(d, "done", json_boolean(jbool(f, "done"))) != 0 ||
	    jset_int(d, "bytes_from_origin", jint(f, "bytes_from_origin", 0)) != 0 ||
	    jset_int(d, "bytes_from_peers", jint(f, "bytes_from_peers", 0)) != 0 ||
	    jset_int(d, "bytes_from_cache", jint(f, "bytes_from_cache", 0)) != 0 ||
	    jset_str(d, "cache_key", jstr(f, "cache_key")) != 0 ||
	    jset_str(d, "sha256", jstr(f, "sha256")) != 0 ||
	    (json_object_get(f, "cached") != NULL &&
	     jset(d, "cached", json_boolean(jbool(f, "cached"))) != 0) ||
	    (jstr(f, "cache_note") != NULL && jset_str(d, "cache_note", jstr(f, "cache_note")) != 0) ||
	    (json_object_get(f, "peer_lookup") != NULL &&
	     jset(d, "peer_lookup", json_deep_copy(json_object_get(f, "peer_lookup"))) != 0) ||
	    (json_object_get(f, "peer_lookups") != NULL &&
	     jset(d, "peer_lookups", json_deep_copy(json_object_get(f, "peer_lookups"))) != 0)) {
		json_decref(d);
		return NULL;
	}
	return d;
}

/* The job's proxy for documents: "none", the URL with its password shown
 * as "***", or null (libcurl's, from the environment). */
static json_t *
proxy_value(const json_t *job)
{
	const char *p = jstr(job, "proxy");
	char *shown = NULL;
	json_t *v;

	if (p == NULL)
		return json_null();
	if (strcmp(p, "none") == 0)
		return json_string(p);
	if (url_proxy_redacted(p, &shown) != 0)
		return NULL;
	v = json_string(shown);
	free(shown);
	return v;
}

static json_t *
make_document(const json_t *job, const json_t *files)
{
	json_t *d = json_object(), *fa = json_array(), *err;
	int64_t total = 0, done_bytes = 0, ndone = 0, from_cache = 0;
	size_t i;
	json_t *f;

	if (d == NULL || fa == NULL)
		goto fail;
	json_array_foreach(files, i, f) {
		int64_t t = jint(f, "bytes_total", -1);

		int64_t c = jint(f, "bytes_committed", 0);

		/* Stored numbers are not trusted: a sum that does not fit (a
		 * damaged record) is unknown, not undefined behaviour. */
		if (total >= 0 && (t < 0 || __builtin_add_overflow(total, t, &total)))
			total = -1;
		if (__builtin_add_overflow(done_bytes, c, &done_bytes))
			done_bytes = c < 0 ? INT64_MIN : INT64_MAX;
		ndone += jbool(f, "done");
		if (__builtin_add_overflow(from_cache, jint(f, "bytes_from_cache", 0), &from_cache))
			from_cache = INT64_MAX;
		if (json_array_append_new(fa, file_document(f)) != 0)
			goto fail;
	}
	err = json_object_get(job, "error");
	if (jset_str(d, "id", jstr(job, "id")) != 0 || jset_str(d, "name", jstr(job, "name")) != 0 ||
	    jset_str(d, "type", jstr(job, "type")) != 0 ||
	    jset_str(d, "state", jstr(job, "state")) != 0 ||
	    jset_str(d, "priority", jstr(job, "priority")) != 0 ||
	    jset_int(d, "security_flags", jint(job, "security_flags", 0)) != 0 ||
	    jset_str(d, "peer_caching", jstr(job, "peer_caching")) != 0 ||
	    jset(d, "proxy", proxy_value(job)) != 0 ||
	    jset(d, "bytes_total", size_or_null(total)) != 0 ||
	    jset_int(d, "bytes_transferred", done_bytes) != 0 ||
	    jset_int(d, "bytes_from_cache", from_cache) != 0 ||
	    jset_int(d, "files_total", (int64_t)json_array_size(files)) != 0 ||
	    jset_int(d, "files_transferred", ndone) != 0 ||
	    jset_int(d, "created", jint(job, "created", 0)) != 0 ||
	    jset_int(d, "modified", jint(job, "modified", 0)) != 0)
		goto fail;
	if (json_object_set_new(d, "files", fa) != 0) {
		fa = NULL;
		goto fail;
	}
	fa = NULL;
	if (jset(d, "error", err != NULL ? json_deep_copy(err) : json_null()) != 0)
		goto fail;
	return d;
fail:
	json_decref(fa);
	json_decref(d);
	return NULL;
}

/* Puts the state readers see (job_state_shown) into the document d. */
static int
show_state(json_t *d, const json_t *job, const char *home, const char *id)
{
	enum job_state s;

	if (job_state_parse(jstr(job, "state"), &s) != 0)
		return 0;
	return jset_str(d, "state", job_state_name(job_state_shown(home, id, s)));
}

int
job_document(struct bg_store *st, const char *home, const char *id, json_t **out)
{
	struct doc_args a = {.id = id};
	json_t *d;
	int err;

	if (strlen(id) != STORE_JOB_ID_LEN)
		return BG_ENOENT;
	err = store_view(st, doc_fn, &a);
	if (err == 0) {
		if ((d = make_document(a.job, a.files)) == NULL)
			err = BG_ENOMEM;
		else if (home != NULL && (err = show_state(d, a.job, home, id)) != 0)
			json_decref(d);
		else
			*out = d;
	}
	json_decref(a.job);
	json_decref(a.files);
	return err;
}

struct list_args {
	bool all;
	json_t *ids;
};

static int
list_fn(const char *id, json_t *rec, void *arg)
{
	struct list_args *a = arg;

	if (!a->all && job_state_final(rec_state(rec)))
		return 0;
	return json_array_append_new(a->ids, json_string(id)) == 0 ? 0 : BG_ENOMEM;
}

static int
list_txn_fn(struct bg_txn *txn, void *arg)
{
	struct list_args *a = arg;

	json_array_clear(a->ids);
	return txn_job_each(txn, list_fn, arg);
}

int
job_list(struct bg_store *st, const char *home, bool all, int (*fn)(json_t *doc, void *arg),
         void *arg)
{
	struct list_args a = {.all = all, .ids = json_array()};
	size_t i;
	json_t *v;
	int err;

	if (a.ids == NULL)
		return BG_ENOMEM;
	if ((err = store_view(st, list_txn_fn, &a)) != 0)
		goto out;
	json_array_foreach(a.ids, i, v) {
		json_t *doc = NULL;

		err = job_document(st, home, json_string_value(v), &doc);
		if (err == BG_ENOENT)
			continue; /* removed meanwhile */
		if (err != 0)
			goto out;
		err = fn(doc, arg);
		json_decref(doc);
		if (err != 0)
			goto out;
	}
out:
	json_decref(a.ids);
	return err;
}

/* ---- Ownership --------------------------------------------------------- */

struct job_lock {
	int fd;
};

/* The whole lock file, for fcntl locks. */
static void
whole_file(struct flock *fl, short type)
{
	memset(fl, 0, sizeof(*fl));
	fl->l_type = type;
	fl->l_whence = SEEK_SET;
}

int
job_lock(const char *home, const char *id, struct job_lock **out)
{
	char path[PATH_MAX];
	struct job_lock *l;
	struct flock fl;
	int fd;

	snprintf(path, sizeof(path), "%s/locks", home);
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return bg_err_from_errno(errno);
	snprintf(path, sizeof(path), "%s/locks/%s", home, id);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return bg_err_from_errno(errno);
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;

		close(fd);
		return e == EWOULDBLOCK ? BG_EBUSY : bg_err_from_errno(e);
	}
	/* flock decides ownership (and excludes processes of older builds);
	 * an flock cannot be tested without taking it, which would turn away
	 * a runner that comes at that moment.  An open file description lock
	 * of the same lifetime can (job_lock_held).  A kernel without them
	 * only costs readers the test. */
	whole_file(&fl, F_WRLCK);
	(void)fcntl(fd, F_OFD_SETLK, &fl);
	if ((l = malloc(sizeof(*l))) == NULL) {
		close(fd);
		return BG_ENOMEM;
	}
	/* The holder's pid, for messages naming who owns the job. */
	if (ftruncate(fd, 0) == 0) {
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());

		if (pwrite(fd, pid, (size_t)n, 0) < 0) {
			/* Informative only. */
		}
	}
	l->fd = fd;
	*out = l;
	return 0;
}

void
job_unlock(struct job_lock *l)
{
	if (l == NULL)
		return;
	close(l->fd);
	free(l);
}

int
job_lock_held(const char *home, const char *id)
{
	char path[PATH_MAX];
	struct flock fl;
	int fd, err;

	if (snprintf(path, sizeof(path), "%s/locks/%s", home, id) >= (int)sizeof(path))
		return BG_ELIMIT;
	/* No lock file: nobody ever ran the job here. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return errno == ENOENT ? 0 : bg_err_from_errno(errno);
	whole_file(&fl, F_WRLCK);
	if (fcntl(fd, F_OFD_GETLK, &fl) != 0) {
		err = errno == EINVAL ? BG_ENOTIMPL : bg_err_from_errno(errno);
		close(fd);
		return err;
	}
	close(fd);
	return fl.l_type != F_UNLCK;
}

enum job_state
job_state_shown(const char *home, const char *id, enum job_state s)
{
	enum job_state to;

	/* The record is read before the lock is tested: a runner that holds
	 * the lock has written CONNECTING or TRANSFERRING only after taking
	 * it, so a free lock means the one who wrote it is gone.  (A runner
	 * that ends between the two is shown stopped for that moment.) */
	if (s != JOB_CONNECTING && s != JOB_TRANSFERRING)
		return s;
	if (home == NULL || job_lock_held(home, id) != 0)
		return s;
	if (job_transition(s, JOB_EV_STOP, &to) != 0)
		return s;
	return to;
}

/* ---- User operations --------------------------------------------------- */

struct event_args {
	enum job_event ev;
	enum job_state from, to;
};

static int
event_fn(json_t *job, struct bg_txn *txn, void *arg)
{
	struct event_args *a = arg;

	(void)txn;
	if (a->ev == JOB_EV_RESUME && jint(job, "nfiles", 0) == 0) {
		a->from = rec_state(job);
		return BG_ENOENT; /* BITS refuses to resume an empty job */
	}
	return apply_event(job, a->ev, NULL, 0, NULL, (int64_t)time(NULL), &a->from, &a->to);
}

int
job_event(struct bg_store *st, const char *id, enum job_event ev, enum job_state *from,
          enum job_state *to)
{
	struct event_args a = {.ev = ev};
	int err = job_modify(st, id, event_fn, &a);

	if (from != NULL)
		*from = a.from;
	if (to != NULL)
		*to = a.to;
	return err;
}

struct field_args {
	const char *key;
	json_t *value;
};

static int
field_fn(json_t *job, struct bg_txn *txn, void *arg)
{
	struct field_args *a = arg;

	(void)txn;
	if (job_state_final(rec_state(job)))
		return BG_EINVAL;
	return jset(job, a->key, json_incref(a->value));
}

int
job_set_field(struct bg_store *st, const char *id, const char *key, json_t *value)
{
	struct field_args a = {key, value};

	return job_modify(st, id, field_fn, &a);
}

struct prefix_args {
	const char *id;
	const char *old, *new_prefix;
	unsigned changed;
	int bad; /* BG_ELIMIT / BG_EINVAL for a resulting URL that is not acceptable */
};

static int
prefix_fn(json_t *job, struct bg_txn *txn, void *arg)
{
	struct prefix_args *a = arg;
	int64_t n = jint(job, "nfiles", 0);
	size_t oldlen = strlen(a->old);
	int err = 0;

	if (job_state_final(rec_state(job)))
		return BG_EINVAL;
	a->changed = 0;
	for (int64_t i = 0; i < n; i++) {
		json_t *f = NULL;
		const char *remote;
		char *joined = NULL, *canon = NULL;

		if ((err = txn_file_get(txn, a->id, (uint32_t)i, &f)) != 0)
			return err;
		remote = jstr(f, "remote_url");
		/* Only the current remote name counts: a file whose name was
		 * already replaced by ALLOW_REPORT is not found under the
		 * original prefix, as BITS documents. */
		if (remote == NULL || strncmp(remote, a->old, oldlen) != 0 || jbool(f, "done")) {
			json_decref(f);
			continue;
		}
		if (asprintf(&joined, "%s%s", a->new_prefix, remote + oldlen) < 0) {
			json_decref(f);
			return BG_ENOMEM;
		}
		err = url_canonical(joined, &canon);
		free(joined);
		if (err != 0) {
			a->bad = err;
			json_decref(f);
			return BG_EINVAL;
		}
		err = jset_str(f, "remote_url", canon);
		free(canon);
		if (err == 0)
			err = txn_file_put(txn, a->id, (uint32_t)i, f);
		json_decref(f);
		if (err != 0)
			return err;
		a->changed++;
	}
	return 0;
}

int
job_replace_remote_prefix(struct bg_store *st, const char *id, const char *old_prefix,
                          const char *new_prefix, unsigned *changed)
{
	struct prefix_args a = {id, old_prefix, new_prefix, 0, 0};
	int err = job_modify(st, id, prefix_fn, &a);

	if (changed != NULL)
		*changed = a.changed;
	return err;
}
