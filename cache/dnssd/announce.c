/*
 * announce.c - peerd's DNS-SD service: _bgcopy._tcp on its port with the
 * TXT records v=, id=, kf= (dnssd.h), published through avahi-daemon.
 *
 * The service is named "bgcopy on HOST" after the daemon's host name; when
 * another service has that name already (two homes on one machine), Avahi
 * proposes the next one ("... #2").  For a wildcard listen address the SRV
 * record names the host, whose addresses the daemon publishes and keeps up
 * to date.  For a specific one, the host's name would do only if it had no
 * other address on that interface (IPv6 always has several): the SRV
 * record names a host of our own, "bgcopy-NODE-PORT.local", with exactly
 * that address (and no reverse record: the host's own has it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/strlst.h>

#include <net/if.h>

#include "dnssd_int.h"

#define NAME_TRIES 20 /* renames in a row before giving up (name collisions) */

struct dnssd_announce {
	struct dnssd_conn cn;
	AvahiEntryGroup *group;
	AvahiStringList *txt;
	char *name;            /* avahi_malloc'd */
	unsigned port;
	AvahiIfIndex ifindex;
	AvahiProtocol proto;
	bool own_host;         /* host and addr below are published */
	char host[80];
	AvahiAddress addr;
	char where[IF_NAMESIZE + 32]; /* "on every interface", "on IFNAME" */
	bool logged_up;        /* "announced" said since the last absence */
	bool failed;           /* an error was said: not again until it works */
	unsigned collisions;   /* in a row, since the service was last established */
	dnssd_log_fn log;
	void *log_arg;
};

#define LOG(a, ...) dnssd_logf((a)->log, (a)->log_arg, __VA_ARGS__)

static void
rename_service(struct dnssd_announce *a)
{
	char *n = avahi_alternative_service_name(a->name);

	if (n == NULL)
		return;
	LOG(a, "DNS-SD: the service name '%s' is taken; using '%s'", a->name, n);
	avahi_free(a->name);
	a->name = n;
}

static void
fail(struct dnssd_announce *a, const char *what, int err)
{
	if (!a->failed)
		LOG(a, "DNS-SD: cannot announce (%s: %s); trying again", what, avahi_strerror(err));
	a->failed = true;
}

static void register_service(struct dnssd_announce *a, AvahiClient *c);

static void
group_cb(AvahiEntryGroup *g, AvahiEntryGroupState state, void *arg)
{
	struct dnssd_announce *a = arg;

	switch (state) {
	case AVAHI_ENTRY_GROUP_ESTABLISHED:
		a->failed = false;
		a->collisions = 0;
		if (!a->logged_up)
			LOG(a, "DNS-SD: announced '%s' (" DNSSD_TYPE " port %u) %s", a->name, a->port,
			    a->where);
		a->logged_up = true;
		break;
	case AVAHI_ENTRY_GROUP_COLLISION:
		/* Someone on the link has the name: take the next one.  Not
		 * for ever: what collides may be no name of ours to change (a
		 * cloned home announcing our host name, a hostile responder),
		 * so after NAME_TRIES in a row, wait a minute and start over. */
		if (++a->collisions > NAME_TRIES) {
			a->collisions = 0;
			fail(a, "name collisions", AVAHI_ERR_COLLISION);
			dnssd_conn_reset(&a->cn, 60000);
			break;
		}
		rename_service(a);
		avahi_entry_group_reset(g);
		register_service(a, avahi_entry_group_get_client(g));
		break;
	case AVAHI_ENTRY_GROUP_FAILURE:
		fail(a, "entry group", avahi_client_errno(avahi_entry_group_get_client(g)));
		dnssd_conn_reset(&a->cn, 5000);
		break;
	case AVAHI_ENTRY_GROUP_UNCOMMITED:
	case AVAHI_ENTRY_GROUP_REGISTERING:
		break;
	}
}

static void
register_service(struct dnssd_announce *a, AvahiClient *c)
{
	int err = 0;

	if (a->name == NULL) {
		const char *host = avahi_client_get_host_name(c);
		char name[DNSSD_NAME_MAX];

		/* Room left for Avahi's " #NN" on collisions. */
		snprintf(name, sizeof(name), "bgcopy on %.40s", host != NULL ? host : "?");
		if ((a->name = avahi_strdup(name)) == NULL) {
			fail(a, "name", AVAHI_ERR_NO_MEMORY);
			return;
		}
	}
	if (a->group == NULL && (a->group = avahi_entry_group_new(c, group_cb, a)) == NULL) {
		fail(a, "entry group", avahi_client_errno(c));
		dnssd_conn_reset(&a->cn, 5000);
		return;
	}
	if (!avahi_entry_group_is_empty(a->group))
		return; /* registered already; the daemon keeps it */
	for (int i = 0; i < NAME_TRIES; i++) {
		if (a->own_host &&
		    (err = avahi_entry_group_add_address(a->group, a->ifindex, a->proto,
		                                         AVAHI_PUBLISH_NO_REVERSE, a->host,
		                                         &a->addr)) < 0)
			break;
		err = avahi_entry_group_add_service_strlst(a->group, a->ifindex, a->proto, 0,
		                                           a->name, DNSSD_TYPE, NULL,
		                                           a->own_host ? a->host : NULL,
		                                           (uint16_t)a->port, a->txt);
		if (err != AVAHI_ERR_COLLISION)
			break;
		/* A local service has the name. */
		rename_service(a);
		avahi_entry_group_reset(a->group);
	}
	if (err == 0)
		err = avahi_entry_group_commit(a->group);
	if (err < 0) {
		fail(a, "add service", err);
		avahi_entry_group_reset(a->group);
		dnssd_conn_reset(&a->cn, 5000);
	}
}

