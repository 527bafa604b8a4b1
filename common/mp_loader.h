/* The training and evaluation data loader: batches of network input from a
 * dataset DB. Every epoch shuffles all records from (seed, epoch) in
 * training mode and keeps their order otherwise; a pool of threads decodes
 * and transforms whole batches ahead of use into a bounded ring. The
 * batches are the same for any number of threads; a record that fails to
 * decode is an error naming it, never a hang. */
#ifndef MP_LOADER_H
#define MP_LOADER_H

#include <stdint.h>

#include "mp_augment.h"
#include "mp_meta.h"
#include "mp_util.h"

typedef struct {
	const char *path;	/* a dataset DB */
	int train;		/* augment and shuffle, or the evaluation transform */
	int batch;
	int threads;		/* decoding threads (>= 1) */
	int prefetch;		/* batches decoded ahead (>= 1) */
	int drop_last;		/* skip a final partial batch */
	uint64_t seed;
	mp_augment_train_opts aug; /* training: scales, crop, mean */
	int eval_size;		/* evaluation: the size images are resized to */
	double mean[3];		/* evaluation mean */
} mp_loader_opts;

typedef struct mp_loader mp_loader;

/* Opens a dataset DB and reads its record table. On failure, *bad_data (if
 * bad_data is not NULL) says who is at fault: 1 the data or the system (a
 * macrobatch missing, corrupt or out of order, records that are not the
 * meta's count, a label outside 0..classes-1, a DB whose data.mdb is there
 * but cannot be opened (cut short, not LMDB), a read error, no memory), 0
 * the request (not a dataset DB, a stream, no labels for training, too few
 * records for one batch). */
mp_loader *mp_loader_open(const mp_loader_opts *o, int *bad_data, mp_error *e);
void mp_loader_close(mp_loader *l);
uint64_t mp_loader_records(const mp_loader *l);
uint64_t mp_loader_batches(const mp_loader *l); /* per epoch */
/* Image side of the batches (crop or eval size). */
int mp_loader_size(const mp_loader *l);

/* A CRC32 of the records in their stored order (each one's label, size,
 * encoding and payload): the same for the same data, wherever it lies
 * and however it was split into macrobatches. */
uint32_t mp_loader_fingerprint(const mp_loader *l);

/* A record of one dataset stored byte for byte as one of another. */
typedef struct {
	uint64_t a, b;		/* the record in each */
} mp_loader_same;

/* The records of b stored exactly as one of a's (the same encoding, size
 * and payload bytes): validation images that are also training images.
 * Returns how many of b's there are; the first max_shown pairs (b's
 * first, in order) go into shown. -1 when out of memory. */
int64_t mp_loader_shared(const mp_loader *a, const mp_loader *b, mp_loader_same *shown,
			 int max_shown);
/* A record's name, for messages. */
const char *mp_loader_record_name(const mp_loader *l, uint64_t i, int *len);

/* The dataset's meta document. */
const mp_meta *mp_loader_meta(const mp_loader *l);

/* Sets the mean the batches have subtracted (aug.mean in training, mean
 * otherwise), for a caller that takes it from the dataset's meta: the
 * loader need not be opened, and every record read, a second time. An
 * epoch under way stops; the next mp_loader_start uses the new mean. */
void mp_loader_set_mean(mp_loader *l, const double mean[3]);

/* Starts an epoch; the previous one may be unfinished. */
int mp_loader_start(mp_loader *l, uint64_t epoch, mp_error *e);
/* Starts an epoch at batch first_batch, as if the batches before it had
 * been taken (none of them is decoded): resuming in the middle of an epoch
 * sees the same batches as an uninterrupted run. */
int mp_loader_start_at(mp_loader *l, uint64_t epoch, uint64_t first_batch, mp_error *e);
/* The next batch of the epoch: images (n, 3, size, size) and labels, with
 * n <= batch. Returns 1, 0 at the end of the epoch, -1 on error. records
 * (may be NULL) receives the dataset index of each image. */
int mp_loader_next(mp_loader *l, float *images, int32_t *labels, uint64_t *records,
		   int *n, mp_error *e);

/* The training set kept decoded elsewhere (mp-train --augment backend):
 * the batches are then augmentation plans (kernels/backend.h,
 * augment_train) with the draws mp_loader_next's images would have had.
 *
 * mp_loader_decoded_bytes: the bytes of all records decoded (8-bit RGB),
 * from their headers. mp_loader_plan_taps: the taps the plans need, or -1
 * with a message naming a record that a plan cannot scale (one that a
 * scale would shrink more than 60 times). mp_loader_keep_decoded decodes
 * every record once, with the loader's threads, and hands the bytes to
 * put in order and in chunks of whole records, as one store of
 * mp_loader_decoded_bytes bytes (put returns 0, or -1 with a message in
 * e); an epoch under way stops, and from then on the batches come from
 * mp_loader_next_plan, whose plan holds mp_augment_plan_words(batch,
 * size, mp_loader_taps) words. A record that does not decode is an error
 * naming it, and the loader stays as it was. */
typedef int (*mp_loader_put)(void *ctx, uint64_t offset, const uint8_t *bytes, size_t len,
			     mp_error *e);
uint64_t mp_loader_decoded_bytes(const mp_loader *l);
int mp_loader_plan_taps(const mp_loader *l, mp_error *e);
int mp_loader_keep_decoded(mp_loader *l, mp_loader_put put, void *ctx, mp_error *e);
int mp_loader_taps(const mp_loader *l); /* 0 until kept decoded */
int mp_loader_next_plan(mp_loader *l, int32_t *plan, int32_t *labels, uint64_t *records, int *n,
			mp_error *e);

#endif
