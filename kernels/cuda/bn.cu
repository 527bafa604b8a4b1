// Batch normalization per channel over (n, h, w), the CPU reference's
// meaning (kernels/cpu/bn.c): the biased batch variance normalizes, the
// unbiased one enters the running variance, running = momentum running +
// (1 - momentum) batch (neon's sense of momentum).
//
// Reductions in double and in a fixed order, so that results repeat bit
// for bit: the m = n h w values of a channel are cut into S slices of
// whole images (S depends on the shape only); block (c, s) sums its slice
// with a fixed thread-to-element assignment and a tree in shared memory.
// The last of channel c's S blocks to finish (a counter per channel,
// which it sets back to 0) adds the S partial sums in order and works out
// the channel's statistics (forward) or gradient sums (backward): one
// launch, not a second one for them. Which block is last varies; the
// order of the sums does not, so the bits do not either.
//
// Forward: the sums of x and x^2 in one pass (in double, the variance's
// cancellation stays far below float's rounding), where the reference
// makes two passes; backward: the sums of g and g xhat.
#include <limits.h>
#include <math.h>

#include "cuda.h"

#define BN_THREADS 256

// Slices per channel: enough blocks to fill the GPU when channels are few.
static int bn_slices(int n, int c)
{
	int s = 1024 / c;
	if (s < 1)
		s = 1;
	if (s > n)
		s = n;
	return s > (int)MP_CUDA_GRID_YZ ? (int)MP_CUDA_GRID_YZ : s;
}

// What the last block of a channel works out from its sums: the forward
// pass's statistics (stat[c], stat[C + c] = mean, invstd in double for
// the normalization; the saved and running ones), or the backward pass's
// (sums[c], sums[C + c] = sum g, sum g xhat; dbeta, dgamma when wanted).
struct bn_sums_out {
	double m, eps, mom;
	double *stat; // forward: stat; backward: sums
	float *save_mean, *save_invstd, *running_mean, *running_var;
	float *dgamma, *dbeta;
	unsigned *counters; // one per channel
};

// Channel c's forward statistics from its sums of x and x^2.
__device__ static void bn_stats(double s, double sq, int C, int c, const bn_sums_out &o)
{
	const double m = o.m, mean = s / m;
	double var = sq / m - mean * mean;
	if (var < 0)
		var = 0;
	const double invstd = 1.0 / sqrt(var + o.eps);
	o.stat[c] = mean;
	o.stat[C + c] = invstd;
	o.save_mean[c] = (float)mean;
	o.save_invstd[c] = (float)invstd;
	o.running_mean[c] = (float)(o.mom * o.running_mean[c] + (1 - o.mom) * mean);
	o.running_var[c] = (float)(o.mom * o.running_var[c] + (1 - o.mom) * (var * m / (m - 1)));
}

