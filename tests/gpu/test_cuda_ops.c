/* The CUDA backend against the CPU reference backend (TAP by hand, so it
 * needs no cmocka on the GPU machine): every operation, forward and
 * backward, and the SGD step, on the same random inputs of several shapes
 * (stride-2 convolutions, 1x1 projections, odd sizes), the fused
 * inference convolution against the separate operations; shapes whose
 * grids pass CUDA's limits (large_grid_ops); the shape-error messages;
 * a whole training step of a small mp_resnet (logits, loss,
 * every gradient, the updated weights, momentum and BN running
 * statistics), with shortcut A and B; that two GPU runs from the same
 * weights give the same bits; that the training step recorded as a CUDA
 * graph (mp_resnet_train_step) gives the same bits as op by op, and is
 * recorded again after an inference pass; that the inference pass
 * recorded as a graph (mp_resnet_predict) gives the same logits, with
 * several view sizes in turn as a multiscale evaluation has them; the
 * graphs' rules (alloc and set_precision refused while recording, a
 * change of precision making the graphs recorded before stale); and a
 * 20-step training run on learnable data whose loss falls on the GPU as
 * it does on the CPU.
 *
 * Tolerance: RTOL (1e-3) of the largest |ref| of each tensor. The CUDA
 * convolutions run in fp32 without TF32 (CUDNN_FMA_MATH), so the expected
 * error is float rounding (about 1e-6 to 1e-5 relative); the margin
 * allows for cuDNN's different summation orders. Each check prints its
 * measured error as a TAP comment.
 *
 * A whole step has one more source of difference: a ReLU's input that
 * lies within float rounding of zero (one in 1e7 of the tensor's scale)
 * may fall on the other side on the device, and then the gradient through
 * it is dropped on one side only; where a layer's gradient sums cancel
 * (BN's backward pass makes them), that moves whole gradients by up to a
 * percent. The test watches how close the reference's ReLU decisions came
 * (relu_margin); where a step fails and one came within RELU_MARGIN, the
 * step runs again on other images (at most three times) and says so.
 *
 * Then the same convolutions, network steps, reproducibility and
 * training run again in bf16 (set_precision). Each operation within
 * RTOL_BF16 (2e-2) of the fp32 reference: bf16 keeps 8 bits of mantissa,
 * so each rounded operand is off by up to 2^-9 relative and a sum of many
 * such products by less. The whole training step against the reference
 * with the same roundings (its convolutions' operands and results rounded
 * to bf16, as the device's are), within RTOL_BF16 or STEP_SPREAD times
 * bf16's own effect, the larger: how far the same step in fp32 lies from
 * the rounded reference (step_limit). The logits' own effect sets the
 * limit of the logits, the loss and the running statistics; a gradient's
 * own, or the median of the step's gradients' where larger (one
 * gradient's is a noisy measure of it), the limit of that gradient and of
 * what the update makes of it. bf16 moves a ReLU's inputs by up to 2^-9 of
 * the values they are made of, so many decisions go the other way (see
 * above), and a random small network's gradients move by 10-50%: a
 * device rounding alike differs from the reference in fewer of them. Over
 * 30 seeds of the host stand-in it came to 58% of the limit; to 92% with
 * Winograd's convolutions, whose sums stray 6e-6 from the reference's
 * (the matrix products' 1e-6). A gradient path missing (--fault
 * residual) goes to 400%. The backward pass is thus checked for what its
 * wiring gets wrong (a wrong tensor, a missing path), its numbers by each
 * operation's own test; the forward pass within a few percent. The training run compares
 * with plain fp32: the loss must fall alike. Where the device has no bf16
 * these print as skipped.
 *
 * Then a third pass, "bf16 storage": a backend opened with
 * MP_CUDA_ACTIVATIONS=bf16 keeps the tensors of alloc_act in bf16 NHWC.
 * Every operation that takes activations (from alloc_act; plain images
 * into the stem-like convolution), the network steps, reproducibility,
 * the graphs and the training run again, against the reference with its
 * convolutions' operands and every stored activation rounded to bf16
 * (tests/act_checker.h, which also fails any call that mixes activation
 * and plain tensors): each operation within RTOL_BF16, a whole network's
 * step as in the bf16 pass.
 *
 * Without a CUDA device it prints "1..0 # SKIP no CUDA device (...)" and
 * exits 0: prove reports it as skipped, never as passed.
 *
 * Built with MP_TEST_EMULATED_DEVICE (build/tests/emu/test_cuda_ops_device)
 * it tests the whole backend as built, its streams, graphs and cuDNN
 * calls included, on the device that tests/emu/emu_device.cpp emulates
 * on the host (the CUDA runtime, cuDNN and cuBLAS stood in for); every
 * make test runs it. It lowers the grid limits there, so that small
 * shapes take the large ones' paths, and trains with the activations in
 * bf16 only (the host is slow).
 *
 * usage: test_cuda_ops [--harness-check [--fault residual]]
 *   --harness-check runs every comparison with the fast CPU backend in
 *   the place of CUDA (with tests/graph_recorder.h's graphs): it checks
 *   this program's own logic on a machine without a GPU, and says nothing
 *   about the CUDA backend.
 *   --fault residual: the stand-in drops the gradient of the blocks'
 *   residual (bn_relu_backward's dres stays zero), a wrong path that each
 *   whole step, fp32 and bf16 alike, must fail on. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "device.h"
#include "mp_resnet.h"
#include "../graph_recorder.h"
#include "../random_plan.h"
#include "../act_checker.h"
#ifdef MP_TEST_EMULATED_DEVICE
#include "../emu/emu_device.h"
#endif

#define RTOL 1e-3
#define RTOL_BF16 2e-2
/* A whole step in bf16: within STEP_SPREAD times bf16's own effect on
 * the step (step_limit), where that is larger than RTOL_BF16. */
#define STEP_SPREAD 3.0

/* a ReLU input this close to its boundary (of the tensor's largest) may
 * fall on the other side on the device: see relu_margin */
#define RELU_MARGIN 1e-5

static double rtol = RTOL; /* the tolerance of the current precision */
static const char *prefix = ""; /* "bf16: " in the bf16 pass */

static mp_backend *ref, *dev; /* CPU reference, device under test */
/* another CPU reference that never rounds: bf16's own effect on a whole
 * step (step_limit) */
static mp_backend *ref_fp32;
static int ref_rounding; /* ref rounds as in bf16 (ref_rounds_bf16) */
static mp_rng rng;
static int tests, failures;
static int cur_failed; /* the current test has failed a check */
static const char *dev_name = "cuda";

/* ---- TAP -------------------------------------------------------------- */

static void begin(void)
{
	cur_failed = 0;
}

static void end(const char *name)
{
	tests++;
	if (cur_failed)
		failures++;
	printf("%s %d - %s%s\n", cur_failed ? "not ok" : "ok", tests, prefix, name);
	fflush(stdout);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("# FAIL: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	cur_failed = 1;
}

/* Fails the test when rc < 0, with the backend's message. */
static int ok_rc(int rc, mp_backend *be, const char *what)
{
	if (rc < 0) {
		fail("%s on %s: %s", what, be == ref ? "cpu-ref" : dev_name, mp_backend_error(be));
		return 0;
	}
	return 1;
}

/* ---- tensor pairs: the same values on both backends ---------------------- */

typedef struct {
	mp_tensor r, d;
} pair;

static float *random_array(size_t n, double lo, double hi)
{
	float *a = malloc(n * sizeof *a);
	if (!a) {
		fprintf(stderr, "test_cuda_ops: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		a[i] = (float)(lo + (hi - lo) * mp_rng_uniform(&rng));
	return a;
}

static int palloc(pair *p, int n, int c, int h, int w)
{
	memset(p, 0, sizeof *p);
	return ok_rc(ref->ops->alloc(ref, &p->r, n, c, h, w), ref, "alloc") &&
	       ok_rc(dev->ops->alloc(dev, &p->d, n, c, h, w), dev, "alloc");
}

/* In the bf16-storage pass (act_mode), the activation operands come from
 * alloc_act: bf16 NHWC on the device, rounded to bf16 by the reference's
 * act_checker.h; elsewhere as palloc. */
static int act_mode;
static int storage_dev; /* the device stores its activations in bf16 */

static int palloc_a(pair *p, int n, int c, int h, int w)
{
	if (!act_mode)
		return palloc(p, n, c, h, w);
	memset(p, 0, sizeof *p);
	return ok_rc(mp_backend_alloc_act(ref, &p->r, n, c, h, w), ref, "alloc_act") &&
	       ok_rc(mp_backend_alloc_act(dev, &p->d, n, c, h, w), dev, "alloc_act");
}

static int pput(pair *p, const float *h)
{
	return ok_rc(ref->ops->upload(ref, &p->r, h), ref, "upload") &&
	       ok_rc(dev->ops->upload(dev, &p->d, h), dev, "upload");
}

/* Fills both with the same uniform values in [lo, hi); allocated: the
 * result of palloc or palloc_a. */
static int pfill_random(int allocated, pair *p, double lo, double hi)
{
	if (!allocated)
		return 0;
	float *a = random_array(mp_tensor_count(&p->r), lo, hi);
	int ok = pput(p, a);
	free(a);
	return ok;
}

static int prandom(pair *p, int n, int c, int h, int w, double lo, double hi)
{
	return pfill_random(palloc(p, n, c, h, w), p, lo, hi);
}

static int prandom_a(pair *p, int n, int c, int h, int w, double lo, double hi)
{
	return pfill_random(palloc_a(p, n, c, h, w), p, lo, hi);
}

static void pfree(pair *p)
{
	if (p->r.data)
		ref->ops->release(ref, &p->r);
	if (p->d.data)
		dev->ops->release(dev, &p->d);
}

static float *fetch(mp_backend *be, const mp_tensor *t)
{
	float *h = malloc(mp_tensor_count(t) * sizeof *h);
	if (!h) {
		fprintf(stderr, "test_cuda_ops: out of memory\n");
		exit(1);
	}
	if (be->ops->download(be, t, h) < 0) {
		fail("download: %s", mp_backend_error(be));
		memset(h, 0, mp_tensor_count(t) * sizeof *h);
	}
	return h;
}

/* max |a - b| / max |ref|, NaN counting as an infinite error */
static double rel_err(const float *a, const float *ref_, size_t n)
{
	double e = 0, m = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - ref_[i]);
		if (!(d <= e))
			e = isnan(d) ? INFINITY : d;
		if (fabs(ref_[i]) > m)
			m = fabs(ref_[i]);
	}
	return m > 0 ? e / m : e;
}

static double worst; /* the largest error of all checks within rtol, for the summary */
static double worst_step; /* the largest of a bf16 step's errors over its limit */

/* The device's values d against the reference's r: within limit (rtol
 * or a whole bf16 step's, step_limit) of max |r|. */
static void compare_values(const char *what, const float *r, const float *d, size_t n,
			   double limit)
{
	const double e = rel_err(d, r, n);
	if (limit == rtol && e > worst)
		worst = e;
	if (limit != rtol && e / limit > worst_step)
		worst_step = e / limit;
	printf("#   %-44s rel err %.2e\n", what, e);
	if (!(e <= limit))
		fail("%s: relative error %.3e > %.2g", what, e, limit);
}

static void compare_limit(const char *what, const mp_tensor *r, const mp_tensor *d, double limit)
{
	if (mp_tensor_count(r) != mp_tensor_count(d)) {
		fail("%s: %zu values on cpu-ref, %zu on %s", what, mp_tensor_count(r),
		     mp_tensor_count(d), dev_name);
		return;
	}
	float *a = fetch(ref, r), *b = fetch(dev, d);
	compare_values(what, a, b, mp_tensor_count(r), limit);
	free(a);
	free(b);
}

/* bf16's own effect on values r of a whole step, computed in fp32 as f
 * (on ref_fp32): rel_err(r, f), printed */
static double own_effect(const char *what, const float *r, const float *f, size_t n)
{
	const double own = rel_err(r, f, n);
	printf("#   %-44s bf16's own effect %.2e\n", what, own);
	return own;
}

static double own_effect_t(const char *what, const mp_tensor *r, const mp_tensor *f)
{
	float *a = fetch(ref, r), *b = fetch(ref_fp32, f);
	const double own = own_effect(what, a, b, mp_tensor_count(r));
	free(a);
	free(b);
	return own;
}

/* The limit of a whole bf16 step's values on which bf16's own effect is
 * own: see the comment at the top */
static double step_limit(double own)
{
	return STEP_SPREAD * own > rtol ? STEP_SPREAD * own : rtol;
}

static void compare(const char *what, const mp_tensor *r, const mp_tensor *d)
{
	compare_limit(what, r, d, rtol);
}

static void pcompare(const char *what, const pair *p)
{
	compare(what, &p->r, &p->d);
}

/* ---- the reference with bf16 roundings ------------------------------------- */

/* cpu-ref's own operations, and the same with its convolutions rounded as
 * in bf16; under --harness-check the stand-in device's too */
static const mp_backend_ops *ref_plain, *dev_plain;
static mp_backend_ops ref_bf16, dev_bf16;

static const mp_backend_ops *plain(mp_backend *be)
{
	return be == ref ? ref_plain : dev_plain;
}

/* Rounds t's values to bf16 in place (through download and upload). */
static int round_in_place(mp_backend *be, mp_tensor *t)
{
	float *h = fetch(be, t);
	for (size_t i = 0; i < mp_tensor_count(t); i++)
		h[i] = act_bf16(h[i]);
	int rc = plain(be)->upload(be, t, h);
	free(h);
	return rc;
}

/* out: a new tensor holding t's values rounded to bf16 */
static int rounded_copy(mp_backend *be, const mp_tensor *t, mp_tensor *out)
{
	memset(out, 0, sizeof *out);
	if (plain(be)->alloc(be, out, t->n, t->c, t->h, t->w) < 0)
		return -1;
	float *h = fetch(be, t);
	int rc = plain(be)->upload(be, out, h);
	free(h);
	return rc < 0 ? rc : round_in_place(be, out);
}

static int bf16_conv_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y,
			     int stride, int pad)
{
	mp_tensor xr, wr;
	int rc = rounded_copy(be, x, &xr);
	if (rc == 0)
		rc = rounded_copy(be, w, &wr);
	if (rc == 0)
		rc = plain(be)->conv2d_forward(be, &xr, &wr, y, stride, pad);
	if (rc == 0)
		rc = round_in_place(be, y);
	plain(be)->release(be, &xr);
	plain(be)->release(be, &wr);
	return rc;
}

