/*
 * test_commit.c - job commits with a runner's memo of the job record.  The
 * memo only spares decoding the record: a change made by someone else must
 * still be seen (a new generation refused, other fields kept), and the
 * record a commit leaves is the one it would leave without the memo.
 * A chunk, its piece digest and the record of the download in progress
 * are written together or not at all; a restart from byte 0 starts a new
 * incarnation at 0 bytes.  Works in a fresh mkdtemp() home under /tmp, removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs.h"
#include "jobs_int.h"
#include "engine_int.h"
#include "record.h"
#include "check.h"

static int
rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path);
}

struct raw {
	const char *id;
	unsigned char bytes[4096];
	size_t len;
};

static int
raw_fn(struct bg_txn *txn, void *arg)
{
	struct raw *r = arg;
	const void *v;
	size_t n;
	int err;

	if ((err = txn_job_raw(txn, r->id, &v, &n)) != 0)
		return err;
	if (n > sizeof(r->bytes))
		return BG_ELIMIT;
	memcpy(r->bytes, v, n);
	r->len = n;
	return 0;
}

/* The stored bytes of the job record. */
static struct raw
raw_of(struct bg_store *st, const char *id)
{
	struct raw r = {.id = id};

	CHECK(store_view(st, raw_fn, &r) == 0);
	return r;
}

struct check_args {
	const char *id;
	int64_t generation;
	struct job_memo *memo;
};

static int
check_fn(struct bg_txn *txn, void *arg)
{
	struct check_args *a = arg;

	return txn_job_check_generation(txn, a->id, a->generation, a->memo);
}

/* Another writer that leaves the generation as it is. */
static int
rename_fn(struct bg_txn *txn, void *arg)
{
	const char *id = arg;
	json_t *job = NULL;
	int err;

	if ((err = txn_job_get(txn, id, &job)) != 0)
		return err;
	err = json_object_set_new(job, "name", json_string("renamed")) == 0 ? txn_job_put(txn, id, job)
	                                                                      : BG_ENOMEM;
	json_decref(job);
	return err;
}

struct stored {
	const char *id;
	json_t *job;
};

static int
stored_fn(struct bg_txn *txn, void *arg)
{
	struct stored *a = arg;

	return txn_job_get(txn, a->id, &a->job);
}

/* The job record as stored (JSON), or NULL. */
static json_t *
stored_job(struct bg_store *st, const char *id)
{
	struct stored a = {id, NULL};

	if (!CHECK(store_view(st, stored_fn, &a) == 0))
		return NULL;
	return a.job;
}

static int64_t
generation_of(struct bg_store *st, const char *id)
{
	json_t *job = stored_job(st, id);
	int64_t g = job != NULL ? json_integer_value(json_object_get(job, "generation")) : -1;

	json_decref(job);
	return g;
}

static const char *
field(struct bg_store *st, const char *id, const char *key, char *buf, size_t len)
{
	json_t *job = stored_job(st, id);

	snprintf(buf, len, "%s", json_string_value(json_object_get(job, key)) ?: "");
	json_decref(job);
	return buf;
}

/* Records decode and encode back to the same JSON, whether encoded anew or
 * over the decoded object; an unchanged record is not touched. */
