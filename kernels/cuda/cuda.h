/* The CUDA backend: private declarations shared by its files (C++, nvcc).
 *
 * Every tensor is float NCHW in device memory (mp_tensor.data is a device
 * pointer), except those of alloc_act in bf16 with
 * MP_CUDA_ACTIVATIONS=bf16, which are bf16 NHWC (nhwc.cu); in bf16 the
 * convolutions work on bf16 NHWC operands, converted copies of the float
 * ones (conv.cu). Everything runs on the backend's own
 * non-blocking stream (cuDNN's and cuBLAS's handles are set to it), in
 * order, so the operations need no synchronization between them; copies
 * to and from the host (upload, download, write_bytes, the labels, a
 * plan, the loss) wait for that stream before they return (mp_cuda_wait),
 * except while a graph is
 * recorded (graph_begin: the stream is captured, nothing runs, and the
 * copies become the graph's, from and to page-locked memory). Convolutions are cuDNN's (the classic
 * descriptor API, or its graph API: conv_graph.cu), the fully connected
 * layer cuBLAS's, the rest our own kernels (bn.cu, layers.cu, augment.cu).
 *
 * Shapes are checked on the host with the CPU backend's helpers
 * (mp_cpu_check, mp_cpu_expect, mp_cpu_conv_shape), so both backends
 * reject a bad shape with the same message. A failing CUDA, cuDNN or
 * cuBLAS call sets be->error to "op: call: status", e.g.
 * "conv2d_forward: cudnnConvolutionForward: CUDNN_STATUS_BAD_PARAM". */
#ifndef MP_CUDA_H
#define MP_CUDA_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
#include "cpu/cpu.h"
#include "divider.h"
}

/* mp_tensor.storage of a tensor from alloc_act in bf16 with
 * MP_CUDA_ACTIVATIONS=bf16: bf16 NHWC, count * 2 bytes (nhwc.cu); every
 * other tensor is float NCHW (storage 0). */
#define MP_CUDA_BF16_NHWC 1

static inline int mp_cuda_is_bf16(const mp_tensor *t)
{
	return t && t->storage == MP_CUDA_BF16_NHWC;
}

/* The algorithms chosen for one convolution shape and precision, found
 * once; with the math type each was chosen for. */
struct mp_cuda_conv_algo {
	int key[10]; /* x n,c,h,w; w n,h,w; stride; pad; bf16 */
	int have_fwd, have_bwd_data, have_bwd_filter;
	/* bf16 entry: the directions (conv.cu's FWD, BWD_DATA, BWD_FILTER
	 * bits) for which cuDNN has no bf16 algorithm: a call that needs
	 * one of them runs in fp32 */
	int fp32_only;
	/* MP_CUDNN_API=graph: no engine adds dx (beta 1) for this shape:
	 * conv2d_backward_add makes it apart and adds */
	int graph_no_add;
	/* MP_CUDA_PROFILE: GPU milliseconds and calls of each direction's
	 * cuDNN call and of its bf16 conversions */
	double ms_cudnn[3], ms_convert[3], ms_host[3];
	long calls[3];
	/* this shape's descriptors, made once: set again at every call, the
	 * legacy API spends host time re-reading them */
	int described;
	cudnnTensorDescriptor_t xdesc, ydesc;
	cudnnFilterDescriptor_t wdesc;
	cudnnConvolutionDescriptor_t convdesc;
	cudnnMathType_t math; /* the math type convdesc holds now */
	/* MP_CUDNN_API=graph: each direction's execution plan
	 * (cudnnBackendDescriptor_t) and its workspace bytes; the fourth,
	 * dx's with beta 1 (conv2d_backward_add) */
	void *gplan[4];
	size_t gws[4];
	void *gkeep[4][8]; /* the descriptors each plan was made from, kept with it */
	cudnnConvolutionFwdAlgo_t fwd;
	cudnnConvolutionBwdDataAlgo_t bwd_data;
	cudnnConvolutionBwdFilterAlgo_t bwd_filter;
	cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math;
	size_t fwd_ws, bwd_data_ws, bwd_filter_ws;
};

