#include "mp_image.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "backend.h" /* mp_augment_byte, the rounding the backends share */

#ifdef __SSE2__
#include <emmintrin.h>
#endif

struct mp_codec {
	tjhandle dec;
	tjhandle enc;
};

const char *mp_encoding_name(int enc)
{
	switch (enc) {
	case MP_ENC_RAW: return "raw";
	case MP_ENC_JPEG: return "jpeg";
	case MP_ENC_PNG: return "png";
	default: return "unknown";
	}
}

mp_codec *mp_codec_new(mp_error *e)
{
	mp_codec *c = calloc(1, sizeof *c);
	if (!c) {
		mp_seterr(e, "out of memory");
		return NULL;
	}
	c->dec = tjInitDecompress();
	if (!c->dec) {
		mp_seterr(e, "TurboJPEG: %s", tjGetErrorStr2(NULL));
		free(c);
		return NULL;
	}
	return c;
}

void mp_codec_free(mp_codec *c)
{
	if (!c)
		return;
	if (c->dec)
		tjDestroy(c->dec);
	if (c->enc)
		tjDestroy(c->enc);
	free(c);
}

int mp_image_sniff(const uint8_t *buf, size_t len)
{
	static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	if (len >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff)
		return MP_ENC_JPEG;
	if (len >= 8 && !memcmp(buf, png_sig, 8))
		return MP_ENC_PNG;
	return -1;
}

int mp_image_alloc(mp_image *img, int width, int height, mp_error *e)
{
	img->width = width;
	img->height = height;
	img->channels = 3;
	img->px = malloc((size_t)width * (size_t)height * 3);
	if (!img->px)
		return mp_seterr(e, "out of memory for a %dx%d image", width, height);
	return 0;
}

void mp_image_free(mp_image *img)
{
	free(img->px);
	img->px = NULL;
	img->width = img->height = 0;
}

static int check_dims(uint64_t w, uint64_t h, uint64_t max_pixels, mp_error *e)
{
	if (w == 0 || h == 0)
		return mp_seterr(e, "image has zero size (%llux%llu)",
				 (unsigned long long)w, (unsigned long long)h);
	if (w * h > max_pixels)
		return mp_seterr(e, "%llux%llu pixels is more than --max-pixels %llu",
				 (unsigned long long)w, (unsigned long long)h,
				 (unsigned long long)max_pixels);
	return 0;
}

/* TurboJPEG 2.1 leaves a handle whose header could not be read in the
 * middle of the header, and every later image then fails on it too: after
 * an error the next image gets a fresh handle. */
static void reset_decoder(mp_codec *c)
{
	tjDestroy(c->dec);
	c->dec = tjInitDecompress(); /* NULL is retried by the next decode */
}

/* Decodes into dst as pf, stopping at the JPEG library's first warning,
 * with one exception: stray bytes before the end marker, which the
 * library reports only once every scan has been read (the pixels are
 * whole; Pillow and libjpeg's djpeg read such files too, common in
 * collections gathered from the web). The first warning being that one,
 * no other came before it, and the image is decoded again past it. */
/* More than 500 progressive scans are refused (TurboJPEG's limit): each
 * scan costs a pass over every block, so a valid JPEG of a few hundred KB
 * in thousands of scans took 100 s to decode at 8192x8192; the usual
 * progressive JPEG has about ten. */
#ifdef TJFLAG_LIMITSCANS
#define JPEG_FLAGS TJFLAG_LIMITSCANS
#else
#define JPEG_FLAGS 0
#endif

