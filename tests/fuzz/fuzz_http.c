/*
 * fuzz_http.c - the HTTP response line helpers (agent/http.c) that the
 * origin client's and the peer client's header callbacks run on every line
 * an origin or a peer sends.
 *
 * Input: a response head; each line (its "\n" included) is handed over the
 * way libcurl's header callback gets it: in a buffer of exactly its length,
 * not NUL-terminated.
 * Properties: nothing is read outside the line; a split header's name and
 * value lie inside it; a parsed number is what the digits say; a digest
 * taken from a Repr-Digest-like value is spelt in it; a Content-Range taken
 * (as a 206's or a 416's) is a valid range, spelt in the value as RFC 9110
 * section 14.4 writes it; a status line's reason phrase fits its buffer and
 * holds no control character.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <strings.h>

#include <openssl/evp.h>

#include "net_int.h"
#include "fuzz.h"

static const char *const names[] = {"Location", "ETag", "Last-Modified", "Content-Range",
                                    "Content-Length", "X-Origin-ETag", "Repr-Digest"};

/* The value with the unit in lower case and each number without leading
 * zeros: how a Content-Range taken must then read. */
static void
range_canonical(const char *v, char *out, size_t len)
{
	size_t o = 0;
	bool lead = true; /* before the first digit of a number but its last */

	for (size_t i = 0; v[i] != '\0' && o + 1 < len; i++) {
		if (!isdigit((unsigned char)v[i]))
			lead = true;
		else if (lead && v[i] == '0' && isdigit((unsigned char)v[i + 1]))
			continue;
		else
			lead = false;
		out[o++] = i < 5 ? (char)tolower((unsigned char)v[i]) : v[i];
	}
	out[o] = '\0';
}

/* A Content-Range value as a 206 and as a 416 would carry it. */
static void
content_range(const char *value, size_t vlen)
{
	static const long statuses[] = {206, 416};
	char *v = http_value_dup(value, vlen, STORE_VALIDATOR_MAX);
	struct http_content_range cr;

	if (v == NULL)
		return;
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		char want[96], got[96];

		if (http_content_range(v, strlen(v), statuses[i], &cr) != 0)
			continue;
		if (statuses[i] == 416) {
			FUZZ_ASSERT(cr.total >= 0);
			snprintf(want, sizeof(want), "bytes */%" PRId64, cr.total);
		} else {
			FUZZ_ASSERT(cr.first <= cr.last);
			FUZZ_ASSERT(cr.total == -1 || (cr.total >= 0 && cr.last < (uint64_t)cr.total));
			if (cr.total == -1)
				snprintf(want, sizeof(want), "bytes %" PRIu64 "-%" PRIu64 "/*", cr.first,
				         cr.last);
			else
				snprintf(want, sizeof(want), "bytes %" PRIu64 "-%" PRIu64 "/%" PRId64,
				         cr.first, cr.last, cr.total);
		}
		/* Digits, one SP, the unit: nothing else was let through. */
		range_canonical(v, got, sizeof(got));
		FUZZ_ASSERT(strcmp(got, want) == 0);
	}
	/* The raw value, blanks and all, never reads past its end. */
	(void)!http_content_range(value, vlen, 206, &cr);
	free(v);
}

static void
one_line(const uint8_t *p, size_t n)
{
	char *line = malloc(n > 0 ? n : 1);
	const char *name, *value;
	size_t namelen, vlen;
	unsigned char d[BG_SHA256_LEN];
	uint64_t v;

	if (line == NULL)
		return;
	memcpy(line, p, n);
	if (http_status_line(line, n) >= 0) {
		char reason[16];

		/* The reason phrase fits the buffer, cut, and is safe to print. */
		http_status_reason(line, n, reason, sizeof(reason));
		FUZZ_ASSERT(strlen(reason) < sizeof(reason));
		for (const char *r = reason; *r != '\0'; r++)
			FUZZ_ASSERT((unsigned char)*r >= 0x20 && *r != 0x7F);
	}
	if (http_header_split(line, n, &name, &namelen, &value, &vlen)) {
		FUZZ_ASSERT(name == line && namelen > 0 && namelen < n);
		FUZZ_ASSERT(value >= line && value + vlen == line + n);
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			(void)http_header_is(name, namelen, names[i]);
		free(http_value_dup(value, vlen, STORE_VALIDATOR_MAX));
		content_range(value, vlen);
		if (http_digest_sha256(value, vlen, d)) {
			unsigned char b64[48];

			/* A digest taken is the base64 of a byte sequence in the value. */
			FUZZ_ASSERT(EVP_EncodeBlock(b64, d, BG_SHA256_LEN) == 44);
			FUZZ_ASSERT(memmem(value, vlen, b64, 44) != NULL);
		}
		if (http_value_u64(value, vlen, &v)) {
			char *s = http_value_dup(value, vlen, 64), digits[32];

			FUZZ_ASSERT(s != NULL);
			snprintf(digits, sizeof(digits), "%" PRIu64, v);
			/* Leading zeros aside, the value is the digits sent. */
			FUZZ_ASSERT(strcmp(s + strspn(s, "0"), v == 0 ? "" : digits) == 0);
			free(s);
		}
	}
	free(line);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	while (size > 0) {
		const uint8_t *nl = memchr(data, '\n', size);
		size_t n = nl != NULL ? (size_t)(nl - data) + 1 : size;

		one_line(data, n);
		data += n;
		size -= n;
	}
	return 0;
}
