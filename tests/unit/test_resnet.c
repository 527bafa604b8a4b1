/* The network on the CPU backend: the whole-net backward pass against
 * finite differences of the loss, parameter names, shapes and counts
 * against the PyTorch module (scripts/mp_resnet.py), FLOPs, the seeded
 * initialisation, forward passes at several input sizes, and inference with
 * the running statistics.
 *
 * Whole-net gradient check. A tiny network (depth 1, widths 3,4,4,5, eight
 * classes, 16x16 inputs, batch 3) in training mode, for shortcuts A and B,
 * with and without the BN after the fully connected layer. The loss L(w) is
 * mp_resnet_forward(train) + mp_resnet_loss (cross-entropy with label
 * smoothing 0.1, averaged in double by the backend); for about 60 weight
 * elements w_i, two of every learned tensor, a finite difference of L in
 * w_i is compared with the backward pass's value ana. Training mode updates
 * the BN running statistics on every forward pass; they do not enter the
 * loss, so the repeated passes see the same function.
 *
 * Three things make a plain central difference (h = 1e-2 of the weight's
 * scale) fail on a correct backward pass here, by up to 50 times its
 * tolerance:
 *  - ReLU kinks. A difference across a kink averages the slopes on both
 *    sides. One BN gamma moves some 200 ReLU inputs, and one crossing
 *    within 1e-3 of the weight changed the slope by 0.08 where the gradient
 *    was 0.004. So every BN's beta is set to +4 or -4 times its gamma
 *    (kink_free_relus): each channel is always on or always off, and the
 *    off ones still test the masks (no gradient may pass them).
 *  - Rounding. L comes out of float arithmetic with an error e of 1e-7 to
 *    3e-6 (the on channels' offsets cancel in the next BN, which amplifies
 *    it), and a difference quotient divides it by h.
 *  - Curvature. BN over three values (the last stage is 1x1 at batch 3;
 *    fc_bn always) makes L's higher derivatives large: some elements need
 *    steps below 4e-3, others drown in rounding below 3e-2.
 * Hence the five-point stencil (error h^4 L^(5) / 30 + 1.5 e / h) on a
 * ladder of steps 1/4, 1/8, ..., 1/1024: the first three neighbours that
 * agree within a quarter of the tolerance give the estimate (fd_estimate);
 * an element whose ladder never settles is replaced by another of its
 * tensor (at most GC_TRIES), and every tensor needs two that settle.
 *
 * Tolerance |num - ana| <= 2e-2 |num| + 2e-4: the absolute part is above
 * the rounding error of a settled estimate (1.5 e / h is 1.4e-4 for the
 * largest e, 3e-6, at h = 1/32), the relative part covers what is left of
 * the truncation. Over 800 other random networks (200 seeds, the
 * four variants) one comparison in 50000 exceeded it (by 1.4) and two
 * tensors had no element that settled; with the seed here the largest
 * error is a few hundredths of the tolerance (the "# gc" lines). The check
 * has power: it verifies itself that gradients scaled by 1.1 fail wherever
 * |num| > 5e-3, and a backward pass that drops the shortcut's gradient,
 * feeds the projection's BN the wrong input, skips fc_bn's or the stem
 * ReLU's backward, or scales a single tensor's gradient by 1.05 (fc, one
 * BN's beta) or 1.1 (the stem's gamma, one conv) fails it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "mp_resnet.h"
#include "test_support.h"

#define GC_RTOL 2e-2
#define GC_ATOL 2e-4
#define GC_H0 0.25		/* the largest step, */
#define GC_LEVELS 9		/* halved down to 2^-10 */
#define GC_MARGIN 4.0		/* |beta| / gamma */
#define GC_FC_SCALE 0.125	/* see scale_fc */
#define GC_PER_TENSOR 2		/* elements checked per weight tensor, */
#define GC_TRIES 8		/* out of at most this many */

static mp_backend *be;
static mp_rng rng;

/* ---- helpers ------------------------------------------------------------ */

static double uniform(double lo, double hi)
{
	return lo + (hi - lo) * mp_rng_uniform(&rng);
}

static float *random_array(size_t n, double lo, double hi)
{
	float *a = malloc(n * sizeof *a);
	assert_non_null(a);
	for (size_t i = 0; i < n; i++)
		a[i] = (float)uniform(lo, hi);
	return a;
}

static void small_config(mp_resnet_config *c, int w0, int w1, int w2, int w3, char shortcut,
			 int classes, int fc_bn)
{
	mp_resnet_config_default(c);
	c->depth = 1;
	c->widths[0] = w0;
	c->widths[1] = w1;
	c->widths[2] = w2;
	c->widths[3] = w3;
	c->shortcut = shortcut;
	c->classes = classes;
	c->fc_bn = fc_bn;
}

static mp_resnet *new_net(const mp_resnet_config *c, uint64_t seed)
{
	mp_error e;
	mp_resnet *net = mp_resnet_new(c, be, &e);
	if (!net)
		fail_msg("mp_resnet_new: %s", e.msg);
	if (mp_resnet_init(net, seed, &e) < 0)
		fail_msg("mp_resnet_init: %s", e.msg);
	return net;
}


static const char *leaf(const mp_param *p)
{
	return strrchr(p->name, '.') + 1;
}

/* Random BN state: gamma in [0.6, 1.4], beta in [-0.3, 0.3]; with
 * running_stats also running means in [-0.5, 0.5] and variances in
 * [0.5, 2]. */
static void randomize_bn(mp_resnet *net, int running_stats)
{
	for (int i = 0; i < mp_resnet_param_count(net); i++) {
		mp_param *p = mp_resnet_param(net, i);
		if (p->ndim != 1)
			continue;
		const char *l = leaf(p);
		double lo, hi;
		if (!strcmp(l, "weight"))
			lo = 0.6, hi = 1.4;
		else if (!strcmp(l, "bias"))
			lo = -0.3, hi = 0.3;
		else if (!running_stats)
			continue;
		else if (!strcmp(l, "running_mean"))
			lo = -0.5, hi = 0.5;
		else
			lo = 0.5, hi = 2.0;
		float *v = random_array(mp_tensor_count(&p->value), lo, hi);
		upload(net, &p->value, v);
		free(v);
	}
}

