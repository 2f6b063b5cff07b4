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
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net.h"

/* The port of the first SRV record of _bgcopy._tcp.NAME with the lowest
 * priority: 0 when there is none, or no answer in time. */
static unsigned
srv_port(const char *name, char *why, size_t whylen)
{
	struct __res_state rs;
	unsigned char answer[4096];
	char qname[NS_MAXDNAME];
	ns_msg msg;
	unsigned port = 0, best = 0x10000;
	int len;

	if (snprintf(qname, sizeof(qname), "_bgcopy._tcp.%s", name) >= (int)sizeof(qname))
		return 0;
	memset(&rs, 0, sizeof(rs));
	if (res_ninit(&rs) != 0) {
		snprintf(why, whylen, "cannot read the resolver's configuration");
		return 0;
	}
	/* One second per try, two tries per server. */
	rs.retrans = 1;
	rs.retry = 2;
	len = res_nquery(&rs, qname, ns_c_in, ns_t_srv, answer, sizeof(answer));
	if (len < 0 || ns_initparse(answer, len, &msg) != 0)
		goto out;
	for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		const unsigned char *d;
		unsigned prio, p;
		ns_rr rr;

		if (ns_parserr(&msg, ns_s_an, i, &rr) != 0 || ns_rr_type(rr) != ns_t_srv ||
		    ns_rr_rdlen(rr) < 7)
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
	res_nclose(&rs);
	return port;
}

int
dns_peers_resolve(const char *name, unsigned timeout_ms, struct dns_peer *out, size_t max,
                  size_t *n, char *why, size_t whylen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
	struct gaicb *req;
	struct gaicb *list[1];
	struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
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
	 * thread still owns it, and it is left to it (gai_cancel cannot stop a
	 * lookup under way). */
	if ((req = calloc(1, sizeof(*req) + sizeof(hints) + strlen(name) + 1)) == NULL)
		return BG_ENOMEM;
	memcpy(req + 1, &hints, sizeof(hints));
	req->ar_name = strcpy((char *)(req + 1) + sizeof(hints), name);
	req->ar_request = (struct addrinfo *)(req + 1);
	list[0] = req;
	if ((rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL)) != 0) {
		snprintf(why, whylen, "cannot look up %s: %s", name, gai_strerror(rc));
		free(req);
		return BG_EIO;
	}
	for (;;) {
		rc = gai_suspend((const struct gaicb *const *)list, 1, &ts);
		if (rc == EAI_INTR)
			continue;
		break;
	}
	if (rc == EAI_AGAIN && gai_error(req) == EAI_INPROGRESS) {
		if (gai_cancel(req) != EAI_CANCELED) {
			snprintf(why, whylen, "%s: no answer within %u ms", name, timeout_ms);
			return BG_ETIMEDOUT; /* req stays with the resolver */
		}
	}
	if ((rc = gai_error(req)) != 0) {
		snprintf(why, whylen, "%s: %s", name,
		         rc == EAI_CANCELED ? "no answer in time" : gai_strerror(rc));
		if (req->ar_result != NULL)
			freeaddrinfo(req->ar_result);
		free(req);
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
