/* The training step recorded as a backend graph (mp_resnet_train_step and
 * the graph_begin/end/launch/free operations), on the CPU: the CPU
 * backends have no graphs, so the reference backend is wrapped in
 * tests/graph_recorder.h's recorder, which keeps the interface's rules.
 *
 * Checked: a network stepped through mp_resnet_train_step on the recorder
 * gives the same bits (loss, probabilities, every parameter, gradient,
 * momentum and running statistic) as the same network stepped with
 * mp_resnet_forward + _loss + _backward + _sgd on the plain backend, while
 * the rate changes every step, the labels and images change, an
 * evaluation pass reallocates the buffers, the batch size changes, a
 * launch is stale, recording fails (a warning, then op by op), and the
 * images come from elsewhere than mp_resnet_input; started and finished
 * in halves with the next batch loaded in between, as mp-train runs it;
 * inference passes (mp_resnet_predict) with the logits of forward +
 * logits, through weight changes and alternating sizes; and that the
 * graphs are really used (recordings and launches counted). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "mp_augment.h"
#include "mp_resnet.h"
#include "../graph_recorder.h"

/* ---- the tests ----------------------------------------------------------------------- */

static mp_rng rng;

enum { N = 3, S = 20, CLASSES = 10 };

typedef struct {
	mp_backend *be;
	mp_resnet *net;
} side;

static void small_config(mp_resnet_config *c, char shortcut)
{
	mp_resnet_config_default(c);
	c->depth = 2; /* identity blocks as well as stage transitions */
	c->widths[0] = 4;
	c->widths[1] = 8;
	c->widths[2] = 8;
	c->widths[3] = 12;
	c->shortcut = shortcut;
	c->classes = CLASSES;
	c->input_size = S;
}

/* The reference backend without the fused inference convolutions (as a
 * backend that lacks them), for both sides. */
static mp_backend_ops unfused_graph, unfused_plain;

static void unfuse(mp_backend *be, mp_backend_ops *table)
{
	*table = *be->ops;
	table->conv_bn_prepare = NULL;
	table->conv_bn_forward_infer = NULL;
	be->ops = table;
}

/* The same network (seed 5) on the recorder and on the plain reference
 * backend; unfused: both without conv_bn_forward_infer. */
static void make_pair_with(char shortcut, int unfused, side *graph, side *plain)
{
	mp_resnet_config c;
	small_config(&c, shortcut);
	mp_error e;
	graph->be = mp_backend_cpu_new(0);
	plain->be = mp_backend_cpu_new(0);
	assert_non_null(graph->be);
	assert_non_null(plain->be);
	if (unfused) {
		unfuse(graph->be, &unfused_graph);
		unfuse(plain->be, &unfused_plain);
	}
	recorder_install(graph->be);
	graph->net = mp_resnet_new(&c, graph->be, &e);
	plain->net = mp_resnet_new(&c, plain->be, &e);
	assert_non_null(graph->net);
	assert_non_null(plain->net);
	assert_int_equal(mp_resnet_init(graph->net, 5, &e), 0);
	assert_int_equal(mp_resnet_init(plain->net, 5, &e), 0);
}

static void make_pair(char shortcut, side *graph, side *plain)
{
	make_pair_with(shortcut, 0, graph, plain);
}

static void free_pair(side *graph, side *plain)
{
	mp_resnet_free(graph->net);
	mp_resnet_free(plain->net);
	mp_backend_free(graph->be);
	mp_backend_free(plain->be);
}

static void random_batch(float *x, int32_t *labels, int n)
{
	for (size_t i = 0; i < (size_t)n * 3 * S * S; i++)
		x[i] = (float)(4 * mp_rng_uniform(&rng) - 2);
	for (int i = 0; i < n; i++)
		labels[i] = (int32_t)mp_rng_below(&rng, CLASSES);
}

/* One step of both: through mp_resnet_train_step (images in its input
 * buffer unless elsewhere is set) and through the four calls; the same
 * loss and probabilities, to the bit. */
