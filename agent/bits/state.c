/* state.c - the BITS job state machine: which event moves a job where, and
 * the decisions taken from a job's state and clocks (is it due, is a failure
 * transient, what a foreground get does with a job that failed).  Pure: no
 * store, no records. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "bits.h"

static const char *const state_names[] = {
	[JOB_QUEUED] = "QUEUED",           [JOB_CONNECTING] = "CONNECTING",
	[JOB_TRANSFERRING] = "TRANSFERRING", [JOB_SUSPENDED] = "SUSPENDED",
	[JOB_ERROR] = "ERROR",             [JOB_TRANSIENT_ERROR] = "TRANSIENT_ERROR",
	[JOB_TRANSFERRED] = "TRANSFERRED", [JOB_ACKNOWLEDGED] = "ACKNOWLEDGED",
	[JOB_CANCELLED] = "CANCELLED",
};

const char *
name_at(const char *const *names, size_t n, unsigned i, const char *def)
{
	return i < n && names[i] != NULL ? names[i] : def;
}

int
name_find(const char *const *names, size_t n, const char *s, bool any_case)
{
	for (size_t i = 0; s != NULL && i < n; i++)
		if (names[i] != NULL &&
		    (any_case ? strcasecmp(s, names[i]) : strcmp(s, names[i])) == 0)
			return (int)i;
	return -1;
}

NAME_TABLE_FUNCS(job_state, state_names, "UNKNOWN", false)

bool
job_state_final(enum job_state s)
{
	return s == JOB_ACKNOWLEDGED || s == JOB_CANCELLED;
}


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
	/* A get runs its own job at once, in whatever state the last get left
	 * it (created SUSPENDED, ERROR with bytes to continue from...). */
	{JOB_EV_RUN, NOT_FINAL, JOB_CONNECTING},
	/* Nobody retries a foreground job once its get returns. */
	{JOB_EV_GIVE_UP, S(ERROR) | S(TRANSIENT_ERROR), JOB_ERROR},
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
		[JOB_EV_RUN] = "run",             [JOB_EV_GIVE_UP] = "give up",
	};

	if ((unsigned)ev >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[ev];
}

bool
job_due(enum job_state s, int64_t retry_at, int64_t now)
{
	enum job_state to;

	/* CONNECTING and TRANSFERRING: a runner that died left them; the
	 * job's lock, taken before the job runs, keeps a live runner's. */
	if (job_transition(s, JOB_EV_START, &to) != 0)
		return false;
	return s != JOB_TRANSIENT_ERROR || retry_at <= now;
}

enum job_event
job_failure_event(bool transient, int64_t now, int64_t transient_since, int64_t no_progress_timeout)
{
	/* BITS: the no-progress interval begins at the first transient error
	 * since the job last made progress; once it has passed (or when it is
	 * 0) the error is fatal. */
	if (!transient)
		return JOB_EV_FATAL;
	if (transient_since == 0)
		transient_since = now;
	if (no_progress_timeout > 0 && now - transient_since < no_progress_timeout)
		return JOB_EV_TRANSIENT;
	return JOB_EV_FATAL;
}

enum job_get_end
job_get_end(enum job_state s, uint64_t bytes_transferred, bool local_error)
{
	if (s == JOB_TRANSFERRED)
		return JOB_GET_COMPLETE;
	/* A fatal error leaves nothing half-written; bytes kept through a
	 * broken connection or a full disk stay, so that the same get resumes
	 * them. */
	if (bytes_transferred > 0 && (s == JOB_TRANSIENT_ERROR || local_error))
		return JOB_GET_GIVE_UP_KEEP;
	return JOB_GET_GIVE_UP_DISCARD;
}

#define RETRY_DELAY_MAX 30 /* seconds between immediate retries of a transient error */

bool
job_retry_now(uint32_t hr, unsigned attempts, unsigned max_retries)
{
	return hr_transient(hr) && attempts < max_retries;
}

unsigned
job_retry_delay(unsigned last)
{
	if (last == 0)
		return 1;
	return last * 2 > RETRY_DELAY_MAX ? RETRY_DELAY_MAX : last * 2;
}

uint32_t
job_outcome_set(struct job_outcome *o, uint32_t hr, bool local, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(o->message, sizeof(o->message), fmt, ap);
	va_end(ap);
	o->hr = hr;
	o->local = local;
	return hr;
}

void
job_outcome_clear(struct job_outcome *o)
{
	o->hr = HR_S_OK;
	o->local = false;
	o->message[0] = '\0';
}
