// Activations stored in bf16 NHWC (MP_CUDA_BF16_NHWC): the forms of the
// operations for tensors from alloc_act when the backend runs in bf16 with
// MP_CUDA_ACTIVATIONS=bf16. cuDNN's bf16 convolutions read and write them
// as they are, so no conversion pass surrounds a convolution, and every
// other pass moves 2 bytes a value instead of 4.
//
// Arithmetic in float (sums in double), rounded to bf16 once, where each
// value is stored: the CPU reference computes the same in float and the
// tests round its stored activations alike. BN's statistics and
// parameters stay float; its sums per channel come from a fixed grid of
// blocks added in a fixed order, so results repeat bit for bit.
//
// An index i of an NHWC tensor is ((n H + h) W + w) C + c: the channel is
// i % C, and a pixel's C values are contiguous. When C is a multiple of 8
// and the pointers are 16-byte aligned (cudaMalloc's are), the element-wise
// kernels move 8 values (16 bytes) a thread.
#include <cuda_bf16.h>
#include <limits.h>
#include <stdint.h>

#include "cuda.h"

typedef __nv_bfloat16 bf16;

// ---- storage checks ---------------------------------------------------------------

int mp_cuda_act_storage(mp_backend *be, const char *op, const mp_tensor *a, const mp_tensor *b,
			const mp_tensor *c, const mp_tensor *d, const mp_tensor *e)
{
	const mp_tensor *t[] = {a, b, c, d, e};
	int kind = -1;
	for (int i = 0; i < 5; i++) {
		if (!t[i])
			continue;
		const int k = mp_cuda_is_bf16(t[i]);
		if (kind >= 0 && k != kind)
			return mp_cpu_fail(be, "%s: its activations mix bf16 tensors (from "
					   "alloc_act) and float ones", op);
		kind = k;
	}
	return kind < 0 ? 0 : kind;
}

int mp_cuda_float_only(mp_backend *be, const char *op, const mp_tensor *a, const mp_tensor *b,
		       const mp_tensor *c, const mp_tensor *d, const mp_tensor *e)
{
	const mp_tensor *t[] = {a, b, c, d, e};
	for (int i = 0; i < 5; i++)
		if (mp_cuda_is_bf16(t[i]))
			return mp_cpu_fail(be, "%s: takes float tensors, and one is stored in bf16 "
					   "(from alloc_act)", op);
	return 0;
}

// ---- vectors of V values ------------------------------------------------------------

template <int V> __device__ static inline void load(const bf16 *p, float *v)
{
	if (V == 8) {
		const uint4 u = *reinterpret_cast<const uint4 *>(p);
		const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
		for (int k = 0; k < 4; k++) {
			const float2 f = __bfloat1622float2(h[k]);
			v[2 * k] = f.x;
			v[2 * k + 1] = f.y;
		}
	} else {
#pragma unroll
		for (int k = 0; k < V; k++)
			v[k] = __bfloat162float(p[k]);
	}
}

template <int V> __device__ static inline void store(bf16 *p, const float *v)
{
	if (V == 8) {
		uint4 u;
		__nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
		for (int k = 0; k < 4; k++)
			h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
		*reinterpret_cast<uint4 *>(p) = u;
	} else {
#pragma unroll
		for (int k = 0; k < V; k++)
			p[k] = __float2bfloat16_rn(v[k]);
	}
}

static int aligned16(const void *p)
{
	return p == NULL || ((uintptr_t)p & 15) == 0;
}

// 8 values a thread when every vector stays within one pixel's channels
// and every pointer allows 16-byte accesses.
static int vec8(int C, const void *a, const void *b, const void *c, const void *d = NULL,
		const void *e = NULL)
{
	return C % 8 == 0 && aligned16(a) && aligned16(b) && aligned16(c) && aligned16(d) &&
	       aligned16(e);
}

// Vectors of V values: vectors = count / V, a grid-stride loop.
#define VEC_LOOP(i, vectors)                                                          \
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (vectors);  \
	     i += (size_t)gridDim.x * blockDim.x)

static unsigned grid_for(size_t vectors)
{
	return mp_cuda_grid(vectors);
}

// ---- upload, download, fill --------------------------------------------------------------

