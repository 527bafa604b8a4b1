/* Times training steps of the reference network (mp_resnet_config_default:
 * depth 9, widths 32,64,128,256, shortcut A, 112 px) on any backend by
 * name (cpu, cpu-ref, cuda, auto): forward in training mode, loss,
 * backward, SGD, on random mean-subtracted images uploaded every step, as
 * mp-train does. WARMUP untimed steps (cuDNN chooses its algorithms in the
 * first), then STEPS timed ones, ended by a download that waits for the
 * device. Prints one line:
 *   backend <tab> batch <tab> size <tab> images/s <tab> s/step <tab>
 *   forward GFLOP/image <tab> training TFLOP/s (3 x forward)
 * For scripts/device-check.sh; not a test.
 *
 * usage: bench_step BACKEND BATCH STEPS [SIZE [WARMUP [PRECISION]]]
 * PRECISION: auto (default), fp32 or bf16, as --precision; it is the
 * line's eighth field.
 *
 * BENCH_OPS=1 also prints, on stderr, the time of each kind of
 * operation per timed step: every operation is followed by a wait for
 * the device (a one-value download), so the step is slower than without
 * and the figures say where the time goes, not how fast a step is. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend.h"
#include "mp_backends.h"
#include "mp_resnet.h"

/* this process's CPU seconds (all threads): against the wall time it says
 * whether the host keeps the device waiting */