static int bf16_conv_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			      const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride, int pad)
{
	mp_tensor xr, wr, dyr;
	int rc = rounded_copy(be, x, &xr);
	if (rc == 0)
		rc = rounded_copy(be, w, &wr);
	if (rc == 0)
		rc = rounded_copy(be, dy, &dyr);
	if (rc == 0)
		rc = plain(be)->conv2d_backward(be, &xr, &wr, &dyr, dx, dw, stride, pad);
	if (rc == 0 && dx)
		rc = round_in_place(be, dx);
	if (rc == 0 && dw)
		rc = round_in_place(be, dw);
	plain(be)->release(be, &xr);
	plain(be)->release(be, &wr);
	plain(be)->release(be, &dyr);
	return rc;
}

static void rounding_ops(mp_backend *be, const mp_backend_ops **saved, mp_backend_ops *rounded,
			 int on)
{
	if (!*saved) {
		*saved = be->ops;
		*rounded = **saved;
		rounded->conv2d_forward = bf16_conv_forward;
		rounded->conv2d_backward = bf16_conv_backward;
	}
	be->ops = on ? rounded : *saved;
}

/* The reference computes as the device does in bf16 (1) or in fp32 (0). */
static void ref_rounds_bf16(int on)
{
	rounding_ops(ref, &ref_plain, &ref_bf16, on);
	ref_rounding = on;
}

/* ---- how close a ReLU decision came to its boundary ------------------------------ */

/* The smallest |v| / max |v| of a ReLU's inputs v (per tensor) in
 * ref_fp32's forward passes since it was last set to 1. A value that
 * close to zero may land on the other side on the device, whose float
 * sums run in another order (about 1e-7 of the tensor's scale in fp32):
 * then the gradient through it is taken or dropped on one side only, and
 * where a layer's gradient sums cancel, a whole step's gradients differ
 * by up to a percent. */
static double relu_margin = 1;
static const mp_backend_ops *fp32_plain;
static mp_backend_ops fp32_spied;

static void note_margin(const float *v, size_t n)
{
	double lo = INFINITY, hi = 0;
	for (size_t i = 0; i < n; i++) {
		const double a = fabs((double)v[i]);
		lo = a < lo ? a : lo;
		hi = a > hi ? a : hi;
	}
	if (hi > 0 && lo / hi < relu_margin)
		relu_margin = lo / hi;
}

static int spy_relu_forward(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	note_margin(x->data, mp_tensor_count(x));
	return fp32_plain->relu_forward(be, x, y);
}

/* the ReLU's input as the fused op makes it (BN with this batch's
 * statistics, plus res), from what it saves */
static int spy_bn_relu_forward_train(mp_backend *be, const mp_tensor *x, mp_bn *bn,
				     const mp_tensor *res, mp_tensor *y)
{
	const int rc = fp32_plain->bn_relu_forward_train(be, x, bn, res, y);
	if (rc < 0)
		return rc;
	const size_t plane = (size_t)x->h * x->w, count = mp_tensor_count(x);
	float *v = malloc(count * sizeof *v);
	if (!v)
		exit(1);
	for (size_t i = 0; i < count; i++) {
		const int c = (int)(i / plane % (size_t)x->c);
		v[i] = (float)(((double)x->data[i] - bn->save_mean->data[c]) *
				       bn->save_invstd->data[c] * bn->gamma->data[c] +
			       bn->beta->data[c] + (res ? res->data[i] : 0));
	}
	note_margin(v, count);
	free(v);
	return 0;
}

/* without its ReLU, which then follows as relu_forward's: the same bits */
static int spy_conv_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				     const mp_tensor *prep, const mp_tensor *res, int relu,
				     mp_tensor *y, int stride, int pad)
{
	const int rc = fp32_plain->conv_bn_forward_infer(be, x, w, prep, res, 0, y, stride, pad);
	return rc < 0 || !relu ? rc : spy_relu_forward(be, y, y);
}

static void spy_on_relu(mp_backend *be)
{
	fp32_plain = be->ops;
	fp32_spied = *be->ops;
	fp32_spied.relu_forward = spy_relu_forward;
	if (fp32_spied.bn_relu_forward_train)
		fp32_spied.bn_relu_forward_train = spy_bn_relu_forward_train;
	if (fp32_spied.conv_bn_forward_infer)
		fp32_spied.conv_bn_forward_infer = spy_conv_bn_forward_infer;
	be->ops = &fp32_spied;
}

/* ---- memory, fill -------------------------------------------------------- */

static void test_memory(void)
{
	begin();
	pair p;
	if (prandom_a(&p, 3, 5, 7, 9, -4, 4)) {
		if (act_mode && !p.d.storage)
			fail("alloc_act gave a float tensor: activations are not stored in bf16");
		pcompare("upload/download 3x5x7x9", &p);
		if (ok_rc(ref->ops->fill(ref, &p.r, 1.5f), ref, "fill") &&
		    ok_rc(dev->ops->fill(dev, &p.d, 1.5f), dev, "fill"))
			pcompare("fill 1.5", &p);
	}
	pfree(&p);
	end("memory round trip and fill");
}

/* ---- convolution ----------------------------------------------------------- */

typedef struct {
	int n, c, h, w, k, kh, kw, stride, pad;
} conv_case;

static const conv_case conv_cases[] = {
	{2, 3, 9, 9, 8, 3, 3, 1, 1},	  /* stem-like */
	{3, 5, 11, 7, 6, 3, 3, 2, 1},	  /* odd sizes, stride 2 */
	{4, 16, 8, 8, 32, 1, 1, 2, 0},	  /* 1x1 projection, stride 2 */
	{2, 8, 13, 13, 8, 3, 3, 1, 1},	  /* odd, identity block */
	{2, 3, 17, 17, 4, 5, 5, 2, 2},	  /* 5x5 */
	{1, 4, 6, 6, 4, 3, 3, 3, 0},	  /* stride 3, no pad */
	{4, 32, 14, 14, 64, 3, 3, 2, 1},  /* a stage transition */
	{8, 64, 7, 7, 64, 3, 3, 1, 1},	  /* the last stage's size */
	{2, 7, 5, 9, 3, 1, 1, 1, 0},	  /* 1x1, stride 1 */
};

static int conv_out(int in, int k, int s, int p)
{
	return (in + 2 * p - k) / s + 1;
}

static void test_conv(const conv_case *g)
{
	char name[160], what[200];
	snprintf(name, sizeof name, "conv2d x %dx%dx%dx%d w %dx%dx%dx%d stride %d pad %d", g->n,
		 g->c, g->h, g->w, g->k, g->c, g->kh, g->kw, g->stride, g->pad);
	begin();
	const int oh = conv_out(g->h, g->kh, g->stride, g->pad);
	const int ow = conv_out(g->w, g->kw, g->stride, g->pad);
	pair x, w, y, dy, dx, dw;
	memset(&y, 0, sizeof y);
	memset(&dx, 0, sizeof dx);
	memset(&dw, 0, sizeof dw);
	memset(&dy, 0, sizeof dy);
	const double ws = sqrt(2.0 / (g->c * g->kh * g->kw));
	/* in the bf16-storage pass the stem-like case takes plain images */
	const int plain_x = g == &conv_cases[0];
	if ((plain_x ? prandom(&x, g->n, g->c, g->h, g->w, -1, 1)
		     : prandom_a(&x, g->n, g->c, g->h, g->w, -1, 1)) &&
	    prandom(&w, g->k, g->c, g->kh, g->kw, -ws, ws) && palloc_a(&y, g->n, g->k, oh, ow) &&
	    prandom_a(&dy, g->n, g->k, oh, ow, -1, 1) && palloc_a(&dx, g->n, g->c, g->h, g->w) &&
	    palloc(&dw, g->k, g->c, g->kh, g->kw)) {
		if (ok_rc(ref->ops->conv2d_forward(ref, &x.r, &w.r, &y.r, g->stride, g->pad), ref,
			  "conv2d_forward") &&
		    ok_rc(dev->ops->conv2d_forward(dev, &x.d, &w.d, &y.d, g->stride, g->pad), dev,
			  "conv2d_forward")) {
			snprintf(what, sizeof what, "y");
			pcompare(what, &y);
		}
		if (ok_rc(ref->ops->conv2d_backward(ref, &x.r, &w.r, &dy.r, &dx.r, &dw.r,
						     g->stride, g->pad),
			  ref, "conv2d_backward") &&
		    ok_rc(dev->ops->conv2d_backward(dev, &x.d, &w.d, &dy.d, &dx.d, &dw.d,
						     g->stride, g->pad),
			  dev, "conv2d_backward")) {
			pcompare("dx", &dx);
			pcompare("dw", &dw);
		}
		/* one gradient at a time: the other may be NULL */
		dev->ops->fill(dev, &dw.d, 7.0f);
		if (ok_rc(dev->ops->conv2d_backward(dev, &x.d, &w.d, &dy.d, NULL, &dw.d, g->stride,
						     g->pad),
			  dev, "conv2d_backward (dx NULL)"))
			pcompare("dw (dx NULL)", &dw);
		dev->ops->fill(dev, &dx.d, 7.0f);
		if (ok_rc(dev->ops->conv2d_backward(dev, &x.d, &w.d, &dy.d, &dx.d, NULL, g->stride,
						     g->pad),
			  dev, "conv2d_backward (dw NULL)"))
			pcompare("dx (dw NULL)", &dx);
		/* the input gradient added to what dx holds: the reference's
		 * conv2d_backward and add */
		pair base;
		memset(&base, 0, sizeof base);
		if (dev->ops->conv2d_backward_add && !plain_x &&
		    prandom_a(&base, g->n, g->c, g->h, g->w, -1, 1) &&
		    ok_rc(ref->ops->add(ref, &dx.r, &base.r, &dx.r), ref, "add")) {
			float *h = fetch(dev, &base.d);
			if (ok_rc(dev->ops->upload(dev, &dx.d, h), dev, "upload") &&
			    ok_rc(dev->ops->conv2d_backward_add(dev, &x.d, &w.d, &dy.d, &dx.d, &dw.d,
								 g->stride, g->pad),
				  dev, "conv2d_backward_add")) {
				pcompare("dx (conv2d_backward_add)", &dx);
				pcompare("dw (conv2d_backward_add)", &dw);
			}
			free(h);
		}
		pfree(&base);
	}
	pfree(&x);
	pfree(&w);
	pfree(&y);
	pfree(&dy);
	pfree(&dx);
	pfree(&dw);
	end(name);
}

/* bf16: the SGD step also writes each parameter's bf16 filter copy, which
 * the convolutions then take instead of converting the filter (a backend
 * may, kernels/cuda/layers.cu does): the same bits as a conversion, and
 * never a stale copy after the parameters are written otherwise (upload,
 * fill) or by the next step. */
static void test_filter_copies(void)
{
	begin();
	pair x, w, y, dy, dx, g, v, lr;
	memset(&y, 0, sizeof y);
	memset(&dx, 0, sizeof dx);
	memset(&g, 0, sizeof g);
	memset(&v, 0, sizeof v);
	memset(&lr, 0, sizeof lr);
	memset(&dy, 0, sizeof dy);
	float *y1 = NULL, *dx1 = NULL, *y2 = NULL, *dx2 = NULL, *w_host = NULL, *y3 = NULL;
	const float zero = 0.0f, rate = 0.1f;
	if (!(prandom_a(&x, 2, 8, 9, 9, -1, 1) && prandom(&w, 16, 8, 3, 3, -0.2, 0.2) &&
	      palloc_a(&y, 2, 16, 9, 9) && prandom_a(&dy, 2, 16, 9, 9, -1, 1) &&
	      palloc_a(&dx, 2, 8, 9, 9) && palloc(&g, 16, 8, 3, 3) && palloc(&v, 16, 8, 3, 3) &&
	      palloc(&lr, 1, 1, 1, 1)))
		goto out;
	mp_tensor *wd_ = &w.d, *vd = &v.d, *wr = &w.r, *vr = &v.r;
	const mp_tensor *gd = &g.d, *gr = &g.r;
#define DEV_CONV(yout, dxout)                                                                  \
	(ok_rc(dev->ops->conv2d_forward(dev, &x.d, &w.d, &y.d, 1, 1), dev, "conv2d_forward") &&   \
	 ok_rc(dev->ops->conv2d_backward(dev, &x.d, &w.d, &dy.d, &dx.d, NULL, 1, 1), dev,         \
	       "conv2d_backward") &&                                                             \
	 ((yout) = fetch(dev, &y.d)) && ((dxout) = fetch(dev, &dx.d)))
	/* the filter converted at the calls */
	if (!DEV_CONV(y1, dx1))
		goto out;
	/* a step that leaves w as it is writes its copy: the same bits */
	if (!(ok_rc(dev->ops->fill(dev, &g.d, 0), dev, "fill") &&
	      ok_rc(dev->ops->fill(dev, &v.d, 0), dev, "fill") && pput(&lr, &zero) &&
	      ok_rc(dev->ops->sgd_step(dev, &wd_, &gd, &vd, 1, &lr.d, 0, 0), dev, "sgd_step") &&
	      DEV_CONV(y2, dx2)))
		goto out;
	if (memcmp(y1, y2, mp_tensor_count(&y.d) * sizeof *y1) ||
	    memcmp(dx1, dx2, mp_tensor_count(&dx.d) * sizeof *dx1))
		fail("after an SGD step that kept w, y or dx differ from the converted filter's");
	/* new values uploaded, then filled: the convolutions take them */
	if (!pfill_random(1, &w, -0.2, 0.2) ||
	    !ok_rc(ref->ops->conv2d_forward(ref, &x.r, &w.r, &y.r, 1, 1), ref, "conv2d_forward") ||
	    !ok_rc(dev->ops->conv2d_forward(dev, &x.d, &w.d, &y.d, 1, 1), dev, "conv2d_forward"))
		goto out;
	pcompare("y after w was uploaded", &y);
	/* the copy made again (a step that keeps w), then w filled */
	if (!ok_rc(dev->ops->sgd_step(dev, &wd_, &gd, &vd, 1, &lr.d, 0, 0), dev, "sgd_step") ||
	    !ok_rc(ref->ops->fill(ref, &w.r, 0.25f), ref, "fill") ||
	    !ok_rc(dev->ops->fill(dev, &w.d, 0.25f), dev, "fill") ||
	    !ok_rc(ref->ops->conv2d_backward(ref, &x.r, &w.r, &dy.r, &dx.r, NULL, 1, 1), ref,
		   "conv2d_backward") ||
	    !ok_rc(dev->ops->conv2d_backward(dev, &x.d, &w.d, &dy.d, &dx.d, NULL, 1, 1), dev,
		   "conv2d_backward"))
		goto out;
	pcompare("dx after w was filled", &dx);
	/* a step that moves w: the copy holds the new values, in the
	 * filter's layout, as a conversion of them would */
	if (!pfill_random(1, &w, -0.2, 0.2) || !pfill_random(1, &g, -1, 1) || !pput(&lr, &rate) ||
	    !ok_rc(ref->ops->fill(ref, &v.r, 0), ref, "fill") ||
	    !ok_rc(dev->ops->fill(dev, &v.d, 0), dev, "fill") ||
	    !ok_rc(ref->ops->sgd_step(ref, &wr, &gr, &vr, 1, &lr.r, 0.9f, 1e-4f), ref, "sgd_step") ||
	    !ok_rc(dev->ops->sgd_step(dev, &wd_, &gd, &vd, 1, &lr.d, 0.9f, 1e-4f), dev, "sgd_step") ||
	    !ok_rc(ref->ops->conv2d_forward(ref, &x.r, &w.r, &y.r, 1, 1), ref, "conv2d_forward") ||
	    !ok_rc(dev->ops->conv2d_forward(dev, &x.d, &w.d, &y.d, 1, 1), dev, "conv2d_forward"))
		goto out;
	pcompare("y after an SGD step", &y);
	y3 = fetch(dev, &y.d);
	w_host = fetch(dev, &w.d);
	free(y1);
	y1 = NULL;
	if (ok_rc(dev->ops->upload(dev, &w.d, w_host), dev, "upload") &&
	    ok_rc(dev->ops->conv2d_forward(dev, &x.d, &w.d, &y.d, 1, 1), dev, "conv2d_forward") &&
	    (y1 = fetch(dev, &y.d)) && memcmp(y1, y3, mp_tensor_count(&y.d) * sizeof *y1))
		fail("after an SGD step, y differs from the one with the same filter converted");
	/* a step recorded but never launched (its graph freed, as after a
	 * recording that failed) wrote no copy: after new values, the
	 * convolutions take them, not the copy of the last step that ran */
	if (dev->ops->graph_begin) {
		void *graph = NULL;
		if (!ok_rc(dev->ops->sgd_step(dev, &wd_, &gd, &vd, 1, &lr.d, 0.9f, 1e-4f), dev,
			   "sgd_step") ||
		    !pfill_random(1, &w, -0.2, 0.2) ||
		    !ok_rc(dev->ops->graph_begin(dev), dev, "graph_begin"))
			goto out;
		const int rc_step = dev->ops->sgd_step(dev, &wd_, &gd, &vd, 1, &lr.d, 0.9f, 1e-4f);
		const int rc_end = dev->ops->graph_end(dev, &graph);
		dev->ops->graph_free(dev, graph);
		if (!ok_rc(rc_step, dev, "sgd_step while recording") ||
		    !ok_rc(rc_end, dev, "graph_end") ||
		    !ok_rc(ref->ops->conv2d_forward(ref, &x.r, &w.r, &y.r, 1, 1), ref,
			   "conv2d_forward") ||
		    !ok_rc(dev->ops->conv2d_forward(dev, &x.d, &w.d, &y.d, 1, 1), dev,
			   "conv2d_forward"))
			goto out;
		pcompare("y after a step recorded and never launched", &y);
	}
#undef DEV_CONV
out:
	free(y1);
	free(dx1);
	free(y2);
	free(dx2);
	free(y3);
	free(w_host);
	pair *all[] = {&x, &w, &y, &dy, &dx, &g, &v, &lr};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		pfree(all[i]);
	end("the SGD step's bf16 filter copies: a conversion's bits, never stale");
}

