/* url.c - URL canonicalisation and Location resolution with libcurl's URL API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "net.h"

/* Parser flags for URLs that arrive from outside: spaces in a Location are
 * common enough to accept (they are percent-encoded on output), any scheme
 * is parsed so that it can be refused by name. */
#define PARSE_FLAGS (CURLU_NON_SUPPORT_SCHEME | CURLU_ALLOW_SPACE)

static int
from_curlu(CURLUcode uc)
{
	switch (uc) {
	case CURLUE_OK:
		return 0;
	case CURLUE_OUT_OF_MEMORY:
		return BG_ENOMEM;
	case CURLUE_UNSUPPORTED_SCHEME:
		return BG_ENOTIMPL;
	default:
		return BG_EINVAL;
	}
}

/* Replaces *s (curl_free'd) by what libcurl prints after parsing it. */
static int
reprint(char **s)
{
	CURLU *u = curl_url();
	char *again = NULL;
	int err;

	if (u == NULL)
		return BG_ENOMEM;
	if ((err = from_curlu(curl_url_set(u, CURLUPART_URL, *s, PARSE_FLAGS))) == 0 &&
	    (err = from_curlu(curl_url_get(u, CURLUPART_URL, &again, CURLU_NO_DEFAULT_PORT))) == 0) {
		curl_free(*s);
		*s = again;
	}
	curl_url_cleanup(u);
	return err;
}

/* Prints u in canonical form into a malloc'd string. */
static int
print_url(CURLU *u, char **out)
{
	char *s = NULL, *copy;
	int err;

	/* Fragments are never sent to a server, and credentials embedded in a
	 * URL must not travel with it into keys, documents or other hosts. */
	if ((err = from_curlu(curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0))) != 0 ||
	    (err = from_curlu(curl_url_set(u, CURLUPART_USER, NULL, 0))) != 0 ||
	    (err = from_curlu(curl_url_set(u, CURLUPART_PASSWORD, NULL, 0))) != 0)
		return err;
	if ((err = from_curlu(curl_url_get(u, CURLUPART_URL, &s, CURLU_NO_DEFAULT_PORT))) != 0)
		return err;
	/* libcurl normalises a numeric IPv4 host before it decodes %XX in it:
	 * "http://%30/" prints as "http://0/", which prints as
	 * "http://0.0.0.0/".  One more round makes the canonical form a fixed
	 * point, so that a key shown by `cache list` finds itself again. */
	if ((err = reprint(&s)) != 0) {
		curl_free(s);
		return err;
	}
	if (strlen(s) > URL_MAX) {
		curl_free(s);
		return BG_ELIMIT;
	}
	/* Keys, documents and headers take the URL as it is printed: only
	 * visible ASCII may pass (libcurl percent-encodes spaces). */
	for (const char *p = s; *p != '\0'; p++) {
		if (*p < 0x21 || *p > 0x7E) {
			curl_free(s);
			return BG_EINVAL;
		}
	}
	copy = strdup(s);
	curl_free(s);
	if (copy == NULL)
		return BG_ENOMEM;
	*out = copy;
	return 0;
}

static bool
scheme_is(const char *url, const char *scheme)
{
	size_t n = strlen(scheme);

	return strncasecmp(url, scheme, n) == 0 && url[n] == ':';
}

bool
url_scheme_ok(const char *url, bool *https)
{
	bool s = scheme_is(url, "https");

	if (https != NULL)
		*https = s;
	return s || scheme_is(url, "http");
}

int
url_canonical(const char *in, char **out)
{
	CURLU *u = NULL;
	char *scheme = NULL;
	int err;

	if (strlen(in) > URL_MAX)
		return BG_ELIMIT;
	if ((u = curl_url()) == NULL)
		return BG_ENOMEM;
	if ((err = from_curlu(curl_url_set(u, CURLUPART_URL, in, PARSE_FLAGS))) != 0)
		goto out;
	if ((err = from_curlu(curl_url_get(u, CURLUPART_SCHEME, &scheme, 0))) != 0)
		goto out;
	if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
		err = BG_ENOTIMPL;
		goto out;
	}
	err = print_url(u, out);
out:
	curl_free(scheme);
	curl_url_cleanup(u);
	return err;
}

/* Whether a Location names an http(s) URL without a host: "http:/x" and
 * "http:x" (RFC 3986: a scheme, then a path, no authority), "http:///x" and
 * "///x" (an empty authority, invalid for http by RFC 9110 section 4.2.1).
 * libcurl 7.88 would take the first path segment for the host name. */
