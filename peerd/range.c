/* range.c - the single-range subset of HTTP Range (RFC 9110 section 14.2). */
#include <stdint.h>
#include <strings.h>

#include "peerd.h"

/* Reads decimal digits at *p, saturating at UINT64_MAX.  Returns the number
 * of digits read (0: none). */
static size_t
read_number(const char **p, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	while (*s >= '0' && *s <= '9') {
		unsigned d = (unsigned)(*s - '0');

		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
		s++;
	}
	*out = v;
	size_t n = (size_t)(s - *p);
	*p = s;
	return n;
}

static int
only_space_left(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '\0';
}

enum peerd_range
peerd_range_parse(const char *value, uint64_t size, uint64_t *start, uint64_t *len)
{
	const char *p = value;
	uint64_t first, last;

	if (p == NULL)
		return PEERD_RANGE_NONE;
	while (*p == ' ' || *p == '\t')
		p++;
	/* The range unit is case-insensitive; no whitespace around '='. */
	if (strncasecmp(p, "bytes=", 6) != 0)
		return PEERD_RANGE_NONE;
	p += 6;
	if (*p == '-') {
		/* suffix-range: the last N bytes. */
		p++;
		if (read_number(&p, &last) == 0 || !only_space_left(p))
			return PEERD_RANGE_NONE;
		if (last == 0 || size == 0)
			return PEERD_RANGE_UNSATISFIABLE;
		*len = last < size ? last : size;
		*start = size - *len;
		return PEERD_RANGE_OK;
	}
	if (read_number(&p, &first) == 0 || *p != '-')
		return PEERD_RANGE_NONE;
	p++;
	if (*p >= '0' && *p <= '9') {
		(void)read_number(&p, &last);
		if (last < first)
			return PEERD_RANGE_NONE;
	} else {
		last = UINT64_MAX;
	}
	/* Anything after the range, a comma above all, means several ranges or
	 * a syntax error: both are served as if there were no Range. */
	if (!only_space_left(p))
		return PEERD_RANGE_NONE;
	if (first >= size)
		return PEERD_RANGE_UNSATISFIABLE;
	if (last > size - 1)
		last = size - 1;
	*start = first;
	*len = last - first + 1;
	return PEERD_RANGE_OK;
}
