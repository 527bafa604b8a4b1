/* The training augmentation from decoded images kept in backend memory
 * (backend.h, augment_train): the reference that the CUDA kernel is
 * checked against, and the CPU backends' own. It follows the plan's sums
 * in their order, so its bits are those of the loader's resize. */
#include <omp.h>
#include <stdint.h>
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

int mp_cpu_augment_train(mp_backend *be, const mp_tensor *pixels, const int32_t *plan, int taps,
			 mp_tensor *plan_dev, mp_tensor *y)
{
	const char *op = "augment_train";
	size_t words;
	if (mp_cpu_augment_args(be, op, pixels, plan, taps, plan_dev, y, &words))
		return -1;
	const int n = y->n, crop = y->h;
	/* the copy a device makes, and reads from */
	memcpy(plan_dev->data, plan, words * sizeof(int32_t));
	const int32_t *p = (const int32_t *)plan_dev->data;
	const uint64_t pool = (uint64_t)mp_tensor_count(pixels) * sizeof(float);
	const size_t stride = MP_AUGMENT_PLAN_IMAGE(crop, taps);
	const size_t axis_words = (size_t)crop * (2 + (size_t)taps);
	double mean[3];
	for (int c = 0; c < 3; c++)
		mean[c] = words_double(p + 2 * c);
	/* every image's plan first, so that a bad one changes nothing */
	for (int i = 0; i < n; i++) {
		const int32_t *im = p + MP_AUGMENT_PLAN_HEAD + (size_t)i * stride;
		const uint64_t first = (uint64_t)(uint32_t)im[0] | (uint64_t)(uint32_t)im[1] << 32;
		const int32_t width = im[2], height = im[3], flip = im[4];
		const axis_plan cols = axis_at(im + 8, crop);
		const axis_plan rows = axis_at(im + 8 + axis_words, crop);
		if (width < 1 || height < 1 || (flip != 0 && flip != 1) || first > pool ||
		    (uint64_t)width * (uint64_t)height * 3 > pool - first)
			return mp_cpu_fail(be, "%s: image %d of the plan (%dx%d at byte %llu, flip "
					       "%d) is not inside the %llu bytes of pixels",
					   op, i, width, height, (unsigned long long)first, flip,
					   (unsigned long long)pool);
		if (!axis_ok(&cols, crop, taps, width) || !axis_ok(&rows, crop, taps, height))
			return mp_cpu_fail(be, "%s: image %d of the plan reads outside its %dx%d "
					       "pixels, or more than %d taps",
					   op, i, width, height, taps);
	}
	const int nt = mp_cpu_threads(be);
	const size_t plane = (size_t)crop * crop;
#pragma omp parallel for num_threads(nt) collapse(2) schedule(static)
	for (int i = 0; i < n; i++) {
		for (int r = 0; r < crop; r++) {
			const int32_t *im = p + MP_AUGMENT_PLAN_HEAD + (size_t)i * stride;
			const uint64_t first =
				(uint64_t)(uint32_t)im[0] | (uint64_t)(uint32_t)im[1] << 32;
			const size_t row_bytes = (size_t)im[2] * 3;
			const int flip = im[4];
			const axis_plan cols = axis_at(im + 8, crop);
			const axis_plan rows = axis_at(im + 8 + axis_words, crop);
			const uint8_t *px = (const uint8_t *)pixels->data + first;
			float *out = y->data + (size_t)i * 3 * plane + (size_t)r * crop;
			for (int x = 0; x < crop; x++) {
				const int j = flip ? crop - 1 - x : x;
				const int32_t *cw = cols.weight + (size_t)j * taps;
				const int32_t *rw = rows.weight + (size_t)r * taps;
				for (int c = 0; c < 3; c++) {
					float v = 0;
					for (int k = 0; k < rows.count[r]; k++) {
						const uint8_t *src = px + (size_t)(rows.start[r] + k) * row_bytes +
								     (size_t)cols.start[j] * 3 + c;
						float h = 0;
						/* as mp_image.c's passes: the builds target no
						 * fused multiply-add, which would round once */
						for (int t = 0; t < cols.count[j]; t++)
							h += word_float(cw[t]) * (float)src[3 * t];
						v += word_float(rw[k]) * h;
					}
					out[(size_t)c * plane + x] = (float)(mp_augment_byte(v) - mean[c]);
				}
			}
		}
	}
	return 0;
}
