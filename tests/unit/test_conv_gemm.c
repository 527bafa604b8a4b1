/* The fast CPU backend ("cpu", mp_backend_cpu_fast_new: im2col + OpenBLAS
 * SGEMM convolutions, Winograd for 3x3 stride-1 ones) against the reference backend (plain loops, double
 * accumulation): the forward pass, dx and dw for many shapes, the same bits
 * for any thread count, NULL gradients, shape errors, and a whole small
 * network's logits, loss and gradients (also the same bits for 1, 2 and 3
 * threads, which covers the fast table's BN, ReLU and add).
 *
 * Tolerance. The fast path sums in float: each output is a dot product of
 * R = C KH KW (forward), K KH KW (dx) or N oh ow (dw, split in per-group
 * partial sums) terms, so its error grows about like sqrt(terms) float
 * roundings of the terms' size; the 3x3 stride-1 pad-1 ones go through
 * Winograd's transforms, which add a few roundings more.
 * Measured against the largest |ref| of the tensor, the error is at most
 * about 1e-6 for the products and, for Winograd, 6e-6 with OpenBLAS's
 * AVX-512 kernels and 1.5e-5 with its AVX2 ones at 256 channels
 * (OPENBLAS_CORETYPE=Haswell; the "#" lines print it); CONV_RTOL 5e-5
 * leaves a margin of three and still catches any wrong tap, a missed
 * image or a dropped group (errors of order 1e-1). The network check's NET_RTOL 1e-4 has a margin of 7
 * over the largest error seen (1.3e-5, a BN gradient). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu/cpu.h"
#include "mp_resnet.h"

#define CONV_RTOL 5e-5	/* of the largest |ref| per tensor */
#define NET_RTOL 1e-4

/* The two CPU backends keep tensors in host memory, so one set of tensors
 * serves both. */
static mp_backend *ref, *fast;
static mp_rng rng;

/* ---- helpers ------------------------------------------------------------ */

static float *random_array(size_t n, double lo, double hi)
{
	float *a = malloc(n * sizeof *a);
	assert_non_null(a);
	for (size_t i = 0; i < n; i++)
		a[i] = (float)(lo + (hi - lo) * mp_rng_uniform(&rng));
	return a;
}

static void talloc(mp_tensor *t, int n, int c, int h, int w)
{
	assert_int_equal(ref->ops->alloc(ref, t, n, c, h, w), 0);
}

static void trelease(mp_tensor *t)
{
	ref->ops->release(ref, t);
}

static float *tdup(const mp_tensor *t)
{
	float *h = malloc(mp_tensor_count(t) * sizeof *h);
	assert_non_null(h);
	assert_int_equal(ref->ops->download(ref, t, h), 0);
	return h;
}

/* max |a - b| / max |b|, the error relative to the tensor's scale */
static double rel_err(const float *a, const float *b, size_t n)
{
	double e = 0, m = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		if (!(d <= e)) /* NaN too */
			e = d;
		if (fabs(b[i]) > m)
			m = fabs(b[i]);
	}
	return m > 0 ? e / m : e;
}

typedef struct {
	int n, c, h, w, k, kh, kw, stride, pad;
} conv_cfg;

static int conv_out(int in, int k, int s, int p)
{
	return (in + 2 * p - k) / s + 1;
}

/* The tensors of one convolution, with random x, w and dy. */
typedef struct {
	conv_cfg g;
	mp_tensor x, w, y, dy, dx, dw;
} conv_set;

