/* Packing an image list into a dataset: a pool of workers reads, decodes,
 * fits and encodes images; one writer puts the records, in list order, into
 * macrobatches and hands them to a DB writer or a stream. The output is the
 * same bytes for any number of workers. */
#ifndef MP_PACK_H
#define MP_PACK_H

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "mp_dataset.h"
#include "mp_db.h"
#include "mp_image.h"
#include "mp_list.h"
#include "mp_meta.h"
#include "mp_util.h"

enum mp_store { MP_STORE_KEEP, MP_STORE_JPEG, MP_STORE_PNG, MP_STORE_RAW };
const char *mp_store_name(int store);

typedef struct {
	const char *list_name; /* for messages: "PATH (LIST line N): reason" */
	const char *root;      /* prefix for relative list paths, or NULL */
	int size, pad, quality, png_level;
	enum mp_fit fit;
	enum mp_fill fill;
	enum mp_store store;
	uint32_t macrobatch;
	int jobs;
	int skip_bad;
	uint64_t max_pixels;
	int quiet; /* no progress bar */
	/* set by a signal handler to interrupt: atomic, as the handler may run
	 * on a worker thread */
	atomic_int *stop;
} mp_pack_options;

/* Exactly one of db / stream is set. */
typedef struct {
	mp_db_writer *db;
	FILE *stream;
	const char *stream_name;
} mp_pack_sink;

typedef struct {
	size_t index; /* in the list */
	char *reason; /* NULL when no memory was left for the message */
} mp_pack_skip;

typedef struct {
	uint64_t records, macrobatches, payload_bytes;
	uint64_t stored[3]; /* records per encoding */
	mp_pack_skip *skips;
	size_t nskips;
	int interrupted;
} mp_pack_report;

/* What a macrobatch of n raw side x side records takes at least (names
 * of one byte): --encoding raw fixes the size of every record. */
uint64_t mp_pack_raw_batch_bytes(uint64_t n, int side);

/* meta carries the geometry, classes and source; records, macrobatches,
 * mean and skipped are filled in. On success the sink is finished (the DB
 * renamed into place, or the stream's end frame written). */
int mp_pack_run(const mp_pack_options *o, const mp_list *list, mp_meta *meta,
		mp_pack_sink *sink, mp_pack_report *rep, mp_error *e);
void mp_pack_report_free(mp_pack_report *rep);

/* Copies a dataset read from src (typically a stream on stdin) into a DB,
 * checking every macrobatch and the closing counts. Finishes or aborts db. */
int mp_pack_copy(mp_source *src, mp_db_writer *db, atomic_int *stop,
		 int quiet, mp_pack_report *rep, mp_error *e);
#endif
