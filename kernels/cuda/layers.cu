// The small layers on the GPU: fill, ReLU, add, the option-A shortcut,
// global average pooling, the fully connected layer (cuBLAS), softmax
// cross-entropy and the SGD step. The meanings, checks and messages are
// those of kernels/cpu/layers.c; reductions are summed in double in the
// reference's order where it is cheap to (pooling, the loss).
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "xent.h"

#define GRID_STRIDE(i, count)                                                         \
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (count);  \
	     i += (size_t)gridDim.x * blockDim.x)

static int same_shape(mp_backend *be, const char *op, const char *name, const mp_tensor *t,
		      const mp_tensor *like)
{
	return mp_cpu_expect(be, op, name, t, like->n, like->c, like->h, like->w);
}

// ---- fill, ReLU, add -----------------------------------------------------------

__global__ void fill_kernel(float *y, size_t count, float v)
{
	GRID_STRIDE(i, count)
	y[i] = v;
}

int mp_cuda_fill(mp_backend *be, mp_tensor *t, float value)
{
	static const char op[] = "fill";
	if (mp_cpu_check(be, op, "tensor", t))
		return -1;
	if (mp_cuda_is_bf16(t))
		return mp_cuda_nhwc_fill(be, t, value);
	const size_t count = mp_tensor_count(t);
	mp_cuda_params_written(mp_cuda(be), t->data, count * sizeof(float));
	MP_LAUNCH(fill_kernel, mp_cuda_grid(count), MP_CUDA_THREADS, be, t->data, count, value);
	LAUNCH_CHECK(op, "fill_kernel");
	return 0;
}

// "x < 0 ? 0 : x" lets a NaN through, as the reference and PyTorch do.
__global__ void relu_kernel(const float *__restrict__ x, float *__restrict__ y, size_t count)
{
	GRID_STRIDE(i, count)
	y[i] = x[i] < 0 ? 0.0f : x[i];
}

__global__ void relu_backward_kernel(const float *__restrict__ y, const float *__restrict__ dy,
				     float *__restrict__ dx, size_t count)
{
	GRID_STRIDE(i, count)
	dx[i] = y[i] > 0 ? dy[i] : 0.0f;
}

// y may alias a or b: no __restrict__ here.
__global__ void add_kernel(const float *a, const float *b, float *y, size_t count)
{
	GRID_STRIDE(i, count)
	y[i] = a[i] + b[i];
}

int mp_cuda_relu_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	static const char op[] = "relu_forward";
	if (mp_cpu_check(be, op, "x", x) || same_shape(be, op, "y", y, x))
		return -1;
	const int k = mp_cuda_act_storage(be, op, x, y);
	if (k)
		return k < 0 ? -1 : mp_cuda_nhwc_relu_forward(be, x, y);
	const size_t count = mp_tensor_count(x);
	MP_LAUNCH(relu_kernel, mp_cuda_grid(count), MP_CUDA_THREADS, be, x->data, y->data, count);
	LAUNCH_CHECK(op, "relu_kernel");
	return 0;
}

int mp_cuda_relu_backward(mp_backend *be, const mp_tensor *y, const mp_tensor *dy,
			  mp_tensor *dx)
{
	static const char op[] = "relu_backward";
	if (mp_cpu_check(be, op, "y", y) || same_shape(be, op, "dy", dy, y) ||
	    same_shape(be, op, "dx", dx, y))
		return -1;
	const int k = mp_cuda_act_storage(be, op, y, dy, dx);
	if (k)
		return k < 0 ? -1 : mp_cuda_nhwc_relu_backward(be, y, dy, dx);
	const size_t count = mp_tensor_count(y);
	MP_LAUNCH(relu_backward_kernel, mp_cuda_grid(count), MP_CUDA_THREADS, be, y->data, dy->data,
		  dx->data, count);
	LAUNCH_CHECK(op, "relu_backward_kernel");
	return 0;
}

int mp_cuda_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y)
{
	static const char op[] = "add";
	if (mp_cpu_check(be, op, "a", a) || same_shape(be, op, "b", b, a) ||
	    same_shape(be, op, "y", y, a))
		return -1;
	const int k = mp_cuda_act_storage(be, op, a, b, y);
	if (k)
		return k < 0 ? -1 : mp_cuda_nhwc_add(be, a, b, y);
	const size_t count = mp_tensor_count(a);
	MP_LAUNCH(add_kernel, mp_cuda_grid(count), MP_CUDA_THREADS, be, a->data, b->data, y->data,
		  count);
	LAUNCH_CHECK(op, "add_kernel");
	return 0;
}

