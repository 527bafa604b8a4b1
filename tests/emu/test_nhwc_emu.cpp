/* The CUDA backend's kernels for activations stored in bf16 NHWC
 * (kernels/cuda/nhwc.cu), its layout conversions (convert.cu) and its fused
 * inference convolution's own kernels (conv_bn.cu), run on the host
 * (the emulated device of tests/emu/emu_device.cpp), against the CPU
 * reference on the same values rounded to bf16 as the device stores them.
 * This checks the kernels' index arithmetic, vector paths (8 channels at
 * a time and one at a time), BN's block sums and formulas, on a machine
 * without a GPU; tests/gpu/test_cuda_ops checks the same on a GPU. The
 * convolution itself (cuDNN's on a GPU) is the emulated device's stand-in,
 * its result rounded to bf16 where the device would store bf16.
 *
 * Small operands (BN's parameters, pooled values) are host arrays handed
 * to the kernels as they are (the emulated device's memory is the
 * host's); the device's queued work is run (settle) before the host reads
 * them.
 *
 * Exact where the device and the reference compute the same float values
 * (conversions, ReLU, add, shortcut, pooling); within ERR_BN of the
 * largest reference value for BN, whose sums run in another order (and
 * the rounding to bf16 of a value near a rounding boundary may then go
 * the other way: one bf16 step, 2^-8 relative).
 *
 * TAP on stdout. */
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "../../kernels/cuda/cuda.h"
#include "emu_device.h"
#include "emu_tap.h"

#define ERR_BN 1e-2

/* ---- the test harness ---------------------------------------------------------------- */

static mp_backend *dev, *ref; /* the CUDA backend's code on the host; the CPU reference */
static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;

static double uniform(double lo, double hi)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return lo + (hi - lo) * (double)(rng_state >> 11) / 9007199254740992.0;
}

static float round_bf16(float f)
{
	return __bfloat162float(__float2bfloat16_rn(f));
}

/* Runs the work queued on the emulated device: what the host then reads
 * in device memory is the kernels' results. */
static void settle(void)
{
	cudaDeviceSynchronize();
}

template <typename T> static const T &settled(const T &v)
{
	settle();
	return v;
}

/* Set: the device's tensors are written and read in NHWC on the host
 * (the emulated device's memory is the host's) instead of by upload and
 * download, whose conversion kernels take seconds on the host for a
 * million values. */
static int host_layout;

static void nhwc_put(mp_tensor *d, const float *v)
{
	const size_t plane = (size_t)d->h * d->w;
	__nv_bfloat16 *p = (__nv_bfloat16 *)d->data;
	settle();
	for (size_t i = 0; i < (size_t)d->n; i++)
		for (size_t k = 0; k < (size_t)d->c; k++)
			for (size_t q = 0; q < plane; q++)
				p[(i * plane + q) * d->c + k] =
					__float2bfloat16_rn(v[(i * d->c + k) * plane + q]);
}

static void nhwc_get(const mp_tensor *d, float *v)
{
	const size_t plane = (size_t)d->h * d->w;
	const __nv_bfloat16 *p = (const __nv_bfloat16 *)d->data;
	settle();
	for (size_t i = 0; i < (size_t)d->n; i++)
		for (size_t k = 0; k < (size_t)d->c; k++)
			for (size_t q = 0; q < plane; q++)
				v[(i * d->c + k) * plane + q] =
					__bfloat162float(p[(i * plane + q) * d->c + k]);
}

/* A tensor on both sides: the reference's float NCHW (values rounded to
 * bf16 as the device holds them) and the device's bf16 NHWC. */
struct act {
	mp_tensor r, d;
};

static void act_make(act *a, int n, int c, int h, int w, double lo, double hi)
{
	memset(a, 0, sizeof *a);
	if (ref->ops->alloc(ref, &a->r, n, c, h, w) < 0) {
		fprintf(stderr, "%s\n", mp_backend_error(ref));
		exit(1);
	}
	const size_t count = mp_tensor_count(&a->r);
	if (dev->ops->alloc_act(dev, &a->d, n, c, h, w) < 0 || !mp_cuda_is_bf16(&a->d)) {
		fprintf(stderr, "alloc_act: %s\n", mp_backend_error(dev));
		exit(1);
	}
	std::vector<float> h_(count);
	for (size_t i = 0; i < count; i++)
		h_[i] = round_bf16((float)uniform(lo, hi));
	ref->ops->upload(ref, &a->r, h_.data());
	if (host_layout)
		nhwc_put(&a->d, h_.data());
	else
		mp_cuda_nhwc_upload(dev, &a->d, h_.data());
}

