/*
 * engine.c - runs a job (job_run): its unfinished files in order, one
 * attempt at a time (run_file), immediate retries of a foreground get, and
 * the runner's events and errors committed through job_commit().  The
 * sources and the partial file are the other engine_*.c (engine_int.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "engine_int.h"

static void
set_local_error(struct run *r, int err, const char *what, const char *path)
{
	job_outcome_set(&r->out, hr_from_bg(err), true, "%s %s: %s", what, path, bg_strerror(err));
}

bool
run_out_of_time(const struct run *r)
{
	return dl_clock_expired(&r->dl, bg_mono_ms());
}

bool
run_propagated(int err)
{
	return err == BG_ENOMEM || err == BG_ECORRUPT || err == BG_EAGAIN || err == BG_ECANCELED;
}

/* Runs one attempt at file index.  Returns a BG_E* code only for failures
 * of the store; transfer outcomes are left in r->out. */
static int
run_file(struct run *r, uint32_t index, bool *progressed)
{
	struct fsink s = {.r = r, .index = index, .fd = -1, .lock_fd = -1};
	struct origin_request req;
	struct origin_result res;
	struct origin_sink sink = {sink_start, sink_data, &s};
	const char *const *headers = strv_list(&r->job.headers);
	char temp[PATH_MAX];
	bool retried_alone = false;
	int err;

	memset(&res, 0, sizeof(res));
	job_outcome_clear(&r->out);
	if ((err = job_load_file(r->st, r->id, index, &s.rec)) != 0)
		return err;
	if (s.rec.done)
		goto out;
	/* A job with another method than GET neither reads nor writes the
	 * store, and asks no peer: what a POST answers is not the resource
	 * (RFC 9110 section 9.3.3), and no cache key describes it. */
	s.cache = !r->job.no_cache && r->job.http_method == NULL;
	if (s.cache && s.rec.not_stored) {
		s.cache = false; /* its first part was never stored */
		s.too_big = true;
	}
	s.blob = s.rec.blob;
	/* One hasher per run: its buffers and thread serve file after file. */
	if (r->hash == NULL && (err = hasher_new(&r->hash)) != 0)
		goto out;
	s.hash = r->hash;
	if ((err = hasher_reset(s.hash)) != 0)
		goto out;
	s.buf = hasher_buffer(s.hash);
	if (s.rec.temp_path == NULL) {
		const char *local = s.rec.local_path;

		if (local == NULL) {
			err = BG_ECORRUPT;
			goto out;
		}
		if ((err = temp_path_for(r->id, local, temp, sizeof(temp))) != 0) {
			set_local_error(r, err, "cannot name a partial file for", local);
			err = 0;
			goto out;
		}
		/* The name follows from the job and the local path, so a crash
		 * before the first commit leaves no file nobody can find: a
		 * resume, a cancel or a complete computes the same name. */
		if ((err = rec_set_str(&s.rec.temp_path, temp)) != 0)
			goto out;
	}
	snprintf(temp, sizeof(temp), "%s", s.rec.temp_path);
	if ((s.fd = open(temp, O_RDWR | O_CREAT | O_CLOEXEC, 0666)) < 0) {
		set_local_error(r, bg_err_from_errno(errno), "cannot write", temp);
		goto out;
	}
	if ((err = prepare_partial(&s)) != 0) {
		if (run_propagated(err))
			goto out;
		set_local_error(r, err, "cannot prepare", temp);
		err = 0;
		goto out;
	}

	/* All bytes were committed before an interruption: only the final
	 * checks remain. */
	if (s.committed + s.fill > 0 &&
	    s.rec.bytes_total == (int64_t)(s.committed + s.fill)) {
		err = finish_file(&s);
		goto check;
	}

	if (s.rec.remote_url == NULL) {
		err = BG_ECORRUPT;
		goto out;
	}

	/* Sources before the origin: the node's own store (BITS looks in its
	 * own cache first; not with --no-cache), then peers when the job is a
	 * peer-caching client and the store holds no copy the origin can
	 * confirm. */
	if (s.committed + s.fill == 0) {
		bool done = false;

		/* The fleet's part is this download's (from byte 0) alone. */
		s.rec.fleet_elections = s.rec.fleet_follows = s.rec.fleet_takeovers = 0;
		if ((err = rec_set_str(&s.rec.fleet_role, NULL)) != 0 ||
		    (err = rec_set_str(&s.rec.fleet_source, NULL)) != 0)
			goto out;

		err = s.cache ? try_store(r, &s, &done) : 0;
		if (err == 0 && !done && r->job.http_method == NULL &&
		    peer_mode(&r->job, PEER_CACHING_CLIENT) &&
		    s.held.url == NULL && s.committed + s.fill == 0 && run_has_peers(r)) {
			/* The lookups of this attempt only. */
			for (size_t i = 0; i < s.rec.nlookups; i++)
				peer_lookup_clear(&s.rec.lookups[i]);
			s.rec.nlookups = 0;
			err = try_peers(r, &s, &sink, headers, &done);
			/* Nobody has it whole: maybe somebody is fetching it. */
			if (err == 0 && !done && s.committed + s.fill == 0 && fleet_applies(r, &s))
				err = try_fleet(r, &s, &sink, &done);
			note_peer_results(r, &s);
		}
		if (err != 0) {
			if (!run_propagated(err)) {
				set_local_error(r, err, "cannot write", temp);
				err = 0;
			}
			goto out;
		}
		if (done)
			goto out;
	}
again:
	origin_request_for(r, &s, headers, &req);
	if (req.offset == 0)
		held_conditions(&s.held, &req.if_none_match, &req.if_modified_since);
	if ((err = origin_fetch(r->o, &req, &sink, &res)) != 0)
		goto out;
	if (res.hr == HR_S_OK && res.not_modified) {
		err = revalidated(r, &s, &res);
		if (err == BG_ENOENT || err == BG_ECORRUPT) {
			/* Gone from the store since the lookup: a plain request. */
			store_key_clear(&s.held);
			s.look = LOOK_MISS;
			origin_result_clear(&res);
			if ((err = restart_file(&s)) != 0)
				goto out;
			goto again;
		}
		if (err == 0)
			err = finish_file(&s);
		goto check;
	}
	if (res.remote_url != NULL) {
		/* DISALLOW: the remote name becomes the redirect target. */
		if ((err = rec_set_str(&s.rec.remote_url, res.remote_url)) != 0 ||
		    (err = commit_file(&s, NULL, 0, false, false)) != 0)
			goto out;
	}
	if (res.hr != HR_S_OK) {
		job_outcome_set(&r->out, res.hr, false, "%s", res.message);
		if (res.local_err != 0) {
			if (run_propagated(res.local_err)) {
				err = res.local_err;
				goto out;
			}
			if (res.local_err == BG_EPROTO) {
				job_outcome_set(&r->out, HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE, false,
				                "%s sent more bytes than it announced", req.url);
				/* What was kept is suspect: start over next time. */
				if ((err = restart_file(&s)) != 0)
					goto out;
			} else {
				set_local_error(r, res.local_err, "cannot write", temp);
			}
		} else if (hr_transient(res.hr)) {
			/* Keep whole bytes received before the break: they are good
			 * and the resume picks up after them (with every digest
			 * known, also when the break fell on a chunk's end). */
			if ((err = flush_chunk(&s)) != 0) {
				if (run_propagated(err))
					goto out;
				set_local_error(r, err, "cannot write", temp);
				err = 0;
			}
		}
		goto out;
	}
	err = finish_file(&s);
	if (err == BG_EDIGEST && !retried_alone) {
		/* Bytes kept from a peer plus the origin's rest did not make the
		 * content the peer described, or the origin's bytes not the
		 * digest it announced: once more, from the origin alone. */
		retried_alone = true;
		r->out.hr = HR_S_OK;
		origin_result_clear(&res);
		goto again;
	}
check:
	if (err == BG_EDIGEST) {
		/* finish_file said why when the origin's digest disagreed. */
		if (r->out.hr != HR_ERROR_CRC)
			job_outcome_set(&r->out, HR_ERROR_CRC, false,
			                "%s: the content does not match its digest",
			                s.rec.remote_url);
		err = 0;
	} else if (err != 0 && !run_propagated(err) && err != BG_EIO) {
		set_local_error(r, err, "cannot write", temp);
		err = 0;
	}
out:
	r->file_bytes = s.rec.bytes_committed;
	if (progressed != NULL)
		*progressed = s.progressed;
	origin_result_clear(&res);
	store_key_clear(&s.held);
	/* The file ends here whatever happened (done, error, stop): peers
	 * see its writer gone. */
	inflight_release(&s);
	free(s.pub_url);
	free(s.pub_final);
	if (s.fd >= 0)
		close(s.fd);
	/* Bytes that failed their digest check were dropped (finish_file):
	 * the emptied partial file goes too, so that nothing stays beside the
	 * local path of a file in ERROR for its digest.  A resume creates it
	 * again. */
	if (r->out.hr == HR_ERROR_CRC && !s.rec.done && s.rec.bytes_committed == 0 &&
	    s.rec.temp_path != NULL && unlink(s.rec.temp_path) != 0 && errno != ENOENT) {
		/* Only an empty file left behind: the job's error stays the digest's. */
	}
	json_decref(s.rec_json);
	file_rec_clear(&s.rec);
	return err;
}