static void conv_set_new(conv_set *s, conv_cfg g)
{
	const int oh = conv_out(g.h, g.kh, g.stride, g.pad), ow = conv_out(g.w, g.kw, g.stride, g.pad);
	s->g = g;
	talloc(&s->x, g.n, g.c, g.h, g.w);
	talloc(&s->w, g.k, g.c, g.kh, g.kw);
	talloc(&s->y, g.n, g.k, oh, ow);
	talloc(&s->dy, g.n, g.k, oh, ow);
	talloc(&s->dx, g.n, g.c, g.h, g.w);
	talloc(&s->dw, g.k, g.c, g.kh, g.kw);
	mp_tensor *in[] = {&s->x, &s->w, &s->dy};
	for (int i = 0; i < 3; i++) {
		float *a = random_array(mp_tensor_count(in[i]), -1, 1);
		assert_int_equal(ref->ops->upload(ref, in[i], a), 0);
		free(a);
	}
}

static void conv_set_free(conv_set *s)
{
	mp_tensor *t[] = {&s->x, &s->w, &s->y, &s->dy, &s->dx, &s->dw};
	for (int i = 0; i < 6; i++)
		trelease(t[i]);
}

/* y, dx, dw of be as new host arrays. */
static void run(mp_backend *be, conv_set *s, float **y, float **dx, float **dw)
{
	const conv_cfg g = s->g;
	if (be->ops->conv2d_forward(be, &s->x, &s->w, &s->y, g.stride, g.pad))
		fail_msg("%s: %s", be->ops->name, mp_backend_error(be));
	if (be->ops->conv2d_backward(be, &s->x, &s->w, &s->dy, &s->dx, &s->dw, g.stride, g.pad))
		fail_msg("%s: %s", be->ops->name, mp_backend_error(be));
	*y = tdup(&s->y);
	*dx = tdup(&s->dx);
	*dw = tdup(&s->dw);
}

/* ---- the fast convolution against the reference --------------------------- */

/* The fast backend's y, dx and dw against the reference's; simd 0 runs
 * Winograd's transforms as the portable loops. */
static double compare_one_with(conv_cfg g, int simd)
{
	conv_set s;
	conv_set_new(&s, g);
	float *ry, *rdx, *rdw, *fy, *fdx, *fdw;
	run(ref, &s, &ry, &rdx, &rdw);
	mp_cpu_allow_simd_tiles(simd);
	run(fast, &s, &fy, &fdx, &fdw);
	mp_cpu_allow_simd_tiles(1);
	const double ey = rel_err(fy, ry, mp_tensor_count(&s.y));
	const double edx = rel_err(fdx, rdx, mp_tensor_count(&s.dx));
	const double edw = rel_err(fdw, rdw, mp_tensor_count(&s.dw));
	print_message("# conv %2dx%-3dx%3dx%-3d k%-3d %dx%d s%d p%d%s: y %.1e dx %.1e dw %.1e\n",
		      g.n, g.c, g.h, g.w, g.k, g.kh, g.kw, g.stride, g.pad,
		      simd ? "" : " (portable)", ey, edx, edw);
	assert_true(ey <= CONV_RTOL);
	assert_true(edx <= CONV_RTOL);
	assert_true(edw <= CONV_RTOL);
	free(ry), free(rdx), free(rdw), free(fy), free(fdx), free(fdw);
	conv_set_free(&s);
	return fmax(ey, fmax(edx, edw));
}

static double compare_one(conv_cfg g)
{
	double e = compare_one_with(g, 1);
	if (g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == 1)
		e = fmax(e, compare_one_with(g, 0));
	return e;
}

/* Shapes that reach every path: stride 1 and 2 with pad 1 (the blocks),
 * 1x1 stride 2 (projections), 1x1 stride 1 (no columns: one image per
 * product, and several), 7x7 stride 2 pad 3, odd and non-square sizes,
 * kernels larger than the input, groups of images with a short last one,
 * large planes done in bands of rows, channel counts that are not
 * multiples of 8; the 3x3 stride-1 pad-1 ones by Winograd. */
