/* 2-D convolution without bias, NCHW, weights OIHW: the direct loop nest.
 *
 *   y[n,k,oy,ox] = sum_{c,i,j} w[k,c,i,j] x[n,c, oy*s - p + i, ox*s - p + j]
 *
 * with x taken as 0 outside the image. Each output is summed in double in a
 * fixed order (c, i, j) by one thread, then rounded once to float. The
 * innermost loop runs along an output row, so it reads x, dy and the
 * accumulators contiguously when the stride is 1. */
#include <limits.h>
#include <omp.h>
#include <stdlib.h>

#include "cpu.h"

/* The output positions o in [*lo, *hi) whose input tap o*stride - pad + k
 * lies inside 0..in-1; taps outside read the zero padding and add nothing,
 * so the loops skip them instead of testing every position. */
void mp_cpu_tap_range(int k, int stride, int pad, int in, int out, int *lo, int *hi)
{
	int a = pad - k;		/* need o*stride >= a */
	int b = in - 1 + pad - k;	/* need o*stride <= b */
	int l = a > 0 ? (a + stride - 1) / stride : 0;
	int h = b >= 0 ? b / stride + 1 : 0;
	if (h > out)
		h = out;
	*lo = l;
	*hi = h > l ? h : l;
}

/* Checks x, w, stride and pad, and computes the output size. */
int mp_cpu_conv_shape(mp_backend *be, const char *op, const mp_tensor *x,
		      const mp_tensor *w, int stride, int pad, int *oh, int *ow)
{
	if (mp_cpu_check(be, op, "x", x) || mp_cpu_check(be, op, "w", w))
		return -1;
	if (stride < 1)
		return mp_cpu_fail(be, "%s: stride %d, expected 1 or more", op, stride);
	if (pad < 0)
		return mp_cpu_fail(be, "%s: pad %d, expected 0 or more", op, pad);
	if (w->c != x->c)
		return mp_cpu_fail(be, "%s: w is %dx%dx%dx%d for %d input channels, x has %d",
				   op, w->n, w->c, w->h, w->w, w->c, x->c);
	/* the padded size must hold the kernel, and stay an int */
	long long ph = (long long)x->h + 2LL * pad, pw = (long long)x->w + 2LL * pad;
	if (ph > INT_MAX || pw > INT_MAX)
		return mp_cpu_fail(be, "%s: pad %d is too large", op, pad);
	if (ph < w->h || pw < w->w)
		return mp_cpu_fail(be, "%s: kernel %dx%d is larger than the padded input %lldx%lld",
				   op, w->h, w->w, ph, pw);
	*oh = (int)((ph - w->h) / stride + 1);
	*ow = (int)((pw - w->w) / stride + 1);
	return 0;
}

int mp_cpu_conv_backward_shape(mp_backend *be, const char *op, const mp_tensor *x,
			       const mp_tensor *w, const mp_tensor *dy, const mp_tensor *dx,
			       const mp_tensor *dw, int stride, int pad, int *oh, int *ow)
{
	if (mp_cpu_conv_shape(be, op, x, w, stride, pad, oh, ow) ||
	    mp_cpu_expect(be, op, "dy", dy, x->n, w->n, *oh, *ow))
		return -1;
	if (dx && mp_cpu_expect(be, op, "dx", dx, x->n, x->c, x->h, x->w))
		return -1;
	if (dw && mp_cpu_expect(be, op, "dw", dw, w->n, w->c, w->h, w->w))
		return -1;
	return 0;
}

int mp_cpu_conv2d_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			  mp_tensor *y, int stride, int pad)
{
	static const char op[] = "conv2d_forward";
	int oh, ow;
	if (mp_cpu_conv_shape(be, op, x, w, stride, pad, &oh, &ow) ||
	    mp_cpu_expect(be, op, "y", y, x->n, w->n, oh, ow))
		return -1;
	const int N = x->n, C = x->c, H = x->h, W = x->w;
	const int K = w->n, KH = w->h, KW = w->w;
	const size_t plane = (size_t)oh * ow;
	const int nt = mp_cpu_threads(be);
	/* one double accumulator plane per thread */
	double *scratch = malloc((size_t)nt * plane * sizeof(double));
	if (!scratch)
		return mp_cpu_fail(be, "%s: out of memory", op);

#pragma omp parallel for collapse(2) num_threads(nt) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(y)))
	for (int n = 0; n < N; n++) {
		for (int k = 0; k < K; k++) {
			double *acc = scratch + (size_t)omp_get_thread_num() * plane;
			for (size_t i = 0; i < plane; i++)
				acc[i] = 0;
			for (int c = 0; c < C; c++) {
				const float *xp = x->data + ((size_t)n * C + c) * H * W;
				const float *wp = w->data + ((size_t)k * C + c) * KH * KW;
				for (int i = 0; i < KH; i++) {
					int oy0, oy1;
					mp_cpu_tap_range(i, stride, pad, H, oh, &oy0, &oy1);
					for (int j = 0; j < KW; j++) {
						int ox0, ox1;
						mp_cpu_tap_range(j, stride, pad, W, ow, &ox0, &ox1);
						const double wv = wp[i * KW + j];
						for (int oy = oy0; oy < oy1; oy++) {
							const float *xrow =
								xp + (size_t)(oy * stride - pad + i) * W;
							double *arow = acc + (size_t)oy * ow;
							for (int ox = ox0; ox < ox1; ox++)
								arow[ox] += wv * xrow[ox * stride - pad + j];
						}
					}
				}
			}
			float *yp = y->data + ((size_t)n * K + k) * plane;
			for (size_t i = 0; i < plane; i++)
				yp[i] = (float)acc[i];
		}
	}
	free(scratch);
	return 0;
}

