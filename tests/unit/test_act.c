/* Activation tensors (alloc_act, kernels/backend.h) on the CPU: a GPU
 * backend may store them in bf16 NHWC, so the caller must never mix them
 * with plain tensors in one call nor hand them to the head, a weight's
 * place or the SGD step. tests/act_checker.h gives the CPU backends
 * alloc_act and fails any call that breaks that rule.
 *
 * Checked: mp_resnet keeps the rule everywhere it goes (training steps op
 * by op and recorded as graphs, with the fused BN + ReLU and without,
 * evaluation passes, multiscale inference with and without the fused
 * inference convolutions, shortcut A and B, new batch sizes), with the
 * same bits as without the checker, and it really allocates its
 * activations with alloc_act; the checker refuses mixed calls and
 * activations where plain tensors belong; in its rounding mode (the
 * reference for a bf16-storing backend) every stored activation is a
 * bf16 value and a training step stays within bf16's error of the plain
 * one. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "mp_resnet.h"
#include "../graph_recorder.h"
#include "../act_checker.h"

static mp_rng rng;

enum { N = 3, S = 20, CLASSES = 10 };

static void small_config(mp_resnet_config *c, char shortcut)
{
	mp_resnet_config_default(c);
	c->depth = 2;
	c->widths[0] = 4;
	c->widths[1] = 8;
	c->widths[2] = 8;
	c->widths[3] = 12;
	c->shortcut = shortcut;
	c->classes = CLASSES;
	c->input_size = S;
}

static mp_resnet *make_net(mp_backend *be, char shortcut)
{
	mp_resnet_config c;
	small_config(&c, shortcut);
	mp_error e;
	mp_resnet *net = mp_resnet_new(&c, be, &e);
	if (!net)
		fail_msg("mp_resnet_new: %s", e.msg);
	assert_int_equal(mp_resnet_init(net, 5, &e), 0);
	return net;
}

static void random_batch(float *x, int32_t *labels, int n, int size)
{
	for (size_t i = 0; i < (size_t)n * 3 * size * size; i++)
		x[i] = (float)(4 * mp_rng_uniform(&rng) - 2);
	for (int i = 0; i < n && labels; i++)
		labels[i] = (int32_t)mp_rng_below(&rng, CLASSES);
}

/* Backend variants: which optional operations the CPU backend keeps (the
 * fused BN + ReLU of training, the fused inference convolutions), in
 * table (which must outlive the backend). */
static mp_backend *variant(mp_backend_ops *table, int fast, int no_bn_relu, int no_conv_bn)
{
	mp_backend *be = fast ? mp_backend_cpu_fast_new(0) : mp_backend_cpu_new(0);
	assert_non_null(be);
	*table = *be->ops;
	if (no_bn_relu)
		table->bn_relu_forward_train = NULL, table->bn_relu_backward = NULL;
	if (no_conv_bn)
		table->conv_bn_prepare = NULL, table->conv_bn_forward_infer = NULL;
	be->ops = table;
	return be;
}

static mp_backend_ops checked_ops, plain_ops;

/* The same work on the checked network (graphs on) and on a plain one:
 * training steps at two batch sizes, an evaluation pass between them,
 * inference passes at two sizes; the same bits throughout. */
