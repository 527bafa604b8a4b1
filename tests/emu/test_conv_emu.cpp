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
 * computes what the step before it computed; the same with the graph
 * API's plans (MP_CUDNN_API=graph, conv_graph.cu stood in for). That each
 * direction takes the first algorithm it may of cuDNN's ranked list and
 * runs with the math type it was ranked under; a direction with no bf16
 * algorithm runs in fp32, one with none at all is an error. MP_CUDNN_LOG's
 * lines and MP_CUDA_PROFILE's counts and table. More shapes than the
 * cache's first room, each chosen once.
 *
 * TAP on stdout. */
#include "cuda_emu.h"

#include "../../kernels/cuda/convert.cu"
#include "../../kernels/cuda/nhwc.cu"
#include "../../kernels/cuda/conv.cu"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <unistd.h>

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
#include "emu_tap.h"


/* MP_CUDA_PROFILE's events: every timed section takes 1 ms */
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
	*ms = 1;
	return cudaSuccess;
}

/* MP_CUDNN_API=graph (conv_graph.cu), stood in for below */
static void query(void);
static cudnnStatus_t ran_in(int dir, cudnnDataType_t type);

/* a plan for every direction but bf16's filter gradient of 3 channels, as
 * the legacy stand-in's algorithms below */
int mp_cuda_graph_plan(mp_backend *be, const char *op, mp_cuda_conv_algo *a, int dir,
		       const mp_tensor *x, const mp_tensor *w, const mp_tensor *y, int stride,
		       int pad, int bf16)
{
	(void)be, (void)op, (void)w, (void)y, (void)stride, (void)pad;
	query();
	if (bf16 && dir == 2 && x->c == 3)
		return 1;
	a->gplan[dir] = (void *)&a->gplan[dir];
	a->gws[dir] = 0;
	return 0;
}
int mp_cuda_graph_exec(mp_backend *be, const char *op, const mp_cuda_conv_algo *a, int dir,
		       void *x, void *w, void *y)
{
	(void)x, (void)w, (void)y;
	if (!a->gplan[dir])
		return mp_cpu_fail(be, "%s: no plan for direction %d", op, dir);
	ran_in(dir == 3 ? 1 : dir, a->key[9] ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT);
	return 0;
}
void mp_cuda_graph_free(mp_cuda_conv_algo *a)
{
	for (int d = 0; d < 4; d++)
		a->gplan[d] = NULL;
}

/* layers.cu's: no SGD step here, so no filters kept in bf16 */
const void *mp_cuda_filter_shadow(const mp_cuda_state *s, const mp_tensor *w)
{
	(void)s, (void)w;
	return NULL;
}

/* bn.cu's: no BN here, so no counters */
unsigned *mp_cuda_bn_counters(mp_backend *be, const char *op, size_t count)
{
	(void)count;
	mp_cpu_fail(be, "%s: BN's counters asked for in a convolution test", op);
	return NULL;
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
	cudnnMathType_t math;
};

static mp_cuda_state *state;	  /* the backend under test, for its recording flag */
static int queries, queries_recording; /* algorithm and workspace queries */
static cudnnDataType_t ran[3];	  /* the type each direction last ran in */
static int runs[3];
static int ran_algo[3];		  /* the algorithm each direction last ran */
static cudnnMathType_t ran_math[3]; /* the descriptor's math type then */
/* The algorithms offered (rank): 0, one per direction, deterministic,
 * except none for bf16's filter gradient of 3 channels; RANKED, a list
 * whose first usable entry depends on the precision and direction (see
 * rank_list); NO_BF16_FWD, as 0 and none for the forward pass in bf16;
 * NO_DX, as 0 and none for dx in any precision. */
enum { ONE, RANKED, NO_BF16_FWD, NO_DX };
static int offer;

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
	d->math = m;
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