static const conv_cfg shapes[] = {
	/* n  c   h   w   k  kh kw s  p */
	{1, 3, 8, 8, 4, 3, 3, 1, 1},
	{5, 5, 9, 7, 6, 3, 3, 1, 1},
	{5, 7, 11, 9, 10, 3, 3, 2, 1},
	{1, 13, 29, 27, 11, 3, 3, 2, 1},
	{5, 6, 9, 9, 12, 1, 1, 2, 0},
	{5, 12, 7, 7, 9, 1, 1, 1, 0},
	{5, 3, 50, 50, 5, 1, 1, 1, 0},
	{2, 3, 23, 21, 8, 7, 7, 2, 3},
	{3, 2, 3, 4, 3, 5, 5, 1, 2},
	{2, 3, 2, 2, 4, 5, 5, 2, 2},
	{3, 5, 10, 9, 7, 3, 5, 2, 2},
	{5, 4, 13, 13, 5, 3, 3, 3, 0},
	{9, 5, 6, 6, 7, 3, 3, 1, 1},
	{17, 9, 7, 7, 11, 3, 3, 1, 1},
	{12, 8, 30, 30, 8, 3, 3, 1, 1},
	{6, 16, 32, 32, 16, 1, 1, 1, 0},
	{6, 4, 64, 64, 8, 1, 1, 1, 0},
	{32, 8, 16, 16, 8, 3, 3, 1, 1},
	{8, 32, 14, 14, 64, 3, 3, 2, 1},
	{4, 64, 7, 7, 64, 3, 3, 1, 1},
	/* the reference network's widest (Winograd's error grows with C) */
	{2, 256, 7, 7, 256, 3, 3, 1, 1},
	/* Winograd on a wide plane (two chunks of 16 tiles, the second
	 * partial) whose last tile row is cut by the edge */
	{2, 4, 9, 70, 5, 3, 3, 1, 1},
	/* 3x3 stride 1 on a plane too small for Winograd to pay */
	{3, 4, 2, 3, 5, 3, 3, 1, 1},
	/* large planes: bands of output rows, the last one shorter */
	{2, 32, 61, 61, 8, 3, 3, 1, 1},
	{3, 16, 130, 66, 6, 3, 3, 2, 1},
	{2, 3, 112, 112, 8, 7, 7, 2, 3},
};

static void matches_reference(void **state)
{
	(void)state;
	double worst = 0;
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
		worst = fmax(worst, compare_one(shapes[i]));
	for (int t = 0; t < 25; t++) {
		conv_cfg g;
		g.n = 1 + (int)mp_rng_below(&rng, 6);
		g.c = 1 + (int)mp_rng_below(&rng, 12);
		g.k = 1 + (int)mp_rng_below(&rng, 12);
		g.kh = 1 + (int)mp_rng_below(&rng, 5);
		g.kw = 1 + (int)mp_rng_below(&rng, 5);
		g.stride = 1 + (int)mp_rng_below(&rng, 3);
		g.pad = (int)mp_rng_below(&rng, 4);
		g.h = 1 + (int)mp_rng_below(&rng, 20);
		g.w = 1 + (int)mp_rng_below(&rng, 20);
		if (g.h + 2 * g.pad < g.kh)
			g.h = g.kh;
		if (g.w + 2 * g.pad < g.kw)
			g.w = g.kw;
		worst = fmax(worst, compare_one(g));
	}
	print_message("# largest relative error %.1e (tolerance %.0e)\n", worst, CONV_RTOL);
}

/* ---- the same bits for any thread count ---------------------------------- */

