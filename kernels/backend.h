/* The compute backend interface: tensors whose memory the backend owns, and
 * the operations of the ResNet, each with its forward and backward pass.
 *
 * Every backend (kernels/cpu/ the readable reference, kernels/cuda/ the GPU one)
 * fills one mp_backend_ops table. Callers never touch tensor memory
 * directly: they upload and download NCHW float32 host arrays, so a device
 * backend can keep everything on the device and choose its own layout and
 * precision.
 *
 * Conventions, the same for every backend:
 *  - shapes are (n, c, h, w); a matrix [rows, cols] is (rows, cols, 1, 1);
 *  - conv weights are (out, in, kh, kw) (PyTorch's OIHW), linear weights
 *    (out, in, 1, 1);
 *  - a caller may give an allocated tensor a new shape of no more
 *    elements than it was allocated with (its memory is reused, its
 *    contents undefined); release frees it whatever its shape;
 *  - backward passes overwrite their outputs (never accumulate); an output
 *    pointer may be NULL when that gradient is not needed;
 *  - every function returns 0, or -1 with a message in the backend's error
 *    (mp_backend_error) that names the operation and the bad shape.
 */
#ifndef MP_BACKEND_H
#define MP_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct mp_backend mp_backend;

/* The arithmetic of a backend's convolutions (set_precision). */
enum {
	MP_PRECISION_FP32 = 0, /* float throughout (the default) */
	/* the convolutions' operands rounded to bfloat16 and multiplied on
	 * tensor cores with float accumulation; BN statistics and
	 * parameters stay float, and so does every tensor but those of
	 * alloc_act, which a backend may store in bf16: it changes results
	 * by rounding only (about 1e-2 relative), never the interface */
	MP_PRECISION_BF16 = 1,
};

typedef struct {
	int n, c, h, w;
	float *data; /* backend memory: host memory for the CPU backend */
	/* how the backend stores data: 0, float NCHW, unless alloc_act chose
	 * another form; callers copy it with the tensor and never set it */
	int storage;
} mp_tensor;

static inline size_t mp_tensor_count(const mp_tensor *t)
{
	return (size_t)t->n * (size_t)t->c * (size_t)t->h * (size_t)t->w;
}

/* Batch normalization state for one layer, per channel. */
typedef struct {
	mp_tensor *gamma, *beta;		/* parameters */
	mp_tensor *running_mean, *running_var;	/* updated in training mode */
	mp_tensor *save_mean, *save_invstd;	/* this batch's, for backward */
	float eps;
	/* running = momentum * running + (1 - momentum) * batch (neon's
	 * sense: 0.9). The running variance takes the unbiased batch
	 * variance, as PyTorch does; normalization uses the biased one. */
	float momentum;
} mp_bn;

