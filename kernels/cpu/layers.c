/* The small layers: ReLU, add, the option-A shortcut, global average
 * pooling, the fully connected layer, softmax cross-entropy, and the SGD
 * step. Reductions (pooling, dot products, the loss) are summed in double. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cpu.h"
#include "xent.h"

static int same_shape(mp_backend *be, const char *op, const char *name, const mp_tensor *t,
		      const mp_tensor *like)
{
	return mp_cpu_expect(be, op, name, t, like->n, like->c, like->h, like->w);
}

/* ---- ReLU, add ------------------------------------------------------------ */

int mp_cpu_relu_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	static const char op[] = "relu_forward";
	if (mp_cpu_check(be, op, "x", x) || same_shape(be, op, "y", y, x))
		return -1;
	const size_t count = mp_tensor_count(x);
	/* written as "x < 0 ? 0 : x" so that a NaN passes through, as in PyTorch */
#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(count))
	for (size_t i = 0; i < count; i++)
		y->data[i] = x->data[i] < 0 ? 0.0f : x->data[i];
	return 0;
}

/* dx = dy where the output was positive, else 0 (y > 0 exactly when x > 0). */
int mp_cpu_relu_backward(mp_backend *be, const mp_tensor *y, const mp_tensor *dy,
			 mp_tensor *dx)
{
	static const char op[] = "relu_backward";
	if (mp_cpu_check(be, op, "y", y) || same_shape(be, op, "dy", dy, y) ||
	    same_shape(be, op, "dx", dx, y))
		return -1;
	const size_t count = mp_tensor_count(y);
#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(count))
	for (size_t i = 0; i < count; i++)
		dx->data[i] = y->data[i] > 0 ? dy->data[i] : 0.0f;
	return 0;
}

int mp_cpu_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y)
{
	static const char op[] = "add";
	if (mp_cpu_check(be, op, "a", a) || same_shape(be, op, "b", b, a) ||
	    same_shape(be, op, "y", y, a))
		return -1;
	const size_t count = mp_tensor_count(a);
	/* element i is read before it is written, so y may alias a or b */
#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(count))
	for (size_t i = 0; i < count; i++)
		y->data[i] = a->data[i] + b->data[i];
	return 0;
}

/* ---- option-A shortcut ---------------------------------------------------- */

/* Checks the pair (x, y) of a shortcut, where y may have more channels than
 * x and is x subsampled by stride: ceil(h / stride) rows, as x[:, :, ::s, ::s]. */
int mp_cpu_shortcut_shape(mp_backend *be, const char *op, const char *xname,
			  const mp_tensor *x, const char *yname, const mp_tensor *y, int stride)
{
	if (stride < 1)
		return mp_cpu_fail(be, "%s: stride %d, expected 1 or more", op, stride);
	if (mp_cpu_check(be, op, xname, x) || mp_cpu_check(be, op, yname, y))
		return -1;
	if (y->c < x->c)
		return mp_cpu_fail(be, "%s: %s has %d channels, fewer than %s's %d", op, yname,
				   y->c, xname, x->c);
	return mp_cpu_expect(be, op, yname, y, x->n, y->c, (x->h - 1) / stride + 1,
			     (x->w - 1) / stride + 1);
}

int mp_cpu_shortcut_a_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y, int stride)
{
	static const char op[] = "shortcut_a_forward";
	if (mp_cpu_shortcut_shape(be, op, "x", x, "y", y, stride))
		return -1;
	const int N = x->n, CX = x->c, CY = y->c, H = x->h, W = x->w, OH = y->h, OW = y->w;
#pragma omp parallel for collapse(2) num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(y)))
	for (int n = 0; n < N; n++) {
		for (int c = 0; c < CY; c++) {
			float *yp = y->data + ((size_t)n * CY + c) * OH * OW;
			if (c >= CX) {	/* the zero-padded channels */
				for (size_t i = 0; i < (size_t)OH * OW; i++)
					yp[i] = 0;
				continue;
			}
			const float *xp = x->data + ((size_t)n * CX + c) * H * W;
			for (int i = 0; i < OH; i++)
				for (int j = 0; j < OW; j++)
					yp[(size_t)i * OW + j] = xp[(size_t)i * stride * W + (size_t)j * stride];
		}
	}
	return 0;
}

