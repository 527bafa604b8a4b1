/* Inference: a convolution with its BN, residual and ReLU in one operation,
 *
 *   y = relu?(conv(x, w) scale + shift + res?)
 *
 * scale and shift being BN's running statistics folded per channel
 * (mp_cpu_bn_fold). Evaluation runs every convolution of the network
 * through it, so it is where the CPU evaluation spends its time.
 *
 * The prepared form (conv_bn_prepare) is, as floats: scale[K], shift[K],
 * then for a 3x3 stride-1 pad-1 convolution in the fast backend the
 * Winograd-transformed weights with the scale folded in, u[36][K][C].
 *
 * The reference computes the convolution with conv.c's loops and the rest
 * in one pass. The fast one:
 *
 * - for a 3x3, stride-1, pad-1 convolution uses Winograd's minimal
 *   filtering F(4x4, 3x3) (Lavin and Gray, 2015): each 4x4 output tile is
 *   A^T [sum_c (G g_kc G^T) (.) (B^T d_c B)] A, where d_c is the tile's
 *   6x6 input patch of channel c and (.) multiplies element-wise. The sum
 *   over channels is 36 matrix products (one per element of the 6x6
 *   transformed tile) of the transformed weights (K x C) by the
 *   transformed inputs (C x tiles): 36 C K multiply-adds per tile instead
 *   of 144 C K, 4 times fewer. The transforms have small integer
 *   coefficients (G sixths and quarters), so the result stays within
 *   about 1e-6 relative of the direct sum.
 * - otherwise (and for planes so small that the padding of the tiles eats
 *   the gain) uses the im2col + SGEMM convolution, then the rest in one
 *   pass over y.
 *
 * Same bits for any thread count: the tiles are taken in blocks of whole
 * tile rows whose size depends only on the shapes, each block is
 * transformed, multiplied and transformed back by one thread with the
 * order of every sum fixed, and which thread takes a block changes
 * nothing. */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "cpu.h"

/* Transformed inputs and products of one block: about this many bytes,
 * so that they stay in the threads' L2 caches between the steps. */
#define BLOCK_BYTES (3u << 20)

/* The transforms' loops vectorize best for the machine they run on. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

static int winograd_shape(const mp_tensor *w, int stride, int pad)
{
	return w->h == 3 && w->w == 3 && stride == 1 && pad == 1;
}

/* Floats of the prepared form. */
static size_t prep_count(const mp_tensor *w, int wino)
{
	return 2 * (size_t)w->n + (wino ? 36 * (size_t)w->n * w->c : 0);
}

static int check(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w,
		 const mp_tensor *prep, size_t want, const mp_tensor *res, const mp_tensor *y,
		 int stride, int pad)
{
	int oh, ow;
	if (mp_cpu_conv_shape(be, op, x, w, stride, pad, &oh, &ow) ||
	    mp_cpu_expect(be, op, "y", y, x->n, w->n, oh, ow) || mp_cpu_check(be, op, "prep", prep))
		return -1;
	if (mp_tensor_count(prep) != want)
		return mp_cpu_fail(be, "%s: prep has %zu values, expected %zu for w %dx%dx%dx%d "
				   "(stride %d, pad %d): not made by this backend's conv_bn_prepare",
				   op, mp_tensor_count(prep), want, w->n, w->c, w->h, w->w, stride,
				   pad);
	if (res && mp_cpu_expect(be, op, "res", res, y->n, y->c, y->h, y->w))
		return -1;
	if (y->data == x->data || (res && y->data == res->data))
		return mp_cpu_fail(be, "%s: y shares memory with %s", op,
				   y->data == x->data ? "x" : "res");
	return 0;
}

/* y = relu?(y scale + shift + res?) over the whole tensor, one (image,
 * channel) plane per iteration. */
static void finish(mp_backend *be, const float *scale, const float *shift, const mp_tensor *res,
		   int relu, mp_tensor *y)
{
	const int N = y->n, K = y->c;
	const size_t plane = (size_t)y->h * y->w;
#pragma omp parallel for collapse(2) num_threads(mp_cpu_threads(be)) schedule(static) if (MP_CPU_WORTH_THREADS(mp_tensor_count(y)))
	for (int n = 0; n < N; n++)
		for (int k = 0; k < K; k++) {
			const float sc = scale[k], sh = shift[k];
			float *restrict yp = y->data + ((size_t)n * K + k) * plane;
			const float *restrict rp = res ? res->data + ((size_t)n * K + k) * plane : NULL;
			for (size_t i = 0; i < plane; i++) {
				float v = yp[i] * sc + sh;
				if (rp)
					v += rp[i];
				yp[i] = relu && v < 0 ? 0.0f : v;
			}
		}
}

