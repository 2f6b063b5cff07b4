/*
 * rate.c - the one token bucket of the programs (a job's own limit, the
 * daemon's limit shared by its transfers, peerd's serving rate) and the
 * daily schedule of rates (which rate applies at a given time).
 *
 * The bucket never reads a clock: its callers pass the time, so that the
 * unit test drives it step by step.  The schedule reads the local time of
 * the time it is given (localtime_r), nothing else.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cache.h"

/* ---- The bucket -------------------------------------------------------- */

static double
burst_of(uint64_t rate, uint64_t burst_min)
{
	double b = (double)rate / BG_RATE_BURST_DIV;

	return b > (double)burst_min ? b : (double)burst_min;
}

/* Adds what was earned since the last refill (lock held).  Time is counted
 * from the last refill, never rounded away: the rate holds over any number
 * of refills. */
static void
refill_locked(struct bg_rate *b, int64_t now_ms)
{
	if (now_ms <= b->last_ms)
		return;
	b->tokens += (double)(now_ms - b->last_ms) * (double)b->rate / 1000.0;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
	b->last_ms = now_ms;
}

int
bg_rate_init(struct bg_rate *b, uint64_t rate, uint64_t burst_min, int64_t now_ms)
{
	memset(b, 0, sizeof(*b));
	if (pthread_mutex_init(&b->lock, NULL) != 0)
		return BG_ENOMEM;
	b->rate = rate;
	b->burst_min = burst_min;
	b->burst = burst_of(rate, burst_min);
	b->tokens = b->burst;
	b->last_ms = now_ms;
	return 0;
}

void
bg_rate_destroy(struct bg_rate *b)
{
	pthread_mutex_destroy(&b->lock);
}

void
bg_rate_set(struct bg_rate *b, uint64_t rate, int64_t now_ms)
{
	pthread_mutex_lock(&b->lock);
	if (rate != b->rate) {
		if (b->rate != 0)
			refill_locked(b, now_ms);
		else
			b->tokens = 0; /* from no limit: start with what the new rate earns */
		b->rate = rate;
		b->burst = burst_of(rate, b->burst_min);
		if (b->tokens > b->burst)
			b->tokens = b->burst;
		b->last_ms = now_ms;
	}
	pthread_mutex_unlock(&b->lock);
}

uint64_t
bg_rate_get(struct bg_rate *b)
{
	uint64_t r;

	pthread_mutex_lock(&b->lock);
	r = b->rate;
	pthread_mutex_unlock(&b->lock);
	return r;
}

size_t
bg_rate_take(struct bg_rate *b, size_t want, size_t need, int64_t now_ms)
{
	size_t n = want;

	pthread_mutex_lock(&b->lock);
	if (b->rate != 0) {
		refill_locked(b, now_ms);
		if (b->tokens < (double)need || b->tokens <= 0) {
			n = 0;
		} else {
			if ((double)n > b->tokens)
				n = (size_t)b->tokens;
			b->tokens -= (double)n;
		}
	}
	pthread_mutex_unlock(&b->lock);
	return n;
}

void
bg_rate_charge(struct bg_rate *b, uint64_t n, int64_t now_ms)
{
	pthread_mutex_lock(&b->lock);
	if (b->rate != 0) {
		refill_locked(b, now_ms);
		b->tokens -= (double)n;
	}
	pthread_mutex_unlock(&b->lock);
}

int64_t
bg_rate_due_ms(struct bg_rate *b, size_t need, int64_t now_ms)
{
	double missing;
	int64_t ms = 0;

	pthread_mutex_lock(&b->lock);
	if (b->rate != 0) {
		refill_locked(b, now_ms);
		missing = (double)need - b->tokens;
		if (missing > 0)
			ms = (int64_t)(missing * 1000.0 / (double)b->rate) + 1;
	}
	pthread_mutex_unlock(&b->lock);
	return ms;
}

/* ---- The schedule ------------------------------------------------------- */

static const char *const day_names[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

__attribute__((format(printf, 3, 4))) static int
fail(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && whylen > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
		for (char *p = why; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20)
				*p = '?';
	}
	return BG_EINVAL;
}

static int
day_of(const char *s, size_t n)
{
	for (int d = 0; d < 7; d++)
		if (n == 3 && strncmp(s, day_names[d], 3) == 0)
			return d;
	return -1;
}

