/*
 * fuzz_peer.c - what a LAN peer answers, as the peer client reads it
 * (agent/peer.c): the HEAD that describes an entry (ETag as the content's
 * SHA-256, X-Origin-ETag, Last-Modified, Content-Length) and the GET that
 * brings its bytes (status, Content-Range, the ETag again).
 *
 * The real peer_lookup() and peer_fetch() talk to a scripted server on
 * 127.0.0.1 (loopback.c): the first connection gets the first response, the
 * second the second.
 *
 * Input: one option byte, then the HEAD answer and the GET answer separated
 * by FUZZ_SEP.  Option bits: 0 requests are signed (a key is set), 1-2 the
 * offset asked for (0, 1, 100, half the entry), 3 the sink refuses the start.
 * Properties: a hit carries a digest; the sink is started once, at the
 * offset asked and with the size the HEAD announced; data only after that;
 * success means the sink was started.
 */
#include <stdio.h>

#include <curl/curl.h>

#include "net_int.h"
#include "fuzz.h"
#include "loopback.h"

struct sink_state {
	unsigned starts;
	uint64_t offset, size;
	bool fail_start;
};

static int
on_start(void *arg, const struct origin_response *resp)
{
	struct sink_state *s = arg;

	FUZZ_ASSERT(++s->starts == 1);
	FUZZ_ASSERT(resp->start == s->offset);
	FUZZ_ASSERT(resp->total == (int64_t)s->size);
	return s->fail_start ? BG_ENOSPC : 0;
}

static int
on_data(void *arg, const void *p, size_t len)
{
	struct sink_state *s = arg;

	(void)p;
	(void)len;
	FUZZ_ASSERT(s->starts == 1);
	return 0;
}

static CURLSH *easy; /* the share peer.c makes its handles on */
static char peer[32];

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_part parts[2];
	struct peer_config pc;
	struct peer_entry entry;
	struct sink_state st;
	struct origin_sink sink = {on_start, on_data, &st};
	const char *key = "http://origin.fuzz/dir/file bin?q=1&r=%41";
	char why[256];
	int err, sink_err = 0;
	uint8_t opt;

	if (easy == NULL) {
		unsigned port = loopback_port();

		FUZZ_ASSERT(port != 0);
		curl_global_init(CURL_GLOBAL_DEFAULT);
		FUZZ_ASSERT((easy = origin_share_new()) != NULL);
		snprintf(peer, sizeof(peer), "127.0.0.1:%u", port);
	}
	if (size < 1)
		return 0;
	opt = data[0];
	loopback_script(parts, fuzz_split(data + 1, size - 1, parts, 2));

	memset(&pc, 0, sizeof(pc));
	if (opt & 1) {
		memset(pc.key, 'k', 32);
		pc.keylen = 32;
	}
	err = peer_lookup(easy, &pc, peer, key, &entry, why, sizeof(why));
	FUZZ_ASSERT(memchr(why, '\0', sizeof(why)) != NULL || err == 0);
	if (err != 0)
		return 0;
	FUZZ_ASSERT(entry.has_sha);
	memset(&st, 0, sizeof(st));
	st.size = entry.size;
	switch ((opt >> 1) & 3) {
	case 0:
		st.offset = 0;
		break;
	case 1:
		st.offset = 1;
		break;
	case 2:
		st.offset = 100;
		break;
	default:
		st.offset = entry.size / 2;
		break;
	}
	st.fail_start = (opt & 8) != 0;
	err = peer_fetch(easy, &pc, peer, key, &entry, st.offset, &sink, &sink_err, why, sizeof(why));
	if (err == 0)
		FUZZ_ASSERT(st.starts == 1 && sink_err == 0);
	if (sink_err != 0)
		FUZZ_ASSERT(st.starts == 1);
	peer_entry_clear(&entry);
	return 0;
}