static void step_both(side *graph, side *plain, int n, float lr, int elsewhere)
{
	mp_error e;
	float *x = elsewhere ? malloc((size_t)n * 3 * S * S * sizeof *x)
			     : mp_resnet_input(graph->net, 0, n, S, S, &e);
	assert_non_null(x);
	int32_t labels[8];
	random_batch(x, labels, n);
	float pg[8 * CLASSES], pp[8 * CLASSES];
	double lg, lp = 0; /* clang cannot tell that fail_msg does not return */
	if (mp_resnet_train_step(graph->net, x, labels, n, S, S, 0.1f, lr, 0.9f, 5e-4f, &lg, pg,
				 &e) < 0)
		fail_msg("train_step: %s", e.msg);
	if (mp_resnet_forward(plain->net, x, n, S, S, 1, &e) < 0 ||
	    mp_resnet_loss(plain->net, labels, 0.1f, &lp, pp, &e) < 0 ||
	    mp_resnet_backward(plain->net, &e) < 0 || mp_resnet_sgd(plain->net, lr, 0.9f, 5e-4f, &e) < 0)
		fail_msg("four calls: %s", e.msg);
	if (lg != lp)
		fail_msg("loss %.17g against %.17g", lg, lp);
	assert_memory_equal(pg, pp, (size_t)n * CLASSES * sizeof *pg);
	if (elsewhere)
		free(x);
}

static float *download(mp_resnet *net, const mp_tensor *t)
{
	float *h = malloc(mp_tensor_count(t) * sizeof *h);
	mp_error e;
	assert_non_null(h);
	if (mp_resnet_download(net, t, h, &e) < 0)
		fail_msg("download: %s", e.msg);
	return h;
}

/* Every parameter, running statistic, gradient and momentum the same. */
static void same_state(side *graph, side *plain)
{
	for (int i = 0; i < mp_resnet_param_count(graph->net); i++) {
		mp_param *a = mp_resnet_param(graph->net, i), *b = mp_resnet_param(plain->net, i);
		const mp_tensor *ta[3] = {&a->value, &a->grad, &a->momentum};
		const mp_tensor *tb[3] = {&b->value, &b->grad, &b->momentum};
		for (int k = 0; k < (a->kind == MP_PARAM_WEIGHT ? 3 : 1); k++) {
			float *x = download(graph->net, ta[k]), *y = download(plain->net, tb[k]);
			if (memcmp(x, y, mp_tensor_count(ta[k]) * sizeof *x))
				fail_msg("%s (%s) differs", a->name,
					 k == 0 ? "value" : k == 1 ? "gradient" : "momentum");
			free(x);
			free(y);
		}
	}
}

static void counts(const side *graph, long recorded, long launched)
{
	long r, l;
	mp_resnet_graph_counts(graph->net, 1, &r, &l);
	if (r != recorded || l != launched)
		fail_msg("recorded %ld, launched %ld; expected %ld and %ld", r, l, recorded,
			 launched);
	assert_int_equal(rec.launches, launched);
}

/* The first step runs op by op, the second is recorded and launched, the
 * rest launched; each with its own rate, labels and images. */
static void recorded_step_same_bits(void **state)
{
	(void)state;
	for (char sc = 'A'; sc <= 'B'; sc++) {
		side g, p;
		make_pair(sc, &g, &p);
		const float rates[6] = {0.1f, 0.05f, 0.2f, 0.01f, 0.1f, 0.0f};
		for (int s = 0; s < 6; s++)
			step_both(&g, &p, N, rates[s], 0);
		counts(&g, 1, 5);
		same_state(&g, &p);
		free_pair(&g, &p);
	}
}

/* An evaluation pass reallocates the buffers and another batch size
 * reshapes them: each is a new layout, stepped once op by op and then
 * recorded again. */
