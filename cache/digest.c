/*
 * digest.c - SHA-256 through OpenSSL's EVP interface, and its hex form.
 */
#include <string.h>

#include <openssl/evp.h>

#include "cache.h"
#include "cache_int.h"

static const char hex_digits[] = "0123456789abcdef";

void bg_hex(const void *p, size_t n, char *out)
{
	const unsigned char *d = p;

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex_digits[d[i] >> 4];
		out[2 * i + 1] = hex_digits[d[i] & 0x0f];
	}
	out[2 * n] = '\0';
}

bool bg_is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

void bg_sha256_hex(const unsigned char d[BG_SHA256_LEN], char out[BG_SHA256_HEX_LEN + 1])
{
	bg_hex(d, BG_SHA256_LEN, out);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int bg_sha256_from_hex(const char *hex, unsigned char d[BG_SHA256_LEN])
{
	unsigned char tmp[BG_SHA256_LEN];

	if (hex == NULL || d == NULL)
		return BG_EINVAL;
	/* strnlen stops early on short input and also rejects trailing
	 * characters after the 64 digits. */
	if (strnlen(hex, BG_SHA256_HEX_LEN + 1) != BG_SHA256_HEX_LEN)
		return BG_EINVAL;
	for (size_t i = 0; i < BG_SHA256_LEN; i++) {
		int hi = hex_value(hex[2 * i]);
		int lo = hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return BG_EINVAL;
		tmp[i] = (unsigned char)(hi << 4 | lo);
	}
	/* d is written only on success so a failed parse leaves it alone. */
	memcpy(d, tmp, sizeof(tmp));
	return 0;
}

int ci_sha256(const void *p, size_t len, unsigned char d[BG_SHA256_LEN])
{
	unsigned int dlen = 0;
	static const unsigned char empty;

	/* EVP_Digest wants a valid pointer even for an empty message. */
	if (p == NULL)
		p = &empty;
	if (EVP_Digest(p, len, d, &dlen, EVP_sha256(), NULL) != 1 || dlen != BG_SHA256_LEN) {
		memset(d, 0, BG_SHA256_LEN);
		return BG_ENOMEM;
	}
	return 0;
}

void bg_sha256(const void *p, size_t len, unsigned char d[BG_SHA256_LEN])
{
	/* EVP_Digest fails only when OpenSSL cannot allocate its context;
	 * the public interface has no error path, so d is left all zero,
	 * which matches no real content.  The store itself uses the checked
	 * variant so that it never files a record under that digest. */
	(void)ci_sha256(p, len, d);
}