/* bf16: a parameter written by a graph (an upload from host_alloc memory,
 * recorded) makes the SGD step's filter copies stale when the graph runs,
 * as the write op by op would, even when they were not valid while it was
 * recorded */
static void test_filter_copies_graph_write(void)
{
	begin();
	pair x, w, y, g, v, lr;
	memset(&y, 0, sizeof y);
	memset(&g, 0, sizeof g);
	memset(&v, 0, sizeof v);
	memset(&lr, 0, sizeof lr);
	const float zero = 0.0f;
	float *h = NULL;
	void *graph = NULL;
	if (!dev->ops->graph_begin)
		goto out;
	if (!(prandom(&x, 2, 8, 9, 9, -1, 1) && prandom(&w, 16, 8, 3, 3, -0.2, 0.2) &&
	      palloc(&y, 2, 16, 9, 9) && palloc(&g, 16, 8, 3, 3) && palloc(&v, 16, 8, 3, 3) &&
	      palloc(&lr, 1, 1, 1, 1)))
		goto out;
	mp_tensor *wd_ = &w.d, *vd = &v.d;
	const mp_tensor *gd = &g.d;
	if (!(ok_rc(dev->ops->fill(dev, &g.d, 0), dev, "fill") &&
	      ok_rc(dev->ops->fill(dev, &v.d, 0), dev, "fill") && pput(&lr, &zero)))
		goto out;
	/* the tables made for w, then w uploaded: copies invalid */
	if (!ok_rc(dev->ops->sgd_step(dev, &wd_, &gd, &vd, 1, &lr.d, 0, 0), dev, "sgd_step") ||
	    !pfill_random(1, &w, -0.2, 0.2))
		goto out;
	const size_t n = mp_tensor_count(&w.d);
	h = mp_backend_host_alloc(dev, n * sizeof *h);
	if (!h) {
		fail("host_alloc: out of memory");
		goto out;
	}
	/* record a graph that uploads w from h */
	if (!ok_rc(dev->ops->graph_begin(dev), dev, "graph_begin"))
		goto out;
	const int rc_up = dev->ops->upload(dev, &w.d, h);
	const int rc_end = dev->ops->graph_end(dev, &graph);
	if (!ok_rc(rc_up, dev, "upload while recording") || !ok_rc(rc_end, dev, "graph_end"))
		goto out;
	/* an SGD step that keeps w (rate 0) op by op: copies valid, = w */
	if (!ok_rc(dev->ops->sgd_step(dev, &wd_, &gd, &vd, 1, &lr.d, 0, 0), dev, "sgd_step"))
		goto out;
	/* new values through the graph */
	float *a = random_array(n, -0.2, 0.2);
	memcpy(h, a, n * sizeof *h);
	const int ok = ok_rc(ref->ops->upload(ref, &w.r, a), ref, "upload");
	free(a);
	if (!ok)
		goto out;
	const int rl = dev->ops->graph_launch(dev, graph);
	if (rl != 0)
		fail("graph_launch returned %d, expected 0", rl);
	if (rl != 0 || !ok_rc(dev->ops->graph_wait(dev), dev, "graph_wait"))
		goto out;
	if (!ok_rc(ref->ops->conv2d_forward(ref, &x.r, &w.r, &y.r, 1, 1), ref, "conv2d_forward") ||
	    !ok_rc(dev->ops->conv2d_forward(dev, &x.d, &w.d, &y.d, 1, 1), dev, "conv2d_forward"))
		goto out;
	pcompare("y after a graph uploaded w", &y);
out:
	if (graph)
		dev->ops->graph_free(dev, graph);
	mp_backend_host_free(dev, h);
	pair *all[] = {&x, &w, &y, &g, &v, &lr};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		pfree(all[i]);
	end("the bf16 filter copies after a graph wrote a parameter: the new values");
}

/* ---- batch normalization ------------------------------------------------------ */

typedef struct {
	pair gamma, beta, rmean, rvar, smean, sinvstd;
	mp_bn r, d;
} bn_pair;

static int bn_make(bn_pair *b, int c)
{
	memset(b, 0, sizeof *b);
	if (!(prandom(&b->gamma, c, 1, 1, 1, 0.5, 1.5) && prandom(&b->beta, c, 1, 1, 1, -0.5, 0.5) &&
	      prandom(&b->rmean, c, 1, 1, 1, -0.2, 0.2) && prandom(&b->rvar, c, 1, 1, 1, 0.5, 2) &&
	      palloc(&b->smean, c, 1, 1, 1) && palloc(&b->sinvstd, c, 1, 1, 1)))
		return 0;
	b->r = (mp_bn){&b->gamma.r, &b->beta.r, &b->rmean.r, &b->rvar.r,
		       &b->smean.r, &b->sinvstd.r, 1e-3f, 0.9f};
	b->d = (mp_bn){&b->gamma.d, &b->beta.d, &b->rmean.d, &b->rvar.d,
		       &b->smean.d, &b->sinvstd.d, 1e-3f, 0.9f};
	return 1;
}

static void bn_free(bn_pair *b)
{
	pfree(&b->gamma);
	pfree(&b->beta);
	pfree(&b->rmean);
	pfree(&b->rvar);
	pfree(&b->smean);
	pfree(&b->sinvstd);
}

static void test_bn(int n, int c, int h, int w)
{
	char name[128];
	snprintf(name, sizeof name, "batch norm %dx%dx%dx%d: train, infer, backward", n, c, h, w);
	begin();
	bn_pair b;
	pair x, y, dy, dx, dg, db;
	memset(&x, 0, sizeof x);
	y = dy = dx = dg = db = x;
	if (bn_make(&b, c) && prandom_a(&x, n, c, h, w, 1, 5) && palloc_a(&y, n, c, h, w) &&
	    prandom_a(&dy, n, c, h, w, -1, 1) && palloc_a(&dx, n, c, h, w) &&
	    palloc(&dg, c, 1, 1, 1) && palloc(&db, c, 1, 1, 1)) {
		if (ok_rc(ref->ops->bn_forward_train(ref, &x.r, &b.r, &y.r), ref, "bn_forward_train") &&
		    ok_rc(dev->ops->bn_forward_train(dev, &x.d, &b.d, &y.d), dev, "bn_forward_train")) {
			pcompare("train y", &y);
			pcompare("save_mean", &b.smean);
			pcompare("save_invstd", &b.sinvstd);
			pcompare("running_mean", &b.rmean);
			pcompare("running_var", &b.rvar);
		}
		if (ok_rc(ref->ops->bn_backward(ref, &x.r, &b.r, &dy.r, &dx.r, &dg.r, &db.r), ref,
			  "bn_backward") &&
		    ok_rc(dev->ops->bn_backward(dev, &x.d, &b.d, &dy.d, &dx.d, &dg.d, &db.d), dev,
			  "bn_backward")) {
			pcompare("dx", &dx);
			pcompare("dgamma", &dg);
			pcompare("dbeta", &db);
		}
		dev->ops->fill(dev, &dg.d, 7.0f);
		if (ok_rc(dev->ops->bn_backward(dev, &x.d, &b.d, &dy.d, NULL, &dg.d, NULL), dev,
			  "bn_backward (dx, dbeta NULL)"))
			pcompare("dgamma (dx, dbeta NULL)", &dg);
		if (ok_rc(ref->ops->bn_forward_infer(ref, &x.r, &b.r, &y.r), ref, "bn_forward_infer") &&
		    ok_rc(dev->ops->bn_forward_infer(dev, &x.d, &b.d, &y.d), dev, "bn_forward_infer"))
			pcompare("infer y", &y);
	}
	bn_free(&b);
	pfree(&x);
	pfree(&y);
	pfree(&dy);
	pfree(&dx);
	pfree(&dg);
	pfree(&db);
	end(name);
}

/* BN with the residual and ReLU fused (training), against the reference's
 * definition: with and without a residual, with and without dres. */
static void test_bn_relu(int n, int c, int h, int w, int with_res)
{
	char name[160];
	snprintf(name, sizeof name, "fused BN%s + ReLU %dx%dx%dx%d: forward, backward",
		 with_res ? " + residual" : "", n, c, h, w);
	begin();
	if (!dev->ops->bn_relu_forward_train || !ref->ops->bn_relu_forward_train) {
		printf("ok %d - %s # SKIP no fused BN + ReLU here\n", ++tests, name);
		return;
	}
	bn_pair b;
	pair x, res, y, dy, dx, dg, db, dres;
	memset(&x, 0, sizeof x);
	res = y = dy = dx = dg = db = dres = x;
	/* x centred on 0 so that the ReLU cuts about half of the values */
	if (bn_make(&b, c) && prandom_a(&x, n, c, h, w, -2, 2) &&
	    prandom_a(&res, n, c, h, w, -1, 1) && palloc_a(&y, n, c, h, w) &&
	    prandom_a(&dy, n, c, h, w, -1, 1) && palloc_a(&dx, n, c, h, w) &&
	    palloc(&dg, c, 1, 1, 1) && palloc(&db, c, 1, 1, 1) && palloc_a(&dres, n, c, h, w)) {
		const mp_tensor *rr = with_res ? &res.r : NULL, *rd = with_res ? &res.d : NULL;
		if (ok_rc(ref->ops->bn_relu_forward_train(ref, &x.r, &b.r, rr, &y.r), ref,
			  "bn_relu_forward_train") &&
		    ok_rc(dev->ops->bn_relu_forward_train(dev, &x.d, &b.d, rd, &y.d), dev,
			  "bn_relu_forward_train")) {
			pcompare("y", &y);
			pcompare("save_mean", &b.smean);
			pcompare("save_invstd", &b.sinvstd);
			pcompare("running_var", &b.rvar);
		}
		if (ok_rc(ref->ops->bn_relu_backward(ref, &x.r, &b.r, &y.r, &dy.r, &dx.r, &dg.r, &db.r,
						     &dres.r),
			  ref, "bn_relu_backward") &&
		    ok_rc(dev->ops->bn_relu_backward(dev, &x.d, &b.d, &y.d, &dy.d, &dx.d, &dg.d, &db.d,
						     &dres.d),
			  dev, "bn_relu_backward")) {
			pcompare("dx", &dx);
			pcompare("dgamma", &dg);
			pcompare("dbeta", &db);
			pcompare("dres", &dres);
		}
		dev->ops->fill(dev, &dx.d, 7.0f);
		if (ok_rc(dev->ops->bn_relu_backward(dev, &x.d, &b.d, &y.d, &dy.d, &dx.d, NULL, NULL,
						     NULL),
			  dev, "bn_relu_backward (dres NULL)"))
			pcompare("dx (dres NULL)", &dx);
		/* the residual's gradient alone: dx may be NULL too */
		dev->ops->fill(dev, &dres.d, 7.0f);
		if (ok_rc(dev->ops->bn_relu_backward(dev, &x.d, &b.d, &y.d, &dy.d, NULL, NULL, NULL,
						     &dres.d),
			  dev, "bn_relu_backward (dx NULL)"))
			pcompare("dres (dx NULL)", &dres);
	}
	bn_free(&b);
	pfree(&x);
	pfree(&res);
	pfree(&y);
	pfree(&dy);
	pfree(&dx);
	pfree(&dg);
	pfree(&db);
	pfree(&dres);
	end(name);
}

/* The fused inference convolution (conv_bn_prepare, conv_bn_forward_infer)
 * against the reference's separate operations: conv2d_forward,
 * bn_forward_infer, add, relu_forward. */
