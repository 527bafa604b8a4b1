/* Batch normalization per channel over (n, h, w), as PyTorch's BatchNorm2d
 * (and BatchNorm1d on (n, c, 1, 1)):
 *
 *   training:  mean, var = batch mean and biased batch variance
 *              xhat = (x - mean) / sqrt(var + eps),  y = gamma xhat + beta
 *              running = momentum running + (1 - momentum) batch, where the
 *              batch variance is the unbiased one (var m / (m - 1))
 *   inference: the same with the running mean and variance
 *
 * m = n h w values per channel. Means, variances and the backward sums are
 * accumulated in double (two passes: the mean, then the squared deviations),
 * one channel per thread. */
#include <math.h>
#include <stdlib.h>

#include "cpu.h"

/* A per-channel tensor: any shape with one element per channel
 * (PyTorch's [c]; (c, 1, 1, 1) or (1, c, 1, 1) here). */
static int bn_param(mp_backend *be, const char *op, const char *name, const mp_tensor *t,
		    int channels)
{
	if (mp_cpu_check(be, op, name, t))
		return -1;
	if (mp_tensor_count(t) != (size_t)channels)
		return mp_cpu_fail(be, "%s: %s is %dx%dx%dx%d, expected %d values (one per channel)",
				   op, name, t->n, t->c, t->h, t->w, channels);
	return 0;
}

static int bn_eps(mp_backend *be, const char *op, float eps)
{
	if (!(eps >= 0) || isinf(eps))
		return mp_cpu_fail(be, "%s: eps %g, expected a finite value >= 0", op, (double)eps);
	return 0;
}

/* The argument checks of the three BN operations, shared by every backend
 * so that a bad call reads the same everywhere. */
/* What both forward passes need: y shaped as x, the parameters, the running
 * statistics and eps. */
int mp_cpu_bn_check_running(mp_backend *be, const char *op, const mp_bn *bn, int C)
{
	if (!bn)
		return mp_cpu_fail(be, "%s: no BN state", op);
	if (bn_param(be, op, "gamma", bn->gamma, C) || bn_param(be, op, "beta", bn->beta, C) ||
	    bn_param(be, op, "running_mean", bn->running_mean, C) ||
	    bn_param(be, op, "running_var", bn->running_var, C) || bn_eps(be, op, bn->eps))
		return -1;
	return 0;
}

static int bn_check_forward(mp_backend *be, const char *op, const mp_tensor *x,
			    const mp_bn *bn, const mp_tensor *y)
{
	if (mp_cpu_check(be, op, "x", x) ||
	    mp_cpu_expect(be, op, "y", y, x->n, x->c, x->h, x->w) ||
	    mp_cpu_bn_check_running(be, op, bn, x->c))
		return -1;
	return 0;
}

int mp_cpu_bn_check_train(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			  const mp_tensor *y)
{
	static const char op[] = "bn_forward_train";
	if (bn_check_forward(be, op, x, bn, y) ||
	    bn_param(be, op, "save_mean", bn->save_mean, x->c) ||
	    bn_param(be, op, "save_invstd", bn->save_invstd, x->c))
		return -1;
	if (!(bn->momentum >= 0 && bn->momentum <= 1))
		return mp_cpu_fail(be, "%s: momentum %g, expected 0 to 1", op, (double)bn->momentum);
	/* the unbiased variance needs two values per channel (PyTorch refuses too) */
	if ((size_t)x->n * x->h * x->w < 2)
		return mp_cpu_fail(be, "%s: x is %dx%dx%dx%d, training needs more than one value per channel",
				   op, x->n, x->c, x->h, x->w);
	return 0;
}

int mp_cpu_bn_check_infer(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			  const mp_tensor *y)
{
	return bn_check_forward(be, "bn_forward_infer", x, bn, y);
}

