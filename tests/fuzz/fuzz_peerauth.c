/*
 * fuzz_peerauth.c - the peer authentication header (cache/peerauth.c):
 * peer_auth_check() reads the X-Bgcopy-Auth value a peer sent, and
 * peer_key_load() reads the key file.
 *
 * Input: parts separated by FUZZ_SEP: VALUE, KEY, METHOD, PATH, URL, NOW
 * (decimal).  Missing parts get working defaults, so that short inputs
 * still reach the HMAC comparison.
 * Properties: a value is accepted only when it is exactly what
 * peer_auth_sign() makes for the same request within the window, and what
 * peer_auth_sign() makes is accepted (sig = the signature it carries); the
 * key file loader takes 16..4096 bytes and nothing else.
 */
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "cache.h"
#include "fuzz.h"

static const char *const defaults[] = {
	"t=1700000000,sig=0000000000000000000000000000000000000000000000000000000000000000",
	"0123456789abcdef0123456789abcdef",
	"GET",
	"/v1/content",
	"http://127.0.0.1/x",
	"1700000000",
};
#define NPARTS (sizeof(defaults) / sizeof(defaults[0]))

static char key_path[64];

static void
remove_key_file(void)
{
	unlink(key_path);
}

static void
check_key_loader(const char *key, size_t keylen)
{
	unsigned char loaded[PEER_KEY_MAX];
	size_t n = 0;
	FILE *f;
	int err;

	if (key_path[0] == '\0') {
		int fd;

		snprintf(key_path, sizeof(key_path), "/tmp/bgcopy-fuzz-key.XXXXXX");
		if ((fd = mkstemp(key_path)) < 0) {
			key_path[0] = '\0';
			return;
		}
		close(fd);
		atexit(remove_key_file);
	}
	if ((f = fopen(key_path, "wb")) == NULL)
		return;
	fwrite(key, 1, keylen, f);
	fclose(f);
	err = peer_key_load(key_path, loaded, &n);
	if (err == 0)
		FUZZ_ASSERT(n >= PEER_KEY_MIN && n <= PEER_KEY_MAX && n <= keylen &&
		            memcmp(loaded, key, n) == 0);
	else
		FUZZ_ASSERT(err == BG_EINVAL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_part parts[NPARTS];
	char *s[NPARTS] = {NULL};
	size_t n = fuzz_split(data, size, parts, NPARTS), keylen;
	unsigned char sig[BG_SHA256_LEN], sig2[BG_SHA256_LEN];
	char good[PEER_AUTH_VALUE_MAX];
	int64_t now;
	int rc;

	for (size_t i = 0; i < NPARTS; i++) {
		s[i] = i < n ? fuzz_str(parts[i].p, parts[i].n) : fuzz_str(defaults[i], strlen(defaults[i]));
		if (s[i] == NULL)
			goto out;
	}
	/* The key is bytes (a file), NULs included. */
	keylen = n > 1 ? parts[1].n : strlen(defaults[1]);
	const char *key = n > 1 ? (const char *)parts[1].p : defaults[1];
	now = (int64_t)strtoll(s[5], NULL, 10);
	/* Times come from the clock; keep them where time_t arithmetic is sane. */
	if (now < 0 || now > INT64_C(1) << 40)
		now = 1700000000;

	rc = peer_auth_check((const unsigned char *)key, keylen, s[2], s[3], s[4], s[0], now, sig);
	if (peer_auth_sign((const unsigned char *)key, keylen, s[2], s[3], s[4], now, good,
	                   sizeof(good)) == 0) {
		FUZZ_ASSERT(peer_auth_check((const unsigned char *)key, keylen, s[2], s[3], s[4],
		                            good, now, sig2) == 0);
		if (rc == 0) {
			/* Accepted: the value carries a time inside the window, and
			 * its signature is the one that counts: another digit in
			 * it is refused (signatures carry a random nonce, so ours
			 * for the same time would differ). */
			char bent[PEER_AUTH_VALUE_MAX + 1];
			int64_t t = (int64_t)strtoll(s[0] + 2, NULL, 10);
			char *at;

			FUZZ_ASSERT(t >= now - PEER_AUTH_WINDOW && t <= now + PEER_AUTH_WINDOW);
			snprintf(bent, sizeof(bent), "%s", s[0]);
			at = strstr(bent, ",sig=");
			FUZZ_ASSERT(at != NULL);
			at[5] = at[5] == '0' ? '1' : '0';
			FUZZ_ASSERT(peer_auth_check((const unsigned char *)key, keylen, s[2], s[3], s[4],
			                            bent, now, sig2) != 0);
		} else {
			FUZZ_ASSERT(rc == BG_EACCES);
		}
	}
	check_key_loader(key, keylen);
out:
	for (size_t i = 0; i < NPARTS; i++)
		free(s[i]);
	return 0;
}
