#include "mp_augment.h"

#include <math.h>
#include <string.h>

#include "backend.h"

void mp_augment_rng(mp_rng *r, uint64_t seed, uint64_t epoch, uint64_t record)
{
	/* Mix the three numbers through the generator's own seeding so that
	 * neighbouring records get unrelated streams. */
	mp_rng mix;
	mp_rng_seed(&mix, seed);
	uint64_t a = mp_rng_next(&mix) ^ (epoch * 0x9e3779b97f4a7c15ull);
	mp_rng_seed(&mix, a);
	uint64_t b = mp_rng_next(&mix) ^ (record * 0xd1b54a32d192ed03ull);
	mp_rng_seed(r, b);
}

/* CHW floats from an HWC byte region, mean subtracted, optionally mirrored.
 * A table per channel holds (float)(byte - mean): the same value as the
 * subtraction, without a double conversion per value. */
static void to_chw(const mp_image *img, int x0, int y0, int w, int h, int flip,
		   const double mean[3], float *out)
{
	float table[3][256];
	for (int c = 0; c < 3; c++)
		for (int v = 0; v < 256; v++)
			table[c][v] = (float)(v - mean[c]);
	const size_t plane = (size_t)w * h;
	for (int y = 0; y < h; y++) {
		const uint8_t *row = img->px + ((size_t)(y0 + y) * img->width + x0) * 3;
		float *r = out + (size_t)y * w, *g = r + plane, *b = g + plane;
		if (flip) {
			for (int x = 0; x < w; x++) {
				const uint8_t *p = row + 3 * (size_t)(w - 1 - x);
				r[x] = table[0][p[0]];
				g[x] = table[1][p[1]];
				b[x] = table[2][p[2]];
			}
		} else {
			for (int x = 0; x < w; x++) {
				const uint8_t *p = row + 3 * (size_t)x;
				r[x] = table[0][p[0]];
				g[x] = table[1][p[1]];
				b[x] = table[2][p[2]];
			}
		}
	}
}

int mp_augment_train_draw(int width, int height, const mp_augment_train_opts *o, mp_rng *r,
			  mp_augment_draw *draw, mp_error *e)
{
	if (o->crop < 1 || o->scale_min < o->crop || o->scale_max < o->scale_min)
		return mp_seterr(e, "augmentation needs crop <= scale_min <= scale_max "
				 "(crop %d, scale %d..%d)", o->crop, o->scale_min, o->scale_max);
	mp_augment_draw d;
	d.scale = o->scale_min + (int)mp_rng_below(r, (uint64_t)(o->scale_max - o->scale_min + 1));
	/* the short side becomes scale; the long side keeps the aspect ratio */
	if (width <= height) {
		d.width = d.scale;
		d.height = (int)floor((double)height * d.scale / width + 0.5);
	} else {
		d.height = d.scale;
		d.width = (int)floor((double)width * d.scale / height + 0.5);
	}
	if (d.width < o->crop)
		d.width = o->crop;
	if (d.height < o->crop)
		d.height = o->crop;
	d.x = (int)mp_rng_below(r, (uint64_t)(d.width - o->crop + 1));
	d.y = (int)mp_rng_below(r, (uint64_t)(d.height - o->crop + 1));
	d.flip = (int)(mp_rng_next(r) >> 63);
	*draw = d;
	return 0;
}

int mp_augment_train(const mp_image *src, const mp_augment_train_opts *o, mp_rng *r,
		     float *out, mp_augment_draw *draw, mp_error *e)
{
	mp_augment_draw d;
	if (mp_augment_train_draw(src->width, src->height, o, r, &d, e) < 0)
		return -1;
	if (d.width == src->width && d.height == src->height) {
		to_chw(src, d.x, d.y, o->crop, o->crop, d.flip, o->mean, out);
	} else {
		/* only the crop of the scaled image is computed */
		mp_image crop;
		if (mp_image_resize_region(src, d.width, d.height, d.x, d.y, o->crop, o->crop, &crop,
					   e) < 0)
			return -1;
		to_chw(&crop, 0, 0, o->crop, o->crop, d.flip, o->mean, out);
		mp_image_free(&crop);
	}
	if (draw)
		*draw = d;
	return 0;
}

