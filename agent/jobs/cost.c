/*
 * cost.c - a job's transfer policy on costed networks (BITS 5's
 * BITS_JOB_PROPERTY_ID_COST_FLAGS), as BITS cost flags.
 *
 * BITS gives new jobs BITS_COST_STATE_TRANSFER_NOT_ROAMING (0x8000007f):
 * every network but a roaming one, metered ones included.  NetworkManager
 * tells bgcopy only metered or not (netcost.h), never roaming, so of the
 * two classes bgcopy has, the one that matches BITS's default on every
 * network bgcopy can tell apart is `always` (0x800000ff): a metered network
 * that is not roaming is one BITS's default transfers on.  It also keeps
 * jobs of older builds (no cost flags in their records) doing what they
 * did.
 */
#include <string.h>

#include "jobs.h"

/* The metered cost states of BITS_COST_STATE (CAPPED_USAGE_UNKNOWN 0x2 to
 * ROAMING 0x80): a policy without any transfers only where it is
 * unrestricted. */
#define COST_STATES_METERED 0xfeu

const char *
job_transfer_policy_name(enum job_transfer_policy p)
{
	return p == JOB_POLICY_UNRESTRICTED_ONLY ? "unrestricted-only" : "always";
}

int
job_transfer_policy_parse(const char *s, enum job_transfer_policy *out)
{
	if (s != NULL && strcmp(s, "always") == 0)
		*out = JOB_POLICY_ALWAYS;
	else if (s != NULL && strcmp(s, "unrestricted-only") == 0)
		*out = JOB_POLICY_UNRESTRICTED_ONLY;
	else
		return BG_EINVAL;
	return 0;
}

uint32_t
job_transfer_policy_flags(enum job_transfer_policy p)
{
	return p == JOB_POLICY_UNRESTRICTED_ONLY ? JOB_COST_FLAGS_UNRESTRICTED : JOB_COST_FLAGS_ALWAYS;
}

enum job_transfer_policy
job_transfer_policy_of(uint32_t cost_flags)
{
	return (cost_flags & COST_STATES_METERED) == 0 ? JOB_POLICY_UNRESTRICTED_ONLY
	                                              : JOB_POLICY_ALWAYS;
}

bool
job_policy_allows(enum job_transfer_policy p, enum net_cost c)
{
	return p == JOB_POLICY_ALWAYS || c == NET_COST_UNRESTRICTED;
}

const char *
job_cost_waiting_reason(enum job_transfer_policy p, enum net_cost c)
{
	return job_policy_allows(p, c) ? NULL : JOB_WAITING_UNRESTRICTED;
}