static void test_conv_bn(const conv_case *g, int with_res, int relu)
{
	char name[192];
	snprintf(name, sizeof name, "fused inference conv + BN%s%s, x %dx%dx%dx%d w %dx%dx%dx%d "
		 "stride %d pad %d", with_res ? " + residual" : "", relu ? " + ReLU" : "", g->n,
		 g->c, g->h, g->w, g->k, g->c, g->kh, g->kw, g->stride, g->pad);
	if (!dev->ops->conv_bn_prepare) {
		printf("ok %d - %s%s # SKIP %s has no fused inference convolution here\n", ++tests,
		       prefix, name, dev_name);
		return;
	}
	begin();
	const int oh = conv_out(g->h, g->kh, g->stride, g->pad);
	const int ow = conv_out(g->w, g->kw, g->stride, g->pad);
	bn_pair b;
	pair x, w, y, t, res;
	memset(&x, 0, sizeof x);
	w = y = t = res = x;
	mp_tensor prep = {0};
	const double ws = sqrt(2.0 / (g->c * g->kh * g->kw));
	const int plain_x = g == &conv_cases[0]; /* the images: plain */
	if (bn_make(&b, g->k) &&
	    (plain_x ? prandom(&x, g->n, g->c, g->h, g->w, -1, 1)
		     : prandom_a(&x, g->n, g->c, g->h, g->w, -1, 1)) &&
	    prandom(&w, g->k, g->c, g->kh, g->kw, -ws, ws) && palloc_a(&y, g->n, g->k, oh, ow) &&
	    palloc_a(&t, g->n, g->k, oh, ow) && prandom_a(&res, g->n, g->k, oh, ow, -1, 1)) {
		int ok = ok_rc(ref->ops->conv2d_forward(ref, &x.r, &w.r, &t.r, g->stride, g->pad),
			       ref, "conv2d_forward") &&
			 ok_rc(ref->ops->bn_forward_infer(ref, &t.r, &b.r, &y.r), ref,
			       "bn_forward_infer") &&
			 (!with_res || ok_rc(ref->ops->add(ref, &y.r, &res.r, &y.r), ref, "add")) &&
			 (!relu || ok_rc(ref->ops->relu_forward(ref, &y.r, &y.r), ref, "relu_forward"));
		ok = ok && ok_rc(dev->ops->conv_bn_prepare(dev, &w.d, &b.d, g->stride, g->pad, &prep),
				 dev, "conv_bn_prepare") &&
		     ok_rc(dev->ops->conv_bn_forward_infer(dev, &x.d, &w.d, &prep,
							  with_res ? &res.d : NULL, relu, &y.d,
							  g->stride, g->pad),
			   dev, "conv_bn_forward_infer");
		if (ok)
			pcompare("y", &y);
	}
	if (prep.data)
		dev->ops->release(dev, &prep);
	bn_free(&b);
	pfree(&x);
	pfree(&w);
	pfree(&y);
	pfree(&t);
	pfree(&res);
	end(name);
}

static void conv_bn_cases(void)
{
	test_conv_bn(&conv_cases[0], 0, 1); /* the stem */
	test_conv_bn(&conv_cases[3], 1, 1); /* a block's second convolution */
	test_conv_bn(&conv_cases[2], 0, 0); /* a projection */
	test_conv_bn(&conv_cases[6], 0, 1); /* a stage transition */
	test_conv_bn(&conv_cases[1], 1, 0); /* odd sizes, stride 2 */
}

/* ---- ReLU, add, shortcut, pooling, linear ----------------------------------------- */

static void test_relu_add(int n, int c, int h, int w)
{
	char name[96];
	snprintf(name, sizeof name, "relu and add %dx%dx%dx%d", n, c, h, w);
	begin();
	pair x, y, dy, dx, b;
	memset(&x, 0, sizeof x);
	y = dy = dx = b = x;
	if (prandom_a(&x, n, c, h, w, -1, 1) && palloc_a(&y, n, c, h, w) &&
	    prandom_a(&dy, n, c, h, w, -1, 1) && palloc_a(&dx, n, c, h, w) &&
	    prandom_a(&b, n, c, h, w, -1, 1)) {
		if (ok_rc(ref->ops->relu_forward(ref, &x.r, &y.r), ref, "relu_forward") &&
		    ok_rc(dev->ops->relu_forward(dev, &x.d, &y.d), dev, "relu_forward"))
			pcompare("relu y", &y);
		if (ok_rc(ref->ops->relu_backward(ref, &y.r, &dy.r, &dx.r), ref, "relu_backward") &&
		    ok_rc(dev->ops->relu_backward(dev, &y.d, &dy.d, &dx.d), dev, "relu_backward"))
			pcompare("relu dx", &dx);
		if (ok_rc(ref->ops->add(ref, &x.r, &b.r, &y.r), ref, "add") &&
		    ok_rc(dev->ops->add(dev, &x.d, &b.d, &y.d), dev, "add"))
			pcompare("add y", &y);
		/* y aliasing a */
		if (ok_rc(ref->ops->add(ref, &x.r, &b.r, &x.r), ref, "add") &&
		    ok_rc(dev->ops->add(dev, &x.d, &b.d, &x.d), dev, "add"))
			pcompare("add in place", &x);
	}
	pfree(&x);
	pfree(&y);
	pfree(&dy);
	pfree(&dx);
	pfree(&b);
	end(name);
}

static void test_shortcut(int n, int cx, int h, int w, int cy, int stride)
{
	char name[128];
	snprintf(name, sizeof name, "shortcut A %dx%dx%dx%d -> %d channels, stride %d", n, cx, h,
		 w, cy, stride);
	begin();
	const int oh = (h - 1) / stride + 1, ow = (w - 1) / stride + 1;
	pair x, y, dy, dx;
	memset(&x, 0, sizeof x);
	y = dy = dx = x;
	if (prandom_a(&x, n, cx, h, w, -1, 1) && palloc_a(&y, n, cy, oh, ow) &&
	    prandom_a(&dy, n, cy, oh, ow, -1, 1) && palloc_a(&dx, n, cx, h, w)) {
		if (ok_rc(ref->ops->shortcut_a_forward(ref, &x.r, &y.r, stride), ref, "shortcut fwd") &&
		    ok_rc(dev->ops->shortcut_a_forward(dev, &x.d, &y.d, stride), dev, "shortcut fwd"))
			pcompare("y", &y);
		if (ok_rc(ref->ops->shortcut_a_backward(ref, &dy.r, &dx.r, stride), ref,
			  "shortcut bwd") &&
		    ok_rc(dev->ops->shortcut_a_backward(dev, &dy.d, &dx.d, stride), dev,
			  "shortcut bwd"))
			pcompare("dx", &dx);
	}
	pfree(&x);
	pfree(&y);
	pfree(&dy);
	pfree(&dx);
	end(name);
}

static void test_avgpool(int n, int c, int h, int w)
{
	char name[96];
	snprintf(name, sizeof name, "global average pooling %dx%dx%dx%d", n, c, h, w);
	begin();
	pair x, y, dy, dx;
	memset(&x, 0, sizeof x);
	y = dy = dx = x;
	if (prandom_a(&x, n, c, h, w, -1, 3) && palloc(&y, n, c, 1, 1) &&
	    prandom(&dy, n, c, 1, 1, -1, 1) && palloc_a(&dx, n, c, h, w)) {
		if (ok_rc(ref->ops->avgpool_forward(ref, &x.r, &y.r), ref, "avgpool_forward") &&
		    ok_rc(dev->ops->avgpool_forward(dev, &x.d, &y.d), dev, "avgpool_forward"))
			pcompare("y", &y);
		if (ok_rc(ref->ops->avgpool_backward(ref, &dy.r, &dx.r), ref, "avgpool_backward") &&
		    ok_rc(dev->ops->avgpool_backward(dev, &dy.d, &dx.d), dev, "avgpool_backward"))
			pcompare("dx", &dx);
	}
	pfree(&x);
	pfree(&y);
	pfree(&dy);
	pfree(&dx);
	end(name);
}

static void test_linear(int n, int in, int out)
{
	char name[96];
	snprintf(name, sizeof name, "linear %dx%d -> %d", n, in, out);
	begin();
	pair x, w, y, dy, dx, dw;
	memset(&x, 0, sizeof x);
	w = y = dy = dx = dw = x;
	if (prandom(&x, n, in, 1, 1, -1, 1) && prandom(&w, out, in, 1, 1, -0.3, 0.3) &&
	    palloc(&y, n, out, 1, 1) && prandom(&dy, n, out, 1, 1, -1, 1) &&
	    palloc(&dx, n, in, 1, 1) && palloc(&dw, out, in, 1, 1)) {
		if (ok_rc(ref->ops->linear_forward(ref, &x.r, &w.r, &y.r), ref, "linear_forward") &&
		    ok_rc(dev->ops->linear_forward(dev, &x.d, &w.d, &y.d), dev, "linear_forward"))
			pcompare("y", &y);
		if (ok_rc(ref->ops->linear_backward(ref, &x.r, &w.r, &dy.r, &dx.r, &dw.r), ref,
			  "linear_backward") &&
		    ok_rc(dev->ops->linear_backward(dev, &x.d, &w.d, &dy.d, &dx.d, &dw.d), dev,
			  "linear_backward")) {
			pcompare("dx", &dx);
			pcompare("dw", &dw);
		}
		dev->ops->fill(dev, &dw.d, 7.0f);
		if (ok_rc(dev->ops->linear_backward(dev, &x.d, &w.d, &dy.d, NULL, &dw.d), dev,
			  "linear_backward (dx NULL)"))
			pcompare("dw (dx NULL)", &dw);
		dev->ops->fill(dev, &dx.d, 7.0f);
		if (ok_rc(dev->ops->linear_backward(dev, &x.d, &w.d, &dy.d, &dx.d, NULL), dev,
			  "linear_backward (dw NULL)"))
			pcompare("dx (dw NULL)", &dx);
	}
	pfree(&x);
	pfree(&w);
	pfree(&y);
	pfree(&dy);
	pfree(&dx);
	pfree(&dw);
	end(name);
}

/* ---- softmax cross-entropy ------------------------------------------------------------ */

static void test_xent(int n, int k, float smoothing)
{
	char name[96];
	snprintf(name, sizeof name, "softmax cross-entropy %dx%d, smoothing %g", n, k,
		 (double)smoothing);
	begin();
	pair z, p, dz;
	memset(&z, 0, sizeof z);
	p = dz = z;
	int32_t *labels = malloc((size_t)n * sizeof *labels);
	for (int i = 0; i < n; i++)
		labels[i] = (int32_t)mp_rng_below(&rng, (uint64_t)k);
	double lr = 0, ld = 0;
	if (prandom(&z, n, k, 1, 1, -6, 6) && palloc(&p, n, k, 1, 1) && palloc(&dz, n, k, 1, 1)) {
		if (ok_rc(ref->ops->softmax_xent_forward(ref, &z.r, labels, smoothing, &p.r, &lr),
			  ref, "softmax_xent_forward") &&
		    ok_rc(dev->ops->softmax_xent_forward(dev, &z.d, labels, smoothing, &p.d, &ld),
			  dev, "softmax_xent_forward")) {
			pcompare("probs", &p);
			double e = fabs(ld - lr) / fabs(lr);
			printf("#   %-44s rel err %.2e (%.6f vs %.6f)\n", "loss", e, ld, lr);
			if (!(e <= RTOL))
				fail("loss %.6f, reference %.6f", ld, lr);
		}
		if (ok_rc(ref->ops->softmax_xent_backward(ref, &p.r, labels, smoothing, &dz.r), ref,
			  "softmax_xent_backward") &&
		    ok_rc(dev->ops->softmax_xent_backward(dev, &p.d, labels, smoothing, &dz.d), dev,
			  "softmax_xent_backward"))
			pcompare("dlogits", &dz);
	}
	free(labels);
	pfree(&z);
	pfree(&p);
	pfree(&dz);
	end(name);
}

/* ---- SGD ------------------------------------------------------------------------------ */

static void test_sgd(void)
{
	begin();
	enum { T = 4 };
	static const int shapes[T][4] = {{8, 3, 3, 3}, {16, 1, 1, 1}, {100, 64, 1, 1}, {5, 7, 3, 1}};
	pair w[T], g[T], v[T], lr;
	memset(w, 0, sizeof w);
	memset(g, 0, sizeof g);
	memset(v, 0, sizeof v);
	int ok = palloc(&lr, 1, 1, 1, 1);
	for (int t = 0; t < T && ok; t++) {
		const int *s = shapes[t];
		ok = prandom(&w[t], s[0], s[1], s[2], s[3], -1, 1) &&
		     prandom(&g[t], s[0], s[1], s[2], s[3], -1, 1) &&
		     prandom(&v[t], s[0], s[1], s[2], s[3], -0.1, 0.1);
	}
	mp_tensor *wr[T], *wd[T], *vr[T], *vd[T];
	const mp_tensor *gr[T], *gd[T];
	for (int t = 0; t < T; t++) {
		wr[t] = &w[t].r;
		wd[t] = &w[t].d;
		gr[t] = &g[t].r;
		gd[t] = &g[t].d;
		vr[t] = &v[t].r;
		vd[t] = &v[t].d;
	}
	/* three steps with all tensors (the second and third reuse the
	 * device's tables), then one with a different set, then the first
	 * set's weights with other gradients and momenta (the same shapes:
	 * the tables must follow every pointer, not the weights' alone), then
	 * none; each with its own rate, read from the tensor when the step
	 * runs */
	pair g2[T], v2[T];
	memset(g2, 0, sizeof g2);
	memset(v2, 0, sizeof v2);
	const mp_tensor *gr3[T], *gd3[T];
	mp_tensor *vr3[T], *vd3[T];
	for (int t = 0; t < T && ok; t++) {
		const int *s = shapes[t];
		ok = prandom(&g2[t], s[0], s[1], s[2], s[3], -1, 1) &&
		     prandom(&v2[t], s[0], s[1], s[2], s[3], -0.1, 0.1);
		gr3[t] = &g2[t].r;
		gd3[t] = &g2[t].d;
		vr3[t] = &v2[t].r;
		vd3[t] = &v2[t].d;
	}
	for (int step = 0; ok && step < 6; step++) {
		const float rate = 0.1f * (float)(step + 1);
		ok = ok_rc(ref->ops->fill(ref, &lr.r, rate), ref, "fill") &&
		     ok_rc(dev->ops->fill(dev, &lr.d, rate), dev, "fill");
		const int count = step < 3 || step == 4 ? T : step == 3 ? T - 1 : 0;
		mp_tensor **wr2 = step != 3 ? wr : wr + 1, **wd2 = step != 3 ? wd : wd + 1;
		mp_tensor **vr2 = step < 3 ? vr : step == 3 ? vr + 1 : vr3;
		mp_tensor **vd2 = step < 3 ? vd : step == 3 ? vd + 1 : vd3;
		const mp_tensor **gr2 = step < 3 ? gr : step == 3 ? gr + 1 : gr3;
		const mp_tensor **gd2 = step < 3 ? gd : step == 3 ? gd + 1 : gd3;
		ok = ok && ok_rc(ref->ops->sgd_step(ref, wr2, gr2, vr2, count, &lr.r, 0.9f, 5e-4f),
				 ref, "sgd_step") &&
		     ok_rc(dev->ops->sgd_step(dev, wd2, gd2, vd2, count, &lr.d, 0.9f, 5e-4f), dev,
			   "sgd_step");
	}
	if (ok)
		for (int t = 0; t < T; t++) {
			char what[32];
			snprintf(what, sizeof what, "w[%d]", t);
			pcompare(what, &w[t]);
			snprintf(what, sizeof what, "v[%d]", t);
			pcompare(what, &v[t]);
			snprintf(what, sizeof what, "other v[%d]", t);
			pcompare(what, &v2[t]);
		}
	for (int t = 0; t < T; t++) {
		pfree(&w[t]);
		pfree(&g[t]);
		pfree(&v[t]);
		pfree(&g2[t]);
		pfree(&v2[t]);
	}
	pfree(&lr);
	end("sgd_step: 4 tensors in one call, 6 calls with 6 rates (tables cached, rebuilt for "
	    "other tensors, other gradients and momenta, none)");
}

