/* Training augmentation and the evaluation transform. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "mp_augment.h"

static void noise_image(mp_image *img, int w, int h, uint64_t seed)
{
	mp_error e;
	mp_rng r;
	assert_int_equal(mp_image_alloc(img, w, h, &e), 0);
	mp_rng_seed(&r, seed);
	for (size_t i = 0; i < (size_t)w * h * 3; i++)
		img->px[i] = (uint8_t)mp_rng_next(&r);
}

static const double mean[3] = {120.5, 115.25, 100.0};

static void eval_resizes_whole_image(void **state)
{
	(void)state;
	mp_image img;
	mp_error e;
	assert_int_equal(mp_image_alloc(&img, 128, 96, &e), 0);
	for (size_t i = 0; i < 128 * 96 * 3; i++)
		img.px[i] = (uint8_t)(i % 3 == 0 ? 200 : i % 3 == 1 ? 50 : 7);
	float *out = malloc(112 * 112 * 3 * sizeof *out);
	assert_int_equal(mp_augment_eval(&img, 112, mean, out, &e), 0);
	/* a flat image stays flat at any size; CHW planes in RGB order */
	for (int i = 0; i < 112 * 112; i++) {
		assert_true(out[i] == (float)(200 - 120.5));
		assert_true(out[112 * 112 + i] == (float)(50 - 115.25));
		assert_true(out[2 * 112 * 112 + i] == (float)(7 - 100.0));
	}
	mp_image_free(&img);
	/* at its own size the transform is exact: pixel (x, y) channel c */
	noise_image(&img, 112, 112, 5);
	assert_int_equal(mp_augment_eval(&img, 112, mean, out, &e), 0);
	for (int y = 0; y < 112; y += 7)
		for (int x = 0; x < 112; x += 5)
			for (int c = 0; c < 3; c++)
				assert_true(out[c * 112 * 112 + y * 112 + x] ==
					    (float)(img.px[(y * 112 + x) * 3 + c] - mean[c]));
	assert_int_equal(mp_augment_eval(&img, 0, mean, out, &e), -1);
	mp_image_free(&img);
	free(out);
}

/* The expected output of a draw, computed independently. */
static void expected_crop(const mp_image *src, const mp_augment_draw *d, int crop, float *want)
{
	mp_image scaled;
	mp_error e;
	assert_int_equal(mp_image_resize(src, d->width, d->height, &scaled, &e), 0);
	for (int c = 0; c < 3; c++)
		for (int y = 0; y < crop; y++)
			for (int x = 0; x < crop; x++) {
				int sx = d->x + (d->flip ? crop - 1 - x : x), sy = d->y + y;
				want[(c * crop + y) * crop + x] =
					(float)(scaled.px[((size_t)sy * d->width + sx) * 3 + c] - mean[c]);
			}
	mp_image_free(&scaled);
}

static void train_draws_are_crops_of_the_scaled_image(void **state)
{
	(void)state;
	mp_image img;
	mp_error e;
	noise_image(&img, 128, 96, 11);
	mp_augment_train_opts o = {.scale_min = 128, .scale_max = 240, .crop = 112};
	memcpy(o.mean, mean, sizeof mean);
	float *out = malloc(112 * 112 * 3 * sizeof *out), *want = malloc(112 * 112 * 3 * sizeof *want);
	int flips = 0, saw_min = 0, saw_max = 0;
	for (int rec = 0; rec < 400; rec++) {
		mp_rng r;
		mp_augment_draw d;
		mp_augment_rng(&r, 7, 0, (uint64_t)rec);
		assert_int_equal(mp_augment_train(&img, &o, &r, out, &d, &e), 0);
		assert_in_range(d.scale, 128, 240);
		assert_int_equal(d.height, d.scale); /* 96 is the short side */
		assert_in_range(d.x, 0, d.width - 112);
		assert_in_range(d.y, 0, d.height - 112);
		flips += d.flip;
		saw_min |= d.scale < 135;
		saw_max |= d.scale > 233;
		if (rec % 40 == 0) {
			expected_crop(&img, &d, 112, want);
			assert_memory_equal(out, want, 112 * 112 * 3 * sizeof *out);
		}
	}
	assert_in_range(flips, 160, 240); /* p = 1/2 over 400 draws, > 4 sigma */
	assert_true(saw_min && saw_max);
	free(out);
	free(want);
	mp_image_free(&img);
}

