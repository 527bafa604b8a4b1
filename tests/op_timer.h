/* Times a backend's operations by kind, for the benchmark programs
 * (tests/oracle/bench_step.c on the CPU, tests/gpu/bench_step.c on any
 * backend): op_timer_install puts a timed wrapper around each operation
 * of be's table; op_timer_report prints the time per step of each kind.
 * With wait set, every operation is followed by a one-value download, so
 * that an asynchronous device's work is counted where it was asked for
 * (and the step runs slower); on the CPU the operations are synchronous
 * and need none. Header-only: each program includes it once. */
#ifndef MP_OP_TIMER_H
#define MP_OP_TIMER_H

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backend.h"

static double op_timer_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum {
	T_CONV_F, T_CONV_B, T_BN_F, T_BN_I, T_BN_B, T_RELU_F, T_RELU_B, T_ADD, T_SC_F, T_SC_B,
	T_POOL_F, T_POOL_B, T_LIN_F, T_LIN_B, T_XENT_F, T_XENT_B, T_SGD, T_COPY, T_BNR_F, T_BNR_B,
	T_CONV_BN, T_AUGMENT, T_COUNT
};
static const char *const op_names[T_COUNT] = {
	"conv2d_forward", "conv2d_backward", "bn_forward_train", "bn_forward_infer",
	"bn_backward", "relu_forward", "relu_backward", "add", "shortcut_a_forward",
	"shortcut_a_backward", "avgpool_forward", "avgpool_backward", "linear_forward",
	"linear_backward", "softmax_xent_forward", "softmax_xent_backward", "sgd_step",
	"upload/download/fill", "bn_relu_forward_train", "bn_relu_backward",
	"conv_bn_forward_infer", "augment_train"};
static double op_time[T_COUNT];
static long op_calls[T_COUNT];
static const mp_backend_ops *inner;
static mp_tensor probe_one; /* one value, downloaded to wait for the device */

static int timed_end(mp_backend *be, int kind, double t0, int rc)
{
	float v;
	if (rc == 0 && probe_one.data)
		rc = inner->download(be, &probe_one, &v);
	op_time[kind] += op_timer_now() - t0;
	op_calls[kind]++;
	return rc;
}

#define TIMED(kind, call)                                                       \
	do {                                                                    \
		const double t0_ = op_timer_now();                                       \
		return timed_end(be, kind, t0_, inner->call);                   \
	} while (0)

static int w_upload(mp_backend *be, mp_tensor *t, const float *h) { TIMED(T_COPY, upload(be, t, h)); }
static int w_download(mp_backend *be, const mp_tensor *t, float *h) { TIMED(T_COPY, download(be, t, h)); }
static int w_fill(mp_backend *be, mp_tensor *t, float v) { TIMED(T_COPY, fill(be, t, v)); }
static int w_conv_f(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y, int s, int p)
{
	TIMED(T_CONV_F, conv2d_forward(be, x, w, y, s, p));
}
static int w_conv_b(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *dy,
		    mp_tensor *dx, mp_tensor *dw, int s, int p)
{
	TIMED(T_CONV_B, conv2d_backward(be, x, w, dy, dx, dw, s, p));
}
static int w_conv_ba(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *dy,
		     mp_tensor *dx, mp_tensor *dw, int s, int p)
{
	TIMED(T_CONV_B, conv2d_backward_add(be, x, w, dy, dx, dw, s, p));
}
static int w_bn_f(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y) { TIMED(T_BN_F, bn_forward_train(be, x, bn, y)); }
static int w_bn_i(mp_backend *be, const mp_tensor *x, const mp_bn *bn, mp_tensor *y) { TIMED(T_BN_I, bn_forward_infer(be, x, bn, y)); }
static int w_bn_b(mp_backend *be, const mp_tensor *x, const mp_bn *bn, const mp_tensor *dy,
		  mp_tensor *dx, mp_tensor *dg, mp_tensor *db)
{
	TIMED(T_BN_B, bn_backward(be, x, bn, dy, dx, dg, db));
}
static int w_relu_f(mp_backend *be, const mp_tensor *x, mp_tensor *y) { TIMED(T_RELU_F, relu_forward(be, x, y)); }
static int w_relu_b(mp_backend *be, const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx) { TIMED(T_RELU_B, relu_backward(be, y, dy, dx)); }
static int w_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y) { TIMED(T_ADD, add(be, a, b, y)); }
static int w_sc_f(mp_backend *be, const mp_tensor *x, mp_tensor *y, int s) { TIMED(T_SC_F, shortcut_a_forward(be, x, y, s)); }
static int w_sc_b(mp_backend *be, const mp_tensor *dy, mp_tensor *dx, int s) { TIMED(T_SC_B, shortcut_a_backward(be, dy, dx, s)); }
static int w_pool_f(mp_backend *be, const mp_tensor *x, mp_tensor *y) { TIMED(T_POOL_F, avgpool_forward(be, x, y)); }
static int w_pool_b(mp_backend *be, const mp_tensor *dy, mp_tensor *dx) { TIMED(T_POOL_B, avgpool_backward(be, dy, dx)); }
static int w_lin_f(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y) { TIMED(T_LIN_F, linear_forward(be, x, w, y)); }
static int w_lin_b(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *dy,
		   mp_tensor *dx, mp_tensor *dw)
{
	TIMED(T_LIN_B, linear_backward(be, x, w, dy, dx, dw));
}
static int w_xent_f(mp_backend *be, const mp_tensor *z, const int32_t *l, float sm, mp_tensor *p,
		    double *loss)
{
	TIMED(T_XENT_F, softmax_xent_forward(be, z, l, sm, p, loss));
}
static int w_xent_b(mp_backend *be, const mp_tensor *p, const int32_t *l, float sm, mp_tensor *d)
{
	TIMED(T_XENT_B, softmax_xent_backward(be, p, l, sm, d));
}
static int w_sgd(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		 mp_tensor *const *v, int count, const mp_tensor *lr, float m, float wd)
{
	TIMED(T_SGD, sgd_step(be, w, g, v, count, lr, m, wd));
}

