/*
 * daemon.c - the job service: runs queued jobs in worker threads until
 * SIGTERM, by priority, a bounded number at a time.
 *
 * The main thread schedules; each running job has a worker thread with its
 * own origin client (kept per worker slot, so connections are reused across
 * files and jobs).  A job is run only while its lock is held (job_lock), so
 * no job is ever transferred by two processes; a job whose runner died
 * (its lock free, its state still CONNECTING or TRANSFERRING) is taken over.
 * The CLI touches HOME/wake after each change; the daemon waits on that
 * with inotify, on its workers' completion pipe, and on its next timer
 * (a retry time or the end of a time slice), never polling the store.
 *
 * While no job runs, the daemon fills in the piece lists (one SHA-256 per
 * store chunk) of content stored by a build that kept none, a few MiB per
 * step, so that peers can take such content from several holders at once
 * (the swarm) without waiting for `bgcopy cache verify`.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jobs.h"
#include "record.h"
#include "jobs_int.h"

#define IDLE_WAKEUP_MS (60 * 1000) /* longest sleep with nothing scheduled */
#define FILL_STEP_CHUNKS 32        /* chunks hashed per idle step (8 MiB) */

extern char **environ;

struct worker {
	struct daemon *d;
	pthread_t thread;
	bool busy;             /* a job is assigned; the thread is joined by reap() */
	atomic_int finished;   /* set by the thread when job_run returned */
	volatile int stop;     /* asks job_run to stop (SIGTERM, preemption) */
	bool preempted;
	char id[STORE_JOB_ID_LEN + 1];
	enum job_priority prio;
	int64_t started;
	struct job_lock *lock;
	struct origin *origin;
	int result;
	enum job_transfer_policy policy; /* the job's, as the last scan saw it */
	bool cost_stopped;               /* stopped because the network became metered */
};

struct daemon {
	struct bg_store *st;
	const struct daemon_options *opt;
	char crl_dir[PATH_MAX];
	struct worker workers[DAEMON_MAX_WORKERS];
	int pipe[2];      /* workers and signals write a byte here */
	int ino;          /* inotify on HOME (the wake file) */
	json_t *last_run; /* job id -> time it last started: round robin */
	bool fill;        /* piece lists may lack digests: fill while idle */
	unsigned char fill_from[BG_SHA256_LEN];
	json_t *cleaned;  /* cancelled jobs whose partial data was removed */
	struct netcost *netcost; /* asked only while an unrestricted-only job waits or runs */
	enum net_cost cost;      /* the last answer */
	/* The limit shared by the transfers (but foreground ones), as the
	 * schedule chose it at the last tick. */
	struct bg_rate rate;
	bool rate_ready;         /* rate initialised */
	bool rate_chosen;        /* a choice was logged */
	int rate_window;         /* the schedule's window, -1: outside them */
	/* Notification commands still running.  Only these are reaped: a
	 * worker waits for its own children (a job's certificate check
	 * command), whose status a waitpid(-1) here would steal. */
	pid_t notified[DAEMON_NOTIFY_MAX];
	size_t nnotified;
};

static volatile sig_atomic_t stop_requested;
static int signal_fd = -1;

static void
on_signal(int sig)
{
	int saved = errno;

	(void)sig;
	stop_requested = 1;
	if (signal_fd >= 0 && write(signal_fd, "s", 1) < 0) {
		/* The flag is enough; the pipe only shortens the wait. */
	}
	errno = saved;
}

static void __attribute__((format(printf, 1, 2)))
note(const char *fmt, ...)
{
	char when[32];
	time_t t = time(NULL);
	struct tm tm;
	va_list ap;

	localtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "bgcopy daemon %s: ", when);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct job_run_options ro;

	memset(&ro, 0, sizeof(ro));
	ro.stop = &w->stop;
	ro.crl_dir = w->d->crl_dir;
	ro.home = w->d->opt->home;
	ro.ca_file = w->d->opt->ca_file;
	ro.peers = w->d->opt->peers;
	ro.npeers = w->d->opt->npeers;
	ro.peer_key = w->d->opt->peer_key;
	ro.table = w->d->opt->table;
	ro.fleet = w->d->opt->fleet;
	ro.fleet_owner = w->d->opt->fleet_owner;
	ro.fleet_origin_max = w->d->opt->fleet_origin_max;
	ro.fleet_takeovers = w->d->opt->fleet_takeovers;
	ro.transient_retries = 0; /* the daemon retries after the job's delay */
	ro.only_if_due = true;
	ro.sync = w->d->opt->sync;
	ro.shared_rate = &w->d->rate;
	w->result = job_run(w->d->st, w->origin, w->id, &ro);
	atomic_store(&w->finished, 1);
	if (write(w->d->pipe[1], "w", 1) < 0) {
		/* The main thread also wakes on its timer. */
	}
	return NULL;
}