static void forward(mp_resnet *net, const float *x, int n, int h, int w, int train)
{
	mp_error e;
	if (mp_resnet_forward(net, x, n, h, w, train, &e) < 0)
		fail_msg("mp_resnet_forward %dx%dx%d: %s", n, h, w, e.msg);
}

static float *logits(mp_resnet *net, int n)
{
	mp_error e;
	float *l = malloc((size_t)n * (size_t)mp_resnet_cfg(net)->classes * sizeof *l);
	assert_non_null(l);
	if (mp_resnet_logits(net, l, &e) < 0)
		fail_msg("%s", e.msg);
	return l;
}


/* ---- the whole-net gradient check ---------------------------------------- */

enum { GC_N = 3, GC_SIZE = 16, GC_CLASSES = 8 };

typedef struct {
	mp_resnet *net;
	float *x;
	int32_t labels[GC_N];
} gc_ctx;

static double gc_loss(gc_ctx *g)
{
	mp_error e;
	double loss;
	forward(g->net, g->x, GC_N, GC_SIZE, GC_SIZE, 1);
	if (mp_resnet_loss(g->net, g->labels, 0.1f, &loss, NULL, &e) < 0)
		fail_msg("%s", e.msg);
	return loss;
}

/* beta = +-GC_MARGIN gamma for the channels of one BN, on or off */
static void set_beta(mp_resnet *net, const char *bn, const int *on, int c)
{
	char name[128];
	snprintf(name, sizeof name, "%s.weight", bn);
	mp_param *g = mp_resnet_find(net, name);
	snprintf(name, sizeof name, "%s.bias", bn);
	mp_param *b = mp_resnet_find(net, name);
	assert_non_null(g);
	assert_non_null(b);
	assert_int_equal(mp_tensor_count(&b->value), c);
	float *gamma = download(net, &g->value), beta[64];
	assert_true(c <= 64);
	for (int i = 0; i < c; i++)
		beta[i] = (float)((on[i] ? GC_MARGIN : -GC_MARGIN) * gamma[i]);
	upload(net, &b->value, beta);
	free(gamma);
}

/* channel 0 on, the others off with probability 1/3 */
static void random_on_off(int *on, int c)
{
	for (int i = 0; i < c; i++)
		on[i] = i == 0 || mp_rng_below(&rng, 3) != 0;
}

/* Puts every ReLU input at least GC_MARGIN of its BN's gamma away from the
 * kink: beta = +GC_MARGIN gamma keeps a channel always on, -GC_MARGIN gamma
 * always off (BN's normalised values lie within sqrt(n - 1) of 0 for n
 * values, and a normal value is beyond 4 once in 16000). A block's output
 * channel can be off only where its shortcut adds nothing positive: a
 * zero-padded channel, an off channel of the block's input, or an off
 * projection. Channel 0 of every layer stays on so that the loss depends
 * on every layer. Returns the number of channels off. */
static int kink_free_relus(mp_resnet *net)
{
	const mp_resnet_config *c = mp_resnet_cfg(net);
	int prev[64], on[64], off = 0;
	assert_int_equal(c->depth, 1);
	random_on_off(prev, c->widths[0]);
	set_beta(net, "stem.bn", prev, c->widths[0]);
	for (int i = 0; i < c->widths[0]; i++)
		off += !prev[i];
	int cin = c->widths[0];
	for (int s = 0; s < c->stages; s++) {
		char pre[64], name[96];
		const int cout = c->widths[s], stride = s > 0 ? 2 : 1;
		const int proj = c->shortcut == 'B' && (stride != 1 || cin != cout);
		snprintf(pre, sizeof pre, "stages.%d.blocks.0", s);
		random_on_off(on, cout);
		snprintf(name, sizeof name, "%s.bn1", pre);
		set_beta(net, name, on, cout);
		for (int i = 0; i < cout; i++)
			off += !on[i];
		random_on_off(on, cout);
		for (int i = 0; i < cout; i++) {
			if (!on[i] && !proj && i < cin && prev[i])
				on[i] = 1; /* the shortcut adds a positive value */
			off += !on[i];
		}
		snprintf(name, sizeof name, "%s.bn2", pre);
		set_beta(net, name, on, cout);
		if (proj) {
			snprintf(name, sizeof name, "%s.shortcut.bn", pre);
			set_beta(net, name, on, cout);
		}
		memcpy(prev, on, sizeof on);
		cin = cout;
	}
	return off;
}

/* The always-on channels carry an offset of GC_MARGIN gamma into the
 * pooled features, which would make the logits large without fc_bn; a
 * smaller FC layer keeps them about 1. */
static void scale_fc(mp_resnet *net, double s)
{
	mp_param *fc = mp_resnet_find(net, "fc.weight");
	float *w = download(net, &fc->value);
	for (size_t i = 0; i < mp_tensor_count(&fc->value); i++)
		w[i] = (float)(w[i] * s);
	upload(net, &fc->value, w);
	free(w);
}

/* The five-point central difference of the loss in w[j] with step h: its
 * error is h^4 L^(5) / 30 plus about 1.5 times the loss's rounding noise
 * over h. */
static double fd5(gc_ctx *g, mp_param *p, float *w, size_t j, double h)
{
	const float w0 = w[j];
	double l[5] = {0};
	for (int s = -2; s <= 2; s++) {
		if (s == 0)
			continue;
		w[j] = (float)(w0 + s * h);
		upload(g->net, &p->value, w);
		l[s + 2] = gc_loss(g);
	}
	w[j] = w0;
	upload(g->net, &p->value, w);
	return (l[0] - 8 * l[1] + 8 * l[3] - l[4]) / (12 * h);
}

