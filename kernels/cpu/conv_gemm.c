/* 2-D convolution without bias, NCHW, weights OIHW, as matrix products:
 * the fast path of the "cpu" backend (conv.c is the readable reference).
 *
 * For one image, the columns col[(c*KH + i)*KW + j][oy*ow + ox] =
 * x[c, oy*s - p + i, ox*s - p + j] (0 outside the image; "im2col") turn
 * the convolution into products of R x P matrices, R = C KH KW and
 * P = oh ow:
 *
 *   forward         y_n  (K x P) = w (K x R) col_n (R x P)
 *   backward data   dcol (R x P) = w^T dy_n,  dx_n = col2im(dcol)
 *   backward weight dw   (K x R) = sum_n dy_n col_n^T
 *
 * each an OpenBLAS SGEMM in float. A 1x1 stride-1 unpadded convolution
 * needs no columns: col_n is x_n itself. A 3x3 stride-1 pad-1 one whose
 * plane gains by it (all of the reference network's but the stem and the
 * downsampling ones) runs its forward pass and dx by Winograd F(4x4, 3x3)
 * instead (winograd.c), half the time or less; dw stays a product.
 *
 * Blocking. Small planes make thin matrices, so up to MAX_GROUP images
 * share one product: their columns sit side by side (R x G P), and dy is
 * gathered to K x G P. A large plane (one image per product) is done in
 * bands of output rows whose columns fit in about CHUNK_FLOATS, so that
 * they are still in the cache when the SGEMM reads them. Group size and
 * band height depend only on the shapes.
 *
 * Same bits for any thread count. OpenBLAS runs on one thread (set once by
 * mp_cpu_gemm_state_new, which may also correct its choice of kernels).
 * OpenMP hands whole groups to threads (dynamically: which thread takes a
 * group changes nothing in its result), and every product, its operands
 * and its summation order are fixed by the shapes alone. The weight
 * gradient is a partial sum per group (the bands of a lone image added in
 * order by the SGEMM's beta = 1), and the partial sums are added
 * afterwards in group order, split between threads over the elements of
 * dw, never over groups. */
#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "cpu.h"

#define MAX_GROUP 8		/* images per product, at most */
#define GROUP_COLS 2048		/* columns a product aims at (G P) */
#define CHUNK_FLOATS (1 << 18)	/* columns of a lone image per product: 1 MiB */

/* Scratch memory kept between calls: one block per thread, and the
 * weight-gradient partial sums. Only ever scratch: every call writes
 * before it reads. */
typedef struct {
	float **slot;
	size_t *slot_size;
	int nslots;
	float *part;
	size_t part_size;
	float *weights;		/* a convolution's weights in another form */
	size_t weights_size;
	int winograd;		/* 3x3 stride-1 convolutions by Winograd */
} gemm_state;

/* OpenBLAS's pthreads build starts a thread per core as it loads, before
 * main, and each thread takes a buffer of tens of MB at once. Where the
 * thread cannot start (ulimit -u) OpenBLAS ends the program with SIGINT;
 * where its buffer does not fit (ulimit -v) it asks again forever, and the
 * program hangs, at the latest in blas_thread_shutdown_ or at exit. The
 * products below run on one thread anyway, so OpenBLAS must be asked for
 * one before it loads. An executable's preinit functions run before any
 * library's constructor, but too early to change the environment that
 * libc then takes from the kernel: so the program starts itself again with
 * OPENBLAS_NUM_THREADS=1, as OpenBLAS reads it. This file is linked into
 * each program that loads OpenBLAS. */