/* Records the error that stopped the job: ERROR or, for a transient
 * error, TRANSIENT_ERROR until its retry time, unless the job made no
 * progress for longer than its no-progress timeout (decided in the
 * transaction, from the stored record's clock: job_failure_event). */
static int
set_job_error(struct run *r, uint32_t index)
{
	struct file_rec f;
	struct job_commit c = {
		.id = r->id,
		.index = index,
		.generation = r->generation,
		.failed = &r->out,
		.memo = &r->memo,
		.clock = &r->dl,
	};
	int err;

	if (job_load_file(r->st, r->id, index, &f) == 0)
		c.failed_url = f.remote_url;
	err = job_commit(r->st, &c);
	file_rec_clear(&f);
	return err;
}

/* Commits an event of the runner's. */
static int
run_event(struct run *r, enum job_event ev)
{
	struct job_commit c = {
		.id = r->id,
		.generation = r->generation,
		.has_event = true,
		.event = ev,
		.memo = &r->memo,
		.clock = &r->dl,
	};

	return job_commit(r->st, &c);
}

/* The peers a job asks: its own list, else the runner's (the daemon's). */
static void
load_peers(struct run *r)
{
	const char *keyfile = r->job.peer_key;

	r->npeers = 0;
	r->key_failed = false;
	r->table_loaded = false;
	free(r->rows);
	r->rows = NULL;
	for (size_t i = 0; i < r->job.peers.n && r->npeers < JOB_PEERS_MAX; i++)
		r->peers[r->npeers++] = r->job.peers.v[i];
	if (r->npeers == 0 && r->ro != NULL) {
		for (size_t i = 0; i < r->ro->npeers && r->npeers < JOB_PEERS_MAX; i++)
			r->peers[r->npeers++] = r->ro->peers[i];
	}
	for (size_t i = 0; i < r->npeers; i++) {
		r->sources[i] = peer_source_name(PEER_SRC_OPTION);
		r->nodes[i] = NULL;
	}
	if (keyfile == NULL && r->ro != NULL)
		keyfile = r->ro->peer_key;
	r->pc.keylen = 0;
	if (keyfile != NULL && peer_key_load(keyfile, r->pc.key, &r->pc.keylen) != 0) {
		/* Without its key no peer would answer: ask none. */
		r->pc.keylen = 0;
		r->npeers = 0;
		r->key_failed = true;
	}
}

