/*
 * netcost.h - the cost of the network, as NetworkManager reports it: is the
 * machine on a metered connection?  BITS asks Windows the same thing for its
 * transfer policies (BITS_JOB_PROPERTY_ID_COST_FLAGS); on Linux the answer
 * is NetworkManager's `Metered` property (org.freedesktop.NetworkManager,
 * object /org/freedesktop/NetworkManager, type u: NMMetered), read over the
 * D-Bus system bus with sd-bus (libsystemd).  DBUS_SYSTEM_BUS_ADDRESS names
 * another bus, as for every D-Bus client.
 *
 * Without a system bus, or without NetworkManager on it, the network counts
 * as unrestricted, silently: that is the state of most servers and
 * containers, and nothing here prints (library code never does).
 *
 * Its own static library (bgnetcost), so that only what asks links
 * libsystemd.  Not thread-safe: one struct netcost per thread.
 */
#ifndef BG_NETCOST_H
#define BG_NETCOST_H

#include <stdint.h>

#include "cache.h"

/* NMMetered (NetworkManager's nm-dbus-interface.h). */
#define NM_METERED_UNKNOWN 0
#define NM_METERED_YES 1
#define NM_METERED_NO 2
#define NM_METERED_GUESS_YES 3
#define NM_METERED_GUESS_NO 4

/* How long one question to the bus may take: a hung NetworkManager must
 * not hold the daemon's scheduler for longer. */
#define NETCOST_CALL_TIMEOUT_MS 1000
/* How often the daemon asks again while a job depends on the answer. */
#define NETCOST_POLL_MS 2000

enum net_cost {
	NET_COST_UNRESTRICTED, /* not metered, unknown, or no NetworkManager */
	NET_COST_METERED,      /* NM_METERED_YES or NM_METERED_GUESS_YES */
};

/* The cost a Metered value means: YES and GUESS_YES are metered; UNKNOWN,
 * NO, GUESS_NO and any value of a later NetworkManager are unrestricted.
 * Pure. */
enum net_cost netcost_from_nm_metered(uint32_t metered);
/* "unrestricted" or "metered". */
const char *net_cost_name(enum net_cost c);

/* Where an answer came from, for the daemon's log. */
enum netcost_source {
	NETCOST_SRC_NM,     /* NetworkManager answered */
	NETCOST_SRC_NO_NM,  /* the bus answered that NetworkManager is not there */
	NETCOST_SRC_NO_BUS, /* no system bus, or it broke */
};

/* A connection to the system bus kept between questions (the daemon's),
 * opened at the first question.  netcost_free accepts NULL. */
struct netcost;
int netcost_new(struct netcost **out) BG_WUR;
void netcost_free(struct netcost *nc);
/* Asks NetworkManager now (a blocking call of at most
 * NETCOST_CALL_TIMEOUT_MS; the bus is reconnected if it went away).  Never
 * fails: anything but an answer from NetworkManager is unrestricted.
 * *src (may be NULL) says where the answer came from. */
enum net_cost netcost_query(struct netcost *nc, enum netcost_source *src);

/* One question on a connection of its own (for commands run once: info,
 * get): NET_COST_UNRESTRICTED when anything fails. */
enum net_cost netcost_read(void);

#endif /* BG_NETCOST_H */
