/* The training augmentation from decoded images kept in backend memory
 * (backend.h, augment_train): the reference's (each output pixel's sums
 * as the plan writes them), which the CUDA kernel is checked against, and
 * the fast backend's (each source row's horizontal sums made once). Both
 * follow the plan's sums in their order, so their bits are those of the
 * loader's resize. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

int mp_cpu_write_bytes_args(mp_backend *be, const char *op, const mp_tensor *t, size_t offset,
			    const void *host, size_t bytes)
{
	if (mp_cpu_check(be, op, "tensor", t))
		return -1;
	const size_t room = mp_tensor_count(t) * sizeof(float);
	if (offset > room || bytes > room - offset)
		return mp_cpu_fail(be, "%s: %zu bytes at %zu do not fit in %zu", op, bytes, offset,
				   room);
	if (bytes && !host)
		return mp_cpu_fail(be, "%s: no host memory", op);
	return 0;
}

int mp_cpu_write_bytes(mp_backend *be, mp_tensor *t, size_t offset, const void *host,
		       size_t bytes)
{
	if (mp_cpu_write_bytes_args(be, "write_bytes", t, offset, host, bytes))
		return -1;
	if (bytes)
		memcpy((uint8_t *)t->data + offset, host, bytes);
	return 0;
}

int mp_cpu_augment_args(mp_backend *be, const char *op, const mp_tensor *pixels,
			const int32_t *plan, int taps, const mp_tensor *plan_dev,
			const mp_tensor *y, size_t *words)
{
	if (mp_cpu_check(be, op, "pixels", pixels) || mp_cpu_check(be, op, "plan_dev", plan_dev) ||
	    mp_cpu_check(be, op, "y", y))
		return -1;
	if (!plan)
		return mp_cpu_fail(be, "%s: no plan", op);
	if (y->c != 3 || y->h != y->w)
		return mp_cpu_fail(be, "%s: y is %dx%dx%dx%d, expected n x 3 x crop x crop", op,
				   y->n, y->c, y->h, y->w);
	if (taps < 1 || taps > 4096)
		return mp_cpu_fail(be, "%s: %d taps, expected 1..4096", op, taps);
	*words = mp_augment_plan_words(y->n, y->h, taps);
	if (mp_tensor_count(plan_dev) < *words)
		return mp_cpu_fail(be, "%s: plan_dev holds %zu words, the plan %zu", op,
				   mp_tensor_count(plan_dev), *words);
	return 0;
}

static float word_float(int32_t w)
{
	float f;
	memcpy(&f, &w, sizeof f);
	return f;
}

static double words_double(const int32_t *w)
{
	uint64_t bits = (uint64_t)(uint32_t)w[0] | (uint64_t)(uint32_t)w[1] << 32;
	double d;
	memcpy(&d, &bits, sizeof d);
	return d;
}

/* One axis of an image's plan: start[crop], count[crop], weight[crop][taps]. */
typedef struct {
	const int32_t *start, *count, *weight;
} axis_plan;

static axis_plan axis_at(const int32_t *p, int crop)
{
	return (axis_plan){p, p + crop, p + 2 * crop};
}

/* Every start and count of an axis inside 0..limit, counts 1..taps. */
static int axis_ok(const axis_plan *a, int crop, int taps, int limit)
{
	for (int j = 0; j < crop; j++) {
		const int32_t s = a->start[j], c = a->count[j];
		if (c < 1 || c > taps || s < 0 || s > limit - c)
			return 0;
	}
	return 1;
}

/* Image i's record of a plan. */
typedef struct {
	uint64_t first; /* its first byte in pixels */
	int width, height, flip;
	axis_plan cols, rows;
} image_plan;

static image_plan image_at(const int32_t *p, int i, int crop, int taps)
{
	const int32_t *im = p + MP_AUGMENT_PLAN_HEAD + (size_t)i * MP_AUGMENT_PLAN_IMAGE(crop, taps);
	return (image_plan){(uint64_t)(uint32_t)im[0] | (uint64_t)(uint32_t)im[1] << 32, im[2], im[3],
			    im[4], axis_at(im + 8, crop),
			    axis_at(im + 8 + (size_t)crop * (2 + (size_t)taps), crop)};
}

