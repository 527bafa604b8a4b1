/* The recipe's input transforms, from a decoded RGB image to the network's
 * float input (CHW, mean subtracted, 0..255 scale):
 *   training:   scale the short side to a random s in [scale_min, scale_max],
 *               take a random crop x crop square, flip horizontally with
 *               probability 1/2;
 *   evaluation: resize the whole image to size x size.
 * Each record draws from its own generator, seeded from (seed, epoch,
 * record), so the batches do not depend on which thread decodes what. */
#ifndef MP_AUGMENT_H
#define MP_AUGMENT_H

#include <stdint.h>

#include "mp_image.h"
#include "mp_util.h"

typedef struct {
	int scale_min, scale_max; /* short side, pixels */
	int crop;
	double mean[3];		  /* RGB, subtracted */
} mp_augment_train_opts;

/* What one training draw chose, for tests and logs. */
typedef struct {
	int scale;	/* short side after scaling */
	int width, height; /* the scaled image */
	int x, y;	/* crop origin in the scaled image */
	int flip;
} mp_augment_draw;

/* The generator of one record in one epoch. */
void mp_augment_rng(mp_rng *r, uint64_t seed, uint64_t epoch, uint64_t record);

/* Writes crop x crop x 3 floats (CHW) to out. */
int mp_augment_train(const mp_image *src, const mp_augment_train_opts *o, mp_rng *r,
		     float *out, mp_augment_draw *draw, mp_error *e);

/* mp_augment_train's draw for an image of width x height, without it. */
int mp_augment_train_draw(int width, int height, const mp_augment_train_opts *o, mp_rng *r,
			  mp_augment_draw *draw, mp_error *e);

/* Augmentation plans (kernels/backend.h, augment_train): the same draw
 * and bytes as mp_augment_train, for images kept decoded elsewhere.
 * mp_augment_plan_taps: the taps that any plan for a width x height image
 * needs at most, or -1 when some draw would shrink it more than 60 times
 * (which mp_image_resize_region does in two steps, a plan in none).
 * mp_augment_plan_head writes a plan's first MP_AUGMENT_PLAN_HEAD words.
 * mp_augment_train_plan draws from r as mp_augment_train does and writes
 * the image's MP_AUGMENT_PLAN_IMAGE(crop, taps) words to rec, for its
 * pixels at byte first; scratch holds crop x taps floats. */
int mp_augment_plan_taps(int width, int height, const mp_augment_train_opts *o);
void mp_augment_plan_head(int32_t *plan, const double mean[3]);
int mp_augment_train_plan(int width, int height, uint64_t first, const mp_augment_train_opts *o,
			  mp_rng *r, int taps, int32_t *rec, float *scratch, mp_augment_draw *draw,
			  mp_error *e);

/* Writes size x size x 3 floats (CHW) to out. */
int mp_augment_eval(const mp_image *src, int size, const double mean[3], float *out,
		    mp_error *e);

#endif