static void rerecorded_after_eval_and_new_batch(void **state)
{
	(void)state;
	side g, p;
	make_pair('A', &g, &p);
	step_both(&g, &p, N, 0.1f, 0);
	step_both(&g, &p, N, 0.1f, 0);
	counts(&g, 1, 1);
	mp_error e;
	float *x = malloc((size_t)N * 3 * S * S * sizeof *x), lg[N * CLASSES], lp[N * CLASSES];
	int32_t labels[N];
	random_batch(x, labels, N);
	assert_int_equal(mp_resnet_forward(g.net, x, N, S, S, 0, &e), 0);
	assert_int_equal(mp_resnet_forward(p.net, x, N, S, S, 0, &e), 0);
	assert_int_equal(mp_resnet_logits(g.net, lg, &e), 0);
	assert_int_equal(mp_resnet_logits(p.net, lp, &e), 0);
	assert_memory_equal(lg, lp, sizeof lg);
	free(x);
	step_both(&g, &p, N, 0.05f, 0); /* op by op */
	counts(&g, 1, 1);
	step_both(&g, &p, N, 0.05f, 0); /* recorded */
	step_both(&g, &p, N, 0.05f, 0);
	counts(&g, 2, 3);
	step_both(&g, &p, 5, 0.02f, 0); /* a batch of 5: op by op, then recorded */
	step_both(&g, &p, 5, 0.02f, 0);
	step_both(&g, &p, N, 0.02f, 0); /* back to 3 */
	step_both(&g, &p, N, 0.02f, 0);
	counts(&g, 4, 5);
	same_state(&g, &p);
	free_pair(&g, &p);
}

/* A launch the backend reports stale (its memory replaced) runs the step
 * op by op, and the next is recorded anew. */
static void stale_graph_rerecorded(void **state)
{
	(void)state;
	side g, p;
	make_pair('B', &g, &p);
	step_both(&g, &p, N, 0.1f, 0);
	step_both(&g, &p, N, 0.1f, 0);
	rec.stale_next = 1;
	step_both(&g, &p, N, 0.1f, 0);
	counts(&g, 1, 1);
	step_both(&g, &p, N, 0.1f, 0);
	counts(&g, 2, 2);
	same_state(&g, &p);
	free_pair(&g, &p);
}

/* Recording that fails leaves a warning and steps op by op, with the same
 * results; images from elsewhere are copied into the input buffer. */
static void failed_recording_and_foreign_images(void **state)
{
	(void)state;
	side g, p;
	make_pair('A', &g, &p);
	rec.fail_begin = 1;
	for (int s = 0; s < 4; s++)
		step_both(&g, &p, N, 0.1f, s & 1);
	counts(&g, 0, 0);
	assert_int_equal(rec.begins, 1); /* tried once, then never again */
	same_state(&g, &p);
	free_pair(&g, &p);

	make_pair('A', &g, &p);
	for (int s = 0; s < 4; s++)
		step_both(&g, &p, N, 0.1f, 1);
	counts(&g, 1, 3);
	same_state(&g, &p);
	mp_resnet_use_graphs(g.net, 0);
	step_both(&g, &p, N, 0.1f, 0);
	counts(&g, 1, 3);
	same_state(&g, &p);
	free_pair(&g, &p);
}

/* The step that the graph side ran (loss lg, probabilities pg, rate lr),
 * run on the plain side with the four calls on images x and labels: the
 * same bits. */
static void four_calls_match(side *plain, const float *x, const int32_t *labels, float lr,
			     double lg, const float *pg, int step)
{
	mp_error e;
	double lp = 0; /* clang cannot tell that fail_msg does not return */
	float pp[N * CLASSES];
	if (mp_resnet_forward(plain->net, x, N, S, S, 1, &e) < 0 ||
	    mp_resnet_loss(plain->net, labels, 0.1f, &lp, pp, &e) < 0 ||
	    mp_resnet_backward(plain->net, &e) < 0 ||
	    mp_resnet_sgd(plain->net, lr, 0.9f, 5e-4f, &e) < 0)
		fail_msg("four calls: %s", e.msg);
	if (lg != lp)
		fail_msg("step %d: loss %.17g against %.17g", step, lg, lp);
	assert_memory_equal(pg, pp, sizeof pp);
}

/* The network's two input slots of N images in in[0] and in[1], and a
 * new array of one batch (for the copy that the other side computes on). */
static float *two_slots(side *g, float *in[2])
{
	mp_error e;
	for (int slot = 0; slot < 2; slot++) {
		in[slot] = mp_resnet_input(g->net, slot, N, S, S, &e);
		assert_non_null(in[slot]);
	}
	float *x = malloc((size_t)N * 3 * S * S * sizeof *x);
	assert_non_null(x);
	return x;
}