static int jpeg_pixels(mp_codec *c, const uint8_t *buf, size_t len, uint8_t *dst, int w,
		       int h, int pf, mp_error *e)
{
	if (tjDecompress2(c->dec, buf, (unsigned long)len, dst, w, 0, h, pf,
			  JPEG_FLAGS | TJFLAG_STOPONWARNING) == 0)
		return 0;
	const char *msg = tjGetErrorStr2(c->dec);
	static const char stray[] = " extraneous bytes before marker 0xd9";
	const size_t n = strlen(msg);
	if (tjGetErrorCode(c->dec) == TJERR_WARNING && !strncmp(msg, "Corrupt JPEG data: ", 19) &&
	    n > sizeof stray - 1 && !strcmp(msg + n - (sizeof stray - 1), stray)) {
		reset_decoder(c);
		if (!c->dec)
			return mp_seterr(e, "TurboJPEG: %s", tjGetErrorStr2(NULL));
		if (tjDecompress2(c->dec, buf, (unsigned long)len, dst, w, 0, h, pf, JPEG_FLAGS) == 0 ||
		    tjGetErrorCode(c->dec) == TJERR_WARNING)
			return 0;
		msg = tjGetErrorStr2(c->dec);
	}
	mp_seterr(e, "bad JPEG data: %s", msg);
	reset_decoder(c);
	return -1;
}

static int decode_jpeg(mp_codec *c, const uint8_t *buf, size_t len,
		       uint64_t max_pixels, mp_image *out, mp_error *e)
{
	int w = 0, h = 0, subsamp = 0, colorspace = -1;
	if (!c->dec && !(c->dec = tjInitDecompress()))
		return mp_seterr(e, "TurboJPEG: %s", tjGetErrorStr2(NULL));
	/* TurboJPEG 2.1 fails the header of sampling factors outside its list
	 * (4:1:0, 1x4, a different factor per chroma component) after it has
	 * read the size and colour space, and its decoder reads those images
	 * as libjpeg does: only that failure lets the decode go on. */
	if (tjDecompressHeader3(c->dec, buf, (unsigned long)len, &w, &h, &subsamp,
				&colorspace) < 0 &&
	    !(subsamp < 0 && w > 0 && h > 0 && colorspace >= 0)) {
		mp_seterr(e, "bad JPEG header: %s", tjGetErrorStr2(c->dec));
		reset_decoder(c);
		return -1;
	}
	if (check_dims((uint64_t)w, (uint64_t)h, max_pixels, e) < 0)
		return -1;
	int cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
	if (cmyk) {
		uint8_t *tmp = malloc((size_t)w * (size_t)h * 4);
		if (!tmp)
			return mp_seterr(e, "out of memory for a %dx%d image", w, h);
		if (jpeg_pixels(c, buf, len, tmp, w, h, TJPF_CMYK, e) < 0) {
			free(tmp);
			return -1;
		}
		if (mp_image_alloc(out, w, h, e) < 0) {
			free(tmp);
			return -1;
		}
		/* Adobe CMYK JPEGs store inverted ink values, so the RGB value is
		 * the product of the stored (inverted) channel and key. */
		size_t n = (size_t)w * (size_t)h;
		for (size_t i = 0; i < n; i++) {
			unsigned k = tmp[4 * i + 3];
			for (int ch = 0; ch < 3; ch++)
				out->px[3 * i + ch] =
					(uint8_t)((tmp[4 * i + ch] * k + 127) / 255);
		}
		free(tmp);
		return 0;
	}
	if (mp_image_alloc(out, w, h, e) < 0)
		return -1;
	if (jpeg_pixels(c, buf, len, out->px, w, h, TJPF_RGB, e) < 0) {
		mp_image_free(out);
		return -1;
	}
	return 0;
}

/* libpng reports errors by longjmp; this carries the message and the input. */
typedef struct {
	const uint8_t *buf;
	size_t len, pos;
	char msg[256];
	jmp_buf jmp;
} png_src;

static void png_on_error(png_structp png, png_const_charp msg)
{
	png_src *s = png_get_error_ptr(png);
	snprintf(s->msg, sizeof s->msg, "%s", msg);
	longjmp(s->jmp, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
	(void)png;
	(void)msg; /* benign (e.g. an unknown sRGB profile): the pixels are fine */
}

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n)
{
	png_src *s = png_get_io_ptr(png);
	if (n > s->len - s->pos)
		png_error(png, "file is truncated");
	memcpy(dst, s->buf + s->pos, n);
	s->pos += n;
}