int mp_cpu_bn_check_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			     const mp_tensor *dy, const mp_tensor *dx, const mp_tensor *dgamma,
			     const mp_tensor *dbeta)
{
	static const char op[] = "bn_backward";
	if (mp_cpu_check(be, op, "x", x))
		return -1;
	if (!bn)
		return mp_cpu_fail(be, "%s: no BN state", op);
	const int C = x->c;
	if (mp_cpu_expect(be, op, "dy", dy, x->n, x->c, x->h, x->w) ||
	    bn_param(be, op, "gamma", bn->gamma, C) ||
	    bn_param(be, op, "save_mean", bn->save_mean, C) ||
	    bn_param(be, op, "save_invstd", bn->save_invstd, C))
		return -1;
	if (dx && mp_cpu_expect(be, op, "dx", dx, x->n, x->c, x->h, x->w))
		return -1;
	if ((dgamma && bn_param(be, op, "dgamma", dgamma, C)) ||
	    (dbeta && bn_param(be, op, "dbeta", dbeta, C)))
		return -1;
	return 0;
}

int mp_cpu_bn_forward_train(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y)
{
	if (mp_cpu_bn_check_train(be, x, bn, y))
		return -1;
	const int N = x->n, C = x->c;
	const size_t plane = (size_t)x->h * x->w, m = (size_t)N * plane;
	const double mom = bn->momentum;

#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(x)))
	for (int c = 0; c < C; c++) {
		double sum = 0;
		for (int n = 0; n < N; n++) {
			const float *xp = x->data + ((size_t)n * C + c) * plane;
			for (size_t i = 0; i < plane; i++)
				sum += xp[i];
		}
		const double mean = sum / (double)m;
		double sq = 0;
		for (int n = 0; n < N; n++) {
			const float *xp = x->data + ((size_t)n * C + c) * plane;
			for (size_t i = 0; i < plane; i++) {
				double d = xp[i] - mean;
				sq += d * d;
			}
		}
		const double var = sq / (double)m;		/* biased: normalizes */
		const double var_unbiased = sq / (double)(m - 1); /* for the running average */
		const double invstd = 1.0 / sqrt(var + bn->eps);
		const double g = bn->gamma->data[c], b = bn->beta->data[c];
		for (int n = 0; n < N; n++) {
			const float *xp = x->data + ((size_t)n * C + c) * plane;
			float *yp = y->data + ((size_t)n * C + c) * plane;
			for (size_t i = 0; i < plane; i++)
				yp[i] = (float)((xp[i] - mean) * invstd * g + b);
		}
		bn->save_mean->data[c] = (float)mean;
		bn->save_invstd->data[c] = (float)invstd;
		float *rm = &bn->running_mean->data[c], *rv = &bn->running_var->data[c];
		*rm = (float)(mom * *rm + (1 - mom) * mean);
		*rv = (float)(mom * *rv + (1 - mom) * var_unbiased);
	}
	return 0;
}

int mp_cpu_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_bn *bn, mp_tensor *y)
{
	if (mp_cpu_bn_check_infer(be, x, bn, y))
		return -1;
	const int N = x->n, C = x->c;
	const size_t plane = (size_t)x->h * x->w;

#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(x)))
	for (int c = 0; c < C; c++) {
		const double mean = bn->running_mean->data[c];
		const double invstd = 1.0 / sqrt((double)bn->running_var->data[c] + bn->eps);
		const double g = bn->gamma->data[c], b = bn->beta->data[c];
		for (int n = 0; n < N; n++) {
			const float *xp = x->data + ((size_t)n * C + c) * plane;
			float *yp = y->data + ((size_t)n * C + c) * plane;
			for (size_t i = 0; i < plane; i++)
				yp[i] = (float)((xp[i] - mean) * invstd * g + b);
		}
	}
	return 0;
}

/* With xhat = (x - save_mean) save_invstd and sums over the channel's m values:
 *   dbeta  = sum dy
 *   dgamma = sum dy xhat
 *   dx     = gamma invstd (dy - dbeta / m - xhat dgamma / m)
 * (the last two terms are the paths through the batch mean and variance). */