static void act_free(act *a)
{
	ref->ops->release(ref, &a->r);
	dev->ops->release(dev, &a->d);
}

/* The device tensor as float NCHW (through download). */
static std::vector<float> dev_values(const mp_tensor *d)
{
	std::vector<float> v(mp_tensor_count(d));
	if (mp_cuda_is_bf16(d) && host_layout)
		nhwc_get(d, v.data());
	else if (mp_cuda_is_bf16(d))
		mp_cuda_nhwc_download(dev, d, v.data());
	else
		dev->ops->download(dev, d, v.data());
	if (host_layout && mp_cuda_is_bf16(d)) /* a download adds itself */
		mp_emu_digest_add(v.data(), v.size() * sizeof(float));
	return v;
}

static std::vector<float> ref_values(const mp_tensor *r, int round)
{
	std::vector<float> v(mp_tensor_count(r));
	ref->ops->download(ref, r, v.data());
	if (round)
		for (float &x : v)
			x = round_bf16(x);
	return v;
}


static void check(const char *what, const std::vector<float> &got, const std::vector<float> &want,
		  double tol)
{
	double e = 0, m = 0;
	for (size_t i = 0; i < want.size(); i++) {
		const double d = fabs((double)got[i] - want[i]);
		if (!(d <= e))
			e = isnan(d) ? INFINITY : d;
		m = fabs(want[i]) > m ? fabs(want[i]) : m;
	}
	const double rel = m > 0 ? e / m : e;
	printf("#   %-40s rel err %.2e\n", what, rel);
	if (!(rel <= tol)) {
		printf("# FAIL: %s: relative error %.3e > %.0e\n", what, rel, tol);
		cur_failed = 1;
	}
}


/* ---- the tests ------------------------------------------------------------------------- */

static void test_conversions(int n, int c, int h, int w)
{
	char name[96];
	snprintf(name, sizeof name, "convert %dx%dx%dx%d float NCHW <-> bf16 NHWC", n, c, h, w);
	const size_t count = (size_t)n * c * h * w;
	std::vector<float> x(count), back(count);
	std::vector<__nv_bfloat16> y(count);
	for (size_t i = 0; i < count; i++)
		x[i] = (float)uniform(-3, 3);
	must(mp_cuda_convert(dev, "test", n, c, h * w, x.data(), 1, y.data()), dev, "to");
	settle();
	/* NHWC: value (n, c, p) at (n P + p) C + c, rounded to nearest even */
	int bad = 0;
	for (int i = 0; i < n; i++)
		for (int k = 0; k < c; k++)
			for (int p = 0; p < h * w; p++)
				bad += __bfloat162float(y[((size_t)i * h * w + p) * c + k]) !=
				       round_bf16(x[((size_t)i * c + k) * h * w + p]);
	if (bad) {
		printf("# FAIL: %d values misplaced or misrounded\n", bad);
		cur_failed = 1;
	}
	must(mp_cuda_convert(dev, "test", n, c, h * w, y.data(), 0, back.data()), dev,
	     "from");
	settle();
	for (float &v : x)
		v = round_bf16(v);
	check("round trip", back, x, 0);
	ok(name);
}

