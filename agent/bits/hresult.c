/* hresult.c - the HRESULTs users see in job errors, from one table. */
#include <stdio.h>

#include "bits.h"

static const struct hr_entry {
	uint32_t code;
	bool transient;
	const char *symbol;
	const char *message;
} table[] = {
#define XX(sym, code, transient, msg) {code, transient, #sym, msg},
	HR_MAP(XX)
#undef XX
};

static const struct hr_entry *
lookup(uint32_t hr)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].code == hr)
			return &table[i];
	return NULL;
}

static bool
is_http_error(uint32_t hr)
{
	return (hr & 0xFFFF0000u) == HR_HTTP_ERROR_BASE;
}

const char *
hr_symbol(uint32_t hr, char *buf, size_t len)
{
	const struct hr_entry *e = lookup(hr);

	if (e != NULL)
		return e->symbol;
	if (is_http_error(hr))
		snprintf(buf, len, "BG_E_HTTP_ERROR_%u", (unsigned)(hr & 0xFFFFu));
	else
		snprintf(buf, len, "HRESULT_0x%08X", (unsigned)hr);
	return buf;
}

const char *
hr_message(uint32_t hr)
{
	const struct hr_entry *e = lookup(hr);

	if (e != NULL)
		return e->message;
	if (is_http_error(hr))
		return "the server answered with an HTTP error";
	return "error";
}

bool
hr_transient(uint32_t hr)
{
	const struct hr_entry *e = lookup(hr);

	if (e != NULL)
		return e->transient;
	if (is_http_error(hr)) {
		unsigned status = hr & 0xFFFFu;

		/* As BITS: server-side trouble and throttling may clear up. */
		return status >= 500 || status == 408 || status == 429;
	}
	return false;
}

uint32_t
hr_from_http(long status)
{
	if (status < 100 || status > 999)
		return HR_ERROR_WINHTTP_INVALID_SERVER_RESPONSE;
	return HR_HTTP_ERROR_BASE | (uint32_t)status;
}

uint32_t
hr_from_redirect(long status)
{
	/* HRESULT_FROM_WIN32(HTTP_STATUS_xxx): the Win32 value is the status. */
	return HR_FROM_WIN32(status);
}

uint32_t
hr_from_bg(int err)
{
	switch (err) {
	case BG_ENOSPC:
		return HR_ERROR_DISK_FULL;
	case BG_EACCES:
	case BG_ERDONLY:
		return HR_E_ACCESSDENIED;
	case BG_ENOENT:
		return HR_ERROR_PATH_NOT_FOUND;
	case BG_EDIGEST:
		return HR_ERROR_CRC;
	case BG_ETIMEDOUT:
		return HR_ERROR_WINHTTP_TIMEOUT;
	default:
		return HR_ERROR_WRITE_FAULT;
	}
}
