/*
 * check.h - a minimal assertion kit for the unit tests.  Each CHECK counts;
 * a failed one prints where it was and what both sides were, and the test
 * carries on so that one run shows every failure.  main() ends with
 * `return check_done();`.
 */
#ifndef BG_CHECK_H
#define BG_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_total __attribute__((unused));
static int check_failed __attribute__((unused));

static inline int check_report(int ok, const char *file, int line, const char *expr)
{
	check_total++;
	if (!ok) {
		check_failed++;
		fprintf(stderr, "%s:%d: check failed: %s\n", file, line, expr);
	}
	return ok;
}

#define CHECK(cond) check_report(!!(cond), __FILE__, __LINE__, #cond)

#define CHECK_EQ_INT(a, b)                                                          \
	do {                                                                        \
		long long check_a_ = (long long)(a);                                \
		long long check_b_ = (long long)(b);                                \
		if (!check_report(check_a_ == check_b_, __FILE__, __LINE__,         \
		                  #a " == " #b))                                    \
			fprintf(stderr, "    left:  %lld\n    right: %lld\n", check_a_, \
			        check_b_);                                          \
	} while (0)

#define CHECK_EQ_STR(a, b)                                                           \
	do {                                                                         \
		const char *check_a_ = (a);                                          \
		const char *check_b_ = (b);                                          \
		int check_ok_ = check_a_ == check_b_ ||                              \
		                (check_a_ != NULL && check_b_ != NULL &&             \
		                 strcmp(check_a_, check_b_) == 0);                   \
		if (!check_report(check_ok_, __FILE__, __LINE__, #a " == " #b))       \
			fprintf(stderr, "    left:  %s%s%s\n    right: %s%s%s\n",      \
			        check_a_ ? "\"" : "", check_a_ ? check_a_ : "(null)", \
			        check_a_ ? "\"" : "", check_b_ ? "\"" : "",           \
			        check_b_ ? check_b_ : "(null)", check_b_ ? "\"" : ""); \
	} while (0)

static inline void check_mem_diff(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a;
	const unsigned char *y = b;
	size_t i = 0;

	while (i < n && x[i] == y[i])
		i++;
	fprintf(stderr, "    first difference at byte %zu of %zu:", i, n);
	for (size_t j = i; j < n && j < i + 8; j++)
		fprintf(stderr, " %02x/%02x", x[j], y[j]);
	fprintf(stderr, " (left/right)\n");
}

#define CHECK_EQ_MEM(a, b, n)                                                     \
	do {                                                                      \
		const void *check_a_ = (a);                                       \
		const void *check_b_ = (b);                                       \
		size_t check_n_ = (n);                                            \
		int check_ok_ = check_a_ != NULL && check_b_ != NULL &&           \
		                memcmp(check_a_, check_b_, check_n_) == 0;        \
		if (!check_report(check_ok_, __FILE__, __LINE__,                  \
		                  "memcmp(" #a ", " #b ", " #n ") == 0") &&       \
		    check_a_ != NULL && check_b_ != NULL)                         \
			check_mem_diff(check_a_, check_b_, check_n_);             \
	} while (0)

/* Prints the tally; returns the process exit status (0 = all passed). */
static inline int check_done(void)
{
	printf("%d checks, %d failed\n", check_total, check_failed);
	return check_failed == 0 ? 0 : 1;
}

#endif /* BG_CHECK_H */
