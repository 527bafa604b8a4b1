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

/* Writes size x size x 3 floats (CHW) to out. */
int mp_augment_eval(const mp_image *src, int size, const double mean[3], float *out,
		    mp_error *e);

#endif
