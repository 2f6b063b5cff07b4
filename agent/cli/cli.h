/*
 * cli.h - the commands of the bgcopy binary.  main.c parses the global
 * options and calls cli_run(); everything else is here so that tests can
 * link it.
 *
 * Exit statuses (README.md): 0 done; 1 the job ended in ERROR (or a
 * cache entry asked for is absent); 2 usage error or refused value
 * (E_NOTIMPL); 3 store or system error.
 */
#ifndef BG_CLI_H
#define BG_CLI_H

#include <stdio.h>

#include "cache.h" /* the exit statuses: EXIT_DONE, EXIT_JOB_ERROR, EXIT_USAGE, EXIT_SYSTEM */

struct cli_globals {
	const char *home;    /* --home, or NULL for $BGCOPY_HOME / the XDG default */
	const char *ca_file; /* --ca-file before the command, or NULL */
};

/* Runs the command in argv[0] (argc >= 1) and returns the exit status. */
int cli_run(const struct cli_globals *g, int argc, char **argv);
/* Prints the usage text to f. */
void cli_usage(FILE *f);

/* A one-line progress bar drawn on a terminal.  NULL is accepted by all. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
struct progress_bar;
struct progress_bar *progress_new(FILE *out);
/* Redraws (at most a few times a second unless force); total -1: unknown. */
void progress_draw(struct progress_bar *p, uint64_t done, int64_t total, bool force);
/* Ends the line and frees p. */
void progress_end(struct progress_bar *p);

#endif /* BG_CLI_H */