/* Runs the job's notification command, without a shell, with the job id
 * as its last argument. */
static void
notify(struct daemon *d, const char *id, const struct strv *cmd)
{
	size_t n = cmd->n;
	char **argv;
	pid_t pid;
	int err;

	if (n == 0 || (argv = calloc(n + 2, sizeof(*argv))) == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		argv[i] = cmd->v[i];
	argv[n] = (char *)id;
	if (argv[0] != NULL) {
		err = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
		if (err != 0)
			note("job %s: cannot run notify command %s: %s", id, argv[0], strerror(err));
		else if (d->nnotified < DAEMON_NOTIFY_MAX)
			d->notified[d->nnotified++] = pid;
		/* else: more commands still running than are kept; this one is
		 * reaped when the daemon exits. */
	}
	free(argv);
}

static void
after_run(struct daemon *d, struct worker *w)
{
	struct job_rec job;

	if (w->result != 0 && w->result != BG_ECANCELED && w->result != BG_EAGAIN)
		note("job %s: stopped: %s", w->id, bg_strerror(w->result));
	if (job_load(d->st, w->id, &job) == 0) {
		note("job %s: %s%s", w->id, job_state_name(job.state),
		     w->cost_stopped ? " (" JOB_WAITING_UNRESTRICTED ")"
		     : w->preempted  ? " (its turn ended)"
		                     : "");
		if (job.state == JOB_CANCELLED) {
			/* Cancelled while it ran: its runner removes the partial data. */
			if (job_discard_partials(d->st, w->id) == 0)
				json_object_set_new(d->cleaned, w->id, json_true());
		} else if (w->result == 0 &&
		           (job.state == JOB_TRANSFERRED || job.state == JOB_ERROR)) {
			/* Only a run that got there notifies (once per arrival). */
			notify(d, w->id, &job.notify_cmd);
		}
	}
	job_rec_clear(&job);
	job_unlock(w->lock);
	w->lock = NULL;
	w->busy = false;
	w->preempted = false;
	w->cost_stopped = false;
	/* A file finished from a copy whose list had a gap has one too. */
	d->fill = true;
	memset(d->fill_from, 0, sizeof(d->fill_from));
}

/* One idle step of filling piece lists; returns whether more is left. */
static bool
fill_step(struct daemon *d)
{
	bool done = false;
	int err;

	for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++)
		if (d->workers[i].busy)
			return false; /* a job's turn: after_run asks again */
	err = store_pieces_fill_next(d->st, d->fill_from, FILL_STEP_CHUNKS, &done);
	if (err != 0) {
		note("cannot fill in piece lists: %s (bgcopy cache verify repairs them)",
		     bg_strerror(err));
		done = true;
	}
	if (done)
		d->fill = false;
	return !done;
}

static void
reap(struct daemon *d)
{
	for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++) {
		struct worker *w = &d->workers[i];

		if (w->busy && atomic_load(&w->finished)) {
			pthread_join(w->thread, NULL);
			after_run(d, w);
		}
	}
	/* Notification commands that ended. */
	for (size_t i = 0; i < d->nnotified;) {
		if (waitpid(d->notified[i], NULL, WNOHANG) != 0)
			d->notified[i] = d->notified[--d->nnotified];
		else
			i++;
	}
}

struct candidate {
	char id[STORE_JOB_ID_LEN + 1];
	enum job_priority prio;
	int64_t last_run;
	int64_t created;
	enum job_transfer_policy policy;
};

struct scan {
	struct daemon *d;
	struct candidate *c;
	size_t n, cap;
	int64_t now;
	int64_t next_retry; /* earliest future retry time, 0 if none */
	json_t *cancelled;  /* ids to clean up */
};

static bool
running(struct daemon *d, const char *id)
{
	for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++)
		if (d->workers[i].busy && strcmp(d->workers[i].id, id) == 0)
			return true;
	return false;
}

/* A running job's transfer policy, which a user may change while it runs. */
static void
note_running_policy(struct daemon *d, const char *id, const struct job_rec *job)
{
	for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++)
		if (d->workers[i].busy && strcmp(d->workers[i].id, id) == 0)
			d->workers[i].policy = job_transfer_policy_of(job->cost_flags);
}