static int decode_png(const uint8_t *buf, size_t len, uint64_t max_pixels,
		      mp_image *out, mp_error *e)
{
	png_src src = {.buf = buf, .len = len, .pos = 0};
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src,
						 png_on_error, png_on_warning);
	if (!png)
		return mp_seterr(e, "out of memory");
	png_infop info = png_create_info_struct(png);
	/* Touched after setjmp, so kept in volatile storage. */
	png_bytep *volatile rows = NULL;
	uint8_t *volatile px = NULL;
	if (!info) {
		png_destroy_read_struct(&png, NULL, NULL);
		return mp_seterr(e, "out of memory");
	}
	if (setjmp(src.jmp)) {
		mp_seterr(e, "bad PNG: %s", src.msg);
		free(rows);
		free(px);
		png_destroy_read_struct(&png, &info, NULL);
		return -1;
	}
	png_set_read_fn(png, &src, png_read_mem);
	png_set_user_limits(png, 1u << 24, 1u << 24);
	png_read_info(png, info);
	png_uint_32 w = png_get_image_width(png, info);
	png_uint_32 h = png_get_image_height(png, info);
	if (check_dims(w, h, max_pixels, e) < 0) {
		png_destroy_read_struct(&png, &info, NULL);
		return -1;
	}
	int color = png_get_color_type(png, info);
	png_set_expand(png); /* palette and low-bit gray to 8 bit, tRNS to alpha */
	png_set_scale_16(png);
	if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA)
		png_set_gray_to_rgb(png);
	/* Alpha is dropped, as most image tools do when asked for RGB. */
	png_set_strip_alpha(png);
	png_set_interlace_handling(png);
	png_read_update_info(png, info);
	if (png_get_rowbytes(png, info) != (png_size_t)w * 3)
		png_error(png, "unexpected row layout after conversion to RGB");
	px = malloc((size_t)w * h * 3);
	rows = malloc(sizeof(png_bytep) * h);
	if (!px || !rows)
		png_error(png, "out of memory");
	for (png_uint_32 y = 0; y < h; y++)
		rows[y] = px + (size_t)y * w * 3;
	png_read_image(png, rows);
	png_read_end(png, NULL);
	png_destroy_read_struct(&png, &info, NULL);
	free(rows);
	out->width = (int)w;
	out->height = (int)h;
	out->channels = 3;
	out->px = px;
	return 0;
}

int mp_image_decode(mp_codec *c, const uint8_t *buf, size_t len,
		    uint64_t max_pixels, mp_image *out, mp_error *e)
{
	memset(out, 0, sizeof *out);
	switch (mp_image_sniff(buf, len)) {
	case MP_ENC_JPEG: return decode_jpeg(c, buf, len, max_pixels, out, e);
	case MP_ENC_PNG: return decode_png(buf, len, max_pixels, out, e);
	default:
		return mp_seterr(e, len ? "not a JPEG or PNG file" : "empty file");
	}
}

int mp_image_decode_payload(mp_codec *c, int encoding, const uint8_t *buf,
			    size_t len, int width, int height, uint64_t max_pixels,
			    mp_image *out, mp_error *e)
{
	memset(out, 0, sizeof *out);
	if (encoding == MP_ENC_RAW) {
		if (check_dims((uint64_t)width, (uint64_t)height, max_pixels, e) < 0)
			return -1;
		if ((uint64_t)width * (uint64_t)height * 3 != len)
			return mp_seterr(e, "raw payload of %zu bytes is not %dx%dx3",
					 len, width, height);
		if (mp_image_alloc(out, width, height, e) < 0)
			return -1;
		memcpy(out->px, buf, len);
		return 0;
	}
	int kind = mp_image_sniff(buf, len);
	if (kind != encoding)
		return mp_seterr(e, "payload is not %s data", mp_encoding_name(encoding));
	if (mp_image_decode(c, buf, len, max_pixels, out, e) < 0)
		return -1;
	if (out->width != width || out->height != height) {
		mp_seterr(e, "payload decodes to %dx%d, record says %dx%d", out->width,
			  out->height, width, height);
		mp_image_free(out);
		return -1;
	}
	return 0;
}

