/*
 * conn.c - one avahi-daemon client that outlives the daemon.
 *
 * AVAHI_CLIENT_NO_FAIL lets a client wait (state CONNECTING) for a daemon
 * that is not there yet, but only when the system bus is: without a bus
 * avahi_client_new() fails whatever the flags, and a daemon (or bus) that
 * goes away leaves the client in FAILURE for good.  Both cases end here in
 * a reset: the client is dropped and a new one made, at once after a
 * disconnection (the new one waits for the daemon on the bus), every
 * RETRY_MS when there is no bus to wait on.
 */
#include <avahi-common/error.h>
#include <avahi-common/timeval.h>

#include "dnssd_int.h"

#define RETRY_MS 1000

static void
absent(struct dnssd_conn *cn, const char *why)
{
	if (cn->is_absent)
		return;
	cn->is_absent = true;
	cn->absent(cn->owner, cn->was_running, why);
}

static void
client_cb(AvahiClient *c, AvahiClientState state, void *arg)
{
	struct dnssd_conn *cn = arg;

	/* Called from within avahi_client_new() too, before cn->client is
	 * set: use c. */
	switch (state) {
	case AVAHI_CLIENT_S_RUNNING: {
		bool back = cn->is_absent && cn->was_running;

		cn->is_absent = false;
		cn->was_running = true;
		cn->running(cn->owner, c, back);
		break;
	}
	case AVAHI_CLIENT_S_REGISTERING:
	case AVAHI_CLIENT_S_COLLISION:
		if (cn->state != NULL)
			cn->state(cn->owner, c, state);
		break;
	case AVAHI_CLIENT_CONNECTING:
		absent(cn, "avahi-daemon is not running");
		break;
	case AVAHI_CLIENT_FAILURE: {
		int err = avahi_client_errno(c);

		absent(cn, err == AVAHI_ERR_DISCONNECTED ? "avahi-daemon went away"
		                                         : avahi_strerror(err));
		/* Not freed here: we are inside its D-Bus dispatch. */
		dnssd_conn_reset(cn, err == AVAHI_ERR_DISCONNECTED ? 0 : RETRY_MS);
		break;
	}
	}
}

static void
connect_now(struct dnssd_conn *cn)
{
	int err = 0;

	cn->client = avahi_client_new(cn->poll, AVAHI_CLIENT_NO_FAIL, client_cb, cn, &err);
	if (cn->client != NULL)
		return;
	absent(cn, err == AVAHI_ERR_NO_DAEMON ? "avahi-daemon is not running"
	                                      : avahi_strerror(err));
	dnssd_conn_reset(cn, RETRY_MS);
}

static void
drop_client(struct dnssd_conn *cn)
{
	if (cn->client == NULL)
		return;
	cn->lost(cn->owner);
	avahi_client_free(cn->client);
	cn->client = NULL;
}

static void
timer_cb(AvahiTimeout *t, void *arg)
{
	struct dnssd_conn *cn = arg;

	cn->poll->timeout_update(t, NULL);
	drop_client(cn);
	connect_now(cn);
}

void
dnssd_conn_reset(struct dnssd_conn *cn, unsigned delay_ms)
{
	struct timeval tv;

	cn->poll->timeout_update(cn->timer, avahi_elapse_time(&tv, delay_ms, 0));
}

int
dnssd_conn_start(struct dnssd_conn *cn)
{
	if ((cn->tp = avahi_threaded_poll_new()) == NULL)
		return BG_ENOMEM;
	cn->poll = avahi_threaded_poll_get(cn->tp);
	cn->client = NULL;
	cn->is_absent = cn->was_running = false;
	if ((cn->timer = cn->poll->timeout_new(cn->poll, NULL, timer_cb, cn)) == NULL) {
		avahi_threaded_poll_free(cn->tp);
		return BG_ENOMEM;
	}
	/* The thread is not running yet: nothing to lock. */
	connect_now(cn);
	if (avahi_threaded_poll_start(cn->tp) < 0) {
		drop_client(cn);
		cn->poll->timeout_free(cn->timer);
		avahi_threaded_poll_free(cn->tp);
		return BG_ENOMEM;
	}
	return 0;
}

void
dnssd_conn_stop(struct dnssd_conn *cn)
{
	/* Joins the thread: no callback runs after this, and what follows
	 * has the objects to itself. */
	avahi_threaded_poll_stop(cn->tp);
	drop_client(cn);
	cn->poll->timeout_free(cn->timer);
	avahi_threaded_poll_free(cn->tp);
}