// Through the stage buffer, float NCHW on the device, converted there.
int mp_cuda_nhwc_upload(mp_backend *be, mp_tensor *t, const float *host)
{
	static const char op[] = "upload";
	mp_cuda_state *s = mp_cuda(be);
	const size_t count = mp_tensor_count(t);
	if (mp_cuda_grow(be, op, &s->stage, count * sizeof(float)))
		return -1;
	CUDA_CHECK(op, cudaMemcpyAsync(s->stage.p, host, count * sizeof(float),
				       cudaMemcpyHostToDevice, s->stream));
	if (mp_cuda_convert(be, op, t->n, t->c, t->h * t->w, s->stage.p, 1, t->data))
		return -1;
	return mp_cuda_wait(be, op);
}

int mp_cuda_nhwc_download(mp_backend *be, const mp_tensor *t, float *host)
{
	static const char op[] = "download";
	mp_cuda_state *s = mp_cuda(be);
	const size_t count = mp_tensor_count(t);
	if (mp_cuda_grow(be, op, &s->stage, count * sizeof(float)) ||
	    mp_cuda_convert(be, op, t->n, t->c, t->h * t->w, t->data, 0, s->stage.p))
		return -1;
	CUDA_CHECK(op, cudaMemcpyAsync(host, s->stage.p, count * sizeof(float),
				       cudaMemcpyDeviceToHost, s->stream));
	return mp_cuda_wait(be, op);
}

__global__ void fill_bf16_kernel(bf16 *y, size_t count, float v)
{
	const bf16 b = __float2bfloat16_rn(v);
	VEC_LOOP(i, count)
	y[i] = b;
}

int mp_cuda_nhwc_fill(mp_backend *be, mp_tensor *t, float value)
{
	const size_t count = mp_tensor_count(t);
	MP_LAUNCH(fill_bf16_kernel, grid_for(count), MP_CUDA_THREADS, be, (bf16 *)t->data, count,
		  value);
	LAUNCH_CHECK("fill", "fill_bf16_kernel");
	return 0;
}

// ---- ReLU, add ------------------------------------------------------------------------

// "x < 0 ? 0 : x" lets a NaN through, as the reference does.
template <int V>
__global__ void relu_bf16_kernel(const bf16 *__restrict__ x, bf16 *__restrict__ y, size_t vectors)
{
	VEC_LOOP(i, vectors)
	{
		float v[V];
		load<V>(x + i * V, v);
#pragma unroll
		for (int k = 0; k < V; k++)
			v[k] = v[k] < 0 ? 0.0f : v[k];
		store<V>(y + i * V, v);
	}
}

template <int V>
__global__ void relu_backward_bf16_kernel(const bf16 *__restrict__ y, const bf16 *__restrict__ dy,
					  bf16 *__restrict__ dx, size_t vectors)
{
	VEC_LOOP(i, vectors)
	{
		float a[V], g[V];
		load<V>(y + i * V, a);
		load<V>(dy + i * V, g);
#pragma unroll
		for (int k = 0; k < V; k++)
			g[k] = a[k] > 0 ? g[k] : 0.0f;
		store<V>(dx + i * V, g);
	}
}

// y may alias a or b: no __restrict__ here. The sum in float, rounded once.
template <int V>
__global__ void add_bf16_kernel(const bf16 *a, const bf16 *b, bf16 *y, size_t vectors)
{
	VEC_LOOP(i, vectors)
	{
		float u[V], v[V];
		load<V>(a + i * V, u);
		load<V>(b + i * V, v);
#pragma unroll
		for (int k = 0; k < V; k++)
			u[k] = __fadd_rn(u[k], v[k]);
		store<V>(y + i * V, u);
	}
}

int mp_cuda_nhwc_relu_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	const size_t count = mp_tensor_count(x);
	const bf16 *xp = (const bf16 *)x->data;
	bf16 *yp = (bf16 *)y->data;
	if (vec8(x->c, xp, yp, NULL))
		MP_LAUNCH(relu_bf16_kernel<8>, grid_for(count / 8), MP_CUDA_THREADS, be, xp, yp,
			  count / 8);
	else
		MP_LAUNCH(relu_bf16_kernel<1>, grid_for(count), MP_CUDA_THREADS, be, xp, yp, count);
	LAUNCH_CHECK("relu_forward", "relu_bf16_kernel");
	return 0;
}