static void same_bits_under_rule(int fast, int no_bn_relu, int no_conv_bn, char shortcut)
{
	mp_backend *cb = variant(&checked_ops, fast, no_bn_relu, no_conv_bn);
	recorder_install(cb);
	act_install(cb, 0);
	mp_backend *pb = variant(&plain_ops, fast, no_bn_relu, no_conv_bn);
	mp_resnet *cn = make_net(cb, shortcut), *pn = make_net(pb, shortcut);
	mp_error e;
	const int sizes[] = {N, N, N, 5, 5, N};
	for (int s = 0; s < 6; s++) {
		const int n = sizes[s];
		float *x = malloc((size_t)n * 3 * S * S * sizeof *x), pc[5 * CLASSES], pp[5 * CLASSES];
		int32_t labels[5];
		assert_non_null(x);
		random_batch(x, labels, n, S);
		double lc, lp;
		if (mp_resnet_train_step(cn, x, labels, n, S, S, 0.1f, 0.05f, 0.9f, 5e-4f, &lc, pc,
					 &e) < 0)
			fail_msg("checked step %d: %s", s, e.msg);
		if (mp_resnet_train_step(pn, x, labels, n, S, S, 0.1f, 0.05f, 0.9f, 5e-4f, &lp, pp,
					 &e) < 0)
			fail_msg("plain step %d: %s", s, e.msg);
		if (lc != lp)
			fail_msg("step %d: loss %.17g against %.17g", s, lc, lp);
		assert_memory_equal(pc, pp, (size_t)n * CLASSES * sizeof *pc);
		if (s == 2) { /* an evaluation pass reallocates the buffers */
			assert_int_equal(mp_resnet_forward(cn, x, n, S, S, 0, &e), 0);
			assert_int_equal(mp_resnet_forward(pn, x, n, S, S, 0, &e), 0);
			assert_int_equal(mp_resnet_logits(cn, pc, &e), 0);
			assert_int_equal(mp_resnet_logits(pn, pp, &e), 0);
			assert_memory_equal(pc, pp, (size_t)n * CLASSES * sizeof *pc);
		}
		free(x);
	}
	/* multiscale inference: two view sizes in turn, in the same buffers */
	for (int i = 0; i < 4; i++) {
		const int size = i % 2 ? S : S + 4;
		float *x = malloc((size_t)N * 3 * size * size * sizeof *x), lc[N * CLASSES],
		      lp[N * CLASSES];
		assert_non_null(x);
		random_batch(x, NULL, N, size);
		if (mp_resnet_predict(cn, x, N, size, size, lc, &e) < 0)
			fail_msg("checked predict: %s", e.msg);
		if (mp_resnet_predict(pn, x, N, size, size, lp, &e) < 0)
			fail_msg("plain predict: %s", e.msg);
		assert_memory_equal(lc, lp, sizeof lc);
		free(x);
	}
	long recorded, launched;
	mp_resnet_graph_counts(cn, 1, &recorded, &launched);
	assert_true(launched > 0); /* the rule held while recording too */
	act_state *st = act_of(cb);
	if (st->violations)
		fail_msg("%ld calls broke the rule; the first: %s", st->violations, st->first);
	assert_true(st->act_allocs > 10);
	mp_resnet_free(cn);
	mp_resnet_free(pn);
	act_remove(cb);
	mp_backend_free(cb);
	mp_backend_free(pb);
}

static void resnet_keeps_the_rule(void **state)
{
	(void)state;
	for (int fast = 0; fast < 2; fast++)
		for (int v = 0; v < 3; v++) {
			/* fused BN + ReLU and inference convolutions, neither, or
			 * the fused BN + ReLU only */
			const int no_bn_relu = v == 1, no_conv_bn = v >= 1;
			same_bits_under_rule(fast, no_bn_relu, no_conv_bn, 'A');
			same_bits_under_rule(fast, no_bn_relu, no_conv_bn, 'B');
		}
}

/* Activation buffers that one training step of a network of this depth
 * allocates (counted by the checker's alloc_act). */
