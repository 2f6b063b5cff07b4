/* waitparse.c - the X-Bgcopy-Wait request field, an RFC 8941 dictionary. */
#include <stdint.h>
#include <string.h>

#include "peerd.h"

static void
skip_ows(const char **p)
{
	while (**p == ' ' || **p == '\t')
		(*p)++;
}

static void
skip_sp(const char **p)
{
	while (**p == ' ')
		(*p)++;
}

/* key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )
 * (RFC 8941 section 3.1.2). */
static size_t
read_key(const char *p)
{
	size_t n = 0;

	if (!((p[0] >= 'a' && p[0] <= 'z') || p[0] == '*'))
		return 0;
	for (n = 1; (p[n] >= 'a' && p[n] <= 'z') || (p[n] >= '0' && p[n] <= '9') ||
	            p[n] == '_' || p[n] == '-' || p[n] == '.' || p[n] == '*';
	     n++)
		;
	return n;
}

/* A bare item we do not need (another member's value): an Integer or
 * Decimal, a String, a Token, a Byte Sequence or a Boolean, read loosely
 * but never past a comma outside a string.  False on a syntax error. */
static bool
skip_bare_item(const char **p)
{
	const char *s = *p;

	if (*s == '"') {
		for (s++; *s != '"'; s++) {
			if (*s == '\0')
				return false;
			if (*s == '\\' && s[1] != '\0')
				s++;
		}
		*p = s + 1;
		return true;
	}
	if (*s == '\0' || *s == ',' || *s == ';' || *s == ' ' || *s == '\t')
		return false;
	while (*s != '\0' && *s != ',' && *s != ';' && *s != ' ' && *s != '\t')
		s++;
	*p = s;
	return true;
}

/* Parameters after an item: *( ";" *SP key [ "=" bare-item ] ). */
static bool
skip_params(const char **p)
{
	while (**p == ';') {
		size_t n;

		(*p)++;
		skip_sp(p);
		if ((n = read_key(*p)) == 0)
			return false;
		*p += n;
		if (**p == '=') {
			(*p)++;
			if (!skip_bare_item(p))
				return false;
		}
	}
	return true;
}

int
peerd_wait_parse(const char *value, uint64_t *ms, uint64_t *min)
{
	const char *p = value;
	uint64_t new_ms = *ms, new_min = *min;

	if (p == NULL)
		return BG_EINVAL;
	skip_sp(&p);
	if (*p == '\0')
		return 0; /* an empty dictionary: nothing asked */
	for (;;) {
		size_t n = read_key(p);
		uint64_t *target = NULL;

		if (n == 0)
			return BG_EINVAL;
		if (n == 2 && strncmp(p, "ms", 2) == 0)
			target = &new_ms;
		else if (n == 3 && strncmp(p, "min", 3) == 0)
			target = &new_min;
		p += n;
		if (*p == '=') {
			p++;
			if (target != NULL) {
				/* sf-integer: at most 15 digits; no sign (a negative wait
				 * means nothing), no fraction (a Decimal is not an
				 * Integer). */
				size_t d = strspn(p, "0123456789");

				if (d == 0 || d > 15 || p[d] == '.' ||
				    bg_parse_u64(p, d, UINT64_MAX, target) != 0)
					return BG_EINVAL;
				p += d;
			} else if (!skip_bare_item(&p)) {
				return BG_EINVAL;
			}
		} else if (target != NULL) {
			/* A bare key is Boolean true: not an Integer. */
			return BG_EINVAL;
		}
		if (!skip_params(&p))
			return BG_EINVAL;
		skip_ows(&p);
		if (*p == '\0')
			break;
		if (*p != ',')
			return BG_EINVAL;
		p++;
		skip_ows(&p);
		if (*p == '\0')
			return BG_EINVAL; /* a trailing comma */
	}
	*ms = new_ms;
	*min = new_min;
	return 0;
}
