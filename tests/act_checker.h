/* Activation tensors for tests on the CPU: gives a backend alloc_act
 * (kernels/backend.h), whose tensors it marks, and at every operation
 * checks the interface's rule for them: the activation operands of one
 * call all from alloc_act or all from alloc (conv2d's x may be a plain
 * input), and weights, the head (avgpool's y and dy, linear, the loss)
 * and the SGD step plain. A call that breaks the rule fails with a
 * message that names it, and is counted, so a caller that mixes them (a
 * GPU backend storing activations in bf16 would compute garbage or
 * refuse) fails on the CPU too.
 *
 * With rounding on, every marked tensor that an operation writes (and
 * upload and fill) is rounded to bfloat16 afterwards, as a backend that
 * stores activations in bf16 stores them: the reference for such a
 * backend. Rounding needs the host between operations, so the wrapped
 * backend then has no graph operations; it also has no fused inference
 * convolution (conv_bn_*), which a bf16 backend's separate operations
 * would round differently.
 *
 * Up to two backends at a time; include once per program. */
#ifndef MP_ACT_CHECKER_H
#define MP_ACT_CHECKER_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

#define ACT_MARK 0x61 /* mp_tensor.storage of a tensor from the wrapper's alloc_act */

typedef struct {
	mp_backend *be;
	const mp_backend_ops *inner;
	mp_backend_ops ops;
	int round;
	long violations, act_allocs;
	char first[512]; /* the first violation's message */
} act_state;

static act_state act_states[2];

static act_state *act_of(mp_backend *be)
{
	for (int i = 0; i < 2; i++)
		if (act_states[i].be == be)
			return &act_states[i];
	fprintf(stderr, "act_checker: backend not wrapped\n");
	abort();
}

static int act_is(const mp_tensor *t)
{
	return t && t->storage == ACT_MARK;
}

static int act_violation(mp_backend *be, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int act_violation(mp_backend *be, const char *fmt, ...)
{
	act_state *st = act_of(be);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(be->error, sizeof be->error, fmt, ap);
	va_end(ap);
	if (!st->violations++)
		snprintf(st->first, sizeof st->first, "%s", be->error);
	return -1;
}

/* All of t[0..n) (NULL ones skipped) from alloc_act, or none. */
static int act_uniform(mp_backend *be, const char *op, int n, const mp_tensor *const *t)
{
	int kind = -1;
	for (int i = 0; i < n; i++) {
		if (!t[i])
			continue;
		if (kind >= 0 && act_is(t[i]) != kind)
			return act_violation(be, "act rule: %s: activations from alloc_act mixed with "
						 "plain ones (operand %d)", op, i);
		kind = act_is(t[i]);
	}
	return 0;
}

/* None of t[0..n) from alloc_act. */
static int act_none(mp_backend *be, const char *op, int n, const mp_tensor *const *t)
{
	for (int i = 0; i < n; i++)
		if (act_is(t[i]))
			return act_violation(be, "act rule: %s: operand %d is from alloc_act, and "
						 "this operand takes plain tensors only", op, i);
	return 0;
}

#define ACT_UNIFORM(op, ...)                                                            \
	act_uniform(be, op, (int)(sizeof((const mp_tensor *[]){__VA_ARGS__}) /          \
				  sizeof(const mp_tensor *)),                           \
		    (const mp_tensor *[]){__VA_ARGS__})
#define ACT_NONE(op, ...)                                                               \
	act_none(be, op, (int)(sizeof((const mp_tensor *[]){__VA_ARGS__}) /             \
			       sizeof(const mp_tensor *)),                              \
		 (const mp_tensor *[]){__VA_ARGS__})

static int act_bn_plain(mp_backend *be, const char *op, const mp_bn *bn)
{
	return ACT_NONE(op, bn->gamma, bn->beta, bn->running_mean, bn->running_var, bn->save_mean,
			bn->save_invstd);
}

/* float to the nearest bfloat16 (ties to even), as a GPU's conversion */
static float act_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	if ((u & 0x7f800000u) != 0x7f800000u)
		u += 0x7fffu + ((u >> 16) & 1u);
	u &= 0xffff0000u;
	memcpy(&f, &u, sizeof f);
	return f;
}

/* Rounds the marked ones of t[0..n) to bf16 in place, in rounding mode. */
static int act_round(mp_backend *be, int rc, int n, mp_tensor *const *t)
{
	act_state *st = act_of(be);
	if (rc < 0 || !st->round)
		return rc;
	for (int i = 0; i < n; i++) {
		if (!act_is(t[i]))
			continue;
		const size_t count = mp_tensor_count(t[i]);
		float *h = malloc(count * sizeof *h);
		if (!h)
			return act_violation(be, "act_checker: out of memory");
		rc = st->inner->download(be, t[i], h);
		for (size_t k = 0; rc == 0 && k < count; k++)
			h[k] = act_bf16(h[k]);
		if (rc == 0)
			rc = st->inner->upload(be, t[i], h);
		free(h);
		if (rc < 0)
			return rc;
	}
	return 0;
}

