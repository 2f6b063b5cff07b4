/* dltime.c - the clock of a job's maximum download time (dltime.h). */
#include "dltime.h"

/* Stored numbers are not trusted: out of range counts as the nearest end. */
static int64_t
clamp_s(int64_t s)
{
	if (s < 0)
		return 0;
	return s > JOB_MAX_DOWNLOAD_TIME_MAX ? JOB_MAX_DOWNLOAD_TIME_MAX : s;
}

void
dl_clock_init(struct dl_clock *c, int64_t used_s, int64_t limit_s)
{
	c->used_ms = clamp_s(used_s) * 1000;
	c->limit_ms = clamp_s(limit_s) * 1000;
	c->since_ms = -1;
}

void
dl_clock_set_limit(struct dl_clock *c, int64_t limit_s)
{
	c->limit_ms = clamp_s(limit_s) * 1000;
}

void
dl_clock_run(struct dl_clock *c, int64_t now_ms)
{
	if (c->since_ms < 0)
		c->since_ms = now_ms;
}

void
dl_clock_pause(struct dl_clock *c, int64_t now_ms)
{
	c->used_ms = dl_clock_used_ms(c, now_ms);
	c->since_ms = -1;
}

int64_t
dl_clock_used_ms(const struct dl_clock *c, int64_t now_ms)
{
	/* A clock that went back (it cannot: monotonic) adds nothing. */
	if (c->since_ms < 0 || now_ms <= c->since_ms)
		return c->used_ms;
	return c->used_ms + (now_ms - c->since_ms);
}

int64_t
dl_clock_used_s(const struct dl_clock *c, int64_t now_ms)
{
	return (dl_clock_used_ms(c, now_ms) + 500) / 1000;
}

int64_t
dl_clock_deadline_ms(const struct dl_clock *c)
{
	if (c->limit_ms == 0 || c->since_ms < 0)
		return 0;
	if (c->used_ms >= c->limit_ms)
		return c->since_ms > 0 ? c->since_ms : 1; /* due already */
	return c->since_ms + (c->limit_ms - c->used_ms);
}

bool
dl_clock_expired(const struct dl_clock *c, int64_t now_ms)
{
	return c->limit_ms > 0 && dl_clock_used_ms(c, now_ms) >= c->limit_ms;
}