static void test_elementwise(int n, int c, int h, int w)
{
	char name[96];
	snprintf(name, sizeof name, "relu, relu backward, add, fill %dx%dx%dx%d", n, c, h, w);
	act x, y, dy, dx, b;
	act_make(&x, n, c, h, w, -1, 1);
	act_make(&y, n, c, h, w, 0, 0);
	act_make(&dy, n, c, h, w, -1, 1);
	act_make(&dx, n, c, h, w, 0, 0);
	act_make(&b, n, c, h, w, -1, 1);
	must(ref->ops->relu_forward(ref, &x.r, &y.r), ref, "relu");
	must(mp_cuda_nhwc_relu_forward(dev, &x.d, &y.d), dev, "relu");
	check("relu y", dev_values(&y.d), ref_values(&y.r, 1), 0);
	must(ref->ops->relu_backward(ref, &y.r, &dy.r, &dx.r), ref, "relu backward");
	must(mp_cuda_nhwc_relu_backward(dev, &y.d, &dy.d, &dx.d), dev, "relu backward");
	check("relu dx", dev_values(&dx.d), ref_values(&dx.r, 1), 0);
	must(ref->ops->add(ref, &x.r, &b.r, &y.r), ref, "add");
	must(mp_cuda_nhwc_add(dev, &x.d, &b.d, &y.d), dev, "add");
	check("add y", dev_values(&y.d), ref_values(&y.r, 1), 0);
	must(ref->ops->add(ref, &x.r, &b.r, &x.r), ref, "add in place");
	must(mp_cuda_nhwc_add(dev, &x.d, &b.d, &x.d), dev, "add in place");
	check("add in place", dev_values(&x.d), ref_values(&x.r, 1), 0);
	must(ref->ops->fill(ref, &y.r, 1.3f), ref, "fill");
	must(mp_cuda_nhwc_fill(dev, &y.d, 1.3f), dev, "fill");
	check("fill 1.3", dev_values(&y.d), ref_values(&y.r, 1), 0);
	act *all[] = {&x, &y, &dy, &dx, &b};
	for (act *a : all)
		act_free(a);
	ok(name);
}

static void test_shortcut(int n, int cx, int h, int w, int cy, int stride)
{
	char name[96];
	snprintf(name, sizeof name, "shortcut A %dx%dx%dx%d -> %d channels, stride %d", n, cx, h, w,
		 cy, stride);
	const int oh = (h - 1) / stride + 1, ow = (w - 1) / stride + 1;
	act x, y, dy, dx;
	act_make(&x, n, cx, h, w, -1, 1);
	act_make(&y, n, cy, oh, ow, 0, 0);
	act_make(&dy, n, cy, oh, ow, -1, 1);
	act_make(&dx, n, cx, h, w, 0, 0);
	must(ref->ops->shortcut_a_forward(ref, &x.r, &y.r, stride), ref, "shortcut");
	must(mp_cuda_nhwc_shortcut_forward(dev, &x.d, &y.d, stride), dev, "shortcut");
	check("y", dev_values(&y.d), ref_values(&y.r, 1), 0);
	must(ref->ops->shortcut_a_backward(ref, &dy.r, &dx.r, stride), ref, "shortcut backward");
	must(mp_cuda_nhwc_shortcut_backward(dev, &dy.d, &dx.d, stride), dev,
	     "shortcut backward");
	check("dx", dev_values(&dx.d), ref_values(&dx.r, 1), 0);
	act *all[] = {&x, &y, &dy, &dx};
	for (act *a : all)
		act_free(a);
	ok(name);
}

static void test_avgpool(int n, int c, int h, int w)
{
	char name[96];
	snprintf(name, sizeof name, "global average pooling %dx%dx%dx%d", n, c, h, w);
	act x, dx;
	act_make(&x, n, c, h, w, -1, 3);
	act_make(&dx, n, c, h, w, 0, 0);
	mp_tensor y{}, yd, dy{};
	ref->ops->alloc(ref, &y, n, c, 1, 1);
	ref->ops->alloc(ref, &dy, n, c, 1, 1);
	yd = y;
	std::vector<float> ydev(mp_tensor_count(&y)), g(mp_tensor_count(&y));
	yd.data = ydev.data();
	for (float &v : g)
		v = (float)uniform(-1, 1);
	ref->ops->upload(ref, &dy, g.data());
	mp_tensor dyd = dy;
	dyd.data = g.data();
	must(ref->ops->avgpool_forward(ref, &x.r, &y), ref, "avgpool");
	must(mp_cuda_nhwc_avgpool_forward(dev, &x.d, &yd), dev, "avgpool");
	check("y (float)", settled(ydev), ref_values(&y, 0), 0);
	must(ref->ops->avgpool_backward(ref, &dy, &dx.r), ref, "avgpool backward");
	must(mp_cuda_nhwc_avgpool_backward(dev, &dyd, &dx.d), dev, "avgpool backward");
	check("dx", dev_values(&dx.d), ref_values(&dx.r, 1), 0);
	ref->ops->release(ref, &y);
	ref->ops->release(ref, &dy);
	act_free(&x);
	act_free(&dx);
	ok(name);
}

