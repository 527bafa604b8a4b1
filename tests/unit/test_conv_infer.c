/* conv_bn_prepare + conv_bn_forward_infer, the inference operation that
 * evaluation runs every convolution through: y = relu?(bn(conv(x, w)) + res?).
 *
 * Both CPU backends against the separate reference operations
 * (conv2d_forward, bn_forward_infer, add, relu_forward of the reference
 * backend) over shapes that reach every path of the fast one: Winograd
 * F(4x4, 3x3) with planes whose tiles fit exactly, leave a partial last
 * tile, span one or several chunks of 16 tiles, planes too small for
 * Winograd, blocks that span images, and the im2col path (stride 2, 1x1,
 * the stem); with and without residual and ReLU; the AVX-512 transforms
 * and the portable ones; the same bits for 1, 2 and 3 threads; the
 * errors; a whole network's evaluation.
 *
 * Tolerance. Winograd F(4x4, 3x3) in float loses a few more bits than a
 * direct sum: the transforms multiply by up to 8 (A) and 5 (B) before
 * the sums cancel again. The error against the largest |ref| of the
 * tensor is at most about 4e-6 over the shapes here (the "#" lines print
 * it); RTOL 2e-5 leaves a margin of five and still catches a wrong tap, a
 * shifted tile, a missed channel or residual (errors of order 1e-1). */
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

#define RTOL 2e-5 /* of the largest |ref| per tensor */

static mp_backend *ref, *fast;
static mp_rng rng;

static float *random_array(size_t n, double lo, double hi)
{
	float *a = malloc(n * sizeof *a);
	assert_non_null(a);
	for (size_t i = 0; i < n; i++)
		a[i] = (float)(lo + (hi - lo) * mp_rng_uniform(&rng));
	return a;
}

/* t allocated and filled with uniform values in lo..hi */
static void trandom(mp_tensor *t, int n, int c, int h, int w, double lo, double hi)
{
	assert_int_equal(ref->ops->alloc(ref, t, n, c, h, w), 0);
	float *a = random_array(mp_tensor_count(t), lo, hi);
	assert_int_equal(ref->ops->upload(ref, t, a), 0);
	free(a);
}

static float *tdup(const mp_tensor *t)
{
	float *h = malloc(mp_tensor_count(t) * sizeof *h);
	assert_non_null(h);
	memcpy(h, t->data, mp_tensor_count(t) * sizeof *h);
	return h;
}

static double rel_err(const float *a, const float *b, size_t n)
{
	double e = 0, m = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		if (!(d <= e))
			e = d;
		if (fabs(b[i]) > m)
			m = fabs(b[i]);
	}
	return m > 0 ? e / m : e;
}

typedef struct {
	int n, c, h, w, k, kh, kw, stride, pad;
} shape;

/* One convolution with its BN, a residual and the outputs. */
typedef struct {
	shape s;
	mp_tensor x, w, res, y, tmp, gamma, beta, mean, var;
	mp_bn bn;
} layer;

static void layer_new(layer *l, shape s)
{
	memset(l, 0, sizeof *l);
	l->s = s;
	const int oh = (s.h + 2 * s.pad - s.kh) / s.stride + 1;
	const int ow = (s.w + 2 * s.pad - s.kw) / s.stride + 1;
	trandom(&l->x, s.n, s.c, s.h, s.w, -1, 1);
	trandom(&l->w, s.k, s.c, s.kh, s.kw, -0.5, 0.5);
	trandom(&l->res, s.n, s.k, oh, ow, -2, 2);
	trandom(&l->y, s.n, s.k, oh, ow, 0, 0);
	trandom(&l->tmp, s.n, s.k, oh, ow, 0, 0);
	trandom(&l->gamma, s.k, 1, 1, 1, 0.5, 1.5);
	trandom(&l->beta, s.k, 1, 1, 1, -0.5, 0.5);
	trandom(&l->mean, s.k, 1, 1, 1, -0.3, 0.3);
	trandom(&l->var, s.k, 1, 1, 1, 0.5, 2);
	l->bn = (mp_bn){.gamma = &l->gamma, .beta = &l->beta, .running_mean = &l->mean,
			.running_var = &l->var, .eps = 1e-5f, .momentum = 0.9f};
}

static void layer_free(layer *l)
{
	mp_tensor *t[] = {&l->x, &l->w, &l->res, &l->y, &l->tmp,
			  &l->gamma, &l->beta, &l->mean, &l->var};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		ref->ops->release(ref, t[i]);
}