/* ---- shape errors: the same message from both backends ----------------------------------- */

static void same_error(const char *what, int rc_ref, int rc_dev)
{
	if (rc_ref >= 0 || rc_dev >= 0) {
		fail("%s: accepted (cpu-ref rc %d, %s rc %d)", what, rc_ref, dev_name, rc_dev);
		return;
	}
	printf("#   %s: %s\n", what, mp_backend_error(dev));
	if (strcmp(mp_backend_error(ref), mp_backend_error(dev)))
		fail("%s: cpu-ref says \"%s\", %s says \"%s\"", what, mp_backend_error(ref), dev_name,
		     mp_backend_error(dev));
}

/* ---- the training augmentation from kept images (augment_train) ------------------ */

/* The same bits on both backends for random plans of crop x crop and
 * taps (the reference follows any plan within its bounds; the loader's
 * plans are the unit tests', tests/unit/test_augment.c), whatever the
 * images' byte alignment; the plan recorded in a graph is
 * read when the graph runs; a plan outside the store refused (host) or
 * NaN (device); a write that does not fit refused alike. */
static void test_augment(int n, int crop, int taps)
{
	static const int sizes[][2] = {{97, 61}, {40, 40}, {213, 50}, {31, 29},
				       {160, 120}, {45, 300}, {400, 380}};
	enum { NIMG = 7 };
	const int N = n;
	static const double mean[3] = {120.5, 115.25, 100.0};
	uint64_t first[NIMG], bytes = 0;
	for (int i = 0; i < NIMG; i++) {
		first[i] = bytes;
		bytes += (uint64_t)sizes[i][0] * sizes[i][1] * 3;
	}
	char name[128];
	snprintf(name, sizeof name, "augment_train: %d random plans of %d x %d, up to %d taps: "
		 "the same bits", n, crop, crop, taps);
	begin();
	const size_t words = mp_augment_plan_words(N, crop, taps);
	const size_t out = (size_t)N * 3 * crop * crop;
	uint8_t *px = malloc(bytes);
	for (uint64_t b = 0; b < bytes; b++)
		px[b] = (uint8_t)mp_rng_next(&rng);
	int32_t *plan = mp_backend_host_alloc(dev, words * sizeof *plan);
	pair pixels, plan_dev, y;
	memset(&pixels, 0, sizeof pixels);
	plan_dev = y = pixels;
	float *r = NULL, *d = NULL;
	void *g = NULL;
	if (!plan) {
		fail("host_alloc: %s", mp_backend_error(dev));
		goto out;
	}
	if (!palloc(&pixels, 1, 1, 1, (int)((bytes + 3) / 4)) || !palloc(&plan_dev, 1, 1, 1, (int)words) ||
	    !palloc(&y, N, 3, crop, crop))
		goto out;
	/* the first image in two writes, the second at an odd offset */
	const size_t half = 1001;
	if (!ok_rc(ref->ops->write_bytes(ref, &pixels.r, 0, px, bytes), ref, "write_bytes") ||
	    !ok_rc(dev->ops->write_bytes(dev, &pixels.d, 0, px, half), dev, "write_bytes") ||
	    !ok_rc(dev->ops->write_bytes(dev, &pixels.d, half, px + half, bytes - half), dev,
		   "write_bytes"))
		goto out;
	const size_t end_ = (bytes + 3) / 4 * 4 - 4;
	same_error("write_bytes past the end", ref->ops->write_bytes(ref, &pixels.r, end_, px, 5),
		   dev->ops->write_bytes(dev, &pixels.d, end_, px, 5));
	random_plan(plan, N, sizes, first, NIMG, crop, taps, 0, mean, &rng);
	if (!ok_rc(ref->ops->augment_train(ref, &pixels.r, plan, taps, &plan_dev.r, &y.r), ref,
		   "augment_train") ||
	    !ok_rc(dev->ops->augment_train(dev, &pixels.d, plan, taps, &plan_dev.d, &y.d), dev,
		   "augment_train"))
		goto out;
	r = fetch(ref, &y.r);
	d = fetch(dev, &y.d);
	if (memcmp(r, d, out * sizeof *r))
		fail("the batch differs from cpu-ref's (relative error %.3g)", rel_err(d, r, out));
	free(r);
	free(d);
	r = d = NULL;

	/* recorded, then run with the next epoch's plan in the same memory */
	if (dev->ops->graph_begin) {
		if (!ok_rc(dev->ops->graph_begin(dev), dev, "graph_begin"))
			goto out;
		const int rc = dev->ops->augment_train(dev, &pixels.d, plan, taps, &plan_dev.d, &y.d);
		if (!ok_rc(dev->ops->graph_end(dev, &g), dev, "graph_end") ||
		    !ok_rc(rc, dev, "augment_train while recording"))
			goto out;
		random_plan(plan, N, sizes, first, NIMG, crop, taps, 0, mean, &rng);
		if (!ok_rc(ref->ops->augment_train(ref, &pixels.r, plan, taps, &plan_dev.r, &y.r), ref,
			   "augment_train") ||
		    !ok_rc(dev->ops->graph_launch(dev, g), dev, "graph_launch") ||
		    !ok_rc(dev->ops->graph_wait(dev), dev, "graph_wait"))
			goto out;
		r = fetch(ref, &y.r);
		d = fetch(dev, &y.d);
		if (memcmp(r, d, out * sizeof *r))
			fail("recorded: the batch of the plan at launch differs from cpu-ref's "
			     "(relative error %.3g)", rel_err(d, r, out));
		free(r);
		free(d);
		r = d = NULL;
	}

	/* image 1 set past the store's end: the reference refuses it; a
	 * device, which reads the plan there, makes its crop NaN and the
	 * others as before */
	int32_t *rec = plan + MP_AUGMENT_PLAN_HEAD + MP_AUGMENT_PLAN_IMAGE(crop, taps);
	rec[0] = (int32_t)(bytes - 10);
	const int rc_ref = ref->ops->augment_train(ref, &pixels.r, plan, taps, &plan_dev.r, &y.r);
	if (rc_ref >= 0 || !strstr(mp_backend_error(ref), "not inside"))
		fail("cpu-ref: a plan past the pixels: rc %d, \"%s\"", rc_ref, mp_backend_error(ref));
	const int rc_dev = dev->ops->augment_train(dev, &pixels.d, plan, taps, &plan_dev.d, &y.d);
	if (rc_dev < 0 && !strcmp(dev_name, "cuda"))
		fail("a plan past the pixels: %s", mp_backend_error(dev));
	if (rc_dev == 0) {
		rec[0] = (int32_t)first[1];
		r = fetch(ref, &y.r); /* the good plan's, of the last call that ran */
		d = fetch(dev, &y.d);
		const size_t image = (size_t)3 * crop * crop;
		for (size_t k = 0; k < out; k++)
			if (k / image == 1 ? !isnan(d[k]) : memcmp(&d[k], &r[k], sizeof *d)) {
				fail("a plan past the pixels: value %zu is %g, expected %s", k,
				     (double)d[k], k / image == 1 ? "NaN" : "the good plan's");
				break;
			}
	}
out:
	if (g)
		dev->ops->graph_free(dev, g);
	free(r);
	free(d);
	free(px);
	mp_backend_host_free(dev, plan);
	pfree(&pixels);
	pfree(&plan_dev);
	pfree(&y);
	end(name);
}

static void test_errors(void)
{
	begin();
	pair x, w, y, a, lg, pr;
	memset(&x, 0, sizeof x);
	w = y = a = lg = pr = x;
	if (prandom(&x, 2, 3, 8, 8, -1, 1) && prandom(&w, 4, 3, 3, 3, -1, 1) &&
	    palloc(&y, 2, 4, 7, 7) && prandom(&a, 2, 4, 8, 8, -1, 1) &&
	    prandom(&lg, 2, 5, 1, 1, -1, 1) && palloc(&pr, 2, 5, 1, 1)) {
		same_error("conv2d_forward, wrong y",
			   ref->ops->conv2d_forward(ref, &x.r, &w.r, &y.r, 1, 1),
			   dev->ops->conv2d_forward(dev, &x.d, &w.d, &y.d, 1, 1));
		same_error("conv2d_forward, stride 0",
			   ref->ops->conv2d_forward(ref, &x.r, &w.r, &y.r, 0, 1),
			   dev->ops->conv2d_forward(dev, &x.d, &w.d, &y.d, 0, 1));
		same_error("conv2d_backward, wrong dy",
			   ref->ops->conv2d_backward(ref, &x.r, &w.r, &y.r, NULL, NULL, 1, 1),
			   dev->ops->conv2d_backward(dev, &x.d, &w.d, &y.d, NULL, NULL, 1, 1));
		same_error("add, different shapes", ref->ops->add(ref, &x.r, &a.r, &x.r),
			   dev->ops->add(dev, &x.d, &a.d, &x.d));
		same_error("relu_forward, wrong y", ref->ops->relu_forward(ref, &x.r, &a.r),
			   dev->ops->relu_forward(dev, &x.d, &a.d));
		same_error("avgpool_forward, wrong y", ref->ops->avgpool_forward(ref, &x.r, &y.r),
			   dev->ops->avgpool_forward(dev, &x.d, &y.d));
		same_error("linear_forward, not a matrix",
			   ref->ops->linear_forward(ref, &x.r, &w.r, &y.r),
			   dev->ops->linear_forward(dev, &x.d, &w.d, &y.d));
		same_error("shortcut_a_forward, fewer channels",
			   ref->ops->shortcut_a_forward(ref, &a.r, &x.r, 1),
			   dev->ops->shortcut_a_forward(dev, &a.d, &x.d, 1));
		const int32_t bad[2] = {1, 5}, labels_ok[2] = {1, 4};
		double loss;
		same_error("softmax_xent_forward, label out of range",
			   ref->ops->softmax_xent_forward(ref, &lg.r, bad, 0, &pr.r, &loss),
			   dev->ops->softmax_xent_forward(dev, &lg.d, bad, 0, &pr.d, &loss));
		same_error("relu_backward, wrong dx", ref->ops->relu_backward(ref, &x.r, &x.r, &a.r),
			   dev->ops->relu_backward(dev, &x.d, &x.d, &a.d));
		same_error("avgpool_backward, wrong dy", ref->ops->avgpool_backward(ref, &x.r, &x.r),
			   dev->ops->avgpool_backward(dev, &x.d, &x.d));
		same_error("linear_backward, wrong dy",
			   ref->ops->linear_backward(ref, &lg.r, &pr.r, &lg.r, NULL, NULL),
			   dev->ops->linear_backward(dev, &lg.d, &pr.d, &lg.d, NULL, NULL));
		same_error("softmax_xent_forward, no loss output",
			   ref->ops->softmax_xent_forward(ref, &lg.r, labels_ok, 0, &pr.r, NULL),
			   dev->ops->softmax_xent_forward(dev, &lg.d, labels_ok, 0, &pr.d, NULL));
		same_error("softmax_xent_backward, wrong dlogits",
			   ref->ops->softmax_xent_backward(ref, &pr.r, labels_ok, 0, &x.r),
			   dev->ops->softmax_xent_backward(dev, &pr.d, labels_ok, 0, &x.d));
		bn_pair b;
		if (bn_make(&b, 3)) {
			same_error("bn_forward_train, gamma for 3 channels, x has 4",
				   ref->ops->bn_forward_train(ref, &a.r, &b.r, &a.r),
				   dev->ops->bn_forward_train(dev, &a.d, &b.d, &a.d));
			same_error("bn_forward_infer, gamma for 3 channels, x has 4",
				   ref->ops->bn_forward_infer(ref, &a.r, &b.r, &a.r),
				   dev->ops->bn_forward_infer(dev, &a.d, &b.d, &a.d));
			same_error("bn_backward, gamma for 3 channels, x has 4",
				   ref->ops->bn_backward(ref, &a.r, &b.r, &a.r, &a.r, NULL, NULL),
				   dev->ops->bn_backward(dev, &a.d, &b.d, &a.d, &a.d, NULL, NULL));
			same_error("bn_relu_forward_train, gamma for 3 channels, x has 4",
				   ref->ops->bn_relu_forward_train(ref, &a.r, &b.r, NULL, &a.r),
				   dev->ops->bn_relu_forward_train(dev, &a.d, &b.d, NULL, &a.d));
			same_error("bn_relu_backward, gamma for 3 channels, x has 4",
				   ref->ops->bn_relu_backward(ref, &a.r, &b.r, &a.r, &a.r, &a.r, NULL,
							      NULL, NULL),
				   dev->ops->bn_relu_backward(dev, &a.d, &b.d, &a.d, &a.d, &a.d, NULL,
							      NULL, NULL));
			/* w has 4 filters: BN over 3 channels does not fold into it */
			mp_tensor pr_ = {0}, pd = {0};
			same_error("conv_bn_prepare, BN for 3 channels, w has 4 filters",
				   ref->ops->conv_bn_prepare(ref, &w.r, &b.r, 1, 1, &pr_),
				   dev->ops->conv_bn_prepare(dev, &w.d, &b.d, 1, 1, &pd));
			if (pr_.data)
				ref->ops->release(ref, &pr_);
			if (pd.data)
				dev->ops->release(dev, &pd);
		}
		bn_free(&b);
		mp_tensor *wr[1] = {&w.r}, *wd[1] = {&w.d}, *vr[1] = {&x.r}, *vd[1] = {&x.d};
		const mp_tensor *gr[1] = {&w.r}, *gd[1] = {&w.d};
		pair one;
		if (prandom(&one, 1, 1, 1, 1, 0.1, 0.2))
			same_error("sgd_step, v of another shape",
				   ref->ops->sgd_step(ref, wr, gr, vr, 1, &one.r, 0.9f, 0),
				   dev->ops->sgd_step(dev, wd, gd, vd, 1, &one.d, 0.9f, 0));
		pfree(&one);
		mp_tensor *wr1[1] = {&w.r}, *wd1[1] = {&w.d};
		same_error("sgd_step, a rate of 10 values",
			   ref->ops->sgd_step(ref, wr1, gr, wr1, 1, &pr.r, 0.9f, 0),
			   dev->ops->sgd_step(dev, wd1, gd, wd1, 1, &pr.d, 0.9f, 0));
	}
	pfree(&x);
	pfree(&w);
	pfree(&y);
	pfree(&a);
	pfree(&lg);
	pfree(&pr);
	end("shape errors: the CPU backend's messages");
}

