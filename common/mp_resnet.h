/* The residual network of the Mini-Places2 recipe, on any backend:
 * configuration, parameters with their public names, Kaiming
 * initialisation, forward and backward passes, the optimizer step, and
 * parameter and FLOP counts.
 *
 * Graph: stem conv (k x k, stride s) - BN - ReLU; stages of `depth` basic
 * blocks (conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus the shortcut,
 * then ReLU), the first block of every stage after the first with stride 2;
 * global average pooling; fully connected (no bias); BN (optional); softmax.
 * Shortcut A: parameter-free subsampling plus zero channels; shortcut B: a
 * 1x1 conv + BN projection where the shape changes, identity elsewhere. */
#ifndef MP_RESNET_H
#define MP_RESNET_H

#include <stdint.h>

#include "backend.h"
#include "mp_util.h"

#define MP_MAX_STAGES 8

typedef struct {
	int depth;			/* blocks per stage */
	int stages;
	int widths[MP_MAX_STAGES];	/* stage widths; the stem has widths[0] */
	int stem_kernel, stem_stride;	/* the stem pads kernel / 2 */
	char shortcut;			/* 'A' or 'B' */
	int classes;
	int fc_bn;			/* BN after the fully connected layer */
	float bn_eps, bn_momentum;	/* momentum in neon's sense (0.9) */
	int input_size;			/* the size it is trained at */
	double mean[3];			/* RGB mean on the 0..255 scale */
} mp_resnet_config;

/* The recipe's values: depth 9, widths 32,64,128,256, 3x3 stride-2 stem,
 * shortcut A, 100 classes, FC+BN head, eps 1e-3, momentum 0.9, 112 px. */
void mp_resnet_config_default(mp_resnet_config *c);
/* Checks ranges and consistency; the message names the bad field. */
int mp_resnet_config_check(const mp_resnet_config *c, mp_error *e);
/* Scalars in the parameter tensors (weights and BN buffers) of the network
 * a checked config describes: what mp_resnet_new allocates for them. */
uint64_t mp_resnet_config_scalars(const mp_resnet_config *c);

enum mp_param_kind {
	MP_PARAM_WEIGHT,	/* learned, decayed, updated by SGD */
	MP_PARAM_BUFFER,	/* BN running statistics */
};

typedef struct {
	char name[96];		/* PyTorch-style, e.g. stages.0.blocks.1.bn2.weight */
	int kind;
	int ndim, shape[4];	/* as PyTorch has it: conv OIHW, linear [out, in], BN [c] */
	mp_tensor value, grad, momentum; /* grad and momentum for weights only */
} mp_param;

typedef struct mp_resnet mp_resnet;

mp_resnet *mp_resnet_new(const mp_resnet_config *c, mp_backend *be, mp_error *e);
void mp_resnet_free(mp_resnet *net);
const mp_resnet_config *mp_resnet_cfg(const mp_resnet *net);

int mp_resnet_param_count(const mp_resnet *net);	/* number of tensors */
mp_param *mp_resnet_param(mp_resnet *net, int i);
mp_param *mp_resnet_find(mp_resnet *net, const char *name);
/* Learned scalars (weights only, not BN running statistics). */
uint64_t mp_resnet_num_weights(const mp_resnet *net);
/* Multiply-accumulates x 2 of one forward pass of one image of size x size. */
double mp_resnet_flops(const mp_resnet *net, int size);

/* The parameters' gradient and momentum buffers (zero), made here if they
 * do not exist yet: a new network has only the values; training (backward,
 * SGD, init) and an upload into them make them on first need. */
int mp_resnet_train_state(mp_resnet *net, mp_error *e);

/* Upload, forward, loss, backward and sgd refuse to run while a step that
 * mp_resnet_train_start launched is running (its graph still reads and
 * writes the network's tensors): mp_resnet_train_finish first. */

/* Copies between a tensor of the network and host floats. */
int mp_resnet_download(mp_resnet *net, const mp_tensor *t, float *host, mp_error *e);
int mp_resnet_upload(mp_resnet *net, mp_tensor *t, const float *host, mp_error *e);

/* Kaiming normal (std sqrt(2 / fan_in)) for conv and FC weights, BN gamma 1,
 * beta 0, running mean 0, variance 1, momentum buffers 0; from a seeded
 * generator, the same on every machine. */
int mp_resnet_init(mp_resnet *net, uint64_t seed, mp_error *e);

/* Forward pass of n images (n, 3, h, w) already mean-subtracted, in host
 * memory. train selects batch statistics (and updates the running ones).
 * The logits stay on the backend; mp_resnet_logits downloads them. */
int mp_resnet_forward(mp_resnet *net, const float *images, int n, int h, int w,
		      int train, mp_error *e);
int mp_resnet_logits(mp_resnet *net, float *out, mp_error *e);
/* Softmax cross-entropy of the last forward pass; probs (n x classes) may
 * be NULL. */
