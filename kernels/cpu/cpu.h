/* The CPU reference backend: private declarations shared by its files.
 *
 * Every operation is a plain loop nest over NCHW float arrays in host
 * memory, written to be checked against the math. OpenMP splits only
 * independent outputs between threads (an output channel, an image, a BN
 * channel), and every output is summed in one fixed order by one thread,
 * so results are the same bit for bit whatever the thread count. */
#ifndef MP_CPU_H
#define MP_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Sets be->error from the format and returns -1. */
int mp_cpu_fail(mp_backend *be, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* count floats for tensors and scratch, 64-byte aligned (large blocks in
 * huge pages where the kernel offers them); free() releases them. */
float *mp_cpu_alloc_floats(size_t count);

/* Threads for an OpenMP region: be->threads, or all when it is 0. */
int mp_cpu_threads(const mp_backend *be);

/* 0 when t exists, is allocated and has positive sizes; otherwise -1 with
 * "op: name is ..." in be->error. */
int mp_cpu_check(mp_backend *be, const char *op, const char *name, const mp_tensor *t);

/* mp_cpu_check, and the shape is exactly n x c x h x w:
 * "conv2d_forward: y is 4x16x8x8, expected 4x16x7x7". */
int mp_cpu_expect(mp_backend *be, const char *op, const char *name, const mp_tensor *t,
		  int n, int c, int h, int w);

/* Shared by the convolutions (conv.c, conv_gemm.c). mp_cpu_conv_shape
 * checks x, w, stride and pad and computes the output size;
 * mp_cpu_tap_range gives the output positions o in [*lo, *hi) whose input
 * tap o*stride - pad + k lies inside 0..in-1. */
int mp_cpu_conv_shape(mp_backend *be, const char *op, const mp_tensor *x,
		      const mp_tensor *w, int stride, int pad, int *oh, int *ow);
/* conv2d_backward's arguments: mp_cpu_conv_shape, then dy, and dx and dw
 * where not NULL, shaped for it. */
int mp_cpu_conv_backward_shape(mp_backend *be, const char *op, const mp_tensor *x,
			       const mp_tensor *w, const mp_tensor *dy, const mp_tensor *dx,
			       const mp_tensor *dw, int stride, int pad, int *oh, int *ow);
void mp_cpu_tap_range(int k, int stride, int pad, int in, int out, int *lo, int *hi);

/* alloc's checks, shared by every backend: t emptied, the shape positive
 * and its byte count within size_t; *count is its number of elements. */
int mp_cpu_alloc_count(mp_backend *be, mp_tensor *t, int n, int c, int h, int w,
		       size_t *count);

/* Argument checks of BN and SGD, shared by every backend (bn.c, layers.c):
 * 0, or -1 with the message in be->error. */
int mp_cpu_bn_check_train(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			  const mp_tensor *y);
int mp_cpu_bn_check_infer(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			  const mp_tensor *y);
int mp_cpu_bn_check_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			     const mp_tensor *dy, const mp_tensor *dx, const mp_tensor *dgamma,
			     const mp_tensor *dbeta);
/* bn_relu_forward_train's and bn_relu_backward's checks (bn_relu.c). */
int mp_cpu_bn_relu_check_forward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				 const mp_tensor *res, const mp_tensor *y);
int mp_cpu_bn_relu_check_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				  const mp_tensor *y, const mp_tensor *dy, const mp_tensor *dx,
				  const mp_tensor *dgamma, const mp_tensor *dbeta,
				  const mp_tensor *dres);
/* The BN parameters and running statistics an inference pass over
 * `channels` channels reads, and eps. */
int mp_cpu_bn_check_running(mp_backend *be, const char *op, const mp_bn *bn, int channels);
/* BN inference as y = x scale + shift for channel c, the float factors
 * every CPU inference path uses. */
void mp_cpu_bn_fold(const mp_bn *bn, int c, float *scale, float *shift);
int mp_cpu_sgd_check(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		     mp_tensor *const *v, int count, const mp_tensor *lr);

/* Shape checks of the option-A shortcut (y may have more channels than x
 * and is x subsampled by stride), the linear layer and the loss (labels in
 * range, smoothing in [0, 1]), shared likewise (layers.c). */
int mp_cpu_shortcut_shape(mp_backend *be, const char *op, const char *xname,
			  const mp_tensor *x, const char *yname, const mp_tensor *y, int stride);
int mp_cpu_linear_shape(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w);
int mp_cpu_xent_args(mp_backend *be, const char *op, const char *name, const mp_tensor *t,
		     const int32_t *labels, float smoothing);
/* write_bytes's and augment_train's arguments (augment.c), checked alike
 * by every backend; mp_cpu_augment_args gives the plan's words. */
int mp_cpu_write_bytes_args(mp_backend *be, const char *op, const mp_tensor *t, size_t offset,
			    const void *host, size_t bytes);