static void
test_records(void)
{
	static const char job_text[] =
		"{\"id\":\"aaaaaaaa-0000-4000-8000-000000000001\",\"name\":\"n\",\"type\":\"download\","
		"\"state\":\"TRANSIENT_ERROR\",\"priority\":\"high\",\"peer_caching\":\"both\","
		"\"created\":5,\"nfiles\":2,\"generation\":3,\"last_progress\":6,\"min_retry_delay\":600,"
		"\"no_progress_timeout\":1209600,\"error\":{\"code\":\"0x80072EFD\",\"symbol\":"
		"\"ERROR_WINHTTP_CANNOT_CONNECT\",\"context\":\"remote_file\",\"file_index\":1,"
		"\"url\":\"http://h/x\",\"message\":\"refused\"},\"get_key\":null,\"peers\":[\"p:1\"],"
		"\"peer_key\":null,\"security_flags\":257,\"ca_file\":null,\"headers\":[\"A: b\"],"
		"\"cache_both\":false,\"no_cache\":true,\"modified\":7,\"transient_since\":8,"
		"\"retry_at\":9,\"notify_cmd\":[\"echo\",\"x\"],\"proxy\":\"none\",\"user\":\"u\","
		"\"password\":\"p\"}";
	static const char file_text[] =
		"{\"original_url\":\"http://h/x\",\"remote_url\":\"http://h/y\",\"local_path\":\"/t/x\","
		"\"temp_path\":\"/t/.x.part\",\"bytes_total\":-1,\"bytes_committed\":262128,"
		"\"done\":false,\"bytes_from_origin\":100,\"bytes_from_peers\":262028,"
		"\"cache_key\":null,\"sha256\":null,\"expect_sha256\":null,\"blob\":4,"
		"\"etag\":\"\\\"e\\\"\",\"last_modified\":null,"
		"\"crl_checked\":true,\"cached\":false,\"peer_lookup\":{\"key\":\"http://h/y\","
		"\"peer\":\"p:1\",\"result\":\"hit\",\"detail\":null},\"peer_lookups\":[{\"key\":"
		"\"http://h/y\",\"peer\":\"p:0\",\"result\":\"miss\",\"detail\":\"no\"},{\"key\":"
		"\"http://h/y\",\"peer\":\"p:1\",\"result\":\"hit\",\"detail\":null}]}";
	json_t *in = json_loads(job_text, 0, NULL), *out = NULL, *same;
	struct job_rec job;
	struct file_rec f;

	CHECK(in != NULL && job_rec_decode(in, &job) == 0);
	CHECK(job.state == JOB_TRANSIENT_ERROR && job.priority == JOB_PRIO_HIGH &&
	      job.peer_caching == PEER_CACHING_BOTH && job.nfiles == 2 && job.generation == 3);
	CHECK(job.has_error && job.error.outcome.hr == HR_ERROR_WINHTTP_CANNOT_CONNECT &&
	      !job.error.outcome.local && job.error.file_index == 1);
	CHECK(job.headers.n == 1 && job.notify_cmd.n == 2 && job.peers.n == 1 && job.no_cache);
	CHECK(job_rec_encode(&job, &out) == 0 && json_equal(in, out));
	same = in;
	CHECK(job_rec_encode(&job, &same) == 0 && same == in && json_equal(in, out));
	job_rec_clear(&job);
	json_decref(in);
	json_decref(out);
	out = NULL;

	in = json_loads(file_text, 0, NULL);
	CHECK(in != NULL && file_rec_decode(in, &f) == 0);
	CHECK(f.bytes_total == -1 && f.bytes_committed == 262128 && f.blob == 4 && f.crl_checked);
	CHECK(f.has_cached && !f.cached && f.has_last_lookup && f.nlookups == 2);
	CHECK(f.lookups[0].result == PEER_LOOKUP_MISS && f.last_lookup.result == PEER_LOOKUP_HIT);
	CHECK(file_rec_encode(&f, &out) == 0 && json_equal(in, out));
	same = in;
	CHECK(file_rec_encode(&f, &same) == 0 && same == in && json_equal(in, out));
	/* A chunk's commit: the counters change in place. */
	f.bytes_committed += 262128;
	CHECK(file_rec_encode(&f, &out) == 0 &&
	      json_integer_value(json_object_get(out, "bytes_committed")) == 2 * 262128);
	file_rec_clear(&f);
	json_decref(in);
	json_decref(out);
}

#define URL "http://origin.test/big.bin"

struct seen {
	uint64_t blob, index;
	int chunk_err, piece_err, rec_err;
	size_t chunk_len;
	unsigned char piece[STORE_PIECE_LEN];
	struct store_inflight rec;
};