typedef struct {
	const char *name;

	int (*alloc)(mp_backend *be, mp_tensor *t, int n, int c, int h, int w);
	void (*release)(mp_backend *be, mp_tensor *t);
	/* As alloc, for activations and their gradients: the tensors that
	 * conv2d, bn, relu, add, shortcut_a and avgpool's x and dx pass
	 * between layers. The backend may store them in a form of its own
	 * (bf16 NHWC on a GPU in bf16: half the memory traffic), which
	 * rounds them to that precision; upload, download, fill and reshaping
	 * work as for any tensor. The caller's rule: in one call, the
	 * activation operands (conv2d's x, y, dy, dx; bn's and bn_relu's x, y,
	 * res, dy, dx, dres; relu's, add's and shortcut_a's tensors;
	 * avgpool's x and dx) come all from alloc_act or all from alloc,
	 * except conv2d's x, which may be a plain input (the images);
	 * weights, linear, softmax_xent and sgd_step never take them.
	 * Optional: mp_backend_alloc_act falls back on alloc. */
	int (*alloc_act)(mp_backend *be, mp_tensor *t, int n, int c, int h, int w);
	int (*upload)(mp_backend *be, mp_tensor *t, const float *host);
	int (*download)(mp_backend *be, const mp_tensor *t, float *host);
	int (*fill)(mp_backend *be, mp_tensor *t, float value);

	/* y = conv(x, w), no bias; y must be (x.n, w.n, oh, ow) with
	 * oh = (x.h + 2 pad - w.h) / stride + 1, likewise ow. */
	int (*conv2d_forward)(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			      mp_tensor *y, int stride, int pad);
	int (*conv2d_backward)(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			       const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw,
			       int stride, int pad);

	/* Per-channel batch normalization over (n, h, w). Training mode uses
	 * the batch statistics, stores them in save_mean/save_invstd and
	 * updates the running ones; inference mode uses the running ones. */
	int (*bn_forward_train)(mp_backend *be, const mp_tensor *x, mp_bn *bn,
				mp_tensor *y);
	int (*bn_forward_infer)(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				mp_tensor *y);
	int (*bn_backward)(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			   const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma,
			   mp_tensor *dbeta);

	/* y = max(x, 0); the backward pass reads the forward output y. */
	int (*relu_forward)(mp_backend *be, const mp_tensor *x, mp_tensor *y);
	int (*relu_backward)(mp_backend *be, const mp_tensor *y, const mp_tensor *dy,
			     mp_tensor *dx);

	/* y = a + b (same shapes; y may alias a or b). Its backward pass is
	 * the identity for both inputs, so it has none. */
	int (*add)(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y);

	/* Option-A shortcut: y[n, c, i, j] = x[n, c, i*stride, j*stride] for
	 * c < x.c, and 0 for the extra channels x.c <= c < y.c. */
	int (*shortcut_a_forward)(mp_backend *be, const mp_tensor *x, mp_tensor *y,
				  int stride);
	int (*shortcut_a_backward)(mp_backend *be, const mp_tensor *dy, mp_tensor *dx,
				   int stride);

	/* Global average pooling: y is (n, c, 1, 1). */
	int (*avgpool_forward)(mp_backend *be, const mp_tensor *x, mp_tensor *y);
	int (*avgpool_backward)(mp_backend *be, const mp_tensor *dy, mp_tensor *dx);

	/* y = x w^T without bias: x (n, in, 1, 1), w (out, in, 1, 1), y (n, out, 1, 1). */
	int (*linear_forward)(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			      mp_tensor *y);
	int (*linear_backward)(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			       const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw);

	/* Mean softmax cross-entropy over the batch, with label smoothing s:
	 * the target is (1 - s) one-hot + s / classes, as in PyTorch.
	 * labels are host integers in 0..classes-1. probs (n, classes) keeps
	 * the softmax for the backward pass and for metrics; *loss is the
	 * mean loss. The backward pass writes dlogits = (probs - target) / n. */
	int (*softmax_xent_forward)(mp_backend *be, const mp_tensor *logits,
				    const int32_t *labels, float smoothing,
				    mp_tensor *probs, double *loss);
	int (*softmax_xent_backward)(mp_backend *be, const mp_tensor *probs,
				     const int32_t *labels, float smoothing,
				     mp_tensor *dlogits);

	/* SGD with momentum and weight decay, in neon's form:
	 *   v = momentum v - lr (g + wd w);  w += v
	 * over count parameter tensors at once. The rate is a (1, 1, 1, 1)
	 * tensor, read when the step runs: a recorded step (graph_begin)
	 * takes each run's rate from it. */
	int (*sgd_step)(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
			mp_tensor *const *v, int count, const mp_tensor *lr, float momentum,
			float wd);

	/* Inference only: one convolution with its BN (running statistics),
	 * an optional residual and an optional ReLU,
	 *   y = relu?(bn_infer(conv(x, w)) + res?)
	 * in two steps. conv_bn_prepare makes prep, the backend's own form of
	 * w with bn folded in, for this stride and pad (it allocates prep,
	 * releasing what prep held); the caller keeps it while w and bn stay
	 * unchanged and releases it with release. conv_bn_forward_infer then
	 * computes y from x, w and prep: res NULL for none, or shaped as y;
	 * relu 0 or 1; y shares memory with neither x nor res. The result may
	 * round differently from the separate operations (the BN scale folded
	 * into w, a faster convolution algorithm) but agrees to about 1e-5
	 * relative. Optional, both or neither: NULL in a backend without
	 * them, and callers then use conv2d_forward, bn_forward_infer, add
	 * and relu_forward. */
	int (*conv_bn_prepare)(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int stride,
			       int pad, mp_tensor *prep);
	int (*conv_bn_forward_infer)(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				     const mp_tensor *prep, const mp_tensor *res, int relu,
				     mp_tensor *y, int stride, int pad);

	/* Training only: BN with the residual and ReLU that follow it, in
	 * one pass over the data,
	 *   y = relu(bn_train(x) + res?)
	 * res NULL for none, else shaped as x; the statistics as
	 * bn_forward_train's. The backward pass reads the output y instead
	 * of the intermediate sums: with g = dy where y > 0, else 0, it
	 * writes bn_backward's dx, dgamma and dbeta of g, and g itself into
	 * dres unless NULL (the residual's gradient). Rounds as the separate
	 * operations do. Optional, both or neither: callers fall back on
	 * bn_forward_train, add, relu_forward, relu_backward and bn_backward
	 * (and then keep the intermediates these need). */
	int (*bn_relu_forward_train)(mp_backend *be, const mp_tensor *x, mp_bn *bn,
				     const mp_tensor *res, mp_tensor *y);
	int (*bn_relu_backward)(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx,
				mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres);

	/* Training only: conv2d_backward with the input gradient added to
	 * what dx holds instead of written over it, dx += dconv(dy, w) (dw
	 * as there; dx not NULL): the block's main path's gradient added to
	 * its skip path's in the pass that makes it, where a separate add
	 * would read both and write the sum again. The sum may round once
	 * where conv2d_backward and add round twice. Optional: callers fall
	 * back on conv2d_backward and add. */
	int (*conv2d_backward_add)(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				   const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride,
				   int pad);

	/* Host memory that upload and download copy fastest (page-locked
	 * for a GPU: no staging copy by the driver), for the batches a
	 * caller uploads every step; NULL when out of memory, with the
	 * reason in the backend's error. Optional, both or neither:
	 * mp_backend_host_alloc falls back on malloc. */
	void *(*host_alloc)(mp_backend *be, size_t bytes);
	void (*host_free)(mp_backend *be, void *p);

	/* Chooses MP_PRECISION_FP32 or _BF16 for the operations that
	 * follow. NULL in a backend that computes in fp32 only; -1 when this
	 * device cannot (bf16 on a GPU without bf16 tensor cores). */
	int (*set_precision)(mp_backend *be, int precision);

	/* Recorded sequences of operations (a CUDA graph), run again as one
	 * unit: launching a whole training step costs the host one call
	 * instead of one per operation.
	 *
	 * graph_begin starts a recording: the operations called after it,
	 * until graph_end, are recorded and not run (their outputs hold
	 * nothing yet). While recording:
	 *  - the host memory given to upload, download and softmax_xent's
	 *    labels and loss is read or written when the graph runs, not at
	 *    the call: it must come from host_alloc and outlive the graph;
	 *  - every other argument, scalars included, is fixed in the graph
	 *    (sgd_step's rate is a tensor, so it can change between runs);
	 *  - alloc, release and set_precision must not be called, and the
	 *    operations must have run once at these shapes before, so that
	 *    the backend has what they need (algorithms, workspace);
	 *  - an operation that fails ends the recording: graph_end then
	 *    returns -1 with that operation's message.
	 * graph_end gives the recording in *graph (not run). graph_launch
	 * queues a run of it and returns: 0; 1 when it did not queue it
	 * because memory of the backend's own that it uses has been replaced
	 * since (its scratch grew for another operation): record it anew;
	 * -1 on an error. The run reads and writes its host memory after
	 * graph_launch returns: the caller leaves that memory alone until
	 * graph_wait, which waits for every run queued (operations called
	 * meanwhile run after them, in order). graph_free releases a graph
	 * that is not running (NULL is fine). Optional, all five or none. */
	int (*graph_begin)(mp_backend *be);
	int (*graph_end)(mp_backend *be, void **graph);
	int (*graph_launch)(mp_backend *be, void *graph);
	int (*graph_wait)(mp_backend *be);
	void (*graph_free)(mp_backend *be, void *graph);

	/* upload on a second queue, so that the copy overlaps the operations
	 * queued before it (a launched training step); every operation
	 * called after it runs after the copy. host must come from
	 * host_alloc and stay unchanged until graph_wait or another call
	 * that waits (download); t (a plain tensor) must not be an operand
	 * of an operation still queued. Not while recording. Optional:
	 * callers use upload where it is NULL. */
	int (*upload_ahead)(mp_backend *be, mp_tensor *t, const float *host);

	/* The training set kept decoded in backend memory and augmented
	 * there (mp-train --augment backend): the loader then sends a plan
	 * per batch, a few kilobytes, instead of the batch's images.
	 *
	 * write_bytes copies bytes of host memory into a plain tensor's
	 * memory at byte offset (the tensor is a byte store of any shape;
	 * offset + bytes within its 4 x count bytes). Not while recording.
	 *
	 * augment_train writes the training input y (n, 3, crop, crop), a
	 * plain tensor, from the 8-bit RGB images in pixels (write_bytes),
	 * as the plan says (MP_AUGMENT_PLAN_* below): plan is copied into
	 * plan_dev (a plain tensor of at least mp_augment_plan_words(n, crop,
	 * taps) elements) and read there, so while recording it is host
	 * memory from host_alloc, read when the graph runs. The bits are
	 * those of the loader's resize, crop, flip and mean for the same
	 * draw (common/mp_augment.c). A plan that points outside pixels or
	 * its image gives -1 where the backend reads it on the host, and
	 * NaN outputs where it reads it on a device. Optional, both or
	 * neither. */
	int (*write_bytes)(mp_backend *be, mp_tensor *t, size_t offset, const void *host,
			   size_t bytes);
	int (*augment_train)(mp_backend *be, const mp_tensor *pixels, const int32_t *plan,
			     int taps, mp_tensor *plan_dev, mp_tensor *y);

	/* Frees the backend's own state (handles, pools); may be NULL. */
	void (*destroy)(mp_backend *be);
} mp_backend_ops;