static double gc_tol(double num)
{
	return GC_RTOL * fabs(num) + GC_ATOL;
}

/* Five-point estimates on a ladder of steps from GC_H0 down: the first
 * three neighbours that agree within a quarter of the tolerance are past
 * the truncation error and not yet in the rounding noise (nor straddling a
 * stray kink); the middle one is the estimate. 0 when none agree. */
static int fd_estimate(gc_ctx *g, mp_param *p, float *w, size_t j, double *num, double *h)
{
	double d[GC_LEVELS];
	for (int l = 0; l < GC_LEVELS; l++) {
		d[l] = fd5(g, p, w, j, GC_H0 / (1 << l));
		if (l < 2)
			continue;
		const double lo = fmin(d[l], fmin(d[l - 1], d[l - 2]));
		const double hi = fmax(d[l], fmax(d[l - 1], d[l - 2]));
		if (hi - lo <= gc_tol(d[l - 1]) / 4) {
			*num = d[l - 1];
			*h = GC_H0 / (1 << (l - 1));
			return 1;
		}
	}
	return 0;
}

static void gradcheck(char shortcut, int fc_bn)
{
	mp_resnet_config c;
	mp_error e;
	small_config(&c, 3, 4, 4, 5, shortcut, GC_CLASSES, fc_bn);
	gc_ctx g = {.net = new_net(&c, 11)};
	randomize_bn(g.net, 1);
	const int off = kink_free_relus(g.net);
	scale_fc(g.net, GC_FC_SCALE);
	g.x = random_array((size_t)GC_N * 3 * GC_SIZE * GC_SIZE, -1, 1);
	for (int i = 0; i < GC_N; i++)
		g.labels[i] = (int32_t)mp_rng_below(&rng, GC_CLASSES);

	gc_loss(&g);
	if (mp_resnet_backward(g.net, &e) < 0)
		fail_msg("%s", e.msg);
	int checked = 0, bad = 0, sensitive = 0, caught = 0, projections = 0, unresolved = 0;
	double max_err = 0, max_ratio = 0, min_h = GC_H0, max_h = 0;
	const char *worst = "";
	for (int i = 0; i < mp_resnet_param_count(g.net); i++) {
		mp_param *p = mp_resnet_param(g.net, i);
		if (p->kind != MP_PARAM_WEIGHT)
			continue;
		projections += strstr(p->name, "shortcut.") != NULL;
		const size_t count = mp_tensor_count(&p->value);
		float *w = download(g.net, &p->value), *grad = download(g.net, &p->grad);
		/* distinct elements from a random start (7919 is prime) */
		const size_t j0 = (size_t)mp_rng_below(&rng, count);
		const int tries_max = count < GC_TRIES ? (int)count : GC_TRIES;
		int resolved = 0, tries;
		for (tries = 0; resolved < GC_PER_TENSOR && tries < tries_max; tries++) {
			const size_t j = (j0 + (size_t)tries * 7919) % count;
			const double ana = grad[j];
			double num, h;
			if (!fd_estimate(&g, p, w, j, &num, &h)) {
				unresolved++;
				continue;
			}
			resolved++;
			min_h = fmin(min_h, h);
			max_h = fmax(max_h, h);
			const double err = fabs(num - ana), tol = gc_tol(num);
			if (err > max_err)
				max_err = err;
			if (err / tol > max_ratio) {
				max_ratio = err / tol;
				worst = p->name;
			}
			if (!(err <= tol) && bad++ < 10)
				print_error("%c fc_bn=%d %s[%zu]: finite difference %.6g (step %g), "
					    "backward %.6g\n", shortcut, fc_bn, p->name, j, num, h, ana);
			/* the check's power: a gradient 10% off must fail */
			if (fabs(num) > 5e-3) {
				sensitive++;
				caught += !(fabs(num - 1.1 * ana) <= tol);
			}
			checked++;
		}
		if (resolved < GC_PER_TENSOR)
			fail_msg("%c fc_bn=%d %s: only %d of %d elements have a finite difference "
				 "that settles", shortcut, fc_bn, p->name, resolved, tries);
		free(w);
		free(grad);
	}
	print_message("# gc shortcut %c fc_bn %d: %d elements, max |num - ana| %.2e, "
		      "%.2f of tolerance (%s); steps %g to %g, %d unsettled; %d/%d gradients "
		      "scaled by 1.1 caught; %d channels off\n",
		      shortcut, fc_bn, checked, max_err, max_ratio, worst, min_h, max_h, unresolved,
		      caught, sensitive, off);
	assert_int_equal(bad, 0);
	assert_true(checked >= 30);
	assert_true(sensitive >= checked / 3);
	assert_int_equal(caught, sensitive);
	assert_int_equal(projections, shortcut == 'B' ? 3 * 3 : 0);
	free(g.x);
	mp_resnet_free(g.net);
}

static void whole_net_gradients(void **state)
{
	(void)state;
	gradcheck('A', 1);
	gradcheck('A', 0);
	gradcheck('B', 1);
	gradcheck('B', 0);
}

/* ---- names, shapes and counts against PyTorch ----------------------------- */

static const char py_names[] =
	"import sys\n"
	"import mp_resnet\n"
	"for sc in \"AB\":\n"
	"    net = mp_resnet.ResNet(shortcut=sc)\n"
	"    for k, v in net.state_dict().items():\n"
	"        if not k.endswith(\"num_batches_tracked\"):\n"
	"            print(sc, k, \",\".join(str(d) for d in v.shape))\n"
	"    print(sc, \"#params\", sum(p.numel() for p in net.parameters()))\n";