static void one_blas_thread(int argc, char **argv, char **envp)
{
	static char want[] = "OPENBLAS_NUM_THREADS=1";
	const size_t name_len = sizeof "OPENBLAS_NUM_THREADS=" - 1;
	(void)argc;
	size_t n = 0;
	for (; envp[n]; n++)
		if (!strcmp(envp[n], want))
			return;
	/* started by naming the dynamic loader (ld.so PROGRAM ...):
	 * /proc/self/exe is the loader, not the program */
	if (getauxval(AT_BASE) == 0)
		return;
	char **env = malloc((n + 2) * sizeof *env);
	if (!env)
		return;
	size_t k = 0;
	env[k++] = want;
	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], want, name_len))
			env[k++] = envp[i];
	env[k] = NULL;
	execve("/proc/self/exe", argv, env);
	/* no /proc: OpenBLAS starts its threads, as it always did */
	free(env);
}
__attribute__((section(".preinit_array"), used))
static void (*const preinit_one_blas_thread)(int, char **, char **) = one_blas_thread;

/* OpenBLAS 0.3.21 (Debian 12) picks its kernels by CPU model number when
 * it loads, and falls back to its SSE3 "Prescott" kernels on a model it
 * does not know, such as Emerald Rapids (family 6, model 207): 13 GFLOP/s
 * a core instead of 91 with its AVX-512 ("SkylakeX") kernels. The user's
 * OPENBLAS_CORETYPE is honoured only at load time, before main; so when
 * OpenBLAS fell back although the CPU has AVX2 (or AVX-512), and the user
 * set no core type, choose it here and rerun OpenBLAS's kernel selection
 * (gotoblas_dynamic_init, exported by its DYNAMIC_ARCH builds; weak, so
 * that another build links and keeps its own choice). */
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));
extern int blas_thread_shutdown_(void) __attribute__((weak));

static void blas_setup(void)
{
	const char *core = openblas_get_corename();
	if (core && !strcasecmp(core, "prescott") && !getenv("OPENBLAS_CORETYPE") &&
	    gotoblas_dynamic_init && gotoblas_dynamic_quit) {
		__builtin_cpu_init();
		const char *want = NULL;
		if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
			want = "SkylakeX";
		else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
			want = "Haswell";
		if (want && setenv("OPENBLAS_CORETYPE", want, 0) == 0) {
			gotoblas_dynamic_quit();
			gotoblas_dynamic_init();
		}
	}
	/* OpenBLAS's own threads would split the products by the thread
	 * count; OpenMP parallelism over images replaces them. Its pthreads
	 * build has started them already, and they keep polling with
	 * sched_yield, taking CPU time from the OpenMP threads: stop them
	 * (exported by that build; with one thread it never restarts them). */
	openblas_set_num_threads(1);
	if (blas_thread_shutdown_)
		blas_thread_shutdown_();
}

void *mp_cpu_gemm_state_new(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, blas_setup);
	gemm_state *st = calloc(1, sizeof(gemm_state));
	if (st) {
		const char *v = getenv("MP_CPU_WINOGRAD");
		st->winograd = !v || strcmp(v, "0") != 0;
	}
	return st;
}

int mp_cpu_winograd_on(const mp_backend *be)
{
	const gemm_state *st = be->impl;
	return st && st->winograd;
}

const char *mp_cpu_blas_core(void)
{
	return openblas_get_corename();
}

void mp_cpu_gemm_state_free(void *state)
{
	gemm_state *st = state;
	if (!st)
		return;
	for (int i = 0; i < st->nslots; i++)
		free(st->slot[i]);
	free(st->slot);
	free(st->slot_size);
	free(st->part);
	free(st->weights);
	free(st);
}

/* *p holds at least need floats (its old contents are dropped). */
static int grow(float **p, size_t *have, size_t need)
{
	if (*have >= need)
		return 0;
	free(*p);
	*have = 0;
	*p = mp_cpu_alloc_floats(need);
	if (!*p)
		return -1;
	*have = need;
	return 0;
}