/* The fetch policy of the job's bytes (but the file's crl_checked): its
 * CA file, else the runner's, is read once here. */
static void
run_fetch_policy(struct run *r)
{
	fetch_policy_of_job(&r->job, true, &r->fetch);
	if (r->job.ca_file == NULL && r->ro != NULL && r->ro->ca_file != NULL)
		fetch_policy_set_ca(&r->fetch, r->ro->ca_file);
}

/* Loads the job again after a user changed it; BG_EAGAIN when it is no
 * longer ours to run (suspended, cancelled, completed...). */
static int
reload(struct run *r)
{
	struct job_rec job;
	int err;

	/* The peers in use point into the record: it is replaced only by a
	 * whole one. */
	if ((err = job_load(r->st, r->id, &job)) != 0) {
		job_rec_clear(&job);
		return err;
	}
	job_rec_clear(&r->job);
	r->job = job;
	r->generation = job.generation;
	r->nfiles = job.nfiles;
	/* A limit changed meanwhile applies at once; the time used is the
	 * run's own count (the record has it as of the last commit). */
	dl_clock_set_limit(&r->dl, job.max_download_time);
	bg_rate_set(&r->rate, job.max_rate, bg_mono_ms());
	load_peers(r);
	run_fetch_policy(r);
	if (job.state != JOB_QUEUED && job.state != JOB_CONNECTING && job.state != JOB_TRANSFERRING)
		return BG_EAGAIN;
	return 0;
}

/* Ends the job in ERROR with BG_E_MAXDOWNLOAD_TIMEOUT: it spent its
 * maximum download time connecting and transferring.  What was committed
 * stays (partial file and store), as for any ERROR of a background job;
 * `resume` starts the clock again from 0 and goes on from those bytes. */
static int
out_of_time(struct run *r, uint32_t index)
{
	dl_clock_pause(&r->dl, bg_mono_ms());
	job_outcome_set(&r->out, HR_BG_E_MAXDOWNLOAD_TIMEOUT, false,
	                "the job spent its maximum download time (%" PRId64
	                " s) connecting and transferring",
	                r->dl.limit_ms / 1000);
	return set_job_error(r, index);
}