static void same_bits_any_thread_count(void **state)
{
	(void)state;
	static const int threads[] = {2, 3, 0};
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		conv_set s;
		conv_set_new(&s, shapes[i]);
		const size_t ny = mp_tensor_count(&s.y) * sizeof(float);
		const size_t nx = mp_tensor_count(&s.dx) * sizeof(float);
		const size_t nw = mp_tensor_count(&s.dw) * sizeof(float);
		float *y1, *dx1, *dw1;
		fast->threads = 1;
		run(fast, &s, &y1, &dx1, &dw1);
		for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
			float *y, *dx, *dw;
			fast->threads = threads[t];
			run(fast, &s, &y, &dx, &dw);
			assert_memory_equal(y, y1, ny);
			assert_memory_equal(dx, dx1, nx);
			assert_memory_equal(dw, dw1, nw);
			free(y), free(dx), free(dw);
			/* and run to run */
			run(fast, &s, &y, &dx, &dw);
			assert_memory_equal(y, y1, ny);
			assert_memory_equal(dx, dx1, nx);
			assert_memory_equal(dw, dw1, nw);
			free(y), free(dx), free(dw);
		}
		fast->threads = 0;
		free(y1), free(dx1), free(dw1);
		conv_set_free(&s);
	}
}

/* ---- one gradient at a time ------------------------------------------------ */

static void null_gradients(void **state)
{
	(void)state;
	static const conv_cfg some[] = {
		{5, 7, 11, 9, 10, 3, 3, 2, 1},
		{6, 16, 32, 32, 16, 1, 1, 1, 0},
		{17, 9, 7, 7, 11, 3, 3, 1, 1},
	};
	for (size_t i = 0; i < sizeof some / sizeof some[0]; i++) {
		const conv_cfg g = some[i];
		conv_set s;
		conv_set_new(&s, g);
		float *y, *dx, *dw;
		run(fast, &s, &y, &dx, &dw);
		const size_t nx = mp_tensor_count(&s.dx), nw = mp_tensor_count(&s.dw);
		/* poison the outputs: backward overwrites, never accumulates */
		assert_int_equal(fast->ops->fill(fast, &s.dx, NAN), 0);
		assert_int_equal(fast->ops->fill(fast, &s.dw, NAN), 0);
		assert_int_equal(fast->ops->conv2d_backward(fast, &s.x, &s.w, &s.dy, &s.dx, NULL,
							    g.stride, g.pad), 0);
		float *dx2 = tdup(&s.dx), *dw2 = tdup(&s.dw);
		assert_memory_equal(dx2, dx, nx * sizeof(float));
		for (size_t j = 0; j < nw; j++)
			assert_true(isnan(dw2[j])); /* untouched */
		free(dx2), free(dw2);
		assert_int_equal(fast->ops->fill(fast, &s.dx, NAN), 0);
		assert_int_equal(fast->ops->conv2d_backward(fast, &s.x, &s.w, &s.dy, NULL, &s.dw,
							    g.stride, g.pad), 0);
		dx2 = tdup(&s.dx);
		dw2 = tdup(&s.dw);
		assert_memory_equal(dw2, dw, nw * sizeof(float));
		for (size_t j = 0; j < nx; j++)
			assert_true(isnan(dx2[j]));
		free(dx2), free(dw2);
		assert_int_equal(fast->ops->conv2d_backward(fast, &s.x, &s.w, &s.dy, NULL, NULL,
							    g.stride, g.pad), 0);
		free(y), free(dx), free(dw);
		conv_set_free(&s);
	}
}

/* ---- shape errors ---------------------------------------------------------------- */

/* rc is -1 and the message is exactly msg (or starts with op when msg is NULL). */
static void expect_error(int rc, const char *op, const char *msg)
{
	assert_int_equal(rc, -1);
	const char *e = mp_backend_error(fast);
	if (msg)
		assert_string_equal(e, msg);
	assert_true(strncmp(e, op, strlen(op)) == 0 && e[strlen(op)] == ':');
}