int mp_cpu_augment_args(mp_backend *be, const char *op, const mp_tensor *pixels,
			const int32_t *plan, int taps, const mp_tensor *plan_dev,
			const mp_tensor *y, size_t *words);

/* The operations (conv.c, bn.c, layers.c). */
int mp_cpu_conv2d_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			  mp_tensor *y, int stride, int pad);
int mp_cpu_conv2d_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			   const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw,
			   int stride, int pad);

/* The fast convolutions (conv_gemm.c): im2col + OpenBLAS SGEMM, float
 * accumulation, for the "cpu" fast backend. Their scratch memory lives in
 * be->impl, made by mp_cpu_gemm_state_new. */
int mp_cpu_conv2d_forward_gemm(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			       mp_tensor *y, int stride, int pad);
int mp_cpu_conv2d_backward_gemm(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw,
				int stride, int pad);
void *mp_cpu_gemm_state_new(void);
/* Whether the fast backend uses Winograd at all: yes unless the
 * environment had MP_CPU_WINOGRAD=0 when it was made (every convolution
 * a matrix product then, within about 1e-6 of the reference instead of
 * 6e-6; slower). */
int mp_cpu_winograd_on(const mp_backend *be);
/* The fast backend's scratch memory (conv_gemm.c): mp_cpu_scratch makes
 * nt per-thread blocks of per_thread floats and one shared block of shared
 * floats (0, or -1 with be->error set); the blocks' contents are undefined. */
int mp_cpu_scratch(mp_backend *be, const char *op, int nt, size_t per_thread, size_t shared);
float *mp_cpu_scratch_thread(mp_backend *be, int thread);
float *mp_cpu_scratch_shared(mp_backend *be);
/* A block of count floats for a convolution's weights in another form,
 * kept apart from the blocks above (NULL, with be->error set, when out of
 * memory); its contents are undefined. */
float *mp_cpu_scratch_weights(mp_backend *be, const char *op, size_t count);
void mp_cpu_gemm_state_free(void *state);
/* The kernels OpenBLAS uses ("SkylakeX", "Haswell", ...), for benchmarks. */
const char *mp_cpu_blas_core(void);

int mp_cpu_bn_forward_train(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y);
int mp_cpu_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			    mp_tensor *y);
int mp_cpu_bn_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
		       const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma,
		       mp_tensor *dbeta);

int mp_cpu_relu_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y);
int mp_cpu_relu_backward(mp_backend *be, const mp_tensor *y, const mp_tensor *dy,
			 mp_tensor *dx);
int mp_cpu_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y);
/* The reference's fused BN + residual + ReLU: the separate operations in
 * turn (bn_relu.c). */
int mp_cpu_bn_relu_forward_train(mp_backend *be, const mp_tensor *x, mp_bn *bn,
				 const mp_tensor *res, mp_tensor *y);
int mp_cpu_bn_relu_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			    const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx,
			    mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres);
int mp_cpu_shortcut_a_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y, int stride);
int mp_cpu_shortcut_a_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx,
			       int stride);
int mp_cpu_avgpool_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y);
int mp_cpu_avgpool_backward(mp_backend *be, const mp_tensor *dy, mp_tensor *dx);
int mp_cpu_linear_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			  mp_tensor *y);
int mp_cpu_linear_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			   const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw);
int mp_cpu_softmax_xent_forward(mp_backend *be, const mp_tensor *logits,
				const int32_t *labels, float smoothing,
				mp_tensor *probs, double *loss);
int mp_cpu_softmax_xent_backward(mp_backend *be, const mp_tensor *probs,
				 const int32_t *labels, float smoothing,
				 mp_tensor *dlogits);
int mp_cpu_sgd_step(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		    mp_tensor *const *v, int count, const mp_tensor *lr, float momentum,
		    float wd);
/* augment.c: the decoded training set's bytes and the augmentation from
 * them, in both CPU backends. */
int mp_cpu_write_bytes(mp_backend *be, mp_tensor *t, size_t offset, const void *host,
		       size_t bytes);
int mp_cpu_augment_train(mp_backend *be, const mp_tensor *pixels, const int32_t *plan, int taps,
			 mp_tensor *plan_dev, mp_tensor *y);
int mp_cpu_augment_train_fast(mp_backend *be, const mp_tensor *pixels, const int32_t *plan,
			      int taps, mp_tensor *plan_dev, mp_tensor *y);

/* The fast backend's variants of the small operations (bn.c, layers.c):
 * the same checks and meaning, fewer passes and vectorizable loops, BN's
 * element-wise parts in float. */
int mp_cpu_bn_forward_train_fast(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y);
int mp_cpu_bn_forward_infer_fast(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				 mp_tensor *y);
int mp_cpu_bn_backward_fast(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma,
			    mp_tensor *dbeta);