/* dx takes dy at the sampled positions and 0 elsewhere; the gradient of the
 * extra channels has nowhere to go and is dropped. */
int mp_cpu_shortcut_a_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx,
			       int stride)
{
	static const char op[] = "shortcut_a_backward";
	if (mp_cpu_shortcut_shape(be, op, "dx", dx, "dy", dy, stride))
		return -1;
	const int N = dx->n, CX = dx->c, CY = dy->c, H = dx->h, W = dx->w;
	const int OH = dy->h, OW = dy->w;
#pragma omp parallel for collapse(2) num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(dy)))
	for (int n = 0; n < N; n++) {
		for (int c = 0; c < CX; c++) {
			const float *dyp = dy->data + ((size_t)n * CY + c) * OH * OW;
			float *dxp = dx->data + ((size_t)n * CX + c) * H * W;
			for (size_t i = 0; i < (size_t)H * W; i++)
				dxp[i] = 0;
			for (int i = 0; i < OH; i++)
				for (int j = 0; j < OW; j++)
					dxp[(size_t)i * stride * W + (size_t)j * stride] =
						dyp[(size_t)i * OW + j];
		}
	}
	return 0;
}

/* ---- global average pooling ------------------------------------------------ */

int mp_cpu_avgpool_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	static const char op[] = "avgpool_forward";
	if (mp_cpu_check(be, op, "x", x) || mp_cpu_expect(be, op, "y", y, x->n, x->c, 1, 1))
		return -1;
	const size_t planes = (size_t)x->n * x->c, plane = (size_t)x->h * x->w;
#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(planes * plane))
	for (size_t p = 0; p < planes; p++) {
		double s = 0;
		for (size_t i = 0; i < plane; i++)
			s += x->data[p * plane + i];
		y->data[p] = (float)(s / (double)plane);
	}
	return 0;
}

/* Each input contributed 1 / (h w) of its plane's mean. */
int mp_cpu_avgpool_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx)
{
	static const char op[] = "avgpool_backward";
	if (mp_cpu_check(be, op, "dx", dx) || mp_cpu_expect(be, op, "dy", dy, dx->n, dx->c, 1, 1))
		return -1;
	const size_t planes = (size_t)dx->n * dx->c, plane = (size_t)dx->h * dx->w;
#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(planes * plane))
	for (size_t p = 0; p < planes; p++) {
		const float g = (float)(dy->data[p] / (double)plane);
		for (size_t i = 0; i < plane; i++)
			dx->data[p * plane + i] = g;
	}
	return 0;
}

/* ---- fully connected, no bias ---------------------------------------------- */

int mp_cpu_linear_shape(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w)
{
	if (mp_cpu_check(be, op, "x", x) || mp_cpu_check(be, op, "w", w))
		return -1;
	return mp_cpu_expect(be, op, "x", x, x->n, x->c, 1, 1) ||
	       mp_cpu_expect(be, op, "w", w, w->n, x->c, 1, 1);
}

/* y[n, o] = sum_i x[n, i] w[o, i] */
int mp_cpu_linear_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			  mp_tensor *y)
{
	static const char op[] = "linear_forward";
	if (mp_cpu_linear_shape(be, op, x, w) || mp_cpu_expect(be, op, "y", y, x->n, w->n, 1, 1))
		return -1;
	const int N = x->n, IN = x->c, OUT = w->n;
#pragma omp parallel for collapse(2) num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS((size_t)N * IN * OUT))
	for (int n = 0; n < N; n++) {
		for (int o = 0; o < OUT; o++) {
			const float *xp = x->data + (size_t)n * IN;
			const float *wp = w->data + (size_t)o * IN;
			double s = 0;
			for (int i = 0; i < IN; i++)
				s += (double)xp[i] * wp[i];
			y->data[(size_t)n * OUT + o] = (float)s;
		}
	}
	return 0;
}

