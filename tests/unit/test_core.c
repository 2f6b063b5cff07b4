/*
 * test_core.c - the core primitives outside the store: strict numbers,
 * safe text, files replaced whole, the programs' complaints, the clock's
 * test offset.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "check.h"

static int u64(const char *s, uint64_t max, uint64_t *out)
{
	return bg_parse_u64(s, strlen(s), max, out);
}

static int i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	return bg_parse_i64(s, strlen(s), min, max, out);
}

static void test_parse_u64(void)
{
	uint64_t v = 7;

	CHECK_EQ_INT(u64("0", UINT64_MAX, &v), 0);
	CHECK_EQ_INT(v, 0);
	CHECK_EQ_INT(u64("0042", 100, &v), 0);
	CHECK_EQ_INT(v, 42);
	CHECK_EQ_INT(u64("18446744073709551615", UINT64_MAX, &v), 0);
	CHECK(v == UINT64_MAX);
	/* Out of range: never wrapped nor clamped, *out untouched. */
	v = 7;
	CHECK_EQ_INT(u64("18446744073709551616", UINT64_MAX, &v), BG_ELIMIT);
	CHECK_EQ_INT(u64("99999999999999999999999", UINT64_MAX, &v), BG_ELIMIT);
	CHECK_EQ_INT(u64("65536", 65535, &v), BG_ELIMIT);
	CHECK_EQ_INT(u64("1", 0, &v), BG_ELIMIT);
	CHECK_EQ_INT(v, 7);
	CHECK_EQ_INT(u64("65535", 65535, &v), 0);
	CHECK_EQ_INT(v, 65535);
	/* Nothing but digits. */
	CHECK_EQ_INT(u64("", 10, &v), BG_EINVAL);
	CHECK_EQ_INT(u64(" 1", 10, &v), BG_EINVAL);
	CHECK_EQ_INT(u64("1 ", 10, &v), BG_EINVAL);
	CHECK_EQ_INT(u64("+1", 10, &v), BG_EINVAL);
	CHECK_EQ_INT(u64("-1", 10, &v), BG_EINVAL);
	CHECK_EQ_INT(u64("0x1", 10, &v), BG_EINVAL);
	CHECK_EQ_INT(u64("1e3", 10000, &v), BG_EINVAL);
	CHECK_EQ_INT(bg_parse_u64(NULL, 1, 10, &v), BG_EINVAL);
	CHECK_EQ_INT(bg_parse_u64("1", 1, 10, NULL), BG_EINVAL);
	/* Exactly n bytes: what follows is not read, a NUL inside is no digit. */
	CHECK_EQ_INT(bg_parse_u64("12,sig", 2, 100, &v), 0);
	CHECK_EQ_INT(v, 12);
	CHECK_EQ_INT(bg_parse_u64("1\0002", 3, 1000, &v), BG_EINVAL);
}

static void test_parse_i64(void)
{
	int64_t v = 7;

	CHECK_EQ_INT(i64("-0", INT64_MIN, INT64_MAX, &v), 0);
	CHECK_EQ_INT(v, 0);
	CHECK_EQ_INT(i64("-86400", INT64_MIN, INT64_MAX, &v), 0);
	CHECK_EQ_INT(v, -86400);
	CHECK_EQ_INT(i64("9223372036854775807", INT64_MIN, INT64_MAX, &v), 0);
	CHECK(v == INT64_MAX);
	CHECK_EQ_INT(i64("-9223372036854775808", INT64_MIN, INT64_MAX, &v), 0);
	CHECK(v == INT64_MIN);
	v = 7;
	CHECK_EQ_INT(i64("9223372036854775808", INT64_MIN, INT64_MAX, &v), BG_ELIMIT);
	CHECK_EQ_INT(i64("-9223372036854775809", INT64_MIN, INT64_MAX, &v), BG_ELIMIT);
	CHECK_EQ_INT(i64("-11", -10, 10, &v), BG_ELIMIT);
	CHECK_EQ_INT(i64("11", -10, 10, &v), BG_ELIMIT);
	CHECK_EQ_INT(i64("-", -10, 10, &v), BG_EINVAL);
	CHECK_EQ_INT(i64("--1", -10, 10, &v), BG_EINVAL);
	CHECK_EQ_INT(i64("+1", -10, 10, &v), BG_EINVAL);
	CHECK_EQ_INT(i64(" -1", -10, 10, &v), BG_EINVAL);
	CHECK_EQ_INT(i64("1", 10, -10, &v), BG_EINVAL);
	CHECK_EQ_INT(v, 7);
	CHECK_EQ_INT(i64("-10", -10, 10, &v), 0);
	CHECK_EQ_INT(v, -10);
}

