// The training augmentation on the device (backend.h, augment_train): the
// training set kept decoded in device memory (write_bytes), and a batch
// made from it by the plan the loader drew, with the bits of the loader's
// resize, crop, flip and mean (kernels/cpu/augment.c is the reference:
// the same sums in the same order, each product and sum rounded apart).
#include <stdint.h>
#include <string.h>

#include "cuda.h"

int mp_cuda_write_bytes(mp_backend *be, mp_tensor *t, size_t offset, const void *host,
			size_t bytes)
{
	static const char op[] = "write_bytes";
	if (mp_cpu_write_bytes_args(be, op, t, offset, host, bytes) ||
	    mp_cuda_float_only(be, op, t) ||
	    mp_cuda_not_recording(be, op, "a copy from pageable memory"))
		return -1;
	if (!bytes)
		return 0;
	mp_cuda_state *s = mp_cuda(be);
	mp_cuda_params_written(s, (uint8_t *)t->data + offset, bytes);
	CUDA_CHECK(op, cudaMemcpyAsync((uint8_t *)t->data + offset, host, bytes,
				       cudaMemcpyHostToDevice, s->stream));
	// the host memory is the caller's again when this returns
	return mp_cuda_wait(be, op);
}

__device__ static float aug_word_float(int32_t w)
{
	return __int_as_float(w);
}

__device__ static uint64_t aug_words_u64(const int32_t *w)
{
	return (uint64_t)(uint32_t)w[0] | (uint64_t)(uint32_t)w[1] << 32;
}

// Every start of an axis's entry j and its taps inside 0..limit, its count
// 1..taps.
__device__ static bool aug_axis_ok(const int32_t *axis, int crop, int taps, int j, int limit)
{
	const int32_t s = axis[j], c = axis[crop + j];
	return c >= 1 && c <= taps && s >= 0 && s <= limit - c;
}

// One thread per output pixel (image i, row r, column x), its three
// channels. A thread whose image, row or column the plan puts outside
// the pixels writes NaN: the loss then says the step went wrong.
__global__ void augment_kernel(const uint8_t *__restrict__ pixels, uint64_t pool,
			       const int32_t *__restrict__ plan, int n, int crop, int taps,
			       float *__restrict__ y)
{
	const size_t plane = (size_t)crop * crop, count = (size_t)n * plane;
	const size_t stride = MP_AUGMENT_PLAN_IMAGE(crop, taps);
	const size_t axis_words = (size_t)crop * (2 + (size_t)taps);
	for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < count;
	     o += (size_t)gridDim.x * blockDim.x) {
		const int i = (int)(o / plane);
		const int r = (int)(o % plane / crop), x = (int)(o % crop);
		const int32_t *im = plan + MP_AUGMENT_PLAN_HEAD + (size_t)i * stride;
		const uint64_t first = aug_words_u64(im);
		const int32_t width = im[2], height = im[3], flip = im[4];
		const int j = flip ? crop - 1 - x : x;
		const int32_t *cols = im + 8, *rows = im + 8 + axis_words;
		float *out = y + (size_t)i * 3 * plane + (size_t)r * crop + x;
		if (width < 1 || height < 1 || (flip != 0 && flip != 1) || first > pool ||
		    (uint64_t)width * (uint64_t)height * 3 > pool - first ||
		    !aug_axis_ok(cols, crop, taps, j, width) ||
		    !aug_axis_ok(rows, crop, taps, r, height)) {
			for (int c = 0; c < 3; c++)
				out[(size_t)c * plane] = __int_as_float(0x7fc00000);
			continue;
		}
		const size_t row_bytes = (size_t)width * 3;
		const int32_t cstart = cols[j], ccount = cols[crop + j];
		const int32_t rstart = rows[r], rcount = rows[crop + r];
		const int32_t *cw = cols + 2 * crop + (size_t)j * taps;
		const int32_t *rw = rows + 2 * crop + (size_t)r * taps;
		const uint8_t *px = pixels + first + (size_t)cstart * 3;
		for (int c = 0; c < 3; c++) {
			float v = 0;
			for (int k = 0; k < rcount; k++) {
				const uint8_t *src = px + (size_t)(rstart + k) * row_bytes + c;
				float h = 0;
				// rounded apart, as the host's passes: a fused
				// multiply-add would round once
				for (int t = 0; t < ccount; t++)
					h = __fadd_rn(h, __fmul_rn(aug_word_float(cw[t]),
								   (float)src[3 * t]));
				v = __fadd_rn(v, __fmul_rn(aug_word_float(rw[k]), h));
			}
			const int byte = v <= 0 ? 0 : v >= 255 ? 255 : (int)__fadd_rn(v, 0.5f);
			const double mean = __longlong_as_double((long long)aug_words_u64(plan + 2 * c));
			out[(size_t)c * plane] = (float)(byte - mean);
		}
	}
}

int mp_cuda_augment_train(mp_backend *be, const mp_tensor *pixels, const int32_t *plan, int taps,
			  mp_tensor *plan_dev, mp_tensor *y)
{
	static const char op[] = "augment_train";
	size_t words;
	if (mp_cpu_augment_args(be, op, pixels, plan, taps, plan_dev, y, &words) ||
	    mp_cuda_float_only(be, op, pixels, plan_dev, y))
		return -1;
	const int n = y->n, crop = y->h;
	mp_cuda_state *s = mp_cuda(be);
	// while recording, a node of the graph: the plan is read at each launch
	CUDA_CHECK(op, cudaMemcpyAsync(plan_dev->data, plan, words * sizeof(int32_t),
				       cudaMemcpyHostToDevice, s->stream));
	// the plan is the caller's again once read (not recording)
	if (mp_cuda_wait(be, op))
		return -1;
	const size_t count = (size_t)n * crop * crop;
	MP_LAUNCH(augment_kernel, mp_cuda_grid(count), MP_CUDA_THREADS, be,
		  (const uint8_t *)pixels->data, (uint64_t)mp_tensor_count(pixels) * sizeof(float),
		  (const int32_t *)plan_dev->data, n, crop, taps, y->data);
	LAUNCH_CHECK(op, "augment_kernel");
	return 0;
}