// ---- option-A shortcut ---------------------------------------------------------

// One thread per element of y: a sample of x, or 0 in the extra channels.
// The element's position by dividers (divider.h).
__global__ void shortcut_kernel(const float *__restrict__ x, float *__restrict__ y,
				size_t count, int CX, mp_cuda_divider CY, int H, int W,
				mp_cuda_divider OH, mp_cuda_divider OW, int stride)
{
	GRID_STRIDE(i, count)
	{
		const size_t q = mp_cuda_div(OW, i), p = mp_cuda_div(OH, q), n = mp_cuda_div(CY, p);
		const int j = (int)(i - q * OW.d), r = (int)(q - p * OH.d), c = (int)(p - n * CY.d);
		y[i] = c < CX ? x[((n * CX + c) * H + (size_t)r * stride) * W + (size_t)j * stride]
			      : 0.0f;
	}
}

// One thread per element of dx: dy at the sampled positions, 0 elsewhere;
// the extra channels' gradient is dropped.
__global__ void shortcut_backward_kernel(const float *__restrict__ dy, float *__restrict__ dx,
					 size_t count, mp_cuda_divider CX, int CY,
					 mp_cuda_divider H, mp_cuda_divider W, int OH, int OW,
					 int stride)
{
	GRID_STRIDE(i, count)
	{
		const size_t q = mp_cuda_div(W, i), p = mp_cuda_div(H, q), n = mp_cuda_div(CX, p);
		const int j = (int)(i - q * W.d), r = (int)(q - p * H.d), c = (int)(p - n * CX.d);
		dx[i] = (r % stride == 0 && j % stride == 0)
				? dy[((n * CY + c) * OH + r / stride) * OW + j / stride]
				: 0.0f;
	}
}

int mp_cuda_shortcut_a_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y, int stride)
{
	static const char op[] = "shortcut_a_forward";
	if (mp_cpu_shortcut_shape(be, op, "x", x, "y", y, stride))
		return -1;
	const int k = mp_cuda_act_storage(be, op, x, y);
	if (k)
		return k < 0 ? -1 : mp_cuda_nhwc_shortcut_forward(be, x, y, stride);
	const size_t count = mp_tensor_count(y);
	MP_LAUNCH(shortcut_kernel, mp_cuda_grid(count), MP_CUDA_THREADS, be, x->data, y->data, count,
		  x->c, mp_cuda_divider_for((unsigned)y->c), x->h, x->w,
		  mp_cuda_divider_for((unsigned)y->h), mp_cuda_divider_for((unsigned)y->w), stride);
	LAUNCH_CHECK(op, "shortcut_kernel");
	return 0;
}

int mp_cuda_shortcut_a_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx, int stride)
{
	static const char op[] = "shortcut_a_backward";
	if (mp_cpu_shortcut_shape(be, op, "dx", dx, "dy", dy, stride))
		return -1;
	const int k = mp_cuda_act_storage(be, op, dy, dx);
	if (k)
		return k < 0 ? -1 : mp_cuda_nhwc_shortcut_backward(be, dy, dx, stride);
	const size_t count = mp_tensor_count(dx);
	MP_LAUNCH(shortcut_backward_kernel, mp_cuda_grid(count), MP_CUDA_THREADS, be, dy->data,
		  dx->data, count, mp_cuda_divider_for((unsigned)dx->c), dy->c,
		  mp_cuda_divider_for((unsigned)dx->h), mp_cuda_divider_for((unsigned)dx->w), dy->h,
		  dy->w, stride);
	LAUNCH_CHECK(op, "shortcut_backward_kernel");
	return 0;
}

// ---- global average pooling ------------------------------------------------------

// One thread per plane, summed in double in order, as the reference.
__global__ void avgpool_kernel(const float *__restrict__ x, float *__restrict__ y,
			       size_t planes, size_t plane)
{
	GRID_STRIDE(p, planes)
	{
		double s = 0;
		for (size_t i = 0; i < plane; i++)
			s += x[p * plane + i];
		y[p] = (float)(s / (double)plane);
	}
}

__global__ void avgpool_backward_kernel(const float *__restrict__ dy, float *__restrict__ dx,
					size_t count, size_t plane)
{
	GRID_STRIDE(i, count)
	dx[i] = (float)(dy[i / plane] / (double)plane);
}