static long train_allocs(int depth, int fused)
{
	mp_backend_ops table;
	mp_backend *be = variant(&table, 0, !fused, 1);
	act_install(be, 0);
	mp_resnet_config c;
	small_config(&c, 'A');
	c.depth = depth;
	mp_error e;
	mp_resnet *net = mp_resnet_new(&c, be, &e);
	if (!net)
		fail_msg("mp_resnet_new: %s", e.msg);
	assert_int_equal(mp_resnet_init(net, 5, &e), 0);
	float x[N * 3 * S * S], probs[N * CLASSES];
	int32_t labels[N];
	random_batch(x, labels, N, S);
	double loss;
	if (mp_resnet_train_step(net, x, labels, N, S, S, 0.1f, 0.05f, 0.9f, 5e-4f, &loss, probs,
				 &e) < 0)
		fail_msg("depth %d: %s", depth, e.msg);
	const long allocs = act_of(be)->act_allocs;
	mp_resnet_free(net);
	act_remove(be);
	mp_backend_free(be);
	return allocs;
}

/* A block's activation gradients are shared with the blocks of its shape:
 * a deeper network allocates only its blocks' forward outputs more (4 a
 * block with the fused BN + ReLU, 7 without), whatever its depth. */
static void deeper_nets_share_gradient_buffers(void **state)
{
	(void)state;
	const int stages = 4;
	assert_int_equal(train_allocs(10, 1) - train_allocs(6, 1), 4 * stages * 4);
	assert_int_equal(train_allocs(10, 0) - train_allocs(6, 0), 4 * stages * 7);
}

/* The checker itself: mixed calls and activations in plain places fail,
 * naming the operation; the allowed exception (plain images into a
 * convolution whose output is an activation) passes. */
static void checker_refuses_mixed_calls(void **state)
{
	(void)state;
	mp_backend *be = mp_backend_cpu_new(0);
	assert_non_null(be);
	act_install(be, 0);
	mp_tensor a = {0}, p = {0}, y = {0}, w = {0}, img = {0}, fc = {0}, fcw = {0};
	assert_int_equal(mp_backend_alloc_act(be, &a, 2, 4, 5, 5), 0);
	assert_int_equal(mp_backend_alloc_act(be, &y, 2, 4, 5, 5), 0);
	assert_int_equal(be->ops->alloc(be, &p, 2, 4, 5, 5), 0);
	assert_int_equal(be->ops->alloc(be, &w, 4, 4, 3, 3), 0);
	assert_int_equal(be->ops->alloc(be, &img, 2, 4, 5, 5), 0);
	assert_int_equal(be->ops->alloc(be, &fcw, 3, 4, 1, 1), 0);
	assert_int_equal(mp_backend_alloc_act(be, &fc, 2, 4, 1, 1), 0);
	assert_int_equal(a.storage, ACT_MARK);
	assert_int_equal(p.storage, 0);
	for (mp_tensor *t = &a; t; t = t == &a ? &p : t == &p ? &img : NULL)
		assert_int_equal(be->ops->fill(be, t, 0.5f), 0);
	assert_int_equal(be->ops->fill(be, &w, 0.1f), 0);
	assert_int_equal(be->ops->fill(be, &fcw, 0.1f), 0);

	assert_int_equal(be->ops->add(be, &a, &a, &y), 0);
	assert_int_equal(be->ops->add(be, &a, &p, &y), -1);
	assert_string_equal(mp_backend_error(be),
			    "act rule: add: activations from alloc_act mixed with plain ones (operand 1)");
	assert_int_equal(be->ops->relu_forward(be, &p, &y), -1);
	/* plain images into a convolution with an activation output: allowed */
	assert_int_equal(be->ops->conv2d_forward(be, &img, &w, &y, 1, 1), 0);
	/* an activation into a convolution with a plain output: not */
	assert_int_equal(be->ops->conv2d_forward(be, &a, &w, &p, 1, 1), -1);
	/* an activation in a weight's place */
	assert_int_equal(be->ops->conv2d_forward(be, &img, &a, &y, 1, 1), -1);
	/* the head takes plain tensors */
	mp_tensor out = {0};
	assert_int_equal(be->ops->alloc(be, &out, 2, 3, 1, 1), 0);
	assert_int_equal(be->ops->linear_forward(be, &fc, &fcw, &out), -1);
	assert_string_equal(mp_backend_error(be), "act rule: linear_forward: operand 0 is from "
						  "alloc_act, and this operand takes plain tensors only");
	assert_int_equal(act_of(be)->violations, 5);
	mp_tensor *all[] = {&a, &p, &y, &w, &img, &fc, &fcw, &out};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		be->ops->release(be, all[i]);
	act_remove(be);
	mp_backend_free(be);
}

