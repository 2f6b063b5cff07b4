/* test_state.c - every transition of the job state machine, allowed or not,
 * the decisions taken from a job's state and clocks (due, transient or
 * fatal, a get's end), and the state shown for a job whose runner is gone. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jobs.h"
#include "check.h"

#define JOB_ID "aaaaaaaa-0000-4000-8000-000000000001"

#define N_STATES (JOB_CANCELLED + 1)
#define N_EVENTS (JOB_EV_GIVE_UP + 1)
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
	[JOB_EV_RUN] = {JOB_CONNECTING, JOB_CONNECTING, JOB_CONNECTING, JOB_CONNECTING, JOB_CONNECTING, JOB_CONNECTING, JOB_CONNECTING, BAD, BAD},
	[JOB_EV_GIVE_UP] = {BAD, BAD, BAD, BAD, JOB_ERROR, JOB_ERROR, BAD, BAD, BAD},
};

/* Which stored jobs a scheduler starts. */
static void
test_due(void)
{
	const int64_t now = 1000000;

	CHECK(job_due(JOB_QUEUED, 0, now));
	/* A runner's state with no runner left (the lock tells). */
	CHECK(job_due(JOB_CONNECTING, 0, now) && job_due(JOB_TRANSFERRING, 0, now));
	CHECK(job_due(JOB_TRANSIENT_ERROR, now, now) && job_due(JOB_TRANSIENT_ERROR, now - 1, now));
	CHECK(!job_due(JOB_TRANSIENT_ERROR, now + 1, now));
	/* Whatever its retry time, nothing else is started. */
	CHECK(!job_due(JOB_SUSPENDED, 0, now) && !job_due(JOB_ERROR, 0, now));
	CHECK(!job_due(JOB_TRANSFERRED, 0, now) && !job_due(JOB_ACKNOWLEDGED, 0, now));
	CHECK(!job_due(JOB_CANCELLED, 0, now));
}

/* Transient or fatal: hr_transient, then the no-progress clock. */
static void
test_failure(void)
{
	const int64_t now = 1000000, day = 24 * 3600;

	CHECK(job_failure_event(false, now, 0, day) == JOB_EV_FATAL);
	/* The first transient error starts the clock. */
	CHECK(job_failure_event(true, now, 0, day) == JOB_EV_TRANSIENT);
	CHECK(job_failure_event(true, now, now - day + 1, day) == JOB_EV_TRANSIENT);
	CHECK(job_failure_event(true, now, now - day, day) == JOB_EV_FATAL);
	/* A timeout of 0: every error is fatal. */
	CHECK(job_failure_event(true, now, 0, 0) == JOB_EV_FATAL);
	CHECK(job_failure_event(true, now, now, -1) == JOB_EV_FATAL);
}

/* A foreground get: complete, or give up keeping or discarding bytes. */
static void
test_get_end(void)
{
	CHECK(job_get_end(JOB_TRANSFERRED, 0, false) == JOB_GET_COMPLETE);
	CHECK(job_get_end(JOB_TRANSFERRED, 10, true) == JOB_GET_COMPLETE);
	CHECK(job_get_end(JOB_TRANSIENT_ERROR, 10, false) == JOB_GET_GIVE_UP_KEEP);
	CHECK(job_get_end(JOB_ERROR, 10, true) == JOB_GET_GIVE_UP_KEEP);
	CHECK(job_get_end(JOB_ERROR, 10, false) == JOB_GET_GIVE_UP_DISCARD);
	CHECK(job_get_end(JOB_TRANSIENT_ERROR, 0, false) == JOB_GET_GIVE_UP_DISCARD);
	CHECK(job_get_end(JOB_ERROR, 0, true) == JOB_GET_GIVE_UP_DISCARD);
	/* Its immediate retries: transient errors only, up to the count,
	 * 1 s apart at first, doubling to at most 30 s. */
	CHECK(job_retry_now(HR_ERROR_WINHTTP_TIMEOUT, 0, 3));
	CHECK(job_retry_now(HR_ERROR_WINHTTP_TIMEOUT, 2, 3));
	CHECK(!job_retry_now(HR_ERROR_WINHTTP_TIMEOUT, 3, 3));
	CHECK(!job_retry_now(HR_ERROR_CRC, 0, 3));
	CHECK(!job_retry_now(HR_ERROR_WINHTTP_TIMEOUT, 0, 0));
	CHECK(job_retry_delay(0) == 1 && job_retry_delay(1) == 2 && job_retry_delay(8) == 16);
	CHECK(job_retry_delay(16) == 30 && job_retry_delay(30) == 30);
}

