/* node.c - the node's identity: HOME/node-id, made once. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "cache.h"

#define NODE_ID_FILE "node-id"

static bool
valid_id(const char *s, size_t n)
{
	return n == BG_NODE_ID_LEN && bg_is_lower_hex(s, n);
}

/* 0 and out filled when path holds an id; BG_ENOENT when there is no file;
 * BG_ECORRUPT when it holds something else. */
static int
read_id(const char *path, char out[BG_NODE_ID_LEN + 1])
{
	char buf[BG_NODE_ID_LEN + 2];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return bg_err_from_errno(errno);
	do
		n = read(fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n < 0)
		return BG_EIO;
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (!valid_id(buf, (size_t)n))
		return BG_ECORRUPT;
	memcpy(out, buf, BG_NODE_ID_LEN);
	out[BG_NODE_ID_LEN] = '\0';
	return 0;
}

int
bg_node_id(const char *home, char out[BG_NODE_ID_LEN + 1])
{
	unsigned char r[BG_NODE_ID_LEN / 2];
	char path[PATH_MAX], tmp[PATH_MAX], line[BG_NODE_ID_LEN + 2];
	struct stat sb;
	int err;

	if (home != NULL) {
		if (snprintf(path, sizeof(path), "%s/" NODE_ID_FILE, home) >= (int)sizeof(path))
			return BG_ELIMIT;
		err = read_id(path, out);
		if (err != BG_ENOENT)
			return err;
	}
	if (RAND_bytes(r, sizeof(r)) != 1)
		return BG_EIO;
	bg_hex(r, sizeof(r), out);
	if (home == NULL || stat(home, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return 0; /* no home yet: this process's id */
	/* Made whole under a temporary name, then linked into place: link()
	 * never replaces, so of two processes making it at once the second
	 * reads the first one's id. */
	if (snprintf(tmp, sizeof(tmp), "%s/." NODE_ID_FILE ".%ld", home, (long)getpid()) >=
	    (int)sizeof(tmp))
		return BG_ELIMIT;
	snprintf(line, sizeof(line), "%s\n", out);
	(void)unlink(tmp);
	if ((err = bg_file_write_atomic(tmp, line, BG_NODE_ID_LEN + 1, 0644)) != 0)
		return err;
	if (link(tmp, path) != 0) {
		err = errno;
		(void)unlink(tmp);
		return err == EEXIST ? read_id(path, out) : bg_err_from_errno(err);
	}
	(void)unlink(tmp);
	return bg_fsync_path(home, true);
}