static int
seen_fn(struct bg_txn *txn, void *arg)
{
	struct seen *a = arg;
	const void *data;

	a->chunk_err = txn_blob_get(txn, a->blob, a->index, &data, &a->chunk_len);
	a->piece_err = txn_piece_get(txn, a->blob, a->index, a->piece);
	store_inflight_clear(&a->rec);
	a->rec_err = txn_inflight_get(txn, URL, &a->rec);
	return 0;
}

/* What the store holds of chunk index of blob, and the URL's record. */
static void
look(struct bg_store *st, struct seen *a, uint64_t blob, uint64_t index)
{
	a->blob = blob;
	a->index = index;
	CHECK(store_view(st, seen_fn, a) == 0);
}

static void
test_inflight(struct bg_store *st, const char *id, int64_t g)
{
	static unsigned char chunk[STORE_CHUNK_BYTES];
	unsigned char d0[STORE_PIECE_LEN], d1[STORE_PIECE_LEN];
	struct store_inflight f = {
		.url = URL, .gen = 7, .total = -1, .state = STORE_INFLIGHT_ORIGIN,
		.fetch = {.known = true, .ca = "system"}, .etag = "\"e1\"",
	};
	struct job_commit c = {.id = id, .generation = g + 1, .data = chunk, .len = sizeof(chunk),
	                       .piece = d0, .inflight = &f, .progress = true};
	struct seen a;
	uint64_t blob;

	memset(&a, 0, sizeof(a));
	snprintf(f.job, sizeof(f.job), "%s", id);
	memset(chunk, 'a', sizeof(chunk));
	bg_sha256(chunk, sizeof(chunk), d0);

	/* A stale runner (another generation): nothing is written. */
	CHECK_EQ_INT(job_commit(st, &c), BG_EAGAIN);
	look(st, &a, 1, 0);
	CHECK_EQ_INT(a.rec_err, BG_ENOENT);
	/* The chunk, its digest and the record, together; committed and
	 * blob are the commit's. */
	c.generation = g;
	CHECK_EQ_INT(job_commit(st, &c), 0);
	blob = c.blob_out;
	CHECK(blob != 0);
	look(st, &a, blob, 0);
	CHECK(a.chunk_err == 0 && a.chunk_len == sizeof(chunk));
	CHECK(a.piece_err == 0 && memcmp(a.piece, d0, sizeof(d0)) == 0);
	CHECK(a.rec_err == 0 && a.rec.committed == STORE_CHUNK_BYTES && a.rec.blob == blob &&
	      a.rec.gen == 7 && a.rec.state == STORE_INFLIGHT_ORIGIN);

	/* A commit that fails after its chunk and digest were put (the record
	 * is refused: gen 0) leaves neither: the record still says chunk 0. */
	memset(chunk, 'b', sizeof(chunk));
	bg_sha256(chunk, sizeof(chunk), d1);
	c.blob_in = blob;
	c.chunk = 1;
	c.piece = d1;
	f.gen = 0;
	CHECK_EQ_INT(job_commit(st, &c), BG_EINVAL);
	look(st, &a, blob, 1);
	CHECK_EQ_INT(a.chunk_err, BG_ENOENT);
	CHECK_EQ_INT(a.piece_err, BG_ENOENT);
	CHECK(a.rec_err == 0 && a.rec.committed == STORE_CHUNK_BYTES && a.rec.gen == 7);
	f.gen = 7;
	CHECK_EQ_INT(job_commit(st, &c), 0);
	look(st, &a, blob, 1);
	CHECK(a.piece_err == 0 && memcmp(a.piece, d1, sizeof(d1)) == 0);
	CHECK(a.rec_err == 0 && a.rec.committed == 2 * (uint64_t)STORE_CHUNK_BYTES);

	/* A short chunk gets no digest. */
	{
		struct job_commit sc = {.id = id, .generation = g, .blob_in = blob, .chunk = 2,
		                        .data = chunk, .len = 1000, .inflight = &f};

		CHECK_EQ_INT(job_commit(st, &sc), 0);
		look(st, &a, blob, 2);
		CHECK(a.chunk_err == 0 && a.chunk_len == 1000);
		CHECK_EQ_INT(a.piece_err, BG_ENOENT);
		CHECK(a.rec.committed == 2 * (uint64_t)STORE_CHUNK_BYTES + 1000);
	}

	/* Another file's delete leaves the record alone; this file's takes it. */
	{
		struct job_commit dc = {.id = id, .index = 3, .generation = -1, .inflight_del = true,
		                        .inflight_url = URL};

		CHECK_EQ_INT(job_commit(st, &dc), 0);
		look(st, &a, blob, 0);
		CHECK_EQ_INT(a.rec_err, 0);
	}

	/* The engine's restart from byte 0: the blob's chunks and digests go,
	 * and the record says 0 bytes of a new incarnation. */
	{
		struct run r = {.st = st, .id = id, .generation = g, .memo = {.stamped = -1}};
		struct fsink s = {.r = &r, .fd = -1, .lock_fd = -1, .blob = blob, .publish = true,
		                  .pub_url = URL, .gen = 7, .committed = 2 * STORE_CHUNK_BYTES + 1000};
		char tmpl[] = "/tmp/bgcommit-part-XXXXXX";
		uint64_t gens[2];

		s.rec.bytes_total = -1;
		s.rec.bytes_committed = s.committed;
		r.fetch = f.fetch;
		s.fd = mkstemp(tmpl);
		if (!CHECK(s.fd >= 0) || !CHECK(hasher_new(&s.hash) == 0))
			goto out;
		for (int i = 0; i < 2; i++) {
			CHECK_EQ_INT(restart_file(&s), 0);
			gens[i] = s.gen;
			CHECK(s.gen != 0 && s.gen != 7 && s.gen <= INT64_MAX);
			look(st, &a, blob, 0);
			CHECK_EQ_INT(a.chunk_err, BG_ENOENT);
			CHECK_EQ_INT(a.piece_err, BG_ENOENT);
			CHECK(a.rec_err == 0 && a.rec.committed == 0 && a.rec.gen == s.gen &&
			      a.rec.state == STORE_INFLIGHT_ORIGIN);
		}
		CHECK(gens[0] != gens[1]);
		/* Not published any more: the next commit deletes the record. */
		s.publish = false;
		CHECK_EQ_INT(commit_file(&s, NULL, 0, false, false), 0);
		look(st, &a, blob, 0);
		CHECK_EQ_INT(a.rec_err, BG_ENOENT);
	out:
		hasher_free(s.hash);
		job_memo_clear(&r.memo);
		if (s.fd >= 0)
			close(s.fd);
		unlink(tmpl);
		json_decref(s.rec_json);
		file_rec_clear(&s.rec);
	}
	store_inflight_clear(&a.rec);
}

