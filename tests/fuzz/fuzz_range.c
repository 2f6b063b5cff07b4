/*
 * fuzz_range.c - the Range header parser of bgcopy-peerd (peerd/range.c).
 *
 * Input: one byte choosing the size of the entry (a table of edge sizes, or
 * the next 8 bytes, little-endian, when the byte is 0xff), then the Range
 * value (cut at its first NUL, as libmicrohttpd hands it over).
 * Properties: a satisfiable range lies inside the entry and is not empty;
 * "unsatisfiable" is only said of a range that starts at or past the end.
 */
#include <stdio.h>

#include "fuzz.h"
#include "peerd.h"

static const uint64_t sizes[] = {0, 1, 2, 10, 100, 65536, 262128, 1000000, INT64_MAX,
                                 UINT64_MAX - 1, UINT64_MAX};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t total, start = 0, len = 0;
	enum peerd_range rr;
	char *value;

	if (size < 1)
		return 0;
	if (data[0] == 0xff && size >= 9) {
		total = 0;
		for (int i = 8; i >= 1; i--)
			total = total << 8 | data[i];
		data += 9;
		size -= 9;
	} else {
		total = sizes[data[0] % (sizeof(sizes) / sizeof(sizes[0]))];
		data++;
		size--;
	}
	if ((value = fuzz_str(data, size)) == NULL)
		return 0;
	rr = peerd_range_parse(value, total, &start, &len);
	switch (rr) {
	case PEERD_RANGE_OK:
		FUZZ_ASSERT(len >= 1 && start < total && len <= total - start);
		break;
	case PEERD_RANGE_UNSATISFIABLE:
	case PEERD_RANGE_NONE:
		break;
	default:
		FUZZ_ASSERT(!"unknown result");
	}
	free(value);
	return 0;
}
