/* Softmax cross-entropy against label-smoothed targets, one row at a time:
 * the arithmetic that every backend's softmax_xent_forward and _backward
 * share, so that the CPU reference and the device kernels are one
 * definition (a CUDA kernel runs it one thread per row, in the same order
 * and precision). */
#ifndef MP_XENT_H
#define MP_XENT_H

#include <math.h>

#if defined(__CUDACC__) || defined(__device__)
#define MP_XENT_FN static inline __host__ __device__
#else
#define MP_XENT_FN static inline
#endif

/* The smoothed target of class k for a row whose label is label: 1 - s on
 * the label, and s spread evenly over all classes. */
MP_XENT_FN double mp_xent_target(int k, int label, int classes, double s)
{
	return (k == label ? 1 - s : 0) + s / classes;
}

/* One row of K logits z: its probabilities into p, and its loss returned.
 * With zmax the largest logit (subtracted so that exp cannot overflow):
 *   log p_k = z_k - zmax - log sum_j exp(z_j - zmax)
 *   loss    = -sum_k target_k log p_k */
MP_XENT_FN double mp_xent_row(const float *z, int K, int label, double smoothing, float *p)
{
	double zmax = z[0];
	for (int k = 1; k < K; k++)
		if (z[k] > zmax)
			zmax = z[k];
	double sum = 0;
	for (int k = 0; k < K; k++)
		sum += exp(z[k] - zmax);
	const double lse = log(sum);
	double row = 0;
	for (int k = 0; k < K; k++) {
		const double logp = z[k] - zmax - lse;
		p[k] = (float)exp(logp);
		row -= mp_xent_target(k, label, K, smoothing) * logp;
	}
	return row;
}

/* The gradient of the batch's mean loss for one logit: (p - target) / N. */
MP_XENT_FN float mp_xent_grad(float p, int k, int label, int K, double smoothing, int N)
{
	return (float)((p - mp_xent_target(k, label, K, smoothing)) / N);
}

#undef MP_XENT_FN
#endif