/* The separate reference operations: a new host array. */
static float *composed(layer *l, int with_res, int relu)
{
	const mp_backend_ops *o = ref->ops;
	assert_int_equal(o->conv2d_forward(ref, &l->x, &l->w, &l->tmp, l->s.stride, l->s.pad), 0);
	assert_int_equal(o->bn_forward_infer(ref, &l->tmp, &l->bn, &l->y), 0);
	if (with_res)
		assert_int_equal(o->add(ref, &l->y, &l->res, &l->y), 0);
	if (relu)
		assert_int_equal(o->relu_forward(ref, &l->y, &l->y), 0);
	return tdup(&l->y);
}

/* The fused operation of be: a new host array. */
static float *fused(mp_backend *be, layer *l, int with_res, int relu)
{
	mp_tensor prep = {0};
	if (be->ops->conv_bn_prepare(be, &l->w, &l->bn, l->s.stride, l->s.pad, &prep) ||
	    be->ops->conv_bn_forward_infer(be, &l->x, &l->w, &prep, with_res ? &l->res : NULL,
					   relu, &l->y, l->s.stride, l->s.pad))
		fail_msg("%s: %s", be->ops->name, mp_backend_error(be));
	be->ops->release(be, &prep);
	return tdup(&l->y);
}

/* Every path of the fast operation: Winograd on planes of 4x4 (one tile),
 * 7x7 and 14x14 (partial last tiles: the reference network's last
 * stages), 8x8, 28x28, 56x56 (exact), 64x64, 65x9 and 9x70 (more than 16
 * tiles in a row, non-square), 6x6 (two tiles), a block spanning images
 * (N 5); planes too small for it (3x3, 5x5, 2x9, 1x1); stride 2, 1x1
 * stride 1 and 2, the 3-channel stem; odd channel counts. */
static const shape shapes[] = {
	{2, 8, 4, 4, 8, 3, 3, 1, 1},	   {3, 16, 7, 7, 16, 3, 3, 1, 1},
	{2, 12, 14, 14, 20, 3, 3, 1, 1},   {1, 8, 8, 8, 8, 3, 3, 1, 1},
	{2, 16, 28, 28, 16, 3, 3, 1, 1},   {1, 8, 56, 56, 8, 3, 3, 1, 1},
	{1, 5, 64, 64, 7, 3, 3, 1, 1},	   {2, 6, 65, 9, 5, 3, 3, 1, 1},
	{1, 6, 9, 70, 6, 3, 3, 1, 1},	   {2, 7, 6, 6, 9, 3, 3, 1, 1},
	{5, 32, 13, 11, 24, 3, 3, 1, 1},   {2, 8, 3, 3, 8, 3, 3, 1, 1},
	{2, 8, 5, 5, 8, 3, 3, 1, 1},	   {2, 8, 2, 9, 8, 3, 3, 1, 1},
	{2, 8, 1, 1, 8, 3, 3, 1, 1},	   {2, 8, 14, 14, 16, 3, 3, 2, 1},
	{2, 8, 14, 14, 16, 1, 1, 2, 0},	   {2, 8, 9, 9, 12, 1, 1, 1, 0},
	{2, 3, 30, 30, 8, 3, 3, 2, 1},	   {1, 4, 16, 16, 4, 5, 5, 1, 2},
};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

static void matches_reference(void **state)
{
	(void)state;
	double worst = 0;
	for (size_t i = 0; i < NSHAPES; i++) {
		const shape s = shapes[i];
		layer l;
		layer_new(&l, s);
		for (int v = 0; v < 4; v++) {
			const int with_res = v & 1, relu = v >> 1;
			float *want = composed(&l, with_res, relu);
			float *r = fused(ref, &l, with_res, relu);
			float *f = fused(fast, &l, with_res, relu);
			mp_cpu_allow_simd_tiles(0);
			float *p = fused(fast, &l, with_res, relu);
			mp_cpu_allow_simd_tiles(1);
			const size_t n = mp_tensor_count(&l.y);
			const double er = rel_err(r, want, n), ef = rel_err(f, want, n),
				     ep = rel_err(p, want, n);
			if (v == 3)
				print_message("# %dx%-2dx%2dx%-2d k%-2d %dx%d s%d p%d: reference %.1e, "
					      "fast %.1e, portable %.1e\n", s.n, s.c, s.h, s.w, s.k,
					      s.kh, s.kw, s.stride, s.pad, er, ef, ep);
			assert_true(er <= RTOL);
			assert_true(ef <= RTOL);
			assert_true(ep <= RTOL);
			/* the ReLU leaves no negative value, and without it some remain */
			int negative = 0;
			for (size_t j = 0; j < n; j++)
				negative |= f[j] < 0;
			assert_int_equal(negative, !relu);
			worst = fmax(worst, fmax(ef, ep));
			free(want), free(r), free(f), free(p);
		}
		layer_free(&l);
	}
	print_message("# largest relative error of the fast operation %.1e (tolerance %.0e)\n",
		      worst, RTOL);
}

