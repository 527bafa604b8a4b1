/* The CPU reference backend: every backward pass against central finite
 * differences of its forward pass, forward values against direct formulas,
 * shape errors, and the same bits whatever the thread count.
 *
 * Finite differences. For an operation y = f(x) and a fixed random dy, the
 * scalar L(x) = sum(dy * y) has dL/dx = backward(dy), so each checked input
 * element x_i is moved by +h and -h, the whole forward pass is rerun and
 *   num = (L(x + h e_i) - L(x - h e_i)) / (2h)
 * is compared with the backward pass's value ana. L is summed in double; the
 * step is taken from the float values actually stored (x_i + h rounds), so
 * only two errors are left:
 *  - rounding: each output y_j that moves is rounded to float (relative
 *    6e-8); divided by 2h = 0.02 that is about 3e-6 |y_j| per output, so
 *    a few 1e-5 for the tens of outputs one input reaches here;
 *  - truncation, h^2/6 f''' : zero for the linear operations (conv, linear,
 *    add, shortcut, pooling), about 1e-4 relative for BN and softmax with
 *    unit-scale inputs.
 * Hence |num - ana| <= FD_RTOL |num| + FD_ATOL with FD_RTOL 2e-3 and
 * FD_ATOL 2e-4: the largest error seen over all the shapes below is 1e-4
 * (BN with 4 values per channel, where truncation dominates), at most 0.09
 * of its tolerance (the "# fd" lines print both), so the check has a
 * tenfold margin; yet it fails on a gradient 0.5% too large wherever the
 * gradient exceeds about 0.1, and on any absolute error above 2.2e-4
 * (a pooling gradient divided by h w + 1 instead of h w is caught). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

#define FD_H 1e-2
#define FD_RTOL 2e-3
#define FD_ATOL 2e-4
#define FD_SAMPLES 200 /* inputs checked per tensor: all of them, or this many at random */

static mp_backend *be;

/* ---- helpers -------------------------------------------------------------- */

/* splitmix64: the same numbers on every machine */
static uint64_t rng = 0x5eed;

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double uniform(double lo, double hi)
{
	return lo + (hi - lo) * (double)(rnd() >> 11) / 9007199254740992.0;
}

static int randint(int lo, int hi) /* lo..hi inclusive */
{
	return lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
}

static float *random_array(size_t n, double lo, double hi)
{
	float *a = malloc(n * sizeof *a);
	assert_non_null(a);
	for (size_t i = 0; i < n; i++)
		a[i] = (float)uniform(lo, hi);
	return a;
}

static void talloc(mp_tensor *t, int n, int c, int h, int w)
{
	assert_int_equal(be->ops->alloc(be, t, n, c, h, w), 0);
}

static void tput(mp_tensor *t, const float *host)
{
	assert_int_equal(be->ops->upload(be, t, host), 0);
}

static void tget(const mp_tensor *t, float *host)
{
	assert_int_equal(be->ops->download(be, t, host), 0);
}

/* A new host copy of a tensor. */
static float *tdup(const mp_tensor *t)
{
	float *h = malloc(mp_tensor_count(t) * sizeof *h);
	assert_non_null(h);
	tget(t, h);
	return h;
}

static void trelease(mp_tensor *t)
{
	be->ops->release(be, t);
}

