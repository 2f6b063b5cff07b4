/*
 * err.c - the project's error table, built from BG_ERRNO_MAP in cache.h so
 * that names, values and messages can never drift apart.
 */
#include <errno.h>

#include "cache.h"

const char *bg_strerror(int err)
{
	switch (err) {
	case BG_OK:
		return "success";
#define XX(name, value, msg) \
	case BG_##name:      \
		return msg;
		BG_ERRNO_MAP(XX)
#undef XX
	default:
		return "unknown error";
	}
}

const char *bg_err_name(int err)
{
	switch (err) {
	case BG_OK:
		return "BG_OK";
#define XX(name, value, msg) \
	case BG_##name:      \
		return "BG_" #name;
		BG_ERRNO_MAP(XX)
#undef XX
	default:
		return "BG_UNKNOWN";
	}
}

int bg_err_from_errno(int errnum)
{
	/* EWOULDBLOCK equals EAGAIN on Linux, so it needs no case of its own;
	 * 0 is not an error and lands in the default like any other stray
	 * value, so that a caller never turns a failure into success. */
	switch (errnum) {
	case ENOMEM:
		return BG_ENOMEM;
	case ENOENT:
		return BG_ENOENT;
	case EEXIST:
		return BG_EEXIST;
	case ENOSPC:
	case EDQUOT:
		return BG_ENOSPC;
	case EACCES:
	case EPERM:
	case EROFS:
		return BG_EACCES;
	case EBUSY:
		return BG_EBUSY;
	case EAGAIN:
		return BG_EAGAIN;
	case EINVAL:
		return BG_EINVAL;
	default:
		return BG_EIO;
	}
}