/* A device buffer that grows to the largest need seen. */
struct mp_cuda_buffer {
	void *p;
	size_t size; /* bytes */
};

/* One SGD block: elements [begin, end) of tensor t. */
struct mp_cuda_sgd_block {
	int t;
	size_t begin, end;
};

/* Where SGD writes a parameter tensor's bf16 copy (elements from shadow
 * on, in KRSC: the form bf16 convolutions take filters in), and the
 * tensor's channels and taps (c, h * w) that order it. */
struct mp_cuda_sgd_tensor {
	size_t shadow;
	int c, taps;
};

struct mp_cuda_state {
	int device;
	int cc_major, cc_minor; /* compute capability */
	int precision;		/* MP_PRECISION_* */
	/* the convolutions' algorithm choice (environment, read at creation):
	 * MP_CUDNN_SEARCH=timed, MP_CUDNN_DETERMINISTIC=0, MP_CUDNN_LOG=1 */
	int timed_search, deterministic, log_choices;
	int profile; /* MP_CUDA_PROFILE=1: time the convolutions, print at the end */
	int legacy_stream; /* MP_CUDA_STREAM=legacy */
	int graph_api;	   /* MP_CUDNN_API=graph: conv_graph.cu's plans */
	int graphs;	   /* MP_CUDA_GRAPH=1 (the default): graph_* operations */
	int recording;	   /* between graph_begin and graph_end */
	int recorded_sgd;  /* an SGD step in the recording: its graph writes the filter copies */
	int recorded_param_write; /* a parameter written otherwise in the recording */
	int act_bf16;	   /* MP_CUDA_ACTIVATIONS=bf16: alloc_act stores bf16 NHWC in bf16 */
	/* MP_CUDA_KEEP_FILTERS=1 (the default): in bf16, SGD keeps the
	 * filters' bf16 copies for the convolutions (sgd_shadow) */
	int keep_filters;
	/* the operations: the graphs' or not, conv2d_backward_add or not
	 * (MP_CUDA_BACKWARD_ADD=0); be->ops points here */
	mp_backend_ops ops;
	struct mp_cuda_buffer stage; /* float NCHW copies of bf16 tensors for upload, download */
	/* Bumped whenever device memory of the backend's own that an
	 * operation uses (workspace, scratch, bf16 copies, labels, SGD
	 * tables) is replaced: a graph recorded before is stale. */
	unsigned long mem_gen, rec_gen;
	void *cublas_ws; /* cuBLAS's workspace, fixed: it must not allocate in a capture */
	cudaStream_t stream; /* every operation's; 0 (legacy) when legacy_stream */
	/* upload_ahead's copies, and the event the main stream waits for */
	cudaStream_t copy_stream;
	cudaEvent_t copy_done;
	cudaEvent_t ev_start, ev_stop;
	double prof_host_start; /* host milliseconds at the section's start */
	cudnnHandle_t cudnn;
	cublasHandle_t cublas;
	/* the current convolution's descriptors (its mp_cuda_conv_algo's) */
	cudnnTensorDescriptor_t xdesc, ydesc;
	cudnnFilterDescriptor_t wdesc;
	cudnnConvolutionDescriptor_t convdesc;

	struct mp_cuda_buffer ws; /* the convolutions' workspace */
	/* bf16 copies of a convolution's operands in NHWC (KRSC for
	 * weights): its input or dx, its output or dy, its weights or dw */
	struct mp_cuda_buffer bf_x, bf_y, bf_w;
	/* conv2d_backward_add's input gradient before it is added, where
	 * cuDNN cannot add it (conv.cu) */
	struct mp_cuda_buffer dx_part;

	struct mp_cuda_conv_algo *algos; /* the cache, searched linearly */
	int nalgos, algos_cap;