/* Catmull-Rom cubic (a = -0.5), the kernel of the usual "bicubic" resize. */
static double cubic(double x)
{
	const double a = -0.5;
	x = fabs(x);
	if (x < 1)
		return ((a + 2) * x - (a + 3)) * x * x + 1;
	if (x < 2)
		return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
	return 0;
}

typedef struct {
	int *start, *count;
	float *w; /* taps weights per output position, taps apart */
	int taps;
} resample_plan;

static void plan_free(resample_plan *p)
{
	free(p->start);
	free(p->count);
	free(p->w);
}

/* Weights for one axis resized from in to out pixels, for the n output
 * positions from first on (entry j is position first + j). When
 * shrinking, the kernel is stretched by the scale so every input pixel
 * contributes (antialiasing). out and first may pass INT_MAX: a crop of
 * a very wide image scaled up computes only n_out positions. */
static int plan_axis(int in, int64_t out, int64_t first, int n_out, resample_plan *p,
		     mp_error *e)
{
	double scale = (double)in / out;
	double fscale = scale > 1 ? scale : 1;
	double support = 2.0 * fscale;
	int taps = mp_image_resize_taps(in, out);
	p->taps = taps;
	p->start = malloc(sizeof(int) * (size_t)n_out);
	p->count = malloc(sizeof(int) * (size_t)n_out);
	p->w = malloc(sizeof(float) * (size_t)n_out * (size_t)taps);
	if (!p->start || !p->count || !p->w) {
		plan_free(p);
		return mp_seterr(e, "out of memory");
	}
	for (int j = 0; j < n_out; j++) {
		const int64_t i = first + j;
		double center = (i + 0.5) * scale;
		int lo = (int)floor(center - support + 0.5);
		int hi = (int)floor(center + support + 0.5);
		if (lo < 0)
			lo = 0;
		if (hi > in)
			hi = in;
		if (hi - lo > taps)
			hi = lo + taps;
		double sum = 0, wt[256];
		int n = hi - lo;
		for (int k = 0; k < n; k++) {
			wt[k] = cubic((lo + k + 0.5 - center) / fscale);
			sum += wt[k];
		}
		for (int k = 0; k < n; k++)
			p->w[(size_t)j * taps + k] = (float)(sum != 0 ? wt[k] / sum : 0);
		p->start[j] = lo;
		p->count[j] = n;
	}
	return 0;
}

int mp_image_resize_taps(int in, int64_t out)
{
	double scale = (double)in / out;
	return (int)ceil(2.0 * (scale > 1 ? scale : 1)) * 2 + 1;
}

int mp_image_resize_axis(int in, int64_t out, int64_t first, int n, int stride, int32_t *start,
			 int32_t *count, float *weight, mp_error *e)
{
	resample_plan p = {0};
	if (plan_axis(in, out, first, n, &p, e) < 0)
		return -1;
	if (p.taps > stride) {
		plan_free(&p);
		return mp_seterr(e, "resizing %d pixels to %lld takes %d taps, more than %d", in,
				 (long long)out, p.taps, stride);
	}
	for (int j = 0; j < n; j++) {
		start[j] = p.start[j];
		count[j] = p.count[j];
		memcpy(weight + (size_t)j * stride, p.w + (size_t)j * p.taps,
		       sizeof(float) * (size_t)p.count[j]);
	}
	plan_free(&p);
	return 0;
}

/* The input pixels [lo, hi) that the plan's n outputs read. */
static void plan_span(const resample_plan *p, int n, int *lo, int *hi)
{
	*lo = p->start[0];
	*hi = *lo;
	for (int j = 0; j < n; j++) {
		if (p->start[j] < *lo)
			*lo = p->start[j];
		if (p->start[j] + p->count[j] > *hi)
			*hi = p->start[j] + p->count[j];
	}
}


