/*
 * jobs_int.h - internals shared by the files of agent/jobs: record access,
 * the one commit every change of a running job goes through, hashing.
 */
#ifndef BG_JOBS_INT_H
#define BG_JOBS_INT_H

#include "jobs.h"
#include "dltime.h"



struct file_rec;
/* Loads file record index of a job, or BG_ENOENT (file_rec_clear() it). */
int job_load_file(struct bg_store *st, const char *id, uint32_t index, struct file_rec *out) BG_WUR;

/* What a job's runner knows of the stored job record, so that a commit
 * need not decode it (a job record costs about as much to decode as a
 * small file's other work): bytes known to carry generation and, when
 * stamped >= 0, a progress stamp of that second (last_progress, modified).
 * Only a cache: whatever it holds, a mismatch means decoding as before. */
struct job_memo {
	unsigned char *raw;
	size_t len;
	int64_t generation;
	int64_t stamped;
};
void job_memo_clear(struct job_memo *m);
/* 0 when the stored job record still has generation, else BG_EAGAIN (or a
 * store error).  memo may be NULL. */
int txn_job_check_generation(struct bg_txn *txn, const char *id, int64_t generation,
                             struct job_memo *memo) BG_WUR;

/* Puts records (any may be NULL), patches the job record, and optionally one chunk of the file's
 * blob, in one transaction.  The file record's blob is set to the blob
 * used (a new one is allocated for the first chunk). */
struct job_commit {
	const char *id;
	uint32_t index;
	struct job_rec *job;   /* the whole record, put as it is (a new job) */
	struct file_rec *file; /* file index's record, put as it is */
	/* The file record's encoded form kept by the caller between commits
	 * (*file_json NULL at first), so that a chunk's commit only updates
	 * what changed; NULL: encoded anew. */
	json_t **file_json;
	uint64_t blob_in;  /* blob of the file (0: none yet) */
	uint64_t blob_out; /* blob after the commit */
	bool drop_blob;    /* delete the blob's chunks first (a restart) */
	uint64_t chunk;    /* index of the chunk */
	const void *data;  /* chunk to store, or NULL */
	size_t len;
	/* SHA-256 of data (STORE_PIECE_LEN bytes) stored as the chunk's piece
	 * digest, or NULL (a short chunk has none until it is written whole). */
	const unsigned char *piece;
	/* The digest of an earlier chunk (index prev_chunk) of the same blob,
	 * committed before without one, or NULL; stored with or without data. */
	const unsigned char *prev_piece;
	uint64_t prev_chunk;
	/* The download in progress, put after the chunk (or alone), with blob
	 * set inside the transaction to the blob used (committed is the
	 * caller's, or, with data, the end of the chunk); or NULL.
	 * inflight_del: delete the record of inflight_url instead when it is
	 * this file's (job id, index), absent or not. */
	const struct store_inflight *inflight;
	bool inflight_del;
	const char *inflight_url;
	/* Job-level parts, applied to the stored record (never a stale copy). */
	int64_t generation; /* >= 0: BG_EAGAIN unless the job still has this generation */
	bool has_event;     /* event happened (BG_EINVAL when the stored state refuses it) */
	enum job_event event;
	/* The attempt at file index failed with this outcome: the job's error,
	 * and the event job_failure_event() gives from the stored clocks. */
	const struct job_outcome *failed;
	const char *failed_url; /* the file's remote URL, for the error */
	bool progress;      /* bytes arrived: stamp last_progress */
	struct job_memo *memo; /* the runner's, or NULL (used only with generation >= 0) */
	/* The runner's download-time clock (dltime.h): the time it says is
	 * used now is written into the job record.  NULL: left as stored. */
	const struct dl_clock *clock;
};
int job_commit(struct bg_store *st, struct job_commit *c) BG_WUR;


/* ---- Hashing beside the download (hasher.c) ----------------------------- */
#define HASHER_RING 4 /* chunk buffers: the one filled, the ones being hashed */
struct hasher;
int hasher_new(struct hasher **out) BG_WUR;
/* Stops the thread (if any) and frees everything; NULL is accepted. */
void hasher_free(struct hasher *h);
/* The buffer to fill next (STORE_CHUNK_BYTES long). */
unsigned char *hasher_buffer(struct hasher *h);
/* Hands the filled buffer (len bytes) over; it stays readable, unchanged,
 * until HASHER_RING - 1 more buffers were submitted.  May wait until the
 * next buffer is free.  piece: also compute the buffer's own SHA-256. */
int hasher_submit(struct hasher *h, size_t len, bool piece) BG_WUR;
/* Buffers submitted so far: the one just submitted is number this - 1. */
uint64_t hasher_submitted(const struct hasher *h);
/* The digest of buffer seq, submitted with piece, waiting for the thread
 * if need be; BG_EINVAL when seq is not one of the last HASHER_RING
 * submitted or had no digest asked for. */
int hasher_piece(struct hasher *h, uint64_t seq, unsigned char out[BG_SHA256_LEN]) BG_WUR;
/* Hashes bytes of the caller's at once (after everything submitted). */
int hasher_update(struct hasher *h, const void *p, size_t len) BG_WUR;
int hasher_reset(struct hasher *h) BG_WUR;
int hasher_final(struct hasher *h, unsigned char out[BG_SHA256_LEN]) BG_WUR;

#endif /* BG_JOBS_INT_H */