/* ---- Winograd F(4x4, 3x3) ---- */

/* u[p][k][c] = scale[k] (G g_kc G^T)[p], p = 6 a + b, with
 * G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
 *      1/24 -1/12 1/6; 0 0 1], in double before the one rounding. */
static void transform_weights(const float *w, const float *scale, int K, int C, float *u)
{
	static const double G[6][3] = {
		{1.0 / 4, 0, 0},		 {-1.0 / 6, -1.0 / 6, -1.0 / 6},
		{-1.0 / 6, 1.0 / 6, -1.0 / 6},	 {1.0 / 24, 1.0 / 12, 1.0 / 6},
		{1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1},
	};
	const size_t kc = (size_t)K * C;
	for (int k = 0; k < K; k++)
		for (int c = 0; c < C; c++) {
			const float *g = w + ((size_t)k * C + c) * 9;
			double t[6][3]; /* G g */
			for (int a = 0; a < 6; a++)
				for (int j = 0; j < 3; j++)
					t[a][j] = G[a][0] * g[j] + G[a][1] * g[3 + j] + G[a][2] * g[6 + j];
			for (int a = 0; a < 6; a++)
				for (int b = 0; b < 6; b++) {
					const double v = t[a][0] * G[b][0] + t[a][1] * G[b][1] +
							 t[a][2] * G[b][2];
					u[(size_t)(6 * a + b) * kc + (size_t)k * C + c] =
						(float)(v * scale[k]);
				}
		}
}

typedef struct {
	int N, C, H, W, K;
	int th, tw;	 /* tile rows and columns of an image */
	int rows;	 /* tile rows per block */
	int blocks;	 /* blocks over all N th tile rows */
	size_t cap;	 /* tiles a block holds at most: rows tw */
} wino_geom;

/* 36 th tw products per (k, c) instead of 9 H W: worth it when at most
 * half (the planes of the reference network all are; a 5x5 one is not). */
static int winograd_pays(int H, int W)
{
	const long long th = (H + 3) / 4, tw = (W + 3) / 4;
	return 36 * th * tw * 2 <= 9LL * H * W;
}

/* In place on six rows of n floats, 'stride' apart: z = B^T z, with
 * B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
 *        0 2 -1 -2 1 0; 0 4 0 -5 0 1]. */
VECTOR_CLONES
static void input_step(float *z, size_t stride, int n)
{
	float *restrict z0 = z, *restrict z1 = z0 + stride, *restrict z2 = z1 + stride,
		       *restrict z3 = z2 + stride, *restrict z4 = z3 + stride,
		       *restrict z5 = z4 + stride;
#pragma omp simd
	for (int i = 0; i < n; i++) {
		const float d0 = z0[i], d1 = z1[i], d2 = z2[i], d3 = z3[i], d4 = z4[i], d5 = z5[i];
		z0[i] = 4 * d0 - 5 * d2 + d4;
		z1[i] = -4 * (d1 + d2) + d3 + d4;
		z2[i] = 4 * (d1 - d2) - d3 + d4;
		z3[i] = -2 * (d1 - d3) - d2 + d4;
		z4[i] = 2 * (d1 - d3) - d2 + d4;
		z5[i] = 4 * d1 - 5 * d3 + d5;
	}
}

/* In place on six rows of n floats, 'stride' apart: the first four become
 * A^T z, with A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]. */
VECTOR_CLONES
static void output_step(float *z, size_t stride, int n)
{
	float *restrict z0 = z, *restrict z1 = z0 + stride, *restrict z2 = z1 + stride,
		       *restrict z3 = z2 + stride, *restrict z4 = z3 + stride,
		       *restrict z5 = z4 + stride;
#pragma omp simd
	for (int i = 0; i < n; i++) {
		const float p12 = z1[i] + z2[i], n12 = z1[i] - z2[i];
		const float p34 = z3[i] + z4[i], n34 = z3[i] - z4[i];
		const float m0 = z0[i], m5 = z5[i];
		z0[i] = m0 + p12 + p34;
		z1[i] = n12 + 2 * n34;
		z2[i] = p12 + 4 * p34;
		z3[i] = n12 + 8 * n34 + m5;
	}
}