/* BN's parameters and statistics on both sides (float on both). */
struct bn_side {
	mp_tensor t[6];
	mp_bn bn;
};

static void bn_make(bn_side *r, bn_side *d, int c)
{
	static const double lo[6] = {0.5, -0.5, -0.2, 0.5, 0, 0}, hi[6] = {1.5, 0.5, 0.2, 2, 0, 0};
	memset(r, 0, sizeof *r);
	memset(d, 0, sizeof *d);
	for (int k = 0; k < 6; k++) {
		ref->ops->alloc(ref, &r->t[k], c, 1, 1, 1);
		std::vector<float> v(c);
		for (float &x : v)
			x = (float)uniform(lo[k], hi[k]);
		ref->ops->upload(ref, &r->t[k], v.data());
		d->t[k] = r->t[k];
		d->t[k].data = (float *)malloc(c * sizeof(float));
		memcpy(d->t[k].data, v.data(), c * sizeof(float));
	}
	bn_side *s[2] = {r, d};
	for (bn_side *b : s)
		b->bn = mp_bn{&b->t[0], &b->t[1], &b->t[2], &b->t[3], &b->t[4], &b->t[5], 1e-3f,
			      0.9f};
}

static void bn_free(bn_side *r, bn_side *d)
{
	for (int k = 0; k < 6; k++) {
		ref->ops->release(ref, &r->t[k]);
		free(d->t[k].data);
	}
}

static std::vector<float> host(const mp_tensor *t)
{
	settle();
	return std::vector<float>(t->data, t->data + mp_tensor_count(t));
}

/* x uniform in [xlo, xhi]: every value the same when they are equal */
static void test_bn(int n, int c, int h, int w, int fused, int with_res, double xlo = -2,
		    double xhi = 3)
{
	char name[160];
	snprintf(name, sizeof name, "batch norm%s %dx%dx%dx%d%s: train, backward, infer",
		 fused ? (with_res ? " + residual + ReLU" : " + ReLU") : "", n, c, h, w,
		 xlo == xhi ? ", x constant" : "");
	bn_side br, bd;
	bn_make(&br, &bd, c);
	act x, y, dy, dx, res, dres;
	act_make(&x, n, c, h, w, xlo, xhi);
	act_make(&y, n, c, h, w, 0, 0);
	act_make(&dy, n, c, h, w, -1, 1);
	act_make(&dx, n, c, h, w, 0, 0);
	act_make(&res, n, c, h, w, -1, 1);
	act_make(&dres, n, c, h, w, 0, 0);
	mp_tensor dg{}, db{}, dgd, dbd;
	ref->ops->alloc(ref, &dg, c, 1, 1, 1);
	ref->ops->alloc(ref, &db, c, 1, 1, 1);
	std::vector<float> dgv(c), dbv(c);
	dgd = dg;
	dgd.data = dgv.data();
	dbd = db;
	dbd.data = dbv.data();
	const mp_tensor *rr = with_res ? &res.r : NULL, *rd = with_res ? &res.d : NULL;
	if (fused) {
		must(ref->ops->bn_relu_forward_train(ref, &x.r, &br.bn, rr, &y.r), ref, "bn_relu");
		must(mp_cuda_nhwc_bn_train(dev, "bn", &x.d, &bd.bn, rd, 1, &y.d), dev,
		     "bn_relu");
	} else {
		must(ref->ops->bn_forward_train(ref, &x.r, &br.bn, &y.r), ref, "bn");
		must(mp_cuda_nhwc_bn_train(dev, "bn", &x.d, &bd.bn, NULL, 0, &y.d), dev,
		     "bn");
	}
	/* the reference's output rounded to bf16, as stored; the device's
	 * backward reads it rounded, so the reference's must too */
	std::vector<float> yr = ref_values(&y.r, 1);
	ref->ops->upload(ref, &y.r, yr.data());
	check("y", dev_values(&y.d), yr, ERR_BN);
	check("save_mean", host(&bd.t[4]), ref_values(&br.t[4], 0), 1e-5);
	check("save_invstd", host(&bd.t[5]), ref_values(&br.t[5], 0), 1e-5);
	check("running_mean", host(&bd.t[2]), ref_values(&br.t[2], 0), 1e-5);
	check("running_var", host(&bd.t[3]), ref_values(&br.t[3], 0), 1e-5);
	if (fused) {
		must(ref->ops->bn_relu_backward(ref, &x.r, &br.bn, &y.r, &dy.r, &dx.r, &dg, &db,
						&dres.r),
		     ref, "bn_relu backward");
		/* the device reads its own y: give it the reference's, so that
		 * both mask the same values */
		if (host_layout)
			nhwc_put(&y.d, yr.data());
		else
			mp_cuda_nhwc_upload(dev, &y.d, yr.data());
		must(mp_cuda_nhwc_bn_backward(dev, "bn", &x.d, &bd.bn, &y.d, &dy.d, &dx.d, &dgd,
					      &dbd, &dres.d),
		     dev, "bn_relu backward");
		check("dres", dev_values(&dres.d), ref_values(&dres.r, 1), 0);
	} else {
		must(ref->ops->bn_backward(ref, &x.r, &br.bn, &dy.r, &dx.r, &dg, &db), ref,
		     "bn backward");
		must(mp_cuda_nhwc_bn_backward(dev, "bn", &x.d, &bd.bn, NULL, &dy.d, &dx.d, &dgd,
					      &dbd, NULL),
		     dev, "bn backward");
	}
	check("dx", dev_values(&dx.d), ref_values(&dx.r, 1), ERR_BN);
	check("dgamma", settled(dgv), ref_values(&dg, 0), 1e-4);
	check("dbeta", dbv, ref_values(&db, 0), 1e-4);
	must(ref->ops->bn_forward_infer(ref, &x.r, &br.bn, &y.r), ref, "bn infer");
	must(mp_cuda_nhwc_bn_infer(dev, &x.d, &bd.bn, &y.d), dev, "bn infer");
	check("infer y", dev_values(&y.d), ref_values(&y.r, 1), ERR_BN);
	ref->ops->release(ref, &dg);
	ref->ops->release(ref, &db);
	act *all[] = {&x, &y, &dy, &dx, &res, &dres};
	for (act *a : all)
		act_free(a);
	bn_free(&br, &bd);
	ok(name);
}

