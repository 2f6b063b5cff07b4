/*
 * prog.c - what the programs (bgcopy, bgcopy-peerd) share in talking to
 * people: "PROG: message" on stderr.  The only printing in the core: the
 * library itself never prints, its callers decide what to say.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cache.h"

void bg_vcomplain(const char *prog, const char *fmt, va_list ap)
{
	char small[1024], *msg = small, *big = NULL;
	va_list again;
	int n;

	va_copy(again, ap);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	/* A long message (a URL of 8 KiB) is printed whole when memory allows. */
	if (n >= (int)sizeof(small) && (big = malloc((size_t)n + 1)) != NULL) {
		vsnprintf(big, (size_t)n + 1, fmt, again);
		msg = big;
	}
	va_end(again);
	/* One call, one line: the threads of a program complain too. */
	fprintf(stderr, "%s: %s\n", prog, n < 0 ? fmt : msg);
	free(big);
}

void bg_complain(const char *prog, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bg_vcomplain(prog, fmt, ap);
	va_end(ap);
}