/* ---- moving tiles between rows and the transform's layout ----
 *
 * Column b of tile tx is image column 4 tx + b - 1 (zero outside the
 * row); a tile row's outputs go through a line, line[4 tx + j] = output
 * column j of tile tx, which holds whole chunks of 16 tiles
 * (64 * chunks + 8 floats) so that the AVX-512 version writes it a vector
 * at a time. The AVX-512 versions read the rows with masked loads, which
 * touch nothing outside the row. */

static int chunks_of(int tw)
{
	return (tw + 15) / 16;
}

static size_t line_floats(int tw)
{
	return 64 * (size_t)chunks_of(tw) + 8;
}

/* v[b * ct + tx] = row[4 tx + b - 1] (0 outside 0..W-1), b = 0..5, tx < tw */
static void gather_tiles_plain(const float *row, int W, int tw, float *v, size_t ct)
{
	for (int b = 0; b < 6; b++) {
		float *vb = v + (size_t)b * ct;
		for (int tx = 0; tx < tw; tx++) {
			const int ix = 4 * tx + b - 1;
			vb[tx] = ix >= 0 && ix < W ? row[ix] : 0.0f;
		}
	}
}

/* line[4 tx + j] = o[j * kt + tx], j = 0..3, tx < tw */
static void scatter_tiles_plain(const float *o, size_t kt, int tw, float *line)
{
	for (int j = 0; j < 4; j++) {
		const float *oj = o + (size_t)j * kt;
		for (int tx = 0; tx < tw; tx++)
			line[4 * tx + j] = oj[tx];
	}
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_TILES 1

/* Lanes i of a 16-float vector with 0 <= at + i < n. */
static inline __mmask16 lanes_inside(int at, int n)
{
	const int lo = at < 0 ? -at : 0, hi = n - at < 16 ? n - at : 16;
	if (hi <= lo)
		return 0;
	return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

/* row[at + 16 i .. at + 16 i + 15] for i = 0..3, zero outside 0..W-1 */
__attribute__((target("avx512f"))) static inline void load4(const float *row, int at, int W,
							   __m512 r[4])
{
	for (int i = 0; i < 4; i++) {
		const int o = at + 16 * i;
		r[i] = _mm512_maskz_loadu_ps(lanes_inside(o, W), row + o);
	}
}

/* Phase q (elements q, q + 4, ...) of the 64 floats r[0..3]. */
__attribute__((target("avx512f"))) static inline __m512 phase(const __m512 r[4], int q)
{
	const __m512i idx = _mm512_add_epi32(
		_mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28),
		_mm512_set1_epi32(q));
	const __m512 lo = _mm512_permutex2var_ps(r[0], idx, r[1]);
	const __m512 hi = _mm512_permutex2var_ps(r[2], idx, r[3]);
	return _mm512_shuffle_f32x4(lo, hi, 0x44);
}

__attribute__((target("avx512f"))) static void gather_tiles_avx512(const float *row, int W,
								   int tw, float *v, size_t ct)
{
	for (int tx = 0; tx < tw; tx += 16) {
		const __mmask16 m = tw - tx >= 16 ? 0xffff : (__mmask16)((1u << (tw - tx)) - 1);
		__m512 a[4], b[4];
		load4(row, 4 * tx - 1, W, a);
		load4(row, 4 * tx + 3, W, b);
		_mm512_mask_storeu_ps(v + tx, m, phase(a, 0));
		_mm512_mask_storeu_ps(v + ct + tx, m, phase(a, 1));
		_mm512_mask_storeu_ps(v + 2 * ct + tx, m, phase(a, 2));
		_mm512_mask_storeu_ps(v + 3 * ct + tx, m, phase(a, 3));
		_mm512_mask_storeu_ps(v + 4 * ct + tx, m, phase(b, 0));
		_mm512_mask_storeu_ps(v + 5 * ct + tx, m, phase(b, 1));
	}
}

__attribute__((target("avx512f"))) static void scatter_tiles_avx512(const float *o, size_t kt,
								    int tw, float *line)
{
	/* pairs (o0, o1) and (o2, o3) interleaved as floats, then the pairs
	 * interleaved as doubles */
	const __m512i lo2 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
	const __m512i hi2 = _mm512_add_epi32(lo2, _mm512_set1_epi32(8));
	const __m512i lo4 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
	const __m512i hi4 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
	for (int tx = 0; tx < tw; tx += 16) {
		const __mmask16 m = tw - tx >= 16 ? 0xffff : (__mmask16)((1u << (tw - tx)) - 1);
		const __m512 o0 = _mm512_maskz_loadu_ps(m, o + tx);
		const __m512 o1 = _mm512_maskz_loadu_ps(m, o + kt + tx);
		const __m512 o2 = _mm512_maskz_loadu_ps(m, o + 2 * kt + tx);
		const __m512 o3 = _mm512_maskz_loadu_ps(m, o + 3 * kt + tx);
		const __m512d a_lo = _mm512_castps_pd(_mm512_permutex2var_ps(o0, lo2, o1));
		const __m512d a_hi = _mm512_castps_pd(_mm512_permutex2var_ps(o0, hi2, o1));
		const __m512d b_lo = _mm512_castps_pd(_mm512_permutex2var_ps(o2, lo2, o3));
		const __m512d b_hi = _mm512_castps_pd(_mm512_permutex2var_ps(o2, hi2, o3));
		float *l = line + 4 * tx;
		_mm512_storeu_pd((double *)l, _mm512_permutex2var_pd(a_lo, lo4, b_lo));
		_mm512_storeu_pd((double *)(l + 16), _mm512_permutex2var_pd(a_lo, hi4, b_lo));
		_mm512_storeu_pd((double *)(l + 32), _mm512_permutex2var_pd(a_hi, lo4, b_hi));
		_mm512_storeu_pd((double *)(l + 48), _mm512_permutex2var_pd(a_hi, hi4, b_hi));
	}
}
#endif

static int allow_simd = 1;

void mp_cpu_allow_simd_tiles(int allow)
{
	allow_simd = allow;
}

static int use_avx512(void)
{
#ifdef HAVE_AVX512_TILES
	static int have = -1;
	if (have < 0) {
		__builtin_cpu_init();
		have = __builtin_cpu_supports("avx512f") != 0;
	}
	return have && allow_simd;
#else
	return 0;
#endif
}

static void gather_tiles(const float *row, int W, int tw, float *v, size_t ct, int avx512)
{
#ifdef HAVE_AVX512_TILES
	if (avx512) {
		gather_tiles_avx512(row, W, tw, v, ct);
		return;
	}
#endif
	(void)avx512;
	gather_tiles_plain(row, W, tw, v, ct);
}

static void scatter_tiles(const float *o, size_t kt, int tw, float *line, int avx512)
{
#ifdef HAVE_AVX512_TILES
	if (avx512) {
		scatter_tiles_avx512(o, kt, tw, line);
		return;
	}
#endif
	(void)avx512;
	scatter_tiles_plain(o, kt, tw, line);
}

/* The transformed input of channel c for the tile rows r0..r1-1 (global:
 * r = n th + ty): v[p][c][t], t the tile's index in the block, p = 6 a + b
 * the element of B^T d B. Each tile's 6x6 patch (image rows
 * 4 ty - 1 .. 4 ty + 4, columns 4 tx - 1 .. 4 tx + 4, zero outside) is
 * first gathered into v, then transformed in place over all the block's
 * tiles at once: long vectors even for small planes. */
static void transform_input(const wino_geom *g, const float *x, int c, int r0, int r1,
			    float *v, int avx512)
{
	const int H = g->H, W = g->W, tw = g->tw, tiles = (r1 - r0) * tw;
	const size_t ct = (size_t)g->C * g->cap;
	float *vc = v + (size_t)c * g->cap;
	for (int r = r0; r < r1; r++) {
		const int n = r / g->th, ty = r % g->th;
		const float *xc = x + ((size_t)n * g->C + c) * H * W;
		float *vt = vc + (size_t)(r - r0) * tw;
		for (int a = 0; a < 6; a++) {
			float *va = vt + (size_t)(6 * a) * ct;
			const int iy = 4 * ty - 1 + a;
			if (iy < 0 || iy >= H) {
				for (int b = 0; b < 6; b++)
					memset(va + (size_t)b * ct, 0, (size_t)tw * sizeof *va);
				continue;
			}
			gather_tiles(xc + (size_t)iy * W, W, tw, va, ct, avx512);
		}
	}
	/* B^T over the patch rows, then B over its columns */
	for (int b = 0; b < 6; b++)
		input_step(vc + (size_t)b * ct, 6 * ct, tiles);
	for (int a = 0; a < 6; a++)
		input_step(vc + (size_t)(6 * a) * ct, ct, tiles);
}

/* y = relu?(line + shift + res?) over n values */
VECTOR_CLONES
static void finish_row(const float *line, float shift, const float *res, int relu, float *y,
		       int n)
{
	if (res) {
#pragma omp simd
		for (int i = 0; i < n; i++) {
			const float val = line[i] + shift + res[i];
			y[i] = relu && val < 0 ? 0.0f : val;
		}
	} else {
#pragma omp simd
		for (int i = 0; i < n; i++) {
			const float val = line[i] + shift;
			y[i] = relu && val < 0 ? 0.0f : val;
		}
	}
}

/* y of channel k for the tile rows r0..r1-1 from the products
 * m[p][k][t], transformed in place: A^T M A + shift (+ res) (ReLU), the
 * parts of the 4x4 tiles inside the image. line: line_floats. */
static void transform_output(const wino_geom *g, float *m, int k, float shift,
			     const float *res, int relu, int r0, int r1, float *y, float *line,
			     int avx512)
{
	const int H = g->H, W = g->W, tw = g->tw, K = g->K, tiles = (r1 - r0) * tw;
	const size_t kt = (size_t)K * g->cap;
	float *mk = m + (size_t)k * g->cap;
	/* A^T over the rows (rows 0-3 of each column b), then A over the
	 * columns of those rows: o[i][j] at p = 6 i + j */
	for (int b = 0; b < 6; b++)
		output_step(mk + (size_t)b * kt, 6 * kt, tiles);
	for (int i = 0; i < 4; i++)
		output_step(mk + (size_t)(6 * i) * kt, kt, tiles);
	for (int r = r0; r < r1; r++) {
		const int n = r / g->th, ty = r % g->th;
		const size_t plane = ((size_t)n * K + k) * H * W;
		const float *mt = mk + (size_t)(r - r0) * tw;
		for (int i = 0; i < 4 && 4 * ty + i < H; i++) {
			const size_t at = plane + (size_t)(4 * ty + i) * W;
			scatter_tiles(mt + (size_t)(6 * i) * kt, kt, tw, line, avx512);
			finish_row(line, shift, res ? res + at : NULL, relu, y + at, W);
		}
	}
}

/* Winograd over blocks of tile rows, one block at a time, each in three
 * steps split between the threads: the input transform by channel, the
 * 36 products by element, the output transform by output channel. So
 * every thread reads only its share of the transformed weights, which
 * then pass through the cache once per block. A block holds about
 * BLOCK_BYTES of transformed inputs and products, or more when the
 * weights are the larger (the deep stages' small planes): at least
 * K C / (C + K) tiles, so that the weights are read no more often than
 * the block's own data. */
static int winograd(mp_backend *be, const char *op, const mp_tensor *x, const float *u,
		    const float *shift, int K, const mp_tensor *res, int relu, mp_tensor *y)
{
	wino_geom g = {.N = x->n, .C = x->c, .H = x->h, .W = x->w, .K = K};
	g.th = (g.H + 3) / 4;
	g.tw = (g.W + 3) / 4;
	const size_t per_tile = 36 * sizeof(float) * ((size_t)g.C + g.K);
	size_t want = BLOCK_BYTES / per_tile;
	const size_t for_weights = (size_t)g.K * g.C / ((size_t)g.C + g.K);
	if (want < for_weights)
		want = for_weights;
	const size_t total_rows = (size_t)g.N * g.th;
	const size_t rows = (want + g.tw - 1) / g.tw;
	g.rows = (int)(rows < 1 ? 1 : rows > total_rows ? total_rows : rows);
	g.blocks = (int)((total_rows + g.rows - 1) / g.rows);
	g.cap = (size_t)g.rows * g.tw;

	const int nt = mp_cpu_threads(be);
	const size_t v_size = 36 * (size_t)g.C * g.cap, m_size = 36 * (size_t)g.K * g.cap;
	if (mp_cpu_scratch(be, op, nt, line_floats(g.tw), v_size + m_size))
		return -1;
	const int avx512 = use_avx512();
	const size_t kc = (size_t)g.K * g.C;
	float *v = mp_cpu_scratch_shared(be), *m = v + v_size;
	const float *xd = x->data, *rd = res ? res->data : NULL;
	float *yd = y->data;
#pragma omp parallel num_threads(nt) if (MP_CPU_WORTH_THREADS(mp_tensor_count(y)))
	{
		float *line = mp_cpu_scratch_thread(be, omp_get_thread_num());
		for (int blk = 0; blk < g.blocks; blk++) {
			const int r0 = blk * g.rows;
			const int r1 = r0 + g.rows < (int)total_rows ? r0 + g.rows : (int)total_rows;
			const int tiles = (r1 - r0) * g.tw;
#pragma omp for schedule(static)
			for (int c = 0; c < g.C; c++)
				transform_input(&g, xd, c, r0, r1, v, avx512);
#pragma omp for schedule(static)
			for (int p = 0; p < 36; p++)
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.K, tiles, g.C,
					    1.0f, u + p * kc, g.C, v + p * (size_t)g.C * g.cap,
					    (int)g.cap, 0.0f, m + p * (size_t)g.K * g.cap, (int)g.cap);
#pragma omp for schedule(static)
			for (int k = 0; k < g.K; k++)
				transform_output(&g, m, k, shift[k], rd, relu, r0, r1, yd, line,
						 avx512);
		}
	}
	return 0;
}