int
main(void)
{
	char tmpl[] = "/tmp/bgcommit-test-XXXXXX";
	char *home = mkdtemp(tmpl);
	struct bg_store *st = NULL;
	struct job_options opt = {.name = "memo", .priority = JOB_PRIO_NORMAL};
	struct job_memo memo = {.stamped = -1};
	char id[STORE_JOB_ID_LEN + 1], buf[64];
	int64_t g;

	test_records();
	if (home == NULL || chmod(home, 0700) != 0) {
		perror("mkdtemp");
		return 2;
	}
	if (!CHECK(store_open(home, 0, NULL, &st) == 0) || !CHECK(job_create(st, &opt, NULL, 0, id) == 0))
		goto out;
	g = generation_of(st, id);

	/* A progress commit remembers the bytes it wrote. */
	{
		struct job_commit c = {.id = id, .generation = g, .progress = true, .memo = &memo};
		struct raw r;

		CHECK(job_commit(st, &c) == 0);
		r = raw_of(st, id);
		CHECK(memo.raw != NULL && memo.len == r.len && memcmp(memo.raw, r.bytes, r.len) == 0);
		CHECK(memo.generation == g && memo.stamped > 0);
	}
	/* A state change is written even right after a progress stamp. */
	{
		struct job_commit c = {.id = id, .generation = g, .progress = true, .has_event = true,
		                       .event = JOB_EV_RUN, .memo = &memo};

		CHECK(job_commit(st, &c) == 0);
		CHECK_EQ_STR(field(st, id, "state", buf, sizeof(buf)), "CONNECTING");
		c.event = JOB_EV_RECEIVE;
		CHECK(job_commit(st, &c) == 0);
		CHECK_EQ_STR(field(st, id, "state", buf, sizeof(buf)), "TRANSFERRING");
	}
	/* An event the stored state does not take is refused, and nothing
	 * of the commit is written. */
	{
		struct job_commit c = {.id = id, .generation = g, .has_event = true,
		                       .event = JOB_EV_COMPLETE, .memo = &memo};

		CHECK_EQ_INT(job_commit(st, &c), BG_EINVAL);
		CHECK_EQ_STR(field(st, id, "state", buf, sizeof(buf)), "TRANSFERRING");
	}
	/* Someone else renames the job without a new generation: the next
	 * progress commit keeps the new name, whether or not it is in the
	 * same second as the memo's stamp. */
	{
		struct job_commit c = {.id = id, .generation = g, .progress = true, .memo = &memo};

		CHECK(store_update(st, rename_fn, id) == 0);
		CHECK(job_commit(st, &c) == 0);
		CHECK_EQ_STR(field(st, id, "name", buf, sizeof(buf)), "renamed");
		CHECK_EQ_STR(field(st, id, "state", buf, sizeof(buf)), "TRANSFERRING");
	}
	/* A user change (a new generation) is refused to a runner of the old
	 * one, commit or check, however fresh its memo. */
	{
		struct job_commit c = {.id = id, .generation = g, .progress = true, .memo = &memo};
		struct check_args a = {.id = id, .generation = g, .memo = &memo};

		json_t *name = json_string("user");

		CHECK(job_commit(st, &c) == 0); /* the memo is of the stored bytes now */
		struct job_settings set = {.set = JOB_SET_NAME, .name = json_string_value(name)};

		CHECK(job_change(st, id, &set) == 0);
		json_decref(name);
		CHECK(generation_of(st, id) == g + 1);
		CHECK_EQ_INT(job_commit(st, &c), BG_EAGAIN);
		CHECK_EQ_INT(store_view(st, check_fn, &a), BG_EAGAIN);
		CHECK_EQ_STR(field(st, id, "name", buf, sizeof(buf)), "user");
		/* The runner of the new generation goes on. */
		a.generation = c.generation = g + 1;
		CHECK_EQ_INT(store_view(st, check_fn, &a), 0);
		CHECK(memo.generation == g + 1);
		CHECK_EQ_INT(job_commit(st, &c), 0);
		CHECK_EQ_STR(field(st, id, "name", buf, sizeof(buf)), "user");
	}
	/* Without a memo, the same answers. */
	{
		struct job_commit c = {.id = id, .generation = g, .progress = true};
		struct check_args a = {.id = id, .generation = g};

		CHECK_EQ_INT(job_commit(st, &c), BG_EAGAIN);
		CHECK_EQ_INT(store_view(st, check_fn, &a), BG_EAGAIN);
		a.generation = g + 1;
		CHECK_EQ_INT(store_view(st, check_fn, &a), 0);
	}
	test_inflight(st, id, g + 1);
out:
	job_memo_clear(&memo);
	store_close(st);
	if (nftw(home, rm_entry, 8, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "cannot remove %s: %s\n", home, strerror(errno));
	return check_done();
}
