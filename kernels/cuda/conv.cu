// 2-D convolution without bias through cuDNN's classic descriptor API,
// fp32 NCHW, OIHW weights, cross-correlation as PyTorch and the CPU
// reference define it.
//
// Arithmetic: the descriptor asks for CUDNN_FMA_MATH, which rules out
// TF32 tensor-core kernels (cuDNN's default math allows them for fp32 on
// Ampere and later), so results stay within float rounding of the CPU
// reference.
//
// Algorithms: chosen once per shape by cuDNN's heuristics
// (cudnnGet*Algorithm_v7, not the timing cudnnFind*, so that the same
// shape gets the same algorithm in every run) and cached. The backward
// passes take only algorithms cuDNN reports deterministic (BWD_DATA_ALGO_1
// and BWD_FILTER_ALGO_1 are), so a training run on one GPU repeats
// bit for bit. The workspace grows to the largest need seen.
#include <stdlib.h>
#include <string.h>

#include "cuda.h"

// Algorithms that would need more workspace than this are passed over.
static const size_t WS_LIMIT = (size_t)2 << 30;

static void conv_key(int key[9], const mp_tensor *x, const mp_tensor *w, int stride, int pad)
{
	key[0] = x->n;
	key[1] = x->c;
	key[2] = x->h;
	key[3] = x->w;
	key[4] = w->n;
	key[5] = w->h;
	key[6] = w->w;
	key[7] = stride;
	key[8] = pad;
}

static mp_cuda_conv_algo *find_algo(mp_backend *be, const char *op, const int key[9])
{
	mp_cuda_state *s = mp_cuda(be);
	for (int i = 0; i < s->nalgos; i++)
		if (!memcmp(s->algos[i].key, key, sizeof s->algos[i].key))
			return &s->algos[i];
	if (s->nalgos == s->algos_cap) {
		int cap = s->algos_cap ? 2 * s->algos_cap : 16;
		mp_cuda_conv_algo *a =
			(mp_cuda_conv_algo *)realloc(s->algos, (size_t)cap * sizeof *a);
		if (!a) {
			mp_cpu_fail(be, "%s: out of memory", op);
			return NULL;
		}
		s->algos = a;
		s->algos_cap = cap;
	}
	mp_cuda_conv_algo *a = &s->algos[s->nalgos++];
	memset(a, 0, sizeof *a);
	memcpy(a->key, key, sizeof a->key);
	return a;
}

// Describes x, w, y and the convolution in the state's descriptors, and
// checks that cuDNN computes the output size we do.
static int describe(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w,
		    const mp_tensor *y, int stride, int pad)
{
	mp_cuda_state *s = mp_cuda(be);
	CUDNN_CHECK(op, cudnnSetTensor4dDescriptor(s->xdesc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
						   x->n, x->c, x->h, x->w));
	CUDNN_CHECK(op, cudnnSetFilter4dDescriptor(s->wdesc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
						   w->n, w->c, w->h, w->w));
	CUDNN_CHECK(op, cudnnSetConvolution2dDescriptor(s->convdesc, pad, pad, stride, stride, 1,
							1, CUDNN_CROSS_CORRELATION,
							CUDNN_DATA_FLOAT));
	CUDNN_CHECK(op, cudnnSetConvolutionMathType(s->convdesc, CUDNN_FMA_MATH));
	int on, oc, oh, ow;
	CUDNN_CHECK(op, cudnnGetConvolution2dForwardOutputDim(s->convdesc, s->xdesc, s->wdesc,
							      &on, &oc, &oh, &ow));
	if (on != y->n || oc != y->c || oh != y->h || ow != y->w)
		return mp_cpu_fail(be, "%s: cuDNN computes an output of %dx%dx%dx%d, expected %dx%dx%dx%d",
				   op, on, oc, oh, ow, y->n, y->c, y->h, y->w);
	CUDNN_CHECK(op, cudnnSetTensor4dDescriptor(s->ydesc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
						   y->n, y->c, y->h, y->w));
	return 0;
}