/* nt thread blocks of per_thread floats and part floats of partial sums. */
int mp_cpu_scratch(mp_backend *be, const char *op, int nt, size_t per_thread, size_t part)
{
	gemm_state *st = be->impl;
	if (!st)
		return mp_cpu_fail(be, "%s: the backend has no scratch state", op);
	if (st->nslots < nt) {
		float **slot = realloc(st->slot, (size_t)nt * sizeof *slot);
		if (!slot)
			return mp_cpu_fail(be, "%s: out of memory", op);
		st->slot = slot;
		size_t *size = realloc(st->slot_size, (size_t)nt * sizeof *size);
		if (!size)
			return mp_cpu_fail(be, "%s: out of memory", op);
		st->slot_size = size;
		for (int i = st->nslots; i < nt; i++) {
			st->slot[i] = NULL;
			st->slot_size[i] = 0;
		}
		st->nslots = nt;
	}
	for (int i = 0; i < nt; i++)
		if (grow(&st->slot[i], &st->slot_size[i], per_thread))
			return mp_cpu_fail(be, "%s: out of memory for %zu scratch floats", op,
					   per_thread);
	if (grow(&st->part, &st->part_size, part))
		return mp_cpu_fail(be, "%s: out of memory for %zu scratch floats", op, part);
	return 0;
}

float *mp_cpu_scratch_thread(mp_backend *be, int thread)
{
	return ((gemm_state *)be->impl)->slot[thread];
}

float *mp_cpu_scratch_shared(mp_backend *be)
{
	return ((gemm_state *)be->impl)->part;
}

float *mp_cpu_scratch_weights(mp_backend *be, const char *op, size_t count)
{
	gemm_state *st = be->impl;
	if (!st) {
		mp_cpu_fail(be, "%s: the backend has no scratch state", op);
		return NULL;
	}
	if (grow(&st->weights, &st->weights_size, count)) {
		mp_cpu_fail(be, "%s: out of memory for %zu scratch floats", op, count);
		return NULL;
	}
	return st->weights;
}

/* Images per product for planes of P outputs: a power of two, so that a
 * batch splits evenly, up to MAX_GROUP and at most N. */
static int group_images(size_t plane, int n)
{
	int g = 1;
	while (g < MAX_GROUP && (size_t)g * plane < GROUP_COLS)
		g *= 2;
	return g < n ? g : n;
}

/* n limited to lo..hi */
static int clamp(int n, int lo, int hi)
{
	return n < lo ? lo : n > hi ? hi : n;
}

typedef struct {
	int N, C, H, W, K, KH, KW, stride, pad, oh, ow;
	int R, P;	/* rows and columns of one image's col */
	int direct;	/* 1x1, stride 1, no padding: col is x */
	int G, groups;	/* images per product, products */
	int rows;	/* output rows per product for a lone image */
} conv_geom;

static int geometry(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w,
		    int stride, int pad, int oh, int ow, conv_geom *g)
{
	g->N = x->n, g->C = x->c, g->H = x->h, g->W = x->w;
	g->K = w->n, g->KH = w->h, g->KW = w->w;
	g->stride = stride, g->pad = pad, g->oh = oh, g->ow = ow;
	/* SGEMM takes int sizes: R, G P and K must fit */
	const long long R = (long long)x->c * w->h * w->w, P = (long long)oh * ow;
	if (R > INT_MAX || P * MAX_GROUP > INT_MAX)
		return mp_cpu_fail(be, "%s: x %dx%dx%dx%d with w %dx%dx%dx%d is too large", op,
				   x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w);
	g->R = (int)R;
	g->P = (int)P;
	g->direct = w->h == 1 && w->w == 1 && stride == 1 && pad == 0;
	g->G = group_images((size_t)P, g->N);
	g->groups = (g->N + g->G - 1) / g->G;
	/* a large plane's columns go in bands of output rows that fit in
	 * the cache, each band one product */
	long long rows = CHUNK_FLOATS / (R * ow);
	g->rows = g->G == 1 && !g->direct ? clamp((int)(rows < oh ? rows : oh), 1, oh) : oh;
	return 0;
}

/* The columns of one image x (C x H x W) for the output rows ya..yb-1 into
 * col, rows ld floats apart. */