/* float to bf16 by the checker's rounding, for the expectations */
static int is_bf16(float f)
{
	return act_bf16(f) == f;
}

/* Rounding mode: stored activations hold bf16 values (upload and every
 * operation's output), plain tensors keep float; a training step's loss
 * stays near the plain step's, and differs from it (it did round). */
static void rounding_mode(void **state)
{
	(void)state;
	mp_backend *be = mp_backend_cpu_new(0);
	assert_non_null(be);
	act_install(be, 1);
	mp_tensor a = {0}, p = {0}, y = {0};
	assert_int_equal(mp_backend_alloc_act(be, &a, 2, 3, 4, 4), 0);
	assert_int_equal(mp_backend_alloc_act(be, &y, 2, 3, 4, 4), 0);
	assert_int_equal(be->ops->alloc(be, &p, 2, 3, 4, 4), 0);
	float h[96], got[96];
	for (int i = 0; i < 96; i++)
		h[i] = (float)(mp_rng_uniform(&rng) * 2 - 1) / 3.0f;
	assert_int_equal(be->ops->upload(be, &a, h), 0);
	assert_int_equal(be->ops->upload(be, &p, h), 0);
	assert_int_equal(be->ops->download(be, &a, got), 0);
	int inexact = 0;
	for (int i = 0; i < 96; i++) {
		assert_true(got[i] == act_bf16(h[i]));
		inexact += !is_bf16(h[i]);
	}
	assert_true(inexact > 80);
	assert_int_equal(be->ops->download(be, &p, got), 0);
	assert_memory_equal(got, h, sizeof h);
	assert_int_equal(be->ops->add(be, &a, &a, &y), 0); /* 2a: still bf16 values */
	assert_int_equal(be->ops->relu_forward(be, &a, &y), 0);
	assert_int_equal(be->ops->download(be, &y, got), 0);
	for (int i = 0; i < 96; i++)
		assert_true(is_bf16(got[i]));
	be->ops->release(be, &a);
	be->ops->release(be, &p);
	be->ops->release(be, &y);
	assert_null(be->ops->graph_begin);

	mp_backend *pb = mp_backend_cpu_new(0);
	assert_non_null(pb);
	mp_resnet *rn = make_net(be, 'A'), *pn = make_net(pb, 'A');
	mp_error e;
	float x[N * 3 * S * S], pr[N * CLASSES], pp[N * CLASSES];
	int32_t labels[N];
	random_batch(x, labels, N, S);
	double lr, lp;
	assert_int_equal(mp_resnet_train_step(rn, x, labels, N, S, S, 0, 0.1f, 0.9f, 0, &lr, pr, &e), 0);
	assert_int_equal(mp_resnet_train_step(pn, x, labels, N, S, S, 0, 0.1f, 0.9f, 0, &lp, pp, &e), 0);
	assert_true(lr != lp);
	if (!(fabs(lr - lp) < 0.02 * lp))
		fail_msg("loss %.6f with bf16 activations, %.6f without", lr, lp);
	assert_int_equal(act_of(be)->violations, 0);
	mp_resnet_free(rn);
	mp_resnet_free(pn);
	act_remove(be);
	mp_backend_free(be);
	mp_backend_free(pb);
}

static int setup(void **state)
{
	(void)state;
	mp_rng_seed(&rng, 0xac7);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(resnet_keeps_the_rule),
		cmocka_unit_test(deeper_nets_share_gradient_buffers),
		cmocka_unit_test(checker_refuses_mixed_calls),
		cmocka_unit_test(rounding_mode),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