static double dot(const float *a, const float *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

/* ---- the finite-difference check ------------------------------------------------ */

/* L(inputs) for the current host inputs: uploads, runs the forward pass. */
typedef double (*loss_fn)(void *ctx);

/* Compares grad (the backward pass) with central differences of f over the
 * host array x of count elements, all of them or FD_SAMPLES at random. */
static void fd_check(const char *what, float *x, size_t count, loss_fn f, void *ctx,
		     const float *grad)
{
	const size_t samples = count <= FD_SAMPLES ? count : FD_SAMPLES;
	double max_err = 0, max_ratio = 0;
	int bad = 0;
	for (size_t s = 0; s < samples; s++) {
		const size_t i = count <= FD_SAMPLES ? s : rnd() % count;
		const float x0 = x[i], xp = (float)(x0 + FD_H), xm = (float)(x0 - FD_H);
		x[i] = xp;
		const double lp = f(ctx);
		x[i] = xm;
		const double lm = f(ctx);
		x[i] = x0;
		const double num = (lp - lm) / ((double)xp - (double)xm);
		const double err = fabs(num - grad[i]);
		const double tol = FD_RTOL * fabs(num) + FD_ATOL;
		if (err > max_err)
			max_err = err;
		if (err / tol > max_ratio)
			max_ratio = err / tol;
		if (!(err <= tol) && bad++ < 5)
			print_error("%s[%zu]: finite difference %.6g, backward %.6g\n", what, i, num,
				    (double)grad[i]);
	}
	print_message("# fd %-40s %4zu/%-5zu max |num - ana| %.1e (%.2f of tolerance)\n", what,
		      samples, count, max_err, max_ratio);
	assert_int_equal(bad, 0);
}

/* ---- convolution ---------------------------------------------------------------------- */

typedef struct {
	int n, c, h, w, k, kh, kw, stride, pad;
} conv_cfg;

typedef struct {
	conv_cfg g;
	float *x, *w, *dy, *y;
	mp_tensor tx, tw, ty;
} conv_ctx;

static int conv_out(int in, int k, int s, int p)
{
	return (in + 2 * p - k) / s + 1;
}

static double conv_loss(void *p)
{
	conv_ctx *c = p;
	tput(&c->tx, c->x);
	tput(&c->tw, c->w);
	assert_int_equal(be->ops->conv2d_forward(be, &c->tx, &c->tw, &c->ty, c->g.stride, c->g.pad), 0);
	tget(&c->ty, c->y);
	return dot(c->dy, c->y, mp_tensor_count(&c->ty));
}

static void conv_fd_one(conv_cfg g)
{
	conv_ctx c = {.g = g};
	const int oh = conv_out(g.h, g.kh, g.stride, g.pad), ow = conv_out(g.w, g.kw, g.stride, g.pad);
	talloc(&c.tx, g.n, g.c, g.h, g.w);
	talloc(&c.tw, g.k, g.c, g.kh, g.kw);
	talloc(&c.ty, g.n, g.k, oh, ow);
	mp_tensor tdy, tdx, tdw;
	talloc(&tdy, g.n, g.k, oh, ow);
	talloc(&tdx, g.n, g.c, g.h, g.w);
	talloc(&tdw, g.k, g.c, g.kh, g.kw);
	c.x = random_array(mp_tensor_count(&c.tx), -1, 1);
	c.w = random_array(mp_tensor_count(&c.tw), -1, 1);
	c.dy = random_array(mp_tensor_count(&c.ty), -1, 1);
	c.y = malloc(mp_tensor_count(&c.ty) * sizeof(float));

	conv_loss(&c);
	tput(&tdy, c.dy);
	assert_int_equal(be->ops->conv2d_backward(be, &c.tx, &c.tw, &tdy, &tdx, &tdw, g.stride, g.pad), 0);
	float *dx = tdup(&tdx), *dw = tdup(&tdw);

	char name[96];
	snprintf(name, sizeof name, "conv %dx%dx%dx%d k%dx%dx%d s%d p%d dx", g.n, g.c, g.h, g.w,
		 g.k, g.kh, g.kw, g.stride, g.pad);
	fd_check(name, c.x, mp_tensor_count(&c.tx), conv_loss, &c, dx);
	name[strlen(name) - 1] = 'w';
	fd_check(name, c.w, mp_tensor_count(&c.tw), conv_loss, &c, dw);

	/* NULL outputs are skipped; the other one is the same */
	float *dw2 = malloc(mp_tensor_count(&tdw) * sizeof(float));
	assert_int_equal(be->ops->conv2d_backward(be, &c.tx, &c.tw, &tdy, NULL, &tdw, g.stride, g.pad), 0);
	tget(&tdw, dw2);
	assert_memory_equal(dw, dw2, mp_tensor_count(&tdw) * sizeof(float));
	assert_int_equal(be->ops->conv2d_backward(be, &c.tx, &c.tw, &tdy, NULL, NULL, g.stride, g.pad), 0);

	free(dw2);
	free(dx);
	free(dw);
	free(c.x);
	free(c.w);
	free(c.dy);
	free(c.y);
	trelease(&c.tx);
	trelease(&c.tw);
	trelease(&c.ty);
	trelease(&tdy);
	trelease(&tdx);
	trelease(&tdw);
}

static void conv_gradients(void **state)
{
	(void)state;
	static const conv_cfg fixed[] = {
		/* n, c, h, w, k, kh, kw, stride, pad */
		{2, 3, 7, 5, 4, 3, 3, 1, 1},	/* the block's 3x3, odd non-square input */
		{2, 3, 7, 5, 4, 3, 3, 2, 1},	/* its strided first conv */
		{3, 2, 6, 9, 3, 1, 1, 1, 0},	/* 1x1 */
		{2, 4, 5, 8, 3, 1, 1, 2, 0},	/* 1x1 stride 2: the projection shortcut */
		{2, 3, 8, 6, 2, 3, 3, 2, 0},	/* 3x3 stride 2, no padding */
		{2, 2, 4, 4, 2, 1, 1, 1, 1},	/* 1x1 with padding: a zero border */
		{2, 3, 6, 5, 2, 3, 1, 1, 1},	/* a non-square kernel */
		{1, 3, 9, 9, 2, 5, 5, 2, 2},	/* a bigger kernel, batch 1 */
	};
	for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
		conv_fd_one(fixed[i]);
	for (int i = 0; i < 4; i++) {	/* random shapes from the fixed seed */
		conv_cfg g;
		g.n = randint(1, 3);
		g.c = randint(1, 4);
		g.h = randint(3, 9);
		g.w = randint(3, 9);
		g.k = randint(1, 4);
		g.kh = g.kw = randint(0, 1) ? 3 : 1;
		g.stride = randint(1, 2);
		g.pad = randint(0, 1);
		conv_fd_one(g);
	}
}

/* The forward pass against the definition, summed in double in the test. */
static void conv_forward_values(void **state)
{
	(void)state;
	static const conv_cfg shapes[] = {{3, 5, 9, 7, 4, 3, 3, 2, 1}, {2, 3, 6, 8, 5, 3, 3, 1, 1}};
	for (size_t s = 0; s < 2; s++) {
		const conv_cfg g = shapes[s];
		const int oh = conv_out(g.h, g.kh, g.stride, g.pad);
		const int ow = conv_out(g.w, g.kw, g.stride, g.pad);
		mp_tensor tx, tw, ty;
		talloc(&tx, g.n, g.c, g.h, g.w);
		talloc(&tw, g.k, g.c, g.kh, g.kw);
		talloc(&ty, g.n, g.k, oh, ow);
		float *x = random_array(mp_tensor_count(&tx), -1, 1);
		float *w = random_array(mp_tensor_count(&tw), -1, 1);
		tput(&tx, x);
		tput(&tw, w);
		assert_int_equal(be->ops->conv2d_forward(be, &tx, &tw, &ty, g.stride, g.pad), 0);
		float *y = tdup(&ty);
		double max_rel = 0;
		for (int n = 0; n < g.n; n++)
		for (int k = 0; k < g.k; k++)
		for (int oy = 0; oy < oh; oy++)
		for (int ox = 0; ox < ow; ox++) {
			double ref = 0;
			for (int c = 0; c < g.c; c++)
			for (int i = 0; i < g.kh; i++)
			for (int j = 0; j < g.kw; j++) {
				int iy = oy * g.stride - g.pad + i, ix = ox * g.stride - g.pad + j;
				if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w)
					continue;
				ref += (double)w[((k * g.c + c) * g.kh + i) * g.kw + j] *
				       x[((n * g.c + c) * g.h + iy) * g.w + ix];
			}
			const double got = y[((n * g.k + k) * oh + oy) * ow + ox];
			/* the backend sums in double too and rounds once: within
			 * one float ulp of the exact sum */
			assert_true(fabs(got - ref) <= 1.2e-7 * fabs(ref) + 1e-12);
			if (fabs(ref) > 0 && fabs(got - ref) / fabs(ref) > max_rel)
				max_rel = fabs(got - ref) / fabs(ref);
		}
		print_message("# conv forward %dx%dx%dx%d k%d s%d p%d: max relative error %.1e\n",
			      g.n, g.c, g.h, g.w, g.k, g.stride, g.pad, max_rel);
		free(x);
		free(w);
		free(y);
		trelease(&tx);
		trelease(&tw);
		trelease(&ty);
	}
}

/* ---- batch normalization ------------------------------------------------------------- */

typedef struct {
	int n, c, h, w;
	float *x, *gamma, *beta, *dy, *y;
	mp_tensor tx, ty, tg, tb, trm, trv, tsm, tsi;
	mp_bn bn;
} bn_ctx;

static void bn_setup(bn_ctx *b, int n, int c, int h, int w)
{
	memset(b, 0, sizeof *b);
	b->n = n, b->c = c, b->h = h, b->w = w;
	talloc(&b->tx, n, c, h, w);
	talloc(&b->ty, n, c, h, w);
	/* per-channel tensors in the two layouts the backend accepts */
	talloc(&b->tg, c, 1, 1, 1);
	talloc(&b->tb, 1, c, 1, 1);
	talloc(&b->trm, c, 1, 1, 1);
	talloc(&b->trv, c, 1, 1, 1);
	talloc(&b->tsm, c, 1, 1, 1);
	talloc(&b->tsi, c, 1, 1, 1);
	b->bn = (mp_bn){.gamma = &b->tg, .beta = &b->tb, .running_mean = &b->trm,
			.running_var = &b->trv, .save_mean = &b->tsm, .save_invstd = &b->tsi,
			.eps = 1e-3f, .momentum = 0.9f};
	const size_t count = mp_tensor_count(&b->tx);
	/* an offset and a scale, so that the mean and variance paths matter */
	b->x = random_array(count, -1.5, 2.5);
	b->gamma = random_array(c, 0.5, 1.5);
	b->beta = random_array(c, -0.5, 0.5);
	b->dy = random_array(count, -1, 1);
	b->y = malloc(count * sizeof(float));
	assert_int_equal(be->ops->fill(be, &b->trm, 0), 0);
	assert_int_equal(be->ops->fill(be, &b->trv, 1), 0);
}