static void same_bits_any_thread_count(void **state)
{
	(void)state;
	static const shape big[] = {
		{6, 24, 28, 28, 24, 3, 3, 1, 1}, /* several Winograd blocks */
		{4, 64, 7, 7, 64, 3, 3, 1, 1},
		{4, 16, 20, 20, 32, 3, 3, 2, 1}, /* im2col */
	};
	for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
		layer l;
		layer_new(&l, big[i]);
		fast->threads = 1;
		float *one = fused(fast, &l, 1, 1);
		for (int t = 2; t <= 3; t++) {
			fast->threads = t;
			float *other = fused(fast, &l, 1, 1);
			assert_memory_equal(other, one, mp_tensor_count(&l.y) * sizeof *one);
			free(other);
		}
		fast->threads = 0;
		free(one);
		layer_free(&l);
	}
}

static void expect_error(mp_backend *be, int rc, const char *msg)
{
	assert_int_equal(rc, -1);
	if (!strstr(mp_backend_error(be), msg))
		fail_msg("error \"%s\" lacks \"%s\"", mp_backend_error(be), msg);
}

static void errors(void **state)
{
	(void)state;
	mp_backend *both[] = {ref, fast};
	for (int i = 0; i < 2; i++) {
		mp_backend *be = both[i];
		const mp_backend_ops *o = be->ops;
		layer l;
		layer_new(&l, (shape){2, 4, 8, 8, 6, 3, 3, 1, 1});
		mp_tensor prep = {0}, prep2 = {0}, bad = {0};
		assert_int_equal(o->conv_bn_prepare(be, &l.w, &l.bn, 1, 1, &prep), 0);
		/* a form made for another stride (and so, in the fast backend, another size) */
		assert_int_equal(o->conv_bn_prepare(be, &l.w, &l.bn, 2, 1, &prep2), 0);
		if (be == fast)
			expect_error(be, o->conv_bn_forward_infer(be, &l.x, &l.w, &prep2, NULL, 1, &l.y,
								  1, 1),
				     "conv_bn_forward_infer: prep has 12 values, expected 876");
		expect_error(be, o->conv_bn_forward_infer(be, &l.x, &l.w, NULL, NULL, 1, &l.y, 1, 1),
			     "conv_bn_forward_infer: prep is missing");
		expect_error(be, o->conv_bn_forward_infer(be, &l.x, &l.w, &prep, NULL, 1, &l.x, 1, 1),
			     "conv_bn_forward_infer: y is 2x4x8x8, expected 2x6x8x8");
		mp_tensor alias = l.y; /* y's own memory as the residual */
		expect_error(be, o->conv_bn_forward_infer(be, &l.x, &l.w, &prep, &alias, 1, &l.y, 1, 1),
			     "conv_bn_forward_infer: y shares memory with res");
		trandom(&bad, 2, 6, 4, 4, 0, 0);
		expect_error(be, o->conv_bn_forward_infer(be, &l.x, &l.w, &prep, &bad, 1, &l.y, 1, 1),
			     "conv_bn_forward_infer: res is 2x6x4x4, expected 2x6x8x8");
		expect_error(be, o->conv_bn_forward_infer(be, &l.x, &l.w, &prep, NULL, 1, &l.y, 1, 0),
			     "conv_bn_forward_infer: y is 2x6x8x8, expected 2x6x6x6");
		expect_error(be, o->conv_bn_prepare(be, &l.w, &l.bn, 0, 1, &prep2),
			     "conv_bn_prepare: stride 0, pad 1");
		expect_error(be, o->conv_bn_prepare(be, &l.w, NULL, 1, 1, &prep2),
			     "conv_bn_prepare: no BN state");
		l.bn.eps = -1;
		expect_error(be, o->conv_bn_prepare(be, &l.w, &l.bn, 1, 1, &prep2),
			     "conv_bn_prepare: eps -1");
		l.bn.eps = 1e-5f;
		expect_error(be, o->conv_bn_prepare(be, &l.w, &l.bn, 1, 1, NULL),
			     "conv_bn_prepare: prep is missing");
		ref->ops->release(ref, &bad);
		o->release(be, &prep);
		o->release(be, &prep2);
		layer_free(&l);
	}
}

