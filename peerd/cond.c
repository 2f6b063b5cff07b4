/*
 * cond.c - the parsers behind conditional requests (RFC 9110 section 13):
 * entity-tag lists for If-Match / If-None-Match and HTTP-dates for
 * If-Modified-Since / If-Unmodified-Since (and the stored Last-Modified
 * they are compared with).  Pure functions of their arguments.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "peerd.h"

static bool
is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* etagc = %x21 / %x23-7E / obs-text (RFC 9110 section 8.8.3). */
static bool
is_etagc(unsigned char c)
{
	return c == 0x21 || (c >= 0x23 && c != 0x7f);
}

/* Reads one entity-tag at *p: [ "W/" ] DQUOTE *etagc DQUOTE.  On success
 * *tag and *len give the opaque-tag (quotes included), *weak its prefix,
 * and *p is moved past it. */
static bool
read_etag(const char **p, const char **tag, size_t *len, bool *weak)
{
	const char *s = *p;

	*weak = false;
	/* The weak prefix is case-sensitive: %s"W/". */
	if (s[0] == 'W' && s[1] == '/') {
		*weak = true;
		s += 2;
	}
	if (*s != '"')
		return false;
	const char *start = s++;
	while (is_etagc((unsigned char)*s))
		s++;
	if (*s != '"')
		return false;
	s++;
	*tag = start;
	*len = (size_t)(s - start);
	*p = s;
	return true;
}

enum peerd_match
peerd_etag_match(const char *field, const char *etag, bool weak_compare)
{
	const char *p = field, *ours = etag;
	bool ours_weak = false;
	size_t ours_len;

	if (field == NULL || etag == NULL)
		return PEERD_MATCH_INVALID;
	if (ours[0] == 'W' && ours[1] == '/') {
		ours_weak = true;
		ours += 2;
	}
	ours_len = strlen(ours);
	while (is_ows(*p))
		p++;
	if (*p == '*') {
		/* "*" alone matches any current representation; the caller only
		 * asks when there is one. */
		p++;
		while (is_ows(*p))
			p++;
		return *p == '\0' ? PEERD_MATCH_YES : PEERD_MATCH_INVALID;
	}
	/* #entity-tag: elements separated by commas and optional whitespace;
	 * empty elements are allowed (RFC 9110 section 5.6.1). */
	enum peerd_match res = PEERD_MATCH_NO;
	bool any = false;
	for (;;) {
		const char *tag;
		size_t len;
		bool weak;

		while (is_ows(*p) || *p == ',')
			p++;
		if (*p == '\0')
			break;
		if (!read_etag(&p, &tag, &len, &weak))
			return PEERD_MATCH_INVALID;
		any = true;
		/* Strong comparison: neither is weak and the opaque-tags are the
		 * same; weak comparison: the opaque-tags are the same (RFC 9110
		 * section 8.8.3.2). */
		if (len == ours_len && memcmp(tag, ours, len) == 0 &&
		    (weak_compare || (!weak && !ours_weak)))
			res = PEERD_MATCH_YES;
		while (is_ows(*p))
			p++;
		if (*p != ',' && *p != '\0')
			return PEERD_MATCH_INVALID;
	}
	return any ? res : PEERD_MATCH_INVALID;
}

/* ---- HTTP-date (RFC 9110 section 5.6.7) ------------------------------------ */

static const char *const month_names[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const day_names[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const day_names_long[7] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                              "Friday", "Saturday", "Sunday"};

/* Reads exactly n digits. */
static bool
read_digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		char c = (*p)[i];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*out = v;
	return true;
}

static bool
read_literal(const char **p, const char *lit)
{
	size_t n = strlen(lit);

	if (strncmp(*p, lit, n) != 0)
		return false;
	*p += n;
	return true;
}

static bool
read_month(const char **p, int *mon)
{
	for (int i = 0; i < 12; i++)
		if (strncmp(*p, month_names[i], 3) == 0) {
			*p += 3;
			*mon = i + 1;
			return true;
		}
	return false;
}

/* Reads one of names (case-sensitive, as the grammar's %s strings). */
static bool
read_day_name(const char **p, const char *const names[7])
{
	for (int i = 0; i < 7; i++)
		if (read_literal(p, names[i]))
			return true;
	return false;
}

/* hour ":" minute ":" second */
static bool
read_time_of_day(const char **p, int *h, int *mi, int *s)
{
	return read_digits(p, 2, h) && read_literal(p, ":") && read_digits(p, 2, mi) &&
	       read_literal(p, ":") && read_digits(p, 2, s);
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + doe - 719468;
}

static bool
valid_date(int y, int mon, int d, int h, int mi, int s)
{
	static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	if (mon < 1 || mon > 12 || d < 1 || d > mdays[mon - 1] || (mon == 2 && d == 29 && !leap))
		return false;
	/* second = 2DIGIT allows 60 (a leap second); it counts as :59. */
	return h <= 23 && mi <= 59 && s <= 60;
}

int
peerd_http_date_parse(const char *value, int64_t now, int64_t *out)
{
	const char *p = value;
	int y = 0, mon = 0, d = 0, h = 0, mi = 0, s = 0;

	if (value == NULL)
		return BG_EINVAL;
	while (is_ows(*p))
		p++;
	value = p;
	if (read_day_name(&p, day_names) && read_literal(&p, ", ")) {
		/* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
		if (!(read_digits(&p, 2, &d) && read_literal(&p, " ") && read_month(&p, &mon) &&
		      read_literal(&p, " ") && read_digits(&p, 4, &y) && read_literal(&p, " ") &&
		      read_time_of_day(&p, &h, &mi, &s) && read_literal(&p, " GMT")))
			return BG_EINVAL;
	} else if (p = value, read_day_name(&p, day_names) && read_literal(&p, " ")) {
		/* asctime-date: Sun Nov  6 08:49:37 1994 (day: 2DIGIT or SP 1DIGIT) */
		if (!read_month(&p, &mon) || !read_literal(&p, " "))
			return BG_EINVAL;
		if (*p == ' ') {
			p++;
			if (!read_digits(&p, 1, &d))
				return BG_EINVAL;
		} else if (!read_digits(&p, 2, &d)) {
			return BG_EINVAL;
		}
		if (!(read_literal(&p, " ") && read_time_of_day(&p, &h, &mi, &s) &&
		      read_literal(&p, " ") && read_digits(&p, 4, &y)))
			return BG_EINVAL;
	} else if (p = value, read_day_name(&p, day_names_long) && read_literal(&p, ", ")) {
		/* rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT */
		int yy;

		if (!(read_digits(&p, 2, &d) && read_literal(&p, "-") && read_month(&p, &mon) &&
		      read_literal(&p, "-") && read_digits(&p, 2, &yy) && read_literal(&p, " ") &&
		      read_time_of_day(&p, &h, &mi, &s) && read_literal(&p, " GMT")))
			return BG_EINVAL;
		/* A two-digit year more than 50 years in the future is the most
		 * recent past year with those digits (RFC 9110 section 5.6.7). */
		int64_t this_year = 1970 + now / 31556952; /* mean Gregorian year, seconds */
		y = (int)(this_year - this_year % 100) + yy;
		if (y > this_year + 50)
			y -= 100;
	} else {
		return BG_EINVAL;
	}
	while (is_ows(*p))
		p++;
	if (*p != '\0' || !valid_date(y, mon, d, h, mi, s))
		return BG_EINVAL;
	if (s == 60)
		s = 59;
	*out = days_from_civil(y, mon, d) * 86400 + h * 3600 + mi * 60 + s;
	return 0;
}