int mp_cpu_bn_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
		       const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma,
		       mp_tensor *dbeta)
{
	if (mp_cpu_bn_check_backward(be, x, bn, dy, dx, dgamma, dbeta))
		return -1;
	const int N = x->n, C = x->c;
	const size_t plane = (size_t)x->h * x->w, m = (size_t)N * plane;

#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(x)))
	for (int c = 0; c < C; c++) {
		const double mean = bn->save_mean->data[c];
		const double invstd = bn->save_invstd->data[c];
		double sum_dy = 0, sum_dy_xhat = 0;
		for (int n = 0; n < N; n++) {
			const float *xp = x->data + ((size_t)n * C + c) * plane;
			const float *dyp = dy->data + ((size_t)n * C + c) * plane;
			for (size_t i = 0; i < plane; i++) {
				sum_dy += dyp[i];
				sum_dy_xhat += dyp[i] * ((xp[i] - mean) * invstd);
			}
		}
		if (dbeta)
			dbeta->data[c] = (float)sum_dy;
		if (dgamma)
			dgamma->data[c] = (float)sum_dy_xhat;
		if (dx) {
			const double scale = bn->gamma->data[c] * invstd;
			const double mean_dy = sum_dy / (double)m;
			const double mean_dy_xhat = sum_dy_xhat / (double)m;
			for (int n = 0; n < N; n++) {
				const float *xp = x->data + ((size_t)n * C + c) * plane;
				const float *dyp = dy->data + ((size_t)n * C + c) * plane;
				float *dxp = dx->data + ((size_t)n * C + c) * plane;
				for (size_t i = 0; i < plane; i++) {
					double xhat = (xp[i] - mean) * invstd;
					dxp[i] = (float)(scale *
							 (dyp[i] - mean_dy - xhat * mean_dy_xhat));
				}
			}
		}
	}
	return 0;
}

/* ---- the fast backend's variants ------------------------------------------- */

/* The same operations in fewer passes over memory, for the "cpu" backend:
 * the mean and the variance from one pass of sums of x and x^2 in double,
 * and each reduction split over BN_LANES accumulators, lane j taking the
 * elements j, j + BN_LANES, ... of each plane, added in lane order at the
 * end: the order is fixed by the shape alone, so the results stay the same
 * bit for bit whatever the thread count (one channel per thread) and
 * however the compiler vectorizes. The elementwise parts run in float. */
#define BN_LANES 8

/* sums of x, and of x^2 when sq, over the channel's planes */
static void bn_sums(const float *x, int N, size_t stride, size_t plane, double *sum,
		    double *sumsq)
{
	double s[BN_LANES] = {0}, q[BN_LANES] = {0};
	for (int n = 0; n < N; n++) {
		const float *xp = x + (size_t)n * stride;
		size_t i = 0;
		for (; i + BN_LANES <= plane; i += BN_LANES)
			for (int j = 0; j < BN_LANES; j++) {
				const double v = xp[i + j];
				s[j] += v;
				q[j] += v * v;
			}
		for (int j = 0; i < plane; i++, j++) {
			const double v = xp[i];
			s[j] += v;
			q[j] += v * v;
		}
	}
	double a = 0, b = 0;
	for (int j = 0; j < BN_LANES; j++) {
		a += s[j];
		b += q[j];
	}
	*sum = a;
	*sumsq = b;
}

/* y = bn_train(x), then y + res when res, then relu(y) when relu: each
 * value written once, rounded as the separate operations round it (the
 * BN in float, the sum in float, the ReLU as relu_forward's). */
static void bn_train_fast(mp_backend *be, const mp_tensor *x, mp_bn *bn, const mp_tensor *res,
			  int relu, mp_tensor *y)
{
	const int N = x->n, C = x->c;
	const size_t plane = (size_t)x->h * x->w, m = (size_t)N * plane;
	const double mom = bn->momentum;

#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(x)))
	for (int c = 0; c < C; c++) {
		double sum, sumsq;
		bn_sums(x->data + (size_t)c * plane, N, (size_t)C * plane, plane, &sum, &sumsq);
		const double mean = sum / (double)m;
		double sq = sumsq - sum * mean; /* sum of squared deviations */
		if (sq < 0)
			sq = 0;
		const double var = sq / (double)m;
		const double var_unbiased = sq / (double)(m - 1);
		const double invstd = 1.0 / sqrt(var + bn->eps);
		const float mf = (float)mean, a = (float)(invstd * bn->gamma->data[c]);
		const float b = bn->beta->data[c];
		for (int n = 0; n < N; n++) {
			const size_t at = ((size_t)n * C + c) * plane;
			const float *restrict xp = x->data + at;
			float *restrict yp = y->data + at;
			if (res) {
				const float *restrict rp = res->data + at;
#pragma omp simd
				for (size_t i = 0; i < plane; i++) {
					const float v = (xp[i] - mf) * a + b + rp[i];
					yp[i] = v < 0 ? 0.0f : v;
				}
			} else if (relu) {
#pragma omp simd
				for (size_t i = 0; i < plane; i++) {
					const float v = (xp[i] - mf) * a + b;
					yp[i] = v < 0 ? 0.0f : v;
				}
			} else {
#pragma omp simd
				for (size_t i = 0; i < plane; i++)
					yp[i] = (xp[i] - mf) * a + b;
			}
		}
		bn->save_mean->data[c] = (float)mean;
		bn->save_invstd->data[c] = (float)invstd;
		float *rm = &bn->running_mean->data[c], *rv = &bn->running_var->data[c];
		*rm = (float)(mom * *rm + (1 - mom) * mean);
		*rv = (float)(mom * *rv + (1 - mom) * var_unbiased);
	}
}