int mp_cuda_nhwc_relu_backward(mp_backend *be, const mp_tensor *y, const mp_tensor *dy,
			       mp_tensor *dx)
{
	const size_t count = mp_tensor_count(y);
	const bf16 *yp = (const bf16 *)y->data, *dyp = (const bf16 *)dy->data;
	bf16 *dxp = (bf16 *)dx->data;
	if (vec8(y->c, yp, dyp, dxp))
		MP_LAUNCH(relu_backward_bf16_kernel<8>, grid_for(count / 8), MP_CUDA_THREADS, be,
			  yp, dyp, dxp, count / 8);
	else
		MP_LAUNCH(relu_backward_bf16_kernel<1>, grid_for(count), MP_CUDA_THREADS, be, yp,
			  dyp, dxp, count);
	LAUNCH_CHECK("relu_backward", "relu_backward_bf16_kernel");
	return 0;
}

int mp_cuda_nhwc_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y)
{
	const size_t count = mp_tensor_count(a);
	const bf16 *ap = (const bf16 *)a->data, *bp = (const bf16 *)b->data;
	bf16 *yp = (bf16 *)y->data;
	if (vec8(a->c, ap, bp, yp))
		MP_LAUNCH(add_bf16_kernel<8>, grid_for(count / 8), MP_CUDA_THREADS, be, ap, bp, yp,
			  count / 8);
	else
		MP_LAUNCH(add_bf16_kernel<1>, grid_for(count), MP_CUDA_THREADS, be, ap, bp, yp,
			  count);
	LAUNCH_CHECK("add", "add_bf16_kernel");
	return 0;
}

// ---- option-A shortcut --------------------------------------------------------------------

// The image n, row r, column j and channel c of index i of an NHWC tensor
// of H x W x C images.
struct nhwc_pos {
	size_t n;
	int r, j, c;
};

__device__ static inline nhwc_pos nhwc_at(size_t i, mp_cuda_divider H, mp_cuda_divider W,
					 mp_cuda_divider C)
{
	nhwc_pos p;
	const size_t pix = mp_cuda_div(C, i), q = mp_cuda_div(W, pix);
	p.c = (int)(i - pix * C.d);
	p.j = (int)(pix - q * W.d);
	p.n = mp_cuda_div(H, q);
	p.r = (int)(q - p.n * H.d);
	return p;
}

// One thread per value of y (N, OH, OW, CY): x's value at the sampled
// pixel, or 0 in the extra channels.
__global__ void shortcut_bf16_kernel(const bf16 *__restrict__ x, bf16 *__restrict__ y,
				     size_t count, int CX, mp_cuda_divider CY, int H, int W,
				     mp_cuda_divider OH, mp_cuda_divider OW, int stride)
{
	const bf16 zero = __float2bfloat16_rn(0.0f);
	VEC_LOOP(i, count)
	{
		const nhwc_pos p = nhwc_at(i, OH, OW, CY);
		const size_t row = p.n * H + (size_t)p.r * stride;
		const size_t from = (row * W + (size_t)p.j * stride) * CX;
		y[i] = p.c < CX ? x[from + p.c] : zero;
	}
}

// One thread per value of dx (N, H, W, CX): dy at the sampled pixels, 0
// elsewhere; the extra channels' gradient is dropped.
__global__ void shortcut_backward_bf16_kernel(const bf16 *__restrict__ dy, bf16 *__restrict__ dx,
					      size_t count, mp_cuda_divider CX, int CY,
					      mp_cuda_divider H, mp_cuda_divider W, int OH, int OW,
					      int stride)
{
	const bf16 zero = __float2bfloat16_rn(0.0f);
	VEC_LOOP(i, count)
	{
		const nhwc_pos p = nhwc_at(i, H, W, CX);
		dx[i] = (p.r % stride == 0 && p.j % stride == 0)
				? dy[((p.n * OH + p.r / stride) * OW + p.j / stride) * CY + p.c]
				: zero;
	}
}

