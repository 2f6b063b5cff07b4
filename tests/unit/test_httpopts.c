/* test_httpopts.c - the HTTP options of the job record (record.h): a
 * record of an older build with the server's basic credential reads as
 * that credential and keeps its "user" and "password" members, with no new
 * member added; the other credentials, the method and
 * write-only headers are fields absent at their defaults; the names of
 * targets and schemes (PASSPORT refused) and the method token check. */
#include <string.h>

#include <jansson.h>

#include "record.h"
#include "check.h"

static void
test_old_record_unchanged(void)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "id", "aaaaaaaa-0000-4000-8000-000000000001",
	                      "state", "SUSPENDED", "user", "alice", "password", "pw");
	struct job_rec r;

	CHECK(o != NULL);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_STR(r.cred[JOB_AUTH_SERVER][JOB_AUTH_BASIC].user, "alice");
	CHECK_EQ_STR(r.cred[JOB_AUTH_SERVER][JOB_AUTH_BASIC].password, "pw");
	CHECK(job_has_cred(&r, JOB_AUTH_SERVER));
	CHECK(!job_has_cred(&r, JOB_AUTH_PROXY));
	CHECK(r.http_method == NULL);
	CHECK(!r.headers_write_only);
	/* Encoded back in place: the stored members stay as they were. */
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	CHECK(json_object_get(o, "credentials") == NULL);
	CHECK(json_object_get(o, "http_method") == NULL);
	CHECK(json_object_get(o, "headers_write_only") == NULL);
	CHECK_EQ_STR(json_string_value(json_object_get(o, "user")), "alice");
	CHECK_EQ_STR(json_string_value(json_object_get(o, "password")), "pw");
	job_rec_clear(&r);
	json_decref(o);
}

static void
test_new_fields_round_trip(void)
{
	json_t *o = json_pack("{s:s, s:s}", "id", "aaaaaaaa-0000-4000-8000-000000000002", "state",
	                      "SUSPENDED");
	struct job_rec r;

	CHECK(o != NULL);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_INT(job_cred_set(&r.cred[JOB_AUTH_PROXY][JOB_AUTH_DIGEST], "bob", "s"), 0);
	CHECK_EQ_INT(job_cred_set(&r.cred[JOB_AUTH_SERVER][JOB_AUTH_NEGOTIATE], "carol", NULL), 0);
	CHECK_EQ_INT(rec_set_str(&r.http_method, "POST"), 0);
	r.headers_write_only = true;
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	CHECK_EQ_INT(json_array_size(json_object_get(o, "credentials")), 2);
	CHECK(json_object_get(o, "user") == NULL); /* no server basic one */
	job_rec_clear(&r);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_STR(r.cred[JOB_AUTH_PROXY][JOB_AUTH_DIGEST].user, "bob");
	CHECK_EQ_STR(r.cred[JOB_AUTH_PROXY][JOB_AUTH_DIGEST].password, "s");
	CHECK_EQ_STR(r.cred[JOB_AUTH_SERVER][JOB_AUTH_NEGOTIATE].password, "");
	CHECK_EQ_STR(r.http_method, "POST");
	CHECK(r.headers_write_only);
	/* Removing them all takes the members away again. */
	CHECK_EQ_INT(job_cred_set(&r.cred[JOB_AUTH_PROXY][JOB_AUTH_DIGEST], NULL, NULL), 0);
	CHECK_EQ_INT(job_cred_set(&r.cred[JOB_AUTH_SERVER][JOB_AUTH_NEGOTIATE], NULL, NULL), 0);
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	CHECK(json_object_get(o, "credentials") == NULL);
	job_rec_clear(&r);
	/* A damaged method is refused on read, never sent. */
	CHECK_EQ_INT(json_object_set_new(o, "http_method", json_string("GET /x HTTP/1.1\r\nX: y")), 0);
	CHECK_EQ_INT(job_rec_decode(o, &r), BG_ECORRUPT);
	job_rec_clear(&r);
	json_decref(o);
}

static void
test_names_and_tokens(void)
{
	enum job_auth_target t;
	enum job_auth_scheme sc;

	CHECK_EQ_INT(job_auth_target_parse("proxy", &t), 0);
	CHECK_EQ_INT(t, JOB_AUTH_PROXY);
	CHECK_EQ_INT(job_auth_target_parse("Proxy", &t), BG_EINVAL);
	CHECK_EQ_INT(job_auth_scheme_parse("negotiate", &sc), 0);
	CHECK_EQ_INT(sc, JOB_AUTH_NEGOTIATE);
	CHECK_EQ_INT(job_auth_scheme_parse("passport", &sc), BG_ENOTIMPL);
	CHECK_EQ_INT(job_auth_scheme_parse("kerberos", &sc), BG_EINVAL);
	CHECK_EQ_INT(job_auth_scheme_parse(NULL, &sc), BG_EINVAL);
	CHECK(job_http_method_valid("POST"));
	CHECK(job_http_method_valid("M-SEARCH"));
	CHECK(job_http_method_valid("x!#$%&'*+-.^_`|~9"));
	CHECK(!job_http_method_valid(""));
	CHECK(!job_http_method_valid(NULL));
	CHECK(!job_http_method_valid("PO ST"));
	CHECK(!job_http_method_valid("GET\r\n"));
	CHECK(!job_http_method_valid("A(B)"));
	CHECK(!job_http_method_valid("HEAD"));
	CHECK(!job_http_method_valid("CONNECT"));
	CHECK(job_http_method_valid("head")); /* methods are case-sensitive */
	CHECK(!job_http_method_valid("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF")); /* 32 bytes */
	CHECK(job_http_method_valid("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDE"));
}

int
main(void)
{
	test_old_record_unchanged();
	test_new_fields_round_trip();
	test_names_and_tokens();
	return check_done();
}