	struct mp_cuda_buffer scratch; /* doubles: BN statistics, per-row losses */
	/* unsigned, one per channel (bn.cu) or channel group (nhwc.cu) of a
	 * BN's sums: how many of its blocks have written theirs; 0 between
	 * launches */
	struct mp_cuda_buffer bn_counters;
	int32_t *labels; /* device copy of the labels */
	size_t labels_size;

	/* SGD: the pointer set of the last call (host copies) and its device
	 * tables; reused while the set is the same. */
	int sgd_count;
	float **sgd_host; /* 3 * count pointers: w, g, v */
	size_t *sgd_sizes;
	float **sgd_dev_ptrs; /* device: 3 * count pointers */
	struct mp_cuda_sgd_block *sgd_dev_blocks;
	int sgd_nblocks;
	/* In bf16, the SGD step also writes each parameter's bf16 KRSC copy
	 * (sgd_shadow, where sgd_tensors say), which the convolutions then
	 * take instead of converting the filters at every call, forward and
	 * backward. Valid from an SGD step on, until a parameter is written
	 * otherwise (upload, fill, release: mp_cuda_params_written). */
	struct mp_cuda_sgd_tensor *sgd_tensors, *sgd_dev_tensors;
	void *sgd_shadow; /* device, __nv_bfloat16; NULL in fp32 */
	int sgd_shadow_valid;
};

static inline mp_cuda_state *mp_cuda(mp_backend *be)
{
	return (mp_cuda_state *)be->impl;
}

/* "no CUDA device (why)" into buf, for cudaGetDeviceCount's failure e
 * (or cudaSuccess when it counted none): no driver, a driver too old for
 * this build's runtime, or the runtime's reason (device.cu). */
void mp_cuda_no_device(cudaError_t e, char *buf, size_t n);

/* Set be->error to "op: call: status" and return -1; call is the text of
 * the failing call, cut at its first '('. */
int mp_cuda_fail_cuda(mp_backend *be, const char *op, const char *call, cudaError_t e);
int mp_cuda_fail_cudnn(mp_backend *be, const char *op, const char *call, cudnnStatus_t s);
int mp_cuda_fail_cublas(mp_backend *be, const char *op, const char *call, cublasStatus_t s);