/* ---- a whole network ----------------------------------------------------------------------- */

static void small_config(mp_resnet_config *c, char shortcut)
{
	mp_resnet_config_default(c);
	c->depth = 1;
	c->stages = 3;
	c->widths[0] = 8;
	c->widths[1] = 16;
	c->widths[2] = 32;
	c->stem_stride = 1;
	c->shortcut = shortcut;
	c->classes = 10;
	c->input_size = 15; /* odd: 15 -> 8 -> 4 */
}

static mp_resnet *make_net(const mp_resnet_config *c, mp_backend *be, uint64_t seed)
{
	mp_error e;
	mp_resnet *net = mp_resnet_new(c, be, &e);
	if (!net || mp_resnet_init(net, seed, &e) < 0) {
		fail("mp_resnet on %s: %s",
		     be == ref ? "cpu-ref" : be == ref_fp32 ? "cpu-ref (fp32)" : dev_name, e.msg);
		mp_resnet_free(net);
		return NULL;
	}
	return net;
}

/* Host images for n images of class labels[i]: a class-dependent mean per
 * channel plus noise, so that a few steps can learn them. */
static float *make_images(int n, int size, int classes, int32_t *labels, double noise)
{
	float *x = malloc((size_t)n * 3 * size * size * sizeof *x);
	if (!x)
		exit(1);
	for (int i = 0; i < n; i++) {
		labels[i] = (int32_t)mp_rng_below(&rng, (uint64_t)classes);
		for (int c = 0; c < 3; c++) {
			const double mean = 40.0 * sin(1.7 * labels[i] + 2.1 * c);
			for (int p = 0; p < size * size; p++) {
				const double tilt = (p % size < size / 2 ? 1 : -1) * 10.0 *
						    cos(0.9 * labels[i] + c);
				x[((size_t)i * 3 + c) * size * size + p] =
					(float)(mean + tilt + noise * (mp_rng_uniform(&rng) - 0.5));
			}
		}
	}
	return x;
}

static int net_step(mp_resnet *net, mp_backend *be, const float *x, const int32_t *labels,
		    int n, int size, double *loss)
{
	mp_error e;
	if (mp_resnet_forward(net, x, n, size, size, 1, &e) < 0 ||
	    mp_resnet_loss(net, labels, 0.1f, loss, NULL, &e) < 0 ||
	    mp_resnet_backward(net, &e) < 0 || mp_resnet_sgd(net, 0.1f, 0.9f, 5e-4f, &e) < 0) {
		fail("training step on %s: %s", be == ref ? "cpu-ref" : dev_name, e.msg);
		return 0;
	}
	return 1;
}