static void bn_teardown(bn_ctx *b)
{
	free(b->x);
	free(b->gamma);
	free(b->beta);
	free(b->dy);
	free(b->y);
	mp_tensor *ts[] = {&b->tx, &b->ty, &b->tg, &b->tb, &b->trm, &b->trv, &b->tsm, &b->tsi};
	for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
		trelease(ts[i]);
}

static double bn_loss(void *p)
{
	bn_ctx *b = p;
	tput(&b->tx, b->x);
	tput(&b->tg, b->gamma);
	tput(&b->tb, b->beta);
	assert_int_equal(be->ops->bn_forward_train(be, &b->tx, &b->bn, &b->ty), 0);
	tget(&b->ty, b->y);
	return dot(b->dy, b->y, mp_tensor_count(&b->ty));
}

static void bn_gradients(void **state)
{
	(void)state;
	static const int shapes[][4] = {
		{3, 4, 5, 3},	/* after a conv */
		{2, 3, 3, 4},
		{4, 5, 1, 1},	/* after the fully connected layer: 4 values per channel */
		{1, 2, 2, 3},	/* batch 1: statistics over space only */
	};
	for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
		bn_ctx b;
		bn_setup(&b, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3]);
		mp_tensor tdy, tdx, tdg, tdb;
		talloc(&tdy, b.n, b.c, b.h, b.w);
		talloc(&tdx, b.n, b.c, b.h, b.w);
		talloc(&tdg, b.c, 1, 1, 1);
		talloc(&tdb, b.c, 1, 1, 1);
		bn_loss(&b); /* the saved statistics of the unperturbed batch */
		tput(&tdy, b.dy);
		assert_int_equal(be->ops->bn_backward(be, &b.tx, &b.bn, &tdy, &tdx, &tdg, &tdb), 0);
		float *dx = tdup(&tdx), *dg = tdup(&tdg), *db = tdup(&tdb);
		char name[96];
		int len = snprintf(name, sizeof name, "bn %dx%dx%dx%d ", b.n, b.c, b.h, b.w);
		snprintf(name + len, sizeof name - len, "dx");
		fd_check(name, b.x, mp_tensor_count(&b.tx), bn_loss, &b, dx);
		snprintf(name + len, sizeof name - len, "dgamma");
		fd_check(name, b.gamma, b.c, bn_loss, &b, dg);
		snprintf(name + len, sizeof name - len, "dbeta");
		fd_check(name, b.beta, b.c, bn_loss, &b, db);
		free(dx);
		free(dg);
		free(db);
		trelease(&tdy);
		trelease(&tdx);
		trelease(&tdg);
		trelease(&tdb);
		bn_teardown(&b);
	}
}

/* Saved and running statistics after one training step, and both passes'
 * outputs, against the formulas computed here in double. */
static void bn_values(void **state)
{
	(void)state;
	bn_ctx b;
	bn_setup(&b, 3, 4, 5, 2);
	const int C = b.c;
	const size_t plane = (size_t)b.h * b.w, m = b.n * plane;
	float *rm0 = random_array(C, -1, 1), *rv0 = random_array(C, 0.5, 2);
	tput(&b.trm, rm0);
	tput(&b.trv, rv0);
	bn_loss(&b);
	float *sm = tdup(&b.tsm), *si = tdup(&b.tsi), *rm = tdup(&b.trm), *rv = tdup(&b.trv);
	for (int c = 0; c < C; c++) {
		double sum = 0, sq = 0;
		for (int n = 0; n < b.n; n++)
			for (size_t i = 0; i < plane; i++)
				sum += b.x[(n * C + c) * plane + i];
		const double mean = sum / m;
		for (int n = 0; n < b.n; n++)
			for (size_t i = 0; i < plane; i++) {
				double d = b.x[(n * C + c) * plane + i] - mean;
				sq += d * d;
			}
		const double var = sq / m, unbiased = sq / (m - 1);
		const double invstd = 1 / sqrt(var + 1e-3f);
		assert_true(fabs(sm[c] - mean) <= 1e-6 * (1 + fabs(mean)));
		assert_true(fabs(si[c] - invstd) <= 1e-6 * invstd);
		/* PyTorch's update with its momentum 0.1 = 1 - ours */
		const double erm = 0.9f * (double)rm0[c] + (1 - 0.9f) * mean;
		const double erv = 0.9f * (double)rv0[c] + (1 - 0.9f) * unbiased;
		assert_true(fabs(rm[c] - erm) <= 1e-6 * (1 + fabs(erm)));
		assert_true(fabs(rv[c] - erv) <= 1e-6 * (1 + fabs(erv)));
		for (int n = 0; n < b.n; n++)
			for (size_t i = 0; i < plane; i++) {
				const size_t k = (n * C + c) * plane + i;
				const double ey = (b.x[k] - mean) * invstd * b.gamma[c] + b.beta[c];
				assert_true(fabs(b.y[k] - ey) <= 1e-6 * (1 + fabs(ey)));
			}
	}
	/* inference uses the running statistics */
	assert_int_equal(be->ops->bn_forward_infer(be, &b.tx, &b.bn, &b.ty), 0);
	tget(&b.ty, b.y);
	for (int c = 0; c < C; c++)
		for (int n = 0; n < b.n; n++)
			for (size_t i = 0; i < plane; i++) {
				const size_t k = (n * C + c) * plane + i;
				const double ey = (b.x[k] - (double)rm[c]) / sqrt((double)rv[c] + 1e-3f) *
						  b.gamma[c] + b.beta[c];
				assert_true(fabs(b.y[k] - ey) <= 1e-6 * (1 + fabs(ey)));
			}
	free(rm0);
	free(rv0);
	free(sm);
	free(si);
	free(rm);
	free(rv);
	bn_teardown(&b);
}

/* ---- ReLU, add ---------------------------------------------------------------------- */

typedef struct {
	float *x, *dy, *y;
	mp_tensor tx, ty;
} unary_ctx;

static double relu_loss(void *p)
{
	unary_ctx *u = p;
	tput(&u->tx, u->x);
	assert_int_equal(be->ops->relu_forward(be, &u->tx, &u->ty), 0);
	tget(&u->ty, u->y);
	return dot(u->dy, u->y, mp_tensor_count(&u->ty));
}