static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
	       (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- BENCH_OPS: the backend's operations, each timed to its end ---------- */

enum {
	T_CONV_F, T_CONV_B, T_BN_F, T_BN_I, T_BN_B, T_RELU_F, T_RELU_B, T_ADD, T_SC_F, T_SC_B,
	T_POOL_F, T_POOL_B, T_LIN_F, T_LIN_B, T_XENT_F, T_XENT_B, T_SGD, T_COPY, T_BNR_F, T_BNR_B,
	T_COUNT
};
static const char *const op_names[T_COUNT] = {
	"conv2d_forward", "conv2d_backward", "bn_forward_train", "bn_forward_infer",
	"bn_backward", "relu_forward", "relu_backward", "add", "shortcut_a_forward",
	"shortcut_a_backward", "avgpool_forward", "avgpool_backward", "linear_forward",
	"linear_backward", "softmax_xent_forward", "softmax_xent_backward", "sgd_step",
	"upload/download/fill", "bn_relu_forward_train", "bn_relu_backward"};
static double op_time[T_COUNT];
static long op_calls[T_COUNT];
static const mp_backend_ops *inner;
static mp_tensor probe_one; /* one value, downloaded to wait for the device */

static int timed_end(mp_backend *be, int kind, double t0, int rc)
{
	float v;
	if (rc == 0 && probe_one.data)
		rc = inner->download(be, &probe_one, &v);
	op_time[kind] += now() - t0;
	op_calls[kind]++;
	return rc;
}

#define TIMED(kind, call)                                                       \
	do {                                                                    \
		const double t0_ = now();                                       \
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
		 mp_tensor *const *v, int count, float lr, float m, float wd)
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

static mp_backend_ops timed_ops;

/* Routes be's operations through the timers above. */
static int time_ops(mp_backend *be)
{
	inner = be->ops;
	timed_ops = *inner;
	timed_ops.upload = w_upload;
	timed_ops.download = w_download;
	timed_ops.fill = w_fill;
	timed_ops.conv2d_forward = w_conv_f;
	timed_ops.conv2d_backward = w_conv_b;
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
	be->ops = &timed_ops;
	return inner->alloc(be, &probe_one, 1, 1, 1, 1);
}

static void report_ops(int steps)
{
	double total = 0;
	for (int k = 0; k < T_COUNT; k++)
		total += op_time[k];
	fprintf(stderr, "bench_step: time per step by operation (each waited for):\n");
	for (int k = 0; k < T_COUNT; k++)
		if (op_calls[k])
			fprintf(stderr, "  %-22s %8.3f ms  %5.1f%%  %6.1f calls\n", op_names[k],
				1e3 * op_time[k] / steps, 100 * op_time[k] / total,
				(double)op_calls[k] / steps);
	fprintf(stderr, "  %-22s %8.3f ms\n", "total", 1e3 * total / steps);
}

static int step(mp_resnet *net, const float *x, const int32_t *labels, int n, int size,
		mp_error *e)
{
	double loss;
	if (mp_resnet_forward(net, x, n, size, size, 1, e) < 0 ||
	    mp_resnet_loss(net, labels, 0.0f, &loss, NULL, e) < 0 ||
	    mp_resnet_backward(net, e) < 0 || mp_resnet_sgd(net, 0.1f, 0.9f, 5e-4f, e) < 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 7) {
		fprintf(stderr, "usage: bench_step BACKEND BATCH STEPS [SIZE [WARMUP [PRECISION]]]\n");
		return 2;
	}
	mp_resnet_config c;
	mp_resnet_config_default(&c);
	const char *name = argv[1];
	const int n = atoi(argv[2]), steps = atoi(argv[3]);
	const int size = argc >= 5 ? atoi(argv[4]) : c.input_size;
	const int warmup = argc >= 6 ? atoi(argv[5]) : 2;
	const char *precision = argc >= 7 ? argv[6] : "auto";
	const char *ops_env = getenv("BENCH_OPS");
	const int by_op = ops_env && *ops_env && strcmp(ops_env, "0");
	if (n < 2 || steps < 1 || size < 8 || warmup < 0) {
		fprintf(stderr, "bench_step: bad batch, steps, size or warm-up count\n");
		return 2;
	}
	mp_error e;
	char desc[512];
	mp_backend *be = mp_backend_open(name, 0, precision, desc, sizeof desc, &e);
	if (!be) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	fprintf(stderr, "bench_step: backend %s\n", desc);
	if (by_op && time_ops(be) < 0) {
		fprintf(stderr, "bench_step: %s\n", mp_backend_error(be));
		return 1;
	}
	mp_resnet *net = mp_resnet_new(&c, be, &e);
	if (!net || mp_resnet_init(net, 1, &e) < 0) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	const size_t count = (size_t)n * 3 * size * size;
	float *x = mp_backend_host_alloc(be, count * sizeof *x); /* as mp-train's batches */
	int32_t *labels = malloc((size_t)n * sizeof *labels);
	float *probe = malloc(mp_tensor_count(&mp_resnet_param(net, 0)->value) * sizeof *probe);
	if (!x || !labels || !probe) {
		fprintf(stderr, "bench_step: out of memory\n");
		return 1;
	}
	mp_rng rng;
	mp_rng_seed(&rng, 7);
	for (size_t i = 0; i < count; i++)
		x[i] = (float)(255.0 * mp_rng_uniform(&rng) - 120.0);
	for (int i = 0; i < n; i++)
		labels[i] = (int32_t)mp_rng_below(&rng, (uint64_t)c.classes);

	const double tw = now();
	for (int s = 0; s < warmup; s++)
		if (step(net, x, labels, n, size, &e) < 0) {
			fprintf(stderr, "bench_step: %s\n", e.msg);
			return 1;
		}
	fprintf(stderr, "bench_step: %d warm-up steps in %.2f s\n", warmup, now() - tw);
	memset(op_time, 0, sizeof op_time);
	memset(op_calls, 0, sizeof op_calls);
	const double t0 = now(), c0 = cpu_seconds();
	for (int s = 0; s < steps; s++)
		if (step(net, x, labels, n, size, &e) < 0) {
			fprintf(stderr, "bench_step: %s\n", e.msg);
			return 1;
		}
	/* the SGD step may still run on a device: wait for it */
	if (mp_resnet_download(net, &mp_resnet_param(net, 0)->value, probe, &e) < 0) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	const double dt = (now() - t0) / steps;
	fprintf(stderr, "bench_step: %.2f ms/step wall, %.2f ms/step of CPU time\n", 1e3 * dt,
		1e3 * (cpu_seconds() - c0) / steps);
	const double fwd = mp_resnet_flops(net, size);
	if (by_op)
		report_ops(steps);
	printf("%s\t%d\t%d\t%.1f\t%.5f\t%.4f\t%.3f\t%s\n", name, n, size, n / dt, dt, fwd / 1e9,
	       3.0 * fwd * n / dt / 1e12, strstr(desc, ", bf16") ? "bf16" : "fp32");
	mp_resnet_free(net);
	if (by_op)
		inner->release(be, &probe_one);
	mp_backend_host_free(be, x);
	mp_backend_free(be);
	free(labels);
	free(probe);
	return 0;
}