int mp_cpu_bn_forward_train_fast(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y)
{
	if (mp_cpu_bn_check_train(be, x, bn, y))
		return -1;
	bn_train_fast(be, x, bn, NULL, 0, y);
	return 0;
}

/* bn_relu_forward_train: one pass that writes y instead of three (BN, add,
 * ReLU) that each read and write the whole tensor; the same bits. */
int mp_cpu_bn_relu_forward_train_fast(mp_backend *be, const mp_tensor *x, mp_bn *bn,
				      const mp_tensor *res, mp_tensor *y)
{
	if (mp_cpu_bn_relu_check_forward(be, x, bn, res, y))
		return -1;
	bn_train_fast(be, x, bn, res, 1, y);
	return 0;
}

/* Adds dy and dy (x - mean) of len values into the lanes s and q, value i
 * into lane i % BN_LANES (len a multiple of BN_LANES unless it ends the
 * plane): the order of bn_back_sums whatever the pieces a plane is cut in. */
static inline void back_lanes(const float *xp, const float *dyp, size_t len, float mean,
			      double *restrict s, double *restrict q)
{
	size_t i = 0;
	for (; i + BN_LANES <= len; i += BN_LANES)
		for (int j = 0; j < BN_LANES; j++) {
			const double d = dyp[i + j];
			s[j] += d;
			q[j] += d * (double)(xp[i + j] - mean);
		}
	for (int j = 0; i < len; i++, j++) {
		const double d = dyp[i];
		s[j] += d;
		q[j] += d * (double)(xp[i] - mean);
	}
}

/* sum dy and sum dy (x - mean), over the channel's planes; with y, of
 * g = dy where y > 0, else 0 (relu_backward's g) instead of dy, made a
 * piece at a time on the stack by a loop that vectorizes (a select in the
 * sums' loop would be a branch, taken at random) */
#define BN_PIECE 512
static void bn_back_sums(const float *x, const float *y, const float *dy, int N,
			 size_t stride, size_t plane, float mean, double *sum_dy,
			 double *sum_dy_xc)
{
	double s[BN_LANES] = {0}, q[BN_LANES] = {0};
	float g[BN_PIECE];
	for (int n = 0; n < N; n++) {
		const float *xp = x + (size_t)n * stride, *dyp = dy + (size_t)n * stride;
		if (!y) {
			back_lanes(xp, dyp, plane, mean, s, q);
			continue;
		}
		const float *yp = y + (size_t)n * stride;
		for (size_t i0 = 0; i0 < plane; i0 += BN_PIECE) {
			const size_t len = plane - i0 < BN_PIECE ? plane - i0 : BN_PIECE;
#pragma omp simd
			for (size_t i = 0; i < len; i++) {
				const float d = dyp[i0 + i];
				g[i] = yp[i0 + i] > 0 ? d : 0.0f;
			}
			back_lanes(xp + i0, g, len, mean, s, q);
		}
	}
	double a = 0, b = 0;
	for (int j = 0; j < BN_LANES; j++) {
		a += s[j];
		b += q[j];
	}
	*sum_dy = a;
	*sum_dy_xc = b;
}

/* Inference as one multiply-add per value, y = x s + t with the channel's
 * s = gamma / sqrt(var + eps) and t = beta - mean s, in float. */
void mp_cpu_bn_fold(const mp_bn *bn, int c, float *scale, float *shift)
{
	const double invstd = 1.0 / sqrt((double)bn->running_var->data[c] + bn->eps);
	*scale = (float)(bn->gamma->data[c] * invstd);
	*shift = (float)(bn->beta->data[c] - bn->running_mean->data[c] * invstd * bn->gamma->data[c]);
}