#define CUDA_CHECK(op, call)                                                      \
	do {                                                                      \
		cudaError_t e_ = (call);                                          \
		if (e_ != cudaSuccess)                                            \
			return mp_cuda_fail_cuda(be, op, #call, e_);              \
	} while (0)
#define CUDNN_CHECK(op, call)                                                     \
	do {                                                                      \
		cudnnStatus_t s_ = (call);                                        \
		if (s_ != CUDNN_STATUS_SUCCESS)                                   \
			return mp_cuda_fail_cudnn(be, op, #call, s_);             \
	} while (0)
#define CUBLAS_CHECK(op, call)                                                    \
	do {                                                                      \
		cublasStatus_t s_ = (call);                                       \
		if (s_ != CUBLAS_STATUS_SUCCESS)                                  \
			return mp_cuda_fail_cublas(be, op, #call, s_);            \
	} while (0)
/* After a kernel launch: a bad launch configuration shows at once, a
 * fault in the kernel at a later call. */
#define LAUNCH_CHECK(op, kernel)                                                  \
	do {                                                                      \
		cudaError_t e_ = cudaGetLastError();                              \
		if (e_ != cudaSuccess)                                            \
			return mp_cuda_fail_cuda(be, op, kernel, e_);             \
	} while (0)

/* The stream every operation of backend be runs on. */
#define MP_STREAM(be) (mp_cuda(be)->stream)

/* Launches kernel on be's stream; MP_LAUNCH_SYNC for a kernel that calls
 * __syncthreads. Under MP_CUDA_EMULATE (the CPU tests of the kernels,
 * tests/emu/) it runs on the host, when its stream runs it
 * (tests/emu/cuda_emu.h): thread after thread, or for MP_LAUNCH_SYNC a
 * block's threads as fibers that meet at each barrier. */
#ifdef MP_CUDA_EMULATE
#define MP_LAUNCH(kernel, grid, block, be, ...)                                   \
	mp_emu::launcher_of(&kernel, dim3(grid), dim3(block), 0, MP_STREAM(be), #kernel)(__VA_ARGS__)
#define MP_LAUNCH_SYNC(kernel, grid, block, be, ...)                              \
	mp_emu::launcher_of(&kernel, dim3(grid), dim3(block), 1, MP_STREAM(be), #kernel)(__VA_ARGS__)
#else
#define MP_LAUNCH(kernel, grid, block, be, ...)                                   \
	kernel<<<grid, block, 0, MP_STREAM(be)>>>(__VA_ARGS__)
#define MP_LAUNCH_SYNC MP_LAUNCH
#endif

/* The most blocks of a grid-stride kernel's grid (mp_cuda_grid), and of a
 * grid's y or z dimension (CUDA's limit). Under MP_CUDA_EMULATE they are
 * variables (tests/emu/cuda_emu.h, whose launches refuse a y or z beyond
 * the second), which the tests lower to reach on small tensors what only
 * large ones reach on a device: several elements a thread, a split launch. */
#ifdef MP_CUDA_EMULATE
extern "C" unsigned mp_emu_grid_most, mp_emu_grid_yz_most;
#define MP_CUDA_GRID_MOST mp_emu_grid_most
#define MP_CUDA_GRID_YZ mp_emu_grid_yz_most
#else
#define MP_CUDA_GRID_MOST (65535u * 8u)
#define MP_CUDA_GRID_YZ 65535u
#endif

/* Threads per block of the element-wise kernels, and the grid for count
 * elements (grid-stride loops cover the rest). */
#define MP_CUDA_THREADS 256
static inline unsigned mp_cuda_grid(size_t count)
{
	size_t b = (count + MP_CUDA_THREADS - 1) / MP_CUDA_THREADS;
	if (b > MP_CUDA_GRID_MOST)
		b = MP_CUDA_GRID_MOST;
	return b ? (unsigned)b : 1u;
}

/* Grows b to at least bytes (its contents are lost when it moves); an
 * error while recording a graph, which must not see memory move. */
int mp_cuda_grow(mp_backend *be, const char *op, struct mp_cuda_buffer *b, size_t bytes);
/* Waits for the stream (a host copy's memory is the caller's again), or
 * nothing while recording. */
int mp_cuda_wait(mp_backend *be, const char *op);
/* -1 with "op: what while recording a graph" when recording. */
int mp_cuda_not_recording(mp_backend *be, const char *op, const char *what);
void mp_cuda_buffer_free(struct mp_cuda_buffer *b);

/* n images of c x plane values: float NCHW src into bf16 NHWC dst
 * (to_bf16), or the reverse (conv.cu); mp_cuda_convert_add adds bf16
 * NHWC src to float NCHW dst. */
int mp_cuda_convert(mp_backend *be, const char *op, int n, int c, int plane, const void *src,
		    int to_bf16, void *dst);
int mp_cuda_convert_add(mp_backend *be, const char *op, int n, int c, int plane,
			const void *src, float *dst);

/* The activations an operation takes (NULL ones skipped) are all bf16
 * NHWC (1) or all float (0); -1, naming op, when they mix. */
int mp_cuda_act_storage(mp_backend *be, const char *op, const mp_tensor *a, const mp_tensor *b,
			const mp_tensor *c = NULL, const mp_tensor *d = NULL,
			const mp_tensor *e = NULL);
/* -1, naming op, when one of the tensors (NULL ones skipped) is stored in
 * bf16: weights and the head's tensors are float only. */
int mp_cuda_float_only(mp_backend *be, const char *op, const mp_tensor *a,
		       const mp_tensor *b = NULL, const mp_tensor *c = NULL,
		       const mp_tensor *d = NULL, const mp_tensor *e = NULL);

/* The bf16 NHWC forms of the operations (nhwc.cu), for tensors from
 * alloc_act in bf16; shapes checked by the callers, which dispatch here. */
int mp_cuda_nhwc_upload(mp_backend *be, mp_tensor *t, const float *host);
int mp_cuda_nhwc_download(mp_backend *be, const mp_tensor *t, float *host);
int mp_cuda_nhwc_fill(mp_backend *be, mp_tensor *t, float value);
int mp_cuda_nhwc_relu_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y);
int mp_cuda_nhwc_relu_backward(mp_backend *be, const mp_tensor *y, const mp_tensor *dy,
			       mp_tensor *dx);
int mp_cuda_nhwc_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y);
int mp_cuda_nhwc_shortcut_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y, int stride);
int mp_cuda_nhwc_shortcut_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx,
				   int stride);
int mp_cuda_nhwc_avgpool_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y);
int mp_cuda_nhwc_avgpool_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx);
/* count of the BN sums' counters (bn.cu), zeroed when made: NULL on an
 * error */
