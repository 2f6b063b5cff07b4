/*
 * job.c - jobs and their files in the store: creating and changing them in
 * transactions (every state change through apply_event(), that is through
 * job_transition()), the runner's commits (job_commit), the job document,
 * and a job's ownership by one process (its lock).  The records' fields are
 * record.h's; the engine that transfers a job is engine.c.
 */
#include <ctype.h>
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

#include "jobs.h"
#include "jobs_int.h"
#include "record.h"

static const char *const prio_names[] = {
	[JOB_PRIO_FOREGROUND] = "foreground",
	[JOB_PRIO_HIGH] = "high",
	[JOB_PRIO_NORMAL] = "normal",
	[JOB_PRIO_LOW] = "low",
};

NAME_TABLE_FUNCS(job_priority, prio_names, "normal", true)

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

/* ---- Transactions ------------------------------------------------------ */

/* A record o just read (err: how the read went) decoded into job or f;
 * o is handed over in *raw (for an update in place) or dropped. */
static int
decoded(int err, json_t *o, struct job_rec *job, struct file_rec *f, json_t **raw)
{
	if (err == 0)
		err = job != NULL ? job_rec_decode(o, job) : file_rec_decode(o, f);
	if (err != 0 || raw == NULL)
		json_decref(o);
	else
		*raw = o;
	return err;
}

static int
txn_job_load(struct bg_txn *txn, const char *id, struct job_rec *job, json_t **raw)
{
	json_t *o = NULL;
	int err = txn_job_get(txn, id, &o);

	return decoded(err, o, job, NULL, raw);
}

static int
txn_file_load(struct bg_txn *txn, const char *id, uint32_t index, struct file_rec *f,
              json_t **raw)
{
	json_t *o = NULL;
	int err = txn_file_get(txn, id, index, &o);

	return decoded(err, o, NULL, f, raw);
}

/* Writes a record back over *raw (as the load gave it, or NULL: anew). */
static int
txn_job_store(struct bg_txn *txn, const char *id, const struct job_rec *job, json_t **raw)
{
	int err = job_rec_encode(job, raw);

	return err != 0 ? err : txn_job_put(txn, id, *raw);
}

static int
txn_file_store(struct bg_txn *txn, const char *id, uint32_t index, const struct file_rec *f,
               json_t **raw)
{
	int err = file_rec_encode(f, raw);

	return err != 0 ? err : txn_file_put(txn, id, index, *raw);
}

struct get_args {
	const char *id;
	uint32_t index;
	struct job_rec *job;
	struct file_rec *file;
};

static int
get_job_fn(struct bg_txn *txn, void *arg)
{
	struct get_args *a = arg;

	job_rec_clear(a->job);
	return txn_job_load(txn, a->id, a->job, NULL);
}

int
job_load(struct bg_store *st, const char *id, struct job_rec *out)
{
	struct get_args a = {.id = id, .job = out};

	memset(out, 0, sizeof(*out));
	if (strlen(id) != STORE_JOB_ID_LEN)
		return BG_ENOENT;
	return store_view(st, get_job_fn, &a);
}

static int
get_file_fn(struct bg_txn *txn, void *arg)
{
	struct get_args *a = arg;

	file_rec_clear(a->file);
	return txn_file_load(txn, a->id, a->index, a->file, NULL);
}

int
job_load_file(struct bg_store *st, const char *id, uint32_t index, struct file_rec *out)
{
	struct get_args a = {.id = id, .index = index, .file = out};

	memset(out, 0, sizeof(*out));
	return store_view(st, get_file_fn, &a);
}

int
job_record_unfinished(const json_t *job)
{
	enum job_state st;

	if (job_rec_state(job, &st) != 0)
		return 0;
	return !job_state_final(st);
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
	struct job_rec job;
	int err;

	if (memo_matches(txn, id, memo, generation))
		return 0;
	if ((err = txn_job_load(txn, id, &job, NULL)) != 0)
		return err;
	err = job.generation != generation ? BG_EAGAIN : 0;
	job_rec_clear(&job);
	if (err == 0)
		memo_take(txn, id, memo, generation, -1);
	return err;
}

/* What happens to a job record: the one place its state changes.  ev goes
 * through job_transition() from the stored state (BG_EINVAL when refused)
 * and brings its side effects.  With failed (the attempt at file index,
 * remote URL url, failed), the event is the one job_failure_event() gives
 * and the outcome becomes the job's error. */
