/*
 * record.h - the job and file records kept in the store, as C values.
 *
 * The store keeps them as JSON objects, one field per member below (the
 * cache's gc asks file_rec_blob() which blob a file record names).  record.c
 * is the only code that knows that schema: it decodes a record into these structs
 * and encodes them back.  Everything else uses the fields.
 */
#ifndef BG_RECORD_H
#define BG_RECORD_H

#include "jobs.h"

/* A list of strings, owned: v[n] is NULL (v itself is NULL when empty). */
struct strv {
	char **v;
	size_t n;
};
void strv_free(struct strv *a);
/* Replaces *a by a copy of list (NULL-terminated, or NULL: empty). */
int strv_set(struct strv *a, const char *const *list) BG_WUR;
/* The list as a NULL-terminated array (never NULL). */
const char *const *strv_list(const struct strv *a);
/* The list as a JSON array of strings (new reference; NULL: no memory). */
json_t *strv_json(const struct strv *a);

/* The error that stopped a job. */
struct job_error {
	struct job_outcome outcome;
	uint32_t file_index; /* the file it was about */
	char *url;           /* that file's remote URL then, or NULL */
};

/* One credential of a job: user NULL when none is set. */
struct job_cred {
	char *user, *password;
};

struct job_rec {
	char id[STORE_JOB_ID_LEN + 1];
	char *name;
	enum job_state state;
	enum job_priority priority;
	enum peer_caching peer_caching;
	int64_t created, modified;   /* unix seconds */
	uint32_t nfiles;
	int64_t generation;          /* bumped by every user change (job_modify) */
	int64_t last_progress;       /* when bytes last arrived (or the job was resumed) */
	int64_t min_retry_delay;     /* seconds */
	int64_t no_progress_timeout; /* seconds */
	int64_t transient_since;     /* first transient error since the last progress, 0: none */
	int64_t retry_at;            /* when a TRANSIENT_ERROR job is tried again */
	bool has_error;
	struct job_error error;
	char *get_key;               /* the get that made the job, or NULL */
	struct strv peers;           /* HOST:PORT asked first (empty: the runner's) */
	char *peer_key;              /* HMAC key file for them, or NULL */
	uint32_t security_flags;
	char *ca_file;               /* NULL: the system store (or --ca-file) */
	struct strv headers;         /* custom "Name: value" lines */
	bool cache_both;
	bool no_cache;
	struct strv notify_cmd;      /* program and arguments (empty: none) */
	char *proxy;                 /* URL, "none", or NULL (libcurl's default) */
	/* Credentials by target and scheme.  The server's basic one is the
	 * record's "user" and "password", as builds before schemes kept it;
	 * the others are in "credentials", absent while none is set. */
	struct job_cred cred[JOB_AUTH_TARGETS][JOB_AUTH_SCHEMES];
	char *http_method;           /* NULL: GET (absent from the record) */
	bool headers_write_only;     /* get-headers refused (absent while false) */
	/* The maximum download time (dltime.h): absent from records of older
	 * builds, which read as the default and none used. */
	int64_t max_download_time;   /* seconds, 0: no limit */
	int64_t download_time_used;  /* seconds spent CONNECTING or TRANSFERRING since the last resume */
	uint32_t cost_flags;         /* BITS cost flags (JOB_COST_FLAGS_*): the transfer policy */
	uint64_t max_rate;           /* bytes/s, 0: no limit (absent from records then) */
	/* The client certificate (BITS SetClientCertificate): a PEM file or a
	 * "pkcs11:" URI, and the PEM key file when apart; NULL: none.  Paths
	 * only: key material is never in the record. */
	char *client_cert, *client_key;
	struct strv cert_check_cmd;  /* program and arguments (empty: none) */
};

/* What a peer said when a file was looked up there. */
enum peer_lookup_result {
	PEER_LOOKUP_MISS,
	PEER_LOOKUP_ERROR,
	PEER_LOOKUP_STALE,
	PEER_LOOKUP_HIT,
	PEER_LOOKUP_REJECTED,
	PEER_LOOKUP_FAILED,
};
struct peer_lookup {
	char *key, *peer;
	char *source; /* where the peer came from: "option" (--peer), "static", "dns", "mdns"; or NULL */
	enum peer_lookup_result result;
	char *detail; /* or NULL */
};

