/* The CUDA backend's convolution driver (kernels/cuda/conv.cu) run on the
 * host against a stand-in for cuDNN's legacy calls: which algorithms it
 * asks for, when, and in which precision each direction runs. cuDNN's
 * arithmetic is not emulated (the stand-in's convolutions compute
 * nothing); the operands' conversions are convert.cu's own kernels.
 *
 * What it checks: a shape for which cuDNN offers bf16 an algorithm in
 * some directions and not in others (the 3-channel stem's filter
 * gradient, say) runs each call the same way at every step, so that a
 * step recorded as a graph after one op by op asks cuDNN for nothing
 * (cudnnFind* runs and synchronizes, which a stream capture forbids) and
 * computes what the step before it computed.
 *
 * TAP on stdout. */
#include "cuda_emu.h"

#include "../../kernels/cuda/convert.cu"
#include "../../kernels/cuda/nhwc.cu"
#include "../../kernels/cuda/conv.cu"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the backend's helpers, as backend_cuda.cu has them, on the host ---------------- */

int mp_cuda_fail_cuda(mp_backend *be, const char *op, const char *call, cudaError_t e)
{
	return mp_cpu_fail(be, "%s: %s: error %d", op, call, (int)e);
}

int mp_cuda_fail_cudnn(mp_backend *be, const char *op, const char *call, cudnnStatus_t s)
{
	return mp_cpu_fail(be, "%s: %s: status %d", op, call, (int)s);
}

int mp_cuda_not_recording(mp_backend *be, const char *op, const char *what)
{
	if (mp_cuda(be)->recording)
		return mp_cpu_fail(be, "%s: %s while recording a graph", op, what);
	return 0;
}

#include "emu_host.h"


/* MP_CUDA_PROFILE's events: not used here */
extern "C" cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
	(void)e;
	(void)s;
	return cudaSuccess;
}
extern "C" cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
	(void)e;
	return cudaSuccess;
}
extern "C" cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
	(void)a;
	(void)b;
	*ms = 0;
	return cudaSuccess;
}

/* MP_CUDNN_API=graph: not used here */
int mp_cuda_graph_plan(mp_backend *be, const char *op, mp_cuda_conv_algo *a, int dir,
		       const mp_tensor *x, const mp_tensor *w, const mp_tensor *y, int stride,
		       int pad, int bf16)
{
	(void)a, (void)dir, (void)x, (void)w, (void)y, (void)stride, (void)pad, (void)bf16;
	return mp_cpu_fail(be, "%s: no graph API here", op);
}
int mp_cuda_graph_exec(mp_backend *be, const char *op, const mp_cuda_conv_algo *a, int dir,
		       void *x, void *w, void *y)
{
	(void)a, (void)dir, (void)x, (void)w, (void)y;
	return mp_cpu_fail(be, "%s: no graph API here", op);
}
void mp_cuda_graph_free(mp_cuda_conv_algo *a)
{
	(void)a;
}

/* ---- cuDNN's legacy convolution calls, stood in for ------------------------------------ */
//
// Descriptors hold what they were given. The algorithm queries answer one
// algorithm, deterministic, without workspace, except that bf16 has none
// for the filter gradient of an input of 3 channels. The convolutions
// note the data type they ran in and compute nothing.

struct cudnnTensorStruct {
	cudnnDataType_t type;
	int n, c, h, w;
};
struct cudnnFilterStruct {
	cudnnDataType_t type;
	int k, c, h, w;
};
struct cudnnConvolutionStruct {
	int pad, stride;
};

static mp_cuda_state *state;	  /* the backend under test, for its recording flag */
static int queries, queries_recording; /* algorithm and workspace queries */
static cudnnDataType_t ran[3];	  /* the type each direction last ran in */
static int runs[3];

