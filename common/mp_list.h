/* Image lists and category files in the Mini-Places development-kit formats:
 *   train.txt       train/a/abbey/00000001.jpg 0
 *   test.txt        test/00000001.jpg
 *   categories.txt  /a/abbey 0
 * Blank lines and lines starting with '#' are ignored, CRLF endings are
 * accepted, and a path may contain spaces (the label is the last word). */
#ifndef MP_LIST_H
#define MP_LIST_H

#include <stddef.h>
#include <stdio.h>

#include "mp_util.h"

#define MP_NO_LABEL (-1)
#define MP_MAX_CLASSES 65536

typedef struct {
	char *path;
	int label; /* MP_NO_LABEL in an unlabelled (test) list */
	long line; /* 1-based line in the list file */
} mp_list_entry;

typedef struct {
	mp_list_entry *items;
	size_t count, cap;
	int labelled; /* every entry has a label */
	int max_label;
} mp_list;

/* Reads a list. nclasses > 0 bounds the labels (an out-of-range label is an
 * error naming the file and line); nclasses <= 0 accepts 0..MP_MAX_CLASSES-1. */
int mp_list_read(FILE *f, const char *name, int nclasses, mp_list *out,
		 mp_error *e);
void mp_list_free(mp_list *l);
/* Warns on stderr of each path the list names more than once (the first
 * few by line, then how many), comparing paths as written: a list merged
 * from two would otherwise pack or score those images twice, silently.
 * what says what happens to each ("packed", "scored"). Returns how many
 * lines repeat an earlier one; -1 when out of memory (nothing checked). */
long mp_list_warn_duplicates(const mp_list *l, const char *name, const char *what);
/* Fisher-Yates shuffle with mp_rng seeded by seed. */
void mp_list_shuffle(mp_list *l, unsigned long long seed);
/* The directory a list path is read below: root for a relative path, ""
 * for an absolute one or without a root. Messages name the file opened:
 * that, a "/" when it is not empty, and the path. */
const char *mp_list_root(const char *root, const char *path);

/* A hint for a list path that names no file: when its last word reads as
 * a number but no whole one ("7.0"), it was likely meant as a label, which
 * the list takes as part of the path. "" otherwise. */
const char *mp_list_label_hint(const char *path);

/* The hint for a listed path that names no file (opened: the path as
 * opened, the root before it): mp_list_label_hint's, or, for a relative
 * path read without a root (-r) where nothing is found, not even a link,
 * that the paths are read from the current directory (the kit's lists
 * name paths below its images directory). "" otherwise. */
const char *mp_list_missing_hint(const char *root, const char *path, const char *opened);

/* Reads categories.txt: each class index 0..n-1 exactly once. */
int mp_categories_read(FILE *f, const char *name, char ***names, int *count,
		       mp_error *e);
void mp_categories_free(char **names, int count);

#endif