struct file_rec {
	char *original_url;   /* as added */
	char *remote_url;     /* where it is fetched from now (redirect policy, prefix replaced) */
	char *local_path;
	char *temp_path;      /* the partial file, once named */
	int64_t bytes_total;  /* -1: unknown */
	uint64_t bytes_committed;
	bool done;
	uint64_t bytes_from_origin, bytes_from_peers, bytes_from_cache;
	/* Of the leading bytes from peers, how many were found in a signed
	 * piece list (pieces of a swarm, or followed and checked): a resume
	 * keeps peer bytes only that far. */
	uint64_t bytes_checked;
	uint64_t bytes_rejected; /* peers' bytes thrown away: pieces not matching their digest */
	/* The fleet (engine_fleet.c) in the last attempt: "owner" (fetched from
	 * the origin after an election or alone with peers wanting it),
	 * "follower" (took it as it arrived at fleet_source), or NULL. */
	char *fleet_role;
	char *fleet_source;   /* node id followed last, or NULL */
	uint64_t fleet_elections, fleet_follows, fleet_takeovers;
	char *cache_key;      /* the key it was stored under, or NULL */
	char *sha256;         /* hex, once done */
	char *expect_sha256;  /* hex the user gave, or NULL */
	char *origin_sha256;  /* hex the origin announced, or NULL */
	uint64_t blob;        /* the store's blob of a download in progress (0: none) */
	char *etag, *last_modified, *date; /* validators of the response (resume) */
	bool crl_checked;     /* its bytes came under CRL checking */
	bool not_stored;      /* larger than the store's limit: not written to it */
	bool has_cached;      /* whether it was kept in the store is known */
	bool cached;
	char *cache_note;     /* why it was not kept, or NULL */
	bool has_last_lookup;
	struct peer_lookup last_lookup;
	struct peer_lookup *lookups; /* one per peer asked in the last attempt */
	size_t nlookups;
};

void job_rec_clear(struct job_rec *r);
/* Whether the job has any credential (for target, or for any target when
 * target is JOB_AUTH_TARGETS). */
bool job_has_cred(const struct job_rec *r, enum job_auth_target target);
/* Sets (user non-NULL) or removes one credential, wiping the old password. */
int job_cred_set(struct job_cred *c, const char *user, const char *password) BG_WUR;
void file_rec_clear(struct file_rec *f);
void peer_lookup_clear(struct peer_lookup *l);
int file_rec_copy(struct file_rec *dst, const struct file_rec *src) BG_WUR;
/* Replaces a string field (s copied, or NULL). */
int rec_set_str(char **field, const char *s) BG_WUR;
/* Appends a lookup (taken over) to the file's list, or replaces the last
 * entry when it was a hit of the same peer; it also becomes the last one. */
int file_rec_note_lookup(struct file_rec *f, struct peer_lookup *l) BG_WUR;

/* JSON, the form the store keeps.  Decoding refuses (BG_ECORRUPT) a record
 * that is not an object or, for a job, has no string "state".  Encoding
 * into *io: a new object when *io is NULL, else *io (a decoded record) is
 * updated in place: only fields whose value changed are touched, and
 * fields of no concern here stay as they are. */
int job_rec_decode(const json_t *o, struct job_rec *out) BG_WUR;
int job_rec_encode(const struct job_rec *r, json_t **io) BG_WUR;
int file_rec_decode(const json_t *o, struct file_rec *out) BG_WUR;
int file_rec_encode(const struct file_rec *f, json_t **io) BG_WUR;
/* The blob a stored file record (raw bytes, as the store keeps them) names,
 * 0 when none: what the store's gc asks (store_gc). */
int file_rec_blob(const void *raw, size_t len, uint64_t *blob) BG_WUR;
/* The state of a job record, without decoding the rest: BG_ECORRUPT when
 * it has none, BG_EINVAL (and *out ERROR, as decoding gives) for a name
 * not known. */
int job_rec_state(const json_t *o, enum job_state *out) BG_WUR;
/* The error object of the job document and record. */
json_t *job_error_json(const struct job_error *e);
/* The peer lookup object of the file document and record. */
json_t *peer_lookup_json(const struct peer_lookup *l);
/* "hit", "miss", ... as the job document says it; NULL for another value. */
const char *peer_lookup_result_name(enum peer_lookup_result r);

#endif /* BG_RECORD_H */
