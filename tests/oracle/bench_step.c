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

#include "backend.h"
#include "cpu/cpu.h"
#include "mp_resnet.h"
#include "../op_timer.h"

static int eval_only; /* BENCH_EVAL: a step is an evaluation forward pass */

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
		op_timer_install(be, 0);
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
	op_timer_reset();
	const double t0 = op_timer_now();
	for (int s = 0; s < steps; s++)
		if (step(net, x, labels, n, size, &e) < 0) {
			fprintf(stderr, "bench_step: %s\n", e.msg);
			return 1;
		}
	const double dt = (op_timer_now() - t0) / steps;
	if (!strcmp(name, "cpu"))
		fprintf(stderr, "bench_step: OpenBLAS uses its %s kernels\n", mp_cpu_blas_core());
	printf("%s\t%d\t%d\t%.3f\t%.4f\n", name, n, threads, n / dt, dt);
	if (verbose)
		op_timer_report(steps);
	mp_resnet_free(net);
	if (verbose)
		op_timer_release(be);
	mp_backend_free(be);
	free(x);
	free(labels);
	return 0;
}