static void safe(const char *in, unsigned flags, const char *want)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "%s", in);
	bg_text_safe_inplace(buf, flags);
	CHECK_EQ_STR(buf, want);
	CHECK(bg_text_is_safe(in, flags) == (strcmp(in, want) == 0));
}

static void test_text(void)
{
	safe("plain text, 100%", 0, "plain text, 100%");
	safe("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	safe("a\tb", 0, "a?b");
	safe("a\tb", BG_TEXT_TAB, "a\tb");
	safe("bell\a esc\x1b[2J del\x7f", BG_TEXT_TAB, "bell? esc?[2J del?");
	safe("cr\r\nlf", 0, "cr??lf");
	/* Invalid UTF-8, byte by byte: a lone continuation, a cut sequence,
	 * an overlong '/', a surrogate, a code point past U+10FFFF. */
	safe("\x80x", 0, "?x");
	safe("\xe2\x82", 0, "??");
	safe("\xc0\xaf", 0, "??");
	safe("\xed\xa0\x80", 0, "???");
	safe("\xf4\x90\x80\x80", 0, "????");
	safe("", 0, "");
	CHECK(!bg_text_is_safe(NULL, 0));
}

static char dir[] = "/tmp/bgcore-test-XXXXXX";

static void test_file(void)
{
	char path[128], got[32];
	struct stat sb;
	mode_t old = umask(022);
	FILE *f;

	snprintf(path, sizeof(path), "%s/port", dir);
	CHECK_EQ_INT(bg_file_write_atomic(path, "1234\n", 5, 0644), 0);
	CHECK_EQ_INT(bg_file_write_atomic(path, "80\n", 3, 0644), 0);
	CHECK((f = fopen(path, "r")) != NULL);
	if (f != NULL) {
		size_t n = fread(got, 1, sizeof(got) - 1, f);

		got[n] = '\0';
		fclose(f);
		CHECK_EQ_STR(got, "80\n");
	}
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0644);
	CHECK_EQ_INT(bg_file_write_atomic(path, "", 0, 0600), 0);
	CHECK(stat(path, &sb) == 0 && sb.st_size == 0 && (sb.st_mode & 0777) == 0600);
	/* A folder that is not there: nothing is left behind, nor written. */
	snprintf(path, sizeof(path), "%s/none/port", dir);
	CHECK_EQ_INT(bg_file_write_atomic(path, "1", 1, 0644), BG_ENOENT);
	CHECK_EQ_INT(bg_file_write_atomic(NULL, "1", 1, 0644), BG_EINVAL);
	CHECK_EQ_INT(bg_fsync_path(dir, true), 0);
	CHECK_EQ_INT(bg_fsync_path(path, false), BG_ENOENT);
	umask(old);
}

static void test_complain(void)
{
	char path[128], got[16384], *big;
	int saved = dup(2), fd;
	FILE *f;
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/stderr", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	big = malloc(9001);
	if (fd < 0 || saved < 0 || big == NULL) {
		CHECK(!"stderr redirected");
		free(big);
		return;
	}
	memset(big, 'u', 9000);
	big[9000] = '\0';
	fflush(stderr);
	dup2(fd, 2);
	bg_complain("prog", "cannot read %s: %s", "x", "why");
	bg_complain("prog", "%s", big);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(fd);
	if ((f = fopen(path, "r")) != NULL) {
		n = fread(got, 1, sizeof(got) - 1, f);
		fclose(f);
	}
	got[n] = '\0';
	/* Whole, however long. */
	CHECK_EQ_INT(n, strlen("prog: cannot read x: why\n") + strlen("prog: \n") + 9000);
	CHECK(strncmp(got, "prog: cannot read x: why\nprog: uuu", 34) == 0);
	free(big);
}