/* One source row's horizontal pass for the plan's n outputs, which read
 * its pixels c0 to c1 - 1: out[3 x + c] is the sum over the taps of
 * weight * pixel, in tap order, as floats. With SSE2 a pixel's three
 * channels go through one register (the same products and sums, lane by
 * lane); pixels (4 floats per source pixel read) is scratch, and the last
 * output's store writes one float past out[3 n]. */
static void horizontal_pass(const uint8_t *row, int c0, int c1, const resample_plan *p, int n,
			    float *pixels, float *out)
{
#ifdef __SSE2__
	const __m128i zero = _mm_setzero_si128();
	pixels -= 4 * (size_t)c0;
	for (int i = c0; i < c1; i++) {
		__m128i v = _mm_cvtsi32_si128(row[3 * i] | row[3 * i + 1] << 8 | row[3 * i + 2] << 16);
		v = _mm_unpacklo_epi16(_mm_unpacklo_epi8(v, zero), zero);
		_mm_storeu_ps(pixels + 4 * i, _mm_cvtepi32_ps(v));
	}
	for (int x = 0; x < n; x++) {
		const float *wt = p->w + (size_t)x * p->taps;
		const float *s = pixels + 4 * (size_t)p->start[x];
		__m128 sum = _mm_setzero_ps();
		for (int k = 0; k < p->count[x]; k++)
			sum = _mm_add_ps(sum, _mm_mul_ps(_mm_set1_ps(wt[k]), _mm_loadu_ps(s + 4 * k)));
		_mm_storeu_ps(out + 3 * x, sum);
	}
#else
	(void)c0;
	(void)c1;
	(void)pixels;
	for (int x = 0; x < n; x++) {
		const float *wt = p->w + (size_t)x * p->taps;
		const uint8_t *s = row + (size_t)p->start[x] * 3;
		float r = 0, g = 0, b = 0;
		for (int k = 0; k < p->count[x]; k++) {
			r += wt[k] * s[3 * k];
			g += wt[k] * s[3 * k + 1];
			b += wt[k] * s[3 * k + 2];
		}
		out[3 * x] = r;
		out[3 * x + 1] = g;
		out[3 * x + 2] = b;
	}
#endif
}

/* One output row: value x is the sum over the taps of weight k times
 * rows[k * stride + x], in tap order, rounded to a byte. */
static void vertical_pass(const float *rows, size_t stride, const float *wt, int count, size_t n,
			  uint8_t *out)
{
	size_t x = 0;
#ifdef __SSE2__
	/* 16 values at a time; min/max then + 0.5 and truncation give
	 * mp_augment_byte's bytes for every finite value */
	const __m128 lo = _mm_setzero_ps(), hi = _mm_set1_ps(255), half = _mm_set1_ps(0.5f);
	for (; x + 16 <= n; x += 16) {
		__m128i q[4];
		for (int j = 0; j < 4; j++) {
			__m128 sum = _mm_setzero_ps();
			for (int k = 0; k < count; k++)
				sum = _mm_add_ps(sum, _mm_mul_ps(_mm_set1_ps(wt[k]),
								  _mm_loadu_ps(rows + k * stride + x + 4 * j)));
			sum = _mm_add_ps(_mm_min_ps(_mm_max_ps(sum, lo), hi), half);
			q[j] = _mm_cvttps_epi32(sum);
		}
		__m128i bytes = _mm_packus_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3]));
		_mm_storeu_si128((__m128i *)(out + x), bytes);
	}
#endif
	for (; x < n; x++) {
		float sum = 0;
		for (int k = 0; k < count; k++)
			sum += wt[k] * rows[k * stride + x];
		out[x] = mp_augment_byte(sum);
	}
}

int mp_image_resize(const mp_image *src, int width, int height, mp_image *dst,
		    mp_error *e)
{
	return mp_image_resize_region(src, width, height, 0, 0, width, height, dst, e);
}

