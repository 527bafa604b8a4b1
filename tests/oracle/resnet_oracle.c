/* Runs SGD steps of a small network on a CPU backend, evaluates it at
 * several input sizes, takes one more step, and writes every number the
 * PyTorch oracle compares into one safetensors file: the initial weights,
 * the inputs and labels,
 * each step's logits, loss, probabilities and gradients, the weights,
 * running statistics and momenta after each step, and the inference
 * logits of every evaluation size (twice); the last weights go to a file
 * (mp_weights_save), which the oracle loads as it is.
 *
 * usage: resnet_oracle OUT.safetensors WEIGHTS.safetensors [key=value...]
 * keys (defaults in brackets): backend cpu|cpu-ref [cpu-ref], depth [1],
 * widths [4,8,8,12], shortcut A|B [A], stem_kernel [3], stem_stride [2],
 * classes [10], fc_bn 0|1 [1], n (training batch) [4], size [32],
 * steps [2], eval (sizes, comma-separated) [none], eval_n [2], seed [1234].
 * The evaluation views of an image are one base image of the largest size
 * resampled to each size (nearest pixel), so that their probabilities can
 * be averaged as a multiscale evaluation averages them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "mp_resnet.h"
#include "mp_safetensors.h"
#include "mp_weights.h"

enum { MAXT = 4096, MAX_EVAL = 8, MAX_STEPS = 8 };

static void *stash[MAXT];
static int nstash;

static void die(const char *what)
{
	fprintf(stderr, "resnet_oracle: %s\n", what);
	exit(1);
}

/* Memory the builder refers to until the file is written. */
static void *keep(size_t bytes)
{
	void *p = calloc(1, bytes ? bytes : 1);
	if (!p || nstash == MAXT)
		die("out of memory");
	stash[nstash++] = p;
	return p;
}

static void check(int rc, const mp_error *e)
{
	if (rc < 0)
		die(e->msg);
}

static void put(mp_st_builder *b, const char *name, int dtype, const int64_t *shape, int ndim,
		const void *data)
{
	mp_error e;
	check(mp_st_builder_add(b, name, dtype, shape, ndim, data, &e), &e);
}

/* Adds a copy of a network tensor under name. */
static void add(mp_st_builder *b, mp_resnet *net, const char *name, const mp_param *p,
		const mp_tensor *t)
{
	mp_error e;
	float *h = keep(mp_tensor_count(t) * sizeof *h);
	check(mp_resnet_download(net, t, h, &e), &e);
	int64_t shape[4];
	for (int i = 0; i < p->ndim; i++)
		shape[i] = p->shape[i];
	put(b, name, MP_ST_F32, shape, p->ndim, h);
}

enum { VALUES, GRADS, MOMENTA };

/* Every parameter's values, or the learned ones' gradients or momenta. */
static void add_all(mp_st_builder *b, mp_resnet *net, const char *prefix, int what)
{
	for (int i = 0; i < mp_resnet_param_count(net); i++) {
		mp_param *p = mp_resnet_param(net, i);
		if (what != VALUES && p->kind != MP_PARAM_WEIGHT)
			continue;
		char name[160];
		snprintf(name, sizeof name, "%s%s", prefix, p->name);
		add(b, net, name, p, what == GRADS ? &p->grad : what == MOMENTA ? &p->momentum
									: &p->value);
	}
}

/* "a,b,c" into at most max ints; returns the count. */
static int int_list(const char *s, int *out, int max)
{
	int k = 0;
	for (char *p = (char *)s; *p && k < max;) {
		out[k++] = (int)strtol(p, &p, 10);
		if (*p == ',')
			p++;
		else if (*p)
			die("bad list");
	}
	return k;
}

/* Inference at every size in eval, twice over: views of the same base
 * images and their logits, then the logits again of all but the last
 * image (one image: of it), in buffers that the larger sizes and the
 * larger batch have grown. */
