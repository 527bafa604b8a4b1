/* Image decode/encode round trips, resampling and fitting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "mp_image.h"

static void make(mp_image *img, int w, int h, uint8_t (*f)(int x, int y, int c))
{
	mp_error e;
	assert_int_equal(mp_image_alloc(img, w, h, &e), 0);
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			for (int c = 0; c < 3; c++)
				img->px[((size_t)y * w + x) * 3 + c] = f(x, y, c);
}

static uint8_t smooth(int x, int y, int c) { return (uint8_t)(x * 3 + y * 2 + c * 40); }
static uint8_t noise(int x, int y, int c) { return (uint8_t)((x * 131 + y * 71 + c * 29) ^ (x * y)); }
static uint8_t flat(int x, int y, int c) { (void)x; (void)y; return (uint8_t)(50 + c * 60); }
static uint8_t checker(int x, int y, int c) { (void)c; return ((x + y) & 1) ? 255 : 0; }

static uint8_t px(const mp_image *img, int x, int y, int c)
{
	return img->px[((size_t)y * img->width + x) * 3 + c];
}

static void png_round_trip_exact(void **state)
{
	(void)state;
	mp_image a, b;
	mp_error e;
	make(&a, 37, 23, noise);
	uint8_t *buf;
	size_t len;
	assert_int_equal(mp_image_encode_png(&a, 6, &buf, &len, &e), 0);
	assert_int_equal(mp_image_sniff(buf, len), MP_ENC_PNG);
	mp_codec *c = mp_codec_new(&e);
	assert_int_equal(mp_image_decode(c, buf, len, 1 << 20, &b, &e), 0);
	assert_int_equal(b.width, 37);
	assert_int_equal(b.height, 23);
	assert_memory_equal(a.px, b.px, 37 * 23 * 3);
	/* every truncation of the file is an error, never a partial image */
	for (size_t cut = 0; cut < len; cut += 7) {
		mp_image t;
		assert_int_equal(mp_image_decode(c, buf, cut, 1 << 20, &t, &e), -1);
	}
	free(buf);
	mp_image_free(&a);
	mp_image_free(&b);
	mp_codec_free(c);
}

static void jpeg_round_trip_close(void **state)
{
	(void)state;
	mp_image a, b;
	mp_error e;
	make(&a, 64, 48, smooth);
	mp_codec *c = mp_codec_new(&e);
	uint8_t *buf;
	size_t len;
	assert_int_equal(mp_image_encode_jpeg(c, &a, 95, &buf, &len, &e), 0);
	assert_int_equal(mp_image_sniff(buf, len), MP_ENC_JPEG);
	assert_int_equal(mp_image_decode(c, buf, len, 1 << 20, &b, &e), 0);
	double err = 0;
	for (size_t i = 0; i < 64 * 48 * 3; i++)
		err += abs((int)a.px[i] - (int)b.px[i]);
	assert_true(err / (64 * 48 * 3) < 2.0);
	/* a truncated JPEG is an error, not a grey-filled image */
	mp_image t;
	assert_int_equal(mp_image_decode(c, buf, len / 2, 1 << 20, &t, &e), -1);
	free(buf);
	mp_image_free(&a);
	mp_image_free(&b);
	mp_codec_free(c);
}