int mp_cuda_avgpool_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	static const char op[] = "avgpool_forward";
	if (mp_cpu_check(be, op, "x", x) || mp_cpu_expect(be, op, "y", y, x->n, x->c, 1, 1) ||
	    mp_cuda_float_only(be, op, y))
		return -1;
	if (mp_cuda_is_bf16(x))
		return mp_cuda_nhwc_avgpool_forward(be, x, y);
	const size_t planes = (size_t)x->n * x->c, plane = (size_t)x->h * x->w;
	MP_LAUNCH(avgpool_kernel, mp_cuda_grid(planes), MP_CUDA_THREADS, be, x->data, y->data,
		  planes, plane);
	LAUNCH_CHECK(op, "avgpool_kernel");
	return 0;
}

int mp_cuda_avgpool_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx)
{
	static const char op[] = "avgpool_backward";
	if (mp_cpu_check(be, op, "dx", dx) || mp_cpu_expect(be, op, "dy", dy, dx->n, dx->c, 1, 1) ||
	    mp_cuda_float_only(be, op, dy))
		return -1;
	if (mp_cuda_is_bf16(dx))
		return mp_cuda_nhwc_avgpool_backward(be, dy, dx);
	const size_t count = mp_tensor_count(dx), plane = (size_t)dx->h * dx->w;
	MP_LAUNCH(avgpool_backward_kernel, mp_cuda_grid(count), MP_CUDA_THREADS, be, dy->data,
		  dx->data, count, plane);
	LAUNCH_CHECK(op, "avgpool_backward_kernel");
	return 0;
}

// ---- fully connected, no bias (cuBLAS) ----------------------------------------------
//
// cuBLAS is column-major: a row-major [r, c] array is its transpose,
// a column-major c x r matrix with leading dimension c. With X = x^T
// (IN x N), W = w^T (IN x OUT), DY = dy^T (OUT x N):
//   y  = x w^T    ->  y^T  = W^T X         (OUT x N)
//   dx = dy w     ->  dx^T = W DY          (IN x N)
//   dw = dy^T x   ->  dw^T = X DY^T        (IN x OUT)

int mp_cuda_linear_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y)
{
	static const char op[] = "linear_forward";
	if (mp_cpu_linear_shape(be, op, x, w) || mp_cpu_expect(be, op, "y", y, x->n, w->n, 1, 1) ||
	    mp_cuda_float_only(be, op, x, w, y))
		return -1;
	const int N = x->n, IN = x->c, OUT = w->n;
	const float one = 1.0f, zero = 0.0f;
	CUBLAS_CHECK(op, cublasSgemm(mp_cuda(be)->cublas, CUBLAS_OP_T, CUBLAS_OP_N, OUT, N, IN,
				     &one, w->data, IN, x->data, IN, &zero, y->data, OUT));
	return 0;
}

int mp_cuda_linear_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw)
{
	static const char op[] = "linear_backward";
	if (mp_cpu_linear_shape(be, op, x, w) || mp_cpu_expect(be, op, "dy", dy, x->n, w->n, 1, 1))
		return -1;
	if ((dx && same_shape(be, op, "dx", dx, x)) || (dw && same_shape(be, op, "dw", dw, w)))
		return -1;
	if (mp_cuda_float_only(be, op, x, w, dy, dx, dw))
		return -1;
	const int N = x->n, IN = x->c, OUT = w->n;
	const float one = 1.0f, zero = 0.0f;
	cublasHandle_t h = mp_cuda(be)->cublas;
	if (dx)
		CUBLAS_CHECK(op, cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, IN, N, OUT, &one,
					     w->data, IN, dy->data, OUT, &zero, dx->data, IN));
	if (dw)
		CUBLAS_CHECK(op, cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, IN, OUT, N, &one,
					     x->data, IN, dy->data, OUT, &zero, dw->data, IN));
	return 0;
}

// ---- softmax cross-entropy -----------------------------------------------------------