int mp_cuda_nhwc_shortcut_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y, int stride)
{
	const size_t count = mp_tensor_count(y);
	MP_LAUNCH(shortcut_bf16_kernel, grid_for(count), MP_CUDA_THREADS, be, (const bf16 *)x->data,
		  (bf16 *)y->data, count, x->c, mp_cuda_divider_for((unsigned)y->c), x->h, x->w,
		  mp_cuda_divider_for((unsigned)y->h), mp_cuda_divider_for((unsigned)y->w), stride);
	LAUNCH_CHECK("shortcut_a_forward", "shortcut_bf16_kernel");
	return 0;
}

int mp_cuda_nhwc_shortcut_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx, int stride)
{
	const size_t count = mp_tensor_count(dx);
	MP_LAUNCH(shortcut_backward_bf16_kernel, grid_for(count), MP_CUDA_THREADS, be,
		  (const bf16 *)dy->data, (bf16 *)dx->data, count,
		  mp_cuda_divider_for((unsigned)dx->c), dy->c, mp_cuda_divider_for((unsigned)dx->h),
		  mp_cuda_divider_for((unsigned)dx->w), dy->h, dy->w, stride);
	LAUNCH_CHECK("shortcut_a_backward", "shortcut_backward_bf16_kernel");
	return 0;
}

// ---- global average pooling ------------------------------------------------------------------

// One thread per (n, c), neighbours on neighbouring channels (coalesced);
// the plane summed in double in order, as the reference. y is float.
__global__ void avgpool_bf16_kernel(const bf16 *__restrict__ x, float *__restrict__ y,
				    size_t planes, int C, size_t plane)
{
	VEC_LOOP(p, planes)
	{
		const size_t n = p / (size_t)C, c = p % (size_t)C;
		const bf16 *xp = x + n * plane * C + c;
		double s = 0;
		for (size_t i = 0; i < plane; i++)
			s += __bfloat162float(xp[i * C]);
		y[p] = (float)(s / (double)plane);
	}
}

__global__ void avgpool_backward_bf16_kernel(const float *__restrict__ dy, bf16 *__restrict__ dx,
					     size_t count, int C, size_t plane)
{
	VEC_LOOP(i, count)
	{
		const size_t c = i % (size_t)C, n = i / ((size_t)C * plane);
		dx[i] = __float2bfloat16_rn((float)(dy[n * C + c] / (double)plane));
	}
}

int mp_cuda_nhwc_avgpool_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	const size_t planes = (size_t)x->n * x->c, plane = (size_t)x->h * x->w;
	MP_LAUNCH(avgpool_bf16_kernel, grid_for(planes), MP_CUDA_THREADS, be, (const bf16 *)x->data,
		  y->data, planes, x->c, plane);
	LAUNCH_CHECK("avgpool_forward", "avgpool_bf16_kernel");
	return 0;
}

int mp_cuda_nhwc_avgpool_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx)
{
	const size_t count = mp_tensor_count(dx), plane = (size_t)dx->h * dx->w;
	MP_LAUNCH(avgpool_backward_bf16_kernel, grid_for(count), MP_CUDA_THREADS, be, dy->data,
		  (bf16 *)dx->data, count, dx->c, plane);
	LAUNCH_CHECK("avgpool_backward", "avgpool_backward_bf16_kernel");
	return 0;
}

// ---- batch normalization ------------------------------------------------------------------
//
// The tensor is R = n h w rows of C channels. Block (b, g) sums rows
// [R b / B, R (b + 1) / B) of the 32 channels 32 g .. 32 g + 31: thread
// (tx, ty) takes channel 32 g + tx and every 8th row from ty, then the 8
// partial sums of a channel are added in order of ty. The last of group
// g's B blocks to finish (a counter per group, which it sets back to 0)
// then adds, one thread per channel, the B blocks' sums in order, and
// works out the channel's statistics or gradients: one launch, not a
// second one for them. Which block is last varies; the order of the sums
// does not (B depends on the shape only), so they repeat bit for bit.
//
// Forward: the sums of x and x^2 in double (one pass; double leaves the
// variance's cancellation far below float's rounding), then scale =
// gamma invstd and shift = beta - mean scale per channel, and y = x scale
// + shift (+ res, ReLU) in float. Backward, with g = dy (masked where the
// fused ReLU's output is not positive): the sums of g and g x, from
// which sum g xhat = invstd (sum g x - mean sum g); then dx = A g + B x
// + D per channel, the reference's gamma invstd (g - sum g / m - xhat
// sum g xhat / m) regrouped.

