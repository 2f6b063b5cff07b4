/* main.c - the bgcopy binary: global options, then one command. */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"

int
main(int argc, char **argv)
{
	struct cli_globals g = {NULL, NULL};
	int i, rc;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			cli_usage(stdout);
			return EXIT_DONE;
		} else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
			printf("bgcopy %s (%s)\n", BGCOPY_VERSION, curl_version());
			return EXIT_DONE;
		} else if ((strcmp(a, "--home") == 0 || strcmp(a, "--ca-file") == 0) && i + 1 < argc) {
			*(a[2] == 'h' ? &g.home : &g.ca_file) = argv[++i];
		} else if (strncmp(a, "--home=", 7) == 0) {
			g.home = a + 7;
		} else if (strncmp(a, "--ca-file=", 10) == 0) {
			g.ca_file = a + 10;
		} else {
			fprintf(stderr, "bgcopy: unknown or incomplete option '%s' (see bgcopy --help)\n", a);
			return EXIT_USAGE;
		}
	}
	if (i >= argc) {
		cli_usage(stderr);
		return EXIT_USAGE;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "bgcopy: cannot initialise libcurl\n");
		return EXIT_SYSTEM;
	}
	rc = cli_run(&g, argc - i, argv + i);
	curl_global_cleanup();
	return rc;
}