static void relu_gradients(void **state)
{
	(void)state;
	unary_ctx u;
	talloc(&u.tx, 3, 4, 5, 3);
	talloc(&u.ty, 3, 4, 5, 3);
	const size_t count = mp_tensor_count(&u.tx);
	/* |x| >= 0.1 > h: no step crosses the kink at 0 */
	u.x = random_array(count, 0.1, 1);
	for (size_t i = 0; i < count; i++)
		if (rnd() & 1)
			u.x[i] = -u.x[i];
	u.dy = random_array(count, -1, 1);
	u.y = malloc(count * sizeof(float));
	relu_loss(&u);
	for (size_t i = 0; i < count; i++)
		assert_true(u.y[i] == (u.x[i] > 0 ? u.x[i] : 0));
	mp_tensor tdy, tdx;
	talloc(&tdy, 3, 4, 5, 3);
	talloc(&tdx, 3, 4, 5, 3);
	tput(&tdy, u.dy);
	assert_int_equal(be->ops->relu_backward(be, &u.ty, &tdy, &tdx), 0);
	float *dx = tdup(&tdx);
	fd_check("relu 3x4x5x3 dx", u.x, count, relu_loss, &u, dx);
	free(dx);
	free(u.x);
	free(u.dy);
	free(u.y);
	trelease(&u.tx);
	trelease(&u.ty);
	trelease(&tdy);
	trelease(&tdx);
}

typedef struct {
	float *a, *b, *dy, *y;
	mp_tensor ta, tb, ty;
} add_ctx;

static double add_loss(void *p)
{
	add_ctx *c = p;
	tput(&c->ta, c->a);
	tput(&c->tb, c->b);
	assert_int_equal(be->ops->add(be, &c->ta, &c->tb, &c->ty), 0);
	tget(&c->ty, c->y);
	return dot(c->dy, c->y, mp_tensor_count(&c->ty));
}

static void add_gradients(void **state)
{
	(void)state;
	add_ctx c;
	talloc(&c.ta, 2, 3, 5, 4);
	talloc(&c.tb, 2, 3, 5, 4);
	talloc(&c.ty, 2, 3, 5, 4);
	const size_t count = mp_tensor_count(&c.ta);
	c.a = random_array(count, -1, 1);
	c.b = random_array(count, -1, 1);
	c.dy = random_array(count, -1, 1);
	c.y = malloc(count * sizeof(float));
	/* its backward pass is the identity: the gradient of both is dy */
	fd_check("add 2x3x5x4 da", c.a, count, add_loss, &c, c.dy);
	fd_check("add 2x3x5x4 db", c.b, count, add_loss, &c, c.dy);
	/* y may alias an input */
	add_loss(&c);
	assert_int_equal(be->ops->add(be, &c.ta, &c.tb, &c.ta), 0);
	float *a = tdup(&c.ta);
	assert_memory_equal(a, c.y, count * sizeof(float));
	free(a);
	free(c.a);
	free(c.b);
	free(c.dy);
	free(c.y);
	trelease(&c.ta);
	trelease(&c.tb);
	trelease(&c.ty);
}

/* ---- shortcut, pooling, linear ---------------------------------------------------------- */

typedef struct {
	int stride;
	float *x, *dy, *y;
	mp_tensor tx, ty;
} shortcut_ctx;

static double shortcut_loss(void *p)
{
	shortcut_ctx *s = p;
	tput(&s->tx, s->x);
	assert_int_equal(be->ops->shortcut_a_forward(be, &s->tx, &s->ty, s->stride), 0);
	tget(&s->ty, s->y);
	return dot(s->dy, s->y, mp_tensor_count(&s->ty));
}

static void shortcut_gradients(void **state)
{
	(void)state;
	static const int cfg[][6] = {
		/* n, x channels, h, w, y channels, stride */
		{2, 3, 7, 5, 3, 1},	/* identity */
		{2, 3, 6, 6, 3, 2},
		{2, 3, 7, 5, 5, 2},	/* odd size: ceil(7 / 2) = 4 rows */
		{2, 2, 8, 6, 4, 2},	/* the stage transition: twice the channels */
		{1, 3, 5, 5, 6, 1},	/* extra channels at stride 1 */
		{3, 2, 1, 1, 4, 2},	/* a single pixel */
	};
	for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
		const int n = cfg[k][0], cx = cfg[k][1], h = cfg[k][2], w = cfg[k][3];
		const int cy = cfg[k][4], st = cfg[k][5];
		const int oh = (h + st - 1) / st, ow = (w + st - 1) / st;
		shortcut_ctx s = {.stride = st};
		talloc(&s.tx, n, cx, h, w);
		talloc(&s.ty, n, cy, oh, ow);
		s.x = random_array(mp_tensor_count(&s.tx), -1, 1);
		s.dy = random_array(mp_tensor_count(&s.ty), -1, 1);
		s.y = malloc(mp_tensor_count(&s.ty) * sizeof(float));
		shortcut_loss(&s);
		for (int a = 0; a < n; a++)
			for (int c = 0; c < cy; c++)
				for (int i = 0; i < oh; i++)
					for (int j = 0; j < ow; j++)
						assert_true(s.y[((a * cy + c) * oh + i) * ow + j] ==
							    (c < cx ? s.x[((a * cx + c) * h + i * st) * w + j * st] : 0));
		mp_tensor tdy, tdx;
		talloc(&tdy, n, cy, oh, ow);
		talloc(&tdx, n, cx, h, w);
		tput(&tdy, s.dy);
		assert_int_equal(be->ops->fill(be, &tdx, 7), 0); /* overwritten, not accumulated */
		assert_int_equal(be->ops->shortcut_a_backward(be, &tdy, &tdx, st), 0);
		float *dx = tdup(&tdx);
		char name[96];
		snprintf(name, sizeof name, "shortcut %dx%dx%dx%d -> %d s%d dx", n, cx, h, w, cy, st);
		fd_check(name, s.x, mp_tensor_count(&s.tx), shortcut_loss, &s, dx);
		free(dx);
		free(s.x);
		free(s.dy);
		free(s.y);
		trelease(&s.tx);
		trelease(&s.ty);
		trelease(&tdy);
		trelease(&tdx);
	}
}

static double avgpool_loss(void *p)
{
	unary_ctx *u = p;
	tput(&u->tx, u->x);
	assert_int_equal(be->ops->avgpool_forward(be, &u->tx, &u->ty), 0);
	tget(&u->ty, u->y);
	return dot(u->dy, u->y, mp_tensor_count(&u->ty));
}

