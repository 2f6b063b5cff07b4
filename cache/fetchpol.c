/*
 * fetchpol.c - what bytes were fetched under: the fetch policy as the peer
 * protocol's X-Bgcopy-Fetch dictionary (RFC 8941), as the "fetch" object
 * of key and inflight records, and the rule that says whether bytes
 * fetched under one policy may serve a job fetching under another.
 *
 * The parser is strict on purpose: the header is compared, not merely
 * read, and a form this file does not write is one nobody should trust.
 */
#include <stdio.h>
#include <string.h>

#include "cache.h"
#include "cache_int.h"

static const char *const redirect_names[] = {
	[STORE_FETCH_REDIRECT_SILENT] = "silent",
	[STORE_FETCH_REDIRECT_REPORT] = "report",
	[STORE_FETCH_REDIRECT_DISALLOW] = "disallow",
};
#define REDIRECT_N (sizeof(redirect_names) / sizeof(redirect_names[0]))

static bool
ca_valid(const char *ca, size_t n)
{
	return (n == strlen("system") && memcmp(ca, "system", n) == 0) ||
	       (n == STORE_FETCH_CA_LEN && bg_is_lower_hex(ca, n));
}

/* Whether the fields of a known policy are in range. */
bool
ci_fetch_valid(const struct store_fetch_policy *p)
{
	return p->known && (p->ignore & ~STORE_FETCH_IGNORE_ALL) == 0 && p->redirect < REDIRECT_N &&
	       memchr(p->ca, '\0', sizeof(p->ca)) != NULL && ca_valid(p->ca, strlen(p->ca));
}

int
bg_fetch_policy_format(const struct store_fetch_policy *p, char *out, size_t outlen)
{
	int n;

	if (out != NULL && outlen > 0)
		out[0] = '\0';
	if (p == NULL || out == NULL || !ci_fetch_valid(p))
		return BG_EINVAL;
	/* A token starts with a letter: a digest of hex digits is written as
	 * a string ("0123..."), "system" as a token. */
	if (strcmp(p->ca, "system") == 0)
		n = snprintf(out, outlen, "ignore=%u, crl=?%d, ca=system, redirect=%s, h2h=?%d",
		             (unsigned)p->ignore, p->crl ? 1 : 0, redirect_names[p->redirect],
		             p->h2h ? 1 : 0);
	else
		n = snprintf(out, outlen, "ignore=%u, crl=?%d, ca=\"%s\", redirect=%s, h2h=?%d",
		             (unsigned)p->ignore, p->crl ? 1 : 0, p->ca, redirect_names[p->redirect],
		             p->h2h ? 1 : 0);
	if (n < 0 || (size_t)n >= outlen) {
		if (outlen > 0)
			out[0] = '\0';
		return BG_ELIMIT;
	}
	return 0;
}

/* ---- Parsing ---------------------------------------------------------------
 * An RFC 8941 dictionary restricted to the members above: keys in any
 * order, each exactly once, no parameters; a boolean member may stand
 * without "=?1" (the RFC's short form of true). */

enum member { M_IGNORE, M_CRL, M_CA, M_REDIRECT, M_H2H, M_COUNT };
static const char *const member_names[M_COUNT] = { "ignore", "crl", "ca", "redirect", "h2h" };

static bool
is_lcalpha(char c)
{
	return c >= 'a' && c <= 'z';
}

static bool
is_key_char(char c)
{
	return is_lcalpha(c) || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
	       c == '*';
}

static bool
is_token_char(char c)
{
	/* tchar of RFC 9110, plus ':' and '/' (RFC 8941 sf-token) */
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~:/", c) != NULL);
}