/* DAYS: comma-separated days and ranges (a range may wrap). */
static int
parse_days(const char *tok, uint8_t *out, char *why, size_t whylen)
{
	const char *p = tok;

	*out = 0;
	for (;;) {
		size_t n = strcspn(p, ",");
		const char *dash = memchr(p, '-', n);
		int a, z;

		if (dash != NULL) {
			a = day_of(p, (size_t)(dash - p));
			z = day_of(dash + 1, n - (size_t)(dash - p) - 1);
		} else {
			a = z = day_of(p, n);
		}
		if (a < 0 || z < 0)
			return fail(why, whylen,
			            "'%.*s': expected days (mon, tue, wed, thu, fri, sat, sun, a range "
			            "such as mon-fri, or a list such as sat,sun)",
			            (int)n, p);
		for (int d = a;; d = (d + 1) % 7) {
			*out |= (uint8_t)(1u << d);
			if (d == z)
				break;
		}
		if (p[n] == '\0')
			return 0;
		p += n + 1;
	}
}

static int
parse_hours(const char *tok, uint8_t *start, uint8_t *end, char *why, size_t whylen)
{
	const char *dash = strchr(tok, '-');
	uint64_t a, z;

	if (dash == NULL || bg_parse_u64(tok, (size_t)(dash - tok), 24, &a) != 0 ||
	    bg_parse_u64(dash + 1, strlen(dash + 1), 24, &z) != 0)
		return fail(why, whylen, "'%s': expected hours START-END, whole hours 0 to 24 (8-17)",
		            tok);
	if (a >= z)
		return fail(why, whylen, "'%s': the window must start before it ends (0 <= START < END <= 24)",
		            tok);
	*start = (uint8_t)a;
	*end = (uint8_t)z;
	return 0;
}

int
bg_parse_rate(const char *s, uint64_t *out)
{
	if (s != NULL && strcmp(s, "none") == 0) {
		*out = 0;
		return 0;
	}
	return bg_parse_bytes(s, BG_RATE_MAX, out) == 0 ? 0 : BG_EINVAL;
}

static int
parse_rate(const char *tok, uint64_t *out, char *why, size_t whylen)
{
	if (bg_parse_rate(tok, out) != 0)
		return fail(why, whylen,
		            "'%s': expected a rate in bytes/s (K, M, G: powers of 1024) or none", tok);
	return 0;
}

static bool
overlap(const struct bg_rate_window *a, const struct bg_rate_window *b)
{
	return (a->days & b->days) != 0 && a->start < b->end && b->start < a->end;
}

#define SCHED_TEXT_MAX 1024

