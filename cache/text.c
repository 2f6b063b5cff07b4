/*
 * text.c - text from outside: strict decimal numbers, and text that is
 * safe to show or send (valid UTF-8 without control characters).
 *
 * Numbers are read by one parser so that every option, header field and
 * environment variable means the same thing by a number: digits only (a
 * minus first for a signed one), no space, no plus, no base prefix, and a
 * value out of range is refused, never wrapped or clamped.
 */
#include <stdint.h>
#include <string.h>

#include "cache.h"

int bg_parse_uint(const char *s, size_t n, unsigned base, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (s == NULL || out == NULL || n == 0 || (base != 8 && base != 10 && base != 16))
		return BG_EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return BG_EINVAL;
		if (d >= base)
			return BG_EINVAL;
		if (d > max || v > (max - d) / base)
			return BG_ELIMIT;
		v = v * base + d;
	}
	*out = v;
	return 0;
}

int bg_parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	return bg_parse_uint(s, n, 10, max, out);
}

int bg_parse_i64(const char *s, size_t n, int64_t min, int64_t max, int64_t *out)
{
	int neg = n > 0 && s != NULL && s[0] == '-';
	uint64_t mag;
	int64_t v;
	int rc;

	if (out == NULL || min > max)
		return BG_EINVAL;
	/* The magnitude of INT64_MIN is one more than INT64_MAX. */
	rc = bg_parse_u64(neg ? s + 1 : s, neg ? n - 1 : n,
	                  neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &mag);
	if (rc != 0)
		return rc;
	v = !neg ? (int64_t)mag : mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
	if (v < min || v > max)
		return BG_ELIMIT;
	*out = v;
	return 0;
}

int bg_parse_bytes(const char *s, uint64_t max, uint64_t *out)
{
	static const char units[] = "KMGT";
	const char *end, *u;
	uint64_t v;
	int rc;

	if (s == NULL || out == NULL)
		return BG_EINVAL;
	end = s + strspn(s, "0123456789");
	if ((rc = bg_parse_u64(s, (size_t)(end - s), UINT64_MAX, &v)) != 0)
		return rc;
	if (*end != '\0') {
		if ((u = strchr(units, end[0] & ~0x20)) == NULL || (end[0] & ~0x20) == 0 ||
		    (end[1] != '\0' && strcmp(end + 1, "iB") != 0 && strcmp(end + 1, "B") != 0))
			return BG_EINVAL;
		for (const char *p = units; p <= u; p++) {
			if (v > UINT64_MAX / 1024)
				return BG_ELIMIT;
			v *= 1024;
		}
	}
	if (v > max)
		return BG_ELIMIT;
	*out = v;
	return 0;
}

/* Length of the character at p (1-4 bytes) when it is valid UTF-8 and, if
 * ASCII, not a control character (a tab only with BG_TEXT_TAB); 0 when it
 * is neither.  Reads no further than a NUL. */
static size_t safe_char_len(const unsigned char *p, unsigned flags)
{
	size_t n;
	uint32_t c;

	if (p[0] < 0x80) {
		if (p[0] == '\t')
			return flags & BG_TEXT_TAB ? 1 : 0;
		return p[0] < 0x20 || p[0] == 0x7F ? 0 : 1;
	}
	if (p[0] >= 0xC2 && p[0] <= 0xDF)
		n = 2, c = p[0] & 0x1F;
	else if (p[0] >= 0xE0 && p[0] <= 0xEF)
		n = 3, c = p[0] & 0x0F;
	else if (p[0] >= 0xF0 && p[0] <= 0xF4)
		n = 4, c = p[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3F);
	}
	/* Overlong forms, surrogates and code points past U+10FFFF. */
	if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10FFFF)) ||
	    (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	return n;
}

void bg_text_safe_inplace(char *s, unsigned flags)
{
	unsigned char *p = (unsigned char *)s;

	while (*p != '\0') {
		size_t n = safe_char_len(p, flags);

		if (n == 0)
			*p++ = '?';
		else
			p += n;
	}
}

bool bg_text_is_safe(const char *s, unsigned flags)
{
	const unsigned char *p = (const unsigned char *)s;

	if (s == NULL)
		return false;
	while (*p != '\0') {
		size_t n = safe_char_len(p, flags);

		if (n == 0)
			return false;
		p += n;
	}
	return true;
}