static void avgpool_gradients(void **state)
{
	(void)state;
	static const int shapes[][4] = {{3, 4, 5, 7}, {2, 3, 1, 1}, {2, 2, 7, 7}};
	for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
		const int n = shapes[k][0], c = shapes[k][1], h = shapes[k][2], w = shapes[k][3];
		unary_ctx u;
		talloc(&u.tx, n, c, h, w);
		talloc(&u.ty, n, c, 1, 1);
		u.x = random_array(mp_tensor_count(&u.tx), -1, 1);
		u.dy = random_array(n * c, -1, 1);
		u.y = malloc(n * c * sizeof(float));
		avgpool_loss(&u);
		for (int p = 0; p < n * c; p++) {
			double s = 0;
			for (int i = 0; i < h * w; i++)
				s += u.x[p * h * w + i];
			assert_true(fabs(u.y[p] - s / (h * w)) <= 1e-7);
		}
		mp_tensor tdy, tdx;
		talloc(&tdy, n, c, 1, 1);
		talloc(&tdx, n, c, h, w);
		tput(&tdy, u.dy);
		assert_int_equal(be->ops->avgpool_backward(be, &tdy, &tdx), 0);
		float *dx = tdup(&tdx);
		char name[96];
		snprintf(name, sizeof name, "avgpool %dx%dx%dx%d dx", n, c, h, w);
		fd_check(name, u.x, mp_tensor_count(&u.tx), avgpool_loss, &u, dx);
		free(dx);
		free(u.x);
		free(u.dy);
		free(u.y);
		trelease(&u.tx);
		trelease(&u.ty);
		trelease(&tdy);
		trelease(&tdx);
	}
}

typedef struct {
	float *x, *w, *dy, *y;
	mp_tensor tx, tw, ty;
} linear_ctx;

static double linear_loss(void *p)
{
	linear_ctx *l = p;
	tput(&l->tx, l->x);
	tput(&l->tw, l->w);
	assert_int_equal(be->ops->linear_forward(be, &l->tx, &l->tw, &l->ty), 0);
	tget(&l->ty, l->y);
	return dot(l->dy, l->y, mp_tensor_count(&l->ty));
}

static void linear_gradients(void **state)
{
	(void)state;
	static const int shapes[][3] = {{3, 7, 5}, {1, 4, 3}, {6, 33, 10}}; /* n, in, out */
	for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
		const int n = shapes[k][0], in = shapes[k][1], out = shapes[k][2];
		linear_ctx l;
		talloc(&l.tx, n, in, 1, 1);
		talloc(&l.tw, out, in, 1, 1);
		talloc(&l.ty, n, out, 1, 1);
		l.x = random_array(n * in, -1, 1);
		l.w = random_array(out * in, -1, 1);
		l.dy = random_array(n * out, -1, 1);
		l.y = malloc(n * out * sizeof(float));
		linear_loss(&l);
		for (int a = 0; a < n; a++)
			for (int o = 0; o < out; o++) {
				double s = 0;
				for (int i = 0; i < in; i++)
					s += (double)l.x[a * in + i] * l.w[o * in + i];
				assert_true(fabs(l.y[a * out + o] - s) <= 1.2e-7 * fabs(s) + 1e-12);
			}
		mp_tensor tdy, tdx, tdw;
		talloc(&tdy, n, out, 1, 1);
		talloc(&tdx, n, in, 1, 1);
		talloc(&tdw, out, in, 1, 1);
		tput(&tdy, l.dy);
		assert_int_equal(be->ops->linear_backward(be, &l.tx, &l.tw, &tdy, &tdx, &tdw), 0);
		float *dx = tdup(&tdx), *dw = tdup(&tdw);
		char name[96];
		snprintf(name, sizeof name, "linear %dx%d -> %d dx", n, in, out);
		fd_check(name, l.x, n * in, linear_loss, &l, dx);
		name[strlen(name) - 1] = 'w';
		fd_check(name, l.w, out * in, linear_loss, &l, dw);
		free(dx);
		free(dw);
		free(l.x);
		free(l.w);
		free(l.dy);
		free(l.y);
		trelease(&l.tx);
		trelease(&l.tw);
		trelease(&l.ty);
		trelease(&tdy);
		trelease(&tdx);
		trelease(&tdw);
	}
}

/* ---- softmax cross-entropy ------------------------------------------------------------ */

typedef struct {
	float *z;
	float smoothing;
	int32_t *labels;
	mp_tensor tz, tp;
} xent_ctx;

static double xent_loss(void *p)
{
	xent_ctx *x = p;
	double loss = -1;
	tput(&x->tz, x->z);
	assert_int_equal(be->ops->softmax_xent_forward(be, &x->tz, x->labels, x->smoothing,
						       &x->tp, &loss), 0);
	return loss;
}

static void xent_gradients(void **state)
{
	(void)state;
	const int n = 5, k = 7;
	const float smoothing[] = {0, 0.1f, 0.5f};
	for (int s = 0; s < 3; s++) {
		xent_ctx x = {.smoothing = smoothing[s]};
		talloc(&x.tz, n, k, 1, 1);
		talloc(&x.tp, n, k, 1, 1);
		x.z = random_array(n * k, -3, 3);
		x.labels = malloc(n * sizeof(int32_t));
		for (int i = 0; i < n; i++)
			x.labels[i] = randint(0, k - 1);
		xent_loss(&x);
		float *p = tdup(&x.tp);
		for (int i = 0; i < n; i++) {
			double sum = 0;
			for (int j = 0; j < k; j++)
				sum += p[i * k + j];
			assert_true(fabs(sum - 1) <= 1e-6);
		}
		mp_tensor td;
		talloc(&td, n, k, 1, 1);
		assert_int_equal(be->ops->softmax_xent_backward(be, &x.tp, x.labels, x.smoothing, &td), 0);
		float *d = tdup(&td);
		char name[96];
		snprintf(name, sizeof name, "softmax_xent %dx%d smoothing %g dlogits", n, k,
			 (double)x.smoothing);
		fd_check(name, x.z, n * k, xent_loss, &x, d);
		free(d);
		free(p);
		free(x.z);
		free(x.labels);
		trelease(&x.tz);
		trelease(&x.tp);
		trelease(&td);
	}
}

/* Two classes by hand: logits (1, 3) with label 0 and (2, -1) with label 1.
 * With a = -log p(first) and b = -log p(second), for logits (u, v):
 * a = log(1 + e^(v - u)), b = log(1 + e^(u - v)). */