// Block (c, s): over the images of slice s, sums
//   mode 0: x, x^2
//   mode 1: g, g (x - mean) invstd  (save_mean, save_invstd in f0, f1)
// into part[(c S + s) 2 + 0/1], where g = dy, or with relu_y (a fused
// ReLU's output) g = dy where relu_y > 0, else 0; then, in channel c's
// last block, what o asks for.
__global__ void bn_sums_kernel(const float *__restrict__ x, const float *__restrict__ dy,
			       const float *__restrict__ relu_y, int N, int C,
			       mp_cuda_divider plane, int S, int mode, const float *__restrict__ f0,
			       const float *__restrict__ f1, double *__restrict__ part,
			       bn_sums_out o)
{
	__shared__ double sh0[BN_THREADS], sh1[BN_THREADS];
	const int c = blockIdx.x, s = blockIdx.y;
	const int n0 = (int)((long long)N * s / S), n1 = (int)((long long)N * (s + 1) / S);
	// a slice of a channel has fewer than 2^31 values (checked by the
	// launcher), so the index arithmetic is 32-bit
	const unsigned count = (unsigned)(n1 - n0) * plane.d;
	double acc0 = 0, acc1 = 0;
	double mean = 0, invstd = 0;
	if (mode == 1) {
		mean = f0[c];
		invstd = f1[c];
	}
	for (unsigned i = threadIdx.x; i < count; i += blockDim.x) {
		const unsigned k = mp_cuda_quot(plane, i); // the slice's k-th image
		const size_t n = (size_t)n0 + k, j = i - k * plane.d;
		const size_t idx = (n * C + c) * plane.d + j;
		const double v = x[idx];
		if (mode == 0) {
			acc0 += v;
			acc1 += v * v;
		} else {
			const double g = relu_y && !(relu_y[idx] > 0) ? 0.0 : (double)dy[idx];
			acc0 += g;
			acc1 += g * ((v - mean) * invstd);
		}
	}
	sh0[threadIdx.x] = acc0;
	sh1[threadIdx.x] = acc1;
	__syncthreads();
	for (int k = blockDim.x / 2; k > 0; k /= 2) {
		if ((int)threadIdx.x < k) {
			sh0[threadIdx.x] += sh0[threadIdx.x + k];
			sh1[threadIdx.x] += sh1[threadIdx.x + k];
		}
		__syncthreads();
	}
	if (threadIdx.x != 0)
		return;
	part[((size_t)c * S + s) * 2] = sh0[0];
	part[((size_t)c * S + s) * 2 + 1] = sh1[0];
	__threadfence(); // the sums reach L2 before the count says so
	if (atomicAdd(&o.counters[c], 1u) != (unsigned)S - 1)
		return; // not the last
	__threadfence(); // the other side of the writers' fence: reads after the count
	// the other blocks' sums from L2 (__ldcg): this block's L1 may hold
	// old lines
	double a = 0, b = 0;
	for (int k = 0; k < S; k++) {
		a += __ldcg(part + ((size_t)c * S + k) * 2);
		b += __ldcg(part + ((size_t)c * S + k) * 2 + 1);
	}
	if (mode == 0) {
		bn_stats(a, b, C, c, o);
	} else {
		o.stat[c] = a;
		o.stat[C + c] = b;
		if (o.dbeta)
			o.dbeta[c] = (float)a;
		if (o.dgamma)
			o.dgamma[c] = (float)b;
	}
	o.counters[c] = 0; // for the next launch (and a graph's next run)
}

// y = (x - mean) invstd gamma + beta, in double as the reference; then,
// fused, y = relu(y + res) in float as the separate add and ReLU round.
template <typename I>
__global__ void bn_apply_kernel(const float *__restrict__ x, float *__restrict__ y,
				size_t count, mp_cuda_divider C, mp_cuda_divider plane,
				const double *__restrict__ stat,
				const float *__restrict__ gamma, const float *__restrict__ beta,
				const float *__restrict__ res, int relu)
{
	for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (I)count;
	     i += (I)gridDim.x * blockDim.x) {
		const int c = mp_cuda_channel(i, plane, C);
		float v = (float)((x[i] - stat[c]) * stat[C.d + c] * (double)gamma[c] + beta[c]);
		if (res)
			v = __fadd_rn(v, res[i]);
		if (relu)
			v = v < 0 ? 0.0f : v;
		y[i] = v;
	}
}

template <typename I>
__global__ void bn_infer_kernel(const float *__restrict__ x, float *__restrict__ y,
				size_t count, mp_cuda_divider C, mp_cuda_divider plane, float eps,
				const float *__restrict__ rmean, const float *__restrict__ rvar,
				const float *__restrict__ gamma, const float *__restrict__ beta)
{
	for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (I)count;
	     i += (I)gridDim.x * blockDim.x) {
		const int c = mp_cuda_channel(i, plane, C);
		const double invstd = 1.0 / sqrt((double)rvar[c] + eps);
		y[i] = (float)((x[i] - (double)rmean[c]) * invstd * (double)gamma[c] + beta[c]);
	}
}

