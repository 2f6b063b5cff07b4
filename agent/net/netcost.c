/*
 * netcost.c - whether the network is metered: NetworkManager's Metered
 * property over the D-Bus system bus (sd-bus).
 *
 * The daemon asks every NETCOST_POLL_MS while a job depends on the answer
 * (netcost_query on a kept connection) rather than subscribing to
 * PropertiesChanged: a question on a connection that is already open costs
 * one round trip, and asking covers every way the answer can change with
 * no state to keep in step: NetworkManager starting late, stopping,
 * restarting with another unique name, or the bus itself restarting (the
 * next question reconnects).
 */
#include <errno.h>
#include <stdlib.h>

#include <systemd/sd-bus.h>

#include "netcost.h"

#define NM_BUS_NAME "org.freedesktop.NetworkManager"
#define NM_OBJECT "/org/freedesktop/NetworkManager"
#define NM_INTERFACE "org.freedesktop.NetworkManager"

struct netcost {
	sd_bus *bus; /* NULL until the first question, and after the bus broke */
};

enum net_cost
netcost_from_nm_metered(uint32_t metered)
{
	return metered == NM_METERED_YES || metered == NM_METERED_GUESS_YES ? NET_COST_METERED
	                                                                    : NET_COST_UNRESTRICTED;
}

const char *
net_cost_name(enum net_cost c)
{
	return c == NET_COST_METERED ? "metered" : "unrestricted";
}

int
netcost_new(struct netcost **out)
{
	struct netcost *nc = calloc(1, sizeof(*nc));

	if (nc == NULL)
		return BG_ENOMEM;
	*out = nc;
	return 0;
}

void
netcost_free(struct netcost *nc)
{
	if (nc == NULL)
		return;
	sd_bus_flush_close_unref(nc->bus);
	free(nc);
}

/* Get(NM_INTERFACE, "Metered") on bus: 0 and *metered, 1 when the bus
 * answered with an error (no NetworkManager, or one without Metered), or a
 * negative errno when the question did not get through. */
static int
ask(sd_bus *bus, uint32_t *metered)
{
	sd_bus_message *m = NULL, *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, NM_BUS_NAME, NM_OBJECT,
	                                   "org.freedesktop.DBus.Properties", "Get");
	/* Never start NetworkManager by bus activation just to ask. */
	if (r >= 0)
		r = sd_bus_message_set_auto_start(m, 0);
	if (r >= 0)
		r = sd_bus_message_append(m, "ss", NM_INTERFACE, "Metered");
	if (r >= 0)
		r = sd_bus_call(bus, m, (uint64_t)NETCOST_CALL_TIMEOUT_MS * 1000, &e, &reply);
	if (r < 0 && sd_bus_error_is_set(&e))
		r = 1; /* an error reply: ServiceUnknown, NameHasNoOwner, UnknownProperty ... */
	else if (r >= 0)
		r = sd_bus_message_read(reply, "v", "u", metered) < 0 ? 1 : 0;
	sd_bus_error_free(&e);
	sd_bus_message_unref(m);
	sd_bus_message_unref(reply);
	return r;
}

enum net_cost
netcost_query(struct netcost *nc, enum netcost_source *src)
{
	enum netcost_source from = NETCOST_SRC_NO_BUS;
	enum net_cost cost = NET_COST_UNRESTRICTED;
	uint32_t metered = NM_METERED_UNKNOWN;
	int r;

	if (nc->bus == NULL && sd_bus_open_system(&nc->bus) < 0)
		nc->bus = NULL;
	if (nc->bus != NULL) {
		r = ask(nc->bus, &metered);
		if (r == 0) {
			from = NETCOST_SRC_NM;
			cost = netcost_from_nm_metered(metered);
		} else if (r == 1) {
			from = NETCOST_SRC_NO_NM;
		} else if (r != -ETIMEDOUT || !sd_bus_is_open(nc->bus)) {
			/* The bus went away (restarted, stopped): reconnect next time. */
			sd_bus_flush_close_unref(nc->bus);
			nc->bus = NULL;
		}
	}
	if (src != NULL)
		*src = from;
	return cost;
}

enum net_cost
netcost_read(void)
{
	struct netcost nc = {NULL};
	enum net_cost cost = netcost_query(&nc, NULL);

	sd_bus_flush_close_unref(nc.bus);
	return cost;
}
