/*
 * browse.c - finding bgcopy peers: a bounded browse for a command (a simple
 * poll in the caller's thread) and a live one for the daemon (a thread of
 * its own, dnssd_conn).
 *
 * Avahi reports a service once per interface and protocol (IPv4 or IPv6
 * mDNS) it is seen on; each is resolved over that same protocol, so an
 * IPv4 sighting gives an IPv4 address.  The caller sees one dnssd_peer per
 * sighting and merges them by node id.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <avahi-client/lookup.h>
#include <avahi-common/error.h>
#include <avahi-common/simple-watch.h>
#include <avahi-common/strlst.h>

#include "dnssd_int.h"

/* Fills p from a resolver's answer. */
static void
fill_peer(struct dnssd_peer *p, AvahiIfIndex ifindex, const char *name,
          const AvahiAddress *addr, uint16_t port, AvahiStringList *txt,
          AvahiLookupResultFlags flags)
{
	unsigned seen = 0;

	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	/* Another machine chose it, and a long one is cut anywhere: text
	 * safe for a terminal and for JSON. */
	bg_text_safe_inplace(p->name, 0);
	avahi_address_snprint(p->addr, sizeof(p->addr), addr);
	p->port = port;
	p->ifindex = ifindex;
	p->family = addr->proto == AVAHI_PROTO_INET6 ? AF_INET6 : AF_INET;
	p->local = (flags & AVAHI_LOOKUP_RESULT_LOCAL) != 0;
	/* A peer on this very machine is reached on the interface's own
	 * address: inside its subnet. */
	p->same_subnet = dnssd_same_subnet(p->addr, ifindex);
	for (AvahiStringList *t = txt; t != NULL; t = avahi_string_list_get_next(t))
		dnssd_txt_item(p, &seen, avahi_string_list_get_text(t),
		               avahi_string_list_get_size(t));
}

/* ---- Once ---------------------------------------------------------------- */

struct once {
	AvahiSimplePoll *sp;
	struct dnssd_peer *peers;
	size_t n, cap;
	unsigned pending; /* resolvers not yet answered */
	bool all_for_now;
	bool cache_exhausted; /* avahi-daemon has told what its cache held */
	size_t remote;        /* peers found that are not on this machine */
	bool failed, nomem;
	int err;
};

static void
once_resolved(AvahiServiceResolver *r, AvahiIfIndex ifindex, AvahiProtocol proto,
              AvahiResolverEvent ev, const char *name, const char *type, const char *domain,
              const char *host, const AvahiAddress *addr, uint16_t port, AvahiStringList *txt,
              AvahiLookupResultFlags flags, void *arg)
{
	struct once *o = arg;

	o->pending--;
	if (ev == AVAHI_RESOLVER_FOUND && addr != NULL) {
		if (o->n == o->cap) {
			size_t cap = o->cap != 0 ? o->cap * 2 : 8;
			struct dnssd_peer *np = realloc(o->peers, cap * sizeof(*np));

			if (np == NULL) {
				o->nomem = true;
				goto out;
			}
			o->peers = np;
			o->cap = cap;
		}
		fill_peer(&o->peers[o->n++], ifindex, name, addr, port, txt, flags);
		if (!o->peers[o->n - 1].local)
			o->remote++;
	}
out:
	avahi_service_resolver_free(r);
}

static void
once_browsed(AvahiServiceBrowser *b, AvahiIfIndex ifindex, AvahiProtocol proto,
             AvahiBrowserEvent ev, const char *name, const char *type, const char *domain,
             AvahiLookupResultFlags flags, void *arg)
{
	struct once *o = arg;
	AvahiClient *c = avahi_service_browser_get_client(b);

	switch (ev) {
	case AVAHI_BROWSER_NEW:
		if (avahi_service_resolver_new(c, ifindex, proto, name, type, domain, proto, 0,
		                               once_resolved, o) != NULL)
			o->pending++;
		break;
	case AVAHI_BROWSER_REMOVE:
		/* Gone before it was resolved, or after: its resolver ends
		 * by itself (failure) or has ended. */
		break;
	case AVAHI_BROWSER_ALL_FOR_NOW:
		o->all_for_now = true;
		break;
	case AVAHI_BROWSER_CACHE_EXHAUSTED:
		o->cache_exhausted = true;
		break;
	case AVAHI_BROWSER_FAILURE:
		o->failed = true;
		o->err = avahi_client_errno(c);
		break;
	}
}