/* The fused inference convolution against the reference's conv2d_forward,
 * bn_forward_infer, add and relu_forward; bf16: activations from alloc_act
 * (x plain images for the stem), else float throughout. */
static void test_conv_bn(int bf16, int plain_x, int with_res, int relu)
{
	char name[128];
	snprintf(name, sizeof name, "fused inference conv + BN%s%s, %s%s",
		 with_res ? " + residual" : "", relu ? " + ReLU" : "",
		 bf16 ? "bf16 activations" : "float",
		 plain_x ? ", plain images in" : "");
	const int N = 2, C = plain_x ? 3 : 8, H = 9, W = 7, K = 16;
	act x, y, t, res;
	act_make(&x, N, C, H, W, -1, 1);
	act_make(&y, N, K, H, W, 0, 0);
	act_make(&t, N, K, H, W, 0, 0);
	act_make(&res, N, K, H, W, -1, 1);
	bn_side br, bd;
	bn_make(&br, &bd, K);
	/* the device's operands: bf16 NHWC activations, or float NCHW copies
	 * in device memory (cuDNN's stand-in takes nothing else) */
	std::vector<float> xh = ref_values(&x.r, 0), rh = ref_values(&res.r, 0);
	mp_tensor xd = x.d, yd = y.d, rd = res.d, w{}, wd{}, prep{}, xf{}, yf{}, rf{};
	if (!bf16 || plain_x) {
		must(dev->ops->alloc(dev, &xf, N, C, H, W), dev, "alloc");
		must(dev->ops->upload(dev, &xf, xh.data()), dev, "upload");
		xd = xf;
	}
	if (!bf16) {
		must(dev->ops->alloc(dev, &yf, N, K, H, W), dev, "alloc");
		must(dev->ops->alloc(dev, &rf, N, K, H, W), dev, "alloc");
		must(dev->ops->upload(dev, &rf, rh.data()), dev, "upload");
		yd = yf;
		rd = rf;
	}
	ref->ops->alloc(ref, &w, K, C, 3, 3);
	std::vector<float> wh(mp_tensor_count(&w));
	for (float &v : wh)
		v = (float)uniform(-0.3, 0.3);
	ref->ops->upload(ref, &w, wh.data());
	must(dev->ops->alloc(dev, &wd, K, C, 3, 3), dev, "alloc");
	must(dev->ops->upload(dev, &wd, wh.data()), dev, "upload");
	must(ref->ops->conv2d_forward(ref, &x.r, &w, &t.r, 1, 1), ref, "conv");
	must(ref->ops->bn_forward_infer(ref, &t.r, &br.bn, &y.r), ref, "bn infer");
	if (with_res)
		must(ref->ops->add(ref, &y.r, &res.r, &y.r), ref, "add");
	if (relu)
		must(ref->ops->relu_forward(ref, &y.r, &y.r), ref, "relu");
	/* float: the convolution in fp32 */
	dev->ops->set_precision(dev, bf16 ? MP_PRECISION_BF16 : MP_PRECISION_FP32);
	must(mp_cuda_conv_bn_prepare(dev, &wd, &bd.bn, 1, 1, &prep), dev, "prepare");
	must(mp_cuda_conv_bn_forward_infer(dev, &xd, &wd, &prep, with_res ? &rd : NULL, relu,
					   &yd, 1, 1),
	     dev, "conv_bn_forward_infer");
	/* bf16: the convolution's operands, its result and the final one are
	 * each rounded */
	check("y", dev_values(&yd), ref_values(&y.r, bf16), bf16 ? ERR_BN : 1e-5);
	dev->ops->set_precision(dev, MP_PRECISION_BF16);
	mp_tensor *mine[] = {&prep, &wd, &xf, &yf, &rf};
	for (mp_tensor *m : mine)
		dev->ops->release(dev, m);
	ref->ops->release(ref, &w);
	act *all[] = {&x, &y, &t, &res};
	for (act *a : all)
		act_free(a);
	bn_free(&br, &bd);
	ok(name);
}