static bool
lacks_http_host(const char *loc)
{
	size_t n = strspn(loc, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
	const char *p = loc;

	if (n > 0 && loc[n] == ':') {
		/* Other schemes are refused by name once resolved. */
		if (!scheme_is(loc, "http") && !scheme_is(loc, "https"))
			return false;
		p = loc + n + 1;
		if (strncmp(p, "//", 2) != 0)
			return true;
	} else if (strncmp(loc, "//", 2) != 0) {
		return false; /* a path, a query or a fragment: the base's host */
	}
	p += 2;
	return *p == '\0' || *p == '/' || *p == '\\' || *p == '?' || *p == '#';
}

int
url_resolve(const char *base, const char *location, char **out)
{
	CURLU *u = NULL;
	int err;

	if (strlen(location) > URL_MAX)
		return BG_ELIMIT;
	if (lacks_http_host(location))
		return BG_EINVAL;
	if ((u = curl_url()) == NULL)
		return BG_ENOMEM;
	/* Setting a URL on a handle that holds one resolves it as a relative
	 * reference against the old one (RFC 3986 section 5). */
	if ((err = from_curlu(curl_url_set(u, CURLUPART_URL, base, PARSE_FLAGS))) != 0 ||
	    (err = from_curlu(curl_url_set(u, CURLUPART_URL, location, PARSE_FLAGS))) != 0)
		goto out;
	err = print_url(u, out);
out:
	curl_url_cleanup(u);
	return err;
}

/* Fills scheme, host and port (default port filled in) of url. */
static int
origin_parts(const char *url, char **scheme, char **host, char **port)
{
	CURLU *u = curl_url();
	int err;

	*scheme = *host = *port = NULL;
	if (u == NULL)
		return BG_ENOMEM;
	if ((err = from_curlu(curl_url_set(u, CURLUPART_URL, url, PARSE_FLAGS))) == 0 &&
	    (err = from_curlu(curl_url_get(u, CURLUPART_SCHEME, scheme, 0))) == 0 &&
	    (err = from_curlu(curl_url_get(u, CURLUPART_HOST, host, 0))) == 0)
		err = from_curlu(curl_url_get(u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT));
	curl_url_cleanup(u);
	return err;
}

bool
url_same_origin(const char *a, const char *b)
{
	char *sa, *ha, *pa, *sb, *hb, *pb;
	bool same;

	int ea = origin_parts(a, &sa, &ha, &pa);
	int eb = origin_parts(b, &sb, &hb, &pb);

	same = ea == 0 && eb == 0 && strcasecmp(sa, sb) == 0 && strcasecmp(ha, hb) == 0 &&
	       strcmp(pa, pb) == 0;
	curl_free(sa);
	curl_free(ha);
	curl_free(pa);
	curl_free(sb);
	curl_free(hb);
	curl_free(pb);
	return same;
}

int
url_host(const char *url, char *buf, size_t len)
{
	CURLU *u = curl_url();
	char *host = NULL;
	size_t n;
	int err;

	if (u == NULL)
		return BG_ENOMEM;
	if ((err = from_curlu(curl_url_set(u, CURLUPART_URL, url, PARSE_FLAGS))) == 0 &&
	    (err = from_curlu(curl_url_get(u, CURLUPART_HOST, &host, 0))) == 0) {
		const char *h = host;

		n = strlen(h);
		if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
			h++;
			n -= 2;
		}
		if (n == 0)
			err = BG_EINVAL;
		else if (n >= len)
			err = BG_ELIMIT;
		else {
			memcpy(buf, h, n);
			buf[n] = '\0';
		}
	}
	curl_free(host);
	curl_url_cleanup(u);
	return err;
}

/* Whether s (may be NULL) holds printable ASCII only. */
static bool
text_printable(const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

int
url_proxy_check(const char *proxy, char *why, size_t len)
{
	static const char *const schemes[] = {"http", "https", "socks4", "socks4a", "socks5",
	                                      "socks5h"};
	CURLU *u;
	char *scheme = NULL, *host = NULL, *path = NULL, *query = NULL, *fragment = NULL;
	char *user = NULL, *password = NULL, *port = NULL;
	CURLUcode uc;
	bool known = false;
	int err = BG_EINVAL;

	if (!text_printable(proxy) || strchr(proxy, ' ') != NULL) {
		snprintf(why, len, "a proxy URL cannot hold spaces, control or non-ASCII characters");
		return BG_EINVAL;
	}
	/* Without "://" libcurl would guess a scheme (and take "host:3128" for
	 * a URL of scheme "host"): the scheme must be written out. */
	if (strstr(proxy, "://") == NULL) {
		snprintf(why, len, "a proxy is a URL with its scheme, e.g. http://proxy.example:3128");
		return BG_EINVAL;
	}
	if ((u = curl_url()) == NULL)
		return BG_ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, proxy, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
		snprintf(why, len, "not a URL with a host");
		goto out;
	}
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		known = known || strcasecmp(scheme, schemes[i]) == 0;
	if (!known) {
		snprintf(why, len, "scheme %s is not one of http, https, socks4, socks4a, socks5, socks5h",
		         scheme);
		goto out;
	}
	uc = curl_url_get(u, CURLUPART_PATH, &path, 0);
	if (uc == CURLUE_OK)
		uc = curl_url_get(u, CURLUPART_QUERY, &query, 0);
	if (uc == CURLUE_OK || uc == CURLUE_NO_QUERY)
		uc = curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0);
	if (uc == CURLUE_OUT_OF_MEMORY) {
		err = BG_ENOMEM;
		goto out;
	}
	if (uc != CURLUE_NO_FRAGMENT || query != NULL || (path[0] != '\0' && strcmp(path, "/") != 0)) {
		snprintf(why, len, "a proxy URL has no path, query or fragment");
		goto out;
	}
	/* libcurl drops a proxy whose user or password decodes to a control
	 * character, and goes direct: refuse it here instead. */
	if ((uc = curl_url_get(u, CURLUPART_USER, &user, CURLU_URLDECODE)) == CURLUE_OK)
		uc = curl_url_get(u, CURLUPART_PASSWORD, &password, CURLU_URLDECODE);
	if (uc == CURLUE_OUT_OF_MEMORY) {
		err = BG_ENOMEM;
		goto out;
	}
	if ((uc != CURLUE_OK && uc != CURLUE_NO_USER && uc != CURLUE_NO_PASSWORD) ||
	    !text_printable(user) || !text_printable(password)) {
		snprintf(why, len, "the user name or password of a proxy URL must decode to printable "
		         "characters");
		goto out;
	}
	/* Without a port libcurl goes to 1080 for every proxy: right for
	 * socks, a surprise for http and https. */
	uc = curl_url_get(u, CURLUPART_PORT, &port, 0);
	if (uc == CURLUE_OUT_OF_MEMORY) {
		err = BG_ENOMEM;
		goto out;
	}
	if ((uc == CURLUE_NO_PORT && strncasecmp(scheme, "http", 4) == 0) ||
	    (uc == CURLUE_OK && strcmp(port, "0") == 0)) {
		snprintf(why, len, "an http or https proxy URL names its port (1 to 65535), e.g. "
		         "http://proxy.example:3128");
		goto out;
	}
	err = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(path);
	curl_free(query);
	curl_free(fragment);
	curl_free(user);
	curl_free(password);
	curl_free(port);
	curl_url_cleanup(u);
	return err;
}

