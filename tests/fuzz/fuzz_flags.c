/*
 * fuzz_flags.c - the security flags parser (agent/flags.c): what
 * `--security-flags` and `set-security-flags` take from the command line.
 *
 * Input: the FLAGS argument (cut at the first NUL, as argv would be).
 * Properties: an accepted value is valid, and its printed form parses back
 * to the same value; printing never overruns, whatever the buffer size.
 */
#include <stdio.h>

#include "bits.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_str(data, size);
	char buf[160], *names;
	uint32_t flags = 0, back = 0, raw = 0;

	if (s == NULL)
		return 0;
	if (flags_parse(s, &flags) == 0) {
		FUZZ_ASSERT(flags_valid(flags));
		flags_format(flags, buf, sizeof(buf));
		/* "0x0901 redirect-report|allow-https-to-http": both halves read back. */
		FUZZ_ASSERT((names = strchr(buf, ' ')) != NULL);
		*names++ = '\0';
		FUZZ_ASSERT(flags_parse(buf, &back) == 0 && back == flags);
		FUZZ_ASSERT(flags_parse(names, &back) == 0 && back == flags);
	}
	/* Any 32-bit value prints, into buffers of every small size. */
	memcpy(&raw, data, size < sizeof(raw) ? size : sizeof(raw));
	(void)flags_valid(raw);
	for (size_t len = 1; len <= sizeof(buf); len += len < 16 ? 1 : 37) {
		char *small = malloc(len);

		if (small == NULL)
			break;
		flags_format(raw, small, len);
		FUZZ_ASSERT(strlen(small) < len);
		free(small);
	}
	free(s);
	return 0;
}