/* A failing call while the SGD step builds its tables (here the wait
 * after their copies, where an earlier kernel's fault shows) is named in
 * the message, as every CUDA call's failure is; the next step builds them
 * anew. */
static void test_sgd_table_error(void)
{
	const char *name = "sgd_step: a failing call of its tables' setup is named";
	mp_tensor w = {}, g = {}, v = {}, lr = {};
	const float one = 1.0f;
	must(dev->ops->alloc(dev, &w, 1, 1, 2, 2), dev, "alloc");
	must(dev->ops->alloc(dev, &g, 1, 1, 2, 2), dev, "alloc");
	must(dev->ops->alloc(dev, &v, 1, 1, 2, 2), dev, "alloc");
	must(dev->ops->alloc(dev, &lr, 1, 1, 1, 1), dev, "alloc");
	if (!cur_failed) {
		mp_tensor *wp = &w, *vp = &v;
		const mp_tensor *gp = &g;
		must(dev->ops->fill(dev, &w, 1.0f), dev, "fill");
		must(dev->ops->fill(dev, &g, 0.5f), dev, "fill");
		must(dev->ops->fill(dev, &v, 0.0f), dev, "fill");
		must(dev->ops->upload(dev, &lr, &one), dev, "upload");
		mp_emu_sync_error = cudaErrorLaunchFailure;
		const int rc = dev->ops->sgd_step(dev, &wp, &gp, &vp, 1, &lr, 0.0f, 0.0f);
		mp_emu_sync_error = cudaSuccess;
		printf("#   %s\n", mp_backend_error(dev));
		if (rc >= 0 || !strstr(mp_backend_error(dev), "sgd_step: cudaStreamSynchronize:")) {
			printf("# FAIL: expected \"sgd_step: cudaStreamSynchronize: ...\"\n");
			cur_failed = 1;
		}
		must(dev->ops->sgd_step(dev, &wp, &gp, &vp, 1, &lr, 0.0f, 0.0f), dev, "sgd_step");
		float got[4];
		must(dev->ops->download(dev, &w, got), dev, "download");
		for (int i = 0; !cur_failed && i < 4; i++)
			if (got[i] != 0.5f) {
				printf("# FAIL: w[%d] is %g after the step, expected 0.5\n", i,
				       (double)got[i]);
				cur_failed = 1;
			}
	}
	mp_tensor *all[] = {&w, &g, &v, &lr};
	for (mp_tensor *t : all)
		if (t->data)
			dev->ops->release(dev, t);
	ok(name);
}