/* dx[n, i] = sum_o dy[n, o] w[o, i];  dw[o, i] = sum_n dy[n, o] x[n, i] */
int mp_cpu_linear_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			   const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw)
{
	static const char op[] = "linear_backward";
	if (mp_cpu_linear_shape(be, op, x, w) || mp_cpu_expect(be, op, "dy", dy, x->n, w->n, 1, 1))
		return -1;
	if ((dx && same_shape(be, op, "dx", dx, x)) || (dw && same_shape(be, op, "dw", dw, w)))
		return -1;
	const int N = x->n, IN = x->c, OUT = w->n;
	const int nt = mp_cpu_threads(be);
	if (dx) {
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static) if (MP_CPU_WORTH_THREADS((size_t)N * IN * OUT))
		for (int n = 0; n < N; n++) {
			for (int i = 0; i < IN; i++) {
				double s = 0;
				for (int o = 0; o < OUT; o++)
					s += (double)dy->data[(size_t)n * OUT + o] *
					     w->data[(size_t)o * IN + i];
				dx->data[(size_t)n * IN + i] = (float)s;
			}
		}
	}
	if (dw) {
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static) if (MP_CPU_WORTH_THREADS((size_t)N * IN * OUT))
		for (int o = 0; o < OUT; o++) {
			for (int i = 0; i < IN; i++) {
				double s = 0;
				for (int n = 0; n < N; n++)
					s += (double)dy->data[(size_t)n * OUT + o] *
					     x->data[(size_t)n * IN + i];
				dw->data[(size_t)o * IN + i] = (float)s;
			}
		}
	}
	return 0;
}

/* ---- softmax cross-entropy --------------------------------------------------- */

/* Checks the (n, classes, 1, 1) tensor, the labels and the smoothing. */
int mp_cpu_xent_args(mp_backend *be, const char *op, const char *name, const mp_tensor *t,
		     const int32_t *labels, float smoothing)
{
	if (mp_cpu_check(be, op, name, t) || mp_cpu_expect(be, op, name, t, t->n, t->c, 1, 1))
		return -1;
	if (!labels)
		return mp_cpu_fail(be, "%s: no labels", op);
	if (!(smoothing >= 0 && smoothing <= 1))
		return mp_cpu_fail(be, "%s: smoothing %g, expected 0 to 1", op, (double)smoothing);
	for (int n = 0; n < t->n; n++)
		if (labels[n] < 0 || labels[n] >= t->c)
			return mp_cpu_fail(be, "%s: labels[%d] is %ld, expected 0..%d", op, n,
					   (long)labels[n], t->c - 1);
	return 0;
}

/* Each row as mp_xent_row (xent.h) defines it; the mean over the rows is
 * returned in *loss. */
int mp_cpu_softmax_xent_forward(mp_backend *be, const mp_tensor *logits,
				const int32_t *labels, float smoothing,
				mp_tensor *probs, double *loss)
{
	static const char op[] = "softmax_xent_forward";
	if (mp_cpu_xent_args(be, op, "logits", logits, labels, smoothing) ||
	    same_shape(be, op, "probs", probs, logits))
		return -1;
	if (!loss)
		return mp_cpu_fail(be, "%s: no loss output", op);
	const int N = logits->n, K = logits->c;
	double total = 0;
	for (int n = 0; n < N; n++)
		total += mp_xent_row(logits->data + (size_t)n * K, K, labels[n], smoothing,
				     probs->data + (size_t)n * K);
	*loss = total / N;
	return 0;
}

int mp_cpu_softmax_xent_backward(mp_backend *be, const mp_tensor *probs,
				 const int32_t *labels, float smoothing,
				 mp_tensor *dlogits)
{
	static const char op[] = "softmax_xent_backward";
	if (mp_cpu_xent_args(be, op, "probs", probs, labels, smoothing) ||
	    same_shape(be, op, "dlogits", dlogits, probs))
		return -1;
	const int N = probs->n, K = probs->c;
	for (int n = 0; n < N; n++)
		for (int k = 0; k < K; k++) {
			const size_t i = (size_t)n * K + k;
			dlogits->data[i] = mp_xent_grad(probs->data[i], k, labels[n], K, smoothing, N);
		}
	return 0;
}

/* ---- SGD ----------------------------------------------------------------------- */

/* Every tensor present, each g and v shaped as its w, and the rate one
 * value, before any tensor changes. */