/* As mp-train runs it: each step started from one input slot, the next
 * batch loaded into the other slot and the caller's labels reused while it
 * runs (the recorder runs a launched graph only at graph_wait, so a step
 * that read any of these late would see them changed), then finished. Two
 * recordings, one per slot; the same bits as the four calls. And one step
 * at a time. */
static void pipelined_steps(void **state)
{
	(void)state;
	side g, p;
	make_pair('B', &g, &p);
	mp_error e;
	float *in[2], pg[N * CLASSES];
	const size_t batch = (size_t)N * 3 * S * S;
	float *x = two_slots(&g, in);
	int32_t lab[N], cur[N];
	random_batch(in[0], lab, N);
	const float rates[6] = {0.1f, 0.05f, 0.2f, 0.01f, 0.1f, 0.0f};
	for (int s = 0; s < 6; s++) {
		memcpy(cur, lab, sizeof cur);
		memcpy(x, in[s % 2], batch * sizeof *x);
		if (mp_resnet_train_start(g.net, in[s % 2], lab, N, S, S, 0.1f, rates[s], 0.9f, 5e-4f,
					  &e) < 0)
			fail_msg("start %d: %s", s + 1, e.msg);
		random_batch(in[(s + 1) % 2], lab, N); /* while it runs */
		double lg;
		if (mp_resnet_train_finish(g.net, &lg, pg, &e) < 0)
			fail_msg("finish %d: %s", s + 1, e.msg);
		four_calls_match(&p, x, cur, rates[s], lg, pg, s + 1);
	}
	counts(&g, 2, 5);
	same_state(&g, &p);

	double loss;
	/* while a launched step runs, the calls that would race with its
	 * graph over the network's tensors are refused */
	assert_int_equal(mp_resnet_train_start(g.net, in[0], lab, N, S, S, 0.1f, 0.05f, 0.9f, 5e-4f,
						&e), 0);
	counts(&g, 2, 6);
	assert_int_equal(mp_resnet_forward(g.net, in[1], N, S, S, 1, &e), -1);
	assert_string_equal(e.msg, "a training step is running (mp_resnet_train_finish first)");
	assert_int_equal(mp_resnet_loss(g.net, lab, 0, &loss, NULL, &e), -1);
	assert_string_equal(e.msg, "a training step is running (mp_resnet_train_finish first)");
	mp_tensor *w0 = &mp_resnet_param(g.net, 0)->value;
	float *host = calloc(mp_tensor_count(w0), sizeof *host);
	assert_non_null(host);
	assert_int_equal(mp_resnet_upload(g.net, w0, host, &e), -1);
	assert_string_equal(e.msg, "a training step is running (mp_resnet_train_finish first)");
	free(host);
	assert_int_equal(mp_resnet_backward(g.net, &e), -1);
	assert_int_equal(mp_resnet_sgd(g.net, 0.1f, 0.9f, 0, &e), -1);
	assert_string_equal(e.msg, "a training step is running (mp_resnet_train_finish first)");
	assert_int_equal(mp_resnet_train_finish(g.net, &loss, NULL, &e), 0);
	assert_int_equal(mp_resnet_train_start(g.net, in[0], lab, N, S, S, 0, 0.1f, 0.9f, 0, &e), 0);
	assert_int_equal(mp_resnet_train_start(g.net, in[1], lab, N, S, S, 0, 0.1f, 0.9f, 0, &e), -1);
	assert_string_equal(e.msg, "a training step was started and not finished");
	assert_int_equal(mp_resnet_train_finish(g.net, &loss, NULL, &e), 0);
	assert_int_equal(mp_resnet_train_finish(g.net, &loss, NULL, &e), -1);
	assert_string_equal(e.msg, "no training step to finish");
	/* freeing the network waits for a step still running */
	assert_int_equal(mp_resnet_train_start(g.net, in[1], lab, N, S, S, 0, 0.1f, 0.9f, 0, &e), 0);
	free(x);
	free_pair(&g, &p);
}