/* RANKED: cuDNN's list as it may come, best first: one that failed, one
 * on tensor cores (fp32 must pass it over: TF32), one whose workspace
 * passes the limit, one nondeterministic (a backward pass passes it over
 * in fp32), one deterministic. In bf16 the dx list has no deterministic
 * entry (bf16 settles for the first usable), and ranks it under the
 * default math, the others under tensor-op math: each direction must run
 * with its own. Algorithm k is entry k. */
template <typename Perf, typename Algo>
static int rank_list(int bf16, int dir, Perf *perf)
{
	static const struct {
		cudnnStatus_t status;
		cudnnMathType_t math;
		size_t memory;
		cudnnDeterminism_t det;
	} list[5] = {
		{CUDNN_STATUS_NOT_SUPPORTED, CUDNN_FMA_MATH, 0, CUDNN_DETERMINISTIC},
		{CUDNN_STATUS_SUCCESS, CUDNN_TENSOR_OP_MATH, 0, CUDNN_DETERMINISTIC},
		{CUDNN_STATUS_SUCCESS, CUDNN_FMA_MATH, (size_t)3 << 30, CUDNN_DETERMINISTIC},
		{CUDNN_STATUS_SUCCESS, CUDNN_FMA_MATH, 0, CUDNN_NON_DETERMINISTIC},
		{CUDNN_STATUS_SUCCESS, CUDNN_FMA_MATH, 1024, CUDNN_DETERMINISTIC},
	};
	for (int k = 0; k < 5; k++) {
		memset(&perf[k], 0, sizeof perf[k]);
		perf[k].algo = (Algo)k;
		perf[k].status = list[k].status;
		perf[k].mathType = list[k].math;
		perf[k].memory = list[k].memory;
		perf[k].determinism = list[k].det;
		if (bf16 && dir == 1) {
			perf[k].determinism = CUDNN_NON_DETERMINISTIC;
			if (k == 1)
				perf[k].mathType = CUDNN_DEFAULT_MATH;
		}
	}
	return 5;
}