// dx = gamma invstd (g - sum_g / m - xhat sum_g_xhat / m), g as in
// bn_sums_kernel; dres = g when wanted (a fused residual's gradient),
// dx when not NULL.
template <typename I>
__global__ void bn_dx_kernel(const float *__restrict__ x, const float *__restrict__ dy,
			     const float *__restrict__ relu_y, float *__restrict__ dx,
			     float *__restrict__ dres, size_t count, mp_cuda_divider C,
			     mp_cuda_divider plane, double m,
			     const double *__restrict__ sums, const float *__restrict__ gamma,
			     const float *__restrict__ save_mean,
			     const float *__restrict__ save_invstd)
{
	for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (I)count;
	     i += (I)gridDim.x * blockDim.x) {
		const float g = relu_y && !(relu_y[i] > 0) ? 0.0f : dy[i];
		if (dres)
			dres[i] = g;
		if (!dx)
			continue;
		const int c = mp_cuda_channel(i, plane, C);
		const double mean = save_mean[c], invstd = save_invstd[c];
		const double xhat = (x[i] - mean) * invstd;
		dx[i] = (float)((double)gamma[c] * invstd *
				(g - sums[c] / m - xhat * (sums[C.d + c] / m)));
	}
}

// ---- host side ----------------------------------------------------------------

// The partial sums' grid: C x S blocks (channels on x, whose limit is
// 2^31 - 1: a y of at most 65535 would refuse the 65536 classes of an fc
// BN), each slice fewer than 2^31 values (the index stays clear of
// unsigned wrap-around).
static int bn_grid_ok(mp_backend *be, const char *op, const mp_tensor *x, int S)
{
	const size_t slice = ((size_t)x->n + S - 1) / S * (size_t)x->h * x->w;
	if (slice > UINT_MAX / 2 || (size_t)x->h * x->w > INT_MAX)
		return mp_cpu_fail(be, "%s: x is %dx%dx%dx%d, too large for this backend", op, x->n,
				   x->c, x->h, x->w);
	return 0;
}

__global__ void zero_counters_kernel(unsigned *p, size_t count)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
	     i += (size_t)gridDim.x * blockDim.x)
		p[i] = 0;
}

unsigned *mp_cuda_bn_counters(mp_backend *be, const char *op, size_t count)
{
	mp_cuda_state *s = mp_cuda(be);
	const size_t had = s->bn_counters.size;
	if (mp_cuda_grow(be, op, &s->bn_counters, count * sizeof(unsigned)))
		return NULL;
	if (s->bn_counters.size != had) {
		MP_LAUNCH(zero_counters_kernel, mp_cuda_grid(s->bn_counters.size / sizeof(unsigned)),
			  MP_CUDA_THREADS, be, (unsigned *)s->bn_counters.p,
			  s->bn_counters.size / sizeof(unsigned));
		const cudaError_t e = cudaGetLastError();
		if (e != cudaSuccess) {
			mp_cuda_fail_cuda(be, op, "zero_counters_kernel", e);
			return NULL;
		}
	}
	return (unsigned *)s->bn_counters.p;
}