unsigned *mp_cuda_bn_counters(mp_backend *be, const char *op, size_t count);
/* BN in training mode, y = bn(x), or relu(bn(x) + res?) when relu */
int mp_cuda_nhwc_bn_train(mp_backend *be, const char *op, const mp_tensor *x, mp_bn *bn,
			  const mp_tensor *res, int relu, mp_tensor *y);
/* y = x coef[c] + coef[C + c] per channel, then relu(y + res?) when relu;
 * y may be x */
int mp_cuda_nhwc_scale_shift(mp_backend *be, const char *op, const mp_tensor *x,
			     const float *coef, const mp_tensor *res, int relu, mp_tensor *y);
int mp_cuda_nhwc_bn_infer(mp_backend *be, const mp_tensor *x, const mp_bn *bn, mp_tensor *y);
/* BN's backward pass; relu_y the fused ReLU's output or NULL; dres too */
int mp_cuda_nhwc_bn_backward(mp_backend *be, const char *op, const mp_tensor *x,
			     const mp_bn *bn, const mp_tensor *relu_y, const mp_tensor *dy,
			     mp_tensor *dx, mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres);

/* The scratch buffer, grown to at least n doubles; NULL on an error. */
double *mp_cuda_scratch(mp_backend *be, const char *op, size_t n);

/* The operations (conv.cu, bn.cu, layers.cu), the meanings of backend.h. */
int mp_cuda_conv2d_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			   mp_tensor *y, int stride, int pad);
int mp_cuda_conv2d_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride,
			    int pad);
int mp_cuda_conv2d_backward_add(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride,
				int pad);
void mp_cuda_conv_free(mp_cuda_state *s);
/* cuDNN's graph API (conv_graph.cu): entry a's execution plan for a
 * direction (0 forward, 1 dx, 2 dw, 3 dx added to dx), made once: 0, 1 when bf16 has no
 * engine for it, -1 on an error; running it on device pointers to its
 * x-, w- and y-shaped operands; freeing an entry's plans. */
int mp_cuda_graph_plan(mp_backend *be, const char *op, mp_cuda_conv_algo *a, int dir,
		       const mp_tensor *x, const mp_tensor *w, const mp_tensor *y, int stride,
		       int pad, int bf16);
int mp_cuda_graph_exec(mp_backend *be, const char *op, const mp_cuda_conv_algo *a, int dir,
		       void *x, void *w, void *y);
void mp_cuda_graph_free(mp_cuda_conv_algo *a);

/* MP_CUDA_PROFILE's table of convolution times, on stderr. */
void mp_cuda_conv_report(const mp_cuda_state *s);

int mp_cuda_bn_forward_train(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y);
int mp_cuda_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			     mp_tensor *y);
int mp_cuda_bn_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma,
			mp_tensor *dbeta);
int mp_cuda_bn_relu_forward_train(mp_backend *be, const mp_tensor *x, mp_bn *bn,
				  const mp_tensor *res, mp_tensor *y);