static int
scan_fn(const char *id, json_t *rec, void *arg)
{
	struct scan *s = arg;
	struct job_rec job;
	struct candidate *c;
	int err = job_rec_decode(rec, &job);

	if (err != 0)
		return err == BG_ECORRUPT ? 0 : err;
	/* A get runs its own job in the foreground. */
	if (job.get_key != NULL)
		goto out;
	if (running(s->d, id)) {
		note_running_policy(s->d, id, &job);
		goto out;
	}
	if (job.state == JOB_CANCELLED) {
		if (json_object_get(s->d->cleaned, id) == NULL)
			json_array_append_new(s->cancelled, json_string(id));
		goto out;
	}
	if (!job_due(job.state, job.retry_at, s->now)) {
		if (job.state == JOB_TRANSIENT_ERROR &&
		    (s->next_retry == 0 || job.retry_at < s->next_retry))
			s->next_retry = job.retry_at;
		goto out;
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 32;
		struct candidate *nc = realloc(s->c, cap * sizeof(*nc));

		if (nc == NULL) {
			err = BG_ENOMEM;
			goto out;
		}
		s->c = nc;
		s->cap = cap;
	}
	c = &s->c[s->n++];
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->prio = job.priority;
	c->last_run = json_integer_value(json_object_get(s->d->last_run, id));
	c->created = job.created;
	c->policy = job_transfer_policy_of(job.cost_flags);
out:
	job_rec_clear(&job);
	return err;
}

static int
scan_txn(struct bg_txn *txn, void *arg)
{
	struct scan *s = arg;

	s->n = 0;
	s->next_retry = 0;
	json_array_clear(s->cancelled);
	return txn_job_each(txn, scan_fn, arg);
}

/* Higher priority first; within a level, the job that ran least recently
 * (round robin), then the oldest. */
static int
by_turn(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;

	if (x->prio != y->prio)
		return x->prio < y->prio ? -1 : 1;
	if (x->last_run != y->last_run)
		return x->last_run < y->last_run ? -1 : 1;
	return x->created < y->created ? -1 : x->created > y->created;
}

static int
start(struct daemon *d, const struct candidate *c)
{
	struct worker *w = NULL;
	int err;

	for (size_t i = 0; i < DAEMON_MAX_WORKERS && w == NULL; i++)
		if (!d->workers[i].busy)
			w = &d->workers[i];
	if (w == NULL)
		return BG_ELIMIT;
	/* Somebody else (a get, another daemon) may own it. */
	if ((err = job_lock(d->opt->home, c->id, &w->lock)) != 0)
		return err;
	if (w->origin == NULL && (err = origin_new(&w->origin)) != 0) {
		job_unlock(w->lock);
		w->lock = NULL;
		return err;
	}
	w->d = d;
	snprintf(w->id, sizeof(w->id), "%s", c->id);
	w->prio = c->prio;
	w->policy = c->policy;
	w->cost_stopped = false;
	w->started = bg_now();
	w->stop = 0;
	w->preempted = false;
	atomic_store(&w->finished, 0);
	json_object_set_new(d->last_run, c->id, json_integer((json_int_t)w->started));
	if ((err = pthread_create(&w->thread, NULL, worker_main, w)) != 0) {
		job_unlock(w->lock);
		w->lock = NULL;
		return bg_err_from_errno(err);
	}
	w->busy = true;
	note("job %s: started (%s)", c->id, job_priority_name(c->prio));
	return 0;
}

/* Transfer policies on costed networks, as BITS applies its cost flags: an
 * unrestricted-only job does not start while the network is metered, and
 * one running stops (back to QUEUED, its bytes kept) when it becomes so.
 * NetworkManager is asked only while such a job waits or runs, every
 * NETCOST_POLL_MS (netcost.c says why asking, not a subscription);
 * returns whether it was asked.  Candidates held back get id "" (as those
 * started), so that they neither start nor take another job's turn. */