int mp_cpu_sgd_check(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		     mp_tensor *const *v, int count, const mp_tensor *lr)
{
	static const char op[] = "sgd_step";
	if (count < 0)
		return mp_cpu_fail(be, "%s: count %d, expected 0 or more", op, count);
	if (mp_cpu_check(be, op, "lr", lr))
		return -1;
	if (mp_tensor_count(lr) != 1)
		return mp_cpu_fail(be, "%s: lr is %dx%dx%dx%d, expected 1x1x1x1", op, lr->n, lr->c,
				   lr->h, lr->w);
	if (count > 0 && (!w || !g || !v))
		return mp_cpu_fail(be, "%s: missing tensor list", op);
	for (int t = 0; t < count; t++) {
		char wn[32], gn[32], vn[32];
		snprintf(wn, sizeof wn, "w[%d]", t);
		snprintf(gn, sizeof gn, "g[%d]", t);
		snprintf(vn, sizeof vn, "v[%d]", t);
		if (mp_cpu_check(be, op, wn, w[t]) || same_shape(be, op, gn, g[t], w[t]) ||
		    same_shape(be, op, vn, v[t], w[t]))
			return -1;
	}
	return 0;
}

/* neon's update, in float, in this order for every element:
 *   v = momentum v - lr (g + wd w);  w = w + v
 * All shapes are checked before any tensor changes. */
int mp_cpu_sgd_step(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		    mp_tensor *const *v, int count, const mp_tensor *lr_t, float momentum,
		    float wd)
{
	if (mp_cpu_sgd_check(be, w, g, v, count, lr_t))
		return -1;
	const float lr = lr_t->data[0];
	const int nt = mp_cpu_threads(be);
	for (int t = 0; t < count; t++) {
		float *wp = w[t]->data, *vp = v[t]->data;
		const float *gp = g[t]->data;
		const size_t n = mp_tensor_count(w[t]);
#pragma omp parallel for num_threads(nt) schedule(static) if (MP_CPU_WORTH_THREADS(n))
		for (size_t i = 0; i < n; i++) {
			const float vi = momentum * vp[i] - lr * (gp[i] + wd * wp[i]);
			vp[i] = vi;
			wp[i] = wp[i] + vi;
		}
	}
	return 0;
}

/* ---- the fast backend's variants ------------------------------------------- */

/* ReLU without a branch per element (the reference's compare-and-branch
 * mispredicts on every other sign change), so that it vectorizes; the
 * same values, NaN passing through. */
int mp_cpu_relu_forward_fast(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	static const char op[] = "relu_forward";
	if (mp_cpu_check(be, op, "x", x) || same_shape(be, op, "y", y, x))
		return -1;
	const size_t count = mp_tensor_count(x);
	const float *xp = x->data;
	float *yp = y->data;
#pragma omp parallel for simd num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(count))
	for (size_t i = 0; i < count; i++)
		yp[i] = xp[i] < 0 ? 0.0f : xp[i];
	return 0;
}

int mp_cpu_relu_backward_fast(mp_backend *be, const mp_tensor *y, const mp_tensor *dy,
			      mp_tensor *dx)
{
	static const char op[] = "relu_backward";
	if (mp_cpu_check(be, op, "y", y) || same_shape(be, op, "dy", dy, y) ||
	    same_shape(be, op, "dx", dx, y))
		return -1;
	const size_t count = mp_tensor_count(y);
	const float *yp = y->data, *dyp = dy->data;
	float *dxp = dx->data;
#pragma omp parallel for simd num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(count))
	for (size_t i = 0; i < count; i++) {
		const float d = dyp[i]; /* read unconditionally, so it vectorizes */
		dxp[i] = yp[i] > 0 ? d : 0.0f;
	}
	return 0;
}

int mp_cpu_add_fast(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y)
{
	static const char op[] = "add";
	if (mp_cpu_check(be, op, "a", a) || same_shape(be, op, "b", b, a) ||
	    same_shape(be, op, "y", y, a))
		return -1;
	const size_t count = mp_tensor_count(a);
	const float *ap = a->data, *bp = b->data;
	float *yp = y->data;
	/* y may alias a or b: element i is read before it is written */
#pragma omp parallel for simd num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(count))
	for (size_t i = 0; i < count; i++)
		yp[i] = ap[i] + bp[i];
	return 0;
}