int mp_image_resize_region(const mp_image *src, int64_t width, int64_t height, int64_t x0,
			   int64_t y0, int w, int h, mp_image *dst, mp_error *e)
{
	memset(dst, 0, sizeof *dst);
	if (width < 1 || height < 1)
		return mp_seterr(e, "cannot resize to %lldx%lld", (long long)width,
				 (long long)height);
	if (w < 1 || h < 1 || x0 < 0 || y0 < 0 || x0 > width - w || y0 > height - h)
		return mp_seterr(e, "region %dx%d at (%lld, %lld) is not inside %lldx%lld", w, h,
				 (long long)x0, (long long)y0, (long long)width, (long long)height);
	/* Kernel radius 2 times the shrink factor must fit plan_axis' stack
	 * table: shrinking by more than 60x is done in two steps. */
	if (src->width > 60 * width || src->height > 60 * height) {
		mp_image mid; /* smaller than src on the axes it shrinks */
		int mw = src->width > 60 * width ? (int)width * 30 : src->width;
		int mh = src->height > 60 * height ? (int)height * 30 : src->height;
		if (mp_image_resize(src, mw, mh, &mid, e) < 0)
			return -1;
		int rc = mp_image_resize_region(&mid, width, height, x0, y0, w, h, dst, e);
		mp_image_free(&mid);
		return rc;
	}
	/* Only the region's columns and the source rows that its rows read
	 * are computed, each value with the same taps in the same order as
	 * the whole image's: the same bytes as resizing, then cropping. */
	resample_plan ph = {0}, pv = {0};
	float *tmp = NULL;
	if (plan_axis(src->width, width, x0, w, &ph, e) < 0)
		return -1;
	if (plan_axis(src->height, height, y0, h, &pv, e) < 0) {
		plan_free(&ph);
		return -1;
	}
	int r0, r1, c0, c1;
	plan_span(&pv, h, &r0, &r1);
	plan_span(&ph, w, &c0, &c1);
	const size_t rowlen = (size_t)w * 3;
	const int nrows = r1 > r0 ? r1 - r0 : 1;
	/* the source rows' horizontal pass (rowlen floats each, and 4 spare
	 * for the last pixel's 4-float store), then the columns that one
	 * source row gives, as floats */
	tmp = malloc(sizeof(float) * ((size_t)nrows * rowlen + 4 + 4 * (size_t)(c1 - c0 + 1)));
	if (!tmp || mp_image_alloc(dst, w, h, e) < 0) {
		free(tmp);
		plan_free(&ph);
		plan_free(&pv);
		return mp_seterr(e, "out of memory resizing to %dx%d", w, h);
	}
	float *pixels = tmp + (size_t)nrows * rowlen + 4;
	for (int y = r0; y < r1; y++)
		horizontal_pass(src->px + (size_t)y * src->width * 3, c0, c1, &ph, w, pixels,
				tmp + (size_t)(y - r0) * rowlen);
	for (int y = 0; y < h; y++)
		vertical_pass(tmp + (size_t)(pv.start[y] - r0) * rowlen, rowlen, pv.w + (size_t)y * pv.taps,
			      pv.count[y], rowlen, dst->px + (size_t)y * rowlen);
	free(tmp);
	plan_free(&ph);
	plan_free(&pv);
	return 0;
}

void mp_image_channel_sums(const uint8_t *px, size_t npixels, uint64_t sum[3])
{
	size_t nbytes = npixels * 3, i = 0;
#ifdef __SSE2__
	/* 48 bytes (16 pixels) at a time into six registers of 16-bit lanes;
	 * lane j of register r holds channel (8 r + j) % 3. At most 257
	 * blocks of 255 fit in 16 bits before they are folded. */
	while (nbytes - i >= 48) {
		__m128i acc[6], zero = _mm_setzero_si128();
		for (int r = 0; r < 6; r++)
			acc[r] = zero;
		for (int b = 0; b < 257 && nbytes - i >= 48; b++, i += 48) {
			for (int v = 0; v < 3; v++) {
				__m128i x = _mm_loadu_si128((const __m128i *)(px + i + 16 * v));
				acc[2 * v] = _mm_add_epi16(acc[2 * v], _mm_unpacklo_epi8(x, zero));
				acc[2 * v + 1] = _mm_add_epi16(acc[2 * v + 1], _mm_unpackhi_epi8(x, zero));
			}
		}
		uint16_t lanes[48];
		for (int r = 0; r < 6; r++)
			_mm_storeu_si128((__m128i *)(lanes + 8 * r), acc[r]);
		for (int k = 0; k < 48; k++)
			sum[k % 3] += lanes[k];
	}
#endif
	for (; i < nbytes; i++)
		sum[i % 3] += px[i];
}