static char *run_python(const char *script)
{
	char root[PATH_MAX], tdir[PATH_MAX];
	const char *tmp = getenv("TMPDIR");
	snprintf(tdir, sizeof tdir, "%s/mp-resnet-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	find_root(root, sizeof root);
	assert_null(strchr(root, '\''));
	assert_non_null(mkdtemp(tdir));
	char spath[PATH_MAX + 16], cmd[3 * PATH_MAX];
	snprintf(spath, sizeof spath, "%s/names.py", tdir);
	FILE *f = fopen(spath, "w");
	assert_non_null(f);
	fputs(script, f);
	assert_int_equal(fclose(f), 0);
	snprintf(cmd, sizeof cmd, "PYTHONDONTWRITEBYTECODE=1 PYTHONPATH='%s/scripts' /usr/bin/python3 '%s'",
		 root, spath);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t cap = 1 << 16, len = 0, got;
	char *out = malloc(cap);
	assert_non_null(out);
	while ((got = fread(out + len, 1, cap - len - 1, p)) > 0) {
		len += got;
		if (cap - len < 4096) {
			out = realloc(out, cap *= 2);
			assert_non_null(out);
		}
	}
	out[len] = '\0';
	int rc = pclose(p);
	unlink(spath);
	rmdir(tdir);
	if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
		fail_msg("/usr/bin/python3 with torch could not describe the PyTorch network "
			 "(status %d): python3, python3-torch and %s/scripts/mp_resnet.py are needed",
			 rc, root);
	return out;
}

static void names_match(mp_resnet *net, char shortcut, char *out)
{
	int i = 0;
	uint64_t py_params = 0;
	char *save, *line;
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char sc, name[128], shape[128];
		if (sscanf(line, "%c %127s %127s", &sc, name, shape) != 3)
			fail_msg("python printed \"%s\"", line);
		if (sc != shortcut)
			continue;
		if (!strcmp(name, "#params")) {
			py_params = strtoull(shape, NULL, 10);
			continue;
		}
		mp_param *p = mp_resnet_param(net, i++);
		if (!p)
			fail_msg("shortcut %c: PyTorch has %s, the C network has no more tensors",
				 shortcut, name);
		char ours[128] = "";
		for (int d = 0; d < p->ndim; d++)
			snprintf(ours + strlen(ours), sizeof ours - strlen(ours), "%s%d",
				 d ? "," : "", p->shape[d]);
		if (strcmp(p->name, name) || strcmp(ours, shape))
			fail_msg("shortcut %c tensor %d: C has %s [%s], PyTorch %s [%s]", shortcut,
				 i - 1, p->name, ours, name, shape);
		/* running statistics are buffers; everything else is learned */
		assert_int_equal(p->kind, strstr(name, "running_") ? MP_PARAM_BUFFER : MP_PARAM_WEIGHT);
	}
	assert_int_equal(i, mp_resnet_param_count(net));
	assert_true(py_params > 0);
	assert_int_equal(mp_resnet_num_weights(net), py_params);
	print_message("# shortcut %c: %d tensors, %llu learned parameters, as in PyTorch\n",
		      shortcut, i, (unsigned long long)py_params);
}

static void names_shapes_counts(void **state)
{
	(void)state;
	char *out = run_python(py_names);
	for (int s = 0; s < 2; s++) {
		char *copy = strdup(out);
		mp_resnet_config c;
		mp_error e;
		mp_resnet_config_default(&c);
		c.shortcut = "AB"[s];
		mp_resnet *net = mp_resnet_new(&c, be, &e);
		if (!net)
			fail_msg("%s", e.msg);
		names_match(net, c.shortcut, copy);
		assert_non_null(mp_resnet_find(net, "stages.3.blocks.8.bn2.running_var"));
		assert_ptr_equal(mp_resnet_find(net, "fc.weight"),
				 mp_resnet_param(net, mp_resnet_param_count(net) - 5));
		assert_null(mp_resnet_find(net, "fc.bias"));
		mp_resnet_free(net);
		free(copy);
	}
	free(out);
}

/* ---- FLOPs ----------------------------------------------------------------- */

/* The reference net (depth 9, widths 32,64,128,256, 3x3 stride-2 stem, 100
 * classes) on an s x s image, s a multiple of 16, so that the stem's output
 * is m = s/2 on a side and the stages' m, m/2, m/4, m/8. Multiply-accumulates
 * per position of the stem's output (m^2 positions):
 *   stem         32*3*9                                           =    864
 *   stage 0      9 blocks * 2 convs * 32*32*9                     = 165888
 *   stage 1      (64*32*9 + 64*64*9 + 8*2*64*64*9) / 4            = 161280
 *   stage 2      (128*64*9 + 128*128*9 + 8*2*128*128*9) / 16      = 161280
 *   stage 3      (256*128*9 + 256*256*9 + 8*2*256*256*9) / 64     = 161280
 *   total                                                           650592
 * plus the fully connected layer, 100*256 = 25600 independent of s;
 * shortcut B adds three 1x1 projections, (64*32 + 128*64/4 + 256*128/16)/4
 * = 3*512 = 1536 per position. FLOPs are twice the MACs:
 *   flops(112) = 2 (650592 * 56^2 + 25600) = 4080564224, about 4.08 G. */
static double ref_flops(int s, char shortcut)
{
	const double m = s / 2;
	return 2.0 * ((650592.0 + (shortcut == 'B' ? 1536.0 : 0.0)) * m * m + 25600.0);
}

