/* test_dltime.c - the clock of a job's maximum download time (dltime.h):
 * it counts only while running, keeps what was used before, and its
 * deadline moves with pauses and a new limit; and the two fields of the
 * job record that keep the limit and the time used. */
#include <jansson.h>

#include "dltime.h"
#include "record.h"
#include "check.h"

static void
test_counts_only_while_running(void)
{
	struct dl_clock c;

	dl_clock_init(&c, 0, 10);
	CHECK_EQ_INT(dl_clock_used_ms(&c, 5000), 0); /* paused at first */
	CHECK_EQ_INT(dl_clock_deadline_ms(&c), 0);
	dl_clock_run(&c, 1000);
	CHECK_EQ_INT(dl_clock_used_ms(&c, 3500), 2500);
	CHECK_EQ_INT(dl_clock_deadline_ms(&c), 11000);
	dl_clock_pause(&c, 4000);
	/* Paused (waiting to retry): time goes by, nothing counts. */
	CHECK_EQ_INT(dl_clock_used_ms(&c, 100000), 3000);
	CHECK(!dl_clock_expired(&c, 100000));
	CHECK_EQ_INT(dl_clock_deadline_ms(&c), 0);
	dl_clock_run(&c, 100000);
	CHECK_EQ_INT(dl_clock_deadline_ms(&c), 107000);
	CHECK(!dl_clock_expired(&c, 106999));
	CHECK(dl_clock_expired(&c, 107000));
	/* Running twice does not restart the span. */
	dl_clock_run(&c, 106000);
	CHECK_EQ_INT(dl_clock_used_ms(&c, 107000), 10000);
}

static void
test_used_before_and_rounding(void)
{
	struct dl_clock c;

	/* A run takes over the seconds a record says were used. */
	dl_clock_init(&c, 7, 10);
	dl_clock_run(&c, 0);
	CHECK_EQ_INT(dl_clock_deadline_ms(&c), 3000);
	CHECK_EQ_INT(dl_clock_used_s(&c, 1499), 8);
	CHECK_EQ_INT(dl_clock_used_s(&c, 1500), 9);
	/* Used up before the run: due at once. */
	dl_clock_init(&c, 12, 10);
	CHECK(dl_clock_expired(&c, 0));
	dl_clock_run(&c, 500);
	CHECK(dl_clock_deadline_ms(&c) > 0 && dl_clock_deadline_ms(&c) <= 500);
	/* Damaged numbers: negative counts as 0. */
	dl_clock_init(&c, -5, -1);
	CHECK_EQ_INT(c.used_ms, 0);
	CHECK_EQ_INT(c.limit_ms, 0);
}

static void
test_no_limit_and_new_limit(void)
{
	struct dl_clock c;

	dl_clock_init(&c, 0, 0);
	dl_clock_run(&c, 0);
	CHECK(!dl_clock_expired(&c, INT64_C(1) << 50));
	CHECK_EQ_INT(dl_clock_deadline_ms(&c), 0);
	/* A limit set while running applies to the time used so far. */
	dl_clock_set_limit(&c, 2);
	CHECK(dl_clock_expired(&c, 2000));
	CHECK(!dl_clock_expired(&c, 1999));
	dl_clock_set_limit(&c, JOB_MAX_DOWNLOAD_TIME_MAX);
	CHECK_EQ_INT(dl_clock_deadline_ms(&c), JOB_MAX_DOWNLOAD_TIME_MAX * 1000);
	dl_clock_set_limit(&c, JOB_MAX_DOWNLOAD_TIME_MAX + 1); /* clamped */
	CHECK_EQ_INT(c.limit_ms, JOB_MAX_DOWNLOAD_TIME_MAX * 1000);
}

/* The record's two fields: a record of an older build (neither field)
 * reads as the default and none used; while they are so, encoding adds
 * neither, so such records stay as older builds wrote them. */
static void
test_record_fields(void)
{
	json_t *o = json_pack("{s:s, s:s}", "id", "aaaaaaaa-0000-4000-8000-000000000001", "state",
	                      "QUEUED");
	struct job_rec r;

	CHECK(o != NULL);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_INT(r.max_download_time, JOB_MAX_DOWNLOAD_TIME);
	CHECK_EQ_INT(r.download_time_used, 0);
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	CHECK(json_object_get(o, "max_download_time") == NULL);
	CHECK(json_object_get(o, "download_time_used") == NULL);
	/* Set: written, and read back. */
	r.max_download_time = 0;
	r.download_time_used = 42;
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(o, "max_download_time")), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(o, "download_time_used")), 42);
	job_rec_clear(&r);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_INT(r.max_download_time, 0);
	CHECK_EQ_INT(r.download_time_used, 42);
	job_rec_clear(&r);
	json_decref(o);
}

int
main(void)
{
	test_counts_only_while_running();
	test_used_before_and_rounding();
	test_no_limit_and_new_limit();
	test_record_fields();
	return check_done();
}
