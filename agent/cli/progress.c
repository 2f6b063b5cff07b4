/* progress.c - a one-line progress bar for terminals: bytes, rate, ETA. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define REDRAW_NS (200 * 1000 * 1000) /* at most five redraws a second */

struct progress_bar {
	FILE *out;
	struct timespec start, last;
	bool drawn;
};

static double
seconds_between(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void
human(double bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	size_t u = 0;

	while (bytes >= 1024 && u < sizeof(units) / sizeof(units[0]) - 1) {
		bytes /= 1024;
		u++;
	}
	snprintf(buf, len, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
}

struct progress_bar *
progress_new(FILE *out)
{
	struct progress_bar *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->out = out;
	clock_gettime(CLOCK_MONOTONIC, &p->start);
	return p;
}

void
progress_draw(struct progress_bar *p, uint64_t done, int64_t total, bool force)
{
	struct timespec now;
	struct winsize ws;
	char d[32], t[32], r[32], eta[32], bar[128];
	double el, rate;
	int width = 80, barw, fill = 0, pct = -1;

	if (p == NULL)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!force && p->drawn && seconds_between(&p->last, &now) * 1e9 < REDRAW_NS)
		return;
	p->last = now;
	p->drawn = true;
	if (ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 40)
		width = ws.ws_col;
	el = seconds_between(&p->start, &now);
	rate = el > 0 ? (double)done / el : 0;
	human((double)done, d, sizeof(d));
	human(rate, r, sizeof(r));
	if (total > 0) {
		pct = (int)((double)done * 100 / (double)total);
		human((double)total, t, sizeof(t));
		if (rate > 0 && (uint64_t)total > done) {
			long s = (long)(((double)total - (double)done) / rate);
			snprintf(eta, sizeof(eta), "ETA %ld:%02ld", s / 60, s % 60);
		} else {
			snprintf(eta, sizeof(eta), "%s", (uint64_t)total <= done ? "done" : "ETA --:--");
		}
	} else {
		snprintf(t, sizeof(t), "?");
		snprintf(eta, sizeof(eta), "ETA --:--");
	}
	barw = width - 62;
	if (barw > (int)sizeof(bar) - 3)
		barw = (int)sizeof(bar) - 3;
	if (barw < 10)
		barw = 10;
	if (pct >= 0)
		fill = pct * barw / 100;
	bar[0] = '[';
	for (int i = 0; i < barw; i++)
		bar[1 + i] = i < fill ? '=' : (i == fill && pct >= 0 ? '>' : ' ');
	bar[barw + 1] = ']';
	bar[barw + 2] = '\0';
	if (pct >= 0)
		fprintf(p->out, "\r%3d%% %s %10s / %-10s %10s/s  %-10s", pct, bar, d, t, r, eta);
	else
		fprintf(p->out, "\r     %s %10s / %-10s %10s/s  %-10s", bar, d, t, r, eta);
	fflush(p->out);
}

void
progress_end(struct progress_bar *p)
{
	if (p == NULL)
		return;
	if (p->drawn)
		fputc('\n', p->out);
	free(p);
}
