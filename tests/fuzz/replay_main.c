/*
 * replay_main.c - runs a harness over corpus files without libFuzzer, so
 * that every corpus is an ordinary test in every build (gcc included).
 *
 * usage: replay_TARGET DIR|FILE...
 *
 * Each file is read into a buffer of exactly its size (so that the
 * sanitizers see any read past the input) and given to
 * LLVMFuzzerTestOneInput once.  Files of a folder run in name order.  Prints
 * how many inputs ran; exits 1 when a file cannot be read, a harness returns
 * anything but 0 or -1, or no input ran at all.  A crash is the sanitizers'
 * (or the kernel's) business: the test fails with their report.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int
run_file(const char *path, unsigned long *ran)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	struct stat sb;
	size_t n;
	int rc = 1;

	if (f == NULL || fstat(fileno(f), &sb) != 0) {
		fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
		goto out;
	}
	/* malloc(0) may give NULL; libFuzzer never passes NULL. */
	if ((buf = malloc((size_t)sb.st_size > 0 ? (size_t)sb.st_size : 1)) == NULL) {
		fprintf(stderr, "replay: out of memory for %s\n", path);
		goto out;
	}
	n = fread(buf, 1, (size_t)sb.st_size, f);
	if (n != (size_t)sb.st_size || ferror(f)) {
		fprintf(stderr, "replay: short read of %s\n", path);
		goto out;
	}
	rc = LLVMFuzzerTestOneInput(buf, n);
	if (rc != 0 && rc != -1) {
		fprintf(stderr, "replay: %s: harness returned %d\n", path, rc);
		rc = 1;
		goto out;
	}
	rc = 0;
	++*ran;
out:
	free(buf);
	if (f != NULL)
		fclose(f);
	return rc;
}

static int
by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int
run_dir(const char *dir, unsigned long *ran)
{
	struct dirent **names = NULL;
	int n = scandir(dir, &names, NULL, by_name);
	int rc = 0;

	if (n < 0) {
		fprintf(stderr, "replay: cannot list %s: %s\n", dir, strerror(errno));
		return 1;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat sb;

		if (names[i]->d_name[0] != '.' &&
		    snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name) < (int)sizeof(path) &&
		    stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
			rc |= run_file(path, ran);
		free(names[i]);
	}
	free(names);
	return rc;
}

int
main(int argc, char **argv)
{
	unsigned long ran = 0;
	int rc = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat sb;

		if (stat(argv[i], &sb) != 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			rc = 1;
		} else if (S_ISDIR(sb.st_mode)) {
			rc |= run_dir(argv[i], &ran);
		} else {
			rc |= run_file(argv[i], &ran);
		}
	}
	/* stderr: some harnesses silence stdout around noisy library calls. */
	fprintf(stderr, "%s: %lu inputs ran%s\n", argv[0], ran, rc != 0 ? ", with failures" : "");
	if (ran == 0)
		rc = 1;
	return rc;
}