static void
on_running(void *owner, AvahiClient *c, bool back)
{
	struct dnssd_announce *a = owner;

	if (back)
		LOG(a, "DNS-SD: avahi-daemon is back: announcing again");
	register_service(a, c);
}

static void
on_state(void *owner, AvahiClient *c, AvahiClientState s)
{
	struct dnssd_announce *a = owner;

	/* The host name is changing (a collision, or being registered): our
	 * records name it, so they go and come back with S_RUNNING. */
	if (a->group != NULL)
		avahi_entry_group_reset(a->group);
}

static void
on_lost(void *owner)
{
	struct dnssd_announce *a = owner;

	/* Freeing a group withdraws it: the daemon sends goodbye packets. */
	if (a->group != NULL)
		avahi_entry_group_free(a->group);
	a->group = NULL;
}

static void
on_absent(void *owner, bool was_running, const char *why)
{
	struct dnssd_announce *a = owner;

	if (was_running)
		LOG(a, "DNS-SD: %s: no longer announced; will announce again when it is back",
		    why);
	else
		LOG(a, "DNS-SD: %s: not announced; will announce when it starts", why);
	a->logged_up = false;
}

bool
dnssd_listen_announced(const char *listen, char *why, size_t whylen)
{
	int family;

	switch (dnssd_listen_kind(listen, &family)) {
	case DNSSD_LISTEN_INVALID:
		snprintf(why, whylen, "'%s' is not a numeric address", listen ? listen : "");
		return false;
	case DNSSD_LISTEN_LOOPBACK:
		/* Nobody else could connect to it. */
		snprintf(why, whylen, "%s is a loopback address (listen on the LAN address, or "
		         "0.0.0.0, to be found by peers)", listen);
		return false;
	case DNSSD_LISTEN_WILDCARD:
	case DNSSD_LISTEN_SPECIFIC:
		break;
	}
	if (whylen > 0)
		why[0] = '\0';
	return true;
}

int
dnssd_announce_start(const struct dnssd_announce_config *c, struct dnssd_announce **out)
{
	struct dnssd_announce *a;
	int family = 0, err;

	*out = NULL;
	if (c->port == 0 || c->port > 65535 || !dnssd_valid_node_id(c->node_id) ||
	    !dnssd_valid_key_fp(c->key_fp))
		return BG_EINVAL;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return BG_ENOMEM;
	a->log = c->log;
	a->log_arg = c->log_arg;
	a->port = c->port;
	switch (dnssd_listen_kind(c->listen, &family)) {
	case DNSSD_LISTEN_INVALID:
		free(a);
		return BG_EINVAL;
	case DNSSD_LISTEN_LOOPBACK: {
		char why[256];

		(void)dnssd_listen_announced(c->listen, why, sizeof(why));
		LOG(a, "DNS-SD: not announced: %s", why);
		free(a);
		return BG_ENOTIMPL;
	}
	case DNSSD_LISTEN_WILDCARD:
		a->ifindex = AVAHI_IF_UNSPEC;
		/* "::" takes IPv4 too (dual stack). */
		a->proto = family == AF_INET ? AVAHI_PROTO_INET : AVAHI_PROTO_UNSPEC;
		snprintf(a->where, sizeof(a->where), "on every interface");
		break;
	case DNSSD_LISTEN_SPECIFIC: {
		char ifname[IF_NAMESIZE], addr[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
		size_t n;

		/* The bare address: no brackets, no scope. */
		snprintf(addr, sizeof(addr), "%s", c->listen + (c->listen[0] == '['));
		n = strcspn(addr, "%]");
		addr[n] = '\0';
		if (avahi_address_parse(addr, AVAHI_PROTO_UNSPEC, &a->addr) == NULL) {
			free(a);
			return BG_EINVAL;
		}
		a->own_host = true;
		snprintf(a->host, sizeof(a->host), "bgcopy-%.12s-%u.local", c->node_id, c->port);
		if ((a->ifindex = dnssd_listen_ifindex(c->listen)) <= 0) {
			LOG(a, "DNS-SD: not announced: no interface holds %s", c->listen);
			free(a);
			return BG_EINVAL;
		}
		a->proto = family == AF_INET ? AVAHI_PROTO_INET : AVAHI_PROTO_INET6;
		snprintf(a->where, sizeof(a->where), "on %s",
		         if_indextoname((unsigned)a->ifindex, ifname) != NULL ? ifname : "?");
		break;
	}
	}

	{
		char v[16], id[8 + BG_NODE_ID_LEN], kf[8 + PEER_KEY_FP_LEN];

		snprintf(v, sizeof(v), "v=%d", DNSSD_VERSION);
		snprintf(id, sizeof(id), "id=%s", c->node_id);
		snprintf(kf, sizeof(kf), "kf=%s", c->key_fp);
		/* All or nothing; the list comes out last first. */
		if ((a->txt = avahi_string_list_new(v, id, kf, NULL)) == NULL) {
			free(a);
			return BG_ENOMEM;
		}
		a->txt = avahi_string_list_reverse(a->txt);
	}

	a->cn.owner = a;
	a->cn.running = on_running;
	a->cn.state = on_state;
	a->cn.lost = on_lost;
	a->cn.absent = on_absent;
	if ((err = dnssd_conn_start(&a->cn)) != 0) {
		avahi_string_list_free(a->txt);
		free(a);
		return err;
	}
	*out = a;
	return 0;
}

void
dnssd_announce_stop(struct dnssd_announce *a)
{
	if (a == NULL)
		return;
	dnssd_conn_stop(&a->cn); /* on_lost() withdraws the service */
	avahi_string_list_free(a->txt);
	avahi_free(a->name);
	free(a);
}
