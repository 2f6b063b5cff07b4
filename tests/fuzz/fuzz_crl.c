/*
 * fuzz_crl.c - CRLs as bgcopy gets them (agent/crl.c): crl_fetch() takes
 * the bytes a distribution point sent (DER or PEM), parses them, reads the
 * issuer and dates and keeps them with a JSON record; crl_lookup() and
 * crl_each() read what is kept (the CRL file and its record), which a
 * damaged disk or another program may have changed.
 *
 * Input: one mode byte.  Even: the rest is the body a distribution point on
 * 127.0.0.1 (loopback.c) answers with HTTP 200, then the CRL is fetched,
 * looked up and listed.  Odd: the rest is RECORD FUZZ_SEP CRL, written as
 * the kept files of a URL, then looked up and listed.
 * Properties: a CRL that was kept can be looked up (the record says it is
 * current or expired, never damaged); lookups and listings of any kept
 * files give a CRL or an error, never a crash.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/x509.h>

#include "net_int.h"
#include "fuzz.h"
#include "loopback.h"

static char dir[64];
static unsigned long serial;

static void
remove_dir(void)
{
	if (crl_clear(dir, NULL) == 0)
		rmdir(dir);
}

static int
count_fn(json_t *info, void *arg)
{
	FUZZ_ASSERT(json_is_object(info) && jstr(info, "url") != NULL);
	++*(unsigned *)arg;
	return 0;
}

static void
write_file(const char *path, const uint8_t *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL)
		return;
	fwrite(p, 1, n, f);
	fclose(f);
}

static void
kept_files(const uint8_t *data, size_t size, const char *url)
{
	struct fuzz_part parts[2];
	unsigned char d[BG_SHA256_LEN];
	char hex[BG_SHA256_HEX_LEN + 1], path[PATH_MAX];
	size_t n = fuzz_split(data, size, parts, 2);

	bg_sha256(url, strlen(url), d);
	bg_sha256_hex(d, hex);
	snprintf(path, sizeof(path), "%s/%s.json", dir, hex);
	write_file(path, parts[0].p, parts[0].n);
	if (n > 1) {
		snprintf(path, sizeof(path), "%s/%s.crl", dir, hex);
		write_file(path, parts[1].p, parts[1].n);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char url[128], err[384];
	X509_CRL *crl = NULL;
	int64_t expired_at = 0;
	unsigned listed = 0;
	int rc, fetched = -1;

	if (dir[0] == '\0') {
		snprintf(dir, sizeof(dir), "/tmp/bgcopy-fuzz-crl.XXXXXX");
		FUZZ_ASSERT(mkdtemp(dir) != NULL);
		atexit(remove_dir);
		FUZZ_ASSERT(loopback_port() != 0);
		unsetenv("no_proxy");
		unsetenv("NO_PROXY");
		unsetenv("http_proxy");
		unsetenv("HTTP_PROXY");
		unsetenv("all_proxy");
		unsetenv("ALL_PROXY");
		curl_global_init(CURL_GLOBAL_DEFAULT);
	}
	if (size < 1)
		return 0;
	/* A URL of its own per input: the parsed-CRL memory of crl.c is keyed
	 * by URL, size and mtime, and two inputs may share the last two. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/ca-%lu.crl", loopback_port(), ++serial);
	if ((data[0] & 1) == 0) {
		static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\n"
		                           "Connection: close\r\nContent-Length: ";
		char *resp = malloc(sizeof(head) + 32 + size);
		struct fuzz_part part;
		int hn;

		if (resp == NULL)
			return 0;
		hn = snprintf(resp, sizeof(head) + 32, "%s%zu\r\n\r\n", head, size - 1);
		memcpy(resp + hn, data + 1, size - 1);
		part.p = (const uint8_t *)resp;
		part.n = (size_t)hn + size - 1;
		loopback_script(&part, 1);
		free(resp);
		fetched = crl_fetch(dir, url, NULL, err, sizeof(err));
		FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL);
	} else {
		kept_files(data + 1, size - 1, url);
	}
	rc = crl_lookup(dir, url, &crl, &expired_at);
	if (fetched == 0)
		FUZZ_ASSERT(rc == 0 || rc == BG_ETIMEDOUT);
	if (rc == 0) {
		FUZZ_ASSERT(crl != NULL);
		X509_CRL_free(crl);
	}
	FUZZ_ASSERT(crl_each(dir, count_fn, &listed) == 0);
	if (fetched == 0)
		FUZZ_ASSERT(listed == 1);
	FUZZ_ASSERT(crl_clear(dir, NULL) == 0);
	return 0;
}
