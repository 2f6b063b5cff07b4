/* http.c - the small pieces of HTTP response parsing that the origin and
 * peer clients share (libcurl hands header callbacks one raw line each). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent.h"
#include "agent_int.h"

long
http_status_line(const char *line, size_t n)
{
	const char *sp;
	char code[16];
	size_t len;

	if (n < 5 || strncmp(line, "HTTP/", 5) != 0)
		return -1;
	if ((sp = memchr(line, ' ', n)) == NULL)
		return 0;
	/* libcurl's header lines are not NUL-terminated: strtol must not run
	 * past the line ("HTTP/1.1 200" at the end of a buffer). */
	len = n - (size_t)(sp + 1 - line);
	if (len >= sizeof(code))
		len = sizeof(code) - 1;
	memcpy(code, sp + 1, len);
	code[len] = '\0';
	return strtol(code, NULL, 10);
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

char *
http_value_dup(const char *p, size_t n, size_t max)
{
	while (n > 0 && (*p == ' ' || *p == '\t'))
		p++, n--;
	while (n > 0 && isspace((unsigned char)p[n - 1]))
		n--;
	if (n > max)
		return NULL;
	return strndup(p, n);
}

bool
http_value_u64(const char *p, size_t n, uint64_t *out)
{
	char *v = http_value_dup(p, n, 32), *end;
	unsigned long long x;
	bool ok;

	if (v == NULL)
		return false;
	errno = 0;
	x = strtoull(v, &end, 10);
	ok = errno == 0 && end != v && *end == '\0' && isdigit((unsigned char)v[0]);
	free(v);
	if (ok)
		*out = x;
	return ok;
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0. */
static size_t
utf8_len(const unsigned char *p)
{
	size_t n;
	uint32_t c;

	if (p[0] < 0x80)
		return 1;
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

void
text_make_safe(char *s)
{
	unsigned char *p = (unsigned char *)s;

	while (*p != '\0') {
		size_t n = utf8_len(p);

		if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7F))) {
			*p++ = '?';
			continue;
		}
		p += n;
	}
}

void
http_status_reason(const char *line, size_t n, char *buf, size_t len)
{
	const char *p = memchr(line, ' ', n), *end = line + n;
	size_t k;

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
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	while (end > p && isspace((unsigned char)end[-1]))
		end--;
	k = (size_t)(end - p) < len - 1 ? (size_t)(end - p) : len - 1;
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