static void decode_refuses(void **state)
{
	(void)state;
	mp_error e;
	mp_image t;
	mp_codec *c = mp_codec_new(&e);
	assert_int_equal(mp_image_decode(c, (const uint8_t *)"", 0, 100, &t, &e), -1);
	assert_string_equal(e.msg, "empty file");
	assert_int_equal(mp_image_decode(c, (const uint8_t *)"GIF89a....", 10, 100, &t, &e), -1);
	assert_string_equal(e.msg, "not a JPEG or PNG file");
	/* too many pixels for the limit: refused from the header */
	mp_image a;
	make(&a, 40, 30, flat);
	uint8_t *buf;
	size_t len;
	assert_int_equal(mp_image_encode_png(&a, 1, &buf, &len, &e), 0);
	assert_int_equal(mp_image_decode(c, buf, len, 40 * 30 - 1, &t, &e), -1);
	assert_non_null(strstr(e.msg, "--max-pixels"));
	free(buf);
	assert_int_equal(mp_image_encode_jpeg(c, &a, 80, &buf, &len, &e), 0);
	assert_int_equal(mp_image_decode(c, buf, len, 40 * 30 - 1, &t, &e), -1);
	assert_non_null(strstr(e.msg, "--max-pixels"));
	free(buf);
	mp_image_free(&a);
	mp_codec_free(c);
}

static void resize_identity_and_constant(void **state)
{
	(void)state;
	mp_image a, b;
	mp_error e;
	make(&a, 31, 17, noise);
	assert_int_equal(mp_image_resize(&a, 31, 17, &b, &e), 0);
	assert_memory_equal(a.px, b.px, 31 * 17 * 3);
	mp_image_free(&b);
	mp_image_free(&a);
	int sizes[][2] = {{1, 1}, {5, 9}, {64, 64}, {200, 37}, {112, 112}};
	make(&a, 50, 40, flat);
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		assert_int_equal(mp_image_resize(&a, sizes[i][0], sizes[i][1], &b, &e), 0);
		for (int y = 0; y < b.height; y++)
			for (int x = 0; x < b.width; x++)
				for (int c = 0; c < 3; c++)
					assert_int_equal(px(&b, x, y, c), 50 + c * 60);
		mp_image_free(&b);
	}
	mp_image_free(&a);
}

static void resize_downscale_antialiases(void **state)
{
	(void)state;
	mp_image a, b;
	mp_error e;
	make(&a, 128, 128, checker);
	assert_int_equal(mp_image_resize(&a, 16, 16, &b, &e), 0);
	for (int y = 0; y < 16; y++)
		for (int x = 0; x < 16; x++)
			assert_in_range(px(&b, x, y, 0), 124, 131);
	mp_image_free(&b);
	/* a huge shrink takes the two-step path and still averages */
	mp_image_free(&a);
	make(&a, 2000, 10, checker);
	assert_int_equal(mp_image_resize(&a, 10, 10, &b, &e), 0);
	for (int x = 0; x < 10; x++)
		assert_in_range(px(&b, x, 5, 1), 120, 135);
	mp_image_free(&b);
	mp_image_free(&a);
}

/* A region of a resize is the same bytes as the whole resize, cropped:
 * scaled up (the training crops), down, past the two-step shrink, at the
 * edges and whole; a region outside the image is refused. */
static void resize_region_is_a_crop(void **state)
{
	(void)state;
	static const struct {
		int sw, sh, w, h, x0, y0, rw, rh;
	} cases[] = {
		{128, 128, 240, 240, 64, 91, 112, 112}, /* the recipe's largest scale */
		{128, 96, 171, 128, 59, 16, 112, 112},	/* non-square, mid scale */
		{128, 128, 128, 128, 0, 0, 128, 128},	/* same size, whole */
		{50, 40, 17, 13, 3, 5, 9, 8},		/* down */
		{2000, 10, 10, 10, 7, 0, 3, 10},	/* two-step shrink */
		{31, 17, 97, 60, 96, 59, 1, 1},		/* the last pixel */
		{31, 17, 97, 60, 0, 0, 97, 60},		/* whole, up */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		mp_image src, full, part;
		mp_error e;
		make(&src, cases[i].sw, cases[i].sh, i == 4 ? checker : noise);
		assert_int_equal(mp_image_resize(&src, cases[i].w, cases[i].h, &full, &e), 0);
		assert_int_equal(mp_image_resize_region(&src, cases[i].w, cases[i].h, cases[i].x0,
							cases[i].y0, cases[i].rw, cases[i].rh, &part,
							&e),
				 0);
		assert_int_equal(part.width, cases[i].rw);
		assert_int_equal(part.height, cases[i].rh);
		for (int y = 0; y < part.height; y++)
			assert_memory_equal(part.px + (size_t)y * part.width * 3,
					    full.px + ((size_t)(cases[i].y0 + y) * full.width +
						       cases[i].x0) * 3,
					    (size_t)part.width * 3);
		mp_image_free(&part);
		mp_image_free(&full);
		mp_image_free(&src);
	}
	mp_image src, part;
	mp_error e;
	make(&src, 20, 20, noise);
	assert_int_equal(mp_image_resize_region(&src, 40, 40, 30, 0, 11, 5, &part, &e), -1);
	assert_string_equal(e.msg, "region 11x5 at (30, 0) is not inside 40x40");
	assert_int_equal(mp_image_resize_region(&src, 40, 40, -1, 0, 5, 5, &part, &e), -1);
	assert_int_equal(mp_image_resize_region(&src, 40, 40, 0, 0, 0, 5, &part, &e), -1);
	mp_image_free(&src);
}