static void im2col(const conv_geom *g, const float *x, float *col, size_t ld, int ya, int yb)
{
	const int H = g->H, W = g->W, s = g->stride, p = g->pad, ow = g->ow;
	const size_t span = (size_t)(yb - ya) * ow;
	if (g->direct) {
		for (int c = 0; c < g->C; c++)
			memcpy(col + (size_t)c * ld, x + (size_t)c * g->P + (size_t)ya * ow,
			       span * sizeof *col);
		return;
	}
	for (int c = 0; c < g->C; c++) {
		const float *xp = x + (size_t)c * H * W;
		for (int i = 0; i < g->KH; i++) {
			int oy0, oy1;
			mp_cpu_tap_range(i, s, p, H, g->oh, &oy0, &oy1);
			const int lo = clamp(oy0, ya, yb), hi = clamp(oy1, lo, yb);
			for (int j = 0; j < g->KW; j++) {
				int ox0, ox1;
				mp_cpu_tap_range(j, s, p, W, ow, &ox0, &ox1);
				float *row = col + ((size_t)(c * g->KH + i) * g->KW + j) * ld;
				memset(row, 0, (size_t)(lo - ya) * ow * sizeof *row);
				for (int oy = lo; oy < hi; oy++) {
					float *r = row + (size_t)(oy - ya) * ow;
					const float *xr = xp + (size_t)(oy * s - p + i) * W;
					for (int ox = 0; ox < ox0; ox++)
						r[ox] = 0;
					if (s == 1) {
						memcpy(r + ox0, xr + ox0 - p + j,
						       (size_t)(ox1 - ox0) * sizeof *r);
					} else {
						for (int ox = ox0; ox < ox1; ox++)
							r[ox] = xr[ox * s - p + j];
					}
					for (int ox = ox1; ox < ow; ox++)
						r[ox] = 0;
				}
				memset(row + (size_t)(hi - ya) * ow, 0,
				       (size_t)(yb - hi) * ow * sizeof *row);
			}
		}
	}
}

/* dx (C x H x W) += the values of col (the output rows ya..yb-1) summed
 * over the columns that read each input: im2col's transpose. Every dx
 * element is summed in the fixed order (i, j, oy, ox). */
static void col2im(const conv_geom *g, const float *col, size_t ld, int ya, int yb, float *dx)
{
	const int H = g->H, W = g->W, s = g->stride, p = g->pad, ow = g->ow;
	for (int c = 0; c < g->C; c++) {
		float *dp = dx + (size_t)c * H * W;
		for (int i = 0; i < g->KH; i++) {
			int oy0, oy1;
			mp_cpu_tap_range(i, s, p, H, g->oh, &oy0, &oy1);
			const int lo = clamp(oy0, ya, yb), hi = clamp(oy1, lo, yb);
			for (int j = 0; j < g->KW; j++) {
				int ox0, ox1;
				mp_cpu_tap_range(j, s, p, W, ow, &ox0, &ox1);
				const float *row = col + ((size_t)(c * g->KH + i) * g->KW + j) * ld;
				for (int oy = lo; oy < hi; oy++) {
					const float *r = row + (size_t)(oy - ya) * ow;
					float *dr = dp + (size_t)(oy * s - p + i) * W;
					if (s == 1) {
						float *restrict d = dr + ox0 - p + j;
						const float *restrict q = r + ox0;
#pragma omp simd
						for (int o = 0; o < ox1 - ox0; o++)
							d[o] += q[o];
					} else {
						for (int ox = ox0; ox < ox1; ox++)
							dr[ox * s - p + j] += r[ox];
					}
				}
			}
		}
	}
}