static void xent_values(void **state)
{
	(void)state;
	mp_tensor tz, tp;
	talloc(&tz, 2, 2, 1, 1);
	talloc(&tp, 2, 2, 1, 1);
	const float z[] = {1, 3, 2, -1};
	const int32_t labels[] = {0, 1};
	tput(&tz, z);
	const double a0 = log(1 + exp(2.0)), b0 = log(1 + exp(-2.0)); /* row 0 */
	const double a1 = log(1 + exp(-3.0)), b1 = log(1 + exp(3.0)); /* row 1 */
	double loss;
	assert_int_equal(be->ops->softmax_xent_forward(be, &tz, labels, 0, &tp, &loss), 0);
	assert_true(fabs(loss - (a0 + b1) / 2) <= 1e-7);
	float p[4];
	tget(&tp, p);
	assert_true(fabs(p[0] - 1 / (1 + exp(2.0))) <= 1e-7);
	assert_true(fabs(p[3] - 1 / (1 + exp(3.0))) <= 1e-7);
	/* smoothing 0.2 over 2 classes: targets 0.9 and 0.1 */
	assert_int_equal(be->ops->softmax_xent_forward(be, &tz, labels, 0.2f, &tp, &loss), 0);
	const double s = 0.2f;
	const double hi = 1 - s + s / 2, lo = s / 2;
	assert_true(fabs(loss - (hi * a0 + lo * b0 + lo * a1 + hi * b1) / 2) <= 1e-7);
	mp_tensor td;
	talloc(&td, 2, 2, 1, 1);
	assert_int_equal(be->ops->softmax_xent_backward(be, &tp, labels, 0.2f, &td), 0);
	float d[4];
	tget(&td, d);
	assert_true(fabs(d[0] - (p[0] - hi) / 2) <= 1e-7);
	assert_true(fabs(d[1] - (p[1] - lo) / 2) <= 1e-7);
	/* stable for large logits: no overflow to inf or NaN */
	const float big[] = {0, 1000, -1000, 1000};
	tput(&tz, big);
	assert_int_equal(be->ops->softmax_xent_forward(be, &tz, labels, 0, &tp, &loss), 0);
	assert_true(fabs(loss - 1000 / 2.0) <= 1e-9); /* row 0: -log p = 1000; row 1: 0 */
	trelease(&tz);
	trelease(&tp);
	trelease(&td);
}

/* ---- SGD ------------------------------------------------------------------------------- */

static void sgd_values(void **state)
{
	(void)state;
	const float w0[] = {1.0f, -0.5f, 0.25f, 3.0f, 1e-3f, -2.0f};
	const float g0[] = {0.1f, 0.2f, -0.3f, 0.0f, 5.0f, -0.01f};
	const float v0[] = {0.0f, 0.05f, -0.1f, 1.0f, 0.3f, -0.2f};
	const float lr = 0.1f, mom = 0.9f, wd = 5e-4f;
	mp_tensor w[2], g[2], v[2], lr_t;
	talloc(&lr_t, 1, 1, 1, 1);
	tput(&lr_t, &lr);
	/* two tensors of 4 and 2 elements */
	const int sizes[2] = {4, 2};
	for (int t = 0, off = 0; t < 2; off += sizes[t], t++) {
		talloc(&w[t], sizes[t], 1, 1, 1);
		talloc(&g[t], sizes[t], 1, 1, 1);
		talloc(&v[t], sizes[t], 1, 1, 1);
		tput(&w[t], w0 + off);
		tput(&g[t], g0 + off);
		tput(&v[t], v0 + off);
	}
	mp_tensor *wl[] = {&w[0], &w[1]}, *vl[] = {&v[0], &v[1]};
	const mp_tensor *gl[] = {&g[0], &g[1]};
	/* the expected values in float, in the backend's order, so equal bits */
	float ew[6], ev[6], got_w[6], got_v[6];
	memcpy(ew, w0, sizeof ew);
	memcpy(ev, v0, sizeof ev);
	for (int step = 0; step < 2; step++) {
		assert_int_equal(be->ops->sgd_step(be, wl, gl, vl, 2, &lr_t, mom, wd), 0);
		for (int i = 0; i < 6; i++) {
			ev[i] = mom * ev[i] - lr * (g0[i] + wd * ew[i]);
			ew[i] = ew[i] + ev[i];
		}
		tget(&w[0], got_w);
		tget(&w[1], got_w + 4);
		tget(&v[0], got_v);
		tget(&v[1], got_v + 4);
		assert_memory_equal(got_w, ew, sizeof ew);
		assert_memory_equal(got_v, ev, sizeof ev);
		if (step == 0) {
			/* and by hand for w = 1, g = 0.1, v = 0:
			 * v = -0.1 (0.1 + 5e-4 * 1) = -0.01005, w = 1 - 0.01005 */
			assert_true(fabs(got_v[0] - -0.01005) < 1e-8);
			assert_true(fabs(got_w[0] - 0.98995) < 1e-7);
		}
	}
	assert_int_equal(be->ops->sgd_step(be, wl, gl, vl, 0, &lr_t, mom, wd), 0);
	/* the rate is read when the step runs: a new value, a new step */
	const float lr2 = 0.5f;
	tput(&lr_t, &lr2);
	assert_int_equal(be->ops->sgd_step(be, wl, gl, vl, 2, &lr_t, mom, wd), 0);
	for (int i = 0; i < 6; i++) {
		ev[i] = mom * ev[i] - lr2 * (g0[i] + wd * ew[i]);
		ew[i] = ew[i] + ev[i];
	}
	tget(&w[0], got_w);
	tget(&w[1], got_w + 4);
	assert_memory_equal(got_w, ew, sizeof ew);
	trelease(&lr_t);
	for (int t = 0; t < 2; t++) {
		trelease(&w[t]);
		trelease(&g[t]);
		trelease(&v[t]);
	}
}

/* ---- errors ----------------------------------------------------------------------------------- */

/* rc is -1 and the message is exactly msg (or starts with op when msg is NULL). */
static void expect_error(int rc, const char *op, const char *msg)
{
	assert_int_equal(rc, -1);
	const char *e = mp_backend_error(be);
	if (msg)
		assert_string_equal(e, msg);
	assert_true(strncmp(e, op, strlen(op)) == 0 && e[strlen(op)] == ':');
}