/* As mp-train runs it on a GPU: after the next batch is loaded into the
 * other slot, mp_resnet_input_ready starts its copy to the device
 * (upload_ahead, which the recorder runs after the step before it and
 * checks for races), and the step from that slot reads the copy instead
 * of uploading. The same bits as the four calls; the copies really made
 * and used; the running step's slot refused; a slot asked for again
 * (mp_resnet_input) and refilled is uploaded, not read from the old copy. */
static void steps_with_batches_copied_ahead(void **state)
{
	(void)state;
	side g, p;
	make_pair('A', &g, &p);
	mp_error e;
	float *in[2], pg[N * CLASSES];
	const size_t batch = (size_t)N * 3 * S * S;
	float *x = two_slots(&g, in);
	int32_t lab[N], cur[N];
	random_batch(in[0], lab, N);
	assert_int_equal(mp_resnet_input_ready(g.net, 0, N, S, S, &e), 0);
	for (int s = 0; s < 7; s++) {
		const int c = s % 2;
		memcpy(cur, lab, sizeof cur);
		memcpy(x, in[c], batch * sizeof *x);
		if (s == 6) { /* asked for again and refilled: the old copy is not used */
			assert_ptr_equal(mp_resnet_input(g.net, c, N, S, S, &e), in[c]);
			random_batch(in[c], cur, N);
			memcpy(x, in[c], batch * sizeof *x);
		}
		if (mp_resnet_train_start(g.net, in[c], cur, N, S, S, 0.1f, 0.05f, 0.9f, 5e-4f, &e) < 0)
			fail_msg("start %d: %s", s + 1, e.msg);
		if (s >= 3 && s <= 5) { /* launched: its own slot is refused */
			assert_int_equal(mp_resnet_input_ready(g.net, c, N, S, S, &e), -1);
			assert_string_equal(e.msg, c ? "input slot 1 is read by the step that runs"
						    : "input slot 0 is read by the step that runs");
		}
		random_batch(in[1 - c], lab, N); /* while it runs */
		if (s < 6)
			assert_int_equal(mp_resnet_input_ready(g.net, 1 - c, N, S, S, &e), 0);
		double lg;
		if (mp_resnet_train_finish(g.net, &lg, pg, &e) < 0)
			fail_msg("finish %d: %s", s + 1, e.msg);
		four_calls_match(&p, x, cur, 0.05f, lg, pg, s + 1);
	}
	/* seven copies ahead; steps 3 to 6 launched (the first two op by op,
	 * the copies' buffers being new), the seventh, uploaded, op by op */
	assert_int_equal(rec.aheads, 7);
	counts(&g, 2, 4);
	/* slot 1's copy was used by step 6: refilled by hand, it is uploaded */
	random_batch(in[1], cur, N);
	memcpy(x, in[1], batch * sizeof *x);
	double lg;
	assert_int_equal(mp_resnet_train_step(g.net, in[1], cur, N, S, S, 0.1f, 0.05f, 0.9f, 5e-4f,
					      &lg, pg, &e), 0);
	four_calls_match(&p, x, cur, 0.05f, lg, pg, 8);
	same_state(&g, &p);
	assert_int_equal(mp_resnet_input_ready(g.net, 2, N, S, S, &e), -1);
	assert_string_equal(e.msg, "input slot 2 holds no batch of 3 images of 20x20 "
				   "(mp_resnet_input makes it)");
	assert_int_equal(mp_resnet_input_ready(g.net, 0, 99, S, S, &e), -1);
	free(x);
	free_pair(&g, &p);
}

/* With the training set kept in backend memory, as mp-train --augment
 * backend runs it: each step's plan is written into one input slot while
 * the step from the other runs, and the step's images are made by the
 * backend (augment_train, recorded in the graph and reading the plan when
 * it runs). The same bits as the four calls given the loader's images of
 * the same draws; graphs really recorded and launched; the wrong slot or
 * a plan without a kept set refused. */
