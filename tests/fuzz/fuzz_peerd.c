/*
 * fuzz_peerd.c - requests as bgcopy-peerd reads them (peerd/peerd.c): the
 * request line and path (absolute-form included), Host and field names, the
 * url= argument, the preconditions (If-Match, If-None-Match and their
 * dates), Range and If-Range, the X-Bgcopy-Auth header and the replay set,
 * HEAD and bodies announced.
 * libmicrohttpd parses the bytes and calls peerd's handler, so this harness
 * runs two real daemons (peerd_start(), one without a key and one with)
 * on 127.0.0.1 over a store made once per process, and sends each input as
 * the bytes of one connection.
 *
 * The store holds: a small entry (served from memory), a 70,000-byte one
 * (served by the read callback), an empty one, a private one and a key
 * whose content is gone (see setup()).
 *
 * Input: one byte (bit 0: the daemon with a key), then the request bytes,
 * to which the harness adds an empty line ("\r\n\r\n"): a request head
 * left open would only wait for the daemon's idle timeout.
 * "@AUTH@" in them is replaced by a valid X-Bgcopy-Auth value for the
 * request's method (its first word), /v1/content and the small entry's URL,
 * signed now; sent twice, the second is a replay.
 * Properties: whatever peerd answers starts with an HTTP/1.x status line;
 * the daemons keep answering (a health check after each input).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"
#include "peerd.h"

#define URL_SMALL "http://origin.fuzz/small"
#define LARGE_BYTES 70000
#define IO_TIMEOUT_MS 1000
#define PIPELINE_WAIT_MS 10
#define RESPONSE_MAX (256 * 1024)

static const unsigned char key[] = "fuzz-peer-key-0123456789abcdef";
static char home[64];
static struct bg_store *store;
static struct peerd *daemons[2];

static void
teardown(void)
{
	for (int i = 0; i < 2; i++)
		peerd_stop(daemons[i]);
	store_close(store);
	fuzz_rm_tree(home);
}

static int
add_entry(struct bg_txn *txn, const char *url, const void *data, size_t len, uint64_t blob,
          bool with_content, unsigned flags)
{
	struct store_key k;
	struct store_content c = {.blob = blob, .size = len, .created = 1, .last_used_ns = 1};
	int rc;

	memset(&k, 0, sizeof(k));
	k.url = (char *)url;
	bg_sha256(data, len, k.sha256);
	k.size = len;
	k.etag = (char *)"\"origin-v1\"";
	k.last_modified = (char *)"Wed, 21 Oct 2015 07:28:00 GMT";
	k.flags = flags;
	if ((rc = txn_key_put(txn, &k)) != 0 || !with_content)
		return rc;
	for (uint64_t i = 0; i * STORE_CHUNK_BYTES < len; i++) {
		size_t n = len - i * STORE_CHUNK_BYTES;

		if ((rc = txn_blob_put(txn, blob, i, (const char *)data + i * STORE_CHUNK_BYTES,
		                       n < STORE_CHUNK_BYTES ? n : STORE_CHUNK_BYTES)) != 0)
			return rc;
	}
	return txn_content_put(txn, k.sha256, &c);
}

static int
fill_fn(struct bg_txn *txn, void *arg)
{
	static char large[LARGE_BYTES];
	uint64_t b[3];
	int rc;

	(void)arg;
	for (size_t i = 0; i < sizeof(large); i++)
		large[i] = (char)('a' + i % 26);
	for (int i = 0; i < 3; i++)
		if ((rc = txn_blob_new(txn, &b[i])) != 0)
			return rc;
	if ((rc = add_entry(txn, URL_SMALL, "hello fuzz\n", 11, b[0], true, 0)) != 0 ||
	    (rc = add_entry(txn, "http://origin.fuzz/large", large, sizeof(large), b[1], true, 0)) != 0 ||
	    (rc = add_entry(txn, "http://origin.fuzz/empty", "", 0, b[2], true, 0)) != 0 ||
	    (rc = add_entry(txn, "http://origin.fuzz/private", "secret\n", 7, b[0], false,
	                    STORE_KEY_PRIVATE)) != 0 ||
	    (rc = add_entry(txn, "http://origin.fuzz/gone", "gone\n", 5, b[0], false, 0)) != 0)
		return rc;
	return 0;
}

static void
setup(void)
{
	struct peerd_config c;
	struct bg_store *rw = NULL;

	snprintf(home, sizeof(home), "/tmp/bgcopy-fuzz-peerd.XXXXXX");
	FUZZ_ASSERT(mkdtemp(home) != NULL);
	FUZZ_ASSERT(store_open(home, 0, NULL, &rw) == 0);
	FUZZ_ASSERT(store_update(rw, fill_fn, NULL) == 0);
	store_close(rw);
	FUZZ_ASSERT(store_open(home, STORE_RDONLY, NULL, &store) == 0);
	for (int i = 0; i < 2; i++) {
		peerd_config_init(&c);
		c.port = 0;
		c.threads = 1;
		/* Connections the harness closed may linger until libmicrohttpd
		 * notices: leave room, or the health check is refused. */
		c.max_connections = 512;
		c.timeout = 1;
		if (i == 1) {
			c.peer_key = key;
			c.peer_key_len = sizeof(key) - 1;
		}
		FUZZ_ASSERT(peerd_start(&c, store, &daemons[i]) == 0);
	}
	atexit(teardown);
}