static bool
apply_cost_policy(struct daemon *d, struct scan *s)
{
	bool needed = false;
	enum netcost_source src;
	enum net_cost cost;

	for (size_t i = 0; i < s->n && !needed; i++)
		needed = s->c[i].policy == JOB_POLICY_UNRESTRICTED_ONLY;
	for (size_t i = 0; i < DAEMON_MAX_WORKERS && !needed; i++)
		needed = d->workers[i].busy && d->workers[i].policy == JOB_POLICY_UNRESTRICTED_ONLY;
	if (!needed)
		return false;
	if (d->netcost == NULL && netcost_new(&d->netcost) != 0)
		return false; /* out of memory: nothing is held back */
	cost = netcost_query(d->netcost, &src);
	if (cost != d->cost)
		note("network %s%s", net_cost_name(cost),
		     cost == NET_COST_METERED ? " (NetworkManager): unrestricted-only jobs wait"
		     : src == NETCOST_SRC_NM  ? " (NetworkManager)"
		                              : " (NetworkManager not reachable)");
	d->cost = cost;
	if (cost != NET_COST_METERED)
		return true;
	for (size_t i = 0; i < s->n; i++)
		if (!job_policy_allows(s->c[i].policy, cost))
			s->c[i].id[0] = '\0';
	for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++) {
		struct worker *w = &d->workers[i];

		if (w->busy && !w->stop && !job_policy_allows(w->policy, cost)) {
			w->cost_stopped = true;
			w->stop = 1;
		}
	}
	return true;
}

static void
cleanup_cancelled(struct daemon *d, json_t *ids)
{
	size_t i;
	json_t *v;

	json_array_foreach(ids, i, v) {
		const char *id = json_string_value(v);
		struct job_lock *lock = NULL;

		if (job_lock(d->opt->home, id, &lock) != 0)
			continue;
		if (job_discard_partials(d->st, id) == 0)
			json_object_set_new(d->cleaned, id, json_true());
		job_unlock(lock);
	}
}

/* Starts what may run, asks what must yield to stop; returns how long the
 * main loop may sleep (ms). */
static int
schedule(struct daemon *d)
{
	struct scan s = {.d = d, .now = bg_now(), .cancelled = json_array()};
	unsigned running_bg = 0;
	int64_t wake = 0;
	size_t next = 0;
	bool cost_asked = false;
	int err, timeout_ms;

	if (s.cancelled == NULL)
		return 1000;
	if ((err = store_view(d->st, scan_txn, &s)) != 0) {
		note("cannot read the jobs: %s", bg_strerror(err));
		goto out;
	}
	cleanup_cancelled(d, s.cancelled);
	cost_asked = apply_cost_policy(d, &s);
	if (s.n > 1)
		qsort(s.c, s.n, sizeof(*s.c), by_turn);
	for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++)
		if (d->workers[i].busy && d->workers[i].prio != JOB_PRIO_FOREGROUND)
			running_bg++;
	/* Foreground jobs start at once, beside everything else. */
	for (size_t i = 0; i < s.n; i++)
		if (s.c[i].id[0] != '\0' && s.c[i].prio == JOB_PRIO_FOREGROUND && start(d, &s.c[i]) == 0)
			s.c[i].id[0] = '\0';
	for (; next < s.n && running_bg < d->opt->max_transfers; next++) {
		if (s.c[next].id[0] == '\0' || s.c[next].prio == JOB_PRIO_FOREGROUND)
			continue;
		if (start(d, &s.c[next]) == 0) {
			s.c[next].id[0] = '\0';
			running_bg++;
		}
	}
	/* The best job still waiting takes a turn from a running one of lower
	 * priority at once, or from one of its own level whose slice is over. */
	for (; next < s.n && s.c[next].id[0] == '\0'; next++)
		;
	if (next < s.n) {
		const struct candidate *c = &s.c[next];
		struct worker *victim = NULL;

		for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++) {
			struct worker *w = &d->workers[i];

			if (!w->busy || w->stop || w->prio == JOB_PRIO_FOREGROUND || w->prio < c->prio)
				continue;
			if (w->prio == c->prio) {
				int64_t end = (int64_t)w->started + d->opt->slice_seconds;

				if (end > s.now) {
					if (wake == 0 || end < wake)
						wake = end;
					continue;
				}
			}
			if (victim == NULL || w->prio > victim->prio ||
			    (w->prio == victim->prio && w->started < victim->started))
				victim = w;
		}
		if (victim != NULL) {
			victim->preempted = true;
			victim->stop = 1;
		}
	}
out:
	if (s.next_retry != 0 && (wake == 0 || s.next_retry < wake))
		wake = s.next_retry;
	timeout_ms = IDLE_WAKEUP_MS;
	if (wake != 0) {
		int64_t ms = (wake - bg_now()) * 1000 + 50;

		timeout_ms = ms < 0 ? 0 : ms < IDLE_WAKEUP_MS ? (int)ms : IDLE_WAKEUP_MS;
	}
	if (cost_asked && timeout_ms > NETCOST_POLL_MS)
		timeout_ms = NETCOST_POLL_MS;
	free(s.c);
	json_decref(s.cancelled);
	return timeout_ms;
}