static void query(void)
{
	queries++;
	queries_recording += state->recording;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d)
{
	*d = (cudnnTensorDescriptor_t)calloc(1, sizeof **d);
	return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d)
{
	*d = (cudnnFilterDescriptor_t)calloc(1, sizeof **d);
	return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d)
{
	*d = (cudnnConvolutionDescriptor_t)calloc(1, sizeof **d);
	return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d)
{
	free(d);
	return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d)
{
	free(d);
	return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d)
{
	free(d);
	return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
					 cudnnDataType_t type, int n, int c, int h, int w)
{
	(void)format;
	*d = cudnnTensorStruct{type, n, c, h, w};
	return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
					 cudnnTensorFormat_t format, int k, int c, int h, int w)
{
	(void)format;
	*d = cudnnFilterStruct{type, k, c, h, w};
	return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w,
					      int u, int v, int dh, int dw,
					      cudnnConvolutionMode_t mode, cudnnDataType_t comp)
{
	(void)pad_w, (void)v, (void)dh, (void)dw, (void)mode, (void)comp;
	d->pad = pad_h;
	d->stride = u;
	return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m)
{
	(void)d, (void)m;
	return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t d,
						    const cudnnTensorDescriptor_t x,
						    const cudnnFilterDescriptor_t w, int *n, int *c,
						    int *h, int *wo)
{
	*n = x->n;
	*c = w->k;
	*h = (x->h + 2 * d->pad - w->h) / d->stride + 1;
	*wo = (x->w + 2 * d->pad - w->w) / d->stride + 1;
	return CUDNN_STATUS_SUCCESS;
}