/* An augmentation plan (augment_train): 32-bit words, floats and doubles
 * stored by their bits (memcpy), little-endian halves for 64-bit values.
 *   words 0-5  the mean subtracted, R, G, B, as doubles; 6-7 zero;
 *   then image i's record, MP_AUGMENT_PLAN_IMAGE(crop, taps) words each:
 *     0-1  its first byte in pixels (low, high); 2 width, 3 height (its
 *          rows are 3 x width bytes, RGB); 4 flip (0 or 1); 5-7 zero;
 *     then the columns: start[crop], count[crop], weight[crop][taps];
 *     then the rows:    start[crop], count[crop], weight[crop][taps].
 * Output column x reads crop column j = flip ? crop - 1 - x : x. For
 * output row r and channel c, each source row s = rstart[r] + k (k <
 * rcount[r]) gives h(s) = the sum over t < ccount[j] of cweight[j][t] x
 * pixel(s, cstart[j] + t, c); v = the sum over k of rweight[r][k] x
 * h(s); every product and sum rounded to float (no fused multiply-add),
 * each sum from 0 in tap order. The byte is 0 if v <= 0, 255 if v >= 255,
 * else the truncation of v + 0.5f; the output (float)(byte - mean[c]),
 * the subtraction in double. Counts are 1..taps, starts and their taps
 * inside the image. */