/* Writes "host:port" of url, parsed with parse_flags, into buf; the
 * scheme's default port when url names none, or default_port for a scheme
 * libcurl knows no default of. */
static int
authority_of(const char *url, unsigned int parse_flags, const char *default_port, char *buf,
             size_t len)
{
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL;
	CURLUcode uc;
	int err;

	if (u == NULL)
		return BG_ENOMEM;
	if ((err = from_curlu(curl_url_set(u, CURLUPART_URL, url, parse_flags))) != 0 ||
	    (err = from_curlu(curl_url_get(u, CURLUPART_HOST, &host, 0))) != 0)
		goto out;
	uc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
	if (uc != CURLUE_OK && uc != CURLUE_NO_PORT) {
		err = from_curlu(uc);
		goto out;
	}
	/* curl_url_get keeps an IPv6 literal in its brackets. */
	if ((size_t)snprintf(buf, len, "%s:%s", host, port != NULL ? port : default_port) >= len)
		err = BG_ELIMIT;
out:
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return err;
}

int
url_authority(const char *url, char *buf, size_t len)
{
	return authority_of(url, PARSE_FLAGS, "0", buf, len);
}

int
url_proxy_address(const char *proxy, char *buf, size_t len)
{
	/* libcurl's port for a proxy URL without one is 1080, whatever the
	 * scheme (url_proxy_check makes http and https name theirs). */
	return authority_of(proxy, CURLU_NON_SUPPORT_SCHEME, "1080", buf, len);
}

int
url_proxy_redacted(const char *proxy, char **out)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *user = NULL, *password = NULL, *host = NULL, *port = NULL, *s;
	CURLUcode uc;
	size_t len;
	int err = 0;

	if (u == NULL)
		return BG_ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, proxy, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		/* Not a URL (a record written before set-proxy checked its
		 * value): nothing of it can be shown without risking a password. */
		s = strdup("(not shown: not a URL)");
		goto done;
	}
	uc = curl_url_get(u, CURLUPART_PASSWORD, &password, 0);
	if (uc != CURLUE_OK && uc != CURLUE_NO_PASSWORD) {
		err = from_curlu(uc);
		goto out;
	}
	if (password == NULL) {
		s = strdup(proxy);
		goto done;
	}
	/* The user name stays, as typed (percent-encoded): it tells which
	 * account the job uses; the password never leaves the record. */
	if ((err = from_curlu(curl_url_get(u, CURLUPART_USER, &user, 0))) != 0)
		goto out;
	uc = curl_url_get(u, CURLUPART_PORT, &port, 0);
	if (uc != CURLUE_OK && uc != CURLUE_NO_PORT) {
		err = from_curlu(uc);
		goto out;
	}
	len = strlen(scheme) + strlen(user) + strlen(host) + (port ? strlen(port) : 0) + 16;
	if ((s = malloc(len)) != NULL)
		snprintf(s, len, "%s://%s:***@%s%s%s", scheme, user, host, port ? ":" : "",
		         port ? port : "");
done:
	if (s == NULL)
		err = BG_ENOMEM;
	else
		*out = s;
out:
	curl_free(scheme);
	curl_free(user);
	curl_free(password);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return err;
}