static const char *
skip_ows(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

/* Parses the value of member m at *s (after '=', or NULL for a bare key). */
static int
parse_value(enum member m, const char **sp, struct store_fetch_policy *out)
{
	const char *s = *sp, *e;
	uint64_t v;

	if (s == NULL) {
		/* "crl" alone is "crl=?1" */
		if (m == M_CRL)
			out->crl = true;
		else if (m == M_H2H)
			out->h2h = true;
		else
			return BG_EINVAL;
		return 0;
	}
	switch (m) {
	case M_CRL:
	case M_H2H:
		if (s[0] != '?' || (s[1] != '0' && s[1] != '1'))
			return BG_EINVAL;
		*(m == M_CRL ? &out->crl : &out->h2h) = s[1] == '1';
		*sp = s + 2;
		return 0;
	case M_IGNORE:
		for (e = s; *e >= '0' && *e <= '9'; e++)
			;
		if (e == s || e - s > 15 ||
		    bg_parse_u64(s, (size_t)(e - s), STORE_FETCH_IGNORE_ALL, &v) != 0)
			return BG_EINVAL;
		out->ignore = (uint32_t)v;
		*sp = e;
		return 0;
	case M_CA:
		if (*s == '"') {
			/* only the form written above: 16 lowercase hex digits */
			e = strchr(s + 1, '"');
			if (e == NULL || e - (s + 1) != STORE_FETCH_CA_LEN ||
			    !bg_is_lower_hex(s + 1, STORE_FETCH_CA_LEN))
				return BG_EINVAL;
			memcpy(out->ca, s + 1, STORE_FETCH_CA_LEN);
			out->ca[STORE_FETCH_CA_LEN] = '\0';
			*sp = e + 1;
			return 0;
		}
		for (e = s; is_token_char(*e); e++)
			;
		if (e - s != 6 || memcmp(s, "system", 6) != 0)
			return BG_EINVAL;
		memcpy(out->ca, "system", sizeof("system"));
		*sp = e;
		return 0;
	case M_REDIRECT:
		for (e = s; is_token_char(*e); e++)
			;
		for (size_t i = 0; i < REDIRECT_N; i++) {
			if ((size_t)(e - s) == strlen(redirect_names[i]) &&
			    memcmp(s, redirect_names[i], (size_t)(e - s)) == 0) {
				out->redirect = (uint8_t)i;
				*sp = e;
				return 0;
			}
		}
		return BG_EINVAL;
	default:
		return BG_EINVAL;
	}
}

int
bg_fetch_policy_parse(const char *s, struct store_fetch_policy *out)
{
	struct store_fetch_policy p;
	unsigned seen = 0;
	int rc = BG_EINVAL;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (s == NULL || out == NULL || strnlen(s, STORE_FETCH_POLICY_MAX * 4) >= STORE_FETCH_POLICY_MAX * 4)
		return BG_EINVAL;
	memset(&p, 0, sizeof(p));
	s = skip_ows(s);
	for (;;) {
		const char *k = s, *v;
		enum member m;

		if (!is_lcalpha(*s) && *s != '*')
			return BG_EINVAL;
		while (is_key_char(*s))
			s++;
		for (m = 0; m < M_COUNT; m++)
			if ((size_t)(s - k) == strlen(member_names[m]) &&
			    memcmp(k, member_names[m], (size_t)(s - k)) == 0)
				break;
		/* an unknown member, or one given twice */
		if (m == M_COUNT || (seen & (1u << m)) != 0)
			return BG_EINVAL;
		seen |= 1u << m;
		v = NULL;
		if (*s == '=')
			v = s + 1;
		if ((rc = parse_value(m, &v, &p)) != 0)
			return rc;
		if (v != NULL)
			s = v;
		/* no parameters: the next thing is the separator or the end */
		s = skip_ows(s);
		if (*s == '\0')
			break;
		if (*s != ',')
			return BG_EINVAL;
		s = skip_ows(s + 1);
		if (*s == '\0')
			return BG_EINVAL; /* a trailing comma */
	}
	if (seen != (1u << M_COUNT) - 1)
		return BG_EINVAL;
	p.known = true;
	*out = p;
	return 0;
}

bool
bg_fetch_policy_acceptable(const struct store_fetch_policy *theirs,
                           const struct store_fetch_policy *mine, bool tls, const char **why)
{
	const char *no = NULL;

	if (theirs == NULL || !theirs->known)
		no = "fetch policy unknown";
	else if (mine == NULL || !mine->known)
		no = "own fetch policy unknown";
	else if (tls && (theirs->ignore & ~mine->ignore) != 0)
		no = "fetched with fewer TLS checks";
	else if (tls && mine->crl && !theirs->crl)
		no = "fetched without a revocation check";
	else if (tls && strncmp(theirs->ca, mine->ca, sizeof(mine->ca)) != 0)
		no = "fetched under other trust anchors";
	else if (theirs->redirect != mine->redirect)
		no = "fetched under another redirect policy";
	else if (theirs->h2h && !mine->h2h)
		no = "fetched allowing https to http redirects";
	if (why != NULL)
		*why = no;
	return no == NULL;
}

/* ---- The "fetch" object of records ----------------------------------------- */

int
ci_fetch_to_json(const struct store_fetch_policy *p, json_t **out)
{
	json_t *o;

	*out = NULL;
	if (!p->known)
		return 0;
	if (!ci_fetch_valid(p))
		return BG_EINVAL;
	if ((o = json_object()) == NULL)
		return BG_ENOMEM;
	if (jset_int(o, "ignore", p->ignore) != 0 || jset(o, "crl", json_boolean(p->crl)) != 0 ||
	    jset_str(o, "ca", p->ca) != 0 || jset_str(o, "redirect", redirect_names[p->redirect]) != 0 ||
	    jset(o, "h2h", json_boolean(p->h2h)) != 0) {
		json_decref(o);
		return BG_ENOMEM;
	}
	*out = o;
	return 0;
}

int
ci_fetch_from_json(const json_t *j, struct store_fetch_policy *out)
{
	const json_t *ig = json_object_get(j, "ignore"), *crl = json_object_get(j, "crl"),
	             *ca = json_object_get(j, "ca"), *rd = json_object_get(j, "redirect"),
	             *h2h = json_object_get(j, "h2h");
	struct store_fetch_policy p;
	size_t i;

	memset(out, 0, sizeof(*out));
	if (j == NULL || json_is_null(j))
		return 0; /* not recorded */
	if (!json_is_object(j) || json_object_size(j) != 5 || !json_is_integer(ig) ||
	    json_integer_value(ig) < 0 || json_integer_value(ig) > (json_int_t)STORE_FETCH_IGNORE_ALL ||
	    !json_is_boolean(crl) || !json_is_boolean(h2h) || !json_is_string(ca) ||
	    !ca_valid(json_string_value(ca), json_string_length(ca)) || !json_is_string(rd))
		return BG_ECORRUPT;
	memset(&p, 0, sizeof(p));
	for (i = 0; i < REDIRECT_N; i++)
		if (strcmp(json_string_value(rd), redirect_names[i]) == 0 &&
		    json_string_length(rd) == strlen(redirect_names[i]))
			break;
	if (i == REDIRECT_N)
		return BG_ECORRUPT;
	p.known = true;
	p.ignore = (uint32_t)json_integer_value(ig);
	p.crl = json_is_true(crl);
	p.h2h = json_is_true(h2h);
	p.redirect = (uint8_t)i;
	memcpy(p.ca, json_string_value(ca), json_string_length(ca) + 1);
	*out = p;
	return 0;
}