#define MP_AUGMENT_PLAN_HEAD 8
#define MP_AUGMENT_PLAN_IMAGE(crop, taps) (8 + 2 * (size_t)(crop) * (2 + (size_t)(taps)))

static inline size_t mp_augment_plan_words(int n, int crop, int taps)
{
	return MP_AUGMENT_PLAN_HEAD + (size_t)n * MP_AUGMENT_PLAN_IMAGE(crop, taps);
}

/* The byte a resize's sum v rounds to, the loader's and every backend's. */
static inline uint8_t mp_augment_byte(float v)
{
	if (v <= 0)
		return 0;
	if (v >= 255)
		return 255;
	return (uint8_t)(v + 0.5f);
}

struct mp_backend {
	const mp_backend_ops *ops;
	char error[512];
	int threads; /* CPU threads to use (0: all) */
	void *impl;  /* backend-private state */
};

/* The CPU backends: the reference (plain loops, double accumulation), and
 * the fast one (the reference with its convolutions as im2col + OpenBLAS
 * SGEMM in float, and vectorizable BN, ReLU and add). Both give the same
 * bits for any thread count, and agree to about 1e-6 relative. The fast
 * one keeps scratch memory, so it serves one calling thread at a time.
 * threads: OpenMP threads, 0 for all; NULL with errno set on a negative
 * count or no memory. */
mp_backend *mp_backend_cpu_new(int threads);
mp_backend *mp_backend_cpu_fast_new(int threads);

void mp_backend_free(mp_backend *be);

/* be's alloc_act, or alloc where it has none. */
int mp_backend_alloc_act(mp_backend *be, mp_tensor *t, int n, int c, int h, int w);

/* be's host_alloc and host_free, or malloc and free where it has none;
 * host_alloc's NULL leaves the reason in be's error. */
void *mp_backend_host_alloc(mp_backend *be, size_t bytes);
void mp_backend_host_free(mp_backend *be, void *p);
const char *mp_backend_error(const mp_backend *be);

/* The CUDA backend (kernels/cuda/): float NCHW tensors in the memory of
 * CUDA device `device`, fp32 until set_precision asks for bf16;
 * convolutions by cuDNN, the fully connected layer by cuBLAS, the rest by
 * its own kernels, the fused BN + residual + ReLU and inference
 * convolution included; with MP_CUDA_ACTIVATIONS=bf16 in bf16, alloc_act
 * stores bf16 NHWC; host_alloc gives page-locked memory. It exists only in CUDA builds (make
 * CUDA=1, or CUDA=auto finding nvcc and cuDNN; MP_HAVE_CUDA is defined
 * then). Returns NULL with the reason in why ("no CUDA device (...)", or
 * the failing call); on success why describes the device
 * ("NVIDIA H200, sm_90, 139 GiB"). The backend serves one calling thread,
 * the one that created it. */
#ifdef MP_HAVE_CUDA
mp_backend *mp_backend_cuda_new(int device, char *why, size_t n);
#endif

#endif
