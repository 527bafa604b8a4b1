/* Inference: a convolution with its BN, residual and ReLU in one operation,
 *
 *   y = relu?(conv(x, w) scale + shift + res?)
 *
 * scale and shift being BN's running statistics folded per channel
 * (mp_cpu_bn_fold). Evaluation runs every convolution of the network
 * through it, so it is where the CPU evaluation spends its time.
 *
 * The prepared form (conv_bn_prepare) is, as floats: scale[K], shift[K],
 * then for a 3x3 stride-1 pad-1 convolution in the fast backend the
 * Winograd-transformed weights with the scale folded in, u[36][K][C].
 *
 * The reference computes the convolution with conv.c's loops and the rest
 * in one pass. The fast one uses Winograd F(4x4, 3x3) (winograd.c) for a
 * 3x3 stride-1 pad-1 convolution on a plane large enough to gain by it,
 * and otherwise the im2col + SGEMM convolution, then the rest in one pass
 * over y. Both give the same bits for any thread count. */
#include <omp.h>

#include "cpu.h"

static int winograd_shape(const mp_tensor *w, int stride, int pad)
{
	return w->h == 3 && w->w == 3 && stride == 1 && pad == 1;
}

/* Floats of the prepared form. */
static size_t prep_count(const mp_tensor *w, int wino)
{
	return 2 * (size_t)w->n + (wino ? 36 * (size_t)w->n * w->c : 0);
}

int mp_cpu_conv_bn_check(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w,
			 const mp_tensor *prep, size_t want, const mp_tensor *res,
			 const mp_tensor *y, int stride, int pad)
{
	int oh, ow;
	if (mp_cpu_conv_shape(be, op, x, w, stride, pad, &oh, &ow) ||
	    mp_cpu_expect(be, op, "y", y, x->n, w->n, oh, ow) || mp_cpu_check(be, op, "prep", prep))
		return -1;
	if (mp_tensor_count(prep) != want)
		return mp_cpu_fail(be, "%s: prep has %zu values, expected %zu for w %dx%dx%dx%d "
				   "(stride %d, pad %d): not made by this backend's conv_bn_prepare",
				   op, mp_tensor_count(prep), want, w->n, w->c, w->h, w->w, stride,
				   pad);
	if (res && mp_cpu_expect(be, op, "res", res, y->n, y->c, y->h, y->w))
		return -1;
	if (y->data == x->data || (res && y->data == res->data))
		return mp_cpu_fail(be, "%s: y shares memory with %s", op,
				   y->data == x->data ? "x" : "res");
	return 0;
}

/* y = relu?(y scale + shift + res?) over the whole tensor, one (image,
 * channel) plane per iteration. */
static void finish(mp_backend *be, const float *scale, const float *shift, const mp_tensor *res,
		   int relu, mp_tensor *y)
{
	const int N = y->n, K = y->c;
	const size_t plane = (size_t)y->h * y->w;
#pragma omp parallel for collapse(2) num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(y)))
	for (int n = 0; n < N; n++)
		for (int k = 0; k < K; k++) {
			const float sc = scale[k], sh = shift[k];
			float *restrict yp = y->data + ((size_t)n * K + k) * plane;
			const float *restrict rp = res ? res->data + ((size_t)n * K + k) * plane : NULL;
			for (size_t i = 0; i < plane; i++) {
				float v = yp[i] * sc + sh;
				if (rp)
					v += rp[i];
				yp[i] = relu && v < 0 ? 0.0f : v;
			}
		}
}

/* ---- the operations ---- */

int mp_cpu_conv_bn_prepare_alloc(mp_backend *be, const char *op, const mp_tensor *w,
				 const mp_bn *bn, int stride, int pad, mp_tensor *prep, size_t count)
{
	if (mp_cpu_check(be, op, "w", w) || mp_cpu_bn_check_running(be, op, bn, w->n))
		return -1;
	if (stride < 1 || pad < 0)
		return mp_cpu_fail(be, "%s: stride %d, pad %d: expected a stride of 1 or more and "
				   "a pad of 0 or more", op, stride, pad);
	if (!prep)
		return mp_cpu_fail(be, "%s: prep is missing", op);
	if (count > (size_t)0x7fffffff)
		return mp_cpu_fail(be, "%s: w %dx%dx%dx%d is too large", op, w->n, w->c, w->h,
				   w->w);
	if (prep->data)
		be->ops->release(be, prep);
	return be->ops->alloc(be, prep, 1, 1, 1, (int)count);
}

static int prepare(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int stride, int pad,
		   mp_tensor *prep, int wino)
{
	if (mp_cpu_conv_bn_prepare_alloc(be, "conv_bn_prepare", w, bn, stride, pad, prep,
					 w ? prep_count(w, wino) : 0))
		return -1;
	float *scale = prep->data, *shift = scale + w->n;
	for (int k = 0; k < w->n; k++)
		mp_cpu_bn_fold(bn, k, &scale[k], &shift[k]);
	if (wino)
		mp_cpu_winograd_weights(w->data, scale, w->n, w->c, shift + w->n,
					mp_cpu_threads(be));
	return 0;
}

int mp_cpu_conv_bn_prepare(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int stride,
			   int pad, mp_tensor *prep)
{
	return prepare(be, w, bn, stride, pad, prep, 0);
}