static void test_clock(void)
{
	int64_t a, b;

	/* The documented way for tests to move the clock. */
	unsetenv(BG_CLOCK_OFFSET_ENV);
	a = bg_now();
	setenv(BG_CLOCK_OFFSET_ENV, "-86400", 1);
	b = bg_now();
	CHECK(b - a <= -86400 + 1 && b - a >= -86400);
	CHECK(bg_now_ns() / 1000000000 <= b + 1);
	/* Not a number (or too large): no offset. */
	setenv(BG_CLOCK_OFFSET_ENV, "+5", 1);
	CHECK(bg_now() - a <= 1);
	setenv(BG_CLOCK_OFFSET_ENV, "1099511627776", 1);
	CHECK(bg_now() - a <= 1);
	setenv(BG_CLOCK_OFFSET_ENV, "1099511627775", 1);
	CHECK(bg_now() - a >= 1099511627775);
	unsetenv(BG_CLOCK_OFFSET_ENV);
}

/* The node id: made once, the same on every later call and for every
 * process; a damaged file is an error, not replaced; without the home a
 * random id each time. */
static void test_node_id(void)
{
	char home[512], path[600], a[BG_NODE_ID_LEN + 1], b[BG_NODE_ID_LEN + 1];
	FILE *f;

	snprintf(home, sizeof(home), "%s/node", dir);
	CHECK_EQ_INT(bg_node_id(home, a), 0); /* no home yet */
	CHECK_EQ_INT(strlen(a), BG_NODE_ID_LEN);
	CHECK_EQ_INT(bg_node_id(home, b), 0);
	CHECK(strcmp(a, b) != 0);
	snprintf(path, sizeof(path), "%s/node-id", home);
	CHECK(access(path, F_OK) != 0);
	CHECK_EQ_INT(mkdir(home, 0700), 0);
	CHECK_EQ_INT(bg_node_id(home, a), 0);
	CHECK_EQ_INT(bg_node_id(home, b), 0);
	CHECK_EQ_STR(a, b);
	for (size_t i = 0; i < BG_NODE_ID_LEN; i++)
		CHECK(strchr("0123456789abcdef", a[i]) != NULL);
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (f != NULL) {
		fputs("not an id\n", f);
		fclose(f);
	}
	CHECK_EQ_INT(bg_node_id(home, b), BG_ECORRUPT);
}

/* The key fingerprint: "none" without a key, 16 hex digits with one, the
 * same for the same key, another for another key. */
static void test_key_fingerprint(void)
{
	static const unsigned char k1[] = "0123456789abcdef-key-one";
	static const unsigned char k2[] = "0123456789abcdef-key-two";
	char a[PEER_KEY_FP_LEN + 1], b[PEER_KEY_FP_LEN + 1];

	CHECK_EQ_INT(peer_key_fingerprint(NULL, 0, a), 0);
	CHECK_EQ_STR(a, "none");
	CHECK_EQ_INT(peer_key_fingerprint(k1, sizeof(k1) - 1, a), 0);
	CHECK_EQ_INT(strlen(a), PEER_KEY_FP_LEN);
	CHECK_EQ_INT(peer_key_fingerprint(k1, sizeof(k1) - 1, b), 0);
	CHECK_EQ_STR(a, b);
	CHECK_EQ_INT(peer_key_fingerprint(k2, sizeof(k2) - 1, b), 0);
	CHECK(strcmp(a, b) != 0);
	CHECK(strstr((const char *)k1, a) == NULL);
}

int main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_parse_u64();
	test_parse_i64();
	test_text();
	test_file();
	test_complain();
	test_clock();
	test_node_id();
	test_key_fingerprint();
	{
		char cmd[64];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	return check_done();
}