static void evaluate(mp_st_builder *b, mp_resnet *net, mp_rng *r, const int *eval, int neval,
		     int eval_n)
{
	const int classes = mp_resnet_cfg(net)->classes;
	mp_error e;
	int big = 0;
	for (int i = 0; i < neval; i++)
		big = eval[i] > big ? eval[i] : big;
	float *base = malloc((size_t)eval_n * 3 * big * big * sizeof *base + 1);
	if (!base)
		die("out of memory");
	for (size_t i = 0; i < (size_t)eval_n * 3 * big * big; i++)
		base[i] = (float)(mp_rng_uniform(r) * 255.0 - 127.5);
	for (int pass = 0; pass < 2; pass++)
		for (int v = 0; v < neval; v++) {
			const int s = eval[v], m = pass && eval_n > 1 ? eval_n - 1 : eval_n;
			float *x = keep((size_t)eval_n * 3 * s * s * sizeof *x);
			for (int p = 0; p < eval_n * 3; p++)
				for (int y = 0; y < s; y++)
					for (int xx = 0; xx < s; xx++)
						x[((size_t)p * s + y) * s + xx] =
							base[((size_t)p * big + (size_t)y * big / s) * big +
							     (size_t)xx * big / s];
			float *logits = keep((size_t)eval_n * classes * sizeof *logits);
			check(mp_resnet_predict(net, x, m, s, s, logits, &e), &e);
			char name[64];
			const int64_t xs[4] = {eval_n, 3, s, s}, ls[2] = {m, classes};
			if (!pass) {
				snprintf(name, sizeof name, "eval_input.%d", s);
				put(b, name, MP_ST_F32, xs, 4, x);
			}
			snprintf(name, sizeof name, "%s.%d", pass ? "eval_again" : "eval_logits", s);
			put(b, name, MP_ST_F32, ls, 2, logits);
		}
	free(base);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: resnet_oracle OUT.safetensors WEIGHTS.safetensors "
				"[key=value...]\n");
		return 2;
	}
	mp_resnet_config c;
	mp_resnet_config_default(&c);
	c.depth = 1;
	c.widths[0] = 4;
	c.widths[1] = 8;
	c.widths[2] = 8;
	c.widths[3] = 12;
	c.classes = 10;
	const char *backend = "cpu-ref";
	int n = 4, size = 32, steps = 2, eval[MAX_EVAL], neval = 0, eval_n = 2;
	unsigned long long seed = 1234;
	char spec[1024] = "";
	for (int i = 3; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq) {
			fprintf(stderr, "resnet_oracle: %s is not key=value\n", argv[i]);
			return 2;
		}
		*eq = 0;
		const char *k = argv[i], *v = eq + 1;
		if (!strcmp(k, "backend"))
			backend = v;
		else if (!strcmp(k, "depth"))
			c.depth = atoi(v);
		else if (!strcmp(k, "widths"))
			c.stages = int_list(v, c.widths, MP_MAX_STAGES);
		else if (!strcmp(k, "shortcut"))
			c.shortcut = v[0];
		else if (!strcmp(k, "stem_kernel"))
			c.stem_kernel = atoi(v);
		else if (!strcmp(k, "stem_stride"))
			c.stem_stride = atoi(v);
		else if (!strcmp(k, "classes"))
			c.classes = atoi(v);
		else if (!strcmp(k, "fc_bn"))
			c.fc_bn = atoi(v);
		else if (!strcmp(k, "n"))
			n = atoi(v);
		else if (!strcmp(k, "size"))
			size = atoi(v);
		else if (!strcmp(k, "steps"))
			steps = atoi(v);
		else if (!strcmp(k, "eval"))
			neval = int_list(v, eval, MAX_EVAL);
		else if (!strcmp(k, "eval_n"))
			eval_n = atoi(v);
		else if (!strcmp(k, "seed"))
			seed = strtoull(v, NULL, 10);
		else {
			fprintf(stderr, "resnet_oracle: unknown key %s\n", k);
			return 2;
		}
		*eq = '=';
		size_t at = strlen(spec);
		snprintf(spec + at, sizeof spec - at, "%s%s", at ? " " : "", argv[i]);
	}
	if (n < 2 || size < 1 || steps < 1 || steps > MAX_STEPS || eval_n < 1) {
		fprintf(stderr, "resnet_oracle: bad n, size, steps or eval_n\n");
		return 2;
	}
	c.input_size = size;
	mp_error e;
	mp_backend *be = !strcmp(backend, "cpu")       ? mp_backend_cpu_fast_new(0)
			 : !strcmp(backend, "cpu-ref") ? mp_backend_cpu_new(0)
						       : NULL;
	if (!be)
		die("no such backend");
	mp_resnet *net = mp_resnet_new(&c, be, &e);
	if (!net)
		die(e.msg);
	check(mp_resnet_init(net, seed, &e), &e);

	mp_rng r;
	mp_rng_seed(&r, seed + 1);
	const size_t in_count = (size_t)n * 3 * size * size;
	const float lr = 0.1f, momentum = 0.9f, wd = 5e-4f, smoothing = 0.1f;
	const int64_t in_shape[4] = {n, 3, size, size}, lshape[1] = {n},
		      pshape[2] = {n, c.classes}, one[1] = {1};

	mp_st_builder b;
	mp_st_builder_init(&b);
	add_all(&b, net, "init.", VALUES);
	/* with evaluation sizes: one more step after the evaluation */
	const int total = steps + (neval > 0);
	for (int step = 0; step < total; step++) {
		char name[64];
		if (step == steps)
			evaluate(&b, net, &r, eval, neval, eval_n);
		float *input = keep(in_count * sizeof *input);
		int32_t *labels = keep((size_t)n * sizeof *labels);
		/* mean-subtracted pixels span about -128..128 */
		for (size_t i = 0; i < in_count; i++)
			input[i] = (float)(mp_rng_uniform(&r) * 255.0 - 127.5);
		for (int i = 0; i < n; i++)
			labels[i] = (int32_t)mp_rng_below(&r, (uint64_t)c.classes);
		float *logits = keep((size_t)n * c.classes * sizeof *logits);
		float *probs = keep((size_t)n * c.classes * sizeof *probs);
		float *loss_f = keep(sizeof *loss_f);
		double loss;
		if (step == 0) {
			/* the operations one by one, the logits read after the forward pass */
			check(mp_resnet_forward(net, input, n, size, size, 1, &e), &e);
			check(mp_resnet_logits(net, logits, &e), &e);
			check(mp_resnet_loss(net, labels, smoothing, &loss, probs, &e), &e);
			check(mp_resnet_backward(net, &e), &e);
			check(mp_resnet_sgd(net, lr, momentum, wd, &e), &e);
			snprintf(name, sizeof name, "logits.%d", step);
			put(&b, name, MP_ST_F32, pshape, 2, logits);
		} else {
			/* the trainer's call */
			check(mp_resnet_train_step(net, input, labels, n, size, size, smoothing, lr,
						   momentum, wd, &loss, probs, &e), &e);
		}
		loss_f[0] = (float)loss;
		snprintf(name, sizeof name, "input.%d", step);
		put(&b, name, MP_ST_F32, in_shape, 4, input);
		snprintf(name, sizeof name, "labels.%d", step);
		put(&b, name, MP_ST_I32, lshape, 1, labels);
		snprintf(name, sizeof name, "probs.%d", step);
		put(&b, name, MP_ST_F32, pshape, 2, probs);
		snprintf(name, sizeof name, "loss.%d", step);
		put(&b, name, MP_ST_F32, one, 1, loss_f);
		snprintf(name, sizeof name, "grad%d.", step + 1);
		add_all(&b, net, name, GRADS);
		snprintf(name, sizeof name, "step%d.", step + 1);
		add_all(&b, net, name, VALUES);
		snprintf(name, sizeof name, "momentum%d.", step + 1);
		add_all(&b, net, name, MOMENTA);
	}

	char steps_s[16];
	snprintf(steps_s, sizeof steps_s, "%d", total);
	check(mp_st_builder_meta(&b, "spec", spec, &e), &e);
	check(mp_st_builder_meta(&b, "steps", steps_s, &e), &e);
	check(mp_st_builder_meta(&b, "backend", backend, &e), &e);
	check(mp_st_builder_write(&b, argv[1], &e), &e);
	mp_st_builder_free(&b);
	mp_kv extra[] = {{"created_by", "resnet_oracle"}};
	check(mp_weights_save(net, argv[2], extra, 1, 0, &e), &e);
	for (int i = 0; i < nstash; i++)
		free(stash[i]);
	mp_resnet_free(net);
	mp_backend_free(be);
	return 0;
}
