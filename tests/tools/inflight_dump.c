/*
 * inflight_dump.c - prints what the store says of one URL's download, as
 * JSON, for the integration tests (tests/integration/test_inflight.py):
 *
 *   inflight_dump HOME URL
 *
 *   {"inflight": null | {"state", "gen", "blob", "committed", "total",
 *                        "job", "file", "etag", "last_modified", "final_url",
 *                        "sha256", "fetch"},
 *    "blob_bytes": bytes of the record's blob in the store (its chunks),
 *    "pieces": [hex digest of chunk 0, 1, ...] of that blob (stopping at
 *              the first chunk without one),
 *    "key": null | {"sha256", "size", "fetch"},
 *    "content_pieces": [...] of the key's content, "content_complete": bool}
 *
 * "fetch" is the X-Bgcopy-Fetch form, or null when not recorded.  The
 * store is opened read-only, in one read transaction, as peerd would.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cache.h"

struct dump {
	const char *url;
	json_t *out;
};

static json_t *
str_or_null(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

static json_t *
fetch_json(const struct store_fetch_policy *p)
{
	char buf[STORE_FETCH_POLICY_MAX];

	if (!p->known || bg_fetch_policy_format(p, buf, sizeof(buf)) != 0)
		return json_null();
	return json_string(buf);
}

static json_t *
sha_json(const unsigned char d[BG_SHA256_LEN])
{
	char hex[BG_SHA256_HEX_LEN + 1];

	bg_sha256_hex(d, hex);
	return json_string(hex);
}

/* The digests of blob's chunks 0, 1, ... up to the first without one. */
static int
pieces_json(struct bg_txn *txn, uint64_t blob, json_t **out)
{
	unsigned char buf[256 * STORE_PIECE_LEN];
	uint64_t first = 0, n;
	int err;

	*out = json_array();
	if (blob == 0)
		return 0;
	do {
		if ((err = txn_pieces_read(txn, blob, first, 256, buf, &n)) != 0)
			return err;
		for (uint64_t i = 0; i < n; i++)
			json_array_append_new(*out, sha_json(buf + i * STORE_PIECE_LEN));
		first += n;
	} while (n == 256);
	return 0;
}

static int
dump_txn(struct bg_txn *txn, void *arg)
{
	struct dump *d = arg;
	struct store_inflight f;
	struct store_key k;
	uint64_t bytes = 0;
	json_t *pieces = NULL;
	int err;

	memset(&f, 0, sizeof(f));
	memset(&k, 0, sizeof(k));
	d->out = json_object();
	err = txn_inflight_get(txn, d->url, &f);
	if (err == 0) {
		json_t *o = json_object();

		json_object_set_new(o, "state", json_string(store_inflight_state_name(f.state)));
		json_object_set_new(o, "gen", json_integer((json_int_t)f.gen));
		json_object_set_new(o, "blob", json_integer((json_int_t)f.blob));
		json_object_set_new(o, "committed", json_integer((json_int_t)f.committed));
		json_object_set_new(o, "total", json_integer(f.total));
		json_object_set_new(o, "job", json_string(f.job));
		json_object_set_new(o, "file", json_integer(f.file));
		json_object_set_new(o, "etag", str_or_null(f.etag));
		json_object_set_new(o, "last_modified", str_or_null(f.last_modified));
		json_object_set_new(o, "final_url", str_or_null(f.final_url));
		json_object_set_new(o, "sha256", f.has_sha ? sha_json(f.sha256) : json_null());
		json_object_set_new(o, "fetch", fetch_json(&f.fetch));
		json_object_set_new(d->out, "inflight", o);
		for (uint64_t i = 0; f.blob != 0; i++) {
			const void *data;
			size_t len;

			if ((err = txn_blob_get(txn, f.blob, i, &data, &len)) == BG_ENOENT)
				break;
			if (err != 0)
				goto out;
			bytes += len;
		}
		if ((err = pieces_json(txn, f.blob, &pieces)) != 0)
			goto out;
	} else if (err == BG_ENOENT) {
		json_object_set_new(d->out, "inflight", json_null());
		pieces = json_array();
	} else {
		goto out;
	}
	json_object_set_new(d->out, "blob_bytes", json_integer((json_int_t)bytes));
	json_object_set_new(d->out, "pieces", pieces);
	pieces = NULL;

	err = txn_key_get(txn, d->url, &k);
	if (err == 0) {
		struct store_content c;
		json_t *o = json_object();
		bool complete = false;

		json_object_set_new(o, "sha256", sha_json(k.sha256));
		json_object_set_new(o, "size", json_integer((json_int_t)k.size));
		json_object_set_new(o, "fetch", fetch_json(&k.fetch));
		json_object_set_new(d->out, "key", o);
		if ((err = txn_content_get(txn, k.sha256, &c)) != 0 ||
		    (err = pieces_json(txn, c.blob, &pieces)) != 0 ||
		    (err = txn_content_pieces_complete(txn, k.sha256, &complete)) != 0)
			goto out;
		json_object_set_new(d->out, "content_pieces", pieces);
		pieces = NULL;
		json_object_set_new(d->out, "content_complete", json_boolean(complete));
	} else if (err == BG_ENOENT) {
		json_object_set_new(d->out, "key", json_null());
		err = 0;
	}
out:
	json_decref(pieces);
	store_inflight_clear(&f);
	store_key_clear(&k);
	return err;
}

int
main(int argc, char **argv)
{
	struct bg_store *st = NULL;
	struct dump d = {0};
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: inflight_dump HOME URL\n");
		return 2;
	}
	d.url = argv[2];
	if ((rc = store_open(argv[1], STORE_RDONLY, NULL, &st)) != 0) {
		fprintf(stderr, "inflight_dump: %s: %s\n", argv[1], bg_strerror(rc));
		return 3;
	}
	rc = store_view(st, dump_txn, &d);
	store_close(st);
	if (rc != 0) {
		fprintf(stderr, "inflight_dump: %s\n", bg_strerror(rc));
		json_decref(d.out);
		return 3;
	}
	json_dumpf(d.out, stdout, JSON_COMPACT);
	putchar('\n');
	json_decref(d.out);
	return 0;
}