/* Chooses the shared limit for now: the schedule's window, else its
 * "outside", else max_rate.  Logs each change (and the first choice when
 * there is a limit or a schedule). */
static void
rate_tick(struct daemon *d)
{
	const struct daemon_options *o = d->opt;
	int which = -1;
	uint64_t rate = o->max_rate;
	char name[32], win[64], why[96];

	if (o->schedule != NULL)
		rate = bg_rate_schedule_at(o->schedule, o->max_rate, bg_now(), &which);

	if (d->rate_chosen ? rate == bg_rate_get(&d->rate) && which == d->rate_window
	                   : rate == 0 && o->schedule == NULL)
		return;
	bg_rate_set(&d->rate, rate, bg_mono_ms());
	d->rate_chosen = true;
	d->rate_window = which;
	if (which >= 0)
		snprintf(why, sizeof(why), "schedule window %s",
		         bg_rate_window_name(&o->schedule->w[which], win, sizeof(win)));
	else if (o->schedule != NULL && o->schedule->has_outside)
		snprintf(why, sizeof(why), "schedule, outside its windows");
	else
		snprintf(why, sizeof(why), "max_rate%s",
		         o->schedule != NULL ? ", outside the schedule's windows" : "");
	bg_rate_name(rate, name, sizeof(name));
	if (rate == 0)
		note("rate limit now none (%s)", why);
	else
		note("rate limit now %llu B/s (%s, %s)", (unsigned long long)rate, name, why);
}

static void
drain(int fd)
{
	char buf[4096];

	while (fd >= 0 && read(fd, buf, sizeof(buf)) > 0)
		;
}

int
daemon_run(struct bg_store *st, const struct daemon_options *opt)
{
	struct daemon *d = calloc(1, sizeof(*d));
	struct sigaction sa;
	int err = 0;

	if (d == NULL)
		return BG_ENOMEM;
	d->st = st;
	d->opt = opt;
	d->ino = -1;
	d->pipe[0] = d->pipe[1] = -1;
	d->fill = true;
	snprintf(d->crl_dir, sizeof(d->crl_dir), "%s/crl", opt->home);
	if ((d->last_run = json_object()) == NULL || (d->cleaned = json_object()) == NULL ||
	    bg_rate_init(&d->rate, 0, JOB_RATE_BURST_MIN, bg_mono_ms()) != 0) {
		err = BG_ENOMEM;
		goto out;
	}
	d->rate_ready = true;
	if (pipe2(d->pipe, O_CLOEXEC | O_NONBLOCK) != 0 ||
	    (d->ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) < 0 ||
	    inotify_add_watch(d->ino, opt->home, IN_CLOSE_WRITE) < 0) {
		err = bg_err_from_errno(errno);
		note("cannot watch %s: %s", opt->home, strerror(errno));
		goto out;
	}
	signal_fd = d->pipe[1];
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	note("running (home %s, %u transfers at a time, %u s slices)", opt->home,
	     opt->max_transfers, opt->slice_seconds);

	while (!stop_requested) {
		struct pollfd pfd[2] = {{d->pipe[0], POLLIN, 0}, {d->ino, POLLIN, 0}};
		int timeout;

		reap(d);
		rate_tick(d);
		timeout = schedule(d);
		if (stop_requested)
			break;
		/* The schedule is looked at every second. */
		if (opt->schedule != NULL && timeout > 1000)
			timeout = 1000;
		if (d->fill && fill_step(d))
			timeout = 0;
		if (poll(pfd, 2, timeout) < 0 && errno != EINTR) {
			err = bg_err_from_errno(errno);
			break;
		}
		drain(d->pipe[0]);
		drain(d->ino);
	}

	/* Stop transfers cleanly: each job goes back to QUEUED with what it
	 * committed, and carries on at the next start. */
	for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++)
		if (d->workers[i].busy)
			d->workers[i].stop = 1;
	for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++) {
		struct worker *w = &d->workers[i];

		if (w->busy) {
			pthread_join(w->thread, NULL);
			after_run(d, w);
		}
	}
	note("stopped");
out:
	signal_fd = -1;
	for (size_t i = 0; i < DAEMON_MAX_WORKERS; i++)
		origin_free(d->workers[i].origin);
	if (d->ino >= 0)
		close(d->ino);
	if (d->pipe[0] >= 0)
		close(d->pipe[0]);
	if (d->pipe[1] >= 0)
		close(d->pipe[1]);
	json_decref(d->last_run);
	json_decref(d->cleaned);
	netcost_free(d->netcost);
	if (d->rate_ready)
		bg_rate_destroy(&d->rate);
	free(d);
	return err;
}
