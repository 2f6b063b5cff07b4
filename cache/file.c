/*
 * file.c - files replaced whole: a reader sees the old file or the new one,
 * never a part, and after a crash the name holds one of the two.
 *
 * The new bytes go to a temporary file beside the target (same folder, so
 * same filesystem), which is synced and then renamed over the target; the
 * folder is synced last so that the rename itself is on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"

/* Fresh temporary names tried before giving up (only a name left by a dead
 * process of the same pid can be taken). */
#define FILE_TEMP_TRIES 16

static int fsync_path(const char *path, bool dir)
{
	int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
	int rc = fd < 0 || fsync(fd) != 0 ? bg_err_from_errno(errno) : 0;

	if (fd >= 0)
		close(fd);
	return rc;
}

int bg_fsync_path(const char *path, bool dir)
{
	return fsync_path(path, dir);
}

int bg_rename_durable(const char *from, const char *to)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(to, '/');

	if (rename(from, to) != 0)
		return bg_err_from_errno(errno);
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == to)
		snprintf(dir, sizeof(dir), "/");
	else if ((size_t)(slash - to) < sizeof(dir))
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - to), to);
	else
		return 0;
	/* The file is in place whatever happens now: a folder that cannot be
	 * synced costs durability across a power loss, not the rename. */
	(void)fsync_path(dir, true);
	return 0;
}

/* Creates tmp (a given name, removed first) or a fresh PATH.tmp.PID.N. */
static int temp_open(const char *path, const char *given, mode_t mode, char *tmp, size_t len)
{
	static atomic_uint seq;
	int fd;

	if (given != NULL) {
		if (snprintf(tmp, len, "%s", given) >= (int)len)
			return BG_ELIMIT;
		(void)unlink(tmp);
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
		return fd >= 0 ? fd : bg_err_from_errno(errno);
	}
	for (int i = 0; i < FILE_TEMP_TRIES; i++) {
		if (snprintf(tmp, len, "%s.tmp.%ld.%u", path, (long)getpid(),
		             atomic_fetch_add(&seq, 1)) >= (int)len)
			return BG_ELIMIT;
		/* O_EXCL: never another writer's file, nor a link planted there. */
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
		if (fd >= 0)
			return fd;
		if (errno != EEXIST)
			return bg_err_from_errno(errno);
	}
	return BG_EEXIST;
}

int bg_file_replace(const char *path, const char *tmp_name, mode_t mode,
                    int (*fill)(int fd, void *arg), void *arg)
{
	char tmp[PATH_MAX];
	int fd, rc;

	if (path == NULL || fill == NULL)
		return BG_EINVAL;
	fd = temp_open(path, tmp_name, mode, tmp, sizeof(tmp));
	if (fd < 0)
		return fd;
	rc = fill(fd, arg);
	if (rc == 0 && fsync(fd) != 0)
		rc = bg_err_from_errno(errno);
	if (close(fd) != 0 && rc == 0)
		rc = bg_err_from_errno(errno);
	if (rc == 0)
		rc = bg_rename_durable(tmp, path);
	if (rc != 0)
		(void)unlink(tmp);
	return rc;
}

struct bytes {
	const unsigned char *p;
	size_t len;
};

static int write_bytes(int fd, void *arg)
{
	struct bytes *b = arg;

	for (size_t off = 0; off < b->len;) {
		ssize_t n = write(fd, b->p + off, b->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? bg_err_from_errno(errno) : BG_EIO;
		off += (size_t)n;
	}
	return 0;
}

int bg_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	struct bytes b = { data, len };

	if (data == NULL && len > 0)
		return BG_EINVAL;
	return bg_file_replace(path, NULL, mode, write_bytes, &b);
}
