/* flags.c - parsing and printing BITS security flags. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "bits.h"

static const struct flag_name {
	const char *lname;
	const char *sname;
	uint32_t value;
} names[] = {
	{"BG_SSL_ENABLE_CRL_CHECK", "crl-check", BG_SSL_ENABLE_CRL_CHECK},
	{"BG_SSL_IGNORE_CERT_CN_INVALID", "ignore-cn-invalid", BG_SSL_IGNORE_CERT_CN_INVALID},
	{"BG_SSL_IGNORE_CERT_DATE_INVALID", "ignore-date-invalid", BG_SSL_IGNORE_CERT_DATE_INVALID},
	{"BG_SSL_IGNORE_UNKNOWN_CA", "ignore-unknown-ca", BG_SSL_IGNORE_UNKNOWN_CA},
	{"BG_SSL_IGNORE_CERT_WRONG_USAGE", "ignore-wrong-usage", BG_SSL_IGNORE_CERT_WRONG_USAGE},
	{"BG_HTTP_REDIRECT_POLICY_ALLOW_SILENT", "redirect-silent", BG_HTTP_REDIRECT_POLICY_ALLOW_SILENT},
	{"BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT", "redirect-report", BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT},
	{"BG_HTTP_REDIRECT_POLICY_DISALLOW", "redirect-disallow", BG_HTTP_REDIRECT_POLICY_DISALLOW},
	{"BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP", "allow-https-to-http",
	 BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP},
};

bool
flags_valid(uint32_t flags)
{
	uint32_t policy = flags & BG_HTTP_REDIRECT_POLICY_MASK;

	if (flags & ~BG_SECURITY_FLAGS_VALID)
		return false;
	return policy == BG_HTTP_REDIRECT_POLICY_ALLOW_SILENT ||
	       policy == BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT ||
	       policy == BG_HTTP_REDIRECT_POLICY_DISALLOW;
}

/* A number as C reads one without a sign: "0x" (or "0X") and hex digits, a
 * leading 0 and octal digits, or decimal digits; blanks after it allowed
 * (flags_parse has skipped those before).  At most 32 bits. */
static int
parse_number(const char *s, uint32_t *out)
{
	size_t n = strlen(s);
	unsigned base = 10;
	uint64_t v;

	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		n -= 2;
	} else if (n > 0 && s[0] == '0') {
		base = 8;
	}
	if (bg_parse_uint(s, n, base, 0xFFFFFFFFu, &v) != 0)
		return BG_ENOTIMPL;
	*out = (uint32_t)v;
	return 0;
}

static int
parse_name(const char *s, size_t len, uint32_t *value)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct flag_name *n = &names[i];

		if ((strlen(n->lname) == len && strncasecmp(n->lname, s, len) == 0) ||
		    (strlen(n->sname) == len && strncasecmp(n->sname, s, len) == 0)) {
			*value = n->value;
			return 0;
		}
	}
	return BG_ENOTIMPL;
}

int
flags_parse(const char *s, uint32_t *out)
{
	uint32_t flags = 0;
	int nnames = 0;
	const char *p;

	if (s == NULL)
		return BG_ENOTIMPL;
	while (isspace((unsigned char)*s))
		s++;
	if (isdigit((unsigned char)*s)) {
		if (parse_number(s, &flags) != 0 || !flags_valid(flags))
			return BG_ENOTIMPL;
		*out = flags;
		return 0;
	}
	for (p = s;;) {
		const char *end = p + strcspn(p, "|,");
		const char *a = p, *b = end;
		uint32_t v;

		while (a < b && isspace((unsigned char)*a))
			a++;
		while (b > a && isspace((unsigned char)b[-1]))
			b--;
		if (a == b || parse_name(a, (size_t)(b - a), &v) != 0)
			return BG_ENOTIMPL;
		/* Names are OR'ed, as the values they stand for: the policy
		 * field they make is checked with the rest (flags_valid). */
		flags |= v;
		nnames++;
		if (*end == '\0')
			break;
		p = end + 1;
	}
	if (nnames == 0 || !flags_valid(flags))
		return BG_ENOTIMPL;
	*out = flags;
	return 0;
}

char *
flags_format(uint32_t flags, char *buf, size_t len)
{
	size_t off;
	bool first = true;
	uint32_t policy = flags & BG_HTTP_REDIRECT_POLICY_MASK;
	int n;

	n = snprintf(buf, len, "0x%04X", (unsigned)flags);
	off = n < 0 ? 0 : (size_t)n;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && off < len; i++) {
		const struct flag_name *f = &names[i];
		bool on;

		if (f->value == 0 || (f->value & BG_HTTP_REDIRECT_POLICY_MASK))
			on = policy == f->value;
		else
			on = (flags & f->value) != 0;
		if (!on)
			continue;
		n = snprintf(buf + off, len - off, "%s%s", first ? " " : "|", f->sname);
		first = false;
		if (n < 0)
			break;
		off += (size_t)n;
	}
	return buf;
}