// The labels are host integers: copy them to the device buffer.
static int put_labels(mp_backend *be, const char *op, const int32_t *labels, int n)
{
	mp_cuda_state *s = mp_cuda(be);
	if (s->labels_size < (size_t)n) {
		if (mp_cuda_not_recording(be, op, "the labels' buffer to grow"))
			return -1;
		s->mem_gen++;
		if (s->labels)
			cudaFree(s->labels);
		s->labels = NULL;
		s->labels_size = 0;
		CUDA_CHECK(op, cudaMalloc((void **)&s->labels, (size_t)n * sizeof(int32_t)));
		s->labels_size = (size_t)n;
	}
	CUDA_CHECK(op, cudaMemcpyAsync(s->labels, labels, (size_t)n * sizeof(int32_t),
				       cudaMemcpyHostToDevice, s->stream));
	// the host array is the caller's: wait until it has been read
	return mp_cuda_wait(be, op);
}

// One thread per row, in the reference's order and precision; the rows'
// losses go to row_loss, summed by sum_rows_kernel.
__global__ void xent_kernel(const float *__restrict__ logits, const int32_t *__restrict__ labels,
			    float smoothing, float *__restrict__ probs, double *__restrict__ row_loss,
			    int N, int K)
{
	const int n = blockIdx.x * blockDim.x + threadIdx.x;
	if (n >= N)
		return;
	row_loss[n] = mp_xent_row(logits + (size_t)n * K, K, labels[n], smoothing,
				  probs + (size_t)n * K);
}

// The mean of the rows' losses, added in order by one thread as the
// reference does (the same bits), on the device so that a recorded step
// needs no host arithmetic: its result is copied out as it is.
__global__ void sum_rows_kernel(const double *__restrict__ row_loss, int N,
				double *__restrict__ mean)
{
	double total = 0;
	for (int n = 0; n < N; n++)
		total += row_loss[n];
	*mean = total / N;
}

__global__ void xent_backward_kernel(const float *__restrict__ probs,
				     const int32_t *__restrict__ labels, float smoothing,
				     float *__restrict__ dlogits, int N, int K)
{
	GRID_STRIDE(i, (size_t)N * K)
	{
		const int n = (int)(i / K), k = (int)(i % K);
		dlogits[i] = mp_xent_grad(probs[i], k, labels[n], K, smoothing, N);
	}
}

int mp_cuda_softmax_xent_forward(mp_backend *be, const mp_tensor *logits,
				 const int32_t *labels, float smoothing, mp_tensor *probs,
				 double *loss)
{
	static const char op[] = "softmax_xent_forward";
	if (mp_cpu_xent_args(be, op, "logits", logits, labels, smoothing) ||
	    same_shape(be, op, "probs", probs, logits) || mp_cuda_float_only(be, op, logits, probs))
		return -1;
	if (!loss)
		return mp_cpu_fail(be, "%s: no loss output", op);
	const int N = logits->n, K = logits->c;
	mp_cuda_state *s = mp_cuda(be);
	// the rows' losses, then their mean
	double *rows = put_labels(be, op, labels, N) ? NULL
						     : mp_cuda_scratch(be, op, (size_t)N + 1);
	if (!rows)
		return -1;
	MP_LAUNCH(xent_kernel, (N + 127) / 128, 128, be, logits->data, s->labels, smoothing,
		  probs->data, rows, N, K);
	LAUNCH_CHECK(op, "xent_kernel");
	MP_LAUNCH(sum_rows_kernel, 1, 1, be, rows, N, rows + N);
	LAUNCH_CHECK(op, "sum_rows_kernel");
	CUDA_CHECK(op, cudaMemcpyAsync(loss, rows + N, sizeof(double), cudaMemcpyDeviceToHost,
				       s->stream));
	return mp_cuda_wait(be, op);
}

int mp_cuda_softmax_xent_backward(mp_backend *be, const mp_tensor *probs,
				  const int32_t *labels, float smoothing, mp_tensor *dlogits)
{
	static const char op[] = "softmax_xent_backward";
	if (mp_cpu_xent_args(be, op, "probs", probs, labels, smoothing) ||
	    same_shape(be, op, "dlogits", dlogits, probs) ||
	    mp_cuda_float_only(be, op, probs, dlogits))
		return -1;
	const int N = probs->n, K = probs->c;
	if (put_labels(be, op, labels, N))
		return -1;
	MP_LAUNCH(xent_backward_kernel, mp_cuda_grid((size_t)N * K), MP_CUDA_THREADS, be,
		  probs->data, mp_cuda(be)->labels, smoothing, dlogits->data, N, K);
	LAUNCH_CHECK(op, "xent_backward_kernel");
	return 0;
}