static void draws_depend_on_seed_epoch_record_only(void **state)
{
	(void)state;
	mp_image img;
	mp_error e;
	noise_image(&img, 64, 80, 3);
	mp_augment_train_opts o = {.scale_min = 40, .scale_max = 90, .crop = 32};
	float a[32 * 32 * 3], b[32 * 32 * 3];
	mp_augment_draw da, db;
	mp_rng r;
	mp_augment_rng(&r, 1, 2, 3);
	assert_int_equal(mp_augment_train(&img, &o, &r, a, &da, &e), 0);
	mp_augment_rng(&r, 1, 2, 3);
	assert_int_equal(mp_augment_train(&img, &o, &r, b, &db, &e), 0);
	assert_memory_equal(a, b, sizeof a);
	int differ = 0;
	for (uint64_t k = 0; k < 8; k++) {
		mp_augment_rng(&r, 1, 2, 4 + k);
		assert_int_equal(mp_augment_train(&img, &o, &r, b, &db, &e), 0);
		differ |= memcmp(a, b, sizeof a) != 0;
		mp_augment_rng(&r, 1, 3 + k, 3);
		assert_int_equal(mp_augment_train(&img, &o, &r, b, &db, &e), 0);
		differ |= (memcmp(a, b, sizeof a) != 0) << 1;
	}
	assert_int_equal(differ, 3);
	/* bad geometry is an error, not a crash */
	o.crop = 50;
	assert_int_equal(mp_augment_train(&img, &o, &r, a, &da, &e), -1);
	mp_image_free(&img);
}

/* A batch of images of several sizes in one byte store, each drawn as the
 * loader draws it: the plans run by both CPU backends give
 * mp_augment_train's floats bit for bit (upscaled, downscaled, one side
 * at its size, the whole image as it is, flipped or not). */