static void shape_errors(void **state)
{
	(void)state;
	const mp_backend_ops *o = fast->ops;
	mp_tensor x, w, y, bad, dx, dw, none = {0};
	talloc(&x, 4, 3, 7, 7);
	talloc(&w, 16, 3, 3, 3);
	talloc(&y, 4, 16, 8, 8);
	talloc(&bad, 16, 4, 3, 3);
	expect_error(o->conv2d_forward(fast, &x, &w, &y, 1, 0), "conv2d_forward",
		     "conv2d_forward: y is 4x16x8x8, expected 4x16x5x5");
	expect_error(o->conv2d_forward(fast, &x, &w, &y, 0, 1), "conv2d_forward",
		     "conv2d_forward: stride 0, expected 1 or more");
	expect_error(o->conv2d_forward(fast, &x, &w, &y, 1, -1), "conv2d_forward",
		     "conv2d_forward: pad -1, expected 0 or more");
	expect_error(o->conv2d_forward(fast, &x, &bad, &y, 1, 1), "conv2d_forward",
		     "conv2d_forward: w is 16x4x3x3 for 4 input channels, x has 3");
	expect_error(o->conv2d_forward(fast, &x, &w, NULL, 1, 1), "conv2d_forward",
		     "conv2d_forward: y is missing");
	expect_error(o->conv2d_forward(fast, &none, &w, &y, 1, 1), "conv2d_forward", NULL);
	trelease(&y);
	talloc(&y, 4, 16, 7, 7);
	assert_int_equal(o->conv2d_forward(fast, &x, &w, &y, 1, 1), 0);
	mp_tensor big;
	talloc(&big, 2, 3, 9, 9);
	expect_error(o->conv2d_forward(fast, &x, &big, &y, 1, 0), "conv2d_forward",
		     "conv2d_forward: kernel 9x9 is larger than the padded input 7x7");
	talloc(&dx, 4, 3, 7, 6);
	talloc(&dw, 16, 3, 3, 3);
	expect_error(o->conv2d_backward(fast, &x, &w, &y, &dx, &dw, 1, 1), "conv2d_backward",
		     "conv2d_backward: dx is 4x3x7x6, expected 4x3x7x7");
	expect_error(o->conv2d_backward(fast, &x, &w, &y, NULL, &bad, 1, 1), "conv2d_backward",
		     "conv2d_backward: dw is 16x4x3x3, expected 16x3x3x3");
	expect_error(o->conv2d_backward(fast, &x, &w, &y, NULL, &dw, 2, 1), "conv2d_backward",
		     "conv2d_backward: dy is 4x16x7x7, expected 4x16x4x4");
	assert_int_equal(o->conv2d_backward(fast, &x, &w, &y, NULL, &dw, 1, 1), 0);
	trelease(&x), trelease(&w), trelease(&y), trelease(&bad), trelease(&big);
	trelease(&dx), trelease(&dw);
}

/* ---- MP_CPU_WINOGRAD=0 ------------------------------------------------------------ */

/* With Winograd off, a 3x3 stride-1 convolution is a matrix product again
 * (within 2e-6 of the reference, and other bits than with it on); the
 * shapes Winograd does not take are the same bits either way. */
static void winograd_switch(void **state)
{
	(void)state;
	setenv("MP_CPU_WINOGRAD", "0", 1);
	mp_backend *off = mp_backend_cpu_fast_new(0);
	unsetenv("MP_CPU_WINOGRAD");
	assert_non_null(off);
	static const conv_cfg cases[] = {
		{4, 64, 7, 7, 64, 3, 3, 1, 1},	 /* Winograd when on */
		{12, 8, 30, 30, 8, 3, 3, 1, 1}, /* likewise, bands of tiles */
		{5, 7, 11, 9, 10, 3, 3, 2, 1},	 /* never */
		{3, 4, 2, 3, 5, 3, 3, 1, 1},	 /* never: too small a plane */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		conv_set s;
		conv_set_new(&s, cases[i]);
		float *ry, *rdx, *rdw, *oy, *odx, *odw, *fy, *fdx, *fdw;
		run(ref, &s, &ry, &rdx, &rdw);
		run(off, &s, &oy, &odx, &odw);
		run(fast, &s, &fy, &fdx, &fdw);
		const size_t ny = mp_tensor_count(&s.y), nx = mp_tensor_count(&s.dx);
		const size_t nw = mp_tensor_count(&s.dw);
		assert_true(rel_err(oy, ry, ny) <= 2e-6);
		assert_true(rel_err(odx, rdx, nx) <= 2e-6);
		assert_true(rel_err(odw, rdw, nw) <= 2e-6);
		const int wino = i < 2;
		assert_int_equal(memcmp(oy, fy, ny * sizeof(float)) != 0, wino);
		assert_int_equal(memcmp(odx, fdx, nx * sizeof(float)) != 0, wino);
		assert_int_equal(memcmp(odw, fdw, nw * sizeof(float)) != 0, wino);
		free(ry), free(rdx), free(rdw), free(oy), free(odx), free(odw);
		free(fy), free(fdx), free(fdw);
		conv_set_free(&s);
	}
	mp_backend_free(off);
}