static int is_tensor_op(cudnnMathType_t m)
{
	return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

// The first usable algorithm of cuDNN's ranked list: it succeeded, uses no
// tensor-op math, fits the workspace limit, and (when deterministic is
// set) is deterministic. -1 when none is.
template <typename Perf>
static int pick(const Perf *perf, int count, int deterministic)
{
	for (int i = 0; i < count; i++)
		if (perf[i].status == CUDNN_STATUS_SUCCESS && !is_tensor_op(perf[i].mathType) &&
		    perf[i].memory <= WS_LIMIT &&
		    (!deterministic || perf[i].determinism == CUDNN_DETERMINISTIC))
			return i;
	return -1;
}

static int grow_workspace(mp_backend *be, const char *op, size_t need)
{
	mp_cuda_state *s = mp_cuda(be);
	if (need <= s->ws_size)
		return 0;
	if (s->ws) {
		cudaFree(s->ws); // waits for the work that uses it
		s->ws = NULL;
		s->ws_size = 0;
	}
	CUDA_CHECK(op, cudaMalloc(&s->ws, need));
	s->ws_size = need;
	return 0;
}

int mp_cuda_conv2d_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			   mp_tensor *y, int stride, int pad)
{
	static const char op[] = "conv2d_forward";
	int oh, ow;
	if (mp_cpu_conv_shape(be, op, x, w, stride, pad, &oh, &ow) ||
	    mp_cpu_expect(be, op, "y", y, x->n, w->n, oh, ow) ||
	    describe(be, op, x, w, y, stride, pad))
		return -1;
	mp_cuda_state *s = mp_cuda(be);
	int key[9];
	conv_key(key, x, w, stride, pad);
	mp_cuda_conv_algo *a = find_algo(be, op, key);
	if (!a)
		return -1;
	if (!a->have_fwd) {
		cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
		int got = 0;
		CUDNN_CHECK(op, cudnnGetConvolutionForwardAlgorithm_v7(
					s->cudnn, s->xdesc, s->wdesc, s->convdesc, s->ydesc,
					CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
		int i = pick(perf, got, 0);
		if (i < 0)
			return mp_cpu_fail(be, "%s: cuDNN offers no fp32 algorithm for x %dx%dx%dx%d, w %dx%dx%dx%d",
					   op, x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w);
		a->fwd = perf[i].algo;
		CUDNN_CHECK(op, cudnnGetConvolutionForwardWorkspaceSize(s->cudnn, s->xdesc, s->wdesc,
									s->convdesc, s->ydesc,
									a->fwd, &a->fwd_ws));
		a->have_fwd = 1;
	}
	if (grow_workspace(be, op, a->fwd_ws))
		return -1;
	const float one = 1.0f, zero = 0.0f;
	CUDNN_CHECK(op, cudnnConvolutionForward(s->cudnn, &one, s->xdesc, x->data, s->wdesc,
						w->data, s->convdesc, a->fwd, s->ws, s->ws_size,
						&zero, s->ydesc, y->data));
	return 0;
}

int mp_cuda_conv2d_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride,
			    int pad)
{
	static const char op[] = "conv2d_backward";
	int oh, ow;
	if (mp_cpu_conv_shape(be, op, x, w, stride, pad, &oh, &ow) ||
	    mp_cpu_expect(be, op, "dy", dy, x->n, w->n, oh, ow))
		return -1;
	if (dx && mp_cpu_expect(be, op, "dx", dx, x->n, x->c, x->h, x->w))
		return -1;
	if (dw && mp_cpu_expect(be, op, "dw", dw, w->n, w->c, w->h, w->w))
		return -1;
	if (!dx && !dw)
		return 0;
	if (describe(be, op, x, w, dy, stride, pad))
		return -1;
	mp_cuda_state *s = mp_cuda(be);
	int key[9];
	conv_key(key, x, w, stride, pad);
	mp_cuda_conv_algo *a = find_algo(be, op, key);
	if (!a)
		return -1;
	const float one = 1.0f, zero = 0.0f;
	if (dx) {
		if (!a->have_bwd_data) {
			cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
			int got = 0;
			CUDNN_CHECK(op, cudnnGetConvolutionBackwardDataAlgorithm_v7(
						s->cudnn, s->wdesc, s->ydesc, s->convdesc, s->xdesc,
						CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf));
			int i = pick(perf, got, 1);
			if (i < 0)
				return mp_cpu_fail(be, "%s: cuDNN offers no deterministic fp32 algorithm for dx of x %dx%dx%dx%d, w %dx%dx%dx%d",
						   op, x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w);
			a->bwd_data = perf[i].algo;
			CUDNN_CHECK(op, cudnnGetConvolutionBackwardDataWorkspaceSize(
						s->cudnn, s->wdesc, s->ydesc, s->convdesc, s->xdesc,
						a->bwd_data, &a->bwd_data_ws));
			a->have_bwd_data = 1;
		}
		if (grow_workspace(be, op, a->bwd_data_ws))
			return -1;
		CUDNN_CHECK(op, cudnnConvolutionBackwardData(s->cudnn, &one, s->wdesc, w->data,
							     s->ydesc, dy->data, s->convdesc,
							     a->bwd_data, s->ws, s->ws_size, &zero,
							     s->xdesc, dx->data));
	}
	if (dw) {
		if (!a->have_bwd_filter) {
			cudnnConvolutionBwdFilterAlgoPerf_t
				perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
			int got = 0;
			CUDNN_CHECK(op, cudnnGetConvolutionBackwardFilterAlgorithm_v7(
						s->cudnn, s->xdesc, s->ydesc, s->convdesc, s->wdesc,
						CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf));
			int i = pick(perf, got, 1);
			if (i < 0)
				return mp_cpu_fail(be, "%s: cuDNN offers no deterministic fp32 algorithm for dw of x %dx%dx%dx%d, w %dx%dx%dx%d",
						   op, x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w);
			a->bwd_filter = perf[i].algo;
			CUDNN_CHECK(op, cudnnGetConvolutionBackwardFilterWorkspaceSize(
						s->cudnn, s->xdesc, s->ydesc, s->convdesc, s->wdesc,
						a->bwd_filter, &a->bwd_filter_ws));
			a->have_bwd_filter = 1;
		}
		if (grow_workspace(be, op, a->bwd_filter_ws))
			return -1;
		CUDNN_CHECK(op, cudnnConvolutionBackwardFilter(s->cudnn, &one, s->xdesc, x->data,
							       s->ydesc, dy->data, s->convdesc,
							       a->bwd_filter, s->ws, s->ws_size,
							       &zero, s->wdesc, dw->data));
	}
	return 0;
}

void mp_cuda_conv_free(mp_cuda_state *s)
{
	if (s->ws)
		cudaFree(s->ws);
	s->ws = NULL;
	s->ws_size = 0;
	free(s->algos);
	s->algos = NULL;
	s->nalgos = s->algos_cap = 0;
}
