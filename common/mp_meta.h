/* The dataset's meta document: JSON stored under the key "meta" of a dataset
 * DB and in the meta frame of a stream (see mp-dataset(5)). */
#ifndef MP_META_H
#define MP_META_H

#include <stdint.h>

#include "mp_util.h"

#define MP_META_FORMAT "mp-dataset"
/* Version 2 adds "crc32", the document's own CRC (mp-dataset(5)), and
 * requires it; version 1 documents, which no CRC covers, are still read. */
#define MP_META_VERSION 2
#define MP_META_CRC_KEY "crc32"
/* The largest shuffle seed the document holds exactly. Readers take a
 * JSON number as a double, exact up to 2^53, but cJSON writes 15
 * significant digits whenever they read back within a relative 2^-52:
 * 9007199254740991 comes out as 9.00719925474099e+15. Below 10^15 every
 * integer comes out whole. */
#define MP_META_MAX_SEED 999999999999999LL
/* The most records (and skipped entries) and macrobatches a document may
 * give (mp-dataset(5)). */
#define MP_META_MAX_RECORDS 1000000000000000LL
#define MP_META_MAX_BATCHES 1000000000000LL

typedef struct {
	int format_version;   /* as read; a writer writes MP_META_VERSION */
	int has_crc;	      /* the document read had its CRC, and it matched */
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
/* Returns malloc'ed JSON text of the current version, its CRC first: the
 * CRC covers the strlen() bytes of the text, all of which are to be stored. */
char *mp_meta_to_json(const mp_meta *m, mp_error *e);
/* Computes and writes in place the CRC of a document of len bytes whose
 * first member is "crc32" with a string of 8 characters (what
 * mp_meta_to_json writes; a document edited after it). -1 if it has none. */
int mp_meta_seal(char *text, size_t len, mp_error *e);
/* Parses and validates a meta document of len bytes (the CRC, when there is
 * one, covers exactly these). */
int mp_meta_from_json(const char *text, size_t len, mp_meta *m, mp_error *e);

/* The summary that closes a stream: records, macrobatches, mean, skipped.
 * mp_meta_apply_end completes a meta read by mp_meta_from_json, checking
 * the counts against its macrobatch size; on failure m is unchanged. */
char *mp_meta_end_json(const mp_meta *m, mp_error *e);
int mp_meta_apply_end(mp_meta *m, const char *text, size_t len, mp_error *e);

#endif