static int
apply_event(struct job_rec *job, enum job_event ev, const struct job_outcome *failed,
            uint32_t index, const char *url, int64_t now, enum job_state *from)
{
	enum job_state to;
	int err;

	/* BITS: a job with another method than GET goes to ERROR on an error
	 * that would otherwise be retried; resume starts it over. */
	if (failed != NULL)
		ev = job_failure_event(hr_transient(failed->hr) && job->http_method == NULL, now,
		                       job->transient_since, job->no_progress_timeout);
	*from = job->state;
	if ((err = job_transition(job->state, ev, &to)) != 0)
		return err;
	job->state = to;
	switch (ev) {
	case JOB_EV_START:
	case JOB_EV_RUN:
		job->has_error = false;
		break;
	case JOB_EV_RESUME:
		/* A resumed job starts its no-progress clock again and is tried
		 * at once, whatever its retry time was. */
		if (*from != to) {
			job->has_error = false;
			job->last_progress = now;
			job->transient_since = 0;
			job->retry_at = 0;
			/* BITS: Resume resets the elapsed download time too. */
			job->download_time_used = 0;
		}
		break;
	case JOB_EV_TRANSIENT:
		if (job->transient_since == 0)
			job->transient_since = now;
		job->retry_at = now + job->min_retry_delay;
		break;
	default:
		break;
	}
	if (failed != NULL) {
		job->has_error = true;
		job->error.outcome = *failed;
		job->error.file_index = index;
		if ((err = rec_set_str(&job->error.url, url)) != 0)
			return err;
	}
	return 0;
}

/* Applies the job-level parts of a commit to the stored record. */
static int
patch_job(struct bg_txn *txn, struct job_commit *c)
{
	struct job_rec job;
	json_t *raw = NULL;
	int64_t now = bg_now();
	bool known = memo_matches(txn, c->id, c->memo, c->generation);
	enum job_state from;
	int err;

	/* Progress alone, stamped this same second already: writing the
	 * record again would not change a byte of it. */
	if (known && c->memo->stamped == now && c->progress && !c->has_event && c->failed == NULL)
		return 0;
	if ((err = txn_job_load(txn, c->id, &job, &raw)) != 0)
		return err;
	/* Someone changed the job since its runner loaded it: the runner
	 * must reload rather than write over the change. */
	if (!known && c->generation >= 0 && job.generation != c->generation) {
		err = BG_EAGAIN;
		goto out;
	}
	if ((c->has_event || c->failed != NULL) &&
	    (err = apply_event(&job, c->event, c->failed, c->index, c->failed_url, now, &from)) != 0)
		goto out;
	if (c->progress) {
		job.last_progress = now;
		job.transient_since = 0;
	}
	if (c->clock != NULL)
		job.download_time_used = dl_clock_used_s(c->clock, bg_mono_ms());
	job.modified = now;
	if ((err = txn_job_store(txn, c->id, &job, &raw)) == 0)
		memo_take(txn, c->id, c->memo, c->generation,
		          c->progress && c->failed == NULL ? now : -1);
out:
	json_decref(raw);
	job_rec_clear(&job);
	return err;
}

static int
commit_fn(struct bg_txn *txn, void *arg)
{
	struct job_commit *c = arg;
	uint64_t blob = c->blob_in;
	json_t *own = NULL, **fj = c->file_json != NULL ? c->file_json : &own;
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
		if (c->piece != NULL && (err = txn_piece_put(txn, blob, c->chunk, c->piece)) != 0)
			return err;
	}
	if (c->prev_piece != NULL && blob != 0 && !c->drop_blob &&
	    (err = txn_piece_put(txn, blob, c->prev_chunk, c->prev_piece)) != 0)
		return err;
	c->blob_out = blob;
	/* The record says what the store holds, in the transaction that
	 * holds it: its committed never counts a byte a crash could lose. */
	if (c->inflight != NULL) {
		struct store_inflight f = *c->inflight; /* borrowed strings */

		f.blob = blob;
		if (c->data != NULL)
			f.committed = c->chunk * STORE_CHUNK_BYTES + c->len;
		if ((err = txn_inflight_put(txn, &f)) != 0)
			return err;
	} else if (c->inflight_del && c->inflight_url != NULL) {
		/* Only a record of this file: another job may be fetching the
		 * same URL and publishing it. */
		struct store_inflight f;
		bool ours;

		memset(&f, 0, sizeof(f));
		err = txn_inflight_get(txn, c->inflight_url, &f);
		ours = err == 0 && strcmp(f.job, c->id) == 0 && f.file == c->index;
		store_inflight_clear(&f);
		if (err != 0 && err != BG_ENOENT && err != BG_ECORRUPT)
			return err;
		if (ours && (err = txn_inflight_del(txn, c->inflight_url)) != 0 && err != BG_ENOENT)
			return err;
	}
	if (c->file != NULL) {
		c->file->blob = blob;
		err = txn_file_store(txn, c->id, c->index, c->file, fj);
		json_decref(own);
		if (err != 0)
			return err;
	}
	if (c->job != NULL) {
		json_t *j = NULL;

		err = txn_job_store(txn, c->id, c->job, &j);
		json_decref(j);
		if (err != 0)
			return err;
	}
	return 0;
}