static void steps_from_plans(void **state)
{
	(void)state;
	side g, p;
	make_pair('A', &g, &p);
	mp_error e;
	static const int sizes[3][2] = {{24, 24}, {40, 22}, {20, 60}};
	const mp_augment_train_opts aug = {20, 30, S, {100.5, 90.0, 80.25}};
	mp_image img[3];
	uint64_t first[3], bytes = 0;
	int taps = 1;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(mp_image_alloc(&img[i], sizes[i][0], sizes[i][1], &e), 0);
		for (size_t k = 0; k < (size_t)sizes[i][0] * sizes[i][1] * 3; k++)
			img[i].px[k] = (uint8_t)mp_rng_next(&rng);
		first[i] = bytes;
		bytes += (uint64_t)sizes[i][0] * sizes[i][1] * 3;
		const int t = mp_augment_plan_taps(sizes[i][0], sizes[i][1], &aug);
		taps = t > taps ? t : taps;
	}
	assert_null(mp_resnet_plan(g.net, 0, N, S, &e));
	assert_string_equal(e.msg, "no training set kept for a plan");
	assert_int_equal(mp_resnet_keep_pixels(g.net, bytes, taps, &e), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(mp_resnet_put_pixels(g.net, first[i], img[i].px,
						      (size_t)sizes[i][0] * sizes[i][1] * 3, &e), 0);
	assert_int_equal(mp_resnet_put_pixels(g.net, bytes - 1, img[0].px, 2, &e), -1);
	int32_t *plan[2];
	for (int k = 0; k < 2; k++)
		assert_non_null(plan[k] = mp_resnet_plan(g.net, k, N, S, &e));
	const size_t batch = (size_t)N * 3 * S * S;
	float *x[2] = {malloc(batch * sizeof(float)), malloc(batch * sizeof(float))};
	float *scratch = malloc(sizeof(float) * S * (size_t)taps);
	int32_t lab[2][N];
	/* batch b's plan into slot c, and the loader's images of it into x[c] */
	int serial = 0;
#define FILL(c)                                                                                \
	do {                                                                                   \
		mp_augment_plan_head(plan[c], aug.mean);                                       \
		for (int i = 0; i < N; i++, serial++) {                                        \
			const int im = serial % 3;                                             \
			mp_rng r1, r2;                                                         \
			mp_augment_rng(&r1, 3, 0, (uint64_t)serial);                           \
			r2 = r1;                                                               \
			assert_int_equal(mp_augment_train(&img[im], &aug, &r1,                 \
							  x[c] + (size_t)i * 3 * S * S, NULL, &e), 0); \
			assert_int_equal(mp_augment_train_plan(sizes[im][0], sizes[im][1],     \
							       first[im], &aug, &r2, taps,     \
							       plan[c] + MP_AUGMENT_PLAN_HEAD + \
								   (size_t)i *                 \
									   MP_AUGMENT_PLAN_IMAGE(S, taps), \
							       scratch, NULL, &e), 0);         \
			lab[c][i] = (int32_t)mp_rng_below(&rng, CLASSES);                      \
		}                                                                              \
	} while (0)
	FILL(0);
	float pg[N * CLASSES];
	for (int s = 0; s < 6; s++) {
		const int c = s % 2;
		if (mp_resnet_train_start_plan(g.net, c, lab[c], N, S, 0.1f, 0.05f, 0.9f, 5e-4f, &e) < 0)
			fail_msg("start %d: %s", s + 1, e.msg);
		float *cur = x[c];
		int32_t cur_lab[N];
		memcpy(cur_lab, lab[c], sizeof cur_lab);
		FILL(1 - c); /* while it runs */
		double lg;
		if (mp_resnet_train_finish(g.net, &lg, pg, &e) < 0)
			fail_msg("finish %d: %s", s + 1, e.msg);
		four_calls_match(&p, cur, cur_lab, 0.05f, lg, pg, s + 1);
	}
#undef FILL
	/* the first op by op, then one recording per slot, all five launched */
	counts(&g, 2, 5);
	same_state(&g, &p);
	assert_int_equal(mp_resnet_train_start_plan(g.net, 2, lab[0], N, S, 0, 0.1f, 0.9f, 0, &e), -1);
	assert_int_equal(mp_resnet_train_start_plan(g.net, 0, lab[0], N + 50, S, 0, 0.1f, 0.9f, 0,
						    &e), -1);
	assert_non_null(strstr(e.msg, "holds no plan"));
	for (int i = 0; i < 3; i++)
		mp_image_free(&img[i]);
	free(x[0]);
	free(x[1]);
	free(scratch);
	free_pair(&g, &p);
}

