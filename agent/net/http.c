/* http.c - the small pieces of HTTP response parsing that the origin and
 * peer clients share (libcurl hands header callbacks one raw line each). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "net.h"
#include "net_int.h"

long
http_status_line(const char *line, size_t n)
{
	const char *sp, *p, *end = line + n;
	uint64_t code;

	if (n < 5 || strncmp(line, "HTTP/", 5) != 0)
		return -1;
	if ((sp = memchr(line, ' ', n)) == NULL)
		return 0;
	/* The digits after the first space (RFC 9112 section 4: 3DIGIT; more
	 * are read too, so that callers refuse a status past 999). */
	for (p = sp + 1; p < end && p - (sp + 1) < 15 && *p >= '0' && *p <= '9'; p++)
		;
	if (bg_parse_u64(sp + 1, (size_t)(p - (sp + 1)), UINT64_MAX, &code) != 0)
		return 0;
	return (long)code;
}

bool
http_header_split(const char *line, size_t n, const char **name, size_t *namelen,
                  const char **value, size_t *valuelen)
{
	const char *colon = memchr(line, ':', n);

	if (colon == NULL || colon == line)
		return false;
	*name = line;
	*namelen = (size_t)(colon - line);
	*value = colon + 1;
	*valuelen = n - *namelen - 1;
	return true;
}

bool
http_header_is(const char *name, size_t namelen, const char *want)
{
	return namelen == strlen(want) && strncasecmp(name, want, namelen) == 0;
}

void
http_value_trim(const char **p, size_t *n)
{
	while (*n > 0 && (**p == ' ' || **p == '\t'))
		(*p)++, (*n)--;
	while (*n > 0 && isspace((unsigned char)(*p)[*n - 1]))
		(*n)--;
}

char *
http_value_dup(const char *p, size_t n, size_t max)
{
	http_value_trim(&p, &n);
	if (n > max)
		return NULL;
	return strndup(p, n);
}

bool
http_value_u64(const char *p, size_t n, uint64_t *out)
{
	http_value_trim(&p, &n);
	if (n > HTTP_U64_CHARS_MAX)
		return false;
	/* The value ends at a NUL, as every header value kept as a C string
	 * (http_value_dup) does. */
	return bg_parse_uint(p, strnlen(p, n), 10, UINT64_MAX, out) == 0;
}

/* One number of a Content-Range (RFC 9110 section 14.4: 1*DIGIT) at *p,
 * stopping before end or the first byte that is not a digit. */
static bool
range_number(const char **p, const char *end, uint64_t *out)
{
	const char *s = *p;

	while (*p < end && **p >= '0' && **p <= '9')
		(*p)++;
	return bg_parse_uint(s, (size_t)(*p - s), 10, UINT64_MAX, out) == 0;
}

int
http_content_range(const char *p, size_t n, long status, struct http_content_range *out)
{
	const char *end = p + n;
	uint64_t first = 0, last = 0, total;
	bool star = false;

	/* Content-Range = range-unit SP ( range-resp / unsatisfied-range );
	 * range unit names are case-insensitive (section 14.1). */
	if (n < 6 || strncasecmp(p, "bytes ", 6) != 0)
		return BG_EPROTO;
	p += 6;
	if (status == 416) {
		/* unsatisfied-range = "*" "/" complete-length */
		if (end - p < 2 || p[0] != '*' || p[1] != '/')
			return BG_EPROTO;
		p += 2;
	} else {
		/* range-resp = incl-range "/" ( complete-length / "*" ) */
		if (!range_number(&p, end, &first) || p == end || *p++ != '-' ||
		    !range_number(&p, end, &last) || p == end || *p++ != '/')
			return BG_EPROTO;
		/* An invalid range when last-pos < first-pos. */
		if (last < first)
			return BG_EPROTO;
		star = end - p == 1 && *p == '*';
	}
	if (star) {
		out->total = -1;
	} else {
		/* A complete length the int64_t of a size holds; the range inside it. */
		if (!range_number(&p, end, &total) || p != end || total > INT64_MAX ||
		    (status != 416 && last >= total))
			return BG_EPROTO;
		out->total = (int64_t)total;
	}
	out->first = first;
	out->last = last;
	return 0;
}

void
text_make_safe(char *s)
{
	bg_text_safe_inplace(s, 0);
}

/* Value of one base64 character (RFC 4648 section 4), or -1. */
static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes exactly BG_SHA256_LEN bytes of padded base64 (44 characters, the
 * last one '='), as an RFC 8941 byte sequence carries them. */