static int copy_image(const mp_image *src, mp_image *dst, mp_error *e)
{
	if (mp_image_alloc(dst, src->width, src->height, e) < 0)
		return -1;
	memcpy(dst->px, src->px, (size_t)src->width * src->height * 3);
	return 0;
}

static int64_t round_dim(double v)
{
	int64_t r = (int64_t)floor(v + 0.5);
	return r < 1 ? 1 : r;
}

int mp_image_fit(const mp_image *src, int size, enum mp_fit fit, int pad,
		 enum mp_fill fill, mp_image *dst, int *changed, mp_error *e)
{
	memset(dst, 0, sizeof *dst);
	*changed = 0;
	if (src->width == size && src->height == size && pad == 0)
		return copy_image(src, dst, e);
	*changed = 1;

	/* First the content: the scaled image, of which crop keeps the
	 * centre, and where it sits. */
	int64_t sw = src->width, sh = src->height;
	switch (fit) {
	case MP_FIT_STRETCH:
		sw = sh = size;
		break;
	case MP_FIT_CROP: {
		double s = (double)size / (sw < sh ? sw : sh);
		int64_t nw = sw < sh ? size : round_dim((double)sw * s);
		int64_t nh = sw < sh ? round_dim((double)sh * s) : size;
		sw = nw < size ? size : nw;
		sh = nh < size ? size : nh;
		break;
	}
	case MP_FIT_PAD: {
		double s = (double)size / (sw > sh ? sw : sh);
		int64_t nw = sw >= sh ? size : round_dim((double)sw * s);
		int64_t nh = sw >= sh ? round_dim((double)sh * s) : size;
		sw = nw;
		sh = nh;
		break;
	}
	}
	int vw = fit == MP_FIT_CROP ? size : (int)sw, vh = fit == MP_FIT_CROP ? size : (int)sh;
	int64_t sx = (sw - vw) / 2, sy = (sh - vh) / 2;
	mp_image content = {0};
	if (sw == src->width && sh == src->height) {
		content = *src; /* borrowed, not freed */
	} else {
		/* Only the part kept is computed: the scaled width of a very
		 * wide image cropped may not even fit in an int. */
		if (mp_image_resize_region(src, sw, sh, sx, sy, vw, vh, &content, e) < 0)
			return -1;
		sx = sy = 0;
	}
	const int cw = content.width;
	int total = size + 2 * pad;
	int ox = pad + (size - vw) / 2, oy = pad + (size - vh) / 2;

	uint8_t fillc[3] = {0, 0, 0};
	if (fill == MP_FILL_MEAN) {
		uint64_t sum[3] = {0, 0, 0};
		for (int y = 0; y < vh; y++) {
			const uint8_t *r = content.px + ((size_t)(sy + y) * cw + sx) * 3;
			for (int x = 0; x < vw * 3; x++)
				sum[x % 3] += r[x];
		}
		uint64_t n = (uint64_t)vw * vh;
		for (int c = 0; c < 3; c++)
			fillc[c] = (uint8_t)((sum[c] + n / 2) / n);
	}
	if (mp_image_alloc(dst, total, total, e) < 0)
		goto fail;
	for (int y = 0; y < total; y++) {
		uint8_t *o = dst->px + (size_t)y * total * 3;
		int cy = y - oy;
		int inside_y = cy >= 0 && cy < vh;
		if (cy < 0)
			cy = 0;
		if (cy >= vh)
			cy = vh - 1;
		const uint8_t *r = content.px + ((size_t)(sy + cy) * cw + sx) * 3;
		for (int x = 0; x < total; x++) {
			int cx = x - ox;
			int inside = inside_y && cx >= 0 && cx < vw;
			if (inside || fill == MP_FILL_EDGE) {
				if (cx < 0)
					cx = 0;
				if (cx >= vw)
					cx = vw - 1;
				memcpy(o + 3 * x, r + 3 * cx, 3);
			} else {
				memcpy(o + 3 * x, fillc, 3);
			}
		}
	}
	if (content.px != src->px)
		mp_image_free(&content);
	return 0;
fail:
	if (content.px != src->px)
		mp_image_free(&content);
	return -1;
}