/* An outcome and its message. */
static void
test_outcome(void)
{
	struct job_outcome o;

	CHECK(job_outcome_set(&o, HR_ERROR_DISK_FULL, true, "cannot write %s", "/x") ==
	      HR_ERROR_DISK_FULL);
	CHECK(o.local && o.hr == HR_ERROR_DISK_FULL);
	CHECK_EQ_STR(o.message, "cannot write /x");
	job_outcome_clear(&o);
	CHECK(o.hr == HR_S_OK && !o.local && o.message[0] == '\0');
}

/* A job's lock held by another process, which is then killed (SIGKILL):
 * the running states are shown as they are stored while it lives, QUEUED
 * once it is gone; every other state as stored. */
static void
test_shown_state(void)
{
	char home[] = "/tmp/bgstate-test-XXXXXX", path[128];
	struct job_lock *lock = NULL;
	int ready[2];
	char c;
	pid_t pid;

	if (mkdtemp(home) == NULL || pipe(ready) != 0) {
		perror("test_shown_state");
		exit(2);
	}
	/* Never run here: nothing holds it. */
	CHECK(job_lock_held(home, JOB_ID) == 0);
	CHECK(job_state_shown(home, JOB_ID, JOB_TRANSFERRING) == JOB_QUEUED);
	CHECK(job_state_shown(NULL, JOB_ID, JOB_TRANSFERRING) == JOB_TRANSFERRING);

	pid = fork();
	if (pid == 0) {
		close(ready[0]);
		if (job_lock(home, JOB_ID, &lock) != 0 || write(ready[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	CHECK(pid > 0 && read(ready[0], &c, 1) == 1);
	close(ready[0]);
	CHECK(job_lock_held(home, JOB_ID) == 1);
	CHECK(job_lock(home, JOB_ID, &lock) == BG_EBUSY);
	for (int st = 0; st <= JOB_CANCELLED; st++)
		CHECK(job_state_shown(home, JOB_ID, (enum job_state)st) == (enum job_state)st);

	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	CHECK(job_lock_held(home, JOB_ID) == 0);
	for (int st = 0; st <= JOB_CANCELLED; st++) {
		enum job_state want = st == JOB_CONNECTING || st == JOB_TRANSFERRING
		                              ? JOB_QUEUED : (enum job_state)st;
		enum job_state got = job_state_shown(home, JOB_ID, (enum job_state)st);

		if (!CHECK(got == want))
			fprintf(stderr, "    stored %s: expected %s, got %s\n",
			        job_state_name((enum job_state)st), job_state_name(want), job_state_name(got));
	}

	/* Held by this process: seen as held too (its own get prints it). */
	CHECK(job_lock(home, JOB_ID, &lock) == 0);
	CHECK(job_lock_held(home, JOB_ID) == 1);
	CHECK(job_state_shown(home, JOB_ID, JOB_CONNECTING) == JOB_CONNECTING);
	job_unlock(lock);
	CHECK(job_lock_held(home, JOB_ID) == 0);

	snprintf(path, sizeof(path), "%s/locks/%s", home, JOB_ID);
	unlink(path);
	snprintf(path, sizeof(path), "%s/locks", home);
	rmdir(path);
	rmdir(home);
}

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
	test_due();
	test_failure();
	test_get_end();
	test_outcome();
	test_shown_state();
	return check_done();
}