// ---- SGD ---------------------------------------------------------------------------------
//
// Every parameter tensor in one launch: a table of blocks, each a range of
// one tensor's elements, and the tensors' w, g, v pointers, both in device
// memory. They are built for a set of pointers and kept while the caller
// passes the same set (a network does, step after step).

#define SGD_CHUNK ((size_t)MP_CUDA_THREADS * 8)

// neon's update in float with explicit roundings (no fused multiply-add),
// the same operations in the same order as the CPU reference:
//   v = momentum v - lr (g + wd w);  w = w + v
// With shadow, each new w also goes, rounded to bf16, to its place in the
// tensor's KRSC copy: element (k, c, rs) of KCRS at (k, rs, c).
__global__ void sgd_kernel(float *const *__restrict__ ptrs,
			   const mp_cuda_sgd_block *__restrict__ blocks, int count,
			   const float *__restrict__ lr_p, float momentum, float wd,
			   __nv_bfloat16 *__restrict__ shadow,
			   const mp_cuda_sgd_tensor *__restrict__ tensors)
{
	const mp_cuda_sgd_block b = blocks[blockIdx.x];
	const float lr = *lr_p; // in device memory: a recorded step reads each run's
	float *w = ptrs[b.t], *v = ptrs[2 * count + b.t];
	const float *g = ptrs[count + b.t];
	mp_cuda_sgd_tensor t = {0, 1, 1};
	if (shadow)
		t = tensors[b.t];
	const size_t ctaps = (size_t)t.c * (size_t)t.taps;
	for (size_t i = b.begin + threadIdx.x; i < b.end; i += blockDim.x) {
		const float wi = w[i];
		const float decayed = __fadd_rn(g[i], __fmul_rn(wd, wi));
		const float vi = __fsub_rn(__fmul_rn(momentum, v[i]), __fmul_rn(lr, decayed));
		v[i] = vi;
		const float wn = __fadd_rn(wi, vi);
		w[i] = wn;
		if (shadow) {
			const size_t k = i / ctaps, r = i % ctaps, c = r / (size_t)t.taps,
				     rs = r % (size_t)t.taps;
			shadow[t.shadow + k * ctaps + rs * (size_t)t.c + c] = __float2bfloat16_rn(wn);
		}
	}
}

void mp_cuda_layers_free(mp_cuda_state *s)
{
	free(s->sgd_host);
	free(s->sgd_sizes);
	if (s->sgd_dev_ptrs)
		cudaFree(s->sgd_dev_ptrs);
	if (s->sgd_dev_blocks)
		cudaFree(s->sgd_dev_blocks);
	if (s->sgd_dev_tensors)
		cudaFree(s->sgd_dev_tensors);
	if (s->sgd_shadow)
		cudaFree(s->sgd_shadow);
	free(s->sgd_tensors);
	s->sgd_host = NULL;
	s->sgd_sizes = NULL;
	s->sgd_dev_ptrs = NULL;
	s->sgd_dev_blocks = NULL;
	s->sgd_tensors = s->sgd_dev_tensors = NULL;
	s->sgd_shadow = NULL;
	s->sgd_shadow_valid = 0;
	s->sgd_count = s->sgd_nblocks = 0;
}

const void *mp_cuda_filter_shadow(const mp_cuda_state *s, const mp_tensor *w)
{
	if (!s->sgd_shadow_valid)
		return NULL;
	for (int t = 0; t < s->sgd_count; t++)
		if (s->sgd_host[t] == w->data)
			return s->sgd_sizes[t] == mp_tensor_count(w) && s->sgd_tensors[t].c == w->c &&
					       s->sgd_tensors[t].taps == w->h * w->w
				       ? (const __nv_bfloat16 *)s->sgd_shadow + s->sgd_tensors[t].shadow
				       : NULL;
	return NULL;
}

void mp_cuda_params_written(mp_cuda_state *s, const void *p, size_t bytes)
{
	if (!s->sgd_shadow_valid && !s->recording)
		return;
	const uintptr_t a = (uintptr_t)p, z = a + bytes;
	for (int t = 0; t < s->sgd_count; t++) {
		const uintptr_t w = (uintptr_t)s->sgd_host[t], wz = w + s->sgd_sizes[t] * sizeof(float);
		if (a < wz && w < z) {
			// a recorded write happens at each launch: the launch says so
			if (s->recording)
				s->recorded_param_write = 1;
			if (!s->sgd_shadow_valid)
				return;
			s->sgd_shadow_valid = 0;
			// a graph recorded with the copies would read them stale
			s->mem_gen++;
			return;
		}
	}
}