#define BN_LANES 32
#define BN_ROWS 8

static int bn_blocks(size_t rows, int groups)
{
	size_t b = (rows + 255) / 256;
	const size_t most = (size_t)(2048 / groups > 0 ? 2048 / groups : 1);
	if (b > most)
		b = most;
	return b ? (int)b : 1;
}

// Channel c's two sums over the B blocks, in order. Read from L2 (__ldcg):
// the other blocks wrote them, and this block's L1 may hold old lines.
__device__ static inline void bn_block_sums(const double *part, int C, int B, int c, double *s0,
					    double *s1)
{
	double a = 0, b = 0;
	for (int k = 0; k < B; k++) {
		a += __ldcg(part + (size_t)c * B + k);
		b += __ldcg(part + ((size_t)C + c) * B + k);
	}
	*s0 = a;
	*s1 = b;
}

// What the last block of a group works out from the sums: the forward
// pass's statistics (mode 0), or the backward pass's gradients (mode 1).
struct bn_finish {
	double m, eps, mom; // rows, epsilon, running momentum
	const float *gamma, *beta, *mean, *invstd;
	float *save_mean, *save_invstd, *running_mean, *running_var; // forward
	float *dgamma, *dbeta;					     // backward
	float *coef;
	unsigned *counters; // one per channel group
};

// Forward, channel c: the statistics, the saved and running ones, and
// coef[c], coef[C + c] = scale, shift.
__device__ static void bn_stats_channel(const double *part, int C, int B, int c,
					const bn_finish &f)
{
	double s, sq;
	bn_block_sums(part, C, B, c, &s, &sq);
	const double m = f.m, mean = s / m;
	double var = sq / m - mean * mean;
	if (var < 0)
		var = 0;
	const double invstd = 1.0 / sqrt(var + f.eps);
	f.save_mean[c] = (float)mean;
	f.save_invstd[c] = (float)invstd;
	f.running_mean[c] = (float)(f.mom * f.running_mean[c] + (1 - f.mom) * mean);
	f.running_var[c] = (float)(f.mom * f.running_var[c] + (1 - f.mom) * (var * m / (m - 1)));
	const double scale = (double)f.gamma[c] * invstd;
	f.coef[c] = (float)scale;
	f.coef[C + c] = (float)((double)f.beta[c] - mean * scale);
}

// Backward, channel c: dgamma, dbeta, and coef[c], [C + c], [2C + c] = A,
// B, D of dx = A g + B x + D.
__device__ static void bn_grad_channel(const double *part, int C, int B, int c,
				       const bn_finish &f)
{
	double sg, sgx;
	bn_block_sums(part, C, B, c, &sg, &sgx);
	const double m = f.m, mean = f.mean[c], invstd = f.invstd[c];
	const double sgxhat = invstd * (sgx - mean * sg);
	if (f.dbeta)
		f.dbeta[c] = (float)sg;
	if (f.dgamma)
		f.dgamma[c] = (float)sgxhat;
	const double a = (double)f.gamma[c] * invstd, k2 = sgxhat / m * invstd;
	f.coef[c] = (float)a;
	f.coef[C + c] = (float)(-a * k2);
	f.coef[2 * C + c] = (float)(a * (k2 * mean - sg / m));
}