int mp_cpu_bn_relu_forward_train_fast(mp_backend *be, const mp_tensor *x, mp_bn *bn,
				      const mp_tensor *res, mp_tensor *y);
int mp_cpu_bn_relu_backward_fast(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				 const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx,
				 mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres);
int mp_cpu_relu_forward_fast(mp_backend *be, const mp_tensor *x, mp_tensor *y);
int mp_cpu_relu_backward_fast(mp_backend *be, const mp_tensor *y, const mp_tensor *dy,
			      mp_tensor *dx);
int mp_cpu_add_fast(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y);

/* conv_bn_prepare and conv_bn_forward_infer (conv_infer.c): the reference
 * (conv.c's loops, then BN, residual and ReLU in one pass) and the fast
 * one (Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions, im2col + SGEMM
 * for the others). */
int mp_cpu_conv_bn_prepare(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int stride,
			   int pad, mp_tensor *prep);
int mp_cpu_conv_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				 const mp_tensor *prep, const mp_tensor *res, int relu,
				 mp_tensor *y, int stride, int pad);
/* Their argument checks, for every backend's: prepare's (a prepared form
 * of count floats, which it releases if it holds one, then allocates),
 * and forward_infer's (prep of want floats). */
int mp_cpu_conv_bn_prepare_alloc(mp_backend *be, const char *op, const mp_tensor *w,
				 const mp_bn *bn, int stride, int pad, mp_tensor *prep, size_t count);
int mp_cpu_conv_bn_check(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w,
			 const mp_tensor *prep, size_t want, const mp_tensor *res,
			 const mp_tensor *y, int stride, int pad);
int mp_cpu_conv_bn_prepare_fast(mp_backend *be, const mp_tensor *w, const mp_bn *bn,
				int stride, int pad, mp_tensor *prep);
int mp_cpu_conv_bn_forward_infer_fast(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				      const mp_tensor *prep, const mp_tensor *res, int relu,
				      mp_tensor *y, int stride, int pad);

/* Winograd F(4x4, 3x3) (winograd.c). mp_cpu_winograd_weights: u[36][K][C]
 * from 3x3 weights w (K x C x 3 x 3), scaled by scale[k] (NULL: 1), on `threads` threads. mp_cpu_winograd_pays:
 * whether an H x W plane gains by it. mp_cpu_winograd_conv: y =
 * relu?(conv(x, w) scale + shift + res?) for a 3x3, stride-1, pad-1
 * convolution of K outputs, from u; arguments already checked. */
void mp_cpu_winograd_weights(const float *w, const float *scale, int K, int C, float *u,
			     int threads);
int mp_cpu_winograd_pays(int H, int W);
int mp_cpu_winograd_conv(mp_backend *be, const char *op, const mp_tensor *x, const float *u,
			 const float *shift, int K, const mp_tensor *res, int relu, mp_tensor *y);
/* Training's convolutions by Winograd in the fast backend (conv_gemm.c
 * calls them): mp_cpu_winograd_fits says whether Winograd is on and x
 * and w, stride and pad are a 3x3 stride-1 pad-1 convolution whose plane
 * gains by it;
 * mp_cpu_winograd_forward computes y = conv(x, w), and
 * mp_cpu_winograd_backward_data dx from dy (dx is the convolution of dy
 * with w's kernels turned by 180 degrees, input and output channels
 * swapped), their weights transformed at each call into
 * mp_cpu_scratch_weights. Arguments already checked. */
int mp_cpu_winograd_fits(const mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			 int stride, int pad);
int mp_cpu_winograd_forward(mp_backend *be, const char *op, const mp_tensor *x,
			    const mp_tensor *w, mp_tensor *y);
int mp_cpu_winograd_backward_data(mp_backend *be, const char *op, const mp_tensor *w,
				  const mp_tensor *dy, mp_tensor *dx);
/* dw of the same convolution from x and dy (G^T dU G, dU summed over
 * the tiles as 36 products of the transformed dy and x). */
int mp_cpu_winograd_weight_grad(mp_backend *be, const char *op, const mp_tensor *x,
				const mp_tensor *dy, mp_tensor *dw);
/* 0: the Winograd transforms run as the portable loops even where AVX-512
 * exists, so that tests reach both; 1 (the default): AVX-512 where the CPU
 * has it. Not thread-safe. */
void mp_cpu_allow_simd_tiles(int allow);

/* Threads pay only above some work: below it the fork/join costs more
 * than the loop, and an OpenMP team waiting for a busy core stalls. The
 * result is the same either way (each output has one writer). */
#define MP_CPU_MIN_WORK ((size_t)1 << 15)
#define MP_CPU_WORTH_THREADS(work) ((size_t)(work) >= MP_CPU_MIN_WORK)

#endif