/* One inference pass of both: mp_resnet_predict on the recorder, forward +
 * logits on the plain backend, size x size images; the same logits. */
static void predict_both(side *graph, side *plain, int size)
{
	mp_error e;
	const size_t count = (size_t)N * 3 * size * size;
	float *x = malloc(count * sizeof *x), lg[N * CLASSES], lp[N * CLASSES];
	assert_non_null(x);
	for (size_t i = 0; i < count; i++)
		x[i] = (float)(4 * mp_rng_uniform(&rng) - 2);
	if (mp_resnet_predict(graph->net, x, N, size, size, lg, &e) < 0)
		fail_msg("predict: %s", e.msg);
	if (mp_resnet_forward(plain->net, x, N, size, size, 0, &e) < 0 ||
	    mp_resnet_logits(plain->net, lp, &e) < 0)
		fail_msg("forward: %s", e.msg);
	assert_memory_equal(lg, lp, sizeof lg);
	free(x);
}

static void predict_counts(const side *graph, long recorded, long launched)
{
	long r, l;
	mp_resnet_graph_counts(graph->net, 0, &r, &l);
	if (r != recorded || l != launched)
		fail_msg("inference: recorded %ld, launched %ld; expected %ld and %ld", r, l, recorded,
			 launched);
}

/* Inference passes as graphs: recorded at the second pass, launched after;
 * recorded anew after a training step (new weights, new buffers); passes
 * of alternating sizes (multiscale) each recorded once their buffers
 * stop growing, then launched in turn. Always the logits of forward +
 * logits. */
static void predict_recorded(void **state)
{
	(void)state;
	/* with the fused inference convolutions (whose preparation cannot be
	 * recorded) and without them, as on a backend that lacks them */
	for (int unfused = 0; unfused < 2; unfused++) {
		side g, p;
		make_pair_with('A', unfused, &g, &p);
		assert_int_equal(g.be->ops->conv_bn_forward_infer == NULL, unfused);
		for (int i = 0; i < 4; i++)
			predict_both(&g, &p, S);
		predict_counts(&g, 1, 3);
		step_both(&g, &p, N, 0.1f, 0);
		predict_both(&g, &p, S); /* new buffers (and weights to prepare) */
		predict_both(&g, &p, S);
		predict_both(&g, &p, S);
		predict_counts(&g, 2, 5);
		/* S + 4 grows the buffers (S's recording goes), S then fits in
		 * them: both op by op once, then recorded, then launched */
		for (int i = 0; i < 8; i++)
			predict_both(&g, &p, i % 2 ? S : S + 4);
		predict_counts(&g, 4, 11);
		same_state(&g, &p);
		free_pair(&g, &p);
	}
}

/* A recording that fails turns off only its own kind: training steps are
 * still recorded after an inference pass's recording failed, and inference
 * passes after a training step's. */
static void failed_recordings_apart(void **state)
{
	(void)state;
	side g, p;
	make_pair('A', &g, &p);
	predict_both(&g, &p, S); /* op by op: the shape's first */
	rec.fail_begin = 1;
	predict_both(&g, &p, S); /* its recording refused: op by op from now on */
	rec.fail_begin = 0;
	predict_both(&g, &p, S);
	predict_counts(&g, 0, 0);
	for (int s = 0; s < 4; s++)
		step_both(&g, &p, N, 0.1f, 1);
	counts(&g, 1, 3);
	predict_both(&g, &p, S);
	predict_both(&g, &p, S);
	predict_counts(&g, 0, 0);
	same_state(&g, &p);
	free_pair(&g, &p);

	make_pair('A', &g, &p);
	step_both(&g, &p, N, 0.1f, 1);
	rec.fail_begin = 1;
	step_both(&g, &p, N, 0.1f, 1);
	rec.fail_begin = 0;
	step_both(&g, &p, N, 0.1f, 1);
	counts(&g, 0, 0);
	for (int i = 0; i < 3; i++)
		predict_both(&g, &p, S);
	predict_counts(&g, 1, 2);
	same_state(&g, &p);
	free_pair(&g, &p);
}