/* ---- the operations ---- */

static int prepare(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int stride, int pad,
		   mp_tensor *prep, int wino)
{
	static const char op[] = "conv_bn_prepare";
	if (mp_cpu_check(be, op, "w", w) || mp_cpu_bn_check_running(be, op, bn, w->n))
		return -1;
	if (stride < 1 || pad < 0)
		return mp_cpu_fail(be, "%s: stride %d, pad %d: expected a stride of 1 or more and "
				   "a pad of 0 or more", op, stride, pad);
	if (!prep)
		return mp_cpu_fail(be, "%s: prep is missing", op);
	const size_t count = prep_count(w, wino);
	if (count > (size_t)0x7fffffff)
		return mp_cpu_fail(be, "%s: w %dx%dx%dx%d is too large", op, w->n, w->c, w->h,
				   w->w);
	if (prep->data)
		be->ops->release(be, prep);
	if (be->ops->alloc(be, prep, 1, 1, 1, (int)count))
		return -1;
	float *scale = prep->data, *shift = scale + w->n;
	for (int k = 0; k < w->n; k++)
		mp_cpu_bn_fold(bn, k, &scale[k], &shift[k]);
	if (wino)
		transform_weights(w->data, scale, w->n, w->c, shift + w->n);
	return 0;
}