int mp_cpu_bn_forward_infer_fast(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				 mp_tensor *y)
{
	if (mp_cpu_bn_check_infer(be, x, bn, y))
		return -1;
	const int N = x->n, C = x->c;
	const size_t plane = (size_t)x->h * x->w;

#pragma omp parallel for collapse(2) num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(x)))
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++) {
			float sc, sh;
			mp_cpu_bn_fold(bn, c, &sc, &sh);
			const float *xp = x->data + ((size_t)n * C + c) * plane;
			float *yp = y->data + ((size_t)n * C + c) * plane;
			for (size_t i = 0; i < plane; i++)
				yp[i] = xp[i] * sc + sh;
		}
	return 0;
}

/* bn_backward, dx possibly dy itself: a channel's sums read all of its dy
 * before its dx is written, one value at a time, each read first. */
static void bn_backward_fast(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			     const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma,
			     mp_tensor *dbeta)
{
	const int N = x->n, C = x->c;
	const size_t plane = (size_t)x->h * x->w, m = (size_t)N * plane;

#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(x)))
	for (int c = 0; c < C; c++) {
		const float mean = bn->save_mean->data[c];
		const double invstd = bn->save_invstd->data[c];
		double sum_dy, sum_dy_xc;
		bn_back_sums(x->data + (size_t)c * plane, NULL, dy->data + (size_t)c * plane, N,
			     (size_t)C * plane, plane, mean, &sum_dy, &sum_dy_xc);
		const double sum_dy_xhat = sum_dy_xc * invstd;
		if (dbeta)
			dbeta->data[c] = (float)sum_dy;
		if (dgamma)
			dgamma->data[c] = (float)sum_dy_xhat;
		if (dx) {
			/* dx = scale (dy - mean_dy - (x - mean) invstd mean_dy_xhat) */
			const double scale = bn->gamma->data[c] * invstd;
			const float s = (float)scale, md = (float)(sum_dy / (double)m);
			const float k = (float)(invstd * sum_dy_xhat / (double)m);
			for (int n = 0; n < N; n++) {
				const float *xp = x->data + ((size_t)n * C + c) * plane;
				const float *dyp = dy->data + ((size_t)n * C + c) * plane;
				float *dxp = dx->data + ((size_t)n * C + c) * plane;
#pragma omp simd
				for (size_t i = 0; i < plane; i++)
					dxp[i] = s * (dyp[i] - md - (xp[i] - mean) * k);
			}
		}
	}
}

int mp_cpu_bn_backward_fast(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma,
			    mp_tensor *dbeta)
{
	if (mp_cpu_bn_check_backward(be, x, bn, dy, dx, dgamma, dbeta))
		return -1;
	bn_backward_fast(be, x, bn, dy, dx, dgamma, dbeta);
	return 0;
}

/* bn_relu_backward: relu_backward's g written into dres, or else into dx,
 * where bn_backward then reads it and writes dx over it: no temporary.
 * (Applying the mask inside bn_backward's two passes instead reads as
 * much memory, in more streams at once, and measured slower.) Only
 * dgamma and dbeta wanted: the sums take the mask on the way. */
int mp_cpu_bn_relu_backward_fast(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				 const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx,
				 mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres)
{
	if (mp_cpu_bn_relu_check_backward(be, x, bn, y, dy, dx, dgamma, dbeta, dres))
		return -1;
	mp_tensor *g = dres ? dres : dx;
	if (g) {
		if (mp_cpu_relu_backward_fast(be, y, dy, g))
			return -1;
		bn_backward_fast(be, x, bn, g, dx, dgamma, dbeta);
		return 0;
	}
	const int C = x->c;
	const size_t plane = (size_t)x->h * x->w;
#pragma omp parallel for num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(x)))
	for (int c = 0; c < C; c++) {
		double sum_dy, sum_dy_xc;
		bn_back_sums(x->data + (size_t)c * plane, y->data + (size_t)c * plane,
			     dy->data + (size_t)c * plane, x->n, (size_t)C * plane, plane,
			     bn->save_mean->data[c], &sum_dy, &sum_dy_xc);
		if (dbeta)
			dbeta->data[c] = (float)sum_dy;
		if (dgamma)
			dgamma->data[c] = (float)(sum_dy_xc * (double)bn->save_invstd->data[c]);
	}
	return 0;
}