int
bg_rate_schedule_parse(const char *s, struct bg_rate_schedule *out, char *why, size_t whylen)
{
	char buf[SCHED_TEXT_MAX], *save = NULL, *tok, *semi, *lead, *outside = NULL;
	char empty[1] = "", *windows = buf;
	struct bg_rate_schedule sc;
	enum { DAYS, HOURS, RATE, SEP } want = DAYS;
	struct bg_rate_window w = {0};
	char names[2][32];
	int err;

	memset(&sc, 0, sizeof(sc));
	if (s == NULL || strlen(s) >= sizeof(buf))
		return fail(why, whylen, "too long (at most %d bytes)", SCHED_TEXT_MAX - 1);
	snprintf(buf, sizeof(buf), "%s", s);
	/* "; outside RATE", or "outside RATE" alone. */
	lead = buf + strspn(buf, " \t");
	semi = strchr(buf, ';');
	if (semi == NULL && strncmp(lead, "outside", 7) == 0 &&
	    (lead[7] == ' ' || lead[7] == '\t' || lead[7] == '\0')) {
		outside = lead;
		windows = empty;
	} else if (semi != NULL) {
		*semi = '\0';
		outside = semi + 1;
	}
	if (outside != NULL) {
		char *rest = NULL, *t2;

		tok = strtok_r(outside, " \t", &rest);
		t2 = tok != NULL ? strtok_r(NULL, " \t", &rest) : NULL;
		if (tok == NULL || strcmp(tok, "outside") != 0 || t2 == NULL ||
		    strtok_r(NULL, " \t", &rest) != NULL)
			return fail(why, whylen, "expected 'outside RATE' after the windows and ';'");
		if ((err = parse_rate(t2, &sc.outside, why, whylen)) != 0)
			return err;
		sc.has_outside = true;
	}
	for (tok = strtok_r(windows, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save)) {
		size_t n = strlen(tok);
		bool sep = false;

		if (want == SEP) {
			if (strcmp(tok, ",") != 0)
				return fail(why, whylen, "'%s': expected ',' between windows", tok);
			want = DAYS;
			continue;
		}
		if (want == RATE && n > 1 && tok[n - 1] == ',') {
			tok[n - 1] = '\0';
			sep = true;
		}
		switch (want) {
		case DAYS:
			if ((err = parse_days(tok, &w.days, why, whylen)) != 0)
				return err;
			want = HOURS;
			break;
		case HOURS:
			if ((err = parse_hours(tok, &w.start, &w.end, why, whylen)) != 0)
				return err;
			want = RATE;
			break;
		default:
			if ((err = parse_rate(tok, &w.rate, why, whylen)) != 0)
				return err;
			if (sc.n == BG_RATE_WINDOWS_MAX)
				return fail(why, whylen, "too many windows (at most %d)", BG_RATE_WINDOWS_MAX);
			for (size_t i = 0; i < sc.n; i++)
				if (overlap(&sc.w[i], &w))
					return fail(why, whylen, "windows '%s' and '%s' overlap",
					            bg_rate_window_name(&sc.w[i], names[0], sizeof(names[0])),
					            bg_rate_window_name(&w, names[1], sizeof(names[1])));
			sc.w[sc.n++] = w;
			want = sep ? DAYS : SEP;
			break;
		}
	}
	if (want == HOURS || want == RATE)
		return fail(why, whylen, "a window is DAYS START-END RATE (mon-fri 8-17 2M): '%s' is cut short",
		            s);
	if (sc.n == 0 && !sc.has_outside)
		return fail(why, whylen, "expected windows DAYS START-END RATE and/or 'outside RATE'");
	if (want == DAYS && sc.n > 0)
		return fail(why, whylen, "a ',' ends the windows: expected another window after it");
	*out = sc;
	return 0;
}

uint64_t
bg_rate_schedule_at(const struct bg_rate_schedule *s, uint64_t fallback, int64_t t, int *which)
{
	time_t tt = (time_t)t;
	struct tm tm;
	int day;

	if (which != NULL)
		*which = -1;
	if (localtime_r(&tt, &tm) == NULL)
		return s->has_outside ? s->outside : fallback;
	day = (tm.tm_wday + 6) % 7; /* Monday first */
	for (size_t i = 0; i < s->n; i++) {
		const struct bg_rate_window *w = &s->w[i];

		if ((w->days & (1u << day)) != 0 && tm.tm_hour >= w->start && tm.tm_hour < w->end) {
			if (which != NULL)
				*which = (int)i;
			return w->rate;
		}
	}
	return s->has_outside ? s->outside : fallback;
}

const char *
bg_rate_window_name(const struct bg_rate_window *w, char *buf, size_t len)
{
	size_t off = 0;
	int first = -1;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	/* A run of days as a range, runs separated by commas. */
	for (int d = 0; d < 7; d++) {
		bool on = (w->days & (1u << d)) != 0;

		if (on && first < 0)
			first = d;
		if (first >= 0 && (!on || d == 6)) {
			int last = on ? d : d - 1;
			int k = snprintf(buf + off, len - off, "%s%s%s%s", off > 0 ? "," : "",
			                 day_names[first], last > first ? "-" : "",
			                 last > first ? day_names[last] : "");

			if (k < 0 || (size_t)k >= len - off)
				return buf;
			off += (size_t)k;
			first = -1;
		}
	}
	snprintf(buf + off, len - off, " %02u-%02u", w->start, w->end);
	return buf;
}

const char *
bg_rate_name(uint64_t rate, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	int u = -1;

	if (rate == 0) {
		snprintf(buf, len, "none");
		return buf;
	}
	while (u < 3 && rate % 1024 == 0) {
		rate /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%llu", (unsigned long long)rate);
	else
		snprintf(buf, len, "%llu%c", (unsigned long long)rate, units[u]);
	return buf;
}
