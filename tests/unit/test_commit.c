/*
 * test_commit.c - job commits with a runner's memo of the job record.  The
 * memo only spares decoding the record: a change made by someone else must
 * still be seen (a new generation refused, other fields kept), and the
 * record a commit leaves is the one it would leave without the memo.
 * Works in a fresh mkdtemp() home under /tmp, removed at the end.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent.h"
#include "agent_int.h"
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

static int64_t
generation_of(struct bg_store *st, const char *id)
{
	json_t *job = NULL;
	int64_t g = -1;

	if (CHECK(job_load(st, id, &job) == 0))
		g = json_integer_value(json_object_get(job, "generation"));
	json_decref(job);
	return g;
}

static const char *
field(struct bg_store *st, const char *id, const char *key, char *buf, size_t len)
{
	json_t *job = NULL;

	buf[0] = '\0';
	if (CHECK(job_load(st, id, &job) == 0))
		snprintf(buf, len, "%s", json_string_value(json_object_get(job, key)) ?: "");
	json_decref(job);
	return buf;
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
		CHECK(job_set_field(st, id, "name", name) == 0);
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
out:
	job_memo_clear(&memo);
	store_close(st);
	if (nftw(home, rm_entry, 8, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "cannot remove %s: %s\n", home, strerror(errno));
	return check_done();
}