int
dnssd_browse_once(unsigned timeout_ms, unsigned flags, struct dnssd_peer **out, size_t *n,
                  char *why, size_t whylen)
{
	struct once o;
	AvahiClient *c = NULL;
	int64_t deadline = bg_mono_ms() + timeout_ms;
	int err = 0, rc = 0;

	*out = NULL;
	*n = 0;
	if (whylen > 0)
		why[0] = '\0';
	memset(&o, 0, sizeof(o));
	if ((o.sp = avahi_simple_poll_new()) == NULL)
		return BG_ENOMEM;
	/* No NO_FAIL: without a daemon, say so at once. */
	c = avahi_client_new(avahi_simple_poll_get(o.sp), 0, NULL, NULL, &err);
	if (c == NULL) {
		snprintf(why, whylen, "%s",
		         err == AVAHI_ERR_NO_DAEMON ? "avahi-daemon is not running"
		                                    : avahi_strerror(err));
		rc = err == AVAHI_ERR_NO_MEMORY ? BG_ENOMEM : BG_EAGAIN;
		goto out;
	}
	if (avahi_service_browser_new(c, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, DNSSD_TYPE, NULL, 0,
	                              once_browsed, &o) == NULL) {
		snprintf(why, whylen, "cannot browse: %s", avahi_strerror(avahi_client_errno(c)));
		rc = BG_EAGAIN;
		goto out;
	}
	/* Until Avahi has said all it knows and every resolve has ended, or
	 * the time is up.  Avahi says "all for now" only about a second after
	 * the browse starts; but avahi-daemon keeps every announcement it
	 * hears, so once its cache has given a peer on another machine, and
	 * that peer is resolved, a browse for a download (DNSSD_FIRST_CACHED)
	 * ends there: with peers around it does not wait.  With none in the
	 * cache it waits for answers from the network until the time is up. */
	bool first = (flags & DNSSD_FIRST_CACHED) != 0;

	/* Services already browsed but still resolving at the deadline get up
	 * to DNSSD_RESOLVE_GRACE more: on a busy machine (many downloads
	 * starting at once) avahi-daemon answers the resolves late, and a
	 * download that sees only some of its peers may elect itself to
	 * fetch what another already fetches (the fleet: one origin copy per
	 * view).  With nothing browsed the deadline stands, so a node alone
	 * pays no more; a stale entry of a machine gone without a goodbye
	 * costs every download up to the grace until avahi-daemon drops it. */
	int64_t hard = deadline + DNSSD_RESOLVE_GRACE * (int64_t)timeout_ms;

	while (!o.failed && !o.nomem &&
	       !((o.all_for_now || (first && o.cache_exhausted && o.remote > 0)) && o.pending == 0)) {
		int64_t now = bg_mono_ms();
		int64_t left = (o.pending > 0 ? hard : deadline) - now;

		if (left <= 0 || avahi_simple_poll_iterate(o.sp, (int)left) != 0)
			break;
	}
	if (o.nomem) {
		rc = BG_ENOMEM;
	} else if (o.failed) {
		snprintf(why, whylen, "browsing failed: %s", avahi_strerror(o.err));
		rc = BG_EAGAIN;
	}
out:
	if (c != NULL)
		avahi_client_free(c); /* and its browser and resolvers */
	avahi_simple_poll_free(o.sp);
	if (rc != 0 || o.n == 0) {
		free(o.peers);
		return rc;
	}
	*out = o.peers;
	*n = o.n;
	return 0;
}

/* ---- Live ---------------------------------------------------------------- */

/* One sighting: a service name on an interface over a protocol. */
struct sighting {
	struct sighting *next;
	AvahiIfIndex ifindex;
	AvahiProtocol proto;
	char name[DNSSD_NAME_MAX];
	AvahiServiceResolver *r; /* kept open: it reports changes */
	bool up;                 /* peer holds what was reported up */
	struct dnssd_peer peer;
	struct dnssd_watch *w;
};

struct dnssd_watch {
	struct dnssd_conn cn;
	AvahiServiceBrowser *b;
	struct sighting *list;
	dnssd_watch_fn cb;
	void *arg;
	dnssd_log_fn log;
	void *log_arg;
	bool stopping; /* set under the poll lock: lost() reports nothing */
};

#define WLOG(w, ...) dnssd_logf((w)->log, (w)->log_arg, __VA_ARGS__)

static void
down(struct sighting *s)
{
	if (s->up)
		s->w->cb(s->w->arg, false, &s->peer);
	s->up = false;
}

static void
watch_resolved(AvahiServiceResolver *r, AvahiIfIndex ifindex, AvahiProtocol proto,
               AvahiResolverEvent ev, const char *name, const char *type, const char *domain,
               const char *host, const AvahiAddress *addr, uint16_t port,
               AvahiStringList *txt, AvahiLookupResultFlags flags, void *arg)
{
	struct sighting *s = arg;

	if (ev == AVAHI_RESOLVER_FOUND && addr != NULL) {
		struct dnssd_peer p;

		fill_peer(&p, ifindex, name, addr, port, txt, flags);
		/* Another address: the old one is gone. */
		if (s->up && strcmp(p.addr, s->peer.addr) != 0)
			down(s);
		s->peer = p;
		s->up = true;
		s->w->cb(s->w->arg, true, &s->peer);
	} else {
		/* Its records went or never came (a node that vanished
		 * without a goodbye): down until they resolve again; the
		 * resolver keeps looking. */
		down(s);
	}
}