template <typename Perf, typename Algo>
static cudnnStatus_t rank(const cudnnTensorDescriptor_t x, int dir, int *got, Perf *perf)
{
	query();
	const int bf16 = x->type == CUDNN_DATA_BFLOAT16;
	memset(perf, 0, sizeof *perf);
	perf->algo = (Algo)1;
	perf->status = bf16 && dir == 2 && x->c == 3 ? CUDNN_STATUS_NOT_SUPPORTED
						     : CUDNN_STATUS_SUCCESS;
	perf->determinism = CUDNN_DETERMINISTIC;
	perf->mathType = bf16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
	*got = 1;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
						     const cudnnFilterDescriptor_t w,
						     const cudnnConvolutionDescriptor_t c,
						     const cudnnTensorDescriptor_t y, const int n,
						     int *got, cudnnConvolutionFwdAlgoPerf_t *p)
{
	(void)h, (void)w, (void)c, (void)y, (void)n;
	return rank<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(x, 0, got, p);
}
cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
						   const cudnnFilterDescriptor_t w,
						   const cudnnConvolutionDescriptor_t c,
						   const cudnnTensorDescriptor_t y, const int n, int *got,
						   cudnnConvolutionFwdAlgoPerf_t *p)
{
	return cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, c, y, n, got, p);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t h,
							  const cudnnFilterDescriptor_t w,
							  const cudnnTensorDescriptor_t dy,
							  const cudnnConvolutionDescriptor_t c,
							  const cudnnTensorDescriptor_t dx, const int n,
							  int *got, cudnnConvolutionBwdDataAlgoPerf_t *p)
{
	(void)h, (void)w, (void)dy, (void)c, (void)n;
	return rank<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(dx, 1, got, p);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(cudnnHandle_t h,
							const cudnnFilterDescriptor_t w,
							const cudnnTensorDescriptor_t dy,
							const cudnnConvolutionDescriptor_t c,
							const cudnnTensorDescriptor_t dx, const int n,
							int *got, cudnnConvolutionBwdDataAlgoPerf_t *p)
{
	return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, dy, c, dx, n, got, p);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
	cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t c, const cudnnFilterDescriptor_t dw, const int n, int *got,
	cudnnConvolutionBwdFilterAlgoPerf_t *p)
{
	(void)h, (void)dy, (void)c, (void)dw, (void)n;
	return rank<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(x, 2, got,
											  p);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(cudnnHandle_t h,
							  const cudnnTensorDescriptor_t x,
							  const cudnnTensorDescriptor_t dy,
							  const cudnnConvolutionDescriptor_t c,
							  const cudnnFilterDescriptor_t dw, const int n,
							  int *got, cudnnConvolutionBwdFilterAlgoPerf_t *p)
{
	return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, dy, c, dw, n, got, p);
}
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
						      const cudnnFilterDescriptor_t w,
						      const cudnnConvolutionDescriptor_t c,
						      const cudnnTensorDescriptor_t y,
						      cudnnConvolutionFwdAlgo_t a, size_t *bytes)
{
	(void)h, (void)x, (void)w, (void)c, (void)y, (void)a;
	query();
	*bytes = 0;
	return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h,
							   const cudnnFilterDescriptor_t w,
							   const cudnnTensorDescriptor_t dy,
							   const cudnnConvolutionDescriptor_t c,
							   const cudnnTensorDescriptor_t dx,
							   cudnnConvolutionBwdDataAlgo_t a, size_t *bytes)
{
	(void)h, (void)w, (void)dy, (void)c, (void)dx, (void)a;
	query();
	*bytes = 0;
	return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t h,
							     const cudnnTensorDescriptor_t x,
							     const cudnnTensorDescriptor_t dy,
							     const cudnnConvolutionDescriptor_t c,
							     const cudnnFilterDescriptor_t dw,
							     cudnnConvolutionBwdFilterAlgo_t a,
							     size_t *bytes)
{
	(void)h, (void)x, (void)dy, (void)c, (void)dw, (void)a;
	query();
	*bytes = 0;
	return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t ran_in(int dir, cudnnDataType_t type)
{
	ran[dir] = type;
	runs[dir]++;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
				      const cudnnTensorDescriptor_t xd, const void *x,
				      const cudnnFilterDescriptor_t wd, const void *w,
				      const cudnnConvolutionDescriptor_t cd,
				      cudnnConvolutionFwdAlgo_t a, void *ws, size_t wsb,
				      const void *beta, const cudnnTensorDescriptor_t yd, void *y)
{
	(void)h, (void)alpha, (void)x, (void)wd, (void)w, (void)cd, (void)a, (void)ws, (void)wsb;
	(void)beta, (void)yd, (void)y;
	return ran_in(0, xd->type);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
					   const cudnnFilterDescriptor_t wd, const void *w,
					   const cudnnTensorDescriptor_t dyd, const void *dy,
					   const cudnnConvolutionDescriptor_t cd,
					   cudnnConvolutionBwdDataAlgo_t a, void *ws, size_t wsb,
					   const void *beta, const cudnnTensorDescriptor_t dxd,
					   void *dx)
{
	(void)h, (void)alpha, (void)wd, (void)w, (void)dy, (void)cd, (void)a, (void)ws, (void)wsb;
	(void)beta, (void)dyd, (void)dx;
	return ran_in(1, dxd->type);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
					     const cudnnTensorDescriptor_t xd, const void *x,
					     const cudnnTensorDescriptor_t dyd, const void *dy,
					     const cudnnConvolutionDescriptor_t cd,
					     cudnnConvolutionBwdFilterAlgo_t a, void *ws, size_t wsb,
					     const void *beta, const cudnnFilterDescriptor_t dwd,
					     void *dw)
{
	(void)h, (void)alpha, (void)x, (void)dyd, (void)dy, (void)cd, (void)a, (void)ws, (void)wsb;
	(void)beta, (void)dwd, (void)dw;
	return ran_in(2, xd->type);
}

/* ---- the tests ------------------------------------------------------------------------- */

static int tests, failures, cur_failed;

static void expect(int cond, const char *fmt, const char *what)
{
	if (!cond) {
		printf("# FAIL: ");
		printf(fmt, what);
		printf("\n");
		cur_failed = 1;
	}
}

static void ok(const char *name)
{
	tests++;
	failures += cur_failed;
	printf("%s %d - %s\n", cur_failed ? "not ok" : "ok", tests, name);
	cur_failed = 0;
}

static void tensor(mp_tensor *t, int n, int c, int h, int w)
{
	*t = mp_tensor{n, c, h, w, (float *)calloc((size_t)n * c * h * w, sizeof(float)), 0};
	if (!t->data)
		abort();
}

static const char *type_name(cudnnDataType_t t)
{
	return t == CUDNN_DATA_BFLOAT16 ? "bf16" : t == CUDNN_DATA_FLOAT ? "fp32" : "?";
}

/* A convolution of c input channels in bf16: one step op by op (forward,
 * then the backward pass; dx when with_dx), then the same step while
 * recording: no query of cuDNN then, every call as successful and in the
 * same precision as the step before. */
static void test_step(mp_backend *be, int c, int with_dx, int timed)
{
	char name[160];
	snprintf(name, sizeof name,
		 "x with %d channels, backward with%s dx, %s search: a recorded step repeats the "
		 "step before, asking cuDNN nothing",
		 c, with_dx ? "" : "out", timed ? "timed" : "heuristic");
	mp_cuda_state *s = mp_cuda(be);
	mp_cuda_conv_free(s); // a fresh algorithm cache
	s->timed_search = timed;
	mp_tensor x, w, y, dx, dw;
	tensor(&x, 2, c, 8, 8);
	tensor(&w, 4, c, 3, 3);
	tensor(&y, 2, 4, 4, 4);
	tensor(&dx, 2, c, 8, 8);
	tensor(&dw, 4, c, 3, 3);
	cudnnDataType_t before[3];
	for (int step = 0; step < 2; step++) {
		s->recording = step == 1;
		queries_recording = 0;
		memset(runs, 0, sizeof runs);
		int rc = mp_cuda_conv2d_forward(be, &x, &w, &y, 2, 1);
		expect(rc == 0, "forward: %s", mp_backend_error(be));
		rc = mp_cuda_conv2d_backward(be, &x, &w, &y, with_dx ? &dx : NULL, &dw, 2, 1);
		expect(rc == 0, "backward: %s", mp_backend_error(be));
		expect(runs[0] == 1 && runs[2] == 1 && runs[1] == with_dx, "%s",
		       "a direction did not run once");
		if (step == 0) {
			memcpy(before, ran, sizeof before);
			continue;
		}
		expect(queries_recording == 0, "%s", "cuDNN was asked for algorithms while recording");
		static const char *const dir[3] = {"y", "dx", "dw"};
		for (int d = 0; d < 3; d++) {
			if (d == 1 && !with_dx)
				continue;
			printf("#   %s: %s, then %s while recording\n", dir[d], type_name(before[d]),
			       type_name(ran[d]));
			expect(ran[d] == before[d], "%s ran in another precision while recording",
			       dir[d]);
		}
	}
	s->recording = 0;
	mp_tensor *all[] = {&x, &w, &y, &dx, &dw};
	for (mp_tensor *t : all)
		free(t->data);
	ok(name);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	mp_backend be;
	memset(&be, 0, sizeof be);
	state = (mp_cuda_state *)calloc(1, sizeof *state);
	if (!state)
		return 1;
	state->precision = MP_PRECISION_BF16;
	state->deterministic = 1;
	state->cc_major = 9;
	be.impl = state;
	printf("# conv.cu's algorithm choice against a stand-in for cuDNN\n");
	test_step(&be, 8, 1, 0); // bf16 in every direction
	test_step(&be, 3, 0, 0); // the stem: no bf16 dw
	test_step(&be, 3, 1, 0);
	test_step(&be, 3, 0, 1);
	printf("1..%d\n", tests);
	printf("# %d of %d failed\n", failures, tests);
	mp_cuda_conv_free(state);
	mp_cuda_buffer_free(&state->scratch);
	free(state);
	return failures ? 1 : 0;
}