int mp_cpu_conv_bn_prepare_fast(mp_backend *be, const mp_tensor *w, const mp_bn *bn,
				int stride, int pad, mp_tensor *prep)
{
	return prepare(be, w, bn, stride, pad, prep,
		       w && winograd_shape(w, stride, pad) && mp_cpu_winograd_on(be));
}

int mp_cpu_conv_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				 const mp_tensor *prep, const mp_tensor *res, int relu,
				 mp_tensor *y, int stride, int pad)
{
	if (mp_cpu_conv_bn_check(be, "conv_bn_forward_infer", x, w, prep,
				 w ? prep_count(w, 0) : 0, res, y, stride, pad) ||
	    mp_cpu_conv2d_forward(be, x, w, y, stride, pad))
		return -1;
	finish(be, prep->data, prep->data + w->n, res, relu, y);
	return 0;
}

/* A convolution with few terms per output (C KH KW <= SMALL_TERMS: the
 * 3-channel stem), for which a matrix product is too thin to pay: one
 * output row at a time, its columns gathered once (terms x ow floats, in
 * the L1 cache), then each output channel summed over them in vectors of
 * columns, and the BN, residual and ReLU applied on the way out. Every
 * output is summed by one thread in the order of the terms. */
#define SMALL_TERMS 64

/* not under ThreadSanitizer: see VECTOR_CLONES in winograd.c */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void small_row(const float *x, const float *w, const float *scale, const float *shift,
		      const float *res, int relu, int C, int H, int W, int K, int KH, int KW,
		      int stride, int pad, int oy, int ow, size_t plane, float *cols, float *y)
{
	const int R = C * KH * KW;
	for (int c = 0; c < C; c++)
		for (int i = 0; i < KH; i++) {
			const int iy = oy * stride - pad + i;
			for (int j = 0; j < KW; j++) {
				float *col = cols + (size_t)((c * KH + i) * KW + j) * ow;
				for (int ox = 0; ox < ow; ox++) {
					const int ix = ox * stride - pad + j;
					col[ox] = iy >= 0 && iy < H && ix >= 0 && ix < W
							  ? x[((size_t)c * H + iy) * W + ix] : 0.0f;
				}
			}
		}
	for (int k = 0; k < K; k++) {
		float *yr = y + (size_t)k * plane + (size_t)oy * ow;
		const float *rr = res ? res + (size_t)k * plane + (size_t)oy * ow : NULL;
		const float *wk = w + (size_t)k * R;
		for (int ox0 = 0; ox0 < ow; ox0 += 64) {
			const int n = ow - ox0 < 64 ? ow - ox0 : 64;
			float acc[64];
#pragma omp simd
			for (int o = 0; o < n; o++)
				acc[o] = 0;
			for (int r = 0; r < R; r++) {
				const float wr = wk[r], *col = cols + (size_t)r * ow + ox0;
#pragma omp simd
				for (int o = 0; o < n; o++)
					acc[o] += wr * col[o];
			}
#pragma omp simd
			for (int o = 0; o < n; o++) {
				float v = acc[o] * scale[k] + shift[k];
				if (rr)
					v += rr[ox0 + o];
				yr[ox0 + o] = relu && v < 0 ? 0.0f : v;
			}
		}
	}
}

static int small_conv(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w,
		      const float *scale, const float *shift, const mp_tensor *res, int relu,
		      mp_tensor *y, int stride, int pad)
{
	const int N = x->n, C = x->c, H = x->h, W = x->w, K = w->n, oh = y->h, ow = y->w;
	const int nt = mp_cpu_threads(be);
	const size_t terms = (size_t)C * w->h * w->w;
	if (mp_cpu_scratch(be, op, nt, terms * (size_t)ow, 0))
		return -1;
	const size_t plane = (size_t)oh * ow;
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(y)))
	for (int n = 0; n < N; n++)
		for (int oy = 0; oy < oh; oy++)
			small_row(x->data + (size_t)n * C * H * W, w->data, scale, shift,
				  res ? res->data + (size_t)n * K * plane : NULL, relu, C, H, W, K,
				  w->h, w->w, stride, pad, oy, ow, plane,
				  mp_cpu_scratch_thread(be, omp_get_thread_num()),
				  y->data + (size_t)n * K * plane);
	return 0;
}

int mp_cpu_conv_bn_forward_infer_fast(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				      const mp_tensor *prep, const mp_tensor *res, int relu,
				      mp_tensor *y, int stride, int pad)
{
	static const char op[] = "conv_bn_forward_infer";
	const int wino = w && winograd_shape(w, stride, pad) && mp_cpu_winograd_on(be);
	if (mp_cpu_conv_bn_check(be, op, x, w, prep, w ? prep_count(w, wino) : 0, res, y, stride,
				 pad))
		return -1;
	const float *scale = prep->data, *shift = scale + w->n;
	if (wino && mp_cpu_winograd_pays(x->h, x->w))
		return mp_cpu_winograd_conv(be, op, x, shift + w->n, shift, w->n, res, relu, y);
	if ((size_t)x->c * w->h * w->w <= SMALL_TERMS)
		return small_conv(be, op, x, w, scale, shift, res, relu, y, stride, pad);
	if (mp_cpu_conv2d_forward_gemm(be, x, w, y, stride, pad))
		return -1;
	finish(be, scale, shift, res, relu, y);
	return 0;
}