int mp_cpu_conv_bn_prepare(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int stride,
			   int pad, mp_tensor *prep)
{
	return prepare(be, w, bn, stride, pad, prep, 0);
}

int mp_cpu_conv_bn_prepare_fast(mp_backend *be, const mp_tensor *w, const mp_bn *bn,
				int stride, int pad, mp_tensor *prep)
{
	return prepare(be, w, bn, stride, pad, prep,
		       w && winograd_shape(w, stride, pad));
}

int mp_cpu_conv_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				 const mp_tensor *prep, const mp_tensor *res, int relu,
				 mp_tensor *y, int stride, int pad)
{
	if (check(be, "conv_bn_forward_infer", x, w, prep, w ? prep_count(w, 0) : 0, res, y,
		  stride, pad) ||
	    mp_cpu_conv2d_forward(be, x, w, y, stride, pad))
		return -1;
	finish(be, prep->data, prep->data + w->n, res, relu, y);
	return 0;
}

int mp_cpu_conv_bn_forward_infer_fast(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				      const mp_tensor *prep, const mp_tensor *res, int relu,
				      mp_tensor *y, int stride, int pad)
{
	static const char op[] = "conv_bn_forward_infer";
	const int wino = w && winograd_shape(w, stride, pad);
	if (check(be, op, x, w, prep, w ? prep_count(w, wino) : 0, res, y, stride, pad))
		return -1;
	const float *scale = prep->data, *shift = scale + w->n;
	if (wino && winograd_pays(x->h, x->w))
		return winograd(be, op, x, shift + w->n, shift, w->n, res, relu, y);
	if (mp_cpu_conv2d_forward_gemm(be, x, w, y, stride, pad))
		return -1;
	finish(be, scale, shift, res, relu, y);
	return 0;
}
