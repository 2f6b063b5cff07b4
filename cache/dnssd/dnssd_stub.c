/* dnssd_stub.c - placeholder until the Avahi implementation lands: no daemon. */
#include <stdio.h>

#include "dnssd.h"

int
dnssd_announce_start(const struct dnssd_announce_config *c, struct dnssd_announce **out)
{
	(void)c;
	*out = NULL;
	return BG_ENOTIMPL;
}

void
dnssd_announce_stop(struct dnssd_announce *a)
{
	(void)a;
}

int
dnssd_browse_once(unsigned timeout_ms, struct dnssd_peer **out, size_t *n, char *why, size_t whylen)
{
	(void)timeout_ms;
	*out = NULL;
	*n = 0;
	snprintf(why, whylen, "avahi-daemon is not running");
	return BG_EAGAIN;
}

int
dnssd_watch_start(dnssd_watch_fn cb, void *arg, dnssd_log_fn log, void *log_arg, struct dnssd_watch **out)
{
	(void)cb;
	(void)arg;
	(void)log;
	(void)log_arg;
	*out = NULL;
	return BG_EAGAIN;
}

void
dnssd_watch_stop(struct dnssd_watch *w)
{
	(void)w;
}
