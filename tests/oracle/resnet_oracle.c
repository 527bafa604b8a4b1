/* Runs two SGD steps of a tiny network on the CPU backend and writes every
 * number the PyTorch oracle compares into one safetensors file: the initial
 * weights, the input and labels, the logits, loss and probabilities, every
 * gradient, the running statistics, and the weights after each step.
 *
 * usage: resnet_oracle A|B OUT.safetensors */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "mp_resnet.h"
#include "mp_safetensors.h"
#include "mp_weights.h"

enum { N = 4, SIZE = 32, CLASSES = 10, MAXT = 512 };

static float *stash[MAXT];
static int nstash;

/* Adds a copy of a network tensor under name. */
static void add(mp_st_builder *b, mp_resnet *net, const char *name, const mp_param *p,
		const mp_tensor *t)
{
	mp_error e;
	float *h = malloc(mp_tensor_count(t) * sizeof *h);
	if (!h || nstash == MAXT || mp_resnet_download(net, t, h, &e) < 0) {
		fprintf(stderr, "resnet_oracle: cannot read %s\n", name);
		exit(1);
	}
	stash[nstash++] = h;
	int64_t shape[4];
	for (int i = 0; i < p->ndim; i++)
		shape[i] = p->shape[i];
	if (mp_st_builder_add(b, name, MP_ST_F32, shape, p->ndim, h, &e) < 0) {
		fprintf(stderr, "resnet_oracle: %s\n", e.msg);
		exit(1);
	}
}

static void add_all(mp_st_builder *b, mp_resnet *net, const char *prefix, int grads)
{
	for (int i = 0; i < mp_resnet_param_count(net); i++) {
		mp_param *p = mp_resnet_param(net, i);
		if (grads && p->kind != MP_PARAM_WEIGHT)
			continue;
		char name[160];
		snprintf(name, sizeof name, "%s%s", prefix, p->name);
		add(b, net, name, p, grads ? &p->grad : &p->value);
	}
}

static void check(int rc, const mp_error *e)
{
	if (rc < 0) {
		fprintf(stderr, "resnet_oracle: %s\n", e->msg);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc != 3 || (strcmp(argv[1], "A") && strcmp(argv[1], "B"))) {
		fprintf(stderr, "usage: resnet_oracle A|B OUT.safetensors\n");
		return 2;
	}
	mp_error e;
	mp_resnet_config c;
	mp_resnet_config_default(&c);
	c.depth = 1;
	c.widths[0] = 4;
	c.widths[1] = 8;
	c.widths[2] = 8;
	c.widths[3] = 12;
	c.shortcut = argv[1][0];
	c.classes = CLASSES;
	c.input_size = SIZE;
	mp_backend *be = mp_backend_cpu_new(0);
	mp_resnet *net = be ? mp_resnet_new(&c, be, &e) : NULL;
	if (!net) {
		fprintf(stderr, "resnet_oracle: %s\n", be ? e.msg : "no CPU backend");
		return 1;
	}
	check(mp_resnet_init(net, 1234, &e), &e);

	static float input[2][N * 3 * SIZE * SIZE];
	int32_t labels[2][N];
	mp_rng r;
	mp_rng_seed(&r, 99);
	for (int s = 0; s < 2; s++) {
		/* mean-subtracted pixels span about -128..128 */
		for (int i = 0; i < N * 3 * SIZE * SIZE; i++)
			input[s][i] = (float)(mp_rng_uniform(&r) * 255.0 - 127.5);
		for (int i = 0; i < N; i++)
			labels[s][i] = (int32_t)mp_rng_below(&r, CLASSES);
	}
	const float lr = 0.1f, momentum = 0.9f, wd = 5e-4f, smoothing = 0.1f;

	mp_st_builder b;
	mp_st_builder_init(&b);
	add_all(&b, net, "init.", 0);
	for (int step = 0; step < 2; step++) {
		double loss;
		/* one buffer per step: the builder refers to the data until written */
		static float logits_all[2][N * CLASSES], probs_all[2][N * CLASSES];
		float *logits = logits_all[step], *probs = probs_all[step];
		check(mp_resnet_forward(net, input[step], N, SIZE, SIZE, 1, &e), &e);
		check(mp_resnet_logits(net, logits, &e), &e);
		check(mp_resnet_loss(net, labels[step], smoothing, &loss, probs, &e), &e);
		check(mp_resnet_backward(net, &e), &e);
		char pre[32];
		if (step == 0) {
			int64_t in_shape[4] = {N, 3, SIZE, SIZE}, ls[2] = {N, CLASSES}, one[1] = {1};
			static float loss_f[1];
			loss_f[0] = (float)loss;
			check(mp_st_builder_add(&b, "input.0", MP_ST_F32, in_shape, 4, input[0], &e), &e);
			check(mp_st_builder_add(&b, "input.1", MP_ST_F32, in_shape, 4, input[1], &e), &e);
			int64_t lshape[1] = {N};
			check(mp_st_builder_add(&b, "labels.0", MP_ST_I32, lshape, 1, labels[0], &e), &e);
			check(mp_st_builder_add(&b, "labels.1", MP_ST_I32, lshape, 1, labels[1], &e), &e);
			check(mp_st_builder_add(&b, "logits", MP_ST_F32, ls, 2, logits, &e), &e);
			check(mp_st_builder_add(&b, "probs", MP_ST_F32, ls, 2, probs, &e), &e);
			check(mp_st_builder_add(&b, "loss", MP_ST_F32, one, 1, loss_f, &e), &e);
			add_all(&b, net, "grad.", 1);
		}
		check(mp_resnet_sgd(net, lr, momentum, wd, &e), &e);
		snprintf(pre, sizeof pre, "step%d.", step + 1);
		add_all(&b, net, pre, 0);
	}
	check(mp_st_builder_meta(&b, "shortcut", argv[1], &e), &e);
	check(mp_st_builder_write(&b, argv[2], &e), &e);
	mp_st_builder_free(&b);
	for (int i = 0; i < nstash; i++)
		free(stash[i]);
	mp_resnet_free(net);
	mp_backend_free(be);
	return 0;
}
