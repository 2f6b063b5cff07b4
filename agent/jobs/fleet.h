/*
 * fleet.h - the pure parts of the fleet work (doc/fleet-design.md): what a
 * job's bytes are fetched under (its fetch policy, recorded with keys and
 * downloads in progress), and rendezvous hashing, the rank of nodes for a
 * URL that decides who goes to the origin.  No I/O but the reading of a
 * job's CA file.
 */
#ifndef BG_FLEET_H
#define BG_FLEET_H

#include "record.h"

/* The policy the job's bytes are fetched under: its TLS ignores, CRL
 * checking (when crl_checked: the bytes came under it), trust anchors
 * (job->ca_file, see fetch_policy_set_ca), redirect policy and https ->
 * http permission.  out->known is true unless the CA file cannot be read. */
void fetch_policy_of_job(const struct job_rec *job, bool crl_checked,
                         struct store_fetch_policy *out);
/* Sets the anchors of p: "system" for ca_file NULL, else the first 16 hex
 * digits of SHA-256 of the file's bytes.  A file that cannot be read
 * leaves the policy unknown (p->known false): nothing can be said of the
 * anchors its bytes were checked against. */
void fetch_policy_set_ca(struct store_fetch_policy *p, const char *ca_file);
/* The weaker of two policies (both recorded for one file's bytes, e.g. a
 * stored copy revalidated under other flags): ignores and h2h of either,
 * CRLs only when both checked; unknown when either is, or when anchors or
 * redirect policies differ (no policy describes both). */
void fetch_policy_weaker(struct store_fetch_policy *a, const struct store_fetch_policy *b);

/* Rendezvous hashing: the first 8 bytes, big-endian, of
 * SHA-256("bgcopy rendezvous 1\n" || node_id || "\n" || url). */
#define FLEET_RENDEZVOUS_LABEL "bgcopy rendezvous 1\n"
uint64_t fleet_score(const char *node_id, const char *url);
/* Fills order[0..n) with the indexes of nodes[], highest score for url
 * first, ties by strcmp of the node ids (the smaller first).  Returns n. */
size_t fleet_rank(const char *const *nodes, size_t n, const char *url, size_t *order);
/* An election of up to max owners (fleet_origin_max; 0 counts as 1): ranks
 * nodes[] as fleet_rank does and returns how many of order[] are elected,
 * the first min(max, n).  Every node that sees the same candidates elects
 * the same ones. */
size_t fleet_elect(const char *const *nodes, size_t n, const char *url, size_t max, size_t *order);

/* Which of several nodes fetching url from the origin a follower takes:
 * rendezvous keyed by the follower too, so that followers spread over
 * them, each keeping its choice while they live.  The first 8 bytes,
 * big-endian, of SHA-256("bgcopy follow 1\n" || source || "\n" ||
 * follower || "\n" || url). */
#define FLEET_FOLLOW_LABEL "bgcopy follow 1\n"
uint64_t fleet_follow_score(const char *source, const char *follower, const char *url);
/* fleet_rank by fleet_follow_score for follower: the first is the one to
 * follow.  Returns n. */
size_t fleet_rank_sources(const char *const *sources, size_t n, const char *follower,
                          const char *url, size_t *order);

#endif /* BG_FLEET_H */
