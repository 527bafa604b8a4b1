/* Times steps of the reference network (mp_resnet_config_default: depth
 * 9, widths 32,64,128,256, shortcut A, 112 px) on any backend by name
 * (cpu, cpu-ref, cuda, auto), on random mean-subtracted images uploaded
 * every step, as mp-train and mp-eval do. MODE train (the default): forward
 * in training mode, loss, backward, SGD (mp_resnet_train_step); MODE
 * eval: the inference forward pass and the logits' download, as mp-eval's
 * (mp_resnet_predict). Either is a CUDA graph after its first step where
 * the backend has graphs. WARMUP untimed steps (cuDNN
 * chooses its algorithms in the first), more while the last of them
 * recorded a graph, then STEPS timed ones, ended by a download that waits
 * for the device. Prints one line:
 *   backend <tab> batch <tab> size <tab> images/s <tab> s/step <tab>
 *   forward GFLOP/image <tab> TFLOP/s (training: 3 x forward) <tab>
 *   precision <tab> mode
 * For scripts/device-check.sh; not a test.
 *
 * usage: bench_step BACKEND BATCH STEPS [SIZE [WARMUP [PRECISION [MODE]]]]
 * PRECISION: auto (default), fp32 or bf16, as --precision.
 *
 * Training steps alternate between the two input slots, the next batch's
 * copy to the device started while a step runs (mp_resnet_input_ready), as
 * mp-train does; BENCH_AHEAD=0 uploads each batch in its own step instead.
 * BENCH_AUGMENT=1 makes each batch in the step instead, from a plan, as
 * mp-train --augment backend does: AUG_IMAGES images of 128 x 128 kept
 * in the backend's memory, crops whose plans read 4 taps an axis (as the
 * recipe's scale of 128..240 does), the plans made up (random_plan.h).
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
#include "../op_timer.h"
#include "../random_plan.h"

/* BENCH_AUGMENT: the images kept, their side, and the plans' taps */
enum { AUG_IMAGES = 512, AUG_SIDE = 128, AUG_TAPS = 4 };

/* this process's CPU seconds (all threads): against the wall time it says
 * whether the host keeps the device waiting */