static int w_bnr_f(mp_backend *be, const mp_tensor *x, mp_bn *bn, const mp_tensor *res, mp_tensor *y)
{
	TIMED(T_BNR_F, bn_relu_forward_train(be, x, bn, res, y));
}
static int w_bnr_b(mp_backend *be, const mp_tensor *x, const mp_bn *bn, const mp_tensor *y,
		   const mp_tensor *dy, mp_tensor *dx, mp_tensor *dg, mp_tensor *db, mp_tensor *dres)
{
	TIMED(T_BNR_B, bn_relu_backward(be, x, bn, y, dy, dx, dg, db, dres));
}

static int w_conv_bn(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *prep,
		     const mp_tensor *res, int relu, mp_tensor *y, int s, int p)
{
	TIMED(T_CONV_BN, conv_bn_forward_infer(be, x, w, prep, res, relu, y, s, p));
}

static int w_augment(mp_backend *be, const mp_tensor *pixels, const int32_t *plan, int taps,
		     mp_tensor *plan_dev, mp_tensor *y)
{
	TIMED(T_AUGMENT, augment_train(be, pixels, plan, taps, plan_dev, y));
}

static mp_backend_ops timed_ops;

/* Routes be's operations through the timers above; 0, or -1 when the
 * probe value for waiting cannot be allocated. */
static int op_timer_install(mp_backend *be, int wait)
{
	inner = be->ops;
	timed_ops = *inner;
	timed_ops.upload = w_upload;
	timed_ops.download = w_download;
	timed_ops.fill = w_fill;
	timed_ops.conv2d_forward = w_conv_f;
	timed_ops.conv2d_backward = w_conv_b;
	timed_ops.conv2d_backward_add = inner->conv2d_backward_add ? w_conv_ba : NULL;
	timed_ops.bn_forward_train = w_bn_f;
	timed_ops.bn_forward_infer = w_bn_i;
	timed_ops.bn_backward = w_bn_b;
	timed_ops.relu_forward = w_relu_f;
	timed_ops.relu_backward = w_relu_b;
	timed_ops.add = w_add;
	timed_ops.shortcut_a_forward = w_sc_f;
	timed_ops.shortcut_a_backward = w_sc_b;
	timed_ops.avgpool_forward = w_pool_f;
	timed_ops.avgpool_backward = w_pool_b;
	timed_ops.linear_forward = w_lin_f;
	timed_ops.linear_backward = w_lin_b;
	timed_ops.softmax_xent_forward = w_xent_f;
	timed_ops.softmax_xent_backward = w_xent_b;
	timed_ops.sgd_step = w_sgd;
	if (inner->bn_relu_forward_train) {
		timed_ops.bn_relu_forward_train = w_bnr_f;
		timed_ops.bn_relu_backward = w_bnr_b;
	}
	if (inner->conv_bn_forward_infer)
		timed_ops.conv_bn_forward_infer = w_conv_bn;
	if (inner->augment_train)
		timed_ops.augment_train = w_augment;
	/* each operation is timed on its own, so none is recorded in a graph */
	timed_ops.graph_begin = NULL;
	timed_ops.graph_end = NULL;
	timed_ops.graph_launch = NULL;
	timed_ops.graph_wait = NULL;
	timed_ops.graph_free = NULL;
	be->ops = &timed_ops;
	return wait ? inner->alloc(be, &probe_one, 1, 1, 1, 1) : 0;
}

/* Starts the counts afresh (after warm-up steps). */
static void op_timer_reset(void)
{
	memset(op_time, 0, sizeof op_time);
	memset(op_calls, 0, sizeof op_calls);
}

/* Frees the probe value; before the backend is freed. */
static void op_timer_release(mp_backend *be)
{
	if (probe_one.data)
		inner->release(be, &probe_one);
}

/* The time per step of each kind that ran, on stderr. */
static void op_timer_report(int steps)
{
	double total = 0;
	for (int k = 0; k < T_COUNT; k++)
		total += op_time[k];
	fprintf(stderr, "bench_step: time per step by operation%s:\n",
		probe_one.data ? " (each waited for)" : "");
	for (int k = 0; k < T_COUNT; k++)
		if (op_calls[k])
			fprintf(stderr, "  %-22s %8.3f ms  %5.1f%%  %6.1f calls\n", op_names[k],
				1e3 * op_time[k] / steps, 100 * op_time[k] / total,
				(double)op_calls[k] / steps);
	fprintf(stderr, "  %-22s %8.3f ms\n", "total", 1e3 * total / steps);
}

#endif