/* The recorder holds the interface's rules: host memory from elsewhere,
 * or an allocation, ends a recording with the reason. */
static void recorder_rules(void **state)
{
	(void)state;
	mp_backend *be = mp_backend_cpu_new(0);
	assert_non_null(be);
	recorder_install(be);
	mp_tensor t;
	assert_int_equal(be->ops->alloc(be, &t, 1, 1, 1, 2), 0);
	float stack[2] = {1, 2};
	void *graph;
	assert_int_equal(be->ops->graph_begin(be), 0);
	assert_int_equal(be->ops->upload(be, &t, stack), -1);
	assert_int_equal(be->ops->graph_end(be, &graph), -1);
	assert_null(graph);
	assert_string_equal(mp_backend_error(be),
			    "upload: host memory not from host_alloc while recording");
	mp_tensor u;
	assert_int_equal(be->ops->graph_begin(be), 0);
	assert_int_equal(be->ops->alloc(be, &u, 1, 1, 1, 1), -1);
	assert_int_equal(be->ops->graph_end(be, &graph), -1);
	assert_string_equal(mp_backend_error(be), "alloc while recording");
	/* and a recording runs nothing until launched, then at every launch */
	float *h = be->ops->host_alloc(be, 2 * sizeof *h);
	assert_non_null(h);
	assert_int_equal(be->ops->fill(be, &t, 0), 0);
	h[0] = 3, h[1] = 4;
	assert_int_equal(be->ops->graph_begin(be), 0);
	assert_int_equal(be->ops->upload(be, &t, h), 0);
	assert_int_equal(be->ops->graph_end(be, &graph), 0);
	float got[2];
	assert_int_equal(be->ops->download(be, &t, got), 0);
	assert_true(got[0] == 0 && got[1] == 0);
	assert_int_equal(be->ops->graph_launch(be, graph), 0);
	assert_int_equal(be->ops->download(be, &t, got), 0);
	assert_true(got[0] == 3 && got[1] == 4);
	h[0] = 5;
	assert_int_equal(be->ops->graph_launch(be, graph), 0);
	assert_int_equal(be->ops->download(be, &t, got), 0);
	assert_true(got[0] == 5);
	be->ops->graph_free(be, graph);
	be->ops->host_free(be, h);
	be->ops->release(be, &t);
	mp_backend_free(be);
}

/* mp_resnet_train_step checks the labels itself (a recorded step does
 * not), on any backend. */
static void train_step_refuses_bad_labels(void **state)
{
	(void)state;
	side g, p;
	make_pair('A', &g, &p);
	mp_error e;
	float *x = mp_resnet_input(g.net, 0, N, S, S, &e);
	int32_t labels[N];
	double loss;
	for (int s = 0; s < 3; s++) {
		random_batch(x, labels, N);
		labels[1] = s == 2 ? CLASSES : 1;
		int rc = mp_resnet_train_step(g.net, x, labels, N, S, S, 0, 0.1f, 0.9f, 0, &loss, NULL,
					      &e);
		if (s < 2)
			assert_int_equal(rc, 0);
		else {
			assert_int_equal(rc, -1);
			assert_string_equal(e.msg, "labels[1] is 10, expected 0..9");
		}
	}
	free_pair(&g, &p);
}

static int setup(void **state)
{
	(void)state;
	mp_rng_seed(&rng, 0x6a4f);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(recorded_step_same_bits),
		cmocka_unit_test(rerecorded_after_eval_and_new_batch),
		cmocka_unit_test(stale_graph_rerecorded),
		cmocka_unit_test(failed_recording_and_foreign_images),
		cmocka_unit_test(pipelined_steps),
		cmocka_unit_test(steps_with_batches_copied_ahead),
		cmocka_unit_test(steps_from_plans),
		cmocka_unit_test(predict_recorded),
		cmocka_unit_test(failed_recordings_apart),
		cmocka_unit_test(recorder_rules),
		cmocka_unit_test(train_step_refuses_bad_labels),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