template <typename Perf, typename Algo>
static cudnnStatus_t rank(const cudnnTensorDescriptor_t x, int dir, int *got, Perf *perf)
{
	query();
	const int bf16 = x->type == CUDNN_DATA_BFLOAT16;
	if (offer == RANKED) {
		*got = rank_list<Perf, Algo>(bf16, dir, perf);
		return CUDNN_STATUS_SUCCESS;
	}
	memset(perf, 0, sizeof *perf);
	perf->algo = (Algo)1;
	const int none = (bf16 && dir == 2 && x->c == 3) || (offer == NO_BF16_FWD && bf16 && dir == 0) ||
			 (offer == NO_DX && dir == 1);
	perf->status = none ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
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

static cudnnStatus_t ran_with(int dir, cudnnDataType_t type, int algo,
			      const cudnnConvolutionDescriptor_t cd)
{
	ran_algo[dir] = algo;
	ran_math[dir] = cd->math;
	return ran_in(dir, type);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
				      const cudnnTensorDescriptor_t xd, const void *x,
				      const cudnnFilterDescriptor_t wd, const void *w,
				      const cudnnConvolutionDescriptor_t cd,
				      cudnnConvolutionFwdAlgo_t a, void *ws, size_t wsb,
				      const void *beta, const cudnnTensorDescriptor_t yd, void *y)
{
	(void)h, (void)alpha, (void)x, (void)wd, (void)w, (void)ws, (void)wsb;
	(void)beta, (void)yd, (void)y;
	return ran_with(0, xd->type, (int)a, cd);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
					   const cudnnFilterDescriptor_t wd, const void *w,
					   const cudnnTensorDescriptor_t dyd, const void *dy,
					   const cudnnConvolutionDescriptor_t cd,
					   cudnnConvolutionBwdDataAlgo_t a, void *ws, size_t wsb,
					   const void *beta, const cudnnTensorDescriptor_t dxd,
					   void *dx)
{
	(void)h, (void)alpha, (void)wd, (void)w, (void)dy, (void)ws, (void)wsb;
	(void)beta, (void)dyd, (void)dx;
	return ran_with(1, dxd->type, (int)a, cd);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
					     const cudnnTensorDescriptor_t xd, const void *x,
					     const cudnnTensorDescriptor_t dyd, const void *dy,
					     const cudnnConvolutionDescriptor_t cd,
					     cudnnConvolutionBwdFilterAlgo_t a, void *ws, size_t wsb,
					     const void *beta, const cudnnFilterDescriptor_t dwd,
					     void *dw)
{
	(void)h, (void)alpha, (void)x, (void)dyd, (void)dy, (void)ws, (void)wsb;
	(void)beta, (void)dwd, (void)dw;
	return ran_with(2, xd->type, (int)a, cd);
}

/* ---- the tests ------------------------------------------------------------------------- */

static void expect(int cond, const char *fmt, const char *what)
{
	if (!cond) {
		printf("# FAIL: ");
		printf(fmt, what);
		printf("\n");
		cur_failed = 1;
	}
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
static void test_step(mp_backend *be, int c, int with_dx, int timed, int graph = 0)
{
	char name[160];
	snprintf(name, sizeof name,
		 "x with %d channels, backward with%s dx, %s: a recorded step repeats the "
		 "step before, asking cuDNN nothing",
		 c, with_dx ? "" : "out",
		 graph ? "graph API plans" : timed ? "timed search" : "heuristic search");
	mp_cuda_state *s = mp_cuda(be);
	mp_cuda_conv_free(s); // a fresh algorithm cache
	s->timed_search = timed;
	s->graph_api = graph;
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
	s->graph_api = 0;
	mp_tensor *all[] = {&x, &w, &y, &dx, &dw};
	for (mp_tensor *t : all)
		free(t->data);
	ok(name);
}

/* The operands of a convolution of 2 images of c x h x w into 4 channels
 * by 3 x 3, stride 2, pad 1. */
struct conv_operands {
	mp_tensor x, w, y, dx, dw;
};

static void operands(conv_operands *o, int c, int h, int w)
{
	tensor(&o->x, 2, c, h, w);
	tensor(&o->w, 4, c, 3, 3);
	tensor(&o->y, 2, 4, (h - 1) / 2 + 1, (w - 1) / 2 + 1);
	tensor(&o->dx, 2, c, h, w);
	tensor(&o->dw, 4, c, 3, 3);
}

static void operands_free(conv_operands *o)
{
	mp_tensor *all[] = {&o->x, &o->w, &o->y, &o->dx, &o->dw};
	for (mp_tensor *t : all)
		free(t->data);
}

/* Forward, then backward with dx and dw. */
static int conv_step(mp_backend *be, conv_operands *o)
{
	memset(runs, 0, sizeof runs);
	if (mp_cuda_conv2d_forward(be, &o->x, &o->w, &o->y, 2, 1) < 0 ||
	    mp_cuda_conv2d_backward(be, &o->x, &o->w, &o->y, &o->dx, &o->dw, 2, 1) < 0)
		return -1;
	return 0;
}

static void start(mp_backend *be, int offered, int precision)
{
	mp_cuda_state *s = mp_cuda(be);
	mp_cuda_conv_free(s);
	offer = offered;
	s->precision = precision;
}

/* cuDNN's ranked lists (RANKED): each direction takes the first entry it
 * may (fp32: no tensor-op math, the workspace within the limit, and for
 * the backward passes deterministic; bf16: deterministic where there is
 * one), and runs with the math type that entry was ranked under, at the
 * first step and the next. */
static void test_ranked(mp_backend *be, int bf16)
{
	char name[128];
	snprintf(name, sizeof name, "%s: each direction runs the first algorithm it may of "
		 "cuDNN's list, with its own math type", bf16 ? "bf16" : "fp32");
	start(be, RANKED, bf16 ? MP_PRECISION_BF16 : MP_PRECISION_FP32);
	/* fp32: the nondeterministic entry for y, the deterministic one
	 * after it for dx and dw; bf16: the tensor-op entry, in dx
	 * (nothing deterministic) under the default math */
	const int want_fp32[3] = {3, 4, 4}, want_bf16[3] = {1, 1, 1};
	const cudnnMathType_t math_bf16[3] = {CUDNN_TENSOR_OP_MATH, CUDNN_DEFAULT_MATH,
					      CUDNN_TENSOR_OP_MATH};
	conv_operands o;
	operands(&o, 8, 8, 8);
	for (int step = 0; step < 2; step++) {
		const int rc = conv_step(be, &o);
		expect(rc == 0, "step: %s", mp_backend_error(be));
		for (int d = 0; rc == 0 && d < 3; d++) {
			const int want = bf16 ? want_bf16[d] : want_fp32[d];
			const cudnnMathType_t math = bf16 ? math_bf16[d] : CUDNN_FMA_MATH;
			printf("#   step %d, direction %d: algorithm %d, math %d\n", step + 1, d,
			       ran_algo[d], (int)ran_math[d]);
			expect(ran_algo[d] == want, "%s", "another algorithm ran");
			expect(ran_math[d] == math, "%s", "it ran with another math type");
		}
	}
	operands_free(&o);
	ok(name);
}

/* No bf16 algorithm for the forward pass: it runs in fp32, the backward
 * passes stay in bf16. No dx algorithm at all: an error that says so, in
 * either precision. */
static void test_none(mp_backend *be)
{
	conv_operands o;
	operands(&o, 8, 8, 8);
	start(be, NO_BF16_FWD, MP_PRECISION_BF16);
	for (int step = 0; step < 2; step++) {
		const int rc = conv_step(be, &o);
		expect(rc == 0, "step: %s", mp_backend_error(be));
		expect(ran[0] == CUDNN_DATA_FLOAT, "%s", "y did not run in fp32");
		expect(ran[1] == CUDNN_DATA_BFLOAT16 && ran[2] == CUDNN_DATA_BFLOAT16, "%s",
		       "dx or dw did not run in bf16");
	}
	ok("no bf16 algorithm for y: y runs in fp32, dx and dw in bf16");
	for (int bf16 = 0; bf16 < 2; bf16++) {
		start(be, NO_DX, bf16 ? MP_PRECISION_BF16 : MP_PRECISION_FP32);
		const int rc = conv_step(be, &o);
		printf("#   %s: %s\n", bf16 ? "bf16" : "fp32", rc < 0 ? mp_backend_error(be) : "no error");
		expect(rc < 0 && strstr(mp_backend_error(be), "cuDNN offers no deterministic dx fp32 "
						      "algorithm for x 2x8x8x8, w 4x8x3x3"),
		       "%s", "no error, or another");
	}
	ok("no dx algorithm: an error that names the shape, in fp32 and in bf16");
	operands_free(&o);
}

/* Reads what f writes on stderr. */
template <typename F> static std::string stderr_of(F f)
{
	fflush(stderr);
	FILE *tmp = tmpfile();
	const int saved = dup(2);
	if (!tmp || saved < 0 || dup2(fileno(tmp), 2) < 0)
		abort();
	f();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	std::string out;
	rewind(tmp);
	for (int ch; (ch = fgetc(tmp)) != EOF;)
		out += (char)ch;
	fclose(tmp);
	return out;
}

/* MP_CUDNN_LOG=1 and MP_CUDA_PROFILE=1: a line per choice; each call's
 * sections timed (1 ms each here: the conversions twice for y, three
 * times for dx, which counts dy's, twice for dw) and the table, where a
 * shape only run forward (inference) has its y line alone. The graph
 * API's plans logged alike. */
static void test_log_profile(mp_backend *be)
{
	mp_cuda_state *s = mp_cuda(be);
	start(be, ONE, MP_PRECISION_BF16);
	s->log_choices = 1;
	s->profile = 1;
	conv_operands o, f;
	operands(&o, 8, 8, 8);
	operands(&f, 16, 6, 6);
	int rc = 0;
	std::string log = stderr_of([&]() {
		rc = conv_step(be, &o) | conv_step(be, &o);
		rc |= mp_cuda_conv2d_forward(be, &f.x, &f.w, &f.y, 2, 1);
		/* neither gradient wanted: nothing to run */
		memset(runs, 0, sizeof runs);
		rc |= mp_cuda_conv2d_backward(be, &o.x, &o.w, &o.y, NULL, NULL, 2, 1);
		rc |= runs[1] | runs[2];
		mp_cuda_conv_report(s);
	});
	expect(rc == 0, "steps: %s", mp_backend_error(be));
	printf("%s\n", ("# " + log.substr(0, log.find('\n'))).c_str());
	int lines = 0;
	for (size_t i = 0; (i = log.find("mp-cuda: conv x 2x8x8x8 w 4x8x3x3 stride 2 pad 1 bf16", i)) !=
			   std::string::npos;
	     i++)
		lines++;
	expect(lines == 3, "%s", "not one log line per direction");
	expect(log.find("x 2x8x8x8 w 4x8x3x3 s2 p1") != std::string::npos, "%s",
	       "the profile has no line for the shape");
	int fwd_only = 0;
	for (size_t i = 0; (i = log.find("x 2x16x6x6 w 4x16x3x3 s2 p1", i)) != std::string::npos; i++)
		fwd_only++;
	expect(fwd_only == 1, "%s", "the forward-only shape has not one line in the table");
	const mp_cuda_conv_algo *a = s->nalgos == 2 ? &s->algos[0] : NULL;
	expect(a != NULL, "%s", "not two algorithm entries");
	const double convert[3] = {2, 3, 2};
	for (int d = 0; a && d < 3; d++) {
		printf("#   direction %d: %ld calls, cuDNN %.0f ms, conversions %.0f ms\n", d,
		       a->calls[d], a->ms_cudnn[d], a->ms_convert[d]);
		expect(a->calls[d] == 2 && a->ms_cudnn[d] == 2 && a->ms_convert[d] == 2 * convert[d],
		       "%s", "calls or times miscounted");
	}
	mp_cuda_conv_free(s);
	s->graph_api = 1;
	std::string glog = stderr_of([&]() { rc |= conv_step(be, &o); });
	s->graph_api = 0;
	s->log_choices = s->profile = 0;
	int plans = 0;
	for (size_t i = 0; (i = glog.find("graph API plan", i)) != std::string::npos; i++)
		plans++;
	expect(rc == 0 && plans == 3, "%s", "not one graph API log line per direction");
	operands_free(&o);
	operands_free(&f);
	ok("MP_CUDNN_LOG and MP_CUDA_PROFILE: a line per choice, each call timed, the table");
}

/* More shapes than the cache's first room (16), as a multiscale
 * evaluation's views make: each chosen once, found again after the cache
 * has moved. */
static void test_many_shapes(mp_backend *be)
{
	enum { SHAPES = 40 };
	start(be, ONE, MP_PRECISION_BF16);
	int before = 0;
	for (int round = 0; round < 2; round++) {
		if (round == 1)
			before = queries;
		for (int k = 0; k < SHAPES; k++) {
			conv_operands o;
			operands(&o, 8, 4 + k, 5);
			expect(conv_step(be, &o) == 0, "step: %s", mp_backend_error(be));
			operands_free(&o);
		}
	}
	printf("#   %d entries; %d queries in the second round\n", mp_cuda(be)->nalgos,
	       queries - before);
	expect(mp_cuda(be)->nalgos == SHAPES, "%s", "not one entry per shape");
	expect(queries == before, "%s", "cuDNN was asked again for a shape it had answered");
	ok("40 shapes: each chosen once, found again after the cache grew");
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
	test_step(&be, 8, 1, 0, 1);
	test_step(&be, 3, 1, 0, 1);
	test_ranked(&be, 0);
	test_ranked(&be, 1);
	test_none(&be);
	test_log_profile(&be);
	test_many_shapes(&be);
	mp_cuda_conv_free(state);
	mp_cuda_buffer_free(&state->scratch);
	free(state);
	return tap_done();
}