static void flops(void **state)
{
	(void)state;
	for (int s = 0; s < 2; s++) {
		mp_resnet_config c;
		mp_error e;
		mp_resnet_config_default(&c);
		c.shortcut = "AB"[s];
		mp_resnet *net = mp_resnet_new(&c, be, &e);
		if (!net)
			fail_msg("%s", e.msg);
		const double f112 = mp_resnet_flops(net, 112);
		if (c.shortcut == 'A')
			assert_true(f112 == 4080564224.0);
		const int sizes[] = {112, 128, 160, 224, 240};
		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			const double f = mp_resnet_flops(net, sizes[i]);
			if (f != ref_flops(sizes[i], c.shortcut))
				fail_msg("shortcut %c at %d px: %.0f FLOPs, expected %.0f", c.shortcut,
					 sizes[i], f, ref_flops(sizes[i], c.shortcut));
		}
		/* twice the side, four times the work but for the fixed FC layer */
		const double f224 = mp_resnet_flops(net, 224);
		assert_true(f224 - 4 * f112 == 2.0 * (25600 - 4 * 25600));
		assert_true(fabs(f224 / f112 - 4) < 1e-4);
		/* odd sizes round up at every stride-2 layer: 113 -> 57, 29, 15, 8 */
		assert_true(mp_resnet_flops(net, 113) > f112);
		assert_true(mp_resnet_flops(net, 113) < mp_resnet_flops(net, 128));
		print_message("# shortcut %c: %.4g GFLOPs at 112 px, %.4g at 224 px\n", c.shortcut,
			      f112 / 1e9, f224 / 1e9);
		mp_resnet_free(net);
	}
}

/* ---- initialisation ---------------------------------------------------------- */

/* Every tensor of net, concatenated (momentum buffers too). */
static float *snapshot(mp_resnet *net, size_t *count)
{
	size_t n = 0;
	for (int i = 0; i < mp_resnet_param_count(net); i++) {
		mp_param *p = mp_resnet_param(net, i);
		n += mp_tensor_count(&p->value) * (p->kind == MP_PARAM_WEIGHT ? 2 : 1);
	}
	float *all = malloc(n * sizeof *all), *at = all;
	assert_non_null(all);
	mp_error e;
	for (int i = 0; i < mp_resnet_param_count(net); i++) {
		mp_param *p = mp_resnet_param(net, i);
		assert_int_equal(mp_resnet_download(net, &p->value, at, &e), 0);
		at += mp_tensor_count(&p->value);
		if (p->kind == MP_PARAM_WEIGHT) {
			assert_int_equal(mp_resnet_download(net, &p->momentum, at, &e), 0);
			at += mp_tensor_count(&p->value);
		}
	}
	*count = n;
	return all;
}

static void init_seeded(void **state)
{
	(void)state;
	mp_resnet_config c;
	mp_error e;
	small_config(&c, 8, 16, 16, 32, 'B', 10, 1);
	mp_resnet *a = new_net(&c, 42), *b = new_net(&c, 42), *d = new_net(&c, 43);
	size_t na, nb, nd;
	float *sa = snapshot(a, &na), *sb = snapshot(b, &nb), *sd = snapshot(d, &nd);
	assert_int_equal(na, nb);
	assert_memory_equal(sa, sb, na * sizeof *sa);
	/* another seed: every conv and FC weight tensor differs */
	for (int i = 0; i < mp_resnet_param_count(a); i++) {
		mp_param *pa = mp_resnet_param(a, i), *pd = mp_resnet_param(d, i);
		if (pa->ndim < 2)
			continue;
		float *va = download(a, &pa->value), *vd = download(d, &pd->value);
		assert_memory_not_equal(va, vd, mp_tensor_count(&pa->value) * sizeof *va);
		free(va);
		free(vd);
	}
	/* init again after training state was changed: the same bits again */
	mp_param *w = mp_resnet_find(a, "stages.1.blocks.0.conv1.weight");
	float *noise = random_array(mp_tensor_count(&w->value), -1, 1);
	upload(a, &w->value, noise);
	upload(a, &w->momentum, noise);
	upload(a, &mp_resnet_find(a, "fc_bn.running_var")->value, noise);
	free(noise);
	assert_int_equal(mp_resnet_init(a, 42, &e), 0);
	float *again = snapshot(a, &na);
	assert_memory_equal(sa, again, na * sizeof *sa);
	free(again);
	free(sa);
	free(sb);
	free(sd);
	mp_resnet_free(a);
	mp_resnet_free(b);
	mp_resnet_free(d);
}

static void init_distribution(void **state)
{
	(void)state;
	mp_resnet_config c;
	mp_resnet_config_default(&c);
	c.depth = 1;
	mp_resnet *net = new_net(&c, 7);
	size_t largest = 0;
	double largest_ratio = 0;
	for (int i = 0; i < mp_resnet_param_count(net); i++) {
		mp_param *p = mp_resnet_param(net, i);
		size_t n = mp_tensor_count(&p->value);
		float *v = download(net, &p->value);
		if (p->kind == MP_PARAM_WEIGHT) {
			float *m = download(net, &p->momentum);
			for (size_t j = 0; j < n; j++)
				assert_true(m[j] == 0.0f);
			free(m);
		}
		if (p->ndim >= 2) {
			/* Kaiming normal: fan_in = in * kh * kw */
			double fan_in = 1;
			for (int d = 1; d < p->ndim; d++)
				fan_in *= p->shape[d];
			const double sigma = sqrt(2.0 / fan_in);
			double s1 = 0, s2 = 0;
			size_t within = 0;
			for (size_t j = 0; j < n; j++) {
				s1 += v[j];
				s2 += (double)v[j] * v[j];
				within += fabs(v[j]) < sigma;
			}
			const double mean = s1 / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
			/* sampling errors: sd relative 1/sqrt(2n), mean sigma/sqrt(n),
			 * the fraction inside one sigma sqrt(0.68*0.32/n); 5 of them */
			const double rn = sqrt((double)n);
			if (fabs(sd / sigma - 1) > 5 / sqrt(2.0 * (double)n) ||
			    fabs(mean) > 5 * sigma / rn ||
			    fabs((double)within / (double)n - 0.6827) > 5 * 0.4665 / rn)
				fail_msg("%s: %zu values, mean %.3g, std %.5g (expected %.5g), "
					 "%.4f within one std (expected 0.6827)", p->name, n, mean, sd,
					 sigma, (double)within / (double)n);
			if (n > largest) {
				largest = n;
				largest_ratio = sd / sigma;
			}
		} else {
			const float want = !strcmp(leaf(p), "weight") || !strcmp(leaf(p), "running_var")
						   ? 1.0f : 0.0f;
			for (size_t j = 0; j < n; j++)
				if (v[j] != want)
					fail_msg("%s[%zu] = %g, expected %g", p->name, j, (double)v[j],
						 (double)want);
		}
		free(v);
	}
	/* the largest tensor (256x256x3x3) pins the std to 1% */
	assert_int_equal(largest, 256 * 256 * 9);
	print_message("# std of the largest conv weight / sqrt(2 / fan_in) = %.5f\n", largest_ratio);
	assert_true(fabs(largest_ratio - 1) < 0.01);
	mp_resnet_free(net);
}

