/* config.c - bgcopy.conf (placeholder: defaults only; the parser lands with issue 14). */
#include <stdlib.h>
#include <string.h>

#include "config.h"

static const char *const key_names[BG_CONF_KEYS] = {
	[BG_CONF_DISCOVERY] = "discovery",   [BG_CONF_DISCOVERY_SUBNETS] = "discovery_subnets",
	[BG_CONF_PEER] = "peer",             [BG_CONF_PEER_DNS] = "peer_dns",
	[BG_CONF_PEER_KEY] = "peer_key",     [BG_CONF_PEER_CACHING] = "peer_caching",
	[BG_CONF_LISTEN] = "listen",         [BG_CONF_PORT] = "port",
};

const char *
bg_config_key_name(enum bg_conf_key k)
{
	return (unsigned)k < BG_CONF_KEYS ? key_names[k] : NULL;
}

int
bg_config_load(struct bg_config *c, char *why, size_t whylen)
{
	(void)why;
	(void)whylen;
	memset(c, 0, sizeof(*c));
	c->discovery = true;
	c->peer_caching = strdup("server");
	c->listen = strdup("127.0.0.1");
	c->port = 7654;
	if (c->peer_caching == NULL || c->listen == NULL) {
		bg_config_free(c);
		return BG_ENOMEM;
	}
	return 0;
}

int
bg_config_set(struct bg_config *c, const char *name, const char *value, char *why, size_t whylen)
{
	(void)c;
	(void)name;
	(void)value;
	(void)why;
	(void)whylen;
	return BG_ENOTIMPL;
}

void
bg_config_free(struct bg_config *c)
{
	for (size_t i = 0; i < c->npeers; i++)
		free(c->peers[i]);
	free(c->peer_dns);
	free(c->peer_key);
	free(c->peer_caching);
	free(c->listen);
	for (size_t i = 0; i < 3; i++)
		free(c->files[i]);
	memset(c, 0, sizeof(*c));
}