static void fit_pad_crop_stretch(void **state)
{
	(void)state;
	mp_image a, b;
	mp_error e;
	int changed;
	make(&a, 20, 10, flat);
	/* pad: 16x8 content centred, zero rows above and below */
	assert_int_equal(mp_image_fit(&a, 16, MP_FIT_PAD, 0, MP_FILL_ZERO, &b, &changed, &e), 0);
	assert_true(changed);
	assert_int_equal(b.width, 16);
	assert_int_equal(b.height, 16);
	for (int x = 0; x < 16; x++) {
		assert_int_equal(px(&b, x, 0, 1), 0);
		assert_int_equal(px(&b, x, 3, 2), 0);
		assert_int_equal(px(&b, x, 4, 1), 110);
		assert_int_equal(px(&b, x, 11, 2), 170);
		assert_int_equal(px(&b, x, 12, 0), 0);
	}
	mp_image_free(&b);
	/* mean fill is the content's own mean colour */
	assert_int_equal(mp_image_fit(&a, 16, MP_FIT_PAD, 0, MP_FILL_MEAN, &b, &changed, &e), 0);
	assert_int_equal(px(&b, 3, 0, 0), 50);
	assert_int_equal(px(&b, 3, 15, 2), 170);
	mp_image_free(&b);
	/* crop and stretch of a flat image leave no border */
	assert_int_equal(mp_image_fit(&a, 16, MP_FIT_CROP, 0, MP_FILL_ZERO, &b, &changed, &e), 0);
	assert_int_equal(px(&b, 0, 0, 0), 50);
	assert_int_equal(px(&b, 15, 15, 2), 170);
	mp_image_free(&b);
	assert_int_equal(mp_image_fit(&a, 16, MP_FIT_STRETCH, 0, MP_FILL_ZERO, &b, &changed, &e), 0);
	assert_int_equal(px(&b, 0, 0, 1), 110);
	assert_int_equal(px(&b, 15, 15, 1), 110);
	mp_image_free(&b);
	mp_image_free(&a);
}

/* flat in 8 columns around x = 2^22, black elsewhere */
static uint8_t middle(int x, int y, int c)
{
	return x >= (1 << 22) - 4 && x < (1 << 22) + 4 ? flat(x, y, c) : 0;
}