/* Checks the arguments, copies the plan into plan_dev (the copy a device
 * makes, and reads from) and checks every image's record there, so that
 * a bad one changes nothing; the plan's means into mean. */
static int plan_checked(mp_backend *be, const char *op, const mp_tensor *pixels,
			const int32_t *plan, int taps, mp_tensor *plan_dev, const mp_tensor *y,
			double mean[3])
{
	size_t words;
	if (mp_cpu_augment_args(be, op, pixels, plan, taps, plan_dev, y, &words))
		return -1;
	const int n = y->n, crop = y->h;
	memcpy(plan_dev->data, plan, words * sizeof(int32_t));
	const int32_t *p = (const int32_t *)plan_dev->data;
	const uint64_t pool = (uint64_t)mp_tensor_count(pixels) * sizeof(float);
	for (int c = 0; c < 3; c++)
		mean[c] = words_double(p + 2 * c);
	for (int i = 0; i < n; i++) {
		const image_plan im = image_at(p, i, crop, taps);
		if (im.width < 1 || im.height < 1 || (im.flip != 0 && im.flip != 1) ||
		    im.first > pool || (uint64_t)im.width * (uint64_t)im.height * 3 > pool - im.first)
			return mp_cpu_fail(be, "%s: image %d of the plan (%dx%d at byte %llu, flip "
					       "%d) is not inside the %llu bytes of pixels",
					   op, i, im.width, im.height, (unsigned long long)im.first,
					   im.flip, (unsigned long long)pool);
		if (!axis_ok(&im.cols, crop, taps, im.width) ||
		    !axis_ok(&im.rows, crop, taps, im.height))
			return mp_cpu_fail(be, "%s: image %d of the plan reads outside its %dx%d "
					       "pixels, or more than %d taps",
					   op, i, im.width, im.height, taps);
	}
	return 0;
}

/* Column j's horizontal sum over source row src (its first tap's bytes
 * at src, channel c): in tap order, every product and sum rounded to
 * float, as mp_image.c's passes (the builds target no fused multiply-add,
 * which would round once). */
static float row_sum(const axis_plan *cols, int j, int taps, const uint8_t *src)
{
	const int32_t *cw = cols->weight + (size_t)j * taps;
	float h = 0;
	for (int t = 0; t < cols->count[j]; t++)
		h += word_float(cw[t]) * (float)src[3 * t];
	return h;
}

/* The reference's: each output pixel's sums as the plan writes them, its
 * source rows' horizontal sums made again for every output row. */
static int sums_direct(mp_backend *be, const mp_tensor *pixels, const int32_t *p, int taps,
		       const double mean[3], mp_tensor *y)
{
	const int n = y->n, crop = y->h, nt = mp_cpu_threads(be);
	const size_t plane = (size_t)crop * crop;
#pragma omp parallel for num_threads(nt) collapse(2) schedule(static)
	for (int i = 0; i < n; i++) {
		for (int r = 0; r < crop; r++) {
			const image_plan im = image_at(p, i, crop, taps);
			const size_t row_bytes = (size_t)im.width * 3;
			const uint8_t *px = (const uint8_t *)pixels->data + im.first;
			const int32_t *rw = im.rows.weight + (size_t)r * taps;
			float *out = y->data + (size_t)i * 3 * plane + (size_t)r * crop;
			for (int x = 0; x < crop; x++) {
				const int j = im.flip ? crop - 1 - x : x;
				for (int c = 0; c < 3; c++) {
					float v = 0;
					for (int k = 0; k < im.rows.count[r]; k++)
						v += word_float(rw[k]) *
						     row_sum(&im.cols, j, taps,
							     px + (size_t)(im.rows.start[r] + k) * row_bytes +
								     (size_t)im.cols.start[j] * 3 + c);
					out[(size_t)c * plane + x] = (float)(mp_augment_byte(v) - mean[c]);
				}
			}
		}
	}
	return 0;
}

