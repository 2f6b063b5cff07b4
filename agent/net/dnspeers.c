/*
 * dnspeers.c - peers behind one DNS name, for fleets past one link: every
 * A and AAAA of the name (getaddrinfo, so /etc/hosts counts too), on the
 * port of its _bgcopy._tcp SRV record when it has one, else peerd's
 * default.  Each step has a time bound: a slow or dead resolver costs a
 * download seconds at most, never the download.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net.h"

/* The port of the first SRV record of _bgcopy._tcp.NAME with the lowest
 * priority: 0 when there is none, or no answer in time.
 *
 * The answer buffer holds the largest DNS message (NS_MAXMSG): res_nquery
 * returns the answer's full length even when it did not fit, so the length
 * is clamped to the buffer all the same.  A truncated answer (TC set: glibc
 * retries over TCP first, so one arrives only when that failed) is used
 * for the records it holds whole: any of them names a port peerd listens
 * on, the lowest priority among them is just not necessarily the lowest of
 * all; one that cannot be parsed at all gives 0 (the default port). */
static unsigned
srv_port(const char *name, char *why, size_t whylen)
{
	struct __res_state rs;
	unsigned char *answer;
	char qname[NS_MAXDNAME];
	ns_msg msg;
	unsigned port = 0, best = 0x10000;
	int len;

	if (snprintf(qname, sizeof(qname), "_bgcopy._tcp.%s", name) >= (int)sizeof(qname))
		return 0;
	if ((answer = malloc(NS_MAXMSG)) == NULL)
		return 0;
	memset(&rs, 0, sizeof(rs));
	if (res_ninit(&rs) != 0) {
		snprintf(why, whylen, "cannot read the resolver's configuration");
		free(answer);
		return 0;
	}
	/* One second per try, two tries per server. */
	rs.retrans = 1;
	rs.retry = 2;
	len = res_nquery(&rs, qname, ns_c_in, ns_t_srv, answer, NS_MAXMSG);
	if (len > NS_MAXMSG)
		len = NS_MAXMSG;
	if (len < 0 || ns_initparse(answer, len, &msg) != 0)
		goto out;
	for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		const unsigned char *d;
		unsigned prio, p;
		ns_rr rr;

		if (ns_parserr(&msg, ns_s_an, i, &rr) != 0)
			break; /* the rest was cut off (truncated) or is damaged */
		if (ns_rr_type(rr) != ns_t_srv || ns_rr_rdlen(rr) < 7)
			continue;
		/* RDATA: priority, weight, port (16 bits each), target. */
		d = ns_rr_rdata(rr);
		prio = (unsigned)d[0] << 8 | d[1];
		p = (unsigned)d[4] << 8 | d[5];
		if (p > 0 && prio < best) {
			best = prio;
			port = p;
		}
	}
out:
	/* glibc has no res_ndestroy (BSD's): its res_nclose is the one that
	 * frees all res_ninit allocated (__res_iclose(statp, true): sockets,
	 * IPv6 nameserver addresses, the resolv.conf it parsed). */
	res_nclose(&rs);
	free(answer);
	return port;
}

/* ---- Lookups that outlive their caller ---------------------------------------
 * gai_cancel cannot stop a lookup glibc's thread has started: that thread
 * still writes the request (its result and status) when it ends.  Such a
 * request is kept here, never freed while gai_error() says it is in
 * progress, and freed (with its result) by a later call once it is done.
 * At most PENDING_MAX are kept: while that many are still running (a
 * resolver that never answers), no new lookup starts (BG_ETIMEDOUT), so
 * neither memory nor glibc's threads grow without bound. */
#define PENDING_MAX 8

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gaicb *pending[PENDING_MAX];
static bool abandoned[PENDING_MAX]; /* its caller gave up on it */

/* Frees the kept requests that are done; true when there is room for one
 * more.  With pending_lock held. */
static bool
pending_reap(void)
{
	bool room = false;

	for (size_t i = 0; i < PENDING_MAX; i++) {
		if (pending[i] != NULL && abandoned[i] && gai_error(pending[i]) != EAI_INPROGRESS) {
			if (pending[i]->ar_result != NULL)
				freeaddrinfo(pending[i]->ar_result);
			free(pending[i]);
			pending[i] = NULL;
			abandoned[i] = false;
		}
		if (pending[i] == NULL)
			room = true;
	}
	return room;
}

/* Takes a slot for req (pending_reap() said there is one, the lock held
 * since), or, when its caller gives up on it, marks it abandoned, or
 * gives its slot back.  With pending_lock held. */