static void constructor(void **state)
{
	(void)state;
	assert_string_equal(fast->ops->name, "cpu");
	assert_null(mp_backend_cpu_fast_new(-1));
	mp_backend *b = mp_backend_cpu_fast_new(2);
	assert_non_null(b);
	assert_int_equal(b->threads, 2);
	mp_backend_free(b);
}

/* ---- a whole network ------------------------------------------------------------ */

static float *download(mp_resnet *net, const mp_tensor *t)
{
	mp_error e;
	float *h = malloc(mp_tensor_count(t) * sizeof *h);
	assert_non_null(h);
	if (mp_resnet_download(net, t, h, &e) < 0)
		fail_msg("%s", e.msg);
	return h;
}

typedef struct {
	mp_resnet *net;
	float *logits;
	double loss;
} net_run;

static void net_step(mp_backend *be, const mp_resnet_config *c, const float *x, int n, int size,
		     const int32_t *labels, net_run *r)
{
	mp_error e;
	if (!(r->net = mp_resnet_new(c, be, &e)) || mp_resnet_init(r->net, 42, &e) ||
	    mp_resnet_forward(r->net, x, n, size, size, 1, &e) ||
	    mp_resnet_loss(r->net, labels, 0.1f, &r->loss, NULL, &e) ||
	    mp_resnet_backward(r->net, &e))
		fail_msg("%s: %s", be->ops->name, e.msg);
	r->logits = malloc((size_t)n * c->classes * sizeof(float));
	assert_non_null(r->logits);
	if (mp_resnet_logits(r->net, r->logits, &e))
		fail_msg("%s", e.msg);
}