static void
sleep_unless_stopped(const struct run *r, unsigned seconds)
{
	for (unsigned i = 0; i < seconds * 10 && !run_stopping(r); i++) {
		struct timespec ts = {0, 100 * 1000 * 1000};

		nanosleep(&ts, NULL);
	}
}

int
job_run(struct bg_store *st, struct origin *o, const char *id, const struct job_run_options *ro)
{
	struct run r = {.st = st, .o = o, .id = id, .ro = ro, .memo = {.stamped = -1}};
	int err;

	if ((err = job_load(st, id, &r.job)) != 0 ||
	    (err = bg_rate_init(&r.rate, r.job.max_rate, JOB_RATE_BURST_MIN, bg_mono_ms())) != 0) {
		job_rec_clear(&r.job);
		return err;
	}
	r.generation = r.job.generation;
	r.nfiles = r.job.nfiles;
	/* The clock counts from the time used so far.  A job run again from
	 * ERROR (a repeated get) starts it from 0, as resume does. */
	dl_clock_init(&r.dl, r.job.state == JOB_ERROR ? 0 : r.job.download_time_used,
	              r.job.max_download_time);
	load_peers(&r);
	run_fetch_policy(&r);
	/* Records of downloads in progress that a crashed run of this job
	 * left are not looked for here: the next commit of the file
	 * overwrites its record (keeping the incarnation when the prefix is
	 * kept), one that drops its bytes or does not publish deletes it,
	 * a cancel deletes it, and the store's gc removes any other whose
	 * lock is free.  Until then its lock is free: peers call it stalled. */
	if (ro != NULL && ro->only_if_due) {
		/* A scheduler chose the job before it held its lock: the job may
		 * have been suspended, cancelled or finished by someone else
		 * since.  Only a job that is still due is started. */
		if (!job_due(r.job.state, r.job.retry_at, bg_now())) {
			err = BG_EAGAIN;
			goto out;
		}
	}
	/* CONNECTING from here: the maximum download time counts. */
	dl_clock_run(&r.dl, bg_mono_ms());
	if ((err = run_event(&r, ro != NULL && ro->only_if_due ? JOB_EV_START : JOB_EV_RUN)) != 0)
		goto out;
	for (uint32_t i = 0; i < r.nfiles; i++) {
		unsigned attempts = 0, delay = 0;

		for (;;) {
			bool progressed = false;

			if (run_out_of_time(&r)) {
				err = out_of_time(&r, i);
				goto out;
			}
			err = run_file(&r, i, &progressed);
			if (err == BG_EAGAIN) {
				/* A user changed the job: carry on with the new settings
				 * (the same file again), unless it is no longer to run. */
				if ((err = reload(&r)) != 0)
					goto out;
				continue;
			}
			if ((err == BG_ECANCELED || (err == 0 && r.out.hr != HR_S_OK)) &&
			    run_out_of_time(&r) &&
			    !(ro != NULL && ro->stop != NULL && *ro->stop)) {
				/* Stopped by the maximum download time, not from
				 * outside: the job's error. */
				err = out_of_time(&r, i);
				goto out;
			}
			if (err == BG_ECANCELED || (err == 0 && r.out.hr != HR_S_OK && run_stopping(&r))) {
				/* Stopped from outside: the job stays resumable. */
				err = run_event(&r, JOB_EV_STOP);
				/* A state the table does not stop (nothing ran) is a stop too. */
				err = err != 0 && err != BG_EAGAIN && err != BG_EINVAL ? err : BG_ECANCELED;
				goto out;
			}
			if (err != 0)
				goto out;
			if (r.out.hr == HR_S_OK)
				break;
			if (progressed) {
				attempts = 0;
				delay = 0;
			}
			if (!job_retry_now(r.out.hr, attempts, ro != NULL ? ro->transient_retries : 0)) {
				err = set_job_error(&r, i);
				goto out;
			}
			attempts++;
			delay = job_retry_delay(delay);
			/* Waiting to retry is not transferring (BITS would show
			 * TRANSIENT_ERROR): the download time stops meanwhile. */
			dl_clock_pause(&r.dl, bg_mono_ms());
			sleep_unless_stopped(&r, delay);
			dl_clock_run(&r.dl, bg_mono_ms());
		}
		r.bytes_before += r.file_bytes;
	}
	if ((err = run_event(&r, JOB_EV_DONE)) != 0)
		goto out;
	/* Committed is safe from any crash of bgcopy; with sync, TRANSFERRED
	 * also survives a power loss. */
	if (ro != NULL && ro->sync)
		err = store_sync(st);
out:
	hasher_free(r.hash);
	free(r.rows);
	job_memo_clear(&r.memo);
	OPENSSL_cleanse(r.pc.key, sizeof(r.pc.key));
	job_rec_clear(&r.job);
	bg_rate_destroy(&r.rate);
	return err;
}