/* Whether resp holds a whole first response: libmicrohttpd keeps the
 * connection open after it (a half-closed request side does not end a
 * keep-alive connection), so the end is found from Content-Length. */
static bool
first_complete(const char *resp, size_t got, bool head)
{
	const char *end = memmem(resp, got, "\r\n\r\n", 4), *cl;
	size_t hlen, body = 0;

	if (end == NULL)
		return false;
	hlen = (size_t)(end - resp) + 4;
	if (!head && got >= 12 && memcmp(resp + 9, "1", 1) != 0 && memcmp(resp + 9, "204", 3) != 0 &&
	    memcmp(resp + 9, "304", 3) != 0) {
		cl = memmem(resp, hlen, "\r\nContent-Length: ", 18);
		if (cl == NULL)
			return false;
		body = (size_t)strtoull(cl + 18, NULL, 10);
	}
	return got >= hlen + body;
}

/* Sends req on a new connection, half-closes it and reads the answer: to
 * the end of the connection, or to a short pause after a whole response.
 * Returns the bytes received (at most cap - 1; resp is NUL-terminated). */
static size_t
exchange(unsigned port, const uint8_t *req, size_t n, char *resp, size_t cap)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	bool head = n >= 5 && memcmp(req, "HEAD ", 5) == 0;
	size_t got = 0;
	int fd, wait_ms = IO_TIMEOUT_MS;

	resp[0] = '\0';
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return 0;
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
		goto out;
	while (n > 0) {
		ssize_t w = send(fd, req, n, MSG_NOSIGNAL);

		if (w <= 0)
			break;
		req += w;
		n -= (size_t)w;
	}
	shutdown(fd, SHUT_WR);
	while (got + 1 < cap) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&p, 1, wait_ms) <= 0)
			break;
		if ((r = recv(fd, resp + got, cap - 1 - got, 0)) <= 0)
			break;
		got += (size_t)r;
		resp[got] = '\0';
		/* Pipelined requests may bring more answers: wait a little. */
		if (first_complete(resp, got, head))
			wait_ms = PIPELINE_WAIT_MS;
	}
out:
	close(fd);
	return got;
}

/* The request with "@AUTH@" replaced by a fresh signature (new buffer). */
static uint8_t *
with_auth(const uint8_t *data, size_t size, size_t *outlen)
{
	static const char mark[] = "@AUTH@";
	char method[8] = "GET", value[PEER_AUTH_VALUE_MAX];
	const uint8_t *at = memmem(data, size, mark, sizeof(mark) - 1);
	size_t vlen, mlen = strcspn((const char *)data, " ");
	uint8_t *out;

	if (at == NULL)
		return NULL;
	if (mlen < sizeof(method) && mlen < size) {
		memcpy(method, data, mlen);
		method[mlen] = '\0';
	}
	if (peer_auth_sign(key, sizeof(key) - 1, method, PEER_PATH_CONTENT, URL_SMALL,
	                   (int64_t)time(NULL), value, sizeof(value)) != 0)
		return NULL;
	vlen = strlen(value);
	if ((out = malloc(size - (sizeof(mark) - 1) + vlen)) == NULL)
		return NULL;
	memcpy(out, data, (size_t)(at - data));
	memcpy(out + (at - data), value, vlen);
	memcpy(out + (at - data) + vlen, at + sizeof(mark) - 1,
	       size - (size_t)(at - data) - (sizeof(mark) - 1));
	*outlen = size - (sizeof(mark) - 1) + vlen;
	return out;
}

/* The bytes to send: the input, "@AUTH@" replaced, an empty line added
 * (new buffer, *outlen bytes), or NULL when out of memory. */
static uint8_t *
request_of(const uint8_t *data, size_t size, size_t *outlen)
{
	char *copy = malloc(size + 5);
	uint8_t *req;

	if (copy == NULL)
		return NULL;
	/* NUL-terminated, so that with_auth() may scan it as a string. */
	memcpy(copy, data, size);
	memcpy(copy + size, "\r\n\r\n", 5);
	if ((req = with_auth((const uint8_t *)copy, size + 4, outlen)) != NULL) {
		free(copy);
		return req;
	}
	*outlen = size + 4;
	return (uint8_t *)copy;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char health[] = "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	char *resp;
	uint8_t *req = NULL;
	size_t n, got;
	unsigned port;

	if (store == NULL)
		setup();
	if (size < 1 || (resp = malloc(RESPONSE_MAX)) == NULL)
		return 0;
	port = peerd_port(daemons[data[0] & 1]);
	data++;
	size--;
	req = request_of(data, size, &n);
	got = req != NULL ? exchange(port, req, n, resp, RESPONSE_MAX) : 0;
	if (got > 0)
		FUZZ_ASSERT(got >= 9 && memcmp(resp, "HTTP/1.", 7) == 0);
	free(req);
	got = exchange(port, (const uint8_t *)health, sizeof(health) - 1, resp, RESPONSE_MAX);
	if (got < 12 || memcmp(resp + 9, "200", 3) != 0)
		fprintf(stderr, "health check answered (%zu bytes): %.60s\n", got, resp);
	FUZZ_ASSERT(got >= 12 && memcmp(resp + 9, "200", 3) == 0);
	free(resp);
	return 0;
}