/* dx[n,c,iy,ix] = sum over the (k, i, j, oy, ox) that read x[n,c,iy,ix] of
 *                 w[k,c,i,j] dy[n,k,oy,ox]
 * dw[k,c,i,j]   = sum_{n,oy,ox} dy[n,k,oy,ox] x[n,c, oy*s - p + i, ox*s - p + j]
 * dx is computed per (image, input channel), dw per (output, input channel):
 * each thread owns whole outputs, so no sum is split between threads. */
int mp_cpu_conv2d_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			   const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw,
			   int stride, int pad)
{
	static const char op[] = "conv2d_backward";
	int oh, ow;
	if (mp_cpu_conv_backward_shape(be, op, x, w, dy, dx, dw, stride, pad, &oh, &ow))
		return -1;
	const int N = x->n, C = x->c, H = x->h, W = x->w;
	const int K = w->n, KH = w->h, KW = w->w;
	const size_t plane = (size_t)H * W, oplane = (size_t)oh * ow;
	const int nt = mp_cpu_threads(be);

	if (dx) {
		double *scratch = malloc((size_t)nt * plane * sizeof(double));
		if (!scratch)
			return mp_cpu_fail(be, "%s: out of memory", op);
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(dy)))
		for (int n = 0; n < N; n++) {
			for (int c = 0; c < C; c++) {
				double *acc = scratch + (size_t)omp_get_thread_num() * plane;
				for (size_t i = 0; i < plane; i++)
					acc[i] = 0;
				for (int k = 0; k < K; k++) {
					const float *dyp = dy->data + ((size_t)n * K + k) * oplane;
					const float *wp = w->data + ((size_t)k * C + c) * KH * KW;
					for (int i = 0; i < KH; i++) {
						int oy0, oy1;
						mp_cpu_tap_range(i, stride, pad, H, oh, &oy0, &oy1);
						for (int j = 0; j < KW; j++) {
							int ox0, ox1;
							mp_cpu_tap_range(j, stride, pad, W, ow, &ox0, &ox1);
							const double wv = wp[i * KW + j];
							for (int oy = oy0; oy < oy1; oy++) {
								const float *dyrow = dyp + (size_t)oy * ow;
								double *arow = acc +
									(size_t)(oy * stride - pad + i) * W;
								for (int ox = ox0; ox < ox1; ox++)
									arow[ox * stride - pad + j] +=
										wv * dyrow[ox];
							}
						}
					}
				}
				float *dxp = dx->data + ((size_t)n * C + c) * plane;
				for (size_t i = 0; i < plane; i++)
					dxp[i] = (float)acc[i];
			}
		}
		free(scratch);
	}

	if (dw) {
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(dy)))
		for (int k = 0; k < K; k++) {
			for (int c = 0; c < C; c++) {
				float *dwp = dw->data + ((size_t)k * C + c) * KH * KW;
				for (int i = 0; i < KH; i++) {
					int oy0, oy1;
					mp_cpu_tap_range(i, stride, pad, H, oh, &oy0, &oy1);
					for (int j = 0; j < KW; j++) {
						int ox0, ox1;
						mp_cpu_tap_range(j, stride, pad, W, ow, &ox0, &ox1);
						double s = 0;
						for (int n = 0; n < N; n++) {
							const float *xp = x->data + ((size_t)n * C + c) * plane;
							const float *dyp =
								dy->data + ((size_t)n * K + k) * oplane;
							for (int oy = oy0; oy < oy1; oy++) {
								const float *xrow =
									xp + (size_t)(oy * stride - pad + i) * W;
								const float *dyrow = dyp + (size_t)oy * ow;
								for (int ox = ox0; ox < ox1; ox++)
									s += (double)dyrow[ox] *
									     xrow[ox * stride - pad + j];
							}
						}
						dwp[i * KW + j] = (float)s;
					}
				}
			}
		}
	}
	return 0;
}