static void
pending_set(struct gaicb *req, int what)
{
	for (size_t i = 0; i < PENDING_MAX; i++) {
		if (what == 0 && pending[i] == NULL) {
			pending[i] = req;
			abandoned[i] = false;
			return;
		}
		if (what != 0 && pending[i] == req) {
			if (what > 0)
				abandoned[i] = true;
			else
				pending[i] = NULL;
			return;
		}
	}
}

int
dns_peers_resolve(const char *name, unsigned timeout_ms, struct dns_peer *out, size_t max,
                  size_t *n, char *why, size_t whylen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
	struct gaicb *req;
	struct gaicb *list[1];
	int64_t deadline = bg_mono_ms() + timeout_ms, left;
	unsigned port;
	int rc;

	*n = 0;
	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (name == NULL || *name == '\0' || strlen(name) >= NS_MAXDNAME) {
		snprintf(why, whylen, "no DNS name");
		return BG_EINVAL;
	}
	/* The request lives on the heap: after a timeout glibc's resolver
	 * thread may still own it (see pending above). */
	if ((req = calloc(1, sizeof(*req) + sizeof(hints) + strlen(name) + 1)) == NULL)
		return BG_ENOMEM;
	memcpy(req + 1, &hints, sizeof(hints));
	req->ar_name = strcpy((char *)(req + 1) + sizeof(hints), name);
	req->ar_request = (struct addrinfo *)(req + 1);
	list[0] = req;
	pthread_mutex_lock(&pending_lock);
	if (!pending_reap()) {
		pthread_mutex_unlock(&pending_lock);
		snprintf(why, whylen, "%s: earlier lookups still unanswered", name);
		free(req);
		return BG_ETIMEDOUT;
	}
	if ((rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL)) != 0) {
		pthread_mutex_unlock(&pending_lock);
		snprintf(why, whylen, "cannot look up %s: %s", name, gai_strerror(rc));
		free(req);
		return BG_EIO;
	}
	/* The slot is kept for this request until it is known to be done. */
	pending_set(req, 0);
	pthread_mutex_unlock(&pending_lock);
	/* Whether the request still runs is gai_error's to say, whatever
	 * gai_suspend returned (EAI_AGAIN, EAI_INTR, or 0 for a signal's
	 * wakeup); the deadline holds across interruptions. */
	while (gai_error(req) == EAI_INPROGRESS && (left = deadline - bg_mono_ms()) > 0) {
		struct timespec ts = {left / 1000, (long)(left % 1000) * 1000000L};

		(void)gai_suspend((const struct gaicb *const *)list, 1, &ts);
	}
	if ((rc = gai_error(req)) == EAI_INPROGRESS) {
		if (gai_cancel(req) == EAI_CANCELED) {
			rc = EAI_CANCELED; /* it had not started: glibc dropped it */
		} else if ((rc = gai_error(req)) == EAI_INPROGRESS) {
			/* Still glibc's: a later call frees it once it is done. */
			pthread_mutex_lock(&pending_lock);
			pending_set(req, 1);
			pthread_mutex_unlock(&pending_lock);
			snprintf(why, whylen, "%s: no answer within %u ms", name, timeout_ms);
			return BG_ETIMEDOUT;
		}
	}
	/* Done, or cancelled before it started: the request is this call's. */
	pthread_mutex_lock(&pending_lock);
	pending_set(req, -1);
	pthread_mutex_unlock(&pending_lock);
	if (rc != 0) {
		snprintf(why, whylen, "%s: %s", name,
		         rc == EAI_CANCELED ? "no answer in time" : gai_strerror(rc));
		if (req->ar_result != NULL)
			freeaddrinfo(req->ar_result);
		free(req);
		if (rc == EAI_CANCELED)
			return BG_ETIMEDOUT;
		return rc == EAI_NONAME || rc == EAI_NODATA ? BG_ENOENT : BG_EIO;
	}
	port = srv_port(name, why, whylen);
	if (port == 0)
		port = PEER_PORT_DEFAULT;
	for (struct addrinfo *ai = req->ar_result; ai != NULL && *n < max; ai = ai->ai_next) {
		char host[INET6_ADDRSTRLEN];
		bool dup = false;

		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0,
		                NI_NUMERICHOST) != 0)
			continue;
		for (size_t i = 0; i < *n && !dup; i++)
			dup = strcmp(out[i].addr, host) == 0;
		if (dup)
			continue;
		snprintf(out[*n].addr, sizeof(out[*n].addr), "%s", host);
		out[*n].port = port;
		(*n)++;
	}
	freeaddrinfo(req->ar_result);
	free(req);
	if (*n == 0) {
		snprintf(why, whylen, "%s has no address", name);
		return BG_ENOENT;
	}
	return 0;
}