int mp_image_encode_jpeg(mp_codec *c, const mp_image *img, int quality,
			 uint8_t **buf, size_t *len, mp_error *e)
{
	if (!c->enc && !(c->enc = tjInitCompress()))
		return mp_seterr(e, "TurboJPEG: %s", tjGetErrorStr2(NULL));
	unsigned long cap = tjBufSize(img->width, img->height, TJSAMP_444);
	if (cap == (unsigned long)-1)
		return mp_seterr(e, "TurboJPEG: %s", tjGetErrorStr2(NULL));
	unsigned char *out = malloc(cap);
	if (!out)
		return mp_seterr(e, "out of memory");
	unsigned long n = cap;
	/* 4:4:4 keeps the colour detail of small images. */
	if (tjCompress2(c->enc, img->px, img->width, 0, img->height, TJPF_RGB, &out,
			&n, TJSAMP_444, quality, TJFLAG_NOREALLOC) < 0) {
		free(out);
		return mp_seterr(e, "JPEG encoding failed: %s", tjGetErrorStr2(c->enc));
	}
	*buf = out;
	*len = n;
	return 0;
}

typedef struct {
	uint8_t *buf;
	size_t len, cap;
	int oom;
	char msg[256];
	jmp_buf jmp;
} png_sink;

static void png_sink_error(png_structp png, png_const_charp msg)
{
	png_sink *s = png_get_error_ptr(png);
	snprintf(s->msg, sizeof s->msg, "%s", msg);
	longjmp(s->jmp, 1);
}

static void png_write_mem(png_structp png, png_bytep data, png_size_t n)
{
	png_sink *s = png_get_io_ptr(png);
	if (n > s->cap - s->len) {
		size_t ncap = s->cap ? s->cap * 2 : 4096;
		while (ncap - s->len < n)
			ncap *= 2;
		uint8_t *nb = realloc(s->buf, ncap);
		if (!nb)
			png_error(png, "out of memory");
		s->buf = nb;
		s->cap = ncap;
	}
	memcpy(s->buf + s->len, data, n);
	s->len += n;
}

static void png_flush_mem(png_structp png)
{
	(void)png;
}

int mp_image_encode_png(const mp_image *img, int level, uint8_t **buf,
			size_t *len, mp_error *e)
{
	png_sink sink = {0};
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink,
						  png_sink_error, png_on_warning);
	if (!png)
		return mp_seterr(e, "out of memory");
	png_infop info = png_create_info_struct(png);
	if (!info) {
		png_destroy_write_struct(&png, NULL);
		return mp_seterr(e, "out of memory");
	}
	if (setjmp(sink.jmp)) {
		free(sink.buf);
		png_destroy_write_struct(&png, &info);
		return mp_seterr(e, "PNG encoding failed: %s", sink.msg);
	}
	png_set_write_fn(png, &sink, png_write_mem, png_flush_mem);
	png_set_compression_level(png, level);
	png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
		     PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_write_info(png, info);
	for (int y = 0; y < img->height; y++)
		png_write_row(png, img->px + (size_t)y * img->width * 3);
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	*buf = sink.buf;
	*len = sink.len;
	return 0;
}