int
job_commit(struct bg_store *st, struct job_commit *c)
{
	if (c->job != NULL)
		c->job->modified = bg_now();
	return store_update(st, commit_fn, c);
}

struct modify_args {
	const char *id;
	int (*fn)(struct job_rec *job, struct bg_txn *txn, void *arg);
	void *arg;
};

static int
modify_fn(struct bg_txn *txn, void *arg)
{
	struct modify_args *a = arg;
	struct job_rec job;
	json_t *raw = NULL;
	int err;

	if ((err = txn_job_load(txn, a->id, &job, &raw)) != 0)
		return err;
	if ((err = a->fn(&job, txn, a->arg)) != 0)
		goto out;
	job.generation++;
	job.modified = bg_now();
	err = txn_job_store(txn, a->id, &job, &raw);
out:
	json_decref(raw);
	job_rec_clear(&job);
	return err;
}

int
job_modify(struct bg_store *st, const char *id,
           int (*fn)(struct job_rec *job, struct bg_txn *txn, void *arg), void *arg)
{
	struct modify_args a = {id, fn, arg};

	if (strlen(id) != STORE_JOB_ID_LEN)
		return BG_ENOENT;
	return store_update(st, modify_fn, &a);
}

/* ---- Creating jobs ----------------------------------------------------- */

static int
apply_options(struct job_rec *job, const struct job_options *opt)
{
	int err;

	if (!flags_valid(opt->security_flags))
		return BG_ENOTIMPL;
	if (opt->peers != NULL && opt->peers[0] != NULL) {
		/* Peers named: the job asks them (client) and, as every job,
		 * offers what it fetched (server). */
		if ((err = strv_set(&job->peers, opt->peers)) != 0)
			return err;
		job->peer_caching = PEER_CACHING_BOTH;
	}
	if ((err = rec_set_str(&job->peer_key, opt->peer_key)) != 0 ||
	    (err = rec_set_str(&job->ca_file, opt->ca_file)) != 0 ||
	    (err = rec_set_str(&job->client_cert, opt->client_cert)) != 0 ||
	    (err = rec_set_str(&job->client_key, opt->client_cert != NULL ? opt->client_key : NULL)) != 0 ||
	    (err = strv_set(&job->headers, opt->headers)) != 0)
		return err;
	job->security_flags = opt->security_flags;
	job->cache_both = opt->cache_both;
	job->no_cache = opt->no_cache;
	if (opt->transfer_policy != NULL)
		job->cost_flags = job_transfer_policy_flags(*opt->transfer_policy);
	if (opt->max_rate != NULL)
		job->max_rate = *opt->max_rate;
	/* A get's credentials are the ones it names, as its headers are. */
	for (int t = 0; t < JOB_AUTH_TARGETS; t++)
		for (int sc = 0; sc < JOB_AUTH_SCHEMES; sc++)
			if ((err = job_cred_set(&job->cred[t][sc], NULL, NULL)) != 0)
				return err;
	if ((opt->user != NULL &&
	     (err = job_cred_set(&job->cred[JOB_AUTH_SERVER][opt->auth_scheme], opt->user,
	                         opt->password)) != 0) ||
	    (opt->proxy_user != NULL &&
	     (err = job_cred_set(&job->cred[JOB_AUTH_PROXY][opt->proxy_auth_scheme], opt->proxy_user,
	                         opt->proxy_password)) != 0))
		return err;
	return 0;
}

static int put_new_files(struct bg_txn *txn, const char *id, struct job_rec *job,
                         const struct job_file_spec *files, size_t n);

struct create_args {
	struct job_rec *job;
	const struct job_file_spec *files;
	size_t n;
};

/* The job and its first files in one transaction: a crash never leaves a
 * job without the files it was created for. */
static int
create_fn(struct bg_txn *txn, void *arg)
{
	struct create_args *a = arg;
	json_t *raw = NULL;
	int err;

	a->job->nfiles = 0;
	if ((err = put_new_files(txn, a->job->id, a->job, a->files, a->n)) == 0)
		err = txn_job_store(txn, a->job->id, a->job, &raw);
	json_decref(raw);
	return err;
}