/* ---- forward passes ------------------------------------------------------------- */

static void forward_sizes(void **state)
{
	(void)state;
	mp_resnet_config c;
	mp_error e;
	for (int s = 0; s < 2; s++) {
		small_config(&c, 4, 8, 8, 12, "AB"[s], 10, 1);
		mp_resnet *net = new_net(&c, 5);
		randomize_bn(net, 1);
		const int sizes[][2] = {{32, 32}, {33, 33}, {112, 112}, {128, 128}, {160, 160},
					{40, 27}, {1, 1}, {2, 3}};
		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			const int h = sizes[i][0], w = sizes[i][1], n = 2;
			float *x = random_array((size_t)n * 3 * h * w, -100, 100);
			forward(net, x, n, h, w, 0);
			float *l = logits(net, n);
			for (int j = 0; j < n * c.classes; j++)
				if (!isfinite(l[j]))
					fail_msg("%c %dx%d: logit %d is %g", c.shortcut, h, w, j,
						 (double)l[j]);
			/* and the same size in training mode, back and forth */
			forward(net, x, n, h, w, 1);
			int32_t labels[2] = {1, 7};
			double loss;
			assert_int_equal(mp_resnet_loss(net, labels, 0, &loss, NULL, &e), 0);
			assert_true(isfinite(loss));
			assert_int_equal(mp_resnet_backward(net, &e), 0);
			free(l);
			free(x);
		}
		mp_resnet_free(net);
	}
}

static void forward_refuses_bad_input(void **state)
{
	(void)state;
	mp_resnet_config c;
	mp_error e;
	small_config(&c, 4, 8, 8, 12, 'A', 10, 1);
	mp_resnet *net = new_net(&c, 5);
	float x[2 * 3 * 32 * 32] = {0};
	/* an input with no pixels is too small for the stem */
	const int bad[][2] = {{0, 32}, {32, 0}, {0, 0}, {-3, 32}, {32, -1}};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		for (int train = 0; train < 2; train++) {
			e.msg[0] = '\0';
			assert_int_equal(mp_resnet_forward(net, x, 2, bad[i][0], bad[i][1], train, &e),
					 -1);
			if (!strstr(e.msg, "too small for the stem"))
				fail_msg("%dx%d: \"%s\"", bad[i][1], bad[i][0], e.msg);
			assert_int_equal(mp_resnet_logits(net, x, &e), -1);
			assert_string_equal(e.msg, "no forward pass to read logits from");
		}
	}
	/* a training batch of one: BN has no batch statistics to speak of */
	assert_int_equal(mp_resnet_forward(net, x, 1, 32, 32, 1, &e), -1);
	assert_string_equal(e.msg, "a training batch needs at least 2 images");
	assert_int_equal(mp_resnet_forward(net, x, 0, 32, 32, 0, &e), -1);
	assert_string_equal(e.msg, "a batch needs at least 1 image");
	assert_int_equal(mp_resnet_forward(net, x, -1, 32, 32, 0, &e), -1);
	/* but one image in inference mode is fine */
	forward(net, x, 1, 32, 32, 0);
	/* backward needs a training pass and its loss */
	assert_int_equal(mp_resnet_backward(net, &e), -1);
	assert_string_equal(e.msg, "backward needs a training forward pass and its loss");
	int32_t label = 3;
	double loss;
	assert_int_equal(mp_resnet_loss(net, &label, 0, &loss, NULL, &e), 0);
	assert_int_equal(mp_resnet_backward(net, &e), -1);
	forward(net, x, 2, 32, 32, 1);
	assert_int_equal(mp_resnet_backward(net, &e), -1); /* no loss yet */
	/* the net still works after all that */
	int32_t labels[2] = {3, 4};
	assert_int_equal(mp_resnet_loss(net, labels, 0, &loss, NULL, &e), 0);
	assert_int_equal(mp_resnet_backward(net, &e), 0);
	mp_resnet_free(net);
}

/* Inference mode normalises with the running statistics, so an image's
 * logits do not depend on the rest of its batch; training mode uses the
 * batch's statistics, so they do. */