int mp_cuda_bn_relu_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			     const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx,
			     mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres);

/* The fused inference convolution (conv_bn.cu). */
int mp_cuda_conv_bn_prepare(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int stride,
			    int pad, mp_tensor *prep);
int mp_cuda_conv_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				  const mp_tensor *prep, const mp_tensor *res, int relu,
				  mp_tensor *y, int stride, int pad);

/* The operations of conv.cu, bn.cu, layers.cu and conv_bn.cu into o: the
 * whole table but memory, precision, graphs and destroy, which the
 * backend (backend_cuda.cu, or tests/emu's stand-in) adds. */
void mp_cuda_ops_common(mp_backend_ops *o);

/* The convolutions' argument checks (conv.cu's, and its stand-in's in
 * tests/emu): shapes, float weights, dy and dx stored alike. */
static inline int mp_cuda_conv_check_forward(mp_backend *be, const char *op, const mp_tensor *x,
					     const mp_tensor *w, const mp_tensor *y, int stride,
					     int pad)
{
	int oh, ow;
	return mp_cpu_conv_shape(be, op, x, w, stride, pad, &oh, &ow) ||
			       mp_cpu_expect(be, op, "y", y, x->n, w->n, oh, ow) ||
			       mp_cuda_float_only(be, op, w)
		       ? -1
		       : 0;
}
static inline int mp_cuda_conv_check_backward(mp_backend *be, const char *op, const mp_tensor *x,
					      const mp_tensor *w, const mp_tensor *dy,
					      const mp_tensor *dx, const mp_tensor *dw, int stride,
					      int pad)
{
	int oh, ow;
	return mp_cpu_conv_backward_shape(be, op, x, w, dy, dx, dw, stride, pad, &oh, &ow) ||
			       mp_cuda_float_only(be, op, w, dw) ||
			       mp_cuda_act_storage(be, op, dy, dx) < 0
		       ? -1
		       : 0;
}

int mp_cuda_fill(mp_backend *be, mp_tensor *t, float value);
int mp_cuda_relu_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y);
int mp_cuda_relu_backward(mp_backend *be, const mp_tensor *y, const mp_tensor *dy,
			  mp_tensor *dx);
int mp_cuda_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y);
int mp_cuda_shortcut_a_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y, int stride);
int mp_cuda_shortcut_a_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx,
				int stride);
int mp_cuda_avgpool_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y);
int mp_cuda_avgpool_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx);
int mp_cuda_linear_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			   mp_tensor *y);
int mp_cuda_linear_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw);
int mp_cuda_softmax_xent_forward(mp_backend *be, const mp_tensor *logits,
				 const int32_t *labels, float smoothing, mp_tensor *probs,
				 double *loss);
int mp_cuda_softmax_xent_backward(mp_backend *be, const mp_tensor *probs,
				  const int32_t *labels, float smoothing, mp_tensor *dlogits);
int mp_cuda_sgd_step(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		     mp_tensor *const *v, int count, const mp_tensor *lr, float momentum, float wd);
void mp_cuda_layers_free(mp_cuda_state *s);
/* The training set kept decoded on the device, and a batch made from it
 * by a plan (augment.cu). */
int mp_cuda_write_bytes(mp_backend *be, mp_tensor *t, size_t offset, const void *host,
			size_t bytes);
int mp_cuda_augment_train(mp_backend *be, const mp_tensor *pixels, const int32_t *plan, int taps,
			  mp_tensor *plan_dev, mp_tensor *y);
/* The SGD step's bf16 KRSC copy of filter w when it holds w's current
 * values, else NULL (layers.cu). */
const void *mp_cuda_filter_shadow(const mp_cuda_state *s, const mp_tensor *w);
/* [p, p + bytes) is about to be written other than by the SGD step: the
 * parameters' bf16 copies are stale if it holds one of them. */
void mp_cuda_params_written(mp_cuda_state *s, const void *p, size_t bytes);

#endif