int
job_create(struct bg_store *st, const struct job_options *opt, const struct job_file_spec *files,
           size_t nfiles, char id[STORE_JOB_ID_LEN + 1])
{
	struct job_rec job = {0};
	int64_t now = bg_now();
	int err;

	if (opt->name != NULL && strlen(opt->name) > JOB_NAME_MAX)
		return BG_ELIMIT;
	if ((err = job_new_id(id)) != 0)
		return err;
	memcpy(job.id, id, sizeof(job.id));
	job.state = JOB_SUSPENDED;
	job.priority = opt->priority;
	job.peer_caching = opt->peer_caching != NULL ? *opt->peer_caching : PEER_CACHING_SERVER;
	job.created = job.last_progress = now;
	job.min_retry_delay = JOB_MIN_RETRY_DELAY;
	job.no_progress_timeout = JOB_NO_PROGRESS_TIMEOUT;
	job.max_download_time = JOB_MAX_DOWNLOAD_TIME;
	job.cost_flags = job_transfer_policy_flags(opt->transfer_policy != NULL ? *opt->transfer_policy
	                                                                        : JOB_POLICY_ALWAYS);
	if ((err = rec_set_str(&job.name, opt->name != NULL ? opt->name : "")) != 0 ||
	    (err = rec_set_str(&job.get_key, opt->get_key)) != 0 ||
	    (err = apply_options(&job, opt)) != 0)
		goto out;
	if (nfiles == 0) {
		struct job_commit c = {.id = id, .job = &job, .generation = -1};

		err = job_commit(st, &c);
	} else {
		struct create_args a = {.job = &job, .files = files, .n = nfiles};

		err = store_update(st, create_fn, &a);
	}
out:
	job_rec_clear(&job);
	return err;
}

static int
update_options_fn(struct job_rec *job, struct bg_txn *txn, void *arg)
{
	(void)txn;
	return apply_options(job, arg);
}

int
job_update_options(struct bg_store *st, const char *id, const struct job_options *opt)
{
	return job_modify(st, id, update_options_fn, (void *)opt);
}

/* Files n records after the job's current ones and counts them in job. */
static int
put_new_files(struct bg_txn *txn, const char *id, struct job_rec *job,
              const struct job_file_spec *files, size_t n)
{
	int err = 0;

	if ((uint64_t)job->nfiles + n > JOB_FILES_MAX)
		return BG_ELIMIT;
	for (size_t i = 0; i < n && err == 0; i++) {
		struct file_rec f = {.bytes_total = -1};
		json_t *raw = NULL;

		if ((err = rec_set_str(&f.original_url, files[i].url)) == 0 &&
		    (err = rec_set_str(&f.remote_url, files[i].url)) == 0 &&
		    (err = rec_set_str(&f.local_path, files[i].local_path)) == 0 &&
		    (err = rec_set_str(&f.expect_sha256, files[i].expect_sha256)) == 0) {
			/* Kept in lower case, as the content's own sha256 is. */
			for (char *h = f.expect_sha256; h != NULL && *h != '\0'; h++)
				*h = (char)tolower((unsigned char)*h);
			err = txn_file_store(txn, id, job->nfiles + (uint32_t)i, &f, &raw);
		}
		json_decref(raw);
		file_rec_clear(&f);
	}
	if (err == 0)
		job->nfiles += (uint32_t)n;
	return err;
}

struct add_args {
	const char *id;
	const struct job_file_spec *files;
	size_t n;
};

static int
add_fn(struct job_rec *job, struct bg_txn *txn, void *arg)
{
	struct add_args *a = arg;
	enum job_state from;
	int err;

	/* BITS takes new files until the job is completed or cancelled; a
	 * transferred job is queued again. */
	if ((err = apply_event(job, JOB_EV_ADD, NULL, 0, NULL, bg_now(), &from)) != 0)
		return err;
	return put_new_files(txn, a->id, job, a->files, a->n);
}

int
job_add_files(struct bg_store *st, const char *id, const struct job_file_spec *files, size_t n)
{
	struct add_args a = {.id = id, .files = files, .n = n};

	return job_modify(st, id, add_fn, &a);
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
	struct job_rec job;
	int err = job_rec_decode(rec, &job);

	if (err == BG_ECORRUPT)
		return 0;
	if (err != 0)
		return err;
	if (job.get_key == NULL || strcmp(job.get_key, a->key) != 0 || job_state_final(job.state))
		goto out;
	/* The newest job of a key is the one a repeated get continues. */
	if (a->found && job.created < a->created)
		goto out;
	snprintf(a->id, sizeof(a->id), "%s", id);
	a->created = job.created;
	a->found = true;
	a->errored = job.state == JOB_ERROR;
out:
	job_rec_clear(&job);
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
	struct job_rec job;
	int err;

	if ((err = job_load(st, id, &job)) != 0)
		return err;
	*out = job.security_flags;
	job_rec_clear(&job);
	return 0;
}

static int
set_flags_fn(struct job_rec *job, struct bg_txn *txn, void *arg)
{
	(void)txn;
	/* Turning CRL checking on restarts a partly downloaded https file:
	 * whoever transfers the job next sees that its bytes were not fetched
	 * under CRL checking (the file record's "crl_checked"). */
	job->security_flags = *(uint32_t *)arg;
	return 0;
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
	struct job_rec job;
	struct file_rec *files;
	uint32_t nfiles;
};