static void inference_uses_running_stats(void **state)
{
	(void)state;
	mp_resnet_config c;
	mp_error e;
	enum { N = 4, S = 32, AT = 2 };
	const size_t img = 3 * S * S;
	small_config(&c, 4, 8, 8, 12, 'B', 10, 1);
	mp_resnet *net = new_net(&c, 9);
	randomize_bn(net, 1);
	size_t nstats;
	float *stats = snapshot(net, &nstats);
	float *batch = random_array(N * img, -2, 2);

	forward(net, batch + AT * img, 1, S, S, 0);
	float *alone = logits(net, 1);
	forward(net, batch, N, S, S, 0);
	float *inside = logits(net, N);
	double scale = 0, diff = 0;
	for (int j = 0; j < c.classes; j++) {
		scale = fmax(scale, fabs(alone[j]));
		diff = fmax(diff, fabs(alone[j] - inside[AT * c.classes + j]));
	}
	print_message("# one image alone vs in a batch of %d: max |difference| %.2g "
		      "(logits up to %.3g)\n", N, diff, scale);
	assert_true(scale > 0.1);
	assert_true(diff <= 1e-5 * scale);

	/* inference leaves the running statistics alone */
	size_t n2;
	float *after = snapshot(net, &n2);
	assert_memory_equal(stats, after, nstats * sizeof *stats);
	free(after);

	/* the last BN, by its formula: moving fc_bn's running mean of class j
	 * by d moves logit j by -gamma_j d / sqrt(var_j + eps), and no other */
	mp_param *rm = mp_resnet_find(net, "fc_bn.running_mean");
	float *gamma = download(net, &mp_resnet_find(net, "fc_bn.weight")->value);
	float *var = download(net, &mp_resnet_find(net, "fc_bn.running_var")->value);
	float *mean = download(net, &rm->value);
	const int j = 6;
	const double d = 0.75;
	mean[j] += (float)d;
	upload(net, &rm->value, mean);
	forward(net, batch, N, S, S, 0);
	float *moved = logits(net, N);
	for (int i = 0; i < N; i++)
		for (int k = 0; k < c.classes; k++) {
			double want = inside[i * c.classes + k];
			if (k == j)
				want -= gamma[j] * d / sqrt((double)var[j] + c.bn_eps);
			if (fabs(moved[i * c.classes + k] - want) > 1e-5 * (1 + fabs(want)))
				fail_msg("image %d logit %d: %.7g, expected %.7g", i, k,
					 (double)moved[i * c.classes + k], want);
		}

	/* training mode: the same image's logits change with its batch */
	forward(net, batch, N, S, S, 1);
	float *train_a = logits(net, N);
	float *other = random_array(N * img, -2, 2);
	memcpy(other + AT * img, batch + AT * img, img * sizeof *other);
	forward(net, other, N, S, S, 1);
	float *train_b = logits(net, N);
	diff = 0;
	for (int k = 0; k < c.classes; k++)
		diff = fmax(diff, fabs(train_a[AT * c.classes + k] - train_b[AT * c.classes + k]));
	assert_true(diff > 1e-3);
	(void)e;

	free(other);
	free(train_a);
	free(train_b);
	free(moved);
	free(gamma);
	free(var);
	free(mean);
	free(alone);
	free(inside);
	free(batch);
	free(stats);
	mp_resnet_free(net);
}

static void config_check_messages(void **state)
{
	(void)state;
	mp_resnet_config c;
	mp_error e;
	small_config(&c, 8, 4, 8, 8, 'A', 10, 1);
	assert_null(mp_resnet_new(&c, be, &e));
	assert_string_equal(e.msg, "shortcut A needs widths that do not shrink (stage 1: 4 after 8)");
	c.shortcut = 'B'; /* projections handle a shrinking width */
	mp_resnet *net = mp_resnet_new(&c, be, &e);
	assert_non_null(net);
	mp_resnet_free(net);
	c.shortcut = 'C';
	assert_null(mp_resnet_new(&c, be, &e));
	assert_string_equal(e.msg, "shortcut must be A or B");
	small_config(&c, 8, 8, 8, 8, 'A', 1, 1);
	assert_null(mp_resnet_new(&c, be, &e));
	assert_string_equal(e.msg, "1 classes is outside 2..65536");
	small_config(&c, 8, 8, 8, 8, 'A', 10, 1);
	c.stem_kernel = 4;
	assert_null(mp_resnet_new(&c, be, &e));
	assert_string_equal(e.msg, "stem kernel 4 is not odd in 1..15");
}

/* One training step (forward, loss, backward, SGD) of net on x; the loss. */
static double train_step(mp_resnet *net, const float *x, const int32_t *labels, int n, int size)
{
	mp_error e;
	double loss = 0; /* clang cannot tell that fail_msg does not return */
	if (mp_resnet_forward(net, x, n, size, size, 1, &e) < 0 ||
	    mp_resnet_loss(net, labels, 0.1f, &loss, NULL, &e) < 0 ||
	    mp_resnet_backward(net, &e) < 0 || mp_resnet_sgd(net, 0.1f, 0.9f, 5e-4f, &e) < 0)
		fail_msg("training step: %s", e.msg);
	return loss;
}

/* A backend (new_backend(0)) with the fused BN + residual + ReLU; the
 * network uses them in training. Without them (the same backend, the
 * fused operations taken out) two steps give the same bits: every
 * parameter, gradient, momentum and running statistic, and the loss. */
static void fused_matches_separate(mp_backend *(*new_backend)(int))
{
	mp_backend *with = new_backend(0), *plain = new_backend(0);
	assert_non_null(with);
	assert_non_null(plain);
	assert_non_null(with->ops->bn_relu_forward_train);
	assert_non_null(with->ops->bn_relu_backward);
	mp_backend_ops separate = *plain->ops;
	separate.bn_relu_forward_train = NULL;
	separate.bn_relu_backward = NULL;
	plain->ops = &separate;
	enum { N = 3, S = 20 };
	for (char sc = 'A'; sc <= 'B'; sc++) {
		mp_resnet_config c;
		small_config(&c, 4, 8, 8, 12, sc, 10, 1);
		c.depth = 2; /* identity blocks as well as stage transitions */
		mp_error e;
		mp_resnet *fused = mp_resnet_new(&c, with, &e), *sep = mp_resnet_new(&c, plain, &e);
		assert_non_null(fused);
		assert_non_null(sep);
		assert_int_equal(mp_resnet_init(fused, 21, &e), 0);
		assert_int_equal(mp_resnet_init(sep, 21, &e), 0);
		float *x = random_array((size_t)N * 3 * S * S, -2, 2);
		int32_t labels[N] = {1, 7, 3};
		for (int step = 0; step < 2; step++) {
			double lf = train_step(fused, x, labels, N, S);
			double ls = train_step(sep, x, labels, N, S);
			assert_true(lf == ls);
		}
		for (int i = 0; i < mp_resnet_param_count(fused); i++) {
			mp_param *pf = mp_resnet_param(fused, i), *ps = mp_resnet_param(sep, i);
			const size_t count = mp_tensor_count(&pf->value);
			float *a = download(fused, &pf->value), *b = download(sep, &ps->value);
			if (memcmp(a, b, count * sizeof *a))
				fail_msg("shortcut %c: %s differs", sc, pf->name);
			free(a);
			free(b);
			if (pf->kind == MP_PARAM_WEIGHT) {
				a = download(fused, &pf->grad);
				b = download(sep, &ps->grad);
				if (memcmp(a, b, count * sizeof *a))
					fail_msg("shortcut %c: the gradient of %s differs", sc, pf->name);
				free(a);
				free(b);
			}
		}
		free(x);
		mp_resnet_free(fused);
		mp_resnet_free(sep);
	}
	mp_backend_free(with);
	mp_backend_free(plain);
}

