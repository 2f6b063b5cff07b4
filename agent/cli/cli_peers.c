/*
 * cli_peers.c - the peers of jobs that name none: the peer table of `get`
 * and the daemon, built from bgcopy.conf, and `bgcopy peers`, the table as
 * it is now with what this node's downloads learnt of each peer.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cli_int.h"
#include "peertable.h"

#define PEERS_BROWSE_MS 1000 /* `bgcopy peers` waits this long at most for DNS-SD */

int
cli_peer_table(struct ctx *c, bool live, unsigned browse_ms, struct peer_table **out)
{
	const struct bg_config *conf = &c->conf;
	struct peer_table_config tc;
	int err;

	*out = NULL;
	memset(&tc, 0, sizeof(tc));
	tc.statics = (const char *const *)conf->peers;
	tc.nstatics = conf->npeers;
	tc.dns_name = conf->peer_dns;
	tc.discovery = conf->discovery;
	tc.any_subnet = conf->discovery_any_subnet;
	tc.browse_ms = browse_ms;
	/* This node's id is read from the home when DNS-SD is asked. */
	if (cli_resolve_home(c) == EXIT_DONE)
		tc.home = c->home;
	if ((err = peer_table_new(&tc, live, out)) != 0)
		return cli_store_failed("peer table", err);
	return EXIT_DONE;
}

/* ---- bgcopy peers ---------------------------------------------------------- */

struct peer_out {
	struct peer_row row;
	struct store_peer st;
	bool known;
};

struct peers_view {
	struct peer_out *p;
	size_t n;
	bool seen;
	int64_t now;
};

static int
peers_seen_fn(struct bg_txn *txn, void *arg)
{
	struct peers_view *v = arg;
	int err;

	/* A peer DNS-SD shows now was seen now. */
	for (size_t i = 0; i < v->n; i++)
		if (v->p[i].row.source == PEER_SRC_MDNS &&
		    (err = txn_peer_seen(txn, v->p[i].row.peer, "mdns", v->p[i].row.node, v->now)) != 0 &&
		    err != BG_EINVAL)
			return err;
	return 0;
}

static int
peers_view_fn(struct bg_txn *txn, void *arg)
{
	struct peers_view *v = arg;

	for (size_t i = 0; i < v->n; i++) {
		int err = txn_peer_get(txn, v->p[i].row.peer, &v->p[i].st);

		if (err == 0)
			v->p[i].known = true;
		else if (err != BG_ENOENT && err != BG_EINVAL)
			return err;
	}
	return 0;
}

