/* loopback.c - the scripted HTTP server of loopback.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loopback.h"

#define SCRIPT_MAX 32
#define REQUEST_MAX (64 * 1024) /* bytes of a request head read before answering */
#define IO_TIMEOUT_MS 2000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_cond = PTHREAD_COND_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int listen_fd = -1;
static unsigned port;
static struct fuzz_part script[SCRIPT_MAX];
static size_t nscript, next;
static unsigned served;
static bool busy;

/* Reads the request head (up to an empty line), so that closing the
 * connection afterwards does not reset it under the client's feet. */
static void
read_request(int fd)
{
	char buf[4096], tail[4] = {0};
	size_t total = 0;

	while (total < REQUEST_MAX) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, IO_TIMEOUT_MS) <= 0)
			return;
		if ((n = recv(fd, buf, sizeof(buf), 0)) <= 0)
			return;
		total += (size_t)n;
		for (ssize_t i = 0; i < n; i++) {
			memmove(tail, tail + 1, 3);
			tail[3] = buf[i];
			if (memcmp(tail, "\r\n\r\n", 4) == 0)
				return;
		}
	}
}

static void
write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void *
serve(void *arg)
{
	(void)arg;
	for (;;) {
		int fd = accept(listen_fd, NULL, NULL);
		struct fuzz_part resp = {NULL, 0};

		if (fd < 0)
			continue;
		pthread_mutex_lock(&lock);
		busy = true;
		pthread_mutex_unlock(&lock);
		read_request(fd);
		pthread_mutex_lock(&lock);
		served++;
		if (next < nscript)
			resp = script[next++];
		/* The script is not replaced while busy: resp stays valid. */
		pthread_mutex_unlock(&lock);
		if (resp.p != NULL)
			write_all(fd, resp.p, resp.n);
		shutdown(fd, SHUT_WR);
		close(fd);
		pthread_mutex_lock(&lock);
		busy = false;
		pthread_cond_broadcast(&idle_cond);
		pthread_mutex_unlock(&lock);
	}
	return NULL;
}

static void
start(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	pthread_t t;
	int one = 1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return;
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(listen_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(listen_fd, 16) != 0 ||
	    getsockname(listen_fd, (struct sockaddr *)&sin, &len) != 0 ||
	    pthread_create(&t, NULL, serve, NULL) != 0) {
		close(listen_fd);
		listen_fd = -1;
		return;
	}
	pthread_detach(t);
	port = ntohs(sin.sin_port);
}

unsigned
loopback_port(void)
{
	pthread_once(&once, start);
	return port;
}

void
loopback_script(const struct fuzz_part *responses, size_t n)
{
	pthread_mutex_lock(&lock);
	while (busy)
		pthread_cond_wait(&idle_cond, &lock);
	for (size_t i = 0; i < nscript; i++)
		free((void *)script[i].p);
	nscript = next = 0;
	served = 0;
	for (size_t i = 0; i < n && i < SCRIPT_MAX; i++) {
		uint8_t *copy = malloc(responses[i].n > 0 ? responses[i].n : 1);

		if (copy == NULL)
			break;
		memcpy(copy, responses[i].p, responses[i].n);
		/* Folded header lines (a line that starts with a blank) go out as
		 * they are: libcurl 7.88.1 reads freed memory on one that comes
		 * first in a response on a reused handle (curl PR #11103), which
		 * origin.c and peer.c avoid by never reusing a handle (a share
		 * keeps the connections); the fuzzer keeps them at it. */
		script[i].p = copy;
		script[i].n = responses[i].n;
		nscript++;
	}
	pthread_mutex_unlock(&lock);
}

unsigned
loopback_served(void)
{
	unsigned n;

	pthread_mutex_lock(&lock);
	n = served;
	pthread_mutex_unlock(&lock);
	return n;
}