static void shape_errors(void **state)
{
	(void)state;
	const mp_backend_ops *o = be->ops;
	mp_tensor x, w, y, bad;
	talloc(&x, 4, 3, 7, 7);
	talloc(&w, 16, 3, 3, 3);
	talloc(&y, 4, 16, 8, 8);
	expect_error(o->conv2d_forward(be, &x, &w, &y, 1, 0), "conv2d_forward",
		     "conv2d_forward: y is 4x16x8x8, expected 4x16x5x5");
	trelease(&y);
	talloc(&y, 4, 16, 7, 7);
	assert_int_equal(o->conv2d_forward(be, &x, &w, &y, 1, 1), 0);
	expect_error(o->conv2d_forward(be, &x, &w, &y, 0, 1), "conv2d_forward", NULL);
	expect_error(o->conv2d_forward(be, &x, &w, &y, 1, -1), "conv2d_forward", NULL);
	talloc(&bad, 16, 4, 3, 3);
	expect_error(o->conv2d_forward(be, &x, &bad, &y, 1, 1), "conv2d_forward",
		     "conv2d_forward: w is 16x4x3x3 for 4 input channels, x has 3");
	trelease(&bad);
	talloc(&bad, 16, 3, 9, 9);
	expect_error(o->conv2d_forward(be, &x, &bad, &y, 1, 0), "conv2d_forward", NULL);
	trelease(&bad);
	talloc(&bad, 16, 3, 3, 2);
	expect_error(o->conv2d_backward(be, &x, &w, &y, NULL, &bad, 1, 1), "conv2d_backward",
		     "conv2d_backward: dw is 16x3x3x2, expected 16x3x3x3");
	expect_error(o->conv2d_backward(be, &x, &w, &y, &y, NULL, 1, 1), "conv2d_backward",
		     "conv2d_backward: dx is 4x16x7x7, expected 4x3x7x7");
	expect_error(o->conv2d_backward(be, &x, &w, &y, NULL, NULL, 2, 1), "conv2d_backward",
		     "conv2d_backward: dy is 4x16x7x7, expected 4x16x4x4");
	trelease(&bad);

	/* missing or unallocated tensors are errors, not crashes */
	mp_tensor empty = {0};
	expect_error(o->conv2d_forward(be, NULL, &w, &y, 1, 1), "conv2d_forward", NULL);
	expect_error(o->relu_forward(be, &x, &empty), "relu_forward", NULL);
	mp_tensor unalloc = {.n = 4, .c = 3, .h = 7, .w = 7};
	expect_error(o->relu_forward(be, &unalloc, &x), "relu_forward",
		     "relu_forward: x is not allocated");
	expect_error(o->alloc(be, &bad, 4, 0, 7, 7), "alloc", NULL);
	assert_null(bad.data);
	expect_error(o->alloc(be, &bad, 1 << 30, 1 << 30, 1 << 30, 1 << 30), "alloc", NULL);

	/* BN */
	bn_ctx b;
	bn_setup(&b, 2, 3, 2, 2);
	tput(&b.tx, b.x);
	tput(&b.tg, b.gamma);
	tput(&b.tb, b.beta);
	mp_tensor *keep = b.bn.gamma;
	talloc(&bad, 4, 1, 1, 1);
	b.bn.gamma = &bad;
	expect_error(o->bn_forward_train(be, &b.tx, &b.bn, &b.ty), "bn_forward_train",
		     "bn_forward_train: gamma is 4x1x1x1, expected 3 values (one per channel)");
	expect_error(o->bn_forward_infer(be, &b.tx, &b.bn, &b.ty), "bn_forward_infer", NULL);
	b.bn.gamma = keep;
	expect_error(o->bn_forward_train(be, &b.tx, &b.bn, &x), "bn_forward_train", NULL);
	expect_error(o->bn_backward(be, &b.tx, &b.bn, &b.ty, &b.ty, &bad, NULL), "bn_backward",
		     "bn_backward: dgamma is 4x1x1x1, expected 3 values (one per channel)");
	trelease(&bad);
	talloc(&bad, 1, 3, 1, 1);
	expect_error(o->bn_forward_train(be, &bad, &b.bn, &bad), "bn_forward_train", NULL);
	assert_int_equal(o->bn_forward_infer(be, &bad, &b.bn, &bad), 0); /* fine for inference */
	trelease(&bad);
	bn_teardown(&b);

	/* add, shortcut, pooling, linear */
	talloc(&bad, 4, 3, 7, 6);
	expect_error(o->add(be, &x, &bad, &x), "add", "add: b is 4x3x7x6, expected 4x3x7x7");
	expect_error(o->relu_backward(be, &x, &bad, &x), "relu_backward", NULL);
	trelease(&bad);
	talloc(&bad, 4, 2, 4, 4);
	expect_error(o->shortcut_a_forward(be, &x, &bad, 2), "shortcut_a_forward",
		     "shortcut_a_forward: y has 2 channels, fewer than x's 3");
	trelease(&bad);
	talloc(&bad, 4, 6, 3, 3);	/* floor(7 / 2) rows instead of ceil */
	expect_error(o->shortcut_a_forward(be, &x, &bad, 2), "shortcut_a_forward",
		     "shortcut_a_forward: y is 4x6x3x3, expected 4x6x4x4");
	expect_error(o->shortcut_a_backward(be, &bad, &x, 2), "shortcut_a_backward", NULL);
	expect_error(o->avgpool_forward(be, &x, &bad), "avgpool_forward", NULL);
	trelease(&bad);
	mp_tensor fx, fw, fy;
	talloc(&fx, 4, 10, 1, 1);
	talloc(&fw, 5, 9, 1, 1);
	talloc(&fy, 4, 5, 1, 1);
	expect_error(o->linear_forward(be, &fx, &fw, &fy), "linear_forward",
		     "linear_forward: w is 5x9x1x1, expected 5x10x1x1");
	expect_error(o->linear_forward(be, &x, &fw, &fy), "linear_forward", NULL);
	trelease(&fw);
	talloc(&fw, 5, 10, 1, 1);
	expect_error(o->linear_backward(be, &fx, &fw, &fy, NULL, &fy), "linear_backward", NULL);

	/* labels outside 0..classes-1 name the index */
	double loss;
	int32_t labels[4] = {0, 4, 5, 1};
	expect_error(o->softmax_xent_forward(be, &fy, labels, 0, &fy, &loss), "softmax_xent_forward",
		     "softmax_xent_forward: labels[2] is 5, expected 0..4");
	labels[2] = -1;
	expect_error(o->softmax_xent_backward(be, &fy, labels, 0, &fy), "softmax_xent_backward",
		     "softmax_xent_backward: labels[2] is -1, expected 0..4");
	labels[2] = 2;
	expect_error(o->softmax_xent_forward(be, &fy, labels, 1.5f, &fy, &loss),
		     "softmax_xent_forward", NULL);
	expect_error(o->softmax_xent_forward(be, &x, labels, 0, &x, &loss), "softmax_xent_forward",
		     NULL);

	/* SGD checks every shape before it changes anything */
	float before[50], after[50];
	tget(&fw, before);
	mp_tensor *wl[] = {&fw, &fw}, *vl[] = {&fy, &fy};
	const mp_tensor *gl[] = {&fw, &fy};
	mp_tensor lr;
	talloc(&lr, 1, 1, 1, 1);
	assert_int_equal(o->fill(be, &lr, 0.1f), 0);
	expect_error(o->sgd_step(be, wl, gl, vl, 2, &lr, 0.9f, 0), "sgd_step",
		     "sgd_step: v[0] is 4x5x1x1, expected 5x10x1x1");
	/* the rate is one value */
	mp_tensor *wl1[] = {&fw}, *vl1[] = {&fw};
	const mp_tensor *gl1[] = {&fw};
	expect_error(o->sgd_step(be, wl1, gl1, vl1, 1, &fy, 0.9f, 0), "sgd_step",
		     "sgd_step: lr is 4x5x1x1, expected 1x1x1x1");
	expect_error(o->sgd_step(be, wl1, gl1, vl1, 1, NULL, 0.9f, 0), "sgd_step", NULL);
	tget(&fw, after);
	assert_memory_equal(before, after, sizeof before);
	trelease(&lr);

	trelease(&fx);
	trelease(&fw);
	trelease(&fy);
	trelease(&x);
	trelease(&w);
	trelease(&y);
}

