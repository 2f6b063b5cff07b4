/* home.c - where the bgcopy home is: one rule for bgcopy and bgcopy-peerd. */
#include <stdio.h>
#include <stdlib.h>

#include "cache.h"

int
bg_home_path(const char *arg, char *out, size_t outlen, bool *is_default)
{
	const char *h = arg;
	int n;

	*is_default = false;
	if (h == NULL)
		h = getenv("BGCOPY_HOME");
	if (h != NULL && h[0] != '\0') {
		n = snprintf(out, outlen, "%s", h);
	} else {
		const char *xdg = getenv("XDG_STATE_HOME");
		const char *home = getenv("HOME");

		*is_default = true;
		if (xdg != NULL && xdg[0] == '/')
			n = snprintf(out, outlen, "%s/bgcopy", xdg);
		else if (home != NULL && home[0] == '/')
			n = snprintf(out, outlen, "%s/.local/state/bgcopy", home);
		else
			return BG_ENOENT;
	}
	return n < 0 || (size_t)n >= outlen ? BG_ELIMIT : 0;
}

const char *
bg_home_problem(int err)
{
	return err == BG_ENOENT ? "no home: set --home, BGCOPY_HOME or HOME" : "home path too long";
}
