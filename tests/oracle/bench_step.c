/* Times training steps of the reference network (mp_resnet_config_default:
 * depth 9, widths 32,64,128,256, 112 px) on a CPU backend: forward in
 * training mode, loss, backward, SGD, on random mean-subtracted images.
 * One untimed warm-up step, then STEPS timed ones; prints one line
 *   backend <tab> batch <tab> threads <tab> images/s <tab> seconds/step
 * For scripts/bench-conv.sh; not a test. With BENCH_OPS set in the
 * environment, also the time per step of each kind of operation on stderr.
 * With BENCH_EVAL set, a step is an evaluation forward pass instead.
 *
 * usage: bench_step cpu|cpu-ref BATCH STEPS THREADS [SIZE] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cpu/cpu.h"
#include "mp_resnet.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Per-operation times: the backend's table with timed wrappers. */
enum { T_CONV_F, T_CONV_B, T_BN_F, T_BN_B, T_RELU_F, T_RELU_B, T_ADD, T_SGD, T_CONV_BN, T_COUNT };
static const char *const t_name[T_COUNT] = {"conv fwd", "conv bwd", "bn fwd", "bn bwd",
					    "relu fwd", "relu bwd", "add", "sgd", "conv+bn"};
static int eval_only;
static double t_sum[T_COUNT];
static mp_backend_ops timed;
static const mp_backend_ops *inner;

#define TIMED(slot, call)                                \
	do {                                             \
		const double t0_ = now();                \
		const int rc_ = (call);                  \
		t_sum[slot] += now() - t0_;              \
		return rc_;                              \
	} while (0)

static int t_conv_f(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y,
		    int s, int p)
{
	TIMED(T_CONV_F, inner->conv2d_forward(be, x, w, y, s, p));
}

static int t_conv_b(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
		    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int s, int p)
{
	TIMED(T_CONV_B, inner->conv2d_backward(be, x, w, dy, dx, dw, s, p));
}

static int t_bn_f(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y)
{
	TIMED(T_BN_F, inner->bn_forward_train(be, x, bn, y));
}

static int t_bn_b(mp_backend *be, const mp_tensor *x, const mp_bn *bn, const mp_tensor *dy,
		  mp_tensor *dx, mp_tensor *dg, mp_tensor *db)
{
	TIMED(T_BN_B, inner->bn_backward(be, x, bn, dy, dx, dg, db));
}

static int t_relu_f(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	TIMED(T_RELU_F, inner->relu_forward(be, x, y));
}

static int t_relu_b(mp_backend *be, const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx)
{
	TIMED(T_RELU_B, inner->relu_backward(be, y, dy, dx));
}

static int t_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y)
{
	TIMED(T_ADD, inner->add(be, a, b, y));
}

static int t_sgd(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		 mp_tensor *const *v, int count, float lr, float m, float wd)
{
	TIMED(T_SGD, inner->sgd_step(be, w, g, v, count, lr, m, wd));
}

static int t_conv_bn(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *prep,
		     const mp_tensor *res, int relu, mp_tensor *y, int s, int p)
{
	TIMED(T_CONV_BN, inner->conv_bn_forward_infer(be, x, w, prep, res, relu, y, s, p));
}

static void time_ops(mp_backend *be)
{
	inner = be->ops;
	timed = *inner;
	timed.conv2d_forward = t_conv_f;
	timed.conv2d_backward = t_conv_b;
	timed.bn_forward_train = t_bn_f;
	timed.bn_backward = t_bn_b;
	timed.relu_forward = t_relu_f;
	timed.relu_backward = t_relu_b;
	timed.add = t_add;
	timed.sgd_step = t_sgd;
	if (inner->conv_bn_forward_infer)
		timed.conv_bn_forward_infer = t_conv_bn;
	be->ops = &timed;
}

static int step(mp_resnet *net, const float *x, const int32_t *labels, int n, int size,
		mp_error *e)
{
	double loss;
	if (eval_only)
		return mp_resnet_forward(net, x, n, size, size, 0, e);
	if (mp_resnet_forward(net, x, n, size, size, 1, e) < 0 ||
	    mp_resnet_loss(net, labels, 0.0f, &loss, NULL, e) < 0 ||
	    mp_resnet_backward(net, e) < 0 || mp_resnet_sgd(net, 0.1f, 0.9f, 5e-4f, e) < 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: bench_step cpu|cpu-ref BATCH STEPS THREADS [SIZE]\n");
		return 2;
	}
	const char *name = argv[1];
	const int n = atoi(argv[2]), steps = atoi(argv[3]), threads = atoi(argv[4]);
	mp_resnet_config c;
	mp_resnet_config_default(&c);
	const int size = argc == 6 ? atoi(argv[5]) : c.input_size;
	if (n < 1 || steps < 1 || threads < 0 || size < 8) {
		fprintf(stderr, "bench_step: bad batch, steps, threads or size\n");
		return 2;
	}
	mp_backend *be;
	if (!strcmp(name, "cpu"))
		be = mp_backend_cpu_fast_new(threads);
	else if (!strcmp(name, "cpu-ref"))
		be = mp_backend_cpu_new(threads);
	else {
		fprintf(stderr, "bench_step: backend %s is not cpu or cpu-ref\n", name);
		return 2;
	}
	const int verbose = getenv("BENCH_OPS") != NULL;
	eval_only = getenv("BENCH_EVAL") != NULL;
	if (be && verbose)
		time_ops(be);
	mp_error e;
	mp_resnet *net = be ? mp_resnet_new(&c, be, &e) : NULL;
	if (!net || mp_resnet_init(net, 1, &e) < 0) {
		fprintf(stderr, "bench_step: %s\n", be ? e.msg : "no backend");
		return 1;
	}
	const size_t count = (size_t)n * 3 * size * size;
	float *x = malloc(count * sizeof *x);
	int32_t *labels = malloc((size_t)n * sizeof *labels);
	if (!x || !labels) {
		fprintf(stderr, "bench_step: out of memory\n");
		return 1;
	}
	mp_rng rng;
	mp_rng_seed(&rng, 7);
	for (size_t i = 0; i < count; i++)
		x[i] = (float)(255.0 * mp_rng_uniform(&rng) - 120.0);
	for (int i = 0; i < n; i++)
		labels[i] = (int32_t)mp_rng_below(&rng, (uint64_t)c.classes);

	if (step(net, x, labels, n, size, &e) < 0) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	memset(t_sum, 0, sizeof t_sum);
	const double t0 = now();
	for (int s = 0; s < steps; s++)
		if (step(net, x, labels, n, size, &e) < 0) {
			fprintf(stderr, "bench_step: %s\n", e.msg);
			return 1;
		}
	const double dt = (now() - t0) / steps;
	if (!strcmp(name, "cpu"))
		fprintf(stderr, "bench_step: OpenBLAS uses its %s kernels\n", mp_cpu_blas_core());
	printf("%s\t%d\t%d\t%.3f\t%.4f\n", name, n, threads, n / dt, dt);
	if (verbose) {
		double sum = 0;
		for (int i = 0; i < T_COUNT; i++) {
			fprintf(stderr, "bench_step: %-8s %8.4f s/step\n", t_name[i], t_sum[i] / steps);
			sum += t_sum[i] / steps;
		}
		fprintf(stderr, "bench_step: %-8s %8.4f s/step\n", "other", dt - sum);
	}
	mp_resnet_free(net);
	mp_backend_free(be);
	free(x);
	free(labels);
	return 0;
}
