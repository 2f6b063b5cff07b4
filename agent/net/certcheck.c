/*
 * certcheck.c - the job's own TLS settings beyond the security flags: its
 * client certificate (checks of the files, as ssh checks a private key) and
 * its certificate check command (BITS's server certificate validation
 * callback as a program: what it reads, how it is run and bounded).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "net.h"
#include "net_int.h"

extern char **environ;

bool
client_cert_is_pkcs11(const char *cert)
{
	return cert != NULL && strncmp(cert, "pkcs11:", 7) == 0;
}

int
client_key_check(const char *path, char *why, size_t len)
{
	struct stat sb;

	if (stat(path, &sb) != 0) {
		int err = bg_err_from_errno(errno);

		snprintf(why, len, "cannot read private key %s: %s", path, strerror(errno));
		return err;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(why, len, "private key %s is not a regular file", path);
		return BG_EINVAL;
	}
	/* As ssh: a key others may read is no longer private, and using it
	 * would hide that. */
	if ((sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		snprintf(why, len,
		         "private key %s is accessible by group or others (mode %04o): chmod 600 it",
		         path, (unsigned)(sb.st_mode & 07777));
		return BG_EUNSAFE;
	}
	if (access(path, R_OK) != 0) {
		int err = bg_err_from_errno(errno);

		snprintf(why, len, "cannot read private key %s: %s", path, strerror(errno));
		return err;
	}
	return 0;
}

int
client_cert_load(const char *path, char *subject, size_t slen, char *not_after, size_t alen,
                 char *why, size_t len)
{
	BIO *b = BIO_new_file(path, "r");
	X509 *x = NULL;
	int err = 0;

	if (b == NULL) {
		snprintf(why, len, "cannot read certificate %s: %s", path, strerror(errno));
		err = errno != 0 ? bg_err_from_errno(errno) : BG_EIO;
		goto out;
	}
	if ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) {
		snprintf(why, len, "%s holds no PEM certificate", path);
		err = BG_EINVAL;
		goto out;
	}
	tls_cert_describe(x, subject, slen, not_after, alen);
out:
	X509_free(x);
	BIO_free(b);
	return err;
}

/* Never asks for a pass phrase: an encrypted key is refused. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

int
client_cert_check(const char *cert, const char *key, char *why, size_t len)
{
	char subject[256], not_after[64];
	BIO *b = NULL;
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	int err;

	if (key == NULL)
		key = cert;
	if ((err = client_key_check(key, why, len)) != 0 ||
	    (err = client_cert_load(cert, subject, sizeof(subject), not_after, sizeof(not_after), why,
	                            len)) != 0)
		return err;
	if ((b = BIO_new_file(cert, "r")) == NULL || (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) {
		snprintf(why, len, "%s holds no PEM certificate", cert);
		err = BG_EINVAL;
		goto out;
	}
	BIO_free(b);
	if ((b = BIO_new_file(key, "r")) == NULL ||
	    (k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL)) == NULL) {
		snprintf(why, len, "%s holds no PEM private key (an encrypted key is not supported)", key);
		err = BG_EINVAL;
		goto out;
	}
	if (X509_check_private_key(x, k) != 1) {
		snprintf(why, len, "the private key in %s does not belong to the certificate in %s", key,
		         cert);
		err = BG_EINVAL;
		goto out;
	}
out:
	ERR_clear_error();
	EVP_PKEY_free(k);
	X509_free(x);
	BIO_free(b);
	return err;
}

int
certcheck_input(const char *host, unsigned port, STACK_OF(X509) *chain, char **out, size_t *outlen)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p;
	long n;
	int err = 0;

	*out = NULL;
	if (b == NULL)
		return BG_ENOMEM;
	if (BIO_printf(b, "host %s %u\n", host, port) <= 0) {
		err = BG_ENOMEM;
		goto out;
	}
	for (int i = 0; i < sk_X509_num(chain); i++) {
		if (PEM_write_bio_X509(b, sk_X509_value(chain, i)) != 1) {
			err = BG_ENOMEM;
			goto out;
		}
	}
	n = BIO_get_mem_data(b, &p);
	if (n < 0 || (*out = malloc((size_t)n + 1)) == NULL) {
		err = BG_ENOMEM;
		goto out;
	}
	memcpy(*out, p, (size_t)n);
	(*out)[n] = '\0';
	*outlen = (size_t)n;
out:
	BIO_free(b);
	return err;
}

unsigned
certcheck_timeout_ms(void)
{
	const char *s = getenv("BGCOPY_CERT_CHECK_TIMEOUT_MS");
	char *end;
	unsigned long v;

	if (s == NULL || *s == '\0')
		return CERTCHECK_TIMEOUT_MS;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > CERTCHECK_TIMEOUT_MS)
		return CERTCHECK_TIMEOUT_MS;
	return (unsigned)v;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Feeds the input while the command reads it; a command that stops
 * reading (or exits) early is no error here, its exit status decides. */
static void
feed(int fd, const char *input, size_t len, int64_t deadline)
{
	size_t off = 0;

	while (off < len) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		int64_t left = deadline - now_ms();
		ssize_t w;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			return;
		w = send(fd, input + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return; /* EPIPE: the command closed its input */
		}
		off += (size_t)w;
	}
}

int
certcheck_run(const char *const *argv, const char *input, size_t len, unsigned timeout_ms,
              char *why, size_t whylen)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	int sv[2] = {-1, -1};
	int64_t deadline = now_ms() + timeout_ms;
	pid_t pid = -1, w;
	int status = 0, rc;
	bool killed = false;

	/* A socket rather than a pipe: send() with MSG_NOSIGNAL, so that a
	 * command that does not read its input cannot raise SIGPIPE here. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		snprintf(why, whylen, "cannot run the certificate check command: %s", strerror(errno));
		return 1;
	}
	shutdown(sv[1], SHUT_WR);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, sv[1], STDIN_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawnattr_init(&attr);
	/* Its own process group, killed whole when it hangs; signals as a
	 * fresh program has them. */
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGCHLD);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
	                                    POSIX_SPAWN_SETSIGDEF);
	rc = posix_spawnp(&pid, argv[0], &fa, &attr, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(sv[1]);
	if (rc != 0) {
		close(sv[0]);
		snprintf(why, whylen, "certificate check command %s cannot be run: %s", argv[0],
		         strerror(rc));
		return 1;
	}
	feed(sv[0], input, len, deadline);
	close(sv[0]);
	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			/* Reaped by someone else (ECHILD): its verdict is unknown,
			 * which is never an acceptance. */
			snprintf(why, whylen, "certificate check command %s: its exit status was lost (%s)",
			         argv[0], strerror(errno));
			return 1;
		}
		if (now_ms() >= deadline) {
			kill(-pid, SIGKILL);
			killed = true;
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			break;
		}
		nanosleep(&(struct timespec){.tv_nsec = 5 * 1000000}, NULL);
	}
	if (killed) {
		snprintf(why, whylen, "certificate check command %s did not answer within %u ms: killed",
		         argv[0], timeout_ms);
		return 1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		snprintf(why, whylen, "certificate check command %s died of signal %d", argv[0],
		         WTERMSIG(status));
	else
		snprintf(why, whylen, "certificate check command %s rejected the certificate (exit %d)",
		         argv[0], WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return 1;
}