int mp_cpu_conv2d_forward_gemm(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			       mp_tensor *y, int stride, int pad)
{
	static const char op[] = "conv2d_forward";
	int oh, ow;
	conv_geom g;
	if (mp_cpu_conv_shape(be, op, x, w, stride, pad, &oh, &ow) ||
	    mp_cpu_expect(be, op, "y", y, x->n, w->n, oh, ow) ||
	    geometry(be, op, x, w, stride, pad, oh, ow, &g))
		return -1;
	if (mp_cpu_winograd_fits(be, x, w, stride, pad))
		return mp_cpu_winograd_forward(be, op, x, w, y);
	const int nt = mp_cpu_threads(be);
	/* a lone image writes y directly, and a direct one reads x directly */
	const size_t col_size = g.direct && g.G == 1 ? 0 :
				(size_t)g.R * (g.G == 1 ? (size_t)g.rows * ow : (size_t)g.G * g.P);
	const size_t out_size = g.G == 1 ? 0 : (size_t)g.K * g.G * g.P;
	if (mp_cpu_scratch(be, op, nt, col_size + out_size, 0))
		return -1;
	gemm_state *st = be->impl;
	const size_t xsize = (size_t)g.C * g.H * g.W, ysize = (size_t)g.K * g.P;

#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (g.groups > 1 && MP_CPU_WORTH_THREADS(mp_tensor_count(y)))
	for (int grp = 0; grp < g.groups; grp++) {
		float *col = st->slot[omp_get_thread_num()], *out = col + col_size;
		const int n0 = grp * g.G, gn = g.N - n0 < g.G ? g.N - n0 : g.G;
		const float *xn = x->data + (size_t)n0 * xsize;
		float *yn = y->data + (size_t)n0 * ysize;
		if (gn == 1 && g.direct) {
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.K, g.P, g.R, 1.0f,
				    w->data, g.R, xn, g.P, 0.0f, yn, g.P);
		} else if (gn == 1) {
			for (int ya = 0; ya < oh; ya += g.rows) {
				const int yb = ya + g.rows < oh ? ya + g.rows : oh, cols = (yb - ya) * ow;
				im2col(&g, xn, col, (size_t)cols, ya, yb);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.K, cols, g.R,
					    1.0f, w->data, g.R, col, cols, 0.0f, yn + (size_t)ya * ow,
					    g.P);
			}
		} else {
			const int cols = gn * g.P;
			for (int i = 0; i < gn; i++)
				im2col(&g, xn + (size_t)i * xsize, col + (size_t)i * g.P, (size_t)cols,
				       0, oh);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.K, cols, g.R, 1.0f,
				    w->data, g.R, col, cols, 0.0f, out, cols);
			for (int i = 0; i < gn; i++)
				for (int k = 0; k < g.K; k++)
					memcpy(yn + (size_t)i * ysize + (size_t)k * g.P,
					       out + (size_t)k * cols + (size_t)i * g.P,
					       (size_t)g.P * sizeof(float));
		}
	}
	return 0;
}

