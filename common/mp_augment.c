#include "mp_augment.h"

#include <math.h>
#include <string.h>

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

int mp_augment_train(const mp_image *src, const mp_augment_train_opts *o, mp_rng *r,
		     float *out, mp_augment_draw *draw, mp_error *e)
{
	if (o->crop < 1 || o->scale_min < o->crop || o->scale_max < o->scale_min)
		return mp_seterr(e, "augmentation needs crop <= scale_min <= scale_max "
				 "(crop %d, scale %d..%d)", o->crop, o->scale_min, o->scale_max);
	mp_augment_draw d;
	d.scale = o->scale_min + (int)mp_rng_below(r, (uint64_t)(o->scale_max - o->scale_min + 1));
	/* the short side becomes scale; the long side keeps the aspect ratio */
	if (src->width <= src->height) {
		d.width = d.scale;
		d.height = (int)floor((double)src->height * d.scale / src->width + 0.5);
	} else {
		d.height = d.scale;
		d.width = (int)floor((double)src->width * d.scale / src->height + 0.5);
	}
	if (d.width < o->crop)
		d.width = o->crop;
	if (d.height < o->crop)
		d.height = o->crop;
	d.x = (int)mp_rng_below(r, (uint64_t)(d.width - o->crop + 1));
	d.y = (int)mp_rng_below(r, (uint64_t)(d.height - o->crop + 1));
	d.flip = (int)(mp_rng_next(r) >> 63);
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
