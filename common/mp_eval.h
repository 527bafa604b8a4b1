/* The evaluation job behind mp-eval: views of every image at one or more
 * scales, their class probabilities combined, top-1/top-k error per scale
 * and combined, and the files users and the challenge need.
 *
 * Views: at scale s the whole image is resized to s x s (mp_augment_eval).
 * With crops "full" that square is the view; "center" cuts the network's
 * input size from its middle, "5" the four corners and the middle, "10"
 * those and their mirror images. flip adds the mirror image of every view.
 * A scale's probabilities are the mean of its views' softmax outputs (or
 * the softmax of the mean of their logits); the combination is the mean
 * over the scales. Every view of every scale has the same weight. */
#ifndef MP_EVAL_H
#define MP_EVAL_H

#include <stdint.h>

#include "mp_util.h"

#define MP_EVAL_MAX_SCALES 16
#define MP_EVAL_MAX_PIXELS (1ull << 26) /* 8192 x 8192, as mp-batchwriter's */

enum mp_eval_crops { MP_CROPS_FULL = 0, MP_CROPS_CENTER = 1, MP_CROPS_5 = 5, MP_CROPS_10 = 10 };
enum mp_eval_combine { MP_COMBINE_PROB, MP_COMBINE_LOGIT };

struct mp_eval_result;

typedef struct mp_eval_opts {
	const char *weights;
	const char *data;	/* dataset DB, stream file, or "-" for stdin */
	const char *list, *root; /* or an image list, paths relative to root */
	int scales[MP_EVAL_MAX_SCALES];
	int nscales;		/* 0: the size the weights were trained at */
	int crops;		/* enum mp_eval_crops */
	int flip;
	int combine;		/* enum mp_eval_combine */
	int topk;		/* the second error measure and the submission's labels */
	int batch;		/* images per forward pass; 0: the backend's default */
	int threads;		/* 0: all cores */
	const char *backend;
	int device;	       /* the CUDA device (-1: not chosen; mp_backend_open) */
	const char *precision; /* auto | fp32 | bf16 (mp_backend_open) */
	const char *probs_path, *submission_path, *per_class_path, *confusion_path;
	const char *dump_views;	/* directory for PNGs of the first views */
	int dump_count;		/* images whose views are dumped */
	uint64_t max_pixels;	/* larger images are refused; 0: MP_EVAL_MAX_PIXELS */
	int quiet;
	/* Called once every output is written, before any replaces a file of
	 * its name, with the results (seconds included): the caller's summary
	 * on stdout, whose failure (-1, e set) then replaces none. NULL: none. */
	int (*report)(const struct mp_eval_opts *o, const struct mp_eval_result *r, mp_error *e);
} mp_eval_opts;

void mp_eval_opts_default(mp_eval_opts *o);

typedef struct {
	int size;		/* the scale, pixels */
	double top1, topk;	/* errors in [0, 1] (labelled data only) */
} mp_eval_scale;

typedef struct mp_eval_result {
	uint64_t images;
	int labelled;
	int classes;
	int views_per_scale;
	int nscales;
	mp_eval_scale scale[MP_EVAL_MAX_SCALES];
	double top1, topk;	/* the combination's errors */
	double seconds;
	char backend[256];
} mp_eval_result;

enum mp_eval_status { MP_EVAL_DONE = 0, MP_EVAL_FAILED = 1, MP_EVAL_BAD_USAGE = 2 };

int mp_eval_run(const mp_eval_opts *o, mp_eval_result *r, mp_error *e);

#endif
