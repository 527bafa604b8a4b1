/* Walking a dataset: statistics, full verification, finding one record. */
#ifndef MP_INSPECT_H
#define MP_INSPECT_H

#include <stdint.h>

#include "mp_dataset.h"
#include "mp_image.h"
#include "mp_macrobatch.h"

/* Whether each macrobatch starts at the record after those read before
 * it (record numbers hold only then): the records and macrobatches seen,
 * how many started elsewhere (out of order, or numbered wrongly) and the
 * first of them. */
typedef struct {
	uint64_t records, macrobatches;
	uint64_t misplaced;
	uint64_t first_misplaced, first_misplaced_start, first_misplaced_after;
} mp_mb_order;

/* Counts macrobatch mb, read after those o has seen. */
void mp_mb_order_see(mp_mb_order *o, const mp_macrobatch *mb);

typedef struct {
	uint64_t records, macrobatches;
	uint64_t *per_class; /* classes entries (labelled sets) */
	int classes;         /* the meta's, or the largest label + 1 when it says 0 */
	uint64_t unlabelled;
	/* records whose label the meta does not allow (mp_label_allowed),
	 * counted in no class; the first of them */
	uint64_t bad_labels;
	uint64_t first_bad;
	int first_bad_label;
	char *first_bad_name;
	uint64_t encodings[3];
	uint64_t payload_total, payload_min, payload_max;
	/* distinct stored sizes, few in practice */
	struct {
		uint32_t width, height;
		uint64_t count;
	} sizes[16];
	int nsizes;
	uint64_t other_sizes;
	mp_mb_order order;
} mp_stats;

/* 1 if a record may carry label in a dataset with this meta: 0 to
 * classes - 1 (to MP_MAX_CLASSES - 1 when classes is 0) in a labelled
 * set, -1 in an unlabelled one. */
int mp_label_allowed(const mp_meta *m, int label);
/* The highest label a labelled set allows. */
int mp_label_max(const mp_meta *m);
/* 0 if record r fits the dataset m describes (a label it allows, its
 * width and height), else -1 with the first reason in why ("label 7 is
 * outside 0..3"). */
int mp_record_fits(const mp_meta *m, const mp_record *r, char *why, size_t n);

/* Reads every macrobatch and counts. Stops at the first bad macrobatch. */
int mp_stats_scan(mp_source *s, mp_stats *st, mp_error *e);
void mp_stats_free(mp_stats *st);

/* Checks every macrobatch, every CRC and decodes every image, calling
 * report for each failure and, after each macrobatch, updating progress
 * (NULL: none) with the records checked. Returns the number of failures
 * (0 = good), or -1 when reading could not go on. */
typedef void (*mp_verify_report)(void *ctx, const char *msg);
long mp_verify(mp_source *s, uint64_t max_pixels, mp_verify_report report,
	       void *ctx, uint64_t *records_checked, mp_progress *progress);

/* Finds record n. The record points into *hold (a copy of its macrobatch)
 * which the caller frees. Returns 1 found, 0 past the end, -1 error. */
int mp_find_record(mp_source *s, uint64_t n, mp_record *rec, uint8_t **hold,
		   uint64_t *mb_index, mp_error *e);

#endif