// Training forward: the statistics, then y = bn(x), or fused relu(bn(x)
// + res) when relu is set.
static int bn_train(mp_backend *be, const char *op, const mp_tensor *x, mp_bn *bn,
		    const mp_tensor *res, int relu, mp_tensor *y)
{
	const int N = x->n, C = x->c, plane = x->h * x->w;
	const size_t m = (size_t)N * plane;
	const int S = bn_slices(N, C);
	double *part = bn_grid_ok(be, op, x, S)
			       ? NULL
			       : mp_cuda_scratch(be, op, (size_t)C * S * 2 + (size_t)C * 2);
	if (!part)
		return -1;
	double *stat = part + (size_t)C * S * 2;
	bn_sums_out o = {};
	o.m = (double)m;
	o.eps = (double)bn->eps;
	o.mom = (double)bn->momentum;
	o.stat = stat;
	o.save_mean = bn->save_mean->data;
	o.save_invstd = bn->save_invstd->data;
	o.running_mean = bn->running_mean->data;
	o.running_var = bn->running_var->data;
	if (!(o.counters = mp_cuda_bn_counters(be, op, C)))
		return -1;
	// the channel of an element, and its image in a slice, by dividers
	const mp_cuda_divider cd = mp_cuda_divider_for((unsigned)C),
			      pd = mp_cuda_divider_for((unsigned)plane);
	MP_LAUNCH_SYNC(bn_sums_kernel, dim3(C, S), BN_THREADS, be, x->data, NULL, NULL, N, C, pd, S,
		       0, NULL, NULL, part, o);
	LAUNCH_CHECK(op, "bn_sums_kernel");
	const size_t count = mp_tensor_count(x);
	const float *r = res ? res->data : NULL;
	if (count <= UINT_MAX / 2)
		MP_LAUNCH(bn_apply_kernel<unsigned>, mp_cuda_grid(count), MP_CUDA_THREADS, be,
			  x->data, y->data, count, cd, pd, stat, bn->gamma->data, bn->beta->data,
			  r, relu);
	else
		MP_LAUNCH(bn_apply_kernel<size_t>, mp_cuda_grid(count), MP_CUDA_THREADS, be,
			  x->data, y->data, count, cd, pd, stat, bn->gamma->data, bn->beta->data,
			  r, relu);
	LAUNCH_CHECK(op, "bn_apply_kernel");
	return 0;
}

int mp_cuda_bn_forward_train(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y)
{
	if (mp_cpu_bn_check_train(be, x, bn, y))
		return -1;
	const int k = mp_cuda_act_storage(be, "bn_forward_train", x, y);
	if (k)
		return k < 0 ? -1
			     : mp_cuda_nhwc_bn_train(be, "bn_forward_train", x, bn, NULL, 0, y);
	return bn_train(be, "bn_forward_train", x, bn, NULL, 0, y);
}

int mp_cuda_bn_relu_forward_train(mp_backend *be, const mp_tensor *x, mp_bn *bn,
				  const mp_tensor *res, mp_tensor *y)
{
	if (mp_cpu_bn_relu_check_forward(be, x, bn, res, y))
		return -1;
	const int k = mp_cuda_act_storage(be, "bn_relu_forward_train", x, res, y);
	if (k)
		return k < 0 ? -1
			     : mp_cuda_nhwc_bn_train(be, "bn_relu_forward_train", x, bn, res, 1,
						     y);
	return bn_train(be, "bn_relu_forward_train", x, bn, res, 1, y);
}

int mp_cuda_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_bn *bn, mp_tensor *y)
{
	static const char op[] = "bn_forward_infer";
	if (mp_cpu_bn_check_infer(be, x, bn, y))
		return -1;
	const int k = mp_cuda_act_storage(be, op, x, y);
	if (k)
		return k < 0 ? -1 : mp_cuda_nhwc_bn_infer(be, x, bn, y);
	const mp_cuda_divider cd = mp_cuda_divider_for((unsigned)x->c),
			      pd = mp_cuda_divider_for((unsigned)(x->h * x->w));
	const size_t count = mp_tensor_count(x);
	if (count <= UINT_MAX / 2)
		MP_LAUNCH(bn_infer_kernel<unsigned>, mp_cuda_grid(count), MP_CUDA_THREADS, be,
			  x->data, y->data, count, cd, pd, bn->eps, bn->running_mean->data,
			  bn->running_var->data, bn->gamma->data, bn->beta->data);
	else
		MP_LAUNCH(bn_infer_kernel<size_t>, mp_cuda_grid(count), MP_CUDA_THREADS, be,
			  x->data, y->data, count, cd, pd, bn->eps, bn->running_mean->data,
			  bn->running_var->data, bn->gamma->data, bn->beta->data);
	LAUNCH_CHECK(op, "bn_infer_kernel");
	return 0;
}