#define ACT_ROUND(rc, ...)                                                              \
	act_round(be, rc, (int)(sizeof((mp_tensor *[]){__VA_ARGS__}) / sizeof(mp_tensor *)), \
		  (mp_tensor *[]){__VA_ARGS__})
#define INNER (act_of(be)->inner)

static int act_alloc_act(mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	if (INNER->alloc(be, t, n, c, h, w) < 0)
		return -1;
	t->storage = ACT_MARK;
	act_of(be)->act_allocs++;
	return 0;
}

static int act_upload(mp_backend *be, mp_tensor *t, const float *host)
{
	return ACT_ROUND(INNER->upload(be, t, host), t);
}

static int act_fill(mp_backend *be, mp_tensor *t, float value)
{
	return ACT_ROUND(INNER->fill(be, t, value), t);
}

static int act_conv_f(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y,
		      int stride, int pad)
{
	static const char op[] = "conv2d_forward";
	if (ACT_NONE(op, w) || (!act_is(y) && ACT_NONE(op, x)))
		return -1;
	return ACT_ROUND(INNER->conv2d_forward(be, x, w, y, stride, pad), y);
}

static int act_conv_b(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *dy,
		      mp_tensor *dx, mp_tensor *dw, int stride, int pad)
{
	static const char op[] = "conv2d_backward";
	if (ACT_NONE(op, w, dw) || ACT_UNIFORM(op, dy, dx) || (!act_is(dy) && ACT_NONE(op, x)))
		return -1;
	return ACT_ROUND(INNER->conv2d_backward(be, x, w, dy, dx, dw, stride, pad), dx);
}

static int act_bn_f(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y)
{
	static const char op[] = "bn_forward_train";
	if (ACT_UNIFORM(op, x, y) || act_bn_plain(be, op, bn))
		return -1;
	return ACT_ROUND(INNER->bn_forward_train(be, x, bn, y), y);
}

static int act_bn_i(mp_backend *be, const mp_tensor *x, const mp_bn *bn, mp_tensor *y)
{
	static const char op[] = "bn_forward_infer";
	if (ACT_UNIFORM(op, x, y) || act_bn_plain(be, op, bn))
		return -1;
	return ACT_ROUND(INNER->bn_forward_infer(be, x, bn, y), y);
}

static int act_bn_b(mp_backend *be, const mp_tensor *x, const mp_bn *bn, const mp_tensor *dy,
		    mp_tensor *dx, mp_tensor *dgamma, mp_tensor *dbeta)
{
	static const char op[] = "bn_backward";
	if (ACT_UNIFORM(op, x, dy, dx) || ACT_NONE(op, dgamma, dbeta) || act_bn_plain(be, op, bn))
		return -1;
	return ACT_ROUND(INNER->bn_backward(be, x, bn, dy, dx, dgamma, dbeta), dx);
}

static int act_relu_f(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	if (ACT_UNIFORM("relu_forward", x, y))
		return -1;
	return ACT_ROUND(INNER->relu_forward(be, x, y), y);
}

static int act_relu_b(mp_backend *be, const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx)
{
	if (ACT_UNIFORM("relu_backward", y, dy, dx))
		return -1;
	return ACT_ROUND(INNER->relu_backward(be, y, dy, dx), dx);
}

static int act_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y)
{
	if (ACT_UNIFORM("add", a, b, y))
		return -1;
	return ACT_ROUND(INNER->add(be, a, b, y), y);
}

static int act_sc_f(mp_backend *be, const mp_tensor *x, mp_tensor *y, int stride)
{
	if (ACT_UNIFORM("shortcut_a_forward", x, y))
		return -1;
	return ACT_ROUND(INNER->shortcut_a_forward(be, x, y, stride), y);
}

static int act_sc_b(mp_backend *be, const mp_tensor *dy, mp_tensor *dx, int stride)
{
	if (ACT_UNIFORM("shortcut_a_backward", dy, dx))
		return -1;
	return ACT_ROUND(INNER->shortcut_a_backward(be, dy, dx, stride), dx);
}

static int act_pool_f(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	if (ACT_NONE("avgpool_forward", y))
		return -1;
	return INNER->avgpool_forward(be, x, y);
}

static int act_pool_b(mp_backend *be, const mp_tensor *dy, mp_tensor *dx)
{
	if (ACT_NONE("avgpool_backward", dy))
		return -1;
	return ACT_ROUND(INNER->avgpool_backward(be, dy, dx), dx);
}

static int act_lin_f(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y)
{
	if (ACT_NONE("linear_forward", x, w, y))
		return -1;
	return INNER->linear_forward(be, x, w, y);
}

static int act_lin_b(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *dy,
		     mp_tensor *dx, mp_tensor *dw)
{
	if (ACT_NONE("linear_backward", x, w, dy, dx, dw))
		return -1;
	return INNER->linear_backward(be, x, w, dy, dx, dw);
}

static int act_xent_f(mp_backend *be, const mp_tensor *logits, const int32_t *labels, float s,
		      mp_tensor *probs, double *loss)
{
	if (ACT_NONE("softmax_xent_forward", logits, probs))
		return -1;
	return INNER->softmax_xent_forward(be, logits, labels, s, probs, loss);
}

