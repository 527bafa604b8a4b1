/* The dataset's meta document: JSON stored under the key "meta" of a dataset
 * DB and in the meta frame of a stream (see mp-dataset(5)). */
#ifndef MP_META_H
#define MP_META_H

#include <stdint.h>

#include "mp_util.h"

#define MP_META_FORMAT "mp-dataset"
#define MP_META_VERSION 1
/* The largest shuffle seed the document holds exactly. Readers take a
 * JSON number as a double, exact up to 2^53, but cJSON writes 15
 * significant digits whenever they read back within a relative 2^-52:
 * 9007199254740991 comes out as 9.00719925474099e+15. Below 10^15 every
 * integer comes out whole. */
#define MP_META_MAX_SEED 999999999999999LL

typedef struct {
	int format_version;
	int complete;	      /* counts and mean are final (0 in a stream's head) */
	uint64_t records;     /* records stored */
	uint64_t macrobatches;
	uint32_t macrobatch_size;
	int height, width, channels;
	int size;	      /* the --size images were brought to, before padding */
	char fit[16];	      /* pad | crop | stretch */
	int padding;
	char pad_fill[16];    /* mean | zero | edge */
	char encoding[16];    /* keep | jpeg | png | raw: the writer's policy */
	int quality;
	int has_mean;
	double mean[3];	      /* per-channel mean of the stored pixels, 0..255, RGB */
	int labelled;
	int classes;	      /* number of classes (0 when unknown) */
	char **class_names;   /* classes entries, or NULL */
	char *source_list;    /* the list file the records came from */
	uint64_t skipped;     /* bad inputs skipped with --skip-bad */
	int shuffled;	      /* the list was shuffled with shuffle_seed */
	uint64_t shuffle_seed;
	char created_by[64];
} mp_meta;

void mp_meta_init(mp_meta *m);
void mp_meta_free(mp_meta *m);
/* Returns malloc'ed JSON text. */
char *mp_meta_to_json(const mp_meta *m, mp_error *e);
/* Parses and validates a meta document. */
int mp_meta_from_json(const char *text, size_t len, mp_meta *m, mp_error *e);

/* The summary that closes a stream: records, macrobatches, mean, skipped.
 * mp_meta_apply_end completes a meta read by mp_meta_from_json, checking
 * the counts against its macrobatch size; on failure m is unchanged. */
char *mp_meta_end_json(const mp_meta *m, mp_error *e);
int mp_meta_apply_end(mp_meta *m, const char *text, size_t len, mp_error *e);

#endif