// mode 0: x (s0 = sum x, s1 = sum x^2); mode 1: g, with x, dy, relu_y
// (s0 = sum g, s1 = sum g x). part: [2][C][B]. Then, in the group's last
// block, bn_stats_channel or bn_grad_channel for its channels.
__global__ void bn_sums_bf16_kernel(const bf16 *__restrict__ x, const bf16 *__restrict__ dy,
				    const bf16 *__restrict__ relu_y, size_t R, int C, int B,
				    int mode, double *__restrict__ part, bn_finish f)
{
	__shared__ double sh0[BN_ROWS][BN_LANES], sh1[BN_ROWS][BN_LANES];
	__shared__ int last;
	const int tx = threadIdx.x, ty = threadIdx.y;
	const int c = blockIdx.y * BN_LANES + tx, b = blockIdx.x;
	const size_t r0 = R * b / B, r1 = R * (b + 1) / B;
	double s0 = 0, s1 = 0;
	if (c < C) {
		for (size_t r = r0 + ty; r < r1; r += BN_ROWS) {
			const size_t i = r * C + c;
			const double v = __bfloat162float(x[i]);
			if (mode == 0) {
				s0 += v;
				s1 += v * v;
			} else {
				const double g = relu_y && !(__bfloat162float(relu_y[i]) > 0)
							 ? 0.0
							 : (double)__bfloat162float(dy[i]);
				s0 += g;
				s1 += g * v;
			}
		}
	}
	sh0[ty][tx] = s0;
	sh1[ty][tx] = s1;
	__syncthreads();
	if (ty == 0 && c < C) {
		double a = 0, d = 0;
		for (int k = 0; k < BN_ROWS; k++) {
			a += sh0[k][tx];
			d += sh1[k][tx];
		}
		part[(size_t)c * B + b] = a;
		part[((size_t)C + c) * B + b] = d;
		__threadfence(); // the sums reach L2 before the count says so
	}
	__syncthreads();
	if (tx == 0 && ty == 0) {
		last = atomicAdd(&f.counters[blockIdx.y], 1u) == (unsigned)B - 1;
		// the other side of the writers' fence: the last block's reads
		// below come after the count, which other threads of it did not take
		__threadfence();
	}
	__syncthreads();
	if (!last)
		return;
	if (ty == 0 && c < C) {
		if (mode == 0)
			bn_stats_channel(part, C, B, c, f);
		else
			bn_grad_channel(part, C, B, c, f);
	}
	if (tx == 0 && ty == 0)
		f.counters[blockIdx.y] = 0; // for the next launch (and a graph's next run)
}

// y = x scale + shift, then relu(y + res) when relu; coef as above. y may
// be x (conv_bn.cu's final pass): no __restrict__ on them.
template <int V>
__global__ void bn_apply_bf16_kernel(const bf16 *x, bf16 *y, size_t vectors, int C, mp_cuda_divider per_pixel,
				     const float *__restrict__ coef, const bf16 *__restrict__ res,
				     int relu)
{
	VEC_LOOP(i, vectors)
	{
		// the vector's first channel: vectors lie within one pixel's
		const int c0 = (int)(i - mp_cuda_div(per_pixel, i) * per_pixel.d) * V;
		float v[V], r[V];
		load<V>(x + i * V, v);
		if (res)
			load<V>(res + i * V, r);
#pragma unroll
		for (int k = 0; k < V; k++) {
			float u = fmaf(v[k], coef[c0 + k], coef[C + c0 + k]);
			if (res)
				u = __fadd_rn(u, r[k]);
			if (relu)
				u = u < 0 ? 0.0f : u;
			v[k] = u;
		}
		store<V>(y + i * V, v);
	}
}

// Inference: y = (x - running mean) gamma / sqrt(running var + eps) + beta.
template <int V>
__global__ void bn_infer_bf16_kernel(const bf16 *__restrict__ x, bf16 *__restrict__ y,
				     size_t vectors, mp_cuda_divider per_pixel, float eps,
				     const float *__restrict__ rmean,
				     const float *__restrict__ rvar,
				     const float *__restrict__ gamma,
				     const float *__restrict__ beta)
{
	VEC_LOOP(i, vectors)
	{
		// the vector's first channel: vectors lie within one pixel's
		const int c0 = (int)(i - mp_cuda_div(per_pixel, i) * per_pixel.d) * V;
		float v[V];
		load<V>(x + i * V, v);
#pragma unroll
		for (int k = 0; k < V; k++) {
			const int c = c0 + k;
			const float invstd = (float)(1.0 / sqrt((double)rvar[c] + eps));
			v[k] = (v[k] - rmean[c]) * invstd * gamma[c] + beta[c];
		}
		store<V>(y + i * V, v);
	}
}