static struct sighting **
find(struct dnssd_watch *w, AvahiIfIndex ifindex, AvahiProtocol proto, const char *name)
{
	struct sighting **sp;

	for (sp = &w->list; *sp != NULL; sp = &(*sp)->next)
		if ((*sp)->ifindex == ifindex && (*sp)->proto == proto &&
		    strncmp((*sp)->name, name, sizeof((*sp)->name) - 1) == 0)
			break;
	return sp;
}

static void
watch_browsed(AvahiServiceBrowser *b, AvahiIfIndex ifindex, AvahiProtocol proto,
              AvahiBrowserEvent ev, const char *name, const char *type, const char *domain,
              AvahiLookupResultFlags flags, void *arg)
{
	struct dnssd_watch *w = arg;
	AvahiClient *c = avahi_service_browser_get_client(b);
	struct sighting **sp, *s;

	switch (ev) {
	case AVAHI_BROWSER_NEW:
		if (*(sp = find(w, ifindex, proto, name)) != NULL)
			break;
		if ((s = calloc(1, sizeof(*s))) == NULL)
			break;
		s->w = w;
		s->ifindex = ifindex;
		s->proto = proto;
		snprintf(s->name, sizeof(s->name), "%s", name);
		s->r = avahi_service_resolver_new(c, ifindex, proto, name, type, domain, proto, 0,
		                                  watch_resolved, s);
		if (s->r == NULL) {
			free(s);
			break;
		}
		*sp = s;
		break;
	case AVAHI_BROWSER_REMOVE:
		if ((s = *(sp = find(w, ifindex, proto, name))) == NULL)
			break;
		*sp = s->next;
		down(s);
		avahi_service_resolver_free(s->r);
		free(s);
		break;
	case AVAHI_BROWSER_ALL_FOR_NOW:
	case AVAHI_BROWSER_CACHE_EXHAUSTED:
		break;
	case AVAHI_BROWSER_FAILURE:
		WLOG(w, "DNS-SD: browsing failed (%s); starting again",
		     avahi_strerror(avahi_client_errno(c)));
		dnssd_conn_reset(&w->cn, 1000);
		break;
	}
}

static void
watch_running(void *owner, AvahiClient *c, bool back)
{
	struct dnssd_watch *w = owner;

	if (back)
		WLOG(w, "DNS-SD: avahi-daemon is back: browsing for peers again");
	if (w->b != NULL)
		return;
	w->b = avahi_service_browser_new(c, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, DNSSD_TYPE, NULL,
	                                 0, watch_browsed, w);
	if (w->b == NULL) {
		WLOG(w, "DNS-SD: cannot browse (%s); trying again",
		     avahi_strerror(avahi_client_errno(c)));
		dnssd_conn_reset(&w->cn, 5000);
	}
}

/* The client goes, and with it the browser and resolvers: every peer it
 * found is down (reported, unless the watch is stopping). */
static void
drop_all(struct dnssd_watch *w, bool report)
{
	struct sighting *s;

	while ((s = w->list) != NULL) {
		w->list = s->next;
		if (report)
			down(s);
		free(s);
	}
	w->b = NULL; /* freed with the client */
}

static void
watch_lost(void *owner)
{
	struct dnssd_watch *w = owner;

	drop_all(w, !w->stopping);
}

static void
watch_absent(void *owner, bool was_running, const char *why)
{
	struct dnssd_watch *w = owner;

	if (was_running)
		WLOG(w, "DNS-SD: %s: peers found by mDNS dropped until it is back", why);
	else
		WLOG(w, "DNS-SD: %s: no peers by mDNS until it starts", why);
}

int
dnssd_watch_start(dnssd_watch_fn cb, void *arg, dnssd_log_fn log, void *log_arg,
                  struct dnssd_watch **out)
{
	struct dnssd_watch *w;
	int err;

	*out = NULL;
	if (cb == NULL)
		return BG_EINVAL;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return BG_ENOMEM;
	w->cb = cb;
	w->arg = arg;
	w->log = log;
	w->log_arg = log_arg;
	w->cn.owner = w;
	w->cn.running = watch_running;
	w->cn.lost = watch_lost;
	w->cn.absent = watch_absent;
	if ((err = dnssd_conn_start(&w->cn)) != 0) {
		free(w);
		return err;
	}
	*out = w;
	return 0;
}

void
dnssd_watch_stop(struct dnssd_watch *w)
{
	if (w == NULL)
		return;
	/* A callback running now ends before the lock is ours; none comes
	 * after the thread has stopped, nor from the teardown (stopping). */
	avahi_threaded_poll_lock(w->cn.tp);
	w->stopping = true;
	avahi_threaded_poll_unlock(w->cn.tp);
	dnssd_conn_stop(&w->cn);
	free(w);
}