// Backward of bn (relu_y NULL), or of a fused relu(bn(x) + res) whose
// output was relu_y; dres gets the masked gradient when not NULL.
static int bn_back(mp_backend *be, const char *op, const mp_tensor *x, const mp_bn *bn,
		   const mp_tensor *relu_y, const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma,
		   mp_tensor *dbeta, mp_tensor *dres)
{
	const int N = x->n, C = x->c, plane = x->h * x->w;
	const size_t m = (size_t)N * plane;
	const int S = bn_slices(N, C);
	double *part = bn_grid_ok(be, op, x, S)
			       ? NULL
			       : mp_cuda_scratch(be, op, (size_t)C * S * 2 + (size_t)C * 2);
	if (!part)
		return -1;
	double *sums = part + (size_t)C * S * 2;
	const float *ry = relu_y ? relu_y->data : NULL;
	bn_sums_out o = {};
	o.stat = sums;
	o.dgamma = dgamma ? dgamma->data : NULL;
	o.dbeta = dbeta ? dbeta->data : NULL;
	if (!(o.counters = mp_cuda_bn_counters(be, op, C)))
		return -1;
	const mp_cuda_divider cd = mp_cuda_divider_for((unsigned)C),
			      pd = mp_cuda_divider_for((unsigned)plane);
	MP_LAUNCH_SYNC(bn_sums_kernel, dim3(C, S), BN_THREADS, be, x->data, dy->data, ry, N, C, pd,
		       S, 1, bn->save_mean->data, bn->save_invstd->data, part, o);
	LAUNCH_CHECK(op, "bn_sums_kernel");
	if (dx || dres) {
		const size_t count = mp_tensor_count(x);
		float *dxp = dx ? dx->data : NULL, *drp = dres ? dres->data : NULL;
		if (count <= UINT_MAX / 2)
			MP_LAUNCH(bn_dx_kernel<unsigned>, mp_cuda_grid(count), MP_CUDA_THREADS, be,
				  x->data, dy->data, ry, dxp, drp, count, cd, pd, (double)m, sums,
				  bn->gamma->data, bn->save_mean->data, bn->save_invstd->data);
		else
			MP_LAUNCH(bn_dx_kernel<size_t>, mp_cuda_grid(count), MP_CUDA_THREADS, be,
				  x->data, dy->data, ry, dxp, drp, count, cd, pd, (double)m, sums,
				  bn->gamma->data, bn->save_mean->data, bn->save_invstd->data);
		LAUNCH_CHECK(op, "bn_dx_kernel");
	}
	return 0;
}

int mp_cuda_bn_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma, mp_tensor *dbeta)
{
	if (mp_cpu_bn_check_backward(be, x, bn, dy, dx, dgamma, dbeta))
		return -1;
	const int k = mp_cuda_act_storage(be, "bn_backward", x, dy, dx);
	if (k)
		return k < 0 ? -1
			     : mp_cuda_nhwc_bn_backward(be, "bn_backward", x, bn, NULL, dy, dx,
							dgamma, dbeta, NULL);
	return bn_back(be, "bn_backward", x, bn, NULL, dy, dx, dgamma, dbeta, NULL);
}

int mp_cuda_bn_relu_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			     const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx,
			     mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres)
{
	if (mp_cpu_bn_relu_check_backward(be, x, bn, y, dy, dx, dgamma, dbeta, dres))
		return -1;
	const int k = mp_cuda_act_storage(be, "bn_relu_backward", x, y, dy, dx, dres);
	if (k)
		return k < 0 ? -1
			     : mp_cuda_nhwc_bn_backward(be, "bn_relu_backward", x, bn, y, dy, dx,
							dgamma, dbeta, dres);
	return bn_back(be, "bn_relu_backward", x, bn, y, dy, dx, dgamma, dbeta, dres);
}
