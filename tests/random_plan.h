/* Augmentation plans (kernels/backend.h, augment_train) made up for the
 * tests and benchmarks of the backends, which follow any plan within its
 * bounds: the loader's own plans are tested in tests/unit/test_augment.c.
 * Header-only: each program includes it once. */
#ifndef MP_RANDOM_PLAN_H
#define MP_RANDOM_PLAN_H

#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "mp_util.h"

/* Little-endian words of a 64-bit value, as plans store them. */
static void plan_u64(int32_t *w, uint64_t v)
{
	w[0] = (int32_t)(uint32_t)v;
	w[1] = (int32_t)(uint32_t)(v >> 32);
}

/* One axis of a plan: for each of crop outputs, its taps (at most limit)
 * and weights that sum to about 1 and may be negative, as a cubic's, so
 * that some outputs clamp at 0 or 255. Random: 1..taps taps from a random
 * start. Spread: taps taps from starts that rise across the image, as a
 * resize's do. */
static void random_axis(int32_t *axis, int crop, int taps, int limit, int spread, mp_rng *rng)
{
	for (int j = 0; j < crop; j++) {
		const int most = taps < limit ? taps : limit;
		const int count = spread ? most : 1 + (int)mp_rng_below(rng, (uint64_t)most);
		axis[j] = spread ? (int32_t)((int64_t)j * (limit - count) / (crop > 1 ? crop - 1 : 1))
				 : (int32_t)mp_rng_below(rng, (uint64_t)(limit - count + 1));
		axis[crop + j] = count;
		double w[4096], sum = 0;
		for (int t = 0; t < count; t++)
			sum += w[t] = -0.25 + 1.25 * mp_rng_uniform(rng);
		for (int t = 0; t < taps; t++) {
			const float f = t < count ? (float)(w[t] / (sum > 0.05 ? sum : 1)) : 0.0f;
			memcpy(&axis[2 * crop + (size_t)j * taps + t], &f, sizeof f);
		}
	}
}

/* A plan for n crops of the store's images (image j % nimg, sizes[i]
 * width and height, at byte first[i]) into plan, flips drawn. */
static void random_plan(int32_t *plan, int n, const int (*sizes)[2], const uint64_t *first,
			int nimg, int crop, int taps, int spread, const double mean[3], mp_rng *rng)
{
	memset(plan, 0, MP_AUGMENT_PLAN_HEAD * sizeof *plan);
	for (int c = 0; c < 3; c++) {
		uint64_t bits;
		memcpy(&bits, &mean[c], sizeof bits);
		plan_u64(plan + 2 * c, bits);
	}
	for (int j = 0; j < n; j++) {
		const int i = j % nimg;
		int32_t *rec = plan + MP_AUGMENT_PLAN_HEAD + (size_t)j * MP_AUGMENT_PLAN_IMAGE(crop, taps);
		memset(rec, 0, 8 * sizeof *rec);
		plan_u64(rec, first[i]);
		rec[2] = sizes[i][0];
		rec[3] = sizes[i][1];
		rec[4] = (int32_t)mp_rng_below(rng, 2);
		random_axis(rec + 8, crop, taps, sizes[i][0], spread, rng);
		random_axis(rec + 8 + (size_t)crop * (2 + taps), crop, taps, sizes[i][1], spread, rng);
	}
}

#endif
