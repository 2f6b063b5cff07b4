/* test_state.c - every transition of the job state machine, allowed or not. */
#include "agent.h"
#include "check.h"

#define N_STATES (JOB_CANCELLED + 1)
#define N_EVENTS (JOB_EV_ADD + 1)
#define BAD ((int)-1)

/* expect[event][state]: the state reached, or BAD when refused. */
static const int expect[N_EVENTS][N_STATES] = {
	/*                 QUEUED        CONNECTING    TRANSFERRING  SUSPENDED     ERROR          TRANSIENT     TRANSFERRED    ACK  CANCELLED */
	[JOB_EV_RESUME] = {JOB_QUEUED, JOB_CONNECTING, JOB_TRANSFERRING, JOB_QUEUED, JOB_QUEUED, JOB_QUEUED, JOB_TRANSFERRED, BAD, BAD},
	[JOB_EV_SUSPEND] = {JOB_SUSPENDED, JOB_SUSPENDED, JOB_SUSPENDED, JOB_SUSPENDED, JOB_SUSPENDED, JOB_SUSPENDED, JOB_SUSPENDED, BAD, BAD},
	[JOB_EV_CANCEL] = {JOB_CANCELLED, JOB_CANCELLED, JOB_CANCELLED, JOB_CANCELLED, JOB_CANCELLED, JOB_CANCELLED, JOB_CANCELLED, BAD, BAD},
	[JOB_EV_COMPLETE] = {BAD, BAD, BAD, BAD, BAD, BAD, JOB_ACKNOWLEDGED, BAD, BAD},
	[JOB_EV_START] = {JOB_CONNECTING, JOB_CONNECTING, JOB_CONNECTING, BAD, BAD, JOB_CONNECTING, BAD, BAD, BAD},
	[JOB_EV_RECEIVE] = {BAD, JOB_TRANSFERRING, JOB_TRANSFERRING, BAD, BAD, BAD, BAD, BAD, BAD},
	[JOB_EV_DONE] = {BAD, JOB_TRANSFERRED, JOB_TRANSFERRED, BAD, BAD, BAD, BAD, BAD, BAD},
	[JOB_EV_TRANSIENT] = {BAD, JOB_TRANSIENT_ERROR, JOB_TRANSIENT_ERROR, BAD, BAD, BAD, BAD, BAD, BAD},
	[JOB_EV_FATAL] = {BAD, JOB_ERROR, JOB_ERROR, BAD, BAD, BAD, BAD, BAD, BAD},
	[JOB_EV_RETRY] = {BAD, BAD, BAD, BAD, BAD, JOB_QUEUED, BAD, BAD, BAD},
	[JOB_EV_STOP] = {BAD, JOB_QUEUED, JOB_QUEUED, BAD, BAD, BAD, BAD, BAD, BAD},
	[JOB_EV_ADD] = {JOB_QUEUED, JOB_CONNECTING, JOB_TRANSFERRING, JOB_SUSPENDED, JOB_ERROR, JOB_TRANSIENT_ERROR, JOB_QUEUED, BAD, BAD},
};

int
main(void)
{
	for (int ev = 0; ev < N_EVENTS; ev++) {
		for (int st = 0; st < N_STATES; st++) {
			enum job_state to = (enum job_state)99;
			int err = job_transition((enum job_state)st, (enum job_event)ev, &to);
			int got = err == 0 ? (int)to : BAD;

			if (!CHECK(got == expect[ev][st]))
				fprintf(stderr, "    %s in %s: expected %s, got %s\n",
				        job_event_name((enum job_event)ev), job_state_name((enum job_state)st),
				        expect[ev][st] == BAD ? "refused" : job_state_name((enum job_state)expect[ev][st]),
				        got == BAD ? "refused" : job_state_name((enum job_state)got));
		}
	}
	/* Names round-trip, unknown ones are refused. */
	for (int st = 0; st < N_STATES; st++) {
		enum job_state back;

		CHECK(job_state_parse(job_state_name((enum job_state)st), &back) == 0 && (int)back == st);
	}
	{
		enum job_state back;
		enum job_priority p;

		CHECK(job_state_parse("RUNNING", &back) == BG_EINVAL);
		CHECK(job_state_final(JOB_ACKNOWLEDGED) && job_state_final(JOB_CANCELLED));
		CHECK(!job_state_final(JOB_ERROR) && !job_state_final(JOB_TRANSFERRED));
		CHECK(job_priority_parse("HIGH", &p) == 0 && p == JOB_PRIO_HIGH);
		CHECK(job_priority_parse("urgent", &p) == BG_EINVAL);
	}
	return check_done();
}