static int act_xent_b(mp_backend *be, const mp_tensor *probs, const int32_t *labels, float s,
		      mp_tensor *dlogits)
{
	if (ACT_NONE("softmax_xent_backward", probs, dlogits))
		return -1;
	return INNER->softmax_xent_backward(be, probs, labels, s, dlogits);
}

static int act_sgd(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		   mp_tensor *const *v, int count, const mp_tensor *lr, float momentum, float wd)
{
	for (int i = 0; i < count; i++)
		if (ACT_NONE("sgd_step", w[i], g[i], v[i]))
			return -1;
	if (ACT_NONE("sgd_step", lr))
		return -1;
	return INNER->sgd_step(be, w, g, v, count, lr, momentum, wd);
}

static int act_cbn_prep(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int stride, int pad,
			mp_tensor *prep)
{
	static const char op[] = "conv_bn_prepare";
	if (ACT_NONE(op, w) || act_bn_plain(be, op, bn))
		return -1;
	return INNER->conv_bn_prepare(be, w, bn, stride, pad, prep);
}

static int act_cbn_f(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *prep,
		     const mp_tensor *res, int relu, mp_tensor *y, int stride, int pad)
{
	static const char op[] = "conv_bn_forward_infer";
	if (ACT_NONE(op, w, prep) || ACT_UNIFORM(op, res, y) || (!act_is(y) && ACT_NONE(op, x)))
		return -1;
	return INNER->conv_bn_forward_infer(be, x, w, prep, res, relu, y, stride, pad);
}

static int act_bnr_f(mp_backend *be, const mp_tensor *x, mp_bn *bn, const mp_tensor *res,
		     mp_tensor *y)
{
	static const char op[] = "bn_relu_forward_train";
	if (ACT_UNIFORM(op, x, res, y) || act_bn_plain(be, op, bn))
		return -1;
	return ACT_ROUND(INNER->bn_relu_forward_train(be, x, bn, res, y), y);
}

static int act_bnr_b(mp_backend *be, const mp_tensor *x, const mp_bn *bn, const mp_tensor *y,
		     const mp_tensor *dy, mp_tensor *dx, mp_tensor *dgamma, mp_tensor *dbeta,
		     mp_tensor *dres)
{
	static const char op[] = "bn_relu_backward";
	if (ACT_UNIFORM(op, x, y, dy, dx, dres) || ACT_NONE(op, dgamma, dbeta) ||
	    act_bn_plain(be, op, bn))
		return -1;
	return ACT_ROUND(INNER->bn_relu_backward(be, x, bn, y, dy, dx, dgamma, dbeta, dres), dx,
			 dres);
}

#undef INNER

/* Wraps be (whatever ops it has now): round 1 for the rounding mode. */
static void act_install(mp_backend *be, int round)
{
	act_state *st = NULL;
	for (int i = 0; i < 2 && !st; i++)
		if (!act_states[i].be)
			st = &act_states[i];
	if (!st) {
		fprintf(stderr, "act_checker: more than two backends\n");
		abort();
	}
	memset(st, 0, sizeof *st);
	st->be = be;
	st->inner = be->ops;
	st->round = round;
	mp_backend_ops *o = &st->ops;
	*o = *be->ops;
	o->alloc_act = act_alloc_act;
	o->upload = act_upload;
	o->fill = act_fill;
	o->conv2d_forward = act_conv_f;
	o->conv2d_backward = act_conv_b;
	o->conv2d_backward_add = NULL; /* not checked here: the network adds */
	o->bn_forward_train = act_bn_f;
	o->bn_forward_infer = act_bn_i;
	o->bn_backward = act_bn_b;
	o->relu_forward = act_relu_f;
	o->relu_backward = act_relu_b;
	o->add = act_add;
	o->shortcut_a_forward = act_sc_f;
	o->shortcut_a_backward = act_sc_b;
	o->avgpool_forward = act_pool_f;
	o->avgpool_backward = act_pool_b;
	o->linear_forward = act_lin_f;
	o->linear_backward = act_lin_b;
	o->softmax_xent_forward = act_xent_f;
	o->softmax_xent_backward = act_xent_b;
	o->sgd_step = act_sgd;
	if (o->conv_bn_prepare && !round) {
		o->conv_bn_prepare = act_cbn_prep;
		o->conv_bn_forward_infer = act_cbn_f;
	} else {
		o->conv_bn_prepare = NULL;
		o->conv_bn_forward_infer = NULL;
	}
	if (o->bn_relu_forward_train) {
		o->bn_relu_forward_train = act_bnr_f;
		o->bn_relu_backward = act_bnr_b;
	}
	if (round) {
		o->graph_begin = NULL;
		o->graph_end = NULL;
		o->graph_launch = NULL;
		o->graph_wait = NULL;
		o->graph_free = NULL;
	}
	be->ops = o;
}

/* Gives be back the ops it had before act_install. */
static void act_remove(mp_backend *be)
{
	act_state *st = act_of(be);
	be->ops = st->inner;
	st->be = NULL;
}

#endif
