/*
 * tls_reuse.c - fetches one URL twice with one origin client, under two
 * flag sets, and prints the HRESULT of each.  The integration test runs it
 * against a server whose certificate has a fault: a transfer under strict
 * flags must fail even though a lenient one just succeeded on the same
 * client (no connection or TLS session reused across flag sets).
 *
 * With CERT1 KEY1 CERT2 KEY2 ("-": none) each transfer presents that
 * client certificate: a connection made with one certificate must not carry
 * a request with another or with none (test_client_tls.py).
 *
 * usage: tls_reuse CAFILE URL FLAGS1 FLAGS2 [CERT1 KEY1 CERT2 KEY2]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "net.h"

static int
on_start(void *arg, const struct origin_response *resp)
{
	(void)arg;
	(void)resp;
	return 0;
}

static int
on_data(void *arg, const void *p, size_t len)
{
	(void)p;
	*(size_t *)arg += len;
	return 0;
}

int
main(int argc, char **argv)
{
	struct origin *o = NULL;
	int rc = 0;

	if (argc != 5 && argc != 9) {
		fprintf(stderr, "usage: tls_reuse CAFILE URL FLAGS1 FLAGS2 [CERT1 KEY1 CERT2 KEY2]\n");
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (origin_new(&o) != 0)
		return 3;
	for (int i = 3; i <= 4; i++) {
		struct origin_request req = {0};
		struct origin_result res;
		size_t bytes = 0;
		struct origin_sink sink = {on_start, on_data, &bytes};
		uint32_t flags;

		if (flags_parse(argv[i], &flags) != 0) {
			fprintf(stderr, "bad flags %s\n", argv[i]);
			rc = 2;
			break;
		}
		req.url = argv[2];
		req.ca_file = argv[1];
		req.security_flags = flags;
		if (argc == 9) {
			const char *cert = argv[5 + 2 * (i - 3)], *key = argv[6 + 2 * (i - 3)];

			req.headers_for = argv[2];
			req.client_cert = strcmp(cert, "-") != 0 ? cert : NULL;
			req.client_key = strcmp(key, "-") != 0 ? key : NULL;
		}
		if (origin_fetch(o, &req, &sink, &res) != 0) {
			rc = 3;
			break;
		}
		printf("hr=0x%08X bytes=%zu %s\n", (unsigned)res.hr, bytes, res.message);
		origin_result_clear(&res);
	}
	origin_free(o);
	curl_global_cleanup();
	return rc;
}