static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
	       (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* count steps as mp-train runs them (probabilities for its metrics
 * included): from the two input slots in turn, the other slot's batch
 * copied to the device while a step runs (mp_resnet_input_ready), unless
 * ahead is 0 (each step then uploads its own); or count of mp-eval's
 * batches. *k counts the steps so far (which slot is next). */
static int steps_of(mp_resnet *net, float *const x[2], const int32_t *labels, int n, int size,
		    int eval, int ahead, int planned, float *logits, int count, long *k,
		    mp_error *e)
{
	for (int i = 0; i < count; i++, (*k)++) {
		if (eval) {
			if (mp_resnet_predict(net, x[0], n, size, size, logits, e) < 0)
				return -1;
			continue;
		}
		const int cur = (int)(*k % 2);
		double loss;
		if (planned) {
			if (mp_resnet_train_start_plan(net, cur, labels, n, size, 0.0f, 0.1f, 0.9f,
						       5e-4f, e) < 0 ||
			    mp_resnet_train_finish(net, &loss, logits, e) < 0)
				return -1;
			continue;
		}
		if (ahead && *k == 0 && mp_resnet_input_ready(net, cur, n, size, size, e) < 0)
			return -1;
		if (mp_resnet_train_start(net, x[cur], labels, n, size, size, 0.0f, 0.1f, 0.9f, 5e-4f,
					  e) < 0 ||
		    (ahead && mp_resnet_input_ready(net, 1 - cur, n, size, size, e) < 0) ||
		    mp_resnet_train_finish(net, &loss, logits, e) < 0)
			return -1;
	}
	return 0;
}

/* BENCH_AUGMENT: AUG_IMAGES random images kept in the backend's memory,
 * and a plan for n crops of size in each input slot. */
static int keep_images(mp_resnet *net, int n, int size, mp_rng *rng, mp_error *e)
{
	const size_t image = (size_t)AUG_SIDE * AUG_SIDE * 3;
	uint8_t *px = malloc(image * AUG_IMAGES);
	int sizes[AUG_IMAGES][2];
	uint64_t first[AUG_IMAGES];
	if (!px)
		return mp_seterr(e, "out of memory");
	for (size_t b = 0; b < image * AUG_IMAGES; b++)
		px[b] = (uint8_t)mp_rng_next(rng);
	for (int i = 0; i < AUG_IMAGES; i++) {
		sizes[i][0] = sizes[i][1] = AUG_SIDE;
		first[i] = (uint64_t)i * image;
	}
	int rc = mp_resnet_keep_pixels(net, image * AUG_IMAGES, AUG_TAPS, e);
	if (rc == 0)
		rc = mp_resnet_put_pixels(net, 0, px, image * AUG_IMAGES, e);
	free(px);
	static const double mean[3] = {120, 115, 100};
	for (int k = 0; k < 2 && rc == 0; k++) {
		int32_t *plan = mp_resnet_plan(net, k, n, size, e);
		if (!plan)
			return -1;
		random_plan(plan, n, sizes, first, AUG_IMAGES, size, AUG_TAPS, 1, mean, rng);
	}
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 8) {
		fprintf(stderr, "usage: bench_step BACKEND BATCH STEPS [SIZE [WARMUP [PRECISION "
				"[MODE]]]]\n");
		return 2;
	}
	mp_resnet_config c;
	mp_resnet_config_default(&c);
	const char *name = argv[1];
	const int n = atoi(argv[2]), steps = atoi(argv[3]);
	const int size = argc >= 5 ? atoi(argv[4]) : c.input_size;
	const int warmup = argc >= 6 ? atoi(argv[5]) : 2;
	const char *precision = argc >= 7 ? argv[6] : "auto";
	const char *mode = argc >= 8 ? argv[7] : "train";
	const int eval = !strcmp(mode, "eval");
	if (!eval && strcmp(mode, "train")) {
		fprintf(stderr, "bench_step: MODE is train or eval, not '%s'\n", mode);
		return 2;
	}
	const char *ops_env = getenv("BENCH_OPS"), *ahead_env = getenv("BENCH_AHEAD");
	const char *aug_env = getenv("BENCH_AUGMENT");
	const int by_op = ops_env && *ops_env && strcmp(ops_env, "0");
	const int ahead = !(ahead_env && !strcmp(ahead_env, "0"));
	const int planned = aug_env && *aug_env && strcmp(aug_env, "0");
	if (planned && (eval || size > AUG_SIDE)) {
		fprintf(stderr, "bench_step: BENCH_AUGMENT makes training batches of crops of at "
				"most %d\n", AUG_SIDE);
		return 2;
	}
	if (n < 2 || steps < 1 || size < 8 || warmup < 0) {
		fprintf(stderr, "bench_step: bad batch, steps, size or warm-up count\n");
		return 2;
	}
	mp_error e;
	char desc[512];
	mp_backend *be = mp_backend_open(name, 0, -1, precision, desc, sizeof desc, &e);
	if (!be) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	fprintf(stderr, "bench_step: backend %s\n", desc);
	if (by_op && op_timer_install(be, 1) < 0) {
		fprintf(stderr, "bench_step: %s\n", mp_backend_error(be));
		return 1;
	}
	mp_resnet *net = mp_resnet_new(&c, be, &e);
	if (!net || mp_resnet_init(net, 1, &e) < 0) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	const size_t count = (size_t)n * 3 * size * size;
	mp_rng rng;
	mp_rng_seed(&rng, 7);
	if (planned && keep_images(net, n, size, &rng, &e) < 0) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	/* as mp-train's batches; with BENCH_AUGMENT the slots hold the plans */
	float *x[2] = {NULL, NULL};
	for (int k = 0; k < 2 && !planned; k++)
		x[k] = mp_resnet_input(net, k, n, size, size, &e);
	int32_t *labels = malloc((size_t)n * sizeof *labels);
	float *probe = malloc(mp_tensor_count(&mp_resnet_param(net, 0)->value) * sizeof *probe);
	float *logits = malloc((size_t)n * c.classes * sizeof *logits);
	if ((!planned && (!x[0] || !x[1])) || !labels || !probe || !logits) {
		fprintf(stderr, "bench_step: out of memory\n");
		return 1;
	}
	for (int k = 0; k < 2 && !planned; k++)
		for (size_t i = 0; i < count; i++)
			x[k][i] = (float)(255.0 * mp_rng_uniform(&rng) - 120.0);
	for (int i = 0; i < n; i++)
		labels[i] = (int32_t)mp_rng_below(&rng, (uint64_t)c.classes);

	const double tw = op_timer_now();
	long k = 0, rec_before, recorded, launched;
	/* then on, one at a time, until a step records no graph: each input
	 * slot's step is recorded once its shapes are settled, which may take
	 * more steps than WARMUP, and a recording in the timed steps would
	 * time the capture. A shape's first step runs op by op and records
	 * nothing, so until one has recorded, at least 3 steps (a shape's
	 * first, and its second from each input slot). */
	int extra = 0;
	if (warmup > 0 &&
	    steps_of(net, x, labels, n, size, eval, ahead, planned, logits, warmup - 1, &k, &e) < 0) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	for (int last = warmup > 0; last; extra++) {
		mp_resnet_graph_counts(net, !eval, &rec_before, &launched);
		if (steps_of(net, x, labels, n, size, eval, ahead, planned, logits, 1, &k, &e) < 0) {
			fprintf(stderr, "bench_step: %s\n", e.msg);
			return 1;
		}
		mp_resnet_graph_counts(net, !eval, &recorded, &launched);
		last = (recorded != rec_before || (recorded == 0 && warmup + extra < 3)) && extra < 8;
	}
	fprintf(stderr, "bench_step: %d warm-up steps (%d more than asked for) in %.2f s\n",
		warmup + (extra > 0 ? extra - 1 : 0), extra > 0 ? extra - 1 : 0, op_timer_now() - tw);
	mp_resnet_graph_counts(net, !eval, &rec_before, &launched);
	op_timer_reset();
	const double t0 = op_timer_now(), c0 = cpu_seconds();
	if (steps_of(net, x, labels, n, size, eval, ahead, planned, logits, steps, &k, &e) < 0) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	/* the SGD step may still run on a device: wait for it */
	if (mp_resnet_download(net, &mp_resnet_param(net, 0)->value, probe, &e) < 0) {
		fprintf(stderr, "bench_step: %s\n", e.msg);
		return 1;
	}
	const double dt = (op_timer_now() - t0) / steps;
	fprintf(stderr, "bench_step: %.2f ms/step wall, %.2f ms/step of CPU time\n", 1e3 * dt,
		1e3 * (cpu_seconds() - c0) / steps);
	const double fwd = mp_resnet_flops(net, size);
	mp_resnet_graph_counts(net, !eval, &recorded, &launched);
	fprintf(stderr, "bench_step: %s recorded as a graph %ld time(s), launched as one %ld "
			"time(s)\n",
		eval ? "inference passes" : "training steps", recorded, launched);
	if (recorded != rec_before)
		fprintf(stderr, "bench_step: warning: %ld graph(s) recorded in the timed steps: "
				"their capture is in the figure\n",
			recorded - rec_before);
	if (by_op)
		op_timer_report(steps);
	printf("%s\t%d\t%d\t%.1f\t%.5f\t%.4f\t%.3f\t%s\t%s\n", name, n, size, n / dt, dt,
	       fwd / 1e9, (eval ? 1.0 : 3.0) * fwd * n / dt / 1e12,
	       strstr(desc, ", bf16") ? "bf16" : "fp32", mode);
	mp_resnet_free(net);
	if (by_op)
		op_timer_release(be);
	mp_backend_free(be);
	free(labels);
	free(probe);
	free(logits);
	return 0;
}
