/*
 * fuzz_origin.c - what an origin answers, as the origin client reads it
 * (agent/origin.c): status lines, Location / ETag / Last-Modified /
 * Content-Range / Content-Length headers, the redirect decision of each hop
 * (policy, schemes, hop limit, loops, DISALLOW's remote name), resume checks
 * (206 ranges against If-Range) and the hand-over to the sink.
 *
 * origin.c keeps its parsers static and feeds them from libcurl callbacks,
 * so this harness drives the real origin_fetch() against a scripted server
 * on 127.0.0.1 (loopback.c) that is also the request's HTTP proxy: every
 * hop, whatever host its Location names, reaches the script and nothing
 * leaves the machine (no name is resolved; an https hop gets a CONNECT).
 *
 * Input: one option byte, then the responses of successive connections
 * separated by FUZZ_SEP.  Option bits: 0-1 redirect policy (silent, report,
 * disallow, silent + https-to-http), 2 resume from byte 100 with If-Range,
 * 3 If-Range is a date (else an ETag), 4 HEAD, 5 the sink refuses the start,
 * 6 the sink refuses data, 7 credentials set for another origin.
 * Properties: the sink is started at most once per fetch, for a 200 or a 206
 * at the offset asked, never for an https URL (no TLS server answers here,
 * so such a start came from something else than the origin); data only
 * after a start; a success names its final URL; a refusal by the sink
 * comes back as its error.
 */
#include <inttypes.h>
#include <stdio.h>

#include <curl/curl.h>

#include "net.h"
#include "fuzz.h"
#include "loopback.h"

#define MAX_RESPONSES 16

struct sink_state {
	unsigned starts;
	uint64_t bytes;
	uint64_t offset;
	bool fail_start, fail_data;
};

static int
on_start(void *arg, const struct origin_response *resp)
{
	struct sink_state *s = arg;

	s->starts++;
	FUZZ_ASSERT(s->starts == 1);
	FUZZ_ASSERT(resp->status == 200 || resp->status == 206);
	FUZZ_ASSERT(resp->final_url != NULL && strncmp(resp->final_url, "https:", 6) != 0);
	FUZZ_ASSERT(resp->start == 0 || (resp->status == 206 && resp->start == s->offset));
	FUZZ_ASSERT(resp->total >= -1);
	return s->fail_start ? BG_ENOSPC : 0;
}

static int
on_data(void *arg, const void *p, size_t len)
{
	struct sink_state *s = arg;

	FUZZ_ASSERT(s->starts == 1);
	(void)p;
	s->bytes += len;
	return s->fail_data ? BG_EIO : 0;
}

static struct origin *client;
static char proxy[64];

static void
setup(void)
{
	unsigned port = loopback_port();

	FUZZ_ASSERT(port != 0);
	/* Every request goes to the proxy: no_proxy must not send one elsewhere. */
	unsetenv("no_proxy");
	unsetenv("NO_PROXY");
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%u", port);
	FUZZ_ASSERT(origin_new(&client) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t policies[] = {
		BG_HTTP_REDIRECT_POLICY_ALLOW_SILENT, BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT,
		BG_HTTP_REDIRECT_POLICY_DISALLOW,
		BG_HTTP_REDIRECT_POLICY_ALLOW_SILENT | BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP};
	static const char *const headers[] = {"Authorization: Basic Zm9vOmJhcg==", "X-Fuzz: 1",
	                                      NULL};
	struct fuzz_part parts[MAX_RESPONSES];
	struct origin_request req;
	struct origin_result res;
	struct sink_state st;
	struct origin_sink sink = {on_start, on_data, &st};
	uint8_t opt;
	size_t n;
	int err;

	if (client == NULL)
		setup();
	if (size < 1)
		return 0;
	opt = data[0];
	n = fuzz_split(data + 1, size - 1, parts, MAX_RESPONSES);
	loopback_script(parts, n);

	memset(&st, 0, sizeof(st));
	memset(&req, 0, sizeof(req));
	req.url = "http://origin.fuzz/dir/file.bin";
	req.security_flags = policies[opt & 3];
	req.proxy = proxy;
	if (opt & 0x04) {
		req.offset = st.offset = 100;
		req.if_range = (opt & 0x08) ? "Wed, 21 Oct 2015 07:28:00 GMT" : "\"v1\"";
	}
	req.head = (opt & 0x10) != 0;
	st.fail_start = (opt & 0x20) != 0;
	st.fail_data = (opt & 0x40) != 0;
	if (opt & 0x80) {
		req.headers = headers;
		req.headers_for = "http://other.fuzz/";
		req.server_auth.user = "user";
		req.server_auth.password = "secret";
	}
	err = origin_fetch(client, &req, &sink, &res);
	if (err == 0 && res.hr == HR_S_OK) {
		FUZZ_ASSERT(st.starts == 1 && res.final_url != NULL);
		FUZZ_ASSERT(res.local_err == 0);
	}
	if (res.local_err != 0)
		FUZZ_ASSERT(st.starts == 1 && res.hr != HR_S_OK);
	if (res.remote_url != NULL) {
		bool https;

		/* A remote name that changed is a URL the job can store. */
		FUZZ_ASSERT(strlen(res.remote_url) <= URL_MAX);
		(void)url_scheme_ok(res.remote_url, &https);
	}
	FUZZ_ASSERT(memchr(res.message, '\0', sizeof(res.message)) != NULL);
	origin_result_clear(&res);
	return 0;
}
