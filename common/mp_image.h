/* Images in memory (8-bit RGB, interleaved HWC), decoding JPEG and PNG into
 * them, resampling, fitting into a square with padding, and encoding. */
#ifndef MP_IMAGE_H
#define MP_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "mp_util.h"

typedef struct {
	int width, height, channels; /* channels is 3 (RGB) throughout */
	uint8_t *px;
} mp_image;

enum mp_encoding {
	MP_ENC_RAW = 0, /* uint8 HWC */
	MP_ENC_JPEG = 1,
	MP_ENC_PNG = 2,
};
const char *mp_encoding_name(int enc);

enum mp_fit { MP_FIT_PAD, MP_FIT_CROP, MP_FIT_STRETCH };
enum mp_fill { MP_FILL_MEAN, MP_FILL_ZERO, MP_FILL_EDGE };

/* A per-thread codec context: TurboJPEG handles are reused between images. */
typedef struct mp_codec mp_codec;
mp_codec *mp_codec_new(mp_error *e);
void mp_codec_free(mp_codec *c);

/* Which container the bytes hold (MP_ENC_JPEG / MP_ENC_PNG), or -1. */
int mp_image_sniff(const uint8_t *buf, size_t len);

/* Decodes a JPEG (gray, RGB, CMYK/YCCK) or PNG (gray, palette, 16-bit,
 * alpha, interlaced) into RGB. Dimensions are read from the header and
 * refused above max_pixels before any pixel memory is allocated. */
int mp_image_decode(mp_codec *c, const uint8_t *buf, size_t len,
		    uint64_t max_pixels, mp_image *out, mp_error *e);
/* Decodes a stored payload of the given encoding (raw needs w, h). */
int mp_image_decode_payload(mp_codec *c, int encoding, const uint8_t *buf,
			    size_t len, int width, int height, uint64_t max_pixels,
			    mp_image *out, mp_error *e);

int mp_image_alloc(mp_image *img, int width, int height, mp_error *e);
void mp_image_free(mp_image *img);

/* Antialiased bicubic (Catmull-Rom) resampling to any size, up or down. */
int mp_image_resize(const mp_image *src, int width, int height, mp_image *dst,
		    mp_error *e);
/* The w x h region at (x0, y0) of src resized to width x height: the same
 * bytes as mp_image_resize then a crop, at the cost of the region (a
 * random crop of a scaled-up image computes only the crop). width and
 * height may pass INT_MAX; w and h may not. */
int mp_image_resize_region(const mp_image *src, int64_t width, int64_t height, int64_t x0,
			   int64_t y0, int w, int h, mp_image *dst, mp_error *e);

/* The resize's plan for one axis, for a caller that resamples elsewhere
 * (a GPU): resizing in pixels to out, output position first + j (j < n)
 * is the sum over k < count[j] of weight[j * stride + k] times input
 * pixel start[j] + k, as mp_image_resize_region computes it when it
 * resizes in one step (no side shrinks more than 60 times). stride must
 * be at least mp_image_resize_taps(in, out), which never grows with out. */
int mp_image_resize_taps(int in, int64_t out);
int mp_image_resize_axis(int in, int64_t out, int64_t first, int n, int stride, int32_t *start,
			 int32_t *count, float *weight, mp_error *e);

/* Brings src to size x size by fit, then adds a border of pad pixels on
 * every side; fill says what the padding holds. If no resize or pad is
 * needed, *changed is 0 and dst is a copy. */
int mp_image_fit(const mp_image *src, int size, enum mp_fit fit, int pad,
		 enum mp_fill fill, mp_image *dst, int *changed, mp_error *e);

/* Adds each channel's pixel values of an RGB buffer to sum[0..2]. */
void mp_image_channel_sums(const uint8_t *px, size_t npixels, uint64_t sum[3]);

/* Encoders return a malloc'ed buffer. */
int mp_image_encode_jpeg(mp_codec *c, const mp_image *img, int quality,
			 uint8_t **buf, size_t *len, mp_error *e);
int mp_image_encode_png(const mp_image *img, int level, uint8_t **buf,
			size_t *len, mp_error *e);

#endif