static void
iso_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
		snprintf(buf, len, "-");
	else
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *
peer_json(const struct peer_out *p)
{
	json_t *o = json_object();
	char when[32];

	iso_time(p->known ? p->st.last_seen : 0, when, sizeof(when));
	if (o == NULL || jset_str(o, "peer", p->row.peer) != 0 ||
	    jset_str(o, "address", p->row.addr) != 0 || jset_int(o, "port", p->row.port) != 0 ||
	    jset_str(o, "source", peer_source_name(p->row.source)) != 0 ||
	    jset_str(o, "node", p->row.node[0] != '\0' ? p->row.node : NULL) != 0 ||
	    jset_str(o, "name", p->row.name[0] != '\0' ? p->row.name : NULL) != 0 ||
	    jset_str(o, "key", peer_key_state_name(p->row.key)) != 0 ||
	    jset_str(o, "state", p->row.rejected ? "rejected" : "ok") != 0 ||
	    jset_str(o, "reason", p->row.reason[0] != '\0' ? p->row.reason : NULL) != 0 ||
	    jset_str(o, "last_seen", strcmp(when, "-") != 0 ? when : NULL) != 0 ||
	    jset_str(o, "last_result",
	             p->known && p->st.last_result[0] != '\0' ? p->st.last_result : NULL) != 0 ||
	    jset_int(o, "hits", p->known ? (int64_t)p->st.hits : 0) != 0 ||
	    jset_int(o, "misses", p->known ? (int64_t)p->st.misses : 0) != 0 ||
	    jset_int(o, "failures", p->known ? (int64_t)p->st.failures : 0) != 0 ||
	    jset_int(o, "rejected", p->known ? (int64_t)p->st.rejected : 0) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static void
print_table(const struct peer_out *p, size_t n)
{
	static const char *const head[] = {"ADDRESS", "PORT", "SOURCE", "KEY", "STATE", "LAST-SEEN",
	                                   "LAST-RESULT", "HITS", "MISSES", "FAILURES", "REJECTED"};
	enum { NCOL = sizeof(head) / sizeof(head[0]) };
	char(*cell)[NCOL][STORE_PEER_KEY_MAX + 72] = calloc(n, sizeof(*cell));
	size_t width[NCOL];

	if (cell == NULL) {
		cli_complain("peers: %s", bg_strerror(BG_ENOMEM));
		return;
	}
	for (size_t c = 0; c < NCOL; c++)
		width[c] = strlen(head[c]);
	for (size_t i = 0; i < n; i++) {
		const struct peer_out *q = &p[i];
		const struct store_peer *s = &q->st;

		snprintf(cell[i][0], sizeof(cell[i][0]), "%s", q->row.addr);
		snprintf(cell[i][1], sizeof(cell[i][1]), "%u", q->row.port);
		snprintf(cell[i][2], sizeof(cell[i][2]), "%s", peer_source_name(q->row.source));
		snprintf(cell[i][3], sizeof(cell[i][3]), "%s", peer_key_state_name(q->row.key));
		if (q->row.rejected)
			snprintf(cell[i][4], sizeof(cell[i][4]), "rejected (%s)", q->row.reason);
		else
			snprintf(cell[i][4], sizeof(cell[i][4]), "ok");
		iso_time(q->known ? s->last_seen : 0, cell[i][5], sizeof(cell[i][5]));
		snprintf(cell[i][6], sizeof(cell[i][6]), "%s",
		         q->known && s->last_result[0] != '\0' ? s->last_result : "-");
		snprintf(cell[i][7], sizeof(cell[i][7]), "%" PRIu64, q->known ? s->hits : 0);
		snprintf(cell[i][8], sizeof(cell[i][8]), "%" PRIu64, q->known ? s->misses : 0);
		snprintf(cell[i][9], sizeof(cell[i][9]), "%" PRIu64, q->known ? s->failures : 0);
		snprintf(cell[i][10], sizeof(cell[i][10]), "%" PRIu64, q->known ? s->rejected : 0);
		for (size_t c = 0; c < NCOL; c++)
			if (strlen(cell[i][c]) > width[c])
				width[c] = strlen(cell[i][c]);
	}
	for (size_t c = 0; c < NCOL; c++)
		printf("%-*s%s", c + 1 < NCOL ? (int)width[c] : 0, head[c], c + 1 < NCOL ? "  " : "\n");
	for (size_t i = 0; i < n; i++)
		for (size_t c = 0; c < NCOL; c++)
			printf("%-*s%s", c + 1 < NCOL ? (int)width[c] : 0, cell[i][c], c + 1 < NCOL ? "  " : "\n");
	free(cell);
}

int
cmd_peers(struct ctx *c, int argc, char **argv)
{
	struct peer_table *t = NULL;
	struct peer_row *rows = NULL;
	struct peers_view v = {0};
	unsigned char key[PEER_KEY_MAX];
	size_t keylen = 0, n = 0;
	char kf[PEER_KEY_FP_LEN + 1], dns_why[256];
	const char *keyfile;
	bool json = false;
	int rc, err;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (strcmp(argv[i], "--help") == 0) {
			printf("usage: bgcopy peers [--json]\n"
			       "The peers jobs ask when they name none: static (bgcopy.conf peer), dns\n"
			       "(peer_dns), mdns (DNS-SD, browsed for at most %u ms), with the results\n"
			       "this node's lookups got from each.\n",
			       PEERS_BROWSE_MS);
			return EXIT_DONE;
		} else {
			cli_complain("usage: bgcopy peers [--json]");
			return EXIT_USAGE;
		}
	}
	/* The fingerprint of the key this node's jobs use (bgcopy.conf's). */
	if ((rc = cli_config_peer_key(c, false, &keyfile)) != EXIT_DONE)
		return rc;
	if (keyfile != NULL && peer_key_load(keyfile, key, &keylen) != 0)
		keylen = 0;
	err = peer_key_fingerprint(key, keylen, kf);
	OPENSSL_cleanse(key, sizeof(key));
	if (err != 0)
		return cli_store_failed("peers", err);
	if ((rc = cli_open_store(c)) != EXIT_DONE)
		return rc;
	if ((rc = cli_peer_table(c, false, PEERS_BROWSE_MS, &t)) != EXIT_DONE)
		return rc;
	if ((err = peer_table_get(t, kf, &rows, &n)) != 0) {
		rc = cli_store_failed("peers", err);
		goto out;
	}
	if (peer_table_dns_problem(t, dns_why, sizeof(dns_why)))
		cli_complain("peer_dns: %s", dns_why);
	if (n > 0 && (v.p = calloc(n, sizeof(*v.p))) == NULL) {
		rc = cli_store_failed("peers", BG_ENOMEM);
		goto out;
	}
	v.n = n;
	v.now = bg_now();
	for (size_t i = 0; i < n; i++)
		v.p[i].row = rows[i];
	/* What DNS-SD shows is noted as seen; a store opened by another
	 * writer just now only delays that to the next time. */
	if (n > 0 && (err = store_update(c->st, peers_seen_fn, &v)) != 0 && err != BG_ERDONLY) {
		rc = cli_store_failed("peers", err);
		goto out;
	}
	if (n > 0 && (err = store_view(c->st, peers_view_fn, &v)) != 0) {
		rc = cli_store_failed("peers", err);
		goto out;
	}
	if (json) {
		json_t *arr = json_array();

		for (size_t i = 0; arr != NULL && i < n; i++) {
			json_t *o = peer_json(&v.p[i]);

			if (o == NULL || json_array_append_new(arr, o) != 0) {
				json_decref(arr);
				arr = NULL;
			}
		}
		if (arr == NULL) {
			rc = cli_store_failed("peers", BG_ENOMEM);
			goto out;
		}
		cli_print_json(arr);
		json_decref(arr);
	} else if (n == 0) {
		printf("no peers found (static, DNS or DNS-SD)\n");
	} else {
		print_table(v.p, n);
	}
	rc = EXIT_DONE;
out:
	free(v.p);
	free(rows);
	peer_table_free(t);
	return rc;
}
