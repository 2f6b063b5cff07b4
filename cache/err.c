/*
 * err.c - the project's error table, built from BG_ERRNO_MAP in cache.h so
 * that names, values and messages can never drift apart.
 */
#include <errno.h>
#include <stddef.h>

#include "cache.h"

static const struct err_entry {
	int code;
	const char *name;
	const char *msg;
} err_table[] = {
	{ BG_OK, "BG_OK", "success" },
#define XX(name, value, msg) { BG_##name, "BG_" #name, msg },
	BG_ERRNO_MAP(XX)
#undef XX
};

static const struct err_entry *err_find(int err)
{
	for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
		if (err_table[i].code == err)
			return &err_table[i];
	return NULL;
}

const char *bg_strerror(int err)
{
	const struct err_entry *e = err_find(err);

	return e != NULL ? e->msg : "unknown error";
}

const char *bg_err_name(int err)
{
	const struct err_entry *e = err_find(err);

	return e != NULL ? e->name : "BG_UNKNOWN";
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
