/* The dataset DB: an LMDB environment (a directory) with the key "meta"
 * (JSON) and the keys "mb/00000000", "mb/00000001", ... (macrobatches).
 *
 * The writer builds the environment under "<DB>.partial-<pid>" beside the
 * target and renames it into place only when complete, so an error or a
 * kill never leaves a half-written DB under the requested name. */
#ifndef MP_DB_H
#define MP_DB_H

#include <stddef.h>
#include <stdint.h>

#include "mp_util.h"

#define MP_DB_DEFAULT_MAP (1ull << 30)

typedef struct mp_db_writer mp_db_writer;

/* Fails if path exists, unless replace is set and it is a dataset DB.
 * Partial directories left by killed writers are removed first. */
mp_db_writer *mp_db_writer_open(const char *path, uint64_t map_size, int replace,
				mp_error *e);
/* Stores macrobatch number index; grows the map when LMDB is full. */
int mp_db_writer_put(mp_db_writer *w, uint64_t index, const void *buf,
		     size_t len, mp_error *e);
/* As mp_db_writer_put, but fill writes the len bytes straight into the
 * space LMDB reserves for the value, sparing a copy of it. fill may be
 * called more than once (after the map grew) and must write the same
 * bytes each time. */
typedef void mp_db_fill(void *ctx, uint8_t *dst, size_t len);
int mp_db_writer_put_fill(mp_db_writer *w, uint64_t index, size_t len, mp_db_fill *fill,
			  void *ctx, mp_error *e);
/* Stores the meta document, syncs, and renames into place, under the rule
 * of mp_db_writer_open for what the name holds by then (another run may
 * have written it meanwhile). Frees w. */
int mp_db_writer_finish(mp_db_writer *w, const char *meta_json, mp_error *e);
/* Removes the partial environment. Frees w. */
void mp_db_writer_abort(mp_db_writer *w);
/* How many times the map was grown (for tests and the summary). */
unsigned mp_db_writer_growths(const mp_db_writer *w);
/* The partial directory path, for cleanup from a signal handler. */
const char *mp_db_writer_partial(const mp_db_writer *w);

typedef struct mp_db_reader mp_db_reader;
mp_db_reader *mp_db_reader_open(const char *path, mp_error *e);
/* Pointers stay valid until the reader is closed. */
int mp_db_reader_meta(mp_db_reader *r, const char **json, size_t *len,
		      mp_error *e);
/* 1 found, 0 no such macrobatch, -1 error. */
int mp_db_reader_get(mp_db_reader *r, uint64_t index, const uint8_t **buf,
		     size_t *len, mp_error *e);
/* Number of keys that look like "mb/..." (for verification). */
int mp_db_reader_count_batches(mp_db_reader *r, uint64_t *count, mp_error *e);
/* The indices below limit of the macrobatch keys the DB holds (keys
 * exactly as the writer makes them), in increasing order, malloc'ed into
 * *out (NULL when there are none): one walk of the keys, whatever a meta
 * document claims. */
int mp_db_reader_batch_indices(mp_db_reader *r, uint64_t limit, uint64_t **out,
			       size_t *count, mp_error *e);
void mp_db_reader_close(mp_db_reader *r);

/* 1 if path looks like a dataset DB directory (holds data.mdb). */
int mp_db_is_db(const char *path);

#endif