static int cmp_double(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* One training step of the small net, then inference, on images of their
 * own random numbers (image_seed: the same whatever ran before); the
 * smallest ReLU margin of ref_fp32's passes in *margin. */
static void network_step(char shortcut, uint64_t image_seed, double *margin)
{
	mp_resnet_config c;
	small_config(&c, shortcut);
	mp_resnet *nr = make_net(&c, ref, 11), *nd = make_net(&c, dev, 11);
	/* the same step in fp32, where the reference rounds as in bf16 (and
	 * for the ReLU margins) */
	mp_resnet *nf = make_net(&c, ref_fp32, 11);
	const int n = 6, size = c.input_size;
	int32_t labels[6];
	const mp_rng before = rng;
	mp_rng_seed(&rng, image_seed);
	float *x = make_images(n, size, c.classes, labels, 60);
	rng = before;
	mp_error e;
	double lr = 0, ld = 0, lf = 0;
	relu_margin = 1;
	if (nr && nd && nf) {
		int ok = mp_resnet_forward(nr, x, n, size, size, 1, &e) >= 0 &&
			 mp_resnet_forward(nd, x, n, size, size, 1, &e) >= 0 &&
			 (!nf || mp_resnet_forward(nf, x, n, size, size, 1, &e) >= 0);
		float lgr[6 * 10], lgd[6 * 10], lgf[6 * 10];
		ok = ok && mp_resnet_logits(nr, lgr, &e) >= 0 && mp_resnet_logits(nd, lgd, &e) >= 0 &&
		     (!nf || mp_resnet_logits(nf, lgf, &e) >= 0);
		ok = ok && mp_resnet_loss(nr, labels, 0.1f, &lr, NULL, &e) >= 0 &&
		     mp_resnet_loss(nd, labels, 0.1f, &ld, NULL, &e) >= 0 &&
		     (!nf || mp_resnet_loss(nf, labels, 0.1f, &lf, NULL, &e) >= 0);
		ok = ok && mp_resnet_backward(nr, &e) >= 0 && mp_resnet_backward(nd, &e) >= 0 &&
		     (!nf || mp_resnet_backward(nf, &e) >= 0);
		if (!ok)
			fail("forward/loss/backward: %s", e.msg);
		else {
			/* the limits: see the comment at the top */
			double fwd = rtol, typical = 0;
			const size_t nl = (size_t)n * c.classes;
			const float lossr = (float)lr, lossd = (float)ld;
			const int np = mp_resnet_param_count(nr);
			double *own = calloc((size_t)np, sizeof *own);
			double *sorted = calloc((size_t)np, sizeof *sorted);
			if (!own || !sorted)
				exit(1);
			if (ref_rounding) {
				fwd = step_limit(own_effect("logits", lgr, lgf, nl));
				int ng = 0;
				for (int i = 0; i < np; i++) {
					mp_param *pr = mp_resnet_param(nr, i);
					if (pr->kind != MP_PARAM_WEIGHT)
						continue;
					char what[128];
					snprintf(what, sizeof what, "grad %s", pr->name);
					own[i] = own_effect_t(what, &pr->grad,
							      &mp_resnet_param(nf, i)->grad);
					sorted[ng++] = own[i];
				}
				qsort(sorted, (size_t)ng, sizeof *sorted, cmp_double);
				typical = ng ? sorted[ng / 2] : 0;
				printf("#   limits: forward %.2g, backward %.2g (a gradient's own "
				       "effect, or the median %.2e where larger)\n",
				       fwd, step_limit(typical), typical);
			}
			compare_values("logits", lgr, lgd, nl, fwd);
			printf("#   loss %.6f, reference %.6f\n", ld, lr);
			compare_values("loss", &lossr, &lossd, 1, fwd);
			for (int i = 0; i < np; i++) {
				mp_param *pr = mp_resnet_param(nr, i), *pd = mp_resnet_param(nd, i);
				if (pr->kind != MP_PARAM_WEIGHT)
					continue;
				char what[128];
				snprintf(what, sizeof what, "grad %s", pr->name);
				compare_limit(what, &pr->grad, &pd->grad,
					      step_limit(own[i] > typical ? own[i] : typical));
			}
			if (mp_resnet_sgd(nr, 0.1f, 0.9f, 5e-4f, &e) < 0 ||
			    mp_resnet_sgd(nd, 0.1f, 0.9f, 5e-4f, &e) < 0 ||
			    mp_resnet_sgd(nf, 0.1f, 0.9f, 5e-4f, &e) < 0)
				fail("sgd: %s", e.msg);
			for (int i = 0; i < np; i++) {
				mp_param *pr = mp_resnet_param(nr, i), *pd = mp_resnet_param(nd, i);
				char what[128];
				snprintf(what, sizeof what, "updated %s", pr->name);
				/* the running statistics come of the forward pass,
				 * a weight of its gradient */
				const double limit =
					pr->kind != MP_PARAM_WEIGHT
						? fwd
						: step_limit(own[i] > typical ? own[i] : typical);
				compare_limit(what, &pr->value, &pd->value, limit);
				if (pr->kind == MP_PARAM_WEIGHT) {
					snprintf(what, sizeof what, "momentum %s", pr->name);
					compare_limit(what, &pr->momentum, &pd->momentum, limit);
				}
			}
			/* inference with the running statistics, on the updated net */
			if (mp_resnet_forward(nr, x, n, size, size, 0, &e) < 0 ||
			    mp_resnet_forward(nd, x, n, size, size, 0, &e) < 0 ||
			    mp_resnet_forward(nf, x, n, size, size, 0, &e) < 0 ||
			    mp_resnet_logits(nr, lgr, &e) < 0 || mp_resnet_logits(nd, lgd, &e) < 0 ||
			    mp_resnet_logits(nf, lgf, &e) < 0) {
				fail("inference: %s", e.msg);
			} else {
				/* its weights moved by the update: the larger of the
				 * logits' own effect and the typical gradient's */
				double limit = rtol;
				if (ref_rounding) {
					const double o = own_effect("inference logits", lgr, lgf, nl);
					limit = step_limit(o > typical ? o : typical);
				}
				compare_values("inference logits", lgr, lgd, nl, limit);
			}
			free(own);
			free(sorted);
		}
	}
	free(x);
	mp_resnet_free(nr);
	mp_resnet_free(nd);
	mp_resnet_free(nf);
	*margin = relu_margin;
}

/* A training step of the small net, then inference, against the
 * reference. Where an fp32 step fails and a ReLU's input came within
 * RELU_MARGIN of its boundary (see relu_margin), that decision may have
 * gone the other way: the step runs again on other images, at most
 * three times, and says so. A wrong operation fails on any images. */
static void test_network(char shortcut)
{
	char name[96];
	snprintf(name, sizeof name, "small resnet, shortcut %c: one training step, then inference",
		 shortcut);
	begin();
	double margin = 1;
	const double worst_before = worst, worst_step_before = worst_step;
	for (int attempt = 1;; attempt++) {
		network_step(shortcut, 1000 * (uint64_t)shortcut + (uint64_t)attempt, &margin);
		if (!cur_failed || ref_rounding || margin >= RELU_MARGIN || attempt == 3)
			break;
		printf("# a ReLU's input within %.1e of its boundary (limit %.0e): the failures "
		       "above may follow from its other side; again on other images\n",
		       margin, RELU_MARGIN);
		/* the summary's largest errors: those of the attempt that counts */
		cur_failed = 0;
		worst = worst_before;
		worst_step = worst_step_before;
	}
	end(name);
}

/* Two device nets from the same weights, three steps on the same data: the
 * same bits (the backward convolutions use deterministic algorithms). */
static void test_reproducible(void)
{
	begin();
	mp_resnet_config c;
	small_config(&c, 'B');
	mp_resnet *a = make_net(&c, dev, 5), *b = make_net(&c, dev, 5);
	const int n = 8, size = c.input_size;
	int32_t labels[8];
	float *x = make_images(n, size, c.classes, labels, 60);
	if (a && b) {
		double la, lb;
		int ok = 1;
		for (int s = 0; s < 3 && ok; s++)
			ok = net_step(a, dev, x, labels, n, size, &la) &&
			     net_step(b, dev, x, labels, n, size, &lb);
		int differ = 0;
		for (int i = 0; ok && i < mp_resnet_param_count(a); i++) {
			mp_param *pa = mp_resnet_param(a, i), *pb = mp_resnet_param(b, i);
			float *ha = fetch(dev, &pa->value), *hb = fetch(dev, &pb->value);
			if (memcmp(ha, hb, mp_tensor_count(&pa->value) * sizeof *ha)) {
				fail("%s differs between two runs", pa->name);
				differ++;
			}
			free(ha);
			free(hb);
		}
		if (ok)
			printf("#   %d of %d tensors differ after 3 steps\n", differ,
			       mp_resnet_param_count(a));
	}
	free(x);
	mp_resnet_free(a);
	mp_resnet_free(b);
	end("two device runs from the same weights give the same bits");
}

/* Prints the test as skipped where the device has no graphs. */
static int skipped_without_graphs(const char *name)
{
	if (dev->ops->graph_begin)
		return 0;
	printf("ok %d - %s%s # SKIP %s has no graphs\n", ++tests, prefix, name, dev_name);
	return 1;
}

/* The training step recorded as a graph, as mp-train runs it: started
 * from one input slot (mp_resnet_train_start), the next batch written
 * into the other slot, its copy to the device started on the second
 * stream (mp_resnet_input_ready) and the caller's labels overwritten while
 * it runs, then finished. A net stepped six times so (the first two steps
 * op by op, the next two recorded, one per slot, the last four launched) and
 * the same net stepped six times op by op on the same data and rates give
 * the same bits: loss, probabilities, every parameter and momentum. Then
 * an inference pass (new buffers) and three more steps: recorded again.
 * The nets run one after the other, since the device's SGD tables follow
 * the last net stepped. */
/* The rules of backend.h's graphs that the backend keeps (and
 * tests/graph_recorder.h models): alloc and set_precision refused while
 * recording (and, in the CUDA backend, a convolution of a shape not run
 * before), graph_end then failing with that message, the backend
 * working op by op afterwards; a change of precision makes the graphs
 * recorded before stale (graph_launch returns 1), so that none runs in
 * the precision it was not recorded for. */
static void test_graph_rules(void)
{
	static const char name[] = "graph rules: alloc, set_precision and a convolution's "
				   "first choice refused while recording; a change of precision "
				   "makes graphs stale";
	if (skipped_without_graphs(name))
		return;
	begin();
	const mp_backend_ops *o = dev->ops;
	mp_tensor t = {0}, u = {0};
	void *g = NULL;
	float *host = mp_backend_host_alloc(dev, 6 * sizeof *host);
	if (!host) {
		fail("host_alloc: out of memory");
		goto out;
	}
	if (!ok_rc(o->alloc(dev, &t, 1, 1, 2, 3), dev, "alloc") ||
	    !ok_rc(o->fill(dev, &t, 1.0f), dev, "fill") ||
	    !ok_rc(o->graph_begin(dev), dev, "graph_begin"))
		goto out;
	const int rc_fill = o->fill(dev, &t, 2.0f);
	const int rc_alloc = o->alloc(dev, &u, 1, 1, 2, 3);
	int rc_end = o->graph_end(dev, &g);
	if (rc_fill < 0)
		fail("fill while recording: %s", mp_backend_error(dev));
	if (rc_alloc >= 0)
		fail("alloc while recording succeeded");
	if (rc_end >= 0 || g)
		fail("graph_end after a refused alloc succeeded");
	else if (!strstr(mp_backend_error(dev), "alloc"))
		fail("graph_end after a refused alloc: \"%s\" does not name it",
		     mp_backend_error(dev));
	o->graph_free(dev, g);
	g = NULL;
	if (u.data)
		o->release(dev, &u);
	/* the failed recording left nothing behind: op by op works */
	if (ok_rc(o->fill(dev, &t, 3.0f), dev, "fill after a failed recording") &&
	    ok_rc(o->download(dev, &t, host), dev, "download after a failed recording"))
		for (int i = 0; i < 6; i++)
			if (host[i] != 3.0f) {
				fail("after a failed recording: value %d is %g, expected 3", i,
				     (double)host[i]);
				break;
			}
	/* a convolution of a shape never run: the CUDA backend refuses to
	 * choose its algorithm in a recording (a choice is kept for good),
	 * and makes it op by op, after which the recording works */
	if (!strcmp(dev_name, "cuda")) {
		mp_tensor cx = {0}, cw = {0}, cy = {0};
		if (ok_rc(o->alloc(dev, &cx, 1, 2, 5, 7), dev, "alloc") &&
		    ok_rc(o->alloc(dev, &cw, 3, 2, 3, 3), dev, "alloc") &&
		    ok_rc(o->alloc(dev, &cy, 1, 3, 5, 7), dev, "alloc") &&
		    ok_rc(o->fill(dev, &cx, 1.0f), dev, "fill") &&
		    ok_rc(o->fill(dev, &cw, 0.5f), dev, "fill") &&
		    ok_rc(o->graph_begin(dev), dev, "graph_begin")) {
			const int rc_conv = o->conv2d_forward(dev, &cx, &cw, &cy, 1, 1);
			rc_end = o->graph_end(dev, &g);
			if (rc_conv >= 0 || rc_end >= 0 || g)
				fail("a convolution of a new shape while recording: rc %d, graph_end %d",
				     rc_conv, rc_end);
			else if (!strstr(mp_backend_error(dev), "first choice of algorithm"))
				fail("graph_end after a new convolution shape: \"%s\" does not say why",
				     mp_backend_error(dev));
			o->graph_free(dev, g);
			g = NULL;
			if (ok_rc(o->conv2d_forward(dev, &cx, &cw, &cy, 1, 1), dev,
				  "conv2d_forward after the failed recording") &&
			    ok_rc(o->graph_begin(dev), dev, "graph_begin")) {
				const int rc_again = o->conv2d_forward(dev, &cx, &cw, &cy, 1, 1);
				rc_end = o->graph_end(dev, &g);
				ok_rc(rc_again, dev, "conv2d_forward recorded after it ran once");
				ok_rc(rc_end, dev, "graph_end");
				o->graph_free(dev, g);
				g = NULL;
			}
		}
		mp_tensor *conv_all[] = {&cx, &cw, &cy};
		for (size_t i = 0; i < 3; i++)
			if (conv_all[i]->data)
				o->release(dev, conv_all[i]);
	}
	if (!o->set_precision)
		goto out;
	if (!ok_rc(o->graph_begin(dev), dev, "graph_begin"))
		goto out;
	const int rc_prec = o->set_precision(dev, MP_PRECISION_FP32);
	rc_end = o->graph_end(dev, &g);
	if (rc_prec >= 0)
		fail("set_precision while recording succeeded");
	if (rc_end >= 0 || g)
		fail("graph_end after a refused set_precision succeeded");
	o->graph_free(dev, g);
	g = NULL;
	if (!ok_rc(o->graph_begin(dev), dev, "graph_begin") ||
	    !ok_rc(o->fill(dev, &t, 4.0f), dev, "fill while recording") ||
	    !ok_rc(o->graph_end(dev, &g), dev, "graph_end"))
		goto out;
	if (o->set_precision(dev, MP_PRECISION_BF16) < 0) {
		printf("# no bf16 (%s): a change of precision not tried\n", mp_backend_error(dev));
		goto out;
	}
	const int rc_launch = o->graph_launch(dev, g);
	if (rc_launch == 0)
		ok_rc(o->graph_wait(dev), dev, "graph_wait");
	if (rc_launch != 1)
		fail("graph_launch of an fp32 graph in bf16 returned %d, expected 1 (stale)",
		     rc_launch);
	ok_rc(o->set_precision(dev, MP_PRECISION_FP32), dev, "set_precision fp32");
out:
	o->graph_free(dev, g);
	if (t.data)
		o->release(dev, &t);
	mp_backend_host_free(dev, host);
	end(name);
}

static void test_graph_step(void)
{
	enum { STEPS = 6, N = 8 };
	char name[96];
	snprintf(name, sizeof name, "training step as a graph: %d steps, the same bits as op by op",
		 STEPS);
	if (skipped_without_graphs(name))
		return;
	begin();
	mp_resnet_config c;
	small_config(&c, 'B');
	mp_resnet *g = make_net(&c, dev, 9), *p = make_net(&c, dev, 9);
	const int size = c.input_size;
	const float rates[STEPS] = {0.1f, 0.05f, 0.2f, 0.01f, 0.1f, 0.03f};
	int32_t labels[STEPS][N];
	float *x[STEPS], pg[N * 10], pp[N * 10];
	double lg[STEPS], lp;
	mp_error e;
	for (int s = 0; s < STEPS; s++)
		x[s] = make_images(N, size, c.classes, labels[s], 60);
	int ok = g && p;
	float *probs_g = malloc((size_t)STEPS * N * 10 * sizeof *probs_g);
	const size_t batch = (size_t)N * 3 * size * size;
	float *in[2] = {ok ? mp_resnet_input(g, 0, N, size, size, &e) : NULL,
			ok ? mp_resnet_input(g, 1, N, size, size, &e) : NULL};
	ok = ok && in[0] && in[1];
	if (ok) {
		memcpy(in[0], x[0], batch * sizeof(float));
		ok = mp_resnet_input_ready(g, 0, N, size, size, &e) >= 0;
	}
	for (int s = 0; ok && s < STEPS; s++) {
		int32_t lab[N];
		memcpy(lab, labels[s], sizeof lab);
		ok = mp_resnet_train_start(g, in[s % 2], lab, N, size, size, 0.1f, rates[s], 0.9f,
					   5e-4f, &e) >= 0;
		if (ok) {
			/* while it runs: the next batch, its copy to the device
			 * started (upload_ahead), and the labels' array reused */
			if (s + 1 < STEPS) {
				memcpy(in[(s + 1) % 2], x[s + 1], batch * sizeof(float));
				ok = mp_resnet_input_ready(g, (s + 1) % 2, N, size, size, &e) >= 0;
			}
			memset(lab, 0, sizeof lab);
			ok = ok &&
			     mp_resnet_train_finish(g, &lg[s], probs_g + (size_t)s * N * 10, &e) >= 0;
		}
		if (!ok)
			fail("train_start/finish (graph) %d: %s", s + 1, e.msg);
	}
	long recorded, launched;
	if (g)
		mp_resnet_graph_counts(g, 1, &recorded, &launched);
	/* the first two op by op (the second slot's device copy is new then),
	 * one recording per slot */
	if (ok && (recorded != 2 || launched != STEPS - 2))
		fail("recorded %ld, launched %ld; expected 2 and %d", recorded, launched, STEPS - 2);
	if (p)
		mp_resnet_use_graphs(p, 0);
	for (int s = 0; ok && s < STEPS; s++) {
		ok = mp_resnet_train_step(p, x[s], labels[s], N, size, size, 0.1f, rates[s], 0.9f,
					  5e-4f, &lp, pp, &e) >= 0;
		if (!ok)
			fail("train_step (op by op) %d: %s", s + 1, e.msg);
		else if (lp != lg[s] || memcmp(pp, probs_g + (size_t)s * N * 10, sizeof pp))
			fail("step %d: loss %.9g (graph) against %.9g, or the probabilities, differ", s + 1,
			     lg[s], lp);
	}
	for (int i = 0; ok && i < mp_resnet_param_count(g); i++) {
		mp_param *a = mp_resnet_param(g, i), *b = mp_resnet_param(p, i);
		const mp_tensor *ta[2] = {&a->value, &a->momentum}, *tb[2] = {&b->value, &b->momentum};
		for (int k = 0; k < (a->kind == MP_PARAM_WEIGHT ? 2 : 1); k++) {
			float *ha = fetch(dev, ta[k]), *hb = fetch(dev, tb[k]);
			if (memcmp(ha, hb, mp_tensor_count(ta[k]) * sizeof *ha))
				fail("%s (%s) differs", a->name, k ? "momentum" : "value");
			free(ha);
			free(hb);
		}
	}
	/* an inference pass reallocates the buffers: stepped op by op once,
	 * then recorded anew (slot 0 for all three) */
	if (ok && (mp_resnet_forward(g, x[0], N, size, size, 0, &e) < 0 ||
		   mp_resnet_logits(g, pg, &e) < 0))
		fail("inference: %s", e.msg);
	for (int s = 0; ok && s < 3; s++)
		if (mp_resnet_train_step(g, x[s], labels[s], N, size, size, 0.1f, 0.1f, 0.9f, 5e-4f,
					 &lp, NULL, &e) < 0) {
			fail("train_step after inference: %s", e.msg);
			ok = 0;
		}
	if (ok) {
		mp_resnet_graph_counts(g, 1, &recorded, &launched);
		printf("#   after an inference pass and 3 steps: recorded %ld, launched %ld\n",
		       recorded, launched);
		if (recorded != 3 || launched != STEPS)
			fail("recorded %ld, launched %ld; expected 3 and %d", recorded, launched,
			     STEPS);
	}
	for (int s = 0; s < STEPS; s++)
		free(x[s]);
	free(probs_g);
	mp_resnet_free(g);
	mp_resnet_free(p);
	end(name);
}

/* The inference pass recorded as a graph (mp_resnet_predict, as mp-eval
 * runs it): four passes (the first op by op, the second recorded, all but
 * the first launched) give the same logits, to the bit, as forward + logits of the
 * same net op by op. */
static void test_predict_graph(void)
{
	enum { PASSES = 4, N = 8 };
	const char *name = "inference pass as a graph: the same logits as op by op";
	if (skipped_without_graphs(name))
		return;
	begin();
	mp_resnet_config c;
	small_config(&c, 'B');
	mp_resnet *g = make_net(&c, dev, 13), *p = make_net(&c, dev, 13);
	const int size = c.input_size;
	int32_t labels[N];
	float *x[PASSES], lg[PASSES][N * 10], lp[N * 10];
	for (int i = 0; i < PASSES; i++)
		x[i] = make_images(N, size, c.classes, labels, 60);
	mp_error e;
	int ok = g && p;
	for (int i = 0; ok && i < PASSES; i++)
		if (mp_resnet_predict(g, x[i], N, size, size, lg[i], &e) < 0) {
			fail("predict %d: %s", i + 1, e.msg);
			ok = 0;
		}
	long recorded = 0, launched = 0;
	if (ok) {
		mp_resnet_graph_counts(g, 0, &recorded, &launched);
		if (recorded != 1 || launched != PASSES - 1)
			fail("recorded %ld, launched %ld; expected 1 and %d", recorded, launched,
			     PASSES - 1);
	}
	for (int i = 0; ok && i < PASSES; i++) {
		if (mp_resnet_forward(p, x[i], N, size, size, 0, &e) < 0 ||
		    mp_resnet_logits(p, lp, &e) < 0) {
			fail("forward %d: %s", i + 1, e.msg);
			ok = 0;
		} else if (memcmp(lp, lg[i], sizeof lp)) {
			fail("pass %d: the logits differ (largest relative difference %.2e)", i + 1,
			     rel_err(lg[i], lp, (size_t)N * 10));
		}
	}
	for (int i = 0; i < PASSES; i++)
		free(x[i]);
	mp_resnet_free(g);
	mp_resnet_free(p);
	end(name);
}

/* A multiscale evaluation's passes (mp-eval --scales): the view sizes in
 * turn, each pass through mp_resnet_predict (recorded at a size's second
 * pass, then launched) giving the same logits, to the bit, as forward +
 * logits op by op. */
static void test_predict_sizes(void)
{
	enum { PASSES = 8, N = 4 };
	/* the largest first, as mp-eval's passes allocate for it first */
	static const int sizes[PASSES] = {19, 11, 15, 19, 11, 15, 19, 11};
	const char *name = "inference passes of 3 view sizes in turn as graphs: the same logits as "
			   "op by op";
	if (skipped_without_graphs(name))
		return;
	begin();
	mp_resnet_config c;
	small_config(&c, 'B');
	mp_resnet *g = make_net(&c, dev, 17), *p = make_net(&c, dev, 17);
	int32_t labels[N];
	float lg[N * 10], lp[N * 10];
	mp_error e;
	int ok = g && p;
	for (int i = 0; ok && i < PASSES; i++) {
		const int size = sizes[i];
		float *x = make_images(N, size, c.classes, labels, 60);
		if (mp_resnet_predict(g, x, N, size, size, lg, &e) < 0 ||
		    mp_resnet_forward(p, x, N, size, size, 0, &e) < 0 ||
		    mp_resnet_logits(p, lp, &e) < 0) {
			fail("pass %d (%dx%d): %s", i + 1, size, size, e.msg);
			ok = 0;
		} else if (memcmp(lp, lg, sizeof lp)) {
			fail("pass %d (%dx%d): the logits differ (largest relative difference %.2e)",
			     i + 1, size, size, rel_err(lg, lp, (size_t)N * 10));
		}
		free(x);
	}
	if (ok) {
		long recorded, launched;
		mp_resnet_graph_counts(g, 0, &recorded, &launched);
		printf("#   recorded %ld, launched %ld\n", recorded, launched);
		/* each size recorded at its second pass, and kept: the last two
		 * passes launch what was recorded */
		if (recorded != 3 || launched != 5)
			fail("recorded %ld, launched %ld; expected 3 and 5", recorded, launched);
	}
	mp_resnet_free(g);
	mp_resnet_free(p);
	end(name);
}

/* 20 steps on learnable data on the device and on the CPU: both losses
 * fall, and they fall alike. */
static void test_training(void)
{
#ifdef MP_TEST_EMULATED_DEVICE
	/* on the host the float BN's kernels take most of a minute for it:
	 * the emulated run trains with the activations in bf16 only */
	if (!storage_dev) {
		printf("ok %d - %s20 training steps # SKIP on the host emulation, only with bf16 "
		       "activations\n", ++tests, prefix);
		return;
	}
#endif
	begin();
	mp_resnet_config c;
	small_config(&c, 'A');
	mp_resnet *nr = make_net(&c, ref, 3), *nd = make_net(&c, dev, 3);
	enum { STEPS = 20, N = 16 };
	const int size = c.input_size;
	double lr[STEPS], ld[STEPS];
	int ok = nr && nd;
	for (int s = 0; s < STEPS && ok; s++) {
		int32_t labels[N];
		float *x = make_images(N, size, c.classes, labels, 60);
		ok = net_step(nr, ref, x, labels, N, size, &lr[s]) &&
		     net_step(nd, dev, x, labels, N, size, &ld[s]);
		free(x);
	}
	if (ok) {
		printf("#   step  cpu-ref loss  %s loss\n", dev_name);
		for (int s = 0; s < STEPS; s++)
			printf("#   %4d  %12.5f  %9.5f\n", s + 1, lr[s], ld[s]);
		/* the mean of the last 5 against the first */
		double tr = 0, td = 0;
		for (int s = STEPS - 5; s < STEPS; s++) {
			tr += lr[s] / 5;
			td += ld[s] / 5;
		}
		if (!(tr < 0.6 * lr[0]))
			fail("cpu-ref: the loss went from %.4f to %.4f (last 5 steps' mean); the data are not learnable enough",
			     lr[0], tr);
		if (!(td < 0.6 * ld[0]))
			fail("%s: the loss went from %.4f to %.4f (last 5 steps' mean)", dev_name, ld[0],
			     td);
		if (!(fabs(td - tr) <= 0.1 * lr[0]))
			fail("the last 5 steps' mean loss is %.4f on %s, %.4f on cpu-ref", td, dev_name,
			     tr);
	}
	mp_resnet_free(nr);
	mp_resnet_free(nd);
	end("20 training steps on learnable data: the loss falls as on the CPU");
}

/* ---- grids past CUDA's limits ---------------------------------------------------------------- */

/* Shapes whose launches would pass a limit of CUDA's grids, and so take
 * the code that only large tensors take: BN over 65536 channels (the fc
 * BN of mp-train's 65536 classes: more channels than a grid's y holds),
 * 65537 images converted to or from bf16 (a --batch of 65536 or more: more
 * images than a grid's z holds). Emulated, the limits are lowered instead
 * (4 blocks in y and z, and 2 blocks for the grid-stride kernels, whose
 * threads then take several elements each), so that small shapes reach
 * the same code in the host's time. */
static void large_grid_ops(void)
{
#ifdef MP_TEST_EMULATED_DEVICE
	mp_emu_grid_yz_most = 4;
	mp_emu_grid_most = 2;
	static const conv_case many = {5, 8, 7, 7, 8, 3, 3, 1, 1};
	test_bn(2, 6, 1, 1);
	test_bn(5, 8, 3, 3);
	test_bn_relu(5, 8, 3, 3, 1);
	test_relu_add(5, 8, 7, 9);
	test_relu_add(5, 3, 7, 9);
	test_shortcut(5, 8, 6, 6, 16, 2);
	test_avgpool(5, 8, 5, 5);
	test_conv(&many);
	test_conv_bn(&many, 1, 1);
	test_xent(5, 300, 0.1f);
	mp_emu_grid_yz_most = 65535;
	mp_emu_grid_most = 65535u * 8u;
#else
	static const conv_case many = {65537, 3, 2, 2, 4, 1, 1, 1, 0};
	test_bn(2, 65536, 1, 1);
	test_relu_add(65537, 1, 1, 1);
	test_conv(&many);
#endif
}

/* ---- main ------------------------------------------------------------------------------------ */

/* The operations that take activations, on the shapes above. */
static void activation_ops(void)
{
	test_memory();
	for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
		test_conv(&conv_cases[i]);
	conv_bn_cases();
	test_bn(4, 8, 5, 5);
	test_bn(3, 16, 7, 9);
	test_bn(16, 100, 1, 1);
	test_bn(2, 3, 1, 1);
	test_bn(64, 4, 3, 3);
	test_bn_relu(4, 8, 5, 5, 0);
	test_bn_relu(3, 16, 7, 9, 1);
	test_bn_relu(16, 100, 1, 1, 1);
	test_bn_relu(2, 12, 9, 9, 1);
	test_relu_add(2, 3, 5, 7);
	test_relu_add(4, 16, 13, 13);
	test_shortcut(2, 4, 7, 7, 8, 2);
	test_shortcut(2, 4, 6, 6, 4, 1);
	test_shortcut(3, 3, 9, 8, 5, 3);
	test_shortcut(4, 10, 1, 1, 10, 1);
	test_shortcut(2, 16, 8, 8, 32, 2);
	test_avgpool(2, 5, 7, 7);
	test_avgpool(3, 4, 1, 1);
	test_avgpool(2, 3, 13, 11);
	test_avgpool(2, 16, 13, 11);
	large_grid_ops();
}

/* An activation from alloc_act (bf16 NHWC) and a float tensor given
 * together to an operation that takes activations, or a bf16 one to an
 * operation that takes float tensors only: an error that says so, never
 * bytes read in the wrong layout. */
static void expect_error(const char *what, int rc, const char *says)
{
	printf("#   %s: %s\n", what, rc < 0 ? mp_backend_error(dev) : "accepted");
	if (rc >= 0 || !strstr(mp_backend_error(dev), says))
		fail("%s: rc %d, \"%s\"; expected an error that says \"%s\"", what, rc,
		     rc < 0 ? mp_backend_error(dev) : "", says);
}

static void test_storage_errors(void)
{
	begin();
	pair a, f, w, y, o;
	memset(&a, 0, sizeof a);
	f = w = y = o = a;
	if (prandom_a(&a, 2, 8, 3, 3, -1, 1) && prandom(&f, 2, 8, 3, 3, -1, 1) &&
	    prandom_a(&y, 2, 8, 1, 1, -1, 1) && prandom(&w, 4, 8, 1, 1, -1, 1) &&
	    palloc(&o, 2, 4, 1, 1)) {
		expect_error("add, a bf16 and b float", dev->ops->add(dev, &a.d, &f.d, &a.d), "mix");
		expect_error("relu_forward, x float and y bf16",
			     dev->ops->relu_forward(dev, &f.d, &a.d), "mix");
		expect_error("linear_forward, x bf16", dev->ops->linear_forward(dev, &y.d, &w.d, &o.d),
			     "takes float tensors");
	}
	pfree(&a);
	pfree(&f);
	pfree(&w);
	pfree(&y);
	pfree(&o);
	end("activations in bf16 and float mixed, or bf16 where float is taken: an error");
}

/* bf16 storage: the activations from alloc_act stored in bf16 NHWC on the
 * device (MP_CUDA_ACTIVATIONS=bf16), against the reference with its
 * convolutions' operands and every stored activation rounded to bf16
 * (tests/act_checker.h, which also checks that mp_resnet keeps the
 * interface's rule for them). Under --harness-check the stand-in rounds
 * alike. */
static void storage_pass(int harness)
{
	mp_backend *saved = dev;
	if (harness) {
		act_install(dev, 1);
		prefix = "bf16 storage (stand-in): ";
	} else {
#if defined(MP_HAVE_CUDA)
		char why[512];
		const char *was = getenv("MP_CUDA_ACTIVATIONS");
		char *old = was ? strdup(was) : NULL;
		setenv("MP_CUDA_ACTIVATIONS", "bf16", 1);
		mp_backend *d = mp_backend_cuda_new(0, why, sizeof why);
		if (old) {
			setenv("MP_CUDA_ACTIVATIONS", old, 1);
			free(old);
		} else {
			unsetenv("MP_CUDA_ACTIVATIONS");
		}
		if (!d || d->ops->set_precision(d, MP_PRECISION_BF16) < 0) {
			begin();
			fail("open a CUDA backend storing activations in bf16: %s",
			     d ? mp_backend_error(d) : why);
			end("bf16 storage");
			mp_backend_free(d);
			return;
		}
		dev = d;
		prefix = "bf16 storage: ";
#else
		return;
#endif
	}
	act_mode = 1;
	rtol = RTOL_BF16;
	ref_rounds_bf16(1);
	act_install(ref, 1);
	/* rounded where the device stores: the fused BN + residual + ReLU
	 * rounds its output once, the separate operations at each step, so
	 * the reference takes the device's path */
	if (!dev->ops->bn_relu_forward_train) {
		act_of(ref)->ops.bn_relu_forward_train = NULL;
		act_of(ref)->ops.bn_relu_backward = NULL;
	}
	activation_ops();
	if (!harness) {
		test_storage_errors();
		test_filter_copies();
		test_filter_copies_graph_write();
	}
	test_network('A');
	test_network('B');
	rtol = RTOL_BF16;
	act_remove(ref);
	ref_rounds_bf16(0);
	act_mode = 0;
	if (harness) {
		act_remove(dev);
	} else {
		storage_dev = 1;
		test_reproducible();
		test_graph_step();
		test_predict_graph();
		test_predict_sizes();
		test_training();
		storage_dev = 0;
		mp_backend_free(dev);
	}
	dev = saved;
}

/* --fault residual: bn_relu_backward without the residual's gradient */
static const mp_backend_ops *unfaulted;
static mp_backend_ops faulted;

static int bn_relu_backward_no_residual(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
					const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx,
					mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres)
{
	const int rc = unfaulted->bn_relu_backward(be, x, bn, y, dy, dx, dgamma, dbeta, dres);
	return rc < 0 || !dres ? rc : unfaulted->fill(be, dres, 0.0f);
}

int main(int argc, char **argv)
{
	const int harness = argc >= 2 && !strcmp(argv[1], "--harness-check");
	const int fault = argc == 4 && harness && !strcmp(argv[2], "--fault") &&
			  !strcmp(argv[3], "residual");
	if (argc == 3 || argc > 4 || (argc >= 2 && !harness) || (argc == 4 && !fault)) {
		fprintf(stderr, "usage: test_cuda_ops [--harness-check [--fault residual]]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	char why[512];
	if (harness) {
		/* matrix products only: within about 1e-6 of the reference,
		 * as an fp32 convolution's sums in another order are
		 * (Winograd's 6e-6 bring the bf16 whole steps closer to their
		 * limits: see the comment at the top) */
		setenv("MP_CPU_WINOGRAD", "0", 1);
		dev = mp_backend_cpu_fast_new(0);
		dev_name = "cpu";
		printf("# --harness-check: the fast CPU backend stands in for CUDA; this checks the test program, not the CUDA backend\n");
		if (dev && fault) {
			unfaulted = dev->ops;
			faulted = *dev->ops;
			faulted.bn_relu_backward = bn_relu_backward_no_residual;
			dev->ops = &faulted;
			printf("# --fault residual: the stand-in drops the residual's gradient\n");
		}
		/* with graphs: tests/graph_recorder.h's */
		if (dev)
			recorder_install(dev);
	} else {
#if defined(MP_HAVE_CUDA)
		int devices = mp_cuda_probe(why, sizeof why);
		if (devices < 1) {
			printf("1..0 # SKIP %s\n", why);
			return 0;
		}
		/* a line per device: each a TAP comment */
		for (char *line = strtok(why, "\n"); line; line = strtok(NULL, "\n"))
			printf("# %s\n", line);
		dev = mp_backend_cuda_new(0, why, sizeof why);
		if (!dev) {
			printf("1..1\nnot ok 1 - open the CUDA backend: %s\n", why);
			return 1;
		}
		printf("# cuda backend on %s\n", why);
#else
		(void)why;
		printf("1..0 # SKIP this build has no CUDA backend\n");
		return 0;
#endif
	}
	ref = mp_backend_cpu_new(0);
	ref_fp32 = mp_backend_cpu_new(0);
	if (!ref || !ref_fp32 || !dev) {
		printf("1..1\nnot ok 1 - create the backends: out of memory\n");
		return 1;
	}
	spy_on_relu(ref_fp32);
	mp_rng_seed(&rng, 20240917);

	activation_ops();
	test_linear(5, 37, 11);
	test_linear(128, 256, 100);
	test_linear(1, 3, 2);
	test_xent(7, 10, 0.0f);
	test_xent(128, 100, 0.1f);
	test_augment(10, 24, 57);
	test_augment(10, 56, 3);
	test_augment(128, 112, 8);
	test_sgd();
	test_errors();
	test_network('A');
	test_network('B');
	test_reproducible();
	test_graph_step();
	test_predict_graph();
	test_predict_sizes();
	test_graph_rules();
	test_training();
	const double worst_fp32 = worst;

	/* bf16: the convolutions on tensor cores, everything else as before */
	worst = 0;
	if (harness) {
		/* the stand-in rounds as the reference does: this checks the
		 * rounding wrappers and the bf16 pass's own logic */
		rounding_ops(dev, &dev_plain, &dev_bf16, 1);
		rtol = RTOL_BF16;
		prefix = "bf16 (stand-in): ";
		ref_rounds_bf16(1);
		test_network('A');
		ref_rounds_bf16(0);
		storage_pass(1);
	} else if (!dev->ops->set_precision ||
		   dev->ops->set_precision(dev, MP_PRECISION_BF16) < 0) {
		printf("ok %d - bf16 # SKIP %s\n", ++tests,
		       dev->ops->set_precision ? mp_backend_error(dev)
					       : "this backend computes in fp32 only");
	} else {
		rtol = RTOL_BF16;
		prefix = "bf16: ";
		for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
			test_conv(&conv_cases[i]);
		test_filter_copies();
		test_filter_copies_graph_write();
		conv_bn_cases();
		large_grid_ops();
		ref_rounds_bf16(1);
		test_network('A');
		test_network('B');
		ref_rounds_bf16(0);
		test_reproducible();
		test_graph_step();
		test_predict_graph();
		test_predict_sizes();
		test_training();
		storage_pass(0);
	}

	mp_backend_free(dev);
	mp_backend_free(ref);
	mp_backend_free(ref_fp32);
#ifdef MP_TEST_EMULATED_DEVICE
	{
		/* the backends gone, so are the descriptors they made (legacy
		 * and the graph API's plans with what they were made from) */
		prefix = "";
		begin();
		const unsigned long left = mp_emu_cudnn_descriptors();
		if (left)
			fail("%lu left", left);
		end("every cuDNN descriptor the backends made is destroyed with them");
	}
#endif
	printf("1..%d\n", tests);
	printf("# %d of %d failed; largest relative error %.2e (limit %.0e)", failures, tests,
	       worst_fp32, RTOL);
	if (rtol == RTOL_BF16)
		printf(", in bf16 %.2e (limit %.0e); in a bf16 whole step at most %.0f%% of its limit",
		       worst, RTOL_BF16, 100 * worst_step);
	printf("\n");
	return failures ? 1 : 0;
}
