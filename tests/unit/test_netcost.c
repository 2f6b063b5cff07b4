/* test_netcost.c - NetworkManager's Metered values as network costs, and the
 * transfer policies (BITS cost flags) that they hold back. */
#include "check.h"
#include "jobs.h"
#include "netcost.h"

static void
metered_yes_and_guess_yes_are_metered(void)
{
	CHECK_EQ_INT(netcost_from_nm_metered(NM_METERED_YES), NET_COST_METERED);
	CHECK_EQ_INT(netcost_from_nm_metered(NM_METERED_GUESS_YES), NET_COST_METERED);
}

static void
other_values_are_unrestricted(void)
{
	CHECK_EQ_INT(netcost_from_nm_metered(NM_METERED_UNKNOWN), NET_COST_UNRESTRICTED);
	CHECK_EQ_INT(netcost_from_nm_metered(NM_METERED_NO), NET_COST_UNRESTRICTED);
	CHECK_EQ_INT(netcost_from_nm_metered(NM_METERED_GUESS_NO), NET_COST_UNRESTRICTED);
	/* A value of a later NetworkManager holds nothing back. */
	CHECK_EQ_INT(netcost_from_nm_metered(5), NET_COST_UNRESTRICTED);
	CHECK_EQ_INT(netcost_from_nm_metered(UINT32_MAX), NET_COST_UNRESTRICTED);
	CHECK_EQ_STR(net_cost_name(NET_COST_METERED), "metered");
	CHECK_EQ_STR(net_cost_name(NET_COST_UNRESTRICTED), "unrestricted");
}

static void
policy_names_map_to_bits_cost_flags(void)
{
	enum job_transfer_policy p = JOB_POLICY_ALWAYS;

	CHECK(job_transfer_policy_parse("unrestricted-only", &p) == 0);
	CHECK_EQ_INT(p, JOB_POLICY_UNRESTRICTED_ONLY);
	CHECK_EQ_INT(job_transfer_policy_flags(p), 0x1);
	CHECK(job_transfer_policy_parse("always", &p) == 0);
	CHECK_EQ_INT(p, JOB_POLICY_ALWAYS);
	CHECK_EQ_INT(job_transfer_policy_flags(p), 0x800000ffu);
	CHECK(job_transfer_policy_parse("Always", &p) == BG_EINVAL);
	CHECK(job_transfer_policy_parse("", &p) == BG_EINVAL);
	CHECK(job_transfer_policy_parse(NULL, &p) == BG_EINVAL);
	CHECK_EQ_STR(job_transfer_policy_name(JOB_POLICY_UNRESTRICTED_ONLY), "unrestricted-only");
	CHECK_EQ_STR(job_transfer_policy_name(JOB_POLICY_ALWAYS), "always");
}

static void
stored_cost_flags_read_as_a_policy(void)
{
	CHECK_EQ_INT(job_transfer_policy_of(0x1), JOB_POLICY_UNRESTRICTED_ONLY);
	CHECK_EQ_INT(job_transfer_policy_of(0x800000ffu), JOB_POLICY_ALWAYS);
	/* BITS's other classes: any metered cost state allowed is "always" here. */
	CHECK_EQ_INT(job_transfer_policy_of(0x8000007fu), JOB_POLICY_ALWAYS); /* NOT_ROAMING */
	CHECK_EQ_INT(job_transfer_policy_of(0x80000021u), JOB_POLICY_ALWAYS); /* TRANSFER_UNRESTRICTED */
	CHECK_EQ_INT(job_transfer_policy_of(0x80000001u), JOB_POLICY_UNRESTRICTED_ONLY);
}

static void
unrestricted_only_waits_on_metered_network_only(void)
{
	CHECK(job_policy_allows(JOB_POLICY_ALWAYS, NET_COST_METERED));
	CHECK(job_policy_allows(JOB_POLICY_ALWAYS, NET_COST_UNRESTRICTED));
	CHECK(!job_policy_allows(JOB_POLICY_UNRESTRICTED_ONLY, NET_COST_METERED));
	CHECK(job_policy_allows(JOB_POLICY_UNRESTRICTED_ONLY, NET_COST_UNRESTRICTED));
	CHECK_EQ_STR(job_cost_waiting_reason(JOB_POLICY_UNRESTRICTED_ONLY, NET_COST_METERED),
	             "waiting for an unrestricted network");
	CHECK(job_cost_waiting_reason(JOB_POLICY_UNRESTRICTED_ONLY, NET_COST_UNRESTRICTED) == NULL);
	CHECK(job_cost_waiting_reason(JOB_POLICY_ALWAYS, NET_COST_METERED) == NULL);
}

int
main(void)
{
	metered_yes_and_guess_yes_are_metered();
	other_values_are_unrestricted();
	policy_names_map_to_bits_cost_flags();
	stored_cost_flags_read_as_a_policy();
	unrestricted_only_waits_on_metered_network_only();
	return check_done();
}
