/* state.c - the BITS job state machine: which event moves a job where. */
#include "agent.h"

#define S(x) (1u << JOB_##x)
#define ANY_ACTIVE (S(QUEUED) | S(CONNECTING) | S(TRANSFERRING))
#define RUNNING (S(CONNECTING) | S(TRANSFERRING))
#define NOT_FINAL (S(QUEUED) | S(CONNECTING) | S(TRANSFERRING) | S(SUSPENDED) | S(ERROR) | \
                   S(TRANSIENT_ERROR) | S(TRANSFERRED))

/* For each event: the states it applies to, and where it leads (SAME: the
 * state does not change). */
#define SAME ((enum job_state) - 1)
static const struct rule {
	enum job_event ev;
	unsigned from;
	enum job_state to;
} rules[] = {
	/* resume: a suspended or failed job is queued again; an active or
	 * finished transfer is left as it is. */
	{JOB_EV_RESUME, S(SUSPENDED) | S(ERROR) | S(TRANSIENT_ERROR), JOB_QUEUED},
	{JOB_EV_RESUME, ANY_ACTIVE | S(TRANSFERRED), SAME},
	{JOB_EV_SUSPEND, ANY_ACTIVE | S(ERROR) | S(TRANSIENT_ERROR) | S(TRANSFERRED), JOB_SUSPENDED},
	{JOB_EV_SUSPEND, S(SUSPENDED), SAME},
	{JOB_EV_CANCEL, NOT_FINAL, JOB_CANCELLED},
	{JOB_EV_COMPLETE, S(TRANSFERRED), JOB_ACKNOWLEDGED},
	/* A runner takes a queued job, a due retry, or one whose runner died. */
	{JOB_EV_START, S(QUEUED) | S(TRANSIENT_ERROR) | RUNNING, JOB_CONNECTING},
	{JOB_EV_RECEIVE, RUNNING, JOB_TRANSFERRING},
	{JOB_EV_DONE, RUNNING, JOB_TRANSFERRED},
	{JOB_EV_TRANSIENT, RUNNING, JOB_TRANSIENT_ERROR},
	{JOB_EV_FATAL, RUNNING, JOB_ERROR},
	{JOB_EV_RETRY, S(TRANSIENT_ERROR), JOB_QUEUED},
	{JOB_EV_STOP, RUNNING, JOB_QUEUED},
	/* New files reopen a transferred job, as BITS does. */
	{JOB_EV_ADD, S(TRANSFERRED), JOB_QUEUED},
	{JOB_EV_ADD, NOT_FINAL & ~S(TRANSFERRED), SAME},
};

int
job_transition(enum job_state from, enum job_event ev, enum job_state *to)
{
	if ((unsigned)from > JOB_CANCELLED)
		return BG_EINVAL;
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		if (rules[i].ev == ev && (rules[i].from & (1u << from))) {
			*to = rules[i].to == SAME ? from : rules[i].to;
			return 0;
		}
	}
	return BG_EINVAL;
}

const char *
job_event_name(enum job_event ev)
{
	static const char *const names[] = {
		[JOB_EV_RESUME] = "resume",       [JOB_EV_SUSPEND] = "suspend",
		[JOB_EV_CANCEL] = "cancel",       [JOB_EV_COMPLETE] = "complete",
		[JOB_EV_START] = "start",         [JOB_EV_RECEIVE] = "receive",
		[JOB_EV_DONE] = "done",           [JOB_EV_TRANSIENT] = "transient error",
		[JOB_EV_FATAL] = "fatal error",   [JOB_EV_RETRY] = "retry",
		[JOB_EV_STOP] = "stop",           [JOB_EV_ADD] = "add files",
	};

	if ((unsigned)ev >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[ev];
}
