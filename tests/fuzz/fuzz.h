/*
 * fuzz.h - what the fuzz harnesses share: the libFuzzer entry point and a
 * few helpers that turn the raw input into C strings and parts.
 *
 * Every harness defines LLVMFuzzerTestOneInput() and nothing else that
 * libFuzzer calls.  Built with BGCOPY_FUZZ it links libFuzzer's main();
 * otherwise replay_main.c runs it over corpus files (ctest label `fuzz`).
 * A harness that needs a store, a server or a temporary folder makes it once
 * per process, on its first input, and leaves nothing unreachable behind.
 */
#ifndef BG_FUZZ_H
#define BG_FUZZ_H

#include <ftw.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parts of an input are separated by this line (see fuzz_split). */
#define FUZZ_SEP "\n%%\n"

struct fuzz_part {
	const uint8_t *p;
	size_t n;
};

/* A NUL-terminated copy of n bytes at p (embedded NULs cut it short for the
 * callee, as they would in a header or an argument); NULL when out of
 * memory.  The caller frees it. */
static inline char *
fuzz_str(const void *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s != NULL) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* Splits data at each FUZZ_SEP into at most max parts (the last one takes
 * the rest); returns how many parts were filled (at least 1). */
static inline size_t
fuzz_split(const uint8_t *data, size_t size, struct fuzz_part *parts, size_t max)
{
	size_t n = 0, seplen = sizeof(FUZZ_SEP) - 1;

	while (n + 1 < max && size > 0) {
		const uint8_t *s = memmem(data, size, FUZZ_SEP, seplen);

		if (s == NULL)
			break;
		parts[n].p = data;
		parts[n].n = (size_t)(s - data);
		n++;
		size -= (size_t)(s - data) + seplen;
		data = s + seplen;
	}
	parts[n].p = data;
	parts[n].n = size;
	return n + 1;
}

/* Stops the process with a message naming the broken property: the
 * sanitizers and libFuzzer report the abort with the input. */
#define FUZZ_ASSERT(cond)                                                              \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: fuzz property failed: %s\n", __FILE__,   \
			        __LINE__, #cond);                                      \
			abort();                                                       \
		}                                                                      \
	} while (0)

static inline int
fuzz_rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path);
}

/* Removes a temporary folder and everything in it (harnesses' atexit). */
static inline void
fuzz_rm_tree(const char *path)
{
	nftw(path, fuzz_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

#endif /* BG_FUZZ_H */