/* mp_image_resize_region resizes in one step unless a side shrinks more
 * than 60 times; a plan has the one step only. */
static int one_step(int width, int height, int64_t to_width, int64_t to_height)
{
	return width <= 60 * to_width && height <= 60 * to_height;
}

int mp_augment_plan_taps(int width, int height, const mp_augment_train_opts *o)
{
	/* the smallest scale shrinks most, and takes the most taps */
	const int lo = o->scale_min > o->crop ? o->scale_min : o->crop;
	int64_t w = lo, h = lo;
	if (width < height)
		h = (int64_t)floor((double)height * lo / width + 0.5);
	else if (width > height)
		w = (int64_t)floor((double)width * lo / height + 0.5);
	if (w < o->crop)
		w = o->crop;
	if (h < o->crop)
		h = o->crop;
	if (!one_step(width, height, w, h))
		return -1;
	const int tw = mp_image_resize_taps(width, w), th = mp_image_resize_taps(height, h);
	return tw > th ? tw : th;
}

void mp_augment_plan_head(int32_t *plan, const double mean[3])
{
	memset(plan, 0, MP_AUGMENT_PLAN_HEAD * sizeof *plan);
	memcpy(plan, mean, 3 * sizeof(double));
}

/* One axis of an image's plan: crop positions from first on, of the
 * axis resized from in to out pixels, or taken as they are (same). */
static int plan_axis_words(int same, int in, int out, int first, int crop, int taps,
			   int32_t *words, float *weights, mp_error *e)
{
	int32_t *start = words, *count = words + crop;
	if (same) {
		for (int j = 0; j < crop; j++) {
			start[j] = first + j;
			count[j] = 1;
			weights[(size_t)j * taps] = 1.0f;
		}
	} else if (mp_image_resize_axis(in, out, first, crop, taps, start, count, weights, e) < 0) {
		return -1;
	}
	memcpy(words + 2 * crop, weights, sizeof(float) * (size_t)crop * taps);
	return 0;
}

int mp_augment_train_plan(int width, int height, uint64_t first, const mp_augment_train_opts *o,
			  mp_rng *r, int taps, int32_t *rec, float *scratch, mp_augment_draw *draw,
			  mp_error *e)
{
	mp_augment_draw d;
	if (mp_augment_train_draw(width, height, o, r, &d, e) < 0)
		return -1;
	/* the loader resizes only where the size changes, and then both axes */
	const int same = d.width == width && d.height == height;
	if (!same && !one_step(width, height, d.width, d.height))
		return mp_seterr(e, "a %dx%d image shrinks to %dx%d, more than 60 times: the "
				 "loader resizes it in two steps, which a plan cannot",
				 width, height, d.width, d.height);
	const int crop = o->crop;
	memset(rec, 0, MP_AUGMENT_PLAN_IMAGE(crop, taps) * sizeof *rec);
	rec[0] = (int32_t)(uint32_t)first;
	rec[1] = (int32_t)(uint32_t)(first >> 32);
	rec[2] = width;
	rec[3] = height;
	rec[4] = d.flip;
	const size_t axis = (size_t)crop * (2 + (size_t)taps);
	memset(scratch, 0, sizeof(float) * (size_t)crop * taps);
	if (plan_axis_words(same, width, d.width, d.x, crop, taps, rec + 8, scratch, e) < 0)
		return -1;
	memset(scratch, 0, sizeof(float) * (size_t)crop * taps);
	if (plan_axis_words(same, height, d.height, d.y, crop, taps, rec + 8 + axis,
			    scratch, e) < 0)
		return -1;
	if (draw)
		*draw = d;
	return 0;
}

int mp_augment_eval(const mp_image *src, int size, const double mean[3], float *out,
		    mp_error *e)
{
	if (size < 1)
		return mp_seterr(e, "evaluation size %d is not positive", size);
	if (src->width == size && src->height == size) {
		to_chw(src, 0, 0, size, size, 0, mean, out);
		return 0;
	}
	mp_image scaled;
	if (mp_image_resize(src, size, size, &scaled, e) < 0)
		return -1;
	to_chw(&scaled, 0, 0, size, size, 0, mean, out);
	mp_image_free(&scaled);
	return 0;
}