static bool
b64_sha256(const char *p, size_t n, unsigned char out[BG_SHA256_LEN])
{
	uint32_t acc = 0;
	size_t o = 0, bits = 0;

	if (n != 44 || p[43] != '=')
		return false;
	for (size_t i = 0; i < 43; i++) {
		int v = b64_value((unsigned char)p[i]);

		if (v < 0)
			return false;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	/* 43 characters carry 258 bits: the 2 left over must be zero. */
	return o == BG_SHA256_LEN && (acc & ((1u << bits) - 1)) == 0;
}

static bool
sf_key_char(unsigned char c, bool first)
{
	if (c >= 'a' && c <= 'z')
		return true;
	if (c == '*')
		return true;
	return !first && ((c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.');
}

bool
http_digest_sha256(const char *p, size_t n, unsigned char out[BG_SHA256_LEN])
{
	const char *end;
	bool found = false;

	/* RFC 8941 section 4.2.2: a Dictionary; a member is key[=item]
	 * with parameters, members separated by "," and optional blanks.  A
	 * field that does not parse is ignored whole (section 4.2). */
	http_value_trim(&p, &n);
	end = p + n;
	while (p < end) {
		const char *key = p, *val = NULL;
		size_t keylen, vlen = 0;

		if (!sf_key_char((unsigned char)*p, true))
			return false;
		while (p < end && sf_key_char((unsigned char)*p, false))
			p++;
		keylen = (size_t)(p - key);
		if (p < end && *p == '=') {
			p++;
			if (p < end && *p == ':') {
				/* A byte sequence: ":" base64 ":". */
				const char *close = memchr(p + 1, ':', (size_t)(end - p - 1));

				if (close == NULL)
					return false;
				val = p + 1;
				vlen = (size_t)(close - val);
				p = close + 1;
			} else {
				/* Another bare item (a token, number or string): skipped
				 * up to its parameters or the next member. */
				bool quoted = p < end && *p == '"';

				if (quoted) {
					for (p++; p < end && *p != '"'; p++)
						if (*p == '\\' && p + 1 < end)
							p++;
					if (p >= end)
						return false;
					p++;
				} else {
					while (p < end && *p != ';' && *p != ',' && *p != ' ' && *p != '\t')
						p++;
				}
			}
		}
		/* Parameters: ";key[=value]"... (never quoted commas in ours). */
		while (p < end && *p == ';') {
			p++;
			while (p < end && *p != ';' && *p != ',')
				p++;
		}
		if (keylen == 7 && memcmp(key, "sha-256", 7) == 0) {
			/* The last of duplicated keys wins (section 4.2.2). */
			found = val != NULL && b64_sha256(val, vlen, out);
		}
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p == end)
			break;
		if (*p != ',')
			return false;
		p++;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p == end)
			return false; /* a trailing comma */
	}
	return found;
}

bool
http_date_strong(const char *last_modified, const char *date)
{
	time_t lm, d;

	if (last_modified == NULL || date == NULL)
		return false;
	/* curl_getdate reads the three forms RFC 9110 section 5.6.7 makes a
	 * recipient accept (IMF-fixdate, RFC 850, asctime); -1 when none. */
	lm = curl_getdate(last_modified, NULL);
	d = curl_getdate(date, NULL);
	return lm != -1 && d != -1 && d - lm >= HTTP_STRONG_DATE_SECONDS;
}

void
http_status_reason(const char *line, size_t n, char *buf, size_t len)
{
	const char *p = memchr(line, ' ', n), *end = line + n;
	size_t rest, k;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (p == NULL)
		return;
	/* "HTTP/1.1 403 Access violation\r\n": past the version and the code. */
	while (p < end && *p == ' ')
		p++;
	while (p < end && isdigit((unsigned char)*p))
		p++;
	rest = (size_t)(end - p);
	http_value_trim(&p, &rest);
	k = rest < len - 1 ? rest : len - 1;
	memcpy(buf, p, k);
	buf[k] = '\0';
	text_make_safe(buf);
}

const char *
http_reason(long status)
{
	/* RFC 9110 section 15: the statuses a proxy or origin refuses with. */
	static const struct {
		long status;
		const char *reason;
	} table[] = {
		{300, "Multiple Choices"}, {301, "Moved Permanently"}, {302, "Found"},
		{303, "See Other"}, {305, "Use Proxy"}, {307, "Temporary Redirect"},
		{308, "Permanent Redirect"}, {400, "Bad Request"}, {401, "Unauthorized"},
		{403, "Forbidden"}, {404, "Not Found"}, {405, "Method Not Allowed"},
		{407, "Proxy Authentication Required"}, {408, "Request Timeout"},
		{429, "Too Many Requests"}, {500, "Internal Server Error"}, {501, "Not Implemented"},
		{502, "Bad Gateway"}, {503, "Service Unavailable"}, {504, "Gateway Timeout"},
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].status == status)
			return table[i].reason;
	return "";
}