static void whole_net(void **state)
{
	(void)state;
	for (int v = 0; v < 2; v++) {
		mp_resnet_config c;
		mp_resnet_config_default(&c);
		c.depth = 1;
		c.widths[0] = 8, c.widths[1] = 16, c.widths[2] = 24, c.widths[3] = 32;
		c.classes = 10;
		c.shortcut = v ? 'B' : 'A';
		enum { N = 6, SIZE = 64 }; /* big enough that the stage-1 ops use threads */
		float *x = random_array((size_t)N * 3 * SIZE * SIZE, -100, 100);
		int32_t labels[N];
		for (int i = 0; i < N; i++)
			labels[i] = (int32_t)mp_rng_below(&rng, (uint64_t)c.classes);
		net_run a, b;
		net_step(ref, &c, x, N, SIZE, labels, &a);
		net_step(fast, &c, x, N, SIZE, labels, &b);
		const double el = rel_err(b.logits, a.logits, (size_t)N * c.classes);
		const double eloss = fabs(b.loss - a.loss) / fabs(a.loss);
		print_message("# net shortcut %c: logits %.1e loss %.1e (%.6f)\n", c.shortcut, el,
			      eloss, a.loss);
		assert_true(el <= NET_RTOL);
		assert_true(eloss <= NET_RTOL);
		double worst = 0;
		const char *worst_name = "";
		for (int i = 0; i < mp_resnet_param_count(a.net); i++) {
			mp_param *pa = mp_resnet_param(a.net, i), *pb = mp_resnet_param(b.net, i);
			if (pa->kind != MP_PARAM_WEIGHT)
				continue;
			float *ga = download(a.net, &pa->grad), *gb = download(b.net, &pb->grad);
			const double eg = rel_err(gb, ga, mp_tensor_count(&pa->grad));
			if (!(eg <= NET_RTOL))
				print_error("%s: gradient relative error %.2e\n", pa->name, eg);
			assert_true(eg <= NET_RTOL);
			if (eg > worst)
				worst = eg, worst_name = pa->name;
			free(ga), free(gb);
		}
		print_message("# net shortcut %c: largest gradient error %.1e (%s)\n", c.shortcut,
			      worst, worst_name);
		/* evaluation (running statistics, shared buffers) agrees too, and
		 * the training buffers come back for another step */
		float *ea = malloc((size_t)N * c.classes * sizeof(float));
		float *eb = malloc((size_t)N * c.classes * sizeof(float));
		mp_error e;
		assert_non_null(ea), assert_non_null(eb);
		if (mp_resnet_forward(a.net, x, N, SIZE, SIZE, 0, &e) ||
		    mp_resnet_logits(a.net, ea, &e) ||
		    mp_resnet_forward(b.net, x, N, SIZE, SIZE, 0, &e) ||
		    mp_resnet_logits(b.net, eb, &e))
			fail_msg("%s", e.msg);
		const double ee = rel_err(eb, ea, (size_t)N * c.classes);
		print_message("# net shortcut %c: evaluation logits %.1e\n", c.shortcut, ee);
		assert_true(ee <= NET_RTOL);
		double again;
		if (mp_resnet_forward(a.net, x, N, SIZE, SIZE, 1, &e) ||
		    mp_resnet_loss(a.net, labels, 0.1f, &again, NULL, &e) ||
		    mp_resnet_backward(a.net, &e))
			fail_msg("%s", e.msg);
		free(ea), free(eb);
		/* the whole fast table gives the same bits for any thread count */
		static const int threads[] = {1, 2, 3};
		for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
			net_run r;
			fast->threads = threads[t];
			net_step(fast, &c, x, N, SIZE, labels, &r);
			fast->threads = 0;
			assert_memory_equal(r.logits, b.logits, (size_t)N * c.classes * sizeof(float));
			assert_true(r.loss == b.loss);
			for (int i = 0; i < mp_resnet_param_count(b.net); i++) {
				mp_param *pb = mp_resnet_param(b.net, i), *pr = mp_resnet_param(r.net, i);
				mp_tensor *tb = pb->kind == MP_PARAM_WEIGHT ? &pb->grad : &pb->value;
				mp_tensor *tr = pr->kind == MP_PARAM_WEIGHT ? &pr->grad : &pr->value;
				float *gb = download(b.net, tb), *gr = download(r.net, tr);
				assert_memory_equal(gr, gb, mp_tensor_count(tb) * sizeof(float));
				free(gb), free(gr);
			}
			mp_resnet_free(r.net);
			free(r.logits);
		}
		mp_resnet_free(a.net), mp_resnet_free(b.net);
		free(a.logits), free(b.logits), free(x);
	}
}

static int setup(void **state)
{
	(void)state;
	mp_rng_seed(&rng, 0xc0de);
	ref = mp_backend_cpu_new(0);
	fast = mp_backend_cpu_fast_new(0);
	return ref && fast ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	mp_backend_free(ref);
	mp_backend_free(fast);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(matches_reference),
		cmocka_unit_test(same_bits_any_thread_count),
		cmocka_unit_test(null_gradients),
		cmocka_unit_test(shape_errors),
		cmocka_unit_test(winograd_switch),
		cmocka_unit_test(constructor),
		cmocka_unit_test(whole_net),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