/* ---- thread counts -------------------------------------------------------------------------- */

/* Runs every operation on shapes big enough to be split, returns the
 * concatenated outputs (count in *len). */
static float *run_all(size_t *len)
{
	const mp_backend_ops *o = be->ops;
	uint64_t saved = rng;
	rng = 42;	/* the same inputs on every call */
	float *out = NULL;
	size_t n_out = 0;
#define KEEP(t) do { \
		size_t c_ = mp_tensor_count(t); \
		out = realloc(out, (n_out + c_) * sizeof(float)); \
		assert_non_null(out); \
		tget((t), out + n_out); \
		n_out += c_; \
	} while (0)
	mp_tensor x, w, y, dx, dw;
	talloc(&x, 5, 8, 13, 11);
	talloc(&w, 6, 8, 3, 3);
	talloc(&y, 5, 6, 7, 6);
	talloc(&dx, 5, 8, 13, 11);
	talloc(&dw, 6, 8, 3, 3);
	float *h = random_array(mp_tensor_count(&x), -1, 1);
	tput(&x, h);
	free(h);
	h = random_array(mp_tensor_count(&w), -1, 1);
	tput(&w, h);
	free(h);
	assert_int_equal(o->conv2d_forward(be, &x, &w, &y, 2, 1), 0);
	KEEP(&y);
	assert_int_equal(o->conv2d_backward(be, &x, &w, &y, &dx, &dw, 2, 1), 0);
	KEEP(&dx);
	KEEP(&dw);

	bn_ctx b;
	bn_setup(&b, 5, 7, 9, 6);
	bn_loss(&b);
	KEEP(&b.ty);
	KEEP(&b.trm);
	KEEP(&b.trv);
	mp_tensor bdx, bdg, bdb;
	talloc(&bdx, 5, 7, 9, 6);
	talloc(&bdg, 7, 1, 1, 1);
	talloc(&bdb, 7, 1, 1, 1);
	assert_int_equal(o->bn_backward(be, &b.tx, &b.bn, &b.ty, &bdx, &bdg, &bdb), 0);
	KEEP(&bdx);
	KEEP(&bdg);
	KEEP(&bdb);
	assert_int_equal(o->bn_forward_infer(be, &b.tx, &b.bn, &b.ty), 0);
	KEEP(&b.ty);

	mp_tensor p, fw, fy, fdx, fdw, fp, fv;
	talloc(&p, 5, 7, 1, 1);
	talloc(&fp, 5, 10, 1, 1);
	talloc(&fv, 10, 7, 1, 1);
	assert_int_equal(o->fill(be, &fv, 0.01f), 0);
	talloc(&fw, 10, 7, 1, 1);
	talloc(&fy, 5, 10, 1, 1);
	talloc(&fdx, 5, 7, 1, 1);
	talloc(&fdw, 10, 7, 1, 1);
	assert_int_equal(o->avgpool_forward(be, &b.tx, &p), 0);
	KEEP(&p);
	assert_int_equal(o->avgpool_backward(be, &p, &b.ty), 0);
	KEEP(&b.ty);
	h = random_array(mp_tensor_count(&fw), -1, 1);
	tput(&fw, h);
	free(h);
	assert_int_equal(o->linear_forward(be, &p, &fw, &fy), 0);
	KEEP(&fy);
	assert_int_equal(o->linear_backward(be, &p, &fw, &fy, &fdx, &fdw), 0);
	KEEP(&fdx);
	KEEP(&fdw);
	const int32_t labels[5] = {0, 9, 3, 3, 7};
	double loss;
	assert_int_equal(o->softmax_xent_forward(be, &fy, labels, 0.1f, &fp, &loss), 0);
	KEEP(&fp);
	assert_int_equal(o->softmax_xent_backward(be, &fp, labels, 0.1f, &fy), 0);
	KEEP(&fy);
	mp_tensor *wl[] = {&fw}, *vl[] = {&fv};
	const mp_tensor *gl[] = {&fdw};
	mp_tensor lr;
	talloc(&lr, 1, 1, 1, 1);
	assert_int_equal(o->fill(be, &lr, 0.1f), 0);
	assert_int_equal(o->sgd_step(be, wl, gl, vl, 1, &lr, 0.9f, 5e-4f), 0);
	trelease(&lr);
	KEEP(&fw);
	KEEP(&fv);
#undef KEEP
	*len = n_out;
	mp_tensor *ts[] = {&x, &w, &y, &dx, &dw, &bdx, &bdg, &bdb, &p, &fw, &fy, &fdx, &fdw, &fp, &fv};
	for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
		trelease(ts[i]);
	bn_teardown(&b);
	rng = saved;
	return out;
}

static void same_bits_any_thread_count(void **state)
{
	(void)state;
	const int saved = be->threads;
	be->threads = 1;
	size_t n1, n;
	float *one = run_all(&n1);
	static const int counts[] = {2, 3, 0};
	for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
		be->threads = counts[i];
		float *other = run_all(&n);
		assert_int_equal(n, n1);
		assert_memory_equal(one, other, n * sizeof(float));
		free(other);
	}
	be->threads = saved;
	free(one);
}

/* ---- memory ------------------------------------------------------------------------------------- */

static void memory_round_trip(void **state)
{
	(void)state;
	mp_tensor t;
	talloc(&t, 2, 3, 4, 5);
	assert_int_equal(t.n, 2);
	assert_int_equal(t.w, 5);
	float *a = random_array(120, -1, 1), b[120];
	tput(&t, a);
	tget(&t, b);
	assert_memory_equal(a, b, sizeof b);
	assert_int_equal(be->ops->fill(be, &t, 2.5f), 0);
	tget(&t, b);
	for (int i = 0; i < 120; i++)
		assert_true(b[i] == 2.5f);
	trelease(&t);
	assert_null(t.data);
	trelease(&t); /* twice is harmless */
	free(a);
	assert_string_equal(be->ops->name, "cpu");
	assert_null(mp_backend_cpu_new(-1));
}

static int setup(void **state)
{
	(void)state;
	be = mp_backend_cpu_new(0);
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
		cmocka_unit_test(memory_round_trip),
		cmocka_unit_test(conv_forward_values),
		cmocka_unit_test(conv_gradients),
		cmocka_unit_test(bn_values),
		cmocka_unit_test(bn_gradients),
		cmocka_unit_test(relu_gradients),
		cmocka_unit_test(add_gradients),
		cmocka_unit_test(shortcut_gradients),
		cmocka_unit_test(avgpool_gradients),
		cmocka_unit_test(linear_gradients),
		cmocka_unit_test(xent_values),
		cmocka_unit_test(xent_gradients),
		cmocka_unit_test(sgd_values),
		cmocka_unit_test(shape_errors),
		cmocka_unit_test(same_bits_any_thread_count),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