static void fused_training_matches_separate_ops(void **state)
{
	(void)state;
	fused_matches_separate(mp_backend_cpu_new);
}

/* The fast backend's fused BN + ReLU passes: the same bits as its
 * separate BN, add and ReLU. */
static void fast_fused_training_matches_separate_ops(void **state)
{
	(void)state;
	fused_matches_separate(mp_backend_cpu_fast_new);
}

/* The fast backend's bn_relu_backward with each choice of outputs (dx,
 * dres, both, neither: dgamma and dbeta only) against its separate
 * relu_backward and bn_backward, bit for bit; with and without a residual
 * in the forward pass. */
static void fast_bn_relu_backward_outputs(void **state)
{
	(void)state;
	mp_backend *fb = mp_backend_cpu_fast_new(0);
	assert_non_null(fb);
	const mp_backend_ops *o = fb->ops;
	assert_non_null(o->bn_relu_forward_train);
	assert_non_null(o->bn_relu_backward);
	enum { N = 3, C = 5, H = 7, W = 9 }; /* a plane not a multiple of 8 */
	const size_t count = (size_t)N * C * H * W;
	mp_tensor t[13];
	for (int i = 0; i < 13; i++)
		assert_int_equal(o->alloc(fb, &t[i], i < 8 ? N : 1, C, i < 8 ? H : 1,
					  i < 8 ? W : 1), 0);
	mp_tensor *x = &t[0], *res = &t[1], *y = &t[2], *dy = &t[3], *dx = &t[4],
		  *dres = &t[5], *rdx = &t[6], *rg = &t[7];
	mp_bn bn = {.gamma = &t[8], .beta = &t[9], .running_mean = &t[10],
		    .running_var = &t[11], .save_mean = &t[12], .eps = 1e-5f, .momentum = 0.9f};
	mp_tensor invstd, dg[2], db[2];
	assert_int_equal(o->alloc(fb, &invstd, 1, C, 1, 1), 0);
	bn.save_invstd = &invstd;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(o->alloc(fb, &dg[i], 1, C, 1, 1), 0);
		assert_int_equal(o->alloc(fb, &db[i], 1, C, 1, 1), 0);
	}
	float *h = random_array(count, -2, 3);
	assert_int_equal(o->upload(fb, x, h), 0);
	free(h);
	h = random_array(count, -1, 1);
	assert_int_equal(o->upload(fb, res, h), 0);
	free(h);
	h = random_array(count, -1, 1);
	assert_int_equal(o->upload(fb, dy, h), 0);
	free(h);
	h = random_array(C, 0.5, 1.5);
	assert_int_equal(o->upload(fb, bn.gamma, h), 0);
	free(h);
	assert_int_equal(o->fill(fb, bn.beta, 0.1f), 0);
	assert_int_equal(o->fill(fb, bn.running_mean, 0), 0);
	assert_int_equal(o->fill(fb, bn.running_var, 1), 0);
	for (int with_res = 0; with_res < 2; with_res++) {
		assert_int_equal(o->bn_relu_forward_train(fb, x, &bn, with_res ? res : NULL, y), 0);
		/* the meaning: g = relu_backward, then bn_backward of g */
		assert_int_equal(o->relu_backward(fb, y, dy, rg), 0);
		assert_int_equal(o->bn_backward(fb, x, &bn, rg, rdx, &dg[0], &db[0]), 0);
		for (int want = 0; want < 4; want++) {
			mp_tensor *wdx = want & 1 ? dx : NULL, *wdres = want & 2 ? dres : NULL;
			assert_int_equal(o->fill(fb, dx, 7), 0);
			assert_int_equal(o->fill(fb, dres, 7), 0);
			assert_int_equal(o->bn_relu_backward(fb, x, &bn, y, dy, wdx, &dg[1], &db[1],
							     wdres), 0);
			assert_memory_equal(dg[0].data, dg[1].data, C * sizeof(float));
			assert_memory_equal(db[0].data, db[1].data, C * sizeof(float));
			if (wdx)
				assert_memory_equal(rdx->data, dx->data, count * sizeof(float));
			if (wdres)
				assert_memory_equal(rg->data, dres->data, count * sizeof(float));
		}
	}
	for (int i = 0; i < 13; i++)
		o->release(fb, &t[i]);
	o->release(fb, &invstd);
	for (int i = 0; i < 2; i++) {
		o->release(fb, &dg[i]);
		o->release(fb, &db[i]);
	}
	mp_backend_free(fb);
}

static int setup(void **state)
{
	(void)state;
	be = mp_backend_cpu_new(0);
	mp_rng_seed(&rng, 0x7e57);
	return be ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	mp_backend_free(be);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(whole_net_gradients),
		cmocka_unit_test(names_shapes_counts),
		cmocka_unit_test(flops),
		cmocka_unit_test(init_seeded),
		cmocka_unit_test(init_distribution),
		cmocka_unit_test(forward_sizes),
		cmocka_unit_test(forward_refuses_bad_input),
		cmocka_unit_test(inference_uses_running_stats),
		cmocka_unit_test(config_check_messages),
		cmocka_unit_test(fused_training_matches_separate_ops),
		cmocka_unit_test(fast_fused_training_matches_separate_ops),
		cmocka_unit_test(fast_bn_relu_backward_outputs),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