/* A whole network's evaluation, fast against reference at sizes whose
 * stages have planes of every kind, and the same bits for any thread
 * count; a change of the weights (an SGD step) reaches the evaluation. */
static void whole_net(void **state)
{
	(void)state;
	mp_resnet_config c;
	mp_resnet_config_default(&c);
	c.depth = 1;
	c.widths[0] = 8, c.widths[1] = 16, c.widths[2] = 24, c.widths[3] = 32;
	c.classes = 10;
	c.shortcut = 'B';
	enum { N = 3 };
	static const int sizes[] = {112, 100, 40};
	mp_error e;
	mp_resnet *a = mp_resnet_new(&c, ref, &e), *b = mp_resnet_new(&c, fast, &e);
	assert_non_null(a), assert_non_null(b);
	assert_int_equal(mp_resnet_init(a, 5, &e), 0);
	assert_int_equal(mp_resnet_init(b, 5, &e), 0);
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		const int size = sizes[i];
		float *x = random_array((size_t)N * 3 * size * size, -100, 100);
		float la[N * 10], lb[N * 10], lt[N * 10];
		if (mp_resnet_forward(a, x, N, size, size, 0, &e) || mp_resnet_logits(a, la, &e) ||
		    mp_resnet_forward(b, x, N, size, size, 0, &e) || mp_resnet_logits(b, lb, &e))
			fail_msg("%s", e.msg);
		const double err = rel_err(lb, la, N * 10);
		print_message("# network at %d px: evaluation logits %.1e\n", size, err);
		assert_true(err <= RTOL * 5);
		for (int t = 1; t <= 3; t++) {
			fast->threads = t;
			if (mp_resnet_forward(b, x, N, size, size, 0, &e) || mp_resnet_logits(b, lt, &e))
				fail_msg("%s", e.msg);
			assert_memory_equal(lt, lb, sizeof lb);
		}
		fast->threads = 0;
		free(x);
	}
	/* a training step changes the weights and the running statistics:
	 * the next evaluation must see them (the prepared forms are remade) */
	const int size = 40;
	float *x = random_array((size_t)N * 3 * size * size, -100, 100);
	int32_t labels[N] = {1, 2, 3};
	double loss;
	float before[N * 10], after[N * 10], want[N * 10];
	mp_resnet *nets[] = {a, b};
	float *outs[] = {want, after};
	if (mp_resnet_forward(b, x, N, size, size, 0, &e) || mp_resnet_logits(b, before, &e))
		fail_msg("%s", e.msg);
	for (int j = 0; j < 2; j++)
		if (mp_resnet_forward(nets[j], x, N, size, size, 1, &e) ||
		    mp_resnet_loss(nets[j], labels, 0, &loss, NULL, &e) ||
		    mp_resnet_backward(nets[j], &e) || mp_resnet_sgd(nets[j], 0.5f, 0.9f, 0, &e) ||
		    mp_resnet_forward(nets[j], x, N, size, size, 0, &e) ||
		    mp_resnet_logits(nets[j], outs[j], &e))
			fail_msg("%s", e.msg);
	assert_true(rel_err(after, before, N * 10) > 1e-3);
	assert_true(rel_err(after, want, N * 10) <= 1e-3);
	/* and an upload of a parameter too */
	mp_param *g = mp_resnet_find(b, "stages.0.blocks.0.bn1.weight");
	assert_non_null(g);
	float zeros[8] = {0};
	assert_int_equal(mp_resnet_upload(b, &g->value, zeros, &e), 0);
	if (mp_resnet_forward(b, x, N, size, size, 0, &e) || mp_resnet_logits(b, before, &e))
		fail_msg("%s", e.msg);
	assert_true(rel_err(before, after, N * 10) > 1e-3);
	free(x);
	mp_resnet_free(a), mp_resnet_free(b);
}

static int setup(void **state)
{
	(void)state;
	mp_rng_seed(&rng, 0x5eed);
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
		cmocka_unit_test(errors),
		cmocka_unit_test(whole_net),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