// g = dy, masked by relu_y; dres = g when wanted; dx = A g + B x + D.
template <int V>
__global__ void bn_dx_bf16_kernel(const bf16 *__restrict__ x, const bf16 *__restrict__ dy,
				  const bf16 *__restrict__ relu_y, bf16 *__restrict__ dx,
				  bf16 *__restrict__ dres, size_t vectors, int C, mp_cuda_divider per_pixel,
				  const float *__restrict__ coef)
{
	VEC_LOOP(i, vectors)
	{
		// the vector's first channel: vectors lie within one pixel's
		const int c0 = (int)(i - mp_cuda_div(per_pixel, i) * per_pixel.d) * V;
		float g[V], v[V];
		load<V>(dy + i * V, g);
		if (relu_y) {
			load<V>(relu_y + i * V, v);
#pragma unroll
			for (int k = 0; k < V; k++)
				g[k] = v[k] > 0 ? g[k] : 0.0f;
		}
		if (dres)
			store<V>(dres + i * V, g);
		if (!dx)
			continue;
		load<V>(x + i * V, v);
#pragma unroll
		for (int k = 0; k < V; k++) {
			const int c = c0 + k;
			v[k] = fmaf(coef[c], g[k], fmaf(coef[C + c], v[k], coef[2 * C + c]));
		}
		store<V>(dx + i * V, v);
	}
}

// The block sums' grid, and scratch for part (2 C B doubles) and coef
// (3 C floats, in C + 1 doubles' room... rounded up): NULL on an error.
static double *bn_scratch(mp_backend *be, const char *op, const mp_tensor *x, int *B, dim3 *grid)
{
	const int C = x->c;
	const size_t R = (size_t)x->n * x->h * x->w;
	const int groups = (C + BN_LANES - 1) / BN_LANES;
	if (groups > (int)MP_CUDA_GRID_YZ) {
		mp_cpu_fail(be, "%s: x has %d channels, more than this backend's %d", op, C,
			    (int)MP_CUDA_GRID_YZ * BN_LANES);
		return NULL;
	}
	*B = bn_blocks(R, groups);
	*grid = dim3((unsigned)*B, (unsigned)groups);
	return mp_cuda_scratch(be, op, (size_t)2 * C * *B + ((size_t)3 * C + 1) / 2);
}

int mp_cuda_nhwc_bn_train(mp_backend *be, const char *op, const mp_tensor *x, mp_bn *bn,
			  const mp_tensor *res, int relu, mp_tensor *y)
{
	const int C = x->c;
	const size_t R = (size_t)x->n * x->h * x->w;
	int B;
	dim3 grid;
	double *part = bn_scratch(be, op, x, &B, &grid);
	if (!part)
		return -1;
	float *coef = (float *)(part + (size_t)2 * C * B);
	bn_finish f = {};
	f.m = (double)R;
	f.eps = (double)bn->eps;
	f.mom = (double)bn->momentum;
	f.gamma = bn->gamma->data;
	f.beta = bn->beta->data;
	f.save_mean = bn->save_mean->data;
	f.save_invstd = bn->save_invstd->data;
	f.running_mean = bn->running_mean->data;
	f.running_var = bn->running_var->data;
	f.coef = coef;
	if (!(f.counters = mp_cuda_bn_counters(be, op, grid.y)))
		return -1;
	MP_LAUNCH_SYNC(bn_sums_bf16_kernel, grid, dim3(BN_LANES, BN_ROWS), be,
		  (const bf16 *)x->data, NULL, NULL, R, C, B, 0, part, f);
	LAUNCH_CHECK(op, "bn_sums_bf16_kernel");
	return mp_cuda_nhwc_scale_shift(be, op, x, coef, res, relu, y);
}

