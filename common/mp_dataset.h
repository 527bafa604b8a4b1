/* Reading a dataset from wherever it is: a dataset DB (a directory), a
 * stream file, or a stream on stdin ("-"). */
#ifndef MP_DATASET_H
#define MP_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "mp_meta.h"
#include "mp_util.h"

typedef struct mp_source mp_source;

mp_source *mp_source_open(const char *path, mp_error *e);
/* mp_source_open, saying how far it got when it fails: *opened is 0 when
 * the path could not be opened (it is missing, or not readable), 1 when
 * what it holds is no good dataset (a stream's header or meta frame, a
 * DB's data.mdb or meta document), which a verifier counts as a problem
 * found in the dataset. */
mp_source *mp_source_open_stage(const char *path, int *opened, mp_error *e);
/* The meta document. For a stream the counts and mean become final only
 * after mp_source_next has returned 0 (the end frame). */
const mp_meta *mp_source_meta(const mp_source *s);
int mp_source_is_stream(const mp_source *s);
/* Raw meta JSON as stored (the head frame for a stream). */
const char *mp_source_meta_json(const mp_source *s, size_t *len);
/* The next macrobatch, in order: 1 and its bytes (valid until the next
 * call), 0 at the end, -1 on error. The bytes are not parsed here. */
int mp_source_next(mp_source *s, const uint8_t **buf, size_t *len, mp_error *e);
/* Index of the macrobatch the last mp_source_next returned. */
uint64_t mp_source_index(const mp_source *s);
/* The index of the macrobatch mp_source_next reads next: after an error,
 * minus mp_source_index, the number of macrobatches it stands for (a run
 * of missing ones in a DB is one error). */
uint64_t mp_source_next_index(const mp_source *s);
/* Random access, DB only: 1 found, 0 missing, -1 error. */
int mp_source_get(mp_source *s, uint64_t index, const uint8_t **buf, size_t *len,
		  mp_error *e);
/* DB only: count of macrobatch keys present. */
int mp_source_count_batches(mp_source *s, uint64_t *count, mp_error *e);
const char *mp_source_name(const mp_source *s);
void mp_source_close(mp_source *s);

#endif