static void
doc_clear(struct doc_args *a)
{
	job_rec_clear(&a->job);
	for (uint32_t i = 0; i < a->nfiles; i++)
		file_rec_clear(&a->files[i]);
	free(a->files);
	a->files = NULL;
	a->nfiles = 0;
}

static int
doc_fn(struct bg_txn *txn, void *arg)
{
	struct doc_args *a = arg;
	uint32_t n = 0;
	int err;

	doc_clear(a);
	if ((err = txn_job_load(txn, a->id, &a->job, NULL)) != 0)
		return err;
	if ((err = txn_file_count(txn, a->id, &n)) != 0)
		return err;
	if (n > 0 && (a->files = calloc(n, sizeof(*a->files))) == NULL)
		return BG_ENOMEM;
	for (; a->nfiles < n; a->nfiles++)
		if ((err = txn_file_load(txn, a->id, a->nfiles, &a->files[a->nfiles], NULL)) != 0)
			return err;
	return 0;
}

/* A list of peer lookups as the document shows it. */
static json_t *
lookups_json(const struct file_rec *f)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr != NULL && i < f->nlookups; i++) {
		if (json_array_append_new(arr, peer_lookup_json(&f->lookups[i])) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

/* The fleet's part in the file's last attempt (README.md "The fleet"). */
static json_t *
fleet_json(const struct file_rec *f)
{
	json_t *o = json_object();

	if (o == NULL || jset_str(o, "role", f->fleet_role) != 0 ||
	    jset_str(o, "source", f->fleet_source) != 0 ||
	    jset_int(o, "elections", (int64_t)f->fleet_elections) != 0 ||
	    jset_int(o, "follows", (int64_t)f->fleet_follows) != 0 ||
	    jset_int(o, "takeovers", (int64_t)f->fleet_takeovers) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *
file_document(const struct file_rec *f)
{
	json_t *d = json_object();

	if (d == NULL)
		return NULL;
	if (jset_str(d, "original_url", f->original_url) != 0 ||
	    jset_str(d, "remote_url", f->remote_url) != 0 ||
	    jset_str(d, "local_path", f->local_path) != 0 ||
	    jset(d, "bytes_total", size_or_null(f->bytes_total)) != 0 ||
	    jset_int(d, "bytes_transferred", (int64_t)f->bytes_committed) != 0 ||
	    jset(d, "done", json_boolean(f->done)) != 0 ||
	    jset_int(d, "bytes_from_origin", (int64_t)f->bytes_from_origin) != 0 ||
	    jset_int(d, "bytes_from_peers", (int64_t)f->bytes_from_peers) != 0 ||
	    jset_int(d, "bytes_from_cache", (int64_t)f->bytes_from_cache) != 0 ||
	    (f->bytes_rejected > 0 && jset_int(d, "bytes_rejected", (int64_t)f->bytes_rejected) != 0) ||
	    jset_str(d, "cache_key", f->cache_key) != 0 || jset_str(d, "sha256", f->sha256) != 0 ||
	    jset_str(d, "expected_sha256", f->expect_sha256) != 0 ||
	    (f->fleet_role != NULL && jset(d, "fleet", fleet_json(f)) != 0) ||
	    (f->has_cached && jset(d, "cached", json_boolean(f->cached)) != 0) ||
	    (f->cache_note != NULL && jset_str(d, "cache_note", f->cache_note) != 0) ||
	    (f->has_last_lookup && jset(d, "peer_lookup", peer_lookup_json(&f->last_lookup)) != 0) ||
	    (f->nlookups > 0 && jset(d, "peer_lookups", lookups_json(f)) != 0)) {
		json_decref(d);
		return NULL;
	}
	return d;
}

/* The job's proxy for documents: "none", the URL with its password shown
 * as "***", or null (libcurl's, from the environment). */
static json_t *
proxy_value(const struct job_rec *job)
{
	char *shown = NULL;
	json_t *v;

	if (job->proxy == NULL)
		return json_null();
	if (strcmp(job->proxy, "none") == 0)
		return json_string(job->proxy);
	if (url_proxy_redacted(job->proxy, &shown) != 0)
		return NULL;
	v = json_string(shown);
	free(shown);
	return v;
}

/* The job's credentials for documents: target, scheme and user name. */
static json_t *
creds_value(const struct job_rec *job)
{
	json_t *arr = json_array();

	for (int t = 0; arr != NULL && t < JOB_AUTH_TARGETS; t++) {
		for (int sc = 0; sc < JOB_AUTH_SCHEMES; sc++) {
			json_t *e;

			if (job->cred[t][sc].user == NULL)
				continue;
			if ((e = json_object()) == NULL || json_array_append_new(arr, e) != 0 ||
			    jset_str(e, "target", job_auth_target_name((enum job_auth_target)t)) != 0 ||
			    jset_str(e, "scheme", job_auth_scheme_name((enum job_auth_scheme)sc)) != 0 ||
			    jset_str(e, "user", job->cred[t][sc].user) != 0) {
				json_decref(arr);
				return NULL;
			}
		}
	}
	return arr;
}

/* A PKCS#11 URI as users may see it: a "pin-value" attribute (RFC 7512)
 * shown as "***". */
static char *
pkcs11_uri_shown(const char *uri)
{
	const char *pin = strstr(uri, "pin-value=");
	char *out;

	if (pin == NULL)
		return strdup(uri);
	if (asprintf(&out, "%.*spin-value=***%s", (int)(pin - uri), uri,
	             pin + strcspn(pin, ";?&")) < 0)
		return NULL;
	return out;
}

json_t *
job_client_cert_json(const struct job_rec *job)
{
	char subject[256], not_after[64], why[384];
	json_t *o;
	char *shown;

	if (job->client_cert == NULL)
		return json_null();
	if ((o = json_object()) == NULL)
		return NULL;
	if (client_cert_is_pkcs11(job->client_cert)) {
		if ((shown = pkcs11_uri_shown(job->client_cert)) == NULL ||
		    jset_str(o, "pkcs11", shown) != 0) {
			free(shown);
			json_decref(o);
			return NULL;
		}
		free(shown);
		return o;
	}
	/* Where the files are and whose certificate it is: the key's bytes
	 * never leave its file. */
	if (jset_str(o, "cert_file", job->client_cert) != 0 ||
	    jset_str(o, "key_file", job->client_key != NULL ? job->client_key : job->client_cert) != 0)
		goto fail;
	if (client_cert_load(job->client_cert, subject, sizeof(subject), not_after,
	                     sizeof(not_after), why, sizeof(why)) == 0) {
		if (jset_str(o, "subject", subject) != 0 || jset_str(o, "not_after", not_after) != 0)
			goto fail;
	} else if (jset_str(o, "problem", why) != 0) {
		goto fail;
	}
	return o;
fail:
	json_decref(o);
	return NULL;
}

/* The document of job in state (the state readers see). */
static json_t *
make_document(const struct job_rec *job, const struct file_rec *files, uint32_t nfiles,
              enum job_state state)
{
	json_t *d = json_object(), *fa = json_array();
	int64_t total = 0, done_bytes = 0, ndone = 0, from_cache = 0;

	if (d == NULL || fa == NULL)
		goto fail;
	for (uint32_t i = 0; i < nfiles; i++) {
		const struct file_rec *f = &files[i];
		int64_t t = f->bytes_total, c = (int64_t)f->bytes_committed;

		/* Stored numbers are not trusted: a sum that does not fit (a
		 * damaged record) is unknown, not undefined behaviour. */
		if (total >= 0 && (t < 0 || __builtin_add_overflow(total, t, &total)))
			total = -1;
		if (__builtin_add_overflow(done_bytes, c, &done_bytes))
			done_bytes = c < 0 ? INT64_MIN : INT64_MAX;
		ndone += f->done;
		if (__builtin_add_overflow(from_cache, (int64_t)f->bytes_from_cache, &from_cache))
			from_cache = INT64_MAX;
		if (json_array_append_new(fa, file_document(f)) != 0)
			goto fail;
	}
	if (jset_str(d, "id", job->id) != 0 || jset_str(d, "name", job->name) != 0 ||
	    jset_str(d, "type", "download") != 0 ||
	    jset_str(d, "state", job_state_name(state)) != 0 ||
	    jset_str(d, "priority", job_priority_name(job->priority)) != 0 ||
	    jset_int(d, "security_flags", job->security_flags) != 0 ||
	    jset_str(d, "peer_caching", peer_caching_name(job->peer_caching)) != 0 ||
	    jset(d, "proxy", proxy_value(job)) != 0 ||
	    jset(d, "bytes_total", size_or_null(total)) != 0 ||
	    jset_int(d, "bytes_transferred", done_bytes) != 0 ||
	    jset_int(d, "bytes_from_cache", from_cache) != 0 ||
	    jset_int(d, "files_total", (int64_t)nfiles) != 0 ||
	    jset_int(d, "files_transferred", ndone) != 0 ||
	    jset_int(d, "created", job->created) != 0 || jset_int(d, "modified", job->modified) != 0)
		goto fail;
	if (json_object_set_new(d, "files", fa) != 0) {
		fa = NULL;
		goto fail;
	}
	fa = NULL;
	if (jset(d, "error", job->has_error ? job_error_json(&job->error) : json_null()) != 0)
		goto fail;
	/* The maximum download time and the time used against it (seconds;
	 * while a runner holds the job, as of its last commit). */
	if (jset_int(d, "max_download_time", job->max_download_time) != 0 ||
	    jset_int(d, "download_time_used", job->download_time_used) != 0)
		goto fail;
	/* The job's own rate limit (bytes/s), null when none. */
	if (jset(d, "max_rate", job->max_rate > 0 ? json_integer((json_int_t)job->max_rate)
	                                          : json_null()) != 0)
		goto fail;
	/* The HTTP options: user names but never a password; of the custom
	 * headers, how many there are, never their values. */
	if (jset(d, "credentials", creds_value(job)) != 0 ||
	    jset_str(d, "http_method", job->http_method != NULL ? job->http_method : "GET") != 0 ||
	    jset_int(d, "custom_headers", (int64_t)job->headers.n) != 0 ||
	    jset(d, "headers_write_only", json_boolean(job->headers_write_only)) != 0)
		goto fail;
	return d;
fail:
	json_decref(fa);
	json_decref(d);
	return NULL;
}

/* The transfer policy of the job document, and why a job shown QUEUED
 * waits when the network holds it back (live: the document of a home,
 * whose readers see the network as it is now; NetworkManager is asked only
 * for a QUEUED unrestricted-only job). */
static int
cost_fields(json_t *d, const struct job_rec *job, enum job_state shown, bool live)
{
	enum job_transfer_policy p = job_transfer_policy_of(job->cost_flags);
	const char *reason = NULL;

	if (live && shown == JOB_QUEUED && p == JOB_POLICY_UNRESTRICTED_ONLY)
		reason = job_cost_waiting_reason(p, netcost_read());
	if (jset_str(d, "transfer_policy", job_transfer_policy_name(p)) != 0 ||
	    jset_int(d, "cost_flags", job->cost_flags) != 0 ||
	    jset_str(d, "waiting_reason", reason) != 0)
		return BG_ENOMEM;
	return 0;
}

/* The job's client certificate and certificate check command, last in the
 * document (key material never appears: job_client_cert_json). */
static int
tls_fields(json_t *d, const struct job_rec *job)
{
	if (jset(d, "client_certificate", job_client_cert_json(job)) != 0 ||
	    jset(d, "cert_check_cmd",
	         job->cert_check_cmd.n > 0 ? strv_json(&job->cert_check_cmd) : json_null()) != 0)
		return BG_ENOMEM;
	return 0;
}

int
job_document(struct bg_store *st, const char *home, const char *id, json_t **out)
{
	struct doc_args a = {.id = id};
	enum job_state shown;
	int err;

	if (strlen(id) != STORE_JOB_ID_LEN)
		return BG_ENOENT;
	err = store_view(st, doc_fn, &a);
	if (err == 0) {
		/* With a home, the state readers see (job_state_shown). */
		shown = home != NULL ? job_state_shown(home, id, a.job.state) : a.job.state;
		if ((*out = make_document(&a.job, a.files, a.nfiles, shown)) == NULL)
			err = BG_ENOMEM;
		else if ((err = cost_fields(*out, &a.job, shown, home != NULL)) != 0 ||
		         (err = tls_fields(*out, &a.job)) != 0) {
			json_decref(*out);
			*out = NULL;
		}
	}
	doc_clear(&a);
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

	enum job_state st;

	if (!a->all && job_rec_state(rec, &st) != BG_ECORRUPT && job_state_final(st))
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
event_fn(struct job_rec *job, struct bg_txn *txn, void *arg)
{
	struct event_args *a = arg;
	int err;

	(void)txn;
	if (a->ev == JOB_EV_RESUME && job->nfiles == 0) {
		a->from = job->state;
		return BG_ENOENT; /* BITS refuses to resume an empty job */
	}
	err = apply_event(job, a->ev, NULL, 0, NULL, bg_now(), &a->from);
	a->to = job->state;
	return err;
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

static int
settings_fn(struct job_rec *job, struct bg_txn *txn, void *arg)
{
	const struct job_settings *s = arg;
	int err = 0;

	(void)txn;
	if (job_state_final(job->state))
		return BG_EINVAL;
	if (s->set & JOB_SET_NAME)
		err = rec_set_str(&job->name, s->name);
	if (s->set & JOB_SET_HTTP_METHOD) {
		/* Before the transfer starts or after it failed: a runner reads
		 * the method once per attempt. */
		if (job->state != JOB_SUSPENDED && job->state != JOB_ERROR)
			return BG_EBUSY;
		if (s->http_method != NULL && !job_http_method_valid(s->http_method))
			return BG_EINVAL;
		err = rec_set_str(&job->http_method, s->http_method == NULL ||
		                                             strcmp(s->http_method, "GET") == 0
		                                         ? NULL
		                                         : s->http_method);
		if (err != 0)
			return err;
		/* BITS makes a job with another method a foreground one. */
		if (job->http_method != NULL)
			job->priority = JOB_PRIO_FOREGROUND;
	}
	if (s->set & JOB_SET_PRIORITY) {
		if (job->http_method != NULL && s->priority != JOB_PRIO_FOREGROUND)
			return BG_EBUSY;
		job->priority = s->priority;
	}
	if (s->set & JOB_SET_HEADERS_WRITE_ONLY)
		job->headers_write_only = true;
	if (s->set & JOB_SET_MIN_RETRY_DELAY)
		job->min_retry_delay = s->min_retry_delay;
	if (s->set & JOB_SET_NO_PROGRESS_TIMEOUT)
		job->no_progress_timeout = s->no_progress_timeout;
	if (s->set & JOB_SET_PEER_CACHING)
		job->peer_caching = s->peer_caching;
	if (s->set & JOB_SET_MAX_DOWNLOAD_TIME)
		job->max_download_time = s->max_download_time;
	if (s->set & JOB_SET_MAX_RATE)
		job->max_rate = s->max_rate;
	if (s->set & JOB_SET_TRANSFER_POLICY)
		job->cost_flags = job_transfer_policy_flags(s->transfer_policy);
	if (err == 0 && (s->set & JOB_SET_NOTIFY_CMD))
		err = strv_set(&job->notify_cmd, s->notify_cmd);
	if (err == 0 && (s->set & JOB_SET_HEADERS))
		err = strv_set(&job->headers, s->headers);
	if (err == 0 && (s->set & JOB_SET_PROXY))
		err = rec_set_str(&job->proxy, s->proxy);
	if (err == 0 && (s->set & JOB_SET_CA_FILE))
		err = rec_set_str(&job->ca_file, s->ca_file);
	if (err == 0 && (s->set & JOB_SET_CREDENTIALS))
		err = job_cred_set(&job->cred[JOB_AUTH_SERVER][JOB_AUTH_BASIC], s->user, s->password);
	if (err == 0 && (s->set & JOB_SET_AUTH)) {
		if ((unsigned)s->auth_target >= JOB_AUTH_TARGETS)
			return BG_EINVAL;
		if ((unsigned)s->auth_scheme >= JOB_AUTH_SCHEMES)
			return BG_ENOTIMPL;
		err = job_cred_set(&job->cred[s->auth_target][s->auth_scheme], s->user, s->password);
	}
	if (err == 0 && (s->set & JOB_SET_CLIENT_CERT) &&
	    (err = rec_set_str(&job->client_cert, s->client_cert)) == 0)
		err = rec_set_str(&job->client_key, s->client_cert != NULL ? s->client_key : NULL);
	if (err == 0 && (s->set & JOB_SET_CERT_CHECK_CMD))
		err = strv_set(&job->cert_check_cmd, s->cert_check_cmd);
	return err;
}

int
job_change(struct bg_store *st, const char *id, const struct job_settings *s)
{
	return job_modify(st, id, settings_fn, (void *)s);
}

struct prefix_args {
	const char *id;
	const char *old, *new_prefix;
	unsigned changed;
	int bad; /* BG_ELIMIT / BG_EINVAL for a resulting URL that is not acceptable */
};

static int
prefix_fn(struct job_rec *job, struct bg_txn *txn, void *arg)
{
	struct prefix_args *a = arg;
	size_t oldlen = strlen(a->old);
	int err = 0;

	if (job_state_final(job->state))
		return BG_EINVAL;
	a->changed = 0;
	for (uint32_t i = 0; i < job->nfiles && err == 0; i++) {
		struct file_rec f;
		json_t *raw = NULL;
		char *joined = NULL, *canon = NULL;

		if ((err = txn_file_load(txn, a->id, i, &f, &raw)) != 0)
			return err;
		/* Only the current remote name counts: a file whose name was
		 * already replaced by ALLOW_REPORT is not found under the
		 * original prefix, as BITS documents. */
		if (f.remote_url == NULL || strncmp(f.remote_url, a->old, oldlen) != 0 || f.done)
			goto next;
		if (asprintf(&joined, "%s%s", a->new_prefix, f.remote_url + oldlen) < 0) {
			err = BG_ENOMEM;
			goto next;
		}
		err = url_canonical(joined, &canon);
		free(joined);
		if (err != 0) {
			a->bad = err;
			err = BG_EINVAL;
			goto next;
		}
		free(f.remote_url);
		f.remote_url = canon;
		if ((err = txn_file_store(txn, a->id, i, &f, &raw)) == 0)
			a->changed++;
next:
		json_decref(raw);
		file_rec_clear(&f);
	}
	return err;
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
