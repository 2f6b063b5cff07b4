/* test_jobrate.c - a job's own rate limit in its record: a record of an
 * older build (no max_rate) reads as no limit and encodes as it was; a
 * limit is written and read back; setting it back to none removes the
 * field; a value out of range in a record reads as no limit. */
#include <jansson.h>

#include "jobs.h"
#include "record.h"
#include "check.h"

static void
test_record_field(void)
{
	json_t *o = json_pack("{s:s, s:s}", "id", "aaaaaaaa-0000-4000-8000-000000000001", "state",
	                      "QUEUED");
	struct job_rec r;

	CHECK(o != NULL);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_INT(r.max_rate, 0);
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	CHECK(json_object_get(o, "max_rate") == NULL);
	r.max_rate = 10u << 20;
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(o, "max_rate")), 10 << 20);
	job_rec_clear(&r);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_INT(r.max_rate, 10 << 20);
	/* Back to none: the field stays, at 0 (only a record that never had
	 * it is left without it), and reads as none. */
	r.max_rate = 0;
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(o, "max_rate")), 0);
	job_rec_clear(&r);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_INT(r.max_rate, 0);
	job_rec_clear(&r);
	/* Out of range (negative, past BG_RATE_MAX): no limit. */
	CHECK_EQ_INT(json_object_set_new(o, "max_rate", json_integer(-5)), 0);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_INT(r.max_rate, 0);
	job_rec_clear(&r);
	CHECK_EQ_INT(json_object_set_new(o, "max_rate", json_integer((json_int_t)BG_RATE_MAX + 1)), 0);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_INT(r.max_rate, 0);
	job_rec_clear(&r);
	json_decref(o);
}

int
main(void)
{
	test_record_field();
	return check_done();
}