static void plans_give_the_loaders_bits(void **state)
{
	(void)state;
	static const int sizes[][2] = {{128, 128}, {96, 160}, {200, 50}, {500, 400},
				       {112, 112}, {113, 300}, {28, 28},  {1000, 130}};
	const int nimg = (int)(sizeof sizes / sizeof sizes[0]);
	static const mp_augment_train_opts opts[] = {
		{128, 240, 112, {120.5, 115.25, 100.0}},
		{28, 40, 28, {0, 0, 0}},
		{112, 112, 112, {127.5, 3.0, 255.0}},
	};
	mp_error e;
	mp_image img[8];
	uint64_t first[8], bytes = 0;
	for (int i = 0; i < nimg; i++) {
		noise_image(&img[i], sizes[i][0], sizes[i][1], 40 + (uint64_t)i);
		first[i] = bytes;
		bytes += (uint64_t)sizes[i][0] * sizes[i][1] * 3;
	}
	mp_backend *backends[2] = {mp_backend_cpu_new(1), mp_backend_cpu_fast_new(2)};
	for (int b = 0; b < 2; b++) {
		mp_backend *be = backends[b];
		assert_non_null(be);
		mp_tensor pixels;
		assert_int_equal(be->ops->alloc(be, &pixels, (int)((bytes + 3) / 4), 1, 1, 1), 0);
		for (int i = 0; i < nimg; i++)
			assert_int_equal(be->ops->write_bytes(be, &pixels, first[i], img[i].px,
							      (size_t)sizes[i][0] * sizes[i][1] * 3),
					 0);
		for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
			const mp_augment_train_opts *o = &opts[k];
			const int crop = o->crop;
			int taps = 1;
			for (int i = 0; i < nimg; i++) {
				int t = mp_augment_plan_taps(sizes[i][0], sizes[i][1], o);
				assert_true(t >= 1);
				taps = t > taps ? t : taps;
			}
			const int n = 3 * nimg; /* each image three times: three draws */
			int32_t *plan = malloc(mp_augment_plan_words(n, crop, taps) * sizeof *plan);
			float *scratch = malloc(sizeof(float) * (size_t)crop * taps);
			const size_t image = (size_t)3 * crop * crop;
			float *want = malloc(sizeof(float) * image * n);
			mp_augment_plan_head(plan, o->mean);
			int flips = 0, kept = 0;
			for (int j = 0; j < n; j++) {
				const int i = j % nimg;
				mp_rng r1, r2;
				mp_augment_rng(&r1, 7, (uint64_t)k, (uint64_t)j);
				r2 = r1;
				mp_augment_draw d1, d2;
				assert_int_equal(mp_augment_train(&img[i], o, &r1, want + image * j, &d1,
								  &e), 0);
				int32_t *rec = plan + MP_AUGMENT_PLAN_HEAD +
					       (size_t)j * MP_AUGMENT_PLAN_IMAGE(crop, taps);
				assert_int_equal(mp_augment_train_plan(sizes[i][0], sizes[i][1], first[i],
								       o, &r2, taps, rec, scratch, &d2, &e),
						 0);
				assert_memory_equal(&d1, &d2, sizeof d1);
				flips += d1.flip;
				kept += d1.width == sizes[i][0] && d1.height == sizes[i][1];
			}
			assert_true(flips > 0 && flips < n);
			if (k == 2)
				assert_true(kept > 0);
			mp_tensor plan_dev, y;
			assert_int_equal(be->ops->alloc(be, &plan_dev, 1, 1, 1,
							(int)mp_augment_plan_words(n, crop, taps)), 0);
			assert_int_equal(be->ops->alloc(be, &y, n, 3, crop, crop), 0);
			assert_int_equal(be->ops->augment_train(be, &pixels, plan, taps, &plan_dev, &y), 0);
			assert_memory_equal(y.data, want, sizeof(float) * image * n);

			/* a plan that reads outside the store or its image is refused */
			int32_t *rec = plan + MP_AUGMENT_PLAN_HEAD;
			const int32_t saved = rec[2];
			rec[2] = 100000;
			assert_int_equal(be->ops->augment_train(be, &pixels, plan, taps, &plan_dev, &y), -1);
			assert_non_null(strstr(mp_backend_error(be), "not inside"));
			rec[2] = saved;
			rec[8] = sizes[0][0]; /* column 0 starts past the image's edge */
			assert_int_equal(be->ops->augment_train(be, &pixels, plan, taps, &plan_dev, &y), -1);
			assert_non_null(strstr(mp_backend_error(be), "reads outside"));
			be->ops->release(be, &plan_dev);
			be->ops->release(be, &y);
			free(plan);
			free(scratch);
			free(want);
		}
		assert_int_equal(be->ops->write_bytes(be, &pixels, 4 * mp_tensor_count(&pixels) - 1,
						      img[0].px, 2), -1);
		be->ops->release(be, &pixels);
		mp_backend_free(be);
	}
	/* a side that would shrink more than 60 times has no plan */
	assert_int_equal(mp_augment_plan_taps(20000, 20000, &opts[1]), -1);
	for (int i = 0; i < nimg; i++)
		mp_image_free(&img[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(eval_resizes_whole_image),
		cmocka_unit_test(train_draws_are_crops_of_the_scaled_image),
		cmocka_unit_test(draws_depend_on_seed_epoch_record_only),
		cmocka_unit_test(plans_give_the_loaders_bits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