// Are the filters' bf16 copies kept? In bf16, unless MP_CUDA_KEEP_FILTERS=0.
static int keeps_filters(const mp_cuda_state *s)
{
	return s->precision == MP_PRECISION_BF16 && s->keep_filters;
}

// Is the cached table the one for these tensors?
static int sgd_cached(const mp_cuda_state *s, mp_tensor *const *w, const mp_tensor *const *g,
		      mp_tensor *const *v, int count)
{
	if (!s->sgd_host || s->sgd_count != count)
		return 0;
	// with the parameters' bf16 copies where they are kept, without else
	if (keeps_filters(s) != (s->sgd_shadow != NULL))
		return 0;
	for (int t = 0; t < count; t++)
		if (s->sgd_host[t] != w[t]->data || s->sgd_host[count + t] != g[t]->data ||
		    s->sgd_host[2 * count + t] != v[t]->data ||
		    s->sgd_sizes[t] != mp_tensor_count(w[t]) ||
		    (s->sgd_tensors && (s->sgd_tensors[t].c != w[t]->c ||
					s->sgd_tensors[t].taps != w[t]->h * w[t]->w)))
			return 0;
	return 1;
}

static int sgd_build(mp_backend *be, const char *op, mp_tensor *const *w,
		     const mp_tensor *const *g, mp_tensor *const *v, int count)
{
	mp_cuda_state *s = mp_cuda(be);
	if (mp_cuda_not_recording(be, op, "new SGD tables"))
		return -1;
	s->mem_gen++;
	mp_cuda_layers_free(s);
	size_t nblocks = 0;
	for (int t = 0; t < count; t++)
		nblocks += (mp_tensor_count(w[t]) + SGD_CHUNK - 1) / SGD_CHUNK;
	if (nblocks > 0x7fffffff)
		return mp_cpu_fail(be, "%s: too many parameters", op);
	float **host = (float **)malloc(3 * (size_t)count * sizeof *host);
	size_t *sizes = (size_t *)malloc((size_t)count * sizeof *sizes);
	mp_cuda_sgd_block *blocks = (mp_cuda_sgd_block *)malloc(nblocks * sizeof *blocks);
	if (!host || !sizes || !blocks) {
		free(host);
		free(sizes);
		free(blocks);
		return mp_cpu_fail(be, "%s: out of memory", op);
	}
	size_t b = 0;
	for (int t = 0; t < count; t++) {
		host[t] = w[t]->data;
		host[count + t] = g[t]->data;
		host[2 * count + t] = v[t]->data;
		sizes[t] = mp_tensor_count(w[t]);
		for (size_t i = 0; i < sizes[t]; i += SGD_CHUNK) {
			blocks[b].t = t;
			blocks[b].begin = i;
			blocks[b].end = i + SGD_CHUNK < sizes[t] ? i + SGD_CHUNK : sizes[t];
			b++;
		}
	}
	s->sgd_host = host;
	s->sgd_sizes = sizes;
	s->sgd_count = count;
	s->sgd_nblocks = (int)nblocks;
	// bf16 copies of the parameters, for the convolutions: each 256-byte
	// aligned, as cudaMalloc's memory (a converted filter's) is, so that
	// cuDNN takes a copy as it takes a conversion
	size_t shadow_elems = 0;
	mp_cuda_sgd_tensor *tensors = NULL;
	if (keeps_filters(s)) {
		tensors = (mp_cuda_sgd_tensor *)malloc((size_t)count * sizeof *tensors);
		if (!tensors) {
			free(blocks);
			mp_cuda_layers_free(s);
			return mp_cpu_fail(be, "%s: out of memory", op);
		}
		for (int t = 0; t < count; t++) {
			tensors[t].shadow = shadow_elems;
			tensors[t].c = w[t]->c;
			tensors[t].taps = w[t]->h * w[t]->w;
			shadow_elems += (sizes[t] + 127) & ~(size_t)127;
		}
		s->sgd_tensors = tensors;
	}
	// the failing call is named: the wait also reports an earlier kernel's fault
	const char *call = "cudaMalloc";
	cudaError_t e = cudaMalloc((void **)&s->sgd_dev_ptrs, 3 * (size_t)count * sizeof *host);
	if (e == cudaSuccess)
		e = cudaMalloc((void **)&s->sgd_dev_blocks, nblocks * sizeof *blocks);
	if (e == cudaSuccess && tensors)
		e = cudaMalloc((void **)&s->sgd_dev_tensors, (size_t)count * sizeof *tensors);
	if (e == cudaSuccess && tensors)
		e = cudaMalloc(&s->sgd_shadow, shadow_elems * sizeof(__nv_bfloat16));
	if (e == cudaSuccess) {
		call = "cudaMemcpyAsync";
		e = cudaMemcpyAsync(s->sgd_dev_ptrs, host, 3 * (size_t)count * sizeof *host,
				    cudaMemcpyHostToDevice, s->stream);
	}
	if (e == cudaSuccess && tensors)
		e = cudaMemcpyAsync(s->sgd_dev_tensors, tensors, (size_t)count * sizeof *tensors,
				    cudaMemcpyHostToDevice, s->stream);
	if (e == cudaSuccess)
		e = cudaMemcpyAsync(s->sgd_dev_blocks, blocks, nblocks * sizeof *blocks,
				    cudaMemcpyHostToDevice, s->stream);
	if (e == cudaSuccess) { /* blocks is freed next */
		call = "cudaStreamSynchronize";
		e = cudaStreamSynchronize(s->stream);
	}
	free(blocks);
	if (e != cudaSuccess) {
		mp_cuda_layers_free(s);
		return mp_cuda_fail_cuda(be, op, call, e);
	}
	return 0;
}

