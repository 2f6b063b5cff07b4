/*
 * fuzz_url.c - URLs and redirect Locations (agent/url.c): a user's URL
 * made canonical, a Location resolved against the URL of the hop that sent
 * it, and the host / scheme / same-origin checks the redirect logic of
 * origin.c applies to the result.
 *
 * Input: BASE "\n" LOCATION (each cut at its first NUL).
 * Properties: what url_canonical() and url_resolve() give is printable
 * ASCII without a fragment or credentials, at most URL_MAX bytes, and
 * canonical again (the cache key of a URL must not depend on how often it
 * was normalised); a canonical URL is of its own origin.  Each line is also
 * checked as a set-proxy value: a proxy taken is printable ASCII with a
 * scheme and a host, and a refusal says why.
 */
#include <stdio.h>

#include "net.h"
#include "fuzz.h"

static void
check_output(const char *u)
{
	char host[256];
	bool https;

	FUZZ_ASSERT(strlen(u) <= URL_MAX);
	for (const char *p = u; *p != '\0'; p++)
		FUZZ_ASSERT(*p > 0x20 && *p < 0x7f);
	FUZZ_ASSERT(strchr(u, '#') == NULL);
	(void)url_scheme_ok(u, &https);
	if (url_host(u, host, sizeof(host)) == 0)
		FUZZ_ASSERT(host[0] != '\0' && strlen(host) < sizeof(host));
}

static void
check_proxy(const char *in)
{
	char why[160] = "";
	char host[256];
	int err = url_proxy_check(in, why, sizeof(why));

	if (err != 0) {
		FUZZ_ASSERT(err == BG_EINVAL || err == BG_ENOMEM);
		FUZZ_ASSERT(err == BG_ENOMEM || why[0] != '\0');
		return;
	}
	for (const char *p = in; *p != '\0'; p++)
		FUZZ_ASSERT(*p > 0x20 && *p < 0x7f);
	FUZZ_ASSERT(strstr(in, "://") != NULL);
	FUZZ_ASSERT(url_host(in, host, sizeof(host)) != BG_EINVAL);
}

static void
check_canonical(const char *in)
{
	char *c = NULL, *again = NULL;
	bool https;

	if (url_canonical(in, &c) != 0)
		return;
	check_output(c);
	FUZZ_ASSERT(url_scheme_ok(c, &https));
	FUZZ_ASSERT(url_canonical(c, &again) == 0);
	if (strcmp(c, again) != 0) {
		fprintf(stderr, "not idempotent:\n  %s\n  %s\n", c, again);
		FUZZ_ASSERT(strcmp(c, again) == 0);
	}
	FUZZ_ASSERT(url_same_origin(c, again));
	free(again);
	free(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t blen = nl != NULL ? (size_t)(nl - data) : size;
	char *base = fuzz_str(data, blen);
	char *loc = nl != NULL ? fuzz_str(nl + 1, size - blen - 1) : fuzz_str("", 0);
	char *target = NULL;
	char host[64];

	if (base == NULL || loc == NULL)
		goto out;
	check_canonical(base);
	check_canonical(loc);
	check_proxy(base);
	check_proxy(loc);
	if (url_host(base, host, sizeof(host)) == 0)
		FUZZ_ASSERT(host[0] != '\0');
	(void)url_scheme_ok(loc, NULL);
	(void)url_same_origin(base, loc);
	if (url_resolve(base, loc, &target) == 0) {
		check_output(target);
		/* The redirect checks of origin.c, on what a hop resolved to. */
		(void)url_same_origin(target, base);
		check_canonical(target);
	}
out:
	free(target);
	free(base);
	free(loc);
	return 0;
}
