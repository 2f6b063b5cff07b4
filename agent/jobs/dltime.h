/*
 * dltime.h - a job's maximum download time (BITS
 * IBackgroundCopyJob4::SetMaximumDownloadTime): the clock of the time a
 * runner spends on the job in CONNECTING or TRANSFERRING.  Pure: the
 * caller passes the time (bg_mono_ms()), so it is unit-tested.
 *
 * The job record keeps the limit and the seconds used so far
 * (job_rec.max_download_time, .download_time_used).  A run starts the
 * clock from the stored seconds, pauses it while it waits between
 * immediate retries (BITS would show TRANSIENT_ERROR then), and its
 * commits write the time used back (at every chunk, at most once a second,
 * and at the run's end): a crash loses at most the time since the last of
 * them.  Time outside a run (QUEUED, SUSPENDED, TRANSIENT_ERROR, ERROR)
 * never counts, and `resume` sets the time used back to 0.
 */
#ifndef BG_DLTIME_H
#define BG_DLTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "jobs.h" /* JOB_MAX_DOWNLOAD_TIME, JOB_MAX_DOWNLOAD_TIME_MAX */

struct dl_clock {
	int64_t limit_ms;   /* 0: no limit */
	int64_t used_ms;    /* counted before the current span */
	int64_t since_ms;   /* when the current span began (bg_mono_ms), -1: paused */
};

/* A clock at used seconds, limit seconds (0: none), paused. */
void dl_clock_init(struct dl_clock *c, int64_t used_s, int64_t limit_s);
/* A new limit (a user changed it while the job runs); the time used stays. */
void dl_clock_set_limit(struct dl_clock *c, int64_t limit_s);
/* Starts counting at now_ms (nothing when counting already). */
void dl_clock_run(struct dl_clock *c, int64_t now_ms);
/* Stops counting at now_ms (nothing when paused). */
void dl_clock_pause(struct dl_clock *c, int64_t now_ms);
/* Milliseconds used by now_ms. */
int64_t dl_clock_used_ms(const struct dl_clock *c, int64_t now_ms);
/* The seconds to record: the milliseconds used, rounded to the nearest. */
int64_t dl_clock_used_s(const struct dl_clock *c, int64_t now_ms);
/* When (bg_mono_ms) the limit is reached while counting; 0 when never
 * (no limit, or paused). */
int64_t dl_clock_deadline_ms(const struct dl_clock *c);
/* Whether the time used by now_ms has reached the limit. */
bool dl_clock_expired(const struct dl_clock *c, int64_t now_ms);

#endif /* BG_DLTIME_H */
