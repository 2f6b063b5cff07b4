/* test_url.c - canonical URLs and Location resolution (libcurl URL API). */
#include <stdlib.h>

#include "net.h"
#include "check.h"

static void
resolves(const char *base, const char *loc, const char *want)
{
	char *got = NULL;
	int err = url_resolve(base, loc, &got);

	if (!CHECK(err == 0))
		fprintf(stderr, "    url_resolve(%s, %s) = %d\n", base, loc, err);
	CHECK_EQ_STR(got, want);
	free(got);
}

static void
canonical(const char *in, int want_err, const char *want)
{
	char *got = NULL;
	int err = url_canonical(in, &got);

	CHECK_EQ_INT(err, want_err);
	CHECK_EQ_STR(got, want);
	free(got);
}

static void
redacted(const char *proxy, const char *want)
{
	char *got = NULL;

	CHECK_EQ_INT(url_proxy_redacted(proxy, &got), 0);
	CHECK_EQ_STR(got, want);
	free(got);
}

static void
authority(const char *url, bool proxy, int want_err, const char *want)
{
	char buf[64] = "";
	int err = proxy ? url_proxy_address(url, buf, sizeof(buf)) : url_authority(url, buf, sizeof(buf));

	CHECK_EQ_INT(err, want_err);
	if (want != NULL)
		CHECK_EQ_STR(buf, want);
}

int
main(void)
{
	const char *b = "http://127.0.0.1:8080/a/b/c.bin?x=1";
	bool https = false;
	char *long_url;

	/* RFC 3986 section 5 resolution, relative to the hop that redirected. */
	resolves(b, "/files/a.bin", "http://127.0.0.1:8080/files/a.bin");
	resolves(b, "d.bin", "http://127.0.0.1:8080/a/b/d.bin");
	resolves(b, "../d.bin", "http://127.0.0.1:8080/a/d.bin");
	resolves(b, "../../../../d.bin", "http://127.0.0.1:8080/d.bin");
	resolves(b, "?y=2", "http://127.0.0.1:8080/a/b/c.bin?y=2");
	resolves(b, "//other.example:81/z", "http://other.example:81/z");
	resolves(b, "https://host.example/p#frag", "https://host.example/p");
	resolves(b, "http://user:pw@host.example/p", "http://host.example/p");
	resolves(b, "file:///etc/passwd", "file:///etc/passwd");
	resolves(b, "ftp://127.0.0.1/x", "ftp://127.0.0.1/x");
	resolves(b, "smb://host/share", "smb://host/share");
	resolves(b, "/with space", "http://127.0.0.1:8080/with%20space");
	resolves("https://h.example/a", "http://h.example/b", "http://h.example/b");

	/* Schemes that may be followed. */
	CHECK(url_scheme_ok("http://x/", &https) && !https);
	CHECK(url_scheme_ok("HTTPS://x/", &https) && https);
	CHECK(!url_scheme_ok("file:///etc/passwd", NULL));
	CHECK(!url_scheme_ok("smb://h/s", NULL));
	CHECK(!url_scheme_ok("ftp://h/", NULL));
	CHECK(!url_scheme_ok("httpx://h/", NULL));

	/* User URLs. */
	canonical("http://127.0.0.1:8080/files/a.bin", 0, "http://127.0.0.1:8080/files/a.bin");
	canonical("HTTP://127.0.0.1:80/x#frag", 0, "http://127.0.0.1/x");
	canonical("https://127.0.0.1:443/x", 0, "https://127.0.0.1/x");
	canonical("http://", BG_EINVAL, NULL);
	canonical("not a url", BG_EINVAL, NULL);
	canonical("ftp://x/y", BG_ENOTIMPL, NULL);
	canonical("file:///etc/passwd", BG_ENOTIMPL, NULL);
	long_url = malloc(URL_MAX + 64);
	snprintf(long_url, URL_MAX + 64, "http://h/%0*d", URL_MAX, 0);
	canonical(long_url, BG_ELIMIT, NULL);
	free(long_url);

	/* The host credentials were set for. */
	CHECK(url_same_origin("http://a:1/x", "http://a:1/y?z"));
	CHECK(url_same_origin("http://a/x", "http://a:80/y"));
	CHECK(!url_same_origin("http://a:1/x", "http://a:2/x"));
	CHECK(!url_same_origin("http://a/x", "https://a/x"));
	CHECK(!url_same_origin("http://a/x", "http://b/x"));

	/* Proxies as documents show them: the password never. */
	redacted("http://127.0.0.1:3128", "http://127.0.0.1:3128");
	redacted("http://alice@127.0.0.1:3128", "http://alice@127.0.0.1:3128");
	redacted("http://alice:s3cret@127.0.0.1:3128", "http://alice:***@127.0.0.1:3128");
	redacted("HTTP://al%40ice:p%40ss@[::1]:3128/", "http://al%40ice:***@[::1]:3128");
	redacted("socks5h://u:p@proxy.example", "socks5h://u:***@proxy.example");
	redacted("http://:p@h:1", "http://:***@h:1");
	redacted("no scheme:p@x", "(not shown: not a URL)");

	/* host:port for messages: the scheme's port, libcurl's 1080 for a proxy. */
	authority("https://127.0.0.1/x", false, 0, "127.0.0.1:443");
	authority("http://[::1]:8080/x", false, 0, "[::1]:8080");
	authority("http://u:p@h.example:3128", true, 0, "h.example:3128");
	authority("socks5://h.example", true, 0, "h.example:1080");
	authority("http://h.example:1/", false, 0, "h.example:1");
	authority("https://a-rather-long-host-name.in-a-long-domain.example.org.invalid.test/x", false, BG_ELIMIT, NULL);
	authority("not a url", false, BG_EINVAL, NULL);
	return check_done();
}