static void fit_crop_keeps_the_centre_of_a_very_wide_image(void **state)
{
	(void)state;
	mp_image a, b, full;
	mp_error e;
	int changed;
	/* a crop computes only the square it keeps, with the bytes of a
	 * whole resize then a crop */
	make(&a, 300, 7, noise);
	assert_int_equal(mp_image_fit(&a, 16, MP_FIT_CROP, 0, MP_FILL_ZERO, &b, &changed, &e), 0);
	assert_int_equal(mp_image_resize(&a, 686, 16, &full, &e), 0); /* 300 x 16 / 7 */
	for (int y = 0; y < 16; y++)
		assert_memory_equal(b.px + (size_t)y * 16 * 3, full.px + ((size_t)y * 686 + 335) * 3,
				    16 * 3);
	mp_image_free(&full);
	mp_image_free(&b);
	mp_image_free(&a);
	/* 2^23 x 1 cropped to 256: scaled, it is 2^31 pixels wide, and
	 * the square kept is the middle source pixel's */
	make(&a, 1 << 23, 1, middle);
	assert_int_equal(mp_image_fit(&a, 256, MP_FIT_CROP, 0, MP_FILL_ZERO, &b, &changed, &e), 0);
	assert_int_equal(b.width, 256);
	assert_int_equal(b.height, 256);
	for (int c = 0; c < 3; c++) {
		assert_int_equal(px(&b, 0, 0, c), 50 + c * 60);
		assert_int_equal(px(&b, 255, 255, c), 50 + c * 60);
	}
	mp_image_free(&b);
	mp_image_free(&a);
}

static void fit_border_and_passthrough(void **state)
{
	(void)state;
	mp_image a, b;
	mp_error e;
	int changed;
	make(&a, 8, 8, noise);
	assert_int_equal(mp_image_fit(&a, 8, MP_FIT_PAD, 0, MP_FILL_ZERO, &b, &changed, &e), 0);
	assert_false(changed);
	assert_memory_equal(a.px, b.px, 8 * 8 * 3);
	mp_image_free(&b);
	/* a border of 2 with edge replication copies the outer pixels */
	assert_int_equal(mp_image_fit(&a, 8, MP_FIT_PAD, 2, MP_FILL_EDGE, &b, &changed, &e), 0);
	assert_true(changed);
	assert_int_equal(b.width, 12);
	for (int c = 0; c < 3; c++) {
		assert_int_equal(px(&b, 0, 0, c), px(&a, 0, 0, c));
		assert_int_equal(px(&b, 11, 11, c), px(&a, 7, 7, c));
		assert_int_equal(px(&b, 5, 0, c), px(&a, 3, 0, c));
		assert_int_equal(px(&b, 5, 5, c), px(&a, 3, 3, c));
	}
	mp_image_free(&b);
	mp_image_free(&a);
}

static void channel_sums_match_a_plain_loop(void **state)
{
	(void)state;
	/* lengths around the 16-pixel blocks and the 257-block fold */
	size_t lengths[] = {0, 1, 15, 16, 17, 257 * 16, 257 * 16 + 5, 128 * 128, 300001};
	uint8_t *px = malloc(300001 * 3);
	assert_non_null(px);
	for (size_t i = 0; i < 300001 * 3; i++)
		px[i] = (uint8_t)(i * 2654435761u >> 13);
	memset(px, 255, 257 * 48); /* saturated blocks: the worst case for 16 bits */
	for (size_t t = 0; t < sizeof lengths / sizeof lengths[0]; t++) {
		uint64_t got[3] = {1, 2, 3}, want[3] = {1, 2, 3};
		mp_image_channel_sums(px, lengths[t], got);
		for (size_t i = 0; i < lengths[t] * 3; i++)
			want[i % 3] += px[i];
		for (int c = 0; c < 3; c++)
			assert_int_equal(got[c], want[c]);
	}
	free(px);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(png_round_trip_exact),
		cmocka_unit_test(jpeg_round_trip_close),
		cmocka_unit_test(decode_refuses),
		cmocka_unit_test(resize_identity_and_constant),
		cmocka_unit_test(resize_downscale_antialiases),
		cmocka_unit_test(resize_region_is_a_crop),
		cmocka_unit_test(fit_pad_crop_stretch),
		cmocka_unit_test(fit_crop_keeps_the_centre_of_a_very_wide_image),
		cmocka_unit_test(fit_border_and_passthrough),
		cmocka_unit_test(channel_sums_match_a_plain_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