int mp_resnet_loss(mp_resnet *net, const int32_t *labels, float smoothing,
		   double *loss, float *probs, mp_error *e);
/* Backward pass of the last forward pass and loss: fills every weight's grad. */
int mp_resnet_backward(mp_resnet *net, mp_error *e);
/* v = m v - lr (g + wd w); w += v for every weight (BN included). */
int mp_resnet_sgd(mp_resnet *net, float lr, float momentum, float wd, mp_error *e);

/* One training step: mp_resnet_forward (training mode), mp_resnet_loss,
 * mp_resnet_backward and mp_resnet_sgd, with the same results to the bit,
 * in two halves. On a backend with graphs (the CUDA one) the step is
 * recorded once its shapes are fixed (the second step of a shape and input
 * slot, and again after anything that reallocates the network's buffers,
 * such as an evaluation pass) and then launched with one call, which
 * returns while the device runs it: the caller can load the next batch
 * into the other input slot meanwhile. mp_resnet_train_finish waits for
 * it and gives its loss and probabilities (probs may be NULL). One step at
 * a time: start, finish, start...
 *
 * The batch is read from an input slot (mp_resnet_input): images given
 * elsewhere are copied into slot 0 first. The labels are copied at the
 * start, and must be in 0..classes-1. If recording fails, a warning says
 * why and the steps run op by op (start then does the whole step). */
int mp_resnet_train_start(mp_resnet *net, const float *images, const int32_t *labels, int n,
			  int h, int w, float smoothing, float lr, float momentum, float wd,
			  mp_error *e);
int mp_resnet_train_finish(mp_resnet *net, double *loss, float *probs, mp_error *e);
/* Both halves at once. */
int mp_resnet_train_step(mp_resnet *net, const float *images, const int32_t *labels, int n,
			 int h, int w, float smoothing, float lr, float momentum, float wd,
			 double *loss, float *probs, mp_error *e);
/* Input slot `slot` (0 or 1): host memory for a batch of n images (n, 3,
 * h, w) that mp_resnet_train_start reads without a copy (page-locked on a
 * GPU). While a step started from one slot runs, the other can be filled.
 * Valid until a call for a larger batch in that slot, or mp_resnet_free.
 * NULL when out of memory. */
#define MP_RESNET_INPUT_SLOTS 2
float *mp_resnet_input(mp_resnet *net, int slot, int n, int h, int w, mp_error *e);
/* Says that input slot `slot` holds the next batch (n images of h x w): on
 * a backend that can (upload_ahead, the CUDA one) its copy to the device
 * starts now, on a second stream, and overlaps the step that runs; the
 * next step started from that slot then reads the copy instead of
 * uploading the slot. Leave the slot unchanged until that step has
 * finished (mp_resnet_input makes the copy count as old). A no-op on
 * other backends. Not for the slot of the step that runs. */
int mp_resnet_input_ready(mp_resnet *net, int slot, int n, int h, int w, mp_error *e);
/* The training set kept decoded in backend memory (mp-train --augment
 * backend; the backend needs augment_train): mp_resnet_keep_pixels makes
 * a store of bytes bytes for plans of up to taps taps (an earlier one
 * goes), and mp_resnet_put_pixels copies decoded images into it
 * (mp_loader_keep_decoded's chunks). mp_resnet_plan then gives input slot
 * `slot` as room for the plan of a batch of n crops (kernels/backend.h;
 * mp_loader_next_plan writes it), and mp_resnet_train_start_plan starts a
 * step whose images the backend makes from that plan, with the results
 * of mp_resnet_train_start given those images, to the bit. */
int mp_resnet_keep_pixels(mp_resnet *net, uint64_t bytes, int taps, mp_error *e);
int mp_resnet_put_pixels(mp_resnet *net, uint64_t offset, const uint8_t *px, size_t len,
			 mp_error *e);
int32_t *mp_resnet_plan(mp_resnet *net, int slot, int n, int crop, mp_error *e);
int mp_resnet_train_start_plan(mp_resnet *net, int slot, const int32_t *labels, int n, int crop,
			       float smoothing, float lr, float momentum, float wd, mp_error *e);
/* mp_resnet_forward in inference mode and mp_resnet_logits, with the same
 * results to the bit. On a backend with graphs (CUDA) a pass is recorded at the second pass of a shape
 * (up to eight shapes kept: the view sizes of a multiscale evaluation),
 * and again after the weights or buffers change, then launched with one
 * call. The images are read from an input slot as
 * mp_resnet_train_start's are (copied into slot 0 from elsewhere). */
int mp_resnet_predict(mp_resnet *net, const float *images, int n, int h, int w, float *logits,
		      mp_error *e);
/* Graphs on (the default, where the backend has them) or off. */
void mp_resnet_use_graphs(mp_resnet *net, int on);
/* How many training steps (train 1) or inference passes (train 0) were
 * recorded and launched as graphs. */
void mp_resnet_graph_counts(const mp_resnet *net, int train, long *recorded, long *launched);

#endif