/* Every download is in the digest (tests/cli/emuorder.bats), float
 * tensors' as bf16 ones': a race in a kernel that writes floats shows. */
static void test_download_digest(void)
{
	const char *name = "download: float and bf16 tensors' values go into the digest";
	mp_tensor w = {};
	act a;
	act_make(&a, 1, 3, 2, 2, -1, 1);
	must(dev->ops->alloc(dev, &w, 1, 1, 2, 2), dev, "alloc");
	if (!cur_failed) {
		float got[12];
		must(dev->ops->fill(dev, &w, 1.0f), dev, "fill");
		unsigned long long before = mp_emu_digest_bytes();
		must(dev->ops->download(dev, &w, got), dev, "download");
		if (mp_emu_digest_bytes() != before + sizeof(float) * 4) {
			printf("# FAIL: a float download of 16 bytes added %llu to the digest\n",
			       mp_emu_digest_bytes() - before);
			cur_failed = 1;
		}
		before = mp_emu_digest_bytes();
		must(dev->ops->download(dev, &a.d, got), dev, "download");
		if (mp_emu_digest_bytes() == before) {
			printf("# FAIL: a bf16 download added nothing to the digest\n");
			cur_failed = 1;
		}
	}
	if (w.data)
		dev->ops->release(dev, &w);
	act_free(&a);
	ok(name);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	ref = mp_backend_cpu_new(1);
	if (!ref)
		return 1;
	/* the CUDA backend on the emulated device, activations in bf16 */
	char why[512];
	setenv("MP_CUDA_ACTIVATIONS", "bf16", 1);
	dev = mp_backend_cuda_new(0, why, sizeof why);
	if (!dev || dev->ops->set_precision(dev, MP_PRECISION_BF16) < 0) {
		printf("1..1\nnot ok 1 - open the backend: %s\n", dev ? mp_backend_error(dev) : why);
		return 1;
	}
	printf("# the bf16 NHWC kernels on %s (tests/emu/emu_device.cpp)\n", why);
	test_conversions(2, 5, 7, 9);
	test_conversions(3, 40, 6, 6);
	test_elementwise(2, 8, 5, 7);  /* 8 channels a thread */
	test_elementwise(3, 5, 4, 3);  /* one at a time */
	test_shortcut(2, 4, 7, 7, 8, 2);
	test_shortcut(3, 3, 9, 8, 5, 3);
	test_shortcut(2, 16, 8, 8, 32, 2);
	test_avgpool(2, 5, 7, 7);
	test_avgpool(3, 16, 5, 4);
	test_bn(4, 8, 10, 10, 0, 0);   /* several blocks of rows */
	test_bn(3, 40, 7, 9, 0, 0);    /* two groups of 32 channels, scalar path */
	test_bn(4, 8, 10, 10, 1, 0);
	test_bn(2, 16, 9, 9, 1, 1);
	test_bn(16, 100, 1, 1, 1, 1);
	test_bn(64, 4, 3, 3, 1, 1);
	/* more rows than 2048 blocks of 256 (a batch of 256 images of 64 x 64
	 * in the first stage): each block takes more */
	host_layout = 1;
	test_bn(1, 2, 730, 730, 1, 1);
	host_layout = 0;
	/* a channel of one value (a dead ReLU's zeros): no variance */
	test_bn(4, 8, 5, 5, 0, 0, 0, 0);
	test_bn(3, 5, 4, 4, 1, 1, 0.75, 0.75);
	test_conv_bn(0, 0, 1, 1);
	test_conv_bn(0, 1, 0, 1);
	test_conv_bn(1, 1, 0, 1);
	test_conv_bn(1, 0, 1, 1);
	test_conv_bn(1, 0, 0, 0);
	test_sgd_table_error();
	test_download_digest();
	mp_backend_free(ref);
	mp_backend_free(dev);
	return tap_done();
}