int mp_cpu_conv2d_backward_gemm(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw,
				int stride, int pad)
{
	static const char op[] = "conv2d_backward";
	int oh, ow;
	conv_geom g;
	if (mp_cpu_conv_backward_shape(be, op, x, w, dy, dx, dw, stride, pad, &oh, &ow))
		return -1;
	if (geometry(be, op, x, w, stride, pad, oh, ow, &g))
		return -1;
	if (mp_cpu_winograd_fits(be, x, w, stride, pad)) {
		if ((dx && mp_cpu_winograd_backward_data(be, op, w, dy, dx)) ||
		    (dw && mp_cpu_winograd_weight_grad(be, op, x, dy, dw)))
			return -1;
		return 0;
	}
	if (!dx && !dw)
		return 0;
	const int nt = mp_cpu_threads(be);
	const size_t wsize = (size_t)g.K * g.R;
	/* col holds dx's columns, then x's; dyg the group's dy side by side */
	const size_t col_size = g.direct && g.G == 1 ? 0 :
				(size_t)g.R * (g.G == 1 ? (size_t)g.rows * ow : (size_t)g.G * g.P);
	const size_t dyg_size = g.G == 1 ? 0 : (size_t)g.K * g.G * g.P;
	const size_t part_size = dw && g.groups > 1 ? (size_t)g.groups * wsize : 0;
	if (mp_cpu_scratch(be, op, nt, col_size + dyg_size, part_size))
		return -1;
	gemm_state *st = be->impl;
	const size_t xsize = (size_t)g.C * g.H * g.W, ysize = (size_t)g.K * g.P;

#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (g.groups > 1 && MP_CPU_WORTH_THREADS(mp_tensor_count(dy)))
	for (int grp = 0; grp < g.groups; grp++) {
		float *col = st->slot[omp_get_thread_num()], *dyg = col + col_size;
		const int n0 = grp * g.G, gn = g.N - n0 < g.G ? g.N - n0 : g.G;
		const float *xn = x->data + (size_t)n0 * xsize;
		const float *dyn = dy->data + (size_t)n0 * ysize;
		float *dxn = dx ? dx->data + (size_t)n0 * xsize : NULL;
		float *part = !dw ? NULL : g.groups == 1 ? dw->data : st->part + (size_t)grp * wsize;
		if (gn == 1 && g.direct) {
			if (dx)
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.R, g.P, g.K,
					    1.0f, w->data, g.R, dyn, g.P, 0.0f, dxn, g.P);
			if (dw)
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.K, g.R, g.P,
					    1.0f, dyn, g.P, xn, g.P, 0.0f, part, g.R);
		} else if (gn == 1) {
			/* band by band: dx sums the bands' col2im, dw their products */
			if (dx)
				memset(dxn, 0, xsize * sizeof(float));
			for (int ya = 0; ya < oh; ya += g.rows) {
				const int yb = ya + g.rows < oh ? ya + g.rows : oh, cols = (yb - ya) * ow;
				const float *d = dyn + (size_t)ya * ow;
				if (dx) {
					cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.R, cols,
						    g.K, 1.0f, w->data, g.R, d, g.P, 0.0f, col, cols);
					col2im(&g, col, (size_t)cols, ya, yb, dxn);
				}
				if (dw) {
					im2col(&g, xn, col, (size_t)cols, ya, yb);
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.K, g.R,
						    cols, 1.0f, d, g.P, col, cols, ya ? 1.0f : 0.0f,
						    part, g.R);
				}
			}
		} else {
			const int cols = gn * g.P;
			for (int i = 0; i < gn; i++)
				for (int k = 0; k < g.K; k++)
					memcpy(dyg + (size_t)k * cols + (size_t)i * g.P,
					       dyn + (size_t)i * ysize + (size_t)k * g.P,
					       (size_t)g.P * sizeof(float));
			if (dx) {
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.R, cols, g.K,
					    1.0f, w->data, g.R, dyg, cols, 0.0f, col, cols);
				for (int i = 0; i < gn; i++) {
					float *dxi = dxn + (size_t)i * xsize;
					memset(dxi, 0, xsize * sizeof(float));
					col2im(&g, col + (size_t)i * g.P, (size_t)cols, 0, oh, dxi);
				}
			}
			if (dw) {
				for (int i = 0; i < gn; i++)
					im2col(&g, xn + (size_t)i * xsize, col + (size_t)i * g.P,
					       (size_t)cols, 0, oh);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.K, g.R, cols,
					    1.0f, dyg, cols, col, cols, 0.0f, part, g.R);
			}
		}
	}

	if (dw && g.groups > 1) {
		const float *part = st->part;
		const int groups = g.groups;
#pragma omp parallel for num_threads(nt) schedule(static) if (MP_CPU_WORTH_THREADS(part_size))
		for (size_t e = 0; e < wsize; e++) {
			float s = part[e];
			for (int grp = 1; grp < groups; grp++)
				s += part[(size_t)grp * wsize + e];
			dw->data[e] = s;
		}
	}
	return 0;
}