int mp_cuda_nhwc_scale_shift(mp_backend *be, const char *op, const mp_tensor *x,
			     const float *coef, const mp_tensor *res, int relu, mp_tensor *y)
{
	const int C = x->c;
	const size_t count = mp_tensor_count(x);
	const bf16 *xp = (const bf16 *)x->data, *rp = res ? (const bf16 *)res->data : NULL;
	bf16 *yp = (bf16 *)y->data;
	if (vec8(C, xp, yp, rp))
		MP_LAUNCH(bn_apply_bf16_kernel<8>, grid_for(count / 8), MP_CUDA_THREADS, be, xp, yp,
			  count / 8, C, mp_cuda_divider_for((unsigned)C / 8), coef, rp, relu);
	else
		MP_LAUNCH(bn_apply_bf16_kernel<1>, grid_for(count), MP_CUDA_THREADS, be, xp, yp,
			  count, C, mp_cuda_divider_for((unsigned)C), coef, rp, relu);
	LAUNCH_CHECK(op, "bn_apply_bf16_kernel");
	return 0;
}

int mp_cuda_nhwc_bn_infer(mp_backend *be, const mp_tensor *x, const mp_bn *bn, mp_tensor *y)
{
	const size_t count = mp_tensor_count(x);
	const bf16 *xp = (const bf16 *)x->data;
	bf16 *yp = (bf16 *)y->data;
	if (vec8(x->c, xp, yp, NULL))
		MP_LAUNCH(bn_infer_bf16_kernel<8>, grid_for(count / 8), MP_CUDA_THREADS, be, xp, yp,
			  count / 8, mp_cuda_divider_for((unsigned)x->c / 8), bn->eps,
			  bn->running_mean->data, bn->running_var->data,
			  bn->gamma->data, bn->beta->data);
	else
		MP_LAUNCH(bn_infer_bf16_kernel<1>, grid_for(count), MP_CUDA_THREADS, be, xp, yp,
			  count, mp_cuda_divider_for((unsigned)x->c), bn->eps,
			  bn->running_mean->data, bn->running_var->data,
			  bn->gamma->data, bn->beta->data);
	LAUNCH_CHECK("bn_forward_infer", "bn_infer_bf16_kernel");
	return 0;
}

int mp_cuda_nhwc_bn_backward(mp_backend *be, const char *op, const mp_tensor *x,
			     const mp_bn *bn, const mp_tensor *relu_y, const mp_tensor *dy,
			     mp_tensor *dx, mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres)
{
	const int C = x->c;
	const size_t R = (size_t)x->n * x->h * x->w, count = mp_tensor_count(x);
	int B;
	dim3 grid;
	double *part = bn_scratch(be, op, x, &B, &grid);
	if (!part)
		return -1;
	float *coef = (float *)(part + (size_t)2 * C * B);
	const bf16 *xp = (const bf16 *)x->data, *dyp = (const bf16 *)dy->data;
	const bf16 *ry = relu_y ? (const bf16 *)relu_y->data : NULL;
	bn_finish f = {};
	f.m = (double)R;
	f.gamma = bn->gamma->data;
	f.mean = bn->save_mean->data;
	f.invstd = bn->save_invstd->data;
	f.dgamma = dgamma ? dgamma->data : NULL;
	f.dbeta = dbeta ? dbeta->data : NULL;
	f.coef = coef;
	if (!(f.counters = mp_cuda_bn_counters(be, op, grid.y)))
		return -1;
	MP_LAUNCH_SYNC(bn_sums_bf16_kernel, grid, dim3(BN_LANES, BN_ROWS), be, xp, dyp, ry, R, C, B,
		  1, part, f);
	LAUNCH_CHECK(op, "bn_sums_bf16_kernel");
	if (!dx && !dres)
		return 0;
	bf16 *dxp = dx ? (bf16 *)dx->data : NULL, *drp = dres ? (bf16 *)dres->data : NULL;
	if (vec8(C, xp, dyp, ry, dxp, drp))
		MP_LAUNCH(bn_dx_bf16_kernel<8>, grid_for(count / 8), MP_CUDA_THREADS, be, xp, dyp,
			  ry, dxp, drp, count / 8, C, mp_cuda_divider_for((unsigned)C / 8), coef);
	else
		MP_LAUNCH(bn_dx_bf16_kernel<1>, grid_for(count), MP_CUDA_THREADS, be, xp, dyp, ry,
			  dxp, drp, count, C, mp_cuda_divider_for((unsigned)C), coef);
	LAUNCH_CHECK(op, "bn_dx_bf16_kernel");
	return 0;
}
