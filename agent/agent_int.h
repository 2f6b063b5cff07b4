/* agent_int.h - internals shared by the agent's source files. */
#ifndef BG_AGENT_INT_H
#define BG_AGENT_INT_H

#include "agent.h"

/* JSON record access.  Getters return NULL/def when the field is absent or
 * has another type; setters return 0 or BG_ENOMEM. */
const char *jstr(const json_t *o, const char *key);
int64_t jint(const json_t *o, const char *key, int64_t def);
bool jbool(const json_t *o, const char *key);
int jset(json_t *o, const char *key, json_t *v); /* steals v */
int jset_str(json_t *o, const char *key, const char *s);
int jset_int(json_t *o, const char *key, int64_t v);

/* Loads a job record (new reference) or BG_ENOENT. */
int job_load(struct bg_store *st, const char *id, json_t **out) BG_WUR;
/* Loads file record index of a job (new reference) or BG_ENOENT. */
int job_load_file(struct bg_store *st, const char *id, uint32_t index, json_t **out) BG_WUR;

/* Puts records (any may be NULL) and optionally one chunk of the file's
 * blob, in one transaction.  The file record's "blob" field is set to the
 * blob used (a new one is allocated for the first chunk). */
struct job_commit {
	const char *id;
	uint32_t index;
	json_t *job;
	json_t *file;
	uint64_t blob_in;  /* blob of the file (0: none yet) */
	uint64_t blob_out; /* blob after the commit */
	bool drop_blob;    /* delete the blob's chunks first (a restart) */
	uint64_t chunk;    /* index of the chunk */
	const void *data;  /* chunk to store, or NULL */
	size_t len;
};
int job_commit(struct bg_store *st, struct job_commit *c) BG_WUR;

#endif /* BG_AGENT_INT_H */
