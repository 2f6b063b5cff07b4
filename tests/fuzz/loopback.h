/*
 * loopback.h - a scripted HTTP server on 127.0.0.1 for the harnesses whose
 * parser sits behind libcurl (origin and peer clients, CRL download): each
 * connection gets the next response of the script, byte for byte, and is
 * closed.  One server per process, started on first use; its thread lives
 * until the process exits.  Lines that start with a blank (obsolete header
 * folding) are sent with '_' instead: see loopback_script() in loopback.c.
 */
#ifndef BG_FUZZ_LOOPBACK_H
#define BG_FUZZ_LOOPBACK_H

#include "fuzz.h"

/* Starts the server (once) and returns its port, or 0 when it cannot. */
unsigned loopback_port(void);
/* Replaces the script by copies of n responses; connections past the end
 * of the script are closed without an answer.  Waits until the connection
 * being served (if any) is closed, so that no answer of the previous
 * script leaks into this one. */
void loopback_script(const struct fuzz_part *responses, size_t n);
/* Connections served since the last loopback_script(). */
unsigned loopback_served(void);

#endif /* BG_FUZZ_LOOPBACK_H */