int mp_cuda_sgd_step(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		     mp_tensor *const *v, int count, const mp_tensor *lr, float momentum, float wd)
{
	static const char op[] = "sgd_step";
	if (mp_cpu_sgd_check(be, w, g, v, count, lr))
		return -1;
	if (count <= 0) /* negative counts were refused above */
		return 0;
	mp_cuda_state *s = mp_cuda(be);
	if (!sgd_cached(s, w, g, v, count) && sgd_build(be, op, w, g, v, count))
		return -1;
	MP_LAUNCH(sgd_kernel, s->sgd_nblocks, MP_CUDA_THREADS, be, s->sgd_dev_ptrs,
		  s->sgd_dev_blocks, count, lr->data, momentum, wd,
		  (__nv_bfloat16 *)s->sgd_shadow, s->sgd_dev_tensors);
	LAUNCH_CHECK(op, "sgd_kernel");
	// the convolutions after it, in stream order, may take the copies;
	// a recorded step writes them only when its graph is launched
	if (s->recording)
		s->recorded_sgd = 1;
	else
		s->sgd_shadow_valid = s->sgd_shadow != NULL;
	return 0;
}

// ---- the operations, for the backend's table ------------------------------------------

void mp_cuda_ops_common(mp_backend_ops *o)
{
	o->fill = mp_cuda_fill;
	o->conv2d_forward = mp_cuda_conv2d_forward;
	o->conv2d_backward = mp_cuda_conv2d_backward;
	o->conv2d_backward_add = mp_cuda_conv2d_backward_add;
	o->bn_forward_train = mp_cuda_bn_forward_train;
	o->bn_forward_infer = mp_cuda_bn_forward_infer;
	o->bn_backward = mp_cuda_bn_backward;
	o->relu_forward = mp_cuda_relu_forward;
	o->relu_backward = mp_cuda_relu_backward;
	o->add = mp_cuda_add;
	o->shortcut_a_forward = mp_cuda_shortcut_a_forward;
	o->shortcut_a_backward = mp_cuda_shortcut_a_backward;
	o->avgpool_forward = mp_cuda_avgpool_forward;
	o->avgpool_backward = mp_cuda_avgpool_backward;
	o->linear_forward = mp_cuda_linear_forward;
	o->linear_backward = mp_cuda_linear_backward;
	o->softmax_xent_forward = mp_cuda_softmax_xent_forward;
	o->softmax_xent_backward = mp_cuda_softmax_xent_backward;
	o->sgd_step = mp_cuda_sgd_step;
	o->write_bytes = mp_cuda_write_bytes;
	o->augment_train = mp_cuda_augment_train;
	o->conv_bn_prepare = mp_cuda_conv_bn_prepare;
	o->conv_bn_forward_infer = mp_cuda_conv_bn_forward_infer;
	o->bn_relu_forward_train = mp_cuda_bn_relu_forward_train;
	o->bn_relu_backward = mp_cuda_bn_relu_backward;
}