/* The fast backend's: an image at a time, each source row that an output
 * row reads summed horizontally once (in h, x-major, three channels a
 * column), then the vertical sums from those; the same sums in the same
 * order, so the reference's bits. */
static int sums_once(mp_backend *be, const mp_tensor *pixels, const int32_t *p, int taps,
		     const double mean[3], mp_tensor *y)
{
	const int n = y->n, crop = y->h, nt = mp_cpu_threads(be);
	const size_t plane = (size_t)crop * crop;
	int failed = 0;
#pragma omp parallel num_threads(nt)
	{
		float *h = NULL;
		size_t h_cap = 0;
#pragma omp for schedule(dynamic)
		for (int i = 0; i < n; i++) {
			const image_plan im = image_at(p, i, crop, taps);
			/* the source rows the output rows read: lo..hi-1 */
			int lo = im.height, hi = 0;
			for (int r = 0; r < crop; r++) {
				lo = im.rows.start[r] < lo ? im.rows.start[r] : lo;
				const int end = im.rows.start[r] + im.rows.count[r];
				hi = end > hi ? end : hi;
			}
			const size_t row_floats = (size_t)crop * 3;
			const size_t need = (size_t)(hi - lo) * row_floats;
			if (need > h_cap) {
				free(h);
				h_cap = need;
				if (!(h = malloc(h_cap * sizeof *h))) {
					h_cap = 0;
#pragma omp atomic write
					failed = 1;
					continue;
				}
			}
			const size_t row_bytes = (size_t)im.width * 3;
			const uint8_t *px = (const uint8_t *)pixels->data + im.first;
			for (int s = lo; s < hi; s++) {
				float *hs = h + (size_t)(s - lo) * row_floats;
				const uint8_t *src = px + (size_t)s * row_bytes;
				for (int x = 0; x < crop; x++) {
					const int j = im.flip ? crop - 1 - x : x;
					for (int c = 0; c < 3; c++)
						hs[3 * x + c] = row_sum(&im.cols, j, taps,
									src + (size_t)im.cols.start[j] * 3 + c);
				}
			}
			float *out = y->data + (size_t)i * 3 * plane;
			for (int r = 0; r < crop; r++) {
				const int32_t *rw = im.rows.weight + (size_t)r * taps;
				const float *h0 = h + (size_t)(im.rows.start[r] - lo) * row_floats;
				for (int x = 0; x < crop; x++)
					for (int c = 0; c < 3; c++) {
						float v = 0;
						for (int k = 0; k < im.rows.count[r]; k++)
							v += word_float(rw[k]) * h0[(size_t)k * row_floats + 3 * x + c];
						out[(size_t)c * plane + (size_t)r * crop + x] =
							(float)(mp_augment_byte(v) - mean[c]);
					}
			}
		}
		free(h);
	}
	return failed ? mp_cpu_fail(be, "augment_train: out of memory") : 0;
}

static int augment(mp_backend *be, const mp_tensor *pixels, const int32_t *plan, int taps,
		   mp_tensor *plan_dev, mp_tensor *y, int fast)
{
	double mean[3];
	if (plan_checked(be, "augment_train", pixels, plan, taps, plan_dev, y, mean))
		return -1;
	const int32_t *p = (const int32_t *)plan_dev->data;
	return fast ? sums_once(be, pixels, p, taps, mean, y)
		    : sums_direct(be, pixels, p, taps, mean, y);
}

int mp_cpu_augment_train(mp_backend *be, const mp_tensor *pixels, const int32_t *plan, int taps,
			 mp_tensor *plan_dev, mp_tensor *y)
{
	return augment(be, pixels, plan, taps, plan_dev, y, 0);
}

int mp_cpu_augment_train_fast(mp_backend *be, const mp_tensor *pixels, const int32_t *plan,
			      int taps, mp_tensor *plan_dev, mp_tensor *y)
{
	return augment(be, pixels, plan, taps, plan_dev, y, 1);
}
